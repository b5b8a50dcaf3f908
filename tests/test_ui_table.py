"""The call table and the row menu, really drawn (SDL's offscreen driver), fed rows as the desk sends them.

What is asserted is what the screen shows: the drawing instructions' colours, the
labels' texts and their textures against their widgets, the colours read back
from a screenshot, and what a touch at a row's position asks for.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, ClassVar, Iterator

import pytest

from .kivy_window import EventLoop, UnitTestTouch, Window  # noqa: E402  (first: it sets Kivy up)
from kivy.metrics import dp  # noqa: E402

from kiosk.ui import table as table_module, theme  # noqa: E402
from kiosk.ui.row_menu import RowMenu, menu_items, row_actions  # noqa: E402
from kiosk.ui.table import CallRow, CallTable, FitLabel, fit_words  # noqa: E402
from kiosk.ui.texts import Texts  # noqa: E402

NOW = time.time()


def row(row_id: int, state: str = "talking", remote: str = "sip:2001@pbx.test", **extra: Any) -> dict[str, Any]:
    """A row as the desk's snapshot and RowChanged carry it."""
    data: dict[str, Any] = {"id": row_id, "line": "op1", "direction": "in", "remote": remote, "state": state,
                            "started": NOW - 30, "duration": 30.0, "route": None, "recording": False,
                            "note": "", "note_key": None, "answered": NOW - 25, "local_hold": state == "on hold",
                            "remote_hold": state == "held by remote", "held_since": None, "conference": False,
                            "consult_for": None, "line_label": "Operator 1"}
    data.update(extra)
    return data


#: One row in each state, as a busy desk shows them (the consultation is for row 1).
EVERY_STATE = [
    row(1, "on hold", '"Alice Wonderland" <sip:2001@pbx.test>', held_since=NOW - 65, recording=True,
        note="held for consultation with 3003"),
    row(2, "consulting", "sip:3003@pbx.test", direction="out", consult_for=1, note="transfer: 180 Ringing"),
    row(3, "ringing", '"sipp sipp sipp" <sip:sipp@127.0.0.1:5060>', line="op2", line_label="Operator 2",
        answered=None),
    row(4, "in conference", '"Carol" <sip:2004@pbx.test>', conference=True, recording=True),
    row(5, "in conference", "sip:2005@pbx.test", direction="out", conference=True, duration=3700.0),
    row(6, "held by remote", '"Dave" <sip:2006@pbx.test>', line_label="Trunk line with a long label",
        note="transfer: 100 Trying to reach someone with a very long description text"),
    row(7, "dialling", "sip:2007@pbx.test", direction="out", answered=None),
    row(8, "talking", '"Eve" <sip:2008@pbx.test>'),
]


class Recorder:
    def __init__(self) -> None:
        self.picks: list[tuple[int, bool]] = []
        self.menus: list[int] = []
        self.multi = False


@pytest.fixture
def make_table() -> Iterator[Callable[..., tuple[CallTable, Recorder]]]:
    """Tables added to the (process-wide) window, each removed again after the test."""
    made: list[CallTable] = []

    def make(language: str = "en", size: tuple[float, float] = (530, 420), menu: bool = True,
             texts: Texts | None = None) -> tuple[CallTable, Recorder]:
        rec = Recorder()
        table = CallTable(texts or Texts(language), lambda r, add: rec.picks.append((r, add)), lambda: rec.multi,
                          on_menu=rec.menus.append if menu else None, size_hint=(None, None), size=size,
                          pos=(0, Window.height - size[1]))
        Window.add_widget(table)
        made.append(table)
        idle()
        return table, rec

    yield make
    for table in made:
        table.close()
        Window.remove_widget(table)
    for child in list(Window.children):  # a menu a test left open
        if isinstance(child, RowMenu):
            child.dismiss(animation=False)
    idle()


def idle(frames: int = 3) -> None:
    for _ in range(frames):
        EventLoop.idle()


def tap(widget: Any, right: bool = False) -> None:
    touch = UnitTestTouch(*widget.to_window(*widget.center))
    if right:
        touch.button = "right"
    touch.touch_down()
    EventLoop.idle()
    touch.touch_up()
    EventLoop.idle()


def shown(table: CallTable) -> list[Any]:
    """What the rows' area shows, top to bottom: row ids and "caption"."""
    return ["caption" if w is table.caption else w.row_id for w in reversed(table.body.children)]


def window_rect(widget: Any) -> tuple[float, float, float, float]:
    x, y = widget.to_window(widget.x, widget.y)
    return x, y, widget.width, widget.height


def pixel(path: str, x: float, y: float) -> tuple[int, int, int]:
    from kivy.core.image import Image as CoreImage

    image = CoreImage(path, keep_data=True)
    r, g, b, _a = image.read_pixel(int(x), image.size[1] - int(y) - 1)
    return round(r * 255), round(g * 255), round(b * 255)


def near(colour: tuple[int, ...], rgba: tuple[float, ...], tolerance: int = 3) -> bool:
    return all(abs(c - round(v * 255)) <= tolerance for c, v in zip(colour, rgba[:3]))


# --- fitting text at word ends -------------------------------------------------------------------


def by_chars(text: str) -> float:
    """A monospaced measure: 10 px a character."""
    return 10.0 * len(text)


def test_fit_words_wraps_and_shortens_at_word_ends_only() -> None:
    assert fit_words("sipp sipp sipp", 100, 1, by_chars) == "sipp sipp\u2026"
    assert fit_words("sipp sipp sipp", 100, 2, by_chars) == "sipp sipp\nsipp"
    assert fit_words("on hold 1:05", 200, 1, by_chars) == "on hold 1:05"
    assert fit_words("held for consultation with Bob", 130, 2, by_chars) == "held for\nconsultation\u2026"
    # no whole word of the last line leaves room for the ellipsis: the line before ends with it
    assert fit_words("held for consultation with Bob", 120, 2, by_chars) == "held for\u2026"
    assert fit_words("one two\nthree four", 200, 1, by_chars) == "one two\u2026"  # a second line that does not fit
    assert fit_words("one two\nthree", 200, 2, by_chars) == "one two\nthree"
    # only a single word wider than a whole line is shortened inside itself
    assert fit_words("sip:verylongname@host.example", 100, 1, by_chars) == "sip:veryl\u2026"


# --- what each row shows ----------------------------------------------------------------------------


def test_each_state_has_its_own_look(make_table: Any) -> None:
    table, _ = make_table()
    # The customer has waited 65 s on hold as of now (not as of when the module was imported).
    held_since = time.time() - 65
    table.load([EVERY_STATE[0] | {"held_since": held_since}, *EVERY_STATE[1:]], [2])
    idle()
    rows = table.rows
    stripes = {rows[r].state: tuple(rows[r]._stripe_color.rgba) for r in rows}
    for state, colour in stripes.items():
        assert colour == tuple(theme.STATE_COLOURS[state]), state
    assert len(set(stripes.values())) == len(stripes)  # no two states alike
    for widget in rows.values():  # the state is also in words, in its colour
        assert widget.cells["col_state"].color == list(theme.STATE_COLOURS[widget.state])
        assert widget.state_word == table.texts.state(widget.state)

    held, remote_held = rows[1], rows[6]
    # the customer's wait, from held_since (drawn at load; a slow machine may have ticked once since)
    waited = {f"on hold {table_module.duration_text(time.time() - held_since - d)}" for d in (0, 1, 2)}
    assert held.cells["col_state"].text in waited
    assert held._hold_color.a == 1 and held._hold_outline_color.a == 0  # two drawn bars, filled
    assert [b.size for b in held._hold_bars] == [(dp(4), dp(12))] * 2
    assert remote_held._hold_color.a == 0 and remote_held._hold_outline_color.a == 1  # outlined: the far end holds
    for r in (2, 3, 4, 7, 8):
        assert rows[r]._hold_color.a == 0 and rows[r]._hold_outline_color.a == 0

    # conference rows together under their caption, where the first of them is; the consultation right
    # under the call it consults for, joined to it
    assert shown(table) == [1, 2, 3, "caption", 4, 5, 6, 7, 8]
    assert table.caption.label.text == "conference (2)"
    assert [rows[r].role for r in (4, 5)] == ["group", "group_last"]
    assert rows[4]._zone_color.rgba == list(theme.STATE_COLOURS["in conference"])
    assert rows[2].role == "consult" and rows[2]._zone_color.rgba == list(theme.STATE_COLOURS["consulting"])
    assert rows[2]._bg.pos[0] > rows[1]._bg.pos[0]  # indented
    assert rows[2].cells["col_note"].full_text == "consulting for Alice Wonderland\ntransfer: 180 Ringing"
    assert all(rows[r].role == "" for r in (1, 3, 6, 7, 8))

    # the ticking time once a second, the hold time too
    held._duration_at = (held._duration_at[0], held._duration_at[1] - 60)
    before = held.cells["col_time"].text
    held.data["held_since"] -= 60
    table.tick()
    assert held.cells["col_time"].text != before and held.cells["col_state"].text == "on hold 2:05"


def test_the_selection_is_a_border_a_marker_and_its_own_background(make_table: Any, tmp_path: Any) -> None:
    table, _ = make_table()
    table.load([row(1), row(2, "on hold"), row(3, remote='"Bob" <sip:2003@pbx.test>')], [2])
    idle()
    rows = table.rows
    assert [r for r, w in rows.items() if w.selected] == [2]
    assert rows[2]._select_color.rgba == list(theme.SELECT) and rows[2]._bg_color.rgba == list(theme.SELECT_BG)
    for r in (1, 3):
        assert rows[r]._select_color.a == 0 and rows[r]._bg_color.rgba == list(theme.SURFACE)
    # SELECT is nobody else's colour: no state mark, no text of the table uses it
    assert theme.SELECT not in theme.STATE_COLOURS.values()
    assert all(tuple(label.color) != tuple(theme.SELECT) for label, _ in table.labels())

    table.select([1, 3])  # a multi-selection: each selected row alike
    idle()
    path = Window.screenshot(name=str(tmp_path / "selection.png"))
    for r in (1, 3):
        widget = rows[r]
        x, y, w, h = window_rect(widget)
        assert near(pixel(path, x + w / 2, y + 1), theme.SELECT)  # the border, top and bottom
        assert near(pixel(path, x + w / 2, y + h - 2), theme.SELECT)
        mx = widget._marker.points[0]  # the marker: a triangle pointing at the row
        assert near(pixel(path, *widget.to_window(mx + dp(2), widget.center_y)), theme.SELECT)
        assert near(pixel(path, *widget.to_window(widget.x + dp(24), widget.y + dp(5))), theme.SELECT_BG)
    x, y, w, h = window_rect(rows[2])
    assert near(pixel(path, x + w / 2, y + 1), theme.SURFACE)  # no border on the unselected row
    assert near(pixel(path, *rows[2].to_window(rows[2]._marker.points[0] + dp(2), rows[2].center_y)),
                theme.SURFACE)


def test_rec_is_a_badge_readable_on_every_row(make_table: Any) -> None:
    table, _ = make_table()
    table.load([row(1, recording=True), row(2, "ringing", recording=True, answered=None),
                row(3, "on hold", recording=True)], [1])
    for widget in table.rows.values():
        badge = widget.cells["col_rec"]
        assert badge.text == "REC" and widget._rec_color.rgba == list(theme.REC_BG)
        assert dict(table.labels())[badge] == tuple(theme.REC_BG)
        assert theme.contrast(badge.color, theme.REC_BG) >= theme.MIN_CONTRAST
        x, y = widget._rec_bg.pos
        w, h = widget._rec_bg.size
        assert x <= badge.x and y <= badge.y and badge.right <= x + w and badge.top <= y + h
    table.update(row(1, recording=False))
    assert table.rows[1].cells["col_rec"].text == "" and table.rows[1]._rec_color.a == 0


def test_identity_two_lines_and_the_lines_label(make_table: Any) -> None:
    table, _ = make_table()
    table.load([row(1, remote='"Alice" <sip:2001@pbx.test;user=phone>'), row(2, remote="sip:2002@pbx.test",
                                                                            line_label="", line="desk"),
                row(3, remote="sip:x@h", name="Carol", number="2003", line_label="Reception")], [])
    idle()
    cells = {r: {k: c.text for k, c in w.cells.items()} for r, w in table.rows.items()}
    assert (cells[1]["col_remote"], cells[1]["col_number"], cells[1]["col_line"]) == ("Alice", "2001", "Operator 1")
    assert (cells[2]["col_remote"], cells[2]["col_number"], cells[2]["col_line"]) == ("2002", "", "desk")
    assert (cells[3]["col_remote"], cells[3]["col_number"], cells[3]["col_line"]) == ("Carol", "2003", "Reception")
    name, number = table.rows[1].cells["col_remote"], table.rows[1].cells["col_number"]
    assert name.font_size > number.font_size and name.y > number.y  # the name larger, above the number
    assert table.names() == {1: "Alice (2001)", 2: "2002", 3: "Carol (2003)"}


def test_notes_name_calls_by_their_party(make_table: Any) -> None:
    class NamingTexts(Texts):  # a Texts that takes `names` (what kiosk.ui.texts is getting)
        seen: ClassVar[list[dict[int, str]]] = []

        def note(self, row: Any, names: dict[int, str] | None = None) -> str:  # type: ignore[override]
            self.seen.append(dict(names or {}))
            key = row.get("note_key") or {}
            other = (key.get("params") or {}).get("row")
            return f"held for consultation with {(names or {}).get(other, other)}" if other else ""

    texts = NamingTexts("en")
    table, _ = make_table(texts=texts)
    table.update(row(1, "on hold", note_key={"code": "held_for_consult", "params": {"row": 2}}))
    table.update(row(2, "consulting", '"Bob" <sip:3003@pbx.test>', consult_for=1))
    assert table.rows[1].note_text == "held for consultation with Bob (3003)"  # refreshed when row 2 came
    assert texts.seen[-1] == {1: "2001", 2: "Bob (3003)"}
    # and the Texts of today, without `names`, still gives the desk's note
    plain, _ = make_table()
    plain.update(row(1, "talking", note="transfer: 100 Trying"))
    assert plain.rows[1].note_text == "transfer: 100 Trying"
    assert plain.rows[1].cells["col_note"].text == "transfer: 100 Trying"


def test_an_ended_row_stays_greyed_saying_why_then_goes(make_table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_module, "ENDED_SECONDS", 0.3)
    table, rec = make_table()
    table.load([row(1, remote='"Alice" <sip:2001@pbx.test>'), row(2, "on hold")], [1])
    table.remove(1, "486 Busy Here")
    table.remove(2)
    assert set(table.rows) == set() and set(table.ended) == {1, 2}
    ended = table.ended[1]
    assert ended.cells["col_state"].text == "ended: 486 Busy Here"
    assert table.ended[2].cells["col_state"].text == "ended"
    grey = list(theme.STATE_COLOURS["ended"])
    assert ended._stripe_color.rgba == grey
    assert all(c.color == grey for k, c in ended.cells.items() if k != "col_rec")
    assert not ended.selected and ended._select_color.a == 0  # the selection is gone with the call
    table.select([1])  # not selectable any more
    assert not ended.selected
    idle()
    tap(ended)
    assert rec.picks == []
    assert table.names() == {1: "Alice (2001)", 2: "2001"}  # messages still name it
    assert shown(table) == [1, 2] and not table._ticker.is_triggered  # nothing left ticking
    deadline = time.monotonic() + 5
    while table.ended and time.monotonic() < deadline:
        EventLoop.idle()
    assert table.ended == {} and table.names() == {}
    assert table.empty.parent is table and table.scroll.parent is None


def test_heights_touch_targets_and_more_rows_on_a_taller_table(make_table: Any) -> None:
    many = [row(i, remote=f"sip:20{i:02d}@pbx.test") for i in range(1, 13)]

    def visible(table: CallTable) -> int:
        _, sy, _, sh = window_rect(table.scroll)
        return sum(1 for w in table.rows.values()
                   if sy - 0.5 <= window_rect(w)[1] and window_rect(w)[1] + w.height <= sy + sh + 0.5)

    small, rec = make_table(size=(530, 250))
    small.load(many, [1])
    idle()
    assert all(w.height >= dp(theme.TOUCH) for w in small.rows.values())
    Window.remove_widget(small)
    tall, tall_rec = make_table(size=(530, 470))
    tall.load(many, [1])
    idle()
    assert 2 <= visible(small) < visible(tall) < len(many)
    assert small.scroll.scrollable and tall.scroll.scrollable
    # a tap on a row of a scrolled table asks at once (no waiting to see whether it scrolls)
    touch = UnitTestTouch(*tall.rows[3].to_window(*tall.rows[3].center))
    touch.touch_down()
    touch.touch_up()
    assert rec.picks == [] and tall_rec.picks == [(3, False)]
    # a drag scrolls, and is not a tap
    start = tall.scroll.scroll_y
    x, y = tall.rows[3].to_window(*tall.rows[3].center)
    touch = UnitTestTouch(x, y)
    touch.touch_down()
    for step in range(1, 6):
        touch.touch_move(x, y + step * dp(12))
        EventLoop.idle()
    touch.touch_up()
    idle()
    assert tall.scroll.scroll_y < start and tall_rec.picks == [(3, False)]
    # the desk selects a call out of sight (a new call, the last one): the table shows it
    tall.scroll.scroll_y = 1.0
    idle()
    tall.select([12])
    idle()
    _, sy, _, sh = window_rect(tall.scroll)
    _, y, _, h = window_rect(tall.rows[12])
    assert sy - 0.5 <= y and y + h <= sy + sh + 0.5
    tall.show_row(1)  # and any row on request (a test about to tap it, say)
    idle()
    _, y, _, h = window_rect(tall.rows[1])
    assert sy - 0.5 <= y and y + h <= sy + sh + 0.5


def test_taps_right_clicks_multi_and_the_long_press_menu(make_table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_module, "LONG_PRESS", 1e9)  # a tap is never a long press here
    table, rec = make_table()
    table.load([row(1), row(2, "ringing", answered=None)], [1])
    idle()
    tap(table.rows[2])
    assert rec.picks == [(2, False)]  # select only this one
    tap(table.rows[1], right=True)
    assert rec.picks[-1] == (1, True)  # a right click adds or removes
    rec.multi = True
    tap(table.rows[1])
    assert rec.picks[-1] == (1, True)  # multi-select mode: a tap toggles
    assert rec.menus == []

    monkeypatch.setattr(table_module, "LONG_PRESS", 0.05)
    rec.multi, rec.picks = False, []
    touch = UnitTestTouch(*table.rows[2].to_window(*table.rows[2].center))
    touch.touch_down()
    deadline = time.monotonic() + 3
    while not rec.menus and time.monotonic() < deadline:
        EventLoop.idle()
    assert rec.menus == [2]  # while the finger is still down
    touch.touch_up()
    idle()
    assert rec.picks == [] and rec.menus == [2]  # lifting it does not also tap

    without, rec2 = make_table(menu=False)  # without a menu a long press adds the row, as before
    without.load([row(1)], [])
    idle()
    touch = UnitTestTouch(*without.rows[1].to_window(*without.rows[1].center))
    touch.touch_down()
    time.sleep(0.06)
    touch.touch_up()
    assert rec2.picks == [(1, True)]


def test_nothing_selected_says_so(make_table: Any) -> None:
    table, _ = make_table()
    assert table.hint.parent is None and table.empty.parent is table  # no calls: "No calls", no hint
    table.load([row(1), row(2)], [])
    idle()
    assert table.hint.parent is table and table.hint.text == "No call selected: tap a call"
    assert table.hint.y < min(w.to_window(w.x, w.y)[1] for w in table.rows.values())  # under the rows
    table.select([2])
    assert table.hint.parent is None
    table.select([])
    table.remove(1)
    table.remove(2)
    assert table.hint.parent is None  # only ended calls left: nothing to select


def test_idle_costs_nothing_and_only_a_ringing_call_pulses(make_table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_module, "PULSE_PERIOD", 0.2)  # a faster pulse: the test need not wait a second
    table, _ = make_table()
    assert not table._ticker.is_triggered and not table._pulser.is_triggered
    table.update(row(1))
    assert table._ticker.is_triggered and not table._pulser.is_triggered  # one call ticking, once a second
    table.update(row(2, "ringing", direction="out", answered=None))  # our own call ringing out: no pulse
    assert not table._pulser.is_triggered
    table.update(row(3, "ringing", answered=None))
    assert table._pulser.is_triggered
    ringing = table.rows[3]
    colours = set()
    for _ in range(4):
        table._pulse()
        colours.add(tuple(ringing._bg_color.rgba))
        time.sleep(0.05)
    assert len(colours) > 1  # it pulses...
    for colour in colours:  # ...between the row's colour and RINGING_BG
        assert all(min(a, b) - 1e-6 <= c <= max(a, b) + 1e-6
                   for a, b, c in zip(theme.SURFACE[:3], theme.RINGING_BG[:3], colour[:3]))
    table.update(row(3, "talking"))  # answered: the pulse stops
    assert not table._pulser.is_triggered and ringing._bg_color.rgba == list(theme.SURFACE)
    table.remove(1)
    table.remove(2)
    table.remove(3)
    assert not table._ticker.is_triggered and not table._pulser.is_triggered


# --- every text fits, every text is readable -------------------------------------------------------------


def check_fits(table: CallTable) -> None:
    """Every text's texture fits its widget, every row's texts stay in their row and do not overlap, and
    nothing is cut in the middle of a word."""
    for label, _ in table.labels():
        tw, th = label.texture_size
        assert tw <= label.width + 0.5 and th <= label.height + 0.5, (label.text, label.texture_size, label.size)
        if isinstance(label, FitLabel):
            words = set(label.full_text.split())
            for word in label.text.replace("\u2026", " ").split():
                assert word in words or any(w.startswith(word) and table_module.measurer(
                    label.font_size, label.bold)(w + "\u2026") > label.width for w in words), (word, label.full_text)
    for widget in table.rows.values():
        boxes = [(c.x, c.y, c.right, c.top) for c in widget.cells.values() if c.text]
        for c in widget.cells.values():
            if c.text:
                assert widget.x <= c.x and c.right <= widget.right + 0.5, c.text
                assert widget.y <= c.y and c.top <= widget.top + 0.5, c.text
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def check_contrast(table: CallTable) -> None:
    checked = 0
    for label, bg in table.labels():
        assert theme.contrast(label.color, bg) >= theme.MIN_CONTRAST, (label.text, label.color, bg)
        checked += 1
    assert checked > 10


@pytest.mark.parametrize("language", ["en", "ru"])
@pytest.mark.parametrize("width", [530, 800])
def test_every_label_fits_and_is_readable_on_its_background(make_table: Any, language: str, width: int) -> None:
    table, _ = make_table(language, size=(width, 470))
    table.load(EVERY_STATE, [2, 3])  # the ringing row selected too
    table.remove(8, "486 Busy Here")
    table.update(row(9, "talking", '"A caller with a rather long display name" <sip:123456789@pbx.test>',
                     note="transfer to sip:verylongtarget.name@pbx.example.test: 180 Ringing", recording=True))
    idle()
    table._pulser.cancel()
    for t in (0.0, 0.5, 1.0):  # the ringing rows at each point of their pulse
        for widget in table.rows.values():
            if widget.ringing_in:
                widget.set_pulse(t)
        check_contrast(table)
    check_fits(table)
    # the bracket's caption, the header and the hint are texts of the table too
    texts = {label.text for label, _ in table.labels()}
    assert table.caption.label.text in texts and table.header.cells["state"].text in texts


def test_the_drawn_backgrounds_are_the_ones_checked(make_table: Any, tmp_path: Any) -> None:
    """The colours the contrast check uses are the colours on the screen."""
    table, _ = make_table()
    table.load(EVERY_STATE, [2])
    table._pulser.cancel()
    table.rows[3].set_pulse(1.0)
    idle()
    path = Window.screenshot(name=str(tmp_path / "backgrounds.png"))
    for widget in table.rows.values():
        if window_rect(widget)[1] < window_rect(table.scroll)[1]:
            continue  # scrolled out of sight
        x, y = widget.to_window(widget._bg.pos[0] + dp(table_module.ZONE_DP + 8), widget.y + dp(5))
        if widget.role:
            x, y = widget.to_window(widget._bg.pos[0] + dp(table_module.STRIPE_DP + 8), widget.y + dp(5))
        assert near(pixel(path, x, y), widget.bg_rgba, 4), (widget.row_id, pixel(path, x, y), widget.bg_rgba)
        badge = widget.cells["col_rec"]
        if badge.text:
            bx, by = widget.to_window(*widget._rec_bg.pos)
            assert near(pixel(path, bx + 1, by + 1), theme.REC_BG, 4)


# --- the row menu -----------------------------------------------------------------------------------------


def test_the_menu_lists_what_applies_to_the_rows_state() -> None:
    texts = Texts("en")
    keys = {state: [k for k, _ in menu_items(texts, row(1, state, direction=direction), False)]
            for state, direction in (("ringing", "in"), ("talking", "in"), ("on hold", "in"),
                                     ("consulting", "out"), ("dialling", "out"), ("ended", "in"))}
    assert keys["ringing"] == ["select_row", "answer", "hangup"]
    assert keys["talking"] == ["select_row", "hold", "transfer_quick", "transfer_consult", "conference",
                               "record_start", "hangup"]
    assert keys["on hold"] == ["select_row", "connect", "transfer_quick", "hangup"]
    assert keys["consulting"] == ["select_row", "transfer_confirm", "record_start", "hangup"]
    assert keys["dialling"] == ["select_row", "hangup"]
    assert keys["ended"] == ["select_row"]
    assert row_actions(row(1, "talking", recording=True))[4] == "record_stop"
    ringing = dict(menu_items(texts, row(1, "ringing"), False))
    assert ringing["hangup"] == texts["reject"]  # hanging up a call ringing in rejects it
    assert [k for k, _ in menu_items(texts, row(1), True)][:1] == ["hold"]  # the selected row: no Select
    assert next(k for k, _ in menu_items(texts, row(1), False, multi=True)) == "add_row"
    assert next(k for k, _ in menu_items(texts, row(1), True, multi=True)) == "remove_row"


@pytest.mark.parametrize("language", ["en", "ru"])
def test_the_menu_opens_fits_and_chooses(make_table: Any, language: str, tmp_path: Any) -> None:
    table, _ = make_table(language)
    table.load(EVERY_STATE, [1])
    idle()
    chosen: list[str] = []
    available = {"transfer_consult": {"code": "no_number"}}  # the desk's map: this one cannot act now
    menu = RowMenu(table.texts, EVERY_STATE[7], False, chosen.append, available=available)
    menu.open(animation=False)
    idle(5)
    path = Window.screenshot(name=str(tmp_path / f"menu_{language}.png"))
    assert set(menu.items) == {"select_row", "hold", "transfer_quick", "transfer_consult", "conference",
                               "record_start", "hangup"}
    assert menu.items["transfer_consult"].dimmed and not menu.items["hold"].dimmed
    for key, button in (*menu.items.items(), ("close", menu.close_button)):
        assert button.height >= dp(theme.TOUCH), key
        button.texture_update()
        assert button.texture_size[0] <= button.width and button.texture_size[1] <= button.height, key
        assert "\u2026" not in button.text, (key, button.text)  # every item's words whole
        assert theme.contrast(button.color, button.bg_rgba) >= theme.MIN_CONTRAST, key
        assert near(pixel(path, *button.to_window(button.x + 3, button.y + 3)), button.bg_rgba, 4), key
    for label in (menu.title_label, menu.state_label):
        assert label.texture_size[0] <= label.width + 0.5
        assert theme.contrast(label.color, theme.SURFACE) >= theme.MIN_CONTRAST
    x, y, w, h = window_rect(menu.children[0])
    assert 0 <= x and x + w <= Window.width and 0 <= y and y + h <= Window.height  # on the 800x480 screen
    tap(menu.items["hold"])
    assert chosen == ["hold"] and menu.parent is None


# --- the picture ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "ru"])
def test_screenshots_of_the_table(make_table: Any, language: str, tmp_path: Any) -> None:
    """The table in every state, and with its menu open, for a person to look at (and not blank)."""
    from kivy.core.image import Image as CoreImage

    table, _ = make_table(language, size=(530, 470))
    table.load([*EVERY_STATE[:6], row(9, remote='"Екатерина Смирнова-Петрова" <sip:2009@pbx.test>'), EVERY_STATE[7]],
               [2])
    table.remove(8, "486 Busy Here")
    table._pulser.cancel()
    table.rows[3].set_pulse(1.0)
    idle()
    path = Window.screenshot(name=str(tmp_path / f"table_{language}.png"))
    image = CoreImage(path, keep_data=True)
    pixels = image.texture.pixels
    assert len({pixels[i:i + 3] for i in range(0, len(pixels), 4 * 97)}) > 8, path
    table.scroll.scroll_y = 0.0  # the rows further down: the long name, the ended call
    idle()
    assert Window.screenshot(name=str(tmp_path / f"table_bottom_{language}.png"))
    menu = RowMenu(table.texts, EVERY_STATE[0], True, lambda key: None)
    menu.open(animation=False)
    idle(5)
    assert Window.screenshot(name=str(tmp_path / f"table_menu_{language}.png"))
    menu.dismiss(animation=False)
    shots = os.environ.get("KIOSK_SCREENSHOTS")  # where a person collects them
    if shots:
        import shutil

        os.makedirs(shots, exist_ok=True)
        for name in os.listdir(tmp_path):
            shutil.copy(tmp_path / name, os.path.join(shots, name))


def test_row_api_the_panel_uses(make_table: Any) -> None:
    table, _ = make_table()
    table.load([row(1, note="transfer: 100 Trying")], [1])
    widget = table.rows[1]
    assert isinstance(widget, CallRow) and widget.selected and widget.data["id"] == 1
    assert widget.state_word == "talking" and widget.note_text == "transfer: 100 Trying"
    assert widget.cells["col_rec"].text == "" and table.selection == (1,)
    assert table.row(1) is widget
