"""Hold-to-re-INVITE (and connect-to-re-INVITE) latency of the kiosk, side by side with baresip.

Method (all on 127.0.0.1, free ports, everything started and stopped here):

- The wire is `_lab.Wire` (see dial_latency.py): a UDP socket per user agent
  that is its registrar, outbound proxy and answering far end. It answers the
  re-INVITE with 200 and an SDP whose direction mirrors the offer (sendonly ->
  recvonly), then waits for the ACK. The far end's media goes to a socket
  nobody reads; the UA's RTP flows all along, as in a real call.
- One call per side is set up first (dialled to the wire, answered, ACKed).
  Then `--calls` cycles of: hold -> re-INVITE (a=sendonly) on the wire, wait
  for the ACK and (kiosk) for the call table to show "on hold"; connect
  (baresip: resume) -> re-INVITE (a=sendrecv), same waits; 0.1 s between
  actions. Sides alternate cycle by cycle.
- kiosk trigger: `kiosk.control.request(socket, "hold")` / `("connect")`,
  the JSON line `kiosk ctl hold` / `kiosk ctl connect` sends; baresip 1.0
  trigger: its ctrl_tcp `hold` / `resume`.
- Times: `perf_counter_ns` in this process from just before the command is sent
  to the wire's thread holding the datagram; the kernel receive stamp
  (SO_TIMESTAMPNS vs `time_ns` at the trigger) as a check.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lab import (  # noqa: E402
    bench_args, fmt_ms, header, lab_dir, load, md_table,
    ratio, settle, summary, wired_sides,
)

WARMUP = 2


def main() -> int:
    args = bench_args(__doc__, calls=50)
    load0 = load()
    keys = ("hold", "hold_k", "hold_reply", "conn", "conn_k", "conn_reply")
    res = {s: {k: [] for k in keys} for s in ("kiosk", "baresip")}
    directions: dict[str, set[tuple[str, str]]] = {"kiosk": set(), "baresip": set()}
    with lab_dir("hold", args.keep) as work, contextlib.ExitStack() as stack:
        sides = wired_sides(work, stack)
        for side in sides:
            side.dial()
        settle(0.5)
        for i in range(WARMUP + args.calls):
            for side in sides:
                h = side.hold()
                settle()
                c = side.resume()
                settle()
                directions[side.name].add((h.arrival.direction, c.arrival.direction))
                if i < WARMUP:
                    continue
                r = res[side.name]
                r["hold"].append(h.wire_ms)
                r["hold_k"].append(h.kernel_ms)
                r["hold_reply"].append(h.reply_ms)
                r["conn"].append(c.wire_ms)
                r["conn_k"].append(c.kernel_ms)
                r["conn_reply"].append(c.reply_ms)
        for side in sides:
            side.hangup()
        retrans = sides[0].wire.retransmissions, sides[1].wire.retransmissions

    labels = [
        ("hold", "hold -> re-INVITE on the wire"),
        ("hold_k", "  (same, kernel receive stamp)"),
        ("hold_reply", "hold -> command's reply back"),
        ("conn", "connect/resume -> re-INVITE on the wire"),
        ("conn_k", "  (same, kernel receive stamp)"),
        ("conn_reply", "connect/resume -> command's reply back"),
    ]
    rows = []
    for key, label in labels:
        km, kp = summary(res["kiosk"][key])
        bm, bp = summary(res["baresip"][key])
        rows.append([label, fmt_ms(km), fmt_ms(kp), fmt_ms(bm), fmt_ms(bp), ratio(km, bm)])
    print(header(f"Hold and connect latency, {args.calls} hold/connect cycles each (ms)", load0))
    print(md_table(["", "kiosk median", "kiosk p95", "baresip median", "baresip p95", "kiosk/baresip"], rows))
    km = summary(res["kiosk"]["hold"])[0]
    dirs = "; ".join(f"{s}: " + ", ".join(f"hold {h} / connect {c}" for h, c in sorted(d))
                     for s, d in directions.items())
    print()
    print(f"Target: kiosk hold -> re-INVITE median <= 5 ms: **{'met' if km <= 5 else 'MISSED'}** ({km:.2f} ms). "
          f"SDP direction of the re-INVITEs: {dirs}. "
          f"Retransmissions seen on the wire: kiosk {retrans[0]}, baresip {retrans[1]}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
