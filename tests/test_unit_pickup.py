"""Pickup end to end: the unit intercepts a call ringing on another extension.

Kamailio (the lab's config) turns an INVITE to `*8<ext>` into an INVITE with
Replaces for the ringing dialog and sends it to the *caller*, here a pjsua2
peer (a baresip 1.0 caller ignores the Replaces and rings a second call: the
last test). The proof: the caller's phone saw the Replaces for its own
ringing call, the ringing extension stopped ringing, the unit's row names the
caller, and what the unit records holds the caller's tone.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kiosk.lab.proc import wait_until

from .conftest import needs_lab
from .pjpeers import tone_dbfs

pytestmark = [needs_lab, pytest.mark.lab]

A_HZ, CALLEE_HZ = 750, 1700


def test_pickup_connects_the_unit_to_the_caller_and_the_extension_stops_ringing(
    unit_factory, pjpeer, phone
) -> None:
    callee = phone("2004", tone_hz=CALLEE_HZ, auto_answer=False)
    caller = pjpeer("2001", A_HZ)
    unit = unit_factory()
    ringing_call = caller.dial("sip:2004@127.0.0.1")
    callee.wait_event("CALL_INCOMING")
    early = caller.wait_event("state", call=ringing_call, state="EARLY")

    picked = unit.ctl("pickup", "2004")

    assert picked.rc == 0, picked.err
    row_id = picked.out["row"]
    assert picked.out["remote"] == "sip:2001@127.0.0.1"  # the caller, as Kamailio asserts it
    (row,) = unit.calls()
    assert (row["id"], row["state"], row["remote"], row["note"]) == (
        row_id, "talking", "sip:2001@127.0.0.1", "pickup of 2004")
    # The caller's phone replaced its own ringing dialog with the unit's call...
    replace = caller.wait_event("replace_request")
    assert replace["call"] == ringing_call
    assert replace["replaces"].startswith(early["call_id"] + ";"), replace
    caller.wait_event("state", call=replace["new_call"], state="CONFIRMED")
    assert caller.wait_event("state", call=ringing_call, state="DISCONNECTED")["code"] == 487
    # ...and the extension stopped ringing.
    callee.wait_event("CALL_CLOSED", timeout=5)

    assert unit.ctl("record", "start").rc == 0
    time.sleep(2.5)
    stopped = unit.ctl("record", "stop")
    assert stopped.rc == 0, stopped.err
    heard = tone_dbfs(Path(stopped.out["file"]), [A_HZ, CALLEE_HZ])
    assert heard[A_HZ] > -30 and heard[CALLEE_HZ] < -70, heard

    assert unit.ctl("hangup").rc == 0
    caller.wait_event("state", call=replace["new_call"], state="DISCONNECTED")
    unit.wait_for(lambda calls: not calls)


def test_pickup_with_nothing_ringing_exits_1_with_the_servers_reason(unit_factory, phone) -> None:
    phone("2004", auto_answer=False)  # registered, idle
    unit = unit_factory()

    picked = unit.ctl("pickup", "2004")

    assert picked.rc == 1
    assert picked.err == "kiosk ctl pickup: cannot pick up the call ringing on 2004: 404 Nothing ringing"
    unit.wait_for(lambda calls: not calls)
    asked = unit.ctl("pickup")
    assert (asked.rc, asked.err) == (1, "kiosk ctl pickup: number required for pickup")


def test_pickup_the_caller_does_not_answer_gives_up_and_leaves_the_call_ringing(
    unit_factory, phone, kamailio
) -> None:
    # baresip 1.0 as the caller ignores the Replaces: the pickup INVITE rings
    # there as a second call (measured: no 420), so the unit waits
    # PICKUP_TIMEOUT, cancels its INVITE and says so; the original call
    # must not suffer from it.
    callee = phone("2004", auto_answer=False)
    caller = phone("2002", auto_answer=False)
    unit = unit_factory()
    caller.dial(f"sip:2004@{kamailio.address}")  # baresip has no outbound proxy
    callee.wait_event("CALL_INCOMING")
    caller.wait_event("CALL_RINGING")

    picked = unit.ctl("pickup", "2004")

    assert picked.rc == 1
    assert picked.err == "kiosk ctl pickup: cannot pick up the call ringing on 2004: no answer in 8 s"
    unit.wait_for(lambda calls: not calls)
    assert not any(e.get("type") == "CALL_CLOSED" for e in callee.events), callee.events
    callee.accept()  # the call still rings at 2004 and can be answered there
    callee.wait_event("CALL_ESTABLISHED")
    assert wait_until(lambda: any(e.get("type") == "CALL_ESTABLISHED" for e in caller.events), 5)
