"""The systemd unit: a valid unit file, and the notify protocol spoken by the real unit."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import needs_lab

ROOT = Path(__file__).resolve().parents[1]
SERVICE = ROOT / "systemd" / "kiosk.service"



pytestmark = pytest.mark.lab  # every test here starts processes

@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_file_verifies_without_a_single_complaint(tmp_path: Path) -> None:
    kiosk = Path(sys.executable).parent / "kiosk"
    assert kiosk.exists(), f"{kiosk}: the console script is not installed"
    text = SERVICE.read_text().replace("/opt/kiosk/.venv/bin/kiosk", str(kiosk))
    unit = tmp_path / "kiosk.service"
    unit.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # systemd-analyze exits 0 on "Failed to parse ... ignoring": any output is a failure.
    complaints = [l for l in (done.stdout + done.stderr).splitlines() if "kiosk.service" in l or "Failed" in l]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr
    assert "Type=notify" in text and "WatchdogSec=" in text and "Restart=always" in text


@needs_lab
def test_unit_tells_systemd_ready_alive_and_stopping(unit_factory, tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        s.settimeout(0.5)
        unit = unit_factory(start=False)
        unit.env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"}
        unit.start()
        got: list[str] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "WATCHDOG=1" not in got:
            try:
                got.append(s.recv(256).decode())
            except socket.timeout:
                pass
        assert got[:1] == ["READY=1"] and "WATCHDOG=1" in got, got
        assert unit.terminate() == 0
        rest: list[str] = []
        try:
            while True:
                rest.append(s.recv(256).decode())
        except socket.timeout:
            pass
        assert "STOPPING=1" in rest, rest
