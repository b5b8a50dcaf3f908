"""kiosk.directory in-process: the file (CSV, vCard), the search rules, name_for, reloading,
and the LDAP side's guarantees (deadline, errors as problems) without a server process."""

from __future__ import annotations

import dataclasses

import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk import directory as dmod
from kiosk.profile import Directory as ProfileDirectory
from kiosk.directory import (
    Contact,
    Directory,
    DirectoryProblem,
    dialable,
    digits,
    ldap_filter,
    read_file,
)


def Settings(**fields: Any) -> ProfileDirectory:  # noqa: N802 - reads as the settings it makes
    """The profile's [directory] as a test needs it (the lab's base, a short LDAP timeout)."""
    return dataclasses.replace(ProfileDirectory(ldap_base="ou=people,dc=example,dc=org", ldap_timeout_seconds=1), **fields)


class Clock:
    """A monotonic clock the test moves by hand (the once-a-second file check)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def names(contacts: list[Contact]) -> list[str]:
    return [c.name for c in contacts]


def directory(path: Path, **kw: Any) -> Directory:
    d = Directory(Settings(file=path), path.parent, **kw)
    d.load()
    return d


PEOPLE_CSV = (
    "name,phone,mobile,extension\n"
    "Anna Petrova,+7 (495) 555-01-01,+7 916 000-01-01,2001\n"
    "Ivan Sidorov,+7 495 555-01-02,,2002\n"
    "Анна Кузнецова,,+7 903 000-02-03,\n"
    "Пётр Ёлкин,8 812 555 02 02,,3002\n"
    "john smith,+1 202 555 0143,,\n"
)


@pytest.fixture
def people(tmp_path: Path) -> Directory:
    return directory(write(tmp_path / "contacts.csv", PEOPLE_CSV))


# --- number rules ----------------------------------------------------------------------


def test_digits_and_dialable_drop_the_punctuation() -> None:
    assert digits("+7 (495) 555-01.01") == "74955550101"
    assert dialable("+7 (495) 555-01-01") == "+74955550101"
    assert dialable("tel:+1-202-555-0143") == "+12025550143"
    assert dialable("*8 2001") == "*82001"


# --- CSV -------------------------------------------------------------------------------


def test_csv_english_header_with_several_number_columns(people: Directory) -> None:
    assert people.problems == []
    anna = people.search("anna petrova")[0][0]
    assert anna == Contact("Anna Petrova", ("+7 (495) 555-01-01", "+7 916 000-01-01", "2001"), "file")
    assert anna.to_json() == {"name": "Anna Petrova", "number": "+7 (495) 555-01-01",
                              "numbers": ["+7 (495) 555-01-01", "+7 916 000-01-01", "2001"], "source": "file"}
    assert people.file_contacts == 5


def test_csv_russian_excel_file_with_bom_semicolons_and_name_parts(tmp_path: Path) -> None:
    text = ("\ufeffФамилия;Имя;Отчество;Телефон (рабочий);Мобильный;Внутренний\r\n"
            "Петрова;Анна;Сергеевна;+7 495 555-01-01;+7 916 000-01-01;2001\r\n"
            "Ёлкин;Пётр;;;;3002\r\n")
    d = directory(write(tmp_path / "rus.csv", text))
    assert d.problems == []
    found, errors = d.search("")
    assert errors == []
    assert found == [
        Contact("Ёлкин Пётр", ("3002",), "file"),
        Contact("Петрова Анна Сергеевна", ("+7 495 555-01-01", "+7 916 000-01-01", "2001"), "file"),
    ]


@pytest.mark.parametrize("header, row, name", [
    ("ФИО\tтелефон", "Иванова Мария\t+7 812 555 02 01", "Иванова Мария"),
    ("Имя,Телефон", "Мария Иванова,+7 812 555 02 01", "Мария Иванова"),
    ("First Name,Last Name,Mobile Phone", "Maria,Ivanova,+7 812 555 02 01", "Maria Ivanova"),
    ("Full Name|Work Phone", "Maria Ivanova|+7 812 555 02 01", "Maria Ivanova"),
    ("display_name,phone_number", "Maria Ivanova,+7 812 555 02 01", "Maria Ivanova"),
])
def test_csv_header_names_and_delimiters(tmp_path: Path, header: str, row: str, name: str) -> None:
    data = read_file(write(tmp_path / "c.csv", f"{header}\n{row}\n"))
    assert data.problems == () and not data.fatal
    assert data.contacts == (Contact(name, ("+7 812 555 02 01",), "file"),)


def test_csv_cells_with_two_numbers_and_an_extension(tmp_path: Path) -> None:
    data = read_file(write(tmp_path / "c.csv", 'name,phone\n"Desk A","+7 495 555-01-01, +7 495 555-01-09"\n'
                                                "Desk B,+7 495 555-01-01 доб. 123\n"))
    assert data.contacts == (
        Contact("Desk A", ("+7 495 555-01-01", "+7 495 555-01-09"), "file"),
        Contact("Desk B", ("+7 495 555-01-01",), "file"),
    )


def test_csv_bad_rows_are_skipped_and_counted_with_their_lines(tmp_path: Path) -> None:
    text = ("name,phone,mobile\n"
            "Anna Petrova,+7 495 555-01-01,\n"
            "No Number,,\n"            # line 3: no number
            ",+7 495 555-01-02,\n"     # line 4: no name
            "Bad Number,n/a,\n"        # line 5: not a number
            ",,\n"                     # blank separator: not counted
            "\n"
            "Ivan Sidorov,call me,+7 495 555-01-03\n")  # a bad cell beside a good number: kept
    d = directory(write(tmp_path / "c.csv", text))
    assert names(d.search("")[0]) == ["Anna Petrova", "Ivan Sidorov"]
    (problem,) = d.problems
    assert problem.code == "file_bad_rows"
    assert problem.params["count"] == 3 and problem.params["lines"] == [3, 4, 5]
    assert "3 rows skipped" in problem.message and str(tmp_path / "c.csv") in problem.message
    # Skipped rows are not an error of the search: the file still answers.
    assert d.search("anna") == ([d.search("anna")[0][0]], [])


def test_csv_without_a_header_says_which_header_would_be_right(tmp_path: Path) -> None:
    path = write(tmp_path / "contacts.csv", "Anna Petrova,+7 495 555-01-01\nIvan Sidorov,+7 495 555-01-02\n")
    d = directory(path)
    found, errors = d.search("anna")
    assert found == []
    (p,) = errors
    assert p.source == "file" and p.code == "file_no_header"
    assert str(path) in p.message
    assert "Anna Petrova,+7 495 555-01-01" in p.message  # what it found
    assert "name,phone" in p.message and "имя;телефон" in p.message  # what would be right
    assert p.params["found"] == "Anna Petrova,+7 495 555-01-01"


@pytest.mark.parametrize("header, missing", [("Company,Title", "name+number"), ("name,company", "number"),
                                             ("company,phone", "name")])
def test_csv_header_missing_a_column(tmp_path: Path, header: str, missing: str) -> None:
    data = read_file(write(tmp_path / "c.csv", f"{header}\nx,y\n"))
    assert data.fatal
    (p,) = data.problems
    assert p.code == "file_no_header" and p.params["missing"] == missing
    assert repr(header) in p.message


def test_csv_not_utf8_empty_binary_and_missing(tmp_path: Path) -> None:
    cp = read_file(write(tmp_path / "cp.csv", "name,phone\nАнна,+7 495\n", "cp1251"))
    assert cp.fatal and cp.problems[0].code == "file_encoding"
    assert cp.problems[0].params["line"] == 2 and "UTF-8" in cp.problems[0].message
    assert read_file(write(tmp_path / "e.csv", "\n  \n")).problems[0].code == "file_empty"
    (tmp_path / "b.csv").write_bytes(b"name,phone\n\0\0\0")
    assert read_file(tmp_path / "b.csv").problems[0].code == "file_binary"
    gone = read_file(tmp_path / "gone.csv")
    assert gone.fatal and gone.problems[0].code == "file_missing"
    assert str(tmp_path / "gone.csv") in gone.problems[0].message
    assert read_file(tmp_path).problems[0].code == "file_unreadable"


def test_a_missing_file_is_an_error_of_every_search(tmp_path: Path) -> None:
    d = directory(tmp_path / "contacts.csv")
    found, errors = d.search("anna")
    assert found == [] and [e.code for e in errors] == ["file_missing"]
    assert errors[0].to_json()["source"] == "file"


def test_relative_file_is_relative_to_the_base_dir(tmp_path: Path) -> None:
    write(tmp_path / "contacts.csv", PEOPLE_CSV)
    d = Directory(Settings(file=Path("contacts.csv")), tmp_path)
    assert d.path == tmp_path / "contacts.csv"
    assert names(d.search("ivan")[0]) == ["Ivan Sidorov"]  # read on first use, without load()


def test_no_file_configured_gives_nothing_and_no_error() -> None:
    d = Directory(Settings(), None)
    assert d.load() == [] and d.search("anna") == ([], []) and d.name_for("2001") is None


# --- vCard -----------------------------------------------------------------------------

VCARDS = """\
BEGIN:VCARD
VERSION:3.0
FN:Anna Petrova
N:Petrova;Anna;;;
TEL;TYPE=WORK,VOICE:+7 495 555-01-01
TEL;TYPE=CELL,PREF:+7 916 000-01-01
END:VCARD
BEGIN:VCARD
VERSION:4.0
FN:Пётр Ёлкин
TEL;VALUE=uri;TYPE="voice,work":tel:+7-812-555-0202;ext=12
END:VCARD
BEGIN:VCARD
VERSION:3.0
N:Иванова;Мария;;;
TEL:+7 812 555 02 01
END:VCARD
BEGIN:VCARD
VERSION:2.1
N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:=D0=92=D0=BE=D0=BB=D0=BA=D0=BE=D0=B2;=D0=9E=D0=BB=D0=B5=D0=B3;;;
FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:=D0=9E=D0=BB=D0=B5=D0=B3 =D0=92=D0=BE=D0=BB=D0=BA=D0=BE=D0=B2
TEL;CELL:+73435550301
END:VCARD
"""


def test_vcard_3_4_and_2_1(tmp_path: Path) -> None:
    d = directory(write(tmp_path / "people.vcf", VCARDS))
    assert d.problems == []
    found, _ = d.search("")
    assert found == [
        Contact("Anna Petrova", ("+7 916 000-01-01", "+7 495 555-01-01"), "file"),  # the PREF number first
        Contact("Мария Иванова", ("+7 812 555 02 01",), "file"),  # no FN: from N
        Contact("Олег Волков", ("+73435550301",), "file"),  # 2.1, quoted-printable UTF-8
        Contact("Пётр Ёлкин", ("+7-812-555-0202",), "file"),  # tel: URI, ;ext= dropped
    ]


def test_vcard_bad_cards_are_skipped_and_counted(tmp_path: Path) -> None:
    text = ("\ufeffBEGIN:VCARD\r\nVERSION:3.0\r\nFN:Good One\r\nTEL:2001\r\nEND:VCARD\r\n"
            "BEGIN:VCARD\r\nVERSION:3.0\r\nFN no colon here\r\nEND:VCARD\r\n"        # line 6: broken
            "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:No Phone\r\nEMAIL:x@example.org\r\nEND:VCARD\r\n")  # line 10
    d = directory(write(tmp_path / "p.vcf", text))
    assert names(d.search("")[0]) == ["Good One"]
    (p,) = d.problems
    assert p.code == "file_bad_rows" and p.params["count"] == 2 and p.params["lines"] == [6, 10]
    assert "2 cards skipped" in p.message


def test_vcard_file_without_cards(tmp_path: Path) -> None:
    data = read_file(write(tmp_path / "p.vcf", "name,phone\nAnna,2001\n"))
    assert data.fatal and data.problems[0].code == "file_no_vcards"
    assert "BEGIN:VCARD" in data.problems[0].message


def test_a_csv_named_file_holding_vcards_is_read_as_vcards(tmp_path: Path) -> None:
    data = read_file(write(tmp_path / "export.csv", VCARDS))
    assert len(data.contacts) == 4


# --- search rules ----------------------------------------------------------------------


@pytest.mark.parametrize("query, expected", [
    ("ann pet", ["Anna Petrova"]),
    ("pet ann", ["Anna Petrova"]),
    ("ANNA", ["Anna Petrova"]),
    ("анн", ["Анна Кузнецова"]),
    ("АННА КУЗ", ["Анна Кузнецова"]),
    ("петр", ["Пётр Ёлкин"]),    # е finds ё
    ("ёлк", ["Пётр Ёлкин"]),
    ("елкин пётр", ["Пётр Ёлкин"]),
    ("nna", []),                 # prefix of a word, not any substring
    ("anna x", []),              # every word must match
    ("JOHN", ["john smith"]),
])
def test_search_by_name(people: Directory, query: str, expected: list[str]) -> None:
    found, errors = people.search(query)
    assert names(found) == expected and errors == []


@pytest.mark.parametrize("query, expected", [
    ("495", ["Anna Petrova", "Ivan Sidorov"]),
    ("+7 (495) 555-01-0", ["Anna Petrova", "Ivan Sidorov"]),
    ("555 01 02", ["Ivan Sidorov"]),
    ("2001", ["Anna Petrova"]),
    ("8125550202", ["Пётр Ёлкин"]),
    ("99999", []),
])
def test_search_by_number(people: Directory, query: str, expected: list[str]) -> None:
    assert names(people.search(query)[0]) == expected


def test_results_are_sorted_by_name_and_limited(people: Directory) -> None:
    everyone = names(people.search("")[0])
    assert everyone == ["Anna Petrova", "Ivan Sidorov", "john smith", "Анна Кузнецова", "Пётр Ёлкин"]
    assert names(people.search("", limit=2)[0]) == ["Anna Petrova", "Ivan Sidorov"]
    assert names(people.search("+", limit=3)[0]) == everyone[:3]  # punctuation only: like empty
    assert people.search("anna", limit=0) == ([], [])


# --- name_for --------------------------------------------------------------------------


def test_name_for_matches_equal_digits_only(people: Directory) -> None:
    assert people.name_for("+74955550101") == "Anna Petrova"
    assert people.name_for("7 495 555 01 01") == "Anna Petrova"
    assert people.name_for("2001") == "Anna Petrova"
    assert people.name_for("88125550202") == "Пётр Ёлкин"
    assert people.name_for("4955550101") is None  # a part is not the number
    assert people.name_for("74955550101999") is None
    assert people.name_for("") is None and people.name_for("anonymous") is None


def test_name_for_gives_no_name_for_a_number_two_names_share(tmp_path: Path) -> None:
    d = directory(write(tmp_path / "c.csv", "name,phone\nReception,+7 495 555-00-00\nAnna,+7 495 555-00-00\n"
                                            "Anna,2001\nAnna,2001\n"))
    assert d.name_for("74955550000") is None  # strict: never the wrong name
    assert d.name_for("2001") == "Anna"  # the same name twice is no conflict


# --- reloading -------------------------------------------------------------------------


def test_file_is_reread_when_it_changes_at_most_once_a_second(tmp_path: Path) -> None:
    clock = Clock()
    path = write(tmp_path / "c.csv", "name,phone\nAnna,2001\n")
    d = directory(path, clock=clock)
    assert d.name_for("2001") == "Anna"
    write(path, "name,phone\nOlga,2001\n")  # the same size: the mtime tells
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    clock.now += 0.5
    assert d.search("olga")[0] == []  # not looked at yet
    clock.now += 0.6
    assert names(d.search("olga")[0]) == ["Olga"]
    # Replaced by rename, as provisioning does: another inode.
    write(tmp_path / "new.csv", "name,phone\nPetr,2001\nIvan,2002\n")
    os.replace(tmp_path / "new.csv", path)
    clock.now += 1.0
    assert names(d.search("")[0]) == ["Ivan", "Petr"]


def test_a_broken_new_file_keeps_the_old_contacts_a_deleted_one_drops_them(tmp_path: Path) -> None:
    clock = Clock()
    path = write(tmp_path / "c.csv", "name,phone\nAnna,2001\n")
    d = directory(path, clock=clock)
    write(path, "Anna;2001\nOlga;2002\n")  # the header lost
    clock.now += 2
    found, errors = d.search("")
    assert names(found) == ["Anna"]
    assert [e.code for e in errors] == ["file_no_header"] and errors[0].params["kept"] == 1
    assert "still used" in errors[0].message
    write(path, "name,phone\nAnna,2001\nOlga,2002\n")  # fixed
    clock.now += 2
    assert d.search("") == ([Contact("Anna", ("2001",), "file"), Contact("Olga", ("2002",), "file")], [])
    path.unlink()
    clock.now += 2
    found, errors = d.search("")
    assert found == [] and [e.code for e in errors] == ["file_missing"]
    assert d.name_for("2001") is None
    write(path, "name,phone\nAnna,2001\n")  # back again
    clock.now += 2
    assert names(d.search("")[0]) == ["Anna"]


def test_name_for_reads_a_changed_file_off_its_own_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    path = write(tmp_path / "c.csv", "name,phone\nAnna,2001\n")
    d = directory(path, clock=clock)
    readers: list[threading.Thread] = []
    real = dmod.read_file

    def spy(p: Path) -> Any:
        readers.append(threading.current_thread())
        return real(p)

    monkeypatch.setattr(dmod, "read_file", spy)
    write(path, "name,phone\nOlga Ivanova,2001\n")
    clock.now += 2
    assert d.name_for("2001") in ("Anna", "Olga Ivanova")  # the old file answers until the new one is read
    d.wait_reloaded()
    assert d.name_for("2001") == "Olga Ivanova"
    assert len(readers) == 1 and readers[0] is not threading.current_thread()


# --- the LDAP filter -------------------------------------------------------------------


def test_ldap_filter_escapes_the_query_per_rfc4515() -> None:
    assert ldap_filter("(cn=*{q}*)", "a*(b)\\") == "(cn=*a\\2a\\28b\\29\\5c*)"
    assert ldap_filter("(cn=*{q}*)", "anna") == "(cn=*anna*)"
    assert ldap_filter("(cn=*{q}*)", "ann pet") == "(&(cn=*ann*)(cn=*pet*))"
    assert ldap_filter("(cn=*{q}*)", "+7 (495) 555-01") == "(cn=*749555501*)"  # a number: its digits
    assert ldap_filter("(cn=*{q}*)", "Петр") == "(|(cn=*Петр*)(cn=*Пётр*))"
    assert ldap_filter("(|(cn={q}*)(sn={q}*))", "x") == "(|(cn=x*)(sn=x*))"


# --- LDAP without a server: errors and the deadline -----------------------------------


def ldap_directory(**settings: Any) -> Directory:
    base: dict[str, Any] = {"ldap": "ldap://127.0.0.1:9", "ldap_timeout_seconds": 1}
    base.update(settings)
    return Directory(Settings(**base), None, retry_after=0)


def test_nothing_listening_is_a_problem_not_an_exception() -> None:
    with socket.socket() as s:  # a port nothing listens on: bound, not listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        d = ldap_directory(ldap=f"ldap://127.0.0.1:{port}")
        found, errors = d.search("anna")
    assert found == []
    (p,) = errors
    assert p.source == "ldap" and p.code == "ldap_unreachable"
    assert f"127.0.0.1:{port}" in p.message and "connection refused" in p.message


def test_a_server_that_never_answers_gives_a_timeout_problem() -> None:
    # A listening socket nobody accepts on: the connect succeeds, no answer ever comes.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        # (a fraction of a second: the profile's whole seconds are not needed to show the rule)
        d = ldap_directory(ldap=f"ldap://127.0.0.1:{s.getsockname()[1]}", ldap_timeout_seconds=0.2)
        found, errors = d.search("anna")
    assert found == [] and [e.code for e in errors] == ["ldap_timeout"]
    assert "0.2 s" in errors[0].message


class Stuck:
    """Stands in for the blocking LDAP search: blocks until released, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, query: str, limit: int, timeout: float) -> Any:
        self.calls += 1
        self.started.set()
        self.release.wait(30)
        return [], None


def test_search_returns_at_the_deadline_while_the_network_call_still_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    d = Directory(Settings(ldap="ldap://127.0.0.1:9", ldap_timeout_seconds=0.2), None, retry_after=60)
    stuck = Stuck()
    monkeypatch.setattr(d, "_ldap_search_blocking", stuck)
    try:
        found, errors = d.search("anna")
        assert found == [] and [e.code for e in errors] == ["ldap_timeout"]
        assert not stuck.release.is_set() and stuck.calls == 1  # returned while the call still blocks
        # Typing on while the server is down costs no more waits: the same problem at once.
        assert d.search("anna p")[1] == errors and stuck.calls == 1
    finally:
        stuck.release.set()


def test_searches_waiting_on_a_hung_server_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    d = Directory(Settings(ldap="ldap://127.0.0.1:9", ldap_timeout_seconds=0.2), None, retry_after=0,
                  max_ldap_in_flight=1)
    stuck = Stuck()
    monkeypatch.setattr(d, "_ldap_search_blocking", stuck)
    try:
        assert d.search("a")[1][0].code == "ldap_timeout"
        busy = d.search("b")[1][0]
        assert busy.code == "ldap_busy" and stuck.calls == 1
    finally:
        stuck.release.set()


def test_bind_dn_without_password_and_bad_url_are_named() -> None:
    p = ldap_directory(ldap_bind_dn="cn=kiosk,dc=example,dc=org").search("anna")[1][0]
    assert p.code == "ldap_no_password" and "cn=kiosk,dc=example,dc=org" in p.message
    assert "ldap_password_file" in p.message
    p = ldap_directory(ldap="http://ldap.example.org").search("anna")[1][0]
    assert p.code == "ldap_bad_url" and "ldap://host:389" in p.message


def test_exceptions_in_the_ldap_search_become_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    d = ldap_directory()

    def boom(*_: Any) -> Any:
        raise RuntimeError("something odd")

    monkeypatch.setattr(d, "_ldap_search_blocking", boom)
    (p,) = d.search("anna")[1]
    assert p.code == "ldap_error" and "something odd" in p.message


def entries(*people: tuple[str, str, tuple[str, ...]]) -> Any:
    return lambda *_: ([(dn, Contact(name, nums, "ldap")) for dn, name, nums in people], None)


def test_file_first_then_ldap_without_duplicates_and_the_limit(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "c.csv", "name,phone\nAnna Petrova,+7 495 555-01-01\n")
    d = Directory(Settings(file=tmp_path / "c.csv", ldap="ldap://127.0.0.1:9"), tmp_path)
    monkeypatch.setattr(d, "_ldap_search_blocking", entries(
        ("uid=z", "Anna Zorina", ("2009",)),
        ("uid=a", "Anna Petrova", ("+74955550101",)),  # the file's contact again
        ("uid=b", "Anna Belova", ("2008",)),
    ))
    found, errors = d.search("anna")
    assert errors == []
    assert [(c.name, c.source) for c in found] == [("Anna Petrova", "file"), ("Anna Belova", "ldap"),
                                                   ("Anna Zorina", "ldap")]
    assert names(d.search("anna", limit=2)[0]) == ["Anna Petrova", "Anna Belova"]
    assert names(d.search("", limit=5)[0]) == ["Anna Petrova"]  # empty: the file only


def test_ldap_problem_comes_with_the_file_results(tmp_path: Path) -> None:
    write(tmp_path / "c.csv", "name,phone\nAnna Petrova,2001\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        d = Directory(Settings(file=tmp_path / "c.csv", ldap=f"ldap://127.0.0.1:{s.getsockname()[1]}"), tmp_path)
        found, errors = d.search("anna")
    assert names(found) == ["Anna Petrova"] and [e.code for e in errors] == ["ldap_unreachable"]


def test_name_for_uses_numbers_earlier_ldap_searches_returned(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "c.csv", "name,phone\nReception,2000\n")
    d = Directory(Settings(file=tmp_path / "c.csv", ldap="ldap://127.0.0.1:9"), tmp_path)
    d.load()
    assert d.name_for("2001") is None
    monkeypatch.setattr(d, "_ldap_search_blocking", entries(
        ("uid=a", "Anna Petrova", ("+7 495 555-01-01", "2001")),
        ("uid=r", "Front Desk", ("2000",)),
        ("uid=x", "Shared One", ("2100",)), ("uid=y", "Shared Two", ("2100",)),
    ))
    d.search("a")
    assert d.name_for("2001") == "Anna Petrova" and d.name_for("+74955550101") == "Anna Petrova"
    assert d.name_for("2000") == "Reception"  # the file wins
    assert d.name_for("2100") is None  # two entries, two names: none
    monkeypatch.setattr(d, "_ldap_search_blocking", entries(("uid=a", "Anna Sidorova", ("2001",))))
    d.search("anna")
    assert d.name_for("2001") == "Anna Sidorova"  # the same entry renamed


def test_name_for_never_calls_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = Directory(Settings(ldap="ldap://127.0.0.1:9"), None)

    def forbidden(*_: Any) -> Any:
        raise AssertionError("name_for searched LDAP")

    monkeypatch.setattr(d, "_ldap_search_blocking", forbidden)
    assert d.name_for("2001") is None


def test_problem_json_has_source_code_message() -> None:
    p = DirectoryProblem("ldap", "ldap_timeout", {"timeout": 3}, "no answer")
    assert p.to_json() == {"source": "ldap", "code": "ldap_timeout", "message": "no answer",
                           "params": {"timeout": 3}}
    assert str(p) == "no answer"



@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600), header=st.sampled_from(["", "name,phone\n", "ФИО;Телефон\n",
                                                             "BEGIN:VCARD\nVERSION:3.0\n"]))
def test_no_file_makes_the_reader_raise(tmp_path: Path, data: bytes, header: str) -> None:
    for suffix in (".csv", ".vcf"):
        path = tmp_path / f"fuzz{suffix}"
        path.write_bytes(header.encode() + data)
        result = read_file(path)
        assert all(c.name and c.numbers and all(digits(n) for n in c.numbers) for c in result.contacts)
        assert not (result.fatal and result.contacts) and (not result.fatal or result.problems)
