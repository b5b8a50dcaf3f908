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

os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("KIVY_HOME", tempfile.mkdtemp(prefix="kiosk-test-kivy-"))

from kiosk.ui.app import configure_kivy  # noqa: E402  (sets Kivy's environment before kivy loads)

configure_kivy(fullscreen=False)
from kivy.config import Config  # noqa: E402

Config.set("graphics", "maxfps", "500")  # each EventLoop.idle() sleeps 1/maxfps: tests need no pacing

from kivy.base import EventLoop  # noqa: E402
from kivy.clock import Clock  # noqa: E402
from kivy.tests.common import UnitTestTouch  # noqa: E402

from kiosk import events as ev  # noqa: E402
from kiosk.desk import Desk  # noqa: E402
from kiosk.profile import Operator  # noqa: E402
from kiosk.ui.frontend import DeskFrontend  # noqa: E402

from .fakes import FakeAgent, make_profile  # noqa: E402

EventLoop.ensure_window()
from kivy.core.window import Window  # noqa: E402

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
    from kiosk.ui import panel as panel_module, table

    monkeypatch.setattr(table, "LONG_PRESS", 1e9)
    monkeypatch.setattr(panel_module, "STATUS_SECONDS", 1e9)


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
    return {key: cell.text for key, cell in panel.table.rows[row_id].cells.items()}


# --- Call, Line, Number, Route ---------------------------------------------------------


def test_keypad_fills_number_and_call_dials_it_on_the_chosen_route(panel: Panel, desk: Desk,
                                                                   agent: FakeAgent) -> None:
    type_number(panel, "2001")
    assert desk.number == "2001" and panel.number_field.text == "2001"
    tap(panel, panel.route_choice)  # opens the list of the profile's routes
    trunk = next(item for item in panel.route_choice.dropdown.container.children if item.text == "Trunk")
    tap(panel, trunk)
    assert (desk.route, desk.line) == ("trunk", "op2")
    assert panel.route_choice.text == "Trunk" and panel.line_choice.text.startswith("Operator 2")
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
    assert panel.line_choice.text == "Operator 1\nregistered"  # from the desk's snapshot
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
        "col_line": "op1", "col_dir": "in", "col_remote": "2001@pbx.test", "col_state": "ringing",
        "col_time": "", "col_rec": ""}
    assert panel.table.empty.parent is None
    agent.talking(call)
    pump(panel)
    assert row_texts(panel, call)["col_state"] == "talking"
    agent.ended(call)
    pump(panel)
    assert call not in panel.table.rows and panel.table.empty.parent is panel.table


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
    type_number(panel, "3003")
    tap(panel, panel.buttons["transfer_quick"])
    assert agent.requests("transfer") == [(call, "sip:3003@pbx.test")]
    tap(panel, panel.buttons["hangup"])
    assert agent.requests("hangup") == [(call,)]


def test_consult_then_confirm(panel: Panel, desk: Desk, agent: FakeAgent) -> None:
    b = caller(agent)
    type_number(panel, "3003")
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
    assert popup is not None and popup.action == "quick transfer"
    assert popup.title == "Number for: Quick transfer"
    assert panel.status.text == ""  # the popup is the answer, not a refusal
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
    assert panel.status.text == "Hold: no call selected"
    caller(agent)
    tap(panel, panel.buttons["record_stop"])
    assert panel.status.text == "Record stop: call 1 is not being recorded"
    tap(panel, panel.keypad.keys["5"])
    assert panel.status.text == ""


def test_an_alert_shows_in_the_status_line(panel: Panel, agent: FakeAgent) -> None:
    agent.emit(ev.Alert("audio device lost: calls go on without local audio"))
    pump(panel)
    assert panel.status.text == "audio device lost: calls go on without local audio"


def test_mute_refused_by_an_agent_without_mute_says_so(panel: Panel) -> None:
    tap(panel, panel.buttons["mute"])
    assert panel.status.text == "Mute: this unit cannot mute the microphone"


def test_mute_button_follows_the_desk_whoever_mutes() -> None:
    """A mute from `kiosk ctl` or a GPIO key shows on the screen too (the MuteChanged event)."""
    from concurrent.futures import Future

    class MutingAgent(FakeAgent):
        def mute(self, on: bool) -> Future[None]:
            fut: Future[None] = Future()
            fut.set_result(None)
            return fut

    agent = MutingAgent()
    desk = Desk(make_profile(), agent)
    desk.start()
    panel = make_panel(desk)
    try:
        button = panel.buttons["mute"]
        tap(panel, button)
        assert button.text == panel.texts["muted"]
        assert desk.mute("off").data == {"muted": False}  # as the control socket does it
        pump(panel)
        assert button.text == panel.texts["mute"]
        desk.mute("on")
        pump(panel)
        assert button.text == panel.texts["muted"]
    finally:
        drop(panel)


# --- languages and the picture --------------------------------------------------------------------


def test_russian_labels(agent: FakeAgent) -> None:
    profile = dataclasses.replace(make_profile(), operator=Operator("Оператор", "ru"))
    desk = Desk(profile, agent)
    desk.start()
    agent.register_all(profile)
    panel = make_panel(desk)
    try:
        words = {key: b.text.replace("\n", " ") for key, b in panel.buttons.items()}
        assert words["call"] == "Позвонить" and words["hold"] == "Удержание"
        assert words["connect"] == "Подключить" and words["pickup"] == "Перехват"
        assert words["transfer_quick"] == "Перевод: Быстрый"
        assert words["transfer_consult"] == "Перевод: С консультацией"
        assert words["transfer_confirm"] == "Перевод: Подтвердить"
        assert words["conference"] == "Конференция" and words["record_start"].startswith("Запись")
        call = caller(agent)
        pump(panel)
        assert row_texts(panel, call)["col_state"] == "разговор"
        tap(panel, panel.buttons["connect"])
        assert panel.status.text.startswith("Подключить: ")
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
        assert panel.line_choice.text == "Operator 1\nregistered"  # the unit's snapshot
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
        until(panel, lambda: panel.status.text.startswith("Connect: "))

        server.stop()  # the unit restarts
        until(panel, lambda: panel.status.text == panel.texts["link_lost"])
        tap(panel, panel.buttons["hold"])  # nothing to send it to: the screen says why, and does not crash
        assert panel.status.text == panel.texts["link_lost"]
        agent.ended(row)  # gone while the panel could not hear it
        other = agent.ring("sip:2002@pbx.test")
        server = ControlServer(desk, workdir / "control.sock")
        server.start()
        until(panel, lambda: panel.status.text == "")
        until(panel, lambda: list(panel.table.rows) == [other])
        tap(panel, panel.table.rows[other])
        until(panel, lambda: panel.table.rows[other].selected)
        assert desk.selection == [other]
    finally:
        drop(panel)
        remote.close()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
