"""The desk's hardware keys and lamps: gpiozero buttons -> desk commands, desk events -> LEDs.

A front-end that only translates (DESIGN.md): a press becomes the same desk
command a touch or `kiosk ctl` sends, and the desk's own events report any
refusal. gpiozero calls `when_pressed` / `when_held` on its own threads, and a
desk command may wait seconds for the SIP agent, so presses are handed to one
worker thread through a queue (gpiozero thread -> button worker -> desk) and a
slow call never stalls pin callbacks. The LEDs follow desk events directly:
setting a pin is quick and the listener keeps its own small picture of the rows.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from typing import Any, Callable, Mapping

from gpiozero import LED, Button, GPIODevice
from gpiozero.pins import Factory

from kiosk import events as ev
from kiosk.desk import Desk
from kiosk.profile import Gpio

log = logging.getLogger("kiosk.hw.buttons")

BOUNCE = 0.05
"""Debounce time (s) for real contacts; gpiozero's MockFactory ignores it."""
HOLD_TIME = 1.0
"""A Transfer press this long (s) is a quick (blind) transfer."""
KEYS = ("hold", "connect", "transfer", "conference", "record", "answer", "hangup")


class Buttons:
    """The profile's `[gpio]` buttons and LEDs wired to one desk."""

    def __init__(self, desk: Desk, gpio: Gpio, pin_factory: Factory | None = None) -> None:
        self.desk = desk
        self.buttons: dict[str, Button] = {}
        self.leds: dict[str, LED] = {}
        self._queue: queue.Queue[tuple[str, Callable[[], Any]] | None] = queue.Queue()
        self._transfer_held = False
        self._rows: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._ringing = self._recording = False
        try:
            for key in KEYS:
                pin = getattr(gpio, key)
                if pin is not None:
                    self.buttons[key] = Button(pin, pull_up=True, bounce_time=BOUNCE, hold_time=HOLD_TIME,
                                               pin_factory=pin_factory)
            for key in ("led_ringing", "led_recording"):
                pin = getattr(gpio, key)
                if pin is not None:
                    self.leds[key] = LED(pin, pin_factory=pin_factory)
        except BaseException:
            self._close_devices()  # free the pins already claimed: a half-built panel holds nothing
            raise
        for key, button in self.buttons.items():
            if key == "transfer":  # short and long press differ: decide on release, or when held
                button.when_pressed = self._transfer_pressed
                button.when_held = self._transfer_long
                button.when_released = self._transfer_released
            else:
                button.when_pressed = self._press_handler(key)
        self._worker = threading.Thread(target=self._work, name="kiosk-buttons", daemon=True)
        self._worker.start()
        with self._lock:  # calls already on the desk (none, when started with the unit)
            self._rows = {row["id"]: row for row in desk.snapshot()["calls"]}
            self._show()
        self._unsubscribe = desk.subscribe(self.on_desk_event)
        log.info("GPIO: buttons %s, LEDs %s", self._pins(self.buttons), self._pins(self.leds))

    # --- presses -> desk commands (gpiozero thread -> worker) ----------------------

    def _press_handler(self, key: str) -> Callable[[], None]:
        commands: dict[str, Callable[[], Any]] = {
            "hold": self.desk.hold,
            "connect": self.desk.connect,
            "answer": self.desk.answer,
            "hangup": self.desk.hangup,
            "conference": self.desk.conference,
            "record": self._record,
        }
        command = commands[key]
        return lambda: self._queue.put((key, command))

    def _record(self) -> Any:
        rows = self.desk.selected()
        return self.desk.record("stop" if len(rows) == 1 and rows[0].recording else "start")

    def _transfer_pressed(self) -> None:
        self._transfer_held = False

    def _transfer_long(self) -> None:
        self._transfer_held = True
        self._queue.put(("transfer quick", lambda: self.desk.transfer("quick")))

    def _transfer_released(self) -> None:
        if not self._transfer_held:  # a long press already did its quick transfer
            self._queue.put(("transfer", self._transfer_short))

    def _transfer_short(self) -> Any:
        # consult first; the next short press confirms the consultation it opened
        return self.desk.transfer("confirm" if self.desk.consults else "consult")

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            name, command = item
            if name:
                log.info("button %s", name)
            try:
                outcome = command()
            except Exception:  # the desk reports refusals itself; this is a bug, not an operator error
                log.exception("button %s: desk command failed", name)
                continue
            if outcome is not None and not outcome.ok:
                log.info("button %s refused: %s", name, outcome.reason)

    def idle(self, timeout: float = 5.0) -> bool:
        """Wait until every queued press has been handed to the desk (for tests); True when done."""
        done = threading.Event()
        self._queue.put(("", done.set))
        return done.wait(timeout)

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
        self._ringing, self._recording = ringing, recording

    # --- closing -------------------------------------------------------------------

    def close(self) -> None:
        """Stop following the desk, finish the worker and release every pin."""
        self._unsubscribe()
        self._queue.put(None)
        self._worker.join(timeout=5.0)
        self._close_devices()

    def _close_devices(self) -> None:
        for device in [*self.buttons.values(), *self.leds.values()]:
            try:
                device.close()
            except Exception as exc:
                log.warning("GPIO: closing %r: %s", device, exc)

    @staticmethod
    def _pins(devices: Mapping[str, GPIODevice]) -> str:
        return ", ".join(f"{k}={d.pin}" for k, d in devices.items()) or "none"


def start_buttons(desk: Desk, gpio: Gpio) -> Buttons | None:
    """The unit's buttons, or None when no `[gpio]` pin is set or GPIO cannot be used (warned)."""
    if all(pin is None for pin in dataclasses.astuple(gpio)):
        return None
    try:
        return Buttons(desk, gpio)
    except Exception as exc:  # no GPIO chip, a pin busy, no permission: the unit still takes calls
        log.warning("GPIO buttons and LEDs are off (%s: %s); the touchscreen and `kiosk ctl` still work",
                    type(exc).__name__, exc)
        return None
