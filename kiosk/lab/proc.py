"""Process plumbing shared by the lab's SIP parts (Kamailio, baresip, SIPp).

Every lab part is a real program started in its own session, with stdout and
stderr going to files in its work directory (never to pipes that can fill up),
and stopped by its own PID: SIGTERM first, SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO
from collections.abc import Callable, Sequence

__all__ = ["LabProcessError", "LabProcess", "listening", "tail", "wait_until"]


class LabProcessError(RuntimeError):
    """A lab process failed to start or did not become ready."""


def tail(path: Path, lines: int = 40) -> str:
    """Return the last `lines` lines of a text file ('' if it does not exist)."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    text = data[-64 * 1024 :].decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


class LabProcess:
    """One child process with its output in a log file, stoppable by PID."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running child, or None before start."""
        return self.popen.pid if self.popen else None

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start the child in its own session, output appended to log_path."""
        if self.popen is not None:
            raise LabProcessError(f"{self.name} already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab", buffering=0)
        try:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        except OSError as exc:
            self._log.close()
            self._log = None
            raise LabProcessError(f"cannot run {self.argv[0]}: {exc}") from exc

    def poll(self) -> int | None:
        """Return the exit code if the child has ended, else None."""
        return self.popen.poll() if self.popen else None

    def running(self) -> bool:
        """True while the child runs."""
        return self.popen is not None and self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to end and return its exit code (TimeoutExpired on timeout)."""
        if self.popen is None:
            raise LabProcessError(f"{self.name} was not started")
        return self.popen.wait(timeout)

    def stop(self, grace: float = 3.0, terms: int = 1) -> int | None:
        """SIGTERM the child `terms` times, `grace` s apart, then SIGKILL; return its exit code."""
        p = self.popen
        if p is None:
            return None
        try:
            for _ in range(max(1, terms)):
                if p.poll() is not None:
                    break
                self._signal(p.pid, signal.SIGTERM)
                try:
                    p.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
            if p.poll() is None:
                self._signal(p.pid, signal.SIGKILL)
                p.wait(5)
            # Children that the program forked (Kamailio's workers) live in
            # the session we created; make sure none outlives the leader.
            self._signal(p.pid, signal.SIGKILL, group_only=True)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
        return p.returncode

    @staticmethod
    def _signal(pid: int, sig: int, group_only: bool = False) -> None:
        # The child was started with start_new_session=True, so its process
        # group id is its own pid: that group holds only what it forked.
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            if not group_only:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the child's log."""
        return tail(self.log_path, lines)


def listening(path: Path) -> bool:
    """True when the Unix socket at `path` takes a connection now.

    A server's socket file appears at bind(), before its listen(): a connect()
    in between is refused (ECONNREFUSED). The file existing is therefore no
    sign that its server is ready -- on a loaded machine the gap is
    milliseconds to hundreds of milliseconds -- and a connect is.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def wait_until(pred: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll `pred()` until it is true or `timeout` seconds pass; return whether it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
