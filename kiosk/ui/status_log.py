"""What just happened: the status line, and the last messages with their times.

A refusal or an alert is shown on the status line, with the time it came, and
kept: a tap on the status line opens the last ten. After a while the line
stays but turns quiet (muted colour), so an operator who looked away can still
read what the unit said, and a new message is never mistaken for an old one.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Sequence

from kivy.clock import Clock
from kivy.metrics import dp
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.label import Label
from kivy.uix.modalview import ModalView

from . import theme
from .texts import Texts
from .widgets import BigButton, FitLabel, Painted

#: How many messages are kept, and how many the list shows.
KEEP = 50
SHOWN = 10
#: The height (dp) of one message in the list.
MESSAGE_HEIGHT = 40
#: How long (s) a new message keeps its colour before it turns quiet.
FRESH_SECONDS = 12.0


def clock_text(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


class StatusLog(ButtonBehavior, Painted, FitLabel):  # type: ignore[misc]
    """The status line: the newest message; a tap opens the last SHOWN with their times."""

    def __init__(self, texts: Texts, **kw: object) -> None:
        super().__init__(sizes=(16, 15, 14, 13, 12, 11), markup=False, **kw)
        self.texts = texts
        self._init_paint(theme.BG)
        #: (epoch, text, colour), oldest first.
        self.entries: deque[tuple[float, str, tuple[float, ...]]] = deque(maxlen=KEEP)
        self.sticky = ""  # shown instead of nothing while it is set (the unit's socket is away)
        self.view: ModalView | None = None
        self._quiet = Clock.create_trigger(lambda dt: self._show(fresh=False), FRESH_SECONDS)
        self.color = theme.TEXT_MUTED
        self.fresh = False

    @property
    def current(self) -> str:
        """What the line says as news: the sticky text, else the newest message while fresh, else ""."""
        if self.sticky:
            return self.sticky
        return self.entries[-1][1] if self.entries and self.fresh else ""

    def add(self, text: str, colour: Sequence[float]) -> None:
        self.entries.append((time.time(), text, tuple(colour)))
        self._show(fresh=True)

    def set_sticky(self, text: str) -> None:
        self.sticky = text
        self._show(fresh=True)

    def quiet(self) -> None:
        """A touch elsewhere: the last message is no longer news (it stays readable, muted)."""
        self._show(fresh=False)

    def _show(self, fresh: bool) -> None:
        self._quiet.cancel()
        self.fresh = fresh and bool(self.entries)
        if self.sticky:
            self.text, self.color = self.sticky, theme.STATUS_ALERT
            return
        if not self.entries:
            self.text = ""
            return
        at, text, colour = self.entries[-1]
        self.text = f"{clock_text(at)}  {text}"
        self.color = colour if fresh else theme.TEXT_MUTED
        if fresh:
            self._quiet()

    def on_release(self) -> None:
        self.open_list()

    def open_list(self) -> ModalView:
        """The last SHOWN messages, newest first, with their times."""
        if self.view is not None:
            self.view.dismiss()
        view = ModalView(size_hint=(0.96, 0.94), auto_dismiss=True, background_color=(0, 0, 0, 0.7))
        box = BoxLayout(orientation="vertical", spacing=dp(4), padding=dp(6))
        title = Label(text=self.texts["messages"], size_hint_y=None, height=dp(30), bold=True,
                      color=theme.TEXT, halign="left", valign="middle")
        title.bind(size=lambda lb, s: setattr(lb, "text_size", s))
        box.add_widget(title)
        shown = list(self.entries)[-SHOWN:][::-1]
        # Each line as high as MESSAGE_HEIGHT, or less when ten of them must share a small screen.
        from kivy.core.window import Window

        room = Window.height * 0.94 - dp(30) - dp(52) - dp(12) - (SHOWN + 2) * dp(4)
        line_h = min(dp(MESSAGE_HEIGHT), room / SHOWN)
        if not shown:
            box.add_widget(FitLabel(text=self.texts["no_messages"], color=theme.TEXT_MUTED))
        for at, text, colour in shown:
            line = MessageLine(f"{clock_text(at)}  {text}", colour)
            line.height = line_h
            box.add_widget(line)
        if len(shown) < SHOWN:
            box.add_widget(Label())  # keeps the lines at the top
        close = BigButton(self.texts["close"], view.dismiss, size_hint_y=None, height=dp(52))
        box.add_widget(close)
        view.add_widget(box)
        view.bind(on_dismiss=lambda *_: setattr(self, "view", None))
        self.view = view
        view.open()
        return view


class MessageLine(Painted, FitLabel):
    """One message of the list: its time and its words, two lines at most."""

    def __init__(self, text: str, colour: Sequence[float]) -> None:
        super().__init__(text=text, sizes=(15, 14, 13, 12, 11), color=tuple(colour), size_hint_y=None,
                         height=dp(MESSAGE_HEIGHT))
        self._init_paint(theme.SURFACE)

