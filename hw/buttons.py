"""The desk's hardware keys and lamps: gpiozero buttons -> desk commands, desk events -> LEDs.

A front-end that only translates (DESIGN.md): each key is bound to an action of
kiosk.commands (`commands.gpio_bindings()`: the profile's `[gpio]` key -> the
action, `transfer:held` for a long press on Transfer), and a press sends that
action's command with its fixed arguments, exactly what a touch or `kiosk ctl`
sends. Nothing is decided here: Record is `record toggle`, a short Transfer is
`transfer next` (consult from the selected call, or confirm the consultation it
is in) and a long one `transfer quick`; the desk knows which applies.

gpiozero calls `when_pressed` / `when_held` / `when_released` on its own
threads, which must never block: a press is one `desk.submit(...)`, which never
blocks (an in-process kiosk.desk.Desk hands the command to its loop; a
kiosk.ui.remote.RemoteDesk, for keys wired to another process than the unit,
makes the request on its own small pool). The replies and final outcomes come
back on Futures, and a refusal is only logged: the desk reports it to every
front-end itself. The LEDs follow desk events directly: setting a pin is quick
and the listener keeps its own small picture of the rows.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from gpiozero import LED, Button, GPIODevice
from gpiozero.pins import Factory

from kiosk import commands
from kiosk import events as ev
from kiosk.commands import Action
from kiosk.profile import Gpio

if TYPE_CHECKING:
    from kiosk.desk import Outcome

log = logging.getLogger("kiosk.hw.buttons")

BOUNCE = 0.05
"""Debounce time (s) for real contacts; gpiozero's MockFactory ignores it."""
HOLD_TIME = 1.0
"""A press this long (s) on a key with a long-press action (Transfer) is that action."""
HELD = ":held"
"""The suffix of a long press's binding key in `commands.gpio_bindings()`."""
LEDS = ("led_ringing", "led_recording", "led_dnd")


class DeskLike(Protocol):
    """What the keys use of a desk: kiosk.desk.Desk and kiosk.ui.remote.RemoteDesk both have it."""

    def submit(self, name: str, /, **args: Any) -> Future[Outcome]: ...
    def snapshot(self) -> dict[str, Any]: ...
    def subscribe(self, listener: Callable[[ev.Event], None]) -> Callable[[], None]: ...


def keys() -> tuple[str, ...]:
    """The `[gpio]` keys that have an action (a long press is on the same key)."""
    return tuple(dict.fromkeys(k.removesuffix(HELD) for k in commands.gpio_bindings()))


class Buttons:
    """The profile's `[gpio]` buttons and LEDs wired to one desk (in this process or over the socket)."""

    def __init__(self, desk: DeskLike, gpio: Gpio, pin_factory: Factory | None = None) -> None:
        self.desk = desk
        self.buttons: dict[str, Button] = {}
        self.leds: dict[str, LED] = {}
        #: binding key (a `[gpio]` key, or KEY:held for its long press) -> the action it sends
        self.bound: dict[str, Action] = {}
        self._held: dict[str, bool] = {}  # a key with a long press: has this press been held?
        self._rows: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._in_flight: set[Future[Any]] = set()
        self._settled = threading.Condition(self._lock)
        self._ringing = self._recording = False
        self._dnd = self._dnd_wanted = False  # the DND lamp: what it shows, and what the desk says
        bindings = commands.gpio_bindings()
        try:
            for key in keys():
                pin = getattr(gpio, key, None)
                if pin is not None:
                    self.buttons[key] = Button(pin, pull_up=True, bounce_time=BOUNCE, hold_time=HOLD_TIME,
                                               pin_factory=pin_factory)
            for key in LEDS:
                pin = getattr(gpio, key)
                if pin is not None:
                    self.leds[key] = LED(pin, pin_factory=pin_factory)
        except BaseException:
            self._close_devices()  # free the pins already claimed: a half-built panel holds nothing
            raise
        for key, button in self.buttons.items():
            short, long = bindings[key], bindings.get(key + HELD)
            self.bound[key] = short
            if long is None:
                button.when_pressed = self._sender(short)
                continue
            # Short and long press differ: the long one is sent when held, the short one on
            # a release that was not held.
            self.bound[key + HELD] = long
            self._held[key] = False
            button.when_pressed = self._pressed(key)
            button.when_held = self._long(key, long)
            button.when_released = self._released(key, short)
        self._load(desk.snapshot())  # calls already on the desk (none, when started with the unit)
        self._unsubscribe = desk.subscribe(self.on_desk_event)
        log.info("GPIO: buttons %s, LEDs %s", self._pins(self.buttons), self._pins(self.leds))

    # --- presses -> desk commands (gpiozero's threads; never blocking) ----------------

    def _sender(self, action: Action) -> Callable[[], None]:
        return lambda: self.send(action)

    def _pressed(self, key: str) -> Callable[[], None]:
        def pressed() -> None:
            self._held[key] = False

        return pressed

    def _long(self, key: str, action: Action) -> Callable[[], None]:
        def held() -> None:
            self._held[key] = True
            self.send(action)

        return held

    def _released(self, key: str, action: Action) -> Callable[[], None]:
        def released() -> None:
            if not self._held[key]:  # a long press already sent its own action
                self.send(action)

        return released

    def send(self, action: Action) -> Future[Outcome] | None:
        """Send one action's command to the desk (from any thread, without waiting); its reply Future."""
        log.info("button %s", action.id)
        try:
            reply = self.desk.submit(action.command, **action.args)
        except Exception:  # the desk reports refusals itself; this is a bug, not an operator error
            log.exception("button %s: the desk did not take the command", action.id)
            return None
        self._track(reply)
        reply.add_done_callback(lambda f: self._replied(action, f))
        return reply

    def _replied(self, action: Action, reply: Future[Outcome]) -> None:
        try:
            out = reply.result()
        except Exception as exc:  # the desk stopped (or a bug): logged, never raised on its thread
            log.warning("button %s: no reply from the desk: %r", action.id, exc)
            self._untrack(reply)
            return
        done = out.done if out.pending else None
        if done is not None:
            self._track(done)
            done.add_done_callback(lambda f: self._finished(action, f))
        elif not out.ok:
            log.info("button %s refused: %s", action.id, out.reason)
        self._untrack(reply)

    def _finished(self, action: Action, done: Future[Outcome]) -> None:
        try:
            out = done.result()
        except Exception as exc:
            log.warning("button %s: %r", action.id, exc)
        else:
            if not out.ok:
                log.info("button %s failed: %s", action.id, out.reason)
        self._untrack(done)

    def _track(self, fut: Future[Any]) -> None:
        with self._lock:
            self._in_flight.add(fut)

    def _untrack(self, fut: Future[Any]) -> None:
        with self._lock:
            self._in_flight.discard(fut)
            if not self._in_flight:
                self._settled.notify_all()

    def idle(self, timeout: float = 5.0) -> bool:
        """Wait until every press so far has been answered and its command has finished (for tests)."""
        with self._lock:
            return self._settled.wait_for(lambda: not self._in_flight, timeout)

    # --- desk events -> LEDs -------------------------------------------------------

    def on_desk_event(self, event: ev.Event) -> None:
        """Desk listener: keep the rows' state and light the LEDs from it."""
        if isinstance(event, ev.RowChanged):
            with self._lock:
                self._rows[event.row["id"]] = event.row
                self._show()
        elif isinstance(event, ev.RowRemoved):
            with self._lock:
                self._rows.pop(event.row_id, None)
                self._show()
        elif isinstance(event, ev.DndChanged):
            with self._lock:
                self._dnd_wanted = event.on
                self._show()
        elif isinstance(event, ev.LinkChanged):  # a RemoteDesk: the unit went away, or is back
            self._load(event.snapshot or {"calls": []})

    def _load(self, snapshot: Mapping[str, Any]) -> None:
        with self._lock:
            self._rows = {row["id"]: row for row in snapshot.get("calls", [])}
            self._dnd_wanted = bool(snapshot.get("dnd"))
            self._show()

    def _show(self) -> None:
        ringing = any(r.get("state") == "ringing" and r.get("direction") == "in" for r in self._rows.values())
        recording = any(r.get("recording") for r in self._rows.values())
        led = self.leds.get("led_ringing")
        if led is not None and ringing != self._ringing:  # blink() restarts its thread: only on a change
            if ringing:
                led.blink(on_time=0.5, off_time=0.5)
            else:
                led.off()
        led = self.leds.get("led_recording")
        if led is not None and recording != self._recording:
            if recording:
                led.on()
            else:
                led.off()
        led = self.leds.get("led_dnd")
        if led is not None and self._dnd_wanted != self._dnd:
            if self._dnd_wanted:
                led.on()
            else:
                led.off()
        self._ringing, self._recording, self._dnd = ringing, recording, self._dnd_wanted

    # --- closing -------------------------------------------------------------------

    def close(self) -> None:
        """Stop following the desk and release every pin (commands already sent go on in the desk)."""
        self._unsubscribe()
        self._close_devices()  # a closed button calls nothing any more

    def _close_devices(self) -> None:
        """Release every button and LED, all at once: gpiozero's hold thread of a button notices its
        stop only at its next 0.1 s poll, so one after the other a panel of nine keys took 0.9 s (a
        reload of [gpio] waited that long)."""
        def close(device: GPIODevice) -> None:
            try:
                device.close()
            except Exception as exc:
                log.warning("GPIO: closing %r: %s", device, exc)

        closers = [threading.Thread(target=close, args=(d,), name="kiosk-gpio-close", daemon=True)
                   for d in [*self.buttons.values(), *self.leds.values()]]
        for t in closers:
            t.start()
        for t in closers:
            t.join(5.0)

    @staticmethod
    def _pins(devices: Mapping[str, GPIODevice]) -> str:
        return ", ".join(f"{k}={d.pin}" for k, d in devices.items()) or "none"


def start_buttons(desk: DeskLike, gpio: Gpio) -> Buttons | None:
    """The unit's buttons, or None when no `[gpio]` pin is set or GPIO cannot be used (warned)."""
    if all(pin is None for pin in dataclasses.astuple(gpio)):
        return None
    try:
        return Buttons(desk, gpio)
    except Exception as exc:  # no GPIO chip, a pin busy, no permission: the unit still takes calls
        log.warning("GPIO buttons and LEDs are off (%s: %s); the touchscreen and `kiosk ctl` still work",
                    type(exc).__name__, exc)
        return None
