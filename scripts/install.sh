#!/usr/bin/env bash
# Installs what kiosk needs on Debian 12 (as root): apt packages, a virtual
# environment in .venv and the project in it. Idempotent: a second run only
# checks. Sourced by run.sh and test.sh.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
apt_packages=(python3-venv python3-dev kamailio baresip sip-tester jackd2
              libportaudio2 libgl1 libegl1 libgl1-mesa-dri libmtdev1 iproute2 procps sox
              nginx openssl xvfb x11-apps libxtst6 systemd-container shellcheck slapd ldap-utils)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "kiosk: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # slapd is only for the directory tests, which start their own on a loopback port: no system
  # directory is configured or started by the package.
  echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
py=/usr/bin/python3
if [ ! -x "$top/.venv/bin/python" ]; then
  "$py" -m venv "$top/.venv"
fi
stamp="$top/.venv/.kiosk-installed"
if [ ! -f "$stamp" ] || [ "$top/pyproject.toml" -nt "$stamp" ]; then
  "$top/.venv/bin/pip" install -q --upgrade pip
  "$top/.venv/bin/pip" install -q -e "$top[test]"
  touch "$stamp"
fi
