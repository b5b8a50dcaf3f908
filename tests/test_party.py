"""The remote party of a call (kiosk.party): what SIP gave, as the table, the banner and the messages name it."""

from __future__ import annotations

import pytest

from kiosk.party import Party, party


@pytest.mark.parametrize(("remote", "name", "number", "host"), [
    # name-addr with a quoted display name, URI parameters inside <>, header parameters after it
    ('"Alice" <sip:2001@pbx.test;user=phone>', "Alice", "2001", "pbx.test"),
    ('"Alice Smith" <sip:2001@pbx.test>;tag=a83f', "Alice Smith", "2001", "pbx.test"),
    ('  "Alice"<sip:2001@pbx.test>  ', "Alice", "2001", "pbx.test"),
    # quoted-pairs in the display name: \" and \\ (and any escaped character)
    (r'"Smith, John \"JJ\"" <sip:2001@pbx.test>', 'Smith, John "JJ"', "2001", "pbx.test"),
    (r'"back\\slash" <sip:2001@pbx.test>', "back\\slash", "2001", "pbx.test"),
    (r'"\A\l\i\c\e" <sip:2001@pbx.test>', "Alice", "2001", "pbx.test"),
    # what only a quoted name may hold: <, >, a comma, Cyrillic
    ('"a <b> c" <sip:2001@pbx.test>', "a <b> c", "2001", "pbx.test"),
    ('"Алиса, ресепшн" <sip:2001@pbx.test>', "Алиса, ресепшн", "2001", "pbx.test"),
    # an unquoted display name; none at all
    ("Alice Smith <sip:2001@pbx.test>", "Alice Smith", "2001", "pbx.test"),
    ("<sip:2001@pbx.test>", "", "2001", "pbx.test"),
    ('"" <sip:2001@pbx.test>', "", "2001", "pbx.test"),
    # bare URIs: sip, sips, any case of the scheme, a port, parameters, headers, a password
    ("sip:2001@10.0.0.1", "", "2001", "10.0.0.1"),
    ("sips:2001@pbx.test:5061;transport=tls", "", "2001", "pbx.test:5061"),
    ("SIP:2001@PBX.TEST", "", "2001", "PBX.TEST"),
    ("sip:2001@pbx.test?Subject=hi&Priority=urgent", "", "2001", "pbx.test"),
    ("sip:2001:secret@pbx.test", "", "2001", "pbx.test"),
    ("sip:%2B74951234567@pbx.test", "", "+74951234567", "pbx.test"),  # escaped user part
    ("sip:+74951234567;npdi;rn=+1@pbx.test;user=phone", "", "+74951234567", "pbx.test"),  # user parameters
    # tel: URIs have no host
    ("tel:+74951234567", "", "+74951234567", ""),
    ("tel:+1-201-555-0123;phone-context=example.com", "", "+1-201-555-0123", ""),
    ('"Office" <tel:+74951234567>', "Office", "+74951234567", ""),
    # no user part: the address itself stands for the number
    ("sip:pbx.test", "", "pbx.test", ""),
    ("<sip:pbx.test;transport=udp>", "", "pbx.test", ""),
    # a plain number, and nothing
    ("2001", "", "2001", ""),
    ("", "", "", ""),
    ("   ", "", "", ""),
])
def test_party_of_what_sip_gave(remote: str, name: str, number: str, host: str) -> None:
    assert party(remote) == Party(name, number, host)


def test_none_is_nobody() -> None:
    assert party(None) == Party("", "", "")  # type: ignore[arg-type]  (a row without a remote)


@pytest.mark.parametrize(("remote", "text", "title"), [
    ('"Alice" <sip:2001@pbx.test>', "Alice (2001)", "Alice"),
    ("sip:2001@pbx.test", "2001", "2001"),
    ('"2001" <sip:2001@pbx.test>', "2001", "2001"),  # the name is the number: said once
    ('"Office" <sip:pbx.test>', "Office (pbx.test)", "Office"),
    ("", "", ""),
])
def test_text_and_title(remote: str, text: str, title: str) -> None:
    who = party(remote)
    assert (who.text, who.title) == (text, title)


def test_text_without_a_number_falls_back_to_the_name_or_the_host() -> None:
    assert Party("Alice", "", "pbx.test").text == "Alice" and Party("Alice", "", "pbx.test").title == "Alice"
    assert Party("", "", "pbx.test").text == "pbx.test" and Party("", "", "pbx.test").title == "pbx.test"
