"""The desk as the touchscreen's own process sees it: the unit's control socket, like any CTI client.

`RemoteDesk` has the surface the panel and DeskFrontend use on an in-process
kiosk.desk.Desk: the desk commands (same arguments, a kiosk.desk.Outcome back),
`snapshot()`, `subscribe(listener)`, `number`, `selection`, `muted` and
`profile`. A command is one request on the socket; events come from one
`events` stream read by a thread of its own and turned back into the
kiosk.events dataclasses.

The unit may go away (restarting, upgraded) and come back: the reader then
emits `LinkChanged(False, reason)`, keeps trying to connect, and on success
emits `LinkChanged(True, snapshot=...)` with the unit's current state. While
the link is down a command is refused with a reason; nothing raises. No Kivy here.
"""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from kiosk import events as ev
from kiosk.control import ControlError, json_lines, open_events, request
from kiosk.desk import Outcome
from kiosk.profile import Profile

log = logging.getLogger("kiosk.ui")

#: Seconds between attempts to reach a unit that is not there: first, then doubling up to the last.
RETRY_FIRST, RETRY_MAX = 0.25, 2.0
#: How long a connect (and the snapshot line after it) may take before the unit counts as not answering.
CONNECT_TIMEOUT = 10.0


class RemoteDesk:
    """A kiosk.desk.Desk look-alike over the control socket at `path`."""

    def __init__(self, path: Path | str, profile: Profile) -> None:
        self.path = Path(path)
        self.profile = profile
        self._lock = threading.Lock()
        self._listeners: list[Callable[[ev.Event], None]] = []
        self._state: dict[str, Any] = self._empty_state()
        self.connected = False
        self._stopping = threading.Event()
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None

    def _empty_state(self) -> dict[str, Any]:
        profile = self.profile
        route = profile.sip.default_route or (profile.routes[0].id if profile.routes else "")
        line = profile.route(route).line if route else profile.lines[0].id
        return {
            "line": line, "number": "", "route": route,
            "lines": [{"id": ln.id, "registered": False, "code": 0, "reason": "the unit is not reachable"}
                      for ln in profile.lines],
            "routes": [r.id for r in profile.routes], "calls": [], "selection": [], "muted": False,
        }

    # --- wiring ------------------------------------------------------------------

    def start(self) -> None:
        """Follow the unit's events on a thread of their own (also done by the first subscribe)."""
        with self._lock:
            if self._reader is not None:
                return
            self._reader = threading.Thread(target=self._read, name="kiosk-ui-events", daemon=True)
        self._reader.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop following the unit (the unit itself is not touched)."""
        self._stopping.set()
        with self._lock:
            sock, reader = self._sock, self._reader
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout)

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
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            try:
                reason = self._follow(sock)
            finally:
                with self._lock:
                    self._sock = None
                sock.close()
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
                        return f"the unit refused the event stream: {obj.get('error', obj)}"
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
        log.info("touchscreen: following the unit at %s", self.path)
        self._emit(ev.LinkChanged(True, "", state))

    def _link_down(self, reason: str) -> None:
        with self._lock:
            self.connected = False
        self._emit(ev.LinkChanged(False, reason))

    def _track(self, event: ev.Event) -> None:
        """Keep the local copy of the panel's state up to date with one event."""
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
            elif isinstance(event, ev.LineState):
                s["lines"] = [{"id": event.line, "registered": event.registered, "code": event.code,
                               "reason": event.reason} if ln["id"] == event.line else ln for ln in s["lines"]]

    @staticmethod
    def _replace_row(calls: list[dict[str, Any]], row: dict[str, Any]) -> list[dict[str, Any]]:
        """The call rows with `row` in its place (or added at the end, as the desk adds it)."""
        if any(c.get("id") == row.get("id") for c in calls):
            return [row if c.get("id") == row.get("id") else c for c in calls]
        return [*calls, row]

    def _copy(self) -> dict[str, Any]:
        s = self._state
        return {**s, "lines": [dict(ln) for ln in s["lines"]], "calls": [dict(c) for c in s["calls"]],
                "selection": list(s["selection"])}

    # --- reading ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The panel as the unit has it now; while the unit is away, the last state seen."""
        reply = self._request("calls")
        if reply is not None and reply.get("ok") and isinstance(reply.get("data"), dict):
            return reply["data"]
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

    # --- the desk commands --------------------------------------------------------------

    def _request(self, cmd: str, **args: Any) -> dict[str, Any] | None:
        try:
            return request(self.path, cmd, **{k: v for k, v in args.items() if v is not None})
        except ControlError as exc:
            log.info("touchscreen: %s not sent: %s", cmd, exc)
            return None

    def _command(self, cmd: str, **args: Any) -> Outcome:
        reply = self._request(cmd, **args)
        if reply is None:
            return Outcome.refuse("the unit is not reachable (restarting?): nothing was done")
        if reply.get("ok"):
            data = reply.get("data")
            return Outcome(True, data=data if isinstance(data, dict) else {})
        return Outcome.refuse(str(reply.get("error", "refused")))

    def select(self, row_ids: Iterable[int]) -> Outcome:
        return self._command("select", rows=[int(r) for r in row_ids])

    def set(self, name: str, value: str) -> Outcome:
        return self._command("set", name=name, value=value)

    def dial(self, number: str | None = None) -> Outcome:
        return self._command("dial", number=number)

    def answer(self) -> Outcome:
        return self._command("answer")

    def hangup(self) -> Outcome:
        return self._command("hangup")

    def hold(self) -> Outcome:
        return self._command("hold")

    def connect(self) -> Outcome:
        return self._command("connect")

    def transfer(self, mode: str, number: str | None = None) -> Outcome:
        return self._command("transfer", mode=mode, number=number)

    def conference(self, number: str | None = None) -> Outcome:
        return self._command("conference", number=number)

    def pickup(self, number: str | None = None) -> Outcome:
        return self._command("pickup", number=number)

    def record(self, action: str) -> Outcome:
        return self._command("record", action=action)

    def mute(self, state: str = "toggle") -> Outcome:
        return self._command("mute", state=state)

    def recordings(self) -> Outcome:
        return self._command("recordings")
