#!/usr/bin/env bash
# Installs a desk unit on a Raspberry Pi (Raspberry Pi OS bookworm, 64-bit), as root:
#
#   sudo bash scripts/install-pi.sh [--tarball pjproject-2.15.1.tar.gz] [--jobs N]
#
#  1. Debian packages: the build tools for pjproject, the system OpenSSL 3 (libssl-dev),
#     python3-lgpio, and what Kivy's SDL2 opens to draw on KMS/DRM (GBM, DRM, EGL, GLES).
#  2. The production install, scripts/install-unit.sh: the user kiosk (audio video render
#     input gpio), /opt/kiosk/venv, /etc/kiosk, /var/lib/kiosk, kiosk.service.
#  3. pjsua2: PyPI's pjsua2-python has no aarch64 wheel, so pjproject is built here from
#     its release tarball (downloaded unless --tarball names it; PJ_SHA256=... checks it):
#     with OpenSSL (TLS transport, SRTP with OpenSSL's AES-GCM), no sound devices and no
#     video (the unit's audio goes through its own port, as with the x86_64 wheel), and
#     config_site.h raising the call and account limits (MAX_CALLS, MAX_ACCOUNTS below).
#     Its SWIG binding becomes a wheel in /opt/kiosk/wheels, which install-unit.sh puts
#     into the venv (now, and each time it builds the venv anew). The wheel carries pjsua2_build.py
#     with the limits it was built with, for the unit to read.
#     Skipped when the venv already has a pjsua2 built with these settings.
#  4. A drop-in for kiosk.service: SDL on KMS/DRM (the panel draws without X on the
#     official touchscreen), gpiozero on lgpio; then the unit is (re)started.
# Idempotent. The pjproject build is the long step (its time on a Pi is not measured yet).
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PJ_VERSION=2.15.1
PJ_URL=https://github.com/pjsip/pjproject/archive/refs/tags/$PJ_VERSION.tar.gz
MAX_CALLS=12       # PJSUA_MAX_CALLS (the wheel: 4); at most 15, pjsua's default max_calls cap
MAX_ACCOUNTS=16    # PJSUA_MAX_ACC (the wheel: 8)
tarball=""
jobs=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --tarball) tarball=${2:?--tarball needs a file}; shift 2 ;;
    --jobs) jobs=${2:?--jobs needs a number}; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "install-pi: unknown argument $1 (see --help)" >&2; exit 1 ;;
  esac
done
say() { echo "install-pi: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "run me as root (sudo)"; exit 1; }
[ "$(uname -m)" = aarch64 ] || say "warning: this is $(uname -m), not aarch64 (Raspberry Pi OS 64-bit): going on"
# shellcheck disable=SC1091
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ "$codename" = bookworm ] || say "warning: this is '${codename:-unknown}', not bookworm: going on"

opt=/opt/kiosk
venv=$opt/venv
wheels=$opt/wheels
build_root=/var/cache/kiosk-build

# --- 1. Debian packages ---------------------------------------------------------------------
apt_packages=(
  build-essential pkg-config swig python3-dev python3-venv curl ca-certificates
  libssl-dev                                      # OpenSSL 3: pjsip's TLS transport and SRTP
  python3-lgpio                                   # lgpio on the Pi's gpiochip devices
  libgbm1 libdrm2 libegl1 libgles2 libgl1-mesa-dri libmtdev1   # SDL2 on KMS/DRM (v3d/vc4)
  libportaudio2
)
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

# --- 2. the production install ------------------------------------------------------------------
status=0
bash "$top/scripts/install-unit.sh" || status=$?
[ "$status" -eq 0 ] || [ "$status" -eq 2 ] || exit "$status"   # 2: installed; the profile has mistakes
# gpiozero's lgpio pin factory: PyPI's lgpio wheel (a dependency on aarch64) brings its own
# liblgpio; should it be missing, the venv uses Debian's python3-lgpio.
if ! "$venv/bin/python" -c 'import lgpio' 2>/dev/null; then
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  for f in /usr/lib/python3/dist-packages/lgpio.py /usr/lib/python3/dist-packages/_lgpio*.so; do
    [ -e "$f" ] && ln -sfn "$f" "$site/"
  done
  "$venv/bin/python" -c 'import lgpio' || { say "lgpio cannot be imported in $venv"; exit 1; }
fi

# --- 3. pjsua2 from the pjproject release tarball -------------------------------------------------
want="VERSION = '$PJ_VERSION'; MAX_CALLS = $MAX_CALLS; MAX_ACCOUNTS = $MAX_ACCOUNTS; SSL = True"
have=$("$venv/bin/python" -c 'import pjsua2_build as b; print(f"VERSION = {b.VERSION!r}; MAX_CALLS = {b.MAX_CALLS}; MAX_ACCOUNTS = {b.MAX_ACCOUNTS}; SSL = {b.SSL}")' 2>/dev/null || true)
if [ "$have" = "$want" ] && "$venv/bin/python" -c 'import pjsua2' 2>/dev/null; then
  say "pjsua2 $PJ_VERSION is there ($want)"
else
  mkdir -p "$build_root"
  src=$build_root/pjproject-$PJ_VERSION
  if [ -z "$tarball" ]; then
    tarball=$build_root/pjproject-$PJ_VERSION.tar.gz
    [ -s "$tarball" ] || { say "downloading $PJ_URL"; curl -fL --retry 3 -o "$tarball.part" "$PJ_URL"; mv "$tarball.part" "$tarball"; }
  fi
  sum=$(sha256sum "$tarball" | cut -d' ' -f1)
  if [ -n "${PJ_SHA256:-}" ] && [ "$sum" != "$PJ_SHA256" ]; then
    say "$tarball: sha256 $sum, expected $PJ_SHA256"; exit 1
  fi
  say "pjproject tarball sha256 $sum (pin it with PJ_SHA256=...)"
  rm -rf "$src"
  mkdir -p "$src"
  tar -xzf "$tarball" -C "$src" --strip-components=1
  cd "$src"
  # Limits compiled into pjsua: the unit counts an account per [[line]] and per [[route]]
  # with its own proxy; a call per table row. Enough descriptors for their sockets.
  cat > pjlib/include/pj/config_site.h <<EOF
/* kiosk desk unit (scripts/install-pi.sh) */
#define PJSUA_MAX_CALLS          $MAX_CALLS
#define PJSUA_MAX_ACC            $MAX_ACCOUNTS
#define PJ_IOQUEUE_MAX_HANDLES   256
EOF
  say "building pjproject $PJ_VERSION (make -j$jobs)"
  ./configure CFLAGS="-O2 -fPIC" CXXFLAGS="-O2 -fPIC" --disable-shared --with-ssl=/usr \
    --disable-sound --disable-video --disable-v4l2 --disable-sdl --disable-ffmpeg \
    --disable-openh264 --disable-libyuv --disable-libwebrtc --disable-opencore-amr --disable-silk \
    > "$build_root/configure.log"
  # TLS and SRTP only with OpenSSL found: say so instead of building a pjsua2 without them.
  grep -q "OpenSSL library found, SSL support enabled" "$build_root/configure.log" \
    || { say "configure did not find OpenSSL (libssl-dev): no TLS; see $build_root/configure.log"; exit 1; }
  grep -q "SRTP will use OpenSSL" "$build_root/configure.log" \
    || say "warning: SRTP does not use OpenSSL's AES-GCM (see $build_root/configure.log)"
  make dep > "$build_root/make.log" 2>&1
  make -j"$jobs" >> "$build_root/make.log" 2>&1 || { tail -30 "$build_root/make.log"; exit 1; }
  # The SWIG binding, built by the venv's own Python, as a wheel that also says its limits.
  cd pjsip-apps/src/swig/python
  printf '"""Limits this pjsua2 was built with (scripts/install-pi.sh)."""\n%s\n' "${want//; /$'\n'}" > pjsua2_build.py
  sed -i 's/py_modules=\["pjsua2"\]/py_modules=["pjsua2", "pjsua2_build"]/' setup.py
  grep -q '"pjsua2_build"' setup.py || { say "setup.py: cannot add pjsua2_build"; exit 1; }
  make PYTHON_EXE="$venv/bin/python" >> "$build_root/make.log" 2>&1
  mkdir -p "$wheels"
  rm -f "$wheels"/pjsua2-*.whl
  "$venv/bin/python" -m pip wheel -q --no-deps -w "$wheels" .
  cd /
  # The venv again, now with the wheel in it (as every later install-unit.sh run will make it).
  status=0
  bash "$top/scripts/install-unit.sh" || status=$?
  [ "$status" -eq 0 ] || [ "$status" -eq 2 ] || exit "$status"
  "$venv/bin/python" -c "
import pjsua2 as pj, pjsua2_build as b
ep = pj.Endpoint(); ep.libCreate()
print(f'install-pi: pjsua2 {ep.libVersion().full}: max calls {pj.UaConfig().maxCalls}, accounts {b.MAX_ACCOUNTS}')
ep.libDestroy()"
fi

# --- 4. the service on the Pi -----------------------------------------------------------------------
dropin=/etc/systemd/system/kiosk.service.d
mkdir -p "$dropin"
conf=$(cat <<'EOF'
# scripts/install-pi.sh: the panel draws with SDL on KMS/DRM (no X), GPIO through lgpio.
[Service]
Environment=SDL_VIDEODRIVER=kmsdrm
Environment=GPIOZERO_PIN_FACTORY=lgpio
EOF
)
changed=0
if [ "$(cat "$dropin/pi.conf" 2>/dev/null)" != "$conf" ]; then
  printf '%s\n' "$conf" > "$dropin/pi.conf"
  chmod 644 "$dropin/pi.conf"
  changed=1
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if [ "$changed" -eq 1 ] || ! systemctl is-active -q kiosk.service; then
    systemctl restart kiosk.service || say "kiosk.service did not start: journalctl -u kiosk"
  fi
fi
say "done ($(systemctl is-active kiosk.service 2>/dev/null || echo "not started")); exit status of the profile check: $status"
exit "$status"
