"""kiosk.ringer: which tone a call table asks for."""

from __future__ import annotations

from dataclasses import dataclass

from kiosk.ringer import RING, RINGBACK, WAITING, wanted_tone


@dataclass
class R:
    id: int
    direction: str
    state: str
    answered: float | None = None
    local_hold: bool = False
    early_media: bool = False


def test_nothing_plays_on_an_empty_desk() -> None:
    assert wanted_tone([]) is None


def test_an_incoming_call_rings_and_a_call_in_conversation_turns_it_into_the_waiting_tone() -> None:
    ringing = R(1, "in", "ringing")
    assert wanted_tone([ringing]) == RING
    assert wanted_tone([ringing, R(2, "in", "talking", answered=1.0)]) == WAITING
    assert wanted_tone([ringing, R(2, "in", "on hold", answered=1.0, local_hold=True)]) == RING


def test_a_call_about_to_answer_itself_is_quiet() -> None:
    assert wanted_tone([R(1, "in", "ringing")], quiet=[1]) is None


def test_ringback_only_without_early_media_and_never_over_a_ringing_call() -> None:
    out = R(1, "out", "ringing")
    assert wanted_tone([out]) == RINGBACK
    assert wanted_tone([R(1, "out", "ringing", early_media=True)]) is None
    assert wanted_tone([R(1, "out", "dialling")]) is None
    assert wanted_tone([out, R(2, "in", "ringing")]) == RING
