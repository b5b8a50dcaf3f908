"""The unit as a real process against real SIP: Kamailio registrar, baresip and SIPp far ends.

Foundation behaviour: lines register, calls go out and come in, what the far
end sends is really heard, untrusted hosts never ring, a broken INVITE does
not take the unit down, SIGTERM ends cleanly.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from kiosk.lab.ports import free_port
from kiosk.lab.proc import wait_until
from kiosk.lab.sipp import Sipp, uac_scenario
from kiosk.lab.tones import tones_in
from kiosk.lab.unit import LabLine

from .conftest import USERS, needs_lab

pytestmark = [needs_lab, pytest.mark.lab]


def test_lines_register_and_show_in_the_panel(unit_factory) -> None:
    unit = unit_factory(lines=[LabLine("a", "1001", USERS["1001"]), LabLine("b", "1002", USERS["1002"])])
    lines = unit.request("calls")["data"]["lines"]
    assert {(l["id"], l["registered"], l["code"]) for l in lines} == {("a", True, 200), ("b", True, 200)}
    # Every line of the unit's output is ours (timestamped, with a logger name): pjlib's own
    # start-up chatter ("pjlib ... for POSIX initialized") is silenced until our writer is in.
    raw = [l for l in unit.log_path.read_text().splitlines() if l.strip() and not l[:4].isdigit()]
    assert not raw, raw[:10]


def test_wrong_password_is_reported_and_not_retried_in_a_storm(unit_factory, kamailio) -> None:
    unit = unit_factory(lines=[LabLine("a", "1001", "not-the-password")], wait_registered=False)
    assert wait_until(lambda: unit.request("calls")["data"]["lines"][0]["code"] in (401, 403), 10)
    line = unit.request("calls")["data"]["lines"][0]
    assert line["registered"] is False
    assert "password" in line["reason"]
    before = kamailio.log_text().count("REGISTER")
    time.sleep(4)
    after = kamailio.log_text().count("REGISTER")
    assert after - before <= 2, f"{after - before} REGISTERs in 4 s: a retry storm"
    dial = unit.ctl("dial", "2001")
    assert dial.rc == 1 and "not registered" in dial.err


def test_outgoing_call_answered_by_baresip_carries_its_tone_to_the_unit(unit_factory, phone) -> None:
    phone("2001", tone_hz=700)
    unit = unit_factory()
    out = unit.ctl("dial", "2001")
    assert out.rc == 0, out.err
    row = out.out["row"]
    unit.wait_for(lambda calls: any(c["id"] == row and c["state"] == "talking" for c in calls))
    rec = unit.ctl("record", "start")
    assert rec.rc == 0, rec.err
    time.sleep(2.5)
    stop = unit.ctl("record", "stop")
    assert stop.rc == 0, stop.err
    levels = tones_in(Path(stop.out["file"]), [700, 440, 1000])
    assert levels[700] > -6, levels  # the far end's tone dominates what the unit heard
    assert levels[440] < -30 and levels[1000] < -30, levels
    assert unit.ctl("hangup").rc == 0
    unit.wait_for(lambda calls: not calls)


def test_incoming_call_from_sipp_rings_is_answered_and_hung_up(unit_factory, kamailio, tmp_path) -> None:
    unit = unit_factory()
    sipp = Sipp(tmp_path / "sipp", uac_scenario(), remote=kamailio.address, service="1001",
                local_ip="127.0.0.1")
    with sipp.start():
        calls = unit.wait_for(lambda calls: len(calls) == 1 and calls[0]["state"] == "ringing")
        assert calls[0]["direction"] == "in"
        assert "sipp" in calls[0]["remote"]
        answer = unit.ctl("answer")
        assert answer.rc == 0, answer.err
        unit.wait_for(lambda calls: calls and calls[0]["state"] == "talking")
        assert unit.ctl("hangup").rc == 0
        unit.wait_for(lambda calls: not calls)
        assert sipp.wait(15) == 0, sipp.log_path.read_text()[-2000:]
    received = [m for _, m in sipp.messages() if m.startswith("BYE ")]
    assert received, "SIPp never received the unit's BYE"
    answers = [m for _, m in sipp.messages() if m.startswith("SIP/2.0 200") and "m=audio" in m]
    assert answers and all("c=IN IP4 127.0.0.1" in m for m in answers), answers  # RTP stays on loopback


def _invite(port: int, src_ip: str, src: int, call_id: str, sdp: str | None) -> bytes:
    body = sdp or ""
    return (
        f"INVITE sip:1001@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {src_ip}:{src};branch=z9hG4bK-{call_id}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:tester@{src_ip}>;tag=t-{call_id}\r\n"
        f"To: <sip:1001@127.0.0.1:{port}>\r\nCall-ID: {call_id}@{src_ip}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:tester@{src_ip}:{src}>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
       "m=audio 40998 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def _unit_port(unit) -> int:
    return int(unit.profile_text.split('listen = "127.0.0.1:')[1].split('"')[0])


def test_call_from_a_host_outside_trusted_never_rings(unit_factory) -> None:
    unit = unit_factory()
    replies = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))
        s.settimeout(0.5)
        s.sendto(_invite(_unit_port(unit), "127.0.0.2", s.getsockname()[1], "untrusted-1", SDP),
                 ("127.0.0.1", _unit_port(unit)))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(r.startswith("SIP/2.0 403") for r in replies):
            try:
                replies.append(s.recv(65535).decode(errors="replace"))
            except socket.timeout:
                assert unit.calls() == [], "an untrusted call reached the call table"
    assert unit.calls() == []
    status_lines = [r.split("\r\n", 1)[0] for r in replies]
    assert any(l.startswith("SIP/2.0 403") for l in status_lines), status_lines
    assert not any(l.startswith("SIP/2.0 180") for l in status_lines), status_lines


def test_invite_without_sdp_leaves_the_unit_alive_and_serving(unit_factory, phone) -> None:
    phone("2001")
    unit = unit_factory()
    port = _unit_port(unit)
    src = free_port()
    invite = _invite(port, "127.0.0.1", src, "nosdp-1", None)
    strange = _invite(port, "127.0.0.1", src, "strange-1", "v=9 garbage\r\nm=zzz")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", src))
        s.settimeout(1)
        s.sendto(invite, ("127.0.0.1", port))
        s.sendto(strange, ("127.0.0.1", port))
        time.sleep(1)
    # it may ring (the INVITE came from a trusted host): answer and hang up must not crash it
    for row in unit.calls():
        unit.request("select", rows=[row["id"]])
        unit.request("answer")
        unit.request("hangup")
    time.sleep(1)
    assert unit.proc.running(), unit.log_tail()
    unit.wait_for(lambda calls: not calls, timeout=40)
    out = unit.ctl("dial", "2001")
    assert out.rc == 0, out.err
    unit.wait_for(lambda calls: calls and calls[0]["state"] == "talking")
    assert unit.ctl("hangup").rc == 0


def test_sigterm_ends_calls_and_exits_zero(unit_factory, phone) -> None:
    far = phone("2001")
    unit = unit_factory()
    assert unit.ctl("dial", "2001").rc == 0
    unit.wait_for(lambda calls: calls and calls[0]["state"] == "talking")
    assert unit.terminate() == 0, unit.log_tail()
    log = unit.log_path.read_text()
    assert "Assertion" not in log and "Traceback" not in log, log[-3000:]
    assert not unit.socket.exists()
    assert wait_until(lambda: "terminated" in far.log_text().lower() or "closed" in far.log_text().lower(), 5), \
        far.log_text()[-2000:]


def test_lines_register_within_seconds_once_the_registrar_comes_up(tmp_path) -> None:
    """The unit starts while its SIP server is down (a restart, an outage): the first retry
    comes within 10 s, so the lines are back without anyone touching the unit."""
    from kiosk.lab.kamailio import Kamailio
    from kiosk.lab.unit import Unit, lab_profile_toml

    port = free_port()  # nobody answers here yet
    sock = tmp_path / "late" / "control.sock"
    unit = Unit(tmp_path / "late", lab_profile_toml(
        listen=f"127.0.0.1:{free_port()}", registrar=f"sip:127.0.0.1:{port}", domain="127.0.0.1",
        proxy=f"sip:127.0.0.1:{port}", lines=[LabLine("main", "1001", USERS["1001"])],
        socket=sock, recordings=tmp_path / "late" / "rec"), sock)
    try:
        unit.start(wait_registered=False)
        assert wait_until(lambda: unit.request("calls")["data"]["lines"][0]["code"] not in (0,), 40, 0.2)
        assert not unit.all_registered()
        started = time.monotonic()
        with Kamailio(tmp_path / "late-kamailio", port, USERS):
            assert wait_until(unit.all_registered, 15, 0.2), unit.request("calls")
            took = time.monotonic() - started
        assert took <= 12, f"registered {took:.1f} s after the server came up"
    finally:
        unit.stop()


def test_after_the_sip_server_restarts_the_unit_is_reachable_again(unit_factory, kamailio, tmp_path) -> None:
    """Kamailio keeps registrations in memory: after its restart the unit must register
    again by itself (within `[sip] register_expires`) and take calls."""
    from kiosk.lab.kamailio import Kamailio

    unit = unit_factory(register_expires=30)
    kamailio.stop()
    with Kamailio(tmp_path / "kamailio-again", kamailio.port, USERS) as again:
        # the refresh comes a few seconds before expiry: at most ~30 s after the restart
        assert wait_until(lambda: "REGISTER" in again.log_text() and "1001" in again.log_text(), 40, 0.5), \
            again.log_text()[-2000:]
        sipp = Sipp(tmp_path / "sipp-again", uac_scenario(), remote=again.address, service="1001")
        with sipp.start():
            unit.wait_for(lambda calls: any(c["state"] == "ringing" for c in calls), timeout=10)
            assert unit.ctl("answer").rc == 0
            assert unit.ctl("hangup").rc == 0
            assert sipp.wait(15) == 0


def test_sighup_reloads_the_profile_and_the_call_goes_on(unit_factory, phone) -> None:
    import os
    import signal

    far = phone("2001")
    unit = unit_factory()
    assert unit.ctl("dial", "2001").rc == 0
    far.wait_event("CALL_ESTABLISHED")
    since = far.event_count()
    os.kill(unit.proc.pid, signal.SIGHUP)
    time.sleep(1.0)
    assert unit.proc.running()
    assert [c["state"] for c in unit.calls()] == ["talking"]
    assert "CALL_CLOSED" not in [e.get("type") for e in far.events[since:]]
    assert "(SIGHUP) read again: nothing changed" in unit.log_path.read_text()  # kiosk.reload


def test_number_is_consumed_by_call_so_conference_asks_for_the_next_party(unit_factory, phone) -> None:
    far = phone("2002")
    unit = unit_factory()
    assert unit.ctl("set", "number", "2002").rc == 0
    assert unit.ctl("dial").rc == 0
    far.wait_event("CALL_ESTABLISHED")
    assert unit.request("calls")["data"]["number"] == ""
    conf = unit.ctl("conference")
    assert conf.rc == 1 and conf.err == "kiosk ctl conference: number required for conference"
    calls = unit.calls()
    assert len(calls) == 1 and calls[0]["state"] == "talking"  # nobody held, nobody dialled
    quick = unit.ctl("transfer", "quick")
    assert quick.rc == 1 and "number required for quick transfer" in quick.err
