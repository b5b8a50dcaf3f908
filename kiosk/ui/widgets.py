"""Small Kivy widgets the panel is built from: buttons that fit their words, a choice list, a keypad.

Every touch target is at least theme.TOUCH dp (9 mm on the 7" 800x480 panel).
A label never runs out of its widget and is never cut in the middle of a word:
BigButton and FitLabel wrap at word ends and take the largest font size (down
to a floor) at which the words fit. Every widget that paints its own
background says which colour it is (`bg_rgba`), so that the screen tests can
check each text's contrast against what is really behind it. Every callback
is a plain function given by the panel; these widgets keep no panel state.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from kivy.graphics import Color, InstructionGroup, Rectangle
from kivy.metrics import dp, sp
from kivy.uix.button import Button
from kivy.uix.dropdown import DropDown
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label
from kivy.utils import escape_markup

from . import theme
from .frontend import DIAL_CHARS
from .theme import AMBER, BLUE, GREEN, GREY, RED  # noqa: F401  (the panel's colours, re-exported)

#: Font sizes (sp) a fitted label tries, largest first.
FIT_SIZES = (18, 17, 16, 15, 14, 13, 12, 11)


def fit_font(label: Label, sizes: Sequence[float] = FIT_SIZES) -> None:
    """Give `label` (text_size already set to its box) the largest of `sizes` at which its text fits.

    Words are never split: a word longer than the width at the smallest size is
    the one case that still overflows, and the screen tests report it.
    """
    width, height = label.width - dp(4), label.height - dp(2)
    if width <= 0 or height <= 0 or not label.text:
        return
    # Measured at the box's width with no height: a text_size of the box's height would make the texture
    # exactly that high whatever the font, and every size would seem not to fit.
    boxed = tuple(label.text_size)
    label.text_size = (boxed[0], None)
    try:
        for size in sizes:
            label.font_size = sp(size)
            label.texture_update()
            tw, th = label.texture_size
            longest = max((label._label.get_extents(w)[0] for w in _words(label.text)), default=0)
            if tw <= width + 1 and th <= height + 1 and longest <= width + 1:
                return
    finally:
        label.text_size = boxed


#: Kivy markup tags ([b], [color=...], [/size]): not words.
_MARKUP_TAG = re.compile(r"\[/?[a-z]+(=[^\]]*)?\]")


def _words(text: str) -> list[str]:
    return _MARKUP_TAG.sub("", text).split()


class BigButton(Button):
    """A button whose (possibly two-line) label wraps at word ends, fits, and stays centred.

    `dimmed`: the action cannot act now (the desk's `available` says why). A
    dimmed button still takes a tap, so that the desk's refusal says why on
    the status line: it is greyed out, never disabled. `active`: the state it
    controls is on (Hold of a held call, Record of a recorded one, Mute): a
    light bar along its top and a frame, besides its words.
    """

    def __init__(self, text: str, on_press: Callable[[], None], color: Sequence[float] = GREY,
                 font_size: float | None = None, sizes: Sequence[float] = FIT_SIZES, **kw: object) -> None:
        super().__init__(text=text, halign="center", valign="middle", font_size=font_size or sp(sizes[0]),
                         background_normal="", background_down="", background_color=tuple(color), **kw)
        self._base = tuple(color)
        self._sizes = (font_size / sp(1),) if font_size else tuple(sizes)
        self.dimmed = False
        self.active = False
        # The active mark: a bar and a frame of plain rectangles, on the canvas only while active
        # (a Line with a width is re-tessellated by every frame on a software GL: 12 ms for a panel).
        self._mark = InstructionGroup()
        self._mark.add(Color(*theme.TEXT))
        self._mark_rects = [Rectangle() for _ in range(5)]
        for rect in self._mark_rects:
            self._mark.add(rect)
        self.bind(size=self._layout, pos=self._layout, text=self._layout)
        # on_release: a finger that slides off the button does not press it
        self.bind(on_release=lambda *_: on_press())

    def _layout(self, *_: object) -> None:
        self.text_size = (self.width - dp(6), None)
        if len(self._sizes) > 1:
            fit_font(self, self._sizes)
        if self.active:
            self._place_mark()

    def _place_mark(self) -> None:
        x, y = self.pos
        w, h = self.size
        t = dp(2)
        for rect, (pos, size) in zip(self._mark_rects, (
                ((x, y + h - dp(6)), (w, dp(6))),  # the bar along the top
                ((x, y), (w, t)), ((x, y), (t, h)), ((x + w - t, y), (t, h)), ((x, y + h - t), (w, t)))):
            rect.pos, rect.size = pos, size

    @property
    def bg_rgba(self) -> tuple[float, ...]:
        return tuple(self.background_color)

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

    def set_active(self, active: bool) -> None:
        if active != self.active:
            self.active = active
            self._paint()

    def _paint(self) -> None:
        if self.dimmed:
            self.background_color = theme.dimmed(self._base)
            self.color = (*theme.TEXT[:3], theme.DIM_TEXT)
        else:
            self.background_color = self._base
            self.color = theme.TEXT
        self.canvas.after.remove(self._mark)
        if self.active:
            self._place_mark()
            self.canvas.after.add(self._mark)


class FitLabel(Label):
    """A label that wraps at word ends inside its box and takes the largest font that fits."""

    def __init__(self, sizes: Sequence[float] = FIT_SIZES, **kw: object) -> None:
        kw.setdefault("halign", "left")
        kw.setdefault("valign", "middle")
        super().__init__(**kw)
        self._sizes = tuple(sizes)
        self.bind(size=self._layout, text=self._layout)

    def _layout(self, *_: object) -> None:
        self.text_size = (max(1, self.width - dp(4)), max(1, self.height))
        fit_font(self, self._sizes)


class Painted:
    """Mixin: a widget that paints its own background (`bg_rgba`, changed with `paint`)."""

    def _init_paint(self, bg: Sequence[float]) -> None:
        self.bg_rgba = tuple(bg)
        with self.canvas.before:  # type: ignore[attr-defined]
            self._bg_color = Color(*bg)
            self._bg_rect = Rectangle(pos=self.pos, size=self.size)  # type: ignore[attr-defined]
        self.bind(pos=self._bg_redraw, size=self._bg_redraw)  # type: ignore[attr-defined]

    def _bg_redraw(self, *_: object) -> None:
        self._bg_rect.pos, self._bg_rect.size = self.pos, self.size  # type: ignore[attr-defined]

    def paint(self, bg: Sequence[float]) -> None:
        self.bg_rgba = tuple(bg)
        self._bg_color.rgba = bg


class Field(Painted, FitLabel):
    """A read-only value the operator looks at, on a dark background (the Number)."""

    def __init__(self, **kw: object) -> None:
        sizes = kw.pop("sizes", (22, 20, 18, 16, 14))
        super().__init__(sizes=sizes, **kw)  # type: ignore[arg-type]
        self.color = theme.TEXT
        self._init_paint(theme.SURFACE)


class Choice(BigButton):
    """A parameter (Line, Route): its caption small above its value; a tap opens a list of options.

    The value shown is set from desk events (`show`), never by choosing: a
    choice the desk refuses does not appear chosen. Neutral in colour: blue is
    for actions, and the selection's colour belongs to the selected call alone.
    """

    def __init__(self, caption: str, on_choose: Callable[[str], None], **kw: object) -> None:
        super().__init__("", self.open_list, color=theme.SURFACE_HI, sizes=(17, 16, 15, 14, 13, 12), **kw)
        self.markup = True
        self.caption = caption
        self.value = ""
        self.on_choose = on_choose
        self.options: list[tuple[str, str]] = []  # (value, label)
        # Gone at the next frame once chosen: the next touch goes to the panel, not to a closing list.
        self.dropdown = DropDown(min_state_time=0)

    def set_options(self, options: Sequence[tuple[str, str]]) -> None:
        self.options = list(options)
        self.dropdown.clear_widgets()
        for value, label in self.options:
            item = BigButton(label, lambda value=value: self.choose(value), color=GREY,
                             size_hint_y=None, height=dp(56))
            self.dropdown.add_widget(item)
        self.set_dimmed(len(self.options) < 2)
        self.show(self.value)

    def show(self, value: str, text: str | None = None) -> None:
        self.value = value
        shown = text if text is not None else dict(self.options).get(value, value or "-")
        size = int(sp(12))
        self.text = f"[size={size}][color=bdbdc4]{self.caption}[/color][/size]\n{escape(shown)}"

    def open_list(self) -> None:
        if len(self.options) > 1:
            self.dropdown.open(self)

    def choose(self, value: str) -> None:
        self.dropdown.dismiss()
        self.on_choose(value)


def escape(text: str) -> str:
    """`text` shown as it is inside markup."""
    return str(escape_markup(text))


class Keypad(GridLayout):
    """Digits, *, #, + and Del / C in four rows of four: calls `on_key(char)`, `on_delete()`, `on_clear()`.

    Four rows, so that each key keeps the 48 dp a finger needs on an 800x480 panel.
    """

    LAYOUT = ("1", "2", "3", "del", "4", "5", "6", "clear", "7", "8", "9", "+", "*", "0", "#", None)

    def __init__(self, on_key: Callable[[str], None], on_delete: Callable[[], None],
                 on_clear: Callable[[], None], delete_text: str, clear_text: str, **kw: object) -> None:
        kw.setdefault("spacing", dp(4))
        super().__init__(cols=4, **kw)
        self.keys: dict[str, BigButton] = {}
        for key in self.LAYOUT:
            if key is None:
                from kivy.uix.widget import Widget

                self.add_widget(Widget())
                continue
            if key == "del":
                button = BigButton(delete_text, on_delete, sizes=(18, 16, 14, 12))
            elif key == "clear":
                button = BigButton(clear_text, on_clear, sizes=(18, 16, 14, 12))
            else:
                assert key in DIAL_CHARS
                button = BigButton(key, lambda c=key: on_key(c), font_size=sp(24))
            self.keys[key] = button
            self.add_widget(button)


class SearchField(Painted, FitLabel):
    """What a view's search has typed so far (the on-screen keyboard edits it), or a muted hint when empty.

    A tap on it calls `on_tap` (the History view shows its keyboard then). The text ends in a bar, the
    place the next letter goes, since there is no cursor to show.
    """

    def __init__(self, hint: str, on_tap: Callable[[], None] | None = None, **kw: object) -> None:
        kw.setdefault("sizes", (20, 18, 16, 14))
        super().__init__(**kw)  # type: ignore[arg-type]
        self.hint = hint
        self.on_tap = on_tap
        self.value = ""
        self._init_paint(theme.SURFACE)
        self.show("")

    def show(self, text: str) -> None:
        self.value = text
        if text:
            self.text, self.color = f"{text}|", theme.TEXT
        else:
            self.text, self.color = self.hint, theme.TEXT_MUTED

    def on_touch_down(self, touch: object) -> bool:
        if self.on_tap is not None and self.collide_point(*touch.pos):  # type: ignore[attr-defined]
            self.on_tap()
            return True
        return super().on_touch_down(touch)  # type: ignore[no-any-return]
