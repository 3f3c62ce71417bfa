//! What the SDK spends on one PutObject before it reaches the network, with the payload signed
//! (plain-HTTP endpoints: the SDK hashes the body a second time into the signature) and with
//! `UNSIGNED-PAYLOAD` (HTTPS endpoints, AWS's own), for a typical secret's envelope (4 KiB) and
//! a 1 MiB part. The requests are answered at once by an in-process client, so the figure is
//! the SDK's and ours alone. `cargo bench --bench put_request`; the ratio is what matters.

// A benchmark: a failed setup is a bug in the benchmark itself.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;

use aws_smithy_types::body::SdkBody;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dualseal::store::{sha256_b64, ObjectStore, Precondition, S3Store, SealedPut};

const SIZES: [(&str, usize); 2] = [("4KiB", 4 * 1024), ("1MiB", 1024 * 1024)];

fn store(endpoint: &str) -> S3Store {
    let http = aws_smithy_http_client::test_util::infallible_client_fn(|_| {
        hyper::Response::builder()
            .status(200)
            .header("ETag", "\"e\"")
            .body(SdkBody::empty())
            .expect("response")
    });
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("AKIDBENCH", "secret", None, None, "bench"),
            ),
        )
        .http_client(http)
        .build();
    S3Store::new(&sdk, true)
}

fn put(body: &bytes::Bytes) -> SealedPut {
    SealedPut {
        bucket: "secrets-db".into(),
        key: "payments/prod/primary.json".into(),
        body: body.clone(),
        kms_key_id: "arn:aws:kms:us-east-1:111122223333:key/1234abcd".into(),
        sse_context_json: r#"{"dualseal:category":"db"}"#.into(),
        checksum_sha256_b64: sha256_b64(body),
        metadata: HashMap::new(),
        precondition: Precondition::Absent,
        retention: None,
    }
}

fn put_object(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let signed = store("http://127.0.0.1:9000");
    let unsigned = store("https://s3.us-east-1.amazonaws.com");
    for (name, size) in SIZES {
        let body = bytes::Bytes::from(vec![0x5au8; size]);
        let mut g = c.benchmark_group("put_object");
        g.throughput(Throughput::Bytes(size as u64));
        for (label, s) in [("signed_payload", &signed), ("unsigned_payload", &unsigned)] {
            g.bench_function(BenchmarkId::new(label, name), |b| {
                b.iter(|| rt.block_on(s.put_sealed(put(&body))).expect("put"));
            });
        }
        g.finish();
    }
}

criterion_group!(benches, put_object);
criterion_main!(benches);
