"""Call history with 100,000 calls: opening the History view, a search, the file's size.

Method (one process, a SQLite file in a fresh temporary directory, nothing else started):

- Fill: 100,000 calls (by default) spread over the last 300 days, written through `History.record`
  and the writer thread as the desk would (one `flush` at the end), a realistic mix: 70 % incoming,
  outcomes answered 62 %, missed 18 %, busy/failed/rejected/transferred/picked-up/dnd the rest; about
  400 distinct callers with Latin and Cyrillic names, Russian and local numbers, some via a queue.
  The fill time and the file's size (db + -wal after a checkpoint) are printed.
- Reopen: the file is closed and opened again (crash recovery, retention, the count of missed calls),
  timed as the unit's start would see it.
- Open the view: `query(limit=50)` + `missed_unseen()`; then also with `query(missed=True, limit=50)` and
  `count()` (the desk's "total"), repeated `--calls` times; the median and p90 are printed.
- Search: `query(search=..., limit=50)` for a Cyrillic name in another case, a Latin name, a digits-only
  number fragment, a typed number with punctuation, and text that matches nothing (the worst case: the
  whole table is scanned). Each repeated `--calls` times.
- The desk's side: the time `begin` + `answered` + `end` take on the caller's thread while the writer
  commits, and the time `flush` takes for 10 calls (fsync on this machine's disk).
Target: opening the view and each search <= 100 ms (median).
"""

from __future__ import annotations

import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lab import bench_args, cpu_model, load, md_table

from kiosk.history import History

FIRST = ["Иван", "Мария", "Алексей", "Ольга", "Дмитрий", "Наталья", "Сергей", "Ёлка", "Anna", "John", "Peter",
         "Lucía", "Zoë", "Пётр", "Юлия", "Mark"]
LAST = ["Петров", "Иванова", "Смирнов", "Кузнецова", "Соловьёв", "Smith", "Müller", "García", "Brown", "Орлова",
        "Лебедев", "O'Brien"]
OUTCOMES = [("answered", 62), ("missed", 18), ("busy", 5), ("failed", 4), ("rejected", 3), ("transferred", 4),
            ("picked-up", 2), ("dnd", 2)]
QUEUES = ["", "", "", "", "Support", "Sales", "Поддержка", "8800"]


def callers(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out = []
    for i in range(n):
        name = "" if i % 7 == 0 else f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        if i % 3 == 0:
            number = f"+7 ({rng.randint(495, 499)}) {rng.randint(100, 999)}-{rng.randint(10, 99)}-{rng.randint(10, 99)}"
        elif i % 3 == 1:
            number = f"8{rng.randint(9000000000, 9999999999)}"
        else:
            number = str(rng.randint(2000, 2999))
        out.append((name, number))
    return out


def fill(h: History, n: int, rng: random.Random) -> None:
    people = callers(rng, 400)
    outcomes = [o for o, w in OUTCOMES for _ in range(w)]
    now = time.time()
    span = 300 * 86400.0
    for i in range(n):
        name, number = rng.choice(people)
        started = now - span + span * i / n
        outcome = rng.choice(outcomes)
        direction = "in" if rng.random() < 0.7 or outcome in ("missed", "dnd", "picked-up") else "out"
        answered = started + rng.uniform(1, 20) if outcome in ("answered", "transferred") else None
        ended = (answered or started) + rng.uniform(5, 600)
        digits = "".join(c for c in number if c.isdigit())
        h.record(direction=direction, line=rng.choice(["main", "support"]), route=None if direction == "in" else "pstn",
                 remote=f'"{name}" <sip:{digits}@pbx.example.net>' if name else f"<sip:{digits}@pbx.example.net>",
                 name=name, number=number, via=rng.choice(QUEUES) if direction == "in" else "", started=started,
                 answered=answered, ended=ended, outcome=outcome, reason="", seen=rng.random() < 0.9,
                 recording=f"{i}.wav" if rng.random() < 0.1 else "")


def timed(fn, repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def row(what: str, samples: list[float], extra: str = "") -> list[str]:
    p90 = statistics.quantiles(samples, n=10)[-1] if len(samples) > 1 else samples[0]
    return [what, f"{statistics.median(samples) * 1000:.2f}", f"{p90 * 1000:.2f}", f"{max(samples) * 1000:.2f}",
            str(len(samples)), extra]


def main() -> int:
    args = bench_args(__doc__, calls=30, extra=lambda p: p.add_argument(
        "--rows", type=int, default=100_000, help="calls in the history (default 100000)"))
    load0 = load()
    rng = random.Random(10)
    with tempfile.TemporaryDirectory(prefix="kb-history-") as tmp:
        path = Path(tmp) / "history.db"
        h = History(path, max_age_days=365, max_calls=max(args.rows, 100_000))
        h.open()
        t0 = time.perf_counter()
        fill(h, args.rows, rng)
        h.flush(timeout=600)
        fill_s = time.perf_counter() - t0
        h.close()
        size = sum(p.stat().st_size for p in Path(tmp).iterdir() if p.name.startswith("history.db"))
        t0 = time.perf_counter()
        h = History(path, max_age_days=365, max_calls=max(args.rows, 100_000))
        h.open()
        reopen_s = time.perf_counter() - t0
        rows = []
        n = args.calls

        def view() -> None:
            h.query(limit=50)
            h.missed_unseen()

        def view_all() -> None:
            h.query(limit=50)
            h.query(missed=True, limit=50)
            h.missed_unseen()
            h.count()

        rows.append(row("open the view: query(limit=50) + missed_unseen()", timed(view, n)))
        rows.append(row("  + query(missed=True, limit=50) + count() (the desk's total)", timed(view_all, n)))
        rows.append(row("count() alone", timed(h.count, n), f"{h.count():,} calls"))
        for label, text in [("Cyrillic name, other case", "СОЛОВЬЁВ"), ("Cyrillic, ё typed as е", "соловьев"),
                            ("Latin name", "müller"), ("number digits", "4951"),
                            ("typed number", "+7 (496) 2"), ("queue (via)", "поддержка"),
                            ("no match (whole table)", "zzzqqq")]:
            hits = len(h.query(search=text, limit=50))
            rows.append(row(f"search {text!r}: {label}", timed(lambda t=text: h.query(search=t, limit=50), n),
                            f"{hits} hits"))
        rows.append(row("search + count(search=) 'zzzqqq' (worst)",
                        timed(lambda: (h.query(search="zzzqqq"), h.count(search="zzzqqq")), n)))
        # the desk's side: begin + answered + end as its loop calls them, while the writer commits (one
        # flush every 10 calls, as a busy desk gives the writer a commit per call or two)
        desk: list[float] = []
        commit: list[float] = []
        for i in range(n * 20):
            t = time.time()
            t0 = time.perf_counter()
            h.begin(10**6 + i, direction="in", line="main", route=None, remote="<sip:2001@pbx>", name="Bench",
                    number="2001", via="", started=t)
            h.answered(10**6 + i, t + 1)
            h.end(10**6 + i, outcome="answered", reason="bye", ended=t + 2)
            desk.append(time.perf_counter() - t0)
            if i % 10 == 9:
                t0 = time.perf_counter()
                h.flush()
                commit.append(time.perf_counter() - t0)
        rows.append(row("desk loop: begin + answered + end (never waits on disk)", desk))
        rows.append(row("flush: the last 10 calls committed, synchronous=FULL", commit))
        h.close()
    end = time.strftime("%Y-%m-%d %H:%M %Z")
    print(f"### Call history: {args.rows:,} calls\n")
    print(f"{end} · {cpu_model()} · nproc {os.cpu_count()} · Python {sys.version.split()[0]} · "
          f"SQLite {sqlite3.sqlite_version}")
    print(f"load average (1/5/15 min) at start {load0}, at end {load()}\n")
    print(md_table(["ms", "median", "p90", "max", "n", ""], rows))
    print()
    print(f"Fill {args.rows:,} calls through the writer: {fill_s:.1f} s; reopen (recovery, retention, count): "
          f"{reopen_s * 1000:.0f} ms; file size {size / 1e6:.1f} MB ({size / args.rows:.0f} bytes/call, "
          f"{size / args.rows * 100_000 / 1e6:.1f} MB per 100,000 calls).")
    worst = max(float(r[1]) for r in rows if not r[0].startswith(("desk", "flush")))
    print(f"Target: open the view and each search <= 100 ms median: **{'met' if worst <= 100 else 'MISSED'}** "
          f"(worst median {worst:.1f} ms).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
