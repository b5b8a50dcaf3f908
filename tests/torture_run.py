"""Send RFC 4475's torture messages to a running unit, then prove it still works.

Run by tests/test_unit_torture.py *inside a network namespace that has only a
loopback interface*: the messages name hosts such as 192.0.2.1 and
example.com, and whatever the unit does with them (responses, DNS look-ups)
must never leave this machine. Prints one JSON report on stdout; exit 0 when
the unit survived, stayed registered, and could still place and take a call.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import time
from pathlib import Path

from kiosk.lab.baresip import Baresip
from kiosk.lab.kamailio import Kamailio
from kiosk.lab.ports import free_port
from kiosk.lab.proc import wait_until
from kiosk.lab.sipp import Sipp, uac_scenario
from kiosk.lab.unit import LabLine, Unit, lab_profile_toml

USERS = {"1001": "torture-1001", "2001": "torture-2001"}


def main(corpus: Path, work: Path | None = None) -> int:
    """Run the corpus against a unit whose files all go in `work` (the test's tmp_path; a new temporary one if None)."""
    if not corpus.is_dir():
        print(f"torture_run: no corpus at {corpus}: give the rfc4475 folder of shared/robustness", file=sys.stderr)
        return 2
    report: dict[str, object] = {"sent": 0}
    if work is None:
        work = Path(tempfile.mkdtemp(prefix="kiosk-torture-"))
    with Kamailio(work / "kamailio", free_port(), USERS) as kam, \
            Baresip(work / "far", user="2001", password=USERS["2001"], registrar=kam.address, tone_hz=500) as _far:
        port = free_port()
        sock = work / "control.sock"
        unit = Unit(work / "unit", lab_profile_toml(
            listen=f"127.0.0.1:{port}", registrar=f"sip:{kam.address}", domain="127.0.0.1",
            proxy=f"sip:{kam.address}", lines=[LabLine("main", "1001", USERS["1001"])],
            socket=sock, recordings=work / "recordings"), sock)
        with unit:
            files = sorted(corpus.glob("*.dat"))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                for f in files:
                    data = f.read_bytes()
                    if len(data) > 65000:
                        data = data[:65000]
                    s.sendto(data, ("127.0.0.1", port))
                    report["sent"] = int(report["sent"]) + 1  # type: ignore[arg-type]
                    time.sleep(0.02)
            time.sleep(2)
            report["alive_after"] = unit.proc.running() if unit.proc else False
            # Any torture INVITE that rang is hung up by the operator: that must not crash either.
            for row in unit.calls():
                unit.request("select", rows=[row["id"]])
                unit.request("hangup")
            wait_until(lambda: not unit.calls(), 40, 0.2)
            report["rows_left"] = len(unit.calls())
            report["registered"] = unit.all_registered()
            out = unit.ctl("dial", "2001")
            report["dial"] = out.rc
            talked = wait_until(lambda: any(c["state"] == "talking" for c in unit.calls()), 10)
            report["outgoing_talking"] = talked
            unit.ctl("hangup")
            wait_until(lambda: not unit.calls(), 10)
            sipp = Sipp(work / "sipp", uac_scenario(), remote=kam.address, service="1001")
            with sipp.start():
                rang = wait_until(lambda: any(c["state"] == "ringing" for c in unit.calls()), 10)
                report["incoming_rang"] = rang
                report["answer"] = unit.ctl("answer").rc
                time.sleep(0.5)
                report["hangup"] = unit.ctl("hangup").rc
                report["sipp_rc"] = sipp.wait(15)
            report["alive_at_end"] = unit.proc.running() if unit.proc else False
            report["exit_code"] = unit.terminate()
            log = unit.log_path.read_text(errors="replace")
            report["crash_in_log"] = any(w in log for w in ("Fatal Python error", "Assertion `", "Traceback"))
            if report["crash_in_log"] or not report["alive_after"]:
                report["log_tail"] = log[-4000:]
    print(json.dumps(report))
    ok = (report["alive_after"] and report["registered"] and report["dial"] == 0 and report["outgoing_talking"]
          and report["incoming_rang"] and report["answer"] == 0 and report["exit_code"] == 0
          and not report["crash_in_log"])
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: torture_run.py CORPUS_DIR [WORKDIR]")
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) == 3 else None))
