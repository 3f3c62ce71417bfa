//! Moving applications: the location map in every format, `dualsealctl get` reading a secret as
//! an application would (and refusing a swapped object), and the cutover check noticing new,
//! changed and deleted source objects. Real daemon, real CLI, moto.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use common::*;
use dualseal::api::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_reader_and_cutover_check() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let objects = spread(40, |prefix, i| {
        (
            format!("{prefix}team/s-{i:02}.json"),
            format!("{{\"secret\":{i}}}").into_bytes(),
        )
    });
    put_all(&moto, &objects).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_toml(&moto, dir.path(), 4)
        + "\n[decommission]\nbreak_glass = [\"arn:aws:iam::123456789012:role/break-glass\"]\n";
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    // The plan names the rule behind each category, its largest objects, and the estimate.
    let plan = client.plan("", 5).await.expect("plan");
    let db_plan = plan.categories.iter().find(|c| c.category == "db").unwrap();
    assert_eq!(db_plan.objects_by_rule.get("prefix \"db/\""), Some(&10));
    assert_eq!(db_plan.largest.len(), 3);
    assert!(db_plan.largest[0].bytes >= db_plan.largest[2].bytes);
    let est = plan.estimate.expect("estimate");
    assert_eq!(
        (
            est.s3_puts,
            est.s3_gets,
            est.kms_dualseal_requests,
            est.kms_dsse_requests
        ),
        (40, 80, 80, 80)
    );
    assert!(est.cost_usd > 0.0);
    assert_eq!(
        est.eta.map(|d| d.seconds),
        Some(1),
        "80 KMS calls at the default 1000/s"
    );
    let text = ctl(&daemon.socket, &["plan"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("KMS 80 by dualseal + 80 by S3 for DSSE")
    );
    let job = client.start("", false).await.expect("start").job_id;
    let done = wait_job(&mut client, job).await;
    assert_succeeded(&done, &daemon);
    let sock = &daemon.socket;
    let job_s = job.to_string();

    // The location map, three ways.
    let json = ctl(sock, &["mapping", &job_s]);
    assert!(json.status.success());
    let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), objects.len());
    let db = entries
        .iter()
        .find(|e| e["source_key"] == "db/team/s-00.json")
        .expect("db entry");
    let db_cat = cats.iter().find(|c| c.name == "db").unwrap();
    assert_eq!(db["destination_bucket"], "secrets-db");
    assert_eq!(db["destination_key"], "team/s-00.json");
    assert_eq!(db["kms_key_arn"], db_cat.key_arn.as_str());
    assert_eq!(db["envelope_version"], 1);
    let csv = ctl(sock, &["mapping", &job_s, "--format", "csv"]);
    let mut rdr = csv::Reader::from_reader(&csv.stdout[..]);
    assert_eq!(rdr.records().count(), objects.len());
    let env = String::from_utf8(ctl(sock, &["mapping", &job_s, "--format", "env"]).stdout).unwrap();
    assert!(
        env.lines()
            .any(|l| l == "DUALSEAL_DB_TEAM_S_00_JSON=s3://secrets-db/team/s-00.json"),
        "{env}"
    );

    // An application reads a secret with only GetObject and Decrypt.
    let got = dualsealctl_get(&moto, "s3://secrets-db/team/s-00.json");
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(got.stdout, objects["db/team/s-00.json"]);
    let out = dir.path().join("secret.json");
    let to_file = dualsealctl_get_with(
        &moto,
        "s3://secrets-api/team/s-01.json",
        &["-o", out.to_str().unwrap()],
    );
    assert!(
        to_file.status.success(),
        "{}",
        String::from_utf8_lossy(&to_file.stderr)
    );
    assert_eq!(std::fs::read(&out).unwrap(), objects["api/team/s-01.json"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A swapped object (another key's envelope, still DSSE-KMS) is refused.
    let s3 = moto.s3();
    let other = stored_bytes(&moto, "secrets-db", "team/s-04.json").await;
    s3.put_object()
        .bucket("secrets-db")
        .key("team/swapped.json")
        .body(ByteStream::from(other.to_vec()))
        .server_side_encryption(ServerSideEncryption::AwsKmsDsse)
        .ssekms_key_id(&db_cat.key_arn)
        .send()
        .await
        .unwrap();
    let swapped = dualsealctl_get(&moto, "s3://secrets-db/team/swapped.json");
    assert!(!swapped.status.success());
    let err = String::from_utf8_lossy(&swapped.stderr);
    assert!(
        err.contains("sealed for s3://secrets-db/team/s-04.json"),
        "{err}"
    );

    // Cutover: ready now (re-verification is advice), not after the source moves on.
    let ready = ctl(sock, &["cutover-check", &job_s]);
    assert_eq!(
        ready.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ready.stdout)
    );
    assert!(String::from_utf8_lossy(&ready.stdout).contains("ready to switch"));
    s3.put_object()
        .bucket(SOURCE)
        .key("db/team/new.json")
        .body(ByteStream::from_static(b"{}"))
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket(SOURCE)
        .key("api/team/s-01.json")
        .body(ByteStream::from_static(b"{\"secret\":\"rotated\"}"))
        .send()
        .await
        .unwrap();
    // One key from the middle of the listing and the very last one (the check walks the
    // listing and the journal side by side; the tail is where a merge goes wrong).
    for gone in ["tls/team/s-02.json", "tls/team/s-38.json"] {
        s3.delete_object()
            .bucket(SOURCE)
            .key(gone)
            .send()
            .await
            .unwrap();
    }
    let r = client.cutover_check(job).await.expect("cutover check");
    assert!(!r.ready);
    assert_eq!(
        (
            r.new_in_source_objects,
            r.changed_in_source_objects,
            r.deleted_in_source_objects
        ),
        (1, 1, 2)
    );
    let not_ready = ctl(sock, &["cutover-check", &job_s]);
    assert_eq!(not_ready.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&not_ready.stdout).contains("1 new, 1 changed, 2 deleted"));

    // A catch-up pass migrates the new and the changed object; the deletion stays reported.
    let synced = ctl(sock, &["sync", &job_s, "--watch"]);
    assert!(
        synced.status.success(),
        "{}",
        String::from_utf8_lossy(&synced.stdout)
    );
    let r = client.cutover_check(job).await.expect("cutover check");
    assert_eq!(
        (
            r.new_in_source_objects,
            r.changed_in_source_objects,
            r.deleted_in_source_objects
        ),
        (0, 0, 2),
        "{r:?}"
    );
    let rotated = dualsealctl_get(&moto, "s3://secrets-api/team/s-01.json");
    assert_eq!(rotated.stdout, b"{\"secret\":\"rotated\"}");
    let new = dualsealctl_get(&moto, "s3://secrets-db/team/new.json");
    assert_eq!(new.stdout, b"{}");
    let audit = client.audit(job).await.expect("audit");
    let changed = audit
        .iter()
        .find(|e| e.kind == "object_changed_in_source")
        .expect("the change is audited");
    assert_eq!(changed.source_key, "api/team/s-01.json");
    assert!(
        audit
            .iter()
            .any(|e| e.kind == "object_verified"
                && e.detail.contains("write=recopied-source-changed"))
    );
    let e = client.sync(job + 100).await.expect_err("no such job");
    assert!(e.to_string().contains("does not exist"), "{e}");

    // Decommission: refused while the cutover check fails (the deleted object)...
    let e = client
        .plan_decommission(job, pb::DecommissionMode::Lockdown)
        .await
        .expect_err("not ready");
    assert!(
        e.to_string().contains("source unchanged since migration"),
        "{e}"
    );
    assert!(
        client
            .plan_decommission(job, pb::DecommissionMode::Delete)
            .await
            .is_err(),
        "delete is refused while the cutover check fails"
    );
    for back in ["tls/team/s-02.json", "tls/team/s-38.json"] {
        s3.put_object()
            .bucket(SOURCE)
            .key(back)
            .body(ByteStream::from(objects[back].clone()))
            .send()
            .await
            .unwrap();
    }
    assert!(client.cutover_check(job).await.unwrap().ready);
    // ... then a lockdown with a token, used once, and a rollback to the original policy.
    let original = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Original","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::master-secrets/*"}]}"#;
    s3.put_bucket_policy()
        .bucket(SOURCE)
        .policy(original)
        .send()
        .await
        .unwrap();
    let plan = ctl(
        sock,
        &["decommission", "plan", &job_s, "--mode", "lockdown"],
    );
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(text.contains("break-glass"), "{text}");
    let token = text.split_whitespace().last().expect("token").to_owned();
    assert!(!ctl(sock, &["decommission", "run", "00ff"]).status.success());
    let run = ctl(sock, &["decommission", "run", &token]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let policy = |s3: aws_sdk_s3::Client| async move {
        s3.get_bucket_policy()
            .bucket(SOURCE)
            .send()
            .await
            .unwrap()
            .policy()
            .unwrap()
            .to_owned()
    };
    assert!(policy(s3.clone()).await.contains("DualsealLockdown"));
    let again = ctl(sock, &["decommission", "run", &token]);
    assert!(!again.status.success(), "a token must work once");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already used"));
    let plan = client
        .plan_decommission(job, pb::DecommissionMode::Rollback)
        .await
        .expect("rollback plan");
    client.decommission(&plan.token).await.expect("rollback");
    let restored = policy(s3.clone()).await;
    assert!(
        restored.contains("\"Original\"") && !restored.contains("DualsealLockdown"),
        "{restored}"
    );
    let audit = client.audit(job).await.expect("audit");
    for kind in ["decommission_lockdown", "decommission_rollback"] {
        assert_eq!(
            audit.iter().filter(|e| e.kind == kind).count(),
            2,
            "{kind}: requested and ok"
        );
    }
    assert!(
        !format!("{audit:?}").contains(&token),
        "the token itself must not be in the audit trail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_only_verified_versions_and_never_locked_ones() {
    use aws_sdk_s3::types::{
        ObjectLockLegalHold, ObjectLockLegalHoldStatus, ObjectLockRetention,
        ObjectLockRetentionMode,
    };
    let moto = Moto::start();
    provision(&moto).await;
    let s3 = moto.s3();
    enable_object_lock(&moto, SOURCE).await;
    let mut objects = spread(12, |prefix, i| {
        (format!("{prefix}d/{i:02}"), vec![b'v'; 10 + i])
    });
    put_all(&moto, &objects).await;
    // A second version of one key, and two keys no category claims.
    objects.insert("db/d/00".into(), b"second version".to_vec());
    put_all(
        &moto,
        &BTreeMap::from([("db/d/00".to_owned(), objects["db/d/00"].clone())]),
    )
    .await;
    put_all(
        &moto,
        &BTreeMap::from([
            ("unowned/a".to_owned(), b"a".to_vec()),
            ("unowned/b".to_owned(), b"b".to_vec()),
        ]),
    )
    .await;
    let until = aws_smithy_types::DateTime::from_secs(
        aws_smithy_types::DateTime::from(std::time::SystemTime::now()).secs() + 86_400,
    );
    s3.put_object_retention()
        .bucket(SOURCE)
        .key("api/d/01")
        .retention(
            ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Governance)
                .retain_until_date(until)
                .build(),
        )
        .send()
        .await
        .expect("retention");
    s3.put_object_legal_hold()
        .bucket(SOURCE)
        .key("tls/d/02")
        .legal_hold(
            ObjectLockLegalHold::builder()
                .status(ObjectLockLegalHoldStatus::On)
                .build(),
        )
        .send()
        .await
        .expect("legal hold");

    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config_toml(&moto, dir.path(), 4));
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    let done = wait_job(&mut client, job).await;
    assert_succeeded(&done, &daemon);
    assert!(client.cutover_check(job).await.unwrap().ready);

    // db/d/00's first version was never copied (the job copied the second): deleting it
    // destroys history that exists nowhere else, which needs its count acknowledged.
    let refused = client
        .plan_decommission(job, pb::DecommissionMode::Delete)
        .await
        .expect_err("a delete destroying uncopied history needs an acknowledgement");
    assert!(
        refused.to_string().contains(
            "would destroy 1 noncurrent version(s) of verified keys that have no current copy"
        ),
        "{refused}"
    );
    let plan_with = |n| pb::PlanDecommissionRequest {
        job_id: job,
        mode: pb::DecommissionMode::Delete as i32,
        destroy_uncopied_versions: n,
    };
    assert!(
        client.plan_decommission_with(plan_with(2)).await.is_err(),
        "the count must be exact"
    );
    let plan = client
        .plan_decommission_with(plan_with(1))
        .await
        .expect("plan");
    assert!(
        plan.summary
            .contains("1 noncurrent version(s) without a current copy are destroyed"),
        "{}",
        plan.summary
    );
    let audit = client.audit(job).await.expect("audit");
    assert!(audit.iter().any(|e| e.kind == "control_result"
        && e.outcome == "ok"
        && e.detail
            .contains("action=decommission_plan mode=delete destroy_uncopied_versions=1")));
    assert!(
        plan.summary
            .contains("2 version(s) under Object Lock are kept"),
        "{}",
        plan.summary
    );
    assert!(
        plan.summary.contains("legal hold") && plan.summary.contains("blocked until"),
        "{}",
        plan.summary
    );
    assert!(
        plan.summary
            .contains("keep 2 version(s) of keys this job did not verify"),
        "{}",
        plan.summary
    );
    let result = client.decommission(&plan.token).await.expect("delete");
    assert!(
        result.contains("11 version(s) deleted, 0 refused"),
        "{result}"
    );

    let left = s3
        .list_object_versions()
        .bucket(SOURCE)
        .send()
        .await
        .unwrap();
    let mut remaining: Vec<String> = left
        .versions()
        .iter()
        .map(|v| v.key().unwrap().to_owned())
        .collect();
    remaining.sort();
    assert_eq!(
        remaining,
        ["api/d/01", "tls/d/02", "unowned/a", "unowned/b"]
    );
    let audit = client.audit(job).await.expect("audit");
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.kind == "deleted_at_decommission" && e.outcome == "requested")
            .count(),
        11
    );
    // What the delete removed is no reason to restore anything: the check still passes.
    let after = client.cutover_check(job).await.expect("cutover");
    assert!(after.ready, "{after:?}");
    assert!(
        after
            .checks
            .iter()
            .any(|c| c.detail.contains("deleted by this job's decommission")),
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_copies_verified_objects_sealed_under_retention() {
    const ARCHIVE: &str = "secrets-archive";
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let s3 = moto.s3();
    let mut objects = spread(12, |prefix, i| {
        (
            format!("{prefix}a/{i:02}"),
            format!("archived secret {i}").into_bytes(),
        )
    });
    // One large enough to stream, as a multipart upload, in the migration and the archive.
    let large: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    objects.insert("tls/a/02".to_owned(), large);
    put_all(&moto, &objects).await;
    put_all(
        &moto,
        &BTreeMap::from([("unowned/x".to_owned(), b"x".to_vec())]),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_toml(&moto, dir.path(), 4).replace(
        "[daemon]\n",
        "[daemon]\nmultipart_threshold = 5242880\nmultipart_part_size = 5242880\n",
    ) + &format!(
        "\n[decommission]\narchive_bucket = \"{ARCHIVE}\"\narchive_retention_days = 7\n"
    );
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    let done = wait_job(&mut client, job).await;
    assert_succeeded(&done, &daemon);
    let before = source_etags(&moto).await;

    // Refused, with the way out, until the archive bucket exists with Object Lock.
    let missing = client
        .plan_decommission(job, pb::DecommissionMode::Archive)
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("does not exist")
            && missing
                .to_string()
                .contains("--object-lock-enabled-for-bucket"),
        "{missing:?}"
    );
    s3.create_bucket().bucket(ARCHIVE).send().await.unwrap();
    let unlocked = client
        .plan_decommission(job, pb::DecommissionMode::Archive)
        .await
        .unwrap_err();
    assert!(
        unlocked
            .to_string()
            .contains("does not have Object Lock enabled"),
        "{unlocked:?}"
    );
    enable_object_lock(&moto, ARCHIVE).await;

    let plan = client
        .plan_decommission(job, pb::DecommissionMode::Archive)
        .await
        .expect("plan");
    assert!(
        plan.summary.contains("copy 12 verified object(s)")
            && plan.summary.contains("governance mode for 7 day(s)"),
        "{}",
        plan.summary
    );
    let sock = &daemon.socket;
    let run = ctl(sock, &["decommission", "run", &plan.token]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{out}");
    assert!(
        out.contains("12 object(s) archived, 0 already archived and proved, 0 failed"),
        "{out}"
    );

    // Every verified object, and nothing else, is in the archive: sealed for its archive
    // location under its category's key, retained, and readable as the original bytes.
    let keys = list_keys(&moto, ARCHIVE).await;
    let expected: Vec<String> = objects.keys().map(|k| format!("{SOURCE}/{k}")).collect();
    assert_eq!(keys, expected);
    for (key, bytes) in &objects {
        let cat = cats.iter().find(|c| key.starts_with(c.prefix)).unwrap();
        let in_archive = Cat {
            bucket: ARCHIVE.to_owned(),
            key_arn: cat.key_arn.clone(),
            ..*cat
        };
        assert_eq!(
            &read_sealed(&moto, &in_archive, &format!("{SOURCE}/{key}")).await,
            bytes
        );
    }
    let head = s3
        .head_object()
        .bucket(ARCHIVE)
        .key(format!("{SOURCE}/db/a/00"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("GOVERNANCE")
    );
    let until = head
        .object_lock_retain_until_date()
        .expect("retain until")
        .secs();
    let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now()).secs();
    assert!((until - now - 7 * 86_400).abs() < 600, "{until} vs {now}");
    let large_copy = s3
        .head_object()
        .bucket(ARCHIVE)
        .key(format!("{SOURCE}/tls/a/02"))
        .send()
        .await
        .unwrap();
    assert!(
        large_copy.e_tag().unwrap_or_default().ends_with("-2\""),
        "the large object was archived as a multipart upload"
    );
    let got = dualsealctl_get(&moto, &format!("s3://{ARCHIVE}/{SOURCE}/api/a/01"));
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(got.stdout, objects["api/a/01"]);

    // Again: nothing written twice, every copy proved. The source was never touched.
    let again = client
        .plan_decommission(job, pb::DecommissionMode::Archive)
        .await
        .expect("plan");
    let result = client.decommission(&again.token).await.expect("archive");
    assert!(
        result.contains("0 object(s) archived, 12 already archived and proved, 0 failed"),
        "{result}"
    );
    assert_eq!(source_etags(&moto).await, before);
    let audit = client.audit(job).await.expect("audit");
    let archived: Vec<_> = audit
        .iter()
        .filter(|e| e.kind == "archived_at_decommission" && e.outcome == "ok")
        .collect();
    assert_eq!(archived.len(), 24);
    assert!(archived.iter().all(|e| e.destination_bucket == ARCHIVE));
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.kind == "decommission_archive" && e.outcome == "ok")
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_rules_explain_every_verdict_and_hold_disagreements() {
    const PEM_BODY: &str = "MIIEpAIBAAKCAQEAq7BFUpkGp3+content-rule-test";
    const DB_PASSWORD: &str = "pw-9f2c71aa";
    let moto = Moto::start();
    provision(&moto).await;
    let private_key =
        format!("-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----\n");
    let objects: BTreeMap<String, Vec<u8>> = [
        ("tls/web.pem", private_key.clone()),
        (
            "tls/chain.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        ),
        (
            "db/orders.json",
            format!("{{\"url\":\"postgresql://orders:{DB_PASSWORD}@db.internal/orders\"}}"),
        ),
        (
            "api/svc.jwk",
            "{\"kty\":\"oct\",\"k\":\"GawgguFyGrWKav7AX4VKUg\"}".into(),
        ),
        (
            "misc/app.env",
            "APP_ENV=prod\nSTRIPE_SECRET=sk_live_x\n".into(),
        ),
        ("db/misfiled-key.pem", private_key.clone()),
        ("api/plain.json", "{\"feature\":\"on\"}".into()),
        (
            "api/token.txt",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        ),
        ("legacy/root.pem", private_key),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_bytes()))
    .collect();
    put_all(&moto, &objects).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_toml(&moto, dir.path(), 4)
        .replace(
            "name = \"tls\"\n",
            "name = \"tls\"\ncontents = [\"pem_private_key\", \"certificate\"]\n",
        )
        .replace(
            "name = \"db\"\n",
            "name = \"db\"\ncontents = [\"database_url\"]\n",
        )
        .replace("name = \"api\"\n", "name = \"api\"\ncontents = [\"jwk\"]\n")
        .replace(
            "name = \"misc\"\n",
            "name = \"misc\"\ncontents = [\"dotenv\"]\n",
        );
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;

    let plan = client
        .plan_with(pb::PlanRequest {
            sample_limit: 20,
            inspect_content: true,
            ..Default::default()
        })
        .await
        .expect("plan");
    let content = plan.content.clone().expect("content report");
    assert_eq!(
        (
            content.inspected_objects,
            content.agreement_objects,
            content.disagreement_objects,
            content.unclaimed_objects,
            content.unrecognised_objects,
            content.unreadable_objects
        ),
        (9, 5, 2, 1, 1, 0),
        "{content:#?}"
    );
    let misfiled = content
        .disagreements_sample
        .iter()
        .find(|v| v.key == "db/misfiled-key.pem")
        .expect("misfiled key is a disagreement");
    assert_eq!(misfiled.key_rules, "db by prefix \"db/\"");
    assert_eq!(misfiled.content_category, "tls");
    assert_eq!(misfiled.why, "PEM block \"BEGIN RSA PRIVATE KEY\"");
    let legacy = content
        .disagreements_sample
        .iter()
        .find(|v| v.key == "legacy/root.pem")
        .expect("unclassified key with claimed content");
    assert_eq!(legacy.key_rules, "unclassified");
    // Every verdict is explained; none repeats what it found.
    assert_eq!(content.verdicts_sample.len(), 8);
    assert!(content.verdicts_sample.iter().all(|v| !v.why.is_empty()));
    let text = format!("{plan:?}");
    for secret in [PEM_BODY, DB_PASSWORD, "GawgguFyGrWKav7AX4VKUg", "sk_live_x"] {
        assert!(!text.contains(secret), "the plan repeats {secret}");
    }
    let cli = ctl(&daemon.socket, &["plan", "--inspect-content"]);
    assert_eq!(cli.status.code(), Some(4), "disagreements exit 4");
    let out = String::from_utf8_lossy(&cli.stdout);
    assert!(
        out.contains(
            "db/misfiled-key.pem: key rules say db by prefix \"db/\"; content is pem_private_key"
        ),
        "{out}"
    );

    // The migration holds the disagreement back and migrates the rest.
    let job = client.start("", false).await.expect("start").job_id;
    wait_job(&mut client, job).await;
    let held = client
        .objects(job, pb::ObjectState::Conflict)
        .await
        .expect("objects");
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].source_key, "db/misfiled-key.pem");
    assert!(
        held[0].reason.contains("which category \"tls\" claims"),
        "{}",
        held[0].reason
    );
    assert!(!held[0].reason.contains(PEM_BODY));
    let verified = client
        .objects(job, pb::ObjectState::Verified)
        .await
        .expect("objects");
    assert_eq!(verified.len(), 7);
    assert!(!list_keys(&moto, "secrets-db")
        .await
        .contains(&"misfiled-key.pem".to_owned()));
}
