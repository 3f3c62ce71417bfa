#!/usr/bin/env bash
# Speed and memory of the whole job, dualseal beside the anchors, in one invocation on the same
# seeded data, servers and machine: S3 on s3s-fs (a fast Rust S3 server), KMS on moto. Prints
# one table (objects/s, MB/s, client CPU, peak RSS; every run verified by the shared harness)
# and the S3 and KMS requests per object dualseal actually sent.
#
#   ./scripts/bench.sh                       # N=2000 and N=10000, 3 repetitions
#   SIZES=2000 REPS=1 ./scripts/bench.sh     # quick look
#   BENCH_100K=1 ./scripts/bench.sh          # adds N=100000 (long)
#   LATENCY=20ms/8ms ./scripts/bench.sh      # S3 and KMS answering as slowly as AWS's do
#
# Knobs: SIZES, REPS, CONCURRENCY (dualseal's daemon.concurrency, the ceiling its adaptive
# limit climbs to from 16, labelled "c=" in the tables; default 64; a list such as
# "64 128" runs every mode at each), MODES (dualseal
# runs: verify mode, "+reuse" for shared data keys (data_key_reuse_objects = REUSE_OBJECTS,
# default 1000), "+inv" for keys from an S3 Inventory report of the source instead of
# ListObjectsV2, as for buckets too large to list; default "full checksum full+reuse
# checksum+reuse"), ANCHOR_CONFIGS (default
# "rc16 rx64"; also rx128; "none" for dualseal alone), MAX_BYTES_IN_FLIGHT (dualseal's memory budget,
# default its own), COMMIT_WINDOW_MS (daemon.journal_commit_window_ms, default its own), BENCH_STATE (default /dev/shm/dualseal-bench, else /tmp/dualseal-bench), ANCHORS (the shared harness,
# default ../shared/bench), DUALSEAL_BIN (a directory holding another build's dualseald and
# dualsealctl, and latency_proxy for LATENCY if it has one, used as they are; default: this
# checkout, built), DUALSEAL_DAEMON_WRAPPER (a
# profiler command to run the daemon under; see bench-job.sh).
#
# LATENCY=S3/KMS (e.g. 20ms/8ms) puts a delay proxy (examples/latency_proxy.rs) in front of
# s3s-fs and moto's KMS: every answer is held that long, plus a jitter of up to a tenth of it
# (LATENCY_JITTER=S3/KMS to choose), and both dualseal and rclone talk to the proxies, while
# seeding and the harness's checks go direct. Real S3 and KMS answer in milliseconds; the
# emulators in microseconds, which makes a migration CPU-bound where AWS makes it
# latency-bound. With LATENCY the defaults change to what that question needs: MODES "shipped
# full+reuse checksum+reuse" ("shipped": dualseal's own defaults, no setting but endpoints and
# categories), CONCURRENCY "64 256", ANCHOR_CONFIGS "rcdef rc64 rc256" (rclone copy at its
# default --transfers and at 64 and 256; "rcN" for any N).
#
# s3s-fs ignores SSE headers, so dualseal is built with the `bench` feature and run with
# DUALSEAL_BENCH_SERVER_WITHOUT_SSE=1: it accepts a destination that reports no server-side
# encryption (a wrong one is still refused). Everything else is the shipped code path: real
# KMS calls (moto), envelope, conditional PUT, read-back and open.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ANCHORS="${ANCHORS:-$ROOT/../shared/bench}"
[[ -f "$ANCHORS/bench.py" ]] || { echo "the shared harness is not at $ANCHORS (set ANCHORS)" >&2; exit 2; }
ANCHORS="$(cd "$ANCHORS" && pwd)"
SIZES="${SIZES:-2000 10000}"
[[ "${BENCH_100K:-0}" == 1 ]] && SIZES="$SIZES 100000"
REPS="${REPS:-3}"
LATENCY="${LATENCY:-}"
if [[ -n "$LATENCY" ]]; then
    [[ "$LATENCY" =~ ^([0-9]+)ms/([0-9]+)ms$ ]] || { echo "LATENCY must look like 20ms/8ms (S3/KMS)" >&2; exit 2; }
    S3_DELAY_MS="${BASH_REMATCH[1]}" KMS_DELAY_MS="${BASH_REMATCH[2]}"
    LATENCY_JITTER="${LATENCY_JITTER:-$((S3_DELAY_MS / 10))ms/$((KMS_DELAY_MS / 10))ms}"
    [[ "$LATENCY_JITTER" =~ ^([0-9]+)ms/([0-9]+)ms$ ]] || { echo "LATENCY_JITTER must look like 2ms/1ms" >&2; exit 2; }
    S3_JITTER_MS="${BASH_REMATCH[1]}" KMS_JITTER_MS="${BASH_REMATCH[2]}"
    CONCURRENCY="${CONCURRENCY:-64 256}"
    MODES="${MODES:-shipped full+reuse checksum+reuse}"
    ANCHOR_CONFIGS="${ANCHOR_CONFIGS:-rcdef rc64 rc256}"
fi
CONCURRENCY="${CONCURRENCY:-64}"
MODES="${MODES:-full checksum full+reuse checksum+reuse}"
REUSE_OBJECTS="${REUSE_OBJECTS:-1000}"
ANCHOR_CONFIGS="${ANCHOR_CONFIGS:-rc16 rx64}"
# The server's files live under BENCH_STATE. On tmpfs by default: on this VM's ext4, the
# files the harness deletes between runs made the server's next file creations slower for
# minutes (inode allocation skips recently deleted inodes), so whichever tool ran first in a
# repetition got a faster server (s3s-fs CPU per run rose 5.5 -> 23 s over one N=10000 series).
if [[ -z "${BENCH_STATE:-}" && -d /dev/shm && -w /dev/shm ]]; then
    BENCH_STATE=/dev/shm/dualseal-bench
fi
export BENCH_STATE="${BENCH_STATE:-/tmp/dualseal-bench}"
RESULTS="$BENCH_STATE/results.jsonl"
mkdir -p "$BENCH_STATE/logs"
: >"$RESULTS"
rm -f "$BENCH_STATE"/counters-*.txt "$BENCH_STATE"/counters-*.cpu "$BENCH_STATE"/counters-*.limit

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }

# --- what the benchmark needs ------------------------------------------------------------------
# shellcheck source=scripts/bench-setup.sh
source "$ROOT/scripts/bench-setup.sh"
if [[ -n "$LATENCY" ]]; then
    if [[ -n "${DUALSEAL_BIN:-}" && -x "$DUALSEAL_BIN/latency_proxy" ]]; then
        LATENCY_PROXY="$DUALSEAL_BIN/latency_proxy"
    else
        log "building the latency proxy (examples/latency_proxy.rs)"
        (cd "$ROOT" && cargo build --quiet --release --locked --features bench --example latency_proxy)
        LATENCY_PROXY="$ROOT/target/release/examples/latency_proxy"
    fi
fi

PROXIES=()
stop_proxies() { for p in "${PROXIES[@]}"; do kill "$p" 2>/dev/null || true; done; PROXIES=(); }
cleanup() { stop_proxies; for k in moto s3s; do "$ANCHORS/emulator.sh" stop "$k" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "dualseal: $DUALSEAL_BUILD, concurrency $CONCURRENCY, journal on $(df --output=fstype /tmp | tail -1) (/tmp)"
    echo "rclone: $(rclone version | head -1)"
    echo "s3s-fs: $("$S3S_FS_BIN" --version 2>&1 | head -1)"
    echo "moto (KMS): $(python3 -c 'import moto; print(moto.__version__)')"
    if [[ -n "$LATENCY" ]]; then
        echo "latency: S3 ${S3_DELAY_MS} ms + up to ${S3_JITTER_MS} ms, KMS ${KMS_DELAY_MS} ms + up to ${KMS_JITTER_MS} ms per answer (examples/latency_proxy.rs)"
    fi
} | tee "$BENCH_STATE/machine.txt" >&2

FAILS=0
run() {  # label verify sse dest_key decrypt_cmd -- cmd...
    local label="$1" verify="$2" sse="$3" dk="$4" dc="$5"; shift 5; [[ "$1" == -- ]] && shift
    local extra=()
    [[ -n "$dk" ]] && extra+=(--dest-key "$dk")
    [[ -n "$dc" ]] && extra+=(--decrypt-cmd "$dc")
    python3 "$ANCHORS/bench.py" run --endpoint "$EP" --server s3s-fs --server-pid "$SPID" \
        --manifest "$MANIFEST" --results "$RESULTS" --label "$label" --rep "$REP" \
        --verify "$verify" --sse-expect "$sse" "${extra[@]}" -- "$@" || FAILS=$((FAILS + 1))
}

for n in $SIZES; do
    log "=== N=$n"
    EP="$("$ANCHORS/emulator.sh" start s3s)"
    SPID="$("$ANCHORS/emulator.sh" pid s3s)"
    KMS_EP="$("$ANCHORS/emulator.sh" start moto)"
    # What the tools talk to: the servers themselves, or the delay proxies in front of them.
    TOOL_EP="$EP" TOOL_KMS_EP="$KMS_EP"
    if [[ -n "$LATENCY" ]]; then
        proxy() {  # VAR upstream-url delay jitter: VAR becomes the proxy's url
            local out="$BENCH_STATE/proxy-$1.addr"
            rm -f "$out"
            "$LATENCY_PROXY" 127.0.0.1:0 "${2#http://}" "$3" "$4" >"$out" 2>>"$BENCH_STATE/logs/latency_proxy.log" &
            PROXIES+=($!)
            for _ in $(seq 1 100); do [[ -s "$out" ]] && break; sleep 0.05; done
            [[ -s "$out" ]] || { echo "the latency proxy for $2 did not start" >&2; exit 1; }
            printf -v "$1" 'http://%s' "$(cat "$out")"
        }
        proxy TOOL_EP "$EP" "$S3_DELAY_MS" "$S3_JITTER_MS"
        proxy TOOL_KMS_EP "$KMS_EP" "$KMS_DELAY_MS" "$KMS_JITTER_MS"
    fi
    MANIFEST="$BENCH_STATE/manifest-$n.json"
    python3 "$ANCHORS/seed.py" seed --endpoint "$EP" -n "$n" --kms skip --manifest "$MANIFEST" >/dev/null
    KMS_EP="$KMS_EP" python3 - <<'EOF'
import os, boto3
kms = boto3.client("kms", endpoint_url=os.environ["KMS_EP"], region_name="us-east-1")
for cat in ["db", "api", "tls", "misc"]:
    key = kms.create_key(Description=f"dualseal bench {cat}")["KeyMetadata"]
    kms.create_alias(AliasName=f"alias/dualseal/{cat}", TargetKeyId=key["KeyId"])
EOF
    if [[ " $MODES " == *+inv* ]]; then
        # An S3 Inventory report of the source, as AWS writes it (manifest.json + one gzip CSV),
        # in a bucket of its own on the same server. Keys come from the seed manifest and sizes,
        # dates and ETags (the MD5 of a single-PUT body) from s3s-fs's own files: listing or
        # HEADing 100,000 keys through the emulator took longer than the migration it feeds.
        # A sample of HEADs checks that the ETags agree with what the server says.
        EP="$EP" MANIFEST="$MANIFEST" DATA="$BENCH_STATE/s3s-data/master-secrets" python3 - <<'EOF'
import boto3, csv, datetime, gzip, hashlib, io, json, os, urllib.parse
s3 = boto3.client("s3", endpoint_url=os.environ["EP"], region_name="us-east-1")
keys = [o["key"] for o in json.load(open(os.environ["MANIFEST"]))["objects"]]
rows, etags = io.StringIO(), {}
w = csv.writer(rows, quoting=csv.QUOTE_ALL, lineterminator="\n")
for key in keys:
    path = os.path.join(os.environ["DATA"], key)
    body = open(path, "rb").read()
    etags[key] = hashlib.md5(body).hexdigest()
    mtime = datetime.datetime.fromtimestamp(os.stat(path).st_mtime, datetime.timezone.utc)
    w.writerow(["master-secrets", urllib.parse.quote(key, safe="/"), "", "true", "false",
                len(body), mtime.strftime("%Y-%m-%dT%H:%M:%S.000Z"), etags[key]])
for key in keys[:: max(1, len(keys) // 20)]:
    said = s3.head_object(Bucket="master-secrets", Key=key)["ETag"].strip('"')
    assert said == etags[key], f"{key}: s3s-fs says ETag {said}, the file's MD5 is {etags[key]}"
data = gzip.compress(rows.getvalue().encode())
s3.create_bucket(Bucket="bench-inventory")
s3.put_object(Bucket="bench-inventory", Key="master-secrets/data/1.csv.gz", Body=data)
manifest = {
    "sourceBucket": "master-secrets", "destinationBucket": "arn:aws:s3:::bench-inventory",
    "version": "2016-11-30", "creationTimestamp": "1795737600000", "fileFormat": "CSV",
    "fileSchema": "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag",
    "files": [{"key": "master-secrets/data/1.csv.gz", "size": len(data),
               "MD5checksum": hashlib.md5(data).hexdigest()}],
}
s3.put_object(Bucket="bench-inventory", Key="master-secrets/manifest.json", Body=json.dumps(manifest).encode())
EOF
    fi
    # What listing the source costs the server: dualseal lists the bucket recursively (pages of
    # 1,000, as on S3), and s3s-fs walks the whole tree for every page; rclone walks it one
    # directory at a time. Real S3 has no such cost; this is the share of dualseal's server CPU
    # that comes from the emulator.
    # Skipped when every run reads an inventory instead of listing.
    lists=0
    [[ "$ANCHOR_CONFIGS" != none ]] && lists=1
    for mode in $MODES; do [[ "$mode" == *+inv* ]] || lists=1; done
    ((lists)) && EP="$EP" SPID="$SPID" N="$n" python3 - <<'EOF' | tee -a "$BENCH_STATE/machine.txt" >&2
import boto3, os
pid = os.environ["SPID"]
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
s3 = boto3.client("s3", endpoint_url=os.environ["EP"], region_name="us-east-1")
c0, keys, pages = cpu(), 0, 0
for p in s3.get_paginator("list_objects_v2").paginate(Bucket="master-secrets", PaginationConfig={"PageSize": 1000}):
    keys, pages = keys + len(p.get("Contents", [])), pages + 1
print(f"s3s-fs CPU to list N={os.environ['N']} recursively: {cpu() - c0:.2f} s ({keys} keys, {pages} pages)")
EOF
    arn="$(jq -r .kms_key_arn "$MANIFEST")"
    "$ANCHORS/rclone_conf.sh" "$TOOL_EP" "$arn" aws:kms:dsse "$RCLONE_CONFIG"
    template="$BENCH_STATE/dualseal-$n.toml"
    {
        printf '[aws]\nregion = "us-east-1"\ns3_endpoint_url = "%s"\nkms_endpoint_url = "%s"\n\n' "$TOOL_EP" "$TOOL_KMS_EP"
        printf '[source]\nbucket = "master-secrets"\n\n'
        printf '[daemon]\njournal_path = "@WORK@/journal"\ncontrol_socket = "@WORK@/control.sock"\nconcurrency = 64\n'
        [[ -n "${MAX_BYTES_IN_FLIGHT:-}" ]] && printf 'max_bytes_in_flight = %s\n' "$MAX_BYTES_IN_FLIGHT"
        [[ -n "${COMMIT_WINDOW_MS:-}" ]] && printf 'journal_commit_window_ms = %s\n' "$COMMIT_WINDOW_MS"
        printf '\n'
        printf '[metrics]\nlisten = "127.0.0.1:@METRICS_PORT@"\n\n'
        printf '# s3s-fs has no bucket encryption settings to check.\n[provision]\nrequire_hardened_buckets = false\n'
        for c in db api tls misc; do
            printf '\n[[category]]\nname = "%s"\nbucket = "secrets-%s"\nkms_key = "alias/dualseal/%s"\nprefixes = ["%s/"]\ndest_key = "strip-prefix"\n' "$c" "$c" "$c" "$c"
        done
    } >"$template"
    sed "s/^concurrency = .*/&\ndata_key_reuse_objects = $REUSE_OBJECTS/" "$template" >"$template.reuse"
    # As shipped: no setting but where the servers are, the journal, the socket and the
    # categories (and the one s3s-fs needs).
    sed "/^concurrency = /d" "$template" >"$template.shipped"
    decrypt="$DUALSEAL_BIN/dualsealctl get s3://{bucket}/{key} --endpoint-url $EP --kms-endpoint-url $KMS_EP --region us-east-1"
    RF=(--s3-no-head --use-server-modtime --stats 0)
    anchors() {
        for a in $ANCHOR_CONFIGS; do
            case "$a" in
                rc16) run "rclone crypt t=16" crypt none "" "" -- \
                        rclone copy src:master-secrets crypt-all: --transfers 16 --checkers 16 "${RF[@]}" ;;
                rx64) run "rclone crypt per-prefix t=64" crypt none "" "" -- \
                        "$ANCHORS/rclone_job.sh" crypt seq --transfers 64 --checkers 64 "${RF[@]}" ;;
                rx128) run "rclone crypt per-prefix t=128" crypt none "" "" -- \
                        "$ANCHORS/rclone_job.sh" crypt seq --transfers 128 --checkers 128 "${RF[@]}" ;;
                rcdef) run "rclone crypt default transfers" crypt none "" "" -- \
                        rclone copy src:master-secrets crypt-all: "${RF[@]}" ;;
                rc[0-9]*) t="${a#rc}"
                    run "rclone crypt t=$t" crypt none "" "" -- \
                        rclone copy src:master-secrets crypt-all: --transfers "$t" --checkers "$t" "${RF[@]}" ;;
                none) ;;
                *) log "unknown anchor config $a" ;;
            esac
        done
    }
    dualseal_runs() {
        if [[ " $MODES " == *" shipped "* ]]; then
            export DUALSEAL_START_ARGS=""
            run "dualseal as shipped" keys none '{rest}' "$decrypt" -- \
                "$ROOT/scripts/bench-job.sh" "$template.shipped" default "$BENCH_STATE/counters-$n-shipped-cdefault-$REP.txt"
        fi
        for c in $CONCURRENCY; do
            for mode in $MODES; do
                [[ "$mode" == shipped ]] && continue
                verify="${mode%%+*}" cfg="$template" label="dualseal verify=${mode%%+*} c=$c"
                if [[ "$mode" == *+reuse* ]]; then
                    cfg="$template.reuse" label="$label, 1 data key per $REUSE_OBJECTS"
                fi
                export DUALSEAL_START_ARGS=""
                if [[ "$mode" == *+inv* ]]; then
                    DUALSEAL_START_ARGS="--inventory s3://bench-inventory/master-secrets/manifest.json"
                    label="$label, keys from an S3 Inventory"
                fi
                sed "s/^concurrency = .*/concurrency = $c/" "$cfg" >"$cfg.c$c"
                run "$label" keys none '{rest}' "$decrypt" -- \
                    "$ROOT/scripts/bench-job.sh" "$cfg.c$c" "$verify" "$BENCH_STATE/counters-$n-$mode-c$c-$REP.txt"
            done
        done
    }
    for REP in $(seq 1 "$REPS"); do
        # Odd repetitions run the anchors first, even ones dualseal first: what is left of a
        # run (page cache, allocator, the server's directories) then favours neither.
        if ((REP % 2)); then anchors; dualseal_runs; else dualseal_runs; anchors; fi
    done
    stop_proxies
    "$ANCHORS/emulator.sh" stop moto
    "$ANCHORS/emulator.sh" stop s3s
done

python3 "$ANCHORS/bench.py" report --results "$RESULTS" --md "$BENCH_STATE/results.md"
python3 - "$BENCH_STATE" <<'EOF'
import glob, json, os, re, sys
state = sys.argv[1]
print("\nRequests per object dualseal sent (counted by its metrics), by run:")
print("| N | verify | concurrency | rep | S3 GET | S3 PUT | S3 HEAD | S3 LIST | KMS GenerateDataKey | KMS Decrypt | KMS other | daemon CPU in the kernel | adaptive limit, as the 5-s metrics refresh saw it: peak / at the end |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
rx = re.compile(r'dualseal_aws_requests_total\{(.*)\} (\d+)')
for path in sorted(glob.glob(os.path.join(state, "counters-*.txt"))):
    n, mode, conc, rep = os.path.basename(path)[len("counters-"):-4].split("-", 3)
    by = {}
    for line in open(path):
        m = rx.match(line.strip())
        if not m:
            continue
        labels = dict(kv.split("=", 1) for kv in m.group(1).split(","))
        key = (labels["service"].strip('"'), labels["operation"].strip('"'))
        by[key] = by.get(key, 0) + int(m.group(2))
    per = lambda s, o: by.get((s, o), 0) / int(n)
    other = sum(v for (s, o), v in by.items() if s == "kms" and o not in ("GenerateDataKey", "Decrypt")) / int(n)
    kernel = "?"
    try:
        user, system = (int(x) for x in open(path[:-4] + ".cpu").read().split())
        kernel = f"{100 * system / (user + system):.0f} %"
    except (OSError, ValueError, ZeroDivisionError):
        pass
    climb = "?"
    try:
        samples = [(float(t), int(float(c))) for t, c in (l.split() for l in open(path[:-4] + ".limit") if l.strip())]
        if samples:
            climb = f"{max(c for _, c in samples)} / {samples[-1][1]}"
    except (OSError, ValueError):
        pass
    print(f"| {n} | {mode} | {conc[1:]} | {rep} | {per('s3','GetObject'):.2f} | {per('s3','PutObject'):.2f} | "
          f"{per('s3','HeadObject'):.2f} | {per('s3','ListObjectsV2'):.3f} | "
          f"{per('kms','GenerateDataKey'):.2f} | {per('kms','Decrypt'):.2f} | {other:.3f} | {kernel} | {climb} |")
EOF
python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
# The claims the issue asks for: each dualseal configuration against the best anchor of the
# same N in this invocation (medians over repetitions; failed runs left out).
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in runs:
    if r.get("exit") == 0 and r.get("verify", {}).get("ok"):
        tool = "dualseal" if r["label"].startswith("dualseal") else "anchor"
        by.setdefault((r["n"], tool, r["label"]), []).append(r)
med = lambda rs, f: statistics.median(f(r) for r in rs)
print("\nRatios against the best anchor of the same N (medians; obj/s higher is better, CPU and RSS lower):")
print("| N | dualseal config | best anchor | obj/s ratio | client CPU/obj ratio | peak RSS ratio |")
print("|---|---|---|---|---|---|")
for n in sorted({k[0] for k in by}):
    anchors = {k[2]: v for k, v in by.items() if k[0] == n and k[1] == "anchor"}
    if not anchors:
        continue
    best, brs = max(anchors.items(), key=lambda kv: med(kv[1], lambda r: r["obj_per_s"]))
    b_rate = med(brs, lambda r: r["obj_per_s"])
    b_cpu = med(brs, lambda r: r["cpu_s"] / r["objects"])
    b_rss = med(brs, lambda r: r["max_rss_kb"])
    for (kn, kind, label), rs in sorted(by.items()):
        if kn != n or kind == "anchor":
            continue
        print(f"| {n} | {label} | {best} | {med(rs, lambda r: r['obj_per_s']) / b_rate:.2f}x | "
              f"{med(rs, lambda r: r['cpu_s'] / r['objects']) / b_cpu:.2f}x | "
              f"{med(rs, lambda r: r['max_rss_kb']) / b_rss:.2f}x |")
shipped_rows = []
for n in sorted({k[0] for k in by}):
    ours = {k[2]: med(v, lambda r: r["obj_per_s"]) for k, v in by.items() if k[0] == n and k[1] == "dualseal"}
    shipped = ours.get("dualseal as shipped")
    if shipped is None or len(ours) < 2:
        continue
    label, rate = max(((l, r) for l, r in ours.items() if l != "dualseal as shipped"), key=lambda kv: kv[1])
    shipped_rows.append(f"| {n} | {label} | {rate:.0f} | {shipped:.0f} | {shipped / rate:.2f}x |")
if shipped_rows:
    print("\ndualseal as shipped against its own best configuration of the same N (medians of obj/s):")
    print("| N | best configuration | best obj/s | as shipped obj/s | ratio |")
    print("|---|---|---|---|---|")
    print("\n".join(shipped_rows))
EOF
cat "$BENCH_STATE/machine.txt"
log "results: $BENCH_STATE/results.md; failures: $FAILS"
exit $((FAILS > 0))
