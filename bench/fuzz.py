"""Long fuzz run: generated INVITE bursts against the real unit, as tests/test_unit_fuzz.py but for as long as asked.

    python bench/fuzz.py --examples 200 --seed 1234

Starts its own lab on 127.0.0.1 (Kamailio, two baresip phones 2001 and 2002,
the unit with line 1001), then throws `--examples` bursts of INVITEs from
`kiosk.lab.flood.invite_strategy` at about `--rate` a second, each from the
trusted host 127.0.0.1 or the untrusted 127.0.0.2, and after each checks that
the unit is alive, registered, has no leftover rows and places and takes a
call. The same --seed gives the same bursts. A failing burst is saved as JSON
(source, cancel_after, messages) in the work directory; the run stops there and
exits 1. Prints one JSON line per burst and a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kiosk.lab import flood  # noqa: E402
from kiosk.lab.baresip import Baresip  # noqa: E402
from kiosk.lab.kamailio import Kamailio  # noqa: E402
from kiosk.lab.ports import free_port  # noqa: E402
from kiosk.lab.unit import LabLine, Unit, lab_profile_toml  # noqa: E402

USERS = {"1001": "fuzz-1001", "2001": "fuzz-2001", "2002": "fuzz-2002"}
TRUSTED, UNTRUSTED = "127.0.0.1", "127.0.0.2"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=50, help="bursts to throw (default 50)")
    ap.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: a new one, printed)")
    ap.add_argument("--rate", type=float, default=100.0, help="INVITEs a second within a burst (default 100)")
    ap.add_argument("--max-burst", type=int, default=40, help="most INVITEs in one burst (default 40)")
    ap.add_argument("--workdir", type=Path, default=None, help="where the lab's files go (default: a new temp dir)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", "Generating overly large repr")
    run_seed = args.seed if args.seed is not None else int(time.time())
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kiosk-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"seed": run_seed, "examples": args.examples, "workdir": str(work)}), flush=True)
    stats = {"bursts": 0, "invites": 0, "failed": None}
    started = time.monotonic()
    with Kamailio(work / "kamailio", free_port(), USERS) as kam, \
            Baresip(work / "far", user="2001", password=USERS["2001"], registrar=kam.address, tone_hz=500), \
            Baresip(work / "caller", user="2002", password=USERS["2002"], registrar=kam.address,
                    tone_hz=600) as caller:
        sock = work / "control.sock"
        unit = Unit(work / "unit", lab_profile_toml(
            listen=f"127.0.0.1:{free_port()}", registrar=f"sip:{kam.address}", domain="127.0.0.1",
            proxy=f"sip:{kam.address}", lines=[LabLine("main", "1001", USERS["1001"])],
            socket=sock, recordings=work / "recordings"), sock)
        with unit:
            target = flood.unit_address(unit)
            senders = {src: flood.Flooder(target, src) for src in (TRUSTED, UNTRUSTED)}
            bursts = st.sampled_from(sorted(senders)).flatmap(lambda src: flood.burst_strategy(
                senders[src].host, senders[src].port, target, args.max_burst).map(lambda b: (src, *b)))

            @seed(run_seed)
            @settings(max_examples=args.examples, deadline=None, database=None, print_blob=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(bursts)
            def throw(example: tuple[str, list[bytes], float | None]) -> None:
                source, messages, cancel_after = example
                result = senders[source].burst(messages, rate=args.rate, cancel_after=cancel_after, settle=0.5)
                report = flood.serves(unit, "2001", caller)
                stats["bursts"] += 1
                stats["invites"] += len(messages)
                print(json.dumps({"burst": stats["bursts"], "source": source, "invites": len(messages),
                                  "cancel_after": cancel_after, **result.summary(), "ok": report["ok"]}), flush=True)
                if not report["ok"]:
                    saved = work / f"failing-burst-{stats['bursts']}.json"
                    saved.write_text(json.dumps({"source": source, "cancel_after": cancel_after,
                                                 "messages": [m.decode("latin-1") for m in messages]}))
                    stats["failed"] = {"burst": stats["bursts"], "saved": str(saved), "report": report}
                    raise AssertionError(f"seed {run_seed}, burst {stats['bursts']}: {report}")

            try:
                throw()
            except AssertionError:
                pass
            finally:
                for s in senders.values():
                    s.close()
            exit_code = unit.terminate() if unit.proc and unit.proc.running() else None
            log = unit.log_path.read_text(errors="replace")
            crash = [l for l in log.splitlines() if "Assertion `" in l or "Fatal Python error" in l or "Traceback" in l]
    summary = {"seed": run_seed, **stats, "seconds": round(time.monotonic() - started, 1),
               "unit_exit_code": exit_code, "crash_in_log": crash[:5]}
    print(json.dumps(summary), flush=True)
    if stats["failed"] or crash or exit_code != 0:
        print(f"reproduce with: python bench/fuzz.py --examples {args.examples} --seed {run_seed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
