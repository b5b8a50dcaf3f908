"""The touchscreen's link to the desk: touches -> desk commands on a worker, desk events -> the UI thread.

No Kivy here (so it is tested and read without a screen). The command
vocabulary is kiosk.commands' table: a button is an action id, and `act` sends
that action's command with its fixed arguments (and a number, for the actions
that take one) through the desk's generic `run(name, **args)`, the same request
`kiosk ctl` and the control socket make. Every desk command answers at once
(refused, done, or accepted and still running: a SIP outcome arrives later as
an event), so the one worker thread never waits behind another action's SIP;
it exists so that Kivy's thread never does socket I/O (a RemoteDesk) nor waits
for the desk loop, and so that touches reach the desk in the order touched.
The reads the History and Directory views make (`history`, `directory`, which
may wait seconds for an LDAP server) go to a second worker of their own
(`read`), so that a slow search never holds up a Hang up; only the answer to a
view's newest request is handed to it.

Desk listeners run on whichever thread caused the event (the desk loop, the
RemoteDesk's reader): `post` hands each one to the UI thread (Kivy's
Clock.schedule_once in the app) and the widgets are only ever touched there.
The front-end reads nothing of the desk but its snapshot and its events.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any, Callable, Union

from kiosk import events as ev
from kiosk.commands import ACTIONS, NUMBER_ACTIONS
from kiosk.desk import DIAL_CHARS, Desk, Outcome

if TYPE_CHECKING:
    from .remote import RemoteDesk

#: The desk in this process (tests, the demo) or the unit's, over its control socket (the panel's process).
#: What is used of it: run(name, **args) -> Outcome, snapshot(), subscribe(listener), profile.
AnyDesk = Union[Desk, "RemoteDesk"]

log = logging.getLogger("kiosk.ui")

Post = Callable[[Callable[[], None]], None]

__all__ = ["DIAL_CHARS", "NUMBER_ACTIONS", "AnyDesk", "DeskFrontend", "Post"]


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
        # Reads the views make (the history, a directory search that may wait seconds for LDAP) have a
        # worker of their own, so that a slow search never holds up a Hang up behind it.
        self._reads: queue.Queue[tuple[str, Callable[[], Any]] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._work, args=(self._reads,), name="kiosk-ui-reads",
                                        daemon=True)
        #: Per read key ("directory", "history"): the number of the newest request; older answers are dropped.
        self._latest: dict[str, int] = {}
        # While the first snapshot is on its way (read on the worker), events wait for it on the UI thread.
        self._held: list[ev.Event] | None = None

    # --- wiring ------------------------------------------------------------

    def start(self, on_snapshot: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any] | None:
        """Follow the desk.

        With `on_snapshot` (the panel): the snapshot is read on the worker and
        given to `on_snapshot` on the UI thread; events that come meanwhile are
        shown after it, in order (each carries the whole of what it changes, so
        replaying them on a later snapshot ends at the same state). Without it,
        the snapshot is read here and returned (events after it arrive through `post`).
        """
        if on_snapshot is None:
            self._unsubscribe = self.desk.subscribe(self._listener)
            self._worker.start()
            self._reader.start()
            return self.desk.snapshot()
        self._held = []
        self._unsubscribe = self.desk.subscribe(self._listener)
        self._worker.start()
        self._reader.start()

        def read() -> None:
            try:
                snap: dict[str, Any] | None = self.desk.snapshot()
            except Exception:  # a desk that is stopping: the events (or a LinkChanged) say the rest
                log.exception("touchscreen: cannot read the desk's snapshot")
                snap = None
            self._deliver(lambda: self._first(snap, on_snapshot))

        self.submit("", read)
        return None

    def refresh(self, on_snapshot: Callable[[dict[str, Any]], None]) -> None:
        """Read the desk's snapshot again (on the worker) and give it to `on_snapshot` on the UI thread:
        after a new profile, whose lines, routes and labels it carries."""
        def read() -> None:
            try:
                snap = self.desk.snapshot()
            except Exception:  # a unit that is stopping: a LinkChanged says the rest
                log.exception("touchscreen: cannot read the desk's snapshot")
                return
            self._deliver(lambda: on_snapshot(snap))

        self.submit("", read)

    def _first(self, snap: dict[str, Any] | None, on_snapshot: Callable[[dict[str, Any]], None]) -> None:
        held, self._held = self._held or [], None
        if snap is not None:
            on_snapshot(snap)
        for event in held:
            self.on_event(event)

    def close(self, timeout: float = 5.0) -> None:
        """Stop following the desk and let the worker finish what it was given."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join(timeout)
        if self._reader.is_alive():
            self._reads.put(None)
            self._reader.join(timeout)

    def _listener(self, event: ev.Event) -> None:
        self._deliver(lambda: self._show(event))

    def _show(self, event: ev.Event) -> None:
        if self._held is not None:
            self._held.append(event)
        else:
            self.on_event(event)

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
        """Queue a desk request; it runs on the worker, never on the UI thread."""
        self._queue.put((name, command))

    def _work(self, jobs: queue.Queue[tuple[str, Callable[[], Any]] | None] | None = None) -> None:
        jobs = self._queue if jobs is None else jobs
        while (item := jobs.get()) is not None:
            name, command = item
            if name:
                log.info("touch: %s", name)
            try:
                command()
            except Exception:  # this would be a bug
                log.exception("touch %s: desk command failed", name)

    def wait_commands(self, timeout: float = 10.0) -> bool:
        """Wait until every queued command (and read) has been answered (tests); True when done."""
        done = threading.Event()
        self._queue.put(("", done.set))
        if not done.wait(timeout):
            return False
        if not self._reader.is_alive():
            return True
        read = threading.Event()
        self._reads.put(("", read.set))
        return read.wait(timeout)

    # --- reads for the views (history, directory) ------------------------------------

    def read(self, key: str, name: str, args: dict[str, Any] | Callable[[], list[tuple[str, dict[str, Any]]]],
             on_result: Callable[[list[Outcome]], None]) -> int:
        """Run one or more reading desk commands on the reads worker; `on_result(outcomes)` on the UI thread.

        `args`: the arguments of `name`, or a list of (name, args) to run one after the other (the History
        view reads the missed calls and the rest in one go). Only the newest request of each `key` counts:
        one that a newer request overtook before it ran is not run at all (typing fast does not queue a
        search per letter behind a slow LDAP), and one answered after a newer one was made is dropped, so
        a view never shows the results of a query it no longer has. Returns the request's number.
        """
        with self._lock:
            number = self._latest.get(key, 0) + 1
            self._latest[key] = number
        requests = [(name, dict(args))] if isinstance(args, dict) else list(args())  # type: ignore[arg-type]

        def current() -> bool:
            with self._lock:
                return self._latest.get(key) == number

        def run() -> None:
            if not current():
                return
            outcomes = []
            for command, command_args in requests:
                clean = {k: v for k, v in command_args.items() if v is not None}
                try:
                    outcomes.append(self.desk.run(command, **clean))
                except Exception as exc:  # a desk that is stopping: said in the view, not raised
                    log.exception("touchscreen: %s failed", command)
                    outcomes.append(Outcome(False, str(exc), code="desk_stopped", action=command))
            self._deliver(lambda: on_result(outcomes) if current() else None)

        self._reads.put((name if isinstance(args, dict) else key, run))
        return number

    @property
    def in_flight(self) -> int:
        """Events and outcomes posted to the UI thread and not yet run there."""
        with self._lock:
            return self._in_flight

    # --- the command vocabulary: the command table's actions ----------------------

    def send(self, name: str, args: dict[str, Any] | None = None, action: str | None = None,
             label: str | None = None) -> None:
        """Send one desk command (a name of kiosk.commands.COMMANDS) from the worker.

        `action` names it in a refusal the desk never saw, `label` in the log
        ("" logs nothing). A refusal the desk took comes back as its
        ActionFailed event, like every change; one that never reached it (a
        desk that is stopping, a unit that is not reachable) is shown as if it
        had, from here.
        """
        args = {k: v for k, v in (args or {}).items() if v is not None}
        shown = action or name

        def run() -> None:
            out = self.desk.run(name, **args)
            if not out.ok and out.command is None:  # never reached the desk loop: no event will say it
                self._refused_here(out, shown)

        if label is None:
            label = " ".join([shown, *(f"{k}={v}" for k, v in args.items() if k != "number")])
        self.submit(label, run)

    def _refused_here(self, out: Outcome, action: str) -> None:
        event = ev.ActionFailed(out.action or action, out.reason, out.row, out.code, dict(out.params))
        self._deliver(lambda: self._show(event))

    def act(self, action: str, number: str | None = None) -> None:
        """A button or key: the action's command with its fixed arguments (and the number, if it takes one)."""
        spec = ACTIONS.get(action)
        if spec is None:
            log.warning("touch: no action %r in the command table", action)
            return
        args = dict(spec.args)
        if spec.number and number:
            args["number"] = number
        self.send(spec.command, args, action)

    def complete(self, action: str, number: str) -> None:
        """The number the popup asked for: repeat the number-taking action with it."""
        if action in NUMBER_ACTIONS:
            self.act(action, number)

    def select_only(self, row_id: int) -> None:
        """A touch on a row: that call, and only it, is the one acted on."""
        self.send("select", {"rows": [row_id]})

    def toggle_selected(self, row_id: int) -> None:
        """A touch in multi-select (or a long press): the desk adds the row to its selection, or takes it out."""
        self.send("select", {"rows": [], "toggle": row_id})

    def set_param(self, name: str, value: str) -> None:
        self.send("set", {"name": name, "value": value})

    def key(self, key: str) -> None:
        """A keypad key on the Number field: a dial character, "delete" or "clear" (the desk edits it)."""
        self.send("key", {"key": key}, label="")  # the digits typed are not logged

    def type_digit(self, char: str) -> None:
        self.key(char)

    def delete_digit(self) -> None:
        self.key("delete")

    def clear_number(self) -> None:
        self.key("clear")
