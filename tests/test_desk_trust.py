"""The desk never reaches a party nobody chose, and a failed action gives back what it took.

Number is consumed by the action that uses it (as a desk phone clears its dial
field after Call): a transfer, conference or pickup without a number of its own
asks for one instead of reusing the last call's.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from kiosk import desk as desk_module
from kiosk import events as ev
from kiosk.desk import CallGone, Desk

from .fakes import FakeAgent


def talking_call(agent: FakeAgent, remote: str = "sip:2001@pbx.test") -> int:
    call = agent.ring(remote)
    agent.talking(call)
    return call


def test_call_consumes_the_number_field(desk: Desk, agent: FakeAgent, seen: list[ev.Event]) -> None:
    desk.set("number", "2002").wait()
    out = desk.dial().wait()
    assert out.ok, out.reason
    assert desk.number == ""
    assert any(isinstance(e, ev.ParamsChanged) and e.number == "" for e in seen)


def test_conference_after_a_call_asks_for_the_next_party(desk: Desk, agent: FakeAgent,
                                                         seen: list[ev.Event]) -> None:
    desk.set("number", "2002").wait()
    row = desk.dial().wait().data["row"]
    agent.talking(row)
    out = desk.conference().wait()
    assert not out.ok and out.reason == "number required for conference"
    assert any(isinstance(e, ev.NumberRequired) and e.action == "conference" for e in seen)
    assert len(agent.requests("dial")) == 1  # 2002 was not dialled again
    assert agent.requests("hold") == []  # and nobody was put on hold for it


def test_quick_transfer_of_a_new_call_never_goes_to_the_last_number(desk: Desk, agent: FakeAgent) -> None:
    desk.set("number", "2002").wait()
    first = desk.dial().wait().data["row"]
    agent.talking(first)
    agent.ended(first)
    caller = talking_call(agent, "sip:3001@pbx.test")
    desk.select([caller]).wait()
    out = desk.transfer("quick").wait()
    assert not out.ok and out.reason == "number required for quick transfer"
    assert agent.requests("transfer") == []


def test_a_number_typed_for_the_action_is_used_once(desk: Desk, agent: FakeAgent) -> None:
    caller = talking_call(agent)
    desk.select([caller]).wait()
    desk.set("number", "2005").wait()
    assert desk.transfer("quick").wait().ok
    assert agent.requests("transfer") == [(caller, "sip:2005@pbx.test")]
    assert desk.number == ""


def test_a_refused_call_keeps_the_number_for_another_try(desk: Desk, agent: FakeAgent) -> None:
    agent.register("op1", False, 503, "Service Unavailable")
    desk.set("line", "op1").wait()
    desk.set("number", "2002").wait()
    out = desk.dial().wait()
    assert not out.ok
    assert desk.number == "2002"


def test_a_number_given_with_the_command_leaves_the_field_alone(desk: Desk, agent: FakeAgent) -> None:
    desk.set("number", "2007").wait()
    assert desk.dial("2002").wait().ok
    assert desk.number == "2007"


def test_pickup_of_nothing_gives_the_held_call_back_and_says_why_last(
        desk: Desk, agent: FakeAgent, seen: list[ev.Event], monkeypatch: pytest.MonkeyPatch) -> None:
    caller = talking_call(agent)
    desk.select([caller]).wait()

    def refused(call: int, line: str, uri: str, route: str | None) -> Future[None]:
        fut = FakeAgent.dial(agent, call, line, uri, route)
        threading.Timer(0.02, agent.ended, (call, 404, "Nothing to pick up")).start()
        return fut

    monkeypatch.setattr(agent, "dial", refused)
    out = desk.pickup("1005").wait()
    assert not out.ok
    assert out.reason == "cannot pick up the call ringing on 1005: 404 Nothing to pick up"
    assert agent.requests("hold") == [(caller,)]
    assert agent.requests("unhold") == [(caller,)]  # given back
    assert desk.selection == [caller]
    assert not desk.rows[caller].local_hold
    last = [e for e in seen if isinstance(e, (ev.ActionFailed, ev.Alert))][-1]
    assert isinstance(last, ev.ActionFailed) and last.reason == out.reason
    assert desk.snapshot()["notices"][-1]["reason"] == out.reason


def test_pickup_that_times_out_gives_back_too(desk: Desk, agent: FakeAgent,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(desk_module, "PICKUP_TIMEOUT", 0.05)
    monkeypatch.setattr(desk_module, "PICKUP_RELEASE", 0.05)
    caller = talking_call(agent)
    out = desk.pickup("1005").wait()
    assert not out.ok and "no answer" in out.reason
    assert agent.requests("unhold") == [(caller,)]
    assert desk.selection == [caller]  # as before: the only call


def test_a_call_the_agent_no_longer_has_leaves_the_table(desk: Desk, agent: FakeAgent) -> None:
    ghost = talking_call(agent)
    agent.fail_next("hangup", CallGone(ghost))
    out = desk.hangup().wait()
    assert not out.ok
    assert ghost not in desk.rows


def test_a_call_that_ended_unseen_does_not_block_the_next_dial(desk: Desk, agent: FakeAgent) -> None:
    ghost = talking_call(agent)
    agent.fail_next("hold", CallGone(ghost))
    out = desk.dial("2002").wait()
    assert out.ok, out.reason
    assert ghost not in desk.rows


def test_a_call_that_reaches_nobody_says_why(desk: Desk, agent: FakeAgent, seen: list[ev.Event]) -> None:
    row = desk.dial("2002").wait().data["row"]
    agent.ended(row, 408, "Request Timeout")
    alerts = [e.message for e in seen if isinstance(e, ev.Alert)]
    assert alerts == ["call to sip:92002@pbx.test failed: 408 Request Timeout"]
    assert desk.snapshot()["notices"][-1]["reason"] == alerts[0]


def test_a_call_we_cancel_is_not_reported_as_failed(desk: Desk, agent: FakeAgent, seen: list[ev.Event]) -> None:
    row = desk.dial("2002").wait().data["row"]
    agent.ended(row, 487, "Request Terminated")
    assert not [e for e in seen if isinstance(e, ev.Alert)]


def test_notices_keep_the_last_twenty(desk: Desk) -> None:
    for i in range(25):
        desk.select([100 + i]).wait()
    notices = desk.snapshot()["notices"]
    assert len(notices) == desk_module.NOTICES
    assert notices[-1]["reason"].startswith("call 124 is not on this unit")
