#!/usr/bin/env bash
# Builds the Debian package target/debian/dualseal_VERSION-1_ARCH.deb: dualseald and
# dualsealctl in /usr/bin, both systemd units (installed disabled, never started), the example
# config as the conffile /etc/dualseal/dualseal.toml, man pages and bash/zsh/fish completions
# generated from the clap definitions (examples/gen_docs.rs), docs and the monitoring examples.
#
#   ./scripts/package.sh                  # release build (~10 min cold: lto = "fat")
#   PROFILE=dev NO_BUILD=1 ./scripts/package.sh   # package the dev binaries already built
#                                                 # (scripts/test.sh; not for shipping)
# Installs cargo-deb (crates.io, pinned) when missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROFILE="${PROFILE:-release}"
CARGO_DEB_VERSION="3.8.0"
log() { echo "[package.sh $(date +%H:%M:%S)] $*" >&2; }

if [[ "$(cargo deb --version 2>/dev/null)" != *"$CARGO_DEB_VERSION"* ]]; then
    log "installing cargo-deb $CARGO_DEB_VERSION (crates.io)"
    cargo install --quiet --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$PROFILE" in
    dev) OUT="$TARGET_DIR/debug" ;;
    *) OUT="$TARGET_DIR/$PROFILE" ;;
esac
if [[ "${NO_BUILD:-0}" != 1 ]]; then
    log "cargo build --profile $PROFILE --bins --example gen_docs"
    cargo build --locked --profile "$PROFILE" --bins --example gen_docs
fi

# Generated assets, where Cargo.toml's [package.metadata.deb] takes them from.
ASSETS="$ROOT/target/debian-assets"
rm -rf "$ASSETS"
mkdir -p "$ASSETS/systemd"
"$OUT/examples/gen_docs" "$ASSETS" >&2
# The units in systemd/ are for installing by hand into /usr/local/bin; the package's run
# /usr/bin. Their install notes give way to a line saying where they come from. cargo-deb
# installs dualseald.service and, from dualseal@.dualseald.service, dualseald@.service.
unit() {
    { echo "# Installed by the dualseal package. Change it with \`systemctl edit $2\`; see"
      echo "# /usr/share/doc/dualseal/systemd.md."
      sed -n '/^\[Unit\]/,$p' "$1" | sed 's#/usr/local/bin/#/usr/bin/#g'
    } >"$3"
}
unit systemd/dualseald.service dualseald "$ASSETS/systemd/dualseald.service"
unit systemd/dualseald@.service dualseald@INSTANCE "$ASSETS/systemd/dualseal@.dualseald.service"
# The control socket's group (the units' Group=dualseal), static so that operators can be
# added to it; systemd-sysusers creates it on install. The daemon's user stays dynamic.
cat >"$ASSETS/systemd/dualseal.sysusers" <<'SYSUSERS'
# dualseald's control socket group: members may run dualsealctl (see [access] in dualseal.toml).
g dualseal - -
SYSUSERS

# Debian wants a changelog; the project's history is its git log, so one entry names the commit.
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
WHEN="$(git log -1 --format=%aD 2>/dev/null || date -R)"
MAINTAINER="$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
cat >"$ASSETS/changelog" <<CHANGELOG
dualseal ($VERSION-1) unstable; urgency=medium

  * dualseal $VERSION, built from commit $COMMIT (changes: the git log).

 -- $MAINTAINER  $WHEN
CHANGELOG

mkdir -p "$ROOT/target/debian"
log "cargo deb --no-build --profile $PROFILE"
# cargo-deb warns that a dev profile is for testing only, which is what test.sh uses it for.
# A dev package is for checking only: faster compression (xz of ~70 MB of unoptimised binaries
# took ~45 s).
fast=()
[[ "$PROFILE" != dev ]] || fast=(--fast)
if ! out="$(cargo deb --locked --no-build --profile "$PROFILE" "${fast[@]}" --output "$ROOT/target/debian/" 2>&1)"; then
    echo "$out" >&2
    exit 1
fi
[[ "$PROFILE" == dev ]] || echo "$out" >&2
# cargo-deb's last line is the path of the package it wrote.
DEB="$(tail -1 <<<"$out")"
[[ "$DEB" == *.deb && -f "$DEB" ]] || { echo "package.sh: no .deb was written: $out" >&2; exit 1; }
echo "$DEB"
