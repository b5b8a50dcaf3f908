"""Dialling out on the real unit: routes, the Number field, and the most calls the unit holds.

Routes are proven by where the INVITE arrives and what it says: a prefix route
goes through Kamailio, whose trunk rule strips the prefix and relays to a SIPp
UAS; a route with its own proxy is an account of the route's line that sends
straight to its trunk (a SIPp UAS that Kamailio never hears of).
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from typing import Any

import pytest

from kiosk.lab.kamailio import Kamailio
from kiosk.lab.ports import free_port
from kiosk.lab.sipp import Sipp, uas_scenario
from kiosk.lab.unit import LabLine, LabRoute

from .conftest import USERS, needs_lab

pytestmark = [needs_lab, pytest.mark.lab]


@pytest.fixture
def kamailio(kamailio_trunk: Kamailio) -> Kamailio:
    """Every lab part of this module talks to the Kamailio with the SIPp trunk behind prefix 9."""
    return kamailio_trunk


def trunk_uas() -> str:
    """SIPp UAS answering with one codec (several would make pjsua2 re-INVITE to lock one)."""
    xml = uas_scenario(ring_ms=100, bye_timeout_ms=20000)
    return xml.replace(" RTP/AVP 0 8 101", " RTP/AVP 0 101").replace("a=rtpmap:8 PCMA/8000\n", "")


def _request_line(message: str) -> str:
    return message.split("\n", 1)[0].strip()


def _headers(message: str, name: str) -> list[str]:
    head = message.split("\n\n", 1)[0]
    out = []
    for line in head.splitlines()[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            out.append(value.strip())
    return out


def _talking(unit, row: int) -> list[dict[str, Any]]:
    return unit.wait_for(lambda calls: any(c["id"] == row and c["state"] == "talking" for c in calls))


def test_prefix_route_reaches_the_trunk_through_the_server_with_the_prefix_stripped(
        unit_factory, trunk_port, kamailio, tmp_path) -> None:
    unit = unit_factory(routes=[LabRoute("city", "main", prefix="9"), LabRoute("local", "main")])
    trunk = Sipp(tmp_path / "trunk", trunk_uas(), local_port=trunk_port, timeout=40)
    with trunk.start():
        assert unit.ctl("set", "route", "city").rc == 0
        out = unit.ctl("dial", "5551234")
        assert out.rc == 0, out.err
        assert out.out["uri"] == "sip:95551234@127.0.0.1"
        (row,) = _talking(unit, out.out["row"])
        assert row["route"] == "city"
        assert unit.ctl("hangup").rc == 0
        unit.wait_for(lambda calls: not calls)
        assert trunk.wait(15) == 0, trunk.errors_text()

    invite = trunk.received_requests("INVITE")[0]
    assert _request_line(invite) == "INVITE sip:5551234@127.0.0.1 SIP/2.0"
    assert len(_headers(invite, "Via")) == 2  # Kamailio's and the unit's
    assert _headers(invite, "Record-Route"), invite
    assert re.search(r"sip:1001@", _headers(invite, "From")[0])
    assert "REQ INVITE sip:95551234@127.0.0.1" in kamailio.log_text()


def test_route_with_its_own_proxy_sends_the_call_straight_to_its_trunk(
        unit_factory, kamailio, tmp_path) -> None:
    port = free_port()
    unit = unit_factory(routes=[LabRoute("city", "main", prefix="9"),
                                LabRoute("sbc", "main", proxy=f"sip:127.0.0.1:{port}")])
    trunk = Sipp(tmp_path / "sbc", trunk_uas(), local_port=port, timeout=40)
    with trunk.start():
        assert unit.ctl("set", "route", "sbc").rc == 0
        out = unit.ctl("dial", "3003")
        assert out.rc == 0, out.err
        (row,) = _talking(unit, out.out["row"])
        assert row["route"] == "sbc"
        assert unit.ctl("hangup").rc == 0
        unit.wait_for(lambda calls: not calls)
        assert trunk.wait(15) == 0, trunk.errors_text()

    invite = trunk.received_requests("INVITE")[0]
    assert _request_line(invite) == "INVITE sip:3003@127.0.0.1 SIP/2.0"
    (via,) = _headers(invite, "Via")  # only the unit's: no server in between
    assert "kiosk-lab-kamailio" not in invite and not _headers(invite, "Record-Route")
    assert _headers(invite, "Route") == [f"<sip:127.0.0.1:{port};lr>"]
    assert re.search(r"sip:1001@", _headers(invite, "From")[0])
    assert not re.search(r"sip:3003@", kamailio.log_text())  # the call never went through the registrar
    assert [_request_line(m).split()[0] for m in trunk.received_requests()] == ["INVITE", "ACK", "BYE"]


def test_a_route_goes_out_on_its_own_line(unit_factory, trunk_port, tmp_path) -> None:
    unit = unit_factory(lines=[LabLine("main", "1001", USERS["1001"]), LabLine("second", "1002", USERS["1002"])],
                        routes=[LabRoute("city", "main", prefix="9"), LabRoute("city2", "second", prefix="9")])
    trunk = Sipp(tmp_path / "trunk", trunk_uas(), local_port=trunk_port, timeout=40)
    with trunk.start():
        assert unit.ctl("set", "line", "main").rc == 0
        assert unit.ctl("set", "route", "city2").rc == 0
        out = unit.ctl("dial", "5550000")
        assert out.rc == 0, out.err
        (row,) = _talking(unit, out.out["row"])
        assert row["route"] == "city2" and row["line"] == "second"
        assert unit.ctl("hangup").rc == 0
        assert trunk.wait(15) == 0, trunk.errors_text()
    invite = trunk.received_requests("INVITE")[0]
    assert re.search(r"sip:1002@", _headers(invite, "From")[0]), _headers(invite, "From")


def test_unknown_route_is_refused_with_the_list_of_valid_ones(unit_factory, unit_events) -> None:
    unit = unit_factory(routes=[LabRoute("city", "main", prefix="9"), LabRoute("local", "main")])
    events = unit_events(unit)
    out = unit.ctl("set", "route", "nope")
    assert out.rc == 1
    assert "unknown route 'nope'" in out.err and "routes: city, local" in out.err, out.err
    failed = events.wait("action_failed")
    assert failed["action"] == "set" and "city, local" in failed["reason"]
    assert unit.request("calls")["data"]["route"] == "city"  # unchanged


def test_dial_with_an_empty_number_asks_for_it_and_the_number_field_completes_it(
        unit_factory, phone, unit_events) -> None:
    phone("2001")
    unit = unit_factory()
    events = unit_events(unit)

    out = unit.ctl("dial")
    assert out.rc == 1 and out.err == "kiosk ctl dial: number required for dial", out.err
    assert events.wait("number_required")["action"] == "dial"
    assert unit.calls() == []

    assert unit.ctl("set", "number", "2001").rc == 0
    out = unit.ctl("dial")
    assert out.rc == 0, out.err
    _talking(unit, out.out["row"])
    assert unit.ctl("hangup").rc == 0


def _invite(port: int, src: int, call_id: str) -> bytes:
    sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=audio 40990 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    return (
        f"INVITE sip:1001@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{src};branch=z9hG4bK-{call_id}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:fifth@127.0.0.1>;tag=t-{call_id}\r\n"
        f"To: <sip:1001@127.0.0.1:{port}>\r\nCall-ID: {call_id}@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:fifth@127.0.0.1:{src}>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def test_a_fifth_call_is_refused_and_no_call_is_dropped(unit_factory, phone, unit_events) -> None:
    far = [phone(user, tone_hz=400 + 100 * i, record=False)
           for i, user in enumerate(("2001", "2002", "2003", "2004"))]
    unit = unit_factory()
    events = unit_events(unit)
    rows = []
    for user in ("2001", "2002", "2003", "2004"):  # the panel's way: hold one, call the next
        if rows:
            assert unit.ctl("hold").rc == 0
        out = unit.ctl("dial", user)
        assert out.rc == 0, out.err
        rows.append(out.out["row"])
        _talking(unit, rows[-1])
    before = {c["id"]: c["state"] for c in unit.calls()}
    assert before == {rows[0]: "on hold", rows[1]: "on hold", rows[2]: "on hold", rows[3]: "talking"}

    out = unit.ctl("dial", "2001")
    assert out.rc == 1 and "this unit handles at most 4 calls" in out.err, out.err
    assert events.wait("action_failed")["reason"] == "this unit handles at most 4 calls"

    # A fifth call from outside is turned away by the SIP stack (486), unseen by the desk.
    port = int(unit.profile_text.split('listen = "127.0.0.1:')[1].split('"')[0])
    replies = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.5)
        s.sendto(_invite(port, s.getsockname()[1], uuid.uuid4().hex[:12]), ("127.0.0.1", port))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(r.startswith("SIP/2.0 4") for r in replies):
            try:
                replies.append(s.recv(65535).decode(errors="replace").split("\r\n", 1)[0])
            except socket.timeout:
                pass
    assert any(r.startswith("SIP/2.0 486") for r in replies), replies

    time.sleep(1.0)
    assert {c["id"]: c["state"] for c in unit.calls()} == before
    for phone_ in far:
        assert "ESTABLISHED" in phone_.calls(), phone_.calls()
    assert not events.events("row_removed")
