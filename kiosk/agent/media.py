"""Conference-bridge wiring: local audio, conferences and recorders for every call.

pjsua2 forgets a call's bridge connections on every re-INVITE (hold, connect,
a far end's update), so this module keeps the *intended* wiring — which calls
are conferenced together, which are being recorded, where local audio is —
and `rewire()` re-applies it from `onCallMediaState`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pjsua2 as pj

from ..desk import AgentError

if TYPE_CHECKING:
    from .calls import KCall

log = logging.getLogger("kiosk.agent.media")


class Media:
    """The unit's side of the conference bridge."""

    def __init__(self, ep: pj.Endpoint) -> None:
        self.ep = ep
        self.groups: list[set["KCall"]] = []
        self.recorders: dict[int, pj.AudioMediaRecorder] = {}
        self._local: pj.AudioMedia | None = None
        # Recorders of locally held calls are fed silence (see _quiet); made on first use.
        self._silence: pj.ToneGenerator | None = None
        self._quieted: set[int] = set()

    # --- local audio -------------------------------------------------------

    def local_capture(self) -> pj.AudioMedia:
        """What the operator says (the sound device, the null device, or the hw bridge)."""
        return self._local or self.ep.audDevManager().getCaptureDevMedia()

    def local_playback(self) -> pj.AudioMedia:
        """What the operator hears."""
        return self._local or self.ep.audDevManager().getPlaybackDevMedia()

    def set_local_port(self, port: pj.AudioMedia | None) -> None:
        """Use an AudioMediaPort (hw bridge) instead of the sound device."""
        self._local = port

    # --- wiring ------------------------------------------------------------

    def group_of(self, call: "KCall") -> set["KCall"]:
        for group in self.groups:
            if call in group:
                return group
        return {call}

    def rewire(self, call: "KCall") -> None:
        """Connect a call's audio to everything it should hear and be heard by."""
        aud = call.audio()
        if aud is None:
            self._quiet(call)
            return
        try:
            group = self.group_of(call)
            # Levels before connections: the clock thread mixes while we wire, and
            # one frame summed at full level can clip; a clipped G.722 frame makes
            # pjmedia's G.722 at the far end drop its PCM shift for the rest of the
            # call (measured under CPU load: that party then heard everyone 6 dB
            # quieter and was heard 6 dB louder).
            self._level(group)
            cap, play = self.local_capture(), self.local_playback()
            cap.startTransmit(aud)
            aud.startTransmit(play)
            for other in group:
                if other is call:
                    continue
                oaud = other.audio()
                if oaud is not None:
                    aud.startTransmit(oaud)
                    oaud.startTransmit(aud)
            for member in group:
                rec = self.recorders.get(member.id)
                if rec is not None:
                    self._unquiet(member.id, rec)
                    for m in group:
                        maud = m.audio() if m is not call else aud
                        if maud is not None:
                            maud.startTransmit(rec)
                    cap.startTransmit(rec)
        except pj.Error as exc:
            log.warning("call %d: rewiring failed: %s", call.id, exc.reason)

    def _level(self, group: set["KCall"]) -> None:
        """Keep the mix under full scale: with n >= 3 remote parties each one's voice enters at 1/(n-1).

        pjmedia's bridge sums without normalising, and the operator (headset and
        recorder) hears all n parties at once. pjsua2 names levels from the
        port's side: `adjustTxLevel` scales what a call *sends into* the bridge
        (its voice, heard by everyone), `adjustRxLevel` what it *receives* (the
        mix sent to that far end; scaling that leaves the operator's mix as loud
        as before: measured, the operator's recording of four far-end tones at
        -9 to -5 dBFS hit full scale). The gain is 1/(n-1): a remote party
        hears n-1 others, whose sum then never exceeds the loudest one, and
        the operator (headset, recorder) hears n, at most n/(n-1) of it (4/3
        for four parties). 1/sqrt(n) was tried first: its worst case is
        sqrt(n) times the loudest party, and four steady tones whose phases
        happened to line up in the measured seconds clipped the operator's
        recording now and then (one full-suite run in about a dozen; 0.86 to 1.0
        of full scale, depending on the phases). A call alone gets 1.0 back (n = 1), so
        a party that was in a conference is not left quiet.
        """
        n = len(group)
        gain = 1.0 if n <= 2 else 1.0 / (n - 1)
        for member in group:
            aud = member.audio()
            if aud is not None:
                aud.adjustTxLevel(gain)

    def join(self, calls: list["KCall"]) -> None:
        """Put the calls (and any groups they are already in) in one conference."""
        members: set["KCall"] = set()
        for call in calls:
            members |= self.group_of(call)
        self.groups = [g for g in self.groups if not (g & members)]
        self.groups.append(members)
        for call in members:
            self.rewire(call)

    def forget(self, call: "KCall") -> None:
        """A call ended: take it out of its conference (the rest keep talking) and stop its recorder."""
        for group in self.groups:
            if call in group:
                group.discard(call)
                try:  # fewer parties: louder again; the last one alone at full level
                    self._level(group)
                except pj.Error as exc:
                    log.warning("call %d left: re-levelling the conference failed: %s", call.id, exc.reason)
        self.groups = [g for g in self.groups if len(g) > 1]
        self.recorders.pop(call.id, None)
        self._quieted.discard(call.id)

    # --- recording ---------------------------------------------------------

    def _quiet(self, call: "KCall") -> None:
        """A held call's recorder gets silence instead of the operator's microphone.

        While B is held the operator may consult C: that must not land in B's
        recording. Silence (not nothing) because pjmedia's writer writes no
        frame while no port transmits to it (measured): the file would then
        lose the hold's time, and the sidecar's hold spans would no longer be
        positions in the audio. A ToneGenerator that plays nothing is a silent
        source in C, with no Python on the clock thread.
        """
        rec = self.recorders.get(call.id)
        if rec is None or call.id in self._quieted:
            return
        try:
            if self._silence is None:
                self._silence = pj.ToneGenerator()
                self._silence.createToneGenerator(16000, 1)
            try:
                self.local_capture().stopTransmit(rec)
            except pj.Error:
                pass  # was not connected
            self._silence.startTransmit(rec)
            self._quieted.add(call.id)
        except pj.Error as exc:
            log.warning("call %d: cannot keep the held call's recording silent: %s", call.id, exc.reason)

    def _unquiet(self, call_id: int, rec: pj.AudioMediaRecorder) -> None:
        if call_id in self._quieted and self._silence is not None:
            self._quieted.discard(call_id)
            try:
                self._silence.stopTransmit(rec)
            except pj.Error:
                pass

    def start_recording(self, call: "KCall", path: str) -> None:
        if call.id in self.recorders:
            raise AgentError(f"call {call.id} is already being recorded", "already_recording", row=call.id)
        rec = pj.AudioMediaRecorder()
        rec.createRecorder(path)
        self.recorders[call.id] = rec
        self.rewire(call)

    def stop_recording(self, call: "KCall") -> None:
        rec = self.recorders.pop(call.id, None)
        if rec is None:
            raise AgentError(f"call {call.id} is not being recorded", "not_recording", row=call.id)
        self._quieted.discard(call.id)
        # Releasing the recorder finalises the WAV, but pjmedia closes the file on
        # its clock thread a tick or two later (measured ~20 ms): recordings.py
        # waits for that before it checks the header and completes the sidecar.
        del rec

    def release(self) -> None:
        """Drop every pjsua2 media object before libDestroy (else the interpreter crashes)."""
        self.recorders.clear()
        self._quieted.clear()
        self._silence = None
        self.groups.clear()
        self._local = None
