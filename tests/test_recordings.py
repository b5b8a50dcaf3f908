"""Recordings on disk without pjsua2: names, sidecars, crash repair, free space, retention, listing.

The WAVs here are made the way pjmedia's writer leaves them: a 44-byte header
whose RIFF/data sizes are 0 until the recorder is destroyed, then 16-bit mono
samples; a SIGKILL leaves exactly that on disk (measured).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from kiosk import events as ev
from kiosk import recordings as rec
from kiosk.desk import Desk
from kiosk.profile import Recording

from .fakes import FakeAgent, make_profile

RATE = 16000


def tone(seconds: float, hz: float = 700.0) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * hz * t) * 12000).astype("<i2").tobytes()


def killed_wav(path: Path, audio: bytes, riff: int = 0, data: int = 0) -> Path:
    """A WAV as pjmedia's writer leaves it when the process dies: sizes never written."""
    header = rec._canonical_header(RATE, 0)
    header = header[:4] + struct.pack("<I", riff) + header[8:40] + struct.pack("<I", data)
    path.write_bytes(header + audio)
    return path


def frames(path: Path) -> int:
    with wave.open(str(path)) as w:
        return w.getnframes()


def settings(tmp_path: Path, **kw) -> Recording:
    return Recording(directory=tmp_path / "rec", min_free_mb=kw.pop("min_free_mb", 0), **kw)


# --- names -----------------------------------------------------------------------------


@pytest.mark.parametrize("remote, label", [
    ('"Anna P." <sip:2001@pbx.example:5060;transport=tcp>', "2001_pbx.example_5060"),
    ("sip:+7 (495) 123-45-67@trunk", "+7_495_123-45-67_trunk"),
    ("sips:../../etc/passwd@x", "etc_passwd_x"),
    ("<sip:оператор@pbx>", "pbx"),
    ("", "unknown"),
])
def test_remote_party_becomes_a_safe_file_name_part(remote: str, label: str) -> None:
    assert rec.remote_label(remote) == label


def test_file_stem_says_when_which_line_which_way_and_who() -> None:
    started = time.mktime((2025, 3, 7, 14, 5, 9, 0, 0, -1))
    stem = rec.file_stem(started, "op/1", "in", "sip:2001@pbx.test", 3)
    assert stem == "20250307-140509_op_1_in_2001_pbx.test_3"
    assert "/" not in stem


# --- repairing what a crash left ---------------------------------------------------------


def test_wav_with_zero_sizes_is_repaired_keeping_every_sample(tmp_path: Path) -> None:
    audio = tone(1.5)
    path = killed_wav(tmp_path / "a.wav", audio)
    with pytest.raises(Exception):
        assert frames(path) == len(audio) // 2  # the stdlib cannot read it as it is

    fixed = rec.repair_wav(path)

    assert fixed and "fixed" in fixed
    assert frames(path) == len(audio) // 2
    assert path.read_bytes()[44:] == audio


def test_header_that_overstates_the_audio_is_cut_down_to_what_is_on_disk(tmp_path: Path) -> None:
    # pjmedia computes the sizes from ftell(): after a full disk they count bytes never written
    audio = tone(0.5)
    path = killed_wav(tmp_path / "a.wav", audio, riff=36 + 10 * len(audio), data=10 * len(audio))

    assert rec.repair_wav(path)

    assert frames(path) == len(audio) // 2


def test_a_half_sample_at_the_end_is_kept_on_disk_but_not_counted(tmp_path: Path) -> None:
    path = killed_wav(tmp_path / "a.wav", tone(0.1) + b"\x01")
    rec.repair_wav(path)
    hdr = rec.read_header(path)
    assert hdr is not None and hdr.consistent and hdr.data_size == len(tone(0.1))
    assert path.stat().st_size == 44 + len(tone(0.1)) + 1


def test_a_sound_wav_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "ok.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes(tone(0.2))
    before = path.read_bytes()
    assert rec.repair_wav(path) is None
    assert path.read_bytes() == before


@pytest.mark.parametrize("size", [0, 20])
def test_a_file_killed_before_its_header_reached_the_disk_becomes_an_empty_wav(tmp_path: Path, size: int) -> None:
    path = tmp_path / "early.wav"
    path.write_bytes(b"RIFF"[:size] + b"\0" * max(0, size - 4))
    assert rec.repair_wav(path)
    with wave.open(str(path)) as w:
        assert (w.getnframes(), w.getframerate()) == (0, RATE)


def test_startup_repairs_and_completes_the_sidecar_and_logs_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = settings(tmp_path)
    s.directory.mkdir()
    wav = killed_wav(s.directory / "20250101-100000_main_out_2001_1.wav", tone(2.0))
    started = time.time() - 5
    rec.write_sidecar(rec.sidecar_of(wav), {"start_epoch": started, "end": None, "line": "main",
                                            "hold": [{"by": "local", "start": 0.5, "end": None}]})
    os.utime(wav, (started + 2, started + 2))

    messages = rec.startup(s)

    assert len(messages) == 1 and str(wav) in messages[0]
    assert "repaired recording" in caplog.text
    meta = json.loads(rec.sidecar_of(wav).read_text())
    assert meta["repaired"] is True
    assert meta["end_epoch"] == pytest.approx(started + 2)
    assert meta["duration"] == 2.0 and meta["sample_rate"] == RATE
    assert meta["hold"] == [{"by": "local", "start": 0.5, "end": 2.0}]
    assert frames(wav) == 2 * RATE
    assert rec.startup(s) == []  # nothing left to do the second time
    assert [r["repaired"] for r in rec.listing(s.directory)] == [True]


def test_a_broken_wav_without_sidecar_gets_one(tmp_path: Path) -> None:
    s = settings(tmp_path)
    s.directory.mkdir()
    wav = killed_wav(s.directory / "x.wav", tone(1.0))
    rec.repair_all(s)
    meta = json.loads(rec.sidecar_of(wav).read_text())
    assert meta["repaired"] is True and meta["duration"] == 1.0 and meta["end"]


def test_sidecar_update_on_a_full_disk_overwrites_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.json"
    rec.write_sidecar(path, {"end": None, "hold": []})
    assert path.stat().st_size == rec.SIDECAR_RESERVE

    real_open = os.open

    def full_disk(p, flags, mode=0o777):
        if str(p).endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(p, flags, mode)

    monkeypatch.setattr(os, "open", full_disk)
    rec.write_sidecar(path, {"end": "2025-01-01T10:00:00", "hold": [{"by": "local", "start": 1, "end": 2}]})

    assert json.loads(path.read_text())["end"] == "2025-01-01T10:00:00"
    assert not list(tmp_path.glob(".*.tmp"))


# --- retention ----------------------------------------------------------------------------


def make_recording(directory: Path, name: str, start: float, nbytes: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    wav = directory / f"{name}.wav"
    wav.write_bytes(rec._canonical_header(RATE, nbytes) + b"\0" * nbytes)
    rec.write_sidecar(rec.sidecar_of(wav), {"start_epoch": start, "end": "x", "duration": nbytes / 32000})
    return wav


def test_retention_removes_recordings_older_than_max_age(tmp_path: Path) -> None:
    s = settings(tmp_path, max_age_days=30)
    now = time.time()
    old = make_recording(s.directory, "old", now - 31 * 86400, 100)
    new = make_recording(s.directory, "new", now - 29 * 86400, 100)

    assert rec.apply_retention(s, now=now) == [old]

    assert not old.exists() and not rec.sidecar_of(old).exists() and new.exists()


def test_retention_removes_oldest_first_down_to_max_total_but_never_an_active_one(tmp_path: Path) -> None:
    s = settings(tmp_path, max_total_mb=1)
    now = time.time()
    mb = 1024 * 1024
    a = make_recording(s.directory, "a", now - 400, mb // 2)  # oldest, but still being recorded
    b = make_recording(s.directory, "b", now - 300, mb // 2)
    c = make_recording(s.directory, "c", now - 200, mb // 2)
    d = make_recording(s.directory, "d", now - 100, mb // 4)

    removed = rec.apply_retention(s, active={a}, now=now)

    assert removed == [b, c]
    assert a.exists() and d.exists()


def test_no_retention_settings_remove_nothing(tmp_path: Path) -> None:
    s = settings(tmp_path)
    make_recording(s.directory, "a", 0, 10)
    assert rec.apply_retention(s) == []


def test_listing_is_newest_first_with_duration_and_repaired(tmp_path: Path) -> None:
    s = settings(tmp_path)
    now = time.time()
    make_recording(s.directory, "older", now - 100, 32000)
    newer = make_recording(s.directory, "newer", now - 10, 64000)

    listed = rec.listing(s.directory, active=[newer])

    assert [Path(r["file"]).stem for r in listed] == ["newer", "older"]
    assert [r["duration"] for r in listed] == [2.0, 1.0]
    assert [r["recording"] for r in listed] == [True, False]
    assert [r["repaired"] for r in listed] == [False, False]


# --- recordings in progress -------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path):
    s = settings(tmp_path)
    low: list[tuple[int, str]] = []
    r = rec.Recordings(lambda: s, lambda: "Anna", lambda row, why: low.append((row, why)))
    r.low = low  # type: ignore[attr-defined]
    yield r
    for row in list(r._active):
        r.finish(row, "test over").result(5)


def test_begin_makes_0640_files_and_a_sidecar_with_end_null(store: rec.Recordings, tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        wav = store.begin(1, line="main", direction="out", remote="sip:2001@pbx", route="city")
    finally:
        os.umask(old)

    side = rec.sidecar_of(wav)
    assert stat.S_IMODE(wav.stat().st_mode) == 0o640 and stat.S_IMODE(side.stat().st_mode) == 0o640
    meta = json.loads(side.read_text())
    assert meta["end"] is None and meta["duration"] is None
    assert (meta["line"], meta["direction"], meta["remote"], meta["route"], meta["operator"]) == \
        ("main", "out", "sip:2001@pbx", "city", "Anna")
    assert meta["parties"] == ["sip:2001@pbx"] and meta["hold"] == [] and meta["sample_rate"] == RATE
    assert wav.name.endswith("_main_out_2001_pbx_1.wav")


def test_two_recordings_of_one_call_in_one_second_do_not_collide(store: rec.Recordings) -> None:
    first = store.begin(1, line="main", direction="out", remote="sip:2001@pbx", route=None)
    store.finish(1, "stopped").result(5)
    second = store.begin(1, line="main", direction="out", remote="sip:2001@pbx", route=None)
    assert first != second and first.exists() and second.exists()


def test_begin_is_refused_below_min_free(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(tmp_path, min_free_mb=50)
    monkeypatch.setattr(rec, "free_bytes", lambda d: 10 * 1024 * 1024)
    store = rec.Recordings(lambda: s)
    with pytest.raises(rec.RecordingRefused, match=r"only 10.0 MB free .* at least 50 MB"):
        store.begin(1, line="main", direction="in", remote="sip:2001@pbx", route=None)
    assert not list(s.directory.glob("*"))


def test_hold_spans_and_parties_are_kept_and_completed_at_the_end(store: rec.Recordings) -> None:
    wav = store.begin(1, line="main", direction="out", remote="sip:2001@pbx", route=None)
    store.hold(1, local=True, remote=False)
    assert json.loads(rec.sidecar_of(wav).read_text())["hold"][0]["end"] is None  # a crash keeps the mark
    store.hold(1, local=False, remote=False)
    store.hold(1, local=False, remote=True)
    store.parties(1, ["sip:2001@pbx", "sip:2002@pbx"])
    wav.write_bytes(rec._canonical_header(RATE, 0)[:40] + b"\0\0\0\0" + tone(1.0))  # what pjmedia wrote

    store.finish(1, "call ended: 200 OK").result(5)

    meta = json.loads(rec.sidecar_of(wav).read_text())
    assert [s["by"] for s in meta["hold"]] == ["local", "remote"]
    assert all(s["end"] is not None for s in meta["hold"])
    assert meta["parties"] == ["sip:2001@pbx", "sip:2002@pbx"]
    assert meta["end"] and meta["duration"] == 1.0 and meta["stopped"] == "call ended: 200 OK"
    assert frames(wav) == RATE  # the header was checked (and here fixed) after the writer closed
    assert not store.is_active(1)


def test_retention_runs_when_a_recording_ends_and_spares_the_running_one(tmp_path: Path) -> None:
    s = settings(tmp_path, max_total_mb=1)
    old = make_recording(s.directory, "old", time.time() - 1000, 700 * 1024)
    store = rec.Recordings(lambda: s)
    running = store.begin(1, line="main", direction="in", remote="sip:2001@pbx", route=None)
    finished = store.begin(2, line="main", direction="in", remote="sip:2002@pbx", route=None)
    running.write_bytes(rec._canonical_header(RATE, 0) + b"\0" * 400 * 1024)

    store.finish(2, "call ended").result(5)
    deadline = time.monotonic() + 5
    while old.exists() and time.monotonic() < deadline:
        time.sleep(0.02)

    assert not old.exists() and running.exists() and finished.exists()
    store.finish(1, "call ended").result(5)


def test_abort_removes_the_files_of_a_recording_that_never_started(store: rec.Recordings) -> None:
    wav = store.begin(1, line="main", direction="out", remote="sip:2001@pbx", route=None)
    store.abort(1)
    assert not wav.exists() and not rec.sidecar_of(wav).exists()


def test_low_space_during_a_recording_asks_for_a_clean_stop(store: rec.Recordings,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rec, "SPACE_INTERVAL", 0.05)
    store.begin(1, line="main", direction="out", remote="sip:2001@pbx", route=None)
    monkeypatch.setattr(rec, "free_bytes", lambda d: 1024)
    deadline = time.monotonic() + 5
    while not store.low and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.02)
    assert store.low and store.low[0][0] == 1 and "MB free" in store.low[0][1]  # type: ignore[attr-defined]


# --- through the desk (fake agent) ---------------------------------------------------------------


@pytest.fixture
def desk(tmp_path: Path):
    agent = FakeAgent()
    d = Desk(make_profile(recordings=tmp_path / "rec"), agent)
    d.start()
    agent.register_all(d.profile)
    yield d, agent
    d.stop()


def answered(desk: Desk, agent: FakeAgent) -> int:
    call = agent.ring("sip:2001@pbx.test")
    agent.talking(call)
    desk.select([call]).wait()
    return call


def test_desk_records_marks_hold_and_completes_the_sidecar_at_hang_up(desk) -> None:
    d, agent = desk
    call = answered(d, agent)
    wav = Path(d.record("start").wait().data["file"])

    agent.emit(ev.CallMedia(call, local_hold=True, remote_hold=False))
    agent.emit(ev.CallMedia(call, local_hold=False, remote_hold=False))
    agent.ended(call)
    d.recording_files.finish(call, "again").result(5)  # already finishing: waits for nothing new

    deadline = time.monotonic() + 5
    while json.loads(rec.sidecar_of(wav).read_text())["end"] is None and time.monotonic() < deadline:
        time.sleep(0.02)
    meta = json.loads(rec.sidecar_of(wav).read_text())
    assert meta["end"] and meta["stopped"].startswith("call ended")
    assert [s["by"] for s in meta["hold"]] == ["local"]
    listed = d.recordings().wait().data["recordings"]
    assert [r["file"] for r in listed] == [str(wav)] and listed[0]["recording"] is False


def test_stop_returns_with_the_sidecar_complete(desk) -> None:
    d, agent = desk
    answered(d, agent)
    wav = Path(d.record("start").wait().data["file"])
    assert d.record("stop").wait().ok
    assert json.loads(rec.sidecar_of(wav).read_text())["stopped"] == "stopped by the operator"


def test_start_refused_when_the_disk_is_low_and_the_call_goes_on(desk, monkeypatch: pytest.MonkeyPatch) -> None:
    d, agent = desk
    call = answered(d, agent)
    monkeypatch.setattr(rec, "free_bytes", lambda directory: 0)
    out = d.record("start").wait()
    assert not out.ok and "MB free" in out.reason
    assert agent.requests("record") == [] and d.rows[call].state == "talking"


def test_global_recording_with_a_full_disk_alerts_and_the_call_goes_on(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    agent = FakeAgent()
    d = Desk(make_profile(recordings=tmp_path / "rec", record_always=True), agent)
    seen: list[ev.Event] = []
    d.subscribe(seen.append)
    d.start()
    agent.register_all(d.profile)
    monkeypatch.setattr(rec, "free_bytes", lambda directory: 0)

    call = answered(d, agent)

    assert any(isinstance(e, ev.Alert) and "not recorded" in e.message for e in seen)
    assert not d.rows[call].recording and d.rows[call].state == "talking"
    assert agent.requests("record") == []


def test_low_space_mid_recording_stops_it_with_an_alert(desk, monkeypatch: pytest.MonkeyPatch) -> None:
    d, agent = desk
    monkeypatch.setattr(rec, "SPACE_INTERVAL", 0.05)
    seen: list[ev.Event] = []
    d.subscribe(seen.append)
    call = answered(d, agent)
    wav = Path(d.record("start").wait().data["file"])

    monkeypatch.setattr(rec, "free_bytes", lambda directory: 0)
    deadline = time.monotonic() + 5
    while d.rows[call].recording and time.monotonic() < deadline:
        time.sleep(0.02)

    assert not d.rows[call].recording and d.rows[call].state == "talking"
    assert agent.requests("record")[-1] == (call, None)
    assert any(isinstance(e, ev.Alert) and "recording of call" in e.message for e in seen)
    deadline = time.monotonic() + 5
    while json.loads(rec.sidecar_of(wav).read_text())["end"] is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "MB free" in json.loads(rec.sidecar_of(wav).read_text())["stopped"]
