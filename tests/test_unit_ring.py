"""The ring and the call-waiting tone, as the operator's headset hears them (JACK dummy device).

The unit runs as its own process with its headset on JACK's paced dummy
driver (as tests/test_unit_audio.py does). A pjsua2 far end calls it; what
the unit's JACK playback port carries is recorded by a small JACK client of
the test's own (its own process, STAMPED_RECORDER below) that stamps every
period with the wall clock, so a stretch of audio can be placed against the
moment the control socket reported the answer done:

- while the call rings, the ring pattern's tone pair (440 + 480 Hz) is there;
- from 100 ms after the answer on, it is not (the far end's tone is);
- a second call while the first is in conversation gives the call-waiting
  bursts (425 Hz) in the ear, never the ring.

No timing of the test itself is asserted: the stamps only say which samples
belong before and after the answer.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from kiosk import tones
from kiosk.lab.proc import LabProcess, wait_until
from kiosk.lab.unit import Unit

from .test_unit_audio import UNIT_OUT, JackServer, headset_unit, jack, lab_test  # noqa: F401 (jack: fixture)

RATE = 16000
RING = tones.RING_PATTERNS["standard"][0]  # 440 + 480 Hz, 2 s on
WAIT_HZ = tones.WAITING[0].freq1  # 425 Hz
FAR_HZ = 700

# A JACK client in its own process: records `in_0` for N seconds, with the wall clock of every period.
STAMPED_RECORDER = r"""
import ctypes, ctypes.util, sys, time
import numpy as np
NAME = sys.argv[3].encode()
ctypes.CDLL(ctypes.util.find_library("portaudio") or "libportaudio.so.2").PaJack_SetClientName(ctypes.c_char_p(NAME))
import sounddevice as sd
seconds, prefix = float(sys.argv[1]), sys.argv[2]
rate = 16000
buf = np.zeros(int(seconds * rate) + rate, dtype=np.int16)
stamps = []
pos = [0]
def cb(indata, frames, t, status):
    n = min(frames, len(buf) - pos[0])
    buf[pos[0]:pos[0] + n] = indata[:n, 0]
    stamps.append((time.time(), pos[0]))
    pos[0] += n
with sd.InputStream(samplerate=rate, blocksize=0, channels=1, dtype="int16", callback=cb):
    print("recording", flush=True)
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        time.sleep(0.05)
np.save(prefix + "-pcm.npy", buf[:pos[0]])
np.save(prefix + "-stamps.npy", np.array(stamps, dtype=np.float64))
print("done", flush=True)
"""


class StampedRecording:
    """What a JACK port carried, with a wall-clock time for every sample (from the period stamps)."""

    def __init__(self, jack: JackServer, port: str, seconds: float, workdir: Path, name: str = "ringrec") -> None:
        self.jack, self.port, self.seconds, self.name = jack, port, seconds, name
        self.prefix = str(workdir / name)
        self.proc = LabProcess(name, [sys.executable, "-c", STAMPED_RECORDER, str(seconds), self.prefix, name],
                               workdir / f"{name}.log", workdir)
        self.pcm = np.zeros(0)
        self.times = np.zeros(0)

    def start(self) -> "StampedRecording":
        self.proc.start(env={**__import__("os").environ, **self.jack.env})
        assert wait_until(lambda: f"{self.name}:in_0" in self.jack.ports(), 10), self.proc.log_tail()
        self.jack.connect(self.port, f"{self.name}:in_0")
        return self

    def finish(self) -> "StampedRecording":
        assert wait_until(lambda: not self.proc.running(), self.seconds + 15), self.proc.log_tail()
        self.proc.stop()
        pcm = np.load(self.prefix + "-pcm.npy").astype(np.float64) / 32768.0
        stamps = np.load(self.prefix + "-stamps.npy")
        times = np.zeros(len(pcm))
        for k, (t, start) in enumerate(stamps):
            start = int(start)
            end = int(stamps[k + 1][1]) if k + 1 < len(stamps) else len(pcm)
            # A period's samples were all produced in the period stamped at its callback.
            times[start:end] = t
        self.pcm, self.times = pcm, times
        return self

    def between(self, t0: float, t1: float) -> np.ndarray:
        return self.pcm[(self.times >= t0) & (self.times < t1)]


def level_dbfs(x: np.ndarray, freq: float) -> float:
    """The level of `freq` (+-2 %, at least 8 Hz) in x, in dBFS of a full-scale sine; -150 for nothing."""
    if x.size < 256:
        return -150.0
    x = x - x.mean()
    win = np.hanning(x.size)
    spec = np.abs(np.fft.rfft(x * win)) ** 2
    bins = np.fft.rfftfreq(x.size, 1.0 / RATE)
    bw = max(8.0, 0.02 * freq)
    power = float(spec[(bins >= freq - bw) & (bins <= freq + bw)].sum())
    # A full-scale sine of N samples under a Hann window: its peak bin holds (N/4)**2 and the two beside it
    # (N/8)**2 each, 3 N**2 / 32 in all (the rest of its power is negligible): that is 0 dBFS.
    ref = 3 * x.size ** 2 / 32
    return max(-150.0, 10 * math.log10(power / ref)) if power > 0 else -150.0


def windows_with(x: np.ndarray, freq: float, threshold_db: float, win_s: float = 0.05) -> list[int]:
    """Indices of the `win_s` windows of x in which `freq` stands above threshold_db dBFS."""
    n = int(win_s * RATE)
    return [i for i in range(len(x) // n) if level_dbfs(x[i * n:(i + 1) * n], freq) > threshold_db]


def ringing_row(unit: Unit) -> int:
    calls = unit.wait_for(lambda calls: any(c["direction"] == "in" and c["state"] == "ringing" for c in calls))
    return next(c["id"] for c in calls if c["direction"] == "in" and c["state"] == "ringing")


def answer(unit: Unit, row: int) -> float:
    """Answer the row through the control socket; the wall time its outcome came back (the answer done)."""
    reply = unit.request("answer", row=row)
    done = time.time()
    assert reply.get("ok"), reply
    return done


@lab_test
def test_ring_while_ringing_gone_within_100_ms_of_the_answer(unit_factory, pjpeer, kamailio, jack,
                                                              tmp_path) -> None:
    far = pjpeer("2001", tone_hz=FAR_HZ, answer="auto")
    unit = headset_unit(unit_factory, jack.env)
    assert wait_until(lambda: UNIT_OUT in jack.ports(), 10), unit.log_tail()
    rec = StampedRecording(jack, UNIT_OUT, 4.0, tmp_path).start()
    call = far.dial(f"sip:1001@{kamailio.address}")
    row = ringing_row(unit)
    t_ringing = time.time()
    time.sleep(1.2)  # inside the pattern's first 2 s on-segment
    t_answer = answer(unit, row)
    far.wait_event("state", call=call, state="CONFIRMED")
    rec.finish()
    before = rec.between(t_ringing + 0.2, t_answer - 0.2)
    after = rec.between(t_answer + 0.1, t_answer + 1.5)
    assert before.size > RATE // 2 and after.size > RATE, (before.size, after.size)
    ring_before = [level_dbfs(before, f) for f in (RING.freq1, RING.freq2)]
    ring_after = [level_dbfs(after, f) for f in (RING.freq1, RING.freq2)]
    assert min(ring_before) > -30, (ring_before, unit.log_tail())  # the ring at 70 %: about -21 dBFS a tone
    assert max(ring_after) < -60, (ring_after, unit.log_tail())
    # Not one 50 ms window after answer + 100 ms carries it either.
    assert not windows_with(after, RING.freq1, -45), windows_with(after, RING.freq1, -45)
    assert level_dbfs(after, FAR_HZ) > -20  # the call's audio is what plays now
    assert "tone: ring" in unit.log_tail(300) and "tone: off" in unit.log_tail(300)


@lab_test
def test_second_call_while_talking_gives_the_waiting_tone_not_the_ring(unit_factory, pjpeer, kamailio, jack,
                                                                       tmp_path) -> None:
    first = pjpeer("2001", tone_hz=FAR_HZ, answer="auto")
    second = pjpeer("2002", tone_hz=0, answer="auto")
    unit = headset_unit(unit_factory, jack.env)
    assert wait_until(lambda: UNIT_OUT in jack.ports(), 10), unit.log_tail()
    c1 = first.dial(f"sip:1001@{kamailio.address}")
    answer(unit, ringing_row(unit))
    first.wait_event("state", call=c1, state="CONFIRMED")
    time.sleep(0.3)
    rec = StampedRecording(jack, UNIT_OUT, 3.0, tmp_path).start()
    t0 = time.time()
    second.dial(f"sip:1001@{kamailio.address}")
    unit.wait_for(lambda calls: len(calls) == 2 and any(c["state"] == "ringing" for c in calls))
    rec.finish()
    heard = rec.between(t0, t0 + 3.0)
    bursts = windows_with(heard, WAIT_HZ, -40)
    assert bursts, (level_dbfs(heard, WAIT_HZ), unit.log_tail())
    # Two bursts of 200 ms, 200 ms apart: about 8 windows of 50 ms, in two runs.
    runs = sum(1 for i, w in enumerate(bursts) if i == 0 or bursts[i - 1] != w - 1)
    assert runs == 2 and 5 <= len(bursts) <= 10, bursts
    # Never the ring: its 480 Hz (440 Hz sits too close to the bursts' 425 Hz, whose edges spread over it).
    assert level_dbfs(heard, RING.freq2) < -60, [level_dbfs(heard, f) for f in (RING.freq1, RING.freq2)]
    assert level_dbfs(heard, FAR_HZ) > -20  # and the customer is still heard
    assert "tone: waiting" in unit.log_tail(300)


@lab_test
def test_ring_device_rings_alone_and_never_carries_the_call(unit_factory, pjpeer, kamailio, jack,
                                                            tmp_path) -> None:
    """`[audio] ring_device` with no headset: the ring plays on the ring device (its own bridge port, a
    JACK client of its own), the call's audio never does, and the ring stops there when answered."""
    far = pjpeer("2001", tone_hz=FAR_HZ, answer="auto")
    unit = unit_factory(start=False)
    assert 'device = "none"' in unit.profile_text
    unit.profile_text = unit.profile_text.replace('device = "none"', 'device = "none"\nring_device = "system"')
    unit.env.update(jack.env)
    unit.start()
    assert wait_until(lambda: UNIT_OUT in jack.ports(), 10), unit.log_tail()  # opened at start, not at the ring
    rec = StampedRecording(jack, UNIT_OUT, 4.0, tmp_path).start()
    call = far.dial(f"sip:1001@{kamailio.address}")
    row = ringing_row(unit)
    t_ringing = time.time()
    time.sleep(1.2)
    t_answer = answer(unit, row)
    far.wait_event("state", call=call, state="CONFIRMED")
    rec.finish()
    before = rec.between(t_ringing + 0.2, t_answer - 0.2)
    after = rec.between(t_answer + 0.1, t_answer + 1.5)
    assert min(level_dbfs(before, f) for f in (RING.freq1, RING.freq2)) > -30, unit.log_tail()
    assert max(level_dbfs(after, f) for f in (RING.freq1, RING.freq2)) < -60
    assert level_dbfs(after, FAR_HZ) < -60  # the customer is not on the ringer's speaker
    assert "ring device: port created" in unit.log_tail(300)


@lab_test
def test_ringback_while_the_far_end_rings_then_its_audio(unit_factory, pjpeer, jack, tmp_path) -> None:
    """An outgoing call that rings at the far end without early media: 425 Hz 1 s on / 4 s off in the ear,
    gone once the far end answers."""
    far = pjpeer("2001", tone_hz=FAR_HZ, answer="ring")
    unit = headset_unit(unit_factory, jack.env)
    assert wait_until(lambda: UNIT_OUT in jack.ports(), 10), unit.log_tail()
    rec = StampedRecording(jack, UNIT_OUT, 3.0, tmp_path).start()
    out = unit.ctl("dial", "2001")
    assert out.rc == 0, out.err
    far.wait_event("state", state="EARLY")
    t_ringing = time.time()
    time.sleep(1.4)
    far.accept()
    unit.wait_for(lambda calls: any(c["state"] == "talking" for c in calls))
    t_talking = time.time()
    rec.finish()
    first_second = rec.between(t_ringing + 0.1, t_ringing + 0.8)  # inside the 1 s on-segment
    pause = rec.between(t_ringing + 1.1, t_ringing + 1.35)  # its pause
    after = rec.between(t_talking + 0.1, t_talking + 1.0)
    back = tones.RINGBACK[0].freq1
    assert level_dbfs(first_second, back) > -30, unit.log_tail()
    assert level_dbfs(pause, back) < -60
    assert level_dbfs(after, back) < -60 and level_dbfs(after, FAR_HZ) > -20
    assert "tone: ringback" in unit.log_tail(300)


@lab_test
def test_auto_answer_beeps_and_never_rings(unit_factory, pjpeer, kamailio, jack, tmp_path) -> None:
    """A line with auto_answer: no ring, a 1 kHz beep in the ear, then the call."""
    far = pjpeer("2001", tone_hz=FAR_HZ, answer="auto")
    unit = unit_factory(start=False)
    unit.profile_text = unit.profile_text.replace(
        "[[line]]\n", "[[line]]\nauto_answer = true\nauto_answer_delay_ms = 500\n", 1)
    unit.profile_text = unit.profile_text.replace('device = "none"', 'device = "system"')
    unit.env.update(jack.env)
    unit.start()
    assert wait_until(lambda: UNIT_OUT in jack.ports(), 10), unit.log_tail()
    rec = StampedRecording(jack, UNIT_OUT, 3.0, tmp_path).start()
    t0 = time.time()
    call = far.dial(f"sip:1001@{kamailio.address}")
    far.wait_event("state", call=call, state="CONFIRMED")
    rec.finish()
    heard = rec.between(t0, t0 + 3.0)
    beep = tones.BEEP[0]
    assert windows_with(heard, beep.freq1, -40), (level_dbfs(heard, beep.freq1), unit.log_tail())
    assert len(windows_with(heard, beep.freq1, -40)) <= 5  # 150 ms: at most 4 windows of 50 ms (+1 edge)
    assert level_dbfs(heard, RING.freq2) < -60  # it never rang
