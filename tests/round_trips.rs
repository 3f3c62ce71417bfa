//! Round trips an object waits for, one after another. On AWS a migration is latency-bound:
//! objects/s is objects in flight divided by the sequential waits of each. The S3 and KMS
//! models answer after a fixed delay and log every call; the critical path of one object's
//! calls is the count, for every verify mode and data-key policy.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::models;
use dualseal::config::Config;
use dualseal::engine::{Command, StartRequest};
use dualseal::model::{JobOptions, JobState, VerifyMode};
use dualseal::testing::{CallLog, Delayed, FaultPlan, MemKms, MemS3};

/// Far above the machine's own work per call, so overlapping intervals mean overlapped calls.
const LATENCY: Duration = Duration::from_millis(40);
const SOURCE_KEY: &str = "db/password";
const DEST_KEY: &str = "password";
/// The calls that carry one object; the job's own (listing, preflight) are not its waits.
const OBJECT_CALLS: [&str; 5] = [
    "GetObject",
    "PutObject",
    "HeadObject",
    "GenerateDataKey",
    "Decrypt",
];

fn config(dir: &std::path::Path, reuse_objects: u32) -> Config {
    models::config(
        dir,
        &format!("data_key_reuse_objects = {reuse_objects}"),
        r#"
[[category]]
name = "db"
bucket = "secrets-db"
kms_key = "alias/dualseal-db"
prefixes = ["db/"]
dest_key = "strip-prefix"
"#,
    )
}

fn critical_path(verify: VerifyMode, reuse_objects: u32) -> Vec<&'static str> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), reuse_objects);
    let faults = Arc::new(FaultPlan::none());
    let s3 = MemS3::new(Arc::clone(&faults));
    let kms = MemKms::new(faults);
    s3.create("master", true);
    s3.create("secrets-db", true);
    kms.create("alias/dualseal-db");
    s3.seed("master", SOURCE_KEY, b"hunter2 hunter2 hunter2");
    let log = CallLog::default();

    let (rt, engine) = models::engine(&cfg, s3, kms, LATENCY, &log);
    let state = rt.block_on(async {
        let view = engine
            .execute(
                "round-trips",
                Command::Start(StartRequest {
                    prefix: String::new(),
                    options: JobOptions {
                        verify_mode: verify,
                        ..JobOptions::default()
                    },
                    allow_conflicts: false,
                    allow_weak_buckets: true,
                }),
            )
            .await
            .expect("job starts");
        let id = view.record.id;
        for _ in 0..600 {
            let view = engine.view(id).expect("job view");
            if !matches!(
                view.record.state,
                JobState::Pending | JobState::Running | JobState::Paused
            ) {
                return view.record.state;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the job did not finish in 30 s");
    });
    assert_eq!(state, JobState::Succeeded, "the job migrates its object");

    let calls: Vec<_> = log
        .calls()
        .into_iter()
        .filter(|c| OBJECT_CALLS.contains(&c.op))
        .filter(|c| {
            c.op == "GenerateDataKey"
                || c.op == "Decrypt"
                || c.about == SOURCE_KEY
                || c.about == DEST_KEY
        })
        .collect();
    assert!(
        calls.iter().any(|c| c.op == "PutObject"),
        "the log holds the object's write: {calls:?}"
    );
    CallLog::critical_path(&calls)
}

#[test]
fn full_verification_waits_for_three_round_trips() {
    let path = critical_path(VerifyMode::Full, 0);
    assert_eq!(path.len(), 3, "critical path {path:?}");
}

#[test]
fn checksum_verification_waits_for_two_round_trips() {
    let path = critical_path(VerifyMode::Checksum, 0);
    assert_eq!(path.len(), 2, "critical path {path:?}");
}

#[test]
fn shared_data_keys_wait_no_longer() {
    assert_eq!(critical_path(VerifyMode::Full, 1000).len(), 3);
    assert_eq!(critical_path(VerifyMode::Checksum, 1000).len(), 2);
}

#[test]
fn the_count_sees_sequential_calls() {
    // The measure itself: two calls one after another, then two at once, are a path of three.
    let log = CallLog::default();
    let inner = MemKms::new(Arc::new(FaultPlan::none()));
    let arn = inner.create("alias/k");
    let kms = Delayed::new(inner, Duration::from_millis(20), log.clone());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        use dualseal::kms::KeyService as _;
        let ctx = dualseal::envelope::EncryptionContext::new();
        for _ in 0..2 {
            kms.generate_data_key(&arn, &ctx).await.expect("key");
        }
        let (a, b) = tokio::join!(
            kms.generate_data_key(&arn, &ctx),
            kms.generate_data_key(&arn, &ctx)
        );
        a.and(b).expect("keys");
    });
    assert_eq!(log.calls().len(), 4);
    assert_eq!(CallLog::critical_path(&log.calls()).len(), 3);
}
