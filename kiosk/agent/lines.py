"""pjsua2 accounts: one per profile line, plus one per route that has its own trunk proxy.

A line's requests go to its `proxy`, else to its registrar (loose-routed, as an
outbound proxy): a desk phone sends its calls to the server it registers with,
not to whatever the number's domain resolves to (that went to port 5060 of the
domain whatever port the registrar had, and the call went nowhere for 32 s).
A trunk route is an account with the line's identity and credentials, the
trunk as its only proxy and no registrar (measured to work: DESIGN.md); the
profile refuses more accounts than the wheel can hold (8; the 9th aborts).
Incoming calls are screened here against `[sip] trusted` before the desk
hears of them; the reject itself is deferred out of the callback because
pjsua2 aborts when a call without SDP is answered or rejected inside it.
Keep-alives and the end of calls that reach nobody: keepalive.py.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import pjsua2 as pj

from .. import events as ev
from ..desk import AgentError
from ..profile import Line, Profile
from .calls import KCall, remote_party
from .gate import MAX_OFFER_MLINES, media_keys
from .dialogs import record_route
from .keepalive import Keepalive

if TYPE_CHECKING:
    from .thread import PjAgent

log = logging.getLogger("kiosk.agent.lines")

# pjsua spreads every retry by +-randomRetryIntervalSec (default 10 s, which made the
# "first retry" anywhere in 0..20 s: measured).  6 +- 4 keeps the first retry within 10 s
# of a failure and 64 +- 4 keeps later ones at least 60 s apart, while units that lost the
# same server still spread their retries over 8 s instead of arriving together.
FIRST_RETRY_S = 6
RETRY_S = 64
RETRY_SPREAD_S = 4


def _with_lr(uri: str) -> str:
    return uri if ";lr" in uri else uri + ";lr"


def source_host(src: str) -> str:
    """`127.0.0.1:5060` / `[::1]:5060` -> host."""
    src = src.strip()
    if src.startswith("["):
        return src[1:].split("]", 1)[0]
    return src.rsplit(":", 1)[0] if src.count(":") == 1 else src


class LineAccount(pj.Account):
    """A pjsua2 account for a line (or a trunk route of a line)."""

    def __init__(self, agent: "PjAgent", line: Line, route: str | None = None) -> None:
        super().__init__()
        self.agent = agent
        self.line = line
        self.route = route
        #: The first hop of this account's requests, as named to the operator.
        self.server = (line.proxy or line.registrar) if route is None else ""

    def config(self, proxy: str | None, register: bool) -> pj.AccountConfig:
        line = self.line
        cfg = pj.AccountConfig()
        cfg.idUri = line.uri
        if register:
            cfg.regConfig.registrarUri = line.registrar
            cfg.regConfig.firstRetryIntervalSec = FIRST_RETRY_S
            cfg.regConfig.retryIntervalSec = RETRY_S
            cfg.regConfig.randomRetryIntervalSec = RETRY_SPREAD_S
            cfg.regConfig.timeoutSec = self.agent.profile.sip.register_expires
        else:
            cfg.regConfig.registerOnAdd = False
        cred = pj.AuthCredInfo("digest", "*", line.username, 0, line.password)
        cfg.sipConfig.authCreds.append(cred)
        if proxy:
            cfg.sipConfig.proxies.append(_with_lr(proxy))
            self.server = proxy.replace(";lr", "")
        # The desk decides about hold and media; no ICE/STUN on a LAN desk unit.
        cfg.natConfig.iceEnabled = False
        # One codec in the answer already: no codec-lock re-INVITE right after
        # answer (it made a hold in the first ~40 ms fail with PJ_EINVALIDOP).
        cfg.mediaConfig.lockCodecEnabled = False
        # RTP on the SIP listen address, any free port: units sharing a host
        # (and the lab) must not collide on 4000, nor advertise another interface.
        host = self.agent.profile.sip.host
        cfg.mediaConfig.transportConfig.port = 0
        if host not in ("0.0.0.0", "", "::"):
            cfg.mediaConfig.transportConfig.boundAddress = host
        return cfg

    def onRegState(self, prm: "pj.OnRegStateParam") -> None:
        info = self.getInfo()
        registered = bool(info.regIsActive) and int(prm.code) // 100 == 2
        reason = prm.reason or info.regStatusText
        if int(prm.code) in (401, 403, 407):
            reason = f"{reason}: check username and password of line {self.line.id}"
        keepalive = self.agent.lines.keepalive if self.agent.lines else None
        if keepalive is not None:
            keepalive.registration(self, registered, time.monotonic())
            down = keepalive.down_reason(self)
            if not registered and down and int(prm.code) in (408, 503):
                reason = down  # clearer than pjsip's own "Request Timeout"
        log.info("line %s: REGISTER %s %s (expires %s)", self.line.id, prm.code, prm.reason, prm.expiration)
        self.agent.emit(ev.LineState(self.line.id, registered, int(prm.code), reason))

    def onIncomingCall(self, prm: "pj.OnIncomingCallParam") -> None:
        agent = self.agent
        host = source_host(prm.rdata.srcAddress)
        call = KCall(agent, self, agent.new_id(), "in", prm.callId)
        agent.calls.add(call)
        try:  # the media sockets pjsua made for this offer (the INVITE gate's budget)
            invite = prm.rdata.wholeMsg
            call.media_keys = media_keys(invite.encode("utf-8", "surrogateescape"))
            call.route_set = record_route(invite)
        except Exception:  # an offer the binding cannot hand over as text: count the most the gate lets in
            call.media_keys = 2 * MAX_OFFER_MLINES
        if host not in agent.trusted:
            log.warning("refusing call from untrusted host %s", prm.rdata.srcAddress)
            call.silent = True
            agent.deferred.append(lambda: call.reject_now(403, "Forbidden: host not trusted"))
            return
        info = call.getInfo()
        remote = remote_party(info.remoteUri)
        log.info("call %d: incoming from %s on line %s via %s", call.id, remote, self.line.id, host)
        agent.emit(ev.IncomingCall(call.id, self.line.id, remote))
        agent.deferred.append(call.ring_now)


class Lines:
    """The accounts of the unit, created and released on the agent thread."""

    def __init__(self, agent: "PjAgent", ep: pj.Endpoint, profile: Profile) -> None:
        self.agent = agent
        self.ep = ep
        self.profile = profile
        self.by_line: dict[str, LineAccount] = {}
        self.by_route: dict[str, LineAccount] = {}
        self.keepalive: Keepalive | None = None

    def create(self) -> None:
        for line in self.profile.lines:
            acc = LineAccount(self.agent, line)
            # No proxy: the registrar is the line's outbound proxy (see the module doc).
            acc.create(acc.config(line.proxy or line.registrar, register=True), True)
            self.by_line[line.id] = acc
        for route in self.profile.routes:
            if route.proxy:
                line = self.profile.line(route.line)
                acc = LineAccount(self.agent, line, route.id)
                acc.create(acc.config(route.proxy, register=False), False)
                self.by_route[route.id] = acc

    def start_keepalive(self) -> None:
        """Install the keep-alives of the lines (and the check of unanswered calls) as periodic agent work."""
        self.keepalive = Keepalive(self.agent, self)
        self.agent.periodic.append(self.keepalive.tick)

    def by_acc_id(self, acc_id: int) -> LineAccount | None:
        """The account with this pjsua account id."""
        for acc in list(self.by_line.values()) + list(self.by_route.values()):
            if acc.getId() == acc_id:
                return acc
        return None

    def account_for(self, line_id: str, route_id: str | None) -> LineAccount:
        """The account a call on this line and route goes out through."""
        if route_id and route_id in self.by_route:
            return self.by_route[route_id]
        try:
            return self.by_line[line_id]
        except KeyError:
            raise AgentError(f"unknown line {line_id!r}", "unknown_line", value=line_id,
                             lines=", ".join(self.by_line)) from None

    def release(self) -> None:
        if self.keepalive is not None:
            self.keepalive.close()
            self.keepalive = None
        for acc in list(self.by_route.values()) + list(self.by_line.values()):
            try:
                acc.shutdown()
            except pj.Error:
                pass
        self.by_route.clear()
        self.by_line.clear()
