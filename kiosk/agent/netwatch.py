"""Tells pjsua2 when the unit's network changes under it: a new address, a link down and up.

pjsua2 does not watch the network itself: after a DHCP renewal with another
address, or a cable pulled and plugged back, its transports still use the old
address, REGISTERs carry a Contact nobody can reach, and calls go on sending
media to where the far end no longer listens. `Endpoint.handleIpChange` restarts
the listeners, registers every line again and re-INVITEs the calls with the new
address (the accounts keep their calls: `hangupCalls` is off).

The agent looks at the interfaces every CHECK_S. A unit bound to one address
watches only that address (the others are not its business: a container
host's bridges come and go); a unit bound to every address watches every
non-loopback one. With no interface up the lines show as unregistered with
that reason, at once, instead of after the REGISTER's 32 s timeout.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

import psutil
import pjsua2 as pj

from .. import events as ev

if TYPE_CHECKING:
    from .thread import PjAgent

log = logging.getLogger("kiosk.agent.net")

#: How often the interfaces are looked at.
CHECK_S = 2.0

Snapshot = frozenset[tuple[str, str]]  # (interface, address) of interfaces that are up


def interfaces(bound_host: str) -> Snapshot:
    """The addresses the unit can use now, on interfaces that are up."""
    try:
        stats = psutil.net_if_stats()
        addrs = psutil.net_if_addrs()
    except OSError as exc:
        log.warning("cannot read the network interfaces: %s", exc)
        return frozenset()
    out: set[tuple[str, str]] = set()
    for name, entries in addrs.items():
        st = stats.get(name)
        if st is None or not st.isup:
            continue
        for entry in entries:
            if entry.family != socket.AF_INET:
                continue  # the unit's SIP transports are IPv4: a rotating IPv6 address is not its business
            address = entry.address.split("%", 1)[0]
            if bound_host not in ("", "0.0.0.0", "::"):
                if address == bound_host:
                    out.add((name, address))
                continue
            if address.startswith("127."):
                continue
            out.add((name, address))
    return frozenset(out)


class NetWatch:
    """The agent's periodic job: notice a network change and have pjsua2 follow it."""

    def __init__(self, agent: "PjAgent", bound_host: str) -> None:
        self.agent = agent
        self.bound_host = bound_host
        self.last: Snapshot = interfaces(bound_host)
        self.down = not self.last
        self._next = 0.0
        self._pending: Snapshot | None = None  # a change seen once: acted on when the next look agrees

    def __call__(self, now: float) -> None:
        if now < self._next:
            return
        self._next = now + CHECK_S
        snap = interfaces(self.bound_host)
        if snap == self.last:
            self._pending = None
            return
        if snap != self._pending:  # wait one more look: an address being replaced, a link bouncing
            self._pending = snap
            return
        self._pending = None
        gone, new = sorted(self.last - snap), sorted(snap - self.last)
        previous, self.last = self.last, snap
        described = ", ".join([f"{n} {a} gone" for n, a in gone] + [f"{n} {a} new" for n, a in new])
        if not snap:
            self.down = True
            reason = "the network is down (no interface up with an address)"
            if self.bound_host not in ("", "0.0.0.0", "::"):
                reason = f"the unit's address {self.bound_host} is gone (its interface is down)"
            log.warning("network: %s (%s)", reason, described)
            self.agent.emit(ev.Alert(f"network: {reason}; calls and registrations wait for it", "network_down",
                                     {"reason": reason}))
            for line in self.agent.profile.lines:
                self.agent.emit(ev.LineState(line.id, False, 503, reason))
            return
        was_down, self.down = self.down, False
        log.warning("network changed (%s): restarting SIP transports, registering again", described)
        if was_down:
            self.agent.emit(ev.Alert("network back: registering again", "network_back", {}))
        else:
            self.agent.emit(ev.Alert(f"network changed ({described}): registering again", "network_changed",
                                     {"change": described}))
        if not self.restart():
            self.last, self.down = previous, was_down  # try again at the next look

    def restart(self) -> bool:
        """pjsua2's own IP-change handling: new listeners, REGISTER again, re-INVITE the calls."""
        ep = self.agent.ep
        if ep is None:
            return False
        prm = pj.IpChangeParam()
        prm.restartListener = True
        try:
            ep.handleIpChange(prm)
        except pj.Error as exc:
            log.warning("network change: pjsua2 could not follow it: %s", exc.reason)
            self.agent.emit(ev.Alert(f"network change: the SIP stack could not follow it ({exc.reason.strip()})",
                                     "network_change_failed", {"error": exc.reason.strip()}))
            return False
        return True
