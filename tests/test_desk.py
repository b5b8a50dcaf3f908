"""The desk's rules against a fake agent: selection, refusals and their reasons, the call life cycle."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

import kiosk.desk as desk_module
from kiosk import events as ev
from kiosk.desk import Desk
from kiosk.profile import MAX_CALLS

from .fakes import FakeAgent, make_profile


def kinds(events: list[ev.Event]) -> list[str]:
    """The kinds of the table's events (availability and done-notices are tested on their own)."""
    return [e.kind for e in events if e.kind not in ("available", "action_done")]


# --- selection ---------------------------------------------------------------------------


def test_the_only_call_is_acted_on_without_selecting_it(desk: Desk, agent: FakeAgent) -> None:
    call = agent.ring()
    assert desk.selection == [call]  # shown selected: it is what the actions apply to
    assert desk.selection_implicit

    outcome = desk.answer().wait()

    assert outcome.ok, outcome.reason
    assert agent.requests("answer") == [(call,)]


def test_with_two_calls_and_none_selected_nothing_is_done(desk: Desk, agent: FakeAgent, seen: list) -> None:
    agent.ring("sip:2001@pbx.test")
    agent.ring("sip:2002@pbx.test")

    for action in (desk.answer, desk.hangup):
        outcome = action()
        assert not outcome.ok
        assert outcome.reason == "no call selected"
    assert agent.requests("answer") == []
    assert agent.requests("hangup") == []
    assert [e.reason for e in seen if isinstance(e, ev.ActionFailed)] == ["no call selected"] * 2


def test_with_two_calls_hangup_touches_only_the_selected_one(desk: Desk, agent: FakeAgent) -> None:
    first = agent.ring("sip:2001@pbx.test")
    second = agent.ring("sip:2002@pbx.test")

    assert desk.select([second]).wait().ok
    assert desk.hangup().wait().ok

    assert agent.requests("hangup") == [(second,)]
    assert first in desk.rows


def test_two_selected_rows_refuse_a_single_call_action(desk: Desk, agent: FakeAgent) -> None:
    a, b = agent.ring(), agent.ring()
    desk.select([a, b]).wait()

    outcome = desk.hangup().wait()

    assert not outcome.ok
    assert outcome.reason == "2 calls selected: select one call for hangup"
    assert agent.requests("hangup") == []


def test_answer_with_no_call_on_the_unit_says_no_call_selected(desk: Desk, agent: FakeAgent) -> None:
    outcome = desk.answer().wait()
    assert (outcome.ok, outcome.reason) == (False, "no call selected")
    assert agent.received == []


def test_selecting_a_row_that_does_not_exist_names_the_rows_there_are(desk: Desk, agent: FakeAgent) -> None:
    call = agent.ring()

    outcome = desk.select([call, 7]).wait()

    assert not outcome.ok
    assert outcome.reason == f"call 7 is not on this unit (calls: {call})"
    assert desk.selection == [call]  # as it was: the only call


def test_selecting_nothing_clears_the_selection(desk: Desk, agent: FakeAgent, seen: list) -> None:
    a, b = agent.ring(), agent.ring()
    desk.select([a, b]).wait()

    assert desk.select([]).wait().ok

    assert desk.selection == []
    assert seen[-1] == ev.SelectionChanged(())


def test_selecting_the_same_row_twice_keeps_it_once(desk: Desk, agent: FakeAgent) -> None:
    a, b = agent.ring(), agent.ring()
    assert desk.select([b, a, b]).wait().data["selection"] == [b, a]


# --- parameters --------------------------------------------------------------------------


def test_unknown_route_is_refused_listing_the_valid_ones(desk: Desk) -> None:
    outcome = desk.set("route", "moon").wait()
    assert not outcome.ok
    assert outcome.reason == "unknown route 'moon'; routes: city, trunk"
    assert desk.route == "city"


def test_unknown_line_is_refused_listing_the_lines(desk: Desk) -> None:
    outcome = desk.set("line", "op9").wait()
    assert not outcome.ok
    assert outcome.reason == "unknown line 'op9'; lines: op1, op2"
    assert desk.line == "op1"


def test_unknown_parameter_is_refused(desk: Desk) -> None:
    outcome = desk.set("volume", "11").wait()
    assert not outcome.ok
    assert outcome.code == "bad_argument" and "one of line, number, route" in outcome.reason


def test_setting_number_strips_spaces_and_tells_front_ends(desk: Desk, seen: list) -> None:
    outcome = desk.set("number", " 1002 ").wait()
    assert outcome.data == {"line": "op1", "number": "1002", "route": "city"}
    assert seen == [ev.ParamsChanged("op1", "1002", "city")]


# --- dialling ----------------------------------------------------------------------------


def test_dial_without_any_number_is_refused_and_asks_for_it(desk: Desk, agent: FakeAgent, seen: list) -> None:
    outcome = desk.dial().wait()

    assert not outcome.ok
    assert outcome.reason == "number required for dial"
    assert ev.NumberRequired("dial") in seen
    assert [(e.action, e.reason, e.code) for e in seen if isinstance(e, ev.ActionFailed)] == [
        ("dial", "number required for dial", "number_required")]
    assert agent.requests("dial") == []
    assert desk.rows == {}


def test_dial_uses_the_number_field_when_no_number_is_given(desk: Desk, agent: FakeAgent) -> None:
    desk.set("number", "5551234").wait()
    outcome = desk.dial().wait()
    assert outcome.ok
    assert agent.requests("dial")[0][2] == "sip:95551234@pbx.test"


def test_dial_goes_out_on_the_routes_line_with_its_prefix(desk: Desk, agent: FakeAgent) -> None:
    desk.set("route", "trunk").wait()

    outcome = desk.dial("5551234").wait()

    assert outcome.ok
    row = outcome.data["row"]
    assert outcome.data["uri"] == "sip:85551234@pbx2.test"
    assert agent.requests("dial") == [(row, "op2", "sip:85551234@pbx2.test", "trunk")]
    assert desk.rows[row].line == "op2"
    assert desk.rows[row].route == "trunk"


def test_dial_of_a_full_uri_is_not_prefixed(desk: Desk, agent: FakeAgent) -> None:
    assert desk.dial("sip:helpdesk@example.org").wait().data["uri"] == "sip:helpdesk@example.org"
    assert desk.dial("2001@other.test").wait().data["uri"] == "sip:2001@other.test"


def test_dial_adds_a_dialling_row_and_selects_it(desk: Desk, agent: FakeAgent, seen: list) -> None:
    agent.ring()  # an unselected call already on the unit
    seen.clear()

    outcome = desk.dial("1002").wait()

    row = outcome.data["row"]
    assert desk.selection == [row]
    assert desk.rows[row].state == "dialling"
    assert desk.rows[row].direction == "out"
    assert kinds(seen) == ["row", "selection"]


def test_dial_on_an_unregistered_line_is_refused_with_the_registrars_reason(desk: Desk, agent: FakeAgent) -> None:
    agent.register("op1", registered=False, code=403, reason="Forbidden")

    outcome = desk.dial("1002").wait()

    assert not outcome.ok
    assert outcome.reason == "line op1 is not registered (Forbidden)"
    assert agent.requests("dial") == []


def test_line_not_registered_yet_is_refused_before_any_register_answer(agent: FakeAgent) -> None:
    desk = Desk(make_profile(), agent)
    desk.start()
    outcome = desk.dial("1002").wait()
    assert outcome.reason == "line op1 is not registered (not registered yet)"


def test_a_fifth_call_is_refused(desk: Desk, agent: FakeAgent) -> None:
    for _ in range(MAX_CALLS):
        agent.ring()

    outcome = desk.dial("1002").wait()

    assert not outcome.ok
    assert outcome.reason == "this unit handles at most 4 calls"
    assert agent.requests("dial") == []
    assert len(desk.rows) == MAX_CALLS


def test_agent_failure_on_dial_removes_the_row_and_reports_the_reason(
    desk: Desk, agent: FakeAgent, seen: list
) -> None:
    agent.fail_next("dial", "no route to the trunk")

    outcome = desk.dial("1002").wait()

    assert not outcome.ok
    assert outcome.reason == "no route to the trunk"
    assert desk.rows == {}
    assert desk.selection == []
    row = agent.requests("dial")[0][0]
    assert kinds(seen) == ["row", "selection", "action_failed", "row_removed"]
    assert (seen[-2].action, seen[-2].reason, seen[-2].row_id) == ("dial", "no route to the trunk", row)
    assert seen[-1] == ev.RowRemoved(row, "no route to the trunk")


def test_agent_that_does_not_answer_in_time_is_reported(
    desk: Desk, agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(desk_module, "AGENT_TIMEOUT", 0.05)
    agent.stall_next("dial")

    outcome = desk.dial("1002").wait()

    assert outcome.reason == "the SIP agent did not answer in time; nothing was done"
    assert desk.rows == {}


# --- the life of a call ------------------------------------------------------------------


def test_incoming_call_rings_is_answered_talks_and_its_end_clears_row_and_selection(
    desk: Desk, agent: FakeAgent, seen: list
) -> None:
    call = agent.ring("sip:2001@pbx.test", line="op2")
    assert desk.snapshot()["calls"][0] | {"started": 0, "duration": 0} == {
        "id": call, "line": "op2", "direction": "in", "remote": "sip:2001@pbx.test", "state": "ringing",
        "started": 0, "duration": 0, "route": None, "recording": False, "note": "", "note_key": None,
        "answered": None, "local_hold": False, "remote_hold": False, "held_since": None, "name": "",
        "number": "2001", "conference": False, "consult_for": None, "line_label": "Operator 2",
        "via": "", "intercom": False, "auto_answer": False, "directory_name": "",
    }
    desk.select([call]).wait()

    assert desk.answer().wait().ok
    agent.talking(call)
    assert desk.rows[call].state == "talking"
    assert desk.rows[call].answered is not None

    agent.ended(call, 200, "BYE")
    assert desk.rows == {}
    assert desk.selection == []
    assert seen[-1] == ev.RowRemoved(call, "200 BYE")
    # the only call is shown selected at once, and the operator's select says it again
    assert kinds(seen) == ["row", "selection", "selection", "row", "row_removed"]


def test_answer_is_refused_for_a_call_that_is_not_ringing_here(desk: Desk, agent: FakeAgent) -> None:
    row = desk.dial("1002").wait().data["row"]
    outcome = desk.answer().wait()
    assert outcome.reason == f"call {row} is not ringing here (it is dialling)"

    call = agent.ring()
    agent.talking(call)
    desk.select([call]).wait()
    assert desk.answer().wait().reason == f"call {call} is not ringing here (it is talking)"
    assert agent.requests("answer") == []


def test_early_media_shows_as_ringing_and_remote_is_updated(desk: Desk, agent: FakeAgent) -> None:
    row = desk.dial("1002").wait().data["row"]

    agent.progress(row, "early", 183, "Session Progress", remote='"Sales" <sip:91002@pbx.test>')

    assert desk.rows[row].state == "ringing"
    assert desk.rows[row].remote == '"Sales" <sip:91002@pbx.test>'


def test_agent_failure_on_hangup_keeps_the_row(desk: Desk, agent: FakeAgent) -> None:
    call = agent.ring()
    agent.fail_next("hangup", "call already gone")

    outcome = desk.hangup().wait()

    assert outcome.reason == "call already gone"
    assert call in desk.rows  # only the agent's "ended" removes a row


def test_events_for_unknown_calls_are_ignored(desk: Desk, agent: FakeAgent, seen: list) -> None:
    agent.talking(999)
    agent.ended(999)
    assert seen == []


def test_hold_state_from_the_agent_is_kept_on_the_row(desk: Desk, agent: FakeAgent, seen: list) -> None:
    call = agent.ring()
    agent.emit(ev.CallMedia(call, local_hold=False, remote_hold=True))
    assert desk.rows[call].remote_hold
    assert kinds(seen) == ["row", "selection", "row"]  # the only call is shown selected


def test_line_registration_shows_in_the_snapshot(desk: Desk, agent: FakeAgent, seen: list) -> None:
    agent.register("op2", registered=False, code=408, reason="Request Timeout")

    lines = {s["id"]: s for s in desk.snapshot()["lines"]}

    assert lines["op1"]["registered"] is True
    assert lines["op2"] == {"id": "op2", "registered": False, "code": 408, "reason": "Request Timeout",
                            "label": "Operator 2"}
    assert seen == [ev.LineState("op2", False, 408, "Request Timeout")]


def test_agent_alert_reaches_front_ends(desk: Desk, agent: FakeAgent, seen: list) -> None:
    agent.emit(ev.Alert("audio device lost"))
    assert seen == [ev.Alert("audio device lost")]


# --- listeners ---------------------------------------------------------------------------


def test_a_failing_listener_does_not_stop_the_desk_or_other_listeners(desk: Desk, agent: FakeAgent) -> None:
    def broken(event: ev.Event) -> None:
        raise RuntimeError("front-end bug")

    got: list[ev.Event] = []
    desk.subscribe(broken)
    desk.subscribe(got.append)

    call = agent.ring()

    assert call in desk.rows
    assert kinds(got) == ["row", "selection"]


def test_unsubscribe_stops_the_events(desk: Desk, agent: FakeAgent) -> None:
    got: list[ev.Event] = []
    unsubscribe = desk.subscribe(got.append)
    unsubscribe()
    unsubscribe()  # twice is harmless
    agent.ring()
    assert got == []


def test_start_and_stop_reach_the_agent(agent: FakeAgent) -> None:
    desk = Desk(make_profile(), agent)
    desk.start()
    assert agent.started and agent.listener == desk.on_agent_event
    desk.stop()
    assert agent.stopped


def test_incoming_and_dialled_calls_never_share_a_row_id(desk: Desk, agent: FakeAgent) -> None:
    # The agent draws incoming ids from the desk's counter (the new_id given to start()).
    incoming = agent.ring()
    dialled = desk.dial("1002").wait().data["row"]
    later = agent.ring()

    assert len({incoming, dialled, later}) == 3
    assert [desk.rows[i].direction for i in (incoming, dialled, later)] == ["in", "out", "in"]


# --- hold, connect, transfer, conference, record, pickup ---------------------------------


def answered_call(desk: Desk, agent: FakeAgent, remote: str = "sip:2001@pbx.test") -> int:
    """An incoming call, answered and talking; returns its row id."""
    call = agent.ring(remote)
    agent.talking(call)
    return call


def test_hold_then_connect_a_call(desk: Desk, agent: FakeAgent) -> None:
    call = answered_call(desk, agent)

    assert desk.hold().wait().ok
    assert desk.rows[call].state == "on hold"
    assert desk.hold().wait().reason == f"call {call} is already on hold"

    assert desk.connect().wait().ok
    assert desk.rows[call].state == "talking"
    assert agent.requests("hold") == [(call,)] and agent.requests("unhold") == [(call,)]


def test_hold_is_refused_for_a_call_not_yet_answered(desk: Desk, agent: FakeAgent) -> None:
    call = agent.ring()
    assert desk.hold().wait().reason == f"call {call} is ringing: only a call in conversation can be held"
    assert agent.requests("hold") == []


def test_connect_holds_the_other_conversation_first(desk: Desk, agent: FakeAgent) -> None:
    b = answered_call(desk, agent, "sip:2001@pbx.test")
    desk.hold().wait()
    c = answered_call(desk, agent, "sip:2002@pbx.test")
    desk.select([b]).wait()

    assert desk.connect().wait().ok

    assert agent.requests("hold") == [(b,), (c,)]
    assert agent.requests("unhold") == [(b,)]
    assert desk.rows[c].state == "on hold"


def test_quick_transfer_needs_a_number_and_names_the_action(desk: Desk, agent: FakeAgent, seen: list) -> None:
    answered_call(desk, agent)

    outcome = desk.transfer("quick").wait()

    assert outcome.reason == "number required for quick transfer"
    assert ev.NumberRequired("transfer_quick") in seen
    assert agent.requests("transfer") == []


def test_quick_transfer_refers_the_selected_call_and_leaves_it_when_done(desk: Desk, agent: FakeAgent) -> None:
    call = answered_call(desk, agent)

    outcome = desk.transfer("quick", "1003").wait()

    assert outcome.data == {"row": call, "to": "sip:1003@pbx.test"}
    assert agent.requests("transfer") == [(call, "sip:1003@pbx.test")]
    agent.emit(ev.TransferProgress(call, 200, "OK", final=True))
    assert agent.requests("hangup") == [(call,)]


def test_failed_quick_transfer_keeps_the_call_and_says_why(desk: Desk, agent: FakeAgent, seen: list) -> None:
    call = answered_call(desk, agent)
    desk.transfer("quick", "1003").wait()

    agent.emit(ev.TransferProgress(call, 486, "Busy Here", final=True))

    assert agent.requests("hangup") == []
    assert call in desk.rows
    assert seen[-1].reason == f"transfer of call {call} failed: 486 Busy Here; the call stays with you"


def test_unknown_transfer_mode_is_refused(desk: Desk, agent: FakeAgent) -> None:
    answered_call(desk, agent)
    out = desk.transfer("sideways", "1003").wait()
    assert (out.code, out.reason) == ("bad_argument", "'mode' of transfer must be one of quick, consult, confirm, next, not 'sideways'")


def test_consult_holds_the_caller_and_dials_the_number(desk: Desk, agent: FakeAgent) -> None:
    b = answered_call(desk, agent)

    outcome = desk.transfer("consult", "1003").wait()

    c = outcome.data["row"]
    assert outcome.data == {"row": c, "held": b}
    assert desk.rows[b].state == "on hold"
    assert agent.requests("dial") == [(c, "op1", "sip:1003@pbx.test", None)]
    assert desk.selection == [c]


def test_three_party_conference_holds_b_dials_c_then_joins_both(desk: Desk, agent: FakeAgent) -> None:
    b = answered_call(desk, agent)

    first = desk.conference("1003").wait()
    c = first.data["row"]
    assert desk.rows[b].state == "on hold"
    assert desk.conference().wait().reason == f"call {c} has not answered yet (dialling)"

    agent.talking(c)
    second = desk.conference().wait()

    assert second.data == {"conference": sorted([b, c])}
    assert agent.requests("conference") == [(sorted([b, c]),)]
    assert {desk.rows[b].state, desk.rows[c].state} == {"in conference"}


def test_record_start_and_stop_on_the_selected_call(desk: Desk, agent: FakeAgent, tmp_path) -> None:
    desk.profile = make_profile(recordings=tmp_path)
    call = answered_call(desk, agent, "sip:2001@pbx.test")

    started = desk.record("start").wait()

    path = started.data["file"]
    assert path.startswith(str(tmp_path)) and f"_op1_in_2001_pbx.test_{call}.wav" in path
    assert desk.rows[call].recording
    assert desk.record("start").wait().reason == f"call {call} is already being recorded"
    assert desk.record("stop").wait().data == {"row": call, "file": path}
    assert agent.requests("record") == [(call, path), (call, None)]
    assert not desk.rows[call].recording


def test_pickup_dials_the_feature_code_and_waits_for_the_answer(
    desk: Desk, agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    def answer_soon(call: int, line: str, uri: str, route: str | None) -> Future[None]:
        fut = FakeAgent.dial(agent, call, line, uri, route)
        threading.Timer(0.02, agent.talking, (call,)).start()
        return fut

    monkeypatch.setattr(agent, "dial", answer_soon)

    outcome = desk.pickup("1005").wait()

    assert outcome.ok, outcome.reason
    assert agent.requests("dial")[0][1:] == ("op1", "sip:*81005@pbx.test", None)


def test_pickup_of_an_external_address_is_refused(desk: Desk) -> None:
    assert desk.pickup("sip:1005@pbx.test").wait().reason == "pickup needs an internal number, not 'sip:1005@pbx.test'"


# --- known desk bugs (desk.py is not ours to edit; these say what should happen) ----------


def test_unexpected_agent_exception_on_dial_removes_the_row_and_refuses(desk: Desk, agent: FakeAgent) -> None:
    agent.fail_next("dial", RuntimeError("pjsua2: PJSIP_EINVALIDURI"))

    try:
        outcome = desk.dial("1002").wait()
    finally:
        assert desk.rows == {}  # no row for a call that never existed, whatever dial() did
    assert not outcome.ok


def test_select_outcome_does_not_change_when_the_call_ends_later(desk: Desk, agent: FakeAgent) -> None:
    a, _b = agent.ring(), agent.ring()
    outcome = desk.select([a]).wait()

    agent.ended(a)

    assert outcome.data == {"selection": [a]}


def test_call_placed_after_a_dial_timeout_is_not_left_without_a_row(
    desk: Desk, agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(desk_module, "AGENT_TIMEOUT", 0.05)
    late: Future[None] = agent.stall_next("dial")
    assert not desk.dial("1002").wait().ok
    row = agent.requests("dial")[0][0]

    # The desk cancels a request it gave up on, so the agent thread never places the call
    # (the real agent skips cancelled requests); no row, nothing to hang up.
    assert late.cancelled()
    assert row not in desk.rows


def test_confirm_after_the_consulted_party_answers_transfers_the_held_caller(desk: Desk, agent: FakeAgent) -> None:
    b = answered_call(desk, agent)
    c = desk.transfer("consult", "1003").wait().data["row"]
    agent.talking(c)

    outcome = desk.transfer("confirm").wait()

    assert outcome.ok, outcome.reason
    assert agent.requests("transfer_replaces") == [(b, c)]


def test_the_consultation_call_can_be_put_on_hold(desk: Desk, agent: FakeAgent) -> None:
    answered_call(desk, agent)
    c = desk.transfer("consult", "1003").wait().data["row"]
    agent.talking(c)

    assert desk.hold().wait().ok
    assert agent.requests("hold")[-1] == (c,)


def test_connecting_the_held_caller_holds_the_consultation_first(desk: Desk, agent: FakeAgent) -> None:
    b = answered_call(desk, agent)
    c = desk.transfer("consult", "1003").wait().data["row"]
    agent.talking(c)
    desk.select([b]).wait()

    assert desk.connect().wait().ok

    assert desk.rows[c].local_hold, "the consulted party would hear the caller"


def test_with_global_recording_every_answered_call_is_recorded(agent: FakeAgent, tmp_path) -> None:
    profile = make_profile(recordings=tmp_path, record_always=True)
    desk = Desk(profile, agent)
    desk.start()
    agent.register_all(profile)

    call = answered_call(desk, agent)

    assert [r[0] for r in agent.requests("record")] == [call]
    assert desk.rows[call].recording


def test_pickup_that_times_out_does_not_leave_its_call_running(
    desk: Desk, agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(desk_module, "PICKUP_TIMEOUT", 0.05)
    monkeypatch.setattr(desk_module, "PICKUP_RELEASE", 0.05)  # the fake never ends the call by itself

    outcome = desk.pickup("1005").wait()

    assert not outcome.ok
    row = agent.requests("dial")[0][0]
    assert row not in desk.rows or (row,) in agent.requests("hangup")


def test_conference_press_on_another_selected_call_does_not_join_the_pending_pair(
    desk: Desk, agent: FakeAgent
) -> None:
    b = answered_call(desk, agent, "sip:2001@pbx.test")
    c = desk.conference("1003").wait().data["row"]
    agent.talking(c)
    other = answered_call(desk, agent, "sip:2002@pbx.test")
    desk.select([other]).wait()

    desk.conference("1004").wait()

    assert agent.requests("conference") == [], f"joined {b} and {c} though row {other} was selected"
