"""The panel's process sees the unit only through its control socket: RemoteDesk against a real
ControlServer over a Desk on the FakeAgent. Commands reach the desk, events come back as the
kiosk.events dataclasses, refusals are Outcomes with the desk's reason, and a unit that goes
away and comes back is followed again. Every wait is for an event to arrive (the timeouts are
only there to fail a broken test), never for time to pass."""

from __future__ import annotations

import queue
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from kiosk import events as ev
from kiosk.commands import COMMANDS
from kiosk.control import ControlServer
from kiosk.desk import AgentError, Desk
from kiosk.ui.frontend import DeskFrontend
from kiosk.ui.remote import RemoteDesk

from .fakes import FakeAgent

WAIT = 20.0  # only ever reached when something is broken


@pytest.fixture
def sock_path() -> Iterator[Path]:
    d = tempfile.mkdtemp(prefix="kiosk-ui-")  # short: a socket path has 107 bytes at most
    yield Path(d) / "control.sock"
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def server(desk: Desk, sock_path: Path) -> Iterator[ControlServer]:
    with ControlServer(desk, sock_path) as s:
        yield s


class Seen:
    """Every event a RemoteDesk delivers, in order, waited for one by one."""

    def __init__(self, remote: RemoteDesk) -> None:
        self.q: queue.Queue[ev.Event] = queue.Queue()
        self.unsubscribe = remote.subscribe(self.q.put)

    def next(self, kind: type[ev.Event], pred=lambda e: True) -> ev.Event:  # type: ignore[no-untyped-def]
        while True:
            try:
                event = self.q.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"no {kind.__name__} event arrived") from None
            if isinstance(event, kind) and pred(event):
                return event


@pytest.fixture
def remote(server: ControlServer, desk: Desk) -> Iterator[RemoteDesk]:
    r = RemoteDesk(server.path, desk.profile)
    yield r
    r.close()


@pytest.fixture
def seen_remote(remote: RemoteDesk) -> Seen:
    s = Seen(remote)
    s.next(ev.LinkChanged, lambda e: e.connected)
    return s


def test_commands_reach_the_desk_and_return_its_outcome(remote: RemoteDesk, desk: Desk, agent: FakeAgent) -> None:
    out = remote.set("number", "2001")
    assert (out.ok, out.data, out.action, out.pending) == (True, {"line": "op1", "number": "2001", "route": "city"},
                                                           "set", False)
    assert isinstance(out.command, int)
    assert remote.number == "2001" and desk.number == "2001"
    done = remote.dial().wait(WAIT)
    assert done.ok and done.data["row"] == 1
    assert agent.requests("dial") == [(1, "op1", "sip:92001@pbx.test", "city")]
    assert remote.select([1]).ok and desk.selection == [1]
    assert remote.transfer("quick", "3003").ok is False  # not talking yet: the desk's refusal
    agent.talking(1)
    assert remote.hold().wait(WAIT).ok and agent.requests("hold") == [(1,)]
    assert remote.snapshot()["calls"][0]["state"] == "on hold"
    assert remote.hangup().wait(WAIT).ok and agent.requests("hangup") == [(1,)]


def test_every_command_of_the_table_has_its_method(remote: RemoteDesk) -> None:
    for name in COMMANDS:
        if name != "calls":  # that one is snapshot()
            assert callable(getattr(remote, name)), name
    assert remote.key("7").ok and remote.number == "7"
    assert remote.key("delete").ok and remote.number == ""
    assert remote.mute().wait(WAIT).data == {"muted": True}
    assert remote.recordings().wait(WAIT).data == {"recordings": []}


def test_a_refusal_is_an_outcome_with_its_code_and_an_event(remote: RemoteDesk, seen_remote: Seen) -> None:
    refused = remote.hold()
    assert (refused.ok, refused.reason, refused.code, refused.action, refused.row) == (
        False, "no call selected", "no_selection", "hold", None)
    failed = seen_remote.next(ev.ActionFailed)
    assert (failed.action, failed.reason, failed.code, failed.row_id) == ("hold", "no call selected",
                                                                          "no_selection", None)
    refused = remote.dial()
    assert (refused.ok, refused.reason, refused.code) == (False, "number required for dial", "number_required")
    assert seen_remote.next(ev.NumberRequired) == ev.NumberRequired("dial")
    refused = remote.transfer("sideways")  # checked here, as the unit would
    assert (refused.code, refused.params["argument"]) == ("bad_argument", "mode")


def test_a_pending_outcome_is_done_when_its_event_comes(remote: RemoteDesk, seen_remote: Seen, desk: Desk,
                                                        agent: FakeAgent) -> None:
    desk.set("number", "2001")
    stalled = agent.stall_next("dial")
    accepted = remote.dial()
    assert accepted.ok and accepted.pending and accepted.done is not None
    assert not accepted.done.done()
    stalled.set_result(None)
    final = accepted.wait(WAIT)
    assert (final.ok, final.pending, final.command, final.action) == (True, False, accepted.command, "dial")
    assert final.data["row"] == 1


def test_a_pending_command_that_fails_is_done_with_its_refusal(remote: RemoteDesk, seen_remote: Seen,
                                                               desk: Desk, agent: FakeAgent) -> None:
    desk.set("number", "2001")
    stalled = agent.stall_next("dial")
    accepted = remote.dial()
    assert accepted.pending
    stalled.set_exception(AgentError("486 Busy Here"))
    final = accepted.wait(WAIT)
    assert (final.ok, final.code, final.reason, final.row) == (False, "agent_error", "486 Busy Here", 1)
    assert final.command == accepted.command


def test_submit_never_waits_for_the_socket(remote: RemoteDesk, desk: Desk, agent: FakeAgent) -> None:
    futures = [remote.submit("key", key=str(d)) for d in range(5)]
    outs = [f.result(WAIT) for f in futures]
    assert all(o.ok for o in outs)
    assert sorted(desk.number) == list("01234")


def test_availability_is_followed_from_the_snapshot_and_its_events(remote: RemoteDesk, seen_remote: Seen,
                                                                  agent: FakeAgent) -> None:
    assert remote.available["answer"]["code"] == "no_selection"
    agent.ring()
    seen_remote.next(ev.AvailabilityChanged, lambda e: e.available["answer"] is None)
    assert remote.available["answer"] is None


def test_desk_events_arrive_as_the_dataclasses(remote: RemoteDesk, seen_remote: Seen, desk: Desk,
                                                agent: FakeAgent) -> None:
    call = agent.ring("sip:2002@pbx.test")
    row = seen_remote.next(ev.RowChanged)
    assert isinstance(row.row, dict) and row.row["id"] == call and row.row["state"] == "ringing"
    desk.select([call])
    assert seen_remote.next(ev.SelectionChanged) == ev.SelectionChanged((call,))
    agent.register("op2", False, 503, "Service Unavailable")
    assert seen_remote.next(ev.LineState, lambda e: e.line == "op2") == ev.LineState("op2", False, 503,
                                                                                      "Service Unavailable")
    desk.set("route", "trunk")
    assert seen_remote.next(ev.ParamsChanged) == ev.ParamsChanged("op2", "", "trunk")
    agent.ended(call)
    assert seen_remote.next(ev.RowRemoved).row_id == call
    agent.emit(ev.Alert("audio device lost"))
    assert seen_remote.next(ev.Alert) == ev.Alert("audio device lost")
    # the local copy follows the events: what the panel redraws from when the unit comes back
    kept = remote._copy()
    assert kept["calls"] == [] and kept["route"] == "trunk" and kept["lines"][1]["registered"] is False


def test_unsubscribe_stops_the_events(remote: RemoteDesk, seen_remote: Seen, agent: FakeAgent) -> None:
    other = Seen(remote)
    other.unsubscribe()
    agent.ring()
    seen_remote.next(ev.RowChanged)
    assert other.q.empty()


def test_a_unit_that_goes_away_is_said_and_followed_again(remote: RemoteDesk, seen_remote: Seen, server: ControlServer,
                                                          desk: Desk, agent: FakeAgent) -> None:
    server.stop()  # the unit restarting
    down = seen_remote.next(ev.LinkChanged)
    assert down.connected is False and down.reason
    assert remote.connected is False
    refused = remote.answer()
    assert (refused.ok, refused.code, refused.action) == (False, "link_down", "answer")
    assert refused.reason == f"no connection to the unit: {refused.params['reason']}"
    assert "no kiosk is running" in refused.params["reason"]
    assert remote.snapshot()["lines"][0]["id"] == "op1"  # the last state seen, not an exception
    call = agent.ring()  # while nobody listens
    with ControlServer(desk, server.path):
        back = seen_remote.next(ev.LinkChanged, lambda e: e.connected)
        assert back.connected and back.snapshot is not None
        assert [row["id"] for row in back.snapshot["calls"]] == [call]
        assert remote.select([call]).ok
        assert seen_remote.next(ev.SelectionChanged) == ev.SelectionChanged((call,))


def test_no_unit_at_start_is_not_an_error(sock_path: Path, desk: Desk) -> None:
    remote = RemoteDesk(sock_path, desk.profile)
    try:
        seen = Seen(remote)
        assert seen.next(ev.LinkChanged).connected is False
        snap = remote.snapshot()
        assert snap["calls"] == [] and [ln["id"] for ln in snap["lines"]] == ["op1", "op2"]
        assert (snap["line"], snap["route"]) == ("op1", "city")
        with ControlServer(desk, sock_path):
            assert seen.next(ev.LinkChanged, lambda e: e.connected).snapshot is not None
    finally:
        remote.close()


def test_desk_frontend_over_the_socket_loses_no_keypad_digit(remote: RemoteDesk, desk: Desk) -> None:
    posted: queue.Queue = queue.Queue()
    frontend = DeskFrontend(remote, posted.put)
    snap = frontend.start()
    try:
        assert snap["number"] == ""
        for char in "1234567890*#":
            frontend.type_digit(char)
        frontend.delete_digit()
        assert frontend.wait_commands()
        assert desk.number == "1234567890*"
        frontend.complete("dial", "2001")  # the desk selects the call it placed
        assert frontend.wait_commands()
        assert desk.selection == [1]
        frontend.toggle_selected(1)  # reads the unit's selection when it runs: takes the row out
        assert frontend.wait_commands()
        assert desk.selection == []
    finally:
        frontend.close()


def test_an_outcome_event_that_overtakes_its_reply_still_finishes_it(sock_path: Path, desk: Desk) -> None:
    remote = RemoteDesk(sock_path, desk.profile)  # no unit needed: the reply and event are played here
    try:
        remote._track(ev.ActionDone("dial", 41, 3, {"row": 3, "uri": "sip:2001@pbx.test"}))
        out = remote._outcome({"ok": True, "data": {"row": 3}, "command": 41, "pending": True}, "dial")
        assert out.pending and out.command == 41 and out.row == 3
        final = out.wait(0)
        assert (final.ok, final.action, final.data["uri"]) == (True, "dial", "sip:2001@pbx.test")
    finally:
        remote.close()


def test_commands_pending_when_the_unit_goes_away_are_given_up(remote: RemoteDesk, seen_remote: Seen,
                                                               server: ControlServer, desk: Desk,
                                                               agent: FakeAgent) -> None:
    desk.set("number", "2001")
    agent.stall_next("dial")
    accepted = remote.dial()
    assert accepted.pending
    server.stop()
    final = accepted.wait(WAIT)
    assert (final.ok, final.code, final.command) == (False, "link_down", accepted.command)


def test_dnd_and_the_missed_count_are_followed_from_their_events(sock_path: Path, desk: Desk) -> None:
    """What the panel draws from a snapshot taken while the unit is away: the last DND and missed count."""
    remote = RemoteDesk(sock_path, desk.profile)  # no unit needed: the events are played here
    try:
        assert (remote._copy()["dnd"], remote._copy()["missed_unseen"]) == (False, 0)
        remote._track(ev.DndChanged(True))
        remote._track(ev.HistoryChanged({"id": 7, "outcome": "missed"}, 3))
        assert (remote._copy()["dnd"], remote._copy()["missed_unseen"]) == (True, 3)
    finally:
        remote.close()
