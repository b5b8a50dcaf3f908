"""A fake SIP agent and a ready-made profile, so desk rules are tested in milliseconds.

The desk takes its agent as an object (the gpiozero MockFactory idea applied to
SIP): `FakeAgent` answers every request at once with an already-resolved Future,
or with a failure or a never-resolved Future when a test scripts one, and keeps
a list of what it was asked. What the network would do (a line registers, a
call rings, the far end answers or hangs up) is done by the test through the
helper methods, which deliver events to the desk exactly as the real agent
thread does: by calling the listener given to `start()`.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

from kiosk import events as ev
from kiosk.desk import AgentError
from kiosk.profile import Control, Line, Operator, Profile, Recording, Route, Sip

def make_profile(
    *,
    default_route: str | None = "city",
    path: Path = Path("/etc/kiosk/test-profile.toml"),
    recordings: Path | None = None,
    record_always: bool = False,
    socket: Path | None = None,
) -> Profile:
    """A Profile with two lines and two routes, built from the dataclasses (no TOML involved).

    Lines: op1 (sip:1001@pbx.test) and op2 (sip:1002@pbx2.test).
    Routes: city (on op1, prefix 9) and trunk (on op2, prefix 8, through a trunk proxy).
    Recordings and the control socket default to the running test's own tmp_path
    (`own_tmp_path`): a test writes nowhere else, and no two tests share a file.
    """
    if recordings is None or socket is None:
        base = own_tmp_path()
        recordings = base / "recordings" if recordings is None else recordings
        socket = base / "control.sock" if socket is None else socket
    lines = (
        Line("op1", "Operator 1", "sip:1001@pbx.test", "sip:pbx.test:5060", "1001", password="secret1"),
        Line("op2", "Operator 2", "sip:1002@pbx2.test", "sip:pbx2.test:5060", "1002", password="secret2"),
    )
    routes = (
        Route("city", "City", line="op1", prefix="9"),
        Route("trunk", "Trunk", line="op2", prefix="8", proxy="sip:trunk.test:5060"),
    )
    return Profile(
        path=path,
        operator=Operator("Test Operator", "en"),
        sip=Sip(default_route=default_route),
        lines=lines,
        routes=routes,
        recording=Recording(always=record_always, directory=recordings),
        control=Control(socket=socket),
    )


def _resolved(error: BaseException | None = None) -> Future[None]:
    fut: Future[None] = Future()
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)
    return fut


class FakeAgent:
    """Implements the desk's `Agent` protocol without SIP; the test plays the network.

    Hold and unhold are followed by the CallMedia event a real re-INVITE would
    produce (the far end has no say in that); everything else the far end does,
    answering included, the test says explicitly with the helpers below.
    """

    def __init__(self) -> None:
        self.listener: Callable[[ev.Event], None] | None = None
        self.new_id: Callable[[], int] | None = None
        self.started = False
        self.stopped = False
        #: Every request in order, e.g. ("dial", 1, "op1", "sip:91002@pbx.test", "city").
        self.received: list[tuple[Any, ...]] = []
        self._scripted: dict[str, deque[Future[None]]] = {}
        self._lock = threading.Lock()
        #: Every tone the desk asked for, in order (None: silence); kept apart from `received`.
        self.tones: list[str | None] = []
        #: The refusal code while do-not-disturb is on (None: off).
        self.dnd: int | None = None

    # --- the Agent protocol ---------------------------------------------------------

    def start(self, listener: Callable[[ev.Event], None], new_id: Callable[[], int]) -> None:
        self.listener = listener
        self.new_id = new_id
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def dial(self, call: int, line: str, uri: str, route: str | None) -> Future[None]:
        return self._request("dial", call, line, uri, route)

    def answer(self, call: int) -> Future[None]:
        return self._request("answer", call)

    def hangup(self, call: int) -> Future[None]:
        return self._request("hangup", call)

    def hold(self, call: int) -> Future[None]:
        fut = self._request("hold", call)
        self._media_after(fut, call, local_hold=True)
        return fut

    def unhold(self, call: int) -> Future[None]:
        fut = self._request("unhold", call)
        self._media_after(fut, call, local_hold=False)
        return fut

    def transfer(self, call: int, uri: str) -> Future[None]:
        return self._request("transfer", call, uri)

    def transfer_replaces(self, call: int, target: int) -> Future[None]:
        return self._request("transfer_replaces", call, target)

    def conference(self, calls: list[int]) -> Future[None]:
        return self._request("conference", list(calls))

    def record(self, call: int, path: str | None) -> Future[None]:
        return self._request("record", call, path)

    def mute(self, on: bool) -> Future[None]:
        return self._request("mute", on)

    def tone(self, kind: str | None) -> Future[None]:
        with self._lock:
            self.tones.append(kind)
        return _resolved()

    @property
    def playing(self) -> str | None:
        """The tone the desk wants played now."""
        with self._lock:
            return self.tones[-1] if self.tones else None

    def dtmf(self, call: int, digits: str, method: str) -> Future[None]:
        return self._request("dtmf", call, digits, method)

    def beep(self) -> Future[None]:
        return self._request("beep")

    def set_dnd(self, code: int | None) -> Future[None]:
        fut = self._request("set_dnd", code)
        if fut.done() and fut.exception() is None:
            self.dnd = code
        return fut

    def _request(self, action: str, *args: Any) -> Future[None]:
        with self._lock:
            self.received.append((action, *args))
            scripted = self._scripted.get(action)
            if scripted:
                return scripted.popleft()
        return _resolved()

    def _media_after(self, fut: Future[None], call: int, local_hold: bool) -> None:
        # Only a request that succeeded changes the media, and only once it has
        # (a stalled hold sends its event when the test resolves the Future).
        def done(f: Future[None]) -> None:
            if f.exception() is None and self.listener is not None:
                self.emit(ev.CallMedia(call, local_hold=local_hold, remote_hold=False))

        fut.add_done_callback(done)

    # --- scripting the agent's answers ------------------------------------------------

    def requests(self, action: str) -> list[tuple[Any, ...]]:
        """The arguments of every `action` request received, oldest first."""
        return [r[1:] for r in self.received if r[0] == action]

    def fail_next(self, action: str, error: BaseException | str) -> None:
        """The next `action` fails; a string becomes an AgentError, as the real agent raises."""
        exc = AgentError(error) if isinstance(error, str) else error
        self._scripted.setdefault(action, deque()).append(_resolved(exc))

    def stall_next(self, action: str) -> Future[None]:
        """The next `action` never resolves by itself; the test gets the Future to resolve later."""
        fut: Future[None] = Future()
        self._scripted.setdefault(action, deque()).append(fut)
        return fut

    # --- playing the network -----------------------------------------------------------

    def emit(self, event: ev.Event) -> None:
        """Deliver an agent event to the desk, as the agent thread would, and (from a test's
        thread) wait until the desk has applied it: the test reads the table right after."""
        if self.listener is None:
            raise RuntimeError("FakeAgent.start() was not called (did the test forget desk.start()?)")
        self.listener(event)
        desk = getattr(self.listener, "__self__", None)
        settle = getattr(desk, "settle", None)
        if settle is not None and not desk.on_loop():
            settle()

    def register(self, line: str, registered: bool = True, code: int = 200, reason: str = "OK") -> None:
        """The registrar answered a REGISTER for `line`."""
        self.emit(ev.LineState(line, registered, code, reason))

    def register_all(self, profile: Profile) -> None:
        """Every line of the profile registers."""
        for line in profile.lines:
            self.register(line.id)

    def ring(self, remote: str = "sip:2001@pbx.test", line: str = "op1", call: int | None = None,
             **fields: Any) -> int:
        """A call rings on `line`; returns its row id, drawn from the desk's counter as the real agent does.

        `fields`: IncomingCall's via, intercom, answer_after_ms. While do-not-disturb is set the call is
        refused as the real agent refuses it (IncomingCall with `refused`) and never rings.
        """
        if call is None:
            if self.new_id is None:
                raise RuntimeError("FakeAgent.start() was not called (did the test forget desk.start()?)")
            call = self.new_id()
        if self.dnd is not None:
            fields = {**fields, "refused": self.dnd}
        self.emit(ev.IncomingCall(call, line, remote, **fields))
        return call

    def progress(self, call: int, state: str, code: int = 0, reason: str = "", remote: str = "") -> None:
        """The call's SIP state moved (dialling, ringing, early, talking, ended)."""
        self.emit(ev.CallProgress(call, state, code, reason, remote))

    def ringing(self, call: int) -> None:
        """The far end of an outgoing call is ringing (180)."""
        self.progress(call, "ringing", 180, "Ringing")

    def talking(self, call: int) -> None:
        """The call is answered (200 OK / ACK)."""
        self.progress(call, "talking", 200, "OK")

    def ended(self, call: int, code: int = 200, reason: str = "Normal call clearing", elsewhere: bool = False) -> None:
        """The call is over (BYE, CANCEL, or a final failure response)."""
        self.emit(ev.CallProgress(call, "ended", code, reason, "", elsewhere))

    def transfer_status(self, call: int, code: int, reason: str, final: bool = True) -> None:
        """A NOTIFY about the REFER we sent for `call` arrived (sipfrag `code reason`)."""
        self.emit(ev.TransferProgress(call, code, reason, final))

    def remote_hold(self, call: int, held: bool = True) -> None:
        """The far end put the call on hold (or took it off) with its own re-INVITE."""
        self.emit(ev.CallMedia(call, local_hold=False, remote_hold=held))


# --- where a test may write --------------------------------------------------------------

#: The running test's tmp_path; tests/conftest.py sets it around every test.
_test_tmp_path: Path | None = None
#: Makes a new directory in pytest's temporary tree (tmp_path_factory); set by conftest once per session.
_new_tmp_dir: Callable[[], Path] | None = None


def set_own_tmp_path(path: Path | None) -> None:
    """Make `path` the running test's own directory (None when the test is over)."""
    global _test_tmp_path
    _test_tmp_path = path


def set_new_tmp_dir(make: Callable[[], Path] | None) -> None:
    """How `own_tmp_path` makes a directory where no test's tmp_path exists yet (None: outside pytest)."""
    global _new_tmp_dir
    _new_tmp_dir = make


def own_tmp_path() -> Path:
    """The running test's own tmp_path, for default paths such as make_profile's.

    In a module- or session-scoped fixture, set up before any test's tmp_path,
    it is a new directory of pytest's temporary tree instead. Outside pytest
    there is neither, and a fixed place under /tmp would be shared by every run
    on the machine: pass the paths then.
    """
    if _test_tmp_path is not None:
        return _test_tmp_path
    if _new_tmp_dir is not None:
        return _new_tmp_dir()
    raise RuntimeError("no test is running (tests/conftest.py sets its tmp_path): pass recordings= and socket=")


# --- the shipped example profile, as git checks it out --------------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "kiosk" / "examples"


def example_profile(directory: Path) -> Path:
    """Copy kiosk/examples (the profile and its secrets/) into `directory` with the modes git
    gives them on checkout, and return the profile's path.

    Git stores only 100644 or 100755 (whether the owner may execute), whatever the mode in
    the working tree, so every copy is 0644 (0755 if executable) and every folder 0755: what
    a fresh clone holds, and what `kiosk check-profile` must accept.
    """
    for src in sorted(EXAMPLES.rglob("*")):
        if "__pycache__" in src.parts:
            continue
        dest = directory / src.relative_to(EXAMPLES)
        if src.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            dest.chmod(0o755)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(src.read_bytes())
        dest.chmod(0o755 if src.stat().st_mode & 0o100 else 0o644)
    return directory / "profile.toml"
