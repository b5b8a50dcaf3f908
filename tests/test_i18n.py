"""The message catalogues (kiosk/i18n/*.json): every code the unit can say, and every action, has its
words in every language, with the same placeholders; and every code the source says is catalogued."""

from __future__ import annotations

import ast
import json
import string
from pathlib import Path
from typing import Iterator

import pytest

from kiosk import i18n
from kiosk.commands import ACTIONS

ROOT = Path(__file__).resolve().parent.parent
KIOSK = ROOT / "kiosk"
OTHER_LANGUAGES = [lang for lang in i18n.LANGUAGES if lang != "en"]


def raw(language: str) -> dict[str, dict[str, str]]:
    with open(KIOSK / "i18n" / f"{language}.json", encoding="utf-8") as f:
        return json.load(f)


def placeholders(template: str) -> set[tuple[str, str | None, str]]:
    """The fields of a str.format template: (name, conversion, format spec)."""
    return {(name, conversion, spec or "") for _text, name, spec, conversion in string.Formatter().parse(template)
            if name is not None}


# --- the catalogues against each other -----------------------------------------------------------


@pytest.mark.parametrize("language", OTHER_LANGUAGES)
def test_every_code_and_action_has_words_in_every_language(language: str) -> None:
    en, other = raw("en"), raw(language)
    assert set(other) == {"actions", "codes", "states"}
    for section in ("actions", "codes"):
        missing = sorted(set(en[section]) - set(other[section]))
        assert not missing, f"{language}.json lacks {section}: {missing}"
        unknown = sorted(set(other[section]) - set(en[section]))
        assert not unknown, f"{language}.json has {section} en.json does not (a typo?): {unknown}"
        empty = sorted(k for k, v in other[section].items() if not v.strip())
        assert not empty, f"{language}.json has empty {section}: {empty}"


@pytest.mark.parametrize("language", OTHER_LANGUAGES)
def test_each_template_uses_exactly_the_english_placeholders(language: str) -> None:
    en, other = raw("en")["codes"], raw(language)["codes"]
    wrong = {code: (sorted(map(str, placeholders(en[code]))), sorted(map(str, placeholders(text))))
             for code, text in other.items() if code in en and placeholders(text) != placeholders(en[code])}
    assert not wrong, f"{language}.json: placeholders differ from en.json (en, {language}): {wrong}"


def test_every_action_of_the_command_table_is_named() -> None:
    for language in i18n.LANGUAGES:
        missing = sorted(set(ACTIONS) - set(raw(language)["actions"]))
        assert not missing, f"{language}.json names no {missing}"


def desk_states() -> set[str]:
    """Every state word the desk gives a row (Row.state), read from kiosk/desk.py."""
    tree = ast.parse((KIOSK / "desk.py").read_text())
    found: set[str] = set()

    def strings(node: ast.AST) -> Iterator[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            for elt in node.elts:
                yield from strings(elt)

    def is_state(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "state"

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(is_state(t) for t in node.targets):
            value = node.value  # `row.state = "in conference" if ... else row.state` too
            for part in (value.body, value.orelse) if isinstance(value, ast.IfExp) else (value,):
                found.update(strings(part))
        elif isinstance(node, ast.Compare) and is_state(node.left):
            for comparator in node.comparators:
                found.update(strings(comparator))
        elif isinstance(node, ast.FunctionDef) and node.name == "_talk_state":
            for sub in ast.walk(node):
                if isinstance(sub, ast.Return) and sub.value is not None:
                    found.update(strings(sub.value))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Row" and len(node.args) >= 5:
            found.update(strings(node.args[4]))
    return found


@pytest.mark.parametrize("language", OTHER_LANGUAGES)
def test_every_call_state_is_translated(language: str) -> None:
    states = desk_states()
    assert {"dialling", "ringing", "talking", "on hold", "held by remote", "in conference", "consulting"} <= states
    missing = sorted(states - set(raw(language)["states"]))
    assert not missing, f"{language}.json has no word for the call states {missing}"


def test_every_template_fills_in() -> None:
    for language in i18n.LANGUAGES:
        for code, template in raw(language)["codes"].items():
            params = {name: f"<{name}>" for name, _c, _s in placeholders(template) if name != "action"}
            text = i18n.message(code, params, language, "hold")
            assert "{" not in text and "}" not in text, (language, code, text)
            for value in params.values():
                assert value in text, (language, code, text)


def test_russian_words_by_code() -> None:
    assert i18n.message("no_selection", {}, "ru") == "не выбран вызов"
    assert i18n.message("several_selected", {"count": 2}, "ru", "hangup") == \
        "выбрано вызовов: 2; для действия «Завершить» выберите один"
    assert i18n.message("hold_needs_talk", {"row": 3, "state": "ringing"}, "ru") == \
        "вызов 3: звонит; удержать можно только разговор"  # a `state` is a state word, translated
    assert i18n.message("pickup_failed", {"number": "1005", "reason": {"code": "no_answer_in",
                                                                       "params": {"seconds": 8}}}, "ru") == \
        "не удалось перехватить вызов на 1005: нет ответа за 8 с"  # a message inside a message, translated
    assert i18n.message("unknown_route", {"value": "x", "routes": "city"}, "ru") == "нет маршрута 'x'; маршруты: city"
    assert i18n.action_name("transfer_consult", "ru") == "Перевод: С консультацией"
    assert i18n.state_name("on hold", "ru") == "на удержании"


# --- the source against the catalogue ----------------------------------------------------------------

#: Calls whose argument at this position is a catalogue code.
CODE_ARGS = {"refusal": 0, "_alert": 0, "_set_note": 1, "AgentError": 1, "RecordingRefused": 1, "CallGone": None,
             "Refusal": 0}


def _name(func: ast.AST) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _const(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def codes_in(path: Path) -> Iterator[tuple[str, int]]:
    """(code, line) for every code literal in a source file: the first argument of `refusal(...)`,
    `_alert(...)`, `Refusal(...)`, the second of `_set_note(...)`, `AgentError(...)`,
    `RecordingRefused(...)`; any `code="..."` keyword; the value of a `"code": "..."` dict entry;
    the first item of a `note=("...", {...})` keyword (a row note given to `_dial_on`)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            position = CODE_ARGS.get(_name(node.func))
            if position is not None and len(node.args) > position:
                code = _const(node.args[position])
                if code is not None:
                    yield code, node.lineno
            for kw in node.keywords:
                if kw.arg == "code" and _const(kw.value) is not None:
                    yield _const(kw.value), node.lineno  # type: ignore[misc]
                if kw.arg == "note" and isinstance(kw.value, ast.Tuple) and kw.value.elts:
                    code = _const(kw.value.elts[0])
                    if code is not None:
                        yield code, node.lineno
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if key is not None and _const(key) == "code" and _const(value) is not None:
                    yield _const(value), node.lineno  # type: ignore[misc]
        elif isinstance(node, ast.FunctionDef):  # `def __init__(self, message, code: str = "agent_error")`
            args = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + list(node.args.defaults) + \
                list(node.args.kw_defaults)
            for arg, default in zip(args, defaults):
                if arg.arg == "code" and _const(default) is not None:
                    yield _const(default), node.lineno  # type: ignore[misc]


def source_codes() -> dict[str, list[str]]:
    """code -> where the source uses it (file:line), over kiosk/**/*.py (the lab harness excluded;
    "" is "no code", as `_notice(..., code="")` has it)."""
    found: dict[str, list[str]] = {}
    for path in sorted(KIOSK.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[1] == "lab":
            continue
        for code, line in codes_in(path):
            if code:
                found.setdefault(code, []).append(f"{rel}:{line}")
    return found


def test_the_scan_finds_the_codes_it_is_meant_to() -> None:
    found = source_codes()
    # One of each form, so that a scan that silently finds nothing fails here first.
    for code in ("no_selection",  # refusal("...")
                 "recording_stopped",  # self._alert("...")
                 "note_transferring",  # self._set_note(row, "...")
                 "not_available",  # code="..."
                 "recording_no_space",  # RecordingRefused(..., "...")
                 "no_answer_in",  # {"code": "..."}
                 "note_pickup_of",  # note=("...", {...})
                 "agent_error"):  # AgentError's default
        assert code in found, code


def test_every_code_the_source_uses_is_in_the_english_catalogue() -> None:
    catalogue = raw("en")["codes"]
    missing = {code: where for code, where in source_codes().items() if code not in catalogue}
    assert not missing, f"codes used in the source but not in kiosk/i18n/en.json: {missing}"
