"""The panel's words in English and Russian, chosen by the profile's `[operator] language`.

Two kinds of words. The screen's own labels (buttons, columns, the dialog) are
here; the Russian ones are the product's own (its original Russian product
page), reworded where they did not fit a button in two lines ("Перевод с
консультацией") or did not say what a tap does (the microphone). A button says
what a tap does ("Mute" / "Unmute"); a state has its own word ("held",
"mic_off"). Every button label fits two lines of a seventh of 800 px, broken
at word ends only (tests/test_ui_texts.py measures them).

The desk's words (action names, call states, refusals, alerts and row notes)
are the catalogues' of kiosk.i18n, one per language, looked up by the code and
parameters the desk sends with its English message: the panel never parses an
English sentence. A code no catalogue knows is shown as the code with its
parameters; an event without a code (an older unit) in its English. Given the
table's names (row id -> party), a message names a call by its party.
"""

from __future__ import annotations

from typing import Any, Mapping

from kiosk import i18n

LANGUAGES = i18n.LANGUAGES

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
    "transfer_quick": "Quick\ntransfer",
    "transfer_consult": "Consult\ntransfer",
    "transfer_confirm": "Confirm\ntransfer",
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
    "reject": "Reject",
    "unmute": "Unmute",
    "mic_off": "MIC OFF",
    "held": "On hold",
    "recording_now": "Recording",
    "multi_on": "Select several:\nON",
    "banner_title": "Incoming call",
    "banner_line": "line {line}",
    "banner_via": "for {target}",
    "banner_more": "+{count} waiting",
    "on_hold_for": "on hold {time}",
    "ended": "ended",
    "ended_because": "ended: {reason}",
    "consult_for": "consulting for {name}",
    "conference_group": "conference",
    "messages": "Messages",
    "no_messages": "No messages yet",
    "close": "Close",
    "operator": "Operator: {name}",
    "nothing_selected": "No call selected: tap a call",
    "select_row": "Select",
    "add_row": "Add to selection",
    "remove_row": "Remove from selection",
    "link_lost": "No connection to the unit (restarting?): reconnecting...",
    "history": "History",
    "directory": "Directory",
    "dnd": "Do not\ndisturb",
    "dnd_on": "Do not disturb:\nON",
    "dnd_mark": "DND",
    "tones_to": "Tones to {party}",
    "search_hint": "Name or number",
    "history_hint": "Search: name or number",
    "call_back": "Call back",
    "no_history": "No calls in the history",
    "no_history_found": "No calls match \u201c{query}\u201d",
    "no_contacts": "The directory is empty",
    "no_contacts_found": "Nobody matches \u201c{query}\u201d",
    "searching": "Searching...",
    "dir_error": "{source} directory not available: {message}",
    "history_error": "History not available: {message}",
    "source_ldap": "Company (LDAP)",
    "source_file": "Local",
    "via": "for {via}",
    "new": "NEW",
    "kbd_space": "Space",
    "kbd_hide": "Hide",
    "kbd_latin": "ABC",
    "kbd_cyrillic": "\u0410\u0411\u0412",
    "outcome_answered": "answered",
    "outcome_missed": "missed",
    "outcome_rejected": "rejected",
    "outcome_busy": "busy",
    "outcome_failed": "failed",
    "outcome_transferred": "transferred",
    "outcome_picked-up": "picked up elsewhere",
    "outcome_dnd": "refused (DND)",
    "yesterday": "yesterday",
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
    "transfer_quick": "Быстрый\nперевод",
    "transfer_consult": "Перевод с\nконсультацией",
    "transfer_confirm": "Подтвердить\nперевод",
    "conference": "Конференция",
    "record_start": "Запись:\nСтарт",
    "record_stop": "Запись:\nСтоп",
    "mute": "Выключить\nмикрофон",
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
    "reject": "Отклонить",
    "unmute": "Включить\nмикрофон",
    "mic_off": "МИКРОФОН ВЫКЛ.",
    "held": "На удержании",
    "recording_now": "Идёт запись",
    "multi_on": "Несколько:\nВКЛ.",
    "banner_title": "Входящий вызов",
    "banner_line": "линия {line}",
    "banner_via": "кому: {target}",
    "banner_more": "ещё ждут: {count}",
    "on_hold_for": "на удержании {time}",
    "ended": "завершён",
    "ended_because": "завершён: {reason}",
    "consult_for": "консультация для вызова «{name}»",
    "conference_group": "конференция",
    "messages": "Сообщения",
    "no_messages": "Сообщений пока нет",
    "close": "Закрыть",
    "operator": "Оператор: {name}",
    "nothing_selected": "Вызов не выбран: коснитесь вызова",
    "select_row": "Выбрать",
    "add_row": "Добавить к выбору",
    "remove_row": "Убрать из выбора",
    "link_lost": "Нет связи с аппаратом (перезапуск?): подключаюсь...",
    "history": "Журнал",
    "directory": "Справочник",
    "dnd": "Не\nбеспокоить",
    "dnd_on": "Не беспокоить:\nВКЛ.",
    "dnd_mark": "НЕ БЕСПОКОИТЬ",
    "tones_to": "Тоновый набор: {party}",
    "search_hint": "Имя или номер",
    "history_hint": "Поиск: имя или номер",
    "call_back": "Перезвонить",
    "no_history": "В журнале нет вызовов",
    "no_history_found": "Нет вызовов по запросу «{query}»",
    "no_contacts": "Справочник пуст",
    "no_contacts_found": "Никого не найдено по запросу «{query}»",
    "searching": "Поиск...",
    "dir_error": "Справочник «{source}» недоступен: {message}",
    "history_error": "Журнал недоступен: {message}",
    "source_ldap": "Компания (LDAP)",
    "source_file": "Местный",
    "via": "кому: {via}",
    "new": "НОВЫЙ",
    "kbd_space": "Пробел",
    "kbd_hide": "Скрыть",
    "kbd_latin": "ABC",
    "kbd_cyrillic": "\u0410\u0411\u0412",
    "outcome_answered": "отвечен",
    "outcome_missed": "пропущен",
    "outcome_rejected": "отклонён",
    "outcome_busy": "занято",
    "outcome_failed": "не удался",
    "outcome_transferred": "переведён",
    "outcome_picked-up": "перехвачен",
    "outcome_dnd": "отклонён (не беспокоить)",
    "yesterday": "вчера",
}


class Texts:
    """The words of one language; an unknown language falls back to English.

    Labels come from this module; the desk's words (actions, states, refusals,
    alerts, notes) from the language's catalogue in kiosk.i18n, by code.
    """

    def __init__(self, language: str) -> None:
        self.language = language if language in LANGUAGES else "en"
        self._words = _RU if self.language == "ru" else _EN

    def __getitem__(self, key: str) -> str:
        return self._words[key]

    def label(self, key: str, action: str | None = None) -> str:
        """A button's label: this module's word for the screen id, else the catalogue's action name."""
        word = self._words.get(key)
        if word is None and action:
            return self.action(action)
        return word if word is not None else key

    def state(self, state: str) -> str:
        """A call row's state word (Row.state) as the operator reads it."""
        return i18n.state_name(state, self.language)

    def action(self, action: str) -> str:
        """An action id (kiosk.commands) as a button word: "transfer_quick" -> "Quick transfer"."""
        name = i18n.action_name(action, self.language)
        return name[:1].upper() + name[1:]

    def outcome(self, outcome: str) -> str:
        """A history entry's outcome (kiosk.history) in words; an outcome this panel does not know as it is."""
        return self._words.get(f"outcome_{outcome}", outcome)

    def direction(self, direction: str) -> str:
        return self["dir_in"] if direction == "in" else self["dir_out"]

    def message(self, code: str, params: Mapping[str, Any] | None = None, action: str | None = None,
                english: str = "", names: Mapping[int, str] | None = None) -> str:
        """A code and its parameters in this language; without a code (or with one no catalogue
        has: an older or newer unit), the desk's English words.

        `names`: row id -> the party's text as the table shows it (CallTable.names()): a call in
        it is named by its party, any other by its number (kiosk.i18n.message)."""
        if not code or (english and code not in i18n.catalogue(self.language)["codes"]
                        and code not in i18n.catalogue("en")["codes"]):
            return english
        return i18n.message(code, params, self.language, action, names)

    def refused(self, action: str, code: str, params: Mapping[str, Any] | None = None, english: str = "",
                names: Mapping[int, str] | None = None) -> str:
        """An ActionFailed for the status line: the action's name and why, by code."""
        reason = self.message(code, params, action, english, names)
        name = self.action(action)
        return self["refused"].format(action=name, reason=reason) if name else reason

    def alert(self, code: str, params: Mapping[str, Any] | None = None, english: str = "",
              names: Mapping[int, str] | None = None) -> str:
        """An Alert for the status line, by code (the agent's plain alerts carry their English words)."""
        values = dict(params or {})
        values.setdefault("message", english)  # the catch-all codes "alert" and "audio_alert" show it
        return self["alert"].format(message=self.message(code, values, None, english, names))

    def note(self, row: Mapping[str, Any], names: Mapping[int, str] | None = None) -> str:
        """A call row's note (Row.as_json()): its ``note_key`` translated, else the English ``note``."""
        key = row.get("note_key")
        if isinstance(key, Mapping) and key.get("code"):
            return self.message(str(key["code"]), key.get("params"), None, str(row.get("note") or ""), names)
        return str(row.get("note") or "")
