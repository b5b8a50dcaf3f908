"""Consult and confirm tapped on the touchscreen, end to end: the panel over a real unit and pjsua2 far ends.

A real Kamailio, the kiosk unit as its own process, and pjsua2 far ends B (the
caller, then the transferee) and C (the consulted party), each its own process.
The panel is drawn in this process on SDL's offscreen driver and talks to the
unit only through its control socket (kiosk.ui.remote.RemoteDesk), the way the
product's panel process does; every step is a tap at a widget's position
(Kivy's UnitTestTouch): Answer, Transfer with consultation and C's number in
the prompt it opens (with B in conversation the keypad is B's tone pad),
Transfer: Confirm, for an English and a Russian operator. What is
asserted is what the screen drew in its frames (every row's state word and
note, sampled after each frame: the transfer's outcome must have been drawn on
B's row, which the table keeps a while after the call ended), the notes each
desk event put on the row, what the far ends received (the REFER with Replaces
at B, B's INVITE with Replaces at C, B and C hearing each other) and that the
unit's table ends empty. Every wait is for something to happen; the timeouts
only end a broken test.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("KIVY_HOME", tempfile.mkdtemp(prefix="kiosk-test-kivy-"))

from kiosk.ui.app import configure_kivy  # noqa: E402  (sets Kivy's environment before kivy loads)

configure_kivy(fullscreen=False)
from kivy.config import Config  # noqa: E402

Config.set("graphics", "maxfps", "500")  # each EventLoop.idle() sleeps 1/maxfps: frames come fast

from kivy.base import EventLoop  # noqa: E402
from kivy.clock import Clock  # noqa: E402
from kivy.tests.common import UnitTestTouch  # noqa: E402

from kiosk import events as ev  # noqa: E402
from kiosk.lab.pjpeer import PjPeer  # noqa: E402
from kiosk.lab.unit import Unit  # noqa: E402
from kiosk.profile import load_profile  # noqa: E402
from kiosk.ui.frontend import DeskFrontend  # noqa: E402
from kiosk.ui.remote import RemoteDesk  # noqa: E402

from .conftest import needs_lab  # noqa: E402
from .pjpeers import tone_dbfs  # noqa: E402

EventLoop.ensure_window()
from kivy.core.window import Window  # noqa: E402

from kiosk.ui.panel import Panel  # noqa: E402

pytestmark = [needs_lab, pytest.mark.lab]

B_HZ, C_HZ = 600, 1400
#: Generous: only a broken test waits this long for one step.
STEP = 30.0
#: Seconds of B's and C's recordings after the transfer (a measurement window, not a wait).
AUDIO_S = 1.5
HEARD_DBFS = -40.0  # a pjsua2 tone arrives near -8 dBFS; silence is about -100


class Screen:
    """The panel in this process over the unit's socket: frames, taps, and every row as it was drawn."""

    def __init__(self, panel: Panel, remote: RemoteDesk, unit: Unit) -> None:
        self.panel = panel
        self.remote = remote
        self.unit = unit
        #: row id -> the (state word, note) pairs drawn in a frame (sampled after each), each change once.
        self.drawn: dict[int, list[tuple[str, str]]] = {}
        #: The same, sampled after each desk event the panel applied: also what was replaced before a frame.
        self.applied: dict[int, list[tuple[str, str]]] = {}
        #: The status line's texts, each change once.
        self.statuses: list[str] = []
        #: Every desk event the RemoteDesk delivered (on its reader thread).
        self.events: list[ev.Event] = []
        remote.subscribe(self.events.append)

    def start(self) -> None:
        """Start the panel; from then on, the rows are also read after every event it shows."""
        self.panel.start()
        show = self.panel.frontend.on_event  # the panel's on_event, called on Kivy's thread

        def on_event(event: ev.Event) -> None:
            show(event)
            self._sample(self.applied)

        self.panel.frontend.on_event = on_event

    def shown_rows(self) -> dict[int, Any]:
        """Every row on the screen: the calls, and the ended ones the table keeps a while (greyed)."""
        table = self.panel.table
        return {**getattr(table, "ended", {}), **table.rows}

    def _sample(self, into: dict[int, list[tuple[str, str]]]) -> None:
        for row_id, row in self.shown_rows().items():
            state = f"ended: {getattr(row, 'ended_reason', '')}" if getattr(row, "ended", False) else row.state_word
            shown = (state, row.note_text)
            seen = into.setdefault(row_id, [])
            if not seen or seen[-1] != shown:
                seen.append(shown)

    def frame(self) -> None:
        """One turn of Kivy's loop (events posted to it run, the window is drawn), then what it shows."""
        EventLoop.idle()
        self._sample(self.drawn)
        status = self.panel.status.text
        if not self.statuses or self.statuses[-1] != status:
            self.statuses.append(status)

    def until(self, pred: Callable[[], Any], what: str, timeout: float = STEP) -> Any:
        """Run frames until pred() is true (its value); fail with what the screen showed if it never is."""
        deadline = time.monotonic() + timeout
        while True:
            self.frame()
            got = pred()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"the panel never showed {what} in {timeout:.0f} s\n{self.report()}")

    def frames_for(self, seconds: float) -> None:
        """Keep drawing (and watching) for `seconds`: a measurement window for the far ends' audio."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.frame()

    def tap(self, widget: Any) -> None:
        """A finger on the widget's centre, down and up, as the window delivers it; then the command sent."""
        assert widget.get_root_window() is not None, f"{widget!r} is not on the screen"
        x, y = widget.to_window(*widget.center)
        assert 0 <= x < Window.width and 0 <= y < Window.height, f"{widget!r} is off the screen at {(x, y)}"
        touch = UnitTestTouch(x, y)
        touch.touch_down()
        self.frame()
        touch.touch_up()
        # Drawing on while the worker sends the command (never blocking Kivy's thread on it, which
        # would pile the unit's events up into one frame): done when the worker reaches this marker.
        sent = threading.Event()
        self.panel.frontend.submit("", sent.set)
        self.until(sent.is_set, "the tapped command sent to the unit")

    def row_showing(self, state: str) -> int | None:
        """The id of a row whose state cell says `state` (a desk state, in the panel's words) now."""
        word = self.panel.texts.state(state)
        return next((r for r, w in self.panel.table.rows.items() if w.state_word == word), None)

    def shows(self, row_id: int, state: str) -> bool:
        row = self.panel.table.rows.get(row_id)
        return row is not None and row.state_word == self.panel.texts.state(state)

    def refusals(self) -> list[ev.ActionFailed]:
        """What was refused or failed; not the "number required" that opens the number prompt (asked for)."""
        return [e for e in list(self.events) if isinstance(e, ev.ActionFailed) and e.code != "number_required"]

    def report(self) -> str:
        return (f"rows drawn: {self.drawn}\nrows as events set them: {self.applied}\n"
                f"status line: {self.statuses}\nrefusals: {self.refusals()}\nunit log:\n{self.unit.log_tail(30)}")


def gone_from_screen(screen: Screen, row_id: int) -> bool:
    """The row is no longer shown as a live call: removed, or kept a while as ended (the table may do that)."""
    row = screen.panel.table.rows.get(row_id)
    if row is None:
        return True
    if getattr(row, "ended", False) or row.data.get("ended"):
        return True
    words = screen.panel.texts
    ended = {words.state("ended")}
    try:
        ended.add(words["ended"])
    except KeyError:
        pass
    return row.state_word in ended


def subsequence(wanted: list[str], seen: list[str]) -> bool:
    it = iter(seen)
    return all(any(w == s for s in it) for w in wanted)


@pytest.fixture(autouse=True)
def no_long_press(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tap is never a long press, however slow a frame is on a loaded machine."""
    from kiosk.ui import table

    monkeypatch.setattr(table, "LONG_PRESS", 1e9, raising=False)


@pytest.fixture
def unit(unit_factory: Callable[..., Unit], request: pytest.FixtureRequest) -> Unit:
    """The unit; its operator reads the language the test is parametrized with (English by default)."""
    return unit_factory(language=getattr(request, "param", "en"))


@pytest.fixture
def screen(unit: Unit) -> Iterator[Screen]:
    """The panel as the panel's process shows it: the unit's own profile, a RemoteDesk on its socket."""
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
        EventLoop.idle()
        remote.close()


@pytest.mark.parametrize("unit", ["en", "ru"], indirect=True)
def test_consult_and_confirm_tapped_on_the_panel_connects_caller_and_consulted_party(
    screen: Screen, unit: Unit, pjpeer: Callable[..., PjPeer], tmp_path: Path
) -> None:
    panel, texts = screen.panel, screen.panel.texts
    b = pjpeer("2001", B_HZ)
    c = pjpeer("2003", C_HZ)

    # --- B calls; the call rings on the screen (and in the incoming banner, where the panel has one)
    b.dial("sip:1001@127.0.0.1")
    b_row = screen.until(lambda: screen.row_showing("ringing"), "B's call ringing")
    banner = getattr(panel, "banner", None)
    if banner is not None:
        screen.until(lambda: banner.shown and b_row in list(banner.rows), "B's call in the incoming banner")
        answer = banner.answer_button
    else:  # the panel before the banner: the Answer action button
        answer = panel.buttons["answer"]
    screen.tap(answer)
    screen.until(lambda: screen.shows(b_row, "talking"), "B's call talking after Answer")
    b.wait_event("state", state="CONFIRMED", timeout=STEP)
    if banner is not None:
        screen.until(lambda: not banner.shown, "the banner gone once the call was answered")

    # --- Transfer with consultation, then C's number by taps in the prompt it opens: with B in
    # conversation the panel's keypad is B's tone pad, so the number is asked for where no tone goes.
    screen.tap(panel.buttons["transfer_consult"])
    popup = screen.until(lambda: panel.popup if panel.popup is not None and panel.popup.parent else None,
                         "the number prompt of Transfer with consultation")
    for key in "2003":
        screen.tap(popup.keypad.keys[key])
    screen.until(lambda: popup.number == "2003", "the number typed in the prompt")
    screen.tap(popup.ok)
    asked = [e for e in list(screen.events) if isinstance(e, ev.ActionFailed) and e.code == "number_required"]
    assert [e.action for e in asked] == ["transfer_consult"], asked
    c_row = screen.until(lambda: next((r for r in panel.table.rows if r != b_row and screen.shows(r, "consulting")),
                                      None), "C's call consulting after Transfer with consultation")
    screen.until(lambda: screen.shows(b_row, "on hold"), "B's call on hold during the consultation")
    screen.until(lambda: panel.table.rows[b_row].note_text, "a note on B's row saying it is held for C")
    b.wait_event("media", status="remote hold", timeout=STEP)  # B really is held...
    c.wait_event("state", state="CONFIRMED", timeout=STEP)  # ...and C really answered the unit
    assert not screen.refusals(), screen.report()

    # --- Transfer: Confirm; the screen is watched frame by frame until both calls have left it
    mark_b, mark_c = b.event_count(), c.event_count()
    screen.tap(panel.buttons["transfer_confirm"])
    screen.until(lambda: gone_from_screen(screen, b_row) and gone_from_screen(screen, c_row),
                 "both calls gone after Transfer: Confirm")

    # The transfer's progress was put on B's row, in the panel's language: every NOTIFY's status
    # (100 Trying ... 200 OK) as the row's note, the final 2xx among them, no failure ever.
    before, _, after = texts.message("note_transfer_status", {"status": "\x00"}).partition("\x00")
    progress = re.compile(re.escape(before) + r"(\d{3})\b.*" + re.escape(after) + "$")

    def codes(shown: list[tuple[str, str]]) -> list[int]:
        return [int(m.group(1)) for _state, note in shown if (m := progress.match(note))]

    set_on_b, drawn_on_b = codes(screen.applied[b_row]), codes(screen.drawn[b_row])
    assert any(200 <= code < 300 for code in set_on_b), f"B's row never said the transfer succeeded:\n{screen.report()}"
    assert all(100 <= code < 300 for code in set_on_b), screen.report()
    # ...and the outcome was drawn there. Against a pjsua2 transferee the whole transfer takes 20-80 ms
    # and the desk ends B's row about 1 ms after the final NOTIFY, so the steps before it may never
    # reach a frame (which did is in the report); the table keeps the ended call a while, greyed,
    # with its last note, and that frame says the transfer succeeded.
    assert any(200 <= code < 300 for code in drawn_on_b), f"the transfer's outcome never drawn:\n{screen.report()}"
    assert getattr(screen.shown_rows().get(b_row), "ended", False), "B's ended call not kept on the screen"
    # The rows' state words over the call, as drawn.
    b_states = [state for state, _note in screen.drawn[b_row]]
    assert subsequence([texts.state(s) for s in ("ringing", "talking", "on hold")], b_states), screen.drawn[b_row]
    assert texts.state("consulting") in [state for state, _note in screen.drawn[c_row]], screen.drawn[c_row]
    assert not screen.refusals(), screen.report()

    # --- what the far ends got: the REFER with Replaces at B, B's INVITE with Replaces at C
    refer = b.wait_event("transfer_request", since=mark_b, timeout=STEP)
    c_call_id = c.find_events("incoming")[0]["call_id"]
    refer_to = urllib.parse.unquote(refer["refer_to"])
    assert re.match(r"<?sip:2003@", refer_to), refer_to
    assert f"Replaces={c_call_id};" in refer_to, refer_to
    replace = c.wait_event("replace_request", since=mark_c, timeout=STEP)
    assert replace["replaces"].startswith(c_call_id), replace
    b.wait_event("state", since=mark_b, state="CONFIRMED", origin="transfer", timeout=STEP)
    assert unit.wait_for(lambda calls: not calls, timeout=STEP) == []  # the unit left both calls

    # B and C are in one call with each other, and hear each other.
    b.record(tmp_path / "b-after.wav")
    c.record(tmp_path / "c-after.wav")
    screen.frames_for(AUDIO_S)  # nothing comes back onto the screen meanwhile
    b_heard, c_heard = b.record(None), c.record(None)
    assert [x["call"] for x in b.calls()] == [refer["new_call"]], b.calls()
    assert [x["call"] for x in c.calls()] == [replace["new_call"]], c.calls()
    assert "sip:2001@" in c.calls()[0]["remote"], c.calls()
    b_levels = tone_dbfs(b_heard, [B_HZ, C_HZ])  # type: ignore[arg-type]
    c_levels = tone_dbfs(c_heard, [B_HZ, C_HZ])  # type: ignore[arg-type]
    assert b_levels[C_HZ] > HEARD_DBFS and c_levels[B_HZ] > HEARD_DBFS, (b_levels, c_levels)
    assert all(gone_from_screen(screen, r) for r in (b_row, c_row)), screen.report()
    assert not screen.remote.snapshot()["calls"], screen.remote.snapshot()
