"""The demo desk: a whole lab on this machine so a newcomer can place a call at once.

A local Kamailio (registrar/proxy with digest auth), three baresip far ends
that auto-answer and each play their own tone, and the unit itself on a demo
profile whose two lines register there. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from .lab.baresip import Baresip
from .lab.kamailio import Kamailio
from .lab.ports import free_port
from .lab.unit import LabLine, LabRoute, lab_profile_toml

log = logging.getLogger("kiosk.demo")

USERS = {"1001": "demo-1001", "1002": "demo-1002", "2001": "demo-2001", "2002": "demo-2002",
         "2003": "demo-2003"}
FAR_ENDS = {"2001": 440, "2002": 660, "2003": 880}


def run_demo(workdir: Path, headless: bool = True) -> int:
    """Start the lab and run the unit on the demo profile until Ctrl-C / SIGTERM."""
    from .cli import run_unit

    workdir.mkdir(parents=True, exist_ok=True)
    kam = Kamailio(workdir / "kamailio", free_port(), USERS)
    phones: list[Baresip] = []
    try:
        kam.start()
        for user, tone in FAR_ENDS.items():
            phones.append(Baresip(workdir / f"phone-{user}", user=user, password=USERS[user],
                                  registrar=kam.address, tone_hz=tone).start())
        sock = workdir / "control.sock"
        profile = workdir / "profile.toml"
        profile.write_text(lab_profile_toml(
            listen=f"127.0.0.1:{free_port()}", registrar=f"sip:{kam.address}", domain="127.0.0.1",
            proxy=f"sip:{kam.address}",
            lines=[LabLine("desk", "1001", USERS["1001"], "Desk 1001"),
                   LabLine("queue", "1002", USERS["1002"], "Queue 1002")],
            routes=[LabRoute("internal", "desk", label="Internal"),
                    LabRoute("queue", "queue", label="Via the queue line")],
            default_route="internal", socket=sock, recordings=workdir / "recordings",
        ))
        os.chmod(profile, 0o600)
        ctl = "kiosk ctl" if sock == Path("/tmp/kiosk-demo/control.sock") else f"kiosk ctl --socket {sock}"
        print(
            "\n".join([
                "",
                "kiosk demo desk",
                f"  registrar  Kamailio on {kam.address}",
                "  far ends   " + ", ".join(f"{u} ({t} Hz tone, auto-answer)" for u, t in FAR_ENDS.items()),
                f"  profile    {profile}",
                "",
                "Drive it from another shell (the venv's bin is .venv/bin):",
                f"  {ctl} dial 2001          # call a far end",
                f"  {ctl} calls              # the call table",
                f"  {ctl} hold | connect     # on the selected call",
                f"  {ctl} events             # follow everything",
                f"  {ctl} hangup",
                "Ctrl-C stops the demo.",
                "",
            ]),
            flush=True,
        )
        return run_unit(profile, headless=headless, stop=threading.Event())
    finally:
        for p in phones:
            p.stop()
        kam.stop()
