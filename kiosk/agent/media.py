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
            return
        try:
            cap, play = self.local_capture(), self.local_playback()
            cap.startTransmit(aud)
            aud.startTransmit(play)
            group = self.group_of(call)
            for other in group:
                if other is call:
                    continue
                oaud = other.audio()
                if oaud is not None:
                    aud.startTransmit(oaud)
                    oaud.startTransmit(aud)
            self._level(group)
            for member in group:
                rec = self.recorders.get(member.id)
                if rec is not None:
                    for m in group:
                        maud = m.audio() if m is not call else aud
                        if maud is not None:
                            maud.startTransmit(rec)
                    cap.startTransmit(rec)
        except pj.Error as exc:
            log.warning("call %d: rewiring failed: %s", call.id, exc.reason)

    def _level(self, group: set["KCall"]) -> None:
        """Keep sums sane: each of n remote parties is mixed at 1/(n-1)-ish gain."""
        n = len(group)
        gain = 1.0 if n <= 2 else max(0.4, 1.0 / (n - 1) ** 0.5)
        for member in group:
            aud = member.audio()
            if aud is not None:
                aud.adjustRxLevel(gain)

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
        """A call ended: take it out of its conference and stop its recorder."""
        for group in self.groups:
            group.discard(call)
        self.groups = [g for g in self.groups if len(g) > 1]
        self.recorders.pop(call.id, None)

    # --- recording ---------------------------------------------------------

    def start_recording(self, call: "KCall", path: str) -> None:
        if call.id in self.recorders:
            raise AgentError(f"call {call.id} is already being recorded")
        rec = pj.AudioMediaRecorder()
        rec.createRecorder(path)
        self.recorders[call.id] = rec
        self.rewire(call)

    def stop_recording(self, call: "KCall") -> None:
        rec = self.recorders.pop(call.id, None)
        if rec is None:
            raise AgentError(f"call {call.id} is not being recorded")
        del rec  # releasing the recorder closes and finalises the WAV

    def release(self) -> None:
        """Drop every pjsua2 media object before libDestroy (else the interpreter crashes)."""
        self.recorders.clear()
        self.groups.clear()
        self._local = None
