#!/usr/bin/env bash
# The quickstart demo: set-up (idempotent), then a bootstrap and two peers on a PSK
# mesh with their RTTs from :9100. `--once` runs the scenario and exits 0 on success.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${MTC_SKIP_SETUP:-0}" = 1 ] || bash scripts/setup.sh
export PATH="/usr/local/bin:$PATH"
exec node demos/quickstart/dist/src/quickstart.js "$@"
