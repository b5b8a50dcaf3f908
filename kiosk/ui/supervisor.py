"""`kiosk run`'s side of the touchscreen: start the panel's process and keep it running.

The panel is `python -m kiosk.ui` (same interpreter, same environment), a
child of the unit that talks to it only through the control socket. Its
stdout/stderr are the unit's, so its messages land in the unit's log. When it
ends or crashes, the unit logs why (exit code or signal) and starts it again
after a pause that doubles from 1 s up to 30 s while it keeps dying quickly; at
30 s it says once that the touchscreen is off, and keeps trying at that pace.
A panel that ran for a while starts again after 1 s. The unit and its calls
never wait for any of this. No Kivy here.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from kiosk.children import child_env

log = logging.getLogger("kiosk.ui")

#: Restart pauses (s): the first, and the most it doubles to.
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
#: A panel that ran at least this long (s) was working: the next pause starts at BACKOFF_FIRST again.
STABLE_AFTER = 60.0
#: How long (s) the panel gets to close after SIGTERM before it is killed.
STOP_GRACE = 5.0


def describe_exit(code: int) -> str:
    """An exit status as the log says it: "exit code 1", "signal SIGKILL"."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class PanelSupervisor:
    """The panel's process, kept running until `stop()`."""

    def __init__(self, socket_path: Path, profile_path: Path, fullscreen: bool,
                 backoff_first: float = BACKOFF_FIRST, backoff_max: float = BACKOFF_MAX) -> None:
        self.argv = [sys.executable, "-m", "kiosk.ui", "--socket", str(socket_path), "--profile", str(profile_path)]
        if fullscreen:
            self.argv.append("--fullscreen")
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._popen: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name="kiosk-panel", daemon=True)
        #: How many times the panel's process was started (for tests and the log).
        self.starts = 0

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._popen.pid if self._popen is not None and self._popen.poll() is None else None

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        """For the unit's watchdog: the supervisor still watches the panel (its process runs, or is
        between restarts, or is off after failing again and again: each on purpose)."""
        return self._thread.is_alive() and not self._stopping.is_set()

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            # Inherits stdout/stderr (the unit's log) and the environment (DISPLAY, SDL_*, KIVY_*).
            self._popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, close_fds=True, env=child_env())
            self.starts += 1
            popen = self._popen
        log.info("touchscreen: panel process %d started", popen.pid)
        return popen

    def _run(self) -> None:
        delay = self.backoff_first
        said_off = False
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                popen = self._spawn()
            except OSError as exc:
                log.error("touchscreen: cannot start the panel process: %s", exc)
                popen = None
                code = None
            else:
                if popen is None:
                    return
                code = popen.wait()
            if self._stopping.is_set():
                return
            ran = time.monotonic() - started
            if ran >= STABLE_AFTER:
                delay, said_off = self.backoff_first, False
            why = describe_exit(code) if code is not None else "it could not be started"
            log.warning("touchscreen: the panel process ended (%s) after %.1f s; the unit goes on; "
                        "starting it again in %g s", why, ran, delay)
            if delay >= self.backoff_max and not said_off:
                said_off = True
                log.error("touchscreen: the panel keeps failing: the touchscreen is off (the unit runs as "
                          "if headless; `kiosk ctl` and the GPIO keys work); trying again every %g s", delay)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self.backoff_max)

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """Stop supervising and end the panel: SIGTERM, then SIGKILL after `grace` s. Its exit status."""
        with self._lock:
            self._stopping.set()
            popen = self._popen
        code = None
        if popen is not None:
            if popen.poll() is None:
                popen.terminate()
                try:
                    popen.wait(grace)
                except subprocess.TimeoutExpired:
                    log.warning("touchscreen: the panel process %d did not close in %g s: killing it", popen.pid,
                                grace)
                    popen.kill()
                    popen.wait()
            code = popen.returncode
            log.info("touchscreen: panel process %d stopped (%s)", popen.pid, describe_exit(code))
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(grace)
        return code


def fullscreen_wanted() -> bool:
    """Fill the unit's display (the KMS/DRM console, X11 or Wayland, at its own resolution), unless
    KIOSK_PANEL_SIZE asks for a window of that size (the demo on a desktop, tests) on X11 or Wayland,
    or SDL draws offscreen (tests, benches: there is no screen to fill)."""
    if os.environ.get("SDL_VIDEODRIVER", "").strip().lower() == "offscreen":
        return False
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return True  # the console: the screen is the window
    return not os.environ.get("KIOSK_PANEL_SIZE", "").strip()
