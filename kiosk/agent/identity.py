"""Who is calling, for whom, and whether to answer at once: read from an INVITE's headers.

Pure text functions (no pjsua2), fed the INVITE exactly as pjsip received it
(`OnIncomingCallParam.rdata.wholeMsg`), so they are tested over raw INVITEs:

- `asserted_identity`: P-Asserted-Identity (RFC 3325), else Remote-Party-ID
  (the older draft some PBXs still send): the caller as the server vouches for
  it. Only worth believing from an identity host -- the caller's own phone
  can put anything there -- and the agent decides that, not this module.
- `original_target`: the number the caller dialled when the call reached us
  diverted or from a queue: History-Info (RFC 7044; the first entry is the
  original Request-URI) or Diversion (RFC 5806; each diverting hop *prepends*
  one, so the last is the original).
- `intercom`: Call-Info `;answer-after=N` (RFC 7462 / the Polycom and Yealink
  convention) or Alert-Info `;info=alert-autoanswer` (the Broadsoft convention,
  also with `;answer-after=`): the caller asks the unit to answer by itself.

Header values are parsed the way SIP writes them, not with one regex: lines
folded onto the next (a continuation starts with a space or a tab), a header
given several times or several values in one header separated by commas,
quoted display names that contain commas, semicolons or escaped quotes, and
URIs in angle brackets that carry their own `;` parameters. Anything this
cannot make sense of yields "nothing found", never an exception: a malformed
header must never cost the call (the agent then uses From).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

__all__ = [
    "NameAddr", "headers", "header_values", "split_values", "parse_name_addr", "asserted_identity",
    "original_target", "intercom", "answered_elsewhere", "party", "user_part", "InviteInfo", "read_invite",
]

#: Compact header names (RFC 3261 section 7.3.3 and later RFCs) -> full names, lower case.
COMPACT = {"f": "from", "t": "to", "m": "contact", "i": "call-id", "v": "via", "l": "content-length",
           "c": "content-type", "k": "supported", "e": "content-encoding", "s": "subject"}

#: The largest answer-after we take (seconds): anything longer is a server's mistake, not a plan.
MAX_ANSWER_AFTER_S = 3600


@dataclass(frozen=True)
class NameAddr:
    """One `"Display" <uri>;params` value: display name (unquoted), the URI, the header parameters."""

    display: str
    uri: str
    params: dict[str, str] = field(default_factory=dict)


def headers(msg: str) -> list[tuple[str, str]]:
    """The message's header fields in order, as (lower-case full name, value), folded lines unfolded.

    Stops at the blank line before the body; the start line is skipped.
    """
    head = re.split(r"\r?\n\r?\n", msg, maxsplit=1)[0]
    lines = re.split(r"\r?\n", head)
    out: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if out:  # a continuation of the previous header
                name, value = out[-1]
                out[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip().lower()
        out.append((COMPACT.get(name, name), value.strip()))
    return out


def split_values(value: str) -> list[str]:
    """A header's comma-separated values; commas inside quotes or angle brackets are not separators."""
    out: list[str] = []
    cur: list[str] = []
    quoted = escaped = False
    angle = 0
    for ch in value:
        if quoted:
            cur.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
            continue
        if ch == '"':
            quoted = True
        elif ch == "<":
            angle += 1
        elif ch == ">" and angle:
            angle -= 1
        elif ch == "," and not angle:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return [v for v in out if v]


def header_values(msg: str, *names: str) -> list[str]:
    """Every value of the named headers (any of `names`, lower case), in message order."""
    wanted = {n.lower() for n in names}
    return [v for name, value in headers(msg) if name in wanted for v in split_values(value)]


def _params(text: str) -> dict[str, str]:
    """`;a=1;b="x;y";c` -> {"a": "1", "b": "x;y", "c": ""} (names lower case)."""
    out: dict[str, str] = {}
    for part in _split_unquoted(text, ";"):
        part = part.strip()
        if not part:
            continue
        name, _, val = part.partition("=")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = _unquote(val[1:-1])
        out[name.strip().lower()] = val
    return out


def _split_unquoted(text: str, sep: str) -> list[str]:
    out, cur, quoted, escaped = [], [], False, False
    for ch in text:
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == sep:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur))
    return out


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_name_addr(value: str) -> NameAddr | None:
    """`"Name, Inc" <sip:1@h;user=phone>;tag=x` (or a bare `sip:1@h;tag=x`) -> NameAddr; None if not one."""
    value = value.strip()
    if not value:
        return None
    display = ""
    rest = value
    if rest.startswith('"'):
        i, escaped = 1, False
        while i < len(rest):
            ch = rest[i]
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                break
            i += 1
        else:
            return None  # an unterminated quote
        display = _unquote(rest[1:i]).strip()
        rest = rest[i + 1:].lstrip()
        if not rest.startswith("<"):
            return None
    if "<" in rest:
        before, _, after = rest.partition("<")
        if not display:
            display = before.strip()
        uri, close, tail = after.partition(">")
        if not close:
            return None
        uri = uri.strip()
        params = _params(tail)
    else:
        # addr-spec without brackets: every ';' starts a header parameter, not a URI one.
        uri, _, tail = rest.partition(";")
        uri = uri.strip()
        params = _params(tail)
        if " " in uri:
            return None
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri):
        return None
    return NameAddr(display, uri, params)


def user_part(uri: str) -> str:
    """`sip:+7 495@h;x` -> `+7 495` (unescaped); `tel:+1555;phone-context=x` -> `+1555`; "" if none."""
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme == "tel":
        return unquote(rest.split(";", 1)[0])
    if scheme not in ("sip", "sips"):
        return ""
    if "@" not in rest:
        return ""
    return unquote(rest.split("@", 1)[0].split(";", 1)[0].split(":", 1)[0])


def party(addr: NameAddr) -> str:
    """As the desk shows a remote party: `Name <uri>`, or the bare URI without a name."""
    return f"{addr.display} <{addr.uri}>" if addr.display else addr.uri


def asserted_identity(msg: str) -> str:
    """The caller by P-Asserted-Identity, else Remote-Party-ID (`Name <uri>`); "" when neither is usable.

    A P-Asserted-Identity may carry a sip: and a tel: value (RFC 3325): the
    sip/sips one is preferred, and a display name given only on the other is kept.
    For Remote-Party-ID only `party=calling` (the default) values count.
    """
    try:
        addrs = [a for a in map(parse_name_addr, header_values(msg, "p-asserted-identity")) if a]
        if not addrs:
            addrs = [a for a in map(parse_name_addr, header_values(msg, "remote-party-id"))
                     if a and a.params.get("party", "calling").lower() == "calling"]
        if not addrs:
            return ""
        sip = [a for a in addrs if a.uri.lower().startswith(("sip:", "sips:"))]
        best = (sip or addrs)[0]
        if not best.display:
            named = next((a.display for a in addrs if a.display), "")
            best = NameAddr(named, best.uri, best.params)
        return party(best)
    except Exception:  # noqa: BLE001 - a header we cannot read must never cost the call
        return ""


def _who(addr: NameAddr) -> str:
    return addr.display or user_part(addr.uri)


def _hi_index(addr: NameAddr) -> tuple[int, ...] | None:
    idx = addr.params.get("index", "")
    try:
        return tuple(int(p) for p in idx.split(".")) if idx else None
    except ValueError:
        return None


def original_target(msg: str) -> str:
    """Whom the caller first called: History-Info's first entry, else Diversion's last; "" when neither.

    The display name if the entry has one, else the URI's user part; "" when that original target
    is the number in To (a server that adds History-Info to every call, diverted or not).
    History-Info entries are put in `index` order when every entry has one
    (they may come over several headers, in any order); otherwise message order.
    """
    try:
        to = [a for a in map(parse_name_addr, header_values(msg, "to")) if a]
        own = user_part(to[0].uri) if to else ""
        hist = [a for a in map(parse_name_addr, header_values(msg, "history-info")) if a]
        if hist:
            indexed = [(_hi_index(a), n, a) for n, a in enumerate(hist)]
            if all(i is not None for i, _, _ in indexed):
                hist = [a for _, _, a in sorted(indexed, key=lambda x: (x[0], x[1]))]
            if own and user_part(hist[0].uri) == own:
                return ""  # the call reached the number it was dialled to: not diverted (a PBX that always adds one)
            who = _who(hist[0])
            if who:
                return who
        div = [a for a in map(parse_name_addr, header_values(msg, "diversion")) if a]
        if div and not (own and user_part(div[-1].uri) == own):
            return _who(div[-1])
    except Exception:  # noqa: BLE001
        pass
    return ""


def _seconds(text: str) -> int | None:
    try:
        n = int(text.strip())
    except (ValueError, AttributeError):
        return None
    return n if 0 <= n <= MAX_ANSWER_AFTER_S else None


def intercom(msg: str) -> tuple[bool, int | None]:
    """Whether the INVITE asks to be answered by itself, and after how many ms (None: not said).

    Call-Info `<uri>;answer-after=N`, or Alert-Info `<uri>;info=alert-autoanswer`
    (`;answer-after=N` there too). An answer-after that is not a number is a request with no delay given.
    """
    try:
        asked, after = False, None
        for value in header_values(msg, "call-info"):
            addr = parse_name_addr(value)
            if addr is not None and "answer-after" in addr.params:
                asked = True
                after = _seconds(addr.params["answer-after"]) if after is None else after
        for value in header_values(msg, "alert-info"):
            addr = parse_name_addr(value)
            if addr is None:
                continue
            auto = addr.params.get("info", "").lower() in ("alert-autoanswer", "autoanswer", "intercom")
            if auto or "answer-after" in addr.params:
                asked = True
                if "answer-after" in addr.params and after is None:
                    after = _seconds(addr.params["answer-after"])
        return asked, (after * 1000 if asked and after is not None else None)
    except Exception:  # noqa: BLE001
        return False, None


def answered_elsewhere(msg: str) -> bool:
    """Whether a CANCEL says the call was answered elsewhere: `Reason: SIP ;cause=200` (RFC 3326)."""
    try:
        if not msg.startswith("CANCEL "):
            return False
        for value in header_values(msg, "reason"):
            protocol, _, tail = value.partition(";")
            if protocol.strip().upper() == "SIP" and _params(tail).get("cause", "").strip() == "200":
                return True
    except Exception:  # noqa: BLE001
        pass
    return False


@dataclass(frozen=True)
class InviteInfo:
    """What the agent takes from an INVITE for IncomingCall."""

    asserted: str = ""  # "" = none (use From)
    via: str = ""
    intercom: bool = False
    answer_after_ms: int | None = None


def read_invite(msg: str) -> InviteInfo:
    """Everything above at once; never raises."""
    try:
        asked, after = intercom(msg)
        return InviteInfo(asserted_identity(msg), original_target(msg), asked, after)
    except Exception:  # noqa: BLE001
        return InviteInfo()
