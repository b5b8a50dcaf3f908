"""The on-screen keyboard, really drawn at 800x480: typing by touches gives the text, in both layouts."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from .kivy_window import EventLoop, UnitTestTouch, Window  # noqa: E402  (first: it sets Kivy up)

from kivy.metrics import dp  # noqa: E402
from kivy.uix.floatlayout import FloatLayout  # noqa: E402

from kiosk.ui import theme  # noqa: E402
from kiosk.ui.keyboard import LETTERS, OnScreenKeyboard  # noqa: E402
from kiosk.ui.texts import Texts  # noqa: E402
from kiosk.ui.widgets import SearchField  # noqa: E402


def touch(widget: Any) -> None:
    x, y = widget.to_window(*widget.center)
    t = UnitTestTouch(x, y)
    t.touch_down()
    EventLoop.idle()
    t.touch_up()
    EventLoop.idle()


@pytest.fixture
def board() -> Iterator[tuple[OnScreenKeyboard, list[str], SearchField]]:
    """A keyboard across the bottom of an 800x480 window, its field above it; every change it called back."""
    size = tuple(Window.size)
    Window.size = (800, 480)
    root = FloatLayout()
    changes: list[str] = []
    field = SearchField("Name or number", size_hint=(1, None), height=dp(48), pos_hint={"top": 1})
    keyboard = OnScreenKeyboard(Texts("ru"), changes.append, layout="ru", field=field, size_hint_x=1,
                                pos_hint={"x": 0, "y": 0})
    root.add_widget(field)
    root.add_widget(keyboard)
    Window.add_widget(root)
    for _ in range(3):
        EventLoop.idle()
    yield keyboard, changes, field
    Window.remove_widget(root)
    Window.size = size
    EventLoop.idle()


def type_text(keyboard: OnScreenKeyboard, text: str) -> None:
    for char in text:
        touch(keyboard.key("space" if char == " " else char))


def test_typing_by_touches_in_both_layouts(board: Any) -> None:
    keyboard, changes, field = board
    assert keyboard.layout == "ru" and keyboard.switch_key.text == "ABC"  # it names the layout a tap brings
    type_text(keyboard, "сёмин 20")
    assert keyboard.text == "сёмин 20" and changes[-1] == "сёмин 20"
    assert len(changes) == len("сёмин 20")  # a callback on every change
    assert field.text == "сёмин 20|"
    touch(keyboard.key("switch"))
    assert keyboard.layout == "en" and keyboard.switch_key.text == "АБВ"
    touch(keyboard.key("delete"))
    touch(keyboard.key("delete"))
    type_text(keyboard, "o'brien")
    assert keyboard.text == "сёмин o'brien" == changes[-1]
    touch(keyboard.key("clear"))
    assert keyboard.text == "" == changes[-1] and field.text == "Name or number"
    count = len(changes)
    touch(keyboard.key("delete"))  # nothing to delete: no change, no callback
    touch(keyboard.key("space"))  # nor a leading space
    assert len(changes) == count


def test_every_key_is_a_finger_wide_target_inside_the_window(board: Any) -> None:
    keyboard, _changes, _field = board
    for layout in ("ru", "en"):
        keyboard.switch(layout)
        for _ in range(2):
            EventLoop.idle()
        shown = {k: b for k, b in keyboard.keys[layout].items() if b.get_root_window() is not None}
        assert set(LETTERS[layout][0]) <= set(shown) and "1" in shown and "switch" in shown
        for key, button in shown.items():
            x0, y0 = button.to_window(button.x, button.y)
            assert button.height >= dp(theme.TOUCH) - 1 and button.width >= dp(theme.TOUCH) - 1, (layout, key,
                                                                                                  button.size)
            assert x0 >= 0 and y0 >= 0 and x0 + button.width <= 801, (layout, key, button.pos)
