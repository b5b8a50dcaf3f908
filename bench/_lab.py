"""Shared pieces of the benchmarks: the SIP "wire", lab start-up, statistics, usage, tables.

The wire
--------
`Wire` is one UDP socket on 127.0.0.1 that both the kiosk and baresip use as
their registrar and outbound proxy (the kiosk: `registrar` and `proxy` of a
line; baresip: its account's domain is the wire, so `sip:2001@<wire>` goes
there). It is the simplest thing that is still sound:

- it is the first hop, so a request's arrival there *is* the request leaving
  the user agent: nothing (no Kamailio, no sniffer) sits in between;
- every datagram is stamped twice: by the kernel on arrival (SO_TIMESTAMPNS,
  CLOCK_REALTIME) and by the receiving Python thread right after `recvmsg`
  returns (`time.perf_counter_ns`, CLOCK_MONOTONIC). The trigger stamps both
  clocks just before it sends the command (`Stamp`), so one latency comes from
  each clock. The kernel one leaves out the wake-up of our own receiving thread
  (and any GIL wait in this process); the perf_counter one is what the brief
  asks for. They should agree within a few tens of microseconds;
- it answers like a minimal proxy plus UAS: REGISTER -> 200 (Contact echoed,
  no digest), INVITE -> 100, 180, 200 with an SDP answer (first offered codec,
  direction mirrored: sendonly -> recvonly ...), re-INVITE -> 200 with SDP,
  BYE and anything else -> 200, ACK ignored. Its Contact is the wire itself,
  so ACK, re-INVITE and BYE of the dialog come back to it whatever the
  UA does with its route set. RTP goes to a separate socket nobody reads.
- optionally (`ring_only`: request-URI user parts), a new INVITE to one of
  those users gets 100 and 180 and is never answered: it rings until the UA
  sends CANCEL, which gets 200 and the INVITE 487 (then the UA's ACK). Every
  other number is answered as above; without `ring_only` nothing changes.

Timings of a user agent are taken from the first copy of each request
(retransmissions are answered but not counted).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import math
import os
import platform
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` from anywhere: import the repo's kiosk
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from kiosk.control import error_message  # noqa: E402
from kiosk.lab.baresip import Baresip  # noqa: E402
from kiosk.lab.kamailio import Kamailio  # noqa: E402
from kiosk.lab.ports import free_port  # noqa: E402
from kiosk.lab.proc import wait_until  # noqa: E402
from kiosk.lab.unit import LabLine, Unit, lab_profile_toml  # noqa: E402

__all__ = [
    "Arrival", "Baresip", "BaresipSide", "Kamailio", "KioskSide", "LabLine", "MultiBaresip", "Stamp", "Timed",
    "Unit", "Usage", "Wire", "bench_args", "fmt_ms", "free_port", "header", "lab_dir", "load", "md_table",
    "measure", "ms", "p95", "ratio", "settle", "start_unit", "summary", "wait_until",
]

#: Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS), not exported by Python's socket module.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)

_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
            "c": "content-type"}
_ANSWER_DIR = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive", "sendrecv": "sendrecv"}


# --- clocks and statistics ----------------------------------------------------------------


@dataclass(frozen=True)
class Stamp:
    """A trigger instant on both clocks the wire stamps with."""

    perf: int
    real: int

    @classmethod
    def now(cls) -> "Stamp":
        return cls(time.perf_counter_ns(), time.time_ns())


def p95(values: list[float]) -> float:
    """95th percentile, nearest rank (the value 95 % of the samples do not exceed)."""
    s = sorted(values)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def summary(values: list[float]) -> tuple[float, float]:
    """(median, p95) of the values; NaNs if there are none."""
    if not values:
        return math.nan, math.nan
    return statistics.median(values), p95(values)


def ms(ns: int | float) -> float:
    return ns / 1e6


def fmt_ms(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "n/a"
    return f"{a / b:.1f}x"


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def cpu_model() -> str:
    try:
        for text_line in Path("/proc/cpuinfo").read_text().splitlines():
            if text_line.lower().startswith("model name"):
                return text_line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def header(title: str, load_at_start: str) -> str:
    """The block every benchmark prints above its table: what, when, where, how loaded."""
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    baresip = "baresip"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        first = subprocess.run(["baresip", "-h"], capture_output=True, text=True, timeout=5)
        m = re.search(r"baresip v(\S+)", first.stdout + first.stderr)
        if m:
            baresip = f"baresip {m.group(1)}"
    return "\n".join([
        f"### {title}",
        "",
        f"{now} · `{platform.machine()}` · {cpu_model()} · nproc {os.cpu_count()} · "
        f"Python {platform.python_version()} · {baresip}",
        f"load average (1/5/15 min) at start {load_at_start}, at end {load()}",
        "",
    ])


def bench_args(doc: str, calls: int | None = None, seconds: float | None = None,
               extra: Callable[[argparse.ArgumentParser], object] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    if extra:
        extra(parser)
    if calls is not None:
        parser.add_argument("--calls", type=int, default=calls, help=f"samples per side (default {calls})")
    if seconds is not None:
        parser.add_argument("--seconds", type=float, default=seconds, help=f"measuring window (default {seconds:g})")
    parser.add_argument("--keep", action="store_true", help="keep the lab's work directory (logs) afterwards")
    return parser.parse_args()


@contextlib.contextmanager
def lab_dir(name: str, keep: bool) -> Iterator[Path]:
    """A fresh work directory for the lab's processes, removed afterwards unless `keep`."""
    path = Path(tempfile.mkdtemp(prefix=f"kb-{name}-"))
    try:
        yield path
    finally:
        if keep:
            print(f"\n(lab files kept in {path})", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


# --- the wire -----------------------------------------------------------------------------


@dataclass
class Arrival:
    """One request as it arrived at the wire (first copy only)."""

    method: str
    call_id: str
    cseq: int
    initial: bool  # no To tag: a new dialog
    direction: str  # SDP direction of the body, "" without SDP
    t_perf: int  # perf_counter_ns when our thread got it
    t_kern: int  # kernel receive stamp, CLOCK_REALTIME ns
    src: tuple[str, int]
    user: str = ""  # the request-URI's user part (the number dialled)

    def since(self, stamp: Stamp) -> tuple[float, float]:
        """(ms after the trigger on perf_counter, ms after it on the kernel clock)."""
        return ms(self.t_perf - stamp.perf), ms(self.t_kern - stamp.real)


@dataclass
class _Msg:
    first: str
    headers: list[tuple[str, str]]
    body: str

    def get(self, name: str) -> str:
        for k, v in self.headers:
            if k == name:
                return v
        return ""

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


def _parse(data: bytes) -> _Msg | None:
    text = data.decode("utf-8", "replace")
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    if not lines or not lines[0].strip():
        return None  # a CRLF keep-alive
    headers: list[tuple[str, str]] = []
    for raw in lines[1:]:
        if raw[:1] in (" ", "\t") and headers:  # folded header line
            headers[-1] = (headers[-1][0], headers[-1][1] + " " + raw.strip())
            continue
        name, _, value = raw.partition(":")
        key = name.strip().lower()
        headers.append((_COMPACT.get(key, key), value.strip()))
    return _Msg(lines[0], headers, body)


def _ruri_user(first_line: str) -> str:
    """The user part of a request line's URI ("INVITE sip:*82004@host SIP/2.0" -> "*82004")."""
    parts = first_line.split(" ")
    uri = parts[1] if len(parts) > 1 else ""
    uri = uri.split(":", 1)[1] if ":" in uri else uri
    return uri.split("@", 1)[0] if "@" in uri else ""


def _sdp_direction(sdp: str) -> str:
    direction = ""
    for text_line in sdp.splitlines():
        if text_line.strip() in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            direction = text_line.strip()[2:]
    return direction or ("sendrecv" if "m=audio" in sdp else "")


def _sdp_answer(offer: str, port: int, version: int) -> str:
    lines = [x.strip() for x in offer.splitlines()]
    m = next((x for x in lines if x.startswith("m=audio")), "")
    pts = m.split()[3:] if m else ["0"]
    rtpmap = {x.split()[0].split(":")[1]: x for x in lines if x.startswith("a=rtpmap:")}
    fmtp = {x.split()[0].split(":")[1]: x for x in lines if x.startswith("a=fmtp:")}
    pt = next((p for p in pts if "telephone-event" not in rtpmap.get(p, "")), pts[0])
    out = ["v=0", f"o=wire 1 {version} IN IP4 127.0.0.1", "s=wire", "c=IN IP4 127.0.0.1", "t=0 0",
           f"m=audio {port} RTP/AVP {pt}"]
    out += [d[pt] for d in (rtpmap, fmtp) if pt in d]
    out.append(f"a={_ANSWER_DIR.get(_sdp_direction(offer), 'sendrecv')}")
    return "\r\n".join(out) + "\r\n"


class Wire:
    """A UDP socket acting as registrar, outbound proxy and answering far end (see module doc)."""

    def __init__(self, name: str, host: str = "127.0.0.1", ring_only: Iterable[str] = ()) -> None:
        self.name = name
        self.host = host
        #: Request-URI user parts whose INVITE rings (100, 180) and is never answered.
        self.ring_only: frozenset[str] = frozenset(ring_only)
        self._ringing: dict[str, tuple[_Msg, tuple[str, int]]] = {}  # call-id -> the unanswered INVITE
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind((host, free_port(host, kind="udp")))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        # RTP sink: bound so that nothing answers with ICMP, never read (the kernel drops the excess).
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.rtp.bind((host, free_port(host, kind="udp")))
        self.arrivals: list[Arrival] = []
        self.retransmissions = 0
        self.cond = threading.Condition()
        self._seen: set[tuple[str, int, str]] = set()
        self._tags: dict[str, str] = {}
        self._versions: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"wire-{name}", daemon=True)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "Wire":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        self.rtp.close()

    def __enter__(self) -> "Wire":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- waiting -----------------------------------------------------------

    def mark(self) -> int:
        with self.cond:
            return len(self.arrivals)

    def wait(self, method: str, since: int, timeout: float = 5.0, call_id: str | None = None,
             initial: bool | None = None) -> Arrival:
        """The first request of `method` arrived at index >= since (matching call_id / initial)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for a in self.arrivals[since:]:
                    if a.method == method and (call_id is None or a.call_id == call_id) \
                            and (initial is None or a.initial == initial):
                        return a
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [f"{a.method}({a.call_id[:8]})" for a in self.arrivals[since:]]
                    raise TimeoutError(f"wire {self.name}: no {method} within {timeout} s (saw {seen})")
                self.cond.wait(left)

    # -- the socket --------------------------------------------------------

    def _run(self) -> None:
        cmsg_space = socket.CMSG_SPACE(16)
        while not self._stop.is_set():
            try:
                data, anc, _flags, src = self.sock.recvmsg(65535, cmsg_space)
            except socket.timeout:
                continue
            except OSError:
                return
            t_perf = time.perf_counter_ns()
            t_kern = 0
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    t_kern = sec * 1_000_000_000 + nsec
            try:
                self._handle(data, src, t_perf, t_kern)
            except Exception as exc:  # a message we do not understand must not stop the wire
                print(f"wire {self.name}: cannot handle {data[:60]!r}: {exc}", file=sys.stderr)

    def _handle(self, data: bytes, src: tuple[str, int], t_perf: int, t_kern: int) -> None:
        msg = _parse(data)
        if msg is None or msg.first.startswith("SIP/2.0"):
            return  # keep-alive, or a response to nothing we sent
        method = msg.first.split(" ", 1)[0]
        call_id = msg.get("call-id")
        cseq_text = msg.get("cseq").split()
        cseq = int(cseq_text[0]) if cseq_text else 0
        initial = ";tag=" not in msg.get("to").replace(" ", "")
        key = (call_id, cseq, method)
        with self.cond:
            if key in self._seen:
                self.retransmissions += 1
            else:
                self._seen.add(key)
                self.arrivals.append(Arrival(method, call_id, cseq, initial, _sdp_direction(msg.body),
                                             t_perf, t_kern, src, _ruri_user(msg.first)))
                self.cond.notify_all()
        if method == "ACK":
            return
        if method == "INVITE":
            if initial:
                self._reply(msg, src, "100 Trying", tag=False)
                self._reply(msg, src, "180 Ringing")
                if _ruri_user(msg.first) in self.ring_only:
                    self._ringing[call_id] = (msg, src)  # rings until CANCEL
                    return
            self._versions[call_id] = self._versions.get(call_id, 0) + 1
            sdp = _sdp_answer(msg.body, self.rtp.getsockname()[1], self._versions[call_id]) if msg.body.strip() else ""
            self._reply(msg, src, "200 OK", sdp=sdp)
        elif method == "REGISTER":
            contacts = msg.all("contact")
            expires = msg.get("expires") or "600"
            extra = [f"Contact: {c};expires={expires}" for c in contacts] + [f"Expires: {expires}"]
            self._reply(msg, src, "200 OK", extra=extra, contact=False)
        elif method == "CANCEL" and call_id in self._ringing:
            self._reply(msg, src, "200 OK")
            invite, invite_src = self._ringing.pop(call_id)
            self._reply(invite, invite_src, "487 Request Terminated")
        else:
            self._reply(msg, src, "200 OK")

    def _reply(self, msg: _Msg, src: tuple[str, int], status: str, tag: bool = True, sdp: str = "",
               extra: list[str] | None = None, contact: bool = True) -> None:
        call_id = msg.get("call-id")
        to = msg.get("to")
        if tag and ";tag=" not in to.replace(" ", ""):
            to += ";tag=" + self._tags.setdefault(call_id, uuid.uuid4().hex[:10])
        out = [f"SIP/2.0 {status}"]
        out += [f"Via: {v}" for v in msg.all("via")]
        out += [f"From: {msg.get('from')}", f"To: {to}", f"Call-ID: {call_id}", f"CSeq: {msg.get('cseq')}"]
        if contact:
            out.append(f"Contact: <sip:wire@{self.host}:{self.port}>")
        out += extra or []
        out.append("Server: kiosk-bench-wire")
        if sdp:
            out += ["Content-Type: application/sdp", f"Content-Length: {len(sdp.encode())}", "", sdp]
        else:
            out += ["Content-Length: 0", "", ""]
        # Via's rport: answer where it came from (that is also where the UA listens here).
        self.sock.sendto("\r\n".join(out).encode(), src)


# --- lab parts ----------------------------------------------------------------------------


def start_unit(workdir: Path, *, registrar: str, proxy: str, lines: list[LabLine],
               domain: str = "127.0.0.1", timeout: float = 30.0, panel: bool = False, extra: str = "") -> Unit:
    """The kiosk (`kiosk run --headless`) as its own process on a lab profile, lines registered.

    `panel`: with the touchscreen instead, drawn by SDL's offscreen driver (Mesa's
    software renderer here; DISPLAY only has to make the unit's display check pass).
    """
    sock = workdir / "control.sock"
    text = lab_profile_toml(listen=f"127.0.0.1:{free_port()}", registrar=registrar, domain=domain,
                            proxy=proxy, lines=lines, socket=sock, recordings=workdir / "recordings", extra=extra)
    env = {"SDL_VIDEODRIVER": "offscreen", "DISPLAY": ":kiosk-bench", "KIVY_NO_ARGS": "1"} if panel else {}
    unit = Unit(workdir, text, sock, env=env, headless=not panel)
    try:
        unit.start(wait_registered=True, timeout=timeout)
    except BaseException:
        unit.stop()
        raise
    return unit


class MultiBaresip(Baresip):
    """A baresip with several accounts (`accounts`: user -> password), all on one registrar."""

    def __init__(self, workdir: Path, accounts: dict[str, str], registrar: str, **kw: Any) -> None:
        first, password = next(iter(accounts.items()))
        super().__init__(workdir, user=first, password=password, registrar=registrar, **kw)
        self.accounts = dict(accounts)

    def _account_line(self) -> str:
        answer = "auto" if self.auto_answer else "manual"
        return "".join(f"<sip:{u}@{self.registrar}>;answermode={answer};auth_pass={pw};regint=600\n"
                       for u, pw in self.accounts.items())

    def all_registered(self) -> bool:
        data = re.sub(r"\x1b\[[0-9;]*m", "", str(self.command("reginfo").get("data", "")))
        ok = {u for u in self.accounts for line in data.splitlines() if u in line and "OK" in line.split()}
        return ok == set(self.accounts)


# --- resource usage -----------------------------------------------------------------------


def thread_switches(pid: int) -> dict[int, tuple[str, int]]:
    """tid -> (thread name, context switches so far) for every thread of a process."""
    out: dict[int, tuple[str, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            n = sum(int(x.split()[1]) for x in (task / "status").read_text().splitlines() if "ctxt_switches:" in x)
            out[int(task.name)] = ((task / "comm").read_text().strip(), n)
    return out


def ctx_switches(pid: int) -> int:
    """Context switches of all threads of a process (psutil's figure counts the main thread only)."""
    return sum(n for _, n in thread_switches(pid).values())


@dataclass
class Usage:
    """CPU (% of one core) and memory of one process over a window, sampled with psutil."""

    pid: int
    label: str = ""
    samples: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.proc = psutil.Process(self.pid)

    def begin(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = self.proc.cpu_times()
        self.x0 = ctx_switches(self.pid)
        self.threads0 = thread_switches(self.pid)
        self.samples.clear()

    def sample(self) -> None:
        self.samples.append(self.proc.memory_full_info())

    def end(self) -> dict[str, float]:
        c1 = self.proc.cpu_times()
        x1 = ctx_switches(self.pid)
        threads1 = thread_switches(self.pid)
        wall = time.monotonic() - self.t0
        self.per_thread = [(name, (n - self.threads0[tid][1]) / wall) for tid, (name, n) in sorted(threads1.items())
                           if tid in self.threads0]
        self.sample()
        last = self.samples[-1]
        busy = (c1.user - self.c0.user) + (c1.system - self.c0.system)
        return {
            "cpu": 100.0 * busy / wall,
            "user": 100.0 * (c1.user - self.c0.user) / wall,
            "system": 100.0 * (c1.system - self.c0.system) / wall,
            "wall": wall,
            "rss": last.rss / 2**20,
            "uss": last.uss / 2**20,
            "pss": last.pss / 2**20,
            "rss_max": max(s.rss for s in self.samples) / 2**20,
            "threads": self.proc.num_threads(),
            "wakeups": (x1 - self.x0) / wall,
        }


def measure(usages: list[Usage], seconds: float, every: float = 5.0,
            tick: Callable[[float], None] | None = None) -> list[dict[str, float]]:
    """Measure several processes over the same window; memory sampled every `every` s."""
    for u in usages:
        u.begin()
        u.sample()
    t_end = time.monotonic() + seconds
    while True:
        left = t_end - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(every, left))
        if tick:
            tick(t_end - time.monotonic())
        if time.monotonic() < t_end - 0.5:
            for u in usages:
                u.sample()
    return [u.end() for u in usages]


# --- the two user agents on a wire, driven the same way -------------------------------------


@dataclass
class Timed:
    """One timed action: when the request reached the wire, and when the command returned."""

    arrival: Arrival
    stamp: Stamp
    reply_ns: int  # perf_counter_ns when the command's reply was back

    @property
    def wire_ms(self) -> float:
        return ms(self.arrival.t_perf - self.stamp.perf)

    @property
    def kernel_ms(self) -> float:
        return ms(self.arrival.t_kern - self.stamp.real)

    @property
    def reply_ms(self) -> float:
        return ms(self.reply_ns - self.stamp.perf)


class KioskSide:
    """The kiosk unit on a wire, driven by one control-socket request per action (what `kiosk ctl` sends)."""

    name = "kiosk"

    def __init__(self, unit: Unit, wire: Wire) -> None:
        from kiosk.control import request

        self.unit = unit
        self.wire = wire
        self._request = request
        self.call_id = ""

    def _timed(self, method: str, cmd: str, initial: bool | None = None, **args: Any) -> Timed:
        mark = self.wire.mark()
        stamp = Stamp.now()
        reply = self._request(self.unit.socket, cmd, **args)
        reply_ns = time.perf_counter_ns()
        if not reply.get("ok"):
            raise RuntimeError(f"kiosk refused {cmd}: {error_message(reply)}\n{self.unit.log_tail(20)}")
        arrival = self.wire.wait(method, mark, initial=initial,
                                 call_id=None if method == "INVITE" and initial else self.call_id)
        return Timed(arrival, stamp, reply_ns)

    def _state(self, state: str, timeout: float = 10.0) -> None:
        self.unit.wait_for(lambda calls: len(calls) == 1 and calls[0]["state"] == state, timeout)

    def dial(self, number: str = "2001") -> Timed:
        mark = self.wire.mark()
        t = self._timed("INVITE", "dial", initial=True, number=number)
        self.call_id = t.arrival.call_id
        self.wire.wait("ACK", mark, call_id=self.call_id)
        self._state("talking")
        return t

    def hangup(self) -> Timed:
        t = self._timed("BYE", "hangup")
        self.unit.wait_for(lambda calls: not calls)
        return t

    def hold(self) -> Timed:
        mark = self.wire.mark()
        t = self._timed("INVITE", "hold", initial=False)
        self.wire.wait("ACK", mark, call_id=self.call_id)
        self._state("on hold")
        return t

    def resume(self) -> Timed:
        mark = self.wire.mark()
        t = self._timed("INVITE", "connect", initial=False)
        self.wire.wait("ACK", mark, call_id=self.call_id)
        self._state("talking")
        return t


class BaresipSide:
    """baresip on a wire, driven by one ctrl_tcp command per action."""

    name = "baresip"

    def __init__(self, phone: Baresip, wire: Wire) -> None:
        self.phone = phone
        self.wire = wire
        self.call_id = ""

    def _timed(self, method: str, cmd: str, params: str = "", initial: bool | None = None) -> Timed:
        mark = self.wire.mark()
        stamp = Stamp.now()
        reply = self.phone.command(cmd, params)
        reply_ns = time.perf_counter_ns()
        if not reply.get("ok"):
            raise RuntimeError(f"baresip refused {cmd}: {reply.get('data')}")
        arrival = self.wire.wait(method, mark, initial=initial,
                                 call_id=None if method == "INVITE" and initial else self.call_id)
        return Timed(arrival, stamp, reply_ns)

    def dial(self, number: str = "2001") -> Timed:
        mark = self.wire.mark()
        n = self.phone.event_count()
        t = self._timed("INVITE", "dial", f"sip:{number}@{self.wire.address}", initial=True)
        self.call_id = t.arrival.call_id
        self.wire.wait("ACK", mark, call_id=self.call_id)
        self.phone.wait_event("CALL_ESTABLISHED", since=n)
        return t

    def hangup(self) -> Timed:
        n = self.phone.event_count()
        t = self._timed("BYE", "hangup")
        self.phone.wait_event("CALL_CLOSED", since=n)
        return t

    def hold(self) -> Timed:
        mark = self.wire.mark()
        t = self._timed("INVITE", "hold", initial=False)
        self.wire.wait("ACK", mark, call_id=self.call_id)
        return t

    def resume(self) -> Timed:
        mark = self.wire.mark()
        t = self._timed("INVITE", "resume", initial=False)
        self.wire.wait("ACK", mark, call_id=self.call_id)
        return t


def settle(seconds: float = 0.1) -> None:
    """A pause between samples, so that one action's aftermath (callbacks, logs) is not in the next."""
    time.sleep(seconds)


def wired_sides(work: Path, stack: contextlib.ExitStack) -> list[Any]:
    """The kiosk and a baresip, one registered line each, each behind its own Wire:
    the pair every latency script measures side by side (stopped by `stack`)."""
    kwire = stack.enter_context(Wire("kiosk"))
    bwire = stack.enter_context(Wire("baresip"))
    unit = start_unit(work / "unit", registrar=f"sip:{kwire.address}", proxy=f"sip:{kwire.address}",
                      lines=[LabLine("main", "1001", "bench")])
    stack.callback(unit.stop)
    phone = Baresip(work / "baresip", user="1001", password="bench", registrar=bwire.address, tone_hz=440)
    stack.callback(phone.stop)
    phone.start()
    return [KioskSide(unit, kwire), BaresipSide(phone, bwire)]
