"""The local control socket: JSON lines in, desk commands out, desk events streamed back.

This is the third front-end of the panel (after the touchscreen and the GPIO
buttons), for automation and CTI integration. Like the others it only
translates: a request line becomes one call of a desk command method, and the
desk's `Outcome` becomes one reply line. It knows no call rules and no SIP.

Threads: `socketserver` gives every connection its own daemon thread, so the
desk commands run on those threads (the desk is built for that). Desk events
arrive on whatever thread caused them, often the agent thread with the desk
lock held; the listener for an `events` stream therefore only puts the event
into a bounded queue, and the connection's own thread writes it out. A client
that reads too slowly is dropped rather than allowed to stall the desk.

Protocol, one JSON object per line in each direction:

    > {"cmd": "dial", "args": {"number": "1002"}}
    < {"ok": true, "data": {"row": 1, "uri": "sip:91002@pbx"}}
    > {"cmd": "answer"}
    < {"ok": false, "error": "no call selected"}
    > {"cmd": "events"}
    < {"event": "snapshot", "line": "op1", ..., "calls": [...]}
    < {"event": "row", "row": {...}}          (one per desk event, until the client closes)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import select
import socket
import socketserver
import stat
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:  # `kiosk ctl` is a client: it must not pay for importing the desk
    from . import events as ev
    from .desk import Desk

log = logging.getLogger("kiosk.control")

#: The longest request line accepted; anything longer is refused without being parsed,
#: so a runaway client cannot make the unit buffer unbounded input.
MAX_LINE = 64 * 1024
#: Desk events buffered per `events` client before it counts as too slow and is dropped.
EVENT_QUEUE = 1000
#: How often an idle `events` stream checks whether its client went away or the server stops.
POLL = 0.2
#: How long the client side waits for a reply. Longer than the slowest desk command
#: takes on a slow agent (a connect that holds three calls first waits for the agent
#: four times, a pickup waits for the answer), so that shows up as the desk's refusal
#: with its reason rather than as a client timeout.
REQUEST_TIMEOUT = 40.0
#: sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 107


class ControlError(OSError):
    """The control socket could not be used at all (no unit running, broken reply); str() is for a person.

    An OSError, so that code which opens the socket and already handles the
    operating system's refusals (`kiosk run` does) handles these the same way.
    """


# --- the command table ---------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """One argument of a control command: its JSON name, the desk method's keyword, its type."""

    name: str
    expects: str  # what a wrong value is told it should be, e.g. "a string"
    check: Callable[[Any], bool]
    required: bool = False
    param: str | None = None  # the desk method's parameter name, when it differs
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    """A control command: which desk method it calls and which arguments it takes."""

    method: str
    args: tuple[Arg, ...] = ()
    help: str = ""


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_row_list(value: Any) -> bool:
    # bool is an int in Python, but `true` is never a row number a client meant.
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _number(required: bool = False) -> Arg:
    return Arg("number", "a string", _is_str, required=required)


#: Every command the socket knows. A later desk command is one more row here; when the
#: desk does not have the method yet the request is refused, not crashed on.
COMMANDS: dict[str, Command] = {
    "calls": Command("snapshot", help="the whole panel: parameters, lines, call rows, selection"),
    "select": Command("select", (Arg("rows", "a list of row numbers", _is_row_list, True, "row_ids"),),
                      help="select call rows (an empty list clears the selection)"),
    "set": Command("set", (Arg("name", "a string", _is_str, True, choices=("line", "number", "route")),
                           Arg("value", "a string", _is_str, True)),
                   help="set the Line, Number or Route parameter"),
    "dial": Command("dial", (_number(),), help="call Number (or the given number) on the chosen Line and Route"),
    "answer": Command("answer", help="answer the selected ringing call"),
    "hangup": Command("hangup", help="hang up, reject or cancel the selected call"),
    "hold": Command("hold", help="put the selected call on hold"),
    "connect": Command("connect", help="take the selected held call off hold"),
    "transfer": Command("transfer", (Arg("mode", "a string", _is_str, True, choices=("quick", "consult", "confirm")),
                                     _number()),
                        help="quick (blind) transfer, transfer with consultation, or confirm it"),
    "conference": Command("conference", (_number(),), help="build or extend a conference"),
    "pickup": Command("pickup", (_number(),), help="intercept the call ringing on an internal number"),
    "record": Command("record", (Arg("action", "a string", _is_str, True, choices=("start", "stop")),),
                      help="start or stop recording the selected call"),
    "recordings": Command("recordings", help="the recordings kept on this unit"),
    "mute": Command("mute", (Arg("state", "a string", _is_str, choices=("on", "off", "toggle")),),
                    help="microphone mute"),
}

#: Not in COMMANDS because it turns the connection into a stream instead of calling the desk.
EVENTS = "events"


def _known() -> str:
    return ", ".join([*COMMANDS, EVENTS])


def _error(reason: str) -> dict[str, Any]:
    return {"ok": False, "error": reason}


def _data(result: Any) -> dict[str, Any]:
    """A desk method's result as the reply's `data` object."""
    if isinstance(result, dict):
        return result
    if result is None:
        return {}
    return {"result": result}


def parse_request(line: bytes) -> tuple[str, dict[str, Any]] | dict[str, Any]:
    """Decode one request line into (cmd, args), or an error reply saying what is wrong with it."""
    try:
        request = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return _error("request is not UTF-8 text")
    except ValueError as exc:  # JSONDecodeError, and ints past Python's digit limit
        return _error(f"request is not valid JSON: {exc}")
    except RecursionError:  # "[[[[..." fits in one line and would otherwise escape as a crash
        return _error("request is nested too deeply")
    if not isinstance(request, dict):
        return _error('request must be a JSON object like {"cmd": "calls"}')
    cmd = request.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        return _error(f'request has no "cmd" string; commands: {_known()}')
    args = request.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return _error(f'"args" of {cmd} must be a JSON object')
    return cmd, args


def dispatch(desk: Desk, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one command on the desk and return the reply object; never raises."""
    command = COMMANDS.get(cmd)
    if command is None:
        return _error(f"unknown command {cmd[:40]!r}; commands: {_known()}")
    spec = {a.name: a for a in command.args}
    unknown = [name for name in args if name not in spec]
    if unknown:
        takes = ", ".join(spec) or "no arguments"
        return _error(f"{cmd} does not take {unknown[0]!r}; it takes {takes}")
    kwargs: dict[str, Any] = {}
    for arg in command.args:
        value = args.get(arg.name)
        if value is None:  # absent and null mean the same: not given
            if arg.required:
                return _error(f"{cmd} needs {arg.name!r} ({arg.expects})")
            continue
        if not arg.check(value):
            return _error(f"{arg.name!r} of {cmd} must be {arg.expects}, not {json.dumps(value)[:60]}")
        if arg.choices and value not in arg.choices:
            return _error(f"{arg.name!r} of {cmd} must be one of {', '.join(arg.choices)}, not {value!r}")
        kwargs[arg.param or arg.name] = value
    method = getattr(desk, command.method, None)
    if not callable(method):
        return _error(f"{cmd} is not available on this unit yet")
    try:
        result = method(**kwargs)
    except Exception as exc:  # the desk's bug must not take the socket (or the unit) down
        log.exception("control: desk failed on %s %s", cmd, kwargs)
        return _error(f"{cmd} failed inside the unit ({type(exc).__name__}: {exc}); see the unit's log")
    from .desk import Outcome

    if isinstance(result, Outcome):
        return {"ok": True, "data": result.data} if result.ok else _error(result.reason)
    return {"ok": True, "data": _data(result)}


def _encode(obj: dict[str, Any]) -> bytes:
    # default=str: an event field that is not plain JSON (a Path, say) is shown, not fatal.
    return (json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode("utf-8")


# --- the server ----------------------------------------------------------------------


class _LineTooLong(Exception):
    pass


class _LineReader:
    """Reads newline-terminated lines from a socket, refusing (and skipping) over-long ones."""

    def __init__(self, sock: socket.socket, limit: int = MAX_LINE) -> None:
        self.sock = sock
        self.limit = limit
        self.buf = bytearray()
        self.skipping = False  # inside an over-long line already reported

    def next(self) -> bytes | None:
        """The next line without its newline; None at end of input; _LineTooLong once per long line."""
        while True:
            nl = self.buf.find(b"\n")
            if self.skipping:
                if nl >= 0:
                    del self.buf[: nl + 1]
                    self.skipping = False
                    continue
                self.buf.clear()
            elif nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[: nl + 1]
                if len(line) > self.limit:
                    raise _LineTooLong
                return line
            elif len(self.buf) > self.limit:
                # Say so now rather than at the newline: a client that never sends one still gets an answer.
                self.buf.clear()
                self.skipping = True
                raise _LineTooLong
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buf and not self.skipping:
                    line = bytes(self.buf)
                    self.buf.clear()
                    return line
                return None
            self.buf += chunk


class _Handler(socketserver.BaseRequestHandler):
    """One client connection: request/reply lines until it asks for `events` or closes."""

    server: "_Server"
    request: socket.socket

    def setup(self) -> None:
        self.server.track(self.request, True)

    def finish(self) -> None:
        self.server.track(self.request, False)

    def handle(self) -> None:
        reader = _LineReader(self.request)
        try:
            while not self.server.stopping.is_set():
                try:
                    line = reader.next()
                except _LineTooLong:
                    self._send(_error(f"request line longer than {MAX_LINE} bytes"))
                    continue
                if line is None:
                    return
                if not line.strip():
                    continue  # a blank line (e.g. from a hand-typed socat session) is no request
                parsed = parse_request(line)
                if isinstance(parsed, dict):
                    self._send(parsed)
                    continue
                cmd, args = parsed
                if cmd == EVENTS:
                    self._stream()
                    return
                log.debug("control: %s %s", cmd, args)
                self._send(dispatch(self.server.desk, cmd, args))
        except OSError as exc:  # client vanished mid-reply, or stop() shut the socket
            log.debug("control: connection ended: %s", exc)

    def _send(self, obj: dict[str, Any]) -> None:
        self.request.sendall(_encode(obj))

    def _stream(self) -> None:
        """Send the snapshot, then every desk event, until the client closes or is too slow."""
        events: queue.Queue[ev.Event] = queue.Queue(maxsize=self.server.queue_size)
        dropped = threading.Event()
        sock = self.request

        def listener(event: ev.Event) -> None:
            # Runs on the desk's thread, maybe with the desk lock held: never block here.
            if dropped.is_set():
                return
            try:
                events.put_nowait(event)
            except queue.Full:
                dropped.set()
                unsubscribe()
                log.warning("control: event client too slow, %d events queued; dropping it",
                            self.server.queue_size)
                try:  # wakes our thread if it is stuck in sendall to that client
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        # Subscribe before the snapshot: an event in between is then sent twice (harmless,
        # every row event carries the whole row) rather than lost.
        unsubscribe = self.server.desk.subscribe(listener)
        log.info("control: event stream opened")
        try:
            self._send({"event": "snapshot", **self.server.desk.snapshot()})
            while not dropped.is_set() and not self.server.stopping.is_set():
                try:
                    event = events.get(timeout=POLL)
                except queue.Empty:
                    if self._client_closed():
                        return
                    continue
                self._send(event.as_json())
        except OSError as exc:
            log.debug("control: event stream ended: %s", exc)
        finally:
            unsubscribe()
            log.info("control: event stream closed")

    def _client_closed(self) -> bool:
        """True when the client hung up; anything it sends during a stream is ignored."""
        readable, _, _ = select.select([self.request], [], [], 0)
        if not readable:
            return False
        try:
            return not self.request.recv(4096)
        except OSError:
            return True


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True  # a hung client must not keep the unit from exiting
    allow_reuse_address = False

    def __init__(self, path: Path, desk: Desk, queue_size: int) -> None:
        self.desk = desk
        self.queue_size = queue_size
        self.stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self.inode: int | None = None
        super().__init__(str(path), _Handler)

    def server_bind(self) -> None:
        super().server_bind()
        # Before listen(): until then a connect() is refused, so nobody gets in under the umask's mode.
        os.chmod(self.server_address, 0o660)
        self.inode = os.stat(self.server_address).st_ino

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conns_lock:
            if alive:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ControlServer:
    """The control socket of one unit: `start()` serves it in the background, `stop()` removes it."""

    def __init__(self, desk: Desk, path: Path, queue_size: int = EVENT_QUEUE) -> None:
        if queue_size < 1:  # queue.Queue(0) is unbounded: exactly what a slow client must not get
            raise ValueError(f"queue_size must be at least 1, not {queue_size}")
        self.desk = desk
        self.path = Path(path)
        self.queue_size = queue_size
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the socket (mode 0660) and serve it on a daemon thread."""
        if self._server is not None:
            return
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            raise ControlError(f"control socket path {self.path} is longer than {MAX_SOCKET_PATH} bytes")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale()
        self._server = _Server(self.path, self.desk, self.queue_size)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="kiosk-control", daemon=True)
        self._thread.start()
        log.info("control socket listening at %s", self.path)

    def stop(self) -> None:
        """Stop serving, end open connections (event streams included) and remove the socket file."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            # Only our own socket: a newer unit may already have bound the path again.
            if self.path.stat().st_ino == server.inode:
                self.path.unlink()
        except FileNotFoundError:
            pass
        log.info("control socket at %s closed", self.path)

    def __enter__(self) -> "ControlServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _remove_stale(self) -> None:
        """Remove a socket file left by a unit that died; refuse to steal a live one or a non-socket."""
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlError(f"{self.path} exists and is not a socket; not removing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):  # nobody listens: the file is a leftover
            log.info("removing stale control socket %s", self.path)
            self.path.unlink(missing_ok=True)
            return
        except OSError as exc:  # e.g. a busy unit that did not accept in time: not provably stale
            raise ControlError(f"cannot tell whether {self.path} is in use ({exc}); not removing it") from None
        finally:
            probe.close()
        raise ControlError(f"another kiosk is already serving {self.path}")


# --- the client ----------------------------------------------------------------------


def _connect(path: Path | str, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise ControlError(f"no kiosk is running at {path} (is `kiosk run` started?)") from None
    except PermissionError:
        sock.close()
        raise ControlError(f"no permission to use {path} (is this user in the socket's group?)") from None
    except OSError as exc:
        sock.close()
        raise ControlError(f"cannot connect to the kiosk at {path}: {exc}") from None
    return sock


def json_lines(sock: socket.socket, path: Path | str) -> Iterator[dict[str, Any]]:
    """Each JSON line the server sends, until it closes; ControlError on a broken socket or line."""
    buf = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise ControlError(f"the kiosk at {path} did not reply within {REQUEST_TIMEOUT:g} s") from None
        except OSError as exc:
            raise ControlError(f"lost the kiosk at {path}: {exc}") from None
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                obj = json.loads(line)
            except ValueError:
                raise ControlError(f"the kiosk at {path} sent a line that is not JSON: {line[:80]!r}") from None
            if not isinstance(obj, dict):
                raise ControlError(f"the kiosk at {path} sent {line[:80]!r}, not a JSON object")
            yield obj


def request(path: Path | str, cmd: str, /, **args: Any) -> dict[str, Any]:
    """Send one command; return the reply, `{"ok": true, "data": ...}` or `{"ok": false, "error": ...}`.

    A refusal by the desk is a normal reply (the caller shows its reason); only a
    socket that cannot be used raises, as ControlError.
    """
    body: dict[str, Any] = {"cmd": cmd}
    if args:
        body["args"] = args
    sock = _connect(path, REQUEST_TIMEOUT)
    try:
        try:
            sock.sendall(_encode(body))
        except OSError as exc:
            raise ControlError(f"lost the kiosk at {path}: {exc}") from None
        for reply in json_lines(sock, path):
            return reply
        raise ControlError(f"the kiosk at {path} closed the connection without replying")
    finally:
        sock.close()


def open_events(path: Path | str, timeout: float = REQUEST_TIMEOUT) -> socket.socket:
    """A socket that has asked the unit for its event stream: read it with `json_lines`.

    For a client that must be able to shut the stream down from another thread
    (the touchscreen's RemoteDesk); `stream_events` is the simple form.
    """
    sock = _connect(path, timeout)
    try:
        sock.sendall(_encode({"cmd": EVENTS}))
    except OSError as exc:
        sock.close()
        raise ControlError(f"lost the kiosk at {path}: {exc}") from None
    return sock


def stream_events(path: Path | str) -> Iterator[dict[str, Any]]:
    """The snapshot, then every desk event, as dicts, until the unit goes away or the caller stops."""
    sock = open_events(path)
    try:
        sock.settimeout(None)  # events may be minutes apart
        for obj in json_lines(sock, path):
            if obj.get("ok") is False:
                raise ControlError(str(obj.get("error", "the kiosk refused the event stream")))
            yield obj
    finally:
        sock.close()


# --- kiosk ctl -----------------------------------------------------------------------

#: Exit codes of `kiosk ctl`: 0 done, 1 refused by the unit (reason on stderr),
#: 2 bad command line (argparse's own), 3 no unit to talk to.
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_UNIT = 0, 1, 2, 3


def _ctl_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiosk ctl", description="Drive this unit's call-control panel.")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    sub.add_parser("calls", help="show the panel: parameters, lines, calls, selection")
    sub.add_parser("events", help="print the snapshot, then every desk event, one JSON line each")
    p = sub.add_parser("select", help="select call rows (none: clear the selection)")
    p.add_argument("rows", metavar="ROW", nargs="*", type=int)
    p = sub.add_parser("set", help="set the Line, Number or Route parameter")
    p.add_argument("name", choices=("line", "number", "route"))
    p.add_argument("value", metavar="VALUE")
    for name in ("dial", "conference", "pickup"):
        p = sub.add_parser(name, help=COMMANDS[name].help)
        p.add_argument("number", metavar="NUMBER", nargs="?")
    for name in ("answer", "hangup", "hold", "connect", "recordings"):
        sub.add_parser(name, help=COMMANDS[name].help)
    p = sub.add_parser("transfer", help=COMMANDS["transfer"].help)
    p.add_argument("mode", choices=("quick", "consult", "confirm"))
    p.add_argument("number", metavar="NUMBER", nargs="?")
    p = sub.add_parser("record", help=COMMANDS["record"].help)
    p.add_argument("action", choices=("start", "stop"))
    p = sub.add_parser("mute", help=COMMANDS["mute"].help)
    p.add_argument("state", choices=("on", "off", "toggle"), nargs="?", default="toggle")
    return parser


def _ctl_args(ns: argparse.Namespace) -> dict[str, Any]:
    """The request args of a parsed command line; an absent NUMBER is not sent at all."""
    skip = {"cmd"}
    return {k: v for k, v in vars(ns).items() if k not in skip and v is not None}


def _print_json(obj: Any, indent: int | None = 2) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=indent), flush=True)


def ctl_main(argv: list[str], socket_path: Path | str) -> int:
    """`kiosk ctl ...`: one command to the running unit; returns the exit code."""
    try:
        ns = _ctl_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors; the caller decides
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if ns.cmd == EVENTS:
            return _ctl_events(socket_path)
        reply = request(socket_path, ns.cmd, **_ctl_args(ns))
    except ControlError as exc:
        print(f"kiosk ctl: {exc}", file=sys.stderr)
        return EXIT_NO_UNIT
    if reply.get("ok"):
        _print_json(reply.get("data", {}))
        return EXIT_OK
    print(f"kiosk ctl {ns.cmd}: {reply.get('error', 'refused')}", file=sys.stderr)
    return EXIT_REFUSED


def _ctl_events(socket_path: Path | str) -> int:
    try:
        for event in stream_events(socket_path):
            _print_json(event, indent=None)
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:  # `kiosk ctl events | head` closed its end: that is a normal end
        return EXIT_OK
    print(f"kiosk ctl: the kiosk at {socket_path} closed the event stream", file=sys.stderr)
    return EXIT_NO_UNIT
