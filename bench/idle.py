"""Idle CPU and memory of the headless unit with two registered lines, side by side with baresip.

Method (all on 127.0.0.1, free ports, everything started and stopped here):

- A Kamailio registrar (digest auth, the lab's config) with four users.
- kiosk: `kiosk run --headless` as its own process (no audio device: the
  profile's `device = "none"`, pjsua2's null device), two lines (1001, 1002)
  registered at Kamailio through it as outbound proxy.
- baresip 1.0: one process with two accounts (2001, 2002) registered at the
  same Kamailio, auto-answer, an ausine tone as microphone (not running while
  idle), no sound device.
- Both wait until every line is registered, then settle 5 s; then both are
  measured over the *same* `--seconds` window (default 60 s): CPU % of one
  core = (user + system CPU time delta from psutil `cpu_times()`) / wall time;
  memory from psutil `memory_full_info()` at the end (RSS, USS = private, PSS)
  and the highest RSS of samples every 5 s; wake-ups/s = context switches of
  all threads (from /proc/PID/task/*/status) per second, also per thread.
  Expected in the kiosk: the SIP agent's `libHandleEvents(20)` loop (50/s),
  pjmedia's clock thread `media` driving the conference bridge from the null
  sound device (about 100/s), the control server's `serve_forever(0.1)` (10/s).
- kiosk with the touchscreen: a second unit, `kiosk run` with the Kivy panel
  drawn by SDL's offscreen driver through Mesa's software renderer (no GPU
  here: a Pi draws through its GPU driver, so its memory differs), two more
  lines (1003, 1004), measured in the same window. The panel is the unit's
  child process (`python -m kiosk.ui`): the unit and the panel are two columns.
- The day's features on in both kiosk units: the call history (SQLite in the
  unit's state directory) and a directory file of 2,000 contacts (CSV), whose
  names would name incoming callers; DND off, no call: nothing of them should
  cost anything while idle.
- Registration refreshes (every 300 s for the kiosk, 600 s for baresip) do not
  fall into a 60 s window: this is the cost of doing nothing.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lab import (  # noqa: E402
    Kamailio, LabLine, MultiBaresip, Usage, bench_args, free_port, header, lab_dir, load, md_table, measure,
    start_unit, wait_until,
)

USERS = {"1001": "idle-1001-pw", "1002": "idle-1002-pw", "1003": "idle-1003-pw", "1004": "idle-1004-pw", "2001": "idle-2001-pw", "2002": "idle-2002-pw"}


def _panel_child(unit_pid: int, timeout: float = 20.0) -> int:
    """The pid of the unit's panel process (`python -m kiosk.ui`), once it runs."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in psutil.Process(unit_pid).children():
            if "kiosk.ui" in " ".join(proc.cmdline()):
                return proc.pid
        time.sleep(0.2)
    raise RuntimeError("the unit started no panel process (python -m kiosk.ui)")


def main() -> int:
    args = bench_args(__doc__, seconds=60)
    load0 = load()
    with lab_dir("idle", args.keep) as work, contextlib.ExitStack() as stack:
        kam = stack.enter_context(Kamailio(work / "kamailio", free_port(), USERS))
        contacts = work / "contacts.csv"
        contacts.write_text("name,number\n" + "".join(f"Contact {i},+7 495 {i:07d}\n" for i in range(2000)))
        features = f'[directory]\nfile = "{contacts}"\n'
        unit = start_unit(work / "unit", registrar=f"sip:{kam.address}", proxy=f"sip:{kam.address}",
                          lines=[LabLine("a", "1001", USERS["1001"]), LabLine("b", "1002", USERS["1002"])],
                          extra=features)
        stack.callback(unit.stop)
        shown = start_unit(work / "panel", registrar=f"sip:{kam.address}", proxy=f"sip:{kam.address}", panel=True,
                           lines=[LabLine("a", "1003", USERS["1003"]), LabLine("b", "1004", USERS["1004"])],
                           extra=features)
        stack.callback(shown.stop)
        phone = MultiBaresip(work / "baresip", {u: USERS[u] for u in ("2001", "2002")}, kam.address, tone_hz=440)
        stack.callback(phone.stop)
        phone.start()
        if not wait_until(phone.all_registered, 10, 0.1):
            raise RuntimeError(f"baresip's two accounts did not register:\n{phone.log_text()[-2000:]}")
        time.sleep(5)
        assert unit.proc and unit.proc.pid and phone.pid and shown.proc and shown.proc.pid
        child = _panel_child(shown.proc.pid)
        time.sleep(5)  # the panel's own start-up (Kivy, GL) is not idle
        ku = Usage(unit.proc.pid)
        k, b, p, c = measure([ku, Usage(phone.pid), Usage(shown.proc.pid), Usage(child)], args.seconds)
        lines = unit.request("calls")["data"]["lines"] + shown.request("calls")["data"]["lines"]
        if "panel process ended" in shown.log_path.read_text():
            raise RuntimeError(f"the panel process did not stay up:\n{shown.log_tail()}")
        if not all(line["registered"] for line in lines) or not phone.all_registered():
            raise RuntimeError(f"a line lost its registration during the window: {lines}")

    def row(label: str, key: str, fmt: str, ratio: bool = True) -> list[str]:
        r = "" if not ratio else f"{k[key] / b[key]:.1f}x" if b[key] else "n/a (baresip: 0)"
        return [label, format(k[key], fmt), format(b[key], fmt), r, format(p[key], fmt), format(c[key], fmt)]

    rows = [
        row("CPU, % of one core", "cpu", ".2f"),
        row("  user / system", "user", ".2f", ratio=False),
        row("RSS at end, MB", "rss", ".1f"),
        row("RSS highest sample, MB", "rss_max", ".1f"),
        row("USS (private), MB", "uss", ".1f"),
        row("PSS, MB", "pss", ".1f"),
        row("threads", "threads", "d", ratio=False),
        row("wake-ups (context switches) / s", "wakeups", ".0f", ratio=False),
    ]
    rows[1][1] = f"{k['user']:.2f} / {k['system']:.2f}"
    rows[1][2] = f"{b['user']:.2f} / {b['system']:.2f}"
    rows[1][4] = f"{p['user']:.2f} / {p['system']:.2f}"
    rows[1][5] = f"{c['user']:.2f} / {c['system']:.2f}"
    print(header(f"Idle, two registered lines, {args.seconds:g} s window (same window for both)", load0))
    print(md_table(["", "kiosk (headless unit)", "baresip (2 accounts)", "kiosk/baresip",
                    "unit showing the touchscreen", "its panel process (offscreen, software GL)"], rows))
    print()
    print("kiosk wake-ups/s by thread, in creation order (the OS names Python threads `python`): "
          + ", ".join(f"{name} {rate:.0f}" for name, rate in ku.per_thread) + ".")
    print("CPU times come in 10 ms ticks: over 60 s the resolution is 0.02 % of a core. "
          "No JACK here, so RSS is the honest upper bound; USS/PSS move with what else maps the same "
          "libraries (other Python/pjsua2 processes on the machine lower them).")
    print(f"Targets: idle CPU <= 1.5 %: **{'met' if k['cpu'] <= 1.5 else 'MISSED'}** ({k['cpu']:.2f} %); "
          f"RSS <= 80 MB: **{'met' if k['rss_max'] <= 80 else 'MISSED'}** ({k['rss_max']:.1f} MB highest).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
