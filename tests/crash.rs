//! SIGKILL the real daemon in the middle of a job, restart it, and check that the job finishes
//! with every object migrated exactly once in the journal and nothing missing in S3.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use dualseal::api::pb;
use futures::StreamExt;
use rand::Rng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_job_then_restart_finishes_without_loss_or_duplicates() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let mut objects = BTreeMap::new();
    for i in 0..240 {
        let (_, prefix) = CATEGORY_PREFIXES[i % 4];
        objects.insert(
            format!("{prefix}s/{i:04}"),
            format!("secret number {i}").repeat(i % 50 + 1).into_bytes(),
        );
    }
    put_all(&moto, &objects).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_toml(&moto, dir.path(), 4);

    // Kill at two random points: once early, once later, each while work is in flight.
    let mut rng = rand::thread_rng();
    let kill_points = [rng.gen_range(5..60u64), rng.gen_range(90..180u64)];
    let mut job_id = 0;
    for (round, &kill_at) in kill_points.iter().enumerate() {
        let mut daemon = Daemon::start(dir.path(), &config);
        let mut client = daemon.client().await;
        if round == 0 {
            job_id = client.start("", false).await.expect("start").job_id;
        }
        let mut stream = Box::pin(client.watch(job_id).await.expect("watch"));
        while let Some(j) = stream.next().await {
            let j = j.expect("watch");
            if j.verified >= kill_at || j.state != pb::JobState::Running as i32 {
                break;
            }
        }
        daemon.kill();
        eprintln!("round {round}: killed after >= {kill_at} verified");
    }
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let done = wait_job(&mut client, job_id).await;
    assert_eq!(
        done.state,
        pb::JobState::Succeeded as i32,
        "{done:?}\n{}",
        daemon.log_text()
    );
    assert_eq!(done.verified, objects.len() as u64);
    assert_eq!(
        done.discovered,
        objects.len() as u64,
        "objects listed twice"
    );

    // Exactly one object_verified event per object, despite the kills.
    let audit = client.audit(job_id).await.expect("audit");
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for e in audit.iter().filter(|e| e.kind == "object_verified") {
        *per_key.entry(e.source_key.clone()).or_default() += 1;
    }
    assert_eq!(per_key.len(), objects.len());
    assert!(
        per_key.values().all(|&n| n == 1),
        "an object was recorded verified twice"
    );

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
}
