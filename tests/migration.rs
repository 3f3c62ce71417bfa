//! End to end: the real daemon migrates a seeded master bucket on a real moto server, and every
//! object is checked independently through the AWS SDK and KMS.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use dualseal::api::pb;
use rand::{Rng, SeedableRng};

const PER_CATEGORY: usize = 80;
const LARGE: usize = 17 * 1024 * 1024 + 3;

fn seed_objects() -> BTreeMap<String, Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut objects = BTreeMap::new();
    for (_, prefix) in CATEGORY_PREFIXES {
        for i in 0..PER_CATEGORY {
            let len = rng.gen_range(1..6000);
            let body: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            objects.insert(format!("{prefix}team-{}/secret-{i:03}", i % 5), body);
        }
    }
    objects.insert("db/empty.txt".into(), Vec::new());
    objects.insert(
        "api/équipe données/clé secrète ✓.json".into(),
        b"{\"token\":\"x\"}".to_vec(),
    );
    objects.insert(
        "tls/with space/key file.pem".into(),
        b"-----BEGIN KEY-----".to_vec(),
    );
    objects.insert(
        "misc/large/vault.snap".into(),
        (0..LARGE).map(|i| (i % 251) as u8).collect(),
    );
    for i in 0..7 {
        objects.insert(
            format!("unowned/legacy-{i}.txt"),
            format!("legacy {i}").into_bytes(),
        );
    }
    objects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrates_every_object_sealed_twice_and_survives_restart() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let objects = seed_objects();
    put_all(&moto, &objects).await;
    let etags_before = source_etags(&moto).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The smallest memory budget: the 17 MiB object (three copies, 51 MiB) is larger than the
    // whole budget, so it must run alone, and everything else must still get through.
    let config = config_toml(&moto, dir.path(), 8)
        .replace("[daemon]\n", "[daemon]\nmax_bytes_in_flight = 16777216\n");
    let mut daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;

    let plan = client.plan("", 50).await.expect("plan");
    assert_eq!(plan.total_objects, objects.len() as u64);
    assert_eq!(plan.unclassified_objects, 7);
    assert_eq!(plan.conflict_objects, 0);
    for c in &plan.categories {
        let expected = objects
            .keys()
            .filter(|k| k.starts_with(&format!("{}/", c.category)))
            .count();
        assert_eq!(c.objects, expected as u64, "plan for {}", c.category);
    }

    let job = client.start("", false).await.expect("start");
    let done = wait_job(&mut client, job.job_id).await;
    assert_succeeded(&done, &daemon);
    let migrated = objects.len() as u64 - 7;
    assert_eq!(done.verified_objects, migrated);
    assert_eq!(done.unclassified_objects, 7);
    assert_eq!(done.failed_objects, 0);

    // Every destination bucket holds exactly its category's objects, under the stripped key.
    for cat in &cats {
        let mut actual = list_keys(&moto, &cat.bucket).await;
        actual.sort();
        let mut expected: Vec<String> = objects
            .keys()
            .filter_map(|k| k.strip_prefix(cat.prefix).map(str::to_owned))
            .collect();
        expected.sort();
        assert_eq!(actual, expected, "contents of {}", cat.bucket);
    }
    // Every object decrypts, through KMS, to exactly the source bytes.
    for (key, body) in &objects {
        let Some(cat) = cats.iter().find(|c| key.starts_with(c.prefix)) else {
            continue;
        };
        let dest_key = &key[cat.prefix.len()..];
        let plain = read_sealed(&moto, cat, dest_key).await;
        assert!(plain == *body, "{key} does not decrypt to its source bytes");
    }
    // The journal says verified for each migrated object, and reports the unclassified ones.
    let verified = client
        .objects(job.job_id, pb::ObjectState::Verified)
        .await
        .expect("objects");
    assert_eq!(verified.len() as u64, migrated);
    let unclassified = client
        .objects(job.job_id, pb::ObjectState::Unclassified)
        .await
        .expect("objects");
    let mut names: Vec<_> = unclassified.iter().map(|o| o.source_key.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        (0..7)
            .map(|i| format!("unowned/legacy-{i}.txt"))
            .collect::<Vec<_>>()
    );
    assert!(unclassified
        .iter()
        .all(|o| o.reason.contains("no category")));
    // The source was not modified.
    assert_eq!(source_etags(&moto).await, etags_before);

    let report = client.verify_and_wait(job.job_id).await.expect("verify");
    assert_eq!(
        (report.checked_objects, report.ok_objects),
        (migrated, migrated)
    );

    // A restart keeps the job and its counts.
    assert_eq!(daemon.stop(), Some(0), "{}", daemon.log_text());
    drop(daemon);
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let again = client.job(job.job_id).await.expect("job after restart");
    assert_eq!(again.state, done.state);
    assert_eq!(
        (
            again.verified_objects,
            again.unclassified_objects,
            again.failed_objects,
            again.verified_bytes
        ),
        (
            done.verified_objects,
            done.unclassified_objects,
            done.failed_objects,
            done.verified_bytes
        )
    );
    let audit = client.audit(job.job_id).await.expect("audit");
    assert_eq!(
        audit.iter().filter(|e| e.kind == "object_verified").count() as u64,
        migrated
    );
    for pair in audit.windows(2) {
        if pair[1].seq == pair[0].seq + 1 {
            assert_eq!(
                pair[1].prev_hash, pair[0].hash,
                "audit chain broken at {}",
                pair[1].seq
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_errors_are_clear_and_the_daemon_keeps_serving() {
    let moto = Moto::start();
    provision(&moto).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config_toml(&moto, dir.path(), 4));
    let mut client = daemon.client().await;
    let err = client.job(99).await.expect_err("no such job");
    assert!(err.to_string().contains("job 99 does not exist"), "{err}");
    let err = client.pause(0).await.expect_err("job 0");
    assert!(err.to_string().contains("job_id is required"), "{err}");
    let err = client.plan("elsewhere/", 5).await;
    assert!(err.is_ok(), "a narrower prefix is allowed: {err:?}");
    // Still serving.
    assert!(client.jobs().await.expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_job_stays_paused_across_a_restart() {
    let moto = Moto::start();
    provision(&moto).await;
    let objects: BTreeMap<String, Vec<u8>> = (0..160)
        .map(|i| {
            (
                format!("{}p/{i:03}", CATEGORY_PREFIXES[i % 4].1),
                vec![b'x'; 100 + i],
            )
        })
        .collect();
    put_all(&moto, &objects).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_toml(&moto, dir.path(), 2);
    let mut daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    let paused = client.pause(job).await.expect("pause");
    assert_eq!(paused.state, pb::JobState::Paused as i32);
    assert_eq!(daemon.stop(), Some(0), "SIGTERM must exit cleanly");
    drop(daemon);

    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let a = client.job(job).await.expect("job");
    assert_eq!(
        a.state,
        pb::JobState::Paused as i32,
        "a restart resumed a paused job"
    );
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let b = client.job(job).await.expect("job");
    assert_eq!(
        (a.verified_objects, a.failed_objects),
        (b.verified_objects, b.failed_objects),
        "a paused job made progress"
    );
    let again = client
        .pause(job)
        .await
        .expect("pausing a paused job is idempotent");
    assert_eq!(again.state, pb::JobState::Paused as i32);
    assert!(again.note.contains("already paused"), "{again:?}");
    client.resume(job).await.expect("resume");
    let done = wait_job(&mut client, job).await;
    assert_succeeded(&done, &daemon);
    assert_eq!(done.verified_objects, objects.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_data_keys_cut_kms_calls_and_still_bind_each_object_to_its_place() {
    let moto = Moto::start();
    provision(&moto).await;
    let objects = spread(60, |prefix, i| {
        (
            format!("{prefix}shared/{i:02}"),
            format!("secret number {i}").into_bytes(),
        )
    });
    put_all(&moto, &objects).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, port) = with_metrics(config_toml(&moto, dir.path(), 4).replace(
        "[daemon]\n",
        "[daemon]\ndata_key_reuse_objects = 10\ndata_key_reuse_secs = 600\n",
    ));
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    let done = wait_job(&mut client, job).await;
    assert_succeeded(&done, &daemon);

    // 15 objects per category at 10 per key: 2 keys per category, each generated once (workers
    // wait for a rotation instead of racing it) and proven through KMS once on read-back.
    let m = scrape(port);
    let generated = requests(&m, "kms", "GenerateDataKey");
    let decrypted = requests(&m, "kms", "Decrypt");
    assert_eq!(generated, 8, "{m}");
    assert_eq!(decrypted, 8, "{m}");

    // Every copy is a version-2 envelope that opens only at its own location, with a KMS
    // context that names the category's bucket and not the object.
    let mut wrapped_keys = std::collections::BTreeSet::new();
    for (key, bytes) in &objects {
        let (cat, rest) = key.split_once('/').unwrap();
        let dest = format!("secrets-{cat}");
        let body = stored_bytes(&moto, &dest, rest).await;
        let (header, _) = dualseal::envelope::parse_header(&body).unwrap();
        assert_eq!(
            header.version,
            dualseal::envelope::FORMAT_VERSION_SHARED_KEY
        );
        assert_eq!(
            header.kms_context().to_json(),
            format!("{{\"dualseal:bucket\":\"{dest}\",\"dualseal:category\":\"{cat}\"}}")
        );
        wrapped_keys.insert(header.wrapped_key.clone());
        let got = dualsealctl_get(&moto, &format!("s3://{dest}/{rest}"));
        assert!(
            got.status.success(),
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert_eq!(&got.stdout, bytes, "{key}");
    }
    assert_eq!(wrapped_keys.len() as u64, generated);
    // The map says which envelopes readers meet.
    let map = ctl(&daemon.socket, &["mapping", &job.to_string()]);
    assert!(String::from_utf8_lossy(&map.stdout)
        .lines()
        .all(|l| l.contains("\"envelope_version\":2")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_lists_the_source_for_conflicts_only_when_the_rules_can_overlap() {
    let moto = Moto::start();
    provision(&moto).await;
    let mut objects = spread(40, |prefix, i| {
        (format!("{prefix}c/{i:02}"), vec![b'c'; 64 + i])
    });
    objects.insert("db/certs/a.pem".into(), b"not really a key".to_vec());
    put_all(&moto, &objects).await;

    // A glob that can match anywhere: only a listing can tell whether a key matches two
    // categories, and here one does.
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, port) = with_metrics(config_toml(&moto, dir.path(), 4).replace(
        "prefixes = [\"tls/\"]",
        "prefixes = [\"tls/\"]\nglobs = [\"**/*.pem\"]",
    ));
    let mut daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let err = client.start("", false).await.expect_err("conflict");
    assert!(
        err.to_string().contains("match more than one category")
            && err.to_string().contains("db/certs/a.pem"),
        "{err}"
    );
    assert_eq!(requests(&scrape(port), "s3", "ListObjectsV2"), 1);
    assert!(client.jobs().await.expect("jobs").is_empty());
    assert_eq!(daemon.stop(), Some(0));

    // Prefixes alone: no key can match two categories, so the only listing is the job's.
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, port) = with_metrics(config_toml(&moto, dir.path(), 4));
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    let done = wait_job(&mut client, job).await;
    assert_succeeded(&done, &daemon);
    assert_eq!(done.verified_objects, objects.len() as u64);
    assert_eq!(requests(&scrape(port), "s3", "ListObjectsV2"), 1);
}
