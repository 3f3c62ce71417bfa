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

    let mut rng = seeded_rng("sigkill_at_random_instants");
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
    assert_eq!(done.verified_objects, OBJECTS as u64);
    assert_eq!(
        done.discovered_objects, OBJECTS as u64,
        "objects recorded twice"
    );

    // Exactly one object_verified event per object, despite the kills.
    let audit = client.audit(job_id).await.expect("audit");
    assert_verified_once(&audit, OBJECTS);

    // Exactly one applied PUT per object: a write interrupted by a kill is adopted on resume,
    // never repeated, and nothing verified is ever uploaded again.
    assert_one_put_each(&proxy, &cats, objects.keys());
    // Job ids go on from the last one, however often the daemon was killed.
    let check = client.verify(job_id).await.expect("verify").job_id;
    assert_eq!(
        check,
        job_id + 1,
        "the job after job {job_id} is {check}, {survived} kills later"
    );
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

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The independent soak's large-object case, against versioned buckets: SIGKILL at random
/// instants while small objects and multipart uploads are in flight. Every copy reads back
/// equal, each destination key has exactly one version (nothing written twice), and no
/// multipart upload is left open. Small by default; the soak:
/// `DUALSEAL_SOAK_SMALL=200 DUALSEAL_SOAK_LARGE=12 DUALSEAL_KILLS=30 cargo test --features "fault-injection testing" --test crash sigkill_with_large -- --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_large_objects_leaves_no_upload_open_and_no_second_version() {
    let (small, large, kills) = (
        knob("DUALSEAL_SOAK_SMALL", 40),
        knob("DUALSEAL_SOAK_LARGE", 3),
        knob("DUALSEAL_KILLS", 6),
    );
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let s3 = moto.s3();
    for cat in &cats {
        enable_versioning(&moto, &cat.bucket).await;
    }
    let mut objects = BTreeMap::new();
    for i in 0..small {
        let (_, prefix) = CATEGORY_PREFIXES[i % 4];
        objects.insert(
            format!("{prefix}s/{i:04}"),
            format!("small {i};").repeat(i % 30 + 1).into_bytes(),
        );
    }
    let mut rng = seeded_rng("sigkill_with_large_objects");
    for i in 0..large {
        let (_, prefix) = CATEGORY_PREFIXES[i % 4];
        let mut body = vec![0u8; 5 * 1024 * 1024 + rng.gen_range(1..3 * 1024 * 1024)];
        rng.fill(&mut body[..]);
        objects.insert(format!("{prefix}l/{i:02}.bin"), body);
    }
    put_all(&moto, &objects).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_toml(&moto, dir.path(), 4).replace(
        "[daemon]\n",
        "[daemon]\nmultipart_threshold = 5242880\nmultipart_part_size = 5242880\n",
    );
    let (mut job_id, mut killed) = (0, 0);
    for round in 0..kills {
        let mut daemon = Daemon::start(dir.path(), &config);
        let mut client = daemon.client().await;
        if round == 0 {
            job_id = client.start("", false).await.expect("start").job_id;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..1500))).await;
        let state = client.job(job_id).await.expect("job");
        daemon.kill();
        if state.state != pb::JobState::Running as i32 {
            break;
        }
        killed += 1;
    }
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let done = wait_job(&mut client, job_id).await;
    assert_succeeded(&done, &daemon);
    assert_eq!(done.verified_objects, objects.len() as u64);
    assert_verified_once(&client.audit(job_id).await.expect("audit"), objects.len());
    for cat in &cats {
        let uploads = s3
            .list_multipart_uploads()
            .bucket(&cat.bucket)
            .send()
            .await
            .expect("uploads");
        assert!(
            uploads.uploads().is_empty(),
            "{} upload(s) left open in {}",
            uploads.uploads().len(),
            cat.bucket
        );
        let versions = s3
            .list_object_versions()
            .bucket(&cat.bucket)
            .send()
            .await
            .expect("versions");
        let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
        for v in versions.versions() {
            *per_key.entry(v.key().unwrap().to_owned()).or_default() += 1;
        }
        for (k, n) in &per_key {
            assert_eq!(*n, 1, "s3://{}/{k} was written {n} times", cat.bucket);
        }
    }
    for (key, body) in &objects {
        let cat = cats.iter().find(|c| key.starts_with(c.prefix)).unwrap();
        assert!(
            read_sealed(&moto, cat, &key[cat.prefix.len()..]).await == *body,
            "{key}"
        );
    }
    eprintln!("large-object soak: {small} small + {large} large, {killed} kills mid-job: nothing open, nothing twice");
}
