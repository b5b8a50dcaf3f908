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

A reloaded profile is applied by `Lines.reconcile`: a new line gets its account, a
changed one is modified (pjsua unregisters the old binding and registers the new
one), a removed one is deleted; but an account that has a call is never touched
(pjsua keeps the call's account id for re-INVITEs and BYEs): its change waits, and
`reconcile` runs again until it is made. A removed line's account refuses new calls
(480) while it waits for its last one to end. The accounts of a running unit never
exceed MAX_ACCOUNTS: a new line waits for a removed one's account to go first.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

import pjsua2 as pj

from .. import events as ev
from ..desk import AgentError
from ..profile import MAX_ACCOUNTS, Line, Profile, Route
from .calls import KCall, remote_party
from .identity import InviteInfo, read_invite
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
        #: What the account's configuration was made from (see `line_key`, `route_key`).
        self.key: tuple[Any, ...] = ()
        #: Removed from the profile, kept only until its calls end: it takes no new call.
        self.retiring = False

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
        invite = ""
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
        if self.retiring:  # removed from the profile: it only waits for its last call to end
            log.warning("line %s: refusing a new call: the line was removed from the profile", self.line.id)
            call.silent = True
            agent.deferred.append(lambda: call.reject_now(480, "Line removed"))
            return
        info = call.getInfo()
        remote = remote_party(info.remoteUri)
        found = read_invite(invite) if invite else InviteInfo()
        vouched = host in agent.identity_hosts
        if found.asserted and vouched:
            remote = found.asserted
            call.asserted = remote  # the call's later states name this caller too, not From
        intercom = found.intercom and vouched and bool(getattr(self.line, "intercom", False))
        after = found.answer_after_ms if intercom else None
        refused = agent.dnd or 0
        log.info("call %d: incoming from %s on line %s via %s%s%s%s", call.id, remote, self.line.id, host,
                 f" for {found.via}" if found.via else "", " (intercom)" if intercom else "",
                 f": refused {refused} (do not disturb)" if refused else "")
        if found.intercom and not intercom:
            log.info("call %d: intercom request ignored (%s)", call.id,
                     "not from an identity host" if not vouched else f"line {self.line.id} has intercom off")
        agent.emit(incoming_call(call.id, self.line.id, remote, via=found.via, intercom=intercom,
                                 answer_after_ms=after, refused=refused))
        if refused:
            # Never a 180: the desk shows a refused call, the caller gets the code at once.
            agent.deferred.append(lambda: call.reject_now(refused, DND_REASONS.get(refused, "")))
            return
        agent.deferred.append(call.ring_now)


#: Reason phrases of the do-not-disturb refusals (the standard ones).
DND_REASONS = {486: "Busy Here", 480: "Temporarily Unavailable", 603: "Decline"}


def incoming_call(call: int, line: str, remote: str, **extra: Any) -> ev.IncomingCall:
    """IncomingCall with the fields this events module has (the newer ones are left out on an older one)."""
    known = {f.name for f in dataclasses.fields(ev.IncomingCall)}
    return ev.IncomingCall(call, line, remote, **{k: v for k, v in extra.items() if k in known})


def line_key(line: Line, expires: int) -> tuple[Any, ...]:
    """What a line's account is configured from: a change of any of it is a change of the account."""
    return (line.uri, line.registrar, line.username, line.password, line.proxy, expires)


def route_key(line: Line, route: Route) -> tuple[Any, ...]:
    """What a trunk route's account is configured from (the line's identity, the trunk)."""
    return (line.id, line.uri, line.username, line.password, route.proxy)


class Lines:
    """The accounts of the unit, created, changed and released on the agent thread."""

    def __init__(self, agent: "PjAgent", ep: pj.Endpoint, profile: Profile) -> None:
        self.agent = agent
        self.ep = ep
        self.profile = profile
        self.by_line: dict[str, LineAccount] = {}
        self.by_route: dict[str, LineAccount] = {}
        #: Accounts removed from the profile that still have a call: deleted once it ends.
        self.retiring: list[LineAccount] = []
        self.keepalive: Keepalive | None = None

    def create(self) -> None:
        for line in self.profile.lines:
            self._add_line(line, default=True)
        for route in self.profile.routes:
            if route.proxy:
                self._add_route(route, self.profile.line(route.line))

    def _add_line(self, line: Line, default: bool = False) -> LineAccount:
        acc = LineAccount(self.agent, line)
        # No proxy: the registrar is the line's outbound proxy (see the module doc).
        acc.create(acc.config(line.proxy or line.registrar, register=True), default)
        acc.key = line_key(line, self.profile.sip.register_expires)
        self.by_line[line.id] = acc
        return acc

    def _add_route(self, route: Route, line: Line) -> LineAccount:
        acc = LineAccount(self.agent, line, route.id)
        acc.create(acc.config(route.proxy, register=False), False)
        acc.key = route_key(line, route)
        self.by_route[route.id] = acc
        return acc

    def count(self) -> int:
        """pjsua accounts alive now (the retiring ones too)."""
        return len(self.by_line) + len(self.by_route) + len(self.retiring)

    def busy(self, acc: LineAccount) -> bool:
        """Whether a call is on this account (pjsua still uses its id for that call)."""
        return any(getattr(c, "account", None) is acc for c in self.agent.calls.active())

    def reconcile(self, profile: Profile) -> list[str]:
        """Make the accounts follow `profile` as far as the calls allow; what still waits, in words.

        Run again (the agent does, periodically) while anything waits: it is idempotent.
        """
        self.profile = profile
        expires = profile.sip.register_expires
        lines = {line.id: line for line in profile.lines}
        trunks = {r.id: r for r in profile.routes if r.proxy}
        waiting: list[str] = []
        deleted = False
        for line_id, acc in list(self.by_line.items()):
            if line_id not in lines:
                del self.by_line[line_id]
                self._retire(acc)
        for route_id, acc in list(self.by_route.items()):
            route = trunks.get(route_id)
            if route is None or route.line != acc.line.id:  # gone, no trunk any more, or on another line
                del self.by_route[route_id]
                self._retire(acc)
        for acc in list(self.retiring):
            if self.busy(acc):
                what = f"route {acc.route}'s trunk account" if acc.route else f"line {acc.line.id}"
                waiting.append(f"{what}: removed when its call ends")
                continue
            self.retiring.remove(acc)
            self._delete(acc)
            deleted = True
        for line in profile.lines:
            acc = self.by_line.get(line.id)
            key = line_key(line, expires)
            if acc is None:
                if self.count() >= MAX_ACCOUNTS:
                    waiting.append(f"line {line.id}: added when a removed line's call ends "
                                   f"(the SIP library holds at most {MAX_ACCOUNTS} accounts)")
                    continue
                log.info("line %s: added", line.id)
                self._add_line(line)
            elif acc.key != key:
                if self.busy(acc):
                    waiting.append(f"line {line.id}: registers again with the new settings when its call ends")
                    continue
                log.info("line %s: changed: registering again", line.id)
                acc.line = line
                acc.server = line.proxy or line.registrar
                acc.modify(acc.config(line.proxy or line.registrar, register=True))
                acc.key = key
            else:
                acc.line = line  # the same account; only what SIP never sees (the label) may differ
        for route in trunks.values():
            line = lines[route.line]
            acc = self.by_route.get(route.id)
            key = route_key(line, route)
            if acc is None:
                if self.count() >= MAX_ACCOUNTS:
                    waiting.append(f"route {route.id}: its trunk account is made when a removed line's call "
                                   f"ends (the SIP library holds at most {MAX_ACCOUNTS} accounts)")
                    continue
                log.info("route %s: trunk account for %s added", route.id, route.proxy)
                self._add_route(route, line)
            elif acc.key != key:
                if self.busy(acc):
                    waiting.append(f"route {route.id}: its trunk account changes when its call ends")
                    continue
                log.info("route %s: trunk account changed (%s)", route.id, route.proxy)
                acc.line = line
                acc.modify(acc.config(route.proxy, register=False))
                acc.key = key
        if deleted and self.by_line:
            # pjsua makes account 0 the default when the default one is deleted, and slot 0 may be
            # empty now: the last line is the default, as at start.
            list(self.by_line.values())[-1].setDefault()
        if self.keepalive is not None:
            self.keepalive.sync(profile.sip.keepalive_seconds)
        return waiting

    def _retire(self, acc: LineAccount) -> None:
        acc.retiring = True
        self.retiring.append(acc)

    def _delete(self, acc: LineAccount) -> None:
        what = f"route {acc.route}'s trunk account" if acc.route else f"line {acc.line.id}"
        try:
            acc.shutdown()
        except pj.Error as exc:
            log.warning("%s: removing its account: %s", what, exc.reason or exc.title)
            return
        log.info("%s: removed", what)

    def start_keepalive(self) -> None:
        """Install the keep-alives of the lines (and the check of unanswered calls) as periodic agent work."""
        self.keepalive = Keepalive(self.agent, self)
        self.agent.periodic.append(self.keepalive.tick)

    def by_acc_id(self, acc_id: int) -> LineAccount | None:
        """The account with this pjsua account id."""
        for acc in list(self.by_line.values()) + list(self.by_route.values()) + self.retiring:
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
        for acc in list(self.by_route.values()) + list(self.by_line.values()) + self.retiring:
            try:
                acc.shutdown()
            except pj.Error:
                pass
        self.by_route.clear()
        self.by_line.clear()
        self.retiring.clear()
