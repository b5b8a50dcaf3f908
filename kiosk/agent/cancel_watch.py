"""Which incoming calls were cancelled because another phone answered them (`Reason: SIP;cause=200`).

pjsua2 reports an incoming call's end after a CANCEL with the 487 it *sent*
as the event (measured: `OnCallStateParam.e` is a TSX_STATE event whose
source is our response, not the CANCEL), and it never hands the CANCEL to the
application. So this is a pjsip module of our own, like the INVITE gate
(gate.py, whose pjsip_rx_data offsets it shares and checks the same way), that
only looks: registered at priority 31, just ahead of the user-agent layer
(32) that hands a CANCEL to its INVITE's dialog, it sees every new CANCEL
(the transaction layer, 16, has already absorbed retransmissions), notes the
Call-ID of one that says "answered elsewhere" and passes it on untouched.
The call's DISCONNECTED callback, which comes after, asks `elsewhere()`.
"""

from __future__ import annotations

import ctypes
import logging
import time

import pjsua2 as pj

from .gate import _ON_RX, _RX_MSG_BUF, _RX_MSG_LEN, _PjsipModule, _PjStr
from .identity import answered_elsewhere, header_values

log = logging.getLogger("kiosk.agent.cancel")

#: Ahead of PJSIP_MOD_PRIORITY_UA_PROXY_LAYER (32), after the transaction layer (16).
PRIORITY = 31
#: How long a noted CANCEL is kept for its call's DISCONNECTED (which follows within one poll).
KEEP_S = 30.0


class CancelWatch:
    """A look-only pjsip module that notes CANCELs carrying `Reason: SIP;cause=200` (agent thread)."""

    def __init__(self) -> None:
        self.noted: dict[str, float] = {}  # Call-ID -> when its CANCEL said "answered elsewhere"
        self.broken = False
        self._lib = ctypes.CDLL(pj._pjsua2.__file__)
        self._lib.pjsua_get_pjsip_endpt.restype = ctypes.c_void_p
        self._lib.pjsip_endpt_register_module.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._cb = _ON_RX(self._on_rx_request)  # kept: pjsip calls it until the endpoint is destroyed
        self._name = ctypes.create_string_buffer(b"mod-kiosk-cancel")
        self._mod = _PjsipModule()
        self._mod.name = _PjStr(ctypes.cast(self._name, ctypes.c_char_p), len(b"mod-kiosk-cancel"))
        self._mod.id = -1
        self._mod.priority = PRIORITY
        self._mod.on_rx_request = self._cb

    def register(self) -> None:
        """Install the module (agent thread, after libInit, before the transports)."""
        endpt = self._lib.pjsua_get_pjsip_endpt()
        status = self._lib.pjsip_endpt_register_module(endpt, ctypes.byref(self._mod))
        if status != 0:
            raise RuntimeError(f"cannot register the CANCEL watch (pjsip status {status})")

    def elsewhere(self, call_id: str) -> bool:
        """Whether the CANCEL that ended this call said it was answered elsewhere (forgets it)."""
        return self.noted.pop(call_id, None) is not None if call_id else False

    def _on_rx_request(self, rdata: int) -> int:
        try:
            self._look(rdata)
        except Exception:  # never let an error of ours reach pjsip
            log.exception("CANCEL watch failed; request passed on")
        return 0  # never handled here: pjsip goes on as if we were not there

    def _look(self, rdata: int) -> None:
        if self.broken or not rdata:
            return
        buf = ctypes.c_void_p.from_address(rdata + _RX_MSG_BUF).value or 0
        size = ctypes.c_int.from_address(rdata + _RX_MSG_LEN).value
        if not (rdata < buf < rdata + _RX_MSG_BUF and 0 < size <= _RX_MSG_BUF):
            self.broken = True
            log.error("CANCEL watch: unexpected pjsip_rx_data layout; 'answered elsewhere' will not be seen")
            return
        head = ctypes.string_at(buf, min(size, 7))
        if head != b"CANCEL ":
            return
        msg = ctypes.string_at(buf, size).decode("utf-8", "replace")
        if not answered_elsewhere(msg):
            return
        ids = header_values(msg, "call-id")
        if ids:
            now = time.monotonic()
            self.noted = {k: t for k, t in self.noted.items() if now - t < KEEP_S}
            self.noted[ids[0]] = now
