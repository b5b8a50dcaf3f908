"""Provisioning from a server: the [provisioning] section, the URL of this unit, the conditional GET,
what each answer does to the profile in force, and (lab) a real nginx over HTTPS with a CA made here.

The reload path is kiosk.reload.Reloader.apply_bytes; these tests hand the provisioner
`StandInReloader`, which validates the bytes with kiosk.profile exactly as the contract says
(validate these exact bytes, apply or refuse, report ok/errors), without a desk.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import grp
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from kiosk import provisioning as prov
from kiosk.profile import Provisioning, ProfileError, load_profile

from .fakes import example_profile

MAC = "001122aabbcc"


# --- a stand-in for kiosk.reload.Reloader (the contract's API) -----------------------------


@dataclass
class StandInResult:
    ok: bool
    source: str
    errors: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.time)


class StandInReloader:
    """apply_bytes: validate exactly these bytes as a profile beside `profile_path`, then keep or refuse."""

    def __init__(self, profile_path: Path) -> None:
        self.profile_path = profile_path
        self.profile = load_profile(profile_path)
        self.profile_source = str(profile_path)
        self.loaded_at = time.time()
        self.last: StandInResult | None = None
        self.applied: list[bytes] = []

    def apply_bytes(self, data: bytes, source: str) -> StandInResult:
        incoming = self.profile_path.with_name(".incoming.toml")
        incoming.write_bytes(data)
        incoming.chmod(0o600)
        try:
            profile = load_profile(incoming)
        except ProfileError as exc:
            self.last = StandInResult(False, source, [str(p) for p in exc.problems])
            return self.last
        finally:
            incoming.unlink()
        changed = [] if profile.operator == self.profile.operator else [f"operator: {profile.operator.name}"]
        self.profile, self.profile_source, self.loaded_at = profile, source, time.time()
        self.applied.append(data)
        self.last = StandInResult(True, source, applied=changed)
        return self.last


def write_secret(path: Path, value: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def profile_with(directory: Path, provisioning: str, operator: str = "Anna Petrova") -> Path:
    """The shipped example profile in `directory`, with this [provisioning] section and operator name."""
    path = example_profile(directory)
    text = path.read_text().replace('name = "Anna Petrova"', f'name = "{operator}"')
    path.write_text(text + "\n" + provisioning)
    return path


def served_profile(directory: Path, operator: str) -> bytes:
    """A fleet file: the example profile of an operator, as the server holds it."""
    return (example_profile(directory).read_text().replace('name = "Anna Petrova"', f'name = "{operator}"')
            .encode())


def problems(path: Path) -> list[str]:
    try:
        load_profile(path)
    except ProfileError as exc:
        return [str(p) for p in exc.problems]
    return []


# --- the [provisioning] section --------------------------------------------------------------


def test_a_profile_without_provisioning_has_none(tmp_path: Path) -> None:
    assert load_profile(example_profile(tmp_path)).provisioning is None


def test_the_section_is_read_with_its_defaults_and_the_token_from_its_file(tmp_path: Path) -> None:
    write_secret(tmp_path / "secrets" / "prov.token", "tok-123.abc")
    path = profile_with(tmp_path, '[provisioning]\nurl = "https://prov.example.org/kiosk/{mac}.toml"\n'
                                  'token_file = "secrets/prov.token"\n')
    p = load_profile(path).provisioning
    assert p is not None
    assert (p.url, p.interval_minutes, p.timeout_seconds, p.ca_file) == (
        "https://prov.example.org/kiosk/{mac}.toml", 60, 10, None)
    assert p.token == "tok-123.abc" and p.token_file == tmp_path / "secrets" / "prov.token"
    assert "tok-123" not in repr(p)  # never shown


def test_basic_auth_reads_the_password_file(tmp_path: Path) -> None:
    write_secret(tmp_path / "secrets" / "prov.pass", "pässwörd 1")
    path = profile_with(tmp_path, '[provisioning]\nurl = "https://prov.example.org/{hostname}.toml"\n'
                                  'interval_minutes = 5\nusername = "desk-01"\npassword_file = "secrets/prov.pass"\n')
    p = load_profile(path).provisioning
    assert p is not None and (p.username, p.password, p.interval_minutes) == ("desk-01", "pässwörd 1", 5)
    assert "pässwörd" not in repr(p)


@pytest.mark.parametrize("section, expected", [
    ('url = "http://prov.example.org/{mac}.toml"', "provisioning.url: must be an https:// URL like"),
    ('url = "http://prov.example.org/{mac}.toml"', "plain http would carry the profile"),
    ('url = "https://prov.example.org/{MAC}.toml"', "unknown placeholder {MAC}; did you mean {mac}?"),
    ('url = "https://prov.example.org/{serial}.toml"', "the placeholders are {mac} and {hostname}"),
    ('url = "https://u:pw@prov.example.org/{mac}.toml"', "put them in username and password_file"),
    ('url = "https://prov.example.org/{mac}.toml#x"', "#fragment"),
    ('url = "ftp://prov.example.org/x"', "it does not start with https://"),
    ('url = "https://bad_host!/x"', "is not a host name"),
    ("interval_minutes = 60", 'provisioning.url: is missing; add url = "https://prov.example.org/kiosk/{mac}.toml"'),
    ('url = "https://p.example.org/{mac}"\ninterval_minutes = 0', "provisioning.interval_minutes: must be a whole "
                                                                   "number of minutes from 1 to 10080"),
    ('url = "https://p.example.org/{mac}"\ninterval_minutes = "5"', "write it without quotes"),
    ('url = "https://p.example.org/{mac}"\ntimeout_seconds = 500', "from 1 to 120"),
    ('url = "https://p.example.org/{mac}"\ntoken = "abc"', "a secret is never written in the profile"),
    ('url = "https://p.example.org/{mac}"\npassword = "abc"', 'password_file = "secrets/provisioning.password"'),
    ('url = "https://p.example.org/{mac}"\nusername = "desk"', "provisioning.password_file: is missing"),
    ('url = "https://p.example.org/{mac}"\npassword_file = "secrets/1001.pass"', "provisioning.username: is missing"),
    ('url = "https://p.example.org/{mac}"\nusername = "a:b"\npassword_file = "p"', 'without ":" or spaces'),
    ('url = "https://p.example.org/{mac}"\ntoken_file = "nope.token"', "cannot read"),
    ('url = "https://p.example.org/{mac}"\nca_file = "nope.pem"', "nope.pem is missing"),
    ('url = "https://p.example.org/{mac}"\ninterval = 5', "unknown key; did you mean 'interval_minutes'?"),
])
def test_mistakes_in_the_section_are_named_with_what_is_right(tmp_path: Path, section: str, expected: str) -> None:
    path = profile_with(tmp_path, f"[provisioning]\n{section}\n")
    found = problems(path)
    assert any(expected in p for p in found), found
    assert all(":" in p.split("provisioning", 1)[0] for p in found if "provisioning" in p)  # FILE:LINE: first


def test_token_and_basic_auth_together_are_refused(tmp_path: Path) -> None:
    write_secret(tmp_path / "t", "tok")
    write_secret(tmp_path / "p", "pw")
    path = profile_with(tmp_path, '[provisioning]\nurl = "https://p.example.org/{mac}"\ntoken_file = "t"\n'
                                  'username = "u"\npassword_file = "p"\n')
    assert any("give either token_file" in p for p in problems(path))


def test_a_world_readable_token_and_a_token_with_spaces_are_refused(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("two words\n")
    (tmp_path / "t").chmod(0o644)
    path = profile_with(tmp_path, '[provisioning]\nurl = "https://p.example.org/{mac}"\ntoken_file = "t"\n')
    found = problems(path)
    assert any("every user on the unit can read it; run chmod 640" in p for p in found), found
    assert any("must hold one bearer token" in p for p in found), found
    assert not any("two words" in p for p in found)  # a secret is never in a message


def test_a_ca_file_that_is_no_certificate_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("hello\n")
    path = profile_with(tmp_path, '[provisioning]\nurl = "https://p.example.org/{mac}"\nca_file = "ca.pem"\n')
    assert any("holds no certificate this unit can read" in p for p in problems(path))


# --- who the unit is, and its URL --------------------------------------------------------------


def fake_net(tmp_path: Path, route: str, macs: dict[str, str]) -> tuple[Path, Path]:
    route_file = tmp_path / "route"
    route_file.write_text("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n" + route)
    sys_net = tmp_path / "net"
    for iface, mac in macs.items():
        (sys_net / iface).mkdir(parents=True)
        (sys_net / iface / "address").write_text(mac + "\n")
    return route_file, sys_net


def test_the_mac_is_the_default_route_interface_s_lower_case_without_colons(tmp_path: Path) -> None:
    route, net = fake_net(tmp_path, "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
                                    "eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
                                    "eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
                          {"lo": "00:00:00:00:00:00", "eth0": "DC:A6:32:01:02:03", "wlan0": "dc:a6:32:0a:0b:0c"})
    assert prov.unit_mac(route, net) == ("dca632010203", "eth0")  # the lowest metric


def test_without_a_default_route_the_first_real_interface_names_the_unit(tmp_path: Path) -> None:
    route, net = fake_net(tmp_path, "", {"lo": "00:00:00:00:00:00", "wlan0": "dc:a6:32:0a:0b:0c",
                                         "eth0": "dc:a6:32:01:02:03"})
    assert prov.unit_mac(route, net) == ("dca632010203", "eth0")
    assert prov.unit_mac(tmp_path / "none", tmp_path / "none") is None


def test_this_machine_has_a_mac_of_twelve_hex_digits() -> None:
    found = prov.unit_mac()
    if found is None:
        pytest.skip("no network interface with a MAC here")
    assert len(found[0]) == 12 and int(found[0], 16) >= 0


def test_the_url_gets_the_mac_and_the_quoted_host_name() -> None:
    assert prov.expand_url("https://p/{mac}.toml", MAC, "h") == f"https://p/{MAC}.toml"
    assert prov.expand_url("https://p/{hostname}/{mac}", MAC, "desk 1/x") == f"https://p/desk%201%2Fx/{MAC}"
    assert prov.expand_url("https://p/all.toml", None, "h") == "https://p/all.toml"
    with pytest.raises(ValueError, match="MAC"):
        prov.expand_url("https://p/{mac}.toml", None, "h")


def test_headers_carry_the_token_and_the_validators_of_the_file_in_force() -> None:
    config = Provisioning(url="https://p/{mac}", token="t0k")
    h = prov.request_headers(config, {"etag": '"abc"', "last_modified": "Mon, 01 Jan 2024 00:00:00 GMT"}, "kiosk/1")
    assert h["Authorization"] == "Bearer t0k"
    assert h["If-None-Match"] == '"abc"' and h["If-Modified-Since"] == "Mon, 01 Jan 2024 00:00:00 GMT"
    plain = prov.request_headers(Provisioning(url="https://p/"), None, "kiosk/1")
    assert "Authorization" not in plain and "If-None-Match" not in plain and "If-Modified-Since" not in plain


# --- what each answer does (a fake server) -------------------------------------------------------


class FakeFetcher:
    """Answers from a list; records the headers of each request."""

    def __init__(self) -> None:
        self.answers: list[prov.Answer | prov.FetchError] = []
        self.requests: list[tuple[str, dict[str, str]]] = []

    def get(self, url: str, config: Provisioning, headers: dict[str, str]) -> prov.Answer:
        self.requests.append((url, dict(headers)))
        answer = self.answers.pop(0)
        if isinstance(answer, prov.FetchError):
            raise answer
        return answer

    def close(self) -> None:
        pass


def answer(status: int, body: bytes = b"", etag: str | None = '"e1"', lm: str | None = "Mon, 01 Jan 2024 00:00:00 GMT",
           reason: str = "") -> prov.Answer:
    return prov.Answer(status, reason or {200: "OK", 304: "Not Modified", 404: "Not Found",
                                          503: "Service Unavailable", 401: "Unauthorized"}.get(status, ""),
                       etag, lm, body, "https://prov.test/")


@pytest.fixture
def unit(tmp_path: Path) -> tuple[prov.Provisioner, StandInReloader, FakeFetcher]:
    path = profile_with(tmp_path / "etc", '[provisioning]\nurl = "https://prov.test/kiosk/{mac}.toml"\n')
    reloader = StandInReloader(path)
    p = prov.Provisioner(lambda: reloader.profile.provisioning, reloader, tmp_path / "state",
                         identity=lambda: (MAC, "eth0"), hostname=lambda: "desk-01", jitter=0)
    fetcher = FakeFetcher()
    p.fetcher = fetcher  # type: ignore[assignment]
    return p, reloader, fetcher


URL = f"https://prov.test/kiosk/{MAC}.toml"


def test_a_200_is_applied_and_its_validators_kept_then_a_304_changes_nothing(unit: Any, tmp_path: Path) -> None:
    p, reloader, fetcher = unit
    body = served_profile(tmp_path / "srv", "Boris")
    fetcher.answers = [answer(200, body), answer(304)]
    first = p.check()
    assert (first.outcome, first.http_status, first.url) == ("applied", 200, URL)
    assert reloader.profile.operator.name == "Boris" and reloader.profile_source == URL
    assert "If-None-Match" not in fetcher.requests[0][1]  # the profile in force was the local file
    assert fetcher.requests[0][1]["User-Agent"].endswith(f"({MAC})")
    state = json.loads((tmp_path / "state" / prov.STATE_FILE).read_text())
    assert state["etag"] == '"e1"' and state["sha256"] == hashlib.sha256(body).hexdigest()
    assert (tmp_path / "state" / prov.CACHE_FILE).read_bytes() == body
    assert (tmp_path / "state" / prov.CACHE_FILE).stat().st_mode & 0o077 == 0
    second = p.check()
    assert (second.outcome, second.http_status) == ("unchanged", 304)
    assert fetcher.requests[1][1]["If-None-Match"] == '"e1"'
    assert fetcher.requests[1][1]["If-Modified-Since"] == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert len(reloader.applied) == 1
    assert p.status()["last"]["outcome"] == "unchanged" and p.status()["last_success"] is None


def test_the_same_bytes_again_are_not_applied_again(unit: Any, tmp_path: Path) -> None:
    p, reloader, fetcher = unit
    body = served_profile(tmp_path / "srv", "Boris")
    fetcher.answers = [answer(200, body), answer(200, body, etag=None, lm=None)]  # a server without validators
    assert p.check().outcome == "applied"
    assert p.check().outcome == "unchanged"
    assert len(reloader.applied) == 1


def test_a_broken_file_is_refused_and_the_profile_in_force_stays(unit: Any, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    p, reloader, fetcher = unit
    good = served_profile(tmp_path / "srv", "Boris")
    fetcher.answers = [answer(200, good), answer(200, b"[sip]\nlisten = 5060\n", etag='"e2"')]
    p.check()
    result = p.check()
    assert (result.outcome, result.http_status) == ("refused", 200)
    assert result.errors and "the current profile stays" in result.reason
    assert reloader.profile.operator.name == "Boris"
    assert json.loads((tmp_path / "state" / prov.STATE_FILE).read_text())["etag"] == '"e1"'  # not the broken one
    assert any("was refused" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    assert p.delay_after(result) == 3600  # a refused file waits for the interval: it will not fix itself


@pytest.mark.parametrize("failure, words", [
    (answer(404), "the server has no file for this unit: 404 Not Found"),
    (answer(503), "server error: 503 Service Unavailable"),
    (answer(401), "the server refused this unit: 401 Unauthorized (check no credentials are configured)"),
    (prov.FetchError("prov.test refused the connection (no server listening there)"), "refused the connection"),
])
def test_a_failed_fetch_keeps_the_profile_and_says_why(unit: Any, failure: Any, words: str) -> None:
    p, reloader, fetcher = unit
    fetcher.answers = [failure]
    before = reloader.profile
    result = p.check()
    assert result.outcome == "failed" and words in result.reason
    assert reloader.profile is before
    status = p.status()
    assert status["last"]["outcome"] == "failed" and words in status["last"]["reason"]
    assert status["failures_in_a_row"] == 1


def test_after_failures_the_next_check_comes_sooner_doubling_up_to_the_interval(unit: Any) -> None:
    p, _, fetcher = unit
    fetcher.answers = [prov.FetchError("down")] * 12
    delays = []
    for _ in range(12):
        delays.append(p.delay_after(p.check()))
    assert delays[:4] == [15, 30, 60, 120]
    assert max(delays) == 3600


def test_the_cached_copy_is_used_when_the_server_is_down_and_the_local_file_is_in_force(tmp_path: Path) -> None:
    path = profile_with(tmp_path / "etc", '[provisioning]\nurl = "https://prov.test/kiosk/{mac}.toml"\n')
    body = served_profile(tmp_path / "srv", "Boris")

    def start() -> tuple[prov.Provisioner, StandInReloader, FakeFetcher]:
        reloader = StandInReloader(path)
        p = prov.Provisioner(lambda: reloader.profile.provisioning, reloader, tmp_path / "state",
                             identity=lambda: (MAC, "eth0"), jitter=0)
        p.fetcher = FakeFetcher()  # type: ignore[assignment]
        return p, reloader, p.fetcher  # type: ignore[return-value]

    p, reloader, fetcher = start()
    fetcher.answers = [answer(200, body)]
    p.check()
    p, reloader, fetcher = start()  # the unit restarts on its local profile; the server is down
    fetcher.answers = [prov.FetchError("prov.test refused the connection")]
    result = p.check()
    assert result.outcome == "failed" and "running on the copy of its file fetched at" in result.reason
    assert reloader.profile.operator.name == "Boris" and reloader.profile_source == URL
    fetcher.answers = [answer(304)]  # and from then on it asks whether that copy is still current
    assert p.check().outcome == "unchanged"
    assert fetcher.requests[-1][1]["If-None-Match"] == '"e1"'


def test_a_fetched_profile_without_the_section_keeps_the_settings_and_one_with_it_changes_them(
        unit: Any, tmp_path: Path) -> None:
    p, reloader, fetcher = unit
    fetcher.answers = [answer(200, served_profile(tmp_path / "a", "Boris"))]
    p.check()
    assert reloader.profile.provisioning is None and p.config is not None and p.config.url.endswith("{mac}.toml")
    moved = served_profile(tmp_path / "b", "Vera") + b'\n[provisioning]\nurl = "https://new.test/{mac}"\ninterval_minutes = 5\n'
    fetcher.answers = [answer(200, moved, etag='"e2"'), answer(404)]
    p.check()
    p.check()
    assert fetcher.requests[-1][0] == f"https://new.test/{MAC}" and p.status()["interval_minutes"] == 5


def test_a_fresh_check_asks_for_the_whole_file_and_applies_it_even_if_the_same(unit: Any, tmp_path: Path) -> None:
    """After a reload of the local file the server's copy must come back, though the validators still match
    (the reload's hook asks for the check before the reload has even finished)."""
    p, reloader, fetcher = unit
    body = served_profile(tmp_path / "srv", "Boris")
    fetcher.answers = [answer(200, body), answer(200, body)]
    p.check()
    p.check_soon()  # as the unit's reload hook does
    result = p.check()
    assert "If-None-Match" not in fetcher.requests[1][1] and result.outcome == "applied"
    assert len(reloader.applied) == 2


def test_no_mac_to_fill_in_is_a_failed_check_that_says_so(unit: Any) -> None:
    p, _, _ = unit
    p.identity = lambda: None
    result = p.check()
    assert result.outcome == "failed" and "cannot tell this unit's MAC address" in result.reason


def test_the_thread_checks_at_start_and_when_asked_and_stops(unit: Any, tmp_path: Path) -> None:
    p, reloader, fetcher = unit
    fetcher.answers = [answer(200, served_profile(tmp_path / "srv", "Boris")), answer(304)]
    p.start()
    deadline = time.monotonic() + 5
    while p.checks < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.checks == 1 and p.status()["next_check"] is not None
    p.check_soon(fresh=False)
    while p.checks < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.last is not None and p.last.outcome == "unchanged"
    p.stop()
    assert p._thread is not None and not p._thread.is_alive()


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    """The real fetcher against a socket that accepts and says nothing: the timeout, in words."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    try:
        config = Provisioning(url=f"https://127.0.0.1:{port}/x", timeout_seconds=0.3)  # type: ignore[arg-type]
        started = time.monotonic()
        with pytest.raises(prov.FetchError, match=r"did not answer within 0.3 s"):
            prov.Fetcher().get(f"https://127.0.0.1:{port}/x", config, {})
        assert time.monotonic() - started < 5
    finally:
        listener.close()


def test_nothing_listening_is_said_as_refused() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(prov.FetchError, match="refused the connection"):
        prov.Fetcher().get(f"https://127.0.0.1:{port}/x", Provisioning(url="https://x/"), {})


def test_an_unknown_host_is_said_as_not_resolved() -> None:
    with pytest.raises(prov.FetchError, match="cannot resolve no-such-host.invalid"):
        prov.Fetcher().get("https://no-such-host.invalid/x", Provisioning(url="https://x/", timeout_seconds=3), {})


# --- lab: a real nginx over HTTPS ------------------------------------------------------------------

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
OPENSSL = shutil.which("openssl")
TOKEN = "fleet-token-7f3a9"
BASIC = ("desk-01", "basic-pw-42")


def _run(*args: str, cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True, timeout=30).stdout


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path


def make_pki(directory: Path, name: str = "Fleet test CA") -> Pki:
    """A CA and a server certificate for 127.0.0.1 and localhost, signed by it (openssl)."""
    directory.mkdir(parents=True, exist_ok=True)
    _run(OPENSSL or "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", f"/CN={name}",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         cwd=directory)
    _run(OPENSSL or "openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=directory)
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                                       "basicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid\n")
    _run(OPENSSL or "openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=directory)
    return Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")


class Nginx:
    """Debian's nginx on 127.0.0.1 as this test's own process: its conf, pid file and logs in `directory`.

    /kiosk/ serves the files of `root` openly, /bearer/ the same with `Authorization: Bearer TOKEN`,
    /basic/ with basic auth (BASIC), /fail/ answers 503.
    """

    def __init__(self, directory: Path, root: Path, pki: Pki, port: int) -> None:
        self.directory, self.root, self.pki, self.port = directory, root, pki, port
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        hashed = _run(OPENSSL or "openssl", "passwd", "-apr1", BASIC[1], cwd=directory).strip()
        (directory / "htpasswd").write_text(f"{BASIC[0]}:{hashed}\n")
        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        d = directory
        temps = "".join(f"    {kind}_temp_path {d}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi",
                                                                             "uwsgi", "scgi"))
        (d / "nginx.conf").write_text(f"""\
user {user} {group};
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
{temps}    types {{ application/toml toml; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {pki.cert};
        ssl_certificate_key {pki.key};
        root {root};
        location /kiosk/ {{ }}
        location /bearer/ {{
            if ($http_authorization != "Bearer {TOKEN}") {{ return 401; }}
            alias {root}/kiosk/;
        }}
        location /basic/ {{
            auth_basic "fleet";
            auth_basic_user_file {d}/htpasswd;
            alias {root}/kiosk/;
        }}
        location /fail/ {{ return 503; }}
    }}
}}
""")

    def start(self) -> "Nginx":
        (self.directory / "nginx.pid").unlink(missing_ok=True)
        self.proc = subprocess.Popen([NGINX, "-p", str(self.directory), "-c", str(self.directory / "nginx.conf"),
                                      "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited {self.proc.returncode}: {self.proc.stderr.read().decode()}"  # type: ignore[union-attr]
                                   f"{(self.directory / 'error.log').read_text() if (self.directory / 'error.log').exists() else ''}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                if (self.directory / "nginx.pid").exists():
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("nginx did not start listening within 10 s")

    def stop(self) -> None:
        """SIGQUIT to the master by its PID (graceful), SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGQUIT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Nginx, Path, Pki]]:
    """nginx over HTTPS serving <root>/kiosk/<mac>.toml; yields (nginx, the per-unit files' folder, the PKI)."""
    if not os.access(NGINX, os.X_OK) or OPENSSL is None:
        if os.environ.get("CI"):
            raise RuntimeError("nginx or openssl missing: scripts/install.sh must install them")
        pytest.skip("nginx or openssl not installed")
    pki = make_pki(tmp_path / "pki")
    files = tmp_path / "www" / "kiosk"
    files.mkdir(parents=True)
    server = Nginx(tmp_path / "nginx", tmp_path / "www", pki, _free_port()).start()
    try:
        yield server, files, pki
    finally:
        server.stop()


def publish(files: Path, name: str, data: bytes, bump: int = 0) -> None:
    """Put a unit's file in place atomically, as a fleet's deploy step should (write, then rename)."""
    tmp = files / f".{name}.tmp"
    tmp.write_bytes(data)
    if bump:  # nginx's ETag is mtime-size: make the change visible even within the same second
        t = time.time() + bump
        os.utime(tmp, (t, t))
    os.replace(tmp, files / name)


def lab_unit(tmp_path: Path, port: int, pki_ca: Path, location: str = "kiosk", auth: str = "",
             mac: str = MAC) -> tuple[prov.Provisioner, StandInReloader]:
    etc = tmp_path / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    shutil.copy(pki_ca, tmp_path / "prov-ca.pem")
    path = profile_with(etc, f'[provisioning]\nurl = "https://127.0.0.1:{port}/{location}/{{mac}}.toml"\n'
                             f'interval_minutes = 1\ntimeout_seconds = 3\nca_file = "{tmp_path / "prov-ca.pem"}"\n'
                             + auth)
    reloader = StandInReloader(path)
    p = prov.Provisioner(lambda: reloader.profile.provisioning, reloader, tmp_path / "state",
                         identity=lambda: (mac, "eth0"), jitter=0)
    return p, reloader


@pytest.mark.lab
def test_nginx_first_fetch_applied_then_304_then_a_changed_file_applied(tmp_path: Path, fleet: Any) -> None:
    server, files, pki = fleet
    publish(files, f"{MAC}.toml", served_profile(tmp_path / "srv1", "Boris"))
    p, reloader = lab_unit(tmp_path, server.port, pki.ca)
    first = p.check()
    assert (first.outcome, first.http_status) == ("applied", 200), first
    assert reloader.profile.operator.name == "Boris"
    assert reloader.profile_source == f"https://127.0.0.1:{server.port}/kiosk/{MAC}.toml"

    # Nothing changed: a 304 each time. The unit's CPU for one such check, measured around it.
    cpu = []
    for _ in range(25):
        before = time.process_time()
        result = p.check()
        cpu.append(time.process_time() - before)
        assert (result.outcome, result.http_status) == ("unchanged", 304), result
    median_ms = statistics.median(cpu) * 1000
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"\nprovisioning check with nothing changed (HTTPS, 304): CPU median {median_ms:.1f} ms, "
          f"max {max(cpu) * 1000:.1f} ms over {len(cpu)} checks (process maxrss {usage.ru_maxrss} KiB)")
    assert len(reloader.applied) == 1  # (the CPU is printed, not bounded: a test is not a benchmark)

    publish(files, f"{MAC}.toml", served_profile(tmp_path / "srv2", "Vera"), bump=10)
    changed = p.check()
    assert (changed.outcome, changed.http_status) == ("applied", 200), changed
    assert reloader.profile.operator.name == "Vera" and len(reloader.applied) == 2
    assert p.check().http_status == 304
    access = (server.directory / "access.log").read_text().splitlines()
    assert [line.split('" ')[1].split()[0] for line in access if "GET /kiosk/" in line][:3] == ["200", "304", "304"]


@pytest.mark.lab
def test_nginx_a_broken_file_is_refused_and_the_current_profile_kept(tmp_path: Path, fleet: Any) -> None:
    server, files, pki = fleet
    publish(files, f"{MAC}.toml", served_profile(tmp_path / "srv1", "Boris"))
    p, reloader = lab_unit(tmp_path, server.port, pki.ca)
    assert p.check().outcome == "applied"
    publish(files, f"{MAC}.toml", b'[operator]\nname = "Vera"\n[sip]\nlisten = "nowhere"\n', bump=10)
    result = p.check()
    assert (result.outcome, result.http_status) == ("refused", 200), result
    assert any("sip.listen" in e for e in result.errors) and any("[[line]]" in e for e in result.errors)
    assert reloader.profile.operator.name == "Boris"
    assert p.status()["last"]["outcome"] == "refused"
    assert p.status()["last_success"]["outcome"] == "applied"


@pytest.mark.lab
def test_nginx_down_is_reported_and_the_profile_kept(tmp_path: Path, fleet: Any) -> None:
    server, files, pki = fleet
    publish(files, f"{MAC}.toml", served_profile(tmp_path / "srv1", "Boris"))
    p, reloader = lab_unit(tmp_path, server.port, pki.ca)
    assert p.check().outcome == "applied"
    server.stop()
    result = p.check()
    assert result.outcome == "failed" and result.http_status is None
    assert result.reason == f"127.0.0.1:{server.port} refused the connection (no server listening there)"
    assert reloader.profile.operator.name == "Boris"
    assert p.delay_after(result) == 15  # sooner than the interval: the server may be back in a moment
    server.start()
    assert p.check().outcome == "unchanged"


@pytest.mark.lab
def test_nginx_unknown_unit_and_server_error(tmp_path: Path, fleet: Any) -> None:
    server, files, pki = fleet
    p, _ = lab_unit(tmp_path, server.port, pki.ca, mac="ffeeddccbbaa")
    result = p.check()
    assert (result.outcome, result.http_status) == ("failed", 404)
    assert "the server has no file for this unit: 404 Not Found" in result.reason
    p, _ = lab_unit(tmp_path / "u2", server.port, pki.ca, location="fail")
    assert p.check().reason.startswith("server error: 503 Service")


@pytest.mark.lab
def test_nginx_with_a_certificate_of_another_ca_is_refused(tmp_path: Path, fleet: Any) -> None:
    server, files, _ = fleet
    publish(files, f"{MAC}.toml", served_profile(tmp_path / "srv1", "Boris"))
    other = make_pki(tmp_path / "other", "Some other CA")
    p, reloader = lab_unit(tmp_path, server.port, other.ca)
    result = p.check()
    assert result.outcome == "failed"
    assert result.reason.startswith(f"TLS: the certificate of 127.0.0.1:{server.port} is not trusted"), result
    assert reloader.profile.operator.name == "Anna Petrova"
    # ... and without ca_file the system's store does not know the test CA either.
    p.config = Provisioning(url=p.config.url, timeout_seconds=3)  # type: ignore[union-attr]
    p.settings = lambda: None
    assert "not trusted" in p.check().reason


@pytest.mark.lab
def test_nginx_bearer_token_and_basic_auth(tmp_path: Path, fleet: Any) -> None:
    server, files, pki = fleet
    publish(files, f"{MAC}.toml", served_profile(tmp_path / "srv1", "Boris"))
    write_secret(tmp_path / "a" / "etc" / "secrets" / "prov.token", TOKEN)
    p, reloader = lab_unit(tmp_path / "a", server.port, pki.ca, "bearer", 'token_file = "secrets/prov.token"\n')
    assert p.check().outcome == "applied" and reloader.profile.operator.name == "Boris"
    assert p.check().outcome == "unchanged"
    write_secret(tmp_path / "b" / "etc" / "secrets" / "prov.token", "wrong-token")
    p, _ = lab_unit(tmp_path / "b", server.port, pki.ca, "bearer", 'token_file = "secrets/prov.token"\n')
    result = p.check()
    assert result.http_status == 401 and "check the token in token_file" in result.reason
    write_secret(tmp_path / "c" / "etc" / "secrets" / "prov.pass", BASIC[1])
    p, reloader = lab_unit(tmp_path / "c", server.port, pki.ca, "basic",
                           f'username = "{BASIC[0]}"\npassword_file = "secrets/prov.pass"\n')
    assert p.check().outcome == "applied" and reloader.profile.operator.name == "Boris"
    log = (server.directory / "access.log").read_text()
    assert TOKEN not in log and BASIC[1] not in log


@pytest.mark.lab
def test_nginx_on_a_thread_while_the_caller_goes_on(tmp_path: Path, fleet: Any) -> None:
    """The provisioner's own thread does the first check at start; nothing waits for it."""
    server, files, pki = fleet
    publish(files, f"{MAC}.toml", served_profile(tmp_path / "srv1", "Boris"))
    p, reloader = lab_unit(tmp_path, server.port, pki.ca)
    started = time.monotonic()
    p.start()
    assert time.monotonic() - started < 0.05
    try:
        deadline = time.monotonic() + 10
        while reloader.profile.operator.name != "Boris" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert reloader.profile.operator.name == "Boris"
        assert threading.current_thread().name != "kiosk-provisioning"
    finally:
        p.stop()


@pytest.mark.lab
def test_nginx_through_the_unit_s_reload_path(tmp_path: Path, fleet: Any) -> None:
    """The same checks with kiosk.reload.Reloader and a desk (on the fake agent) instead of the stand-in."""
    reload_module = pytest.importorskip("kiosk.reload")
    from kiosk.desk import Desk

    from .fakes import FakeAgent

    server, files, pki = fleet
    publish(files, f"{MAC}.toml", served_profile(tmp_path / "srv1", "Boris"))
    _, stand_in = lab_unit(tmp_path, server.port, pki.ca)  # writes the unit's profile; its reloader is not used
    agent = FakeAgent()
    desk = Desk(stand_in.profile, agent)
    desk.start()
    agent.register_all(stand_in.profile)
    try:
        reloader = reload_module.Reloader(desk, tmp_path / "state", stand_in.profile_path)
        p = prov.Provisioner(lambda: desk.profile.provisioning, reloader, tmp_path / "state",
                             identity=lambda: (MAC, "eth0"), jitter=0)
        first = p.check()
        assert first.outcome == "applied", first
        assert desk.profile.operator.name == "Boris" and any("operator.name" in a for a in first.applied)
        assert (tmp_path / "state" / reload_module.LAST_GOOD).read_bytes() == served_profile(tmp_path / "x", "Boris")
        assert p.check().http_status == 304
        publish(files, f"{MAC}.toml", b"[[line]]\nid = 3\n", bump=10)
        refused = p.check()
        assert refused.outcome == "refused" and desk.profile.operator.name == "Boris"
        assert reloader.last is not None and not reloader.last.ok
    finally:
        desk.close()
