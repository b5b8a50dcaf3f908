"""`kiosk run`'s keeper of the panel's process, with stand-in children (no Kivy): a child that
keeps dying is restarted with growing pauses and the touchscreen is said to be off once; stop()
ends a child that ignores SIGTERM with SIGKILL."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from kiosk.lab.proc import wait_until
from kiosk.ui.supervisor import PanelSupervisor, describe_exit


def test_exit_statuses_are_said_plainly() -> None:
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(-9) == "signal SIGKILL"
    assert describe_exit(-11) == "signal SIGSEGV"


def test_the_argv_is_this_python_running_kiosk_ui(tmp_path: Path) -> None:
    sup = PanelSupervisor(tmp_path / "s.sock", tmp_path / "p.toml", fullscreen=True)
    assert sup.argv == [sys.executable, "-m", "kiosk.ui", "--socket", str(tmp_path / "s.sock"),
                        "--profile", str(tmp_path / "p.toml"), "--fullscreen"]


@pytest.mark.lab  # starts processes
def test_a_panel_that_keeps_dying_is_restarted_and_said_off_once(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kiosk.ui")
    sup = PanelSupervisor(tmp_path / "s.sock", tmp_path / "p.toml", False, backoff_first=0.01, backoff_max=0.04)
    sup.argv = [sys.executable, "-c", "raise SystemExit(3)"]
    sup.start()
    try:
        assert wait_until(lambda: sup.starts >= 6, 60, 0.02)
    finally:
        sup.stop()
    ended = [r.getMessage() for r in caplog.records if "panel process ended" in r.getMessage()]
    assert len(ended) >= 5 and all("(exit code 3)" in m for m in ended)
    pauses = [m.rsplit("again in ", 1)[1] for m in ended[:4]]
    assert pauses == ["0.01 s", "0.02 s", "0.04 s", "0.04 s"]
    off = [r for r in caplog.records if "the touchscreen is off" in r.getMessage()]
    assert len(off) == 1


@pytest.mark.lab  # starts processes
def test_stop_kills_a_panel_that_ignores_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    sup = PanelSupervisor(tmp_path / "s.sock", tmp_path / "p.toml", False)
    sup.argv = [sys.executable, "-c",
                "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                f"pathlib.Path({str(ready)!r}).touch(); time.sleep(120)"]
    sup.start()
    try:
        assert wait_until(ready.exists, 60, 0.02)
    finally:
        code = sup.stop(grace=0.3)
    assert code == -9
    assert sup.starts == 1 and sup.pid is None
