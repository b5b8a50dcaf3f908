"""Hang up overtakes a pickup that waits for SIP: the real unit, Kamailio and baresip far ends.

A pickup waits up to PICKUP_TIMEOUT (8 s) for its INVITE to be answered. Before
the desk ran on one loop, every front-end's command waited behind it (the
control socket's workers, the GPIO worker), so a Hang up pressed meanwhile was
done seconds later. Now `kiosk ctl --no-wait pickup` returns once the unit took
it, and a `hangup` from another process is answered at once and its CANCEL is
on the wire at once: the proof is the far end's own event, timed by this process
(CLOCK_MONOTONIC is the machine's, so the times compare across processes).

The pickup INVITE rings unanswered as in tests/test_unit_pickup.py: a baresip
1.0 caller ignores the Replaces that Kamailio's pickup adds and rings it as a
second call, which nobody answers.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from kiosk.lab.proc import wait_until

from .conftest import needs_lab

pytestmark = [needs_lab, pytest.mark.lab]

#: The far end must see the CANCEL within this long of the hangup request, and the reply come within
#: REPLY_WITHIN. Both are far above the medians (reply ~1 ms, CANCEL ~2-3 ms: bench/overtake.py
#: measures them) so that a loaded machine cannot fail the test, and far below what a hang-up
#: queued behind the pending action took (the pickup's 8 s).
CANCEL_WITHIN = 0.250
REPLY_WITHIN = 0.250


def with_unit(event: dict[str, Any]) -> bool:
    """A baresip event of a call with the unit (its line 1001), not of the caller's own call."""
    return "sip:1001@" in str(event.get("peeruri", ""))


def ringing_pickup(unit_factory, phone, kamailio, unit_events):  # type: ignore[no-untyped-def]
    """A unit whose pickup of 2004 rings unanswered at the caller 2002; (unit, caller, callee, pickup, events)."""
    callee = phone("2004", auto_answer=False)
    caller = phone("2002", auto_answer=False)
    unit = unit_factory()
    events = unit_events(unit)
    caller.dial(f"sip:2004@{kamailio.address}")  # baresip has no outbound proxy
    callee.wait_event("CALL_INCOMING")
    caller.wait_event("CALL_RINGING")
    mark = caller.event_count()

    started = time.monotonic()
    picked = unit.ctl("--no-wait", "pickup", "2004")

    assert picked.rc == 0, picked.err
    assert picked.out["pending"] is True, picked.out  # accepted; the INVITE is out, nobody answers
    assert time.monotonic() - started < 5  # a process start, not the 8 s PICKUP_TIMEOUT
    incoming = caller.wait_event("CALL_INCOMING", since=mark, timeout=5)
    assert with_unit(incoming), incoming
    (row,) = unit.calls()
    assert row["id"] == picked.out["row"] and row["state"] in ("dialling", "ringing"), row
    return unit, caller, callee, picked.out, events, mark


def cancel_seen(caller, mark: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The caller's CALL_CLOSED of the pickup's call (the CANCEL reached it)."""
    closed = caller.wait_event("CALL_CLOSED", since=mark, timeout=5)
    assert with_unit(closed), closed
    return closed


def test_hangup_from_another_client_overtakes_a_ringing_pickup(unit_factory, phone, kamailio, unit_events) -> None:
    unit, caller, callee, pickup, events, mark = ringing_pickup(unit_factory, phone, kamailio, unit_events)

    sent = time.monotonic()
    reply = unit.request("hangup", wait=False)  # this process is not the one that asked for the pickup
    answered = time.monotonic()

    assert reply["ok"] is True, reply
    assert reply["data"]["row"] == pickup["row"]
    closed = cancel_seen(caller, mark)
    took, cancel = answered - sent, closed["_t"] - sent
    print(f"\nhangup behind a ringing pickup: reply {took * 1000:.1f} ms, "
          f"CANCEL at the far end {cancel * 1000:.1f} ms after the request")
    assert took < REPLY_WITHIN, f"the hangup was answered after {took * 1000:.1f} ms"
    assert cancel < CANCEL_WITHIN, f"the far end saw the CANCEL {cancel * 1000:.1f} ms after the hangup"
    # The pickup ends as a failure of its own command, said as its event; the original call rings on.
    failed = events.wait("action_failed", lambda e: e.get("command") == pickup["command"])
    assert (failed["action"], failed["code"]) == ("pickup", "pickup_failed"), failed
    unit.wait_for(lambda calls: not calls)
    assert not any(e.get("type") == "CALL_CLOSED" for e in callee.events), callee.events
    callee.accept()
    callee.wait_event("CALL_ESTABLISHED")


def test_kiosk_ctl_hangup_as_its_own_process_overtakes_a_ringing_pickup(
    unit_factory, phone, kamailio, unit_events
) -> None:
    unit, caller, _callee, pickup, _events, mark = ringing_pickup(unit_factory, phone, kamailio, unit_events)
    started = time.monotonic()
    assert unit.ctl("calls").rc == 0
    baseline = time.monotonic() - started  # what any `kiosk ctl` costs: starting Python

    started = time.monotonic()
    hung = unit.ctl("hangup")  # waits for its outcome, as `kiosk ctl` does by default
    ended = time.monotonic()

    assert hung.rc == 0, hung.err
    assert hung.out["row"] == pickup["row"]
    closed = cancel_seen(caller, mark)
    print(f"\nkiosk ctl hangup behind a ringing pickup: {(ended - started) * 1000:.0f} ms "
          f"(kiosk ctl calls: {baseline * 1000:.0f} ms); CANCEL at the far end "
          f"{(closed['_t'] - ended) * 1000:+.1f} ms from its exit")
    assert ended - started < baseline + 1.0, "kiosk ctl hangup waited behind the pickup"
    assert started < closed["_t"] < ended + CANCEL_WITHIN
    assert wait_until(lambda: not unit.calls(), 10)


@pytest.mark.parametrize("step", [("transfer", "consult"), ("conference",)], ids=["consult", "conference"])
def test_hangup_cancels_a_ringing_consultation_or_next_party_at_once(
    unit_factory, phone, kamailio, step: tuple[str, ...]
) -> None:
    """B talking; a consultation (or the conference's next party) C rings: Hang up cancels C at once."""
    b = phone("2001")  # answers
    c = phone("2003", auto_answer=False)
    unit = unit_factory()
    assert unit.ctl("dial", "2001").rc == 0
    unit.wait_for(lambda calls: [r["state"] for r in calls] == ["talking"])
    mark = c.event_count()

    placed = unit.ctl("--no-wait", *step, "2003")

    assert placed.rc == 0, placed.err
    c.wait_event("CALL_INCOMING", since=mark, timeout=5)
    rows = unit.wait_for(lambda calls: len(calls) == 2 and calls[1]["state"] in ("dialling", "ringing"))
    ringing = rows[1]["id"]
    assert unit.request("calls")["data"]["selection"] == [ringing]
    started = time.monotonic()
    reply = unit.request("hangup", wait=False)
    answered = time.monotonic()

    assert reply["ok"] is True and reply["data"]["row"] == ringing, reply
    closed = c.wait_event("CALL_CLOSED", since=mark, timeout=5)
    print(f"\nhangup of a ringing {step[-1]}: reply {(answered - started) * 1000:.1f} ms, "
          f"CANCEL at C {(closed['_t'] - started) * 1000:.1f} ms after the request")
    assert answered - started < REPLY_WITHIN
    assert closed["_t"] - started < CANCEL_WITHIN
    # B is still there, held for the step, and nothing else was touched.
    calls = unit.wait_for(lambda calls: [r["id"] for r in calls] == [rows[0]["id"]])
    assert calls[0]["state"] == "on hold", calls
    assert not any(e.get("type") == "CALL_CLOSED" for e in b.events), b.events
