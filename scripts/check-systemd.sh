#!/usr/bin/env bash
# Checks the systemd units: `systemd-analyze verify` (syntax, directives, executables) and
# `systemd-analyze security --offline` (sandbox exposure <= 1.5 on its 0-10 scale, i.e.
# --threshold=15 on the command's 0-100 scale). Installs systemd from Debian if missing.
# The units name /usr/local/bin/...; verify checks a copy pointing at the built binaries.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${1:-$ROOT/target/debug}"
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "installing systemd (for systemd-analyze)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq systemd >/dev/null
fi
[[ -x "$BIN/dualseald" ]] || cargo build --quiet --locked --manifest-path "$ROOT/Cargo.toml" --bin dualseald
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
for unit in dualseald.service dualseald@.service; do
    sed "s#/usr/local/bin/#$BIN/#g" "$ROOT/systemd/$unit" >"$TMP/$unit"
done
# A template is verified through an instance.
cp "$TMP/dualseald@.service" "$TMP/dualseald@shard0.service"
systemd-analyze verify "$TMP/dualseald.service" "$TMP/dualseald@shard0.service"
for unit in dualseald.service dualseald@shard0.service; do
    out="$(systemd-analyze security --offline=true --threshold=15 "$TMP/$unit")" || {
        echo "$out" | tail -20
        echo "$unit: exposure above 1.5" >&2
        exit 1
    }
    echo "$unit: $(echo "$out" | tail -1)"
done
echo "systemd units: verify ok, exposure within 1.5"
