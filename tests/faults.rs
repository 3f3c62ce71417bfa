//! Fault tolerance through a fault-injecting proxy between the real daemon and moto: a 20 %
//! fault storm, lost PUT responses, throttling, poison objects and a key disabled mid-job.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::proxy::{FaultProxy, Faults};
use common::*;
use dualseal::api::pb;

const MAX_ATTEMPTS: u32 = 8;
/// The SDK's attempts per request (standard retry mode).
const SDK_ATTEMPTS: u64 = 3;

fn objects(n: usize) -> BTreeMap<String, Vec<u8>> {
    (0..n)
        .map(|i| {
            let (_, prefix) = CATEGORY_PREFIXES[i % 4];
            (
                format!("{prefix}x/{i:04}"),
                format!("s{i}-").repeat(1 + i % 300).into_bytes(),
            )
        })
        .collect()
}

/// moto with the categories provisioned, `n` objects in the master bucket and a fault proxy in
/// front of it, with no faults set yet.
async fn setup(n: usize) -> (Moto, Vec<Cat>, BTreeMap<String, Vec<u8>>, FaultProxy) {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let objs = objects(n);
    put_all(&moto, &objs).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    (moto, cats, objs, proxy)
}

/// The real daemon, reaching S3 and KMS only through the proxy.
fn daemon_via(proxy: &FaultProxy, dir: &std::path::Path, concurrency: usize) -> Daemon {
    Daemon::start(
        dir,
        &config_via(&proxy.endpoint, dir, concurrency, MAX_ATTEMPTS),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_in_a_fault_storm_without_duplicate_uploads() {
    let (moto, cats, objs, proxy) = setup(240).await;
    proxy.set_faults(Faults::storm());
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = daemon_via(&proxy, dir.path(), 8);
    let mut client = daemon.client().await;

    // Start may meet the storm too: it answers UNAVAILABLE, and the operator tries again.
    let start_client = client.clone();
    let start = |prefix: &'static str| {
        let mut c = start_client.clone();
        async move {
            for _ in 0..10 {
                match c.start(prefix, false).await {
                    Ok(j) => return j,
                    Err(e) => eprintln!("start failed (retrying): {e}"),
                }
            }
            panic!("could not start a job in 10 tries");
        }
    };
    // A first job over db/ is cancelled mid-way.
    let first = start("db/").await;
    wait_until_verified(&mut client, first.job_id, 10).await;
    let t = Instant::now();
    let cancelled = client.cancel(first.job_id).await.expect("cancel");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "cancel took {:?}",
        t.elapsed()
    );
    assert_eq!(cancelled.state, pb::JobState::Cancelled as i32);
    // Wait for the cancelled job's workers to stop before the next job starts.
    wait_job(&mut client, first.job_id).await;

    // The full job adopts what the cancelled one verified, is paused and resumed mid-way.
    let job = start("").await;
    wait_until_verified(&mut client, job.job_id, 80).await;
    // Pause drains: objects in flight finish their attempt (slow in a storm, bounded by the
    // daemon's 30 s pause deadline); once it returns, nothing of the job reaches S3 or KMS.
    let t = Instant::now();
    let paused = client.pause(job.job_id).await.expect("pause");
    assert!(
        t.elapsed() < Duration::from_secs(32),
        "pause took {:?}",
        t.elapsed()
    );
    assert_eq!(paused.state, pb::JobState::Paused as i32);
    let quiet = proxy.total();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(proxy.total(), quiet, "requests after pause returned");
    let t = Instant::now();
    client.resume(job.job_id).await.expect("resume");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "resume took {:?}",
        t.elapsed()
    );
    let done = wait_job(&mut client, job.job_id).await;
    assert_succeeded(&done, &daemon);
    assert_eq!(done.verified_objects, objs.len() as u64);

    let total = proxy.total();
    let injected = proxy.injected();
    assert!(
        injected * 100 >= total * 18,
        "the storm was too mild to mean anything: {injected} faults in {total} requests"
    );
    // Exactly one applied PUT per destination object, despite lost responses, resets,
    // a cancelled job and a second job over the same objects.
    assert_one_put_each(&proxy, &cats, objs.keys());
    // Attempts stay within the documented bound: per object, at most MAX_ATTEMPTS attempts
    // per job, each with one source GET retried at most SDK_ATTEMPTS times by the SDK.
    let reqs = proxy.requests();
    let max_source_gets = objs
        .keys()
        .map(|k| {
            reqs.get(&format!("GET master-secrets/{k}"))
                .copied()
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    assert!(
        max_source_gets <= 2 * u64::from(MAX_ATTEMPTS) * SDK_ATTEMPTS,
        "an object's source was read {max_source_gets} times"
    );
    eprintln!(
        "storm: {total} requests, {injected} faults injected ({:.1} %), max source GETs per object {max_source_gets}",
        injected as f64 * 100.0 / total as f64
    );
    // And every object reads back correctly, straight from the server.
    for (key, body) in &objs {
        let cat = cats
            .iter()
            .find(|c| key.starts_with(c.prefix))
            .expect("category");
        assert!(
            read_sealed(&moto, cat, &key[cat.prefix.len()..]).await == *body,
            "{key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_objects_fail_alone_and_retry_recovers_them() {
    let (moto, cats, objs, proxy) = setup(80).await;
    proxy.forbid_get("master-secrets/db/x/0004");
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = daemon_via(&proxy, dir.path(), 4);
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start");
    // Disable the tls key once the job runs: its remaining objects fail, the others do not.
    wait_until_verified(&mut client, job.job_id, 5).await;
    let tls = cats.iter().find(|c| c.name == "tls").expect("tls");
    // moto records DisableKey (it takes the bare key id) but still serves crypto calls; the
    // proxy answers them with DisabledException, as AWS would.
    let tls_key_id = tls.key_arn.rsplit('/').next().expect("key id").to_owned();
    moto.kms()
        .disable_key()
        .key_id(&tls_key_id)
        .send()
        .await
        .expect("disable");
    proxy.disable_kms_key(&tls_key_id);
    let done = wait_job(&mut client, job.job_id).await;
    assert_eq!(
        done.state,
        pb::JobState::CompletedWithFailures as i32,
        "{done:?}"
    );
    let failed = client
        .objects(job.job_id, pb::ObjectState::Failed)
        .await
        .expect("objects");
    assert!(failed.iter().any(|o| o.source_key == "db/x/0004"));
    for o in &failed {
        if o.source_key == "db/x/0004" {
            assert!(o.reason.contains("access denied"), "{}", o.reason);
            assert_eq!(o.attempts, 1, "a permanent error must not be retried");
        } else {
            assert!(o.source_key.starts_with("tls/"), "unexpected failure {o:?}");
            assert!(
                o.reason.contains("Disabled") || o.reason.contains("disabled"),
                "{}",
                o.reason
            );
        }
    }
    assert!(
        failed.iter().any(|o| o.source_key.starts_with("tls/")),
        "no tls object met the disabled key; the test proved nothing about it"
    );
    let non_tls = objs.keys().filter(|k| !k.starts_with("tls/")).count() as u64;
    assert!(done.verified_objects >= non_tls - 1);
    assert_eq!(
        done.verified_objects + done.failed_objects,
        objs.len() as u64
    );

    // Fix both causes; `retry` finishes the job.
    proxy.allow_all();
    moto.kms()
        .enable_key()
        .key_id(&tls_key_id)
        .send()
        .await
        .expect("enable");
    let again = client.retry(job.job_id).await.expect("retry");
    assert_eq!(again.state, pb::JobState::Running as i32);
    let done = wait_job(&mut client, job.job_id).await;
    assert_succeeded(&done, &daemon);
    assert_eq!(done.verified_objects, objs.len() as u64);
    let err = client
        .retry(job.job_id)
        .await
        .expect_err("retry of a succeeded job");
    assert!(err.to_string().contains("succeeded"), "{err}");
}

/// A read-back that fails after S3 accepted the write is retried by proving the object that
/// is there, not by writing it again: the worker carries the accepted write to its next
/// attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_back_is_retried_without_a_second_write() {
    // Held to the end: dropping it stops moto.
    let (_moto, cats, objs, proxy) = setup(12).await;
    let dest = |key: &str| {
        let cat = cats
            .iter()
            .find(|c| key.starts_with(c.prefix))
            .expect("category");
        format!("{}/{}", cat.bucket, &key[cat.prefix.len()..])
    };
    // More than the SDK retries within one request: the attempt fails after the write.
    for key in objs.keys() {
        proxy.truncate_next_gets(&dest(key), SDK_ATTEMPTS);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = daemon_via(&proxy, dir.path(), 4);
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start");
    let done = wait_job(&mut client, job.job_id).await;
    assert_succeeded(&done, &daemon);
    assert_eq!(done.verified_objects, objs.len() as u64);
    let requests = proxy.requests();
    for key in objs.keys() {
        let path = dest(key);
        let count = |method: &str| requests.get(&format!("{method} {path}")).copied();
        // The read-back's cut-short tries, then the next attempt's proof.
        assert_eq!(count("GET"), Some(SDK_ATTEMPTS + 1), "{path}: {requests:?}");
        assert_eq!(count("PUT"), Some(1), "{path} was written again");
        assert_eq!(count("HEAD"), None, "{path}: {requests:?}");
    }
}

/// An object waiting out a retry's delay holds no worker: with one worker, the objects after
/// it migrate while it waits, and it is migrated once due (the backlog, not a sleeping slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_waiting_for_its_retry_leaves_its_worker_to_the_others() {
    let (_moto, _cats, objs, proxy) = setup(12).await;
    // An early key in listing order (the proxy cuts bodies of more than 8 bytes): its first
    // three attempts each read a cut-short body (more than the SDK retries within one
    // request), so it waits out three delays.
    let (place, slow) = objs
        .iter()
        .enumerate()
        .find(|(_, (_, body))| body.len() > 8)
        .map(|(i, (k, _))| (i, k.clone()))
        .unwrap();
    proxy.truncate_next_gets(&format!("master-secrets/{slow}"), 3 * SDK_ATTEMPTS);
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = daemon_via(&proxy, dir.path(), 1);
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start");
    let done = wait_job(&mut client, job.job_id).await;
    assert_succeeded(&done, &daemon);
    assert_eq!(done.verified_objects, objs.len() as u64);
    let verified: Vec<String> = client
        .audit(job.job_id)
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.kind == "object_verified")
        .map(|e| e.source_key)
        .collect();
    assert_verified_once_each(&verified, objs.len());
    let before = verified
        .iter()
        .position(|k| *k == slow)
        .expect("slow verified");
    // A worker sleeping on it would have kept the only slot: only the keys listed before it
    // would have been migrated first.
    assert!(
        before >= place + 3,
        "only {before} object(s) migrated while {slow} waited for its retries: {verified:?}"
    );
}

fn assert_verified_once_each(verified: &[String], n: usize) {
    let unique: std::collections::BTreeSet<&String> = verified.iter().collect();
    assert_eq!((verified.len(), unique.len()), (n, n), "{verified:?}");
}
