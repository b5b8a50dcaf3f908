"""The dialog that asks for the number an action needs (the desk's NumberRequired).

The digits typed here are a draft of the popup's own until OK: only then do
they go to the desk, as the argument of the action being completed.
"""

from __future__ import annotations

from typing import Callable

from kivy.metrics import dp, sp
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.popup import Popup

from .texts import Texts
from .widgets import GREEN, GREY, BigButton, Field, Keypad


class NumberPopup(Popup):
    """Keypad, the number so far, OK and Cancel; `on_number(number)` on OK."""

    def __init__(self, texts: Texts, action: str, on_number: Callable[[str], None]) -> None:
        self.action = action
        self.number = ""
        self.on_number = on_number
        self.display = Field(text="", sizes=(26, 24, 22, 20, 18), size_hint_y=None, height=dp(48))
        self.keypad = Keypad(self.key, self.delete, self.clear, texts["delete"], texts["clear"])
        self.ok = BigButton(texts["ok"], self.confirm, color=GREEN, font_size=sp(20))
        self.ok.disabled = True
        self.cancel = BigButton(texts["cancel"], self.dismiss, color=GREY, font_size=sp(20))
        buttons = BoxLayout(size_hint_y=None, height=dp(52), spacing=dp(6))
        buttons.add_widget(self.cancel)
        buttons.add_widget(self.ok)
        content = BoxLayout(orientation="vertical", spacing=dp(6))
        content.add_widget(self.display)
        content.add_widget(self.keypad)
        content.add_widget(buttons)
        # Below the top band, where the incoming-call banner floats while the prompt is open.
        from kivy.core.window import Window

        from .banner import HEIGHT as BANNER_HEIGHT

        height = min(dp(460), Window.height - dp(BANNER_HEIGHT) - dp(14))
        super().__init__(title=texts["ask_number"].format(action=texts.action(action)), title_size=sp(18),
                         content=content, size_hint=(None, None), size=(min(dp(420), Window.width - dp(8)), height),
                         pos_hint={"center_x": 0.5, "y": 0.005}, auto_dismiss=False)

    def key(self, char: str) -> None:
        self._show(self.number + char)

    def delete(self) -> None:
        self._show(self.number[:-1])

    def clear(self) -> None:
        self._show("")

    def _show(self, number: str) -> None:
        self.number = number
        self.display.text = number
        self.ok.disabled = not number

    def confirm(self) -> None:
        if self.number:
            self.dismiss()
            self.on_number(self.number)
