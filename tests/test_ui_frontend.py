"""The touchscreen's desk link without a screen: commands run on its worker, never on the caller's
thread, in the order given; desk events from any thread reach the UI only through `post`."""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

import pytest

from kiosk import events as ev
from kiosk.desk import Desk
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


def test_a_command_that_waits_for_the_agent_does_not_block_the_ui(frontend: DeskFrontend, agent: FakeAgent,
                                                                   desk: Desk) -> None:
    call = agent.ring()
    agent.talking(call)
    stalled = agent.stall_next("hold")
    frontend.hold()  # returns at once although the agent has not answered
    assert not frontend.wait_commands(timeout=0.2)
    stalled.set_result(None)
    assert frontend.wait_commands()
    assert agent.requests("hold") == [(call,)]


def test_desk_events_reach_the_ui_only_through_post(frontend: DeskFrontend, agent: FakeAgent,
                                                    posted: "queue.Queue[Callable[[], None]]") -> None:
    seen: list[tuple[ev.Event, str]] = []
    frontend.on_event = lambda event: seen.append((event, threading.current_thread().name))
    run_posted(posted)
    seen.clear()
    thread = threading.Thread(target=agent.ring, name="agent")  # as the agent thread delivers it
    thread.start()
    thread.join()
    assert seen == [] and frontend.in_flight == 1
    run_posted(posted)
    assert [type(e) for e, _ in seen] == [ev.RowChanged]
    assert {name for _, name in seen} == {threading.current_thread().name}
    assert frontend.in_flight == 0


def test_keypad_digits_are_never_lost_or_reordered(frontend: DeskFrontend, desk: Desk) -> None:
    for char in "1234567890*#x":  # x is not a dial character: ignored
        frontend.type_digit(char)
    frontend.delete_digit()
    assert frontend.wait_commands()
    assert desk.number == "1234567890*"
    frontend.clear_number()
    assert frontend.wait_commands()
    assert desk.number == ""


def test_toggle_reads_the_desks_selection_when_it_runs(frontend: DeskFrontend, desk: Desk, agent: FakeAgent) -> None:
    one, two = agent.ring(), agent.ring("sip:2002@pbx.test")
    desk.select([two])  # from elsewhere (kiosk ctl), after the screen last drew
    frontend.toggle_selected(one)
    assert frontend.wait_commands()
    assert desk.selection == [two, one]
    frontend.toggle_selected(two)
    assert frontend.wait_commands()
    assert desk.selection == [one]


def test_complete_repeats_the_action_with_the_number(frontend: DeskFrontend, agent: FakeAgent) -> None:
    frontend.complete("dial", "2001")
    frontend.complete("pickup", "sip:not-internal@x")  # refused by the desk, not by the screen
    frontend.complete("no such action", "1")
    assert frontend.wait_commands()
    assert [r[2] for r in agent.requests("dial")] == ["sip:92001@pbx.test"]
