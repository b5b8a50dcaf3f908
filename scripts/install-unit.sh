#!/usr/bin/env bash
# Installs a desk unit for production (as root), without the lab: no Kamailio,
# baresip, SIPp, JACK or test tools (those are scripts/install.sh's, for the demo
# desk and the tests).
#
#   bash scripts/install-unit.sh [--root DIR] [--headless]
#
# What it makes (each step only when it is not already so: a second run changes nothing):
#   user kiosk        system user, no login shell, home /var/lib/kiosk, group kiosk, and
#                     of audio video render input gpio exactly those that exist here
#   /opt/kiosk/venv   a virtual environment with the project and its runtime dependencies
#                     only (rebuilt beside the old one and swapped in when the source changed),
#                     plus any wheel in /opt/kiosk/wheels (install-pi.sh puts pjsua2 there)
#   /etc/kiosk        the checked example profile and its secrets/, root:kiosk 0640 -
#                     only when there is no profile.toml yet: an existing one is never touched
#   /var/lib/kiosk    state, and recordings/ in it: kiosk:kiosk 0750
#   kiosk.service     /etc/systemd/system/kiosk.service, enabled; started when systemd runs
#
# --root DIR   install into the tree DIR instead of / (an image being built, or a test's
#              scratch root): the user is written to DIR/etc/passwd and group with
#              `useradd --prefix DIR` (no chroot, nothing needs to run inside DIR; the
#              files are created when missing), owners are DIR's numeric ids, the service
#              is enabled by its multi-user.target.wants symlink, no apt, no systemctl.
#              The venv is built with this machine's /usr/bin/python3 and its scripts name
#              /opt/kiosk/venv/bin/python, so DIR must get the same Python 3 at /usr/bin.
# --headless   leave out the touchscreen (Kivy) and GPIO (gpiozero) extras, for a unit
#              driven only over the control socket (only once pyproject.toml has them as
#              extras `ui` and `gpio`; until then they are core dependencies).
#
# pip uses its usual configuration and cache (PIP_INDEX_URL, PIP_FIND_LINKS, ...).
# Exit status: 0 installed; 1 a step failed; 2 installed, but the profile in /etc/kiosk
# has mistakes (printed; the unit runs on its last good profile until it is fixed).
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=""
headless=0
python=/usr/bin/python3
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --root=*) root=${1#--root=}; shift ;;
    --headless) headless=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "install-unit: unknown argument $1 (see --help)" >&2; exit 1 ;;
  esac
done
if [ -n "$root" ]; then
  mkdir -p "$root"
  root=$(cd "$root" && pwd)
  [ "$root" != / ] || root=""
fi
say() { echo "install-unit: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "run me as root"; exit 1; }

user=kiosk
home=/var/lib/kiosk
opt=/opt/kiosk
venv=$opt/venv
etc=/etc/kiosk
unitdir=/etc/systemd/system
wanted_groups=(audio video render input gpio)

# --- Debian packages the unit needs at run time (a real install only) -----------------
if [ -z "$root" ] && command -v dpkg-query >/dev/null; then
  apt_packages=(python3-venv libportaudio2)
  if [ "$headless" -eq 0 ]; then  # Kivy's wheel brings SDL2; SDL2 opens GL/EGL, GBM and DRM
    apt_packages+=(libgl1 libegl1 libgles2 libgl1-mesa-dri libgbm1 libdrm2 libmtdev1)
  fi
  missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi
"$python" -c 'import venv, ensurepip' 2>/dev/null || { say "$python has no venv/ensurepip: apt-get install python3-venv"; exit 1; }

# --- the user ---------------------------------------------------------------------------
prefix=()
[ -z "$root" ] || prefix=(--prefix "$root")
mkdir -p "$root/etc"
has_group() { [ -f "$root/etc/group" ] && grep -q "^$1:" "$root/etc/group"; }
groups=()
for g in "${wanted_groups[@]}"; do has_group "$g" && groups+=("$g"); done
group_list=$(IFS=,; echo "${groups[*]}")
if ! grep -q "^$user:" "$root/etc/passwd" 2>/dev/null; then
  say "adding the system user $user (groups: ${group_list:-none})"
  useradd "${prefix[@]}" --system --user-group --home-dir "$home" --no-create-home \
    --shell /usr/sbin/nologin --comment "kiosk desk unit" ${group_list:+--groups "$group_list"} "$user"
else
  IFS=: read -r _ _ _ _ _ cur_home cur_shell < <(grep "^$user:" "$root/etc/passwd")
  if [ "$cur_home" != "$home" ] || [ "$cur_shell" != /usr/sbin/nologin ]; then
    say "user $user: home $home, shell /usr/sbin/nologin"
    usermod "${prefix[@]}" --home "$home" --shell /usr/sbin/nologin "$user"
  fi
  cur_groups=$(awk -F: -v u="$user" '$1 != u { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) print $1 }' \
                 "$root/etc/group" | sort | paste -sd, -)
  if [ "$cur_groups" != "$(printf '%s\n' "${groups[@]}" | sed '/^$/d' | sort | paste -sd, -)" ]; then
    say "user $user: supplementary groups ${group_list:-none} (was ${cur_groups:-none})"
    usermod "${prefix[@]}" --groups "$group_list" "$user"
  fi
fi
uid=$(awk -F: -v u="$user" '$1 == u { print $3 }' "$root/etc/passwd")
gid=$(awk -F: -v u="$user" '$1 == u { print $4 }' "$root/etc/passwd")

# ensure PATH OWNER MODE: a directory with exactly this owner and mode (changed only when not so)
ensure_dir() {
  local path=$root$1
  [ -d "$path" ] || mkdir -p "$path"
  [ "$(stat -c %u:%g "$path")" = "$2" ] || chown "$2" "$path"
  [ "$(stat -c %a "$path")" = "$3" ] || chmod "$3" "$path"
}
# place SRC DEST OWNER MODE: copy SRC to DEST when its content differs; then owner and mode
place() {
  local dest=$root$2
  if ! cmp -s "$1" "$dest"; then
    install -m "$4" "$1" "$dest.new" && mv -f "$dest.new" "$dest"
  fi
  [ "$(stat -c %u:%g "$dest")" = "$3" ] || chown "$3" "$dest"
  [ "$(stat -c %a "$dest")" = "$4" ] || chmod "$4" "$dest"
}

# --- /opt/kiosk and its venv ------------------------------------------------------------
ensure_dir /opt 0:0 755
ensure_dir "$opt" 0:0 755
extras=()
if [ "$headless" -eq 0 ]; then  # only the extras this pyproject.toml defines
  mapfile -t extras < <("$python" - "$top/pyproject.toml" <<'EOF'
import sys, tomllib
defined = tomllib.load(open(sys.argv[1], "rb"))["project"].get("optional-dependencies", {})
for e in ("ui", "gpio"):
    if e in defined:
        print(e)
EOF
)
fi
extra_spec=""
[ ${#extras[@]} -eq 0 ] || extra_spec="[$(IFS=,; echo "${extras[*]}")]"
# Wheels built on this unit (scripts/install-pi.sh: the pjsua2 binding) go into every new venv.
local_wheels=()
for w in "$root$opt"/wheels/*.whl; do [ -e "$w" ] && local_wheels+=("$w"); done
# What the venv is built from: the sources, the extras, the interpreter and those wheels.
source_id=$("$python" - "$top" "$extra_spec" "${local_wheels[@]}" <<'EOF'
import hashlib, platform, sys
from pathlib import Path
top = Path(sys.argv[1])
h = hashlib.sha256(f"{sys.argv[2]} {platform.python_version()}\n".encode())
files = [top / "pyproject.toml", top / "README.md", *map(Path, sys.argv[3:])]
for pkg in ("kiosk", "hw"):
    files += sorted(p for p in (top / pkg).rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
for p in files:
    name = p.relative_to(top) if p.is_relative_to(top) else p.name
    h.update(str(name).encode() + b"\0" + p.read_bytes() + b"\0")
print(h.hexdigest())
EOF
)
stamp=$root$venv/.kiosk-source
if [ -x "$root$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$source_id" ] \
   && "$root$venv/bin/python" -c 'import kiosk.cli' 2>/dev/null; then
  : # built from exactly these sources
else
  # Built beside the old one and swapped in at the end: a unit that restarts meanwhile
  # still finds a whole venv. Its scripts and .pyc files name the final path.
  stage=$root$opt/venv.new
  rm -rf "$stage"
  build=$(mktemp -d)
  trap 'rm -rf "$build"' EXIT
  say "building $venv (kiosk$extra_spec, runtime dependencies only)"
  mkdir -p "$build/src"
  cp -r "$top/pyproject.toml" "$top/README.md" "$top/kiosk" "$top/hw" "$build/src/"
  find "$build/src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
  "$python" -m venv --prompt kiosk "$stage"
  "$stage/bin/python" -m pip install -q --no-compile --root-user-action=ignore "$build/src$extra_spec"
  if [ ${#local_wheels[@]} -gt 0 ]; then
    say "adding ${local_wheels[*]##*/}"
    "$stage/bin/python" -m pip install -q --no-compile --root-user-action=ignore --no-deps "${local_wheels[@]}"
  fi
  "$python" - "$stage" "$venv" <<'EOF'
import sys
from pathlib import Path
stage, final = sys.argv[1], sys.argv[2]
for f in [*Path(stage, "bin").iterdir(), Path(stage, "pyvenv.cfg")]:
    if f.is_symlink() or not f.is_file():
        continue
    data = f.read_bytes()
    if stage.encode() in data[:4096] and b"\0" not in data[:4096]:
        f.write_bytes(data.replace(stage.encode(), final.encode()))
EOF
  "$stage/bin/python" -m compileall -q -j 0 -s "$stage" -p "$venv" "$stage/lib" >/dev/null
  echo "$source_id" > "$stage/.kiosk-source"
  chown -R 0:0 "$stage"
  chmod -R u+rwX,go+rX,go-w "$stage"
  if [ -e "$root$venv" ]; then
    rm -rf "$root$venv.old"
    mv "$root$venv" "$root$venv.old"
    mv "$stage" "$root$venv"
    rm -rf "$root$venv.old"
    updated=1
  else
    mv "$stage" "$root$venv"
  fi
fi
place "$top/README.md" "$opt/README.md" 0:0 644
[ ! -d "$root$opt/.venv" ] || say "note: $opt/.venv (an older lab install) is not used by the service any more; remove it"

# --- /etc/kiosk: the example profile, only where there is none ----------------------------
if [ ! -e "$root$etc/profile.toml" ]; then
  say "installing the example profile $etc/profile.toml: edit it (lines, routes, passwords in secrets/)"
  ensure_dir "$etc" "0:$gid" 750
  ensure_dir "$etc/secrets" "0:$gid" 750
  for f in "$top"/kiosk/examples/secrets/*; do
    [ -e "$root$etc/secrets/$(basename "$f")" ] || place "$f" "$etc/secrets/$(basename "$f")" "0:$gid" 640
  done
  place "$top/kiosk/examples/profile.toml" "$etc/profile.toml" "0:$gid" 640
fi

# --- /var/lib/kiosk -------------------------------------------------------------------------
ensure_dir /var 0:0 755
ensure_dir /var/lib 0:0 755
ensure_dir "$home" "$uid:$gid" 750
ensure_dir "$home/recordings" "$uid:$gid" 750

# --- the service ------------------------------------------------------------------------------
ensure_dir /etc/systemd 0:0 755
ensure_dir "$unitdir" 0:0 755
unit_changed=0
cmp -s "$top/systemd/kiosk.service" "$root$unitdir/kiosk.service" || unit_changed=1
place "$top/systemd/kiosk.service" "$unitdir/kiosk.service" 0:0 644
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  [ "$unit_changed" -eq 0 ] || systemctl daemon-reload
  systemctl is-enabled -q kiosk.service 2>/dev/null || systemctl enable -q kiosk.service
  if ! systemctl is-active -q kiosk.service; then
    say "starting kiosk.service"
    systemctl start kiosk.service || say "kiosk.service did not start: journalctl -u kiosk"
  elif [ "$unit_changed" -eq 1 ] || [ "${updated:-0}" -eq 1 ]; then
    say "the new version runs after: systemctl restart kiosk (it ends the calls in progress)"
  fi
else
  ensure_dir "$unitdir/multi-user.target.wants" 0:0 755
  link=$root$unitdir/multi-user.target.wants/kiosk.service
  [ "$(readlink "$link" 2>/dev/null)" = "$unitdir/kiosk.service" ] || ln -sfn "$unitdir/kiosk.service" "$link"
  [ -n "$root" ] || say "systemd is not running here: kiosk.service is enabled and starts at the next boot"
fi

# --- the profile, checked by the venv's own kiosk (as kiosk on a real install: it must read it) -----
check=("$root$venv/bin/python" -m kiosk.cli check-profile "$root$etc/profile.toml")
[ -n "$root" ] || check=(setpriv --reuid="$uid" --regid="$gid" --init-groups -- "${check[@]}")
if ! "${check[@]}"; then
  say "$etc/profile.toml has the mistakes above: fix them, then systemctl reload-or-restart kiosk"
  exit 2
fi
say "done: $venv, $etc/profile.toml, $home, kiosk.service"
