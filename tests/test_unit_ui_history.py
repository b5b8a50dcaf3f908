"""History, Directory, DND and the keypad's tones tapped on the touchscreen, end to end.

A real Kamailio, the kiosk unit as its own process (its own call history file
and a directory file), and a pjsua2 far end; the panel is drawn in this process
on SDL's offscreen driver and reaches the unit only through its control socket
(kiosk.ui.remote.RemoteDesk), as the panel's own process does. Every step is a
tap at a widget's position. What is asserted is what the screen shows (the
missed-call badge, the History view's entries, the DND mark, the Directory's
results, the tones caption) and what happened on the network: the far end's
call back, the DTMF digit it received, its call refused while in DND, the
call placed from the directory; for an English and a Russian operator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from .test_unit_ui_consult import STEP, Screen  # noqa: E402  (first: it sets Kivy up)

from kivy.base import EventLoop  # noqa: E402
from kivy.clock import Clock  # noqa: E402
from kivy.core.window import Window  # noqa: E402

from kiosk.lab.pjpeer import PjPeer  # noqa: E402
from kiosk.lab.unit import Unit  # noqa: E402
from kiosk.profile import load_profile  # noqa: E402
from kiosk.ui.frontend import DeskFrontend  # noqa: E402
from kiosk.ui.panel import Panel  # noqa: E402
from kiosk.ui.remote import RemoteDesk  # noqa: E402

from .conftest import needs_lab  # noqa: E402

pytestmark = [needs_lab, pytest.mark.lab]


@pytest.fixture(autouse=True)
def no_long_press(monkeypatch: pytest.MonkeyPatch) -> None:
    from kiosk.ui import table

    monkeypatch.setattr(table, "LONG_PRESS", 1e9, raising=False)


@pytest.fixture
def screen(unit_factory: Callable[..., Unit], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Screen]:
    """The unit (history on, a directory file with Alice at 2001) and the panel over its socket; its
    operator reads the language the test is parametrized with."""
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("Name,Phone,Mobile\nAlice Lab,2001,\nBob Lab,2002,2003\n", encoding="utf-8")
    unit = unit_factory(language=request.param, extra=f'[directory]\nfile = "{contacts}"\n')
    profile = load_profile(unit.profile_path)
    remote = RemoteDesk(unit.socket, profile)
    frontend = DeskFrontend(remote, lambda fn: Clock.schedule_once(lambda dt: fn(), 0))
    panel = Panel(frontend, profile)
    Window.add_widget(panel)
    s = Screen(panel, remote, unit)
    s.start()
    try:
        registered = panel.texts["registered"]
        s.until(lambda: remote.connected and registered in panel.line_choice.text, "the unit's registered line")
        yield s
    finally:
        if panel.popup is not None:
            panel.popup.dismiss(animation=False)
        panel.close()
        Window.remove_widget(panel)
        for child in list(Window.children):  # a view or the banner the panel left on the window
            if child.__class__.__module__.startswith("kiosk.ui"):
                Window.remove_widget(child)
        EventLoop.idle()
        remote.close()


def live_rows(screen: Screen) -> dict[int, Any]:
    return dict(screen.panel.table.rows)


@pytest.mark.parametrize("screen", ["en", "ru"], indirect=True)
def test_missed_call_history_call_back_tones_dnd_and_directory_on_the_panel(
        screen: Screen, pjpeer: Callable[..., PjPeer]) -> None:
    panel, unit = screen.panel, screen.unit
    alice = pjpeer("2001", 600, answer="auto")

    # --- a call that nobody answers: the badge counts it
    call = alice.dial("sip:1001@127.0.0.1")
    row = screen.until(lambda: screen.row_showing("ringing"), "Alice's call ringing")
    alice.hangup(call)
    screen.until(lambda: row not in panel.table.rows, "the missed call gone from the table")
    screen.until(lambda: panel.history_button.badge.text == "1", "the missed-call badge at 1")

    # --- the History view: the missed call first, marked new; opening it says it is seen
    screen.tap(panel.history_button)
    view = panel.history_view
    screen.until(lambda: view is not None and view.entries, "the History view's calls")
    first = view.rows[0]
    assert first.entry["outcome"] == "missed" and first.unseen and "2001" in first.party.text, first.entry
    screen.until(lambda: panel.history_button.badge.parent is None, "the badge gone once the view was opened")
    assert unit.request("history")["data"]["missed_unseen"] == 0

    # --- Call back: the unit calls Alice again; the panel is back, showing the call
    mark = alice.event_count()
    screen.tap(first.call_back)
    assert panel.view is None
    alice.wait_event("incoming", since=mark, timeout=STEP)
    back = screen.until(lambda: screen.row_showing("talking"), "the call back talking")

    # --- in conversation the keypad's keys are the call's tones, and it says so
    screen.until(lambda: panel.number_caption.text.startswith(panel.texts["tones_to"].split("{")[0]),
                 "the keypad saying its keys go to the call")
    screen.tap(panel.keypad.keys["5"])
    screen.until(lambda: alice.digits(mark) == "5", "Alice hearing the tone of the 5 tapped")
    assert panel.number_field.text == ""
    screen.tap(panel.buttons["hangup"])
    screen.until(lambda: back not in panel.table.rows, "the call back hung up")
    screen.until(lambda: panel.number_caption.text == panel.texts["number"], "the keypad editing Number again")

    # --- DND: lit, marked, and Alice's next call is refused without ringing
    screen.tap(panel.buttons["dnd"])
    screen.until(lambda: panel.identity.dnd.text == panel.texts["dnd_mark"], "the DND mark in the identity strip")
    assert panel.buttons["dnd"].active
    mark = alice.event_count()
    alice.dial("sip:1001@127.0.0.1")
    alice.wait_event("state", since=mark, state="DISCONNECTED", timeout=STEP)
    assert not live_rows(screen), "a call rang on the panel while in DND"
    screen.tap(panel.buttons["dnd"])
    screen.until(lambda: panel.identity.dnd.text == "", "the DND mark gone when DND is off")

    # --- the Directory: typed by taps, one tap on the number dials it
    screen.tap(panel.directory_button)
    directory = panel.directory_view
    if directory.keyboard.layout != "en":  # a Russian operator's keyboard opens in Cyrillic
        screen.tap(directory.keyboard.key("switch"))
    for char in "ali":
        screen.tap(directory.keyboard.key(char))
    screen.until(lambda: [c["name"] for c in directory.contacts] == ["Alice Lab"], "Alice found in the directory")
    mark = alice.event_count()
    screen.tap(directory.rows[0].numbers[0])
    assert panel.view is None
    alice.wait_event("incoming", since=mark, timeout=STEP)
    placed = screen.until(lambda: screen.row_showing("talking"), "the call to Alice from the directory talking")
    screen.tap(panel.buttons["hangup"])
    screen.until(lambda: placed not in panel.table.rows, "the directory's call hung up")
    outcomes = [e["outcome"] for e in unit.request("history", limit=10)["data"]["calls"]]
    assert outcomes[:4] == ["answered", "dnd", "answered", "missed"], outcomes
    assert not screen.refusals(), screen.report()
