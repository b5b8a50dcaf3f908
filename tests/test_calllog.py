"""kiosk.calllog: the outcome each ended call is kept with."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kiosk.calllog import Facts, outcome


@dataclass
class R:
    id: int
    direction: str
    answered: float | None = None


@pytest.mark.parametrize(("row", "facts", "expected"), [
    (R(1, "in", 1.0), Facts(), "answered"),
    (R(1, "in", 1.0), Facts(transferred_to="3003"), "transferred"),
    (R(1, "in", 1.0), Facts(conference=True), "answered"),
    (R(1, "in"), Facts(), "missed"),
    (R(1, "in"), Facts(rejected=True), "rejected"),
    (R(1, "in"), Facts(elsewhere=True), "picked-up"),
    (R(1, "out", 1.0), Facts(pickup=True), "picked-up"),
    (R(1, "out"), Facts(code=486), "busy"),
    (R(1, "out"), Facts(code=600), "busy"),
    (R(1, "out"), Facts(code=404), "failed"),
    (R(1, "out"), Facts(code=487), "failed"),
])
def test_outcome(row: R, facts: Facts, expected: str) -> None:
    assert outcome(row, facts) == expected
