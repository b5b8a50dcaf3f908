"""Lab fixtures: Kamailio, far-end phones and the kiosk unit as real processes on loopback.

Every fixture starts its processes on free 127.0.0.1 ports inside the test's
tmp_path and stops them by PID when the test ends, pass or fail.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

import pytest

os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")

from kiosk.lab.baresip import Baresip  # noqa: E402
from kiosk.lab.kamailio import Kamailio  # noqa: E402
from kiosk.lab.ports import free_port  # noqa: E402
from kiosk.lab.unit import LabLine, LabRoute, Unit, lab_profile_toml  # noqa: E402

#: Subscribers of the lab registrar: the unit's lines (1xxx) and far ends (2xxx).
USERS = {
    "1001": "line-one-pw", "1002": "line-two-pw",
    "2001": "far-2001-pw", "2002": "far-2002-pw", "2003": "far-2003-pw", "2004": "far-2004-pw",
}

_HAVE_LAB = all(shutil.which(b) for b in ("kamailio", "baresip", "sipp"))
if os.environ.get("CI") and not _HAVE_LAB:  # in CI a missing lab is an install bug, not a skip
    raise RuntimeError("kamailio, baresip or sipp missing: scripts/install.sh must install them")
needs_lab = pytest.mark.skipif(
    not _HAVE_LAB,
    reason="lab binaries missing: apt-get install kamailio baresip sip-tester (scripts/install.sh does)",
)


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[Kamailio]:
    """A registrar/proxy with digest auth for USERS; trunk prefix 9 set up by tests that need it."""
    with Kamailio(tmp_path / "kamailio", free_port(), USERS) as k:
        yield k


@pytest.fixture
def phone(tmp_path: Path, kamailio: Kamailio) -> Iterator[Callable[..., Baresip]]:
    """Factory: a registered, auto-answering baresip far end playing its own tone."""
    phones: list[Baresip] = []

    def make(user: str, tone_hz: int | None = 440, record: bool = True, **kw: object) -> Baresip:
        b = Baresip(tmp_path / f"phone-{user}", user=user, password=USERS[user],
                    registrar=kamailio.address, tone_hz=tone_hz, record=record, **kw)  # type: ignore[arg-type]
        phones.append(b)
        return b.start()

    yield make
    for b in phones:
        b.stop()


@pytest.fixture
def unit_factory(tmp_path: Path, kamailio: Kamailio) -> Iterator[Callable[..., Unit]]:
    """Factory: the kiosk unit as its own process on a lab profile (started, lines registered)."""
    units: list[Unit] = []

    def make(lines: list[LabLine] | None = None, routes: list[LabRoute] | None = None,
             start: bool = True, wait_registered: bool = True, **kw: object) -> Unit:
        workdir = tmp_path / f"unit{len(units)}"
        sock = workdir / "control.sock"
        text = lab_profile_toml(
            listen=f"127.0.0.1:{free_port()}", registrar=f"sip:{kamailio.address}", domain="127.0.0.1",
            proxy=f"sip:{kamailio.address}",
            lines=lines or [LabLine("main", "1001", USERS["1001"])],
            routes=routes, socket=sock, recordings=workdir / "recordings", **kw)  # type: ignore[arg-type]
        unit = Unit(workdir, text, sock)
        units.append(unit)
        if start:
            unit.start(wait_registered=wait_registered)
        return unit

    yield make
    crashed = []
    for u in units:
        u.stop()
        log = u.log_path.read_text(errors="replace") if u.log_path.exists() else ""
        if "Fatal Python error" in log or "Assertion `" in log or "Traceback" in log:
            crashed.append(f"{u.workdir}: {log[-3000:]}")
    assert not crashed, "the unit crashed or logged a traceback:\n" + "\n".join(crashed)
