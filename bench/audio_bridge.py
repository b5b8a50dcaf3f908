"""The local audio bridge under a real call: glitches, added delay, drift, CPU and memory.

Method (all on this machine, everything started and stopped here):

- A JACK dummy server (`scripts/jack.sh`, 20 ms periods) is the headset: at
  16000 Hz, then at 16016 and 15984 Hz — a device clock 1000 ppm fast or slow
  against pjmedia's 16 kHz (DESIGN.md: `jackd -d dummy -w` makes no drift).
  The unit opens it as `[audio] device = "system"`; its JACK ports are then
  looped back (`kiosk:out_0` -> `kiosk:in_0`), so what the operator "hears"
  is what the operator "says" one JACK period (20 ms) later: a JACK client's
  output looped to its own input is a feedback cycle, read in the next period
  (measured before each call by a probe client of its own; the 40 ms once
  quoted for this loop included PortAudio's block adapter, see hw/audio.py).
- Kamailio, and a baresip far end that sends a click (5 ms of 1 kHz) every
  second from a file (module aufile). The unit calls it and the call runs for
  `--seconds`.
- The unit runs with `KIOSK_AUDIO_TAP`: its pjsua2 port keeps both directions
  on one timeline of pjmedia ticks (the bridge asks the port for a frame and
  then gives it one in every tick). A click's round trip is the distance, in
  samples, from where it enters the port (ear) to where it comes back out of it
  (mouth): exact, and free of the network's and the jitter buffers' delays.
  The bridge's delay is that round trip minus the loopback's own; over a
  call with drifting clocks its spread must stay within one frame (20 ms).
- Glitch counters from `KIOSK_AUDIO_STATS` (both rings, whole call). CPU:
  the bridge's own callbacks (device process + pjsua2 port, per-thread CPU
  time), and the unit's processes from psutil, next to the same call with
  `device = "none"` (no bridge). Memory: USS/PSS, since every JACK client maps
  ~129 MB of JACK's shared memory into its RSS (DESIGN.md).

Run: `.venv/bin/python bench/audio_bridge.py [--seconds 60] [--rates 16000,16016,15984] [--no-baseline]`
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lab import cpu_model, lab_dir, md_table  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from kiosk.lab.baresip import Baresip  # noqa: E402
from kiosk.lab.kamailio import Kamailio  # noqa: E402
from kiosk.lab.ports import free_port  # noqa: E402
from kiosk.lab.proc import wait_until  # noqa: E402
from kiosk.lab.tones import read_wav  # noqa: E402
from kiosk.lab.unit import LabLine, Unit, lab_profile_toml  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
JACK_SH = ROOT / "scripts" / "jack.sh"
USERS = {"1001": "line-one-pw", "2001": "far-2001-pw"}
LOOPBACK_MS = 40.0  # the figure: what a click took through a PortAudio loopback with blocksize 320
RATE = 16000

#: A JACK client of its own ("loopprobe", PortAudio with blocksize 0: JACK's buffers straight into the
#: callback) with its output looped to its input: how many samples a click in the callback's output takes
#: to show up in its input. That is the JACK loopback's own delay, without any bridge.
LOOP_PROBE = r"""
import ctypes, ctypes.util, subprocess, sys, time
import numpy as np
ctypes.CDLL(ctypes.util.find_library("portaudio") or "libportaudio.so.2").PaJack_SetClientName(
    ctypes.c_char_p(b"loopprobe"))
import sounddevice as sd
k, sent, lags = [0], [], []
def cb(indata, outdata, frames, t, status):
    outdata[:] = 0
    if k[0] % 10 == 5:
        outdata[7, 0] = 20000
        sent.append(k[0] * frames + 7)
    hit = np.flatnonzero(np.abs(indata[:, 0]) > 10000)
    if hit.size and sent:
        lags.append(k[0] * frames + int(hit[0]) - sent[-1])
    k[0] += 1
dev = [i for i, d in enumerate(sd.query_devices()) if d["name"] == "system"][0]
with sd.Stream(device=(dev, dev), channels=(1, 1), dtype="int16", samplerate=float(sys.argv[1]), blocksize=0,
               callback=cb):
    subprocess.run(["jack_connect", "loopprobe:out_0", "loopprobe:in_0"], check=True)
    time.sleep(1.5)
print(int(np.median(lags)) if lags else -1)
"""


class ClickPhone(Baresip):
    """A baresip far end whose microphone is a WAV file of clicks (module aufile)."""

    def __init__(self, *args: Any, clicks: Path, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.clicks = clicks

    def _config_text(self) -> str:
        text = re.sub(r"^audio_source\t+.*$", f"audio_source\t\taufile,{self.clicks}", super()._config_text(),
                      flags=re.M)
        return text.replace("module\t\t\tausine.so", "module\t\t\tausine.so\nmodule\t\t\taufile.so")


def write_clicks(path: Path, seconds: float) -> Path:
    """A click (5 ms of 1 kHz, Hann envelope) every second, 48 kHz stereo (baresip's source format here)."""
    rate = 48000
    n = int(seconds * rate)
    x = np.zeros(n)
    burst = int(0.005 * rate)
    shape = np.sin(2 * np.pi * 1000 * np.arange(burst) / rate) * np.hanning(burst) * 0.7
    for start in range(rate // 2, n - burst, rate):
        x[start:start + burst] = shape
    pcm = (x * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(pcm, 2).tobytes())
    return path


def jack(*args: str) -> str:
    done = subprocess.run(["bash", str(JACK_SH), *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/jack.sh {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


def jack_env(name: str) -> dict[str, str]:
    return {"JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"}


def jack_run(name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=10, env={**os.environ, **jack_env(name)})


def round_trips(ear: np.ndarray, mouth: np.ndarray) -> list[tuple[float, float]]:
    """(time s, round trip ms) for every click that entered the port and came back out of it."""
    peak = float(np.max(np.abs(ear))) if ear.size else 0.0
    if peak <= 0:
        return []
    threshold = 0.3 * peak
    loud = np.flatnonzero(np.abs(ear) > threshold)
    onsets, last = [], -RATE
    for i in loud:
        if i - last > RATE // 5:  # a new click after 200 ms of quiet
            onsets.append(int(i))
        last = i
    out = []
    window = int(0.3 * RATE)
    for k in onsets:
        back = np.flatnonzero(np.abs(mouth[k:k + window]) > threshold)
        if back.size:
            out.append((k / RATE, back[0] * 1000.0 / RATE))
    return out


@dataclass
class Run:
    label: str
    rate: int | None  # JACK's rate; None: no bridge (device "none")
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)
    trips: list[tuple[float, float]] = field(default_factory=list)
    loop_ms: float = 0.0  # the JACK loopback's own delay, measured on this server before the call
    unit_cpu: float = 0.0  # % of one core, unit process
    device_cpu: float = 0.0  # % of one core, device process
    unit_mem: tuple[float, float] = (0.0, 0.0)  # USS, PSS MB
    device_mem: tuple[float, float] = (0.0, 0.0)


def mem_mb(proc: psutil.Process | None) -> tuple[float, float]:
    if proc is None:
        return (0.0, 0.0)
    info = proc.memory_full_info()
    return (info.uss / 2**20, info.pss / 2**20)


def cpu_s(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    t = proc.cpu_times()
    return t.user + t.system


def one_call(workdir: Path, rate: int | None, seconds: float, clicks: Path) -> Run:
    """One call of `seconds` with the bridge on JACK at `rate` (or no bridge) and the loopback."""
    label = "no bridge (device none)" if rate is None else f"JACK {rate} Hz"
    run = Run(label, rate, seconds)
    name = f"kbench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    kam = Kamailio(workdir / "kamailio", free_port(), USERS).start()
    far = unit = None
    try:
        if rate is not None:
            jack("start", name, str(rate))
            probe = subprocess.run([sys.executable, "-c", LOOP_PROBE, str(rate)], capture_output=True, text=True,
                                   timeout=30, env={**os.environ, **jack_env(name)})
            lag = int(probe.stdout.split()[-1]) if probe.stdout.split() else -1
            if lag <= 0:
                raise RuntimeError(f"loopback probe failed: {probe.stdout} {probe.stderr[-500:]}")
            run.loop_ms = lag * 1000.0 / rate
        far = ClickPhone(workdir / "phone", user="2001", password=USERS["2001"], registrar=kam.address,
                         clicks=clicks, record=False).start()
        sock = workdir / "unit" / "control.sock"
        text = lab_profile_toml(listen=f"127.0.0.1:{free_port()}", registrar=f"sip:{kam.address}",
                                domain="127.0.0.1", proxy=f"sip:{kam.address}",
                                lines=[LabLine("main", "1001", USERS["1001"])], socket=sock,
                                recordings=workdir / "unit" / "recordings")
        env: dict[str, str] = {}
        if rate is not None:
            text = text.replace('device = "none"', 'device = "system"')
            env = {**jack_env(name), "KIOSK_AUDIO_STATS": str(workdir / "stats.json"),
                   "KIOSK_AUDIO_TAP": str(workdir / "tap"), "KIOSK_AUDIO_TAP_SECONDS": str(seconds + 30)}
        unit = Unit(workdir / "unit", text, sock, env=env).start()
        if rate is not None:
            if not wait_until(lambda: "kiosk:out_0" in jack_run(name, "jack_lsp").stdout, 15):
                raise RuntimeError(f"the unit did not open the JACK device:\n{unit.log_tail()}")
            done = jack_run(name, "jack_connect", "kiosk:out_0", "kiosk:in_0")
            if done.returncode:
                raise RuntimeError(f"jack_connect: {done.stderr}")
        out = unit.ctl("dial", "2001")
        if out.rc != 0:
            raise RuntimeError(f"dial failed: {out.err}")
        unit.wait_for(lambda calls: bool(calls) and calls[0]["state"] == "talking")
        uproc = psutil.Process(unit.proc.pid)  # type: ignore[union-attr]
        time.sleep(1.0)  # the call's first second: bursts and the ring's start
        dproc = None
        if rate is not None:
            pid = json.loads((workdir / "stats.json").read_text()).get("device_pid")
            dproc = psutil.Process(pid) if pid else None
        c0u, c0d, t0 = cpu_s(uproc), cpu_s(dproc), time.monotonic()
        time.sleep(seconds)
        dt = time.monotonic() - t0
        run.unit_cpu = 100 * (cpu_s(uproc) - c0u) / dt
        run.device_cpu = 100 * (cpu_s(dproc) - c0d) / dt
        run.unit_mem, run.device_mem = mem_mb(uproc), mem_mb(dproc)
        if rate is not None:
            run.stats = json.loads((workdir / "stats.json").read_text())
        unit.ctl("hangup")
        unit.wait_for(lambda calls: not calls)
        unit.terminate()  # writes the tap; PortAudio goes before jackd
        if rate is not None:
            run.stats = json.loads((workdir / "stats.json").read_text())
            ear, _ = read_wav(workdir / "tap-ear.wav")
            mouth, _ = read_wav(workdir / "tap-mouth.wav")
            run.trips = round_trips(ear, mouth)
    finally:
        if unit is not None:
            unit.stop()
        if far is not None:
            far.stop()
        kam.stop()
        if rate is not None:
            jack("stop", name)
    return run


def fmt(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}"


def report(runs: list[Run], seconds: float) -> str:
    rows = []
    for run in runs:
        if run.rate is None:
            rows.append([run.label, "-", "-", "-", "-", "-", fmt(run.unit_cpu), "-",
                         f"{fmt(run.unit_mem[0])} / {fmt(run.unit_mem[1])}", "-"])
            continue
        pb, cap = run.stats.get("playback", {}), run.stats.get("capture", {})
        delays = [rt - run.loop_ms for _, rt in run.trips]
        late = [rt - run.loop_ms for t, rt in run.trips if t >= 3.0]  # after the call's start
        glitches = (f"{pb.get('underruns', 0)}/{pb.get('overruns', 0)} ; "
                    f"{cap.get('underruns', 0)}/{cap.get('overruns', 0)}")
        corr = f"{pb.get('trims', 0)}+{pb.get('pads', 0)} ; {cap.get('trims', 0)}+{cap.get('pads', 0)}"
        if delays:
            trip = float(np.median([rt for _, rt in run.trips]))
            delay = (f"{fmt(trip)} = {fmt(run.loop_ms)} + {fmt(float(np.median(delays)))} "
                     f"({fmt(min(delays))}-{fmt(max(delays))}) ; {fmt(trip - LOOPBACK_MS)}")
            spread = fmt(max(late) - min(late)) if late else "-"
        else:
            delay, spread = "no clicks back", "-"
        bridge_cpu = 100 * (run.stats.get("cpu_s", 0) + run.stats.get("port_cpu_s", 0)) / max(
            run.stats.get("uptime_s", 1), 1e-9)
        rows.append([run.label, glitches, corr, delay, spread, f"{len(run.trips)}",
                     f"{fmt(run.unit_cpu)} + {fmt(run.device_cpu)}", fmt(bridge_cpu, 2),
                     f"{fmt(run.unit_mem[0])} / {fmt(run.unit_mem[1])}",
                     f"{fmt(run.device_mem[0])} / {fmt(run.device_mem[1])}"])
    headers = ["device", "underruns/overruns (play ; capture)", "trims+pads (play ; capture)",
               "click round trip ms = JACK loop + bridge, both ways: median (min-max) ; round trip - 40",
               "delay spread ms (after 3 s)", "clicks",
               "CPU % unit + device process", "bridge callbacks CPU %", "unit USS / PSS MB",
               "device process USS / PSS MB"]
    note = (f"\n{seconds:g} s call per row; {cpu_model()}, {os.cpu_count()} cores. Bridge delay = a click's "
            f"round trip through the port, rings, PortAudio and a JACK loopback minus the loopback's own delay, "
            f"measured on the same server before the call by a JACK client of its own (one period: a JACK "
            f"loop is a feedback cycle). After ';': the round trip minus {LOOPBACK_MS:g} ms, the issue's "
            f"accounting (its 40 ms included PortAudio's block adapter, one period, which is the bridge's). "
            f"Bridge callbacks CPU = device callback + pjsua2 port callbacks (per-thread CPU time) over the "
            f"unit's uptime with the bridge.")
    return md_table(headers, rows) + note


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each call (default 60)")
    parser.add_argument("--rates", default="16000,16016,15984", help="JACK rates to run, comma-separated")
    parser.add_argument("--no-baseline", action="store_true", help="skip the call without the bridge")
    parser.add_argument("--keep", action="store_true", help="keep the lab files (logs, taps)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    for tool in ("jackd", "jack_connect", "jack_lsp", "kamailio", "baresip"):
        if not any((Path(p) / tool).exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
            print(f"{tool} not found: run scripts/install.sh (apt-get install jackd2 kamailio baresip)",
                  file=sys.stderr)
            return 1
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    runs: list[Run] = []
    with lab_dir("audio", args.keep) as work:
        clicks = write_clicks(work / "clicks.wav", args.seconds + 40)
        plan: list[int | None] = [*rates] + ([] if args.no_baseline else [None])
        for i, rate in enumerate(plan):
            print(f"[{i + 1}/{len(plan)}] {args.seconds:g} s call, "
                  f"{'no bridge' if rate is None else f'JACK at {rate} Hz'} ...", file=sys.stderr, flush=True)
            try:
                runs.append(one_call(work / f"run{i}", rate, args.seconds, clicks))
            except Exception as exc:  # one broken run must not lose the others' figures
                log = work / f"run{i}" / "unit" / "unit.log"
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else ""
                print(f"run {i + 1} failed: {exc}\n{tail}", file=sys.stderr)
                failed = Run(f"JACK {rate} Hz: FAILED" if rate else "no bridge: FAILED", rate, args.seconds)
                runs.append(failed)
        if args.json:
            args.json.write_text(json.dumps([run.__dict__ for run in runs], indent=2, default=str))
    print(report(runs, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
