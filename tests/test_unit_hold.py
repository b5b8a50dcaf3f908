"""Hold and Connect on the real unit: what the far end receives (SDP direction) and hears (tones).

A SIPp UAS behind Kamailio's trunk prefix 9 shows the exact re-INVITEs the
unit sends. Far ends with their own tones show by what they record that a held
caller never hears the operator's other call (the held caller is a pjsua2
peer: baresip 1.0 stops recording what it hears at the first re-INVITE that
changes the media direction, measured), and the unit's own recording shows
that the held caller is heard again after Connect or after the far end's own
hold ends (pjsua2 drops a call's bridge connections on every re-INVITE: they
must be re-made).
"""

from __future__ import annotations

import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiosk.lab.kamailio import Kamailio
from kiosk.lab.proc import wait_until
from kiosk.lab.sipp import _HEAD, Sipp, _reply, _send
from kiosk.lab.tones import read_wav, tones_in

from .conftest import needs_lab
from .pjpeers import tone_dbfs

pytestmark = [needs_lab, pytest.mark.lab]

B_HZ, C_HZ = 700, 1100


@pytest.fixture
def kamailio(kamailio_trunk: Kamailio) -> Kamailio:
    """Every lab part of this module talks to the Kamailio with the SIPp trunk behind prefix 9."""
    return kamailio_trunk


def _sdp(version: int, direction: str) -> str:
    # One codec (plus DTMF) in the answer: with several, pjsua2 "locks" the codec with
    # a re-INVITE of its own, which would blur which re-INVITE hold sent.
    return "\n".join([
        "v=0",
        f"o=sipp 53655765 {version} IN IP[local_ip_type] [local_ip]",
        "s=kiosk-lab",
        "c=IN IP[media_ip_type] [media_ip]",
        "t=0 0",
        "m=audio [media_port] RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        f"a={direction}",
    ])


def _ok_with_sdp(sdp: str, first: bool) -> str:
    head = _reply("200 OK", to_tag=first, record_route=first).replace("Content-Length: 0", "")
    return head.rstrip("\n") + "\nContent-Type: application/sdp\nContent-Length: [len]\n\n" + sdp


def hold_uas_scenario(bye_timeout_ms: int = 30000) -> str:
    """SIPp UAS: answer, then answer two re-INVITEs (hold: recvonly, connect: sendrecv), then BYE."""
    parts = [_HEAD, '<scenario name="kiosk lab UAS: hold and connect">\n',
             '  <recv request="INVITE" crlf="true" rrs="true"/>\n',
             _send(_reply("180 Ringing")),
             _send(_ok_with_sdp(_sdp(1, "sendrecv"), first=True), retrans=500),
             '  <recv request="ACK" crlf="true"/>\n']
    for version, answer in ((2, "recvonly"), (3, "sendrecv")):
        parts += [f'  <recv request="INVITE" crlf="true" timeout="{bye_timeout_ms}"/>\n',
                  _send(_ok_with_sdp(_sdp(version, answer), first=False), retrans=500),
                  '  <recv request="ACK" crlf="true"/>\n']
    parts += [f'  <recv request="BYE" timeout="{bye_timeout_ms}"/>\n',
              _send(_reply("200 OK", to_tag=False, record_route=False)),
              '  <timewait milliseconds="500"/>\n', "</scenario>\n"]
    return "".join(parts)


def _direction(message: str) -> str | None:
    for line in message.splitlines():
        line = line.strip()
        if line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            return line[2:]
    return None


def _row(calls: list[dict[str, Any]], row_id: int) -> dict[str, Any] | None:
    return next((c for c in calls if c["id"] == row_id), None)


def _state_is(row_id: int, state: str):
    return lambda calls: (_row(calls, row_id) or {}).get("state") == state


def _segment(path: Path, start: float, end: float, tmp: Path) -> Path:
    """The part of a recording from `start` to `end` seconds, as a WAV file of its own."""
    x, rate = read_wav(path)
    piece = x[int(start * rate): int(end * rate)]
    out = tmp / f"{path.stem}-{start:.1f}-{end:.1f}.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(np.round(piece * 32767), -32768, 32767).astype("<i2").tobytes())
    return out


def test_hold_sends_sendonly_and_connect_sendrecv_to_the_far_end(unit_factory, trunk_port, tmp_path) -> None:
    unit = unit_factory()
    far = Sipp(tmp_path / "sipp", hold_uas_scenario(), local_port=trunk_port, timeout=60)
    with far.start():
        out = unit.ctl("dial", "9100")
        assert out.rc == 0, out.err
        row = out.out["row"]
        unit.wait_for(_state_is(row, "talking"))

        hold = unit.ctl("hold")
        assert hold.rc == 0, hold.err
        unit.wait_for(_state_is(row, "on hold"))
        assert wait_until(lambda: len(far.received_requests("INVITE")) >= 2, 5), far.messages()
        held = far.received_requests("INVITE")[1]
        assert _direction(held) in ("sendonly", "inactive"), held

        again = unit.ctl("hold")
        assert again.rc == 1 and "already on hold" in again.err

        connect = unit.ctl("connect")
        assert connect.rc == 0, connect.err
        unit.wait_for(_state_is(row, "talking"))
        assert wait_until(lambda: len(far.received_requests("INVITE")) >= 3, 5), far.messages()
        invites = far.received_requests("INVITE")
        assert len(invites) == 3, far.messages()
        assert _direction(invites[2]) == "sendrecv", invites[2]

        again = unit.ctl("connect")
        assert again.rc == 1 and "not on hold" in again.err

        assert unit.ctl("hangup").rc == 0
        unit.wait_for(lambda calls: not calls)
        assert far.wait(15) == 0, far.errors_text() + unit.log_tail()
    assert [m.split(" ", 1)[0] for m in far.received_requests()] == \
        ["INVITE", "ACK", "INVITE", "ACK", "INVITE", "ACK", "BYE"]


def test_held_caller_never_hears_the_operators_next_call_and_is_heard_again_after_connect(
        unit_factory, phone, pjpeer, tmp_path) -> None:
    # B is a pjsua2 peer: baresip 1.0 stops writing what it hears at the first
    # re-INVITE that changes the media direction (measured), so it cannot tell
    # what a held caller hears. C is baresip, which is not re-INVITEd until Connect.
    b = pjpeer("2001", tone_hz=B_HZ)
    c = phone("2002", tone_hz=C_HZ, record=True)
    unit = unit_factory()

    first = unit.ctl("dial", "2001")
    assert first.rc == 0, first.err
    b_row = first.out["row"]
    unit.wait_for(_state_is(b_row, "talking"))
    rec = unit.ctl("record", "start")
    assert rec.rc == 0, rec.err
    t0 = time.monotonic()
    time.sleep(1.5)

    assert unit.ctl("hold").rc == 0
    unit.wait_for(_state_is(b_row, "on hold"))
    t_hold = time.monotonic() - t0
    b.record(tmp_path / "b-while-held.wav")

    # The line is free: the operator calls C and talks while B waits.
    second = unit.ctl("dial", "2002")
    assert second.rc == 0, second.err
    c_row = second.out["row"]
    unit.wait_for(_state_is(c_row, "talking"))
    c.wait_event("CALL_ESTABLISHED")
    assert _row(unit.calls(), b_row)["state"] == "on hold"
    c_rec = unit.ctl("record", "start")  # C's row is the selected one now
    assert c_rec.rc == 0, c_rec.err
    time.sleep(2.5)
    assert unit.ctl("record", "stop").rc == 0

    # Back to B: Connect holds C first (never two conversations in one headset).
    assert unit.ctl("select", str(b_row)).rc == 0
    b.record(tmp_path / "b-after-connect.wav")
    t_connect = time.monotonic() - t0
    connect = unit.ctl("connect")
    assert connect.rc == 0, connect.err
    calls = unit.wait_for(lambda calls: _state_is(b_row, "talking")(calls) and _state_is(c_row, "on hold")(calls))
    assert {r["id"]: r["state"] for r in calls} == {b_row: "talking", c_row: "on hold"}
    time.sleep(2.5)
    assert unit.ctl("select", str(b_row)).rc == 0
    stop = unit.ctl("record", "stop")
    assert stop.rc == 0, stop.err
    t_stop = time.monotonic() - t0
    b.record(None)

    for row in (c_row, b_row):
        assert unit.ctl("select", str(row)).rc == 0
        assert unit.ctl("hangup").rc == 0
    unit.wait_for(lambda calls: not calls)
    c.wait_event("CALL_CLOSED")
    time.sleep(0.5)  # sndfile finishes its WAV header on close

    # C's tone really was in the unit while B was held (so B could have heard it) ...
    c_in_unit = tones_in(Path(c_rec.out["file"]), [B_HZ, C_HZ])
    assert c_in_unit[C_HZ] > -6 and c_in_unit[B_HZ] < -30, c_in_unit
    # ... but the held caller heard none of it, for all the time C was on the line.
    x, rate = read_wav(tmp_path / "b-while-held.wav")
    assert x.size / rate > 2.5, x.size / rate
    held = tone_dbfs(tmp_path / "b-while-held.wav", [B_HZ, C_HZ])
    assert held[C_HZ] < -60, held
    # and C, until it was held itself, never heard B.
    (c_heard,) = c.recordings()
    assert tone_dbfs(c_heard, [B_HZ])[B_HZ] < -60

    # What the unit recorded of B: B's tone before hold, nothing of C's call while
    # B was held, B's tone again once connected (pjsua2 dropped B's bridge
    # connections, recorder included, on the re-INVITEs: they were re-made).
    recording = Path(stop.out["file"])
    before = tones_in(_segment(recording, 0.2, t_hold - 0.2, tmp_path), [B_HZ, C_HZ])
    during = tone_dbfs(_segment(recording, t_hold + 0.5, t_connect - 0.2, tmp_path), [B_HZ, C_HZ], skip=0)
    after = tones_in(_segment(recording, t_connect + 1.0, t_stop - 0.3, tmp_path), [B_HZ, C_HZ])
    assert before[B_HZ] > -6 and before[C_HZ] < -30, before
    assert during[B_HZ] < -60 and during[C_HZ] < -60, during
    assert after[B_HZ] > -6 and after[C_HZ] < -30, (after, recording)


def test_far_end_hold_shows_on_the_row_and_its_audio_is_rewired_when_it_resumes(
        unit_factory, phone, tmp_path) -> None:
    b = phone("2001", tone_hz=B_HZ, record=False)
    unit = unit_factory()
    out = unit.ctl("dial", "2001")
    assert out.rc == 0, out.err
    row = out.out["row"]
    unit.wait_for(_state_is(row, "talking"))
    rec = unit.ctl("record", "start")
    assert rec.rc == 0, rec.err
    t0 = time.monotonic()
    time.sleep(1.0)

    b.hold()  # the far end's own re-INVITE (sendonly)
    unit.wait_for(_state_is(row, "held by remote"))
    assert unit.ctl("connect").rc == 1  # their hold is not ours to take back
    time.sleep(1.5)
    b.resume()
    unit.wait_for(_state_is(row, "talking"))
    t_resume = time.monotonic() - t0
    time.sleep(2.0)
    stop = unit.ctl("record", "stop")
    assert stop.rc == 0, stop.err
    t_stop = time.monotonic() - t0
    assert unit.ctl("hangup").rc == 0

    after = tones_in(_segment(Path(stop.out["file"]), t_resume + 0.7, t_stop - 0.3, tmp_path), [B_HZ, C_HZ])
    assert after[B_HZ] > -6, after
