"""SIGHUP -> the new profile in force.

Method (all on 127.0.0.1, free ports, everything started and stopped here):

- Reload: a Kamailio registrar and `kiosk run --headless` on a lab profile
  with one registered line. Each sample changes the line's label in the file
  (written beside it and renamed over it, as an editor does), sends SIGHUP and
  times until the unit's `profile` event arrives on its control socket: the
  desk and the SIP agent have both applied the new profile by then. Between
  samples the script waits past the file watch's debounce. baresip has no
  reload of its configuration to compare with.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lab import (  # noqa: E402
    Kamailio, LabLine, Unit, bench_args, free_port, header, lab_dir, lab_profile_toml, load, md_table, wait_until,
)

from kiosk.control import json_lines, open_events  # noqa: E402

USERS = {"1001": "reload-1001-pw"}


def replace_file(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def sighup_samples(work: Path, n: int) -> list[float]:
    with contextlib.ExitStack() as stack:
        kam = stack.enter_context(Kamailio(work / "kamailio", free_port(), USERS))
        sock = work / "unit" / "control.sock"
        (work / "unit").mkdir(parents=True, exist_ok=True)
        text = lab_profile_toml(listen=f"127.0.0.1:{free_port()}", registrar=f"sip:{kam.address}",
                                domain="127.0.0.1", proxy=f"sip:{kam.address}",
                                lines=[LabLine("main", "1001", USERS["1001"])], socket=sock,
                                recordings=work / "unit" / "recordings")
        unit = Unit(work / "unit", text, sock, headless=True)
        unit.start(wait_registered=True)
        stack.callback(unit.stop)
        events = open_events(sock)
        events.settimeout(None)
        stack.callback(events.close)
        got: list[tuple[float, dict[str, Any]]] = []
        lock = threading.Lock()

        def read() -> None:
            with contextlib.suppress(Exception):
                for obj in json_lines(events, "unit"):
                    with lock:
                        got.append((time.monotonic(), obj))

        threading.Thread(target=read, daemon=True).start()
        original = unit.profile_path.read_text()
        samples = []
        for i in range(n):
            replace_file(unit.profile_path, original.replace('label = "main"', f'label = "Bench {i}"', 1))
            t0 = time.monotonic()
            assert unit.proc is not None
            os.kill(unit.proc.pid, signal.SIGHUP)

            def arrived() -> bool:
                with lock:
                    return any(t >= t0 and e.get("event") == "profile" for t, e in got)

            if not wait_until(arrived, 5, 0.002):
                raise RuntimeError(f"no profile event after SIGHUP:\n{unit.log_tail()}")
            with lock:
                samples.append(min(t for t, e in got if t >= t0 and e.get("event") == "profile") - t0)
            time.sleep(0.7)  # past the file watch's debounce
        return samples


def main() -> int:
    args = bench_args(__doc__, calls=10)
    load0 = load()
    with lab_dir("reload", args.keep) as work:
        hup = sighup_samples(work, args.calls)
    print(header(f"SIGHUP -> new profile in force, {args.calls} reloads", load0))
    q = statistics.quantiles(hup, n=10)[-1] if len(hup) > 1 else hup[0]
    print(md_table(["ms", "median", "p90", "max", "n"], [[
        "SIGHUP -> the unit's profile event (desk and agent applied it)",
        f"{statistics.median(hup) * 1000:.1f}", f"{q * 1000:.1f}", f"{max(hup) * 1000:.1f}", str(len(hup))]]))
    median = statistics.median(hup)
    print(f"Target: <= 1 s: **{'met' if median <= 1 else 'MISSED'}** ({median * 1000:.1f} ms).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
