"""hw/audio.py in isolation: the ring's rules, two drifting clocks, the device callback, device choice.

Everything here is deterministic and fast: the two clocks of the bridge
(pjmedia's and the sound card's) are simulated as event times, so a minute of
+-1000 ppm drift runs in well under a second, and the sounddevice side is a
fake module. The one test that starts the real device process looks for a
device that is not there.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
import pytest

from hw.audio import (
    CAPACITY, FRAME, IDLE_S, LIMIT, RATE, S_MUTED, S_PORT_READ_NS, S_PORT_WRITE_NS, TARGET, WINDOW,
    DeviceMissing, DeviceSide, LocalAudio, Ring, SharedBlock, pick_rate, resolve_device,
)


def frame(value: int, n: int = FRAME) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


def read(ring: Ring, n: int = FRAME) -> np.ndarray:
    out = np.empty(n, dtype=np.int16)
    ring.read_into(out)
    return out


# --- the ring's rules ----------------------------------------------------------


def test_nothing_plays_until_two_frames_are_in() -> None:
    ring = Ring()
    ring.write(frame(1))
    assert not read(ring).any()  # still prefilling: silence, nothing consumed
    assert ring.fill == FRAME
    ring.write(frame(2))
    assert (read(ring) == 1).all() and (read(ring) == 2).all()
    assert ring.stats().underruns == 0


def test_underrun_pads_with_silence_and_prefills_again() -> None:
    ring = Ring()
    ring.write(frame(1))
    ring.write(frame(2))
    assert (read(ring) == 1).all()
    assert (read(ring) == 2).all()
    assert not read(ring).any()  # the writer is late: silence
    ring.write(frame(3))
    assert not read(ring).any()  # prefilling again: one frame is not enough
    ring.write(frame(4))
    assert (read(ring) == 3).all()
    stats = ring.stats()
    assert stats.underruns == 1 and stats.padded == FRAME  # counted once the writer came back


def test_underrun_part_way_plays_what_is_there() -> None:
    ring = Ring()
    ring.write(frame(1))
    ring.write(frame(2))
    read(ring)
    ring.write(frame(3)[:100])
    assert (read(ring) == 2).all()
    out = read(ring)
    assert (out[:100] == 3).all() and not out[100:].any()


def test_writer_stopping_is_not_an_underrun() -> None:
    ring = Ring()
    for v in (1, 2, 3):
        ring.write(frame(v))
    for _ in range(4):
        read(ring)  # the last read finds nothing: the call ended
    ring.reset_reader()  # the device side saw the port go quiet
    assert ring.stats().underruns == 0 and ring.fill == 0


def test_full_ring_drops_the_newest_samples() -> None:
    ring = Ring()
    for v in range(CAPACITY // FRAME + 3):
        ring.write(frame(v))
    stats = ring.stats()
    assert ring.fill == CAPACITY
    assert stats.overruns == 3 and stats.dropped == 3 * FRAME
    # What is kept is the oldest audio (the hard limit then trims it on the next read).
    assert (ring.buf[:FRAME] == 0).all()


def test_above_the_hard_limit_the_oldest_go_down_to_target() -> None:
    ring = Ring()
    for v in range(LIMIT // FRAME + 2):  # a burst at call start: 7 frames before the first read
        ring.write(frame(v))
    out = read(ring)
    kept_from = LIMIT // FRAME + 2 - TARGET // FRAME
    assert (out == kept_from).all()  # the newest 2 frames are what plays
    assert ring.stats().trims == 1 and ring.fill == TARGET - FRAME


def test_ring_refuses_inconsistent_sizes() -> None:
    with pytest.raises(ValueError):
        Ring(target=FRAME * 6)


# --- two clocks -----------------------------------------------------------------


def run_clocks(writer_ppm: float, reader_ppm: float, seconds: float = 60.0, jitter_ms: float = 0.0,
               seed: int = 7) -> dict[str, Any]:
    """Simulate pjmedia (writer) and the sound card (reader) on their own clocks; track each frame's delay."""
    rng = np.random.default_rng(seed)
    ring = Ring()
    t_w = 0.02 / (1 + writer_ppm * 1e-6)
    t_r = 0.02 / (1 + reader_ppm * 1e-6)
    n_w, n_r = int(seconds / t_w), int(seconds / t_r)
    writes = np.arange(n_w) * t_w + 0.004
    reads = np.arange(n_r) * t_r + 0.013
    if jitter_ms:
        writes = np.maximum.accumulate(writes + rng.uniform(-jitter_ms, jitter_ms, n_w) * 1e-3)
        reads = np.maximum.accumulate(reads + rng.uniform(-jitter_ms, jitter_ms, n_r) * 1e-3)
    events = sorted([(t, 0, i) for i, t in enumerate(writes)] + [(t, 1, i) for i, t in enumerate(reads)])
    out = np.empty(FRAME, dtype=np.int16)
    delays, fills = [], []
    for t, kind, i in events:
        if kind == 0:
            # Sample k of the stream carries (k mod 30000) + 1: never 0, so silence is recognisable.
            ring.write(((np.arange(FRAME) + i * FRAME) % 30000 + 1).astype(np.int16))
        else:
            ring.read_into(out)
            fills.append(ring.fill)
            if out[0] and t > 1.0:
                expected = int(t / t_w) * FRAME
                k = expected - ((expected - (int(out[0]) - 1)) % 30000)
                delays.append(t - writes[k // FRAME])
    d = np.array(delays) * 1000
    return {"stats": ring.stats(), "max_fill": max(fills), "delay_min": d.min(), "delay_max": d.max()}


@pytest.mark.parametrize("writer_ppm,reader_ppm", [(1000, 0), (0, 1000), (-1000, 0), (0, -1000),
                                                   (1000, -1000), (-1000, 1000)])
def test_drift_of_1000_ppm_keeps_fill_bounded_and_delay_within_a_frame(writer_ppm: float,
                                                                       reader_ppm: float) -> None:
    run = run_clocks(writer_ppm, reader_ppm)
    stats = run["stats"]
    drift = abs(writer_ppm - reader_ppm) * 1e-6
    assert stats.underruns == 0 and stats.overruns == 0, stats
    # One 20 ms correction per FRAME/(RATE*drift) seconds of drift: 3 a minute at 1000 ppm.
    corrections = stats.trims + stats.pads
    assert abs(corrections - 60 * drift * RATE / FRAME) <= 1, stats
    assert run["max_fill"] <= TARGET, run  # after each read: never more than the target waits
    # The delay slides over one frame between corrections, plus what drifts during the 2 s
    # the ring waits before it corrects (2 s * 2000 ppm = 4 ms at most).
    frame_ms = 1000 * FRAME / RATE
    window_s = WINDOW * FRAME / RATE
    assert run["delay_max"] - run["delay_min"] <= frame_ms + 2 * window_s * drift * 1000 + 0.5, run
    assert run["delay_min"] >= frame_ms * 0.5 and run["delay_max"] <= 2.5 * frame_ms, run


def test_same_clocks_with_jitter_never_glitch() -> None:
    run = run_clocks(0, 0, jitter_ms=4.0)
    stats = run["stats"]
    assert (stats.underruns, stats.overruns, stats.trims, stats.pads) == (0, 0, 0, 0), stats
    assert 20 - 8 <= run["delay_min"] and run["delay_max"] <= 40 + 8, run  # 20-40 ms, +- the jitter


def test_drift_with_jitter_still_never_underruns() -> None:
    for writer, reader in ((1000, -1000), (-1000, 1000)):
        stats = run_clocks(writer, reader, jitter_ms=3.0)["stats"]
        assert stats.underruns == 0 and stats.overruns == 0, stats


# --- the shared block and the device callback -----------------------------------------


def test_shared_block_carries_audio_between_two_maps() -> None:
    unit = SharedBlock.create()
    try:
        device = SharedBlock.attach(unit.path)
        unit.playback.write(frame(5))
        unit.playback.write(frame(6))
        assert (read(device.playback) == 5).all()
        device.capture.write(frame(7))
        device.capture.write(frame(8))
        assert (read(unit.capture) == 7).all()
        assert unit.playback.fill == FRAME and device.capture.fill == FRAME
    finally:
        unit.unlink()


def make_side() -> tuple[SharedBlock, DeviceSide]:
    block = SharedBlock.create()
    block.unlink()
    return block, DeviceSide(block)


def tick(side: DeviceSide, mic: int) -> np.ndarray:
    indata = frame(mic).reshape(-1, 1)
    outdata = np.empty((FRAME, 1), dtype=np.int16)
    side.callback(indata, outdata, FRAME, None, None)
    return outdata[:, 0]


def port_active(block: SharedBlock) -> None:
    now = time.monotonic_ns()
    block.status[S_PORT_READ_NS] = now
    block.status[S_PORT_WRITE_NS] = now


def test_device_between_calls_plays_silence_and_records_nothing() -> None:
    block, side = make_side()
    block.playback.write(frame(9))  # left over from a call that ended long ago
    block.status[S_PORT_WRITE_NS] = time.monotonic_ns() - int(2 * IDLE_S * 1e9)
    assert not tick(side, mic=3).any()
    assert block.capture.fill == 0  # nobody reads the microphone: nothing piles up
    assert block.playback.fill == 0 and block.playback.stats().underruns == 0


def test_device_during_a_call_moves_both_directions() -> None:
    block, side = make_side()
    port_active(block)
    block.playback.write(frame(4))
    block.playback.write(frame(5))
    assert (tick(side, mic=3) == 4).all()
    assert block.capture.fill == FRAME and (block.capture.buf[:FRAME] == 3).all()


def test_muted_microphone_records_silence() -> None:
    block, side = make_side()
    port_active(block)
    block.status[S_MUTED] = 1
    tick(side, mic=3)
    tick(side, mic=3)
    assert block.capture.fill == 2 * FRAME
    assert not read(block.capture).any()


# --- choosing the device -----------------------------------------------------------------


class FakeSd:
    """Just enough of sounddevice's query and check functions."""

    def __init__(self, devices: list[dict[str, Any]], rates: frozenset[float] | set[float] = frozenset({16000.0})) -> None:
        self.devices = devices
        self.rates = rates

    def query_devices(self) -> list[dict[str, Any]]:
        return self.devices

    def _check(self, device: int, samplerate: float, **_: Any) -> None:
        if samplerate not in self.rates:
            raise ValueError("Invalid sample rate")

    check_input_settings = check_output_settings = _check


def dev(name: str, ins: int = 1, outs: int = 1, rate: float = 48000.0) -> dict[str, Any]:
    return {"name": name, "max_input_channels": ins, "max_output_channels": outs, "default_samplerate": rate}


def test_device_by_name_prefers_one_with_microphone_and_speaker() -> None:
    sd = FakeSd([dev("HDA Intel PCH: HDMI 0", 0, 2), dev("USB Headset: Audio (hw:1,0) out", 0, 2),
                 dev("USB Headset: Audio (hw:1,0)"), dev("default")])
    index, info = resolve_device(sd, "usb headset")
    assert index == 2 and info["name"] == "USB Headset: Audio (hw:1,0)"
    assert resolve_device(sd, 0)[0] == 0


def test_missing_device_says_which() -> None:
    sd = FakeSd([dev("default")])
    with pytest.raises(DeviceMissing, match="'Jabra' not found"):
        resolve_device(sd, "Jabra")
    with pytest.raises(DeviceMissing, match="3 not found"):
        resolve_device(sd, 3)


def test_a_16_khz_clock_a_little_off_is_taken_as_it_is() -> None:
    sd = FakeSd([dev("system", rate=16016.0)], rates={16016.0})
    assert pick_rate(sd, 0, sd.devices[0], True, True) == 16016.0
    sd48 = FakeSd([dev("hw only", rate=48000.0)], rates={48000.0})
    with pytest.raises(RuntimeError, match="does not run at 16 kHz"):
        pick_rate(sd48, 0, sd48.devices[0], True, True)


@pytest.mark.lab  # the real device process
def test_missing_device_raises_one_alert_and_the_bridge_stays_silent(monkeypatch) -> None:
    # The real device process, on a JACK server that does not exist and no other device.
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"kiosk-none-{os.getpid()}")
    alerts: list[str] = []
    audio = LocalAudio("No Such Headset", alert=lambda message, code, params: alerts.append(message), retry_s=0.5)
    audio.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and audio.stats().opens == 0 and len(alerts) < 1:
            time.sleep(0.1)
        time.sleep(1.5)  # a few more retries: still one alert
        assert len(alerts) == 1 and "'No Such Headset' not found" in alerts[0], alerts
        assert "retrying" in alerts[0]
        out = frame(1)
        audio.take_capture(out)
        assert not out.any() and not audio.live
        audio.feed_playback(frame(5))  # dropped: no device to play it
        assert audio.stats().playback.overruns == 0
    finally:
        t0 = time.monotonic()
        audio.stop()
        assert time.monotonic() - t0 < 5


# --- opening the stream ---------------------------------------------------------------


class FakeStreamSd(FakeSd):
    """A sounddevice whose streams call back `calls` times, synchronously, in blocks of `period` (JACK's)."""

    def __init__(self, hostapi: str, period: int) -> None:
        super().__init__([{**dev("system", rate=16000.0), "hostapi": 0}])
        self.hostapi, self.period = hostapi, period
        self.opened: list[int] = []  # block size of every stream opened

    def query_hostapis(self, index: int) -> dict[str, Any]:
        return {"name": self.hostapi}

    def Stream(self, *, callback: Any, blocksize: int, **kw: Any) -> Any:  # noqa: N802 - sounddevice's name
        self.opened.append(blocksize)
        sd = self

        class Stream:
            latency = (0.0, 0.02)

            def __init__(self) -> None:
                self.blocksize = blocksize

            def start(self) -> None:
                # Periods come on the device's own thread, after start() returned, as PortAudio's do
                # (called here before it returned, the open waited out its whole 2 s for them).
                frames = blocksize or sd.period

                def periods() -> None:
                    for _ in range(6):
                        time.sleep(0.005)
                        callback(np.zeros((frames, 1), np.int16), np.zeros((frames, 1), np.int16), frames,
                                 None, None)

                self.thread = threading.Thread(target=periods, daemon=True)
                self.thread.start()

            def stop(self) -> None:
                pass

            def close(self) -> None:
                pass

        return Stream()


def test_jack_with_a_one_frame_period_gets_its_buffers_without_portaudio_s_block_adapter() -> None:
    block, side = make_side()
    sd = FakeStreamSd("JACK Audio Connection Kit", period=FRAME)
    info = side.open(sd, "system")
    assert sd.opened == [0] and info["blocksize"] == 0 and block.status[0] >= 3  # callbacks seen


def test_jack_with_another_period_and_other_host_apis_get_one_frame_blocks() -> None:
    _, side = make_side()
    sd = FakeStreamSd("JACK Audio Connection Kit", period=256)
    assert side.open(sd, "system")["blocksize"] == FRAME and sd.opened == [0, FRAME]
    _, side = make_side()
    sd = FakeStreamSd("ALSA", period=256)
    assert side.open(sd, "system")["blocksize"] == FRAME and sd.opened == [FRAME]
