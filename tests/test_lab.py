"""The lab's real SIP parts work: Kamailio, baresip far ends, SIPp, tone analysis.

These run real processes on 127.0.0.1 only (Kamailio 5.6, baresip 1.0, SIPp
3.6 from Debian). Each test starts its own processes in its tmp_path and the
context managers stop them, even when an assertion fails.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import time
from pathlib import Path

import pytest

from kiosk.lab.baresip import Baresip, BaresipError
from kiosk.lab.kamailio import Kamailio, render_config, sip_options_ping
from kiosk.lab.ports import free_port, port_is_free
from kiosk.lab.sipp import Sipp, parse_trace, uac_scenario, uas_scenario
from kiosk.lab.tones import FLOOR_DB, has_tone, read_wav, tones_in, write_tone_wav

HAVE_KAMAILIO = shutil.which("kamailio") is not None
HAVE_BARESIP = shutil.which("baresip") is not None
HAVE_SIPP = shutil.which("sipp") is not None

needs_kamailio = pytest.mark.skipif(not HAVE_KAMAILIO, reason="kamailio not installed (apt-get install kamailio)")
needs_baresip = pytest.mark.skipif(not HAVE_BARESIP, reason="baresip not installed (apt-get install baresip)")
needs_sipp = pytest.mark.skipif(not HAVE_SIPP, reason="sipp not installed (apt-get install sip-tester)")

USERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}


def request_line(msg: str) -> str:
    """First line of a SIP message."""
    return msg.split("\n", 1)[0].strip()


def header(msg: str, name: str) -> str | None:
    """Value of the first header `name` in a SIP message (case-insensitive)."""
    m = re.search(rf"^{re.escape(name)}\s*:\s*(.*?)\s*$", msg, re.M | re.I)
    return m.group(1) if m else None


# -- ports --------------------------------------------------------------------


def test_free_port_is_free_for_udp_and_tcp() -> None:
    port = free_port()
    for stype in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, stype) as s:
            s.bind(("127.0.0.1", port))
    assert free_port() != port  # never handed out twice in one process


def test_free_port_span_and_busy_port() -> None:
    base = free_port(span=2)
    assert port_is_free(base + 1, kind="tcp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", base))
        assert not port_is_free(base)
        assert port_is_free(base, kind="tcp")


# -- tones --------------------------------------------------------------------


def test_tones_in_finds_the_tones_of_a_written_wav(tmp_path: Path) -> None:
    path = write_tone_wav(tmp_path / "two.wav", [500, 1200], 1.0)
    levels = tones_in(path, [500, 1200, 800])
    assert levels[500] > -4 and levels[1200] > -4
    assert levels[800] < -60
    assert has_tone(path, 500) and not has_tone(path, 800)


def test_tones_in_ignores_leading_silence_and_reads_unfinished_wavs(tmp_path: Path) -> None:
    tone = write_tone_wav(tmp_path / "t.wav", 700, 0.5).read_bytes()
    # 3 s of silence, then the tone; header sizes zeroed as after a SIGKILL.
    body = b"\0" * (3 * 16000 * 2) + tone[44:]
    broken = bytearray(tone[:44] + body)
    broken[4:8] = struct.pack("<I", 0)
    broken[40:44] = struct.pack("<I", 0)
    path = tmp_path / "broken.wav"
    path.write_bytes(bytes(broken))
    samples, rate = read_wav(path)
    assert rate == 16000 and len(samples) == len(body) // 2
    assert tones_in(path, [700])[700] > -3
    raw = tmp_path / "raw.pcm"
    raw.write_bytes(body)
    assert has_tone(raw, 700, rate=16000)
    silent = tmp_path / "silent.wav"
    silent.write_bytes(tone[:44] + b"\0" * 32000)
    assert tones_in(silent, [700]) == {700.0: FLOOR_DB}


# -- Kamailio -----------------------------------------------------------------


def test_config_refuses_names_that_would_break_the_script() -> None:
    with pytest.raises(ValueError):
        render_config(5060, {'bad"user': "x"})
    with pytest.raises(ValueError):
        render_config(5060, {"alice": "x"}, trunks={"9;": 5099})
    text = render_config(5060, {"alice": 'pa"ss\\word'}, trunks={"9": 5099, "90": 5098})
    assert '$sht(passwd=>alice) = "pa\\"ss\\\\word";' in text
    assert text.index('"90"') < text.index('"9"')  # longest prefix first


@needs_kamailio
@pytest.mark.lab  # starts processes
def test_kamailio_starts_answers_and_stops(tmp_path: Path) -> None:
    port = free_port()
    kam = Kamailio(tmp_path, port, USERS)
    with kam:
        assert kam.running()
        assert sip_options_ping("127.0.0.1", port) == 200
        pid = kam.pid
        assert pid is not None
    assert not kam.running()
    assert sip_options_ping("127.0.0.1", port, timeout=0.2) is None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # no worker outlived the main process
    assert "REQ OPTIONS" in kam.log_text()


@needs_kamailio
@pytest.mark.lab  # starts processes
def test_kamailio_start_failure_reports_its_stderr(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", port))
        with pytest.raises(Exception, match="kamailio"):
            Kamailio(tmp_path, port, USERS).start(timeout=5)


# -- baresip through Kamailio --------------------------------------------------


@needs_kamailio
@needs_baresip
@pytest.mark.lab  # starts processes
def test_register_with_right_password_and_refused_with_wrong(tmp_path: Path) -> None:
    with Kamailio(tmp_path / "kam", free_port(), USERS) as kam:
        with Baresip(tmp_path / "alice", user="alice", password="alice-secret", registrar=kam.address) as alice:
            assert alice.registration_state() == "OK"
        intruder = Baresip(tmp_path / "bad", user="bob", password="guess", registrar=kam.address)
        with pytest.raises(BaresipError, match="403 Wrong password"):
            intruder.start()
        assert not intruder.running()
        assert "REGISTER bob: wrong password" in kam.log_text()


@needs_kamailio
@needs_baresip
@pytest.mark.lab  # starts processes
def test_call_between_two_baresips_carries_both_tones(tmp_path: Path) -> None:
    with (
        Kamailio(tmp_path / "kam", free_port(), USERS) as kam,
        Baresip(tmp_path / "a", user="alice", password="alice-secret", registrar=kam.address,
                tone_hz=440, record=True) as a,
        Baresip(tmp_path / "b", user="bob", password="bob-secret", registrar=kam.address,
                tone_hz=1000, record=True) as b,
    ):
        a.dial(b.uri)
        established = a.wait_event("CALL_ESTABLISHED", timeout=10)
        b.wait_event("CALL_ESTABLISHED", timeout=10)
        a.wait_event("CALL_RTPESTAB", timeout=10)
        b.wait_event("CALL_RTPESTAB", timeout=10)
        # Let both directions carry audio for a while, then hang up (the WAV
        # headers are only finished when the call closes).
        time.sleep(2.0)
        a.hangup()
        a.wait_event("CALL_CLOSED", timeout=10)
        b.wait_event("CALL_CLOSED", timeout=10)

        assert established["peeruri"] == b.uri
        log = kam.log_text()
        # The INVITE was challenged (alice is a known user) and the dialog
        # was record-routed: ACK and BYE passed through Kamailio.
        assert re.search(r"REQ INVITE sip:bob@.*from=sip:alice@", log)
        assert re.search(r"REQ ACK sip:bob-[^ ]*@127\.0\.0\.1", log)
        assert re.search(r"REQ BYE sip:bob-[^ ]*@127\.0\.0\.1", log)

        (heard_by_a,) = a.recordings()
        (heard_by_b,) = b.recordings()
        at_a = tones_in(heard_by_a, [440, 1000])
        at_b = tones_in(heard_by_b, [440, 1000])
        assert at_a[1000] > -6 and at_a[440] < -30, at_a
        assert at_b[440] > -6 and at_b[1000] < -30, at_b
        # And each sent its own tone.
        assert has_tone(a.sent_recordings()[0], 440) and has_tone(b.sent_recordings()[0], 1000)


@needs_kamailio
@needs_baresip
@pytest.mark.lab  # starts processes
def test_unregistered_callee_and_empty_pickup_get_404(tmp_path: Path) -> None:
    with (
        Kamailio(tmp_path / "kam", free_port(), USERS) as kam,
        Baresip(tmp_path / "c", user="carol", password="carol-secret", registrar=kam.address) as carol,
    ):
        carol.dial(f"sip:bob@{kam.address}")
        assert carol.wait_event("CALL_CLOSED")["param"] == "404 Not Found"
        mark = carol.event_count()
        carol.dial(f"sip:*8bob@{kam.address}")
        assert carol.wait_event("CALL_CLOSED", since=mark)["param"] == "404 Nothing ringing"


# -- SIPp ---------------------------------------------------------------------


@needs_kamailio
@needs_baresip
@needs_sipp
@pytest.mark.lab  # starts processes
def test_trunk_prefix_is_stripped_and_sipp_answers(tmp_path: Path) -> None:
    trunk_port = free_port()
    with (
        Kamailio(tmp_path / "kam", free_port(), USERS, trunks={"9": trunk_port}) as kam,
        Sipp(tmp_path / "sipp", uas_scenario(ring_ms=100, bye_timeout_ms=10000),
             local_port=trunk_port, timeout=20) as trunk,
        Baresip(tmp_path / "a", user="alice", password="alice-secret", registrar=kam.address) as alice,
    ):
        alice.dial(f"sip:95551234@{kam.address}")
        alice.wait_event("CALL_ESTABLISHED", timeout=10)
        alice.hangup()
        assert trunk.wait(15) == 0, trunk.errors_text()
        received = trunk.received_messages()
        methods = [request_line(m).split()[0] for m in received]
        assert methods == ["INVITE", "ACK", "BYE"]
        invite = received[0]
        assert request_line(invite) == f"INVITE sip:5551234@{kam.address} SIP/2.0"
        assert header(invite, "Record-Route") is not None
        assert "m=audio" in invite


@needs_kamailio
@needs_baresip
@needs_sipp
@pytest.mark.parametrize("transport", ["u1", "t1"])
@pytest.mark.lab  # starts processes
def test_sipp_uac_calls_a_baresip_and_receives_its_bye(tmp_path: Path, transport: str) -> None:
    # Over TCP too: pjsip sends big (authenticated) INVITEs over TCP.
    with (
        Kamailio(tmp_path / "kam", free_port(), USERS) as kam,
        Baresip(tmp_path / "b", user="bob", password="bob-secret", registrar=kam.address) as bob,
        Sipp(tmp_path / "sipp", uac_scenario(to_user="bob", bye_timeout_ms=10000),
             remote=kam.address, timeout=20, transport=transport) as caller,
    ):
        call = bob.wait_event("CALL_ESTABLISHED", timeout=10)
        assert call["direction"] == "incoming"
        bob.hangup()
        assert caller.wait(15) == 0, caller.errors_text()
        first = [request_line(m) for m in caller.received_messages()]
        assert first[-1].startswith("BYE ")
        assert any(line.startswith("SIP/2.0 200") for line in first)


@needs_kamailio
@needs_baresip
@needs_sipp
@pytest.mark.lab  # starts processes
def test_blind_transfer_refer_is_accepted_by_sipp(tmp_path: Path) -> None:
    trunk_port = free_port()
    with (
        Kamailio(tmp_path / "kam", free_port(), USERS, trunks={"9": trunk_port}) as kam,
        Sipp(tmp_path / "sipp", uas_scenario(ring_ms=0, accept_refer=True, bye_timeout_ms=10000),
             local_port=trunk_port, timeout=20) as far,
        Baresip(tmp_path / "b", user="bob", password="bob-secret", registrar=kam.address) as bob,
    ):
        bob.dial(f"sip:9100@{kam.address}")
        bob.wait_event("CALL_ESTABLISHED", timeout=10)
        mark = bob.event_count()
        bob.transfer(f"sip:carol@{kam.address}")
        # baresip hangs up by itself once the NOTIFY says 200.
        assert bob.wait_event("CALL_CLOSED", since=mark, timeout=10)["param"] == "Call transfered"
        assert far.wait(15) == 0, far.errors_text()
        refers = far.received_requests("REFER")
        assert len(refers) == 1
        assert header(refers[0], "Refer-To") == f"sip:carol@{kam.address}"


@needs_kamailio
@needs_baresip
@needs_sipp
@pytest.mark.lab  # starts processes
def test_pickup_sends_invite_with_replaces_to_the_caller(tmp_path: Path) -> None:
    # The caller is SIPp (UAC) whose Contact points at a second SIPp (UAS):
    # the pickup INVITE goes to the caller's contact, where it can be read.
    contact_port = free_port()
    with (
        Kamailio(tmp_path / "kam", free_port(), USERS) as kam,
        Baresip(tmp_path / "b", user="bob", password="bob-secret", registrar=kam.address,
                auto_answer=False) as bob,
        Baresip(tmp_path / "c", user="carol", password="carol-secret", registrar=kam.address) as carol,
        Sipp(tmp_path / "caller-contact", uas_scenario(ring_ms=0, bye_timeout_ms=10000),
             local_port=contact_port, timeout=20) as contact,
        Sipp(tmp_path / "caller", uac_scenario(to_user="bob", contact=f"sip:caller@127.0.0.1:{contact_port}"),
             remote=kam.address, timeout=20) as caller,
    ):
        ringing = bob.wait_event("CALL_INCOMING", timeout=10)
        carol.dial(f"sip:*8bob@{kam.address}")
        carol.wait_event("CALL_ESTABLISHED", timeout=10)
        carol.hangup()
        assert contact.wait(15) == 0, contact.errors_text()

        (pickup,) = contact.received_requests("INVITE")
        assert request_line(pickup) == f"INVITE sip:caller@127.0.0.1:{contact_port} SIP/2.0"
        sent_invite = caller.sent_messages()[0]
        ringing_180 = next(m for m in caller.received_messages() if request_line(m).startswith("SIP/2.0 180"))
        call_id = header(sent_invite, "Call-ID")
        caller_tag = re.search(r";tag=([^;>\s]+)", header(sent_invite, "From") or "")
        callee_tag = re.search(r";tag=([^;>\s]+)", header(ringing_180, "To") or "")
        assert caller_tag and callee_tag and ringing["direction"] == "incoming"
        assert header(pickup, "Replaces") == (
            f"{call_id};to-tag={caller_tag.group(1)};from-tag={callee_tag.group(1)}"
        )


def test_parse_trace_splits_sipp_message_log() -> None:
    text = (
        "----------------------------------------------- 2026-01-01 00:00:00.000000\n"
        "UDP message received [10] bytes :\n\nINVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n\n"
        "----------------------------------------------- 2026-01-01 00:00:00.100000\n"
        "UDP message sent (20 bytes):\n\nSIP/2.0 180 Ringing\nCall-ID: x\n\n"
    )
    assert parse_trace(text) == [
        ("received", "INVITE sip:a@b SIP/2.0\nCall-ID: x"),
        ("sent", "SIP/2.0 180 Ringing\nCall-ID: x"),
    ]
