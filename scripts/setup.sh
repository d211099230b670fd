#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian/Ubuntu machine (root, any Node).
# Installs Node 24 when the node on PATH is older than 22, pnpm, the Debian
# packages the mesh needs, and the workspace dependencies; then builds.
# Starts a Docker daemon (scripts/dockerd.sh) when none answers: allocators run
# instances with it, and the image tests build and run images.
# Usage: scripts/setup.sh            (everything)
#        MTC_SETUP_APT=0 scripts/setup.sh  (skip apt; for machines managed otherwise)
#        MTC_SETUP_DOCKER=0 scripts/setup.sh  (do not start dockerd)
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_SPEC=${MTC_NODE_SPEC:-node@24}
PNPM_VERSION=$(sed -n 's/.*"packageManager": *"pnpm@\([^"]*\)".*/\1/p' package.json)
PREFIX=/usr/local
# prometheus: the binary and promtool for deploy/'s tests (packages/observability); its
# packaged service is kept from starting like the others (policy-rc.d below), and
# --no-install-recommends keeps out prometheus-node-exporter, which would take :9100.
# nginx and wrk: the benchmarks' baseline (two nginx hops in series) and load generator;
# nginx's packaged service is kept from starting too, the benchmarks run their own.
# systemd: systemd-analyze, which checks the units in deploy/systemd (packages/release).
# chromium and a font: the status page's test renders it headless (ping-monitor).
APT_PACKAGES=(etcd-server iproute2 docker.io prometheus nginx wrk systemd chromium fonts-dejavu-core)

log() { printf '[setup] %s\n' "$*" >&2; }

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

# /usr/local/bin comes before /usr/bin on Debian's default PATH, so what we
# install there wins in every new shell without touching profiles.
export PATH="$PREFIX/bin:$PATH"
hash -r

if [ "$(node_major)" -lt 22 ]; then
  log "node $(node --version 2>/dev/null || echo none) is older than 22: installing $NODE_SPEC from the npm registry"
  npm install --global --prefix "$PREFIX" --no-audit --no-fund "$NODE_SPEC" >&2
  hash -r
fi
log "node $(node --version)"

if [ "$(pnpm --version 2>/dev/null || true)" != "$PNPM_VERSION" ]; then
  log "installing pnpm@$PNPM_VERSION"
  npm install --global --prefix "$PREFIX" --no-audit --no-fund "pnpm@$PNPM_VERSION" >&2
  hash -r
fi
log "pnpm $(pnpm --version)"

if [ "${MTC_SETUP_APT:-1}" = 1 ]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # The packaged services must not start on install: the mesh supervises its own.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    rm -f /usr/sbin/policy-rc.d
  fi
fi

if [ "${MTC_SETUP_DOCKER:-1}" = 1 ]; then
  bash scripts/dockerd.sh
fi

log "installing workspace dependencies"
pnpm install --frozen-lockfile >&2
log "building"
pnpm -r --workspace-concurrency=1 run build >&2
log "ready"
