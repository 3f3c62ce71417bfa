//! Sealing and opening throughput per core against the raw XChaCha20-Poly1305 of the same crate
//! (the physical limit of this CPU for this cipher), for a typical secret (4 KiB) and a large
//! object (8 MiB). `cargo bench --bench seal`; the ratio is the figure that matters.

// A benchmark: a failed setup is a bug in the benchmark itself.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dualseal::envelope::{self, DataKey, EncryptionContext, HeaderParams};

const SIZES: [(&str, usize); 2] = [("4KiB", 4 * 1024), ("8MiB", 8 * 1024 * 1024)];

fn params() -> HeaderParams {
    HeaderParams {
        kms_key_id: "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            .into(),
        wrapped_key: vec![7u8; 184],
        context: EncryptionContext::new()
            .with("dualseal:category", "db")
            .with("dualseal:bucket", "secrets-db")
            .with("dualseal:key", "payments/prod/primary.json"),
        segment_size: envelope::DEFAULT_SEGMENT_SIZE,
        shared_data_key: false,
    }
}

fn crypto(c: &mut Criterion) {
    let key = DataKey::from_slice(&[42u8; 32]).expect("key");
    let raw = XChaCha20Poly1305::new(&[42u8; 32].into());
    let nonce = XNonce::default();
    for (name, size) in SIZES {
        let plain = vec![0x5au8; size];
        let mut g = c.benchmark_group("crypto");
        g.throughput(Throughput::Bytes(size as u64));
        if size > 1024 * 1024 {
            g.sample_size(20);
        }
        g.bench_function(BenchmarkId::new("raw_xchacha20poly1305", name), |b| {
            let mut buf = plain.clone();
            b.iter(|| {
                raw.encrypt_inout_detached(&nonce, b"", buf.as_mut_slice().into())
                    .expect("encrypt")
            });
        });
        g.bench_function(BenchmarkId::new("seal", name), |b| {
            b.iter(|| envelope::seal(&key, params(), &plain).expect("seal"));
        });
        // The streaming path (large objects): the input arrives in chunks, the envelope goes
        // into a buffer that is reused.
        g.bench_function(BenchmarkId::new("seal_stream", name), |b| {
            let mut out = Vec::with_capacity(size + size / 1024 + 4096);
            b.iter(|| {
                out.clear();
                let mut s = envelope::StreamSealer::new(&key, params()).expect("sealer");
                for chunk in plain.chunks(256 * 1024) {
                    s.push(chunk, &mut out).expect("push");
                }
                s.finish(&mut out).expect("finish");
            });
        });
        let sealed = envelope::seal(&key, params(), &plain).expect("seal");
        g.bench_function(BenchmarkId::new("open", name), |b| {
            b.iter(|| envelope::open(&key, &sealed, None).expect("open"));
        });
        g.finish();
    }
}

criterion_group!(benches, crypto);
criterion_main!(benches);
