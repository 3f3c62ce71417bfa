//! SIGKILL the real daemon at random instants of a 1000-object job, restart it each time, and
//! check that the job finishes with every object migrated exactly once: one applied PUT per
//! object (counted by a proxy in front of moto), one `object_verified` audit event, nothing
//! missing and nothing extra in S3.
//!
//! `DUALSEAL_KILLS=300 cargo test --test crash` runs a longer soak.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::proxy::FaultProxy;
use common::*;
use dualseal::api::pb;
use rand::Rng;

const OBJECTS: usize = 1000;
const DEFAULT_KILLS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_instants_loses_and_duplicates_nothing() {
    let kills: usize = std::env::var("DUALSEAL_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_KILLS);
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let mut objects = BTreeMap::new();
    for i in 0..OBJECTS {
        let (_, prefix) = CATEGORY_PREFIXES[i % 4];
        objects.insert(
            format!("{prefix}s/{i:05}"),
            format!("secret number {i};")
                .repeat(i % 40 + 1)
                .into_bytes(),
        );
    }
    put_all(&moto, &objects).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_via(&proxy.endpoint, dir.path(), 8, 5);

    let mut rng = rand::thread_rng();
    let mut job_id = 0;
    let mut survived = 0;
    for round in 0..kills {
        let mut daemon = Daemon::start(dir.path(), &config);
        if round == 0 {
            let mut client = daemon.client().await;
            job_id = client.start("", false).await.expect("start").job_id;
        }
        // A random instant: during listing, mid-upload, between a PUT and its record...
        let ms = rng.gen_range(20..700);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let mut client = daemon.client().await;
        let state = client.job(job_id).await.expect("job");
        daemon.kill();
        survived += 1;
        if state.state != pb::JobState::Running as i32 {
            eprintln!("job finished before kill {round}");
            break;
        }
    }
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let done = wait_job(&mut client, job_id).await;
    assert_succeeded(&done, &daemon);
    assert_eq!(done.verified, OBJECTS as u64);
    assert_eq!(done.discovered, OBJECTS as u64, "objects recorded twice");

    // Exactly one object_verified event per object, despite the kills.
    let audit = client.audit(job_id).await.expect("audit");
    assert_verified_once(&audit, OBJECTS);

    // Exactly one applied PUT per object: a write interrupted by a kill is adopted on resume,
    // never repeated, and nothing verified is ever uploaded again.
    assert_one_put_each(&proxy, &cats, objects.keys());
    let adopted = audit
        .iter()
        .filter(|e| e.detail.contains("adopted-existing-upload"))
        .count();

    // S3 holds every object, decryptable to the source bytes, and nothing else.
    for cat in &cats {
        let n = list_keys(&moto, &cat.bucket).await.len();
        assert_eq!(
            n,
            objects.keys().filter(|k| k.starts_with(cat.prefix)).count()
        );
    }
    for (key, body) in &objects {
        let cat = cats
            .iter()
            .find(|c| key.starts_with(c.prefix))
            .expect("category");
        assert!(
            read_sealed(&moto, cat, &key[cat.prefix.len()..]).await == *body,
            "{key}"
        );
    }
    eprintln!(
        "kill test: {survived} SIGKILLs survived, {OBJECTS} objects, 0 duplicate uploads, {adopted} interrupted uploads adopted on resume"
    );
}
