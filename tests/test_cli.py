"""The `kiosk` command: check-profile exit codes, running on the last good profile, and `kiosk ctl`'s
command line (its own parser, generated from the command table: tests/test_commands.py and
tests/test_control.py test what it sends)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kiosk.cli import _ctl_argv, last_good_path, load_good_profile, main

from .fakes import example_profile


def _good(tmp_path: Path) -> Path:
    """The shipped example profile (and its secrets/) in tmp_path, as a provisioner would install it."""
    path = example_profile(tmp_path)
    os.chmod(path, 0o640)
    return path


def _kiosk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kiosk.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.lab  # starts processes
def test_check_profile_exits_0_on_a_good_file(tmp_path: Path) -> None:
    done = _kiosk("check-profile", str(_good(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.lab  # starts processes
def test_check_profile_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    path = _good(tmp_path)
    path.write_text(path.read_text().replace('language = "ru"', 'language = "de"').replace(
        'registrar = "sip:pbx.example.org:5060"', 'registrar = "pbx"', 1))
    done = _kiosk("check-profile", str(path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert any("operator.language" in l and "ru" in l for l in lines), lines
    assert any("line[1].registrar" in l and "sip:" in l for l in lines), lines
    assert "Traceback" not in done.stderr


@pytest.mark.lab  # starts processes
def test_check_profile_on_a_missing_file_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    done = _kiosk("check-profile", str(tmp_path / "nope.toml"))
    assert done.returncode == 2
    assert "nope.toml" in done.stderr and "Traceback" not in done.stderr


def test_a_good_profile_is_kept_as_the_last_good_copy(tmp_path: Path) -> None:
    path = _good(tmp_path)
    profile = load_good_profile(path)
    assert profile is not None and profile.operator.name == "Anna Petrova"
    backup = last_good_path(path)
    assert backup.read_text() == path.read_text()
    assert backup.stat().st_mode & 0o777 == 0o600


def test_a_broken_profile_runs_on_the_last_good_one(tmp_path: Path, capsys) -> None:
    path = _good(tmp_path)
    assert load_good_profile(path) is not None
    path.write_text(path.read_text().replace('[operator]', '[operatr]'))
    profile = load_good_profile(path)
    assert profile is not None and profile.operator.name == "Anna Petrova"
    err = capsys.readouterr().err
    assert "operatr" in err and "operator" in err


@pytest.mark.lab  # starts processes
def test_a_broken_profile_without_a_last_good_one_is_refused(tmp_path: Path) -> None:
    path = _good(tmp_path)
    path.write_text("[sip\n")
    assert load_good_profile(path) is None
    assert _kiosk("run", "--profile", str(path), "--headless").returncode == 2


@pytest.mark.lab  # starts processes
def test_a_sip_port_already_taken_is_named_with_what_to_do(tmp_path: Path) -> None:
    """Another program (perhaps a second kiosk) holds the SIP port: the unit exits 1 with
    the port, the cause and the profile key to change, not a pjsip traceback."""
    import socket

    from kiosk.lab.ports import free_port

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        path = tmp_path / "profile.toml"
        (tmp_path / "pw").write_text("secret\n")
        os.chmod(tmp_path / "pw", 0o600)
        path.write_text(f"""
[sip]
listen = "127.0.0.1:{port}"
[control]
socket = "{tmp_path / 'control.sock'}"
[recording]
directory = "{tmp_path / 'rec'}"
[audio]
device = "none"
[[line]]
id = "main"
label = "Main"
uri = "sip:1001@127.0.0.1"
registrar = "sip:127.0.0.1:{free_port()}"
username = "1001"
password_file = "{tmp_path / 'pw'}"
""")
        os.chmod(path, 0o600)
        done = _kiosk("run", "--profile", str(path), "--headless")
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert f"cannot start on 127.0.0.1:{port}" in last and "Address already in use" in last, last
    assert "[sip] listen" in last and str(path) in last, last
    assert "Traceback" not in done.stderr


# --- the control socket: a file that exists is not a unit that listens -------------------

# Loaded by the unit's interpreter (sitecustomize on its PYTHONPATH): its main thread is held for
# 0.5 s between bind() and listen() of the control socket, as a busy machine can hold it (another
# of the unit's threads has the GIL, or the CPU is taken). The socket file exists all that time.
_SLOW_LISTEN = '''
import socket, time
_listen = socket.socket.listen
def listen(self, *args):
    try:
        name = self.getsockname()
    except OSError:
        name = ""
    if isinstance(name, str) and name.endswith("control.sock"):
        time.sleep(0.5)
    return _listen(self, *args)
socket.socket.listen = listen
'''


def test_a_bound_socket_that_does_not_listen_yet_is_not_listening(tmp_path: Path) -> None:
    import socket

    from kiosk.lab.proc import listening

    path = tmp_path / "control.sock"
    assert not listening(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        assert path.exists() and not listening(path)  # the file is there; a connect is refused
        server.listen(1)
        assert listening(path)
    assert path.exists() and not listening(path)  # and again once nobody listens


@pytest.mark.lab
def test_the_lab_unit_is_started_once_its_control_socket_listens_not_once_the_file_exists(tmp_path: Path) -> None:
    """What made an audio test fail on a fresh clone's first run: `Unit.start` saw the socket
    file, its first request was refused ("no kiosk is running at ..."), and the teardown
    stopped the unit ~150 ms after it came up (its log: "unit running", then "stopping")."""
    from kiosk.lab.ports import free_port
    from kiosk.lab.unit import LabLine, Unit, lab_profile_toml

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SLOW_LISTEN)
    sock = tmp_path / "control.sock"
    text = lab_profile_toml(listen=f"127.0.0.1:{free_port()}", registrar=f"sip:127.0.0.1:{free_port()}",
                            domain="127.0.0.1", lines=[LabLine("main", "1001", "pw")], socket=sock,
                            recordings=tmp_path / "recordings")  # no registrar there: lines stay unregistered
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    unit = Unit(tmp_path / "unit", text, sock, env={"PYTHONPATH": path})
    try:
        unit.start(wait_registered=False)
        assert unit.request("calls")["ok"]  # started means it answers, at once
        assert unit.terminate() == 0
        log = unit.log_path.read_text()
        assert log.count("unit running") == 1 and "Traceback" not in log, log[-3000:]
    finally:
        unit.stop()


# --- kiosk ctl: everything after `ctl` is its own ------------------------------------------


@pytest.mark.parametrize(
    ("argv", "rest"),
    [
        (["ctl", "calls"], ["calls"]),
        (["-v", "ctl", "--no-wait", "pickup", "2004"], ["--no-wait", "pickup", "2004"]),
        (["ctl", "--socket", "/tmp/x.sock", "--help"], ["--socket", "/tmp/x.sock", "--help"]),
        (["ctl"], []),
        (["run", "--headless"], None),
        (["check-profile", "ctl"], None),
    ],
)
def test_the_arguments_after_ctl_go_to_kiosk_ctl_untouched(argv: list[str], rest: list[str] | None) -> None:
    assert _ctl_argv(argv) == rest


def test_kiosk_ctl_options_before_the_command_are_its_own(tmp_path: Path, capsys) -> None:
    nobody = tmp_path / "nobody.sock"
    assert main(["ctl", "--socket", str(nobody), "--no-wait", "hangup"]) == 3
    assert capsys.readouterr().err == f"kiosk ctl: no kiosk is running at {nobody} (is `kiosk run` started?)\n"
    assert main(["ctl", "--help"]) == 0
    assert "usage: kiosk ctl" in capsys.readouterr().out
    assert main(["ctl", "--bogus", "calls"]) == 2


def test_kiosk_ctl_uses_kiosk_socket_from_the_environment(tmp_path: Path, monkeypatch, capsys) -> None:
    nobody = tmp_path / "env.sock"
    monkeypatch.setenv("KIOSK_SOCKET", str(nobody))
    monkeypatch.setattr("kiosk.cli.DEFAULT_SOCKET", nobody)
    assert main(["ctl", "calls"]) == 3
    assert str(nobody) in capsys.readouterr().err


@pytest.mark.lab  # starts processes
def test_kiosk_ctl_help_as_its_own_process() -> None:
    done = _kiosk("ctl", "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: kiosk ctl" in done.stdout and "transfer" in done.stdout and "--no-wait" in done.stdout
    done = _kiosk("ctl", "transfer", "--help")
    assert done.returncode == 0 and "{quick,consult,confirm,next}" in done.stdout


def test_the_watchdog_sees_whether_the_desk_loop_answers() -> None:
    from kiosk.cli import desk_alive
    from kiosk.desk import Desk

    from .fakes import FakeAgent, make_profile

    desk = Desk(make_profile(), FakeAgent())
    assert desk_alive(desk, timeout=2)
    desk.close()
    assert not desk_alive(desk, timeout=0.5)
