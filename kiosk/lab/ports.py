"""Free loopback ports for the lab's SIP processes.

The lab starts real SIP servers and phones side by side; each needs a port that
is free for UDP *and* TCP (SIP listens on both), chosen just before the process
starts.
"""

from __future__ import annotations

import itertools
import random
import socket

__all__ = ["free_port", "port_is_free"]

# Ephemeral ports the kernel hands out for port 0 (Linux default 32768-60999)
# are avoided so that a port we pick is not grabbed by some client socket a
# moment later; this range sits below them.
_LOW, _HIGH = 20000, 32000
_recent: set[int] = set()


def port_is_free(port: int, host: str = "127.0.0.1", kind: str = "udp+tcp") -> bool:
    """Tell whether `port` on `host` can be bound now for each transport in `kind`."""
    kinds = {k.strip() for k in kind.lower().split("+")}
    unknown = kinds - {"udp", "tcp"}
    if unknown or not kinds:
        raise ValueError(f"kind must be 'udp', 'tcp' or 'udp+tcp', not {kind!r}")
    sockets: list[socket.socket] = []
    try:
        for k in sorted(kinds):
            stype = socket.SOCK_DGRAM if k == "udp" else socket.SOCK_STREAM
            s = socket.socket(socket.AF_INET, stype)
            sockets.append(s)
            if k == "tcp":
                # Lets a port in TIME_WAIT count as free, as the servers we
                # start (kamailio, baresip, sipp) all set SO_REUSEADDR too.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        for s in sockets:
            s.close()


def free_port(host: str = "127.0.0.1", kind: str = "udp+tcp", span: int = 1) -> int:
    """Return a port on `host` free for every transport in `kind` (default UDP and TCP).

    With `span` > 1 the ports port .. port+span-1 are all free (baresip, for
    one, also listens for TLS on its SIP port + 1).
    """
    if span < 1:
        raise ValueError("span must be >= 1")
    start = random.randrange(_LOW, _HIGH - span)
    for port in itertools.chain(range(start, _HIGH - span), range(_LOW, start)):
        block = range(port, port + span)
        # Each port is handed out at most once per process, so two lab parts
        # started back to back never receive the same one.
        if any(p in _recent for p in block):
            continue
        if all(port_is_free(p, host, kind) for p in block):
            _recent.update(block)
            return port
    raise RuntimeError(f"no free {kind} port on {host} in {_LOW}-{_HIGH}")
