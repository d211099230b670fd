#!/usr/bin/env bash
# Builds the container images from the built workspace (`pnpm build` first):
#   mtc/base:<version> and mtc/base:latest   Node + proxy + entrypoint
#   mtc/hello-world-server:1.0, mtc/hello-caller:1.0   the demo services, FROM mtc/base
# Quick when nothing changed (Docker's layer cache). No registry needed: the base is
# node:24-slim when present locally, else scratch + the host's node and its libraries.
# Usage: scripts/build-images.sh [--save DIR]   (--save: docker save DIR/<name>.tar per
#        demo image, the file `hl-cli add --file` registers)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/bin:$PATH"
# The docker CLI may be newer than the daemon and without buildx: the classic builder.
export DOCKER_BUILDKIT=0

PKG=packages/images
CTX=$PKG/dist   # bundles and build contexts (ignored by git and biome)
BASE_VERSION=$(node -p 'require("./packages/images/package.json").version')
NODE_SLIM=node:24-slim
DEMOS=(hello-world-server hello-caller)
DEMO_TAG=1.0

log() { printf '[images] %s\n' "$*" >&2; }
fail() {
  printf '[images] error: %s\n' "$*" >&2
  exit 1
}

save_dir=
while [ $# -gt 0 ]; do
  case $1 in
    --save) [ $# -ge 2 ] || { echo "[images] --save needs a directory" >&2; exit 2; }
      save_dir=$2; shift 2 ;;
    -h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "[images] unknown argument: $1 (usage: scripts/build-images.sh [--save DIR])" >&2; exit 2 ;;
  esac
done

docker info >/dev/null 2>&1 || fail "no Docker daemon answers (start one: bash scripts/dockerd.sh)"

# Links (or copies) FILE to the same path under DIR, following symlinks.
stage() {
  local file=$1 dir=$2
  mkdir -p "$dir$(dirname "$file")"
  ln -f "$(readlink -f "$file")" "$dir$file" 2>/dev/null || cp -L "$file" "$dir$file"
}

# build DOCKERFILE CONTEXT TAG... -- DOCKER_BUILD_ARGS...: one docker build, its output
# kept in $CTX/<context>.build.log; prints the image's ID, size and build time.
build() {
  local dockerfile=$1 context=$2; shift 2
  local tags=()
  while [ "$1" != -- ]; do tags+=(-t "$1"); shift; done
  shift
  local start=$SECONDS out=$CTX/$(basename "$context").build.log
  if ! docker build --network=host -f "$dockerfile" "${tags[@]}" "$@" "$context" >"$out" 2>&1; then
    tail -n 20 "$out" >&2
    fail "docker build of ${tags[1]} failed (full output: $out)"
  fi
  local size
  size=$(docker image inspect -f '{{.Size}}' "${tags[1]}")
  log "${tags[1]}: $(docker image inspect -f '{{.Id}}' "${tags[1]}" | cut -c8-19)," \
    "$((size / 1000000)) MB, $((SECONDS - start)) s"
}

log "bundling proxy, entrypoint and demos (esbuild)"
mkdir -p "$CTX"
node $PKG/src/bundle.ts "$CTX" || fail "bundling failed (esbuild errors above)"
# Every module of the bundle is initialised on load: --version catches what cannot run bundled.
node "$CTX/base/mtc/proxy.mjs" --version >/dev/null 2>"$CTX/proxy-check.log" ||
  fail "the bundled proxy does not start: $(grep -m1 Error "$CTX/proxy-check.log")"

rootfs=$CTX/base/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs"
if docker image inspect "$NODE_SLIM" >/dev/null 2>&1; then
  base_from=$NODE_SLIM
else
  base_from=scratch
  node_bin=$(readlink -f "$(command -v node)")
  mkdir -p "$rootfs/usr/local/bin"
  ln -f "$node_bin" "$rootfs/usr/local/bin/node" 2>/dev/null || cp "$node_bin" "$rootfs/usr/local/bin/node"
  # Every shared library ldd lists (=> PATH), and the dynamic loader (a bare /PATH).
  while read -r lib; do stage "$lib" "$rootfs"; done < <(
    ldd "$node_bin" | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p'
  )
  mkdir -p "$rootfs/tmp" "$rootfs/etc"
  chmod 1777 "$rootfs/tmp"
fi
log "building mtc/base:$BASE_VERSION FROM $base_from (node $(node --version))"
build $PKG/base/Dockerfile "$CTX/base" "mtc/base:$BASE_VERSION" mtc/base:latest -- \
  --build-arg "BASE=$base_from"

for demo in "${DEMOS[@]}"; do
  log "building mtc/$demo:$DEMO_TAG"
  build "$PKG/$demo/Dockerfile" "$CTX/$demo" "mtc/$demo:$DEMO_TAG" --
done

# The images these builds replaced (untagged now); mtc/base's label marks ours and demos'.
docker image prune -f --filter label=org.opencontainers.image.title=mtc/base >/dev/null

if [ -n "$save_dir" ]; then
  mkdir -p "$save_dir"
  for demo in "${DEMOS[@]}"; do
    docker save -o "$save_dir/.$demo.tar.tmp" "mtc/$demo:$DEMO_TAG"
    mv -f "$save_dir/.$demo.tar.tmp" "$save_dir/$demo.tar"
    log "saved mtc/$demo:$DEMO_TAG to $save_dir/$demo.tar ($(($(stat -c %s "$save_dir/$demo.tar") / 1000000)) MB)"
  done
fi
log "done"
