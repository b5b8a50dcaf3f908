"""The touchscreen's desk link without a screen: the command vocabulary is the command table's, every
request runs on the worker (never on the caller's thread) in the order given, a pending action never
holds up the next one, and desk events from any thread reach the UI only through `post`."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

import pytest

from kiosk import events as ev
from kiosk.commands import ACTIONS, NUMBER_ACTIONS
from kiosk.desk import Desk, Outcome
from kiosk.ui.frontend import DeskFrontend

from .fakes import FakeAgent


@pytest.fixture
def posted() -> "queue.Queue[Callable[[], None]]":
    return queue.Queue()


@pytest.fixture
def frontend(desk: Desk, posted: "queue.Queue[Callable[[], None]]") -> Iterator[DeskFrontend]:
    f = DeskFrontend(desk, posted.put)  # the "UI thread" is this test, running what was posted
    f.start()
    yield f
    f.close()


def run_posted(posted: "queue.Queue[Callable[[], None]]") -> None:
    while not posted.empty():
        posted.get_nowait()()


class TableDesk:
    """Only the surface the front-end may use: run, snapshot, subscribe (no desk internals to read)."""

    def __init__(self, reply: Outcome | None = None) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.threads: set[str] = set()
        self.reply = reply or Outcome(True, command=1)
        self.listeners: list[Callable[[ev.Event], None]] = []

    def run(self, name: str, /, **args: Any) -> Outcome:
        self.sent.append((name, args))
        self.threads.add(threading.current_thread().name)
        return self.reply

    def snapshot(self) -> dict[str, Any]:
        return {"number": "", "available": {}}

    def subscribe(self, listener: Callable[[ev.Event], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)


def test_every_action_sends_its_table_command_with_its_fixed_arguments() -> None:
    desk = TableDesk()
    f = DeskFrontend(desk, lambda fn: fn())  # type: ignore[arg-type]
    f.start()
    try:
        for action in ACTIONS:
            f.act(action)
            f.act(action, "2001")
        f.act("no such action")  # not in the table: nothing is sent
        assert f.wait_commands()
    finally:
        f.close()
    expected = []
    for action in ACTIONS.values():
        expected.append((action.command, dict(action.args)))
        expected.append((action.command, {**action.args, **({"number": "2001"} if action.number else {})}))
    assert desk.sent == expected
    assert desk.threads == {"kiosk-ui-desk"}  # the worker, never the caller's thread


def test_the_keypad_selection_and_parameters_are_desk_commands() -> None:
    desk = TableDesk()
    f = DeskFrontend(desk, lambda fn: fn())  # type: ignore[arg-type]
    f.start()
    try:
        f.key("5")
        f.key("delete")
        f.key("clear")
        f.select_only(3)
        f.toggle_selected(4)
        f.set_param("route", "trunk")
        f.complete("transfer_consult", "3003")
        f.complete("hold", "3003")  # takes no number: nothing to complete
        assert f.wait_commands()
    finally:
        f.close()
    assert desk.sent == [("key", {"key": "5"}), ("key", {"key": "delete"}), ("key", {"key": "clear"}),
                         ("select", {"rows": [3]}), ("select", {"rows": [], "toggle": 4}),
                         ("set", {"name": "route", "value": "trunk"}),
                         ("transfer", {"mode": "consult", "number": "3003"})]
    assert set(NUMBER_ACTIONS) == {"dial", "transfer_quick", "transfer_consult", "transfer_next", "conference",
                                   "pickup"}


def test_a_pending_action_does_not_hold_up_the_next(frontend: DeskFrontend, agent: FakeAgent) -> None:
    call = agent.ring()
    agent.talking(call)
    stalled = agent.stall_next("hold")
    frontend.act("hold")  # returns at once; the desk accepts it and waits for the agent on its own loop
    assert frontend.wait_commands(timeout=2.0)
    assert agent.requests("hold") == [(call,)] and not stalled.done()
    frontend.act("hangup")
    assert frontend.wait_commands(timeout=2.0)
    assert agent.requests("hangup") == [(call,)] and not stalled.done()
    stalled.set_result(None)


def test_desk_events_reach_the_ui_only_through_post(frontend: DeskFrontend, agent: FakeAgent,
                                                    posted: "queue.Queue[Callable[[], None]]") -> None:
    seen: list[tuple[ev.Event, str]] = []
    frontend.on_event = lambda event: seen.append((event, threading.current_thread().name))
    run_posted(posted)
    seen.clear()
    thread = threading.Thread(target=agent.ring, name="agent")  # as the agent thread delivers it
    thread.start()
    thread.join()
    assert seen == [] and frontend.in_flight >= 1
    run_posted(posted)
    assert ev.RowChanged in [type(e) for e, _ in seen]
    assert {name for _, name in seen} == {threading.current_thread().name}
    assert frontend.in_flight == 0


def test_events_before_the_first_snapshot_are_shown_after_it() -> None:
    """The panel's first snapshot is read on the worker (a RemoteDesk reads it over the socket): events
    that come meanwhile wait for it on the UI thread, and are shown after it in their order."""
    release = threading.Event()

    class SlowSnapshot(TableDesk):
        def snapshot(self) -> dict[str, Any]:
            release.wait(5)
            return {"calls": [], "available": {}}

    desk = SlowSnapshot()
    posted: "queue.Queue[Callable[[], None]]" = queue.Queue()
    f = DeskFrontend(desk, posted.put)  # type: ignore[arg-type]
    shown: list[Any] = []
    f.on_event = shown.append
    try:
        assert f.start(lambda snap: shown.append("snapshot")) is None  # returns before the snapshot is read
        early = ev.SelectionChanged((1,))
        desk.listeners[0](early)
        run_posted(posted)
        assert shown == []  # held until the snapshot is drawn
        release.set()
        assert f.wait_commands()
        later = ev.SelectionChanged(())
        desk.listeners[0](later)
        run_posted(posted)
        assert shown == ["snapshot", early, later]
        assert f.in_flight == 0
    finally:
        release.set()
        f.close()


def test_keypad_keys_are_never_lost_or_reordered(frontend: DeskFrontend, desk: Desk, agent: FakeAgent,
                                                 posted: "queue.Queue[Callable[[], None]]") -> None:
    refused: list[ev.ActionFailed] = []
    frontend.on_event = lambda e: refused.append(e) if isinstance(e, ev.ActionFailed) else None
    for char in "1234567890*#x":  # x is no key of the Number field: the desk refuses it
        frontend.key(char)
    frontend.key("delete")
    assert frontend.wait_commands()
    assert desk.number == "1234567890*"
    frontend.key("clear")
    assert frontend.wait_commands()
    assert desk.number == ""
    run_posted(posted)
    assert [(e.action, e.code, e.params) for e in refused] == [("key", "unknown_key", {"key": "x"})]


def test_toggle_is_the_desks_own(frontend: DeskFrontend, desk: Desk, agent: FakeAgent) -> None:
    one, two = agent.ring(), agent.ring("sip:2002@pbx.test")
    desk.select([two])  # from elsewhere (kiosk ctl), after the screen last drew
    frontend.toggle_selected(one)
    assert frontend.wait_commands()
    assert desk.snapshot()["selection"] == [two, one]
    frontend.toggle_selected(two)
    assert frontend.wait_commands()
    assert desk.snapshot()["selection"] == [one]


def test_complete_repeats_the_action_with_the_number(frontend: DeskFrontend, agent: FakeAgent) -> None:
    frontend.complete("dial", "2001")
    frontend.complete("pickup", "sip:not-internal@x")  # refused by the desk, not by the screen
    frontend.complete("no such action", "1")
    assert frontend.wait_commands()
    assert [r[2] for r in agent.requests("dial")] == ["sip:92001@pbx.test"]


def test_a_refusal_that_never_reached_the_desk_is_shown_from_here() -> None:
    """A unit that cannot be reached (or a desk that is stopping) sends no event: the reply is shown."""
    posted: list[Callable[[], None]] = []
    reply = Outcome(False, "no connection to the unit: gone", code="link_down", params={"reason": "gone"},
                    action="hold")
    f = DeskFrontend(TableDesk(reply), posted.append)  # type: ignore[arg-type]
    shown: list[ev.Event] = []
    f.on_event = shown.append
    f.start()
    try:
        f.act("hold")
        assert f.wait_commands()
    finally:
        f.close()
    for fn in posted:
        fn()
    assert [(e.action, e.code, e.params) for e in shown if isinstance(e, ev.ActionFailed)] == [
        ("hold", "link_down", {"reason": "gone"})]


def test_a_refusal_the_desk_took_is_left_to_its_event(frontend: DeskFrontend,
                                                      posted: "queue.Queue[Callable[[], None]]") -> None:
    shown: list[ev.Event] = []
    frontend.on_event = shown.append
    frontend.act("hold")  # nothing to hold: the desk refuses it and says so with ActionFailed
    assert frontend.wait_commands()
    run_posted(posted)
    assert [(e.action, e.code) for e in shown if isinstance(e, ev.ActionFailed)] == [("hold", "no_selection")]
