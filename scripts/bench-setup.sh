# Sourced by scripts/bench.sh and scripts/bench-large.sh: the environment and the tools both
# benchmarks need, on a fresh Debian machine. Expects ROOT, BENCH_STATE and a `log` function;
# exports S3S_FS_BIN, DUALSEAL_BIN and DUALSEAL_BENCH_SERVER_WITHOUT_SSE; sets DUALSEAL_BUILD
# (what was measured, for the machine line).
export S3S_FS_BIN="${S3S_FS_BIN:-/tmp/s3s-fs-inst/bin/s3s-fs}"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=testtest123 AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_CONFIG_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_CA_BUNDLE
export RCLONE_CONFIG="$BENCH_STATE/rclone.conf"
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

apt=()
command -v rclone >/dev/null || apt+=(rclone)
[[ -x /usr/bin/time ]] || apt+=(time)
command -v jq >/dev/null || apt+=(jq)
command -v curl >/dev/null || apt+=(curl)
command -v bc >/dev/null || apt+=(bc)
command -v make >/dev/null || apt+=(make)  # jemalloc, built from C by tikv-jemalloc-sys
if ((${#apt[@]})); then
    log "apt-get install ${apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt[@]}" >/dev/null
fi
python3 -c "import moto, flask, flask_cors, boto3" 2>/dev/null \
    || python3 -m pip install -q "moto[server]==5.2.1" boto3
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
if [[ ! -x "$S3S_FS_BIN" ]]; then
    log "building s3s-fs 0.14.1 (about 5 minutes on 2 cores)"
    CARGO_TARGET_DIR=/tmp/s3sbuild/target cargo install s3s-fs --version 0.14.1 --features binary \
        --locked --root "$(dirname "$(dirname "$S3S_FS_BIN")")" >"$BENCH_STATE/s3s-build.log" 2>&1
fi
if [[ -n "${DUALSEAL_BIN:-}" ]]; then
    # Another build to measure (e.g. two profiles side by side), taken as it is.
    log "dualseal from $DUALSEAL_BIN (not rebuilt)"
    DUALSEAL_BUILD="the binaries in $DUALSEAL_BIN (checkout $(git -C "$ROOT" rev-parse --short HEAD))"
else
    log "building dualseal (release, bench feature)"
    (cd "$ROOT" && cargo build --quiet --release --locked --features bench --bins)
    DUALSEAL_BIN="$ROOT/target/release"
    DUALSEAL_BUILD="$(git -C "$ROOT" describe --always --dirty)"
fi
export DUALSEAL_BIN DUALSEAL_BENCH_SERVER_WITHOUT_SSE=1
