"""Directory search times: the file (a CSV of N contacts) and a real slapd (N entries) on loopback.

Medians and p95 over repeated searches, as the touchscreen's as-you-type search makes them: a name
prefix, a Cyrillic name, digits of a number, a query that matches nothing; the file's load time; and
`name_for` (what naming an incoming caller costs the desk's loop). slapd is Debian's, started here on a
free port with its own configuration (kiosk.lab.slapd) and stopped by its PID. Not a timed test.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import statistics
import sys
import tempfile
import time
from pathlib import Path

from kiosk.profile import Directory as ProfileDirectory
from kiosk.directory import Directory
from kiosk.lab.slapd import Slapd, many_people, DEFAULT_PEOPLE


def S(**fields: Any) -> ProfileDirectory:
    """The profile's [directory] with these fields."""
    return dataclasses.replace(ProfileDirectory(), **fields)


def timeit(fn, n=50):
    fn()
    xs = []
    for _ in range(n):
        t = time.perf_counter(); fn(); xs.append((time.perf_counter() - t) * 1000)
    xs.sort()
    return f"median {statistics.median(xs):.2f} ms, p95 {xs[int(len(xs) * .95) - 1]:.2f} ms, max {xs[-1]:.2f} ms"


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        people = many_people(count)
        csv = tmp / "c.csv"
        csv.write_text("name,phone,extension\n" + "".join(f"{p.cn},{p.telephone[0]},{p.ip_phone}\n" for p in people))
        t = time.perf_counter(); d = Directory(S(file=csv), tmp); d.load()
        print(f"file: load {count} contacts: {(time.perf_counter() - t) * 1000:.0f} ms")
        print(f"file: search 'anna pet' (limit 20): {timeit(lambda: d.search('anna pet'))}")
        print(f"file: search 'zzz' (scans all): {timeit(lambda: d.search('zzz'))}")
        print(f"file: search '7495' digits: {timeit(lambda: d.search('7000123'))}")
        print(f"file: name_for: {timeit(lambda: d.name_for('+74957000123'), 1000)}")
        server = Slapd(tmp / "slapd", people=list(DEFAULT_PEOPLE) + people, loglevel="none")
        t = time.perf_counter(); server.start(timeout=120)
        print(f"slapd: seed {count + len(DEFAULT_PEOPLE)} entries + start: {(time.perf_counter() - t):.1f} s")
        try:
            s = S(ldap=server.url, ldap_base=server.people_base, ldap_bind_dn=server.reader_dn,
                  ldap_password=server.reader_password)
            dl = Directory(s, None)
            for q in ("anna pet", "Пётр", "7000123", "zzzz"):
                found, errors = dl.search(q)
                assert not errors, errors
                print(f"ldap: search {q!r} ({len(found)} found): {timeit(lambda: dl.search(q))}")
            server.stop()
            t = time.perf_counter(); _, e = Directory(s, None).search("anna")
            print(f"ldap: server stopped -> {e[0].code} in {(time.perf_counter() - t) * 1000:.1f} ms")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
