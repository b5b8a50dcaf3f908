"""The panel's words in English and Russian, chosen by the profile's `[operator] language`.

The Russian labels are the product's own (SPEC.md). The desk's refusal reasons
are English sentences written for the operator; they are shown as they are,
after the translated name of the action they refuse.
"""

from __future__ import annotations

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
        return self["refused"].format(action=self.action(action), reason=reason)
