"""The touchscreen: the Kivy face of the "Call control" panel.

A front-end that only translates (DESIGN.md): a touch becomes the same desk
command `kiosk ctl` sends, and desk events redraw the screen. Nothing here knows
the panel's rules or imports pjsua2.

Kivy reads its environment once, when it is first imported, and by default
parses sys.argv, writes ~/.kivy and swallows stderr into its own logger. So
importing this package sets the defaults the unit wants before any module of it
imports kivy; a variable already set (by a test, by systemd) wins. The modules
`texts`, `display`, `frontend`, `remote` and `supervisor` import no Kivy at all:
the unit (which only starts the panel's process, `python -m kiosk.ui`, and
passes these defaults on to it in its environment), `kiosk ctl` and the other
tests never load it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _kivy_defaults() -> None:
    os.environ.setdefault("KIVY_NO_ARGS", "1")  # the unit's arguments are argparse's, not Kivy's
    os.environ.setdefault("KIVY_NO_CONFIG", "1")  # no config.ini written on the unit: settings come from code
    os.environ.setdefault("KIVY_NO_FILELOG", "1")  # logs go to the journal, through logging
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")  # keep our logging set-up and stderr as they are
    # Only SDL2: when SDL cannot open a window, Kivy's next provider (x11) calls exit() in C
    # on "Couldn't connect to X server" and would take the unit and its calls with it.
    os.environ.setdefault("KIVY_WINDOW", "sdl2")
    # A writable home for Kivy's icons and modules dir; a service user has no ~/.kivy.
    os.environ.setdefault("KIVY_HOME", str(Path(tempfile.gettempdir()) / f"kiosk-kivy-{os.getuid()}"))


_kivy_defaults()
