"""Recordings on disk: names, JSON sidecars, crash repair, free space, retention, listing.

pjsua2's recorder only writes WAV bytes. Everything that turns those bytes into
a recording an operator can find and trust lives here, in plain Python with no
pjsua2 import, so it is tested in milliseconds and runs before the agent exists:

- **Names and sidecars.** One WAV per recording, named
  `<date-time>_<line>_<in|out>_<remote>_<row>.wav`, beside a JSON sidecar of
  the same name (start, end, line, route, operator, parties, hold spans,
  sample rate, duration). The sidecar is written when the recording starts
  (with `end: null`) and completed when it ends, so a crash leaves a sidecar
  that says so. Both files are created 0640 before pjsua2 opens the WAV (it
  truncates an existing file and keeps its mode), so no reader ever sees them
  with the umask's wider mode.
- **Nothing lost.** A SIGKILL or power cut leaves the WAV's RIFF/data sizes at
  0 (pjmedia writes them only when the recorder is destroyed). `startup()`
  repairs those headers from the file length, keeping every byte of audio that
  reached the disk, and completes the sidecar. While a recording runs, a
  supervisor thread fsyncs it every second (the page cache survives a
  SIGKILL, not a power cut), and watches free space: below the profile's
  `min_free_mb` the recording is stopped cleanly rather than left to pjmedia's
  writer, which stops silently on a full disk and leaves a header that
  overstates the audio (we check the header again after every recording).
- **Retention.** `max_age_days` and `max_total_mb`: oldest first, never a
  recording in progress; at start-up and after each recording ends.

Hold periods are marked in the sidecar as `hold` spans (seconds from the start
of the recording, and who held: `local` or `remote`); the agent feeds a
locally held call's recorder with silence, so the file's timeline stays the
wall clock's and a span's offsets are positions in the audio.
"""

from __future__ import annotations

import copy
import datetime as _dt
import errno
import json
import logging
import os
import re
import struct
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .profile import Recording

log = logging.getLogger("kiosk.recordings")

#: The conference bridge's clock (agent/thread.py sets 16 kHz mono): what the
#: recorder writes, and what a WAV whose header never reached the disk is given.
BRIDGE_RATE = 16000
#: Bytes of the canonical WAV header pjmedia writes (RIFF, fmt, data).
HEADER_BYTES = 44
#: Mode of recordings and sidecars: the operator's group may read, nobody else.
FILE_MODE = 0o640
DIR_MODE = 0o750
#: How often an active recording is fsynced: bounds what a power cut loses.
SYNC_INTERVAL = 1.0
#: How often free space is checked while recording.
SPACE_INTERVAL = 2.0
#: Below this much free space a disk counts as full whatever `min_free_mb` says.
FULL_BYTES = 64 * 1024
#: A recording whose file has not grown for this long has a writer that gave up.
STALL_SECONDS = 6.0
#: How long a finished recording may take to be closed by pjmedia's clock thread.
CLOSE_TIMEOUT = 3.0
#: Sidecars are padded to this size when first written, so the final update can
#: overwrite in place when the disk is too full for a new file.
SIDECAR_RESERVE = 4096
SIDECAR_VERSION = 1


class RecordingRefused(Exception):
    """A recording cannot start: a catalogue code and its parameters (kiosk.i18n); str() in English."""

    def __init__(self, message: str, code: str = "recording_refused", **params: Any) -> None:
        super().__init__(message)
        self.code = code
        self.params = params or {"reason": message}


# --- names ---------------------------------------------------------------------


def remote_label(remote: str) -> str:
    """The file-name form of a remote party: `"Ann" <sip:2001@pbx:5060;x>` -> `2001_pbx_5060`."""
    text = remote.strip()
    m = re.search(r"<([^>]*)>", text)
    if m:
        text = m.group(1)
    text = re.sub(r"^sips?:", "", text).split(";", 1)[0]
    text = re.sub(r"[^A-Za-z0-9+._-]+", "_", text).strip("._-")
    return text[:48] or "unknown"


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9+._-]+", "_", part).strip("._-")[:32] or "x"


def file_stem(started: float, line: str, direction: str, remote: str, row: int) -> str:
    """`<YYYYmmdd-HHMMSS>_<line>_<in|out>_<remote>_<row>`: sorts by time, says who, never collides in a call."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    return f"{stamp}_{_safe(line)}_{_safe(direction)}_{remote_label(remote)}_{row}"


def sidecar_of(wav: Path) -> Path:
    return wav.with_suffix(".json")


def _iso(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="milliseconds")


# --- WAV headers -----------------------------------------------------------------


@dataclass(frozen=True)
class WavHeader:
    """What a WAV file's header says, next to what the file really holds."""

    file_size: int
    riff_size: int
    channels: int
    rate: int
    bits: int
    data_offset: int
    data_size: int

    @property
    def block_align(self) -> int:
        return max(1, self.channels * self.bits // 8)

    @property
    def data_on_disk(self) -> int:
        """Whole samples between the data chunk's start and the end of the file."""
        avail = max(0, self.file_size - self.data_offset)
        return avail - avail % self.block_align

    @property
    def consistent(self) -> bool:
        return self.riff_size == self.file_size - 8 and self.data_size == self.data_on_disk

    @property
    def duration(self) -> float:
        """Seconds of audio the file holds (from its length, not from the header's claim)."""
        return self.data_on_disk / (self.block_align * self.rate) if self.rate else 0.0


def read_header(path: Path) -> WavHeader | None:
    """Parse a WAV's RIFF, fmt and data chunks; None when the file is not a (started) WAV."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    riff = struct.unpack("<I", head[4:8])[0]
    fmt: tuple[int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(head):
        cid, csize = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        body = pos + 8
        if cid == b"fmt " and body + 16 <= len(head):
            _tag, channels, rate = struct.unpack("<HHI", head[body:body + 8])
            bits = struct.unpack("<H", head[body + 14:body + 16])[0]
            fmt = (channels, rate, bits)
        elif cid == b"data":
            if fmt is None:
                return None
            return WavHeader(size, riff, fmt[0], fmt[1], fmt[2], body, csize)
        pos = body + csize + (csize & 1)
    return None


def _canonical_header(rate: int, data_size: int, channels: int = 1, bits: int = 16) -> bytes:
    align = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * align, align, bits)
            + b"data" + struct.pack("<I", data_size))


def repair_wav(path: Path, rate: int = BRIDGE_RATE) -> str | None:
    """Make the header's RIFF/data sizes match the file's length; what was fixed, or None.

    Every byte of audio on disk is kept: only the two size fields change. A
    file shorter than a header (killed before stdio flushed even that) becomes
    an empty WAV at `rate`, so that it still opens.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot read it: {exc.strerror}"
    hdr = read_header(path)
    if hdr is None:
        if size >= HEADER_BYTES:  # pjmedia writes its header first: this is somebody else's file
            log.warning("%s: not a WAV file (no RIFF/fmt/data header); left as it is", path)
            return None
        with open(path, "r+b") as f:
            f.write(_canonical_header(rate, 0))
            f.truncate(HEADER_BYTES)
            f.flush()
            os.fsync(f.fileno())
        return f"the header never reached the disk ({size} bytes): now an empty WAV"
    if hdr.consistent:
        return None
    old_riff, old_data = hdr.riff_size, hdr.data_size
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(struct.pack("<I", hdr.file_size - 8))
        f.seek(hdr.data_offset - 4)
        f.write(struct.pack("<I", hdr.data_on_disk))
        f.flush()
        os.fsync(f.fileno())
    return (f"header sizes RIFF {old_riff} / data {old_data} fixed to {hdr.file_size - 8} / "
            f"{hdr.data_on_disk} ({hdr.duration:.2f} s of audio)")


# --- sidecars ----------------------------------------------------------------------


def read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_sidecar(path: Path, meta: dict[str, Any]) -> None:
    """Write the sidecar atomically; on a full disk, overwrite it in place within its reserved size.

    JSON allows trailing whitespace, so the first write pads the file to
    SIDECAR_RESERVE bytes: the blocks that the final update needs are then
    already the file's, whatever the disk's state by then.
    """
    body = json.dumps(meta, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"
    padded = body + b" " * max(0, SIDECAR_RESERVE - len(body) - 1) + b"\n" if len(body) < SIDECAR_RESERVE else body
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            _write_all(fd, padded)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not path.exists():
            raise
    with open(path, "r+b") as f:  # disk full: reuse the blocks the sidecar already has
        have = os.fstat(f.fileno()).st_size
        if len(body) > have:
            raise OSError(errno.ENOSPC, f"disk full and the sidecar outgrew its {have} reserved bytes")
        f.write(body + b" " * (have - len(body) - 1) + b"\n")
        f.flush()
    log.warning("%s: disk full, sidecar updated in place", path.name)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- free space ------------------------------------------------------------------


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def space_problem(directory: Path, min_free_mb: int) -> str | None:
    """Why the disk cannot take a recording now, or None when it can."""
    try:
        free = free_bytes(directory)
    except OSError as exc:
        return f"cannot check free space in {directory}: {exc.strerror}"
    if free < FULL_BYTES or free < min_free_mb * 1024 * 1024:
        return (f"only {free / 1048576:.1f} MB free in {directory} "
                f"(the profile wants at least {min_free_mb} MB)")
    return None


# --- what is on disk -------------------------------------------------------------


@dataclass
class Entry:
    """One recording on disk: its WAV, its sidecar (if any) and what they say."""

    wav: Path
    meta: dict[str, Any]
    size: int  # WAV + sidecar bytes
    start: float  # epoch: the sidecar's start, else the WAV's mtime

    @property
    def sidecar(self) -> Path:
        return sidecar_of(self.wav)


def scan(directory: Path) -> list[Entry]:
    """Every WAV in the directory with its sidecar, oldest first."""
    entries: list[Entry] = []
    try:
        wavs = [p for p in directory.iterdir() if p.suffix == ".wav" and p.is_file()]
    except FileNotFoundError:
        return []
    for wav in wavs:
        try:
            st = wav.stat()
        except OSError:
            continue
        meta = read_sidecar(sidecar_of(wav)) or {}
        size = st.st_size
        try:
            size += sidecar_of(wav).stat().st_size
        except OSError:
            pass
        start = meta.get("start_epoch")
        entries.append(Entry(wav, meta, size, float(start) if isinstance(start, (int, float)) else st.st_mtime))
    entries.sort(key=lambda e: (e.start, e.wav.name))
    return entries


def listing(directory: Path, active: Iterable[Path] = ()) -> list[dict[str, Any]]:
    """The recordings as the operator sees them, newest first."""
    busy = {Path(p) for p in active}
    out = []
    for e in reversed(scan(directory)):
        m = e.meta
        duration = m.get("duration")
        if duration is None and e.wav not in busy:
            hdr = read_header(e.wav)
            duration = round(hdr.duration, 2) if hdr else None
        out.append({
            "file": str(e.wav),
            "start": m.get("start") or _iso(e.start),
            "end": m.get("end"),
            "duration": duration,
            "line": m.get("line"),
            "direction": m.get("direction"),
            "remote": m.get("remote"),
            "parties": m.get("parties", []),
            "repaired": bool(m.get("repaired", False)),
            "recording": e.wav in busy,
            "size": e.size,
        })
    return out


def apply_retention(settings: Recording, active: Iterable[Path] = (), now: float | None = None) -> list[Path]:
    """Remove recordings past `max_age_days`, then the oldest until under `max_total_mb`; never an active one."""
    if settings.max_age_days is None and settings.max_total_mb is None:
        return []
    busy = {Path(p) for p in active}
    now = time.time() if now is None else now
    entries = scan(settings.directory)
    removed: list[Path] = []

    def remove(e: Entry, why: str) -> bool:
        try:
            e.wav.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("retention: cannot remove %s: %s", e.wav, exc.strerror)
            return False
        try:
            e.sidecar.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("retention: cannot remove %s: %s", e.sidecar, exc.strerror)
        log.info("retention: removed %s (%s)", e.wav.name, why)
        removed.append(e.wav)
        return True

    keep: list[Entry] = []
    for e in entries:
        if (settings.max_age_days is not None and e.wav not in busy
                and now - e.start > settings.max_age_days * 86400 and remove(e, f"older than {settings.max_age_days} days")):
            continue
        keep.append(e)
    if settings.max_total_mb is not None:
        limit = settings.max_total_mb * 1024 * 1024
        total = sum(e.size for e in keep)
        for e in keep:  # oldest first
            if total <= limit:
                break
            if e.wav in busy:
                continue
            if remove(e, f"recordings above {settings.max_total_mb} MB"):
                total -= e.size
    return removed


def repair_all(settings: Recording) -> list[str]:
    """Repair every WAV and complete every sidecar left by a crash; one message per file fixed."""
    messages: list[str] = []
    for e in scan(settings.directory):
        try:
            st = e.wav.stat()
        except OSError:
            continue
        mtime = st.st_mtime  # the writer's last write: when the recording really ended
        fixed = repair_wav(e.wav, int(e.meta.get("sample_rate") or BRIDGE_RATE))
        if fixed:
            os.utime(e.wav, ns=(st.st_atime_ns, st.st_mtime_ns))  # our header fix is not the recording's end
        meta = dict(e.meta)
        if fixed is None and (not meta or meta.get("end") is not None):
            continue
        hdr = read_header(e.wav)
        if not meta:
            meta = {"version": SIDECAR_VERSION, "file": e.wav.name, "start": _iso(mtime - (hdr.duration if hdr else 0)),
                    "start_epoch": mtime - (hdr.duration if hdr else 0), "hold": [], "parties": []}
        if meta.get("end") is None:
            meta["end"], meta["end_epoch"] = _iso(mtime), mtime
            for span in meta.get("hold", []):
                if span.get("end") is None:
                    span["end"] = round(mtime - float(meta.get("start_epoch", mtime)), 2)
            meta["stopped"] = meta.get("stopped") or "the unit stopped without closing it (crash or power cut)"
        if hdr is not None:
            meta["duration"] = round(hdr.duration, 2)
            meta["sample_rate"] = hdr.rate
        meta["repaired"] = True
        meta["repair"] = fixed or "sidecar completed at start-up"
        try:
            write_sidecar(e.sidecar, meta)
        except OSError as exc:
            log.error("repair: cannot complete %s: %s", e.sidecar, exc)
        message = f"repaired recording {e.wav}: {meta['repair']}"
        log.warning("%s", message)
        messages.append(message)
    return messages


def startup(settings: Recording) -> list[str]:
    """At start-up, before the agent: create the directory, repair what a crash left, apply retention."""
    settings.directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    messages = repair_all(settings)
    for path in apply_retention(settings):
        messages.append(f"retention removed {path}")
    return messages


# --- recordings in progress ------------------------------------------------------


@dataclass
class Active:
    """A recording in progress: its files, its sidecar so far, and what the supervisor watches."""

    row: int
    wav: Path
    meta: dict[str, Any]
    began: float  # epoch
    fd: int | None = None  # read-only, for fsync (fsync flushes the file whatever the fd's mode)
    size: int = -1
    grew: float = field(default_factory=time.monotonic)
    held: dict[str, bool] = field(default_factory=lambda: {"local": False, "remote": False})
    stopping: bool = False
    asked_stop: bool = False  # the desk was asked to stop it (low space): ask once
    done: bool = False  # the final sidecar is written: no later update may overwrite it


class Recordings:
    """The recordings the desk makes: started, marked (hold, parties), supervised, finished.

    Thread-safe: the desk calls it from front-end threads and the agent thread;
    its own supervisor thread fsyncs, watches free space and finishes
    recordings (waiting for pjmedia's clock thread to close the WAV, checking
    its header, completing the sidecar, then retention). The thread runs only
    while there is something to watch or finish.
    """

    def __init__(self, settings: Callable[[], Recording], operator: Callable[[], str] = lambda: "",
                 on_low_space: Callable[[int, str], None] = lambda row, why: None) -> None:
        self._settings = settings
        self._operator = operator
        self.on_low_space = on_low_space
        self._active: dict[int, Active] = {}
        self._jobs: list[tuple[Active, str, float, Future[None]]] = []
        self._cv = threading.Condition()
        self._write = threading.Lock()  # sidecar writes in order: the newest state always lands last
        self._thread: threading.Thread | None = None

    # --- the desk's side ---------------------------------------------------------

    def begin(self, row: int, *, line: str, direction: str, remote: str, route: str | None,
              parties: Iterable[str] = ()) -> Path:
        """Check space, create the WAV (0640, empty) and its sidecar (`end: null`); the path for the agent."""
        settings = self._settings()
        directory = settings.directory
        with self._cv:
            if row in self._active:
                raise RecordingRefused(f"call {row} is already being recorded", "already_recording", row=row)
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        except OSError as exc:
            raise RecordingRefused(f"cannot use the recordings directory {directory}: {exc.strerror}",
                                   "recordings_dir_unusable", directory=str(directory), error=exc.strerror) from None
        problem = space_problem(directory, settings.min_free_mb)
        if problem:
            raise RecordingRefused(f"not recording: {problem}", "recording_no_space", problem=problem)
        now = time.time()
        stem = file_stem(now, line, direction, remote, row)
        wav = self._create(directory, stem)
        meta: dict[str, Any] = {
            "version": SIDECAR_VERSION, "file": wav.name,
            "start": _iso(now), "start_epoch": round(now, 3), "end": None, "end_epoch": None,
            "line": line, "direction": direction, "remote": remote, "route": route,
            "operator": self._operator(), "parties": list(dict.fromkeys([remote, *parties])),
            "hold": [], "sample_rate": BRIDGE_RATE, "channels": 1, "duration": None,
            "row": row, "stopped": None, "repaired": False,
        }
        try:
            write_sidecar(sidecar_of(wav), meta)
        except OSError as exc:
            wav.unlink(missing_ok=True)
            raise RecordingRefused(f"cannot write the recording's sidecar: {exc.strerror or exc}",
                                   "recording_sidecar_failed", error=str(exc.strerror or exc)) from None
        with self._cv:
            self._active[row] = Active(row, wav, meta, now)
            self._ensure_thread()
        log.info("row %d: recording to %s", row, wav)
        return wav

    def _create(self, directory: Path, stem: str) -> Path:
        for n in range(1, 100):
            wav = directory / (f"{stem}.wav" if n == 1 else f"{stem}-{n}.wav")
            try:
                fd = os.open(wav, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            except FileExistsError:
                continue
            except OSError as exc:
                raise RecordingRefused(f"cannot create {wav}: {exc.strerror}", "recording_create_failed",
                                       file=str(wav), error=exc.strerror) from None
            os.fchmod(fd, FILE_MODE)  # whatever the umask
            os.close(fd)
            return wav
        raise RecordingRefused(f"too many recordings named {stem} already", "recording_name_clash", stem=stem)

    def abort(self, row: int) -> None:
        """The agent could not start the recorder: remove the files made for it."""
        with self._cv:
            active = self._active.pop(row, None)
        if active is None:
            return
        self._close_fd(active)
        for path in (active.wav, sidecar_of(active.wav)):
            try:
                path.unlink()
            except OSError:
                pass

    def is_active(self, row: int) -> bool:
        with self._cv:
            return row in self._active

    def active_paths(self) -> set[Path]:
        with self._cv:
            return {a.wav for a in self._active.values()}

    def hold(self, row: int, local: bool, remote: bool) -> None:
        """The call's hold state after an offer/answer: open or close hold spans."""
        with self._cv:
            active = self._active.get(row)
            if active is None:
                return
            now = round(time.time() - active.began, 2)
            changed = False
            for by, held in (("local", local), ("remote", remote)):
                if held == active.held[by]:
                    continue
                active.held[by] = held
                changed = True
                if held:
                    active.meta["hold"].append({"by": by, "start": now, "end": None})
                else:
                    for span in reversed(active.meta["hold"]):
                        if span["by"] == by and span["end"] is None:
                            span["end"] = now
                            break
        if changed:
            self._save(active)

    def parties(self, row: int, remotes: Iterable[str]) -> None:
        """More parties are heard in this recording (a conference joined)."""
        with self._cv:
            active = self._active.get(row)
            if active is None:
                return
            merged = list(dict.fromkeys([*active.meta["parties"], *remotes]))
            if merged == active.meta["parties"]:
                return
            active.meta["parties"] = merged
        self._save(active)

    def finish(self, row: int, reason: str) -> Future[None]:
        """The recorder was released (stop, hang-up, low space): complete the files in the background.

        The returned Future is done when the sidecar is complete; a row that
        is not being recorded gives one that is already done.
        """
        fut: Future[None] = Future()
        with self._cv:
            active = self._active.get(row)
            if active is None or active.stopping:
                fut.set_result(None)
                return fut
            active.stopping = True
            self._jobs.append((active, reason, time.time(), fut))
            self._ensure_thread()
            self._cv.notify_all()
        return fut

    def entries(self) -> list[dict[str, Any]]:
        """What `kiosk ctl recordings` shows: every recording, newest first."""
        return listing(self._settings().directory, self.active_paths())

    def close(self, timeout: float = 5.0) -> None:
        """At shutdown (the agent stopped, so pjmedia closed every file): finish what is left."""
        with self._cv:
            rows = [r for r, a in self._active.items() if not a.stopping]
        futures = [self.finish(r, "the unit stopped") for r in rows]
        deadline = time.monotonic() + timeout
        with self._cv:
            pending = [j[3] for j in self._jobs]
        for fut in [*futures, *pending]:
            try:
                fut.result(max(0.0, deadline - time.monotonic()))
            except Exception:
                log.warning("recordings: not all sidecars were completed at shutdown")
                break

    # --- the supervisor thread -----------------------------------------------------

    def _ensure_thread(self) -> None:
        # caller holds self._cv
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._supervise, name="recordings", daemon=True)
            self._thread.start()

    def _supervise(self) -> None:
        next_sync = next_space = time.monotonic()
        while True:
            with self._cv:
                if not self._jobs and not self._active:
                    self._thread = None
                    return
                if not self._jobs:
                    self._cv.wait(max(0.0, min(next_sync, next_space) - time.monotonic()))
                jobs, self._jobs = self._jobs, []
                watched = [a for a in self._active.values() if not a.stopping]
            for job in jobs:
                self._complete(*job)
            now = time.monotonic()
            if now >= next_sync:
                next_sync = now + SYNC_INTERVAL
                for active in watched:
                    self._sync(active)
            if now >= next_space:
                next_space = now + SPACE_INTERVAL
                self._watch_space(watched)

    def _sync(self, active: Active) -> None:
        """fsync the WAV (and, once, the sidecar and directory): what reached the kernel survives a power cut."""
        # abort() (desk thread) and _complete() close the fd; what was watched a moment ago may
        # be over now: never fsync a None, never open an fd for a recording that is done.
        with self._cv:
            if active.done or self._active.get(active.row) is not active:
                return
            fd = active.fd
        try:
            if fd is None:
                fd = os.open(active.wav, os.O_RDONLY)
                _fsync_path(sidecar_of(active.wav))
                _fsync_path(active.wav.parent)
                with self._cv:
                    keep = active.fd is None and not active.done and self._active.get(active.row) is active
                    if keep:
                        active.fd = fd
                if not keep:
                    os.close(fd)
                    return
            os.fsync(fd)
            size = os.fstat(fd).st_size
        except OSError as exc:  # EBADF included: closed by abort() in the meantime
            log.debug("row %d: fsync of %s: %s", active.row, active.wav.name, exc)
            return
        if size != active.size:
            active.size, active.grew = size, time.monotonic()

    def _watch_space(self, watched: list[Active]) -> None:
        if not watched:
            return
        settings = self._settings()
        problem = space_problem(settings.directory, settings.min_free_mb)
        for active in watched:
            reason = problem
            if reason is None and active.fd is not None and time.monotonic() - active.grew > STALL_SECONDS:
                reason = f"the recording has not grown for {STALL_SECONDS:.0f} s (the disk refuses writes)"
            if reason is None:
                continue
            with self._cv:
                if active.stopping or active.asked_stop or self._active.get(active.row) is not active:
                    continue
                active.asked_stop = True
            log.warning("row %d: stopping the recording: %s", active.row, reason)
            try:
                self.on_low_space(active.row, reason)
            except Exception:
                log.exception("row %d: low-space stop failed", active.row)

    def _complete(self, active: Active, reason: str, ended: float, fut: Future[None]) -> None:
        """Wait for pjmedia to close the WAV, check its header, complete the sidecar, apply retention."""
        try:
            self._close_fd(active)
            deadline = time.monotonic() + CLOSE_TIMEOUT
            while _open_here(active.wav) and time.monotonic() < deadline:
                time.sleep(0.01)
            if _open_here(active.wav):
                log.warning("row %d: %s still open after %.0f s; checking it anyway", active.row,
                            active.wav.name, CLOSE_TIMEOUT)
            with self._cv:
                meta = copy.deepcopy(active.meta)
            fixed = repair_wav(active.wav)
            if fixed:  # e.g. the disk filled: pjmedia's header counts bytes that never reached the disk
                log.warning("row %d: %s: %s", active.row, active.wav.name, fixed)
                meta["repair"] = fixed
            hdr = read_header(active.wav)
            meta["end"], meta["end_epoch"] = _iso(ended), round(ended, 3)
            offset = round(ended - active.began, 2)
            meta["hold"] = [dict(s, end=offset if s["end"] is None else s["end"]) for s in meta["hold"]]
            meta["duration"] = round(hdr.duration, 2) if hdr else 0.0
            if hdr:
                meta["sample_rate"], meta["channels"] = hdr.rate, hdr.channels
            meta["stopped"] = reason
            with self._write:
                active.done = True
                try:
                    write_sidecar(sidecar_of(active.wav), meta)
                except OSError as exc:
                    log.error("row %d: cannot complete %s: %s", active.row, sidecar_of(active.wav).name, exc)
            _fsync_path(active.wav)
            _fsync_path(sidecar_of(active.wav))
            _fsync_path(active.wav.parent)
            log.info("row %d: recording %s ended (%s), %.1f s", active.row, active.wav.name, reason,
                     meta["duration"])
        except Exception as exc:
            log.exception("row %d: finishing %s failed", active.row, active.wav)
            fut.set_exception(exc)
        finally:
            with self._cv:
                if self._active.get(active.row) is active:
                    del self._active[active.row]
        if not fut.done():
            fut.set_result(None)
        try:
            apply_retention(self._settings(), self.active_paths())
        except OSError as exc:
            log.warning("retention failed: %s", exc)

    def _close_fd(self, active: Active) -> None:
        if active.fd is not None:
            try:
                os.close(active.fd)
            except OSError:
                pass
            active.fd = None

    def _save(self, active: Active) -> None:
        """Rewrite a running recording's sidecar with its newest state (a crash then keeps the marks)."""
        with self._write:
            with self._cv:
                if active.done:
                    return
                meta = copy.deepcopy(active.meta)
            try:
                write_sidecar(sidecar_of(active.wav), meta)
            except OSError as exc:
                log.warning("cannot update %s: %s", sidecar_of(active.wav).name, exc)


def _open_here(path: Path) -> bool:
    """Whether this process still has the file open (pjmedia closes it on its clock thread, later)."""
    target = os.path.realpath(path)
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False
