"""The "Call control" panel on the touchscreen, laid out for whatever display the unit has.

It translates and nothing more: each button is one action of the command
table (kiosk.commands.screen_bindings), sent through DeskFrontend, and every
change on screen comes from a desk event (or the desk's snapshot). A button is
dimmed while the desk's `available` says its action cannot act now, and a tap
on it still goes to the desk, whose refusal (by code, in the operator's
language, naming calls by their party as the table does) then says why on
the status line, where the last messages stay readable. All methods run on
Kivy's thread; the frontend brings events here.

Layout: an identity strip (operator, every line's registration, DND,
MIC OFF), the parameters (Line, Number, Route), the call table beside
(landscape) or above (portrait) a fixed-size keypad, the status line with the
view buttons at its right (Do not disturb, History with the missed-call count,
Directory; on a narrow screen they take a row of their own under it), the
action buttons. Keys and buttons keep their size on a bigger screen; the table
takes the rest, so a bigger screen shows more calls. The incoming-call banner
floats above all of it, popups and views included.

While the keys of the keypad go to the call as DTMF tones (the desk's
`available["dtmf"]` is None: the selected call is in conversation), the
Number caption says so ("Tones to Alice (2001)") and the keys and the Number
box change colour; a tap still sends `key`, and the desk decides what it does.
The History and Directory views (kiosk.ui.history_view, directory_view) are
full-window views built once and reopened.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from kivy.core.window import Window
from kivy.metrics import dp, sp
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label

from kiosk import events as ev
from kiosk.commands import Action, screen_bindings
from kiosk.profile import Profile

from . import theme
from .banner import IncomingBanner
from .directory_view import DirectoryView
from .frontend import DIAL_CHARS, NUMBER_ACTIONS, DeskFrontend
from .history_view import HistoryView
from .number_popup import NumberPopup
from .row_menu import RowMenu
from .status_log import StatusLog
from .table import CallTable, measurer, row_party
from .texts import Texts
from .widgets import AMBER, BLUE, GREEN, GREY, RED, BigButton, Choice, Field, FitLabel, Keypad, Painted, escape

#: SDL key codes of Enter, keypad Enter, Backspace and Escape.
ENTER_KEYS = (13, 271)
BACKSPACE = 8
ESCAPE = 27

REFUSED_COLOR = theme.STATUS_REFUSED
ALERT_COLOR = theme.STATUS_ALERT
INFO_COLOR = theme.STATUS_INFO
#: Alerts that tell what the desk did rather than what went wrong.
INFO_ALERTS = frozenset({"selection_moved"})

#: The action buttons (kiosk.commands screen ids) in the order they are laid out, and their colours;
#: a binding the table adds later comes after these, grey.
BUTTONS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("call", GREEN), ("answer", GREEN), ("hangup", RED), ("hold", AMBER), ("connect", AMBER),
    ("pickup", BLUE), ("transfer_quick", BLUE), ("transfer_consult", BLUE), ("transfer_confirm", BLUE),
    ("conference", BLUE), ("record_start", GREY), ("record_stop", GREY), ("mute", GREY),
)

#: The keypad's keys that are DTMF tones in conversation (+ is not one).
DTMF_KEYS = frozenset("0123456789*#")
#: Screen bindings whose buttons are not in the action grid: they sit with the view buttons.
VIEW_BAR_BINDINGS = ("dnd",)

#: Fixed sizes (dp): they do not grow with the screen (a bigger screen shows more rows instead).
STRIP_H, PARAMS_H, STATUS_H, BUTTON_H = 24, 52, 48, 52
#: A view button's width (dp), and the least width the status line keeps beside them (else they get a row).
VIEW_W, STATUS_MIN_W = 112, 380
KEY_W, KEY_H, KEY_MAX_H = 62, 48, 60
PORTRAIT_BUTTON_COLS, LANDSCAPE_BUTTON_COLS = 4, 7


class IdentityStrip(Painted, BoxLayout):
    """Who works here, every line's registration (in words, with a coloured dot), DND and MIC OFF."""

    def __init__(self, texts: Texts, profile: Profile) -> None:
        super().__init__(orientation="horizontal", size_hint_y=None, height=dp(STRIP_H), spacing=dp(10),
                         padding=(dp(4), 0))
        self._init_paint(theme.BG)
        self.texts = texts
        self.labels = {line.id: line.label for line in profile.lines}
        name = profile.operator.name
        self.operator = Label(text=texts["operator"].format(name=name) if name else "", color=theme.TEXT_MUTED,
                              font_size=dp(12), size_hint_x=None, halign="left", valign="middle",
                              shorten=True, shorten_from="right", split_str=" ")
        self.operator.bg_rgba = theme.BG
        # as wide as its words, up to a third of the strip (a long name is shortened at a word end)
        self.operator.texture_update()
        self.operator.width = min(self.operator.texture_size[0] + dp(8), Window.width / 3)
        self.operator.bind(size=lambda lb, s: setattr(lb, "text_size", s))
        self.lines = FitLabel(text="", markup=True, color=theme.TEXT, sizes=(13, 12, 11))
        self.lines.bg_rgba = theme.BG
        # MIC OFF and DND: as wide as their words while they are on, else no width (the lines have it)
        self.mic = MicLabel(text="", bold=True, color=theme.TEXT, sizes=(13, 12, 11), size_hint_x=None,
                            width=0, halign="center")
        self.mic._init_paint(theme.BG)
        #: The DND mark: as wide as its words while the desk is in DND, else no width at all.
        self.dnd = MicLabel(text="", bold=True, color=theme.TEXT, sizes=(13, 12, 11), size_hint_x=None,
                            width=0, halign="center")
        self.dnd._init_paint(theme.BG)
        self.add_widget(self.operator)
        self.add_widget(self.lines)
        self.add_widget(self.dnd)
        self.add_widget(self.mic)

    def show_lines(self, registered: Mapping[str, bool]) -> None:
        parts = []
        for line_id, label in self.labels.items():
            ok = registered.get(line_id, False)
            dot = "[color=4cd964]●[/color]" if ok else "[color=ff6b5e]●[/color]"
            word = self.texts["registered"] if ok else self.texts["not_registered"]
            parts.append(f"[font=DejaVuSans]{dot}[/font] {escape(label)}: {word}")
        self.lines.text = "   ".join(parts)

    def show_mute(self, muted: bool) -> None:
        self.mic.text = self.texts["mic_off"] if muted else ""
        self.mic.paint(theme.REC_BG if muted else theme.BG)
        self.mic.width = measurer(sp(13), bold=True)(self.texts["mic_off"]) + dp(18) if muted else 0

    def show_dnd(self, on: bool) -> None:
        word = self.texts["dnd_mark"]
        self.dnd.text = word if on else ""
        self.dnd.paint(theme.DND_BG if on else theme.BG)
        self.dnd.width = measurer(sp(13), bold=True)(word) + dp(18) if on else 0


class BadgeButton(BigButton):
    """A button with a count at its top right (the missed calls on History); no count, no badge."""

    def __init__(self, text: str, on_press: Callable[[], None], **kw: Any) -> None:
        super().__init__(text, on_press, **kw)
        self.badge = BadgeLabel(text="", bold=True, color=theme.TEXT, font_size=sp(13), size_hint=(None, None),
                                size=(dp(30), dp(18)), halign="center", valign="middle")
        self.badge.bind(size=lambda lb, s: setattr(lb, "text_size", s))
        self.count = 0
        self.bind(pos=self._place_badge, size=self._place_badge)

    def show_count(self, count: int) -> None:
        count = max(0, int(count))
        if count == self.count:
            return
        self.count = count
        self.badge.text = str(count) if count < 100 else "99+"
        if count and self.badge.parent is None:
            self.add_widget(self.badge)
        elif not count and self.badge.parent is self:
            self.remove_widget(self.badge)
        # the words move left of the badge (blank room on the right of their texture), never under it
        self.padding = [0, 0, self.badge.width + dp(4), 0] if count else [0, 0, 0, 0]
        self._layout()
        self._place_badge()

    def _place_badge(self, *_: Any) -> None:
        self.badge.pos = (self.right - self.badge.width - dp(3), self.top - self.badge.height - dp(3))


class BadgeLabel(Painted, Label):
    """The count itself, white on the badge red."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._init_paint(theme.BADGE_BG)


class MicLabel(Painted, FitLabel):
    """MIC OFF, white on the REC red while the microphone is muted."""


class PaintedBox(Painted, BoxLayout):
    """A layout on its own background colour."""

    def __init__(self, bg: Sequence[float], **kw: object) -> None:
        super().__init__(**kw)
        self._init_paint(bg)


class Panel(Painted, BoxLayout):
    """The whole screen, for one desk."""

    def __init__(self, frontend: DeskFrontend, profile: Profile, **kw: object) -> None:
        super().__init__(orientation="vertical", padding=dp(4), spacing=dp(4), **kw)
        self._init_paint(theme.BG)
        self.frontend = frontend
        self.profile = profile
        self.texts = texts = Texts(profile.operator.language)
        self.popup: NumberPopup | None = None
        self.menu: RowMenu | None = None
        self._asked: str | None = None  # the action a popup is asking a number for
        self._registered: dict[str, bool] = {line.id: False for line in profile.lines}
        self._line = profile.lines[0].id
        self._link_lost = ""  # while the unit's socket is away: what the status line says instead
        self._muted = False
        self.multi_on = False
        self.selection: tuple[int, ...] = ()

        # --- who and which lines
        self.identity = IdentityStrip(texts, profile)
        self.add_widget(self.identity)

        # --- parameters: Line, Number, Route (always visible, above the table)
        self.params = BoxLayout(size_hint_y=None, height=dp(PARAMS_H), spacing=dp(6))
        self.line_choice = Choice(texts["line"], lambda value: self._act(lambda: frontend.set_param("line", value)))
        self.number_field = Field(text="", size_hint_y=None, height=dp(PARAMS_H - 16))
        number_box = PaintedBox(theme.SURFACE, orientation="vertical")
        caption = FitLabel(text=texts["number"], sizes=(12, 11), color=theme.TEXT_MUTED, halign="center",
                           size_hint_y=None, height=dp(16), shorten=True, shorten_from="right", split_str=" ")
        caption.bg_rgba = theme.SURFACE
        number_box.add_widget(caption)
        number_box.add_widget(self.number_field)
        self.number_box, self.number_caption = number_box, caption
        self._tones: str | None = None  # the party the keys' tones go to, while they do
        self.route_choice = Choice(texts["route"],
                                   lambda value: self._act(lambda: frontend.set_param("route", value)))
        for widget in (self.line_choice, number_box, self.route_choice):
            self.params.add_widget(widget)
        self._labels = {line.id: line.label for line in profile.lines}
        self._routes = [(r.id, r.label) for r in profile.routes]
        self.route_choice.set_options(self._routes)
        self._show_lines()
        self.add_widget(self.params)

        # --- the call table and the keypad that edits Number
        self.middle = BoxLayout(spacing=dp(6))
        self.table = CallTable(texts, self._pick, lambda: self.multi_on, on_menu=self.open_menu)
        self._header_h = self.table.header.height
        self.keypad = Keypad(lambda c: self._act(lambda: frontend.key(c)),
                             lambda: self._act(lambda: frontend.key("delete")),
                             lambda: self._act(lambda: frontend.key("clear")),
                             texts["delete"], texts["clear"])
        self.table_column = BoxLayout(orientation="vertical", spacing=dp(4))
        self.table_column.add_widget(self.table)
        self.middle.add_widget(self.table_column)
        self.middle.add_widget(self.keypad)
        self.add_widget(self.middle)

        # --- the status line: refusals and alerts in plain words, the last ones a tap away;
        # beside it (or under it, on a narrow screen) the view buttons: DND, History, Directory
        self.status = self.messages = StatusLog(texts, size_hint_y=None, height=dp(STATUS_H))
        self.status_row = BoxLayout(orientation="horizontal", size_hint_y=None, height=dp(STATUS_H),
                                    spacing=dp(4))
        self.status_row.add_widget(self.status)
        self.add_widget(self.status_row)
        self.view_bar = BoxLayout(orientation="horizontal", size_hint=(None, None), height=dp(STATUS_H),
                                  spacing=dp(4))
        self.views_row = False  # the view buttons in a row of their own

        # --- the actions: one button per screen binding of the command table
        #: Screen id -> the action its button sends (kiosk.commands.screen_bindings()).
        self.bindings: dict[str, Action] = screen_bindings()
        colours = dict(BUTTONS)
        order = [b for b, _ in BUTTONS if b in self.bindings] + [b for b in self.bindings if b not in colours]
        self.grid = GridLayout(cols=LANDSCAPE_BUTTON_COLS, size_hint_y=None, spacing=dp(4))
        self.buttons: dict[str, BigButton] = {}
        view_sizes = (16, 15, 14, 13, 12)
        for key in order:
            if key in VIEW_BAR_BINDINGS:
                continue
            self.buttons[key] = BigButton(texts.label(key, self.bindings[key].id), lambda key=key: self.act(key),
                                          color=colours.get(key, GREY))
            self.grid.add_widget(self.buttons[key])
        self._dnd = False
        if "dnd" in self.bindings:
            self.buttons["dnd"] = BigButton(texts["dnd"], lambda: self.act("dnd"), color=GREY, sizes=view_sizes,
                                            size_hint_x=None, width=dp(VIEW_W))
            self.view_bar.add_widget(self.buttons["dnd"])
        self.history_button = BadgeButton(texts["history"], self.open_history, color=GREY, sizes=view_sizes,
                                          size_hint_x=None, width=dp(VIEW_W))
        self.directory_button = BigButton(texts["directory"], self.open_directory, color=GREY, sizes=view_sizes,
                                          size_hint_x=None, width=dp(VIEW_W))
        self.view_bar.add_widget(self.history_button)
        self.view_bar.add_widget(self.directory_button)
        self.view_bar.width = len(self.view_bar.children) * dp(VIEW_W) + (len(self.view_bar.children) - 1) * dp(4)
        self.status_row.add_widget(self.view_bar)
        #: The full-window views, made when first opened and kept.
        self.history_view: HistoryView | None = None
        self.directory_view: DirectoryView | None = None
        self.view: HistoryView | DirectoryView | None = None  # the one open now
        self.multi = BigButton(texts["multi"], self.toggle_multi, color=GREY)
        self.grid.add_widget(self.multi)
        self.add_widget(self.grid)

        # --- the incoming-call banner (on the window, above everything)
        self.banner = IncomingBanner(texts, self.answer_row, self.reject_row,
                                     {line.id: line.label for line in profile.lines})
        self.banner.home = self.table_column
        # While the banner is docked above the table, the table's header gives it its place.
        self.banner.bind(parent=lambda *_: self._show_header())
        self.bind(size=lambda *_: self._relayout())
        self._relayout()

    # --- layout ------------------------------------------------------------------

    def _relayout(self) -> None:
        """Landscape: keypad beside the table; portrait: under it. Fixed key sizes either way."""
        width, height = self.size
        portrait = height > width * 1.1
        cols = PORTRAIT_BUTTON_COLS if portrait else LANDSCAPE_BUTTON_COLS
        rows = -(-len(self.grid.children) // cols)
        self.grid.cols = cols
        self.grid.height = rows * dp(BUTTON_H) + (rows - 1) * dp(4)
        self.middle.orientation = "vertical" if portrait else "horizontal"
        self._place_view_bar(width)
        views = dp(STATUS_H) + dp(4) if self.views_row else 0
        fixed = dp(STRIP_H) + dp(PARAMS_H) + dp(STATUS_H) + views + self.grid.height + 5 * dp(4) + 2 * dp(4)
        middle_h = max(dp(4 * KEY_H + 12), height - fixed)
        if portrait:
            self.keypad.size_hint = (1, None)
            self.keypad.height = 4 * dp(KEY_MAX_H) + 3 * dp(4)
            self.table_column.size_hint = (1, 1)
        else:
            self.keypad.size_hint = (None, 1)
            self.keypad.width = 4 * dp(KEY_W) + 3 * dp(4)
            self.table_column.size_hint = (1, 1)
            key_h = (middle_h - 3 * dp(4)) / 4
            if key_h > dp(KEY_MAX_H):  # a tall screen: keys keep their size (at the top), the table its rows
                self.keypad.size_hint = (None, None)
                self.keypad.height = 4 * dp(KEY_MAX_H) + 3 * dp(4)
                self.keypad.pos_hint = {"top": 1}
            else:
                self.keypad.pos_hint = {}

    def _place_view_bar(self, width: float) -> None:
        """Beside the status line when it keeps STATUS_MIN_W; else a row of its own under it, full width."""
        own_row = width - self.view_bar.width - dp(12) < dp(STATUS_MIN_W)
        if own_row == self.views_row and self.view_bar.parent is not None:
            return
        self.views_row = own_row
        if self.view_bar.parent is not None:
            self.view_bar.parent.remove_widget(self.view_bar)
        if own_row:
            self.view_bar.size_hint_x = 1
            for button in self.view_bar.children:
                button.size_hint_x, button.width = 1, dp(VIEW_W)
            self.add_widget(self.view_bar, index=self.children.index(self.status_row))
        else:
            self.view_bar.size_hint_x = None
            for button in self.view_bar.children:
                button.size_hint_x = None
            self.status_row.add_widget(self.view_bar)

    def _show_header(self) -> None:
        header = self.table.header
        docked = self.banner.parent is self.table_column
        header.height = 0 if docked else self._header_h
        header.opacity = 0 if docked else 1

    # --- wiring ----------------------------------------------------------------

    def start(self) -> None:
        """Follow the desk: draw its snapshot, then its events; listen to a hardware keyboard."""
        self.frontend.on_event = self.on_event
        self.frontend.start(self._load)  # the snapshot is read on the worker, then drawn here
        Window.bind(on_key_down=self.on_key_down)

    def _load(self, snap: dict[str, Any]) -> None:
        """Draw the desk's whole state (at start, again when the unit's socket comes back, after a new profile)."""
        labels = snap.get("labels")
        if isinstance(labels, dict):  # the profile in force: its lines and routes, with their labels
            self._labels = {str(k): str(v) for k, v in (labels.get("lines") or {}).items()} or self._labels
            self.identity.labels = dict(self._labels)
            self._registered = {k: v for k, v in self._registered.items() if k in self._labels}
            routes = labels.get("routes") or {}
            self._routes = [(str(k), str(v)) for k, v in routes.items()]
            self.route_choice.set_options(self._routes)
        for line in snap["lines"]:
            self._registered[line["id"]] = bool(line["registered"])
        self._show_lines()
        self._show_params(snap["line"], snap["number"], snap["route"])
        calls = {int(row["id"]) for row in snap["calls"]}
        for row_id in [r for r in self.table.rows if r not in calls]:  # ended while the unit was away
            self.table.remove(row_id)
        self.banner.clear()
        self.table.load(snap["calls"], snap["selection"])
        for row in snap["calls"]:
            self.banner.update(row)
        self.selection = tuple(snap["selection"])
        self._show_mute(bool(snap["muted"]))
        self._show_dnd(bool(snap.get("dnd", False)))
        self.history_button.show_count(int(snap.get("missed_unseen") or 0))
        self._available = dict(snap.get("available") or {})
        self._show_available()

    def close(self) -> None:
        Window.unbind(on_key_down=self.on_key_down)
        if self.view is not None:
            self.view.dismiss(animation=False)
        self.banner.clear()
        self.table.close()
        self.frontend.close()

    def _act(self, command: Callable[[], None]) -> None:
        """A touch: the last message is no longer news; then the command goes to the desk."""
        self.status.quiet()
        command()

    def act(self, button: str) -> None:
        """What a tap on the action button `button` (a screen id) does: send its action, dimmed or not."""
        self._act(lambda: self.frontend.act(self.bindings[button].id))
        if button == "conference" and self.multi_on:
            self._set_multi(False)  # the join it served is asked: the next tap selects one call again

    def _pick(self, row_id: int, add: bool) -> None:
        self._act(lambda: self.frontend.toggle_selected(row_id) if add else self.frontend.select_only(row_id))

    def toggle_multi(self) -> None:
        """"Select several": on, a tap on a row adds it to the selection (or takes it out)."""
        self._set_multi(not self.multi_on)

    def _set_multi(self, on: bool) -> None:
        self.multi_on = on
        self.multi.text = self.texts["multi_on"] if on else self.texts["multi"]
        self.multi.base_color = theme.SELECT if on else GREY
        self.multi.color = theme.TEXT_DARK if on else theme.TEXT
        self.multi.set_active(on)

    def answer_row(self, row_id: int) -> None:
        """The banner's Answer: that call, whatever is selected (the desk holds the call in progress).
        An open view gives the panel back: the operator is on a call now."""
        if self.view is not None:
            self.view.dismiss(animation=False)
        self._act(lambda: self.frontend.send("answer", {"row": row_id}, "answer"))

    # --- the views (History, Directory) ----------------------------------------------------

    def open_history(self) -> HistoryView:
        """The History view (it reads the history, then says the missed calls are seen)."""
        self.status.quiet()
        if self.history_view is None:
            self.history_view = HistoryView(self.texts, self.frontend, on_closed=self._view_closed)
        self._open_view(self.history_view)
        return self.history_view

    def open_directory(self) -> DirectoryView:
        self.status.quiet()
        if self.directory_view is None:
            self.directory_view = DirectoryView(self.texts, self.frontend, on_closed=self._view_closed)
        self._open_view(self.directory_view)
        return self.directory_view

    def _open_view(self, view: HistoryView | DirectoryView) -> None:
        if self.view is not None and self.view is not view:
            self.view.dismiss(animation=False)
        if self.menu is not None:
            self.menu.dismiss()
        self.view = view
        view.open()
        self.banner.place()  # an incoming call stays visible above the view

    def _view_closed(self) -> None:
        self.view = None

    def reject_row(self, row_id: int) -> None:
        """The banner's Reject: that call only; the selection and the call in progress stay."""
        self._act(lambda: self.frontend.send("hangup", {"row": row_id}, "hangup"))

    # --- the row menu (a long press on a row) -----------------------------------------

    def open_menu(self, row_id: int) -> None:
        widget = self.table.rows.get(row_id)
        if widget is None:
            return
        if self.menu is not None:
            self.menu.dismiss()
        menu = RowMenu(self.texts, widget.data, row_id in self.selection,
                       lambda key: self._menu_chose(row_id, key), multi=self.multi_on)
        # (not the desk's `available`: that is for the selected call, and the menu's row may be another)
        menu.row_id = row_id
        menu.bind(on_dismiss=lambda *_: self._menu_closed(menu))
        self.menu = menu
        menu.open()
        self.banner.place()

    def _menu_closed(self, menu: RowMenu) -> None:
        if self.menu is menu:
            self.menu = None

    def _menu_chose(self, row_id: int, key: str) -> None:
        """A menu item: the row it was opened on is the one acted on."""
        if self.menu is not None:
            self.menu.dismiss()
        if key == "select_row":
            self._pick(row_id, False)
        elif key in ("add_row", "remove_row"):
            self._pick(row_id, True)
        elif key == "answer":
            self.answer_row(row_id)
        elif key == "hangup":
            self.reject_row(row_id)
        elif key in self.bindings:
            self._pick(row_id, False)  # select that call, then its action (the worker keeps the order)
            self.act(key)

    # --- desk events (Kivy thread) -------------------------------------------------

    def on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.RowChanged):
            self.table.update(event.row)
            self.banner.update(event.row)
            self._show_row_states()
        elif isinstance(event, ev.RowRemoved):
            self.table.remove(event.row_id, event.reason)
            self.banner.remove(event.row_id)
            if self.menu is not None and self.menu.row_id == event.row_id:
                self.menu.dismiss()
        elif isinstance(event, ev.SelectionChanged):
            self.selection = tuple(event.rows)
            self.table.select(event.rows)
            self._show_row_states()
            if self._tones is not None:
                self._tones = ""  # the party may be another one now
                self._show_tones()
        elif isinstance(event, ev.ParamsChanged):
            self._show_params(event.line, event.number, event.route)
        elif isinstance(event, ev.LineState):
            self._registered[event.line] = event.registered
            self._show_lines()
        elif isinstance(event, ev.AvailabilityChanged):
            self._available = dict(event.available)
            self._show_available()
        elif isinstance(event, ev.NumberRequired):
            self.ask_number(event.action)
        elif isinstance(event, ev.ActionFailed):
            self.on_refused(event)
        elif isinstance(event, ev.ActionDone):
            if event.action == "conference" and self.multi_on:
                self._set_multi(False)  # the join it served is done: the next tap selects one call again
        elif isinstance(event, ev.MuteChanged):
            self._show_mute(event.muted)
        elif isinstance(event, ev.DndChanged):
            self._show_dnd(event.on)
        elif isinstance(event, ev.HistoryChanged):
            self.history_button.show_count(event.missed_unseen)
            if self.history_view is not None:
                self.history_view.on_history(event.missed_unseen)
        elif isinstance(event, ev.Alert):
            colour = INFO_COLOR if event.code in INFO_ALERTS else ALERT_COLOR
            self.status.add(self.texts.alert(event.code, event.params, event.message, names=self.table.names()),
                            colour)
        elif isinstance(event, ev.LinkChanged):  # only from a RemoteDesk: the panel in its own process
            self.on_link(event)
        elif isinstance(event, ev.ProfileChanged):  # new lines, routes or labels: read them from the desk
            self.frontend.refresh(self._load)

    def on_refused(self, event: ev.ActionFailed) -> None:
        """A refusal or failure: on the status line, in the operator's language, by its code."""
        if event.code == "number_required" and event.action in NUMBER_ACTIONS:
            # The popup is the answer: the desk sends NumberRequired with this refusal (over the socket the
            # reply may come before that event or after it, so the popup need not be open yet).
            return
        if self._link_lost and event.code == "link_down":
            return  # the status line already says so, until the unit is back
        self.status.add(self.texts.refused(event.action, event.code, event.params, event.reason,
                                           names=self.table.names()), REFUSED_COLOR)

    def on_link(self, event: ev.LinkChanged) -> None:
        """The unit's socket went away (say so until it is back) or came back (redraw from its state)."""
        if event.connected:
            self._link_lost = ""
            self.status.set_sticky("")
            if event.snapshot is not None:
                self._load(event.snapshot)
            self.status.quiet()
        else:
            self._link_lost = self.texts["link_lost"]
            if self.popup is not None:
                self.popup.dismiss()
            if self.menu is not None:
                self.menu.dismiss()
            if self.view is not None:
                self.view.dismiss(animation=False)
            self.banner.clear()
            self.status.set_sticky(self._link_lost)

    # --- showing ---------------------------------------------------------------

    def _show_params(self, line: str, number: str, route: str) -> None:
        self._line = line
        self._show_lines()
        self.number_field.text = number
        if self._routes:
            self.route_choice.show(route)
        else:
            self.route_choice.show("", self.texts["no_route"])

    def _show_lines(self) -> None:
        words = {True: self.texts["registered"], False: self.texts["not_registered"]}
        self.line_choice.set_options([(line_id, f"{label}\n{words[self._registered.get(line_id, False)]}")
                                      for line_id, label in self._labels.items()])
        label = self._labels.get(self._line, self._line)
        self.line_choice.show(self._line, f"{label} · {words[self._registered.get(self._line, False)]}")
        self.identity.show_lines(self._registered)

    def _show_mute(self, muted: bool) -> None:
        self._muted = muted
        self.identity.show_mute(muted)
        button = self.buttons.get("mute")
        if button is None:
            return
        button.text = self.texts["unmute"] if muted else self.texts["mute"]
        button.base_color = RED if muted else GREY
        button.set_active(muted)

    def _show_dnd(self, on: bool) -> None:
        """Do-not-disturb: the mark in the identity strip, and its button lit (its words say ON)."""
        self._dnd = on
        self.identity.show_dnd(on)
        button = self.buttons.get("dnd")
        if button is None:
            return
        button.text = self.texts["dnd_on"] if on else self.texts["dnd"]
        button.base_color = theme.DND_BG if on else GREY
        button.set_active(on)

    def _show_available(self) -> None:
        """Dim the buttons whose action cannot act now (an action the map does not name is lit)."""
        available = getattr(self, "_available", {})
        for key, button in self.buttons.items():
            button.set_dimmed(available.get(self.bindings[key].id) is not None)
        # a unit that keeps no history: the button is dimmed, and the view (a tap away still) says why
        self.history_button.set_dimmed(available.get("history_seen") is not None)
        self._show_tones()

    def _show_tones(self) -> None:
        """While the keys go to the call as tones: the caption names that call, keys and box change colour."""
        available = getattr(self, "_available", {})
        tones = "dtmf" in available and available["dtmf"] is None
        party = self._tones_party() if tones else None
        if party == self._tones:
            return
        self._tones = party
        if party is None:
            self.number_caption.text = self.texts["number"]
            self.number_caption.color = theme.TEXT_MUTED
            bg, key_bg = theme.SURFACE, GREY
        else:
            self.number_caption.text = self.texts["tones_to"].format(party=party)
            self.number_caption.color = theme.TEXT
            bg, key_bg = theme.SELECT_BG, theme.TONE_KEY
        self.number_box.paint(bg)
        self.number_caption.bg_rgba = bg
        self.number_field.paint(bg)
        for char, button in self.keypad.keys.items():
            if char in DTMF_KEYS:
                button.base_color = key_bg

    def _tones_party(self) -> str:
        """The call the tones go to: the selected one (or the only one), by its party."""
        rows = [r for r in self.selection if r in self.table.rows] or (
            list(self.table.rows) if len(self.table.rows) == 1 else [])
        if len(rows) != 1:
            return "?"
        return row_party(self.table.rows[rows[0]].data).text or "?"

    def _show_row_states(self) -> None:
        """Hold and Record say whether the selected call is held or recorded (words and a mark)."""
        rows = [self.table.rows[r].data for r in self.selection if r in self.table.rows]
        row = rows[0] if len(rows) == 1 else None
        held = bool(row and row.get("local_hold"))
        recording = bool(row and row.get("recording"))
        hold = self.buttons.get("hold")
        if hold is not None:
            hold.text = self.texts["held"] if held else self.texts.label("hold", "hold")
            hold.set_active(held)
        record = self.buttons.get("record_start")
        if record is not None:
            record.text = self.texts["recording_now"] if recording else self.texts.label("record_start")
            record.set_active(recording)

    def show_status(self, text: str, color: tuple[float, ...]) -> None:
        self.status.add(text, color)

    def clear_status(self) -> None:
        self.status.quiet()

    def open_messages(self) -> Any:
        return self.status.open_list()

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
        self.banner.place()  # an incoming call stays visible above the prompt

    def _popup_closed(self, popup: NumberPopup) -> None:
        if self.popup is popup:
            self.popup = None
            self._asked = None

    # --- a hardware keyboard -----------------------------------------------------------

    def on_key_down(self, _window: Any, key: int, _scancode: int, codepoint: str | None, _mods: Any) -> bool:
        """Enter is Call (or OK in the number dialog); digits, Backspace and Escape edit as the keypads do."""
        popup = self.popup
        view = self.view
        if view is not None and popup is None:  # the open view's search takes the typing
            if key == ESCAPE:
                view.dismiss(animation=False)
            elif key == BACKSPACE:
                view.press("delete")
            elif key == 32:
                view.press("space")
            elif codepoint and codepoint.isprintable() and key not in ENTER_KEYS:
                view.press(codepoint.lower())
            return True
        if key in ENTER_KEYS:
            if popup is not None:
                popup.confirm()
            else:
                self.act("call")
            return True
        if key == ESCAPE:
            if popup is not None:
                popup.dismiss()
            elif self.menu is not None:
                self.menu.dismiss()
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

