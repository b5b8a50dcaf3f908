"""Live reload of the profile (kiosk.reload) on a real desk over the fake agent: what applies at once
during a call, what waits for a call to end, what is refused, what needs a restart, the last good
copy, and the three triggers (SIGHUP, `kiosk ctl reload`, the file changing on disk)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Iterator

import pytest

from kiosk import events as ev
from kiosk.cli import load_good_profile
from kiosk.control import ControlServer, ctl_main, request
from kiosk.desk import NOT_YET, Desk
from kiosk.profile import Profile
from kiosk.reload import (LAST_GOOD, LAST_GOOD_META, RESTART_ONLY, ReloadService, Reloader, legacy_last_good_path,
                          profile_from_bytes, state_dir_for, write_atomically)

from .fakes import FakeAgent


class ProfileAgent(FakeAgent):
    """The fake agent, taking reloaded profiles as the real one does (it keeps each one it was given)."""

    def __init__(self) -> None:
        super().__init__()
        self.profiles: list[Profile] = []
        self.still_waiting: list[str] = []

    def apply_profile(self, profile: Profile) -> Future[list[str]]:
        self.profiles.append(profile)
        fut: Future[list[str]] = Future()
        fut.set_result(list(self.still_waiting))
        return fut


LINE1 = """
[[line]]
id = "op1"
label = "{label1}"
uri = "sip:1001@pbx.test"
registrar = "{registrar1}"
username = "1001"
password = "secret1"
"""
LINE2 = """
[[line]]
id = "op2"
label = "Operator 2"
uri = "sip:1002@pbx2.test"
registrar = "sip:pbx2.test:5060"
username = "1002"
password = "secret2"
"""
CITY = """
[[route]]
id = "city"
label = "City"
line = "op1"
prefix = "9"
"""
TRUNK = """
[[route]]
id = "trunk"
label = "Trunk"
line = "op2"
prefix = "8"
proxy = "sip:trunk.test:5060"
"""


def profile_text(tmp: Path, *, label1: str = "Operator 1", registrar1: str = "sip:pbx.test:5060",
                 op2: bool = True, routes: str | None = None, listen: str = "127.0.0.1:5070",
                 extra: str = "") -> str:
    body = LINE1.format(label1=label1, registrar1=registrar1) + (LINE2 if op2 else "")
    body += (CITY + (TRUNK if op2 else "")) if routes is None else routes
    return f"""[operator]
name = "Test Operator"

[sip]
listen = "{listen}"
default_route = "city"
{body}
[recording]
directory = "{tmp / 'recordings'}"

[control]
socket = "{tmp / 'control.sock'}"
{extra}"""


def write(path: Path, text: str) -> bytes:
    data = text.encode()
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return data


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[tuple[Desk, ProfileAgent, Reloader, Path]]:
    """A desk on the fake agent started from a profile file, its Reloader (state in tmp_path/state)."""
    path = tmp_path / "profile.toml"
    data = write(path, profile_text(tmp_path))
    agent = ProfileAgent()
    desk = Desk(profile_from_bytes(data, path), agent)
    desk.start()
    agent.register_all(desk.profile)
    reloader = Reloader(desk, tmp_path / "state", path)
    yield desk, agent, reloader, path
    desk.close()


def events_of(desk: Desk) -> list[ev.Event]:
    got: list[ev.Event] = []
    desk.subscribe(lambda e: got.append(e) if isinstance(e, (ev.ProfileChanged, ev.Alert, ev.RowChanged,
                                                                ev.ParamsChanged)) else None)
    return got


def talking(desk: Desk, agent: FakeAgent, line: str = "op1") -> int:
    call = agent.ring(line=line)
    assert desk.answer(call).wait().ok
    agent.talking(call)
    return call


# --- what applies at once, during a call ---------------------------------------------------------


def test_a_new_route_is_applied_during_a_call_and_the_call_goes_on(unit, tmp_path) -> None:
    desk, agent, reloader, path = unit
    call = talking(desk, agent)
    seen = events_of(desk)
    routes = CITY + TRUNK + '\n[[route]]\nid = "intl"\nlabel = "International"\nline = "op1"\nprefix = "00"\n'
    write(path, profile_text(tmp_path, routes=routes))

    result = reloader.reload_file("test")

    assert result.ok and not result.errors and not result.waiting, result
    assert any(a.startswith("route intl added") for a in result.applied), result.applied
    assert [r.id for r in desk.profile.routes] == ["city", "trunk", "intl"]
    assert [r["id"] for r in desk.snapshot()["calls"]] == [call]  # the call is still on the desk
    assert desk.snapshot()["calls"][0]["state"] == "talking"
    assert agent.requests("hangup") == []  # and nothing ended it
    assert agent.profiles[-1].route("intl").prefix == "00"  # the agent has the new profile
    changed = [e for e in seen if isinstance(e, ev.ProfileChanged)]
    assert len(changed) == 1 and "route intl added" in changed[0].applied[0]
    alerts = [e for e in seen if isinstance(e, ev.Alert)]
    assert [a.code for a in alerts] == ["profile_applied"] and alerts[0].params["count"] == 1
    # The new route dials at once, on its own prefix, while the first call goes on.
    assert desk.set("route", "intl").ok
    placed = desk.dial("123").wait()
    assert placed.ok and placed.data["uri"] == "sip:00123@pbx.test", placed


def test_a_label_change_shows_on_the_call_rows_at_once(unit, tmp_path) -> None:
    desk, agent, reloader, path = unit
    call = talking(desk, agent)
    seen = events_of(desk)
    write(path, profile_text(tmp_path, label1="Sales desk"))

    result = reloader.reload_file("test")

    assert result.ok and result.applied == ["line op1: label 'Operator 1' -> 'Sales desk'"], result
    assert not result.waiting  # a label is no SIP change: nothing waits
    assert desk.snapshot()["calls"][0]["line_label"] == "Sales desk"
    rows = [e.row for e in seen if isinstance(e, ev.RowChanged)]
    assert rows and rows[-1]["id"] == call and rows[-1]["line_label"] == "Sales desk"
    assert desk.registered["op1"].registered  # the line was not registered again
    assert agent.requests("hangup") == []


def test_recording_pickup_and_agent_settings_apply_at_once(unit, tmp_path) -> None:
    desk, agent, reloader, path = unit
    extra = '\n[pickup]\nprefix = "**"\n'
    text = profile_text(tmp_path, extra=extra).replace("[recording]\n", "[recording]\nalways = true\n")
    text = text.replace("[sip]\n", "[sip]\nkeepalive_seconds = 30\nrtp_timeout_seconds = 20\n"
                                   'trusted = ["127.0.0.1", "10.0.0.5"]\n')
    write(path, text)

    result = reloader.reload_file("test")

    assert result.ok, result
    for key in ("recording.always", "pickup.prefix", "sip.keepalive_seconds", "sip.rtp_timeout_seconds",
                "sip.trusted"):
        assert any(a.startswith(key + ":") for a in result.applied), (key, result.applied)
    assert desk.profile.recording.always and desk.profile.pickup.prefix == "**"
    assert agent.profiles[-1].sip.trusted == ("127.0.0.1", "10.0.0.5")
    assert agent.profiles[-1].sip.rtp_timeout_seconds == 20
    call = agent.ring()
    assert desk.answer(call).wait().ok
    agent.talking(call)  # answered after the reload: recorded, as the new profile says
    assert agent.requests("record") and agent.requests("record")[-1][0] == call


# --- what waits for a call ---------------------------------------------------------------------


def test_a_removed_line_with_a_call_waits_until_the_call_ends_then_goes(unit, tmp_path) -> None:
    desk, agent, reloader, path = unit
    call = talking(desk, agent, line="op2")
    seen = events_of(desk)
    write(path, profile_text(tmp_path, op2=False))

    result = reloader.reload_file("test")

    assert result.ok, result
    assert result.waiting == [f"line op2: removed when its calls end (calls {call}); it takes no new call"]
    assert not any(a.startswith("line op2") for a in result.applied)  # not done yet
    assert any(a == "route trunk removed" for a in result.applied)  # the route goes at once
    assert desk.pending_lines == {"op2": "removed"}
    assert "op2" in [ln.id for ln in agent.profiles[-1].lines]  # the agent keeps its account for the call
    assert [a.code for a in seen if isinstance(a, ev.Alert)] == ["profile_applied", "line_removal_waits"]
    assert desk.snapshot()["calls"][0]["state"] == "talking"
    refused = desk.set("line", "op2")  # no new call on a line that is going
    assert not refused.ok and refused.code == "unknown_line"
    assert desk.line == "op1"

    agent.ended(call)
    desk.settle()

    assert desk.pending_lines == {}
    assert [ln.id for ln in desk.profile.lines] == ["op1"]
    assert [ln.id for ln in agent.profiles[-1].lines] == ["op1"]  # now the agent removes its account
    assert "op2" not in desk.registered
    changed = [e for e in seen if isinstance(e, ev.ProfileChanged)]
    assert changed[-1].applied == ("line op2 removed",) and changed[-1].waiting == ()
    assert [a.code for a in seen if isinstance(a, ev.Alert)][-1] == "line_removed"


def test_a_changed_line_with_a_call_registers_again_only_when_the_call_ends(unit, tmp_path) -> None:
    desk, agent, reloader, path = unit
    call = talking(desk, agent, line="op1")
    write(path, profile_text(tmp_path, registrar1="sip:pbx-new.test:5060", label1="New label"))

    result = reloader.reload_file("test")

    assert result.ok and result.waiting == [
        f"line op1: registers again with the new settings when its calls end (calls {call})"], result
    assert result.applied == ["line op1: label 'Operator 1' -> 'New label'"]  # the label at once
    assert agent.profiles[-1].line("op1").registrar == "sip:pbx.test:5060"  # the call's account is untouched
    assert desk.snapshot()["calls"][0]["line_label"] == "New label"
    assert desk.registered["op1"].registered

    agent.ended(call)
    desk.settle()

    assert desk.pending_lines == {}
    assert agent.profiles[-1].line("op1").registrar == "sip:pbx-new.test:5060"
    assert desk.registered["op1"].reason == NOT_YET  # it registers again now


def test_a_dial_on_a_line_being_removed_is_refused(unit, tmp_path) -> None:
    desk, agent, reloader, path = unit
    talking(desk, agent, line="op2")
    write(path, profile_text(tmp_path, op2=False))
    assert reloader.reload_file("test").ok
    refusal = desk._can_line("op2")
    assert refusal is not None and refusal.code == "line_being_removed" and refusal.params == {"line": "op2"}


# --- what is refused, what needs a restart ----------------------------------------------------------


def test_an_invalid_profile_is_refused_with_every_mistake_and_the_old_one_stays(unit, tmp_path, caplog) -> None:
    desk, agent, reloader, path = unit
    talking(desk, agent)
    before, sent = desk.profile, len(agent.profiles)
    seen = events_of(desk)
    text = profile_text(tmp_path).replace('prefix = "9"', 'prefix = "9x"').replace(
        'registrar = "sip:pbx2.test:5060"', 'registrar = "pbx2"')
    write(path, text)

    with caplog.at_level(logging.ERROR, logger="kiosk.reload"):
        result = reloader.reload_file("test")

    assert not result.ok and result.code == "profile_refused"
    assert len(result.errors) == 2, result.errors
    assert any("line[2].registrar" in e and "sip:" in e for e in result.errors), result.errors
    assert any("route[1].prefix" in e for e in result.errors), result.errors
    logged = [r.getMessage() for r in caplog.records]
    assert all(any(error in line for line in logged) for error in result.errors), logged  # every one in the log
    assert desk.profile is before and len(agent.profiles) == sent  # nothing applied
    alerts = [e for e in seen if isinstance(e, ev.Alert)]
    assert [a.code for a in alerts] == ["profile_refused"]
    assert alerts[0].params["count"] == 2 and alerts[0].params["errors"] == result.errors
    assert "the unit goes on with the profile it has" in alerts[0].message
    assert desk.snapshot()["notices"][-1]["code"] == "profile_refused"  # the status line's history
    assert not [e for e in seen if isinstance(e, ev.ProfileChanged)]
    assert not (tmp_path / "state" / LAST_GOOD).exists()  # a refused profile is no last good one


def test_keys_that_need_a_restart_are_reported_and_not_applied(unit, tmp_path) -> None:
    desk, agent, reloader, path = unit
    text = profile_text(tmp_path, listen="127.0.0.1:5999", label1="Renamed")
    text = text.replace("[sip]\n", '[sip]\nuser_agent = "other"\n')
    text += '\n[audio]\ndevice = "USB"\n'
    text = text.replace(f'socket = "{tmp_path / "control.sock"}"', f'socket = "{tmp_path / "other.sock"}"')
    write(path, text)

    result = reloader.reload_file("test")

    assert result.ok
    assert [r.split(":", 1)[0] for r in result.restart] == list(RESTART_ONLY)
    assert all("needs a restart" in r for r in result.restart)
    assert result.applied == ["line op1: label 'Operator 1' -> 'Renamed'"]  # the rest is applied
    assert desk.profile.sip.listen == "127.0.0.1:5070" and desk.profile.sip.user_agent == "kiosk"
    assert desk.profile.control.socket == tmp_path / "control.sock" and desk.profile.audio.device is None
    assert agent.profiles[-1].sip.listen == "127.0.0.1:5070"


def test_a_reload_of_an_unchanged_file_says_so(unit) -> None:
    desk, agent, reloader, path = unit
    result = reloader.reload_file("test")
    assert result.ok and result.applied == [] and result.code == "profile_unchanged"
    assert "nothing changed" in result.message


# --- the last good copy --------------------------------------------------------------------------


def test_the_last_good_copy_is_exactly_the_validated_bytes(unit, tmp_path) -> None:
    desk, agent, reloader, path = unit
    data = write(path, profile_text(tmp_path, label1="Kept") + "\n# a comment kept byte for byte \u00e9\n")
    assert reloader.reload_file("test").ok
    kept = tmp_path / "state" / LAST_GOOD
    assert kept.read_bytes() == data
    assert kept.stat().st_mode & 0o777 == 0o600
    meta = json.loads((tmp_path / "state" / LAST_GOOD_META).read_text())
    assert meta["bytes"] == len(data) and "test" in meta["source"]
    assert not [p for p in (tmp_path / "state").iterdir() if p.name.endswith(".tmp")]  # no temp left

    provisioned = profile_text(tmp_path, label1="From the server").encode()
    result = reloader.apply_bytes(provisioned, "https://prov.test/unit.toml")
    assert result.ok and result.source == "https://prov.test/unit.toml"
    assert kept.read_bytes() == provisioned  # the bytes that were validated, not a re-rendering
    assert path.read_bytes() == data  # the profile file itself is never written
    assert desk.profile.line("op1").label == "From the server"


def test_the_state_dir_is_never_etc(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("KIOSK_STATE_DIR", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert state_dir_for(Path("/etc/kiosk/profile.toml")) == Path("/var/lib/kiosk")
    assert state_dir_for(tmp_path / "profile.toml") == tmp_path  # beside it, as before, elsewhere
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "systemd"))
    assert state_dir_for(Path("/etc/kiosk/profile.toml")) == tmp_path / "systemd"
    monkeypatch.setenv("KIOSK_STATE_DIR", str(tmp_path / "mine"))
    assert state_dir_for(Path("/etc/kiosk/profile.toml")) == tmp_path / "mine"
    with pytest.raises(PermissionError):
        write_atomically(Path("/etc/kiosk-test-never/last-good-profile.toml"), b"x")
    assert not Path("/etc/kiosk-test-never").exists()


def test_start_writes_the_last_good_copy_and_falls_back_to_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KIOSK_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "profile.toml"
    data = write(path, profile_text(tmp_path, label1="First"))
    assert load_good_profile(path) is not None
    assert (tmp_path / "state" / LAST_GOOD).read_bytes() == data
    write(path, "[sip\n")
    profile = load_good_profile(path)
    assert profile is not None and profile.line("op1").label == "First" and profile.path == path


def test_an_older_units_last_good_copy_is_still_used(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("KIOSK_STATE_DIR", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    path = tmp_path / "profile.toml"
    legacy = legacy_last_good_path(path)
    write(legacy, profile_text(tmp_path, label1="Legacy"))
    write(path, "not = [toml\n")
    profile = load_good_profile(path)
    assert profile is not None and profile.line("op1").label == "Legacy"


# --- the triggers --------------------------------------------------------------------------------


def wait_for(pred, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return bool(pred())


def test_sighup_reloads_the_profile(unit, tmp_path) -> None:
    desk, agent, reloader, path = unit
    service = ReloadService(reloader, watch=False).start()
    previous = signal.signal(signal.SIGHUP, service.signal)
    try:
        write(path, profile_text(tmp_path, label1="After SIGHUP"))
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_for(lambda: desk.profile.line("op1").label == "After SIGHUP")
        assert reloader.last is not None and reloader.last.ok and "SIGHUP" in reloader.last.source
    finally:
        signal.signal(signal.SIGHUP, previous)
        service.stop()


def test_the_reload_command_on_the_desk_and_through_kiosk_ctl(unit, tmp_path) -> None:
    desk, agent, reloader, path = unit
    write(path, profile_text(tmp_path, label1="By command"))
    out = desk.reload().wait()
    assert out.ok and out.data["applied"] == ["line op1: label 'Operator 1' -> 'By command'"], out
    assert "kiosk ctl reload" in out.data["source"]

    sock = tmp_path / "ctl.sock"
    with ControlServer(desk, sock):
        write(path, profile_text(tmp_path, label1="Over the socket"))
        reply = request(sock, "reload", wait=True)
        assert reply["ok"] and reply["data"]["ok"] and reply["data"]["applied"], reply

        write(path, profile_text(tmp_path, label1="Printed"))
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = ctl_main(["--socket", str(sock), "reload"])
        assert rc == 0, stderr.getvalue()
        printed = json.loads(stdout.getvalue())
        assert printed["applied"] == ["line op1: label 'Over the socket' -> 'Printed'"]
        assert printed["waiting"] == [] and printed["restart"] == [] and printed["errors"] == []

        write(path, profile_text(tmp_path).replace('prefix = "9"', 'prefix = "x"'))
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = ctl_main(["--socket", str(sock), "--json", "reload"])
        assert rc == 1
        assert "refused" in stderr.getvalue() and "route[1].prefix" in stderr.getvalue()
        assert stderr.getvalue().count("route[1].prefix") == 2  # the summary's first, then each on its own line
        error = json.loads(stdout.getvalue())
        assert error["code"] == "profile_refused" and len(error["params"]["errors"]) == 1
    assert desk.profile.line("op1").label == "Printed"  # the refused one changed nothing


def test_a_desk_without_a_reloader_says_reload_is_not_available(agent) -> None:
    from .fakes import make_profile

    desk = Desk(make_profile(), agent)
    desk.start()
    try:
        out = desk.reload().wait()
        assert not out.ok and out.code == "not_available"
    finally:
        desk.close()


def test_a_change_on_disk_is_applied_debounced_also_when_the_file_is_replaced(unit, tmp_path) -> None:
    desk, agent, reloader, path = unit
    service = ReloadService(reloader, debounce=0.2).start()
    try:
        reloads = lambda: len(agent.profiles)  # noqa: E731
        # An editor writing in place, in several bursts: one reload once it has been quiet.
        with open(path, "w") as f:
            f.write(profile_text(tmp_path, label1="In place")[:40])
            f.flush()
            time.sleep(0.1)
            f.write(profile_text(tmp_path, label1="In place")[40:])
        assert wait_for(lambda: desk.profile.line("op1").label == "In place", 3)
        time.sleep(0.3)
        assert reloads() == 1 and "file changed" in reloader.last.source
        # An editor that writes a new file and renames it over the profile (vim, sed -i, a script).
        new = tmp_path / ".profile.toml.swp"
        write(new, profile_text(tmp_path, label1="Renamed over"))
        os.replace(new, path)
        assert wait_for(lambda: desk.profile.line("op1").label == "Renamed over", 3)
        # A touch (same bytes, same mode) is no reload.
        time.sleep(0.3)
        count = reloads()
        os.utime(path)
        time.sleep(0.45)
        assert reloads() == count
        # A broken save is refused; the fix that follows is applied.
        write(path, "[sip\n")
        assert wait_for(lambda: reloader.last is not None and not reloader.last.ok, 3)
        assert desk.profile.line("op1").label == "Renamed over"
        write(path, profile_text(tmp_path, label1="Fixed"))
        assert wait_for(lambda: desk.profile.line("op1").label == "Fixed", 3)
    finally:
        service.stop()


def test_the_gpio_keys_are_rebound_by_a_reload_hook(unit, tmp_path) -> None:
    desk, agent, reloader, path = unit
    calls: list[tuple[Any, Any]] = []
    reloader.hooks.append(lambda old, new: calls.append((old.gpio, new.gpio)) or ["keys rebound"])
    write(path, profile_text(tmp_path, extra="\n[gpio]\nhold = 17\n"))
    result = reloader.reload_file("test")
    assert result.ok and "gpio.hold: none -> 17" in result.applied and "keys rebound" in result.applied
    assert calls and calls[-1][1].hold == 17


def test_reloads_from_many_threads_at_once_are_one_at_a_time(unit, tmp_path) -> None:
    desk, agent, reloader, path = unit
    write(path, profile_text(tmp_path, label1="Concurrent"))
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(reloader.reload_file("t"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 4 and all(r.ok for r in results)
    assert sum(1 for r in results if r.applied) == 1  # the first applied it, the others found it in force


def test_changes_are_said_in_plain_words_and_never_show_a_password(unit, tmp_path) -> None:
    desk, agent, reloader, path = unit
    old = desk.profile
    new = profile_from_bytes(profile_text(tmp_path).replace('password = "secret2"', 'password = "hunter22"')
                             .encode(), path)
    from kiosk.reload import describe

    words = describe(old, new)
    assert words == ["line op2: password changed: it registers again"]
    assert not any("hunter22" in w or "secret2" in w for w in words)


def test_profile_changed_goes_over_the_socket_and_back() -> None:
    event = ev.ProfileChanged("/etc/kiosk/profile.toml (SIGHUP)", ("route intl added",), ("line op2: ...",),
                              ("sip.listen: ...",))
    data = json.loads(json.dumps(event.as_json()))
    assert data["event"] == "profile"
    assert ev.from_json(data) == event


def test_the_file_watch_uses_inotify(tmp_path) -> None:
    """inotify_simple is a dependency: without it the watch falls back to looking every second."""
    from kiosk.reload import ProfileWatcher

    path = tmp_path / "profile.toml"
    path.write_text("")
    watcher = ProfileWatcher(path)
    try:
        assert watcher.fileno() is not None and not watcher.needs_polling()
    finally:
        watcher.close()


def test_the_english_words_of_the_reload_codes_are_the_catalogues_once_it_has_them() -> None:
    from kiosk import i18n
    from kiosk.reload import _TEMPLATES

    codes = i18n.catalogue("en")["codes"]
    differ = {code: (codes[code], text) for code, text in _TEMPLATES.items() if code in codes and codes[code] != text}
    assert not differ, differ
