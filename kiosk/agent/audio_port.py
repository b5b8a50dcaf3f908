"""The pjsua2 side of the local audio bridge: an AudioMediaPort that reads and writes hw/audio.py's rings.

The wheel has no sound devices (DESIGN.md), so the operator's headset joins
the conference bridge as this port: `Media.local_capture()` and
`local_playback()` both become it. pjmedia's clock thread calls
`onFrameRequested` (give it what the operator says) and `onFrameReceived`
(here is what the operator should hear) 50 times a second; both must return
in microseconds and never block, so they only move one 20 ms frame between the
SWIG frame and a ring.

Moving frame bytes through SWIG is the cost that matters: `bytes(frame.buf)`
copies byte by byte (~0.5 ms, measured) and `pj.ByteVector(data)` ~14 us.
`VectorIO` instead reads and writes the `std::vector`'s memory through its
begin/end pointers (`int(vec.this)` is the vector's address) — a few us — and
is trusted only after it matched `bytes()` once at start-up, on a vector we
made and on the first real frame; otherwise it falls back to the slow, safe
way and says so in the log.

`KIOSK_AUDIO_STATS=<file>` makes the bridge keep a JSON copy of its counters
in that file (every 0.25 s); `KIOSK_AUDIO_TAP=<prefix>` records, for the bench,
what crossed the port in each direction, aligned on pjmedia's clock ticks, into
`<prefix>-ear.wav` / `<prefix>-mouth.wav` at shutdown.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
import wave
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pjsua2 as pj

from hw.audio import FRAME, RATE, LocalAudio

from .. import events as ev

if TYPE_CHECKING:
    from .thread import PjAgent

log = logging.getLogger("kiosk.agent.audio")

FRAME_BYTES = FRAME * 2
_Ptrs = ctypes.c_void_p * 2  # libstdc++'s std::vector<unsigned char>: begin, end (, capacity)


class VectorIO:
    """Fast reads and writes of a pjsua2 `ByteVector`, checked against SWIG's slow copy."""

    def __init__(self) -> None:
        self.fast = self._probe()
        self._checked_frame = False
        if not self.fast:
            log.warning("local audio: fast frame access unavailable (unexpected std::vector layout); "
                        "using bytes(), which costs ~0.5 ms a frame")

    @staticmethod
    def _span(vec: "pj.ByteVector") -> tuple[int, int]:
        begin, end = _Ptrs.from_address(int(vec.this))
        begin, end = begin or 0, end or 0
        return begin, end - begin

    def _probe(self) -> bool:
        """Does the pointer layout hold on a vector whose bytes we know? (Never touches a real frame.)"""
        try:
            pattern = bytes(range(256)) * 2 + bytes(range(128))
            vec = pj.ByteVector(pattern)
            begin, size = self._span(vec)
            if begin == 0 or size != len(pattern):
                return False
            if ctypes.string_at(begin, size) != pattern:
                return False
            out = pj.ByteVector(bytes(FRAME_BYTES))
            obegin, osize = self._span(out)
            if osize != FRAME_BYTES:
                return False
            ctypes.memmove(obegin, pattern, FRAME_BYTES)
            return bytes(out) == pattern[:FRAME_BYTES]
        except Exception:
            return False

    def read(self, frame: "pj.MediaFrame") -> bytes:
        """The frame's bytes."""
        if not self.fast:
            return bytes(frame.buf)
        buf = frame.buf
        begin, size = self._span(buf)
        if begin == 0 or not 0 < size <= 1 << 16:
            return bytes(buf)
        data = ctypes.string_at(begin, size)
        if not self._checked_frame:
            self._checked_frame = True
            if data != bytes(buf):
                self.fast = False
                log.warning("local audio: fast frame read disagreed with bytes(); using bytes()")
                return bytes(buf)
        return data


class BridgePort(pj.AudioMediaPort):
    """The operator's headset as a conference-bridge port (16 kHz mono, 20 ms frames)."""

    def __init__(self, audio: LocalAudio, tap: "FrameTap | None" = None) -> None:
        super().__init__()
        self.audio = audio
        self.tap = tap
        self.io = VectorIO()
        self.tick = 0
        self._out = np.zeros(FRAME, dtype=np.int16)
        self._silence = np.zeros(FRAME, dtype=np.int16)
        # One vector reused for every outgoing frame: assigning it to frame.buf is a C++
        # vector copy (a memcpy), while building a ByteVector from bytes goes through SWIG per byte.
        self._vec = pj.ByteVector(bytes(FRAME_BYTES))
        self._vec_begin = self.io._span(self._vec)[0] if self.io.fast else 0
        self._failed = False

    def create(self, name: str = "kiosk-headset") -> None:
        """Register the port with the conference bridge (after libStart)."""
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, RATE, 1, FRAME * 1_000_000 // RATE, 16)
        self.createPort(name, fmt)

    def _torn_down(self) -> bool:
        """Whether Python has already emptied this object while its C++ side still receives frames.

        Dropping the port frees the Python object's attributes first and the C++ port (which leaves
        the conference bridge) after: a media-clock tick in between calls in here on an empty
        object. Seen once at a unit's stop, as two tracebacks in its log."""
        return "_failed" not in self.__dict__

    def onFrameRequested(self, frame: "pj.MediaFrame") -> None:  # noqa: N802 - pjsua2 callback
        """pjmedia wants the next 20 ms of what the operator says."""
        if self._torn_down():
            return
        t0 = time.thread_time()
        try:
            self.tick += 1
            out = self._out
            self.audio.take_capture(out)
            if self._vec_begin:
                ctypes.memmove(self._vec_begin, out.ctypes.data, FRAME_BYTES)
                frame.buf = self._vec
            else:
                frame.buf = pj.ByteVector(out.tobytes())
            frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
            frame.size = FRAME_BYTES
            if self.tap is not None:
                self.tap.mouth(self.tick, out)
        except Exception:
            self._complain()
        self.audio.port_cpu_s += time.thread_time() - t0

    def onFrameReceived(self, frame: "pj.MediaFrame") -> None:  # noqa: N802 - pjsua2 callback
        """pjmedia hands over 20 ms of what the operator should hear."""
        if self._torn_down():
            return
        t0 = time.thread_time()
        try:
            if frame.type != pj.PJMEDIA_FRAME_TYPE_AUDIO or frame.size == 0:
                samples = self._silence  # a NONE frame still takes its 20 ms of the device's time
            else:
                samples = np.frombuffer(self.io.read(frame), dtype=np.int16)
            self.audio.feed_playback(samples)
            if self.tap is not None:
                self.tap.ear(self.tick, samples)
        except Exception:
            self._complain()
        self.audio.port_cpu_s += time.thread_time() - t0

    def _complain(self) -> None:
        # An exception escaping a SWIG director is printed on every frame: log the first only.
        if not self.__dict__.get("_failed", True):
            self._failed = True
            log.exception("local audio port failed (further failures not logged)")


class FrameTap:
    """For the bench: both directions of the port on one timeline of pjmedia ticks.

    In each tick the bridge asks the port for a frame before it gives one
    (measured), so a frame received in tick k and one requested in tick k sit
    at the same offset; a click's round trip is then exact to the sample.
    """

    def __init__(self, prefix: Path, seconds: float = 120.0) -> None:
        self.prefix = prefix
        self._ear = np.zeros(int(seconds * RATE), dtype=np.int16)
        self._mouth = np.zeros_like(self._ear)

    @classmethod
    def from_env(cls) -> "FrameTap | None":
        prefix = os.environ.get("KIOSK_AUDIO_TAP")
        if not prefix:
            return None
        return cls(Path(prefix), float(os.environ.get("KIOSK_AUDIO_TAP_SECONDS", "120")))

    def ear(self, tick: int, samples: np.ndarray) -> None:
        start = tick * FRAME
        if start + len(samples) <= len(self._ear):
            self._ear[start:start + len(samples)] = samples

    def mouth(self, tick: int, samples: np.ndarray) -> None:
        start = tick * FRAME
        if start + len(samples) <= len(self._mouth):
            self._mouth[start:start + len(samples)] = samples

    def save(self) -> None:
        for name, data in (("ear", self._ear), ("mouth", self._mouth)):
            with wave.open(f"{self.prefix}-{name}.wav", "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes(data.tobytes())


class LocalBridge:
    """The headset bridge of one agent: the device (hw.audio) and its port, started and released together.

    `ring=True`: the bridge of `[audio] ring_device`, a second device that only plays the ring
    (kiosk/agent/tonegen.py connects the ring generator to its port); it never becomes the
    local audio, and what its microphone (if any) captures goes nowhere.
    """

    def __init__(self, agent: "PjAgent", device: str | int, ring: bool = False) -> None:
        self.agent = agent
        self.ring = ring
        stats = None if ring else os.environ.get("KIOSK_AUDIO_STATS")
        self.audio = LocalAudio(device, alert=self._alert, stats_path=Path(stats) if stats else None)
        self.tap = None if ring else FrameTap.from_env()
        self.port: BridgePort | None = None

    def start(self) -> None:
        """Create the port (agent thread, after libStart), make it the local audio, open the device."""
        assert self.agent.media is not None
        port = BridgePort(self.audio, self.tap)
        port.create("kiosk-ring" if self.ring else "kiosk-headset")
        self.port = port
        if not self.ring:
            self.agent.media.set_local_port(port)
        log.info("%s: port created (fast frame access: %s)", "ring device" if self.ring else "local audio",
                 port.io.fast)
        self.audio.start()

    @property
    def muted(self) -> bool:
        return self.audio.muted

    @muted.setter
    def muted(self, value: bool) -> None:
        self.audio.muted = value

    def close(self) -> None:
        """Stop the device, then drop the port: before libDestroy (a live port then crashes the exit)."""
        self.audio.stop()
        s = self.audio.stats()
        log.info("%s closed: playback %s; capture %s; device callbacks %d, cpu %.2f s + port %.2f s",
                 "ring device" if self.ring else "local audio", s.playback, s.capture, s.callbacks, s.cpu_s, s.port_cpu_s)
        if self.tap is not None:
            try:
                self.tap.save()
            except OSError as exc:
                log.warning("audio tap not saved: %s", exc)
        if self.agent.media is not None and not self.ring:
            self.agent.media.set_local_port(None)
        self.port = None

    def _alert(self, message: str, code: str = "alert", params: dict[str, Any] | None = None) -> None:
        """From the device's supervisor thread to the desk, through the agent thread."""
        self.agent.submit(self.agent.emit, ev.Alert(message, code, params or {"message": message}))


def start_local_audio(agent: "PjAgent", device: str | int) -> LocalBridge | None:
    """The profile's headset as the local audio; None (null audio, with an alert) if even that fails."""
    bridge = LocalBridge(agent, device)
    try:
        bridge.start()
    except Exception as exc:  # a broken bridge must never stop the unit: calls go on with null audio
        log.exception("local audio bridge failed to start")
        if agent.media is not None:
            agent.media.set_local_port(None)
        bridge.port = None
        agent.emit(ev.Alert(f"Local audio is off: {exc}", "audio_off", {"error": str(exc)}))
        return None
    return bridge


def start_ring_audio(agent: "PjAgent", device: str | int) -> LocalBridge | None:
    """`[audio] ring_device` as a playback-only bridge; None (ring in the headset, with an alert) if it fails."""
    bridge = LocalBridge(agent, device, ring=True)
    try:
        bridge.start()
    except Exception as exc:  # the ring then plays in the headset: a call is never lost to a ringer
        log.exception("ring device bridge failed to start")
        bridge.port = None
        agent.emit(ev.Alert(f"The ring device is off: {exc}", "audio_off", {"error": str(exc)}))
        return None
    return bridge
