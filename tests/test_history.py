"""Call history: the entry JSON, the writer thread, search, crash recovery, schema versions, modes, errors.

Real SQLite files in tmp_path, in-process (one child process in the SIGKILL test, marked lab). No timed
asserts: the speed figures are bench/history.py's.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiosk import history as hmod
from kiosk.history import ENTRY_FIELDS, OUTCOMES, History, HistoryError

T0 = 1_790_000_000.0


class Clock:
    """A settable unix clock: retention and heartbeats without sleeping."""

    def __init__(self, now: float = T0 + 1000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hist(tmp_path: Path, clock: Clock) -> Iterator[History]:
    h = History(tmp_path / "state" / "history.db", clock=clock)
    h.open()
    yield h
    h.close()


def call(h: History, key: int, *, direction: str = "in", name: str = "Alice", number: str = "2001",
         started: float = T0, answered: float | None = None, outcome: str = "answered", via: str = "",
         remote: str | None = None, ended: float | None = None) -> int:
    h.begin(key, direction=direction, line="main", route=None if direction == "in" else "pstn",
            remote=remote if remote is not None else f'"{name}" <sip:{number}@pbx>', name=name, number=number,
            via=via, started=started)
    if answered is not None:
        h.answered(key, answered)
    entry_id = h.end(key, outcome=outcome, reason="bye", ended=ended if ended is not None else started + 60)
    assert entry_id is not None
    return entry_id


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# --- the entry ------------------------------------------------------------------------------------------------

def test_a_call_becomes_the_contracts_entry(hist: History) -> None:
    hist.begin(7, direction="in", line="main", route=None, remote='"Alice" <sip:2001@pbx>', name="Alice",
               number="2001", via="Support", started=T0)
    hist.answered(7, T0 + 5)
    hist.answered(7, T0 + 9)  # the first answer counts
    hist.update(7, name="Alice Smith", conference=True, transferred_to="2002", recording="a.wav")
    entry_id = hist.end(7, outcome="transferred", reason="REFER", ended=T0 + 65)
    assert entry_id is not None
    hist.flush()
    entry = hist.get(entry_id)
    assert entry is not None and tuple(entry) == ENTRY_FIELDS
    assert entry == {
        "id": entry_id, "direction": "in", "line": "main", "route": None, "remote": '"Alice" <sip:2001@pbx>',
        "name": "Alice Smith", "number": "2001", "via": "Support", "started": T0, "answered": T0 + 5,
        "ended": T0 + 65, "duration": 60.0, "outcome": "transferred", "reason": "REFER", "recording": "a.wav",
        "conference": True, "transferred_to": "2002", "seen": True}  # seen: only a missed call waits
    assert json.loads(json.dumps(entry)) == entry


def test_an_unanswered_call_lasts_zero_and_end_recording_counts(hist: History) -> None:
    hist.begin(1, direction="out", line="main", route="pstn", remote="<sip:5551234@pbx>", name="", number="5551234",
               via="", started=T0)
    entry_id = hist.end(1, outcome="busy", reason="486 Busy Here", ended=T0 + 3, recording="b.wav")
    entry = hist.get(entry_id or 0)
    assert entry is not None and entry["duration"] == 0.0 and entry["recording"] == "b.wav"
    assert entry["route"] == "pstn" and entry["outcome"] == "busy"


def test_record_writes_a_whole_call(hist: History) -> None:
    entry_id = hist.record(direction="in", line="main", remote="<sip:2003@pbx>", number="2003", started=T0,
                           outcome="dnd", reason="486")
    assert entry_id is not None
    hist.flush()
    entry = hist.get(entry_id)
    assert entry is not None and entry["outcome"] == "dnd" and entry["ended"] == T0 and entry["name"] == ""
    assert entry["seen"] is True
    assert hist.missed_unseen() == 0


@pytest.mark.parametrize("bad", ["", "Missed", "ok", None, "noanswer"])
def test_outcomes_are_the_contracts_list(hist: History, bad: Any) -> None:
    hist.begin(1, direction="in", line="main", route=None, remote="", name="", number="1", via="", started=T0)
    with pytest.raises(ValueError, match="outcome"):
        hist.end(1, outcome=bad, reason="", ended=T0)
    with pytest.raises(ValueError, match="outcome"):
        hist.record(direction="in", line="main", started=T0, outcome=bad)
    assert hist.end(1, outcome="missed", reason="", ended=T0) is not None  # the call stayed open


def test_every_contract_outcome_is_taken(hist: History) -> None:
    for i, outcome in enumerate(OUTCOMES):
        call(hist, i, outcome=outcome, started=T0 + i)
    hist.flush()
    assert [e["outcome"] for e in hist.query()] == list(reversed(OUTCOMES))


def test_wrong_fields_are_refused(hist: History) -> None:
    with pytest.raises(ValueError, match="direction"):
        hist.begin(1, direction="inbound", line="m", route=None, remote="", name="", number="", via="", started=T0)
    with pytest.raises(ValueError, match="outcome_reason"):
        hist.record(direction="in", line="m", started=T0, outcome="missed", outcome_reason="x")
    with pytest.raises(ValueError, match="started"):
        hist.update(1, started=T0)
    with pytest.raises(ValueError, match="needs"):
        hist.record(direction="in", line="m", outcome="missed")


def test_unknown_keys_are_ignored(hist: History) -> None:
    hist.answered(99, T0)
    hist.update(99, name="x")
    assert hist.end(99, outcome="missed", reason="", ended=T0) is None
    hist.flush()
    assert hist.query() == []


# --- the writer: the desk never waits on it ------------------------------------------------------------------

def test_writes_return_while_the_disk_is_stuck_and_are_visible_at_once(hist: History,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer blocked inside a write (a slow card): begin/end/mark_seen still return, reads see the calls."""
    stuck, entered = threading.Event(), threading.Event()
    real_apply = hist._apply

    def slow_apply(*args: Any) -> Any:
        entered.set()
        assert stuck.wait(10)
        return real_apply(*args)

    monkeypatch.setattr(hist, "_apply", slow_apply)
    first = call(hist, 1, outcome="missed", name="Борис")
    assert entered.wait(5)
    second = call(hist, 2, outcome="answered", answered=T0 + 1, started=T0 + 10)
    assert [e["id"] for e in hist.query()] == [second, first]
    assert [e["id"] for e in hist.query(search="борис")] == [first]
    assert hist.get(first) is not None and hist.missed_unseen() == 1
    hist.mark_seen()
    assert hist.missed_unseen() == 0 and hist.get(first)["seen"] is True  # type: ignore[index]
    stuck.set()
    hist.flush()
    assert [(e["id"], e["seen"]) for e in hist.query()] == [(second, True), (first, True)]


def test_ids_continue_across_reopen_and_after_everything_was_deleted(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "h.db"
    h = History(path, clock=clock)
    h.open()
    ids = [call(h, i, started=T0 + i) for i in range(3)]
    h.close()
    clock.now = T0 + 400 * 86400  # every call now past the year
    h = History(path, clock=clock)
    h.open()
    assert h.query() == []
    assert call(h, 1, started=clock.now) == ids[-1] + 1  # never an old id again: a stale callback stays stale
    h.close()


# --- reads --------------------------------------------------------------------------------------------------

def test_query_newest_first_missed_only_and_limit(hist: History) -> None:
    outcomes = ["answered", "missed", "busy", "missed", "answered"]
    ids = [call(hist, i, outcome=o, started=T0 + i) for i, o in enumerate(outcomes)]
    hist.begin(100, direction="in", line="main", route=None, remote="", name="Open", number="9", via="",
               started=T0 + 50)
    hist.flush()
    assert [e["id"] for e in hist.query()] == ids[::-1]  # the call in progress is not history yet
    assert [e["id"] for e in hist.query(missed=True)] == [ids[3], ids[1]]
    assert [e["id"] for e in hist.query(limit=2)] == [ids[4], ids[3]]
    assert hist.query(limit=0) == []
    assert hist.get(12345) is None
    assert hist.get(ids[4] + 1) is None  # the open call's id


def test_search_folds_case_cyrillic_and_yo(hist: History) -> None:
    a = call(hist, 1, name="Пётр Соловьёв", number="+7 (495) 123-45-67", started=T0 + 1)
    b = call(hist, 2, name="Zoë MÜLLER", number="2002", started=T0 + 2, via="Поддержка")
    c = call(hist, 3, name="", number="2003", remote='"Ольга" <sip:2003@pbx>', started=T0 + 3)
    hist.flush()

    def ids(text: str) -> list[int]:
        return [e["id"] for e in hist.query(search=text)]

    assert ids("СОЛОВЬЁВ") == [a]
    assert ids("соловьев") == [a]      # ё typed as е
    assert ids("пЁтр") == [a]
    assert ids("müller") == [b] and ids("ZOË") == [b]
    assert ids("поддерж") == [b]      # via
    assert ids("ольга") == [c]        # remote's display name
    assert ids("74951234567") == [a]  # digits only
    assert ids("495 123-45") == [a]   # typed with punctuation
    assert ids("200") == [c, b]
    assert ids("  ") == [c, b, a]
    assert ids("pbx") == [c, b, a]
    assert ids("a\x1f") == []          # no match across two fields
    assert ids("nobody") == []
    assert [e["id"] for e in hist.query(search="200", missed=True)] == []


def test_count_is_the_total_of_a_query(hist: History) -> None:
    call(hist, 1, name="Иван", outcome="missed", started=T0 + 1)
    call(hist, 2, name="Анна", started=T0 + 2)
    hist.flush()
    call(hist, 3, name="иван", outcome="missed", started=T0 + 3)  # queued, maybe not written yet
    hist.begin(4, direction="in", line="main", route=None, remote="", name="Иван", number="1", via="", started=T0)
    assert hist.count() == 3 and hist.count(missed=True) == 2 and hist.count(search="ИВАН") == 2
    assert hist.count(search="ИВАН", missed=True) == 2 and hist.count(search="nobody") == 0
    hist.flush()
    assert hist.count() == 3 and hist.count(search="ИВАН") == 2


def test_search_of_queued_calls_matches_the_written_ones(hist: History) -> None:
    """The in-memory copies of calls not yet written are searched by the same rules as the file."""
    a = call(hist, 1, name="Иван", number="+7 916 000-11-22")
    assert [e["id"] for e in hist.query(search="ИВАН")] == [a]
    assert [e["id"] for e in hist.query(search="7916000")] == [a]
    hist.flush()
    assert [e["id"] for e in hist.query(search="ИВАН")] == [a]
    assert [e["id"] for e in hist.query(search="7916000")] == [a]


def test_missed_unseen_and_seen(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "h.db"
    h = History(path, clock=clock)
    h.open()
    m1 = call(h, 1, outcome="missed", started=T0 + 1)
    call(h, 2, outcome="answered", answered=T0 + 3, started=T0 + 2)
    h.flush()
    m2 = call(h, 3, outcome="missed", started=T0 + 3)
    assert h.missed_unseen() == 2
    h.mark_seen(m1)         # called back: that one is seen (written already: the writer adjusts the count)
    h.flush()
    assert h.missed_unseen() == 1
    h.mark_seen(m1)         # twice: no change
    h.flush()
    assert h.missed_unseen() == 1
    h.close()
    h = History(path, clock=clock)
    h.open()
    assert h.missed_unseen() == 1 and h.get(m1)["seen"] and not h.get(m2)["seen"]  # type: ignore[index]
    h.begin(4, direction="in", line="main", route=None, remote="", name="", number="1", via="", started=T0 + 9)
    h.mark_seen()           # the missed calls so far; one that ends missed afterwards is new
    assert h.missed_unseen() == 0
    h.end(4, outcome="missed", reason="", ended=T0 + 10)
    assert h.missed_unseen() == 1
    h.flush()
    assert [e["seen"] for e in h.query(missed=True)] == [False, True, True]
    h.close()


# --- crash recovery, heartbeat, retention -----------------------------------------------------------------------

def test_calls_left_open_are_closed_at_open(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "h.db"
    h = History(path, clock=clock)
    h.open()
    done = call(h, 1, started=T0)
    h.begin(2, direction="in", line="main", route=None, remote="", name="Ringing", number="1", via="",
            started=T0 + 10)
    h.begin(3, direction="in", line="main", route=None, remote="", name="Talking", number="2", via="",
            started=T0 + 20)
    h.answered(3, T0 + 25)
    h.begin(4, direction="out", line="main", route="pstn", remote="", name="Dialling", number="3", via="",
            started=T0 + 30)
    h.close()  # written, never ended: the file as a crash leaves it
    h = History(path, clock=clock)
    h.open()
    got = {e["name"]: e for e in h.query()}
    assert got["Ringing"]["outcome"] == "missed" and got["Ringing"]["ended"] == T0 + 10
    assert got["Talking"]["outcome"] == "answered" and got["Talking"]["ended"] == T0 + 25
    assert got["Talking"]["duration"] == 0.0
    assert got["Dialling"]["outcome"] == "failed"
    assert {e["reason"] for n, e in got.items() if n != "Alice"} == {"unit restarted"}
    assert h.get(done)["reason"] == "bye"  # type: ignore[index]
    assert h.missed_unseen() == 1
    h.close()


def test_heartbeat_is_the_last_known_time(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(History, "HEARTBEAT_SECONDS", 0.02)
    path = tmp_path / "h.db"
    h = History(path, clock=clock)
    h.open()
    h.begin(1, direction="in", line="main", route=None, remote="", name="Long", number="1", via="", started=T0)
    h.answered(1, T0 + 2)
    h.flush()
    clock.now = T0 + 600
    db = raw(path)
    deadline = time.monotonic() + 5
    while db.execute("SELECT alive FROM calls").fetchone()[0] != T0 + 600 and time.monotonic() < deadline:
        time.sleep(0.01)
    db.close()
    h.close()
    h = History(path, clock=clock)
    h.open()
    (entry,) = h.query()
    assert entry["ended"] == T0 + 600 and entry["duration"] == 598.0 and entry["reason"] == "unit restarted"
    h.close()


def test_retention_by_age_and_count_at_open(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(History, "RETENTION_BATCH", 3)  # several batches
    path = tmp_path / "h.db"
    h = History(path, max_age_days=0, max_calls=0, clock=clock)
    h.open()
    ids = [call(h, i, started=T0 + i * 86400, outcome="missed") for i in range(20)]
    h.close()
    clock.now = T0 + 25 * 86400
    h = History(path, max_age_days=10, max_calls=0, clock=clock)
    h.open()
    kept = [e["id"] for e in h.query(limit=100)]
    assert kept == ids[:14:-1]  # started within the last 10 days: days 15..19
    assert h.missed_unseen() == 5
    h.close()
    h = History(path, max_age_days=10, max_calls=2, clock=clock)
    h.open()
    assert [e["id"] for e in h.query(limit=100)] == [ids[19], ids[18]] and h.missed_unseen() == 2
    h.close()


def test_retention_while_running_keeps_the_count_right(tmp_path: Path, clock: Clock,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(History, "RETENTION_EVERY", 4)
    monkeypatch.setattr(History, "RETENTION_BATCH", 2)
    h = History(tmp_path / "h.db", max_age_days=0, max_calls=3, clock=clock)
    h.open()
    ids = [call(h, i, started=T0 + i, outcome="missed") for i in range(4)]
    h.flush()
    assert [e["id"] for e in h.query()] == ids[:0:-1]
    assert h.missed_unseen() == 3
    call(h, 10, started=T0 + 10, outcome="answered", answered=T0 + 11)
    h.flush()
    h.close()


# --- schema versions -----------------------------------------------------------------------------------------

def _hand_made_v1(path: Path) -> None:
    """A version-1 file written without History, as an older kiosk left it."""
    db = raw(path)
    db.execute("PRAGMA journal_mode = WAL")
    hmod._schema_v1(db)
    db.execute("INSERT INTO calls (direction, line, remote, name, number, started, ended, outcome, alive, search) "
               "VALUES ('in', 'main', '<sip:2001@pbx>', 'Old', '2001', ?, ?, 'missed', ?, 'old')", (T0, T0 + 1, T0))
    db.execute("PRAGMA user_version = 1")
    db.close()


def test_migration_from_an_older_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    path = tmp_path / "h.db"
    _hand_made_v1(path)

    def v2(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE calls ADD COLUMN tag TEXT NOT NULL DEFAULT 'v2'")

    monkeypatch.setattr(hmod, "MIGRATIONS", [hmod._schema_v1, v2])
    h = History(path, clock=clock)
    h.open()
    (old,) = h.query()
    assert old["name"] == "Old" and old["outcome"] == "missed" and h.missed_unseen() == 1
    assert call(h, 1, started=T0 + 5) == old["id"] + 1
    h.close()
    db = raw(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert db.execute("SELECT DISTINCT tag FROM calls").fetchall() == [("v2",)]
    db.close()


def test_a_failed_migration_leaves_the_file_at_its_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "h.db"
    _hand_made_v1(path)

    def v2(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE calls ADD COLUMN tag TEXT")
        db.execute("SELECT no_such_column FROM calls")

    monkeypatch.setattr(hmod, "MIGRATIONS", [hmod._schema_v1, v2])
    with pytest.raises(HistoryError):
        History(path).open()
    db = raw(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "tag" not in [r[1] for r in db.execute("PRAGMA table_info(calls)")]
    db.close()


def test_a_newer_schema_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    _hand_made_v1(path)
    db = raw(path)
    db.execute("PRAGMA user_version = 7")
    db.close()
    with pytest.raises(HistoryError) as got:
        History(path).open()
    e = got.value
    assert e.code == "history_schema_newer" and e.params == {"path": str(path), "version": 7, "supported": 1}
    assert "version 7" in str(e) and "up to 1" in str(e) and str(path) in str(e)
    assert raw(path).execute("PRAGMA user_version").fetchone()[0] == 7


# --- files, modes, errors ------------------------------------------------------------------------------------

def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_0600_and_a_new_directory_0700(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "new" / "state" / "history.db"
    h = History(path, clock=clock)
    h.open()
    call(h, 1)
    h.flush()
    files = {p.name: mode(p) for p in path.parent.iterdir()}
    assert files == {"history.db": 0o600, "history.db-wal": 0o600, "history.db-shm": 0o600}
    assert mode(path.parent) == 0o700
    h.close()


def test_an_existing_open_file_is_made_0600(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "history.db"
    h = History(path, clock=clock)
    h.open()
    call(h, 1)
    h.close()
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.touch()
        os.chmod(p, 0o644)
    h = History(path, clock=clock)
    h.open()
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
        "history.db": 0o600, "history.db-wal": 0o600, "history.db-shm": 0o600}
    h.close()


@pytest.mark.parametrize("where", ["parent_is_a_file", "is_a_directory"])
def test_a_path_it_cannot_open(tmp_path: Path, where: str) -> None:
    if where == "parent_is_a_file":
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "history.db"
    else:
        path = tmp_path / "dir.db"
        path.mkdir()
    with pytest.raises(HistoryError) as got:
        History(path).open()
    e = got.value
    assert e.code == "history_unavailable" and set(e.params) == {"path", "error"} and e.params["path"] == str(path)
    assert str(path) in str(e) and "directory" in str(e) and e.params["error"]


def test_a_corrupt_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    junk = b"this is not a database, it is the operator's only copy\n" * 200
    path.write_bytes(junk)
    with pytest.raises(HistoryError) as got:
        History(path).open()
    e = got.value
    assert e.code == "history_corrupt" and e.params["path"] == str(path)
    assert "not a usable SQLite database" in str(e) and "Move it aside" in str(e)
    assert path.read_bytes() == junk and sorted(p.name for p in tmp_path.iterdir()) == ["history.db"]


def test_a_corrupt_file_moved_aside_on_request(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "history.db"
    junk = b"\x00garbage" * 1000
    path.write_bytes(junk)
    reported: list[tuple[str, dict[str, Any]]] = []
    h = History(path, clock=clock, on_error=lambda code, params: reported.append((code, params)))
    h.open(move_corrupt_aside=True)
    assert call(h, 1) == 1
    h.close()
    ((code, params),) = reported
    moved = Path(params["moved_to"])
    assert code == "history_corrupt" and moved.name.startswith("history.db.corrupt-")
    assert moved.read_bytes() == junk and mode(path) == 0o600


def test_damaged_pages_are_refused_as_corrupt(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "history.db"
    h = History(path, clock=clock)
    h.open()
    for i in range(200):
        h.record(direction="in", line="main", started=T0 + i, outcome="missed", name="n" * 200)
    h.close()
    data = bytearray(path.read_bytes())
    for offset in range(2 * 4096, len(data), 4096):  # the header page stays: SQLite opens it, then finds damage
        data[offset:offset + 64] = b"\xa5" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(HistoryError) as got:
        History(path, clock=clock).open()
    assert got.value.code == "history_corrupt" and path.read_bytes() == data


def test_someone_elses_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    db = raw(path)
    db.execute("CREATE TABLE accounts (secret TEXT)")
    db.close()
    with pytest.raises(HistoryError) as got:
        History(path).open()
    assert got.value.code == "history_corrupt"
    assert raw(path).execute("SELECT name FROM sqlite_master").fetchall() == [("accounts",)]


def test_a_full_disk_keeps_the_calls_and_reports(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's max_page_count makes the file "full" as a full disk would (SQLITE_FULL)."""
    monkeypatch.setattr(History, "RETRY_DELAYS", (0.01, 0.01))
    reported: list[tuple[str, dict[str, Any]]] = []
    failed = threading.Event()

    def on_error(code: str, params: dict[str, Any]) -> None:
        reported.append((code, params))
        failed.set()

    h = History(tmp_path / "h.db", clock=clock, on_error=on_error)
    h.open()
    call(h, 0)
    h.flush()
    assert h._wdb is not None
    pages = h._wdb.execute("PRAGMA page_count").fetchone()[0]
    h._wdb.execute(f"PRAGMA max_page_count = {pages}")
    ids = [call(h, i, name="x" * 3000, started=T0 + i) for i in range(1, 30)]
    assert failed.wait(5)
    with pytest.raises(HistoryError) as got:
        h.flush(timeout=0.05)
    assert got.value.code == "history_flush_timeout"
    assert reported[0][0] == "history_write_failed" and "full" in reported[0][1]["error"]
    assert reported[0][1]["path"] == str(tmp_path / "h.db")
    assert h._writer is not None and h._writer.is_alive()
    assert [e["id"] for e in h.query(limit=100)][:29] == ids[::-1]  # still visible from memory
    h._wdb.execute("PRAGMA max_page_count = 1000000")  # space again: the next write (or flush) brings all
    h.flush()
    assert len(reported) == 1  # once per failing stretch, not per retry
    h.close()
    h = History(tmp_path / "h.db", clock=clock)
    h.open()
    assert len(h.query(limit=100)) == 30
    h.close()


def test_an_on_error_callback_that_raises_does_not_stop_the_writer(tmp_path: Path, clock: Clock,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(History, "RETRY_DELAYS", ())
    called = threading.Event()

    def bad(code: str, params: dict[str, Any]) -> None:
        called.set()
        raise RuntimeError("callback bug")

    h = History(tmp_path / "h.db", clock=clock, on_error=bad)
    h.open()
    assert h._wdb is not None
    h._wdb.execute(f"PRAGMA max_page_count = {h._wdb.execute('PRAGMA page_count').fetchone()[0]}")
    for i in range(20):
        call(h, i, name="y" * 4000)
    assert called.wait(5)
    with pytest.raises(HistoryError):
        h.flush(timeout=0.05)
    assert h._writer is not None and h._writer.is_alive()
    h._wdb.execute("PRAGMA max_page_count = 1000000")
    h.flush()
    assert len(h.query(limit=100)) == 20
    h.close()


def test_one_write_the_file_refuses_does_not_hold_back_the_rest(hist: History,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[str] = []
    hist.on_error = lambda code, params: reported.append(code)
    real = hmod._digits_text

    def refuse(entry: dict[str, Any]) -> str:
        if entry.get("number") == "666":
            raise ValueError("a bug")
        return real(entry)

    monkeypatch.setattr(hmod, "_digits_text", refuse)
    good = call(hist, 1, number="2001", started=T0)
    call(hist, 2, number="666", started=T0 + 1)
    later = call(hist, 3, number="2003", started=T0 + 2)
    hist.flush()
    assert [e["id"] for e in hist.query()] == [later, good]
    assert reported == ["history_write_lost"]


def test_missed_unseen_matches_the_file_under_any_mix(tmp_path: Path, clock: Clock,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Random begins, ends, seen-marks, flushes and retention: the in-memory count equals the file's."""
    import random

    monkeypatch.setattr(History, "RETENTION_EVERY", 5)
    monkeypatch.setattr(History, "RETENTION_BATCH", 2)
    path = tmp_path / "h.db"
    h = History(path, max_age_days=0, max_calls=12, clock=clock)
    h.open()
    rng = random.Random(4)
    open_keys: list[int] = []
    ended: list[int] = []
    for key in range(400):
        r = rng.random()
        if r < 0.35 or not open_keys:
            h.begin(key, direction="in", line="m", route=None, remote="", name="", number=str(key), via="",
                    started=T0 + key)
            open_keys.append(key)
        elif r < 0.75:
            k = open_keys.pop(rng.randrange(len(open_keys)))
            ended.append(h.end(k, outcome=rng.choice(["missed", "missed", "answered"]), reason="",
                               ended=T0 + key) or 0)
        elif r < 0.82:
            h.mark_seen()
        elif r < 0.92 and ended:
            h.mark_seen(rng.choice(ended))
        else:
            h.flush()
    h.flush()
    db = raw(path)
    truth = db.execute("SELECT count(*) FROM calls WHERE outcome = 'missed' AND seen = 0").fetchone()[0]
    db.close()
    assert h.missed_unseen() == truth
    assert h.count(missed=True) == len([e for e in h.query(missed=True, limit=1000)])
    h.close()


def test_not_open_is_quiet(tmp_path: Path) -> None:
    h = History(tmp_path / "h.db")
    h.begin(1, direction="in", line="m", route=None, remote="", name="", number="", via="", started=T0)
    assert h.end(1, outcome="missed", reason="", ended=T0) is None
    assert h.query() == [] and h.get(1) is None and h.missed_unseen() == 0
    h.flush()
    h.close()
    assert not (tmp_path / "h.db").exists()


# --- SIGKILL: nothing flushed is lost ---------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from kiosk.history import History
    h = History(Path(sys.argv[1]))
    h.open()
    for i in range(50):
        h.begin(i, direction="in" if i % 2 else "out", line="main", route=None, remote=f"<sip:{i}@pbx>",
                name=f"Flushed {i}", number=str(1000 + i), via="", started=1790000000.0 + i)
        h.answered(i, 1790000000.5 + i)
        h.end(i, outcome="answered", reason="bye", ended=1790000010.0 + i)
    h.begin(100, direction="in", line="main", route=None, remote="", name="Open ringing", number="1",
            via="", started=1790000100.0)
    h.begin(101, direction="in", line="main", route=None, remote="", name="Open talking", number="2",
            via="", started=1790000101.0)
    h.answered(101, 1790000102.0)
    h.begin(102, direction="out", line="main", route="pstn", remote="", name="Open dialling", number="3",
            via="", started=1790000103.0)
    h.flush()
    print("flushed", flush=True)
    i = 1000
    while True:  # more calls, never flushed: SIGKILL lands somewhere in here
        h.begin(i, direction="in", line="main", route=None, remote="", name=f"Stream {i}", number=str(i),
                via="", started=1790001000.0 + i)
        h.end(i, outcome="missed", reason="", ended=1790001001.0 + i)
        i += 1
        if i % 50 == 0:
            time.sleep(0.001)
""")


@pytest.mark.lab
def test_sigkill_loses_nothing_flushed(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parent.parent)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "flushed"
        time.sleep(0.2)  # the stream writes (and commits) meanwhile
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    h = History(path)
    h.open()
    entries = h.query(limit=1_000_000)
    by_name = {e["name"]: e for e in entries}
    for i in range(50):
        e = by_name[f"Flushed {i}"]
        assert (e["outcome"], e["answered"], e["ended"], e["reason"]) == (
            "answered", 1790000000.5 + i, 1790000010.0 + i, "bye")
    assert by_name["Open ringing"]["outcome"] == "missed"
    assert by_name["Open talking"]["outcome"] == "answered" and by_name["Open talking"]["ended"] == 1790000102.0
    assert by_name["Open dialling"]["outcome"] == "failed"
    assert {by_name[n]["reason"] for n in ("Open ringing", "Open talking", "Open dialling")} == {"unit restarted"}
    streamed = [e for e in entries if e["name"].startswith("Stream ")]
    streamed.sort(key=lambda e: int(e["number"]))
    assert all(e["outcome"] == "missed" for e in streamed)
    # whole calls in order: only the last can have begun without its end committed
    assert all(e["reason"] == "" for e in streamed[:-1])
    assert not streamed or streamed[-1]["reason"] in ("", "unit restarted")
    numbers = [int(e["number"]) for e in streamed]
    assert numbers == list(range(1000, 1000 + len(numbers)))  # committed in order: a prefix, no holes
    ids = sorted(e["id"] for e in entries)
    assert len(ids) == len(set(ids))
    h.close()
