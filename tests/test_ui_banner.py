"""The panel's incoming-call banner, status messages, row menu and state buttons, really drawn and tapped.

Same rig as test_ui_panel.py (SDL offscreen, Kivy's own test touches, a real
Desk on the FakeAgent). What is asserted is what the desk asked the agent and
what the screen shows.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterator

import pytest

from .test_ui_panel import Desk, EventLoop, FakeAgent, Panel, Window, drop, make_panel, pump, tap
from .test_ui_panel import caller as _caller
from .fakes import make_profile


@pytest.fixture(autouse=True)
def no_clocks(monkeypatch: pytest.MonkeyPatch) -> None:
    from kiosk.ui import status_log, table

    monkeypatch.setattr(table, "LONG_PRESS", 1e9)
    monkeypatch.setattr(status_log, "FRESH_SECONDS", 1e9)


def caller(agent: FakeAgent, remote: str = "sip:2001@pbx.test") -> int:
    """A call in conversation, drawn (its events shown on Kivy's thread)."""
    call = _caller(agent, remote)
    EventLoop.idle()
    EventLoop.idle()
    return call


@pytest.fixture
def panel(desk: Desk) -> Iterator[Panel]:
    p = make_panel(desk)
    yield p
    drop(p)


def test_a_call_coming_in_while_talking_shows_a_banner_whose_answer_takes_that_call(
        panel: Panel, desk: Desk, agent: FakeAgent) -> None:
    for digit in "55":  # a number half typed: the banner must not disturb it
        tap(panel, panel.keypad.keys[digit])
    talking = caller(agent)  # (typed before: in conversation the keys are the call's DTMF tones)
    tap(panel, panel.table.rows[talking])
    ringing = agent.ring('"Bob Stone" <sip:2002@pbx.test>', line="op2")
    pump(panel)

    banner = panel.banner
    assert banner.shown and banner.rows == [ringing]
    assert banner.name.text == "Bob Stone" and banner.detail.text == "2002"
    assert "Operator 2" in banner.title.text  # the line's label, not its id
    assert desk.selection == [talking]  # nothing moved
    tap(panel, banner.answer_button)

    assert agent.requests("hold") == [(talking,)]  # the call in progress is held first
    assert agent.requests("answer") == [(ringing,)]
    assert desk.selection == [ringing]  # the answered call is the one the panel now acts on
    assert desk.number == "55"
    agent.talking(ringing)
    pump(panel)
    assert not banner.shown and banner.parent is None


def test_reject_on_the_banner_rejects_only_that_call(panel: Panel, desk: Desk, agent: FakeAgent) -> None:
    talking = caller(agent)
    tap(panel, panel.table.rows[talking])
    ringing = agent.ring("sip:2002@pbx.test")
    pump(panel)
    tap(panel, panel.banner.reject_button)
    assert agent.requests("hangup") == [(ringing,)]
    assert agent.requests("hold") == []
    assert desk.selection == [talking]


def test_a_second_call_queues_in_the_banner_oldest_first(panel: Panel, agent: FakeAgent) -> None:
    first = agent.ring('"First" <sip:2002@pbx.test>')
    second = agent.ring('"Second" <sip:2003@pbx.test>')
    pump(panel)
    assert panel.banner.rows == [first, second]
    assert panel.banner.name.text == "First" and "+1 waiting" in panel.banner.title.text
    agent.ended(first, 487, "Request Terminated")  # the caller gave up
    pump(panel)
    assert panel.banner.rows == [second] and panel.banner.name.text == "Second"
    assert "waiting" not in panel.banner.title.text


def test_the_banner_floats_above_an_open_number_prompt_and_goes_back_when_it_closes(
        panel: Panel, desk: Desk, agent: FakeAgent) -> None:
    talking = caller(agent)
    tap(panel, panel.table.rows[talking])
    tap(panel, panel.buttons["transfer_quick"])  # no number: the prompt opens
    assert panel.popup is not None
    ringing = agent.ring('"Bob" <sip:2002@pbx.test>')
    pump(panel)
    assert Window.children[0] is panel.banner  # above the prompt
    bx, by = panel.banner.pos
    px, py = panel.popup.pos
    assert by >= py + panel.popup.height - 1  # and not over it: the prompt stays usable
    tap(panel, panel.banner.answer_button)
    assert agent.requests("answer") == [(ringing,)]
    panel.popup.dismiss(animation=False)
    pump(panel)
    agent.ringing(ringing)  # still ringing (the fake answered nothing): back in the table's column
    pump(panel)
    assert panel.banner.parent is panel.table_column


def test_messages_stay_readable_with_their_times_and_name_calls_by_their_party(
        panel: Panel, agent: FakeAgent) -> None:
    agent.ring('"Alice" <sip:2001@pbx.test>')
    agent.ring("sip:2002@pbx.test")
    pump(panel)
    for _ in range(12):
        tap(panel, panel.buttons["hold"])  # nothing selected: refused, each time
    assert panel.status.current == "Hold: no call selected"
    tap(panel, panel.keypad.keys["1"])  # a touch elsewhere: the message turns quiet but stays
    assert panel.status.current == "" and panel.status.text.endswith("Hold: no call selected")
    tap(panel, panel.status)
    view = panel.status.view
    assert view is not None
    lines = [w for w in _walk(view) if type(w).__name__ == "MessageLine"]
    assert len(lines) == 10  # the last ten
    assert all(line.text[2] == ":" and line.text.endswith("Hold: no call selected") for line in lines)
    view.dismiss(animation=False)
    pump(panel)


def test_a_long_press_opens_the_rows_menu_and_its_action_acts_on_that_row(
        panel: Panel, desk: Desk, agent: FakeAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    from kivy.tests.common import UnitTestTouch

    from kiosk.ui import table

    one = caller(agent, "sip:2001@pbx.test")
    two = caller(agent, "sip:2002@pbx.test")
    tap(panel, panel.table.rows[one])
    monkeypatch.setattr(table, "LONG_PRESS", 0.05)
    row = panel.table.rows[two]
    x, y = row.to_window(*row.center)
    touch = UnitTestTouch(x, y)
    touch.touch_down()
    deadline = time.monotonic() + 5
    while panel.menu is None and time.monotonic() < deadline:
        EventLoop.idle()
    touch.touch_up()
    pump(panel)
    menu = panel.menu
    assert menu is not None and menu.row_id == two
    assert {"select_row", "hold", "hangup", "transfer_quick"} <= set(menu.items)
    assert desk.selection == [one]  # opening the menu selects nothing
    tap(panel, menu.items["hold"])
    assert agent.requests("hold") == [(two,)]  # the row the menu was opened on
    assert desk.selection == [two]
    assert panel.menu is None


def test_hold_and_record_show_the_state_of_the_selected_call(panel: Panel, desk: Desk, agent: FakeAgent) -> None:
    call = caller(agent)
    tap(panel, panel.table.rows[call])
    hold = panel.buttons["hold"]
    assert not hold.active
    tap(panel, hold)
    assert hold.active and hold.text == panel.texts["held"]
    tap(panel, panel.buttons["connect"])
    assert not hold.active
    tap(panel, panel.buttons["record_start"])
    assert panel.buttons["record_start"].active


def test_select_several_goes_off_after_the_join_it_served(panel: Panel, desk: Desk, agent: FakeAgent) -> None:
    one, two = caller(agent, "sip:2001@pbx.test"), caller(agent, "sip:2002@pbx.test")
    tap(panel, panel.multi)
    assert panel.multi_on and panel.multi.active
    tap(panel, panel.table.rows[one])
    tap(panel, panel.table.rows[two])
    assert sorted(desk.selection) == [one, two]
    tap(panel, panel.buttons["conference"])
    assert agent.requests("conference") == [([one, two],)] or agent.requests("conference") == [([two, one],)]
    assert not panel.multi_on and not panel.multi.active
    tap(panel, panel.table.rows[one])
    assert desk.selection == [one]  # a tap selects one call again


def test_the_only_call_is_shown_selected_and_the_operator_name_and_every_line_are_on_the_strip(
        agent: FakeAgent) -> None:
    from kiosk.profile import Operator

    profile = dataclasses.replace(make_profile(), operator=Operator(name="Anna Petrova", language="en"))
    desk = Desk(profile, agent)
    desk.start()
    agent.register_all(profile)
    agent.register("op2", False, 503, "Service Unavailable")
    panel = make_panel(desk)
    try:
        call = agent.ring()
        pump(panel)
        assert panel.table.rows[call].selected
        strip = panel.identity
        assert strip.operator.text == "Operator: Anna Petrova"
        assert "Operator 1: registered" in strip.lines.text and "Operator 2: not registered" in strip.lines.text
    finally:
        drop(panel)
        desk.close()


def _walk(widget: Any) -> Iterator[Any]:
    yield widget
    for child in widget.children:
        yield from _walk(child)


def test_a_new_profile_shows_its_routes_and_labels_without_a_restart(panel: Panel, desk: Desk) -> None:
    from kiosk import events as ev
    from kiosk.profile import Line, Route

    profile = desk.profile
    lines = tuple(dataclasses.replace(line, label=f"{line.label} (new)") if line.id == "op1" else line
                  for line in profile.lines)
    routes = (*profile.routes, Route("intl", "International", "op1", prefix="810"))
    assert isinstance(lines[0], Line)
    desk.apply_profile(dataclasses.replace(profile, lines=lines, routes=routes))
    desk.on_desk(lambda: desk.announce(ev.ProfileChanged("test", ["a route, a label"], []), []))
    pump(panel)
    pump(panel)
    assert ("intl", "International") in panel.route_choice.options
    assert "Operator 1 (new): registered" in panel.identity.lines.text
    assert "Operator 1 (new)" in panel.line_choice.text
