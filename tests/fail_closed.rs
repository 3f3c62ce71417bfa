//! Fail closed, as Vault does: when the audit trail cannot be written, what it would record
//! does not happen. Needs the `fault-injection` feature (its hook makes audit writes fail while
//! a trigger file exists in the journal directory); `./scripts/test.sh` enables it.
#![cfg(feature = "fault-injection")]
// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use dualseal::api::pb;
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_write_failure_parks_the_job_and_refuses_control_actions() {
    let moto = Moto::start();
    provision(&moto).await;
    let objects: BTreeMap<String, Vec<u8>> = (0..200)
        .map(|i| {
            (
                format!("{}f/{i:03}", CATEGORY_PREFIXES[i % 4].1),
                vec![b'z'; 50 + i],
            )
        })
        .collect();
    put_all(&moto, &objects).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config_toml(&moto, dir.path(), 2));
    let mut client = daemon.client().await;
    // Slow enough that the job cannot finish between the watch seeing 20 objects and the
    // trigger taking effect, however loaded the machine.
    let job = start_throttled(&mut client, 20).await;
    let trigger = dir
        .path()
        .join("journal")
        .join(dualseal::journal::FAIL_AUDIT_TRIGGER);

    // Break the audit trail mid-job.
    let mut s = Box::pin(client.watch(job).await.expect("watch"));
    while let Some(j) = s.next().await {
        if j.expect("watch").verified_objects >= 20 {
            break;
        }
    }
    std::fs::write(&trigger, b"").unwrap();
    let mut parked = None;
    while let Some(j) = s.next().await {
        let j = j.expect("watch");
        if j.state != pb::JobState::Running as i32 {
            parked = Some(j);
            break;
        }
    }
    drop(s);
    let parked = parked.expect("the job kept running without an audit trail");
    assert_eq!(parked.state, pb::JobState::Paused as i32, "{parked:?}");
    assert!(
        parked.message.contains("could not record"),
        "{}",
        parked.message
    );
    assert!(parked.verified_objects < objects.len() as u64);

    // A control action that cannot be audited does not happen; the daemon keeps serving.
    let err = client
        .cancel(job)
        .await
        .expect_err("cancel without an audit trail");
    assert!(err.to_string().contains("audit writes disabled"), "{err}");
    assert_eq!(
        client.job(job).await.unwrap().state,
        pb::JobState::Paused as i32
    );

    // Repaired, it resumes and finishes, with exactly one audit event per migrated object.
    std::fs::remove_file(&trigger).unwrap();
    client.resume(job).await.expect("resume");
    let done = wait_job(&mut client, job).await;
    assert_succeeded(&done, &daemon);
    assert_eq!(done.verified_objects, objects.len() as u64);
    let audit = client.audit(job).await.unwrap();
    assert_verified_once(&audit, objects.len());
    assert!(client.verify_audit().await.unwrap().intact);
}
