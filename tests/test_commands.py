"""The one command table (kiosk.commands) and every front-end built from it.

A command added to the table must come with its help text, a desk method, a
`kiosk ctl` subcommand, a RemoteDesk method, and the buttons or keys its
actions declare; these tests fail when one of them is missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from hw.buttons import HELD, Buttons
from kiosk import commands
from kiosk.cli import main as kiosk_main
from kiosk.commands import ACTIONS, COMMANDS, check_args, gpio_bindings, screen_bindings
from kiosk.control import _ctl_args, _ctl_parser
from kiosk.desk import Desk
from kiosk.profile import Gpio
from kiosk.ui.remote import RemoteDesk

from .fakes import make_profile


def words(text: str) -> str:
    """Text with its line breaks and runs of spaces as single spaces (argparse wraps help)."""
    return " ".join(text.split())


def kiosk(*argv: str) -> tuple[int, str]:
    """`kiosk ARGV` in this process: its exit code and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = kiosk_main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue()


# --- the table itself -------------------------------------------------------------------


def test_every_command_and_every_argument_has_a_help_text() -> None:
    for command in COMMANDS.values():
        assert command.help.strip(), f"{command.name} has no help text"
        for arg in command.args:
            assert arg.help.strip(), f"argument {arg.name} of {command.name} has no help text"
            assert arg.type in ("str", "int", "rows", "bool"), (command.name, arg)
            if arg.default is not None and arg.choices:
                assert arg.default in arg.choices, (command.name, arg)


def test_every_action_belongs_to_its_command_and_fits_its_arguments() -> None:
    for action in ACTIONS.values():
        command = COMMANDS[action.command]
        assert action in command.actions
        assert not isinstance(check_args(action.command, dict(action.args)), tuple) or any(
            a.required and a.name not in action.args for a in command.args), action
        assert command.action_for(action.args) == action.id, action


def test_every_command_has_its_desk_method() -> None:
    for name in COMMANDS:
        assert callable(getattr(Desk, f"_{name}", None)), f"the desk has no _{name} for the command {name}"


def test_every_command_has_its_remote_desk_method() -> None:
    for name in COMMANDS:
        if name != "calls":  # RemoteDesk.snapshot(), as on the desk
            assert callable(getattr(RemoteDesk, name, None)), f"RemoteDesk has no {name}()"


# --- the GPIO keys -----------------------------------------------------------------------


def test_every_gpio_key_of_the_table_is_a_profile_key() -> None:
    fields = {f.name for f in dataclasses.fields(Gpio)}
    for key in gpio_bindings():
        assert key.removesuffix(HELD) in fields, f"[gpio] has no key {key.removesuffix(HELD)!r} for {key}"


def test_every_action_with_a_gpio_key_is_bound_by_the_buttons(desk: Desk) -> None:
    every_key = Gpio(**{f.name: 5 + i for i, f in enumerate(dataclasses.fields(Gpio))})
    buttons = Buttons(desk, every_key, pin_factory=MockFactory())
    try:
        assert set(buttons.bound) == set(gpio_bindings())
        assert buttons.bound == gpio_bindings()
        assert {a.id for a in buttons.bound.values()} == {a.id for a in ACTIONS.values() if a.gpio}
    finally:
        buttons.close()


# --- the touchscreen ---------------------------------------------------------------------


def test_every_action_with_a_screen_button_is_a_button_of_the_panel() -> None:
    try:  # Kivy on SDL's offscreen driver, set up as the panel's own tests do
        from .test_ui_panel import make_panel
    except Exception as exc:  # no GL at all on this machine: the panel's own tests cannot run either
        pytest.skip(f"the panel cannot be drawn here: {type(exc).__name__}: {exc}")
    from kivy.core.window import Window

    from .fakes import FakeAgent

    desk = Desk(make_profile(), FakeAgent())
    desk.start()
    panel = make_panel(desk)
    try:
        missing = set(screen_bindings()) - set(panel.buttons)
        assert not missing, f"screen actions without a panel button: {sorted(missing)}"
    finally:
        panel.frontend.close()
        Window.remove_widget(panel)
        desk.close()


# --- kiosk ctl -----------------------------------------------------------------------------


def test_kiosk_ctl_help_lists_every_command_with_its_help() -> None:
    code, out = kiosk("ctl", "--help")
    assert code == 0
    text = words(out)
    for command in COMMANDS.values():
        assert f"{command.name} {words(command.help)}" in text, command.name
    assert "events print the snapshot" in text
    assert "--no-wait" in text and "--socket" in text


def test_kiosk_ctl_transfer_help_shows_the_modes() -> None:
    code, out = kiosk("ctl", "transfer", "--help")
    assert code == 0
    assert "{quick,consult,confirm,next}" in out
    assert words(COMMANDS["transfer"].args[0].help) in words(out)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_subcommands_help_names_its_arguments(name: str) -> None:
    code, out = kiosk("ctl", name, "--help")
    assert code == 0
    text = words(out)
    assert words(COMMANDS[name].help)[1:] in text  # capitalised as a sentence in the description
    for arg in COMMANDS[name].args:
        assert words(arg.help) in text, (name, arg.name)
        for choice in arg.choices:
            assert choice in text


def _argv_for(command: commands.Command) -> list[str]:
    """A command line giving every argument of a command a valid value."""
    samples = {"str": "1002", "int": "3", "rows": "1"}
    argv = [command.name]
    for arg in command.args:
        value = arg.choices[0] if arg.choices else samples.get(arg.type, "true")
        if arg.option and arg.type == "bool":  # a flag: --missed / --no-missed
            argv.append(f"--{arg.name}")
            continue
        argv += [f"--{arg.name}", value] if arg.option else [value]
    return argv


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_subcommand_makes_a_request_the_table_accepts(name: str) -> None:
    command = COMMANDS[name]
    for argv in ([name] if not any(a.required for a in command.args) else [], _argv_for(command)):
        if not argv:
            continue
        ns = _ctl_parser().parse_args(argv)
        args: dict[str, Any] = _ctl_args(ns)
        assert not isinstance(check_args(name, args), tuple), (argv, args, check_args(name, args))
        assert set(args) <= {a.name for a in command.args}
