#!/usr/bin/env bash
# All tests: set-up (idempotent), lint, type-check (part of the build), then every
# test file with Node's test runner. Usage: scripts/test.sh [test files...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${MTC_SKIP_SETUP:-0}" = 1 ] || bash scripts/setup.sh
export PATH="/usr/local/bin:$PATH"

echo "[test] lint" >&2
pnpm exec biome ci --colors=off --reporter=summary .

if [ $# -gt 0 ]; then
  files=("$@")
else
  mapfile -t files < <(find packages demos bench -path '*/node_modules' -prune -o -path '*/test/*.spec.ts' -print | sort)
fi
echo "[test] ${#files[@]} test files" >&2
# One file at a time: the suites start real daemons and share this 2-core machine. Two
# lanes were tried (2026-11-30): 31 → 25.5 min, but side by side the files ran 1.8–4×
# slower (the suite is CPU-bound, not waiting) and a timing assertion failed.
exec node --test --test-concurrency=1 --test-timeout=300000 "${files[@]}"
