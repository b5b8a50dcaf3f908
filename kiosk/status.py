"""What `kiosk ctl status` shows: the unit's health for a maintainer, as one JSON object.

version, uptime, the profile in force (where it came from, when it was loaded),
the lines and their registration, the calls, whether the SIP agent and the desk
loop answer, the recordings' disk use and free space, the last provisioning
check and the last reload. Never a password or a token: lines are shown by id,
label, URI and registration state only.

`build_status` runs on a worker thread of the control socket (never on the desk
loop or the socket's own loop): it asks the desk and the agent with short
timeouts, so a wedged desk still gets a status that says so, and it walks the
recordings directory (one stat per file).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

#: How long the desk loop and the agent thread may take to answer before they count as not answering.
ANSWER_TIMEOUT = 2.0

_ROW_KEYS = ("id", "line", "line_label", "direction", "state", "remote", "name", "number", "route", "duration",
             "recording", "local_hold", "remote_hold",
             "conference", "consult_for", "answered", "started")


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(epoch))


def human_duration(seconds: float) -> str:
    """3725 -> '1 h 02 min', 93784 -> '1 d 2 h 03 min', 42 -> '42 s'."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m = rest // 60
    if d:
        return f"{d} d {h} h {m:02d} min"
    if h:
        return f"{h} h {m:02d} min"
    return f"{m} min {s % 60:02d} s"


def version() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version as dist_version

    found = {"kiosk": "unknown", "python": platform.python_version()}
    try:
        found["kiosk"] = dist_version("kiosk")
    except PackageNotFoundError:
        pass
    try:
        found["pjsua2"] = dist_version("pjsua2-python")
    except PackageNotFoundError:
        pass
    return found


def _answers(call: Callable[[], Any]) -> tuple[bool, float | None, Any]:
    """(answered in time, milliseconds it took, what it returned)."""
    started = time.monotonic()
    try:
        value = call()
    except Exception:
        return False, None, None
    return True, round((time.monotonic() - started) * 1000, 1), value


def agent_state(desk: Any, timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
    agent = getattr(desk, "agent", None)
    submit = getattr(agent, "submit", None)
    if submit is None:
        return {"state": "running", "answer_ms": None}
    ok, ms, _ = _answers(lambda: submit(lambda: None).result(timeout=timeout))
    return {"state": "running" if ok else f"not answering within {timeout:g} s", "answer_ms": ms}


def recordings_usage(directory: Path, min_free_mb: int | None = None) -> dict[str, Any]:
    """Files, bytes used and bytes free where the recordings are kept."""
    from .recordings import space_problem

    info: dict[str, Any] = {"directory": str(directory), "files": 0, "bytes": 0, "free_bytes": None,
                            "problem": None}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith((".wav", ".json")) and entry.is_file(follow_symlinks=False):
                    try:
                        info["bytes"] += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
                    info["files"] += entry.name.endswith(".wav")
    except FileNotFoundError:
        info["problem"] = f"{directory} does not exist yet (it is made at the first recording)"
        directory = directory.parent
    except OSError as exc:
        info["problem"] = f"cannot read {directory}: {exc.strerror}"
    try:
        st = os.statvfs(directory)
        info["free_bytes"] = st.f_bavail * st.f_frsize
        info["disk_bytes"] = st.f_blocks * st.f_frsize
    except OSError as exc:
        info["problem"] = info["problem"] or f"cannot check free space in {directory}: {exc.strerror}"
    info["mb"] = round(info["bytes"] / 1048576, 1)
    if info["free_bytes"] is not None:
        info["free_mb"] = round(info["free_bytes"] / 1048576, 1)
    if min_free_mb is not None:
        info["min_free_mb"] = min_free_mb
        if info["problem"] is None and info["free_bytes"] is not None:
            info["problem"] = space_problem(directory, min_free_mb)
    return info


def reload_json(result: Any) -> dict[str, Any] | None:
    """A ReloadResult (kiosk.reload) as JSON."""
    if result is None:
        return None
    at = getattr(result, "at", None)
    if callable(getattr(result, "as_json", None)):
        return {**result.as_json(), "at_iso": _iso(at)}
    return {"ok": bool(getattr(result, "ok", False)), "source": getattr(result, "source", None),
            "at": at, "at_iso": _iso(at), "errors": list(getattr(result, "errors", []) or []),
            "applied": list(getattr(result, "applied", []) or []),
            "waiting": list(getattr(result, "waiting", []) or [])}


def build_status(desk: Any, *, started: float, reloader: Any = None, provisioner: Any = None,
                 now: float | None = None, timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
    """The whole status of a running unit (see the module docstring)."""
    now = time.time() if now is None else now
    profile = desk.profile
    status: dict[str, Any] = {
        "version": version(),
        "pid": os.getpid(),
        "started": _iso(started),
        "uptime_seconds": int(now - started),
        "uptime": human_duration(now - started),
    }
    source = getattr(reloader, "profile_source", None) or str(profile.path)
    loaded = getattr(reloader, "loaded_at", None) or started
    status["profile"] = {"source": source, "path": str(profile.path), "loaded_at": loaded,
                         "loaded_at_iso": _iso(loaded), "operator": profile.operator.name}

    ok, ms, snap = _answers(lambda: desk.on_desk(desk._snapshot, timeout=timeout))  # noqa: SLF001
    status["desk"] = {"state": "running" if ok else f"not answering within {timeout:g} s", "answer_ms": ms}
    registered = {s["id"]: s for s in snap["lines"]} if ok else {}
    lines = []
    for line in profile.lines:
        state = registered.get(line.id)
        if state is None and not ok:
            reg = getattr(desk, "registered", {}).get(line.id)  # the desk's last word, read without its loop
            state = {"registered": getattr(reg, "registered", None), "code": getattr(reg, "code", None),
                     "reason": getattr(reg, "reason", "")} if reg is not None else None
        lines.append({"id": line.id, "label": line.label, "uri": line.uri, "registrar": line.registrar,
                      "registered": state.get("registered") if state else None,
                      "code": state.get("code") if state else None,
                      "reason": state.get("reason") if state else "unknown"})
    status["lines"] = lines
    calls = [{k: row.get(k) for k in _ROW_KEYS if k in row} for row in (snap["calls"] if ok else [])]
    status["calls"] = {"count": len(calls) if ok else None, "rows": calls,
                       "muted": snap.get("muted") if ok else None}
    status["agent"] = agent_state(desk, timeout)
    status["recordings"] = recordings_usage(Path(profile.recording.directory), profile.recording.min_free_mb)
    status["provisioning"] = provisioner.status() if provisioner is not None else {"enabled": False}
    status["reload"] = reload_json(getattr(reloader, "last", None))
    status["dnd"] = snap.get("dnd") if ok else getattr(desk, "dnd_on", None)
    status["history"] = history_state(desk)
    contacts = getattr(desk, "contacts", None)
    settings = profile.directory
    status["directory"] = {"file": str(settings.file) if settings.file else None, "ldap": settings.ldap,
                           "in_use": contacts is not None}
    return status


def history_state(desk: Any) -> dict[str, Any]:
    """Where the call history is, how big, and why it is off when it is."""
    history = getattr(desk, "call_history", None)
    if history is None:
        from .cli import HISTORY_PROBLEM

        return {"enabled": False, "reason": HISTORY_PROBLEM.get("message") or "not opened"}
    path = Path(history.path)
    try:
        size = sum(f.stat().st_size for f in path.parent.glob(path.name + "*") if f.is_file())
    except OSError:
        size = None
    return {"enabled": True, "path": str(path), "bytes": size, "missed_unseen": history.missed_unseen()}
