"""The control socket for real: a Unix socket in tmp_path, a Desk on the FakeAgent, `kiosk ctl` on top."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import stat
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from kiosk import commands, control
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


def done(reply: dict[str, Any]) -> dict[str, Any]:
    """The data of a success reply (asserting it carried its command id beside the data)."""
    assert reply["ok"] is True, reply
    assert isinstance(reply["command"], int), reply
    return dict(reply["data"])


def refused(reply: dict[str, Any]) -> dict[str, Any]:
    """The error object of a refusal (asserting its shape)."""
    assert reply["ok"] is False and set(reply) == {"ok", "error"}, reply
    error = reply["error"]
    assert set(error) == {"code", "action", "message", "params", "row"}, error
    return error


def test_calls_returns_the_panel_snapshot(unit: Unit) -> None:
    reply = request(unit.path, "calls")

    assert reply["ok"] is True and reply["pending"] is False
    data = done(reply)
    assert (data["line"], data["number"], data["route"]) == ("op1", "", "city")
    assert data["routes"] == ["city", "trunk"]
    assert [line["id"] for line in data["lines"] if line["registered"]] == ["op1", "op2"]
    assert data["calls"] == [] and data["selection"] == []
    assert data["available"]["dial"] is None and data["available"]["answer"]["code"] == "no_selection"


def test_set_and_dial_reach_the_agent(unit: Unit) -> None:
    reply = request(unit.path, "set", name="number", value="1002")
    assert reply["pending"] is False
    assert done(reply) == {"line": "op1", "number": "1002", "route": "city"}

    reply = request(unit.path, "dial", wait=True)

    assert reply["pending"] is False
    assert done(reply) == {"row": 1, "uri": "sip:91002@pbx.test"}
    assert unit.agent.requests("dial") == [(1, "op1", "sip:91002@pbx.test", "city")]


def test_a_command_waiting_for_sip_is_answered_at_once_as_pending(unit: Unit) -> None:
    unit.desk.set("number", "1002")
    stalled = unit.agent.stall_next("dial")

    reply = request(unit.path, "dial")

    assert reply["pending"] is True
    assert done(reply) == {"row": 1, "uri": "sip:91002@pbx.test"}
    assert not stalled.done()


def test_wait_answers_with_the_final_outcome_and_holds_up_no_other_client(unit: Unit) -> None:
    unit.desk.set("number", "1002")
    stalled = unit.agent.stall_next("dial")
    replies: list[dict[str, Any]] = []
    waiting = threading.Thread(target=lambda: replies.append(request(unit.path, "dial", wait=True)))
    waiting.start()
    eventually(lambda: bool(unit.agent.requests("dial")))

    started = time.monotonic()
    assert request(unit.path, "calls")["ok"] is True  # another client, served meanwhile
    assert time.monotonic() - started < 0.5
    assert replies == []

    stalled.set_result(None)
    waiting.join(5)
    (reply,) = replies
    assert reply["pending"] is False
    assert done(reply) == {"row": 1, "uri": "sip:91002@pbx.test"}


def test_wait_on_a_command_that_fails_later_is_its_refusal(unit: Unit) -> None:
    unit.desk.set("number", "1002")
    unit.agent.fail_next("dial", "486 Busy Here")

    error = refused(request(unit.path, "dial", wait=True))

    assert (error["code"], error["action"], error["message"]) == ("agent_error", "dial", "486 Busy Here")
    assert error["params"] == {"error": "486 Busy Here"} and error["row"] == 1


def test_a_pending_command_says_its_end_as_an_event_with_its_command_id(unit: Unit) -> None:
    events = stream_events(unit.path)
    try:
        next(events)
        unit.desk.set("number", "1002")
        stalled = unit.agent.stall_next("dial")
        reply = request(unit.path, "dial")
        assert reply["pending"] is True
        stalled.set_result(None)
        finished = next(e for e in events if e["event"] == "action_done")
        assert finished["command"] == reply["command"]
        assert (finished["action"], finished["row_id"]) == ("dial", 1)
    finally:
        events.close()


def test_hangup_overtakes_a_pickup_that_waits_for_sip(unit: Unit) -> None:
    stalled = unit.agent.stall_next("dial")
    picking = request(unit.path, "pickup", number="2004")
    assert picking["pending"] is True
    row = picking["data"]["row"]

    started = time.perf_counter()
    reply = request(unit.path, "hangup")
    took = time.perf_counter() - started

    assert reply["ok"] is True, reply
    assert unit.agent.requests("hangup") == [(row,)]
    assert not stalled.done()
    assert took < 0.1, f"hangup took {took * 1000:.1f} ms behind a pickup"


def test_select_answer_and_hangup_act_on_the_selected_call(unit: Unit) -> None:
    _first, second = unit.agent.ring(), unit.agent.ring()

    assert done(request(unit.path, "select", rows=[second])) == {"selection": [second]}
    assert done(request(unit.path, "answer", wait=True))["row"] == second
    assert done(request(unit.path, "hangup", wait=True))["row"] == second

    assert unit.agent.requests("answer") == [(second,)]
    assert unit.agent.requests("hangup") == [(second,)]


def test_select_toggle_adds_and_removes_one_row(unit: Unit) -> None:
    first, second = unit.agent.ring(), unit.agent.ring()

    assert done(request(unit.path, "select", rows=[first]))["selection"] == [first]
    assert done(request(unit.path, "select", toggle=second))["selection"] == [first, second]
    assert done(request(unit.path, "select", toggle=first))["selection"] == [second]


def test_a_refusal_comes_back_with_its_code_action_and_message(unit: Unit) -> None:
    assert refused(request(unit.path, "answer")) == {
        "code": "no_selection", "action": "answer", "message": "no call selected", "params": {}, "row": None}


def test_a_refusal_names_the_row_it_concerns(unit: Unit) -> None:
    call = unit.agent.ring()
    error = refused(request(unit.path, "hold"))
    assert (error["code"], error["row"], error["params"]) == ("hold_needs_talk", call, {"row": call, "state": "ringing"})
    assert error["message"] == f"call {call} is ringing: only a call in conversation can be held"


def test_dial_without_a_number_names_the_missing_number(unit: Unit) -> None:
    error = refused(request(unit.path, "dial"))
    assert (error["code"], error["action"], error["message"]) == ("number_required", "dial",
                                                                  "number required for dial")


def test_later_desk_commands_get_their_arguments(unit: Unit) -> None:
    call = unit.agent.ring()
    unit.agent.talking(call)

    reply = request(unit.path, "transfer", mode="quick", number="1003", wait=True)

    assert done(reply) == {"row": call, "to": "sip:1003@pbx.test"}
    assert unit.agent.requests("transfer") == [(call, "sip:1003@pbx.test")]
    assert done(request(unit.path, "record", action="start", wait=True))["row"] == call


def test_the_refused_action_is_the_one_the_arguments_mean(unit: Unit) -> None:
    assert refused(request(unit.path, "transfer", mode="confirm"))["action"] == "transfer_confirm"
    assert refused(request(unit.path, "record", action="stop"))["action"] == "record_stop"


def test_a_command_the_desk_does_not_have_yet_is_refused(unit: Unit, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(commands.COMMANDS, "later", commands.Command("later", "not built yet"))
    assert not hasattr(unit.desk, "_later")
    error = refused(request(unit.path, "later"))
    assert (error["code"], error["message"]) == ("not_available", "later is not available on this unit yet")


def test_recordings_lists_what_the_desk_recorded(unit: Unit) -> None:
    call = unit.agent.ring()
    unit.agent.talking(call)
    path = done(request(unit.path, "record", action="start", wait=True))["file"]

    listed = done(request(unit.path, "recordings", wait=True))["recordings"]

    assert [(r["file"], r["recording"]) for r in listed] == [(path, True)]


def test_an_unknown_command_is_refused_naming_the_known_ones(unit: Unit) -> None:
    error = refused(request(unit.path, "reboot"))

    assert (error["code"], error["action"]) == ("unknown_command", None)
    assert error["message"].startswith("unknown command 'reboot'; commands: calls, select, set, key, dial, answer")
    assert error["message"].endswith("events")
    assert error["params"]["command"] == "reboot"


@pytest.mark.parametrize(
    ("cmd", "args", "code", "message"),
    [
        ("select", {"rows": "1"}, "bad_argument", "'rows' of select must be a list of row numbers, not '1'"),
        ("select", {"rows": [True]}, "bad_argument", "'rows' of select must be a list of row numbers, not [True]"),
        ("select", {"toggle": "2"}, "bad_argument", "'toggle' of select must be a whole number, not '2'"),
        ("set", {"name": "number", "value": 1002}, "bad_argument", "'value' of set must be a string, not 1002"),
        ("set", {"name": "volume", "value": "11"}, "bad_argument",
         "'name' of set must be one of line, number, route, not 'volume'"),
        ("set", {"value": "11"}, "missing_argument", "set needs 'name' (one of line, number, route)"),
        ("dial", {"number": 1002}, "bad_argument", "'number' of dial must be a string, not 1002"),
        ("dial", {"to": "1002"}, "unknown_argument", "dial does not take 'to'; it takes number"),
        ("answer", {"call": 1}, "unknown_argument", "answer does not take 'call'; it takes row"),
        ("answer", {"row": "1"}, "bad_argument", "'row' of answer must be a whole number, not '1'"),
        ("hold", {"row": 1}, "unknown_argument", "hold does not take 'row'; it takes no arguments"),
        ("transfer", {"mode": "sideways"}, "bad_argument",
         "'mode' of transfer must be one of quick, consult, confirm, next, not 'sideways'"),
        ("record", {}, "missing_argument", "record needs 'action' (one of start, stop, toggle)"),
    ],
)
def test_wrong_arguments_are_refused_before_reaching_the_desk(
    unit: Unit, cmd: str, args: dict[str, Any], code: str, message: str
) -> None:
    error = refused(request(unit.path, cmd, **args))
    assert (error["code"], error["action"], error["message"]) == (code, cmd, message)
    assert error["params"]["command"] == cmd
    assert unit.agent.received == []
    assert unit.desk.snapshot()["notices"] == []  # never reached the desk


def test_null_arguments_count_as_not_given(unit: Unit) -> None:
    raw = Raw(unit.path)
    try:
        assert refused(raw.ask({"cmd": "dial", "args": {"number": None}}))["code"] == "number_required"
        assert raw.ask({"cmd": "calls", "args": None})["ok"] is True
        assert raw.ask({"cmd": "calls", "wait": None})["ok"] is True
    finally:
        raw.close()


def bad_request(reply: dict[str, Any]) -> str:
    """The problem of a bad_request refusal."""
    error = refused(reply)
    assert (error["code"], error["action"], error["row"]) == ("bad_request", None, None), error
    assert error["message"] == error["params"]["problem"]
    return error["message"]


def test_malformed_requests_get_errors_and_the_connection_keeps_serving(unit: Unit) -> None:
    raw = Raw(unit.path)
    try:
        raw.send(b"dial 1002\n")
        assert bad_request(raw.line()).startswith("request is not valid JSON")
        raw.send(b"[1, 2]\n")
        assert bad_request(raw.line()) == 'request must be a JSON object like {"cmd": "calls"}'
        raw.send(b'{"args": {}}\n')
        assert bad_request(raw.line()).startswith('request has no "cmd" string; commands: calls, ')
        raw.send(b'{"cmd": "dial", "args": ["1002"]}\n')
        assert bad_request(raw.line()) == '"args" of dial must be a JSON object'
        raw.send(b'{"cmd": "dial", "wait": "yes"}\n')
        assert bad_request(raw.line()) == '"wait" of dial must be true or false, not "yes"'
        raw.send(b"\xff\xfe\n")
        assert bad_request(raw.line()) == "request is not UTF-8 text"
        raw.send(b"[" * 60_000 + b"\n")
        assert bad_request(raw.line()) == "request is nested too deeply"
        raw.send(b'{"cmd": "select", "args": {"rows": [' + b"9" * 5000 + b']}}\n')  # past int's digit limit
        assert bad_request(raw.line()).startswith("request is not valid JSON")
        raw.send(b"\n   \n")  # blank lines are no requests and get no replies
        raw.send(b'{"cmd": "x", "pad": "' + b"a" * (70 * 1024) + b'"}\n{"cmd": "calls"}\n')
        assert refused(raw.line()) == {"code": "line_too_long", "action": None, "params": {"limit": 65536},
                                       "message": "request line longer than 65536 bytes", "row": None}
        assert raw.line()["ok"] is True
    finally:
        raw.close()


def test_an_endless_line_is_answered_at_once_and_skipped_to_its_end(unit: Unit) -> None:
    raw = Raw(unit.path)
    try:
        raw.send(b"x" * (control.MAX_LINE + 10))
        assert refused(raw.line())["message"] == "request line longer than 65536 bytes"
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
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("table corrupted")

    monkeypatch.setattr(unit.desk, "submit", broken)

    error = refused(request(unit.path, "answer"))

    assert (error["code"], error["action"]) == ("internal_error", "answer")
    assert error["message"] == "internal error in the unit (RuntimeError: table corrupted); see the unit's log"
    assert "desk failed on answer" in caplog.text
    monkeypatch.undo()
    assert request(unit.path, "calls")["ok"] is True


def test_a_desk_that_does_not_take_the_command_is_said_busy(unit: Unit, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "DESK_REPLY", 0.2)
    monkeypatch.setattr(unit.desk, "submit", lambda *a, **kw: Future())  # never answered

    started = time.monotonic()
    error = refused(request(unit.path, "hangup"))

    assert error["code"] == "desk_busy" and error["params"] == {"seconds": 0.2}
    assert time.monotonic() - started < 3


def test_a_stopped_desk_is_said_stopped(unit: Unit) -> None:
    unit.desk.close()
    eventually(lambda: unit.desk._loop.is_closed())

    error = refused(request(unit.path, "hangup"))

    assert (error["code"], error["message"]) == ("desk_stopped", "the desk has stopped")


def test_a_wait_that_outlasts_the_limit_is_answered_as_still_pending(unit: Unit,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "WAIT_TIMEOUT", 0.2)
    unit.desk.set("number", "1002")
    unit.agent.stall_next("dial")

    reply = request(unit.path, "dial", wait=True)

    assert reply["pending"] is True and done(reply)["row"] == 1


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


def test_calls_answers_at_once_while_many_commands_wait_for_the_agent(unit: Unit) -> None:
    stalled = [unit.agent.stall_next("mute") for _ in range(8)]  # more than the old worker pool had
    replies: list[dict[str, Any]] = []
    slow = [threading.Thread(target=lambda: replies.append(request(unit.path, "mute", state="on", wait=True)))
            for _ in stalled]
    try:
        for t in slow:
            t.start()
        eventually(lambda: len(unit.agent.requests("mute")) == len(stalled))

        started = time.monotonic()
        assert request(unit.path, "calls")["ok"] is True
        assert request(unit.path, "set", name="number", value="1002")["ok"] is True
        assert request(unit.path, "hangup")["ok"] is False  # refused at once: nothing selected
        assert time.monotonic() - started < 0.5
        assert replies == []
    finally:
        for fut in stalled:
            fut.set_result(None)
        for t in slow:
            t.join(10)
    assert [done(r) for r in replies] == [{"muted": True}] * len(stalled)


def test_an_idle_connection_is_told_and_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    with serving(tmp_path, idle_timeout=0.3) as unit:
        raw = Raw(unit.path)
        try:
            started = time.monotonic()
            assert refused(raw.line()) == {"code": "idle_closed", "action": None, "params": {"seconds": 0.3},
                                           "message": "closing the connection: no request for 0.3 s", "row": None}
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
    message = "too many clients: this unit serves at most 3 control connections at once; try again later"
    refusal = {"ok": False, "error": {"code": "too_many_clients", "action": None, "params": {"max": 3},
                                      "message": message, "row": None}}
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
            assert capsys.readouterr().err == f"kiosk ctl calls: {message}\n"
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
            told = refused(held[0].line())
            assert told["code"] == "evicted" and told["params"]["max"] == 3, told
            assert "this one was the longest idle" in told["message"], told
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
    for kw in ({"idle_timeout": 0}, {"max_clients": 0}, {"queue_size": 0}):
        with pytest.raises(ValueError):
            ControlServer(desk, tmp_path / "x.sock", **kw)
    server = ControlServer(desk, tmp_path / "x.sock")
    assert (server.idle_timeout, server.max_clients) == (60.0, 256)
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
        reply = request(unit.path, "dial")
        assert next(events) == {"event": "number_required", "action": "dial"}
        failed = next(e for e in events if e["event"] == "action_failed")
        assert failed == {"event": "action_failed", "action": "dial", "reason": "number required for dial",
                          "row_id": None, "code": "number_required", "params": {}, "command": failed["command"]}
        assert reply["error"]["code"] == "number_required"
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
    assert json.loads(out) == {"row": 1, "uri": "sip:91002@pbx.test"}  # waited for: the outcome's data
    assert err == ""

    assert ctl_main(["calls"], unit.path) == 0
    assert json.loads(capsys.readouterr().out)["calls"][0]["id"] == 1


def test_ctl_waits_for_the_outcome_and_exits_1_when_it_fails(unit: Unit,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    stalled = unit.agent.stall_next("dial")
    unit.agent.fail_next("dial", "486 Busy Here")  # the one after
    result: list[int] = []
    ctl = threading.Thread(target=lambda: result.append(ctl_main(["dial", "1002"], unit.path)))
    ctl.start()
    eventually(lambda: bool(unit.agent.requests("dial")))
    time.sleep(0.1)
    assert result == []  # still waiting for the agent
    stalled.set_result(None)
    ctl.join(5)
    assert result == [0]
    capsys.readouterr()

    assert ctl_main(["dial", "1003"], unit.path) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", "kiosk ctl dial: 486 Busy Here\n")


def test_ctl_no_wait_returns_once_the_unit_took_the_command(unit: Unit,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    stalled = unit.agent.stall_next("dial")

    assert ctl_main(["--no-wait", "pickup", "2004"], unit.path) == 0

    data = json.loads(capsys.readouterr().out)
    assert data["pending"] is True and data["row"] == 1 and isinstance(data["command"], int)
    assert not stalled.done()


def test_ctl_socket_option_overrides_the_default(unit: Unit, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl_main(["--socket", str(unit.path), "calls"], tmp_path / "nobody.sock") == 0
    assert json.loads(capsys.readouterr().out)["routes"] == ["city", "trunk"]


def test_ctl_refusal_exits_1_with_the_reason_on_stderr(unit: Unit, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl_main(["answer"], unit.path) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "kiosk ctl answer: no call selected\n"


def test_ctl_json_prints_the_error_object_of_a_refusal(unit: Unit, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl_main(["--json", "answer"], unit.path) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == {"code": "no_selection", "action": "answer", "message": "no call selected",
                               "params": {}, "row": None}
    assert err == "kiosk ctl answer: no call selected\n"


def test_ctl_without_a_running_kiosk_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "control.sock"
    assert ctl_main(["calls"], path) == 3
    assert capsys.readouterr().err == f"kiosk ctl: no kiosk is running at {path} (is `kiosk run` started?)\n"
    assert ctl_main(["events"], path) == 3


def test_ctl_usage_errors_exit_2(unit: Unit, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl_main(["transfer", "sideways"], unit.path) == 2
    assert ctl_main(["select", "first"], unit.path) == 2
    assert ctl_main(["mute", "maybe"], unit.path) == 2
    assert ctl_main(["answer", "--no-wait"], unit.path) == 2  # a global option: before the command
    assert ctl_main([], unit.path) == 2
    assert unit.agent.received == []


@pytest.mark.parametrize(
    ("argv", "cmd", "args"),
    [
        (["select", "1", "2"], "select", {"rows": [1, 2]}),
        (["select"], "select", {"rows": []}),
        (["select", "--toggle", "3"], "select", {"rows": [], "toggle": 3}),
        (["set", "number", "1002"], "set", {"name": "number", "value": "1002"}),
        (["set", "number", ""], "set", {"name": "number", "value": ""}),
        (["key", "7"], "key", {"key": "7"}),
        (["key", "delete"], "key", {"key": "delete"}),
        (["dial"], "dial", {}),
        (["dial", "1002"], "dial", {"number": "1002"}),
        (["answer"], "answer", {}),
        (["hangup"], "hangup", {}),
        (["hold"], "hold", {}),
        (["connect"], "connect", {}),
        (["transfer", "quick", "1003"], "transfer", {"mode": "quick", "number": "1003"}),
        (["transfer", "consult", "1003"], "transfer", {"mode": "consult", "number": "1003"}),
        (["transfer", "confirm"], "transfer", {"mode": "confirm"}),
        (["transfer", "next"], "transfer", {"mode": "next"}),
        (["conference"], "conference", {}),
        (["conference", "1004"], "conference", {"number": "1004"}),
        (["pickup", "1005"], "pickup", {"number": "1005"}),
        (["record", "start"], "record", {"action": "start"}),
        (["record", "stop"], "record", {"action": "stop"}),
        (["record", "toggle"], "record", {"action": "toggle"}),
        (["mute"], "mute", {"state": "toggle"}),
        (["mute", "on"], "mute", {"state": "on"}),
        (["recordings"], "recordings", {}),
        (["calls"], "calls", {}),
    ],
)
def test_ctl_subcommands_reach_the_desk_with_their_arguments(
    unit: Unit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    argv: list[str], cmd: str, args: dict[str, Any],
) -> None:
    got: list[tuple[str, dict[str, Any]]] = []

    def recorder(name: str, /, **kw: Any) -> Future[Outcome]:
        got.append((name, kw))
        reply: Future[Outcome] = Future()
        reply.set_result(Outcome(True, data={"echo": kw}, command=7))
        return reply

    monkeypatch.setattr(unit.desk, "submit", recorder)

    assert ctl_main(argv, unit.path) == 0
    assert got == [(cmd, args)]
    assert json.loads(capsys.readouterr().out) == {"echo": args}


def test_ctl_has_a_subcommand_for_every_command_of_the_table() -> None:
    parser = control._ctl_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == [*commands.COMMANDS, "events"]


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
    assert [e["event"] for e in lines][:2] == ["snapshot", "row"]
    # what the ringing call now allows, and the only call shown selected
    assert {e["event"] for e in lines[2:]} <= {"available", "selection"}
    assert lines[1]["row"]["id"] == call
    assert result == [3]
    assert "closed the event stream" in capsys.readouterr().err
