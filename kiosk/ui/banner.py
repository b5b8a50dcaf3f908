"""The incoming-call banner: who calls, on which line, and Answer / Reject for that very call.

It takes the top of the call table's column (the table gives up a row or two
while something rings; the keypad, the parameters and the action buttons keep
their place), and while a prompt, a menu or the messages list is open it
floats above that, across the top of the window, so an incoming call is seen
whatever the operator is doing. It changes nothing of the call in progress: its
buttons name their row (`answer --row`, `hangup --row`), so the selection and
the Number being typed stay as they are. A second incoming call queues behind
the first ("+1 waiting"); the banner shows the oldest ringing call.
"""

from __future__ import annotations

from typing import Any, Callable

from kivy.clock import Clock
from kivy.core.window import Window
from kivy.metrics import dp
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.modalview import ModalView

from kiosk.party import party

from . import theme
from .texts import Texts
from .widgets import BigButton, FitLabel, Painted

#: The banner's height (dp), and how often (s) its edge pulses while a call rings.
HEIGHT = 68
PULSE = 0.5


class IncomingBanner(Painted, BoxLayout):
    """The ringing incoming calls, oldest first; `on_answer(row)` / `on_reject(row)` for the one shown."""

    def __init__(self, texts: Texts, on_answer: Callable[[int], None], on_reject: Callable[[int], None],
                 line_labels: dict[str, str] | None = None) -> None:
        super().__init__(orientation="horizontal", size_hint=(1, None), height=dp(HEIGHT), padding=dp(6),
                         spacing=dp(6))
        self.home: Any = None  # the layout it is docked in (the table's column), set by the panel
        self._init_paint(theme.RINGING_BG)
        self.texts = texts
        self.line_labels = dict(line_labels or {})
        self.on_answer, self.on_reject = on_answer, on_reject
        #: Row ids of the ringing incoming calls, in the order they came; the first is shown.
        self.rows: list[int] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.shown = False
        who = BoxLayout(orientation="vertical")
        self.title = FitLabel(text="", sizes=(13, 12, 11), color=theme.TEXT_MUTED, size_hint_y=0.3)
        self.name = FitLabel(text="", sizes=(20, 18, 16, 14, 13), bold=True, color=theme.TEXT, size_hint_y=0.4)
        self.detail = FitLabel(text="", sizes=(15, 14, 13, 12), color=theme.TEXT, size_hint_y=0.3)
        for label in (self.title, self.name, self.detail):
            label.bg_rgba = theme.RINGING_BG
            who.add_widget(label)
        self.add_widget(who)
        self.answer_button = BigButton(texts["answer"], self._answer, color=theme.GREEN,
                                       size_hint_x=None, width=dp(118))
        self.reject_button = BigButton(texts["reject"], self._reject, color=theme.RED,
                                       size_hint_x=None, width=dp(112))
        self.add_widget(self.answer_button)
        self.add_widget(self.reject_button)
        self._pulse_on = False
        self._pulse = Clock.schedule_interval(self._blink, PULSE)
        self._pulse.cancel()
        Window.bind(size=lambda *_: self.place(), children=lambda *_: self._window_changed())

    # --- the calls -----------------------------------------------------------------

    def update(self, row: dict[str, Any]) -> None:
        """A row changed: ringing in → queued (or refreshed); anything else → out of the banner."""
        row_id = int(row["id"])
        if row.get("direction") == "in" and row.get("state") == "ringing":
            if row_id not in self.rows:
                self.rows.append(row_id)
            self.calls[row_id] = dict(row)
        else:
            self.remove(row_id)
            return
        self._refresh()

    def remove(self, row_id: int) -> None:
        if row_id in self.rows:
            self.rows.remove(row_id)
            self.calls.pop(row_id, None)
            self._refresh()

    def clear(self) -> None:
        self.rows.clear()
        self.calls.clear()
        self._refresh()

    def _answer(self) -> None:
        if self.rows:
            self.on_answer(self.rows[0])

    def _reject(self) -> None:
        if self.rows:
            self.on_reject(self.rows[0])

    # --- showing -------------------------------------------------------------------

    def _refresh(self) -> None:
        if not self.rows:
            self._hide()
            return
        row = self.calls[self.rows[0]]
        who = party(str(row.get("remote", "")))
        name, number = (row.get("name") or who.name), (row.get("number") or who.number)
        line = row.get("line_label") or self.line_labels.get(str(row.get("line", "")), str(row.get("line", "")))
        parts = [self.texts["banner_title"], self.texts["banner_line"].format(line=line)]
        target = row.get("queue") or row.get("diversion")
        if target:
            parts.append(self.texts["banner_via"].format(target=target))
        if len(self.rows) > 1:
            parts.append(self.texts["banner_more"].format(count=len(self.rows) - 1))
        self.title.text = " · ".join(parts)
        self.name.text = name or number or "?"
        self.detail.text = number if name else (who.host or "")
        self._show()

    def _show(self) -> None:
        if not self.shown:
            self.shown = True
            self._pulse()
        self.place()

    def place(self) -> None:
        """Docked in the table's column, or (while a popup or menu is open) floating above everything."""
        if not self.shown:
            return
        if any(isinstance(w, ModalView) for w in Window.children):
            self.float_over()
        else:
            self.dock()

    def float_over(self) -> None:
        """On top of everything the window holds, across its top."""
        if not self.shown:
            return
        width, height = Window.size
        margin = dp(6)
        self.size_hint = (None, None)
        self.size = (width - 2 * margin, dp(HEIGHT))
        self.pos = (margin, height - self.height - margin)
        if Window.children and Window.children[0] is self:
            return
        if self.parent is not None:
            self.parent.remove_widget(self)
        Window.add_widget(self)

    def dock(self) -> None:
        """Back at the top of the table's column."""
        home = self.home
        if home is None:
            self.float_over()
            return
        if self.parent is home:
            return
        if self.parent is not None:
            self.parent.remove_widget(self)
        self.size_hint = (1, None)
        self.height = dp(HEIGHT)
        home.add_widget(self, index=len(home.children))

    def _hide(self) -> None:
        if self.shown:
            self.shown = False
            self._pulse.cancel()
            if self.parent is not None:
                self.parent.remove_widget(self)

    def _window_changed(self) -> None:
        # A popup opened or closed: float above it, or go back home (next frame: the window is settling).
        Clock.schedule_once(lambda dt: self.place(), 0)

    def _blink(self, _dt: float) -> None:
        self._pulse_on = not self._pulse_on
        bg = (0.05, 0.18, 0.08, 1) if self._pulse_on else theme.RINGING_BG
        self.paint(bg)
        for label in (self.title, self.name, self.detail):
            label.bg_rgba = bg
