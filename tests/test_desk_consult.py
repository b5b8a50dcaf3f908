"""Consult, confirm and pickup rules of the desk against the fake agent, failure paths first.

What the far ends do (answer, a NOTIFY with the transfer's outcome, a BYE) is
played by the test through FakeAgent; the lab tests (test_unit_consult.py,
test_unit_pickup.py) show the same paths against real SIP.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Callable

import pytest

import kiosk.desk as desk_module
from kiosk import events as ev
from kiosk.desk import Desk
from kiosk.profile import MAX_CALLS

from .fakes import FakeAgent


def failures(seen: list[ev.Event]) -> list[str]:
    return [e.reason for e in seen if isinstance(e, ev.ActionFailed)]


def caller(desk: Desk, agent: FakeAgent, remote: str = "sip:2001@pbx.test") -> int:
    """B: an incoming call, answered; its row id."""
    call = agent.ring(remote)
    agent.talking(call)
    return call


def consulting(desk: Desk, agent: FakeAgent, answer: bool = True) -> tuple[int, int]:
    """B held and C dialled (and answered): (B, C)."""
    b = caller(desk, agent)
    out = desk.transfer("consult", "2003").wait()
    assert out.ok, out.reason
    c = out.data["row"]
    if answer:
        agent.talking(c)
    return b, c


# --- consult ---------------------------------------------------------------------------


def test_consult_shows_the_caller_on_hold_and_the_consultation_as_consulting(desk: Desk, agent: FakeAgent) -> None:
    b, c = consulting(desk, agent)

    assert (desk.rows[b].state, desk.rows[b].note) == ("on hold", f"held for consultation with call {c}")
    assert desk.rows[c].state == "consulting"
    assert agent.requests("hold") == [(b,)]
    assert agent.requests("dial") == [(c, "op1", "sip:2003@pbx.test", None)]


def test_consult_without_a_number_asks_for_it_and_leaves_the_caller_alone(
    desk: Desk, agent: FakeAgent, seen: list
) -> None:
    caller(desk, agent)

    out = desk.transfer("consult").wait()

    assert out.reason == "number required for consult transfer"
    assert ev.NumberRequired("transfer_consult") in seen
    assert agent.requests("hold") == [] and agent.requests("dial") == []


def test_consult_of_a_call_not_yet_answered_is_refused(desk: Desk, agent: FakeAgent) -> None:
    call = agent.ring()
    out = desk.transfer("consult", "2003").wait()
    assert out.reason == f"call {call} is ringing: consult needs an answered call"
    assert agent.requests("hold") == []


def test_consult_that_cannot_dial_does_not_hold_the_caller_first(desk: Desk, agent: FakeAgent) -> None:
    for _ in range(MAX_CALLS - 1):
        caller(desk, agent)
    b = caller(desk, agent)
    desk.select([b]).wait()

    out = desk.transfer("consult", "2003").wait()

    assert out.reason == f"this unit handles at most {MAX_CALLS} calls"
    assert agent.requests("hold") == [] and not desk.rows[b].local_hold


def test_consult_on_an_unregistered_line_does_not_hold_the_caller(desk: Desk, agent: FakeAgent) -> None:
    b = caller(desk, agent)
    agent.register("op1", registered=False, code=503, reason="Service Unavailable")

    out = desk.transfer("consult", "2003").wait()

    assert out.reason == "line op1 is not registered (Service Unavailable)"
    assert agent.requests("hold") == [] and desk.rows[b].state == "talking"


def test_consult_whose_dial_fails_keeps_the_caller_held_and_says_how_to_get_back(
    desk: Desk, agent: FakeAgent
) -> None:
    b = caller(desk, agent)
    agent.fail_next("dial", "cannot call sip:2003@pbx.test: Invalid URI")

    out = desk.transfer("consult", "2003").wait()

    assert out.reason == "cannot call sip:2003@pbx.test: Invalid URI"
    assert list(desk.rows) == [b] and desk.rows[b].state == "on hold"
    assert desk.rows[b].note == f"consultation failed ({out.reason}): connect to take the call back"
    assert desk.connect().wait().ok and desk.rows[b].state == "talking"


def test_consulted_party_hanging_up_tells_the_operator_and_confirm_is_then_refused(
    desk: Desk, agent: FakeAgent
) -> None:
    b, c = consulting(desk, agent)

    agent.ended(c, 200, "Normal call clearing")

    assert desk.rows[b].note == "consultation ended (200 Normal call clearing)"
    assert desk.transfer("confirm").wait().reason == "no consultation to confirm: use transfer consult first"
    assert desk.rows[b].state == "on hold"  # still the operator's to take back


def test_held_caller_hanging_up_makes_the_consultation_an_ordinary_call(desk: Desk, agent: FakeAgent) -> None:
    b, c = consulting(desk, agent)

    agent.ended(b, 200, "Normal call clearing")

    assert (desk.rows[c].state, desk.rows[c].note) == ("talking", "the held caller hung up (200 Normal call clearing)")
    assert desk.transfer("confirm").wait().reason == "no consultation to confirm: use transfer consult first"


# --- confirm ---------------------------------------------------------------------------


def test_confirm_without_a_consultation_is_refused(desk: Desk, agent: FakeAgent) -> None:
    caller(desk, agent)
    assert desk.transfer("confirm").wait().reason == "no consultation to confirm: use transfer consult first"
    assert agent.requests("transfer_replaces") == []


def test_confirm_before_the_consulted_party_answers_is_refused_and_changes_nothing(
    desk: Desk, agent: FakeAgent, seen: list
) -> None:
    b, c = consulting(desk, agent, answer=False)
    agent.ringing(c)

    out = desk.transfer("confirm").wait()

    assert out.reason == f"call {c} has not answered yet (ringing): wait for the answer, or use a quick transfer"
    assert failures(seen)[-1] == out.reason
    assert agent.requests("transfer_replaces") == []
    assert desk.rows[b].state == "on hold" and desk.rows[c].state == "ringing"
    agent.talking(c)  # once C answers, the same press goes through
    assert desk.transfer("confirm").wait().ok
    assert agent.requests("transfer_replaces") == [(b, c)]


def test_confirm_done_leaves_both_calls(desk: Desk, agent: FakeAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(desk_module, "CONSULT_RELEASE", 0.05)
    b, c = consulting(desk, agent)

    out = desk.transfer("confirm").wait()

    assert out.data == {"row": b, "to": c}
    assert desk.rows[b].note == "transferring to sip:2003@pbx.test"
    agent.emit(ev.TransferProgress(b, 100, "Trying", final=False))
    assert desk.rows[b].note == "transfer: 100 Trying" and agent.requests("hangup") == []
    agent.emit(ev.TransferProgress(b, 200, "OK", final=True))
    assert agent.requests("hangup") == [(b,)]
    agent.ended(b)
    assert desk.rows[c].note == f"transferred to call {b}: leaving"  # not "the held caller hung up"
    agent.ended(c)  # C's phone replaced our leg and hung it up
    time.sleep(0.2)
    assert desk.rows == {} and agent.requests("hangup") == [(b,)]


def test_confirm_done_but_consulted_leg_never_released_is_hung_up_by_the_unit(
    desk: Desk, agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    # baresip 1.0 as B calls C afresh instead of replacing: C keeps our leg.
    monkeypatch.setattr(desk_module, "CONSULT_RELEASE", 0.05)
    b, c = consulting(desk, agent)
    desk.transfer("confirm").wait()

    agent.emit(ev.TransferProgress(b, 200, "OK", final=True))
    agent.ended(b)

    assert _eventually(lambda: (c,) in agent.requests("hangup"))


def test_confirm_refused_by_the_far_end_keeps_both_calls_and_says_what_can_be_done(
    desk: Desk, agent: FakeAgent, seen: list
) -> None:
    b, c = consulting(desk, agent)
    desk.transfer("confirm").wait()

    agent.emit(ev.TransferProgress(b, 420, "Bad Extension", final=True))

    assert failures(seen)[-1] == (
        f"transfer of call {b} to call {c} failed: 420 Bad Extension; both calls stay with you: "
        f"confirm again, connect call {b} to go back to the caller, or hang up call {c}")
    assert [e.action for e in seen if isinstance(e, ev.ActionFailed)][-1] == "transfer_confirm"
    assert agent.requests("hangup") == []
    assert (desk.rows[b].state, desk.rows[b].note) == ("on hold", "transfer: 420 Bad Extension")
    assert desk.rows[c].state == "consulting"
    assert desk.transfers == {}


def test_after_a_refused_confirm_the_operator_can_retry(desk: Desk, agent: FakeAgent) -> None:
    b, c = consulting(desk, agent)
    desk.transfer("confirm").wait()
    agent.emit(ev.TransferProgress(b, 486, "Busy Here", final=True))

    assert desk.transfer("confirm").wait().ok

    assert agent.requests("transfer_replaces") == [(b, c), (b, c)]


def test_after_a_refused_confirm_the_operator_can_go_back_to_the_caller(desk: Desk, agent: FakeAgent) -> None:
    b, c = consulting(desk, agent)
    desk.transfer("confirm").wait()
    agent.emit(ev.TransferProgress(b, 420, "Bad Extension", final=True))
    desk.select([b]).wait()

    assert desk.connect().wait().ok

    assert agent.requests("hold")[-1] == (c,), "C would hear the caller"
    assert agent.requests("unhold") == [(b,)]
    assert desk.rows[b].state == "talking" and desk.rows[c].state == "on hold"


def test_after_a_refused_confirm_the_operator_can_end_the_consultation(desk: Desk, agent: FakeAgent) -> None:
    b, c = consulting(desk, agent)
    desk.transfer("confirm").wait()
    agent.emit(ev.TransferProgress(b, 420, "Bad Extension", final=True))

    assert desk.hangup().wait().ok  # the consultation is the selected row
    assert agent.requests("hangup") == [(c,)]
    agent.ended(c)
    assert desk.connect().wait().ok  # the caller is now the only call
    assert agent.requests("unhold") == [(b,)]


def test_confirm_that_gets_no_final_notify_times_out_and_keeps_both_calls(
    desk: Desk, agent: FakeAgent, seen: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(desk_module, "TRANSFER_TIMEOUT", 0.05)
    b, c = consulting(desk, agent)
    desk.transfer("confirm").wait()
    agent.emit(ev.TransferProgress(b, 100, "Trying", final=False))

    assert _eventually(lambda: bool(failures(seen)))

    assert failures(seen) == [f"transfer of call {b} got no answer in 0 s: the call stays with you"]
    assert desk.rows[b].note == "transfer timed out" and c in desk.rows
    assert desk.transfers == {}
    assert desk.transfer("confirm").wait().ok  # the operator may try again


def test_a_final_ok_after_the_timeout_still_lets_the_operator_leave(
    desk: Desk, agent: FakeAgent, seen: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(desk_module, "TRANSFER_TIMEOUT", 0.05)
    b, c = consulting(desk, agent)
    desk.transfer("confirm").wait()
    assert _eventually(lambda: bool(failures(seen)))

    agent.emit(ev.TransferProgress(b, 200, "OK", final=True))  # B is with C now, however late

    assert (b,) in agent.requests("hangup")


def test_provisional_notifies_keep_a_ringing_transfer_from_timing_out(
    desk: Desk, agent: FakeAgent, seen: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(desk_module, "TRANSFER_TIMEOUT", 0.3)
    b, c = consulting(desk, agent)
    desk.transfer("confirm").wait()
    for _ in range(4):  # 0.6 s of ringing, a NOTIFY every 0.15 s
        time.sleep(0.15)
        agent.emit(ev.TransferProgress(b, 180, "Ringing", final=False))

    assert failures(seen) == []
    assert b in desk.transfers


def test_a_second_confirm_while_the_first_is_under_way_is_refused(desk: Desk, agent: FakeAgent) -> None:
    b, c = consulting(desk, agent)
    assert desk.transfer("confirm").wait().ok

    assert desk.transfer("confirm").wait().reason == f"the transfer of call {b} is already under way"
    assert agent.requests("transfer_replaces") == [(b, c)]


def test_confirm_the_agent_cannot_send_keeps_both_calls(desk: Desk, agent: FakeAgent) -> None:
    b, c = consulting(desk, agent)
    agent.fail_next("transfer_replaces", "Invalid operation (pjsua2 status 70013)")

    out = desk.transfer("confirm").wait()

    assert out.reason == "Invalid operation (pjsua2 status 70013)"
    assert desk.transfers == {} and set(desk.rows) == {b, c}
    assert desk.transfer("confirm").wait().ok  # nothing left behind that blocks a retry


def test_confirm_with_the_held_caller_selected_finds_its_consultation(desk: Desk, agent: FakeAgent) -> None:
    b, c = consulting(desk, agent)
    other = caller(desk, agent, "sip:2002@pbx.test")
    desk.select([b]).wait()

    assert desk.transfer("confirm").wait().ok

    assert agent.requests("transfer_replaces") == [(b, c)]
    assert other in desk.rows


# --- pickup ----------------------------------------------------------------------------


def _dial_then(agent: FakeAgent, monkeypatch: pytest.MonkeyPatch, then: Callable[[int], None]) -> None:
    """Make the fake agent's dial be followed (on another thread, as SIP would) by `then(call)`."""

    def dial(call: int, line: str, uri: str, route: str | None) -> Future[None]:
        fut = FakeAgent.dial(agent, call, line, uri, route)
        threading.Timer(0.02, then, (call,)).start()
        return fut

    monkeypatch.setattr(agent, "dial", dial)


def test_pickup_shows_the_caller_the_server_names(
    desk: Desk, agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    _dial_then(agent, monkeypatch, lambda call: agent.progress(call, "talking", 200, "OK", "sip:2001@pbx.test"))

    out = desk.pickup("1005").wait()

    assert out.ok, out.reason
    row = desk.rows[out.data["row"]]
    assert out.data["remote"] == "sip:2001@pbx.test"
    assert (row.state, row.remote, row.note) == ("talking", "sip:2001@pbx.test", "pickup of 1005")


def test_pickup_with_nothing_ringing_gives_the_servers_reason(
    desk: Desk, agent: FakeAgent, seen: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    _dial_then(agent, monkeypatch, lambda call: agent.ended(call, 404, "Nothing ringing"))

    out = desk.pickup("1005").wait()

    assert out.reason == "cannot pick up the call ringing on 1005: 404 Nothing ringing"
    assert failures(seen) == [out.reason] and desk.rows == {}
    assert agent.requests("hangup") == []


def test_pickup_without_a_number_asks_for_it(desk: Desk, agent: FakeAgent, seen: list) -> None:
    out = desk.pickup().wait()
    assert out.reason == "number required for pickup"
    assert ev.NumberRequired("pickup") in seen and agent.received == []


def test_pickup_uses_the_number_field_and_the_profiles_prefix(
    desk: Desk, agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    _dial_then(agent, monkeypatch, agent.talking)
    desk.set("number", "1007").wait()

    assert desk.pickup().wait().ok

    assert [r[2] for r in agent.requests("dial")] == ["sip:*81007@pbx.test"]


def _eventually(pred: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return bool(pred())


def test_confirm_with_an_unrelated_call_selected_is_refused(desk: Desk, agent: FakeAgent) -> None:
    b, c = consulting(desk, agent)
    e = agent.ring("sip:2009@pbx.test")
    agent.talking(e)
    desk.select([e]).wait()

    out = desk.transfer("confirm").wait()

    assert not out.ok and f"call {e} is not in a consultation" in out.reason
    assert agent.requests("transfer_replaces") == []


def test_a_consultation_refused_at_once_leaves_no_bookkeeping(desk: Desk, agent: FakeAgent) -> None:
    b = caller(desk, agent)
    original_dial = agent.dial

    def dial_then_busy(call, line, uri, route):
        fut = original_dial(call, line, uri, route)
        agent.ended(call, 486, "Busy Here")  # the 486 beats the desk thread back
        return fut

    agent.dial = dial_then_busy  # type: ignore[method-assign]
    out = desk.transfer("consult", "2003").wait()

    assert not out.ok and "486 Busy Here" in out.reason
    assert desk.consults == {}
    assert desk.selection == [b]
