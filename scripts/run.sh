#!/usr/bin/env bash
# Runs the desk unit on a fresh Debian 12 machine (as root): installs what it
# needs (scripts/install.sh), then `kiosk run`. With no arguments it is a demo
# desk on this machine (a local Kamailio, far-end phones, the unit on a demo
# profile); `scripts/run.sh --profile FILE` runs the unit on a real profile.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$top/scripts/install.sh"
exec "$top/.venv/bin/kiosk" run "$@"
