"""The one thread that owns the pjsua2 Endpoint, and the queue every request goes through.

pjsua2 aborts the process when a thread it has never seen calls into it, and a
poll loop that never waits starves the media clock (DESIGN.md, measured). So
one Python thread creates the Endpoint with `threadCnt = 0`, loops on
`libHandleEvents(POLL_MS)`, and runs queued requests between polls. Other
threads only enqueue a closure and get a Future back; to avoid the poll
timeout in the dial latency, they also send a tiny CRLF keep-alive datagram to
our own UDP transport, which wakes the poll at once and which pjsip discards.
"""

from __future__ import annotations

import gc
import logging
import queue
import socket
import threading
import time
import weakref
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable

import pjsua2 as pj

from .. import events as ev
from ..desk import AgentError, CallGone
from ..profile import MAX_CALLS, Profile
from .calls import CallRegistry, KCall
from .gate import InviteGate, MediaBudget
from .lines import Lines
if TYPE_CHECKING:  # numpy and hw.audio only load when the profile names a device
    from .audio_port import LocalBridge
from . import dialogs
from .media import Media
from .netwatch import NetWatch
from .rtp_watch import RtpWatch
from .tonegen import Tones
from .cancel_watch import CancelWatch

log = logging.getLogger("kiosk.agent")

POLL_MS = 20
#: How often the agent's periodic work runs.
PERIODIC_S = 0.25
#: How often every call is checked against pjsua's own table, and how long a lost one may stay.
AUDIT_S = 2.0
AUDIT_GRACE_S = 1.5
#: How often line changes that wait for a call are tried again.
RECONCILE_S = 0.5
STOP = object()



def _quiet_until_log_config() -> None:
    """Silence pjlib until libInit installs our log writer.

    `libCreate` logs at pjlib's default level straight to stdout (about six
    lines per start, ending up in the journal unformatted); pjsua2 has no
    setting that applies before it.  pjlib's own `pj_log_set_level` is
    exported by the binding's shared object; libInit then sets the level we
    want.  A build without the symbol just prints those lines.
    """
    import ctypes

    try:
        ctypes.CDLL(pj._pjsua2.__file__).pj_log_set_level(0)
    except (AttributeError, OSError):
        pass

class PjLog(pj.LogWriter):
    """pjsip's log into Python logging (runs on the agent thread only).

    While the unit stops, pjsip's errors are warnings: un-registering a line
    whose REGISTER is still unanswered (the server is down) fails with EBUSY
    at every stop, and that is not something for anyone to fix.
    """

    stopping = False

    def write(self, entry: "pj.LogEntry") -> None:  # noqa: D401 - pjsua2 callback
        msg = entry.msg.rstrip()
        if entry.level <= 1 and self.stopping:
            log.warning("pjsip (stopping): %s", msg)
        elif entry.level <= 1:
            log.error("pjsip: %s", msg)
        elif entry.level <= 2:
            log.warning("pjsip: %s", msg)
        else:
            log.debug("pjsip: %s", msg)


class PjAgent:
    """The SIP agent of the desk (see `kiosk.desk.Agent`) on pjsua2."""

    def __init__(self, profile: Profile, log_level: int = 2) -> None:
        self.profile = profile
        self.log_level = log_level
        self.listener: Callable[[ev.Event], None] = lambda e: None
        self.new_id: Callable[[], int] = lambda: 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._wake_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        host = profile.sip.host
        self._wake_addr = ("127.0.0.1" if host in ("0.0.0.0", "") else host, profile.sip.port)
        # Work the callbacks defer to the next turn of the loop: pjsua2 must not
        # answer, reject or forget a call from inside its own callback.
        self.deferred: list[Callable[[], None]] = []
        self.ep: pj.Endpoint | None = None
        self.trusted: set[str] = set()
        #: Hosts whose INVITEs may name the caller (P-Asserted-Identity) or ask for intercom (resolved).
        self.identity_hosts: set[str] = set()
        #: Do not disturb: the SIP code every new incoming call is refused with, None when off.
        self.dnd: int | None = None
        self.tones: Tones | None = None
        self.cancel_watch: CancelWatch | None = None
        self.calls = CallRegistry()
        # Media socket slots taken by live calls and by sockets closed < 0.75 s ago (see gate.py).
        self.budget = MediaBudget(lambda: sum(c.media_keys for c in self.calls.active()))
        self.gate: InviteGate | None = None
        self.dialogs = dialogs.DialogStore(None)  # the real one once _create knows its place
        self.lines: Lines | None = None
        self.media: Media | None = None
        self.local_audio: LocalBridge | None = None  # the headset bridge, when the profile names a device
        # Work run on the agent thread about every PERIODIC_S (keep-alives, media
        # watchdogs); each gets the monotonic time and must return quickly.
        self.periodic: list[Callable[[float], None]] = []
        self._next_periodic = 0.0
        self._next_audit = 0.0
        self.rtp_watch: RtpWatch | None = None
        #: A reload's line changes that wait for calls to end: `reconcile` is run again until none wait.
        self.profile_waiting: list[str] = []
        self._next_reconcile = 0.0
        self._profile_seq = 0  # each apply_profile's number: an older one that arrives late is dropped
        self._profile_seq_applied = 0
        self._profile_seq_lock = threading.Lock()
        self._resolving: tuple[str, ...] = profile.sip.trusted  # the trusted hosts last asked for
        self._resolving_identity: tuple[str, ...] = identity_hosts_of(profile)

    # --- the desk's side ---------------------------------------------------

    def start(self, listener: Callable[[ev.Event], None], new_id: Callable[[], int]) -> None:
        """Start the agent thread; raise AgentError if pjsua2 cannot start.

        `new_id` gives row ids for incoming calls from the desk's own counter.
        """
        self.listener = listener
        self.new_id = new_id
        self._thread = threading.Thread(target=self._run, name="sip-agent", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._start_error is not None:
            raise AgentError(str(self._start_error))

    def stop(self) -> None:
        """End every call, release every pjsua2 object, stop the thread."""
        if self._thread and self._thread.is_alive():
            self._queue.put(STOP)
            self._wake()
            self._thread.join(15)
        self._wake_sock.close()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run fn(*args) on the agent thread; the Future holds its result or error."""
        fut: Future[Any] = Future()
        if not (self._thread and self._thread.is_alive()):
            fut.set_exception(AgentError("the SIP agent is not running", "agent_not_running"))
            return fut
        self._queue.put((fut, fn, args))
        self._wake()
        return fut

    def on_agent_thread(self) -> bool:
        """Whether the caller is the thread that owns pjsua2 (and pjsua2 is still up)."""
        return self.ep is not None and threading.current_thread() is self._thread

    def defer_call(self, call: KCall, method: Callable[[KCall], None]) -> None:
        """Run method(call) on the next turn of the loop, unless the call is gone by then.

        The job holds the call weakly: a queued job must never be what keeps an
        ended call's object alive (see `kiosk.agent.calls`).
        """
        ref = weakref.ref(call)

        def job() -> None:
            target = ref()
            if target is not None and not target.ended:
                method(target)

        self.deferred.append(job)

    def _wake(self) -> None:
        try:
            self._wake_sock.sendto(b"\r\n\r\n", self._wake_addr)
        except OSError:
            pass  # the poll timeout still picks the request up

    def dial(self, call: int, line: str, uri: str, route: str | None) -> Future[None]:
        return self.submit(self._dial, call, line, uri, route)

    def answer(self, call: int) -> Future[None]:
        return self.submit(self._with_call, call, KCall.answer_now)

    def hangup(self, call: int) -> Future[None]:
        return self.submit(self._with_call, call, KCall.hangup_now)

    def hold(self, call: int) -> Future[None]:
        return self.submit(self._with_call, call, KCall.hold_now)

    def unhold(self, call: int) -> Future[None]:
        return self.submit(self._with_call, call, KCall.unhold_now)

    def transfer(self, call: int, uri: str) -> Future[None]:
        return self.submit(self._with_call, call, lambda c: c.transfer_now(uri))

    def transfer_replaces(self, call: int, target: int) -> Future[None]:
        return self.submit(self._replaces, call, target)

    def conference(self, calls: list[int]) -> Future[None]:
        return self.submit(self._conference, calls)

    def mute(self, on: bool) -> Future[None]:
        """Mute (or unmute) the operator's microphone; without a headset there is nothing to mute."""
        return self.submit(self._mute, on)

    def record(self, call: int, path: str | None) -> Future[None]:
        """Start recording the call into path, or stop it when path is None."""
        return self.submit(self._record, call, path)

    def tone(self, kind: str | None) -> Future[None]:
        """Play the ring, call-waiting or ringback tone, or none (see kiosk/agent/tonegen.py)."""
        return self.submit(self._tone, kind)

    def beep(self) -> Future[None]:
        """The short auto-answer beep in the operator's ear."""
        return self.submit(self._beep)

    def dtmf(self, call: int, digits: str, method: str = "rfc4733") -> Future[None]:
        """Send DTMF digits to a call (RFC 4733 events or SIP INFO), with a key tone per digit in the ear."""
        return self.submit(self._dtmf, call, digits, method)

    def set_dnd(self, code: int | None) -> Future[None]:
        """Do not disturb: refuse every new incoming call with `code` (486, 480, 603), or ring again (None)."""
        return self.submit(self._set_dnd, code)

    def apply_profile(self, profile: Profile) -> Future[list[str]]:
        """Take a reloaded profile (any thread; returns at once): the trusted hosts, the keep-alive
        and media-timeout settings, and the lines' and trunk routes' accounts.

        The Future holds what still waits for a call to end, in words (empty when all is done);
        the agent makes those changes itself once the calls are gone. The SIP listen address and
        the user agent are the ones the Endpoint was started with: the caller keeps them as they
        were (they need a restart). Host names in `trusted` are resolved on a thread of their own,
        never on the agent thread (a slow DNS must not stall SIP).
        """
        identity = identity_hosts_of(profile)
        with self._profile_seq_lock:
            self._profile_seq += 1
            seq = self._profile_seq
            trusted_changed = profile.sip.trusted != self._resolving
            identity_changed = identity != self._resolving_identity
            self._resolving = profile.sip.trusted
            self._resolving_identity = identity
        if not trusted_changed and not identity_changed:
            return self.submit(self._apply_profile, profile, None, seq)
        out: Future[list[str]] = Future()

        def resolve() -> None:
            try:
                hosts = resolve_hosts(profile.sip.trusted) if trusted_changed else None
                ident = resolve_hosts(identity) if identity_changed else None
            except Exception as exc:  # never leave the Future unresolved
                log.exception("trusted hosts: cannot resolve")
                out.set_exception(AgentError(f"cannot resolve the trusted hosts: {exc}", "agent_internal",
                                             error=str(exc)))
                return
            inner = self.submit(self._apply_profile, profile, hosts, seq, ident)

            def done(f: Future[list[str]]) -> None:
                exc = f.exception()
                if exc is not None:
                    out.set_exception(exc)
                else:
                    out.set_result(f.result())

            inner.add_done_callback(done)

        threading.Thread(target=resolve, name="kiosk-resolve", daemon=True).start()
        return out

    # --- the agent thread --------------------------------------------------

    def _run(self) -> None:
        try:
            self._create()
        except BaseException as exc:  # pjsua2 raises pj.Error: report, don't die
            self._start_error = exc if not isinstance(exc, pj.Error) else AgentError(_pj_reason(exc))
            log.error("SIP agent failed to start: %s", self._start_error)
            self._destroy()
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop()
        finally:
            self._shutdown()

    def _create(self) -> None:
        sip = self.profile.sip
        # Before pjsua2: end the calls a run that died (SIGKILL, crash, power) left open.
        dialogs_path = dialogs.state_dir(self.profile.control.socket) / dialogs.FILE_NAME
        dialogs.end_leftovers(dialogs_path, sip.host, sip.user_agent)
        self.dialogs = dialogs.DialogStore(dialogs_path)
        ep = pj.Endpoint()
        self.ep = ep
        _quiet_until_log_config()
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = False
        cfg.uaConfig.maxCalls = MAX_CALLS
        cfg.uaConfig.userAgent = sip.user_agent
        cfg.logConfig.level = self.log_level
        cfg.logConfig.consoleLevel = self.log_level
        self._log_writer = PjLog()
        cfg.logConfig.writer = self._log_writer
        cfg.logConfig.decor = 0
        cfg.medConfig.clockRate = 16000
        cfg.medConfig.sndClockRate = 16000
        cfg.medConfig.channelCount = 1
        cfg.medConfig.noVad = True
        self.trusted = resolve_hosts(sip.trusted)
        self.identity_hosts = resolve_hosts(identity_hosts_of(self.profile))
        ep.libInit(cfg)
        # Before any transport exists: no INVITE may reach pjsua without passing the gate.
        try:
            self.gate = InviteGate(self, self.budget)
            self.gate.register()
        except (OSError, AttributeError, RuntimeError) as exc:  # a binding built otherwise: run without it
            self.gate = None
            log.error("INVITE gate not available (%s): a flood of calls may exhaust pjsip's sockets", exc)
        try:  # "answered elsewhere" comes only in a CANCEL that pjsua2 never shows us
            self.cancel_watch = CancelWatch()
            self.cancel_watch.register()
        except (OSError, AttributeError, RuntimeError) as exc:
            self.cancel_watch = None
            log.error("CANCEL watch not available (%s): calls answered elsewhere end as plain missed calls", exc)
        for kind in (pj.PJSIP_TRANSPORT_UDP, pj.PJSIP_TRANSPORT_TCP):
            tcfg = pj.TransportConfig()
            tcfg.port = sip.port
            if sip.host not in ("0.0.0.0", ""):
                tcfg.boundAddress = sip.host
            ep.transportCreate(kind, tcfg)
        ep.audDevManager().setNullDev()
        try:
            ep.codecSetPriority("G722/16000/1", 255)
        except pj.Error:
            log.warning("G722 codec not available; wideband off")
        ep.libStart()
        self.media = Media(ep)
        if self.profile.audio.device is not None:
            # After libStart (the port joins the conference bridge); a missing device is not fatal.
            from .audio_port import start_local_audio

            self.local_audio = start_local_audio(self, self.profile.audio.device)
        self.tones = Tones(self)
        try:
            self.tones.prepare()
        except pj.Error as exc:  # the unit still takes calls; the operator is told it will not ring
            log.error("tone generators not available: %s", _pj_reason(exc))
            self.emit(ev.Alert(f"The unit cannot play tones: incoming calls will not ring ({_pj_reason(exc)})",
                               "tones_off", {"error": _pj_reason(exc)}))
        self.lines = Lines(self, ep, self.profile)
        self.lines.create()
        self.lines.start_keepalive()  # keep-alives and unanswered calls (keepalive.py)
        self.periodic.append(self._audit_calls)
        self.periodic.append(self._tones_idle)
        self.periodic.append(NetWatch(self, sip.host))
        self.rtp_watch = RtpWatch(self, sip.rtp_timeout_seconds)
        self.periodic.append(self.rtp_watch)
        self.periodic.append(self._reconcile_waiting)

    def _loop(self) -> None:
        assert self.ep is not None
        ep = self.ep
        while True:
            ep.libHandleEvents(POLL_MS)
            while self.deferred:
                job = self.deferred.pop(0)
                try:
                    job()
                except pj.Error as exc:
                    log.warning("deferred job failed: %s", _pj_reason(exc))
                except Exception:
                    log.exception("deferred job failed")
                # A job may close over a call: a local left holding it would keep
                # the ended call's object alive until the next job (ghost calls).
                del job
            if self.calls.graveyard and not self.deferred:
                self.calls.bury()
            if self.calls.zombies:
                self.calls.release_zombies()
            now = time.monotonic()
            if self.periodic and now >= self._next_periodic:
                self._next_periodic = now + PERIODIC_S
                for tick in list(self.periodic):
                    try:
                        tick(now)
                    except pj.Error as exc:
                        log.warning("periodic job failed: %s", _pj_reason(exc))
                    except Exception:
                        log.exception("periodic job failed")
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is STOP:
                    return
                fut, fn, args = item
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    fut.set_result(fn(*args))
                except pj.Error as exc:
                    fut.set_exception(AgentError(_pj_reason(exc), "sip_error", error=_pj_reason(exc)))  # no frames kept
                except AgentError as exc:
                    # No traceback: its frames may hold a Call that must die on this thread.
                    fut.set_exception(exc.with_traceback(None))
                except Exception as exc:
                    log.exception("agent request failed")
                    fut.set_exception(AgentError(f"internal error: {exc}", "agent_internal", error=str(exc)))
                del item, fut, fn, args  # nothing of a request outlives it (see above)

    def _shutdown(self) -> None:
        """Hang up everything, let the BYEs go out, release pjsua2 objects, destroy."""
        ep = self.ep
        if ep is None:
            return
        writer = getattr(self, "_log_writer", None)
        if writer is not None:
            writer.stopping = True
        try:
            # No local variable may keep a Call alive past libDestroy (its
            # destructor then asserts in pjsua): hang up through a helper.
            self._hangup_all()
            deadline = time.monotonic() + 2.0
            while self.calls.active() and time.monotonic() < deadline:
                ep.libHandleEvents(20)
                self._run_deferred()
            self._release_tones()
            if self.media:
                self.media.release()
            if self.lines:
                self.lines.release()
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:  # let the un-REGISTERs leave
                    ep.libHandleEvents(20)
        except pj.Error as exc:
            log.warning("shutdown: %s", _pj_reason(exc))
        self._run_deferred()
        self.deferred.clear()  # closures here may hold calls
        self.calls.clear()
        gc.collect()  # no pjsua2 object may be left for the exit-time GC
        self._destroy()

    def _hangup_all(self) -> None:
        for call in self.calls.active():
            try:
                call.hangup_now()
            except pj.Error as exc:
                log.warning("call %d: hangup at shutdown: %s", call.id, _pj_reason(exc))

    def _run_deferred(self) -> None:
        while self.deferred:
            try:
                self.deferred.pop(0)()
            except Exception:
                log.exception("deferred job failed")
        self.calls.release_zombies()

    def _release_tones(self) -> None:
        """Every tone generator and the ring device's port go before libDestroy (as the headset's)."""
        tones, self.tones = self.tones, None
        if tones is not None:
            try:
                tones.release()
            except pj.Error as exc:
                log.warning("releasing the tones: %s", _pj_reason(exc))

    def _destroy(self) -> None:
        self._release_tones()
        if self.local_audio is not None:  # the port must be gone before libDestroy
            self.local_audio.close()
            self.local_audio = None
        ep = self.ep
        self.ep = None
        self.media = None
        self.lines = None
        if ep is not None:
            try:
                ep.libDestroy()
            except pj.Error as exc:
                log.warning("libDestroy: %s", _pj_reason(exc))

    def _apply_profile(self, profile: Profile, trusted: set[str] | None, seq: int,
                       identity: set[str] | None = None) -> list[str]:
        """On the agent thread: make the running SIP stack follow `profile` (see `apply_profile`)."""
        if seq < self._profile_seq_applied:
            log.info("profile: an older reload arrived after a newer one: ignored")
            return list(self.profile_waiting)
        self._profile_seq_applied = seq
        self.profile = profile
        if trusted is not None:
            self.trusted = trusted
        if identity is not None:
            self.identity_hosts = identity
        if self.tones is not None:
            try:  # a new ring device opens now, not at the next ring
                self.tones.prepare()
            except pj.Error as exc:
                log.warning("tones after the reload: %s", _pj_reason(exc))
        if self.rtp_watch is not None:
            self.rtp_watch.timeout_s = profile.sip.rtp_timeout_seconds
        self.profile_waiting = self.lines.reconcile(profile) if self.lines is not None else []
        for what in self.profile_waiting:
            log.info("profile: waiting: %s", what)
        self._next_reconcile = time.monotonic() + RECONCILE_S
        return list(self.profile_waiting)

    def _reconcile_waiting(self, now: float) -> None:
        """Periodic: make the line changes that waited for a call, once the call has gone."""
        if not self.profile_waiting or now < self._next_reconcile or self.lines is None:
            return
        self._next_reconcile = now + RECONCILE_S
        before = self.profile_waiting
        self.profile_waiting = self.lines.reconcile(self.profile)
        if self.profile_waiting != before:
            done = [w for w in before if w not in self.profile_waiting]
            log.info("profile: done now that the calls ended: %s; still waiting: %s",
                     "; ".join(done) or "-", "; ".join(self.profile_waiting) or "nothing")

    def _audit_calls(self, now: float) -> None:
        """End, for the desk, calls that pjsua no longer has although it never said so.

        A call whose slot is free, or held by a dialog with another Call-ID,
        will never report again: without this its row would stay for good.
        Two looks AUDIT_GRACE_S apart, so a call between two callbacks is not taken for lost.
        """
        if now < self._next_audit:
            return
        self._next_audit = now + AUDIT_S
        for call in self.calls.active():
            try:
                lost = not call.isActive() or bool(
                    call.sip_call_id and call.getInfo().callIdString != call.sip_call_id)
            except pj.Error:
                lost = True
            if not lost:
                call.lost_since = 0.0
                continue
            if not call.lost_since:
                call.lost_since = now
                continue
            if now - call.lost_since < AUDIT_GRACE_S:
                continue
            log.error("call %d: gone from pjsua without a DISCONNECTED report: ending its row", call.id)
            call.finish()
            if not call.silent:
                self.emit(ev.CallProgress(call.id, "ended", 0, "the call was lost by the SIP stack"))

    def emit(self, event: ev.Event) -> None:
        """Hand an event to the desk (we are on the agent thread)."""
        try:
            self.listener(event)
        except Exception:
            log.exception("desk failed on %s", event.kind)

    # --- requests, run on the agent thread ---------------------------------

    def _call(self, call_id: int) -> KCall:
        call = self.calls.get(call_id)
        if call is None:
            raise CallGone(call_id)
        return call

    def _with_call(self, call_id: int, fn: Callable[[KCall], None]) -> None:
        fn(self._call(call_id))

    def _dial(self, call_id: int, line_id: str, uri: str, route_id: str | None) -> None:
        assert self.lines is not None
        if len(self.calls.active()) >= MAX_CALLS:
            raise AgentError(f"this unit handles at most {MAX_CALLS} calls", "too_many_calls", max=MAX_CALLS)
        if not self.budget.fits(2, reserve=0):
            raise AgentError("the unit is refusing a burst of incoming calls; try again in a second", "incoming_burst")
        account = self.lines.account_for(line_id, route_id)
        call = KCall(self, account, call_id, "out")
        self.calls.add(call)
        prm = pj.CallOpParam(True)
        try:
            call.makeCall(uri, prm)
        except pj.Error as exc:
            self.calls.remove(call_id)
            raise AgentError(f"cannot call {uri}: {_pj_reason(exc)}", "dial_failed", uri=uri,
                             error=_pj_reason(exc)) from None
        try:
            call.sip_call_id = call.getInfo().callIdString
        except pj.Error:
            pass  # ended at once: its DISCONNECTED state is on its way

    def _replaces(self, call_id: int, target_id: int) -> None:
        call, target = self._call(call_id), self._call(target_id)
        call.transfer_replaces_now(target)

    def _conference(self, call_ids: list[int]) -> None:
        assert self.media is not None
        calls = [self._call(c) for c in call_ids]
        self.media.join(calls)

    def _mute(self, on: bool) -> None:
        if self.local_audio is None:
            raise AgentError("this unit has no headset configured ([audio] device)", "no_headset")
        self.local_audio.muted = on
        log.info("microphone %s", "muted" if on else "unmuted")

    def _record(self, call_id: int, path: str | None) -> None:
        assert self.media is not None
        call = self._call(call_id)
        if path is None:
            self.media.stop_recording(call)
        else:
            self.media.start_recording(call, path)


    def _tones_idle(self, now: float) -> None:
        if self.tones is not None:
            self.tones.idle(now)

    def _tone(self, kind: str | None) -> None:
        if self.tones is None:
            raise AgentError("tones are not available on this unit", "no_tones")
        self.tones.tone(kind)

    def _beep(self) -> None:
        if self.tones is None:
            raise AgentError("tones are not available on this unit", "no_tones")
        self.tones.beep()

    def _dtmf(self, call_id: int, digits: str, method: str) -> None:
        bad = [ch for ch in digits if ch.upper() not in DTMF_DIGITS]
        if not digits or bad:
            raise AgentError(f"not DTMF digits: {''.join(bad)[:10]!r} (0-9 * # A-D)", "dtmf_failed",
                             digits=len(digits), error="bad digits")
        if method not in DTMF_METHODS:
            raise AgentError(f"unknown DTMF method {method!r} (rfc4733 or info)", "dtmf_failed",
                             digits=len(digits), error=f"method {method}")
        call = self._call(call_id)
        prm = pj.CallSendDtmfParam()
        prm.method = DTMF_METHODS[method]
        prm.digits = digits.upper()
        prm.duration = DTMF_DURATION_MS
        try:
            # Call.sendDtmf, not dialDtmf: one entry point for both methods. For INFO pjsua sends one
            # INFO per digit, application/dtmf-relay "Signal=5 / Duration=160"; for RFC 4733 the
            # stream queues the digits as telephone-event packets. Nothing here touches the bridge.
            call.sendDtmf(prm)
        except pj.Error as exc:
            raise AgentError(f"DTMF to call {call_id} failed: {_pj_reason(exc)}", "dtmf_failed", row=call_id,
                             digits=len(digits), error=_pj_reason(exc)) from None
        finally:
            del call
        # The count, never the digits: an operator may key a customer's PIN or card number into an IVR.
        log.info("call %d: DTMF sent (%d digits, %s)", call_id, len(digits), method)
        if self.tones is not None:
            try:
                self.tones.keys(digits)
            except pj.Error as exc:  # the digits went; only the operator's feedback is missing
                log.warning("key tone: %s", _pj_reason(exc))

    def _set_dnd(self, code: int | None) -> None:
        if code is not None and not 400 <= int(code) <= 699:
            raise AgentError(f"not a SIP rejection code: {code}", "bad_argument", value=code)
        self.dnd = int(code) if code is not None else None
        log.info("do not disturb: %s", f"on (incoming calls refused with {code})" if code else "off")


#: RFC 4733 event names pjsua sends, and the desk's method names for the two ways.
DTMF_DIGITS = frozenset("0123456789*#ABCD")
DTMF_METHODS = {"rfc4733": pj.PJSUA_DTMF_METHOD_RFC2833, "info": pj.PJSUA_DTMF_METHOD_SIP_INFO}
#: pjsua's own default digit length (PJSUA_CALL_SEND_DTMF_DURATION_DEFAULT), also the INFO's Duration.
DTMF_DURATION_MS = 160


def identity_hosts_of(profile: Profile) -> tuple[str, ...]:
    """The hosts whose INVITEs are believed about the caller: `[sip] identity_hosts`, or by default the
    host part of every line's registrar and proxy (Profile.identity_hosts() once the profile has it)."""
    fn = getattr(profile, "identity_hosts", None)
    if callable(fn):
        return tuple(fn())
    explicit = tuple(getattr(profile.sip, "identity_hosts", ()) or ())
    if explicit:
        return explicit
    out: list[str] = []
    for line in profile.lines:
        for uri in (line.registrar, line.proxy):
            host = uri_host(uri or "")
            if host and host not in out:
                out.append(host)
    return tuple(out)


def uri_host(uri: str) -> str:
    """`sip:user@host:5060;lr` / `sip:[::1]:5060` / `host` -> host."""
    rest = uri.strip().strip("<>")
    if ":" in rest.split("@", 1)[0] and rest.split(":", 1)[0].lower() in ("sip", "sips"):
        rest = rest.split(":", 1)[1]
    rest = rest.rsplit("@", 1)[-1].split(";", 1)[0]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return rest.split(":", 1)[0]


def resolve_hosts(hosts: tuple[str, ...]) -> set[str]:
    """Trusted hosts as the set of addresses requests arrive from (names resolved once, at start)."""
    out: set[str] = set()
    for host in hosts:
        out.add(host)
        try:
            for info in socket.getaddrinfo(host, None):
                out.add(str(info[4][0]))
        except OSError as exc:
            log.warning("trusted host %s does not resolve (%s): only its literal name is trusted", host, exc)
    return out


def _pj_reason(exc: "pj.Error") -> str:
    """A pjsua2 error as a sentence (its `info()` names the failing call and status)."""
    try:
        reason = exc.reason or ""
        title = exc.title or ""
        status = exc.status
    except Exception:
        return str(exc)
    if status == 70010:  # PJ_ETOOMANY
        return f"this unit handles at most {MAX_CALLS} calls"
    text = reason.strip() or title
    return f"{text} (pjsua2 status {status})"

