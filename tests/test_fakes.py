"""The fakes against what they stand for: FakeAgent and the real pjsua2 agent both implement
every method of the desk's `Agent` protocol with the protocol's parameters.

The desk's fast tests are only as good as the fake is faithful. A method the
protocol gained but the fake lacks (as `mute` once did) makes the desk's tests
run a path the unit never takes; a parameter renamed on one side breaks a
keyword call on the other. Both are caught here, in milliseconds.
"""

from __future__ import annotations

import inspect
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from kiosk.desk import Agent

from .fakes import FakeAgent, make_profile, own_tmp_path

#: Every method the desk may call on its agent, by name.
PROTOCOL = sorted(name for name, value in vars(Agent).items() if inspect.isfunction(value) and not name.startswith("_"))


def parameters(cls: type, name: str) -> list[tuple[str, Any, Any]]:
    """(name, kind, default) of each parameter of cls.name: what a caller depends on (not the annotations)."""
    method = getattr(cls, name, None)
    assert method is not None, f"{cls.__qualname__} has no {name}(), which the desk's Agent protocol requires"
    assert callable(method), f"{cls.__qualname__}.{name} is not a method"
    return [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]


@pytest.fixture(scope="module")
def real_agent() -> type:
    """The pjsua2 agent class, imported only here: without pjsua2 only its half is skipped."""
    pytest.importorskip("pjsua2", reason="pjsua2 is not installed: the real agent's half of this check is skipped")
    from kiosk.agent.thread import PjAgent

    return PjAgent


def test_the_protocol_is_read_whole() -> None:
    # If Agent stopped being a plain class of methods, the checks below would compare nothing.
    assert {"start", "stop", "dial", "answer", "hangup", "mute"} <= set(PROTOCOL)


@pytest.mark.parametrize("name", PROTOCOL)
def test_fake_agent_has_the_protocol_method_with_its_parameters(name: str) -> None:
    assert parameters(FakeAgent, name) == parameters(Agent, name)


@pytest.mark.parametrize("name", PROTOCOL)
def test_real_agent_has_the_protocol_method_with_its_parameters(real_agent: type, name: str) -> None:
    assert parameters(real_agent, name) == parameters(Agent, name)


def test_fake_mute_is_recorded_and_succeeds() -> None:
    agent = FakeAgent()
    fut: Future[None] = agent.mute(True)
    assert fut.done() and fut.result() is None
    agent.mute(False)
    assert agent.received == [("mute", True), ("mute", False)]
    assert agent.requests("mute") == [(True,), (False,)]


def test_fake_mute_can_be_scripted_to_fail_like_the_others() -> None:
    agent = FakeAgent()
    agent.fail_next("mute", "this unit has no headset configured ([audio] device)")
    assert "no headset" in str(agent.mute(True).exception())


def test_make_profile_writes_only_in_the_tests_own_tmp_path(tmp_path: Path) -> None:
    profile = make_profile()
    assert own_tmp_path() == tmp_path
    assert profile.recording.directory.is_relative_to(tmp_path)
    assert profile.control.socket.is_relative_to(tmp_path)
    given = make_profile(recordings=tmp_path / "rec", socket=tmp_path / "s.sock")
    assert (given.recording.directory, given.control.socket) == (tmp_path / "rec", tmp_path / "s.sock")
