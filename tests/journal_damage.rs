//! A damaged journal never becomes a silent fresh start: flipped bytes and truncation make the
//! daemon refuse to start with a clear error and no S3/KMS traffic; `rebuild-journal` recovers
//! from the destination buckets; a deliberately restored older copy converges. In every case
//! no object is uploaded twice (applied PUTs counted by a proxy in front of moto).

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::proxy::FaultProxy;
use common::*;

const N: usize = 200;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_journals_are_refused_rebuilt_or_rolled_back_without_duplicates() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let objects: BTreeMap<String, Vec<u8>> = (0..N)
        .map(|i| {
            let (_, prefix) = CATEGORY_PREFIXES[i % 4];
            (
                format!("{prefix}k/{i:04}"),
                format!("v{i}").repeat(20).into_bytes(),
            )
        })
        .collect();
    put_all(&moto, &objects).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("journal");
    let config = config_via(&proxy.endpoint, dir.path(), 4, 5);

    // Run part of the job, take a consistent copy of the journal (daemon stopped), finish it.
    let mut daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(daemon.stop(), Some(0));
    let older = dir.path().join("journal-older");
    copy_dir(&journal, &older);
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let done = wait_job(&mut client, job).await;
    assert_succeeded(&done, &daemon);
    drop(client);
    drop(daemon);
    let good = dir.path().join("journal-good");
    copy_dir(&journal, &good);

    // 1. Flipped bytes: refused, clearly, before any AWS request.
    let db = journal.join("db");
    let mut bytes = std::fs::read(&db).expect("db");
    for off in (512..bytes.len()).step_by(4096) {
        bytes[off] ^= 0x5a;
    }
    std::fs::write(&db, &bytes).expect("write");
    let before = proxy.total();
    let out = run_dualseald(dir.path(), &config, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert!(
        err.contains("journal") && err.contains("rebuild-journal"),
        "{err}"
    );
    assert!(err.contains("Nothing was touched in S3"), "{err}");
    assert!(
        !dir.path().join("control.sock").exists(),
        "a failed start left its socket file behind"
    );
    assert_eq!(
        proxy.total(),
        before,
        "a damaged journal must not reach S3 or KMS"
    );

    // 2. Truncated: refused the same way (sled alone would silently drop the tail).
    std::fs::remove_dir_all(&journal).expect("rm");
    copy_dir(&good, &journal);
    let len = std::fs::metadata(journal.join("db")).expect("meta").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(journal.join("db"))
        .expect("open");
    f.set_len(len / 3).expect("truncate");
    drop(f);
    let out = run_dualseald(dir.path(), &config, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert!(
        err.contains("lost writes") || err.contains("damaged"),
        "{err}"
    );
    assert_eq!(proxy.total(), before);

    // 3. rebuild-journal recovers from the buckets; the rebuilt job proves every object and
    //    uploads nothing again.
    let out = run_dualseald(dir.path(), &config, &["rebuild-journal"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("{N} recovered")), "{text}");
    let kept = std::fs::read_dir(dir.path())
        .expect("ls")
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("journal.damaged-")
        });
    assert!(kept, "the damaged journal must be kept aside");
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let rebuilt = client.jobs().await.expect("jobs");
    assert_eq!(rebuilt.len(), 1);
    let done = wait_job(&mut client, rebuilt[0].job_id).await;
    assert_succeeded(&done, &daemon);
    assert_eq!(done.verified_objects, N as u64);
    assert_one_put_each(&proxy, &cats, objects.keys());
    // The rebuilt job lists the source from the start over the records it seeded: each
    // object is still handled once (two `object_verified` events for 6 of 600 before).
    let audit = client.audit(rebuilt[0].job_id).await.expect("audit");
    assert_verified_once(&audit, N);

    // rebuild-journal against the journal of a running daemon refuses, and moves nothing.
    let asides = || {
        std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("journal.damaged-")
            })
            .count()
    };
    let before_asides = asides();
    let out = run_dualseald(dir.path(), &config, &["rebuild-journal"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a rebuild under a running daemon must refuse"
    );
    assert!(err.contains("in use by a running dualseald"), "{err}");
    assert_eq!(asides(), before_asides, "the live journal was moved aside");
    assert_eq!(
        client
            .job(done.job_id)
            .await
            .expect("daemon still serves")
            .verified_objects,
        N as u64
    );
    drop(client);
    drop(daemon);

    // 4. A deliberately restored older copy (with its own high-water mark) converges.
    std::fs::remove_dir_all(&journal).expect("rm");
    copy_dir(&older, &journal);
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let done = wait_job(&mut client, job).await;
    assert_succeeded(&done, &daemon);
    assert_eq!(done.verified_objects, N as u64);
    assert_one_put_each(&proxy, &cats, objects.keys());
}
