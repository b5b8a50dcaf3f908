"""Lab fixtures: Kamailio, far-end phones and the kiosk unit as real processes on loopback.

Every fixture starts its processes on free 127.0.0.1 ports inside the test's
tmp_path and stops them by PID when the test ends, pass or fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")

from kiosk.lab.baresip import Baresip  # noqa: E402
from kiosk.lab.kamailio import Kamailio  # noqa: E402
from kiosk.lab.ports import free_port  # noqa: E402
from kiosk.lab.proc import wait_until  # noqa: E402
from kiosk import events as ev  # noqa: E402
from kiosk.desk import Desk  # noqa: E402
from kiosk.lab.unit import LabLine, LabRoute, Unit, lab_profile_toml  # noqa: E402

from . import fakes  # noqa: E402
from .fakes import FakeAgent, make_profile  # noqa: E402

#: Subscribers of the lab registrar: the unit's lines (1xxx) and far ends (2xxx).
USERS = {
    "1001": "line-one-pw", "1002": "line-two-pw",
    "2001": "far-2001-pw", "2002": "far-2002-pw", "2003": "far-2003-pw", "2004": "far-2004-pw",
}

_HAVE_LAB = all(shutil.which(b) for b in ("kamailio", "baresip", "sipp"))
if os.environ.get("CI") and not _HAVE_LAB:  # in CI a missing lab is an install bug, not a skip
    raise RuntimeError("kamailio, baresip or sipp missing: scripts/install.sh must install them")
# --- the desk on a fake agent (fast unit tests) ---------------------------------


@pytest.fixture(autouse=True, scope="session")
def _wider_fixtures_write_in_pytests_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A module- or session-scoped fixture that calls make_profile gets a new directory of pytest's own."""
    fakes.set_new_tmp_dir(lambda: tmp_path_factory.mktemp("make_profile"))
    yield
    fakes.set_new_tmp_dir(None)


@pytest.fixture(autouse=True)
def _writes_only_in_tmp_path(tmp_path: Path) -> Iterator[None]:
    """Paths a test does not choose (make_profile's recordings and socket) lie in its own tmp_path,
    so no test writes to a fixed place under /tmp that other runs share."""
    fakes.set_own_tmp_path(tmp_path)
    yield
    fakes.set_own_tmp_path(None)


@pytest.fixture
def agent() -> FakeAgent:
    return FakeAgent()


@pytest.fixture
def desk(agent: FakeAgent) -> Iterator[Desk]:
    """A started desk on the fake agent, every line registered; its loop ends with the test."""
    profile = make_profile()
    d = Desk(profile, agent)
    d.start()
    agent.register_all(profile)
    yield d
    d.close()


@pytest.fixture
def seen(desk: Desk) -> list[ev.Event]:
    """Every desk event from here on, but availability and done-notices (tested on their own)."""
    got: list[ev.Event] = []
    desk.subscribe(lambda e: got.append(e) if e.kind not in ("available", "action_done") else None)
    return got


# --- the lab: real processes -----------------------------------------------------

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
def trunk_port() -> int:
    """A free port for a trunk (usually a SIPp UAS) behind Kamailio's dial prefix 9."""
    return free_port()


@pytest.fixture
def kamailio_trunk(tmp_path: Path, trunk_port: int) -> Iterator[Kamailio]:
    """Like `kamailio`, and numbers dialled with prefix 9 go (prefix stripped) to 127.0.0.1:trunk_port.

    A test module that wants every lab part on it overrides `kamailio` with
    `def kamailio(kamailio_trunk): return kamailio_trunk`.
    """
    with Kamailio(tmp_path / "kamailio", free_port(), USERS, trunks={"9": trunk_port}) as k:
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
             start: bool = True, wait_registered: bool = True, domain: str = "127.0.0.1",
             proxy: str | None = "kamailio", **kw: object) -> Unit:
        # domain=kamailio.address makes bare numbers resolvable by far ends too
        # (a Refer-To that baresip dials itself), as a real PBX domain would be.
        workdir = tmp_path / f"unit{len(units)}"
        sock = workdir / "control.sock"
        text = lab_profile_toml(
            listen=f"127.0.0.1:{free_port()}", registrar=f"sip:{kamailio.address}", domain=domain,
            # proxy=None: the line has only its registrar (which is then its outbound proxy too).
            proxy=f"sip:{kamailio.address}" if proxy == "kamailio" else proxy,
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


class EventLog:
    """`kiosk ctl events` of a unit as its own process, its JSON lines collected in a file."""

    def __init__(self, unit: Unit) -> None:
        self.path = unit.workdir / f"events-{time.monotonic_ns()}.jsonl"
        argv = [sys.executable, "-m", "kiosk.cli", "ctl", "--socket", str(unit.socket), "events"]
        with open(self.path, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        if not wait_until(lambda: any(e.get("event") == "snapshot" for e in self.events()), 10):
            self.stop()
            raise AssertionError(f"kiosk ctl events printed no snapshot: {self.path.read_text()[-2000:]}")

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every complete event line so far (only `kind` ones, if given)."""
        out = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # a line still being written
            if isinstance(obj, dict) and (kind is None or obj.get("event") == kind):
                out.append(obj)
        return out

    def wait(self, kind: str, pred: Callable[[dict[str, Any]], bool] = lambda e: True,
             timeout: float = 10.0) -> dict[str, Any]:
        """The first `kind` event matching pred (waiting for it); AssertionError with all events if none."""
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = [e for e in self.events(kind) if pred(e)]
            return bool(found)

        if not wait_until(check, timeout, 0.05):
            raise AssertionError(f"no matching {kind} event in {timeout} s; events: {self.events()}")
        return found[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def unit_events() -> Iterator[Callable[[Unit], EventLog]]:
    """Factory: follow a unit's desk events through `kiosk ctl events` (stopped by PID at the end)."""
    logs: list[EventLog] = []

    def make(unit: Unit) -> EventLog:
        log = EventLog(unit)
        logs.append(log)
        return log

    yield make
    for log in logs:
        log.stop()


# Imported last: it needs USERS from this module. Gives every test module the
# `pjpeer` fixture (a pjsua2 far end as its own process).
from .pjpeers import pjpeer  # noqa: E402,F401  (the pjsua2 far-end fixture, for every test module)
