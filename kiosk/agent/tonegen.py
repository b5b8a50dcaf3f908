"""The unit's tones on pjsua2: ring, call waiting, ringback, the auto-answer beep, key tones.

Three `pj.ToneGenerator`s, each its own source in the conference bridge, so
that one never cuts another short: `ring` (the incoming ring: on the ring
device's bridge port when `[audio] ring_device` is set, else what the operator
hears), `ear` (call waiting or ringback, in the operator's ear) and `key` (key
tones and the beep, in the ear, over whatever else plays). A generator is
connected to its output once (`startTransmit`) and then only played and
stopped: pjmedia's generator produces no frame while it has nothing to play,
so an idle one costs the bridge nothing, and a call's own wiring
(`Media.rewire`: call <-> headset, conference, recorders) never involves it.

`play()` queues behind what a generator still plays (pjmedia appends), so
switching is `stop()` then `play()`: the old tone ends in the frame being
mixed and the new one starts with its first on-segment in the next. The
patterns and levels are kiosk/tones.py's.

Every generator (and the ring device's bridge) must be gone before
`libDestroy`: `release()` is called from the agent's shutdown ahead of
`Media.release()`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterable

import pjsua2 as pj

from .. import tones as t
from ..desk import AgentError

if TYPE_CHECKING:
    from .audio_port import LocalBridge
    from .thread import PjAgent

log = logging.getLogger("kiosk.agent.tones")

RATE = 16000
KINDS = ("ring", "waiting", "ringback")


def tone_vector(pattern: Iterable[t.Segment], volume: int) -> "pj.ToneDescVector":
    """A pattern as pjmedia tone descriptors at one volume."""
    vec = pj.ToneDescVector()
    for seg in pattern:
        d = pj.ToneDesc()
        d.freq1 = int(seg.freq1)
        d.freq2 = int(seg.freq2)
        d.on_msec = int(seg.on_ms)
        d.off_msec = int(seg.off_ms)
        d.volume = int(volume)
        d.flags = 0
        vec.append(d)
    return vec


class Tones:
    """The agent's tone generators (agent thread only)."""

    def __init__(self, agent: "PjAgent") -> None:
        self.agent = agent
        self.kind: str | None = None  # what tone() last started
        self._gens: dict[str, pj.ToneGenerator] = {}
        # generator -> the port it transmits to (held only until release(), which runs before the
        # headset's and the ring device's ports are closed)
        self._outs: dict[str, "pj.AudioMedia"] = {}
        self.ring_bridge: "LocalBridge | None" = None  # the ring device, when the profile names one
        self._ring_device: object = None  # the device last tried for it (tried again only when it changes)

    # --- outputs -----------------------------------------------------------

    def _ear(self) -> "pj.AudioMedia":
        assert self.agent.media is not None
        return self.agent.media.local_playback()

    def _ring_out(self, ringing: bool = False) -> "pj.AudioMedia":
        """Where the ring plays: the ring device's port while that device is open, else the ear.

        A ring device that is missing or was unplugged (its bridge's device process keeps
        trying, hw/audio.py) must not make the unit ring nowhere: the headset rings meanwhile.
        """
        device = getattr(self.agent.profile.audio, "ring_device", None)
        if device is None or device == self.agent.profile.audio.device:
            self._close_ring_device()
            return self._ear()
        if self._ring_device != device:
            self._close_ring_device()
            from .audio_port import start_ring_audio

            self.ring_bridge = start_ring_audio(self.agent, device)
            self._ring_device = device
        bridge = self.ring_bridge
        if bridge is not None and bridge.port is not None and bridge.audio.live:
            return bridge.port
        if bridge is not None and bridge.port is not None and ringing:
            log.warning("ring device %r is not open: ringing in the headset", device)
        return self._ear()

    def _make(self, name: str) -> "pj.ToneGenerator":
        gen = self._gens.get(name)
        if gen is None:
            gen = pj.ToneGenerator()
            gen.createToneGenerator(RATE, 1)
            self._gens[name] = gen
        return gen

    def _gen(self, name: str, out: "pj.AudioMedia") -> "pj.ToneGenerator":
        """The named generator, connected to `out` (moved there when it played elsewhere).

        A generator is connected only while it plays (`idle` lets go of it after): a port
        connected to the sound device keeps pjsua's device open, and with the null device of a
        unit without a headset that is a clock thread waking 50 times a second for nothing
        (measured: 0.8 % of a core idle before, 1.5 % with the generators always connected)."""
        gen = self._make(name)
        old = self._outs.get(name)
        if old is None or old.getPortId() != out.getPortId():
            if old is not None:
                try:
                    gen.stopTransmit(old)
                except pj.Error:
                    pass  # that port is gone, and its connections with it
            gen.startTransmit(out)
            self._outs[name] = out
        return gen

    def prepare(self) -> None:
        """At start (and after a reload): open the ring device now, so that the first ring does not
        wait for its device process; make the generators, so that the first tone does not wait either."""
        self._ring_out()
        for name in ("ring", "ear", "key"):
            self._make(name)

    def idle(self, now: float) -> None:
        """Periodic (agent thread): disconnect each generator that has stopped playing."""
        for name in list(self._outs):
            gen = self._gens.get(name)
            try:
                busy = gen is not None and gen.isBusy()
            except pj.Error:
                busy = False
            if not busy:
                self._disconnect(name)

    def _disconnect(self, name: str) -> None:
        gen, out = self._gens.get(name), self._outs.pop(name, None)
        if gen is None or out is None:
            return
        try:
            gen.stopTransmit(out)
        except pj.Error:
            pass  # that port is gone, and its connections with it

    # --- requests ----------------------------------------------------------

    def tone(self, kind: str | None) -> None:
        """Play `kind` (ring / waiting / ringback) or nothing; the same kind again changes nothing."""
        if kind is not None and kind not in KINDS:
            raise AgentError(f"unknown tone {kind!r} (one of {', '.join(KINDS)})", "bad_argument",
                             value=kind, allowed=", ".join(KINDS))
        if kind == self.kind:
            return
        self._stop("ring")
        self._stop("ear")
        self.kind = kind
        if kind == "ring":
            out = self._ring_out(ringing=True)
            audio = self.agent.profile.audio
            name = getattr(audio, "ring_pattern", t.DEFAULT_RING_PATTERN)
            pattern = t.RING_PATTERNS.get(name) or t.RING_PATTERNS[t.DEFAULT_RING_PATTERN]
            volume = t.volume_for(getattr(audio, "ring_level", 70))
            if volume:  # ring_level 0: silent ringing (pjmedia's volume 0 would be its loud default)
                self._gen("ring", out).play(tone_vector(pattern, volume), True)
        elif kind == "waiting":
            self._gen("ear", self._ear()).play(tone_vector(t.WAITING, t.EAR_VOLUME), True)
        elif kind == "ringback":
            self._gen("ear", self._ear()).play(tone_vector(t.RINGBACK, t.EAR_VOLUME), True)
        log.info("tone: %s", kind or "off")

    def beep(self) -> None:
        """The auto-answer beep in the ear (cuts a key tone short; leaves ring and waiting alone)."""
        gen = self._gen("key", self._ear())
        gen.stop()
        gen.play(tone_vector(t.BEEP, t.BEEP_VOLUME), False)

    def keys(self, digits: str) -> None:
        """A short key tone per digit in the ear (after any still playing)."""
        vec = pj.ToneDigitVector()
        for ch in digits:
            seg = t.key_tone(ch)
            d = pj.ToneDigit()
            d.digit = ch.upper()
            d.on_msec = seg.on_ms
            d.off_msec = seg.off_ms
            d.volume = t.KEY_VOLUME
            vec.append(d)
        if len(vec):
            self._gen("key", self._ear()).playDigits(vec, False)

    def _stop(self, name: str) -> None:
        gen = self._gens.get(name)
        if gen is not None:
            try:
                gen.stop()
            except pj.Error as exc:
                log.warning("tone %s: stop failed: %s", name, exc.reason)
            self._disconnect(name)

    # --- life cycle --------------------------------------------------------

    def _close_ring_device(self) -> None:
        bridge, self.ring_bridge, self._ring_device = self.ring_bridge, None, None
        if bridge is not None:
            self._stop("ring")
            gen = self._gens.pop("ring", None)  # a fresh one is connected where it rings next
            out = self._outs.pop("ring", None)
            del gen, out
            bridge.close()

    def release(self) -> None:
        """Stop and drop every generator and the ring device (before libDestroy)."""
        for name in list(self._gens):
            self._stop(name)
        self._gens.clear()
        self._outs.clear()
        self.kind = None
        self._close_ring_device()

