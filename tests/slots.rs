//! Worker slots and the adaptive limit between jobs: a job holds no more of the daemon's
//! slots than its limit lets it use, a raised ceiling is room to climb into rather than a jump,
//! and verification jobs climb as migrations do. The S3 and KMS models answer after a fixed
//! delay, so that objects stay in flight long enough for jobs to compete.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::models;
use dualseal::config::Config;
use dualseal::engine::{Command, Engine, JobUpdate, StartRequest};
use dualseal::model::{JobId, JobLimits, JobOptions, JobState, ObjectState};
use dualseal::testing::{CallLog, FaultPlan, MemKms, MemS3};

const LATENCY: Duration = Duration::from_millis(20);
/// Where a job's adaptive limit starts (README, "Live limits").
const START: usize = 16;

fn config(dir: &std::path::Path, concurrency: usize) -> Config {
    models::config(
        dir,
        &format!("concurrency = {concurrency}"),
        r#"
[[category]]
name = "a"
bucket = "secrets-a"
kms_key = "alias/dualseal-a"
prefixes = ["a/"]

[[category]]
name = "b"
bucket = "secrets-b"
kms_key = "alias/dualseal-b"
prefixes = ["b/"]
"#,
    )
}

struct World {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    engine: Engine,
}

fn world(concurrency: usize, a_objects: usize, b_objects: usize) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), concurrency);
    let faults = Arc::new(FaultPlan::none());
    let s3 = MemS3::new(Arc::clone(&faults));
    let kms = MemKms::new(faults);
    s3.create("master", true);
    for c in ["a", "b"] {
        s3.create(&format!("secrets-{c}"), true);
        kms.create(&format!("alias/dualseal-{c}"));
    }
    for i in 0..a_objects {
        s3.seed(
            "master",
            &format!("a/{i:05}"),
            format!("secret a {i}").as_bytes(),
        );
    }
    for i in 0..b_objects {
        s3.seed(
            "master",
            &format!("b/{i:05}"),
            format!("secret b {i}").as_bytes(),
        );
    }
    let (rt, engine) = models::engine(&cfg, s3, kms, LATENCY, &CallLog::default());
    World {
        _dir: dir,
        rt,
        engine,
    }
}

async fn start(engine: &Engine, prefix: &str) -> JobId {
    start_with(engine, prefix, JobOptions::default()).await
}

async fn start_with(engine: &Engine, prefix: &str, options: JobOptions) -> JobId {
    engine
        .execute(
            "slots",
            Command::Start(StartRequest {
                prefix: prefix.into(),
                options,
                allow_conflicts: false,
                allow_weak_buckets: true,
            }),
        )
        .await
        .expect("job starts")
        .record
        .id
}

fn ended(state: JobState) -> bool {
    !matches!(
        state,
        JobState::Pending | JobState::Running | JobState::Paused
    )
}

/// Waits for `id` to end, calling `each` with its view every 20 ms; returns its final state.
async fn until_ended(
    engine: &Engine,
    id: JobId,
    mut each: impl FnMut(&dualseal::engine::JobView),
) -> JobState {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let view = engine.view(id).expect("job view");
        each(&view);
        if ended(view.record.state) {
            return view.record.state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id} did not end in 120 s");
}

#[test]
fn a_job_whose_limit_fell_leaves_its_unused_slots_to_another_job() {
    // Job a fills all 8 of the daemon's slots, then its ceiling drops to 1: it can use one
    // slot, and must not sit on the other seven while job b (same priority) waits.
    let w = world(8, 400, 40);
    w.rt.block_on(async {
        let a = start(&w.engine, "a/").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while w
            .engine
            .view(a)
            .expect("view")
            .counts
            .get(ObjectState::Verified)
            < 40
        {
            assert!(Instant::now() < deadline, "job a never got going");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        w.engine
            .execute(
                "slots",
                Command::Update(
                    a,
                    JobUpdate {
                        concurrency: Some(1),
                        ..JobUpdate::default()
                    },
                ),
            )
            .await
            .expect("limit");
        let b = start(&w.engine, "b/").await;
        assert_eq!(until_ended(&w.engine, b, |_| {}).await, JobState::Succeeded);
        let a_view = w.engine.view(a).expect("view");
        assert!(
            !ended(a_view.record.state),
            "job b ({} objects) finished only after job a ({} of 400 verified): a kept the slots \
             its limit no longer let it use",
            40,
            a_view.counts.get(ObjectState::Verified)
        );
        w.engine
            .execute("slots", Command::Cancel(a))
            .await
            .expect("cancel");
    });
}

#[test]
fn a_job_bound_by_its_kms_rate_leaves_the_slots_it_cannot_use_to_another_job() {
    // Job a may ask KMS twice a second (an object takes two calls): its objects would wait
    // for KMS tokens holding all 8 of the daemon's slots, and job b (same priority) would
    // get a slot only as a's objects finish, one a second.
    let w = world(8, 400, 200);
    w.rt.block_on(async {
        let a = start_with(
            &w.engine,
            "a/",
            JobOptions {
                limits: JobLimits {
                    kms_requests_per_sec: Some(2),
                    ..JobLimits::default()
                },
                ..JobOptions::default()
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let b = start(&w.engine, "b/").await;
        assert_eq!(until_ended(&w.engine, b, |_| {}).await, JobState::Succeeded);
        let a_done = w
            .engine
            .view(a)
            .expect("view")
            .counts
            .get(ObjectState::Verified);
        assert!(
            a_done < 50,
            "job b's 200 objects went at job a's KMS-bound pace ({a_done} of a's verified \
             meanwhile): a's objects held the slots while they waited for KMS tokens"
        );
        w.engine
            .execute("slots", Command::Cancel(a))
            .await
            .expect("cancel");
    });
}

#[test]
fn a_raised_ceiling_is_climbed_into_not_jumped_to() {
    let w = world(64, 1500, 0);
    w.rt.block_on(async {
        let a = start(&w.engine, "a/").await;
        let limit = |concurrency| {
            w.engine.execute(
                "slots",
                Command::Update(
                    a,
                    JobUpdate {
                        concurrency: Some(concurrency),
                        ..JobUpdate::default()
                    },
                ),
            )
        };
        let lowered = limit(2).await.expect("limit down").concurrency;
        assert_eq!(lowered, Some(2), "a lowered ceiling applies at once");
        let raised = limit(64).await.expect("limit up").concurrency;
        assert_eq!(
            raised,
            Some(2),
            "a raised ceiling is room to climb into, not a jump"
        );
        let mut peak = 0;
        let state = until_ended(&w.engine, a, |v| {
            peak = peak.max(v.concurrency.unwrap_or(0));
        })
        .await;
        assert_eq!(state, JobState::Succeeded);
        assert!(
            peak > 2,
            "the limit climbed from 2 into the room (peak {peak})"
        );
        assert!(peak <= 64, "never above the ceiling (peak {peak})");
    });
}

#[test]
fn verification_jobs_climb_as_migrations_do() {
    let w = world(64, 1500, 0);
    w.rt.block_on(async {
        let a = start(&w.engine, "a/").await;
        assert_eq!(until_ended(&w.engine, a, |_| {}).await, JobState::Succeeded);
        let check = models::verify(&w.engine, a).await;
        let mut peak = 0;
        let state = until_ended(&w.engine, check, |v| {
            peak = peak.max(v.concurrency.unwrap_or(0));
        })
        .await;
        assert_eq!(state, JobState::Succeeded);
        assert!(
            peak > START,
            "a verification job climbs above the start of {START} (peak {peak})"
        );
    });
}

#[test]
fn racing_limit_changes_keep_each_others_fields_and_are_audited_in_the_order_they_took_effect() {
    let w = world(32, 3000, 0);
    w.rt.block_on(async {
        let a = start(&w.engine, "a/").await;
        // Two operators at once: one turns the concurrency knob, the other the KMS rate.
        let mut calls = tokio::task::JoinSet::new();
        for i in 1..=20u32 {
            for kms in [false, true] {
                let engine = w.engine.clone();
                calls.spawn(async move {
                    let update = if kms {
                        JobUpdate {
                            kms_requests_per_sec: Some(1000 + i),
                            ..JobUpdate::default()
                        }
                    } else {
                        JobUpdate {
                            concurrency: Some(i),
                            ..JobUpdate::default()
                        }
                    };
                    engine
                        .execute("slots", Command::Update(a, update))
                        .await
                        .expect("limit");
                });
            }
        }
        while let Some(r) = calls.join_next().await {
            r.expect("call");
        }
        let stored = w.engine.view(a).expect("view").record.options.limits;
        assert!(
            stored.concurrency.is_some() && stored.kms_requests_per_sec.is_some(),
            "a change of one limit undid the other's: {stored:?}"
        );
        let mut audit = w.engine.audit_stream(dualseal::audit::Filter {
            job: Some(a),
            kind: "job_updated".into(),
            ..Default::default()
        });
        let mut last = None;
        while let Some(e) = audit.recv().await {
            last = Some(e.expect("audit").0.detail);
        }
        let last = last.expect("the changes were audited");
        assert!(
            last.ends_with(&serde_json::to_string(&stored).expect("json")),
            "the last audited change ({last}) is not what is in force ({stored:?})"
        );
        w.engine
            .execute("slots", Command::Cancel(a))
            .await
            .expect("cancel");
    });
}

#[test]
fn a_concurrency_above_the_daemons_slots_is_kept_but_the_slots_are_shown_in_force() {
    let w = world(8, 400, 0);
    w.rt.block_on(async {
        let a = start(&w.engine, "a/").await;
        let view = w
            .engine
            .execute(
                "slots",
                Command::Update(
                    a,
                    JobUpdate {
                        concurrency: Some(500),
                        ..JobUpdate::default()
                    },
                ),
            )
            .await
            .expect("limit");
        assert_eq!(view.record.options.limits.concurrency, Some(500));
        assert_eq!(view.limits.concurrency, Some(8), "in force: the 8 slots");
        let note = view.note.unwrap_or_default();
        assert!(
            note.contains("500") && note.contains("8 worker slots"),
            "{note}"
        );
        w.engine
            .execute("slots", Command::Cancel(a))
            .await
            .expect("cancel");
    });
}
