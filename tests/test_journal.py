"""Logs to journald: the native protocol to a fake journal socket, the fields, the fallback, no secret."""

from __future__ import annotations

import array
import io
import logging
import os
import socket
import struct
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from kiosk import journal
from kiosk.profile import Provisioning

from .fakes import make_profile


def parse(datagram: bytes) -> dict[str, str]:
    """journald's side of the native protocol: KEY=value lines, or KEY\\n<u64 le length><bytes>\\n."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            i = nl + 1
        else:
            (size,) = struct.unpack("<Q", datagram[nl + 1:nl + 9])
            fields[line.decode()] = datagram[nl + 9:nl + 9 + size].decode()
            assert datagram[nl + 9 + size:nl + 10 + size] == b"\n"
            i = nl + 10 + size
    return fields


class FakeJournal:
    """A datagram socket bound where the handler is told journald listens; receives fds too (memfd)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(2)

    def receive(self) -> dict[str, str]:
        fds = array.array("i")
        data, ancdata, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_LEN(4 * fds.itemsize))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if fds:
            fd = fds[0]
            try:
                data = os.pread(fd, os.fstat(fd).st_size, 0)
            finally:
                os.close(fd)
        return parse(data)

    def pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
            return True
        except BlockingIOError:
            return False
        finally:
            self.sock.settimeout(2)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake_journal() -> Iterator[FakeJournal]:
    # tmp_path can be longer than a socket path may be (108 bytes): a short folder of the test's own.
    with tempfile.TemporaryDirectory(prefix="kj") as d:
        j = FakeJournal(Path(d) / "socket")
        yield j
        j.close()


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("kiosk.test-journal")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


def test_a_record_is_one_datagram_with_the_fields_of_its_extra(fake_journal: FakeJournal,
                                                                logger: logging.Logger) -> None:
    logger.addHandler(journal.JournalHandler(fake_journal.path))
    logger.info("row %d: answer", 3, extra={"ROW": 3, "LINE": "op1", "ACTION": "answer", "lowercase": "x",
                                            "_PID": "1", "NOTHING": None})
    f = fake_journal.receive()
    assert f["MESSAGE"] == "kiosk.test-journal: row 3: answer"
    assert (f["PRIORITY"], f["SYSLOG_IDENTIFIER"], f["LOGGER"]) == ("6", "kiosk", "kiosk.test-journal")
    assert (f["ROW"], f["LINE"], f["ACTION"]) == ("3", "op1", "answer")
    assert f["CODE_FILE"].endswith("test_journal.py") and int(f["CODE_LINE"]) > 0
    assert f["CODE_FUNC"] == "test_a_record_is_one_datagram_with_the_fields_of_its_extra"
    assert f["THREAD_NAME"] == "MainThread"
    assert "lowercase" not in f and "_PID" not in f and "NOTHING" not in f  # journald's own fields stay its own
    assert not fake_journal.pending()  # one line per record


@pytest.mark.parametrize("level, prio", [(logging.DEBUG, "7"), (logging.INFO, "6"), (logging.WARNING, "4"),
                                         (logging.ERROR, "3"), (logging.CRITICAL, "2")])
def test_levels_are_syslog_priorities(fake_journal: FakeJournal, logger: logging.Logger, level: int,
                                      prio: str) -> None:
    logger.addHandler(journal.JournalHandler(fake_journal.path))
    logger.log(level, "x")
    assert fake_journal.receive()["PRIORITY"] == prio


def test_a_multi_line_message_and_a_traceback_use_the_length_form(fake_journal: FakeJournal,
                                                                   logger: logging.Logger) -> None:
    logger.addHandler(journal.JournalHandler(fake_journal.path))
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("two\nlines")
    f = fake_journal.receive()
    assert f["MESSAGE"] == "kiosk.test-journal: two\nlines"
    assert f["EXCEPTION"].startswith("Traceback") and "ValueError: boom" in f["EXCEPTION"]
    assert f["PRIORITY"] == "3"


def test_a_record_too_big_for_a_datagram_goes_as_a_sealed_memfd(fake_journal: FakeJournal,
                                                                  logger: logging.Logger) -> None:
    logger.addHandler(journal.JournalHandler(fake_journal.path))
    big = "x" * (4 << 20)  # over any datagram the kernel takes
    logger.warning(big, extra={"ROW": 1})
    f = fake_journal.receive()
    assert f["MESSAGE"].endswith(big) and f["ROW"] == "1"


def test_without_a_journal_the_record_goes_to_stderr_and_is_not_lost(tmp_path: Path, logger: logging.Logger) -> None:
    out = io.StringIO()
    handler = journal.JournalHandler(tmp_path / "no-socket", fallback=out)
    logger.addHandler(handler)
    logger.warning("the line")
    assert "WARNING kiosk.test-journal: the line" in out.getvalue() and handler.dropped == 1


def test_setup_logging_picks_the_journal_only_when_stderr_is_it_and_the_socket_is_there(
        fake_journal: FakeJournal, tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        with open(tmp_path / "stderr", "w") as err:
            st = os.fstat(err.fileno())
            env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
            h = journal.setup_logging(env=env, stream=err, socket_path=fake_journal.path, redactor=journal.Redactor())
            assert isinstance(h, journal.JournalHandler) and root.handlers == [h]
            h = journal.setup_logging(env=env, stream=err, socket_path=tmp_path / "absent",
                                      redactor=journal.Redactor())
            assert type(h) is logging.StreamHandler  # the socket is absent: stderr
            h = journal.setup_logging(env={}, stream=err, socket_path=fake_journal.path, redactor=journal.Redactor())
            assert type(h) is logging.StreamHandler  # a terminal, not systemd: stderr
            h = journal.setup_logging(env={"KIOSK_LOG": "journal"}, stream=err, socket_path=fake_journal.path,
                                      verbose=True, redactor=journal.Redactor())
            assert isinstance(h, journal.JournalHandler) and root.level == logging.DEBUG
            h.close()
    finally:
        for old in list(root.handlers):
            root.removeHandler(old)
        for old in saved[0]:
            root.addHandler(old)
        root.setLevel(saved[1])


# --- never a secret -------------------------------------------------------------------------------


def test_no_password_or_token_of_the_profile_reaches_any_log_line(fake_journal: FakeJournal,
                                                                   logger: logging.Logger) -> None:
    profile = make_profile()
    prov = Provisioning(url="https://p/{mac}", token="tok-SECRET-9", username="u", password="basic-SECRET")
    provisioned = type(profile)(**{**vars(profile), "provisioning": prov})
    current = [profile]
    redactor = journal.Redactor()
    redactor.watch(lambda: current[0])
    handler = journal.JournalHandler(fake_journal.path)
    handler.addFilter(redactor)
    logger.addHandler(handler)
    secrets = ["secret1", "secret2", "tok-SECRET-9", "basic-SECRET"]

    logger.info("line op1 password %s", "secret1", extra={"LINE": "op1", "DETAIL": "pw=secret2"})
    current[0] = provisioned  # a new profile: its secrets are learnt, the old ones kept
    logger.info("Authorization: Bearer tok-SECRET-9", extra={"ACTION": "provisioning"})
    logger.info("%(who)s", {"who": "basic-SECRET"})
    try:
        raise RuntimeError("auth failed with secret2")
    except RuntimeError:
        logger.exception("boom basic-SECRET")
    import base64
    logger.info("header %s", base64.b64encode(b"u:basic-SECRET").decode())
    lines = [fake_journal.receive() for _ in range(5)]
    text = repr(lines)
    for secret in secrets:
        assert secret not in text, secret
    assert base64.b64encode(b"u:basic-SECRET").decode() not in text
    assert lines[0]["MESSAGE"].endswith("line op1 password [secret]")
    assert lines[0]["DETAIL"] == "pw=[secret]" and lines[0]["LINE"] == "op1"
    assert lines[3]["EXCEPTION"].endswith("RuntimeError: auth failed with [secret]")


def test_a_short_secret_is_replaced_only_as_a_word() -> None:
    r = journal.Redactor()
    r.add("abc", "long-secret")
    assert r.redact("abc abcdef xabc long-secret!") == "[secret] abcdef xabc [secret]!"
    assert r.redact("nothing here") == "nothing here"
    assert journal.Redactor().redact("no secrets known") == "no secrets known"


def test_the_stderr_handler_redacts_too(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    r = journal.Redactor()
    r.add_profile(make_profile())
    try:
        journal.setup_logging(env={"KIOSK_LOG": "stderr"}, stream=out, redactor=r)
        logging.getLogger("kiosk.x").warning("REGISTER with secret2 failed")
    finally:
        for old in list(root.handlers):
            root.removeHandler(old)
        for old in saved[0]:
            root.addHandler(old)
        root.setLevel(saved[1])
    assert "REGISTER with [secret] failed" in out.getvalue() and "secret2" not in out.getvalue()
