#!/usr/bin/env bash
# How long a restart after SIGKILL takes to reach its first new upload when the journal holds
# a million objects: benches/journal.rs writes a journal whose job is running with N objects,
# all verified but the last 10 (as a crash late in a job leaves it); the real daemon then
# starts on it against moto, and the time from spawning dualseald to its first PutObject
# (its own request counter) is printed, then the job is followed to its end.
#
#   ./scripts/bench-resume.sh                  # N=1000000 (building the journal: ~3 minutes)
#   N=100000 ./scripts/bench-resume.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${N:-1000000}"
STATE="${BENCH_STATE:-/tmp/dualseal-bench-resume}"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_CONFIG_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
log() { echo "[bench-resume $(date +%H:%M:%S)] $*" >&2; }
python3 -c "import moto, flask, flask_cors, boto3" 2>/dev/null \
    || python3 -m pip install -q "moto[server]==5.2.1" boto3
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
command -v curl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; }

rm -rf "$STATE" && mkdir -p "$STATE"
log "building dualseal (release)"
(cd "$ROOT" && cargo build --quiet --release --locked --bins)
log "writing a journal of $N objects (the last 10 unfinished)"
(cd "$ROOT" && DUALSEAL_BENCH_OBJECTS="$N" DUALSEAL_BENCH_KEEP="$STATE/journal" \
    cargo bench --quiet --bench journal 2>/dev/null) | tee "$STATE/journal-bench.txt" >&2

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOTO_PORT="$(port)" METRICS_PORT="$(port)"
"$(dirname "$0")/moto-faithful" -H 127.0.0.1 -p "$MOTO_PORT" >"$STATE/moto.log" 2>&1 &
MOTO=$!
DAEMON=
cleanup() {
    [[ -n "$DAEMON" ]] && kill "$DAEMON" 2>/dev/null || true
    kill "$MOTO" 2>/dev/null || true
}
trap cleanup EXIT
EP="http://127.0.0.1:$MOTO_PORT"
for _ in $(seq 1 100); do curl -s -o /dev/null "$EP" && break; sleep 0.1; done
# The source holds the 10 unfinished objects, named as benches/journal.rs names them.
EP="$EP" N="$N" python3 - <<'EOF'
import os, boto3
ep, n = os.environ["EP"], int(os.environ["N"])
s3 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1")
kms = boto3.client("kms", endpoint_url=ep, region_name="us-east-1")
cats = ["db", "api", "tls", "misc"]
s3.create_bucket(Bucket="master-secrets")
for c in cats:
    s3.create_bucket(Bucket=f"secrets-{c}")
    k = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName=f"alias/dualseal-{c}", TargetKeyId=k["KeyId"])
for i in range(n - 10, n):
    key = f"{cats[i % 4]}/team-{i % 8}/secret-{i:08}.json"
    s3.put_object(Bucket="master-secrets", Key=key, Body=f"secret {i}".encode())
EOF
{
    printf '[aws]\nregion = "us-east-1"\nendpoint_url = "%s"\n\n[source]\nbucket = "master-secrets"\n\n' "$EP"
    printf '[daemon]\njournal_path = "%s"\ncontrol_socket = "%s"\n\n' "$STATE/journal" "$STATE/control.sock"
    printf '[metrics]\nlisten = "127.0.0.1:%s"\n\n[provision]\nrequire_hardened_buckets = false\n' "$METRICS_PORT"
    for c in db api tls misc; do
        printf '\n[[category]]\nname = "%s"\nbucket = "secrets-%s"\nkms_key = "alias/dualseal-%s"\nprefixes = ["%s/"]\ndest_key = "strip-prefix"\n' "$c" "$c" "$c" "$c"
    done
} >"$STATE/dualseal.toml"

log "starting dualseald on the journal"
t0="$(date +%s.%N)"
"$ROOT/target/release/dualseald" --config "$STATE/dualseal.toml" run >"$STATE/daemon.log" 2>&1 &
DAEMON=$!
first=""
for _ in $(seq 1 3000); do
    kill -0 "$DAEMON" 2>/dev/null || { tail -20 "$STATE/daemon.log" >&2; exit 1; }
    if curl -s "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null \
        | grep -q '^dualseal_aws_requests_total{.*operation="PutObject".*} [1-9]'; then
        first="$(date +%s.%N)"
        break
    fi
    sleep 0.02
done
[[ -n "$first" ]] || { log "no upload within 60 s"; tail -20 "$STATE/daemon.log" >&2; exit 1; }
"$ROOT/target/release/dualsealctl" --socket "$STATE/control.sock" watch 1 >"$STATE/watch.log" 2>&1 || true
"$ROOT/target/release/dualsealctl" --socket "$STATE/control.sock" status 1 | tee "$STATE/status.txt" >&2
printf '\nresume after SIGKILL with %s journaled objects: first new upload %.2f s after dualseald was started\n' \
    "$N" "$(echo "$first - $t0" | bc -l)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
