"""Quick (blind) transfer on the real unit: the REFER, its NOTIFYs, and who ends up talking to whom.

baresip far ends show the whole hand-over (B receives the REFER, calls the
number itself, and the number hears B's tone); a SIPp UAS behind Kamailio's
trunk prefix 9 shows the exact REFER and answers it with the final NOTIFY a
test chooses, so success (the unit leaves with a BYE) and refusal (the call
stays with the operator, who is told why) are both seen on the wire.
"""

from __future__ import annotations

import time

import pytest

from kiosk.lab.kamailio import Kamailio
from kiosk.lab.sipp import Sipp, uas_scenario
from kiosk.lab.tones import tones_in

from .conftest import needs_lab

pytestmark = [needs_lab, pytest.mark.lab]

B_HZ, T_HZ = 700, 1300


@pytest.fixture
def kamailio(kamailio_trunk: Kamailio) -> Kamailio:
    """Every lab part of this module talks to the Kamailio with the SIPp trunk behind prefix 9."""
    return kamailio_trunk


@pytest.fixture
def unit(unit_factory, kamailio: Kamailio):
    """The unit, with the registrar's address as its domain: a Refer-To for a bare number
    (sip:2002@domain) must be dialable by the far end itself, as a real PBX domain is."""
    return unit_factory(domain=kamailio.address)


def refer_uas(final: str) -> str:
    """SIPp UAS that answers, takes a REFER (202) and reports `final` ("200 OK", "603 Declined") in its NOTIFY."""
    xml = uas_scenario(ring_ms=0, accept_refer=True, bye_timeout_ms=20000)
    # One codec in the answer, or pjsua2 re-INVITEs to "lock" it and the scenario has no step for that.
    xml = xml.replace(" RTP/AVP 0 8 101", " RTP/AVP 0 101").replace("a=rtpmap:8 PCMA/8000\n", "")
    body = "Content-Length: [len]\n\nSIP/2.0 200 OK"
    assert xml.count(body) == 1
    return xml.replace(body, f"Content-Length: [len]\n\nSIP/2.0 {final}")


def _header(message: str, name: str) -> str | None:
    for line in message.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def _talking(unit) -> int:
    calls = unit.wait_for(lambda calls: len(calls) == 1 and calls[0]["state"] == "talking")
    return calls[0]["id"]


def _notes(events, row_id: int) -> list[str]:
    return [e["row"]["note"] for e in events.events("row") if e["row"]["id"] == row_id]


def test_quick_transfer_connects_the_caller_to_the_number_and_the_unit_leaves(
        unit, phone, unit_events, kamailio) -> None:
    b = phone("2001", tone_hz=B_HZ, record=False)
    target = phone("2002", tone_hz=T_HZ, record=True)
    events = unit_events(unit)
    assert unit.ctl("dial", "2001").rc == 0
    row = _talking(unit)

    out = unit.ctl("transfer", "quick", "2002")
    assert out.rc == 0, out.err
    assert out.out == {"row": row, "to": f"sip:2002@{kamailio.address}"}

    # B got the REFER and called 2002 itself; the unit's leg ended.
    call = target.wait_event("CALL_ESTABLISHED", timeout=15)
    assert "2001" in call.get("peeruri", ""), call
    removed = events.wait("row_removed", lambda e: e["row_id"] == row, timeout=15)
    assert unit.calls() == []
    assert "REQ REFER sip:2001" in kamailio.log_text()  # to B's contact, through the proxy
    assert any(n.startswith("transfer: 200") for n in _notes(events, row)), _notes(events, row)
    assert not events.events("action_failed"), events.events("action_failed")
    assert removed["reason"]

    # B and 2002 talk to each other: 2002 hears B's tone.
    time.sleep(2.5)
    target.hangup()
    target.wait_event("CALL_CLOSED")
    b.wait_event("CALL_CLOSED", timeout=10)
    time.sleep(0.5)
    (heard,) = target.recordings()
    levels = tones_in(heard, [B_HZ, T_HZ])
    assert levels[B_HZ] > -6, levels


def test_quick_transfer_to_a_number_that_does_not_exist_keeps_the_call_and_says_why(
        unit, phone, unit_events) -> None:
    b = phone("2001", tone_hz=B_HZ, record=False)
    events = unit_events(unit)
    assert unit.ctl("dial", "2001").rc == 0
    row = _talking(unit)

    out = unit.ctl("transfer", "quick", "2999")  # nobody: Kamailio answers B's INVITE with 404
    assert out.rc == 0, out.err

    failed = events.wait("action_failed", timeout=15)
    assert failed["action"] == "transfer_quick" and failed["row_id"] == row, failed
    assert "404" in failed["reason"] and "stays with you" in failed["reason"], failed
    time.sleep(1.0)  # nothing ends it afterwards either
    (call,) = unit.calls()
    assert call["id"] == row and call["state"] in ("talking", "held by remote"), call
    assert call["note"].startswith("transfer: 404"), call
    assert b.calls().count("ESTABLISHED") == 1, b.calls()

    # The operator still has the caller: the call is theirs to end.
    assert unit.ctl("hangup").rc == 0
    unit.wait_for(lambda calls: not calls)
    b.wait_event("CALL_CLOSED")


def test_quick_transfer_refused_in_the_final_notify_keeps_the_call(
        unit, unit_events, kamailio, trunk_port, tmp_path) -> None:
    far = Sipp(tmp_path / "sipp", refer_uas("603 Declined"), local_port=trunk_port, timeout=40)
    events = unit_events(unit)
    with far.start():
        assert unit.ctl("dial", "9100").rc == 0
        row = _talking(unit)
        out = unit.ctl("transfer", "quick", "2002")
        assert out.rc == 0, out.err

        failed = events.wait("action_failed", timeout=10)
        assert failed["row_id"] == row and "603 Declined" in failed["reason"], failed
        time.sleep(1.0)
        (call,) = unit.calls()
        assert call["id"] == row and call["note"] == "transfer: 603 Declined", call
        assert not far.received_requests("BYE"), "the unit left a call whose transfer failed"

        assert unit.ctl("hangup").rc == 0
        unit.wait_for(lambda calls: not calls)
        assert far.wait(15) == 0, far.errors_text()
    (refer,) = far.received_requests("REFER")
    assert _header(refer, "Refer-To").strip("<>") == f"sip:2002@{kamailio.address}"


def test_quick_transfer_accepted_in_the_final_notify_ends_the_units_leg_with_a_bye(
        unit, unit_events, trunk_port, tmp_path) -> None:
    far = Sipp(tmp_path / "sipp", refer_uas("200 OK"), local_port=trunk_port, timeout=40)
    events = unit_events(unit)
    with far.start():
        assert unit.ctl("dial", "9100").rc == 0
        row = _talking(unit)
        assert unit.ctl("transfer", "quick", "2002").rc == 0
        events.wait("row_removed", lambda e: e["row_id"] == row, timeout=10)
        assert far.wait(15) == 0, far.errors_text()
    methods = [m.split(" ", 1)[0] for m in far.received_requests()]
    assert methods == ["INVITE", "ACK", "REFER", "BYE"], methods
    assert not events.events("action_failed")


def test_quick_transfer_without_a_number_asks_for_it_then_works_with_the_number_field(
        unit, phone, unit_events) -> None:
    phone("2001", tone_hz=B_HZ, record=False)
    target = phone("2002", tone_hz=T_HZ, record=False)
    events = unit_events(unit)
    assert unit.ctl("dial", "2001").rc == 0  # the Number field stays empty
    row = _talking(unit)

    out = unit.ctl("transfer", "quick")
    assert out.rc == 1 and "number required for quick transfer" in out.err, (out.rc, out.err)
    asked = events.wait("number_required")
    assert asked["action"] == "transfer_quick"
    assert [c["id"] for c in unit.calls()] == [row]  # nothing happened to the call

    assert unit.ctl("set", "number", "2002").rc == 0
    out = unit.ctl("transfer", "quick")
    assert out.rc == 0, out.err
    target.wait_event("CALL_ESTABLISHED", timeout=15)
    unit.wait_for(lambda calls: not calls, timeout=15)

