"""The History view: the calls of this unit, missed ones first, and Call back with one tap.

It translates, as the panel does. Opening it reads `history` (the missed calls,
then all, on the front-end's reads worker: never on Kivy's thread) and, once
that answer is in, sends `history_seen`: the missed calls it shows as new are
the ones that were unseen when it opened, and they stay highlighted while it
is open (the desk's HistoryChanged after `history_seen` says they are seen
now, and the view must not lose the mark the operator has not read yet).
A HistoryChanged while it is open (a call ended) reads again.

Order: missed calls first, newest first, the unseen highlighted; then the
rest, newest first. Each entry: the time (and the day when not today), an
arrow for the direction (coloured by the outcome), the name and number, what
it came in for ("via Sales queue"), the outcome in words and the duration of
a call that was answered, and its own Call back button (`callback ENTRY`: the
desk dials that entry's number on its line; the view closes to show the
call). The search field opens the on-screen keyboard; each letter reads
`history --search TEXT` (only the newest query's answer is shown).

The view is built once per panel and reopened; entry rows are kept and
refilled, never rebuilt per event.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

from kivy.metrics import dp, sp
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.gridlayout import GridLayout
from kivy.uix.modalview import ModalView
from kivy.uix.scrollview import ScrollView

from kiosk.desk import Outcome
from kiosk.party import party

from . import theme
from .directory_view import Notice, _Box
from .frontend import DeskFrontend
from .keyboard import OnScreenKeyboard
from .table import duration_text
from .texts import Texts
from .widgets import BigButton, FitLabel, Painted, SearchField, escape

#: How many calls the view reads (missed ones, and all), newest first.
MISSED_LIMIT, LIMIT = 20, 50
TOP_H, ROW_H, GAP = 48, 52, 4
#: Arrows for the direction: into the phone, out of it (DejaVuSans has them; the default font does not).
ARROWS = {"in": "\u2199", "out": "\u2197"}


def when_text(texts: Texts, started: float, now: float | None = None) -> str:
    """The time of a call: "14:05" today, "yesterday\\n14:05", else "28.11\\n14:05"."""
    now = time.time() if now is None else now
    at, today = time.localtime(started), time.localtime(now)
    clock = time.strftime("%H:%M", at)
    if (at.tm_year, at.tm_yday) == (today.tm_year, today.tm_yday):
        return clock
    yesterday = time.localtime(now - 86400)
    if (at.tm_year, at.tm_yday) == (yesterday.tm_year, yesterday.tm_yday):
        return f"{clock}\n{texts['yesterday']}"
    return f"{clock}\n{time.strftime('%d.%m', at)}"


def ordered(missed: Sequence[Mapping[str, Any]], calls: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Missed calls first, then the rest, each part newest first, every entry once."""
    first = sorted((dict(e) for e in missed if e.get("outcome") == "missed"),
                   key=lambda e: -float(e.get("started") or 0))
    ids = {e.get("id") for e in first}
    first += sorted((dict(e) for e in calls if e.get("outcome") == "missed" and e.get("id") not in ids),
                    key=lambda e: -float(e.get("started") or 0))
    ids = {e.get("id") for e in first}
    rest = sorted((dict(e) for e in calls if e.get("id") not in ids), key=lambda e: -float(e.get("started") or 0))
    return first + rest


def who(entry: Mapping[str, Any]) -> tuple[str, str]:
    """(name, number) of an entry's other party."""
    p = party(str(entry.get("remote") or ""))
    number = str(entry.get("number") or p.number or "")
    name = str(entry.get("name") or p.name or "")
    return (name, number) if name and name != number else (number or "?", "")


class HistoryRow(Painted, BoxLayout):
    """One call of the history, and its Call back button."""

    def __init__(self, texts: Texts, on_call_back: Callable[[int], None]) -> None:
        super().__init__(orientation="horizontal", size_hint_y=None, height=dp(ROW_H), spacing=dp(GAP),
                         padding=(dp(4), 0, 0, 0))
        self._init_paint(theme.SURFACE)
        self.texts = texts
        self.on_call_back = on_call_back
        self.entry: dict[str, Any] = {}
        self.unseen = False
        self.when = FitLabel(text="", sizes=(15, 14, 13, 12), color=theme.TEXT, size_hint_x=None, width=dp(72),
                             halign="center")
        self.arrow = FitLabel(text="", sizes=(22, 20), markup=True, color=theme.TEXT, size_hint_x=None,
                              width=dp(28), halign="center")
        self.party = FitLabel(text="", sizes=(16, 15, 14, 13, 12), markup=True, color=theme.TEXT)
        self.outcome = FitLabel(text="", sizes=(15, 14, 13, 12, 11), markup=True, color=theme.TEXT,
                                size_hint_x=None, width=dp(150))
        self.call_back = BigButton(texts["call_back"], self._call_back, color=theme.GREEN,
                                   sizes=(16, 15, 14, 13, 12), size_hint_x=None, width=dp(128))
        for widget in (self.when, self.arrow, self.party, self.outcome, self.call_back):
            self.add_widget(widget)

    def show(self, entry: Mapping[str, Any], unseen: bool) -> None:
        self.entry = dict(entry)
        self.unseen = unseen
        bg = theme.UNSEEN_BG if unseen else theme.SURFACE
        self.paint(bg)
        for label in (self.when, self.arrow, self.party, self.outcome):
            label.bg_rgba = bg
        texts = self.texts
        outcome = str(entry.get("outcome") or "")
        missed = outcome in ("missed", "dnd")
        self.when.text = when_text(texts, float(entry.get("started") or 0))
        colour = _hex(theme.MISSED_TEXT if missed else theme.ANSWERED_TEXT if outcome == "answered"
                      else theme.TEXT_MUTED)
        arrow = ARROWS.get(str(entry.get("direction")), "")
        self.arrow.text = f"[font=DejaVuSans][color={colour}]{arrow}[/color][/font]" if arrow else ""
        name, number = who(entry)
        small = int(sp(13))
        details = [number] if number else []
        if entry.get("via"):
            details.append(texts["via"].format(via=entry["via"]))
        line2 = f"\n[size={small}][color=bdbdc4]{escape(' · '.join(details))}[/color][/size]" if details else ""
        mark = f"[color={_hex(theme.MISSED_TEXT)}]{escape(texts['new'])}[/color] " if unseen else ""
        self.party.text = f"{mark}[b]{escape(name)}[/b]{line2}"
        words = f"[color={colour}]{escape(texts.outcome(outcome))}[/color]" if missed or outcome == "answered" \
            else escape(texts.outcome(outcome))
        duration = float(entry.get("duration") or 0)
        self.outcome.text = words + (f"\n{duration_text(duration)}" if entry.get("answered") else "")

    def _call_back(self) -> None:
        if "id" in self.entry:
            self.on_call_back(int(self.entry["id"]))


def _hex(rgba: Sequence[float]) -> str:
    return "".join(f"{round(float(c) * 255):02x}" for c in rgba[:3])


class HistoryView(ModalView):
    """The whole window: the title, the search field, the calls; the keyboard while searching."""

    def __init__(self, texts: Texts, frontend: DeskFrontend, on_closed: Callable[[], None] | None = None) -> None:
        super().__init__(size_hint=(1, 1), auto_dismiss=False, background_color=(0, 0, 0, 0),
                         overlay_color=(0, 0, 0, 0))
        self.texts = texts
        self.frontend = frontend
        self.on_closed = on_closed
        self.query = ""
        self.is_open = False
        #: The entries shown now, in their order (tests read them).
        self.entries: list[dict[str, Any]] = []
        #: Ids of the missed calls that were unseen when the view opened: they stay marked while it is open.
        self.new_ids: set[int] = set()
        self._seen_sent = False

        self.box = box = _Box(orientation="vertical", padding=dp(4), spacing=dp(GAP))
        top = BoxLayout(orientation="horizontal", size_hint_y=None, height=dp(TOP_H), spacing=dp(6))
        self.title = FitLabel(text=texts["history"], sizes=(18, 16, 14), bold=True, color=theme.TEXT,
                              size_hint_x=None, width=dp(130))
        self.title.bg_rgba = theme.BG
        self.field = SearchField(texts["history_hint"], on_tap=self.toggle_keyboard)
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
        self.notice = Notice(color=theme.TEXT_MUTED)
        self.rows: list[HistoryRow] = []
        layout = "ru" if texts.language == "ru" else "en"
        self.keyboard = OnScreenKeyboard(texts, self.search, layout=layout, field=self.field,
                                         on_hide=self.hide_keyboard)
        self.add_widget(box)
        self.bind(on_dismiss=lambda *_: self._closed())

    # --- opening, reading ---------------------------------------------------------------

    def open(self, *args: Any, **kw: Any) -> None:  # type: ignore[override]
        """Open on every call (no search), read the history; `history_seen` once it is shown."""
        self.query = ""
        self.keyboard.set_text("")
        self.hide_keyboard()
        self.new_ids = set()
        self._seen_sent = False
        self.is_open = True
        super().open(*args, animation=False, **kw)
        self.refresh()

    def refresh(self) -> None:
        """Read the history again (the current search) on the reads worker."""
        query = self.query or None
        requests = [("history", {"missed": True, "limit": MISSED_LIMIT, "search": query}),
                    ("history", {"limit": LIMIT, "search": query})]
        self.frontend.read("history", "history", lambda: requests, lambda outs: self.show_answer(query or "", outs))

    def search(self, query: str) -> None:
        self.query = query
        self.refresh()

    def on_history(self, missed_unseen: int) -> None:
        """The desk's HistoryChanged while the view is open: a call ended (or the missed were seen)."""
        if self.is_open:
            self.refresh()

    def show_answer(self, query: str, outs: Sequence[Outcome]) -> None:
        failed = next((o for o in outs if not o.ok), None)
        if failed is not None:
            self.entries = []
            self._fill([], self.texts["history_error"].format(
                message=self.texts.message(failed.code, failed.params, "history", failed.reason)),
                theme.STATUS_REFUSED)
            return
        missed, calls = (list((o.data or {}).get("calls") or []) for o in outs)
        entries = ordered(missed, calls)
        if not self._seen_sent:  # the first answer since opening: what is unseen now is what is new
            self.new_ids = {int(e["id"]) for e in entries if e.get("outcome") == "missed" and not e.get("seen")
                            and "id" in e}
        self.entries = entries
        empty = "" if entries else (self.texts["no_history_found"].format(query=query) if query
                                    else self.texts["no_history"])
        self._fill(entries, empty, theme.TEXT_MUTED)
        if not self._seen_sent and self.is_open:
            self._seen_sent = True
            self.frontend.send("history_seen", {}, "history_seen")

    def _fill(self, entries: Sequence[Mapping[str, Any]], notice: str, colour: Sequence[float]) -> None:
        self.list.clear_widgets()
        if notice:
            self.notice.text, self.notice.color = notice, tuple(colour)
            self.list.add_widget(self.notice)
        while len(self.rows) < len(entries):
            self.rows.append(HistoryRow(self.texts, self.call_back))
        for row, entry in zip(self.rows, entries):
            unseen = int(entry.get("id", -1)) in self.new_ids or (entry.get("outcome") == "missed"
                                                                   and not entry.get("seen"))
            row.show(entry, unseen)
            self.list.add_widget(row)
        self.scroll.scroll_y = 1

    # --- touches ----------------------------------------------------------------------------

    def call_back(self, entry_id: int) -> None:
        """Call back: the desk dials that entry's party; the view gives the panel back to show the call."""
        self.frontend.send("callback", {"entry": entry_id}, "callback")
        self.dismiss(animation=False)

    def toggle_keyboard(self) -> None:
        if self.keyboard.parent is None:
            self.box.add_widget(self.keyboard)
        else:
            self.hide_keyboard()

    def hide_keyboard(self) -> None:
        if self.keyboard.parent is not None:
            self.box.remove_widget(self.keyboard)

    def press(self, key: str) -> None:
        """A key of a hardware keyboard (the panel passes them on while the view is open)."""
        if self.keyboard.parent is None:
            self.box.add_widget(self.keyboard)
        self.keyboard.press(key)

    def _closed(self) -> None:
        self.is_open = False
        if self.on_closed is not None:
            self.on_closed()
