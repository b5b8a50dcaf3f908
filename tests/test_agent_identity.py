"""Caller identity, original target and intercom read from raw INVITEs (kiosk.agent.identity). Fast."""

from __future__ import annotations

import pytest

from kiosk.agent import identity as idn


def invite(*header_lines: str, body: str = "v=0\r\n") -> str:
    """An INVITE as pjsip hands it over: CRLF lines, the given headers after the usual ones."""
    head = [
        "INVITE sip:1001@127.0.0.1:5080 SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1",
        'From: "Caller Self" <sip:2001@127.0.0.1>;tag=abc',
        "To: <sip:1001@127.0.0.1>",
        "Call-ID: x1@127.0.0.1",
        "CSeq: 1 INVITE",
        *header_lines,
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
    ]
    return "\r\n".join(head) + "\r\n\r\n" + body


# --- header mechanics ---------------------------------------------------------------


def test_folded_and_compact_headers_are_read() -> None:
    msg = invite("P-Asserted-Identity: \"Alice\r\n Smith\" <sip:100@pbx>", "f: <sip:9@x>;tag=1")
    hs = dict(idn.headers(msg))
    assert hs["p-asserted-identity"] == '"Alice Smith" <sip:100@pbx>'
    assert [v for n, v in idn.headers(msg) if n == "from"][-1] == "<sip:9@x>;tag=1"


def test_values_split_on_commas_outside_quotes_and_brackets() -> None:
    vals = idn.split_values('"Doe, John" <sip:1@h;a=b,c>, <tel:+15551234>;x="p,q"')
    assert vals == ['"Doe, John" <sip:1@h;a=b,c>', '<tel:+15551234>;x="p,q"']


def test_name_addr_forms() -> None:
    a = idn.parse_name_addr(r'"Ann \"The\" Boss" <sip:7@h;user=phone>;party=calling;privacy=off')
    assert a is not None and a.display == 'Ann "The" Boss' and a.uri == "sip:7@h;user=phone"
    assert a.params == {"party": "calling", "privacy": "off"}
    b = idn.parse_name_addr("Bob <sip:8@h>")
    assert b is not None and b.display == "Bob"
    c = idn.parse_name_addr("sip:9@h;tag=1")
    assert c is not None and c.uri == "sip:9@h" and c.params == {"tag": "1"}
    for bad in ('"open quote <sip:1@h>', "<sip:1@h", "no uri here", "", '"x" sip:1@h'):
        assert idn.parse_name_addr(bad) is None, bad


def test_user_part() -> None:
    assert idn.user_part("sip:%2B7495@h;user=phone") == "+7495"
    assert idn.user_part("tel:+15551234;phone-context=x") == "+15551234"
    assert idn.user_part("sips:2001:pw@h:5061") == "2001"
    assert idn.user_part("sip:h") == "" and idn.user_part("http://x") == ""


# --- P-Asserted-Identity / Remote-Party-ID ---------------------------------------------


def test_pai_names_the_caller() -> None:
    msg = invite('P-Asserted-Identity: "Front Desk" <sip:100@pbx.example>')
    assert idn.asserted_identity(msg) == "Front Desk <sip:100@pbx.example>"


def test_pai_prefers_sip_over_tel_and_keeps_a_name_from_either() -> None:
    msg = invite('P-Asserted-Identity: "Jane, Sales" <tel:+15551234>', "P-Asserted-Identity: <sip:+15551234@pbx>")
    assert idn.asserted_identity(msg) == "Jane, Sales <sip:+15551234@pbx>"
    one = invite('P-Asserted-Identity: <tel:+15550000>, "Joe" <sip:55@pbx>')
    assert idn.asserted_identity(one) == "Joe <sip:55@pbx>"


def test_remote_party_id_when_no_pai() -> None:
    msg = invite('Remote-Party-ID: "Called" <sip:1@h>;party=called',
                 'Remote-Party-ID: "Real Caller" <sip:42@pbx>;party=calling;screen=yes')
    assert idn.asserted_identity(msg) == "Real Caller <sip:42@pbx>"
    both = invite('Remote-Party-ID: "R" <sip:1@h>', 'P-Asserted-Identity: <sip:2@h>')
    assert idn.asserted_identity(both) == "sip:2@h"  # PAI wins; a name it lacks is not taken from RPID
    assert idn.asserted_identity(invite()) == ""


def test_a_malformed_pai_gives_nothing_not_an_error() -> None:
    for bad in ('P-Asserted-Identity: "unterminated <sip:1@h>', "P-Asserted-Identity: <sip:1@h",
                "P-Asserted-Identity: ,,,", "P-Asserted-Identity:", "P-Asserted-Identity: \x00\xff garbage"):
        assert idn.asserted_identity(invite(bad)) == "", bad
        info = idn.read_invite(invite(bad))
        assert info.asserted == ""


# --- History-Info / Diversion ---------------------------------------------------------


def test_history_info_first_entry_is_the_original_target() -> None:
    msg = invite('History-Info: "Sales Queue" <sip:500@pbx?Reason=SIP%3Bcause%3D302>;index=1',
                 "History-Info: <sip:1001@pbx>;index=1.1")
    assert idn.original_target(msg) == "Sales Queue"
    no_name = invite("History-Info: <sip:500@pbx>;index=1, <sip:1001@pbx>;index=1.1")
    assert idn.original_target(no_name) == "500"


def test_history_info_in_index_order_even_when_sent_out_of_order() -> None:
    msg = invite("History-Info: <sip:1001@pbx>;index=1.1.1", "History-Info: <sip:700@pbx>;index=1.1",
                 "History-Info: <sip:600@pbx>;index=1")
    assert idn.original_target(msg) == "600"


def test_diversion_last_header_is_the_original() -> None:
    msg = invite('Diversion: <sip:1001@pbx>;reason=unconditional',
                 'Diversion: "Support, 2nd line" <sip:300@pbx>;reason=no-answer;counter=1')
    assert idn.original_target(msg) == "Support, 2nd line"
    tel = invite("Diversion: <tel:+4930123>;reason=user-busy, <sip:77@pbx>;reason=unknown")
    assert idn.original_target(tel) == "77"
    assert idn.original_target(invite()) == ""


def test_no_via_when_the_call_reached_the_number_it_was_dialled_to() -> None:
    direct = invite("History-Info: <sip:1001@127.0.0.1>;index=1")  # To is 1001: not diverted
    assert idn.original_target(direct) == ""
    assert idn.original_target(invite("Diversion: <sip:1001@pbx>;reason=deflection")) == ""


def test_history_info_wins_over_diversion() -> None:
    msg = invite("Diversion: <sip:300@pbx>", "History-Info: <sip:500@pbx>;index=1")
    assert idn.original_target(msg) == "500"


# --- intercom -------------------------------------------------------------------------


def test_call_info_answer_after() -> None:
    msg = invite("Call-Info: <sip:pbx>;answer-after=0")
    assert idn.intercom(msg) == (True, 0)
    msg = invite("Call-Info: <http://pbx/logo.png>;purpose=icon, <sip:pbx>;answer-after=3")
    assert idn.intercom(msg) == (True, 3000)


def test_alert_info_autoanswer() -> None:
    assert idn.intercom(invite("Alert-Info: <http://127.0.0.1/Bellcore-dr4>")) == (False, None)
    assert idn.intercom(invite("Alert-Info: <http://x>;info=alert-autoanswer")) == (True, None)
    assert idn.intercom(invite("Alert-Info: <http://x>;info=alert-autoanswer;answer-after=2")) == (True, 2000)
    assert idn.intercom(invite("Alert-Info: <http://x>;answer-after=1")) == (True, 1000)


def test_a_bad_answer_after_still_asks_but_gives_no_delay() -> None:
    assert idn.intercom(invite("Call-Info: <sip:pbx>;answer-after=soon")) == (True, None)
    assert idn.intercom(invite("Call-Info: <sip:pbx>;answer-after=-1")) == (True, None)
    assert idn.intercom(invite("Call-Info: <sip:pbx;answer-after=5>")) == (False, None)  # a URI parameter


def test_body_is_never_read_as_headers() -> None:
    msg = invite(body="v=0\r\nP-Asserted-Identity: <sip:evil@x>\r\nCall-Info: <sip:x>;answer-after=0\r\n")
    info = idn.read_invite(msg)
    assert info == idn.InviteInfo()


def test_read_invite_all_at_once() -> None:
    msg = invite('P-Asserted-Identity: "Boss" <sip:1@pbx>', "Diversion: <sip:300@pbx>",
                 "Alert-Info: <http://x>;info=alert-autoanswer")
    assert idn.read_invite(msg) == idn.InviteInfo("Boss <sip:1@pbx>", "300", True, None)


@pytest.mark.parametrize("junk", ["", "garbage", "\r\n\r\n", "INVITE x SIP/2.0\r\nHistory-Info: <<<,>>>;index=a.b\r\n"
                                  "Diversion: \"\r\nCall-Info: ;;;\r\n\r\n"])
def test_never_raises(junk: str) -> None:
    assert isinstance(idn.read_invite(junk), idn.InviteInfo)


def test_cancel_answered_elsewhere() -> None:
    def cancel(*lines: str) -> str:
        return "\r\n".join(["CANCEL sip:1001@h SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", *lines,
                             "Content-Length: 0"]) + "\r\n\r\n"

    assert idn.answered_elsewhere(cancel('Reason: SIP ;cause=200 ;text="Call completed elsewhere"'))
    assert idn.answered_elsewhere(cancel('Reason: Q.850;cause=16, SIP;cause=200'))
    assert not idn.answered_elsewhere(cancel("Reason: Q.850;cause=200"))
    assert not idn.answered_elsewhere(cancel("Reason: SIP;cause=487"))
    assert not idn.answered_elsewhere(cancel())
    assert not idn.answered_elsewhere("BYE sip:x SIP/2.0\r\nReason: SIP;cause=200\r\n\r\n")
    assert not idn.answered_elsewhere(cancel("Reason: SIP;cause=\"200"))


# --- the same through the real unit (lab: Kamailio, a pjsua2 caller, the unit as its own process) ------

from kiosk.lab.proc import wait_until  # noqa: E402

from .conftest import needs_lab  # noqa: E402

def _line_option(unit, key: str, value: str) -> None:  # type: ignore[no-untyped-def]
    unit.profile_text = unit.profile_text.replace("[[line]]\n", f"[[line]]\n{key} = {value}\n")


SERVER_HEADERS = [
    ("P-Asserted-Identity", '"Front Desk, Main" <sip:100@pbx.example>'),
    ("History-Info", '"Sales Queue" <sip:500@pbx.example>;index=1'),
    ("History-Info", "<sip:1001@127.0.0.1>;index=1.1"),
    ("Call-Info", "<sip:pbx.example>;answer-after=2"),
]


def _row(events, pred=lambda r: True):  # type: ignore[no-untyped-def]
    """The first incoming row the desk showed (`kiosk ctl events`), as the desk made it from IncomingCall."""
    return events.wait("row", lambda e: e["row"]["direction"] == "in" and pred(e["row"]))["row"]


@pytest.mark.parametrize("intercom_line", [True, False])
@needs_lab
@pytest.mark.lab
def test_identity_via_and_intercom_from_the_server(unit_factory, pjpeer, kamailio, unit_events,
                                                   intercom_line: bool) -> None:
    caller = pjpeer("2001", tone_hz=0, answer="auto")
    unit = unit_factory(start=False)
    if intercom_line:
        _line_option(unit, "intercom", "true")
    unit.start()
    events = unit_events(unit)
    caller.dial(f"sip:1001@{kamailio.address}", headers=SERVER_HEADERS)
    row = _row(events)
    assert row["remote"] == "Front Desk, Main <sip:100@pbx.example>", row  # Kamailio (127.0.0.1) vouches
    assert row["via"] == "Sales Queue"
    assert row["intercom"] is intercom_line
    log = unit.log_tail(300)
    assert "for Sales Queue" in log
    assert ("(intercom)" in log) is intercom_line
    assert ("intercom request ignored" in log) is not intercom_line


@needs_lab
@pytest.mark.lab
def test_identity_from_a_host_that_is_not_an_identity_host_is_ignored(unit_factory, pjpeer, kamailio,
                                                                      unit_events) -> None:
    caller = pjpeer("2001", tone_hz=0, answer="auto")
    unit = unit_factory(start=False, sip_extra='identity_hosts = ["192.0.2.7"]')
    _line_option(unit, "intercom", "true")
    unit.start()
    events = unit_events(unit)
    caller.dial(f"sip:1001@{kamailio.address}", headers=SERVER_HEADERS)
    row = _row(events)
    assert "2001" in row["remote"] and "Front Desk" not in row["remote"], row  # From, not the PAI
    assert row["via"] == "Sales Queue"  # where it was diverted from is no claim about the caller
    assert row["intercom"] is False
    assert "not from an identity host" in unit.log_tail(300)


@needs_lab
@pytest.mark.lab
def test_dnd_refuses_before_any_180_and_says_so(unit_factory, pjpeer, kamailio) -> None:
    caller = pjpeer("2001", tone_hz=0, answer="auto")
    unit = unit_factory()
    assert unit.ctl("dnd", "on").rc == 0
    since = caller.event_count()
    call = caller.dial(f"sip:1001@{kamailio.address}")
    end = caller.wait_event("state", since=since, call=call, state="DISCONNECTED")
    assert end["code"] == 486, end
    codes = [e.get("code") for e in caller.find_events("state", since, call=call)]
    assert 180 not in codes and 183 not in codes, codes  # it never rang
    assert "refused 486 (do not disturb)" in unit.log_tail(300)
    assert unit.ctl("dnd", "off").rc == 0
    again = caller.dial(f"sip:1001@{kamailio.address}")
    caller.wait_event("state", call=again, state="EARLY")  # rings again
    caller.hangup(again)


@pytest.mark.parametrize("reason, elsewhere", [('SIP ;cause=200 ;text="Call completed elsewhere"', True),
                                                ("SIP ;cause=487", False)])
@needs_lab
@pytest.mark.lab
def test_cancel_answered_elsewhere_marks_the_end(unit_factory, pjpeer, kamailio, reason: str,
                                                 elsewhere: bool) -> None:
    caller = pjpeer("2001", tone_hz=0, answer="auto")
    unit = unit_factory()
    call = caller.dial(f"sip:1001@{kamailio.address}")
    caller.wait_event("state", call=call, state="EARLY")
    unit.wait_for(lambda calls: len(calls) == 1)
    caller.hangup(call, headers={"Reason": reason})
    assert wait_until(lambda: not unit.calls(), 5)
    assert ("answered elsewhere" in unit.log_tail(300)) is elsewhere, unit.log_tail(60)
