#!/usr/bin/env bash
# Builds the workspace and packs the release tarball for this platform:
# release/mtc-VERSION-linux-x64.tar.gz (packages/release/src/release.ts says what is in it).
# Usage: scripts/release.sh [--out DIR] [--version V]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/bin:$PATH"
pnpm -r --workspace-concurrency=1 run build >&2
exec node packages/release/src/release.ts "$@"
