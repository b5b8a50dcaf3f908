"""The `pjpeer` fixture: pjsua2 far-end phones as separate processes (kiosk.lab.pjpeer).

Imported by the test modules that need a far end baresip 1.0 cannot play
(an attended-transfer transferee or target, the caller in a pickup); kept out
of conftest.py so that it loads only there. `tone_dbfs` gives a tone's
absolute level: a held party's recording is near-silence (G.722 decodes
silence to a few LSB of noise), where a tone's *share* of the power says
nothing, so "does not hear C" is measured against full scale instead.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from kiosk.lab.kamailio import Kamailio
from kiosk.lab.pjpeer import PjPeer
from kiosk.lab.tones import read_wav

from .conftest import USERS


@pytest.fixture
def pjpeer(tmp_path: Path, kamailio: Kamailio) -> Iterator[Callable[..., PjPeer]]:
    """Factory: a registered pjsua2 far end playing its tone; answer = auto | ring | idle."""
    peers: list[PjPeer] = []

    def make(user: str, tone_hz: int, answer: str = "auto", **kw: object) -> PjPeer:
        peer = PjPeer(tmp_path / f"pjpeer-{user}", user, USERS[user], kamailio.address,
                      tone_hz=tone_hz, answer=answer, **kw)  # type: ignore[arg-type]
        peers.append(peer)
        return peer.start()

    yield make
    bad = []
    for peer in peers:
        code = peer.stop()
        log = peer.log_path.read_text(errors="replace") if peer.log_path.exists() else ""
        if code != 0 or "Traceback" in log or "Assertion" in log:
            bad.append(f"pjpeer {peer.user} exited {code}:\n{log[-2000:]}")
    assert not bad, "\n".join(bad)


def tone_dbfs(path: Path, freqs: list[int], skip: float = 0.2) -> dict[int, float]:
    """Each tone's level in the recording in dBFS (0: a full-scale sine; silence: -150).

    The first `skip` seconds (switching clicks) are left out; power within
    +-2 % of the frequency (at least 8 Hz) counts for it.
    """
    x, rate = read_wav(path)
    x = x[int(skip * rate):]
    out = {f: -150.0 for f in freqs}
    if x.size < 256:
        return out
    x = x - x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    total = float(spectrum[1:].sum())
    power = float(np.mean(x ** 2))
    if total <= 0 or power <= 0:
        return out
    bins = np.fft.rfftfreq(x.size, 1.0 / rate)
    for f in freqs:
        bw = max(8.0, 0.02 * f)
        share = float(spectrum[(bins >= f - bw) & (bins <= f + bw)].sum()) / total
        if share > 0:
            out[f] = max(-150.0, 10 * math.log10(2 * share * power))
    return out
