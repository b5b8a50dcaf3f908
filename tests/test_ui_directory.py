"""The Directory view over the stand-in desk, really drawn: search as you type, one tap to dial.

What is asserted is what the view asked the desk (`directory QUERY` on the
reads worker, `dial NUMBER`) and what it shows; the directory's own search is
tests/test_directory.py's.
"""

from __future__ import annotations

import threading
from typing import Any

from .kivy_window import EventLoop  # noqa: F401  (first: it sets Kivy up)

from kiosk import i18n  # noqa: E402

from .test_ui_stubdesk import contact, make_views_panel, pump, tap  # noqa: F401  (the fixture)

CONTACTS = [
    contact("Alice Johnson", "2001"),
    contact("Bob Stone", "2002", "+7 (912) 555-01-02"),
    contact("Екатерина Смирнова", "2003", source="ldap"),
]


def typed(view: Any, panel: Any, text: str) -> None:
    for char in text:
        tap(panel, view.keyboard.key("space" if char == " " else char))


def names(view: Any) -> list[str]:
    return [row.contact["name"] for row in view.rows if row.parent is not None]


def test_results_as_you_type_and_one_tap_dials_the_number(make_views_panel: Any) -> None:
    m = make_views_panel()
    m.views.contacts = list(CONTACTS)
    tap(m.panel, m.panel.directory_button)
    view = m.panel.directory_view
    assert view is not None and m.panel.view is view
    assert names(view) == ["Alice Johnson", "Bob Stone", "Екатерина Смирнова"]  # the empty query: the first N
    typed(view, m.panel, "bo")
    queries = [args["query"] for name, args in m.views.asked if name == "directory"]
    assert queries == ["", "b", "bo"]
    assert names(view) == ["Bob Stone"] and view.field.value == "bo"
    [row] = [r for r in view.rows if r.parent is not None]
    buttons = [b for b in row.numbers if b.parent is row]
    assert [b.text for b in buttons] == ["2002", "+7 (912) 555-01-02"]  # one button per number
    tap(m.panel, buttons[1])
    # the desk's own dial, with the number as it is dialled (no spaces, dashes, brackets), on the chosen route
    assert [r[2] for r in m.agent.requests("dial")] == ["sip:9+79125550102@pbx.test"]
    assert m.panel.view is None and view.parent is None  # the panel is back, showing the call


def test_a_directory_error_is_said_in_words_and_nobody_found_too(make_views_panel: Any) -> None:
    m = make_views_panel("ru")
    m.views.contacts = list(CONTACTS)
    m.views.errors = [{"source": "ldap", "code": "ldap_unreachable", "message": "ldap://ldap.example: refused",
                       "params": {"url": "ldap://ldap.example", "error": "connection refused"}},
                      {"source": "file", "code": "something_new", "message": "contacts.csv: line 3 skipped"}]
    view = m.panel.open_directory()
    pump(m.panel)
    shown = [n.text for n in view.notices if n.parent is not None]
    said = i18n.message("ldap_unreachable", m.views.errors[0]["params"], "ru")
    assert shown == [said[:1].upper() + said[1:],  # the catalogue's words
                     "Справочник «Местный» недоступен: contacts.csv: line 3 skipped"]  # else the desk's English
    assert len(names(view)) == 3  # what the file found is still shown
    m.views.errors = []
    m.panel.on_key_down(None, 0, 0, "щ", [])  # a hardware keyboard types into the open view's search
    pump(m.panel)
    assert view.query == "щ" and names(view) == []
    assert [n.text for n in view.notices if n.parent is not None] == ["Никого не найдено по запросу «щ»"]
    m.panel.on_key_down(None, 27, 0, None, [])  # Escape closes the view
    assert m.panel.view is None


def test_only_the_newest_query_is_shown_and_a_slow_search_never_holds_up_a_hang_up(make_views_panel: Any) -> None:
    m = make_views_panel()
    m.views.contacts = list(CONTACTS)
    threads: list[str] = []
    search = m.views._directory
    running = threading.Event()
    m.views._directory = lambda **kw: (threads.append(threading.current_thread().name), running.set(),
                                       search(**kw))[2]
    m.views.gate = threading.Event()  # LDAP that takes its time
    view = m.panel.open_directory()
    assert running.wait(10)  # "" is being searched now, and waits
    for char in "al":
        view.keyboard.press(char)
    call = m.agent.ring("sip:2009@pbx.test")
    m.agent.talking(call)
    m.desk.select([call])
    m.panel.frontend.act("hangup")
    done = threading.Event()
    m.panel.frontend.submit("", done.set)  # behind the Hang up on the commands' worker
    assert done.wait(10), "the Hang up waited behind the search"
    assert m.agent.requests("hangup") == [(call,)]  # while the search still waits
    m.views.gate.set()
    pump(m.panel)
    queries = [args["query"] for name, args in m.views.asked if name == "directory"]
    assert queries == ["", "al"]  # "a" was overtaken before it ran: never asked
    assert view.query == "al" and names(view) == ["Alice Johnson"]  # the answer to "" was dropped
    assert set(threads) == {"kiosk-ui-reads"}  # never on Kivy's thread, nor the commands' worker
