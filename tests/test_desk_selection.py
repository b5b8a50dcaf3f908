"""Which call the desk has selected, and what a row tells the front-ends about itself.

The touchscreen shows the selection the desk keeps: the only call is shown
selected (it is what the actions apply to) until a second call makes the
operator choose; a call the operator takes or places becomes the selected one;
the banner's Answer and Reject name their row and disturb nothing else.
"""

from __future__ import annotations

import time

from kiosk import events as ev
from kiosk.desk import Desk

from .fakes import FakeAgent


def talking_call(agent: FakeAgent, remote: str = "sip:2001@pbx.test") -> int:
    call = agent.ring(remote)
    agent.talking(call)
    return call


def test_the_only_ringing_call_is_shown_selected_and_a_second_call_clears_that(desk: Desk, agent: FakeAgent,
                                                                                 seen: list[ev.Event]) -> None:
    first = agent.ring("sip:2001@pbx.test")
    assert desk.selection == [first]
    second = agent.ring("sip:2002@pbx.test")

    # Nobody chose the first call: with two, the operator picks (never the wrong party).
    assert desk.selection == []
    assert [e.rows for e in seen if isinstance(e, ev.SelectionChanged)] == [(first,), ()]
    out = desk.answer().wait()
    assert not out.ok and out.code == "no_selection"
    assert agent.requests("answer") == []
    assert second in desk.rows


def test_a_selection_the_operator_made_stays_when_a_call_comes_in(desk: Desk, agent: FakeAgent) -> None:
    call = talking_call(agent)
    desk.select([call]).wait()
    agent.ring("sip:2002@pbx.test")
    assert desk.selection == [call]


def test_answering_a_named_row_holds_the_call_in_conversation_and_selects_the_answered_one(
        desk: Desk, agent: FakeAgent) -> None:
    talking = talking_call(agent)
    desk.select([talking]).wait()
    ringing = agent.ring("sip:2002@pbx.test")

    out = desk.answer(row=ringing).wait()

    assert out.ok, out.reason
    assert agent.requests("hold") == [(talking,)]
    assert agent.requests("answer") == [(ringing,)]
    assert desk.selection == [ringing]


def test_answering_a_row_that_does_not_ring_is_refused_naming_it(desk: Desk, agent: FakeAgent) -> None:
    talking = talking_call(agent)
    out = desk.answer(row=talking).wait()
    assert not out.ok and out.code == "not_ringing" and out.row == talking
    out = desk.answer(row=99).wait()
    assert not out.ok and out.code == "no_row"
    assert agent.requests("answer") == []


def test_a_failed_answer_of_a_named_row_gives_back_the_hold_and_the_selection(desk: Desk, agent: FakeAgent) -> None:
    talking = talking_call(agent)
    desk.select([talking]).wait()
    ringing = agent.ring("sip:2002@pbx.test")
    agent.fail_next("answer", "481 Call/Transaction Does Not Exist")

    out = desk.answer(row=ringing).wait()

    assert not out.ok
    assert agent.requests("unhold") == [(talking,)]
    assert desk.selection == [talking]


def test_rejecting_a_named_row_leaves_the_selected_call_alone(desk: Desk, agent: FakeAgent) -> None:
    talking = talking_call(agent)
    desk.select([talking]).wait()
    ringing = agent.ring("sip:2002@pbx.test")

    out = desk.hangup(row=ringing).wait()

    assert out.ok, out.reason
    assert agent.requests("hangup") == [(ringing,)]
    assert desk.selection == [talking]
    assert agent.requests("hold") == []


def test_when_a_consultation_ends_the_selection_goes_back_and_an_alert_says_to_which_call(
        desk: Desk, agent: FakeAgent, seen: list[ev.Event]) -> None:
    caller = talking_call(agent)
    desk.select([caller]).wait()
    out = desk.transfer("consult", number="2003").wait()
    assert out.ok, out.reason
    consult = out.data["row"]
    assert desk.selection == [consult]
    agent.talking(consult)

    agent.ended(consult, 486, "Busy Here")

    assert desk.selection == [caller]
    moved = [e for e in seen if isinstance(e, ev.Alert) and e.code == "selection_moved"]
    assert moved and moved[-1].params == {"row": caller, "ended": consult}


def test_a_row_says_how_long_it_is_held_whether_it_is_a_consultation_and_its_line_label(
        desk: Desk, agent: FakeAgent) -> None:
    caller = talking_call(agent, '"Alice Smith" <sip:2001@pbx.test>')
    desk.select([caller]).wait()
    before = time.time()
    out = desk.transfer("consult", number="2003").wait()
    assert out.ok, out.reason
    consult = out.data["row"]

    rows = {r["id"]: r for r in desk.snapshot()["calls"]}
    held, cons = rows[caller], rows[consult]
    assert held["local_hold"] and held["held_since"] is not None and held["held_since"] >= before
    assert (held["name"], held["number"]) == ("Alice Smith", "2001")
    assert cons["consult_for"] == caller and held["consult_for"] is None
    assert held["line_label"] == "Operator 1" and not held["conference"]

    desk.select([caller]).wait()
    desk.connect().wait()
    assert desk.snapshot()["calls"][0]["held_since"] is None
