#!/bin/sh
# Installs this mtc release (the directory this script is in) on a Debian/Ubuntu host.
#
# Usage: sudo ./install.sh [--prefix DIR] [--etc-dir DIR] [--unit-dir DIR]
#                          [--bin-dir DIR] [--no-user]
#   --prefix DIR    where bin/ lib/ proto/ static/ deploy/ go (default /opt/mtc); an existing
#                   install there is replaced, /etc/mtc is kept
#   --etc-dir DIR   settings: example env files copied here unless present (default /etc/mtc)
#   --unit-dir DIR  systemd units (default /etc/systemd/system); they name --prefix and
#                   --etc-dir
#   --bin-dir DIR   symlinks to bin/* (default /usr/local/bin; '' for none)
#   --no-user       do not create the system user `mtc` (tests, or users managed otherwise)
# Needs Node >= 22 on PATH (or $MTC_NODE). Starts nothing: see the printed next steps.
set -eu
# The tree must be readable by the service user whatever root's umask is.
umask 022

src=$(dirname "$(readlink -f "$0")")
prefix=/opt/mtc
etc=/etc/mtc
units=/etc/systemd/system
bindir=/usr/local/bin
user=yes

die() {
  echo "install.sh: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case $1 in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --etc-dir) etc=${2:?--etc-dir needs a directory}; shift 2 ;;
    --unit-dir) units=${2:?--unit-dir needs a directory}; shift 2 ;;
    --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a directory (or '')"; bindir=$2; shift 2 ;;
    --no-user) user=no; shift ;;
    -h | --help) sed -n '2,13s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
case $prefix in /*) ;; *) die "--prefix must be an absolute path" ;; esac
case $etc in /*) ;; *) die "--etc-dir must be an absolute path" ;; esac

node=${MTC_NODE:-node}
major=$("$node" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 22 ]; then
  die "Node >= 22 is required, found '$("$node" --version 2>/dev/null || echo none)'.
  Install it from NodeSource (https://github.com/nodesource/distributions) or with
  'npm install --global --prefix /usr/local node@24', then run install.sh again."
fi

# The new tree next to the old one, then swapped in: a failed copy leaves the old install.
mkdir -p "$prefix"
for d in bin lib proto static deploy; do
  rm -rf "$prefix/$d.new"
  cp -R "$src/$d" "$prefix/$d.new"
done
for d in bin lib proto static deploy; do
  rm -rf "$prefix/$d"
  mv "$prefix/$d.new" "$prefix/$d"
done
cp "$src/VERSION" "$prefix/VERSION"

if [ "$user" = yes ] && ! id mtc >/dev/null 2>&1; then
  useradd --system --user-group --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin --comment 'mtc service mesh' mtc
fi

# Settings: examples only where the operator has none yet. The swarm key is the
# operator's to put there (mtc-keygen swarm-key --out /etc/mtc/swarm.key): systemd hands
# it to each service as a credential, so it stays root's, mode 0600.
mkdir -p "$etc"
chmod 0755 "$etc"
for f in "$src"/deploy/env/*.env; do
  [ -e "$etc/$(basename "$f")" ] || cp "$f" "$etc/"
done

mkdir -p "$units"
for f in "$src"/deploy/systemd/*.service; do
  sed -e "s|/opt/mtc|$prefix|g" -e "s|/etc/mtc|$etc|g" "$f" >"$units/$(basename "$f")"
  chmod 0644 "$units/$(basename "$f")"
done

if [ -n "$bindir" ]; then
  mkdir -p "$bindir"
  for f in "$prefix"/bin/*; do ln -sf "$f" "$bindir/$(basename "$f")"; done
fi

if [ "$units" = /etc/systemd/system ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi

cat <<EOF
mtc $(cat "$prefix/VERSION") installed in $prefix (units in $units, settings in $etc).
Next:
  $prefix/bin/mtc-keygen swarm-key --out $etc/swarm.key    # once per mesh; copy to every host
  edit $etc/mesh.env (the bootstrap's address) and $etc/<daemon>.env
  systemctl enable --now mtc-ping-monitor                  # on the bootstrap host
  systemctl enable --now mtc-hl-service mtc-allocator mtc-proxy
EOF
