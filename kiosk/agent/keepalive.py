"""Keep-alives to each line's server, and the end of calls that reach nobody.

The probes are SIP OPTIONS over small non-blocking UDP sockets of our own, one
connected socket per distinct server (so that an ICMP "port unreachable" shows
at once), read from the agent's periodic job. Not pjsua2's `Account.sendRequest`:
it works (2.15), but its transaction lives 32 s when nobody answers, and one still
pending when the unit stops aborts the process inside libDestroy (its callback
looks up the deleted account: assertion in pjsua_acc_get_user_data, measured).
A probe is sent again after 0.5 and 1.5 s (lost datagrams are no outage) and
counts as unanswered after PROBE_TIMEOUT_S.

Each line probes **its own address of record** (`sip:1001@pbx`, with a Route
to its server: the line's proxy, else its registrar). A registrar that knows the
line relays it to the unit, which answers 200 itself (pjsua does); a server that
answers for its users itself answers too. A 404 (or 480/410) while the line is
registered means the server forgot the registration (a Kamailio restart keeps
nothing): the line registers again at once instead of after `register_expires`.
A server that says 404 even right after a successful REGISTER does not route
OPTIONS to its users: that line then probes the server's own URI, which only
tells up from down.

The line shows unregistered (LineState) as soon as a probe goes unanswered; while
the server is down it is probed every 2-4 s, and on its first answer the line
registers again after a random 0-2 s, so a fleet of units that lost the same
server come back spread over seconds, not all in one burst.

An outgoing call still in CALLING (no 18x, no 2xx: pjsua2 tells nothing of a
100 Trying) CALL_CHECK_S after dialling has its first hop probed once; if that
goes unanswered too, nobody is there and the call is ended with 408 and a reason
naming the server. A server that answers keeps the call: a slow far end (a PSTN
call may take 10 s to ring) is the server's own timers' business.
"""

from __future__ import annotations

import errno
import logging
import random
import re
import secrets
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pjsua2 as pj

from .. import events as ev
from .calls import remote_party

if TYPE_CHECKING:
    from .calls import KCall
    from .lines import LineAccount, Lines
    from .thread import PjAgent

log = logging.getLogger("kiosk.agent.keepalive")

#: How long a keep-alive OPTIONS may go unanswered before its server counts as down.
PROBE_TIMEOUT_S = 3.0
#: When an unanswered OPTIONS is sent again (UDP: one lost datagram is no outage).
RETRANSMIT_S = (0.5, 1.5)
#: A probe's late answer still counts (the server is up) this long after it was sent.
PROBE_MEMORY_S = 10.0
#: While a server is down it is probed again after a random 2-4 s.
DOWN_PROBE_S = (2.0, 4.0)
#: A server that answers again: the line registers after a random 0-2 s (a fleet spreads).
REREGISTER_SPREAD_S = 2.0
#: A re-REGISTER refused by pjsua (one already out: PJSIP_EBUSY) is tried again this often, this many times.
REREGISTER_RETRY_S = (2.0, 4.0)
REREGISTER_TRIES = 3
#: A server that answers 404 for the line's own address this many times in a row,
#: registering again each time, does not route OPTIONS to its users.
FORGOT_LIMIT = 3
#: Slack for the agent loop's periodic step, so that detection stays within keepalive_seconds.
TICK_SLACK_S = 0.5
#: Names that cannot be resolved are tried again this often (resolving blocks the agent thread).
RESOLVE_AGAIN_S = 30.0
#: An outgoing call without any answer this long after dialling gets its server probed...
CALL_CHECK_S = 5.0
#: ... and is ended when that probe goes unanswered: at most this long after dialling.
CALL_GIVE_UP_S = CALL_CHECK_S + PROBE_TIMEOUT_S
#: Answers to an OPTIONS for a user that say the server does not know where the user is.
_FORGOTTEN = (404, 410, 480)

_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ")
_CALL_ID = re.compile(rb"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", re.M | re.I)


def server_of(uri: str) -> str:
    """`sip:pbx:5260;lr` -> `sip:pbx:5260` (how the server is named to the operator)."""
    return uri.replace(";lr", "")


def parse_server(uri: str) -> tuple[str, int, str]:
    """`sip:host[:port][;params]` -> (host, port, transport); `[v6]` loses its brackets."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest, _, params = rest.partition(";")
    rest = rest.split("@", 1)[-1]
    transport = "udp"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "transport":
            transport = value.strip().lower()
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    else:
        host, port = rest, ""
    return host, int(port) if port.isdigit() else 5060, transport


@dataclass
class Probe:
    """One OPTIONS of ours and what came of it."""

    call_id: str
    data: bytes
    sent: float
    retransmits: list[float]
    code: int | None = None  # the answer's status, once there is one
    refused: bool = False  # ICMP port unreachable while it was out


class Server:
    """A SIP server we probe: its address, a connected UDP socket, the OPTIONS that are out."""

    def __init__(self, uri: str, bind_host: str, user_agent: str) -> None:
        self.uri = server_of(uri)
        self.host, self.port, self.transport = parse_server(self.uri)
        self.bind_host = bind_host
        self.user_agent = user_agent
        self.sock: socket.socket | None = None
        self.addr: tuple[int, int, int, tuple] | None = None  # from getaddrinfo
        self.resolved_at = 0.0
        self.via = ""
        self.problem = "" if self.transport == "udp" else f"keep-alives are UDP only ({self.uri} is {self.transport})"
        self.next_resolve = 0.0
        self.probes: dict[str, Probe] = {}
        self.cseq = 0

    def ready(self, now: float) -> bool:
        """Whether probes can be sent (resolving and connecting when there is no socket)."""
        if self.sock is not None:
            return True
        if self.transport != "udp":
            return False
        if self.addr is None:
            if now < self.next_resolve:
                return False
            try:
                family, kind, proto, _, sockaddr = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_DGRAM)[0]
            except OSError as exc:
                self.next_resolve = now + RESOLVE_AGAIN_S
                self.problem = f"cannot resolve {self.uri}: {exc.strerror or exc}"
                log.warning("keep-alive: %s", self.problem)
                return False
            self.addr, self.resolved_at = (family, kind, proto, sockaddr), now
        family, kind, proto, sockaddr = self.addr
        sock = socket.socket(family, kind, proto)
        try:
            if self.bind_host not in ("", "0.0.0.0", "::"):
                sock.bind((self.bind_host.strip("[]"), 0))
            sock.connect(sockaddr)  # the source address is chosen now: reset() after an outage
            sock.setblocking(False)
            host, port = sock.getsockname()[:2]
        except OSError as exc:
            sock.close()
            self.problem = f"cannot open a socket to {self.uri}: {exc.strerror or exc}"
            log.warning("keep-alive: %s", self.problem)
            return False
        self.sock = sock
        self.via = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.problem = ""
        return True

    def reset(self, now: float) -> None:
        """After a probe failed: a new socket for the next one (the unit's address may have
        changed), and the name resolved again when it was resolved long enough ago."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if now - self.resolved_at >= RESOLVE_AGAIN_S:
            self.addr = None

    def send(self, target: str, from_uri: str, now: float) -> Probe | None:
        """Send OPTIONS for `target` (routed through this server when it is not the server itself)."""
        if not self.ready(now):
            return None
        assert self.sock is not None
        self.cseq += 1
        call_id = f"{secrets.token_hex(10)}@kiosk-keepalive"
        route = f"Route: <{self.uri};lr>\r\n" if target != self.uri else ""
        data = (
            f"OPTIONS {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.via};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            f"{route}"
            f"Max-Forwards: 70\r\n"
            f"From: <{from_uri}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <{target}>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {self.cseq} OPTIONS\r\n"
            f"User-Agent: {self.user_agent}\r\n"
            f"Accept: application/sdp\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
        probe = Probe(call_id, data, now, [now + d for d in RETRANSMIT_S])
        self.probes[call_id] = probe
        self._transmit(probe)
        return probe

    def _transmit(self, probe: Probe) -> None:
        assert self.sock is not None
        try:
            self.sock.send(probe.data)
        except ConnectionRefusedError:  # an earlier datagram's ICMP, reported now
            self._refused()
        except OSError as exc:
            log.debug("keep-alive to %s: %s", self.uri, exc)

    def _refused(self) -> None:
        for probe in self.probes.values():
            if probe.code is None:
                probe.refused = True

    def poll(self, now: float) -> None:
        """Read every answer that came in; send again what is due; forget old probes."""
        if self.sock is None:
            return
        while True:
            try:
                data = self.sock.recv(65535)
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                self._refused()
                continue
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                log.debug("keep-alive from %s: %s", self.uri, exc)
                break
            status, cid = _STATUS.match(data), _CALL_ID.search(data)
            if status and cid:
                probe = self.probes.get(cid.group(1).decode("latin-1"))
                code = int(status.group(1))
                if probe is not None and code >= 200 and probe.code is None:
                    probe.code = code
        for call_id, probe in list(self.probes.items()):
            if now - probe.sent > PROBE_MEMORY_S:
                del self.probes[call_id]
            elif probe.code is None and not probe.refused and probe.retransmits and now >= probe.retransmits[0]:
                probe.retransmits.pop(0)
                self._transmit(probe)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.probes.clear()


@dataclass
class LineWatch:
    """The keep-alive state of one line."""

    acc: "LineAccount"
    server: Server
    target: str  # the Request-URI of the probes: the line's AOR, or the server itself
    uri: str = ""  # the line's AOR when the watch was made (a reload that changes it makes a new watch)
    aor: bool = True  # probing the AOR (so that a forgotten registration shows)
    up: bool | None = None  # None until the server answered or failed once
    next_probe: float = 0.0
    probe: Probe | None = None  # the probe we wait for
    registered: bool = False
    reg_ok_at: float = 0.0
    rereg_at: float | None = None
    rereg_tries: int = 0
    forgot: int = 0
    ever_answered: bool = False
    timed_out: bool = False
    off: bool = False  # the server answers REGISTER but never OPTIONS: no keep-alives for it
    late: list[Probe] = field(default_factory=list)  # given up on, but a late answer still tells "up"

    def __post_init__(self) -> None:
        self.uri = self.uri or self.target

    @property
    def line(self) -> str:
        return self.acc.line.id

    @property
    def down_reason(self) -> str:
        return f"server {self.server.uri} does not answer (keep-alive)"


class Keepalive:
    """The agent's periodic job (`tick`) for keep-alives and unanswered calls; agent thread only."""

    def __init__(self, agent: "PjAgent", lines: "Lines", rng: random.Random | None = None) -> None:
        self.agent = agent
        self.lines = lines
        sip = agent.profile.sip
        self.period = sip.keepalive_seconds
        self.bind_host = sip.host
        self.user_agent = sip.user_agent
        self.rng = rng or random.Random()
        self.servers: dict[str, Server] = {}
        self.watches: dict[int, LineWatch] = {}  # by pjsua account id
        self._checks: dict[int, tuple["LineAccount", Probe, float]] = {}  # call id -> probe of its server
        self._settled: set[int] = set()  # outgoing calls past the check (answered, or server up)
        self._started = False
        self._now = 0.0  # the last tick's time: a watch made later starts probing from there
        self.sync()

    def sync(self, period: int | None = None) -> None:
        """Follow the lines' accounts (and `period`, the new keepalive_seconds) after a profile reload.

        A line whose account, server and address stay keeps its watch and what it knows; a new
        or changed one gets a new watch, a removed one loses its watch.
        """
        if period is not None:
            self.period = period
        watches: dict[int, LineWatch] = {}
        if self.period > 0:
            for acc in self.lines.by_line.values():
                server = self.server(acc.server)
                if server.problem:
                    log.info("line %s: %s", acc.line.id, server.problem)
                    continue
                old = self.watches.get(acc.getId())
                if old is not None and old.acc is acc and old.server is server and old.uri == acc.line.uri:
                    watches[acc.getId()] = old
                    continue
                watch = LineWatch(acc, server, acc.line.uri)
                if self._started:  # a line added while the unit runs: probe it soon, not all at once
                    watch.next_probe = self._now + self.rng.uniform(0.5, 2.0)
                watches[acc.getId()] = watch
        self.watches = watches

    def server(self, uri: str) -> Server:
        key = server_of(uri)
        if key not in self.servers:
            self.servers[key] = Server(key, self.bind_host, self.user_agent)
        return self.servers[key]

    def _interval(self) -> float:
        """Time to the next probe of a server that answers (spread at random)."""
        base = max(1.0, self.period - PROBE_TIMEOUT_S - TICK_SLACK_S)
        return base * self.rng.uniform(0.75, 1.0)

    # --- the periodic job ---

    def tick(self, now: float) -> None:
        self._now = now
        if not self._started:
            self._started = True
            for w in self.watches.values():  # units started together do not probe together
                w.next_probe = now + self.rng.uniform(1.0, max(1.0, self.period - PROBE_TIMEOUT_S))
        for server in self.servers.values():
            server.poll(now)
        for w in list(self.watches.values()):
            self._line(w, now)
        self._calls(now)

    def _line(self, w: LineWatch, now: float) -> None:
        if w.rereg_at is not None and now >= w.rereg_at:
            w.rereg_at = None
            self._register(w, now)
        for probe in list(w.late):
            if probe.code is not None:
                w.late.remove(probe)
                self._answered(w, probe, now)
            elif probe.call_id not in w.server.probes:
                w.late.remove(probe)
        if w.off:
            return
        probe = w.probe
        if probe is not None:
            if probe.code is not None:
                w.probe = None
                self._answered(w, probe, now)
            elif probe.refused or now - probe.sent >= PROBE_TIMEOUT_S:
                w.probe = None
                if not probe.refused:
                    w.late.append(probe)
                w.timed_out = True
                log.info("line %s: keep-alive to %s %s", w.line, w.server.uri,
                         "refused (port unreachable)" if probe.refused else f"unanswered for {PROBE_TIMEOUT_S:.0f} s")
                self._down(w)
                w.server.reset(now)
                w.next_probe = now + self.rng.uniform(*DOWN_PROBE_S)
            return
        if now >= w.next_probe:
            w.probe = w.server.send(w.target, w.acc.line.uri, now)
            if w.probe is None:  # no socket to the server (no address, a name that does not resolve)
                w.next_probe = now + self.rng.uniform(*DOWN_PROBE_S)

    def _down(self, w: LineWatch) -> None:
        if w.up is False:
            return
        w.up = False
        log.warning("line %s: %s", w.line, w.down_reason)
        self.agent.emit(ev.LineState(w.line, False, 408, w.down_reason))

    def _register(self, w: LineWatch, now: float) -> None:
        try:
            w.acc.setRegistration(True)
        except pj.Error as exc:  # a REGISTER already out (EBUSY): pjsip sends it again anyway
            if w.rereg_tries < REREGISTER_TRIES:
                w.rereg_tries += 1
                w.rereg_at = now + self.rng.uniform(*REREGISTER_RETRY_S)
            log.info("line %s: REGISTER again not sent yet: %s", w.line, exc.reason or exc.title)
            return
        log.info("line %s: registering again with %s", w.line, w.server.uri)

    def _schedule_register(self, w: LineWatch, now: float) -> None:
        if w.rereg_at is None:
            w.rereg_tries = 0
            w.rereg_at = now + self.rng.uniform(0.0, REREGISTER_SPREAD_S)

    def _answered(self, w: LineWatch, probe: Probe, now: float) -> None:
        """The line's server answered a probe."""
        code = probe.code or 0
        was_down = w.up is False
        w.up = True
        w.ever_answered = True
        if w.probe is None:
            w.next_probe = max(w.next_probe, now + self._interval()) if not was_down else now + self._interval()
        if was_down:
            w.late.clear()
            log.info("line %s: %s answers again (%d): registering in a moment", w.line, w.server.uri, code)
            self._schedule_register(w, now)
            return
        if not w.aor:
            return
        if code in _FORGOTTEN:
            # Only a probe sent after our last REGISTER was answered tells that the server forgot it.
            if not w.registered or probe.sent <= w.reg_ok_at or w.rereg_at is not None:
                return
            w.forgot += 1
            if w.forgot >= FORGOT_LIMIT:
                w.aor, w.target = False, w.server.uri
                log.warning("line %s: %s answers %d for %s even when it is registered: "
                            "keep-alives now go to the server itself", w.line, w.server.uri, code, w.acc.line.uri)
                return
            log.warning("line %s: %s does not know the line any more (%d): registering again",
                        w.line, w.server.uri, code)
            self._schedule_register(w, now)
        elif 200 <= code < 300:
            w.forgot = 0

    # --- what the accounts hear (agent thread, inside pjsua2 callbacks) ---

    def registration(self, acc: "LineAccount", registered: bool, now: float) -> None:
        """pjsua2 reported a REGISTER outcome of `acc`."""
        w = self.watches.get(acc.getId())
        if w is None:
            return
        w.registered = registered
        if not registered:
            return
        w.reg_ok_at = now
        w.rereg_at = None
        w.up = True  # it answered the REGISTER
        if w.probe is None:
            w.next_probe = now + self._interval()  # no need to ask again right away
        if w.timed_out and not w.ever_answered and not w.off:
            w.off = True
            w.probe = None
            log.warning("line %s: %s answers REGISTER but never OPTIONS: no keep-alives for this line",
                        w.line, w.server.uri)

    def down_reason(self, acc: "LineAccount") -> str | None:
        """Why the line's server counts as down, when it does."""
        w = self.watches.get(acc.getId())
        return w.down_reason if w is not None and w.up is False else None

    # --- outgoing calls that reach nobody ---

    def _calls(self, now: float) -> None:
        live = set()
        for call in self.agent.calls.active():
            if call.direction != "out" or call.silent:
                continue
            live.add(call.id)
            if call.id in self._settled:
                continue
            try:
                self._check_call(call, now)
            except pj.Error as exc:
                log.debug("call %d: check: %s", call.id, exc.reason or exc.title)
                self._settled.add(call.id)
        self._settled &= live
        for cid in [c for c in self._checks if c not in live]:
            del self._checks[cid]

    def _check_call(self, call: "KCall", now: float) -> None:
        info = call.getInfo()
        if info.state != pj.PJSIP_INV_STATE_CALLING:
            self._settled.add(call.id)
            self._checks.pop(call.id, None)
            return
        check = self._checks.get(call.id)
        if check is None:
            age = info.totalDuration.sec + info.totalDuration.msec / 1000.0
            if age < CALL_CHECK_S:
                return
            acc = self.lines.by_acc_id(info.accId)
            if acc is None:
                self._settled.add(call.id)
                return
            server = self.server(acc.server)
            probe = server.send(server.uri, acc.line.uri, now)
            if probe is None:  # TCP, or no socket to it: not ours to judge, pjsip's own timers end it
                self._settled.add(call.id)
                return
            log.info("call %d: no answer yet after %.1f s: asking %s whether it is there", call.id, age, server.uri)
            self._checks[call.id] = (acc, probe, now)
            return
        acc, probe, sent = check
        if probe.code is not None:
            log.info("call %d: %s is there (%d); the call waits for the far end", call.id, acc.server, probe.code)
            self._settled.add(call.id)
            del self._checks[call.id]
        elif probe.refused or now - sent >= PROBE_TIMEOUT_S:
            del self._checks[call.id]
            self._settled.add(call.id)
            self._give_up(call, server_of(acc.server), remote_party(info.remoteUri))

    def _give_up(self, call: "KCall", server: str, remote: str) -> None:
        reason = f"no answer from {server} — is the server up?"
        # pjsua2 reports this hang-up as "408 Request Timeout" whatever reason we give:
        # the desk hears of the end from us, with the reason, and not again from onCallState.
        call.silent = True
        prm = pj.CallOpParam()
        prm.statusCode = 408
        prm.reason = reason
        try:
            call.hangup(prm)
        except pj.Error as exc:
            call.silent = False
            log.warning("call %d: cannot end the unanswered call: %s", call.id, exc.reason or exc.title)
            return
        log.warning("call %d: %s", call.id, reason)
        self.agent.emit(ev.CallProgress(call.id, "ended", 408, reason, remote))

    def close(self) -> None:
        """Forget the accounts (they are being shut down), close the sockets, stop the periodic job."""
        self.watches.clear()
        self._checks.clear()
        for server in self.servers.values():
            server.close()
        try:
            self.agent.periodic.remove(self.tick)
        except ValueError:
            pass
