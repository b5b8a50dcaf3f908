"""Transfer with consultation and its confirm, end to end: the unit against pjsua2 and baresip far ends.

B calls the operator; `transfer consult` holds B and calls C; `transfer
confirm` sends B a REFER whose Refer-To carries Replaces for the unit's dialog
with C, B calls C with that Replaces, and the unit drops out of both calls.
Every party plays its own tone and records what it hears, so privacy and the
final connection are proven by FFT, and the REFER by what B received.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from kiosk.lab.pjpeer import PjPeer
from kiosk.lab.unit import Unit

from .conftest import needs_lab
from .pjpeers import tone_dbfs

pytestmark = [needs_lab, pytest.mark.lab]

B_HZ, C_HZ = 600, 1400
AUDIO_S = 2.5
#: A tone a party hears is far above this (a pjsua2 ToneGenerator arrives near -8 dBFS);
HEARD_DBFS = -40.0
#: a tone it does not hear is far below this (a silent G.722 call decodes to about -100 dBFS).
ABSENT_DBFS = -70.0


def row(calls: list[dict[str, Any]], row_id: int) -> dict[str, Any] | None:
    return next((c for c in calls if c["id"] == row_id), None)


def caller_talking_to_unit(unit: Unit, b: PjPeer) -> int:
    """B calls the unit's line 1001 and the operator answers; the row id."""
    b.dial("sip:1001@127.0.0.1")
    calls = unit.wait_for(lambda calls: len(calls) == 1 and calls[0]["state"] == "ringing")
    answered = unit.ctl("answer")
    assert answered.rc == 0, answered.err
    unit.wait_for(lambda calls: calls and calls[0]["state"] == "talking")
    b.wait_event("state", state="CONFIRMED")
    return int(calls[0]["id"])


def consult(unit: Unit, number: str) -> tuple[int, int]:
    """`transfer consult NUMBER`: (held row, consult row)."""
    out = unit.ctl("transfer", "consult", number)
    assert out.rc == 0, out.err
    return int(out.out["held"]), int(out.out["row"])


def closed_with_unit(baresip_events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The baresip's CALL_CLOSED events of calls with the unit (line 1001)."""
    return [e for e in baresip_events if e.get("type") == "CALL_CLOSED" and "sip:1001@" in e.get("peeruri", "")]


def levels(path: Path | None) -> dict[int, float]:
    """dBFS of B's and C's tones in a recording."""
    assert path is not None and path.exists(), path
    return tone_dbfs(path, [B_HZ, C_HZ])


def test_consult_is_private_and_confirm_joins_caller_and_consulted_party(unit_factory, pjpeer, tmp_path) -> None:
    b = pjpeer("2001", B_HZ)
    c = pjpeer("2003", C_HZ)
    unit = unit_factory()
    held = caller_talking_to_unit(unit, b)

    held_row, consult_row = consult(unit, "2003")
    assert held_row == held
    calls = unit.wait_for(lambda calls: (row(calls, consult_row) or {}).get("state") == "consulting")
    assert row(calls, held)["state"] == "on hold"
    b.wait_event("media", status="remote hold")
    c.wait_event("state", state="CONFIRMED")

    # The consultation: B's and C's recordings of this window, and the unit's own.
    b.record(tmp_path / "b-during.wav")
    c.record(tmp_path / "c-during.wav")
    assert unit.ctl("record", "start").rc == 0  # the selected row: the consultation
    time.sleep(AUDIO_S)
    unit_rec = unit.ctl("record", "stop")
    assert unit_rec.rc == 0, unit_rec.err
    b_during = b.record(tmp_path / "b-after.wav")
    c_during = c.record(tmp_path / "c-after.wav")

    at_unit = levels(Path(unit_rec.out["file"]))
    assert at_unit[C_HZ] > HEARD_DBFS > ABSENT_DBFS > at_unit[B_HZ], at_unit  # C was there to be overheard...
    assert levels(b_during)[C_HZ] < ABSENT_DBFS, levels(b_during)  # ...and the held caller heard none of it
    assert levels(c_during)[B_HZ] < ABSENT_DBFS, levels(c_during)  # nor did C hear the held caller

    mark_b, mark_c = b.event_count(), c.event_count()
    confirmed = unit.ctl("transfer", "confirm")
    assert confirmed.rc == 0, confirmed.err
    assert confirmed.out == {"row": held, "to": consult_row}

    # B got a REFER whose Refer-To replaces the unit's dialog with C.
    refer = b.wait_event("transfer_request", since=mark_b)
    c_call_id = c.find_events("incoming")[0]["call_id"]
    refer_to = urllib.parse.unquote(refer["refer_to"])
    assert re.match(r"<?sip:2003@", refer_to), refer_to
    assert f"Replaces={c_call_id};" in refer_to, refer_to
    replace = c.wait_event("replace_request", since=mark_c)
    assert replace["replaces"].startswith(c_call_id), replace
    b.wait_event("state", since=mark_b, state="CONFIRMED", origin="transfer")
    unit.wait_for(lambda calls: not calls, timeout=15)  # the unit left both calls

    time.sleep(AUDIO_S)
    b_after = b.record(None)
    c_after = c.record(None)
    assert levels(b_after)[C_HZ] > HEARD_DBFS, levels(b_after)
    assert levels(c_after)[B_HZ] > HEARD_DBFS, levels(c_after)
    assert [x["call"] for x in b.calls()] == [refer["new_call"]], b.calls()
    assert [x["call"] for x in c.calls()] == [replace["new_call"]], c.calls()


def test_confirm_before_the_consulted_party_answers_is_refused_and_both_calls_stay(unit_factory, pjpeer) -> None:
    b = pjpeer("2001", B_HZ)
    c = pjpeer("2003", C_HZ, answer="ring")
    unit = unit_factory()
    held = caller_talking_to_unit(unit, b)
    _, consult_row = consult(unit, "2003")
    c.wait_event("state", state="EARLY")
    unit.wait_for(lambda calls: (row(calls, consult_row) or {}).get("state") == "ringing")

    confirmed = unit.ctl("transfer", "confirm")

    assert confirmed.rc == 1
    assert confirmed.err == (f"kiosk ctl transfer: call {consult_row} has not answered yet (ringing): "
                             "wait for the answer, or use a quick transfer")
    assert not b.find_events("transfer_request")
    calls = unit.calls()
    assert (row(calls, held)["state"], row(calls, consult_row)["state"]) == ("on hold", "ringing")
    # The operator gives up on C and goes back to B.
    assert unit.ctl("hangup").rc == 0  # the consultation is the selected row
    assert c.wait_event("state", state="DISCONNECTED")["code"] == 487  # CANCEL
    unit.wait_for(lambda calls: [x["id"] for x in calls] == [held])
    mark = b.event_count()
    assert unit.ctl("connect").rc == 0
    b.wait_event("media", since=mark, status="active")


def test_confirm_refused_by_a_baresip_transferee_keeps_both_calls_and_the_operator_goes_back(
    unit_factory, pjpeer, phone, kamailio, unit_events, tmp_path
) -> None:
    # baresip 1.0 as B ignores the Replaces in the Refer-To and calls C afresh;
    # C (call waiting off) answers that 486, so B's NOTIFY reports 486.
    b = phone("2001", tone_hz=B_HZ)
    c = pjpeer("2003", C_HZ, answer="idle")
    unit = unit_factory(domain=kamailio.address)  # Refer-To a baresip can reach without a proxy
    events = unit_events(unit)
    dialled = unit.ctl("dial", "2001")
    assert dialled.rc == 0, dialled.err
    held = dialled.out["row"]
    unit.wait_for(lambda calls: calls and calls[0]["state"] == "talking")
    _, consult_row = consult(unit, "2003")
    unit.wait_for(lambda calls: (row(calls, consult_row) or {}).get("state") == "consulting")

    confirmed = unit.ctl("transfer", "confirm")

    assert confirmed.rc == 0, confirmed.err  # the REFER was sent; its outcome comes as an event
    failed = events.wait("action_failed", lambda e: e["action"] == "transfer_confirm")
    assert failed["row_id"] == held
    assert failed["reason"] == (
        f"transfer of call {held} to call {consult_row} failed: 486 Busy Here; both calls stay with you: "
        f"confirm again, connect call {held} to go back to the caller, or hang up call {consult_row}")
    refer_to = urllib.parse.unquote(b.wait_event("TRANSFER")["param"])
    assert "Replaces=" in refer_to, refer_to  # B was asked for an attended transfer...
    second = c.wait_event("incoming", remote="<sip:2001@127.0.0.1>")
    assert second["busy"]  # ...but called C as a new call, which C turned down
    attempt = b.wait_event("CALL_CLOSED")
    assert (attempt["param"], "sip:2003@" in attempt["peeruri"]) == ("486 Busy Here", True), attempt
    calls = unit.calls()
    assert (row(calls, held)["state"], row(calls, consult_row)["state"]) == ("on hold", "consulting")
    assert [x["state"] for x in c.calls()] == ["CONFIRMED"]

    # Back to B: C is held first, B is retrieved and heard again.
    assert unit.ctl("select", str(held)).rc == 0
    assert unit.ctl("connect").rc == 0
    calls = unit.wait_for(lambda calls: (row(calls, held) or {}).get("state") == "talking")
    assert row(calls, consult_row)["state"] == "on hold"
    assert unit.ctl("record", "start").rc == 0
    time.sleep(1.5)
    rec = unit.ctl("record", "stop")
    assert rec.rc == 0, rec.err
    heard = levels(Path(rec.out["file"]))
    assert heard[B_HZ] > HEARD_DBFS > ABSENT_DBFS > heard[C_HZ], heard
    # And the consultation ends; B stays.
    assert unit.ctl("select", str(consult_row)).rc == 0
    assert unit.ctl("hangup").rc == 0
    c.wait_event("state", state="DISCONNECTED", remote="<sip:1001@127.0.0.1>")
    unit.wait_for(lambda calls: [x["id"] for x in calls] == [held])
    assert not closed_with_unit(b.events), b.events


def test_confirm_refused_by_a_consulted_baresip_keeps_both_calls(unit_factory, pjpeer, phone, unit_events) -> None:
    # The other way round: B (pjsua2) sends C the INVITE with Replaces and
    # baresip 1.0 as C answers 420 Bad Extension.
    b = pjpeer("2001", B_HZ)
    c = phone("2003", tone_hz=C_HZ)
    unit = unit_factory()
    events = unit_events(unit)
    held = caller_talking_to_unit(unit, b)
    _, consult_row = consult(unit, "2003")
    unit.wait_for(lambda calls: (row(calls, consult_row) or {}).get("state") == "consulting")

    assert unit.ctl("transfer", "confirm").rc == 0

    failed = events.wait("action_failed", lambda e: e["action"] == "transfer_confirm")
    assert "failed: 420 Bad Extension; both calls stay with you" in failed["reason"], failed
    refer = b.wait_event("transfer_request")
    assert b.wait_event("state", call=refer["new_call"], state="DISCONNECTED")["code"] == 420
    calls = unit.calls()
    assert (row(calls, held)["state"], row(calls, consult_row)["state"]) == ("on hold", "consulting")
    assert [x["origin"] for x in b.calls()] == ["outgoing"]  # B still has its own call to the unit
    assert not closed_with_unit(c.events), c.events
