"""The panel's words: the Russian labels are the product's own (its Russian product page); the desk's English
reasons and alerts are shown in Russian on a Russian panel (and stay English everywhere else)."""

from __future__ import annotations

import errno
import re
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

import pytest

import kiosk.desk as desk_module
import kiosk.recordings as rec
from kiosk import events as ev
from kiosk.desk import Desk
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
        "Перевод: Быстрый", "Перевод: С консультацией", "Перевод: Подтвердить"]
    assert ru["conference"] == "Конференция" and ru["record_start"].startswith("Запись")
    assert ru.state("on hold") == "на удержании" and ru.state("something new") == "something new"
    assert ru.refused("hold", "no call selected") == "Удержание: не выбран вызов"


def test_every_word_exists_in_both_languages_and_unknown_falls_back_to_english() -> None:
    assert texts._EN.keys() == texts._RU.keys()
    assert Texts("de").language == "en" and Texts("de")["call"] == "Call"


def test_the_headless_side_never_loads_kivy() -> None:
    # What the headless unit, `kiosk ctl` and the other tests load: no Kivy (it is loaded with the panel).
    code = ("import sys, kiosk.cli, kiosk.control, kiosk.ui.display, kiosk.ui.frontend, kiosk.ui.texts; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kivy'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


# --- the reasons and alerts -----------------------------------------------------------------------


def desk_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every refusal reason and alert the real desk (on the fake agent) gives for a run of refused commands."""
    monkeypatch.setattr(desk_module, "TRANSFER_TIMEOUT", 0.05)
    monkeypatch.setattr(desk_module, "PICKUP_TIMEOUT", 0.05)
    agent = FakeAgent()
    d = Desk(make_profile(recordings=tmp_path / "rec"), agent)
    seen: list[ev.Event] = []
    d.subscribe(seen.append)
    d.start()
    agent.register("op1")  # op2 never registers

    # Nothing on the unit yet.
    d.answer()
    d.select([7])
    d.set("line", "x")
    d.set("route", "x")
    d.set("colour", "red")
    d.dial()
    d.transfer("sideways")
    d.record("pause")
    d.mute("maybe")
    d.mute()  # the fake agent has no microphone
    d.transfer("confirm")
    d.pickup("sip:1005@pbx.test")
    d.pickup("1005")  # nobody answers the pickup
    for row in list(d.rows):  # the desk hung it up
        agent.ended(row)
    d.set("route", "trunk")
    d.dial("2001")  # op2 is not registered
    d.set("route", "city")

    # A ringing call: what only an answered call can do.
    one = agent.ring()
    d.hold()
    d.connect()
    d.transfer("quick", "2001")
    d.transfer("consult", "2001")
    d.record("start")
    d.record("stop")
    d.conference("2001")
    assert d.answer().ok
    agent.talking(one)
    d.answer()

    # Two calls: one action, one call; a ringing call cannot join.
    two = agent.ring("sip:2002@pbx.test")
    d.select([one, two])
    d.hangup()
    d.conference()
    d.select([one])
    assert d.hold().ok
    d.hold()
    d.conference("2003")
    agent.ended(two)
    d.select([two])  # it has ended
    d.select([one])

    # Recording.
    assert d.record("start").ok
    d.record("start")
    assert d.record("stop").ok
    monkeypatch.setattr(rec, "free_bytes", lambda directory: 0)
    d.record("start")
    d._record_stop_low_space(one, rec.space_problem(tmp_path, 50))  # what the space watch does

    def no_free_space_check(directory: Path) -> int:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(rec, "free_bytes", no_free_space_check)
    d.record("start")

    # A quick transfer in flight, refused by the target, and one that never hears back.
    assert d.connect().ok
    assert d.transfer("quick", "2001").ok
    d.transfer("quick", "2001")
    agent.transfer_status(one, 603, "Declined")
    assert d.transfer("quick", "2001").ok
    agent.transfer_status(one, 180, "Ringing", final=False)
    d.transfer("quick", "2001")
    deadline = desk_module.time.monotonic() + 5
    while one in d.transfers and desk_module.time.monotonic() < deadline:
        desk_module.time.sleep(0.02)
    agent.transfer_status(1, 180, "Ringing", final=False)  # not the call's own: nothing to do

    # A consultation: not answered yet, refused by the phone, already under way.
    out = d.transfer("consult", "2002")
    assert out.ok, out.reason
    consult = out.data["row"]
    d.transfer("confirm")
    agent.talking(consult)
    assert d.transfer("confirm").ok
    agent.transfer_status(one, 420, "Bad Extension")
    assert d.transfer("confirm").ok
    d.transfer("confirm")
    agent.transfer_status(one, 486, "Busy Here")
    agent.ended(consult)
    d.select([one])
    assert d.connect().ok

    # The unit is full.
    rows = [agent.ring(f"sip:20{n:02d}@pbx.test") for n in range(MAX_CALLS - 1)]
    d.select([one])
    d.dial("2009")
    d.transfer("consult", "2009")
    d.conference("2009")
    for row in rows:
        agent.ended(row)

    # The selected call ends under the operator's finger.
    gone = agent.ring()
    d.select([gone])
    agent.ended(gone)
    d.hold()

    # A three-party conference whose next party has not answered yet.
    d.select([one])
    out = d.conference("2005")
    assert out.ok, out.reason
    d.conference()
    agent.ended(out.data["row"])
    d.select([one])
    assert d.connect().ok

    # A consultation, and a confirm pressed on a third call.
    out = d.transfer("consult", "2002")
    assert out.ok, out.reason
    agent.talking(out.data["row"])
    third = agent.ring()
    d.select([third])
    d.transfer("confirm")
    for row in (out.data["row"], third):
        agent.ended(row)
    d.select([one])
    assert d.connect().ok

    # More answered calls than a conference takes.
    for _ in range(MAX_CALLS):
        row = agent.ring()
        d.select([row])
        assert d.answer().ok
        agent.talking(row)
    d.select(list(d.rows))
    d.conference()
    for row in list(d.rows):
        if row != one:
            agent.ended(row)
    d.select([one])
    assert d.connect().ok

    # A consultation whose call is refused at once (the phone is busy).
    def busy(call: int, line: str, uri: str, route: str | None) -> Future[None]:
        fut = FakeAgent.dial(agent, call, line, uri, route)
        agent.ended(call, 486, "Busy Here")
        return fut

    agent.dial = busy  # type: ignore[method-assign]
    d.transfer("consult", "2009")
    del agent.dial
    d.select([one])
    assert d.connect().ok

    # Agent failures.
    d.select([one])
    agent.fail_next("dial", "cannot call sip:2009@pbx.test: Invalid URI (pjsua2 status 171039)")
    d.transfer("consult", "2009")
    d.select([one])
    assert d.connect().ok
    agent.fail_next("hangup", "call 1 has ended")
    d.hangup()
    agent.fail_next("hold", RuntimeError("boom"))
    d.hold()
    monkeypatch.setattr(desk_module, "AGENT_TIMEOUT", 0.01)
    agent.stall_next("hold")
    d.hold()
    late = agent.stall_next("hangup")
    late.set_running_or_notify_cancel()  # already taken by the agent thread: cannot be called off
    d.hangup()
    late.set_result(None)

    # Recording every call: a recordings directory that cannot be, and a recorder the agent refuses.
    monkeypatch.setattr(rec, "free_bytes", lambda directory: 1 << 40)
    (tmp_path / "file").write_text("")
    for directory, fail in ((tmp_path / "file" / "rec", None), (tmp_path / "rec2", "call 1 has ended")):
        agent = FakeAgent()
        d = Desk(make_profile(recordings=directory, record_always=True), agent)
        d.subscribe(seen.append)
        d.start()
        agent.register_all(d.profile)
        if fail:
            agent.fail_next("record", fail)
        call = agent.ring()
        assert d.answer().ok
        agent.talking(call)
    return [e.reason if isinstance(e, ev.ActionFailed) else e.message
            for e in seen if isinstance(e, (ev.ActionFailed, ev.Alert))]


@pytest.fixture(scope="module")
def said(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return desk_says(tmp_path_factory.mktemp("said"), monkeypatch)


def test_every_reason_the_desk_gives_is_shown_in_russian_with_its_details(said: list[str]) -> None:
    ru, en = Texts("ru"), Texts("en")
    assert len(said) > 50
    for english in said:
        russian = ru.reason(english)
        assert ru.match(english) is not None and russian != english, f"left in English: {english!r}"
        assert re.search("[а-яА-Я]", russian), russian
        for part in re.findall(r"\d+|'[^']*'|sip:\S+|/[^\s:;()]+", english):  # numbers, quoted values, URIs, paths
            assert part in russian, (english, russian, part)
        assert en.reason(english) == english


#: DESK: the desk above says it word for word; else (file, fixed part of the English in its source).
DESK = None
EXAMPLES: list[tuple[str, str, tuple[str, str] | None]] = [
    ("no call selected", "не выбран вызов", DESK),
    ("number required for dial", "нужен номер", DESK),
    ("line op2 is not registered (not registered yet)", "линия op2 не зарегистрирована (регистрации ещё не было)",
     DESK),
    ("this unit handles at most 4 calls", "не больше 4 вызовов на этом аппарате", DESK),
    ("unknown route 'x'; routes: city, trunk", "нет маршрута 'x'; маршруты: city, trunk", DESK),
    ("unknown line 'x'; lines: op1, op2", "нет линии 'x'; линии: op1, op2", DESK),
    ("unknown parameter 'colour'; use line, number or route",
     "неизвестный параметр 'colour'; допустимы line, number, route", DESK),
    ("no call row 7 (rows: none)", "нет вызова 7 (есть: нет)", DESK),
    ("no call row 3 (rows: 2)", "нет вызова 3 (есть: 2)", DESK),
    ("2 calls selected: select one call for hangup", "выбрано вызовов: 2; выберите один", DESK),
    ("the selected call has ended: select the call to act on", "выбранный вызов завершён: выберите нужный вызов",
     DESK),
    ("call 2 is not ringing here (it is talking)", "вызов 2 не звонит на этом аппарате (сейчас: разговор)", DESK),
    ("call 2 is already on hold", "вызов 2 уже на удержании", DESK),
    ("call 2 is ringing: only a call in conversation can be held",
     "вызов 2: звонит; удержать можно только разговор", DESK),
    ("call 2 is not on hold", "вызов 2 не на удержании", DESK),
    ("unknown transfer 'sideways'; use quick, consult or confirm",
     "неизвестный перевод 'sideways'; допустимы quick, consult, confirm", DESK),
    ("call 2 is ringing: only an answered call can be transferred",
     "вызов 2: звонит; перевести можно только отвеченный вызов", DESK),
    ("call 2 is already being transferred (transferring to sip:2001@pbx.test)",
     "вызов 2 уже переводится (перевод на sip:2001@pbx.test)", DESK),
    ("call 2 is already being transferred (transfer: 180 Ringing)", "вызов 2 уже переводится (перевод: 180 Ringing)",
     DESK),
    ("call 2 is ringing: consult needs an answered call",
     "вызов 2: звонит; консультация возможна только из отвеченного вызова", DESK),
    ("the consultation call ended at once (486 Busy Here): connect call 2 to take it back",
     "консультационный вызов сразу завершился (486 Busy Here): чтобы вернуть вызов 2, нажмите «Подключить»", DESK),
    ("the consultation call ended at once (ended): connect call 2 to take it back",
     "консультационный вызов сразу завершился (завершён): чтобы вернуть вызов 2, нажмите «Подключить»",
     ("kiosk/desk.py", 'self.ended_reasons.get(consult, "ended")')),
    ("call 11 is not in a consultation (2->10 is): select the held caller or the consulted party",
     "вызов 11 не в консультации (в консультации: 2->10): выберите удерживаемого абонента или консультанта", DESK),
    ("no consultation to confirm: use transfer consult first",
     "нет консультации для подтверждения: сначала «Перевод: С консультацией»", DESK),
    ("the consultation has ended", "консультация завершена", ("kiosk/desk.py", '"the consultation has ended"')),
    ("row 4 has not answered yet (dialling): wait for the answer, or use a quick transfer",
     "вызов 4 ещё не отвечен (набор): дождитесь ответа или сделайте быстрый перевод", DESK),
    ("the transfer of call 2 is already under way", "перевод вызова 2 уже идёт", DESK),
    ("transfer of call 2 got no answer in 0 s: the call stays with you",
     "перевод вызова 2: нет ответа за 0 с; вызов остаётся у вас", DESK),
    ("transfer of call 2 to call 4 failed: 420 Bad Extension; both calls stay with you: confirm again, "
     "connect call 2 to go back to the caller, or hang up call 4",
     "перевод вызова 2 на вызов 4 не удался: 420 Bad Extension; оба вызова остаются у вас: подтвердите ещё раз, "
     "подключите вызов 2, чтобы вернуться к абоненту, или завершите вызов 4", DESK),
    ("transfer of call 2 failed: 603 Declined; the call stays with you",
     "перевод вызова 2 не удался: 603 Declined; вызов остаётся у вас", DESK),
    ("row 9 has not answered yet (dialling)", "вызов 9 ещё не отвечен (набор)", DESK),
    ("call 2 is on hold: talk to the first party, or select the rows to join",
     "вызов 2: на удержании; сначала поговорите с первым абонентом или выберите вызовы для конференции", DESK),
    ("call 3 is ringing: only answered calls can join", "вызов 3: звонит; в конференцию входят только отвеченные вызовы",
     DESK),
    ("no call row 5", "нет вызова 5", ("kiosk/desk.py", 'f"no call row {rid}"')),
    ("a conference holds at most 4 remote parties here", "в конференции здесь не больше 4 абонентов", DESK),
    ("pickup needs an internal number, not 'sip:1005@pbx.test'",
     "для перехвата нужен внутренний номер, а не 'sip:1005@pbx.test'", DESK),
    ("cannot pick up the call ringing on 1005: no answer in 0 s", "не удалось перехватить вызов на 1005: нет ответа за 0 с",
     DESK),
    ("cannot pick up the call ringing on 1005: 404 Nothing ringing",
     "не удалось перехватить вызов на 1005: 404 Nothing ringing", ("kiosk/desk.py", "cannot pick up the call ringing on")),
    ("unknown record action 'pause'; use start or stop", "неизвестное действие записи 'pause'; допустимы start, stop",
     DESK),
    ("recording is always on in this unit's profile: every call is recorded",
     "запись на этом аппарате включена всегда: записывается каждый вызов",
     ("kiosk/desk.py", "recording is always on in this unit's profile: every call is recorded")),
    ("call 2 is already being recorded", "вызов 2 уже записывается", DESK),
    ("call 2 is ringing: only an answered call can be recorded", "вызов 2: звонит; записать можно только отвеченный вызов",
     DESK),
    ("call 2 is not being recorded", "вызов 2 не записывается", DESK),
    ("cannot record call 1: call 1 has ended", "не удалось записать вызов 1: вызов 1 уже завершён", DESK),
    ("unknown mute state 'maybe'; use on, off or toggle",
     "неизвестное состояние микрофона 'maybe'; допустимы on, off, toggle", DESK),
    ("this unit cannot mute the microphone", "этот аппарат не умеет выключать микрофон", DESK),
    ("cannot read the recordings directory: Permission denied", "не удалось прочитать каталог записей: Permission denied",
     ("kiosk/desk.py", "cannot read the recordings directory: ")),
    ("the SIP agent did not answer in time; nothing was done", "SIP-агент не ответил вовремя; ничего не сделано", DESK),
    ("the SIP agent is slow: the request is still in progress", "SIP-агент не успевает: запрос ещё выполняется", DESK),
    ("internal error in the SIP agent: boom", "внутренняя ошибка SIP-агента: boom", DESK),
    # --- the recordings (the desk's alerts above carry them too)
    ("recording of call 2 stopped: the recording has not grown for 10 s (the disk refuses writes); the call goes on",
     "запись вызова 2 остановлена: запись не растёт уже 10 с (диск не принимает данные); разговор продолжается",
     ("kiosk/recordings.py", "s (the disk refuses writes)")),
    ("call 1 is not recorded: not recording: only 0.0 MB free in /rec (the profile wants at least 50 MB)",
     "вызов 1 не записывается: запись невозможна: свободно только 0.0 МБ в /rec (профиль требует не меньше 50 МБ)",
     ("kiosk/recordings.py", "(the profile wants at least {min_free_mb} MB)")),
    ("call 1 is not recorded: cannot write the recording's sidecar: No space left on device",
     "вызов 1 не записывается: не удалось записать файл описания записи: No space left on device",
     ("kiosk/recordings.py", "cannot write the recording's sidecar: ")),
    ("cannot create /rec/a.wav: Read-only file system", "не удалось создать /rec/a.wav: Read-only file system",
     ("kiosk/recordings.py", 'f"cannot create {wav}: {exc.strerror}"')),
    ("too many recordings named 20240101_op1 already", "слишком много записей с именем 20240101_op1",
     ("kiosk/recordings.py", "too many recordings named {stem} already")),
    ("not recording: cannot check free space in /rec: Permission denied",
     "запись невозможна: не удалось проверить свободное место в /rec: Permission denied",
     ("kiosk/recordings.py", "cannot check free space in {directory}: ")),
    ("call 1 is not recorded: cannot use the recordings directory /rec: Not a directory",
     "вызов 1 не записывается: каталог записей /rec недоступен: Not a directory",
     ("kiosk/recordings.py", "cannot use the recordings directory {directory}: ")),
    # --- the SIP agent (pjsua2 is not loaded here: its words are checked in its source)
    ("the SIP agent is not running", "SIP-агент не запущен", ("kiosk/agent/thread.py", '"the SIP agent is not running"')),
    ("internal error: boom", "внутренняя ошибка: boom", ("kiosk/agent/thread.py", 'f"internal error: {exc}"')),
    ("call 3 has ended", "вызов 3 уже завершён", ("kiosk/desk.py", 'f"call {call} has ended"')),
    ("no reason given", "причина не указана", ("kiosk/desk.py", "'no reason given'")),
    ("call 2: no audio from the far end for 60 s: the call was ended",
     "вызов 2: от абонента нет звука 60 с, вызов завершён",
     ("kiosk/agent/rtp_watch.py", 'f"no audio from the far end for {self.timeout_s} s: the call was ended"')),
    ("call 4 to sip:2002@pbx.test failed: 486 Busy Here", "вызов 4 на sip:2002@pbx.test не состоялся: 486 Busy Here",
     ("kiosk/desk.py", 'f"call {row.id} to {row.remote} failed: {reason or \'no reason given\'}"')),
    ("cannot call sip:9@x: this unit handles at most 4 calls",
     "не удалось позвонить на sip:9@x: не больше 4 вызовов на этом аппарате",
     ("kiosk/agent/thread.py", 'f"cannot call {uri}: {_pj_reason(exc)}"')),
    ("this unit has no headset configured ([audio] device)", "на этом аппарате не настроена гарнитура ([audio] device)",
     ("kiosk/agent/thread.py", "this unit has no headset configured ([audio] device)")),
    ("unknown line 'op9'", "нет линии 'op9'", ("kiosk/agent/lines.py", 'f"unknown line {line_id!r}"')),
    ("line op1 is not registered (Forbidden: check username and password of line op1)",
     "линия op1 не зарегистрирована (Forbidden: проверьте имя пользователя и пароль линии op1)",
     ("kiosk/agent/lines.py", ": check username and password of line ")),
    ("call 3 is already being recorded", "вызов 3 уже записывается", ("kiosk/agent/media.py", "is already being recorded")),
    # --- the headset (hw/audio.py, kiosk/agent/audio_port.py)
    ("Local audio is off: no such device", "Звук гарнитуры выключен: no such device",
     ("kiosk/agent/audio_port.py", 'f"Local audio is off: {exc}"')),
    ("Audio device 'USB' is back", "Аудиоустройство 'USB' снова на месте",
     ("hw/audio.py", 'f"Audio device {self.device!r} is back"')),
    ("Audio device 'USB' stopped: calls continue without the headset; retrying every 2 s",
     "Аудиоустройство 'USB' перестало работать: разговоры продолжаются без гарнитуры; повтор каждые 2 с",
     ("hw/audio.py", "calls continue without the headset; ")),
    ("Audio device 'USB' not found: calls continue without the headset; retrying every 2 s",
     "Аудиоустройство 'USB' не найдено: разговоры продолжаются без гарнитуры; повтор каждые 2 с",
     ("hw/audio.py", "f\"audio device {device!r} not found\"")),
    ("Audio device 7 not found (3 devices): calls continue without the headset; retrying every 2 s",
     "Аудиоустройство 7 не найдено (устройств: 3): разговоры продолжаются без гарнитуры; повтор каждые 2 с",
     ("hw/audio.py", "not found ({len(devices)} devices)")),
    ("Audio device 'USB' did not open: calls continue without the headset; retrying every 2 s",
     "Аудиоустройство 'USB' не открылось: разговоры продолжаются без гарнитуры; повтор каждые 2 с",
     ("hw/audio.py", "did not open")),
    ("Cannot start the audio device process: [Errno 12] Cannot allocate memory: calls continue without the "
     "headset; retrying every 2 s",
     "Не удалось запустить процесс аудиоустройства: [Errno 12] Cannot allocate memory: разговоры продолжаются без "
     "гарнитуры; повтор каждые 2 с", ("hw/audio.py", "cannot start the audio device process: ")),
    ("Audio device 'USB': audio device 'USB Headset' does not run at 16 kHz mono (its rate: 44100 Hz); pick its "
     "'default' or 'plughw' entry from `kiosk devices`: calls continue without the headset; retrying every 2 s",
     "Аудиоустройство 'USB': аудиоустройство 'USB Headset' не работает на 16 кГц моно (его частота: 44100 Гц); "
     "выберите его вариант 'default' или 'plughw' в `kiosk devices`: разговоры продолжаются без гарнитуры; "
     "повтор каждые 2 с", ("hw/audio.py", "pick its 'default' or 'plughw' entry from `kiosk devices`")),
]


@pytest.mark.parametrize(("english", "russian", "source"), EXAMPLES, ids=[e[0][:60] for e in EXAMPLES])
def test_a_reason_in_russian_keeps_its_details(english: str, russian: str, source: tuple[str, str] | None,
                                               said: list[str]) -> None:
    if source is DESK:
        assert english in said, "the desk no longer says it so: update the example and, if need be, the pattern"
    else:
        path, fixed = source
        assert fixed in (ROOT / path).read_text(), f"{path} no longer says {fixed!r}"
    assert Texts("ru").reason(english) == russian
    assert Texts("en").reason(english) == english


def test_every_pattern_has_an_example() -> None:
    ru = Texts("ru")
    used: set[str] = set()
    for english, _russian, _source in EXAMPLES:
        pending = [english]
        while pending:  # a sentence inside another is an example of its own pattern too
            found = ru.match(pending.pop())
            if found is not None:
                used.add(found[0].pattern)
                pending.extend(v for k, v in found[2].groupdict().items() if k in texts._NESTED and v)
    assert {p.pattern for p, _ in texts._REASONS["ru"]} - used == set()


def test_an_unknown_reason_comes_back_unchanged() -> None:
    ru = Texts("ru")
    for english in ("something the unit never said", "Forbidden (pjsua2 status 171003)", "", "486 Busy Here"):
        assert ru.reason(english) == english
        assert ru.alert(english) == english
    assert ru.refused("hold", "a brand new reason") == "Удержание: a brand new reason"


def test_the_english_panel_shows_english() -> None:
    en = Texts("en")
    assert en.refused("hold", "no call selected") == "Hold: no call selected"
    assert en.alert("recording of call 2 stopped: x; the call goes on") == "recording of call 2 stopped: x; the call goes on"
    assert Texts("de").reason("no call selected") == "no call selected"


def test_a_russian_alert_and_refusal() -> None:
    ru = Texts("ru")
    assert ru.refused("record start", "call 2 is already being recorded") == "Запись: Старт: вызов 2 уже записывается"
    assert ru.alert("recording of call 2 stopped: only 3.5 MB free in /var/rec (the profile wants at least 200 MB); "
                    "the call goes on") == ("запись вызова 2 остановлена: свободно только 3.5 МБ в /var/rec "
                                            "(профиль требует не меньше 200 МБ); разговор продолжается")
