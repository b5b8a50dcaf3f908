"""`kiosk run` spawned -> READY=1 with two registered lines, side by side with baresip registering two accounts.

Method (all on 127.0.0.1, free ports, everything started and stopped here):

- A Kamailio registrar (digest auth, the lab's config).
- kiosk: `kiosk run --headless` as its own process on a lab profile with two
  lines, NOTIFY_SOCKET pointing at a datagram socket of this script's, as
  systemd's would: the time from the spawn to the READY=1 datagram. READY=1
  waits until every line has registered or failed, so this is the
  `systemctl start` the issue means. Each run is a new process (`--runs`).
- baresip 1.0: one process with two accounts at the same Kamailio: the time
  from its spawn to both accounts registered (its own status, polled every
  10 ms), the nearest thing baresip has to READY.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lab import (  # noqa: E402
    Kamailio, LabLine, MultiBaresip, Unit, bench_args, free_port, header, lab_dir, lab_profile_toml, load,
    md_table, wait_until,
)

USERS = {"1001": "ready-1001-pw", "1002": "ready-1002-pw", "2001": "ready-2001-pw", "2002": "ready-2002-pw"}


def kiosk_ready(work: Path, registrar: str) -> float:
    """One spawn of the unit: seconds until READY=1."""
    work.mkdir(parents=True, exist_ok=True)
    sock = work / "control.sock"
    text = lab_profile_toml(listen=f"127.0.0.1:{free_port()}", registrar=registrar, domain="127.0.0.1",
                            proxy=registrar, lines=[LabLine("a", "1001", USERS["1001"]),
                                                    LabLine("b", "1002", USERS["1002"])],
                            socket=sock, recordings=work / "recordings")
    notify = work / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(notify))
        s.settimeout(0.2)
        unit = Unit(work, text, sock, headless=True)
        unit.env = {"NOTIFY_SOCKET": str(notify)}
        t0 = time.monotonic()
        unit.start(wait_registered=False)
        try:
            deadline = t0 + 30
            while time.monotonic() < deadline:
                try:
                    if s.recv(256).decode().startswith("READY=1"):
                        elapsed = time.monotonic() - t0
                        lines = unit.request("calls")["data"]["lines"]
                        if not all(line["registered"] for line in lines):
                            raise RuntimeError(f"READY=1 came with a line not registered: {lines}")
                        return elapsed
                except socket.timeout:
                    continue
            raise RuntimeError(f"no READY=1 in 30 s:\n{unit.log_tail()}")
        finally:
            unit.stop()
            notify.unlink(missing_ok=True)


def baresip_ready(work: Path, address: str) -> float:
    phone = MultiBaresip(work, {u: USERS[u] for u in ("2001", "2002")}, address)
    t0 = time.monotonic()
    phone.start()
    try:
        if not wait_until(phone.all_registered, 30, 0.01):
            raise RuntimeError(f"baresip did not register:\n{phone.log_text()[-2000:]}")
        return time.monotonic() - t0
    finally:
        phone.stop()


def main() -> int:
    args = bench_args(__doc__, calls=10)
    runs = args.calls
    load0 = load()
    kiosk, peer = [], []
    with lab_dir("ready", args.keep) as work, contextlib.ExitStack() as stack:
        kam = stack.enter_context(Kamailio(work / "kamailio", free_port(), USERS))
        for i in range(runs):
            kiosk.append(kiosk_ready(work / f"unit{i}", f"sip:{kam.address}"))
            peer.append(baresip_ready(work / f"baresip{i}", kam.address))

    def cells(values: list[float]) -> list[str]:
        q = statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]
        return [f"{statistics.median(values) * 1000:.0f}", f"{q * 1000:.0f}", str(len(values))]

    print(header(f"Spawn -> ready, two registered lines, {runs} runs each", load0))
    print(md_table(["ms", "median", "p90", "n"], [
        ["kiosk: `kiosk run` spawned -> READY=1 (both lines registered)", *cells(kiosk)],
        ["baresip 1.0: spawned -> both accounts registered", *cells(peer)],
    ]))
    median = statistics.median(kiosk)
    print(f"kiosk/baresip: {median / statistics.median(peer):.1f}x. Target: READY=1 <= 3 s: "
          f"**{'met' if median <= 3 else 'MISSED'}** ({median:.2f} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
