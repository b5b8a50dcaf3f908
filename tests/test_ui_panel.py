"""The touchscreen panel, really drawn (SDL's offscreen driver through Mesa), over a real Desk on the FakeAgent.

Touches are Kivy's own test touches on the widgets' positions; what is asserted
is what the desk asked the agent, and what the screen shows after desk events.
Every wait is for work to be done (the worker's queue drained, the events run
on Kivy's thread), never for time to pass.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Iterator

import pytest

from .kivy_window import EventLoop, UnitTestTouch, Window  # noqa: E402  (first: it sets Kivy up)

from kivy.clock import Clock  # noqa: E402

from kiosk import events as ev  # noqa: E402
from kiosk.desk import AgentError, Desk  # noqa: E402
from kiosk.profile import Operator  # noqa: E402
from kiosk.ui.frontend import DeskFrontend  # noqa: E402

from .fakes import FakeAgent, make_profile  # noqa: E402

from kiosk.ui.panel import Panel  # noqa: E402


def pump(panel: Panel) -> None:
    """Run until the desk has done every command and Kivy's thread has shown every event."""
    for _ in range(200):
        assert panel.frontend.wait_commands(), "the desk worker is stuck"
        EventLoop.idle()
        if panel.frontend.in_flight == 0 and panel.frontend._queue.empty():
            break
    EventLoop.idle()  # layout after the last change
    EventLoop.idle()


def tap(panel: Panel, widget: Any, right: bool = False) -> None:
    x, y = widget.to_window(*widget.center)
    touch = UnitTestTouch(x, y)
    if right:
        touch.button = "right"
    touch.touch_down()
    EventLoop.idle()
    touch.touch_up()
    EventLoop.idle()
    pump(panel)


def type_number(panel: Panel, digits: str) -> None:
    for char in digits:
        tap(panel, panel.keypad.keys[char])


def make_panel(desk: Desk) -> Panel:
    frontend = DeskFrontend(desk, lambda fn: Clock.schedule_once(lambda dt: fn(), 0))
    panel = Panel(frontend, desk.profile)
    Window.add_widget(panel)
    panel.start()
    pump(panel)
    return panel


def drop(panel: Panel) -> None:
    if panel.popup is not None:
        panel.popup.dismiss(animation=False)
    panel.close()
    Window.remove_widget(panel)
    EventLoop.idle()


@pytest.fixture(autouse=True)
def no_clocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in these tests may depend on how long a step took on a loaded machine: a tap is
    never a long press, and a refusal does not leave the status line by itself meanwhile."""
    from kiosk.ui import status_log, table

    monkeypatch.setattr(table, "LONG_PRESS", 1e9)
    monkeypatch.setattr(status_log, "FRESH_SECONDS", 1e9)


@pytest.fixture
def panel(desk: Desk) -> Iterator[Panel]:
    p = make_panel(desk)
    yield p
    drop(p)


def caller(agent: FakeAgent, remote: str = "sip:2001@pbx.test") -> int:
    call = agent.ring(remote)
    agent.talking(call)
    return call


def row_texts(panel: Panel, row_id: int) -> dict[str, str]:
    """What a row's cells say; the state cell without its markup (a note is in `note_text`)."""
    row = panel.table.rows[row_id]
    return {key: cell.text for key, cell in row.cells.items()} | {"col_state": row.state_word}


# --- Call, Line, Number, Route ---------------------------------------------------------


def test_keypad_fills_number_and_call_dials_it_on_the_chosen_route(panel: Panel, desk: Desk,
                                                                   agent: FakeAgent) -> None:
    type_number(panel, "2001")
    assert desk.number == "2001" and panel.number_field.text == "2001"
    tap(panel, panel.route_choice)  # opens the list of the profile's routes
    trunk = next(item for item in panel.route_choice.dropdown.container.children if item.text == "Trunk")
    tap(panel, trunk)
    assert (desk.route, desk.line) == ("trunk", "op2")
    assert panel.route_choice.value == "trunk" and panel.route_choice.text.endswith("\nTrunk")
    assert panel.line_choice.value == "op2" and "\nOperator 2 · " in panel.line_choice.text
    tap(panel, panel.buttons["call"])
    [(row, line, uri, route)] = agent.requests("dial")
    assert (line, uri, route) == ("op2", "sip:82001@pbx2.test", "trunk")
    assert row_texts(panel, row)["col_state"] == "dialling"
    assert panel.table.rows[row].selected  # the desk selected the call it placed


def test_enter_on_a_keyboard_is_call_and_digits_type_the_number(panel: Panel, desk: Desk,
                                                                agent: FakeAgent) -> None:
    for char in "1002":
        Window.dispatch("on_key_down", 0, 0, char, [])
    Window.dispatch("on_key_down", 8, 0, None, [])  # Backspace
    Window.dispatch("on_key_down", 0, 0, "3", [])
    pump(panel)
    assert desk.number == "1003"
    Window.dispatch("on_key_down", 13, 0, None, [])
    pump(panel)
    assert [r[2] for r in agent.requests("dial")] == ["sip:91003@pbx.test"]


def test_line_choice_shows_registration(panel: Panel, agent: FakeAgent) -> None:
    assert panel.line_choice.text.endswith("\nOperator 1 · registered")  # from the desk's snapshot
    agent.register("op2", False, 503, "Service Unavailable")
    pump(panel)
    labels = [item.text for item in panel.line_choice.dropdown.container.children]
    assert "Operator 2\nnot registered" in labels and "Operator 1\nregistered" in labels


# --- the table and the selection -----------------------------------------------------------


def test_the_table_follows_row_events(panel: Panel, agent: FakeAgent) -> None:
    assert panel.table.empty.parent is panel.table
    call = agent.ring("sip:2001@pbx.test")
    pump(panel)
    assert row_texts(panel, call) | {"col_time": ""} == {
        "col_line": "Operator 1", "col_dir": "in", "col_remote": "2001", "col_number": "", "col_state": "ringing",
        "col_note": "", "col_time": "", "col_rec": ""}
    assert panel.table.empty.parent is None
    agent.talking(call)
    pump(panel)
    assert row_texts(panel, call)["col_state"] == "talking"
    agent.ended(call)
    pump(panel)
    assert call not in panel.table.rows and call in panel.table.ended  # shown ended for a few seconds


def test_a_touch_on_a_row_selects_it_and_multi_select_adds_rows(panel: Panel, desk: Desk,
                                                               agent: FakeAgent) -> None:
    one, two, three = caller(agent), agent.ring("sip:2002@pbx.test"), agent.ring("sip:2003@pbx.test")
    pump(panel)
    tap(panel, panel.table.rows[two])
    assert desk.selection == [two]
    assert [r for r, w in panel.table.rows.items() if w.selected] == [two]
    tap(panel, panel.multi)  # "select several" on
    tap(panel, panel.table.rows[one])
    assert desk.selection == [two, one]
    tap(panel, panel.table.rows[two])  # a second touch takes a row out again
    assert desk.selection == [one]
    tap(panel, panel.multi)  # off: a tap selects only that row
    panel.table.show_row(three)
    pump(panel)
    tap(panel, panel.table.rows[three], right=True)  # a right click adds, as a long press does
    assert desk.selection == [one, three]
    tap(panel, panel.table.rows[two])
    assert desk.selection == [two]
    assert [r for r, w in panel.table.rows.items() if w.selected] == [two]


def test_the_highlight_is_the_desks_selection_not_the_touch(panel: Panel, desk: Desk, agent: FakeAgent) -> None:
    one, two = caller(agent), agent.ring("sip:2002@pbx.test")
    desk.select([two])  # e.g. from `kiosk ctl select 2`
    pump(panel)
    assert [r for r, w in panel.table.rows.items() if w.selected] == [two]
    tap(panel, panel.table.rows[one])
    assert [r for r, w in panel.table.rows.items() if w.selected] == [one]


# --- actions on the selected call -----------------------------------------------------------


def test_call_control_buttons_issue_desk_commands_on_the_selected_call(panel: Panel, desk: Desk,
                                                                       agent: FakeAgent) -> None:
    type_number(panel, "3003")  # before the call is in conversation: then the keys are its DTMF tones
    call = agent.ring()
    pump(panel)
    tap(panel, panel.buttons["answer"])
    assert agent.requests("answer") == [(call,)]
    agent.talking(call)
    tap(panel, panel.buttons["hold"])
    assert agent.requests("hold") == [(call,)]
    assert row_texts(panel, call)["col_state"] == "on hold"
    tap(panel, panel.buttons["connect"])
    assert agent.requests("unhold") == [(call,)]
    tap(panel, panel.buttons["record_start"])
    assert [r[0] for r in agent.requests("record")] == [call]
    assert row_texts(panel, call)["col_rec"] == "REC"
    tap(panel, panel.buttons["record_stop"])
    assert agent.requests("record")[-1] == (call, None)
    assert row_texts(panel, call)["col_rec"] == ""
    tap(panel, panel.buttons["transfer_quick"])
    assert agent.requests("transfer") == [(call, "sip:3003@pbx.test")]
    tap(panel, panel.buttons["hangup"])
    assert agent.requests("hangup") == [(call,)]


def test_consult_then_confirm(panel: Panel, desk: Desk, agent: FakeAgent) -> None:
    type_number(panel, "3003")  # before the call is in conversation: then the keys are its DTMF tones
    b = caller(agent)
    tap(panel, panel.buttons["transfer_consult"])
    assert agent.requests("hold") == [(b,)]
    [(c, _, uri, _)] = agent.requests("dial")
    assert uri == "sip:3003@pbx.test"
    agent.talking(c)
    tap(panel, panel.buttons["transfer_confirm"])
    assert agent.requests("transfer_replaces") == [(b, c)]


def test_conference_joins_the_selected_rows(panel: Panel, desk: Desk, agent: FakeAgent) -> None:
    b, c = caller(agent), caller(agent, "sip:2002@pbx.test")
    pump(panel)
    tap(panel, panel.table.rows[b])
    tap(panel, panel.buttons["hold"])
    tap(panel, panel.table.rows[c])
    tap(panel, panel.buttons["hold"])
    tap(panel, panel.multi)
    tap(panel, panel.table.rows[b])
    assert desk.selection == [c, b]
    tap(panel, panel.buttons["conference"])
    assert agent.requests("conference") == [([b, c],)]
    assert {row_texts(panel, r)["col_state"] for r in (b, c)} == {"in conference"}


def test_pickup_uses_number(panel: Panel, desk: Desk, agent: FakeAgent) -> None:
    agent.fail_next("dial", "busy")  # the dial is what matters here; no call is left waiting
    type_number(panel, "1002")
    tap(panel, panel.buttons["pickup"])
    assert [r[2] for r in agent.requests("dial")] == ["sip:*81002@pbx.test"]


# --- the number dialog and the status line ----------------------------------------------------


def test_number_required_opens_the_keypad_popup_and_completes_the_action(panel: Panel, desk: Desk,
                                                                         agent: FakeAgent) -> None:
    call = caller(agent)
    pump(panel)
    tap(panel, panel.buttons["transfer_quick"])
    popup = panel.popup
    assert popup is not None and popup.action == "transfer_quick"
    assert popup.title == "Number for: Quick transfer"
    assert panel.status.current == ""  # the popup is the answer, not a refusal
    assert agent.requests("transfer") == []
    for char in "30033":
        tap(panel, popup.keypad.keys[char])
    tap(panel, popup.keypad.keys["del"])
    assert popup.display.text == "3003"
    tap(panel, popup.ok)
    assert panel.popup is None
    assert agent.requests("transfer") == [(call, "sip:3003@pbx.test")]


def test_the_number_popup_can_be_cancelled(panel: Panel, agent: FakeAgent) -> None:
    tap(panel, panel.buttons["call"])
    popup = panel.popup
    assert popup is not None and popup.action == "dial"
    tap(panel, popup.cancel)
    assert panel.popup is None and agent.requests("dial") == []


def test_a_refusal_shows_its_reason_until_the_next_touch(panel: Panel, agent: FakeAgent) -> None:
    tap(panel, panel.buttons["hold"])
    assert panel.status.current == "Hold: no call selected"
    caller(agent)
    tap(panel, panel.buttons["record_stop"])
    assert panel.status.current == "Record stop: 2001 is not being recorded"
    tap(panel, panel.keypad.keys["5"])
    assert panel.status.current == ""


def test_an_alert_shows_in_the_status_line(panel: Panel, agent: FakeAgent) -> None:
    agent.emit(ev.Alert("audio device lost: calls go on without local audio"))
    pump(panel)
    assert panel.status.current == "audio device lost: calls go on without local audio"


def test_mute_refused_by_the_agent_says_why(panel: Panel, agent: FakeAgent) -> None:
    agent.fail_next("mute", AgentError("this unit has no headset configured ([audio] device)", "no_headset"))
    tap(panel, panel.buttons["mute"])
    assert panel.status.current == "Mute: this unit has no headset configured ([audio] device)"
    assert panel.buttons["mute"].text == panel.texts["mute"]


def test_mute_button_follows_the_desk_whoever_mutes(panel: Panel, desk: Desk) -> None:
    """A mute from `kiosk ctl` or a GPIO key shows on the screen too (the MuteChanged event)."""
    button = panel.buttons["mute"]
    tap(panel, button)
    assert button.text == panel.texts["unmute"] and button.active
    assert desk.mute("off").wait().data["muted"] is False  # as the control socket does it
    pump(panel)
    assert button.text == panel.texts["mute"] and not button.active
    desk.mute("on").wait()
    pump(panel)
    assert button.text == panel.texts["unmute"] and button.active


# --- what can be done now: dimmed buttons ------------------------------------------------------------

#: The screen's action buttons that cannot act on an empty unit (Call, Pickup and Mute can).
NOTHING_TO_ACT_ON = {"answer", "hangup", "hold", "connect", "transfer_quick", "transfer_consult", "transfer_confirm",
                     "conference", "record_start", "record_stop"}


def dimmed(panel: Panel) -> set[str]:
    return {key for key, button in panel.buttons.items() if button.dimmed}


def screen_colour(path: str, widget: Any) -> tuple[int, ...]:
    """The colour (0-255 RGB) drawn in a screenshot just inside a widget's lower left corner (its background)."""
    from kivy.core.image import Image as CoreImage

    image = CoreImage(path, keep_data=True)
    x, y = widget.to_window(widget.x + 5, widget.y + 5)
    r, g, b, _a = image.read_pixel(int(x), image.size[1] - int(y) - 1)
    return round(r * 255), round(g * 255), round(b * 255)


def near(colour: tuple[int, ...], rgba: tuple[float, ...], scale: float = 1.0) -> bool:
    return all(abs(c - round(v * scale * 255)) <= 3 for c, v in zip(colour, rgba[:3]))


def test_the_buttons_come_from_the_command_table(panel: Panel) -> None:
    from kiosk.commands import screen_bindings

    bindings = screen_bindings()
    assert set(panel.buttons) == set(bindings) == {
        "call", "answer", "hangup", "hold", "connect", "transfer_quick", "transfer_consult", "transfer_confirm",
        "conference", "pickup", "record_start", "record_stop", "mute", "dnd"}
    assert panel.buttons["dnd"].parent is panel.view_bar  # beside the status line, not in the action grid
    assert {key: action.id for key, action in panel.bindings.items()} == {k: a.id for k, a in bindings.items()}


def test_buttons_are_dimmed_while_their_action_cannot_act(panel: Panel, desk: Desk, agent: FakeAgent,
                                                         tmp_path: Any) -> None:
    from kiosk.ui.theme import AMBER, DIM_BACKGROUND, GREEN

    assert dimmed(panel) == NOTHING_TO_ACT_ON  # from the desk's snapshot: nothing rings, nothing to act on
    call = agent.ring("sip:2001@pbx.test")
    pump(panel)  # AvailabilityChanged: Answer and Hang up can act on the ringing call; Hold cannot yet
    assert dimmed(panel) == NOTHING_TO_ACT_ON - {"answer", "hangup"}
    tap(panel, panel.buttons["hold"])  # a dimmed button still sends its command: the desk says why not
    assert agent.requests("hold") == []
    assert panel.status.current == "Hold: 2001 is ringing: only a call in conversation can be held"

    path = Window.screenshot(name=str(tmp_path / "dimmed.png"))  # Answer lit, Hold dimmed, the refusal shown
    assert path
    assert near(screen_colour(path, panel.buttons["answer"]), GREEN)
    # Connect, not Hold: a test touch leaves the button it tapped drawn pressed (it has no end time).
    assert near(screen_colour(path, panel.buttons["connect"]), AMBER, DIM_BACKGROUND)
    assert near(screen_colour(path, panel.buttons["call"]), GREEN)

    tap(panel, panel.buttons["answer"])
    agent.talking(call)
    pump(panel)
    assert "answer" in dimmed(panel) and not {"hold", "transfer_quick", "record_start", "hangup"} & dimmed(panel)
    assert not panel.buttons["hold"].dimmed and panel.buttons["hold"].background_color == list(AMBER)

    # The unit's socket came back: its snapshot says what can be done now.
    snap = desk.snapshot()
    snap["available"] = {action.id: {"code": "no_selection", "params": {}, "message": "", "row": None}
                         for action in panel.bindings.values()}
    panel.on_event(ev.LinkChanged(True, snapshot=snap))
    assert dimmed(panel) == set(panel.buttons)


#: How soon a Hang up must reach the agent although another action waits for it.
HANGUP_WITHIN = 0.1


def tap_only(widget: Any) -> None:
    """A tap, and nothing waited for: not the worker, not the desk (what a finger does)."""
    touch = UnitTestTouch(*widget.to_window(*widget.center))
    touch.touch_down()
    EventLoop.idle()
    touch.touch_up()


def agent_got(agent: FakeAgent, action: str, count: int = 1, timeout: float = 5.0) -> None:
    """Wait until the agent has received `count` `action` requests (the pending action reached it)."""
    import time

    deadline = time.monotonic() + timeout
    while len(agent.requests(action)) < count:
        assert time.monotonic() < deadline, f"the agent never got {action}"
        EventLoop.idle()


def _pending_pickup(panel: Panel, agent: FakeAgent) -> tuple[str, Any, int]:
    type_number(panel, "1002")
    stalled = agent.stall_next("dial")
    tap_only(panel.buttons["pickup"])  # the INVITE to *81002 never gets its answer
    agent_got(agent, "dial")
    [(row, _line, uri, _route)] = agent.requests("dial")
    assert uri == "sip:*81002@pbx.test"
    return "pickup", stalled, row


def _pending_consult(panel: Panel, agent: FakeAgent) -> tuple[str, Any, int]:
    type_number(panel, "3003")  # before the call is in conversation: then the keys are its DTMF tones
    b = caller(agent)
    stalled = agent.stall_next("hold")
    tap_only(panel.buttons["transfer_consult"])  # holds the caller first: the hold never completes
    agent_got(agent, "hold")
    assert agent.requests("hold") == [(b,)] and agent.requests("dial") == []
    return "transfer_consult", stalled, b


def _pending_join(panel: Panel, agent: FakeAgent) -> tuple[str, Any, int]:
    type_number(panel, "3003")  # before the call is in conversation: then the keys are its DTMF tones
    b = caller(agent)
    tap(panel, panel.buttons["conference"])  # holds the first party, dials the next
    [(c, *_)] = agent.requests("dial")
    agent.talking(c)
    pump(panel)
    stalled = agent.stall_next("conference")
    tap_only(panel.buttons["conference"])  # join: the agent never says it has bridged them
    agent_got(agent, "conference")
    assert agent.requests("conference") == [([b, c],)]
    return "conference", stalled, c


@pytest.mark.parametrize("pending", [_pending_pickup, _pending_consult, _pending_join],
                         ids=["pickup", "consult", "conference join"])
def test_a_hang_up_tap_overtakes_a_pending_action(panel: Panel, desk: Desk, agent: FakeAgent, pending: Any) -> None:
    import time

    finished: list[ev.Event] = []
    desk.subscribe(lambda e: finished.append(e) if isinstance(e, (ev.ActionDone, ev.ActionFailed)) else None)
    action, stalled, row = pending(panel, agent)  # not waited for: the worker may still be sending it
    before = [e for e in finished if e.action == action]  # the join's first step (the dial) is done

    button = panel.buttons["hangup"]
    touch = UnitTestTouch(*button.to_window(*button.center))
    touch.touch_down()
    EventLoop.idle()
    tapped = time.monotonic()
    touch.touch_up()  # the button's on_release: the command goes to the worker, behind the pending one
    while not agent.requests("hangup") and time.monotonic() - tapped < 5:
        time.sleep(0.001)
    took = time.monotonic() - tapped
    assert agent.requests("hangup") == [(row,)], "the Hang up never reached the agent"
    assert took < HANGUP_WITHIN, f"the Hang up took {took * 1000:.0f} ms to reach the agent"
    assert not stalled.done()  # the other action still waits for its SIP answer...
    assert [e for e in finished if e.action == action] == before  # ...and has not finished

    stalled.set_result(None)  # let it finish, so that nothing is left waiting after the test
    for call in list(desk.snapshot()["calls"]):
        agent.ended(call["id"])
    pump(panel)


# --- languages and the picture --------------------------------------------------------------------


def russian_panel(agent: FakeAgent) -> Panel:
    """A panel on a desk whose operator reads Russian, every line registered."""
    profile = dataclasses.replace(make_profile(), operator=Operator("Оператор", "ru"))
    desk = Desk(profile, agent)
    desk.start()
    agent.register_all(profile)
    return make_panel(desk)


def test_russian_labels(agent: FakeAgent) -> None:
    panel = russian_panel(agent)
    try:
        words = {key: b.text.replace("\n", " ") for key, b in panel.buttons.items()}
        assert words["call"] == "Позвонить" and words["hold"] == "Удержание"
        assert words["connect"] == "Подключить" and words["pickup"] == "Перехват"
        assert words["transfer_quick"] == "Быстрый перевод"
        assert words["transfer_consult"] == "Перевод с консультацией"
        assert words["transfer_confirm"] == "Подтвердить перевод"
        assert words["conference"] == "Конференция" and words["record_start"].startswith("Запись")
        call = caller(agent)
        pump(panel)
        assert row_texts(panel, call)["col_state"] == "разговор"
        tap(panel, panel.buttons["connect"])
        assert panel.status.current.startswith("Подключить: ")
    finally:
        drop(panel)


def test_russian_refusals_alerts_notes_and_the_number_popup_by_code(agent: FakeAgent) -> None:
    panel = russian_panel(agent)
    try:
        tap(panel, panel.buttons["hold"])
        assert panel.status.current == "Удержание: не выбран вызов"
        call = agent.ring()
        pump(panel)
        tap(panel, panel.buttons["hold"])  # the call's state is a parameter, translated too
        assert panel.status.current == "Удержание: вызов 2001: звонит; удержать можно только разговор"
        agent.emit(ev.Alert("network: eth0 down; calls and registrations wait for it", "network_down",
                            {"reason": "eth0 down"}))
        pump(panel)
        assert panel.status.current == "сеть: eth0 down; вызовы и регистрации ждут её"

        tap(panel, panel.buttons["answer"])
        agent.talking(call)
        tap(panel, panel.buttons["transfer_quick"])  # no number yet: the desk asks for one
        popup = panel.popup
        assert popup is not None and popup.action == "transfer_quick"
        assert popup.title == "Номер для: Быстрый перевод"
        assert panel.status.current == ""  # the popup is the answer to "number required", not a refusal
        for char in "3003":
            tap(panel, popup.keypad.keys[char])
        tap(panel, popup.ok)
        assert agent.requests("transfer") == [(call, "sip:3003@pbx.test")]
        assert panel.table.rows[call].note_text == "перевод на 3003"  # the row's note, by its key, the party as the table names it
        agent.transfer_status(call, 603, "Declined")  # the transfer fails long after its command was answered
        pump(panel)
        assert panel.status.current == "Быстрый перевод: перевод вызова 2001 не удался: 603 Declined; вызов остаётся у вас"
        assert panel.table.rows[call].note_text == "перевод: 603 Declined"
    finally:
        drop(panel)


def test_a_screenshot_of_the_panel_is_not_blank(panel: Panel, agent: FakeAgent, tmp_path: Any) -> None:
    from kivy.core.image import Image as CoreImage

    caller(agent)
    agent.ring("sip:2002@pbx.test")
    type_number(panel, "2001")
    path = Window.screenshot(name=str(tmp_path / "panel.png"))
    assert path and os.path.getsize(path) > 5000
    image = CoreImage(path, keep_data=True)
    assert image.size == (800, 480)
    pixels = image.texture.pixels
    colours = {pixels[i:i + 3] for i in range(0, len(pixels), 4 * 97)}
    assert len(colours) > 8, f"the screenshot {path} looks blank ({len(colours)} colours)"


# --- the panel in its own process: the same screen over the control socket ------------------------------


def until(panel: Panel, pred: Any, timeout: float = 20.0) -> None:
    """Run Kivy's loop until pred() holds: events come over a socket, on the RemoteDesk's thread.
    The timeout only ends a broken test; a passing one waits for the event, not for time."""
    import time

    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "the panel never showed it"
        pump(panel)


def test_the_panel_over_the_control_socket_and_a_unit_that_restarts(desk: Desk, agent: FakeAgent) -> None:
    import shutil
    from pathlib import Path

    from kiosk.control import ControlServer
    from kiosk.ui.remote import RemoteDesk

    workdir = Path(tempfile.mkdtemp(prefix="kiosk-ui-"))
    server = ControlServer(desk, workdir / "control.sock")
    server.start()
    remote = RemoteDesk(server.path, desk.profile)
    panel = make_panel(remote)  # type: ignore[arg-type]
    try:
        assert panel.line_choice.text.endswith("\nOperator 1 · registered")  # the unit's snapshot
        type_number(panel, "2001")
        assert desk.number == "2001"
        tap(panel, panel.buttons["call"])
        [(row, _, uri, _)] = agent.requests("dial")
        assert uri == "sip:92001@pbx.test"
        until(panel, lambda: row in panel.table.rows and panel.table.rows[row].selected)
        until(panel, lambda: panel.number_field.text == "")  # Call consumed the Number field
        agent.talking(row)
        until(panel, lambda: row_texts(panel, row)["col_state"] == "talking")
        tap(panel, panel.buttons["connect"])  # refused by the desk: its reason comes back as an event
        until(panel, lambda: panel.status.current.startswith("Connect: "))

        server.stop()  # the unit restarts
        until(panel, lambda: panel.status.current == panel.texts["link_lost"])
        tap(panel, panel.buttons["hold"])  # nothing to send it to: the screen says why, and does not crash
        assert panel.status.current == panel.texts["link_lost"]
        agent.ended(row)  # gone while the panel could not hear it
        other = agent.ring("sip:2002@pbx.test")
        server = ControlServer(desk, workdir / "control.sock")
        server.start()
        until(panel, lambda: panel.status.current == "")
        until(panel, lambda: list(panel.table.rows) == [other])
        tap(panel, panel.table.rows[other])
        until(panel, lambda: panel.table.rows[other].selected)
        assert desk.selection == [other]
    finally:
        drop(panel)
        remote.close()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
