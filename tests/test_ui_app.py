"""`kiosk run` with the touchscreen, as real processes: the unit starts the panel as its own
process (`python -m kiosk.ui`, SDL's offscreen driver), which talks to it only through the
control socket. Killing the panel leaves the unit and its calls alone and the panel comes back;
SIGTERM stops both with exit 0; the unit never loads Kivy or SDL; without a display or a working
Kivy the unit keeps its calls."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Callable

import pytest

from kiosk.lab.proc import wait_until
from kiosk.lab.unit import Unit
from kiosk.ui.display import no_display_reason

from .conftest import needs_lab

SHOWN = "touchscreen: the panel is shown (800x480, language en)"



pytestmark = pytest.mark.lab  # every test here starts processes

def _start(unit_factory: Callable[..., Unit], tmp_path: Path, **env: str) -> Unit:
    unit = unit_factory(start=False)
    unit.headless = False
    unit.env = {"KIVY_HOME": str(tmp_path / "kivy"), **env}
    return unit


def panel_children(pid: int) -> list[int]:
    """The unit's child processes that run the panel (`python -m kiosk.ui`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        if ppid == pid and b"kiosk.ui" in argv:
            found.append(int(entry.name))
    return found


def loaded_graphics(pid: int) -> list[str]:
    """Kivy's or SDL's shared objects mapped into a process."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sorted({line.split()[-1] for line in maps.splitlines()
                   if "kivy" in line.lower() or "libsdl2" in line.lower()})


def shown_count(unit: Unit) -> int:
    return unit.log_path.read_text(errors="replace").count(SHOWN)


@needs_lab
def test_the_panel_runs_as_a_child_a_killed_panel_leaves_the_call_and_comes_back(
        unit_factory: Callable[..., Unit], phone: Callable[..., object], tmp_path: Path) -> None:
    phone("2001")
    # DISPLAY only has to make the display check pass: SDL draws offscreen.
    unit = _start(unit_factory, tmp_path, SDL_VIDEODRIVER="offscreen", DISPLAY=":kiosk-test")
    unit.start()
    assert unit.proc is not None and unit.proc.pid is not None
    pid = unit.proc.pid
    assert wait_until(lambda: shown_count(unit) == 1, 30, 0.05), unit.log_tail()
    [child] = panel_children(pid)
    assert loaded_graphics(child), "the panel's process should have Kivy/SDL mapped"
    assert loaded_graphics(pid) == []  # the SIP process never loads Kivy, SDL or the GL driver
    done = unit.ctl("calls")
    assert done.ok and done.out["lines"][0]["registered"], done
    assert unit.ctl("dial").err.endswith("number required for dial")  # the panel asks for it on screen
    dial = unit.ctl("dial", "2001")
    assert dial.ok, dial.err
    row = dial.out["row"]
    unit.wait_for(lambda calls: any(c["id"] == row and c["state"] == "talking" for c in calls))

    os.kill(child, signal.SIGKILL)  # as a crash in SDL or the GL driver would end it
    assert wait_until(lambda: "panel process ended (signal SIGKILL)" in unit.log_path.read_text(), 20, 0.05), \
        unit.log_tail()
    assert unit.proc.running()
    assert [(c["id"], c["state"]) for c in unit.calls()] == [(row, "talking")]  # the call carried on
    assert wait_until(lambda: shown_count(unit) == 2, 30, 0.05), unit.log_tail()  # restarted, shown again
    [again] = panel_children(pid)
    assert again != child
    assert [c["id"] for c in unit.calls()] == [row]

    assert unit.terminate() == 0  # SIGTERM: the panel is stopped first, then the calls end cleanly
    assert not Path(f"/proc/{again}").exists() or Path(f"/proc/{again}/stat").read_text().split()[2] == "Z"
    log = unit.log_path.read_text()
    assert "Traceback" not in log and "running headless" not in log and "touchscreen failed" not in log, log[-3000:]
    assert f"panel process {again} stopped (exit code 0)" in log, log[-3000:]


@needs_lab
def test_a_panel_that_cannot_start_is_retried_and_the_unit_keeps_serving(unit_factory: Callable[..., Unit],
                                                                         tmp_path: Path) -> None:
    unit = _start(unit_factory, tmp_path, SDL_VIDEODRIVER="no-such-driver", DISPLAY=":kiosk-test")
    unit.start()
    assert wait_until(lambda: "panel process ended (exit code" in unit.log_path.read_text(), 30, 0.05), \
        unit.log_tail()
    assert unit.ctl("calls").ok
    assert unit.proc is not None and unit.proc.running()
    assert unit.terminate() == 0
    log = unit.log_path.read_text()
    assert "touchscreen failed" in log and "Traceback" not in log, log[-3000:]


@needs_lab
@pytest.mark.skipif(no_display_reason() is None, reason="this machine has a display")
def test_without_a_display_kiosk_run_is_headless(unit_factory: Callable[..., Unit], tmp_path: Path) -> None:
    unit = _start(unit_factory, tmp_path)
    assert "DISPLAY" not in os.environ and "WAYLAND_DISPLAY" not in os.environ
    unit.start()
    assert unit.ctl("calls").ok
    assert "running headless: no display" in unit.log_path.read_text()
    assert unit.proc is not None and unit.proc.pid is not None and panel_children(unit.proc.pid) == []
    assert unit.terminate() == 0


def test_the_watchdog_pings_while_the_panel_runs_and_sigint_stops_cleanly(tmp_path: Path) -> None:
    import socket

    from kiosk.lab.ports import free_port
    from kiosk.lab.unit import LabLine, lab_profile_toml

    sock = tmp_path / "control.sock"
    text = lab_profile_toml(listen=f"127.0.0.1:{free_port()}", registrar=f"sip:127.0.0.1:{free_port()}",
                            domain="127.0.0.1", lines=[LabLine("main", "1001", "pw")], socket=sock,
                            recordings=tmp_path / "recordings")  # no registrar there: lines stay unregistered
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    unit = Unit(tmp_path, text, sock, headless=False,
                env={"SDL_VIDEODRIVER": "offscreen", "DISPLAY": ":kiosk-test", "KIVY_HOME": str(tmp_path / "kivy"),
                     "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"})
    try:
        unit.start(wait_registered=False)
        got = [notify.recv(100).decode() for _ in range(3)]
        assert got == ["READY=1", "WATCHDOG=1", "WATCHDOG=1"]
        assert wait_until(lambda: SHOWN in unit.log_path.read_text(), 30, 0.05), unit.log_tail()
        assert unit.proc is not None and unit.proc.popen is not None
        [child] = panel_children(unit.proc.popen.pid)
        unit.proc.popen.send_signal(signal.SIGINT)
        assert unit.proc.wait(20) == 0
        log = unit.log_path.read_text()
        assert "Traceback" not in log and "touchscreen failed" not in log, log[-2000:]
        assert f"panel process {child} stopped (exit code 0)" in log, log[-2000:]
    finally:
        unit.stop()
        notify.close()
