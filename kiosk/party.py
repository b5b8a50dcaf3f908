"""The remote party of a call as the operator reads it: a display name and a number.

A row's `remote` is what SIP gave (`"Alice" <sip:2001@pbx;user=phone>`,
`sip:2001@10.0.0.1`, `tel:+7495...`); the panel, the banner and the messages
show `Alice` and `2001`. Parsing here, once, so that every front-end names a
call the same way.
"""

from __future__ import annotations

import re
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


#: A quoted display name at the start of a name-addr: `"Smith, \\"JJ\\"" <sip:...>`.
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"\s*')


def _uri(text: str) -> tuple[str, str]:
    """(user part, host) of a SIP or tel URI; (the whole address, "") when it has no user part."""
    text = text.strip()
    for scheme in ("sips:", "sip:", "tel:"):
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
            break
    text = text.split("?", 1)[0]  # headers
    user, at, host = text.partition("@")  # an `@` in the user part is escaped (%40)
    if not at:
        return unquote(text.split(";", 1)[0]), ""
    user = user.split(";", 1)[0].split(":", 1)[0]  # user parameters (`+1234;npdi`), a password
    return unquote(user), host.split(";", 1)[0]


def party(remote: str) -> Party:
    """`remote` (a name-addr or a bare URI) as a Party."""
    text = (remote or "").strip()
    name = ""
    quoted = _QUOTED.match(text)
    if quoted:
        name = re.sub(r"\\(.)", r"\1", quoted.group(1))  # quoted-pairs: \" and \\
        text = text[quoted.end():]
    lt = text.find("<")
    if lt >= 0:
        if not quoted:
            name = text[:lt]
        gt = text.find(">", lt)
        text = text[lt + 1:gt if gt >= 0 else len(text)]  # header parameters after `>` (;tag=) dropped
    number, host = _uri(text)
    return Party(name.strip(), number, host)
