"""Test hosts of the lab's own: a network namespace joined to this one by a veth pair.

For what crosses a real network interface (an address that changes, a link
that goes down and up), a test makes a namespace, puts one end of a veth pair
in it and keeps the other here, with addresses from 198.18.0.0/15 (set aside
for testing network devices, RFC 2544) so that nothing can reach outside the
machine. Everything is removed when the test ends, by name, since these are
names the test made itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass


class NetnsError(RuntimeError):
    pass


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if shutil.which("ip") is None:
        return "iproute2 is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    return None


@dataclass
class TestHost:
    """A namespace `name` whose interface `inner` (address `inner_addr`) faces `outer` (`outer_addr`) here."""

    name: str
    outer: str
    inner: str
    outer_addr: str
    inner_addr: str
    prefix: int = 24

    def create(self) -> "TestHost":
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
            _ip("link", "set", self.inner, "netns", self.name)
            _ip("addr", "add", f"{self.outer_addr}/{self.prefix}", "dev", self.outer)
            _ip("link", "set", self.outer, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
            # An address change adds the new address before the old one goes: without this the
            # kernel drops the new (secondary) address together with the old (primary) one.
            for conf in ("all", "default"):
                subprocess.run([*self.exec_prefix(), "sysctl", "-qw", f"net.ipv4.conf.{conf}.promote_secondaries=1"],
                               check=True, capture_output=True)
            _ip("-n", self.name, "addr", "add", f"{self.inner_addr}/{self.prefix}", "dev", self.inner)
            _ip("-n", self.name, "link", "set", self.inner, "up")
            _ip("-n", self.name, "route", "add", "default", "via", self.outer_addr)
        except NetnsError:
            self.remove()
            raise
        return self

    def exec_prefix(self) -> list[str]:
        """argv prefix that runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def readdress(self, new_addr: str) -> None:
        """The host's address changes (as a DHCP renewal would): the new one first, then the old one goes."""
        _ip("-n", self.name, "addr", "add", f"{new_addr}/{self.prefix}", "dev", self.inner)
        _ip("-n", self.name, "addr", "del", f"{self.inner_addr}/{self.prefix}", "dev", self.inner)
        self.inner_addr = new_addr
        _ip("-n", self.name, "route", "replace", "default", "via", self.outer_addr)

    def link(self, up: bool) -> None:
        """The host's link goes down (cable pulled) or up again."""
        _ip("-n", self.name, "link", "set", self.inner, "up" if up else "down")
        if up:
            _ip("-n", self.name, "route", "replace", "default", "via", self.outer_addr)

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def __enter__(self) -> "TestHost":
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.remove()
