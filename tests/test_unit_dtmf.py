"""DTMF from the unit to a real far end, checked twice: by the far end's stack and on the wire.

The unit (its own process, `kiosk ctl dtmf` / `kiosk ctl key`) calls a pjsua2
peer (kiosk.lab.pjpeer) through Kamailio. The peer reports every digit its
stack decoded (onDtmfDigit: RFC 4733 events and SIP INFO alike) and the body
of every INFO it got; kiosk.lab.rtpsniff reads the RTP packets to the peer's
media ports off `lo` and decodes the telephone-events by RFC 4733 itself, so
a digit the unit sent wrongly but pjsua2 forgave would still show.
"""

from __future__ import annotations

import time

import pytest

from kiosk.lab.pjpeer import PjPeer
from kiosk.lab.proc import wait_until
from kiosk.lab.rtpsniff import RtpSniffer, can_sniff
from kiosk.lab.unit import Unit

from .conftest import needs_lab
from .test_unit_audio import jack, needs_jack  # noqa: F401 (jack: the JACK server fixture)

lab = [needs_lab, pytest.mark.lab]


def lab_test(fn):  # type: ignore[no-untyped-def]
    for mark in lab:
        fn = mark(fn)
    return fn

DIGITS = "159#*0D"


def peer_rtp_ports(peer: PjPeer) -> range:
    """The RTP ports pjpeer binds for its calls (its account's transport range)."""
    base = 50000 + (peer.port % 600) * 16
    return range(base, base + 16)


def talking_to(unit: Unit, number: str) -> int:
    out = unit.ctl("dial", number)
    assert out.rc == 0, out.err
    row = out.out["row"]
    unit.wait_for(lambda calls: any(c["id"] == row and c["state"] == "talking" for c in calls))
    return row


def with_line_option(unit: Unit, key: str, value: str) -> None:
    """Add `key = value` to the lab profile's (only) line before the unit starts."""
    text = unit.profile_text
    marker = "[[line]]\n"
    assert text.count(marker) == 1, text
    unit.profile_text = text.replace(marker, f"{marker}{key} = {value}\n")


def sniffer_for(peer: PjPeer) -> RtpSniffer:
    why = can_sniff("lo")
    if why:
        pytest.skip(why)
    return RtpSniffer(ports=peer_rtp_ports(peer)).start()


@lab_test
def test_rfc4733_digits_reach_the_peer_and_the_wire(unit_factory, pjpeer) -> None:
    far = pjpeer("2001", tone_hz=700)
    unit = unit_factory()
    sniff = sniffer_for(far)
    try:
        talking_to(unit, "2001")
        far.wait_event("media", status="active")
        since = far.event_count()
        out = unit.ctl("dtmf", DIGITS)
        assert out.rc == 0, (out.out, out.err)
        assert wait_until(lambda: far.digits(since) == DIGITS, 10), (far.digits(since), unit.log_tail())
        assert wait_until(lambda: sniff.digits() == DIGITS, 5), (sniff.digits(), sniff.snapshot())
    finally:
        sniff.stop()
    assert sniff.packets > 50  # it saw the audio stream too: the ports were the right ones
    assert {e["method"] for e in far.find_events("dtmf", since)} == {"rfc4733"}
    assert not far.find_events("info", since)
    events = sniff.snapshot()
    for e in events:
        assert e.end_packets >= 1, e  # every event ended (pjmedia sends the end three times)
        assert e.marker, e  # and began with the marker bit
        assert e.end_at is not None and e.end_at >= e.first_at
    assert len({e.timestamp for e in events}) == len(DIGITS)  # each digit its own event
    # pjsua's 160 ms digits: in timestamp units of 8 or 16 kHz, a duration of 0.1..0.4 s either way.
    assert all(800 <= e.duration <= 6400 for e in events), [e.duration for e in events]
    assert len({e.payload_type for e in events}) == 1
    print("wire:", [(e.digit, e.payload_type, e.duration, e.packets, e.end_packets,
                     round((e.end_at or 0) - e.first_at, 3)) for e in events])
    assert "DTMF" in unit.log_tail(200)


@lab_test
def test_sip_info_digits_reach_the_peer_and_no_rtp_event_is_sent(unit_factory, pjpeer) -> None:
    far = pjpeer("2001", tone_hz=700)
    unit = unit_factory(start=False)
    with_line_option(unit, "dtmf", '"info"')
    unit.start()
    sniff = sniffer_for(far)
    try:
        talking_to(unit, "2001")
        far.wait_event("media", status="active")
        since = far.event_count()
        out = unit.ctl("dtmf", "5*")
        assert out.rc == 0, (out.out, out.err)
        assert wait_until(lambda: far.digits(since) == "5*", 10), (far.digits(since), unit.log_tail())
        time.sleep(0.5)  # an RFC 4733 event sent by mistake would be on the wire by now
    finally:
        sniff.stop()
    assert {e["method"] for e in far.find_events("dtmf", since)} == {"info"}
    infos = far.find_events("info", since)
    assert [i["content_type"] for i in infos] == ["application/dtmf-relay"] * 2, infos
    bodies = [dict(line.split("=", 1) for line in i["body"].replace(" ", "").split("\r\n") if "=" in line)
              for i in infos]
    assert bodies == [{"Signal": "5", "Duration": "160"}, {"Signal": "*", "Duration": "160"}], bodies
    assert sniff.digits(ended_only=False) == ""
    assert sniff.packets > 20


@lab_test
@needs_jack
def test_keypad_key_in_conversation_sends_dtmf_and_keeps_the_audio(unit_factory, pjpeer, jack, tmp_path) -> None:
    """`kiosk ctl key 5` with the call in conversation: the digit goes to the far end, the operator hears a
    short key tone, the Number field stays empty, and the call's audio path is as it was: the far end
    still hears the operator's microphone and the headset still plays the far end."""
    import threading

    from .pjpeers import tone_dbfs
    from .test_unit_audio import UNIT_IN, UNIT_OUT, TonePlayer, headset_unit
    from .test_unit_ring import level_dbfs

    far = pjpeer("2001", tone_hz=700)
    unit = headset_unit(unit_factory, jack.env)
    assert wait_until(lambda: UNIT_IN in jack.ports(), 10), unit.log_tail()
    with TonePlayer(jack, 1000, tmp_path):
        jack.connect("tone:out_0", UNIT_IN)
        talking_to(unit, "2001")
        far.wait_event("media", status="active")
        time.sleep(0.5)
        since = far.event_count()
        ear = tmp_path / "ear.wav"
        rec = threading.Thread(target=jack.record, args=(UNIT_OUT, ear, 2.0))
        rec.start()
        time.sleep(0.3)
        out = unit.ctl("key", "5")
        assert out.rc == 0, (out.out, out.err)
        assert wait_until(lambda: far.digits(since) == "5", 10), (far.digits(since), unit.log_tail())
        assert far.record(tmp_path / "after-key.wav") is not None
        time.sleep(1.0)
        heard_after = far.record(None)
        rec.join(20)
    snap = unit.request("calls")["data"]
    assert snap.get("number", "") == "", snap.get("number")
    assert heard_after is not None
    assert tone_dbfs(heard_after, [1000])[1000] > -30  # the microphone still reaches the far end
    from kiosk.lab.tones import read_wav

    x, rate = read_wav(ear)
    assert rate == 16000
    assert level_dbfs(x, 770) > -50 and level_dbfs(x, 1336) > -50  # the key tone was in the ear
    tail = x[int(1.0 * rate):]  # after the key tone (80 ms, from about 0.3 s)
    assert level_dbfs(tail, 700) > -20  # and the far end is still there
    assert level_dbfs(tail, 1336) < -60
    assert unit.calls()[0]["state"] == "talking"


# --- the sniffer's decoder on packets made by hand (fast) ---------------------------


def _ipv4_udp(dport: int, payload: bytes) -> bytes:
    import struct

    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                       bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + udp


def _rtp(pt: int, seq: int, ts: int, payload: bytes, marker: bool = False, ssrc: int = 0x1234) -> bytes:
    import struct

    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq, ts, ssrc) + payload


def _event(code: int, end: bool, duration: int) -> bytes:
    import struct

    return struct.pack("!BBH", code, (0x80 if end else 0) | 10, duration)


def test_sniffer_decodes_rfc4733_events_by_the_rules() -> None:
    from kiosk.lab.rtpsniff import ETH_P_IP

    s = RtpSniffer(ports={5004})

    def send(payload: bytes, port: int = 5004, at: float = 0.0) -> None:
        s.feed(ETH_P_IP, _ipv4_udp(port, payload), at)

    send(_rtp(9, 1, 160, b"\x00" * 160))  # audio: counted, never a digit
    for i, (code, ts) in enumerate(((5, 1000), (11, 3000))):
        send(_rtp(101, 10 + i, ts, _event(code, False, 160), marker=True), at=1.0 + i)
        send(_rtp(101, 11 + i, ts, _event(code, False, 640)))
        for _ in range(3):  # the end, three times
            send(_rtp(101, 12 + i, ts, _event(code, True, 1280)), at=1.1 + i)
    send(_rtp(101, 30, 5000, _event(1, False, 160), marker=True))  # no end yet
    send(_rtp(101, 31, 6000, _event(2, True, 160)), port=5006)  # another port
    send(_rtp(101, 32, 7000, b"\x05\x80\x00"))  # not 4 bytes
    assert s.digits() == "5#"
    assert s.digits(ended_only=False) == "5#1"
    first = s.snapshot()[0]
    assert (first.duration, first.end_packets, first.packets, first.marker) == (1280, 3, 5, True)
    assert (first.first_at, first.end_at, first.volume) == (1.0, 1.1, 10)
    assert s.packets == 1 + 10 + 1 + 1  # every RTP packet to the port
