//! Listing from an S3 Inventory report instead of ListObjectsV2, against moto and the real
//! daemon: a synthetic inventory (manifest.json + gzip CSV files, as AWS writes them) of the
//! source bucket; the job migrates exactly the current versions it lists, sends no listing
//! request to S3, and a foreign or damaged inventory is refused with a message naming it.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::Write;

use aws_sdk_s3::primitives::ByteStream;
use common::*;
use dualseal::api::pb;
use md5::Digest;

const INVENTORY: &str = "inventories";
const BASE: &str = "master-secrets/daily/2026-11-27T00-00Z";

fn gz(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

fn row(key: &str, latest: bool, delete_marker: bool, size: usize) -> String {
    // Keys are URL-encoded in an inventory.
    let key: String =
        percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
            .replace("%2F", "/");
    format!("\"{SOURCE}\",\"{key}\",\"v1\",\"{latest}\",\"{delete_marker}\",\"{size}\",\"2026-11-26T10:00:00.000Z\",\"00ff\"\n")
}

async fn put(moto: &Moto, key: &str, body: Vec<u8>) {
    moto.s3()
        .put_object()
        .bucket(INVENTORY)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .expect("put inventory file");
}

fn manifest(source: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let files: Vec<_> = files
        .iter()
        .map(|(k, b)| {
            serde_json::json!({"key": k, "size": b.len(), "MD5checksum": hex::encode(md5::Md5::digest(b))})
        })
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({
        "sourceBucket": source,
        "destinationBucket": format!("arn:aws:s3:::{INVENTORY}"),
        "version": "2016-11-30",
        "creationTimestamp": "1795737600000",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag",
        "files": files,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_lists_from_an_inventory_and_refuses_a_foreign_or_damaged_one() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let objects = spread(40, |prefix, i| {
        (
            format!("{prefix}inv/secret {i:02}.json"),
            format!("inventory secret {i}").into_bytes(),
        )
    });
    put_all(&moto, &objects).await;
    // Written after the inventory was taken: not in it, so not migrated by this job.
    let mut late = std::collections::BTreeMap::new();
    late.insert("db/inv/late.json".to_owned(), b"late".to_vec());
    put_all(&moto, &late).await;
    moto.s3()
        .create_bucket()
        .bucket(INVENTORY)
        .send()
        .await
        .expect("inventory bucket");

    // Two data files; the first also lists a deleted key: its last version and its delete
    // marker, neither of which is anything to migrate.
    let keys: Vec<&String> = objects.keys().collect();
    let mut first: String = keys[..25]
        .iter()
        .map(|k| row(k, true, false, objects[*k].len()))
        .collect();
    first.push_str(&row("db/inv/deleted.json", false, false, 3));
    first.push_str(&row("db/inv/deleted.json", true, true, 0));
    let second: String = keys[25..]
        .iter()
        .map(|k| row(k, true, false, objects[*k].len()))
        .collect();
    let (f1, f2) = (gz(&first), gz(&second));
    let (k1, k2) = (
        format!("{BASE}/files/a.csv.gz"),
        format!("{BASE}/files/b.csv.gz"),
    );
    put(&moto, &k1, f1.clone()).await;
    put(&moto, &k2, f2.clone()).await;
    put(
        &moto,
        &format!("{BASE}/manifest.json"),
        manifest(SOURCE, &[(&k1, &f1), (&k2, &f2)]),
    )
    .await;
    put(
        &moto,
        "other/manifest.json",
        manifest("someone-elses-bucket", &[(&k1, &f1)]),
    )
    .await;
    let mut damaged = f2.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x55;
    put(&moto, "damaged/b.csv.gz", damaged).await;
    put(
        &moto,
        "damaged/manifest.json",
        manifest(SOURCE, &[("damaged/b.csv.gz", &f2)]),
    )
    .await;

    let dir = tempfile::tempdir().expect("tempdir");
    let (config, port) = with_metrics(config_toml(&moto, dir.path(), 4));
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let start = |manifest: &str| pb::StartJobRequest {
        options: Some(pb::JobOptions {
            inventory_manifest: manifest.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };

    // An inventory of another bucket is the caller's mistake, named as such.
    let foreign = client
        .start_with(start(&format!("s3://{INVENTORY}/other/manifest.json")))
        .await
        .unwrap_err();
    assert!(
        foreign
            .to_string()
            .contains("describes bucket \"someone-elses-bucket\""),
        "{foreign}"
    );

    // The plan (the runbook's first step) reads the same inventory.
    let plan = client
        .plan_with(pb::PlanRequest {
            options: start(&format!("s3://{INVENTORY}/{BASE}/manifest.json")).options,
            ..Default::default()
        })
        .await
        .expect("plan");
    assert_eq!(plan.total_objects, 40, "{plan:#?}");

    let job = client
        .start_with(start(&format!("s3://{INVENTORY}/{BASE}/manifest.json")))
        .await
        .expect("start")
        .job_id;
    let done = wait_job(&mut client, job).await;
    assert_succeeded(&done, &daemon);
    assert_eq!(
        done.discovered_objects, 40,
        "exactly the current versions listed"
    );
    assert_eq!(done.verified_objects, 40);
    // Every key came from the inventory (the plan's, the start's conflict check's and the
    // job's): S3 was never asked to list anything.
    let metrics = scrape(port);
    assert_eq!(requests(&metrics, "s3", "ListObjectsV2"), 0, "{metrics}");
    for (key, body) in objects.iter().step_by(7) {
        let cat = cats.iter().find(|c| key.starts_with(c.prefix)).unwrap();
        assert!(read_sealed(&moto, cat, &key[cat.prefix.len()..]).await == *body);
    }
    assert!(!list_keys(&moto, "secrets-db")
        .await
        .contains(&"inv/late.json".to_owned()));

    // A data file that is not the one the manifest describes is named by the job failing (the
    // start reads only the manifest: with categories apart by prefix it has no conflict check
    // to make, and the manifest itself is fine).
    let damaged = format!("s3://{INVENTORY}/damaged/manifest.json");
    let bad = client
        .start_with(start(&damaged))
        .await
        .expect("the manifest itself is fine")
        .job_id;
    let failed = wait_job(&mut client, bad).await;
    assert_eq!(failed.state, pb::JobState::Failed as i32, "{failed:?}");
    assert!(
        failed.message.contains("damaged/b.csv.gz") && failed.message.contains("MD5"),
        "{}",
        failed.message
    );
}
