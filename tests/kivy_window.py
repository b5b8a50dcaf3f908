"""Kivy on SDL's offscreen driver for the in-process screen tests: imported first, before anything loads Kivy.

Sets Kivy's environment (no argument parsing, a throw-away KIVY_HOME), the
panel's own Kivy settings, no frame pacing (each EventLoop.idle() would sleep
1/maxfps), and opens the one window every screen test shares.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("KIVY_HOME", tempfile.mkdtemp(prefix="kiosk-test-kivy-"))

from kiosk.ui.app import configure_kivy  # noqa: E402  (sets Kivy's environment before kivy loads)

configure_kivy(fullscreen=False)
from kivy.config import Config  # noqa: E402

Config.set("graphics", "maxfps", "500")  # tests need no pacing

from kivy.base import EventLoop  # noqa: E402
from kivy.tests.common import UnitTestTouch  # noqa: E402

EventLoop.ensure_window()
from kivy.core.window import Window  # noqa: E402

__all__ = ["EventLoop", "UnitTestTouch", "Window"]
