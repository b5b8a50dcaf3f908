"""The Kivy application that shows the panel: `run_panel` is what the panel's process runs.

`kiosk run` starts `python -m kiosk.ui` (kiosk/ui/__main__.py) as a child
process that shows the panel over the unit's control socket (a RemoteDesk), so
neither Kivy nor SDL nor the GL driver ever lives in the SIP process. Kivy owns
that process's main thread. Its stop Event (set by SIGTERM there) is looked at
four times a second and stops the app. An exception in a callback is logged and
the panel goes on. run_panel works on an in-process Desk too (tests).

The window (`window_settings`): full screen fills the display SDL is given at
its own resolution (800x480, 1024x600, 1280x800, the Touch Display 2's 720x1280)
— Kivy's fullscreen "auto" (SDL's FULLSCREEN_DESKTOP: on the KMS/DRM console the
screen is the window), borderless, and created at the desktop's size at (0, 0):
under X without a window manager nobody honours the full-screen request, and a
window made at any other size stays that size (centred, the rest black).
Otherwise a resizable window, 800x480 unless `KIOSK_PANEL_SIZE=WxH` (or
`python -m kiosk.ui --size WxH`) says another size: the demo and the tests.

The log says when the first full frame was drawn: the first frame flipped
after the unit's snapshot was put on the panel ("touchscreen: first frame in
N ms"), counted from the kernel's start time of this process, with where the
time went.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from .frontend import AnyDesk

log = logging.getLogger("kiosk.ui")

#: The window's size when not full screen (the Raspberry Pi 7" display's).
WIDTH, HEIGHT = 800, 480
#: The environment variable that sets the window's size ("1024x600"); full screen ignores it.
SIZE_ENV = "KIOSK_PANEL_SIZE"
#: How often (s) the app looks at the unit's stop Event.
STOP_POLL = 0.25
#: Frames a second while the operator or the desk is doing something, and once nothing has for IDLE_AFTER s.
ACTIVE_FPS, IDLE_FPS = 30, 10
IDLE_AFTER = 2.0
#: The only Kivy core providers the panel uses: the others are not even tried at start-up (a variable
#: already set wins). Audio, video, camera, spelling and the clipboard are never imported at all.
PROVIDERS = {"KIVY_IMAGE": "sdl2", "KIVY_TEXT": "sdl2"}


class PanelFailed(RuntimeError):
    """Kivy could not show the panel (no GL, no window); str() says why, for the log."""


def parse_size(text: str) -> tuple[int, int]:
    """"1024x600" -> (1024, 600); ValueError saying what is wrong otherwise."""
    m = re.fullmatch(r"\s*(\d{2,5})\s*[xX×]\s*(\d{2,5})\s*", text)
    if not m:
        raise ValueError(f"a window size is WIDTHxHEIGHT in pixels, e.g. 1024x600, not {text!r}")
    width, height = int(m.group(1)), int(m.group(2))
    if width < 100 or height < 100:
        raise ValueError(f"a window of {width}x{height} is too small for the panel")
    return width, height


def window_size(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """The window's size when not full screen: KIOSK_PANEL_SIZE, else 800x480 (a bad value is said and ignored)."""
    text = (os.environ if env is None else env).get(SIZE_ENV, "").strip()
    if not text:
        return WIDTH, HEIGHT
    try:
        return parse_size(text)
    except ValueError as exc:
        log.warning("touchscreen: %s=%s ignored: %s; %dx%d", SIZE_ENV, text, exc, WIDTH, HEIGHT)
        return WIDTH, HEIGHT


def window_settings(fullscreen: bool, size: tuple[int, int] | None = None,
                    desktop: tuple[int, int] | None = None) -> dict[tuple[str, str], str]:
    """Kivy Config values (section, key) -> value for the panel's window.

    `fullscreen`: Kivy's "auto" at `desktop` (the display's resolution, see
    desktop_size()), borderless, at (0, 0), not resizable; without `desktop`
    the size is left to SDL. Otherwise a resizable window of `size` (800x480).
    """
    out = {("kivy", "exit_on_escape"): "0",  # Escape must not close the unit's screen
           ("kivy", "keyboard_mode"): "system",  # no on-screen keyboard: the panel has its keypad
           ("input", "mouse"): "mouse,multitouch_on_demand",  # a right click is a click, not a red dot
           ("graphics", "maxfps"): str(ACTIVE_FPS),  # never 0 (a busy loop); a panel needs no more than 30
           # Kivy's clock whose "free" events end its sleep at once: desk events are scheduled so (Pace).
           ("kivy", "kivy_clock"): "free_all",
           # Kivy's default, 2, draws every frame with 2x multisampling: nothing on the panel needs it (upright
           # rectangles and text), and on a software renderer (Mesa llvmpipe) it doubles each frame's cost.
           ("graphics", "multisamples"): "0"}
    if fullscreen:
        out |= {("graphics", "fullscreen"): "auto", ("graphics", "borderless"): "1",
                ("graphics", "resizable"): "0", ("graphics", "position"): "custom",
                ("graphics", "left"): "0", ("graphics", "top"): "0"}
        if desktop is not None:
            out |= {("graphics", "width"): str(desktop[0]), ("graphics", "height"): str(desktop[1])}
    else:
        width, height = size or (WIDTH, HEIGHT)
        out |= {("graphics", "fullscreen"): "0", ("graphics", "borderless"): "0",
                ("graphics", "resizable"): "1", ("graphics", "position"): "auto",
                ("graphics", "width"): str(width), ("graphics", "height"): str(height)}
    return out


class _DisplayMode(ctypes.Structure):
    _fields_ = [("format", ctypes.c_uint32), ("w", ctypes.c_int), ("h", ctypes.c_int),
                ("refresh_rate", ctypes.c_int), ("driverdata", ctypes.c_void_p)]


def _kivy_sdl() -> ctypes.CDLL | None:
    """The SDL2 library Kivy's window will use (the one its _window_sdl2 extension links to), not imported.

    Importing any kivy.core.window module creates the window, so the extension
    is only dlopen()ed: its own dependencies come with it, and a symbol looked
    up through its handle is the SDL it will call (one SDL in the process).
    """
    import kivy

    folder = Path(kivy.__file__).parent / "core" / "window"
    for ext in sorted(folder.glob("_window_sdl2*.so")):
        try:
            return ctypes.CDLL(str(ext))
        except OSError as exc:
            log.debug("touchscreen: cannot load %s: %s", ext, exc)
    return None


def desktop_size() -> tuple[int, int] | None:
    """The resolution of the display SDL draws on (X11, Wayland, KMS/DRM), or None when SDL cannot say."""
    sdl = _kivy_sdl()
    if sdl is None:
        return None
    try:
        init, mode_of = sdl.SDL_InitSubSystem, sdl.SDL_GetDesktopDisplayMode
    except AttributeError:
        return None
    if init(0x20) != 0:  # SDL_INIT_VIDEO; Kivy's own SDL_Init later only counts it up
        return None
    mode = _DisplayMode()
    if mode_of(0, ctypes.byref(mode)) != 0 or mode.w <= 0 or mode.h <= 0:
        return None
    return mode.w, mode.h


def configure_kivy(fullscreen: bool, size: tuple[int, int] | None = None) -> None:
    """Kivy settings that must be made before its window exists.

    `size`: the window's size when not full screen (default: window_size(), i.e.
    KIOSK_PANEL_SIZE or 800x480).
    """
    for name, value in PROVIDERS.items():
        os.environ.setdefault(name, value)
    from kivy.config import Config

    desktop = None
    if fullscreen:
        desktop = desktop_size()
        if desktop is None:
            log.warning("touchscreen: SDL does not say the display's resolution; full screen at SDL's choice")
    for (section, key), value in window_settings(fullscreen, size or window_size(), desktop).items():
        Config.set(section, key, value)


def process_age() -> float | None:
    """Seconds since the kernel started this process (its start time, in 10 ms ticks), or None."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, since boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError):
        return None


class StartTimes:
    """Where the panel's start-up went: seconds since the process started, by step."""

    def __init__(self) -> None:
        age = process_age()
        self.zero = time.monotonic() - (age if age is not None else 0.0)
        self.steps: list[tuple[str, float]] = []

    def mark(self, step: str) -> float:
        at = time.monotonic() - self.zero
        self.steps.append((step, at))
        return at

    def text(self) -> str:
        return ", ".join(f"{step} {at * 1000:.0f}" for step, at in self.steps)


class Frames:
    """Functions run right after each frame is flipped (after SDL's buffer swap returned), on Kivy's thread.

    Window's `on_flip` handlers run before the swap; this wraps the window's own `flip`.
    """

    def __init__(self, window: Any) -> None:
        self.after: list[Callable[[], None]] = []
        swap = window.flip

        def flip() -> None:
            swap()
            for fn in list(self.after):
                fn()

        window.flip = flip


def poll_input_first(loop: Any) -> bool:
    """Make Kivy's loop dispatch a touch in the frame it came in, not one frame later.

    Kivy's loop sleeps until the next frame (in Clock.tick), dispatches what the
    input providers hold, draws, and only then polls SDL's events into the
    providers: a touch polled after a frame waits a whole frame's sleep before
    it is dispatched (38 ms median from the release to the touch at 30 frames
    a second, measured under Xvfb). Here the clock's tick polls SDL once more
    right after its sleep, so what came in during the sleep is dispatched in
    this frame. False (nothing changed) when the clock's tick cannot be wrapped.
    """
    from kivy.clock import Clock

    tick = getattr(Clock, "tick", None)
    if tick is None or getattr(tick, "_kiosk_polls", False):
        return False

    def tick_then_poll(*args: Any, **kw: Any) -> Any:
        result = tick(*args, **kw)
        window = loop.window
        if not loop.quit and window is not None:
            window.mainloop()  # SDL's events, now, before this frame dispatches its input
        return result

    tick_then_poll._kiosk_polls = True  # type: ignore[attr-defined]
    try:
        Clock.tick = tick_then_poll
    except (AttributeError, TypeError):
        return False
    return True


class Pace:
    """Kivy's frame rate: ACTIVE_FPS while something happens, IDLE_FPS once nothing has for IDLE_AFTER s.

    Kivy's loop turns at its frame rate whether anything changed or not (about
    a third of a millisecond of CPU a turn here: 1 % of a core at 30 a second).
    Something happening is a touch (its press comes about 100 ms before the
    release the buttons act on, so the release is read at ACTIVE_FPS), a key,
    or a desk event: `post` hands those to Kivy's thread as "free" events of
    the free_all clock, which end the loop's sleep at once, so an incoming
    call's banner never waits for an idle frame. A ringing row's pulse (8 steps
    a second) and the durations (1 a second) need no more than IDLE_FPS.
    """

    def __init__(self, clock: Any, window: Any) -> None:
        self.clock = clock
        self.last = time.monotonic()
        self._later = getattr(clock, "schedule_once_free", clock.schedule_once)  # a KIVY_CLOCK of the user's
        for name in ("on_touch_down", "on_touch_move", "on_touch_up", "on_key_down"):
            window.bind(**{name: self.wake})

    def wake(self, *_: Any) -> None:
        """Something happens (any thread): the full frame rate from the next frame on."""
        self.last = time.monotonic()
        if self.clock._max_fps != ACTIVE_FPS:
            self.clock._max_fps = float(ACTIVE_FPS)

    def settle(self) -> None:
        """Kivy's thread, now and then: back to IDLE_FPS after IDLE_AFTER s of nothing."""
        if self.clock._max_fps != IDLE_FPS and time.monotonic() - self.last >= IDLE_AFTER:
            self.clock._max_fps = float(IDLE_FPS)

    def post(self, fn: Callable[[], None]) -> None:
        """Run `fn` on Kivy's thread as soon as it can (any thread), at the full frame rate."""
        self.wake()
        self._later(lambda dt: fn(), 0)


class FrameProbe:
    """What each flipped frame showed, for bench/ui_latency.py: set KIOSK_PANEL_PROBE=FILE.

    Lines (times are time.time_ns()): `window LEFT TOP W H` and `button ID X Y
    W H` (window pixels, y up) at the first frame; `frame NS BANNER BANNER_ROWS
    ROWS` right after each swap that shows a change of the incoming banner (1
    shown, 0 not, - no banner) or of the table's row ids; `touch NS` when a
    touch ends (Kivy has the release, before any widget sees it).
    """

    ENV = "KIOSK_PANEL_PROBE"

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", buffering=1)  # noqa: SIM115  (open as long as the panel runs)
        self.last: tuple[Any, ...] | None = None

    @classmethod
    def from_env(cls) -> FrameProbe | None:
        path = os.environ.get(cls.ENV, "").strip()
        return cls(Path(path)) if path else None

    def watch_touches(self, window: Any) -> None:
        window.bind(on_touch_up=lambda *_: self.file.write(f"touch {time.time_ns()}\n"))

    def geometry(self, panel: Any) -> None:
        from kivy.core.window import Window

        self.file.write(f"window {Window.left} {Window.top} {Window.width} {Window.height}\n")
        for key, button in panel.buttons.items():
            x, y = button.to_window(button.x, button.y)
            self.file.write(f"button {key} {x:.0f} {y:.0f} {button.width:.0f} {button.height:.0f}\n")

    def frame(self, panel: Any) -> None:
        banner = getattr(panel, "banner", None)
        shown = "-" if banner is None else str(int(bool(banner.shown)))
        state = (shown, tuple(getattr(banner, "rows", ())), tuple(sorted(panel.table.rows)))
        if state != self.last:
            self.last = state
            ids = [",".join(map(str, ids)) or "-" for ids in state[1:]]
            self.file.write(f"frame {time.time_ns()} {shown} {ids[0]} {ids[1]}\n")


def run_panel(desk: AnyDesk, stop: threading.Event, fullscreen: bool = False,
              on_started: Callable[[], None] | None = None, size: tuple[int, int] | None = None,
              on_first_frame: Callable[[float], None] | None = None) -> None:
    """Show the panel until `stop` is set (then return) or the window goes (PanelFailed).

    `on_first_frame(seconds since the process started)` runs on Kivy's thread
    when the first frame after the desk's snapshot was flipped.
    Raises PanelFailed when Kivy cannot start at all; the unit then runs headless.
    """
    times = StartTimes()
    times.mark("start")
    configure_kivy(fullscreen, size)
    try:
        from kivy.app import App
        from kivy.base import ExceptionHandler, ExceptionManager
        from kivy.clock import Clock
    except Exception as exc:
        raise PanelFailed(f"Kivy cannot be loaded: {type(exc).__name__}: {exc}") from exc
    times.mark("Kivy")
    try:
        from kivy.core.window import Window  # creating it: SDL, the GL context
    except SystemExit as exc:  # Kivy exits when it finds no window provider or no usable GL
        raise PanelFailed(f"Kivy could not open a window (exit {exc.code}); see the Kivy messages above") from exc
    except Exception as exc:
        raise PanelFailed(f"Kivy could not open a window: {type(exc).__name__}: {exc}") from exc
    if Window is None:
        raise PanelFailed("Kivy could not open a window; see the Kivy messages above")
    times.mark("window")
    from . import theme

    Window.clearcolor = theme.BG  # what a window being resized shows where the panel is not yet
    frames = Frames(Window)
    from kivy.base import EventLoop

    poll_input_first(EventLoop)
    pace = Pace(Clock, Window)
    probe = FrameProbe.from_env()
    if probe is not None:
        probe.watch_touches(Window)

    from .frontend import DeskFrontend
    from .panel import Panel

    times.mark("modules")

    class KeepGoing(ExceptionHandler):  # type: ignore[misc]
        def handle_exception(self, inst: BaseException) -> Any:
            if isinstance(inst, Exception):
                log.exception("touchscreen: error in the panel (it goes on)", exc_info=inst)
                return ExceptionManager.PASS
            return ExceptionManager.RAISE

    class PanelApp(App):  # type: ignore[misc]
        title = "kiosk"

        def build(self) -> Panel:
            self.panel = Panel(DeskFrontend(desk, pace.post), desk.profile)
            times.mark("panel")
            self._watch_first_frame()
            self.panel.start()
            Clock.schedule_interval(self._poll_stop, STOP_POLL)
            return self.panel

        def _watch_first_frame(self) -> None:
            """Log the first frame flipped after the unit's snapshot is on the panel.

            The panel draws a snapshot in `_load` (the first one read at start, and
            again when the unit's socket comes back); a snapshot drawn while the
            unit is not reachable yet (RemoteDesk.connected False) is not the
            panel, only its frame: the wait goes on for the next.
            """
            panel = self.panel
            load = panel._load

            def flipped() -> None:
                frames.after.remove(flipped)
                at = times.mark("frame")
                log.info("touchscreen: first frame in %.0f ms (%dx%d%s; ms since the process started: %s)",
                         at * 1000, *Window.size, ", full screen" if fullscreen else "", times.text())
                if probe is not None:
                    probe.geometry(panel)
                if on_first_frame is not None:
                    on_first_frame(at)

            def loaded(snap: dict[str, Any]) -> None:
                load(snap)
                if getattr(desk, "connected", True) and flipped not in frames.after:
                    del panel._load  # the class's own again
                    times.mark("snapshot")
                    frames.after.append(flipped)

            panel._load = loaded  # type: ignore[method-assign]
            if probe is not None:
                frames.after.append(lambda: probe.frame(panel))

        def on_start(self) -> None:
            log.info("touchscreen: the panel is shown (%dx%d, language %s)", *Window.size,
                     self.panel.texts.language)
            if on_started is not None:
                on_started()

        def _poll_stop(self, _dt: float) -> None:
            if stop.is_set():
                self.stop()
            pace.settle()

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
