"""The panel's words: the Russian labels are the product's own (its Russian product page) where they fit;
every button label fits its button in two lines broken at word ends; the desk's refusals, alerts and row
notes are shown in the operator's language by their code (kiosk.i18n), never by parsing the English
sentence, and name calls by the party the table shows."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import kiosk.desk as desk_module
import kiosk.recordings as rec
from kiosk import events as ev
from kiosk import i18n
from kiosk.desk import AgentError, Desk
from kiosk.profile import MAX_CALLS
from kiosk.ui import texts
from kiosk.ui.texts import Texts

from .fakes import FakeAgent, make_profile

ROOT = Path(__file__).resolve().parent.parent


def test_russian_words_from_the_spec() -> None:
    ru = Texts("ru")
    assert (ru["line"], ru["number"], ru["route"]) == ("Линия", "Номер", "Маршрут")
    assert (ru["call"], ru["hold"], ru["connect"], ru["pickup"]) == ("Позвонить", "Удержание", "Подключить",
                                                                     "Перехват")
    assert [ru[k].replace("\n", " ") for k in ("transfer_quick", "transfer_consult", "transfer_confirm")] == [
        "Быстрый перевод", "Перевод с консультацией", "Подтвердить перевод"]  # each a button in two lines
    assert ru["conference"] == "Конференция" and ru["record_start"].startswith("Запись")
    assert ru.state("on hold") == "на удержании" and ru.state("something new") == "something new"
    assert ru.action("transfer_consult") == "Перевод с консультацией"  # the same words in a refusal
    assert ru.refused("hold", "no_selection", {}, "no call selected") == "Удержание: не выбран вызов"


def test_a_button_says_what_a_tap_does_and_a_state_has_its_own_word() -> None:
    ru, en = Texts("ru"), Texts("en")
    # The microphone: the button while it is on, the button while it is off, and the state.
    assert ru["mute"].split() == ["Выключить", "микрофон"] and ru["unmute"].split() == ["Включить", "микрофон"]
    assert ru["muted"].split() == ["Микрофон", "выключен"] and ru["mic_off"] == "МИКРОФОН ВЫКЛ."
    assert (en["mute"], en["unmute"], en["muted"], en["mic_off"]) == ("Mute", "Unmute", "Muted", "MIC OFF")
    # Hold, and the held state on the same button.
    assert (ru["hold"], ru["held"], en["hold"], en["held"]) == ("Удержание", "На удержании", "Hold", "On hold")
    # The action names in sentences are the buttons' words.
    for key in ("transfer_quick", "transfer_consult", "transfer_confirm"):
        assert ru.action(key) == ru[key].replace("\n", " ") and en.action(key) == en[key].replace("\n", " ").capitalize()


def test_every_word_exists_in_both_languages_and_unknown_falls_back_to_english() -> None:
    assert texts._EN.keys() == texts._RU.keys()
    assert Texts("de").language == "en" and Texts("de")["call"] == "Call"
    assert Texts("de").refused("hold", "no_selection") == "Hold: no call selected"


@pytest.mark.lab  # a Python process of its own
def test_the_headless_side_never_loads_kivy() -> None:
    # What the headless unit, `kiosk ctl` and the other tests load: no Kivy (it is loaded with the panel).
    code = ("import sys, kiosk.cli, kiosk.control, kiosk.ui.display, kiosk.ui.frontend, kiosk.ui.texts; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kivy'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_no_sentence_is_parsed() -> None:
    """The regular-expression table over the English is gone: words come from the catalogues by code."""
    source = (ROOT / "kiosk" / "ui" / "texts.py").read_text()
    assert not re.search(r"^\s*(import re|from re )", source, re.M)
    for gone in ("_REASON_TABLE", "_REASONS", "_STATES", "_ACTIONS"):
        assert not hasattr(texts, gone), gone
    ru = Texts("ru")
    # The English words are only a fallback for an event without a code: with one, they are not read.
    assert ru.refused("hold", "no_selection", {}, "whatever the English said") == "Удержание: не выбран вызов"
    assert ru.alert("network_down", {"reason": "eth0 down"}, "ignored") == \
        "сеть: eth0 down; вызовы и регистрации ждут её"


# --- the desk's own words, by code -----------------------------------------------------------------------


def test_refusals_in_both_languages() -> None:
    ru, en = Texts("ru"), Texts("en")
    params = {"row": 2, "state": "ringing"}
    assert ru.refused("hold", "hold_needs_talk", params) == "Удержание: вызов 2: звонит; удержать можно только разговор"
    assert en.refused("hold", "hold_needs_talk", params) == \
        "Hold: call 2 is ringing: only a call in conversation can be held"
    assert ru.refused("record_start", "already_recording", {"row": 2}) == "Запись: Старт: вызов 2 уже записывается"
    assert ru.refused("hangup", "several_selected", {"count": 2}) == \
        "Завершить: выбрано вызовов: 2; для действия «Завершить» выберите один"
    assert ru.refused("pickup", "pickup_failed", {"number": "1005", "reason": {"code": "no_answer_in",
                                                                               "params": {"seconds": 8}}}) == \
        "Перехват: не удалось перехватить вызов на 1005: нет ответа за 8 с"


def test_alerts_and_notes() -> None:
    ru, en = Texts("ru"), Texts("en")
    stopped = {"row": 2, "reason": "the disk refuses writes"}
    assert ru.alert("recording_stopped", stopped) == \
        "запись вызова 2 остановлена: the disk refuses writes; разговор продолжается"
    assert en.alert("recording_stopped", stopped) == \
        "recording of call 2 stopped: the disk refuses writes; the call goes on"
    # The agent's plain alerts (code "alert") carry only their words: shown as they are.
    assert ru.alert("alert", {}, "audio device lost") == "audio device lost"
    row = {"note": "transferring to sip:3003@pbx.test",
           "note_key": {"code": "note_transferring", "params": {"to": "sip:3003@pbx.test"}}}
    assert ru.note(row) == "перевод на sip:3003@pbx.test" and en.note(row) == "transferring to sip:3003@pbx.test"
    assert ru.note({"note": "an older unit's note", "note_key": None}) == "an older unit's note"
    assert ru.note({}) == ""


def test_calls_are_named_by_the_party_the_table_shows() -> None:
    ru, en = Texts("ru"), Texts("en")
    names = {1: "Alice (2001)", 2: "Bob (2002)"}
    params = {"row": 1, "state": "ringing"}
    assert en.refused("hold", "hold_needs_talk", params, names=names) == \
        "Hold: Alice (2001) is ringing: only a call in conversation can be held"
    assert ru.refused("hold", "hold_needs_talk", params, names=names) == \
        "Удержание: вызов «Alice (2001)»: звонит; удержать можно только разговор"
    assert en.refused("hold", "hold_needs_talk", params, names={}) == \
        "Hold: call 1 is ringing: only a call in conversation can be held"  # a call the table does not show
    assert en.alert("recording_stopped", {"row": 2, "reason": "disk full"}, names=names) == \
        "recording of Bob (2002) stopped: disk full; the call goes on"
    assert ru.alert("recording_stopped", {"row": 2, "reason": "disk full"}, names=names) == \
        "запись вызова «Bob (2002)» остановлена: disk full; разговор продолжается"
    held = {"note": "held for consultation with call 2",
            "note_key": {"code": "note_held_for_consultation", "params": {"consult": 2}}}
    assert en.note(held, names) == "held for consultation with Bob (2002)" and en.note(held) == held["note"]
    assert ru.note(held, names) == "консультация с вызовом «Bob (2002)»"
    transferring = {"note_key": {"code": "note_transferring", "params": {"to": '"Carol" <sip:3003@pbx.test>'}}}
    assert en.note(transferring, names) == "transferring to Carol (3003)"
    assert ru.note(transferring, names) == "перевод на «Carol (3003)»"
    # The English of an event without a code is shown as it came, names or not.
    assert ru.refused("hold", "", {}, "call 1 is ringing", names=names) == "Удержание: call 1 is ringing"


def test_a_code_no_catalogue_has_is_shown_in_the_units_english() -> None:
    ru = Texts("ru")
    assert ru.refused("hold", "brand_new_code", {"row": 1}, "a brand new reason") == "Удержание: a brand new reason"
    assert ru.refused("hold", "", {}, "an older unit's reason") == "Удержание: an older unit's reason"
    assert ru.refused("hold", "brand_new_code", {"row": 1}) == "Удержание: brand_new_code (row=1)"  # never dropped
    assert ru.refused("", "no_selection") == "не выбран вызов"


# --- every label fits, broken at word ends ----------------------------------------------------------------

#: Measured by Kivy's own text layout in a process of its own (the headless side never loads Kivy).
_MEASURE = r"""
import json, os, sys, tempfile
os.environ.setdefault("KIVY_HOME", tempfile.mkdtemp(prefix="kiosk-test-kivy-"))
from kiosk.ui.app import configure_kivy
configure_kivy(False)
from kivy.core.window import Window  # noqa: F401  (text needs the window's GL context)
from kivy.core.text import Label as CoreLabel
out = []
for key, text, size, width in json.load(sys.stdin):
    label = CoreLabel(text=text, font_size=size, text_size=(width, None), halign="center")
    label.refresh()
    lines = [" ".join(w.text for w in line.words).split() for line in label._cached_lines]
    out.append([key, text, [" ".join(words) for words in lines if words]])
print(json.dumps(out))
"""

#: The action buttons: 7 across 800 px less padding and spacing (109 px), less the label's margin (6 dp);
#: "Select several" (14 sp) beside them; the keypad's keys (62 dp, 18 sp); the state cell (a quarter
#: of the table, ~170 px at 800 px, 16 sp).
BUTTON_W, KEY_W, STATE_W = 103, 56, 164
BUTTON_KEYS = ("call", "answer", "reject", "hangup", "hold", "held", "connect", "pickup", "transfer_quick",
               "transfer_consult", "transfer_confirm", "conference", "record_start", "record_stop", "mute",
               "unmute", "muted")


def button_font(text: str) -> int:
    """BigButton's size (kiosk/ui/widgets.py): 13 sp when a word is longer than 11 letters, else 15."""
    return 13 if max(len(w) for w in text.split() or [""]) > 11 else 15


def measured(items: list[tuple[str, str, int, int]]) -> dict[tuple[str, str], list[str]]:
    env = dict(os.environ, SDL_VIDEODRIVER="offscreen", KIVY_NO_ARGS="1", KIVY_NO_CONSOLELOG="1",
               KIVY_NO_FILELOG="1")
    done = subprocess.run([sys.executable, "-c", _MEASURE], input=json.dumps(items), capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return {(key, text): lines for key, text, lines in json.loads(done.stdout.strip().splitlines()[-1])}


@pytest.mark.lab  # measured in a Kivy process of its own
def test_every_label_fits_in_two_lines_broken_at_word_ends() -> None:
    items: list[tuple[str, str, int, int]] = []
    for language in texts.LANGUAGES:
        t = Texts(language)
        items += [(key, t[key], button_font(t[key]), BUTTON_W) for key in BUTTON_KEYS]
        items += [(key, t[key], 14, BUTTON_W) for key in ("multi", "multi_on")]
        items += [(key, t[key], 18, KEY_W) for key in ("delete", "clear")]
        items += [(state, t.state(state), 16, STATE_W) for state in
                  ("dialling", "ringing", "talking", "on hold", "held by remote", "in conference", "consulting")]
    wrong = []
    for (key, text), lines in measured(items).items():
        limit = 1 if key in ("delete", "clear") else 2
        if len(lines) > limit or " ".join(lines).split() != text.split():  # too many lines, or a word cut
            wrong.append((key, text, lines))
    assert not wrong, wrong


# --- everything a real desk says, in Russian ------------------------------------------------------------


def desk_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[ev.Event]:
    """The refusals and alerts (with their codes) a real desk on the fake agent gives for a run of refused
    and failing commands, and every row it showed (for their notes)."""
    monkeypatch.setattr(desk_module, "TRANSFER_TIMEOUT", 0.05)
    monkeypatch.setattr(desk_module, "PICKUP_TIMEOUT", 0.05)
    monkeypatch.setattr(desk_module, "PICKUP_RELEASE", 0.05)
    agent = FakeAgent()
    d = Desk(make_profile(recordings=tmp_path / "rec"), agent)
    seen: list[ev.Event] = []
    d.subscribe(seen.append)
    d.start()
    agent.register("op1")  # op2 never registers

    def do(command: str, /, **args: Any) -> Any:
        return d.run(command, **args).wait(10)

    # Nothing on the unit yet.
    do("answer")
    do("select", rows=[7])
    do("set", name="line", value="x")
    do("set", name="route", value="x")
    do("set", name="colour", value="red")
    do("key", key="x")
    do("dial")
    do("transfer", mode="confirm")
    do("pickup", number="sip:1005@pbx.test")
    do("pickup", number="1005")  # nobody answers the pickup
    for row in list(d.rows):
        agent.ended(row)
    do("set", name="route", value="trunk")
    do("dial", number="2001")  # op2 is not registered
    do("set", name="route", value="city")

    # A ringing call: what only an answered call can do.
    one = agent.ring()
    for name, args in (("hold", {}), ("connect", {}), ("transfer", {"mode": "quick", "number": "2001"}),
                       ("transfer", {"mode": "consult", "number": "2001"}), ("record", {"action": "start"}),
                       ("record", {"action": "stop"}), ("conference", {"number": "2001"})):
        do(name, **args)
    assert do("answer").ok
    agent.talking(one)
    do("answer")

    # Two calls: one action, one call; a ringing call cannot join.
    two = agent.ring("sip:2002@pbx.test")
    do("select", rows=[one, two])
    do("hangup")
    do("conference")
    do("select", rows=[one])
    assert do("hold").ok
    do("hold")
    do("conference", number="2003")
    agent.ended(two)
    do("select", rows=[one])
    assert do("connect").ok

    # Recording.
    assert do("record", action="start").ok
    do("record", action="start")
    assert do("record", action="stop").ok
    monkeypatch.setattr(rec, "free_bytes", lambda directory: 0)
    do("record", action="start")

    def no_free_space_check(directory: Path) -> int:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(rec, "free_bytes", no_free_space_check)
    do("record", action="start")
    monkeypatch.setattr(rec, "free_bytes", lambda directory: 1 << 40)

    # A quick transfer in flight, refused by the target, and one that never hears back.
    assert do("transfer", mode="quick", number="2001").ok
    do("transfer", mode="quick", number="2001")
    agent.transfer_status(one, 603, "Declined")
    assert do("transfer", mode="quick", number="2001").ok
    agent.transfer_status(one, 180, "Ringing", final=False)
    deadline = desk_module.time.monotonic() + 5
    while not any(isinstance(e, ev.ActionFailed) and e.code == "transfer_timeout" for e in seen) \
            and desk_module.time.monotonic() < deadline:
        desk_module.time.sleep(0.02)

    # A consultation: not answered yet, refused by the phone.
    out = do("transfer", mode="consult", number="2002")
    assert out.ok, out.reason
    consult = out.data["row"]
    do("transfer", mode="confirm")
    agent.talking(consult)
    assert do("transfer", mode="confirm").ok
    agent.transfer_status(one, 420, "Bad Extension")
    agent.ended(consult)
    do("select", rows=[one])
    do("connect")

    # The unit is full.
    rows = [agent.ring(f"sip:20{n:02d}@pbx.test") for n in range(MAX_CALLS - 1)]
    do("select", rows=[one])
    do("dial", number="2009")
    for row in rows:
        agent.ended(row)

    # The selected call ends under the operator's finger.
    gone = agent.ring()
    do("select", rows=[gone])
    agent.ended(gone)
    do("hold")
    do("select", rows=[one])

    # Agent failures and a call that reached nobody.
    agent.fail_next("hangup", AgentError("call 1 has ended", "call_ended", row=1))
    do("hangup")
    out = do("dial", number="2010")
    agent.ended(out.data["row"], 0, "")
    agent.emit(ev.Alert("network: eth0 down; calls and registrations wait for it", "network_down",
                        {"reason": "eth0 down"}))
    return seen


@pytest.fixture(scope="module")
def said(tmp_path_factory: pytest.TempPathFactory) -> list[ev.Event]:
    from . import fakes

    fakes.set_own_tmp_path(tmp_path_factory.mktemp("said"))
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            return desk_says(tmp_path_factory.mktemp("said"), monkeypatch)
    finally:
        fakes.set_own_tmp_path(None)


#: Codes whose words are all their parameters' (the agent's or the server's own words): no Russian of their own.
PASS_THROUGH = {"agent_error", "sip_error", "recording_refused", "alert", "audio_alert", "bad_request"}


def test_every_refusal_and_alert_the_desk_gives_is_shown_in_russian_with_its_details(said: list[ev.Event]) -> None:
    ru, en = Texts("ru"), Texts("en")
    told = [e for e in said if isinstance(e, (ev.ActionFailed, ev.Alert))]
    codes = {e.code for e in told}
    assert len(codes) > 25, sorted(codes)
    for event in told:
        assert event.code, f"no code: {event}"
        assert event.code in i18n.catalogue("ru")["codes"], event.code
        if isinstance(event, ev.ActionFailed):
            russian = ru.refused(event.action, event.code, event.params, event.reason)
            english = en.refused(event.action, event.code, event.params, event.reason)
            assert english.endswith(event.reason), (english, event.reason)  # the catalogue is the desk's English
        else:
            russian = ru.alert(event.code, event.params, event.message)
            assert en.alert(event.code, event.params, event.message) == event.message
            english = event.message
        if event.code not in PASS_THROUGH:
            assert re.search("[а-яА-Я]", russian), russian
        assert "{" not in russian, russian
        for part in re.findall(r"\d+|'[^']*'|sip:[^\s:;()]+", english):  # numbers, quoted values, URIs
            assert part in russian, (english, russian, part)


def test_every_row_note_the_desk_gives_is_shown_in_russian(said: list[ev.Event]) -> None:
    ru = Texts("ru")
    notes = [e.row for e in said if isinstance(e, ev.RowChanged) and e.row.get("note")]
    keys = {row["note_key"]["code"] for row in notes}
    assert {"note_transferring", "note_transfer_status", "note_held_for_consultation", "note_pickup_of"} <= keys
    for row in notes:
        russian = ru.note(row)
        assert re.search("[а-яА-Я]", russian) and russian != row["note"], row
