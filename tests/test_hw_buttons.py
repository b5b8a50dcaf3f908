"""GPIO buttons and LEDs on gpiozero's MockFactory: press the pin, assert what the desk asked the agent."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from gpiozero import Button, Device
from gpiozero.pins.mock import MockFactory

from hw.buttons import Buttons, start_buttons
from kiosk import commands
from kiosk import events as ev
from kiosk.control import ControlServer
from kiosk.desk import Desk
from kiosk.ui.remote import RemoteDesk

from .conftest import needs_lab
from kiosk.profile import Gpio

from .fakes import FakeAgent

PINS = Gpio(hold=5, connect=6, transfer=13, conference=16, record=19, answer=20, hangup=21,
            dnd=12, led_ringing=23, led_recording=24, led_dnd=25)


@pytest.fixture
def factory() -> MockFactory:
    return MockFactory()


@pytest.fixture
def buttons(desk: Desk, factory: MockFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Buttons]:
    import hw.buttons

    monkeypatch.setattr(hw.buttons, "HOLD_TIME", 0.3)  # a long press as the unit has it, only shorter
    b = Buttons(desk, PINS, pin_factory=factory)
    yield b
    b.close()


def press(factory: MockFactory, buttons: Buttons, pin: int | None) -> None:
    """A short press and release, then wait until the desk has been given the command."""
    assert pin is not None
    factory.pin(pin).drive_low()
    factory.pin(pin).drive_high()
    assert buttons.idle(), "the button worker did not finish"


def eventually(check: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def caller(agent: FakeAgent) -> int:
    """An incoming call, answered by the far end's state: talking."""
    call = agent.ring()
    agent.talking(call)
    return call


# --- each key is the desk command a touch would send -----------------------------------


def test_answer_and_hangup_keys_answer_and_hang_up_the_ringing_call(
    factory: MockFactory, buttons: Buttons, agent: FakeAgent
) -> None:
    call = agent.ring()
    press(factory, buttons, PINS.answer)
    assert agent.requests("answer") == [(call,)]
    press(factory, buttons, PINS.hangup)
    assert agent.requests("hangup") == [(call,)]


def test_hold_key_holds_and_connect_key_takes_the_call_back(
    factory: MockFactory, buttons: Buttons, agent: FakeAgent, desk: Desk
) -> None:
    call = caller(agent)
    press(factory, buttons, PINS.hold)
    assert agent.requests("hold") == [(call,)]
    assert desk.rows[call].local_hold
    press(factory, buttons, PINS.connect)
    assert agent.requests("unhold") == [(call,)]


def test_conference_key_holds_the_caller_and_dials_the_number(
    factory: MockFactory, buttons: Buttons, agent: FakeAgent, desk: Desk
) -> None:
    call = caller(agent)
    desk.set("number", "2003")
    press(factory, buttons, PINS.conference)
    assert agent.requests("hold") == [(call,)]
    assert [r[2] for r in agent.requests("dial")] == ["sip:2003@pbx.test"]


def test_conference_key_without_a_number_is_refused_by_the_desk(
    factory: MockFactory, buttons: Buttons, agent: FakeAgent, seen: list
) -> None:
    caller(agent)
    press(factory, buttons, PINS.conference)
    assert agent.requests("dial") == []
    assert any(isinstance(e, (ev.NumberRequired, ev.ActionFailed)) for e in seen)


def test_transfer_key_consults_from_the_selected_call_not_the_open_consultation(
    factory: MockFactory, buttons: Buttons, agent: FakeAgent, desk: Desk
) -> None:
    """The issue: with a consultation open on rows 1 -> 2 and row 3 selected, a short Transfer
    confirmed the consultation of rows 1 and 2 (the key decided by `desk.consults`). It is
    `transfer next` now, and the desk consults from the call the operator selected."""
    first = caller(agent)
    assert desk.transfer("consult", "2002").wait().ok
    (second, *_), = agent.requests("dial")
    agent.talking(second)
    assert desk.consults == {second: first}
    third = agent.ring("sip:2003@pbx.test")
    assert desk.select([third]).ok
    assert desk.answer().wait().ok  # holds the consulted party: one conversation in the headset
    agent.talking(third)
    desk.set("number", "2004")
    holds = len(agent.requests("hold"))

    press(factory, buttons, PINS.transfer)

    assert agent.requests("transfer_replaces") == []  # the 1 -> 2 consultation was left alone
    assert agent.requests("hold")[holds:] == [(third,)]
    assert [r[2] for r in agent.requests("dial")] == ["sip:2002@pbx.test", "sip:2004@pbx.test"]
    fourth = agent.requests("dial")[1][0]
    assert desk.consults == {second: first, fourth: third}


def test_transfer_key_consults_then_confirms(
    factory: MockFactory, buttons: Buttons, agent: FakeAgent, desk: Desk
) -> None:
    b = caller(agent)
    desk.set("number", "2003")
    press(factory, buttons, PINS.transfer)
    assert agent.requests("hold") == [(b,)]
    (c, *_), = agent.requests("dial")
    assert desk.consults == {c: b}
    agent.talking(c)
    press(factory, buttons, PINS.transfer)
    assert len(agent.requests("transfer_replaces")) == 1
    assert agent.requests("transfer") == []


def test_long_press_on_transfer_is_a_quick_transfer_to_the_number(
    factory: MockFactory, buttons: Buttons, agent: FakeAgent, desk: Desk
) -> None:
    call = caller(agent)
    desk.set("number", "2002")
    factory.pin(PINS.transfer).drive_low()
    assert eventually(lambda: bool(agent.requests("transfer"))), "no quick transfer after a long press"
    factory.pin(PINS.transfer).drive_high()
    assert buttons.idle()
    assert [r[0] for r in agent.requests("transfer")] == [call]
    assert agent.requests("dial") == []  # the release after a long press does not also consult


def test_record_key_starts_then_stops_recording(
    factory: MockFactory, buttons: Buttons, agent: FakeAgent, desk: Desk
) -> None:
    call = caller(agent)
    press(factory, buttons, PINS.record)
    (started,) = agent.requests("record")
    assert started[0] == call and started[1] is not None
    assert desk.rows[call].recording
    press(factory, buttons, PINS.record)
    assert agent.requests("record")[1] == (call, None)
    assert not desk.rows[call].recording


# --- a key is never queued behind another action's SIP ----------------------------------


def pin_press(factory: MockFactory, pin: int | None) -> None:
    """A short press and release, without waiting for anything."""
    assert pin is not None
    factory.pin(pin).drive_low()
    factory.pin(pin).drive_high()


def hangup_reaches_the_agent_within(agent: FakeAgent, factory: MockFactory, limit: float) -> tuple[int, float]:
    """Press Hang up; the row the agent was asked to hang up, and how long that took (s)."""
    before = len(agent.requests("hangup"))
    started = time.perf_counter()
    pin_press(factory, PINS.hangup)
    while len(agent.requests("hangup")) == before:
        if time.perf_counter() - started > 2:
            raise AssertionError("the hangup never reached the agent")
        time.sleep(0.0005)
    took = time.perf_counter() - started
    assert took < limit, f"the hangup took {took * 1000:.1f} ms"
    return agent.requests("hangup")[before][0], took


def test_hangup_overtakes_a_pickup_waiting_for_its_invite(
    factory: MockFactory, buttons: Buttons, agent: FakeAgent, desk: Desk
) -> None:
    stalled = agent.stall_next("dial")
    picking = desk.submit("pickup", number="2004").result(1)
    assert picking.pending
    row = picking.data["row"]

    hung, _took = hangup_reaches_the_agent_within(agent, factory, 0.1)

    assert hung == row
    assert not stalled.done() and not picking.done.done()  # the pickup still waits for its INVITE
    agent.ended(row, 487, "Request Terminated")
    stalled.set_result(None)
    assert not picking.wait(5).ok  # nothing was picked up
    assert buttons.idle()


def test_hangup_overtakes_a_consultation_being_dialled(
    factory: MockFactory, buttons: Buttons, agent: FakeAgent, desk: Desk
) -> None:
    held = caller(agent)
    desk.set("number", "2003")
    stalled = agent.stall_next("dial")
    pin_press(factory, PINS.transfer)  # transfer next: consult
    assert eventually(lambda: bool(agent.requests("dial")))
    consult = agent.requests("dial")[0][0]
    assert agent.requests("hold") == [(held,)]

    hung, _took = hangup_reaches_the_agent_within(agent, factory, 0.1)

    assert hung == consult  # the consultation being dialled, not the held caller
    assert not stalled.done()
    agent.ended(consult, 487, "Request Terminated")
    stalled.set_result(None)
    assert buttons.idle()


def test_hangup_overtakes_a_conference_join(
    factory: MockFactory, buttons: Buttons, agent: FakeAgent, desk: Desk
) -> None:
    first = caller(agent)
    second = agent.ring("sip:2002@pbx.test")
    assert desk.select([second]).ok and desk.answer().wait().ok
    agent.talking(second)
    assert desk.select([first, second]).ok
    stalled = agent.stall_next("conference")
    pin_press(factory, PINS.conference)
    assert eventually(lambda: bool(agent.requests("conference")))
    assert desk.select([second]).ok  # the operator picks the one to let go

    hung, _took = hangup_reaches_the_agent_within(agent, factory, 0.1)

    assert hung == second
    assert not stalled.done()
    stalled.set_result(None)
    assert buttons.idle()


def test_a_press_never_blocks_gpiozeros_thread(
    factory: MockFactory, buttons: Buttons, agent: FakeAgent, desk: Desk
) -> None:
    caller(agent)
    agent.stall_next("hold")
    started = time.perf_counter()
    pin_press(factory, PINS.hold)  # the callback runs on this thread with the mock pins
    assert time.perf_counter() - started < 0.05
    assert eventually(lambda: bool(agent.requests("hold")))


def test_a_refused_press_is_logged(
    factory: MockFactory, buttons: Buttons, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="kiosk.hw.buttons"):
        press(factory, buttons, PINS.answer)
    assert "button answer refused: no call selected" in caplog.text


# --- the keys bind the command table's actions ------------------------------------------


def test_the_keys_bind_exactly_the_tables_gpio_actions(buttons: Buttons) -> None:
    assert buttons.bound == commands.gpio_bindings()
    assert {a.id for a in buttons.bound.values()} == {a.id for a in commands.ACTIONS.values() if a.gpio}
    assert buttons.bound["transfer"].args == {"mode": "next"}
    assert buttons.bound["transfer:held"].args == {"mode": "quick"}
    assert buttons.bound["record"].args == {"action": "toggle"}


def test_the_keys_work_over_the_control_socket(desk: Desk, agent: FakeAgent, factory: MockFactory) -> None:
    with tempfile.TemporaryDirectory(prefix="kiosk-gpio-") as d, ControlServer(desk, Path(d) / "c.sock") as server:
        remote = RemoteDesk(server.path, desk.profile)
        b = Buttons(remote, PINS, pin_factory=factory)
        try:
            led = factory.pin(PINS.led_ringing)
            call = agent.ring()
            assert eventually(lambda: bool(led.state)), "ringing LED not lit from the unit's events"
            press(factory, b, PINS.answer)
            assert agent.requests("answer") == [(call,)]
            agent.talking(call)
            assert eventually(lambda: not led.state)
            press(factory, b, PINS.record)
            assert desk.rows[call].recording
            press(factory, b, PINS.hangup)
            assert agent.requests("hangup") == [(call,)]
        finally:
            b.close()
            remote.close()


# --- LEDs follow the desk -----------------------------------------------------------


def test_ringing_led_blinks_while_an_incoming_call_rings_and_goes_off_when_answered(
    factory: MockFactory, buttons: Buttons, agent: FakeAgent
) -> None:
    led = factory.pin(PINS.led_ringing)
    assert not led.state
    call = agent.ring()
    assert eventually(lambda: bool(led.state)), "ringing LED not lit"
    press(factory, buttons, PINS.answer)
    agent.talking(call)
    assert eventually(lambda: not led.state)
    changes = len(led.states)
    time.sleep(0.7)  # longer than a blink period: it has stopped, not just blinked off
    assert len(led.states) == changes and not led.state


def test_recording_led_is_lit_while_the_call_is_recorded(
    factory: MockFactory, buttons: Buttons, agent: FakeAgent, desk: Desk
) -> None:
    led = factory.pin(PINS.led_recording)
    call = caller(agent)
    assert not led.state
    assert desk.record("start").wait().ok
    assert eventually(lambda: bool(led.state))
    assert desk.record("stop").wait().ok
    assert eventually(lambda: not led.state)
    assert desk.record("start").wait().ok
    assert eventually(lambda: bool(led.state))
    agent.ended(call)
    assert eventually(lambda: not led.state)


def test_dnd_key_toggles_do_not_disturb_and_its_led_shows_it(
    factory: MockFactory, buttons: Buttons, agent: FakeAgent, desk: Desk
) -> None:
    led = factory.pin(PINS.led_dnd)
    assert not led.state
    press(factory, buttons, PINS.dnd)
    assert eventually(lambda: desk.dnd_on and bool(led.state))
    assert agent.requests("set_dnd") == [(486,)]
    agent.ring()
    assert desk.rows == {}  # refused, never a row
    press(factory, buttons, PINS.dnd)
    assert eventually(lambda: not desk.dnd_on and not led.state)


# --- devices and their life cycle ---------------------------------------------------


def test_an_unconfigured_key_creates_no_device(desk: Desk, factory: MockFactory) -> None:
    b = Buttons(desk, Gpio(hold=5), pin_factory=factory)
    try:
        assert set(b.buttons) == {"hold"} and b.leds == {}
        assert len(factory.pins) == 1
    finally:
        b.close()


def test_close_releases_the_pins_and_stops_following_the_desk(
    desk: Desk, agent: FakeAgent, factory: MockFactory
) -> None:
    b = Buttons(desk, PINS, pin_factory=factory)
    b.close()
    assert all(d.closed for d in [*b.buttons.values(), *b.leds.values()])
    again = Button(PINS.hold, pin_factory=factory)  # would raise GPIOPinInUse if still claimed
    again.close()
    agent.ring()
    assert not factory.pin(PINS.led_ringing).state


def test_start_buttons_without_pins_starts_nothing(desk: Desk) -> None:
    assert start_buttons(desk, Gpio()) is None


def test_start_buttons_on_a_busy_pin_warns_and_releases_what_it_claimed(
    desk: Desk, factory: MockFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(Device, "pin_factory", factory)
    busy = Button(6, pin_factory=factory)
    try:
        with caplog.at_level(logging.WARNING, logger="kiosk.hw.buttons"):
            assert start_buttons(desk, Gpio(hold=5, connect=6)) is None
        assert "GPIO buttons and LEDs are off" in caplog.text
        Button(5, pin_factory=factory).close()  # the hold key claimed before the failure was released
    finally:
        busy.close()


@needs_lab
@pytest.mark.lab  # starts processes
def test_the_unit_runs_with_gpio_keys_in_its_profile(unit_factory) -> None:
    """`kiosk run` on a profile with [gpio] pins (gpiozero's mock pins here) starts the
    buttons, stays up, and stops cleanly."""
    unit = unit_factory(start=False, extra="[gpio]\nhold = 17\nled_ringing = 27\n")
    unit.env = {"GPIOZERO_PIN_FACTORY": "mock"}
    unit.start()
    assert unit.proc is not None and unit.proc.running()
    assert unit.terminate() == 0
    log = unit.log_path.read_text()
    assert "GPIO buttons and LEDs are off" not in log, log[-2000:]
    assert "GPIO: buttons hold=GPIO17, LEDs led_ringing=GPIO27" in log, log[-2000:]
