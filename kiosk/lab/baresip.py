"""A far-end phone for the lab: one baresip 1.0 process with its own config dir.

`Baresip` writes a config dir into its work directory and runs Debian's
baresip on 127.0.0.1 with no audio device: the microphone is a sine tone
(module ausine), the speaker is an aubridge device nobody reads, and with
`record=True` the sndfile filter writes what the phone hears (and what it
sends) as WAV files into `workdir/recordings`. The phone registers with a
registrar if one is given (digest auth), auto-answers by default, and is driven
through its ctrl_tcp socket (netstring JSON): `command()`, `dial()`,
`hangup()`, ... Events that baresip pushes on that socket (CALL_RINGING,
CALL_ESTABLISHED, CALL_CLOSED, ...) are collected and can be waited for.

Facts about baresip 1.0.0 that shaped this (measured here):
- sip_listen binds UDP+TCP on the port and TLS on port + 1;
- ausine only runs at 48000 Hz stereo (`ausrc_srate 48000`,
  `ausrc_channels 2`), baresip resamples to the codec;
- ausine's tone is made at 48 kHz and resampled: a tone above the codec's
  Nyquist frequency aliases (19 kHz came out as 3 kHz at -54 dBFS), so keep
  tones below 3.5 kHz for G.711 and 7 kHz for G.722;
- `tone_hz=None` uses an aubridge source that nothing feeds: the phone then
  sends no RTP at all (not RTP carrying silence);
- sndfile names files dump-<YYYY-MM-DD-hh-mm-ss>-{dec,enc}.wav: two calls on
  one phone within the same second share (overwrite) a file; the WAV header
  is finished only when the call closes;
- `net_interface 127.0.0.1` (an address; "lo" fails) keeps SDP on loopback;
- the first SIGTERM starts a graceful stop that can hang for 30 s (pending
  un-REGISTER or calls); a second SIGTERM exits at once.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from .ports import free_port
from .proc import LabProcess, LabProcessError

__all__ = ["Baresip", "BaresipError", "MODULE_PATH"]

MODULE_PATH = "/usr/lib/baresip/modules"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BaresipError(LabProcessError):
    """baresip failed to start, register or carry out a command."""


def _netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


class _Control:
    """A ctrl_tcp connection: sends commands, sorts replies from pushed events."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(None)
        self.cond = threading.Condition()
        self.responses: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.closed = False
        self._token = 0
        self._send_lock = threading.Lock()
        self._thread = threading.Thread(target=self._reader, name=f"baresip-ctrl-{port}", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        buf = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                buf += data
                while True:
                    colon = buf.find(b":")
                    if colon < 0:
                        break
                    length = int(buf[:colon])
                    end = colon + 1 + length
                    if len(buf) < end + 1:
                        break
                    payload, buf = buf[colon + 1 : end], buf[end + 1 :]
                    self._dispatch(json.loads(payload))
        except (OSError, ValueError):
            pass
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        with self.cond:
            if msg.get("response"):
                self.responses[str(msg.get("token", ""))] = msg
            elif msg.get("event"):
                msg["_t"] = time.monotonic()
                self.events.append(msg)
            self.cond.notify_all()

    def command(self, cmd: str, params: str, timeout: float) -> dict[str, Any]:
        with self._send_lock:
            self._token += 1
            token = f"k{self._token}"
            body = json.dumps({"command": cmd, "params": params, "token": token}).encode()
            self.sock.sendall(_netstring(body))
        deadline = time.monotonic() + timeout
        with self.cond:
            while token not in self.responses:
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    raise BaresipError(f"no reply to ctrl_tcp command {cmd!r}")
                self.cond.wait(left)
            return self.responses.pop(token)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(2)


class Baresip:
    """A baresip far-end phone on 127.0.0.1:`sip_port`, driven over ctrl_tcp."""

    def __init__(
        self,
        workdir: Path,
        sip_port: int | None = None,
        user: str = "peer",
        password: str | None = None,
        registrar: str | None = None,
        tone_hz: int | None = 440,
        record: bool = False,
        ctrl_port: int | None = None,
        auto_answer: bool = True,
        host: str = "127.0.0.1",
        codecs: tuple[str, ...] = ("g722", "g711"),
        binary: str = "baresip",
    ) -> None:
        if tone_hz is not None and not 10 <= tone_hz <= 20000:
            raise ValueError("tone_hz must be between 10 and 20000 (ausine's range) or None")
        self.workdir = Path(workdir)
        # baresip also binds TLS on sip_port + 1: pick two free ports.
        self.sip_port = sip_port if sip_port is not None else free_port(host, span=2)
        self.ctrl_port = ctrl_port if ctrl_port is not None else free_port(host, kind="tcp")
        self.user = user
        self.password = password
        self.registrar = registrar
        self.tone_hz = tone_hz
        self.record = record
        self.auto_answer = auto_answer
        self.host = host
        self.codecs = tuple(codecs)
        self.binary = binary
        self.config_dir = self.workdir / "config"
        self.recordings_dir = self.workdir / "recordings"
        self.log_path = self.workdir / "baresip.log"
        self._proc: LabProcess | None = None
        self._ctrl: _Control | None = None

    # -- addresses -----------------------------------------------------------

    @property
    def aor(self) -> str:
        """The account's address of record (at the registrar, or at the phone itself)."""
        if self.registrar:
            return f"sip:{self.user}@{self.registrar}"
        return f"sip:{self.user}@{self.host}:{self.sip_port}"

    @property
    def uri(self) -> str:
        """URI that reaches this phone: via the registrar if any, else directly."""
        return self.aor

    @property
    def contact_uri(self) -> str:
        """URI of the phone's own SIP socket (bypassing any registrar)."""
        return f"sip:{self.user}@{self.host}:{self.sip_port}"

    @property
    def pid(self) -> int | None:
        """PID of the baresip process."""
        return self._proc.pid if self._proc else None

    # -- config --------------------------------------------------------------

    def _config_text(self) -> str:
        source = f"ausine,{self.tone_hz}" if self.tone_hz is not None else "aubridge,silence-src"
        modules = [f"module\t\t\t{c}.so" for c in self.codecs]
        if self.record:
            modules.append("module\t\t\tsndfile.so")
        modules += ["module\t\t\tausine.so", "module\t\t\taubridge.so"]
        lines = [
            "# Generated by kiosk.lab.baresip -- a lab far-end phone.",
            "poll_method\t\tepoll",
            f"sip_listen\t\t{self.host}:{self.sip_port}",
            "call_local_timeout\t120",
            "call_max_calls\t\t4",
            # No sound device: the tone is the microphone; the speaker is an
            # aubridge device that no source pairs with, so nothing reads it
            # (the sndfile filter still sees every decoded frame).
            f"audio_source\t\t{source}",
            "audio_player\t\taubridge,speaker",
            "audio_alert\t\taubridge,alert",
            # ausine in 1.0 insists on 48 kHz stereo; baresip resamples.
            "ausrc_srate\t\t48000",
            "ausrc_channels\t\t2",
            "audio_level\t\tno",
            "audio_buffer\t\t20-160",
            # Out of the range free_port() hands out for SIP.
            "rtp_ports\t\t40000-49999",
            "rtcp_mux\t\tno",
            "jitter_buffer_delay\t5-10",
            f"net_interface\t\t{self.host}",
            f"module_path\t\t{MODULE_PATH}",
            *modules,
            "module_tmp\t\tuuid.so",
            "module_tmp\t\taccount.so",
            "module_app\t\tmenu.so",
            "module_app\t\tctrl_tcp.so",
            f"ctrl_tcp_listen\t\t{self.host}:{self.ctrl_port}",
            "statmode_default\toff",
            f"snd_path\t\t{self.recordings_dir}",
        ]
        return "\n".join(lines) + "\n"

    def _account_line(self) -> str:
        params = [f"answermode={'auto' if self.auto_answer else 'manual'}"]
        if self.registrar:
            if self.password is not None:
                if any(c in self.password for c in ';"\n\r'):
                    raise ValueError("password must not contain ; \" or newlines")
                params.append(f"auth_pass={self.password}")
            params.append("regint=600")
        else:
            params.append("regint=0")
        return f"<{self.aor}>;" + ";".join(params) + "\n"

    def write_config(self) -> Path:
        """Write config, accounts and contacts into the config dir; return its path."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "config").write_text(self._config_text())
        (self.config_dir / "accounts").write_text(self._account_line())
        (self.config_dir / "contacts").write_text("")
        return self.config_dir

    # -- life cycle ----------------------------------------------------------

    def start(self, timeout: float = 10.0, wait_registered: bool = True) -> Baresip:
        """Run baresip, connect to ctrl_tcp and, with a registrar, wait until registered."""
        if self._proc is not None:
            raise BaresipError("baresip already started")
        exe = shutil.which(self.binary)
        if exe is None:
            raise BaresipError(f"{self.binary} not found (apt-get install baresip)")
        self.write_config()
        self._proc = LabProcess("baresip", [exe, "-f", str(self.config_dir)], self.log_path, self.workdir)
        self._proc.start()
        deadline = time.monotonic() + timeout
        try:
            self._connect(deadline)
            if self.registrar and wait_registered:
                state = self.wait_registration(max(0.1, deadline - time.monotonic()))
                if state != "OK":
                    raise BaresipError(
                        f"{self.user} did not register with {self.registrar} ({state or 'no answer'}):\n"
                        + self._proc.log_tail(20)
                    )
        except BaseException:
            self.stop()
            raise
        return self

    def _connect(self, deadline: float) -> None:
        assert self._proc is not None
        while True:
            if not self._proc.running():
                raise BaresipError(
                    f"baresip exited with {self._proc.poll()} at start-up:\n{self._proc.log_tail(30)}"
                )
            try:
                self._ctrl = _Control(self.host, self.ctrl_port)
                return
            except OSError:
                if time.monotonic() >= deadline:
                    raise BaresipError(
                        f"baresip's ctrl_tcp did not open on {self.host}:{self.ctrl_port}:\n"
                        + self._proc.log_tail(30)
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop baresip: SIGTERM (graceful), a second SIGTERM after 2 s, SIGKILL last."""
        if self._ctrl is not None:
            self._ctrl.close()
            self._ctrl = None
        if self._proc is not None:
            self._proc.stop(grace=2.0, terms=2)
            self._proc = None

    def running(self) -> bool:
        """True while the baresip process runs."""
        return self._proc is not None and self._proc.running()

    def __enter__(self) -> Baresip:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control -------------------------------------------------------------

    def command(self, cmd: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        """Run one ctrl_tcp command; return baresip's reply ({"response", "ok", "data", "token"})."""
        if self._ctrl is None:
            raise BaresipError("baresip is not running")
        return self._ctrl.command(cmd, params, timeout)

    def _checked(self, cmd: str, params: str = "") -> dict[str, Any]:
        reply = self.command(cmd, params)
        if not reply.get("ok"):
            raise BaresipError(f"baresip refused {cmd} {params!r}: {reply.get('data', '').strip()}")
        return reply

    def dial(self, uri: str) -> None:
        """Place a call to `uri` (baresip completes a bare user with the account's domain)."""
        self._checked("dial", uri)

    def hangup(self) -> None:
        """Hang up the current call."""
        self._checked("hangup")

    def accept(self) -> None:
        """Answer the ringing incoming call (when auto_answer is off)."""
        self._checked("accept")

    def hold(self) -> None:
        """Put the current call on hold."""
        self._checked("hold")

    def resume(self) -> None:
        """Take the current call off hold."""
        self._checked("resume")

    def transfer(self, uri: str) -> None:
        """Blind-transfer the current call to `uri` (sends REFER)."""
        self._checked("transfer", uri)

    def registration_state(self) -> str:
        """'OK', 'ERR' or '' (not known yet) for the account, from `reginfo`."""
        data = _ANSI.sub("", str(self.command("reginfo").get("data", "")))
        for line in data.splitlines():
            if self.user in line:
                words = line.split()
                if "OK" in words:
                    return "OK"
                if "ERR" in words:
                    return "ERR"
        return ""

    def wait_registration(self, timeout: float = 10.0) -> str:
        """Wait until the registration succeeds or fails; return 'OK', 'ERR' or '' on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.registration_state()
            if state or time.monotonic() >= deadline:
                return state
            time.sleep(0.05)

    def calls(self) -> str:
        """baresip's `listcalls` text (ANSI colours removed)."""
        return _ANSI.sub("", str(self.command("listcalls").get("data", "")))

    # -- events --------------------------------------------------------------

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event baresip pushed on the control socket so far (oldest first)."""
        if self._ctrl is None:
            return []
        with self._ctrl.cond:
            return list(self._ctrl.events)

    def event_count(self) -> int:
        """Number of events so far (a marker for wait_event's `since`)."""
        return len(self.events)

    def wait_event(
        self, etype: str, timeout: float = 10.0, since: int = 0, **fields: Any
    ) -> dict[str, Any]:
        """Wait for an event of type `etype` (index >= `since`, matching `fields`); return it."""
        if self._ctrl is None:
            raise BaresipError("baresip is not running")
        ctrl = self._ctrl
        deadline = time.monotonic() + timeout
        with ctrl.cond:
            while True:
                for ev in ctrl.events[since:]:
                    if ev.get("type") == etype and all(ev.get(k) == v for k, v in fields.items()):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or ctrl.closed:
                    seen = [e.get("type") for e in ctrl.events[since:]]
                    raise BaresipError(f"{self.user}: no {etype} event in {timeout} s (saw {seen})")
                ctrl.cond.wait(left)

    # -- recordings ----------------------------------------------------------

    def recordings(self) -> list[Path]:
        """WAV files of what the phone heard (one per call, oldest first; needs record=True)."""
        return sorted(self.recordings_dir.glob("*-dec.wav"))

    def sent_recordings(self) -> list[Path]:
        """WAV files of what the phone sent (its tone), one per call."""
        return sorted(self.recordings_dir.glob("*-enc.wav"))

    def log_text(self) -> str:
        """Everything baresip printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
