"""The door for new INVITEs: refused here, before pjsua gives them media sockets.

pjsua creates a call's RTP and RTCP sockets (two per audio m-line of the
offer, up to 16 lines: measured) *before* `onIncomingCall` runs, and frees them
when the call ends.  They live in the media ioqueue, which in this wheel has a
fixed 64 slots and gives a closed slot back only 500 ms later
(PJ_IOQUEUE_MAX_HANDLES, PJ_IOQUEUE_KEY_FREE_DELAY); asking for a socket while
the slots are taken by live and recently closed sockets does not fail, it
aborts the process (`pj_ioqueue_register_sock2: Assertion
'!pj_list_empty(&ioqueue->free_list)'`, measured: 32 one-line calls ringing
and ending within half a second, or two 16-line offers and a CANCEL).

pjsua2 has no callback before the media is made, so this is a pjsip module
of our own, registered through ctypes just above pjsua's: it sees every
out-of-dialog INVITE first and answers statelessly when the source host is
not trusted (403), the offer has more m-lines than a desk phone needs (488),
or the sockets it would take do not fit what is left of the ioqueue within
the free delay (486).  Everything else goes on to pjsua unchanged.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import re
import socket
import time
from typing import TYPE_CHECKING, Callable

import pjsua2 as pj

if TYPE_CHECKING:
    from .thread import PjAgent

log = logging.getLogger("kiosk.agent.gate")

#: Slots of the media ioqueue (PJ_IOQUEUE_MAX_HANDLES compiled into the wheel: pjmedia_endpt_create2 asks for 64).
IOQUEUE_SLOTS = 64
#: How long a closed socket's slot stays taken (PJ_IOQUEUE_KEY_FREE_DELAY, 500 ms in the wheel), with a margin.
FREE_DELAY_S = 0.75
#: Slots always kept for a call the operator places.
RESERVE = 4
#: pjsua makes transports for every audio m-line of an offer, up to PJSUA_MAX_CALL_MEDIA.
MAX_CALL_MEDIA = 16
#: More m-lines than this in an offer is refused (488): the unit uses one audio stream.
MAX_OFFER_MLINES = 4

# struct pjsip_rx_data of this wheel (pjsua2's SipRxData::fromPj reads these; checked at every use).
_RX_SRC_ADDR = 0x10F0
_RX_MSG_BUF = 0x1148
_RX_MSG_LEN = 0x1150

_M_LINE = re.compile(rb"(?m)^m=")
_METHOD = re.compile(rb"^\s*([A-Za-z]+) ")

_ON_RX = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class _PjStr(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_char_p), ("slen", ctypes.c_ssize_t)]


class _PjsipModule(ctypes.Structure):
    _fields_ = [
        ("prev", ctypes.c_void_p), ("next", ctypes.c_void_p), ("name", _PjStr),
        ("id", ctypes.c_int), ("priority", ctypes.c_int),
        ("load", ctypes.c_void_p), ("start", ctypes.c_void_p), ("stop", ctypes.c_void_p), ("unload", ctypes.c_void_p),
        ("on_rx_request", _ON_RX), ("on_rx_response", ctypes.c_void_p),
        ("on_tx_request", ctypes.c_void_p), ("on_tx_response", ctypes.c_void_p), ("on_tsx_state", ctypes.c_void_p),
    ]


#: PJSIP_MOD_PRIORITY_APPLICATION (pjsua's own module) is 64: one less runs first.
_PRIORITY = 63


def media_keys(msg: bytes) -> int:
    """The media ioqueue slots pjsua takes for a call with this offer: RTP + RTCP per m-line (one line without SDP)."""
    body = msg.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in msg else b""
    return 2 * max(1, min(len(_M_LINE.findall(body)), MAX_CALL_MEDIA))


def _host(sa: bytes) -> str | None:
    family = int.from_bytes(sa[0:2], "little")
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, sa[4:8])
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, sa[8:24])
    return None


class MediaBudget:
    """What of the media ioqueue is taken by live calls and by sockets closed less than FREE_DELAY_S ago."""

    def __init__(self, live: Callable[[], int]) -> None:
        self.live = live  # slots held by live calls (the registry knows each call's count)
        self.recent: collections.deque[tuple[float, int]] = collections.deque()

    def closing(self, now: float) -> int:
        while self.recent and now - self.recent[0][0] > FREE_DELAY_S:
            self.recent.popleft()
        return sum(k for _, k in self.recent)

    def fits(self, keys: int, now: float | None = None, reserve: int = RESERVE) -> bool:
        now = time.monotonic() if now is None else now
        return self.live() + self.closing(now) + keys + reserve <= IOQUEUE_SLOTS

    def charge(self, keys: int, now: float | None = None) -> None:
        """Count `keys` as closing from now (a call's sockets when it ends; an admitted offer at once,
        since pjsua may make and drop its sockets without a call ever reaching us)."""
        self.recent.append((time.monotonic() if now is None else now, keys))


class InviteGate:
    """A pjsip module that refuses INVITEs before pjsua makes media for them (see module doc)."""

    def __init__(self, agent: "PjAgent", budget: MediaBudget) -> None:
        self.agent = agent
        self.budget = budget
        self.refused: collections.Counter[int] = collections.Counter()
        self._lib = ctypes.CDLL(pj._pjsua2.__file__)
        self._lib.pjsua_get_pjsip_endpt.restype = ctypes.c_void_p
        self._lib.pjsip_endpt_register_module.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._lib.pjsip_endpt_unregister_module.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._lib.pjsip_endpt_respond_stateless.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self._cb = _ON_RX(self._on_rx_request)  # kept: pjsip calls it until the endpoint is destroyed
        self._name = ctypes.create_string_buffer(b"mod-kiosk-gate")
        self._mod = _PjsipModule()
        self._mod.name = _PjStr(ctypes.cast(self._name, ctypes.c_char_p), len(b"mod-kiosk-gate"))
        self._mod.id = -1
        self._mod.priority = _PRIORITY
        self._mod.on_rx_request = self._cb
        self._reasons = {}
        self._endpt: int | None = None
        self.broken = False

    def register(self) -> None:
        """Put the module in front of pjsua's (agent thread, after libInit)."""
        endpt = self._lib.pjsua_get_pjsip_endpt()
        status = self._lib.pjsip_endpt_register_module(endpt, ctypes.byref(self._mod))
        if status != 0:
            raise RuntimeError(f"cannot register the INVITE gate (pjsip status {status})")
        self._endpt = endpt

    def _respond(self, rdata: int, code: int, reason: str) -> int:
        text = self._reasons.get(reason)
        if text is None:
            buf = ctypes.create_string_buffer(reason.encode())
            text = self._reasons[reason] = (buf, _PjStr(ctypes.cast(buf, ctypes.c_char_p), len(reason)))
        self._lib.pjsip_endpt_respond_stateless(self._endpt, rdata, code, ctypes.addressof(text[1]), None, None)
        self.refused[code] += 1
        return 1

    def _on_rx_request(self, rdata: int) -> int:
        try:
            return self._decide(rdata)
        except Exception:  # never let an error of ours reach pjsip: let pjsua handle the request
            log.exception("INVITE gate failed; passing the request on")
            return 0

    def _decide(self, rdata: int) -> int:
        if self.broken or not rdata:
            return 0
        buf = ctypes.c_void_p.from_address(rdata + _RX_MSG_BUF).value or 0
        size = ctypes.c_int.from_address(rdata + _RX_MSG_LEN).value
        if not (rdata < buf < rdata + _RX_MSG_BUF and 0 < size <= _RX_MSG_BUF):
            self.broken = True  # not the layout this module was written for: stand aside for good
            log.error("INVITE gate: unexpected pjsip_rx_data layout; gate disabled")
            return 0
        msg = ctypes.string_at(buf, size)
        m = _METHOD.match(msg)
        if m is None or m.group(1) != b"INVITE":
            return 0
        host = _host(ctypes.string_at(rdata + _RX_SRC_ADDR, 28))
        if host is None or host not in self.agent.trusted:
            log.warning("refusing INVITE from untrusted host %s (before media)", host)
            return self._respond(rdata, 403, "Forbidden: host not trusted")
        body = msg.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in msg else b""
        if len(_M_LINE.findall(body)) > MAX_OFFER_MLINES:
            log.warning("refusing INVITE from %s: %d m-lines in the offer", host, len(_M_LINE.findall(body)))
            return self._respond(rdata, 488, "Not Acceptable Here: too many media lines")
        keys = media_keys(msg)
        now = time.monotonic()
        if not self.budget.fits(keys, now):
            if self.refused[486] % 50 == 0:
                log.warning("refusing INVITE from %s: media sockets busy (%d live, %d closing)",
                            host, self.budget.live(), self.budget.closing(now))
            return self._respond(rdata, 486, "Busy Here")
        self.budget.charge(keys, now)
        return 0

    def unregister(self) -> None:
        if self._endpt is not None:
            self._lib.pjsip_endpt_unregister_module(self._endpt, ctypes.byref(self._mod))
            self._endpt = None
