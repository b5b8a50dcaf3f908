"""The touchscreen's latency and cost: tap -> INVITE, INVITE -> banner drawn, `kiosk run` -> first frame, idle CPU.

Method (all on 127.0.0.1, free ports, everything started and stopped here):

- The screen is a real X server, Xvfb (no window manager), at `--screen`
  (default 800x480), on a free display. The unit is `kiosk run` (not
  headless) on a lab profile, one line registered at a `_lab.Wire` (its
  registrar, outbound proxy and far end, which answers 2001): the unit starts
  the panel's own process (`python -m kiosk.ui`) itself, which draws through
  SDL's X11 driver and Mesa's software renderer (llvmpipe: no GPU here).
  Everything measured is that real panel process; nothing of the panel runs
  in the bench.
- What the panel drew comes from the panel process itself: with
  KIOSK_PANEL_PROBE=FILE it writes, right after each buffer swap that shows a
  change of the incoming banner or of the table's rows, the time
  (`time_ns`, CLOCK_REALTIME, comparable across processes) and what was on
  screen (kiosk.ui.app.FrameProbe), and at its first frame every button's
  place on the window.
- (a) Tap on Call -> INVITE: Number set to 2001 over the control socket, then a
  real pointer click (XTest, the X server's own input: X -> SDL -> Kivy's
  loop -> the button) at the centre of the Call button: pressed, held 100 ms
  as a finger is, released; the time runs from just before the release (a
  button acts on release) to the INVITE's arrival at the wire (perf_counter
  here; the kernel's receive stamp against time_ns as a check), and to the
  first frame that shows the new row. Each tap comes after the panel has been
  left alone long enough to slow its loop to the idle frame rate (kiosk.ui.app
  Pace: 10 a second; the press brings it back to 30); the wait for Kivy's
  next frame is part of the figure, as it is of a finger's. The call is
  answered by the wire and hung up over the socket.
  References in the same run: the control socket's `dial` -> INVITE (the same
  unit, no panel in the path) and baresip 1.0's ctrl_tcp `dial` -> INVITE on
  a wire of its own.
- (b) INVITE -> banner drawn: this process sends an INVITE (SDP offer, PCMU)
  from a UDP socket of its own straight to the unit's SIP port; the time runs
  from just before `sendto` to the first frame flipped with the incoming
  banner shown (`panel.banner.shown`) and to the first frame whose table has
  the new row; the call is then cancelled (CANCEL, 487, ACK). Reference: the
  same INVITE to baresip (manual answer) -> its CALL_INCOMING event on
  ctrl_tcp, and the RowChanged of the ringing call at a RemoteDesk in this
  process (a control-socket client, as the panel is).
- (c) `kiosk run` -> first frame: a fresh unit each run; from just before the
  unit's process is spawned to the time of the panel's log line
  "touchscreen: first frame in N ms" (its asctime), which the panel writes
  right after the first buffer swap following the unit's snapshot; N (the
  panel process's own age then) and its steps are shown too.
- (d) Idle CPU with one call ticking: a fresh unit (no probe), one call to 2001
  up and talking (the panel redraws its duration every second), then
  `--seconds` (30) of CPU time (utime + stime of /proc/PID/stat, through psutil)
  of the panel process, the unit and Xvfb; baresip 1.0 with one call up on
  its own wire measured over the same window.
- Samples of (a) and (b) alternate kiosk / reference, so both see the same
  machine load; warm-up samples are not counted. Medians with n and p90
  (nearest rank). A benchmark, not a test: a missed target is said, nothing fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import math
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lab import (
    Baresip,
    BaresipSide,
    KioskSide,
    LabLine,
    Stamp,
    Unit,
    Usage,
    Wire,
    bench_args,
    fmt_ms,
    free_port,
    header,
    lab_dir,
    lab_profile_toml,
    load,
    md_table,
    measure,
    ms,
    settle,
    wait_until,
)

from kiosk.ui.app import (
    IDLE_AFTER,  # no Kivy: the panel's pause before its idle frame rate
)

WARMUP = 2
NUMBER = "2001"  # answered by the wire
TAP_HOLD = 0.100  # a finger's tap
TARGETS = {"tap": 50.0, "banner": 100.0, "frame": 1500.0, "cpu": 2.0}


class Failed(Exception):
    """A sample that did not go as it must (said as a FAIL line; the run goes on)."""


def fail(text: str) -> None:
    print(f"FAIL: {text}", file=sys.stderr, flush=True)


def p90(values: list[float]) -> float:
    """90th percentile, nearest rank."""
    s = sorted(values)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)] if s else math.nan


def stats(values: list[float], digits: int = 1) -> list[str]:
    """[median, p90, n] as table cells."""
    import statistics

    if not values:
        return ["n/a", "n/a", "0"]
    return [fmt_ms(statistics.median(values), digits), fmt_ms(p90(values), digits), str(len(values))]


def median(values: list[float]) -> float:
    import statistics

    return statistics.median(values) if values else math.nan


# --- the X server and its pointer ------------------------------------------------------------


class Xvfb:
    """An X server of its own (Xvfb, no window manager) on a free display number."""

    def __init__(self, width: int, height: int, log: Path) -> None:
        if not shutil.which("Xvfb"):
            raise SystemExit("bench/ui_latency.py needs Xvfb (Debian: apt-get install xvfb)")
        self.width, self.height = width, height
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready = -1
        for n in range(100 + os.getpid() % 400, 1000):
            if Path(f"/tmp/.X11-unix/X{n}").exists():
                continue
            r, w = os.pipe()
            # -noreset: the server would write its number again at each reset (the last client gone).
            with open(log, "ab") as err:
                proc = subprocess.Popen(["Xvfb", f":{n}", "-displayfd", str(w), "-screen", "0",
                                         f"{width}x{height}x24", "-nolisten", "tcp", "-noreset"], pass_fds=(w,),
                                        stdout=subprocess.DEVNULL, stderr=err)
            os.close(w)
            got = b""
            if select.select([r], [], [], 10)[0]:
                got = os.read(r, 16)
            if got.strip() == str(n).encode():
                self.proc, self._ready, self.display = proc, r, f":{n}"
                return
            os.close(r)
            proc.kill()
            proc.wait()
        raise RuntimeError(f"Xvfb did not start; see {log}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            os.close(self._ready)
            self.proc = None


class Pointer:
    """The X server's pointer, moved and clicked through XTest (input as the server's own devices make it)."""

    def __init__(self, display: str) -> None:
        self.x11 = ctypes.CDLL("libX11.so.6")
        self.xtst = ctypes.CDLL("libXtst.so.6")
        self.x11.XOpenDisplay.restype = ctypes.c_void_p
        self.x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        self.x11.XFlush.argtypes = [ctypes.c_void_p]
        self.x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        self.xtst.XTestFakeMotionEvent.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                                   ctypes.c_ulong]
        self.xtst.XTestFakeButtonEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]
        self.dpy = self.x11.XOpenDisplay(display.encode())
        if not self.dpy:
            raise RuntimeError(f"cannot open X display {display}")

    def move(self, x: int, y: int) -> None:
        self.xtst.XTestFakeMotionEvent(self.dpy, -1, x, y, 0)
        self.x11.XFlush(self.dpy)

    def button(self, down: bool) -> None:
        self.xtst.XTestFakeButtonEvent(self.dpy, 1, 1 if down else 0, 0)
        self.x11.XFlush(self.dpy)

    def close(self) -> None:
        self.x11.XCloseDisplay(self.dpy)


# --- what the panel process drew (kiosk.ui.app.FrameProbe) ---------------------------------


@dataclass
class Frame:
    t: int  # time_ns right after the swap
    banner: str  # "1" shown, "0" not, "-" no banner
    banner_rows: tuple[int, ...]
    rows: tuple[int, ...]


class Probe:
    """Reads the probe file the panel process writes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _lines(self) -> list[list[str]]:
        try:
            return [line.split() for line in self.path.read_text().splitlines() if line.strip()]
        except OSError:
            return []

    def frames(self) -> list[Frame]:
        ids = lambda text: tuple(int(x) for x in text.split(",")) if text != "-" else ()
        return [Frame(int(f[1]), f[2], ids(f[3]), ids(f[4])) for f in self._lines() if f[0] == "frame" and len(f) == 5]

    def touches(self) -> list[int]:
        return [int(f[1]) for f in self._lines() if f[0] == "touch" and len(f) == 2]

    def button_centre(self, key: str) -> tuple[int, int] | None:
        """The centre of a button in X screen coordinates (y down), from the last geometry written."""
        window = button = None
        for f in self._lines():
            if f[0] == "window":
                window, button = [int(float(x)) for x in f[1:5]], None
            elif f[0] == "button" and f[1] == key:
                button = [int(float(x)) for x in f[2:6]]
        if window is None or button is None:
            return None
        left, top, _width, height = window
        x, y, w, h = button
        return left + x + w // 2, top + height - (y + h // 2)

    def wait(self, pred: Callable[[Frame], bool], after: int, timeout: float = 5.0) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            for frame in self.frames():
                if frame.t >= after and pred(frame):
                    return frame
            if time.monotonic() > deadline:
                raise Failed(f"no such frame within {timeout} s (last: {self.frames()[-3:]})")
            time.sleep(0.005)


# --- a caller: INVITE from a socket of our own, then CANCEL ------------------------------------


@dataclass
class Sent:
    call_id: str
    branch: str
    tag: str
    uri: str
    mono: int  # monotonic_ns just before sendto (= perf_counter_ns on Linux)
    real: int  # time_ns just before sendto
    responses: list[tuple[int, str]] = field(default_factory=list)  # (status, To tag)


class Caller:
    """A minimal SIP UAC on one UDP socket: an INVITE with an SDP offer to a UA, later a CANCEL (and the ACK of 487)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", free_port(kind="udp")))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.rtp.bind(("127.0.0.1", free_port(kind="udp")))
        self.calls: dict[str, Sent] = {}
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-caller", daemon=True)
        self._thread.start()
        self.dest: tuple[str, int] = ("127.0.0.1", 0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        self.rtp.close()

    def _headers(self, sent: Sent, method: str, to_tag: str = "") -> list[str]:
        to = f"<{sent.uri}>" + (f";tag={to_tag}" if to_tag else "")
        return [f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={sent.branch};rport", "Max-Forwards: 70",
                f'From: "Bench caller" <sip:2999@127.0.0.1>;tag={sent.tag}', f"To: {to}",
                f"Call-ID: {sent.call_id}", f"CSeq: 1 {method}", "User-Agent: kiosk-bench-caller"]

    def invite(self, host: str, port: int, user: str) -> Sent:
        uri = f"sip:{user}@{host}:{port}"
        sent = Sent(uuid.uuid4().hex, "z9hG4bK" + uuid.uuid4().hex[:16], uuid.uuid4().hex[:8], uri, 0, 0)
        sdp = "\r\n".join(["v=0", "o=bench 1 1 IN IP4 127.0.0.1", "s=bench", "c=IN IP4 127.0.0.1", "t=0 0",
                           f"m=audio {self.rtp.getsockname()[1]} RTP/AVP 0 101", "a=rtpmap:0 PCMU/8000",
                           "a=rtpmap:101 telephone-event/8000", "a=sendrecv"]) + "\r\n"
        msg = "\r\n".join([f"INVITE {uri} SIP/2.0", *self._headers(sent, "INVITE"),
                           f"Contact: <sip:2999@127.0.0.1:{self.port}>", "Content-Type: application/sdp",
                           f"Content-Length: {len(sdp)}", "", sdp]).encode()
        with self.cond:
            self.calls[sent.call_id] = sent
        self.dest = (host, port)
        sent.mono, sent.real = time.monotonic_ns(), time.time_ns()
        self.sock.sendto(msg, self.dest)
        if not self._wait(sent, lambda s: any(100 <= c < 200 for c, _ in s.responses), 0.5):
            self.sock.sendto(msg, self.dest)  # once more (not counted differently: said in the FAIL line if so)
            fail(f"INVITE {sent.call_id[:8]}: no provisional response in 0.5 s, sent again")
        return sent

    def cancel(self, sent: Sent, timeout: float = 5.0) -> None:
        msg = "\r\n".join([f"CANCEL {sent.uri} SIP/2.0", *self._headers(sent, "CANCEL"), "Content-Length: 0",
                           "", ""]).encode()
        self.sock.sendto(msg, self.dest)
        if not self._wait(sent, lambda s: any(c >= 300 for c, _ in s.responses), timeout):
            raise Failed(f"no final response to the cancelled INVITE {sent.call_id[:8]}: {sent.responses}")

    def _wait(self, sent: Sent, pred: Callable[[Sent], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(sent):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, src = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode("utf-8", "replace")
            head = text.split("\r\n\r\n", 1)[0].split("\r\n")
            if not head[0].startswith("SIP/2.0 "):
                continue  # a request to us (nothing here expects one)
            code = int(head[0].split()[1])
            fields = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                fields.setdefault(name.strip().lower(), value.strip())
            call_id = fields.get("call-id") or fields.get("i", "")
            cseq = fields.get("cseq", "")
            m = re.search(r";\s*tag=([^;>\s]+)", fields.get("to") or fields.get("t", ""))
            with self.cond:
                sent = self.calls.get(call_id)
                if sent is None:
                    continue
                if cseq.endswith("INVITE"):
                    sent.responses.append((code, m.group(1) if m else ""))
                self.cond.notify_all()
            if cseq.endswith("INVITE") and code >= 300:  # ACK every final failure (and its retransmissions)
                ack = "\r\n".join([f"ACK {sent.uri} SIP/2.0", *self._headers(sent, "ACK", m.group(1) if m else ""),
                                   "Content-Length: 0", "", ""]).encode()
                with contextlib.suppress(OSError):
                    self.sock.sendto(ack, src)


# --- the unit with its panel, under Xvfb ------------------------------------------------------


@contextlib.contextmanager
def environment(set_: dict[str, str], unset: tuple[str, ...]) -> Iterator[None]:
    """This process's environment changed while a child is spawned (the unit's is this one plus its own)."""
    saved = {k: os.environ.get(k) for k in (*set_, *unset)}
    for k in unset:
        os.environ.pop(k, None)
    os.environ.update(set_)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_kiosk(workdir: Path, wire: Wire, x: Xvfb, probe: Path | None = None,
                pycache: Path | None = None) -> tuple[Unit, int, float]:
    """`kiosk run` with the touchscreen on the X server: (the unit, its SIP port, time.time() just before spawning).

    `pycache`: Python keeps the bytecode it compiles there (PYTHONPYCACHEPREFIX), as a unit keeps its
    __pycache__ after its first start; None: every module of the kiosk is compiled again at each start
    (PYTHONDONTWRITEBYTECODE=1 and no __pycache__ in the tree, as in this workplace's sessions and CI).
    """
    sip_port = free_port()
    sock = workdir / "control.sock"
    text = lab_profile_toml(listen=f"127.0.0.1:{sip_port}", registrar=f"sip:{wire.address}", domain="127.0.0.1",
                            proxy=f"sip:{wire.address}", lines=[LabLine("main", "1001", "bench", "Desk")], socket=sock,
                            recordings=workdir / "recordings")
    env = {"DISPLAY": x.display, "KIVY_HOME": str(workdir / "kivy"), "KIVY_NO_ARGS": "1"}
    if probe is not None:
        env["KIOSK_PANEL_PROBE"] = str(probe)
    if pycache is not None:
        change = {"PYTHONPYCACHEPREFIX": str(pycache)}, ("SDL_VIDEODRIVER", "PYTHONDONTWRITEBYTECODE")
    else:
        change = {"PYTHONDONTWRITEBYTECODE": "1"}, ("SDL_VIDEODRIVER", "PYTHONPYCACHEPREFIX")
    unit = Unit(workdir, text, sock, headless=False)
    with environment(*change):
        unit.env = {**env, **change[0]}
        try:
            spawned = time.time()
            unit.start(wait_registered=True, timeout=30)
        except BaseException:
            unit.stop()
            raise
    return unit, sip_port, spawned


_FIRST = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*touchscreen: first frame in (\d+) ms \((.*)\)$")


def first_frame(unit: Unit, timeout: float = 30.0) -> tuple[float, int, str]:
    """(time.time() of the panel's first-frame log line, the panel's own figure in ms, its steps)."""
    found: list[tuple[float, int, str]] = []

    def look() -> bool:
        for line in unit.log_path.read_text(errors="replace").splitlines():
            m = _FIRST.match(line)
            if m:
                at = _dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                found.append((at, int(m.group(2)), m.group(3)))
                return True
        return False

    if not wait_until(look, timeout, 0.02):
        raise Failed(f"no first-frame line in {timeout} s:\n{unit.log_tail(30)}")
    return found[0]


def panel_pid(unit: Unit, timeout: float = 20.0) -> int:
    import psutil

    assert unit.proc is not None and unit.proc.pid is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in psutil.Process(unit.proc.pid).children():
            with contextlib.suppress(psutil.Error):
                if "kiosk.ui" in " ".join(proc.cmdline()):
                    return proc.pid
        time.sleep(0.05)
    raise Failed("the unit started no panel process")


# --- (a) tap -> INVITE, (b) INVITE -> banner ----------------------------------------------------


@dataclass
class Results:
    tap_wire: list[float] = field(default_factory=list)
    tap_kernel: list[float] = field(default_factory=list)
    tap_row: list[float] = field(default_factory=list)
    tap_input: list[float] = field(default_factory=list)  # X release -> Kivy has the touch's end
    touch_wire: list[float] = field(default_factory=list)  # Kivy has it -> INVITE (kernel stamp)
    ctl_wire: list[float] = field(default_factory=list)
    bar_wire: list[float] = field(default_factory=list)
    banner: list[float] = field(default_factory=list)
    row: list[float] = field(default_factory=list)
    event: list[float] = field(default_factory=list)
    bar_incoming: list[float] = field(default_factory=list)
    #: "cached" / "compiled" -> [(spawn -> first frame ms, the panel's own age ms, its steps)]
    startup: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict)
    failures: int = 0
    no_banner: bool = False


class PanelLab:
    """The unit, its panel on the X server, the pointer, the probe, a RemoteDesk following the unit."""

    def __init__(self, work: Path, wire: Wire, x: Xvfb, pycache: Path) -> None:
        from kiosk.profile import load_profile
        from kiosk.ui.remote import RemoteDesk

        self.wire, self.x = wire, x
        self.probe_path = work / "probe.txt"
        self.unit, self.sip_port, _ = start_kiosk(work, wire, x, self.probe_path, pycache)
        self.probe = Probe(self.probe_path)
        first_frame(self.unit)
        self.pointer = Pointer(x.display)
        self.events: list[tuple[int, Any]] = []
        self.cond = threading.Condition()
        self.remote = RemoteDesk(self.unit.socket, load_profile(self.unit.profile_path))
        self.remote.subscribe(self._event)
        self.side = KioskSide(self.unit, wire)
        self.caller = Caller()

    def _event(self, event: Any) -> None:
        t = time.monotonic_ns()
        with self.cond:
            self.events.append((t, event))
            self.cond.notify_all()

    def close(self) -> None:
        self.caller.close()
        self.remote.close()
        self.pointer.close()
        self.unit.stop()

    def request(self, cmd: str, **args: Any) -> dict[str, Any]:
        from kiosk.control import error_message, request

        reply = request(self.unit.socket, cmd, **args)
        if not reply.get("ok"):
            raise Failed(f"the unit refused {cmd} {args}: {error_message(reply)}")
        return reply

    def idle(self) -> None:
        """No call left; the panel has drawn the empty table."""
        self.unit.wait_for(lambda calls: not calls, 10)
        if not wait_until(lambda: not (self.probe.frames() or [Frame(0, "-", (), ())])[-1].rows, 5, 0.01):
            raise Failed(f"the panel still shows rows: {self.probe.frames()[-1:]}")

    def tap(self, key: str) -> Stamp:
        centre = self.probe.button_centre(key)
        if centre is None:
            raise Failed(f"the probe has no place for the {key} button")
        self.pointer.move(*centre)
        time.sleep(0.05)
        self.pointer.button(True)
        time.sleep(TAP_HOLD)
        stamp = Stamp.now()
        self.pointer.button(False)
        return stamp

    def sample_tap(self, res: Results, counted: bool) -> None:
        self.request("set", name="number", value=NUMBER)
        # The panel shows the number, and its loop slows to its idle frame rate (kiosk.ui.app.Pace):
        # the tap comes to a panel nobody has touched for a while, the slower case.
        settle(IDLE_AFTER + 0.5)
        before = set(self.probe.frames()[-1].rows) if self.probe.frames() else set()
        mark = self.wire.mark()
        stamp = self.tap("call")
        try:
            invite = self.wire.wait("INVITE", mark, initial=True, timeout=5)
        except TimeoutError as exc:
            raise Failed(f"tap on Call: no INVITE: {exc}") from exc
        frame = self.probe.wait(lambda f: bool(set(f.rows) - before), stamp.real, 5)
        touch = [t for t in self.probe.touches() if t >= stamp.real]
        self.wire.wait("ACK", mark, call_id=invite.call_id)
        if counted:
            wire_ms, kern_ms = invite.since(stamp)
            res.tap_wire.append(wire_ms)
            res.tap_kernel.append(kern_ms)
            res.tap_row.append(ms(frame.t - stamp.real))
            if touch:
                res.tap_input.append(ms(touch[0] - stamp.real))
                res.touch_wire.append(ms(invite.t_kern - touch[0]))
        settle(0.2)
        self.request("hangup")
        self.idle()

    def sample_ctl(self, res: Results, counted: bool) -> None:
        t = self.side.dial(NUMBER)
        if counted:
            res.ctl_wire.append(t.wire_ms)
        settle(0.2)
        self.side.hangup()
        self.idle()

    def sample_incoming(self, res: Results, counted: bool) -> None:
        from kiosk import events as ev

        with self.cond:
            mark = len(self.events)
        sent = self.caller.invite("127.0.0.1", self.sip_port, "1001")
        row = self.probe.wait(lambda f: len(f.rows) > 0, sent.real, 5)
        banner: Frame | None = None
        if row.banner != "-":
            banner = self.probe.wait(lambda f: f.banner == "1" and bool(f.banner_rows), sent.real, 5)
        else:
            res.no_banner = True
        deadline = time.monotonic() + 5
        t_event = None
        with self.cond:
            while t_event is None:
                for t, e in self.events[mark:]:
                    if isinstance(e, ev.RowChanged) and e.row.get("direction") == "in":
                        t_event = t
                        break
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Failed("no RowChanged of the incoming call at the RemoteDesk")
                    self.cond.wait(left)
        if counted:
            res.row.append(ms(row.t - sent.real))
            if banner is not None:
                res.banner.append(ms(banner.t - sent.real))
            res.event.append(ms(t_event - sent.mono))
        settle(0.2)
        self.caller.cancel(sent)
        self.idle()


def baresip_incoming(phone: Baresip, caller: Caller, res: Results, counted: bool) -> None:
    n = phone.event_count()
    sent = caller.invite("127.0.0.1", phone.sip_port, phone.user)
    got = phone.wait_event("CALL_INCOMING", since=n, timeout=5)
    if counted:
        res.bar_incoming.append((got["_t"] * 1e9 - sent.mono) / 1e6)
    settle(0.2)
    caller.cancel(sent)
    phone.wait_event("CALL_CLOSED", since=n, timeout=5)


# --- (c) spawn -> first frame, (d) idle CPU with one call ---------------------------------------


def startup_runs(work: Path, wire: Wire, x: Xvfb, runs: int, res: Results) -> None:
    """`runs` start-ups with the bytecode cached (after one that fills the cache) and `runs` compiling
    every module, alternating."""
    pycache = work / "pycache"
    plan = [("warm-up", pycache)] + [(kind, pycache if kind == "cached" else None)
                                     for _ in range(runs) for kind in ("cached", "compiled")]
    for i, (kind, cache) in enumerate(plan):
        unit = None
        try:
            unit, _, spawned = start_kiosk(work / f"start{i}", wire, x, pycache=cache)
            at, own, steps = first_frame(unit)
            if kind != "warm-up":
                res.startup.setdefault(kind, []).append(((at - spawned) * 1000, float(own), steps))
        except Exception as exc:  # noqa: BLE001  (a failed start is said and counted)
            res.failures += 1
            fail(f"start-up run {i} ({kind}): {exc}")
        finally:
            if unit is not None:
                unit.stop()
        print(f"start-up run {i + 1}/{len(plan)} done", file=sys.stderr, flush=True)


def idle_with_a_call(work: Path, wire: Wire, bwire: Wire, x: Xvfb, phone: Baresip,
                     seconds: float) -> list[dict[str, float]]:
    """CPU of (panel process, unit, Xvfb, baresip) over the same window, each with one call up."""
    unit, _, _ = start_kiosk(work / "idle", wire, x, pycache=work / "pycache")
    try:
        first_frame(unit)
        child = panel_pid(unit)
        KioskSide(unit, wire).dial(NUMBER)
        BaresipSide(phone, bwire).dial(NUMBER)
        time.sleep(5)  # the calls settle (media up, the first redraws)
        assert unit.proc is not None and unit.proc.pid is not None and x.proc is not None and phone.pid
        got = measure([Usage(child), Usage(unit.proc.pid), Usage(x.proc.pid), Usage(phone.pid)], seconds)
        calls = unit.request("calls")["data"]["calls"]
        if [c["state"] for c in calls] != ["talking"]:
            raise Failed(f"the kiosk's call did not stay up: {calls}")
        if "panel process ended" in unit.log_path.read_text():
            raise Failed(f"the panel process did not stay up:\n{unit.log_tail()}")
        with contextlib.suppress(Exception):
            phone.command("hangup")
        return got
    finally:
        unit.stop()


# --- main --------------------------------------------------------------------------------------


@contextlib.contextmanager
def xserver(work: Path, width: int, height: int) -> Iterator[Xvfb]:
    x = Xvfb(width, height, work / "xvfb.log")
    try:
        yield x
    finally:
        x.stop()


def main() -> int:
    def extra(parser: Any) -> None:
        parser.add_argument("--screen", default="800x480", help="the X server's screen, WxH (default 800x480)")
        parser.add_argument("--runs", type=int, default=10, help="`kiosk run` start-ups timed (default 10)")
        parser.add_argument("--only", choices=("tap", "incoming", "startup", "idle"), action="append",
                            help="run only these parts (repeatable)")

    args = bench_args(__doc__, calls=30, seconds=30, extra=extra)
    width, height = (int(v) for v in args.screen.lower().split("x"))
    parts = set(args.only or ("tap", "incoming", "startup", "idle"))
    load0 = load()
    res = Results()
    cpu: list[dict[str, float]] = []
    with lab_dir("ui-latency", args.keep) as work, contextlib.ExitStack() as stack:
        x = stack.enter_context(xserver(work, width, height))
        kwire = stack.enter_context(Wire("kiosk"))
        bwire = stack.enter_context(Wire("baresip"))
        phone = Baresip(work / "baresip", user="1001", password="bench", registrar=bwire.address, tone_hz=440,
                        auto_answer=False)
        stack.callback(phone.stop)
        phone.start()
        bside = BaresipSide(phone, bwire)
        if "startup" in parts:
            startup_runs(work, kwire, x, args.runs, res)
        if "idle" in parts:
            try:
                cpu = idle_with_a_call(work, kwire, bwire, x, phone, args.seconds)
            except Exception as exc:  # noqa: BLE001  (a failed part is said and counted; the rest goes on)
                res.failures += 1
                fail(f"idle CPU: {exc}")
            with contextlib.suppress(Exception):
                phone.command("hangup")
        if parts & {"tap", "incoming"}:
            lab = PanelLab(work / "panel", kwire, x, work / "pycache")
            stack.callback(lab.close)
            started = time.monotonic()
            for i in range(WARMUP + args.calls):
                counted = i >= WARMUP
                steps: list[tuple[str, Callable[..., None]]] = []
                if "tap" in parts:
                    steps += [("tap", lambda c=counted: lab.sample_tap(res, c)),
                              ("ctl dial", lambda c=counted: lab.sample_ctl(res, c)),
                              ("baresip dial", lambda c=counted: _baresip_dial(bside, res, c))]
                if "incoming" in parts:
                    steps += [("incoming", lambda c=counted: lab.sample_incoming(res, c)),
                              ("baresip incoming", lambda c=counted: baresip_incoming(phone, lab.caller, res, c))]
                for name, step in steps:
                    try:
                        step()
                    except (Failed, TimeoutError, AssertionError, RuntimeError) as exc:
                        res.failures += 1
                        fail(f"round {i}: {name}: {exc}")
                        with contextlib.suppress(Exception):
                            _reset(lab, phone)
                    settle()
                print(f"round {i + 1}/{WARMUP + args.calls} done ({time.monotonic() - started:.0f} s)",
                      file=sys.stderr, flush=True)
    report(args, res, cpu, load0, width, height)
    return 0


def _baresip_dial(side: BaresipSide, res: Results, counted: bool) -> None:
    t = side.dial(NUMBER)
    if counted:
        res.bar_wire.append(t.wire_ms)
    settle(0.2)
    side.hangup()


def _reset(lab: PanelLab, phone: Baresip) -> None:
    from kiosk.control import request

    for _ in range(10):
        calls = request(lab.unit.socket, "calls")["data"]["calls"]
        if not calls:
            break
        for row in calls:
            request(lab.unit.socket, "select", rows=[row["id"]])
            request(lab.unit.socket, "hangup")
        time.sleep(0.5)
    with contextlib.suppress(Exception):
        phone.command("hangup")


def report(args: Any, res: Results, cpu: list[dict[str, float]], load0: str, width: int, height: int) -> None:
    print(header(f"Touchscreen latency and cost, Xvfb {width}x{height} (no window manager), Mesa llvmpipe", load0))
    rows: list[list[str]] = []

    def row(label: str, values: list[float], target: str = "", digits: int = 1) -> None:
        rows.append([label, *stats(values, digits), target])

    if res.tap_wire or res.ctl_wire:
        row("(a) tap on Call (X pointer, 100 ms press) -> INVITE at the wire", res.tap_wire, "<= 50 ms")
        row("    same, kernel receive stamp", res.tap_kernel)
        row("    of it: the release -> Kivy's loop has it (the wait for its next frame)", res.tap_input)
        row("    of it: Kivy has the release -> INVITE (kernel stamp)", res.touch_wire)
        row("    tap on Call -> the dialling row drawn (frame flipped)", res.tap_row)
        row("    reference: control socket `dial` -> INVITE (same unit)", res.ctl_wire)
        row("    reference: baresip ctrl_tcp `dial` -> INVITE", res.bar_wire)
    if res.row or res.banner:
        banner = "n/a: this panel has no banner" if res.no_banner else ""
        if banner:
            rows.append(["(b) INVITE at the unit -> incoming banner drawn", banner, "", "0", "<= 100 ms"])
        else:
            row("(b) INVITE at the unit -> incoming banner drawn (frame flipped)", res.banner, "<= 100 ms")
        row("    INVITE at the unit -> its row drawn (frame flipped)", res.row)
        row("    INVITE -> RowChanged at a control-socket client (RemoteDesk)", res.event)
        row("    reference: INVITE at baresip -> its CALL_INCOMING event", res.bar_incoming)
    for kind, words in (("cached", "bytecode cached, as on a unit after its first start"),
                        ("compiled", "every kiosk module compiled at start (PYTHONDONTWRITEBYTECODE=1, as here)")):
        got = res.startup.get(kind, [])
        if got:
            row(f"(c) `kiosk run` spawned -> first full frame, {words}", [g[0] for g in got], "<= 1500 ms", 0)
            row("    the panel process's own age at its first frame", [g[1] for g in got], "", 0)
    print(md_table(["ms", "median", "p90", "n", "target"], rows))
    for kind, got in res.startup.items():
        print()
        print(f"Panel start-up steps, median run ({kind}), ms since the panel process started: "
              + sorted(got)[len(got) // 2][2].split("; ", 1)[-1].replace("ms since the process started: ", ""))
    if cpu:
        p, u, xs, b = cpu
        print()
        print(md_table(
            [f"one call up, {args.seconds:g} s", "panel process", "unit (kiosk run)", "Xvfb", "baresip 1.0 (1 call)"],
            [["CPU, % of one core", *(f"{c['cpu']:.2f}" for c in (p, u, xs, b))],
             ["  user / system", *(f"{c['user']:.2f} / {c['system']:.2f}" for c in (p, u, xs, b))],
             ["wake-ups / s", *(f"{c['wakeups']:.0f}" for c in (p, u, xs, b))],
             ["USS, MB", *(f"{c['uss']:.1f}" for c in (p, u, xs, b))]]))
    print()
    verdicts = []
    spawn = [g[0] for g in res.startup.get("cached", [])]
    for key, values, unit_ in (("tap", res.tap_wire, "ms"), ("banner", res.banner, "ms"), ("frame", spawn, "ms")):
        if values:
            m = median(values)
            verdicts.append(f"{key} {m:.0f} {unit_} (<= {TARGETS[key]:g}): **{'met' if m <= TARGETS[key] else 'MISSED'}**")
    if cpu:
        verdicts.append(f"panel CPU {cpu[0]['cpu']:.2f} % (<= {TARGETS['cpu']:g}): "
                        f"**{'met' if cpu[0]['cpu'] <= TARGETS['cpu'] else 'MISSED'}**")
    print("Targets: " + "; ".join(verdicts) + f". Samples failed: {res.failures}. CPU times come in 10 ms ticks.")


if __name__ == "__main__":
    sys.exit(main())
