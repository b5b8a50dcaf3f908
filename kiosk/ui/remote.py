"""The desk as the touchscreen's own process sees it: the unit's control socket, like any CTI client.

`RemoteDesk` has the surface the panel, DeskFrontend and the GPIO keys use on an
in-process kiosk.desk.Desk: `run(name, **args) -> Outcome` and
`submit(name, **args) -> Future[Outcome]` for any command of kiosk.commands'
table, a thin method per command (`dial(number)`, `transfer(mode, number)`,
...), `snapshot()`, `subscribe(listener)`, `number`, `selection`, `muted`,
`available` and `profile`. A command is one request on the socket (`submit`
makes it on a small pool of threads, so the caller never waits for the socket);
its Outcome carries the desk's code, parameters, action, command id and
`pending`. Events come from one `events` stream read by a thread of its own
and turned back into the kiosk.events dataclasses; an `ActionDone` or
`ActionFailed` with a pending command's id resolves that Outcome's `done`
Future, so `outcome.wait()` works here as in-process.

The unit may go away (restarting, upgraded) and come back: the reader then
emits `LinkChanged(False, reason)`, keeps trying to connect, and on success
emits `LinkChanged(True, snapshot=...)` with the unit's current state. While
the link is down a command is refused with code `link_down` ({reason}), and
commands still pending are given up the same way; nothing raises. No Kivy here.
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from kiosk import events as ev
from kiosk import i18n
from kiosk.commands import COMMANDS, CommandMethods, check_args
from kiosk.control import ControlError, error_message, json_lines, open_events, request
from kiosk.desk import Outcome
from kiosk.profile import Profile

log = logging.getLogger("kiosk.ui")

#: Seconds between attempts to reach a unit that is not there: first, then doubling up to the last.
RETRY_FIRST, RETRY_MAX = 0.25, 2.0
#: How long a connect (and the snapshot line after it) may take before the unit counts as not answering.
CONNECT_TIMEOUT = 10.0
#: Threads making requests for `submit`: a few, so that a slow reply never holds up the next press.
SENDERS = 4
#: Final outcomes of commands not (yet) known as pending here, kept for a reply that comes after its event.
EARLY_OUTCOMES = 256


class RemoteDesk(CommandMethods):
    """A kiosk.desk.Desk look-alike over the control socket at `path`."""

    def __init__(self, path: Path | str, profile: Profile) -> None:
        self.path = Path(path)
        self.profile = profile
        self._lock = threading.Lock()
        self._listeners: list[Callable[[ev.Event], None]] = []
        self._state: dict[str, Any] = self._empty_state()
        self.connected = False
        self._down_reason = "not connected yet"
        self._stopping = threading.Event()
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        #: Set once the reader has tried the unit (and followed it, when it answered).
        self._attempted = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        #: command id -> the `done` Future of its pending Outcome, until its event comes.
        self._pending: dict[int, Future[Outcome]] = {}
        #: command id -> its final Outcome, when the event came before the reply was read.
        self._early: collections.OrderedDict[int, Outcome] = collections.OrderedDict()

    def _empty_state(self) -> dict[str, Any]:
        profile = self.profile
        route = profile.sip.default_route or (profile.routes[0].id if profile.routes else "")
        line = profile.route(route).line if route else profile.lines[0].id
        return {
            "line": line, "number": "", "route": route,
            "lines": [{"id": ln.id, "registered": False, "code": 0, "reason": "the unit is not reachable"}
                      for ln in profile.lines],
            "routes": [r.id for r in profile.routes], "calls": [], "selection": [], "muted": False,
            "available": {}, "dnd": False, "missed_unseen": 0,
        }

    # --- wiring ------------------------------------------------------------------

    def start(self) -> None:
        """Follow the unit's events on a thread of their own (also done by the first subscribe)."""
        with self._lock:
            if self._reader is not None or self._stopping.is_set():
                return
            self._reader = threading.Thread(target=self._read, name="kiosk-ui-events", daemon=True)
        self._reader.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop following the unit (the unit itself is not touched)."""
        self._stopping.set()
        self._attempted.set()  # a command now no longer waits for the stream
        with self._lock:
            sock, reader, pool = self._sock, self._reader, self._pool
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self._give_up_pending("the touchscreen is closing")

    def subscribe(self, listener: Callable[[ev.Event], None]) -> Callable[[], None]:
        """Call `listener` (on the reader thread) with every desk event; returns the unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)
        self.start()

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _emit(self, event: ev.Event) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("listener %r failed on %s", listener, event.kind)

    # --- the event stream --------------------------------------------------------------

    def _read(self) -> None:
        delay = RETRY_FIRST
        told_down = False
        while not self._stopping.is_set():
            try:
                sock = self._connect()
            except ControlError as exc:  # it says which socket and why
                reason = str(exc)
                if not told_down:  # said once per outage, not at every retry
                    log.warning("touchscreen: %s; trying again", reason)
                    self._link_down(reason)
                    told_down = True
                self._attempted.set()
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            try:
                reason = self._follow(sock)
            finally:
                with self._lock:
                    self._sock = None
                sock.close()
                self._attempted.set()
            if self._stopping.is_set():
                return
            if self.connected:  # the stream was up: the unit went away now
                log.warning("touchscreen: %s; reconnecting", reason)
                self._link_down(reason)
                told_down, delay = True, RETRY_FIRST
                continue
            # Connected but never got the snapshot (a unit stopping or starting): as if not there.
            if not told_down:
                log.warning("touchscreen: %s; trying again", reason)
                self._link_down(reason)
                told_down = True
            self._stopping.wait(delay)
            delay = min(delay * 2, RETRY_MAX)

    def _connect(self) -> socket.socket:
        sock = open_events(self.path, CONNECT_TIMEOUT)
        with self._lock:
            self._sock = sock
        if self._stopping.is_set():  # close() came between: it could not shut this one down
            sock.close()
            raise ControlError("closing")
        return sock

    def _follow(self, sock: socket.socket) -> str:
        """Read the snapshot, then events, until the stream ends; why it ended."""
        first = True
        try:
            for obj in json_lines(sock, self.path):
                if first:
                    first = False
                    if obj.get("event") != "snapshot":
                        return f"the unit refused the event stream: {error_message(obj)}"
                    sock.settimeout(None)  # events may be minutes apart
                    self._on_snapshot(obj)
                    continue
                event = ev.from_json(obj)
                if event is None:
                    log.debug("touchscreen: unknown event %s", obj.get("event"))
                    continue
                self._track(event)
                self._emit(event)
        except ControlError as exc:
            return str(exc)
        return f"the unit at {self.path} closed the connection"

    def _on_snapshot(self, obj: dict[str, Any]) -> None:
        snap = {k: v for k, v in obj.items() if k != "event"}
        with self._lock:
            self._state = {**self._empty_state(), **snap}
            self.connected = True
            state = self._copy()
        self._attempted.set()
        log.info("touchscreen: following the unit at %s", self.path)
        self._emit(ev.LinkChanged(True, "", state))

    def _link_down(self, reason: str) -> None:
        with self._lock:
            self.connected = False
            self._down_reason = reason
        # A unit that went away will never send the outcome of what it was doing; one that
        # restarted counts its commands from 1 again: nothing pending is known any more.
        self._give_up_pending(reason)
        self._emit(ev.LinkChanged(False, reason))

    def _track(self, event: ev.Event) -> None:
        """Keep the local copy of the panel's state up to date with one event."""
        finished: tuple[int, Outcome] | None = None
        with self._lock:
            s = self._state
            if isinstance(event, ev.RowChanged):
                s["calls"] = self._replace_row(s["calls"], event.row)
            elif isinstance(event, ev.RowRemoved):
                s["calls"] = [c for c in s["calls"] if c.get("id") != event.row_id]
            elif isinstance(event, ev.SelectionChanged):
                s["selection"] = list(event.rows)
            elif isinstance(event, ev.ParamsChanged):
                s.update(line=event.line, number=event.number, route=event.route)
            elif isinstance(event, ev.MuteChanged):
                s["muted"] = event.muted
            elif isinstance(event, ev.DndChanged):
                s["dnd"] = event.on
            elif isinstance(event, ev.HistoryChanged):
                s["missed_unseen"] = event.missed_unseen
            elif isinstance(event, ev.AvailabilityChanged):
                s["available"] = dict(event.available)
            elif isinstance(event, ev.LineState):
                s["lines"] = [{"id": event.line, "registered": event.registered, "code": event.code,
                               "reason": event.reason} if ln["id"] == event.line else ln for ln in s["lines"]]
            elif isinstance(event, ev.ActionDone) and event.command is not None:
                finished = event.command, Outcome(True, data=dict(event.data), action=event.action,
                                                  row=event.row_id, command=event.command)
            elif isinstance(event, ev.ActionFailed) and event.command is not None:
                finished = event.command, Outcome(False, event.reason, code=event.code, params=dict(event.params),
                                                  action=event.action, row=event.row_id, command=event.command)
        if finished is not None:
            self._finished(*finished)

    def _finished(self, command: int, out: Outcome) -> None:
        """A command's final outcome came as an event: resolve its pending Outcome (or keep it for it)."""
        with self._lock:
            done = self._pending.pop(command, None)
            if done is None:
                # Its reply is not read yet (the event overtook it), or it was never pending here
                # (a refusal at once, another client's command): kept a while, for the first case.
                self._early.setdefault(command, out)
                while len(self._early) > EARLY_OUTCOMES:
                    self._early.popitem(last=False)
                return
        if not done.done():
            done.set_result(out)

    def _give_up_pending(self, reason: str) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._early.clear()
        for command, done in pending.items():
            if not done.done():
                done.set_result(self._link_down_outcome(reason, command=command))

    @staticmethod
    def _replace_row(calls: list[dict[str, Any]], row: dict[str, Any]) -> list[dict[str, Any]]:
        """The call rows with `row` in its place (or added at the end, as the desk adds it)."""
        if any(c.get("id") == row.get("id") for c in calls):
            return [row if c.get("id") == row.get("id") else c for c in calls]
        return [*calls, row]

    def _copy(self) -> dict[str, Any]:
        s = self._state
        return {**s, "lines": [dict(ln) for ln in s["lines"]], "calls": [dict(c) for c in s["calls"]],
                "selection": list(s["selection"]), "available": dict(s.get("available") or {})}

    # --- reading ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The panel as the unit has it now; while the unit is away, the last state seen."""
        out = self.run("calls")
        if out.ok and out.data.get("lines") is not None:
            return dict(out.data)
        with self._lock:
            return self._copy()

    @property
    def number(self) -> str:
        """Number as the unit has it now (a keypad key adds to this); the last seen while it is away."""
        return str(self.snapshot().get("number", ""))

    @property
    def selection(self) -> list[int]:
        with self._lock:
            return list(self._state["selection"])

    @property
    def muted(self) -> bool:
        with self._lock:
            return bool(self._state.get("muted"))

    @property
    def available(self) -> dict[str, dict[str, Any] | None]:
        """Action id -> None when it can act now, else why not (`{"code", "params", "message", "row"}`)."""
        with self._lock:
            return dict(self._state.get("available") or {})

    # --- the desk commands --------------------------------------------------------------

    def _link_down_outcome(self, reason: str, action: str = "", command: int | None = None) -> Outcome:
        params = {"reason": reason}
        return Outcome(False, i18n.message("link_down", params), code="link_down", params=params, action=action,
                       command=command)

    def run(self, name: str, /, **args: Any) -> Outcome:
        """One command on the unit: its reply as an Outcome (a pending one's `done` resolves from its event).

        Never raises: a unit that cannot be reached is the refusal `link_down`.
        """
        args = {k: v for k, v in args.items() if v is not None}
        checked = check_args(name, args)
        command = COMMANDS.get(name)
        if isinstance(checked, tuple):  # what the unit would say, without the round trip
            code, params = checked
            return Outcome(False, i18n.message(code, params), code=code, params=params, action=name)
        assert command is not None
        action = command.action_for(checked)
        # A pending command's outcome comes as an event (even a read may wait: `recordings`
        # reads the disk): follow the unit before asking it anything.
        self.start()
        self._attempted.wait(CONNECT_TIMEOUT)
        try:
            reply = request(self.path, name, **checked)
        except ControlError as exc:
            log.info("touchscreen: %s not sent: %s", name, exc)
            return self._link_down_outcome(str(exc), action)
        return self._outcome(reply, action)

    def _outcome(self, reply: dict[str, Any], action: str) -> Outcome:
        if not reply.get("ok"):
            err = reply.get("error")
            if not isinstance(err, dict):  # an older unit: words only
                return Outcome(False, str(err or "refused"), code="refused", action=action)
            return Outcome(False, str(err.get("message") or ""), code=str(err.get("code") or "refused"),
                           params=dict(err.get("params") or {}), action=str(err.get("action") or action),
                           row=err.get("row"))
        data = reply.get("data")
        data = dict(data) if isinstance(data, dict) else {}
        command = reply.get("command")
        command = command if isinstance(command, int) and not isinstance(command, bool) else None
        row = data.get("row") if isinstance(data.get("row"), int) else None
        if not reply.get("pending") or command is None:
            return Outcome(True, data=data, action=action, row=row, command=command)
        done: Future[Outcome] = Future()
        with self._lock:
            early = self._early.pop(command, None)
            if early is None:
                self._pending[command] = done
        if early is not None:
            done.set_result(early)
        return Outcome(True, data=data, action=action, row=row, command=command, pending=True, done=done)

    def submit(self, name: str, /, **args: Any) -> Future[Outcome]:
        """Start a command without waiting for the socket: the Future holds `run`'s Outcome."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="kiosk-ui-send")
            pool = self._pool
        try:
            return pool.submit(self.run, name, **args)
        except RuntimeError:  # closed
            fut: Future[Outcome] = Future()
            fut.set_result(self._link_down_outcome("the touchscreen is closing", name))
            return fut

