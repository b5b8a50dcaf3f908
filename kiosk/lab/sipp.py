"""SIPp as a scripted far end for the lab: run scenarios, read what SIPp saw.

`Sipp` runs Debian's sipp (sip-tester, 3.6) as a separate process with its
output, message trace (-trace_msg) and error trace in its work directory, so a
test can assert on the exact requests SIPp received (`received_messages()`).
`uas_scenario()` and `uac_scenario()` generate the scenarios the lab needs: a
UAS that rings, answers with SDP and waits for BYE (optionally accepting a
REFER first), and a UAC that calls a target and waits for the far end's BYE.
`cancel_scenario()` is a UAC for load: INVITE, then CANCEL after a provisional
response (at once, or after the far end has rung for a while), taking any
final answer instead (486 busy, 403 refused, ...) without failing the call;
`invite_outcomes()` / `Sipp.final_codes()` read from the trace which final
response each INVITE got.
SIPp sends no RTP here: it only puts an SDP in its messages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from collections.abc import Sequence

from .ports import free_port, port_is_free
from .proc import LabProcess, LabProcessError

__all__ = [
    "Sipp", "SippError", "uas_scenario", "uac_scenario", "cancel_scenario", "SIPP_EXIT_CODES", "parse_trace",
    "invite_outcomes", "FINAL_CODES",
]

SIPP_EXIT_CODES = {
    0: "all calls were successful",
    1: "at least one call failed",
    97: "exit on internal command",
    99: "normal exit without calls processed",
    255: "fatal error",
    254: "fatal error binding a socket",
}

_HEAD = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'

_SDP = """v=0
o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=kiosk-lab
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv"""


class SippError(LabProcessError):
    """SIPp failed to start or its scenario failed."""


def _reply(status: str, to_tag: bool = True, sdp: bool = False, record_route: bool = True) -> str:
    """A response to the last request received, echoing its dialog headers."""
    lines = [
        f"SIP/2.0 {status}",
        "[last_Via:]",
        "[last_From:]",
        "[last_To:];tag=[pid]SIPpTag01[call_number]" if to_tag else "[last_To:]",
        "[last_Call-ID:]",
        "[last_CSeq:]",
    ]
    if record_route:
        lines.append("[last_Record-Route:]")
    lines.append("Contact: <sip:[local_ip]:[local_port];transport=[transport]>")
    if sdp:
        lines += ["Content-Type: application/sdp", "Content-Length: [len]", "", _SDP]
    else:
        lines.append("Content-Length: 0")
    return "\n".join(lines)


def _send(body: str, retrans: int | None = None) -> str:
    attr = f' retrans="{retrans}"' if retrans else ""
    return f"  <send{attr}>\n    <![CDATA[\n\n{body}\n\n    ]]>\n  </send>\n"


def uas_scenario(
    ring_ms: int = 200,
    bye_timeout_ms: int = 30000,
    accept_refer: bool = False,
    timewait_ms: int = 500,
) -> str:
    """SIPp XML for a UAS: INVITE -> 180, (ring_ms) -> 200 with SDP, ACK, then wait for BYE -> 200.

    With `accept_refer`, an in-dialog REFER after the ACK is answered 202 and
    followed by a NOTIFY carrying "SIP/2.0 200 OK" (the transfer succeeded);
    then the BYE is awaited as usual. A missing BYE fails the call after
    `bye_timeout_ms` (SIPp exit code 1).
    """
    parts = [_HEAD, '<scenario name="kiosk lab UAS">\n']
    parts.append('  <recv request="INVITE" crlf="true" rrs="true"/>\n')
    parts.append(_send(_reply("180 Ringing")))
    if ring_ms > 0:
        parts.append(f'  <pause milliseconds="{int(ring_ms)}"/>\n')
    parts.append(_send(_reply("200 OK", sdp=True), retrans=500))
    parts.append('  <recv request="ACK" rtd="true" crlf="true"/>\n')
    if accept_refer:
        parts.append(f'  <recv request="REFER" timeout="{int(bye_timeout_ms)}"/>\n')
        parts.append(_send(_reply("202 Accepted", to_tag=False, record_route=False)))
        notify = "\n".join(
            [
                "NOTIFY [next_url] SIP/2.0",
                "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
                # In the dialog the far end is the From of its requests.
                "From: [$remote_to];tag=[pid]SIPpTag01[call_number]",
                "To: [$remote_from]",
                "[routes]",
                "Call-ID: [call_id]",
                "CSeq: 2 NOTIFY",
                "Contact: <sip:[local_ip]:[local_port];transport=[transport]>",
                "Max-Forwards: 70",
                "Event: refer",
                "Subscription-State: terminated;reason=noresource",
                "Content-Type: message/sipfrag;version=2.0",
                "Content-Length: [len]",
                "",
                "SIP/2.0 200 OK",
            ]
        )
        parts.append(_send(notify, retrans=500))
        parts.append('  <recv response="200"/>\n')
    parts.append(f'  <recv request="BYE" timeout="{int(bye_timeout_ms)}"/>\n')
    parts.append(_send(_reply("200 OK", to_tag=False, record_route=False)))
    parts.append(f'  <timewait milliseconds="{int(timewait_ms)}"/>\n')
    parts.append("</scenario>\n")
    xml = "".join(parts)
    if accept_refer:
        # Keep the peer's From/To (as seen in the INVITE) for the NOTIFY.
        xml = xml.replace(
            '<recv request="INVITE" crlf="true" rrs="true"/>',
            '<recv request="INVITE" crlf="true" rrs="true">\n'
            "    <action>\n"
            '      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="remote_from"/>\n'
            '      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="remote_to"/>\n'
            "    </action>\n"
            "  </recv>",
        )
    return xml


def _uac_invite(to_user: str | None, request_uri: str | None, from_user: str, contact: str | None,
                subject: str, headers: Sequence[str] = (), from_name: str | None = None) -> tuple[str, str, str, str]:
    """(Request-URI, From, Contact, the INVITE with SDP) of a SIPp UAC scenario.

    `headers`: whole header lines added to the INVITE (P-Asserted-Identity, Diversion, Call-Info ...);
    `from_name`: a display name in From."""
    user = to_user if to_user is not None else "[service]"
    ruri = request_uri or f"sip:{user}@[remote_ip]:[remote_port]"
    shown = f'"{from_name}" ' if from_name else ""
    from_hdr = f"From: {shown}<sip:{from_user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]"
    contact_hdr = f"Contact: <{contact or f'sip:{from_user}@[local_ip]:[local_port];transport=[transport]'}>"
    invite = "\n".join([
        f"INVITE {ruri} SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
        from_hdr,
        f"To: <{ruri}>",
        "Call-ID: [call_id]",
        "CSeq: 1 INVITE",
        contact_hdr,
        "Max-Forwards: 70",
        f"Subject: {subject}",
        *headers,
        "Content-Type: application/sdp",
        "Content-Length: [len]",
        "",
        _SDP,
    ])
    return ruri, from_hdr, contact_hdr, invite


def uac_scenario(
    to_user: str | None = None,
    request_uri: str | None = None,
    from_user: str = "sipp",
    bye_timeout_ms: int = 30000,
    answer_timeout_ms: int = 30000,
    timewait_ms: int = 500,
    contact: str | None = None,
    headers: Sequence[str] = (),
    from_name: str | None = None,
) -> str:
    """SIPp XML for a UAC: INVITE with SDP, 1xx, 200 -> ACK, then wait for the far end's BYE -> 200.

    The Request-URI is `request_uri`, else sip:<to_user or [service]>@remote
    (set `-s`, or the `service` argument of `Sipp`). The call fails if no 200
    comes within `answer_timeout_ms` or no BYE within `bye_timeout_ms`.
    `contact` replaces SIPp's own Contact URI (e.g. to have in-dialog or
    pickup requests sent to another process).
    """
    ruri, from_hdr, contact_hdr, invite = _uac_invite(to_user, request_uri, from_user, contact, "kiosk lab call",
                                                      headers, from_name)
    ack = "\n".join(
        [
            "ACK [next_url] SIP/2.0",
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
            from_hdr,
            "[last_To:]",
            "[routes]",
            "Call-ID: [call_id]",
            "CSeq: 1 ACK",
            contact_hdr,
            "Max-Forwards: 70",
            "Content-Length: 0",
        ]
    )
    parts = [_HEAD, '<scenario name="kiosk lab UAC">\n']
    parts.append(_send(invite, retrans=500))
    parts.append('  <recv response="100" optional="true"/>\n')
    parts.append('  <recv response="180" optional="true"/>\n')
    parts.append('  <recv response="183" optional="true"/>\n')
    parts.append(f'  <recv response="200" rtd="true" rrs="true" timeout="{int(answer_timeout_ms)}"/>\n')
    parts.append(_send(ack))
    parts.append(f'  <recv request="BYE" timeout="{int(bye_timeout_ms)}"/>\n')
    parts.append(_send(_reply("200 OK", to_tag=False, record_route=False)))
    parts.append(f'  <timewait milliseconds="{int(timewait_ms)}"/>\n')
    parts.append("</scenario>\n")
    return "".join(parts)


#: Final responses to an INVITE that `cancel_scenario` takes as an outcome (ACK, call done) rather
#: than as an unexpected message. 487 is the answer to our CANCEL; the others are refusals.
FINAL_CODES = (400, 403, 404, 408, 480, 481, 482, 483, 484, 486, 487, 488, 491, 500, 501, 502, 503, 504, 600, 603, 604, 606)


def cancel_scenario(
    to_user: str | None = None,
    request_uri: str | None = None,
    from_user: str = "sipp",
    cancel_after_ms: int = 2000,
    wait_ring: bool = True,
    final_timeout_ms: int = 32000,
    timewait_ms: int = 200,
    headers: Sequence[str] = (),
    from_name: str | None = None,
) -> str:
    """SIPp XML for a UAC that rings a target and then CANCELs: INVITE (SDP) ... CANCEL -> 200, 487 -> ACK.

    - `wait_ring=True`: after 180/183 the far end rings for `cancel_after_ms`,
      then the CANCEL goes out (the ring timer restarts on a repeated 18x).
      `wait_ring=False`: the same from the first provisional response, 100
      Trying included; with `cancel_after_ms=0` the CANCEL goes out as soon as
      that first provisional is in ("INVITE then CANCEL").
    - Any final response from `FINAL_CODES` before (or instead of) the 487 ends
      the call normally: ACK, done; the call counts as successful for SIPp. So
      does a 481 to the CANCEL. What matters is which final response each INVITE
      got: read it from the trace with `Sipp.final_codes()`.
    - A 2xx (the far end answered although nobody should) is an unexpected
      message: the call fails (SIPp sends its default BYE) and the exit code is 1.
    - No final response within `final_timeout_ms` of the CANCEL (or of the
      INVITE, with no provisional) fails the call.

    The Request-URI is `request_uri`, else sip:<to_user or [service]>@remote.
    CANCEL and ACK reuse the INVITE's Via (its branch) from the last response.
    """
    ruri, from_hdr, contact_hdr, invite = _uac_invite(to_user, request_uri, from_user, None, "kiosk lab load",
                                                      headers, from_name)
    cancel = "\n".join([
        f"CANCEL {ruri} SIP/2.0",
        "[last_Via:]",
        from_hdr,
        f"To: <{ruri}>",
        "Call-ID: [call_id]",
        "CSeq: 1 CANCEL",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ])
    ack = "\n".join([
        f"ACK {ruri} SIP/2.0",
        "[last_Via:]",
        from_hdr,
        "[last_To:]",
        "Call-ID: [call_id]",
        "CSeq: 1 ACK",
        contact_hdr,
        "Max-Forwards: 70",
        "Content-Length: 0",
    ])

    def group(codes: tuple[int, ...], next_label: str, txn: str = "invite") -> list[str]:
        return [f'<recv response="{code}" optional="true" response_txn="{txn}" next="{next_label}"' for code in codes]

    def finals(next_label: str, skip: tuple[int, ...] = ()) -> list[str]:
        return group(tuple(c for c in FINAL_CODES if c not in skip), next_label)

    def wait(recvs: list[str], timeout_ms: int, ontimeout: str | None = None) -> str:
        # SIPp takes a group's receive timeout from the message it is waiting at: the first
        # one of the group. The group's last message must be mandatory.
        *head, last = recvs
        last = last.replace(' optional="true"', "")
        recvs = [*head, last]
        extra = f' timeout="{max(1, int(timeout_ms))}"' + (f' ontimeout="{ontimeout}"' if ontimeout else "")
        recvs[0] += extra
        return "".join(f"  {r}/>\n" for r in recvs)

    delay = max(0, int(cancel_after_ms))
    final_ms = int(final_timeout_ms)
    p = [_HEAD, '<scenario name="kiosk lab INVITE then CANCEL">\n']
    p.append(f'  <send retrans="500" start_txn="invite">\n    <![CDATA[\n\n{invite}\n\n    ]]>\n  </send>\n')
    # 1. before any 18x (with wait_ring=False: before any provisional response)
    ringing = (180, 183) if wait_ring else (100, 180, 183)
    p.append('  <label id="1"/>\n')
    first = group((100,), "1") if wait_ring else []
    first += group(ringing, "2" if delay else "3")
    p.append(wait(first + finals("6"), final_ms))
    # 2. ringing: a final answer may come within the ring time, else on to the CANCEL. (A wait
    # with a timeout, not a <pause>: a final response arriving during a pause trips an assertion
    # in SIPp 3.6's transaction matching.)
    if delay:
        p.append('  <label id="2"/>\n')
        p.append(wait(group(ringing, "2") + finals("6"), delay, ontimeout="3"))
    # 3. the CANCEL
    p.append('  <label id="3"/>\n')
    p.append(f'  <send retrans="500" start_txn="cancel">\n    <![CDATA[\n\n{cancel}\n\n    ]]>\n  </send>\n')
    # 4. waiting for the CANCEL's 200 (provisionals and the INVITE's final answer may cross it)
    p.append('  <label id="4"/>\n')
    p.append(wait(group((100, 180, 183), "4") + finals("7") + group((481,), "5", "cancel")
                  + ['<recv response="200" response_txn="cancel"'], final_ms))
    # 5. CANCEL answered: waiting for the INVITE's final response
    p.append('  <label id="5"/>\n')
    p.append(wait(group((100, 180, 183), "5") + finals("6"), final_ms))
    # 6. final response in, nothing else outstanding: ACK and done
    p.append('  <label id="6"/>\n')
    p.append(f'  <send ack_txn="invite" next="8">\n    <![CDATA[\n\n{ack}\n\n    ]]>\n  </send>\n')
    # 7. final response before the CANCEL's own answer: ACK, then take that answer if it comes
    p.append('  <label id="7"/>\n')
    p.append(f'  <send ack_txn="invite">\n    <![CDATA[\n\n{ack}\n\n    ]]>\n  </send>\n')
    p.append(wait(group((481, 200), "8", "cancel"), 2000, ontimeout="8"))
    p.append('  <label id="8"/>\n')
    p.append(f'  <timewait milliseconds="{max(1, int(timewait_ms))}"/>\n')
    p.append("</scenario>\n")
    return "".join(p)


def _cseq(msg: str) -> tuple[int, str]:
    m = re.search(r"^(?:CSeq|cseq)\s*:\s*(\d+)\s+(\S+)", msg, re.M | re.I)
    return (int(m.group(1)), m.group(2).upper()) if m else (0, "")


def _call_id(msg: str) -> str:
    m = re.search(r"^(?:Call-ID|i)\s*:\s*(\S+)", msg, re.M | re.I)
    return m.group(1) if m else ""


def invite_outcomes(messages: list[tuple[str, str]]) -> dict[str, int | None]:
    """Call-ID -> the first final response code SIPp received to its INVITE (None: no final response).

    `messages` are `Sipp.messages()`; every INVITE SIPp sent has an entry.
    """
    out: dict[str, int | None] = {}
    for direction, msg in messages:
        first = msg.split("\n", 1)[0]
        if direction == "sent" and first.startswith("INVITE "):
            out.setdefault(_call_id(msg), None)
        elif direction == "received" and first.startswith("SIP/2.0 "):
            if _cseq(msg)[1] != "INVITE":
                continue
            try:
                code = int(first.split()[1])
            except (IndexError, ValueError):
                continue
            cid = _call_id(msg)
            if code >= 200 and out.get(cid) is None:
                out[cid] = code
    return out


_TRACE_SPLIT = re.compile(r"^-{20,} \d{4}-\d\d-\d\d[ \t].*$", re.M)
_TRACE_HEAD = re.compile(r"^\s*(UDP|TCP|TLS|SCTP)\s+message\s+(received|sent)\b.*?:\s*$", re.M | re.I)


def parse_trace(text: str) -> list[tuple[str, str]]:
    """Split a SIPp -trace_msg log into (direction 'received'|'sent', message text with \\n line ends)."""
    out: list[tuple[str, str]] = []
    for block in _TRACE_SPLIT.split(text.replace("\r\n", "\n")):
        m = _TRACE_HEAD.search(block)
        if not m:
            continue
        out.append((m.group(2).lower(), block[m.end() :].strip()))
    return out


class Sipp:
    """One SIPp process running a scenario (XML text, an XML file, or builtin 'uas'/'uac')."""

    def __init__(
        self,
        workdir: Path,
        scenario_xml: str | Path,
        local_port: int | None = None,
        remote: str | None = None,
        extra_args: Sequence[str] = (),
        local_ip: str = "127.0.0.1",
        calls: int = 1,
        timeout: float | None = 60.0,
        service: str | None = None,
        transport: str = "u1",
        binary: str = "sipp",
    ) -> None:
        self.workdir = Path(workdir)
        self.scenario_xml = scenario_xml
        self.local_ip = local_ip
        self.local_port = local_port if local_port is not None else free_port(local_ip)
        self.remote = remote
        self.extra_args = list(extra_args)
        self.calls = calls
        self.timeout = timeout
        self.service = service
        self.transport = transport
        self.binary = binary
        self.log_path = self.workdir / "sipp.log"
        self.trace_path = self.workdir / "sipp-messages.log"
        self.error_path = self.workdir / "sipp-errors.log"
        self.scenario_path = self.workdir / "scenario.xml"
        self._proc: LabProcess | None = None
        self.returncode: int | None = None

    @property
    def uri(self) -> str:
        """SIP URI of SIPp's socket (user part: `service` or 'sipp')."""
        return f"sip:{self.service or 'sipp'}@{self.local_ip}:{self.local_port}"

    @property
    def address(self) -> str:
        """local_ip:local_port of SIPp."""
        return f"{self.local_ip}:{self.local_port}"

    def _scenario_args(self) -> list[str]:
        sc = self.scenario_xml
        if isinstance(sc, Path):
            return ["-sf", str(sc)]
        if sc.lstrip().startswith("<"):
            self.scenario_path.write_text(sc, encoding="latin-1")
            return ["-sf", str(self.scenario_path)]
        if sc in ("uas", "uac", "regexp", "3pcc-A", "3pcc-B", "3pcc-C-A", "3pcc-C-B", "branchc", "branchs"):
            return ["-sn", sc]
        if Path(sc).is_file():
            return ["-sf", sc]
        raise ValueError(f"scenario must be XML text, an XML file or a builtin name, not {sc!r}")

    def argv(self) -> list[str]:
        """The sipp command line (without the executable's path resolved)."""
        media_port = free_port(self.local_ip, kind="udp", span=4)
        args: list[str] = []
        if self.remote:
            args.append(self.remote)
        args += self._scenario_args()
        args += [
            "-i", self.local_ip,
            "-p", str(self.local_port),
            "-mi", self.local_ip,
            "-mp", str(media_port),
            "-t", self.transport,
            "-m", str(self.calls),
            "-trace_msg", "-message_file", str(self.trace_path),
            "-trace_err", "-error_file", str(self.error_path),
            "-nostdin",
        ]
        if self.service:
            args += ["-s", self.service]
        if self.timeout:
            args += ["-timeout", f"{int(self.timeout)}s", "-timeout_error"]
        return args + self.extra_args

    def start(self, timeout: float = 5.0) -> Sipp:
        """Start SIPp and wait until its SIP port is bound."""
        if self._proc is not None:
            raise SippError("sipp already started")
        exe = shutil.which(self.binary)
        if exe is None:
            raise SippError(f"{self.binary} not found (apt-get install sip-tester)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for p in (self.trace_path, self.error_path):
            p.unlink(missing_ok=True)
        self._proc = LabProcess("sipp", [exe, *self.argv()], self.log_path, self.workdir)
        self._proc.start(env={**os.environ, "TERM": os.environ.get("TERM", "dumb")})
        deadline = time.monotonic() + timeout
        udp = self.transport.startswith("u")
        while port_is_free(self.local_port, self.local_ip, "udp" if udp else "tcp"):
            code = self._proc.poll()
            if code is not None:
                self.returncode = code
                raise SippError(f"sipp exited with {code} at start-up:\n{self._proc.log_tail(30)}")
            if time.monotonic() >= deadline:
                text = self._proc.log_tail(30)
                self.stop()
                raise SippError(f"sipp did not bind {self.address} in {timeout} s:\n{text}")
            time.sleep(0.02)
        return self

    def wait(self, timeout: float | None = None) -> int:
        """Wait for SIPp to finish its calls; return its exit code (see SIPP_EXIT_CODES)."""
        if self._proc is None:
            if self.returncode is not None:
                return self.returncode
            raise SippError("sipp was not started")
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise SippError(f"sipp still running after {timeout} s:\n{self._proc.log_tail(20)}") from None
        self.returncode = code
        self._proc.stop()
        self._proc = None
        return code

    def stop(self) -> int | None:
        """Stop SIPp by PID (SIGTERM, then SIGKILL); return its exit code."""
        if self._proc is not None:
            self.returncode = self._proc.stop(grace=2.0)
            self._proc = None
        return self.returncode

    def running(self) -> bool:
        """True while SIPp runs."""
        return self._proc is not None and self._proc.running()

    def __enter__(self) -> Sipp:
        if self._proc is None and self.returncode is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what SIPp saw -------------------------------------------------------

    def trace_text(self) -> str:
        """The raw -trace_msg log ('' before anything was traced)."""
        try:
            return self.trace_path.read_text(encoding="latin-1")
        except OSError:
            return ""

    def messages(self) -> list[tuple[str, str]]:
        """All traced messages as (direction, text), in order."""
        return parse_trace(self.trace_text())

    def received_messages(self) -> list[str]:
        """Texts of every SIP message SIPp received, in order."""
        return [m for d, m in self.messages() if d == "received"]

    def sent_messages(self) -> list[str]:
        """Texts of every SIP message SIPp sent, in order."""
        return [m for d, m in self.messages() if d == "sent"]

    def received_requests(self, method: str | None = None) -> list[str]:
        """Received requests (optionally only `method`), in order."""
        out = []
        for m in self.received_messages():
            first = m.split("\n", 1)[0]
            if first.startswith("SIP/2.0"):
                continue
            if method is None or first.split(" ", 1)[0].upper() == method.upper():
                out.append(m)
        return out

    def final_codes(self) -> dict[str, int | None]:
        """Call-ID -> final response code to each INVITE SIPp sent (None: none came); see `invite_outcomes`."""
        return invite_outcomes(self.messages())

    def errors_text(self) -> str:
        """SIPp's error log (unexpected messages etc.)."""
        try:
            return self.error_path.read_text(encoding="latin-1")
        except OSError:
            return ""
