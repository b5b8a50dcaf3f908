"""The provisioned profile: one TOML file parsed and validated once into typed objects.

Everything else in the unit reads these frozen dataclasses, never the raw TOML,
so a mistake in provisioning is caught here with a message that names the file,
the key and what would be right, instead of surfacing later as a SIP failure.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import ipaddress
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

#: pjsua2 2.15 (the x86_64 wheel) aborts the process on the 9th Account.create().
MAX_ACCOUNTS = 8
#: PJSUA_MAX_CALLS compiled into the wheel; a 5th call is refused by pjsua2.
MAX_CALLS = 4


@dataclass(frozen=True)
class Operator:
    name: str = "Operator"
    language: str = "en"  # "ru" | "en"


@dataclass(frozen=True)
class Sip:
    listen: str = "127.0.0.1:5070"  # host:port for UDP and TCP
    trusted: tuple[str, ...] = ("127.0.0.1",)
    user_agent: str = "kiosk"
    default_route: str | None = None

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True)
class Line:
    id: str
    label: str
    uri: str  # sip:1001@example.org
    registrar: str  # sip:example.org:5060
    username: str
    password: str = field(default="", repr=False)
    proxy: str | None = None  # sip:host:port (outbound proxy)

    @property
    def domain(self) -> str:
        """The host part of the line's URI: where bare numbers are dialled."""
        rest = self.uri.split(":", 1)[1]
        return rest.split("@", 1)[-1].split(";", 1)[0]


@dataclass(frozen=True)
class Route:
    id: str
    label: str
    line: str
    prefix: str = ""
    proxy: str | None = None  # sip:host:port of a trunk; calls go there directly


@dataclass(frozen=True)
class Recording:
    always: bool = False
    directory: Path = Path("/var/lib/kiosk/recordings")
    min_free_mb: int = 50
    max_age_days: int | None = None
    max_total_mb: int | None = None


@dataclass(frozen=True)
class Pickup:
    prefix: str = "*8"


@dataclass(frozen=True)
class Control:
    socket: Path = Path("/run/kiosk/control.sock")


@dataclass(frozen=True)
class Audio:
    device: str | int | None = None  # None / "none": no local audio (null device)


@dataclass(frozen=True)
class Gpio:
    hold: int | None = None
    connect: int | None = None
    transfer: int | None = None
    conference: int | None = None
    record: int | None = None
    answer: int | None = None
    hangup: int | None = None
    led_ringing: int | None = None
    led_recording: int | None = None


@dataclass(frozen=True)
class Profile:
    path: Path
    operator: Operator
    sip: Sip
    lines: tuple[Line, ...]
    routes: tuple[Route, ...]
    recording: Recording = Recording()
    pickup: Pickup = Pickup()
    control: Control = Control()
    audio: Audio = Audio()
    gpio: Gpio = Gpio()

    def line(self, line_id: str) -> Line:
        for line in self.lines:
            if line.id == line_id:
                return line
        raise KeyError(line_id)

    def route(self, route_id: str) -> Route:
        for route in self.routes:
            if route.id == route_id:
                return route
        raise KeyError(route_id)

    @property
    def accounts(self) -> int:
        """How many pjsua2 accounts this profile needs (see `accounts_needed`)."""
        return accounts_needed(self.lines, self.routes)
