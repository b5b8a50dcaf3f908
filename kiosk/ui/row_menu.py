"""The menu a long press on a call row opens: what applies to that call, as the original's right-click menu.

It lists, by the row's state, selecting the row (or adding it to / taking it
out of a multi-selection) and the actions that can act on a call in that state,
by their screen ids (kiosk.commands.screen_bindings) and the buttons' own words.
Choosing an item calls `on_choose(key)` and closes the menu; the panel then
selects the row and sends the action, so the desk still decides (and a refusal
still says why). `available` (the desk's map, optional) dims the actions it says
cannot act now, as the panel's buttons are dimmed.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from kivy.core.window import Window
from kivy.graphics import Color, Line, Rectangle
from kivy.metrics import dp, sp
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.gridlayout import GridLayout
from kivy.uix.modalview import ModalView

from kiosk.commands import screen_bindings

from . import theme
from .table import FitLabel, fit_words, measurer, row_party
from .texts import Texts

#: An item's height (dp): a touch target with room for two lines.
ITEM_DP = 56
ITEM_SIZE = 16
#: Above this many items the menu has two columns (it must fit 480 px high).
ONE_COLUMN_MAX = 4

#: The colour of each item (a screen id, or a selection item).
COLOURS: dict[str, tuple[float, ...]] = {
    "answer": theme.GREEN, "hangup": theme.RED, "hold": theme.AMBER, "connect": theme.AMBER,
    "transfer_quick": theme.BLUE, "transfer_consult": theme.BLUE, "transfer_confirm": theme.BLUE,
    "conference": theme.BLUE, "record_start": theme.GREY, "record_stop": theme.GREY,
    "select_row": theme.SURFACE_HI, "add_row": theme.SURFACE_HI, "remove_row": theme.SURFACE_HI,
}


def row_actions(row: Mapping[str, Any]) -> list[str]:
    """The screen ids of the actions that apply to a call in the row's state, in the menu's order."""
    state = str(row.get("state", ""))
    record = "record_stop" if row.get("recording") else "record_start"
    if state in ("ringing", "early") and row.get("direction") == "in":
        actions = ["answer", "hangup"]
    elif state in ("dialling", "calling", "ringing", "early"):
        actions = ["hangup"]
    elif state == "talking":
        actions = ["hold", "transfer_quick", "transfer_consult", "conference", record, "hangup"]
    elif state == "on hold":
        actions = ["connect", "transfer_quick", "hangup"]
    elif state == "held by remote":
        actions = ["hold", "transfer_quick", record, "hangup"]
    elif state == "in conference":
        actions = ["hold", record, "hangup"]
    elif state == "consulting":
        actions = ["transfer_confirm", record, "hangup"]
    elif state == "ended":
        actions = []
    else:
        actions = ["hangup"]
    bindings = screen_bindings()
    return [a for a in actions if a in bindings]


def menu_items(texts: Texts, row: Mapping[str, Any], selected: bool, multi: bool = False) -> list[tuple[str, str]]:
    """(key, words) of each item: selecting the row first, then its actions."""
    if multi:
        items = [("remove_row", texts["remove_row"])] if selected else [("add_row", texts["add_row"])]
    else:
        items = [] if selected else [("select_row", texts["select_row"])]
    bindings = screen_bindings()
    ringing_in = row.get("state") in ("ringing", "early") and row.get("direction") == "in"
    for key in row_actions(row):
        words = texts["reject"] if key == "hangup" and ringing_in else texts.label(key, bindings[key].id)
        items.append((key, " ".join(words.split())))  # one line where it fits: "Transfer: Quick"
    return items


class MenuButton(Button):
    """An item: its words fitted at word ends in up to two lines."""

    def __init__(self, text: str, colour: Sequence[float], dimmed: bool = False, **kw: Any) -> None:
        bg = theme.dimmed(colour) if dimmed else tuple(colour)
        fg = (*theme.TEXT[:3], theme.DIM_TEXT) if dimmed else theme.TEXT
        super().__init__(font_size=sp(ITEM_SIZE), halign="center", valign="middle", size_hint_y=None,
                         height=dp(ITEM_DP), background_normal="", background_color=bg, color=fg, **kw)
        self.full_text = text
        self.dimmed = dimmed
        self.bg_rgba = bg
        self.bind(width=lambda *_: self._fit())

    def _fit(self) -> None:
        width = self.width - dp(10)
        self.text = fit_words(self.full_text, width - 1, 2, measurer(self.font_size, self.bold))
        self.text_size = (width, None)


class RowMenu(ModalView):
    """What applies to one row. `items`: key ("select_row", "add_row", "remove_row" or a screen id) -> Button."""

    def __init__(self, texts: Texts, row: dict[str, Any], selected: bool, on_choose: Callable[[str], None],
                 multi: bool = False, available: Mapping[str, Any] | None = None, **kw: Any) -> None:
        entries = menu_items(texts, row, selected, multi)
        cols = 1 if len(entries) <= ONE_COLUMN_MAX else 2
        width = min(Window.width - dp(16), dp(300) if cols == 1 else dp(480))
        rows = -(-len(entries) // cols)
        gap, pad = dp(6), dp(10)
        title_h = dp(44)
        height = 2 * pad + title_h + gap + rows * dp(ITEM_DP) + max(0, rows - 1) * gap + gap + dp(ITEM_DP)
        super().__init__(size_hint=(None, None), size=(width, min(height, Window.height - dp(8))),
                         auto_dismiss=True, background_color=(0, 0, 0, 0), overlay_color=(0, 0, 0, 0.6), **kw)
        self.texts = texts
        self.row = dict(row)
        self.row_id = int(row.get("id", 0))
        self.on_choose = on_choose
        bindings = screen_bindings()
        available = available or {}

        box = BoxLayout(orientation="vertical", padding=pad, spacing=gap)
        box.bg_rgba = theme.SURFACE
        with box.canvas.before:
            Color(*theme.SURFACE)
            self._bg = Rectangle(size=(0, 0))
            Color(*theme.TEXT_MUTED)
            self._frame = Line(width=dp(1))
        box.bind(pos=self._paint, size=self._paint)

        head = BoxLayout(orientation="vertical", size_hint_y=None, height=title_h)
        self.title_label = FitLabel(16, theme.TEXT, bold=True)
        self.state_label = FitLabel(13, theme.TEXT_MUTED)
        head.add_widget(self.title_label)
        head.add_widget(self.state_label)
        who = row_party(self.row).text
        state = texts.state(str(row.get("state", "")))
        head.bind(width=lambda _w, w: (self.title_label.fit(w, who), self.state_label.fit(w, state)))
        box.add_widget(head)

        grid = GridLayout(cols=cols, spacing=gap, size_hint_y=None, height=rows * dp(ITEM_DP) + (rows - 1) * gap)
        self.items: dict[str, Button] = {}
        for key, words in entries:
            action = bindings[key].id if key in bindings else None
            dimmed = action is not None and available.get(action) is not None
            button = MenuButton(words, COLOURS.get(key, theme.GREY), dimmed)
            button.bind(on_release=lambda _b, key=key: self.choose(key))
            self.items[key] = button
            grid.add_widget(button)
        box.add_widget(grid)
        self.close_button = MenuButton(texts["close"], theme.GREY)
        self.close_button.bind(on_release=lambda *_: self.dismiss())
        box.add_widget(self.close_button)
        self.add_widget(box)

    def _paint(self, box: Any, *_: Any) -> None:
        self._bg.pos, self._bg.size = box.pos, box.size
        self._frame.rectangle = (box.x, box.y, box.width, box.height)

    def choose(self, key: str) -> None:
        """An item was chosen: the menu closes, then `on_choose(key)`."""
        self.dismiss(animation=False)
        self.on_choose(key)
