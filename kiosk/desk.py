"""The panel: call table, selection, Line / Number / Route, and the rules of each action.

This module is the one place that decides what a press means. It imports no
pjsua2, Kivy or gpiozero: front-ends call the command methods, the SIP agent is
an object given to the constructor (the real pjsua2 one, or a fake in unit
tests), and everything the world should know leaves as an event.

Threads: commands arrive on front-end threads, agent events on the agent
thread. One re-entrant lock guards the table; it is never held while waiting
for the agent, so the agent thread can always deliver its events.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from . import events as ev
from .profile import MAX_CALLS, Profile

log = logging.getLogger("kiosk.desk")

#: How long a command waits for the agent thread to accept it.
AGENT_TIMEOUT = 5.0


class AgentError(Exception):
    """The agent could not do what was asked; str() is for the operator."""


class Agent(Protocol):
    """What the desk needs from a SIP agent. Every call returns at once; the
    Future resolves when the agent thread has done (or refused) the request."""

    def start(self, listener: Callable[[ev.Event], None]) -> None: ...
    def stop(self) -> None: ...
    def dial(self, call: int, line: str, uri: str, route: str | None) -> Future[None]: ...
    def answer(self, call: int) -> Future[None]: ...
    def hangup(self, call: int) -> Future[None]: ...


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
    note: str = ""  # last progress text for the operator (e.g. "transfer: 180 Ringing")

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
        }


@dataclass(frozen=True)
class Outcome:
    """What a desk command returns: done, or refused with a reason for the operator."""

    ok: bool
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def refuse(cls, reason: str) -> "Outcome":
        return cls(False, reason)


class Desk:
    """The call-control panel of one unit."""

    def __init__(self, profile: Profile, agent: Agent) -> None:
        self.profile = profile
        self.agent = agent
        self.ids = itertools.count(1)
        self.rows: dict[int, Row] = {}
        self.selection: list[int] = []
        self.line = profile.lines[0].id
        self.number = ""
        self.route = profile.sip.default_route or (profile.routes[0].id if profile.routes else "")
        self.registered: dict[str, ev.LineState] = {
            line.id: ev.LineState(line.id, False, 0, "not registered yet") for line in profile.lines
        }
        self._lock = threading.RLock()
        self._listeners: list[Callable[[ev.Event], None]] = []

    # --- wiring ------------------------------------------------------------

    def start(self) -> None:
        """Start the agent with this desk as its listener."""
        self.agent.start(self.on_agent_event)

    def stop(self) -> None:
        self.agent.stop()

    def subscribe(self, listener: Callable[[ev.Event], None]) -> Callable[[], None]:
        """Call `listener` with every desk event; returns the unsubscribe function.

        Listeners run on the thread that caused the event and must not block:
        a front-end hands the event over to its own thread.
        """
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _emit(self, event: ev.Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken front-end must not break the desk
                log.exception("listener %r failed on %s", listener, event.kind)

    def _refuse(self, action: str, reason: str, row_id: int | None = None) -> Outcome:
        log.info("refused %s: %s", action, reason)
        self._emit(ev.ActionFailed(action, reason, row_id))
        return Outcome.refuse(reason)

    def _changed(self, row: Row) -> None:
        self._emit(ev.RowChanged(row.as_json()))

    def _wait(self, action: str, fut: Future[None], row_id: int | None = None) -> Outcome | None:
        """Wait (without the lock) for the agent; None when it succeeded."""
        try:
            fut.result(timeout=AGENT_TIMEOUT)
        except AgentError as exc:
            return self._refuse(action, str(exc), row_id)
        except TimeoutError:
            return self._refuse(action, "the SIP agent did not answer in time", row_id)
        return None

    # --- reading -----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole panel as JSON: parameters, lines, rows, selection."""
        with self._lock:
            return {
                "line": self.line,
                "number": self.number,
                "route": self.route,
                "lines": [
                    {"id": s.line, "registered": s.registered, "code": s.code, "reason": s.reason}
                    for s in self.registered.values()
                ],
                "routes": [r.id for r in self.profile.routes],
                "calls": [row.as_json() for row in self.rows.values()],
                "selection": list(self.selection),
            }

    def selected(self) -> list[Row]:
        """The rows an action applies to: the selection, or the only call there is."""
        with self._lock:
            rows = [self.rows[i] for i in self.selection if i in self.rows]
            if not rows and len(self.rows) == 1:
                rows = list(self.rows.values())
            return rows

    def _one_selected(self, action: str) -> Row | Outcome:
        rows = self.selected()
        if not rows:
            return self._refuse(action, "no call selected")
        if len(rows) > 1:
            return self._refuse(action, f"{len(rows)} calls selected: select one call for {action}")
        return rows[0]

    # --- parameters --------------------------------------------------------

    def select(self, row_ids: Iterable[int]) -> Outcome:
        """Select rows (an empty list clears the selection)."""
        ids = [int(r) for r in row_ids]
        with self._lock:
            missing = [r for r in ids if r not in self.rows]
            if missing:
                have = ", ".join(str(r) for r in self.rows) or "none"
                return self._refuse("select", f"no call row {missing[0]} (rows: {have})")
            self.selection = list(dict.fromkeys(ids))
            self._emit(ev.SelectionChanged(tuple(self.selection)))
            return Outcome(True, data={"selection": self.selection})

    def set(self, name: str, value: str) -> Outcome:
        """Set a panel parameter: line, number or route."""
        with self._lock:
            if name == "line":
                ids = [line.id for line in self.profile.lines]
                if value not in ids:
                    return self._refuse("set", f"unknown line {value!r}; lines: {', '.join(ids)}")
                self.line = value
            elif name == "route":
                ids = [route.id for route in self.profile.routes]
                if value not in ids:
                    return self._refuse("set", f"unknown route {value!r}; routes: {', '.join(ids) or 'none'}")
                self.route = value
            elif name == "number":
                self.number = value.strip()
            else:
                return self._refuse("set", f"unknown parameter {name!r}; use line, number or route")
            self._emit(ev.ParamsChanged(self.line, self.number, self.route))
            return Outcome(True, data={"line": self.line, "number": self.number, "route": self.route})

    def _number(self, action: str, number: str | None) -> str | Outcome:
        """The number given with the action, else the Number field, else ask for it."""
        number = (number or "").strip() or self.number
        if not number:
            self._emit(ev.NumberRequired(action))
            return self._refuse(action, f"number required for {action}")
        return number

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

    # --- calls -------------------------------------------------------------

    def dial(self, number: str | None = None) -> Outcome:
        """Call the Number on the chosen Line and Route."""
        action = "dial"
        with self._lock:
            got = self._number(action, number)
            if isinstance(got, Outcome):
                return got
            route_id = self.route or None
            line_id = self.profile.route(route_id).line if route_id else self.line
            if not self.registered[line_id].registered:
                state = self.registered[line_id]
                return self._refuse(action, f"line {line_id} is not registered ({state.reason})")
            if len(self.rows) >= MAX_CALLS:
                return self._refuse(action, f"this unit handles at most {MAX_CALLS} calls")
            uri = self.target_uri(got, line_id, route_id)
            row = Row(next(self.ids), line_id, "out", uri, "dialling", route=route_id)
            self.rows[row.id] = row
            self.selection = [row.id]
            log.info("row %d: dial %s on line %s route %s", row.id, uri, line_id, route_id)
            self._changed(row)
            self._emit(ev.SelectionChanged(tuple(self.selection)))
        failed = self._wait(action, self.agent.dial(row.id, line_id, uri, route_id), row.id)
        if failed:
            self._drop(row.id, failed.reason)
            return failed
        return Outcome(True, data={"row": row.id, "uri": uri})

    def answer(self) -> Outcome:
        """Answer the selected ringing call."""
        row = self._one_selected("answer")
        if isinstance(row, Outcome):
            return row
        if row.direction != "in" or row.state != "ringing":
            return self._refuse("answer", f"call {row.id} is not ringing here (it is {row.state})", row.id)
        log.info("row %d: answer", row.id)
        return self._wait("answer", self.agent.answer(row.id), row.id) or Outcome(True, data={"row": row.id})

    def hangup(self) -> Outcome:
        """Hang up (or reject, or cancel) the selected call."""
        row = self._one_selected("hangup")
        if isinstance(row, Outcome):
            return row
        log.info("row %d: hang up", row.id)
        return self._wait("hangup", self.agent.hangup(row.id), row.id) or Outcome(True, data={"row": row.id})

    # --- agent events (agent thread) --------------------------------------

    def on_agent_event(self, event: ev.Event) -> None:
        """Turn what the agent saw into table changes and desk events."""
        with self._lock:
            if isinstance(event, ev.LineState):
                self.registered[event.line] = event
                log.info("line %s: %s (%s %s)", event.line,
                         "registered" if event.registered else "not registered", event.code, event.reason)
                self._emit(ev.LineChanged(event.line, event.registered, event.code, event.reason))
            elif isinstance(event, ev.IncomingCall):
                row = Row(event.call, event.line, "in", event.remote, "ringing")
                self.rows[row.id] = row
                log.info("row %d: incoming from %s on line %s", row.id, row.remote, row.line)
                self._changed(row)
            elif isinstance(event, ev.CallProgress):
                self._progress(event)
            elif isinstance(event, ev.CallMedia):
                row = self.rows.get(event.call)
                if row:
                    row.local_hold, row.remote_hold = event.local_hold, event.remote_hold
                    self._changed(row)
            elif isinstance(event, ev.AgentAlert):
                log.warning("alert: %s", event.message)
                self._emit(ev.Alert(event.message))

    def _progress(self, event: ev.CallProgress) -> None:
        row = self.rows.get(event.call)
        if row is None:
            return
        if event.remote:
            row.remote = event.remote
        if event.state == "ended":
            reason = f"{event.code} {event.reason}".strip() if event.code else event.reason
            self._drop(row.id, reason)
            return
        if event.state == "talking" and row.answered is None:
            row.answered = time.time()
        if event.state == "early":
            row.state = "ringing"
        else:
            row.state = event.state
        log.info("row %d: %s %s", row.id, row.state, event.code or "")
        self._changed(row)

    def _drop(self, row_id: int, reason: str) -> None:
        with self._lock:
            if self.rows.pop(row_id, None) is None:
                return
            log.info("row %d: ended (%s)", row_id, reason)
            if row_id in self.selection:
                self.selection.remove(row_id)
            self._emit(ev.RowRemoved(row_id, reason))


COMMANDS = ("select", "set", "dial", "answer", "hangup")
