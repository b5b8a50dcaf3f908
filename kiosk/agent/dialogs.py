"""The dialogs in conversation, kept in a small file, so that a unit that died ends them.

After SIGKILL or a crash nobody sends the far end a BYE: it stays in a dead
call until its own media timeout (if it has one), and its BYE later gets 481.
So while a call is in conversation its dialog — Call-ID, both tags, the far
end's target and route set — is in `dialogs.json` in the unit's state
directory; at start-up, before pjsua2 runs, the unit sends a BYE for each
dialog the last run left behind, then empties the file.

The file is rewritten whole (write, fsync, rename) on every change: a power
cut leaves the old or the new version, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import socket
import string
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("kiosk.agent.dialogs")

FILE_NAME = "dialogs.json"
#: How long the start-up BYEs wait for their answers (retransmitted every 0.5 s).
BYE_WAIT_S = 2.0
#: The CSeq of those BYEs.
BYE_CSEQ = 2_000_000_000

_COMPACT = {"f": "from", "t": "to", "i": "call-id", "m": "contact", "v": "via"}


@dataclass
class Dialog:
    """What a BYE needs, as the SIP messages of the dialog said it."""

    call_id: str
    local: str  # our From for requests in this dialog, with our tag
    remote: str  # their To, with their tag
    target: str  # the far end's Contact URI
    route: list[str] = field(default_factory=list)  # the route set, in the order requests take it
    cseq: int = 1

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Dialog":
        return cls(str(data["call_id"]), str(data["local"]), str(data["remote"]), str(data["target"]),
                   [str(r) for r in data.get("route", [])], int(data.get("cseq", 1)))


def headers(msg: str) -> dict[str, list[str]]:
    """A SIP message's header values by lower-case (long) name, in order, folded lines joined."""
    head = msg.split("\r\n\r\n", 1)[0].replace("\r\n ", " ").replace("\r\n\t", " ")
    out: dict[str, list[str]] = {}
    for line in head.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        out.setdefault(_COMPACT.get(key, key), []).append(value.strip())
    return out


def _split_list(values: list[str]) -> list[str]:
    """`<a>, <b>` header values into single entries (commas inside <> or quotes kept)."""
    out: list[str] = []
    for value in values:
        depth, quoted, start = 0, False, 0
        for i, ch in enumerate(value):
            if ch == '"':
                quoted = not quoted
            elif ch == "<" and not quoted:
                depth += 1
            elif ch == ">" and not quoted:
                depth -= 1
            elif ch == "," and depth == 0 and not quoted:
                out.append(value[start:i].strip())
                start = i + 1
        if value[start:].strip():
            out.append(value[start:].strip())
    return out


def _uri(value: str) -> str:
    m = re.search(r"<([^>]*)>", value)
    return (m.group(1) if m else value.split(";", 1)[0]).strip()


def record_route(msg: str) -> list[str]:
    """The Record-Route URIs of a request, in the order they came (a callee's route set)."""
    return [_uri(v) for v in _split_list(headers(msg).get("record-route", []))]


def dialog_from(msg: str, we_are_caller: bool) -> Dialog | None:
    """The dialog a 2xx to our INVITE (caller) or the ACK of our 2xx (callee) establishes."""
    h = headers(msg)
    try:
        call_id, from_, to = h["call-id"][0], h["from"][0], h["to"][0]
        cseq = int(h["cseq"][0].split()[0])
    except (KeyError, IndexError, ValueError):
        return None
    if ";tag=" not in from_.lower() or ";tag=" not in to.lower():
        return None
    contact = _uri(h["contact"][0]) if h.get("contact") else ""
    rr = [_uri(v) for v in _split_list(h.get("record-route", []))]
    if we_are_caller:  # our requests: From us, To them; route set is the Record-Route reversed
        return Dialog(call_id, from_, to, contact, list(reversed(rr)), cseq)
    return Dialog(call_id, to, from_, contact, [], cseq)  # the callee: the ACK's To is us


class DialogStore:
    """The dialogs in conversation now, mirrored in a file after every change."""

    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: kept in memory only
        self.dialogs: dict[str, Dialog] = {}

    def add(self, dialog: Dialog) -> None:
        self.dialogs[dialog.call_id] = dialog
        self._write()

    def remove(self, call_id: str) -> None:
        if self.dialogs.pop(call_id, None) is not None:
            self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump([asdict(d) for d in self.dialogs.values()], f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:  # the calls go on; only the after-crash clean-up is lost
            log.warning("cannot keep the dialogs file %s: %s", self.path, exc.strerror or exc)


def state_dir(control_socket: Path) -> Path:
    """systemd's StateDirectory when the unit runs under it, else beside the control socket."""
    env = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(env) if env else control_socket.parent


def load(path: Path) -> list[Dialog]:
    """The dialogs a previous run left in the file (none when it is missing or unreadable)."""
    try:
        data = json.loads(path.read_text())
        return [Dialog.from_json(d) for d in data]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("dialogs file %s unreadable (%s): no dialogs to end", path, exc)
        return []


def _hostport(uri: str) -> tuple[str, int] | None:
    m = re.match(r"sips?:(?:[^@;>]*@)?(\[[^\]]+\]|[^:;>]+)(?::(\d+))?", uri)
    if not m:
        return None
    return m.group(1).strip("[]"), int(m.group(2) or 5060)


def _token(n: int) -> str:
    return "".join(random.choices(string.ascii_letters + string.digits, k=n))


def bye_request(d: Dialog, via_host: str, via_port: int, branch: str, user_agent: str) -> bytes:
    lines = [f"BYE {d.target} SIP/2.0",
             f"Via: SIP/2.0/UDP {via_host}:{via_port};rport;branch={branch}",
             "Max-Forwards: 70"]
    lines += [f"Route: <{r}>" for r in d.route]
    lines += [f"From: {d.local}", f"To: {d.remote}", f"Call-ID: {d.call_id}",
              f"CSeq: {BYE_CSEQ} BYE",  # above any CSeq pjsip started from (random, < 2**16) and reached
              f"User-Agent: {user_agent}", "Reason: Q.850;cause=41;text=\"unit restarted\"",
              "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def _source_for(dest: tuple[str, int], family: int, bind: str) -> str | None:
    """The local address packets to `dest` leave from (what the Via must name for the answer to come back)."""
    if bind:
        return bind
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(dest)  # UDP: no packet, only the route lookup
            return str(probe.getsockname()[0])
    except OSError:
        return None


def end_leftovers(path: Path, bind_host: str, user_agent: str, wait_s: float = BYE_WAIT_S) -> list[tuple[str, str]]:
    """BYE every dialog the last run left in `path`, then empty it; returns (call-id, outcome) pairs.

    Never raises: a clean-up that cannot be done must not keep the unit from starting.
    """
    try:
        return _end_leftovers(path, bind_host, user_agent, wait_s)
    except Exception as exc:  # e.g. an address family the machine does not have
        log.error("could not end the calls the last run left open (%s): %s", path, exc)
        with contextlib.suppress(OSError):
            path.unlink()
        return []


def _end_leftovers(path: Path, bind_host: str, user_agent: str, wait_s: float) -> list[tuple[str, str]]:
    dialogs = load(path)
    results: list[tuple[str, str]] = []
    if not dialogs:
        return results
    bind = bind_host.strip("[]") if bind_host not in ("", "0.0.0.0", "::") else ""
    family = socket.AF_INET6 if ":" in bind or bind_host == "::" else socket.AF_INET
    pending: dict[str, tuple[bytes, tuple[str, int], Dialog]] = {}
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((bind or ("::" if family == socket.AF_INET6 else "0.0.0.0"), 0))
        port = sock.getsockname()[1]
        for d in dialogs:
            dest = _hostport(d.route[0] if d.route else d.target)
            source = _source_for(dest, family, bind) if dest is not None else None
            if dest is None or source is None:
                results.append((d.call_id, f"no route to {d.route[0] if d.route else d.target!r}"))
                continue
            branch = "z9hG4bK" + _token(16)
            via = f"[{source}]" if ":" in source else source
            pending[branch] = (bye_request(d, via, port, branch, user_agent), dest, d)
        deadline = time.monotonic() + wait_s
        next_send = 0.0
        sock.settimeout(0.1)
        while pending and time.monotonic() < deadline:
            if time.monotonic() >= next_send:
                for data, dest, _ in pending.values():
                    try:
                        sock.sendto(data, dest)
                    except OSError:
                        pass
                next_send = time.monotonic() + 0.5
            try:
                reply = sock.recv(65535).decode(errors="replace")
            except (socket.timeout, OSError):
                continue
            status = reply.split("\r\n", 1)[0]
            m = re.search(r"branch=([^;\s,]+)", headers(reply).get("via", [""])[0])
            code = status.split(" ", 2)
            if not m or m.group(1) not in pending or len(code) < 2 or code[1].startswith("1"):
                continue
            _, _, d = pending.pop(m.group(1))
            results.append((d.call_id, status.partition(" ")[2]))
        results += [(d.call_id, "no answer") for _, _, d in pending.values()]
    for call_id, outcome in results:
        log.warning("ended a call the last run left open (Call-ID %s): BYE %s", call_id, outcome)
    with contextlib.suppress(OSError):
        path.unlink()
    return results
