#!/usr/bin/env bash
# Fuzzes the parsers that take untrusted bytes: the envelope (objects read back from S3), the
# config file, and journal records (a damaged journal). libFuzzer via cargo-fuzz, which needs a
# nightly toolchain. Bounded: FUZZ_SECONDS per target (default 60). Not part of CI.
#
# Corpora live in fuzz/corpus/<target> (seeded from the golden envelopes and the example
# config); a crash leaves fuzz/artifacts/<target>/crash-*: copy it to
# tests/fixtures/fuzz-regressions/<target>/ so tests/fuzz_regressions.rs replays it forever.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
cd "$ROOT"
rustup toolchain list | grep -q nightly || { echo "needs a nightly toolchain: rustup toolchain install nightly" >&2; exit 2; }
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
mkdir -p fuzz/corpus/envelope fuzz/corpus/config fuzz/corpus/journal_record
python3 - <<'PY'
import glob, json, os
for f in glob.glob("tests/fixtures/envelope-v1-*.json"):
    d = json.load(open(f))
    open(os.path.join("fuzz/corpus/envelope", os.path.basename(f) + ".bin"), "wb").write(bytes.fromhex(d["envelope_hex"]))
PY
cp config/*.toml fuzz/corpus/config/
printf '\001{"state":"verified","size":1,"source_etag":"x","source_version":null,"category":"db","dest_bucket":"b","dest_key":"k","attempts":1,"reason":null,"ciphertext_sha256":null,"dest_etag":null,"updated_at_ms":1}' > fuzz/corpus/journal_record/object.bin
for target in envelope config journal_record; do
    echo "== fuzzing $target for ${SECONDS_EACH}s"
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
        grep -E "stat::number_of_executed_units|stat::peak_rss_mb|Done|ERROR|panicked|SUMMARY" || true
done
if ls fuzz/artifacts/*/crash-* >/dev/null 2>&1; then
    echo "crashes found:" >&2
    ls fuzz/artifacts/*/crash-* >&2
    exit 1
fi
echo "no crashes"
