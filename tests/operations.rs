//! Operating jobs against the real daemon and moto: a pause that drains (nothing starts after
//! it returns), resume to completion, cancel mid-job, jobs side by side with priorities and a
//! queue, filters, live limits seen in WatchJob, the failure threshold, checksum verification,
//! and FAILED_PRECONDITION for every impossible transition.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::proxy::FaultProxy;
use common::*;
use dualseal::api::client::ClientError;
use dualseal::api::pb;
use futures::StreamExt;

/// `n` objects spread over the four category prefixes, 1–4 KiB each.
fn objects(n: usize, tag: &str) -> BTreeMap<String, Vec<u8>> {
    (0..n)
        .map(|i| {
            let (_, prefix) = CATEGORY_PREFIXES[i % 4];
            (
                format!("{prefix}{tag}/{i:04}"),
                format!("{tag}-{i}-").repeat(100 + i % 300).into_bytes(),
            )
        })
        .collect()
}

fn code(e: &ClientError) -> tonic::Code {
    match e {
        ClientError::Status(s) => s.code(),
        other => panic!("not a status: {other}"),
    }
}

fn start_req(options: pb::JobOptions) -> pb::StartJobRequest {
    pb::StartJobRequest {
        options: Some(options),
        ..Default::default()
    }
}

fn state(j: &pb::Job) -> pb::JobState {
    pb::JobState::try_from(j.state).expect("state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_drains_and_freezes_resume_finishes_cancel_stops_for_good() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let objs = objects(240, "p");
    put_all(&moto, &objs).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config_via(&proxy.endpoint, dir.path(), 4, 3));
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    wait_until_verified(&mut client, job, 20).await;

    // Pause returns once nothing of the job runs: no request reaches S3 or KMS after it.
    let paused = client.pause(job).await.expect("pause");
    assert_eq!(state(&paused), pb::JobState::Paused);
    let requests = proxy.total();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = client.job(job).await.expect("job");
    assert_eq!(proxy.total(), requests, "requests after pause returned");
    assert_eq!(
        (
            later.verified_objects,
            later.failed_objects,
            later.pending_objects
        ),
        (
            paused.verified_objects,
            paused.failed_objects,
            paused.pending_objects
        ),
        "counts moved while paused"
    );
    assert_eq!(
        later.current_concurrency, 0,
        "a paused job holds no workers"
    );
    assert!(
        paused.verified_objects < objs.len() as u64,
        "paused too late to prove anything"
    );

    // Pausing again is fine and says so; resume continues where it stopped.
    let again = client.pause(job).await.expect("pause again");
    assert!(again.note.contains("already paused"), "{again:?}");
    let resumed = client.resume(job).await.expect("resume");
    assert_eq!(state(&resumed), pb::JobState::Running);
    let done = wait_job(&mut client, job).await;
    assert_eq!(state(&done), pb::JobState::Succeeded, "{done:?}");
    assert_eq!(done.verified_objects, objs.len() as u64);
    assert_one_put_each(&proxy, &cats, objs.keys());
    let audit = client.audit(job).await.expect("audit");
    assert_verified_once(&audit, objs.len());

    // Cancel mid-job: it ends for good, verified objects stay migrated and readable, nothing
    // runs after the call returns and no multipart upload is left open.
    let more = objects(200, "c");
    put_all(&moto, &more).await;
    let second = client
        .start_with(start_req(pb::JobOptions {
            include: vec!["*/c/*".into()],
            ..Default::default()
        }))
        .await
        .expect("start second")
        .job_id;
    wait_until_verified(&mut client, second, 10).await;
    let cancelled = client.cancel(second).await.expect("cancel");
    assert_eq!(state(&cancelled), pb::JobState::Cancelled);
    assert_eq!(
        cancelled.excluded_objects,
        objs.len() as u64,
        "the include glob"
    );
    let requests = proxy.total();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(proxy.total(), requests, "requests after cancel returned");
    assert!(cancelled.verified_objects < more.len() as u64);
    let verified = client
        .objects(second, pb::ObjectState::Verified)
        .await
        .expect("objects");
    assert_eq!(verified.len() as u64, cancelled.verified_objects);
    for o in verified.iter().take(8) {
        let cat = cats.iter().find(|c| c.name == o.category).expect("cat");
        assert_eq!(
            read_sealed(&moto, cat, &o.destination_key).await,
            more[&o.source_key]
        );
    }
    for c in &cats {
        let open = moto
            .s3()
            .list_multipart_uploads()
            .bucket(&c.bucket)
            .send()
            .await
            .expect("list uploads");
        assert!(
            open.uploads().is_empty(),
            "open multipart uploads in {}",
            c.bucket
        );
    }
    assert!(client
        .cancel(second)
        .await
        .expect("cancel again")
        .note
        .contains("already cancelled"));

    // Every impossible transition is FAILED_PRECONDITION naming the state.
    for (what, res) in [
        ("resume a cancelled job", client.resume(second).await),
        ("pause a cancelled job", client.pause(second).await),
        ("pause a succeeded job", client.pause(job).await),
        ("resume a succeeded job", client.resume(job).await),
        ("cancel a succeeded job", client.cancel(job).await),
        ("retry a succeeded job", client.retry(job).await),
        (
            "limit a succeeded job",
            client
                .update(pb::UpdateJobRequest {
                    job_id: job,
                    concurrency: Some(2),
                    ..Default::default()
                })
                .await,
        ),
    ] {
        let e = res.expect_err(what);
        assert_eq!(code(&e), tonic::Code::FailedPrecondition, "{what}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains("cancelled") || msg.contains("succeeded"),
            "{what}: the message does not name the state: {msg}"
        );
    }
    let e = client.pause(999).await.expect_err("no such job");
    assert_eq!(code(&e), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_share_the_workers_and_a_queued_job_waits() {
    let moto = Moto::start();
    provision(&moto).await;
    let objs = objects(400, "q");
    put_all(&moto, &objs).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Two worker slots for the whole daemon: the jobs must compete for them.
    let daemon = Daemon::start(dir.path(), &config_toml(&moto, dir.path(), 2));
    let mut client = daemon.client().await;
    let only = |cats: &[&str], priority: i32| pb::JobOptions {
        only_categories: cats.iter().map(|s| s.to_string()).collect(),
        priority,
        ..Default::default()
    };
    let low = client
        .start_with(start_req(only(&["db", "api"], 0)))
        .await
        .expect("low")
        .job_id;
    // Overlapping a running job is refused, and the message says how to proceed.
    let e = client
        .start_with(start_req(only(&["api"], 0)))
        .await
        .expect_err("overlap");
    assert_eq!(code(&e), tonic::Code::FailedPrecondition);
    assert!(e.to_string().contains("--after"), "{e}");
    wait_until_verified(&mut client, low, 2).await;
    let high = client
        .start_with(start_req(only(&["tls", "misc"], 10)))
        .await
        .expect("high")
        .job_id;
    // Queued behind the low-priority job, over what it covers, leaving out api/.
    let queued = client
        .start_with(start_req(pb::JobOptions {
            after_job_id: low,
            only_categories: vec!["db".into(), "api".into()],
            exclude: vec!["api/**".into()],
            ..Default::default()
        }))
        .await
        .expect("queued");
    assert_eq!(state(&queued), pb::JobState::Pending);

    // Once the high-priority job dispatches, the low one gets no worker until the high one
    // has nothing left to start; the audit trail's order shows it exactly.
    let high_done = wait_job(&mut client, high).await;
    assert_eq!(state(&high_done), pb::JobState::Succeeded);
    assert_eq!(high_done.verified_objects, 200);
    let trail = client.audit(0).await.expect("audit");
    let verified_seqs = |job: u64| {
        trail
            .iter()
            .filter(move |e| e.job_id == job && e.kind == "object_verified")
            .map(|e| e.seq)
    };
    let first_high = verified_seqs(high).min().expect("high verified");
    let last_high = verified_seqs(high).max().expect("high verified");
    let low_meanwhile = verified_seqs(low)
        .filter(|s| (first_high..last_high).contains(s))
        .count();
    assert!(
        low_meanwhile <= 2,
        "the low-priority job finished {low_meanwhile} objects while the high one ran; only the 2 already in flight may"
    );
    let low_done = wait_job(&mut client, low).await;
    assert_eq!(state(&low_done), pb::JobState::Succeeded);
    let q = wait_job(&mut client, queued.job_id).await;
    assert_eq!(state(&q), pb::JobState::Succeeded, "{q:?}");
    assert_eq!(
        q.excluded_objects, 300,
        "api/ by the glob, tls/ and misc/ by category"
    );
    assert_eq!(
        q.verified_objects, 100,
        "db/ again: the earlier copies proved and adopted"
    );
    let audit = client.audit(queued.job_id).await.expect("audit");
    assert!(audit.iter().any(|e| e.kind == "job_dequeued"));
    assert!(audit
        .iter()
        .filter(|e| e.kind == "object_verified")
        .all(|e| e.detail.contains("write=adopted")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_limits_show_in_watch_and_checksum_mode_proves_without_read_back() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let objs = objects(160, "l");
    put_all(&moto, &objs).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config_via(&proxy.endpoint, dir.path(), 8, 3));
    let mut client = daemon.client().await;
    let job = client
        .start_with(start_req(pb::JobOptions {
            verify_mode: pb::VerifyMode::Checksum as i32,
            limits: Some(pb::JobLimits {
                concurrency: 4,
                objects_per_second: 40,
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .expect("start")
        .job_id;
    let mut watch = Box::pin(client.watch(job).await.expect("watch"));
    let mut control = daemon.client().await;
    let mut changed = false;
    let mut seen = None;
    while let Some(j) = watch.next().await {
        let j = j.expect("watch");
        let l = j.limits.expect("limits");
        if !changed && j.verified_objects >= 5 {
            assert_eq!((l.concurrency, l.objects_per_second), (4, 40));
            let u = control
                .update(pb::UpdateJobRequest {
                    job_id: job,
                    concurrency: Some(1),
                    objects_per_second: Some(0),
                    priority: Some(3),
                    ..Default::default()
                })
                .await
                .expect("update");
            assert_eq!(u.limits.expect("limits").concurrency, 1);
            changed = true;
        } else if changed && l.concurrency == 1 && j.current_concurrency == 1 {
            assert_eq!(l.objects_per_second, 0, "the rate went back to unlimited");
            assert_eq!(j.options.as_ref().expect("options").priority, 3);
            seen = Some(j.verified_objects);
        }
        if j.state != pb::JobState::Running as i32 {
            assert_eq!(state(&j), pb::JobState::Succeeded, "{j:?}");
            break;
        }
    }
    assert!(seen.is_some(), "WatchJob never showed the new concurrency");
    // Checksum mode: no GET of a destination object, no KMS Decrypt, yet every copy opens.
    let reqs = proxy.requests();
    let dest_gets: u64 = reqs
        .iter()
        .filter(|(k, _)| k.starts_with("GET secrets-"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(dest_gets, 0, "checksum mode read a destination back");
    // S3's answer to the PUT (the digest it checked, the encryption it applied) is the proof:
    // not even a HEAD follows.
    let dest_heads: u64 = reqs
        .iter()
        // (HeadBucket is "HEAD secrets-db/": the preflight's bucket checks.)
        .filter(|(k, _)| k.starts_with("HEAD secrets-") && !k.ends_with('/'))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(dest_heads, 0, "checksum mode asked again after the write");
    assert_eq!(reqs.get("kms Decrypt").copied().unwrap_or(0), 0);
    for (k, v) in objs.iter().step_by(20) {
        let (name, prefix) = CATEGORY_PREFIXES
            .iter()
            .find(|(_, p)| k.starts_with(p))
            .expect("prefix");
        let cat = cats.iter().find(|c| c.name == *name).expect("cat");
        assert_eq!(&read_sealed(&moto, cat, &k[prefix.len()..]).await, v);
    }
    let audit = client.audit(job).await.expect("audit");
    assert!(audit
        .iter()
        .filter(|e| e.kind == "object_verified")
        .all(|e| e.detail.contains("verify=checksum")));
    assert!(audit.iter().any(|e| e.kind == "job_updated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failure_threshold_stops_a_job_that_keeps_failing() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let objs = objects(240, "f");
    put_all(&moto, &objs).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let tls = cats.iter().find(|c| c.name == "tls").expect("tls");
    proxy.disable_kms_key(tls.key_arn.rsplit('/').next().expect("key id"));
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config_via(&proxy.endpoint, dir.path(), 2, 3));
    let mut client = daemon.client().await;
    let job = client
        .start_with(start_req(pb::JobOptions {
            only_categories: vec!["tls".into()],
            failure_threshold_percent: 50,
            failure_threshold_min_objects: 10,
            ..Default::default()
        }))
        .await
        .expect("start")
        .job_id;
    let done = wait_job(&mut client, job).await;
    assert_eq!(state(&done), pb::JobState::Failed, "{done:?}");
    assert!(done.message.contains("threshold"), "{}", done.message);
    assert!(done.failed_objects >= 10, "{done:?}");
    assert!(
        done.failed_objects + done.verified_objects < 60,
        "the job ran on after passing its threshold: {done:?}"
    );
    assert!(!done.recent_errors.is_empty());
    let failures = client
        .objects(job, pb::ObjectState::Failed)
        .await
        .expect("objects");
    assert!(failures
        .iter()
        .all(|o| o.error_code.starts_with("KMS.") && o.reason.contains("isabled")));
    // Fixed, retried: the job finishes.
    proxy.allow_all();
    client.retry(job).await.expect("retry");
    let done = wait_job(&mut client, job).await;
    assert_eq!(state(&done), pb::JobState::Succeeded, "{done:?}");
    assert_eq!(done.verified_objects, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_split_one_bucket_with_no_key_taken_twice() {
    let moto = Moto::start();
    provision(&moto).await;
    let all = objects(48, "shard");
    put_all(&moto, &all).await;
    let (dir1, dir2) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let shard_config = |dir: &std::path::Path, shard: &str| {
        config_toml(&moto, dir, 4)
            .replace("[daemon]\n", &format!("[daemon]\nshard = \"{shard}\"\n"))
    };
    let mut one = Daemon::start(dir1.path(), &shard_config(dir1.path(), "1/2"));
    let two = Daemon::start(dir2.path(), &shard_config(dir2.path(), "2/2"));
    let mut verified = Vec::new();
    for d in [&one, &two] {
        let mut c = d.client().await;
        let job = c.start("", false).await.expect("start").job_id;
        let done = wait_job(&mut c, job).await;
        assert_succeeded(&done, d);
        assert_eq!(
            done.excluded_objects, 0,
            "other shards' keys are not 'excluded'"
        );
        let keys: Vec<String> = c
            .objects(job, pb::ObjectState::Verified)
            .await
            .expect("objects")
            .into_iter()
            .map(|o| o.source_key)
            .collect();
        assert!(!keys.is_empty() && keys.len() < all.len(), "{}", keys.len());
        verified.push(keys);
    }
    // Together exactly every key, each once.
    let mut union: Vec<String> = verified.concat();
    union.sort();
    assert_eq!(union, all.keys().cloned().collect::<Vec<_>>());
    let merged = ctl(
        &one.socket,
        &["status", "--also", two.socket.to_str().unwrap()],
    );
    let out = String::from_utf8_lossy(&merged.stdout);
    assert!(merged.status.success(), "{out}");
    assert!(out.contains("== all 2 daemons: 48 verified"), "{out}");
    // A shard's journal stays with that shard.
    one.stop();
    let wrong = run_dualseald(dir1.path(), &shard_config(dir1.path(), "2/2"), &["run"]);
    assert_eq!(wrong.status.code(), Some(74));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("belongs to shard 1/2"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

/// A retried resume (the same call twice, as a retrying client sends it) on a running job is
/// answered "already running" and the job still finishes: before the fix, the second resume
/// drained the job's task and left it recorded `running` with nothing running it, for good.
/// Two resumes at once, and a pause racing a resume, must not strand it either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_or_racing_resume_never_stalls_a_running_job() {
    let moto = Moto::start();
    provision(&moto).await;
    let objs = objects(80, "r");
    put_all(&moto, &objs).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config_toml(&moto, dir.path(), 4));
    let sock = &daemon.socket;
    let out = ctl(sock, &["start", "--objects-per-sec", "40"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut client = daemon.client().await;
    wait_until_verified(&mut client, 1, 5).await;

    // The repro of the report, by the CLI: a second resume of a running job.
    let out = ctl(sock, &["resume", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already running"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Two resumes at once, then a pause racing two resumes.
    let (a, b) = tokio::join!(
        tokio::task::spawn_blocking({
            let s = sock.clone();
            move || ctl(&s, &["resume", "1"])
        }),
        tokio::task::spawn_blocking({
            let s = sock.clone();
            move || ctl(&s, &["resume", "1"])
        }),
    );
    assert!(a.expect("join").status.success() && b.expect("join").status.success());
    let (mut c1, mut c2, mut c3) = (
        daemon.client().await,
        daemon.client().await,
        daemon.client().await,
    );
    let (p, r1, r2) = tokio::join!(c1.pause(1), c2.resume(1), c3.resume(1));
    p.expect("pause");
    // A resume that lost the race to the pause is told "already running" or resumes; either
    // way, one more resume settles it.
    let _ = (r1, r2);
    let out = ctl(sock, &["resume", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `watch` ends by itself when the job does (it hung before the fix).
    let watch = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking({
            let s = sock.clone();
            move || ctl(&s, &["watch", "1"])
        }),
    )
    .await
    .expect("dualsealctl watch did not end: the job stalled")
    .expect("join");
    assert!(
        watch.status.success(),
        "{}",
        String::from_utf8_lossy(&watch.stderr)
    );
    let done = client.job(1).await.expect("job");
    assert_succeeded(&done, &daemon);
    assert_eq!(done.verified_objects, 80);
}
