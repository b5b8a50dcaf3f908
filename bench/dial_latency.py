"""Dial-to-INVITE and hangup-to-BYE latency of the kiosk, side by side with baresip.

Method (all on 127.0.0.1, free ports, everything started and stopped here):

- The wire is `_lab.Wire`: one UDP socket per user agent that is its
  registrar and outbound proxy and answers like a minimal proxy-UAS
  (100/180/200 with SDP, 200 to BYE). Being the first hop, a request's arrival
  there is the request leaving the UA. A Kamailio plus sniffer would add a hop
  and need raw sockets for nothing.
- kiosk: `kiosk run --headless` as its own process, one line registered at the
  wire. The trigger is one `kiosk.control.request(socket, "dial",
  number="2001")` from this process: exactly the JSON line `kiosk ctl dial
  2001` sends, without the cost of starting a Python process (that is measured
  separately, last row). Hang-up is `request(socket, "hangup")`.
- baresip 1.0: one account whose domain is its wire; the trigger is its
  ctrl_tcp `dial sip:2001@<wire>` (and `hangup`), sent from this process.
- Times are `perf_counter_ns` in this process from just before the command is
  sent to the moment the wire's thread has the datagram; the kernel's receive
  stamp (SO_TIMESTAMPNS) against `time_ns` at the trigger is shown as a check
  (it leaves out our own receiving thread's wake-up).
- Calls alternate kiosk, baresip, kiosk, ... so both see the same machine load;
  a few warm-up calls on each side are not counted. Each call is answered,
  confirmed (ACK) and settled for 0.1 s before the hang-up.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lab import (  # noqa: E402
    KioskSide, Stamp, bench_args, fmt_ms, header, lab_dir, load,
    md_table, ms, ratio, settle, summary, wired_sides,
)

WARMUP = 3


def ctl_argv(socket: Path, *args: str) -> list[str]:
    """The `kiosk ctl` console script of this interpreter's environment (as an operator runs it)."""
    script = Path(sys.executable).parent / "kiosk"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "kiosk.cli"]
    return [*base, "ctl", "--socket", str(socket), *args]


def spawn_dial(side: KioskSide, runs: int) -> tuple[list[float], list[float]]:
    """`kiosk ctl dial 2001` as a new process: (start -> INVITE, start -> process exit) in ms."""
    to_invite, to_exit = [], []
    argv = ctl_argv(side.unit.socket, "dial", "2001")
    for _ in range(runs):
        mark = side.wire.mark()
        stamp = Stamp.now()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        end = time.perf_counter_ns()
        if done.returncode != 0:
            raise RuntimeError(f"kiosk ctl dial failed ({done.returncode}): {done.stderr}")
        arrival = side.wire.wait("INVITE", mark, initial=True)
        to_invite.append(ms(arrival.t_perf - stamp.perf))
        to_exit.append(ms(end - stamp.perf))
        side.call_id = arrival.call_id
        side.wire.wait("ACK", mark, call_id=side.call_id)
        side._state("talking")
        settle()
        side.hangup()
        settle()
    return to_invite, to_exit


def main() -> int:
    args = bench_args(__doc__, calls=50)
    load0 = load()
    res: dict[str, dict[str, list[float]]] = {
        s: {k: [] for k in ("dial", "dial_k", "dial_reply", "bye", "bye_k", "bye_reply")}
        for s in ("kiosk", "baresip")
    }
    with lab_dir("dial", args.keep) as work, contextlib.ExitStack() as stack:
        sides = wired_sides(work, stack)
        for i in range(WARMUP + args.calls):
            for side in sides:
                d = side.dial()
                settle()
                h = side.hangup()
                settle()
                if i < WARMUP:
                    continue
                r = res[side.name]
                r["dial"].append(d.wire_ms)
                r["dial_k"].append(d.kernel_ms)
                r["dial_reply"].append(d.reply_ms)
                r["bye"].append(h.wire_ms)
                r["bye_k"].append(h.kernel_ms)
                r["bye_reply"].append(h.reply_ms)
        spawn_runs = max(3, min(10, args.calls))
        spawn_invite, spawn_exit = spawn_dial(sides[0], spawn_runs)
        retrans = sides[0].wire.retransmissions, sides[1].wire.retransmissions

    rows = []
    labels = [
        ("dial", "dial -> INVITE on the wire"),
        ("dial_k", "  (same, kernel receive stamp)"),
        ("dial_reply", "dial -> command's reply back"),
        ("bye", "hangup -> BYE on the wire"),
        ("bye_k", "  (same, kernel receive stamp)"),
        ("bye_reply", "hangup -> command's reply back"),
    ]
    for key, label in labels:
        km, kp = summary(res["kiosk"][key])
        bm, bp = summary(res["baresip"][key])
        rows.append([label, fmt_ms(km), fmt_ms(kp), fmt_ms(bm), fmt_ms(bp), ratio(km, bm)])
    sm, sp = summary(spawn_invite)
    em, ep = summary(spawn_exit)
    rows.append([f"`kiosk ctl dial` process start -> INVITE (n={spawn_runs})", fmt_ms(sm), fmt_ms(sp), "", "", ""])
    rows.append([f"`kiosk ctl dial` process start -> exit (n={spawn_runs})", fmt_ms(em), fmt_ms(ep), "", "", ""])

    print(header(f"Dial and hang-up latency, {args.calls} calls each (ms)", load0))
    print(md_table(["", "kiosk median", "kiosk p95", "baresip median", "baresip p95", "kiosk/baresip"], rows))
    km = summary(res["kiosk"]["dial"])[0]
    print()
    print(f"Target: kiosk dial -> INVITE median <= 5 ms: **{'met' if km <= 5 else 'MISSED'}** ({km:.2f} ms). "
          f"kiosk: control-socket request (what `kiosk ctl` sends); baresip 1.0: ctrl_tcp command. "
          f"Retransmissions seen on the wire: kiosk {retrans[0]}, baresip {retrans[1]}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
