"""The on-screen keyboard the History and Directory views search with: Russian and Latin letters, digits.

The unit has no keyboard of its own, and the names an operator looks up are
Russian or Latin, so the keyboard has both layouts and a key that switches
between them: ЙЦУКЕН (with Ё as a key of its own at the end of the third
row, beside Ю, where Russian phone keyboards that show it put it, so that a
name spelt with it can be typed without a long press) and QWERTY. Above the
letters a row of digits (a number is searched by its digits) with Backspace;
below them the switch key, Space and Clear (and, when the view wants it, a
key that hides the keyboard).

Every key is at least theme.TOUCH (48 dp) high, and as wide as the widest
row allows (62 px in Russian, 75 px in Latin at 800 px). Both layouts are
built once, when the keyboard is; switching swaps which one is shown, so a
tap never builds widgets. Each key has a fixed font size: nothing is fitted.

The keyboard edits its own `text` (not a TextInput: no cursor to place with a
finger, no system keyboard popping up) and calls `on_change(text)` after
every key that changed it; it shows the text in `field` if it was given one.
"""

from __future__ import annotations

from typing import Any, Callable

from kivy.metrics import dp, sp
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.widget import Widget

from . import theme
from .texts import Texts
from .widgets import BigButton

#: The letter rows of each layout, as lower-case letters (the search ignores case).
LETTERS: dict[str, tuple[str, ...]] = {
    "ru": ("йцукенгшщзхъ", "фывапролджэ", "ячсмитьбюё"),
    "en": ("qwertyuiop", "asdfghjkl", "zxcvbnm-.'"),
}
DIGITS = "1234567890"
#: Keys that are not characters.
DELETE, CLEAR, SPACE, SWITCH, HIDE = "delete", "clear", "space", "switch", "hide"
#: Key height and the gaps between keys (dp).
KEY_H, GAP = theme.TOUCH, 4
#: Rows: digits, three of letters, the bottom row.
ROWS = 5
HEIGHT = ROWS * KEY_H + (ROWS - 1) * GAP
#: The longest text it takes (a search field is not an essay).
MAX_LENGTH = 40
LETTER_FONT, DIGIT_FONT = 22, 20


def keyboard_height() -> float:
    """The keyboard's height in px (the views lay out around it)."""
    return float(dp(HEIGHT))


class OnScreenKeyboard(BoxLayout):
    """Digits, Russian or Latin letters, Space, Backspace, Clear and the layout switch.

    `layout`: "ru" or "en" (the one shown first); `on_change(text)` after each key that changed the
    text; `field`: a label that shows the text (or None); `on_hide`: adds a Hide key that calls it.
    """

    def __init__(self, texts: Texts, on_change: Callable[[str], None], layout: str = "en",
                 field: Any = None, on_hide: Callable[[], None] | None = None, **kw: Any) -> None:
        kw.setdefault("size_hint_y", None)
        kw.setdefault("height", keyboard_height())
        super().__init__(orientation="vertical", spacing=dp(GAP), **kw)
        self.texts = texts
        self.on_change = on_change
        self.field = field
        self.text = ""
        self.layout = layout if layout in LETTERS else "en"
        #: Every key of each layout by what it types ("a", "й", "1") or does ("delete", "switch", ...).
        self.keys: dict[str, dict[str, BigButton]] = {}
        self._letters: dict[str, BoxLayout] = {}
        common: dict[str, BigButton] = {}

        digits = self._row()
        for char in DIGITS:
            common[char] = self._key(digits, char, char, DIGIT_FONT)
        common[DELETE] = self._key(digits, DELETE, texts["delete"], 18, weight=2, colour=theme.SURFACE_HI)
        self.add_widget(digits)

        for name, rows in LETTERS.items():
            block = BoxLayout(orientation="vertical", spacing=dp(GAP), size_hint_y=None,
                              height=3 * dp(KEY_H) + 2 * dp(GAP))
            keys = dict(common)
            width = max(len(r) for r in rows)
            for letters in rows:
                row = self._row()
                margin = (width - len(letters)) / 2
                if margin:
                    row.add_widget(Widget(size_hint_x=margin))
                for char in letters:
                    keys[char] = self._key(row, char, char.upper(), LETTER_FONT)
                if margin:
                    row.add_widget(Widget(size_hint_x=margin))
                block.add_widget(row)
            self.keys[name] = keys
            self._letters[name] = block

        bottom = self._row()
        self.switch_key = self._key(bottom, SWITCH, "", 18, weight=2, colour=theme.BLUE)
        space = self._key(bottom, SPACE, texts["kbd_space"], 18, weight=6)
        clear = self._key(bottom, CLEAR, texts["clear"], 18, weight=2, colour=theme.SURFACE_HI)
        common.update({SWITCH: self.switch_key, SPACE: space, CLEAR: clear})
        self.on_hide = on_hide
        if on_hide is not None:
            common[HIDE] = self._key(bottom, HIDE, texts["kbd_hide"], 18, weight=2, colour=theme.SURFACE_HI)
        for keys in self.keys.values():
            keys.update(common)
        self._bottom = bottom
        self._digits = digits
        self.add_widget(self._letters[self.layout])
        self.add_widget(bottom)
        self._show_switch()

    # --- building -------------------------------------------------------------------

    def _row(self) -> BoxLayout:
        return BoxLayout(orientation="horizontal", spacing=dp(GAP), size_hint_y=None, height=dp(KEY_H))

    def _key(self, row: BoxLayout, key: str, label: str, font: float, weight: float = 1,
             colour: tuple[float, ...] = theme.GREY) -> BigButton:
        button = BigButton(label, lambda: self.press(key), color=colour, font_size=sp(font), size_hint_x=weight)
        button.key = key
        row.add_widget(button)
        return button

    def _show_switch(self) -> None:
        # The switch key names the layout a tap brings, in that layout's letters.
        self.switch_key.text = self.texts["kbd_latin"] if self.layout == "ru" else self.texts["kbd_cyrillic"]

    # --- what a key does ----------------------------------------------------------------

    def key(self, key: str) -> BigButton:
        """The button of `key` in the layout shown now (tests tap it)."""
        return self.keys[self.layout][key]

    def press(self, key: str) -> None:
        """A key was tapped: edit the text (or switch the layout, or hide)."""
        if key == SWITCH:
            self.switch("en" if self.layout == "ru" else "ru")
            return
        if key == HIDE:
            if self.on_hide is not None:
                self.on_hide()
            return
        if key == DELETE:
            text = self.text[:-1]
        elif key == CLEAR:
            text = ""
        elif key == SPACE:
            text = self.text + " " if self.text and not self.text.endswith(" ") else self.text
        else:
            text = self.text + key
        self.set_text(text[:MAX_LENGTH], notify=True)

    def switch(self, layout: str) -> None:
        """Show the letters of `layout` ("ru" / "en"): the same widgets every time, swapped."""
        if layout == self.layout or layout not in self._letters:
            return
        self.remove_widget(self._letters[self.layout])
        self.layout = layout
        # between the digits (last in children: added first) and the bottom row
        self.add_widget(self._letters[layout], index=1)
        self._show_switch()

    def set_text(self, text: str, notify: bool = False) -> None:
        """Put `text` in (a view restoring its query: notify=False); `on_change` when it changed."""
        changed = text != self.text
        self.text = text
        if self.field is not None:
            self.field.show(text)
        if changed and notify:
            self.on_change(text)
