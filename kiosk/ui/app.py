"""The Kivy application that shows the panel: `run_panel` is what the panel's process runs.

`kiosk run` starts `python -m kiosk.ui` (kiosk/ui/__main__.py) as a child
process that shows the panel over the unit's control socket (a RemoteDesk), so
neither Kivy nor SDL nor the GL driver ever lives in the SIP process. Kivy owns
that process's main thread. Its stop Event (set by SIGTERM there) is looked at
four times a second and stops the app. An exception in a callback is logged and
the panel goes on. run_panel works on an in-process Desk too (tests).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .frontend import AnyDesk

log = logging.getLogger("kiosk.ui")

#: The touchscreen the panel is laid out for (Raspberry Pi 7" display).
WIDTH, HEIGHT = 800, 480
#: How often (s) the app looks at the unit's stop Event.
STOP_POLL = 0.25


class PanelFailed(RuntimeError):
    """Kivy could not show the panel (no GL, no window); str() says why, for the log."""


def configure_kivy(fullscreen: bool) -> None:
    """Kivy settings that must be made before its window exists."""
    from kivy.config import Config

    Config.set("graphics", "width", str(WIDTH))
    Config.set("graphics", "height", str(HEIGHT))
    Config.set("graphics", "fullscreen", "auto" if fullscreen else "0")
    Config.set("graphics", "resizable", "0")
    Config.set("graphics", "maxfps", "30")  # never 0 (a busy loop); a panel needs no more than 30
    Config.set("kivy", "exit_on_escape", "0")  # Escape must not close the unit's screen
    Config.set("kivy", "keyboard_mode", "system")  # no on-screen keyboard: the panel has its keypad
    Config.set("input", "mouse", "mouse,multitouch_on_demand")  # a right click is a click, not a red dot


def run_panel(desk: "AnyDesk", stop: threading.Event, fullscreen: bool = False,
              on_started: Callable[[], None] | None = None) -> None:
    """Show the panel until `stop` is set (then return) or the window goes (PanelFailed).

    Raises PanelFailed when Kivy cannot start at all; the unit then runs headless.
    """
    configure_kivy(fullscreen)
    try:
        from kivy.app import App
        from kivy.base import ExceptionHandler, ExceptionManager
        from kivy.clock import Clock
    except Exception as exc:
        raise PanelFailed(f"Kivy cannot be loaded: {type(exc).__name__}: {exc}") from exc

    from .frontend import DeskFrontend
    from .panel import Panel

    class KeepGoing(ExceptionHandler):  # type: ignore[misc]
        def handle_exception(self, inst: BaseException) -> Any:
            if isinstance(inst, Exception):
                log.exception("touchscreen: error in the panel (it goes on)", exc_info=inst)
                return ExceptionManager.PASS
            return ExceptionManager.RAISE

    class PanelApp(App):  # type: ignore[misc]
        title = "kiosk"

        def build(self) -> Panel:
            self.panel = Panel(DeskFrontend(desk, lambda fn: Clock.schedule_once(lambda dt: fn(), 0)), desk.profile)
            self.panel.start()
            Clock.schedule_interval(self._poll_stop, STOP_POLL)
            return self.panel

        def on_start(self) -> None:
            from kivy.core.window import Window

            log.info("touchscreen: the panel is shown (%dx%d, language %s)", *Window.size,
                     self.panel.texts.language)
            if on_started is not None:
                on_started()

        def _poll_stop(self, _dt: float) -> None:
            if stop.is_set():
                self.stop()

        def on_stop(self) -> None:
            self.panel.close()

    handler = KeepGoing()
    ExceptionManager.add_handler(handler)
    app = PanelApp()
    try:
        app.run()
    except SystemExit as exc:  # Kivy exits when it finds no window provider or no usable GL
        raise PanelFailed(f"Kivy could not open a window (exit {exc.code}); see the Kivy messages above") from exc
    except Exception as exc:
        raise PanelFailed(f"{type(exc).__name__}: {exc}") from exc
    finally:
        ExceptionManager.remove_handler(handler)
        panel = getattr(app, "panel", None)
        if panel is not None:
            panel.frontend.close()
    if not stop.is_set():
        raise PanelFailed("the panel's window was closed")
