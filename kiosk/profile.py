"""The provisioned profile: one TOML file parsed and validated once into typed objects.

Everything else in the unit reads these frozen dataclasses, never the raw TOML,
so a mistake in provisioning is caught here with a message that names the file,
the key and what would be right, instead of surfacing later as a SIP failure.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import ipaddress
import json
import os
import re
import ssl
import stat
import tomllib
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any



def _build_limits() -> tuple[int, int]:
    """(calls, accounts) the pjsua2 here was built with.

    A unit's own build (scripts/install-pi.sh) says them in the `pjsua2_build` module it
    installs beside the binding; PyPI's x86_64 wheel has pjsua's defaults, 4 calls and 8
    accounts (it aborts the process on the 9th Account.create()). Read without importing
    pjsua2, so that check-profile stays fast.
    """
    try:
        import pjsua2_build  # type: ignore[import-not-found]

        return int(pjsua2_build.MAX_CALLS), int(pjsua2_build.MAX_ACCOUNTS)
    except (ImportError, AttributeError, ValueError, TypeError):
        return 4, 8


#: PJSUA_MAX_CALLS and PJSUA_MAX_ACC of the build: one call more is refused, one account more aborts.
MAX_CALLS, MAX_ACCOUNTS = _build_limits()
#: The shortest `[sip] rtp_timeout_seconds` (besides 0): RTCP reports come every 5 s or so.
MIN_RTP_TIMEOUT_S = 3
#: The shortest `[sip] keepalive_seconds` (besides 0): a keep-alive waits 3 s for its answer.
MIN_KEEPALIVE_S = 5


@dataclass(frozen=True)
class Operator:
    name: str = "Operator"
    language: str = "en"  # "ru" | "en"


@dataclass(frozen=True)
class Sip:
    listen: str = "127.0.0.1:5070"  # IPv4 host:port for UDP and TCP (IPv6 is refused, see _IPV4_ONLY)
    trusted: tuple[str, ...] = ("127.0.0.1",)
    user_agent: str = "kiosk"
    #: REGISTER expiry (a server that restarted and lost its registrations
    #: learns of this unit again through the keep-alives, long before this).
    register_expires: int = 300
    default_route: str | None = None
    #: OPTIONS to each line's server this often at most: an unreachable server
    #: shows as unregistered within it, and a server that forgot the line has it
    #: registered again within it. 0: no keep-alives.
    keepalive_seconds: int = 15
    #: A call in conversation that receives no RTP and no RTCP for this long is hung
    #: up (the far end crashed or lost its network). 0: never.
    rtp_timeout_seconds: int = 60
    #: Hosts whose P-Asserted-Identity names the caller and whose intercom requests are honoured;
    #: () means the servers of the lines (their registrars and proxies): Profile.identity_hosts().
    identity_hosts: tuple[str, ...] = ()

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True)
class Line:
    id: str
    label: str
    uri: str  # sip:1001@example.org
    registrar: str  # sip:example.org:5060
    username: str
    password: str = field(default="", repr=False)
    proxy: str | None = None  # sip:host:port (outbound proxy)
    #: How the keypad's digits reach the far end in a call: RFC 4733 telephone-events in the
    #: RTP stream, or SIP INFO (application/dtmf-relay) for a PBX that wants them in signalling.
    dtmf: str = "rfc4733"
    #: Answer this line's calls by itself after auto_answer_delay_ms, with a short beep in the ear.
    auto_answer: bool = False
    auto_answer_delay_ms: int = 1000
    #: Honour an intercom request (Call-Info answer-after, Alert-Info auto-answer) from an identity host.
    intercom: bool = False

    @property
    def domain(self) -> str:
        """The host part of the line's URI: where bare numbers are dialled."""
        rest = self.uri.split(":", 1)[1]
        return rest.split("@", 1)[-1].split(";", 1)[0]


@dataclass(frozen=True)
class Route:
    id: str
    label: str
    line: str
    prefix: str = ""
    proxy: str | None = None  # sip:host:port of a trunk; calls go there directly


@dataclass(frozen=True)
class Recording:
    always: bool = False
    directory: Path = Path("/var/lib/kiosk/recordings")
    min_free_mb: int = 50
    max_age_days: int | None = None
    max_total_mb: int | None = None


@dataclass(frozen=True)
class Pickup:
    prefix: str = "*8"


@dataclass(frozen=True)
class Control:
    socket: Path = Path("/run/kiosk/control.sock")


#: The ring patterns a profile may name (kiosk.tones holds their cadences).
RING_PATTERNS = ("standard", "double", "short")


@dataclass(frozen=True)
class Audio:
    device: str | int | None = None  # None / "none": no local audio (null device)
    #: Where an incoming call rings when nothing is in conversation (a speaker); None: on `device`.
    ring_device: str | int | None = None
    ring_pattern: str = "standard"
    ring_level: int = 70  # percent of full scale


#: What a call refused for do-not-disturb is told: Busy Here, Temporarily Unavailable or Decline.
DND_CODES = (486, 480, 603)


@dataclass(frozen=True)
class Dnd:
    code: int = 486


@dataclass(frozen=True)
class History:
    """The call history (kiosk.history): where, and how long calls are kept."""

    path: Path | None = None  # None: history.db in the unit's state directory
    max_age_days: int = 365  # 0: no limit
    max_calls: int = 100_000  # 0: no limit


@dataclass(frozen=True)
class Directory:
    """Where names come from (kiosk.directory): a provisioned file, and the company's LDAP."""

    file: Path | None = None  # a CSV with a header line, or a vCard (.vcf) file
    ldap: str | None = None  # ldap://host:389 or ldaps://host:636
    ldap_base: str = ""
    ldap_bind_dn: str | None = None
    ldap_password_file: Path | None = None
    ldap_password: str = field(default="", repr=False)
    ldap_timeout_seconds: int = 3
    ldap_filter: str = "(|(cn=*{q}*)(sn=*{q}*)(telephoneNumber=*{q}*)(mobile=*{q}*)(ipPhone=*{q}*))"
    ldap_name_attr: str = "cn"
    ldap_number_attrs: tuple[str, ...] = ("telephoneNumber", "mobile", "ipPhone")


@dataclass(frozen=True)
class Gpio:
    hold: int | None = None
    connect: int | None = None
    transfer: int | None = None
    conference: int | None = None
    record: int | None = None
    answer: int | None = None
    hangup: int | None = None
    led_ringing: int | None = None
    led_recording: int | None = None
    dnd: int | None = None
    led_dnd: int | None = None


#: The placeholders a provisioning URL may hold, with the sample values its check fills in.
PROVISIONING_PLACEHOLDERS = {"mac": "001122aabbcc", "hostname": "desk-01"}


@dataclass(frozen=True)
class Provisioning:
    """Where and how often the unit fetches its profile (see kiosk.provisioning).

    The token and the basic-auth password are read from their files when the
    profile is loaded, like the lines' passwords, and never shown (repr=False).
    """

    url: str  # https://prov.example.org/kiosk/{mac}.toml: the {mac} and {hostname} placeholders filled per unit
    interval_minutes: int = 60
    timeout_seconds: int = 10
    ca_file: Path | None = None  # None: the system's certificate store
    token_file: Path | None = None
    token: str = field(default="", repr=False)  # "Authorization: Bearer <token>"
    username: str | None = None  # basic auth, with the password of password_file
    password_file: Path | None = None
    password: str = field(default="", repr=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values that must never reach a log line."""
        return tuple(v for v in (self.token, self.password) if v)


@dataclass(frozen=True)
class Profile:
    path: Path
    operator: Operator
    sip: Sip
    lines: tuple[Line, ...]
    routes: tuple[Route, ...]
    recording: Recording = Recording()
    pickup: Pickup = Pickup()
    control: Control = Control()
    audio: Audio = Audio()
    gpio: Gpio = Gpio()
    provisioning: Provisioning | None = None
    dnd: Dnd = Dnd()
    history: History = History()
    directory: Directory = Directory()

    def line(self, line_id: str) -> Line:
        for line in self.lines:
            if line.id == line_id:
                return line
        raise KeyError(line_id)

    def route(self, route_id: str) -> Route:
        for route in self.routes:
            if route.id == route_id:
                return route
        raise KeyError(route_id)

    def identity_hosts(self) -> tuple[str, ...]:
        """The hosts trusted to assert who calls (P-Asserted-Identity) and to ask for intercom answer:
        `[sip] identity_hosts`, else the host of every line's registrar and proxy."""
        if self.sip.identity_hosts:
            return self.sip.identity_hosts
        hosts: list[str] = []
        for line in self.lines:
            for uri in (line.registrar, line.proxy):
                if uri:
                    host = _server_host(uri)
                    if host and host not in hosts:
                        hosts.append(host)
        return tuple(hosts)

    @property
    def accounts(self) -> int:
        """How many pjsua2 accounts this profile needs (see `accounts_needed`)."""
        return accounts_needed(self.lines, self.routes)


# --- loading and validation ------------------------------------------------
#
# The profile is checked in one pass that never stops at the first mistake: a
# provisioning engineer fixing a file on a desk unit should see every problem at
# once, each as one line naming the file, the line, the key, what is wrong and
# what would be right. Entries of [[line]] and [[route]] are counted from 1 in
# the order they appear in the file (line[1] is the first [[line]]), because the
# person reading the message counts them that way.

#: A profile is a few kilobytes; anything much larger is the wrong file, and
#: reading it whole could take the unit's memory.
MAX_PROFILE_BYTES = 1 << 20

#: BCM GPIO numbers of the 40-pin header (Raspberry Pi and compatible boards).
GPIO_PINS = range(28)
#: Pins with no second role on a Pi (0-1 are the HAT EEPROM, 2-3 I2C, 7-11 SPI,
#: 14-15 the UART): the ones worth suggesting when a pin is taken.
_PLAIN_PINS = (4, 5, 6, 12, 13, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27)

LANGUAGES = ("ru", "en")

_EXAMPLE = "kiosk/examples/profile.toml"


@dataclass(frozen=True)
class Problem:
    """One mistake in a profile, printable as one line for the provisioning console."""

    file: Path
    key: str  # "line[1].registrar"; "" when the problem is the whole file
    line: int | None  # 1-based line in the file, when it could be found
    message: str  # what is wrong and what would be right

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        text = f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"
        return _one_line(text)


def _one_line(text: str) -> str:
    """`text` with control characters escaped: one problem must print as one line,
    whatever odd characters the file (or its name) holds."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ProfileError(Exception):
    """The profile cannot be used; `problems` lists every mistake found, in file order."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def accounts_needed(lines: Iterable[Line], routes: Iterable[Route]) -> int:
    """pjsua2 accounts a profile needs: one per line, plus one per route with its own proxy.

    A trunk route sends its calls straight to its proxy, which pjsua2 can only
    do through an account of its own; the pjsua2 build aborts the whole process
    on account number MAX_ACCOUNTS + 1, so this count is checked at load time.
    """
    return len(tuple(lines)) + sum(1 for r in routes if r.proxy)


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read, parse and validate a profile file; raise ProfileError listing every problem.

    Never raises anything else for a bad file (missing, a directory, binary,
    empty, bad TOML): the unit must keep running on its last good profile, and
    `kiosk check-profile` must print a message rather than a traceback.
    """
    path = Path(path)
    text, mode = _read_profile_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError([_syntax_problem(path, text, str(e))]) from None
    except RecursionError:
        raise ProfileError(
            [Problem(path, "", None, "values are nested too deeply to read; a profile needs at most a list of strings")]
        ) from None
    return _Builder(path, text, world_readable=bool(mode & 0o004)).build(data)


def profile_from_dict(data: Mapping[str, Any], path: str | os.PathLike[str]) -> Profile:
    """Validate already-parsed profile data, as if it had been read from `path`.

    For tests and the demo, which build profiles in code. `path` names the
    profile in messages and anchors relative paths (password_file, recording
    directory, control socket); the file itself is not read, so its mode is not
    checked, but password files are read and checked as usual.
    """
    path = Path(path)
    if not isinstance(data, Mapping):
        raise ProfileError([Problem(path, "", None, f"a profile must be a table of sections, got {_show(data)}")])
    return _Builder(path, None, world_readable=False).build(data)


def check_profile(path: str | os.PathLike[str]) -> list[str]:
    """The problems of a profile file as printable lines; an empty list means it is good."""
    try:
        load_profile(path)
    except ProfileError as e:
        return [str(p) for p in e.problems]
    except Exception as e:  # noqa: BLE001 - a bug here must still not print a traceback to the installer
        return [_one_line(f"{path}: could not check the profile (internal error {type(e).__name__}: {e}); please report this")]
    return []


# --- reading the file --------------------------------------------------------


def _read_profile_text(path: Path) -> tuple[str, int]:
    """The file's text and mode, or ProfileError with one problem saying why it cannot be read."""

    def fail(message: str, line: int | None = None) -> ProfileError:
        return ProfileError([Problem(path, "", line, message)])

    try:
        st = path.stat()
    except FileNotFoundError:
        raise fail(f"no such file; give the path of the profile, e.g. /etc/kiosk/profile.toml (see {_EXAMPLE})") from None
    except PermissionError:
        raise fail("cannot read it: permission denied; make it readable by kiosk's user or group, e.g. chmod 640 and chgrp to kiosk's group") from None
    except (OSError, ValueError) as e:  # ValueError: a path with a NUL byte
        raise fail(f"cannot read it: {_os_reason(e)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise fail(f"is a directory; give the profile file itself, e.g. {path / 'profile.toml'}")
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or device would block or never end; a profile is an ordinary file.
        raise fail("is not a regular file; give the path of a profile .toml file")
    if st.st_size > MAX_PROFILE_BYTES:
        raise fail(f"is {st.st_size} bytes, far too big for a profile (at most {MAX_PROFILE_BYTES}); is it the right file?")
    try:
        raw = path.read_bytes()
    except PermissionError:
        raise fail("cannot read it: permission denied; make it readable by kiosk's user or group, e.g. chmod 640 and chgrp to kiosk's group") from None
    except OSError as e:
        raise fail(f"cannot read it: {_os_reason(e)}") from None
    if not raw.strip():
        raise fail(f"is empty; a profile needs at least one [[line]] (see {_EXAMPLE})")
    if b"\0" in raw:
        at = raw.index(b"\0")
        raise fail("is a binary file, not TOML text; give the profile .toml file", raw[:at].count(b"\n") + 1)
    try:
        text = raw.decode("utf-8-sig")  # tolerate the BOM some Windows editors write
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise fail(f"is not UTF-8 text (byte 0x{raw[e.start]:02x}); save it as UTF-8", line) from None
    return text, st.st_mode


def _os_reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e)


_TOML_HINTS = {
    "Invalid value": 'a value must be a "quoted string", a number, true/false or a [list], e.g. name = "Anna"',
    "Cannot overwrite a value": "this key is set twice in the same table; keep one",
    "Cannot declare": "this [table] header appears twice; merge the two, or write [[name]] for a list of tables",
    "Illegal character": 'a string is not closed on this line; add the closing "',
    "Unterminated string": 'a string is never closed; add the closing " (the error is above the end of the file)',
    "Expected newline or end of document after a statement": "put each key = value on a line of its own",
    "Expected ']' at the end of a table declaration": "close the table header, e.g. [sip]",
    "Expected ']]' at the end of an array declaration": "close the header, e.g. [[line]]",
    "Unclosed array": "a [list] is never closed; add the closing ]",
    "Invalid statement": "each line must be a [table] header, a key = value pair or a # comment",
    "Invalid initial character for a key part": "a key is letters, digits, - and _, e.g. user_agent",
    "Expected '=' after a key in a key/value pair": "write key = value",
}

_AT_RE = re.compile(r"\s*\((?:at line (\d+), column (\d+)|at end of document)\)\s*$")


def _syntax_problem(path: Path, text: str, error: str) -> Problem:
    """Turn tomllib's message into one Problem with the line, the key there, and a hint.

    Python 3.11's TOMLDecodeError has no line attributes, only "(at line L,
    column C)" at the end of its message, so that is parsed out.
    """
    m = _AT_RE.search(error)
    what = error[: m.start()] if m else error
    # tomllib names tables as Python tuples: "Cannot declare ('sip',) twice".
    what = re.sub(
        r"\(((?:'[^']*',?\s*)+)\)",
        lambda t: "[" + ".".join(re.findall(r"'([^']*)'", t.group(1))) + "]",
        what,
    )
    line: int | None = None
    if m and m.group(1):
        line = int(m.group(1))
        where = f" (column {m.group(2)})"
    elif m:
        line = max(1, len(text.splitlines()))
        where = " (at the end of the file)"
    else:
        where = ""
    hint = next((h for prefix, h in _TOML_HINTS.items() if what.startswith(prefix)), "")
    message = f"TOML syntax error: {what}{where}" + (f"; {hint}" if hint else "")
    key = _Locator(text).key_at(line) if line else ""
    return Problem(path, key, line, message)


class _Locator:
    """Best-effort map from a key path ("line[2].uri") to its line in the raw text.

    tomllib returns plain dicts without positions, so the text is scanned for
    table headers and `key =` lines. It can be fooled by unusual layouts (inline
    tables, keys inside multi-line strings); then a message carries the line of
    the nearest enclosing table, or no line at all, which is still correct.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]#]+?)\s*\]\]?\s*(?:#.*)?$")
    _PART = r"""(?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*')"""
    _KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")

    def __init__(self, text: str | None) -> None:
        self.where: dict[str, int] = {}
        self.tables: list[tuple[int, str]] = []  # (line, path) of each header, in order
        self._keys: dict[int, str] = {}
        if text is None:
            return
        counts: dict[str, int] = {}
        current = ""
        in_multiline: str | None = None
        for n, raw in enumerate(text.splitlines(), start=1):
            if in_multiline:
                if raw.count(in_multiline) % 2 == 1:
                    in_multiline = None
                continue
            header = self._HEADER.match(raw)
            if header:
                name = ".".join(self._split(header.group(2)))
                if header.group(1) == "[[":
                    counts[name] = counts.get(name, 0) + 1
                    self.where.setdefault(name, n)
                    current = f"{name}[{counts[name]}]"
                else:
                    current = name
                self.where.setdefault(current, n)
                self.tables.append((n, current))
                continue
            key = self._KEY.match(raw)
            if key:
                full = ".".join(filter(None, [current, *self._split(key.group(1))]))
                self._keys[n] = full
                parts = full.split(".")
                for i in range(1, len(parts) + 1):
                    self.where.setdefault(".".join(parts[:i]), n)
            for quote in ('"""', "'''"):
                if raw.count(quote) % 2 == 1:
                    in_multiline = quote
                    break

    @staticmethod
    def _split(dotted: str) -> list[str]:
        parts = re.findall(r""""[^"]*"|'[^']*'|[^.\s]+""", dotted)
        return [p[1:-1] if p[:1] in "\"'" else p for p in parts]

    def find(self, key: str) -> int | None:
        """The line of `key`, else of the nearest enclosing table or array entry."""
        if not key:
            return None
        candidates = [key]
        plain = re.sub(r"\[\d+\]", "", key)  # [line] written as a single table
        while True:
            parent = re.sub(r"(\.[^.\[\]]+|\[\d+\])$", "", candidates[-1])
            if parent == candidates[-1] or not parent:
                break
            candidates.append(parent)
        if plain != key:
            candidates.insert(1, plain)
        for c in candidates:
            if c in self.where:
                return self.where[c]
        return None

    def key_at(self, line: int) -> str:
        """The key path written on `line`, or the table it lies in (for syntax errors)."""
        if line in self._keys:
            return self._keys[line]
        table = ""
        for n, path in self.tables:
            if n > line:
                break
            table = path
        return table


# --- describing values -------------------------------------------------------


def _kind(value: Any) -> str:
    """The TOML name of a value's type, in the words of the person editing the file."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (_dt.date, _dt.time)):
        return "a date/time"
    return type(value).__name__


def _show(value: Any) -> str:
    """A short rendering of a bad value for a message: its text and, if not a string, its type."""
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 70 else text[:60] + "...'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a table"
    text = repr(value)
    if len(text) > 60:
        text = text[:50] + "..."
    return f"{text} ({_kind(value)})"


def _toml_str(value: str) -> str:
    """`value` as a TOML basic string, for "write it like this" hints (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def _nearest(word: str, choices: Iterable[str]) -> str | None:
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return lowered[word.lower()]
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _one_of(items: Iterable[str]) -> str:
    """ "use 'a'" or "use one of 'a', 'b'": the right values, for a message."""
    items = list(items)
    return f"use {items[0]!r}" if len(items) == 1 else "use one of " + ", ".join(repr(i) for i in items)


# --- SIP addresses -------------------------------------------------------------

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_USER = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,?/%]+")
_PARAM = re.compile(r"[A-Za-z0-9\-_.!~*'()%]+(?:=[A-Za-z0-9\-_.!~*'()%\[\]:]+)?")
_DIALS = re.compile(r"[0-9*#]*")


def _host_problem(host: str, *, brackets: bool) -> str | None:
    """Why `host` is not a host name, IPv4 address or IPv6 address, or None if it is one.

    With `brackets`, IPv6 must be written [::1] (as in a URI or host:port);
    without, it is written bare (as in the trusted list).
    """
    if not host:
        return "the host is missing"
    if host.startswith("["):
        if not brackets or not host.endswith("]"):
            return f"{host!r} is not a valid address"
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host[1:-1]!r} is not an IPv6 address"
        return None
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} is not an IPv4 address"
        return None
    if ":" in host:
        if brackets:
            return "write an IPv6 address in brackets, e.g. [2001:db8::1]"
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} is not a host name or IP address (no port here)"
        return None
    if not _HOSTNAME.fullmatch(host):
        return f"{host!r} is not a host name"
    return None


def _port_problem(port: str) -> str | None:
    if not port.isdigit() or not port.isascii():
        return f"port {port!r} is not a number"
    if not 1 <= int(port) <= 65535:
        return f"port {port} is outside 1-65535"
    return None


def _split_hostport(hostport: str) -> tuple[str, str | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end != -1 and hostport[end + 1 : end + 2] == ":":
            return hostport[: end + 1], hostport[end + 2 :]
        return hostport, None
    if hostport.count(":") == 1:
        host, port = hostport.split(":")
        return host, port
    return hostport, None


def _sip_uri_problem(value: str, *, user: bool) -> str | None:
    """Why `value` is not a sip: URI of the wanted shape, or None when it is fine.

    `user=True` wants sip:user@host (an address of record); `user=False` wants
    sip:host (a server: registrar or proxy). Only plain sip: is accepted because
    the unit listens on UDP and TCP only; a sips: URI would fail at call time.
    """
    if value != value.strip() or any(c.isspace() for c in value):
        return "it contains spaces"
    if value.startswith("<"):
        return "write it without < >"
    if value.lower().startswith("sips:"):
        return "sips: (TLS) is not supported, the unit speaks SIP over UDP and TCP"
    if not value.lower().startswith("sip:"):
        return "it does not start with sip:"
    rest = value[4:]
    if "?" in rest:
        return "headers (?...) are not allowed here"
    main, _, params = rest.partition(";")
    userpart, at, hostport = main.rpartition("@")
    if user and not at:
        return "the user part (user@) is missing"
    if user and not _USER.fullmatch(userpart):
        return f"user part {userpart!r} is not valid"
    if not user and at:
        return "a server address takes no user@ part"
    host, port = _split_hostport(hostport)
    reason = _host_problem(host, brackets=True)
    if reason:
        return reason
    if port is not None:
        reason = _port_problem(port)
        if reason:
            return reason
    for param in filter(None, params.split(";")) if params else ():
        if not _PARAM.fullmatch(param):
            return f"parameter {param!r} is not valid"
    if params == "" and value.endswith(";"):
        return "it ends with a stray ;"
    return None


def _listen_problem(value: str) -> str | None:
    host, port = _split_hostport(value)
    if port is None:
        return "the :port is missing"
    return _host_problem(host, brackets=True) or _port_problem(port)


#: The agent creates IPv4 UDP and TCP transports only: pjsua2 cannot bind them to
#: an IPv6 listen address (PJ_ERESOLVE, the unit does not start), sends nothing to
#: an IPv6 registrar or proxy (PJSIP_EUNSUPTRANSPORT: the line silently never
#: registers), and no request ever arrives from an IPv6 address. So IPv6 is
#: refused here, where the message can say so, rather than failing at run time.
_IPV4_ONLY = "IPv6 addresses are not supported yet: this unit listens on IPv4 only"


def _ipv6(host: str) -> ipaddress.IPv6Address | None:
    """The IPv6 address `host` is, written [::1] or ::1; None for a host name or IPv4 address."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.IPv6Address(host)
    except ValueError:
        return None


def _ipv4_for(address: ipaddress.IPv6Address) -> str:
    """The IPv4 address to suggest instead of `address`: its own for ::ffff:a.b.c.d, else the like of it."""
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    if address.is_loopback:
        return "127.0.0.1"
    return "0.0.0.0" if address.is_unspecified else "10.0.0.5"


def _listen_ipv6_problem(value: str) -> str | None:
    """The message for an IPv6 listen address ([::1]:5070, or unbracketed ::1), or None for another one."""
    host, port = _split_hostport(value)
    address = _ipv6(host)
    if address is None:
        return None
    if port is None or _port_problem(port):
        port = "5060"
    if address.is_loopback or address.is_unspecified or address.ipv4_mapped:
        like = f"{_ipv4_for(address)}:{port}"
    else:
        like = f"0.0.0.0:{port} (every interface)"
    return f"{_IPV4_ONLY}; use an IPv4 address such as {like}, got {_show(value)}"


def _server_host(uri: str) -> str:
    """The host of a server URI that `_sip_uri_problem` accepted (sip:host[:port][;params])."""
    hostport = uri[4:].partition(";")[0].rpartition("@")[2]
    return _split_hostport(hostport)[0]


# --- the builder ----------------------------------------------------------------

_SECTIONS = {
    "operator": ("name", "language"),
    "sip": ("listen", "trusted", "user_agent", "default_route", "register_expires", "keepalive_seconds",
            "rtp_timeout_seconds", "identity_hosts"),
    "line": ("id", "label", "uri", "registrar", "username", "password", "password_file", "proxy", "dtmf",
             "auto_answer", "auto_answer_delay_ms", "intercom"),
    "route": ("id", "label", "line", "prefix", "proxy"),
    "recording": ("always", "directory", "min_free_mb", "max_age_days", "max_total_mb"),
    "pickup": ("prefix",),
    "control": ("socket",),
    "audio": ("device", "ring_device", "ring_pattern", "ring_level"),
    "gpio": (
        "hold", "connect", "transfer", "conference", "record",
        "answer", "hangup", "dnd", "led_ringing", "led_recording", "led_dnd",
    ),
    "dnd": ("code",),
    "history": ("path", "max_age_days", "max_calls"),
    "directory": ("file", "ldap", "ldap_base", "ldap_bind_dn", "ldap_password_file", "ldap_timeout_seconds",
                  "ldap_filter", "ldap_name_attr", "ldap_number_attrs"),
    "provisioning": ("url", "interval_minutes", "timeout_seconds", "ca_file", "token_file", "username",
                     "password_file"),
}
_ARRAYS = ("line", "route")

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

#: Returned by a getter when the value is missing or bad: the problem is already
#: recorded and the caller goes on checking with a placeholder.
_BAD: Any = object()


class _Builder:
    """Checks parsed TOML section by section, recording every problem, then builds the Profile."""

    def __init__(self, path: Path, text: str | None, *, world_readable: bool) -> None:
        self.path = path
        self.base = path.absolute().parent  # relative paths in the profile are relative to its directory
        self.locator = _Locator(text)
        self.world_readable = world_readable
        self.problems: list[Problem] = []
        self.suggested: set[str] = set()  # sections offered as "did you mean", so not also reported missing
        self.warned_mode = False  # the world-readable profile is reported once, not per line
        # "line[2]" / "route[3]" of each Line / Route built, for messages after the fact
        self.line_keys: list[str] = []
        self.route_keys: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.path, key, self.locator.find(key), message))

    # -- generic getters --

    def unknown_keys(self, table: Mapping[str, Any], prefix: str, known: tuple[str, ...]) -> None:
        for name in table:
            if name in known:
                continue
            key = f"{prefix}.{name}"
            elsewhere = [s for s, keys in _SECTIONS.items() if name in keys and s != prefix.split("[")[0]]
            near = _nearest(name, known)
            if elsewhere:  # an exact key of another section beats a fuzzy match here
                hint = f"{name!r} belongs in {_header(elsewhere[0])}"
            elif near:
                hint = f"did you mean {near!r}?"
            else:
                hint = f"the keys here are {', '.join(known)}"
            self.problem(key, f"unknown key; {hint}")

    def text(
        self, table: Mapping[str, Any], prefix: str, name: str, example: str, *, required: bool = False,
        default: Any = None, empty_ok: bool = False, secret: bool = False,
    ) -> Any:
        """A string value; `example` is how a right value looks, used in every message.

        With `secret`, a wrong value is described by its type only: check-profile
        output ends up in logs and tickets, and must never carry a password.
        """
        key = f"{prefix}.{name}"
        if name not in table:
            if required:
                self.problem(key, f"is missing; add {name} = {example}")
                return _BAD
            return default
        value = table[name]
        if not isinstance(value, str):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if secret:
                got, hint = _kind(value), "; write it in quotes" if number else ""
            else:
                got, hint = _show(value), f'; write it in quotes: {name} = "{value}"' if number else ""
            self.problem(key, f"must be a string like {example}, got {got}{hint}")
            return _BAD
        if not value.strip() and not empty_ok:
            self.problem(key, f"must not be empty; write e.g. {name} = {example}")
            return _BAD
        if not value.isprintable():
            self.problem(key, f"must be printable text without tabs or line breaks, like {example}")
            return _BAD
        return value

    def integer(
        self, table: Mapping[str, Any], prefix: str, name: str, example: str, *, lo: int, hi: int | None = None,
        default: Any = None, unit: str = "",
    ) -> Any:
        key = f"{prefix}.{name}"
        if name not in table:
            return default
        value = table[name]
        span = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
        if isinstance(value, bool) or not isinstance(value, int):
            hint = "; write it without quotes" if isinstance(value, str) and value.strip().isdigit() else ""
            self.problem(key, f"must be a whole number{unit} {span}, like {name} = {example}, got {_show(value)}{hint}")
            return _BAD
        if value < lo or (hi is not None and value > hi):
            self.problem(key, f"must be a whole number{unit} {span}, like {name} = {example}, got {value}")
            return _BAD
        return value

    def boolean(self, table: Mapping[str, Any], prefix: str, name: str, *, default: bool) -> bool:
        if name not in table:
            return default
        value = table[name]
        if not isinstance(value, bool):
            hint = " (without quotes)" if isinstance(value, str) and value.lower() in ("true", "false") else ""
            self.problem(f"{prefix}.{name}", f"must be true or false{hint}, got {_show(value)}")
            return default
        return value

    def path_value(self, table: Mapping[str, Any], prefix: str, name: str, example: str, default: Path) -> Path:
        value = self.text(table, prefix, name, example)
        if value is None or value is _BAD:
            return default
        return Path(self.base, value)  # an absolute value replaces the base

    def table(self, data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
        value = data.get(name, {})
        if isinstance(value, list):
            self.problem(name, f"must be a single table written [{name}], not [[{name}]]")
            return {}
        if not isinstance(value, Mapping):
            self.problem(name, f"must be a table: write [{name}] on a line of its own with its keys below it, got {_show(value)}")
            return {}
        self.unknown_keys(value, name, _SECTIONS[name])
        return value

    def array(self, data: Mapping[str, Any], name: str) -> list[tuple[str, Mapping[str, Any]]]:
        """The entries of [[name]] as (key prefix, table) pairs, counted from 1."""
        value = data.get(name, [])
        if isinstance(value, Mapping):
            self.problem(name, f"must be written [[{name}]] (double brackets), one header per entry")
            value = [value]
        elif not isinstance(value, list):
            self.problem(name, f"must be a list of tables, each starting with a [[{name}]] header, got {_show(value)}")
            return []
        entries = []
        for i, entry in enumerate(value, start=1):
            prefix = f"{name}[{i}]"
            if not isinstance(entry, Mapping):
                self.problem(prefix, f"must be a table of keys under a [[{name}]] header, got {_show(entry)}")
                continue
            self.unknown_keys(entry, prefix, _SECTIONS[name])
            entries.append((prefix, entry))
        return entries

    def ident(self, entry: Mapping[str, Any], prefix: str, example: str) -> Any:
        value = self.text(entry, prefix, "id", f'"{example}"', required=True)
        if value is not _BAD and not _ID.fullmatch(value):
            self.problem(
                f"{prefix}.id",
                f'must be a short name of letters, digits, "-", "_" or ".", like "{example}", got {_show(value)}',
            )
            return _BAD
        return value

    def sip_uri(self, table: Mapping[str, Any], prefix: str, name: str, example: str, *, user: bool, required: bool) -> Any:
        value = self.text(table, prefix, name, f'"{example}"', required=required)
        if value is None or value is _BAD:
            return value
        reason = _sip_uri_problem(value, user=user)
        if reason and not value.lower().startswith(("sip", "<")) and not _sip_uri_problem(f"sip:{value}", user=user):
            reason = f"write it as 'sip:{value}'"
        if reason:
            self.problem(f"{prefix}.{name}", f"must be a SIP URI like {example}, got {_show(value)} ({reason})")
            return _BAD
        if not user and _ipv6(_server_host(value)) is not None:
            # A line's own uri may name an IPv6 domain: its requests go through its registrar or proxy.
            self.problem(f"{prefix}.{name}", f"{_IPV4_ONLY}, so it cannot reach a server at an IPv6 address; "
                                             f"use the server's IPv4 address or host name, like {example}, got {_show(value)}")
            return _BAD
        return value

    # -- sections --

    def build(self, data: Mapping[str, Any]) -> Profile:
        for name, value in data.items():
            if name in _SECTIONS:
                continue
            near = _nearest(name, _SECTIONS)
            home = [s for s, keys in _SECTIONS.items() if name in keys]
            kind = "table" if isinstance(value, (Mapping, list)) else "key"
            if home and kind == "key":  # e.g. listen = ... written above any [table] header
                hint = f"{name!r} belongs in {_header(home[0])}: move it below that header"
            elif near:
                self.suggested.add(near)
                hint = f"did you mean {_header(near)}?"
            else:
                hint = "the tables are " + ", ".join(_header(s) for s in _SECTIONS)
            self.problem(name, f"unknown {kind}; {hint}")

        operator = self.operator(self.table(data, "operator"))
        lines = self.lines(self.array(data, "line"))
        routes = self.routes(self.array(data, "route"), lines)
        sip = self.sip(self.table(data, "sip"), routes)
        self.accounts(lines, routes)
        recording = self.recording(self.table(data, "recording"))
        pickup = self.pickup(self.table(data, "pickup"))
        control = Control(self.path_value(self.table(data, "control"), "control", "socket", '"/run/kiosk/control.sock"', Control.socket))
        audio = self.audio(self.table(data, "audio"))
        gpio = self.gpio(self.table(data, "gpio"))
        provisioning = self.provisioning(data)
        dnd = self.dnd(self.table(data, "dnd"))
        history = self.history(self.table(data, "history"))
        directory = self.directory(self.table(data, "directory"))

        if self.problems:
            self.problems.sort(key=lambda p: (p.line is None, p.line or 0))
            raise ProfileError(self.problems)
        return Profile(
            path=self.path, operator=operator, sip=sip, lines=tuple(lines), routes=tuple(routes),
            recording=recording, pickup=pickup, control=control, audio=audio, gpio=gpio,
            provisioning=provisioning, dnd=dnd, history=history, directory=directory,
        )

    def operator(self, t: Mapping[str, Any]) -> Operator:
        name = self.text(t, "operator", "name", '"Anna Petrova"', default=Operator.name)
        language = self.text(t, "operator", "language", '"ru"', default=Operator.language)
        if language is not _BAD and language not in LANGUAGES:
            self.problem("operator.language", f'must be "ru" or "en", got {_show(language)}')
            language = _BAD
        return Operator(
            name=Operator.name if name is _BAD else name,
            language=Operator.language if language is _BAD else language,
        )

    def sip(self, t: Mapping[str, Any], routes: list[Route]) -> Sip:
        listen = self.text(t, "sip", "listen", '"0.0.0.0:5060"', default=Sip.listen)
        if listen is not _BAD:
            ipv6 = _listen_ipv6_problem(listen)
            reason = None if ipv6 else _listen_problem(listen)
            if ipv6:
                self.problem("sip.listen", ipv6)
                listen = _BAD
            elif reason:
                self.problem(
                    "sip.listen",
                    f"must be host:port with a port from 1 to 65535, like 0.0.0.0:5060, got {_show(listen)} ({reason})",
                )
                listen = _BAD
        trusted = self.trusted(t)
        identity = self.trusted(t, "identity_hosts") if "identity_hosts" in t else ()
        user_agent = self.text(t, "sip", "user_agent", '"kiosk"', default=Sip.user_agent)
        default_route = self.text(t, "sip", "default_route", '"internal"')
        expires = self.integer(t, "sip", "register_expires", "120", lo=30, hi=3600,
                               default=Sip.register_expires, unit=" of seconds")
        keepalive = self.integer(t, "sip", "keepalive_seconds", "15", lo=0, hi=3600,
                                 default=Sip.keepalive_seconds, unit=" of seconds")
        if keepalive is not _BAD and 0 < keepalive < MIN_KEEPALIVE_S:
            self.problem("sip.keepalive_seconds",
                         f"must be 0 (no keep-alives) or from {MIN_KEEPALIVE_S} to 3600 seconds, like "
                         f"keepalive_seconds = 15, got {keepalive} (each keep-alive waits 3 s for its answer)")
            keepalive = _BAD
        rtp_timeout = self.integer(t, "sip", "rtp_timeout_seconds", "60", lo=0, hi=3600,
                                   default=Sip.rtp_timeout_seconds, unit=" of seconds")
        if rtp_timeout is not _BAD and 0 < rtp_timeout < MIN_RTP_TIMEOUT_S:
            self.problem("sip.rtp_timeout_seconds",
                         f"must be 0 (never) or from {MIN_RTP_TIMEOUT_S} to 3600 seconds, like "
                         f"rtp_timeout_seconds = 60, got {rtp_timeout} (a shorter one could end calls in a "
                         "moment of packet loss)")
            rtp_timeout = _BAD
        known = all(r.id for r in routes)  # with a bad route id, "no such route" may be wrong
        if isinstance(default_route, str) and known and not any(r.id == default_route for r in routes):
            ids = [r.id for r in routes if r.id]
            right = _one_of(ids) if ids else "add a [[route]] with that id, or remove default_route"
            self.problem("sip.default_route", f"names route {default_route!r}, which no [[route]] defines; {right}")
            default_route = None
        return Sip(
            listen=Sip.listen if listen is _BAD else listen,
            trusted=trusted,
            user_agent=Sip.user_agent if user_agent is _BAD else user_agent,
            default_route=None if default_route is _BAD else default_route,
            register_expires=Sip.register_expires if expires is _BAD else expires,
            keepalive_seconds=Sip.keepalive_seconds if keepalive is _BAD else keepalive,
            rtp_timeout_seconds=Sip.rtp_timeout_seconds if rtp_timeout is _BAD else rtp_timeout,
            identity_hosts=identity,
        )

    def trusted(self, t: Mapping[str, Any], name: str = "trusted") -> tuple[str, ...]:
        """`[sip] trusted` (or another list of hosts of the same form, `identity_hosts`)."""
        fallback = Sip.trusted if name == "trusted" else ()
        if name not in t:
            return fallback
        value = t[name]
        example = f'{name} = ["10.0.0.5", "pbx.example.org"]'
        if isinstance(value, str):
            self.problem(f"sip.{name}", f"must be a list, even of one host: {name} = [{_toml_str(value)}]")
            return fallback
        if not isinstance(value, list):
            self.problem(f"sip.{name}", f"must be a list of host names or IP addresses, like {example}, got {_show(value)}")
            return fallback
        if not value and name == "trusted":
            # An empty list would refuse every incoming call, the PBX's included.
            self.problem("sip.trusted", f"must name at least the PBX, or every incoming call is refused; e.g. {example}")
        hosts = []
        for i, host in enumerate(value, start=1):
            key = f"sip.{name}[{i}]"
            if not isinstance(host, str):
                self.problem(key, f"must be a host name or IP address in quotes, like \"10.0.0.5\", got {_show(host)}")
                continue
            address = _ipv6(host)
            if address is not None:
                # It could never match: requests reach this unit over IPv4 only.
                self.problem(key, f"{_IPV4_ONLY}, so no request ever comes from an IPv6 address; "
                                  f"use the host's IPv4 address or name, like \"{_ipv4_for(address)}\", got {_show(host)}")
                continue
            reason = _host_problem(host, brackets=False)
            if reason:
                self.problem(key, f"must be a host name or IP address without a port, like \"10.0.0.5\", got {_show(host)} ({reason})")
                continue
            hosts.append(host)
        return tuple(hosts)

    def unique_id(self, e: Mapping[str, Any], prefix: str, example: str, seen: dict[str, str], what: str) -> Any:
        """The entry's `id`, checked, and not one an earlier entry in `seen` (id -> prefix) already has."""
        ident = self.ident(e, prefix, example)
        if ident is not _BAD:
            if ident in seen:
                self.problem(f"{prefix}.id", f"{ident!r} is already the id of {seen[ident]}; give each {what} its own id")
            else:
                seen[ident] = prefix
        return ident

    def lines(self, entries: list[tuple[str, Mapping[str, Any]]]) -> list[Line]:
        if not entries and "line" not in self.suggested:
            self.problem(
                "line",
                f'at least one [[line]] is required, with id, label, uri, registrar, username and password_file (see {_EXAMPLE})',
            )
        seen: dict[str, str] = {}
        lines = []
        for prefix, e in entries:
            line_id = self.unique_id(e, prefix, "desk", seen, "line")
            label = self.text(e, prefix, "label", '"Line 1001"', required=True)
            uri = self.sip_uri(e, prefix, "uri", "sip:1001@pbx.example.org", user=True, required=True)
            registrar = self.sip_uri(e, prefix, "registrar", "sip:pbx.example.org:5060", user=False, required=True)
            username = self.text(e, prefix, "username", '"1001"', required=True)
            proxy = self.sip_uri(e, prefix, "proxy", "sip:proxy.example.org:5060;lr", user=False, required=False)
            password = self.password(e, prefix)
            dtmf = self.text(e, prefix, "dtmf", '"rfc4733"', default=Line.dtmf)
            if dtmf not in (_BAD, "rfc4733", "info"):
                self.problem(f"{prefix}.dtmf", f'must be "rfc4733" (telephone-events in the audio stream, what most '
                                               f'phones and PBXs take) or "info" (SIP INFO), got {_show(dtmf)}')
                dtmf = _BAD
            auto_answer = self.boolean(e, prefix, "auto_answer", default=Line.auto_answer)
            delay = self.integer(e, prefix, "auto_answer_delay_ms", "1000", lo=0, hi=60_000,
                                 default=Line.auto_answer_delay_ms, unit=" of milliseconds")
            intercom = self.boolean(e, prefix, "intercom", default=Line.intercom)
            values = (line_id, label, uri, registrar, username, password, proxy)
            self.line_keys.append(prefix)
            if _BAD in values:
                # Keep the id so routes naming this line are not reported as well.
                lines.append(Line(id="" if line_id is _BAD else line_id, label="", uri="sip:x@invalid", registrar="", username=""))
                continue
            lines.append(Line(line_id, label, uri, registrar, username, password, proxy,
                              dtmf=Line.dtmf if dtmf is _BAD else dtmf, auto_answer=auto_answer,
                              auto_answer_delay_ms=Line.auto_answer_delay_ms if delay is _BAD else delay,
                              intercom=intercom))
        return lines

    def password(self, e: Mapping[str, Any], prefix: str) -> Any:
        has_password, has_file = "password" in e, "password_file" in e
        if has_password and has_file:
            self.problem(f"{prefix}.password_file", "give either password or password_file, not both; keep password_file and delete password")
            return _BAD
        if not has_password and not has_file:
            self.problem(
                f"{prefix}.password",
                'is missing; add password_file = "secrets/1001.pass" (a file holding the password) or password = "..."',
            )
            return _BAD
        if has_password:
            value = self.text(e, prefix, "password", '"s3cret"', empty_ok=True, secret=True)
            if value is not _BAD and self.world_readable and not self.warned_mode and not _placeholder(value):
                self.warned_mode = True
                self.problem(
                    f"{prefix}.password",
                    f"the profile holds a password but every user on the unit can read it; run chmod 640 {self.path} "
                    "(or move the password to a password_file)",
                )
            return value
        name = self.text(e, prefix, "password_file", '"secrets/1001.pass"')
        if name is _BAD:
            return _BAD
        return self.read_password_file(f"{prefix}.password_file", self.base / name)

    def read_password_file(self, key: str, file: Path) -> Any:
        """The stripped password in `file`, after checking that other users cannot read it."""
        try:
            st = file.stat()
            if stat.S_ISDIR(st.st_mode):
                self.problem(key, f"{file} is a directory; name the file holding the password")
                return _BAD
            if not stat.S_ISREG(st.st_mode) or st.st_size > 4096:
                self.problem(key, f"{file} is not a small regular file; it should hold just the password")
                return _BAD
            raw = file.read_bytes()
        except (OSError, ValueError) as e:
            self.problem(key, f"cannot read {file}: {_os_reason(e)}; create it with the password, readable by kiosk's user (chmod 640)")
            return _BAD
        try:
            password: str | None = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            password = None
        if st.st_mode & 0o004 and not (password and _placeholder(password)):
            self.problem(key, f"{file} holds a password but every user on the unit can read it; run chmod 640 {file}")
        if password is None:
            self.problem(key, f"{file} is not UTF-8 text; it should hold just the password")
            return _BAD
        if not password:
            self.problem(key, f"{file} is empty; put the line's SIP password in it")
            return _BAD
        if "\n" in password:
            self.problem(key, f"{file} has more than one line; it should hold just the password")
            return _BAD
        return password

    def routes(self, entries: list[tuple[str, Mapping[str, Any]]], lines: list[Line]) -> list[Route]:
        line_ids = [line.id for line in lines if line.id]
        seen: dict[str, str] = {}
        routes = []
        for prefix, e in entries:
            route_id = self.unique_id(e, prefix, "internal", seen, "route")
            label = self.text(e, prefix, "label", '"Internal"', required=True)
            line = self.text(e, prefix, "line", f'"{line_ids[0] if line_ids else "desk"}"', required=True)
            if line is not _BAD and line not in line_ids and len(line_ids) == len(lines):
                right = _one_of(line_ids) if line_ids else "add that [[line]] first"
                self.problem(f"{prefix}.line", f"names line {line!r}, which no [[line]] defines; {right}")
            prefix_digits = self.text(e, prefix, "prefix", '"9"', default="", empty_ok=True)
            if prefix_digits is not _BAD and not _DIALS.fullmatch(prefix_digits):
                self.problem(f"{prefix}.prefix", f'must be dial digits (0-9, * and #), like "9", got {_show(prefix_digits)}')
                prefix_digits = _BAD
            proxy = self.sip_uri(e, prefix, "proxy", "sip:trunk.example.net:5060", user=False, required=False)
            self.route_keys.append(prefix)
            routes.append(
                Route(
                    id="" if route_id is _BAD else route_id,
                    label="" if label is _BAD else label,
                    line="" if line is _BAD else line,
                    prefix="" if prefix_digits is _BAD else prefix_digits,
                    # A bad proxy still counts as an account: the fix will be a good proxy.
                    proxy="sip:invalid" if proxy is _BAD else proxy,
                )
            )
        return routes

    def accounts(self, lines: list[Line], routes: list[Route]) -> None:
        need = accounts_needed(lines, routes)
        if need <= MAX_ACCOUNTS:
            return
        # Point at the entry that takes the first account too many.
        takers = list(self.line_keys)
        takers += [f"{key}.proxy" for key, r in zip(self.route_keys, routes) if r.proxy]
        trunks = need - len(lines)
        self.problem(
            takers[MAX_ACCOUNTS],
            f"this profile needs {need} SIP accounts ({len(lines)} lines + {trunks} routes with their own proxy), "
            f"but the SIP library here holds at most {MAX_ACCOUNTS}; remove lines, or proxies from routes, "
            f"until lines + routes with a proxy is {MAX_ACCOUNTS} or fewer",
        )

    def recording(self, t: Mapping[str, Any]) -> Recording:
        always = self.boolean(t, "recording", "always", default=Recording.always)
        directory = self.path_value(t, "recording", "directory", '"/var/lib/kiosk/recordings"', Recording.directory)
        min_free = self.integer(t, "recording", "min_free_mb", "50", lo=0, default=Recording.min_free_mb, unit=" of MB")
        max_age = self.integer(t, "recording", "max_age_days", "90", lo=1, unit=" of days")
        max_total = self.integer(t, "recording", "max_total_mb", "20000", lo=1, unit=" of MB")
        return Recording(
            always=always,
            directory=directory,
            min_free_mb=Recording.min_free_mb if min_free is _BAD else min_free,
            max_age_days=None if max_age is _BAD else max_age,
            max_total_mb=None if max_total is _BAD else max_total,
        )

    def pickup(self, t: Mapping[str, Any]) -> Pickup:
        prefix = self.text(t, "pickup", "prefix", '"*8"', default=Pickup.prefix)
        if prefix is not _BAD and not (prefix and _DIALS.fullmatch(prefix)):
            self.problem("pickup.prefix", f'must be dial digits (0-9, * and #), like "*8", got {_show(prefix)}')
            prefix = _BAD
        return Pickup(Pickup.prefix if prefix is _BAD else prefix)

    def audio(self, t: Mapping[str, Any]) -> Audio:
        device = self.device(t, "device")
        ring_device = self.device(t, "ring_device") if "ring_device" in t else None
        pattern = self.text(t, "audio", "ring_pattern", '"standard"', default=Audio.ring_pattern)
        if pattern is not _BAD and pattern not in RING_PATTERNS:
            self.problem("audio.ring_pattern", f"must be {_one_of(RING_PATTERNS)}, got {_show(pattern)}")
            pattern = _BAD
        level = self.integer(t, "audio", "ring_level", "70", lo=0, hi=100, default=Audio.ring_level,
                             unit=" (percent)")
        return Audio(device, ring_device, Audio.ring_pattern if pattern is _BAD else pattern,
                     Audio.ring_level if level is _BAD else level)

    def device(self, t: Mapping[str, Any], name: str) -> str | int | None:
        """A sound device: a name (or part of one), an index, or "none"."""
        if name not in t:
            return None
        value = t[name]
        right = 'a device name like "USB Audio", an index like 2, or "none" for no local audio'
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            self.problem(f"audio.{name}", f"must be {right}, got {_show(value)}")
            return None
        if isinstance(value, int):
            if value < 0:
                self.problem(f"audio.{name}", f"must be {right}, got {value} (indexes start at 0)")
                return None
            return value
        if not value.strip() or not value.isprintable():
            self.problem(f"audio.{name}", f"must be {right}, got {_show(value)}")
            return None
        return None if value.strip().lower() == "none" else value

    def dnd(self, t: Mapping[str, Any]) -> Dnd:
        code = self.integer(t, "dnd", "code", "486", lo=100, hi=699, default=Dnd.code)
        if code is not _BAD and code not in DND_CODES:
            self.problem("dnd.code", f"must be 486 (Busy Here), 480 (Temporarily Unavailable) or 603 (Decline), "
                                     f"got {code}")
            code = _BAD
        return Dnd(Dnd.code if code is _BAD else code)

    def history(self, t: Mapping[str, Any]) -> History:
        path = self.path_value(t, "history", "path", '"/var/lib/kiosk/history.db"', None)
        age = self.integer(t, "history", "max_age_days", "365", lo=0, default=History.max_age_days,
                           unit=" of days (0: no limit)")
        count = self.integer(t, "history", "max_calls", "100000", lo=0, hi=10_000_000, default=History.max_calls,
                             unit=" of calls (0: no limit)")
        return History(path, History.max_age_days if age is _BAD else age,
                       History.max_calls if count is _BAD else count)

    def directory(self, t: Mapping[str, Any]) -> Directory:
        file = self.path_value(t, "directory", "file", '"contacts.csv"', None)
        if file is not None and file.suffix.lower() not in (".csv", ".vcf", ".vcard"):
            self.problem("directory.file", f"must be a .csv file with a header line (name,number) or a vCard "
                                           f"file (.vcf), got {_show(str(file))}")
            file = None
        url = self.text(t, "directory", "ldap", '"ldap://ldap.example.org"')
        if url not in (None, _BAD) and not re.fullmatch(r"ldaps?://[^/\s?#]+/?", url):
            self.problem("directory.ldap", f'must be ldap://host[:port] or ldaps://host[:port], like '
                                           f'"ldap://ldap.example.org:389", got {_show(url)}')
            url = _BAD
        base = self.text(t, "directory", "ldap_base", '"ou=people,dc=example,dc=org"', default="")
        if url not in (None, _BAD) and base in ("", None):
            self.problem("directory.ldap_base", 'is missing: an LDAP search needs where to look; add ldap_base = '
                                                '"ou=people,dc=example,dc=org"')
        bind_dn = self.text(t, "directory", "ldap_bind_dn", '"cn=kiosk,dc=example,dc=org"')
        password_file = self.path_value(t, "directory", "ldap_password_file", '"secrets/ldap.pass"', None)
        password = ""
        if password_file is not None:
            value = self.read_secret_file("directory.ldap_password_file", password_file, "the LDAP bind password")
            password = "" if value is _BAD else value
            if bind_dn is None:
                self.problem("directory.ldap_bind_dn", 'is missing: a bind password needs the DN it is for; add '
                                                       'ldap_bind_dn = "cn=kiosk,dc=example,dc=org"')
        timeout = self.integer(t, "directory", "ldap_timeout_seconds", "3", lo=1, hi=30,
                               default=Directory.ldap_timeout_seconds, unit=" of seconds")
        flt = self.text(t, "directory", "ldap_filter", '"(cn=*{q}*)"', default=Directory.ldap_filter)
        if flt is not _BAD and ("{q}" not in flt or not (flt.startswith("(") and flt.endswith(")"))):
            self.problem("directory.ldap_filter", f'must be an LDAP filter in brackets with {{q}} where the search '
                                                  f'text goes, like "(|(cn=*{{q}}*)(telephoneNumber=*{{q}}*))", '
                                                  f'got {_show(flt)}')
            flt = _BAD
        name_attr = self.text(t, "directory", "ldap_name_attr", '"cn"', default=Directory.ldap_name_attr)
        numbers: Any = Directory.ldap_number_attrs
        if "ldap_number_attrs" in t:
            raw = t["ldap_number_attrs"]
            if not (isinstance(raw, list) and raw and all(isinstance(a, str) and a.strip() for a in raw)):
                self.problem("directory.ldap_number_attrs", f'must be a list of attribute names, like '
                                                            f'["telephoneNumber", "mobile"], got {_show(raw)}')
            else:
                numbers = tuple(raw)
        return Directory(file=file, ldap=None if url is _BAD else url, ldap_base=base or "",
                         ldap_bind_dn=None if bind_dn is _BAD else bind_dn, ldap_password_file=password_file,
                         ldap_password=password,
                         ldap_timeout_seconds=Directory.ldap_timeout_seconds if timeout is _BAD else timeout,
                         ldap_filter=Directory.ldap_filter if flt is _BAD else flt,
                         ldap_name_attr=Directory.ldap_name_attr if name_attr is _BAD else name_attr,
                         ldap_number_attrs=numbers)

    def gpio(self, t: Mapping[str, Any]) -> Gpio:
        pins: dict[str, int | None] = {}
        used: dict[int, str] = {}
        for name in _SECTIONS["gpio"]:
            pin = self.integer(t, "gpio", name, "17", lo=GPIO_PINS.start, hi=GPIO_PINS.stop - 1, unit=" (a BCM GPIO number)")
            if pin is _BAD or pin is None:
                pins[name] = None
                continue
            if pin in used:
                free = [p for p in _PLAIN_PINS if p not in used and p not in t.values()]
                self.problem(
                    f"gpio.{name}",
                    f"pin {pin} is already used by gpio.{used[pin]}; give each button and LED its own pin"
                    + (f" (e.g. {free[0]} is free)" if free else ""),
                )
            else:
                used[pin] = name
            pins[name] = pin
        return Gpio(**pins)

    # -- [provisioning] --

    def provisioning(self, data: Mapping[str, Any]) -> Provisioning | None:
        if "provisioning" not in data:
            return None
        t = self.table(data, "provisioning")
        for inline, home in (("token", "token_file"), ("password", "password_file")):
            if inline in t:  # table() already said "unknown key"; say where the secret goes instead
                self.problems = [p for p in self.problems if p.key != f"provisioning.{inline}"]
                self.problem(f"provisioning.{inline}",
                             f'a secret is never written in the profile; put it in a file of its own (chmod 640) '
                             f'and name that file: {home} = "secrets/provisioning.{inline}"')
        url = self.provisioning_url(t)
        interval = self.integer(t, "provisioning", "interval_minutes", "60", lo=1, hi=7 * 24 * 60,
                                default=Provisioning.interval_minutes, unit=" of minutes")
        timeout = self.integer(t, "provisioning", "timeout_seconds", "10", lo=1, hi=120,
                               default=Provisioning.timeout_seconds, unit=" of seconds")
        ca_file = self.ca_file(t)
        token_file = self.path_value(t, "provisioning", "token_file", '"secrets/provisioning.token"', None)
        username = self.text(t, "provisioning", "username", '"desk-01"')
        password_file = self.path_value(t, "provisioning", "password_file", '"secrets/provisioning.pass"', None)
        if username not in (None, _BAD) and (":" in username or " " in username):
            self.problem("provisioning.username", f'must be a user name without ":" or spaces (basic auth cannot '
                                                  f'carry them), like "desk-01", got {_show(username)}')
            username = _BAD
        token = password = ""
        if token_file is not None and (username is not None or password_file is not None):
            self.problem("provisioning.token_file", "give either token_file (a bearer token) or username and "
                                                    "password_file (basic auth), not both; keep the one the "
                                                    "server expects")
        elif token_file is not None:
            value = self.read_secret_file("provisioning.token_file", token_file, "the bearer token")
            if value is not _BAD and not _TOKEN.fullmatch(value):
                self.problem("provisioning.token_file", f"{token_file} must hold one bearer token: letters, digits "
                                                        "and -._~+/= only, without spaces")
                value = _BAD
            token = "" if value is _BAD else value
        elif username is not None and password_file is None:
            self.problem("provisioning.password_file", 'is missing: basic auth needs the password too; add '
                                                       'password_file = "secrets/provisioning.pass"')
        elif password_file is not None and username is None:
            self.problem("provisioning.username", 'is missing: password_file is for basic auth, which needs the '
                                                  'user name too; add username = "desk-01"')
        elif password_file is not None:
            value = self.read_secret_file("provisioning.password_file", password_file, "the basic-auth password")
            password = "" if value is _BAD else value
        if url is _BAD or interval is _BAD or timeout is _BAD or ca_file is _BAD or username is _BAD:
            return None  # the problem is recorded: the profile is refused anyway
        return Provisioning(url=url, interval_minutes=interval, timeout_seconds=timeout, ca_file=ca_file,
                            token_file=token_file, token=token, username=username, password_file=password_file,
                            password=password)

    def provisioning_url(self, t: Mapping[str, Any]) -> Any:
        example = '"https://prov.example.org/kiosk/{mac}.toml"'
        url = self.text(t, "provisioning", "url", example, required=True)
        if url is _BAD:
            return _BAD
        reason = _provisioning_url_problem(url)
        if reason:
            self.problem("provisioning.url", f"must be an https:// URL like {example}, got {_show(url)} ({reason})")
            return _BAD
        return url

    def ca_file(self, t: Mapping[str, Any]) -> Any:
        file = self.path_value(t, "provisioning", "ca_file", '"/etc/kiosk/prov-ca.pem"', None)
        if file is None:
            return None
        key = "provisioning.ca_file"
        try:
            if not file.is_file():
                self.problem(key, f"{file} is {'a directory' if file.is_dir() else 'missing'}; name the PEM file "
                                  "of the CA that signed the provisioning server's certificate (leave ca_file out "
                                  "to use the system's store)")
                return _BAD
            context = ssl.create_default_context(cafile=str(file))
        except ssl.SSLError as e:
            self.problem(key, f"{file} holds no certificate this unit can read ({e.reason or e}); it must be the "
                              "CA's certificate in PEM form (-----BEGIN CERTIFICATE-----)")
            return _BAD
        except (OSError, ValueError) as e:
            self.problem(key, f"cannot read {file}: {_os_reason(e)}; make it readable by kiosk's user")
            return _BAD
        if not context.get_ca_certs():
            self.problem(key, f"{file} holds no CA certificate (a server's own certificate is not enough); give the "
                              "certificate of the CA that signed it, in PEM form")
            return _BAD
        return file

    def read_secret_file(self, key: str, file: Path, what: str) -> Any:
        """The one line of a secret file (token, password), after checking that other users cannot read it."""
        try:
            st = file.stat()
            if not stat.S_ISREG(st.st_mode) or st.st_size > 4096:
                self.problem(key, f"{file} is not a small regular file; it should hold just {what}")
                return _BAD
            raw = file.read_bytes()
        except (OSError, ValueError) as e:
            self.problem(key, f"cannot read {file}: {_os_reason(e)}; create it with {what}, readable by kiosk's "
                              "user (chmod 640)")
            return _BAD
        try:
            value = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.problem(key, f"{file} is not UTF-8 text; it should hold just {what}")
            return _BAD
        if st.st_mode & 0o004:
            self.problem(key, f"{file} holds {what} but every user on the unit can read it; run chmod 640 {file}")
        if not value:
            self.problem(key, f"{file} is empty; put {what} in it")
            return _BAD
        if "\n" in value or not value.isprintable():
            self.problem(key, f"{file} must hold {what} on one line, without control characters")
            return _BAD
        return value


#: RFC 6750's b64token: what a bearer token may be made of.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _provisioning_url_problem(url: str) -> str | None:
    """Why `url` cannot be the provisioning URL, or None when it can."""
    if any(c.isspace() for c in url):
        return "it contains spaces"
    names = re.findall(r"\{([^{}]*)\}", url)
    for name in names:
        if name not in PROVISIONING_PLACEHOLDERS:
            near = _nearest(name, PROVISIONING_PLACEHOLDERS)
            hint = f"did you mean {{{near}}}?" if near else "the placeholders are {mac} and {hostname}"
            return f"unknown placeholder {{{name}}}; {hint}"
    sample = url
    for name, value in PROVISIONING_PLACEHOLDERS.items():
        sample = sample.replace("{" + name + "}", value)
    if "{" in sample or "}" in sample:
        return "a { or } that is no placeholder; the placeholders are {mac} and {hostname}"
    try:
        parts = urllib.parse.urlsplit(sample)
        port = parts.port
    except ValueError as e:
        return str(e)
    if parts.scheme.lower() == "http":
        return "plain http would carry the profile, its SIP passwords included, in clear; use https://"
    if parts.scheme.lower() != "https":
        return "it does not start with https://"
    if "@" in parts.netloc:
        return "no user name or password in the URL: put them in username and password_file"
    host = parts.hostname or ""
    reason = _host_problem(f"[{host}]" if ":" in host else host, brackets=True)
    if reason:
        return reason
    if port is not None and not 1 <= port <= 65535:
        return f"port {port} is outside 1-65535"
    if parts.fragment or sample.endswith("#"):
        return "a #fragment is never sent to the server; remove it"
    return None


#: The placeholder passwords of the example profile (kiosk/examples/secrets/*.pass).
_PLACEHOLDER = re.compile(r"change-me(?:-[A-Za-z0-9]+)?")


def _placeholder(password: str) -> bool:
    """Whether `password` is the example's placeholder, which is no secret.

    Git stores every file 0644 (it cannot store 0600), so the example's password
    files are world-readable as cloned; holding only a placeholder, they are
    accepted that way and the example checks clean. A real password in a file
    (or profile) every user can read is still refused.
    """
    return bool(_PLACEHOLDER.fullmatch(password))


def _header(section: str) -> str:
    return f"[[{section}]]" if section in _ARRAYS else f"[{section}]"
