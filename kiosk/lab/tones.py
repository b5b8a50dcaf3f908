"""Tones as audio proof for the lab: write test tones, find tones in recordings.

Every party in a lab call sends its own sine tone; an FFT of each party's
recording then shows whose audio it heard. `tones_in` reports each candidate
frequency's share of the recording's power in dB (0 dB: all the power is in
that tone; an absent tone sits far below -30 dB), measured over the part of
the file after any leading silence. `read_wav` also reads WAV files whose
header sizes were never written (a process killed mid-recording) and, with
`rate`, headerless 16-bit PCM.
"""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import numpy as np

__all__ = ["write_tone_wav", "read_wav", "tones_in", "has_tone", "FLOOR_DB"]

FLOOR_DB = -150.0
"""Level reported for a tone in a silent or empty recording."""

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


def write_tone_wav(
    path: Path | str,
    freqs: float | list[float] | tuple[float, ...],
    seconds: float,
    rate: int = 16000,
    amplitude: float = 0.5,
) -> Path:
    """Write a mono 16-bit WAV holding the sum of sine tones at `freqs` (peak = amplitude)."""
    path = Path(path)
    flist = [float(freqs)] if isinstance(freqs, (int, float)) else [float(f) for f in freqs]
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    signal = np.zeros(n)
    for f in flist:
        if not 0 < f < rate / 2:
            raise ValueError(f"{f} Hz is not below the Nyquist frequency of {rate} Hz")
        signal += np.sin(2 * math.pi * f * t)
    peak = np.max(np.abs(signal)) if n and flist else 0.0
    if peak > 0:
        signal *= amplitude / peak
    samples = np.clip(np.round(signal * 32767), -32768, 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def _decode(raw: bytes, fmt: int, bits: int, channels: int) -> np.ndarray:
    """PCM bytes -> float samples in [-1, 1], mixed down to mono."""
    if fmt == _FLOAT and bits == 32:
        x = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<f4").astype(np.float64)
    elif fmt == _FLOAT and bits == 64:
        x = np.frombuffer(raw[: len(raw) // 8 * 8], dtype="<f8").astype(np.float64)
    elif bits == 16:
        x = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2") / 32768.0
    elif bits == 32:
        x = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<i4") / 2147483648.0
    elif bits == 8:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128) / 128.0
    elif bits == 24:
        b = np.frombuffer(raw[: len(raw) // 3 * 3], dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)
    else:
        raise ValueError(f"unsupported WAV sample format (tag {fmt}, {bits} bits)")
    if channels > 1:
        x = x[: len(x) // channels * channels].reshape(-1, channels).mean(axis=1)
    return x


def read_wav(path: Path | str, rate: int | None = None) -> tuple[np.ndarray, int]:
    """Return (mono float samples, sample rate) of a WAV file, tolerating unfinished headers.

    A file without a RIFF header is read as 16-bit mono PCM at `rate`;
    `rate`, when given, also overrides the rate in a WAV header.
    """
    data = Path(path).read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        if rate is None:
            raise ValueError(f"{path}: no RIFF/WAVE header; give rate= to read it as raw 16-bit PCM")
        return _decode(data, _PCM, 16, 1), rate
    fmt = bits = channels = file_rate = None
    pos = 12
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            fmt, channels, file_rate = struct.unpack("<HHI", data[body : body + 8])
            bits = struct.unpack("<H", data[body + 14 : body + 16])[0]
            if fmt == _EXTENSIBLE and size >= 26:
                fmt = struct.unpack("<H", data[body + 24 : body + 26])[0]
        elif cid == b"data":
            if fmt is None or bits is None or channels is None or file_rate is None:
                raise ValueError(f"{path}: data chunk before fmt chunk")
            # A writer that was killed leaves size 0 (or a placeholder): take
            # everything up to the end of the file.
            end = body + size if 0 < size <= len(data) - body else len(data)
            return _decode(data[body:end], fmt, bits, channels), rate or file_rate
        pos = body + size + (size & 1)
    if fmt is None:
        raise ValueError(f"{path}: no fmt chunk")
    return np.zeros(0), rate or int(file_rate or 0)


def _active_part(x: np.ndarray, rate: int, skip: float) -> np.ndarray:
    """Drop `skip` seconds, then leading/trailing near-silence."""
    x = x[int(skip * rate) :]
    if x.size == 0:
        return x
    peak = float(np.max(np.abs(x)))
    if peak <= 1e-5:
        return x[:0]
    # Frames of 10 ms whose RMS is within 40 dB of the loudest count as active.
    hop = max(1, rate // 100)
    nfr = x.size // hop
    if nfr == 0:
        return x
    rms = np.sqrt(np.mean(x[: nfr * hop].reshape(nfr, hop) ** 2, axis=1))
    active = np.nonzero(rms > max(rms.max() * 0.01, 1e-5))[0]
    if active.size == 0:
        return x[:0]
    return x[active[0] * hop : (active[-1] + 1) * hop]


def tones_in(
    wav_path: Path | str,
    candidates: list[float],
    rate: int | None = None,
    skip: float = 0.0,
    bandwidth: float | None = None,
) -> dict[float, float]:
    """Each candidate frequency's share of the recording's power, in dB (0 = all of it).

    Leading and trailing silence is ignored; `skip` drops the first seconds as
    well. Power within +-`bandwidth` Hz of a candidate counts for it (default:
    2 % of the frequency, at least 8 Hz). Silent or empty files give FLOOR_DB.
    """
    x, sr = read_wav(wav_path, rate)
    x = _active_part(x, sr, skip)
    result: dict[float, float] = {}
    if x.size < 64:
        return {float(f): FLOOR_DB for f in candidates}
    x = x - np.mean(x)
    window = np.hanning(x.size)
    spectrum = np.abs(np.fft.rfft(x * window)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / sr)
    total = float(np.sum(spectrum[1:]))
    for f in candidates:
        bw = bandwidth if bandwidth is not None else max(8.0, 0.02 * float(f))
        band = (freqs >= f - bw) & (freqs <= f + bw)
        power = float(np.sum(spectrum[band]))
        if total <= 0 or power <= 0:
            result[float(f)] = FLOOR_DB
        else:
            result[float(f)] = max(FLOOR_DB, 10 * math.log10(power / total))
    return result


def has_tone(
    wav_path: Path | str,
    freq: float,
    threshold_db: float = -20.0,
    rate: int | None = None,
    skip: float = 0.0,
) -> bool:
    """True if `freq` carries at least `threshold_db` dB of the recording's power."""
    return tones_in(wav_path, [freq], rate=rate, skip=skip)[float(freq)] >= threshold_db
