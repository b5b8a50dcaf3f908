"""A pjsua2 far-end phone for the lab, as its own process: the peer baresip cannot be.

baresip 1.0 fails attended transfer both ways and answers 420 to a Replaces
for an early dialog (DESIGN.md), so the lab's transferee (B), consulted party
(C) and pickup caller (A) are this small pjsua2 phone instead. It registers
one account with the lab registrar, plays its own tone (`pj.ToneGenerator`)
into every call, records what it hears from all its calls into one WAV
(`pj.AudioMediaRecorder`; the file can be switched mid-run, so a test can cut
"during the consultation" from "after the transfer"), auto-answers, only
rings, or answers only while idle, and accepts REFER and INVITE-with-Replaces
the way pjsua2 does by default. Every call event goes as one JSON line into a
status file; a Unix socket takes JSON-line commands (dial, answer, hangup,
record, calls). SIGTERM hangs up, releases every pjsua2 object and destroys
the library before exit.

Run: `python -m kiosk.lab.pjpeer --user 2003 --password PW --registrar
127.0.0.1:5060 --port 5070 --tone 1200 --record heard.wav --control peer.sock
--status peer.jsonl [--answer auto|ring|idle]`. `PjPeer` starts and drives
it from a test.

Threads: the main thread owns pjsua2 (threadCnt 0, `libHandleEvents(20)`
loop, as in kiosk/agent/thread.py); the control socket's threads only queue
closures for it and wait for their result.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import queue
import signal
import socket
import socketserver
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

from .ports import free_port
from .proc import LabProcess, LabProcessError, listening, wait_until

__all__ = ["PjPeer", "PjPeerError", "main"]

POLL_MS = 20
ANSWER_MODES = ("auto", "ring", "idle")


class PjPeerError(LabProcessError):
    """The pjsua2 peer failed to start, register or carry out a command."""


# --- the peer process ------------------------------------------------------------------


def _peer_main(ns: argparse.Namespace) -> int:
    import pjsua2 as pj  # only the peer process needs pjsua2

    status_file = open(ns.status, "a", buffering=1) if ns.status else None

    def report(kind: str, **fields: Any) -> None:
        line = json.dumps({"event": kind, "t": time.time(), **fields})
        if status_file is not None:
            status_file.write(line + "\n")
        print(line, flush=True)

    class PeerCall(pj.Call):
        """One call of the peer; `n` is the peer's own serial number for it."""

        def __init__(self, peer: "Peer", acc: pj.Account, call_id: int = pj.PJSUA_INVALID_ID,
                     origin: str = "") -> None:
            super().__init__(acc, call_id)
            self.peer = peer
            self.n = next(peer.serial)
            self.origin = origin  # incoming | outgoing | transfer | replaces
            self.ended = False
            self.state = ""
            self.media = ""

        def describe(self) -> dict[str, Any]:
            try:
                info = self.getInfo()
                return {"call": self.n, "state": info.stateText, "code": int(info.lastStatusCode),
                        "remote": info.remoteUri, "contact": info.remoteContact,
                        "call_id": info.callIdString, "origin": self.origin, "media": self.media}
            except pj.Error:
                return {"call": self.n, "state": "gone", "origin": self.origin}

        def onCallState(self, prm: "pj.OnCallStateParam") -> None:
            info = self.getInfo()
            self.state = info.stateText
            report("state", call=self.n, state=info.stateText, code=int(info.lastStatusCode),
                   reason=info.lastReason, remote=info.remoteUri, contact=info.remoteContact,
                   call_id=info.callIdString, origin=self.origin)
            if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.ended = True
                # Never drop the last reference inside pjsua2's own callback.
                self.peer.deferred.append(lambda: self.peer.forget(self))

        def onCallMediaState(self, prm: "pj.OnCallMediaStateParam") -> None:
            info = self.getInfo()
            for mi in info.media:
                if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                    continue
                status = {pj.PJSUA_CALL_MEDIA_ACTIVE: "active", pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "local hold",
                          pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "remote hold",
                          pj.PJSUA_CALL_MEDIA_NONE: "none", pj.PJSUA_CALL_MEDIA_ERROR: "error"}.get(mi.status, "?")
                self.media = status
                report("media", call=self.n, status=status)
                if mi.status in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD,
                                 pj.PJSUA_CALL_MEDIA_LOCAL_HOLD):
                    try:  # an exception must not leave a pjsua2 callback
                        self.peer.wire(self.getAudioMedia(mi.index))
                    except pj.Error as exc:
                        report("error", where="media", call=self.n, reason=exc.reason, status=exc.status)

        def onCallTransferRequest(self, prm: "pj.OnCallTransferRequestParam") -> None:
            # REFER received: accept (202) and give pjsua2 a call object of our own
            # for the new call, so this one keeps its own callbacks.
            new = PeerCall(self.peer, self.peer.acc, origin="transfer")
            self.peer.calls.append(new)
            prm.newCall = new
            report("transfer_request", call=self.n, new_call=new.n, refer_to=prm.dstUri, code=int(prm.statusCode))

        def onCallTransferStatus(self, prm: "pj.OnCallTransferStatusParam") -> None:
            report("transfer_status", call=self.n, code=int(prm.statusCode), reason=prm.reason,
                   final=bool(prm.finalNotify))

        def onCallReplaceRequest(self, prm: "pj.OnCallReplaceRequestParam") -> None:
            new = PeerCall(self.peer, self.peer.acc, origin="replaces")
            self.peer.calls.append(new)
            prm.newCall = new
            msg = prm.rdata.wholeMsg
            replaces = next((l.split(":", 1)[1].strip() for l in msg.splitlines()
                             if l.lower().startswith("replaces:")), "")
            report("replace_request", call=self.n, new_call=new.n, replaces=replaces,
                   src=prm.rdata.srcAddress, code=int(prm.statusCode))

        def onDtmfDigit(self, prm: "pj.OnDtmfDigitParam") -> None:
            # RFC 4733 events (the stream's end of each event) and SIP INFO dtmf-relay alike.
            method = {pj.PJSUA_DTMF_METHOD_RFC2833: "rfc4733",
                      pj.PJSUA_DTMF_METHOD_SIP_INFO: "info"}.get(prm.method, str(prm.method))
            report("dtmf", call=self.n, digit=prm.digit, method=method, duration=int(prm.duration))

        def onCallTsxState(self, prm: "pj.OnCallTsxStateParam") -> None:
            # The INFO requests themselves, so a test can read their bodies (Signal / Duration).
            try:
                e = prm.e
                if e.type != pj.PJSIP_EVENT_TSX_STATE or e.body.tsxState.type != pj.PJSIP_EVENT_RX_MSG:
                    return
                msg = e.body.tsxState.src.rdata.wholeMsg
            except (AttributeError, pj.Error):
                return
            if msg.startswith("INFO "):
                head, _, body = msg.partition("\r\n\r\n")
                ctype = next((l.split(":", 1)[1].strip() for l in head.split("\r\n")
                              if l.lower().startswith(("content-type:", "c:"))), "")
                report("info", call=self.n, content_type=ctype, body=body)

        def onCallReplaced(self, prm: "pj.OnCallReplacedParam") -> None:
            new = next((c for c in self.peer.calls if c is not self and c.getId() == prm.newCallId), None)
            report("replaced", call=self.n, new_call=new.n if new else None)

    class PeerAccount(pj.Account):
        def __init__(self, peer: "Peer") -> None:
            super().__init__()
            self.peer = peer

        def onRegState(self, prm: "pj.OnRegStateParam") -> None:
            info = self.getInfo()
            report("registration", code=int(prm.code), reason=prm.reason, active=bool(info.regIsActive),
                   expires=int(prm.expiration))

        def onIncomingCall(self, prm: "pj.OnIncomingCallParam") -> None:
            peer = self.peer
            call = PeerCall(peer, self, prm.callId, origin="incoming")
            busy = any(not c.ended for c in peer.calls)
            peer.calls.append(call)
            info = call.getInfo()
            report("incoming", call=call.n, remote=info.remoteUri, call_id=info.callIdString, busy=busy)
            # Answering (or rejecting) inside the callback aborts for an INVITE
            # without SDP: do it on the next turn of the loop.
            if peer.mode == "idle" and busy:
                peer.deferred.append(lambda: peer.respond(call, 486))
                return
            peer.deferred.append(lambda: peer.respond(call, 180))
            if peer.mode in ("auto", "idle"):
                peer.later(peer.answer_delay, lambda: peer.respond(call, 200))

    class Peer:
        """The pjsua2 side: endpoint, account, tone, recorder, calls."""

        def __init__(self) -> None:
            self.serial = itertools.count(1)
            self.mode = ns.answer
            self.answer_delay = ns.answer_delay / 1000.0
            self.calls: list[PeerCall] = []
            self.deferred: list[Callable[[], None]] = []
            self.timers: list[tuple[float, Callable[[], None]]] = []
            self.requests: queue.SimpleQueue[
                tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = queue.SimpleQueue()
            self.ep = pj.Endpoint()
            self.acc: PeerAccount | None = None
            self.tone: pj.ToneGenerator | None = None
            self.recorder: pj.AudioMediaRecorder | None = None
            self.record_path = ""

        # -- life cycle

        def create(self) -> None:
            ep = self.ep
            ep.libCreate()
            cfg = pj.EpConfig()
            cfg.uaConfig.threadCnt = 0
            cfg.uaConfig.mainThreadOnly = False
            cfg.uaConfig.userAgent = f"kiosk-lab-pjpeer/{ns.user}"
            cfg.logConfig.level = ns.log_level
            cfg.logConfig.consoleLevel = ns.log_level
            cfg.medConfig.clockRate = 16000
            cfg.medConfig.sndClockRate = 16000
            cfg.medConfig.channelCount = 1
            cfg.medConfig.noVad = True
            ep.libInit(cfg)
            for kind in (pj.PJSIP_TRANSPORT_UDP, pj.PJSIP_TRANSPORT_TCP):
                tcfg = pj.TransportConfig()
                tcfg.port = ns.port
                tcfg.boundAddress = ns.host
                ep.transportCreate(kind, tcfg)
            ep.audDevManager().setNullDev()
            try:
                ep.codecSetPriority("G722/16000/1", 255)
            except pj.Error:
                pass
            ep.libStart()
            if ns.tone:
                self.tone = pj.ToneGenerator()
                self.tone.createToneGenerator(16000, 1)
                desc = pj.ToneDesc()
                desc.freq1 = int(ns.tone)
                desc.freq2 = 0
                desc.on_msec = 10000
                desc.off_msec = 0
                desc.volume = 0
                tones = pj.ToneDescVector()
                tones.append(desc)
                self.tone.play(tones, True)
            if ns.record:
                self.start_recording(ns.record)
            acc = PeerAccount(self)
            acfg = pj.AccountConfig()
            acfg.idUri = f"sip:{ns.user}@{ns.domain}"
            if ns.registrar:
                acfg.regConfig.registrarUri = f"sip:{ns.registrar}"
                acfg.regConfig.timeoutSec = 300
                acfg.sipConfig.proxies.append(f"sip:{ns.registrar};lr")
            else:
                acfg.regConfig.registerOnAdd = False
            acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", ns.user, 0, ns.password or ""))
            acfg.natConfig.iceEnabled = False
            # RTP away from pjsua2's default 4000+ (the unit's) and baresip's 40000+.
            acfg.mediaConfig.transportConfig.port = 50000 + (ns.port % 600) * 16
            acfg.mediaConfig.transportConfig.portRange = 16
            acc.create(acfg, True)
            self.acc = acc
            report("started", user=ns.user, port=ns.port, tone=ns.tone, answer=self.mode, pid=os.getpid())

        def run(self, stop: threading.Event) -> None:
            while not stop.is_set():
                self.ep.libHandleEvents(POLL_MS)
                self.turn()

        def turn(self) -> None:
            """Deferred work, due timers and queued commands, between two polls."""
            while self.deferred:
                job = self.deferred.pop(0)
                try:
                    job()
                except pj.Error as exc:
                    report("error", where="deferred", reason=exc.reason, status=exc.status)
            now = time.monotonic()
            due = [t for t in self.timers if t[0] <= now]
            self.timers = [t for t in self.timers if t[0] > now]
            for _, job in due:
                try:
                    job()
                except pj.Error as exc:
                    report("error", where="timer", reason=exc.reason, status=exc.status)
            while True:
                try:
                    fut, fn, args, kwargs = self.requests.get_nowait()
                except queue.Empty:
                    break
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    fut.set_result(fn(*args, **kwargs))
                except pj.Error as exc:
                    fut.set_exception(PjPeerError(f"{exc.reason} (pjsua2 status {exc.status})"))
                except Exception as exc:
                    fut.set_exception(exc)

        def shutdown(self) -> None:
            """Hang up, let BYEs leave, release every pjsua2 object, destroy the library."""
            self.hangup_all()
            deadline = time.monotonic() + 2.0
            while any(not c.ended for c in self.calls) and time.monotonic() < deadline:
                self.ep.libHandleEvents(POLL_MS)
                self.turn()
            self.deferred.clear()
            self.timers.clear()
            self.stop_recording()
            if self.tone is not None:
                try:
                    self.tone.stop()
                except pj.Error:
                    pass
                self.tone = None
            if self.acc is not None:
                try:
                    self.acc.shutdown()
                except pj.Error:
                    pass
                deadline = time.monotonic() + 0.5
                while time.monotonic() < deadline:  # let the un-REGISTER leave
                    self.ep.libHandleEvents(POLL_MS)
                self.acc = None
            self.calls.clear()
            gc.collect()  # nothing of pjsua2 may outlive libDestroy
            self.ep.libDestroy()
            report("stopped")

        # -- helpers (pjsua2 thread)

        def hangup_all(self) -> None:
            # A helper of its own: a loop variable left in shutdown() would keep
            # the last Call alive past libDestroy, whose destructor then asserts.
            for call in list(self.calls):
                if not call.ended:
                    try:
                        call.hangup(pj.CallOpParam())
                    except pj.Error:
                        pass

        def later(self, seconds: float, job: Callable[[], None]) -> None:
            self.timers.append((time.monotonic() + seconds, job))

        def forget(self, call: PeerCall) -> None:
            if call in self.calls:
                self.calls.remove(call)
            gc.collect()

        def respond(self, call: PeerCall, code: int) -> None:
            if call.ended:
                return
            prm = pj.CallOpParam()
            prm.statusCode = code
            if code >= 300:
                call.hangup(prm)
            else:
                call.answer(prm)

        def wire(self, aud: pj.AudioMedia) -> None:
            """A call's media came up (again): our tone into it, what it carries into the recorder."""
            if self.tone is not None:
                self.tone.startTransmit(aud)
            if self.recorder is not None:
                aud.startTransmit(self.recorder)

        def start_recording(self, path: str) -> None:
            self.stop_recording()
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            rec = pj.AudioMediaRecorder()
            rec.createRecorder(path)
            self.recorder, self.record_path = rec, path
            for call in self.calls:
                aud = self._audio(call)
                if aud is not None:
                    aud.startTransmit(rec)
            report("recording", path=path)

        def stop_recording(self) -> str:
            path, self.recorder, self.record_path = self.record_path, None, ""
            gc.collect()  # releasing the recorder finishes the WAV header
            return path

        def _audio(self, call: PeerCall) -> "pj.AudioMedia | None":
            if call.ended:
                return None
            try:
                info = call.getInfo()
            except pj.Error:
                return None
            for mi in info.media:
                if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status in (
                        pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                    return call.getAudioMedia(mi.index)
            return None

        def find(self, n: int | None) -> PeerCall:
            live = [c for c in self.calls if not c.ended]
            if n is None:
                if len(live) != 1:
                    raise PjPeerError(f"{len(live)} calls: name one (calls {[c.n for c in live]})")
                return live[0]
            for c in live:
                if c.n == n:
                    return c
            raise PjPeerError(f"no call {n} (calls {[c.n for c in live]})")

        # -- commands (queued from the control socket, run here)

        def cmd_dial(self, uri: str, headers: dict[str, str] | list[list[str]] | None = None) -> dict[str, Any]:
            """Call `uri`; `headers` (name -> value, or [name, value] pairs for a header given twice)
            go into the INVITE (P-Asserted-Identity, History-Info, Call-Info ... for the identity tests)."""
            assert self.acc is not None
            call = PeerCall(self, self.acc, origin="outgoing")
            self.calls.append(call)
            prm = pj.CallOpParam(True)
            pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
            for name, value in pairs:
                h = pj.SipHeader()
                h.hName = name
                h.hValue = value
                prm.txOption.headers.append(h)
            try:
                call.makeCall(uri, prm)
            except pj.Error:
                self.calls.remove(call)
                raise
            report("dial", call=call.n, uri=uri)
            return {"call": call.n}

        def cmd_answer(self, call: int | None = None, code: int = 200) -> dict[str, Any]:
            self.respond(self.find(call), code)
            return {}

        def cmd_hangup(self, call: int | None = None, headers: dict[str, str] | None = None,
                       code: int = 0) -> dict[str, Any]:
            """Hang up (a CANCEL for a call still ringing); `headers` go into that CANCEL / BYE (e.g. a
            `Reason: SIP ;cause=200`), `code` is the status when rejecting an incoming call."""
            prm = pj.CallOpParam()
            if code:
                prm.statusCode = code
            for name, value in (headers or {}).items():
                h = pj.SipHeader()
                h.hName = name
                h.hValue = value
                prm.txOption.headers.append(h)
            self.find(call).hangup(prm)
            return {}

        def cmd_record(self, path: str | None = None) -> dict[str, Any]:
            if path:
                old = self.record_path
                self.start_recording(path)
                return {"file": path, "previous": old}
            return {"previous": self.stop_recording()}

        def cmd_calls(self) -> dict[str, Any]:
            return {"calls": [c.describe() for c in self.calls if not c.ended]}

        def cmd_mode(self, answer: str) -> dict[str, Any]:
            if answer not in ANSWER_MODES:
                raise PjPeerError(f"answer mode must be one of {ANSWER_MODES}")
            self.mode = answer
            return {"answer": answer}

    peer = Peer()
    commands: dict[str, Callable[..., dict[str, Any]]] = {
        "dial": peer.cmd_dial, "answer": peer.cmd_answer, "hangup": peer.cmd_hangup,
        "record": peer.cmd_record, "calls": peer.cmd_calls, "mode": peer.cmd_mode,
    }

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for raw in self.rfile:
                try:
                    req = json.loads(raw)
                    fn = commands[req.pop("cmd")]
                    fut: Future[Any] = Future()
                    peer.requests.put((fut, fn, (), req))
                    reply = {"ok": True, "data": fut.result(timeout=10)}
                except KeyError as exc:
                    reply = {"ok": False, "error": f"unknown command {exc}"}
                except Exception as exc:
                    reply = {"ok": False, "error": str(exc) or type(exc).__name__}
                self.wfile.write(json.dumps(reply).encode() + b"\n")
                self.wfile.flush()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server: socketserver.ThreadingUnixStreamServer | None = None
    try:
        peer.create()
        if ns.control:
            if os.path.exists(ns.control):
                os.unlink(ns.control)
            server = socketserver.ThreadingUnixStreamServer(ns.control, Handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, name="pjpeer-control", daemon=True).start()
        peer.run(stop)
    except pj.Error as exc:
        report("error", where="start", reason=exc.reason, status=exc.status)
        return 2
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
            try:
                os.unlink(ns.control)
            except OSError:
                pass
        peer.shutdown()
        if status_file is not None:
            status_file.close()
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kiosk.lab.pjpeer", description=__doc__.split("\n\n")[0])
    p.add_argument("--user", required=True)
    p.add_argument("--password", default="")
    p.add_argument("--registrar", help="host:port of the registrar (also the outbound proxy)")
    p.add_argument("--domain", default="127.0.0.1")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tone", type=int, default=0, help="Hz of the tone played into every call (0: silence)")
    p.add_argument("--record", help="WAV file for what the peer hears (all calls mixed)")
    p.add_argument("--control", help="Unix socket for JSON-line commands")
    p.add_argument("--status", help="file that gets one JSON line per event")
    p.add_argument("--answer", choices=ANSWER_MODES, default="auto",
                   help="auto: answer every call; ring: only ring; idle: answer when idle, else 486")
    p.add_argument("--answer-delay", type=int, default=200, help="ms of ringing before an auto-answer")
    p.add_argument("--log-level", type=int, default=3)
    return p


def main(argv: list[str] | None = None) -> int:
    """The peer process's entry point."""
    return _peer_main(_parser().parse_args(argv))


# --- driving the peer from a test ------------------------------------------------------


class PjPeer:
    """A pjpeer process in `workdir`: start, command over its socket, read its events."""

    def __init__(self, workdir: Path, user: str, password: str, registrar: str | None,
                 tone_hz: int = 0, answer: str = "auto", answer_delay_ms: int = 200,
                 record: bool = True, port: int | None = None, log_level: int = 3) -> None:
        self.workdir = Path(workdir)
        self.user = user
        self.password = password
        self.registrar = registrar
        self.tone_hz = tone_hz
        self.answer = answer
        self.answer_delay_ms = answer_delay_ms
        self.recording = record
        self.port = port or free_port()
        self.log_level = log_level
        self.socket = self.workdir / "control.sock"
        self.status_path = self.workdir / "status.jsonl"
        self.log_path = self.workdir / "pjpeer.log"
        self.first_recording = self.workdir / "heard-0.wav"
        self.proc: LabProcess | None = None

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{self.registrar}" if self.registrar else self.contact_uri

    @property
    def contact_uri(self) -> str:
        return f"sip:{self.user}@127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "PjPeer":
        """Run the peer; wait until its socket is open and (with a registrar) it registered."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "kiosk.lab.pjpeer", "--user", self.user, "--password", self.password,
                "--port", str(self.port), "--tone", str(self.tone_hz), "--answer", self.answer,
                "--answer-delay", str(self.answer_delay_ms), "--control", str(self.socket),
                "--status", str(self.status_path), "--log-level", str(self.log_level)]
        if self.registrar:
            argv += ["--registrar", self.registrar]
        if self.recording:
            argv += ["--record", str(self.first_recording)]
        self.proc = LabProcess(f"pjpeer-{self.user}", argv, self.log_path, self.workdir)
        self.proc.start()
        # A connect, not the file: the file appears at bind(), before the peer's listen().
        if not wait_until(lambda: listening(self.socket) or not self.proc.running(), timeout):
            self.stop()
            raise PjPeerError(f"pjpeer {self.user} did not open its socket:\n{self.proc_tail()}")
        if not self.proc.running():
            raise PjPeerError(f"pjpeer {self.user} exited at start:\n{self.proc_tail()}")
        if self.registrar:
            try:
                reg = self.wait_event("registration", timeout=timeout)
            except PjPeerError:
                self.stop()
                raise
            if reg["code"] // 100 != 2:
                self.stop()
                raise PjPeerError(f"pjpeer {self.user} did not register: {reg}")
        return self

    def proc_tail(self, lines: int = 40) -> str:
        return self.proc.log_tail(lines) if self.proc else ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (the peer releases everything and exits 0), SIGKILL if it hangs."""
        if self.proc is None:
            return None
        code = self.proc.stop(grace=timeout)
        return code

    def __enter__(self) -> "PjPeer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- commands

    def request(self, cmd: str, **args: Any) -> dict[str, Any]:
        """One command; its data, or PjPeerError with the peer's reason."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(15)
            s.connect(str(self.socket))
            s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        reply = json.loads(buf)
        if not reply.get("ok"):
            raise PjPeerError(f"pjpeer {self.user}: {cmd} failed: {reply.get('error')}")
        return reply["data"]

    def dial(self, uri: str, headers: dict[str, str] | list[tuple[str, str]] | None = None) -> int:
        """Call `uri` (with extra INVITE `headers`); the peer's number for the call."""
        if headers is not None and not isinstance(headers, dict):
            headers = [list(h) for h in headers]  # type: ignore[assignment]
        return int(self.request("dial", uri=uri, headers=headers)["call"])

    def hangup(self, call: int | None = None, headers: dict[str, str] | None = None) -> None:
        self.request("hangup", call=call, headers=headers)

    def digits(self, since: int = 0, method: str | None = None) -> str:
        """The DTMF digits the peer received so far (RFC 4733 and INFO, or only `method`), in order."""
        return "".join(e["digit"] for e in self.find_events("dtmf", since)
                       if method is None or e.get("method") == method)

    def accept(self, call: int | None = None) -> None:
        self.request("answer", call=call)

    def calls(self) -> list[dict[str, Any]]:
        return list(self.request("calls")["calls"])

    def record(self, path: Path | None) -> Path | None:
        """Switch the recording to `path` (None: stop); the finished previous file."""
        data = self.request("record", path=str(path) if path else None)
        prev = data.get("previous")
        return Path(prev) if prev else None

    # -- events

    def events(self) -> list[dict[str, Any]]:
        """Every event so far, oldest first."""
        try:
            text = self.status_path.read_text()
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line still being written
        return out

    def event_count(self) -> int:
        return len(self.events())

    def find_events(self, kind: str, since: int = 0, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in self.events()[since:]
                if e.get("event") == kind and all(e.get(k) == v for k, v in fields.items())]

    def wait_event(self, kind: str, timeout: float = 10.0, since: int = 0, **fields: Any) -> dict[str, Any]:
        """The first event `kind` at index >= since whose fields match."""
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = self.find_events(kind, since, **fields)
            return bool(found) or not (self.proc and self.proc.running())

        wait_until(check, timeout, 0.05)
        if not found:
            seen = [(e.get("event"), e.get("state", e.get("code", ""))) for e in self.events()[since:]]
            raise PjPeerError(f"pjpeer {self.user}: no {kind} {fields or ''} in {timeout} s; saw {seen}\n"
                              f"{self.proc_tail(15)}")
        return found[0]


if __name__ == "__main__":
    sys.exit(main())
