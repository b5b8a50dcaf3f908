"""Which tone the unit plays now: the desk's rule, from the call table alone.

The desk asks after every change (one pass per turn of its loop) and tells the
agent only when the answer differs, so a ring starts with the row that rings and
stops with the event that ends its ringing: answered, rejected, given up by the
caller, picked up elsewhere. The agent only plays what it is told.

- An incoming call rings while nothing is in conversation; with a call in
  conversation (talking, consulting, in conference, or held by the far end)
  it gives the short call-waiting tone in the operator's ear instead, so the
  customer's words are not drowned.
- A call waiting to be answered by itself (auto-answer, intercom) does not ring:
  it beeps once when it is answered.
- An outgoing call that rings at the far end plays ringback, unless the far end
  sends audio of its own (early media: an announcement, its own ringback).
- Do-not-disturb: calls are refused before they ring, so nothing rings.
"""

from __future__ import annotations

from typing import Iterable, Protocol

RING, WAITING, RINGBACK = "ring", "waiting", "ringback"


class RowLike(Protocol):
    id: int
    direction: str
    state: str
    answered: float | None
    local_hold: bool
    early_media: bool


def in_conversation(row: RowLike) -> bool:
    """Answered, and not put on hold by the operator: the operator hears this call."""
    return row.answered is not None and not row.local_hold


def wanted_tone(rows: Iterable[RowLike], quiet: Iterable[int] = ()) -> str | None:
    """The tone for this call table; `quiet`: rows that must not ring (answered by themselves soon)."""
    rows = list(rows)
    silent = set(quiet)
    ringing = [r for r in rows if r.direction == "in" and r.state == "ringing" and r.id not in silent]
    if ringing:
        return WAITING if any(in_conversation(r) for r in rows) else RING
    if any(r.direction == "out" and r.state == "ringing" and not r.early_media for r in rows):
        return RINGBACK
    return None
