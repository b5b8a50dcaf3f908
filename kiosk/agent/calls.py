"""The pjsua2 Call subclass and the registry that keeps every live call referenced.

Dropping the last Python reference to a live pjsua2 Call hangs it up silently
(BYE, no DISCONNECTED callback: measured), so every call stays in the registry
until its DISCONNECTED callback, and is removed from it on the next turn of the
agent loop, never inside the callback itself.

The other way round is as dangerous: pjsua gives an ended call's slot to the
next call at once, but the C++ object behind a KCall keeps the slot number and,
when it is finally destroyed, hangs up whatever call holds that slot now and
unhooks its callbacks (pjproject issue #3856: a ghost row, a far end that got a
BYE). So a KCall never dies while its slot belongs to another call, nor on a
thread pjsua has not seen: `KCall.__del__` resurrects it into the registry's
zombies, which the agent thread releases once the slot is free again.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import gc
import logging
import re
import time
import weakref
from typing import TYPE_CHECKING

import pjsua2 as pj

from .. import events as ev
from .dialogs import dialog_from
from .identity import answered_elsewhere

if TYPE_CHECKING:
    from .thread import PjAgent

log = logging.getLogger("kiosk.agent.calls")

#: A hold re-INVITE refused by the far end may never report media state: after
#: this long a new hold request is sent again instead of being taken as pending.
HOLD_PENDING_S = 5.0

_STATES = {
    pj.PJSIP_INV_STATE_CALLING: "dialling",
    pj.PJSIP_INV_STATE_INCOMING: "ringing",
    pj.PJSIP_INV_STATE_EARLY: "early",
    pj.PJSIP_INV_STATE_CONNECTING: "talking",
    pj.PJSIP_INV_STATE_CONFIRMED: "talking",
    pj.PJSIP_INV_STATE_DISCONNECTED: "ended",
}


def remote_party(uri: str) -> str:
    """`"Name" <sip:1002@host>;tag=x` -> `Name <sip:1002@host>` (or the bare URI)."""
    uri = uri.strip()
    m = re.match(r'\s*(?:"([^"]*)"|([^<]*?))\s*<([^>]*)>', uri)
    if m:
        name = (m.group(1) or m.group(2) or "").strip()
        return f"{name} <{m.group(3)}>" if name else m.group(3)
    return uri.split(";", 1)[0]


def asserted_party(event: "pj.SipEvent") -> str:
    """The P-Asserted-Identity (or Remote-Party-ID) of a 1xx/2xx we received, as `remote_party`.

    After a pickup the dialog's To is still `*8<ext>`: the server names the
    caller we were connected to this way, if it does at all.
    """
    try:
        if event.type != pj.PJSIP_EVENT_TSX_STATE or event.body.tsxState.type != pj.PJSIP_EVENT_RX_MSG:
            return ""
        msg = event.body.tsxState.src.rdata.wholeMsg
    except (AttributeError, pj.Error):
        return ""
    if not re.match(r"SIP/2\.0 [12]\d\d ", msg):
        return ""
    head = msg.split("\r\n\r\n", 1)[0]
    m = re.search(r"^(?:P-Asserted-Identity|Remote-Party-ID)[ \t]*:[ \t]*(.+?)[ \t]*\r?$", head, re.M | re.I)
    return remote_party(m.group(1).split(",", 1)[0]) if m else ""


def progress(call: int, state: str, code: int, reason: str, remote: str, **extra: object) -> ev.CallProgress:
    """CallProgress with the fields this events module has (the newer ones are left out on an older one)."""
    known = {f.name for f in dataclasses.fields(ev.CallProgress)}
    return ev.CallProgress(call, state, code, reason, remote, **{k: v for k, v in extra.items() if k in known})


_pjsua_lib: "ctypes.CDLL | None" = None


def _call_user_data(slot: int) -> int:
    """pjsua's user data of a call slot (the pjsua2 Call that owns it), 0 when none."""
    global _pjsua_lib
    if _pjsua_lib is None:
        _pjsua_lib = ctypes.CDLL(pj._pjsua2.__file__)
        _pjsua_lib.pjsua_call_get_user_data.restype = ctypes.c_void_p
        _pjsua_lib.pjsua_call_get_user_data.argtypes = [ctypes.c_int]
    return int(_pjsua_lib.pjsua_call_get_user_data(slot) or 0)


def received_message(event: "pj.SipEvent") -> str:
    """The whole SIP message an event carries when it is one we received ("" otherwise)."""
    try:
        if event.type == pj.PJSIP_EVENT_TSX_STATE and event.body.tsxState.type == pj.PJSIP_EVENT_RX_MSG:
            return str(event.body.tsxState.src.rdata.wholeMsg)
        if event.type == pj.PJSIP_EVENT_RX_MSG:
            return str(event.body.rxMsg.rdata.wholeMsg)
    except (AttributeError, pj.Error):
        pass
    return ""


def remote_contact_uri(contact: str) -> str:
    """`<sip:2001@127.0.0.1:5070;ob>;expires=..` -> `sip:2001@127.0.0.1:5070;ob`."""
    m = re.search(r"<([^>]*)>", contact)
    return (m.group(1) if m else contact.split(";", 1)[0]).strip()


class KCall(pj.Call):
    """One call of the unit; `id` is the desk's row id."""

    def __init__(self, agent: "PjAgent", account: pj.Account, call_id: int, direction: str,
                 pj_call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, pj_call_id)
        self.agent = agent
        self.account = account  # a line's account is kept (and never deleted) while a call is on it
        self.id = call_id
        self.direction = direction
        self.ended = False
        self.local_hold = False
        self.remote_hold = False
        self.media_active = False
        self.silent = False  # a refused (untrusted) call: the desk never hears of it
        self.hold_sent = 0.0  # when our hold re-INVITE went out; 0 when none is pending
        self.unhold_wanted = False  # connect asked while that hold was still out
        self.asserted = ""  # who the server says answered (a pickup reaches the original caller)
        self.sip_call_id = ""  # the dialog's Call-ID: tells our call from another one in the same slot
        self.lost_since = 0.0  # when the audit first found pjsua no longer has this call
        self.dialog_kept = ""  # the Call-ID under which the dialogs file holds this call
        self.media_keys = 2  # media ioqueue slots pjsua holds for this call: RTP + RTCP per m-line (gate.py)
        self.confirmed = False  # the INVITE is answered and ACKed: in conversation, not ringing with early media
        self.route_set: list[str] = []  # an incoming call's Record-Route, for the BYE after a crash

    def __del__(self) -> None:
        """Die only on the agent thread and only while no other call holds our slot (see module doc).

        Otherwise the object resurrects itself into the zombies; Python runs a
        finaliser once, so the later release frees it without coming back here.
        """
        agent = self.__dict__.get("agent")
        if agent is None:
            return
        try:
            safe = agent.on_agent_thread() and not (self.ended and self.isActive())
        except Exception:
            safe = False
        if not safe:
            agent.calls.zombies.append(self)

    def slot_taken(self) -> bool:
        """Whether pjsua's slot of this ended call now belongs to another call.

        `isActive` only looks at the slot's INVITE session, which a new call in
        the slot may not have yet; a slot whose user data points anywhere is taken too.
        """
        if self.isActive():
            return True
        slot = self.getId()
        return slot != pj.PJSUA_INVALID_ID and bool(_call_user_data(slot))

    # --- callbacks (agent thread, inside pjsua2) ---------------------------

    def onCallState(self, prm: "pj.OnCallStateParam") -> None:
        info = self.getInfo()
        state = _STATES.get(info.state, "dialling")
        if not self.sip_call_id:
            self.sip_call_id = info.callIdString
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.confirmed = True
        if state == "talking" and not self.dialog_kept and not self.silent:
            self._keep_dialog(prm.e)
        if state == "ended":
            self.finish()
        log.info("call %d: %s %s %s", self.id, info.stateText, info.lastStatusCode, info.lastReason)
        if self.silent:
            return
        self.asserted = asserted_party(prm.e) or self.asserted
        extra = {}
        if state == "ended" and self.direction == "in" and not self.confirmed:
            # A CANCEL with "Reason: SIP;cause=200" means another phone took it. pjsua reports this
            # DISCONNECTED with the 487 we sent, not the CANCEL (measured): cancel_watch.py saw the CANCEL.
            watch = self.agent.cancel_watch
            extra["elsewhere"] = answered_elsewhere(received_message(prm.e)) or bool(
                watch is not None and watch.elsewhere(self.sip_call_id or info.callIdString))
            if extra["elsewhere"]:
                log.info("call %d: answered elsewhere (CANCEL with Reason SIP cause=200)", self.id)
        self.agent.emit(progress(self.id, state, int(info.lastStatusCode), info.lastReason,
                                 self.asserted or remote_party(info.remoteUri), **extra))

    def finish(self) -> None:
        """The call is over (its DISCONNECTED state, or the audit found it gone): let go of it everywhere."""
        if not self.ended:  # its sockets' ioqueue slots come back only 500 ms from now
            self.agent.budget.charge(self.media_keys)
        if self.dialog_kept:
            # On the next turn of the loop: DISCONNECTED comes inside Call.hangup(), before
            # pjsua sends the CANCEL or BYE, and the file's fsync must not delay that.
            call_id, dialogs = self.dialog_kept, self.agent.dialogs
            self.agent.deferred.append(lambda: dialogs.remove(call_id))
            self.dialog_kept = ""
        self.ended = True
        # By row id and the registry, not by a closure over self: a deferred job
        # keeping the object alive would let pjsua reuse its slot first.
        row_id, calls = self.id, self.agent.calls
        self.agent.deferred.append(lambda: calls.remove(row_id))
        if self.agent.media:
            self.agent.media.forget(self)

    def _keep_dialog(self, event: "pj.SipEvent") -> None:
        """Note the dialog in the dialogs file from the 2xx we got (caller) or the ACK (callee)."""
        msg = received_message(event)
        if not msg:
            return
        caller = self.direction == "out"
        if caller != bool(re.match(r"SIP/2\.0 2\d\d ", msg)) or (not caller and not msg.startswith("ACK ")):
            return
        dialog = dialog_from(msg, caller)
        if dialog is None:
            return
        if not caller:
            dialog.route = list(self.route_set)  # the INVITE's Record-Route, in the order it came
            try:
                dialog.target = remote_contact_uri(self.getInfo().remoteContact) or dialog.target
            except pj.Error:
                pass
        if dialog.target:
            self.agent.dialogs.add(dialog)
            self.dialog_kept = dialog.call_id

    def onCallMediaState(self, prm: "pj.OnCallMediaStateParam") -> None:
        info = self.getInfo()
        local_hold = remote_hold = False
        active = False
        for mi in info.media:
            if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            if mi.status == pj.PJSUA_CALL_MEDIA_LOCAL_HOLD:
                local_hold = True
            elif mi.status == pj.PJSUA_CALL_MEDIA_REMOTE_HOLD:
                remote_hold = True
                active = True
            elif mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                active = True
        self.local_hold, self.remote_hold, self.media_active = local_hold, remote_hold, active
        self.hold_sent = 0.0  # the offer/answer is over: local_hold now tells the truth
        if self.unhold_wanted:
            self.unhold_wanted = False
            self.agent.defer_call(self, KCall.unhold_now)
        # Every re-INVITE tears down the call's bridge connections: wire them again.
        if self.agent.media:
            self.agent.media.rewire(self)
        self.agent.emit(ev.CallMedia(self.id, local_hold, remote_hold, active))

    def onCallTransferStatus(self, prm: "pj.OnCallTransferStatusParam") -> None:
        code = int(prm.statusCode)
        log.info("call %d: transfer status %s %s final=%s", self.id, code, prm.reason, prm.finalNotify)
        self.agent.emit(ev.TransferProgress(self.id, code, prm.reason, bool(prm.finalNotify)))
        # Keep our leg up and decide ourselves: the desk hangs up on success.
        prm.cont = not prm.finalNotify

    # --- requests (agent thread, from the queue) ---------------------------

    def audio(self) -> "pj.AudioMedia | None":
        """The call's audio in the conference bridge, when it has one."""
        info = self.getInfo()
        for mi in info.media:
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status in (
                    pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                try:
                    return self.getAudioMedia(mi.index)
                except pj.Error:
                    return None
        return None

    def answer_now(self) -> None:
        prm = pj.CallOpParam()
        prm.statusCode = 200
        self.answer(prm)

    def ring_now(self) -> None:
        """Send 180 Ringing for an incoming call (outside onIncomingCall)."""
        if self.ended:
            return
        prm = pj.CallOpParam()
        prm.statusCode = 180
        self.answer(prm)

    def reject_now(self, code: int, reason: str = "") -> None:
        if self.ended:
            return
        prm = pj.CallOpParam()
        prm.statusCode = code
        if reason:
            prm.reason = reason
        self.hangup(prm)

    def hangup_now(self) -> None:
        if self.ended:
            return
        prm = pj.CallOpParam()
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_INCOMING or (
                info.state == pj.PJSIP_INV_STATE_EARLY and info.role == pj.PJSIP_ROLE_UAS):
            prm.statusCode = 486  # reject a ringing call: Busy Here
        self.hangup(prm)

    def hold_now(self) -> None:
        """Hold; a hold already on its way is not an error (the desk may ask twice
        before the re-INVITE's answer shows the call held)."""
        self.unhold_wanted = False
        if self.local_hold or (self.hold_sent and time.monotonic() - self.hold_sent < HOLD_PENDING_S):
            return
        self.setHold(pj.CallOpParam(True))
        self.hold_sent = time.monotonic()

    def unhold_now(self) -> None:
        if self.hold_sent and not self.local_hold:
            # Our hold re-INVITE is still out; a second one now is refused
            # (PJ_EINVALIDOP): take the call back once that one is answered.
            self.unhold_wanted = True
            return
        self.unhold_wanted = False
        prm = pj.CallOpParam(True)
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD
        self.reinvite(prm)
        self.hold_sent = 0.0

    def transfer_now(self, uri: str) -> None:
        self.xfer(uri, pj.CallOpParam(True))

    def transfer_replaces_now(self, target: "KCall") -> None:
        self.xferReplaces(target, pj.CallOpParam(True))


class CallRegistry:
    """Every KCall the agent made or took, by row id, until pjsua2 is done with it.

    A removed call goes to a graveyard that only the agent thread empties,
    followed at once by a garbage collection there: a KCall caught in a
    reference cycle would otherwise be destroyed by whichever thread's GC
    finds it — a thread pjsua2 has never seen (abort), or after libDestroy
    at exit (assertion in pjsua_call_set_user_data: measured).
    """

    def __init__(self) -> None:
        self._calls: dict[int, KCall] = {}
        self.graveyard: list[KCall] = []
        # Ended calls whose release had to wait (another call has their slot, or
        # the last reference went on a foreign thread); appended from any thread.
        self.zombies: collections.deque[KCall] = collections.deque()

    def add(self, call: KCall) -> None:
        self._calls[call.id] = call

    def get(self, call_id: int) -> KCall | None:
        call = self._calls.get(call_id)
        return None if call is None or call.ended else call

    def remove(self, call_id: int) -> None:
        call = self._calls.pop(call_id, None)
        if call is not None:
            self.graveyard.append(call)

    def bury(self) -> None:
        """Release removed calls and collect any cycles, on the agent thread."""
        if self.graveyard:
            left = [weakref.ref(c) for c in self.graveyard]
            self.graveyard.clear()
            if any(r() is not None and r() not in self.zombies for r in left):
                gc.collect()  # only a cycle keeps one alive: collect it here

    def release_zombies(self, force: bool = False) -> None:
        """Free the zombies whose slot is free again (all of them when `force`: at shutdown)."""
        for _ in range(len(self.zombies)):
            call = self.zombies.popleft()
            try:
                busy = not force and call.slot_taken()
            except Exception:
                busy = False
            if busy:
                self.zombies.append(call)
                continue
            ref = weakref.ref(call)
            del call  # the last reference: pjsua2's destructor runs here, on the agent thread
            if ref() is not None:
                # A reference cycle keeps it: collect it now, here and while its slot is free
                # (its finaliser has run already and would not guard a later collection).
                gc.collect()
                if ref() is not None:
                    log.error("an ended call object is still referenced after a collection: %r",
                              gc.get_referrers(ref())[:3])

    def all(self) -> list[KCall]:
        return list(self._calls.values())

    def active(self) -> list[KCall]:
        return [c for c in self._calls.values() if not c.ended]

    def clear(self) -> None:
        self._calls.clear()
        self.graveyard.clear()
        gc.collect()
        self.release_zombies(force=True)
