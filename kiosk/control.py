"""The local control socket: JSON lines in, desk commands out, desk events streamed back.

This is the third front-end of the panel (after the touchscreen and the GPIO
buttons), for automation and CTI integration. Like the others it only
translates: a request line becomes one command of kiosk.commands' table handed
to the desk (``desk.submit``), and the desk's `Outcome` becomes one reply line.
It knows no call rules and no SIP.

Threads: one asyncio loop, on the `kiosk-control` thread, owns every
connection: it accepts, reads requests, writes replies and event streams and
closes idle connections, so a thousand idle clients cost a thousand sockets,
not a thousand threads. The desk runs on a loop of its own and answers every
command at once (refused, done, or accepted and still waiting for SIP), so a
request is awaited right here (``asyncio.wrap_future`` of the desk's Future)
and there are no worker threads: a Hang up is never queued behind a Pickup's
INVITE. A request with ``"wait": true`` is answered once the command's final
outcome is known; that wait is an await too, and holds up no other connection.
A connection has at most one command running; its next request is read when
that one is answered. Desk events arrive on the desk's thread; the listener for
an `events` stream only puts the event into a bounded queue and wakes this
loop, which writes it out. A client that reads too slowly is dropped rather
than allowed to stall the desk.

Limits (module constants; the last three also ControlServer arguments): the
kernel queues BACKLOG connections not yet accepted (a client finding even that
full retries for CONNECT_WAIT s); at most MAX_CLIENTS connections are served at
once, and one more gets a one-line error naming the cap and is closed; a
connection that sends no request for IDLE_TIMEOUT s (or does not read its reply
for that long) gets a one-line error and is closed, an `events` stream never.

Protocol, one JSON object per line in each direction. A request:

    {"cmd": NAME, "args": {...}, "wait": false}

``cmd`` is a command of kiosk.commands.COMMANDS (or ``events``), ``args`` its
arguments (absent and null mean "not given"), ``wait`` (default false) whether
to answer only once the command's final outcome is known. A reply is a success

    {"ok": true, "data": {...}, "command": ID, "pending": false}

where ``command`` is the desk's id of this command and ``pending`` says that the
command was accepted and still waits for SIP: its final outcome comes as an
``action_done`` or ``action_failed`` event with that ``command`` id (or, with
``"wait": true``, as this reply); or a refusal, for the desk's reasons and the
protocol's alike:

    {"ok": false, "error": {"code": CODE, "action": ACTION, "message": ENGLISH,
                            "params": {...}, "row": ROW}}

``code`` and ``params`` are for a catalogue (kiosk.i18n), ``message`` is the same
in English, ``action`` the action id refused (null for a protocol error), ``row``
the call row concerned (or null). For example:

    > {"cmd": "set", "args": {"name": "number", "value": "1002"}}
    < {"ok": true, "data": {"line": "op1", "number": "1002", "route": "city"}, "command": 1, "pending": false}
    > {"cmd": "dial"}
    < {"ok": true, "data": {"row": 1, "uri": "sip:91002@pbx"}, "command": 2, "pending": true}
    > {"cmd": "pickup", "args": {"number": "2004"}, "wait": true}
    < {"ok": false, "error": {"code": "pickup_failed", "action": "pickup", "message": "cannot pick up
       the call ringing on 2004: 404 Nothing ringing", "params": {"number": "2004", "reason":
       "404 Nothing ringing"}, "row": null}}
    > {"cmd": "answer"}
    < {"ok": false, "error": {"code": "no_selection", "action": "answer", "message": "no call selected",
       "params": {}, "row": null}}
    > {"cmd": "dial", "args": {"number": 1002}}
    < {"ok": false, "error": {"code": "bad_argument", "action": "dial", "message": "'number' of dial must
       be a string, not 1002", "params": {...}, "row": null}}
    > {"cmd": "events"}
    < {"event": "snapshot", "line": "op1", ..., "calls": [...], "available": {...}}
    < {"event": "row", "row": {...}}          (one per desk event, until the client closes)

The protocol's own codes: bad_request ({problem}: not JSON, not an object, no
"cmd", ...), unknown_command, unknown_argument, missing_argument, bad_argument,
line_too_long ({limit}), too_many_clients ({max}), evicted ({max}, {seconds}),
idle_closed ({seconds}), desk_busy and desk_stopped. A ``wait`` that outlasts
WAIT_TIMEOUT s is answered with the accepted reply (``"pending": true``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from . import i18n
from .commands import COMMANDS, EVENTS, Arg, Command, check_args

if TYPE_CHECKING:  # `kiosk ctl` is a client: it must not pay for importing the desk
    from . import events as ev
    from .desk import Desk, Outcome

__all__ = ["COMMANDS", "EVENTS", "ControlError", "ControlServer", "ctl_main", "json_lines", "open_events",
           "request", "stream_events"]

log = logging.getLogger("kiosk.control")

#: The longest request line accepted; anything longer is refused without being parsed,
#: so a runaway client cannot make the unit buffer unbounded input.
MAX_LINE = 64 * 1024
#: Desk events buffered per `events` client before it counts as too slow and is dropped.
EVENT_QUEUE = 1000
#: The listen backlog: connections the kernel holds until the loop accepts them. The loop
#: accepts at once, so this only has to absorb a burst of clients connecting together.
BACKLOG = 128
#: How long a client retries while the backlog is full (EAGAIN) before it says the unit is busy.
CONNECT_WAIT = 5.0
#: The most connections served at once, event streams included. Each costs the unit a file
#: descriptor, its kernel buffers and a few KB here; under systemd the unit's soft limit is
#: 1024 open files, which the SIP agent, audio and recordings need too.
MAX_CLIENTS = 256
#: A connection that sends no request for this long (seconds) is told so and closed, and so is
#: one that does not read its reply for that long. An `events` stream is never idle.
IDLE_TIMEOUT = 60.0
#: How long the desk may take to take a command (it answers within milliseconds; longer is a
#: wedged desk loop, said as `desk_busy`).
DESK_REPLY = 5.0
#: How long a `"wait": true` request waits for the command's final outcome before it is answered
#: with the accepted reply (`pending` true). Each SIP step of a command is bounded by the desk
#: (a connect that holds three calls first waits for the agent four times, a pickup waits
#: PICKUP_TIMEOUT for the answer): this only catches a command that never ends.
WAIT_TIMEOUT = 35.0
#: How long the client side waits for a reply: longer than WAIT_TIMEOUT, so that a slow
#: command shows up as the unit's reply rather than as a client timeout.
REQUEST_TIMEOUT = 40.0
#: sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 107


class ControlError(OSError):
    """The control socket could not be used at all (no unit running, broken reply); str() is for a person.

    An OSError, so that code which opens the socket and already handles the
    operating system's refusals (`kiosk run` does) handles these the same way.
    """


# --- requests and replies ------------------------------------------------------------


def _seconds(value: float) -> float | int:
    """A duration as a message shows it: 60, not 60.0."""
    return int(value) if float(value).is_integer() else value


def error_reply(code: str, params: dict[str, Any] | None = None, action: str | None = None,
                row: int | None = None, message: str | None = None) -> dict[str, Any]:
    """A refusal line: the code, its parameters and its English message."""
    params = dict(params or {})
    if message is None:
        message = i18n.message(code, params, action=action)
    return {"ok": False, "error": {"code": code, "action": action or None, "message": message,
                                   "params": params, "row": row}}


def _bad_request(problem: str) -> dict[str, Any]:
    return error_reply("bad_request", {"problem": problem})


def outcome_reply(out: Outcome) -> dict[str, Any]:
    """A desk Outcome as its reply line."""
    if out.ok:
        data = dict(out.data) if isinstance(out.data, dict) else {"result": out.data}
        reply: dict[str, Any] = {"ok": True, "data": data, "pending": bool(out.pending)}
        if out.command is not None:
            reply["command"] = out.command
        return reply
    err = out.error()
    return error_reply(err.get("code") or "refused", err.get("params"), err.get("action") or None,
                       err.get("row"), err.get("message") or out.reason)


def error_message(reply: dict[str, Any]) -> str:
    """The English words of a refusal line (also of an older unit's `"error": "words"`)."""
    err = reply.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err.get("code") or "refused")
    return str(err or "refused")


def _known() -> str:
    return ", ".join([*COMMANDS, EVENTS])


def parse_request(line: bytes) -> tuple[str, dict[str, Any], bool] | dict[str, Any]:
    """Decode one request line into (cmd, args, wait), or an error reply saying what is wrong with it."""
    try:
        request = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return _bad_request("request is not UTF-8 text")
    except ValueError as exc:  # JSONDecodeError, and ints past Python's digit limit
        return _bad_request(f"request is not valid JSON: {exc}")
    except RecursionError:  # "[[[[..." fits in one line and would otherwise escape as a crash
        return _bad_request("request is nested too deeply")
    if not isinstance(request, dict):
        return _bad_request('request must be a JSON object like {"cmd": "calls"}')
    cmd = request.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        return _bad_request(f'request has no "cmd" string; commands: {_known()}')
    args = request.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return _bad_request(f'"args" of {cmd} must be a JSON object')
    wait = request.get("wait", False)
    if wait is None:
        wait = False
    if not isinstance(wait, bool):
        return _bad_request(f'"wait" of {cmd} must be true or false, not {json.dumps(wait)[:40]}')
    return cmd, args, wait


async def dispatch(desk: Desk, cmd: str, args: dict[str, Any], wait: bool = False) -> dict[str, Any]:
    """Hand one command to the desk and return its reply line (the final outcome's, with `wait`); never raises.

    Awaited on the server's loop: the desk never blocks, so neither does this,
    however long the command then waits for SIP.
    """
    import asyncio

    checked = check_args(cmd, args)
    if isinstance(checked, tuple):  # refused before it reaches the desk: nothing happened there
        code, params = checked
        return error_reply(code, params, cmd if cmd in COMMANDS else None)
    from .desk import DeskClosed  # the unit has the desk loaded: this costs nothing there

    # Every wait is shielded: giving up on a reply must never cancel the desk's own Futures.
    try:
        reply = desk.submit(cmd, **checked)
        out = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(reply)), DESK_REPLY)
        if wait and out.pending and out.done is not None:
            try:
                out = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(out.done)), WAIT_TIMEOUT)
            except TimeoutError:
                log.warning("control: %s still running after %g s; answering that it is", cmd, WAIT_TIMEOUT)
    except TimeoutError:
        return error_reply("desk_busy", {"seconds": _seconds(DESK_REPLY)}, cmd)
    except DeskClosed:
        return error_reply("desk_stopped", {}, cmd)
    except Exception as exc:  # the desk's bug must not take the socket (or the unit) down
        log.exception("control: desk failed on %s %s", cmd, checked)
        return error_reply("internal_error", {"error": f"{type(exc).__name__}: {exc}"}, cmd)
    return outcome_reply(out)


def _encode(obj: dict[str, Any]) -> bytes:
    # default=str: an event field that is not plain JSON (a Path, say) is shown, not fatal.
    return (json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode("utf-8")


# --- the server ----------------------------------------------------------------------
#
# asyncio is imported where it is used, not at the top: `kiosk ctl` is a client and
# imports this module too, and asyncio would about double what it loads.


class _TooLong:
    """What `_Lines.pop` gives for an over-long line, once per such line."""


_TOO_LONG = _TooLong()


class _Lines:
    """Splits what a client sent into newline-terminated lines, refusing (and skipping) over-long ones.

    It does no I/O: the connection feeds it what it reads.
    """

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.skipping = False  # inside an over-long line already reported

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk

    def pop(self) -> bytes | _TooLong | None:
        """The next line without its newline, _TOO_LONG once per long line, or None: read more first."""
        while True:
            nl = self.buf.find(b"\n")
            if self.skipping:
                if nl < 0:
                    self.buf.clear()
                    return None
                del self.buf[: nl + 1]
                self.skipping = False
                continue
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[: nl + 1]
                return _TOO_LONG if len(line) > self.limit else line
            if len(self.buf) > self.limit:
                # Say so now rather than at the newline: a client that never sends one still gets an answer.
                self.buf.clear()
                self.skipping = True
                return _TOO_LONG
            return None

    def rest(self) -> bytes | None:
        """At the end of input: the last line when it had no newline, else None."""
        if not self.buf or self.skipping:
            return None
        line = bytes(self.buf)
        self.buf.clear()
        return line


class _Server:
    """One start() of a ControlServer: the listening socket and the loop thread."""

    def __init__(self, path: Path, desk: Desk, queue_size: int, idle_timeout: float | None,
                 max_clients: int) -> None:
        self.path = path
        self.desk = desk
        self.queue_size = queue_size
        self.idle_timeout = idle_timeout
        self.max_clients = max_clients
        self.inode: int | None = None
        self.clients: set[Any] = set()  # the admitted connections' StreamWriters; only the loop touches it
        self.stopping = False
        self.refusing = False  # at the cap: said once in the log, not once per refused client
        # Connections waiting for their next request, and since when: at the cap the longest
        # idle one makes room, so a flood of idle clients never locks out `kiosk ctl calls`.
        self.idle_since: dict[Any, float] = {}
        self.loop: Any = None
        self.thread: threading.Thread | None = None
        self.server: Any = None

    # --- start and stop, on the caller's thread ---------------------------------------

    def start(self) -> None:
        import asyncio

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bound and made to listen under a temporary name, then renamed into place: the socket
        # file appears only once it takes connections (a script waiting for the file is never
        # refused), and nobody can connect while it still has the umask's mode.
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        bound = renamed = False
        try:
            tmp.unlink(missing_ok=True)
            sock.bind(str(tmp))
            bound = True
            os.chmod(tmp, 0o660)
            sock.listen(BACKLOG)  # now, so that a client right after start() is queued, not refused
            os.rename(tmp, self.path)
            renamed = True
            self.inode = os.stat(self.path).st_ino
            self.loop = asyncio.new_event_loop()
            self.thread = threading.Thread(target=self.loop.run_forever, name="kiosk-control", daemon=True)
            self.thread.start()
            asyncio.run_coroutine_threadsafe(self._listen(sock), self.loop).result(timeout=10)
        except BaseException:
            sock.close()
            self._end_loop()
            if renamed:
                self.path.unlink(missing_ok=True)
            elif bound:
                tmp.unlink(missing_ok=True)
            raise

    def stop(self) -> None:
        import asyncio

        try:
            asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(timeout=5)
        except Exception as exc:  # a wedged loop must not keep the unit from stopping
            log.warning("control: closing the connections failed: %r", exc)
        self._end_loop()

    def _end_loop(self) -> None:
        if self.loop is not None and self.thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
            if not self.thread.is_alive():
                self.loop.close()
        elif self.loop is not None:  # start() failed before the thread ran it
            self.loop.close()
        # A desk command still waiting for SIP goes on in the desk; its reply has nowhere to go any more.

    # --- on the loop thread --------------------------------------------------------------

    async def _listen(self, sock: socket.socket) -> None:
        import asyncio

        self.server = await asyncio.start_unix_server(self._connection, sock=sock, backlog=BACKLOG)

    async def _close(self) -> None:
        """Stop accepting and end every connection, event streams included."""
        import asyncio

        self.stopping = True
        if self.server is not None:
            self.server.close()
        for writer in list(self.clients):
            writer.transport.abort()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    async def _connection(self, reader: Any, writer: Any) -> None:
        """One client connection: request/reply lines until it asks for `events`, closes or idles."""
        if self.stopping:
            writer.transport.abort()
            return
        if len(self.clients) >= self.max_clients and not self._evict_idlest():
            self._refuse(writer)
            return
        self.clients.add(writer)
        try:
            await self._requests(reader, writer)
            writer.close()  # after what is still to be sent
            if self.idle_timeout is not None and writer.transport.get_write_buffer_size():
                # ... but not forever to a client that never reads it.
                self.loop.call_later(self.idle_timeout, writer.transport.abort)
        except TimeoutError:  # (an OSError too) a client that does not read its replies
            log.info("control: a client did not read its reply in %g s; closing it", self.idle_timeout)
            writer.transport.abort()
        except OSError as exc:  # the client vanished mid-reply, or stop() ended the connection
            log.debug("control: connection ended: %s", exc)
            writer.transport.abort()
        except Exception:  # a bug here must cost one connection, never the socket
            log.exception("control: connection failed")
            writer.transport.abort()
        finally:
            self.clients.discard(writer)
            self.idle_since.pop(writer, None)
            if self.refusing and len(self.clients) < self.max_clients:
                self.refusing = False
                log.info("control: below %d clients again; accepting new ones", self.max_clients)

    def _evict_idlest(self) -> bool:
        """At the cap: close the connection that has waited longest for a request, to let one in."""
        if not self.idle_since:
            return False  # every connection is a stream or mid-command: nobody to drop
        idlest = min(self.idle_since, key=self.idle_since.__getitem__)
        waited = self.loop.time() - self.idle_since.pop(idlest)
        log.info("control: at %d clients; closing the one idle longest (%.0f s) to let a new one in",
                 self.max_clients, waited)
        idlest.write(_encode(error_reply("evicted", {"max": self.max_clients, "seconds": round(waited)})))
        idlest.close()
        self.clients.discard(idlest)
        return True

    def _refuse(self, writer: Any) -> None:
        """Over the cap: tell the client why in one line and close, rather than leave it waiting."""
        if not self.refusing:
            self.refusing = True
            log.warning("control: %d clients connected, the most allowed; refusing new ones until one leaves",
                        self.max_clients)
        writer.write(_encode(error_reply("too_many_clients", {"max": self.max_clients})))
        writer.close()

    async def _requests(self, reader: Any, writer: Any) -> None:
        import asyncio

        lines = _Lines()
        idle = self.idle_timeout
        last = self.loop.time()  # of the last reply: a connection that sends nothing for `idle` s is closed
        while not self.stopping:
            line = lines.pop()
            if line is None:
                self.idle_since.setdefault(writer, self.loop.time())
                try:
                    async with asyncio.timeout_at(None if idle is None else last + idle):
                        chunk = await reader.read(65536)
                except TimeoutError:
                    log.debug("control: closing a connection idle for %g s", idle)
                    await self._send(writer, error_reply("idle_closed", {"seconds": _seconds(idle)}))
                    return
                if chunk:
                    lines.feed(chunk)
                    if b"\n" in chunk:
                        self.idle_since.pop(writer, None)  # a request is in: busy until it is answered
                    continue
                line = lines.rest()  # end of input; a last line without its newline is still answered
                if line is None:
                    return
            if isinstance(line, _TooLong):
                reply = error_reply("line_too_long", {"limit": MAX_LINE})
            elif not line.strip():
                continue  # a blank line (e.g. from a hand-typed socat session) is no request
            else:
                parsed = parse_request(line)
                if isinstance(parsed, dict):
                    reply = parsed
                else:
                    cmd, args, wait = parsed
                    if cmd == EVENTS:
                        await self._stream(reader, writer)
                        return
                    shown = {k: ("[digits]" if k in ("digits", "key") else v) for k, v in args.items()} \
                        if isinstance(args, dict) else args  # tones are PINs: never in a log
                    log.debug("control: %s %s%s", cmd, shown, " (wait)" if wait else "")
                    reply = await dispatch(self.desk, cmd, args, wait)
            await self._send(writer, reply)
            last = self.loop.time()

    async def _send(self, writer: Any, obj: dict[str, Any]) -> None:
        import asyncio

        writer.write(_encode(obj))
        async with asyncio.timeout(self.idle_timeout):
            await writer.drain()

    async def _stream(self, reader: Any, writer: Any) -> None:
        """Send the snapshot, then every desk event, until the client closes or is too slow."""
        import asyncio

        loop = self.loop
        events: queue.Queue[ev.Event] = queue.Queue(maxsize=self.queue_size)
        dropped = threading.Event()
        wake = asyncio.Event()  # set on the loop only, hence call_soon_threadsafe
        unsubscribed: list[Callable[[], None]] = []

        def on_loop(callback: Callable[[], None]) -> None:
            try:
                loop.call_soon_threadsafe(callback)
            except RuntimeError:  # the loop is closed: the stream is over anyway
                pass

        def listener(event: ev.Event) -> None:
            # Runs on the desk's thread, inside a step of its loop: never block here.
            if dropped.is_set():
                return
            try:
                events.put_nowait(event)
            except queue.Full:
                dropped.set()
                for unsubscribe in unsubscribed:
                    unsubscribe()
                log.warning("control: event client too slow, %d events queued; dropping it", self.queue_size)
                on_loop(writer.transport.abort)  # also ends a drain() waiting on that client
                return
            on_loop(wake.set)

        async def open_stream() -> dict[str, Any] | None:
            # Subscribe before the snapshot: an event in between is then sent twice (harmless,
            # every row event carries the whole row) rather than lost. The snapshot is the
            # `calls` command, awaited like any other: the desk takes it within milliseconds.
            unsubscribed.append(self.desk.subscribe(listener))
            reply = await dispatch(self.desk, "calls", {})
            if not reply.get("ok"):
                await self._send(writer, reply)
                return None
            return dict(reply["data"])

        def close_stream() -> None:
            for unsubscribe in unsubscribed:
                unsubscribe()

        async def client_gone() -> None:
            # Anything the client sends during a stream is ignored; its end ends the stream.
            try:
                while await reader.read(65536):
                    pass
            except OSError:
                pass
            wake.set()

        gone = None
        try:
            snapshot = await open_stream()
            if snapshot is None:
                return
            log.info("control: event stream opened")
            await self._stream_send(writer, {"event": "snapshot", **snapshot})
            gone = asyncio.create_task(client_gone())
            while not dropped.is_set() and not gone.done() and not self.stopping:
                wake.clear()
                try:
                    event = events.get_nowait()
                except queue.Empty:
                    await wake.wait()
                    continue
                await self._stream_send(writer, event.as_json())
        except OSError as exc:
            log.debug("control: event stream ended: %s", exc)
        finally:
            if gone is not None:
                gone.cancel()
            close_stream()  # the listeners' lock is only ever held briefly: fine on the loop
            if unsubscribed:
                log.info("control: event stream closed")
        if dropped.is_set():
            writer.transport.abort()

    async def _stream_send(self, writer: Any, obj: dict[str, Any]) -> None:
        # No timeout here: a stream that cannot keep up fills its queue and is dropped by that.
        writer.write(_encode(obj))
        await writer.drain()


class ControlServer:
    """The control socket of one unit: `start()` serves it in the background, `stop()` removes it.

    `idle_timeout` (seconds, or None for never) closes a connection that sends no request for
    that long (an `events` stream is never idle); `max_clients` caps the open connections
    (see the module constants).
    """

    def __init__(self, desk: Desk, path: Path, queue_size: int = EVENT_QUEUE, *,
                 idle_timeout: float | None = IDLE_TIMEOUT, max_clients: int = MAX_CLIENTS) -> None:
        if queue_size < 1:  # queue.Queue(0) is unbounded: exactly what a slow client must not get
            raise ValueError(f"queue_size must be at least 1, not {queue_size}")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be positive (or None for none), not {idle_timeout}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, not {max_clients}")
        self.desk = desk
        self.path = Path(path)
        self.queue_size = queue_size
        self.idle_timeout = idle_timeout
        self.max_clients = max_clients
        self._server: _Server | None = None

    @property
    def connections(self) -> int:
        """How many client connections are open now (event streams included)."""
        server = self._server
        return 0 if server is None else len(server.clients)

    def start(self) -> None:
        """Bind the socket (mode 0660) and serve it on a daemon thread."""
        if self._server is not None:
            return
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            raise ControlError(f"control socket path {self.path} is longer than {MAX_SOCKET_PATH} bytes")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale()
        server = _Server(self.path, self.desk, self.queue_size, self.idle_timeout, self.max_clients)
        server.start()
        self._server = server
        log.info("control socket listening at %s", self.path)

    def stop(self) -> None:
        """Stop serving, end open connections (event streams included) and remove the socket file."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
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
    # A full listen backlog makes connect() fail with EAGAIN at once (a blocking socket would
    # wait, one with a timeout does not): retry that briefly, it clears as the unit accepts.
    wait = CONNECT_WAIT if timeout is None else min(CONNECT_WAIT, timeout)
    deadline = time.monotonic() + wait
    pause = 0.002
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            return sock
        except BlockingIOError:
            sock.close()
            if time.monotonic() >= deadline:
                raise ControlError(f"the kiosk at {path} is too busy to accept a connection "
                                   f"(tried for {wait:g} s)") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        except OSError as exc:
            sock.close()
            raise _connect_error(path, exc) from None


def _connect_error(path: Path | str, exc: OSError) -> ControlError:
    if isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
        return ControlError(f"no kiosk is running at {path} (is `kiosk run` started?)")
    if isinstance(exc, PermissionError):
        return ControlError(f"no permission to use {path} (is this user in the socket's group?)")
    return ControlError(f"cannot connect to the kiosk at {path}: {exc}")


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


def _send_request(sock: socket.socket, path: Path | str, body: dict[str, Any]) -> None:
    try:
        sock.sendall(_encode(body))
    except OSError as exc:
        # The unit may have answered and closed before the request went out (that is how it
        # turns away a client beyond its cap): then its line is there to be read all the same.
        if not _unread(sock):
            raise ControlError(f"lost the kiosk at {path}: {exc}") from None


def _unread(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:
        return False


def request(path: Path | str, cmd: str, /, *, wait: bool = False, **args: Any) -> dict[str, Any]:
    """Send one command; return the reply line (see the module docstring for its shapes).

    `wait`: the reply comes when the command's final outcome is known (a pickup
    answered or given up, say) instead of as soon as the desk accepted it. A
    refusal by the desk is a normal reply (the caller shows its message); only a
    socket that cannot be used raises, as ControlError.
    """
    body: dict[str, Any] = {"cmd": cmd}
    if args:
        body["args"] = args
    if wait:
        body["wait"] = True
    sock = _connect(path, REQUEST_TIMEOUT)
    try:
        _send_request(sock, path, body)
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
        _send_request(sock, path, {"cmd": EVENTS})
    except ControlError:
        sock.close()
        raise
    return sock


def stream_events(path: Path | str) -> Iterator[dict[str, Any]]:
    """The snapshot, then every desk event, as dicts, until the unit goes away or the caller stops."""
    sock = open_events(path)
    try:
        sock.settimeout(None)  # events may be minutes apart
        for obj in json_lines(sock, path):
            if obj.get("ok") is False:
                raise ControlError(error_message(obj))
            yield obj
    finally:
        sock.close()


# --- kiosk ctl -----------------------------------------------------------------------
#
# The subcommands and their --help come from kiosk.commands.COMMANDS: a command added
# there is a `kiosk ctl` subcommand without a line here.

#: Exit codes of `kiosk ctl`: 0 done, 1 refused by the unit (reason on stderr),
#: 2 bad command line (argparse's own), 3 no unit to talk to.
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_UNIT = 0, 1, 2, 3

_CTL_EPILOG = """\
Every command but `events` waits for its final outcome (a pickup answered or given up, a
consultation dialled), prints its data as JSON and exits 0 when it worked, 1 when the unit
refused it or it failed (the reason on stderr), 3 when no unit answers. --no-wait returns as
soon as the unit accepted it, printing "pending": true and the "command" id when it still runs:
its outcome then comes as an action_done or action_failed event of `kiosk ctl events`."""


def _add_arg(parser: argparse.ArgumentParser, arg: Arg) -> None:
    """One argument of the command table as argparse takes it."""
    kw: dict[str, Any] = {"help": arg.help}
    if arg.choices:
        kw["choices"] = arg.choices
    if arg.type == "rows":
        kw.update(nargs="*", type=int, metavar="ROW")
        kw["default"] = list(arg.default) if arg.default is not None else None
    elif arg.type == "int":
        kw["type"] = int
    elif arg.type == "bool":
        kw["action"] = argparse.BooleanOptionalAction
    if arg.type != "rows" and not arg.choices and arg.type != "bool":
        kw["metavar"] = arg.name.upper()
    if arg.option:
        if arg.required:
            kw["required"] = True
        if arg.type != "rows":
            kw["default"] = arg.default
        parser.add_argument(f"--{arg.name}", dest=arg.name, **kw)
        return
    if arg.type == "bool":  # a positional true/false makes no sense on a command line
        kw.pop("action")
        kw.update(type=lambda v: v.lower() in ("1", "true", "yes", "on"), metavar=arg.name.upper())
    if arg.type != "rows" and not arg.required:
        kw.update(nargs="?", default=arg.default)
    parser.add_argument(arg.name, **kw)


def _ctl_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiosk ctl", description="Drive this unit's call-control panel.",
                                     epilog=_CTL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", dest="_socket", type=Path, default=None, metavar="PATH",
                        help="the unit's control socket (default: $KIOSK_SOCKET or /run/kiosk/control.sock)")
    parser.add_argument("--no-wait", dest="_no_wait", action="store_true",
                        help="return as soon as the unit accepted the command, not when it is done")
    parser.add_argument("--json", dest="_json", action="store_true",
                        help="on a refusal, also print the error object (code, action, message, params, row) "
                             "as JSON on stdout")
    sub = parser.add_subparsers(dest="_cmd", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        p = sub.add_parser(command.name, help=command.help, description=_describe(command))
        for arg in command.args:
            _add_arg(p, arg)
    sub.add_parser(EVENTS, help="print the snapshot, then every desk event, one JSON line each",
                   description="Print the panel's snapshot, then every desk event, one JSON line each, "
                               "until the unit stops (exit 3) or Ctrl-C (exit 0).")
    return parser


def _describe(command: Command) -> str:
    text = command.help[:1].upper() + command.help[1:] + "."
    if command.reads:
        return text
    return text + " Waits for the outcome unless `kiosk ctl --no-wait` is given."


def _ctl_args(ns: argparse.Namespace) -> dict[str, Any]:
    """The request args of a parsed command line; an absent optional argument is not sent at all."""
    command = COMMANDS[ns._cmd]
    values = {arg.name: getattr(ns, arg.name, None) for arg in command.args}
    return {k: v for k, v in values.items() if v is not None}


def _print_json(obj: Any, indent: int | None = 2) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=indent), flush=True)


def ctl_main(argv: list[str], socket_path: Path | str | None = None) -> int:
    """`kiosk ctl ...`: one command to the running unit; returns the exit code.

    `socket_path` is the default socket; `kiosk ctl --socket PATH` overrides it.
    """
    try:
        ns = _ctl_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors; the caller decides
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    path = ns._socket or socket_path or Path(os.environ.get("KIOSK_SOCKET", "/run/kiosk/control.sock"))
    try:
        if ns._cmd == EVENTS:
            return _ctl_events(path)
        reply = request(path, ns._cmd, wait=not ns._no_wait, **_ctl_args(ns))
    except ControlError as exc:
        print(f"kiosk ctl: {exc}", file=sys.stderr)
        return EXIT_NO_UNIT
    if reply.get("ok"):
        data = reply.get("data", {})
        still = bool(reply.get("pending"))
        if isinstance(data, dict):
            if still:  # --no-wait, or a wait that outlasted the unit's WAIT_TIMEOUT: which command to follow
                data = {**data, "pending": True, "command": reply.get("command")}
        _print_json(data)
        if still and not ns._no_wait:
            print(f"kiosk ctl {ns._cmd}: still running after {WAIT_TIMEOUT:g} s; its outcome comes as an "
                  "action_done or action_failed event", file=sys.stderr)
            return EXIT_REFUSED
        return EXIT_OK
    if ns._json and isinstance(reply.get("error"), dict):
        _print_json(reply["error"])
    print(f"kiosk ctl {ns._cmd}: {error_message(reply)}", file=sys.stderr)
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
