"""A real OpenLDAP slapd for the lab: the company directory the unit searches.

`Slapd` writes its own slapd.conf into a work directory, loads a handful of
people (inetOrgPerson, Latin and Cyrillic names) with slapadd before the first
start, and runs Debian's slapd 2.5 in the foreground on 127.0.0.1:<port>:

- one mdb database, suffix `dc=example,dc=org` by default, people under
  `ou=people`, with indexes on the attributes a phone searches (cn, sn,
  telephoneNumber, mobile, ipPhone) as a real directory has them;
- a root DN with its password, and a read-only account `cn=kiosk,<suffix>`
  (the bind DN a unit's profile names): ACLs let only bound users read, so an
  anonymous search finds nothing, as in most company directories;
- `ipPhone` (Active Directory's attribute for a desk extension) is defined in a
  small schema of its own, so lab entries can carry one;
- every operation is logged (loglevel stats) to `log_path`.

It never reads or writes the system's slapd configuration (/etc/ldap/slapd.d,
/etc/ldap/slapd.conf) nor talks to a system slapd: only Debian's stock schema
files are read. The OpenLDAP command-line tools it runs get an ldap.conf of the
lab's own (LDAPCONF) and HOME in the work directory, so /etc/ldap/ldap.conf and
~/.ldaprc cannot change what they do.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from .ports import free_port
from .proc import LabProcess, LabProcessError, tail

__all__ = ["DEFAULT_PEOPLE", "Person", "Slapd", "SlapdError", "many_people", "person_ldif", "ssha"]


class SlapdError(LabProcessError):
    """slapd (or slapadd / ldapadd) failed."""


@dataclass(frozen=True)
class Person:
    """One inetOrgPerson of the lab directory; `uid` names its entry (uid=<uid>,ou=people,<suffix>)."""

    uid: str
    cn: str
    sn: str
    given_name: str = ""
    telephone: tuple[str, ...] = ()
    mobile: tuple[str, ...] = ()
    ip_phone: str = ""
    mail: str = ""
    other_cn: tuple[str, ...] = field(default=())  # further cn values (a name in a second script)


#: The people of a fresh lab directory: Latin and Cyrillic names, ё in a name,
#: numbers written the ways directories hold them, extensions that match the
#: lab registrar's far ends (2001, 2002), one entry without any number.
DEFAULT_PEOPLE: tuple[Person, ...] = (
    Person("apetrova", "Anna Petrova", "Petrova", "Anna", ("+7 495 555-01-01",), ("+7 916 000-01-01",), "2001",
           "anna.petrova@example.org"),
    Person("isidorov", "Ivan Sidorov", "Sidorov", "Ivan", ("+7 495 555-01-02",), (), "2002"),
    Person("jsmith", "John Smith", "Smith", "John", ("+1 202 555 0143",), ("+1 202 555 0199",)),
    Person("mivanova", "Мария Иванова", "Иванова", "Мария", ("+7 812 555-02-01",), ("+7 921 000-02-01",), "3001",
           other_cn=("Maria Ivanova",)),
    Person("pelkin", "Пётр Ёлкин", "Ёлкин", "Пётр", ("+7 812 555-02-02",), (), "3002"),
    Person("akuznetsova", "Анна Кузнецова", "Кузнецова", "Анна", (), ("+7 903 000-02-03",)),
    Person("ovolkov", "Олег Волков", "Волков", "Олег", ("+7 343 555-03-01",)),
    Person("nonumber", "Nina Nonumber", "Nonumber", "Nina", mail="nina@example.org"),
)


def many_people(count: int, start: int = 0) -> list[Person]:
    """`count` made-up people (for benchmarks), each with a unique phone number and extension."""
    first = ("Anna", "Ivan", "Olga", "Petr", "Мария", "Сергей", "Елена", "Дмитрий")
    last = ("Petrov", "Smirnov", "Volkov", "Orlov", "Иванов", "Кузнецов", "Соколов", "Попов")
    people = []
    for i in range(start, start + count):
        given, family = first[i % len(first)], last[(i // len(first)) % len(last)]
        people.append(Person(f"p{i:06d}", f"{given} {family} {i}", f"{family} {i}", given,
                             (f"+7 495 7{i:06d}",), (), f"{40000 + i}"))
    return people


def ssha(password: str) -> str:
    """An OpenLDAP {SSHA} hash of `password` (so the lab stores no clear-text userPassword)."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _ldif_value(name: str, value: str) -> str:
    """One LDIF line, base64 (name:: ...) whenever the value is not plain ASCII-safe."""
    safe = value and value.isascii() and value.isprintable() and value[0] not in " :<" and value[-1] != " "
    if safe:
        return f"{name}: {value}"
    return f"{name}:: {base64.b64encode(value.encode()).decode()}"


def _check_attr_value(value: str) -> None:
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"line breaks are not allowed in lab LDAP values: {value!r}")


def person_ldif(person: Person, suffix: str) -> str:
    """The LDIF of one person's entry."""
    for v in (person.uid, person.cn, person.sn, person.given_name, person.ip_phone, person.mail,
              *person.telephone, *person.mobile, *person.other_cn):
        _check_attr_value(v)
    lines = [
        _ldif_value("dn", f"uid={person.uid},ou=people,{suffix}"),
        "objectClass: inetOrgPerson",
        "objectClass: kioskLabPhone",
        _ldif_value("uid", person.uid),
        _ldif_value("cn", person.cn),
        *(_ldif_value("cn", c) for c in person.other_cn),
        _ldif_value("sn", person.sn),
    ]
    if person.given_name:
        lines.append(_ldif_value("givenName", person.given_name))
    lines += [_ldif_value("telephoneNumber", t) for t in person.telephone]
    lines += [_ldif_value("mobile", m) for m in person.mobile]
    if person.ip_phone:
        lines.append(_ldif_value("ipPhone", person.ip_phone))
    if person.mail:
        lines.append(_ldif_value("mail", person.mail))
    return "\n".join(lines) + "\n"


# ipPhone as Active Directory has it (same OID, a directory string), and an
# auxiliary class that lets an inetOrgPerson carry it.
_LAB_SCHEMA = """\
# Generated by kiosk.lab.slapd. Do not edit.
attributetype ( 1.2.840.113556.1.4.721 NAME 'ipPhone'
    DESC 'the desk phone extension, as in Active Directory'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.4203.666.11.990.1 NAME 'kioskLabPhone'
    DESC 'kiosk lab: a person with a desk extension' AUXILIARY MAY ( ipPhone ) )
"""


def _conf_quote(value: str) -> str:
    """A slapd.conf argument in double quotes."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"line breaks are not allowed in slapd.conf values: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Slapd:
    """An OpenLDAP slapd process for the lab on 127.0.0.1:`port` (port 0: a free one)."""

    def __init__(
        self,
        workdir: Path,
        port: int = 0,
        suffix: str = "dc=example,dc=org",
        root_password: str = "lab-root-secret",
        reader_password: str = "kiosk-reader-pw",
        people: Iterable[Person] = DEFAULT_PEOPLE,
        anonymous_read: bool = False,
        host: str = "127.0.0.1",
        binary: str = "slapd",
        loglevel: str = "stats",
        tls: bool = False,
    ) -> None:
        self.workdir = Path(workdir).absolute()
        self.host = host
        self.port = port or free_port(host, kind="tcp")
        self.suffix = suffix
        self.root_dn = f"cn=admin,{suffix}"
        self.root_password = root_password
        self.reader_dn = f"cn=kiosk,{suffix}"
        self.reader_password = reader_password
        self.people_base = f"ou=people,{suffix}"
        self.people = list(people)
        self.anonymous_read = anonymous_read
        self.binary = binary
        self.loglevel = loglevel
        self.tls = tls  # ldaps:// with a self-signed certificate made for the lab (cert_path)
        self.cert_path = self.workdir / "tls" / "slapd.crt"
        self.key_path = self.workdir / "tls" / "slapd.key"
        self.conf_path = self.workdir / "slapd.conf"
        self.schema_path = self.workdir / "kiosk-lab.schema"
        self.db_dir = self.workdir / "db"
        self.run_dir = self.workdir / "run"
        self.log_path = self.workdir / "slapd.log"
        self._proc: LabProcess | None = None
        self._seeded = False

    # --- addresses ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """ldap://host:port (ldaps:// with tls) of the server (a profile's `ldap` key)."""
        return f"{'ldaps' if self.tls else 'ldap'}://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the slapd process."""
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        """True while slapd runs."""
        return self._proc is not None and self._proc.running()

    # --- configuration --------------------------------------------------------------

    def render_config(self) -> str:
        """The text of slapd.conf: schemas, one mdb database, ACLs, the lab's paths only."""
        schema_dir = Path("/etc/ldap/schema")
        includes = "\n".join(
            f"include {_conf_quote(str(schema_dir / name))}"
            for name in ("core.schema", "cosine.schema", "inetorgperson.schema")
        )
        readers = "by users read" + (" by anonymous read" if self.anonymous_read else "")
        tls = (f"TLSCertificateFile {_conf_quote(str(self.cert_path))}\n"
               f"TLSCertificateKeyFile {_conf_quote(str(self.key_path))}\n") if self.tls else ""
        return f"""\
# Generated by kiosk.lab.slapd -- the lab's company directory. Do not edit.
{includes}
include {_conf_quote(str(self.schema_path))}

modulepath /usr/lib/ldap
moduleload back_mdb.so

pidfile {_conf_quote(str(self.run_dir / "slapd.pid"))}
argsfile {_conf_quote(str(self.run_dir / "slapd.args"))}
loglevel {self.loglevel}
sizelimit 500
timelimit 10
{tls}
database mdb
maxsize 268435456
suffix {_conf_quote(self.suffix)}
rootdn {_conf_quote(self.root_dn)}
rootpw {_conf_quote(self.root_password)}
directory {_conf_quote(str(self.db_dir))}
index objectClass eq
index cn,sn,givenName,telephoneNumber,mobile,ipPhone eq,sub

access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
access to *
    {readers}
    by * none
"""

    def seed_ldif(self, people: Iterable[Person] | None = None) -> str:
        """The LDIF of the base entries (suffix, ou=people, the reader account) and the people."""
        dc = self.suffix.split(",", 1)[0].split("=", 1)[1]
        head = [
            "\n".join([_ldif_value("dn", self.suffix), "objectClass: dcObject", "objectClass: organization",
                       _ldif_value("dc", dc), _ldif_value("o", "Kiosk lab")]) + "\n",
            "\n".join([_ldif_value("dn", self.people_base), "objectClass: organizationalUnit", "ou: people"]) + "\n",
            "\n".join([_ldif_value("dn", self.reader_dn), "objectClass: simpleSecurityObject",
                       "objectClass: organizationalRole", "cn: kiosk",
                       _ldif_value("userPassword", ssha(self.reader_password))]) + "\n",
        ]
        body = [person_ldif(p, self.suffix) for p in (self.people if people is None else people)]
        return "\n".join(head + body)

    def write_config(self) -> Path:
        """Write slapd.conf and the lab schema into the work directory; return slapd.conf's path."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.db_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.db_dir, 0o700)
        self.schema_path.write_text(_LAB_SCHEMA)
        if self.tls and not self.cert_path.exists():
            self.make_certificate()
        self.conf_path.write_text(self.render_config())
        os.chmod(self.conf_path, 0o600)  # it holds the root password
        return self.conf_path

    def make_certificate(self) -> None:
        """A self-signed certificate for `host` (openssl): no client trusts it unless told to."""
        exe = shutil.which("openssl")
        if exe is None:
            raise SlapdError("openssl not found (apt-get install openssl)")
        self.cert_path.parent.mkdir(parents=True, exist_ok=True)
        self._tool([exe, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={self.host}", "-addext", f"subjectAltName=IP:{self.host}",
                    "-keyout", str(self.key_path), "-out", str(self.cert_path)], "openssl")

    def tool_env(self) -> dict[str, str]:
        """The environment for OpenLDAP's tools: our own ldap.conf instead of the system's (it trusts
        the lab certificate with tls), and no ~/.ldaprc (HOME is the work directory)."""
        conf = self.workdir / "ldap.conf"
        conf.write_text(f"TLS_CACERT {self.cert_path}\n" if self.tls else "# kiosk lab: nothing from the system\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LDAP")}
        env.update(LDAPCONF=str(conf), LDAPRC="kiosk-lab-ldaprc", HOME=str(self.workdir))
        return env

    def _tool(self, argv: Sequence[str], what: str, stdin: str | None = None, timeout: float = 60.0) -> str:
        """Run an OpenLDAP tool isolated from the system's client config; raise SlapdError on failure."""
        env = self.tool_env()
        log = self.workdir / f"{what}.log"
        try:
            done = subprocess.run(list(argv), input=stdin.encode() if stdin is not None else None,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.workdir,
                                  env=env, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlapdError(f"{what} failed to run: {exc}") from exc
        out = done.stdout.decode("utf-8", "replace")
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"$ {' '.join(argv)}\n{out}\n(exit {done.returncode})\n")
        if done.returncode != 0:
            raise SlapdError(f"{what} exited with {done.returncode}:\n{out[-4000:]}")
        return out

    def seed(self) -> None:
        """Load the base entries and the people into the (empty) database with slapadd -q."""
        exe = shutil.which("slapadd") or "/usr/sbin/slapadd"
        ldif = self.workdir / "seed.ldif"
        ldif.write_text(self.seed_ldif(), encoding="utf-8")
        self._tool([exe, "-q", "-f", str(self.conf_path), "-l", str(ldif)], "slapadd")
        self._seeded = True

    # --- process --------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> Slapd:
        """Write the config, seed the database (first start only), run slapd and wait until it answers."""
        if self._proc is not None:
            raise SlapdError("slapd already started")
        exe = shutil.which(self.binary) or (f"/usr/sbin/{self.binary}" if os.path.exists(f"/usr/sbin/{self.binary}")
                                            else None)
        if exe is None:
            raise SlapdError(f"{self.binary} not found (apt-get install slapd ldap-utils)")
        self.write_config()
        if not self._seeded:
            self.seed()
        # -d keeps slapd in the foreground with its log on stderr; -h binds only
        # our loopback port (no ldapi:// socket, no system port 389); -f makes it
        # read our slapd.conf and never the system's cn=config.
        argv = [exe, "-d", self.loglevel, "-h", f"{self.url}/", "-f", str(self.conf_path)]
        self._proc = LabProcess("slapd", argv, self.log_path, self.workdir)
        self._proc.start(env=self.tool_env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._proc.running():
                code = self._proc.poll()
                text = self._proc.log_tail(60)
                self._proc.stop()
                self._proc = None
                raise SlapdError(f"slapd exited with {code} at start-up:\n{text}")
            if self.answers():
                return self
            time.sleep(0.05)
        text = self._proc.log_tail(60)
        self.stop()
        raise SlapdError(f"slapd did not answer on {self.url} in {timeout} s:\n{text}")

    def answers(self, timeout: float = 1.0) -> bool:
        """True when slapd takes a TCP connection and answers a bound search of the suffix (ldapsearch)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout):
                pass
        except OSError:
            return False
        exe = shutil.which("ldapsearch")
        if exe is None:
            raise SlapdError("ldapsearch not found (apt-get install ldap-utils)")
        try:
            self._tool([exe, "-x", "-H", self.url, "-D", self.root_dn, "-w", self.root_password,
                        "-o", f"nettimeout={max(1, int(timeout))}", "-l", str(max(1, int(timeout))),
                        "-b", self.suffix, "-s", "base", "1.1"], "ldapsearch", timeout=timeout + 2)
        except SlapdError:
            return False
        return True

    def stop(self) -> None:
        """Stop slapd by PID (SIGTERM, then SIGKILL)."""
        if self._proc is not None:
            self._proc.stop(grace=5.0)
            self._proc = None

    def restart(self, down_s: float = 0.0, timeout: float = 15.0) -> Slapd:
        """Stop slapd and start it again on the same port with the same data, `down_s` seconds later."""
        self.stop()
        if down_s > 0:
            time.sleep(down_s)
        return self.start(timeout)

    # --- data -----------------------------------------------------------------------

    def add(self, people: Iterable[Person]) -> None:
        """Add people to the running directory (ldapadd as the root DN)."""
        exe = shutil.which("ldapadd")
        if exe is None:
            raise SlapdError("ldapadd not found (apt-get install ldap-utils)")
        people = list(people)
        ldif = "\n".join(person_ldif(p, self.suffix) for p in people)
        self._tool([exe, "-x", "-H", self.url, "-D", self.root_dn, "-w", self.root_password, "-o", "nettimeout=5"],
                   "ldapadd", stdin=ldif, timeout=120)
        self.people.extend(people)

    def profile_settings(self) -> Mapping[str, object]:
        """The [directory] keys of a profile that searches this server as the reader account
        (the password goes in ldap_password_file; here it is given as ldap_password)."""
        return {
            "ldap": self.url,
            "ldap_base": self.people_base,
            "ldap_bind_dn": self.reader_dn,
            "ldap_password": self.reader_password,
        }

    def log_text(self) -> str:
        """Everything slapd logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of slapd's log."""
        return tail(self.log_path, lines)

    def __enter__(self) -> Slapd:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
