"""The `kiosk` command: run, demo, check-profile, ctl, devices.

Heavy imports (pjsua2) happen inside the subcommand that needs them, so
`kiosk ctl` and `kiosk check-profile` start fast and work without them. Kivy is
never imported here: `kiosk run` starts the touchscreen as its own process
(`python -m kiosk.ui`, kept running by kiosk.ui.supervisor).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .profile import Profile

DEFAULT_SOCKET = Path(os.environ.get("KIOSK_SOCKET", "/run/kiosk/control.sock"))
DEMO_SOCKET = Path("/tmp/kiosk-demo/control.sock")


def default_socket() -> Path:
    """The unit's socket; on a machine running only the demo desk, the demo's."""
    if "KIOSK_SOCKET" not in os.environ and not DEFAULT_SOCKET.exists() and DEMO_SOCKET.exists():
        return DEMO_SOCKET
    return DEFAULT_SOCKET

log = logging.getLogger("kiosk")


def _setup_logging(verbose: bool) -> None:
    """journald with structured fields under systemd, else stderr; no known secret in any line (kiosk.journal)."""
    from .journal import setup_logging

    setup_logging(verbose)


def sd_notify(message: str) -> None:
    """Tell systemd (READY=1, WATCHDOG=1, STOPPING=1) when it is listening."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(message.encode(), addr)
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)


def last_good_path(profile_path: Path) -> Path:
    """Where the last profile that loaded cleanly is kept: the state directory (kiosk.reload.state_dir_for:
    $KIOSK_STATE_DIR, systemd's StateDirectory, else beside the profile unless that is /etc)."""
    from .reload import last_good_path as path_of

    return path_of(profile_path)


def _load_good(profile_path: Path) -> "tuple[Profile, Path] | None":
    """The profile and the file it came from (the profile, or its last good copy), or None."""
    from .profile import ProfileError
    from .reload import find_last_good, profile_from_bytes, read_profile_file, state_dir_for, write_last_good

    try:
        data, mode = read_profile_file(profile_path)
        profile = profile_from_bytes(data, profile_path, world_readable=bool(mode & 0o004))
    except ProfileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
            log.error("profile: %s", problem)
        backup = find_last_good(profile_path)
        if backup is None:
            print(f"kiosk: {profile_path} has mistakes and there is no last good profile to run on", file=sys.stderr)
            return None
        try:
            # Its relative paths (password_file, ...) are the profile's: anchored at the profile's place.
            profile = profile_from_bytes(read_profile_file(backup)[0], profile_path)
        except ProfileError:
            print(f"kiosk: the last good profile {backup} does not load either", file=sys.stderr)
            return None
        log.warning("running on the last good profile %s until %s is fixed", backup, profile_path)
        return profile, backup
    try:  # exactly the bytes validated, atomically, never into /etc
        write_last_good(state_dir_for(profile_path), data, f"{profile_path} (start)")
    except (OSError, ValueError) as exc:
        log.warning("cannot keep a last good copy of the profile: %s", exc)
    return profile, profile_path


def load_good_profile(profile_path: Path) -> "Profile | None":
    """The profile, or — when it has mistakes — the last good copy of it, so the unit never goes dark."""
    loaded = _load_good(profile_path)
    return None if loaded is None else loaded[0]


def agent_alive(agent: object, timeout: float = 5.0) -> bool:
    """True when the agent thread runs a request within `timeout` seconds."""
    submit = getattr(agent, "submit", None)
    if submit is None:
        return True
    try:
        submit(lambda: None).result(timeout=timeout)
    except Exception:
        return False
    return True


#: How long (s) `kiosk run` waits for its lines' first registration results before READY=1.
READY_WAIT = 15.0


def lines_settled(desk: Any, timeout: float) -> str:
    """Wait until every line of the profile has registered or failed (or `timeout`); what it came to."""
    from .desk import NOT_YET

    deadline = time.monotonic() + timeout
    while True:
        try:  # the desk loop replaces these values; a copy is enough to look at them
            states = dict(desk.registered)
        except RuntimeError:
            continue
        waiting = [line.id for line in desk.profile.lines
                   if (s := states.get(line.id)) is None or (s.code == 0 and s.reason == NOT_YET)]
        if not waiting:
            ok = sum(1 for line in desk.profile.lines if states[line.id].registered)
            return f"{ok} of {len(desk.profile.lines)} lines registered"
        if time.monotonic() >= deadline:
            return f"lines {', '.join(waiting)} still registering after {timeout:g} s"
        time.sleep(0.02)


def desk_alive(desk: object, timeout: float = 5.0) -> bool:
    """True when the desk's loop runs a step within `timeout` seconds (a wedged loop answers nobody)."""
    on_desk = getattr(desk, "on_desk", None)
    if on_desk is None:
        return True
    try:
        return bool(on_desk(lambda: True, timeout=timeout))
    except Exception:
        return False


def run_unit(profile_path: Path, headless: bool, stop: threading.Event | None = None) -> int:
    """Run the desk unit on a profile until SIGTERM / SIGINT; return the exit code."""
    from .control import ControlServer
    from .desk import AgentError, Desk

    loaded = _load_good(profile_path)
    if loaded is None:
        return 2
    profile, loaded_from = loaded
    from .recordings import startup as recordings_startup

    try:  # before the agent: no recording is in progress, so every broken WAV is a crash's leftover
        recordings_startup(profile.recording)
    except OSError as exc:  # the unit still takes calls; recording will say why it cannot
        log.error("recordings: start-up repair/retention failed in %s: %s", profile.recording.directory, exc)
    from .agent.thread import PjAgent

    from .reload import ReloadService, Reloader, state_dir_for

    desk = Desk(profile, PjAgent(profile))
    state_dir = state_dir_for(profile_path)
    desk.call_history = open_history(profile, state_dir, desk.history_problem)
    desk.contacts = open_directory(profile)
    desk.dnd_file = state_dir / DND_FILE
    from .journal import REDACTOR

    REDACTOR.add_profile(profile)
    REDACTOR.watch(lambda: desk.profile)  # every profile's passwords and tokens, as reloads bring them
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    source = str(profile_path) if loaded_from == profile_path else f"{loaded_from} (last good copy of {profile_path})"
    reloader = Reloader(desk, state_dir_for(profile_path), profile_path, source=source)
    # SIGHUP, `kiosk ctl reload` and a change of the file on disk re-read the profile (kiosk.reload);
    # the handler only writes to a pipe, the reload runs on its own thread.
    reloads = ReloadService(reloader)
    signal.signal(signal.SIGHUP, reloads.signal)
    if dnd_was_on(desk.dnd_file):  # as the operator left it: not even the first call may ring
        desk.preset_dnd()
    try:
        desk.start()
    except AgentError as exc:
        hint = ""
        if "already in use" in str(exc).lower():
            hint = (f" (another program, perhaps another kiosk, listens on port {profile.sip.port}: stop it "
                    f"or give this unit another port in [sip] listen of {profile_path})")
        print(f"kiosk: the SIP agent cannot start on {profile.sip.listen}: {exc}{hint}", file=sys.stderr)
        return 1
    control = ControlServer(desk, profile.control.socket)
    try:
        control.start()
    except OSError as exc:
        print(f"kiosk: cannot open the control socket {profile.control.socket}: {exc}", file=sys.stderr)
        desk.stop()
        return 1
    buttons = None
    if any(pin is not None for pin in vars(profile.gpio).values()):  # gpiozero only on a unit with keys
        from hw.buttons import start_buttons

        # In this process, on the desk itself: a press is one desk.submit (never blocking
        # gpiozero's thread), as a touch is one request on the control socket.
        buttons = start_buttons(desk, profile.gpio)  # None, with a warning, when GPIO cannot be used

    def rebind_keys(old: "Profile", new: "Profile") -> list[str]:
        """A reload that changed [gpio]: the keys and LEDs are let go and taken again on the new pins."""
        nonlocal buttons
        if old.gpio == new.gpio:
            return []
        if buttons is not None:
            buttons.close()
            buttons = None
        if any(pin is not None for pin in vars(new.gpio).values()):
            from hw.buttons import start_buttons as start

            buttons = start(desk, new.gpio)
            return ["GPIO keys and LEDs rebound" if buttons is not None else "GPIO keys and LEDs are off (see the log)"]
        return ["GPIO keys and LEDs released"]

    reloader.hooks.append(rebind_keys)

    def reopen_directory(old: "Profile", new: "Profile") -> list[str]:
        if old.directory == new.directory:
            return []
        desk.contacts = open_directory(new)
        return ["directory: " + ("reopened" if desk.contacts is not None else "none provisioned now")]

    reloader.hooks.append(reopen_directory)
    try:
        reloads.start()
    except OSError as exc:  # no pipe: SIGHUP and the file watch are off, `kiosk ctl reload` still works
        log.error("profile reload on SIGHUP and on file changes is off: %s", exc)
    provisioner = None
    if profile.provisioning is not None:
        from .provisioning import Provisioner

        # At start and every interval_minutes, on its own thread: a new file goes through apply_bytes.
        provisioner = Provisioner(lambda: desk.profile.provisioning, reloader, state_dir_for(profile_path))
        desk.provisioner = provisioner

        def provision_after_reload(old: "Profile", new: "Profile") -> list[str]:
            # SIGHUP / kiosk ctl reload / a file change put the local file in force over the
            # server's profile: ask the server again now rather than at the next interval.
            if threading.current_thread().name != "kiosk-provisioning":
                provisioner.check_soon()
            return []

        reloader.hooks.append(provision_after_reload)
        provisioner.start()
    log.info("unit running: profile %s, control socket %s", profile.path, profile.control.socket)
    hint = f"drive it with `kiosk ctl --socket {profile.control.socket} calls|dial NUMBER|answer|hangup|events`"
    show_panel = False
    if headless:
        log.info("headless: %s", hint)
    else:
        from .ui.display import no_display_reason  # no Kivy import: only looks at the environment

        reason = no_display_reason()
        if reason:
            log.info("running headless: %s; %s", reason, hint)
        show_panel = reason is None
    # READY=1 once every line has registered or failed (systemd's "started" then means the
    # unit can take calls, or its log says why a line cannot), at most READY_WAIT s.
    ready_after = lines_settled(desk, READY_WAIT)
    log.info("ready: %s", ready_after)
    sd_notify("READY=1")
    # systemd's WatchdogSec: ping at half the interval, and only while the agent
    # thread still turns its loop — a wedged pjsua2 gets the unit restarted.
    interval = int(os.environ.get("WATCHDOG_USEC", "0")) / 2e6 or 10.0

    def watchdog() -> None:
        # Short waits: a SIGTERM the kernel hands to another thread only sets a flag, and
        # the handler runs when this (main) thread next wakes, up to a whole wait later.
        due = time.monotonic() + interval
        while not stop.wait(0.25):
            if time.monotonic() < due:
                continue
            due = time.monotonic() + interval
            if not agent_alive(desk.agent):
                log.error("the SIP agent does not answer: not telling systemd we are alive")
            elif not desk_alive(desk):
                log.error("the desk's loop does not answer: not telling systemd we are alive")
            elif panel is not None and not panel.alive():
                log.error("the touchscreen's supervisor has stopped: not telling systemd we are alive")
            else:
                sd_notify("WATCHDOG=1")

    panel = None
    if show_panel:
        # The touchscreen is its own process, a client of the control socket: a crash in SDL,
        # the GL driver or Kivy ends that process, never this one and its calls.
        from .ui.supervisor import PanelSupervisor, fullscreen_wanted

        # The panel reads the file itself: the profile, or the last good copy beside it it runs on.
        panel_profile = loaded_from if loaded_from.parent == profile_path.parent else profile_path
        panel = PanelSupervisor(profile.control.socket, panel_profile, fullscreen_wanted())
        panel.start()
    try:
        watchdog()
    finally:
        sd_notify("STOPPING=1")
        log.info("stopping")
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # stopping: a late SIGHUP must not end the process
        if provisioner is not None:
            provisioner.stop()
        reloads.stop()
        if panel is not None:
            panel.stop()
        if buttons is not None:
            buttons.close()
        control.stop()
        desk.stop()
        if desk.call_history is not None:
            desk.call_history.close()  # what is queued goes to the disk before the process ends
    return 0


#: The file in the state directory that keeps do-not-disturb across restarts ("on" / "off").
DND_FILE = "dnd"


def dnd_was_on(path: Path) -> bool:
    try:
        return path.read_text(encoding="utf-8").strip() == "on"
    except (OSError, UnicodeDecodeError):
        return False


def open_history(profile: "Profile", state_dir: Path, on_error: Any = None) -> Any:
    """The unit's call history (kiosk.history), or None when it cannot be used: the unit then takes calls
    without keeping them, and says why in the log and in `kiosk ctl status`."""
    from .history import History, HistoryError

    settings = profile.history
    path = settings.path or state_dir / "history.db"
    # A write that fails (a full disk) reaches the operator and the log as an alert, from the writer thread.
    history = History(path, settings.max_age_days, settings.max_calls, on_error=on_error)
    try:
        history.open(move_corrupt_aside=True)
    except HistoryError as exc:
        log.error("call history is off: %s", exc, extra={"EVENT": "history_off"})
        HISTORY_PROBLEM["message"] = str(exc)
        return None
    return history


#: Why the history is off (for `kiosk ctl status`), "" when it is in use.
HISTORY_PROBLEM: dict[str, str] = {"message": ""}


def open_directory(profile: "Profile") -> Any:
    """The provisioned directory (kiosk.directory), or None when the profile names no file and no LDAP."""
    settings = profile.directory
    if settings.file is None and not settings.ldap:
        return None
    from .directory import Directory

    directory = Directory(settings)
    for problem in directory.load():  # read once now: the first caller's name must not wait for it
        log.warning("directory: %s", problem, extra={"EVENT": "directory_problem"})
    return directory


def list_audio_devices(profile_path: Path | None) -> int:
    """`kiosk devices`: what PortAudio sees (and 16 kHz support), so a profile can name its headset."""
    from hw.audio import DeviceMissing, import_sounddevice, list_devices, resolve_device

    try:
        devices = list_devices()
    except Exception as exc:  # no PortAudio at all: say so, do not trace back
        print(f"kiosk: cannot list audio devices: {exc}", file=sys.stderr)
        return 1
    for dev in devices:
        print(dev.line())
    if not devices:
        print("no audio devices found")
    if profile_path is not None:
        from .profile import ProfileError, load_profile

        try:
            wanted = load_profile(profile_path).audio.device
        except ProfileError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return 2
        if wanted is None:
            print(f'{profile_path}: [audio] device = "none": no local audio')
            return 0
        try:
            index, info = resolve_device(import_sounddevice(), wanted)
        except DeviceMissing as exc:
            print(f"{profile_path}: {exc} (the unit still runs, on null audio, and keeps looking)")
            return 1
        print(f"{profile_path}: [audio] device {wanted!r} selects {index}: {info['name']}")
    return 0


def _ctl_argv(argv: list[str]) -> list[str] | None:
    """The arguments after `ctl` when the command line is `kiosk [-v] ctl ...`, else None.

    `kiosk ctl` has a parser of its own (kiosk.control, generated from the command
    table): its options (`--socket`, `--no-wait`, `--help`) and subcommands are all
    its own, so everything after `ctl` goes to it untouched.
    """
    i = 0
    while i < len(argv) and argv[i] in ("-v", "--verbose"):
        i += 1
    if i < len(argv) and argv[i] == "ctl":
        return argv[i + 1:]
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `kiosk` console script."""
    ctl_args = _ctl_argv(sys.argv[1:] if argv is None else list(argv))
    if ctl_args is not None:
        from .control import ctl_main

        return ctl_main(ctl_args, default_socket())
    parser = argparse.ArgumentParser(prog="kiosk", description="The operator's call-control desk unit.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p_run = sub.add_parser("run", help="run the desk unit")
    p_run.add_argument("--profile", type=Path, help="the provisioned profile (TOML); none: a demo desk")
    p_run.add_argument("--headless", action="store_true", help="no touchscreen; drive with `kiosk ctl`")

    p_demo = sub.add_parser("demo", help="a demo desk on this machine: Kamailio, far-end phones and the unit")
    p_demo.add_argument("--workdir", type=Path, default=Path("/tmp/kiosk-demo"))
    p_demo.add_argument("--headless", action="store_true")

    p_dev = sub.add_parser("devices", help="list the audio devices (for the profile's [audio] device)")
    p_dev.add_argument("--profile", type=Path, help="also say which device this profile's [audio] device selects")

    p_check = sub.add_parser("check-profile", help="validate a profile; exit 2 with one line per problem")
    p_check.add_argument("file", type=Path)

    # Only listed here: `kiosk ctl ...` is parsed by kiosk.control (see _ctl_argv).
    sub.add_parser("ctl", help="send a command to the running unit (`kiosk ctl --help` lists them)",
                   add_help=False)

    args = parser.parse_args(argv)

    if args.command == "devices":
        return list_audio_devices(args.profile)

    if args.command == "check-profile":
        from .profile import check_profile

        problems = check_profile(args.file)
        for line in problems:
            print(line, file=sys.stderr)
        if not problems:
            print(f"{args.file}: ok")
        return 2 if problems else 0

    _setup_logging(args.verbose)
    faulthandler.enable()  # a crash in pjsua2 leaves a Python stack in the journal
    if args.command == "demo" or (args.command == "run" and args.profile is None):
        from .demo import run_demo

        workdir = getattr(args, "workdir", Path("/tmp/kiosk-demo"))
        return run_demo(workdir, headless=args.headless)
    return run_unit(args.profile, headless=args.headless)


if __name__ == "__main__":
    sys.exit(main())
