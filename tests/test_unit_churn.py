"""Call churn against the real unit: a call that ends while another starts never
takes the new one down with it, and the call table never keeps a ghost row.

pjsua reuses a call slot as soon as a call is over; a pjsua2 Call object that
outlives its call hangs up whatever call holds its slot when it is finally
released (pjproject issue #3856). These tests make slots turn over quickly.
"""

from __future__ import annotations

import time

import pytest

from kiosk.lab.proc import wait_until

from .conftest import needs_lab

pytestmark = [needs_lab, pytest.mark.lab]


def _talking(calls: list[dict], row: int) -> bool:
    return any(c["id"] == row and c["state"] in ("talking", "on hold", "in conference") for c in calls)


def test_a_new_call_survives_the_end_of_the_calls_before_it(unit_factory, phone) -> None:
    """Four talking calls, hang up row 1, dial again, hang up row 2: the new call stays up."""
    phones = {u: phone(u) for u in ("2001", "2002", "2003", "2004")}
    unit = unit_factory()
    rows: dict[str, int] = {}
    for user in phones:
        out = unit.ctl("dial", user)
        assert out.rc == 0, out.err
        rows[user] = out.out["row"]
        unit.wait_for(lambda calls, r=rows[user]: _talking(calls, r), timeout=15)
    for user, row in list(rows.items())[:2]:
        assert unit.ctl("select", str(row)).rc == 0
        assert unit.ctl("hangup").rc == 0
        phones[user].wait_event("CALL_CLOSED")
        unit.wait_for(lambda calls, r=row: all(c["id"] != r for c in calls))
        since = phones[user].event_count()
        out = unit.ctl("dial", user)
        assert out.rc == 0, out.err
        new = out.out["row"]
        unit.wait_for(lambda calls, r=new: _talking(calls, r), timeout=15)
        phones[user].wait_event("CALL_ESTABLISHED", since=since)
        rows[user] = new
    time.sleep(1.5)  # a dead Call object released late would hang a new call up about now
    calls = unit.calls()
    assert sorted(c["id"] for c in calls) == sorted(rows.values()), calls
    for user, ph in phones.items():
        assert "CALL_CLOSED" not in [e.get("type") for e in ph.events[-1:]], (user, ph.events[-3:])
    # Every row can still be hung up, and each far end hears it.
    for user, row in rows.items():
        assert unit.ctl("select", str(row)).rc == 0
        out = unit.ctl("hangup")
        assert out.rc == 0, (user, out.err)
    assert wait_until(lambda: not unit.calls(), 10), unit.calls()


def test_rapid_dial_and_hangup_leaves_no_ghost(unit_factory, phone) -> None:
    """Ten dial/hang-up cycles in quick succession, with a second call up: nothing left behind."""
    keeper, _churn = phone("2001"), phone("2002")
    unit = unit_factory()
    first = unit.ctl("dial", "2001")
    assert first.rc == 0, first.err
    unit.wait_for(lambda calls: _talking(calls, first.out["row"]), timeout=15)
    for _ in range(10):
        out = unit.ctl("dial", "2002")
        assert out.rc == 0, out.err
        row = out.out["row"]
        unit.wait_for(lambda calls, r=row: _talking(calls, r), timeout=15)
        assert unit.ctl("select", str(row)).rc == 0
        assert unit.ctl("hangup").rc == 0
        unit.wait_for(lambda calls, r=row: all(c["id"] != r for c in calls))
    time.sleep(1.0)
    calls = unit.calls()
    assert [c["id"] for c in calls] == [first.out["row"]], calls
    assert "CALL_CLOSED" not in [e.get("type") for e in keeper.events], keeper.events[-3:]
    assert unit.ctl("select", str(first.out["row"])).rc == 0
    assert unit.ctl("hangup").rc == 0
    keeper.wait_event("CALL_CLOSED")
    assert wait_until(lambda: not unit.calls(), 10)


def test_conferences_and_hang_ups_leave_no_stuck_row(unit_factory, phone) -> None:
    """A three-party conference, then an N-party join of three held calls and two hang-ups:
    every row can still be acted on, and the last one is an ordinary call (reproduced by taps before)."""
    phones = {u: phone(u) for u in ("2001", "2002", "2003")}
    unit = unit_factory()

    def ok(out):
        assert out.rc == 0, out.err
        return out.out

    b = ok(unit.ctl("dial", "2001"))["row"]
    unit.wait_for(lambda calls: _talking(calls, b), timeout=15)
    c = ok(unit.ctl("conference", "2002"))["row"]
    unit.wait_for(lambda calls: _talking(calls, c), timeout=15)
    ok(unit.ctl("conference"))
    unit.wait_for(lambda calls: {x["state"] for x in calls} == {"in conference"})
    for row in (b, c):
        ok(unit.ctl("select", str(row)))
        ok(unit.ctl("hangup"))
    unit.wait_for(lambda calls: not calls)

    rows = []
    for user in phones:
        row = ok(unit.ctl("dial", user))["row"]
        unit.wait_for(lambda calls, r=row: _talking(calls, r), timeout=15)
        ok(unit.ctl("hold"))
        unit.wait_for(lambda calls, r=row: any(x["id"] == r and x["state"] == "on hold" for x in calls))
        rows.append(row)
    ok(unit.ctl("select", *map(str, rows)))
    ok(unit.ctl("conference"))
    unit.wait_for(lambda calls: [x["state"] for x in calls] == ["in conference"] * 3, timeout=15)
    for row in rows[:2]:
        ok(unit.ctl("select", str(row)))
        ok(unit.ctl("hangup"))
        unit.wait_for(lambda calls, r=row: all(x["id"] != r for x in calls))
    time.sleep(1.5)
    last = unit.wait_for(lambda calls: len(calls) == 1)
    assert last[0]["id"] == rows[2] and last[0]["state"] == "talking", last
    ok(unit.ctl("select", str(rows[2])))
    ok(unit.ctl("hold"))  # an ordinary call again: every action works on it
    unit.wait_for(lambda calls: calls[0]["state"] == "on hold")
    ok(unit.ctl("connect"))
    ok(unit.ctl("hangup"))
    phones["2003"].wait_event("CALL_CLOSED")
    unit.wait_for(lambda calls: not calls)
