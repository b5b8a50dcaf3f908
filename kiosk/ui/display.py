"""Is there a screen to show the panel on? Decided without importing Kivy."""

from __future__ import annotations

import glob
import os


def no_display_reason() -> str | None:
    """None when a display is there (X11, Wayland or a DRM/KMS card); else why not, for the log."""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    if glob.glob("/dev/dri/card*"):
        return None
    return "no display: DISPLAY and WAYLAND_DISPLAY are not set and there is no /dev/dri/card*"
