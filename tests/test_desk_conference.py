"""The desk's conference rules against the fake agent: both flows, refusals, parties leaving.

What the far ends hear is proven end to end in test_unit_conference.py; here
the panel's side: which calls are held, dialled, joined and taken off hold
for each press, what is refused and why, and what the rows say.
"""

from __future__ import annotations


from kiosk import events as ev
from kiosk.desk import Desk
from kiosk.profile import MAX_CALLS

from .fakes import FakeAgent


def talking_call(desk: Desk, agent: FakeAgent, remote: str = "sip:2001@pbx.test") -> int:
    """An incoming call, answered: the operator is talking to it."""
    call = agent.ring(remote)
    agent.talking(call)
    return call


def held_chain(desk: Desk, agent: FakeAgent, count: int) -> list[int]:
    """The four-or-more flow up to the press: talk, hold, dial the next ...; the last stays talking."""
    rows = [talking_call(desk, agent)]
    for i in range(1, count):
        assert desk.hold().wait().ok
        out = desk.dial(f"200{i + 1}").wait()
        assert out.ok, out.reason
        agent.talking(out.data["row"])
        rows.append(out.data["row"])
    return rows


def states(desk: Desk) -> dict[int, str]:
    return {r.id: r.state for r in desk.rows.values()}


def failures(seen: list[ev.Event]) -> list[str]:
    return [e.reason for e in seen if isinstance(e, ev.ActionFailed)]


# --- three parties ------------------------------------------------------------------------


def test_conference_with_a_number_holds_b_and_dials_c_on_b_s_line(desk: Desk, agent: FakeAgent) -> None:
    b = talking_call(desk, agent)

    out = desk.conference("1003").wait()

    assert out.ok, out.reason
    c = out.data["row"]
    assert out.data["held"] == b
    assert agent.requests("hold") == [(b,)]
    assert agent.requests("dial") == [(c, "op1", "sip:1003@pbx.test", None)]
    assert states(desk) == {b: "on hold", c: "dialling"}
    assert desk.selection == [c]
    assert desk.pending_conference == (b, c)


def test_second_press_before_c_answers_is_refused_and_changes_nothing(
        desk: Desk, agent: FakeAgent, seen: list[ev.Event]) -> None:
    b = talking_call(desk, agent)
    c = desk.conference("1003").wait().data["row"]

    assert desk.conference().wait().reason == f"call {c} has not answered yet (dialling)"
    agent.ringing(c)
    assert desk.conference().wait().reason == f"call {c} has not answered yet (ringing)"
    desk.select([]).wait()  # nothing selected: the press still means the pending pair
    assert desk.conference().wait().reason == f"call {c} has not answered yet (ringing)"

    assert agent.requests("conference") == []
    assert states(desk) == {b: "on hold", c: "ringing"}
    assert failures(seen) == [f"call {c} has not answered yet (dialling)"] + \
        [f"call {c} has not answered yet (ringing)"] * 2


def test_second_press_after_c_answers_joins_b_c_and_the_operator(desk: Desk, agent: FakeAgent) -> None:
    b = talking_call(desk, agent)
    c = desk.conference("1003").wait().data["row"]
    agent.talking(c)

    out = desk.conference().wait()

    assert out.ok, out.reason
    assert out.data == {"conference": sorted([b, c])}
    assert agent.requests("conference") == [(sorted([b, c]),)]
    assert agent.requests("unhold") == [(b,)]  # B comes back, now into the conference
    assert states(desk) == {b: "in conference", c: "in conference"}
    assert desk.pending_conference is None
    assert desk.conference_rows == {b, c}


def test_conference_without_a_number_asks_for_one_and_holds_nobody(
        desk: Desk, agent: FakeAgent, seen: list[ev.Event]) -> None:
    b = talking_call(desk, agent)

    out = desk.conference().wait()

    assert out.reason == "number required for conference"
    assert [e.action for e in seen if isinstance(e, ev.NumberRequired)] == ["conference"]
    assert agent.requests("hold") == [] and agent.requests("dial") == []
    assert states(desk) == {b: "talking"}


def test_conference_uses_the_number_field_when_no_number_is_given(desk: Desk, agent: FakeAgent) -> None:
    talking_call(desk, agent)
    desk.set("number", "1004").wait()

    out = desk.conference().wait()

    assert out.ok, out.reason
    assert agent.requests("dial")[0][2] == "sip:1004@pbx.test"


def test_c_hanging_up_before_answering_cancels_the_pending_conference(desk: Desk, agent: FakeAgent) -> None:
    b = talking_call(desk, agent)
    c = desk.conference("1003").wait().data["row"]

    agent.ended(c, 486, "Busy Here")

    assert desk.pending_conference is None
    out = desk.conference().wait()  # B alone, still held: the operator must connect B first
    assert out.reason == f"call {b} is on hold: talk to the first party, or select the calls to join"
    assert agent.requests("conference") == []


def test_a_failed_dial_for_c_takes_b_off_hold_again(desk: Desk, agent: FakeAgent, seen: list[ev.Event]) -> None:
    b = talking_call(desk, agent)
    agent.fail_next("dial", "cannot call sip:1003@pbx.test: no route")

    out = desk.conference("1003").wait()

    assert out.reason == "cannot call sip:1003@pbx.test: no route"
    assert agent.requests("hold") == [(b,)] and agent.requests("unhold") == [(b,)]
    assert states(desk) == {b: "talking"}
    assert desk.pending_conference is None


def test_conference_on_an_unregistered_line_is_refused_before_b_is_held(desk: Desk, agent: FakeAgent) -> None:
    b = talking_call(desk, agent)
    agent.register("op1", registered=False, code=503, reason="Service Unavailable")

    out = desk.conference("1003").wait()

    assert out.reason == "line op1 is not registered (Service Unavailable)"
    assert agent.requests("hold") == []
    assert states(desk) == {b: "talking"}


def test_joining_the_pending_pair_by_selecting_both_ends_the_pending_step(desk: Desk, agent: FakeAgent) -> None:
    b = talking_call(desk, agent)
    c = desk.conference("1003").wait().data["row"]
    agent.talking(c)
    desk.select([b, c]).wait()
    assert desk.conference().wait().ok

    desk.select([c]).wait()
    out = desk.conference("1004").wait()  # the next party, not the old pair joined again

    assert out.ok, out.reason
    assert agent.requests("dial")[-1][2] == "sip:1004@pbx.test"
    assert desk.pending_conference == (c, out.data["row"])


# --- four or more -------------------------------------------------------------------------


def test_selected_held_rows_and_the_talking_one_all_join(desk: Desk, agent: FakeAgent) -> None:
    rows = held_chain(desk, agent, 4)
    assert [states(desk)[r] for r in rows] == ["on hold"] * 3 + ["talking"]
    desk.select(rows).wait()

    out = desk.conference().wait()

    assert out.ok, out.reason
    assert out.data == {"conference": sorted(rows)}
    assert agent.requests("conference") == [(sorted(rows),)]
    assert sorted(agent.requests("unhold")) == [(r,) for r in rows[:3]]
    assert set(states(desk).values()) == {"in conference"}


def test_a_join_adds_to_the_running_conference_rather_than_starting_a_second(
        desk: Desk, agent: FakeAgent) -> None:
    rows = held_chain(desk, agent, 2)
    desk.select(rows).wait()
    assert desk.conference().wait().ok
    for number in ("2003", "2004"):  # two more parties, none of them in the conference
        if number == "2004":
            assert desk.hold().wait().ok
        row = desk.dial(number).wait().data["row"]
        agent.talking(row)
        rows.append(row)
    desk.select(rows[2:]).wait()

    out = desk.conference().wait()

    assert out.data == {"conference": sorted(rows)}
    assert agent.requests("conference")[-1] == (sorted(rows),)
    assert desk.conference_rows == set(rows)
    assert set(states(desk).values()) == {"in conference"}


def test_adding_a_party_to_a_running_conference_holds_all_of_it_then_joins_everyone(
        desk: Desk, agent: FakeAgent) -> None:
    b = talking_call(desk, agent)
    c = desk.conference("1003").wait().data["row"]
    agent.talking(c)
    assert desk.conference().wait().ok

    desk.select([c]).wait()
    d = desk.conference("1004").wait().data["row"]

    assert sorted(agent.requests("hold")[1:]) == [(b,), (c,)], "B would hear the operator dial D"
    assert states(desk) == {b: "on hold", c: "on hold", d: "dialling"}
    agent.talking(d)
    out = desk.conference().wait()
    assert out.data == {"conference": sorted([b, c, d])}
    assert set(states(desk).values()) == {"in conference"}


# --- refusals -----------------------------------------------------------------------------


def test_conference_with_nothing_selected_is_refused(desk: Desk, agent: FakeAgent, seen: list[ev.Event]) -> None:
    held_chain(desk, agent, 2)
    desk.select([]).wait()

    assert desk.conference("1004").wait().reason == "no call selected"
    assert agent.requests("conference") == [] and len(agent.requests("dial")) == 1
    assert failures(seen)[-1] == "no call selected"


def test_a_ringing_row_selected_is_refused_with_its_state(desk: Desk, agent: FakeAgent) -> None:
    b = talking_call(desk, agent)
    ringing = agent.ring("sip:2009@pbx.test")
    desk.select([ringing]).wait()

    assert desk.conference("1004").wait().reason == (
        f"call {ringing} is ringing: talk to the first party, or select the calls to join")
    desk.select([b, ringing]).wait()
    assert desk.conference().wait().reason == f"call {ringing} is ringing: only answered calls can join"
    assert agent.requests("hold") == [] and agent.requests("conference") == []
    assert states(desk) == {b: "talking", ringing: "ringing"}


def test_a_fifth_party_is_refused_with_the_unit_s_limit_and_the_conference_stays(
        desk: Desk, agent: FakeAgent) -> None:
    rows = held_chain(desk, agent, MAX_CALLS)
    desk.select(rows).wait()
    assert desk.conference().wait().ok
    holds = len(agent.requests("hold"))

    desk.select([rows[0]]).wait()
    assert desk.conference("2005").wait().reason == f"this unit handles at most {MAX_CALLS} calls"
    assert desk.dial("2005").wait().reason == f"this unit handles at most {MAX_CALLS} calls"

    assert len(agent.requests("hold")) == holds, "the refused fifth party held a member"
    assert len(agent.requests("dial")) == MAX_CALLS - 1
    assert set(states(desk).values()) == {"in conference"}


def test_the_agent_refusing_the_join_leaves_the_rows_as_they_were(
        desk: Desk, agent: FakeAgent, seen: list[ev.Event]) -> None:
    rows = held_chain(desk, agent, 2)
    desk.select(rows).wait()
    agent.fail_next("conference", "call 1 has ended")

    out = desk.conference().wait()

    assert out.reason == "call 1 has ended"
    assert agent.requests("unhold") == []
    assert [states(desk)[r] for r in rows] == ["on hold", "talking"]
    assert desk.conference_rows == set()


# --- parties leaving ----------------------------------------------------------------------


def test_one_party_leaving_leaves_the_rest_in_conference(desk: Desk, agent: FakeAgent) -> None:
    rows = held_chain(desk, agent, 3)
    desk.select(rows).wait()
    assert desk.conference().wait().ok

    agent.ended(rows[2])

    assert states(desk) == {rows[0]: "in conference", rows[1]: "in conference"}
    assert desk.conference_rows == set(rows[:2])


def test_the_last_remote_party_left_is_an_ordinary_call(desk: Desk, agent: FakeAgent) -> None:
    rows = held_chain(desk, agent, 3)
    desk.select(rows).wait()
    assert desk.conference().wait().ok

    agent.ended(rows[0])
    agent.ended(rows[2])

    assert states(desk) == {rows[1]: "talking"}
    assert desk.conference_rows == set()
    assert desk.hold().wait().ok  # and it behaves as one
    assert states(desk) == {rows[1]: "on hold"}
    assert desk.connect().wait().ok
    assert states(desk) == {rows[1]: "talking"}


def test_going_back_to_b_abandons_the_three_party_step(desk: Desk, agent: FakeAgent) -> None:
    b = talking_call(desk, agent)
    c = desk.conference("2002").wait().data["row"]
    agent.talking(c)
    desk.select([b]).wait()
    assert desk.connect().wait().ok  # the operator changed their mind: back to B (C is held)

    out = desk.conference("2009").wait()

    assert out.ok, out.reason
    assert out.data["row"] not in (b, c)  # a new party was dialled, not the old pair joined
    assert agent.requests("conference") == []
