"""The command model: every command is answered at once, and a Hang up never waits behind another action.

The fake agent's `stall_next` leaves an agent request pending, as a far end
that never answers (or a slow agent thread) would: the command that waits for
it must already have had its reply, and every other command must go on.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

import kiosk.desk as desk_module
from kiosk import events as ev
from kiosk.commands import ACTIONS
from kiosk.desk import Desk

from .fakes import FakeAgent

#: A reply "at once": generous for a loaded CI machine, far below any SIP wait.
AT_ONCE = 0.25


def timed(fn, *args):
    start = time.monotonic()
    out = fn(*args)
    return out, time.monotonic() - start


def talking(agent: FakeAgent, remote: str = "sip:2001@pbx.test") -> int:
    call = agent.ring(remote)
    agent.talking(call)
    return call


# --- answered at once --------------------------------------------------------------------


def test_a_command_waiting_for_the_agent_is_answered_at_once_and_finishes_later(desk: Desk, agent: FakeAgent) -> None:
    call = talking(agent)
    stalled = agent.stall_next("hold")

    out, took = timed(desk.hold)

    assert took < AT_ONCE
    assert out.ok and out.pending and out.data == {"row": call} and not out.done.done()
    stalled.set_result(None)
    final = out.wait(5)
    assert final.ok and not final.pending and final.command == out.command


def test_a_pending_command_that_fails_later_says_so_with_its_command_id(desk: Desk, agent: FakeAgent) -> None:
    call = talking(agent)
    got: list[ev.Event] = []
    desk.subscribe(got.append)
    stalled = agent.stall_next("hold")

    out = desk.hold()
    stalled.set_exception(desk_module.AgentError("re-INVITE refused: 488", "sip_error", error="re-INVITE refused: 488"))
    final = out.wait(5)

    assert not final.ok and final.code == "sip_error" and final.row == call
    failed = [e for e in got if isinstance(e, ev.ActionFailed)]
    assert [(e.command, e.code, e.row_id) for e in failed] == [(out.command, "sip_error", call)]


def test_a_completed_command_notifies_its_end_with_its_command_id(desk: Desk, agent: FakeAgent) -> None:
    talking(agent)
    got: list[ev.Event] = []
    desk.subscribe(got.append)
    stalled = agent.stall_next("hold")
    out = desk.hold()
    stalled.set_result(None)
    out.wait(5)
    deadline = time.monotonic() + 2
    while not any(isinstance(e, ev.ActionDone) for e in got) and time.monotonic() < deadline:
        time.sleep(0.01)
    done = [e for e in got if isinstance(e, ev.ActionDone)]
    assert [(e.action, e.command) for e in done] == [("hold", out.command)]


# --- Hang up overtakes ----------------------------------------------------------------------


def _hangup_overtakes(desk: Desk, agent: FakeAgent, pending: Future[None], target: int) -> None:
    out, took = timed(desk.hangup)
    assert took < AT_ONCE, f"hang up waited {took:.3f} s"
    assert out.ok, out.reason
    assert (target,) in agent.requests("hangup")
    assert not pending.done(), "the pending action must still be pending: the hang up did not wait for it"


def test_hang_up_overtakes_a_pickup_whose_call_rings_unanswered(desk: Desk, agent: FakeAgent) -> None:
    out = desk.pickup("201")  # placed, then waits up to PICKUP_TIMEOUT for the answer
    assert out.ok and out.pending
    row = out.data["row"]
    assert desk.selection == [row]

    out_h, took = timed(desk.hangup)

    assert took < AT_ONCE and out_h.ok
    assert agent.requests("hangup") == [(row,)]
    assert not out.done.done()  # the pickup still waits for its answer...
    agent.ended(row, 487, "Request Terminated")
    final = out.wait(5)  # ...and ends when its call does, saying so
    assert not final.ok and final.code == "pickup_failed"


def test_hang_up_overtakes_a_pickup_whose_dial_is_still_in_the_agent(desk: Desk, agent: FakeAgent) -> None:
    stalled = agent.stall_next("dial")
    out = desk.pickup("201")
    assert out.ok and out.pending
    _hangup_overtakes(desk, agent, stalled, out.data["row"])


def test_hang_up_overtakes_a_consultation_being_dialled(desk: Desk, agent: FakeAgent) -> None:
    b = talking(agent)
    stalled = agent.stall_next("dial")
    out = desk.transfer("consult", "2003")
    assert out.ok and out.pending and out.data == {"held": b}  # replied when it held B
    deadline = time.monotonic() + 2
    while not agent.requests("dial") and time.monotonic() < deadline:
        time.sleep(0.005)
    c = agent.requests("dial")[0][0]
    assert desk.selection == [c]
    _hangup_overtakes(desk, agent, stalled, c)
    assert b in desk.rows  # the held caller is untouched


def test_hang_up_overtakes_a_conference_join(desk: Desk, agent: FakeAgent) -> None:
    a, b = talking(agent), talking(agent, "sip:2002@pbx.test")
    desk.select([a, b]).wait()
    stalled = agent.stall_next("conference")
    out = desk.conference()
    assert out.ok and out.pending
    desk.select([b]).wait()
    _hangup_overtakes(desk, agent, stalled, b)


def test_hang_up_from_many_threads_at_once_is_never_serialised_behind_a_pending_step(
        desk: Desk, agent: FakeAgent) -> None:
    calls = [talking(agent, f"sip:20{i:02d}@pbx.test") for i in range(3)]
    stalled = agent.stall_next("hold")
    desk.select([calls[0]]).wait()
    desk.hold()  # pending
    took: list[float] = []

    def press(row: int) -> None:
        desk.select([row]).wait()
        took.append(timed(desk.hangup)[1])

    threads = [threading.Thread(target=press, args=(r,)) for r in calls[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(took) == 2 and max(took) < AT_ONCE
    assert not stalled.done()


def test_the_agent_timeout_still_refuses_with_its_reason(desk: Desk, agent: FakeAgent,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(desk_module, "AGENT_TIMEOUT", 0.1)
    talking(agent)
    agent.stall_next("hold")
    out = desk.hold()
    assert out.pending
    final = out.wait(5)
    assert (final.ok, final.code) == (False, "agent_timeout")


# --- what can be done now --------------------------------------------------------------------


def _available(desk: Desk) -> dict:
    return desk.snapshot()["available"]


def test_every_action_has_an_availability_and_an_empty_table_says_why_not(desk: Desk) -> None:
    available = _available(desk)
    assert set(available) == set(ACTIONS)
    assert available["dial"] is None and available["pickup"] is None and available["mute"] is None
    for action in ("answer", "hangup", "hold", "connect", "transfer_quick", "transfer_consult", "record_start"):
        assert available[action]["code"] == "no_selection", action
    assert available["transfer_confirm"]["code"] == "no_consultation"


def test_availability_follows_a_ringing_call_and_its_answer(desk: Desk, agent: FakeAgent) -> None:
    got: list[ev.Event] = []
    desk.subscribe(got.append)
    call = agent.ring()
    assert _available(desk)["answer"] is None
    assert _available(desk)["hold"]["code"] == "hold_needs_talk"
    assert any(isinstance(e, ev.AvailabilityChanged) and e.available["answer"] is None for e in got)
    agent.talking(call)
    available = _available(desk)
    assert available["answer"]["code"] == "not_ringing"
    assert available["hold"] is None and available["record_start"] is None and available["transfer_quick"] is None


def test_dial_is_unavailable_on_an_unregistered_line_with_the_registrars_reason(desk: Desk, agent: FakeAgent) -> None:
    agent.register("op1", registered=False, code=403, reason="Forbidden")
    desk.set("route", "city").wait()
    why = _available(desk)["dial"]
    assert why["code"] == "line_not_registered" and why["params"] == {"line": "op1", "reason": "Forbidden"}


def test_an_unavailable_action_is_refused_with_the_same_code(desk: Desk, agent: FakeAgent) -> None:
    call = agent.ring()
    why = _available(desk)["hold"]
    out = desk.hold().wait()
    assert (out.code, out.params, out.row) == (why["code"], why["params"], call)


# --- the toggles the keys need ----------------------------------------------------------------


def test_transfer_next_consults_from_a_call_outside_the_open_consultation(desk: Desk, agent: FakeAgent) -> None:
    """The GPIO bug: consultation 1->2 open, row 3 selected: a short Transfer press consults from 3."""
    b = talking(agent)
    c = desk.transfer("consult", "2003").wait().data["row"]
    agent.talking(c)
    d = talking(agent, "sip:2004@pbx.test")
    desk.select([d]).wait()
    desk.set("number", "2005").wait()

    assert _available(desk)["transfer_next"] is None
    out = desk.transfer("next").wait()

    assert out.ok, out.reason
    assert desk.consults[out.data["row"]] == d
    assert desk.consults[c] == b  # the first consultation is untouched


def test_transfer_next_confirms_the_consultation_the_selected_call_is_in(desk: Desk, agent: FakeAgent) -> None:
    b = talking(agent)
    c = desk.transfer("consult", "2003").wait().data["row"]
    agent.talking(c)

    out = desk.transfer("next").wait()

    assert out.ok and out.action == "transfer_confirm"
    assert agent.requests("transfer_replaces") == [(b, c)]


def test_record_toggle_starts_then_stops(desk: Desk, agent: FakeAgent) -> None:
    call = talking(agent)
    first = desk.record("toggle").wait()
    assert first.ok and first.action == "record_start" and desk.rows[call].recording
    second = desk.record("toggle").wait()
    assert second.ok and second.action == "record_stop" and not desk.rows[call].recording


def test_keypad_and_toggle_selection_are_desk_commands(desk: Desk, agent: FakeAgent) -> None:
    for key in "20x01":
        desk.key(key)
    assert desk.number == "2001"
    desk.key("delete")
    assert desk.number == "200"
    desk.key("clear")
    assert desk.number == ""
    a, b = agent.ring(), agent.ring()
    desk.select([], toggle=a)
    desk.select([], toggle=b)
    assert desk.selection == [a, b]
    desk.select([], toggle=a)
    assert desk.selection == [b]


def test_a_listener_cannot_command_the_desk_from_its_own_thread(desk: Desk, agent: FakeAgent) -> None:
    errors: list[BaseException] = []

    def listener(event: ev.Event) -> None:
        if isinstance(event, ev.RowChanged):
            try:
                desk.hangup()
            except RuntimeError as exc:
                errors.append(exc)

    desk.subscribe(listener)
    agent.ring()
    assert errors and "listener" in str(errors[0])


def test_a_transfer_that_fails_at_the_far_end_is_tied_to_its_command(desk: Desk, agent: FakeAgent) -> None:
    call = talking(agent)
    got: list[ev.Event] = []
    desk.subscribe(got.append)
    out = desk.transfer("quick", "2009").wait()
    assert out.ok
    agent.transfer_status(call, 486, "Busy Here")
    failed = [e for e in got if isinstance(e, ev.ActionFailed)]
    assert [(e.action, e.code, e.command) for e in failed] == [("transfer_quick", "transfer_failed", out.command)]
