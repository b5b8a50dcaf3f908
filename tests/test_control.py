"""The control socket for real: a Unix socket in tmp_path, a Desk on the FakeAgent, `kiosk ctl` on top."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from kiosk import control
from kiosk.control import ControlError, ControlServer, ctl_main, request, stream_events
from kiosk.desk import Desk, Outcome

from .fakes import FakeAgent, make_profile

pytestmark = pytest.mark.timeout(30)  # a hung socket must fail the test, not the whole run


@dataclass
class Unit:
    desk: Desk
    agent: FakeAgent
    server: ControlServer
    path: Path


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[Unit]:
    profile = make_profile(recordings=tmp_path / "recordings")
    agent = FakeAgent()
    desk = Desk(profile, agent)
    desk.start()
    agent.register_all(profile)
    path = tmp_path / "run" / "control.sock"
    server = ControlServer(desk, path)
    server.start()
    yield Unit(desk, agent, server, path)
    server.stop()


class Raw:
    """A hand-driven client connection, for what `request()` would never send."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(str(path))
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def ask(self, obj: Any) -> dict[str, Any]:
        self.send(json.dumps(obj).encode() + b"\n")
        return self.line()

    def line(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def at_eof(self, timeout: float = 5) -> bool:
        """True once the server has closed (whatever it sent before is skipped)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
        return True

    def close(self) -> None:
        self.sock.close()


def eventually(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def track_subscriptions(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> list[Callable[..., None]]:
    """Make desk.subscribe report its live listeners in the returned list."""
    live: list[Callable[..., None]] = []
    subscribe = desk.subscribe

    def tracking(listener: Callable[..., None]) -> Callable[[], None]:
        unsubscribe = subscribe(listener)
        live.append(listener)

        def untrack() -> None:
            if listener in live:
                live.remove(listener)
            unsubscribe()

        return untrack

    monkeypatch.setattr(desk, "subscribe", tracking)
    return live


# --- commands round-trip ----------------------------------------------------------------


def test_calls_returns_the_panel_snapshot(unit: Unit) -> None:
    reply = request(unit.path, "calls")

    assert reply["ok"] is True
    data = reply["data"]
    assert (data["line"], data["number"], data["route"]) == ("op1", "", "city")
    assert data["routes"] == ["city", "trunk"]
    assert [line["id"] for line in data["lines"] if line["registered"]] == ["op1", "op2"]
    assert data["calls"] == [] and data["selection"] == []


def test_set_and_dial_reach_the_agent(unit: Unit) -> None:
    assert request(unit.path, "set", name="number", value="1002") == {
        "ok": True, "data": {"line": "op1", "number": "1002", "route": "city"}}

    reply = request(unit.path, "dial")

    assert reply == {"ok": True, "data": {"row": 1, "uri": "sip:91002@pbx.test"}}
    assert unit.agent.requests("dial") == [(1, "op1", "sip:91002@pbx.test", "city")]


def test_select_answer_and_hangup_act_on_the_selected_call(unit: Unit) -> None:
    _first, second = unit.agent.ring(), unit.agent.ring()

    assert request(unit.path, "select", rows=[second]) == {"ok": True, "data": {"selection": [second]}}
    assert request(unit.path, "answer") == {"ok": True, "data": {"row": second}}
    assert request(unit.path, "hangup") == {"ok": True, "data": {"row": second}}

    assert unit.agent.requests("answer") == [(second,)]
    assert unit.agent.requests("hangup") == [(second,)]


def test_a_refusal_comes_back_with_the_desks_reason(unit: Unit) -> None:
    assert request(unit.path, "answer") == {"ok": False, "error": "no call selected"}


def test_dial_without_a_number_names_the_missing_number(unit: Unit) -> None:
    assert request(unit.path, "dial") == {"ok": False, "error": "number required for dial"}


def test_later_desk_commands_get_their_arguments(unit: Unit) -> None:
    call = unit.agent.ring()
    unit.agent.talking(call)

    reply = request(unit.path, "transfer", mode="quick", number="1003")

    assert reply == {"ok": True, "data": {"row": call, "to": "sip:1003@pbx.test"}}
    assert unit.agent.requests("transfer") == [(call, "sip:1003@pbx.test")]
    assert request(unit.path, "record", action="start")["data"]["row"] == call


def test_a_command_the_desk_does_not_have_yet_is_refused(unit: Unit, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(control.COMMANDS, "later", control.Command("later_feature", help="not built yet"))
    assert not hasattr(unit.desk, "later_feature")
    assert request(unit.path, "later") == {"ok": False, "error": "later is not available on this unit yet"}


def test_recordings_lists_what_the_desk_recorded(unit: Unit) -> None:
    call = unit.agent.ring()
    unit.agent.talking(call)
    path = request(unit.path, "record", action="start")["data"]["file"]

    listed = request(unit.path, "recordings")["data"]["recordings"]

    assert [(r["file"], r["recording"]) for r in listed] == [(path, True)]


def test_an_unknown_command_is_refused_naming_the_known_ones(unit: Unit) -> None:
    reply = request(unit.path, "reboot")

    assert reply["ok"] is False
    assert reply["error"].startswith("unknown command 'reboot'; commands: calls, select, set, dial, answer, hangup")
    assert reply["error"].endswith("events")


@pytest.mark.parametrize(
    ("cmd", "args", "error"),
    [
        ("select", {"rows": "1"}, "'rows' of select must be a list of row numbers, not \"1\""),
        ("select", {"rows": [True]}, "'rows' of select must be a list of row numbers, not [true]"),
        ("select", {}, "select needs 'rows' (a list of row numbers)"),
        ("set", {"name": "number", "value": 1002}, "'value' of set must be a string, not 1002"),
        ("set", {"name": "volume", "value": "11"}, "'name' of set must be one of line, number, route, not 'volume'"),
        ("dial", {"number": 1002}, "'number' of dial must be a string, not 1002"),
        ("dial", {"to": "1002"}, "dial does not take 'to'; it takes number"),
        ("answer", {"row": 1}, "answer does not take 'row'; it takes no arguments"),
        ("transfer", {"mode": "sideways"}, "'mode' of transfer must be one of quick, consult, confirm, not 'sideways'"),
        ("record", {}, "record needs 'action' (a string)"),
    ],
)
def test_wrong_arguments_are_refused_before_reaching_the_desk(
    unit: Unit, cmd: str, args: dict[str, Any], error: str
) -> None:
    assert request(unit.path, cmd, **args) == {"ok": False, "error": error}
    assert unit.agent.received == []


def test_null_arguments_count_as_not_given(unit: Unit) -> None:
    raw = Raw(unit.path)
    try:
        assert raw.ask({"cmd": "dial", "args": {"number": None}}) == {"ok": False, "error": "number required for dial"}
        assert raw.ask({"cmd": "calls", "args": None})["ok"] is True
    finally:
        raw.close()


def test_malformed_requests_get_errors_and_the_connection_keeps_serving(unit: Unit) -> None:
    raw = Raw(unit.path)
    try:
        raw.send(b"dial 1002\n")
        assert raw.line()["error"].startswith("request is not valid JSON")
        raw.send(b"[1, 2]\n")
        assert raw.line() == {"ok": False, "error": 'request must be a JSON object like {"cmd": "calls"}'}
        raw.send(b'{"args": {}}\n')
        assert raw.line()["error"].startswith('request has no "cmd" string; commands: calls, ')
        raw.send(b'{"cmd": "dial", "args": ["1002"]}\n')
        assert raw.line() == {"ok": False, "error": '"args" of dial must be a JSON object'}
        raw.send(b"\xff\xfe\n")
        assert raw.line() == {"ok": False, "error": "request is not UTF-8 text"}
        raw.send(b"[" * 60_000 + b"\n")
        assert raw.line() == {"ok": False, "error": "request is nested too deeply"}
        raw.send(b'{"cmd": "select", "args": {"rows": [' + b"9" * 5000 + b']}}\n')  # past int's digit limit
        assert raw.line()["error"].startswith("request is not valid JSON")
        raw.send(b"\n   \n")  # blank lines are no requests and get no replies
        raw.send(b'{"cmd": "x", "pad": "' + b"a" * (70 * 1024) + b'"}\n{"cmd": "calls"}\n')
        assert raw.line() == {"ok": False, "error": "request line longer than 65536 bytes"}
        assert raw.line()["ok"] is True
    finally:
        raw.close()


def test_an_endless_line_is_answered_at_once_and_skipped_to_its_end(unit: Unit) -> None:
    raw = Raw(unit.path)
    try:
        raw.send(b"x" * (control.MAX_LINE + 10))
        assert raw.line() == {"ok": False, "error": "request line longer than 65536 bytes"}
        raw.send(b"still the same line" * 1000)
        raw.send(b'\n{"cmd": "calls"}\n')
        assert raw.line()["ok"] is True
    finally:
        raw.close()


def test_a_line_of_exactly_the_limit_is_accepted(unit: Unit) -> None:
    body = b'{"cmd": "calls", "pad": "'
    line = body + b"a" * (control.MAX_LINE - len(body) - 2) + b'"}'
    assert len(line) == control.MAX_LINE
    raw = Raw(unit.path)
    try:
        raw.send(line + b"\n")
        assert raw.line()["ok"] is True  # the unknown key "pad" is ignored, like any extra key
    finally:
        raw.close()


def test_a_desk_exception_becomes_an_error_reply_and_the_server_lives_on(
    unit: Unit, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Outcome:
        raise RuntimeError("table corrupted")

    monkeypatch.setattr(unit.desk, "answer", broken)

    reply = request(unit.path, "answer")

    assert reply == {"ok": False,
                     "error": "answer failed inside the unit (RuntimeError: table corrupted); see the unit's log"}
    assert "desk failed on answer" in caplog.text
    assert request(unit.path, "calls")["ok"] is True


def test_each_client_is_served_on_its_own(unit: Unit) -> None:
    idle = Raw(unit.path)  # connected, never sends anything
    try:
        replies = []
        threads = [threading.Thread(target=lambda: replies.append(request(unit.path, "calls"))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert [r["ok"] for r in replies] == [True] * 8
    finally:
        idle.close()


# --- many clients at once: a bounded server --------------------------------------------


@contextlib.contextmanager
def serving(tmp_path: Path, **kw: Any) -> Iterator[Unit]:
    """A unit whose control server is built with the given limits (idle_timeout, max_clients, ...)."""
    profile = make_profile(recordings=tmp_path / "recordings")
    agent = FakeAgent()
    desk = Desk(profile, agent)
    desk.start()
    agent.register_all(profile)
    path = tmp_path / "run" / "control.sock"
    with ControlServer(desk, path, **kw) as server:
        yield Unit(desk, agent, server, path)


def os_threads() -> int:
    """Every thread of this process, Python's or not."""
    return len(os.listdir("/proc/self/task"))



def _at_once(client: Callable[[], None], n: int) -> None:
    """Run `client` on n threads together and wait for them all."""
    threads = [threading.Thread(target=client) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

def test_fifty_clients_connecting_at_once_all_get_answers(unit: Unit) -> None:
    # Plain sockets with a timeout and no retry: what failed with EAGAIN on a backlog of 5.
    start = threading.Barrier(50)
    replies: list[Any] = []

    def client() -> None:
        start.wait()
        try:
            raw = Raw(unit.path)
            try:
                replies.append(raw.ask({"cmd": "calls"})["ok"])
            finally:
                raw.close()
        except OSError as exc:
            replies.append(exc)

    _at_once(client, 50)
    assert replies == [True] * 50


def test_fifty_requests_at_once_all_get_answers(unit: Unit) -> None:
    start = threading.Barrier(50)
    replies: list[Any] = []

    def client() -> None:
        start.wait()
        try:
            replies.append(request(unit.path, "calls")["ok"])
        except ControlError as exc:
            replies.append(exc)

    _at_once(client, 50)
    assert replies == [True] * 50


def test_a_client_retries_while_the_listen_queue_is_full(tmp_path: Path) -> None:
    path = tmp_path / "busy.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)  # room for one queued connection
    first = control._connect(path, 5)
    try:
        with pytest.raises(BlockingIOError):  # what a plain connect gets now
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(5)
            try:
                probe.connect(str(path))
            finally:
                probe.close()
        accepted: list[socket.socket] = []
        later = threading.Timer(0.3, lambda: accepted.append(listener.accept()[0]))
        later.start()
        started = time.monotonic()
        second = control._connect(path, 5)  # waits for the queue to have room
        assert 0.2 < time.monotonic() - started < 3
        second.close()
        later.join()
        for sock in accepted:
            sock.close()
    finally:
        first.close()
        listener.close()


def test_a_client_gives_up_on_a_listen_queue_that_stays_full(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "CONNECT_WAIT", 0.2)
    path = tmp_path / "stuck.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)
    first = control._connect(path, 5)
    try:
        with pytest.raises(ControlError, match=r"is too busy to accept a connection \(tried for 0.2 s\)"):
            request(path, "calls")
    finally:
        first.close()
        listener.close()


def test_a_thousand_idle_clients_cost_no_threads_and_calls_stays_fast(tmp_path: Path) -> None:
    clients = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * clients + 200  # both ends of every connection live in this process
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    idle: list[socket.socket] = []
    try:
        with serving(tmp_path, max_clients=clients + 10) as unit:
            assert request(unit.path, "calls")["ok"] is True  # the worker for reads exists now
            before = os_threads()
            for _ in range(clients):
                idle.append(control._connect(unit.path, 5))
            eventually(lambda: unit.server.connections == clients, timeout=10)
            assert os_threads() - before < 20

            took = []
            for _ in range(100):
                started = time.perf_counter()
                assert request(unit.path, "calls")["ok"] is True
                took.append(time.perf_counter() - started)
            took.sort()
            p95 = took[94]
            assert p95 < 0.050, f"calls p95 {p95 * 1000:.1f} ms with {clients} idle clients"
            assert os_threads() - before < 20
            eventually(lambda: unit.server.connections == clients)  # the idle ones are all still there
            print(f"\n{clients} idle clients: {os_threads() - before:+d} threads; calls median "
                  f"{took[49] * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms, max {took[-1] * 1000:.2f} ms")
            started = time.monotonic()
        assert time.monotonic() - started < 5  # stop() ends them all
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_calls_answers_at_once_while_desk_commands_wait_for_the_agent(
    unit: Unit, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    waiting: list[int] = []

    def slow_answer() -> Outcome:  # an answer whose SIP transaction takes its time
        waiting.append(1)
        release.wait(10)
        return Outcome(True, data={"row": 1})

    monkeypatch.setattr(unit.desk, "answer", slow_answer)
    replies: list[dict[str, Any]] = []
    slow = [threading.Thread(target=lambda: replies.append(request(unit.path, "answer")))
            for _ in range(control.WORKERS + 2)]  # more than there are workers
    try:
        for t in slow:
            t.start()
        eventually(lambda: len(waiting) == control.WORKERS)

        started = time.monotonic()
        assert request(unit.path, "calls")["ok"] is True
        assert request(unit.path, "set", name="number", value="1002")["ok"] is True
        assert time.monotonic() - started < 0.5
        assert replies == []
    finally:
        release.set()
        for t in slow:
            t.join(10)
    assert replies == [{"ok": True, "data": {"row": 1}}] * (control.WORKERS + 2)


def test_an_idle_connection_is_told_and_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    with serving(tmp_path, idle_timeout=0.3) as unit:
        raw = Raw(unit.path)
        try:
            started = time.monotonic()
            assert raw.line() == {"ok": False, "error": "closing the connection: no request for 0.3 s"}
            assert 0.25 < time.monotonic() - started < 3
            assert raw.at_eof()
        finally:
            raw.close()
        eventually(lambda: unit.server.connections == 0)


def test_a_connection_in_use_is_not_idle(tmp_path: Path) -> None:
    with serving(tmp_path, idle_timeout=0.3) as unit:
        raw = Raw(unit.path)
        try:
            for _ in range(6):  # 0.6 s in all, never 0.3 s without a request
                time.sleep(0.1)
                assert raw.ask({"cmd": "calls"})["ok"] is True
        finally:
            raw.close()


def test_an_event_stream_is_never_idle(tmp_path: Path) -> None:
    with serving(tmp_path, idle_timeout=0.2) as unit:
        events = stream_events(unit.path)
        try:
            assert next(events)["event"] == "snapshot"
            time.sleep(0.5)
            unit.desk.set("number", "1002")
            assert next(events) == {"event": "params", "line": "op1", "number": "1002", "route": "city"}
        finally:
            events.close()


def test_a_client_beyond_the_cap_is_told_the_cap_and_closed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    refusal = {"ok": False, "error": "too many clients: this unit serves at most 3 control connections at once; "
                                     "try again later"}
    with serving(tmp_path, max_clients=3) as unit:
        streams = [Raw(unit.path) for _ in range(3)]  # event streams are never idle: none can make room
        try:
            for raw in streams:
                raw.send(b'{"cmd": "events"}\n')
                assert raw.line()  # the snapshot: the stream is open
            eventually(lambda: unit.server.connections == 3)

            assert request(unit.path, "calls") == refusal
            extra = Raw(unit.path)  # one that sends nothing is told too, not left hanging
            try:
                assert extra.line() == refusal
                assert extra.at_eof()
            finally:
                extra.close()
            with pytest.raises(ControlError, match="too many clients: this unit serves at most 3"):
                next(stream_events(unit.path))
            assert ctl_main(["calls"], unit.path) == 1
            assert capsys.readouterr().err == f"kiosk ctl calls: {refusal['error']}\n"
            assert caplog.text.count("refusing new ones") == 1  # said once, not once per client

            streams.pop().close()
            eventually(lambda: unit.server.connections == 2)
            assert request(unit.path, "calls")["ok"] is True
        finally:
            for raw in streams:
                raw.close()


def test_at_the_cap_the_longest_idle_client_makes_room(tmp_path: Path) -> None:
    with serving(tmp_path, max_clients=3) as unit:
        held = [Raw(unit.path) for _ in range(3)]
        try:
            for raw in held:
                assert raw.ask({"cmd": "calls"})["ok"] is True
            eventually(lambda: unit.server.connections == 3)
            assert request(unit.path, "calls")["ok"] is True  # let in: held[0] made room
            told = held[0].line()
            assert told["ok"] is False and "this one was the longest idle" in told["error"], told
            assert held[0].at_eof()
            for raw in held[1:]:  # the others are served as before
                assert raw.ask({"cmd": "calls"})["ok"] is True
        finally:
            for raw in held:
                raw.close()


def test_a_thousand_idle_clients_at_the_default_cap_never_lock_out_calls(tmp_path: Path) -> None:
    clients = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * clients + 200
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    idle: list[socket.socket] = []
    try:
        with serving(tmp_path) as unit:
            for _ in range(clients):
                idle.append(control._connect(unit.path, 5))
            eventually(lambda: unit.server.connections == control.MAX_CLIENTS, timeout=10)
            took = []
            for _ in range(50):
                started = time.perf_counter()
                assert request(unit.path, "calls")["ok"] is True
                took.append(time.perf_counter() - started)
            took.sort()
            assert took[47] < 0.050, f"calls p95 {took[47] * 1000:.1f} ms at the cap with {clients} idle clients"
            assert unit.server.connections <= control.MAX_CLIENTS + 1
    finally:
        for sock in idle:
            sock.close()


def test_the_limits_are_checked(tmp_path: Path) -> None:
    desk = Desk(make_profile(), FakeAgent())
    for kw in ({"idle_timeout": 0}, {"max_clients": 0}, {"workers": 0}, {"queue_size": 0}):
        with pytest.raises(ValueError):
            ControlServer(desk, tmp_path / "x.sock", **kw)
    server = ControlServer(desk, tmp_path / "x.sock")
    assert (server.idle_timeout, server.max_clients, server.workers) == (60.0, 256, 4)
    assert control.BACKLOG >= 128


# --- the event stream -------------------------------------------------------------------


def test_events_stream_starts_with_a_snapshot_then_sends_a_row_when_a_call_rings(unit: Unit) -> None:
    events = stream_events(unit.path)
    try:
        first = next(events)
        assert first["event"] == "snapshot"
        assert first["routes"] == ["city", "trunk"] and first["calls"] == []

        call = unit.agent.ring("sip:2001@pbx.test")

        second = next(events)
        assert second["event"] == "row"
        assert second["row"]["id"] == call
        assert (second["row"]["state"], second["row"]["remote"]) == ("ringing", "sip:2001@pbx.test")
    finally:
        events.close()


def test_events_stream_carries_refusals_and_number_requests(unit: Unit) -> None:
    events = stream_events(unit.path)
    try:
        next(events)
        request(unit.path, "dial")
        assert next(events) == {"event": "number_required", "action": "dial"}
        assert next(events) == {"event": "action_failed", "action": "dial",
                                "reason": "number required for dial", "row_id": None}
    finally:
        events.close()


def test_closing_the_event_client_unsubscribes_it(unit: Unit, monkeypatch: pytest.MonkeyPatch) -> None:
    live = track_subscriptions(unit.desk, monkeypatch)
    raw = Raw(unit.path)
    raw.send(b'{"cmd": "events"}\n')
    assert raw.line()["event"] == "snapshot"
    assert len(live) == 1

    raw.close()

    eventually(lambda: live == [])


def test_a_slow_event_client_is_dropped_and_never_blocks_the_desk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    profile = make_profile()
    agent = FakeAgent()
    desk = Desk(profile, agent)
    desk.start()
    live = track_subscriptions(desk, monkeypatch)
    path = tmp_path / "slow.sock"
    with ControlServer(desk, path, queue_size=4):
        raw = Raw(path)
        try:
            raw.send(b'{"cmd": "events"}\n')
            assert raw.line()["event"] == "snapshot"
            # Never read again. Big events fill the socket buffers, then the queue.
            started = time.monotonic()
            for i in range(200):
                assert desk.set("number", f"{i}" + "5" * 50_000).ok
            assert time.monotonic() - started < 2.0, "the desk waited for a client"

            eventually(lambda: live == [])
            assert "event client too slow" in caplog.text
            assert raw.at_eof()
        finally:
            raw.close()


def test_stopping_the_server_ends_open_event_streams(unit: Unit) -> None:
    raw = Raw(unit.path)
    try:
        raw.send(b'{"cmd": "events"}\n')
        raw.line()
        unit.server.stop()
        assert raw.at_eof()
    finally:
        raw.close()


# --- the socket file --------------------------------------------------------------------


def test_the_socket_is_created_with_its_directory_and_mode_0660(unit: Unit) -> None:
    st = os.stat(unit.path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660


def test_stop_removes_the_socket_file(unit: Unit) -> None:
    unit.server.stop()
    assert not unit.path.exists()
    unit.server.stop()  # twice is harmless


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # what a unit that crashed leaves behind: a socket file nobody listens on
    dead.close()
    desk = Desk(make_profile(), FakeAgent())

    with ControlServer(desk, path):
        assert request(path, "calls")["ok"] is True


def test_a_live_kiosk_socket_is_not_taken_over(unit: Unit) -> None:
    with pytest.raises(ControlError, match="another kiosk is already serving"):
        ControlServer(unit.desk, unit.path).start()
    assert request(unit.path, "calls")["ok"] is True


def test_a_file_that_is_not_a_socket_is_not_removed(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("someone's notes")
    with pytest.raises(ControlError, match="exists and is not a socket"):
        ControlServer(Desk(make_profile(), FakeAgent()), path).start()
    assert path.read_text() == "someone's notes"


def test_a_socket_path_too_long_for_unix_sockets_is_named(tmp_path: Path) -> None:
    path = tmp_path / ("d" * 120) / "control.sock"
    with pytest.raises(ControlError, match="longer than 107 bytes"):
        ControlServer(Desk(make_profile(), FakeAgent()), path).start()


def test_request_without_a_running_kiosk_says_so(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with pytest.raises(ControlError) as err:
        request(path, "calls")
    assert str(err.value) == f"no kiosk is running at {path} (is `kiosk run` started?)"


# --- kiosk ctl --------------------------------------------------------------------------


def test_ctl_prints_the_data_as_json_and_exits_0(unit: Unit, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl_main(["dial", "1002"], unit.path) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"row": 1, "uri": "sip:91002@pbx.test"}
    assert err == ""

    assert ctl_main(["calls"], unit.path) == 0
    assert json.loads(capsys.readouterr().out)["calls"][0]["id"] == 1


def test_ctl_refusal_exits_1_with_the_reason_on_stderr(unit: Unit, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl_main(["answer"], unit.path) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "kiosk ctl answer: no call selected\n"


def test_ctl_without_a_running_kiosk_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "control.sock"
    assert ctl_main(["calls"], path) == 3
    assert capsys.readouterr().err == f"kiosk ctl: no kiosk is running at {path} (is `kiosk run` started?)\n"
    assert ctl_main(["events"], path) == 3


def test_ctl_usage_errors_exit_2(unit: Unit, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl_main(["transfer", "sideways"], unit.path) == 2
    assert ctl_main(["select", "first"], unit.path) == 2
    assert ctl_main([], unit.path) == 2
    assert unit.agent.received == []


@pytest.mark.parametrize(
    ("argv", "method", "kwargs"),
    [
        (["select", "1", "2"], "select", {"row_ids": [1, 2]}),
        (["select"], "select", {"row_ids": []}),
        (["set", "number", "1002"], "set", {"name": "number", "value": "1002"}),
        (["set", "number", ""], "set", {"name": "number", "value": ""}),
        (["dial"], "dial", {}),
        (["dial", "1002"], "dial", {"number": "1002"}),
        (["answer"], "answer", {}),
        (["hangup"], "hangup", {}),
        (["hold"], "hold", {}),
        (["connect"], "connect", {}),
        (["transfer", "quick", "1003"], "transfer", {"mode": "quick", "number": "1003"}),
        (["transfer", "consult", "1003"], "transfer", {"mode": "consult", "number": "1003"}),
        (["transfer", "confirm"], "transfer", {"mode": "confirm"}),
        (["conference"], "conference", {}),
        (["conference", "1004"], "conference", {"number": "1004"}),
        (["pickup", "1005"], "pickup", {"number": "1005"}),
        (["record", "start"], "record", {"action": "start"}),
        (["record", "stop"], "record", {"action": "stop"}),
        (["recordings"], "recordings", {}),
    ],
)
def test_ctl_subcommands_reach_the_desk_method_with_its_arguments(
    unit: Unit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    argv: list[str], method: str, kwargs: dict[str, Any],
) -> None:
    got: list[dict[str, Any]] = []

    def recorder(**kw: Any) -> Outcome:
        got.append(kw)
        return Outcome(True, data={"echo": kw})

    monkeypatch.setattr(unit.desk, method, recorder, raising=False)

    assert ctl_main(argv, unit.path) == 0
    assert got == [kwargs]
    assert json.loads(capsys.readouterr().out) == {"echo": kwargs}


def test_ctl_events_prints_snapshot_then_events_until_the_unit_stops(
    unit: Unit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    live = track_subscriptions(unit.desk, monkeypatch)
    result: list[int] = []
    ctl = threading.Thread(target=lambda: result.append(ctl_main(["events"], unit.path)))
    ctl.start()
    eventually(lambda: len(live) == 1)

    call = unit.agent.ring()
    out = ""

    def row_printed() -> bool:
        nonlocal out
        out += capsys.readouterr().out
        return out.count("\n") >= 2

    eventually(row_printed)
    unit.server.stop()
    ctl.join(5)

    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in lines] == ["snapshot", "row"]
    assert lines[1]["row"]["id"] == call
    assert result == [3]
    assert "closed the event stream" in capsys.readouterr().err
