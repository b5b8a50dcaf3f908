"""The profile loader: every mistake is reported with file, line, key and the right form.

Each test writes a small profile into tmp_path (mode 0640, so the world-readable
rule only fires where a test asks for it) and checks the exact key and the
"what would be right" part of the message, since that is what the person
provisioning a unit reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kiosk.profile import (
    MAX_ACCOUNTS,
    Problem,
    ProfileError,
    check_profile,
    load_profile,
    profile_from_dict,
)

from .fakes import example_profile

HEAD = """\
[operator]
name = "Anna"
language = "en"

[sip]
listen = "0.0.0.0:5060"
trusted = ["10.0.0.5"]
"""

LINE = """\
[[line]]
id = "{id}"
label = "Line {id}"
uri = "sip:{id}@pbx.example.org"
registrar = "sip:pbx.example.org:5060"
username = "{id}"
password = "secret"
"""

ROUTE = """\
[[route]]
id = "{id}"
label = "Route {id}"
line = "{line}"
"""


def profile_text(*, head: str = HEAD, lines: tuple[str, ...] = ("1001",), routes: tuple[str, ...] = (), tail: str = "") -> str:
    parts = [head]
    parts += [LINE.format(id=i) for i in lines]
    parts += [ROUTE.format(id=r, line=lines[0]) for r in routes]
    parts.append(tail)
    return "\n".join(parts)


def write(tmp_path: Path, text: str, name: str = "profile.toml", mode: int = 0o640) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    found: list[Problem] = info.value.problems
    return found


def only_problem(path: Path) -> Problem:
    found = problems_of(path)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if needle in line)


# --- good files ---------------------------------------------------------------


def test_good_profile_loads_into_typed_values(tmp_path: Path) -> None:
    text = profile_text(
        lines=("1001", "2001"),
        routes=("internal",),
        tail="""
[[route]]
id = "trunk"
label = "Trunk"
line = "2001"
prefix = "8"
proxy = "sip:trunk.example.net:5060"

[recording]
always = true
directory = "rec"
min_free_mb = 0
max_age_days = 30

[pickup]
prefix = "**"

[control]
socket = "/run/kiosk-test/control.sock"

[audio]
device = 2

[gpio]
hold = 17
led_recording = 0
""",
    )
    path = write(tmp_path, text)
    profile = load_profile(path)
    assert profile.path == path
    assert profile.operator.language == "en"
    assert profile.sip.port == 5060 and profile.sip.trusted == ("10.0.0.5",)
    assert [line.id for line in profile.lines] == ["1001", "2001"]
    assert profile.line("1001").password == "secret"
    assert profile.line("1001").domain == "pbx.example.org"
    assert profile.route("trunk").proxy == "sip:trunk.example.net:5060"
    assert profile.route("trunk").prefix == "8"
    assert profile.accounts == 3
    # Relative paths are anchored at the profile's directory, not the cwd.
    assert profile.recording.directory == tmp_path / "rec"
    assert profile.recording.always is True and profile.recording.max_total_mb is None
    assert profile.pickup.prefix == "**"
    assert profile.control.socket == Path("/run/kiosk-test/control.sock")
    assert profile.audio.device == 2
    assert profile.gpio.hold == 17 and profile.gpio.led_recording == 0 and profile.gpio.answer is None
    assert check_profile(path) == []


def test_minimal_profile_takes_the_documented_defaults(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, LINE.format(id="1001")))
    assert profile.operator.name == "Operator" and profile.operator.language == "en"
    assert profile.sip.listen == "127.0.0.1:5070"
    assert profile.sip.default_route is None and profile.routes == ()
    assert profile.pickup.prefix == "*8"
    assert profile.audio.device is None


def test_example_profile_loads_cleanly(tmp_path: Path) -> None:
    profile = load_profile(example_profile(tmp_path))
    assert len(profile.lines) == 2
    assert len(profile.routes) == 3
    assert [r.id for r in profile.routes if r.proxy] == ["trunk"]
    assert profile.sip.default_route == "internal"
    assert profile.accounts == 3
    assert all(v is not None for v in vars(profile.gpio).values())


def test_example_profile_passes_check_profile_as_git_checks_it_out(tmp_path: Path) -> None:
    """A newcomer's first `kiosk check-profile kiosk/examples/profile.toml` is clean: git gives the
    profile and its secrets/*.pass mode 0644, and those files hold placeholders, not secrets."""
    path = example_profile(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o644
    secrets = sorted((tmp_path / "secrets").iterdir())
    assert [f.name for f in secrets] == ["1001.pass", "2001.pass"]
    assert all(f.stat().st_mode & 0o777 == 0o644 for f in secrets)
    lines = tomllib.loads(path.read_text())["line"]
    assert all("password" not in line and "password_file" in line for line in lines)  # no secret in the profile
    assert check_profile(path) == []
    profile = load_profile(path)
    assert [line.password for line in profile.lines] == ["change-me-1001", "change-me-2001"]


def test_example_copied_to_a_unit_with_a_real_password_asks_for_chmod(tmp_path: Path) -> None:
    """The placeholder is let through world-readable; the real password put in its place is not."""
    path = example_profile(tmp_path)
    secret = tmp_path / "secrets" / "1001.pass"
    secret.write_text("Xq7-real-pw\n")
    problem = only_problem(path)
    assert problem.key == "line[1].password_file"
    assert problem.message == f"{secret} holds a password but every user on the unit can read it; run chmod 640 {secret}"
    secret.chmod(0o640)
    assert check_profile(path) == []


@pytest.mark.lab  # starts a process
def test_kiosk_check_profile_passes_the_example_as_cloned(tmp_path: Path) -> None:
    path = example_profile(tmp_path)
    done = subprocess.run([sys.executable, "-m", "kiosk.cli", "check-profile", str(path)], check=False,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.strip() == f"{path}: ok"


def test_password_file_is_read_relative_to_the_profile_and_stripped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secrets").mkdir()
    secret = tmp_path / "secrets" / "1001.pass"
    secret.write_text("  s3cret\n")
    secret.chmod(0o600)
    text = profile_text().replace('password = "secret"', 'password_file = "secrets/1001.pass"')
    path = write(tmp_path, text, mode=0o644)  # no password inside: world-readable is fine
    monkeypatch.chdir("/")
    assert load_profile(path).line("1001").password == "s3cret"


def test_profile_from_dict_validates_like_a_file(tmp_path: Path) -> None:
    data = {"line": [{"id": "a", "label": "A", "uri": "sip:a@h", "registrar": "sip:h", "username": "a", "password": ""}]}
    assert profile_from_dict(data, tmp_path / "demo.toml").line("a").password == ""
    data["line"][0]["registrar"] = "h"
    with pytest.raises(ProfileError) as info:
        profile_from_dict(data, tmp_path / "demo.toml")
    (problem,) = info.value.problems
    assert problem.key == "line[1].registrar" and problem.line is None


# --- the shape of a problem -----------------------------------------------------


def test_problem_prints_as_one_line_with_file_line_key_and_the_right_form(tmp_path: Path) -> None:
    text = profile_text().replace('registrar = "sip:pbx.example.org:5060"', 'registrar = "pbx"')
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert problem.file == path
    assert problem.key == "line[1].registrar"
    assert problem.line == line_of(text, 'registrar = "pbx"')
    assert str(problem).startswith(f"{path}:{problem.line}: line[1].registrar: must be a SIP URI like sip:pbx.example.org:5060, got 'pbx'")
    assert "write it as 'sip:pbx'" in problem.message
    assert "\n" not in str(problem)
    assert str(Problem(Path("p.toml"), "", None, "is empty")) == "p.toml: is empty"


def test_all_problems_are_reported_in_file_order(tmp_path: Path) -> None:
    text = profile_text(routes=("r",), tail='[gpio]\nhold = 40\n').replace('language = "en"', 'language = "de"')
    text = text.replace('line = "1001"', 'line = "nope"').replace('listen = "0.0.0.0:5060"', 'listen = "0.0.0.0"')
    path = write(tmp_path, text)
    found = problems_of(path)
    assert [p.key for p in found] == ["operator.language", "sip.listen", "route[1].line", "gpio.hold"]
    assert [p.line for p in found] == sorted(p.line for p in found if p.line)
    assert check_profile(path) == [str(p) for p in found]


# --- one test per kind of mistake ----------------------------------------------------


def test_unknown_table_suggests_the_nearest(tmp_path: Path) -> None:
    text = profile_text(tail='[recordng]\nalways = true\n')
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "recordng"
    assert problem.line == line_of(text, "[recordng]")
    assert problem.message == "unknown table; did you mean [recording]?"


def test_lines_written_as_plural_suggests_line_and_is_not_also_reported_missing(tmp_path: Path) -> None:
    text = HEAD + LINE.format(id="1001").replace("[[line]]", "[[lines]]")
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "lines"
    assert problem.message == "unknown table; did you mean [[line]]?"


def test_unknown_key_suggests_the_nearest(tmp_path: Path) -> None:
    text = profile_text().replace('password = "secret"', 'passwrd = "secret"\npassword = "secret"')
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "line[1].passwrd"
    assert problem.line == line_of(text, "passwrd")
    assert problem.message == "unknown key; did you mean 'password'?"


def test_key_above_every_header_is_pointed_to_its_table(tmp_path: Path) -> None:
    text = 'user_agent = "x"\n' + profile_text()
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "user_agent"
    assert problem.line == 1
    assert problem.message == "unknown key; 'user_agent' belongs in [sip]: move it below that header"


def test_key_in_the_wrong_table_names_its_table(tmp_path: Path) -> None:
    text = profile_text(routes=("r",)).replace('line = "1001"', 'line = "1001"\ndefault_route = "r"')
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "route[1].default_route"
    assert problem.message == "unknown key; 'default_route' belongs in [sip]"


def test_number_where_a_string_is_wanted_says_to_quote_it(tmp_path: Path) -> None:
    text = profile_text().replace('username = "1001"', "username = 1001")
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "line[1].username"
    assert problem.message == 'must be a string like "1001", got 1001 (a whole number); write it in quotes: username = "1001"'


def test_string_where_a_number_is_wanted_says_to_unquote_it(tmp_path: Path) -> None:
    text = profile_text(tail='[recording]\nmin_free_mb = "50"\n')
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "recording.min_free_mb"
    assert "like min_free_mb = 50" in problem.message
    assert problem.message.endswith("got '50'; write it without quotes")


def test_boolean_written_as_string(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, profile_text(tail='[recording]\nalways = "true"\n')))
    assert problem.key == "recording.always"
    assert problem.message == "must be true or false (without quotes), got 'true'"


def test_section_written_as_a_value(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, 'sip = "x"\n' + profile_text(head="")))
    assert problem.key == "sip"
    assert problem.message.startswith("must be a table: write [sip] on a line of its own")


def test_line_written_with_single_brackets(tmp_path: Path) -> None:
    text = HEAD + LINE.format(id="1001").replace("[[line]]", "[line]")
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "line"
    assert problem.line == line_of(text, "[line]")
    assert problem.message == "must be written [[line]] (double brackets), one header per entry"


def test_trusted_given_as_a_string(tmp_path: Path) -> None:
    text = profile_text().replace('trusted = ["10.0.0.5"]', 'trusted = "10.0.0.5"')
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "sip.trusted"
    assert problem.message == 'must be a list, even of one host: trusted = ["10.0.0.5"]'


def test_trusted_entry_with_a_port(tmp_path: Path) -> None:
    text = profile_text().replace('trusted = ["10.0.0.5"]', 'trusted = ["10.0.0.5", "10.0.0.6:5060"]')
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "sip.trusted[2]"
    assert problem.line == line_of(text, "trusted")
    assert 'must be a host name or IP address without a port, like "10.0.0.5"' in problem.message


def test_missing_required_key_points_at_its_entry_and_shows_the_key(tmp_path: Path) -> None:
    text = profile_text(lines=("1001", "2001"))
    text = text.replace('registrar = "sip:pbx.example.org:5060"\nusername = "2001"', 'username = "2001"')
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "line[2].registrar"
    assert problem.line == line_of(text, 'id = "2001"') - 1  # the second [[line]] header
    assert problem.message == 'is missing; add registrar = "sip:pbx.example.org:5060"'


def test_at_least_one_line_is_required(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, HEAD))
    assert problem.key == "line"
    assert problem.message.startswith("at least one [[line]] is required, with id, label, uri, registrar")


def test_route_naming_a_missing_line(tmp_path: Path) -> None:
    text = profile_text(lines=("1001", "2001"), routes=("r",)).replace('line = "1001"', 'line = "3001"')
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "route[1].line"
    assert problem.line == line_of(text, 'line = "3001"')
    assert problem.message == "names line '3001', which no [[line]] defines; use one of '1001', '2001'"


def test_duplicate_line_ids(tmp_path: Path) -> None:
    text = profile_text(lines=("1001", "1001"))
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "line[2].id"
    assert problem.line == [n for n, t in enumerate(text.splitlines(), 1) if t == 'id = "1001"'][1]
    assert problem.message == "'1001' is already the id of line[1]; give each line its own id"


def test_duplicate_route_ids(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, profile_text(routes=("r", "x", "r"))))
    assert problem.key == "route[3].id"
    assert problem.message == "'r' is already the id of route[1]; give each route its own id"


def test_default_route_naming_a_missing_route(tmp_path: Path) -> None:
    head = HEAD + 'default_route = "city"\n'
    problem = only_problem(write(tmp_path, profile_text(head=head, routes=("internal", "trunk"))))
    assert problem.key == "sip.default_route"
    assert problem.line == 8
    assert problem.message == "names route 'city', which no [[route]] defines; use one of 'internal', 'trunk'"


@pytest.mark.parametrize(
    ("listen", "reason"),
    [
        ("0.0.0.0", "the :port is missing"),
        ("0.0.0.0:70000", "port 70000 is outside 1-65535"),
        ("0.0.0.0:0", "port 0 is outside 1-65535"),
        ("0.0.0.0:sip", "port 'sip' is not a number"),
        (":5060", "the host is missing"),
        ("300.1.1.1:5060", "'300.1.1.1' is not an IPv4 address"),
    ],
)
def test_bad_listen(tmp_path: Path, listen: str, reason: str) -> None:
    text = profile_text().replace('listen = "0.0.0.0:5060"', f'listen = "{listen}"')
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "sip.listen"
    assert problem.line == 6
    assert problem.message == (
        f"must be host:port with a port from 1 to 65535, like 0.0.0.0:5060, got {listen!r} ({reason})"
    )


@pytest.mark.parametrize(
    ("listen", "like"),
    [
        ("[::1]:5070", "127.0.0.1:5070"),
        ("[::]:5060", "0.0.0.0:5060"),
        ("[::ffff:10.0.0.7]:5060", "10.0.0.7:5060"),
        ("[2001:db8::7]:5080", "0.0.0.0:5080 (every interface)"),
        ("[::1]", "127.0.0.1:5060"),  # port missing too: IPv6 is the thing to change first
        ("::1", "127.0.0.1:5060"),  # without brackets
    ],
)
def test_ipv6_listen_is_refused_with_the_ipv4_to_use(tmp_path: Path, listen: str, like: str) -> None:
    """pjsua2's transports here are IPv4: on [::1]:5070 the unit would not start (PJ_ERESOLVE)."""
    text = profile_text().replace('listen = "0.0.0.0:5060"', f'listen = "{listen}"')
    problem = only_problem(write(tmp_path, text))
    assert (problem.key, problem.line) == ("sip.listen", 6)
    assert problem.message == (
        "IPv6 addresses are not supported yet: this unit listens on IPv4 only; "
        f"use an IPv4 address such as {like}, got {listen!r}"
    )


@pytest.mark.parametrize(
    ("host", "like"),
    [("2001:db8::5", "10.0.0.5"), ("::1", "127.0.0.1"), ("[2001:db8::5]", "10.0.0.5"), ("::ffff:10.0.0.9", "10.0.0.9")],
)
def test_ipv6_trusted_host_is_refused_as_it_could_never_match(tmp_path: Path, host: str, like: str) -> None:
    text = profile_text().replace('trusted = ["10.0.0.5"]', f'trusted = ["10.0.0.5", "{host}"]')
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "sip.trusted[2]"
    assert problem.message == (
        "IPv6 addresses are not supported yet: this unit listens on IPv4 only, so no request ever comes from an "
        f'IPv6 address; use the host\'s IPv4 address or name, like "{like}", got {host!r}'
    )


@pytest.mark.parametrize(
    ("key", "value", "like"),
    [
        ("registrar", "sip:[2001:db8::1]:5060", "sip:pbx.example.org:5060"),
        ("registrar", "sip:[::1]", "sip:pbx.example.org:5060"),
        ("proxy", "sip:[2001:db8::1]:5060;lr", "sip:proxy.example.org:5060;lr"),
    ],
)
def test_ipv6_server_of_a_line_is_refused(tmp_path: Path, key: str, value: str, like: str) -> None:
    """With IPv4 transports only, pjsua2 sends nothing there (PJSIP_EUNSUPTRANSPORT): the line
    would silently never register, so the profile says why instead."""
    text = profile_text()
    if key == "proxy":
        text += f'proxy = "{value}"\n'
    else:
        text = text.replace('registrar = "sip:pbx.example.org:5060"', f'registrar = "{value}"')
    problem = only_problem(write(tmp_path, text))
    assert problem.key == f"line[1].{key}"
    assert problem.line == line_of(text, f'{key} = "{value}"')
    assert problem.message == (
        "IPv6 addresses are not supported yet: this unit listens on IPv4 only, so it cannot reach a server at an "
        f"IPv6 address; use the server's IPv4 address or host name, like {like}, got {value!r}"
    )


def test_ipv6_trunk_proxy_of_a_route_is_refused(tmp_path: Path) -> None:
    text = profile_text(routes=("trunk",)) + 'proxy = "sip:[2001:db8::9]:5060"\n'
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "route[1].proxy"
    assert problem.message.startswith("IPv6 addresses are not supported yet: this unit listens on IPv4 only")
    assert problem.message.endswith("like sip:trunk.example.net:5060, got 'sip:[2001:db8::9]:5060'")


def test_a_line_uri_may_name_an_ipv6_domain(tmp_path: Path) -> None:
    """Only where the unit sends matters: the line's requests go to its (IPv4) registrar or proxy."""
    text = profile_text().replace('uri = "sip:1001@pbx.example.org"', 'uri = "sip:1001@[2001:db8::1]"')
    assert load_profile(write(tmp_path, text)).line("1001").domain == "[2001:db8::1]"


@pytest.mark.parametrize(
    ("key", "value", "like", "reason"),
    [
        ("uri", "sip:pbx.example.org", "sip:1001@pbx.example.org", "the user part (user@) is missing"),
        ("uri", "1001@pbx.example.org", "sip:1001@pbx.example.org", "write it as 'sip:1001@pbx.example.org'"),
        ("uri", "sips:1001@pbx.example.org", "sip:1001@pbx.example.org", "sips: (TLS) is not supported, the unit speaks SIP over UDP and TCP"),
        ("registrar", "sip:1001@pbx.example.org", "sip:pbx.example.org:5060", "a server address takes no user@ part"),
        ("registrar", "sip:pbx.example.org:99999", "sip:pbx.example.org:5060", "port 99999 is outside 1-65535"),
        ("registrar", "<sip:pbx.example.org>", "sip:pbx.example.org:5060", "write it without < >"),
        ("registrar", "sip:pbx example.org", "sip:pbx.example.org:5060", "it contains spaces"),
        ("proxy", "http://proxy", "sip:proxy.example.org:5060;lr", "it does not start with sip:"),
    ],
)
def test_bad_uris(tmp_path: Path, key: str, value: str, like: str, reason: str) -> None:
    text = profile_text()
    if key == "proxy":
        text += f'proxy = "{value}"\n'
    else:
        text = "\n".join(f'{key} = "{value}"' if t.startswith(f"{key} =") else t for t in text.splitlines())
    problem = only_problem(write(tmp_path, text))
    assert problem.key == f"line[1].{key}"
    assert problem.line == line_of(text, f'{key} = "{value}"')
    assert problem.message == f"must be a SIP URI like {like}, got {value!r} ({reason})"


def test_uris_with_ports_and_parameters_are_accepted(tmp_path: Path) -> None:
    text = profile_text().replace('uri = "sip:1001@pbx.example.org"', 'uri = "sip:1001@10.0.0.5:5080;transport=tcp"')
    text += 'proxy = "sip:10.0.0.6:5060;lr"\n'
    profile = load_profile(write(tmp_path, text))
    assert profile.line("1001").proxy == "sip:10.0.0.6:5060;lr"


def test_route_proxy_and_prefix_are_checked(tmp_path: Path) -> None:
    text = profile_text(routes=("r",)) + 'prefix = "9-"\nproxy = "trunk"\n'
    found = problems_of(write(tmp_path, text))
    assert [(p.key, p.message) for p in found] == [
        ("route[1].prefix", "must be dial digits (0-9, * and #), like \"9\", got '9-'"),
        ("route[1].proxy", "must be a SIP URI like sip:trunk.example.net:5060, got 'trunk' (write it as 'sip:trunk')"),
    ]


def test_password_and_password_file_both(tmp_path: Path) -> None:
    text = profile_text().replace('password = "secret"', 'password = "secret"\npassword_file = "p"')
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "line[1].password_file"
    assert problem.message == "give either password or password_file, not both; keep password_file and delete password"


def test_password_and_password_file_neither(tmp_path: Path) -> None:
    text = profile_text().replace('password = "secret"\n', "")
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "line[1].password"
    assert problem.line == line_of(text, "[[line]]")
    assert problem.message.startswith('is missing; add password_file = "secrets/1001.pass"')


def test_unreadable_password_file(tmp_path: Path) -> None:
    text = profile_text().replace('password = "secret"', 'password_file = "secrets/1001.pass"')
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "line[1].password_file"
    assert problem.line == line_of(text, "password_file")
    missing = tmp_path / "secrets" / "1001.pass"
    assert problem.message == (
        f"cannot read {missing}: No such file or directory; create it with the password, readable by kiosk's user (chmod 640)"
    )


def test_password_file_that_is_a_directory_or_empty(tmp_path: Path) -> None:
    (tmp_path / "dir.pass").mkdir()
    (tmp_path / "empty.pass").write_text("\n")
    (tmp_path / "empty.pass").chmod(0o600)
    text = profile_text(lines=("1", "2"))
    text = text.replace('password = "secret"', 'password_file = "dir.pass"', 1).replace('password = "secret"', 'password_file = "empty.pass"')
    found = problems_of(write(tmp_path, text))
    assert [(p.key, p.message) for p in found] == [
        ("line[1].password_file", f"{tmp_path / 'dir.pass'} is a directory; name the file holding the password"),
        ("line[2].password_file", f"{tmp_path / 'empty.pass'} is empty; put the line's SIP password in it"),
    ]


def test_world_readable_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "1001.pass"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    text = profile_text().replace('password = "secret"', 'password_file = "1001.pass"')
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "line[1].password_file"
    assert problem.message == f"{secret} holds a password but every user on the unit can read it; run chmod 640 {secret}"


@pytest.mark.parametrize("placeholder", ["change-me", "change-me-1001"])
def test_world_readable_password_file_holding_the_example_placeholder_is_accepted(tmp_path: Path, placeholder: str) -> None:
    secret = tmp_path / "1001.pass"
    secret.write_text(placeholder + "\n")
    secret.chmod(0o644)
    text = profile_text().replace('password = "secret"', 'password_file = "1001.pass"')
    assert load_profile(write(tmp_path, text)).line("1001").password == placeholder


@pytest.mark.parametrize("almost", ["change-me-1001!", "change-me-", "Change-me-1001", "xchange-me"])
def test_only_the_exact_placeholder_is_let_through_world_readable(tmp_path: Path, almost: str) -> None:
    secret = tmp_path / "1001.pass"
    secret.write_text(almost)
    secret.chmod(0o644)
    text = profile_text().replace('password = "secret"', 'password_file = "1001.pass"')
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "line[1].password_file" and f"run chmod 640 {secret}" in problem.message


def test_world_readable_profile_holding_only_the_placeholder_is_accepted(tmp_path: Path) -> None:
    text = profile_text().replace('password = "secret"', 'password = "change-me-1001"')
    assert load_profile(write(tmp_path, text, mode=0o644)).line("1001").password == "change-me-1001"


def test_world_readable_profile_holding_a_password_is_reported_once(tmp_path: Path) -> None:
    text = profile_text(lines=("1001", "2001"))
    path = write(tmp_path, text, mode=0o644)
    problem = only_problem(path)
    assert problem.key == "line[1].password"
    assert problem.line == line_of(text, 'password = "secret"')
    assert problem.message == (
        f"the profile holds a password but every user on the unit can read it; run chmod 640 {path} "
        "(or move the password to a password_file)"
    )
    path.chmod(0o640)
    assert check_profile(path) == []


def test_language_must_be_ru_or_en(tmp_path: Path) -> None:
    text = profile_text().replace('language = "en"', 'language = "de"')
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "operator.language"
    assert problem.line == 3
    assert problem.message == "must be \"ru\" or \"en\", got 'de'"


def test_as_many_accounts_as_pjsua2_holds_is_accepted(tmp_path: Path) -> None:
    ids = tuple(str(1000 + i) for i in range(MAX_ACCOUNTS - 1))
    text = profile_text(lines=ids, routes=("trunk",)) + 'proxy = "sip:trunk.example.net"\n'
    assert load_profile(write(tmp_path, text)).accounts == MAX_ACCOUNTS


def test_more_accounts_than_pjsua2_holds(tmp_path: Path) -> None:
    ids = tuple(str(1000 + i) for i in range(MAX_ACCOUNTS - 1))  # 7 lines
    text = profile_text(lines=ids, routes=("a",)) + 'proxy = "sip:trunk-a.example.net"\n'
    text += ROUTE.format(id="b", line="1000") + 'proxy = "sip:trunk-b.example.net"\n'
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "route[2].proxy"  # the ninth account
    assert problem.line == line_of(text, "trunk-b")
    assert problem.message == (
        "this profile needs 9 SIP accounts (7 lines + 2 routes with their own proxy), "
        "but the SIP library here holds at most 8; remove lines, or proxies from routes, "
        "until lines + routes with a proxy is 8 or fewer"
    )


def test_more_lines_than_pjsua2_holds(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, profile_text(lines=tuple(str(i) for i in range(10)))))
    assert problem.key == "line[9]"
    assert "needs 10 SIP accounts (10 lines + 0 routes with their own proxy)" in problem.message


def test_duplicate_gpio_pins(tmp_path: Path) -> None:
    text = profile_text(tail="[gpio]\nhold = 17\nconnect = 27\nhangup = 17\n")
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "gpio.hangup"
    assert problem.line == line_of(text, "hangup")
    assert problem.message == "pin 17 is already used by gpio.hold; give each button and LED its own pin (e.g. 4 is free)"


def test_gpio_pin_out_of_range(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, profile_text(tail="[gpio]\nrecord = 28\n")))
    assert problem.key == "gpio.record"
    assert problem.message == "must be a whole number (a BCM GPIO number) from 0 to 27, like record = 17, got 28"


def test_audio_device_forms(tmp_path: Path) -> None:
    assert load_profile(write(tmp_path, profile_text(tail='[audio]\ndevice = "None"\n'))).audio.device is None
    assert load_profile(write(tmp_path, profile_text(tail='[audio]\ndevice = "USB"\n'))).audio.device == "USB"
    problem = only_problem(write(tmp_path, profile_text(tail="[audio]\ndevice = 1.5\n")))
    assert problem.key == "audio.device"
    assert problem.message == 'must be a device name like "USB Audio", an index like 2, or "none" for no local audio, got 1.5 (a decimal number)'


# --- files that are not profiles at all: one clear line, never a traceback ------------


def test_toml_syntax_error_is_one_problem_with_line_and_key(tmp_path: Path) -> None:
    text = profile_text().replace('name = "Anna"', "name = Anna")
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert (problem.key, problem.line) == ("operator.name", 2)
    assert problem.message == (
        'TOML syntax error: Invalid value (column 8); a value must be a "quoted string", '
        'a number, true/false or a [list], e.g. name = "Anna"'
    )
    assert check_profile(path) == [f"{path}:2: operator.name: {problem.message}"]


def test_key_set_twice_is_a_syntax_problem_on_its_line(tmp_path: Path) -> None:
    text = profile_text().replace('username = "1001"', 'username = "1001"\nusername = "1002"')
    problem = only_problem(write(tmp_path, text))
    assert (problem.key, problem.line) == ("line[1].username", line_of(text, '"1002"'))
    assert problem.message.endswith("this key is set twice in the same table; keep one")


def test_table_declared_twice(tmp_path: Path) -> None:
    text = profile_text() + "[sip]\n"
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "sip"
    assert problem.message.startswith("TOML syntax error: Cannot declare [sip] twice")


@pytest.mark.parametrize(
    ("content", "message", "line"),
    [
        (b"", "is empty; a profile needs at least one [[line]] (see kiosk/examples/profile.toml)", None),
        (b"\n  \n", "is empty; a profile needs at least one [[line]] (see kiosk/examples/profile.toml)", None),
        (b"\x7fELF\x02\x01\x01\x00\x00", "is a binary file, not TOML text; give the profile .toml file", 1),
        (b'[operator]\nname = "\xe9"\n', "is not UTF-8 text (byte 0xe9); save it as UTF-8", 2),
        (b"a = " + b"[" * 5000 + b"]" * 5000, "values are nested too deeply to read; a profile needs at most a list of strings", None),
    ],
)
def test_files_that_are_not_profiles(tmp_path: Path, content: bytes, message: str, line: int | None) -> None:
    path = tmp_path / "profile.toml"
    path.write_bytes(content)
    problem = only_problem(path)
    assert (problem.key, problem.line, problem.message) == ("", line, message)
    assert len(check_profile(path)) == 1


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert check_profile(path) == [
        f"{path}: no such file; give the path of the profile, e.g. /etc/kiosk/profile.toml (see kiosk/examples/profile.toml)"
    ]


def test_directory(tmp_path: Path) -> None:
    assert check_profile(tmp_path) == [f"{tmp_path}: is a directory; give the profile file itself, e.g. {tmp_path / 'profile.toml'}"]


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    assert check_profile(fifo) == [f"{fifo}: is not a regular file; give the path of a profile .toml file"]


def test_a_bom_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "profile.toml"
    path.write_bytes(b"\xef\xbb\xbf" + profile_text().encode())
    path.chmod(0o640)
    assert load_profile(path).operator.name == "Anna"


def test_profile_from_dict_refuses_a_non_table(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as info:
        profile_from_dict(["x"], tmp_path / "p.toml")  # type: ignore[arg-type]
    assert str(info.value) == f"{tmp_path / 'p.toml'}: a profile must be a table of sections, got ['x'] (a list)"


def test_a_password_of_the_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    text = profile_text().replace('password = "secret"', "password = 271828")
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "line[1].password"
    assert problem.message == 'must be a string like "s3cret", got a whole number; write it in quotes'
    assert "271828" not in str(problem)


def test_register_expires_is_read_and_range_checked(tmp_path) -> None:
    from kiosk.profile import ProfileError, load_profile

    base = '[[line]]\nid = "a"\nlabel = "A"\nuri = "sip:1@pbx"\nregistrar = "sip:pbx"\nusername = "1"\npassword = ""\n'
    good = tmp_path / "good.toml"
    good.write_text('[sip]\nregister_expires = 90\n' + base)
    good.chmod(0o600)
    assert load_profile(good).sip.register_expires == 90
    bad = tmp_path / "bad.toml"
    bad.write_text('[sip]\nregister_expires = 5\n' + base)
    bad.chmod(0o600)
    try:
        load_profile(bad)
    except ProfileError as exc:
        text = str(exc)
    else:
        raise AssertionError("register_expires = 5 was accepted")
    assert "sip.register_expires" in text and "from 30 to 3600" in text


def test_keepalive_seconds_defaults_to_15_and_0_turns_keepalives_off(tmp_path: Path) -> None:
    assert load_profile(write(tmp_path, profile_text())).sip.keepalive_seconds == 15
    off = HEAD + "keepalive_seconds = 0\n"
    assert load_profile(write(tmp_path, profile_text(head=off), "off.toml")).sip.keepalive_seconds == 0
    five = HEAD + "keepalive_seconds = 5\n"
    assert load_profile(write(tmp_path, profile_text(head=five), "five.toml")).sip.keepalive_seconds == 5


@pytest.mark.parametrize(("value", "message"), [
    ("3", "must be 0 (no keep-alives) or from 5 to 3600 seconds, like keepalive_seconds = 15, got 3 "
          "(each keep-alive waits 3 s for its answer)"),
    ("-1", "must be a whole number of seconds from 0 to 3600, like keepalive_seconds = 15, got -1"),
    ("4000", "must be a whole number of seconds from 0 to 3600, like keepalive_seconds = 15, got 4000"),
    ('"30"', "must be a whole number of seconds from 0 to 3600, like keepalive_seconds = 15, got '30'; "
             "write it without quotes"),
    ("true", "must be a whole number of seconds from 0 to 3600, like keepalive_seconds = 15, got true"),
])
def test_a_bad_keepalive_seconds_is_reported_with_the_right_form(tmp_path: Path, value: str, message: str) -> None:
    text = profile_text(head=HEAD + f"keepalive_seconds = {value}\n")
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "sip.keepalive_seconds"
    assert problem.line == line_of(text, "keepalive_seconds")
    assert problem.message == message


def test_keepalive_seconds_in_the_wrong_table_is_pointed_to_sip(tmp_path: Path) -> None:
    text = profile_text(tail="[recording]\nkeepalive_seconds = 20\n")
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "recording.keepalive_seconds"
    assert "belongs in [sip]" in problem.message


def test_rtp_timeout_seconds_defaults_to_60_and_0_turns_it_off(tmp_path: Path) -> None:
    assert load_profile(write(tmp_path, profile_text())).sip.rtp_timeout_seconds == 60
    off = HEAD + "rtp_timeout_seconds = 0\n"
    assert load_profile(write(tmp_path, profile_text(head=off), "off.toml")).sip.rtp_timeout_seconds == 0


@pytest.mark.parametrize(("value", "message"), [
    ("2", "must be 0 (never) or from 3 to 3600 seconds, like rtp_timeout_seconds = 60, got 2 "
          "(a shorter one could end calls in a moment of packet loss)"),
    ("-5", "must be a whole number of seconds from 0 to 3600, like rtp_timeout_seconds = 60, got -5"),
])
def test_a_bad_rtp_timeout_seconds_is_reported_with_the_right_form(tmp_path: Path, value: str, message: str) -> None:
    text = profile_text(head=HEAD + f"rtp_timeout_seconds = {value}\n")
    problem = only_problem(write(tmp_path, text))
    assert problem.key == "sip.rtp_timeout_seconds"
    assert problem.message == message
