"""Where calls go, and what the unit does when its server goes away (real processes).

- A line without `proxy` sends its calls to its registrar (any port), not to
  port 5060 of the number's domain.
- A call that reaches nobody ends within seconds with a reason naming the server.
- `[sip] keepalive_seconds`: a stopped registrar shows on the line within that
  time; a registrar started again (remembering nothing) has the unit registered
  and reachable within 15 s; one that restarts between two keep-alives too.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from typing import Any, Callable

import pytest

from kiosk.lab.kamailio import Kamailio
from kiosk.lab.proc import wait_until
from kiosk.lab.unit import LabRoute, Unit

from .conftest import needs_lab

pytestmark = [needs_lab, pytest.mark.lab]

KEEPALIVE_S = 5


@pytest.fixture
def bare_unit(unit_factory: Callable[..., Unit]) -> Callable[..., Unit]:
    """Factory: a unit whose line has the lab registrar and *no* proxy (unlike `unit_factory`'s default)."""

    def make(routes: list[LabRoute] | None = None, wait_registered: bool = True, **kw: Any) -> Unit:
        unit = unit_factory(routes=routes, wait_registered=wait_registered, proxy=None, start=False, **kw)
        assert "\nproxy =" not in unit.profile_text.split("[[route]]")[0], unit.profile_text
        return unit.start(wait_registered=wait_registered)

    return make


def _line(unit: Unit) -> dict[str, Any]:
    return unit.request("calls")["data"]["lines"][0]


def _incoming_reaches(unit: Unit, phone: Any, kamailio: Kamailio, timeout: float = 10.0) -> None:
    """baresip calls the unit's line through the registrar; the unit rings; we reject it."""
    phone.dial(f"sip:1001@{kamailio.address}")  # baresip has no outbound proxy
    unit.wait_for(lambda calls: any(c["direction"] == "in" and c["state"] == "ringing" for c in calls), timeout)
    assert unit.ctl("hangup").rc == 0
    unit.wait_for(lambda calls: not calls)


def test_without_proxy_a_call_goes_to_the_registrar_on_its_own_port(bare_unit, phone, kamailio) -> None:
    assert kamailio.port != 5060
    phone("2001")
    unit = bare_unit()
    out = unit.ctl("dial", "2001")  # sip:2001@127.0.0.1: the domain alone would mean port 5060
    assert out.rc == 0, out.err
    row = out.out["row"]
    unit.wait_for(lambda calls: any(c["id"] == row and c["state"] == "talking" for c in calls), timeout=10)
    assert unit.ctl("hangup").rc == 0
    unit.wait_for(lambda calls: not calls)
    assert re.search(r"REQ INVITE sip:2001@127\.0\.0\.1 from=sip:1001@", kamailio.log_text())


def test_a_call_to_a_server_that_does_not_answer_ends_within_seconds_with_the_reason(bare_unit) -> None:
    # A trunk that swallows everything: no 100 Trying, nothing.
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hole.bind(("127.0.0.1", 0))
    port = hole.getsockname()[1]
    try:
        unit = bare_unit(routes=[LabRoute("dead", "main", proxy=f"sip:127.0.0.1:{port}")])
        assert unit.ctl("set", "route", "dead").rc == 0
        started = time.monotonic()
        out = unit.ctl("dial", "3003")
        assert out.rc == 0, out.err
        row = out.out["row"]
        unit.wait_for(lambda calls: not any(c["id"] == row for c in calls), timeout=12)
        took = time.monotonic() - started
        assert took <= 10, f"the unanswered call took {took:.1f} s to end"
        reason = f"408 no answer from sip:127.0.0.1:{port} — is the server up?"
        assert wait_until(lambda: f"row {row}: ended ({reason})" in unit.log_path.read_text(), 3), unit.log_tail()
        print(f"unanswered call ended after {took:.1f} s")
    finally:
        hole.close()


def test_a_stopped_registrar_shows_within_keepalive_seconds_and_a_fresh_one_has_the_unit_back_in_15_s(
        bare_unit, phone, kamailio, tmp_path) -> None:
    unit = bare_unit(keepalive_seconds=KEEPALIVE_S)
    time.sleep(1)
    kamailio.stop()
    stopped = time.monotonic()
    assert wait_until(lambda: not _line(unit)["registered"], KEEPALIVE_S + 1, 0.1), _line(unit)
    detected = time.monotonic() - stopped
    line = _line(unit)
    assert line["reason"] == f"server sip:{kamailio.address} does not answer (keep-alive)", line
    assert detected <= KEEPALIVE_S + 0.3, f"outage shown after {detected:.1f} s"
    # `kiosk ctl calls` says so too
    ctl = unit.ctl("calls")
    assert ctl.rc == 0 and ctl.out["lines"][0]["registered"] is False, ctl

    time.sleep(6)  # an outage longer than a probe or two
    mark = len(kamailio.log_text())
    kamailio.start()  # same port, a fresh process: it has forgotten the unit
    back = time.monotonic()
    assert wait_until(lambda: _line(unit)["registered"], 15, 0.1), (_line(unit), unit.log_tail())
    reregistered = time.monotonic() - back
    print(f"outage shown after {detected:.1f} s; registered {reregistered:.1f} s after the server came back")
    assert "REGISTER" in kamailio.log_text()
    _incoming_reaches(unit, phone("2002"), kamailio)
    # a handful of REGISTERs, not a storm (challenge + answer, maybe one more)
    registers = len(re.findall(r"REQ REGISTER \S+ from=sip:1001@", kamailio.log_text()[mark:]))
    assert registers <= 4, registers


@pytest.mark.parametrize("keepalive", [KEEPALIVE_S, None], ids=["keepalive-5s", "default-15s"])
def test_a_registrar_that_restarts_between_keepalives_learns_of_the_unit_again(
        bare_unit, phone, kamailio, keepalive) -> None:
    unit = bare_unit(keepalive_seconds=keepalive)
    mark = len(kamailio.log_text())
    kamailio.restart()  # down for a moment only: no keep-alive need go unanswered
    restarted = time.monotonic()
    far = phone("2002")
    # the unit's next keep-alive hears "404" for its own address and registers again
    within = 15 if keepalive is None else keepalive + 2  # the next keep-alive, then 0-2 s of spread
    assert wait_until(lambda: re.search(r"REQ REGISTER \S+ from=sip:1001@", kamailio.log_text()[mark:]),
                      within, 0.1), unit.log_tail()
    print(f"registered again {time.monotonic() - restarted:.1f} s after the restart (keepalive {keepalive or 15} s)")
    assert wait_until(lambda: _line(unit)["registered"], 3, 0.1)
    _incoming_reaches(unit, far, kamailio)



def test_a_hung_registrar_that_sends_nothing_shows_within_keepalive_seconds(bare_unit, kamailio) -> None:
    """No ICMP to go by (a hung server, a cut cable): the probes' own timeout tells."""
    unit = bare_unit(keepalive_seconds=KEEPALIVE_S)
    time.sleep(1)
    assert kamailio.pid is not None
    os.killpg(kamailio.pid, signal.SIGSTOP)  # its own process group (started in a new session)
    stopped = time.monotonic()
    try:
        assert wait_until(lambda: not _line(unit)["registered"], KEEPALIVE_S + 1, 0.1), _line(unit)
        detected = time.monotonic() - stopped
        assert _line(unit)["reason"] == f"server sip:{kamailio.address} does not answer (keep-alive)"
        assert detected <= KEEPALIVE_S + 0.3, f"outage shown after {detected:.1f} s"
    finally:
        os.killpg(kamailio.pid, signal.SIGCONT)
    resumed = time.monotonic()
    assert wait_until(lambda: _line(unit)["registered"], 15, 0.1), (_line(unit), unit.log_tail())
    print(f"hung server shown after {detected:.1f} s; registered {time.monotonic() - resumed:.1f} s after it resumed")
