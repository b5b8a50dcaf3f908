"""The Directory view: search the unit's directory by name or number and dial a contact with one tap.

It translates, as the panel does: every letter typed on the on-screen
keyboard asks the desk's `directory QUERY` on the front-end's reads worker
(never on Kivy's thread: an LDAP search may take seconds), and only the answer
to the newest query is shown (DeskFrontend.read drops the others, and does not
even run a query a newer one overtook). Each result shows the name and one
button per number; a tap on a number sends `dial NUMBER` and closes the view,
so the operator sees the call it placed. A directory that could not be
searched (LDAP down, a file it cannot read) is said in words above the
results, which are those it could find; an empty answer says that nobody
matches. Nothing is said "searching" while the last results are still shown:
they stay until the new ones come, so the list does not flicker per letter.

The view is built once per panel and reopened: result rows are kept and
refilled, never rebuilt per keystroke.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from kivy.metrics import dp, sp
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.gridlayout import GridLayout
from kivy.uix.modalview import ModalView
from kivy.uix.scrollview import ScrollView

from kiosk import i18n
from kiosk.desk import Outcome

from . import theme
from .frontend import DeskFrontend
from .keyboard import OnScreenKeyboard
from .texts import Texts
from .widgets import BigButton, FitLabel, Painted, SearchField, escape

#: How many contacts one search asks for, and how many numbers of one contact get a button.
LIMIT = 20
MAX_NUMBERS = 3
#: Heights (dp): the top bar, a result row, a notice.
TOP_H, ROW_H, NOTICE_H, GAP = 48, 50, 34, 4
#: A number button's widest (dp).
NUMBER_W = 160


def source_word(texts: Texts, source: str) -> str:
    """A directory's source ("ldap", "file") as the operator reads it."""
    key = f"source_{source}"
    try:
        return texts[key]
    except KeyError:
        return source


def problem_words(texts: Texts, problem: Mapping[str, Any]) -> str:
    """One of the desk's directory errors ({"source", "code", "message", "params"}) in words.

    A code the catalogue knows is its sentence in the operator's language (it names the directory
    itself: "the LDAP directory ldap://... did not answer within 3 s"); any other is the desk's English
    after the source's name, so that an error is never a blank.
    """
    english = str(problem.get("message") or problem.get("code") or "")
    code = str(problem.get("code") or "")
    source = str(problem.get("source", ""))
    if code and code in i18n.catalogue(texts.language)["codes"]:
        try:
            words = texts.message(code, dict(problem.get("params") or {}), None, english)
        except (KeyError, IndexError, ValueError):  # a catalogue entry that wants parameters it was not sent
            words = ""
        if words and "{" not in words:
            return words[:1].upper() + words[1:]  # a sentence of its own, not after an action's name
    if source not in ("file", "ldap"):  # the unit has no directory at all: its words say what to do
        return english
    return texts["dir_error"].format(source=source_word(texts, source), message=english)


def dialable(number: str) -> str:
    """A directory's number as it is dialled: without the separators people write numbers with."""
    return "".join(c for c in number if c not in " \t-().\u00a0/")


class Notice(Painted, FitLabel):
    """A line of the view in words: a directory error, "nobody matches", a refusal."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(sizes=(15, 14, 13, 12, 11), size_hint_y=None, height=dp(NOTICE_H), **kw)
        self._init_paint(theme.BG)


class ContactRow(Painted, BoxLayout):
    """One contact: its name (and where it was found), then a button per number that dials it."""

    def __init__(self, texts: Texts, on_dial: Callable[[str], None]) -> None:
        super().__init__(orientation="horizontal", size_hint_y=None, height=dp(ROW_H), spacing=dp(GAP),
                         padding=(dp(6), 0, 0, 0))
        self._init_paint(theme.SURFACE)
        self.texts = texts
        self.on_dial = on_dial
        self.contact: dict[str, Any] = {}
        self.name = FitLabel(text="", sizes=(17, 16, 15, 14, 13, 12), color=theme.TEXT, markup=True)
        self.name.bg_rgba = theme.SURFACE
        self.add_widget(self.name)
        #: One button per number, made once (up to MAX_NUMBERS); those a contact does not need are taken out.
        self.numbers = [BigButton("", lambda i=i: self._dial(i), color=theme.GREEN, sizes=(17, 16, 15, 14, 13),
                                  size_hint_x=None, width=dp(NUMBER_W)) for i in range(MAX_NUMBERS)]
        self.shown_numbers: list[str] = []
        self.bind(width=lambda *_: self._widths())

    def show(self, contact: Mapping[str, Any]) -> None:
        self.contact = dict(contact)
        numbers = [str(n) for n in (contact.get("numbers") or [contact.get("number") or ""]) if n][:MAX_NUMBERS]
        name = str(contact.get("name") or "") or (numbers[0] if numbers else "?")
        source = str(contact.get("source") or "")
        where = f"\n[size={int(sp(12))}][color=bdbdc4]{source_word(self.texts, source)}[/color][/size]" \
            if source == "ldap" else ""
        self.name.text = escape(name) + where
        if numbers != self.shown_numbers:
            for button in self.numbers:
                if button.parent is self:
                    self.remove_widget(button)
            for button, number in zip(self.numbers, numbers):
                button.text = number
                self.add_widget(button)
            self.shown_numbers = numbers
            self._widths()

    def _widths(self) -> None:
        # Every row has MAX_NUMBERS slots of one width after the name (60% of the row at most, NUMBER_W
        # each): a contact's first number is in the same column on every row, whatever its others.
        slot = max(dp(theme.TOUCH), min(dp(NUMBER_W), (self.width * 0.6 - MAX_NUMBERS * dp(GAP)) / MAX_NUMBERS))
        for button in self.numbers:
            button.width = slot
        self.name.size_hint_x = None
        self.name.width = max(dp(40), self.width - dp(6) - MAX_NUMBERS * (slot + dp(GAP)))

    def _dial(self, index: int) -> None:
        if index < len(self.shown_numbers):
            self.on_dial(self.shown_numbers[index])


class DirectoryView(ModalView):
    """The whole window: the search, the results, the keyboard. `open()` starts with an empty query."""

    def __init__(self, texts: Texts, frontend: DeskFrontend, on_closed: Callable[[], None] | None = None) -> None:
        super().__init__(size_hint=(1, 1), auto_dismiss=False, background_color=(0, 0, 0, 0),
                         overlay_color=(0, 0, 0, 0))
        self.texts = texts
        self.frontend = frontend
        self.on_closed = on_closed
        self.query = ""
        #: The answer shown now: its contacts and errors (tests read them).
        self.contacts: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.answered = False

        self.box = box = _Box(orientation="vertical", padding=dp(4), spacing=dp(GAP))
        top = BoxLayout(orientation="horizontal", size_hint_y=None, height=dp(TOP_H), spacing=dp(6))
        self.title = FitLabel(text=texts["directory"], sizes=(18, 16, 14), bold=True, color=theme.TEXT,
                              size_hint_x=None, width=dp(130))
        self.title.bg_rgba = theme.BG
        self.field = SearchField(texts["search_hint"])
        self.close_button = BigButton(texts["close"], self.dismiss, color=theme.GREY, size_hint_x=None,
                                      width=dp(120))
        for widget in (self.title, self.field, self.close_button):
            top.add_widget(widget)
        box.add_widget(top)

        self.scroll = ScrollView(do_scroll_x=False, bar_width=dp(6))
        self.list = GridLayout(cols=1, size_hint_y=None, spacing=dp(3))
        self.list.bind(minimum_height=self.list.setter("height"))
        self.scroll.add_widget(self.list)
        box.add_widget(self.scroll)
        self.notices = [Notice(color=theme.STATUS_ALERT) for _ in range(2)]
        self.rows: list[ContactRow] = []  # made as needed, kept for the next answers

        layout = "ru" if texts.language == "ru" else "en"
        self.keyboard = OnScreenKeyboard(texts, self.search, layout=layout, field=self.field)
        box.add_widget(self.keyboard)
        self.add_widget(box)
        self.bind(on_dismiss=lambda *_: self._closed())

    # --- opening and searching ------------------------------------------------------------

    def open(self, *args: Any, **kw: Any) -> None:  # type: ignore[override]
        """Open with an empty query (the directory's first contacts), the operator's own layout first."""
        self.keyboard.set_text("")
        self.query = ""
        super().open(*args, animation=False, **kw)
        self.search("")

    def search(self, query: str) -> None:
        """Ask the desk for `query` (on the reads worker); the answer replaces the list if it is still wanted."""
        self.query = query
        if not self.answered:
            self._notices([(self.texts["searching"], theme.TEXT_MUTED)])
        args: dict[str, Any] = {"query": query, "limit": LIMIT}
        self.frontend.read("directory", "directory", args, lambda outs: self.show_answer(query, outs[0]))

    def show_answer(self, query: str, out: Outcome) -> None:
        """The desk's answer to `query` (the newest one: DeskFrontend.read dropped any older)."""
        self.answered = True
        if not out.ok:
            self.contacts, self.errors = [], []
            self._notices([(self.texts.refused("directory", out.code, out.params, out.reason), theme.STATUS_REFUSED)])
            self._fill([])
            return
        data = out.data or {}
        self.contacts = [dict(c) for c in data.get("contacts") or []]
        self.errors = [dict(e) for e in data.get("errors") or []]
        lines: list[tuple[str, Sequence[float]]] = [(problem_words(self.texts, e), theme.STATUS_ALERT)
                                                    for e in self.errors]
        if not self.contacts:
            words = self.texts["no_contacts_found"].format(query=query) if query else self.texts["no_contacts"]
            lines.append((words, theme.TEXT_MUTED))
        self._notices(lines)
        self._fill(self.contacts)

    def _notices(self, lines: Sequence[tuple[str, Sequence[float]]]) -> None:
        for notice in self.notices:
            if notice.parent is not None:
                self.list.remove_widget(notice)
        for notice, (text, colour) in zip(self.notices, lines[:len(self.notices)]):
            notice.text, notice.color = text, tuple(colour)
            self.list.add_widget(notice, index=len(self.list.children))  # at the top

    def _fill(self, contacts: Sequence[Mapping[str, Any]]) -> None:
        while len(self.rows) < len(contacts):
            self.rows.append(ContactRow(self.texts, self.dial))
        for row in self.rows:
            if row.parent is not None:
                self.list.remove_widget(row)
        for row, contact in zip(self.rows, contacts):
            row.show(contact)
            self.list.add_widget(row)
        self.scroll.scroll_y = 1

    def dial(self, number: str) -> None:
        """One tap on a number: the desk dials it, and the view gives the panel back to show the call.

        The number goes without the spaces, dashes, dots and brackets a directory writes it with
        ("+7 (912) 555-01-02" is dialled as +79125550102): they are not part of a SIP user part."""
        self.frontend.act("dial", dialable(number))
        self.dismiss(animation=False)

    def press(self, key: str) -> None:
        """A key of a hardware keyboard (the panel passes them on while the view is open)."""
        self.keyboard.press(key)

    def _closed(self) -> None:
        if self.on_closed is not None:
            self.on_closed()


class _Box(Painted, BoxLayout):
    """The view's background: the window's colour, opaque (the panel is not seen through it)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._init_paint(theme.BG)

