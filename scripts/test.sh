#!/usr/bin/env bash
# Installs what the tests need and runs them all: format, lints, unit, property and
# integration tests (real moto server, real daemon, real gRPC), and the independent
# reference decryptor against the golden envelopes. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "[test.sh $(date +%H:%M:%S)] $*" >&2; }

# --- what the tests need -------------------------------------------------------------------
# moto server (S3 + KMS emulator) and PyNaCl (libsodium, for the reference decryptor).
MOTO_VERSION="5.2.1"
if ! python3 -c "import moto, flask, flask_cors, nacl" 2>/dev/null; then
    log "installing moto[server]==$MOTO_VERSION and pynacl from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" "pynacl>=1.5"
fi
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
MOTO_SERVER="$(command -v moto_server || true)"
if [[ -z "$MOTO_SERVER" ]]; then
    MOTO_SERVER="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/moto_server"
fi
[[ -x "$MOTO_SERVER" ]] || { echo "moto_server not found after install" >&2; exit 1; }
# The tests run moto made faithful where dualseal's checks depend on it (S3 reports the KMS
# key of DSSE objects, as AWS does: scripts/moto-faithful); the plain server is kept for the
# tests that show dualseal failing closed without it.
export MOTO_SERVER_PLAIN="$MOTO_SERVER"
export MOTO_SERVER="$PWD/scripts/moto-faithful"
# protoc is vendored by build.rs (protoc-bin-vendored): nothing to install.
# jemalloc (dualseald's allocator) is C, built by tikv-jemalloc-sys with the C compiler Rust
# links with and make.
if ! command -v make >/dev/null; then
    log "installing make (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make >/dev/null
fi

# The application readers (readers/): boto3 for the Python one (PyNaCl is above); Node and npm
# (Debian's) for the TypeScript one, whose packages are exactly its package-lock.json (npm ci)
# and which is built with the tsc of its devDependencies. tests/readers.rs then fails, rather
# than skips, when a reader cannot run.
if ! python3 -c "import boto3" 2>/dev/null; then
    log "installing boto3 from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check "boto3>=1.28"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    log "installing nodejs and npm (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
log "readers/typescript: npm ci, tsc"
(cd readers/typescript && npm ci --no-audit --no-fund --loglevel=error && npx tsc -p tsconfig.json)
export DUALSEAL_READERS_REQUIRED=1

# Third-party API clients (tests/api_clients.rs, examples/python): stock grpcio and its
# tools from PyPI; buf (lint, format, breaking) from the npm registry.
GRPCIO_VERSION="1.76.0"
if ! python3 -c "import grpc, grpc_tools, grpc_reflection, grpc_status, grpc_health" 2>/dev/null; then
    log "installing grpcio $GRPCIO_VERSION and its tools from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check \
        "grpcio==$GRPCIO_VERSION" "grpcio-tools==$GRPCIO_VERSION" "grpcio-reflection==$GRPCIO_VERSION" \
        "grpcio-status==$GRPCIO_VERSION" "grpcio-health-checking==$GRPCIO_VERSION"
fi
BUF=(npx --yes @bufbuild/buf@1.75.0)

# Packaging, monitoring and Kubernetes checks: lintian, promtool (Debian's prometheus package),
# systemd-analyze and man (Debian); kubernetes-validate (PyPI); cargo-deb (crates.io). The
# scripts that use them install them too when run alone.
need=()
command -v lintian >/dev/null || need+=(lintian)
command -v promtool >/dev/null || need+=(prometheus)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v man >/dev/null || need+=(man-db)
if ((${#need[@]})); then
    log "installing ${need[*]} (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
KUBERNETES_VALIDATE_VERSION="1.37.0"
if [[ "$(kubernetes-validate --version 2>/dev/null)" != *"$KUBERNETES_VALIDATE_VERSION"* ]]; then
    log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
CARGO_DEB_VERSION="3.8.0"
if [[ "$(cargo deb --version 2>/dev/null)" != *"$CARGO_DEB_VERSION"* ]]; then
    log "installing cargo-deb $CARGO_DEB_VERSION (crates.io)"
    cargo install --quiet --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi

# The tests speak only to 127.0.0.1; keep any proxy settings of the host out of it.
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

# --- checks ----------------------------------------------------------------------------------
start=$(date +%s)
log "cargo fmt --check"
cargo fmt --all -- --check
# The clap definitions are include!d (examples/gen_docs.rs renders them), which cargo fmt skips.
rustfmt --check --edition 2021 src/bin/dualsealctl/cli.rs src/bin/dualseald/cli.rs
log "buf lint, buf format, buf breaking against proto/breaking-baseline.binpb"
(cd proto && "${BUF[@]}" lint && "${BUF[@]}" format --diff --exit-code)
# Breaking dualseal.v1 is a decision: whoever makes one rebuilds the baseline image
# (`buf build proto -o proto/breaking-baseline.binpb`) in the commit that makes it, and says
# why there. An image in the tree, not a git ref: a shallow clone checks the same.
"${BUF[@]}" breaking proto --against proto/breaking-baseline.binpb
log "cargo clippy --all-targets --all-features -- -D warnings"
cargo clippy --locked --all-targets --all-features -- -D warnings
log "no import circles between modules (scripts/module-cycles.py)"
python3 scripts/module-cycles.py

# --- tests -----------------------------------------------------------------------------------
if cargo nextest --version >/dev/null 2>&1; then
    log "cargo nextest run"
    cargo nextest run --locked --no-fail-fast --features "fault-injection testing"
else
    log "cargo test (cargo-nextest not installed)"
    cargo test --locked --no-fail-fast --features "fault-injection testing"
fi
log "reference decryptor (libsodium + stdlib HKDF) on the golden envelopes"
python3 scripts/reference_open.py tests/fixtures/envelope-v*.json
python3 scripts/reference_open.py --negative tests/fixtures/envelope-negative.json
log "application readers (Python, TypeScript): every vector of FORMAT.md and tests/fixtures, and the attacks"
PYTHONPATH=readers/python/src:readers/python/tests python3 -m unittest discover -s readers/python/tests
(cd readers/typescript && npm test --silent)
log "systemd units: systemd-analyze verify, and security exposure <= 1.5"
scripts/check-systemd.sh
log "monitoring: promtool check and test rules, every alert tested, the dashboard's queries"
scripts/check-monitoring.sh
log "kubernetes manifests: kubernetes-validate --strict, Kubernetes 1.28 and 1.37 schemas"
kubernetes-validate --strict --quiet -k 1.28.0 contrib/kubernetes/*.yaml
kubernetes-validate --strict --quiet -k 1.37.0 contrib/kubernetes/*.yaml
# The package is made of the dev-profile binaries, built here without the test-only features
# the test run enabled (only this crate is compiled again), not of a second, release build.
log "Debian package: cargo deb of the dev binaries, then its files, lintian, scripts, man pages, units"
cargo build --locked --bins --example gen_docs
deb="$(PROFILE=dev NO_BUILD=1 scripts/package.sh)"
scripts/check-package.sh "$deb"
# Licenses, duplicate/wildcard bans and crate sources need no network; advisories need the
# RustSec database from GitHub, which this CI cannot reach (see deny.toml).
if ! cargo deny --version >/dev/null 2>&1; then
    log "installing cargo-deny (crates.io)"
    cargo install --quiet --locked cargo-deny@0.20.2
fi
log "cargo deny check licenses bans sources"
cargo deny --log-level error check licenses bans sources
log "all green in $(( $(date +%s) - start )) s"
