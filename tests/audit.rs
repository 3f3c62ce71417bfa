//! The audit trail as an auditor meets it: exports (JSON Lines and CSV) that verify offline,
//! every tamper kind named by sequence number, filters, actors, and verification that reports
//! destination objects altered behind dualseal's back.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use common::*;
use dualseal::api::pb;

fn ctl(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dualsealctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run dualsealctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn seed() -> BTreeMap<String, Vec<u8>> {
    (0..40)
        .map(|i| {
            (
                format!("{}a/{i:02}", CATEGORY_PREFIXES[i % 4].1),
                format!("secret-{i}").into_bytes(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_verify_offline_and_every_tamper_is_named() {
    let moto = Moto::start();
    provision(&moto).await;
    put_all(&moto, &seed()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config_toml(&moto, dir.path(), 4));
    let mut client = daemon.client().await;
    let started = dualseal::audit::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            - 1000,
    );
    let job = client.start("", false).await.expect("start").job_id;
    wait_job(&mut client, job).await;
    let sock = &daemon.socket;

    // Control actions carry the caller's identity from the socket, before and after.
    let uid = nix::unistd::getuid().as_raw();
    let audit = client.audit(0).await.expect("audit");
    let control: Vec<_> = audit
        .iter()
        .filter(|e| e.kind.starts_with("control"))
        .collect();
    assert_eq!(control.len(), 2, "{control:?}");
    assert_eq!(control[0].outcome, "requested");
    assert_eq!(control[1].outcome, "ok");
    assert!(
        control
            .iter()
            .all(|e| e.actor.starts_with(&format!("uid={uid},"))),
        "{control:?}"
    );
    assert!(control[0].detail.contains("action=start"));

    // The daemon's chain is intact; its head can be recorded elsewhere.
    let (code, head, err) = ctl(sock, &["audit", "head"]);
    assert_eq!(code, 0, "{err}");
    let head = head.trim().to_owned();
    let (code, out, _) = ctl(sock, &["audit", "verify", "--head", &head]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact"));

    // Both export formats verify offline, with the head.
    let jsonl = dir.path().join("audit.jsonl");
    let csv = dir.path().join("audit.csv");
    for (path, fmt) in [(&jsonl, "jsonl"), (&csv, "csv")] {
        let (code, _, err) = ctl(
            sock,
            &[
                "audit",
                "export",
                "--format",
                fmt,
                "-o",
                path.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{err}");
        let (code, out, err) = ctl(
            sock,
            &[
                "audit",
                "verify",
                "--file",
                path.to_str().unwrap(),
                "--head",
                &head,
            ],
        );
        assert_eq!(code, 0, "{fmt}: {out}{err}");
    }

    // Each tamper kind is caught and names the sequence number.
    let lines: Vec<String> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let check = |name: &str, lines: &[String], head: Option<&str>, want: &str| {
        let p = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        let mut args = vec!["audit", "verify", "--file", p.to_str().unwrap()];
        if let Some(h) = head {
            args.extend(["--head", h]);
        }
        let (code, out, err) = ctl(sock, &args);
        assert_eq!(code, 2, "{name}: {out}{err}");
        assert!(out.contains(want), "{name}: expected {want:?} in {out}");
    };
    let mut edited = lines.clone();
    edited[4] = edited[4].replacen("\"detail\":\"", "\"detail\":\"X", 1);
    check("edited", &edited, None, "event 5 was edited");
    let mut deleted = lines.clone();
    deleted.remove(6);
    check(
        "deleted",
        &deleted,
        None,
        "missing (deleted) before event 8",
    );
    let mut reordered = lines.clone();
    reordered.swap(9, 10);
    check("reordered", &reordered, None, "before event 11");
    let truncated = lines[..lines.len() - 3].to_vec();
    check("truncated", &truncated, Some(&head), "truncated");

    // A filtered export returns exactly the matching events.
    let (code, out, err) = ctl(
        sock,
        &[
            "audit",
            "export",
            "--job",
            &job.to_string(),
            "--category",
            "db",
            "--kind",
            "object_verified",
            "--since",
            &started,
            "--source-prefix",
            "db/a/",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let keys: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["source_key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut expected: Vec<String> = seed()
        .keys()
        .filter(|k| k.starts_with("db/"))
        .cloned()
        .collect();
    expected.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, expected);
    let (code, out, _) = ctl(
        sock,
        &["audit", "export", "--until", "2000-01-01T00:00:00Z"],
    );
    assert_eq!((code, out.trim()), (0, ""), "nothing happened before 2000");
    let (code, _, err) = ctl(sock, &["audit", "export", "--since", "yesterday"]);
    assert_ne!(code, 0);
    assert!(err.contains("RFC 3339"), "{err}");

    let (code, out, _) = ctl(sock, &["audit", "summary", "--job", &job.to_string()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("object_verified") && out.contains("40"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_reports_objects_altered_behind_its_back() {
    let moto = Moto::start();
    let cats = provision(&moto).await;
    put_all(&moto, &seed()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config_toml(&moto, dir.path(), 4));
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start").job_id;
    wait_job(&mut client, job).await;
    let clean = client.verify_and_wait(job).await.expect("verify");
    assert_eq!((clean.checked_objects, clean.ok_objects), (40, 40));

    let s3 = moto.s3();
    let db = cats.iter().find(|c| c.name == "db").unwrap();
    let get = |b: &str, k: &str| {
        let s3 = s3.clone();
        let (b, k) = (b.to_owned(), k.to_owned());
        async move {
            s3.get_object()
                .bucket(b)
                .key(k)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes()
        }
    };
    // Overwrite the bytes (still DSSE-KMS under the right key).
    let mut bytes = get(&db.bucket, "a/00").await.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    s3.put_object()
        .bucket(&db.bucket)
        .key("a/00")
        .server_side_encryption(ServerSideEncryption::AwsKmsDsse)
        .ssekms_key_id(&db.key_arn)
        .body(ByteStream::from(bytes))
        .send()
        .await
        .unwrap();
    // Re-upload the same bytes with SSE-S3 instead of DSSE-KMS.
    let same = get(&db.bucket, "a/04").await;
    s3.put_object()
        .bucket(&db.bucket)
        .key("a/04")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .body(ByteStream::from(same))
        .send()
        .await
        .unwrap();
    // Move one into another category's bucket (metadata comes along).
    s3.copy_object()
        .copy_source(format!("{}/a/08", db.bucket))
        .bucket("secrets-api")
        .key("a/08")
        .send()
        .await
        .unwrap();
    s3.delete_object()
        .bucket(&db.bucket)
        .key("a/08")
        .send()
        .await
        .unwrap();
    // Delete one.
    s3.delete_object()
        .bucket(&db.bucket)
        .key("a/12")
        .send()
        .await
        .unwrap();

    let report = client.verify_and_wait(job).await.expect("verify");
    assert_eq!((report.checked_objects, report.ok_objects), (40, 36));
    let kind_of = |key: &str| {
        report
            .mismatches
            .iter()
            .find(|m| m.source_key == key)
            .map(|m| m.reason.split(':').next().unwrap().to_owned())
    };
    assert_eq!(kind_of("db/a/00").as_deref(), Some("mismatched"));
    assert_eq!(kind_of("db/a/04").as_deref(), Some("wrong_key"));
    assert_eq!(kind_of("db/a/08").as_deref(), Some("wrong_bucket"));
    assert_eq!(kind_of("db/a/12").as_deref(), Some("missing"));
    let dbv = report
        .categories
        .iter()
        .find(|c| c.category == "db")
        .unwrap();
    assert_eq!((dbv.checked_objects, dbv.ok_objects), (10, 6));
    let problems = client.audit(report.job_id).await.unwrap();
    let count = |kind: &str| problems.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count("verify_problem"), 4);
    assert_eq!(count("object_reverified"), 36);
    assert_eq!(count("job_verified"), 1);
    // Verification reports, it never repairs: the objects stay as they were left.
    assert!(s3
        .head_object()
        .bucket(&db.bucket)
        .key("a/12")
        .send()
        .await
        .is_err());
    let (code, out, _) = ctl(&daemon.socket, &["verify", &job.to_string()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("wrong_bucket=1"), "{out}");

    // A verification is a job of its own: it can be paused, survives a restart paused, and
    // resumes to the same findings.
    // (One object at a time, so the pause certainly lands before the 40 checks are done.)
    let mut daemon = daemon;
    assert_eq!(daemon.stop(), Some(0));
    drop(daemon);
    let mut daemon = Daemon::start(dir.path(), &config_toml(&moto, dir.path(), 1));
    let mut client = daemon.client().await;
    let v = client.verify(job).await.expect("verify job");
    client.pause(v.job_id).await.expect("pause verification");
    assert_eq!(daemon.stop(), Some(0));
    drop(daemon);
    let daemon = Daemon::start(dir.path(), &config_toml(&moto, dir.path(), 4));
    let mut client = daemon.client().await;
    let paused = client.job(v.job_id).await.unwrap();
    assert_eq!(paused.state, pb::JobState::Paused as i32);
    assert_eq!(
        (paused.kind, paused.verify_of_job_id),
        (pb::JobKind::Verify as i32, job)
    );
    client.resume(v.job_id).await.expect("resume verification");
    wait_job(&mut client, v.job_id).await;
    let again = client.verify_report(v.job_id).await.unwrap();
    assert_eq!((again.checked_objects, again.ok_objects), (40, 36));
    let err = client
        .verify(v.job_id)
        .await
        .expect_err("verifying a verification");
    assert!(err.to_string().contains("itself a verification"), "{err}");
}
