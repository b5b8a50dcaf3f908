"""The panel's words in English and Russian, chosen by the profile's `[operator] language`.

The Russian labels are the product's own (its original Russian product page). The desk's refusal reasons
and the alerts are English sentences (the control socket and the logs keep them
so: CTI integrations parse them); the panel translates them here with an ordered
table of patterns over the English. A sentence no pattern knows is shown in
English, unchanged: the operator never loses what the unit said.
"""

from __future__ import annotations

import re
from typing import Mapping

LANGUAGES = ("en", "ru")

_EN: dict[str, str] = {
    "line": "Line",
    "number": "Number",
    "route": "Route",
    "no_route": "(line's own)",
    "call": "Call",
    "answer": "Answer",
    "hangup": "Hang up",
    "hold": "Hold",
    "connect": "Connect",
    "pickup": "Pickup",
    "transfer_quick": "Transfer:\nQuick",
    "transfer_consult": "Transfer:\nWith consultation",
    "transfer_confirm": "Transfer:\nConfirm",
    "conference": "Conference",
    "record_start": "Record:\nStart",
    "record_stop": "Record:\nStop",
    "mute": "Mute",
    "muted": "Muted",
    "multi": "Select\nseveral",
    "col_line": "Line",
    "col_dir": "Dir.",
    "col_remote": "Remote party",
    "col_state": "State",
    "col_time": "Time",
    "col_rec": "Rec.",
    "dir_in": "in",
    "dir_out": "out",
    "rec_on": "REC",
    "no_calls": "No calls",
    "registered": "registered",
    "not_registered": "not registered",
    "ok": "OK",
    "cancel": "Cancel",
    "clear": "C",
    "delete": "Del",
    "ask_number": "Number for: {action}",
    "refused": "{action}: {reason}",
    "alert": "{message}",
    "link_lost": "No connection to the unit (restarting?): reconnecting...",
}

_RU: dict[str, str] = {
    "line": "Линия",
    "number": "Номер",
    "route": "Маршрут",
    "no_route": "(по линии)",
    "call": "Позвонить",
    "answer": "Ответить",
    "hangup": "Завершить",
    "hold": "Удержание",
    "connect": "Подключить",
    "pickup": "Перехват",
    "transfer_quick": "Перевод:\nБыстрый",
    "transfer_consult": "Перевод:\nС консультацией",
    "transfer_confirm": "Перевод:\nПодтвердить",
    "conference": "Конференция",
    "record_start": "Запись:\nСтарт",
    "record_stop": "Запись:\nСтоп",
    "mute": "Микрофон\nвыкл.",
    "muted": "Микрофон\nвыключен",
    "multi": "Выбрать\nнесколько",
    "col_line": "Линия",
    "col_dir": "Напр.",
    "col_remote": "Абонент",
    "col_state": "Состояние",
    "col_time": "Время",
    "col_rec": "Зап.",
    "dir_in": "вх.",
    "dir_out": "исх.",
    "rec_on": "ЗАП",
    "no_calls": "Нет вызовов",
    "registered": "зарегистрирована",
    "not_registered": "не зарегистрирована",
    "ok": "Готово",
    "cancel": "Отмена",
    "clear": "С",
    "delete": "Стер.",
    "ask_number": "Номер для: {action}",
    "refused": "{action}: {reason}",
    "alert": "{message}",
    "link_lost": "Нет связи с блоком (перезапуск?): подключаюсь...",
}

#: The desk's call states (Row.state) as the operator reads them.
_STATES: dict[str, Mapping[str, str]] = {
    "en": {},
    "ru": {
        "dialling": "набор",
        "calling": "вызов",
        "ringing": "звонит",
        "talking": "разговор",
        "on hold": "на удержании",
        "held by remote": "удержан абонентом",
        "in conference": "в конференции",
        "consulting": "консультация",
    },
}

#: The desk's action names (ActionFailed.action, NumberRequired.action) as button words.
_ACTIONS: dict[str, Mapping[str, str]] = {
    "en": {
        "dial": "Call", "answer": "Answer", "hangup": "Hang up", "hold": "Hold", "connect": "Connect",
        "pickup": "Pickup", "quick transfer": "Quick transfer", "consult transfer": "Transfer with consultation",
        "confirm transfer": "Confirm transfer", "conference": "Conference", "record start": "Record start",
        "record stop": "Record stop", "record": "Record", "mute": "Mute", "select": "Select", "set": "Set",
    },
    "ru": {
        "dial": "Позвонить", "answer": "Ответить", "hangup": "Завершить", "hold": "Удержание",
        "connect": "Подключить", "pickup": "Перехват", "quick transfer": "Перевод: Быстрый",
        "consult transfer": "Перевод: С консультацией", "confirm transfer": "Перевод: Подтвердить",
        "conference": "Конференция", "record start": "Запись: Старт", "record stop": "Запись: Стоп",
        "record": "Запись", "mute": "Микрофон", "select": "Выбор", "set": "Параметр",
    },
}


#: Parts of the English reasons that stand for a device, as `{device!r}` writes it (a name or an index).
_DEV = r"""(?:'[^']*'|"[^"]*"|-?\d+)"""
#: A SIP status code and its reason phrase (the phrase may be empty), kept as the server said them.
_SIP = r"(?P<sip>\d{3} [^;]*?)"

#: The desk's, the agent's and the recordings' sentences, English regular expression -> Russian
#: template; the first that matches the whole sentence wins (the longer of two alike comes first).
#: Named groups carry the variable parts over; `reason`, `error` and `note` are sentences of
#: their own and are translated in turn, `state` is a call state (translated as in the table).
_REASON_TABLE: tuple[tuple[str, str], ...] = (
    # --- the agent did not (or could not) do it -------------------------------------------
    (r"the SIP agent did not answer in time; nothing was done", "SIP-агент не ответил вовремя; ничего не сделано"),
    (r"the SIP agent is slow: the request is still in progress", "SIP-агент не успевает: запрос ещё выполняется"),
    (r"internal error in the SIP agent: (?P<error>.+)", "внутренняя ошибка SIP-агента: {error}"),
    (r"the SIP agent is not running", "SIP-агент не запущен"),
    (r"internal error: (?P<error>.+)", "внутренняя ошибка: {error}"),
    (r"call (?P<id>\d+) has ended", "вызов {id} уже завершён"),
    (r"cannot call (?P<uri>\S+): (?P<reason>.+)", "не удалось позвонить на {uri}: {reason}"),
    (r"call (?P<id>\d+) to (?P<uri>\S+) failed: (?P<reason>.+)", "вызов {id} на {uri} не состоялся: {reason}"),
    (r"call (?P<id>\d+): no audio from the far end for (?P<n>\d+) s: the call was ended",
     "вызов {id}: от абонента нет звука {n} с, вызов завершён"),
    (r"no reason given", "причина не указана"),
    (r"this unit has no headset configured \(\[audio\] device\)",
     "на этом аппарате не настроена гарнитура ([audio] device)"),
    # --- selection and parameters ----------------------------------------------------------
    (r"the selected call has ended: select the call to act on", "выбранный вызов завершён: выберите нужный вызов"),
    (r"no call selected", "не выбран вызов"),
    (r"(?P<n>\d+) calls selected: select one call for .+", "выбрано вызовов: {n}; выберите один"),
    (r"no call row (?P<id>\d+) \(rows: (?P<ids>.+)\)", "нет вызова {id} (есть: {ids})"),
    (r"no call row (?P<id>\d+)", "нет вызова {id}"),
    (r"unknown line (?P<line>.+?); lines: (?P<ids>.+)", "нет линии {line}; линии: {ids}"),
    (r"unknown line (?P<line>.+)", "нет линии {line}"),
    (r"unknown route (?P<route>.+?); routes: (?P<ids>.+)", "нет маршрута {route}; маршруты: {ids}"),
    (r"unknown parameter (?P<name>.+); use line, number or route",
     "неизвестный параметр {name}; допустимы line, number, route"),
    (r"number required for .+", "нужен номер"),
    # --- lines ------------------------------------------------------------------------------
    (r"line (?P<line>.+?) is not registered \((?P<reason>.*)\)", "линия {line} не зарегистрирована ({reason})"),
    (r"not registered yet", "регистрации ещё не было"),
    (r"(?P<phrase>.*): check username and password of line (?P<line>.+)",
     "{phrase}: проверьте имя пользователя и пароль линии {line}"),
    (r"this unit handles at most (?P<n>\d+) calls", "не больше {n} вызовов на этом аппарате"),
    # --- answer, hold, connect ----------------------------------------------------------------
    (r"call (?P<id>\d+) is not ringing here \(it is (?P<state>.+)\)",
     "вызов {id} не звонит на этом аппарате (сейчас: {state})"),
    (r"call (?P<id>\d+) is already on hold", "вызов {id} уже на удержании"),
    (r"call (?P<id>\d+) is (?P<state>.+): only a call in conversation can be held",
     "вызов {id}: {state}; удержать можно только разговор"),
    (r"call (?P<id>\d+) is not on hold", "вызов {id} не на удержании"),
    # --- transfers ----------------------------------------------------------------------------
    (r"unknown transfer (?P<mode>.+); use quick, consult or confirm",
     "неизвестный перевод {mode}; допустимы quick, consult, confirm"),
    (r"call (?P<id>\d+) is (?P<state>.+): only an answered call can be transferred",
     "вызов {id}: {state}; перевести можно только отвеченный вызов"),
    (r"call (?P<id>\d+) is already being transferred \((?P<note>.*)\)", "вызов {id} уже переводится ({note})"),
    (r"transferring to (?P<to>.+)", "перевод на {to}"),
    (r"transfer: " + _SIP, "перевод: {sip}"),
    (r"call (?P<id>\d+) is (?P<state>.+): consult needs an answered call",
     "вызов {id}: {state}; консультация возможна только из отвеченного вызова"),
    (r"the consultation call ended at once \((?P<reason>.*)\): connect call (?P<id>\d+) to take it back",
     "консультационный вызов сразу завершился ({reason}): чтобы вернуть вызов {id}, нажмите «Подключить»"),
    (r"ended", "завершён"),
    (r"call (?P<id>\d+) is not in a consultation \((?P<pairs>.+) is\): "
     r"select the held caller or the consulted party",
     "вызов {id} не в консультации (в консультации: {pairs}): выберите удерживаемого абонента или консультанта"),
    (r"no consultation to confirm: use transfer consult first",
     "нет консультации для подтверждения: сначала «Перевод: С консультацией»"),
    (r"the consultation has ended", "консультация завершена"),
    (r"row (?P<id>\d+) has not answered yet \((?P<state>.+)\): wait for the answer, or use a quick transfer",
     "вызов {id} ещё не отвечен ({state}): дождитесь ответа или сделайте быстрый перевод"),
    (r"the transfer of call (?P<id>\d+) is already under way", "перевод вызова {id} уже идёт"),
    (r"transfer of call (?P<id>\d+) got no answer in (?P<s>[\d.]+) s: the call stays with you",
     "перевод вызова {id}: нет ответа за {s} с; вызов остаётся у вас"),
    (r"transfer of call (?P<id>\d+) to call (?P<c>\d+) failed: " + _SIP + r"; both calls stay with you: "
     r"confirm again, connect call (?P=id) to go back to the caller, or hang up call (?P=c)",
     "перевод вызова {id} на вызов {c} не удался: {sip}; оба вызова остаются у вас: "
     "подтвердите ещё раз, подключите вызов {id}, чтобы вернуться к абоненту, или завершите вызов {c}"),
    (r"transfer of call (?P<id>\d+) failed: " + _SIP + r"; the call stays with you",
     "перевод вызова {id} не удался: {sip}; вызов остаётся у вас"),
    # --- conference and pickup ------------------------------------------------------------------
    (r"row (?P<id>\d+) has not answered yet \((?P<state>.+)\)", "вызов {id} ещё не отвечен ({state})"),
    (r"call (?P<id>\d+) is (?P<state>.+): talk to the first party, or select the rows to join",
     "вызов {id}: {state}; сначала поговорите с первым абонентом или выберите вызовы для конференции"),
    (r"call (?P<id>\d+) is (?P<state>.+): only answered calls can join",
     "вызов {id}: {state}; в конференцию входят только отвеченные вызовы"),
    (r"a conference holds at most (?P<n>\d+) remote parties here", "в конференции здесь не больше {n} абонентов"),
    (r"pickup needs an internal number, not (?P<number>.+)", "для перехвата нужен внутренний номер, а не {number}"),
    (r"cannot pick up the call ringing on (?P<number>.+?): (?P<reason>.+)",
     "не удалось перехватить вызов на {number}: {reason}"),
    (r"no answer in (?P<s>[\d.]+) s", "нет ответа за {s} с"),
    # --- recording --------------------------------------------------------------------------------
    (r"unknown record action (?P<what>.+); use start or stop", "неизвестное действие записи {what}; допустимы start, stop"),
    (r"recording is always on in this unit's profile: every call is recorded",
     "запись на этом аппарате включена всегда: записывается каждый вызов"),
    (r"call (?P<id>\d+) is already being recorded", "вызов {id} уже записывается"),
    (r"call (?P<id>\d+) is (?P<state>.+): only an answered call can be recorded",
     "вызов {id}: {state}; записать можно только отвеченный вызов"),
    (r"call (?P<id>\d+) is not being recorded", "вызов {id} не записывается"),
    (r"call (?P<id>\d+) is not recorded: (?P<reason>.+)", "вызов {id} не записывается: {reason}"),
    (r"cannot record call (?P<id>\d+): (?P<reason>.+)", "не удалось записать вызов {id}: {reason}"),
    (r"recording of call (?P<id>\d+) stopped: (?P<reason>.+); the call goes on",
     "запись вызова {id} остановлена: {reason}; разговор продолжается"),
    (r"cannot read the recordings directory: (?P<error>.+)", "не удалось прочитать каталог записей: {error}"),
    (r"cannot use the recordings directory (?P<dir>.+?): (?P<error>.+)", "каталог записей {dir} недоступен: {error}"),
    (r"not recording: (?P<reason>.+)", "запись невозможна: {reason}"),
    (r"only (?P<mb>[\d.]+) MB free in (?P<dir>.+) \(the profile wants at least (?P<n>\d+) MB\)",
     "свободно только {mb} МБ в {dir} (профиль требует не меньше {n} МБ)"),
    (r"cannot check free space in (?P<dir>.+?): (?P<error>.+)", "не удалось проверить свободное место в {dir}: {error}"),
    (r"the recording has not grown for (?P<s>[\d.]+) s \(the disk refuses writes\)",
     "запись не растёт уже {s} с (диск не принимает данные)"),
    (r"cannot write the recording's sidecar: (?P<error>.+)", "не удалось записать файл описания записи: {error}"),
    (r"cannot create (?P<file>.+?): (?P<error>.+)", "не удалось создать {file}: {error}"),
    (r"too many recordings named (?P<stem>.+) already", "слишком много записей с именем {stem}"),
    # --- mute and the headset ------------------------------------------------------------------------
    (r"unknown mute state (?P<what>.+); use on, off or toggle",
     "неизвестное состояние микрофона {what}; допустимы on, off, toggle"),
    (r"this unit cannot mute the microphone", "этот аппарат не умеет выключать микрофон"),
    (r"local audio is off: (?P<error>.+)", "звук гарнитуры выключен: {error}"),
    (r"(?P<reason>.+): calls continue without the headset; retrying every (?P<s>[\d.]+) s",
     "{reason}: разговоры продолжаются без гарнитуры; повтор каждые {s} с"),
    (r"audio device (?P<dev>" + _DEV + r") is back", "аудиоустройство {dev} снова на месте"),
    (r"audio device (?P<dev>" + _DEV + r") stopped", "аудиоустройство {dev} перестало работать"),
    (r"audio device (?P<dev>-?\d+) not found \((?P<n>\d+) devices\)", "аудиоустройство {dev} не найдено (устройств: {n})"),
    (r"audio device (?P<dev>" + _DEV + r") not found", "аудиоустройство {dev} не найдено"),
    (r"audio device (?P<dev>" + _DEV + r") did not open", "аудиоустройство {dev} не открылось"),
    (r"audio device (?P<dev>" + _DEV + r") does not run at 16 kHz mono \(its rate: (?P<rate>[\d.]+) Hz\); "
     r"pick its 'default' or 'plughw' entry from `kiosk devices`",
     "аудиоустройство {dev} не работает на 16 кГц моно (его частота: {rate} Гц); "
     "выберите его вариант 'default' или 'plughw' в `kiosk devices`"),
    (r"audio device (?P<dev>" + _DEV + r"): (?P<error>.+)", "аудиоустройство {dev}: {error}"),
    (r"cannot start the audio device process: (?P<error>.+)", "не удалось запустить процесс аудиоустройства: {error}"),
)

#: Groups that hold a sentence of their own (translated in turn) or a list that may be "none".
_NESTED = ("reason", "error", "note")
_LISTS = ("ids",)

_REASONS: dict[str, tuple[tuple[re.Pattern[str], str], ...]] = {
    "en": (),
    "ru": tuple((re.compile(pattern), template) for pattern, template in _REASON_TABLE),
}


class Texts:
    """The words of one language; an unknown language falls back to English."""

    def __init__(self, language: str) -> None:
        self.language = language if language in LANGUAGES else "en"
        self._words = _RU if self.language == "ru" else _EN

    def __getitem__(self, key: str) -> str:
        return self._words[key]

    def state(self, state: str) -> str:
        return _STATES[self.language].get(state, state)

    def action(self, action: str) -> str:
        return _ACTIONS[self.language].get(action, action)

    def direction(self, direction: str) -> str:
        return self["dir_in"] if direction == "in" else self["dir_out"]

    def refused(self, action: str, reason: str) -> str:
        return self["refused"].format(action=self.action(action), reason=self.reason(reason))

    def alert(self, message: str) -> str:
        return self["alert"].format(message=self.reason(message))

    def reason(self, text: str) -> str:
        """A refusal reason or alert message in this language; one no pattern knows comes back unchanged."""
        return self._reason(text, 0)

    def _reason(self, text: str, depth: int) -> str:
        found = self.match(text) if depth < 4 else None
        if found is None:
            return text
        _pattern, template, match = found
        parts: dict[str, str] = {}
        for name, value in match.groupdict().items():
            value = value or ""
            if name in _NESTED:
                value = self._reason(value, depth + 1)
            elif name == "state":
                value = self.state(value)
            elif name in _LISTS and value == "none":
                value = "нет" if self.language == "ru" else value
            parts[name] = value
        out = template.format(**parts)
        if text[:1].isupper():  # the alerts of the headset start with a capital: so does their translation
            out = out[:1].upper() + out[1:]
        return out

    def match(self, text: str) -> tuple[re.Pattern[str], str, re.Match[str]] | None:
        """The first (pattern, template, match) of this language's table for `text` (None: no translation)."""
        # "Audio device 'x' not found" is "audio device {device!r} not found" capitalised for an alert.
        candidates = (text, text[:1].lower() + text[1:]) if text[:1].isupper() else (text,)
        for pattern, template in _REASONS[self.language]:
            for candidate in candidates:
                match = pattern.fullmatch(candidate)
                if match is not None:
                    return pattern, template, match
        return None
