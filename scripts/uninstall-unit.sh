#!/usr/bin/env bash
# Removes what scripts/install-unit.sh installed (as root).
#
#   bash scripts/uninstall-unit.sh [--root DIR] [--purge]
#
# Removed: kiosk.service (stopped and disabled first when systemd runs), /opt/kiosk/venv
# and /opt/kiosk/README.md (/opt/kiosk itself when nothing else is left in it), the unit's
# state in /var/lib/kiosk.
# Kept: /var/lib/kiosk/recordings (the calls recorded), /etc/kiosk (the profile and its
# secrets), local drop-ins in /etc/systemd/system/kiosk.service.d, /opt/kiosk/wheels (the
# pjsua2 that install-pi.sh built), and the user kiosk that owns the recordings.
# --purge      removes those too: every recording, the profile, the drop-ins, the wheels,
#              the user and group kiosk.
# --root DIR   the tree scripts/install-unit.sh --root DIR installed into.
set -euo pipefail

root=""
purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --root=*) root=${1#--root=}; shift ;;
    --purge) purge=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "uninstall-unit: unknown argument $1 (see --help)" >&2; exit 1 ;;
  esac
done
if [ -n "$root" ]; then
  root=$(cd "$root" && pwd)
  [ "$root" != / ] || root=""
fi
say() { echo "uninstall-unit: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "run me as root"; exit 1; }

user=kiosk
unitdir=$root/etc/systemd/system

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  if systemctl is-active -q kiosk.service || systemctl is-enabled -q kiosk.service 2>/dev/null; then
    say "stopping and disabling kiosk.service"
    systemctl disable --now -q kiosk.service || true
  fi
fi
rm -f "$unitdir/multi-user.target.wants/kiosk.service" "$unitdir/kiosk.service"
rmdir "$unitdir/multi-user.target.wants" 2>/dev/null || true
if [ "$purge" -eq 1 ]; then
  rm -rf "$unitdir/kiosk.service.d"
fi
[ -n "$root" ] || [ ! -d /run/systemd/system ] || systemctl daemon-reload

rm -rf "$root/opt/kiosk/venv" "$root/opt/kiosk/venv.new" "$root/opt/kiosk/venv.old"
rm -f "$root/opt/kiosk/README.md"
[ "$purge" -eq 0 ] || rm -rf "$root/opt/kiosk/wheels"
rmdir "$root/opt/kiosk" 2>/dev/null || [ ! -d "$root/opt/kiosk" ] || say "kept $root/opt/kiosk: other files are in it"

state=$root/var/lib/kiosk
if [ "$purge" -eq 1 ]; then
  rm -rf "$state" "$root/etc/kiosk"
  prefix=()
  [ -z "$root" ] || prefix=(--prefix "$root")
  if grep -q "^$user:" "$root/etc/passwd" 2>/dev/null; then
    userdel "${prefix[@]}" "$user"
  fi
  if grep -q "^$user:" "$root/etc/group" 2>/dev/null; then
    groupdel "${prefix[@]}" "$user"
  fi
  say "purged: the recordings, /etc/kiosk and the user $user are gone"
else
  if [ -d "$state" ]; then
    find "$state" -mindepth 1 -maxdepth 1 ! -name recordings -exec rm -rf {} +
  fi
  say "removed; kept /var/lib/kiosk/recordings, /etc/kiosk and the user $user (--purge removes them)"
fi
