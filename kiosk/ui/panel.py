"""The "Call control" panel on the touchscreen: parameters, call table, keypad, actions, status line.

It translates and nothing more: each button is one action of the command
table (kiosk.commands.screen_bindings), sent through DeskFrontend, and every
change on screen comes from a desk event (or the desk's snapshot). A button is
dimmed while the desk's `available` says its action cannot act now, and a tap
on it still goes to the desk, whose refusal (by code, in the operator's
language) then says why on the status line. All methods run on Kivy's thread;
the frontend brings events here.
"""

from __future__ import annotations

from typing import Any, Callable

from kivy.clock import Clock
from kivy.core.window import Window
from kivy.metrics import dp, sp
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label
from kivy.uix.togglebutton import ToggleButton

from kiosk import events as ev
from kiosk.commands import Action, screen_bindings
from kiosk.profile import Profile

from .frontend import DIAL_CHARS, NUMBER_ACTIONS, DeskFrontend
from .number_popup import NumberPopup
from .table import CallTable
from .texts import Texts
from .widgets import AMBER, BLUE, GREEN, GREY, RED, BigButton, Choice, Field, Keypad

#: How long (s) a refusal or alert stays in the status line when nothing else is pressed.
STATUS_SECONDS = 8.0
#: SDL key codes of Enter, keypad Enter, Backspace and Escape.
ENTER_KEYS = (13, 271)
BACKSPACE = 8
ESCAPE = 27

REFUSED_COLOR = (1, 0.45, 0.4, 1)
ALERT_COLOR = (1, 0.75, 0.3, 1)

#: The action buttons (kiosk.commands screen ids) in the order they are laid out, and their colours;
#: a binding the table adds later comes after these, grey.
BUTTONS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("call", GREEN), ("answer", GREEN), ("hangup", RED), ("hold", AMBER), ("connect", AMBER),
    ("pickup", BLUE), ("transfer_quick", BLUE), ("transfer_consult", BLUE), ("transfer_confirm", BLUE),
    ("conference", BLUE), ("record_start", GREY), ("record_stop", GREY), ("mute", GREY),
)


class Panel(BoxLayout):
    """The whole screen, for one desk."""

    def __init__(self, frontend: DeskFrontend, profile: Profile, **kw: object) -> None:
        super().__init__(orientation="vertical", padding=dp(4), spacing=dp(4), **kw)
        self.frontend = frontend
        self.profile = profile
        self.texts = texts = Texts(profile.operator.language)
        self.popup: NumberPopup | None = None
        self._asked: str | None = None  # the action a popup is asking a number for
        self._registered: dict[str, bool] = {line.id: False for line in profile.lines}
        self._line = profile.lines[0].id
        self._link_lost = ""  # while the unit's socket is away: what the status line says instead of nothing
        self._status_clear = Clock.create_trigger(lambda dt: self.clear_status(), STATUS_SECONDS)

        # --- parameters: Line, Number, Route (always visible, above the table)
        params = BoxLayout(size_hint_y=None, height=dp(70), spacing=dp(6))
        self.line_choice = Choice(lambda value: self._act(lambda: frontend.set_param("line", value)))
        self.number_field = Field(text="")
        self.route_choice = Choice(lambda value: self._act(lambda: frontend.set_param("route", value)))
        for caption, widget in ((texts["line"], self.line_choice), (texts["number"], self.number_field),
                                (texts["route"], self.route_choice)):
            box = BoxLayout(orientation="vertical")
            box.add_widget(Label(text=caption, font_size=sp(14), size_hint_y=None, height=dp(20),
                                 halign="left", color=(0.75, 0.75, 0.75, 1)))
            box.add_widget(widget)
            params.add_widget(box)
        self.route_choice.set_options([(r.id, r.label) for r in profile.routes])
        self._show_lines()
        self.add_widget(params)

        # --- the call table and the keypad that edits Number
        middle = BoxLayout(spacing=dp(6))
        self.multi = ToggleButton(text=texts["multi"], halign="center", font_size=sp(14),
                                  background_normal="", background_color=GREY)
        self.multi.bind(size=lambda b, s: setattr(b, "text_size", (s[0] - dp(6), None)))
        self.table = CallTable(texts, self._pick, lambda: self.multi.state == "down", size_hint_x=0.66)
        self.keypad = Keypad(lambda c: self._act(lambda: frontend.key(c)),
                             lambda: self._act(lambda: frontend.key("delete")),
                             lambda: self._act(lambda: frontend.key("clear")),
                             texts["delete"], texts["clear"], size_hint_x=0.34)
        middle.add_widget(self.table)
        middle.add_widget(self.keypad)
        self.add_widget(middle)

        # --- the status line: refusals and alerts in plain words
        self.status = Label(text="", font_size=sp(15), size_hint_y=None, height=dp(28), shorten=True,
                            halign="left", valign="middle")
        self.status.bind(size=lambda lb, s: setattr(lb, "text_size", s))
        self.add_widget(self.status)

        # --- the actions: one button per screen binding of the command table
        #: Screen id -> the action its button sends (kiosk.commands.screen_bindings()).
        self.bindings: dict[str, Action] = screen_bindings()
        colours = dict(BUTTONS)
        order = [b for b, _ in BUTTONS if b in self.bindings] + [b for b in self.bindings if b not in colours]
        grid = GridLayout(cols=7, size_hint_y=None, height=dp(128), spacing=dp(4))
        self.buttons: dict[str, BigButton] = {}
        for key in order:
            self.buttons[key] = BigButton(texts.label(key, self.bindings[key].id), lambda key=key: self.act(key),
                                          color=colours.get(key, GREY))
            grid.add_widget(self.buttons[key])
        grid.add_widget(self.multi)
        self.add_widget(grid)

    # --- wiring ----------------------------------------------------------------

    def start(self) -> None:
        """Follow the desk: draw its snapshot, then its events; listen to a hardware keyboard."""
        self.frontend.on_event = self.on_event
        self.frontend.start(self._load)  # the snapshot is read on the worker, then drawn here
        Window.bind(on_key_down=self.on_key_down)

    def _load(self, snap: dict[str, Any]) -> None:
        """Draw the desk's whole state (at start, and again when the unit's socket comes back)."""
        for line in snap["lines"]:
            self._registered[line["id"]] = bool(line["registered"])
        self._show_lines()
        self._show_params(snap["line"], snap["number"], snap["route"])
        calls = {int(row["id"]) for row in snap["calls"]}
        for row_id in [r for r in self.table.rows if r not in calls]:  # ended while the unit was away
            self.table.remove(row_id)
        self.table.load(snap["calls"], snap["selection"])
        self._show_mute(bool(snap["muted"]))
        self._show_available(snap.get("available") or {})

    def close(self) -> None:
        Window.unbind(on_key_down=self.on_key_down)
        self.frontend.close()

    def _act(self, command: Callable[[], None]) -> None:
        """A touch: the last refusal is no longer news; then the command goes to the desk."""
        self.clear_status()
        command()

    def act(self, button: str) -> None:
        """What a tap on the action button `button` (a screen id) does: send its action, dimmed or not."""
        self._act(lambda: self.frontend.act(self.bindings[button].id))

    def _pick(self, row_id: int, add: bool) -> None:
        self._act(lambda: self.frontend.toggle_selected(row_id) if add else self.frontend.select_only(row_id))

    # --- desk events (Kivy thread) -------------------------------------------------

    def on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.RowChanged):
            self.table.update(event.row)
        elif isinstance(event, ev.RowRemoved):
            self.table.remove(event.row_id)
        elif isinstance(event, ev.SelectionChanged):
            self.table.select(event.rows)
        elif isinstance(event, ev.ParamsChanged):
            self._show_params(event.line, event.number, event.route)
        elif isinstance(event, ev.LineState):
            self._registered[event.line] = event.registered
            self._show_lines()
        elif isinstance(event, ev.AvailabilityChanged):
            self._show_available(event.available)
        elif isinstance(event, ev.NumberRequired):
            self.ask_number(event.action)
        elif isinstance(event, ev.ActionFailed):
            self.on_refused(event)
        elif isinstance(event, ev.MuteChanged):
            self._show_mute(event.muted)
        elif isinstance(event, ev.Alert):
            self.show_status(self.texts.alert(event.code, event.params, event.message), ALERT_COLOR)
        elif isinstance(event, ev.LinkChanged):  # only from a RemoteDesk: the panel in its own process
            self.on_link(event)

    def on_refused(self, event: ev.ActionFailed) -> None:
        """A refusal or failure: on the status line, in the operator's language, by its code."""
        if event.code == "number_required" and event.action in NUMBER_ACTIONS:
            # The popup is the answer: the desk sends NumberRequired with this refusal (over the socket the
            # reply may come before that event or after it, so the popup need not be open yet).
            return
        if self._link_lost and event.code == "link_down":
            return  # the status line already says so, until the unit is back
        self.show_status(self.texts.refused(event.action, event.code, event.params, event.reason), REFUSED_COLOR)

    def on_link(self, event: ev.LinkChanged) -> None:
        """The unit's socket went away (say so until it is back) or came back (redraw from its state)."""
        if event.connected:
            self._link_lost = ""
            if event.snapshot is not None:
                self._load(event.snapshot)
            self.clear_status()
        else:
            self._link_lost = self.texts["link_lost"]
            if self.popup is not None:
                self.popup.dismiss()
            self.show_status(self._link_lost, ALERT_COLOR)
            self._status_clear.cancel()  # stays until the unit is back

    # --- showing ---------------------------------------------------------------

    def _show_params(self, line: str, number: str, route: str) -> None:
        self._line = line
        self.line_choice.show(line)
        self.number_field.text = number
        if self.profile.routes:
            self.route_choice.show(route)
        else:
            self.route_choice.text = self.texts["no_route"]

    def _show_lines(self) -> None:
        words = {True: self.texts["registered"], False: self.texts["not_registered"]}
        self.line_choice.set_options([(line.id, f"{line.label}\n{words[self._registered.get(line.id, False)]}")
                                      for line in self.profile.lines])
        self.line_choice.show(self._line)

    def _show_mute(self, muted: bool) -> None:
        button = self.buttons.get("mute")
        if button is None:
            return
        button.text = self.texts["muted"] if muted else self.texts["mute"]
        button.base_color = RED if muted else GREY

    def _show_available(self, available: dict[str, Any]) -> None:
        """Dim the buttons whose action cannot act now (an action the map does not name is lit)."""
        for key, button in self.buttons.items():
            button.set_dimmed(available.get(self.bindings[key].id) is not None)

    def show_status(self, text: str, color: tuple[float, ...]) -> None:
        self.status.text = text
        self.status.color = color
        self._status_clear.cancel()
        self._status_clear()

    def clear_status(self) -> None:
        self._status_clear.cancel()
        self.status.text = self._link_lost
        self.status.color = ALERT_COLOR

    # --- the number dialog -----------------------------------------------------------

    def ask_number(self, action: str) -> None:
        """The desk needs a number for `action`: ask for it and complete the action with it."""
        if action not in NUMBER_ACTIONS:
            return
        if self.popup is not None:
            self.popup.dismiss()
        self._asked = action
        popup = NumberPopup(self.texts, action, lambda number: self._act(lambda: self.frontend.complete(action,
                                                                                                           number)))
        popup.bind(on_dismiss=lambda *_: self._popup_closed(popup))
        self.popup = popup
        popup.open()

    def _popup_closed(self, popup: NumberPopup) -> None:
        if self.popup is popup:
            self.popup = None
            self._asked = None

    # --- a hardware keyboard -----------------------------------------------------------

    def on_key_down(self, _window: Any, key: int, _scancode: int, codepoint: str | None, _mods: Any) -> bool:
        """Enter is Call (or OK in the number dialog); digits, Backspace and Escape edit as the keypads do."""
        popup = self.popup
        if key in ENTER_KEYS:
            if popup is not None:
                popup.confirm()
            else:
                self.act("call")
            return True
        if key == ESCAPE:
            if popup is not None:
                popup.dismiss()
            return True  # never let Escape close the unit's screen
        if key == BACKSPACE:
            if popup is not None:
                popup.delete()
            else:
                self._act(lambda: self.frontend.key("delete"))
            return True
        if codepoint and codepoint in DIAL_CHARS:
            if popup is not None:
                popup.key(codepoint)
            else:
                self._act(lambda: self.frontend.key(codepoint))
            return True
        return False
