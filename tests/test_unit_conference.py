"""Conference end to end: the unit process, Kamailio, and one far-end process per party.

Every far end plays its own tone and records what it hears; an FFT of each
party's recording proves who hears whom, and the unit's own recording of a
member proves what the operator hears.

Which far end plays which party: baresip 1.0 stops recording what it hears
for good once it has been put on hold (measured here: its *-dec.wav ends at
the unit's sendonly re-INVITE, and stays ended after the call is taken off
hold, although RTP keeps arriving with the same SSRC and unbroken sequence
numbers; its log shows the player restarted but no new sndfile filter, and
baresip's audio.c flushes the decode filters with the player and sets filters
up only while the encode chain is empty). Both conference flows hold parties before they join, so
the parties that get held are pjsua2 peers (kiosk.lab.pjpeer, whose recording
can be switched to a new file once the join has settled), and the party that
is never held is a baresip. baresip writes its recording when its call
closes: it is read after CALL_CLOSED, and its last seconds before the
hang-up are measured.
"""

from __future__ import annotations

import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiosk.lab.baresip import Baresip
from kiosk.lab.pjpeer import PjPeer
from kiosk.lab.proc import wait_until
from kiosk.lab.tones import read_wav, tones_in
from kiosk.lab.unit import CtlResult, Unit

from .conftest import needs_lab
from .pjpeers import tone_dbfs

pytestmark = [needs_lab, pytest.mark.lab]

#: One tone per far end: below G.722's 7 kHz, none a harmonic of another.
TONES = {"2001": 523, "2002": 787, "2003": 1213, "2004": 1789}
#: A tone a party hears carries at least this share (dB) of its recording's power.
HEARD_DB = -20.0
#: A tone a party must not hear stays below this share.
ABSENT_DB = -35.0
#: Seconds to let a join (re-INVITEs, jitter buffers) settle before the measured part.
SETTLE = 1.5
#: Seconds of audio measured.
MEASURE = 3.0
#: Heard tones may differ by this much (dB): a sane mix, nobody drowned out.
SPREAD_DB = 6.0
#: A recording whose peak reaches this (of full scale) counts as clipped.
CLIP = 0.99

MAX_CALLS_REASON = "this unit handles at most 4 calls"


# --- helpers -------------------------------------------------------------------------------


def ok(result: CtlResult) -> Any:
    assert result.rc == 0, result.err
    return result.out


def refused(result: CtlResult) -> str:
    assert result.rc == 1, f"expected a refusal, got rc={result.rc}: {result.out} {result.err}"
    return result.err


def wait_state(unit: Unit, row: int, state: str, timeout: float = 10.0) -> None:
    unit.wait_for(lambda calls: any(c["id"] == row and c["state"] == state for c in calls), timeout)


def states(unit: Unit) -> dict[int, str]:
    return {c["id"]: c["state"] for c in unit.calls()}


def peak(path: Path, skip: float = 0.0) -> float:
    x, rate = read_wav(path)
    x = x[int(skip * rate):]
    return float(np.max(np.abs(x))) if x.size else 0.0


def levels(path: Path, skip: float = 0.2) -> dict[str, float]:
    """Each lab party's tone share (dB) in a recording, by user."""
    got = tones_in(path, list(TONES.values()), skip=skip)
    return {user: round(got[float(hz)], 1) for user, hz in TONES.items()}


def tail(path: Path, dest: Path, seconds: float = MEASURE, margin: float = 0.3) -> Path:
    """The last `seconds` of a recording (ending `margin` before its end) as its own WAV."""
    x, rate = read_wav(path)
    end = max(0, x.size - int(margin * rate))
    part = x[max(0, end - int(seconds * rate)):end]
    with wave.open(str(dest), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(np.round(part * 32767), -32768, 32767).astype("<i2").tobytes())
    return dest


def hang_up_baresip(far: Baresip, dest: Path) -> Path:
    """The baresip far end hangs up; the last seconds of what it heard (a WAV of their own)."""
    mark = far.event_count()
    far.hangup()
    far.wait_event("CALL_CLOSED", timeout=10, since=mark)
    assert wait_until(lambda: bool(far.recordings()) and far.recordings()[-1].stat().st_size > 44, 5), \
        f"{far.user} wrote no recording"
    return tail(far.recordings()[-1], dest)


def assert_hears(heard: dict[str, float], users: list[str], not_users: list[str], who: str) -> None:
    for user in users:
        assert heard[user] > HEARD_DB, f"{who} does not hear {user} ({TONES[user]} Hz): {heard}"
    for user in not_users:
        assert heard[user] < ABSENT_DB, f"{who} hears {user} ({TONES[user]} Hz): {heard}"


def assert_sane_mix(path: Path, heard: dict[str, float], users: list[str], who: str, skip: float = 0.2) -> None:
    top = peak(path, skip)
    assert top < CLIP, f"{who}'s recording clips: peak {top:.3f} of full scale"
    got = [heard[u] for u in users]
    assert max(got) - min(got) <= SPREAD_DB, f"{who} hears the parties at uneven levels: {heard}"


def measure_peers(peers: list[PjPeer], tmp: Path, label: str) -> dict[str, Path]:
    """Record MEASURE seconds of what each pjsua2 peer hears from now, into fresh files."""
    for peer in peers:
        peer.record(tmp / f"{label}-{peer.user}.wav")
    time.sleep(MEASURE)
    return {peer.user: peer.record(tmp / f"{label}-{peer.user}-after.wav") for peer in peers}  # type: ignore[misc]


def build_held_chain(unit: Unit, users: list[str]) -> list[int]:
    """The four-or-more flow: dial a party, hold it, dial the next; the last one stays talking."""
    rows = []
    for i, user in enumerate(users):
        row = ok(unit.ctl("dial", user))["row"]
        wait_state(unit, row, "talking")
        if i < len(users) - 1:
            ok(unit.ctl("hold"))
            wait_state(unit, row, "on hold")
        rows.append(row)
    return rows


# --- three parties ------------------------------------------------------------------------


def test_three_party_conference_everyone_hears_everyone(unit_factory, phone, pjpeer, tmp_path: Path) -> None:
    b = pjpeer("2001", TONES["2001"])
    c = phone("2002", tone_hz=TONES["2002"])
    unit = unit_factory()
    brow = ok(unit.ctl("dial", "2001"))["row"]
    wait_state(unit, brow, "talking")

    first = ok(unit.ctl("conference", "2002"))  # B is held and C dialled
    crow = first["row"]
    assert first["held"] == brow
    wait_state(unit, brow, "on hold")
    wait_state(unit, crow, "talking")

    joined = ok(unit.ctl("conference"))
    assert joined["conference"] == sorted([brow, crow])
    unit.wait_for(lambda calls: {x["state"] for x in calls} == {"in conference"})
    ok(unit.ctl("select", str(crow)))
    operator = ok(unit.ctl("record", "start"))  # what the operator hears and says
    time.sleep(SETTLE)
    heard_by = measure_peers([b], tmp_path, "joined")
    op_file = Path(ok(unit.ctl("record", "stop"))["file"])
    c_file = hang_up_baresip(c, tmp_path / "c-tail.wav")

    assert_hears(levels(heard_by["2001"]), ["2002"], ["2001"], "B")
    assert_hears(levels(c_file), ["2001"], ["2002"], "C")
    assert_hears(levels(op_file, skip=SETTLE), ["2001", "2002"], [], "the operator")
    assert operator["row"] == crow
    unit.wait_for(lambda calls: [x["state"] for x in calls] == ["talking"])  # B alone: an ordinary call


# --- four or more -------------------------------------------------------------------------


def test_five_party_conference_every_party_hears_every_other_without_clipping(
        unit_factory, phone, pjpeer, tmp_path: Path) -> None:
    held = [pjpeer(u, TONES[u]) for u in ("2001", "2002", "2003")]
    last = phone("2004", tone_hz=TONES["2004"])
    unit = unit_factory()
    rows = build_held_chain(unit, ["2001", "2002", "2003", "2004"])
    assert [states(unit)[r] for r in rows] == ["on hold"] * 3 + ["talking"]

    ok(unit.ctl("select", *map(str, rows)))
    joined = ok(unit.ctl("conference"))
    assert joined["conference"] == sorted(rows)
    unit.wait_for(lambda calls: len(calls) == 4 and {x["state"] for x in calls} == {"in conference"})

    # The unit is full: a fifth party is refused with the build's limit.
    assert MAX_CALLS_REASON in refused(unit.ctl("dial", "2001"))
    ok(unit.ctl("select", str(rows[0])))
    assert MAX_CALLS_REASON in refused(unit.ctl("conference", "2002"))
    assert states(unit) == {r: "in conference" for r in rows}, "a refused fifth party disturbed the conference"

    ok(unit.ctl("record", "start"))
    time.sleep(SETTLE)
    heard_by = measure_peers(held, tmp_path, "five")
    op_file = Path(ok(unit.ctl("record", "stop"))["file"])
    heard_by["2004"] = hang_up_baresip(last, tmp_path / "e-tail.wav")

    everyone = list(TONES)
    for user, path in heard_by.items():
        others = [u for u in everyone if u != user]
        heard = levels(path)
        assert_hears(heard, others, [user], user)
        assert_sane_mix(path, heard, others, user)
    op_heard = levels(op_file, skip=SETTLE)
    assert_hears(op_heard, everyone, [], "the operator")
    assert_sane_mix(op_file, op_heard, everyone, "the operator", skip=SETTLE)


def test_a_party_leaving_leaves_the_rest_in_conference_and_the_last_one_talking(
        unit_factory, phone, pjpeer, tmp_path: Path) -> None:
    b, c = pjpeer("2001", TONES["2001"]), pjpeer("2002", TONES["2002"])
    d = phone("2003", tone_hz=TONES["2003"])
    unit = unit_factory()
    brow, crow, drow = build_held_chain(unit, ["2001", "2002", "2003"])
    ok(unit.ctl("select", str(brow), str(crow), str(drow)))
    ok(unit.ctl("conference"))
    unit.wait_for(lambda calls: {x["state"] for x in calls} == {"in conference"})
    time.sleep(SETTLE + MEASURE)

    d_file = hang_up_baresip(d, tmp_path / "d-tail.wav")  # D leaves
    unit.wait_for(lambda calls: sorted(x["id"] for x in calls) == [brow, crow])
    assert states(unit) == {brow: "in conference", crow: "in conference"}
    assert_hears(levels(d_file), ["2001", "2002"], ["2003"], "D")

    time.sleep(0.5)
    heard_by = measure_peers([b, c], tmp_path, "after-d")
    assert_hears(levels(heard_by["2001"]), ["2002"], ["2001", "2003"], "B after D left")
    assert_hears(levels(heard_by["2002"]), ["2001"], ["2002", "2003"], "C after D left")
    # Two parties left: each is mixed at full level again (three were at -4.8 dB).
    c_hz = TONES["2002"]
    louder = tone_dbfs(heard_by["2001"], [c_hz])[c_hz] - tone_dbfs(d_file, [c_hz])[c_hz]
    assert louder > 3.0, f"C is only {louder:.1f} dB louder for B than it was for D: not re-levelled"

    c.hangup()  # one remote party left: an ordinary call again
    unit.wait_for(lambda calls: [(x["id"], x["state"]) for x in calls] == [(brow, "talking")])
    ok(unit.ctl("record", "start"))
    time.sleep(1.5)
    op_file = Path(ok(unit.ctl("record", "stop"))["file"])
    assert_hears(levels(op_file), ["2001"], ["2002", "2003"], "the operator with B alone")
    assert ok(unit.ctl("hold"))  # and it behaves as one: hold, connect
    wait_state(unit, brow, "on hold")
    ok(unit.ctl("connect"))
    wait_state(unit, brow, "talking")


# --- refusals -----------------------------------------------------------------------------


def test_conference_refusals_say_why_and_change_nothing(unit_factory, phone) -> None:
    phone("2001", tone_hz=TONES["2001"])
    c = phone("2002", tone_hz=TONES["2002"], auto_answer=False)
    phone("2003", tone_hz=TONES["2003"], auto_answer=False)
    unit = unit_factory()
    brow = ok(unit.ctl("dial", "2001"))["row"]
    wait_state(unit, brow, "talking")

    crow = ok(unit.ctl("conference", "2002"))["row"]
    wait_state(unit, crow, "ringing")
    reason = refused(unit.ctl("conference"))  # C has not answered yet
    assert f"call {crow} has not answered yet" in reason, reason
    assert states(unit) == {brow: "on hold", crow: "ringing"}

    ok(unit.ctl("select"))  # nothing selected: the press still means the pending pair
    reason = refused(unit.ctl("conference"))
    assert f"call {crow} has not answered yet" in reason, reason
    ok(unit.ctl("select", str(brow), str(crow)))  # a ringing row among the selected
    reason = refused(unit.ctl("conference"))
    assert f"call {crow} is ringing" in reason, reason

    mark = c.event_count()
    c.accept()
    c.wait_event("CALL_ESTABLISHED", since=mark)
    wait_state(unit, crow, "talking")
    ok(unit.ctl("select", str(crow)))
    assert ok(unit.ctl("conference"))["conference"] == sorted([brow, crow])
    unit.wait_for(lambda calls: {x["state"] for x in calls} == {"in conference"})

    drow = ok(unit.ctl("dial", "2003"))["row"]  # a third call that rings
    wait_state(unit, drow, "ringing")
    ok(unit.ctl("select", str(drow)))
    reason = refused(unit.ctl("conference"))
    assert f"call {drow} is ringing" in reason, reason
    ok(unit.ctl("select"))
    assert refused(unit.ctl("conference")) == "kiosk ctl conference: no call selected"
