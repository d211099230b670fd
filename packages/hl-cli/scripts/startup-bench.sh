#!/usr/bin/env bash
# hl-cli's start-up, measured against `node -e 0` in the same run (README "Startup").
# Usage: packages/hl-cli/scripts/startup-bench.sh [RUNS] [OTHER_HL_CLI_JS]
# Starts a ping-monitor and an hl-service (with its own etcd on ETCD_PORT, default 23795,
# and ETCD_PORT+10) from this tree on loopback, times each command RUNS times (default
# 9; with OTHER_HL_CLI_JS, e.g. an older checkout's bin/hl-cli.js, interleaved with it),
# prints the median CPU (user+sys) and wall time, and stops what it started.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BIN=$ROOT/node_modules/.bin
RUNS=${1:-9}
OTHER=${2:-}
ETCD_PORT=${ETCD_PORT:-23795}
D=$(mktemp -d /tmp/hl-cli-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait || true; rm -rf "$D"; }
trap cleanup EXIT

"$BIN/mtc-keygen" swarm-key --out "$D/swarm.key"
"$BIN/ping-monitor" --psk-file "$D/swarm.key" --listen /ip4/127.0.0.1/tcp/0 --metrics 127.0.0.1:0 \
  --addr-file "$D/pm.addr" 2>"$D/pm.log" &
PIDS+=($!)
for _ in $(seq 150); do [ -s "$D/pm.addr" ] && break; sleep 0.2; done
BS=$(head -1 "$D/pm.addr")
"$BIN/hl-service" --psk-file "$D/swarm.key" --bootstrap "$BS" --listen /ip4/127.0.0.1/tcp/0 \
  --metrics 127.0.0.1:0 --new-etcd-cluster --etcd-client-port "$ETCD_PORT" \
  --etcd-peer-port $((ETCD_PORT + 10)) --data-dir "$D/hl" --addr-file "$D/hl.addr" 2>"$D/hl.log" &
PIDS+=($!)
for _ in $(seq 150); do [ -s "$D/hl.addr" ] && break; sleep 0.2; done
HL=$(head -1 "$D/hl.addr")
sleep 2

declare -A CPU WALL
LABELS=()
measure() { # label, command...
  local label=$1
  shift
  /usr/bin/time -o "$D/time" -f '%U %S %e' "$@" >/dev/null 2>&1 || echo "failed: $*" >&2
  read -r u s e <"$D/time"
  CPU[$label]+="$(echo "($u + $s) * 1000 / 1" | bc) "
  WALL[$label]+="$(echo "$e * 1000 / 1" | bc) "
}
NEW=$ROOT/packages/hl-cli/bin/hl-cli.js
CLIS=("$NEW")
[ -n "$OTHER" ] && CLIS+=("$OTHER")
for _ in $(seq "$RUNS"); do
  measure 'node -e 0' node -e 0
  for cli in "${CLIS[@]}"; do
    tag=$([ "$cli" = "$NEW" ] && echo this || echo other)
    measure "$tag --version" node "$cli" --version
    measure "$tag --help" node "$cli" --help
    measure "$tag list --hl" node "$cli" --psk-file "$D/swarm.key" --hl "$HL" list
    measure "$tag list --bootstrap" node "$cli" --psk-file "$D/swarm.key" --bootstrap "$BS" list
  done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | sed -n "$(((RUNS + 1) / 2))p"; }
printf '%-26s %8s %8s\n' command 'cpu ms' 'wall ms'
for label in 'node -e 0' 'this --version' 'this --help' 'this list --hl' 'this list --bootstrap' \
  'other --version' 'other --help' 'other list --hl' 'other list --bootstrap'; do
  [ -n "${CPU[$label]:-}" ] || continue
  printf '%-26s %8s %8s\n' "$label" "$(median "${CPU[$label]}")" "$(median "${WALL[$label]}")"
done
