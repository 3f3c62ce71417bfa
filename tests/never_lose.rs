//! Nothing is destroyed on a proof taken earlier, and every check of the server-side layer
//! fails closed. Real daemon, real CLI, moto (faithful: it reports the KMS key of DSSE
//! objects, as AWS does; plain moto where a test says so), and the fault proxy rewriting what
//! S3 reports.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use common::proxy::{FaultProxy, SseReport};
use common::*;
use dualseal::api::pb;

async fn all_versions(moto: &Moto, bucket: &str) -> Vec<(String, String)> {
    let out = moto
        .s3()
        .list_object_versions()
        .bucket(bucket)
        .send()
        .await
        .expect("list versions");
    let mut v: Vec<(String, String)> = out
        .versions()
        .iter()
        .map(|v| {
            (
                v.key().unwrap().to_owned(),
                v.version_id().unwrap_or("null").to_owned(),
            )
        })
        .chain(out.delete_markers().iter().map(|m| {
            (
                m.key().unwrap().to_owned(),
                m.version_id().unwrap_or("null").to_owned(),
            )
        }))
        .collect();
    v.sort();
    v
}

async fn empty_bucket(moto: &Moto, bucket: &str) {
    let s3 = moto.s3();
    for (key, version) in all_versions(moto, bucket).await {
        s3.delete_object()
            .bucket(bucket)
            .key(&key)
            .version_id(version)
            .send()
            .await
            .expect("delete version");
    }
}

/// A job over `prefix` with verify=checksum (the mode whose proof rests on S3's answers).
async fn start_checksum(client: &mut dualseal::api::client::Client, prefix: &str) -> u64 {
    client
        .start_with(pb::StartJobRequest {
            prefix: prefix.to_owned(),
            options: Some(pb::JobOptions {
                verify_mode: pb::VerifyMode::Checksum as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("start")
        .job_id
}

fn one(tag: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::collections::BTreeMap::from([(format!("db/{tag}"), tag.as_bytes().to_vec())])
}

/// One object under db/TAG, migrated with verify=checksum: its `object_verified` detail, or
/// the failed object's reason.
async fn checksum_one(
    moto: &Moto,
    client: &mut dualseal::api::client::Client,
    daemon: &Daemon,
    tag: &str,
) -> Result<String, String> {
    put_all(moto, &one(tag)).await;
    let job = start_checksum(client, &format!("db/{tag}")).await;
    let done = wait_job(client, job).await;
    if done.verified_objects == 1 {
        assert_succeeded(&done, daemon);
        let ev = client.audit(job).await.expect("audit");
        let v = ev
            .iter()
            .find(|e| e.kind == "object_verified")
            .expect("event");
        Ok(v.detail.clone())
    } else {
        assert_eq!(
            (done.verified_objects, done.failed_objects),
            (0, 1),
            "{done:?}"
        );
        let failed = client
            .objects(job, pb::ObjectState::Failed)
            .await
            .expect("objects");
        Err(failed[0].reason.clone())
    }
}

fn check<'a>(r: &'a pb::CutoverCheckResponse, name: &str) -> &'a pb::CutoverCheckItem {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {r:?}"))
}

/// The data-loss repro of the independent soak: after a job succeeds, every version in one
/// category bucket is deleted. Before the fix `cutover-check` said "ready" and `decommission
/// run` in delete mode removed every source version, so those secrets existed nowhere.
/// Now the check HEADs every copy and names the missing ones, a delete plan is refused, and a
/// copy lost between a plan and its run makes the run refuse before any version goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommission_never_deletes_a_source_whose_copy_is_gone() {
    let moto = Moto::start();
    provision(&moto).await;
    enable_versioning(&moto, SOURCE).await;
    let objects = spread(24, |prefix, i| {
        (
            format!("{prefix}k/{i:02}"),
            format!("secret {i}").into_bytes(),
        )
    });
    put_all(&moto, &objects).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config_toml(&moto, dir.path(), 4));
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    let done = wait_job(&mut client, job).await;
    assert_succeeded(&done, &daemon);
    let before = all_versions(&moto, SOURCE).await;
    assert_eq!(before.len(), 24);

    // A plan taken while every copy holds...
    let report = client.cutover_check(job).await.expect("cutover");
    assert!(report.ready, "{report:?}");
    assert!(
        check(&report, "verified copies present and sealed")
            .detail
            .starts_with("24 cop(ies) checked"),
        "{report:?}"
    );
    let plan = client
        .plan_decommission(job, pb::DecommissionMode::Delete)
        .await
        .expect("plan");
    assert!(plan.summary.contains("checked again"), "{}", plan.summary);

    // ...then one copy goes: the run re-proves and refuses; nothing is deleted.
    moto.s3()
        .delete_object()
        .bucket("secrets-api")
        .key("k/01")
        .send()
        .await
        .expect("delete one copy");
    let refused = client
        .decommission(&plan.token)
        .await
        .expect_err("a run whose copy vanished must be refused");
    assert!(refused.to_string().contains("api/k/01"), "{refused}");
    assert_eq!(all_versions(&moto, SOURCE).await, before, "source touched");

    // The soak's case: a whole category bucket emptied after the job.
    empty_bucket(&moto, "secrets-db").await;
    let report = client.cutover_check(job).await.expect("cutover");
    assert!(!report.ready, "{report:?}");
    let copies = check(&report, "verified copies present and sealed");
    assert!(!copies.ok && copies.blocking, "{copies:?}");
    assert!(
        copies.detail.starts_with("7 of 24 cop(ies)")
            && copies
                .detail
                .contains("db/k/00: its copy s3://secrets-db/k/00 no longer exists"),
        "{}",
        copies.detail
    );
    let out = ctl(&daemon.socket, &["cutover-check", &job.to_string()]);
    assert!(
        !out.status.success(),
        "cutover-check exited 0 with copies gone"
    );
    let err = client
        .plan_decommission(job, pb::DecommissionMode::Delete)
        .await
        .expect_err("a delete plan with copies gone must be refused");
    assert!(err.to_string().contains("no longer exists"), "{err}");
    assert_eq!(all_versions(&moto, SOURCE).await, before, "source touched");
}

/// A copy re-put under another category's KMS key (DSSE both) is `wrong_key` for the
/// verification job and blocks the cutover: before the fix moto's silence about the key made
/// `verify` report 14/14 ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_under_another_categorys_key_is_wrong_key() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let objects = spread(8, |prefix, i| {
        (
            format!("{prefix}w/{i:02}"),
            format!("value {i}").into_bytes(),
        )
    });
    put_all(&moto, &objects).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config_toml(&moto, dir.path(), 4));
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    assert_succeeded(&wait_job(&mut client, job).await, &daemon);
    let api_key = &cats.iter().find(|c| c.name == "api").unwrap().key_arn;
    let s3 = moto.s3();
    let held = s3
        .get_object()
        .bucket("secrets-db")
        .key("w/00")
        .send()
        .await
        .expect("get copy");
    let metadata = held.metadata().cloned();
    let body = held.body.collect().await.unwrap().into_bytes();
    s3.put_object()
        .bucket("secrets-db")
        .key("w/00")
        .body(ByteStream::from(body))
        .set_metadata(metadata)
        .server_side_encryption(ServerSideEncryption::AwsKmsDsse)
        .ssekms_key_id(api_key)
        .send()
        .await
        .expect("re-put under the api key");
    let report = client.verify_and_wait(job).await.expect("verify");
    assert_eq!(
        (report.checked_objects, report.ok_objects),
        (8, 7),
        "{report:?}"
    );
    // What the re-verification saw of each held copy is in the trail, as S3 answered it.
    let db_key = &cats.iter().find(|c| c.name == "db").unwrap().key_arn;
    let seen = client.audit(report.job_id).await.expect("audit");
    let held = seen
        .iter()
        .find(|e| e.kind == "object_reverified" && e.category == "db")
        .expect("a reverified db copy");
    assert!(
        held.detail.contains(&format!(
            "sse=aws:kms:dsse sse_kms_key={db_key} sse_answered_by=GetObject"
        )),
        "{}",
        held.detail
    );
    assert!(
        report.mismatches[0].reason.starts_with("wrong_key")
            && report.mismatches[0].reason.contains(api_key.as_str()),
        "{:?}",
        report.mismatches
    );
    let cut = client.cutover_check(job).await.expect("cutover");
    assert!(!cut.ready, "{cut:?}");
    assert!(!check(&cut, "re-verified").ok && check(&cut, "re-verified").blocking);
    assert!(check(&cut, "verified copies present and sealed")
        .detail
        .contains("encrypted under KMS key"));
}

/// On a server that never names the KMS key of a DSSE object (moto as PyPI ships it) nothing
/// counts as migrated: every object fails closed with a reason that names the server's
/// silence, and the job does not succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_names_no_key_fails_closed() {
    let moto = Moto::start_plain();
    provision(&moto).await;
    let objects = spread(4, |prefix, i| {
        (format!("{prefix}p/{i}"), b"plain moto".to_vec())
    });
    put_all(&moto, &objects).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config_via(&moto.endpoint, dir.path(), 4, 2));
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    let done = wait_job(&mut client, job).await;
    assert_eq!(
        (done.verified_objects, done.failed_objects),
        (0, 4),
        "{done:?}"
    );
    let failed = client
        .objects(job, pb::ObjectState::Failed)
        .await
        .expect("objects");
    for o in &failed {
        assert!(
            o.reason
                .contains("did not report which KMS key encrypts it"),
            "{}",
            o.reason
        );
    }
}

/// What the audit trail says of the server-side layer is what S3 answered: with the key in
/// the PUT's answer it names that answer; with the key dropped from PUT answers it names the
/// HEAD that did report it; an answer naming another key or another algorithm fails the
/// object with its own reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_records_the_key_s3_answered() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let db_key = cats
        .iter()
        .find(|c| c.name == "db")
        .unwrap()
        .key_arn
        .clone();
    let api_key = cats
        .iter()
        .find(|c| c.name == "api")
        .unwrap()
        .key_arn
        .clone();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config_via(&proxy.endpoint, dir.path(), 2, 2));
    let mut client = daemon.client().await;

    // 1. As answered by the PUT.
    let d = checksum_one(&moto, &mut client, &daemon, "as-is")
        .await
        .expect("verified");
    let want = format!("sse=aws:kms:dsse sse_kms_key={db_key} sse_answered_by=PutObject");
    assert!(d.contains(&want), "{d}");
    // 2. The PUT's answer names no key: one HEAD does, and the trail says so.
    proxy.report_sse(SseReport::DropKey, &[hyper::Method::PUT]);
    let d = checksum_one(&moto, &mut client, &daemon, "dropped")
        .await
        .expect("verified");
    let want = format!("sse_kms_key={db_key} sse_answered_by=HeadObject");
    assert!(d.contains(&want), "{d}");
    // 3. Every answer names the api key: wrong key, nothing verified.
    proxy.report_sse(SseReport::SwapKey(api_key.clone()), &[]);
    let r = checksum_one(&moto, &mut client, &daemon, "swapped")
        .await
        .expect_err("refused");
    assert!(
        r.contains(&format!("encrypted under KMS key {api_key}")),
        "{r}"
    );
    // 4. Every answer names no key at all: fails closed, naming the server's silence.
    proxy.report_sse(SseReport::DropKey, &[]);
    let r = checksum_one(&moto, &mut client, &daemon, "silent")
        .await
        .expect_err("refused");
    assert!(r.contains("did not report which KMS key"), "{r}");
    // 5. Another algorithm.
    proxy.report_sse(SseReport::Algorithm("aws:kms".into()), &[]);
    let r = checksum_one(&moto, &mut client, &daemon, "algorithm")
        .await
        .expect_err("refused");
    assert!(r.contains("\"aws:kms\", expected \"aws:kms:dsse\""), "{r}");
}

/// `dualsealctl get` pins what it opens: with the category and key from the mapping, an
/// envelope sealed under another category's key (for this very location) and a genuine
/// envelope whose server-side layer is under another key are both refused; without them it
/// says loudly what it did not check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_pins_the_category_and_both_keys() {
    use dualseal::kms::KeyService as _;
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let objects = spread(8, |prefix, i| {
        (format!("{prefix}g/{i}"), b"pinned".to_vec())
    });
    put_all(&moto, &objects).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config_toml(&moto, dir.path(), 4));
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    assert_succeeded(&wait_job(&mut client, job).await, &daemon);
    let db = cats.iter().find(|c| c.name == "db").unwrap();
    let api = cats.iter().find(|c| c.name == "api").unwrap();
    let pin = [
        "--expect-category",
        "db",
        "--expect-kms-key",
        db.key_arn.as_str(),
    ];

    // The genuine object opens, pinned; unpinned it opens with a warning.
    let ok = dualsealctl_get_with(&moto, "s3://secrets-db/g/0", &pin);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(ok.stdout, b"pinned");
    let loose = dualsealctl_get(&moto, "s3://secrets-db/g/0");
    assert!(loose.status.success());
    assert!(String::from_utf8_lossy(&loose.stderr).contains("were NOT checked"));

    // An envelope sealed for s3://secrets-db/forged under the api key, DSSE under the db key.
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "t",
        ))
        .load()
        .await;
    let kms = dualseal::kms::AwsKms::new(&sdk);
    let ctx = dualseal::engine::migrate::context_for("db", "secrets-db", "forged");
    let dk = kms
        .generate_data_key(&api.key_arn, &ctx)
        .await
        .expect("data key");
    let sealed = dualseal::envelope::seal(
        &dk.key,
        dualseal::envelope::HeaderParams {
            kms_key_id: dk.key_arn.clone(),
            wrapped_key: dk.wrapped.clone(),
            context: ctx,
            segment_size: 65_536,
            shared_data_key: false,
        },
        b"forged secret",
    )
    .expect("seal");
    let put_forged = |dsse_key: String, sealed: Vec<u8>| {
        let s3 = moto.s3();
        async move {
            s3.put_object()
                .bucket("secrets-db")
                .key("forged")
                .body(ByteStream::from(sealed))
                .server_side_encryption(ServerSideEncryption::AwsKmsDsse)
                .ssekms_key_id(dsse_key)
                .send()
                .await
                .expect("put forged");
        }
    };
    // Both layers under the api key: consistent in itself, so only a pinned reader can tell.
    put_forged(api.key_arn.clone(), sealed.clone()).await;
    let loose = dualsealctl_get(&moto, "s3://secrets-db/forged");
    assert!(
        loose.status.success(),
        "unpinned, the forgery opens: that is why get warns"
    );
    let refused = dualsealctl_get_with(&moto, "s3://secrets-db/forged", &pin);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && refused.stdout.is_empty(),
        "{err}"
    );
    assert!(err.contains("is under KMS key"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    // The envelope under the api key, DSSE under the db key: the layers disagree, which any
    // reader sees, pinned or not.
    put_forged(db.key_arn.clone(), sealed).await;
    for args in [&pin[..], &[]] {
        let refused = dualsealctl_get_with(&moto, "s3://secrets-db/forged", args);
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && refused.stdout.is_empty(),
            "{err}"
        );
        assert!(err.contains("is under KMS key"), "{err}");
    }

    // A genuine db envelope whose server-side layer is under the api key.
    let s3 = moto.s3();
    let body = s3
        .get_object()
        .bucket("secrets-db")
        .key("g/0")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    s3.put_object()
        .bucket("secrets-db")
        .key("g/0")
        .body(ByteStream::from(body))
        .server_side_encryption(ServerSideEncryption::AwsKmsDsse)
        .ssekms_key_id(&api.key_arn)
        .send()
        .await
        .unwrap();
    let refused = dualsealctl_get_with(&moto, "s3://secrets-db/g/0", &pin);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("server-side layer (DSSE-KMS) is under KMS key"),
        "{err}"
    );
    // The category is pinned too.
    let wrong_cat = [
        "--expect-category",
        "api",
        "--expect-kms-key",
        db.key_arn.as_str(),
    ];
    let refused = dualsealctl_get_with(&moto, "s3://secrets-db/g/4", &wrong_cat);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("not the expected \"api\""), "{err}");
}

/// A verification that cannot reach S3 is not a verification that found every copy
/// unreadable: the job parks with the reason, records no finding, and a resume once the
/// endpoint is back finishes it clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_parks_a_verification_instead_of_failing_every_object() {
    let moto = Moto::start();
    provision(&moto).await;
    let objects = spread(12, |prefix, i| {
        (format!("{prefix}u/{i:02}"), b"reach".to_vec())
    });
    put_all(&moto, &objects).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let port: u16 = proxy.endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config_via(&proxy.endpoint, dir.path(), 4, 2));
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    assert_succeeded(&wait_job(&mut client, job).await, &daemon);

    drop(proxy);
    let verify = client.verify(job).await.expect("verify").job_id;
    // Watching follows a paused job too: poll until it parks.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let parked = loop {
        let j = client.job(verify).await.expect("job");
        if j.state != pb::JobState::Running as i32 && j.state != pb::JobState::Pending as i32 {
            break j;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{j:?}\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(parked.state, pb::JobState::Paused as i32, "{parked:?}");
    assert!(parked.message.starts_with("parked: "), "{}", parked.message);
    assert!(
        parked.message.contains("dualsealctl resume"),
        "{}",
        parked.message
    );
    assert_eq!(
        parked.failed_objects, 0,
        "objects were marked for the endpoint's fault"
    );
    let audit = client.audit(verify).await.expect("audit");
    assert!(audit.iter().any(|e| e.kind == "job_parked"));
    assert!(!audit.iter().any(|e| e.kind == "verify_problem"));

    let _back = FaultProxy::start_at(&moto.endpoint, port).await;
    client.resume(verify).await.expect("resume");
    let done = wait_job(&mut client, verify).await;
    assert_eq!(done.state, pb::JobState::Succeeded as i32, "{done:?}");
    let report = client.verify_report(verify).await.expect("report");
    assert_eq!((report.checked_objects, report.ok_objects), (12, 12));
}

/// A daemon without AWS credentials refuses to start and says why (before, it started, and
/// every object was later marked "access denied").
#[test]
fn no_credentials_refuses_to_start_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_via("http://127.0.0.1:9", dir.path(), 2, 2);
    let cfg_path = dir.path().join("dualseal.toml");
    std::fs::write(&cfg_path, config).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dualseald"))
        .arg("--config")
        .arg(&cfg_path)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("run dualseald");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("no AWS credentials were found"), "{err}");
    assert!(!err.contains("access denied"), "{err}");
    assert!(
        !dir.path().join("control.sock").exists(),
        "socket left behind"
    );
}

/// A category key disabled in the middle of a job (AWS refuses it at once; moto does not, so
/// the fault proxy answers DisabledException as KMS would): nothing more is sealed under it,
/// its objects fail with the reason, the other categories finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_disabled_mid_job_stops_sealing_under_it() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let objects = spread(80, |prefix, i| {
        (format!("{prefix}d/{i:02}"), vec![b'k'; 100 + i])
    });
    put_all(&moto, &objects).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config_via(&proxy.endpoint, dir.path(), 2, 2));
    let mut client = daemon.client().await;
    let job = start_throttled(&mut client, 20).await;
    wait_until_verified(&mut client, job, 12).await;
    let db = cats.iter().find(|c| c.name == "db").unwrap();
    proxy.disable_kms_key(&db.key_arn);
    let db_verified_then = client
        .objects(job, pb::ObjectState::Verified)
        .await
        .unwrap()
        .iter()
        .filter(|o| o.category == "db")
        .count();
    let done = wait_job(&mut client, job).await;
    assert_eq!(
        done.state,
        pb::JobState::CompletedWithFailures as i32,
        "{done:?}"
    );
    let verified = client
        .objects(job, pb::ObjectState::Verified)
        .await
        .unwrap();
    let db_verified = verified.iter().filter(|o| o.category == "db").count();
    // At most the objects in flight (concurrency 2) finish after the key was disabled.
    assert!(
        db_verified <= db_verified_then + 2,
        "{db_verified} > {db_verified_then} + 2"
    );
    assert_eq!(
        verified.len() - db_verified,
        60,
        "the other categories finish"
    );
    let failed = client.objects(job, pb::ObjectState::Failed).await.unwrap();
    assert_eq!(failed.len(), 20 - db_verified);
    for o in &failed {
        assert_eq!(o.category, "db");
        assert!(o.reason.contains("DisabledException"), "{}", o.reason);
    }
}

/// The large-object path and the decommission path fail closed too: with the KMS key dropped
/// from every S3 answer, a multipart copy is not verified (its reason names the server's
/// silence), and an archive planned while the key was reported is refused at run time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_and_archive_fail_closed_when_s3_names_no_key() {
    let moto = Moto::start();
    provision(&moto).await;
    moto.s3()
        .create_bucket()
        .bucket("secrets-archive")
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .expect("archive bucket");
    let mut objects = std::collections::BTreeMap::new();
    objects.insert("tls/large.bin".to_owned(), vec![7u8; 6 * 1024 * 1024]);
    objects.insert("db/small".to_owned(), b"small".to_vec());
    put_all(&moto, &objects).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_via(&proxy.endpoint, dir.path(), 2, 2).replace(
        "[daemon]\n",
        "[daemon]\nmultipart_threshold = 5242880\nmultipart_part_size = 5242880\n",
    )
        + "\n[decommission]\narchive_bucket = \"secrets-archive\"\narchive_retention_days = 1\n";
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;

    proxy.report_sse(SseReport::DropKey, &[]);
    let job = client.start("", false).await.expect("start").job_id;
    let done = wait_job(&mut client, job).await;
    assert_eq!(
        (done.verified_objects, done.failed_objects),
        (0, 2),
        "{done:?}"
    );
    for o in client.objects(job, pb::ObjectState::Failed).await.unwrap() {
        assert!(
            o.reason.contains("did not report which KMS key"),
            "{}: {}",
            o.source_key,
            o.reason
        );
    }

    // With the key reported again the failed objects migrate (no new write of the large one
    // is needed: its copy is proved where it is).
    proxy.report_sse(SseReport::AsIs, &[]);
    client.retry(job).await.expect("retry");
    assert_succeeded(&wait_job(&mut client, job).await, &daemon);

    let plan = client
        .plan_decommission(job, pb::DecommissionMode::Archive)
        .await
        .expect("archive plan");
    proxy.report_sse(SseReport::DropKey, &[]);
    let refused = client
        .decommission(&plan.token)
        .await
        .expect_err("an archive run whose copies cannot be proved must be refused");
    assert!(
        refused.to_string().contains("named no KMS key"),
        "{refused}"
    );
    let cut = client.cutover_check(job).await.expect("cutover");
    assert!(!cut.ready);
}
