"""Ends calls whose far end has gone silent on the network: no RTP and no RTCP.

A far end that crashed, lost power or lost its link never sends a BYE; without
this the row would show "talking" to nobody for as long as the operator
waits. pjsua2 has no media inactivity timeout of its own, so the agent looks
at each call's stream counters: RTP packets received, and RTCP reports
received about what we send (a far end with silence suppression still sends
those every few seconds). A call on hold (either side) is not watched: a held
party legitimately sends nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pjsua2 as pj

from .. import events as ev

if TYPE_CHECKING:
    from .calls import KCall
    from .thread import PjAgent

log = logging.getLogger("kiosk.agent.rtp")

#: How often the counters are read (the timeout itself is whole seconds).
CHECK_S = 1.0


def activity(call: "KCall") -> int | None:
    """A number that grows while the far end sends anything (None: the call has no audio stream now)."""
    try:
        info = call.getInfo()
    except pj.Error:
        return None
    for mi in info.media:
        if mi.type != pj.PJMEDIA_TYPE_AUDIO or mi.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
            continue
        try:
            stat = call.getStreamStat(mi.index)
        except pj.Error:
            return None
        rx = stat.rtcp.rxStat  # packets of any payload type count, comfort noise included
        return int(rx.pkt) + int(rx.discard) + int(stat.rtcp.txStat.updateCount)
    return None


class RtpWatch:
    """The agent's periodic job: hang up a call that has received nothing for `timeout_s`."""

    def __init__(self, agent: "PjAgent", timeout_s: int) -> None:
        self.agent = agent
        self.timeout_s = timeout_s
        self._seen: dict[int, tuple[int, float]] = {}  # row id -> (activity, when it last grew)
        self._next = 0.0

    def __call__(self, now: float) -> None:
        if self.timeout_s <= 0 or now < self._next:
            return
        self._next = now + CHECK_S
        alive = set()
        for call in self.agent.calls.active():
            # Only calls in conversation: a ringing call with early media may legitimately be
            # silent for as long as it rings.
            if (not call.confirmed or not call.media_active or call.local_hold or call.remote_hold
                    or call.hold_sent):
                self._seen.pop(call.id, None)  # restart the clock when it is back in conversation
                continue
            count = activity(call)
            if count is None:
                self._seen.pop(call.id, None)
                continue
            alive.add(call.id)
            last = self._seen.get(call.id)
            if last is None or count != last[0]:
                self._seen[call.id] = (count, now)
                continue
            if now - last[1] < self.timeout_s:
                continue
            self._seen.pop(call.id, None)
            reason = f"no audio from the far end for {self.timeout_s} s: the call was ended"
            log.warning("call %d: %s", call.id, reason)
            self.agent.emit(ev.Alert(f"call {call.id}: {reason}", "rtp_timeout",
                                    {"row": call.id, "seconds": self.timeout_s}))
            try:
                call.hangup_now()
            except pj.Error as exc:
                log.warning("call %d: hang-up after media timeout failed: %s", call.id, exc.reason)
        for gone in set(self._seen) - alive:
            del self._seen[gone]
