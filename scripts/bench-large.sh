#!/usr/bin/env bash
# One large object, dualseal beside rclone crypt, in one invocation on the same data, servers
# and machine: S3 on s3s-fs, KMS on moto (as scripts/bench.sh). Prints MiB/s, client CPU and
# peak RSS per run, each run verified by decrypting the copy and comparing its SHA-256.
#
#   ./scripts/bench-large.sh                    # a 2 GiB object, 3 repetitions
#   LARGE_MIB=256 REPS=1 ./scripts/bench-large.sh
#
# Knobs: LARGE_MIB (object size, default 2048), REPS (3), PART_MIB (dualseal's
# multipart_part_size, default its own), PARTS_IN_FLIGHT (dualseal's, default its own),
# RCLONE_ARGS (extra rclone flags, default none: rclone's own chunk size and concurrency),
# BENCH_STATE (default /tmp/dualseal-bench-large), ANCHORS (default ../shared/bench).
# dualseal runs with verify=full: it reads the object back and opens it, which rclone does not.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ANCHORS="${ANCHORS:-$ROOT/../shared/bench}"
[[ -f "$ANCHORS/emulator.sh" ]] || { echo "the shared harness is not at $ANCHORS (set ANCHORS)" >&2; exit 2; }
ANCHORS="$(cd "$ANCHORS" && pwd)"
LARGE_MIB="${LARGE_MIB:-2048}"
REPS="${REPS:-3}"
read -r -a RCLONE_EXTRA <<<"${RCLONE_ARGS:-}"
export BENCH_STATE="${BENCH_STATE:-/tmp/dualseal-bench-large}"
mkdir -p "$BENCH_STATE"
RESULTS="$BENCH_STATE/results.tsv"
: >"$RESULTS"

log() { echo "[bench-large $(date +%H:%M:%S)] $*" >&2; }

# --- what the benchmark needs (shared with scripts/bench.sh) ------------------------------------
# shellcheck source=scripts/bench-setup.sh
source "$ROOT/scripts/bench-setup.sh"

cleanup() {
    for k in moto s3s; do "$ANCHORS/emulator.sh" stop "$k" >/dev/null 2>&1 || true; done
    rm -f "$BENCH_STATE/big.bin"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

EP="$("$ANCHORS/emulator.sh" start s3s)"
KMS_EP="$("$ANCHORS/emulator.sh" start moto)"
log "seeding one ${LARGE_MIB} MiB object of random bytes"
head -c "$((LARGE_MIB * 1024 * 1024))" /dev/urandom >"$BENCH_STATE/big.bin"
WANT="$(sha256sum "$BENCH_STATE/big.bin" | cut -d' ' -f1)"
EP="$EP" KMS_EP="$KMS_EP" BIG="$BENCH_STATE/big.bin" python3 - <<'EOF'
import os, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["EP"], region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
for b in ["master-secrets", "secrets-misc"]:
    s3.create_bucket(Bucket=b)
s3.upload_file(os.environ["BIG"], "master-secrets", "misc/big.bin")
kms = boto3.client("kms", endpoint_url=os.environ["KMS_EP"], region_name="us-east-1")
key = kms.create_key(Description="dualseal bench misc")["KeyMetadata"]
kms.create_alias(AliasName="alias/dualseal/misc", TargetKeyId=key["KeyId"])
print(key["Arn"], file=open(os.environ["BIG"] + ".arn", "w"))
EOF
rm -f "$BENCH_STATE/big.bin"
ARN="$(cat "$BENCH_STATE/big.bin.arn")"
"$ANCHORS/rclone_conf.sh" "$EP" "$ARN" aws:kms:dsse "$RCLONE_CONFIG"

template="$BENCH_STATE/dualseal.toml"
{
    printf '[aws]\nregion = "us-east-1"\ns3_endpoint_url = "%s"\nkms_endpoint_url = "%s"\n\n' "$EP" "$KMS_EP"
    printf '[source]\nbucket = "master-secrets"\n\n'
    printf '[daemon]\njournal_path = "@WORK@/journal"\ncontrol_socket = "@WORK@/control.sock"\nconcurrency = 4\n'
    [[ -n "${PART_MIB:-}" ]] && printf 'multipart_part_size = %s\n' "$((PART_MIB * 1024 * 1024))"
    [[ -n "${PARTS_IN_FLIGHT:-}" ]] && printf 'multipart_parts_in_flight = %s\n' "$PARTS_IN_FLIGHT"
    printf '\n[metrics]\nlisten = "127.0.0.1:@METRICS_PORT@"\n\n'
    printf '[provision]\nrequire_hardened_buckets = false\n\n'
    printf '[[category]]\nname = "misc"\nbucket = "secrets-misc"\nkms_key = "alias/dualseal/misc"\nprefixes = ["misc/"]\ndest_key = "strip-prefix"\n'
} >"$template"

{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "dualseal: $DUALSEAL_BUILD; rclone: $(rclone version | head -1)"
    echo "object: ${LARGE_MIB} MiB of random bytes; S3 s3s-fs, KMS moto"
} | tee "$BENCH_STATE/machine.txt" >&2

# Runs a command under /usr/bin/time -v; appends "label rep wall_s cpu_s rss_mib" to RESULTS.
measure() {
    local label="$1" rep="$2"; shift 2
    local tv="$BENCH_STATE/time.txt" t0 t1
    t0="$(date +%s.%N)"
    /usr/bin/time -v -o "$tv" "$@" >"$BENCH_STATE/run.log" 2>&1 || { cat "$BENCH_STATE/run.log" >&2; return 1; }
    t1="$(date +%s.%N)"
    local user sys rss
    user="$(awk -F': ' '/User time/ {print $2}' "$tv")"
    sys="$(awk -F': ' '/System time/ {print $2}' "$tv")"
    rss="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv")"
    printf '%s\t%s\t%.2f\t%.2f\t%.1f\n' "$label" "$rep" "$(echo "$t1 - $t0" | bc -l)" \
        "$(echo "$user + $sys" | bc -l)" "$(echo "$rss / 1024" | bc -l)" >>"$RESULTS"
}

verify() {  # label command...: the decrypted copy must hash to the source
    local label="$1"; shift
    local got
    got="$("$@" | sha256sum | cut -d' ' -f1)"
    [[ "$got" == "$WANT" ]] || { log "$label: the copy does not decrypt to the source"; exit 1; }
}

reset_dest() {
    EP="$EP" python3 - <<'EOF'
import os, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["EP"], region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
for o in s3.list_objects_v2(Bucket="secrets-misc").get("Contents", []):
    s3.delete_object(Bucket="secrets-misc", Key=o["Key"])
EOF
}

for rep in $(seq 1 "$REPS"); do
    reset_dest
    log "rep $rep: rclone crypt"
    measure "rclone crypt (SSE-KMS)" "$rep" rclone copyto src:master-secrets/misc/big.bin c-misc:big.bin \
        --s3-no-head --stats 0 "${RCLONE_EXTRA[@]}"
    verify "rclone" rclone cat c-misc:big.bin
    reset_dest
    log "rep $rep: dualseal verify=full"
    measure "dualseal verify=full" "$rep" "$ROOT/scripts/bench-job.sh" "$template" full "$BENCH_STATE/counters-$rep.txt"
    # dualsealctl get streams too; its own peak RSS is part of what a reader pays.
    /usr/bin/time -v -o "$BENCH_STATE/get-time.txt" \
        "$DUALSEAL_BIN/dualsealctl" get s3://secrets-misc/big.bin --endpoint-url "$EP" \
        --kms-endpoint-url "$KMS_EP" --region us-east-1 >"$BENCH_STATE/got.bin"
    got="$(sha256sum "$BENCH_STATE/got.bin" | cut -d' ' -f1)"
    rm -f "$BENCH_STATE/got.bin"
    [[ "$got" == "$WANT" ]] || { log "dualseal: the copy does not decrypt to the source"; exit 1; }
    log "rep $rep: dualsealctl get peak RSS $(awk -F': ' '/Maximum resident set size/ {printf "%.1f MiB", $2/1024}' "$BENCH_STATE/get-time.txt")"
done

python3 - "$RESULTS" "$LARGE_MIB" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
mib = int(sys.argv[2])
by = {}
for label, rep, wall, cpu, rss in rows:
    by.setdefault(label, []).append((float(wall), float(cpu), float(rss)))
print(f"\n{mib} MiB object, medians of {max(len(v) for v in by.values())} runs (min-max MiB/s):")
print("| tool | MiB/s | min-max | client CPU s | peak RSS MiB (max) |")
print("|---|---|---|---|---|")
med = {}
for label, runs in by.items():
    rates = [mib / w for w, _, _ in runs]
    med[label] = statistics.median(rates)
    print(f"| {label} | {med[label]:.1f} | {min(rates):.1f}-{max(rates):.1f} | "
          f"{statistics.median(c for _, c, _ in runs):.2f} | {max(r for _, _, r in runs):.1f} |")
r = med.get("rclone crypt (SSE-KMS)")
d = med.get("dualseal verify=full")
if r and d:
    print(f"\ndualseal / rclone crypt: {d / r:.2f}x (goal >= 0.80x; dualseal also reads back and opens)")
EOF
cat "$BENCH_STATE/machine.txt"
