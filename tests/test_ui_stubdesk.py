"""The stand-in desk the views' tests (History, Directory, DND) drive the panel over, and helpers to tap it.

`ViewsDesk` is a real kiosk.desk.Desk on the FakeAgent for everything the
panel did before (calls, keys, selection), with the commands of the History,
Directory and DND views answered by the test's own data: `history`,
`history_seen`, `callback`, `directory` and `dnd`. What is asserted is what
the panel asked (`asked`) and what it shows, so these tests pin down the
touchscreen's translation alone, whatever the desk's own history and
directory do (their tests are theirs). Its events (DndChanged,
HistoryChanged) reach the panel as the desk's do: through its listeners.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from .kivy_window import EventLoop, UnitTestTouch, Window  # noqa: E402  (first: it sets Kivy up)

from kivy.clock import Clock  # noqa: E402

from kiosk import events as ev  # noqa: E402
from kiosk.desk import Desk, Outcome  # noqa: E402
from kiosk.profile import Operator  # noqa: E402
from kiosk.ui.frontend import DeskFrontend  # noqa: E402

from .fakes import FakeAgent, make_profile  # noqa: E402

#: The commands the stand-in answers itself.
VIEW_COMMANDS = ("history", "history_seen", "callback", "directory", "dnd")
NOW = time.time()
#: What the desk's `available` says of the history commands on a unit that keeps a history.
HAS_HISTORY = {"history_seen": None, "callback": None}


def entry(entry_id: int, remote: str, outcome: str, *, direction: str = "in", ago: float = 60.0,
          duration: float = 0.0, via: str = "", seen: bool = True, name: str = "", number: str = "") -> dict[str, Any]:
    """One history entry as kiosk.history gives it (the contract's JSON)."""
    started = NOW - ago
    answered = started + 5 if outcome in ("answered", "transferred") else None
    return {"id": entry_id, "direction": direction, "line": "op1", "route": None, "remote": remote,
            "name": name, "number": number, "via": via, "started": started, "answered": answered,
            "ended": started + 5 + duration, "duration": duration if answered else 0.0, "outcome": outcome,
            "reason": "", "recording": "", "conference": False, "transferred_to": "", "seen": seen}


class ViewsDesk:
    """A Desk whose view commands the test answers (see the module's docstring)."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.profile = desk.profile
        #: (command, arguments) of every view command the panel sent, in order.
        self.asked: list[tuple[str, dict[str, Any]]] = []
        self.entries: list[dict[str, Any]] = []
        self.contacts: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.dnd_on = False
        #: False: the history commands go to the real desk, which keeps no history (it refuses them).
        self.has_history = True
        #: Set by a test to hold `directory` answers until it says so (a slow LDAP).
        self.gate: threading.Event | None = None
        self._listeners: list[Callable[[ev.Event], None]] = []
        self._lock = threading.Lock()

    # --- what the front-end uses of a desk

    def subscribe(self, listener: Callable[[ev.Event], None]) -> Callable[[], None]:
        def heard(event: ev.Event) -> None:
            if isinstance(event, ev.AvailabilityChanged) and self.has_history:  # this stand-in keeps one
                event = ev.AvailabilityChanged({**event.available, **HAS_HISTORY})
            listener(event)

        stop = self.desk.subscribe(heard)
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            stop()
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def emit(self, event: ev.Event) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)

    def snapshot(self) -> dict[str, Any]:
        snap = self.desk.snapshot()
        if not self.has_history:
            return {**snap, "dnd": self.dnd_on}
        return {**snap, "dnd": self.dnd_on, "missed_unseen": self.missed_unseen(),
                "available": {**snap.get("available", {}), **HAS_HISTORY}}

    def run(self, name: str, /, **args: Any) -> Outcome:
        if name not in VIEW_COMMANDS:
            return self.desk.run(name, **args)
        with self._lock:
            self.asked.append((name, dict(args)))
        if not self.has_history and name.startswith(("history", "callback")):
            return self.desk.run(name, **args)
        return getattr(self, f"_{name}")(**args)

    def __getattr__(self, name: str) -> Any:  # number, selection, ...: the real desk's
        return getattr(self.desk, name)

    # --- the view commands

    def missed_unseen(self) -> int:
        return sum(1 for e in self.entries if e["outcome"] == "missed" and not e["seen"])

    def _history(self, missed: bool = False, limit: int = 50, search: str = "") -> Outcome:
        calls = sorted(self.entries, key=lambda e: -e["started"])
        if missed:
            calls = [e for e in calls if e["outcome"] == "missed"]
        if search:
            low = search.casefold()
            calls = [e for e in calls if any(low in str(e[k]).casefold() for k in ("name", "number", "remote", "via"))]
        return Outcome(True, data={"calls": [dict(e) for e in calls[:limit]], "missed_unseen": self.missed_unseen(),
                                   "total": len(calls)}, action="history")

    def _history_seen(self) -> Outcome:
        for e in self.entries:
            e["seen"] = True
        self.emit(ev.HistoryChanged({}, 0))
        return Outcome(True, data={"missed_unseen": 0}, action="history_seen")

    def _callback(self, entry: int) -> Outcome:
        return Outcome(True, action="callback")

    def _directory(self, query: str = "", limit: int = 20) -> Outcome:
        if self.gate is not None:
            self.gate.wait(10)
        low = query.casefold()
        digits = "".join(c for c in query if c.isdigit())
        found = [c for c in self.contacts if low in c["name"].casefold()
                 or (digits and any(digits in "".join(ch for ch in n if ch.isdigit()) for n in c["numbers"]))]
        return Outcome(True, data={"contacts": [dict(c) for c in found[:limit]], "errors": list(self.errors)},
                       action="directory")

    def _dnd(self, state: str = "toggle") -> Outcome:
        self.dnd_on = {"on": True, "off": False}.get(state, not self.dnd_on)
        self.emit(ev.DndChanged(self.dnd_on))
        return Outcome(True, action="dnd")


def contact(name: str, *numbers: str, source: str = "file") -> dict[str, Any]:
    return {"name": name, "number": numbers[0] if numbers else "", "numbers": list(numbers), "source": source}


# --- driving a panel --------------------------------------------------------------------------


def pump(panel: Any) -> None:
    """Run until the desk has done every command and read, and Kivy's thread has shown every event."""
    for _ in range(200):
        assert panel.frontend.wait_commands(), "the desk worker is stuck"
        EventLoop.idle()
        if panel.frontend.in_flight == 0 and panel.frontend._queue.empty() and panel.frontend._reads.empty():
            break
    EventLoop.idle()
    EventLoop.idle()


def tap(panel: Any, widget: Any) -> None:
    x, y = widget.to_window(*widget.center)
    touch = UnitTestTouch(x, y)
    touch.touch_down()
    EventLoop.idle()
    touch.touch_up()
    EventLoop.idle()
    pump(panel)


@dataclasses.dataclass
class Made:
    panel: Any
    views: ViewsDesk
    desk: Desk
    agent: FakeAgent


@pytest.fixture
def make_views_panel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Made]]:
    """Factory: the real Panel over a ViewsDesk (language "en" or "ru"), removed afterwards."""
    from kiosk.ui import status_log, table
    from kiosk.ui.panel import Panel

    monkeypatch.setattr(table, "LONG_PRESS", 1e9)
    monkeypatch.setattr(status_log, "FRESH_SECONDS", 1e9)
    made: list[Made] = []
    children = list(Window.children)

    def make(language: str = "en", operator: str = "Anna Operator") -> Made:
        profile = dataclasses.replace(make_profile(), operator=Operator(operator, language))
        agent = FakeAgent()
        desk = Desk(profile, agent)
        desk.start()
        agent.register_all(profile)
        views = ViewsDesk(desk)
        frontend = DeskFrontend(views, lambda fn: Clock.schedule_once(lambda dt: fn(), 0))  # type: ignore[arg-type]
        panel = Panel(frontend, profile)
        Window.add_widget(panel)
        panel.start()
        pump(panel)
        m = Made(panel, views, desk, agent)
        made.append(m)
        return m

    yield make
    for m in made:
        if m.panel.popup is not None:
            m.panel.popup.dismiss(animation=False)
        m.panel.close()
        for row in m.desk.snapshot()["calls"]:
            m.agent.ended(int(row["id"]))
        m.desk.close()
    for child in list(Window.children):
        if child not in children:
            Window.remove_widget(child)
    EventLoop.idle()


def test_the_stand_in_answers_the_view_commands_and_passes_the_rest_on(make_views_panel: Any) -> None:
    m = make_views_panel()
    m.views.entries = [entry(1, "sip:2001@pbx.test", "missed", seen=False)]
    assert m.views.run("history", missed=True).data["calls"][0]["id"] == 1
    assert m.views.snapshot()["missed_unseen"] == 1 and "calls" in m.views.snapshot()
    assert m.views.run("key", key="5").ok and m.desk.number == "5"
