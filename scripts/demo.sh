#!/usr/bin/env bash
# The quickstart demo: set-up (idempotent), then a whole mesh on this machine (bootstrap,
# registry, allocator, client proxy on :4200) serving hello-world-server on demand.
# `--once` runs the scenario and exits 0 on success; otherwise it runs until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${MTC_SKIP_SETUP:-0}" = 1 ] || bash scripts/setup.sh
export PATH="/usr/local/bin:$PATH"
exec node demos/quickstart/dist/src/quickstart.js "$@"
