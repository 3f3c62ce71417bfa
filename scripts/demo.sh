#!/usr/bin/env bash
# dualseal end to end on a local emulator, with embedded defaults:
#   starts moto_server (S3 + KMS) on a free loopback port, seeds master-secrets with sample
#   secrets, creates one KMS key and one bucket per category, starts dualseald, and with
#   dualsealctl plans, starts and watches a migration, verifies it and exports the audit trail.
# Everything it starts is stopped on exit, Ctrl-C or failure.
#
# Settings (environment): DEMO_OBJECTS (default 300), DEMO_KEEP=1 keeps the work directory.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${DEMO_OBJECTS:-300}"
WORK="$(mktemp -d /tmp/dualseal-demo.XXXXXX)"
MOTO_PID="" DAEMON_PID=""

say() { printf '\n== %s\n' "$*"; }
cleanup() {
    local rc=$?
    [[ -n "$DAEMON_PID" ]] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
    [[ -n "$MOTO_PID" ]] && kill "$MOTO_PID" 2>/dev/null && wait "$MOTO_PID" 2>/dev/null
    if [[ "${DEMO_KEEP:-0}" == 1 || $rc -ne 0 ]]; then
        echo "work directory kept: $WORK (daemon.log, moto.log, audit.*)"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 130' INT TERM

# Emulator credentials only: they never leave this machine.
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

say "preparing (moto server from PyPI, release build)"
if ! python3 -c "import moto, flask, flask_cors, boto3" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check "moto[server]==5.2.1"
fi
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
# moto made faithful where dualseal's checks depend on it: S3 reports the KMS key of DSSE
# objects, as AWS does (plain moto does not, and dualseal fails closed on it).
MOTO="$ROOT/scripts/moto-faithful"
# jemalloc (dualseald's allocator) is built from C source: it needs make.
if ! command -v make >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make >/dev/null
fi
cargo build --quiet --release --locked --manifest-path "$ROOT/Cargo.toml" --bins
BIN="$ROOT/target/release"
CTL=("$BIN/dualsealctl" --socket "$WORK/control.sock")

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$MOTO" -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 1 150); do   # bounded: 30 s
    grep -q "Running on" "$WORK/moto.log" 2>/dev/null && break
    kill -0 "$MOTO_PID" 2>/dev/null || { cat "$WORK/moto.log"; exit 1; }
    sleep 0.2
done
ENDPOINT="http://127.0.0.1:$PORT"
echo "moto server at $ENDPOINT"

say "seeding master-secrets with $N sample secrets (+ edge cases)"
python3 "$ROOT/scripts/seed_demo.py" --endpoint "$ENDPOINT" -n "$N" --source-only | tee "$WORK/seed.json"

cat >"$WORK/dualseal.toml" <<TOML
[aws]
region = "us-east-1"
endpoint_url = "$ENDPOINT"

[source]
bucket = "master-secrets"

[daemon]
journal_path = "$WORK/journal"
control_socket = "$WORK/control.sock"
concurrency = 16

# Keys (alias/dualseal/<category>) and buckets are created by \`dualsealctl provision\`.
# The ARNs are moto's default account; on AWS they are your daemon's role and your admins.
[provision]
writer = "arn:aws:iam::123456789012:role/dualseald"
key_admins = ["arn:aws:iam::123456789012:role/kms-admin"]

# Who keeps access to master-secrets once it is locked down after cutover.
[decommission]
break_glass = ["arn:aws:iam::123456789012:role/break-glass"]
archive_bucket = "secrets-archive"
archive_retention_days = 30

[[category]]
name = "db"
bucket = "secrets-db"
prefixes = ["db/"]
dest_key = "strip-prefix"
readers = ["arn:aws:iam::123456789012:role/payments-db"]

[[category]]
name = "api"
bucket = "secrets-api"
prefixes = ["api/"]
dest_key = "strip-prefix"
readers = ["arn:aws:iam::123456789012:role/gateway"]

[[category]]
name = "tls"
bucket = "secrets-tls"
prefixes = ["tls/"]
dest_key = "strip-prefix"
readers = ["arn:aws:iam::123456789012:role/ingress"]

[[category]]
name = "misc"
bucket = "secrets-misc"
prefixes = ["misc/", "env/"]
readers = ["arn:aws:iam::123456789012:role/ops"]
TOML
"$BIN/dualseald" validate --config "$WORK/dualseal.toml"

say "starting dualseald"
"$BIN/dualseald" --config "$WORK/dualseal.toml" >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 1 150); do   # bounded: 30 s
    "${CTL[@]}" status >/dev/null 2>&1 && break
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/daemon.log"; exit 1; }
    sleep 0.2
done

say "provision: what is missing, then create keys and hardened buckets with least-privilege policies"
"${CTL[@]}" provision || true
"${CTL[@]}" provision --apply
"${CTL[@]}" provision --check
"${CTL[@]}" provision --write-policies "$WORK/policies" --terraform >/dev/null
ls "$WORK/policies"

say "plan (dry run)"
"${CTL[@]}" plan
# moto ignores the conditions in bucket policies, so it would treat each conditional Deny
# (TLS only, DSSE-KMS only, this key only, these principals only) as a Deny of everything.
# AWS evaluates them; here they are removed, and the start says so (audited override).
echo "(moto cannot evaluate conditional bucket policies: removing them for the emulator run)"
python3 "$ROOT/scripts/seed_demo.py" --endpoint "$ENDPOINT" --drop-bucket-policies

say "migrate"
t0=$(date +%s.%N)
JOB="$("${CTL[@]}" --json start --allow-weak-buckets | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')"
echo "job $JOB started"
"${CTL[@]}" watch "$JOB"
t1=$(date +%s.%N)

say "verify (re-read every object from both buckets, decrypt through KMS, compare)"
"${CTL[@]}" verify "$JOB"

say "move applications: the location map, and a secret read as an application would (S3 + KMS only)"
"${CTL[@]}" mapping "$JOB" --format csv --output "$WORK/mapping.csv"
"${CTL[@]}" mapping "$JOB" --format env --output "$WORK/mapping.env"
head -3 "$WORK/mapping.env"
"${CTL[@]}" mapping "$JOB" >"$WORK/mapping.jsonl"
# The mapping names each copy's category and KMS key: a reader pins both.
read -r READ_URL READ_CAT READ_KEY < <(python3 -c 'import json,sys; e=[x for x in map(json.loads, open(sys.argv[1])) if x["category"]=="db"][0]; print("s3://%s/%s" % (e["destination_bucket"], e["destination_key"]), e["category"], e["kms_key_arn"])' "$WORK/mapping.jsonl")
"$BIN/dualsealctl" get "$READ_URL" --expect-category "$READ_CAT" --expect-kms-key "$READ_KEY" \
    --endpoint-url "$ENDPOINT" --region us-east-1 --output "$WORK/read-back.bin"

say "catch up: a secret rotated in master-secrets after the copy"
python3 - "$ENDPOINT" "$WORK/mapping.jsonl" <<'PY'
import json, sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], config=Config(s3={"addressing_style": "path"}))
first = json.loads(open(sys.argv[2]).readline())
s3.put_object(Bucket=first["source_bucket"], Key=first["source_key"], Body=b"rotated secret value")
print("rotated s3://%s/%s" % (first["source_bucket"], first["source_key"]))
PY
"${CTL[@]}" cutover-check "$JOB" || echo "(not ready yet, as expected)"
"${CTL[@]}" sync "$JOB" --watch >/dev/null
# The bucket policies removed for moto's sake go back now: the cutover check requires them.
"${CTL[@]}" provision --apply | tail -1
"${CTL[@]}" cutover-check "$JOB"

say "decommission: archive a sealed, retained copy of every migrated secret first"
python3 - "$ENDPOINT" <<'PY'
import sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], config=Config(s3={"addressing_style": "path"}))
s3.create_bucket(Bucket="secrets-archive", ObjectLockEnabledForBucket=True)
print("created s3://secrets-archive with Object Lock")
PY
# (Before the lockdown here only because moto enforces the lockdown's conditional deny on
# everyone; on AWS the break-glass role runs the archive after it.)
PLAN="$("${CTL[@]}" decommission plan "$JOB" --mode archive)"
echo "$PLAN"
"${CTL[@]}" decommission run "$(echo "$PLAN" | tail -1 | awk '{print $NF}')"

say "decommission: lock master-secrets down (plan, then run its one-time token; reversible)"
PLAN="$("${CTL[@]}" decommission plan "$JOB" --mode lockdown)"
echo "$PLAN"
"${CTL[@]}" decommission run "$(echo "$PLAN" | tail -1 | awk '{print $NF}')"
echo "(undo with: dualsealctl decommission plan $JOB --mode rollback, then run its token)"

say "audit export (the whole hash-chained trail) and offline check against the recorded head"
HEAD="$("${CTL[@]}" audit head)"
"${CTL[@]}" audit export --format jsonl --output "$WORK/audit.jsonl"
"${CTL[@]}" audit export --format csv --output "$WORK/audit.csv"
"${CTL[@]}" audit verify --file "$WORK/audit.jsonl" --head "$HEAD"
"${CTL[@]}" audit summary --job "$JOB"

say "summary"
ELAPSED="$(python3 -c "print($t1 - $t0)")"
"${CTL[@]}" --json status "$JOB" >"$WORK/status.json"
python3 - "$WORK/status.json" "$ELAPSED" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))[0]
elapsed = float(sys.argv[2])
print("job %d: %s in %.1f s" % (j["job_id"], j["state"], elapsed))
for c in j.get("categories", []):
    print("  %-12s %6d objects %12s bytes" % (c["category"], c["verified_objects"], format(c["verified_bytes"], ",")))
print("  %-12s %6d objects %12s bytes (%.0f objects/s)" % ("verified", j["verified"], format(j["verified_bytes"], ","), j["verified"] / elapsed))
print("  %-12s %6d (left in master-secrets)" % ("unclassified", j["unclassified"]))
print("  %-12s %6d" % ("conflicts", j["conflicts"]))
print("  %-12s %6d" % ("failed", j["failed"]))
PY
echo "  audit trail: $(wc -l <"$WORK/audit.jsonl") events (hash-chained) in $WORK/audit.jsonl and audit.csv"
