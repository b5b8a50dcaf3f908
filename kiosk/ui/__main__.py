"""`python -m kiosk.ui --socket PATH --profile FILE [--fullscreen | --size WxH]`: the touchscreen as its own process.

`kiosk run` starts this and restarts it when it ends; it talks to the unit only
through the control socket, as any CTI client does (kiosk.ui.remote). A crash
in SDL, the GL driver or Kivy ends this process, never the unit and its calls.
SIGTERM (or SIGINT) closes the panel and exits 0; so does the unit going away
for good (this process's parent changing), so no panel outlives its unit.
`--fullscreen` fills the display at its resolution (kiosk.ui.app); without
it the panel is a resizable window of `--size`, else KIOSK_PANEL_SIZE, else
800x480. Exit codes: 0 stopped, 1 the panel could not run, 2 bad profile or size.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

#: How often (s) the panel checks that the unit that started it is still its parent.
PARENT_POLL = 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kiosk.ui", description="The kiosk touchscreen panel.")
    parser.add_argument("--socket", type=Path, required=True, help="the unit's control socket")
    parser.add_argument("--profile", type=Path, required=True, help="the unit's profile (lines, routes, language)")
    parser.add_argument("--fullscreen", action="store_true",
                        help="fill the display at its own resolution (KMS console, X with or without a window manager)")
    parser.add_argument("--size", metavar="WxH",
                        help="the window's size when not full screen (default: $KIOSK_PANEL_SIZE, else 800x480)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s %(name)s[panel {os.getpid()}]: %(message)s")
    log = logging.getLogger("kiosk.ui")

    from .app import PanelFailed, parse_size, run_panel, window_size

    try:
        size = parse_size(args.size) if args.size else window_size()
    except ValueError as exc:
        log.error("touchscreen: --size: %s", exc)
        return 2

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    from kiosk.profile import ProfileError, load_profile

    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        for problem in exc.problems:
            log.error("touchscreen: profile: %s", problem)
        return 2

    parent = os.getppid()

    def watch_parent() -> None:
        while not stop.wait(PARENT_POLL):
            if os.getppid() != parent:
                log.warning("touchscreen: the unit that started the panel is gone; closing")
                stop.set()

    threading.Thread(target=watch_parent, name="kiosk-ui-parent", daemon=True).start()

    from .remote import RemoteDesk

    desk = RemoteDesk(args.socket, profile)
    try:
        run_panel(desk, stop, fullscreen=args.fullscreen, size=size)
    except PanelFailed as exc:
        if not stop.is_set():
            log.error("touchscreen failed: %s", exc)
            return 1
    finally:
        desk.close()
    log.info("touchscreen: the panel is closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
