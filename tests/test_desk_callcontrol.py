"""The desk's call-control rules on a fake agent: hold and connect, quick transfer, routes,
the Number field and the call limit — the refusals and their reasons included."""

from __future__ import annotations

import threading

import pytest

import kiosk.desk as desk_module
from kiosk import events as ev, i18n
from kiosk.desk import Desk
from kiosk.profile import MAX_CALLS

from .fakes import FakeAgent, make_profile


def talking(agent: FakeAgent, remote: str = "sip:2001@pbx.test") -> int:
    """An incoming call, answered; its row id."""
    call = agent.ring(remote)
    agent.talking(call)
    return call


def failures(seen: list[ev.Event]) -> list[str]:
    return [e.reason for e in seen if isinstance(e, ev.ActionFailed)]


# --- hold and connect ----------------------------------------------------------------------


def test_hold_with_two_calls_and_none_selected_holds_nothing(desk: Desk, agent: FakeAgent) -> None:
    talking(agent, "sip:2001@pbx.test")
    talking(agent, "sip:2002@pbx.test")

    assert desk.hold().wait().reason == "no call selected"
    assert agent.requests("hold") == []


def test_hold_the_agent_cannot_do_leaves_the_call_talking_and_says_why(
        desk: Desk, agent: FakeAgent, seen: list) -> None:
    call = talking(agent)
    agent.fail_next("hold", "re-INVITE refused: 488 Not Acceptable Here")

    outcome = desk.hold().wait()

    assert outcome.reason == "re-INVITE refused: 488 Not Acceptable Here"
    assert desk.rows[call].state == "talking" and not desk.rows[call].local_hold
    assert (seen[-1].action, seen[-1].reason, seen[-1].row_id) == ("hold", "re-INVITE refused: 488 Not Acceptable Here", call)


def test_a_held_call_leaves_the_line_free_for_the_next_call(desk: Desk, agent: FakeAgent) -> None:
    b = talking(agent)
    assert desk.hold().wait().ok

    out = desk.dial("2002").wait()

    assert out.ok, out.reason
    c = out.data["row"]
    assert desk.selection == [c]
    assert desk.rows[b].state == "on hold"
    assert agent.requests("hangup") == [] and agent.requests("unhold") == []


def test_connect_refuses_a_call_that_is_not_on_hold(desk: Desk, agent: FakeAgent) -> None:
    call = talking(agent)
    assert desk.connect().wait().reason == f"call {call} is not on hold"
    assert agent.requests("unhold") == []


def test_connect_leaves_ringing_and_already_held_calls_alone(desk: Desk, agent: FakeAgent) -> None:
    b = talking(agent, "sip:2001@pbx.test")
    desk.hold().wait()
    c = talking(agent, "sip:2002@pbx.test")
    desk.select([c]).wait()
    desk.hold().wait()
    agent.ring("sip:2003@pbx.test")  # a new call rings meanwhile
    desk.select([b]).wait()

    assert desk.connect().wait().ok

    assert agent.requests("hold") == [(b,), (c,)]  # only the two explicit holds
    assert agent.requests("unhold") == [(b,)]
    assert desk.rows[b].state == "talking" and desk.rows[c].state == "on hold"


def test_connect_gives_up_when_the_other_conversation_cannot_be_held(
        desk: Desk, agent: FakeAgent, seen: list) -> None:
    b = talking(agent, "sip:2001@pbx.test")
    desk.hold().wait()
    c = talking(agent, "sip:2002@pbx.test")
    desk.select([b]).wait()
    agent.fail_next("hold", "the call has ended")

    outcome = desk.connect().wait()

    assert outcome.reason == "the call has ended"
    assert agent.requests("unhold") == []  # never two conversations into one headset
    assert desk.rows[b].state == "on hold" and desk.rows[c].state == "talking"
    assert (seen[-1].action, seen[-1].reason, seen[-1].row_id) == ("connect", "the call has ended", c)


def test_a_call_the_far_end_holds_shows_it_and_can_still_be_held_here(desk: Desk, agent: FakeAgent) -> None:
    call = talking(agent)
    agent.remote_hold(call)
    assert desk.rows[call].state == "held by remote"
    assert desk.connect().wait().reason == f"call {call} is not on hold"  # their hold is theirs to end

    assert desk.hold().wait().ok
    assert desk.rows[call].state == "on hold"


def test_hold_of_a_call_being_dialled_is_refused(desk: Desk, agent: FakeAgent) -> None:
    out = desk.dial("2002").wait()
    assert desk.hold().wait().reason == f"call {out.data['row']} is dialling: only a call in conversation can be held"
    assert agent.requests("hold") == []


# --- quick transfer ------------------------------------------------------------------------


def test_quick_transfer_shows_each_notify_on_the_row_and_leaves_only_at_the_final_2xx(
        desk: Desk, agent: FakeAgent, seen: list) -> None:
    call = talking(agent)
    assert desk.transfer("quick", "2002").wait().ok
    assert desk.rows[call].note == "transferring to sip:2002@pbx.test"

    notes = []
    for code, reason in ((100, "Trying"), (180, "Ringing")):
        agent.transfer_status(call, code, reason, final=False)
        notes.append(desk.rows[call].note)
    assert notes == ["transfer: 100 Trying", "transfer: 180 Ringing"]
    assert agent.requests("hangup") == []

    agent.transfer_status(call, 200, "OK", final=True)
    assert agent.requests("hangup") == [(call,)]
    assert failures(seen) == []


def test_quick_transfer_of_a_call_not_answered_yet_is_refused(desk: Desk, agent: FakeAgent) -> None:
    call = agent.ring()
    assert desk.transfer("quick", "2002").wait().reason == \
        f"call {call} is ringing: only an answered call can be transferred"
    assert agent.requests("transfer") == []


def test_quick_transfer_uses_the_number_field_on_the_calls_own_line(desk: Desk, agent: FakeAgent) -> None:
    call = talking(agent, "sip:2001@pbx2.test")
    desk.rows[call].line = "op2"  # the call came in on the second line
    desk.set("number", "2002").wait()

    assert desk.transfer("quick").wait().ok

    # No route prefix: the transferee dials the number itself, through its own server.
    assert agent.requests("transfer") == [(call, "sip:2002@pbx2.test")]


@pytest.mark.parametrize("number, uri", [("sip:queue@other.test", "sip:queue@other.test"),
                                         ("2002@other.test", "sip:2002@other.test")])
def test_quick_transfer_to_a_full_address_goes_there_as_given(
        desk: Desk, agent: FakeAgent, number: str, uri: str) -> None:
    call = talking(agent)
    assert desk.transfer("quick", number).wait().ok
    assert agent.requests("transfer") == [(call, uri)]


def test_a_second_quick_transfer_while_one_is_under_way_is_refused(desk: Desk, agent: FakeAgent) -> None:
    call = talking(agent)
    assert desk.transfer("quick", "2002").wait().ok
    agent.transfer_status(call, 180, "Ringing", final=False)

    outcome = desk.transfer("quick", "2003").wait()

    assert outcome.reason == f"call {call} is already being transferred (transfer: 180 Ringing)"
    assert agent.requests("transfer") == [(call, "sip:2002@pbx.test")]


def test_quick_transfer_the_agent_cannot_send_keeps_the_call_and_says_why(
        desk: Desk, agent: FakeAgent, seen: list) -> None:
    call = talking(agent)
    agent.fail_next("transfer", "REFER refused: 405 Method Not Allowed")

    outcome = desk.transfer("quick", "2002").wait()

    assert outcome.reason == "REFER refused: 405 Method Not Allowed"
    assert desk.rows[call].note == "transfer not sent: REFER refused: 405 Method Not Allowed"
    agent.transfer_status(call, 200, "OK", final=True)  # a stray NOTIFY changes nothing
    assert agent.requests("hangup") == [] and call in desk.rows
    assert desk.transfer("quick", "2002").wait().ok  # and the operator can try again


def test_quick_transfer_failing_at_the_far_end_leaves_the_call_ready_for_another_try(
        desk: Desk, agent: FakeAgent, seen: list) -> None:
    call = talking(agent)
    desk.transfer("quick", "2999").wait()

    agent.transfer_status(call, 404, "Not Found", final=True)

    assert failures(seen) == [f"transfer of call {call} failed: 404 Not Found; the call stays with you"]
    assert [e for e in seen if isinstance(e, ev.ActionFailed)][0].action == "transfer_quick"
    assert desk.rows[call].note == "transfer: 404 Not Found"
    assert agent.requests("hangup") == []
    assert desk.transfer("quick", "2002").wait().ok


def test_quick_transfer_without_a_final_notify_times_out_and_keeps_the_call(
        desk: Desk, agent: FakeAgent, seen: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(desk_module, "TRANSFER_TIMEOUT", 0.05)
    call = talking(agent)
    timed_out = threading.Event()
    desk.subscribe(lambda e: timed_out.set() if isinstance(e, ev.ActionFailed) else None)

    assert desk.transfer("quick", "2002").wait().ok

    assert timed_out.wait(5)
    assert failures(seen) == [f"transfer of call {call} got no answer in 0 s: the call stays with you"]
    assert desk.rows[call].note == "transfer timed out"
    assert agent.requests("hangup") == []


def test_a_call_that_ends_during_its_transfer_is_not_reported_as_timed_out(
        desk: Desk, agent: FakeAgent, seen: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(desk_module, "TRANSFER_TIMEOUT", 0.05)
    call = talking(agent)
    desk.transfer("quick", "2002").wait()
    agent.ended(call)

    threading.Event().wait(0.3)

    assert failures(seen) == []
    assert call not in desk.rows and call not in desk.transfers


# --- the Number field ------------------------------------------------------------------------


@pytest.mark.parametrize("action, press", [
    ("dial", lambda d: d.dial()),
    ("transfer_quick", lambda d: d.transfer("quick")),
    ("transfer_consult", lambda d: d.transfer("consult")),
    ("conference", lambda d: d.conference()),
    ("pickup", lambda d: d.pickup()),
])
def test_every_action_that_needs_a_number_asks_for_it_by_name(
        desk: Desk, agent: FakeAgent, seen: list, action: str, press) -> None:
    talking(agent)
    before = list(agent.received)

    outcome = press(desk)

    assert (outcome.code, outcome.action) == ("number_required", action)
    assert outcome.reason == f"number required for {i18n.action_name(action)}"
    assert ev.NumberRequired(action) in seen
    assert agent.received == before  # nothing was held, dialled or referred


def test_the_number_given_with_the_action_wins_over_the_number_field(desk: Desk, agent: FakeAgent) -> None:
    desk.set("number", "2001").wait()
    out = desk.dial("2005").wait()
    assert out.data["uri"] == "sip:92005@pbx.test"
    assert desk.number == "2001"  # the field is the operator's: the action does not change it


def test_a_number_of_only_spaces_counts_as_no_number(desk: Desk, seen: list) -> None:
    desk.set("number", "   ").wait()
    assert desk.dial("  ").wait().reason == "number required for dial"
    assert ev.NumberRequired("dial") in seen


# --- routes ----------------------------------------------------------------------------------


def test_dial_on_a_trunk_route_goes_out_on_the_routes_line_and_the_row_shows_the_route(
        desk: Desk, agent: FakeAgent) -> None:
    assert desk.set("line", "op1").wait().ok
    assert desk.set("route", "trunk").wait().ok

    out = desk.dial("5550").wait()

    row = desk.rows[out.data["row"]]
    assert agent.requests("dial") == [(row.id, "op2", "sip:85550@pbx2.test", "trunk")]
    assert (row.line, row.route) == ("op2", "trunk")
    assert row.as_json()["route"] == "trunk"


def test_dial_on_a_route_whose_line_is_not_registered_is_refused(desk: Desk, agent: FakeAgent) -> None:
    agent.register("op2", registered=False, code=408, reason="Request Timeout")
    desk.set("route", "trunk").wait()

    assert desk.dial("5550").wait().reason == "line op2 is not registered (Request Timeout)"
    assert agent.requests("dial") == [] and desk.rows == {}


def test_without_a_default_route_the_first_route_is_used(agent: FakeAgent) -> None:
    profile = make_profile(default_route=None)
    d = Desk(profile, agent)
    d.start()
    agent.register_all(profile)
    assert d.route == "city"
    assert d.dial("2002").data["uri"] == "sip:92002@pbx.test"


# --- the call limit --------------------------------------------------------------------------


def test_a_fifth_call_is_refused_without_touching_the_four(desk: Desk, agent: FakeAgent, seen: list) -> None:
    rows = [talking(agent, f"sip:200{i}@pbx.test") for i in range(1, 5)]
    assert len(rows) == MAX_CALLS
    before = {r: desk.rows[r].state for r in rows}

    outcome = desk.dial("2005").wait()

    assert outcome.reason == f"this unit handles at most {MAX_CALLS} calls"
    assert failures(seen) == [outcome.reason]
    assert agent.requests("dial") == [] and agent.requests("hangup") == [] and agent.requests("hold") == []
    assert {r: desk.rows[r].state for r in rows} == before


def test_the_sip_stacks_own_call_limit_is_reported_in_plain_words(desk: Desk, agent: FakeAgent) -> None:
    agent.fail_next("dial", "this unit handles at most 4 calls")  # as PjAgent words PJ_ETOOMANY

    outcome = desk.dial("2002").wait()

    assert outcome.reason == "this unit handles at most 4 calls"
    assert desk.rows == {}


# --- one conversation at a time ----------------------------------------------------------


def test_dialling_while_talking_holds_the_current_call_first(desk: Desk, agent: FakeAgent) -> None:
    first = talking(agent)

    out = desk.dial("2002").wait()

    assert out.ok, out.reason
    assert agent.requests("hold") == [(first,)]
    assert desk.rows[first].state == "on hold"


def test_answering_a_second_call_holds_the_one_in_conversation(desk: Desk, agent: FakeAgent) -> None:
    first = talking(agent)
    second = agent.ring("sip:2002@pbx.test")
    desk.select([second]).wait()

    out = desk.answer().wait()

    assert out.ok, out.reason
    assert agent.requests("hold") == [(first,)]
    assert agent.requests("answer") == [(second,)]


def test_a_refused_hold_keeps_the_new_call_from_being_dialled(desk: Desk, agent: FakeAgent) -> None:
    talking(agent)
    agent.fail_next("hold", "re-INVITE in progress")

    out = desk.dial("2002").wait()

    assert not out.ok and "re-INVITE in progress" in out.reason
    assert agent.requests("dial") == []


# --- the panel never drifts onto another call -------------------------------------------


def test_after_the_selected_call_ends_a_press_does_not_fall_to_the_call_left(
    desk: Desk, agent: FakeAgent
) -> None:
    b = talking(agent)
    desk.select([b]).wait()
    assert desk.hold().wait().ok
    c = desk.dial("2002").wait().data["row"]
    agent.talking(c)

    agent.ended(c)  # C hangs up just as the operator presses Hang up for C

    out = desk.hangup().wait()
    assert not out.ok and out.reason == "the selected call has ended: select the call to act on"
    assert agent.requests("hangup") == []
    assert desk.select([b]).wait().ok and desk.hangup().wait().ok  # an explicit selection works again


def test_choosing_a_line_chooses_a_route_of_that_line(desk: Desk, agent: FakeAgent) -> None:
    desk.set("line", "op2").wait()
    assert desk.profile.route(desk.route).line == "op2"
    desk.set("route", "city").wait()
    assert desk.line == desk.profile.route("city").line


def test_join_of_the_held_rows_takes_in_the_party_in_conversation(desk: Desk, agent: FakeAgent) -> None:
    b = talking(agent)
    c = desk.dial("2002").wait().data["row"]  # holds B
    agent.talking(c)
    e = desk.dial("2003").wait().data["row"]  # holds C
    agent.talking(e)
    desk.select([b, c]).wait()

    out = desk.conference().wait()

    assert out.ok, out.reason
    assert out.data["conference"] == sorted([b, c, e])
