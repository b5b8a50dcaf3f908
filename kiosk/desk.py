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

import collections
import itertools
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from . import events as ev
from .profile import MAX_CALLS, Profile
from .recordings import RecordingRefused, Recordings, file_stem

log = logging.getLogger("kiosk.desk")

#: How long a command waits for the agent thread to accept it.
AGENT_TIMEOUT = 5.0
#: How long a transfer may go without a final NOTIFY before the operator is told.
TRANSFER_TIMEOUT = 30.0
#: How long after a confirmed transfer the consulted party may take to release our leg.
CONSULT_RELEASE = 5.0
#: How long `pickup` waits for the intercepted call to be answered.
PICKUP_TIMEOUT = 8.0
#: How long a failed pickup waits for its own call to go before it gives back the held calls.
PICKUP_RELEASE = 2.0


class AgentError(Exception):
    """The agent could not do what was asked; str() is for the operator."""


class CallGone(AgentError):
    """The agent has no such call (any more): the desk's row for it is stale."""

    def __init__(self, call: int) -> None:
        super().__init__(f"call {call} has ended")
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
    recording_path: str = ""

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
        }


@dataclass(frozen=True)
class Transfer:
    """A transfer in flight: which kind, to whom, and the consult row for confirm."""

    mode: str  # "quick" | "confirm"
    to: str
    consult: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What a desk command returns: done, or refused with a reason for the operator."""

    ok: bool
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def refuse(cls, reason: str) -> "Outcome":
        return cls(False, reason)


class _FromField(str):
    """A number taken from the Number field (not given with the action): consumed when used."""


#: How many refusals and alerts the desk keeps for the operator to read again.
NOTICES = 20


class Desk:
    """The call-control panel of one unit.

    The Number field is consumed by the action that uses it, as a desk phone
    clears its dial field after Call: a transfer, conference or pickup can
    only reach a number entered for it, never the one left from the last call.
    """

    def __init__(self, profile: Profile, agent: Agent) -> None:
        self.profile = profile
        self.agent = agent
        self.ids = itertools.count(1)
        self.rows: dict[int, Row] = {}
        self.selection: list[int] = []
        self.line = profile.lines[0].id
        self.number = ""
        self.route = profile.sip.default_route or (profile.routes[0].id if profile.routes else "")
        if self.route:
            self.line = profile.route(self.route).line
        self.registered: dict[str, ev.LineState] = {
            line.id: ev.LineState(line.id, False, 0, "not registered yet") for line in profile.lines
        }
        self.selection_lost = False  # the selected call ended: no falling back to "the only call"
        self.transfers: dict[int, Transfer] = {}
        self.late_transfers: dict[int, Transfer] = {}  # timed out, but a final NOTIFY may still come
        self.transfer_deadline: dict[int, float] = {}
        self.consults: dict[int, int] = {}  # consult row -> held row
        self.pending_conference: tuple[int, int] | None = None  # (held B, dialled C)
        self.conference_rows: set[int] = set()
        self.ended_reasons: dict[int, str] = {}
        self._lock = threading.RLock()
        self._changed_cv = threading.Condition(self._lock)
        self._listeners: list[Callable[[ev.Event], None]] = []
        self.muted = False  # the operator's microphone (the agent mutes the headset)
        # The last refusals, alerts and failed calls, newest last, so that a reason
        # replaced on the status line can still be read (`calls` -> "notices").
        self.notices: collections.deque[dict[str, Any]] = collections.deque(maxlen=NOTICES)
        # Files, sidecars, free space and retention; reads the profile at each use
        # because a profile may be swapped for the last good one.
        self.recording_files = Recordings(lambda: self.profile.recording, lambda: self.profile.operator.name,
                                          self._record_stop_low_space)

    # --- wiring ------------------------------------------------------------

    def start(self) -> None:
        """Start the agent with this desk as its listener."""
        self.agent.start(self.on_agent_event, lambda: next(self.ids))

    def stop(self) -> None:
        self.agent.stop()
        self.recording_files.close()  # the agent released every recorder: complete their sidecars

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
        self._notice(action, reason, row_id)
        self._emit(ev.ActionFailed(action, reason, row_id))
        return Outcome.refuse(reason)

    def _notice(self, action: str, reason: str, row_id: int | None = None) -> None:
        with self._lock:
            self.notices.append({"time": round(time.time(), 3), "action": action, "reason": reason, "row": row_id})

    def _changed(self, row: Row) -> None:
        with self._changed_cv:
            self._changed_cv.notify_all()
            self._emit(ev.RowChanged(row.as_json()))

    def _wait(self, action: str, fut: Future[None], row_id: int | None = None,
              gone_ok: bool = False) -> Outcome | None:
        """Wait (without the lock) for the agent; None when it succeeded.

        `gone_ok`: a call the agent no longer has is not a failure of this step
        (holding the other calls before a dial): its row goes, nothing is refused.
        """
        try:
            fut.result(timeout=AGENT_TIMEOUT)
        except CallGone as exc:
            # The SIP side is done with that call although no end reached us:
            # drop the row, or it would be a ghost that refuses every action.
            self._drop(exc.call, "the call had already ended")
            if gone_ok:
                return Outcome(False, str(exc), {"gone": exc.call})
            return self._refuse(action, str(exc), row_id)
        except AgentError as exc:
            return self._refuse(action, str(exc), row_id)
        except TimeoutError:
            if fut.cancel():  # never done later, after the operator was told it failed
                return self._refuse(action, "the SIP agent did not answer in time; nothing was done", row_id)
            return self._refuse(action, "the SIP agent is slow: the request is still in progress", row_id)
        except Exception as exc:  # the agent must never leave the desk in a half state
            log.exception("%s: agent failed", action)
            return self._refuse(action, f"internal error in the SIP agent: {exc}", row_id)
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
                "muted": self.muted,
                "notices": list(self.notices),
            }

    def selected(self) -> list[Row]:
        """The rows an action applies to: the selection, or the only call there is."""
        with self._lock:
            rows = [self.rows[i] for i in self.selection if i in self.rows]
            # The only call is obvious — unless the selected call has just ended:
            # then a press meant for it must not land on the call that is left.
            if not rows and len(self.rows) == 1 and not self.selection_lost:
                rows = list(self.rows.values())
            return rows

    def _one_selected(self, action: str) -> Row | Outcome:
        rows = self.selected()
        if not rows and self.selection_lost:
            return self._refuse(action, "the selected call has ended: select the call to act on")
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
            self.selection_lost = False
            self._emit(ev.SelectionChanged(tuple(self.selection)))
            return Outcome(True, data={"selection": list(self.selection)})

    def set(self, name: str, value: str) -> Outcome:
        """Set a panel parameter: line, number or route."""
        with self._lock:
            if name == "line":
                ids = [line.id for line in self.profile.lines]
                if value not in ids:
                    return self._refuse("set", f"unknown line {value!r}; lines: {', '.join(ids)}")
                self.line = value
                # Line and Route never disagree: a route belongs to a line, so
                # choosing another line chooses that line's first route (or none).
                if self.route and self.profile.route(self.route).line != value:
                    self.route = next((r.id for r in self.profile.routes if r.line == value), "")
            elif name == "route":
                ids = [route.id for route in self.profile.routes]
                if value not in ids:
                    return self._refuse("set", f"unknown route {value!r}; routes: {', '.join(ids) or 'none'}")
                self.route = value
                self.line = self.profile.route(value).line
            elif name == "number":
                self.number = value.strip()
            else:
                return self._refuse("set", f"unknown parameter {name!r}; use line, number or route")
            self._emit(ev.ParamsChanged(self.line, self.number, self.route))
            return Outcome(True, data={"line": self.line, "number": self.number, "route": self.route})

    def _number(self, action: str, number: str | None) -> str | Outcome:
        """The number given with the action, else the Number field, else ask for it."""
        given = (number or "").strip()
        if given:
            return given
        with self._lock:
            field_value = self.number
        if not field_value:
            self._emit(ev.NumberRequired(action))
            return self._refuse(action, f"number required for {action}")
        return _FromField(field_value)

    def _consume(self, number: str) -> None:
        """The action that took its number from the Number field has used it: clear the field."""
        if not isinstance(number, _FromField):
            return
        with self._lock:
            if self.number != number:
                return  # edited meanwhile: that is a new number
            self.number = ""
            self._emit(ev.ParamsChanged(self.line, self.number, self.route))

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
        got = self._number(action, number)
        if isinstance(got, Outcome):
            return got
        with self._lock:
            route_id = self.route or None
            line_id = self.profile.route(route_id).line if route_id else self.line
        out = self._dial_on(action, got, line_id, route_id)
        if out.ok:
            self._consume(got)
        return out

    def answer(self) -> Outcome:
        """Answer the selected ringing call."""
        row = self._one_selected("answer")
        if isinstance(row, Outcome):
            return row
        if row.direction != "in" or row.state != "ringing":
            return self._refuse("answer", f"call {row.id} is not ringing here (it is {row.state})", row.id)
        held = self._hold_others("answer", row.id)
        if isinstance(held, Outcome):
            return held
        log.info("row %d: answer", row.id)
        failed = self._wait("answer", self.agent.answer(row.id), row.id)
        if failed:
            self._give_back(held)
            return failed
        return Outcome(True, data={"row": row.id})

    def hangup(self) -> Outcome:
        """Hang up (or reject, or cancel) the selected call."""
        row = self._one_selected("hangup")
        if isinstance(row, Outcome):
            return row
        log.info("row %d: hang up", row.id)
        return self._wait("hangup", self.agent.hangup(row.id), row.id) or Outcome(True, data={"row": row.id})

    # --- call control ------------------------------------------------------

    def hold(self) -> Outcome:
        """Put the selected call on hold; the line is then free for other calls."""
        row = self._one_selected("hold")
        if isinstance(row, Outcome):
            return row
        if row.local_hold:
            return self._refuse("hold", f"call {row.id} is already on hold", row.id)
        if not row.up:
            return self._refuse("hold", f"call {row.id} is {row.state}: only a call in conversation can be held", row.id)
        log.info("row %d: hold", row.id)
        return self._wait("hold", self.agent.hold(row.id), row.id) or Outcome(True, data={"row": row.id})

    def connect(self) -> Outcome:
        """Take the selected held call off hold; any other call in conversation is held first."""
        row = self._one_selected("connect")
        if isinstance(row, Outcome):
            return row
        if not row.local_hold:
            return self._refuse("connect", f"call {row.id} is not on hold", row.id)
        held = self._hold_others("connect", row.id)
        if isinstance(held, Outcome):
            return held
        with self._lock:
            if self.pending_conference and row.id in self.pending_conference:
                self.pending_conference = None  # back to the first party: the three-party step is abandoned
            members = [r for r in self.conference_rows if r != row.id and r in self.rows and self.rows[r].local_hold]
        for rid in members:  # connecting a conference member brings the whole conference back
            failed = self._wait("connect", self.agent.unhold(rid), rid)
            if failed:
                return failed
        log.info("row %d: connect", row.id)
        return self._wait("connect", self.agent.unhold(row.id), row.id) or Outcome(True, data={"row": row.id})

    def _hold_others(self, action: str, keep: int | None) -> list[int] | Outcome:
        """Hold every call in conversation except `keep` and its conference: never two
        conversations into one headset. The rows it held, or the refusal (having given them back)."""
        with self._lock:
            spared = self.conference_rows if keep in self.conference_rows else set()
            others = [r.id for r in self.rows.values()
                      if r.id != keep and r.id not in spared and r.up and not r.local_hold]
        held: list[int] = []
        for other in others:
            failed = self._wait(action, self.agent.hold(other), other, gone_ok=True)
            if failed and failed.data.get("gone") == other:
                continue  # it had ended: nothing to hold
            if failed:
                self._give_back(held)
                return failed
            held.append(other)
        return held

    def transfer(self, mode: str, number: str | None = None) -> Outcome:
        """Transfer the selected call: quick (blind), consult, or confirm."""
        if mode == "quick":
            return self._transfer_quick(number)
        if mode == "consult":
            return self._transfer_consult(number)
        if mode == "confirm":
            return self._transfer_confirm()
        return self._refuse("transfer", f"unknown transfer {mode!r}; use quick, consult or confirm")

    def _transfer_quick(self, number: str | None) -> Outcome:
        action = "quick transfer"
        row = self._one_selected(action)
        if isinstance(row, Outcome):
            return row
        if not row.up:
            return self._refuse(action, f"call {row.id} is {row.state}: only an answered call can be transferred", row.id)
        got = self._number(action, number)
        if isinstance(got, Outcome):
            return got
        uri = self.target_uri(got, row.line, None)
        with self._lock:
            if row.id in self.transfers:  # a second REFER would have the caller dial twice
                return self._refuse(action, f"call {row.id} is already being transferred ({row.note})", row.id)
            self.transfers[row.id] = Transfer("quick", uri)
            row.note = f"transferring to {uri}"
            self._changed(row)
        log.info("row %d: quick transfer to %s", row.id, uri)
        failed = self._wait(action, self.agent.transfer(row.id, uri), row.id)
        if failed:
            with self._lock:
                self.transfers.pop(row.id, None)
                if row.id in self.rows:  # not for a call that ended meanwhile
                    row.note = f"transfer not sent: {failed.reason}"
                    self._changed(row)
            return failed
        self._consume(got)
        self._arm_transfer_timeout(row.id)
        return Outcome(True, data={"row": row.id, "to": uri})

    def _transfer_consult(self, number: str | None) -> Outcome:
        action = "consult transfer"
        row = self._one_selected(action)
        if isinstance(row, Outcome):
            return row
        if not row.up:
            return self._refuse(action, f"call {row.id} is {row.state}: consult needs an answered call", row.id)
        got = self._number(action, number)
        if isinstance(got, Outcome):
            return got
        with self._lock:  # what would refuse the dial must not first put the caller on hold
            line = self.registered[row.line]
            if not line.registered:
                return self._refuse(action, f"line {row.line} is not registered ({line.reason})", row.id)
            if len(self.rows) >= MAX_CALLS:
                return self._refuse(action, f"this unit handles at most {MAX_CALLS} calls", row.id)
        if not row.local_hold:
            failed = self._wait(action, self.agent.hold(row.id), row.id)
            if failed:
                return failed
        out = self._dial_on(action, got, row.line, None,
                            created=lambda consult: self.consults.__setitem__(consult, row.id))
        if out.ok:
            self._consume(got)
        if not out.ok:
            with self._lock:
                if row.id in self.rows:
                    row.note = f"consultation failed ({out.reason}): connect to take the call back"
                    self._changed(row)
            return out
        with self._lock:
            consult = out.data["row"]
            if consult not in self.rows:  # refused at once (busy, not found): nothing to consult with
                reason = self.ended_reasons.get(consult, "ended")
                return self._refuse(action, f"the consultation call ended at once ({reason}): "
                                            f"connect call {row.id} to take it back", row.id)
            row.note = f"held for consultation with row {consult}"
            self._changed(row)
        return Outcome(True, data={"row": consult, "held": row.id})

    def _consult_pair(self, action: str) -> tuple[int, int] | Outcome:
        """(held row, consult row) for the selection, or the only pair there is."""
        with self._lock:
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
            return self._refuse(action, f"call {explicit[0]} is not in a consultation ({listed} is): "
                                        "select the held caller or the consulted party")
        return self._refuse(action, "no consultation to confirm: use transfer consult first")

    def _transfer_confirm(self) -> Outcome:
        action = "confirm transfer"
        pair = self._consult_pair(action)
        if isinstance(pair, Outcome):
            return pair
        held, consult = pair
        with self._lock:
            crow, hrow = self.rows.get(consult), self.rows.get(held)
            if crow is None or hrow is None:
                return self._refuse(action, "the consultation has ended")
            if not crow.up:
                return self._refuse(action, f"row {consult} has not answered yet ({crow.state}): "
                                            "wait for the answer, or use a quick transfer", consult)
            if held in self.transfers:
                return self._refuse(action, f"the transfer of call {held} is already under way", held)
            self.transfers[held] = Transfer("confirm", crow.remote, consult)
            hrow.note = f"transferring to {crow.remote}"
            self._changed(hrow)
        log.info("row %d: confirm transfer to row %d", held, consult)
        failed = self._wait(action, self.agent.transfer_replaces(held, consult), held)
        if failed:
            with self._lock:
                self.transfers.pop(held, None)
            return failed
        self._arm_transfer_timeout(held)
        return Outcome(True, data={"row": held, "to": consult})

    def _arm_transfer_timeout(self, row_id: int, delay: float | None = None) -> None:
        """Give up waiting TRANSFER_TIMEOUT after the last NOTIFY (a ringing target keeps it alive)."""
        with self._lock:
            if delay is None:
                self.transfer_deadline[row_id] = time.monotonic() + TRANSFER_TIMEOUT
            transfer = self.transfers.get(row_id)
        timer = threading.Timer(TRANSFER_TIMEOUT if delay is None else delay,
                                self._transfer_timed_out, (row_id, transfer))
        timer.daemon = True
        timer.start()

    def _transfer_timed_out(self, row_id: int, transfer: "Transfer | None") -> None:
        with self._lock:
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
                row.note = "transfer timed out"
                self._changed(row)
        self._refuse(f"{transfer.mode} transfer",
                     f"transfer of call {row_id} got no answer in {TRANSFER_TIMEOUT:.0f} s: the call stays with you",
                     row_id)

    def conference(self, number: str | None = None) -> Outcome:
        """Build a conference: three-party (hold and dial, then join) or join the selected rows."""
        action = "conference"
        rows = self.selected()
        with self._lock:
            pending = self.pending_conference
        if len(rows) > 1:
            return self._join(action, [r.id for r in rows])
        crow = self.rows.get(pending[1]) if pending else None
        if pending and crow is not None and not (number or "").strip() and (not rows or rows[0].id in pending):
            b, c = pending
            if not crow.up:
                return self._refuse(action, f"row {c} has not answered yet ({crow.state})", c)
            with self._lock:
                self.pending_conference = None
            return self._join(action, [b, c])
        if not rows:
            return self._refuse(action, "no call selected")
        row = rows[0]
        if not row.up or row.local_hold:
            return self._refuse(action, f"call {row.id} is {row.state}: talk to the first party, "
                                        "or select the rows to join", row.id)
        got = self._number(action, number)
        if isinstance(got, Outcome):
            return got
        with self._lock:
            # Refuse before holding anyone: a refused next party must leave the calls as they were.
            if len(self.rows) >= MAX_CALLS:
                return self._refuse(action, f"this unit handles at most {MAX_CALLS} calls", row.id)
            line = self.registered.get(row.line)
            if line is not None and not line.registered:
                return self._refuse(action, f"line {row.line} is not registered ({line.reason})", row.id)
            # Adding to a running conference holds all of it, so that no member
            # hears the next party being dialled and consulted.
            to_hold = [row.id] + sorted(
                r for r in self.conference_rows
                if r != row.id and r in self.rows and not self.rows[r].local_hold
            ) if row.id in self.conference_rows else [row.id]
        held: list[int] = []
        for rid in to_hold:
            failed = self._wait(action, self.agent.hold(rid), rid)
            if failed:
                self._give_back(held)
                return failed
            held.append(rid)
        def pend(c: int) -> None:
            self.pending_conference = (row.id, c)

        out = self._dial_on(action, got, row.line, None, created=pend)
        if not out.ok:
            self._give_back(held)
            return out
        self._consume(got)
        return Outcome(True, data={"row": out.data["row"], "held": row.id,
                                   "next": "press conference again when the party answers"})

    def _give_back(self, ids: list[int]) -> None:
        """Take calls held for a step that then failed (consult, conference, pickup) off hold again (best effort)."""
        for rid in ids:
            try:
                self.agent.unhold(rid).result(timeout=AGENT_TIMEOUT)
            except Exception as exc:
                log.warning("row %d: could not take the call off hold again: %s", rid, exc)

    def _join(self, action: str, ids: list[int]) -> Outcome:
        with self._lock:
            for rid in ids:
                row = self.rows.get(rid)
                if row is None:
                    return self._refuse(action, f"no call row {rid}")
                if not row.up:
                    return self._refuse(action, f"call {rid} is {row.state}: only answered calls can join", rid)
            # One operator, one headset: a join always adds to the unit's one
            # conference, never starts a second one beside it.
            members = set(ids) | {r for r in self.conference_rows if r in self.rows}
            # "The last party need not be held": whoever the operator is talking to joins too.
            members |= {r.id for r in self.rows.values() if r.up and not r.local_hold}
            if len(members) > MAX_CALLS:
                return self._refuse(action, f"a conference holds at most {MAX_CALLS} remote parties here")
            held = [rid for rid in members if self.rows[rid].local_hold]
        failed = self._wait(action, self.agent.conference(sorted(members)))
        if failed:
            return failed
        with self._lock:
            self.conference_rows = set(members)
            if self.pending_conference and set(self.pending_conference) <= members:
                self.pending_conference = None  # joined by selecting the rows: a later press is a new step
            remotes = [self.rows[r].remote for r in sorted(members) if r in self.rows]
            for rid in members:  # every member's recording now holds every party
                self.recording_files.parties(rid, remotes)
            for rid in members:
                row = self.rows.get(rid)
                if row:
                    row.state = "in conference" if not row.local_hold else row.state
                    self._changed(row)
        for rid in held:
            failed = self._wait(action, self.agent.unhold(rid), rid)
            if failed:
                return failed
        log.info("conference: rows %s", sorted(members))
        return Outcome(True, data={"conference": sorted(members)})

    def pickup(self, number: str | None = None) -> Outcome:
        """Intercept the call ringing on the internal number (the server's feature code)."""
        action = "pickup"
        got = self._number(action, number)
        if isinstance(got, Outcome):
            return got
        if got.startswith(("sip:", "sips:")) or "@" in got:
            return self._refuse(action, f"pickup needs an internal number, not {got!r}")
        with self._lock:
            before = list(self.selection)
        held: list[int] = []
        out = self._dial_on(action, self.profile.pickup.prefix + got, self.line, None, note=f"pickup of {got}",
                            held_out=held)
        if not out.ok:
            return out
        row_id = out.data["row"]
        waited = self._await_row(row_id, ("talking", "held by remote"), PICKUP_TIMEOUT)
        if waited is None:
            reason = self.ended_reasons.get(row_id, f"no answer in {PICKUP_TIMEOUT:.0f} s")
            if row_id in self.rows:  # still ringing somewhere: do not leave it running
                reason = f"no answer in {PICKUP_TIMEOUT:.0f} s"  # not the 487 of our own cancel
                self.agent.hangup(row_id)
                self._await_gone(row_id, PICKUP_RELEASE)
            # Nothing was picked up: the calls held for it come back, and so does the selection.
            self._give_back(held)
            self._restore_selection(before, row_id)
            # The server's own words: 404 "Nothing ringing", or e.g. 420 from a
            # caller that cannot be picked up (its call goes on ringing there).
            # Said last, so that nothing the give-back causes replaces it on the screen.
            return self._refuse(action, f"cannot pick up the call ringing on {got}: {reason}")
        self._consume(got)  # only now: a pickup that failed keeps the extension for another try
        return Outcome(True, data={"row": row_id, "remote": waited.remote})

    def _await_gone(self, row_id: int, timeout: float) -> bool:
        """Wait until the row has left the table."""
        deadline = time.monotonic() + timeout
        with self._changed_cv:
            while row_id in self.rows:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed_cv.wait(left)
        return True

    def _restore_selection(self, ids: list[int], failed_row: int) -> None:
        """The selection as it was before a step that failed, unless the operator chose otherwise meanwhile."""
        with self._lock:
            if self.selection not in ([], [failed_row]):
                return  # the operator selected something else meanwhile
            keep = [r for r in ids if r in self.rows]
            if keep == self.selection:
                return
            self.selection = keep
            self.selection_lost = False
            self._emit(ev.SelectionChanged(tuple(self.selection)))

    def record(self, action: str) -> Outcome:
        """Start or stop recording the selected call."""
        name = f"record {action}"
        if action not in ("start", "stop"):
            return self._refuse("record", f"unknown record action {action!r}; use start or stop")
        row = self._one_selected(name)
        if isinstance(row, Outcome):
            return row
        if action == "stop" and self.profile.recording.always:
            return self._refuse(name, "recording is always on in this unit's profile: every call is recorded", row.id)
        if action == "start":
            if row.recording:
                return self._refuse(name, f"call {row.id} is already being recorded", row.id)
            if not row.up:
                return self._refuse(name, f"call {row.id} is {row.state}: only an answered call can be recorded", row.id)
            try:
                path = self._begin_recording(row)
            except RecordingRefused as exc:
                return self._refuse(name, str(exc), row.id)
            failed = self._wait(name, self.agent.record(row.id, str(path)), row.id)
            if failed:
                self.recording_files.abort(row.id)
                return failed
            with self._lock:
                row.recording = True
                row.recording_path = str(path)
                self._changed(row)
            return Outcome(True, data={"row": row.id, "file": str(path)})
        if not row.recording:
            return self._refuse(name, f"call {row.id} is not being recorded", row.id)
        failed = self._wait(name, self.agent.record(row.id, None), row.id)
        if failed:
            return failed
        with self._lock:
            row.recording = False
            self._changed(row)
        done = self.recording_files.finish(row.id, "stopped by the operator")
        try:  # so that the file is complete (header, sidecar) when Stop returns
            done.result(timeout=AGENT_TIMEOUT)
        except Exception as exc:
            log.warning("row %d: recording not completed in time: %s", row.id, exc)
        return Outcome(True, data={"row": row.id, "file": row.recording_path})

    def mute(self, state: str = "toggle") -> Outcome:
        """Microphone mute: "on", "off" or "toggle"; the reply says whether it is muted now."""
        if state not in ("on", "off", "toggle"):
            return self._refuse("mute", f"unknown mute state {state!r}; use on, off or toggle")
        with self._lock:
            on = (not self.muted) if state == "toggle" else state == "on"
        agent_mute = getattr(self.agent, "mute", None)
        if agent_mute is None:
            return self._refuse("mute", "this unit cannot mute the microphone")
        failed = self._wait("mute", agent_mute(on))
        if failed:
            return failed
        with self._lock:
            self.muted = on
        log.info("microphone %s", "muted" if on else "on")
        self._emit(ev.MuteChanged(on))  # every front-end shows it, whoever pressed
        return Outcome(True, data={"muted": on})

    def recordings(self) -> Outcome:
        """The recordings kept on this unit, newest first, with duration and whether each was repaired."""
        try:
            return Outcome(True, data={"recordings": self.recording_files.entries()})
        except OSError as exc:
            return self._refuse("recordings", f"cannot read the recordings directory: {exc.strerror or exc}")

    def recording_path(self, row: Row) -> Path:
        """Where a recording of this row started now would go (the real one may add -2 on a clash)."""
        stem = file_stem(time.time(), row.line, row.direction, row.remote, row.id)
        return self.profile.recording.directory / f"{stem}.wav"

    def _begin_recording(self, row: Row) -> Path:
        """Create the recording's files (space checked, sidecar with end null); RecordingRefused if not."""
        with self._lock:
            members = self.conference_rows if row.id in self.conference_rows else {row.id}
            parties = [self.rows[r].remote for r in sorted(members) if r in self.rows]
        return self.recording_files.begin(row.id, line=row.line, direction=row.direction, remote=row.remote,
                                     route=row.route, parties=parties)

    def _record_stop_low_space(self, row_id: int, reason: str) -> None:
        """The disk is (nearly) full: stop this recording cleanly and say so; the call goes on.

        Runs on the recordings thread; the agent's answer arrives on the agent thread.
        """
        self._emit(ev.Alert(f"recording of call {row_id} stopped: {reason}; the call goes on"))

        def done(_: Future[None]) -> None:
            with self._lock:
                row = self.rows.get(row_id)
                if row is not None and row.recording:
                    row.recording = False
                    self._changed(row)
            self.recording_files.finish(row_id, f"stopped: {reason}")

        self.agent.record(row_id, None).add_done_callback(done)

    def _dial_on(self, action: str, number: str, line_id: str, route_id: str | None,
                 note: str = "", created: Callable[[int], None] | None = None,
                 held_out: list[int] | None = None) -> Outcome:
        """Place a call (Call itself, consult, conference, pickup); `held_out` gets the calls it held."""
        with self._lock:
            if not self.registered[line_id].registered:
                return self._refuse(action, f"line {line_id} is not registered ({self.registered[line_id].reason})")
            if len(self.rows) >= MAX_CALLS:
                return self._refuse(action, f"this unit handles at most {MAX_CALLS} calls")
        held = self._hold_others(action, None)
        if isinstance(held, Outcome):
            return held
        with self._lock:
            uri = self.target_uri(number, line_id, route_id)
            row = Row(next(self.ids), line_id, "out", uri, "dialling", route=route_id, note=note)
            self.rows[row.id] = row
            self.selection = [row.id]
            self.selection_lost = False
            if created is not None:  # bookkeeping before any event about the row can arrive
                created(row.id)
            log.info("row %d: %s: dial %s on line %s", row.id, action, uri, line_id)
            self._changed(row)
            self._emit(ev.SelectionChanged(tuple(self.selection)))
        fut = self.agent.dial(row.id, line_id, uri, route_id)
        failed = self._wait(action, fut, row.id)
        if failed:
            if not fut.done():  # the agent may still place it: queue its hang-up behind it
                self.agent.hangup(row.id)
            self._drop(row.id, failed.reason)
            self._give_back(held)
            return failed
        if held_out is not None:
            held_out.extend(held)
        return Outcome(True, data={"row": row.id, "uri": uri})

    def _await_row(self, row_id: int, states: tuple[str, ...], timeout: float) -> Row | None:
        """Wait until the row reaches one of the states (None if it ended or timed out)."""
        deadline = time.monotonic() + timeout
        with self._changed_cv:
            while True:
                row = self.rows.get(row_id)
                if row is None:
                    return None
                if row.state in states:
                    return row
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed_cv.wait(left)

    # --- agent events (agent thread) --------------------------------------

    def on_agent_event(self, event: ev.Event) -> None:
        """Turn what the agent saw into table changes and desk events."""
        with self._lock:
            if isinstance(event, ev.LineState):
                self.registered[event.line] = event
                log.info("line %s: %s (%s %s)", event.line,
                         "registered" if event.registered else "not registered", event.code, event.reason)
                self._emit(event)
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
                    row.state = self._talk_state(row)
                    self._changed(row)
                    # Hold periods are marked in the recording's sidecar (no-op when not recorded).
                    self.recording_files.hold(row.id, event.local_hold, event.remote_hold)
            elif isinstance(event, ev.TransferProgress):
                self._transfer_progress(event)
            elif isinstance(event, ev.Alert):
                log.warning("alert: %s", event.message)
                self._notice("alert", event.message)
                self._emit(event)

    def _progress(self, event: ev.CallProgress) -> None:
        row = self.rows.get(event.call)
        if row is None:
            return
        if event.remote:
            row.remote = event.remote
        if event.state == "ended":
            reason = f"{event.code} {event.reason}".strip() if event.code else event.reason
            failed = row.direction == "out" and row.answered is None and (event.code >= 300 or not event.code) \
                and event.code != 487  # 487: we cancelled it ourselves
            self._drop(row.id, reason)
            if failed:
                # A call that reached nobody says why where the operator looks, and stays readable.
                message = f"call {row.id} to {row.remote} failed: {reason or 'no reason given'}"
                self._notice("dial", message, row.id)
                self._emit(ev.Alert(message))
            return
        if event.state == "talking" and row.answered is None:
            row.answered = time.time()
            if self.profile.recording.always:
                self._record_always(row)
        if event.state == "early":
            row.state = "ringing"
        elif event.state == "talking":
            row.state = self._talk_state(row)
        else:
            row.state = event.state
        log.info("row %d: %s %s", row.id, row.state, event.code or "")
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
        row.note = f"transfer: {event.code} {event.reason}"
        self._changed(row)
        if not event.final:
            if event.call in self.transfer_deadline:
                self.transfer_deadline[event.call] = time.monotonic() + TRANSFER_TIMEOUT
            return
        self.transfers.pop(event.call, None)
        self.late_transfers.pop(event.call, None)
        self.transfer_deadline.pop(event.call, None)
        if 200 <= event.code < 300:
            log.info("row %d: transfer done, leaving the call", row.id)
            self.agent.hangup(row.id)  # not waited: we are on the agent thread
            if transfer.consult is not None:
                # B and C are now talking to each other: our leg to C is no
                # longer a consultation (B's end below must not look like the
                # held caller hanging up on it).
                self.consults.pop(transfer.consult, None)
                crow = self.rows.get(transfer.consult)
                if crow is not None:
                    crow.note = f"transferred to call {row.id}'s caller: leaving"
                    self._changed(crow)
                # The consulted party should drop our leg when it is replaced;
                # if it never does, do not leave a ghost call on the desk.
                timer = threading.Timer(CONSULT_RELEASE, self._release_consult, (transfer.consult,))
                timer.daemon = True
                timer.start()
        elif transfer.consult is not None:
            # E.g. 420 from a phone without Replaces (baresip 1.0), 486 from a
            # busy target: nothing was dropped, the operator chooses what next.
            self._refuse(f"{transfer.mode} transfer",
                         f"transfer of call {row.id} to call {transfer.consult} failed: {event.code} {event.reason}; "
                         f"both calls stay with you: confirm again, connect call {row.id} to go back to the "
                         f"caller, or hang up call {transfer.consult}", row.id)
        else:
            self._refuse(f"{transfer.mode} transfer",
                         f"transfer of call {row.id} failed: {event.code} {event.reason}; the call stays with you",
                         row.id)

    def _record_always(self, row: Row) -> None:
        """Global recording: start at answer (agent thread: do not wait for it)."""
        try:
            path = self._begin_recording(row)
        except RecordingRefused as exc:  # e.g. the disk is full: the call goes on unrecorded
            log.warning("row %d: global recording refused: %s", row.id, exc)
            self._emit(ev.Alert(f"call {row.id} is not recorded: {exc}"))
            return
        row.recording, row.recording_path = True, str(path)
        fut = self.agent.record(row.id, str(path))

        def done(f: Future[None]) -> None:
            exc = f.exception()
            if exc is not None:
                self.recording_files.abort(row.id)
                with self._lock:
                    row.recording = False
                    self._changed(row)
                self._emit(ev.Alert(f"cannot record call {row.id}: {exc}"))

        fut.add_done_callback(done)

    def _release_consult(self, row_id: int) -> None:
        if row_id in self.rows:
            log.info("row %d: consulted leg not released by the far end after confirm: hanging up", row_id)
            self.agent.hangup(row_id)

    def _drop(self, row_id: int, reason: str) -> None:
        with self._changed_cv:
            if self.rows.pop(row_id, None) is None:
                return
            log.info("row %d: ended (%s)", row_id, reason)
            # The agent released the call's recorder: complete its files in the background.
            self.recording_files.finish(row_id, f"call ended: {reason}" if reason else "call ended")
            self.ended_reasons[row_id] = reason
            if len(self.ended_reasons) > 64:
                self.ended_reasons.pop(next(iter(self.ended_reasons)))
            if row_id in self.selection:
                self.selection.remove(row_id)
                self.selection_lost = not self.selection
                # A call the desk placed for a step (consultation, conference) goes back
                # to the call the operator had selected for that step.
                origin = self.consults.get(row_id)
                if origin is None and self.pending_conference and self.pending_conference[1] == row_id:
                    origin = self.pending_conference[0]
                if not self.selection and origin in self.rows:
                    self.selection = [origin]
                    self.selection_lost = False
                    self._emit(ev.SelectionChanged(tuple(self.selection)))
            if not self.rows:
                self.selection_lost = False  # an empty table: the next single call is obvious again
            self.late_transfers.pop(row_id, None)
            self.transfer_deadline.pop(row_id, None)
            held = self.consults.pop(row_id, None)
            if held is not None and held in self.rows:
                self.rows[held].note = f"consultation ended ({reason})"
                self._changed(self.rows[held])
            for consult, h in list(self.consults.items()):
                if h == row_id:
                    del self.consults[consult]
                    crow = self.rows.get(consult)
                    if crow is not None:  # an ordinary call from now on
                        crow.note = f"the held caller hung up ({reason})"
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
            self._changed_cv.notify_all()
            self._emit(ev.RowRemoved(row_id, reason))


COMMANDS = ("select", "set", "dial", "answer", "hangup", "hold", "connect", "transfer",
            "conference", "pickup", "record")
