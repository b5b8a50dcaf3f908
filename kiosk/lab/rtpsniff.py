"""RFC 4733 telephone-events read off the loopback wire: a second, independent decode of DTMF.

The lab's pjsua2 peer reports the digits its stack decoded (`onDtmfDigit`);
that is pjsua2 checking pjsua2. This sniffer reads the RTP packets themselves
with an AF_PACKET socket on `lo` (root only: the lab runs as root; a test
skips without it) and decodes the telephone-event payload by the RFC's rules,
so a unit that sent wrong events (bad duration, no end bit, a digit twice)
would be caught even where pjsua2 forgives it.

Why a raw socket and not a UDP proxy between the unit and the peer: a proxy
has to rewrite the SDP (or sit on the advertised port) and changes the timing
it is meant to measure; a packet socket sees every datagram as sent, with the
kernel's receive timestamp (SO_TIMESTAMPNS), and touches nothing. On `lo`
each datagram is seen twice (outgoing and incoming); only the incoming copy
is kept.

RFC 4733 section 2.3: a 4-byte payload per event -- event code (0-9 digits,
10 `*`, 11 `#`, 12-15 A-D), E (end) bit, R bit and a 6-bit volume, a 16-bit
duration in timestamp units -- repeated in packets that share one RTP
timestamp (the event's start) while the key is down, the last one (sent three
times, RFC 4733 2.5.1.4) with E set. A digit is one RTP timestamp of one SSRC.

Run: `python -m kiosk.lab.rtpsniff --ports 50000-50100 --seconds 10` prints one JSON line per digit.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

__all__ = ["TelephoneEvent", "RtpSniffer", "SipWatch", "parse_rtp", "decode_event", "can_sniff", "EVENT_DIGITS"]

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
#: RFC 4733 event codes 0-15 as DTMF digits.
EVENT_DIGITS = "0123456789*#ABCD"


@dataclass
class TelephoneEvent:
    """One DTMF digit as it crossed the wire."""

    digit: str
    ssrc: int
    timestamp: int  # RTP timestamp of the event's start
    payload_type: int
    first_at: float  # wall time (kernel receive time) of the first packet
    end_at: float | None = None  # of the first packet with the E bit
    duration: int = 0  # timestamp units, the largest seen (the final one once ended)
    volume: int = 0  # 0..63, -dBm0
    packets: int = 0
    end_packets: int = 0
    marker: bool = False  # the first packet had the RTP marker bit (RFC 4733 2.5.1.1)
    src: str = ""
    dst: str = ""

    @property
    def ended(self) -> bool:
        return self.end_packets > 0

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def parse_rtp(data: bytes) -> tuple[int, bool, int, int, int, bytes] | None:
    """(payload type, marker, sequence, timestamp, ssrc, payload) of an RTP packet; None if it is not one."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    cc = data[0] & 0x0F
    ext = bool(data[0] & 0x10)
    pad = bool(data[0] & 0x20)
    marker = bool(data[1] & 0x80)
    pt = data[1] & 0x7F
    seq, ts, ssrc = struct.unpack("!HII", data[2:12])
    pos = 12 + 4 * cc
    if ext:
        if len(data) < pos + 4:
            return None
        pos += 4 + 4 * struct.unpack("!H", data[pos + 2:pos + 4])[0]
    end = len(data)
    if pad and end > pos:
        end -= data[-1]
    if end < pos:
        return None
    return pt, marker, seq, ts, ssrc, data[pos:end]


def decode_event(payload: bytes) -> tuple[int, bool, int, int] | None:
    """(event, end, volume, duration) of a telephone-event payload; None if it cannot be one."""
    if len(payload) != 4:
        return None
    event, flags, duration = struct.unpack("!BBH", payload)
    return event, bool(flags & 0x80), flags & 0x3F, duration


def _udp(proto: int, packet: bytes) -> tuple[str, int, str, int, bytes] | None:
    """(src, sport, dst, dport, payload) of an IPv4 or IPv6 UDP datagram (no IPv6 extension headers)."""
    if proto == ETH_P_IP and len(packet) >= 20 and packet[0] >> 4 == 4:
        ihl = (packet[0] & 0x0F) * 4
        if packet[9] != 17 or len(packet) < ihl + 8:
            return None
        src, dst = socket.inet_ntop(socket.AF_INET, packet[12:16]), socket.inet_ntop(socket.AF_INET, packet[16:20])
        udp = packet[ihl:]
    elif proto == ETH_P_IPV6 and len(packet) >= 48 and packet[0] >> 4 == 6:
        if packet[6] != 17:
            return None
        src, dst = socket.inet_ntop(socket.AF_INET6, packet[8:24]), socket.inet_ntop(socket.AF_INET6, packet[24:40])
        udp = packet[40:]
    else:
        return None
    sport, dport, length = struct.unpack("!HHH", udp[:6])
    return src, sport, dst, dport, udp[8:max(8, length)]


def can_sniff(interface: str = "lo") -> str | None:
    """None when a packet socket can be opened on `interface`, else why not (for a test's skip)."""
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    except (PermissionError, OSError, AttributeError) as exc:
        return f"no packet socket ({exc}): the RTP sniffer needs root (CAP_NET_RAW) on Linux"
    try:
        s.bind((interface, 0))
    except OSError as exc:
        return f"cannot listen on {interface}: {exc}"
    finally:
        s.close()
    return None


@dataclass
class RtpSniffer:
    """Telephone-events in UDP datagrams to `ports` on `interface`, decoded on a thread of its own.

    `payload_types`: the telephone-event PTs to accept; empty = any dynamic PT
    (96-127) whose payload has the telephone-event shape (4 bytes, event 0-15):
    audio packets are never 4 bytes long, so this does not mistake voice for digits.
    """

    ports: range | set[int] | tuple[int, ...] = range(1, 65536)
    interface: str = "lo"
    payload_types: set[int] = field(default_factory=set)
    events: list[TelephoneEvent] = field(default_factory=list)
    packets: int = 0  # every RTP packet to the ports (audio too): proof the sniffer saw the stream

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._by_key: dict[tuple[int, int], TelephoneEvent] = {}

    def start(self) -> "RtpSniffer":
        s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((self.interface, 0))
        self._sock = s
        self._thread = threading.Thread(target=self._run, name="rtpsniff", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "RtpSniffer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def digits(self, ended_only: bool = True) -> str:
        """The digits seen so far, in the order their first packet came."""
        with self._lock:
            return "".join(e.digit for e in self.events if e.ended or not ended_only)

    def snapshot(self) -> list[TelephoneEvent]:
        with self._lock:
            return list(self.events)

    def _run(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while not self._stop.is_set():
            ready, _, _ = select.select([sock], [], [], 0.1)
            if not ready:
                continue
            try:
                data, anc, _flags, addr = sock.recvmsg(65536, socket.CMSG_SPACE(16))
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING:
                continue  # lo shows each datagram twice: keep the copy that arrives
            at = time.time()
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    at = sec + nsec / 1e9
            self.feed(addr[1], data, at)

    def feed(self, proto: int, packet: bytes, at: float) -> None:
        """One captured IP packet (also for tests with packets made by hand)."""
        udp = _udp(proto, packet)
        if udp is None:
            return
        src, sport, dst, dport, payload = udp
        if dport not in self.ports:
            return
        rtp = parse_rtp(payload)
        if rtp is None:
            return
        pt, marker, _seq, ts, ssrc, body = rtp
        with self._lock:
            self.packets += 1
        if self.payload_types and pt not in self.payload_types:
            return
        if not self.payload_types and not 96 <= pt <= 127:
            return
        ev = decode_event(body)
        if ev is None or ev[0] >= len(EVENT_DIGITS):
            return
        code, end, volume, duration = ev
        with self._lock:
            key = (ssrc, ts)
            te = self._by_key.get(key)
            if te is None:
                te = TelephoneEvent(EVENT_DIGITS[code], ssrc, ts, pt, at, marker=marker,
                                    src=f"{src}:{sport}", dst=f"{dst}:{dport}")
                self._by_key[key] = te
                self.events.append(te)
            te.packets += 1
            te.duration = max(te.duration, duration)
            te.volume = volume
            if end:
                te.end_packets += 1
                if te.end_at is None:
                    te.end_at = at


class SipWatch(RtpSniffer):
    """The SIP requests arriving at `ports` (UDP), with their kernel receive times, for the benches:
    `arrivals` holds (time, method, Call-ID) of the first copy of each (method, Call-ID, CSeq)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.arrivals: list[tuple[float, str, str]] = []
        self._seen: set[tuple[str, str, str]] = set()

    def feed(self, proto: int, packet: bytes, at: float) -> None:
        udp = _udp(proto, packet)
        if udp is None or udp[3] not in self.ports:
            return
        text = udp[4][:4096].decode("utf-8", "replace")
        method = text.split(" ", 1)[0]
        if not method.isalpha() or not method.isupper() or "SIP/2.0" not in text.split("\r\n", 1)[0]:
            return
        call_id = cseq = ""
        for line in text.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name in ("call-id", "i"):
                call_id = value.strip()
            elif name == "cseq":
                cseq = value.strip()
            elif not line:
                break
        key = (method, call_id, cseq)
        with self._lock:
            if key in self._seen:
                return  # a retransmission
            self._seen.add(key)
            self.arrivals.append((at, method, call_id))

    def times(self, method: str) -> list[float]:
        with self._lock:
            return [t for t, m, _ in self.arrivals if m == method]


def _ports(text: str) -> range:
    lo, _, hi = text.partition("-")
    return range(int(lo), int(hi or lo) + 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kiosk.lab.rtpsniff", description=__doc__.split("\n\n")[0])
    p.add_argument("--ports", default="1-65535", help="destination UDP ports, N or N-M")
    p.add_argument("--interface", default="lo")
    p.add_argument("--seconds", type=float, default=10.0)
    ns = p.parse_args(argv)
    why = can_sniff(ns.interface)
    if why:
        print(why, file=sys.stderr)
        return 2
    with RtpSniffer(_ports(ns.ports), ns.interface) as sniffer:
        time.sleep(ns.seconds)
    for e in sniffer.snapshot():
        print(json.dumps(e.as_json()))
    print(json.dumps({"digits": sniffer.digits(), "rtp_packets": sniffer.packets}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

