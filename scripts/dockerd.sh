#!/usr/bin/env bash
# Makes sure a Docker daemon answers: does nothing when `docker info` already works,
# otherwise starts /usr/sbin/dockerd in the background and waits for it.
# Instances and image builds use host networking, so the daemon runs without the docker0
# bridge and leaves the host's firewall alone (no iptables/NAT rules): nothing to set up,
# nothing to clean, and it also works where netfilter is unavailable.
# Usage: scripts/dockerd.sh     Log: $MTC_DOCKERD_LOG (default /var/log/mtc-dockerd.log)
set -euo pipefail

# How long dockerd may take to answer `docker info` after its start (a cold start,
# creating /var/lib/docker, takes 1-3 s here; 60 s leaves room for a slow disk).
READY_TIMEOUT_S=60
LOG=${MTC_DOCKERD_LOG:-/var/log/mtc-dockerd.log}
PIDFILE=${MTC_DOCKERD_PIDFILE:-/var/run/mtc-dockerd.pid}

log() { printf '[dockerd] %s\n' "$*" >&2; }
fail() {
  printf '[dockerd] error: %s\n' "$*" >&2
  exit 1
}

docker_ok() { docker info >/dev/null 2>&1; }

command -v docker >/dev/null || fail "the docker CLI is not installed (apt-get install docker.io)"
if docker_ok; then
  log "a Docker daemon already answers"
  exit 0
fi
command -v dockerd >/dev/null || fail "dockerd is not installed (apt-get install docker.io)"
[ "$(id -u)" = 0 ] || fail "dockerd must be started as root"

# A daemon we started earlier that is still booting: wait for it instead of starting another.
if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  log "dockerd (pid $(cat "$PIDFILE")) is starting; waiting"
else
  mkdir -p "$(dirname "$LOG")"
  log "starting dockerd (log: $LOG)"
  # setsid: the daemon outlives this shell's session. Storage: dockerd's choice (overlay2).
  setsid dockerd --pidfile "$PIDFILE" --bridge=none --iptables=false \
    >>"$LOG" 2>&1 </dev/null &
fi

for _ in $(seq "$READY_TIMEOUT_S"); do
  if docker_ok; then
    log "ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    exit 0
  fi
  sleep 1
done
fail "dockerd did not answer within ${READY_TIMEOUT_S}s; last log lines: $(tail -n 3 "$LOG" 2>/dev/null | tr '\n' ' ')"
