#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine (as root): installs what
# it needs (scripts/install.sh), then pytest. Lab processes (Kamailio, baresip,
# SIPp, the unit itself) are started and stopped by the tests' fixtures on free
# loopback ports. Extra arguments go to pytest.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$top/scripts/install.sh"
cd "$top"
export KIVY_NO_ARGS=1 KIVY_NO_CONSOLELOG=1
set +e
"$top/.venv/bin/python" -m pytest -p no:cacheprovider -ra "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
