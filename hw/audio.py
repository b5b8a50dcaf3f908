"""The unit's handset/headset: a sounddevice stream and the two ring buffers it shares with pjsua2.

The pjsua2 wheel has no sound devices (DESIGN.md), so local audio reaches the
conference bridge through a Python `AudioMediaPort` (kiosk/agent/audio_port.py)
ticking on pjmedia's clock, while the sound card ticks on its own crystal. The
two meet here, in one ring per direction: `playback` (pjsua2 writes, the device
callback reads) and `capture` (the device writes, pjsua2 reads). Each ring has
exactly one writer and one reader and no lock: each side only ever advances its
own counter, so neither clock can block the other. The ring's rules are the
ones a spike measured to work (DESIGN.md): prefill to 2 frames, pad an underrun
with silence and prefill again, drop the newest samples when full, drop the
oldest down to the target above 100 ms, and every 2 s take out (or put in) a
frame when the level stayed a frame off target, which absorbs +-1000 ppm of
clock drift with one 20 ms correction every ~20 s.

The stream itself runs in a small child process (`python -m hw.audio --serve`)
and the rings live in a shared memory map, for one measured reason: when the
device dies under a PortAudio client (a JACK server killed; an unplugged
headset is the same story for the unit), PortAudio in that process is wedged
for good — stop, abort, close and Pa_Terminate all hang, and the exit handler
then aborts on an assertion. A wedged child is simply killed and a fresh one
started, so `LocalAudio` can keep the calls on silence, raise one alert, retry
every few seconds and reopen the device when it is back. The child also keeps
the device callback off the unit's GIL (DESIGN.md: the GIL is the audio
clock's enemy). Nothing here imports pjsua2, and sounddevice is imported only
in the child.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import logging
import mmap
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np

log = logging.getLogger("kiosk.hw.audio")

RATE = 16000
"""pjmedia's clock rate for the bridge (Hz)."""
FRAME = 320
"""Samples per 20 ms frame at RATE: pjmedia's frame and the stream's block size."""
TARGET = 2 * FRAME
"""Prefill level: 40 ms (one frame of headroom against either side's jitter)."""
LIMIT = 5 * FRAME
"""Hard limit (100 ms): above it the reader drops the oldest samples down to TARGET."""
CAPACITY = 10 * FRAME
"""Ring size (200 ms): a writer facing a stalled reader drops its newest samples here."""
WINDOW = 100
"""Reads per drift check: 100 frames = 2 s."""
RETRY_S = 3.0
"""Seconds between attempts to open a missing device."""
STALL_S = 1.0
"""A device that has not called back for this long counts as gone."""
IDLE_S = 0.1
"""pjsua2's side quiet for this long (no call): the device side stops filling or draining its ring.

Without it a ring whose other side is idle would count an overrun on every
device callback between calls and a trim at every call start: noise that
would hide real glitches in the counters.
"""
LIVE_NS = 200_000_000
"""No device callback for 200 ms: the port stops feeding the device's ring (10 periods; it has gone)."""
CLIENT_NAME = b"kiosk"
"""The unit's JACK client name (PortAudio's default, "PortAudio", says nothing in jack_lsp)."""


# --- the ring ------------------------------------------------------------------

# Slots of a ring's int64 state array. W and the writer's counters are written by
# the writer only; everything else by the reader only. Keeping all of it in one
# array lets the two sides live in different processes (a shared map) and lets
# either process read the counters.
(W, R, OVERRUNS, DROPPED_NEW, UNDERRUNS, TRIMS, PADS, DROPPED_OLD, PADDED, LEVEL_SUM, LEVEL_N,
 PENDING_PAD, PRIMING, WIN_MIN, WIN_MAX, WIN_READS) = range(16)
RING_SLOTS = 16


@dataclass
class RingStats:
    """Counters of one ring, for logs, stats and the bench."""

    underruns: int = 0  # reads that found less than a frame (padded with silence)
    overruns: int = 0  # writes that found the ring full (newest samples dropped)
    trims: int = 0  # times the reader dropped the oldest samples (hard limit or drift)
    pads: int = 0  # times the reader inserted a frame of silence (drift: reader faster)
    dropped: int = 0  # samples lost to overruns and trims
    padded: int = 0  # samples of silence inserted by underruns and pads
    level_ms: float = 0.0  # mean fill the reader finds just before it reads (the ring's delay)

    def add(self, other: "RingStats") -> "RingStats":
        """Sum of two counter sets (level: the newer one's, if it has one)."""
        return RingStats(
            self.underruns + other.underruns, self.overruns + other.overruns, self.trims + other.trims,
            self.pads + other.pads, self.dropped + other.dropped, self.padded + other.padded,
            other.level_ms or self.level_ms,
        )


class Ring:
    """A single-writer / single-reader int16 ring that never blocks and never grows.

    The writer calls `write`, the reader `read_into` (and `reset_reader`); each
    runs on its own thread or process (pjmedia's clock, the device callback)
    and only stores into its own slots of `state`. The worst a race can do is
    make the ring look a frame fuller or emptier than it is for one call.
    Across processes this relies on stores becoming visible in program order,
    which x86-64 guarantees; on a weakly ordered CPU (aarch64) a reader could
    in theory see the counter before the samples: at worst one stale frame.
    """

    def __init__(self, buf: np.ndarray | None = None, state: np.ndarray | None = None, *,
                 frame: int = FRAME, target: int = TARGET, limit: int = LIMIT,
                 capacity: int = CAPACITY, window: int = WINDOW, rate: int = RATE) -> None:
        if not frame <= target < limit < capacity:
            raise ValueError("need frame <= target < limit < capacity")
        self.frame, self.target, self.limit, self.capacity, self.window = frame, target, limit, capacity, window
        self.rate = rate
        self.buf = buf if buf is not None else np.zeros(capacity, dtype=np.int16)
        self.state = state if state is not None else np.zeros(RING_SLOTS, dtype=np.int64)
        if len(self.buf) != capacity or len(self.state) != RING_SLOTS:
            raise ValueError("buffer or state of the wrong size")
        self.init_state()

    def init_state(self) -> None:
        """Empty and priming (only while neither side runs)."""
        self.state[:] = 0
        self.state[PRIMING] = 1
        self.state[WIN_MIN] = 1 << 30
        self.state[WIN_MAX] = -1

    @property
    def fill(self) -> int:
        """Samples waiting (a snapshot: the other side may be moving)."""
        return int(self.state[W]) - int(self.state[R])

    # --- writer side -------------------------------------------------------

    def write(self, samples: np.ndarray) -> None:
        """Append int16 samples; what does not fit is dropped (the newest), never waited for."""
        st = self.state
        n = len(samples)
        w = int(st[W])
        free = self.capacity - (w - int(st[R]))
        if n > free:
            st[OVERRUNS] += 1
            st[DROPPED_NEW] += n - max(free, 0)
            n = max(free, 0)
            if n == 0:
                return
            samples = samples[:n]
        pos = w % self.capacity
        first = min(n, self.capacity - pos)
        self.buf[pos:pos + first] = samples[:first]
        if first < n:
            self.buf[:n - first] = samples[first:]
        st[W] = w + n  # publish only after the samples are in place

    # --- reader side -------------------------------------------------------

    def read_into(self, out: np.ndarray) -> None:
        """Fill `out` with the next samples; silence while priming or on an underrun."""
        st = self.state
        n = len(out)
        r = int(st[R])
        level = int(st[W]) - r
        if level > self.limit:  # a burst (call start, a stalled reader): back to target at once
            r = self._drop(r, level - self.target)
            level = self.target
        if st[PRIMING]:
            if level < self.target:
                out[:] = 0
                return
            st[PRIMING] = 0
            self._reset_window()
            if st[PENDING_PAD]:  # the writer came back: that was a real underrun
                st[UNDERRUNS] += 1
                st[PADDED] += st[PENDING_PAD]
                st[PENDING_PAD] = 0
        if level < n:  # underrun: play what is there, pad, prefill again
            self._copy_out(r, out[:level])
            out[level:] = 0
            st[R] = r + level
            st[PENDING_PAD] = n - level
            st[PRIMING] = 1
            return
        st[LEVEL_SUM] += level
        st[LEVEL_N] += 1
        if level < st[WIN_MIN]:
            st[WIN_MIN] = level
        if level > st[WIN_MAX]:
            st[WIN_MAX] = level
        st[WIN_READS] += 1
        if st[WIN_READS] >= self.window:
            if st[WIN_MIN] >= self.target + self.frame:
                # The writer's clock is faster: the level never came back down. Drop the excess once.
                excess = int(st[WIN_MIN]) - self.target
                r = self._drop(r, excess)
            elif st[WIN_MAX] <= self.target - self.frame:
                # The reader's clock is faster: the level never came back up. Insert one frame of
                # silence now rather than wait for an underrun (which would cost two frames later).
                out[:] = 0
                st[PADS] += 1
                st[PADDED] += n
                self._reset_window()
                return
            self._reset_window()
        self._copy_out(r, out)
        st[R] = r + n

    def reset_reader(self) -> None:
        """The writer went quiet (no call): forget what is left and prefill again, counting nothing.

        An underrun just before the writer stopped was the end of the stream,
        not a glitch, so it is not counted either.
        """
        st = self.state
        st[R] = st[W]
        st[PRIMING] = 1
        st[PENDING_PAD] = 0
        self._reset_window()

    def _copy_out(self, r: int, out: np.ndarray) -> None:
        n = len(out)
        if n == 0:
            return
        pos = r % self.capacity
        first = min(n, self.capacity - pos)
        out[:first] = self.buf[pos:pos + first]
        if first < n:
            out[first:] = self.buf[:n - first]

    def _drop(self, r: int, count: int) -> int:
        st = self.state
        st[R] = r + count
        st[TRIMS] += 1
        st[DROPPED_OLD] += count
        return r + count

    def _reset_window(self) -> None:
        st = self.state
        st[WIN_MIN], st[WIN_MAX], st[WIN_READS] = 1 << 30, -1, 0

    # --- either side -------------------------------------------------------

    def stats(self) -> RingStats:
        """The counters now (from any thread or process)."""
        st = self.state
        n = int(st[LEVEL_N])
        level = (int(st[LEVEL_SUM]) / n) * 1000.0 / self.rate if n else 0.0
        return RingStats(int(st[UNDERRUNS]), int(st[OVERRUNS]), int(st[TRIMS]), int(st[PADS]),
                         int(st[DROPPED_NEW] + st[DROPPED_OLD]), int(st[PADDED]), round(level, 2))


# --- the map the unit and the device process share -------------------------------

# Slots of the shared status array: written by the device process unless noted.
(S_CALLBACKS, S_LAST_CB_NS, S_XRUNS, S_CPU_NS, S_RATE_MHZ, S_OPEN,
 S_MUTED, S_PORT_READ_NS, S_PORT_WRITE_NS, S_BLOCK) = range(10)  # MUTED and PORT_*: written by the unit
STATUS_SLOTS = 16


class SharedBlock:
    """Two rings and a status array in one memory-mapped file (/dev/shm when there is one)."""

    SIZE = 8 * (2 * RING_SLOTS + STATUS_SLOTS) + 2 * 2 * CAPACITY

    def __init__(self, path: Path, mm: mmap.mmap) -> None:
        self.path = path
        self.mm = mm
        ints = np.frombuffer(mm, dtype=np.int64, count=2 * RING_SLOTS + STATUS_SLOTS)
        pcm = np.frombuffer(mm, dtype=np.int16, count=2 * CAPACITY, offset=ints.nbytes)
        self.status = ints[2 * RING_SLOTS:]
        self.playback = Ring(pcm[:CAPACITY], ints[:RING_SLOTS])
        self.capture = Ring(pcm[CAPACITY:], ints[RING_SLOTS:2 * RING_SLOTS])

    @classmethod
    def create(cls) -> "SharedBlock":
        """A fresh block (both rings empty and priming)."""
        directory = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, name = tempfile.mkstemp(prefix="kiosk-audio-", dir=directory)
        try:
            os.ftruncate(fd, cls.SIZE)
            mm = mmap.mmap(fd, cls.SIZE)
        finally:
            os.close(fd)
        block = cls(Path(name), mm)
        block.status[:] = 0
        return block

    @classmethod
    def attach(cls, path: Path) -> "SharedBlock":
        """The block a parent created (the device process's side): state left as it is."""
        fd = os.open(path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, cls.SIZE)
        finally:
            os.close(fd)
        block = cls.__new__(cls)
        block.path, block.mm = path, mm
        ints = np.frombuffer(mm, dtype=np.int64, count=2 * RING_SLOTS + STATUS_SLOTS)
        pcm = np.frombuffer(mm, dtype=np.int16, count=2 * CAPACITY, offset=ints.nbytes)
        block.status = ints[2 * RING_SLOTS:]
        block.playback = Ring.__new__(Ring)
        block.capture = Ring.__new__(Ring)
        for ring, buf, st in ((block.playback, pcm[:CAPACITY], ints[:RING_SLOTS]),
                              (block.capture, pcm[CAPACITY:], ints[RING_SLOTS:2 * RING_SLOTS])):
            ring.frame, ring.target, ring.limit, ring.capacity, ring.window = FRAME, TARGET, LIMIT, CAPACITY, WINDOW
            ring.rate, ring.buf, ring.state = RATE, buf, st
        return block

    def unlink(self) -> None:
        """Remove the file (the maps stay valid while open)."""
        try:
            os.unlink(self.path)
        except OSError:
            pass


# --- sounddevice (imported in the device process, and by `kiosk devices`) -------------


def import_sounddevice() -> ModuleType:
    """Import sounddevice, naming our JACK client "kiosk" first (PortAudio keeps the pointer)."""
    if "sounddevice" not in sys.modules:
        # Never let the JACK client library start a server of its own.
        os.environ.setdefault("JACK_NO_START_SERVER", "1")
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("portaudio") or "libportaudio.so.2")
            lib.PaJack_SetClientName(_CLIENT_NAME_BUF)
        except (OSError, AttributeError):
            pass  # PortAudio without JACK: nothing to name
    import sounddevice

    return sounddevice


_CLIENT_NAME_BUF = ctypes.c_char_p(CLIENT_NAME)  # must outlive PortAudio: it keeps the pointer


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device as `kiosk devices` shows it."""

    index: int
    name: str
    hostapi: str
    inputs: int
    outputs: int
    default_rate: float
    rate_16k: bool  # opens at 16 kHz mono int16 in every direction it has

    def line(self) -> str:
        """One line for a terminal."""
        ok = "16 kHz ok" if self.rate_16k else f"no 16 kHz (runs at {self.default_rate:g} Hz)"
        return f"{self.index:3d}  {self.name}  [{self.hostapi}]  in {self.inputs}, out {self.outputs}, {ok}"


def list_devices() -> list[DeviceInfo]:
    """Every audio device PortAudio sees, with whether it can run the bridge at 16 kHz."""
    sd = import_sounddevice()
    apis = sd.query_hostapis()
    out = []
    for index, dev in enumerate(sd.query_devices()):
        has_in, has_out = dev["max_input_channels"] >= 1, dev["max_output_channels"] >= 1
        out.append(DeviceInfo(index, dev["name"], apis[dev["hostapi"]]["name"], dev["max_input_channels"],
                              dev["max_output_channels"], float(dev["default_samplerate"]),
                              (has_in or has_out) and _settings_ok(sd, index, has_in, has_out, RATE)))
    return out


def _settings_ok(sd: ModuleType, index: int, has_in: bool, has_out: bool, rate: float) -> bool:
    try:
        if has_in:
            sd.check_input_settings(device=index, channels=1, dtype="int16", samplerate=rate)
        if has_out:
            sd.check_output_settings(device=index, channels=1, dtype="int16", samplerate=rate)
        return True
    except Exception:
        return False


class DeviceMissing(LookupError):
    """The profile's device is not there (str() is for the operator's alert)."""


def resolve_device(sd: ModuleType, device: str | int) -> tuple[int, dict[str, Any]]:
    """The profile's device (index, or a case-insensitive part of its name) as (index, info).

    A name that matches several devices picks one with both input and output,
    then the exact name, then the first: a headset often appears once per host
    API, and any of them carries the same audio.
    """
    devices = list(sd.query_devices())
    if isinstance(device, int):
        if 0 <= device < len(devices):
            return device, devices[device]
        raise DeviceMissing(f"audio device {device} not found ({len(devices)} devices)")
    want = device.strip().lower()
    found = [(i, d) for i, d in enumerate(devices) if want in d["name"].lower()
             and d["max_input_channels"] + d["max_output_channels"] > 0]
    if not found:
        raise DeviceMissing(f"audio device {device!r} not found")
    found.sort(key=lambda item: (not (item[1]["max_input_channels"] and item[1]["max_output_channels"]),
                                 item[1]["name"].lower() != want, item[0]))
    return found[0]


def _hostapi_name(sd: ModuleType, info: dict[str, Any]) -> str:
    try:
        return str(sd.query_hostapis(info["hostapi"])["name"])
    except Exception:  # a fake or an odd sounddevice: treat as not JACK
        return ""


def pick_rate(sd: ModuleType, index: int, info: dict[str, Any], has_in: bool, has_out: bool) -> float:
    """16 kHz; or the device's own rate when it is a 16 kHz clock a little off (JACK at 16016).

    Such a device's samples are treated as 16 kHz ones: that *is* clock drift,
    and the rings absorb it. Anything further off is refused with a reason
    (the bridge does not resample).
    """
    if _settings_ok(sd, index, has_in, has_out, RATE):
        return float(RATE)
    own = float(info["default_samplerate"])
    if abs(own - RATE) <= RATE * 0.01 and _settings_ok(sd, index, has_in, has_out, own):
        return own
    raise RuntimeError(f"audio device {info['name']!r} does not run at 16 kHz mono (its rate: {own:g} Hz); "
                       "pick its 'default' or 'plughw' entry from `kiosk devices`")


# --- the device process ----------------------------------------------------------


class DeviceSide:
    """The device's end of both rings: the sounddevice callback (runs in the device process)."""

    def __init__(self, block: SharedBlock) -> None:
        self.block = block
        self.status = block.status
        self._zeros = np.zeros(FRAME, dtype=np.int16)
        self.stream: Any = None

    def open(self, sd: ModuleType, device: str | int, latency: float | str = 2 * FRAME / RATE) -> dict[str, Any]:
        """Open and start the stream; what was opened (for the unit's log).

        On JACK the stream asks for no block size of its own (blocksize 0)
        and is kept that way if JACK's period turns out to be one frame: with
        `blocksize=FRAME` PortAudio puts its block adapter between JACK's
        buffers and the callback, and that adapter holds one more period of
        output (measured on a JACK loopback: a click in the callback's output
        came back in its input 640 samples later with blocksize 320, 320
        samples later with blocksize 0; the stream reports 40 vs 20 ms output
        latency). Any other period, and any other host API, gets
        `blocksize=FRAME`: the rings count in frames.
        """
        index, info = resolve_device(sd, device)
        has_in, has_out = info["max_input_channels"] >= 1, info["max_output_channels"] >= 1
        rate = pick_rate(sd, index, info, has_in, has_out)
        jack = "JACK" in str(_hostapi_name(sd, info))
        stream = self._start(sd, index, has_in, has_out, rate, 0 if jack else FRAME, latency)
        if jack and not self._period_is_a_frame():
            stream.stop()
            stream.close()
            stream = self._start(sd, index, has_in, has_out, rate, FRAME, latency)
        self.stream = stream
        self.status[S_OPEN] = (1 if has_in else 0) | (2 if has_out else 0)
        return {"index": index, "name": info["name"], "rate": rate, "input": has_in, "output": has_out,
                "latency": list(np.atleast_1d(stream.latency).astype(float)), "blocksize": stream.blocksize}

    def _start(self, sd: ModuleType, index: int, has_in: bool, has_out: bool, rate: float, blocksize: int,
               latency: float | str) -> Any:
        common = dict(samplerate=rate, blocksize=blocksize, dtype="int16", latency=latency)
        if has_in and has_out:
            stream = sd.Stream(device=(index, index), channels=(1, 1), callback=self.callback, **common)
        elif has_out:
            stream = sd.OutputStream(device=index, channels=1,
                                     callback=lambda o, f, t, s: self.callback(None, o, f, t, s), **common)
        else:
            stream = sd.InputStream(device=index, channels=1,
                                    callback=lambda i, f, t, s: self.callback(i, None, f, t, s), **common)
        self.status[S_RATE_MHZ] = int(rate * 1000)
        self.status[S_LAST_CB_NS] = time.monotonic_ns()
        self.status[S_BLOCK] = 0
        stream.start()
        return stream

    def _period_is_a_frame(self, timeout: float = 2.0) -> bool:
        """Did the stream's first callbacks come in blocks of one frame? (waits for the first few)"""
        deadline = time.monotonic() + timeout
        first = int(self.status[S_CALLBACKS])
        while int(self.status[S_CALLBACKS]) < first + 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        return int(self.status[S_BLOCK]) == FRAME

    def callback(self, indata: np.ndarray | None, outdata: np.ndarray | None, frames: int,
                 time_info: Any, status: Any) -> None:
        """One device period: play from `playback`, record into `capture` (PortAudio's thread)."""
        t0 = time.thread_time_ns()
        st = self.status
        now = time.monotonic_ns()
        idle_ns = int(IDLE_S * 1e9)
        if status:
            st[S_XRUNS] += 1
        if outdata is not None:
            if now - int(st[S_PORT_WRITE_NS]) > idle_ns:  # no call: play silence, keep the ring empty
                self.block.playback.reset_reader()
                outdata[:] = 0
            else:
                self.block.playback.read_into(outdata[:, 0])
        if indata is not None and now - int(st[S_PORT_READ_NS]) <= idle_ns:
            if st[S_MUTED]:
                self.block.capture.write(self._zeros if frames == FRAME else np.zeros(frames, dtype=np.int16))
            else:
                self.block.capture.write(indata[:, 0])
        st[S_BLOCK] = frames
        st[S_CALLBACKS] += 1
        st[S_LAST_CB_NS] = now
        st[S_CPU_NS] += time.thread_time_ns() - t0


def serve(path: Path, device: str | int) -> int:
    """The device process: open the device on the shared block, say so on stdout, run until stdin closes."""
    block = SharedBlock.attach(path)
    side = DeviceSide(block)
    try:
        sd = import_sounddevice()
        opened = side.open(sd, device)
    except DeviceMissing as exc:
        print(json.dumps({"missing": str(exc)}), flush=True)
        return 2
    except Exception as exc:
        print(json.dumps({"error": f"audio device {device!r}: {exc}"}), flush=True)
        return 2
    print(json.dumps({"open": opened}), flush=True)
    try:
        sys.stdin.read()  # the unit closes our stdin (or dies) when we should go
    except (OSError, KeyboardInterrupt):
        pass
    if time.monotonic_ns() - int(block.status[S_LAST_CB_NS]) > STALL_S * 1e9:
        # The device died under us: PortAudio would hang in stop() and abort at exit. Just go.
        os._exit(0)
    side.stream.stop()
    side.stream.close()
    return 0


# --- the unit's side -------------------------------------------------------------


@dataclass
class AudioStats:
    """Everything the bridge counts, for logs, alerts and the bench."""

    device: str
    open: bool
    rate: float
    muted: bool
    opens: int
    losses: int
    playback: RingStats = field(default_factory=RingStats)
    capture: RingStats = field(default_factory=RingStats)
    callbacks: int = 0
    device_xruns: int = 0  # PortAudio's own under/overflow flags
    cpu_s: float = 0.0  # CPU time of the device callback (device process)
    port_cpu_s: float = 0.0  # CPU time of the pjsua2 port's callbacks (set by the port)
    device_pid: int | None = None
    uptime_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class LocalAudio:
    """The unit's end of the bridge: the rings' pjsua2 sides, and the device process it keeps alive.

    pjsua2's port calls `feed_playback` and `take_capture` from pjmedia's clock
    thread. A supervisor thread starts the device process, watches its
    callbacks, and kills and restarts it when the device is missing, stalls or
    vanishes; `alert(message, code, params)` is called from that thread once when the device
    is missing or lost and once when it is back.
    """

    def __init__(self, device: str | int,
                 alert: Callable[[str, str, dict[str, Any]], None] = lambda m, c, p: None,
                 retry_s: float = RETRY_S, stats_path: Path | None = None) -> None:
        self.device = device
        self.alert = alert
        self.retry_s = retry_s
        self.stats_path = stats_path
        self.port_cpu_s = 0.0  # written by the port's thread only
        self._block = SharedBlock.create()
        self._block.unlink()  # nothing else needs the name until a device process is started
        self._muted = False
        self._retired_play = RingStats()
        self._retired_cap = RingStats()
        self._retired = (0, 0, 0)  # callbacks, xruns, cpu_ns of earlier device processes
        self._child: subprocess.Popen[str] | None = None
        self._opens = 0
        self._losses = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._logged: tuple[int, ...] = ()
        self._logged_at = 0.0

    # --- pjsua2's side (pjmedia clock thread) ------------------------------

    @property
    def live(self) -> bool:
        """The device is open and calling back (else the port behaves like the null device)."""
        st = self._block.status
        return bool(st[S_OPEN]) and time.monotonic_ns() - int(st[S_LAST_CB_NS]) < LIVE_NS

    def feed_playback(self, samples: np.ndarray) -> None:
        """What the operator should hear; dropped while the device is away (no overrun storm)."""
        block = self._block
        if int(block.status[S_OPEN]) & 2 and self.live:
            block.playback.write(samples)
        block.status[S_PORT_WRITE_NS] = time.monotonic_ns()

    def take_capture(self, out: np.ndarray) -> None:
        """What the operator says, into `out`; silence while the device is away."""
        block = self._block
        now = time.monotonic_ns()
        if int(block.status[S_OPEN]) & 1 and self.live:
            if now - int(block.status[S_PORT_READ_NS]) > IDLE_S * 1e9:  # a call starts: prefill afresh
                block.capture.reset_reader()
            block.capture.read_into(out)
        else:
            out[:] = 0
        block.status[S_PORT_READ_NS] = now

    @property
    def muted(self) -> bool:
        """Microphone mute: the device process records silence instead of the microphone."""
        return self._muted

    @muted.setter
    def muted(self, value: bool) -> None:
        self._muted = bool(value)
        self._block.status[S_MUTED] = int(self._muted)

    # --- life cycle --------------------------------------------------------

    def start(self) -> None:
        """Start the supervisor; it opens the device (now or as soon as it appears)."""
        self._thread = threading.Thread(target=self._supervise, name="audio-device", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the device process and the supervisor (before the JACK server or pjsua2 goes)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._end_child(graceful=True)
        self._write_stats()

    def stats(self) -> AudioStats:
        """All counters, summed over every device process so far."""
        block, st = self._block, self._block.status
        callbacks, xruns, cpu_ns = self._retired
        child = self._child
        return AudioStats(
            device=str(self.device), open=self.live, rate=int(st[S_RATE_MHZ]) / 1000.0, muted=self._muted,
            opens=self._opens, losses=self._losses,
            playback=self._retired_play.add(block.playback.stats()),
            capture=self._retired_cap.add(block.capture.stats()),
            callbacks=callbacks + int(st[S_CALLBACKS]), device_xruns=xruns + int(st[S_XRUNS]),
            cpu_s=round((cpu_ns + int(st[S_CPU_NS])) / 1e9, 4), port_cpu_s=round(self.port_cpu_s, 4),
            device_pid=child.pid if child is not None and child.poll() is None else None,
            uptime_s=round(time.monotonic() - self._started, 2),
        )

    # --- the supervisor thread ---------------------------------------------

    def _supervise(self) -> None:
        missing: str | None = None  # the reason we last alerted about, while it lasts
        next_try = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if self._child is None and now >= next_try:
                reason = self._spawn()
                if reason is None:
                    if missing is not None:
                        self.alert(f"Audio device {self.device!r} is back", "audio_back", {"device": self.device})
                    missing = None
                else:
                    if missing is None:
                        log.warning("%s", reason)
                        self.alert(f"{_capital(reason)}: calls continue without the headset; "
                                   f"retrying every {self.retry_s:g} s", "audio_missing",
                                   {"reason": reason, "seconds": self.retry_s})
                    missing = reason
                    next_try = now + self.retry_s
            elif self._child is not None and not self._healthy():
                self._losses += 1
                self._end_child(graceful=False)  # a device that died under PortAudio wedges it: kill
                missing = f"audio device {self.device!r} stopped"
                log.warning("%s; reopening", missing)
                self.alert(f"Audio device {self.device!r} stopped: calls continue without the headset; "
                           f"retrying every {self.retry_s:g} s", "audio_stopped",
                           {"device": self.device, "seconds": self.retry_s})
                next_try = now + min(1.0, self.retry_s)
            self._write_stats()
            self._log_counters()
            self._stop.wait(0.25)

    def _healthy(self) -> bool:
        child = self._child
        if child is None or child.poll() is not None:
            return False
        return time.monotonic_ns() - int(self._block.status[S_LAST_CB_NS]) < STALL_S * 1e9

    def _spawn(self) -> str | None:
        """Start a device process on a fresh block; None when the device is open, else why not."""
        self._retire_block()
        block = SharedBlock.create()
        block.status[S_MUTED] = int(self._muted)
        self._block = block  # the port sees status OPEN = 0 until the child has opened the device
        from kiosk.children import child_env

        argv = [sys.executable, "-m", "hw.audio", "--serve", str(block.path), "--device", json.dumps(self.device)]
        try:
            child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=child_env(), start_new_session=True)
        except OSError as exc:
            block.unlink()
            return f"cannot start the audio device process: {exc}"
        self._child = child
        threading.Thread(target=_forward_stderr, args=(child,), name="audio-device-log", daemon=True).start()
        line = _read_line(child, timeout=15)
        block.unlink()  # the child has it mapped (or has gone)
        try:
            reply = json.loads(line) if line else {}
        except json.JSONDecodeError:
            reply = {}
        if "open" in reply:
            self._opens += 1
            info = reply["open"]
            log.info("audio device %r open: #%s %s, %g Hz, in %s, out %s, latency %s, blocksize %s "
                     "(device process %d)", self.device, info["index"], info["name"], info["rate"], info["input"],
                     info["output"], info["latency"], info.get("blocksize"), child.pid)
            if info["rate"] != RATE:
                log.info("audio device runs at %g Hz: treated as a 16 kHz clock (the rings absorb the drift)",
                         info["rate"])
            return None
        self._end_child(graceful=False)
        return reply.get("missing") or reply.get("error") or f"audio device {self.device!r} did not open"

    def _retire_block(self) -> None:
        """Keep the counters of the block in use; its rings are not used again."""
        st = self._block.status
        self._retired_play = self._retired_play.add(self._block.playback.stats())
        self._retired_cap = self._retired_cap.add(self._block.capture.stats())
        c, x, cpu = self._retired
        self._retired = (c + int(st[S_CALLBACKS]), x + int(st[S_XRUNS]), cpu + int(st[S_CPU_NS]))
        st[S_OPEN] = 0
        # The old map stays referenced by the old block until the port's next frame has moved on.

    def _end_child(self, graceful: bool) -> None:
        child, self._child = self._child, None
        self._block.status[S_OPEN] = 0
        if child is None:
            return
        try:
            if graceful and child.poll() is None:
                try:
                    child.stdin.close()  # type: ignore[union-attr]
                except OSError:
                    pass
                try:
                    child.wait(3)
                except subprocess.TimeoutExpired:
                    pass
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        for pipe in (child.stdin, child.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass

    def _write_stats(self) -> None:
        if self.stats_path is None:
            return
        try:
            tmp = self.stats_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.stats().as_json()))
            os.replace(tmp, self.stats_path)
        except OSError:
            pass

    def _log_counters(self) -> None:
        """One log line whenever a glitch counter moved (at most once a minute)."""
        s = self.stats()
        now = (s.playback.underruns, s.playback.overruns, s.playback.trims, s.playback.pads,
               s.capture.underruns, s.capture.overruns, s.capture.trims, s.capture.pads)
        if now == self._logged or (self._logged and time.monotonic() - self._logged_at < 60):
            return
        self._logged, self._logged_at = now, time.monotonic()
        if any(now):
            log.info("audio bridge: playback %s; capture %s", s.playback, s.capture)


def _read_line(child: subprocess.Popen[str], timeout: float) -> str:
    """The device process's first stdout line ('' if it exits or says nothing in time)."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    if not ready:
        return ""
    return child.stdout.readline().strip()


#: What PortAudio and libjack print while probing for a JACK server that is not there.
_NOISE = ("Cannot connect to server", "jack server is not running", "JackShmReadWritePtr",
          "Cannot open", "connect(2) call to", "attempt to connect to server failed")


def _forward_stderr(child: subprocess.Popen[str]) -> None:
    """The device process's stderr into the unit's log (probe noise at debug level)."""
    assert child.stderr is not None
    try:
        for line in child.stderr:
            line = line.rstrip()
            if line:
                level = logging.DEBUG if any(n in line for n in _NOISE) else logging.WARNING
                log.log(level, "audio device process %d: %s", child.pid, line)
    except (OSError, ValueError):
        pass


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw.audio", description="the unit's audio device process")
    parser.add_argument("--serve", type=Path, required=True, help="the shared block (made by LocalAudio)")
    parser.add_argument("--device", required=True, help="the profile's device, as JSON (a name or an index)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the unit decides when we stop
    return serve(args.serve, json.loads(args.device))


if __name__ == "__main__":
    sys.exit(_main())
