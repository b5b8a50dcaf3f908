"""The panel: call table, selection, Line / Number / Route, and the rules of each action.

This module is the one place that decides what a press means. It imports no
pjsua2, Kivy or gpiozero: front-ends call the command methods, the SIP agent is
an object given to the constructor (the real pjsua2 one, or a fake in unit
tests), and everything the world should know leaves as an event.

Threads. One desk thread runs an asyncio loop that owns every piece of desk
state; nothing else reads or writes the table. A command from any front-end's
thread is handed to that loop and answered at once: refused (a code, its
parameters and the English words), done, or accepted and still running. An
action that must wait for SIP (a hold before a dial, a pickup waiting for the
answer, a conference holding its members) is a coroutine on the loop: while it
waits, the loop runs every other command and agent event, so a Hang up is
never queued behind a Pickup's INVITE. What such an action does later arrives
as events tied to its row and to its command id (``ActionDone`` or
``ActionFailed``), and ``Outcome.wait()`` gives the final outcome in-process.

Why one loop and not a lock: the rules of several actions span seconds of SIP
(consult = hold, dial, answer), and with a lock every caller either held it
across those waits (freezing the panel) or read and wrote the table around
them (the old reads outside the lock). On one loop each step of each action
runs alone, in the order things happened, and a step never blocks.

Agent events are queued for the loop too, through the same queue as the
agent's resolved Futures, so the agent's order of events and replies is the
desk's order. Neither side ever waits for the other. Which actions are
available is recomputed once per turn of the loop after a change (and before
a snapshot), off the path from a command to the wire.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import dataclasses
import itertools
import logging
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from . import events as ev
from . import i18n
from .calllog import CallLog, outcome as call_outcome
from .commands import ACTIONS, COMMANDS, CommandMethods, check_args
from .party import party
from .profile import MAX_CALLS, Profile
from .recordings import RecordingRefused, Recordings, file_stem
from .ringer import in_conversation, wanted_tone

log = logging.getLogger("kiosk.desk")

#: How long an action step waits for the agent thread to accept a request.
AGENT_TIMEOUT = 5.0
#: How long a command may wait for the desk loop to take it (a loop this late is a bug, said as such).
REPLY_TIMEOUT = 5.0
#: How long a transfer may go without a final NOTIFY before the operator is told.
TRANSFER_TIMEOUT = 30.0
#: How long after a confirmed transfer the consulted party may take to release our leg.
CONSULT_RELEASE = 5.0
#: How long `pickup` waits for the intercepted call to be answered.
PICKUP_TIMEOUT = 8.0
#: How long a failed pickup waits for its own call to go before it gives back the held calls.
PICKUP_RELEASE = 2.0
#: A line's registration state before the first REGISTER's answer.
NOT_YET = "not registered yet"
#: What the Number field takes from the keypad.
DIAL_CHARS = frozenset("0123456789*#+")
#: What people write between a phone number's digits, and what is left of one without them.
_SEPARATORS = re.compile(r"[\s\-.()/\u00a0]")
_PHONE = re.compile(r"\+?[0-9*#]+")
#: What can never stand in a SIP URI's user part or host as typed.
_URI_BREAKERS = re.compile(r"[\s<>\"]")
#: What a call in conversation takes as DTMF (RFC 4733 events 0-15).
DTMF_CHARS = frozenset("0123456789*#ABCD")
#: How many calls `history` lists when no limit is given, and the most it lists.
HISTORY_LIMIT, HISTORY_MAX = 50, 1000
DIRECTORY_LIMIT = 20
#: How many contacts naming a caller may look at; a full page of them is taken as ambiguous.
LOOKUP_LIMIT = 25


class AgentError(Exception):
    """The agent could not do what was asked: a code and its parameters, and str() in English."""

    def __init__(self, message: str, code: str = "agent_error", **params: Any) -> None:
        super().__init__(message)
        self.code = code
        self.params = params if params or code != "agent_error" else {"error": message}


class CallGone(AgentError):
    """The agent has no such call (any more): the desk's row for it is stale."""

    def __init__(self, call: int) -> None:
        super().__init__(f"call {call} has ended", "call_ended", row=call)
        self.call = call


class Agent(Protocol):
    """What the desk needs from a SIP agent. Every call returns at once; the
    Future resolves when the agent thread has done (or refused) the request."""

    def start(self, listener: Callable[[ev.Event], None], new_id: Callable[[], int]) -> None: ...
    def stop(self) -> None: ...
    def dial(self, call: int, line: str, uri: str, route: str | None) -> Future[None]: ...
    def answer(self, call: int) -> Future[None]: ...
    def hangup(self, call: int) -> Future[None]: ...
    def hold(self, call: int) -> Future[None]: ...
    def unhold(self, call: int) -> Future[None]: ...
    def transfer(self, call: int, uri: str) -> Future[None]: ...
    def transfer_replaces(self, call: int, target: int) -> Future[None]: ...
    def conference(self, calls: list[int]) -> Future[None]: ...
    def record(self, call: int, path: str | None) -> Future[None]: ...
    def mute(self, on: bool) -> Future[None]: ...
    # Optional, each (an agent without it has no sound of its own, or no such feature):
    # def tone(self, kind: str | None) -> Future[None]: ...   ring / waiting / ringback / None
    # def dtmf(self, call: int, digits: str, method: str) -> Future[None]: ...
    # def beep(self) -> Future[None]: ...
    # def set_dnd(self, code: int | None) -> Future[None]: ...
    # Optional (an agent without it has nothing of the profile to follow): take a reloaded
    # profile; the Future holds what still waits for a call to end, in words.
    # def apply_profile(self, profile: Profile) -> Future[list[str]]: ...


@dataclass
class Row:
    """One row of the call table."""

    id: int
    line: str
    direction: str  # "in" | "out"
    remote: str
    state: str  # dialling, ringing, talking, on hold, ...
    started: float = field(default_factory=time.time)
    answered: float | None = None
    route: str | None = None
    recording: bool = False
    local_hold: bool = False
    remote_hold: bool = False
    note: str = ""  # last progress text for the operator (e.g. "transfer: 180 Ringing"), in English
    note_key: dict[str, Any] | None = None  # the note as {"code", "params"} for a translation
    recording_path: str = ""
    held_since: float | None = None  # when the operator's hold began (the customer's wait is shown from it)
    via: str = ""  # a diverted or queued call's original destination ("Sales queue")
    intercom: bool = False  # an intercom request: answered by itself
    auto_answer: bool = False  # waiting to be answered by itself (auto-answer or intercom)
    early_media: bool = False  # the far end sends audio before answering (no ringback of ours then)
    directory_name: str = ""  # the name the directory has for the number
    dialled: str = ""  # an outgoing call: the number as given, before the route's prefix

    @property
    def up(self) -> bool:
        """Answered and not yet ended: a call that can be held, transferred, joined, recorded."""
        return self.answered is not None

    def as_json(self) -> dict[str, Any]:
        now = time.time()
        return {
            "id": self.id,
            "line": self.line,
            "direction": self.direction,
            "remote": self.remote,
            "state": self.state,
            "started": self.started,
            "duration": round(now - (self.answered or self.started), 1),
            "route": self.route,
            "recording": self.recording,
            "note": self.note,
            "note_key": self.note_key,
            "answered": self.answered,
            "local_hold": self.local_hold,
            "remote_hold": self.remote_hold,
            "held_since": self.held_since,
            "name": self.directory_name or (who := party(self.remote)).name,
            "number": party(self.remote).number,
            "via": self.via,
            "intercom": self.intercom,
            "auto_answer": self.auto_answer,
            "directory_name": self.directory_name,
        }


@dataclass(frozen=True)
class Transfer:
    """A transfer in flight: which kind, to whom, and the consult row for confirm."""

    mode: str  # "quick" | "confirm"
    to: str
    consult: int | None = None
    command: int | None = None  # the command that sent it: a late failure is tied to it


@dataclass(frozen=True)
class Refusal:
    """Why an action cannot act: a code from the catalogues, its parameters, the row concerned."""

    code: str
    params: dict[str, Any] = field(default_factory=dict)
    row: int | None = None

    def message(self, action: str | None = None, language: str = "en") -> str:
        return i18n.message(self.code, self.params, language, action)

    def as_json(self, action: str | None = None) -> dict[str, Any]:
        return {"code": self.code, "params": self.params, "message": self.message(action), "row": self.row}


def refusal(code: str, at: int | None = None, /, **params: Any) -> Refusal:
    """A Refusal of `code` concerning row `at` (positional: `row` is a parameter of many codes)."""
    return Refusal(code, params, at)


@dataclass(frozen=True)
class Outcome:
    """What a desk command returns: done, refused (with a code), or accepted and still running.

    ``pending``: the command was accepted and waits for SIP; its final outcome
    arrives as an ``ActionDone`` / ``ActionFailed`` event with ``command`` =
    this command's id, and ``wait()`` gives it in-process.
    """

    ok: bool
    reason: str = ""  # the English message of a refusal
    data: dict[str, Any] = field(default_factory=dict)
    code: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    action: str = ""
    row: int | None = None
    command: int | None = None
    pending: bool = False
    done: "Future[Outcome] | None" = field(default=None, compare=False, repr=False)

    @classmethod
    def refuse(cls, reason: str, code: str = "refused", **params: Any) -> "Outcome":
        """A refusal made outside the desk (a link that is down, say): `refused` shows `reason` as it is."""
        return cls(False, reason, code=code, params=params or ({"reason": reason} if code == "refused" else {}))

    def wait(self, timeout: float | None = 60.0) -> "Outcome":
        """The final outcome: this one when it is final, else the one the action ends with."""
        if self.done is None:
            return self
        return self.done.result(timeout)

    def error(self) -> dict[str, Any]:
        """The refusal as the control socket's `error` object."""
        return {"code": self.code, "action": self.action, "message": self.reason, "params": self.params,
                "row": self.row, "command": self.command}


def _fields(row: "Row", action: str | None = None, event: str | None = None) -> dict[str, Any]:
    """The journal fields of a log line about a call row: ROW, LINE, and ACTION (the operator's) or EVENT."""
    fields: dict[str, Any] = {"ROW": row.id, "LINE": row.line}
    if action:
        fields["ACTION"] = action
    if event:
        fields["EVENT"] = event
    return fields


class _FromField(str):
    """A number taken from the Number field (not given with the action): consumed when used."""


#: How many refusals and alerts the desk keeps for the operator to read again.
NOTICES = 20


@dataclass
class _Command:
    """One command while it runs: its id, action, and the two futures its callers wait on."""

    id: int
    action: str
    reply: "Future[Outcome]" = field(default_factory=Future)
    done: "Future[Outcome]" = field(default_factory=Future)
    data: dict[str, Any] = field(default_factory=dict)

    def accept(self) -> None:
        """The action now waits for SIP: its caller gets its reply (accepted, still running)."""
        if not self.reply.done():
            self.reply.set_result(Outcome(True, data=dict(self.data), action=self.action,
                                          command=self.id, pending=True, done=self.done))


#: The command whose step is running (each action's task carries its own).
_CURRENT: contextvars.ContextVar[_Command | None] = contextvars.ContextVar("kiosk_desk_command", default=None)


class DeskClosed(RuntimeError):
    """The desk loop has stopped."""


class Desk(CommandMethods):
    """The call-control panel of one unit.

    The Number field is consumed by the action that uses it, as a desk phone
    clears its dial field after Call: a transfer, conference or pickup can
    only reach a number entered for it, never the one left from the last call.
    """

    def __init__(self, profile: Profile, agent: Agent) -> None:
        self.profile = profile
        self.agent = agent
        self.ids = itertools.count(1)
        self._command_ids = itertools.count(1)
        self.rows: dict[int, Row] = {}
        self.selection: list[int] = []
        self.line = profile.lines[0].id
        self.number = ""
        self.route = profile.sip.default_route or (profile.routes[0].id if profile.routes else "")
        if self.route:
            self.line = profile.route(self.route).line
        self.registered: dict[str, ev.LineState] = {
            line.id: ev.LineState(line.id, False, 0, NOT_YET) for line in profile.lines
        }
        self.selection_lost = False  # the selected call ended: no falling back to "the only call"
        #: The selection is the only call, shown selected because it is the only one (no one chose it):
        #: a second call clears it, so that nothing is acted on that the operator did not pick.
        self.selection_implicit = False
        self.transfers: dict[int, Transfer] = {}
        self.late_transfers: dict[int, Transfer] = {}  # timed out, but a final NOTIFY may still come
        self.transfer_deadline: dict[int, float] = {}
        self.consults: dict[int, int] = {}  # consult row -> held row
        self.pending_conference: tuple[int, int] | None = None  # (held B, dialled C)
        self.conference_rows: set[int] = set()
        self.ended_reasons: dict[int, str] = {}
        self.muted = False  # the operator's microphone (the agent mutes the headset)
        # The last refusals, alerts and failed calls, newest last, so that a reason
        # replaced on the status line can still be read (`calls` -> "notices").
        self.notices: collections.deque[dict[str, Any]] = collections.deque(maxlen=NOTICES)
        self.available: dict[str, dict[str, Any] | None] = {}
        self._available_due = False  # a recomputation is queued on the loop
        self._listeners: list[Callable[[ev.Event], None]] = []
        self._listeners_lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Files, sidecars, free space and retention; reads the profile at each use
        # because a profile may be swapped for the last good one.
        self.recording_files = Recordings(lambda: self.profile.recording, lambda: self.profile.operator.name,
                                          self._record_stop_low_space)
        #: The profile last asked for (a reload's, as the running unit can take it); `profile` is what is
        #: in force, which differs from it only by lines whose change waits for their calls to end.
        self.wanted_profile = profile
        #: Line id -> "removed" or "changed": lines kept as they were until their calls end.
        self.pending_lines: dict[str, str] = {}
        #: The unit's kiosk.reload.Reloader, for the `reload` command (None: this desk cannot reload).
        self.reloader: Any = None
        self._agent_apply: Future[Any] | None = None  # the agent's part of the last apply_profile
        self.started = time.time()  # for `kiosk ctl status`: the unit's uptime
        #: The unit's kiosk.provisioning.Provisioner (None: not provisioned from a server).
        self.provisioner: Any = None
        #: The call history (kiosk.history.History; None: this unit keeps none) and the directory
        #: (kiosk.directory.Directory; None: none provisioned), attached by the unit's start.
        self.call_history: Any = None
        self.contacts: Any = None
        self.calllog = CallLog()
        self.missed_unseen = 0
        #: Do-not-disturb: incoming calls are refused (the agent does it, before they ring).
        self.dnd_on = False
        #: Where the DND state is kept across restarts (None: not kept).
        self.dnd_file: Path | None = None
        self.tone: str | None = None  # what the agent was last told to play
        self._tone_alerted = -1e9  # when a tone that failed was last said
        self._auto_answers: dict[int, asyncio.TimerHandle] = {}
        self._answering: set[int] = set()  # rows whose answer is on its way to the agent
        self._dnd_lock = asyncio.Lock()
        self._dnd_writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kiosk-dnd")
        self._loop = asyncio.new_event_loop()
        self._change: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run_loop, name="kiosk-desk", daemon=True)
        self._thread.start()
        self.call_soon(self._update_available)

    # --- the loop ----------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def on_loop(self) -> bool:
        """Whether the caller is the desk thread."""
        return threading.current_thread() is self._thread

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) on the desk loop (from any thread); dropped once the desk has stopped."""
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the unit is stopping
            log.debug("desk stopped: dropped %r", fn)

    def on_desk(self, fn: Callable[..., Any], *args: Any, timeout: float = REPLY_TIMEOUT) -> Any:
        """Run fn(*args) on the desk loop and return its result (directly when already there)."""
        if self.on_loop():
            return fn(*args)
        result: Future[Any] = Future()

        def run() -> None:
            try:
                result.set_result(fn(*args))
            except BaseException as exc:  # handed to the caller
                result.set_exception(exc)

        if self._loop.is_closed():
            raise DeskClosed("the desk has stopped")
        self.call_soon(run)
        return result.result(timeout)

    # --- wiring ------------------------------------------------------------

    def start(self) -> None:
        """Start the agent with this desk as its listener."""
        self.agent.start(self.on_agent_event, lambda: next(self.ids))

    def stop(self) -> None:
        """Stop the agent, complete the recordings' files, end the desk loop. Not from a listener."""
        self.agent.stop()
        self.recording_files.close()  # the agent released every recorder: complete their sidecars
        self.close()

    def close(self) -> None:
        """End the desk loop (its running actions are cancelled)."""
        if self._loop.is_closed() or not self._thread.is_alive():
            return

        def end() -> None:
            for task in list(self._tasks):
                task.cancel()
            self._loop.call_soon(self._loop.stop)

        self.call_soon(end)
        if not self.on_loop():
            self._thread.join(5.0)

    def subscribe(self, listener: Callable[[ev.Event], None]) -> Callable[[], None]:
        """Call `listener` with every desk event; returns the unsubscribe function.

        Listeners run on the desk thread and must not block: a front-end hands
        the event over to its own thread.
        """
        with self._listeners_lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._listeners_lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _emit(self, event: ev.Event) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a broken front-end must not break the desk
                log.exception("listener %r failed on %s", listener, event.kind)

    # --- commands: any thread -> the loop ----------------------------------

    def submit(self, name: str, /, **args: Any) -> "Future[Outcome]":
        """Start a command from the table on the loop; the Future holds its reply (never blocks).

        The arguments are checked against the command table first; a reply that
        is `pending` has the final outcome in its `done` Future.
        """
        reply: Future[Outcome] = Future()
        checked = check_args(name, args)
        command = COMMANDS.get(name)
        if isinstance(checked, tuple):
            code, params = checked
            reply.set_result(Outcome(False, i18n.message(code, params), code=code, params=params, action=name))
            return reply
        assert command is not None
        action = command.action_for(checked)
        method = getattr(self, f"_{name}", None)
        if method is None:
            params = {"command": name}
            reply.set_result(Outcome(False, i18n.message("not_available", params), code="not_available",
                                     params=params, action=action))
            return reply
        cmd = _Command(next(self._command_ids), action)
        if self._loop.is_closed():
            cmd.reply.set_exception(DeskClosed("the desk has stopped"))
            return cmd.reply
        self.call_soon(self._begin, cmd, method, checked)
        return cmd.reply

    def run(self, name: str, /, **args: Any) -> Outcome:
        """Submit a command and return its reply (within milliseconds; never the SIP outcome)."""
        if self.on_loop():
            raise RuntimeError(f"desk command {name!r} from the desk thread (a listener must not command)")
        try:
            return self.submit(name, **args).result(REPLY_TIMEOUT)
        except (TimeoutError, DeskClosed) as exc:
            code = "desk_stopped" if isinstance(exc, DeskClosed) else "desk_busy"
            return Outcome(False, i18n.message(code, {"seconds": REPLY_TIMEOUT}), code=code,
                           params={"seconds": REPLY_TIMEOUT}, action=name)

    def _begin(self, cmd: _Command, method: Callable[..., Awaitable[Outcome]], kwargs: dict[str, Any]) -> None:
        """On the loop: run the command as a task that knows its command (for replies and refusals)."""
        context = contextvars.copy_context()
        context.run(_CURRENT.set, cmd)
        try:
            coro = method(**kwargs)
        except Exception as exc:  # arguments the table let through but the method does not take: a bug
            log.exception("desk failed on %s %s", cmd.action, kwargs)
            self._finish(cmd, context.run(self._internal_error, cmd.action, exc))
            return
        task = self._loop.create_task(self._drive(cmd, coro), context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drive(self, cmd: _Command, coro: Awaitable[Outcome]) -> None:
        try:
            out = await coro
        except asyncio.CancelledError:
            out = Outcome(False, i18n.message("desk_stopped"), code="desk_stopped", action=cmd.action)
            self._finish(cmd, out)
            raise
        except Exception as exc:
            log.exception("desk failed on %s", cmd.action)
            out = self._internal_error(cmd.action, exc)
        self._finish(cmd, out)

    def _internal_error(self, action: str, exc: Exception) -> Outcome:
        return self._refuse(action, refusal("internal_error", error=f"{type(exc).__name__}: {exc}"))

    def _finish(self, cmd: _Command, out: Outcome) -> None:
        out = Outcome(out.ok, out.reason, dict(out.data), out.code, out.params,
                      out.action or cmd.action, out.row, cmd.id)
        if not cmd.done.done():
            cmd.done.set_result(out)
        if not cmd.reply.done():
            cmd.reply.set_result(out)  # finished in its first step: the reply is the outcome
        elif out.ok:
            self._emit(ev.ActionDone(out.action, cmd.id, out.row if out.row is not None else out.data.get("row"),
                                     out.data))
        self._update_available()

    def _step(self, **data: Any) -> None:
        """What the running command's reply says while it goes on (its row, say)."""
        cmd = _CURRENT.get()
        if cmd is not None:
            cmd.data.update(data)

    def _accept(self) -> None:
        """The running command is about to wait: reply now (accepted, still running)."""
        cmd = _CURRENT.get()
        if cmd is not None:
            cmd.accept()
            self._update_available()

    def _command_id(self) -> int | None:
        cmd = _CURRENT.get()
        return None if cmd is None else cmd.id

    # --- refusals and notices ----------------------------------------------

    def _refuse(self, action: str, why: Refusal, command: int | None = None) -> Outcome:
        message = why.message(action)
        log.info("refused %s: %s", action, message,
                 extra={"ACTION": action, "ROW": why.row, "OUTCOME": "refused", "CODE": why.code})
        self._notice(action, message, why.row, why.code, why.params)
        self._emit(ev.ActionFailed(action, message, why.row, why.code, why.params, command or self._command_id()))
        return Outcome(False, message, code=why.code, params=why.params, action=action, row=why.row)

    def _notice(self, action: str, message: str, row_id: int | None = None, code: str = "",
                params: dict[str, Any] | None = None) -> None:
        self.notices.append({"time": round(time.time(), 3), "action": action, "reason": message, "row": row_id,
                             "code": code, "params": params or {}})

    def _alert(self, code: str, **params: Any) -> None:
        message = i18n.message(code, params)
        log.warning("alert: %s", message, extra={"EVENT": "alert", "ROW": params.get("row"), "CODE": code})
        self._notice("alert", message, params.get("row"), code, params)
        self._emit(ev.Alert(message, code, params))

    def _set_note(self, row: Row, code: str, /, **params: Any) -> None:
        row.note = i18n.message(code, params)
        row.note_key = {"code": code, "params": params}

    def _changed(self, row: Row) -> None:
        self._notify()
        self._emit(ev.RowChanged(self._row_json(row)))
        self._update_available()

    def _row_json(self, row: Row) -> dict[str, Any]:
        """A row as the front-ends see it: Row.as_json() and what only the desk knows of it."""
        data = row.as_json()
        data["conference"] = row.id in self.conference_rows
        data["consult_for"] = self.consults.get(row.id)
        labels = {line.id: line.label for line in self.profile.lines}
        data["line_label"] = labels.get(row.line) or row.line
        return data

    def _notify(self) -> None:
        if self._change is not None and not self._change.done():
            self._change.set_result(None)

    async def _until(self, pred: Callable[[], bool], timeout: float) -> bool:
        """Wait (letting everything else run) until pred() holds after some change; False on timeout."""
        self._accept()
        deadline = self._loop.time() + timeout
        while not pred():
            left = deadline - self._loop.time()
            if left <= 0:
                return False
            if self._change is None or self._change.done():
                self._change = self._loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._change), left)
            except TimeoutError:
                return pred()
        return True

    async def _wait(self, action: str, fut: "Future[Any]", row_id: int | None = None,
                    gone_ok: bool = False) -> Outcome | None:
        """Wait for the agent (the loop goes on meanwhile); None when it succeeded.

        `gone_ok`: a call the agent no longer has is not a failure of this step
        (holding the other calls before a dial): its row goes, nothing is refused.
        """
        self._accept()
        wrapped = asyncio.wrap_future(fut, loop=self._loop)
        wrapped.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, never logged
        done, _ = await asyncio.wait({wrapped}, timeout=AGENT_TIMEOUT)
        if not done:
            if fut.cancel():  # never done later, after the operator was told it failed
                return self._refuse(action, refusal("agent_timeout", row_id))
            return self._refuse(action, refusal("agent_slow", row_id))
        if wrapped.cancelled():
            return self._refuse(action, refusal("agent_timeout", row_id))
        exc = wrapped.exception()
        if exc is None:
            return None
        if isinstance(exc, CallGone):
            # The SIP side is done with that call although no end reached us:
            # drop the row, or it would be a ghost that refuses every action.
            self._drop(exc.call, "the call had already ended")
            if gone_ok:
                return Outcome(False, str(exc), {"gone": exc.call}, code="call_ended")
            return self._refuse(action, refusal("call_ended", row_id, row=exc.call))
        if isinstance(exc, AgentError):
            return self._refuse(action, Refusal(exc.code, dict(exc.params), row_id))
        log.error("%s: agent failed: %r", action, exc)  # the agent must never leave the desk half done
        return self._refuse(action, refusal("agent_internal", row_id, error=str(exc)))

    # --- reading -----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole panel as JSON: parameters, lines, rows, selection, what can be done now."""
        return self.on_desk(self._snapshot)

    def _snapshot(self) -> dict[str, Any]:
        self._refresh_available()  # a change of this very turn is in it
        labels = {line.id: line.label for line in self.profile.lines}
        return {
            "line": self.line,
            "number": self.number,
            "route": self.route,
            "lines": [
                {"id": s.line, "registered": s.registered, "code": s.code, "reason": s.reason,
                 "label": labels.get(s.line, s.line)}
                for s in self.registered.values()
            ],
            "routes": [r.id for r in self.profile.routes],
            "labels": {"lines": labels, "routes": {r.id: r.label for r in self.profile.routes}},
            "calls": [self._row_json(row) for row in self.rows.values()],
            "selection": list(self.selection),
            "muted": self.muted,
            "dnd": self.dnd_on,
            "missed_unseen": self.missed_unseen,
            "available": dict(self.available),
            "notices": list(self.notices),
        }

    async def _calls(self) -> Outcome:
        return Outcome(True, data=self._snapshot())

    def selected(self) -> list[Row]:
        """The rows an action applies to: the selection, or the only call there is."""
        rows = [self.rows[i] for i in self.selection if i in self.rows]
        # The only call is obvious — unless the selected call has just ended:
        # then a press meant for it must not land on the call that is left.
        if not rows and len(self.rows) == 1 and not self.selection_lost:
            rows = list(self.rows.values())
        return rows

    def _no_row(self, row: int) -> Refusal:
        if not self.rows:
            return refusal("no_row_empty", row=row)
        return refusal("no_row", row=row, rows=", ".join(str(r) for r in self.rows))

    def _one(self) -> Row | Refusal:
        rows = self.selected()
        if not rows and self.selection_lost:
            return refusal("selection_ended")
        if not rows:
            return refusal("no_selection")
        if len(rows) > 1:
            return refusal("several_selected", count=len(rows))
        return rows[0]

    # --- what can be done now ----------------------------------------------

    def _update_available(self) -> None:
        """Something changed: recompute the available actions once this turn of the loop is done.

        Not at once: a command's own step (and its request to the agent) goes first,
        and the several changes of one step cost one pass.
        """
        if not self._available_due:
            self._available_due = True
            self._loop.call_soon(self._refresh_available)

    def _refresh_available(self) -> None:
        """Recompute which actions can act on the current selection; an event when that changed."""
        if not self._available_due:
            return
        self._available_due = False
        checks = self._preconditions()
        now: dict[str, dict[str, Any] | None] = {}
        for action in ACTIONS:
            check = checks.get(action)
            why = _why(check()) if check is not None else None  # no check: it can always act
            now[action] = None if why is None else why.as_json(action)
        if now != self.available:
            self.available = now
            self._emit(ev.AvailabilityChanged(dict(now)))
        self._update_tone()

    def _update_tone(self) -> None:
        """Tell the agent which tone to play when the table says another one (kiosk.ringer)."""
        quiet = [rid for rid, row in self.rows.items() if row.auto_answer]
        tone = None if self.dnd_on and not self.rows else wanted_tone(self.rows.values(), quiet)
        if tone == self.tone:
            return
        play = getattr(self.agent, "tone", None)
        if play is None:
            return
        self.tone = tone
        log.debug("tone: %s", tone or "off")
        try:
            fut = play(tone)
        except Exception:  # a tone that cannot play must never stop the desk
            log.exception("agent: tone %s failed", tone)
            return
        if tone is not None and isinstance(fut, Future):
            fut.add_done_callback(lambda f: self.call_soon(self._tone_done, tone, f))

    def _tone_done(self, tone: str, fut: "Future[Any]") -> None:
        """A ring that could not play is said (once a minute at most), never silently skipped."""
        exc = fut.exception()
        if exc is None:
            return
        if self.tone == tone:
            self.tone = None  # asked again at the next change
        now = time.monotonic()
        if now - self._tone_alerted < 60.0:
            return
        self._tone_alerted = now
        self._alert("tone_failed", tone=tone, error=str(exc))

    def _preconditions(self) -> dict[str, Callable[[], Any]]:
        """Action id -> the precondition its command checks first (a Refusal, or what it acts on)."""
        return {
            "dial": lambda: self._can_line(self._dial_line()[0]),
            "pickup": lambda: self._can_line(self.line),
            "answer": self._pre_answer,
            "hangup": self._one,
            "hold": self._pre_hold,
            "connect": self._pre_connect,
            "transfer_quick": self._pre_quick,
            "transfer_consult": self._pre_consult,
            "transfer_confirm": self._pre_confirm,
            "transfer_next": lambda: self._pre_confirm() if self._next_mode() == "confirm" else self._pre_consult(),
            "conference": lambda: self._pre_conference(False),
            "record_start": lambda: self._pre_record("start"),
            "record_stop": lambda: self._pre_record("stop"),
            "record_toggle": lambda: self._pre_record("toggle"),
            "dtmf": self._pre_dtmf,
            "callback": lambda: self._can_line(self.line) if self.call_history is not None else refusal("history_off"),
            "history_seen": lambda: None if self.call_history is not None else refusal("history_off"),
        }

    def _can_line(self, line_id: str, row: int | None = None) -> Refusal | None:
        if self.pending_lines.get(line_id) == "removed":
            return refusal("line_being_removed", row, line=line_id)
        state = self.registered.get(line_id)
        if state is not None and not state.registered:
            reason: Any = state.reason
            if state.code == 0 and reason == NOT_YET:
                reason = {"code": "not_registered_yet", "params": {}}
            return refusal("line_not_registered", row, line=line_id, reason=reason)
        if len(self.rows) >= MAX_CALLS:
            return refusal("too_many_calls", row, max=MAX_CALLS)
        return None

    def _dial_line(self) -> tuple[str, str | None]:
        route_id = self.route or None
        return (self.profile.route(route_id).line if route_id else self.line), route_id

    def _pre_dtmf(self) -> Row | Refusal:
        """The call the keypad's tones go to: the panel's one call, in conversation with the operator."""
        row = self._one()
        if isinstance(row, Refusal):
            return row
        if not in_conversation(row) or row.id in self.conference_rows or row.remote_hold:
            return refusal("not_in_conversation", row.id, row=row.id, state=row.state)
        return row

    def _pre_answer(self) -> Row | Refusal:
        row = self._one()
        if isinstance(row, Refusal):
            return row
        if row.direction != "in" or row.state != "ringing":
            return refusal("not_ringing", row.id, row=row.id, state=row.state)
        return row

    def _pre_hold(self) -> Row | Refusal:
        row = self._one()
        if isinstance(row, Refusal):
            return row
        if row.local_hold:
            return refusal("already_held", row.id, row=row.id)
        if not row.up:
            return refusal("hold_needs_talk", row.id, row=row.id, state=row.state)
        return row

    def _pre_connect(self) -> Row | Refusal:
        row = self._one()
        if isinstance(row, Refusal):
            return row
        if not row.local_hold:
            return refusal("not_held", row.id, row=row.id)
        return row

    def _pre_quick(self) -> Row | Refusal:
        row = self._one()
        if isinstance(row, Refusal):
            return row
        if not row.up:
            return refusal("transfer_needs_answer", row.id, row=row.id, state=row.state)
        if row.id in self.transfers:  # a second REFER would have the caller dial twice
            return refusal("already_transferring", row.id, row=row.id, note=row.note_key or row.note)
        return row

    def _pre_consult(self) -> Row | Refusal:
        row = self._one()
        if isinstance(row, Refusal):
            return row
        if not row.up:
            return refusal("consult_needs_answer", row.id, row=row.id, state=row.state)
        # What would refuse the dial must not first put the caller on hold.
        return self._can_line(row.line, row.id) or row

    def _consult_pair(self) -> tuple[int, int] | Refusal:
        """(held row, consult row) for the selection, or the only pair there is."""
        pairs = list(self.consults.items())
        chosen = {r.id for r in self.selected()}
        for consult, held in pairs:
            if consult in chosen or held in chosen:
                return held, consult
        explicit = [r for r in self.selection if r in self.rows]
        if len(pairs) == 1 and not explicit:
            return pairs[0][1], pairs[0][0]
        if explicit and pairs:
            listed = ", ".join(f"{h}->{c}" for c, h in pairs)
            return refusal("not_in_consultation", explicit[0], row=explicit[0], pairs=listed)
        return refusal("no_consultation")

    def _pre_confirm(self) -> tuple[Row, Row] | Refusal:
        pair = self._consult_pair()
        if isinstance(pair, Refusal):
            return pair
        held, consult = pair
        crow, hrow = self.rows.get(consult), self.rows.get(held)
        if crow is None or hrow is None:
            return refusal("consultation_ended")
        if not crow.up:
            return refusal("consult_not_answered", consult, row=consult, state=crow.state)
        if held in self.transfers:
            return refusal("transfer_under_way", held, row=held)
        return hrow, crow

    def _next_mode(self) -> str:
        """`transfer next`: confirm the consultation the selected call is in, else consult from it."""
        chosen = {r.id for r in self.selected()}
        if any(c in chosen or h in chosen for c, h in self.consults.items()):
            return "confirm"
        return "consult"

    def _pre_conference(self, number_given: bool) -> tuple[str, Any] | Refusal:
        """Which conference step a press means now: ("join", ids), ("pending", (b, c)) or ("dial", row)."""
        rows = self.selected()
        if len(rows) > 1:
            return self._pre_join([r.id for r in rows])
        pending = self.pending_conference
        crow = self.rows.get(pending[1]) if pending else None
        if pending and crow is not None and not number_given and (not rows or rows[0].id in pending):
            if not crow.up:
                return refusal("conference_not_answered", crow.id, row=crow.id, state=crow.state)
            return "pending", pending
        if not rows:
            return refusal("no_selection")
        row = rows[0]
        if not row.up or row.local_hold:
            return refusal("conference_needs_talk", row.id, row=row.id, state=row.state)
        # Refuse before holding anyone: a refused next party must leave the calls as they were.
        return self._can_line(row.line, row.id) or ("dial", row)

    def _pre_join(self, ids: list[int]) -> tuple[str, Any] | Refusal:
        for rid in ids:
            row = self.rows.get(rid)
            if row is None:
                return self._no_row(rid)
            if not row.up:
                return refusal("join_needs_answer", rid, row=rid, state=row.state)
        # One operator, one headset: a join always adds to the unit's one
        # conference, never starts a second one beside it.
        members = set(ids) | {r for r in self.conference_rows if r in self.rows}
        # "The last party need not be held": whoever the operator is talking to joins too.
        members |= {r.id for r in self.rows.values() if r.up and not r.local_hold}
        if len(members) > MAX_CALLS:
            return refusal("conference_full", max=MAX_CALLS)
        return "join", sorted(members)

    def _pre_record(self, action: str) -> Row | Refusal:
        row = self._one()
        if isinstance(row, Refusal):
            return row
        if action == "toggle":
            action = "stop" if row.recording else "start"
        if action == "stop":
            if self.profile.recording.always:
                return refusal("record_always_on", row.id)
            if not row.recording:
                return refusal("not_recording", row.id, row=row.id)
            return row
        if row.recording:
            return refusal("already_recording", row.id, row=row.id)
        if not row.up:
            return refusal("record_needs_answer", row.id, row=row.id, state=row.state)
        return row

    # --- the commands (any thread): the typed methods come from CommandMethods ---

    # --- parameters (loop) -------------------------------------------------

    async def _select(self, rows: list[int] | None = None, toggle: int | None = None) -> Outcome:
        ids = list(rows or [])
        if toggle is not None:
            current = [r for r in self.selection if r in self.rows]
            ids = [r for r in current if r != toggle] if toggle in current else [*current, *ids, toggle]
        missing = [r for r in ids if r not in self.rows]
        if missing:
            return self._refuse("select", self._no_row(missing[0]))
        self.selection = list(dict.fromkeys(ids))
        self.selection_lost = False
        self.selection_implicit = False
        self._emit(ev.SelectionChanged(tuple(self.selection)))
        return Outcome(True, data={"selection": list(self.selection)})

    async def _set(self, name: str, value: str) -> Outcome:
        if name == "line":
            ids = self._usable_lines()
            if value not in ids:
                return self._refuse("set", refusal("unknown_line", value=value, lines=", ".join(ids)))
            self.line = value
            # Line and Route never disagree: a route belongs to a line, so
            # choosing another line chooses that line's first route (or none).
            if self.route and self.profile.route(self.route).line != value:
                self.route = next((r.id for r in self.profile.routes if r.line == value), "")
        elif name == "route":
            ids = [route.id for route in self.profile.routes]
            if value not in ids:
                return self._refuse("set", refusal("unknown_route", value=value, routes=", ".join(ids) or "none"))
            self.route = value
            self.line = self.profile.route(value).line
        elif name == "number":
            self.number = value.strip()
        else:
            return self._refuse("set", refusal("unknown_parameter", name=name))
        self._params_changed()
        return Outcome(True, data={"line": self.line, "number": self.number, "route": self.route})

    async def _key(self, key: str) -> Outcome:
        """A keypad key: the Number field's, or a tone to the call in conversation (a desk phone's keypad)."""
        if len(key) == 1 and key in DTMF_CHARS:
            target = self._pre_dtmf()
            if not isinstance(target, Refusal):
                return await self._send_dtmf("key", target, key)
            one = self._one()
            if isinstance(one, Row) and in_conversation(one):
                # Held by the far end, or a conference: the operator is in a call, so a key is meant
                # as a tone, and must neither vanish nor collect in Number (it may be a PIN).
                return self._refuse("key", target)
        if key == "delete":
            self.number = self.number[:-1]
        elif key == "clear":
            self.number = ""
        elif len(key) == 1 and key in DIAL_CHARS:
            self.number += key
        else:
            return self._refuse("key", refusal("unknown_key", key=key[:20]))
        self._params_changed()
        return Outcome(True, data={"number": self.number})

    async def _dtmf(self, digits: str) -> Outcome:
        """Send DTMF digits to the selected call in conversation (`kiosk ctl dtmf`)."""
        wrong = sorted({c for c in digits.upper() if c not in DTMF_CHARS})
        if not digits or wrong or len(digits) > 64:
            # Neither the digits nor their count beyond what is wrong: they may be a PIN.
            return self._refuse("dtmf", refusal("bad_dtmf", wrong="".join(wrong)[:10] or "nothing",
                                                count=len(digits)))
        target = self._pre_dtmf()
        if isinstance(target, Refusal):
            return self._refuse("dtmf", target)
        return await self._send_dtmf("dtmf", target, digits.upper())

    async def _send_dtmf(self, action: str, row: Row, digits: str) -> Outcome:
        send = getattr(self.agent, "dtmf", None)
        if send is None:
            return self._refuse(action, refusal("not_available", command="dtmf"))
        try:
            method = self.profile.line(row.line).dtmf
        except KeyError:
            method = "rfc4733"
        self._step(row=row.id)
        failed = await self._wait(action, send(row.id, digits, method), row.id)
        if failed:
            return failed
        log.info("row %d: DTMF sent (%d digits, %s)", row.id, len(digits), method, extra=_fields(row, action))
        return Outcome(True, data={"row": row.id, "tones": len(digits), "method": method})

    # --- do not disturb, history, directory (loop) -------------------------

    async def _dnd(self, state: str = "toggle") -> Outcome:
        set_dnd = getattr(self.agent, "set_dnd", None)
        if set_dnd is None:
            return self._refuse("dnd", refusal("not_available", command="dnd"))
        # One change at a time: two quick presses are on, then off, never on twice.
        async with self._dnd_lock:
            on = (not self.dnd_on) if state == "toggle" else state == "on"
            if on != self.dnd_on:
                failed = await self._wait("dnd", set_dnd(self.profile.dnd.code if on else None))
                if failed:
                    return failed
                self.dnd_on = on
                log.info("do not disturb %s", "on" if on else "off", extra={"ACTION": "dnd", "EVENT": "dnd"})
                self._emit(ev.DndChanged(on))
                self._update_available()
                if self.dnd_file is not None:  # one writer, in order: the last press is what a restart finds
                    path, text = self.dnd_file, ("on\n" if on else "off\n")
                    self._dnd_writer.submit(_keep_dnd, path, text, self.history_problem)
        return Outcome(True, data={"dnd": self.dnd_on, "code": self.profile.dnd.code if self.dnd_on else None})

    def preset_dnd(self) -> None:
        """Before the start: DND is on as the unit was left, so that not even the first call after a
        restart rings (the registrar may still route calls to the old registration)."""
        self.dnd_on = True
        if hasattr(self.agent, "dnd"):
            self.agent.dnd = self.profile.dnd.code  # read by the agent thread from its first INVITE

    def history_problem(self, code: str, params: dict[str, Any]) -> None:
        """kiosk.history's writer could not write (any thread): an alert the operator and the log see."""
        if self._loop.is_closed():
            return
        self.call_soon(lambda: self._alert(code, **params))


    async def _history(self, missed: bool = False, limit: int | None = None, search: str | None = None) -> Outcome:
        history = self.call_history
        if history is None:
            return self._refuse("history", refusal("history_off"))
        count = max(1, min(limit or HISTORY_LIMIT, HISTORY_MAX))
        try:
            calls = await self._loop.run_in_executor(
                None, lambda: history.query(missed=missed, limit=count, search=search or ""))
        except Exception as exc:
            log.warning("history: cannot read: %s", exc)
            return self._refuse("history", refusal("history_unreadable", error=str(exc)))
        total = await self._loop.run_in_executor(
            None, lambda: history.count(missed=missed, search=search or "")) if hasattr(history, "count") else None
        return Outcome(True, data={"calls": calls, "missed_unseen": self.missed_unseen, "total": total},
                       action="history")

    async def _history_seen(self) -> Outcome:
        if self.call_history is None:
            return self._refuse("history_seen", refusal("history_off"))
        self.call_history.mark_seen()
        self.missed_unseen = 0
        self._emit(ev.HistoryChanged({}, 0))
        return Outcome(True, data={"missed_unseen": 0})

    async def _callback(self, entry: int) -> Outcome:
        """Call the party of a history entry again, on its line (and route, for a call we placed)."""
        action = "callback"
        history = self.call_history
        if history is None:
            return self._refuse(action, refusal("history_off"))
        try:
            found = await self._loop.run_in_executor(None, history.get, entry)
        except Exception as exc:
            return self._refuse(action, refusal("history_unreadable", error=str(exc)))
        if not found:
            return self._refuse(action, refusal("no_history_entry", entry=entry))
        target = self._callback_target(found)
        if isinstance(target, Refusal):
            return self._refuse(action, target)
        number, line, route = target
        out = await self._dial_on(action, number, line, route)
        if out.ok and found.get("outcome") == "missed" and not found.get("seen"):
            self.calllog.of(out.data["row"]).callback_of = entry  # seen once the customer is reached
        return out

    def _callback_target(self, found: dict[str, Any]) -> tuple[str, str, str | None] | Refusal:
        """(number or URI, line, route) that reach a history entry's party again, or why nothing can.

        A call we placed goes out as it went (the number as typed, its route); a caller is called at
        their own address when it is not our server's (another company's domain), and not at all
        when they withheld it. A route that is gone is not replaced by a guess: its prefix may be
        what reaches the outside world."""
        entry = found.get("id")
        number = str(found.get("number") or "")
        who = party(str(found.get("remote") or ""))
        if not number or who.number.lower() in ("anonymous", "unknown", "restricted") \
                or who.host.lower().endswith(".invalid"):
            return refusal("no_number_to_call", entry=entry)
        lines = {line.id: line for line in self.profile.lines}
        route = found.get("route") if found.get("direction") == "out" else None
        if route and route not in [r.id for r in self.profile.routes]:
            return refusal("callback_route_gone", entry=entry, route=route)
        line_id = self.profile.route(route).line if route else found.get("line")
        if line_id not in lines:
            line_id = self.line  # the line is gone from the profile: the one chosen now
        if found.get("direction") == "in" and who.host:
            line = lines.get(line_id) or self.profile.lines[0]
            ours = {line.domain.lower()} | {_host_of(u) for u in (line.registrar, line.proxy) if u}
            if who.host.lower().split(":")[0] not in ours:
                number = f"sip:{who.number}@{who.host}"  # their own domain, not a namesake of ours
        return number, line_id, route

    async def _directory(self, query: str = "", limit: int | None = None) -> Outcome:
        directory = self.contacts
        if directory is None:
            problem = {"source": "directory", "code": "directory_off",
                       "message": i18n.message("directory_off", {})}
            return Outcome(True, data={"contacts": [], "errors": [problem]}, action="directory")
        count = max(1, min(limit or DIRECTORY_LIMIT, 200))
        found, problems = await self._loop.run_in_executor(None, directory.search, query, count)
        return Outcome(True, data={"contacts": [c.to_json() for c in found],
                                   "errors": [p.to_json() for p in problems]}, action="directory")

    # --- the history of each call (loop; kiosk.history writes on its own thread) ----

    def _history_begin(self, row: Row) -> None:
        if self.call_history is None:
            return
        who = row.as_json()
        try:
            self.call_history.begin(row.id, direction=row.direction, line=row.line, route=row.route,
                               remote=row.remote, name=who["name"],
                               number=row.dialled or who["number"], via=row.via, started=row.started)
        except Exception:
            log.exception("history: cannot note row %d", row.id)

    def _history_answered(self, row: Row) -> None:
        """What an answer teaches the history: whom a pickup reached (the dialog's To is the feature
        code, the server names the caller), and that a missed call called back is seen."""
        facts = self.calllog.of(row.id)
        if facts.pickup:
            who = party(row.remote)
            row.dialled = ""
            self.call_history.update(row.id, remote=row.remote, number=who.number, name=row.as_json()["name"])
        if facts.callback_of is not None:
            self.call_history.mark_seen(facts.callback_of)
            # (the history's own count follows once its writer has read the entry back from the file)
            self.missed_unseen = max(0, self.missed_unseen - 1)
            self._emit(ev.HistoryChanged({}, self.missed_unseen))
            facts.callback_of = None

    def _history_end(self, row: Row, reason: str) -> None:
        facts = self.calllog.pop(row.id)
        if self.call_history is None:
            return
        what = call_outcome(row, facts)
        ended = time.time()
        recording = Path(row.recording_path).name if row.recording_path else ""
        try:
            if facts.transferred_to or facts.conference:
                self.call_history.update(row.id, transferred_to=facts.transferred_to, conference=facts.conference)
            entry_id = self.call_history.end(row.id, outcome=what, reason=reason, ended=ended, recording=recording)
            self.missed_unseen = self.call_history.missed_unseen()
        except Exception:
            log.exception("history: cannot end row %d", row.id)
            return
        who = row.as_json()
        entry = {"id": entry_id, "direction": row.direction, "line": row.line, "route": row.route,
                 "remote": row.remote, "name": who["name"], "number": row.dialled or who["number"], "via": row.via,
                 "started": row.started, "answered": row.answered, "ended": ended,
                 "duration": round(ended - row.answered, 1) if row.answered else 0.0, "outcome": what,
                 "reason": reason, "recording": recording, "conference": facts.conference,
                 "transferred_to": facts.transferred_to, "seen": what != "missed"}
        self._emit(ev.HistoryChanged(entry, self.missed_unseen))

    def _history_refused(self, event: ev.IncomingCall) -> None:
        """A call refused by do-not-disturb: it never was a row, but it is in the history."""
        log.info("call from %s on line %s refused (%d): do not disturb", event.remote, event.line, event.refused,
                 extra={"EVENT": "dnd", "LINE": event.line, "SIP_STATUS": event.refused})
        if self.call_history is None:
            return
        who = party(event.remote)
        name = self._directory_name(who.number) or who.name
        now = time.time()
        entry = {"direction": "in", "line": event.line, "route": None, "remote": event.remote, "name": name,
                 "number": who.number, "via": event.via, "started": now, "answered": None, "ended": now,
                 "outcome": "dnd", "reason": f"{event.refused} do not disturb", "recording": ""}
        try:
            entry_id = self.call_history.record(**entry)
        except Exception:
            log.exception("history: cannot note a refused call")
            return
        self._emit(ev.HistoryChanged({**entry, "id": entry_id, "duration": 0.0, "conference": False,
                                      "transferred_to": "", "seen": True}, self.missed_unseen))

    def _directory_name(self, number: str) -> str:
        """The directory's name for a number ("" when none); never waits for the network."""
        if self.contacts is None or not number:
            return ""
        try:
            return self.contacts.name_for(number) or ""
        except Exception:
            log.exception("directory: name_for failed")
            return ""

    def _name_from_ldap(self, row: Row) -> None:
        """A caller the file does not know: ask the company directory in the background; its name
        shows on the row (and in the history) when exactly one person there has that very number."""
        contacts = self.contacts
        number = party(row.remote).number
        wanted = "".join(c for c in number if c.isdigit())
        if contacts is None or not getattr(contacts.settings, "ldap", None) or len(wanted) < 3:
            return

        async def look() -> None:
            try:
                found, _problems = await self._loop.run_in_executor(None, contacts.search, number, LOOKUP_LIMIT)
            except Exception:
                log.exception("directory: looking up %s failed", number)
                return
            names = {c.name for c in found
                     if any("".join(ch for ch in n if ch.isdigit()) == wanted for n in c.numbers)}
            live = self.rows.get(row.id)
            # A full page may have been cut short: someone else with that number may be beyond it.
            if len(names) != 1 or len(found) >= LOOKUP_LIMIT or live is None or live.directory_name:
                return
            live.directory_name = names.pop()
            self._changed(live)
            if self.call_history is not None:
                self.call_history.update(row.id, name=live.directory_name)

        task = self._loop.create_task(look())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- auto-answer (loop) --------------------------------------------------

    def _auto_answer_due(self, row: Row, event: ev.IncomingCall) -> float | None:
        """Seconds until this ringing call answers itself, or None when it rings for the operator."""
        try:
            line = self.profile.line(row.line)
        except KeyError:
            return None
        if not (line.auto_answer or event.intercom):
            return None
        if self._operator_busy(row.id):
            return None  # the operator is busy with a call: this one rings (call waiting) instead
        ms = event.answer_after_ms if event.intercom and event.answer_after_ms is not None \
            else line.auto_answer_delay_ms
        return max(0, ms) / 1000.0

    def _operator_busy(self, row_id: int) -> bool:
        """Whether a call other than `row_id` has the operator: answered, placed by them (dialling or
        ringing out), being answered, or about to answer itself. Then a call must not answer itself
        on top of it: it rings, with the call-waiting tone."""
        return any(r.up or r.direction == "out" or r.auto_answer or r.id in self._answering
                   for r in self.rows.values() if r.id != row_id)

    def _auto_answer_now(self, row_id: int) -> None:
        self._auto_answers.pop(row_id, None)
        row = self.rows.get(row_id)
        if row is None or row.state != "ringing":
            return
        if self._operator_busy(row_id):
            self._ring_for_operator(row_id)  # another call was taken meanwhile: this one rings instead
            return
        beep = getattr(self.agent, "beep", None)
        if beep is not None:
            beep()
        log.info("row %d: answered by itself (%s)", row_id, "intercom" if row.intercom else "auto-answer",
                 extra=_fields(row, event="auto_answer"))

        def answered(reply: Future[Outcome]) -> None:
            out = reply.result() if reply.exception() is None else None
            if out is None or not out.ok:
                self.call_soon(self._ring_for_operator, row_id)
            elif out.done is not None:
                out.done.add_done_callback(
                    lambda f: None if f.exception() is None and f.result().ok
                    else self.call_soon(self._ring_for_operator, row_id))

        self.submit("answer", row=row_id).add_done_callback(answered)

    def _ring_for_operator(self, row_id: int) -> None:
        """A call that was to answer itself could not: it rings for the operator like any other."""
        row = self.rows.get(row_id)
        if row is not None and row.auto_answer and row.answered is None:
            row.auto_answer = False
            self._changed(row)

    def _params_changed(self) -> None:
        self._emit(ev.ParamsChanged(self.line, self.number, self.route))
        self._update_available()

    def _number(self, action: str, number: str | None) -> str | Outcome:
        """The number given with the action, else the Number field, else ask for it."""
        given = (number or "").strip()
        if given:
            return self._dialable(action, given)
        if not self.number:
            self._emit(ev.NumberRequired(action))
            return self._refuse(action, refusal("number_required"))
        return _FromField(self.number)

    def _dialable(self, action: str, given: str) -> str | Outcome:
        """A number as a directory or a CTI client writes it ("+7 (912) 555-01-02") as it is dialled
        ("+79125550102"); a SIP URI or user@host as it is. Anything else with spaces or brackets in it
        could only become a malformed URI: refused, saying what a number may hold."""
        if given.startswith(("sip:", "sips:")) or "@" in given:
            return given if not _URI_BREAKERS.search(given) else self._refuse(
                action, refusal("bad_number", number=given[:40]))
        compact = _SEPARATORS.sub("", given)
        if _PHONE.fullmatch(compact):
            return compact
        if _URI_BREAKERS.search(given):
            return self._refuse(action, refusal("bad_number", number=given[:40]))
        return given

    def _consume(self, number: str) -> None:
        """The action that took its number from the Number field has used it: clear the field."""
        if not isinstance(number, _FromField) or self.number != number:
            return  # given with the action, or edited meanwhile: that is a new number
        self.number = ""
        self._params_changed()

    def target_uri(self, number: str, line_id: str, route_id: str | None) -> str:
        """The SIP URI a number is dialled as on a line, with the route's prefix."""
        if number.startswith(("sip:", "sips:")):
            return number
        prefix = ""
        if route_id:
            prefix = self.profile.route(route_id).prefix
        if "@" in number:
            return f"sip:{number}"
        return f"sip:{prefix}{number}@{self.profile.line(line_id).domain}"

    # --- the profile: a reload applied live (loop) ---------------------------

    def _usable_lines(self) -> list[str]:
        """The lines a new call may use: the profile's, but not one being removed."""
        return [line.id for line in self.profile.lines if self.pending_lines.get(line.id) != "removed"]

    def apply_profile(self, new: Profile) -> list[str]:
        """Put a reloaded profile in force (on the desk loop; from another thread it is run there).

        Everything is taken at once but a line that has a call and was removed or changed in
        SIP terms: it is kept as it is (with its new label) until its last call ends, then
        changed or removed (`pending_lines`). Returns what waits, in words. The caller has
        already kept the keys that need a restart as they were (kiosk.reload.in_force).
        """
        if not self.on_loop():
            return self.on_desk(self.apply_profile, new)
        self.wanted_profile = new
        waiting = self._put_in_force()
        return waiting

    def _effective(self, wanted: Profile) -> tuple[Profile, dict[str, str]]:
        """The profile that can be in force now, and the lines that wait for their calls."""
        old = self.profile
        busy = {row.line for row in self.rows.values()}
        before = {line.id: line for line in old.lines}
        wanted_ids = {line.id for line in wanted.lines}
        pending: dict[str, str] = {}
        lines = []
        for line in wanted.lines:
            prev = before.get(line.id)
            # (A new register_expires alone is the agent's to apply when the line has no call.)
            if prev is not None and line.id in busy and _line_sip(prev) != _line_sip(line):
                lines.append(dataclasses.replace(prev, label=line.label))  # as it was, but its new label
                pending[line.id] = "changed"
            else:
                lines.append(line)
        for line_id, prev in before.items():
            if line_id not in wanted_ids and line_id in busy:
                lines.append(prev)
                pending[line_id] = "removed"
        return dataclasses.replace(wanted, lines=tuple(lines)), pending

    def _put_in_force(self) -> list[str]:
        """Make the profile in force follow `wanted_profile` as far as the calls allow (loop)."""
        old = self.profile
        effective, pending = self._effective(self.wanted_profile)
        self.profile, self.pending_lines = effective, pending
        old_lines = {line.id: line for line in old.lines}
        for line in effective.lines:
            prev = old_lines.get(line.id)
            if prev is None or _line_sip(prev) != _line_sip(line):  # a new or changed account: it registers
                self.registered[line.id] = ev.LineState(line.id, False, 0, NOT_YET)
        for line_id in list(self.registered):
            if not any(line.id == line_id for line in effective.lines):
                del self.registered[line_id]
        # Line and Route: what was chosen stays, unless it is gone.
        line, route = self.line, self.route
        route_ids = [r.id for r in effective.routes]
        usable = self._usable_lines()
        if route and route not in route_ids:
            default = effective.sip.default_route
            route = default if default in route_ids else (route_ids[0] if route_ids else "")
        if route:
            line = effective.route(route).line
        elif line not in usable:
            line = usable[0] if usable else line
        if (line, route) != (self.line, self.route):
            self.line, self.route = line, route
            self._params_changed()
        for row in list(self.rows.values()):  # labels, route prefixes: every row is shown again
            self._changed(row)
        self._update_available()
        apply = getattr(self.agent, "apply_profile", None)
        if apply is not None:
            try:
                self._agent_apply = apply(effective)
            except Exception as exc:  # the agent's bug must not stop the desk's part
                log.exception("agent: apply_profile failed")
                fut: Future[Any] = Future()
                fut.set_exception(exc)
                self._agent_apply = fut
        else:
            self._agent_apply = None
        set_dnd = getattr(self.agent, "set_dnd", None)
        if self.dnd_on and set_dnd is not None and effective.dnd.code != old.dnd.code:
            set_dnd(effective.dnd.code)  # the new refusal code for calls from now on
        waiting = []
        for line_id, what in pending.items():
            calls = sorted(r.id for r in self.rows.values() if r.line == line_id)
            on = ", ".join(str(c) for c in calls)
            if what == "removed":
                waiting.append(f"line {line_id}: removed when its calls end (calls {on}); it takes no new call")
            else:
                waiting.append(f"line {line_id}: registers again with the new settings when its calls end "
                               f"(calls {on})")
        return waiting

    def agent_confirmed(self, timeout: float) -> list[str] | None:
        """What the agent still waits for after the last apply_profile (any thread but the loop);
        None when it has not answered within `timeout` or failed."""
        fut = self._agent_apply
        if fut is None:
            return []
        try:
            return list(fut.result(timeout))
        except Exception as exc:
            log.warning("agent: the new profile is not confirmed: %s", exc)
            return None

    def _settle_pending_lines(self) -> None:
        """A call ended: a line waiting for its calls to end is changed or removed now (loop)."""
        if not self.pending_lines:
            return
        busy = {row.line for row in self.rows.values()}
        ready = {line_id: what for line_id, what in self.pending_lines.items() if line_id not in busy}
        if not ready:
            return
        before = dict(self.pending_lines)
        waiting = self._put_in_force()
        done = [line_id for line_id in ready if line_id not in self.pending_lines]
        if not done:
            return
        from . import reload  # its English words for these codes, until the catalogues have them

        applied, alerts = [], []
        for line_id in done:
            if before[line_id] == "removed":
                applied.append(f"line {line_id} removed")
                alerts.append(reload._alert("line_removed", line=line_id))
            else:
                applied.append(f"line {line_id}: registers again with its new settings")
                alerts.append(reload._alert("line_changed", line=line_id))
        self.announce(None, alerts)
        log.info("profile: %s now that the calls have ended", "; ".join(applied))
        self._emit(ev.ProfileChanged("calls ended", tuple(applied), tuple(waiting)))

    def announce(self, event: ev.Event | None, alerts: list[ev.Alert]) -> None:
        """Tell every front-end about a reload: its alerts (kept in `notices` too), then the event (loop)."""
        for a in alerts:
            log.warning("alert: %s", a.message)
            self._notice("alert", a.message, None, a.code, dict(a.params))
            self._emit(a)
        if event is not None:
            self._emit(event)

    async def _status(self) -> Outcome:
        """The unit's health for `kiosk ctl status` (kiosk.status), put together off the loop."""
        from .status import build_status

        # Not accepted first: the reply is the status itself, within ANSWER_TIMEOUT (2 s) or so. It asks
        # the agent and walks the recordings, so not on the loop.
        data = await self._loop.run_in_executor(None, lambda: build_status(
            self, started=self.started, reloader=self.reloader, provisioner=self.provisioner))
        return Outcome(True, data=data, action="status")

    async def _reload(self) -> Outcome:
        """Read the profile file again and apply it (`kiosk ctl reload`)."""
        reloader = self.reloader
        if reloader is None:
            return self._refuse("reload", refusal("not_available", command="reload"))
        self._accept()  # reading, validating and the agent's part happen off the loop
        result = await self._loop.run_in_executor(None, lambda: reloader.reload_file("kiosk ctl reload"))
        if result.ok:
            return Outcome(True, data=result.as_json(), action="reload")
        # Already said to every front-end (an alert): the reply only carries it to the caller,
        # with every mistake on a line of its own (kiosk ctl prints them all).
        reason = result.message + "".join(f"\n  {error}" for error in result.errors)
        return Outcome(False, reason, data=result.as_json(), code=result.code,
                       params=dict(result.params), action="reload")

    # --- calls (loop) ------------------------------------------------------

    async def _dial(self, number: str | None = None) -> Outcome:
        action = "dial"
        got = self._number(action, number)
        if isinstance(got, Outcome):
            return got
        line_id, route_id = self._dial_line()
        out = await self._dial_on(action, got, line_id, route_id)
        if out.ok:
            self._consume(got)
        return out

    async def _answer(self, row: int | None = None) -> Outcome:
        """Answer the selected ringing call, or the ringing row `row` (the banner's Answer):
        the call in conversation is held first, and the answered call becomes the selected one."""
        target = self._pre_answer() if row is None else self._pre_answer_row(row)
        if isinstance(target, Refusal):
            return self._refuse("answer", target)
        self._step(row=target.id)
        self._answering.add(target.id)
        try:
            return await self._answer_row(target)
        finally:
            self._answering.discard(target.id)

    async def _answer_row(self, target: Row) -> Outcome:
        before, lost = list(self.selection), self.selection_lost
        held = await self._hold_others("answer", target.id)
        if isinstance(held, Outcome):
            return held
        log.info("row %d: answer", target.id, extra=_fields(target, "answer"))
        self._select_row(target.id)
        failed = await self._wait("answer", self.agent.answer(target.id), target.id)
        if failed:
            if self.selection == [target.id]:  # give the selection back with the held calls
                self.selection, self.selection_lost = [r for r in before if r in self.rows], lost
                self._emit(ev.SelectionChanged(tuple(self.selection)))
            await self._give_back(held)
            return failed
        return Outcome(True, data={"row": target.id})

    def _pre_answer_row(self, row_id: int) -> Row | Refusal:
        row = self.rows.get(row_id)
        if row is None:
            return self._no_row(row_id)
        if row.direction != "in" or row.state != "ringing":
            return refusal("not_ringing", row.id, row=row.id, state=row.state)
        return row

    def _select_row(self, row_id: int) -> None:
        """Make `row_id` the one selected call (a call the operator has just taken or placed)."""
        if self.selection != [row_id]:
            self.selection = [row_id]
            self._emit(ev.SelectionChanged(tuple(self.selection)))
        self.selection_lost = self.selection_implicit = False

    async def _hangup(self, row: int | None = None) -> Outcome:
        """Hang up the selected call, or the row `row` (the banner's Reject) without touching the selection."""
        target = self._one() if row is None else (self.rows.get(row) or self._no_row(row))
        if isinstance(target, Refusal):
            return self._refuse("hangup", target)
        log.info("row %d: hang up", target.id, extra=_fields(target, "hangup"))
        # Noted before the request: pjsua reports the call ended inside the hang-up itself, before
        # its answer reaches here, and the history takes the call's facts at that end.
        rejecting = target.direction == "in" and target.answered is None
        if rejecting:
            self.calllog.of(target.id).rejected = True
        self._step(row=target.id)
        failed = await self._wait("hangup", self.agent.hangup(target.id), target.id)
        if failed:
            if rejecting and target.id in self.rows:
                self.calllog.of(target.id).rejected = False  # it still rings: not rejected after all
            return failed
        return Outcome(True, data={"row": target.id})

    # --- call control (loop) -----------------------------------------------

    async def _hold(self) -> Outcome:
        row = self._pre_hold()
        if isinstance(row, Refusal):
            return self._refuse("hold", row)
        log.info("row %d: hold", row.id, extra=_fields(row, "hold"))
        self._step(row=row.id)
        return await self._wait("hold", self.agent.hold(row.id), row.id) or Outcome(True, data={"row": row.id})

    async def _connect(self) -> Outcome:
        row = self._pre_connect()
        if isinstance(row, Refusal):
            return self._refuse("connect", row)
        self._step(row=row.id)
        held = await self._hold_others("connect", row.id)
        if isinstance(held, Outcome):
            return held
        if self.pending_conference and row.id in self.pending_conference:
            self.pending_conference = None  # back to the first party: the three-party step is abandoned
        members = [r for r in self.conference_rows if r != row.id and r in self.rows and self.rows[r].local_hold]
        for rid in members:  # connecting a conference member brings the whole conference back
            failed = await self._wait("connect", self.agent.unhold(rid), rid)
            if failed:
                return failed
        log.info("row %d: connect", row.id, extra=_fields(row, "connect"))
        return await self._wait("connect", self.agent.unhold(row.id), row.id) or Outcome(True, data={"row": row.id})

    async def _hold_others(self, action: str, keep: int | None) -> list[int] | Outcome:
        """Hold every call in conversation except `keep` and its conference: never two
        conversations into one headset. The rows it held, or the refusal (having given them back)."""
        spared = self.conference_rows if keep in self.conference_rows else set()
        others = [r.id for r in self.rows.values()
                  if r.id != keep and r.id not in spared and r.up and not r.local_hold]
        held: list[int] = []
        for other in others:
            if other not in self.rows:
                continue  # ended while an earlier one was being held
            failed = await self._wait(action, self.agent.hold(other), other, gone_ok=True)
            if failed and failed.data.get("gone") == other:
                continue  # it had ended: nothing to hold
            if failed:
                await self._give_back(held)
                return failed
            held.append(other)
        return held

    async def _transfer(self, mode: str, number: str | None = None) -> Outcome:
        """Transfer the selected call: quick (blind), consult, confirm, or next."""
        if mode == "next":
            mode = self._next_mode()
        if mode == "quick":
            return await self._transfer_quick(number)
        if mode == "consult":
            return await self._transfer_consult(number)
        return await self._transfer_confirm()

    async def _transfer_quick(self, number: str | None) -> Outcome:
        action = "transfer_quick"
        row = self._pre_quick()
        if isinstance(row, Refusal):
            return self._refuse(action, row)
        got = self._number(action, number)
        if isinstance(got, Outcome):
            return got
        uri = self.target_uri(got, row.line, None)
        self.transfers[row.id] = Transfer("quick", uri, command=self._command_id())
        self._set_note(row, "note_transferring", to=uri)
        self._changed(row)
        self._step(row=row.id, to=uri)
        log.info("row %d: quick transfer to %s", row.id, uri, extra=_fields(row, action))
        failed = await self._wait(action, self.agent.transfer(row.id, uri), row.id)
        if failed:
            self.transfers.pop(row.id, None)
            if row.id in self.rows:  # not for a call that ended meanwhile
                self._set_note(row, "note_transfer_not_sent", reason={"code": failed.code, "params": failed.params})
                self._changed(row)
            return failed
        self._consume(got)
        self._arm_transfer_timeout(row.id)
        return Outcome(True, data={"row": row.id, "to": uri}, action=action)

    async def _transfer_consult(self, number: str | None) -> Outcome:
        action = "transfer_consult"
        row = self._pre_consult()
        if isinstance(row, Refusal):
            return self._refuse(action, row)
        got = self._number(action, number)
        if isinstance(got, Outcome):
            return got
        self._step(held=row.id)
        if not row.local_hold:
            failed = await self._wait(action, self.agent.hold(row.id), row.id)
            if failed:
                return failed
        if row.id not in self.rows:  # the caller hung up while being held: nobody to consult for
            return self._refuse(action, refusal("call_ended", row.id, row=row.id))
        out = await self._dial_on(action, got, row.line, None,
                                  created=lambda consult: self.consults.__setitem__(consult, row.id))
        if not out.ok:
            if row.id in self.rows:
                self._set_note(row, "note_consult_failed", reason={"code": out.code, "params": out.params})
                self._changed(row)
            return out
        self._consume(got)
        consult = out.data["row"]
        if consult not in self.rows:  # refused at once (busy, not found): nothing to consult with
            reason = self.ended_reasons.get(consult) or {"code": "no_reason", "params": {}}
            return self._refuse(action, refusal("consult_ended_at_once", row.id, row=row.id, reason=reason))
        if row.id in self.rows:
            self._set_note(row, "note_held_for_consultation", consult=consult)
            self._changed(row)
        return Outcome(True, data={"row": consult, "held": row.id}, action=action)

    async def _transfer_confirm(self) -> Outcome:
        action = "transfer_confirm"
        pair = self._pre_confirm()
        if isinstance(pair, Refusal):
            return self._refuse(action, pair)
        hrow, crow = pair
        held, consult = hrow.id, crow.id
        self.transfers[held] = Transfer("confirm", crow.remote, consult, self._command_id())
        self._set_note(hrow, "note_transferring", to=crow.remote)
        self._changed(hrow)
        self._step(row=held, to=consult)
        log.info("row %d: confirm transfer to row %d", held, consult,
                 extra={**_fields(hrow, action), "CONSULT_ROW": consult})
        failed = await self._wait(action, self.agent.transfer_replaces(held, consult), held)
        if failed:
            self.transfers.pop(held, None)
            return failed
        self._arm_transfer_timeout(held)
        return Outcome(True, data={"row": held, "to": consult}, action=action)

    def _arm_transfer_timeout(self, row_id: int, delay: float | None = None) -> None:
        """Give up waiting TRANSFER_TIMEOUT after the last NOTIFY (a ringing target keeps it alive)."""
        if delay is None:
            self.transfer_deadline[row_id] = time.monotonic() + TRANSFER_TIMEOUT
        transfer = self.transfers.get(row_id)
        self._loop.call_later(TRANSFER_TIMEOUT if delay is None else delay,
                              self._transfer_timed_out, row_id, transfer)

    def _transfer_timed_out(self, row_id: int, transfer: Transfer | None) -> None:
        if transfer is None or self.transfers.get(row_id) is not transfer:
            return
        left = self.transfer_deadline.get(row_id, 0.0) - time.monotonic()
        if left > 0.05:  # a NOTIFY came since: wait for the rest
            self._arm_transfer_timeout(row_id, left)
            return
        del self.transfers[row_id]
        self.late_transfers[row_id] = transfer  # a final NOTIFY may still come
        row = self.rows.get(row_id)
        if row:
            self._set_note(row, "note_transfer_timed_out")
            self._changed(row)
        self._refuse(f"transfer_{transfer.mode}",
                     refusal("transfer_timeout", row_id, row=row_id, seconds=round(TRANSFER_TIMEOUT)), transfer.command)

    async def _conference(self, number: str | None = None) -> Outcome:
        """Build a conference: three-party (hold and dial, then join) or join the selected rows."""
        action = "conference"
        step = self._pre_conference(bool((number or "").strip()))
        if isinstance(step, Refusal):
            return self._refuse(action, step)
        kind, what = step
        if kind == "join":
            return await self._join(action, what)
        if kind == "pending":
            self.pending_conference = None
            step = self._pre_join(list(what))
            if isinstance(step, Refusal):
                return self._refuse(action, step)
            return await self._join(action, step[1])
        row: Row = what
        got = self._number(action, number)
        if isinstance(got, Outcome):
            return got
        # Adding to a running conference holds all of it, so that no member
        # hears the next party being dialled and consulted.
        to_hold = [row.id] + sorted(
            r for r in self.conference_rows
            if r != row.id and r in self.rows and not self.rows[r].local_hold
        ) if row.id in self.conference_rows else [row.id]
        self._step(held=row.id)
        held: list[int] = []
        for rid in to_hold:
            failed = await self._wait(action, self.agent.hold(rid), rid)
            if failed:
                await self._give_back(held)
                return failed
            held.append(rid)

        def pend(c: int) -> None:
            self.pending_conference = (row.id, c)

        out = await self._dial_on(action, got, row.line, None, created=pend)
        if not out.ok:
            await self._give_back(held)
            return out
        self._consume(got)
        return Outcome(True, data={"row": out.data["row"], "held": row.id,
                                   "next": "press conference again when the party answers"})

    async def _give_back(self, ids: list[int]) -> None:
        """Take calls held for a step that then failed (consult, conference, pickup) off hold again (best effort)."""
        for rid in ids:
            if rid not in self.rows:
                continue
            wrapped = asyncio.wrap_future(self.agent.unhold(rid), loop=self._loop)
            try:
                await asyncio.wait_for(wrapped, AGENT_TIMEOUT)
            except Exception as exc:
                log.warning("row %d: could not take the call off hold again: %r", rid, exc)

    async def _join(self, action: str, members: list[int]) -> Outcome:
        held = [rid for rid in members if self.rows[rid].local_hold]
        self._step(conference=members)
        failed = await self._wait(action, self.agent.conference(members))
        if failed:
            return failed
        members = [r for r in members if r in self.rows]
        self.conference_rows = set(members)
        for rid in members:
            self.calllog.of(rid).conference = True
        if self.pending_conference and set(self.pending_conference) <= set(members):
            self.pending_conference = None  # joined by selecting the rows: a later press is a new step
        remotes = [self.rows[r].remote for r in members]
        for rid in members:  # every member's recording now holds every party
            self.recording_files.parties(rid, remotes)
        for rid in members:
            row = self.rows[rid]
            row.state = "in conference" if not row.local_hold else row.state
            self._changed(row)
        for rid in held:
            if rid not in self.rows:
                continue
            failed = await self._wait(action, self.agent.unhold(rid), rid)
            if failed:
                return failed
        log.info("conference: rows %s", members,
                 extra={"ACTION": action, "ROWS": " ".join(str(m) for m in members)})
        return Outcome(True, data={"conference": members})

    async def _pickup(self, number: str | None = None) -> Outcome:
        """Intercept the call ringing on the internal number (the server's feature code)."""
        action = "pickup"
        got = self._number(action, number)
        if isinstance(got, Outcome):
            return got
        if got.startswith(("sip:", "sips:")) or "@" in got:
            return self._refuse(action, refusal("pickup_needs_internal", number=got))
        before = list(self.selection)
        held: list[int] = []
        out = await self._dial_on(action, self.profile.pickup.prefix + got, self.line, None,
                                  note=("note_pickup_of", {"number": got}), held_out=held)
        if not out.ok:
            return out
        row_id = out.data["row"]
        self.calllog.of(row_id).pickup = True

        def answered() -> bool:
            row = self.rows.get(row_id)
            return row is None or row.state in ("talking", "held by remote")

        await self._until(answered, PICKUP_TIMEOUT)
        row = self.rows.get(row_id)
        if row is None or row.state not in ("talking", "held by remote"):
            reason: Any = self.ended_reasons.get(row_id, "")
            if row_id in self.rows or not reason:  # still ringing somewhere: do not leave it running
                reason = {"code": "no_answer_in", "params": {"seconds": round(PICKUP_TIMEOUT)}}
                self.agent.hangup(row_id)  # not the 487 of our own cancel
                await self._until(lambda: row_id not in self.rows, PICKUP_RELEASE)
            # Nothing was picked up: the calls held for it come back, and so does the selection.
            await self._give_back(held)
            self._restore_selection(before, row_id)
            # The server's own words: 404 "Nothing ringing", or e.g. 420 from a
            # caller that cannot be picked up (its call goes on ringing there).
            # Said last, so that nothing the give-back causes replaces it on the screen.
            return self._refuse(action, refusal("pickup_failed", number=got, reason=reason))
        self._consume(got)  # only now: a pickup that failed keeps the extension for another try
        return Outcome(True, data={"row": row_id, "remote": row.remote})

    def _restore_selection(self, ids: list[int], failed_row: int) -> None:
        """The selection as it was before a step that failed, unless the operator chose otherwise meanwhile."""
        if self.selection not in ([], [failed_row]):
            return  # the operator selected something else meanwhile
        keep = [r for r in ids if r in self.rows]
        if keep == self.selection:
            return
        self.selection = keep
        self.selection_lost = False
        self.selection_implicit = False
        self._emit(ev.SelectionChanged(tuple(self.selection)))

    async def _record(self, action: str) -> Outcome:
        """Start, stop or toggle recording of the selected call."""
        row = self._pre_record(action)
        if action == "toggle" and not isinstance(row, Refusal):
            action = "stop" if row.recording else "start"
        name = f"record_{action}"
        if isinstance(row, Refusal):
            return self._refuse(name, row)
        self._step(row=row.id)
        log.info("row %d: %s recording", row.id, action, extra=_fields(row, name))
        if action == "start":
            try:
                path = self._begin_recording(row)
            except RecordingRefused as exc:
                return self._refuse(name, Refusal(exc.code, exc.params, row.id))
            failed = await self._wait(name, self.agent.record(row.id, str(path)), row.id)
            if failed:
                self.recording_files.abort(row.id)
                return failed
            if row.id in self.rows:
                row.recording = True
                row.recording_path = str(path)
                self._changed(row)
            return Outcome(True, data={"row": row.id, "file": str(path)}, action=name)
        failed = await self._wait(name, self.agent.record(row.id, None), row.id)
        if failed:
            return failed
        row.recording = False
        if row.id in self.rows:
            self._changed(row)
        done = asyncio.wrap_future(self.recording_files.finish(row.id, "stopped by the operator"), loop=self._loop)
        try:  # so that the file is complete (header, sidecar) when the action is done
            await asyncio.wait_for(done, AGENT_TIMEOUT)
        except Exception as exc:
            log.warning("row %d: recording not completed in time: %r", row.id, exc)
        return Outcome(True, data={"row": row.id, "file": row.recording_path}, action=name)

    async def _mute(self, state: str = "toggle") -> Outcome:
        """Microphone mute: "on", "off" or "toggle"; the reply says whether it is muted now."""
        on = (not self.muted) if state == "toggle" else state == "on"
        failed = await self._wait("mute", self.agent.mute(on))
        if failed:
            return failed
        self.muted = on
        log.info("microphone %s", "muted" if on else "on", extra={"ACTION": "mute", "MUTED": int(on)})
        self._emit(ev.MuteChanged(on))  # every front-end shows it, whoever pressed
        return Outcome(True, data={"muted": on})

    async def _recordings(self) -> Outcome:
        """The recordings kept on this unit, newest first, with duration and whether each was repaired."""
        self._accept()  # reading the directory may take a while on a card: not on the loop
        try:
            entries = await self._loop.run_in_executor(None, self.recording_files.entries)
        except OSError as exc:
            return self._refuse("recordings", refusal("recordings_unreadable", error=exc.strerror or str(exc)))
        return Outcome(True, data={"recordings": entries})

    def recording_path(self, row: Row) -> Path:
        """Where a recording of this row started now would go (the real one may add -2 on a clash)."""
        stem = file_stem(time.time(), row.line, row.direction, row.remote, row.id)
        return self.profile.recording.directory / f"{stem}.wav"

    def _begin_recording(self, row: Row) -> Path:
        """Create the recording's files (space checked, sidecar with end null); RecordingRefused if not."""
        members = self.conference_rows if row.id in self.conference_rows else {row.id}
        parties = [self.rows[r].remote for r in sorted(members) if r in self.rows]
        return self.recording_files.begin(row.id, line=row.line, direction=row.direction, remote=row.remote,
                                          route=row.route, parties=parties)

    def _record_stop_low_space(self, row_id: int, reason: str) -> None:
        """The disk is (nearly) full: stop this recording cleanly and say so; the call goes on.

        Called on the recordings thread; runs on the loop.
        """
        self.call_soon(self._record_stop_now, row_id, reason)

    def _record_stop_now(self, row_id: int, reason: str) -> None:
        self._alert("recording_stopped", row=row_id, reason=reason)

        def done(_: Future[None]) -> None:
            self.call_soon(stopped)

        def stopped() -> None:
            row = self.rows.get(row_id)
            if row is not None and row.recording:
                row.recording = False
                self._changed(row)
            self.recording_files.finish(row_id, f"stopped: {reason}")

        self.agent.record(row_id, None).add_done_callback(done)

    async def _dial_on(self, action: str, number: str, line_id: str, route_id: str | None,
                       note: tuple[str, dict[str, Any]] | None = None, created: Callable[[int], None] | None = None,
                       held_out: list[int] | None = None) -> Outcome:
        """Place a call (Call itself, consult, conference, pickup); `held_out` gets the calls it held."""
        why = self._can_line(line_id)
        if why is not None:
            return self._refuse(action, why)
        held = await self._hold_others(action, None)
        if isinstance(held, Outcome):
            return held
        why = self._can_line(line_id)  # the line may have gone while the others were held
        if why is not None:
            await self._give_back(held)
            return self._refuse(action, why)
        uri = self.target_uri(number, line_id, route_id)
        row = Row(next(self.ids), line_id, "out", uri, "dialling", route=route_id, dialled=number)
        row.directory_name = self._directory_name(number)
        if note is not None:
            self._set_note(row, note[0], **note[1])
        self.rows[row.id] = row
        self.selection = [row.id]
        self.selection_lost = False
        self.selection_implicit = False
        if created is not None:  # bookkeeping before any event about the row can arrive
            created(row.id)
        # The agent first, then the front-ends: their listeners wake other threads, and the
        # agent thread should have the INVITE out before they compete with it for the GIL.
        # The agent's own events about the row queue behind this step, so the row's
        # "dialling" still comes first.
        fut = self.agent.dial(row.id, line_id, uri, route_id)
        log.info("row %d: %s: dial %s on line %s", row.id, action, uri, line_id, extra=_fields(row, action))
        self._step(row=row.id, uri=uri)
        self._changed(row)
        self._emit(ev.SelectionChanged(tuple(self.selection)))
        self._history_begin(row)
        failed = await self._wait(action, fut, row.id)
        if failed:
            if not fut.done():  # the agent may still place it: queue its hang-up behind it
                self.agent.hangup(row.id)
            self._drop(row.id, failed.reason)
            await self._give_back(held)
            return failed
        if held_out is not None:
            held_out.extend(held)
        return Outcome(True, data={"row": row.id, "uri": uri})

    # --- agent events (agent thread -> loop) --------------------------------

    def on_agent_event(self, event: ev.Event) -> None:
        """The agent's listener: queue the event for the loop, never waiting.

        The agent's events and the Futures it resolves reach the loop through the
        same queue, so the desk sees them in the agent's order. The agent thread
        must not wait here: pjsua reports a hung-up call DISCONNECTED inside
        Call.hangup(), before it sends the CANCEL or BYE (*measured*), so any wait
        here would delay that on the wire.
        """
        if self.on_loop():
            self._loop.call_soon(self._agent_event, event)  # behind the step that caused it
        else:
            self.call_soon(self._agent_event, event)

    def settle(self, timeout: float = REPLY_TIMEOUT) -> None:
        """Wait until the loop has run everything queued so far (agent events included); for tests."""
        self.on_desk(lambda: None, timeout=timeout)

    def _agent_event(self, event: ev.Event) -> None:
        """Turn what the agent saw into table changes and desk events."""
        try:
            if isinstance(event, ev.LineState):
                if not any(line.id == event.line for line in self.profile.lines):
                    log.debug("line %s: %s (a line no longer in the profile)", event.line, event.reason)
                    return
                self.registered[event.line] = event
                log.info("line %s: %s (%s %s)", event.line,
                         "registered" if event.registered else "not registered", event.code, event.reason,
                         extra={"EVENT": "registered" if event.registered else "unregistered", "LINE": event.line,
                                "SIP_STATUS": event.code})
                self._emit(event)
            elif isinstance(event, ev.IncomingCall):
                if event.refused:
                    self._history_refused(event)
                    return
                row = Row(event.call, event.line, "in", event.remote, "ringing", via=event.via,
                          intercom=event.intercom)
                row.directory_name = self._directory_name(party(event.remote).number)
                if not row.directory_name:
                    self._name_from_ldap(row)
                due = self._auto_answer_due(row, event)
                alone = not self.rows
                self.rows[row.id] = row
                if due is not None:
                    row.auto_answer = True
                    self._auto_answers[row.id] = self._loop.call_later(due, self._auto_answer_now, row.id)
                self._history_begin(row)
                log.info("row %d: incoming from %s on line %s", row.id, row.remote, row.line,
                         extra=_fields(row, event="incoming"))
                self._changed(row)
                if alone and not self.selection:  # the only call: what the panel's actions apply to, shown so
                    self._select_row(row.id)
                    self.selection_implicit = True
                elif self.selection_implicit:  # no longer the only call: the operator picks one
                    self.selection, self.selection_implicit = [], False
                    self._emit(ev.SelectionChanged(()))
            elif isinstance(event, ev.CallProgress):
                self._progress(event)
            elif isinstance(event, ev.CallMedia):
                row = self.rows.get(event.call)
                if row:
                    if event.local_hold and not row.local_hold:
                        row.held_since = time.time()
                    elif not event.local_hold:
                        row.held_since = None
                    row.local_hold, row.remote_hold = event.local_hold, event.remote_hold
                    if row.answered is None:  # media before the answer: the far end's own early audio
                        row.early_media = event.active and not (event.local_hold or event.remote_hold)
                        self._changed(row)
                        return
                    row.state = self._talk_state(row)
                    self._changed(row)
                    # Hold periods are marked in the recording's sidecar (no-op when not recorded).
                    self.recording_files.hold(row.id, event.local_hold, event.remote_hold)
            elif isinstance(event, ev.TransferProgress):
                self._transfer_progress(event)
            elif isinstance(event, ev.Alert):
                log.warning("alert: %s", event.message,
                            extra={"EVENT": "alert", "ROW": event.params.get("row"), "CODE": event.code})
                self._notice("alert", event.message, event.params.get("row"), event.code, dict(event.params))
                self._emit(event)
        finally:
            self._notify()
            self._update_available()

    def _progress(self, event: ev.CallProgress) -> None:
        row = self.rows.get(event.call)
        if row is None:
            return
        if event.remote:
            row.remote = event.remote
        if event.state == "ended":
            facts = self.calllog.of(row.id)
            facts.code, facts.elsewhere = event.code, event.elsewhere
            reason = f"{event.code} {event.reason}".strip() if event.code else event.reason
            failed = row.direction == "out" and row.answered is None and (event.code >= 300 or not event.code) \
                and event.code != 487  # 487: we cancelled it ourselves
            self._drop(row.id, reason)
            if failed:
                # A call that reached nobody says why where the operator looks, and stays readable.
                why = reason or {"code": "no_reason", "params": {}}
                self._alert("call_failed", row=row.id, remote=row.remote, reason=why)
            return
        if event.state == "talking" and row.answered is None:
            row.answered = time.time()
            row.auto_answer = False
            if self.call_history is not None:
                self.call_history.answered(row.id, row.answered)
                self._history_answered(row)
            if self.profile.recording.always:
                self._record_always(row)
        if event.state == "early":
            row.state = "ringing"
        elif event.state == "talking":
            row.state = self._talk_state(row)
        else:
            row.state = event.state
        log.info("row %d: %s %s", row.id, row.state, event.code or "",
                 extra={**_fields(row, event=event.state), "SIP_STATUS": event.code or None})
        self._changed(row)

    def _talk_state(self, row: Row) -> str:
        """The state word of an answered call from its hold flags and conference."""
        if row.local_hold:
            return "on hold"
        if row.remote_hold:
            return "held by remote"
        if row.id in self.conference_rows:
            return "in conference"
        if row.id in self.consults:
            return "consulting"
        return "talking"

    def _transfer_progress(self, event: ev.TransferProgress) -> None:
        row = self.rows.get(event.call)
        transfer = self.transfers.get(event.call) or self.late_transfers.get(event.call)
        if row is None or transfer is None:
            return
        self._set_note(row, "note_transfer_status", status=f"{event.code} {event.reason}")
        self._changed(row)
        if not event.final:
            if event.call in self.transfer_deadline:
                self.transfer_deadline[event.call] = time.monotonic() + TRANSFER_TIMEOUT
            return
        self.transfers.pop(event.call, None)
        self.late_transfers.pop(event.call, None)
        self.transfer_deadline.pop(event.call, None)
        status = f"{event.code} {event.reason}"
        if 200 <= event.code < 300:
            log.info("row %d: transfer done, leaving the call", row.id, extra=_fields(row, event="transferred"))
            self.calllog.of(row.id).transferred_to = party(transfer.to).number or transfer.to
            if transfer.consult is not None and transfer.consult in self.rows:
                self.calllog.of(transfer.consult).transferred_to = party(row.remote).number or row.remote
            self.agent.hangup(row.id)  # not waited: the loop never waits on the agent
            if transfer.consult is not None:
                # B and C are now talking to each other: our leg to C is no
                # longer a consultation (B's end below must not look like the
                # held caller hanging up on it).
                self.consults.pop(transfer.consult, None)
                crow = self.rows.get(transfer.consult)
                if crow is not None:
                    self._set_note(crow, "note_transferred_leaving", row=row.id)
                    self._changed(crow)
                # The consulted party should drop our leg when it is replaced;
                # if it never does, do not leave a ghost call on the desk.
                self._loop.call_later(CONSULT_RELEASE, self._release_consult, transfer.consult)
        elif transfer.consult is not None:
            # E.g. 420 from a phone without Replaces (baresip 1.0), 486 from a
            # busy target: nothing was dropped, the operator chooses what next.
            self._refuse(f"transfer_{transfer.mode}",
                         refusal("transfer_failed_consult", row.id, row=row.id, consult=transfer.consult,
                                 status=status), transfer.command)
        else:
            self._refuse(f"transfer_{transfer.mode}", refusal("transfer_failed", row.id, row=row.id, status=status),
                         transfer.command)

    def _record_always(self, row: Row) -> None:
        """Global recording: start at answer (on the loop: not waited for)."""
        try:
            path = self._begin_recording(row)
        except RecordingRefused as exc:  # e.g. the disk is full: the call goes on unrecorded
            log.warning("row %d: global recording refused: %s", row.id, exc)
            self._alert("not_recorded", row=row.id, reason={"code": exc.code, "params": exc.params})
            return
        row.recording, row.recording_path = True, str(path)
        fut = self.agent.record(row.id, str(path))

        def failed(exc: BaseException) -> None:
            self.recording_files.abort(row.id)
            row.recording = False
            if row.id in self.rows:
                self._changed(row)
            self._alert("cannot_record", row=row.id, error=str(exc))

        def done(f: Future[None]) -> None:
            exc = f.exception()
            if exc is not None:
                self.call_soon(failed, exc)

        fut.add_done_callback(done)

    def _release_consult(self, row_id: int) -> None:
        if row_id in self.rows:
            log.info("row %d: consulted leg not released by the far end after confirm: hanging up", row_id)
            self.agent.hangup(row_id)

    def _drop(self, row_id: int, reason: str) -> None:
        gone = self.rows.pop(row_id, None)
        if gone is None:
            return
        log.info("row %d: ended (%s)", row_id, reason, extra={**_fields(gone, event="ended"), "REASON": reason})
        timer = self._auto_answers.pop(row_id, None)
        if timer is not None:
            timer.cancel()
        self._history_end(gone, reason)
        # The agent released the call's recorder: complete its files in the background.
        self.recording_files.finish(row_id, f"call ended: {reason}" if reason else "call ended")
        self.ended_reasons[row_id] = reason
        if len(self.ended_reasons) > 64:
            self.ended_reasons.pop(next(iter(self.ended_reasons)))
        if row_id in self.selection:
            self.selection.remove(row_id)
            self.selection_lost = not self.selection and not self.selection_implicit
            self.selection_implicit = False
            # A call the desk placed for a step (consultation, conference) goes back
            # to the call the operator had selected for that step.
            origin = self.consults.get(row_id)
            if origin is None and self.pending_conference and self.pending_conference[1] == row_id:
                origin = self.pending_conference[0]
            if not self.selection and origin in self.rows:
                self.selection = [origin]
                self.selection_lost = False
                self._emit(ev.SelectionChanged(tuple(self.selection)))
                self._alert("selection_moved", row=origin, ended=row_id)
        if not self.rows:
            self.selection_lost = False  # an empty table: the next single call is obvious again
        self.late_transfers.pop(row_id, None)
        self.transfer_deadline.pop(row_id, None)
        held = self.consults.pop(row_id, None)
        transfer = self.transfers.get(held) if held is not None else None
        # The consulted leg replaced by the held caller's own call (a confirm that is working) is no
        # "consultation ended": the transfer's outcome is what the held row says next.
        replaced = transfer is not None and transfer.consult == row_id
        if held is not None and held in self.rows and not replaced:
            self._set_note(self.rows[held], "note_consultation_ended", reason=reason)
            self._changed(self.rows[held])
        for consult, h in list(self.consults.items()):
            if h == row_id:
                del self.consults[consult]
                crow = self.rows.get(consult)
                if crow is not None:  # an ordinary call from now on
                    self._set_note(crow, "note_held_caller_hung_up", reason=reason)
                    if crow.up:
                        crow.state = self._talk_state(crow)
                    self._changed(crow)
        self.transfers.pop(row_id, None)
        if self.pending_conference and row_id in self.pending_conference:
            self.pending_conference = None
        self.conference_rows.discard(row_id)
        if len(self.conference_rows) == 1:  # one party left: an ordinary call
            last = self.rows.get(next(iter(self.conference_rows)))
            self.conference_rows.clear()
            if last and last.state == "in conference":
                last.state = "talking"
                self._changed(last)
        self._notify()
        self._emit(ev.RowRemoved(row_id, reason))
        self._update_available()
        if self.pending_lines:
            self._loop.call_soon(self._settle_pending_lines)


def _keep_dnd(path: Path, text: str, problem: Callable[[str, dict[str, Any]], None]) -> None:
    """Keep the DND state for the next start (off the loop); a failure is said, and costs only that."""
    from .reload import write_atomically

    try:
        write_atomically(path, text.encode())
    except OSError as exc:
        log.warning("do not disturb: cannot keep the state in %s: %s", path, exc)
        problem("dnd_not_kept", {"path": str(path), "error": exc.strerror or str(exc)})


def _host_of(uri: str) -> str:
    """sip:pbx.example.org:5060;lr -> pbx.example.org"""
    rest = uri.split(":", 1)[-1].split(";", 1)[0].rsplit("@", 1)[-1]
    return rest.rsplit(":", 1)[0].strip("[]").lower() if rest.count(":") == 1 else rest.strip("[]").lower()


def _line_sip(line: Any) -> tuple[Any, ...]:
    """What of a line its SIP account is made of (a change of it re-registers the line)."""
    return (line.uri, line.registrar, line.username, line.password, line.proxy)


def _why(result: Any) -> Refusal | None:
    """The refusal among a precondition's results, or None when it can act."""
    return result if isinstance(result, Refusal) else None
