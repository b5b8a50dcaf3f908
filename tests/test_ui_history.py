"""The History view and the main screen's History / DND / Directory buttons, over the stand-in desk.

What is asserted is what the panel asked the desk (`history`, `history_seen`,
`callback`, `dnd`) and what it shows after the desk's answers and events; the
history itself is tests/test_history.py's. Also here: the keypad's look while
its keys go to the call as DTMF tones (the real desk's `available["dtmf"]`).
"""

from __future__ import annotations

from typing import Any

from .kivy_window import EventLoop  # noqa: F401  (first: it sets Kivy up)

from kiosk import events as ev  # noqa: E402
from kiosk.ui import theme  # noqa: E402

from .test_ui_stubdesk import entry, make_views_panel, pump, tap  # noqa: F401,E402  (the fixture)

ENTRIES = [
    entry(1, '"Alice Johnson" <sip:2001@pbx.test>', "answered", ago=3000, duration=125, via="Sales"),
    entry(2, "sip:2002@pbx.test", "missed", ago=2000, seen=True),
    entry(3, '"Bob Stone" <sip:2003@pbx.test>', "missed", ago=100, seen=False, via="Support queue"),
    entry(4, "sip:3003@pbx.test", "busy", direction="out", ago=50),
    entry(5, '"Eve" <sip:2005@pbx.test>', "missed", ago=20, seen=False),
]


def shown(view: Any) -> list[int]:
    return [row.entry["id"] for row in view.rows if row.parent is not None]


def test_history_missed_first_unseen_marked_seen_once_shown_and_call_back(make_views_panel: Any) -> None:
    m = make_views_panel()
    m.views.entries = [dict(e) for e in ENTRIES]
    m.panel.frontend.refresh(m.panel._load)  # the snapshot's missed_unseen
    pump(m.panel)
    assert m.panel.history_button.count == 2 and m.panel.history_button.badge.text == "2"
    tap(m.panel, m.panel.history_button)
    view = m.panel.history_view
    assert m.panel.view is view and view.is_open
    assert shown(view) == [5, 3, 2, 4, 1]  # missed newest first, then the rest newest first
    # read first, then seen: the marks are those of the calls unseen when the view opened
    assert [name for name, _ in m.views.asked] == ["history", "history", "history_seen", "history", "history"]
    assert m.views.asked[0][1] == {"missed": True, "limit": 20} and m.views.asked[1][1] == {"limit": 50}
    assert m.panel.history_button.count == 0 and m.panel.history_button.badge.parent is None
    rows = {row.entry["id"]: row for row in view.rows if row.parent is not None}
    assert [i for i, row in rows.items() if row.unseen] == [5, 3]  # still marked after the desk said seen
    assert rows[3].bg_rgba == theme.UNSEEN_BG and rows[2].bg_rgba == theme.SURFACE
    assert "NEW" in rows[3].party.text and "Bob Stone" in rows[3].party.text
    assert "2003 · for Support queue" in rows[3].party.text  # what it came in for, as the banner says it
    assert "missed" in rows[3].outcome.text and "\n" not in rows[3].outcome.text  # no duration: never answered
    assert rows[1].outcome.text.endswith("answered[/color]\n2:05") and "\u2199" in rows[1].arrow.text
    assert rows[4].outcome.text == "busy" and "\u2197" in rows[4].arrow.text
    tap(m.panel, rows[3].call_back)
    assert m.views.asked[-1] == ("callback", {"entry": 3})
    assert m.panel.view is None  # the panel is back, to show the call


def test_history_search_with_the_keyboard_and_a_call_ending_while_open_in_russian(make_views_panel: Any) -> None:
    m = make_views_panel("ru")
    m.views.entries = [dict(e) for e in ENTRIES]
    view = m.panel.open_history()
    pump(m.panel)
    assert view.keyboard.parent is None  # the list has the room until the operator searches
    tap(m.panel, view.field)
    assert view.keyboard.parent is view.box and view.keyboard.layout == "ru"
    tap(m.panel, view.keyboard.key("switch"))
    tap(m.panel, view.keyboard.key("b"))
    view.keyboard.press("o")  # (the keyboard's own test types by touches)
    view.keyboard.press("b")
    pump(m.panel)
    assert m.views.asked[-1] == ("history", {"limit": 50, "search": "bob"})
    assert shown(view) == [3]
    row = view.rows[0]
    assert "пропущен" in row.outcome.text and "кому: Support queue" in row.party.text
    assert row.call_back.text == "Перезвонить"
    view.keyboard.press("clear")
    pump(m.panel)
    assert shown(view) == [5, 3, 2, 4, 1]
    tap(m.panel, view.keyboard.key("hide"))
    assert view.keyboard.parent is None
    # a call ends while the view is open: the desk's HistoryChanged; the view reads again
    m.views.entries.append(entry(6, "sip:2006@pbx.test", "missed", ago=1, seen=False))
    m.views.emit(ev.HistoryChanged(m.views.entries[-1], 1))
    pump(m.panel)
    assert shown(view)[0] == 6 and m.panel.history_button.badge.text == "1"
    view.dismiss(animation=False)
    m.views.entries = []
    m.panel.open_history()
    pump(m.panel)
    assert shown(view) == [] and view.notice.text == "В журнале нет вызовов"


def test_dnd_button_lit_with_a_mark_in_the_identity_strip(make_views_panel: Any) -> None:
    m = make_views_panel()
    dnd = m.panel.buttons["dnd"]
    assert m.panel.identity.dnd.text == "" and m.panel.identity.dnd.width == 0 and not dnd.active
    tap(m.panel, dnd)
    assert m.views.asked == [("dnd", {"state": "toggle"})]
    assert dnd.active and dnd.base_color == theme.DND_BG and dnd.text == "Do not disturb:\nON"
    mark = m.panel.identity.dnd
    assert mark.text == "DND" and mark.bg_rgba == theme.DND_BG and mark.width > 0
    m.views.emit(ev.DndChanged(False))  # turned off elsewhere (kiosk ctl dnd off, the GPIO key)
    pump(m.panel)
    assert not dnd.active and mark.text == "" and mark.width == 0


def test_the_keypad_says_its_keys_go_to_the_call_as_tones(make_views_panel: Any) -> None:
    m = make_views_panel()
    assert m.panel.number_caption.text == "Number"
    call = m.agent.ring('"Alice Johnson" <sip:2001@pbx.test>')
    m.agent.talking(call)
    pump(m.panel)
    assert m.panel._available.get("dtmf", "missing") is None  # the desk: keys go to this call as tones
    assert m.panel.number_caption.text == "Tones to Alice Johnson (2001)"
    assert m.panel.keypad.keys["5"].base_color == theme.TONE_KEY and m.panel.number_box.bg_rgba == theme.SELECT_BG
    tap(m.panel, m.panel.keypad.keys["5"])
    assert m.desk.number == ""  # the desk sent it as a tone (its decision), the Number did not change
    tap(m.panel, m.panel.buttons["hold"])
    assert m.panel.number_caption.text == "Number" and m.panel.keypad.keys["5"].base_color == theme.GREY


def test_a_unit_that_keeps_no_history_dims_the_button_and_the_view_says_why(make_views_panel: Any) -> None:
    m = make_views_panel()
    m.views.has_history = False  # the real desk's answers: it has no history file
    m.panel.frontend.refresh(m.panel._load)
    pump(m.panel)
    assert m.panel.history_button.dimmed
    tap(m.panel, m.panel.history_button)  # a dimmed button still opens: the view says why it is empty
    view = m.panel.history_view
    assert shown(view) == [] and view.notice.parent is view.list
    assert view.notice.text.startswith("History not available: ") and "{" not in view.notice.text
    assert [name for name, _ in m.views.asked] == ["history", "history"]  # no history_seen after a refusal
