"""SIPp call load on the unit (ringing calls cancelled, INVITE-then-CANCEL bursts), side by side with baresip.

Method (all on 127.0.0.1 and 127.0.0.2, free ports, everything started and stopped here):

- A Kamailio registrar/proxy (the lab's config); the kiosk (`kiosk run
  --headless`, line 1001, `[sip] trusted = ["127.0.0.1"]`) and, for
  comparison, a baresip 1.0 callee (user 1002, manual answer, so it rings;
  `call_max_calls 4` like the kiosk's MAX_CALLS) registered there; a baresip
  2001 (auto-answer) as the far end of the check call after each load.
- The loads, each on a fresh unit (a crash in one does not hide the next),
  placed by SIPp with `kiosk.lab.sipp.cancel_scenario`:
  - `ring`: `--calls` (200) at `--rate` (20/s) through Kamailio, each CANCELled
    after ringing 2 s; run `--runs` (2) times in a row on the same unit;
  - `burst`: `--burst` (300) at `--burst-rate` (100/s) through Kamailio, each
    CANCELled as soon as its first provisional response (Kamailio's 100) is in;
  - `untrusted`: the same burst from 127.0.0.2 straight to the UA's SIP port
    (the kiosk must refuse it with 403 and never ring; baresip has no trusted
    hosts, so there is no comparison row).
- Counted per load: INVITEs SIPp sent, the final response each got (from
  SIPp's message trace: `Sipp.final_codes()`; "none" = no final response),
  call rows left 5 s after the load, whether the UA is alive, and whether it
  then places a call to 2001 that is answered.
- Control latency: a thread asks every 100 ms for the call table — kiosk:
  `kiosk.control.request(socket, "calls")` (what `kiosk ctl calls` sends,
  without starting a process); baresip: ctrl_tcp `listcalls` — from just
  before the warm-up until after settling. p50 / p95 / max in ms.
- Usage: RSS (psutil), open fds and threads of the UA process after one
  warm-up call (out to 2001 and back) and after the load plus settling.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil  # noqa: E402

from _lab import (  # noqa: E402
    Baresip, Kamailio, LabLine, Unit, bench_args, free_port, header, lab_dir, load, md_table, start_unit,
    wait_until,
)

from kiosk.control import ControlError, error_message, request  # noqa: E402
from kiosk.lab.sipp import Sipp, cancel_scenario  # noqa: E402

USERS = {"1001": "load-1001-pw", "1002": "load-1002-pw", "2001": "load-2001-pw"}
UNTRUSTED_IP = "127.0.0.2"
SETTLE_S = 5.0


class Sampler(threading.Thread):
    """Calls `ask()` every `interval` s; keeps the latencies (ms) and the errors."""

    def __init__(self, ask: Callable[[], Any], interval: float = 0.1) -> None:
        super().__init__(name="ctl-sampler", daemon=True)
        self.ask = ask
        self.interval = interval
        self.latencies: list[float] = []
        self.errors = 0
        self._done = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._done.is_set():
            t0 = time.perf_counter()
            try:
                self.ask()
            except Exception:  # a dead UA: counted, the load goes on
                self.errors += 1
            else:
                self.latencies.append((time.perf_counter() - t0) * 1000)
            next_at += self.interval
            self._done.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._done.set()
        self.join(10)

    def pct(self, q: float) -> float:
        s = sorted(self.latencies)
        return s[max(0, math.ceil(q * len(s)) - 1)] if s else math.nan


def usage(pid: int | None) -> tuple[int, int, int] | None:
    """(RSS bytes, open fds, threads) of a live process, else None."""
    try:
        p = psutil.Process(pid)  # type: ignore[arg-type]
        return p.memory_info().rss, p.num_fds(), p.num_threads()
    except (psutil.Error, TypeError, ValueError):
        return None


class KioskUA:
    name = "kiosk"

    def __init__(self, work: Path, kam: Kamailio) -> None:
        self.unit: Unit = start_unit(work, registrar=f"sip:{kam.address}", proxy=f"sip:{kam.address}",
                                     lines=[LabLine("main", "1001", USERS["1001"])])
        self.user = "1001"
        self.port = int(re.search(r'listen = "127\.0\.0\.1:(\d+)"', self.unit.profile_text).group(1))  # type: ignore[union-attr]

    @property
    def pid(self) -> int | None:
        return self.unit.proc.pid if self.unit.proc else None

    def alive(self) -> bool:
        return bool(self.unit.proc and self.unit.proc.running())

    def ask(self) -> Any:
        reply = request(self.unit.socket, "calls")
        if not reply.get("ok"):
            raise ControlError(error_message(reply))
        return reply

    def rows(self) -> int:
        return len(self.ask()["data"]["calls"])

    def call_out(self, far: Baresip) -> bool:
        """Dial the far end, wait for talking, hang up: True when all of that worked."""
        try:
            out = request(self.unit.socket, "dial", number=far.user)
            if not out.get("ok"):
                return False
            row = out["data"]["row"]
            talking = wait_until(lambda: any(c["id"] == row and c["state"] == "talking"
                                             for c in self.ask()["data"]["calls"]), 10, 0.05)
            request(self.unit.socket, "hangup")
            wait_until(lambda: self.rows() == 0, 10, 0.05)
            return talking
        except (ControlError, OSError):
            return False

    def stop(self) -> None:
        self.unit.stop()


class BaresipUA:
    name = "baresip"

    def __init__(self, work: Path, kam: Kamailio) -> None:
        self.phone = Baresip(work, user="1002", password=USERS["1002"], registrar=kam.address,
                             tone_hz=440, auto_answer=False)
        self.phone.start()
        self.user = "1002"
        self.port = self.phone.sip_port

    @property
    def pid(self) -> int | None:
        return self.phone.pid

    def alive(self) -> bool:
        return self.phone.running()

    def ask(self) -> Any:
        return self.phone.command("listcalls")

    def rows(self) -> int:
        text = self.phone.calls()
        m = re.search(r"active calls \((\d+)\)", text)
        return int(m.group(1)) if m else len(re.findall(r"sip:", text))

    def call_out(self, far: Baresip) -> bool:
        try:
            n = self.phone.event_count()
            self.phone.dial(far.aor)
            self.phone.wait_event("CALL_ESTABLISHED", since=n)
            n = self.phone.event_count()
            self.phone.hangup()
            self.phone.wait_event("CALL_CLOSED", since=n)
            return True
        except Exception:
            return False

    def stop(self) -> None:
        self.phone.stop()


def sipp_load(work: Path, ua: Any, kam: Kamailio, calls: int, rate: int, ring_ms: int,
              untrusted: bool) -> tuple[int, Counter[int | None]]:
    """One SIPp run against the UA; (INVITEs sent, final response -> count). Stops when the UA dies."""
    scenario = cancel_scenario(cancel_after_ms=ring_ms, wait_ring=ring_ms > 0, final_timeout_ms=15000)
    if untrusted:
        sipp = Sipp(work, scenario, remote=f"127.0.0.1:{ua.port}", local_ip=UNTRUSTED_IP, service=ua.user,
                    calls=calls, timeout=90, extra_args=["-r", str(rate), "-rp", "1000", "-l", "400"])
    else:
        sipp = Sipp(work, scenario, remote=kam.address, service=ua.user, calls=calls, timeout=90,
                    extra_args=["-r", str(rate), "-rp", "1000", "-l", "400"])
    sipp.start()
    deadline = time.monotonic() + 120
    while sipp.running() and time.monotonic() < deadline and ua.alive():
        time.sleep(0.1)
    if not ua.alive():
        time.sleep(0.5)
    sipp.stop() if sipp.running() else sipp.wait(5)
    codes = sipp.final_codes()
    return len(codes), Counter(codes.values())


def fmt_codes(codes: Counter[int | None]) -> str:
    return " ".join(f"{'none' if k is None else k}:{v}" for k, v in
                    sorted(codes.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))


def fmt_use(before: tuple[int, int, int] | None, after: tuple[int, int, int] | None, i: int) -> str:
    def one(u: tuple[int, int, int] | None) -> str:
        if u is None:
            return "dead"
        return f"{u[0] / 1e6:.1f}" if i == 0 else str(u[i])

    text = f"{one(before)} -> {one(after)}"
    if i == 0 and before and after:
        text += f" ({(after[0] / before[0] - 1) * 100:+.1f} %)"
    return text


def run_load(work: Path, kam: Kamailio, far: Baresip, make: Callable[[Path, Kamailio], Any], label: str,
             runs: list[tuple[int, int, int, bool]]) -> list[str]:
    """A fresh UA, a warm-up call, the runs of one load, settling; one table row."""
    ua = make(work / "ua", kam)
    try:
        sampler = Sampler(ua.ask)
        sampler.start()
        warm = ua.call_out(far)
        time.sleep(1.0)
        before = usage(ua.pid)
        placed, codes = 0, Counter[int | None]()
        for n, (calls, rate, ring_ms, untrusted) in enumerate(runs):
            p, c = sipp_load(work / f"sipp{n}", ua, kam, calls, rate, ring_ms, untrusted)
            placed += p
            codes.update(c)
            if not ua.alive():
                break
        left: int | str = "dead"
        if ua.alive():
            wait_until(lambda: ua.rows() == 0, SETTLE_S, 0.1)
            left = ua.rows()
            time.sleep(1.0)
        after = usage(ua.pid)
        sampler.stop()
        dial_ok = ua.alive() and ua.call_out(far)
        return [label, ua.name, str(placed), fmt_codes(codes), str(left), "yes" if ua.alive() else "**no**",
                "yes" if dial_ok else "**no**" if warm else "no (nor before)",
                f"{sampler.pct(0.5):.1f} / {sampler.pct(0.95):.1f} / {max(sampler.latencies, default=math.nan):.1f}"
                + (f" ({sampler.errors} err)" if sampler.errors else ""),
                fmt_use(before, after, 0), fmt_use(before, after, 1), fmt_use(before, after, 2)]
    finally:
        ua.stop()


def main() -> int:
    def extra(p: Any) -> None:
        p.add_argument("--calls", type=int, default=200, help="ringing calls per run (default 200)")
        p.add_argument("--rate", type=int, default=20, help="their rate per second (default 20)")
        p.add_argument("--ring-ms", type=int, default=2000, help="how long each rings before its CANCEL")
        p.add_argument("--runs", type=int, default=2, help="ring runs in a row on one unit (default 2)")
        p.add_argument("--burst", type=int, default=300, help="INVITE-then-CANCEL calls (default 300)")
        p.add_argument("--burst-rate", type=int, default=100, help="their rate per second (default 100)")
        p.add_argument("--no-baresip", action="store_true", help="the kiosk only")
        p.add_argument("--only", choices=("ring", "burst", "untrusted"), action="append",
                       help="run only this load (repeatable)")

    args = bench_args(__doc__, extra=extra)
    load0 = load()
    loads = {
        "ring": (f"{args.calls} @ {args.rate}/s, ring {args.ring_ms / 1000:g} s, x{args.runs}",
                 [(args.calls, args.rate, args.ring_ms, False)] * args.runs, True),
        "burst": (f"{args.burst} INVITE+CANCEL @ {args.burst_rate}/s, trusted",
                  [(args.burst, args.burst_rate, 0, False)], True),
        "untrusted": (f"{args.burst} INVITE+CANCEL @ {args.burst_rate}/s from {UNTRUSTED_IP}",
                      [(args.burst, args.burst_rate, 0, True)], False),
    }
    rows = []
    with lab_dir("load", args.keep) as work, contextlib.ExitStack() as stack:
        kam = stack.enter_context(Kamailio(work / "kamailio", free_port(), USERS))
        far = Baresip(work / "far-2001", user="2001", password=USERS["2001"], registrar=kam.address, tone_hz=700)
        stack.callback(far.stop)
        far.start()
        for key, (label, runs, compare) in loads.items():
            if args.only and key not in args.only:
                continue
            makers: list[Callable[[Path, Kamailio], Any]] = [KioskUA]
            if compare and not args.no_baresip:
                makers.append(BaresipUA)
            for make in makers:
                rows.append(run_load(work / f"{key}-{make.__name__}", kam, far, make, label, runs))
                print(f"done: {rows[-1][0]} on {rows[-1][1]}", file=sys.stderr)

    print(header("Call load: ringing calls cancelled, INVITE-then-CANCEL bursts (SIPp)", load0))
    print(md_table(["load", "UA", "INVITEs", "final responses", "rows left", "alive", "dials after",
                    "ctl p50 / p95 / max ms", "RSS MB", "fds", "threads"], rows))
    print()
    print("Targets (issue): no crash, no rows left, no 603, calls beyond the limit answered 486, "
          "`calls` p95 < 50 ms, RSS back within 10 %. Final responses are what SIPp got per INVITE "
          "(through Kamailio for the trusted loads: 100 Trying and 487 may come from Kamailio). "
          "baresip's control figure is ctrl_tcp `listcalls`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
