#!/usr/bin/env bash
# One measured dualseal run, as scripts/bench.sh hands it to the shared harness (bench.py run,
# under /usr/bin/time -v): start dualseald on a fresh journal, run one migration job to the end,
# scrape the daemon's request counters, stop the daemon. The daemon is a waited-for child, so
# its CPU time and peak RSS are in the figures.
#
#   bench-job.sh CONFIG_TEMPLATE VERIFY_MODE|default COUNTERS_OUT
set -euo pipefail
template="$1" verify="$2" counters="$3"
bin="${DUALSEAL_BIN:?set DUALSEAL_BIN to the release build directory}"
work="$(mktemp -d /tmp/dualseal-bench-job.XXXXXX)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
sed -e "s|@WORK@|$work|g" -e "s|@METRICS_PORT@|$port|g" "$template" >"$work/dualseal.toml"

# DUALSEAL_DAEMON_WRAPPER: a profiler to run the daemon under (e.g. "heaptrack -o /tmp/h" or
# "perf record -g -o /tmp/perf.data"); its figures then include the profiler's own cost. The
# wrapper must pass SIGTERM on to the daemon: heaptrack's script does not, so kill the daemon
# it leaves behind (pgrep dualseald) once its run is over.
# shellcheck disable=SC2086
${DUALSEAL_DAEMON_WRAPPER:-} "$bin/dualseald" --config "$work/dualseal.toml" run >"$work/daemon.log" 2>&1 &
daemon=$!
stop() {
    kill -TERM "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
}
trap stop EXIT
ctl=("$bin/dualsealctl" --socket "$work/control.sock")
for _ in $(seq 1 200); do
    "${ctl[@]}" status >/dev/null 2>&1 && break
    kill -0 "$daemon" 2>/dev/null || { cat "$work/daemon.log" >&2; exit 1; }
    sleep 0.05
done
# DUALSEAL_START_ARGS: more `dualsealctl start` arguments (bench.sh's "+inv" modes).
# shellcheck disable=SC2086
# VERIFY_MODE "default": no --verify-mode at all (the daemon's default, as shipped).
verify_args=()
[[ "$verify" != default ]] && verify_args=(--verify-mode "$verify")
# The job's adaptive limit (seconds since start, limit): bench.sh reports where the climb got
# to. The gauge is refreshed every 5 s, so it is sampled at half that (more often would only
# add load to the measured machine); BENCH_KEEP_LOG with the limiter's debug log has every step.
(
    t0=$EPOCHREALTIME
    while sleep 2.5; do
        c=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^dualseal_job_concurrency/ {print $NF; exit}')
        [[ -n "$c" ]] && awk -v a="$t0" -v b="$EPOCHREALTIME" -v c="$c" 'BEGIN {printf "%.1f %s\n", b - a, c}'
    done
) >"${counters%.txt}.limit" 2>/dev/null &
sampler=$!
"${ctl[@]}" start "${verify_args[@]}" ${DUALSEAL_START_ARGS:-} --watch >"$work/watch.log" 2>&1 || {
    kill "$sampler" 2>/dev/null || true
    tail -20 "$work/watch.log" >&2
    exit 1
}
kill "$sampler" 2>/dev/null || true
# The daemon's own CPU, user and kernel (ticks, from /proc before it exits): bench.sh reports
# the kernel's share of it.
awk '{sub(/.*\) /, ""); print $12, $13}' "/proc/$daemon/stat" >"${counters%.txt}.cpu" 2>/dev/null || true
# Requests actually sent, by service and operation (counted by the daemon, not assumed).
curl -s "http://127.0.0.1:$port/metrics" \
    | awk '/^dualseal_aws_requests_total/ {print}' >"$counters" || true
stop
trap - EXIT
# BENCH_KEEP_LOG=1: keep the daemon's log beside the counters (with DUALSEAL_LOG, e.g.
# "info,dualseal::engine::limit=debug" to see each step of the adaptive limit).
[[ -n "${BENCH_KEEP_LOG:-}" ]] && cp "$work/daemon.log" "${counters%.txt}.log"
rm -rf "$work"
