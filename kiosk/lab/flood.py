"""Bursts of raw SIP requests over UDP on loopback: the lab's flood sender.

A burst is a list of datagrams sent to the unit at a fixed rate from one
loopback source address (127.0.0.1 is the lab unit's trusted host; another
127.x address is an untrusted one).  The responses the unit sends back are
collected, so a burst also tells how many of its INVITEs rang (180), were
refused as busy (486) or forbidden (403), or got no answer at all.

Test material such as RFC 4475's torture messages names outside hosts
(192.0.2.x, example.com); whatever the unit does with them must stay on this
machine, so `loopback()` rewrites every host in a message to the sender's own
loopback address (and port, in the headers) before it is sent, keeping the
message's Content-Length as wrong (or right) as it was.  The material itself is
read at run time from `shared/robustness` beside the checkout (test material that stays outside the repository), never copied.
"""

from __future__ import annotations

import itertools
import re
import select
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from .baresip import Baresip
    from .unit import Unit

#: Where the RFC 4475 torture messages are (test material, read at run time).
RFC4475 = Path(__file__).resolve().parents[3] / "shared" / "robustness" / "rfc4475"

_NAME = rb"(?<![A-Za-z0-9_.-])(?:[A-Za-z0-9-]+\.)+(?:com|net|org|edu|arpa|invalid|test|example)(?![A-Za-z0-9-])"
_IPV4 = rb"(?<![0-9.])(?!127\.)[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![0-9])"
_IPV6 = rb"\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]"
_HOST = re.compile(rb"(?:" + _NAME + rb"|" + _IPV4 + rb"|" + _IPV6 + rb")(?::[0-9]+)?")
_HOST_NOPORT = re.compile(rb"(?:" + _NAME + rb"|" + _IPV4 + rb"|" + _IPV6 + rb")")
_CL = re.compile(rb"(?im)^((?:content-length|l)[ \t]*:[ \t]*)([0-9]+)")
_CALL_ID = re.compile(rb"(?im)^((?:call-id|i)[ \t]*:[ \t]*)([^\s]+)")
_BRANCH = re.compile(rb"(?i)(branch[ \t]*=[ \t]*(?:\r\n[ \t]+)?)([A-Za-z0-9.!%*+`'~_-]+)")
_STATUS = re.compile(rb"^SIP/2\.0 ([0-9]{3}) ")


def invite_cases(corpus: Path = RFC4475) -> list[tuple[str, bytes]]:
    """(name, message) of every message in `corpus` that is an INVITE (by its first line), sorted by name."""
    out = []
    for f in sorted(corpus.glob("*.dat")):
        data = f.read_bytes()
        if re.match(rb"^[ \t]*INVITE[ \t]", data):
            out.append((f.stem, data))
    return out


def loopback(msg: bytes, host: str, port: int, unique: str = "") -> bytes:
    """`msg` with every non-loopback host (and its port) in its headers made `host:port`, every such host in
    its body `host`, its Content-Length(s) shifted by what that changed in the body, and (with `unique`)
    its Call-ID and Via branches suffixed so that a resend is a new request, not a retransmission."""
    head, sep, body = msg.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = msg.partition(b"\n\n")
    addr = f"{host}:{port}".encode()
    new_head = _HOST.sub(addr, head)
    new_body = _HOST_NOPORT.sub(host.encode(), body)
    delta = len(new_body) - len(body)
    if delta and sep:
        new_head = _CL.sub(lambda m: m.group(1) + str(int(m.group(2)) + delta).encode()
                           if len(m.group(2)) < 10 else m.group(0), new_head)
    if unique:
        u = unique.encode()
        new_head = _CALL_ID.sub(lambda m: m.group(1) + m.group(2) + b"." + u, new_head)
        new_head = _BRANCH.sub(lambda m: m.group(1) + m.group(2) + b"." + u, new_head)
    return new_head + sep + new_body


def rfc4475_invites(count: int, host: str, port: int, corpus: Path = RFC4475, tag: str = "") -> list[bytes]:
    """`count` INVITEs cycling through the corpus's INVITE cases, each made unique and loopback-only."""
    cases = invite_cases(corpus)
    if not cases:
        raise FileNotFoundError(f"no INVITE messages in {corpus}")
    stamp = tag or f"{time.monotonic_ns() % 10**9:x}"
    return [loopback(msg, host, port, f"f{stamp}n{i}") for i, (_, msg) in zip(range(count), itertools.cycle(cases))]


@dataclass
class BurstResult:
    """What a burst sent and what came back."""

    sent: int = 0
    cancels: int = 0
    seconds: float = 0.0
    codes: Counter[int] = field(default_factory=Counter)  # responses by status code (retransmissions included)
    requests: Counter[str] = field(default_factory=Counter)  # requests the unit sent us, by method

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, object]:
        return {"sent": self.sent, "cancels": self.cancels, "seconds": round(self.seconds, 2), "rate": round(self.rate, 1),
                "codes": dict(sorted(self.codes.items())), "requests": dict(self.requests)}


def _unfold(head: bytes) -> list[bytes]:
    return re.sub(rb"\r?\n[ \t]+", b" ", head).split(b"\r\n") if b"\r\n" in head else \
        re.sub(rb"\n[ \t]+", b" ", head).split(b"\n")


def _header(lines: list[bytes], *names: bytes) -> bytes | None:
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in names:
            return value.strip()
    return None


def dialog_fields(msg: bytes) -> dict[str, bytes] | None:
    """Request-URI, top Via, From, To, Call-ID and CSeq number of a request or response, or None
    when the message is too broken to name them (then nothing can CANCEL or ACK it)."""
    lines = _unfold(msg.split(b"\r\n\r\n", 1)[0])
    first = lines[0].split()
    via = _header(lines, b"via", b"v")
    fields = {"from": _header(lines, b"from", b"f"), "to": _header(lines, b"to", b"t"),
              "call-id": _header(lines, b"call-id", b"i"), "cseq": _header(lines, b"cseq")}
    if via is None or None in fields.values() or len(first) < 2:
        return None
    cseq = fields["cseq"].split()  # type: ignore[union-attr]
    if not cseq or not cseq[0].isdigit():
        return None
    return {"ruri": first[1], "via": via.split(b",", 1)[0].strip(), "from": fields["from"], "to": fields["to"],
            "call-id": fields["call-id"], "cseq": cseq[0], "method": cseq[-1]}  # type: ignore[dict-item]


def _request(method: bytes, f: dict[str, bytes], to: bytes) -> bytes:
    return b"\r\n".join([
        method + b" " + f["ruri"] + b" SIP/2.0", b"Via: " + f["via"], b"Max-Forwards: 70",
        b"From: " + f["from"], b"To: " + to, b"Call-ID: " + f["call-id"], b"CSeq: " + f["cseq"] + b" " + method,
        b"Content-Length: 0", b"", b""])


def cancel_for(invite: bytes) -> bytes | None:
    """A CANCEL of this INVITE (as a fuzzing suite sends after each case), or None if it names too little."""
    f = dialog_fields(invite)
    return None if f is None else _request(b"CANCEL", f, f["to"])


class Flooder:
    """A UDP socket on a loopback address that sends bursts to one target and reads what comes back.

    Final responses to its INVITEs are ACKed (so the unit stops retransmitting them) and requests
    the unit sends it (BYE, OPTIONS) get a 200.  Only loopback targets and sources are accepted: a
    burst never leaves the machine.
    """

    def __init__(self, target: tuple[str, int], source: str = "127.0.0.1") -> None:
        for what, addr in (("target", target[0]), ("source", source)):
            if not addr.startswith("127."):
                raise ValueError(f"{what} {addr} is not a loopback (127.0.0.0/8) address")
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((source, 0))
        self.sock.setblocking(False)
        self.host, self.port = self.sock.getsockname()
        self._ruri: dict[bytes, bytes] = {}  # Call-ID -> Request-URI of the INVITEs sent

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendto(data[:65000], self.target)
        except OSError:
            pass  # EMSGSIZE, or ECONNREFUSED from an ICMP of an earlier datagram: it was still a try

    def _drain(self, result: BurstResult, wait: float = 0.0) -> None:
        end = time.monotonic() + wait
        while True:
            left = max(0.0, end - time.monotonic())
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                if time.monotonic() >= end:
                    return
                continue
            try:
                data, _ = self.sock.recvfrom(65535)
            except (BlockingIOError, ConnectionRefusedError):
                continue
            m = _STATUS.match(data)
            if m:
                code = int(m.group(1))
                result.codes[code] += 1
                if code >= 300:
                    self._ack(data)
            elif data.strip():
                result.requests[data.split(b" ", 1)[0].decode("latin-1")[:20]] += 1
                self._answer_request(data)

    def _ack(self, response: bytes) -> None:
        f = dialog_fields(response)
        if f is None or f["method"].upper() != b"INVITE" or f["call-id"] not in self._ruri:
            return
        f["ruri"] = self._ruri[f["call-id"]]
        self._send(_request(b"ACK", f, f["to"]))

    def _answer_request(self, data: bytes) -> None:
        """Answer what the unit sends us (a BYE, an OPTIONS) with 200, so it has nothing to retry."""
        if data.startswith(b"ACK "):
            return
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        keep = [h for h in head[1:] if re.match(rb"(?i)(via|v|from|f|to|t|call-id|i|cseq)[ \t]*:", h)]
        self._send(b"\r\n".join([b"SIP/2.0 200 OK", *keep, b"Content-Length: 0", b"", b""]))

    def burst(self, messages: Iterable[bytes], rate: float = 100.0, settle: float = 1.0,
              cancel_after: float | None = None) -> BurstResult:
        """Send messages at `rate` per second, then keep reading responses for `settle` seconds.

        With `cancel_after`, every INVITE that names enough for it is CANCELed that many seconds
        after it was sent (calls that ring and end in quick succession)."""
        result = BurstResult()
        gap = 1.0 / rate if rate > 0 else 0.0
        plan: list[tuple[float, int, bytes]] = []
        for i, msg in enumerate(messages):
            plan.append((i * gap, 0, msg))
            f = dialog_fields(msg)
            if f is not None and f["method"].upper() == b"INVITE":
                self._ruri[f["call-id"]] = f["ruri"]
            if cancel_after is not None:
                cancel = cancel_for(msg)
                if cancel is not None:
                    plan.append((i * gap + cancel_after, 1, cancel))
        plan.sort(key=lambda p: (p[0], p[1]))
        start = time.monotonic()
        for due, kind, msg in plan:
            self._drain(result, max(0.0, start + due - time.monotonic()))
            self._send(msg)
            if kind == 0:
                result.sent += 1
            else:
                result.cancels += 1
        result.seconds = time.monotonic() - start
        self._drain(result, settle)
        return result

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Flooder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def burst(target: tuple[str, int], messages: Iterable[bytes], source: str = "127.0.0.1",
          rate: float = 100.0, settle: float = 1.0, cancel_after: float | None = None) -> BurstResult:
    """One burst from a fresh socket on `source` (see `Flooder.burst`)."""
    with Flooder(target, source) as f:
        return f.burst(list(messages), rate, settle, cancel_after)


def rfc4475_burst(target: tuple[str, int], count: int = 100, source: str = "127.0.0.1", rate: float = 100.0,
                  settle: float = 1.0, corpus: Path = RFC4475, cancel_after: float | None = None) -> BurstResult:
    """`count` RFC 4475 INVITEs at `rate` from `source`, rewritten to come from (and point back at) it."""
    with Flooder(target, source) as f:
        return f.burst(rfc4475_invites(count, f.host, f.port, corpus), rate, settle, cancel_after)


def sdp(host: str, m_lines: int = 1, media: str = "audio", port: int = 40000) -> bytes:
    """A plain SDP offer with `m_lines` media lines (PCMU/PCMA/G722, each on its own port)."""
    out = [b"v=0", f"o=flood 1 1 IN IP4 {host}".encode(), b"s=-", f"c=IN IP4 {host}".encode(), b"t=0 0"]
    for i in range(m_lines):
        out += [f"m={media} {port + 2 * i} RTP/AVP 0 8 9".encode(), b"a=rtpmap:0 PCMU/8000", b"a=sendrecv"]
    return b"\r\n".join(out) + b"\r\n"


def invite(host: str, port: int, target: tuple[str, int], user: str = "1001", unique: str = "",
           body: bytes | None = None, content_type: str = "application/sdp", extra: list[bytes] | None = None) -> bytes:
    """A well-formed INVITE from host:port to user@target (an SDP offer with one audio line by default)."""
    tag = unique or f"{time.monotonic_ns():x}"
    body = sdp(host) if body is None else body
    head = [
        f"INVITE sip:{user}@{target[0]}:{target[1]} SIP/2.0".encode(),
        f"Via: SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK-{tag}".encode(),
        b"Max-Forwards: 70",
        f"From: <sip:flood@{host}:{port}>;tag=f{tag}".encode(),
        f"To: <sip:{user}@{target[0]}:{target[1]}>".encode(),
        f"Call-ID: flood-{tag}@{host}".encode(),
        b"CSeq: 1 INVITE",
        f"Contact: <sip:flood@{host}:{port}>".encode(),
        *(extra or []),
    ]
    if body:
        head.append(f"Content-Type: {content_type}".encode())
    head.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def ctl_rows(unit: "Unit") -> list[dict[str, Any]] | None:
    """The call table as `kiosk ctl calls` prints it (None when that fails)."""
    out = unit.ctl("calls", timeout=15)
    if not out.ok or not isinstance(out.out, dict):
        return None
    data = out.out.get("data", out.out)
    return list(data.get("calls", [])) if isinstance(data, dict) else None


def serves(unit: "Unit", callee: str, caller: "Baresip | None" = None, line_user: str = "1001",
           timeout: float = 15.0) -> dict[str, Any]:
    """After a burst: is the unit alive, registered, without leftover rows, and does it place a call to
    `callee` and take one from `caller` (a baresip phone)?  A report; `report["ok"]` sums it up.

    Calls of the burst that still ring are hung up first, as the operator would."""
    from .proc import wait_until

    r: dict[str, Any] = {"alive": bool(unit.proc and unit.proc.running())}
    if not r["alive"]:
        r["ok"] = False
        return r
    for row in unit.calls():
        if row["state"] in ("ringing", "early", "dialling"):
            unit.request("select", rows=[row["id"]])
            unit.request("hangup")
    wait_until(lambda: not unit.calls(), timeout, 0.2)
    rows = ctl_rows(unit)
    r["rows_left"] = rows
    r["registered"] = wait_until(unit.all_registered, timeout, 0.2)
    dial = unit.ctl("dial", callee)
    r["dial_rc"], r["dial_err"] = dial.rc, dial.err
    r["placed"] = dial.ok and wait_until(lambda: any(c["state"] == "talking" for c in unit.calls()), timeout, 0.1)
    unit.ctl("hangup")
    r["placed_ended"] = wait_until(lambda: not unit.calls(), timeout, 0.1)
    r["taken"] = None
    if caller is not None:
        try:
            caller.dial(line_user)
        except Exception as exc:  # noqa: BLE001 - reported, not raised: the report tells what failed
            r["caller_error"] = str(exc)
        rang = wait_until(lambda: any(c["state"] == "ringing" for c in unit.calls()), timeout, 0.1)
        answered = rang and unit.ctl("answer").ok
        r["taken"] = bool(answered and wait_until(
            lambda: any(c["state"] == "talking" for c in unit.calls()), timeout, 0.1))
        unit.ctl("hangup")
        r["taken_ended"] = wait_until(lambda: not unit.calls(), timeout, 0.1)
    r["alive_at_end"] = bool(unit.proc and unit.proc.running())
    r["ok"] = bool(r["alive"] and rows == [] and r["registered"] and r["placed"] and r["placed_ended"]
                   and r["taken"] is not False and r.get("taken_ended", True) and r["alive_at_end"])
    return r


def unit_address(unit: "Unit") -> tuple[str, int]:
    """The (host, port) a lab unit listens on for SIP, from its profile's `[sip] listen`."""
    m = re.search(r'(?m)^listen = "([0-9.]+):([0-9]+)"', unit.profile_text)
    if m is None:
        raise ValueError("the unit's profile has no host:port listen address")
    return m.group(1), int(m.group(2))


# --- generated INVITEs (hypothesis strategies; hypothesis is a test dependency) ---------------

_CONTENT_TYPES = [
    "application/sdp", "APPLICATION/SDP", "application/sdp; charset=utf-8", "application/SDP;;;",
    "multipart/mixed;boundary=zz", "multipart/alternative", "text/plain", "application/isup",
    "application/octet-stream", "image/gif", "application/sdp, text/plain", "", ";", "x/" + "y" * 300,
]
_HEADERS = ["Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq", "Contact", "Content-Type", "Content-Length"]


def invite_strategy(host: str, port: int, target: tuple[str, int]) -> Any:
    """A hypothesis strategy of INVITE datagrams from host:port to the unit at target.

    Missing, repeated and enormous headers, compact and odd-cased names, odd content types,
    no body, valid SDP with 0 to 40 m-lines, broken SDP, binary and multipart bodies, wrong
    Content-Length, raw bytes of strange encodings (NUL, Latin-1, invalid UTF-8, control
    characters).  Every host in it is host (the sender, on loopback) or the target: nothing
    the unit answers or calls can leave the machine.
    """
    from hypothesis import strategies as st

    tgt = f"{target[0]}:{target[1]}".encode()
    me = f"{host}:{port}".encode()
    weird = st.sampled_from([b"\x00", b"\xff\xfe", b"\xe9t\xe9", "Жёлтый".encode(), b"\xc3\x28", b"\x1b[0m", b"%00",
                             b"\r", b"\n", b" \r\n ", b";;", b",", b"<", b">", b'"', b"\\", b"sip:", b"\t"])
    text = st.lists(st.one_of(st.binary(max_size=8), weird, st.sampled_from([b"a", b"1", b"tag", b"="])),
                    max_size=6).map(b"".join)
    enormous = st.sampled_from([1_000, 8_000, 30_000, 60_000]).flatmap(
        lambda n: st.sampled_from([b"a", b"%", b"\xff", b"sip:x@" + me + b",", b" "]).map(lambda c: (c * n)[:n]))
    rtp_port = st.integers(0, 70000)
    codecs = st.lists(st.sampled_from([b"0", b"8", b"9", b"101", b"127", b"-1", b"999", b"x"]), max_size=5).map(b" ".join)
    m_line = st.tuples(st.sampled_from([b"audio", b"video", b"application", b"AUDIO", b"text", b"zzz"]),
                       rtp_port, st.sampled_from([b"RTP/AVP", b"RTP/SAVP", b"UDP/TLS/RTP/SAVPF", b"TCP", b""]),
                       codecs).map(lambda t: b"m=%s %d %s %s" % t)
    sdp_ok = st.one_of(st.sampled_from([1, 2, 16, 40]), st.integers(1, 40)).map(lambda n: sdp(host, n))
    sdp_lines = st.lists(st.one_of(m_line, st.sampled_from([
        b"v=0", b"v=9", f"o=- 1 1 IN IP4 {host}".encode(), b"s=-", f"c=IN IP4 {host}".encode(), b"c=IN IP6 ::1",
        b"c=IN IP4 0.0.0.0", b"t=0 0", b"a=sendonly", b"a=inactive", b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:",
        b"a=rtcp-mux", b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x", b"b=AS:-1", b"=", b"x"])), max_size=45)
    sdp_broken = sdp_lines.map(lambda ls: b"\r\n".join(ls) + b"\r\n")
    multipart = st.tuples(sdp_ok, st.binary(max_size=100)).map(
        lambda t: b"--zz\r\nContent-Type: application/sdp\r\n\r\n" + t[0] + b"\r\n--zz\r\nContent-Type: x/y\r\n\r\n"
        + t[1] + b"\r\n--zz--\r\n")
    # Weighted towards offers pjsua accepts: those are what take media sockets.
    body = st.one_of(sdp_ok, sdp_ok, sdp_ok, st.just(b""), sdp_broken, multipart, st.binary(max_size=300), enormous)

    mutations = st.lists(st.sampled_from([
        "missing", "repeat", "enormous", "garbage", "ctype", "length", "cseq", "max-forwards", "contact",
        "first-line", "compact", "permute", "extra"]), max_size=3)

    @st.composite
    def build(draw: Any) -> bytes:
        # A valid INVITE, then 0 to 3 mutations: most of them still reach pjsua's INVITE handling.
        tag = draw(st.integers(0, 2**48)).__format__("x")
        b = draw(body)
        values = {
            "Via": b"SIP/2.0/UDP " + me + b";rport;branch=z9hG4bK" + tag.encode(),
            "Max-Forwards": b"70",
            "From": b"<sip:fuzz@" + me + b">;tag=" + tag.encode(),
            "To": b"<sip:1001@" + tgt + b">",
            "Call-ID": b"fuzz-" + tag.encode() + b"@" + host.encode(),
            "CSeq": b"1 INVITE",
            "Contact": b"<sip:fuzz@" + me + b">",
            "Content-Type": b"application/sdp",
            "Content-Length": str(len(b)).encode(),
        }
        names = {n: n.encode() for n in _HEADERS}
        counts = {n: 1 for n in _HEADERS}
        extra: list[bytes] = []
        first = b"INVITE sip:1001@" + tgt + b" SIP/2.0"
        order_shuffled = False
        header = st.sampled_from(_HEADERS)
        for mut in draw(mutations):
            if mut == "missing":
                counts[draw(header)] = 0
            elif mut == "repeat":
                counts[draw(header)] = draw(st.sampled_from([2, 3, 20]))
            elif mut == "enormous":
                values[draw(header)] = draw(enormous)
            elif mut == "garbage":
                name = draw(header)
                values[name] = values[name] + draw(text)
            elif mut == "ctype":
                values["Content-Type"] = draw(st.sampled_from(_CONTENT_TYPES)).encode()
            elif mut == "length":
                values["Content-Length"] = draw(st.sampled_from(
                    [b"0", b"-1", b"99999", str(len(b) + 7).encode(), str(max(0, len(b) - 5)).encode(), b"abc"]))
            elif mut == "cseq":
                values["CSeq"] = draw(st.sampled_from([b"4294967296 INVITE", b"1 BYE", b"INVITE", b"-5 INVITE", b"0 INVITE"]))
            elif mut == "max-forwards":
                values["Max-Forwards"] = draw(st.sampled_from([b"0", b"-1", b"99999999999", b"x"]))
            elif mut == "contact":
                values["Contact"] = draw(st.sampled_from([b"*", b"<>", b"sip:fuzz@" + me, b"<sip:fuzz@" + me + b">;q=9"]))
            elif mut == "first-line":
                first = b"INVITE " + draw(st.sampled_from([
                    b"sip:" + tgt, b"sips:1001@" + tgt, b"tel:1001", b"<sip:1001@" + tgt + b">", b"sip:%00@" + tgt,
                    b"sip:1001@" + tgt + b";lr", b"sip:\xff@" + tgt])) + draw(st.sampled_from(
                    [b" SIP/2.0", b" SIP/3.0", b"  SIP/2.0 ", b""]))
            elif mut == "compact":
                for name, short in (("Via", b"v"), ("From", b"f"), ("To", b"t"), ("Call-ID", b"i"), ("Contact", b"m"),
                                    ("Content-Type", b"c"), ("Content-Length", b"l")):
                    names[name] = draw(st.sampled_from([short, name.upper().encode(), name.lower().encode()]))
            elif mut == "permute":
                order_shuffled = True
            elif mut == "extra":
                extra.append(draw(st.sampled_from([b"X-Fuzz", b"Subject", b"Require", b"Supported", b"Replaces",
                                                   b"Allow", b"Accept", b"Session-Expires", b"Content-Encoding"]))
                             + draw(st.sampled_from([b": ", b":", b" : ", b":\r\n "])) + draw(text))
        lines = [names[n] + b": " + values[n] for n in _HEADERS for _ in range(counts[n])] + extra
        if order_shuffled:
            lines = draw(st.permutations(lines))
        return b"\r\n".join([first, *lines]) + b"\r\n\r\n" + b

    return build()


def burst_strategy(host: str, port: int, target: tuple[str, int], max_size: int = 40) -> Any:
    """Bursts: (datagrams, cancel_after) with 5 to max_size generated INVITEs, each CANCELed 10 or 50 ms later or not."""
    from hypothesis import strategies as st

    return st.tuples(st.lists(invite_strategy(host, port, target), min_size=min(5, max_size), max_size=max_size),
                     st.sampled_from([None, 0.01, 0.05]))
