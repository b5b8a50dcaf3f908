"""Logs to journald with structured fields, and no secret in any line.

`JournalHandler` speaks journald's native protocol itself: one datagram per
record to /run/systemd/journal/socket, each field a ``KEY=value`` line (a value
with a newline is sent as ``KEY\\n``, its length as 64-bit little-endian, the
bytes, ``\\n``); a record too big for a datagram goes as a sealed memfd, as
libsystemd does. That is about sixty lines of standard library, where the
`systemd-python` binding would have to be compiled against libsystemd on every
unit (no wheels) and Debian's python3-systemd lives outside the unit's venv.

Fields: MESSAGE, PRIORITY (syslog levels), SYSLOG_IDENTIFIER=kiosk, CODE_FILE,
CODE_LINE, CODE_FUNC, LOGGER, THREAD_NAME, EXCEPTION (a traceback's text), and
every upper-case key of the log call's ``extra`` (ROW=, LINE=, ACTION=, CALL=,
OUTCOME=, ...), so that ``journalctl -u kiosk ACTION=answer`` or ``ROW=3`` finds
one operator action or one call's events.

`setup_logging` uses the journal when systemd connected stderr to it
(``JOURNAL_STREAM``, as systemd.exec(5) recommends) and the socket is there, else
stderr; a datagram journald cannot take at the moment (its queue full, the socket
gone) is written to stderr instead, never waited for: the desk loop logs too.

`Redactor` is a filter on every handler: each password and token the unit knows
(the lines' SIP passwords, the provisioning token and basic-auth password, from
every profile it has run on) is replaced by ``[secret]`` in the message, its
arguments, the traceback and the extra fields before any handler sees the record.
"""

from __future__ import annotations

import array
import base64
import errno
import fcntl
import logging
import os
import re
import socket
import struct
import sys
import threading
import traceback
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from .profile import Profile

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
IDENTIFIER = "kiosk"
REDACTED = "[secret]"
#: A secret shorter than this is replaced only where it stands as a word of its own:
#: a three-letter password would otherwise blank out every word that contains it.
SHORT_SECRET = 4
#: A record larger than this goes as a memfd rather than a datagram (a datagram the kernel refuses
#: as too large goes that way too): the size up to which every kernel and journald take a datagram.
MAX_DATAGRAM = 128 * 1024

_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
#: journald's rule for a field name (it must not start with _: those are its own, trusted ones).
_FIELD = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
#: Fields this handler writes itself; an `extra` of the same name does not replace them.
_OWN = {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "CODE_FUNC", "LOGGER",
        "THREAD_NAME", "EXCEPTION"}
#: The attributes every LogRecord has: not `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def priority(levelno: int) -> int:
    for level, prio in _PRIORITY:
        if levelno >= level:
            return prio
    return 7  # debug


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The journal fields a log call gave in `extra` (upper-case names only)."""
    return {k: v for k, v in vars(record).items()
            if k not in _STANDARD and k not in _OWN and _FIELD.fullmatch(k) and v is not None}


def encode(fields: Iterable[tuple[str, Any]]) -> bytes:
    """Fields in journald's native format."""
    out = bytearray()
    for key, value in fields:
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
        name = key.encode("ascii")
        if b"\n" in data:
            out += name + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Sends each record to journald over its native socket (`socket_path`); see the module docstring."""

    def __init__(self, socket_path: Path | str = JOURNAL_SOCKET, identifier: str = IDENTIFIER,
                 fallback: IO[str] | None = None, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.socket_path = str(socket_path)
        self.identifier = identifier
        self.fallback = fallback if fallback is not None else sys.stderr
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self._sock: socket.socket | None = None
        self.dropped = 0  # records journald could not take, written to the fallback instead

    def fields(self, record: logging.LogRecord) -> list[tuple[str, Any]]:
        message = record.getMessage()
        if self.formatter is not None and self.formatter._fmt:  # noqa: SLF001 - the prefix, not the traceback
            record.message = message
            message = self.formatter.formatMessage(record)
        fields: list[tuple[str, Any]] = [
            ("MESSAGE", message),
            ("PRIORITY", priority(record.levelno)),
            ("SYSLOG_IDENTIFIER", self.identifier),
            ("CODE_FILE", record.pathname),
            ("CODE_LINE", record.lineno),
            ("CODE_FUNC", record.funcName),
            ("LOGGER", record.name),
            ("THREAD_NAME", record.threadName),
        ]
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            fields.append(("EXCEPTION", record.exc_text))
        if record.stack_info:
            fields.append(("STACK", record.stack_info))
        fields += sorted(extra_fields(record).items())
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = encode(self.fields(record))
        except Exception:
            self.handleError(record)
            return
        try:
            self._send(data)
        except OSError:
            self.dropped += 1
            self._to_fallback(record)

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.setblocking(False)  # a full journald queue must never stall the desk loop
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
            except OSError:
                pass
            self._sock = sock
        return self._sock

    def _send(self, data: bytes) -> None:
        sock = self._socket()
        if len(data) > MAX_DATAGRAM:
            self._send_memfd(sock, data)
            return
        try:
            sock.sendto(data, self.socket_path)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(sock, data)

    def _send_memfd(self, sock: socket.socket, data: bytes) -> None:
        """A record over the datagram limit: its bytes in a sealed memfd, the fd passed to journald."""
        fd = os.memfd_create("kiosk-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
            # (socket.send_fds of Python 3.11 drops its address argument: sendmsg itself.)
            sock.sendmsg([b""], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))], 0,
                         self.socket_path)
        finally:
            os.close(fd)

    def _to_fallback(self, record: logging.LogRecord) -> None:
        try:
            text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s").format(record)
            self.fallback.write(text + "\n")
            self.fallback.flush()
        except Exception:
            pass

    def close(self) -> None:
        with self.lock or threading.Lock():
            if self._sock is not None:
                self._sock.close()
                self._sock = None
        super().close()


# --- no secret in any line -------------------------------------------------------------


def profile_secrets(profile: "Profile") -> set[str]:
    """Every value of a profile that must never be logged (and the forms it is sent in)."""
    found = {line.password for line in profile.lines if line.password}
    directory = getattr(profile, "directory", None)
    if directory is not None and directory.ldap_password:
        found.add(directory.ldap_password)
    prov = getattr(profile, "provisioning", None)
    if prov is not None:
        found.update(prov.secrets)
        if prov.username and prov.password:  # the Authorization header carries it this way
            found.add(base64.b64encode(f"{prov.username}:{prov.password}".encode()).decode())
    return found


class Redactor(logging.Filter):
    """Replaces every known secret with [secret] in a record; secrets are only ever added.

    `add()` learns values at once; `watch(get_profile)` learns those of each new
    profile the getter returns (checked per record: one identity comparison).
    A secret once known stays known: the unit may log about the profile it left.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._watched: list[Callable[[], Any]] = []
        self._seen: dict[int, int] = {}  # watcher index -> id() of the profile last read
        self._lock = threading.Lock()

    def add(self, *values: str) -> None:
        new = {v for v in values if isinstance(v, str) and v.strip()} - self._secrets
        if not new:
            return
        with self._lock:
            self._secrets |= new
            longs = sorted((s for s in self._secrets if len(s) >= SHORT_SECRET), key=len, reverse=True)
            shorts = sorted(s for s in self._secrets if len(s) < SHORT_SECRET)
            parts = [re.escape(s) for s in longs] + [rf"(?<!\w){re.escape(s)}(?!\w)" for s in shorts]
            self._pattern = re.compile("|".join(parts))

    def add_profile(self, profile: "Profile") -> None:
        self.add(*profile_secrets(profile))

    def watch(self, get_profile: Callable[[], Any]) -> None:
        self._watched.append(get_profile)

    def redact(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(REDACTED, text) if pattern is not None and text else text

    def _refresh(self) -> None:
        for i, get in enumerate(self._watched):
            try:
                profile = get()
            except Exception:
                continue
            if profile is not None and self._seen.get(i) != id(profile):
                self._seen[i] = id(profile)
                self.add_profile(profile)

    def filter(self, record: logging.LogRecord) -> bool:
        self._refresh()
        if self._pattern is None:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let logging report it as usual
            return True
        clean = self.redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in extra_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, self.redact(value))
        return True


#: The unit's one redactor: run_unit tells it the profile (`REDACTOR.watch(lambda: desk.profile)`).
REDACTOR = Redactor()


# --- choosing the destination ------------------------------------------------------------


def stderr_is_journal(env: dict[str, str] | os._Environ[str] = os.environ, stream: IO[str] | None = None) -> bool:
    """Whether systemd connected stderr to the journal (JOURNAL_STREAM names its device:inode)."""
    value = env.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(verbose: bool = False, *, socket_path: Path | str = JOURNAL_SOCKET,
                  env: dict[str, str] | os._Environ[str] = os.environ, stream: IO[str] | None = None,
                  redactor: Redactor = REDACTOR) -> logging.Handler:
    """The root logger's one handler: the journal under systemd, else stderr; the redactor on it.

    KIOSK_LOG=journal or KIOSK_LOG=stderr overrides the choice.
    """
    stream = stream if stream is not None else sys.stderr
    want = env.get("KIOSK_LOG", "")
    journal = want == "journal" or (want != "stderr" and stderr_is_journal(env, stream))
    if journal and not os.path.exists(socket_path):
        journal = False  # fall back to stderr when the socket is absent
    handler: logging.Handler
    if journal:
        handler = JournalHandler(socket_path, fallback=stream)
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(redactor)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler
