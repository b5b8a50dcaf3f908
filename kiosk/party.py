"""The remote party of a call as the operator reads it: a display name and a number.

A row's `remote` is what SIP gave (`"Alice" <sip:2001@pbx;user=phone>`,
`sip:2001@10.0.0.1`, `tel:+7495...`); the panel, the banner and the messages
show `Alice` and `2001`. Parsing here, once, so that every front-end names a
call the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote


@dataclass(frozen=True)
class Party:
    name: str  # the display name ("" when SIP gave none)
    number: str  # the user part of the URI (or the whole address when it has none)
    host: str = ""

    @property
    def text(self) -> str:
        """One line: `Alice (2001)`, or `2001` when there is no name (or the name is the number)."""
        if self.name and self.name != self.number:
            return f"{self.name} ({self.number})" if self.number else self.name
        return self.number or self.host

    @property
    def title(self) -> str:
        """The larger line of two: the name, else the number."""
        return self.name or self.number or self.host


def _uri(text: str) -> tuple[str, str]:
    text = text.strip()
    for scheme in ("sips:", "sip:", "tel:"):
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
            break
    text = text.split(";", 1)[0].split("?", 1)[0]
    user, at, host = text.rpartition("@")
    if not at:
        return unquote(text), ""
    return unquote(user.split(":", 1)[0]), host


def party(remote: str) -> Party:
    """`remote` (a name-addr or a bare URI) as a Party."""
    text = (remote or "").strip()
    name = ""
    if "<" in text and text.rstrip().endswith(">"):
        head, _, uri = text.rstrip()[:-1].partition("<")
        name = head.strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        text = uri
    number, host = _uri(text)
    return Party(name.strip(), number, host)
