//! Large objects stream through a multipart upload, part by part, against moto and the real
//! daemon: the copy is a real multipart object that opens to the source bytes; SIGKILL in the
//! middle of an upload leaves an open upload that the restarted daemon aborts before it writes
//! the object again, so nothing is left behind in S3.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::proxy::FaultProxy;
use common::*;
use dualseal::api::pb;
use rand::RngCore;

const MIB: usize = 1024 * 1024;

async fn open_uploads(moto: &Moto, bucket: &str) -> Vec<String> {
    moto.s3()
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("list uploads")
        .uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_owned))
        .collect()
}

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_streams_as_multipart_and_a_killed_upload_is_aborted_on_resume() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let mut objects = BTreeMap::new();
    // 13 MiB at 5 MiB parts: three parts, the last one short.
    objects.insert("db/big.bin".to_owned(), random(13 * MIB));
    // Exactly at the threshold: streamed too, two parts.
    objects.insert("tls/edge.bin".to_owned(), random(5 * MIB));
    // Below it: one PUT, as always.
    objects.insert(
        "api/small.json".to_owned(),
        b"{\"token\":\"small\"}".to_vec(),
    );
    put_all(&moto, &objects).await;

    let proxy = FaultProxy::start(&moto.endpoint).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, port) = with_metrics(config_via(&proxy.endpoint, dir.path(), 4, 5).replace(
        "[daemon]\n",
        "[daemon]\nmultipart_threshold = 5242880\nmultipart_part_size = 5242880\nmultipart_parts_in_flight = 1\n",
    ));

    // No second part gets an answer: kill the daemon while both large objects wait for one.
    proxy.stall("partNumber=2&uploadId");
    let mut daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let requests = proxy.requests();
        let parts_sent = |path| requests.get(path).copied().unwrap_or(0);
        if parts_sent("PUT secrets-db/big.bin") >= 2 && parts_sent("PUT secrets-tls/edge.bin") >= 2
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the uploads never reached their second parts\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.kill();
    assert_eq!(
        open_uploads(&moto, "secrets-db").await,
        vec!["big.bin".to_owned()],
        "the killed attempt left its upload open"
    );
    assert_eq!(
        open_uploads(&moto, "secrets-tls").await,
        vec!["edge.bin".to_owned()]
    );

    proxy.release();
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let done = wait_job(&mut client, job).await;
    assert_succeeded(&done, &daemon);
    assert_eq!(done.verified_objects, 3);
    for cat in &cats {
        assert!(
            open_uploads(&moto, &cat.bucket).await.is_empty(),
            "an upload was left open in {}",
            cat.bucket
        );
    }

    // Each copy opens, as an application reads it, to exactly the source bytes.
    for (key, body) in &objects {
        let cat = cats.iter().find(|c| key.starts_with(c.prefix)).unwrap();
        let plain = read_sealed(&moto, cat, &key[cat.prefix.len()..]).await;
        assert!(plain == *body, "{key} differs from the source");
    }
    // The large ones are real multipart objects (S3's ETag counts the parts); the small one is not.
    let etag = |bucket: &'static str, key: &'static str| {
        let s3 = moto.s3();
        async move {
            s3.head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .expect("head")
                .e_tag()
                .unwrap_or_default()
                .to_owned()
        }
    };
    assert!(etag("secrets-db", "big.bin").await.ends_with("-3\""));
    assert!(etag("secrets-tls", "edge.bin").await.ends_with("-2\""));
    assert!(!etag("secrets-api", "small.json").await.contains('-'));

    // The resumed attempts aborted the stale uploads and wrote each object once more, whole.
    let metrics = scrape(port);
    assert_eq!(requests(&metrics, "s3", "AbortMultipartUpload"), 2);
    assert_eq!(requests(&metrics, "s3", "CompleteMultipartUpload"), 2);
    assert_eq!(requests(&metrics, "s3", "UploadPart"), 3 + 2);

    // The reader any application uses opens a multipart copy like any other.
    let out = dualsealctl_get(&moto, "s3://secrets-db/big.bin");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout == objects["db/big.bin"]);

    let audit = client.audit(job).await.expect("audit");
    assert_verified_once(&audit, 3);

    // The reader streams: a copy cut short fails at its end, and `-o` leaves no file behind.
    let stored = stored_bytes(&moto, "secrets-db", "big.bin").await;
    let db = cats.iter().find(|c| c.name == "db").unwrap();
    moto.s3()
        .put_object()
        .bucket("secrets-db")
        .key("big.bin")
        .body(stored[..stored.len() - 100].to_vec().into())
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKmsDsse)
        .ssekms_key_id(&db.key_arn)
        .send()
        .await
        .expect("put truncated");
    let out = dir.path().join("big.out");
    let cut = dualsealctl_get_with(
        &moto,
        "s3://secrets-db/big.bin",
        &["-o", out.to_str().unwrap()],
    );
    assert!(!cut.status.success());
    let err = String::from_utf8_lossy(&cut.stderr);
    assert!(err.contains("was not written"), "{err}");
    assert!(
        !out.exists(),
        "a partial secret was left in {}",
        out.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_aborts_the_uploads_its_abandoned_attempts_had_open() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let mut objects = BTreeMap::new();
    objects.insert("misc/large.bin".to_owned(), random(11 * MIB));
    put_all(&moto, &objects).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_via(&proxy.endpoint, dir.path(), 2, 3).replace(
        "[daemon]\n",
        "[daemon]\nmultipart_threshold = 5242880\nmultipart_part_size = 5242880\n",
    );
    proxy.stall("partNumber=2&uploadId");
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while proxy
        .requests()
        .get("PUT secrets-misc/large.bin")
        .copied()
        .unwrap_or(0)
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open_uploads(&moto, "secrets-misc").await.len(), 1);

    let cancelled = client.cancel(job).await.expect("cancel");
    assert_eq!(cancelled.state, pb::JobState::Cancelled as i32);
    for cat in &cats {
        assert!(
            open_uploads(&moto, &cat.bucket).await.is_empty(),
            "the cancel left an upload open in {}\n{}",
            cat.bucket,
            daemon.log_text()
        );
    }
    let audit = client.audit(job).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.kind == "multipart_uploads_aborted" && e.detail == "count=1"),
        "{audit:#?}"
    );
    // Nothing was completed: the destination holds no object.
    assert!(list_keys(&moto, "secrets-misc").await.is_empty());
}

/// Waits until the proxy has seen `n` requests labelled `label` ("POST bucket/key").
async fn wait_requests(proxy: &FaultProxy, daemon: &Daemon, label: &str, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while proxy.requests().get(label).copied().unwrap_or(0) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "never saw {n} x {label}\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A SIGKILL right after CreateMultipartUpload, before any part: the upload id is durable in
/// the journal before the first part is sent, and uploads a crash took the id of are found by
/// listing; the restarted daemon leaves no upload open (the independent soak found one in 2 of
/// 5 runs, when the id was written but not flushed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_right_after_an_upload_starts_leaves_no_upload_open() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let mut objects = BTreeMap::new();
    objects.insert("db/fresh.bin".to_owned(), random(11 * MIB));
    put_all(&moto, &objects).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_via(&proxy.endpoint, dir.path(), 2, 5).replace(
        "[daemon]\n",
        "[daemon]\nmultipart_threshold = 5242880\nmultipart_part_size = 5242880\n",
    );
    proxy.stall("partNumber=1&uploadId");
    let mut daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    wait_requests(&proxy, &daemon, "POST secrets-db/fresh.bin", 1).await;
    daemon.kill();
    assert_eq!(open_uploads(&moto, "secrets-db").await.len(), 1);
    proxy.release();
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let done = wait_job(&mut client, job).await;
    assert_succeeded(&done, &daemon);
    for cat in &cats {
        assert!(
            open_uploads(&moto, &cat.bucket).await.is_empty(),
            "an upload was left open in {}",
            cat.bucket
        );
    }
    let plain = read_sealed(&moto, &cats[0], "fresh.bin").await;
    assert!(plain == objects["db/fresh.bin"]);
}

/// A large copy whose upload completed but whose record a SIGKILL lost (killed during the
/// read-back) is proved by HEAD and read-back on restart, never uploaded again: before, each
/// restart re-sent every part before a conditional Complete refused it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_upload_whose_record_was_lost_is_proved_not_resent() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let mut objects = BTreeMap::new();
    objects.insert("db/done.bin".to_owned(), random(13 * MIB));
    put_all(&moto, &objects).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_via(&proxy.endpoint, dir.path(), 2, 5).replace(
        "[daemon]\n",
        "[daemon]\nmultipart_threshold = 5242880\nmultipart_part_size = 5242880\n",
    );
    proxy.stall_get("secrets-db/done.bin");
    let mut daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    wait_requests(&proxy, &daemon, "GET secrets-db/done.bin", 1).await;
    daemon.kill();
    let parts_before = proxy.requests()["PUT secrets-db/done.bin"];
    assert_eq!(parts_before, 3, "13 MiB in 5 MiB parts");
    proxy.release();
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let done = wait_job(&mut client, job).await;
    assert_succeeded(&done, &daemon);
    let requests = proxy.requests();
    assert_eq!(
        requests["PUT secrets-db/done.bin"], parts_before,
        "parts were uploaded again"
    );
    assert_eq!(
        requests["POST secrets-db/done.bin"], 2,
        "one create and one complete"
    );
    let audit = client.audit(job).await.expect("audit");
    assert_verified_once(&audit, 1);
    assert!(audit
        .iter()
        .any(|e| e.kind == "object_verified" && e.detail.contains("adopted-existing-upload")));
    let plain = read_sealed(&moto, &cats[0], "done.bin").await;
    assert!(plain == objects["db/done.bin"]);
}
