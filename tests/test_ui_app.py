"""`kiosk run` with the touchscreen, as its own process: the panel starts on SDL's offscreen driver,
the control socket still serves, SIGTERM stops it all with exit 0; without a display or a
working Kivy the unit runs headless and keeps its calls."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

from kiosk.lab.proc import wait_until
from kiosk.lab.unit import Unit
from kiosk.ui.display import no_display_reason

from .conftest import needs_lab

SHOWN = "touchscreen: the panel is shown (800x480, language en)"


def _start(unit_factory: Callable[..., Unit], tmp_path: Path, **env: str) -> Unit:
    unit = unit_factory(start=False)
    unit.headless = False
    unit.env = {"KIVY_HOME": str(tmp_path / "kivy"), **env}
    return unit


@needs_lab
def test_kiosk_run_shows_the_panel_serves_ctl_and_stops_on_sigterm(unit_factory: Callable[..., Unit],
                                                                    tmp_path: Path) -> None:
    # DISPLAY only has to make the display check pass: SDL draws offscreen.
    unit = _start(unit_factory, tmp_path, SDL_VIDEODRIVER="offscreen", DISPLAY=":kiosk-test")
    unit.start()
    assert wait_until(lambda: SHOWN in unit.log_path.read_text(), 20, 0.05), unit.log_tail()
    done = unit.ctl("calls")
    assert done.ok and done.out["calls"] == [] and done.out["lines"][0]["registered"], done
    assert unit.ctl("dial").err.endswith("number required for dial")  # the panel asks for it on screen
    assert unit.terminate() == 0
    log = unit.log_path.read_text()
    assert "running headless" not in log and "touchscreen failed" not in log, log[-2000:]


@needs_lab
def test_a_panel_that_cannot_start_leaves_a_headless_unit(unit_factory: Callable[..., Unit],
                                                          tmp_path: Path) -> None:
    unit = _start(unit_factory, tmp_path, SDL_VIDEODRIVER="no-such-driver", DISPLAY=":kiosk-test")
    unit.start()
    assert wait_until(lambda: "touchscreen failed" in unit.log_path.read_text(), 20, 0.05), unit.log_tail()
    assert unit.ctl("calls").ok
    assert unit.terminate() == 0


@needs_lab
@pytest.mark.skipif(no_display_reason() is None, reason="this machine has a display")
def test_without_a_display_kiosk_run_is_headless(unit_factory: Callable[..., Unit], tmp_path: Path) -> None:
    unit = _start(unit_factory, tmp_path)
    assert "DISPLAY" not in os.environ and "WAYLAND_DISPLAY" not in os.environ
    unit.start()
    assert unit.ctl("calls").ok
    assert "running headless: no display" in unit.log_path.read_text()
    assert unit.terminate() == 0


def test_the_watchdog_pings_while_the_panel_runs_and_sigint_stops_cleanly(tmp_path: Path) -> None:
    import signal
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
        assert wait_until(lambda: SHOWN in unit.log_path.read_text(), 20, 0.05), unit.log_tail()
        assert unit.proc is not None and unit.proc.popen is not None
        unit.proc.popen.send_signal(signal.SIGINT)
        assert unit.proc.wait(20) == 0
        log = unit.log_path.read_text()
        assert "Traceback" not in log and "touchscreen failed" not in log, log[-2000:]
    finally:
        unit.stop()
        notify.close()
