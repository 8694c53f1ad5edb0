#!/usr/bin/env bash
# Side-by-side benchmark of hsmsh and SoftHSM2 (a manual benchmark, not a
# test: CI does not run it).
#
# Installs Debian's softhsm2 if it is missing, makes a throwaway token in
# a temporary folder, builds hsmsh and softhsm-bench, then runs the same
# operations against SoftHSM2 (through PKCS#11) and hsmsh (hsmsh bench)
# alternately, for --rounds rounds, and prints, for each target of the
# speed issue, the min, median and max of its ratio (or figure) over the
# rounds as a markdown table. Progress goes to stderr, the table to
# stdout.
#
#   bench/softhsm/run.sh [--rounds N] [--duration D] [--hsmsh BIN]
#                        [--inprocess-transport T] [--no-keylist]
#
# --rounds 3 and --duration 3s (per run) by default: a round takes a
# little over a minute on 2 cores. --hsmsh uses that binary instead of building
# ./cmd/hsmsh; --no-keylist leaves out hsmcore's 100,000-key lookup (which
# compiles hsmcore's tests).
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"

rounds=3 duration=3s hsmsh="" transport=direct keylist=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --hsmsh) hsmsh="$2"; shift 2 ;;
    --inprocess-transport) transport="$2"; shift 2 ;;
    --no-keylist) keylist=no; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

if ! command -v softhsm2-util >/dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then sudo=sudo; else
      echo "run.sh: softhsm2 is not installed, and installing it needs root (no sudo here): apt-get install softhsm2" >&2
      exit 1
    fi
  fi
  echo "installing Debian's softhsm2 ..." >&2
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq softhsm2 >&2
fi
lib=""
for f in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so; do
  if [ -f "$f" ]; then lib="$f"; break; fi
done
if [ -z "$lib" ]; then
  echo "run.sh: libsofthsm2.so not found (is Debian's libsofthsm2 installed?)" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A throwaway token: its own config and token folder, random PINs that are
# never printed (the user PIN reaches softhsm-bench through the
# environment).
mkdir "$tmp/tokens"
export SOFTHSM2_CONF="$tmp/softhsm2.conf"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$tmp/tokens" >"$SOFTHSM2_CONF"
so_pin=$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')
SOFTHSM_BENCH_PIN=$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')
export SOFTHSM_BENCH_PIN
softhsm2-util --init-token --free --label hsmsh-bench --so-pin "$so_pin" --pin "$SOFTHSM_BENCH_PIN" >/dev/null

echo "building hsmsh and softhsm-bench ..." >&2
if [ -z "$hsmsh" ]; then
  (cd "$repo" && go build -o "$tmp/hsmsh" ./cmd/hsmsh)
  hsmsh="$tmp/hsmsh"
fi
(cd "$here" && go build -o "$tmp/softhsm-bench" .)
if ! "$hsmsh" bench --help | grep -q -- '--remote'; then
  echo "run.sh: $hsmsh's bench has no --remote or baseline (the shell still runs shell/bench.go, not package bench)" >&2
  exit 1
fi

args=(--hsmsh "$hsmsh" --lib "$lib" --token hsmsh-bench --rounds "$rounds" --duration "$duration"
  --inprocess-transport "$transport" --work "$tmp/work")
[ "$keylist" = yes ] && args+=(--repo "$repo")
mkdir "$tmp/work"
# The report says what was measured and how busy the machine was: other
# processes' load shows up as spread between the rounds.
echo "$("$hsmsh" --version); SoftHSM2 $(dpkg-query -W -f='${Version}' softhsm2 2>/dev/null || echo '(version unknown)') ($lib); load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
"$tmp/softhsm-bench" compare "${args[@]}"
echo
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
