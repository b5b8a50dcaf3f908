"""Bursts of malformed INVITEs against the real unit: it stays up, registered, without ghost rows, and serves.

The INVITE cases of RFC 4475 (read at test time from shared/robustness beside the checkout,
never copied here) are sent at about 100 a second, each followed 10 ms later
by a CANCEL when it names enough for one, as a SIP fuzzing suite does; every
host they name is rewritten to the sender's loopback address first
(`kiosk.lab.flood.loopback`), so nothing the unit does with them leaves the
machine.  127.0.0.1 is the lab unit's trusted host; 127.0.0.2 is not.

Before the INVITE gate, such a burst aborted the unit: each call's RTP and
RTCP sockets (two per audio m-line, up to 16 lines) take slots of pjmedia's
64-slot ioqueue, and a closed socket's slot comes back only 500 ms later.
"""

from __future__ import annotations

import pytest

from kiosk.lab import flood

from .conftest import needs_lab

pytestmark = [
    needs_lab, pytest.mark.lab,
    pytest.mark.skipif(not flood.RFC4475.is_dir(), reason=f"RFC 4475 messages not found at {flood.RFC4475}"),
]

TRUSTED, UNTRUSTED = "127.0.0.1", "127.0.0.2"


def _check(unit, report: dict, burst: flood.BurstResult) -> None:
    assert report["alive"], f"the unit died in the burst {burst.summary()}:\n{unit.log_tail(60)}"
    assert report["rows_left"] == [], report
    assert report["registered"], report
    assert report["placed"] and report["placed_ended"], report
    assert report["taken"] and report["taken_ended"], report
    assert report["ok"], report


@pytest.mark.parametrize("source", [TRUSTED, UNTRUSTED])
def test_rfc4475_invite_burst_with_cancels_leaves_the_unit_serving(unit_factory, phone, source) -> None:
    phone("2001")
    caller = phone("2002")
    unit = unit_factory()
    burst = flood.rfc4475_burst(flood.unit_address(unit), count=300, source=source, rate=100,
                                cancel_after=0.01, settle=2.0)
    assert burst.sent == 300 and 90 <= burst.rate <= 110, burst.summary()
    if source == UNTRUSTED:
        assert 180 not in burst.codes, f"an untrusted INVITE rang: {burst.summary()}"
    _check(unit, flood.serves(unit, "2001", caller), burst)


@pytest.mark.parametrize("source", [TRUSTED, UNTRUSTED])
def test_rfc4475_invite_burst_without_cancels_leaves_the_unit_serving(unit_factory, phone, source) -> None:
    """No CANCELs: four calls ring, the rest are busy (486) or refused; nothing may abort."""
    phone("2001")
    caller = phone("2002")
    unit = unit_factory()
    burst = flood.rfc4475_burst(flood.unit_address(unit), count=200, source=source, rate=100, settle=1.0)
    if source == TRUSTED:
        assert burst.codes[180] <= 4, f"more calls rang than the unit takes: {burst.summary()}"
        assert burst.codes[486] > 0, f"calls beyond the limit were not answered busy: {burst.summary()}"
    _check(unit, flood.serves(unit, "2001", caller), burst)


@pytest.mark.parametrize("source", [TRUSTED, UNTRUSTED])
def test_offers_with_many_media_lines_in_a_burst_leave_the_unit_serving(unit_factory, phone, source) -> None:
    """16 audio m-lines take 32 of the 64 media socket slots: two such calls and a CANCEL aborted it."""
    phone("2001")
    caller = phone("2002")
    unit = unit_factory()
    target = flood.unit_address(unit)
    with flood.Flooder(target, source) as f:
        msgs = [flood.invite(f.host, f.port, target, unique=f"mlines{i}", body=flood.sdp(f.host, 16))
                for i in range(60)]
        burst = f.burst(msgs, rate=100, cancel_after=0.03, settle=2.0)
    _check(unit, flood.serves(unit, "2001", caller), burst)


def test_a_call_placed_during_a_burst_does_not_abort_the_unit(unit_factory, phone) -> None:
    """The operator dials while short calls churn: the dial may be refused, the unit may not die."""
    phone("2001")
    caller = phone("2002")
    unit = unit_factory()
    target = flood.unit_address(unit)
    with flood.Flooder(target, TRUSTED) as f:
        msgs = [flood.invite(f.host, f.port, target, unique=f"churn{i}") for i in range(150)]
        import threading

        results: list = []
        t = threading.Thread(target=lambda: results.append(f.burst(msgs, rate=100, cancel_after=0.01, settle=1.0)))
        t.start()
        for _ in range(3):
            unit.ctl("dial", "2001")
            unit.ctl("hangup")
        t.join(30)
    _check(unit, flood.serves(unit, "2001", caller), results[0])
