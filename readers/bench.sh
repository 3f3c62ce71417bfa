#!/usr/bin/env bash
# Throughput of the application readers on one large object, beside `dualsealctl get` on the same
# object, servers and machine: S3 and KMS on moto (scripts/moto-faithful), the object migrated by
# the real daemon (a multipart upload at this size). Each reader writes the plaintext to a new
# file (`read_to_file` / `readToFile` / `get -o`); each run is checked by its SHA-256 against the
# source. Prints MiB/s of plaintext per run.
#
#   readers/bench.sh                     # 128 MiB, 2 runs each, dualseal binaries of target/debug
#   SIZE_MIB=256 REPS=3 DUALSEAL_BIN=target/release readers/bench.sh
#
# Needs what scripts/test.sh installs (moto, PyNaCl, boto3, node with readers/typescript built)
# and built dualseald/dualsealctl (`cargo build --bins`, or --release: say which you measured).
# moto serves S3 from one Python process: every reader's figure includes that server's cost.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIZE_MIB="${SIZE_MIB:-128}"
REPS="${REPS:-2}"
BIN="$(cd "${DUALSEAL_BIN:-$ROOT/target/debug}" && pwd)"
WORK="$(mktemp -d /tmp/dualseal-readers-bench.XXXXXX)"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_CONFIG_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
log() { echo "[readers/bench $(date +%H:%M:%S)] $*" >&2; }

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
EP="http://127.0.0.1:$PORT"
"$ROOT/scripts/moto-faithful" -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
pids+=($!)
until curl -s -o /dev/null "$EP"; do sleep 0.2; done

log "seeding one ${SIZE_MIB} MiB object of random bytes"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$WORK/source.bin"
WANT="$(sha256sum "$WORK/source.bin" | cut -d' ' -f1)"
ARN="$(EP="$EP" SRC="$WORK/source.bin" python3 - <<'PY'
import os, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["EP"], config=Config(s3={"addressing_style": "path"}))
for b in ("master-secrets", "secrets-misc"):
    s3.create_bucket(Bucket=b)
s3.upload_file(os.environ["SRC"], "master-secrets", "misc/big.bin")
kms = boto3.client("kms", endpoint_url=os.environ["EP"])
key = kms.create_key()["KeyMetadata"]
kms.create_alias(AliasName="alias/dualseal/misc", TargetKeyId=key["KeyId"])
print(key["Arn"])
PY
)"

cat >"$WORK/dualseal.toml" <<TOML
[aws]
region = "us-east-1"
endpoint_url = "$EP"
[source]
bucket = "master-secrets"
[daemon]
journal_path = "$WORK/journal"
control_socket = "$WORK/control.sock"
[provision]
require_hardened_buckets = false
[[category]]
name = "misc"
bucket = "secrets-misc"
kms_key = "alias/dualseal/misc"
prefixes = ["misc/"]
dest_key = "strip-prefix"
TOML
"$BIN/dualseald" --config "$WORK/dualseal.toml" >"$WORK/daemon.log" 2>&1 &
pids+=($!)
until [[ -S "$WORK/control.sock" ]]; do sleep 0.2; done
log "migrating it with the daemon ($BIN)"
"$BIN/dualsealctl" --socket "$WORK/control.sock" start >/dev/null
"$BIN/dualsealctl" --socket "$WORK/control.sock" watch 1 >/dev/null
rm -f "$WORK/source.bin"

now() { date +%s.%N; }
run() { # NAME COMMAND...: times one read into $WORK/out, checks it, prints MiB/s
    local name="$1"; shift
    rm -f "$WORK/out"
    local t0 t1
    t0="$(now)"
    "$@" >/dev/null
    t1="$(now)"
    [[ "$(sha256sum "$WORK/out" | cut -d' ' -f1)" == "$WANT" ]] || { echo "$name: wrong plaintext" >&2; exit 1; }
    printf '%-34s %8.1f MiB/s  (%.2f s)\n' "$name" "$(echo "$SIZE_MIB / ($t1 - $t0)" | bc -l)" "$(echo "$t1 - $t0" | bc -l)"
}
URL="s3://secrets-misc/big.bin"
echo "object: ${SIZE_MIB} MiB, multipart, S3 and KMS on moto-faithful; $(nproc) cores; dualsealctl from $BIN"
for _ in $(seq "$REPS"); do
    run "dualsealctl get -o" "$BIN/dualsealctl" get "$URL" -o "$WORK/out" --endpoint-url "$EP" \
        --expect-category misc --expect-kms-key "$ARN"
    run "python dualseal_reader.read_to_file" env PYTHONPATH="$ROOT/readers/python/src" python3 -c '
import sys, boto3
from botocore.config import Config
from dualseal_reader import Expectation, read_to_file
ep, arn, out = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=ep, config=Config(s3={"addressing_style": "path"}))
kms = boto3.client("kms", endpoint_url=ep)
read_to_file(s3, kms, "secrets-misc", "big.bin", out, expect=Expectation("misc", arn))
' "$EP" "$ARN" "$WORK/out"
    run "node dualseal-reader readToFile" env -C "$ROOT/readers/typescript" node --input-type=module -e '
import { S3Client } from "@aws-sdk/client-s3";
import { KMSClient } from "@aws-sdk/client-kms";
import { Expectation, readToFile } from "'"$ROOT"'/readers/typescript/dist/index.js";
const [ep, arn, out] = process.argv.slice(1);
const s3 = new S3Client({ endpoint: ep, forcePathStyle: true });
const kms = new KMSClient({ endpoint: ep });
await readToFile(s3, kms, "secrets-misc", "big.bin", out, { expect: new Expectation({ category: "misc", kmsKeyArn: arn }) });
' "$EP" "$ARN" "$WORK/out"
done
