"""Message catalogues: every refusal and alert code, and every action, in each language.

The desk, the agent and the control socket say what went wrong as a stable
code with parameters (``{"code": "number_required", "params": {}}``, the
translation-key idea of Home Assistant); this package turns a code into words.
One JSON catalogue per language sits beside this file, ``en.json`` and
``ru.json``, each with three sections:

- ``actions``: action id (kiosk.commands) -> its name in a sentence;
- ``codes``: code -> a ``str.format`` template over the code's parameters;
  ``{action}`` is the refused action's name in the same language;
- ``states``: a call row's state word -> its translation.

The English message the socket, the log and ``kiosk ctl`` show is the English
template filled in, so the two can never drift. A parameter that is itself a
message (``{"code": ..., "params": ...}``) is translated in turn. A code no
catalogue has is shown as the code and its parameters, never dropped.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Mapping

LANGUAGES = ("en", "ru")
_HERE = Path(__file__).resolve().parent


@functools.cache
def catalogue(language: str) -> dict[str, dict[str, str]]:
    """The catalogue of one language (``en`` for an unknown one)."""
    if language not in LANGUAGES:
        language = "en"
    with open(_HERE / f"{language}.json", encoding="utf-8") as f:
        data = json.load(f)
    return {section: dict(data.get(section, {})) for section in ("actions", "codes", "states")}


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


def message(code: str, params: Mapping[str, Any] | None = None, language: str = "en",
            action: str | None = None) -> str:
    """The words for a code in a language (English when that language lacks it)."""
    params = dict(params or {})
    template = catalogue(language)["codes"].get(code) or catalogue("en")["codes"].get(code)
    if template is None:
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        return f"{code} ({shown})" if shown else code
    values = _Params()
    for key, value in params.items():
        if isinstance(value, Mapping) and "code" in value:
            value = message(str(value["code"]), value.get("params"), language, value.get("action", action))
        elif key == "state" and isinstance(value, str):
            value = state_name(value, language)
        values[key] = value
    values.setdefault("action", action_name(action, language))
    try:
        return template.format_map(values)
    except (ValueError, TypeError, IndexError, AttributeError):  # a parameter of another type than expected
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        return f"{code} ({shown})" if shown else code
