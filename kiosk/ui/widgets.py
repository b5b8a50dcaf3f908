"""Small Kivy widgets the panel is built from: big buttons, a choice list, a keypad.

Sized for an 800x480 touchscreen: nothing a finger must hit is under ~48 px.
Every callback here is a plain function given by the panel; these widgets keep
no panel state of their own.
"""

from __future__ import annotations

from typing import Callable, Sequence

from kivy.graphics import Color, Rectangle
from kivy.metrics import dp, sp
from kivy.uix.button import Button
from kivy.uix.dropdown import DropDown
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label

from .frontend import DIAL_CHARS

#: Background colours (RGBA) used across the panel.
GREEN = (0.15, 0.55, 0.2, 1)
RED = (0.7, 0.15, 0.12, 1)
BLUE = (0.2, 0.4, 0.75, 1)
GREY = (0.3, 0.3, 0.33, 1)
AMBER = (0.75, 0.5, 0.1, 1)


#: How much of its colour a dimmed button keeps (its background and its label).
DIM_BACKGROUND = 0.35
DIM_TEXT = 0.45


class BigButton(Button):
    """A button whose (possibly two-line) label wraps and stays centred.

    `dimmed`: the action cannot act now (the desk's `available` says why). A
    dimmed button still takes a tap, so that the desk's refusal says why on
    the status line: it is greyed out, never disabled.
    """

    def __init__(self, text: str, on_press: Callable[[], None], color: Sequence[float] = GREY,
                 font_size: float | None = None, **kw: object) -> None:
        if font_size is None:  # a long word ("консультацией") must still fit a seventh of 800 px
            font_size = sp(13) if max(len(w) for w in text.split() or [""]) > 11 else sp(15)
        super().__init__(text=text, halign="center", valign="middle", font_size=font_size,
                         background_normal="", background_color=tuple(color), **kw)
        self._base = tuple(color)
        self.dimmed = False
        self.bind(size=self._wrap)
        # on_release: a finger that slides off the button does not press it
        self.bind(on_release=lambda *_: on_press())

    def _wrap(self, *_: object) -> None:
        self.text_size = (self.width - dp(6), None)

    @property
    def base_color(self) -> tuple[float, ...]:
        """The button's own colour (shown darker while dimmed)."""
        return self._base

    @base_color.setter
    def base_color(self, color: Sequence[float]) -> None:
        self._base = tuple(color)
        self._paint()

    def set_dimmed(self, dimmed: bool) -> None:
        if dimmed != self.dimmed:
            self.dimmed = dimmed
            self._paint()

    def _paint(self) -> None:
        if self.dimmed:
            r, g, b, a = self._base
            self.background_color = (r * DIM_BACKGROUND, g * DIM_BACKGROUND, b * DIM_BACKGROUND, a)
            self.color = (1, 1, 1, DIM_TEXT)
        else:
            self.background_color = self._base
            self.color = (1, 1, 1, 1)


class Field(Label):
    """A label on a dark, bordered background: a read-only value the operator looks at."""

    def __init__(self, **kw: object) -> None:
        kw.setdefault("font_size", sp(20))
        super().__init__(halign="left", valign="middle", shorten=True, **kw)
        with self.canvas.before:
            Color(0.12, 0.12, 0.14, 1)
            self._bg = Rectangle(pos=self.pos, size=self.size)
        self.bind(pos=self._redraw, size=self._redraw)

    def _redraw(self, *_: object) -> None:
        self._bg.pos, self._bg.size = self.pos, self.size
        self.text_size = (self.width - dp(12), self.height)


class Choice(Button):
    """A button that opens a list of options; choosing one calls `on_choose(value)`.

    The button's text is set from desk events (`show`), never by choosing: a
    choice the desk refuses does not appear chosen.
    """

    def __init__(self, on_choose: Callable[[str], None], **kw: object) -> None:
        super().__init__(halign="center", valign="middle", font_size=sp(15),
                         background_normal="", background_color=BLUE, **kw)
        self.on_choose = on_choose
        self.options: list[tuple[str, str]] = []  # (value, label)
        # Gone at the next frame once chosen: the next touch goes to the panel, not to a closing list.
        self.dropdown = DropDown(min_state_time=0)
        self.bind(on_release=lambda *_: self.open_list())
        self.bind(size=lambda *_: setattr(self, "text_size", (self.width - dp(8), self.height)))

    def set_options(self, options: Sequence[tuple[str, str]]) -> None:
        self.options = list(options)
        self.dropdown.clear_widgets()
        for value, label in self.options:
            item = Button(text=label, size_hint_y=None, height=dp(56), font_size=sp(15), halign="center",
                          background_normal="", background_color=GREY)
            item.bind(on_release=lambda _b, value=value: self.choose(value))
            self.dropdown.add_widget(item)
        self.disabled = len(self.options) < 2

    def show(self, value: str) -> None:
        self.text = dict(self.options).get(value, value or "-")

    def open_list(self) -> None:
        if self.options:
            self.dropdown.open(self)

    def choose(self, value: str) -> None:
        self.dropdown.dismiss()
        self.on_choose(value)


class Keypad(GridLayout):
    """Digits, *, #, + and Del / C: calls `on_key(char)`, `on_delete()`, `on_clear()`."""

    KEYS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#")

    def __init__(self, on_key: Callable[[str], None], on_delete: Callable[[], None],
                 on_clear: Callable[[], None], delete_text: str, clear_text: str, **kw: object) -> None:
        super().__init__(cols=3, spacing=dp(4), **kw)
        self.keys: dict[str, Button] = {}
        for char in (*self.KEYS, "+"):
            assert char in DIAL_CHARS
            self.keys[char] = BigButton(char, lambda c=char: on_key(c), font_size=sp(24))
            self.add_widget(self.keys[char])
        self.keys["del"] = BigButton(delete_text, on_delete, font_size=sp(18))
        self.keys["clear"] = BigButton(clear_text, on_clear, font_size=sp(18))
        self.add_widget(self.keys["del"])
        self.add_widget(self.keys["clear"])
