"""Soak: hours of calls, holds, transfers, conferences and recordings; call table, memory, fds, threads, CPU over time.

Method (all on 127.0.0.1, free ports, everything started and stopped here):

- A Kamailio registrar/proxy (the lab's config, digest auth); four baresip
  1.0 phones 2001-2004 (auto-answer, each its own tone, not recording); the
  kiosk (`kiosk run --headless`, null audio device, one line 1001, domain =
  Kamailio's address so that a Refer-To for a bare number is dialable by the
  far end itself, as a real PBX domain is).
- Scenarios in turn, one every `--every` seconds (the pause between the end
  of one and the start of the next), for `--minutes`; every command is one
  control-socket request (what `kiosk ctl CMD` sends). 2001 takes part in
  every scenario (it is the peer measured beside the unit); the other phones
  take turns:
  1. `hold-record`: dial 2001, `hold`, `connect`, `record start`, 1 s,
     `record stop`, `hangup`;
  2. `transfer`: dial 2001, `transfer quick 200X`; 2001 calls 200X itself
     (REFER), the unit's row goes; 200X hangs up the new call after 1 s;
  3. `conference3`: dial 2001, `conference 200X` (2001 held, 200X dialled),
     `conference` again when it answers (both "in conference"), then `select`
     + `hangup` row by row;
  4. `incoming`: 2001 calls 1001; the unit `answer`s the ringing row, 1 s,
     `hangup`;
  5. `join4`: dial 2001, `hold`, 2002, `hold`, 2003, `hold`, 2004 (talking),
     `select` all four, `conference`, all "in conference", hang up row by row.
  A `hold` refused with PJ_EINVALIDOP right after an answer (pjsua2's
  codec-lock re-INVITE still in flight) is retried every 50 ms for 2 s; each
  refusal is counted all the same.
- After each scenario the call table must empty within 15 s. A row still there
  is a ghost: counted, logged with the unit.log lines around it, hung up; the
  soak goes on. A scenario that fails (a command refused, a state not reached
  in time) is counted with its reason and cleaned up (every row hung up, every
  phone's call hung up) before the ghost check, and the soak goes on.
- Every `--sample` seconds, between two scenarios (after that check): rows in
  the table, and for the unit and for phone 2001 (the peer in the same run)
  RSS and USS (psutil `memory_full_info()`), anonymous memory (/proc/PID/smaps_rollup:
  heap and other private allocations), open fds and threads (the lowest of
  five readings 0.1 s apart: a control request's thread still finishing is
  not counted), and CPU % of
  one core over the interval since the previous sample (`cpu_times()` deltas).
  The first sample is taken before any call, the second after one warm-up
  round (one scenario of each kind); the summary compares the warm-up sample
  with the last one (first allocations of pjsua2's pools, codecs and Python's
  caches are not a leak) and fits RSS per hour by least squares over the
  samples from the warm-up one on (and, for context, over the second half of
  the run alone: a warm-up that levels off shows there as a smaller slope).
- Verdicts (nothing fails; the table says so): RSS and anonymous memory
  "flat" when last / warm-up <= 1.05 and the slope <= 2 MB/h; fds and threads
  "flat" when the last sample is no higher than the warm-up one (fds: + 2
  allowed, for a control connection or a SIP transaction in flight). USS is
  shown but gets no verdict: on a shared machine it jumps by the size of the
  shared libraries (libpython, pjsua2) whenever other processes mapping them
  start or exit, while RSS stays put (seen: 21 <-> 33 MB at a constant RSS).
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil  # noqa: E402

from _lab import (  # noqa: E402
    Baresip, Kamailio, LabLine, Unit, bench_args, free_port, header, lab_dir, load, md_table, start_unit,
    wait_until,
)

from kiosk.control import ControlError, error_message  # noqa: E402

PHONES = {"2001": 523, "2002": 787, "2003": 1213, "2004": 1789}
USERS = {"1001": "soak-1001-pw", **{u: f"soak-{u}-pw" for u in PHONES}}
PEER = "2001"
DRAIN_S = 15.0
STATE_S = 15.0
RSS_RATIO_FLAT = 1.05
RSS_SLOPE_FLAT = 2.0  # MB per hour
FD_SLACK = 2
MEM = ("rss", "anon", "uss")


class Failed(Exception):
    """A scenario step that did not work; the message is the reason."""


@dataclass
class Sample:
    t: float  # s since the soak began
    label: str
    rows: int
    scenarios: int
    ghosts: int
    refusals: int
    unit: dict[str, float]
    peer: dict[str, float]


class Meter:
    """RSS/USS/fds/threads now, CPU % since the previous reading, for one process."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.t0 = time.monotonic()
        c = self.proc.cpu_times()
        self.c0 = c.user + c.system

    def read(self) -> dict[str, float]:
        t = time.monotonic()
        c = self.proc.cpu_times()
        busy = c.user + c.system
        cpu = 100.0 * (busy - self.c0) / max(1e-6, t - self.t0)
        self.t0, self.c0 = t, busy
        mem = self.proc.memory_full_info()
        # The lowest of five readings 0.1 s apart: a thread or socket of a control request
        # still finishing (the server's thread per connection) is not the unit's own.
        fds, threads = [], []
        for _ in range(5):
            fds.append(self.proc.num_fds())
            threads.append(self.proc.num_threads())
            time.sleep(0.1)
        return {"rss": mem.rss / 2**20, "uss": mem.uss / 2**20, "anon": anonymous_mb(self.proc.pid),
                "fds": min(fds), "threads": min(threads), "cpu": cpu}


def anonymous_mb(pid: int) -> float:
    """Anonymous memory (heap, stacks, private allocations) from /proc/PID/smaps_rollup, MB.

    Unlike USS it does not move when other processes map or unmap the same
    libraries (a shared page of libpython or pjsua2 counts as "unique" to us
    the moment every other process using it has exited).
    """
    try:
        for text_line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if text_line.startswith("Anonymous:"):
                return int(text_line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return math.nan


@dataclass
class Soak:
    unit: Unit
    kam: Kamailio
    phones: dict[str, Baresip]
    log_path: Path
    refusals: Counter = field(default_factory=Counter)  # (command, reason) -> n
    failures: Counter = field(default_factory=Counter)  # (scenario, reason) -> n
    runs: Counter = field(default_factory=Counter)  # scenario -> n
    ghosts: list[str] = field(default_factory=list)
    peer_leftovers: int = 0
    first_failure_logs: list[str] = field(default_factory=list)
    turn: int = 0

    # -- bookkeeping -------------------------------------------------------------------

    def log(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self.log_path.open("a") as f:
            f.write(f"{stamp} {text}\n")

    @staticmethod
    def _norm(reason: str) -> str:
        return re.sub(r"\d+", "N", str(reason)).strip()[:140]

    def req(self, cmd: str, **args: Any) -> dict[str, Any]:
        """One control request; a refusal is counted (by normalised reason) and raised as Failed."""
        try:
            reply = self.unit.request(cmd, **args)
        except ControlError as exc:
            reply = {"ok": False, "error": f"control socket: {exc}"}
        if not reply.get("ok"):
            reason = error_message(reply)
            self.refusals[(cmd, self._norm(reason))] += 1
            self.log(f"REFUSED {cmd} {args}: {reason}")
            raise Failed(f"{cmd} refused: {reason}")
        return reply.get("data") or {}

    def hold(self) -> None:
        """`hold`, retried while pjsua2 refuses it because the re-INVITE after the answer is pending."""
        for _ in range(40):
            try:
                self.req("hold")
                return
            except Failed as exc:
                if "PJ_EINVALIDOP" not in str(exc):
                    raise
                time.sleep(0.05)
        raise Failed("hold refused with PJ_EINVALIDOP for 2 s")

    def calls(self) -> list[dict[str, Any]]:
        try:
            return self.unit.calls()
        except (ControlError, KeyError) as exc:
            raise Failed(f"calls: {exc}") from None

    def wait_rows(self, pred: Callable[[list[dict[str, Any]]], bool], what: str, timeout: float = STATE_S) -> list:
        last: list[dict[str, Any]] = []

        def check() -> bool:
            nonlocal last
            last = self.calls()
            return pred(last)

        if not wait_until(check, timeout, 0.05):
            raise Failed(f"{what} not reached in {timeout:g} s (table: {_brief(last)})")
        return last

    def wait_state(self, row: int, state: str) -> None:
        self.wait_rows(lambda cs: any(c["id"] == row and c["state"] == state for c in cs), f"row {row} {state!r}")

    def dial(self, user: str) -> int:
        row = self.req("dial", number=user)["row"]
        self.wait_state(row, "talking")
        return row

    def hang_up_all(self) -> None:
        for call in self.calls():
            self.req("select", rows=[call["id"]])
            self.req("hangup")

    def other(self) -> str:
        """The next of 2002..2004, in turn."""
        self.turn += 1
        return ["2002", "2003", "2004"][self.turn % 3]

    # -- the scenarios -----------------------------------------------------------------

    def hold_record(self) -> None:
        self.dial(PEER)
        time.sleep(0.3)
        self.hold()
        row = self.calls()[0]["id"]
        self.wait_state(row, "on hold")
        self.req("connect")
        self.wait_state(row, "talking")
        self.req("record", action="start")
        time.sleep(1.0)
        self.req("record", action="stop")
        self.req("hangup")

    def transfer(self) -> None:
        target = self.phones[self.other()]
        mark = target.event_count()
        row = self.dial(PEER)
        time.sleep(0.3)
        self.req("transfer", mode="quick", number=target.user)
        try:
            target.wait_event("CALL_ESTABLISHED", timeout=STATE_S, since=mark)
        except Exception:
            notes = [c.get("note") for c in self.calls() if c["id"] == row]
            raise Failed(f"{target.user} never got the transferred call (row {row} note {notes})") from None
        time.sleep(1.0)
        m2 = target.event_count()
        target.hangup()
        target.wait_event("CALL_CLOSED", timeout=10, since=m2)

    def conference3(self) -> None:
        brow = self.dial(PEER)
        time.sleep(0.3)
        crow = self.req("conference", number=self.other())["row"]
        self.wait_state(brow, "on hold")
        self.wait_state(crow, "talking")
        self.req("conference")
        self.wait_rows(lambda cs: len(cs) == 2 and {c["state"] for c in cs} == {"in conference"}, "2 in conference")
        time.sleep(1.0)
        self.hang_up_all()

    def incoming(self) -> None:
        phone = self.phones[PEER]
        mark = phone.event_count()
        phone.dial(f"sip:1001@{self.kam.address}")
        rows = self.wait_rows(lambda cs: len(cs) == 1 and cs[0]["state"] == "ringing" and cs[0]["direction"] == "in",
                              "incoming row ringing")
        self.req("answer")
        self.wait_state(rows[0]["id"], "talking")
        phone.wait_event("CALL_ESTABLISHED", timeout=10, since=mark)
        time.sleep(1.0)
        self.req("hangup")
        phone.wait_event("CALL_CLOSED", timeout=10, since=mark)

    def join4(self) -> None:
        rows = []
        users = [PEER, "2002", "2003", "2004"]
        for i, user in enumerate(users):
            row = self.dial(user)
            time.sleep(0.3)
            if i < len(users) - 1:
                self.hold()
                self.wait_state(row, "on hold")
            rows.append(row)
        self.req("select", rows=rows)
        self.req("conference")
        self.wait_rows(lambda cs: len(cs) == 4 and {c["state"] for c in cs} == {"in conference"}, "4 in conference")
        time.sleep(1.0)
        self.hang_up_all()

    SCENARIOS = ("hold_record", "transfer", "conference3", "incoming", "join4")

    # -- one turn: scenario, clean-up, ghost check ---------------------------------------

    def run(self, name: str) -> None:
        self.runs[name] += 1
        aborted = ""
        try:
            getattr(self, name)()
        except (Failed, Exception) as exc:  # a lab phone's error too: count it, clean up, go on
            aborted = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            self.failures[(name, self._norm(aborted))] += 1
            self.log(f"FAILED {name}: {exc}\n{self.unit.log_tail(30)}")
            if len(self.first_failure_logs) < 3:
                self.first_failure_logs.append(f"{name}: {aborted}\n{self.unit.log_tail(25)}")
            with contextlib.suppress(Exception):
                self.hang_up_all()
        self.drain(name, aborted)
        self.clean_phones()

    def drain(self, name: str, aborted: str) -> None:
        wait_until(lambda: not self._calls_or_empty(), DRAIN_S, 0.1)
        left = self._calls_or_empty()
        if not left:
            return
        for call in left:
            where = f" (after the scenario failed: {aborted})" if aborted else ""
            text = f"ghost after {name}{where}: {_brief([call])}"
            self.ghosts.append(text + "\n" + self.unit.log_tail(30))
            self.log("GHOST " + text + "\n" + self.unit.log_tail(30))
            print(text, file=sys.stderr)
            with contextlib.suppress(Failed):
                self.req("select", rows=[call["id"]])
                self.req("hangup")
        wait_until(lambda: not self._calls_or_empty(), 10, 0.1)

    def _calls_or_empty(self) -> list[dict[str, Any]]:
        try:
            return self.unit.calls()
        except Exception:
            return []

    def clean_phones(self) -> None:
        """No phone may carry a call into the next scenario (a transfer's B-C call, a failed step)."""
        for phone in self.phones.values():
            with contextlib.suppress(Exception):
                # The far end answers the unit's BYE before it drops the call from its list.
                wait_until(lambda p=phone: not _call_lines(p), 3.0, 0.1)
                for _ in range(4):
                    if not _call_lines(phone):
                        break
                    self.peer_leftovers += 1
                    self.log(f"phone {phone.user} still had a call: {phone.calls().strip()[:200]}")
                    phone.hangup()
                    time.sleep(0.3)


def _call_lines(phone: Baresip) -> str:
    """listcalls minus its header line ("Active calls (N)"): empty when the phone has no call."""
    return "\n".join(line for line in phone.calls().splitlines()
                     if line.strip() and "active calls" not in line.lower())


def _brief(calls: list[dict[str, Any]]) -> str:
    return "; ".join(f"row {c.get('id')} {c.get('direction')} {c.get('remote')} {c.get('state')!r}"
                     + (f" note {c.get('note')!r}" if c.get("note") else "") for c in calls) or "empty"


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over t (t in s), per hour; NaN with fewer than 2 points."""
    if len(points) < 2:
        return math.nan
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return math.nan
    return 3600.0 * sum((t - mt) * (y - my) for t, y in points) / var


def main() -> int:
    def extra(p: Any) -> None:
        p.add_argument("--minutes", type=float, default=180, help="soak length (default 180)")
        p.add_argument("--every", type=float, default=5, help="seconds between scenarios (default 5)")
        p.add_argument("--sample", type=float, default=60, help="seconds between samples (default 60)")

    args = bench_args(__doc__, extra=extra)
    load0 = load()
    samples: list[Sample] = []
    with lab_dir("soak", args.keep) as work, contextlib.ExitStack() as stack:
        kam = stack.enter_context(Kamailio(work / "kamailio", free_port(), USERS))
        phones: dict[str, Baresip] = {}
        for user, tone in PHONES.items():
            p = Baresip(work / f"phone-{user}", user=user, password=USERS[user], registrar=kam.address,
                        tone_hz=tone, record=False)
            stack.callback(p.stop)
            phones[user] = p.start()
        unit = start_unit(work / "unit", registrar=f"sip:{kam.address}", proxy=f"sip:{kam.address}",
                          lines=[LabLine("main", "1001", USERS["1001"])], domain=kam.address)
        stack.callback(unit.stop)
        assert unit.proc and unit.proc.pid and phones[PEER].pid
        soak = Soak(unit, kam, phones, work / "soak.log")
        print(f"soak: {args.minutes:g} min, a scenario every {args.every:g} s, a sample every {args.sample:g} s; "
              f"log {soak.log_path}", file=sys.stderr)
        um, pm = Meter(unit.proc.pid), Meter(phones[PEER].pid)
        t0 = time.monotonic()
        end = t0 + 60 * args.minutes

        def sample(label: str) -> None:
            s = Sample(time.monotonic() - t0, label, len(soak._calls_or_empty()), sum(soak.runs.values()),
                       len(soak.ghosts), sum(soak.refusals.values()), um.read(), pm.read())
            samples.append(s)
            print(f"  {s.t / 60:6.1f} min {label:8} rows {s.rows} scenarios {s.scenarios} ghosts {s.ghosts} "
                  f"RSS {s.unit['rss']:.1f} MB fds {s.unit['fds']} threads {s.unit['threads']} "
                  f"CPU {s.unit['cpu']:.1f} %", file=sys.stderr)

        sample("start")
        i = 0
        next_sample = None
        died = ""
        while time.monotonic() < end:
            name = Soak.SCENARIOS[i % len(Soak.SCENARIOS)]
            soak.run(name)
            i += 1
            if not unit.proc.running():
                died = f"the unit exited ({unit.proc.poll()}) after {sum(soak.runs.values())} scenarios"
                soak.log("DIED " + died + "\n" + unit.log_tail(60))
                break
            now = time.monotonic()
            if i == len(Soak.SCENARIOS):
                sample("warm-up")
                next_sample = now + args.sample
            elif next_sample is not None and now >= next_sample:
                sample("")
                next_sample += args.sample * math.ceil((now - next_sample + 1e-9) / args.sample)
            time.sleep(max(0.0, min(args.every, end - time.monotonic())))
        if not died:
            if not samples or samples[-1].t < time.monotonic() - t0 - 1:
                sample("end")
        else:
            died_tail = unit.log_tail(40)
        unit_log = unit.log_path.read_text(errors="replace") if unit.log_path.exists() else ""
        stack.close()

    # --- the report -------------------------------------------------------------------
    print(header(f"Soak, {args.minutes:g} min: a scenario every {args.every:g} s, a sample every {args.sample:g} s",
                 load0))
    rows = []
    for s in samples:
        u, p = s.unit, s.peer
        rows.append([f"{s.t / 60:.1f}" + (f" ({s.label})" if s.label else ""), str(s.scenarios), str(s.rows),
                     str(s.ghosts), str(s.refusals),
                     f"{u['rss']:.1f} / {u['uss']:.1f} / {u['anon']:.1f}", str(u["fds"]), str(u["threads"]),
                     f"{u['cpu']:.2f}",
                     f"{p['rss']:.1f} / {p['uss']:.1f} / {p['anon']:.1f}", str(p["fds"]), str(p["threads"]),
                     f"{p['cpu']:.2f}"])
    print(md_table(["min", "scenarios", "rows", "ghosts", "refused", "kiosk RSS / USS / anon MB", "fds", "threads",
                    "CPU %", "baresip 2001 RSS / USS / anon MB", "fds", "threads", "CPU %"], rows))
    print()

    base = next((s for s in samples if s.label == "warm-up"), samples[0])
    last = samples[-1]
    fit = [s for s in samples if s.t >= base.t]

    def verdict(kind: str, a: float, b: float, slope: float = math.nan) -> str:
        if kind == "uss":
            return "(see note)"
        if kind == "rss":
            ok = b / a <= RSS_RATIO_FLAT and (math.isnan(slope) or slope <= RSS_SLOPE_FLAT)
        elif kind == "fds":
            ok = b <= a + FD_SLACK
        else:
            ok = b <= a
        return "flat" if ok else "**grows**"

    def side(key: str, who: str) -> tuple[float, float]:
        return getattr(base, who)[key], getattr(last, who)[key]

    summary = []
    for key, label, fmt in (("rss", "RSS, MB", ".1f"), ("anon", "anonymous, MB", ".1f"), ("uss", "USS, MB", ".1f"),
                            ("fds", "open fds", ".0f"), ("threads", "threads", ".0f")):
        cells = [label]
        for who in ("unit", "peer"):
            a, b = side(key, who)
            slope = slope_per_hour([(s.t, getattr(s, who)[key]) for s in fit]) if key in MEM else math.nan
            kind = "rss" if key in ("rss", "anon") else key
            cells += [f"{a:{fmt}} -> {b:{fmt}}", f"{b / a:.3f}" if a else "n/a", verdict(kind, a, b, slope)]
        summary.append(cells)
    for key, label in (("rss", "RSS slope (least squares), MB/h"), ("anon", "anonymous slope (least squares), MB/h")):
        cells = [label]
        for who in ("unit", "peer"):
            sl = slope_per_hour([(s.t, getattr(s, who)[key]) for s in fit])
            cells += [f"{sl:+.2f}" if not math.isnan(sl) else "n/a", "", ""]
        summary.append(cells)
    half = [s for s in fit if s.t >= (base.t + last.t) / 2]
    if len(half) >= 3:
        cells = ["RSS slope over the second half only, MB/h"]
        for who in ("unit", "peer"):
            sl = slope_per_hour([(s.t, getattr(s, who)["rss"]) for s in half])
            cells += [f"{sl:+.2f}" if not math.isnan(sl) else "n/a", "", ""]
        summary.append(cells)
    cpu_u = [s.unit["cpu"] for s in samples[1:]]
    cpu_p = [s.peer["cpu"] for s in samples[1:]]
    if cpu_u:
        summary.append(["CPU % over the intervals, min / max",
                        f"{min(cpu_u):.2f} / {max(cpu_u):.2f}", "", "", f"{min(cpu_p):.2f} / {max(cpu_p):.2f}", "", ""])
    print(f"Warm-up sample (after one scenario of each kind, {base.t / 60:.1f} min) vs last ({last.t / 60:.1f} min); "
          f"slopes over the {len(fit)} samples from the warm-up one on:")
    print()
    print(md_table(["", "kiosk: warm-up -> last", "ratio", "", "baresip 2001: warm-up -> last", "ratio", ""],
                   summary))
    print()
    print(f"Criteria: RSS and anonymous memory flat when last / warm-up <= {RSS_RATIO_FLAT} and slope <= {RSS_SLOPE_FLAT:g} MB/h; "
          f"fds flat when last <= warm-up + {FD_SLACK}; threads flat when last <= warm-up. "
          f"Start (before any call): kiosk RSS {samples[0].unit['rss']:.1f} MB, fds {samples[0].unit['fds']}, "
          f"threads {samples[0].unit['threads']}. "
          "USS gets no verdict: it jumps by the size of the shared libraries (libpython, pjsua2) whenever the "
          "other processes on the machine that map them start or exit, while RSS does not move; anonymous "
          "memory (/proc/PID/smaps_rollup) is the heap figure that a leak would raise.")
    print()
    total = sum(soak.runs.values())
    print(f"Scenarios run: {total} (" + ", ".join(f"{n} {k}" for k, n in soak.runs.items()) + "); "
          f"failed: {sum(soak.failures.values())}; ghosts: **{len(soak.ghosts)}**; "
          f"rows in the table at the samples: {sorted({s.rows for s in samples})}; "
          f"calls a phone still had after a scenario: {soak.peer_leftovers}.")
    if died:
        print(f"\n**{died}**\n```\n{died_tail}\n```")
    print()
    if soak.refusals:
        print("Commands refused, by reason (numbers shown as N):")
        print()
        print(md_table(["command", "reason", "times"],
                       [[c, r.replace("|", "/"), str(n)] for (c, r), n in soak.refusals.most_common()]))
    else:
        print("Commands refused: none.")
    print()
    if soak.failures:
        print("Scenarios that failed, by reason:")
        print()
        print(md_table(["scenario", "reason", "times"],
                       [[s, r.replace("|", "/"), str(n)] for (s, r), n in soak.failures.most_common()]))
        print()
    for g in soak.ghosts[:3]:
        print(f"```\n{g}\n```")
    errors = Counter()
    for text_line in unit_log.splitlines():
        for word in ("Traceback", "ERROR", "WARNING", "Assertion"):
            if word in text_line:
                errors[word] += 1
    print("unit.log: " + (", ".join(f"{n} lines with {w}" for w, n in errors.items()) or
                          "no Traceback, ERROR, WARNING or Assertion lines") + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
