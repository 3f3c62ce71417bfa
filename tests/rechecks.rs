//! A verification job reports what the copies are, not what the network did: a check that S3
//! or KMS could not answer for now (SlowDown, a 500, ThrottlingException) is made again after a
//! backoff and backs the job off, as a migration's attempt is; only a spent attempt budget
//! makes a copy `unreadable`, and the finding says so. The S3 and KMS models answer after a
//! fixed delay and fail as their seeded fault plan says.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::models;
use dualseal::engine::{Command, Engine, StartRequest};
use dualseal::model::{JobId, JobLimits, JobOptions, JobState, ObjectState};
use dualseal::testing::{CallLog, FaultPlan, FaultRates, MemKms, MemS3};

const LATENCY: Duration = Duration::from_millis(5);
const OBJECTS: usize = 300;

struct World {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    engine: Engine,
    faults: Arc<FaultPlan>,
}

fn world(max_attempts: u32) -> World {
    world_with(max_attempts, Duration::from_millis(5))
}

/// A world whose retries start at `first_retry` (the daemon's is 200 ms).
fn world_with(max_attempts: u32, first_retry: Duration) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = models::config(
        dir.path(),
        &format!("max_attempts = {max_attempts}"),
        r#"
[[category]]
name = "a"
bucket = "secrets-a"
kms_key = "alias/dualseal-a"
prefixes = ["a/"]
"#,
    );
    let faults = Arc::new(FaultPlan::new(7, FaultRates::default()));
    let s3 = MemS3::new(Arc::clone(&faults));
    let kms = MemKms::new(Arc::clone(&faults));
    s3.create("master", true);
    s3.create("secrets-a", true);
    kms.create("alias/dualseal-a");
    for i in 0..OBJECTS {
        s3.seed(
            "master",
            &format!("a/{i:05}"),
            format!("secret {i}").as_bytes(),
        );
    }
    let (rt, engine) = models::engine_tuned(&cfg, s3, kms, LATENCY, &CallLog::default(), |s| {
        // Retries are the point here, not their pace.
        s.retry_initial = first_retry;
        s.retry_max = first_retry * 10;
    });
    World {
        _dir: dir,
        rt,
        engine,
        faults,
    }
}

async fn migrate(engine: &Engine) -> JobId {
    migrate_with(engine, JobOptions::default()).await
}

async fn migrate_with(engine: &Engine, options: JobOptions) -> JobId {
    let id = engine
        .execute(
            "rechecks",
            Command::Start(StartRequest {
                prefix: "a/".into(),
                options,
                allow_conflicts: false,
                allow_weak_buckets: true,
            }),
        )
        .await
        .expect("job starts")
        .record
        .id;
    let (state, _) = until_ended(engine, id, |_| {}).await;
    assert_eq!(state, JobState::Succeeded, "the migration itself");
    id
}

/// Waits for `id` to end, calling `each` with its view every 5 ms; returns its final state and
/// whether it ever reported itself throttled.
async fn until_ended(
    engine: &Engine,
    id: JobId,
    mut each: impl FnMut(&dualseal::engine::JobView),
) -> (JobState, bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut throttled = false;
    while Instant::now() < deadline {
        let view = engine.view(id).expect("job view");
        each(&view);
        throttled |= view.throttled;
        if !matches!(
            view.record.state,
            JobState::Pending | JobState::Running | JobState::Paused
        ) {
            return (view.record.state, throttled);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("job {id} did not end in 120 s");
}

#[test]
fn throttling_and_server_errors_during_a_verification_are_retried_not_reported() {
    let w = world(30);
    w.rt.block_on(async {
        let migrated = migrate(&w.engine).await;
        w.faults.set_rates(FaultRates {
            s3_slowdown: 0.15,
            s3_internal: 0.05,
            kms_throttle: 0.15,
            ..FaultRates::default()
        });
        let check = models::verify(&w.engine, migrated).await;
        let mut retried = 0;
        let (state, throttled) = until_ended(&w.engine, check, |v| {
            retried = retried.max(v.recent_errors.len());
        })
        .await;
        w.faults.set_rates(FaultRates::default());
        let report = w.engine.verify_report(check).await.expect("report");
        assert!(
            retried > 0,
            "the fault plan never reached the verification: this test tested nothing"
        );
        assert_eq!(
            (state, report.checked, report.ok),
            (JobState::Succeeded, OBJECTS as u64, OBJECTS as u64),
            "every copy is intact, so every copy holds; findings: {:?}, first: {:?}",
            report.categories.get("a").map(|c| &c.findings),
            report.mismatches.first().map(|(k, r)| (k, &r.reason)),
        );
        assert!(throttled, "a throttled verification backs off");
    });
}

#[test]
fn a_copy_that_cannot_be_read_within_the_attempt_budget_is_reported_unreadable_with_why() {
    let w = world(4);
    w.rt.block_on(async {
        let migrated = migrate(&w.engine).await;
        let check = models::verify(&w.engine, migrated).await;
        // Once the job's checks are under way, S3 answers nothing but SlowDown: the copies not
        // checked by then cannot be.
        let mut armed = false;
        let (state, _) = until_ended(&w.engine, check, |v| {
            if !armed && v.counts.get(ObjectState::Verified) >= 10 {
                w.faults.set_rates(FaultRates {
                    s3_slowdown: 1.0,
                    ..FaultRates::default()
                });
                armed = true;
            }
        })
        .await;
        w.faults.set_rates(FaultRates::default());
        let report = w.engine.verify_report(check).await.expect("report");
        let findings = report.categories.get("a").map(|c| c.findings.clone());
        let unreadable = findings
            .as_ref()
            .and_then(|f| f.get("unreadable"))
            .copied()
            .unwrap_or(0);
        let message = w.engine.view(check).expect("view").record.message;
        assert!(state != JobState::Running, "ended ({state:?}, {message:?})");
        assert!(
            unreadable > 0 && unreadable + report.ok == report.checked,
            "copies S3 would not serve are unreadable, the others hold, nothing else: {findings:?} \
             (job {state:?}: {message:?}, {} checked)",
            report.checked
        );
        for (key, rec) in &report.mismatches {
            let reason = rec.reason.as_deref().unwrap_or("");
            assert!(
                reason.starts_with("unreadable: gave up after 4 attempts:")
                    && reason.contains("throttled"),
                "{key}: {reason}"
            );
        }
    });
}

#[test]
fn a_verification_keeps_to_its_kms_rate() {
    // A verification takes its migration's limits: at 50 KMS requests a second, its 300
    // Decrypts (one per copy) cannot take less than about 5 s; unlimited they take well under
    // a second here.
    let w = world(5);
    w.rt.block_on(async {
        let migrated = migrate_with(
            &w.engine,
            JobOptions {
                limits: JobLimits {
                    kms_requests_per_sec: Some(50),
                    ..JobLimits::default()
                },
                ..JobOptions::default()
            },
        )
        .await;
        let began = Instant::now();
        let check = models::verify(&w.engine, migrated).await;
        let (state, _) = until_ended(&w.engine, check, |_| {}).await;
        let took = began.elapsed();
        assert_eq!(state, JobState::Succeeded);
        assert!(
            took >= Duration::from_secs(4),
            "{OBJECTS} checks in {took:?}: faster than 50 KMS requests a second allow"
        );
    });
}

#[test]
fn a_verification_stuck_resolving_its_keys_still_pauses_and_cancels_at_once() {
    // KMS refuses everything once the migration is done: the verification's task retries
    // DescribeKey for minutes (the daemon's own delays). A pause or cancel must not wait for
    // that, nor leave it running.
    let w = world_with(5, Duration::from_millis(200));
    w.rt.block_on(async {
        let migrated = migrate(&w.engine).await;
        w.faults.set_rates(FaultRates {
            kms_throttle: 1.0,
            ..FaultRates::default()
        });
        let check = models::verify(&w.engine, migrated).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (command, want) in [
            (Command::Pause(check), JobState::Paused),
            (Command::Cancel(check), JobState::Cancelled),
        ] {
            let asked = Instant::now();
            let answer = tokio::time::timeout(
                Duration::from_secs(20),
                w.engine.execute("rechecks", command),
            )
            .await
            .expect("the call returned while the job was resolving its keys")
            .expect("call");
            assert_eq!(answer.record.state, want);
            assert!(
                asked.elapsed() < Duration::from_secs(5),
                "{:?}",
                asked.elapsed()
            );
        }
    });
}
