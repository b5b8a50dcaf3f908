"""Provisioning from a server: the unit fetches its own profile, at start and every interval_minutes.

The profile's ``[provisioning]`` section names a URL with placeholders for this
unit (``{mac}``: the MAC address of the interface that carries the default
route, lower-case hex without colons, e.g. ``001122aabbcc``; ``{hostname}``:
the host name), how often to check, and how to trust and authenticate to the
server (``ca_file``; a bearer token from ``token_file`` or basic auth from
``username`` + ``password_file``). The server is any web server serving one
file per unit (nginx, Apache, an object store): nothing here is home-made.

A check is one GET with ``If-None-Match`` / ``If-Modified-Since`` from the
last file applied (kept in the state directory), so a file that did not change
costs a 304 and nothing else. A 200 hands the bytes to the reload path
(``Reloader.apply_bytes``: validate, apply without dropping calls, keep as the
last good profile); a file byte-for-byte the one in force is not applied
again. Anything else (no DNS, refused, TLS, 401/404/5xx, a timeout, a file
with mistakes) keeps the current profile and is said in the log and in
``kiosk ctl status`` (`Provisioner.status`).

Threads: checks run on a thread of their own (``kiosk-provisioning``), never on
the desk loop, the agent thread or the control socket's loop; the only call
into the unit is ``apply_bytes``. After a failed check the next one comes
sooner (15 s, doubling, at most the interval), so a unit that booted before its
network or its server recovers within a minute or so.

HTTP: `requests` (with its urllib3): pure Python, on every platform, already in
the unit's environment through Kivy, and what the maintainers of a fleet
server know. TLS is an `ssl.SSLContext` made here once, from ``ca_file`` or the
system's store (not certifi's bundle, which requests would otherwise load on
every connection), and handed to urllib3.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .profile import MAX_PROFILE_BYTES, Provisioning

if TYPE_CHECKING:
    import requests

log = logging.getLogger("kiosk.provisioning")

#: The validators and checksum of the last file applied, and the file itself (the copy the
#: unit falls back on when the server cannot be reached and the profile in force is not it).
STATE_FILE = "provisioning.json"
CACHE_FILE = "provisioned-profile.toml"
#: After a failed check the next one comes after this, doubling up to the interval.
RETRY_FIRST = 15.0
#: Periodic checks are spread by up to this fraction of the interval, so that a fleet that
#: powered up together does not ask the server all in the same second, every interval.
JITTER = 0.1
MAX_REDIRECTS = 5

ROUTE_FILE = Path("/proc/net/route")
SYS_NET = Path("/sys/class/net")


class Reloads(Protocol):
    """What provisioning needs of kiosk.reload.Reloader."""

    profile_source: str

    def apply_bytes(self, data: bytes, source: str) -> Any: ...


# --- who this unit is ---------------------------------------------------------------


def default_interface(route_file: Path = ROUTE_FILE) -> str | None:
    """The interface of the IPv4 default route (the lowest metric when there are several)."""
    try:
        rows = route_file.read_text().splitlines()[1:]
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for row in rows:
        cols = row.split()
        if len(cols) < 8:
            continue
        iface, dest, flags, metric, mask = cols[0], cols[1], cols[3], cols[6], cols[7]
        try:
            up = int(flags, 16) & 0x1  # RTF_UP
            metric_n = int(metric)
        except ValueError:
            continue
        if dest == "00000000" and mask == "00000000" and up and (best is None or metric_n < best[0]):
            best = (metric_n, iface)
    return best[1] if best else None


def _mac_of(iface: str, sys_net: Path) -> str | None:
    try:
        mac = (sys_net / iface / "address").read_text().strip().lower()
    except OSError:
        return None
    digits = mac.replace(":", "")
    if len(digits) != 12 or not all(c in "0123456789abcdef" for c in digits) or digits == "0" * 12:
        return None
    return digits


def unit_mac(route_file: Path = ROUTE_FILE, sys_net: Path = SYS_NET) -> tuple[str, str] | None:
    """(MAC as 12 lower-case hex digits, interface) of the default-route interface.

    Without a default route (yet), the first interface by name with a real MAC
    (not lo, not all zeros): a unit on a network without a gateway still has a name.
    """
    iface = default_interface(route_file)
    if iface:
        mac = _mac_of(iface, sys_net)
        if mac:
            return mac, iface
    try:
        names = sorted(p.name for p in sys_net.iterdir())
    except OSError:
        return None
    for name in names:
        if name == "lo":
            continue
        mac = _mac_of(name, sys_net)
        if mac:
            return mac, name
    return None


def unit_hostname() -> str:
    return socket.gethostname()


def expand_url(template: str, mac: str | None, hostname: str) -> str:
    """The template with this unit's values; ValueError when it needs a MAC the unit cannot find."""
    if "{mac}" in template and not mac:
        raise ValueError("cannot tell this unit's MAC address for {mac}: no network interface with one")
    url = template.replace("{mac}", mac or "")
    return url.replace("{hostname}", urllib.parse.quote(hostname, safe=""))


def request_headers(config: Provisioning, validators: dict[str, str] | None, user_agent: str) -> dict[str, str]:
    """The headers of one check: authentication, and the conditional ones when a version is in force."""
    headers = {"User-Agent": user_agent, "Accept": "application/toml, text/plain;q=0.9, */*;q=0.1"}
    if config.token:
        headers["Authorization"] = f"Bearer {config.token}"
    if validators:
        if validators.get("etag"):
            headers["If-None-Match"] = validators["etag"]
        if validators.get("last_modified"):
            headers["If-Modified-Since"] = validators["last_modified"]
    return headers


# --- what a check found ----------------------------------------------------------------


@dataclass
class CheckResult:
    """One provisioning check, as `kiosk ctl status` shows it."""

    at: float  # epoch, when the check ended
    outcome: str  # "applied" | "unchanged" | "refused" (a bad file) | "failed" (no file)
    url: str
    http_status: int | None = None
    reason: str = ""  # plain words: what happened, and for a failure why
    errors: list[str] = field(default_factory=list)  # the file's mistakes, when refused
    applied: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the check

    @property
    def ok(self) -> bool:
        return self.outcome in ("applied", "unchanged")

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at_iso"] = _iso(self.at)
        data["seconds"] = round(self.seconds, 3)
        return data


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(epoch))


class FetchError(Exception):
    """A fetch that got no usable answer; str() says why, for a person."""

    def __init__(self, reason: str, http_status: int | None = None) -> None:
        super().__init__(reason)
        self.http_status = http_status


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and every one it wraps (requests -> urllib3 -> socket/ssl)."""
    seen: list[BaseException] = []
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or any(e is s for s in seen):
            continue
        seen.append(e)
        todo.extend([getattr(e, "reason", None), e.__cause__, e.__context__, *getattr(e, "args", ())])
    return seen


def explain(exc: BaseException, host: str, timeout: float) -> str:
    """Why a request failed, in the words a maintainer needs (DNS, refused, TLS, timeout)."""
    import requests

    chain = _chain(exc)
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS: the certificate of {host} is not trusted: {e.verify_message or e.reason}"
    for e in chain:
        if isinstance(e, ssl.SSLError):
            return f"TLS with {host} failed: {e.reason or e}"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS with {host} failed: {exc}"
    if isinstance(exc, requests.exceptions.Timeout) or any(isinstance(e, (TimeoutError, socket.timeout))
                                                           for e in chain):
        return f"{host} did not answer within {timeout:g} s"
    for e in chain:
        if isinstance(e, socket.gaierror):
            return f"cannot resolve {host}: {e.strerror or e}"
        if isinstance(e, ConnectionRefusedError):
            return f"{host} refused the connection (no server listening there)"
        if isinstance(e, OSError) and e.strerror:
            return f"cannot reach {host}: {e.strerror}"
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return f"more than {MAX_REDIRECTS} redirects from {host}"
    return f"request to {host} failed: {exc}"


def _status_reason(status: int, phrase: str, url: str, config: Provisioning) -> str:
    words = f"{status} {phrase}".strip()
    if status in (401, 403):
        how = ("the token in token_file" if config.token else
               "username and password_file" if config.username else "no credentials are configured")
        return f"the server refused this unit: {words} (check {how})"
    if status == 404:
        return f"the server has no file for this unit: {words} at {url}"
    if 500 <= status < 600:
        return f"server error: {words}"
    return f"unexpected answer: {words}"


# --- the HTTP side ---------------------------------------------------------------------


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate and host name checked; against ca_file alone when given, else the system's store."""
    if ca_file is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_file))


def _adapter_class() -> type:
    from requests.adapters import HTTPAdapter

    class _ContextAdapter(HTTPAdapter):
        """An adapter whose TLS is exactly the context given (no certifi bundle loaded per connection)."""

        def __init__(self, context: ssl.SSLContext) -> None:
            self._context = context
            super().__init__(max_retries=0)

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = self._context
            super().init_poolmanager(*args, **kwargs)

        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            conn.cert_reqs = "CERT_REQUIRED"  # the context holds the trust: nothing more is loaded
            conn.ca_certs = None
            conn.ca_cert_dir = None

    return _ContextAdapter


@dataclass
class Answer:
    status: int
    reason: str
    etag: str | None
    last_modified: str | None
    body: bytes
    url: str  # after redirects


class Fetcher:
    """GETs over one requests Session; the TLS context is made once per ca_file (and its mtime)."""

    def __init__(self) -> None:
        self._session: requests.Session | None = None
        self._key: tuple[Any, ...] | None = None

    def _session_for(self, config: Provisioning) -> "requests.Session":
        ca = config.ca_file
        try:
            stamp = ca.stat().st_mtime_ns if ca is not None else None
        except OSError as exc:
            raise FetchError(f"cannot read ca_file {ca}: {exc.strerror}") from None
        key = (ca, stamp)
        if self._session is None or self._key != key:
            import requests

            try:
                context = tls_context(ca)
            except (ssl.SSLError, OSError) as exc:
                raise FetchError(f"cannot use ca_file {ca}: {exc}") from None
            session = requests.Session()
            session.trust_env = False  # no proxy, .netrc or CA bundle from the environment: the profile decides
            session.max_redirects = MAX_REDIRECTS
            session.mount("https://", _adapter_class()(context))
            if self._session is not None:
                self._session.close()
            self._session, self._key = session, key
        return self._session

    def get(self, url: str, config: Provisioning, headers: dict[str, str]) -> Answer:
        import requests

        session = self._session_for(config)
        host = urllib.parse.urlsplit(url).netloc
        timeout = float(config.timeout_seconds)
        # As bytes: requests would encode str credentials as Latin-1, and fail on other letters.
        auth = (config.username.encode(), config.password.encode()) if config.username else None
        deadline = time.monotonic() + 3 * timeout  # a server that trickles bytes is not waited on forever
        try:
            with session.get(url, headers=headers, auth=auth, timeout=(timeout, timeout), stream=True,
                             allow_redirects=True) as resp:
                if not resp.url.lower().startswith("https://"):
                    raise FetchError(f"{host} redirected to {resp.url.split('?')[0]}, which is not https://")
                body = b""
                if resp.status_code == 200:
                    chunks: list[bytes] = []
                    size = 0
                    for chunk in resp.iter_content(65536):
                        chunks.append(chunk)
                        size += len(chunk)
                        if size > MAX_PROFILE_BYTES:
                            raise FetchError(f"the file at {url} is over {MAX_PROFILE_BYTES} bytes, far too "
                                             "big for a profile", 200)
                        if time.monotonic() > deadline:
                            raise FetchError(f"{host} took over {3 * timeout:g} s to send the file", 200)
                    body = b"".join(chunks)
                return Answer(resp.status_code, resp.reason or "", resp.headers.get("ETag"),
                              resp.headers.get("Last-Modified"), body, resp.url)
        except FetchError:
            raise
        except requests.exceptions.RequestException as exc:
            raise FetchError(explain(exc, host, timeout)) from None
        except (OSError, ValueError) as exc:  # anything urllib3 lets through
            raise FetchError(explain(exc, host, timeout)) from None
        finally:
            session.close()  # minutes until the next check: hold no connection open meanwhile

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


# --- the state kept between checks and restarts ----------------------------------------


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    from .reload import write_atomically  # the one atomic writer (temp file, fsync, rename, never /etc)

    write_atomically(path, data, mode)


class State:
    """`provisioning.json` and the cached copy, in the unit's state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data: dict[str, Any] = {}
        try:
            loaded = json.loads((directory / STATE_FILE).read_text())
            if isinstance(loaded, dict):
                self.data = loaded
        except (OSError, ValueError):
            pass

    def validators(self, url: str) -> dict[str, str] | None:
        if self.data.get("url") != url:
            return None
        found = {k: self.data[k] for k in ("etag", "last_modified") if isinstance(self.data.get(k), str)}
        return found or None

    def sha256(self, url: str) -> str | None:
        return self.data.get("sha256") if self.data.get("url") == url else None

    def remember(self, url: str, answer: Answer, body: bytes) -> None:
        self.data = {"url": url, "etag": answer.etag, "last_modified": answer.last_modified,
                     "sha256": hashlib.sha256(body).hexdigest(), "fetched_at": time.time()}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.directory / CACHE_FILE, body)
            _write_atomic(self.directory / STATE_FILE, json.dumps(self.data, indent=1).encode())
        except OSError as exc:
            log.warning("provisioning: cannot keep the state in %s: %s (the next check fetches the whole "
                        "file again)", self.directory, exc)

    def refreshed(self, answer: Answer) -> None:
        """A 304 or an identical 200 may carry new validators: keep them."""
        changed = False
        for key, value in (("etag", answer.etag), ("last_modified", answer.last_modified)):
            if value and self.data.get(key) != value:
                self.data[key], changed = value, True
        if changed:
            try:
                _write_atomic(self.directory / STATE_FILE, json.dumps(self.data, indent=1).encode())
            except OSError:
                pass

    def cached_copy(self, url: str) -> bytes | None:
        """The last file applied from `url`, if it is still the one the state describes."""
        want = self.sha256(url)
        if not want:
            return None
        try:
            data = (self.directory / CACHE_FILE).read_bytes()
        except OSError:
            return None
        return data if hashlib.sha256(data).hexdigest() == want else None


# --- the provisioner -------------------------------------------------------------------


class Provisioner:
    """Checks the server at start, then every interval, on its own thread.

    `settings()` gives the [provisioning] section of the profile in force: a
    profile fetched without one keeps the settings the unit has (a fleet file
    need not repeat them, and leaving them out cannot cut a unit off its server);
    one with a changed section takes effect from the next check.
    """

    def __init__(self, settings: Callable[[], Provisioning | None], reloader: Reloads, state_dir: Path, *,
                 identity: Callable[[], tuple[str, str] | None] = unit_mac,
                 hostname: Callable[[], str] = unit_hostname, user_agent: str | None = None,
                 jitter: float = JITTER, retry_first: float = RETRY_FIRST) -> None:
        self.settings = settings
        self.reloader = reloader
        self.state = State(Path(state_dir))
        self.identity = identity
        self.hostname = hostname
        self.user_agent = user_agent or f"kiosk/{_version()}"
        self.jitter = jitter
        self.retry_first = retry_first
        self.config: Provisioning | None = settings()
        self.fetcher = Fetcher()
        self.last: CheckResult | None = None
        self.last_ok: CheckResult | None = None
        self.failures = 0  # in a row
        self.checks = 0
        self.next_at: float | None = None
        self._lock = threading.Lock()  # one check at a time
        self._wake = threading.Event()
        self._fresh = False  # the next check asks for the whole file (see check_soon)
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- one check -------------------------------------------------------------------

    def _current(self) -> Provisioning | None:
        try:
            new = self.settings()
        except Exception:  # the desk's profile unreadable for a moment: keep what we have
            new = None
        if new is not None and new != self.config:
            if self.config is not None:
                log.info("provisioning: settings changed: %s every %d min", new.url, new.interval_minutes)
            self.config = new
        return self.config

    def check(self) -> CheckResult:
        """Fetch the profile once and hand a new one to the reload path; never raises."""
        with self._lock:
            started = time.monotonic()
            try:
                result = self._check()
            except Exception as exc:  # a bug here must not end the thread (or the unit)
                log.exception("provisioning: check failed")
                result = CheckResult(time.time(), "failed", self.config.url if self.config else "",
                                     reason=f"internal error {type(exc).__name__}: {exc}")
            result.seconds = time.monotonic() - started
            self.checks += 1
            self.last = result
            if result.ok:
                self.last_ok = result
                self.failures = 0
            else:
                self.failures += 1
            self._log(result)
            return result

    def _check(self) -> CheckResult:
        config = self._current()
        if config is None:
            return CheckResult(time.time(), "failed", "", reason="no [provisioning] section in the profile")
        found = self.identity()
        try:
            url = expand_url(config.url, found[0] if found else None, self.hostname())
        except ValueError as exc:
            return CheckResult(time.time(), "failed", config.url, reason=str(exc))
        fresh, self._fresh = self._fresh, False
        in_force = not fresh and getattr(self.reloader, "profile_source", None) == url
        headers = request_headers(config, self.state.validators(url) if in_force else None,
                                  f"{self.user_agent} ({found[0]})" if found else self.user_agent)
        try:
            answer = self.fetcher.get(url, config, headers)
        except FetchError as exc:
            result = CheckResult(time.time(), "failed", url, exc.http_status, str(exc))
            return self._fall_back(result, url, in_force)
        if answer.status == 304:
            if not in_force:  # no conditional request was made: a broken server or cache in between
                return self._fall_back(CheckResult(time.time(), "failed", url, 304,
                                                   "304 Not Modified to a request that was not conditional"),
                                       url, in_force)
            self.state.refreshed(answer)
            return CheckResult(time.time(), "unchanged", url, 304, "not modified since the file in force")
        if answer.status != 200:
            result = CheckResult(time.time(), "failed", url, answer.status,
                                 _status_reason(answer.status, answer.reason, url, config))
            return self._fall_back(result, url, in_force)
        digest = hashlib.sha256(answer.body).hexdigest()
        if in_force and digest == self.state.sha256(url):
            self.state.refreshed(answer)
            return CheckResult(time.time(), "unchanged", url, 200, "the same file as the one in force")
        outcome = self.reloader.apply_bytes(answer.body, source=url)
        if not getattr(outcome, "ok", False):
            errors = [str(e) for e in getattr(outcome, "errors", [])]
            first = f": {errors[0]}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "") if errors else ""
            result = CheckResult(time.time(), "refused", url, 200,
                                 f"the server's file was refused, the current profile stays{first}", errors)
            return self._fall_back(result, url, in_force)
        self.state.remember(url, answer, answer.body)
        applied = [str(a) for a in getattr(outcome, "applied", [])]
        waiting = [str(w) for w in getattr(outcome, "waiting", [])]
        return CheckResult(time.time(), "applied", url, 200, "a new profile was applied", [], applied, waiting)

    def _fall_back(self, result: CheckResult, url: str, in_force: bool) -> CheckResult:
        """No file from the server: when the profile in force is not the last one it sent, use that copy."""
        if in_force:
            return result
        cached = self.state.cached_copy(url)
        if cached is None:
            return result
        outcome = self.reloader.apply_bytes(cached, source=url)
        when = _iso(self.state.data.get("fetched_at")) or "earlier"
        if getattr(outcome, "ok", False):
            result.reason += f"; running on the copy of its file fetched at {when}"
            result.applied = [str(a) for a in getattr(outcome, "applied", [])]
            result.waiting = [str(w) for w in getattr(outcome, "waiting", [])]
        else:
            result.reason += f"; the copy of its file fetched at {when} was refused too"
        return result

    def _log(self, result: CheckResult) -> None:
        extra = {"ACTION": "provisioning", "OUTCOME": result.outcome, "URL": result.url,
                 "HTTP_STATUS": "" if result.http_status is None else str(result.http_status)}
        if result.outcome == "applied":
            log.info("provisioning: applied the profile from %s%s%s", result.url,
                     "; changed: " + "; ".join(result.applied) if result.applied else "",
                     "; waiting: " + "; ".join(result.waiting) if result.waiting else "", extra=extra)
        elif result.outcome == "unchanged":
            log.debug("provisioning: %s: %s", result.url, result.reason, extra=extra)
        elif result.outcome == "refused":
            log.error("provisioning: %s: %s", result.url, result.reason, extra=extra)
            for error in result.errors[1:]:
                log.error("provisioning: %s: %s", result.url, error, extra=extra)
        else:
            log.warning("provisioning: %s: check failed, the current profile stays: %s", result.url or "-",
                        result.reason, extra=extra)

    # --- the thread ------------------------------------------------------------------

    def delay_after(self, result: CheckResult) -> float:
        """Seconds until the next check: the interval (spread), sooner after a failure."""
        config = self.config
        interval = 60.0 * (config.interval_minutes if config else 60)
        if result.ok or result.outcome == "refused":  # a refused file will not fix itself in seconds
            base = interval
        else:
            base = min(interval, self.retry_first * 2 ** max(0, self.failures - 1))
        return base * (1 + random.uniform(-self.jitter, self.jitter))

    def start(self) -> None:
        """Check at once, then periodically, on the `kiosk-provisioning` thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="kiosk-provisioning", daemon=True)
        self._thread.start()

    def check_soon(self, fresh: bool = True) -> None:
        """Check now rather than at the next interval (after a reload of the local file, say).

        `fresh`: without If-None-Match / If-Modified-Since, and applied even when the bytes are
        those last applied: the profile in force is no longer the server's (or is about to stop
        being it: a reload's hook runs before the reload has finished).
        """
        if fresh:
            self._fresh = True
        self._wake.set()

    def _run(self) -> None:
        delay = 0.0
        while True:
            if delay:
                self.next_at = time.time() + delay
                self._wake.wait(delay)
            self._wake.clear()
            if self._stopping:
                return
            self.next_at = None
            delay = self.delay_after(self.check())

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread; a request in flight is left to its timeout (the thread is a daemon)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.fetcher.close()

    # --- kiosk ctl status ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        config = self.config
        return {
            "enabled": config is not None,
            "url": config.url if config else None,
            "interval_minutes": config.interval_minutes if config else None,
            "auth": ("bearer token" if config and config.token else
                     f"basic ({config.username})" if config and config.username else "none"),
            "ca_file": str(config.ca_file) if config and config.ca_file else "system store",
            "checks": self.checks,
            "failures_in_a_row": self.failures,
            "last": self.last.as_json() if self.last else None,
            "last_success": self.last_ok.as_json() if self.last_ok and self.last_ok is not self.last else None,
            "next_check": _iso(self.next_at),
        }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("kiosk")
    except Exception:
        return "0"
