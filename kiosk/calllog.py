"""What becomes of each call in the call history: the facts the desk notes while a call lives,
and the outcome they add up to when it ends.

The desk notes what only it knows (the operator rejected the call, a transfer
of it succeeded, it joined a conference, it was a pickup, the caller gave up
because another phone answered) and, when the row ends, `outcome()` names it
with one of kiosk.history's outcomes. The history itself is written off the
desk's loop (kiosk.history's writer thread): nothing here touches a disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

ANSWERED, MISSED, REJECTED, BUSY, FAILED = "answered", "missed", "rejected", "busy", "failed"
TRANSFERRED, PICKED_UP, DND = "transferred", "picked-up", "dnd"
OUTCOMES = (ANSWERED, MISSED, REJECTED, BUSY, FAILED, TRANSFERRED, PICKED_UP, DND)

#: Final answers that mean the called party is busy (Busy Here, Busy Everywhere).
BUSY_CODES = frozenset({486, 600})


class RowLike(Protocol):
    id: int
    direction: str
    answered: float | None


@dataclass
class Facts:
    """What the desk noted of one call while it lived."""

    rejected: bool = False  # the operator hung up on it while it rang
    pickup: bool = False  # our own pickup of a call ringing elsewhere
    elsewhere: bool = False  # it stopped ringing because another phone answered it
    transferred_to: str = ""
    conference: bool = False
    code: int = 0  # the SIP status it ended with
    callback_of: int | None = None  # the history entry (a missed call) this call calls back
    extra: dict[str, Any] = field(default_factory=dict)


class CallLog:
    """The facts of every live call, by row id."""

    def __init__(self) -> None:
        self.facts: dict[int, Facts] = {}

    def of(self, row_id: int) -> Facts:
        return self.facts.setdefault(row_id, Facts())

    def pop(self, row_id: int) -> Facts:
        return self.facts.pop(row_id, None) or Facts()


def outcome(row: RowLike, facts: Facts) -> str:
    """The history outcome of a call that has ended."""
    if row.answered is not None:
        if facts.transferred_to:
            return TRANSFERRED
        if facts.pickup:
            return PICKED_UP
        return ANSWERED
    if row.direction == "out":
        return BUSY if facts.code in BUSY_CODES else FAILED
    if facts.rejected:
        return REJECTED
    if facts.elsewhere:
        return PICKED_UP  # answered by another phone: not a call this operator missed
    return MISSED
