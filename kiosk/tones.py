"""The unit's tones as data: ring patterns, call waiting, ringback, the auto-answer beep, key tones.

Pure Python (no pjsua2): the profile checks `ring_pattern` against
`RING_PATTERNS`, the agent (kiosk/agent/tones.py) turns these segments into
`pj.ToneDesc`s, and the tests read the same numbers to know what to look for
in a recording. A pattern is a list of segments `(freq1, freq2, on_ms, off_ms)`
(Hz, Hz, ms, ms; freq2 = 0 for a single tone), played in order and, for the
repeating ones, from the start again; each segment begins with its *on* part,
so a ring is audible in the first frame after it starts.

Levels. pjmedia's tone generator takes a `volume` that is the peak amplitude of
the tone in 16-bit samples (a dual tone splits it between the two
frequencies; measured on this wheel: volume 8000 gives peaks of 8152, dual or
single), and `volume = 0` means *its default* (12288), never silence. So a
level of 0 % must not reach pjmedia as volume 0: `volume_for(0)` is 0 and the
agent plays nothing for it. Above 0 the percentage is a 30 dB fader ending at
`MAX_VOLUME` (-6 dBFS peak, headroom for the call audio it is mixed with):
100 % -> -6 dBFS, 70 % (the default ring level) -> -15 dBFS, 1 % -> about -36 dBFS.
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = [
    "Segment", "RING_PATTERNS", "DEFAULT_RING_PATTERN", "WAITING", "RINGBACK", "BEEP", "DTMF_PAIRS",
    "KEY_ON_MS", "KEY_OFF_MS", "key_tone", "MAX_VOLUME", "FADER_DB", "volume_for", "EAR_VOLUME",
    "KEY_VOLUME", "BEEP_VOLUME", "period_ms", "on_at",
]


class Segment(NamedTuple):
    """One part of a tone pattern: `freq1` (+ `freq2`) for `on_ms`, then `off_ms` of silence."""

    freq1: int
    freq2: int
    on_ms: int
    off_ms: int


#: What an incoming call rings with (`[audio] ring_pattern`), repeated while it rings.
RING_PATTERNS: dict[str, list[Segment]] = {
    # 440 + 480 Hz, 2 s on / 4 s off: the North American ringing cadence, the one most people know.
    "standard": [Segment(440, 480, 2000, 4000)],
    # 400 + 450 Hz, 0.4 on / 0.2 off / 0.4 on / 2 s off: the British "double ring".
    "double": [Segment(400, 450, 400, 200), Segment(400, 450, 400, 2000)],
    # A short chirp every 3 s: for a room where a long ring disturbs.
    "short": [Segment(440, 480, 300, 2700)],
}
DEFAULT_RING_PATTERN = "standard"

#: Call waiting in the operator's ear while talking: two 200 ms bursts of 425 Hz, then silence,
#: repeating every 4 s (the CEPT call-waiting tone's frequency; a burst pair is easy to tell from speech).
WAITING: list[Segment] = [Segment(425, 0, 200, 200), Segment(425, 0, 200, 3400)]

#: Ringback (an outgoing call rings and the far end sends no early media): 425 Hz, 1 s on / 4 s off,
#: the European convention (ITU-T E.180 / ETSI ES 201 970), not the North American 440 + 480 Hz 2 s / 4 s.
RINGBACK: list[Segment] = [Segment(425, 0, 1000, 4000)]

#: The auto-answer beep: one 150 ms 1 kHz tone, played once, just before the call is answered.
BEEP: list[Segment] = [Segment(1000, 0, 150, 0)]

#: DTMF frequency pairs (ITU-T Q.23): low group, high group.
DTMF_PAIRS: dict[str, tuple[int, int]] = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}
#: A key tone is short feedback for the operator, not the DTMF the far end gets (that goes by
#: RFC 4733 or SIP INFO): 80 ms, and a gap so that digits sent together stay apart.
KEY_ON_MS = 80
KEY_OFF_MS = 60


def key_tone(digit: str) -> Segment:
    """The local key tone of one DTMF digit (KeyError for anything but 0-9 * # A-D)."""
    low, high = DTMF_PAIRS[digit.upper()]
    return Segment(low, high, KEY_ON_MS, KEY_OFF_MS)


#: pjmedia volume (peak amplitude) at 100 %: -6 dBFS.
MAX_VOLUME = 16384
#: The span of the level fader: 1 % is this many dB below 100 %.
FADER_DB = 30.0


def volume_for(percent: int | float) -> int:
    """A level in percent (0..100, clamped) as a pjmedia ToneDesc volume; 0 means play nothing.

    Never returns 0 for a level above 0 (pjmedia would take 0 as its default, 12288).
    """
    p = max(0.0, min(100.0, float(percent)))
    if p <= 0:
        return 0
    db = -FADER_DB * (100.0 - p) / 99.0
    return max(1, int(round(MAX_VOLUME * 10 ** (db / 20.0))))


#: Tones in the ear during or around a call (waiting, ringback): -16 dBFS peak, under the voice.
EAR_VOLUME = 5200
#: Key tones: lower still (-20 dBFS peak) -- the operator hears them over the call.
KEY_VOLUME = 3300
#: The auto-answer beep: clearly audible (-12 dBFS peak) but short.
BEEP_VOLUME = 8200


def period_ms(pattern: list[Segment]) -> int:
    """One whole cycle of a pattern in ms."""
    return sum(s.on_ms + s.off_ms for s in pattern)


def on_at(pattern: list[Segment], t_ms: float, loop: bool = True) -> Segment | None:
    """The segment sounding `t_ms` after the pattern started (None in a pause or after the end).

    For tests and the bench: which parts of a recording must carry the tone.
    """
    total = period_ms(pattern)
    if total <= 0 or t_ms < 0:
        return None
    if loop:
        t_ms = math.fmod(t_ms, total)
    elif t_ms >= total:
        return None
    for seg in pattern:
        if t_ms < seg.on_ms:
            return seg
        t_ms -= seg.on_ms
        if t_ms < seg.off_ms:
            return None
        t_ms -= seg.off_ms
    return None
