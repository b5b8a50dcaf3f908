"""Call history: every call the desk handled, in one SQLite file that survives a crash or a power cut.

Why it is built this way:

- The desk calls `begin`, `answered`, `update`, `end`, `record` and `mark_seen` from its asyncio loop
  thread, which must never wait on a disk (an fsync on an SD card can take hundreds of milliseconds).
  Those calls only change an in-memory copy under a short lock and put an operation on a queue; one
  writer thread owns the writing connection and applies the operations in order, many to a
  transaction. Entry ids are handed out in memory (continuing the file's AUTOINCREMENT sequence), so
  `end` can return the entry's id at once and the desk can announce it.
- Every operation on a call writes the call's whole current state (an upsert), so a retried or late
  operation can never leave a half-written call, and `query`/`get` can lay the in-memory copies of calls
  not yet written over what the file says: a call is visible the moment `end` returns.
- The writer's connection runs with ``synchronous=FULL`` in WAL mode: when `flush` returns, every call
  ended before it is on the disk and a SIGKILL or a power cut loses none of it. Readers use a
  connection of their own (WAL: they never wait for the writer).
- A call still open when the unit died has no outcome in the file. `open` closes such calls: not
  answered incoming -> "missed", outgoing -> "failed", answered -> "answered", reason "unit restarted",
  ended = the last time the unit was known to be running with it (the writer refreshes that time every
  `HEARTBEAT_SECONDS` while calls are open).
- Search must be case-insensitive in Russian too; SQLite's LIKE and lower() fold ASCII only. Each row
  therefore stores a folded copy of its searchable text (NFKC, casefold, ё = е) and the digits of its
  number; a query is folded the same way in Python and matched with instr().
- The number of missed calls not yet seen (the badge on the screen) is kept in memory, exact with
  respect to queued writes, so the desk can read it on its loop without touching the disk.
- A write that fails (a full disk, an I/O error) is rolled back and retried a bounded number of times
  with a growing pause; the writer then keeps the operations (up to `MAX_PENDING`) and tries again
  when the next write or flush arrives. It never dies of it, it logs, and it reports through the
  optional ``on_error(code, params)`` callback (called on the writer thread: the desk must hand it to
  its loop with call_soon_threadsafe).
- Old calls go by age and by count (the profile's ``max_age_days`` and ``max_calls``) at `open` and every
  `RETENTION_EVERY` ended calls, in deletes of `RETENTION_BATCH` rows, each its own short transaction.
- The file, its -wal and -shm are 0600 and a directory created for it 0700: the history holds who
  called the operator and when.

Beyond the contract (all optional, nothing in it changes): ``on_error=`` in the constructor;
``open(move_corrupt_aside=True)``; ``mark_seen(entry_id)`` for one call (a callback); ``count(missed=,
search=)`` for the desk's "total"; ``record`` returns the new entry's id as ``end`` does.

Error codes (HistoryError.code; params in HistoryError.params and in on_error):
  history_unavailable {path, error}   the file or its directory cannot be created, opened or written
  history_corrupt {path, error, hint} the file is not a SQLite database or is damaged (left untouched,
                                      unless open(move_corrupt_aside=True): then also moved_to)
  history_schema_newer {path, version, supported}  written by a newer kiosk
  history_read_failed {path, error}   a query failed (raised by query/get)
  history_write_failed {path, error, pending}      reported via on_error (writes are kept, retried)
  history_write_lost {path, count}    reported via on_error: kept writes beyond MAX_PENDING dropped, or
                                      one the file refuses on its own (a bug: it must not hold back the rest)
  history_flush_timeout {path, timeout}  raised by flush when the writes are not on disk in time
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OUTCOMES = ("answered", "missed", "rejected", "busy", "failed", "transferred", "picked-up", "dnd")
DIRECTIONS = ("in", "out")
#: The fields `update` may change on a call in progress.
UPDATABLE = frozenset({"name", "number", "remote", "conference", "transferred_to", "recording"})
#: The fields of one entry as the contract gives them (the JSON of one call).
ENTRY_FIELDS = ("id", "direction", "line", "route", "remote", "name", "number", "via", "started", "answered",
                "ended", "duration", "outcome", "reason", "recording", "conference", "transferred_to", "seen")
#: What `record` accepts (duration is computed, id is handed out here).
RECORD_FIELDS = frozenset(ENTRY_FIELDS) - {"id", "duration"}
RESTART_REASON = "unit restarted"
#: Characters a typed or pasted phone number may contain besides digits.
NUMBER_PUNCTUATION = frozenset(" -().+/")

_umask_lock = threading.Lock()


class HistoryError(Exception):
    """The history cannot do what was asked: a code and its parameters for a translation, str() in English."""

    def __init__(self, code: str, params: dict[str, Any], message: str) -> None:
        super().__init__(message)
        self.code = code
        self.params = params
        self.message = message


# --- schema and migrations -----------------------------------------------------------------------------

def _schema_v1(db: sqlite3.Connection) -> None:
    """Version 1: the calls table and the indexes the desk's reads need."""
    db.execute("""
        CREATE TABLE calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
            line TEXT NOT NULL DEFAULT '',
            route TEXT,
            remote TEXT NOT NULL DEFAULT '',
            name TEXT NOT NULL DEFAULT '',
            number TEXT NOT NULL DEFAULT '',
            via TEXT NOT NULL DEFAULT '',
            started REAL NOT NULL,
            answered REAL,
            ended REAL,
            outcome TEXT,                      -- NULL while the call is in progress
            reason TEXT NOT NULL DEFAULT '',
            recording TEXT NOT NULL DEFAULT '',
            conference INTEGER NOT NULL DEFAULT 0,
            transferred_to TEXT NOT NULL DEFAULT '',
            seen INTEGER NOT NULL DEFAULT 0,
            alive REAL NOT NULL,               -- last time the unit was known to run with this call
            search TEXT NOT NULL DEFAULT '',   -- fold(name, number, remote, via), see fold()
            digits TEXT NOT NULL DEFAULT ''    -- the digits of the number (and of a numeric via)
        )""")
    # Newest first (every view, retention by count), and search: the index carries the folded text, so a
    # search walks it newest first without reading the rows and stops at `limit` matches. A substring
    # match cannot use a b-tree; walking this narrow index halves the time of walking the table (a search
    # that matches nothing scans all 100,000 entries, see bench/history.py). An FTS5 trigram index would
    # cost more space than the +30 % this costs and cannot find one- or two-letter queries.
    db.execute("CREATE INDEX calls_started ON calls (started, id, outcome, search, digits)")
    # the missed view, newest first
    db.execute("CREATE INDEX calls_outcome ON calls (outcome, started, id)")
    # the badge: missed and not seen
    db.execute("CREATE INDEX calls_missed_unseen ON calls (id) WHERE outcome = 'missed' AND seen = 0")
    # crash recovery and the heartbeat: calls in progress
    db.execute("CREATE INDEX calls_open ON calls (id) WHERE outcome IS NULL")


#: MIGRATIONS[i] takes a database at version i to version i + 1 (version 0 = an empty file). A new
#: version is one more function here: it runs in the same transaction as the version bump.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_schema_v1]


def schema_version() -> int:
    """The version this code writes: one per migration."""
    return len(MIGRATIONS)


# --- folding for search ------------------------------------------------------------------------------

def fold(text: str) -> str:
    """Text as search compares it: NFKC (full-width digits, ligatures), casefold (Cyrillic too), ё = е."""
    return unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")


def number_digits(text: str) -> str:
    """The digits of a phone number as typed ("+7 (495) 123-45-67" -> "74951234567"); "" if it is not one."""
    if not text or not any(c.isdigit() for c in text):
        return ""
    text = unicodedata.normalize("NFKC", text)
    if any(not c.isdigit() and c not in NUMBER_PUNCTUATION for c in text):
        return ""
    return "".join(c for c in text if c.isdigit())


def _search_text(entry: dict[str, Any]) -> str:
    # \x1f keeps a match from running across two fields
    return "\x1f".join(fold(str(entry.get(k) or "")) for k in ("name", "number", "remote", "via"))


def _digits_text(entry: dict[str, Any]) -> str:
    number = "".join(c for c in unicodedata.normalize("NFKC", str(entry.get("number") or "")) if c.isdigit())
    via = number_digits(str(entry.get("via") or ""))
    return f"{number}\x1f{via}" if via else number


# --- the writer's operations ----------------------------------------------------------------------------

@dataclass
class _Put:
    """Write this whole state of one call (insert or replace)."""
    id: int
    version: int
    row: dict[str, Any]
    epoch: int


@dataclass
class _Seen:
    """Mark missed calls seen: one entry, or (id None) every missed call written so far."""
    id: int | None
    epoch: int


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Stop:
    pass


#: Errors that come from one operation's values, not from the disk or the file.
_DATA_ERRORS = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, TypeError, ValueError,
                OverflowError)

_COLUMNS = ("id", "direction", "line", "route", "remote", "name", "number", "via", "started", "answered", "ended",
            "outcome", "reason", "recording", "conference", "transferred_to", "seen", "alive", "search", "digits")
_UPSERT = (f"INSERT INTO calls ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
           f"ON CONFLICT (id) DO UPDATE SET "
           + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "id"))
_READ_COLUMNS = ("id", "direction", "line", "route", "remote", "name", "number", "via", "started", "answered",
                 "ended", "outcome", "reason", "recording", "conference", "transferred_to", "seen")
_SELECT = f"SELECT {', '.join(_READ_COLUMNS)} FROM calls"


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    """The contract's JSON of one call from an internal copy or a row."""
    answered, ended = entry.get("answered"), entry.get("ended")
    duration = max(0.0, float(ended) - float(answered)) if answered is not None and ended is not None else 0.0
    return {
        "id": entry["id"], "direction": entry["direction"], "line": entry["line"], "route": entry["route"],
        "remote": entry["remote"], "name": entry["name"], "number": entry["number"], "via": entry["via"],
        "started": entry["started"], "answered": answered, "ended": ended, "duration": duration,
        "outcome": entry["outcome"], "reason": entry["reason"], "recording": entry["recording"],
        "conference": bool(entry["conference"]), "transferred_to": entry["transferred_to"],
        "seen": bool(entry["seen"]),
    }


def _check_outcome(outcome: Any) -> str:
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    return str(outcome)


def _check_direction(direction: Any) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not 'in' or 'out'")
    return str(direction)


class History:
    """The call history of one unit. See the module docstring for why it works the way it does."""

    #: While calls are open, the writer records every this often that the unit still runs with them.
    HEARTBEAT_SECONDS = 30.0
    #: Retention runs again after this many calls have been ended or recorded.
    RETENTION_EVERY = 500
    #: Rows per retention delete (one short transaction each).
    RETENTION_BATCH = 500
    #: Pauses between the retries of a failed write; after the last, the writer waits for new work.
    RETRY_DELAYS: tuple[float, ...] = (0.1, 0.5, 2.0, 5.0, 15.0)
    #: Operations kept in memory while writes fail; beyond that the oldest are dropped (and reported).
    MAX_PENDING = 20000
    #: Operations per transaction at most.
    BATCH = 500

    def __init__(self, path: Path, max_age_days: int = 365, max_calls: int = 100000,
                 clock: Callable[[], float] = time.time, *,
                 on_error: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.path = Path(path)
        self.max_age_days = max_age_days
        self.max_calls = max_calls
        self.clock = clock
        self.on_error = on_error
        self._lock = threading.Lock()          # the in-memory state below; never held across disk I/O
        self._read_lock = threading.Lock()     # the read connection
        self._queue: queue.Queue[Any] = queue.Queue()
        self._keys: dict[int, int] = {}        # the desk's row key -> entry id, for calls in progress
        self._live: dict[int, dict[str, Any]] = {}   # entries not yet (fully) written, and calls in progress
        self._versions: dict[int, int] = {}
        self._next_id = 1
        self._missed_unseen = 0
        self._epoch = 0                         # +1 at each mark_seen() of everything
        self._writer: threading.Thread | None = None
        self._wdb: sqlite3.Connection | None = None
        self._rdb: sqlite3.Connection | None = None
        self._open = False

    # --- open / close -----------------------------------------------------------------------------------

    def open(self, *, move_corrupt_aside: bool = False) -> None:
        """Open (or create) the file, migrate it, close calls a crash left open, apply retention, start the writer.

        Raises HistoryError on a file it cannot use; the unit then runs without history. A corrupt file
        is left as it is unless `move_corrupt_aside`: then it is renamed to <name>.corrupt-<time> (never
        deleted), a new history is started, the move is logged and reported through on_error.
        """
        if self._open:
            return
        with self._lock:   # a History closed and opened again starts from the file alone
            self._queue = queue.Queue()
            self._keys.clear()
            self._live.clear()
            self._versions.clear()
        try:
            self._open_file()
        except HistoryError as e:
            if e.code != "history_corrupt" or not move_corrupt_aside:
                raise
            moved = self._move_aside()
            log.warning("call history %s was not usable (%s): moved to %s, a new history started",
                        self.path, e.params.get("error"), moved)
            self._report("history_corrupt", {**e.params, "moved_to": str(moved)})
            self._open_file()
        self._open = True
        self._writer = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._writer.start()

    def _open_file(self) -> None:
        """Both connections on a migrated, recovered, retained file; HistoryError (nothing left open) if not."""
        self._wdb = self._connect_checked()
        try:
            self._recover_and_retain()
            self._rdb = self._connect(self.path)
            self._rdb.execute("PRAGMA query_only = ON")
            self._chmod_files()
        except sqlite3.Error as e:
            self._close_connections()
            raise self._error_for(e) from e

    def close(self) -> None:
        """Write what is queued (waiting up to a few seconds), stop the writer, close the file."""
        if not self._open:
            return
        try:
            self.flush()
        except HistoryError as e:
            log.error("call history: %s", e)
        self._queue.put(_Stop())
        assert self._writer is not None
        self._writer.join(10)
        self._open = False
        self._close_connections()

    def _close_connections(self) -> None:
        for db in (self._rdb, self._wdb):
            if db is not None:
                try:
                    db.close()
                except sqlite3.Error:
                    pass
        self._rdb = self._wdb = None

    def _connect(self, path: Path) -> sqlite3.Connection:
        # The umask makes files SQLite creates now (db, -wal, -shm) 0600 from the start; it is process-wide,
        # hence the lock and the short window. Existing files are chmod-ed afterwards.
        with _umask_lock:
            old = os.umask(0o077)
            try:
                db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
                try:
                    db.execute("PRAGMA journal_mode = WAL").fetchone()
                except BaseException:
                    db.close()
                    raise
            finally:
                os.umask(old)
        return db

    def _connect_checked(self) -> sqlite3.Connection:
        """The writer's connection on a file at this code's schema version, or HistoryError saying why not."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise self._unavailable(f"{type(e).__name__}: {e.strerror or e}") from e
        if self.path.is_dir():
            raise self._unavailable("it is a directory")
        db: sqlite3.Connection | None = None
        try:
            db = self._connect(self.path)
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch the journal to WAL (it stays {mode})")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            self._chmod_files()
            self._migrate(db)
            return db
        except sqlite3.Error as e:
            if db is not None:
                db.close()
            raise self._error_for(e) from e
        except HistoryError:
            if db is not None:
                db.close()
            raise

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        supported = schema_version()
        if version > supported:
            raise HistoryError(
                "history_schema_newer", {"path": str(self.path), "version": version, "supported": supported},
                f"call history {self.path} has schema version {version}, written by a newer kiosk; this kiosk "
                f"reads versions up to {supported}. Update kiosk, or point [history] path at another file.")
        if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            # Version 0 must be an empty file: tables without a version are someone else's database.
            raise HistoryError(
                "history_corrupt", {"path": str(self.path), "error": "a database without a kiosk history schema",
                                    "hint": self._corrupt_hint()},
                f"call history {self.path} is a SQLite database but not a kiosk call history (tables but no "
                f"schema version). {self._corrupt_hint()}")
        for v in range(version, supported):
            db.execute("BEGIN IMMEDIATE")
            try:
                MIGRATIONS[v](db)
                db.execute(f"PRAGMA user_version = {v + 1}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if v:
                log.info("call history %s migrated from schema version %d to %d", self.path, v, v + 1)

    def _corrupt_hint(self) -> str:
        return (f"Move it aside (e.g. mv {self.path} {self.path}.bad) or restore a backup, then restart; "
                f"the unit runs without history until then.")

    def _unavailable(self, error: str) -> HistoryError:
        return HistoryError(
            "history_unavailable", {"path": str(self.path), "error": error},
            f"cannot open the call history {self.path}: {error}. It must be a file (or a place to create one) "
            f"in a directory the unit's user can write; fix [history] path in the profile or the permissions.")

    def _error_for(self, e: sqlite3.Error) -> HistoryError:
        name = getattr(e, "sqlite_errorname", "")
        if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or isinstance(e, sqlite3.DatabaseError) and (
                "not a database" in str(e) or "malformed" in str(e)):
            return HistoryError(
                "history_corrupt", {"path": str(self.path), "error": str(e), "hint": self._corrupt_hint()},
                f"call history {self.path} is not a usable SQLite database ({e}). {self._corrupt_hint()}")
        return self._unavailable(str(e))

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(self.clock()))
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            for suffix in ("-wal", "-shm", ""):   # the database last: a crash between leaves it in place
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    os.replace(src, f"{target}{suffix}")
        except OSError as e:
            raise self._unavailable(f"cannot move the damaged file aside to {target}: {e.strerror or e}") from e
        return target

    def _chmod_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            p = Path(f"{self.path}{suffix}")
            try:
                if p.exists() and (p.stat().st_mode & 0o777) != 0o600:
                    os.chmod(p, 0o600)
            except OSError as e:
                log.warning("call history: cannot make %s 0600: %s", p, e)

    def _recover_and_retain(self) -> None:
        db = self._wdb
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "UPDATE calls SET outcome = CASE WHEN answered IS NOT NULL THEN 'answered' "
                "WHEN direction = 'in' THEN 'missed' ELSE 'failed' END, "
                "reason = ?, ended = max(alive, started, coalesce(answered, started)) WHERE outcome IS NULL",
                (RESTART_REASON,))
            closed = db.execute("SELECT changes()").fetchone()[0]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if closed:
            log.warning("call history: %d call(s) left open by a stop without an end closed (%s)",
                        closed, RESTART_REASON)
        self._retain(db)
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'calls'").fetchone()
        top = db.execute("SELECT max(id) FROM calls").fetchone()[0]
        self._next_id = max(seq[0] if seq else 0, top or 0) + 1
        self._missed_unseen = db.execute(
            "SELECT count(*) FROM calls WHERE outcome = 'missed' AND seen = 0").fetchone()[0]

    def _retain(self, db: sqlite3.Connection) -> list[int]:
        """Delete calls past the age and count limits, a batch per transaction; the ids of missed unseen ones."""
        unseen: list[int] = []
        where: list[tuple[str, tuple[Any, ...]]] = []
        if self.max_age_days > 0:
            where.append(("started < ?", (self.clock() - self.max_age_days * 86400.0,)))
        if self.max_calls > 0:
            keep = db.execute("SELECT started, id FROM calls WHERE outcome IS NOT NULL "
                              "ORDER BY started DESC, id DESC LIMIT 1 OFFSET ?", (self.max_calls - 1,)).fetchone()
            if keep is not None:
                where.append(("(started, id) < (?, ?)", (keep[0], keep[1])))
        for clause, args in where:
            while True:
                rows = db.execute(
                    f"SELECT id, outcome = 'missed' AND seen = 0 FROM calls WHERE outcome IS NOT NULL AND {clause} "
                    f"ORDER BY started, id LIMIT ?", (*args, self.RETENTION_BATCH)).fetchall()
                if not rows:
                    break
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany("DELETE FROM calls WHERE id = ?", [(r[0],) for r in rows])
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                unseen.extend(r[0] for r in rows if r[1])
                if len(rows) < self.RETENTION_BATCH:
                    break
        return unseen

    # --- the desk's writes (loop thread: memory and a queue only) -----------------------------------------

    def _enqueue_put(self, entry_id: int) -> None:
        """Queue the entry's current state. Caller holds self._lock."""
        version = self._versions.get(entry_id, 0) + 1
        self._versions[entry_id] = version
        row = dict(self._live[entry_id])
        self._queue.put(_Put(entry_id, version, row, self._epoch))

    def begin(self, key: int, *, direction: str, line: str, route: str | None, remote: str, name: str,
              number: str, via: str, started: float) -> None:
        """A call started (rang in, or was dialled): its row, open until `end`."""
        _check_direction(direction)
        if not self._open:
            return
        with self._lock:
            if key in self._keys:
                log.warning("call history: row %s began twice; the first call stays open until restart", key)
            entry_id = self._next_id
            self._next_id += 1
            self._keys[key] = entry_id
            self._live[entry_id] = {
                "id": entry_id, "direction": direction, "line": str(line),
                "route": None if route is None else str(route), "remote": str(remote),
                "name": str(name), "number": str(number), "via": str(via), "started": float(started),
                "answered": None, "ended": None, "outcome": None, "reason": "", "recording": "",
                "conference": False, "transferred_to": "", "seen": False, "alive": float(started),
            }
            self._enqueue_put(entry_id)

    def answered(self, key: int, at: float) -> None:
        """The call in row `key` was answered (the first answer counts)."""
        if not self._open:
            return
        with self._lock:
            entry = self._entry(key)
            if entry is None:
                return
            if entry["answered"] is None:
                entry["answered"] = float(at)
            entry["alive"] = max(entry["alive"], float(at))
            self._enqueue_put(entry["id"])

    def update(self, key: int, **fields: Any) -> None:
        """Change what is known of a call in progress: name/number/remote/conference/transferred_to/recording."""
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))}; fields: {', '.join(sorted(UPDATABLE))}")
        if not self._open or not fields:
            return
        with self._lock:
            entry = self._entry(key)
            if entry is None:
                return
            for k, v in fields.items():
                entry[k] = bool(v) if k == "conference" else str(v)
            entry["alive"] = max(entry["alive"], self.clock())
            self._enqueue_put(entry["id"])

    def end(self, key: int, *, outcome: str, reason: str, ended: float, recording: str = "") -> int | None:
        """The call ended: its outcome is queued for writing; the entry id (None: no such call in progress)."""
        _check_outcome(outcome)
        if not self._open:
            return None
        with self._lock:
            entry_id = self._keys.pop(key, None)
            if entry_id is None:
                return None
            entry = self._live[entry_id]
            entry.update(outcome=outcome, reason=str(reason), ended=float(ended))
            if outcome != "missed":
                entry["seen"] = True   # only a missed call waits for the operator (as the desk's event says)
            entry["alive"] = max(entry["alive"], float(ended))
            if recording:
                entry["recording"] = str(recording)
            if outcome == "missed" and not entry["seen"]:
                self._missed_unseen += 1
            self._enqueue_put(entry_id)
            return entry_id

    def record(self, **entry: Any) -> int | None:
        """A whole call at once (a refusal under DND, say): queued; returns its id (None when not open).

        Needs direction, line, started and outcome; the rest defaults to empty; ended defaults to started;
        seen to True unless the outcome is "missed".
        """
        unknown = set(entry) - RECORD_FIELDS
        if unknown:
            raise ValueError(f"unknown history fields {', '.join(sorted(unknown))}")
        missing = {"direction", "line", "started", "outcome"} - set(entry)
        if missing:
            raise ValueError(f"record needs {', '.join(sorted(missing))}")
        _check_direction(entry["direction"])
        _check_outcome(entry["outcome"])
        if not self._open:
            return None
        started = float(entry["started"])
        answered = entry.get("answered")
        ended = float(entry["ended"]) if entry.get("ended") is not None else started
        with self._lock:
            entry_id = self._next_id
            self._next_id += 1
            row = {
                "id": entry_id, "direction": entry["direction"], "line": str(entry["line"]),
                "route": None if entry.get("route") is None else str(entry["route"]),
                "remote": str(entry.get("remote", "")),
                "name": str(entry.get("name", "")), "number": str(entry.get("number", "")),
                "via": str(entry.get("via", "")), "started": started,
                "answered": float(answered) if answered is not None else None, "ended": ended,
                "outcome": entry["outcome"], "reason": str(entry.get("reason", "")),
                "recording": str(entry.get("recording", "")), "conference": bool(entry.get("conference", False)),
                "transferred_to": str(entry.get("transferred_to", "")),
                "seen": bool(entry.get("seen", entry["outcome"] != "missed")),
                "alive": ended,
            }
            self._live[entry_id] = row
            if row["outcome"] == "missed" and not row["seen"]:
                self._missed_unseen += 1
            self._enqueue_put(entry_id)
            return entry_id

    def mark_seen(self, entry_id: int | None = None) -> None:
        """The operator has seen the missed calls so far (or, with an id, that one: it was called back)."""
        if not self._open:
            return
        with self._lock:
            if entry_id is None:
                self._epoch += 1
                self._missed_unseen = 0
                for entry in self._live.values():
                    if entry["outcome"] == "missed" and not entry["seen"]:
                        entry["seen"] = True
                        self._enqueue_put(entry["id"])
                self._queue.put(_Seen(None, self._epoch))
                return
            entry = self._live.get(entry_id)
            if entry is not None and entry["outcome"] is not None:
                if entry["outcome"] == "missed" and not entry["seen"]:
                    self._missed_unseen -= 1
                entry["seen"] = True
                self._enqueue_put(entry_id)
            elif entry is None:
                # Written already: whether it was unseen is known only on the file; the writer adjusts the count.
                self._queue.put(_Seen(entry_id, self._epoch))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every write queued so far is committed (synchronous=FULL: on the disk)."""
        if not self._open:
            return
        job = _Flush()
        self._queue.put(job)
        if not job.done.wait(timeout):
            raise HistoryError("history_flush_timeout", {"path": str(self.path), "timeout": timeout},
                               f"call history {self.path}: writes not on disk after {timeout:g} s "
                               f"(is the disk full or failing? see the log)")

    def _entry(self, key: int) -> dict[str, Any] | None:
        entry_id = self._keys.get(key)
        return None if entry_id is None else self._live[entry_id]

    # --- reads (any thread) ---------------------------------------------------------------------------------

    def missed_unseen(self) -> int:
        """Missed calls not yet seen, counting queued writes; from memory, never the disk."""
        with self._lock:
            return max(0, self._missed_unseen)

    def _read(self, sql: str, args: Iterable[Any]) -> list[tuple[Any, ...]]:
        if self._rdb is None:
            return []
        try:
            with self._read_lock:
                return self._rdb.execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as e:
            raise HistoryError("history_read_failed", {"path": str(self.path), "error": str(e)},
                               f"cannot read the call history {self.path}: {e}") from e

    def get(self, entry_id: int) -> dict[str, Any] | None:
        """One ended call by id (queued writes included); None if there is none (or it is in progress)."""
        with self._lock:
            live = self._live.get(entry_id)
            live = dict(live) if live is not None else None
        if live is None:
            rows = self._read(f"{_SELECT} WHERE id = ? AND outcome IS NOT NULL", (entry_id,))
            return _public(dict(zip(_READ_COLUMNS, rows[0]))) if rows else None
        return _public(live) if live["outcome"] is not None else None

    def _filter(self, missed: bool, search: str) -> tuple[list[str], list[Any], Callable[[dict[str, Any]], bool]]:
        """The WHERE clauses and arguments of a read, and the same test for an in-memory copy."""
        needle = fold(search.strip())
        digits = number_digits(search.strip())
        where = ["outcome IS NOT NULL"]
        args: list[Any] = []
        if missed:
            where.append("outcome = 'missed'")
        if needle:
            if digits:
                where.append("(instr(search, ?) > 0 OR instr(digits, ?) > 0)")
                args += [needle, digits]
            else:
                where.append("instr(search, ?) > 0")
                args.append(needle)

        def matches(entry: dict[str, Any]) -> bool:
            if entry["outcome"] is None or missed and entry["outcome"] != "missed":
                return False
            return not needle or needle in _search_text(entry) or bool(digits) and digits in _digits_text(entry)

        return where, args, matches

    def _live_copies(self) -> list[dict[str, Any]]:
        # Taken before the file is read: a copy written meanwhile is then in the file too, never in neither.
        with self._lock:
            return [dict(e) for e in self._live.values() if e["outcome"] is not None]

    def query(self, *, missed: bool = False, limit: int = 50, search: str = "") -> list[dict[str, Any]]:
        """Ended calls newest first: all, or only missed ones; `search` matches name/number/remote/via
        (case-insensitive, Cyrillic too, ё = е; a number also by its digits alone: "495 12" finds +7495123...)."""
        limit = max(0, int(limit))
        where, args, matches = self._filter(missed, search)
        live = self._live_copies()
        rows = self._read(f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY started DESC, id DESC LIMIT ?",
                          (*args, limit + len(live)))
        found: dict[int, dict[str, Any]] = {r[0]: dict(zip(_READ_COLUMNS, r)) for r in rows}
        for entry in live:
            found.pop(entry["id"], None)
            if matches(entry):
                found[entry["id"]] = entry
        ordered = sorted(found.values(), key=lambda e: (e["started"], e["id"]), reverse=True)
        return [_public(e) for e in ordered[:limit]]

    def count(self, *, missed: bool = False, search: str = "") -> int:
        """How many ended calls `query` with these filters would find without a limit (the desk's "total")."""
        where, args, matches = self._filter(missed, search)
        live = self._live_copies()
        if live:
            where.append("id NOT IN (SELECT value FROM json_each(?))")
            args.append(json.dumps([e["id"] for e in live]))
        rows = self._read(f"SELECT count(*) FROM calls WHERE {' AND '.join(where)}", args)
        return (rows[0][0] if rows else 0) + sum(1 for e in live if matches(e))

    # --- the writer thread -----------------------------------------------------------------------------------

    def _report(self, code: str, params: dict[str, Any]) -> None:
        if self.on_error is None:
            return
        try:
            self.on_error(code, params)
        except Exception:   # the callback's bug must not stop the writer
            log.exception("call history: on_error callback failed")

    def _run(self) -> None:
        pending: list[_Put | _Seen] = []
        waiters: list[_Flush] = []
        failures = 0
        retry_at = 0.0
        parked = False          # retries used up: wait for new work before trying again
        reported = False        # on_error told of the current stretch of failures
        stopping = False
        open_ids: set[int] = set()
        heartbeat_at = time.monotonic() + self.HEARTBEAT_SECONDS
        since_retention = 0
        applied_epoch = self._epoch   # the mark_seen() epoch of the last operation on the file
        while True:
            now = time.monotonic()
            if pending and not parked:
                timeout: float | None = max(0.0, retry_at - now)
            elif open_ids:
                timeout = max(0.0, heartbeat_at - now)
            else:
                timeout = None
            items: list[Any] = []
            try:
                items.append(self._queue.get(timeout=timeout))
                while len(items) < self.BATCH:
                    items.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            for item in items:
                if isinstance(item, _Flush):
                    waiters.append(item)
                elif isinstance(item, _Stop):
                    stopping = True
                else:
                    pending.append(item)
            if items and parked:
                parked, failures = False, 0
            now = time.monotonic()
            beat = bool(open_ids) and now >= heartbeat_at
            if (pending or beat) and not parked and now >= retry_at:
                try:
                    try:
                        decrements = self._apply(pending, open_ids, beat)
                    except _DATA_ERRORS as e:
                        # Not the disk: one operation the file refuses (a bug). Drop only that one, or it
                        # would hold back every later write for good.
                        self._rollback()
                        pending = self._without_poison(pending, e)
                        decrements = self._apply(pending, open_ids, beat)
                except Exception as e:  # noqa: BLE001 - the writer must outlive any failure
                    failures += 1
                    self._rollback()
                    log.error("call history: writing %d change(s) to %s failed (attempt %d): %s",
                              len(pending), self.path, failures, e)
                    if not reported:
                        reported = True
                        self._report("history_write_failed",
                                     {"path": str(self.path), "error": str(e), "pending": len(pending)})
                    if failures > len(self.RETRY_DELAYS) or stopping:
                        parked = True
                        log.error("call history: %d change(s) kept in memory until the next write", len(pending))
                    else:
                        retry_at = now + self.RETRY_DELAYS[failures - 1]
                    if len(pending) > self.MAX_PENDING:
                        lost = pending[: len(pending) - self.MAX_PENDING]
                        del pending[: len(lost)]
                        self._forget(lost)
                        log.error("call history: %d change(s) dropped: writes keep failing", len(lost))
                        self._report("history_write_lost", {"path": str(self.path), "count": len(lost)})
                else:
                    if failures:
                        log.warning("call history: writing to %s works again", self.path)
                    failures, reported = 0, False
                    if beat:
                        heartbeat_at = now + self.HEARTBEAT_SECONDS
                    since_retention += sum(1 for op in pending if isinstance(op, _Put) and op.row["outcome"])
                    self._committed(pending, decrements)
                    if pending:
                        applied_epoch = pending[-1].epoch
                    pending = []
                    if since_retention >= self.RETENTION_EVERY:
                        since_retention = 0
                        self._retention_in_writer(applied_epoch)
            if not pending:
                for w in waiters:
                    w.done.set()
                waiters.clear()
            if stopping and (not pending or parked):
                if pending:
                    log.error("call history: %d change(s) not written at close", len(pending))
                for w in waiters:
                    w.done.set()
                return

    def _apply(self, ops: list[_Put | _Seen], open_ids: set[int], beat: bool, commit: bool = True) -> list[_Seen]:
        """All of `ops` (and the heartbeat) in one transaction; the seen-ones that changed a row."""
        db = self._wdb
        assert db is not None
        changed: list[_Seen] = []
        opened = set(open_ids)
        db.execute("BEGIN IMMEDIATE")
        for op in ops:
            if isinstance(op, _Put):
                r = op.row
                db.execute(_UPSERT, (
                    r["id"], r["direction"], r["line"], r["route"], r["remote"], r["name"], r["number"], r["via"],
                    r["started"], r["answered"], r["ended"], r["outcome"], r["reason"], r["recording"],
                    int(r["conference"]), r["transferred_to"], int(r["seen"]), r["alive"], _search_text(r),
                    _digits_text(r)))
                if r["outcome"] is None:
                    opened.add(r["id"])
                else:
                    opened.discard(r["id"])
            elif op.id is None:
                db.execute("UPDATE calls SET seen = 1 WHERE outcome = 'missed' AND seen = 0")
            else:
                cur = db.execute("UPDATE calls SET seen = 1 WHERE id = ? AND outcome = 'missed' AND seen = 0",
                                 (op.id,))
                if cur.rowcount == 1:
                    changed.append(op)
        if beat and opened:
            db.execute("UPDATE calls SET alive = max(alive, ?) WHERE outcome IS NULL", (self.clock(),))
        if not commit:
            return changed
        db.execute("COMMIT")
        open_ids.clear()
        open_ids.update(opened)
        return changed

    def _without_poison(self, ops: list[_Put | _Seen], error: BaseException) -> list[_Put | _Seen]:
        """`ops` less those the file refuses on their own (each tried in a transaction rolled back)."""
        db = self._wdb
        assert db is not None
        good: list[_Put | _Seen] = []
        bad: list[_Put | _Seen] = []
        for op in ops:
            try:
                self._apply([op], set(), False, commit=False)
                good.append(op)
            except _DATA_ERRORS:
                bad.append(op)
            finally:
                self._rollback()
        if bad:
            self._forget(bad)
            log.error("call history: %d change(s) refused by the file and dropped (%s): %r", len(bad), error, bad)
            self._report("history_write_lost", {"path": str(self.path), "count": len(bad)})
        return good

    def _rollback(self) -> None:
        try:
            if self._wdb is not None and self._wdb.in_transaction:
                self._wdb.execute("ROLLBACK")
        except sqlite3.Error as e:
            log.error("call history: rollback failed: %s", e)

    def _committed(self, ops: list[_Put | _Seen], decrements: list[_Seen]) -> None:
        """After a commit: drop the in-memory copies now on the file; count seen-by-id changes."""
        with self._lock:
            for op in ops:
                if isinstance(op, _Put) and op.row["outcome"] is not None \
                        and self._versions.get(op.id) == op.version:
                    self._live.pop(op.id, None)
                    self._versions.pop(op.id, None)
            for op in decrements:
                if op.epoch == self._epoch:   # a mark_seen() of everything since has zeroed the count anyway
                    self._missed_unseen -= 1

    def _forget(self, ops: list[_Put | _Seen]) -> None:
        """Dropped writes: their in-memory copies go too (the count stays: it says what the operator missed)."""
        with self._lock:
            for op in ops:
                if isinstance(op, _Put) and op.row["outcome"] is not None \
                        and self._versions.get(op.id) == op.version:
                    self._live.pop(op.id, None)
                    self._versions.pop(op.id, None)

    def _retention_in_writer(self, applied_epoch: int) -> None:
        """Retention between writes. A missed unseen call it deletes leaves the count unless a mark_seen()
        of everything is queued after the last write: then the count is zero already."""
        assert self._wdb is not None
        try:
            unseen = self._retain(self._wdb)
        except Exception as e:  # noqa: BLE001 - retention is tried again later; the writer goes on
            self._rollback()
            log.error("call history: retention failed: %s", e)
            return
        if unseen:
            with self._lock:
                if applied_epoch == self._epoch:
                    self._missed_unseen -= len(unseen)
