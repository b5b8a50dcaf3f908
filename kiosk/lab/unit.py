"""The kiosk unit itself as a lab process: a profile written for the lab, `kiosk run` in
its own process, and `kiosk ctl` to drive it — exactly what an operator's
automation would do, so tests and benchmarks exercise the real program.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .proc import LabProcess, LabProcessError, listening, wait_until


@dataclass
class LabLine:
    """A line of the lab profile."""

    id: str
    user: str
    password: str
    label: str = ""
    #: More keys of this [[line]], as TOML lines (e.g. 'auto_answer = true').
    keys: str = ""


@dataclass
class LabRoute:
    id: str
    line: str
    prefix: str = ""
    proxy: str | None = None
    label: str = ""


def _q(value: object) -> str:
    return json.dumps(value)  # a JSON string or list is a valid TOML basic string / array


def lab_profile_toml(
    *, listen: str, registrar: str, domain: str, proxy: str | None = None, lines: list[LabLine], routes: list[LabRoute] | None = None,
    socket: Path, recordings: Path, trusted: list[str] | None = None, default_route: str | None = None,
    always_record: bool = False, pickup_prefix: str = "*8", language: str = "en", extra: str = "",
    register_expires: int | None = None, keepalive_seconds: int | None = None, sip_extra: str = "",
) -> str:
    """A complete profile (TOML text) for a unit in the lab."""
    out = [
        "[operator]", 'name = "Lab operator"', f"language = {_q(language)}", "",
        "[sip]", f"listen = {_q(listen)}", f"trusted = {_q(trusted or ['127.0.0.1'])}",
        'user_agent = "kiosk-lab"',
    ]
    if register_expires is not None:
        out.append(f"register_expires = {register_expires}")
    if keepalive_seconds is not None:
        out.append(f"keepalive_seconds = {keepalive_seconds}")
    if sip_extra:
        out.append(sip_extra)  # more [sip] keys, as TOML lines
    if default_route:
        out.append(f"default_route = {_q(default_route)}")
    out.append("")
    for line in lines:
        out += ["[[line]]", f"id = {_q(line.id)}", f"label = {_q(line.label or line.id)}",
                f"uri = {_q(f'sip:{line.user}@{domain}')}", f"registrar = {_q(registrar)}",
                f"username = {_q(line.user)}", f"password = {_q(line.password)}"]
        if proxy:
            out.append(f"proxy = {_q(proxy)}")
        if line.keys:
            out.append(line.keys)
        out.append("")
    for route in routes or []:
        out += ["[[route]]", f"id = {_q(route.id)}", f"label = {_q(route.label or route.id)}",
                f"line = {_q(route.line)}", f"prefix = {_q(route.prefix)}"]
        if route.proxy:
            out.append(f"proxy = {_q(route.proxy)}")
        out.append("")
    out += ["[recording]", f"always = {'true' if always_record else 'false'}",
            f"directory = {_q(str(recordings))}", "",
            "[pickup]", f"prefix = {_q(pickup_prefix)}", "",
            "[control]", f"socket = {_q(str(socket))}", "",
            "[audio]", 'device = "none"', "", extra]
    return "\n".join(out)


@dataclass
class CtlResult:
    rc: int
    out: Any
    err: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


@dataclass
class Unit:
    """`kiosk run --headless` on a profile, as a separate process (`headless=False`: with the touchscreen)."""

    workdir: Path
    profile_text: str
    socket: Path
    proc: LabProcess | None = None
    env: dict[str, str] = field(default_factory=dict)
    headless: bool = True
    argv_prefix: list[str] = field(default_factory=list)  # e.g. `ip netns exec NAME`: a test host of its own

    @property
    def profile_path(self) -> Path:
        return self.workdir / "profile.toml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "unit.log"

    def start(self, wait_registered: bool = True, timeout: float = 20.0) -> "Unit":
        """Start the unit; wait for its control socket (and its lines to register)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.profile_path.write_text(self.profile_text)
        os.chmod(self.profile_path, 0o600)
        argv = [*self.argv_prefix, sys.executable, "-m", "kiosk.cli", "run", "--profile", str(self.profile_path)]
        if self.headless:
            argv.append("--headless")
        self.proc = LabProcess("kiosk", argv, self.log_path, self.workdir)
        self.proc.start(env={**os.environ, **self.env})
        # Not the socket file: it appears at the unit's bind(), before its listen(), and a
        # request in between is refused ("no kiosk is running") -- the test then failed at
        # once and its teardown stopped a unit that had just come up.
        if not wait_until(lambda: listening(self.socket) or not self.proc.running(), timeout):
            raise LabProcessError(f"kiosk did not open {self.socket}:\n{self.proc.log_tail()}")
        if not self.proc.running():
            raise LabProcessError(f"kiosk exited at start:\n{self.proc.log_tail()}")
        if wait_registered and not wait_until(self.all_registered, timeout, 0.1):
            raise LabProcessError(f"kiosk lines did not register: {self.request('calls')}\n{self.proc.log_tail()}")
        return self

    def all_registered(self) -> bool:
        snap = self.request("calls")
        return bool(snap.get("ok")) and all(line["registered"] for line in snap["data"]["lines"])

    def request(self, cmd: str, wait: bool = True, **args: Any) -> dict[str, Any]:
        """One request on the control socket; the raw reply.

        `wait` (the default, as `kiosk ctl` does): the reply is the command's final
        outcome, not only its acceptance; `wait=False` returns as soon as the unit took it.
        """
        from ..control import request

        return request(self.socket, cmd, wait=wait, **args)

    def ctl(self, *args: str, timeout: float = 30.0) -> CtlResult:
        """Run `kiosk ctl ARGS` as its own process, as a CTI script would (it waits for the outcome,
        unless ARGS start with `--no-wait`)."""
        argv = [sys.executable, "-m", "kiosk.cli", "ctl", "--socket", str(self.socket), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        try:
            out = json.loads(done.stdout) if done.stdout.strip() else None
        except json.JSONDecodeError:
            out = done.stdout
        return CtlResult(done.returncode, out, done.stderr.strip())

    def calls(self) -> list[dict[str, Any]]:
        return self.request("calls")["data"]["calls"]

    def wait_for(self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until pred(call table) holds; return the table (raise with it if not)."""
        calls: list[dict[str, Any]] = []

        def check() -> bool:
            nonlocal calls
            calls = self.calls()
            return pred(calls)

        if not wait_until(check, timeout, 0.05):
            raise AssertionError(f"call table never matched; last: {calls}\n{self.log_tail()}")
        return calls

    def log_tail(self, lines: int = 40) -> str:
        return self.proc.log_tail(lines) if self.proc else ""

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: the exit code."""
        assert self.proc is not None and self.proc.popen is not None
        self.proc.popen.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def __enter__(self) -> "Unit":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

