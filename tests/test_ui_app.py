"""The panel's window and process.

Fast: the Kivy settings of the window (full screen: Kivy's "auto" at the display's resolution,
borderless, at 0,0; otherwise a resizable window of KIOSK_PANEL_SIZE or 800x480) and the size
option. Lab (real processes): `kiosk run` with the touchscreen, the unit starting the panel as its
own process (`python -m kiosk.ui`, SDL's offscreen driver), which talks to it only through the
control socket. Killing the panel leaves the unit and its calls alone and the panel comes back;
SIGTERM stops both with exit 0; the unit never loads Kivy or SDL; without a display or a working
Kivy the unit keeps its calls. And the panel on a real X server without a window manager (Xvfb)
at 1024x600, 1280x800 and 720x1280: full screen fills the screen (the X screen's own picture,
taken with xwd, shows no pixel of the root window's white), a window has the size asked for."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from kiosk.lab.ports import free_port
from kiosk.lab.proc import wait_until
from kiosk.lab.unit import LabLine, Unit, lab_profile_toml
from kiosk.ui.app import (
    HEIGHT,
    SIZE_ENV,
    WIDTH,
    parse_size,
    window_settings,
    window_size,
)
from kiosk.ui.display import no_display_reason

from .conftest import needs_lab

SHOWN = "touchscreen: the panel is shown (800x480, language en)"


# --- the window's settings (fast) ---------------------------------------------------------------


def test_full_screen_is_kivys_auto_at_the_displays_resolution_borderless_at_the_origin() -> None:
    got = window_settings(True, size=(1000, 560), desktop=(1280, 800))
    assert got[("graphics", "fullscreen")] == "auto"
    assert got[("graphics", "borderless")] == "1"
    assert (got[("graphics", "position")], got[("graphics", "left")], got[("graphics", "top")]) == ("custom", "0", "0")
    assert (got[("graphics", "width")], got[("graphics", "height")]) == ("1280", "800")  # the display's, not `size`
    assert got[("graphics", "resizable")] == "0"


def test_full_screen_without_the_displays_resolution_leaves_the_size_to_sdl() -> None:
    got = window_settings(True, desktop=None)
    assert got[("graphics", "fullscreen")] == "auto"
    assert ("graphics", "width") not in got and ("graphics", "height") not in got


def test_a_window_is_resizable_and_800x480_unless_a_size_is_given() -> None:
    got = window_settings(False)
    assert got[("graphics", "fullscreen")] == "0" and got[("graphics", "borderless")] == "0"
    assert got[("graphics", "resizable")] == "1" and got[("graphics", "position")] == "auto"
    assert (got[("graphics", "width")], got[("graphics", "height")]) == (str(WIDTH), str(HEIGHT)) == ("800", "480")
    sized = window_settings(False, size=(1024, 600))
    assert (sized[("graphics", "width")], sized[("graphics", "height")]) == ("1024", "600")


def test_every_window_keeps_the_panels_own_settings() -> None:
    for got in (window_settings(True, desktop=(800, 480)), window_settings(False)):
        assert got[("graphics", "maxfps")] == "30"  # never 0: a busy loop
        assert got[("graphics", "multisamples")] == "0"
        assert got[("kivy", "exit_on_escape")] == "0"
        assert got[("kivy", "keyboard_mode")] == "system"
        assert got[("input", "mouse")] == "mouse,multitouch_on_demand"


@pytest.mark.parametrize("text, size", [("1024x600", (1024, 600)), (" 1280X800 ", (1280, 800)),
                                         ("720x1280", (720, 1280)), ("800×480", (800, 480))])
def test_sizes_are_width_x_height(text: str, size: tuple[int, int]) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1024", "1024x", "x600", "1024*600", "big", "40x40", "1024x600x24"])
def test_a_bad_size_says_what_a_size_is(text: str) -> None:
    with pytest.raises(ValueError, match="WIDTHxHEIGHT|too small"):
        parse_size(text)


def test_the_window_size_comes_from_kiosk_panel_size(caplog: pytest.LogCaptureFixture) -> None:
    assert window_size({}) == (800, 480)
    assert window_size({SIZE_ENV: "1024x600"}) == (1024, 600)
    caplog.set_level(logging.WARNING, logger="kiosk.ui")
    assert window_size({SIZE_ENV: "huge"}) == (800, 480)  # said, and the default used
    assert f"{SIZE_ENV}=huge ignored" in caplog.text


def test_the_panel_process_refuses_a_bad_size_with_exit_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from kiosk.ui.__main__ import main

    caplog.set_level(logging.ERROR, logger="kiosk.ui")
    assert main(["--socket", str(tmp_path / "s.sock"), "--profile", str(tmp_path / "p.toml"), "--size", "wide"]) == 2
    assert "--size: a window size is WIDTHxHEIGHT" in caplog.text


# --- `kiosk run` with the panel (lab) ----------------------------------------------------------


def _start(unit_factory: Callable[..., Unit], tmp_path: Path, **env: str) -> Unit:
    unit = unit_factory(start=False)
    unit.headless = False
    unit.env = {"KIVY_HOME": str(tmp_path / "kivy"), **env}
    return unit


def panel_children(pid: int) -> list[int]:
    """The unit's child processes that run the panel (`python -m kiosk.ui`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        if ppid == pid and b"kiosk.ui" in argv:
            found.append(int(entry.name))
    return found


def loaded_graphics(pid: int) -> list[str]:
    """Kivy's or SDL's shared objects mapped into a process."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sorted({line.split()[-1] for line in maps.splitlines()
                   if "kivy" in line.lower() or "libsdl2" in line.lower()})


def shown_count(unit: Unit) -> int:
    return unit.log_path.read_text(errors="replace").count(SHOWN)


@pytest.mark.lab
@needs_lab
def test_the_panel_runs_as_a_child_a_killed_panel_leaves_the_call_and_comes_back(
        unit_factory: Callable[..., Unit], phone: Callable[..., object], tmp_path: Path) -> None:
    phone("2001")
    # DISPLAY only has to make the display check pass: SDL draws offscreen.
    unit = _start(unit_factory, tmp_path, SDL_VIDEODRIVER="offscreen", DISPLAY=":kiosk-test")
    unit.start()
    assert unit.proc is not None and unit.proc.pid is not None
    pid = unit.proc.pid
    assert wait_until(lambda: shown_count(unit) == 1, 30, 0.05), unit.log_tail()
    [child] = panel_children(pid)
    assert loaded_graphics(child), "the panel's process should have Kivy/SDL mapped"
    assert loaded_graphics(pid) == []  # the SIP process never loads Kivy, SDL or the GL driver
    done = unit.ctl("calls")
    assert done.ok and done.out["lines"][0]["registered"], done
    assert unit.ctl("dial").err.endswith("number required for dial")  # the panel asks for it on screen
    dial = unit.ctl("dial", "2001")
    assert dial.ok, dial.err
    row = dial.out["row"]
    unit.wait_for(lambda calls: any(c["id"] == row and c["state"] == "talking" for c in calls))

    os.kill(child, signal.SIGKILL)  # as a crash in SDL or the GL driver would end it
    assert wait_until(lambda: "panel process ended (signal SIGKILL)" in unit.log_path.read_text(), 20, 0.05), \
        unit.log_tail()
    assert unit.proc.running()
    assert [(c["id"], c["state"]) for c in unit.calls()] == [(row, "talking")]  # the call carried on
    assert wait_until(lambda: shown_count(unit) == 2, 30, 0.05), unit.log_tail()  # restarted, shown again
    [again] = panel_children(pid)
    assert again != child
    assert [c["id"] for c in unit.calls()] == [row]

    assert unit.terminate() == 0  # SIGTERM: the panel is stopped first, then the calls end cleanly
    assert not Path(f"/proc/{again}").exists() or Path(f"/proc/{again}/stat").read_text().split()[2] == "Z"
    log = unit.log_path.read_text()
    assert "Traceback" not in log and "running headless" not in log and "touchscreen failed" not in log, log[-3000:]
    assert f"panel process {again} stopped (exit code 0)" in log, log[-3000:]


@pytest.mark.lab
@needs_lab
def test_a_panel_that_cannot_start_is_retried_and_the_unit_keeps_serving(unit_factory: Callable[..., Unit],
                                                                         tmp_path: Path) -> None:
    unit = _start(unit_factory, tmp_path, SDL_VIDEODRIVER="no-such-driver", DISPLAY=":kiosk-test")
    unit.start()
    assert wait_until(lambda: "panel process ended (exit code" in unit.log_path.read_text(), 30, 0.05), \
        unit.log_tail()
    assert unit.ctl("calls").ok
    assert unit.proc is not None and unit.proc.running()
    assert unit.terminate() == 0
    log = unit.log_path.read_text()
    assert "touchscreen failed" in log and "Traceback" not in log, log[-3000:]


@pytest.mark.lab
@needs_lab
@pytest.mark.skipif(no_display_reason() is None, reason="this machine has a display")
def test_without_a_display_kiosk_run_is_headless(unit_factory: Callable[..., Unit], tmp_path: Path) -> None:
    unit = _start(unit_factory, tmp_path)
    assert "DISPLAY" not in os.environ and "WAYLAND_DISPLAY" not in os.environ
    unit.start()
    assert unit.ctl("calls").ok
    assert "running headless: no display" in unit.log_path.read_text()
    assert unit.proc is not None and unit.proc.pid is not None and panel_children(unit.proc.pid) == []
    assert unit.terminate() == 0


@pytest.mark.lab
def test_the_watchdog_pings_while_the_panel_runs_and_sigint_stops_cleanly(tmp_path: Path) -> None:
    import socket

    from kiosk.lab.ports import free_port
    from kiosk.lab.unit import LabLine, lab_profile_toml

    sock = tmp_path / "control.sock"
    text = lab_profile_toml(listen=f"127.0.0.1:{free_port()}", registrar=f"sip:127.0.0.1:{free_port()}",
                            domain="127.0.0.1", lines=[LabLine("main", "1001", "pw")], socket=sock,
                            recordings=tmp_path / "recordings")  # no registrar there: lines stay unregistered
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    unit = Unit(tmp_path, text, sock, headless=False,
                env={"SDL_VIDEODRIVER": "offscreen", "DISPLAY": ":kiosk-test", "KIVY_HOME": str(tmp_path / "kivy"),
                     "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"})
    try:
        unit.start(wait_registered=False)
        got = [notify.recv(100).decode() for _ in range(3)]
        assert got == ["READY=1", "WATCHDOG=1", "WATCHDOG=1"]
        assert wait_until(lambda: SHOWN in unit.log_path.read_text(), 30, 0.05), unit.log_tail()
        assert unit.proc is not None and unit.proc.popen is not None
        [child] = panel_children(unit.proc.popen.pid)
        unit.proc.popen.send_signal(signal.SIGINT)
        assert unit.proc.wait(20) == 0
        log = unit.log_path.read_text()
        assert "Traceback" not in log and "touchscreen failed" not in log, log[-2000:]
        assert f"panel process {child} stopped (exit code 0)" in log, log[-2000:]
    finally:
        unit.stop()
        notify.close()


# --- on a real X server without a window manager (lab) ---------------------------------------------

XVFB_MISSING = "Xvfb or xwd missing: apt-get install xvfb x11-apps (scripts/install.sh should)"
needs_xvfb = pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xwd")), reason=XVFB_MISSING)


@contextlib.contextmanager
def xvfb(width: int, height: int, log: Path) -> Iterator[str]:
    """An X server of its own at WIDTHxHEIGHT, no window manager, its root window white: the display name."""
    for n in range(100 + os.getpid() % 400, 1000):
        if Path(f"/tmp/.X11-unix/X{n}").exists():
            continue
        r, w = os.pipe()
        # -noreset: at each reset (its last client gone) the server writes its number again, to a closed pipe.
        with open(log, "ab") as err:
            proc = subprocess.Popen(["Xvfb", f":{n}", "-displayfd", str(w), "-screen", "0", f"{width}x{height}x24",
                                     "-nolisten", "tcp", "-noreset", "-wr"], pass_fds=(w,), stdout=subprocess.DEVNULL,
                                    stderr=err)
        os.close(w)
        got = os.read(r, 16) if select.select([r], [], [], 15)[0] else b""
        if got.strip() == str(n).encode():
            break
        os.close(r)
        proc.kill()
        proc.wait()
    else:
        raise RuntimeError(f"Xvfb did not start: {log.read_text()[-2000:]}")
    try:
        yield f":{n}"
    finally:
        proc.terminate()
        proc.wait(10)
        os.close(r)


def read_xwd(path: Path) -> Any:
    """An xwd file (ZPixmap, 24 or 32 bits a pixel, TrueColor) as a HxWx3 uint8 RGB array."""
    import numpy as np

    data = path.read_bytes()
    h = struct.unpack(">25I", data[:100])
    header_size, width, height, byte_order, bpp, bpl, ncolors = h[0], h[4], h[5], h[7], h[11], h[12], h[19]
    raw = np.frombuffer(data, dtype=np.uint8, count=height * bpl, offset=header_size + ncolors * 12)
    nb = bpp // 8
    b = raw.reshape(height, bpl)[:, :width * nb].reshape(height, width, nb).astype(np.uint32)
    order = range(nb) if byte_order == 0 else range(nb - 1, -1, -1)
    px = sum(b[..., i] << (8 * k) for k, i in enumerate(order))
    return np.dstack([((px & m) >> ((m & -m).bit_length() - 1)).astype(np.uint8) for m in h[14:17]])


def screen_shot(display: str, path: Path) -> Any:
    subprocess.run(["xwd", "-root", "-silent", "-out", str(path)], env={**os.environ, "DISPLAY": display},
                   check=True, timeout=30)
    return read_xwd(path)


@pytest.fixture
def headless_unit(tmp_path: Path) -> Iterator[Unit]:
    """A headless `kiosk run` whose line registers nowhere (no lab binaries needed): the panel's socket."""
    sock = tmp_path / "unit" / "control.sock"
    text = lab_profile_toml(listen=f"127.0.0.1:{free_port()}", registrar=f"sip:127.0.0.1:{free_port()}",
                            domain="127.0.0.1", lines=[LabLine("main", "1001", "pw", "Desk")], socket=sock,
                            recordings=tmp_path / "unit" / "recordings")
    unit = Unit(tmp_path / "unit", text, sock, headless=True)
    unit.start(wait_registered=False)
    yield unit
    unit.stop()


def run_panel_process(unit: Unit, display: str, log: Path, *flags: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("SDL_VIDEODRIVER", SIZE_ENV)}
    env |= {"DISPLAY": display, "KIVY_HOME": str(log.parent / "kivy"), "KIVY_NO_ARGS": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "kiosk.ui", "--socket", str(unit.socket),
                                 "--profile", str(unit.profile_path), *flags],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)


def stop_panel(panel: subprocess.Popen[bytes]) -> int:
    panel.send_signal(signal.SIGTERM)
    try:
        return panel.wait(20)
    except subprocess.TimeoutExpired:
        panel.kill()
        return panel.wait()


@pytest.mark.lab
@needs_xvfb
@pytest.mark.parametrize("width, height", [(1024, 600), (1280, 800), (720, 1280)])
def test_full_screen_fills_an_x_screen_without_a_window_manager(headless_unit: Unit, tmp_path: Path,
                                                               width: int, height: int) -> None:
    log = tmp_path / "panel.log"
    with xvfb(width, height, tmp_path / "xvfb.log") as display:
        panel = run_panel_process(headless_unit, display, log, "--fullscreen")
        try:
            first = "touchscreen: first frame in"
            assert wait_until(lambda: first in log.read_text(errors="replace") or panel.poll() is not None, 60, 0.05)
            text = log.read_text(errors="replace")
            # The panel's own word: Kivy's window is the screen's size, full screen, the unit's snapshot drawn.
            assert first in text and f"({width}x{height}, full screen;" in text, text[-3000:]
            img = screen_shot(display, tmp_path / "screen.xwd")
        finally:
            code = stop_panel(panel)
    assert code == 0, log.read_text(errors="replace")[-3000:]
    assert img.shape[:2] == (height, width)
    root = (img == 255).all(axis=2)  # the root window (white) wherever the panel is not
    edges = {"top": root[0], "bottom": root[-1], "left": root[:, 0], "right": root[:, -1]}
    assert not any(edge.all() for edge in edges.values()), {k: bool(v.all()) for k, v in edges.items()}
    assert root.mean() < 0.02, f"{root.mean():.1%} of the screen is not the panel"
    assert "Traceback" not in log.read_text(errors="replace")


@pytest.mark.lab
@needs_xvfb
def test_a_window_has_the_size_asked_for_and_leaves_the_rest_of_the_screen(headless_unit: Unit,
                                                                           tmp_path: Path) -> None:
    log = tmp_path / "panel.log"
    with xvfb(1024, 600, tmp_path / "xvfb.log") as display:
        panel = run_panel_process(headless_unit, display, log, "--size", "800x480")
        try:
            assert wait_until(lambda: "first frame in" in log.read_text(errors="replace") or panel.poll() is not None,
                              60, 0.05)
            text = log.read_text(errors="replace")
            assert "first frame in" in text and "(800x480;" in text, text[-3000:]
            img = screen_shot(display, tmp_path / "screen.xwd")
        finally:
            code = stop_panel(panel)
    assert code == 0
    root = (img == 255).all(axis=2)
    assert abs(root.mean() - (1 - 800 * 480 / (1024 * 600))) < 0.02  # the window, and the root around it


@pytest.mark.lab
@needs_xvfb
def test_kiosk_run_fills_the_x_screen_it_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kiosk run` itself (the unit starting the panel) under X without a window manager fills the screen."""
    from kiosk.ui.supervisor import fullscreen_wanted

    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    monkeypatch.delenv(SIZE_ENV, raising=False)
    with xvfb(1024, 600, tmp_path / "xvfb.log") as display:
        monkeypatch.setenv("DISPLAY", display)
        if not fullscreen_wanted():
            pytest.skip("kiosk.ui.supervisor.fullscreen_wanted() is False under X: `kiosk run` shows a window there")
        sock = tmp_path / "unit" / "control.sock"
        text = lab_profile_toml(listen=f"127.0.0.1:{free_port()}", registrar=f"sip:127.0.0.1:{free_port()}",
                                domain="127.0.0.1", lines=[LabLine("main", "1001", "pw")], socket=sock,
                                recordings=tmp_path / "unit" / "recordings")
        unit = Unit(tmp_path / "unit", text, sock, headless=False, env={"KIVY_HOME": str(tmp_path / "kivy")})
        try:
            unit.start(wait_registered=False)
            assert wait_until(lambda: "first frame in" in unit.log_path.read_text(errors="replace"), 60, 0.05), \
                unit.log_tail()
            assert "(1024x600, full screen;" in unit.log_path.read_text(errors="replace"), unit.log_tail()
            img = screen_shot(display, tmp_path / "screen.xwd")
            assert unit.terminate() == 0
        finally:
            unit.stop()
    assert (img == 255).all(axis=2).mean() < 0.02
