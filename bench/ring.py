"""INVITE-to-ring latency: a call arrives until its ring is audible on the sound device, kiosk beside baresip.

Method (all on 127.0.0.1, free ports, everything started and stopped here):

- Kamailio is the registrar and proxy; the caller is the lab's pjsua2 peer
  (kiosk.lab.pjpeer), which dials the kiosk's line (1001) and the baresip
  phone (2002) in turn and cancels each call once it has rung.
- The sound device is JACK's dummy driver (DESIGN.md: the only paced device
  here), one server per side so that neither hears the other, each with
  monitor ports (`-m`): `system:monitor_1` carries what was played on
  `system:playback_1`. The kiosk runs as its own process with its headset
  on its server (`[audio] device = "system"`, ring on the headset, the
  profile's default ring at 70 %), so its ring is what PortAudio plays to
  `system:playback_1`; baresip 1.0 plays its `ring.wav` through its
  `portaudio` module on PortAudio's JACK device (`audio_alert portaudio,N`,
  manual answer; its `jack` module cannot: it takes float samples and baresip
  plays files as S16LE). PortAudio on JACK runs only at the server's rate and
  baresip's ring.wav is 8 kHz, so baresip's server runs at 8 kHz (20 ms
  periods, as the kiosk's 16 kHz one).
- "INVITE arriving" is the kernel receive stamp (SO_TIMESTAMPNS, CLOCK_REALTIME)
  of the INVITE's first copy at the user agent's SIP port (kiosk.lab.rtpsniff's
  SipWatch: AF_PACKET on `lo`, root). "Ring audible" is the wall clock of the
  first JACK period in which the monitor port carries the ring (any sample
  above -40 dBFS), as stamped by a recording JACK client of this bench's
  own (each period's callback stamps `time.time()`); the kiosk's own output
  port (`kiosk:out_0`) is recorded too, one period earlier than the monitor.
  Resolution: one period (20 ms) -- the medians are of many calls.
- Calls alternate kiosk, baresip; each rings 1.5 s, is cancelled, and the
  next starts 1 s later. A couple of warm-up calls are not counted.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lab import (  # noqa: E402
    Baresip, Kamailio, LabLine, bench_args, fmt_ms, free_port, header, lab_dir, load, md_table, ratio,
    start_unit, summary, wait_until,
)

from kiosk.lab.pjpeer import PjPeer  # noqa: E402
from kiosk.lab.proc import LabProcess  # noqa: E402
from kiosk.lab.rtpsniff import SipWatch, can_sniff  # noqa: E402

WARMUP = 2
USERS = {"1001": "line-one-pw", "2001": "far-2001-pw", "2002": "far-2002-pw"}
THRESHOLD = 10 ** (-40 / 20)  # -40 dBFS

# A JACK client in its own process: records its in_0 .. in_{n-1} until stdin closes, stamping every period.
RECORDER = r"""
import ctypes, ctypes.util, sys, threading
import numpy as np
NAME = sys.argv[3].encode()
ctypes.CDLL(ctypes.util.find_library("portaudio") or "libportaudio.so.2").PaJack_SetClientName(ctypes.c_char_p(NAME))
import sounddevice as sd
import time
rate, channels, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4]
chunks, stamps = [], []
def cb(indata, frames, t, status):
    stamps.append(time.time())
    chunks.append(indata.copy())
with sd.InputStream(samplerate=rate, blocksize=0, channels=channels, dtype="int16", callback=cb):
    print("recording", flush=True)
    sys.stdin.read()
pcm = np.concatenate(chunks) if chunks else np.zeros((0, channels), dtype=np.int16)
sizes = np.array([len(c) for c in chunks], dtype=np.int64)
np.save(prefix + "-pcm.npy", pcm)
np.save(prefix + "-stamps.npy", np.array(stamps, dtype=np.float64))
np.save(prefix + "-sizes.npy", sizes)
print("done", flush=True)
"""


class Jack:
    """A JACK dummy server with monitor ports, started and stopped by PID."""

    def __init__(self, work: Path, name: str, rate: int) -> None:
        self.name, self.rate, self.work = name, rate, work
        period = rate // 50
        self.proc = LabProcess(f"jackd-{name}", ["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", str(rate),
                                                 "-p", str(period), "-m"], work / f"jackd-{name}.log", work)

    @property
    def env(self) -> dict[str, str]:
        return {"JACK_DEFAULT_SERVER": self.name, "JACK_NO_START_SERVER": "1"}

    def run(self, *argv: str) -> str:
        import subprocess

        return subprocess.run(argv, capture_output=True, text=True, timeout=10, env={**os.environ, **self.env}).stdout

    def start(self) -> "Jack":
        self.proc.start(env={**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"})
        self.run("jack_wait", "-w", "-t", "10")
        return self

    def ports(self) -> list[str]:
        return self.run("jack_lsp").split()

    def stop(self) -> None:
        self.proc.stop(grace=3.0)


class Recorder:
    """RECORDER on a JACK server, connected to the given ports; `frames()` after stop: (pcm, period stamps)."""

    def __init__(self, jack: Jack, ports: list[str], work: Path, name: str) -> None:
        import subprocess

        self.jack, self.ports, self.name = jack, ports, name
        self.prefix = str(work / name)
        self.popen = subprocess.Popen([sys.executable, "-c", RECORDER, str(jack.rate), str(len(ports)), name,
                                       self.prefix], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env={**os.environ, **jack.env}, text=True)
        assert self.popen.stdout is not None and self.popen.stdout.readline().strip() == "recording"
        for i, port in enumerate(ports):
            jack.run("jack_connect", port, f"{name}:in_{i}")

    def stop(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.popen.stdin is not None
        self.popen.stdin.close()
        self.popen.wait(30)
        pcm = np.load(self.prefix + "-pcm.npy").astype(np.float64) / 32768.0
        stamps = np.load(self.prefix + "-stamps.npy")
        sizes = np.load(self.prefix + "-sizes.npy")
        times = np.repeat(stamps, sizes)
        return pcm, times


def onsets(pcm: np.ndarray, times: np.ndarray, starts: list[float], window: float = 1.4) -> list[float]:
    """For each start time, ms until the first sample above THRESHOLD (NaN if none within `window`)."""
    loud = np.abs(pcm) > THRESHOLD
    out = []
    for t0 in starts:
        idx = np.nonzero(loud & (times >= t0) & (times < t0 + window))[0]
        out.append((times[idx[0]] - t0) * 1000 if idx.size else float("nan"))
    return out


def portaudio_index(jack: Jack, name: str = "system") -> int:
    """PortAudio's index of the JACK server's `system` device (as baresip's portaudio module counts)."""
    import subprocess

    code = ("import sounddevice as sd\n"
            "for i, d in enumerate(sd.query_devices()):\n"
            "    if d['name'] == %r and 'JACK' in sd.query_hostapis(d['hostapi'])['name']: print(i); break\n" % name)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         env={**os.environ, **jack.env}).stdout.strip()
    return int(out.splitlines()[-1]) if out else -1


class RingingBaresip(Baresip):
    """baresip that rings on JACK and never answers by itself.

    Its own `jack` module refuses the ring (baresip 1.0 plays files as S16LE, the module takes float
    only: "jack: playback: unsupported sample format (S16LE)"), so the alert device is its `portaudio`
    module on PortAudio's JACK device -- the same way to the device as the kiosk's.
    """

    alert_device = -1

    def _config_text(self) -> str:
        text = super()._config_text().replace("audio_alert\t\taubridge,alert",
                                              f"audio_alert\t\tportaudio,{self.alert_device}")
        return text.replace("module\t\t\taubridge.so", "module\t\t\taubridge.so\nmodule\t\t\tportaudio.so")


def main() -> int:
    args = bench_args(__doc__, calls=20)
    why = can_sniff("lo")
    if why:
        print(why, file=sys.stderr)
        return 2
    load0 = load()
    res: dict[str, list[float]] = {"kiosk": [], "kiosk_port": [], "baresip": []}
    notes: list[str] = []
    with lab_dir("ring", args.keep) as work, Kamailio(work / "kamailio", free_port(), USERS) as kam:
        jk = Jack(work, f"kb-ring-k-{os.getpid()}", 16000).start()
        jb = Jack(work, f"kb-ring-b-{os.getpid()}", 8000).start()
        unit = bare = caller = None
        try:
            unit_dir = work / "unit"
            unit = start_unit(unit_dir, registrar=f"sip:{kam.address}", proxy=f"sip:{kam.address}",
                              lines=[LabLine("main", "1001", USERS["1001"])])
            unit.stop()  # again with the headset on JACK (start_unit writes the lab profile for us)
            unit.proc = None
            unit.profile_text = unit.profile_text.replace('device = "none"', 'device = "system"')
            unit.env.update(jk.env)
            unit.start(wait_registered=True, timeout=30)
            assert wait_until(lambda: "kiosk:out_0" in jk.ports(), 15), unit.log_tail()
            os.environ["JACK_DEFAULT_SERVER"] = jb.name  # baresip's JACK client (Baresip.start has no env)
            os.environ["JACK_NO_START_SERVER"] = "1"
            RingingBaresip.alert_device = portaudio_index(jb)
            bare = RingingBaresip(work / "baresip", user="2002", password=USERS["2002"], registrar=kam.address,
                                  tone_hz=None, auto_answer=False).start()
            caller = PjPeer(work / "caller", "2001", USERS["2001"], kam.address, record=False).start()
            unit_port = int(unit.profile_text.split('listen = "127.0.0.1:', 1)[1].split('"', 1)[0])
            watch = SipWatch(ports={unit_port, bare.sip_port}).start()
            rec_k = Recorder(jk, ["system:monitor_1", "kiosk:out_0"], work, "rec-k")
            rec_b = Recorder(jb, ["system:monitor_1"], work, "rec-b")
            starts: dict[str, list[float]] = {"kiosk": [], "baresip": []}
            for i in range(WARMUP + args.calls):
                for side, number in (("kiosk", "1001"), ("baresip", "2002")):
                    n_before = len(watch.times("INVITE"))
                    call = caller.dial(f"sip:{number}@{kam.address}")
                    wait_until(lambda n=n_before: len(watch.times("INVITE")) > n, 5, 0.01)
                    caller.wait_event("state", call=call, state="EARLY")
                    time.sleep(1.5)
                    caller.hangup(call)
                    caller.wait_event("state", call=call, state="DISCONNECTED")
                    time.sleep(1.0)
                    invites = watch.times("INVITE")[n_before:]
                    if i >= WARMUP and invites:
                        starts[side].append(invites[0])
            pcm_k, t_k = rec_k.stop()
            pcm_b, t_b = rec_b.stop()
            watch.stop()
            res["kiosk"] = onsets(pcm_k[:, 0], t_k, starts["kiosk"])
            res["kiosk_port"] = onsets(pcm_k[:, 1], t_k, starts["kiosk"])
            res["baresip"] = onsets(pcm_b[:, 0], t_b, starts["baresip"])
            if all(np.isnan(res["baresip"])):
                notes.append("baresip did not ring on JACK: " + " | ".join(
                    ln for ln in bare.log_text().splitlines() if "portaudio" in ln.lower())[-400:])
        finally:
            for part in (caller, bare, unit):
                if part is not None:
                    part.stop()
            jk.stop()
            jb.stop()
    rows = []
    for key, label in (("kiosk", "kiosk: INVITE -> ring on system:monitor_1"),
                       ("kiosk_port", "kiosk: INVITE -> ring on kiosk:out_0"),
                       ("baresip", "baresip: INVITE -> ring on system:monitor_1")):
        vals = [v for v in res[key] if not np.isnan(v)]
        med, p = summary(vals)
        rows.append([label, fmt_ms(med, 1), fmt_ms(p, 1), f"{len(vals)}/{len(res[key])}"])
    km = summary([v for v in res["kiosk"] if not np.isnan(v)])[0]
    bm = summary([v for v in res["baresip"] if not np.isnan(v)])[0]
    print(header(f"INVITE-to-ring latency on a JACK dummy device, {args.calls} calls each (ms)", load0))
    print(md_table(["", "median", "p95", "rang"], rows))
    print()
    print(f"kiosk/baresip (monitor port): {ratio(km, bm)}. Resolution one JACK period (20 ms). "
          + " ".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
