"""Hang-up overtaking a pending action: trigger -> CANCEL on the wire, from the touchscreen, a GPIO key and the socket.

Method (all on 127.0.0.1, free ports, everything started and stopped here):

- The unit is `kiosk run --headless` as its own process, one line registered
  at a `_lab.Wire` (its registrar, outbound proxy and far end). The wire
  answers B (2001) and only rings (100, 180, never 200) for the pickup's
  `*82004` (the profile's [pickup] prefix + 2004), the consult target 3003 and
  the conference's next party 4004; a CANCEL gets 200 and the INVITE 487.
  A request's arrival at the wire is the request leaving the UA.
- Three pending actions, each left pending when the Hang up comes:
  (1) `pickup 2004` with nothing else on the desk: the desk waits up to 8 s
  for the answer (the command has not ended); (2) B talking, then a short press
  of the Transfer key (`transfer next` = consult, Number 3003): B held, C rings;
  (3) B talking, the Conference key (Number 4004): B held, C rings, the
  three-party conference's pending step. The desk selects the ringing row.
- Three triggers of Hang up on that row: (a) the touchscreen: a Panel in this
  process drawn by SDL's offscreen driver, its DeskFrontend on a RemoteDesk
  connected to the unit's socket (the panel process's path), a synthetic touch
  on the Hang up button, held 100 ms as a finger's tap is; the time starts at
  the touch's release (the button acts on release) and the rest of that frame
  is drawn right after, as Kivy's loop does; (b) a GPIO key: hw.buttons.Buttons on the same RemoteDesk with gpiozero
  MockFactory pins, `drive_low()` on the hangup pin; (c) the control socket:
  one `kiosk.control.request(socket, "hangup")`. Time: trigger -> CANCEL of the
  ringing INVITE at the wire.
- GPIO press -> INVITE: the press of the Transfer key (released at once: a
  short press is known at its release) or the Conference key in (2) and (3),
  to the new call's INVITE at the wire (after the hold re-INVITE of B, which
  the desk sends first).
- "Never behind the pending action", checked on the desk's events as the
  RemoteDesk delivers them (stamped on arrival here), every miss a FAIL line
  (the run goes on): (i) the Hang up overtook the action: nothing of it (its
  row's removal, the pickup command's final event) came before the trigger,
  what ended it was our CANCEL (the row ends "487 Request Terminated", the
  pickup fails with that reason, not "no answer in 8 s"), and no other call
  ended: for (2)/(3) B stays, held, and is taken back with `connect`;
  (ii) noted, not failed: whether the row's end reached this process before
  the CANCEL reached the wire. pjsua reports a hung-up call DISCONNECTED
  inside Call.hangup(), before it sends the CANCEL, so the row's end, caused
  by this very Hang up, may arrive first; that is no sign of waiting.
- Where the time goes: `kiosk.ui.remote.request` is wrapped here to stamp when
  the touchscreen's or the keys' RemoteDesk calls it (trigger -> request in
  this process, request -> CANCEL in the unit), and the tap's release plus
  the frame drawn after it is timed. Diagnosis only (not for the figures):
  `--no-frame-after-tap`, `--unit-switch-interval S`, `--here-switch-interval S`,
  `--verbose` (the unit's debug log, with `--keep`).
- baresip 1.0 in the same run on a wire of its own: ctrl_tcp `dial` of a number
  that only rings (-> INVITE), then `hangup` (-> CANCEL). One baresip sample
  follows each kiosk sample, so both see the same machine load; the order of
  the three triggers rotates each round; warm-up rounds are not counted.
- Times are `perf_counter_ns` in this process from the trigger to the moment
  the wire's thread has the datagram; the kernel's receive stamp
  (SO_TIMESTAMPNS) against `time_ns` at the trigger is shown as a check.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
if "KIVY_HOME" not in os.environ:  # Kivy's config and logs: not in ~/.kivy, and gone afterwards
    os.environ["KIVY_HOME"] = tempfile.mkdtemp(prefix="kb-overtake-kivy-")
    atexit.register(shutil.rmtree, os.environ["KIVY_HOME"], True)

import contextlib  # noqa: E402
import math  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lab import (  # noqa: E402
    Arrival, Baresip, LabLine, Stamp, Unit, Wire, bench_args, fmt_ms, free_port, header, lab_dir,
    lab_profile_toml, load, md_table, ms, ratio, settle, summary,
)

from kiosk import events as ev  # noqa: E402
from kiosk.control import error_message, request  # noqa: E402
from kiosk.profile import Gpio, load_profile  # noqa: E402

WARMUP = 2
B = "2001"  # answered by the wire
PICKUP = "2004"  # the extension picked up: "*82004" rings at the wire
CONSULT = "3003"  # the consult target: rings
NEXT_PARTY = "4004"  # the conference's next party: rings
BARESIP_RINGS = "3003"
RING_ONLY = ("*8" + PICKUP, CONSULT, NEXT_PARTY)
PINS = Gpio(hold=5, connect=6, transfer=13, conference=16, record=19, answer=20, hangup=21,
            led_ringing=23, led_recording=24)
ACTIONS = ("pickup", "consult", "conference")
#: How long the synthetic touch stays down: a finger's tap. Kivy's button shows its release at once only
#: after min_state_time (35 ms); a shorter touch would leave the frame after the release nothing to redraw.
TAP_HOLD = 0.100
TRIGGERS = ("touch", "gpio", "socket")
ACTION_WORDS = {"pickup": "pending pickup (nothing answers)", "consult": "consultation ringing (B held)",
                "conference": "conference's next party ringing (B held)"}
TRIGGER_WORDS = {"touch": "touchscreen tap", "gpio": "GPIO key", "socket": "control socket"}


class Failed(Exception):
    """A sample that did not go as it must (said as a FAIL line; the lab is then reset)."""


def fail(text: str) -> None:
    print(f"FAIL: {text}", flush=True)


# --- the touchscreen in this process ----------------------------------------------------------


class Screen:
    """Kivy on SDL's offscreen driver, set up as tests/test_ui_panel.py does, with the panel's own settings."""

    def __init__(self) -> None:
        from kiosk.ui.app import configure_kivy

        configure_kivy(fullscreen=False)  # maxfps 30, as the panel process runs
        from kivy.base import EventLoop
        from kivy.clock import Clock
        from kivy.lang import Builder

        EventLoop.ensure_window()
        from kivy.core.window import Window

        self.loop, self.clock, self.builder, self.window = EventLoop, Clock, Builder, Window
        self.panel: Any = None
        self.draws: list[float] = []  # ms the frame after each tap took to draw (holding the GIL meanwhile)
        self.frame_after_tap = True  # diagnosis: False leaves the frame out (the main thread waits at once)

    def show(self, remote: Any) -> Any:
        from kiosk.ui.frontend import DeskFrontend
        from kiosk.ui.panel import Panel

        frontend = DeskFrontend(remote, lambda fn: self.clock.schedule_once(lambda dt: fn(), 0))
        self.panel = Panel(frontend, remote.profile)
        self.window.add_widget(self.panel)
        self.panel.start()
        self.pump()
        return self.panel

    def pump(self, frames: int = 200) -> None:
        """Run Kivy's loop until the panel has shown every event handed to it."""
        fe = self.panel.frontend
        for _ in range(frames):
            self.loop.idle()
            if fe.in_flight == 0 and fe._queue.empty():
                break
        self.loop.idle()

    def draw(self) -> None:
        """What Kivy's loop does after dispatching input in the same frame: sync and draw."""
        self.clock.tick_draw()
        self.builder.sync()
        if self.window.canvas.needs_redraw:
            self.window.dispatch("on_draw")
            self.window.dispatch("on_flip")

    def tap_hangup(self) -> Stamp:
        """A synthetic touch on Hang up: down for TAP_HOLD (Kivy's loop running), then the release (timed),
        then the rest of that frame (drawing), as Kivy's loop does after dispatching input."""
        from kivy.tests.common import UnitTestTouch

        button = self.panel.buttons["hangup"]
        x, y = button.to_window(*button.center)
        touch = UnitTestTouch(x, y)
        touch.touch_down()
        held = time.monotonic() + TAP_HOLD
        while time.monotonic() < held:
            self.loop.idle()
        stamp = Stamp.now()
        touch.touch_up()  # on_release: frontend.act("hangup") -> the worker -> RemoteDesk -> socket
        if self.frame_after_tap:
            self.draw()
        self.draws.append(ms(time.perf_counter_ns() - stamp.perf))
        return stamp

    def close(self) -> None:
        if self.panel is not None:
            self.panel.close()
            self.window.remove_widget(self.panel)
            self.loop.idle()


# --- desk events, as the RemoteDesk delivers them, stamped ---------------------------------


class Recorder:
    """Every desk event the RemoteDesk delivers, with the perf_counter_ns it reached this process."""

    def __init__(self) -> None:
        self.events: list[tuple[int, ev.Event]] = []
        self.cond = threading.Condition()

    def __call__(self, event: ev.Event) -> None:
        t = time.perf_counter_ns()
        with self.cond:
            self.events.append((t, event))
            self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def wait(self, pred: Callable[[ev.Event], bool], since: int, timeout: float = 5.0,
             what: str = "event") -> tuple[int, ev.Event]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, e in self.events[since:]:
                    if pred(e):
                        return t, e
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [e.kind for _, e in self.events[since:]][-12:]
                    raise Failed(f"no {what} within {timeout} s (last events: {seen})")
                self.cond.wait(left)

    def before(self, pred: Callable[[ev.Event], bool], since: int, t_limit: int) -> list[ev.Event]:
        """Events matching pred that reached this process before t_limit (perf_counter_ns)."""
        with self.cond:
            return [e for t, e in self.events[since:] if t < t_limit and pred(e)]


def row_state(row_id: int, *states: str) -> Callable[[ev.Event], bool]:
    return lambda e: isinstance(e, ev.RowChanged) and e.row.get("id") == row_id and e.row.get("state") in states


def row_removed(row_id: int) -> Callable[[ev.Event], bool]:
    return lambda e: isinstance(e, ev.RowRemoved) and e.row_id == row_id


def command_ended(command: int) -> Callable[[ev.Event], bool]:
    return lambda e: isinstance(e, (ev.ActionDone, ev.ActionFailed)) and e.command == command


# --- the kiosk side --------------------------------------------------------------------------


@dataclass
class Sample:
    """One Hang up timed: trigger -> CANCEL at the wire, on both clocks; trigger -> `request()` called here."""

    wire: float
    kernel: float
    sent: float  # ms from the trigger until this process called kiosk.control.request (0 for the socket)
    frame: float = math.nan  # touchscreen: ms the tap's release and the frame drawn after it took


class KioskLab:
    """The unit on its wire; the panel, the keys and the socket as three ways of pressing Hang up."""

    def __init__(self, unit: Unit, wire: Wire, screen: Screen) -> None:
        from gpiozero.pins.mock import MockFactory

        from hw.buttons import Buttons
        from kiosk.ui.remote import RemoteDesk

        self.unit, self.wire, self.screen = unit, wire, screen
        self.remote = RemoteDesk(unit.socket, load_profile(unit.profile_path))
        self.recorder = Recorder()
        self.remote.subscribe(self.recorder)
        self.panel = screen.show(self.remote)
        self.factory = MockFactory()
        self.buttons = Buttons(self.remote, PINS, pin_factory=self.factory)
        self.b_row: int | None = None
        self.b_call = ""
        self.checks = 0
        self.check_failures = 0
        self.literal = 0  # samples whose pending action still existed on the desk when the CANCEL arrived
        self.literal_checks = 0
        self.leads: list[float] = []  # ms by which the row's removal reached this process before the CANCEL
        self.byes: list[Sample] = []
        # When the touchscreen's / keys' RemoteDesk calls kiosk.control.request: only a stamp, in this process.
        import kiosk.ui.remote as remote_module

        self.sent: list[tuple[str, int]] = []
        plain = remote_module.request

        def stamped(path: Any, cmd: str, /, **kw: Any) -> dict[str, Any]:
            self.sent.append((cmd, time.perf_counter_ns()))
            return plain(path, cmd, **kw)

        remote_module.request = stamped  # type: ignore[assignment]

    def close(self) -> None:
        import kiosk.ui.remote as remote_module

        self.buttons.close()
        self.screen.close()
        self.remote.close()
        remote_module.request = request  # the wrapper's original (kiosk.ui.remote imports it from kiosk.control)

    # -- small steps -------------------------------------------------------

    def ctl(self, cmd: str, wait: bool = False, **args: Any) -> dict[str, Any]:
        reply = request(self.unit.socket, cmd, wait=wait, **args)
        if not reply.get("ok"):
            raise Failed(f"the unit refused {cmd} {args}: {error_message(reply)}")
        return reply

    def check(self, ok: bool, text: str) -> None:
        self.checks += 1
        if not ok:
            self.check_failures += 1
            fail(text)

    def press(self, pin: int | None) -> Stamp:
        """A short press of a GPIO key (released at once); the stamp is taken before the press."""
        assert pin is not None
        stamp = Stamp.now()
        self.factory.pin(pin).drive_low()
        self.factory.pin(pin).drive_high()
        return stamp

    def trigger(self, how: str) -> Stamp:
        if how == "touch":
            return self.screen.tap_hangup()
        if how == "gpio":
            return self.press(PINS.hangup)
        stamp = Stamp.now()
        reply = request(self.unit.socket, "hangup")
        if not reply.get("ok"):
            raise Failed(f"the unit refused hangup: {error_message(reply)}")
        return stamp

    def idle_panel(self) -> None:
        """The panel shows every event so far; the keys have nothing in flight."""
        self.screen.pump()
        self.buttons.idle()

    # -- B ------------------------------------------------------------------

    def call_b(self) -> None:
        mark, rmark = self.wire.mark(), self.recorder.mark()
        row = self.ctl("dial", number=B)["data"]["row"]
        invite = self.wire.wait("INVITE", mark, initial=True)
        self.wire.wait("ACK", mark, call_id=invite.call_id)
        self.recorder.wait(row_state(row, "talking"), rmark, what=f"row {row} talking")
        self.b_row, self.b_call = row, invite.call_id

    def hangup_b(self) -> Sample | None:
        """Hang up the talking B from the control socket: the reference (trigger -> BYE), as dial_latency.py."""
        if self.b_row is None:
            return None
        self.ctl("select", rows=[self.b_row])
        self.idle_panel()
        settle()
        mark, rmark = self.wire.mark(), self.recorder.mark()
        stamp = Stamp.now()
        self.ctl("hangup")
        bye = self.wire.wait("BYE", mark, call_id=self.b_call)
        self.recorder.wait(row_removed(self.b_row), rmark, what="B's row removed")
        self.b_row = None
        self.idle_panel()
        return Sample(*bye.since(stamp), 0.0)

    def back_to_b(self, rmark: int) -> None:
        """After the consultation / next party was cancelled: B selected again, connected, talking."""
        assert self.b_row is not None
        self.recorder.wait(lambda e: isinstance(e, ev.SelectionChanged) and tuple(e.rows) == (self.b_row,),
                           rmark, what="the selection back on B")
        rmark = self.recorder.mark()
        self.ctl("connect", wait=True)
        self.recorder.wait(row_state(self.b_row, "talking"), rmark, what="B talking again")

    # -- the pending actions -------------------------------------------------

    def pending_pickup(self) -> tuple[int, int, Arrival]:
        """`pickup 2004`, ringing: (row, command, the ringing INVITE)."""
        mark, rmark = self.wire.mark(), self.recorder.mark()
        reply = self.ctl("pickup", number=PICKUP)
        if not reply.get("pending"):
            raise Failed(f"pickup was not pending: {reply}")
        row = reply["data"]["row"]
        command = reply.get("command", reply["data"].get("command"))  # beside the data (or in it, before 9a2feae)
        invite = self.wire.wait("INVITE", mark, initial=True)
        if invite.user != "*8" + PICKUP:
            raise Failed(f"pickup dialled {invite.user!r}")
        self.recorder.wait(row_state(row, "ringing"), rmark, what=f"pickup row {row} ringing")
        return row, command, invite

    def pending_via_key(self, kind: str) -> tuple[int, Arrival, float, float]:
        """Consult (Transfer key) or next party (Conference key) from B, ringing:
        (the ringing row, its INVITE, press -> INVITE ms on both clocks)."""
        number = CONSULT if kind == "consult" else NEXT_PARTY
        self.ctl("set", name="number", value=number)
        self.idle_panel()
        mark, rmark = self.wire.mark(), self.recorder.mark()
        stamp = self.press(PINS.transfer if kind == "consult" else PINS.conference)
        invite = self.wire.wait("INVITE", mark, initial=True)
        if invite.user != number:
            raise Failed(f"{kind} key dialled {invite.user!r}")
        hold = [a for a in self.wire.arrivals[mark:] if a.method == "INVITE" and a.call_id == self.b_call]
        self.check(bool(hold) and hold[0].direction == "sendonly" and hold[0].t_perf < invite.t_perf,
                   f"{kind}: B's hold re-INVITE (a=sendonly) was not before the new INVITE")
        _, changed = self.recorder.wait(
            lambda e: isinstance(e, ev.RowChanged) and number in str(e.row.get("remote")) and e.row["state"] == "ringing",
            rmark, what=f"{kind} row ringing")
        assert isinstance(changed, ev.RowChanged)
        return int(changed.row["id"]), invite, *invite.since(stamp)

    # -- one sample ----------------------------------------------------------

    def sample(self, action: str, how: str, key_times: dict[str, list[tuple[float, float]]]) -> Sample:
        command = None
        setup_mark = self.recorder.mark()
        if action == "pickup":
            row, command, invite = self.pending_pickup()
        else:
            row, invite, press_ms, press_k = self.pending_via_key(action)
            key_times[action].append((press_ms, press_k))
        settle()
        self.idle_panel()
        mark, rmark = self.wire.mark(), self.recorder.mark()
        nsent = len(self.sent)
        stamp = self.trigger(how)
        try:
            cancel = self.wire.wait("CANCEL", mark, call_id=invite.call_id)
        except TimeoutError as exc:
            raise Failed(f"{action}/{how}: no CANCEL of the ringing INVITE: {exc}") from exc
        wire_ms, kern_ms = cancel.since(stamp)
        sent = [t for cmd, t in self.sent[nsent:] if cmd == "hangup"]
        sent_ms = ms(sent[0] - stamp.perf) if sent else (0.0 if how == "socket" else float("nan"))
        where = f"{action}/{how}"
        others = [a for a in self.wire.arrivals[mark:] if a.method in ("BYE", "CANCEL") and a.call_id != invite.call_id]
        self.check(not others, f"{where}: the Hang up also ended another call: {others}")

        def ended(e: ev.Event) -> bool:
            return row_removed(row)(e) or (command is not None and command_ended(command)(e))

        # The Hang up overtook the pending action: nothing of it had ended before the trigger (since it was
        # set up), and what ended it was this Hang up (our CANCEL's 487), not an answer or its own timeout.
        self.check(not self.recorder.before(ended, setup_mark, stamp.perf),
                   f"{where}: the pending action had ended before the Hang up was pressed")
        t_removed, removed = self.recorder.wait(row_removed(row), rmark, what=f"row {row} removed")
        assert isinstance(removed, ev.RowRemoved)
        self.check("487" in removed.reason, f"{where}: row {row} ended with {removed.reason!r}, not our CANCEL's 487")
        if command is not None:
            _, end = self.recorder.wait(command_ended(command), rmark, what=f"pickup command {command} ended")
            self.check(isinstance(end, ev.ActionFailed) and end.code == "pickup_failed" and "487" in str(end.params),
                       f"{where}: the pickup ended as {end}, not by our CANCEL")
        else:
            self.check(not self.recorder.before(row_removed(self.b_row or -1), setup_mark, time.perf_counter_ns()),
                       f"{where}: B's call ended with the consultation / next party")
            self.back_to_b(rmark)
        # Noted, not failed: whether the row's end reached this process before its CANCEL reached the wire.
        # pjsua reports the hung-up call DISCONNECTED inside Call.hangup(), before it sends the CANCEL,
        # so the row's end (caused by this very Hang up) may overtake the CANCEL; that says nothing
        # about the Hang up waiting behind the pending action, which the checks above prove.
        self.literal_checks += 1
        early = self.recorder.before(ended, rmark, cancel.t_perf)
        if early:
            self.leads.append(ms(cancel.t_perf - t_removed))
        else:
            self.literal += 1
        self.idle_panel()
        return Sample(wire_ms, kern_ms, sent_ms, self.screen.draws[-1] if how == "touch" else math.nan)

    def reset(self) -> None:
        """After a failed sample: hang up whatever is left, then B is called again when needed."""
        for _ in range(10):
            calls = request(self.unit.socket, "calls")["data"]["calls"]
            if not calls:
                break
            for row in calls:
                request(self.unit.socket, "select", rows=[row["id"]])
                request(self.unit.socket, "hangup")
            time.sleep(0.5)
        self.b_row = None
        self.idle_panel()


# --- the baresip side ------------------------------------------------------------------------


class BaresipRinging:
    """baresip on its wire: ctrl_tcp `dial` of a number that only rings, then `hangup` -> CANCEL."""

    def __init__(self, phone: Baresip, wire: Wire) -> None:
        self.phone, self.wire = phone, wire

    def sample(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((dial -> INVITE), (hangup -> CANCEL)), each as (perf ms, kernel ms)."""
        mark, n = self.wire.mark(), self.phone.event_count()
        stamp = Stamp.now()
        reply = self.phone.command("dial", f"sip:{BARESIP_RINGS}@{self.wire.address}")
        if not reply.get("ok"):
            raise Failed(f"baresip refused dial: {reply.get('data')}")
        invite = self.wire.wait("INVITE", mark, initial=True)
        dial = invite.since(stamp)
        self.phone.wait_event("CALL_RINGING", since=n)
        settle()
        mark, n = self.wire.mark(), self.phone.event_count()
        stamp = Stamp.now()
        reply = self.phone.command("hangup")
        if not reply.get("ok"):
            raise Failed(f"baresip refused hangup: {reply.get('data')}")
        cancel = self.wire.wait("CANCEL", mark, call_id=invite.call_id)
        self.phone.wait_event("CALL_CLOSED", since=n)
        return dial, cancel.since(stamp)


# --- lab start-up ------------------------------------------------------------------------------


def start_kiosk(workdir: Path, wire: Wire, verbose: bool, switch_interval: float | None = None) -> Unit:
    """As _lab.start_unit; `verbose`: the unit runs as `kiosk -v run` (debug log, per-step timestamps);
    `switch_interval` (diagnosis only): the unit's sys.setswitchinterval, in seconds."""
    sock = workdir / "control.sock"
    text = lab_profile_toml(listen=f"127.0.0.1:{free_port()}", registrar=f"sip:{wire.address}", domain="127.0.0.1",
                            proxy=f"sip:{wire.address}", lines=[LabLine("main", "1001", "bench")], socket=sock,
                            recordings=workdir / "recordings")
    prefix: list[str] = []
    if verbose or switch_interval is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        shim = workdir / "shim.py"  # [python, -m, kiosk.cli, run, ...] -> kiosk [-v] run ...
        flags = ["-v"] if verbose else []
        shim.write_text("import sys\n"
                        + (f"sys.setswitchinterval({switch_interval!r})\n" if switch_interval is not None else "")
                        + f"from kiosk.cli import main\nsys.exit(main([*{flags!r}, *sys.argv[4:]]))\n")
        prefix = [sys.executable, str(shim)]
    unit = Unit(workdir, text, sock, headless=True, argv_prefix=prefix)
    try:
        unit.start(wait_registered=True, timeout=30)
    except BaseException:
        unit.stop()
        raise
    return unit


def main() -> int:
    def extra(parser: Any) -> None:
        parser.add_argument("--verbose", action="store_true", help="run the unit with debug logging (with --keep)")
        parser.add_argument("--unit-switch-interval", type=float, metavar="S",
                            help="diagnosis only: the unit's sys.setswitchinterval (CPython's default 0.005)")
        parser.add_argument("--here-switch-interval", type=float, metavar="S",
                            help="diagnosis only: this process's (the panel's and keys') sys.setswitchinterval")
        parser.add_argument("--no-frame-after-tap", action="store_true",
                            help="diagnosis only: do not draw the frame Kivy draws right after the tap")

    args = bench_args(__doc__, calls=30, extra=extra)
    if args.here_switch_interval is not None:
        sys.setswitchinterval(args.here_switch_interval)
    load0 = load()
    hangups: dict[tuple[str, str], list[Sample]] = {(a, t): [] for a in ACTIONS for t in TRIGGERS}
    keys: dict[str, list[tuple[float, float]]] = {"consult": [], "conference": []}
    b_dial: list[tuple[float, float]] = []
    b_cancel: list[tuple[float, float]] = []
    failures = 0
    screen = Screen()
    screen.frame_after_tap = not args.no_frame_after_tap
    started = time.monotonic()
    with lab_dir("overtake", args.keep) as work, contextlib.ExitStack() as stack:
        kwire = stack.enter_context(Wire("kiosk", ring_only=RING_ONLY))
        bwire = stack.enter_context(Wire("baresip", ring_only=(BARESIP_RINGS,)))
        unit = start_kiosk(work / "unit", kwire, args.verbose, args.unit_switch_interval)
        stack.callback(unit.stop)
        phone = Baresip(work / "baresip", user="1001", password="bench", registrar=bwire.address, tone_hz=440)
        stack.callback(phone.stop)
        phone.start()
        lab = KioskLab(unit, kwire, screen)
        stack.callback(lab.close)
        peer = BaresipRinging(phone, bwire)

        for i in range(WARMUP + args.calls):
            counted = i >= WARMUP
            order = TRIGGERS[i % 3:] + TRIGGERS[:i % 3]
            for action in ACTIONS:
                if action != "pickup" and lab.b_row is None:
                    try:
                        lab.call_b()
                    except (Failed, TimeoutError) as exc:
                        failures += 1
                        fail(f"round {i}: calling B: {exc}")
                        lab.reset()
                        continue
                for how in order:
                    seen: dict[str, list[tuple[float, float]]] = {"consult": [], "conference": []}
                    try:
                        s = lab.sample(action, how, seen)
                    except (Failed, TimeoutError, AssertionError) as exc:
                        failures += 1
                        fail(f"round {i}: {action}/{how}: {exc}")
                        if not isinstance(exc, Failed):
                            traceback.print_exc()
                        lab.reset()
                        continue
                    if counted:
                        hangups[(action, how)].append(s)
                        for k, v in seen.items():
                            keys[k] += v
                    settle()
                    try:
                        d, c = peer.sample()
                    except Exception as exc:
                        failures += 1
                        fail(f"round {i}: baresip: {exc}")
                        with contextlib.suppress(Exception):
                            phone.command("hangup")
                        continue
                    if counted:
                        b_dial.append(d)
                        b_cancel.append(c)
                    settle()
                if action == "conference":
                    try:
                        bye = lab.hangup_b()
                    except (Failed, TimeoutError) as exc:
                        failures += 1
                        fail(f"round {i}: hanging up B: {exc}")
                        lab.reset()
                        bye = None
                    if counted and bye is not None:
                        lab.byes.append(bye)
            print(f"round {i + 1}/{WARMUP + args.calls} done ({time.monotonic() - started:.0f} s)",
                  file=sys.stderr, flush=True)
        retrans = kwire.retransmissions, bwire.retransmissions

    bcm, bcp = summary([x[0] for x in b_cancel])
    bdm, bdp = summary([x[0] for x in b_dial])

    def row(label: str, perf: list[float], kern: list[float], bm: float, bp: float) -> list[str]:
        km, kp = summary(perf)
        return [label, fmt_ms(km), fmt_ms(kp), fmt_ms(summary(kern)[0]), fmt_ms(bm), fmt_ms(bp), ratio(km, bm)]

    rows = []
    for action in ACTIONS:
        for how in TRIGGERS:
            got = hangups[(action, how)]
            rows.append(row(f"Hang up, {ACTION_WORDS[action]}: {TRIGGER_WORDS[how]} -> CANCEL",
                            [x.wire for x in got], [x.kernel for x in got], bcm, bcp))
    for how in TRIGGERS:
        got = [x for a in ACTIONS for x in hangups[(a, how)]]
        rows.append(row(f"all three pending actions: {TRIGGER_WORDS[how]} -> CANCEL (n={len(got)})",
                        [x.wire for x in got], [x.kernel for x in got], bcm, bcp))
    for kind, label in (("consult", "GPIO Transfer key (short press: consult) -> INVITE of C"),
                        ("conference", "GPIO Conference key (three-party step) -> INVITE of C")):
        rows.append(row(f"{label} (n={len(keys[kind])})", [x[0] for x in keys[kind]], [x[1] for x in keys[kind]],
                        bdm, bdp))
    rows.append(row(f"reference: Hang up of the talking B, control socket -> BYE (n={len(lab.byes)})",
                    [x.wire for x in lab.byes], [x.kernel for x in lab.byes], math.nan, math.nan))

    where = []
    for how in TRIGGERS:
        got = [x for a in ACTIONS for x in hangups[(a, how)]]
        sm, sp = summary([x.sent for x in got])
        rm, rp = summary([x.wire - x.sent for x in got])
        fm = summary([x.frame for x in got])[0] if how == "touch" else math.nan
        where.append([TRIGGER_WORDS[how], fmt_ms(sm), fmt_ms(sp), fmt_ms(rm), fmt_ms(rp),
                      fmt_ms(fm) if how == "touch" else ""])

    print(header(f"Hang-up overtaking a pending action, {args.calls} samples per row (ms)", load0))
    print(md_table(["", "kiosk median", "kiosk p95", "kiosk median (kernel stamp)", "baresip median",
                    "baresip p95", "kiosk/baresip"], rows))
    print()
    print(md_table(["Hang up -> CANCEL, all pending actions", "trigger -> `request()` here, median", "p95",
                    "`request()` -> CANCEL on the wire, median", "p95",
                    "tap's release + the frame drawn after it, median"], where))
    worst_hangup = max(summary([x.wire for x in v])[0] for v in hangups.values())
    worst_key = max(summary([x[0] for x in v])[0] for v in keys.values())
    lead = summary(lab.leads)
    print()
    print(f"baresip columns: ctrl_tcp `hangup` -> CANCEL of a call that only rings (n={len(b_cancel)}); for the key "
          f"rows its `dial` -> INVITE (n={len(b_dial)}). "
          f"Targets: Hang up -> CANCEL median <= 5 ms on every row: **{'met' if worst_hangup <= 5 else 'MISSED'}** "
          f"(worst {worst_hangup:.2f} ms); GPIO press -> INVITE median <= 10 ms: "
          f"**{'met' if worst_key <= 10 else 'MISSED'}** (worst {worst_key:.2f} ms). "
          f"The Hang up overtook the pending action (nothing of it ended before the press; it ended by our "
          f"CANCEL's 487; B untouched): {lab.checks - lab.check_failures}/{lab.checks} checks passed. "
          f"The row's end (caused by the Hang up itself: pjsua reports DISCONNECTED before it sends the CANCEL) "
          f"reached this process after the CANCEL reached the wire in {lab.literal}/{lab.literal_checks} samples"
          f" (every sample, warm-up included; noted, not a failure)"
          + (f" (in the others the row's removal reached this process a median {fmt_ms(lead[0])} ms, at most "
             f"{fmt_ms(max(lab.leads))} ms, before the CANCEL reached the wire)" if lab.leads else "")
          + f". Samples failed: {failures}. Retransmissions seen on the wire: kiosk {retrans[0]}, "
          f"baresip {retrans[1]}."
          + (f" Diagnosis run: sys.setswitchinterval {args.unit_switch_interval} s in the unit, "
             f"{args.here_switch_interval} s here (CPython's default is 0.005)."
             if args.unit_switch_interval is not None or args.here_switch_interval is not None else "")
          + (" Diagnosis run: no frame drawn after the tap." if args.no_frame_after_tap else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
