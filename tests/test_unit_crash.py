"""A unit that dies mid-call leaves no far end in a dead call.

SIGKILL gives the unit no chance to say BYE. The dialogs in conversation are
kept in a small state file; the next start sends a BYE for each before pjsua2
runs. And a far end that goes silent (crashed, unplugged) is hung up after the
RTP/RTCP inactivity timeout.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from kiosk.lab.proc import wait_until

from .conftest import needs_lab

pytestmark = [needs_lab, pytest.mark.lab]


def _kill(unit) -> None:
    os.kill(unit.proc.pid, signal.SIGKILL)
    unit.proc.wait(10)
    unit.socket.unlink(missing_ok=True)  # the dead unit's socket file: the new one makes its own


@pytest.mark.parametrize("direction", ["out", "in"])
def test_a_unit_killed_mid_call_ends_the_call_when_it_starts_again(unit_factory, phone, direction) -> None:
    far = phone("2001")
    unit = unit_factory()
    if direction == "out":
        out = unit.ctl("dial", "2001")
        assert out.rc == 0, out.err
    else:
        far.dial("sip:1001@" + far.registrar)
        unit.wait_for(lambda calls: calls and calls[0]["state"] == "ringing")
        assert unit.ctl("answer").rc == 0
    far.wait_event("CALL_ESTABLISHED")
    unit.wait_for(lambda calls: calls and calls[0]["state"] == "talking")
    state = unit.workdir / "dialogs.json"
    assert wait_until(lambda: state.exists() and len(json.loads(state.read_text())) == 1, 5)
    since = far.event_count()
    _kill(unit)
    time.sleep(1.0)
    assert "CALL_CLOSED" not in [e.get("type") for e in far.events[since:]]  # nobody said BYE yet
    unit.start()
    closed = far.wait_event("CALL_CLOSED", since=since, timeout=10)
    assert closed, far.events[since:]
    assert "ended a call the last run left open" in unit.log_path.read_text()
    assert not state.exists() or json.loads(state.read_text()) == []
    assert unit.calls() == []


def test_a_far_end_that_goes_silent_is_hung_up(unit_factory, phone) -> None:
    far = phone("2001")
    unit = unit_factory(extra="", sip_extra="rtp_timeout_seconds = 3")
    out = unit.ctl("dial", "2001")
    assert out.rc == 0, out.err
    far.wait_event("CALL_ESTABLISHED")
    row = out.out["row"]
    unit.wait_for(lambda calls: calls and calls[0]["state"] == "talking")
    time.sleep(4)  # it sends: the call stays
    assert [c["id"] for c in unit.calls()] == [row]
    os.kill(far.pid, signal.SIGSTOP)  # the far end freezes: no RTP, no RTCP, no BYE
    try:
        t0 = time.monotonic()
        unit.wait_for(lambda calls: not calls, timeout=12)
        assert time.monotonic() - t0 < 8
    finally:
        os.kill(far.pid, signal.SIGCONT)
    notices = unit.request("calls")["data"]["notices"]
    assert any("no audio from the far end for 3 s" in n["reason"] for n in notices), notices
