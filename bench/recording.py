"""Recording: write throughput headroom, and how much audio a SIGKILL loses.

Three measurements, each on this machine's own disk (`--dir`, default a
temporary directory under /var/tmp, i.e. where /var/lib/kiosk/recordings
would be on a unit):

1. **pjsua2's writer.** One pjsua2 Endpoint on the null sound device (the
   unit's set-up: 16 kHz mono bridge, `threadCnt = 0`, one thread polling
   `libHandleEvents`), 1, 4 and 8 recorders each fed by a looping tone
   player for `--seconds`. Reported: the process's CPU (% of one core, psutil
   user+system delta over the wall time), and each file's audio duration
   against the wall time: a writer that cannot keep up loses frames there.
2. **The disk, written as the unit writes it.** A recording is 32 000 B/s of
   PCM reaching the kernel in 4 KiB stdio blocks, plus (recordings.py) one
   fsync per second. The script writes such "recording-seconds" (8 x 4 KiB
   writes then an fsync) as fast as the disk takes them for `--seconds`;
   headroom = recording-seconds absorbed per wall second / 4 (the most calls,
   hence recordings, a unit has at once). fsync latency p50/p99 is reported
   too: on an SD card it, not bandwidth, is the limit.
3. **Audio lost on SIGKILL.** `--kills` times: a child process records a tone
   for 2-4 s (varied) and prints when its recorder started; the parent
   SIGKILLs it, repairs the WAV with `kiosk.recordings.repair_wav` (the
   start-up repair) and compares the audio on disk with the time between the
   start and the kill. What is lost is what sat in pjmedia's 4 KiB buffer and
   stdio's 4 KiB buffer (about 0.26 s at 32 kB/s): pjsua2 has no flush hook,
   and none is needed for the 1 s target.

    .venv/bin/python bench/recording.py [--seconds 10] [--kills 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kiosk.recordings import read_header, repair_wav  # noqa: E402

RATE = 16000
BYTES_PER_S = RATE * 2
MAX_CALLS = 4


def _endpoint():  # type: ignore[no-untyped-def]
    import pjsua2 as pj

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = False
    cfg.logConfig.level = 0
    cfg.logConfig.consoleLevel = 0
    cfg.medConfig.clockRate = RATE
    cfg.medConfig.sndClockRate = RATE
    cfg.medConfig.channelCount = 1
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    ep.libStart()
    return pj, ep


def _tone_file(directory: Path) -> Path:
    from kiosk.lab.tones import write_tone_wav

    return write_tone_wav(directory / "tone.wav", 700, 1.0)


def writer_load(directory: Path, counts: list[int], seconds: float) -> list[dict[str, float]]:
    """CPU and duration fidelity of n pjsua2 recorders at once, for each n."""
    import psutil

    pj, ep = _endpoint()
    tone = _tone_file(directory)
    proc = psutil.Process()
    rows = []
    try:
        for n in counts:
            player = pj.AudioMediaPlayer()
            player.createPlayer(str(tone), 0)
            recs, paths = [], []
            for i in range(n):
                path = directory / f"load-{n}-{i}.wav"
                rec = pj.AudioMediaRecorder()
                rec.createRecorder(str(path))
                player.startTransmit(rec)
                recs.append(rec)
                paths.append(path)
            cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
            while time.monotonic() - t0 < seconds:
                ep.libHandleEvents(20)
            wall = time.monotonic() - t0
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            del rec
            recs.clear()
            del player
            time.sleep(0.2)  # pjmedia closes the files on its clock thread
            ep.libHandleEvents(20)
            durations = []
            for path in paths:
                hdr = read_header(path)
                durations.append(hdr.duration if hdr else 0.0)
                path.unlink()
            rows.append({"recorders": n, "cpu_pct": 100 * cpu / wall, "wall": wall,
                         "min_audio": min(durations), "max_audio": max(durations),
                         "bytes_per_s": sum(durations) * BYTES_PER_S / wall})
    finally:
        ep.libDestroy()
    return rows


def disk_headroom(directory: Path, seconds: float) -> dict[str, float]:
    """Recording-seconds (32 000 B in 4 KiB writes + one fsync) the disk absorbs per wall second."""
    path = directory / "disk.bin"
    block = os.urandom(4096)
    per_rec_second = BYTES_PER_S // 4096  # 7.8 -> 7 blocks + the rest
    rest = BYTES_PER_S - per_rec_second * 4096
    fsyncs: list[float] = []
    done = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            for _ in range(per_rec_second):
                os.write(fd, block)
            os.write(fd, block[:rest])
            s = time.perf_counter()
            os.fsync(fd)
            fsyncs.append(time.perf_counter() - s)
            done += 1
            if done % 64 == 0 and os.fstat(fd).st_size > 256 * 1024 * 1024:
                os.ftruncate(fd, 0)  # keep the file (and the disk it takes) bounded
                os.lseek(fd, 0, os.SEEK_SET)
        wall = time.monotonic() - t0
    finally:
        os.close(fd)
        path.unlink()
    fsyncs.sort()
    rate = done / wall
    return {"rec_seconds_per_s": rate, "mb_per_s": rate * BYTES_PER_S / 1e6, "headroom": rate / MAX_CALLS,
            "fsync_p50_ms": 1000 * fsyncs[len(fsyncs) // 2], "fsync_p99_ms": 1000 * fsyncs[int(len(fsyncs) * 0.99)]}


CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[3])
from bench.recording import _endpoint
pj, ep = _endpoint()
player = pj.AudioMediaPlayer(); player.createPlayer(sys.argv[2], 0)
rec = pj.AudioMediaRecorder(); rec.createRecorder(sys.argv[1])
player.startTransmit(rec)
print(f"STARTED {time.time():.6f}", flush=True)
while True:
    ep.libHandleEvents(20)
"""


def sigkill_loss(directory: Path, kills: int) -> list[float]:
    """Seconds of audio lost when the recording process is SIGKILLed, once per kill."""
    tone = _tone_file(directory)
    losses = []
    for i in range(kills):
        path = directory / f"kill-{i}.wav"
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(tone), str(ROOT)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = ""
            while child.stdout and not line.startswith("STARTED"):  # pjlib prints a banner first
                line = child.stdout.readline()
                if not line:
                    raise RuntimeError("the recording child ended before its recorder started")
            started = float(line.split()[1])
            time.sleep(random.uniform(2.0, 4.0))
            killed = time.time()
            child.send_signal(signal.SIGKILL)
            child.wait(5)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(5)
        repair_wav(path)
        hdr = read_header(path)
        losses.append((killed - started) - (hdr.duration if hdr else 0.0))
        path.unlink()
    return losses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement (default 10)")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILL trials (default 5)")
    parser.add_argument("--dir", type=Path, default=None, help="directory on the disk to measure")
    args = parser.parse_args()
    base = args.dir or Path("/var/tmp")
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-rec-", dir=base) as tmp:
        directory = Path(tmp)
        print(f"# Recording bench ({directory}, {args.seconds:g} s per measurement)\n")
        print("## pjsua2 recorders (null device, looping tone player)\n")
        print("| recorders | CPU % of one core | audio per file vs wall | bytes/s written |")
        print("|---|---|---|---|")
        for r in writer_load(directory, [1, 4, 8], args.seconds):
            print(f"| {r['recorders']} | {r['cpu_pct']:.1f} | {r['min_audio']:.2f}-{r['max_audio']:.2f} s "
                  f"/ {r['wall']:.2f} s | {r['bytes_per_s'] / 1000:.0f} kB/s |")
        d = disk_headroom(directory, args.seconds)
        print("\n## Disk, written like a recording (4 KiB writes, one fsync per recorded second)\n")
        print(f"- recording-seconds absorbed: {d['rec_seconds_per_s']:.0f} per second "
              f"({d['mb_per_s']:.1f} MB/s with an fsync every 32 kB)")
        print(f"- headroom over {MAX_CALLS} simultaneous recordings: x{d['headroom']:.0f}")
        print(f"- fsync latency: p50 {d['fsync_p50_ms']:.2f} ms, p99 {d['fsync_p99_ms']:.2f} ms")
        losses = sigkill_loss(directory, args.kills)
        print(f"\n## Audio lost on SIGKILL ({args.kills} kills)\n")
        print(f"- median {statistics.median(losses):.3f} s, max {max(losses):.3f} s, min {min(losses):.3f} s "
              f"(all: {', '.join(f'{x:.3f}' for x in losses)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
