"""The touchscreen's link to the desk: touches -> desk commands on a worker, desk events -> the UI thread.

No Kivy here (so it is tested and read without a screen). A desk command may
wait seconds for the SIP agent, and Kivy's thread must keep drawing, so every
command goes through one queue to one worker thread, in the order touched (as
hw/buttons.py does for GPIO). Desk listeners run on whichever thread caused the
event (agent, control socket, GPIO, this worker): `post` hands each one to the
UI thread (Kivy's Clock.schedule_once in the app) and the widgets are only ever
touched there.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any, Callable, Union

from kiosk import events as ev
from kiosk.desk import Desk, Outcome

if TYPE_CHECKING:
    from .remote import RemoteDesk

#: The desk in this process (tests, the demo) or the unit's, over its control socket (the panel's process).
AnyDesk = Union[Desk, "RemoteDesk"]

log = logging.getLogger("kiosk.ui")

Post = Callable[[Callable[[], None]], None]

#: Actions the desk may ask a number for (NumberRequired.action) and how to repeat them with it:
#: the desk takes the number as the command's argument, as `kiosk ctl dial 2001` gives it.
NUMBER_ACTIONS: dict[str, Callable[[AnyDesk, str], Outcome]] = {
    "dial": lambda desk, number: desk.dial(number),
    "quick transfer": lambda desk, number: desk.transfer("quick", number),
    "consult transfer": lambda desk, number: desk.transfer("consult", number),
    "conference": lambda desk, number: desk.conference(number),
    "pickup": lambda desk, number: desk.pickup(number),
}

#: What the keypad may type into Number.
DIAL_CHARS = frozenset("0123456789*#+")


class DeskFrontend:
    """One desk, seen from the touchscreen: the command vocabulary and the event hand-over."""

    def __init__(self, desk: AnyDesk, post: Post) -> None:
        self.desk = desk
        self._post = post
        #: Set by the panel: called on the UI thread with every desk event.
        self.on_event: Callable[[ev.Event], None] = lambda event: None
        self._queue: queue.Queue[tuple[str, Callable[[], Any]] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._in_flight = 0  # handed to `post`, not yet run on the UI thread
        self._unsubscribe: Callable[[], None] | None = None
        self._worker = threading.Thread(target=self._work, name="kiosk-ui-desk", daemon=True)

    # --- wiring ------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Follow the desk; the snapshot to draw first (events after it arrive through `post`)."""
        self._unsubscribe = self.desk.subscribe(self._listener)
        self._worker.start()
        return self.desk.snapshot()

    def close(self, timeout: float = 5.0) -> None:
        """Stop following the desk and let the worker finish what it was given."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join(timeout)

    def _listener(self, event: ev.Event) -> None:
        self._deliver(lambda: self.on_event(event))

    def _deliver(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._in_flight += 1

        def run() -> None:
            try:
                fn()
            finally:
                with self._lock:
                    self._in_flight -= 1

        self._post(run)

    def submit(self, name: str, command: Callable[[], Any]) -> None:
        """Queue a desk command; it runs on the worker, never on the UI thread."""
        self._queue.put((name, command))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            name, command = item
            if name:
                log.info("touch: %s", name)
            try:
                command()  # a refusal comes back as the desk's ActionFailed event, like every change
            except Exception:  # this would be a bug
                log.exception("touch %s: desk command failed", name)

    def wait_commands(self, timeout: float = 10.0) -> bool:
        """Wait until every queued command has run (tests); True when done."""
        done = threading.Event()
        self._queue.put(("", done.set))
        return done.wait(timeout)

    @property
    def in_flight(self) -> int:
        """Events and outcomes posted to the UI thread and not yet run there."""
        with self._lock:
            return self._in_flight

    # --- the command vocabulary: one method per thing a touch can mean ---------

    def call(self) -> None:
        self.submit("call", self.desk.dial)

    def answer(self) -> None:
        self.submit("answer", self.desk.answer)

    def hangup(self) -> None:
        self.submit("hangup", self.desk.hangup)

    def hold(self) -> None:
        self.submit("hold", self.desk.hold)

    def connect(self) -> None:
        self.submit("connect", self.desk.connect)

    def pickup(self) -> None:
        self.submit("pickup", self.desk.pickup)

    def transfer(self, mode: str) -> None:
        self.submit(f"transfer {mode}", lambda: self.desk.transfer(mode))

    def conference(self) -> None:
        self.submit("conference", self.desk.conference)

    def record(self, action: str) -> None:
        self.submit(f"record {action}", lambda: self.desk.record(action))

    def mute(self) -> None:
        self.submit("mute", lambda: self.desk.mute("toggle"))

    def select_only(self, row_id: int) -> None:
        """A touch on a row: that call, and only it, is the one acted on."""
        self.submit(f"select {row_id}", lambda: self.desk.select([row_id]))

    def toggle_selected(self, row_id: int) -> None:
        """A touch in multi-select (or a long press): add the row to the desk's selection, or take it out."""

        def toggle() -> Outcome:
            rows = list(self.desk.snapshot()["selection"])  # the desk's selection now, not the screen's
            rows = [r for r in rows if r != row_id] if row_id in rows else [*rows, row_id]
            return self.desk.select(rows)

        self.submit(f"select +/- {row_id}", toggle)

    def set_param(self, name: str, value: str) -> None:
        self.submit(f"set {name}", lambda: self.desk.set(name, value))

    def type_digit(self, char: str) -> None:
        """A keypad key: Number gets one more character (read from the desk when it runs, so no key is lost)."""
        if char in DIAL_CHARS:
            self.submit("", lambda: self.desk.set("number", self.desk.number + char))

    def delete_digit(self) -> None:
        self.submit("", lambda: self.desk.set("number", self.desk.number[:-1]))

    def clear_number(self) -> None:
        self.submit("", lambda: self.desk.set("number", ""))

    def complete(self, action: str, number: str) -> None:
        """The number the popup asked for: repeat the action with it."""
        repeat = NUMBER_ACTIONS.get(action)
        if repeat is not None:
            self.submit(f"{action} {number}", lambda: repeat(self.desk, number))
