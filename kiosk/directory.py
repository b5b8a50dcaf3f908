"""The unit's directory: names and numbers from a provisioned file and the company's LDAP.

Two sources, both from the profile's `[directory]`:

- a file the provisioning drops beside the profile: a CSV with a header line
  (columns found by their names, English or Russian), or a vCard file (.vcf,
  versions 2.1/3.0/4.0, read with `vobject`). It is re-read when it changes:
  its mtime/size/inode are looked at, at most once a second, whenever a search
  or a name look-up runs -- no watcher thread, and nothing to restart when the
  provisioning replaces it.
- an LDAP server (`ldap3`, pure Python), searched with the profile's filter.
  A search waits at most `ldap_timeout_seconds` for it, whatever the network
  does, and every failure comes back as a DirectoryProblem that says what is
  wrong and what would be right -- never as an exception.

`name_for(number)` is what the desk calls for every call on its event loop: it
looks only at memory (the file's numbers, and the numbers of contacts that
earlier LDAP searches returned), so it never waits on the network. It is
strict: digits must be equal, and a number that two different names share
gives no name at all -- a wrong name on an operator's screen is worse than none.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import ssl
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "Contact",
    "Directory",
    "DirectoryProblem",
    "DirectorySettings",
    "FileData",
    "dialable",
    "digits",
    "fold",
    "ldap_filter",
    "read_file",
]

log = logging.getLogger(__name__)

#: A file larger than this is refused (a directory of 100 000 people is ~10 MB).
MAX_FILE_BYTES = 64 * 1024 * 1024
#: How many line numbers of skipped rows a problem names.
_SHOWN_LINES = 10
#: Numbers longer than this (in digits) are not phone numbers.
_MAX_DIGITS = 32


class DirectorySettings(Protocol):
    """What Directory reads from the profile (kiosk.profile.Directory has these fields)."""

    file: Path | None
    ldap: str | None
    ldap_base: str
    ldap_bind_dn: str | None
    ldap_password: str
    ldap_timeout_seconds: int
    ldap_filter: str
    ldap_name_attr: str
    ldap_number_attrs: tuple[str, ...]


@dataclass(frozen=True)
class Contact:
    """One person (or desk) and the numbers to reach them, as the source wrote them."""

    name: str
    numbers: tuple[str, ...]
    source: str  # "file" | "ldap"

    @property
    def number(self) -> str:
        """The first (preferred) number, '' when there is none."""
        return self.numbers[0] if self.numbers else ""

    def to_json(self) -> dict[str, Any]:
        """The contact as the desk's `directory` command shows it."""
        return {"name": self.name, "number": self.number, "numbers": list(self.numbers), "source": self.source}


@dataclass(frozen=True)
class DirectoryProblem:
    """Why a source gave nothing (or less than it has): a code and parameters for the
    screen's words, and `message` in English for the journal and the console."""

    source: str  # "file" | "ldap"
    code: str
    params: Mapping[str, Any] = field(default_factory=dict)
    message: str = ""

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, Any]:
        """The problem as the desk's `directory` command reports it."""
        return {"source": self.source, "code": self.code, "message": self.message, "params": dict(self.params)}


# --- text rules -----------------------------------------------------------------------


def digits(number: str) -> str:
    """The digits of a number: what two numbers are compared by (spaces, dashes, brackets,
    dots and a leading + do not count)."""
    return "".join(c for c in number if "0" <= c <= "9")


def dialable(number: str) -> str:
    """A number as the desk can dial it: the directory's punctuation removed, a leading +,
    digits, * and # kept ('+7 (495) 555-01-01' -> '+74955550101')."""
    text = number.strip()
    if text.lower().startswith("tel:"):
        text = text[4:].split(";", 1)[0]
    kept = "".join(c for c in text if c.isdigit() and c.isascii() or c in "*#")
    return ("+" + kept) if text.startswith("+") else kept


def fold(text: str) -> str:
    """Text as names are compared: case-folded, ё as е (Russian writes either)."""
    return text.casefold().replace("ё", "е")


_WORD = re.compile(r"\w+")


def _words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(fold(text)))


def _sort_key(name: str) -> tuple[str, str]:
    return (fold(name), name)


# A number as directories write it: an optional +, digits with spaces, dashes,
# dots, brackets or slashes between them, optionally an extension after it
# ("доб. 123", "ext 12", "x12"), which is dropped: a SIP call reaches the main
# number and the operator asks for the extension there.
_NUMBER = re.compile(
    r"(?P<main>\+?[\s(]*[0-9][0-9\s().\-/]*)"
    r"(?:[\s,]*(?:ext|доб|вн|внутр|x)\.?\s*(?P<ext>[0-9]+))?",
    re.IGNORECASE,
)
_FEATURE = re.compile(r"[0-9*#]+")  # *8, #21 -- feature codes on a PBX


def _clean_number(value: str) -> str | None:
    """The number in `value` as it should be shown, or None when it is not a phone number."""
    text = " ".join(value.split())
    if text.lower().startswith("tel:"):  # vCard 4 URIs: tel:+1-555-0100;ext=12
        text = text[4:].split(";", 1)[0]
    if not text:
        return None
    m = _NUMBER.fullmatch(text)
    if m:
        main = m.group("main").strip().rstrip("-/.").strip()
        if main.count("(") != main.count(")"):
            return None
    elif _FEATURE.fullmatch(text):
        main = text
    else:
        return None
    n = len(digits(main))
    if n == 0 or n > _MAX_DIGITS:
        return None
    return main


def _split_numbers(value: str) -> list[str]:
    """The numbers in one cell ('+7 495 555-01-01, +7 916 000-01-01' holds two); [] for an empty cell.
    Raises ValueError when the cell holds something that is not a phone number."""
    parts = [p for p in re.split(r"[,;]\s*(?=\+|\d|\()", value.strip()) if p.strip()]
    found = []
    for part in parts:
        n = _clean_number(part)
        if n is None:
            raise ValueError(part)
        found.append(n)
    return found


def _clean_name(value: str) -> str:
    """A name with control characters dropped and runs of spaces made one."""
    return " ".join("".join(c if c.isprintable() else " " for c in value).split())[:200]


# --- the file -------------------------------------------------------------------------


def _norm_header(cell: str) -> str:
    text = fold(cell.strip().lstrip("\ufeff")).replace("_", " ").replace("-", " ")
    return " ".join(text.split())


#: Header names of a column holding the whole name.
NAME_HEADERS = ("name", "full name", "fullname", "display name", "contact", "фио", "ф.и.о.", "ф. и. о.",
                "полное имя", "контакт", "сотрудник", "абонент")
#: Header names of the parts of a name, joined in the file's column order when
#: there is no whole-name column ("Фамилия;Имя;Отчество", "First Name,Last Name").
FAMILY_HEADERS = ("last name", "surname", "family name", "lastname", "фамилия")
GIVEN_HEADERS = ("first name", "given name", "firstname", "имя")
MIDDLE_HEADERS = ("middle name", "middlename", "отчество")
#: Words that make a column a number column ("Work Phone", "Телефон (рабочий)", "Моб.").
NUMBER_WORDS = ("number", "phone", "telephone", "tel", "mobile", "cell", "cellphone", "extension", "ext",
                "номер", "телефон", "тел", "мобильный", "моб", "сотовый", "внутренний", "внутр",
                "добавочный", "доб", "рабочий", "домашний")

_HEADER_HINT = ("the first line must name the columns, e.g. 'name,phone' or 'имя;телефон' "
                "(a name column: name, full name, имя, фио, or first name + last name / фамилия + имя; "
                "number columns: number, phone, mobile, extension, телефон, мобильный, внутренний)")


@dataclass(frozen=True)
class _Columns:
    name: int | None  # the whole-name column
    parts: tuple[int, ...]  # name parts in file order (when name is None)
    numbers: tuple[int, ...]

    @property
    def usable(self) -> bool:
        return (self.name is not None or bool(self.parts)) and bool(self.numbers)


def _columns(header: Sequence[str]) -> _Columns:
    """Which columns of a header line hold the name and the numbers."""
    norm = [_norm_header(c) for c in header]
    name = next((i for i, h in enumerate(norm) if h in NAME_HEADERS), None)
    has_family = any(h in FAMILY_HEADERS for h in norm)
    if name is None and not has_family:
        # "имя" alone is the whole name; beside "фамилия" it is the given name.
        name = next((i for i, h in enumerate(norm) if h in ("имя", "first name", "given name")), None)
    parts: tuple[int, ...] = ()
    if name is None:
        part_names = FAMILY_HEADERS + GIVEN_HEADERS + MIDDLE_HEADERS
        parts = tuple(i for i, h in enumerate(norm) if h in part_names)
    numbers = tuple(
        i for i, h in enumerate(norm)
        if i != name and i not in parts and any(w in NUMBER_WORDS for w in re.findall(r"\w+", h))
    )
    return _Columns(name, parts, numbers)


@dataclass(frozen=True)
class FileData:
    """What one reading of the directory file gave: the contacts, the rows skipped, and problems."""

    contacts: tuple[Contact, ...]
    skipped: int = 0
    problems: tuple[DirectoryProblem, ...] = ()
    fatal: bool = False  # nothing usable: missing, unreadable, no header, not UTF-8 ...


def _problem(code: str, message: str, **params: Any) -> DirectoryProblem:
    return DirectoryProblem("file", code, params, message)


def _skipped_problem(path: Path, skipped: int, lines: list[int], kind: str, why: str) -> DirectoryProblem:
    shown = ", ".join(str(n) for n in lines[:_SHOWN_LINES]) + (" ..." if len(lines) > _SHOWN_LINES else "")
    return _problem(
        "file_bad_rows",
        f"{path}: {skipped} {kind}{'s' if skipped != 1 else ''} skipped (line{'s' if len(lines) != 1 else ''} "
        f"{shown}): {why}",
        file=str(path), count=skipped, lines=lines[:_SHOWN_LINES],
    )


def _score(cols: _Columns) -> tuple[bool, int]:
    """How well a header reading fits: usable first, then the most columns recognised."""
    return (cols.usable, len(cols.numbers) + (1 if cols.name is not None or cols.parts else 0))


def _parse_csv(text: str, path: Path) -> FileData:
    first_line = next((line for line in text.splitlines() if line.strip()), None)
    if first_line is None:
        return FileData((), 0, (_problem("file_empty", f"{path} is empty; {_HEADER_HINT}, "
                                         f"then one contact a line", file=str(path)),), True)
    # The delimiter is the one under which the header line makes sense: Excel
    # writes ';' where the decimal separator is ',' (Russian Windows), ',' elsewhere.
    best: tuple[str, _Columns] | None = None
    for delim in (",", ";", "\t", "|"):
        try:
            header = next(csv.reader([first_line], delimiter=delim), [])
        except csv.Error:
            continue
        cols = _columns(header)
        if best is None or _score(cols) > _score(best[1]):
            best = (delim, cols)
    if best is None or not best[1].usable:
        cols = best[1] if best is not None else _Columns(None, (), ())
        found = first_line.strip()[:120]
        no_name = cols.name is None and not cols.parts
        missing = "name+number" if no_name and not cols.numbers else "name" if no_name else "number"
        missing_text = {"name+number": "name column and no number column", "name": "name column",
                        "number": "number column"}[missing]
        looks_like_data = bool(digits(first_line)) and not cols.numbers
        what = "looks like a contact, not a header" if looks_like_data else f"has no {missing_text}"
        return FileData((), 0, (_problem(
            "file_no_header",
            f"{path}: the first line {found!r} {what}; {_HEADER_HINT}",
            file=str(path), found=found, missing=missing,
        ),), True)
    delim, cols = best

    contacts: list[Contact] = []
    bad_lines: list[int] = []
    width = max((cols.name or 0, *cols.parts, *cols.numbers)) + 1
    reader = csv.reader(io.StringIO(text), delimiter=delim)
    seen_header = False
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:  # a field too long, a stray quote at the end: this row only
            bad_lines.append(reader.line_num)
            continue
        if not any(cell.strip() for cell in row):
            continue  # blank lines and ';;;' separate groups in hand-made files
        if not seen_header:
            seen_header = True  # the first row that is not blank
            continue
        if len(row) < width:
            row = row + [""] * (width - len(row))  # short rows lack trailing cells
        if cols.name is not None:
            name = _clean_name(row[cols.name])
        else:
            name = _clean_name(" ".join(row[i] for i in cols.parts))
        numbers: list[str] = []
        for i in cols.numbers:
            try:
                numbers.extend(n for n in _split_numbers(row[i]) if n not in numbers)
            except ValueError:
                pass  # a note in a number column; the row still counts if another holds a number
        if not name or not numbers:
            bad_lines.append(reader.line_num)
            continue
        contacts.append(Contact(name, tuple(numbers), "file"))
    problems = []
    if bad_lines:
        problems.append(_skipped_problem(path, len(bad_lines), bad_lines, "row",
                                         "each row needs a name and at least one phone number"))
    return FileData(tuple(contacts), len(bad_lines), tuple(problems))


_VCARD_BEGIN = re.compile(r"^BEGIN:VCARD\s*$", re.IGNORECASE)
_VCARD_END = re.compile(r"^END:VCARD\s*$", re.IGNORECASE)


def _vcard_blocks(text: str) -> list[tuple[int, str]]:
    """Each BEGIN:VCARD..END:VCARD block with its first line number; a block is
    parsed on its own so that one broken card costs only that card."""
    blocks: list[tuple[int, str]] = []
    current: list[str] | None = None
    start = 0
    for no, line in enumerate(text.splitlines(), 1):
        if _VCARD_BEGIN.match(line):
            current, start = [line], no
        elif current is not None:
            current.append(line)
            if _VCARD_END.match(line):
                blocks.append((start, "\r\n".join(current) + "\r\n"))
                current = None
    if current is not None:
        blocks.append((start, "\r\n".join(current) + "\r\n"))  # no END: vobject says what is wrong
    return blocks


def _vcard_name(card: Any) -> str:
    fn = card.contents.get("fn")
    if fn:
        name = _clean_name(str(fn[0].value))
        if name:
            return name
    n = card.contents.get("n")
    if n:
        v = n[0].value
        parts = [getattr(v, a, "") for a in ("prefix", "given", "additional", "family", "suffix")]
        flat = [" ".join(p) if isinstance(p, (list, tuple)) else str(p) for p in parts]
        name = _clean_name(" ".join(flat))
        if name:
            return name
    org = card.contents.get("org")
    if org:
        v = org[0].value
        return _clean_name(" ".join(v) if isinstance(v, (list, tuple)) else str(v))
    return ""


def _tel_preferred(tel: Any) -> bool:
    params = {k.upper(): [str(x).lower() for x in v] for k, v in getattr(tel, "params", {}).items()}
    types = ",".join(params.get("TYPE", [])).split(",")
    return "pref" in types or "PREF" in params or "PREF" in getattr(tel, "singletonparams", [])


def _parse_vcard(text: str, path: Path) -> FileData:
    import vobject  # a dependency of the unit; imported here so CSV-only units never load it

    blocks = _vcard_blocks(text)
    if not blocks:
        return FileData((), 0, (_problem(
            "file_no_vcards",
            f"{path}: no BEGIN:VCARD ... END:VCARD found; a vCard file holds one such block per contact "
            f"with FN (the name) and TEL (the numbers)",
            file=str(path)),), True)
    contacts: list[Contact] = []
    bad_lines: list[int] = []
    for start, block in blocks:
        try:
            card = vobject.readOne(block, allowQP=True)
        except Exception:  # vobject raises ParseError, but also ValueError/IndexError on odd input
            bad_lines.append(start)
            continue
        name = _vcard_name(card)
        tels = sorted(card.contents.get("tel", []), key=lambda t: not _tel_preferred(t))
        numbers: list[str] = []
        for tel in tels:
            try:
                numbers.extend(n for n in _split_numbers(str(tel.value)) if n not in numbers)
            except ValueError:
                pass
        if not name or not numbers:
            bad_lines.append(start)
            continue
        contacts.append(Contact(name, tuple(numbers), "file"))
    problems = []
    if bad_lines:
        problems.append(_skipped_problem(path, len(bad_lines), bad_lines, "card",
                                         "each card needs FN (or N) and at least one TEL with a phone number"))
    return FileData(tuple(contacts), len(bad_lines), tuple(problems))


def read_file(path: Path) -> FileData:
    """Read a directory file (CSV with a header line, or vCard); never raises for a bad file."""
    try:
        st = path.stat()
        if not path.is_file():
            return FileData((), 0, (_problem("file_unreadable", f"{path} is not a regular file; give the CSV or "
                                             f".vcf file itself", file=str(path)),), True)
        if st.st_size > MAX_FILE_BYTES:
            return FileData((), 0, (_problem("file_too_big", f"{path} is {st.st_size // (1024 * 1024)} MiB; a "
                                             f"directory file may be at most {MAX_FILE_BYTES // (1024 * 1024)} MiB",
                                             file=str(path), size=st.st_size),), True)
        data = path.read_bytes()
    except FileNotFoundError:
        return FileData((), 0, (_problem("file_missing", f"{path} does not exist; the profile's [directory] file "
                                         f"must name a CSV or .vcf file the provisioning puts there",
                                         file=str(path)),), True)
    except OSError as exc:
        return FileData((), 0, (_problem("file_unreadable", f"{path} cannot be read: {exc.strerror or exc}; "
                                         f"the unit's user needs read access to it", file=str(path),
                                         error=str(exc.strerror or exc)),), True)
    if b"\0" in data[:4096]:
        return FileData((), 0, (_problem("file_binary", f"{path} is not a text file (it holds NUL bytes); "
                                         f"save the directory as CSV (UTF-8) or vCard", file=str(path)),), True)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return FileData((), 0, (_problem(
            "file_encoding",
            f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it as UTF-8 "
            f"(Excel: 'CSV UTF-8'; or convert: iconv -f cp1251 -t utf-8)",
            file=str(path), line=line),), True)
    head = text.lstrip()[:11].upper()
    if path.suffix.lower() in (".vcf", ".vcard") or head.startswith("BEGIN:VCARD"):
        return _parse_vcard(text, path)
    return _parse_csv(text, path)


# --- the index of the file ------------------------------------------------------------

_AMBIGUOUS = object()


@dataclass(frozen=True)
class _Entry:
    contact: Contact
    words: tuple[str, ...]
    digits: tuple[str, ...]


class _Index:
    """The file's contacts sorted by name, with what search and name_for compare prepared once."""

    def __init__(self, contacts: Iterable[Contact]) -> None:
        ordered = sorted(contacts, key=lambda c: _sort_key(c.name))
        self.entries = tuple(_Entry(c, _words(c.name), tuple(digits(n) for n in c.numbers)) for c in ordered)
        by_number: dict[str, Any] = {}
        for e in self.entries:
            for d in e.digits:
                known = by_number.get(d)
                if known is None:
                    by_number[d] = e.contact.name
                elif known is not _AMBIGUOUS and known != e.contact.name:
                    by_number[d] = _AMBIGUOUS
        self.by_number = by_number

    def __len__(self) -> int:
        return len(self.entries)


_EMPTY_INDEX = _Index(())


def _match(entries: Iterable[_Entry], query: str, limit: int) -> list[Contact]:
    """The first `limit` entries (in name order) that `query` finds: by name when it has a letter,
    else by number; every entry for an empty (or punctuation-only) query."""
    found: list[Contact] = []
    if any(c.isalpha() for c in query):
        qwords = _words(query)
        for e in entries:
            if all(any(w.startswith(q) for w in e.words) for q in qwords):
                found.append(e.contact)
                if len(found) >= limit:
                    break
        return found
    qd = digits(query)
    for e in entries:
        if not qd or any(qd in d for d in e.digits):
            found.append(e.contact)
            if len(found) >= limit:
                break
    return found


# --- LDAP -----------------------------------------------------------------------------


def _import_ldap3() -> Any:
    """ldap3, imported on first use (a unit without LDAP never loads it). ldap3 2.9.1 reads
    pyasn1's tagMap/typeMap, which pyasn1 0.6 deprecated: that warning says nothing to an operator."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ldap3\..*")
        warnings.filterwarnings("ignore", message=r"(tagMap|typeMap) is deprecated", category=DeprecationWarning)
        import ldap3
        import ldap3.core.exceptions
        import ldap3.utils.conv

    return ldap3


def _ldap_problem(code: str, message: str, **params: Any) -> DirectoryProblem:
    return DirectoryProblem("ldap", code, params, message)


def _e_variants(word: str, cap: int = 8) -> list[str]:
    """`word` with each е/ё written either way (a directory may hold 'Пётр' or 'Петр'), at most `cap`."""
    spots = [i for i, c in enumerate(word) if c in "еёЕЁ"]
    if not spots:
        return [word]
    if 2 ** len(spots) > cap:
        return list(dict.fromkeys([word, word.replace("ё", "е").replace("Ё", "Е")]))
    out = []
    for mask in range(2 ** len(spots)):
        chars = list(word)
        for bit, i in enumerate(spots):
            upper = chars[i].isupper()
            c = "ё" if mask >> bit & 1 else "е"
            chars[i] = c.upper() if upper else c
        out.append("".join(chars))
    return list(dict.fromkeys(out))


def ldap_filter(template: str, query: str) -> str:
    """The LDAP filter for `query`: the profile's filter with {q} replaced by the query escaped
    per RFC 4515. A number query is sent as its digits ('+7 (495)' -> '7495': directories
    compare telephone numbers without spaces and dashes, but not without brackets).
    A query of several words asks for an entry that matches every word, and a word with
    е or ё also matches it written the other way."""
    escape_filter_chars = _import_ldap3().utils.conv.escape_filter_chars

    def one(q: str) -> str:
        return template.replace("{q}", escape_filter_chars(q))

    def word(w: str) -> str:
        variants = _e_variants(w)
        if len(variants) == 1:
            return one(variants[0])
        return "(|" + "".join(one(v) for v in variants) + ")"

    if not any(c.isalpha() for c in query):
        return one(digits(query))
    words = query.split()[:8]  # a sentence pasted into the box must not become a huge filter
    if len(words) == 1:
        return word(words[0])
    return "(&" + "".join(word(w) for w in words) + ")"


def _first_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        for v in value:
            t = _first_text(v)
            if t:
                return t
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return _clean_name(str(value)) if value is not None else ""


def _all_texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _all_texts(v)]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return [str(value)]


class _LdapCache:
    """Numbers of contacts that LDAP searches returned -> {DN: name}, the newest numbers kept.
    A number held by entries of different names gives no name (strict)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._map: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, dn: str, contact: Contact) -> None:
        with self._lock:
            for n in contact.numbers:
                d = digits(n)
                if not d:
                    continue
                names = self._map.pop(d, {})
                names[dn] = contact.name
                self._map[d] = names
            while len(self._map) > self.size:
                self._map.popitem(last=False)

    def name(self, d: str) -> str | None:
        with self._lock:
            names = self._map.get(d)
            if not names:
                return None
            distinct = set(names.values())
            return next(iter(distinct)) if len(distinct) == 1 else None

    def __len__(self) -> int:
        return len(self._map)


# --- the directory --------------------------------------------------------------------


class Directory:
    """Search the file and LDAP, and name a caller's number from memory.

    Thread-safe: the desk calls name_for on its loop and search from a worker.
    """

    def __init__(
        self,
        settings: DirectorySettings,
        base_dir: Path | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        check_interval: float = 1.0,
        retry_after: float = 5.0,
        cache_size: int = 10_000,
        max_ldap_in_flight: int = 4,
    ) -> None:
        self.settings = settings
        file = getattr(settings, "file", None)
        if file is not None:
            file = Path(file)
            if not file.is_absolute() and base_dir is not None:
                file = Path(base_dir, file)
        self.path: Path | None = file
        self._clock = clock
        self._check_interval = check_interval
        self._retry_after = retry_after
        self._max_in_flight = max_ldap_in_flight
        if getattr(settings, "ldap", None):
            _import_ldap3()  # here, not in the first search's worker thread (warnings filters are global)
        self._index: _Index = _EMPTY_INDEX
        self._data = FileData(())
        self._signature: tuple[int, ...] | None = None
        self._last_check: float | None = None
        self._reload_lock = threading.Lock()
        self._reloader: threading.Thread | None = None
        self._cache = _LdapCache(cache_size)
        self._ldap_lock = threading.Lock()
        self._in_flight = 0
        self._down: tuple[float, DirectoryProblem] | None = None  # (until, problem) after server down/timeout

    # --- the file -----------------------------------------------------------------------

    def load(self) -> list[DirectoryProblem]:
        """Read the file now (the unit's start, a profile reload); return its problems
        ([] when all is well). A broken new version keeps the contacts read before."""
        with self._reload_lock:
            self._last_check = self._clock()
            return self._load_locked()

    def _stat_signature(self) -> tuple[int, ...] | None:
        assert self.path is not None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)

    def _load_locked(self) -> list[DirectoryProblem]:
        if self.path is None:
            self._data, self._index, self._signature = FileData(()), _EMPTY_INDEX, None
            return []
        signature = self._stat_signature()
        data = read_file(self.path)
        self._signature = signature
        if data.fatal and data.problems[0].code not in ("file_missing",) and len(self._index):
            # A provisioning that drops a broken file must not blank the operator's names.
            kept = len(self._index)
            p = data.problems[0]
            p = DirectoryProblem(p.source, p.code, {**p.params, "kept": kept},
                                 f"{p.message} (the {kept} contacts read before are still used)")
            self._data = FileData(self._data.contacts, self._data.skipped, (p,), True)
        else:
            self._data = data
            self._index = _Index(data.contacts) if not data.fatal else _EMPTY_INDEX
        for p in self._data.problems:
            log.warning("directory: %s", p.message)
        if not data.fatal:
            log.info("directory: %d contacts from %s", len(data.contacts), self.path)
        return list(self._data.problems)

    def _maybe_reload(self, background: bool = False) -> None:
        """Re-read the file when it changed; looks at it at most once per check_interval.
        With `background` (name_for, on the desk's loop) a changed file is read by a
        one-off thread and the old contacts serve until it is done: reading 10 000 rows
        takes a fraction of a second, a Raspberry Pi's loop must not stall for it.
        Another thread reading it meanwhile is not waited for either."""
        if self.path is None:
            return
        now = self._clock()
        if self._last_check is not None and now - self._last_check < self._check_interval:
            return
        if not self._reload_lock.acquire(blocking=False):
            return
        handed_over = False
        try:
            if self._last_check is not None and now - self._last_check < self._check_interval:
                return
            first = self._last_check is None  # used without load(): read it now
            self._last_check = now
            if first or self._stat_signature() != self._signature:
                if not background:
                    self._load_locked()
                    return

                def reload() -> None:
                    try:
                        self._load_locked()
                    except Exception:  # read_file reports problems; this is only a last guard
                        log.exception("directory: reading %s failed", self.path)
                    finally:
                        self._reload_lock.release()

                self._reloader = threading.Thread(target=reload, name="kiosk-directory-reload", daemon=True)
                self._reloader.start()
                handed_over = True  # the thread releases the lock
        finally:
            if not handed_over:
                self._reload_lock.release()

    def wait_reloaded(self, timeout: float = 10.0) -> None:
        """Wait for a background re-read that name_for started (tests, and a clean stop)."""
        t = self._reloader
        if t is not None:
            t.join(timeout)

    @property
    def problems(self) -> list[DirectoryProblem]:
        """The file's problems as last read (skipped rows included)."""
        return list(self._data.problems)

    @property
    def file_contacts(self) -> int:
        """How many contacts the file gave."""
        return len(self._index)

    # --- look-ups -----------------------------------------------------------------------

    def name_for(self, number: str) -> str | None:
        """The name for `number` from the file, else from contacts LDAP searches returned;
        None when unknown or when two names share it. Never touches the network, and a
        changed file is read in the background (the answer meanwhile comes from the old one)."""
        self._maybe_reload(background=True)
        d = digits(number or "")
        if not d:
            return None
        known = self._index.by_number.get(d)
        if known is _AMBIGUOUS:
            return None
        if known is not None:
            return str(known)
        return self._cache.name(d)

    def search(self, query: str, limit: int = 20) -> tuple[list[Contact], list[DirectoryProblem]]:
        """Contacts that `query` finds, the file's first (by name), then LDAP's (by name) not
        already given by the file, at most `limit`; and the problems of the sources that
        could not answer. Waits at most the LDAP timeout; never raises for a source."""
        self._maybe_reload()
        limit = int(limit)
        if limit <= 0:
            return [], []
        query = (query or "").strip()
        problems: list[DirectoryProblem] = [p for p in self._data.problems if self._data.fatal]
        found = _match(self._index.entries, query, limit)
        searchable = any(c.isalpha() for c in query) or bool(digits(query))
        if self.settings.ldap and searchable and len(found) < limit:
            ldap_found, problem = self.search_ldap(query, limit)
            if problem is not None:
                problems.append(problem)
            seen = {(fold(c.name), d) for c in found for d in (digits(n) for n in c.numbers)}
            extra = [c for c in ldap_found
                     if not any((fold(c.name), digits(n)) in seen for n in c.numbers)]
            found.extend(extra[: limit - len(found)])
        return found, problems

    # --- LDAP ---------------------------------------------------------------------------

    def search_ldap(self, query: str, limit: int = 20) -> tuple[list[Contact], DirectoryProblem | None]:
        """Search LDAP alone: the contacts (by name) or the problem. Returns within the timeout."""
        s = self.settings
        url = s.ldap or ""
        timeout = float(s.ldap_timeout_seconds)
        now = time.monotonic()
        with self._ldap_lock:
            if self._down is not None:
                until, problem = self._down
                if now < until:
                    return [], problem
                self._down = None
            if self._in_flight >= self._max_in_flight:
                return [], _ldap_problem(
                    "ldap_busy", f"{url}: {self._in_flight} earlier searches still wait for an answer; "
                                 f"try again in {timeout:g} s", url=url, waiting=self._in_flight)
            self._in_flight += 1
        box: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                box["result"] = self._ldap_search_blocking(query, limit, timeout)
            except BaseException as exc:  # reported to the caller, never raised in a thread
                box["result"] = ([], _ldap_problem("ldap_error", f"{url}: the search failed: "
                                                   f"{type(exc).__name__}: {exc}", url=url, error=str(exc)))
            finally:
                with self._ldap_lock:
                    self._in_flight -= 1
                done.set()

        worker = threading.Thread(target=run, name="kiosk-directory-ldap", daemon=True)
        worker.start()
        if not done.wait(timeout):
            problem = _ldap_problem(
                "ldap_timeout",
                f"{url} did not answer within {timeout:g} s (ldap_timeout_seconds); the server or the "
                f"network to it is down or overloaded",
                url=url, timeout=timeout)
            self._mark_down(problem)
            return [], problem
        entries, problem = box["result"]
        if problem is not None:
            if problem.code in ("ldap_unreachable", "ldap_timeout"):
                self._mark_down(problem)
            return [], problem
        contacts = []
        for dn, contact in entries:
            self._cache.add(dn, contact)
            contacts.append(contact)
        contacts.sort(key=lambda c: _sort_key(c.name))
        return contacts, None

    def _mark_down(self, problem: DirectoryProblem) -> None:
        """Do not try a server that is down again for retry_after seconds: as-you-type search
        would otherwise wait the whole timeout on every key."""
        if self._retry_after > 0:
            with self._ldap_lock:
                self._down = (time.monotonic() + self._retry_after, problem)

    def _ldap_search_blocking(
        self, query: str, limit: int, timeout: float
    ) -> tuple[list[tuple[str, Contact]], DirectoryProblem | None]:
        """One LDAP search on a new connection (runs in a worker thread)."""
        ldap3 = _import_ldap3()
        lx = ldap3.core.exceptions

        s = self.settings
        url = s.ldap or ""
        bind_dn = s.ldap_bind_dn or None
        password = s.ldap_password or ""
        if bind_dn and not password:
            return [], _ldap_problem(
                "ldap_no_password",
                f"{url}: ldap_bind_dn {bind_dn} is set but the password is empty; put it in the file "
                f"ldap_password_file names", url=url, bind_dn=bind_dn)
        try:
            flt = ldap_filter(s.ldap_filter, query)
        except Exception as exc:  # a template the profile check let through
            return [], _ldap_problem("ldap_bad_filter", f"cannot build the LDAP filter from ldap_filter "
                                     f"{s.ldap_filter!r}: {exc}", filter=s.ldap_filter)
        attrs = [s.ldap_name_attr, *s.ldap_number_attrs]
        try:
            m = re.fullmatch(r"(ldaps?)://\[?([^/\]]+?)\]?(?::(\d+))?/?", url.strip(), re.IGNORECASE)
            if not m:
                raise ValueError("not ldap://host[:port] or ldaps://host[:port]")
            use_ssl = m.group(1).lower() == "ldaps"
            host = m.group(2)
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, sni=host) if use_ssl else None
            server = ldap3.Server(url.strip().rstrip("/"), connect_timeout=timeout, get_info=ldap3.NONE, tls=tls)
        except (lx.LDAPException, ValueError) as exc:
            return [], _ldap_problem("ldap_bad_url", f"the ldap URL {url!r} cannot be used: {exc}; write "
                                     f"ldap://host:389 or ldaps://host:636", url=url, error=str(exc))
        conn = ldap3.Connection(
            server, user=bind_dn, password=password if bind_dn else None,
            receive_timeout=max(1, math.ceil(timeout)),  # ldap3 sets SO_RCVTIMEO from whole seconds
            raise_exceptions=False, read_only=True, auto_referrals=False, client_strategy=ldap3.SYNC,
        )
        who = bind_dn or "anonymous"
        try:
            try:
                conn.open()
            except lx.LDAPCertificateError as exc:
                return [], _ldap_problem(
                    "ldap_tls", f"{url}: the server's certificate does not name {host} ({_why(str(exc))[:200]}); "
                                f"the ldap key must use a host name the certificate holds",
                    url=url, error="certificate name mismatch")
            except lx.LDAPSocketOpenError as exc:
                text = str(exc)
                if "ssl" in text.lower() or "certificate" in text.lower() or "tls" in text.lower():
                    return [], _ldap_problem(
                        "ldap_tls", f"{url}: the TLS handshake failed ({_why(text)}); the server's certificate "
                                    f"must name the host and be signed by a CA this unit trusts (add the CA to "
                                    f"/usr/local/share/ca-certificates and run update-ca-certificates)",
                        url=url, error=_why(text))
                return [], _ldap_problem(
                    "ldap_unreachable", f"cannot connect to {url} ({_why(text)}); check that the server runs and "
                                        f"that the ldap key names its host and port", url=url, error=_why(text))
            if not conn.bind():
                r = conn.result or {}
                code = int(r.get("result", -1))
                if code == 49:
                    return [], _ldap_problem(
                        "ldap_bad_credentials", f"{url} refused the bind as {who}: invalid credentials; check "
                                                f"ldap_bind_dn and the password in ldap_password_file",
                        url=url, bind_dn=who)
                if code in (48, 53) and not bind_dn:
                    return [], _ldap_problem(
                        "ldap_anonymous_refused", f"{url} does not let an anonymous client bind "
                                                  f"({r.get('description')}); set ldap_bind_dn and "
                                                  f"ldap_password_file", url=url)
                return [], _result_problem(url, "bind", r)
            ok = conn.search(
                s.ldap_base, flt, search_scope=ldap3.SUBTREE, attributes=attrs,
                size_limit=max(1, limit), time_limit=max(1, int(timeout)), types_only=False,
            )
            r = conn.result or {}
            code = int(r.get("result", -1))
            if not ok and code not in (0, 4):  # 4: sizeLimitExceeded, the first `limit` entries came
                if code in (32, 34):
                    return [], _ldap_problem(
                        "ldap_bad_base", f"{url}: the base {s.ldap_base!r} does not exist (or {who} may not see "
                                         f"it): {r.get('description')}; check ldap_base, e.g. "
                                         f"'ou=people,dc=example,dc=org'", url=url, base=s.ldap_base, bind_dn=who)
                if code == 87:
                    return [], _ldap_problem("ldap_bad_filter", f"{url} refused the filter {flt!r}; check "
                                             f"ldap_filter", url=url, filter=s.ldap_filter)
                if code == 50:
                    return [], _ldap_problem(
                        "ldap_no_access", f"{url}: {who} may not search {s.ldap_base!r}; the directory's "
                                          f"administrator must let this account read it", url=url, bind_dn=who)
                if code == 3:
                    return [], _ldap_problem("ldap_timeout", f"{url}: the search took longer than {timeout:g} s "
                                             f"on the server; a narrower ldap_base or filter helps",
                                             url=url, timeout=timeout)
                return [], _result_problem(url, "search", r)
            out = []
            for e in conn.response or []:
                if e.get("type") != "searchResEntry":
                    continue
                attributes = e.get("attributes") or {}
                name = _first_text(attributes.get(s.ldap_name_attr))
                numbers: list[str] = []
                for a in s.ldap_number_attrs:
                    for v in _all_texts(attributes.get(a)):
                        try:
                            numbers.extend(n for n in _split_numbers(v) if n not in numbers)
                        except ValueError:
                            continue
                if name and numbers:
                    out.append((str(e.get("dn", "")), Contact(name, tuple(numbers), "ldap")))
            return out, None
        except lx.LDAPInvalidFilterError as exc:
            return [], _ldap_problem("ldap_bad_filter", f"the ldap_filter {s.ldap_filter!r} gives the invalid "
                                     f"filter {flt!r} ({exc}); write one like '(|(cn=*{{q}}*)"
                                     f"(telephoneNumber=*{{q}}*))'", filter=s.ldap_filter)
        except (lx.LDAPSocketReceiveError, lx.LDAPResponseTimeoutError, TimeoutError) as exc:
            return [], _ldap_problem("ldap_timeout", f"{url} did not answer within {timeout:g} s "
                                     f"(ldap_timeout_seconds): {exc}", url=url, timeout=timeout)
        except lx.LDAPSessionTerminatedByServerError as exc:
            return [], _ldap_problem("ldap_unreachable", f"{url} closed the connection ({exc}); check that the "
                                     f"server runs", url=url, error=str(exc))
        except (lx.LDAPException, OSError) as exc:
            return [], _ldap_problem("ldap_error", f"{url}: {type(exc).__name__}: {exc}", url=url, error=str(exc))
        finally:
            try:
                conn.unbind()
            except Exception:  # closing a connection that broke: nothing left to do
                pass

    def close(self) -> None:
        """Nothing stays open between searches; kept for the desk's symmetric start/stop."""


def _why(text: str) -> str:
    """The reason inside ldap3's socket-open error text ('connection refused', 'timed out',
    'certificate verify failed: self-signed certificate' ...)."""
    m = re.search(r"\[SSL: [A-Z0-9_]+\] (.+?) \(_ssl", text)
    if m:
        return m.group(1).strip()
    m = re.search(r"socket connection error while opening: \[Errno \d+\] ([^'\]\)]+)", text)
    if m:
        return m.group(1).strip().lower()
    m = re.search(r"\[Errno -?\d+\] ([^'\]\)]+)", text)
    if m:
        return m.group(1).strip().lower()
    return text.split(", ")[0][:200]


def _result_problem(url: str, op: str, r: Mapping[str, Any]) -> DirectoryProblem:
    code = r.get("result")
    desc = r.get("description") or "error"
    msg = r.get("message") or ""
    return _ldap_problem("ldap_refused", f"{url} refused the {op}: {desc} ({code}){': ' + msg if msg else ''}",
                         url=url, op=op, result=code, description=desc)
