"""Recording end to end: the unit process, Kamailio and tone-playing baresip far ends.

Each far end plays its own tone; an FFT of the unit's recording proves whose
audio it holds. The files are checked the way a user would meet them: `wave`
opens them, the sidecar says who, when and how long, `kiosk ctl recordings`
lists them. Then the unit is SIGKILLed mid-recording and restarted, and a tiny
tmpfs fills up under a recording mid-call.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiosk.lab.proc import wait_until
from kiosk.lab.tones import read_wav, tones_in
from kiosk.lab.unit import Unit
from kiosk.recordings import read_header, sidecar_of

from .conftest import EventLog, needs_lab

pytestmark = [needs_lab, pytest.mark.lab]

B_HZ, C_HZ = 523, 1213  # below G.722's 7 kHz, neither a harmonic of the other
HEARD_DB, ABSENT_DB = -20.0, -35.0


# --- helpers -------------------------------------------------------------------------------


def ok(result: Any) -> Any:
    assert result.rc == 0, result.err
    return result.out


def talking(unit: Unit, row: int, state: str = "talking", timeout: float = 10.0) -> None:
    unit.wait_for(lambda calls: any(c["id"] == row and c["state"] == state for c in calls), timeout)


def sidecar(wav: Path) -> dict[str, Any]:
    return json.loads(sidecar_of(wav).read_text())


def completed(wav: Path, timeout: float = 10.0) -> dict[str, Any]:
    """The sidecar once the recording has ended (end set)."""
    assert wait_until(lambda: sidecar_of(wav).exists() and sidecar(wav)["end"] is not None, timeout), \
        f"sidecar of {wav.name} never completed: {sidecar_of(wav).read_text() if sidecar_of(wav).exists() else '-'}"
    return sidecar(wav)


def wave_seconds(wav: Path) -> float:
    """Duration as the standard library reads it (it refuses a header with zero sizes)."""
    with wave.open(str(wav)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        return w.getnframes() / w.getframerate()


def levels(wav: Path, start: float, end: float, tmp: Path) -> dict[int, float]:
    """Each tone's share (dB) of the recording between two offsets (seconds)."""
    x, rate = read_wav(wav)
    part = x[int(start * rate):int(end * rate)]
    dest = tmp / f"part-{wav.stem}-{start:.1f}-{end:.1f}.wav"
    with wave.open(str(dest), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(np.clip(np.round(part * 32767), -32768, 32767).astype("<i2").tobytes())
    return {int(f): round(db, 1) for f, db in tones_in(dest, [B_HZ, C_HZ]).items()}


def rms_db(wav: Path, start: float, end: float) -> float:
    x, rate = read_wav(wav)
    part = x[int(start * rate):int(end * rate)]
    return 20 * np.log10(max(1e-9, float(np.sqrt(np.mean(part ** 2))) if part.size else 1e-9))


# --- selective and global recording ---------------------------------------------------------


def test_selective_recording_mid_call_holds_the_far_end_and_a_complete_sidecar(unit_factory, phone, tmp_path) -> None:
    phone("2001", tone_hz=B_HZ)
    unit = unit_factory()
    row = ok(unit.ctl("dial", "2001"))["row"]
    talking(unit, row)
    time.sleep(1.0)  # recording starts mid-call, not at answer

    started = time.time()
    wav = Path(ok(unit.ctl("record", "start"))["file"])
    assert unit.calls()[0]["recording"] is True
    time.sleep(3.0)
    assert ok(unit.ctl("record", "stop"))["file"] == str(wav)
    stopped = time.time()

    assert unit.calls()[0]["recording"] is False and unit.calls()[0]["state"] == "talking"
    assert wav.name.endswith(f"_main_out_2001_127.0.0.1_{row}.wav"), wav.name
    assert stat.S_IMODE(wav.stat().st_mode) == 0o640 and stat.S_IMODE(sidecar_of(wav).stat().st_mode) == 0o640
    seconds = wave_seconds(wav)  # Stop returns with the header final: `wave` reads it as it is
    assert abs(seconds - (stopped - started)) < 0.5, (seconds, stopped - started)
    heard = levels(wav, 0.3, seconds, tmp_path)
    assert heard[B_HZ] > HEARD_DB, heard

    meta = sidecar(wav)
    assert meta["end"] is not None and meta["stopped"] == "stopped by the operator"
    assert (meta["line"], meta["direction"], meta["operator"], meta["sample_rate"]) == ("main", "out", "Lab operator", 16000)
    assert "2001" in meta["remote"] and meta["parties"] == [meta["remote"]]
    assert meta["duration"] == pytest.approx(seconds, abs=0.01) and meta["hold"] == []
    assert meta["repaired"] is False and "route" in meta

    listed = ok(unit.ctl("recordings"))["recordings"]
    assert [(r["file"], r["repaired"], r["recording"]) for r in listed] == [(str(wav), False, False)]
    assert listed[0]["duration"] == meta["duration"]
    ok(unit.ctl("hangup"))


def test_global_recording_records_the_whole_call_and_refuses_stop(unit_factory, phone, tmp_path) -> None:
    phone("2001", tone_hz=B_HZ)
    unit = unit_factory(always_record=True)
    row = ok(unit.ctl("dial", "2001"))["row"]
    talking(unit, row)
    answered = time.time()
    assert unit.wait_for(lambda calls: calls and calls[0]["recording"])

    refused = unit.ctl("record", "stop")
    assert refused.rc == 1 and "always on" in refused.err, refused
    time.sleep(2.5)
    ok(unit.ctl("hangup"))
    hung_up = time.time()
    unit.wait_for(lambda calls: not calls)

    listed = ok(unit.ctl("recordings"))["recordings"]
    assert len(listed) == 1
    wav = Path(listed[0]["file"])
    meta = completed(wav)
    assert meta["stopped"].startswith("call ended")
    seconds = wave_seconds(wav)
    assert abs(seconds - (hung_up - answered)) < 0.7, (seconds, hung_up - answered)
    assert levels(wav, 0.3, seconds, tmp_path)[B_HZ] > HEARD_DB


def test_conference_recording_holds_every_party_and_marks_the_hold(unit_factory, phone, tmp_path) -> None:
    phone("2001", tone_hz=B_HZ)
    phone("2002", tone_hz=C_HZ)
    unit = unit_factory()
    brow = ok(unit.ctl("dial", "2001"))["row"]
    talking(unit, brow)
    wav = Path(ok(unit.ctl("record", "start"))["file"])  # B's call is recorded from here on
    time.sleep(1.5)

    crow = ok(unit.ctl("conference", "2002"))["row"]  # holds B, dials C
    talking(unit, brow, "on hold")
    talking(unit, crow)
    time.sleep(1.5)  # the operator talks to C alone: none of it may land in B's recording
    joined = ok(unit.ctl("conference"))
    assert joined["conference"] == sorted([brow, crow])
    unit.wait_for(lambda calls: {x["state"] for x in calls} == {"in conference"}, 10)
    time.sleep(3.5)
    ok(unit.ctl("select", str(brow)))
    ok(unit.ctl("record", "stop"))

    meta = completed(wav)
    seconds = wave_seconds(wav)
    local = [s for s in meta["hold"] if s["by"] == "local"]
    assert len(local) == 1 and local[0]["end"] is not None, meta["hold"]
    span = local[0]
    assert 1.0 < span["start"] < 2.5 and span["end"] - span["start"] > 1.0, span
    assert seconds == pytest.approx(meta["end_epoch"] - meta["start_epoch"], abs=0.5), \
        "the hold's time is kept (as silence), so spans are positions in the audio"
    assert len(meta["parties"]) == 2 and any("2002" in p for p in meta["parties"])

    before = levels(wav, 0.3, span["start"] - 0.2, tmp_path)
    assert before[B_HZ] > HEARD_DB and before[C_HZ] < ABSENT_DB, before
    assert rms_db(wav, span["start"] + 0.3, span["end"] - 0.2) < -50, "the held call's recording is silent"
    after = levels(wav, span["end"] + 1.0, seconds - 0.2, tmp_path)
    assert after[B_HZ] > HEARD_DB and after[C_HZ] > HEARD_DB, after


# --- nothing lost ----------------------------------------------------------------------------


def test_sigterm_mid_recording_leaves_complete_files(unit_factory, phone, tmp_path) -> None:
    phone("2001", tone_hz=B_HZ)
    unit = unit_factory()
    talking(unit, ok(unit.ctl("dial", "2001"))["row"])
    wav = Path(ok(unit.ctl("record", "start"))["file"])
    time.sleep(2.0)

    assert unit.terminate() == 0, unit.log_tail()

    meta = sidecar(wav)  # complete before the process exited: no repair needed at the next start
    assert meta["end"] is not None and meta["repaired"] is False, meta
    assert wave_seconds(wav) == pytest.approx(meta["duration"], abs=0.01) and meta["duration"] > 1.5


def test_sigkill_mid_recording_is_repaired_at_restart_with_the_audio_up_to_the_kill(
    unit_factory, phone, tmp_path, record_property
) -> None:
    phone("2001", tone_hz=B_HZ)
    unit = unit_factory()
    talking(unit, ok(unit.ctl("dial", "2001"))["row"])
    wav = Path(ok(unit.ctl("record", "start"))["file"])
    time.sleep(4.3)

    killed = time.time()
    os.kill(unit.proc.pid, signal.SIGKILL)
    unit.proc.wait(5)
    hdr = read_header(wav)
    assert hdr is not None and hdr.data_size == 0, "pjmedia's header sizes are 0 until the recorder closes"
    with pytest.raises((wave.Error, EOFError, AssertionError)):
        assert wave_seconds(wav) > 0
    assert sidecar(wav)["end"] is None

    unit.socket.unlink(missing_ok=True)  # left by the killed unit
    unit.start()

    meta = sidecar(wav)
    seconds = wave_seconds(wav)
    lost = (killed - meta["start_epoch"]) - seconds
    record_property("audio_lost_on_sigkill_s", round(lost, 3))
    print(f"audio lost on SIGKILL: {lost:.3f} s")
    assert -0.1 < lost <= 1.0, f"{lost:.2f} s of audio lost"
    assert meta["repaired"] is True and meta["end"] is not None and meta["duration"] == pytest.approx(seconds, abs=0.01)
    assert meta["end_epoch"] == pytest.approx(wav.stat().st_mtime, abs=0.01)
    assert "repaired recording" in unit.log_path.read_text()
    assert levels(wav, seconds - 0.6, seconds, tmp_path)[B_HZ] > HEARD_DB, "the audio runs up to the kill"
    listed = ok(unit.ctl("recordings"))["recordings"]
    assert [(r["file"], r["repaired"]) for r in listed] == [(str(wav), True)]


@pytest.fixture
def small_disk_unit(unit_factory):
    """A unit whose recordings directory is a 2 MB tmpfs (min_free_mb = 1); unmounted afterwards."""
    unit = unit_factory(start=False)
    directory = unit.workdir / "recordings"
    directory.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0750", "kiosk-test", str(directory)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    unit.profile_text = unit.profile_text.replace("[recording]\n", "[recording]\nmin_free_mb = 1\n", 1)
    try:
        unit.start()
        yield unit, directory
    finally:
        unit.stop()  # nothing of ours may keep the mount busy
        if subprocess.run(["umount", str(directory)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def test_disk_filling_mid_call_stops_the_recording_cleanly_with_an_alert(small_disk_unit, phone, tmp_path) -> None:
    unit, directory = small_disk_unit
    phone("2001", tone_hz=B_HZ)
    row = ok(unit.ctl("dial", "2001"))["row"]
    talking(unit, row)
    events = EventLog(unit)
    try:
        wav = Path(ok(unit.ctl("record", "start"))["file"])
        time.sleep(2.0)
        with open(directory / "filler", "wb") as f:  # something else takes the disk
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        full = time.time()
        alert = events.wait("alert", lambda e: "recording of call" in e["message"], timeout=15)
        assert "MB free" in alert["message"] and "the call goes on" in alert["message"]
        unit.wait_for(lambda calls: calls and calls[0]["recording"] is False, 10)
    finally:
        events.stop()
    time.sleep(2.0)
    calls = unit.calls()
    assert [(c["id"], c["state"]) for c in calls] == [(row, "talking")], "the call goes on"

    meta = completed(wav)  # the sidecar's final update fits in the blocks it reserved
    assert "MB free" in meta["stopped"]
    seconds = wave_seconds(wav)
    assert 1.5 < seconds < time.time() - meta["start_epoch"], seconds
    assert seconds == pytest.approx(full - meta["start_epoch"], abs=1.0)
    assert levels(wav, 0.3, seconds - 0.2, tmp_path)[B_HZ] > HEARD_DB
    refused = unit.ctl("record", "start")
    assert refused.rc == 1 and "MB free" in refused.err
    ok(unit.ctl("hangup"))
