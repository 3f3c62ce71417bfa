#!/usr/bin/env bash
# Memory of a streamed audit export: fills journals with 20k and 200k events, exports each
# through the real daemon and CLI, and prints the peak RSS of both processes. Flat memory means
# the 200k figures are close to the 20k ones. No AWS or emulator is involved.
#
# usage: scripts/bench-audit-export.sh [SIZES...]   (default: 20000 200000)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIZES=("${@:-20000 200000}")
read -r -a SIZES <<<"${SIZES[*]}"
WORK="$(mktemp -d /tmp/dualseal-bench-audit.XXXXXX)"
DAEMON_PID=""
cleanup() { [[ -n "$DAEMON_PID" ]] && kill "$DAEMON_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --quiet --release --locked --manifest-path "$ROOT/Cargo.toml" --bins --example fill_audit
BIN="$ROOT/target/release"
peak() { awk '/VmHWM/ {print int($2/1024)}' "/proc/$1/status"; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
printf '%-10s %12s %12s %14s %14s\n' events export_s bytes daemon_MiB ctl_MiB
for n in "${SIZES[@]}"; do
    d="$WORK/$n"; mkdir -p "$d"
    "$BIN/examples/fill_audit" "$d/journal" "$n" >/dev/null
    cat >"$d/cfg.toml" <<TOML
[aws]
region = "us-east-1"
endpoint_url = "http://127.0.0.1:9"
[source]
bucket = "master-secrets"
[daemon]
journal_path = "$d/journal"
control_socket = "$d/ctl.sock"
[[category]]
name = "db"
bucket = "secrets-db"
kms_key = "alias/x"
prefixes = ["db/"]
TOML
    AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x "$BIN/dualseald" --config "$d/cfg.toml" 2>"$d/daemon.log" &
    DAEMON_PID=$!
    for _ in $(seq 1 100); do [[ -S "$d/ctl.sock" ]] && break; sleep 0.1; done
    t0=$(date +%s.%N)
    ctl_kib=$(python3 - "$BIN/dualsealctl" "$d/ctl.sock" "$d/out.jsonl" <<'PY'
import resource, subprocess, sys
subprocess.run([sys.argv[1], "--socket", sys.argv[2], "audit", "export", "-o", sys.argv[3]], check=True, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PY
)
    t1=$(date +%s.%N)
    daemon_mib=$(peak "$DAEMON_PID")
    kill "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=""
    printf '%-10s %12.2f %12s %14s %14s\n' "$n" "$(python3 -c "print($t1 - $t0)")" "$(stat -c %s "$d/out.jsonl")" "$daemon_mib" "$((ctl_kib / 1024))"
    [[ "$(wc -l <"$d/out.jsonl")" == "$n" ]] || { echo "export of $n events has $(wc -l <"$d/out.jsonl") lines" >&2; exit 1; }
    "$BIN/dualsealctl" audit verify --file "$d/out.jsonl" >/dev/null
    rm -rf "$d"
done
