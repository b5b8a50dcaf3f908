"""The panel's command table: every command declared once, for every front-end.

A command is a name, its arguments and their types, whether it takes Number,
a one-line help text, and the *actions* it offers: a command with fixed
arguments that a front-end can bind to one button or key (``transfer`` offers
``transfer_quick``, ``transfer_consult``, ``transfer_confirm`` and
``transfer_next``). From this one table come the control socket's argument
checks and dispatch (kiosk.control), the ``kiosk ctl`` subcommands and their
``--help``, the remote client the touchscreen uses (kiosk.ui.remote), and the
touchscreen's and GPIO keys' bindings. Adding a command is an entry here plus
the desk method of the same name; tests fail when an entry lacks its help
text, its translations or a binding it declares.

Action ids are also the ``action`` of every refusal, the keys of the desk's
``available`` map and the catalogues' ``actions`` section.

No imports beyond the standard library: ``kiosk ctl`` loads this module too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class Arg:
    """One argument: its JSON name, type, and how ``kiosk ctl`` takes it."""

    name: str
    type: str  # "str" | "int" | "rows" (a list of row numbers) | "bool"
    help: str
    required: bool = False
    choices: tuple[str, ...] = ()
    #: ``kiosk ctl``: the default used when the argument is left out (None: not sent).
    default: Any = None
    #: ``kiosk ctl``: an option (--name) instead of a positional argument.
    option: bool = False

    def expects(self) -> str:
        """What a wrong value is told it should be."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return {"str": "a string", "int": "a whole number", "rows": "a list of row numbers",
                "bool": "true or false"}[self.type]

    def fits(self, value: Any) -> bool:
        """Whether a JSON value is of this argument's type (bool is never a number here)."""
        if self.type == "str":
            return isinstance(value, str)
        if self.type == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        if self.type == "bool":
            return isinstance(value, bool)
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


@dataclass(frozen=True)
class Action:
    """A command with fixed arguments, as one button or key means it.

    ``screen``: the touchscreen button bound to it (its id in the panel);
    ``gpio``: the profile's ``[gpio]`` key bound to it, ``"transfer:held"`` for
    a long press. ``number``: the action dials or transfers to a number (the
    argument, else the Number field; the panel asks for one when both are empty).
    """

    id: str
    command: str
    args: Mapping[str, Any] = field(default_factory=dict)
    screen: str | None = None
    gpio: str | None = None
    number: bool = False


@dataclass(frozen=True)
class Command:
    """One command of the panel: the desk method of the same name takes ``args`` as keywords."""

    name: str
    help: str
    args: tuple[Arg, ...] = ()
    actions: tuple[Action, ...] = ()
    #: Only reads the desk (no change, no SIP): it never starts an action of its own.
    reads: bool = False

    def action_for(self, args: Mapping[str, Any]) -> str:
        """The action id these arguments mean (the command's name when no action fits)."""
        for action in self.actions:
            if all(args.get(k) == v for k, v in action.args.items()):
                return action.id
        return self.name


def _number(help: str = "the number; without it the Number field is used") -> Arg:
    return Arg("number", "str", help)


def _row(help: str) -> Arg:
    return Arg("row", "int", help, option=True)


def _table(*commands: Command) -> dict[str, Command]:
    return {c.name: c for c in commands}


#: Every command of the panel, in the order ``kiosk ctl --help`` lists them.
COMMANDS: dict[str, Command] = _table(
    Command("calls", "the whole panel: parameters, lines, call rows, selection, what can be done now",
            reads=True),
    Command("select", "select call rows (none: clear the selection; --toggle: add or remove one row)",
            (Arg("rows", "rows", "the row numbers to select", default=[]),
             Arg("toggle", "int", "add this row to the selection, or take it out", option=True)),
            actions=(Action("select", "select"),)),
    Command("set", "set the Line, Number or Route parameter",
            (Arg("name", "str", "which parameter", True, ("line", "number", "route")),
             Arg("value", "str", "its new value", True)),
            actions=(Action("set", "set"),)),
    Command("key", "type on the Number field: a digit, * # +, 'delete' or 'clear'",
            (Arg("key", "str", "0-9, *, #, +, delete or clear", True),),
            actions=(Action("key", "key"),)),
    Command("dial", "call Number (or the given number) on the chosen Line and Route", (_number(),),
            (Action("dial", "dial", screen="call", number=True),)),
    Command("answer", "answer the selected ringing call (or --row: that ringing call, which becomes selected)",
            (_row("answer this ringing row instead of the selected call"),), actions=(
                Action("answer", "answer", screen="answer", gpio="answer"),)),
    Command("hangup", "hang up, reject or cancel the selected call (or --row: that call; the selection stays)",
            (_row("hang up (reject) this row instead of the selected call"),), actions=(
                Action("hangup", "hangup", screen="hangup", gpio="hangup"),)),
    Command("hold", "put the selected call on hold", actions=(
        Action("hold", "hold", screen="hold", gpio="hold"),)),
    Command("connect", "take the selected held call off hold (any call in conversation is held first)",
            actions=(Action("connect", "connect", screen="connect", gpio="connect"),)),
    Command("transfer", "transfer the selected call: quick (blind), consult, confirm the consultation, "
                        "or next (consult, or confirm when one is open)",
            (Arg("mode", "str", "which transfer", True, ("quick", "consult", "confirm", "next")), _number()),
            (Action("transfer_quick", "transfer", {"mode": "quick"}, screen="transfer_quick",
                    gpio="transfer:held", number=True),
             Action("transfer_consult", "transfer", {"mode": "consult"}, screen="transfer_consult", number=True),
             Action("transfer_confirm", "transfer", {"mode": "confirm"}, screen="transfer_confirm"),
             Action("transfer_next", "transfer", {"mode": "next"}, gpio="transfer", number=True))),
    Command("conference", "three-party conference (hold and dial, then join), or join the selected calls",
            (_number(),), (Action("conference", "conference", screen="conference", gpio="conference",
                                  number=True),)),
    Command("pickup", "intercept the call ringing on an internal number", (_number("the internal number"),),
            (Action("pickup", "pickup", screen="pickup", number=True),)),
    Command("record", "start, stop or toggle recording of the selected call",
            (Arg("action", "str", "start, stop or toggle", True, ("start", "stop", "toggle")),),
            (Action("record_start", "record", {"action": "start"}, screen="record_start"),
             Action("record_stop", "record", {"action": "stop"}, screen="record_stop"),
             Action("record_toggle", "record", {"action": "toggle"}, gpio="record"))),
    Command("mute", "microphone mute: on, off or toggle (the default)",
            (Arg("state", "str", "on, off or toggle", choices=("on", "off", "toggle"), default="toggle"),),
            (Action("mute", "mute", {"state": "toggle"}, screen="mute"),)),
    Command("dtmf", "send DTMF digits to the selected call in conversation (RFC 4733 or SIP INFO, as its line says)",
            (Arg("digits", "str", "the digits: 0-9, *, #, A-D", True),), (Action("dtmf", "dtmf"),)),
    Command("dnd", "do not disturb: on (incoming calls are refused and never ring), off, or toggle (the default)",
            (Arg("state", "str", "on, off or toggle", choices=("on", "off", "toggle"), default="toggle"),),
            (Action("dnd", "dnd", {"state": "toggle"}, screen="dnd", gpio="dnd"),)),
    Command("history", "the call history, newest first (--missed: only missed calls)",
            (Arg("missed", "bool", "only the missed calls", option=True),
             Arg("limit", "int", "at most this many calls (default 50)", option=True),
             Arg("search", "str", "only calls whose name, number or original destination has this text",
                 option=True)), reads=True),
    Command("history_seen", "the missed calls so far have been seen: the missed-call count goes back to 0",
            actions=(Action("history_seen", "history_seen"),)),
    Command("callback", "call back the party of a call in the history, on the line the call was on",
            (Arg("entry", "int", "the history entry's id", True),), (Action("callback", "callback"),)),
    Command("directory", "search the directory (the provisioned file, then LDAP) by name or number",
            (Arg("query", "str", "a name, part of one, or digits of a number", default=""),
             Arg("limit", "int", "at most this many contacts (default 20)", option=True)), reads=True),
    Command("recordings", "the recordings kept on this unit, newest first", reads=True),
    Command("reload", "read the profile file again and apply it (calls on lines that stay go on); "
                      "prints what changed, what waits for a call to end and what needs a restart"),
    Command("status", "the unit's health: version, uptime, profile in force, lines, calls, agent, recordings "
                      "disk, last provisioning check and last reload", reads=True),
)

#: Not a desk command: it turns the connection into the desk's event stream.
EVENTS = "events"

#: Every action by id.
ACTIONS: dict[str, Action] = {a.id: a for c in COMMANDS.values() for a in c.actions}

#: The actions that take a number (the panel asks for one when the desk says it is required).
NUMBER_ACTIONS: tuple[str, ...] = tuple(a.id for a in ACTIONS.values() if a.number)


def screen_bindings() -> dict[str, Action]:
    """Touchscreen button id -> the action it sends."""
    return {a.screen: a for a in ACTIONS.values() if a.screen}


def gpio_bindings() -> dict[str, Action]:
    """GPIO key (``transfer:held`` for a long press) -> the action it sends."""
    return {a.gpio: a for a in ACTIONS.values() if a.gpio}


def check_args(name: str, args: Mapping[str, Any]) -> dict[str, Any] | tuple[str, dict[str, Any]]:
    """The keyword arguments of a request, or (error code, its parameters) saying what is wrong.

    Absent and null mean the same: not given. Shared by the control socket and the desk.
    """
    command = COMMANDS.get(name)
    if command is None:
        return "unknown_command", {"command": name[:40], "commands": ", ".join([*COMMANDS, EVENTS])}
    spec = {a.name: a for a in command.args}
    for key in args:
        if key not in spec:
            return "unknown_argument", {"command": name, "argument": str(key)[:40],
                                        "takes": ", ".join(spec) or "no arguments"}
    kwargs: dict[str, Any] = {}
    for arg in command.args:
        value = args.get(arg.name)
        if value is None:
            if arg.required:
                return "missing_argument", {"command": name, "argument": arg.name, "expects": arg.expects()}
            continue
        if not arg.fits(value) or (arg.choices and value not in arg.choices):
            return "bad_argument", {"command": name, "argument": arg.name, "expects": arg.expects(),
                                    "value": repr(value)[:60]}
        kwargs[arg.name] = value
    return kwargs


class CommandMethods:
    """One typed method per command, for the desk in this process and the one over the socket alike.

    Both kiosk.desk.Desk and kiosk.ui.remote.RemoteDesk inherit these and supply
    ``run(name, **args)``, which returns the command's Outcome (at once: see kiosk.desk).
    """

    def run(self, name: str, /, **args: Any) -> Any:
        raise NotImplementedError

    def select(self, row_ids: Iterable[int] = (), toggle: int | None = None) -> Any:
        """Select rows (an empty list clears the selection); `toggle` adds or removes one row."""
        return self.run("select", rows=[int(r) for r in row_ids], toggle=toggle)

    def set(self, name: str, value: str) -> Any:
        """Set a panel parameter: line, number or route."""
        return self.run("set", name=name, value=value)

    def key(self, key: str) -> Any:
        """A keypad key on the Number field: a dial character, `delete` or `clear`."""
        return self.run("key", key=key)

    def dial(self, number: str | None = None) -> Any:
        return self.run("dial", number=number)

    def answer(self, row: int | None = None) -> Any:
        return self.run("answer", **({} if row is None else {"row": row}))

    def hangup(self, row: int | None = None) -> Any:
        return self.run("hangup", **({} if row is None else {"row": row}))

    def hold(self) -> Any:
        return self.run("hold")

    def connect(self) -> Any:
        return self.run("connect")

    def transfer(self, mode: str, number: str | None = None) -> Any:
        return self.run("transfer", mode=mode, number=number)

    def conference(self, number: str | None = None) -> Any:
        return self.run("conference", number=number)

    def pickup(self, number: str | None = None) -> Any:
        return self.run("pickup", number=number)

    def record(self, action: str) -> Any:
        return self.run("record", action=action)

    def mute(self, state: str = "toggle") -> Any:
        return self.run("mute", state=state)

    def dtmf(self, digits: str) -> Any:
        return self.run("dtmf", digits=digits)

    def dnd(self, state: str = "toggle") -> Any:
        return self.run("dnd", state=state)

    def history(self, missed: bool = False, limit: int | None = None, search: str | None = None) -> Any:
        return self.run("history", missed=missed or None, limit=limit, search=search)

    def history_seen(self) -> Any:
        return self.run("history_seen")

    def callback(self, entry: int) -> Any:
        return self.run("callback", entry=entry)

    def directory(self, query: str = "", limit: int | None = None) -> Any:
        return self.run("directory", query=query, limit=limit)

    def recordings(self) -> Any:
        return self.run("recordings")

    def reload(self) -> Any:
        """Read the profile again and apply it; the outcome's data is the reload's result."""
        return self.run("reload")

    def status(self) -> Any:
        """The unit's health (kiosk.status); the outcome's data is what `kiosk ctl status` prints."""
        return self.run("status")
