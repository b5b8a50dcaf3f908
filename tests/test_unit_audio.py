"""The local audio bridge end to end: the unit process, a real paced sound device, real far ends.

The device is JACK's dummy driver at 16 kHz with 20 ms periods (DESIGN.md: the
only paced, glitch-free device a machine without a sound card has); the unit
opens it through sounddevice like a USB headset, under the JACK client name
"kiosk". The test process itself never imports sounddevice: it listens to and
talks into the unit's JACK ports with separate JACK clients (`jack_rec`, and a
tiny tone player run as its own process), so which JACK server PortAudio picked
in this process can never matter.

Proofs are tones and FFTs: a far end's tone must come out of the unit's
playback port, and a tone fed into the unit's capture port must be what the
far end hears. A missing device and a device that vanishes mid-call (the JACK
server killed) must leave the call up, raise an alert, and be reopened when
the device comes back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from kiosk.control import COMMANDS
from kiosk.lab.proc import LabProcess, wait_until
from kiosk.lab.tones import read_wav, tones_in
from kiosk.lab.unit import Unit

from .conftest import needs_lab

HAVE_JACK = all(shutil.which(b) for b in ("jackd", "jack_lsp", "jack_connect", "jack_rec", "jack_wait"))
needs_jack = pytest.mark.skipif(not HAVE_JACK, reason="JACK missing: apt-get install jackd2 libportaudio2")

#: The unit's JACK client (hw.audio.CLIENT_NAME) and the device it opens (JACK's "system").
UNIT_OUT, UNIT_IN = "kiosk:out_0", "kiosk:in_0"


class JackServer:
    """jackd with the dummy driver under a unique name, started and stopped by PID."""

    def __init__(self, workdir: Path, name: str | None = None, rate: int = 16000) -> None:
        self.name = name or f"kiosk-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.rate = rate
        self.workdir = workdir
        self.proc: LabProcess | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs in its environment (before it imports sounddevice)."""
        return {"JACK_DEFAULT_SERVER": self.name, "JACK_NO_START_SERVER": "1"}

    def start(self) -> "JackServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = ["jackd", "-n", self.name, "--no-realtime", "-d", "dummy", "-r", str(self.rate), "-p", "320"]
        self.proc = LabProcess(f"jackd-{self.name}", argv, self.workdir / f"jackd-{self.name}.log", self.workdir)
        self.proc.start(env={**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"})
        done = self.run("jack_wait", "-w", "-t", "10", timeout=15)
        if done.returncode != 0 or not self.proc.running():
            log = self.proc.log_tail()
            self.stop()
            raise RuntimeError(f"jackd {self.name} did not start:\n{log}")
        return self

    def stop(self) -> None:
        """Stop the server (its PortAudio clients should have gone first)."""
        if self.proc is not None:
            self.proc.stop(grace=3.0)
            self.proc = None

    def kill(self) -> None:
        """The device vanishes: SIGKILL the server under its clients."""
        if self.proc is not None and self.proc.popen is not None:
            self.proc.popen.kill()
            self.proc.popen.wait(5)
            self.proc.stop()
            self.proc = None

    def run(self, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.env})

    def ports(self) -> list[str]:
        return self.run("jack_lsp").stdout.split()

    def connect(self, src: str, dst: str) -> None:
        done = self.run("jack_connect", src, dst)
        assert done.returncode == 0, f"jack_connect {src} {dst}: {done.stderr}"

    def record(self, port: str, path: Path, seconds: float) -> Path:
        """What `port` carries for `seconds`, as a WAV (jack_rec connects itself)."""
        done = self.run("jack_rec", "-f", str(path), "-d", str(seconds), "-b", "16", port,
                        timeout=seconds + 15)
        assert done.returncode == 0 and path.exists(), f"jack_rec failed: {done.stdout} {done.stderr}"
        return path


# A JACK client in its own process that plays a sine tone on "tone:out_0".
TONE_PLAYER = r"""
import ctypes, ctypes.util, sys, time
import numpy as np
NAME = b"tone"
ctypes.CDLL(ctypes.util.find_library("portaudio") or "libportaudio.so.2").PaJack_SetClientName(ctypes.c_char_p(NAME))
import sounddevice as sd
hz, rate = float(sys.argv[1]), int(sys.argv[2])
phase = [0]
def cb(out, frames, t, status):
    n = np.arange(phase[0], phase[0] + frames)
    out[:, 0] = (0.3 * 32767 * np.sin(2 * np.pi * hz * n / rate)).astype(np.int16)
    phase[0] += frames
with sd.OutputStream(samplerate=rate, blocksize=320, channels=1, dtype="int16", callback=cb):
    print("playing", flush=True)
    while True:
        time.sleep(1)
"""


class TonePlayer:
    """`tone:out_0` playing `hz` on the JACK server, as its own process."""

    def __init__(self, jack: JackServer, hz: float, workdir: Path) -> None:
        self.proc = LabProcess("tone", [sys.executable, "-c", TONE_PLAYER, str(hz), str(jack.rate)],
                               workdir / f"tone-{hz:g}.log", workdir)
        self.jack = jack

    def __enter__(self) -> "TonePlayer":
        self.proc.start(env={**os.environ, **self.jack.env})
        assert wait_until(lambda: "tone:out_0" in self.jack.ports(), 10), self.proc.log_tail()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stop(grace=2.0)  # a PortAudio client: gone before the server is


@pytest.fixture(scope="session")
def jack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JackServer]:
    """One paced 16 kHz JACK dummy server for the session, under a name no other run uses."""
    if not HAVE_JACK:
        pytest.skip("JACK missing: apt-get install jackd2 libportaudio2")
    server = JackServer(tmp_path_factory.mktemp("jack")).start()
    yield server
    server.stop()


def headset_unit(unit_factory, jack_env: dict[str, str], device: str = "system") -> Unit:
    """A unit whose profile names a headset (`device`) on the given JACK server, started."""
    unit = unit_factory(start=False)
    unit.profile_text = unit.profile_text.replace('device = "none"', f'device = "{device}"')
    assert f'device = "{device}"' in unit.profile_text
    unit.env.update(jack_env)
    return unit.start()


def talking_to(unit: Unit, number: str) -> int:
    out = unit.ctl("dial", number)
    assert out.rc == 0, out.err
    row = out.out["row"]
    unit.wait_for(lambda calls: any(c["id"] == row and c["state"] == "talking" for c in calls))
    return row


def hang_up(unit: Unit) -> None:
    assert unit.ctl("hangup").rc == 0
    unit.wait_for(lambda calls: not calls)


def lab_test(fn):  # type: ignore[no-untyped-def]
    """Real processes: the lab's SIP parts and a JACK server (the fast desk tests below need neither)."""
    for mark in (needs_lab, needs_jack, pytest.mark.lab):
        fn = mark(fn)
    return fn


@lab_test
def test_far_end_tone_comes_out_of_the_headset_port(unit_factory, phone, jack, tmp_path) -> None:
    phone("2001", tone_hz=700)
    unit = headset_unit(unit_factory, jack.env)
    assert wait_until(lambda: UNIT_OUT in jack.ports(), 10), unit.log_tail()
    talking_to(unit, "2001")
    time.sleep(0.5)  # past the call's first frames and the ring's start-up trim
    heard = jack.record(UNIT_OUT, tmp_path / "headset-out.wav", 2)
    levels = tones_in(heard, [700, 440, 1000])
    assert levels[700] > -3, levels  # the far end's tone is what the headset plays
    assert levels[440] < -30 and levels[1000] < -30, levels
    hang_up(unit)


@lab_test
def test_tone_into_the_headset_microphone_reaches_the_far_end(unit_factory, phone, jack, tmp_path) -> None:
    far = phone("2001", tone_hz=440)
    unit = headset_unit(unit_factory, jack.env)
    assert wait_until(lambda: UNIT_IN in jack.ports(), 10), unit.log_tail()
    with TonePlayer(jack, 1000, tmp_path):
        jack.connect("tone:out_0", UNIT_IN)
        talking_to(unit, "2001")
        time.sleep(3)
        hang_up(unit)
    assert wait_until(lambda: far.recordings(), 10)
    levels = tones_in(far.recordings()[-1], [1000, 440, 700], skip=0.5)
    assert levels[1000] > -3, levels  # what the operator "said" is what the far end heard
    assert levels[440] < -30, levels  # and the far end's own tone did not come back


@lab_test
def test_missing_then_vanishing_headset_keeps_the_call_and_comes_back(unit_factory, phone, tmp_path) -> None:
    phone("2001", tone_hz=700)
    jack = JackServer(tmp_path / "jack")  # not started: the headset is not plugged in
    unit = headset_unit(unit_factory, jack.env)
    try:
        assert wait_until(lambda: "not found" in unit.log_tail(200) and "alert:" in unit.log_tail(200), 10), \
            unit.log_tail()
        talking_to(unit, "2001")  # calls work on null audio meanwhile

        jack.start()  # plugged in mid-call: reopened within the retry period
        assert wait_until(lambda: UNIT_OUT in jack.ports(), 10), unit.log_tail()
        time.sleep(0.5)
        levels = tones_in(jack.record(UNIT_OUT, tmp_path / "back.wav", 1.5), [700, 440])
        assert levels[700] > -3, levels
        assert "is back" in unit.log_tail(200)

        jack.kill()  # unplugged mid-call
        assert wait_until(lambda: "stopped" in unit.log_tail(200), 10), unit.log_tail()
        time.sleep(1)
        assert unit.proc.running(), unit.log_tail()
        calls = unit.calls()
        assert len(calls) == 1 and calls[0]["state"] == "talking", calls

        jack.start()  # and back again
        assert wait_until(lambda: UNIT_OUT in jack.ports(), 15), unit.log_tail()
        time.sleep(0.5)
        levels = tones_in(jack.record(UNIT_OUT, tmp_path / "again.wav", 1.5), [700, 440])
        assert levels[700] > -3, levels
        hang_up(unit)
        unit.stop()  # PortAudio client first, then the server
    finally:
        jack.stop()


@lab_test
def test_profile_without_headset_keeps_null_audio(unit_factory) -> None:
    unit = unit_factory()  # the lab profile says device = "none"
    assert "local audio" not in unit.log_tail(200)
    assert "PortAudio" not in unit.log_tail(200)


@lab_test
@pytest.mark.skipif("mute" not in COMMANDS, reason="the control socket has no mute command yet")
def test_muted_microphone_sends_silence_to_the_far_end(unit_factory, phone, jack, tmp_path) -> None:
    far = phone("2001", tone_hz=440)
    unit = headset_unit(unit_factory, jack.env)
    assert wait_until(lambda: UNIT_IN in jack.ports(), 10), unit.log_tail()
    with TonePlayer(jack, 1000, tmp_path):
        jack.connect("tone:out_0", UNIT_IN)
        muted = unit.request("mute", state="on")
        assert muted.get("ok") and muted["data"] == {"muted": True}, muted
        talking_to(unit, "2001")
        time.sleep(2)
        hang_up(unit)
    assert wait_until(lambda: far.recordings(), 10)
    heard, _ = read_wav(far.recordings()[-1])
    rms_db = 20 * np.log10(np.sqrt(np.mean(heard ** 2)) + 1e-12)
    assert heard.size and rms_db < -60, rms_db  # silence (about -88 dBFS); the tone is about -19 dBFS


# --- microphone mute through the desk (fast: a fake agent) -------------------------


def test_desk_mute_toggles_and_tells_the_agent() -> None:
    from kiosk import events as ev
    from kiosk.desk import Desk

    from .fakes import FakeAgent, make_profile

    class MutingAgent(FakeAgent):
        def __init__(self) -> None:
            super().__init__()
            self.mutes: list[bool] = []

        def mute(self, on: bool) -> Future[None]:
            self.mutes.append(on)
            fut: Future[None] = Future()
            fut.set_result(None)
            return fut

    agent = MutingAgent()
    desk = Desk(make_profile(), agent)
    desk.start()
    told: list[bool] = []
    desk.subscribe(lambda e: told.append(e.muted) if isinstance(e, ev.MuteChanged) else None)
    assert desk.mute("on").wait().data == {"muted": True}
    assert desk.snapshot()["muted"] is True
    assert desk.mute("toggle").wait().data == {"muted": False}
    assert desk.mute("toggle").wait().data == {"muted": True}
    assert desk.mute("off").wait().data == {"muted": False}
    assert agent.mutes == [True, False, True, False]
    assert told == [True, False, True, False]  # every front-end hears of it, whoever pressed
    refused = desk.mute("loud")
    assert not refused.ok and refused.code == "bad_argument" and "on, off, toggle" in refused.reason


def test_desk_mute_without_a_headset_says_why() -> None:
    from kiosk.desk import AgentError, Desk

    from .fakes import FakeAgent, make_profile

    class NoHeadset(FakeAgent):
        def mute(self, on: bool) -> Future[None]:
            fut: Future[None] = Future()
            fut.set_exception(AgentError("this unit has no headset configured ([audio] device)"))
            return fut

    desk = Desk(make_profile(), NoHeadset())
    desk.start()
    out = desk.mute("on").wait()
    assert not out.ok and "no headset" in out.reason
    assert desk.muted is False
