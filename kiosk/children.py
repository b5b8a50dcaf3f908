"""The environment of the unit's own child processes (the panel, the audio device process)."""

from __future__ import annotations

import os
from pathlib import Path


def child_env() -> dict[str, str]:
    """The unit's environment, with this very source tree first on PYTHONPATH.

    The children run `python -m kiosk.ui` / `python -m hw.audio` with the unit's
    interpreter; from a source checkout (not installed) they would not find
    the packages without it.
    """
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    return env
