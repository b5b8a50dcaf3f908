"""The call table: one row per call, highlighted when the desk has it selected.

Rows are drawn from RowChanged / RowRemoved / SelectionChanged events only: the
desk is the truth, a touch only asks it to select. A row's note (a transfer's
progress, a consultation) is shown small under its state, translated by its
``note_key`` (kiosk.i18n). Durations tick once a
second from the duration the desk reported and the time since (no per-frame
work, so an idle panel costs nothing to draw).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from kivy.clock import Clock
from kivy.graphics import Color, Rectangle
from kivy.metrics import dp, sp
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.label import Label
from kivy.utils import escape_markup

from .texts import Texts

#: A press at least this long (s) on a row adds it to the selection, as a right click does.
LONG_PRESS = 0.6

#: Column keys and their share of the table's width.
COLUMNS = (("col_line", 0.12), ("col_dir", 0.10), ("col_remote", 0.29), ("col_state", 0.25),
           ("col_time", 0.12), ("col_rec", 0.12))

#: The note under a row's state: its size, and the colour of its markup.
NOTE_SIZE = 11
NOTE_COLOR = "b0b0b8"

ROW_BG = (0.16, 0.16, 0.18, 1)
ROW_SELECTED = (0.2, 0.45, 0.85, 1)
HEADER_BG = (0.08, 0.08, 0.09, 1)


def remote_text(remote: str) -> str:
    """A SIP URI as the operator reads it: `sip:2001@pbx` -> `2001@pbx`, display names kept."""
    text = remote.strip()
    if "<" in text and text.endswith(">"):
        name, _, uri = text[:-1].partition("<")
        name = name.strip().strip('"')
        return f"{name} {remote_text(uri)}".strip() if name else remote_text(uri)
    for scheme in ("sip:", "sips:", "tel:"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    return text.split(";", 1)[0]


def duration_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _cell(text: str = "", bold: bool = False) -> Label:
    label = Label(text=text, font_size=sp(16), bold=bold, shorten=True, halign="left", valign="middle")
    label.bind(size=lambda lb, size: setattr(lb, "text_size", (size[0] - dp(6), size[1])))
    return label


class _Strip(BoxLayout):
    """A horizontal row of cells on a coloured background."""

    def __init__(self, bg: tuple[float, ...], **kw: object) -> None:
        super().__init__(orientation="horizontal", padding=(dp(4), 0), **kw)
        with self.canvas.before:
            self._color = Color(*bg)
            self._rect = Rectangle(pos=self.pos, size=self.size)
        self.bind(pos=self._redraw, size=self._redraw)

    def _redraw(self, *_: object) -> None:
        self._rect.pos, self._rect.size = self.pos, self.size


class CallRow(_Strip):
    """One call. A touch asks the desk to select it (`on_pick(row_id, add)`)."""

    def __init__(self, row_id: int, texts: Texts, on_pick: Callable[[int, bool], None],
                 multi: Callable[[], bool]) -> None:
        super().__init__(ROW_BG, size_hint_y=None, height=dp(50))
        self.row_id = row_id
        self.texts = texts
        self.on_pick = on_pick
        self.multi = multi
        self.selected = False
        self.cells = {key: _cell() for key, _ in COLUMNS}
        state = self.cells["col_state"]  # the state, and the row's note in small under it
        state.shorten, state.max_lines, state.markup = False, 2, True
        for key, share in COLUMNS:
            self.cells[key].size_hint_x = share
            self.add_widget(self.cells[key])
        self.data: dict[str, Any] = {}
        self.state_word = self.note_text = ""
        self._duration_at = (0.0, time.monotonic())  # (desk's duration, when we got it)
        self._down_at: float | None = None

    def update(self, row: dict[str, Any]) -> None:
        self.data = dict(row)
        self._duration_at = (float(row.get("duration") or 0.0), time.monotonic())
        c = self.cells
        c["col_line"].text = str(row.get("line", ""))
        c["col_dir"].text = self.texts.direction(str(row.get("direction", "")))
        c["col_remote"].text = remote_text(str(row.get("remote", "")))
        #: What the state cell says, without its markup: the state word and the note.
        self.state_word, self.note_text = self.texts.state(str(row.get("state", ""))), self.texts.note(row)
        state = escape_markup(self.state_word)
        if self.note_text:
            state += f"\n[size={int(sp(NOTE_SIZE))}][color={NOTE_COLOR}]{escape_markup(self.note_text)}[/color][/size]"
        c["col_state"].text = state
        c["col_rec"].text = self.texts["rec_on"] if row.get("recording") else ""
        c["col_rec"].color = (1, 0.3, 0.3, 1)
        self.tick()

    def tick(self) -> None:
        base, at = self._duration_at
        self.cells["col_time"].text = duration_text(base + time.monotonic() - at)

    def show_selected(self, selected: bool) -> None:
        self.selected = selected
        self._color.rgba = ROW_SELECTED if selected else ROW_BG

    # touches: a tap selects only this call; multi-select mode, a long press or a right click adds it
    def on_touch_down(self, touch: Any) -> bool:
        if not self.collide_point(*touch.pos):
            return False
        touch.grab(self)
        self._down_at = time.monotonic()
        return True

    def on_touch_up(self, touch: Any) -> bool:
        if touch.grab_current is not self:
            return False
        touch.ungrab(self)
        held = time.monotonic() - (self._down_at or time.monotonic())
        if self.collide_point(*touch.pos):
            add = self.multi() or getattr(touch, "button", None) == "right" or held >= LONG_PRESS
            self.on_pick(self.row_id, add)
        return True


class CallTable(BoxLayout):
    """The header and the rows, in the order the calls came."""

    def __init__(self, texts: Texts, on_pick: Callable[[int, bool], None], multi: Callable[[], bool],
                 **kw: object) -> None:
        super().__init__(orientation="vertical", spacing=dp(2), **kw)
        self.texts = texts
        self.on_pick = on_pick
        self.multi = multi
        self.rows: dict[int, CallRow] = {}
        self.selection: tuple[int, ...] = ()
        header = _Strip(HEADER_BG, size_hint_y=None, height=dp(30))
        for key, share in COLUMNS:
            cell = _cell(texts[key], bold=True)
            cell.size_hint_x = share
            cell.font_size = sp(14)
            header.add_widget(cell)
        self.add_widget(header)
        self.empty = Label(text=texts["no_calls"], font_size=sp(18), color=(0.6, 0.6, 0.6, 1))
        self.add_widget(self.empty)
        self._filler = BoxLayout()  # keeps rows at the top
        # Started and stopped with the table's first and last call: an empty table schedules nothing.
        self._ticker = Clock.create_trigger(lambda dt: self.tick(), 1.0, interval=True)

    def load(self, rows: Iterable[dict[str, Any]], selection: Iterable[int]) -> None:
        for row in rows:
            self.update(row)
        self.select(selection)

    def update(self, row: dict[str, Any]) -> None:
        row_id = int(row["id"])
        widget = self.rows.get(row_id)
        if widget is None:
            widget = CallRow(row_id, self.texts, self.on_pick, self.multi)
            self.rows[row_id] = widget
            self._relayout()
        widget.update(row)
        widget.show_selected(row_id in self.selection)

    def remove(self, row_id: int) -> None:
        if self.rows.pop(row_id, None) is not None:
            self._relayout()

    def select(self, rows: Iterable[int]) -> None:
        self.selection = tuple(rows)
        for row_id, widget in self.rows.items():
            widget.show_selected(row_id in self.selection)

    def tick(self) -> None:
        for widget in self.rows.values():
            widget.tick()

    def _relayout(self) -> None:
        for child in list(self.children)[:-1]:  # everything but the header (children are last-first)
            self.remove_widget(child)
        if not self.rows:
            self.add_widget(self.empty)
            self._ticker.cancel()
            return
        for row_id in sorted(self.rows):
            self.add_widget(self.rows[row_id])
        self.add_widget(self._filler)
        self._ticker()
