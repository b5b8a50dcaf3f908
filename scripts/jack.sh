#!/usr/bin/env bash
# A paced 16 kHz sound device for machines without one (CI, a developer's box):
# JACK's dummy driver, which sounddevice/PortAudio can open like a sound card.
# ALSA's null device is not paced and PulseAudio's null sink underflows
# (DESIGN.md), so this is what the local audio bridge is tested on.
#
#   scripts/jack.sh start [NAME] [RATE]   start server NAME (default "kiosk") unless it runs
#   scripts/jack.sh stop  [NAME]          stop it (stop PortAudio clients first)
#   scripts/jack.sh status [NAME]         exit 0 if it runs
#
# Then run programs with JACK_DEFAULT_SERVER=NAME in their environment (it must
# be set before sounddevice is imported). RATE 16016 / 15984 makes a device
# clock 1000 ppm off, for drift tests. Idempotent: start on a running server and
# stop on a stopped one do nothing and exit 0.
set -euo pipefail
cmd=${1:-}
name=${2:-kiosk}
rate=${3:-16000}
state=${XDG_RUNTIME_DIR:-/tmp}/kiosk-jack-$name
pidfile=$state.pid
logfile=$state.log

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

case "$cmd" in
  start)
    if running; then
      echo "jack server $name already running (pid $(cat "$pidfile"))"
      exit 0
    fi
    command -v jackd >/dev/null || { echo "jackd not found: apt-get install jackd2" >&2; exit 1; }
    JACK_NO_AUDIO_RESERVATION=1 setsid jackd -n "$name" --no-realtime -d dummy -r "$rate" -p 320 \
      >"$logfile" 2>&1 </dev/null &
    echo $! >"$pidfile"
    if ! JACK_DEFAULT_SERVER=$name JACK_NO_START_SERVER=1 timeout 10 jack_wait -w >/dev/null 2>&1; then
      echo "jack server $name did not start:" >&2
      tail -20 "$logfile" >&2
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
      exit 1
    fi
    echo "jack server $name running at $rate Hz (pid $(cat "$pidfile")); export JACK_DEFAULT_SERVER=$name"
    ;;
  stop)
    if ! running; then
      rm -f "$pidfile"
      echo "jack server $name not running"
      exit 0
    fi
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$pidfile"
    echo "jack server $name stopped"
    ;;
  status)
    if running; then
      echo "jack server $name running (pid $(cat "$pidfile"))"
    else
      echo "jack server $name not running"
      exit 1
    fi
    ;;
  *)
    echo "usage: $0 start|stop|status [NAME] [RATE]" >&2
    exit 2
    ;;
esac
