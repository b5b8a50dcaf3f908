"""kiosk.directory against a real OpenLDAP slapd (kiosk.lab.slapd) on loopback.

The directory is what a company runs: people under ou=people, readable only by
a bound account. The unit's Directory searches it by name (Latin, Cyrillic, ё)
and by number, names callers from what it found, and turns every failure --
wrong password, wrong base, server gone -- into a problem while the file's
contacts still come back.
"""

from __future__ import annotations

import dataclasses

import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kiosk.profile import Directory as ProfileDirectory
from kiosk.directory import Contact, Directory
from kiosk.lab.proc import wait_until
from kiosk.lab.slapd import Slapd, many_people

_HAVE_SLAPD = all(shutil.which(b) or os.path.exists(f"/usr/sbin/{b}") for b in ("slapd", "slapadd")) \
    and shutil.which("ldapsearch") is not None
if os.environ.get("CI") and not _HAVE_SLAPD:  # in CI a missing lab is an install bug, not a skip
    raise RuntimeError("slapd or ldap-utils missing: scripts/install.sh must install them")

pytestmark = [pytest.mark.lab, pytest.mark.skipif(not _HAVE_SLAPD, reason="slapd/ldap-utils not installed")]


def Settings(**fields: Any) -> ProfileDirectory:  # noqa: N802 - reads as the settings it makes
    """The profile's [directory] with a 2 s LDAP timeout."""
    return dataclasses.replace(ProfileDirectory(ldap_timeout_seconds=2), **fields)


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = Slapd(tmp_path_factory.mktemp("slapd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(slapd: Slapd, tmp_path: Path) -> ProfileDirectory:
    (tmp_path / "contacts.csv").write_text("name,phone\nAnna Local,+7 495 111-11-11\nReception,2000\n")
    return Settings(file=tmp_path / "contacts.csv", ldap=slapd.url, ldap_base=slapd.people_base,
                    ldap_bind_dn=slapd.reader_dn, ldap_password=slapd.reader_password)


def process_state(pid: int) -> str:
    """The state letter of a process (R, S, T for stopped ...) from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def make(settings: ProfileDirectory, **changes: Any) -> Directory:
    d = Directory(replace(settings, **changes), None, retry_after=0)
    d.load()
    return d


def ldap_only(found: list[Contact]) -> list[Contact]:
    return [c for c in found if c.source == "ldap"]


def test_search_by_name_latin(settings: ProfileDirectory) -> None:
    found, errors = make(settings).search("anna pet")
    assert errors == []
    assert ldap_only(found) == [
        Contact("Anna Petrova", ("+7 495 555-01-01", "+7 916 000-01-01", "2001"), "ldap"),
    ]


def test_search_by_name_cyrillic_and_yo(settings: ProfileDirectory) -> None:
    d = make(settings)
    assert [c.name for c in d.search("иванова")[0]] == ["Мария Иванова"]
    assert [c.name for c in d.search("Мария")[0]] == ["Мария Иванова"]
    assert [c.name for c in d.search("анна")[0]] == ["Анна Кузнецова"]
    # The directory writes ё, the operator types е (and the other way round).
    assert [c.name for c in d.search("петр елкин")[0]] == ["Пётр Ёлкин"]
    assert [c.name for c in d.search("Пётр")[0]] == ["Пётр Ёлкин"]


def test_search_file_first_then_ldap(settings: ProfileDirectory) -> None:
    found, errors = make(settings).search("anna")
    assert errors == []
    assert [(c.name, c.source) for c in found] == [("Anna Local", "file"), ("Anna Petrova", "ldap")]


def test_search_by_number(settings: ProfileDirectory) -> None:
    d = make(settings)
    assert [c.name for c in ldap_only(d.search("555-01-02")[0])] == ["Ivan Sidorov"]
    assert [c.name for c in ldap_only(d.search("+7 916 000")[0])] == ["Anna Petrova"]
    assert [c.name for c in ldap_only(d.search("8125550")[0])] == ["Мария Иванова", "Пётр Ёлкин"]
    assert d.search("0000000000") == ([], [])


def test_entries_without_a_number_are_not_returned(settings: ProfileDirectory) -> None:
    assert make(settings).search("nina") == ([], [])


def test_query_cannot_change_the_filter(settings: ProfileDirectory) -> None:
    assert make(settings).search("*)(cn=*") == ([], [])


def test_name_for_knows_numbers_an_ldap_search_returned(settings: ProfileDirectory) -> None:
    d = make(settings)
    assert d.name_for("2002") is None  # never searched: the desk's loop does not wait on LDAP
    d.search("sidorov")
    assert d.name_for("2002") == "Ivan Sidorov"
    assert d.name_for("+7 495 555 01 02") == "Ivan Sidorov"
    assert d.name_for("2000") == "Reception"  # the file


def test_wrong_password_is_named_and_the_file_still_answers(settings: ProfileDirectory) -> None:
    found, errors = make(settings, ldap_password="not-the-password").search("anna")
    assert [c.name for c in found] == ["Anna Local"]
    (p,) = errors
    assert p.source == "ldap" and p.code == "ldap_bad_credentials"
    assert settings.ldap_bind_dn in p.message and "ldap_password_file" in p.message
    assert "not-the-password" not in p.message


def test_wrong_base_is_named(settings: ProfileDirectory) -> None:
    (p,) = make(settings, ldap_base="ou=staff,dc=example,dc=org").search("anna")[1]
    assert p.code == "ldap_bad_base" and "ou=staff,dc=example,dc=org" in p.message
    assert "ldap_base" in p.message


def test_anonymous_client_sees_nothing_and_is_told_why(settings: ProfileDirectory) -> None:
    (p,) = make(settings, ldap_bind_dn=None, ldap_password="").search("anna")[1]
    assert p.code == "ldap_bad_base" and "anonymous" in p.message


def test_bad_filter_in_the_profile_is_named(settings: ProfileDirectory) -> None:
    (p,) = make(settings, ldap_filter="(cn=*{q}*").search("anna")[1]
    assert p.code == "ldap_bad_filter" and "(cn=*{q}*" in p.message


def test_many_entries_are_cut_at_the_limit(slapd: Slapd, settings: ProfileDirectory) -> None:
    if not any(p.uid == "p000000" for p in slapd.people):
        slapd.add(many_people(40))
    found, errors = make(settings, file=None).search("7495", limit=7)
    assert errors == [] and len(found) == 7
    assert found == sorted(found, key=lambda c: c.name.casefold())


def test_server_stopped_gives_a_problem_in_time_and_the_file_results(tmp_path: Path, settings: ProfileDirectory) -> None:
    own = Slapd(tmp_path / "own-slapd")
    own.start()
    try:
        s = replace(settings, ldap=own.url, ldap_base=own.people_base, ldap_bind_dn=own.reader_dn,
                    ldap_password=own.reader_password)
        d = make(s)
        assert [c.name for c in d.search("anna")[0]] == ["Anna Local", "Anna Petrova"]
        own.stop()
        t0 = time.monotonic()
        found, errors = d.search("anna")
        took = time.monotonic() - t0
        assert [c.name for c in found] == ["Anna Local"]
        assert [e.code for e in errors] == ["ldap_unreachable"]
        assert own.url.split("//")[1] in errors[0].message and "connection refused" in errors[0].message
        print(f"search with the server stopped: {took * 1000:.1f} ms (timeout {s.ldap_timeout_seconds} s)")
        own.start()
        found, errors = d.search("anna")  # back: no restart of the unit needed
        assert errors == [] and [c.name for c in found] == ["Anna Local", "Anna Petrova"]
    finally:
        own.stop()


def test_server_that_hangs_gives_a_timeout_problem_and_recovers(tmp_path: Path, settings: ProfileDirectory) -> None:
    own = Slapd(tmp_path / "own-slapd")
    own.start()
    assert own.pid is not None
    stopped = False
    try:
        s = replace(settings, ldap=own.url, ldap_base=own.people_base, ldap_bind_dn=own.reader_dn,
                    ldap_password=own.reader_password, ldap_timeout_seconds=1)
        d = make(s)
        # SIGSTOP: the kernel still completes TCP connects to its socket, nothing answers.
        os.kill(own.pid, signal.SIGSTOP)
        stopped = True
        assert wait_until(lambda: process_state(own.pid) == "T", 5)  # kill() only queues the stop
        t0 = time.monotonic()
        found, errors = d.search("anna")
        took = time.monotonic() - t0
        assert [c.name for c in found] == ["Anna Local"]
        assert [e.code for e in errors] == ["ldap_timeout"] and "1 s" in errors[0].message
        print(f"search with the server hung: {took * 1000:.1f} ms (timeout 1 s)")
        os.kill(own.pid, signal.SIGCONT)
        stopped = False
        assert wait_until(lambda: process_state(own.pid) != "T", 5)
        found, errors = d.search("anna")
        assert errors == [] and [c.name for c in found] == ["Anna Local", "Anna Petrova"]
    finally:
        if stopped and own.pid is not None:
            os.kill(own.pid, signal.SIGCONT)
        own.stop()


def test_ldaps_checks_the_server_certificate(tmp_path: Path, settings: ProfileDirectory,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    own = Slapd(tmp_path / "tls-slapd", tls=True)
    own.start()
    try:
        assert own.url.startswith("ldaps://")
        s = replace(settings, ldap=own.url, ldap_base=own.people_base, ldap_bind_dn=own.reader_dn,
                    ldap_password=own.reader_password)
        found, errors = make(s).search("anna")
        assert [c.name for c in found] == ["Anna Local"]  # the password was not sent to an unknown server
        (p,) = errors
        assert p.code == "ldap_tls" and "certificate verify failed" in p.message
        # Trusted (as a CA in the system store would be): the same search works.
        monkeypatch.setenv("SSL_CERT_FILE", str(own.cert_path))
        found, errors = make(s).search("anna")
        assert errors == [] and [c.name for c in found] == ["Anna Local", "Anna Petrova"]
        # Trusted, but not for the name the profile uses (the certificate names 127.0.0.1 only).
        (p,) = make(s, ldap=own.url.replace("127.0.0.1", "localhost")).search("anna")[1]
        assert p.code == "ldap_tls" and "does not name localhost" in p.message
    finally:
        own.stop()
