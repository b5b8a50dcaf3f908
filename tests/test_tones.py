"""The tone patterns (kiosk.tones) as data: shapes, levels, key tones. Fast, no pjsua2."""

from __future__ import annotations

import pytest

from kiosk import tones
from kiosk.tones import Segment


def test_the_module_does_not_need_pjsua2() -> None:
    # The profile imports it to check ring_pattern: it must load on a box without the wheel.
    assert "import pjsua2" not in open(tones.__file__).read()


@pytest.mark.parametrize("name", ["standard", "double", "short"])
def test_ring_patterns_start_with_sound_and_repeat(name: str) -> None:
    pattern = tones.RING_PATTERNS[name]
    assert pattern and all(isinstance(s, Segment) for s in pattern)
    assert pattern[0].on_ms > 0  # ring is audible at once
    assert tones.on_at(pattern, 0) is pattern[0]
    assert all(300 <= s.freq1 <= 3400 and (s.freq2 == 0 or 300 <= s.freq2 <= 3400) for s in pattern)
    assert 1000 <= tones.period_ms(pattern) <= 8000
    assert tones.on_at(pattern, tones.period_ms(pattern) + 1) is pattern[0]  # loops


def test_default_ring_pattern_exists() -> None:
    assert tones.DEFAULT_RING_PATTERN in tones.RING_PATTERNS


def test_waiting_is_two_short_bursts_every_four_seconds() -> None:
    w = tones.WAITING
    assert [s.freq1 for s in w] == [425, 425] and all(s.on_ms == 200 for s in w)
    assert tones.period_ms(w) == 4000
    assert tones.on_at(w, 100) is w[0] and tones.on_at(w, 300) is None and tones.on_at(w, 500) is w[1]
    assert tones.on_at(w, 1000) is None


def test_ringback_is_the_european_cadence() -> None:
    assert tones.RINGBACK == [Segment(425, 0, 1000, 4000)]
    assert tones.on_at(tones.RINGBACK, 999) and tones.on_at(tones.RINGBACK, 1001) is None


def test_beep_plays_once() -> None:
    (beep,) = tones.BEEP
    assert 900 <= beep.freq1 <= 1100 and 100 <= beep.on_ms <= 200
    assert tones.on_at(tones.BEEP, 50, loop=False) is beep
    assert tones.on_at(tones.BEEP, 500, loop=False) is None


def test_key_tones_are_the_dtmf_pairs() -> None:
    assert tones.key_tone("5")[:2] == (770, 1336)
    assert tones.key_tone("#")[:2] == (941, 1477)
    assert tones.key_tone("a")[:2] == (697, 1633)
    assert set(tones.DTMF_PAIRS) == set("0123456789*#ABCD")
    assert 50 <= tones.key_tone("1").on_ms <= 120
    with pytest.raises(KeyError):
        tones.key_tone("x")
    assert tones.KEY_VOLUME < tones.EAR_VOLUME < tones.MAX_VOLUME  # key tones sit lower


def test_levels_map_to_pjmedia_volumes() -> None:
    assert tones.volume_for(0) == 0 and tones.volume_for(-5) == 0  # nothing is played
    assert tones.volume_for(100) == tones.MAX_VOLUME == tones.volume_for(150)
    assert tones.volume_for(1) >= 1  # never 0 above 0 % (pjmedia's 0 = its default, loud)
    vols = [tones.volume_for(p) for p in range(1, 101)]
    assert vols == sorted(vols) and len(set(vols)) > 90  # monotonic, a real fader
    import math
    db70 = 20 * math.log10(tones.volume_for(70) / 32768)
    assert -17 < db70 < -13, db70
    db1 = 20 * math.log10(tones.volume_for(1) / tones.MAX_VOLUME)
    assert abs(db1 + tones.FADER_DB) < 0.1


def test_on_at_outside_the_pattern() -> None:
    assert tones.on_at([], 10) is None
    assert tones.on_at(tones.WAITING, -1) is None
