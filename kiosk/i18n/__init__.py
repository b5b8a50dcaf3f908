"""Message catalogues: every refusal and alert code, and every action, in each language.

The desk, the agent and the control socket say what went wrong as a stable
code with parameters (``{"code": "number_required", "params": {}}``, the
translation-key idea of Home Assistant); this package turns a code into words.
One JSON catalogue per language sits beside this file, ``en.json`` and
``ru.json``, each with four sections:

- ``actions``: action id (kiosk.commands) -> its name in a sentence;
- ``codes``: code -> a ``str.format`` template over the code's parameters;
  ``{action}`` is the refused action's name in the same language;
- ``states``: a call row's state word -> its translation;
- ``rows``: how a sentence names a call row: ``id`` (``call {id}``, by its
  number), ``party`` (``{party}``, by its remote party, as the table shows it)
  and ``number`` (the same for a party that is a bare number: ``2001``).

The English message the socket, the log and ``kiosk ctl`` show is the English
template filled in, so the two can never drift. A parameter that is itself a
message (``{"code": ..., "params": ...}``) is translated in turn. A code no
catalogue has is shown as the code and its parameters, never dropped.

Calls are named the way the reader sees them. The parameters in ``ROW_PARAMS``
(and the lists in ``ROW_LIST_PARAMS``, ``PAIR_PARAMS``) hold row ids; given
``names`` (row id -> the party's text, ``Alice (2001)``: what the panel's table
shows) a row in it is named by its party, any other by its number (``call 12``,
as ``kiosk ctl`` and a CTI client, which pass no names, always see it). With
``names`` given, a SIP address parameter (``ADDRESS_PARAMS``) is shown as its
party too (``2001`` for ``sip:2001@pbx``). A template therefore never says
"call" or "row" itself in English: ``{row} is not ringing here``. In Russian,
where a name does not decline, ``rows`` gives the bare number and the name in
quotes, and the template declines the noun: ``вызова {row}`` -> ``вызова 12``,
``вызова «Алиса (2001)»`` or ``вызова 2001``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
import re
from typing import Any, Mapping

from kiosk.party import party

LANGUAGES = ("en", "ru")
SECTIONS = ("actions", "codes", "states", "rows")
_HERE = Path(__file__).resolve().parent

#: Parameters that are one row id (the desk's Row.id, which is the agent's call id).
ROW_PARAMS = frozenset({"row", "consult", "origin", "ended"})
#: Parameters that list row ids: "1, 2" (or a list of ids).
ROW_LIST_PARAMS = frozenset({"rows"})
#: Parameters that list consultations, held row -> consult row: "1->2, 3->4" (or a list of pairs).
PAIR_PARAMS = frozenset({"pairs"})
#: Parameters that are a SIP address (a row's remote, a transfer target): shown as the party with `names`.
ADDRESS_PARAMS = frozenset({"remote", "to"})

_PAIRS = re.compile(r"\s*(\d+)\s*->\s*(\d+)\s*")


@functools.cache
def catalogue(language: str) -> dict[str, dict[str, str]]:
    """The catalogue of one language (``en`` for an unknown one)."""
    if language not in LANGUAGES:
        language = "en"
    with open(_HERE / f"{language}.json", encoding="utf-8") as f:
        data = json.load(f)
    return {section: dict(data.get(section, {})) for section in SECTIONS}


def action_name(action: str | None, language: str = "en") -> str:
    """An action id as words (the id itself when no catalogue knows it)."""
    if not action:
        return ""
    return catalogue(language)["actions"].get(action) or catalogue("en")["actions"].get(action) or action


def state_name(state: str, language: str = "en") -> str:
    return catalogue(language)["states"].get(state, state)


class _Params(dict):  # type: ignore[type-arg]
    """format_map's mapping: a missing parameter shows as {name} instead of raising."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _row_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _rows_words(language: str) -> dict[str, str]:
    words = catalogue(language)["rows"]
    return words if {"id", "party", "number"} <= set(words) else catalogue("en")["rows"]


def _party_words(text: str, language: str) -> str:
    """A party's text in a sentence: a name in the language's `party` form, a bare number in its `number`
    form (ru quotes «Алиса (2001)», which does not decline, but not 2001, which reads as it is)."""
    words = _rows_words(language)
    form = "party" if any(ch.isalpha() for ch in text) else "number"
    return words[form].format(party=text)


def row_name(row: Any, language: str = "en", names: Mapping[int, str] | None = None) -> str:
    """A call row as a sentence names it: its party's text when `names` has it, else its number
    (en ``Alice (2001)`` or ``call 12``; ru ``«Алиса (2001)»`` or ``12``, after the template's
    own ``вызов``)."""
    rid = _row_id(row)
    text = names.get(rid) if names is not None and rid is not None else None
    if text:
        return _party_words(str(text), language)
    return _rows_words(language)["id"].format(id=row)


def _row_list(value: Any, language: str, names: Mapping[int, str] | None) -> Any:
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if names is None or not all(p.isdigit() for p in parts):
            return value
        value = parts
    if isinstance(value, (list, tuple)):
        if names is None:
            return ", ".join(str(v) for v in value)
        return ", ".join(row_name(v, language, names) for v in value)
    return value


def _pair_list(value: Any, language: str, names: Mapping[int, str] | None) -> Any:
    if isinstance(value, str):
        if names is None:
            return value
        matched = [_PAIRS.fullmatch(p) for p in value.split(",")]
        if not all(matched):
            return value
        value = [(m.group(1), m.group(2)) for m in matched if m]
    if isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        if names is None:
            return ", ".join(f"{h}->{c}" for h, c in value)
        return ", ".join(f"{row_name(h, language, names)} – {row_name(c, language, names)}" for h, c in value)
    return value


def _address(value: Any, language: str) -> Any:
    if not isinstance(value, str) or not value.strip():
        return value
    shown = party(value).text
    return _party_words(shown, language) if shown else value


def message(code: str, params: Mapping[str, Any] | None = None, language: str = "en",
            action: str | None = None, names: Mapping[int, str] | None = None) -> str:
    """The words for a code in a language (English when that language lacks it).

    `names`: row id -> the party's text as the reader's table shows it; calls in it are named by
    it, others by their number (see the module's docstring). None (``kiosk ctl``, the log, a CTI
    client): every call by its number, every address as it is."""
    params = dict(params or {})
    template = catalogue(language)["codes"].get(code) or catalogue("en")["codes"].get(code)
    if template is None:
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        return f"{code} ({shown})" if shown else code
    values = _Params()
    for key, value in params.items():
        if isinstance(value, Mapping) and "code" in value:
            value = message(str(value["code"]), value.get("params"), language, value.get("action", action), names)
        elif key == "state" and isinstance(value, str):
            value = state_name(value, language)
        elif key in ROW_PARAMS and value is not None:
            value = row_name(value, language, names)
        elif key in ROW_LIST_PARAMS:
            value = _row_list(value, language, names)
        elif key in PAIR_PARAMS:
            value = _pair_list(value, language, names)
        elif key in ADDRESS_PARAMS and names is not None:
            value = _address(value, language)
        values[key] = value
    values.setdefault("action", action_name(action, language))
    try:
        return template.format_map(values)
    except (ValueError, TypeError, IndexError, AttributeError):  # a parameter of another type than expected
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        return f"{code} ({shown})" if shown else code
