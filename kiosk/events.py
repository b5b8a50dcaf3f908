"""What the SIP agent tells the desk, and what the desk tells the front-ends.

Small frozen dataclasses with no behaviour: they cross threads (agent thread ->
desk, desk -> Kivy / GPIO / control socket), so they must be immutable. Every
event serialises to one JSON object with `as_json()` for `kiosk ctl events`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class Event:
    """Base of every event; `kind` is the JSON name."""

    kind: str = "event"

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)  # type: ignore[call-overload]
        data["event"] = self.kind
        return data


# --- agent -> desk ---------------------------------------------------------


@dataclass(frozen=True)
class LineState(Event):
    """A line's registration changed. `code` is the SIP status of the last REGISTER."""

    line: str
    registered: bool
    code: int
    reason: str
    kind = "line"


@dataclass(frozen=True)
class IncomingCall(Event):
    """A call rang on one of our lines (already filtered for trusted hosts)."""

    call: int
    line: str
    remote: str
    #: The original destination of a diverted or queued call (History-Info / Diversion): its display
    #: name ("Sales queue") or number; "" when the call came straight to the line.
    via: str = ""
    #: An intercom request (Call-Info answer-after, Alert-Info auto-answer) from an identity host on a
    #: line that allows it: the desk answers it by itself.
    intercom: bool = False
    answer_after_ms: int | None = None
    #: The SIP status the agent refused it with at once (do-not-disturb); 0: it rings.
    refused: int = 0
    kind = "incoming"


@dataclass(frozen=True)
class CallProgress(Event):
    """A call's SIP state moved. `state`: dialling|ringing|early|talking|ended."""

    call: int
    state: str
    code: int = 0
    reason: str = ""
    remote: str = ""
    #: An unanswered incoming call ended because it was answered elsewhere (CANCEL with Reason cause=200).
    elsewhere: bool = False
    kind = "progress"


@dataclass(frozen=True)
class CallMedia(Event):
    """The call's media direction after an offer/answer: held by us, by them, or active."""

    call: int
    local_hold: bool
    remote_hold: bool
    #: The call has audio flowing (negotiated and active); False when the offer/answer left it none.
    active: bool = True
    kind = "media"


@dataclass(frozen=True)
class TransferProgress(Event):
    """A NOTIFY about a REFER we sent: status code of the transferee's new call."""

    call: int
    code: int
    reason: str
    final: bool
    kind = "transfer"


# --- desk -> front-ends ----------------------------------------------------


@dataclass(frozen=True)
class RowChanged(Event):
    """A row of the call table was added or changed; `row` is `Row.as_json()`."""

    row: dict[str, Any]
    kind = "row"


@dataclass(frozen=True)
class RowRemoved(Event):
    row_id: int
    reason: str = ""
    kind = "row_removed"


@dataclass(frozen=True)
class SelectionChanged(Event):
    rows: tuple[int, ...]
    kind = "selection"


@dataclass(frozen=True)
class ParamsChanged(Event):
    """Line / Number / Route changed."""

    line: str
    number: str
    route: str
    kind = "params"


@dataclass(frozen=True)
class MuteChanged(Event):
    """The operator's microphone was muted or unmuted, from whichever front-end."""

    muted: bool
    kind = "mute"


@dataclass(frozen=True)
class DndChanged(Event):
    """Do-not-disturb was turned on or off (from whichever front-end): incoming calls are refused while on."""

    on: bool
    kind = "dnd"


@dataclass(frozen=True)
class HistoryChanged(Event):
    """A call was written to the call history when it ended (`entry`, kiosk.history's JSON of it), or the
    missed calls were seen (`entry` empty). `missed_unseen`: the missed calls not yet seen."""

    entry: dict[str, Any]
    missed_unseen: int
    kind = "history"


@dataclass(frozen=True)
class NumberRequired(Event):
    """An action needs a number and the Number field is empty: ask the operator."""

    action: str
    kind = "number_required"


@dataclass(frozen=True)
class ActionFailed(Event):
    """An action was refused or failed.

    `action` is the action id (kiosk.commands), `code` and `params` the reason
    for a catalogue (kiosk.i18n), `reason` the same in English. `command` is
    the id of the command that failed, when a command did (a transfer's final
    NOTIFY, say, fails the transfer long after its command was answered).
    """

    action: str
    reason: str
    row_id: int | None = None
    code: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    command: int | None = None
    kind = "action_failed"


@dataclass(frozen=True)
class ActionDone(Event):
    """A command that was accepted and waited for SIP has done what it was asked."""

    action: str
    command: int
    row_id: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    kind = "action_done"


@dataclass(frozen=True)
class AvailabilityChanged(Event):
    """Which actions can act on the selection now: action id -> None, or why not
    (`{"code", "params", "message", "row"}`)."""

    available: dict[str, Any]
    kind = "available"


@dataclass(frozen=True)
class Alert(Event):
    """Something the operator or the maintainer should know that is not a call event.

    Raised by the agent (audio device lost) or the desk (recording stopped); the
    desk passes the agent's on to the front-ends as they are, as it does LineState.
    """

    message: str
    code: str = "alert"
    params: dict[str, Any] = field(default_factory=dict)
    kind = "alert"


@dataclass(frozen=True)
class ProfileChanged(Event):
    """A new profile is in force (a reload: SIGHUP, `kiosk ctl reload`, the file changed, provisioning),
    or a change that waited for a call has now been made.

    `applied`: what changed, in plain words; `waiting`: what waits for a call to end (a changed
    line registers again, a removed line goes); `restart`: what was changed in the file but takes
    effect only when the unit restarts. A front-end that shows lines, routes or labels reads the
    snapshot again (`kiosk ctl calls`).
    """

    source: str
    applied: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    kind = "profile"


# --- front-end side: the unit seen over the control socket -----------------


@dataclass(frozen=True)
class LinkChanged(Event):
    """A front-end in its own process lost (or regained) the unit's control socket.

    Never emitted by the desk: kiosk.ui.remote.RemoteDesk raises it for the panel.
    `snapshot` is the desk's snapshot read on reconnecting (None while the link is down).
    """

    connected: bool
    reason: str = ""
    snapshot: dict[str, Any] | None = None
    kind = "link"


def _event_classes() -> dict[str, type[Event]]:
    found: dict[str, type[Event]] = {}
    pending = list(Event.__subclasses__())
    while pending:
        cls = pending.pop()
        if dataclasses.is_dataclass(cls):
            found[cls.kind] = cls
        pending.extend(cls.__subclasses__())
    return found


#: JSON name (`"event"` of a `kiosk ctl events` line) -> the event class.
KINDS: dict[str, type[Event]] = _event_classes()


def from_json(data: dict[str, Any]) -> Event | None:
    """The event a `kiosk ctl events` line stands for (the inverse of `as_json`); None for a
    kind this code does not know (a newer unit) or a line whose fields do not fit."""
    cls = KINDS.get(str(data.get("event")))
    if cls is None:
        return None
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name]
        if isinstance(value, list) and str(f.type).startswith("tuple"):
            value = tuple(value)  # JSON has no tuples: SelectionChanged.rows
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except TypeError:  # a required field missing
        return None
