//! dualseal never overwrites what it did not write, and re-copies a source that changed.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use aws_sdk_s3::primitives::ByteStream;
use common::*;
use dualseal::api::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_destination_objects_are_conflicts_and_changed_sources_are_recopied() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let objects: BTreeMap<String, Vec<u8>> = (0..20)
        .map(|i| {
            (
                format!("{}o/{i:02}", CATEGORY_PREFIXES[i % 4].1),
                format!("v1-{i}").into_bytes(),
            )
        })
        .collect();
    put_all(&moto, &objects).await;
    // Someone else's object already sits where db/o/00 would go.
    let s3 = moto.s3();
    s3.put_object()
        .bucket("secrets-db")
        .key("o/00")
        .body(ByteStream::from_static(b"not ours"))
        .send()
        .await
        .expect("put foreign");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_toml(&moto, dir.path(), 4);
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let first = client.start("", false).await.expect("start").job_id;
    let done = wait_job(&mut client, first).await;
    assert_succeeded(&done, &daemon);
    assert_eq!((done.verified_objects, done.conflict_objects), (19, 1));
    let conflicts = client
        .objects(first, pb::ObjectState::Conflict)
        .await
        .expect("objects");
    assert_eq!(conflicts[0].source_key, "db/o/00");
    assert!(
        conflicts[0].reason.contains("did not write"),
        "{}",
        conflicts[0].reason
    );
    let foreign = s3
        .get_object()
        .bucket("secrets-db")
        .key("o/00")
        .send()
        .await
        .expect("get");
    let body = foreign.body.collect().await.expect("body").into_bytes();
    assert_eq!(&body[..], b"not ours", "a foreign object was overwritten");

    // The source changes after the first job: a second job re-copies it, and says so.
    s3.put_object()
        .bucket(SOURCE)
        .key("api/o/01")
        .body(ByteStream::from_static(b"v2-rotated"))
        .send()
        .await
        .expect("rotate");
    let second = client.start("", false).await.expect("start").job_id;
    let done = wait_job(&mut client, second).await;
    assert_succeeded(&done, &daemon);
    let api = cats.iter().find(|c| c.name == "api").expect("api");
    assert_eq!(read_sealed(&moto, api, "o/01").await, b"v2-rotated");
    let audit = client.audit(second).await.expect("audit");
    let recopied: Vec<_> = audit
        .iter()
        .filter(|e| e.detail.contains("recopied-source-changed"))
        .map(|e| e.source_key.clone())
        .collect();
    assert_eq!(recopied, vec!["api/o/01".to_owned()]);
    let adopted = audit
        .iter()
        .filter(|e| e.detail.contains("adopted-existing-upload"))
        .count();
    assert_eq!(adopted, 18, "unchanged objects are proved, not rewritten");
}
