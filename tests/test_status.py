"""`kiosk ctl status`: what kiosk.status.build_status says of a desk on the fake agent."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kiosk import provisioning as prov
from kiosk import status
from kiosk.desk import Desk
from kiosk.profile import Provisioning

from .fakes import FakeAgent
from .test_provisioning import FakeFetcher, StandInResult, answer


class Reloads:
    """The Reloader's attributes status reads: profile_source, loaded_at, last."""

    def __init__(self, source: str, loaded_at: float, last: StandInResult | None = None) -> None:
        self.profile_source, self.loaded_at, self.last = source, loaded_at, last

    def apply_bytes(self, data: bytes, source: str) -> StandInResult:
        return StandInResult(False, source, ["x.toml:1: line: at least one [[line]] is required"])


def test_a_running_desk_s_status(desk: Desk, agent: FakeAgent) -> None:
    started = time.time() - 3725
    agent.register("op2", False, 403, "Forbidden")
    row = agent.ring("sip:2001@pbx.test", "op1")
    desk.settle()
    s = status.build_status(desk, started=started)
    assert s["version"]["kiosk"] and s["version"]["python"]
    assert s["uptime_seconds"] >= 3725 and s["uptime"].startswith("1 h 02 min")
    assert s["profile"]["source"] == str(desk.profile.path) and s["profile"]["operator"] == "Test Operator"
    assert [(ln["id"], ln["registered"], ln["code"]) for ln in s["lines"]] == [("op1", True, 200),
                                                                              ("op2", False, 403)]
    assert s["lines"][1]["reason"] == "Forbidden" and s["lines"][0]["uri"] == "sip:1001@pbx.test"
    assert s["calls"]["count"] == 1
    call = s["calls"]["rows"][0]
    assert (call["id"], call["line"], call["direction"], call["state"]) == (row, "op1", "in", "ringing")
    assert s["desk"]["state"] == "running" and s["agent"]["state"] == "running"
    assert s["provisioning"] == {"enabled": False} and s["reload"] is None
    json.dumps(s)  # all of it is JSON


def test_no_secret_in_the_status(desk: Desk) -> None:
    text = json.dumps(status.build_status(desk, started=time.time()))
    for line in desk.profile.lines:
        assert line.password not in text


def test_recordings_disk_use_and_free_space(desk: Desk) -> None:
    directory = desk.profile.recording.directory
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "a.wav").write_bytes(b"x" * 3000)
    (directory / "a.json").write_bytes(b"{}")
    (directory / "notes.txt").write_bytes(b"y" * 100000)  # not a recording
    r = status.build_status(desk, started=time.time())["recordings"]
    assert (r["files"], r["bytes"]) == (1, 3002)
    assert r["free_bytes"] > 0 and r["free_mb"] > 0 and r["directory"] == str(directory)
    assert r["min_free_mb"] == desk.profile.recording.min_free_mb and r["problem"] is None


def test_a_recordings_folder_not_made_yet_is_said_and_free_space_still_shown(tmp_path: Path) -> None:
    r = status.recordings_usage(tmp_path / "not-yet", 50)
    assert "does not exist yet" in r["problem"] and r["files"] == 0 and r["free_bytes"] > 0
    full = status.recordings_usage(tmp_path, 10**9)
    assert "MB free" in full["problem"]


def test_provisioning_and_reload_results_are_shown(desk: Desk, tmp_path: Path) -> None:
    url = "https://prov.test/kiosk/001122aabbcc.toml"
    reloader = Reloads(url, 1_700_000_000.0,
                       StandInResult(True, url, applied=["route city: prefix 9 -> 0"], waiting=["line op2: ..."],
                                     at=1_700_000_000.0))
    config = Provisioning(url="https://prov.test/kiosk/{mac}.toml", interval_minutes=30, token="tok-xyz")
    p = prov.Provisioner(lambda: config, reloader, tmp_path / "state", identity=lambda: ("001122aabbcc", "eth0"))
    fetcher = FakeFetcher()
    fetcher.answers = [answer(503)]
    p.fetcher = fetcher  # type: ignore[assignment]
    p.check()
    s = status.build_status(desk, started=time.time(), reloader=reloader, provisioner=p)
    assert s["profile"]["source"] == url and s["profile"]["loaded_at"] == 1_700_000_000.0
    last = s["provisioning"]["last"]
    assert (last["outcome"], last["http_status"], last["url"]) == ("failed", 503, url)
    assert last["reason"] == "server error: 503 Service Unavailable" and last["at_iso"]
    assert s["provisioning"]["interval_minutes"] == 30 and s["provisioning"]["auth"] == "bearer token"
    assert s["provisioning"]["ca_file"] == "system store"
    assert s["reload"]["ok"] and s["reload"]["applied"] == ["route city: prefix 9 -> 0"]
    assert s["reload"]["waiting"] == ["line op2: ..."] and s["reload"]["at_iso"]
    assert "tok-xyz" not in json.dumps(s)


def test_a_wedged_desk_and_agent_are_said_so_without_waiting_long(desk: Desk, agent: FakeAgent) -> None:
    stuck = threading.Event()
    desk.call_soon(stuck.wait, 10)  # the desk loop is busy for 10 s

    class StuckAgent:
        def submit(self, fn: Any) -> Any:
            from concurrent.futures import Future
            return Future()  # never runs

    desk.agent = StuckAgent()  # type: ignore[assignment]
    try:
        started = time.monotonic()
        s = status.build_status(desk, started=time.time(), timeout=0.2)
        assert time.monotonic() - started < 2
        assert s["desk"]["state"].startswith("not answering") and s["agent"]["state"].startswith("not answering")
        assert s["calls"]["count"] is None
        assert [ln["id"] for ln in s["lines"]] == ["op1", "op2"]
        assert s["lines"][0]["registered"] is True  # the desk's last word, read without its loop
    finally:
        desk.agent = agent
        stuck.set()


@pytest.mark.parametrize("seconds, words", [(42, "42 s"), (125, "2 min 05 s"), (3725, "1 h 02 min"),
                                            (93784, "1 d 2 h 03 min")])
def test_durations_read_as_words(seconds: int, words: str) -> None:
    assert status.human_duration(seconds) == words


def test_kiosk_ctl_status_over_the_control_socket(desk: Desk, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from kiosk.commands import COMMANDS
    from kiosk.control import ControlServer, ctl_main

    if "status" not in COMMANDS:
        pytest.skip("the `status` command is not in kiosk/commands.py yet (see the provisioning helper's diff)")
    path = tmp_path / "control.sock"
    with ControlServer(desk, path):
        assert ctl_main(["status"], path) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["lines"][0]["id"] == "op1" and shown["desk"]["state"] == "running"
    assert shown["recordings"]["free_bytes"] > 0 and "uptime" in shown
