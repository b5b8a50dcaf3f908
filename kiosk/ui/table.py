"""The call table: one row per call, each state with its own look, the desk's selection unmistakable.

Rows are drawn from RowChanged / RowRemoved / SelectionChanged events only: the
desk is the truth, a touch only asks it to select. What a row shows:

- the selection (theme.SELECT, used by nothing else): a thick border, a drawn
  marker at the row's left and a darker blue background, so that it is seen
  without telling colours apart; every selected row of a multi-selection alike;
- the state: a stripe at the left edge in theme.STATE_COLOURS and the state in
  words; an incoming ringing row pulses (one Clock event, only while something
  rings); a held row has a drawn hold mark and the time the customer has waited
  on hold; conference rows stand together under a violet bracket with a
  caption; a consultation sits directly under the call it consults for,
  indented and joined to it by a connector;
- the remote party in two lines (name, then number), the line's label and the
  direction, the call's time (ticking once a second), a REC badge (white on
  REC_BG: readable whatever the row's colour), and the row's note (a transfer's
  progress, a consultation's partner) under the state;
- an ended call for ENDED_SECONDS, greyed, saying why it ended; it cannot be
  selected any more.

Every text is fitted at word ends (`fit_words`: wrapped, then shortened with an
ellipsis after a whole word), never cut in the middle of a word. Nothing is done
per frame: the durations tick once a second, the pulse runs only while a call
rings in, an idle table schedules nothing.

Touches: a tap asks the desk to select only that row (in multi-select mode it
adds or removes the row, as a right click always does); a long press opens the
row's menu (`on_menu`, kiosk.ui.row_menu); a vertical drag scrolls the rows when
there are more than fit, and is never taken for a tap.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

from kivy.clock import Clock
from kivy.core.text import Label as CoreLabel
from kivy.graphics import Color, Line, Rectangle, Triangle
from kivy.metrics import dp, sp
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label
from kivy.uix.scrollview import ScrollView
from kivy.uix.widget import Widget

from kiosk.party import Party, party

from . import theme
from .texts import Texts

#: A press at least this long (s) on a row opens its menu (or, without a menu, adds it to the selection).
LONG_PRESS = 0.6
#: How long (s) an ended call stays in the table, greyed, saying why it ended.
ENDED_SECONDS = 4.0
#: The ringing row's pulse: one cycle per PULSE_PERIOD s, redrawn every PULSE_STEP s (not every frame).
PULSE_PERIOD = 1.0
PULSE_STEP = 1 / 8
#: A touch that moves this far (dp) is a drag (it scrolls), not a tap or a long press.
DRAG_DP = 10

#: The left gutter of every row (dp): the zone of the conference bracket or the consultation's connector,
#: the state stripe and the selection marker. The columns start after it, aligned on every row.
ZONE_DP, STRIPE_DP, MARKER_DP = 12, 6, 18
#: The selected row's border (dp).
BORDER_DP = 3
#: Padding inside a row (dp) and the gap between rows.
PAD_DP, GAP_DP = 4, 4
#: The flexible columns' shares of what the fixed ones (time, REC) leave.
SHARES = (("line", 0.21), ("remote", 0.41), ("state", 0.38))

#: Font sizes (sp).
NAME_SIZE, NUMBER_SIZE, LINE_SIZE, DIR_SIZE = 16, 13, 14, 12
STATE_SIZE, NOTE_SIZE, TIME_SIZE, REC_SIZE = 15, 12, 15, 12
HEADER_SIZE, HINT_SIZE, CAPTION_SIZE = 12, 13, 12
#: Lines a row's note may take (wrapped at word ends, then an ellipsis).
NOTE_LINES = 2

ELLIPSIS = "\u2026"

#: States that are held (the drawn hold mark): filled bars for the operator's hold, outlined when the far end holds.
HELD_STATES = ("on hold", "held by remote")
#: States the desk may send that look like another one.
_LOOKS_LIKE = {"calling": "dialling", "early": "ringing"}


def state_colour(state: str) -> tuple[float, ...]:
    """A state's mark colour (the stripe, the state word)."""
    return tuple(theme.STATE_COLOURS.get(_LOOKS_LIKE.get(state, state), theme.TEXT_MUTED))


# --- text that fits ------------------------------------------------------------------------


def remote_text(remote: str) -> str:
    """A remote party on one line as messages name it: `Alice (2001)`, or `2001`."""
    return party(remote).text


def duration_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


_measurers: dict[tuple[float, bool], Callable[[str], float]] = {}


def measurer(font_size: float, bold: bool = False) -> Callable[[str], float]:
    """The width (px) of a text in the default font at `font_size` px."""
    key = (float(font_size), bool(bold))
    if key not in _measurers:
        core = CoreLabel(font_size=font_size, bold=bold)
        _measurers[key] = lambda text: float(core.get_extents(text)[0]) if text else 0.0
    return _measurers[key]


def _shorten_word(word: str, width: float, measure: Callable[[str], float]) -> str:
    """The last resort for one word wider than a whole line (a long URI): its start and an ellipsis."""
    for end in range(len(word) - 1, 0, -1):
        if measure(word[:end] + ELLIPSIS) <= width:
            return word[:end] + ELLIPSIS
    return ELLIPSIS


def _with_ellipsis(lines: list[str], width: float, measure: Callable[[str], float]) -> list[str]:
    """`lines` whose last one ends with an ellipsis after its last whole word that leaves room for it;
    when not even its first word does, the line before ends with the ellipsis instead."""
    words = lines[-1].split(" ")
    while words:
        candidate = " ".join(words) + ELLIPSIS
        if measure(candidate) <= width:
            return [*lines[:-1], candidate]
        words.pop()
    if len(lines) > 1 and lines[-2]:
        return _with_ellipsis(lines[:-1], width, measure)
    return [*lines[:-1], _shorten_word(lines[-1], width, measure)]


def fit_words(text: str, width: float, max_lines: int, measure: Callable[[str], float]) -> str:
    """`text` wrapped at word ends to lines of at most `width` px, at most `max_lines` of them.

    What does not fit is left out after a whole word, with an ellipsis; a "\\n"
    in `text` starts a new line. Only a single word wider than a whole line (a
    long URI) is shortened inside itself, with an ellipsis.
    """
    if width <= 0 or not text:
        return text
    lines: list[str] = []
    paragraphs = text.split("\n")
    for number, paragraph in enumerate(paragraphs):
        words = paragraph.split()
        i = 0
        while i < len(words) or (not words and i == 0):
            if len(lines) == max_lines:
                return "\n".join(_with_ellipsis(lines, width, measure))
            if not words:  # an empty paragraph: an empty line
                lines.append("")
                break
            line = words[i]
            i += 1
            if measure(line) > width:
                lines.append(_shorten_word(line, width, measure))
                continue
            while i < len(words) and measure(line + " " + words[i]) <= width:
                line += " " + words[i]
                i += 1
            lines.append(line)
        if number < len(paragraphs) - 1 and len(lines) == max_lines:
            return "\n".join(_with_ellipsis(lines, width, measure))
    return "\n".join(lines)


class FitLabel(Label):
    """A label sized by its owner, whose text (`full_text`) is fitted at word ends to `lines` lines.

    `bg_rgba`: the colour it is drawn on when that is not its row's (the REC badge).
    """

    def __init__(self, size: float, color: Sequence[float], bold: bool = False, lines: int = 1,
                 halign: str = "left", **kw: Any) -> None:
        super().__init__(font_size=sp(size), color=tuple(color), bold=bold, halign=halign, valign="middle",
                         size_hint=(None, None), size=(0, 0), **kw)
        self.lines = lines
        self.full_text = ""
        self.bg_rgba: tuple[float, ...] | None = None
        self._fitted: tuple[str, float] | None = None

    def fit(self, width: float, text: str | None = None, tight: bool = False) -> float:
        """Fit `text` (else the last one) to `width`; the label takes the text's height (and its width
        when `tight`). Returns the height."""
        if text is not None:
            self.full_text = text
        width = max(0.0, width)
        if self._fitted == (self.full_text, width):
            return self.height
        self._fitted = (self.full_text, width)
        measure = measurer(self.font_size, self.bold)
        self.text = fit_words(self.full_text, width - 1, self.lines, measure)
        self.text_size = (None, None) if tight else (width, None)
        self.texture_update()
        tw, th = self.texture_size if self.text else (0, 0)
        self.size = (tw if tight else width, th)
        return self.height


# --- the columns -----------------------------------------------------------------------------


class Columns:
    """Where each column of the table is (x, width, relative to a row's left), shared by the header
    and every row so that they line up; the time and REC columns are as wide as their texts."""

    def __init__(self, rec_text: str) -> None:
        self.time_w = measurer(sp(TIME_SIZE))("0:00:00") + dp(8)
        self.rec_w = measurer(sp(REC_SIZE), True)(rec_text) + dp(14)
        self._cache: dict[float, dict[str, tuple[float, float]]] = {}

    @staticmethod
    def gutter() -> float:
        return dp(ZONE_DP + STRIPE_DP + MARKER_DP)

    def spans(self, width: float) -> dict[str, tuple[float, float]]:
        spans = self._cache.get(width)
        if spans is None:
            x = self.gutter()
            flexible = max(0.0, width - x - self.time_w - self.rec_w - dp(PAD_DP))
            spans = {}
            for key, share in SHARES:
                spans[key] = (x, flexible * share)
                x += flexible * share
            spans["time"] = (x, self.time_w)
            spans["rec"] = (x + self.time_w, self.rec_w)
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[width] = spans
        return spans


def _background(widget: Any) -> tuple[float, ...]:
    """The colour a widget of the table is drawn on (its own `bg_rgba`, else its nearest painted parent's)."""
    while widget is not None:
        bg = getattr(widget, "bg_rgba", None)
        if bg is not None:
            return tuple(bg)
        widget = widget.parent
    return tuple(theme.BG)


# --- one row -----------------------------------------------------------------------------------


def row_party(row: dict[str, Any]) -> Party:
    """The remote party of a row: the desk's `name` / `number` when it sent them, else parsed from `remote`."""
    parsed = party(str(row.get("remote") or ""))
    name = row.get("name")
    number = row.get("number")
    return Party(parsed.name if name is None else str(name), parsed.number if number is None else str(number),
                 parsed.host)


def _note(texts: Texts, row: dict[str, Any], names: dict[int, str]) -> str:
    """The row's note in the operator's language, naming calls by their party when Texts can."""
    try:
        return texts.note(row, names=names)  # type: ignore[call-arg]
    except TypeError:  # a Texts without `names` yet
        return texts.note(row)


class CallRow(Widget):
    """One call. A touch asks the desk to select it (`on_pick(row_id, add)`); a long press opens its menu.

    `cells`: the labels, by what they show: col_line (the line's label), col_dir, col_remote (the name, or
    the number when there is none), col_number, col_state (the state, the time on hold, or why it ended),
    col_note, col_time, col_rec (the REC badge, "" when not recording).
    """

    def __init__(self, row_id: int, texts: Texts, on_pick: Callable[[int, bool], None],
                 multi: Callable[[], bool], on_menu: Callable[[int], None] | None = None,
                 names: Callable[[], dict[int, str]] | None = None,
                 columns: Columns | None = None, on_drag: Callable[[float], None] | None = None,
                 lookup: Callable[[int], CallRow | None] | None = None) -> None:
        super().__init__(size_hint_y=None, size=(0, dp(theme.TOUCH)))
        self.row_id = row_id
        self.texts = texts
        self.on_pick = on_pick
        self.multi = multi
        self.on_menu = on_menu
        self.names = names or dict
        self.columns = columns or Columns(texts["rec_on"])
        self.on_drag = on_drag
        self.lookup = lookup or (lambda row_id: None)
        self.data: dict[str, Any] = {}
        self.selected = False
        self.ended = False
        self.ended_reason = ""
        #: What the state cell says: the state word; the row's own note (the desk's, translated).
        self.state_word = self.note_text = ""
        #: "" | "consult" (under the call it consults for) | "group" | "group_last" (in the conference bracket)
        self.role = ""
        self._pulse = 0.0
        self._duration_at = (0.0, time.monotonic())  # (desk's duration, when we got it)
        self._ended_event: Any = None
        self._long_event: Any = None

        muted = theme.TEXT_MUTED
        self.cells: dict[str, FitLabel] = {
            "col_line": FitLabel(LINE_SIZE, muted, lines=2),
            "col_dir": FitLabel(DIR_SIZE, muted),
            "col_remote": FitLabel(NAME_SIZE, theme.TEXT, bold=True, lines=2),
            "col_number": FitLabel(NUMBER_SIZE, muted),
            "col_state": FitLabel(STATE_SIZE, theme.TEXT, bold=True, lines=2),
            "col_note": FitLabel(NOTE_SIZE, muted, lines=NOTE_LINES),
            "col_time": FitLabel(TIME_SIZE, theme.TEXT),
            "col_rec": FitLabel(REC_SIZE, (1, 1, 1, 1), bold=True, halign="center"),
        }
        self.cells["col_rec"].bg_rgba = theme.REC_BG
        with self.canvas.before:
            self._bg_color = Color(*theme.SURFACE)
            self._bg = Rectangle(size=(0, 0))
            self._stripe_color = Color(*theme.STATE_COLOURS["ended"])
            self._stripe = Rectangle(size=(0, 0))
            self._zone_color = Color(0, 0, 0, 0)
            self._zone = [Rectangle(size=(0, 0)), Rectangle(size=(0, 0))]
            self._select_color = Color(0, 0, 0, 0)
            self._border = [Rectangle(size=(0, 0)) for _ in range(4)]
            self._marker = Triangle()
            self._hold_color = Color(0, 0, 0, 0)
            self._hold_bars = [Rectangle(size=(0, 0)), Rectangle(size=(0, 0))]
            self._hold_outline_color = Color(0, 0, 0, 0)
            self._hold_outline = [Line(width=dp(1)), Line(width=dp(1))]
            self._rec_color = Color(0, 0, 0, 0)
            self._rec_bg = Rectangle(size=(0, 0))
        for label in self.cells.values():
            self.add_widget(label)
        self.bind(width=lambda *_: self._refit(), pos=lambda *_: self._place(), height=lambda *_: self._place())

    # --- what the row shows ----------------------------------------------------------------------

    @property
    def bg_rgba(self) -> tuple[float, ...]:
        """The row's background colour now (for the contrast of its texts)."""
        return tuple(self._bg_color.rgba)

    @property
    def party(self) -> Party:
        return row_party(self.data)

    @property
    def state(self) -> str:
        return "ended" if self.ended else str(self.data.get("state", ""))

    @property
    def ringing_in(self) -> bool:
        """Pulses: an incoming call ringing here."""
        return not self.ended and self.data.get("state") == "ringing" and self.data.get("direction") == "in"

    @property
    def in_conference(self) -> bool:
        return not self.ended and bool(self.data.get("conference") or self.data.get("state") == "in conference")

    @property
    def consult_for(self) -> int | None:
        value = self.data.get("consult_for")
        return value if isinstance(value, int) and not isinstance(value, bool) and value != self.row_id else None

    def update(self, row: dict[str, Any]) -> None:
        self.data = dict(row)
        self._duration_at = (float(row.get("duration") or 0.0), time.monotonic())
        self._show_text()

    def end(self, reason: str) -> None:
        """The call ended: greyed, saying why, no longer selectable; the table forgets it later."""
        self.tick(refit=False)  # the time it ended at, frozen from now on
        self.ended, self.ended_reason = True, reason
        self.selected = False
        self._show_text()

    def revive(self) -> None:
        self.ended, self.ended_reason = False, ""
        if self._ended_event is not None:
            self._ended_event.cancel()
            self._ended_event = None

    def _show_text(self) -> None:
        row, c, texts = self.data, self.cells, self.texts
        who = self.party
        title = who.title
        c["col_line"].full_text = str(row.get("line_label") or row.get("line") or "")
        c["col_dir"].full_text = texts.direction(str(row.get("direction", "")))
        c["col_remote"].full_text = title
        c["col_number"].full_text = who.number if who.number and who.number != title else ""
        self.state_word = texts.state(str(row.get("state", "")))
        self.note_text = _note(texts, row, self.names())
        c["col_rec"].full_text = texts["rec_on"] if row.get("recording") and not self.ended else ""
        self._paint()
        self.tick(refit=False)
        self._refit()

    def refresh_names(self) -> None:
        """Other rows came or went: the note and the consultation's partner may name them."""
        if self.data:
            note = _note(self.texts, self.data, self.names())
            if note != self.note_text or self.consult_for is not None:
                self.note_text = note
                self._refit()

    def _state_line(self) -> str:
        if self.ended:
            return (self.texts["ended_because"].format(reason=self.ended_reason) if self.ended_reason
                    else self.texts["ended"])
        held_since = self.data.get("held_since")
        if self.data.get("state") == "on hold" and isinstance(held_since, (int, float)) and held_since:
            return self.texts["on_hold_for"].format(time=duration_text(time.time() - float(held_since)))
        return self.state_word

    def _note_lines(self) -> str:
        parts = []
        parent = self.consult_for
        other = self.lookup(parent) if parent is not None else None
        if other is not None and other.party.title:  # it is shown just above: its name says enough
            parts.append(self.texts["consult_for"].format(name=other.party.title))
        if self.note_text:
            parts.append(self.note_text)
        self.cells["col_note"].lines = NOTE_LINES + (1 if len(parts) > 1 else 0)
        return "\n".join(parts)

    def tick(self, refit: bool = True) -> None:
        """Once a second: the call's time and the time on hold (frozen once it ended)."""
        if self.ended:
            return
        base, at = self._duration_at
        self.cells["col_time"].full_text = duration_text(base + time.monotonic() - at)
        self.cells["col_state"].full_text = self._state_line()
        if refit and self.width > 1:
            spans = self.columns.spans(self.width)
            self.cells["col_time"].fit(spans["time"][1] - dp(4))
            before = self.cells["col_state"].height
            self.cells["col_state"].fit(self._state_width(spans))
            if self.cells["col_state"].height != before:
                self._refit()

    def show_selected(self, selected: bool) -> None:
        selected = selected and not self.ended
        if selected != self.selected:
            self.selected = selected
            self._paint()

    def set_role(self, role: str) -> None:
        if role != self.role:
            self.role = role
            self._place()

    def set_pulse(self, t: float) -> None:
        """The ringing pulse, 0..1 (towards RINGING_BG)."""
        self._pulse = t
        self._bg_color.rgba = self._base_bg()

    def _base_bg(self) -> tuple[float, ...]:
        base = theme.SELECT_BG if self.selected else theme.SURFACE
        return theme.mix(base, theme.RINGING_BG, self._pulse) if self.ringing_in else tuple(base)

    def _paint(self) -> None:
        """The colours: background, stripe, selection, hold mark, REC badge, texts (greyed once ended)."""
        state = self.state
        if not self.ringing_in:
            self._pulse = 0.0
        self._bg_color.rgba = self._base_bg()
        mark = state_colour(state)
        self._stripe_color.rgba = mark
        self._select_color.rgba = theme.SELECT if self.selected else (0, 0, 0, 0)
        held = state in HELD_STATES
        self._hold_color.rgba = mark if held and state == "on hold" else (0, 0, 0, 0)
        self._hold_outline_color.rgba = mark if held and state != "on hold" else (0, 0, 0, 0)
        self._rec_color.rgba = theme.REC_BG if self.cells["col_rec"].full_text else (0, 0, 0, 0)
        grey = theme.STATE_COLOURS["ended"]
        for key, label in self.cells.items():
            if key == "col_rec":
                continue
            if self.ended:
                label.color = grey
            elif key == "col_state":
                label.color = mark
            elif key in ("col_remote", "col_time"):
                label.color = theme.TEXT
            else:
                label.color = theme.TEXT_MUTED

    # --- layout --------------------------------------------------------------------------------

    def _state_width(self, spans: dict[str, tuple[float, float]]) -> float:
        return spans["state"][1] - dp(4) - (self._hold_w() if self.state in HELD_STATES else 0)

    @staticmethod
    def _hold_w() -> float:
        return dp(16)

    def _refit(self) -> None:
        """Fit every text to its column; the row takes the height its tallest column needs (>= TOUCH)."""
        c = self.cells
        c["col_state"].full_text = self._state_line()
        c["col_note"].full_text = self._note_lines()
        if self.width <= 1:  # not laid out yet: the words are there to read, fitted once it is
            for label in c.values():
                label.text = label.full_text
            return
        spans = self.columns.spans(self.width)
        inner = dp(4)
        heights = [
            c["col_line"].fit(spans["line"][1] - inner) + c["col_dir"].fit(spans["line"][1] - inner),
            c["col_remote"].fit(spans["remote"][1] - inner) + c["col_number"].fit(spans["remote"][1] - inner),
            c["col_state"].fit(self._state_width(spans)) + c["col_note"].fit(spans["state"][1] - inner),
            c["col_time"].fit(spans["time"][1] - inner),
            c["col_rec"].fit(spans["rec"][1] - dp(10), tight=True),
        ]
        height = max(dp(theme.TOUCH), max(heights) + 2 * dp(PAD_DP + BORDER_DP))
        if height != self.height:
            self.height = height  # _place follows
        else:
            self._place()

    def _place(self) -> None:
        """Put the labels and the drawing where the columns are (no text is fitted here)."""
        if self.width <= 1:
            return
        spans = self.columns.spans(self.width)
        c = self.cells
        x0, y0, h = self.x, self.y, self.height
        mid = y0 + h / 2

        def stack(col: str, labels: Sequence[FitLabel]) -> None:
            x = x0 + spans[col][0] + dp(2)
            total = sum(lb.height for lb in labels)
            top = mid + total / 2
            for lb in labels:
                top -= lb.height
                lb.pos = (x, top)

        stack("line", (c["col_line"], c["col_dir"]))
        stack("remote", (c["col_remote"], c["col_number"]))
        stack("state", (c["col_state"], c["col_note"]))
        if self.state in HELD_STATES:  # the state's words after the hold mark; the note under both
            c["col_state"].x += self._hold_w()
        stack("time", (c["col_time"],))
        rec = c["col_rec"]
        rx, rw = spans["rec"]
        pad_x, pad_y = dp(5), dp(3)
        rec.pos = (x0 + rx + (rw - rec.width) / 2, mid - rec.height / 2)
        self._rec_bg.pos = (rec.x - pad_x, rec.y - pad_y)
        self._rec_bg.size = (rec.width + 2 * pad_x, rec.height + 2 * pad_y) if rec.text else (0, 0)

        # the background starts after the zone of the bracket or connector when the row has one
        zone = dp(ZONE_DP)
        bx = x0 + (zone if self.role else 0.0)
        bw = self.width - (bx - x0)
        self._bg.pos, self._bg.size = (bx, y0), (bw, h)
        stripe_x = bx + dp(BORDER_DP)  # at the row's left edge, inside the selection's border
        self._stripe.pos, self._stripe.size = (stripe_x, y0), (dp(STRIPE_DP), h)
        t = dp(BORDER_DP)
        self._border[0].pos, self._border[0].size = (bx, y0), (bw, t)
        self._border[1].pos, self._border[1].size = (bx, y0 + h - t), (bw, t)
        self._border[2].pos, self._border[2].size = (bx, y0), (t, h)
        self._border[3].pos, self._border[3].size = (bx + bw - t, y0), (t, h)
        mx = stripe_x + dp(STRIPE_DP) + dp(4)  # the marker: a triangle pointing at the row
        half = dp(8)
        self._marker.points = (mx, mid - half, mx, mid + half, mx + dp(10), mid)

        # the hold mark: two bars left of the state word
        hx = x0 + spans["state"][0] + dp(2)
        state = c["col_state"]
        sy = state.y + state.height / 2
        bar_w, bar_h = dp(4), dp(12)
        for i, (bar, line) in enumerate(zip(self._hold_bars, self._hold_outline)):
            bxi = hx + i * dp(7)
            bar.pos, bar.size = (bxi, sy - bar_h / 2), (bar_w, bar_h)
            line.rectangle = (bxi, sy - bar_h / 2, bar_w, bar_h)

        # the zone: the conference bracket, or the connector from the call this one consults for
        line_w, gap = dp(3), dp(GAP_DP)
        zx = x0 + dp(4)
        if self.role == "consult":
            self._zone_color.rgba = theme.STATE_COLOURS["consulting"]
            self._zone[0].pos, self._zone[0].size = (zx, mid), (line_w, h / 2 + gap)
            self._zone[1].pos, self._zone[1].size = (zx, mid - line_w / 2), (bx - zx, line_w)
        elif self.role in ("group", "group_last"):
            self._zone_color.rgba = theme.STATE_COLOURS["in conference"]
            if self.role == "group":
                self._zone[0].pos, self._zone[0].size = (zx, y0 - gap), (line_w, h + gap)
                self._zone[1].size = (0, 0)
            else:
                self._zone[0].pos, self._zone[0].size = (zx, y0), (line_w, h)
                self._zone[1].pos, self._zone[1].size = (zx, y0), (bx - zx, line_w)
        else:
            self._zone_color.rgba = (0, 0, 0, 0)

    # --- touches: a tap selects only this call; multi-select mode or a right click adds it; a long press
    # opens the row's menu; a drag scrolls ------------------------------------------------------------

    def on_touch_down(self, touch: Any) -> bool:
        if not self.collide_point(*touch.pos):
            return False
        if getattr(touch, "is_mouse_scrolling", False):
            return False
        touch.grab(self)
        y = self.to_window(*touch.pos)[1]  # window coordinates: the row itself moves while it scrolls
        touch.ud["kiosk.row"] = {"at": time.monotonic(), "y": y, "last": y, "drag": False, "long": False}
        if not self.ended and getattr(touch, "button", None) != "right":
            self._long_event = Clock.schedule_once(lambda dt: self._long_press(touch), LONG_PRESS)
        return True

    def on_touch_move(self, touch: Any) -> bool:
        if touch.grab_current is not self:
            return False
        press = touch.ud.get("kiosk.row")
        if press is None:
            return True
        y = self.to_window(*touch.pos)[1]
        if not press["drag"] and abs(y - press["y"]) > dp(DRAG_DP):
            press["drag"] = True
            self._cancel_long()
        if press["drag"] and self.on_drag is not None:
            self.on_drag(y - press["last"])
        press["last"] = y
        return True

    def on_touch_up(self, touch: Any) -> bool:
        if touch.grab_current is not self:
            return False
        touch.ungrab(self)
        self._cancel_long()
        press = touch.ud.get("kiosk.row") or {"at": time.monotonic(), "drag": False, "long": False}
        if press["drag"] or press["long"] or self.ended or not self.collide_point(*touch.pos):
            return True  # scrolled, the menu opened already, an ended call, or the finger slid off
        right = getattr(touch, "button", None) == "right"
        if not right and time.monotonic() - press["at"] >= LONG_PRESS:
            self._menu()
            return True
        self.on_pick(self.row_id, right or self.multi())
        return True

    def stop_clocks(self) -> None:
        self._cancel_long()
        if self._ended_event is not None:
            self._ended_event.cancel()

    def _cancel_long(self) -> None:
        if self._long_event is not None:
            self._long_event.cancel()
            self._long_event = None

    def _long_press(self, touch: Any) -> None:
        """LONG_PRESS after the touch began and it is still down (its touch_up cancels this), unmoved."""
        self._long_event = None
        press = touch.ud.get("kiosk.row")
        if press is None or press["drag"] or self.ended:
            return
        press["long"] = True
        self._menu()

    def _menu(self) -> None:
        if self.on_menu is not None:
            self.on_menu(self.row_id)
        else:
            self.on_pick(self.row_id, True)


# --- the pieces around the rows ----------------------------------------------------------------------


class _Caption(Widget):
    """The conference group's caption, where its violet bracket begins."""

    def __init__(self) -> None:
        super().__init__(size_hint_y=None, height=dp(20))
        colour = theme.STATE_COLOURS["in conference"]
        self.label = FitLabel(CAPTION_SIZE, colour, bold=True)
        self.bg_rgba = theme.BG
        with self.canvas.before:
            Color(*colour)
            self._bar = Rectangle(size=(0, 0))
            self._tick = Rectangle(size=(0, 0))
        self.add_widget(self.label)
        self.bind(pos=lambda *_: self._place(), size=lambda *_: self._place())

    def show(self, text: str) -> None:
        self.label.full_text = text
        self._place()

    def _place(self) -> None:
        line_w = dp(3)
        zx = self.x + dp(4)
        mid = self.y + self.height / 2
        self._bar.pos, self._bar.size = (zx, self.y - dp(GAP_DP)), (line_w, self.height / 2 + dp(GAP_DP))
        self._tick.pos, self._tick.size = (zx, mid - line_w / 2), (dp(ZONE_DP + STRIPE_DP), line_w)
        x = self.x + dp(ZONE_DP + STRIPE_DP) + dp(6)
        self.label.fit(self.width - (x - self.x))
        self.label.pos = (x, mid - self.label.height / 2)


class _Header(Widget):
    """The columns' captions, on the header's colour."""

    def __init__(self, texts: Texts, columns: Columns) -> None:
        super().__init__(size_hint_y=None, height=dp(22))
        self.columns = columns
        self.bg_rgba = theme.HEADER
        self.cells = {key: FitLabel(HEADER_SIZE, theme.TEXT_MUTED, bold=True) for key in
                      ("line", "remote", "state", "time", "rec")}
        self._texts = {"line": texts["col_line"], "remote": texts["col_remote"], "state": texts["col_state"],
                       "time": texts["col_time"], "rec": texts["col_rec"]}
        with self.canvas.before:
            Color(*theme.HEADER)
            self._rect = Rectangle(size=(0, 0))
        for label in self.cells.values():
            self.add_widget(label)
        self.bind(pos=lambda *_: self._place(), size=lambda *_: self._place())

    def _place(self) -> None:
        self._rect.pos, self._rect.size = self.pos, self.size
        spans = self.columns.spans(self.width)
        for key, label in self.cells.items():
            x, w = spans[key]
            label.fit(w - dp(4), self._texts[key])
            label.pos = (self.x + x + dp(2), self.y + (self.height - label.height) / 2)


class _Rows(ScrollView):
    """The rows, scrolled when there are more than fit. Touches go straight to the rows (no waiting to
    see whether a touch scrolls, as Kivy's ScrollView does): a row that sees a drag scrolls the view."""

    def on_touch_down(self, touch: Any) -> bool:
        if not self.collide_point(*touch.pos):
            return False
        if getattr(touch, "is_mouse_scrolling", False):
            self.drag(dp(40) if touch.button == "scrolldown" else -dp(40))
            return True
        return self._to_rows("on_touch_down", touch)

    def on_touch_move(self, touch: Any) -> bool:
        return self._to_rows("on_touch_move", touch)

    def on_touch_up(self, touch: Any) -> bool:
        return self._to_rows("on_touch_up", touch)

    def _to_rows(self, event: str, touch: Any) -> bool:
        touch.push()
        touch.apply_transform_2d(self.to_local)
        try:
            return bool(getattr(Widget, event)(self, touch))
        finally:
            touch.pop()

    @property
    def scrollable(self) -> bool:
        return bool(self.children) and self.children[0].height > self.height

    def drag(self, dy: float) -> None:
        """Move the rows with a finger that moved `dy` px up."""
        if not self.children:
            return
        span = self.children[0].height - self.height
        if span > 0:
            self.scroll_y = min(1.0, max(0.0, self.scroll_y - dy / span))


# --- the table ---------------------------------------------------------------------------------------


class CallTable(BoxLayout):
    """The header, the rows (ordered by call, conference rows together, a consultation under its call),
    the `nothing selected` hint, or `No calls`.

    `rows`: the calls the desk has, by id; `ended`: calls that ended less than ENDED_SECONDS ago (shown
    greyed). `on_menu(row_id)`: a long press on a row (without it, a long press adds the row).
    """

    def __init__(self, texts: Texts, on_pick: Callable[[int, bool], None], multi: Callable[[], bool],
                 on_menu: Callable[[int], None] | None = None, **kw: Any) -> None:
        super().__init__(orientation="vertical", spacing=dp(2), **kw)
        self.texts = texts
        self.on_pick = on_pick
        self.multi = multi
        self.on_menu = on_menu
        self.rows: dict[int, CallRow] = {}
        self.ended: dict[int, CallRow] = {}
        self.selection: tuple[int, ...] = ()
        self.columns = Columns(texts["rec_on"])
        self.bg_rgba = theme.BG
        with self.canvas.before:
            Color(*theme.BG)
            self._bg = Rectangle(size=(0, 0))
        self.bind(pos=lambda *_: self._paint_bg(), size=lambda *_: self._paint_bg())
        self._paint_bg()

        self.header = _Header(texts, self.columns)
        self.add_widget(self.header)
        self.body = GridLayout(cols=1, size_hint_y=None, spacing=dp(GAP_DP), padding=(0, dp(2)))
        self.body.bind(minimum_height=self.body.setter("height"))
        self.scroll = _Rows(do_scroll_x=False, bar_width=dp(5), scroll_type=["content"],
                            bar_color=(*theme.TEXT_MUTED[:3], 0.8), bar_inactive_color=(*theme.TEXT_MUTED[:3], 0.8))
        self.scroll.add_widget(self.body)
        self.caption = _Caption()
        self.empty = Label(text=texts["no_calls"], font_size=sp(18), color=theme.TEXT_MUTED)
        self.hint = FitLabel(HINT_SIZE, theme.STATUS_INFO, halign="center")
        self.hint.size_hint = (1, None)
        self.hint.bind(width=lambda lb, w: lb.fit(w, texts["nothing_selected"]))
        self.add_widget(self.empty)
        self._order: list[tuple[int | str, str]] = []
        # Started and stopped with the table's first and last call: an empty table schedules nothing.
        self._ticker = Clock.create_trigger(lambda dt: self.tick(), 1.0, interval=True)
        # Runs only while a call rings in.
        self._pulser = Clock.create_trigger(lambda dt: self._pulse(), PULSE_STEP, interval=True)

    def _paint_bg(self) -> None:
        self._bg.pos, self._bg.size = self.pos, self.size

    # --- the desk's events -------------------------------------------------------------------------

    def load(self, rows: Iterable[dict[str, Any]], selection: Iterable[int]) -> None:
        for row in rows:
            self.update(row)
        self.select(selection)

    def update(self, row: dict[str, Any]) -> None:
        row_id = int(row["id"])
        widget = self.rows.get(row_id)
        new = widget is None
        if widget is None:
            widget = self.ended.pop(row_id, None)
            if widget is not None:
                widget.revive()
            else:
                widget = CallRow(row_id, self.texts, self.on_pick, self.multi, self._menu, self.names,
                                 self.columns, self.scroll.drag, self.row)
            self.rows[row_id] = widget
        widget.update(row)
        widget.show_selected(row_id in self.selection)
        self._structure(names_changed=new)

    def remove(self, row_id: int, reason: str = "") -> None:
        """The call ended: its row stays ENDED_SECONDS, greyed with why, then goes."""
        widget = self.rows.pop(row_id, None)
        if widget is None:
            return
        widget.end(reason)
        self.ended[row_id] = widget
        widget._ended_event = Clock.schedule_once(lambda dt: self._forget(row_id, widget), ENDED_SECONDS)
        self._structure()

    def _forget(self, row_id: int, widget: CallRow) -> None:
        if self.ended.get(row_id) is widget:
            del self.ended[row_id]
            self._structure(names_changed=True)

    def select(self, rows: Iterable[int]) -> None:
        self.selection = tuple(rows)
        for row_id, widget in self.rows.items():
            widget.show_selected(row_id in self.selection)
        self._show_hint()
        self._pulse()
        first = next((r for r in self.selection if r in self.rows), None)
        if first is not None:
            self.show_row(first)

    def show_row(self, row_id: int) -> None:
        """Scroll the rows so that this one is in sight (when there are more rows than fit)."""
        widget = self.row(row_id)
        if widget is not None and widget.parent is self.body and self.scroll.scrollable:
            self.scroll.scroll_to(widget, padding=dp(4), animate=False)

    def tick(self) -> None:
        for widget in self.rows.values():
            widget.tick()

    def close(self) -> None:
        """Stop every clock of the table (the panel goes away)."""
        self._ticker.cancel()
        self._pulser.cancel()
        for widget in (*self.rows.values(), *self.ended.values()):
            widget.stop_clocks()

    def names(self) -> dict[int, str]:
        """Each call (the ended ones still shown too) as messages name it: its remote party."""
        return {row_id: w.party.text for row_id, w in (*self.ended.items(), *self.rows.items())}

    def row(self, row_id: int) -> CallRow | None:
        """A call's row, ended or not."""
        return self.rows.get(row_id) or self.ended.get(row_id)

    def labels(self) -> Iterator[tuple[Label, tuple[float, ...]]]:
        """Every text shown now, with the colour it is drawn on (for contrast checks)."""
        stack: list[Widget] = [self]
        while stack:
            widget = stack.pop()
            if isinstance(widget, Label) and widget.text:
                yield widget, _background(widget)
            stack.extend(widget.children)

    # --- drawing -------------------------------------------------------------------------------------

    def _menu(self, row_id: int) -> None:
        if self.on_menu is not None:
            self.on_menu(row_id)
        else:
            self.on_pick(row_id, True)

    def _placement(self) -> list[tuple[int | str, str]]:
        """The rows in the order they are shown, each with its role: calls by id; the conference rows
        together where the first of them is, under their caption; a consultation under its call."""
        widgets = {**self.ended, **self.rows}
        ids = sorted(widgets)
        conference = [i for i in ids if widgets[i].in_conference]
        children: dict[int, list[int]] = {}
        for i in ids:
            parent = widgets[i].consult_for
            if (parent in widgets and i not in conference and widgets[parent].consult_for is None):
                children.setdefault(parent, []).append(i)  # type: ignore[index]
        placed_under = {c for kids in children.values() for c in kids}
        order: list[tuple[int | str, str]] = []
        grouped = False
        for i in ids:
            if i in placed_under:
                continue
            if i in conference:
                if grouped:
                    continue
                grouped = True
                order.append(("caption", ""))
                order.extend((j, "group") for j in conference)
                order[-1] = (order[-1][0], "group_last")
                order.extend((c, "consult") for j in conference for c in children.get(j, []))
            else:
                order.append((i, ""))
                order.extend((c, "consult") for c in children.get(i, []))
        return order

    def _structure(self, names_changed: bool = False) -> None:
        """Re-place the rows when their order or grouping changed; start or stop the clocks."""
        widgets = {**self.ended, **self.rows}
        order = self._placement()
        if order != self._order:
            self._order = order
            self.body.clear_widgets()
            count = sum(1 for key, _ in order if key != "caption" and widgets[key].in_conference)  # type: ignore
            for key, role in order:
                if key == "caption":
                    self.caption.show(f"{self.texts['conference_group']} ({count})")
                    self.body.add_widget(self.caption)
                else:
                    widgets[key].set_role(role)  # type: ignore[index]
                    self.body.add_widget(widgets[key])  # type: ignore[index]
            names_changed = True
            has_rows = bool(widgets)
            if has_rows and self.scroll.parent is None:
                self.remove_widget(self.empty)
                self.add_widget(self.scroll, index=0)
            elif not has_rows and self.scroll.parent is not None:
                self.remove_widget(self.scroll)
                self.add_widget(self.empty, index=0)
        if names_changed:
            for widget in widgets.values():
                widget.refresh_names()
        self._show_hint()
        if self.rows:
            if not self._ticker.is_triggered:
                self._ticker()
        else:
            self._ticker.cancel()
        self._pulse()

    def _show_hint(self) -> None:
        """`No call selected` under the rows while there are calls and none is selected."""
        show = bool(self.rows) and not any(r in self.rows for r in self.selection)
        if show and self.hint.parent is None:
            self.hint.fit(self.width or 1, self.texts["nothing_selected"])
            self.add_widget(self.hint, index=0)  # last: under the rows
        elif not show and self.hint.parent is not None:
            self.remove_widget(self.hint)

    def _pulse(self) -> None:
        """One step of the ringing rows' pulse; started while something rings in, stopped after."""
        ringing = [w for w in self.rows.values() if w.ringing_in]
        if not ringing:
            self._pulser.cancel()
            return
        phase = (time.monotonic() % PULSE_PERIOD) / PULSE_PERIOD
        t = (1 - math.cos(2 * math.pi * phase)) / 2
        for widget in ringing:
            widget.set_pulse(t)
        if not self._pulser.is_triggered:
            self._pulser()
