"""A working day at the desk, on the fake agent: tones, DTMF, do-not-disturb, auto-answer and the
call history each call leaves (a real SQLite file: kiosk.history), every outcome of kiosk.calllog."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator

import pytest

from kiosk import events as ev
from kiosk.desk import Desk
from kiosk.history import History

from .fakes import FakeAgent, make_profile


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    h = History(tmp_path / "history.db")
    h.open()
    yield h
    h.close()


@pytest.fixture
def day_seen(day_desk: Desk) -> list[ev.Event]:
    got: list[ev.Event] = []
    day_desk.subscribe(lambda e: got.append(e) if e.kind not in ("available", "action_done") else None)
    return got


@pytest.fixture
def day_desk(agent: FakeAgent, history: History) -> Iterator[Desk]:
    profile = make_profile()
    lines = (dataclasses.replace(profile.lines[0]),
             dataclasses.replace(profile.lines[1], dtmf="info", auto_answer=True, auto_answer_delay_ms=0))
    d = Desk(dataclasses.replace(profile, lines=lines), agent)
    d.call_history = history
    d.start()
    agent.register_all(d.profile)
    yield d
    d.close()


def calls(desk: Desk, **args: Any) -> list[dict[str, Any]]:
    desk.call_history.flush()
    out = desk.run("history", **args)
    assert out.ok, out.reason
    return out.data["calls"]


def ended(desk: Desk) -> None:
    desk.settle()
    desk.call_history.flush()


# --- tones -----------------------------------------------------------------------------------


def test_a_call_rings_until_it_is_answered_and_a_second_call_only_gives_the_waiting_tone(
        day_desk: Desk, agent: FakeAgent) -> None:
    first = agent.ring("sip:2001@pbx.test")
    day_desk.settle()
    assert agent.playing == "ring"
    assert day_desk.answer().wait().ok
    agent.talking(first)
    day_desk.settle()
    assert agent.playing is None
    agent.ring("sip:2002@pbx.test")
    day_desk.settle()
    assert agent.playing == "waiting"  # the customer's words are not drowned by a ring
    day_desk.hold().wait()
    day_desk.settle()
    assert agent.playing == "ring"  # nobody in conversation now: a full ring again


def test_the_ring_stops_when_the_caller_gives_up(day_desk: Desk, agent: FakeAgent) -> None:
    call = agent.ring()
    day_desk.settle()
    agent.ended(call, 487, "Request Terminated")
    day_desk.settle()
    assert agent.tones == ["ring", None]


def test_ringback_plays_until_the_far_end_sends_early_media_or_answers(day_desk: Desk, agent: FakeAgent) -> None:
    out = day_desk.dial("2002").wait()
    row = out.data["row"]
    agent.ringing(row)
    day_desk.settle()
    assert agent.playing == "ringback"
    agent.emit(ev.CallMedia(row, local_hold=False, remote_hold=False))  # 183 with SDP: its own audio
    day_desk.settle()
    assert agent.playing is None
    assert day_desk.rows[row].state == "ringing" and day_desk.rows[row].answered is None


# --- DTMF --------------------------------------------------------------------------------------


def test_the_keypad_sends_tones_to_the_call_in_conversation_and_edits_number_otherwise(
        day_desk: Desk, agent: FakeAgent) -> None:
    assert day_desk.key("5").ok
    assert day_desk.number == "5"
    day_desk.key("clear")
    call = agent.ring()
    agent.talking(call)
    day_desk.settle()
    assert day_desk.available["dtmf"] is None
    out = day_desk.key("7").wait()
    assert out.ok and out.data["tones"] == 1  # how many, never which: they may be a PIN
    assert agent.requests("dtmf") == [(call, "7", "rfc4733")]
    assert day_desk.number == ""  # the Number field is not touched by tones
    day_desk.hold().wait()
    day_desk.settle()
    assert day_desk.available["dtmf"]["code"] == "not_in_conversation"
    assert day_desk.key("8").ok and day_desk.number == "8"  # on hold: the keypad edits Number again
    assert agent.requests("dtmf") == [(call, "7", "rfc4733")]


def test_ctl_dtmf_uses_the_lines_method_and_refuses_what_is_not_a_tone(day_desk: Desk, agent: FakeAgent) -> None:
    call = agent.ring(line="op2")
    agent.talking(call)
    ok = day_desk.dtmf("12#").wait()
    assert ok.ok, ok.reason
    assert agent.requests("dtmf") == [(call, "12#", "info")]
    bad = day_desk.dtmf("12x").wait()
    assert not bad.ok and bad.code == "bad_dtmf" and "X" in bad.reason and "12" not in bad.reason
    assert len(agent.requests("dtmf")) == 1


def test_dtmf_without_a_call_in_conversation_is_refused_with_its_reason(day_desk: Desk, agent: FakeAgent) -> None:
    out = day_desk.dtmf("1").wait()
    assert not out.ok and out.code == "no_selection"
    call = agent.ring()
    out = day_desk.dtmf("1").wait()
    assert not out.ok and out.code == "not_in_conversation" and out.row == call
    assert agent.requests("dtmf") == []


# --- do not disturb ----------------------------------------------------------------------------


def test_dnd_refuses_calls_before_they_ring_and_keeps_them_in_the_history(
        day_desk: Desk, agent: FakeAgent, day_seen: list[ev.Event]) -> None:
    out = day_desk.dnd("on").wait()
    assert out.ok and out.data == {"dnd": True, "code": 486}
    assert agent.requests("set_dnd") == [(486,)]
    assert day_desk.snapshot()["dnd"] is True
    agent.ring("Bob <sip:2005@pbx.test>")
    day_desk.settle()
    assert day_desk.rows == {} and "ring" not in agent.tones
    entries = calls(day_desk)
    assert [(e["outcome"], e["number"], e["name"]) for e in entries] == [("dnd", "2005", "Bob")]
    assert [e.on for e in day_seen if isinstance(e, ev.DndChanged)] == [True]
    assert day_desk.dnd().wait().data["dnd"] is False  # toggle
    assert agent.requests("set_dnd") == [(486,), (None,)]


def test_dnd_is_kept_for_the_next_start(day_desk: Desk, tmp_path: Path) -> None:
    from kiosk.cli import dnd_was_on

    day_desk.dnd_file = tmp_path / "dnd"
    day_desk.dnd("on").wait()
    day_desk.settle()
    deadline = 50
    while not dnd_was_on(day_desk.dnd_file) and deadline:
        import time
        time.sleep(0.01)
        deadline -= 1
    assert dnd_was_on(day_desk.dnd_file)


# --- auto-answer -------------------------------------------------------------------------------


def test_an_auto_answer_line_answers_by_itself_with_a_beep_and_never_rings(day_desk: Desk, agent: FakeAgent) -> None:
    call = agent.ring(line="op2")
    for _ in range(100):
        day_desk.settle()
        if agent.requests("answer"):
            break
    assert agent.requests("beep") == [()]
    assert agent.requests("answer") == [(call,)]
    assert "ring" not in agent.tones


def test_auto_answer_waits_while_the_operator_is_in_a_call(day_desk: Desk, agent: FakeAgent) -> None:
    first = agent.ring()
    day_desk.answer().wait()
    agent.talking(first)
    agent.ring(line="op2")
    day_desk.settle()
    assert agent.requests("answer") == [(first,)]  # only the one the operator answered
    assert agent.playing == "waiting"


def test_an_intercom_request_is_answered_after_its_own_delay(day_desk: Desk, agent: FakeAgent) -> None:
    call = agent.ring(line="op1", intercom=True, answer_after_ms=0)
    for _ in range(100):
        day_desk.settle()
        if agent.requests("answer"):
            break
    assert agent.requests("answer") == [(call,)]
    assert day_desk.rows[call].intercom


# --- the history of every call -------------------------------------------------------------------


def test_every_outcome_lands_in_the_history(day_desk: Desk, agent: FakeAgent) -> None:
    # answered, then ended by the far end
    a = agent.ring("Alice <sip:2001@pbx.test>")
    day_desk.answer().wait()
    agent.talking(a)
    agent.ended(a)
    # missed: the caller gave up
    m = agent.ring("sip:2002@pbx.test", via="Sales queue")
    agent.ended(m, 487, "Request Terminated")
    # rejected by the operator
    r = agent.ring("sip:2003@pbx.test")
    day_desk.hangup(row=r).wait()
    agent.ended(r, 486, "Busy Here")
    # picked up by another phone
    p = agent.ring("sip:2004@pbx.test")
    agent.ended(p, 487, "Request Terminated", elsewhere=True)
    # busy and failed outgoing calls
    b = day_desk.dial("3001").wait().data["row"]
    agent.ended(b, 486, "Busy Here")
    f = day_desk.dial("3002").wait().data["row"]
    agent.ended(f, 404, "Not Found")
    # transferred
    t = agent.ring("sip:2006@pbx.test")
    day_desk.select([t]).wait()
    day_desk.answer().wait()
    agent.talking(t)
    assert day_desk.transfer("quick", "3003").wait().ok
    agent.transfer_status(t, 200, "OK")
    agent.ended(t)
    ended(day_desk)

    got = {e["number"]: e for e in calls(day_desk, limit=20)}
    assert {n: e["outcome"] for n, e in got.items()} == {
        "2001": "answered", "2002": "missed", "2003": "rejected", "2004": "picked-up",
        "3001": "busy", "3002": "failed", "2006": "transferred"}
    assert got["2001"]["name"] == "Alice" and got["2001"]["answered"] is not None
    assert got["2002"]["via"] == "Sales queue" and got["2002"]["reason"] == "487 Request Terminated"
    assert got["2006"]["transferred_to"] == "3003"
    assert got["3001"]["route"] == "city"  # as dialled: 3001 on the city route (its prefix not in the number)
    assert day_desk.snapshot()["missed_unseen"] == 1
    assert [e["number"] for e in calls(day_desk, missed=True)] == ["2002"]


def test_the_missed_count_goes_with_history_seen_and_callback_dials_the_entry(
        day_desk: Desk, agent: FakeAgent, day_seen: list[ev.Event]) -> None:
    m = agent.ring("sip:2002@pbx.test", line="op1")
    agent.ended(m, 487, "Request Terminated")
    ended(day_desk)
    changes = [e for e in day_seen if isinstance(e, ev.HistoryChanged)]
    assert [(c.entry["outcome"], c.missed_unseen) for c in changes] == [("missed", 1)]
    entry = calls(day_desk)[0]
    out = day_desk.callback(entry["id"]).wait()
    assert out.ok, out.reason
    assert agent.requests("dial")[-1][1:3] == ("op1", "sip:2002@pbx.test")
    assert day_desk.snapshot()["missed_unseen"] == 1  # not yet: the customer has not been reached
    agent.talking(out.data["row"])
    day_desk.settle()
    assert day_desk.snapshot()["missed_unseen"] == 0  # called back and reached: seen
    out = day_desk.history_seen().wait()
    assert out.ok and day_desk.snapshot()["missed_unseen"] == 0


def test_callback_of_an_entry_that_does_not_exist_says_so(day_desk: Desk, agent: FakeAgent) -> None:
    out = day_desk.callback(999).wait()
    assert not out.ok and out.code == "no_history_entry"
    assert agent.requests("dial") == []


def test_a_desk_without_history_says_why(desk: Desk) -> None:
    out = desk.run("history")
    assert not out.ok and out.code == "history_off"
    assert desk.run("directory", query="ann").data["errors"][0]["code"] == "directory_off"


def test_a_number_written_with_spaces_and_brackets_is_dialled_as_digits(desk: Desk, agent: FakeAgent) -> None:
    assert desk.dial("+7 (912) 555-01-02").wait().ok
    assert agent.requests("dial")[-1][2] == "sip:9+79125550102@pbx.test"
    bad = desk.dial("alice <bob>").wait()
    assert not bad.ok and bad.code == "bad_number"
    assert len(agent.requests("dial")) == 1


# --- what the review found: never the wrong party, never silent --------------------------------


def settle_until(desk: Desk, pred: Any, turns: int = 100) -> bool:
    for _ in range(turns):
        desk.settle()
        if pred():
            return True
    return pred()


def test_auto_answer_never_answers_over_a_call_the_operator_is_placing(day_desk: Desk, agent: FakeAgent) -> None:
    out = day_desk.dial("2002").wait()
    agent.ringing(out.data["row"])
    intercom = agent.ring(line="op2")  # an auto-answer line
    day_desk.settle()
    assert not settle_until(day_desk, lambda: bool(agent.requests("answer")), 20)
    assert day_desk.rows[intercom].auto_answer is False and day_desk.rows[intercom].state == "ringing"
    assert day_desk.selection == [out.data["row"]]


def test_two_auto_answer_calls_at_once_answer_only_the_first(day_desk: Desk, agent: FakeAgent) -> None:
    first = agent.ring("sip:2001@pbx.test", line="op2")
    second = agent.ring("sip:2002@pbx.test", line="op2")
    assert settle_until(day_desk, lambda: bool(agent.requests("answer")))
    agent.talking(first)
    day_desk.settle()
    assert agent.requests("answer") == [(first,)]
    assert agent.playing == "waiting" and day_desk.rows[second].state == "ringing"


def test_a_pickup_is_kept_as_the_caller_it_reached_and_called_back_as_them(day_desk: Desk, agent: FakeAgent) -> None:
    out = day_desk.pickup("201")
    row = out.data.get("row") if out.data else None
    day_desk.settle()
    row = row or max(day_desk.rows)
    agent.progress(row, "talking", 200, "OK", remote="Caller <sip:5551234@pbx.test>")
    assert out.wait().ok
    agent.ended(row)
    ended(day_desk)
    (entry,) = calls(day_desk)
    assert (entry["outcome"], entry["number"], entry["name"]) == ("picked-up", "5551234", "Caller")
    assert day_desk.callback(entry["id"]).wait().ok
    assert agent.requests("dial")[-1][2] == "sip:5551234@pbx.test"  # not *8201 again


def test_callback_keeps_to_the_callers_own_domain_and_refuses_what_cannot_reach_them(
        day_desk: Desk, agent: FakeAgent, history: History) -> None:
    foreign = agent.ring("Alice <sip:alice@partner.example>")
    agent.ended(foreign, 487, "Request Terminated")
    anon = agent.ring("Anonymous <sip:anonymous@anonymous.invalid>")
    agent.ended(anon, 487, "Request Terminated")
    ended(day_desk)
    by_number = {e["number"]: e for e in calls(day_desk)}
    assert day_desk.callback(by_number["alice"]["id"]).wait().ok
    assert agent.requests("dial")[-1][2] == "sip:alice@partner.example"
    out = day_desk.callback(by_number["anonymous"]["id"]).wait()
    assert not out.ok and out.code == "no_number_to_call"
    gone = history.record(direction="out", line="op1", route="nowhere", remote="sip:95550101@pbx.test",
                          number="5550101", started=1.0, outcome="answered")
    history.flush()
    out = day_desk.callback(gone).wait()
    assert not out.ok and out.code == "callback_route_gone"
    assert len(agent.requests("dial")) == 1


def test_a_key_in_a_call_the_far_end_holds_is_refused_not_typed_into_number(day_desk: Desk, agent: FakeAgent) -> None:
    call = agent.ring()
    agent.talking(call)
    agent.remote_hold(call)
    out = day_desk.key("4").wait()
    assert not out.ok and out.code == "not_in_conversation"
    assert day_desk.number == "" and agent.requests("dtmf") == []


def test_two_quick_dnd_toggles_end_off(day_desk: Desk, agent: FakeAgent) -> None:
    a, b = day_desk.submit("dnd"), day_desk.submit("dnd")
    a.result(5).wait()
    b.result(5).wait()
    assert day_desk.dnd_on is False and agent.requests("set_dnd") == [(486,), (None,)]


def test_a_ring_that_cannot_play_is_said(day_desk: Desk, agent: FakeAgent) -> None:
    from concurrent.futures import Future

    seen: list[ev.Event] = []
    day_desk.subscribe(seen.append)
    broken: Future[None] = Future()
    broken.set_exception(RuntimeError("no tone generator"))
    agent.tone = lambda kind: broken  # type: ignore[method-assign]
    agent.ring()
    assert settle_until(day_desk, lambda: any(isinstance(e, ev.Alert) and e.code == "tone_failed" for e in seen))
