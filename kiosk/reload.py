"""Live reload of the profile: SIGHUP, `kiosk ctl reload`, the file changing on disk, provisioning.

Each of them re-reads the profile and, when it is valid, applies it without dropping
a call on a line that stays:

- at once: routes (prefixes, labels, trunks), labels, the default route, the trusted
  hosts, keep-alive and media-timeout settings, recording settings (for the calls
  answered from now on), the pickup prefix, the operator's name and language, the
  GPIO keys and LEDs (rebound);
- when the line has no call: a changed line registers again (pjsua modifies its
  account), a removed line's account is deleted; meanwhile the line keeps working for
  its calls and takes no new one (a removed line), and the operator is told what
  waits (a ProfileChanged event, an alert per line, and the reload's result);
- never while the unit runs (reported as "needs a restart", not applied): see
  RESTART_ONLY.

An invalid profile is refused with every mistake in the log, in the result and in
an alert (code + parameters) for the touchscreen's status line; the unit goes on
with the profile it has. The last good profile is written to the state directory
(`state_dir_for`), atomically (a temporary file, fsync, rename, fsync of the
directory) from exactly the bytes that were validated, and never into /etc.

Threads: a reload reads and validates on the caller's thread (a worker, never the
desk loop or the agent thread); the desk applies its part on its loop
(`Desk.apply_profile`), the agent its part on the agent thread. One reload at a
time (a lock). `ReloadService` is the unit's one thread for the triggers: a
self-pipe written by the SIGHUP handler (async-signal-safe) and by `request()`,
and an inotify watch (inotify_simple) on the profile's directory, so an editor
that replaces the file by a rename is seen as well as one that writes it in place;
changes are debounced (DEBOUNCE_S) and a change that leaves the bytes and mode as
they were is not a reload.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import select
import stat
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import events as ev
from . import i18n
from .profile import MAX_PROFILE_BYTES, Problem, Profile, ProfileError

if TYPE_CHECKING:
    from .desk import Desk

log = logging.getLogger("kiosk.reload")

#: The last good profile, in the state directory.
LAST_GOOD = "last-good-profile.toml"
#: Beside it: where those bytes came from, when, and their SHA-256 (for `kiosk ctl status`).
LAST_GOOD_META = "last-good-profile.json"
#: The production state directory (systemd's StateDirectory=kiosk).
PRODUCTION_STATE_DIR = Path("/var/lib/kiosk")
#: Changes of the profile file closer together than this are one reload.
DEBOUNCE_S = 0.5
#: Without inotify, the file is looked at this often.
POLL_S = 1.0
#: How long a reload waits for the SIP agent to confirm its part.
AGENT_CONFIRM_S = 5.0

#: Profile keys that the running unit cannot take: key -> why (shown with "needs a restart").
RESTART_ONLY: dict[str, str] = {
    "sip.listen": "the SIP sockets and every call's RTP socket are bound to it when the SIP stack starts",
    "sip.user_agent": "pjsua2 takes the User-Agent once, when the SIP stack starts",
    "control.socket": "the control socket is bound at start; the touchscreen, kiosk ctl clients and the "
                      "dialogs file follow that path",
    "audio.device": "the headset bridge and its device process start with the SIP stack; switching the "
                    "device under a call would cut the operator's audio",
}

# English templates of the codes this module says (kiosk/i18n/en.json has the same words once the
# catalogues carry them; until then the message is made from these).
_TEMPLATES = {
    "profile_applied": "new profile from {source} in force (changes: {count})",
    "profile_unchanged": "profile from {source} read again: nothing changed",
    "profile_refused": "profile from {source} refused: {count} mistakes (first: {first}); "
                       "the unit goes on with the profile it has",
    "profile_needs_restart": "{count} profile changes take effect only after a restart: {keys}",
    "line_removal_waits": "line {line} is removed from the profile when its calls end",
    "line_change_waits": "line {line} registers again with its new settings when its calls end",
    "line_removed": "line {line} removed from the profile: its calls have ended",
    "line_changed": "line {line} registers with its new settings: its calls have ended",
    "profile_no_file": "this unit was started without a profile file: there is nothing to read again",
}


def words(code: str, params: dict[str, Any]) -> str:
    """The English message of one of this module's codes (the catalogue's, once it has the code)."""
    if code in i18n.catalogue("en")["codes"]:
        return i18n.message(code, params)
    template = _TEMPLATES.get(code)
    if template is None:
        return i18n.message(code, params)
    try:
        return template.format_map(i18n._Params(params))
    except (ValueError, TypeError, IndexError, AttributeError):
        return i18n.message(code, params)


def _alert(code: str, /, **params: Any) -> ev.Alert:
    """An alert of one of this module's codes, with its English words."""
    return ev.Alert(words(code, params), code=code, params=params)


# --- where the last good profile lives ---------------------------------------------------------


def _under_etc(path: Path) -> bool:
    try:
        resolved = path.resolve()
    except OSError:
        resolved = path.absolute()
    return resolved == Path("/etc") or Path("/etc") in resolved.parents


def state_dir_for(profile_path: Path | None) -> Path:
    """The unit's state directory: $KIOSK_STATE_DIR, else systemd's $STATE_DIRECTORY
    (StateDirectory=kiosk: /var/lib/kiosk), else beside the profile as before (the lab, a
    developer's profile), except that a profile in /etc gets /var/lib/kiosk: nothing is ever
    written into /etc. (The profile has no key of its own for it.)"""
    env = os.environ.get("KIOSK_STATE_DIR", "").strip()
    if env:
        return Path(env)
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0].strip()
    if systemd:
        return Path(systemd)
    if profile_path is None:
        return PRODUCTION_STATE_DIR
    parent = Path(profile_path).absolute().parent
    return PRODUCTION_STATE_DIR if _under_etc(parent) else parent


def last_good_path(profile_path: Path | None, state_dir: Path | None = None) -> Path:
    """Where the last good copy of this profile is kept."""
    return (state_dir or state_dir_for(profile_path)) / LAST_GOOD


def legacy_last_good_path(profile_path: Path) -> Path:
    """Where units before live reload kept it: `.NAME.last-good` beside the profile (still read)."""
    return profile_path.parent / f".{profile_path.name}.last-good"


def find_last_good(profile_path: Path, state_dir: Path | None = None) -> Path | None:
    """The last good copy to fall back on: the state directory's, else an older unit's beside the profile."""
    for path in (last_good_path(profile_path, state_dir), legacy_last_good_path(profile_path)):
        if path.is_file():
            return path
    return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """`path` holds exactly `data` or what it held before, whatever happens: temp file, fsync, rename."""
    if _under_etc(path.parent):
        raise PermissionError(f"{path}: the unit never writes into /etc (set KIOSK_STATE_DIR or StateDirectory=)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def write_last_good(state_dir: Path, data: bytes, source: str) -> Path:
    """Keep `data` (the bytes that were validated) as the last good profile; OSError when it cannot."""
    target = state_dir / LAST_GOOD
    write_atomically(target, data)
    meta = {"source": source, "at": round(time.time(), 3), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}
    write_atomically(state_dir / LAST_GOOD_META, (json.dumps(meta, indent=1) + "\n").encode())
    return target


# --- reading and validating exact bytes --------------------------------------------------------


def read_profile_file(path: Path) -> tuple[bytes, int]:
    """The file's bytes (read once: what is validated is what is kept) and its mode; ProfileError
    with the reason when it cannot be read."""
    from . import profile as profile_module

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_PROFILE_BYTES:
            raise OSError("not a small regular file")
        with open(path, "rb") as f:
            data = f.read(MAX_PROFILE_BYTES + 1)
        return data, st.st_mode
    except (OSError, ValueError):
        # The profile module says why in the words `kiosk check-profile` uses.
        profile_module._read_profile_text(Path(path))
        raise ProfileError([Problem(Path(path), "", None, "cannot be read; check that it is a readable file")]) \
            from None


def profile_from_bytes(data: bytes, path: Path, *, world_readable: bool = False) -> Profile:
    """Validate these exact bytes as the profile at `path` (which anchors its relative paths and
    names it in messages); ProfileError listing every mistake."""
    from . import profile as profile_module

    path = Path(path)

    def fail(message: str, line: int | None = None) -> ProfileError:
        return ProfileError([Problem(path, "", line, message)])

    if len(data) > MAX_PROFILE_BYTES:
        raise fail(f"is {len(data)} bytes, far too big for a profile (at most {MAX_PROFILE_BYTES}); "
                   "is it the right file?")
    if not data.strip():
        raise fail("is empty; a profile needs at least one [[line]] (see kiosk/examples/profile.toml)")
    if b"\0" in data:
        at = data.index(b"\0")
        raise fail("is a binary file, not TOML text; give the profile .toml file", data[:at].count(b"\n") + 1)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise fail(f"is not UTF-8 text (byte 0x{data[e.start]:02x}); save it as UTF-8",
                   data[: e.start].count(b"\n") + 1) from None
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError([profile_module._syntax_problem(path, text, str(e))]) from None
    except RecursionError:
        raise fail("values are nested too deeply to read; a profile needs at most a list of strings") from None
    return profile_module._Builder(path, text, world_readable=world_readable).build(parsed)


# --- what changed --------------------------------------------------------------------------


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, Path)):
        return repr(str(value))
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _get(profile: Profile, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(profile, section), name)


def in_force(running: Profile, new: Profile) -> tuple[Profile, list[str]]:
    """`new` as the running unit can take it (the RESTART_ONLY keys as `running` has them), and
    what differs in those keys, in words."""
    restart = [f"{key}: {_show(_get(running, key))} -> {_show(_get(new, key))} (needs a restart: {why})"
               for key, why in RESTART_ONLY.items() if _get(running, key) != _get(new, key)]
    sip = dataclasses.replace(new.sip, listen=running.sip.listen, user_agent=running.sip.user_agent)
    pinned = dataclasses.replace(new, sip=sip, control=running.control, audio=running.audio)
    return pinned, restart


_SECRET = ("password",)
_LINE_SIP = ("uri", "registrar", "username", "password", "proxy")


def describe(old: Profile, new: Profile) -> list[str]:
    """What differs between two profiles, in plain words (no password ever shown), RESTART_ONLY aside."""
    out: list[str] = []
    for section in ("operator", "sip", "recording", "pickup", "gpio"):
        a, b = getattr(old, section), getattr(new, section)
        for f in dataclasses.fields(a):
            key = f"{section}.{f.name}"
            if key in RESTART_ONLY:
                continue
            va, vb = getattr(a, f.name), getattr(b, f.name)
            if va != vb:
                out.append(f"{key}: {_show(va)} -> {_show(vb)}")
    out += _describe_provisioning(getattr(old, "provisioning", None), getattr(new, "provisioning", None))
    old_lines = {line.id: line for line in old.lines}
    new_lines = {line.id: line for line in new.lines}
    for line_id, line in new_lines.items():
        prev = old_lines.get(line_id)
        if prev is None:
            out.append(f"line {line_id} added ({line.uri})")
            continue
        if prev.label != line.label:
            out.append(f"line {line_id}: label {_show(prev.label)} -> {_show(line.label)}")
        changed = [name for name in _LINE_SIP if getattr(prev, name) != getattr(line, name)]
        if changed:
            what = ", ".join(name if name in _SECRET else f"{name} {_show(getattr(prev, name))} -> "
                             f"{_show(getattr(line, name))}" for name in changed)
            out.append(f"line {line_id}: {what} changed: it registers again")
    for line_id in old_lines:
        if line_id not in new_lines:
            out.append(f"line {line_id} removed")
    old_routes = {route.id: route for route in old.routes}
    new_routes = {route.id: route for route in new.routes}
    for route_id, route in new_routes.items():
        prev = old_routes.get(route_id)
        if prev is None:
            out.append(f"route {route_id} added (line {route.line}, prefix {_show(route.prefix)}"
                       + (f", trunk {route.proxy})" if route.proxy else ")"))
            continue
        for name in ("label", "line", "prefix", "proxy"):
            va, vb = getattr(prev, name), getattr(route, name)
            if va != vb:
                out.append(f"route {route_id}: {name} {_show(va)} -> {_show(vb)}")
    for route_id in old_routes:
        if route_id not in new_routes:
            out.append(f"route {route_id} removed")
    if [r.id for r in old.routes] != [r.id for r in new.routes] and set(old_routes) == set(new_routes):
        out.append("routes: new order " + ", ".join(new_routes))
    if [ln.id for ln in old.lines] != [ln.id for ln in new.lines] and set(old_lines) == set(new_lines):
        out.append("lines: new order " + ", ".join(new_lines))
    return out


def _describe_provisioning(old: Any, new: Any) -> list[str]:
    """[provisioning] changes (a section kiosk.provisioning reads), its token and password never shown."""
    if old == new:
        return []
    if old is None:
        return [f"provisioning: on, from {_show(new.url)}"]
    if new is None:
        return ["provisioning: off"]
    out = []
    for f in dataclasses.fields(new):
        va, vb = getattr(old, f.name), getattr(new, f.name)
        if va == vb:
            continue
        if f.name in ("token", "password"):
            out.append(f"provisioning.{f.name} changed")
        else:
            out.append(f"provisioning.{f.name}: {_show(va)} -> {_show(vb)}")
    return out


def _about_line(change: str, line_id: str) -> bool:
    return change.startswith((f"line {line_id} ", f"line {line_id}:"))


def _waits(change: str, pending: dict[str, str]) -> bool:
    """Whether a change (from `describe`) is one the desk keeps waiting (`Desk.pending_lines`)."""
    for line_id, what in pending.items():
        if what == "removed" and change == f"line {line_id} removed":
            return True
        if what == "changed" and _about_line(change, line_id) and change.endswith(": it registers again"):
            return True
    return False


# --- the result ----------------------------------------------------------------------------


@dataclass
class ReloadResult:
    """What one reload did. `errors`: each "where: what is wrong; what is right" (refused when any);
    `applied`: what changed, in plain words; `waiting`: what waits for a call to end; `restart`:
    what changed in the file but needs a restart (not applied); `warnings`: what went wrong around
    a profile that was applied (the last good copy could not be written, say)."""

    ok: bool
    source: str
    errors: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.time)
    restart: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    code: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return words(self.code, self.params) if self.code else ""

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "source": self.source, "errors": list(self.errors), "applied": list(self.applied),
                "waiting": list(self.waiting), "restart": list(self.restart), "warnings": list(self.warnings),
                "at": round(self.at, 3), "code": self.code, "message": self.message}


#: A reload hook: (profile before, profile now in force) -> notes for `applied` (e.g. GPIO rebound).
Hook = Callable[[Profile, Profile], list[str]]


class Reloader:
    """Re-reads and applies the profile of one running desk (see the module docstring)."""

    def __init__(self, desk: "Desk", state_dir: Path, profile_path: Path | None,
                 source: str | None = None) -> None:
        self.desk = desk
        self.state_dir = Path(state_dir)
        self.profile_path = Path(profile_path) if profile_path is not None else None
        #: The profile the unit started with: the RESTART_ONLY keys stay as it has them.
        self.started: Profile = desk.profile
        self.last: ReloadResult | None = None
        self.profile_source: str = source or (str(profile_path) if profile_path else "built in")
        self.loaded_at: float = time.time()
        self.hooks: list[Hook] = []
        self._lock = threading.Lock()
        self._fingerprint: tuple[str, int] | None = None  # the profile file as last read: sha256, mode
        desk.reloader = self

    @property
    def last_good(self) -> Path:
        return self.state_dir / LAST_GOOD

    # --- the triggers ---

    def reload_file(self, trigger: str = "reload", only_if_changed: bool = False) -> ReloadResult | None:
        """Re-read profile_path and apply it (SIGHUP, `kiosk ctl reload`, the file changed).

        `only_if_changed`: None, and nothing done, when the file's bytes and mode are what the
        last read found (a `touch`, an editor saving an unchanged file).
        """
        if self.profile_path is None:
            result = ReloadResult(False, trigger, errors=[words("profile_no_file", {})], code="profile_no_file")
            self.last = result
            return result
        source = f"{self.profile_path} ({trigger})"
        with self._lock:
            try:
                data, mode = read_profile_file(self.profile_path)
            except ProfileError as exc:
                self._fingerprint = None
                return self._refuse(source, exc)
            fingerprint = (hashlib.sha256(data).hexdigest(), mode)
            if only_if_changed and fingerprint == self._fingerprint:
                log.debug("profile %s: touched, not changed: no reload", self.profile_path)
                return None
            self._fingerprint = fingerprint
            return self._apply(data, source, world_readable=bool(mode & 0o004))

    def apply_bytes(self, data: bytes, source: str) -> ReloadResult:
        """Validate these exact bytes as the profile and apply them (provisioning). Relative paths
        in them (password_file, ...) are relative to the profile file's directory."""
        with self._lock:
            return self._apply(bytes(data), source, world_readable=False)

    # --- the work (under the lock) ---

    def _anchor(self) -> Path:
        return self.profile_path or self.desk.profile.path

    def _refuse(self, source: str, exc: ProfileError) -> ReloadResult:
        errors = [str(p) for p in exc.problems]
        for error in errors:
            log.error("profile refused: %s", error)
        params = {"source": source, "count": len(errors), "first": errors[0] if errors else "",
                  "errors": errors}
        result = ReloadResult(False, source, errors=errors, code="profile_refused", params=params)
        log.warning("%s", result.message)
        self._announce(None, [_alert("profile_refused", **params)])
        self.last = result
        return result

    def _apply(self, data: bytes, source: str, world_readable: bool) -> ReloadResult:
        at = time.time()
        try:
            new = profile_from_bytes(data, self._anchor(), world_readable=world_readable)
        except ProfileError as exc:
            return self._refuse(source, exc)
        target, restart = in_force(self.started, new)
        old = self.desk.wanted_profile
        changes = describe(old, target)
        try:
            waiting = self.desk.apply_profile(target)
            agent_waiting = self.desk.agent_confirmed(AGENT_CONFIRM_S)
        except Exception as exc:  # a bug: say so rather than take the unit down
            log.exception("profile from %s: applying it failed", source)
            result = ReloadResult(False, source, errors=[f"{source}: applying it failed: {type(exc).__name__}: {exc}"],
                                  at=at, code="profile_refused",
                                  params={"source": source, "count": 1, "first": str(exc), "errors": [str(exc)]})
            self.last = result
            return result
        warnings: list[str] = []
        if agent_waiting is None:
            warnings.append("the SIP agent has not confirmed the new settings yet")
            agent_waiting = []
        pending = dict(self.desk.pending_lines)
        waiting = waiting + [w for w in agent_waiting if not any(_about_line(w, line) for line in pending)
                             and w not in waiting]
        applied = [c for c in changes if not _waits(c, pending)]
        for hook in self.hooks:
            try:
                applied += hook(old, target)
            except Exception as exc:
                log.exception("profile reload hook %r failed", hook)
                warnings.append(f"{getattr(hook, '__name__', hook)}: {exc}")
        try:
            write_last_good(self.state_dir, data, source)
        except (OSError, ValueError) as exc:
            warnings.append(f"the last good copy {self.last_good} was not written: {exc}")
        for text in warnings:
            log.warning("profile from %s: %s", source, text)
        for text in applied:
            log.info("profile from %s: applied: %s", source, text)
        for text in waiting:
            log.info("profile from %s: waiting: %s", source, text)
        for text in restart:
            log.warning("profile from %s: not applied: %s", source, text)
        self.profile_source, self.loaded_at = source, at
        result = ReloadResult(True, source, applied=applied, waiting=waiting, at=at, restart=restart,
                              warnings=warnings)
        if applied or waiting:
            result.code, result.params = "profile_applied", {"source": source, "count": len(applied)}
            alerts = [_alert("profile_applied", **result.params)]
        else:
            result.code, result.params = "profile_unchanged", {"source": source}
            alerts = [_alert("profile_unchanged", **result.params)]
        for line, what in pending.items():
            if what == "removed":
                alerts.append(_alert("line_removal_waits", line=line))
            else:
                alerts.append(_alert("line_change_waits", line=line))
        if restart:
            keys = ", ".join(text.split(":", 1)[0] for text in restart)
            alerts.append(_alert("profile_needs_restart", count=len(restart), keys=keys))
        log.info("%s", result.message)
        self._announce(ev.ProfileChanged(source, tuple(applied), tuple(waiting), tuple(restart)), alerts)
        self.last = result
        return result

    def _announce(self, event: ev.Event | None, alerts: list[ev.Alert]) -> None:
        try:
            self.desk.on_desk(self.desk.announce, event, alerts)
        except Exception as exc:  # the desk stopping: nobody to tell
            log.warning("profile: could not tell the front-ends: %s", exc)


# --- the triggers: SIGHUP, requests, the file on disk -----------------------------------------


class ReloadService:
    """The unit's reload thread: reloads on `request()` (the SIGHUP handler, anything) and when the
    profile file changes on disk (inotify on its directory, debounced; polling when inotify cannot
    be had). Stops with `stop()`."""

    def __init__(self, reloader: Reloader, watch: bool = True, debounce: float = DEBOUNCE_S) -> None:
        self.reloader = reloader
        self.debounce = debounce
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._reasons: list[str] = []
        self._reasons_lock = threading.Lock()
        self._stopping = False
        self._watch = watch and reloader.profile_path is not None
        self.watcher: ProfileWatcher | None = None
        self._thread = threading.Thread(target=self._run, name="kiosk-reload", daemon=True)

    def start(self) -> "ReloadService":
        if self._watch:
            assert self.reloader.profile_path is not None
            self.watcher = ProfileWatcher(self.reloader.profile_path)
        self._thread.start()
        return self

    def signal(self, *_: Any) -> None:
        """A SIGHUP handler: async-signal-safe (one write to a non-blocking pipe)."""
        try:
            os.write(self._write_fd, b"H")
        except OSError:
            pass  # the pipe is full: a reload is already due

    def request(self, reason: str) -> None:
        """Reload soon (any thread; never blocks); reasons coming together are one reload."""
        with self._reasons_lock:
            self._reasons.append(reason)
        try:
            os.write(self._write_fd, b"R")
        except OSError:
            pass

    def stop(self) -> None:
        self._stopping = True
        try:
            os.write(self._write_fd, b"S")
        except OSError:
            pass
        if self._thread.is_alive():
            self._thread.join(5.0)
        if self.watcher is not None:
            self.watcher.close()
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def _triggers(self) -> list[str]:
        try:
            got = os.read(self._read_fd, 4096)
        except BlockingIOError:
            got = b""
        with self._reasons_lock:
            reasons, self._reasons = self._reasons, []
        out = ["SIGHUP"] if b"H" in got else []
        return out + [r for r in dict.fromkeys(reasons) if r not in out]

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._read_fd, select.POLLIN)
        watcher = self.watcher
        if watcher is not None and watcher.fileno() is not None:
            poller.register(watcher.fileno(), select.POLLIN)
        due: float | None = None  # a file change waits out the debounce until then
        while not self._stopping:
            timeout = None
            if due is not None:
                timeout = max(0.0, due - time.monotonic())
            elif watcher is not None and watcher.needs_polling():
                timeout = POLL_S
            ready = {fd for fd, _ in poller.poll(None if timeout is None else int(timeout * 1000) + 1)}
            if self._stopping:
                break
            if self._read_fd in ready:
                reasons = self._triggers()
                if reasons:
                    self._reload(", ".join(reasons), only_if_changed=False)
                    due = None  # this reload read the file as it is now
            if watcher is not None and watcher.changed(watcher.fileno() in ready):
                due = time.monotonic() + self.debounce
            if due is not None and time.monotonic() >= due:
                due = None
                self._reload("file changed", only_if_changed=True)

    def _reload(self, trigger: str, only_if_changed: bool) -> None:
        try:
            self.reloader.reload_file(trigger, only_if_changed=only_if_changed)
        except Exception:  # the thread must live on for the next trigger
            log.exception("profile reload (%s) failed", trigger)


class ProfileWatcher:
    """Tells when the profile file may have changed: inotify on its directory (and on the target's
    directory when it is a symlink), so a file replaced by a rename (vim, sed -i, an atomic
    provisioning script) is seen as well as one written in place. Without inotify (the library
    missing, no watches left), `changed()` compares the file's stat every POLL_S."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).absolute()
        self._inotify: Any = None
        self._watches: dict[int, tuple[Path, set[str]]] = {}
        self._failed: set[Path] = set()  # directories that could not be watched (said once)
        self._stat = self._look()
        try:
            import inotify_simple

            self._flags = inotify_simple.flags
            self._inotify = inotify_simple.INotify(nonblocking=True)
        except (ImportError, OSError) as exc:
            log.warning("profile watch: inotify not available (%s): looking at %s every %g s",
                        exc, self.path, POLL_S)
            self._inotify = None
        self._add_watches()

    def fileno(self) -> int | None:
        return self._inotify.fileno() if self._inotify is not None else None

    def needs_polling(self) -> bool:
        """Whether `changed` must be asked every POLL_S (no inotify, or a watched directory is gone)."""
        return self._inotify is None or not self._watches

    def _mask(self) -> int:
        f = self._flags
        return (f.CLOSE_WRITE | f.MOVED_TO | f.MOVED_FROM | f.CREATE | f.DELETE | f.MODIFY | f.ATTRIB
                | f.DELETE_SELF | f.MOVE_SELF)

    def _targets(self) -> dict[Path, set[str]]:
        """Directory -> the names in it that are the profile: the path itself, and what it links to."""
        targets: dict[Path, set[str]] = {self.path.parent: {self.path.name}}
        try:
            real = self.path.resolve()
        except OSError:
            real = self.path
        if real != self.path:
            targets.setdefault(real.parent, set()).add(real.name)
        return targets

    def _add_watches(self) -> None:
        if self._inotify is None:
            return
        for directory, names in self._targets().items():
            if any(d == directory for d, _ in self._watches.values()):
                continue
            try:
                wd = self._inotify.add_watch(directory, self._mask())
            except OSError as exc:
                if directory not in self._failed:  # once, not at every look
                    self._failed.add(directory)
                    log.warning("profile watch: cannot watch %s (%s): looking every %g s", directory, exc, POLL_S)
                continue
            self._failed.discard(directory)
            self._watches[wd] = (directory, names)

    def _look(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)

    def changed(self, readable: bool) -> bool:
        """Whether the profile may have changed since the last call (reads what inotify has)."""
        hit = False
        if self._inotify is not None and readable:
            f = self._flags
            try:
                events = list(self._inotify.read(timeout=0))
            except OSError as exc:
                log.warning("profile watch: %s", exc)
                events = []
            relink = False
            for event in events:
                directory, names = self._watches.get(event.wd, (None, set()))
                if event.mask & (f.IGNORED | f.DELETE_SELF | f.MOVE_SELF):
                    self._watches.pop(event.wd, None)
                    hit = True
                    continue
                if event.mask & f.Q_OVERFLOW:
                    hit = True
                if event.name and event.name in names:
                    hit = True
                    relink = True  # the path may now be another symlink
            if relink:
                self._add_watches()
        if self.needs_polling():
            self._add_watches()
            now = self._look()
            if now != self._stat:
                hit = True
            self._stat = now
        elif hit:
            self._stat = self._look()
        return hit

    def close(self) -> None:
        if self._inotify is not None:
            try:
                self._inotify.close()
            except OSError:
                pass
            self._inotify = None
