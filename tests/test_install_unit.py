"""The production install (scripts/install-unit.sh) into a scratch root, checked file by file.

The scratch root is a plain directory with a seeded etc/passwd and etc/group (no
debootstrap: the venv is built with this machine's /usr/bin/python3, as on a unit).
The install runs from a snapshot of the sources, so that a file another test or an
editor changes meanwhile cannot make the second run rebuild. Also: scripts/install-pi.sh
parses and names every piece of the Raspberry Pi build.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PI = ROOT / "scripts" / "install-pi.sh"

#: Seeded groups: render exists, gpio does not, plugdev is none of the unit's business.
GROUPS = {"root": 0, "audio": 29, "video": 44, "plugdev": 46, "render": 105, "input": 106}
#: Never in the production venv.
LAB_TOOLS = {"pytest", "pytest-timeout", "hypothesis", "iniconfig", "pluggy", "ruff", "sortedcontainers"}


def sh(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, f"{argv}:\n{done.stdout}{done.stderr}"
    return done


def listing(root: Path) -> list[tuple]:
    """Every path under root with its type, mode, owner and mtime (and a link's target)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            st = p.lstat()
            out.append((str(p.relative_to(root)), stat.filemode(st.st_mode), st.st_uid, st.st_gid,
                        st.st_mtime_ns, os.readlink(p) if p.is_symlink() else None))
    return sorted(out)


def ids(root: Path, name: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        f = line.split(":")
        if f[0] == name:
            return int(f[2]), int(f[3])
    raise AssertionError(f"no {name} in {root}/etc/passwd")


def members(root: Path, user: str) -> set[str]:
    out = set()
    for line in (root / "etc/group").read_text().splitlines():
        f = line.split(":")
        if user in f[3].split(","):
            out.add(f[0])
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory):
    """(source snapshot, scratch root, listing after the first run, output of the second run)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("kiosk", "hw", "scripts", "systemd"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    root = tmp_path_factory.mktemp("root")
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("".join(f"{g}:x:{n}:\n" for g, n in GROUPS.items()))
    sh("bash", src / "scripts/install-unit.sh", "--root", root)
    first = listing(root)
    again = sh("bash", src / "scripts/install-unit.sh", "--root", root)
    return src, root, first, again


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the install runs as root")


@pytest.mark.lab
@needs_root
def test_second_run_changes_nothing(installed) -> None:
    src, root, first, again = installed
    assert listing(root) == first
    assert "building" not in again.stderr and "adding" not in again.stderr, again.stderr


@pytest.mark.lab
@needs_root
def test_user_kiosk_is_a_system_user_in_exactly_the_groups_that_exist(installed) -> None:
    _, root, _, _ = installed
    entry = next(l for l in (root / "etc/passwd").read_text().splitlines() if l.startswith("kiosk:"))
    _, _, uid, gid, _, home, shell = entry.split(":")
    assert int(uid) < 1000 and (home, shell) == ("/var/lib/kiosk", "/usr/sbin/nologin")
    assert members(root, "kiosk") == {"audio", "video", "render", "input"}  # no gpio here, never plugdev
    group = next(l for l in (root / "etc/group").read_text().splitlines() if l.startswith("kiosk:"))
    assert group.split(":")[2] == gid


@pytest.mark.lab
@needs_root
def test_each_file_has_its_owner_and_mode(installed) -> None:
    src, root, _, _ = installed
    uid, gid = ids(root, "kiosk")
    expected = {
        "opt/kiosk": ("d", 0, 0, 0o755),
        "opt/kiosk/venv": ("d", 0, 0, 0o755),
        "opt/kiosk/venv/bin/kiosk": ("f", 0, 0, 0o755),
        "opt/kiosk/README.md": ("f", 0, 0, 0o644),
        "etc/kiosk": ("d", 0, gid, 0o750),
        "etc/kiosk/profile.toml": ("f", 0, gid, 0o640),
        "etc/kiosk/secrets": ("d", 0, gid, 0o750),
        "etc/kiosk/secrets/1001.pass": ("f", 0, gid, 0o640),
        "etc/kiosk/secrets/2001.pass": ("f", 0, gid, 0o640),
        "var/lib/kiosk": ("d", uid, gid, 0o750),
        "var/lib/kiosk/recordings": ("d", uid, gid, 0o750),
        "etc/systemd/system/kiosk.service": ("f", 0, 0, 0o644),
    }
    for rel, (kind, u, g, mode) in expected.items():
        st = (root / rel).lstat()
        got = ("d" if stat.S_ISDIR(st.st_mode) else "f", st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
        assert got == (kind, u, g, mode), f"{rel}: {got}, expected {(kind, u, g, mode)}"
    assert (root / "etc/kiosk/profile.toml").read_bytes() == (src / "kiosk/examples/profile.toml").read_bytes()
    assert (root / "etc/systemd/system/kiosk.service").read_bytes() == (src / "systemd/kiosk.service").read_bytes()
    wants = root / "etc/systemd/system/multi-user.target.wants/kiosk.service"
    assert os.readlink(wants) == "/etc/systemd/system/kiosk.service"
    # Nothing in the venv is writable by anyone but root, nor owned by anyone else.
    bad = [p for p in (root / "opt/kiosk").rglob("*") if not p.is_symlink()
           and (p.lstat().st_uid != 0 or p.lstat().st_mode & 0o022)]
    assert not bad, bad[:5]
    assert not (root / "opt/kiosk/venv.new").exists() and not (root / "opt/kiosk/venv.old").exists()


@pytest.mark.lab
@needs_root
def test_the_venv_holds_the_runtime_and_no_lab_tool(installed) -> None:
    _, root, _, _ = installed
    py = root / "opt/kiosk/venv/bin/python"
    names = {l.split()[0].lower() for l in sh(py, "-m", "pip", "list", "--format=freeze").stdout.splitlines()
             if l and not l.startswith("#")}
    names = {n.split("==")[0] for n in names}
    assert not names & LAB_TOOLS, names & LAB_TOOLS
    assert {"kiosk", "numpy", "psutil", "sounddevice"} <= names, names
    for tool in ("pytest", "py.test", "hypothesis", "ruff"):
        assert not (root / "opt/kiosk/venv/bin" / tool).exists()
    sh(py, "-c", "import kiosk.cli, kiosk.agent.thread, hw.audio, numpy, psutil, pjsua2")
    # The project itself is installed, not linked to a checkout.
    assert "Editable project location" not in sh(py, "-m", "pip", "show", "kiosk").stdout
    # Scripts and .pyc files name the final path, never the staging one.
    assert (root / "opt/kiosk/venv/bin/kiosk").read_text().splitlines()[0] == "#!/opt/kiosk/venv/bin/python"
    for f in (root / "opt/kiosk/venv/bin").iterdir():
        if f.is_file() and not f.is_symlink():
            assert b"/opt/kiosk/venv.new" not in f.read_bytes() and str(root).encode() not in f.read_bytes(), f
    cfg = (root / "opt/kiosk/venv/pyvenv.cfg").read_text()
    assert "venv.new" not in cfg and str(root) not in cfg
    pyc = next((root / "opt/kiosk/venv/lib").glob("python3*/site-packages/kiosk/__pycache__/cli.*.pyc"))
    assert b"/opt/kiosk/venv/lib/" in pyc.read_bytes() and str(root).encode() not in pyc.read_bytes()


@pytest.mark.lab
@needs_root
def test_installed_profile_passes_check_profile(installed) -> None:
    _, root, _, _ = installed
    done = sh(root / "opt/kiosk/venv/bin/python", "-m", "kiosk.cli", "check-profile", root / "etc/kiosk/profile.toml",
              check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.lab
@needs_root
def test_an_existing_profile_is_never_touched_and_new_groups_are_joined(installed) -> None:
    src, root, _, _ = installed
    profile = root / "etc/kiosk/profile.toml"
    mine = profile.read_text().replace('name = "Anna Petrova"', 'name = "Boris"')
    profile.write_text(mine)
    os.chmod(profile, 0o600)
    (root / "etc/kiosk/secrets/2001.pass").unlink()  # the operator's choice: not put back
    before = profile.stat()
    with open(root / "etc/group", "a") as f:
        f.write("gpio:x:997:\n")  # e.g. the Pi's gpio group appeared
    done = sh("bash", src / "scripts/install-unit.sh", "--root", root, check=False)
    after = profile.stat()
    assert profile.read_text() == mine and after.st_mtime_ns == before.st_mtime_ns
    assert stat.S_IMODE(after.st_mode) == 0o600
    assert not (root / "etc/kiosk/secrets/2001.pass").exists()
    assert members(root, "kiosk") == {"audio", "video", "render", "input", "gpio"}
    # The profile now names a missing password file: said, with exit status 2, all else installed.
    assert done.returncode == 2 and "2001.pass" in done.stdout + done.stderr, done.stdout + done.stderr


def write_wheel(directory: Path, name: str, version: str, module: str, code: str) -> Path:
    """A minimal pure-Python wheel, as install-pi.sh leaves pjsua2's in /opt/kiosk/wheels."""
    import base64
    import hashlib
    import zipfile

    dist = f"{name}-{version}.dist-info"
    files = {f"{module}.py": code,
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(t.encode())}" for n, t in files.items()] + [f"{dist}/RECORD,,"]
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for n, t in {**files, f"{dist}/RECORD": "\n".join(record) + "\n"}.items():
            z.writestr(n, t)
    return path


@pytest.mark.lab
@needs_root
def test_wheels_built_on_the_unit_go_into_the_venv_it_builds(installed) -> None:
    src, root, _, _ = installed
    wheels = root / "opt/kiosk/wheels"
    wheels.mkdir()
    write_wheel(wheels, "pjsua2", "2.15.1", "pjsua2_build", "MAX_CALLS = 12\nMAX_ACCOUNTS = 16\n")
    done = sh("bash", src / "scripts/install-unit.sh", "--root", root, check=False)
    assert done.returncode in (0, 2) and "adding pjsua2-2.15.1-py3-none-any.whl" in done.stderr, done.stderr
    got = sh(root / "opt/kiosk/venv/bin/python", "-c", "import pjsua2_build as b; print(b.MAX_CALLS, b.MAX_ACCOUNTS)")
    assert got.stdout.split() == ["12", "16"]
    again = sh("bash", src / "scripts/install-unit.sh", "--root", root, check=False)
    assert "building" not in again.stderr  # the wheel is part of what the venv was built from


@pytest.mark.lab
@needs_root
def test_uninstall_keeps_recordings_and_purge_removes_everything(installed, tmp_path: Path) -> None:
    src, root, _, _ = installed
    uid, gid = ids(root, "kiosk")
    rec = root / "var/lib/kiosk/recordings/20260101-120000_main_out_2001_1.wav"
    rec.write_bytes(b"RIFF")
    (root / "var/lib/kiosk/last-good-profile.toml").write_text("# state\n")
    sh("bash", src / "scripts/uninstall-unit.sh", "--root", root)
    assert rec.read_bytes() == b"RIFF"
    assert sorted(p.name for p in (root / "var/lib/kiosk").iterdir()) == ["recordings"]
    assert (root / "etc/kiosk/profile.toml").exists() and ids(root, "kiosk") == (uid, gid)
    assert [p.name for p in (root / "opt/kiosk").iterdir()] == ["wheels"]  # install-pi.sh's pjsua2 stays
    for gone in ("opt/kiosk/venv", "etc/systemd/system/kiosk.service",
                 "etc/systemd/system/multi-user.target.wants/kiosk.service"):
        assert not os.path.lexists(root / gone), gone
    sh("bash", src / "scripts/uninstall-unit.sh", "--root", root, "--purge")
    for gone in ("var/lib/kiosk", "etc/kiosk", "opt/kiosk"):
        assert not os.path.lexists(root / gone), gone
    assert "kiosk:" not in (root / "etc/passwd").read_text()
    assert not members(root, "kiosk") and not re.search(r"^kiosk:", (root / "etc/group").read_text(), re.M)


# --- the Raspberry Pi install -------------------------------------------------------------------

def test_pi_install_names_every_piece() -> None:
    text = PI.read_text()
    for piece in (
        "install-unit.sh",                              # the production install first
        "pjproject-", ".tar.gz",                        # the release tarball
        "libssl-dev", "--with-ssl",                     # system OpenSSL 3: TLS and SRTP
        "config_site.h", "PJSUA_MAX_CALLS", "PJSUA_MAX_ACC",
        "swig", "pjsip-apps/src/swig/python",           # the Python binding ...
        "opt=/opt/kiosk", "venv=$opt/venv",             # ... into the unit's venv,
        "wheels=$opt/wheels", "pip wheel",              # as a wheel install-unit.sh keeps adding
        "SDL_VIDEODRIVER=kmsdrm",                       # Kivy on KMS/DRM, no X
        "python3-lgpio", "GPIOZERO_PIN_FACTORY=lgpio",  # gpiozero on lgpio
    ):
        assert piece in text, piece
    calls = int(re.search(r"^MAX_CALLS=(\d+)", text, re.M).group(1))
    accounts = int(re.search(r"^MAX_ACCOUNTS=(\d+)", text, re.M).group(1))
    assert 4 < calls <= 15 and accounts > 8  # 15: pjsua's default max_calls reports the build's limit up to it
    assert re.search(r"^#define PJSUA_MAX_CALLS +\$MAX_CALLS$", text, re.M)
    assert re.search(r"^#define PJSUA_MAX_ACC +\$MAX_ACCOUNTS$", text, re.M)


@pytest.mark.lab
def test_pi_install_parses_and_passes_shellcheck() -> None:
    scripts = [PI, ROOT / "scripts/install-unit.sh", ROOT / "scripts/uninstall-unit.sh"]
    for script in scripts:
        sh("bash", "-n", script)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    done = sh("shellcheck", "-S", "warning", *scripts, check=False)
    assert done.returncode == 0, done.stdout
