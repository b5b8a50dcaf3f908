"""A working day at the unit, as its own process against real SIP (Kamailio, SIPp, baresip, a pjsua2 peer):
do-not-disturb, auto-answer, intercom, who is calling, and the call history of every outcome surviving
a SIGKILL.

What the far end received is the proof: SIPp's message trace (the 486 and no 180 before it, the 200 of
an auto-answer), baresip's events, and the unit's `kiosk ctl history` before and after it was killed.
"""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

import pytest

from kiosk.lab.proc import wait_until
from kiosk.lab.sipp import Sipp, cancel_scenario, uac_scenario
from kiosk.lab.unit import LabLine

from .conftest import USERS, needs_lab

pytestmark = [needs_lab, pytest.mark.lab]


def _responses(sipp: Sipp) -> list[int]:
    """The status codes SIPp received, in order."""
    return [int(m.group(1)) for m in re.finditer(r"^SIP/2\.0 (\d{3}) ", "\n".join(sipp.received_messages()), re.M)]


def _finals(sipp: Sipp) -> list[int | None]:
    """The final response to each INVITE SIPp sent (not the 200 to its CANCEL)."""
    return list(sipp.final_codes().values())


def _sipp_call(tmp_path: Path, name: str, kamailio, scenario: str, service: str = "1001") -> Sipp:
    return Sipp(tmp_path / name, scenario, remote=kamailio.address, service=service, local_ip="127.0.0.1")


def _history(unit, **args) -> list[dict]:
    out = unit.request("history", limit=100, **args)
    assert out["ok"], out
    return out["data"]["calls"]


# --- do not disturb ------------------------------------------------------------------------------


def test_dnd_refuses_sipp_and_baresip_callers_with_the_profiles_code_and_nothing_rings(
        unit_factory, kamailio, phone, tmp_path) -> None:
    unit = unit_factory(extra="[dnd]\ncode = 480\n")
    on = unit.ctl("dnd", "on")
    assert on.rc == 0 and on.out == {"dnd": True, "code": 480}, on

    sipp = _sipp_call(tmp_path, "sipp-dnd", kamailio, cancel_scenario(from_user="2031", cancel_after_ms=5000))
    with sipp.start():
        assert sipp.wait(20) == 0, sipp.errors_text()
    codes = _responses(sipp)
    assert _finals(sipp) == [480] and 180 not in codes and 183 not in codes, codes  # refused, never rang

    caller = phone("2002")
    caller.dial(f"sip:1001@{kamailio.address}")
    closed = caller.wait_event("CALL_CLOSED", timeout=10)
    assert "480" in str(closed), closed
    assert unit.calls() == []
    entries = _history(unit)
    assert [(e["outcome"], e["number"]) for e in entries[:2]] == [("dnd", "2002"), ("dnd", "2031")], entries
    assert unit.request("calls")["data"]["dnd"] is True

    assert unit.ctl("dnd", "off").out == {"dnd": False, "code": None}
    sipp = _sipp_call(tmp_path, "sipp-after", kamailio, cancel_scenario(from_user="2033", cancel_after_ms=500))
    with sipp.start():
        unit.wait_for(lambda calls: len(calls) == 1 and calls[0]["state"] == "ringing")
        assert sipp.wait(20) == 0, sipp.errors_text()


def test_dnd_survives_a_restart(unit_factory, kamailio, tmp_path) -> None:
    unit = unit_factory()
    assert unit.ctl("dnd", "on").rc == 0
    assert unit.terminate() == 0
    unit.start()
    assert unit.request("calls")["data"]["dnd"] is True
    sipp = _sipp_call(tmp_path, "sipp", kamailio, cancel_scenario(from_user="2034", cancel_after_ms=3000))
    with sipp.start():
        assert sipp.wait(20) == 0, sipp.errors_text()
    assert _finals(sipp) == [486]


# --- auto-answer and intercom --------------------------------------------------------------------


def test_an_auto_answer_line_answers_a_sipp_caller_by_itself_after_its_delay(unit_factory, kamailio, tmp_path) -> None:
    unit = unit_factory(lines=[LabLine("main", "1001", USERS["1001"],
                                       keys="auto_answer = true\nauto_answer_delay_ms = 400")])
    sipp = _sipp_call(tmp_path, "sipp", kamailio, uac_scenario(from_user="2040", bye_timeout_ms=20000))
    with sipp.start():
        (row,) = unit.wait_for(lambda calls: len(calls) == 1, 10)
        seen_ringing = time.monotonic()
        assert row["state"] == "ringing" and row["auto_answer"] is True, row
        calls = unit.wait_for(lambda calls: len(calls) == 1 and calls[0]["state"] == "talking", 10)
        waited = time.monotonic() - seen_ringing
        assert calls[0]["direction"] == "in" and calls[0]["auto_answer"] is False
        assert unit.ctl("hangup").rc == 0
        assert sipp.wait(20) == 0, sipp.errors_text()
    assert _finals(sipp) == [200]
    # It waited for its delay (a lower bound the unit sets, not a speed: never flaky).
    assert waited > 0.2, waited
    assert unit.request("history")["data"]["calls"][0]["outcome"] == "answered"


def test_intercom_is_honoured_only_on_a_line_that_allows_it_and_from_an_identity_host(
        unit_factory, kamailio, tmp_path) -> None:
    unit = unit_factory(lines=[LabLine("main", "1001", USERS["1001"], keys="intercom = true"),
                               LabLine("other", "1002", USERS["1002"])])
    intercom = ["Call-Info: <sip:127.0.0.1>;answer-after=0"]
    sipp = _sipp_call(tmp_path, "sipp-yes", kamailio, uac_scenario(from_user="2050", headers=intercom))
    with sipp.start():
        calls = unit.wait_for(lambda calls: len(calls) == 1 and calls[0]["state"] == "talking", 10)
        assert calls[0]["intercom"] is True
        assert unit.ctl("hangup").rc == 0
        assert sipp.wait(20) == 0, sipp.errors_text()
    unit.wait_for(lambda calls: not calls)

    # the line without intercom = true rings for the operator like any call
    sipp = _sipp_call(tmp_path, "sipp-no", kamailio, cancel_scenario(from_user="2051", cancel_after_ms=2500,
                                                                      headers=intercom), service="1002")
    with sipp.start():
        calls = unit.wait_for(lambda calls: len(calls) == 1, 10)
        time.sleep(1.5)
        assert unit.calls()[0]["state"] == "ringing" and unit.calls()[0]["intercom"] is False
        assert sipp.wait(20) == 0, sipp.errors_text()
    assert _finals(sipp) == [487]  # rang until the caller gave up: never answered


def test_intercom_from_a_host_that_is_not_an_identity_host_rings(unit_factory, kamailio, tmp_path) -> None:
    unit = unit_factory(lines=[LabLine("main", "1001", USERS["1001"], keys="intercom = true")],
                        sip_extra='identity_hosts = ["192.0.2.7"]')
    sipp = _sipp_call(tmp_path, "sipp", kamailio, cancel_scenario(
        from_user="2052", cancel_after_ms=2500, headers=["Alert-Info: <http://127.0.0.1>;info=alert-autoanswer"]))
    with sipp.start():
        unit.wait_for(lambda calls: len(calls) == 1, 10)
        time.sleep(1.5)
        assert unit.calls()[0]["state"] == "ringing"
        assert sipp.wait(20) == 0, sipp.errors_text()
    assert _finals(sipp) == [487]  # rang until the caller gave up: never answered


# --- who is calling -------------------------------------------------------------------------------


def test_the_row_names_the_asserted_caller_and_the_queue_the_call_came_from(unit_factory, kamailio, tmp_path) -> None:
    unit = unit_factory()
    headers = ['P-Asserted-Identity: "Boss" <sip:5555@127.0.0.1>',
               'Diversion: "Sales queue" <sip:2000@127.0.0.1>;reason=unconditional']
    sipp = _sipp_call(tmp_path, "sipp", kamailio, cancel_scenario(from_user="2060", from_name="Someone",
                                                                   cancel_after_ms=1500, headers=headers))
    with sipp.start():
        (row,) = unit.wait_for(lambda calls: len(calls) == 1, 10)
        assert (row["name"], row["number"], row["via"]) == ("Boss", "5555", "Sales queue"), row
        assert sipp.wait(20) == 0, sipp.errors_text()


def test_an_asserted_identity_from_a_host_that_is_not_trusted_for_it_is_ignored(unit_factory, kamailio,
                                                                                 tmp_path) -> None:
    unit = unit_factory(sip_extra='identity_hosts = ["192.0.2.7"]')
    sipp = _sipp_call(tmp_path, "sipp", kamailio, cancel_scenario(
        from_user="2061", from_name="Someone", cancel_after_ms=1500,
        headers=['P-Asserted-Identity: "Boss" <sip:5555@127.0.0.1>']))
    with sipp.start():
        (row,) = unit.wait_for(lambda calls: len(calls) == 1, 10)
        assert (row["name"], row["number"]) == ("Someone", "2061"), row
        assert sipp.wait(20) == 0, sipp.errors_text()


# --- the history of every outcome, and a SIGKILL ------------------------------------------------------


def test_every_outcome_is_kept_and_survives_sigkill(unit_factory, kamailio, phone, pjpeer, tmp_path) -> None:
    unit = unit_factory(domain=kamailio.address)

    # answered (incoming from SIPp, hung up by the unit)
    sipp = _sipp_call(tmp_path, "answered", kamailio, uac_scenario(from_user="2010"))
    with sipp.start():
        unit.wait_for(lambda calls: len(calls) == 1 and calls[0]["state"] == "ringing")
        assert unit.ctl("answer").rc == 0
        unit.wait_for(lambda calls: calls and calls[0]["state"] == "talking")
        assert unit.ctl("hangup").rc == 0
        assert sipp.wait(20) == 0, sipp.errors_text()
    unit.wait_for(lambda calls: not calls)
    # missed (the caller gave up)
    sipp = _sipp_call(tmp_path, "missed", kamailio, cancel_scenario(from_user="2011", cancel_after_ms=800))
    with sipp.start():
        assert sipp.wait(20) == 0, sipp.errors_text()
    unit.wait_for(lambda calls: not calls)
    # rejected (by the operator)
    sipp = _sipp_call(tmp_path, "rejected", kamailio, cancel_scenario(from_user="2012", cancel_after_ms=10000))
    with sipp.start():
        unit.wait_for(lambda calls: len(calls) == 1 and calls[0]["state"] == "ringing")
        assert unit.ctl("hangup").rc == 0
        assert sipp.wait(20) == 0, sipp.errors_text()
    unit.wait_for(lambda calls: not calls)
    # busy (the far end refused with 486)
    busy = phone("2003", auto_answer=False)
    out = unit.ctl("--no-wait", "dial", "2003")
    assert out.rc == 0, out.err
    busy.wait_event("CALL_INCOMING")
    busy.hangup()
    unit.wait_for(lambda calls: not calls)
    busy.stop()
    # failed (nobody has that number)
    unit.ctl("dial", "2999")
    unit.wait_for(lambda calls: not calls)
    # transferred (quick transfer of an answered call to 2002)
    b = phone("2001", record=False)
    phone("2002", record=False)
    assert unit.ctl("dial", "2001").rc == 0
    unit.wait_for(lambda calls: calls and calls[0]["state"] == "talking")
    assert unit.ctl("transfer", "quick", "2002").rc == 0
    unit.wait_for(lambda calls: not calls, 15)
    b.hangup()
    # picked up (the unit intercepts a call ringing on 2004)
    callee = phone("2004", auto_answer=False)
    caller = pjpeer("2003", 700)
    caller.dial("sip:2004@127.0.0.1")
    callee.wait_event("CALL_INCOMING")
    picked = unit.ctl("pickup", "2004")
    assert picked.rc == 0, picked.err
    assert unit.ctl("hangup").rc == 0
    unit.wait_for(lambda calls: not calls)
    # dnd
    assert unit.ctl("dnd", "on").rc == 0
    sipp = _sipp_call(tmp_path, "dnd", kamailio, cancel_scenario(from_user="2030", cancel_after_ms=3000))
    with sipp.start():
        assert sipp.wait(20) == 0, sipp.errors_text()
    assert unit.ctl("dnd", "off").rc == 0

    before = _history(unit)
    outcomes = {e["outcome"] for e in before}
    assert outcomes == {"answered", "missed", "rejected", "busy", "failed", "transferred", "picked-up", "dnd"}, before
    by_outcome = {e["outcome"]: e for e in before}
    assert by_outcome["missed"]["number"] == "2011" and by_outcome["rejected"]["number"] == "2012"
    assert by_outcome["busy"]["number"] == "2003" and by_outcome["transferred"]["transferred_to"] == "2002"
    assert unit.request("calls")["data"]["missed_unseen"] == 1
    missed = unit.ctl("history", "--missed")
    assert missed.rc == 0 and [e["number"] for e in missed.out["calls"]] == ["2011"], missed

    # a call still ringing when the unit is killed
    sipp = _sipp_call(tmp_path, "killed", kamailio, cancel_scenario(from_user="2040", cancel_after_ms=30000))
    with sipp.start():
        unit.wait_for(lambda calls: len(calls) == 1 and calls[0]["state"] == "ringing")
        unit.proc.popen.kill()  # SIGKILL: nothing of the unit's own runs
        unit.proc.wait(10)
        sipp.stop()
    db = unit.workdir / "history.db"
    assert db.exists(), list(unit.workdir.iterdir())
    for f in unit.workdir.glob("history.db*"):
        assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, (f, oct(f.stat().st_mode))

    unit.start()
    after = _history(unit)
    assert after[1:] == before  # everything written before the kill, as it was
    restarted = after[0]
    assert (restarted["number"], restarted["outcome"]) == ("2040", "missed"), restarted
    assert "restart" in restarted["reason"], restarted
    assert os.stat(db).st_size > 0
    seen = wait_until(lambda: unit.request("history_seen")["ok"], 5)
    assert seen and unit.request("calls")["data"]["missed_unseen"] == 0


# --- names from the directory ------------------------------------------------------------------


@pytest.mark.skipif(not Path("/usr/sbin/slapd").exists(), reason="slapd not installed (scripts/install.sh does)")
def test_callers_are_named_from_the_file_and_from_ldap_and_ctl_searches_both(unit_factory, kamailio,
                                                                              tmp_path) -> None:
    from kiosk.lab.slapd import Slapd

    slapd = Slapd(tmp_path / "slapd")
    slapd.start()
    try:
        contacts = tmp_path / "contacts.csv"
        contacts.write_text("name,phone\nReception,2000\n", encoding="utf-8")
        secret = tmp_path / "ldap.pass"
        secret.write_text(slapd.reader_password)
        secret.chmod(0o600)
        unit = unit_factory(extra=(
            f'[directory]\nfile = "{contacts}"\nldap = "{slapd.url}"\nldap_base = "{slapd.people_base}"\n'
            f'ldap_bind_dn = "{slapd.reader_dn}"\nldap_password_file = "{secret}"\n'))
        # from the file: at once, with the row itself
        sipp = _sipp_call(tmp_path, "file", kamailio, cancel_scenario(from_user="2000", cancel_after_ms=1000))
        with sipp.start():
            (row,) = unit.wait_for(lambda calls: len(calls) == 1, 10)
            assert row["name"] == "Reception" and row["directory_name"] == "Reception", row
            assert sipp.wait(20) == 0, sipp.errors_text()
        unit.wait_for(lambda calls: not calls)
        # from LDAP (ipPhone 3001): a moment later, on the ringing row
        sipp = _sipp_call(tmp_path, "ldap", kamailio, cancel_scenario(from_user="3001", cancel_after_ms=3000))
        with sipp.start():
            unit.wait_for(lambda calls: len(calls) == 1 and calls[0]["name"] == "Мария Иванова", 10)
            assert sipp.wait(20) == 0, sipp.errors_text()
        assert _history(unit)[0]["name"] == "Мария Иванова"
        found = unit.ctl("directory", "мари")
        assert found.rc == 0, found.err
        assert [(c["name"], c["source"]) for c in found.out["contacts"]] == [("Мария Иванова", "ldap")], found.out
        assert unit.ctl("directory", "recep").out["contacts"][0]["name"] == "Reception"
        slapd.stop()
        down = unit.ctl("directory", "anna")
        assert down.rc == 0 and down.out["errors"][0]["code"] == "ldap_unreachable", down.out
    finally:
        slapd.stop()
