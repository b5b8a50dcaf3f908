"""The lab's pjsua2 far end (kiosk.lab.pjpeer) does what the transfer and pickup tests rely on.

Two peers call each other directly (no registrar): each hears exactly the
other's tone, the answer modes behave, and SIGTERM mid-call hangs up and exits
0 with every pjsua2 object released (a leak would assert in libDestroy).
"""

from __future__ import annotations

import time

import pytest

from kiosk.lab.pjpeer import PjPeer, PjPeerError

from .pjpeers import tone_dbfs

pytestmark = pytest.mark.lab


def test_two_peers_hear_each_others_tone_and_sigterm_ends_cleanly(tmp_path) -> None:
    with PjPeer(tmp_path / "a", "a", "", None, tone_hz=700) as a, \
            PjPeer(tmp_path / "b", "b", "", None, tone_hz=1300, answer="idle") as b:
        call = a.dial(b.contact_uri)
        a.wait_event("state", call=call, state="CONFIRMED")
        b.wait_event("state", state="CONFIRMED")
        time.sleep(1.5)
        heard_a = a.record(tmp_path / "a-next.wav")
        heard_b = b.record(None)
        assert heard_a is not None and heard_b is not None
        at_a, at_b = tone_dbfs(heard_a, [700, 1300]), tone_dbfs(heard_b, [700, 1300])
        assert at_a[1300] > -30 and at_a[700] < -60, at_a
        assert at_b[700] > -30 and at_b[1300] < -60, at_b

        second = a.dial(b.contact_uri)  # b answers only while idle
        assert a.wait_event("state", call=second, state="DISCONNECTED")["code"] == 486
        with pytest.raises(PjPeerError, match="no call 99"):
            a.hangup(99)

        assert a.stop() == 0
        b.wait_event("state", state="DISCONNECTED")
        assert a.events()[-1]["event"] == "stopped"
        assert "Assertion" not in a.log_path.read_text()


def test_a_ringing_peer_rings_until_told_to_answer(tmp_path) -> None:
    with PjPeer(tmp_path / "a", "a", "", None, record=False) as a, \
            PjPeer(tmp_path / "c", "c", "", None, answer="ring", record=False) as c:
        call = a.dial(c.contact_uri)
        c.wait_event("state", state="EARLY")
        assert [x["state"] for x in c.calls()] == ["EARLY"]
        c.accept()
        a.wait_event("state", call=call, state="CONFIRMED")
        c.hangup()
        a.wait_event("state", call=call, state="DISCONNECTED")
        assert c.calls() == []
