"""Key-to-RFC 4733 latency of the kiosk: a keypad key in a call until its first telephone-event packet is on the wire.

Method (all on 127.0.0.1, free ports, everything started and stopped here):

- Kamailio is the registrar and proxy; the far end is the lab's pjsua2 peer
  (kiosk.lab.pjpeer, auto-answering, reporting the digits it decodes). The
  kiosk runs as its own process (`kiosk run --headless`), dials the peer and
  stays in the call.
- The trigger is one `kiosk.control.request(socket, "key", key=D)` from this
  process: the JSON line `kiosk ctl key D` sends (with the call in
  conversation the key goes to the call as DTMF), without the cost of
  starting a Python process. `--command dtmf` sends `dtmf D` instead.
- The wire is read by kiosk.lab.rtpsniff: an AF_PACKET socket on `lo` (root)
  that decodes RFC 4733 events in the RTP stream to the peer's ports. The
  latency is the kernel receive stamp of the event's first packet
  (SO_TIMESTAMPNS, CLOCK_REALTIME) minus `time.time()` just before the
  request is sent; the command's reply time is shown beside it.
- Keys are 0.6 s apart (a digit lasts 160 ms on the wire); a few warm-up keys
  are not counted. Every key must reach the peer as the right digit, or the
  run says so.
- baresip is not measured: it would need its own call and its ctrl_tcp has
  no key command with a comparable path (a menu key, not a DTMF sender).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lab import (  # noqa: E402
    Kamailio, LabLine, bench_args, fmt_ms, free_port, header, lab_dir, load, md_table, start_unit, summary,
    wait_until,
)

from kiosk.lab.pjpeer import PjPeer  # noqa: E402
from kiosk.lab.rtpsniff import RtpSniffer, can_sniff  # noqa: E402

WARMUP = 3
USERS = {"1001": "line-one-pw", "2001": "far-2001-pw"}
KEYS = "1234567890*#"


def main() -> int:
    def extra(p):  # type: ignore[no-untyped-def]
        p.add_argument("--command", choices=("key", "dtmf"), default="key", help="key (default) or dtmf")
        p.add_argument("--gap", type=float, default=0.6, help="seconds between keys (default 0.6)")

    args = bench_args(__doc__, calls=40, extra=extra)
    why = can_sniff("lo")
    if why:
        print(why, file=sys.stderr)
        return 2
    load0 = load()
    wire: list[float] = []
    reply: list[float] = []
    wrong: list[str] = []
    with lab_dir("dtmf", args.keep) as work, Kamailio(work / "kamailio", free_port(), USERS) as kam:
        peer = PjPeer(work / "peer", "2001", USERS["2001"], kam.address, tone_hz=700, record=False).start()
        unit = None
        try:
            unit = start_unit(work / "unit", registrar=f"sip:{kam.address}", proxy=f"sip:{kam.address}",
                              lines=[LabLine("main", "1001", USERS["1001"])])
            base = 50000 + (peer.port % 600) * 16
            with RtpSniffer(ports=range(base, base + 16)) as sniff:
                out = unit.request("dial", number="2001")
                assert out.get("ok"), out
                assert wait_until(lambda: any(c["state"] == "talking" for c in unit.calls()), 10), unit.log_tail()
                peer.wait_event("media", status="active")
                time.sleep(0.5)
                since = peer.event_count()
                for i in range(WARMUP + args.calls):
                    key = KEYS[i % len(KEYS)]
                    seen = len(sniff.snapshot())
                    t0 = time.time()
                    r = unit.request(args.command, **({"key": key} if args.command == "key" else {"digits": key}))
                    t1 = time.time()
                    if not r.get("ok"):
                        print(f"key {key}: {r}", file=sys.stderr)
                        return 1
                    if not wait_until(lambda seen=seen: len(sniff.snapshot()) > seen, 3, 0.005):
                        wrong.append(f"key {key}: no event on the wire")
                        continue
                    ev = sniff.snapshot()[seen]
                    if ev.digit != key:
                        wrong.append(f"key {key}: {ev.digit} on the wire")
                    if i >= WARMUP:
                        wire.append((ev.first_at - t0) * 1000)
                        reply.append((t1 - t0) * 1000)
                    time.sleep(args.gap)
                time.sleep(0.5)
                got = peer.digits(since)
                sent = "".join(KEYS[i % len(KEYS)] for i in range(WARMUP + args.calls))
                if got != sent:
                    wrong.append(f"the peer decoded {got!r}, sent {sent!r}")
                durations = sorted({e.duration for e in sniff.snapshot()})
                ends = statistics.median(e.end_packets for e in sniff.snapshot())
                unit.request("hangup")
        finally:
            if unit is not None:
                unit.stop()
            peer.stop()
    rows = []
    for label, values in (("key -> first RFC 4733 packet on the wire", wire),
                          ("key -> command's reply back", reply)):
        med, p = summary(values)
        rows.append([label, fmt_ms(med), fmt_ms(p), fmt_ms(min(values) if values else float("nan")),
                     fmt_ms(max(values) if values else float("nan"))])
    print(header(f"DTMF latency of the kiosk, {len(wire)} keys (`{args.command}`, ms)", load0))
    print(md_table(["", "median", "p95", "min", "max"], rows))
    print()
    print(f"Event durations on the wire (timestamp units): {durations}; end packets per event (median): {ends}. "
          f"{'All digits right.' if not wrong else 'PROBLEMS: ' + '; '.join(wrong)}")
    return 0 if not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
