"""The message catalogues (kiosk/i18n/*.json): every code the unit can say, and every action, has its
words in every language, with the same placeholders; every code the source says is catalogued; and a
message names a call the way its reader's table does (the remote party), or by its number without one."""

from __future__ import annotations

import ast
import json
import re
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
    assert set(other) == set(en) == {"actions", "codes", "states", "rows"}
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
    assert i18n.action_name("transfer_consult", "ru") == "Перевод с консультацией"
    assert i18n.state_name("on hold", "ru") == "на удержании"


# --- calls named by their party, or by their number ------------------------------------------------------

ALICE, BOB = 12, 13
NAMES = {ALICE: "Alice (2001)", BOB: "Bob (2002)"}


@pytest.mark.parametrize("language", i18n.LANGUAGES)
def test_the_row_words_of_every_language(language: str) -> None:
    rows = raw(language)["rows"]
    assert set(rows) == {"id", "party", "number"}
    assert placeholders(rows["id"]) == {("id", None, "")}
    assert placeholders(rows["party"]) == placeholders(rows["number"]) == {("party", None, "")}


def test_a_call_is_named_by_its_party_with_names_and_by_its_number_without() -> None:
    m = i18n.message
    params = {"row": ALICE, "state": "talking"}
    assert m("not_ringing", params) == "call 12 is not ringing here (it is talking)"  # kiosk ctl, the log
    assert m("not_ringing", params, names=NAMES) == "Alice (2001) is not ringing here (it is talking)"
    assert m("not_ringing", params, names={}) == "call 12 is not ringing here (it is talking)"  # not in the table
    assert m("not_ringing", params, "ru") == "вызов 12 не звонит на этом аппарате (сейчас: разговор)"
    assert m("not_ringing", params, "ru", names=NAMES) == \
        "вызов «Alice (2001)» не звонит на этом аппарате (сейчас: разговор)"  # a name does not decline: quoted
    assert m("hold_needs_talk", {"row": ALICE, "state": "ringing"}, "ru", names={ALICE: "Алиса (2001)"}) == \
        "вызов «Алиса (2001)»: звонит; удержать можно только разговор"
    # Two calls in one sentence, each by its own name; a declined noun before each in Russian.
    failed = {"row": ALICE, "consult": BOB, "status": "486 Busy Here"}
    assert m("transfer_failed_consult", failed, names=NAMES) == (
        "transfer of Alice (2001) to Bob (2002) failed: 486 Busy Here; both calls stay with you: "
        "confirm again, connect Alice (2001) to go back to the caller, or hang up Bob (2002)")
    assert m("transfer_failed_consult", failed, "ru", names={ALICE: "Алиса (2001)"}) == (
        "перевод вызова «Алиса (2001)» на вызов 13 не удался: 486 Busy Here; оба вызова остаются у вас: "
        "подтвердите перевод ещё раз, подключите вызов «Алиса (2001)», чтобы вернуться к разговору, "
        "или завершите вызов 13")
    assert m("note_held_for_consultation", {"consult": BOB}) == "held for consultation with call 13"
    assert m("note_held_for_consultation", {"consult": BOB}, names=NAMES) == "held for consultation with Bob (2002)"
    assert m("note_held_for_consultation", {"consult": BOB}, "ru", names=NAMES) == \
        "консультация с вызовом «Bob (2002)»"
    moved = {"row": ALICE, "ended": BOB}
    assert m("selection_moved", moved) == "call 13 has ended; call 12 (on hold) is selected now"
    assert m("selection_moved", moved, names=NAMES) == \
        "Bob (2002) has ended; Alice (2001) (on hold) is selected now"
    assert m("selection_moved", moved, "ru", names={BOB: "Боб (2002)"}) == \
        "вызов «Боб (2002)» завершён; теперь выбран удерживаемый вызов 12"
    # A number that came as text (JSON from an older client) is a row id too; what is not an id is shown as it is.
    assert m("already_held", {"row": "12"}, names=NAMES) == "Alice (2001) is already on hold"
    assert m("already_held", {"row": "x"}, names=NAMES) == "call x is already on hold"
    assert i18n.row_name(ALICE, "en", NAMES) == "Alice (2001)" and i18n.row_name(7, "ru", NAMES) == "7"
    # A party that is only a number needs no quotes in Russian: a number reads the same in every case.
    assert m("already_held", {"row": 5}, "ru", names={5: "2001"}) == "вызов 2001 уже на удержании"
    assert m("transfer_under_way", {"row": 5}, "ru", names={5: "+7 495 123-45-67"}) == \
        "перевод вызова +7 495 123-45-67 уже идёт"


def test_lists_of_calls_are_named_one_by_one() -> None:
    m = i18n.message
    assert m("no_row", {"row": 7, "rows": "12, 3"}) == "call 7 is not on this unit (calls: 12, 3)"
    assert m("no_row", {"row": 7, "rows": "12, 3"}, names=NAMES) == \
        "call 7 is not on this unit (calls: Alice (2001), call 3)"
    assert m("no_row", {"row": 7, "rows": [12, 3]}, "ru", names=NAMES) == \
        "вызова 7 нет на аппарате (есть вызовы: «Alice (2001)», 3)"
    assert m("no_row", {"row": 7, "rows": [12, 3]}) == "call 7 is not on this unit (calls: 12, 3)"
    pairs = {"row": 3, "pairs": f"{ALICE}->{BOB}"}  # held -> consult, as the desk lists them
    assert m("not_in_consultation", pairs).startswith("call 3 is not in a consultation (consultations: 12->13)")
    assert m("not_in_consultation", pairs, names=NAMES).startswith(
        "call 3 is not in a consultation (consultations: Alice (2001) – Bob (2002))")
    assert m("not_in_consultation", {"row": 3, "pairs": [[ALICE, BOB], [1, 2]]}, "ru", names=NAMES).startswith(
        "вызов 3 не участвует в консультации (консультации: «Alice (2001)» – «Bob (2002)», 1 – 2)")
    assert m("not_in_consultation", {"row": 3, "pairs": [[ALICE, BOB]]}).startswith(
        "call 3 is not in a consultation (consultations: 12->13)")
    assert m("not_in_consultation", {"row": 3, "pairs": "something else"}, names=NAMES).startswith(
        "call 3 is not in a consultation (consultations: something else)")  # shown as it came


def test_a_message_inside_a_message_names_its_calls_too() -> None:
    inner = {"code": "call_ended", "params": {"row": ALICE}}
    assert i18n.message("refused", {"reason": inner}) == "call 12 has ended"
    assert i18n.message("refused", {"reason": inner}, names=NAMES) == "Alice (2001) has ended"
    assert i18n.message("refused", {"reason": inner}, "ru", names=NAMES) == "вызов «Alice (2001)» уже завершён"


def test_with_names_an_address_is_shown_as_its_party() -> None:
    failed = {"row": ALICE, "remote": '"Bob" <sip:2002@pbx.test>', "reason": "486 Busy Here"}
    assert i18n.message("call_failed", failed) == 'call to "Bob" <sip:2002@pbx.test> failed: 486 Busy Here'
    assert i18n.message("call_failed", failed, names={}) == "call to Bob (2002) failed: 486 Busy Here"
    assert i18n.message("call_failed", failed, "ru", names={}) == "вызов на «Bob (2002)» не состоялся: 486 Busy Here"
    to = {"to": "sip:3003@pbx.test"}
    assert i18n.message("note_transferring", to) == "transferring to sip:3003@pbx.test"
    assert i18n.message("note_transferring", to, names=NAMES) == "transferring to 3003"
    assert i18n.message("note_transferring", to, "ru", names=NAMES) == "перевод на 3003"  # a number: no quotes


#: A row id in a template: English never says "call" or "row" itself (the reference does: "call 12" or
#: "Alice (2001)"); Russian always has a declined "вызов" before it (the reference is "12" or "«Алиса (2001)»").
ROW_FIELD = "|".join(sorted(i18n.ROW_PARAMS))


def test_templates_leave_naming_a_call_to_the_reference() -> None:
    for code, template in raw("en")["codes"].items():
        assert not re.search(rf"\b(call|row|calls|rows)\s+\{{({ROW_FIELD})\}}", template, re.I), (code, template)
        assert "{row}'s" not in template, (code, template)
    for code, template in raw("ru")["codes"].items():
        for found in re.finditer(rf"(\S*)\s*\{{({ROW_FIELD})\}}", template):
            assert re.fullmatch(r"вызов(а|у|ом|е)?", found.group(1)), (code, template, found.group(0))


def test_every_template_fills_in_with_names() -> None:
    for language in i18n.LANGUAGES:
        for code, template in raw(language)["codes"].items():
            fields = {name for name, _c, _s in placeholders(template) if name != "action"}
            params = {name: (ALICE if name in i18n.ROW_PARAMS else f"<{name}>") for name in fields}
            text = i18n.message(code, params, language, "hold", names=NAMES)
            assert "{" not in text and "}" not in text and "call 12" not in text, (language, code, text)
            if fields & i18n.ROW_PARAMS:
                assert "Alice (2001)" in text, (language, code, text)


def row_id_keywords(path: Path) -> set[str]:
    """The keyword arguments of the code-bearing calls (refusal, _alert, _set_note, AgentError, ...)
    whose value looks like a row id: `x.id`, `exc.call`, `transfer.consult`, `row_id`, `rid`,
    `consult`, `held`, `origin`, `explicit[0]`."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _name(node.func) in CODE_ARGS:
            for kw in node.keywords:
                value = kw.value
                if isinstance(value, ast.Subscript):
                    value = value.value
                if (isinstance(value, ast.Attribute) and value.attr in {"id", "call", "consult"}) or \
                        (isinstance(value, ast.Name) and value.id in {"row_id", "rid", "consult", "held", "origin",
                                                                       "explicit"}):
                    found.add(str(kw.arg))
    return found


def test_every_row_id_the_source_passes_is_a_row_parameter() -> None:
    found: set[str] = set()
    for path in sorted(KIOSK.rglob("*.py")):
        if path.relative_to(ROOT).parts[1] != "lab":
            found |= row_id_keywords(path)
    assert {"row", "consult"} <= found, found  # the scan finds what it is meant to
    assert found <= i18n.ROW_PARAMS, f"row ids passed as parameters kiosk.i18n does not name: {found - i18n.ROW_PARAMS}"


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
