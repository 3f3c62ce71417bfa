//! Provisioning against moto through the real daemon: from nothing to hardened keys and
//! buckets, a second apply that changes nothing, drift detection after manual changes, the
//! gate that keeps a migration out of a weak bucket, and the generated policy documents.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_s3::types::{
    BucketVersioningStatus, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, VersioningConfiguration,
};
use common::*;
use dualseal::api::client::ClientError;
use dualseal::api::pb;

const WRITER: &str = "arn:aws:iam::123456789012:role/dualseald";
const ADMIN: &str = "arn:aws:iam::123456789012:role/kms-admin";

fn reader(cat: &str) -> String {
    format!("arn:aws:iam::123456789012:role/app-{cat}")
}

/// The test layout, hardened: `db` takes the default key alias, the others name theirs.
fn config(moto: &Moto, dir: &Path) -> String {
    let mut s = format!(
        r#"
[aws]
region = "us-east-1"
endpoint_url = "{}"

[source]
bucket = "{SOURCE}"

[daemon]
journal_path = "{}"
control_socket = "{}"
concurrency = 4

[provision]
writer = "{WRITER}"
key_admins = ["{ADMIN}"]
"#,
        moto.endpoint,
        dir.join("journal").display(),
        dir.join("control.sock").display(),
    );
    for (name, prefix) in CATEGORY_PREFIXES {
        let key = if name == "db" {
            String::new()
        } else {
            format!("kms_key = \"alias/dualseal-{name}\"\n")
        };
        s.push_str(&format!(
            "\n[[category]]\nname = \"{name}\"\nbucket = \"secrets-{name}\"\n{key}prefixes = [\"{prefix}\"]\ndest_key = \"strip-prefix\"\nreaders = [\"{}\"]\n",
            reader(name)
        ));
    }
    s
}

fn settings(r: &pb::ProvisionResponse) -> Vec<(String, String)> {
    r.changes
        .iter()
        .map(|c| (c.resource.clone(), c.setting.clone()))
        .collect()
}

/// GetBucketVersioning, read from the raw answer when the SDK refuses moto's root element.
async fn versioning(s3: &aws_sdk_s3::Client, bucket: &str) -> String {
    match s3.get_bucket_versioning().bucket(bucket).send().await {
        Ok(v) => v
            .status()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        Err(e) => {
            let body = e
                .raw_response()
                .and_then(|r| r.body().bytes())
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_else(|| panic!("versioning: {e:?}"));
            let start = body.find("<Status>").expect("status") + "<Status>".len();
            body[start..start + body[start..].find('<').expect("end")].to_owned()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_from_scratch_detect_drift_and_refuse_weak_buckets() {
    let moto = Moto::start();
    moto.s3()
        .create_bucket()
        .bucket(SOURCE)
        .send()
        .await
        .expect("source");
    let objects: BTreeMap<String, Vec<u8>> = (0..40)
        .map(|i| {
            let (_, prefix) = CATEGORY_PREFIXES[i % 4];
            (format!("{prefix}p/{i:02}"), vec![b's'; 100 + i])
        })
        .collect();
    put_all(&moto, &objects).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &config(&moto, dir.path()));
    let mut client = daemon.client().await;

    // From nothing: a key and a bucket to create per category, and the documents.
    let plan = client.provision(false).await.expect("plan");
    assert_eq!(plan.changes.len(), 8, "{:#?}", plan.changes);
    assert!(plan
        .changes
        .iter()
        .all(|c| c.action == pb::ProvisionAction::Create as i32));
    assert!(settings(&plan).contains(&("kms alias/dualseal/db".into(), "key".into())));
    assert_eq!(
        plan.documents.len(),
        13,
        "4 key, 4 bucket, 4 reader, 1 daemon policy"
    );
    let check = ctl(&daemon.socket, &["provision", "--check"]);
    assert_eq!(
        check.status.code(),
        Some(4),
        "--check must fail before apply"
    );

    let applied = client.provision(true).await.expect("apply");
    assert_eq!(applied.applied.len(), 8);
    assert!(applied.changes.is_empty(), "{:#?}", applied.changes);
    assert!(client
        .provision(false)
        .await
        .expect("plan")
        .changes
        .is_empty());
    let again = client.provision(true).await.expect("second apply");
    assert!(
        again.applied.is_empty(),
        "a second apply changed {:#?}",
        again.applied
    );
    let check = ctl(&daemon.socket, &["provision", "--check"]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // Incomplete multipart uploads are aborted by a lifecycle rule; an operator's own rules
    // survive provisioning putting it back.
    let rules = |bucket: &'static str| {
        let s3 = moto.s3();
        async move {
            s3.get_bucket_lifecycle_configuration()
                .bucket(bucket)
                .send()
                .await
                .map(|o| o.rules().to_vec())
                .unwrap_or_default()
        }
    };
    let ours = rules("secrets-db").await;
    assert_eq!(ours.len(), 1, "{ours:#?}");
    assert_eq!(
        ours[0]
            .abort_incomplete_multipart_upload()
            .and_then(|a| a.days_after_initiation()),
        Some(7)
    );
    {
        use aws_sdk_s3::types::{
            BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
            LifecycleRuleFilter,
        };
        let operators = LifecycleRule::builder()
            .id("operators-tmp")
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("tmp/").build())
            .expiration(LifecycleExpiration::builder().days(30).build())
            .build()
            .unwrap();
        moto.s3()
            .put_bucket_lifecycle_configuration()
            .bucket("secrets-db")
            .lifecycle_configuration(
                BucketLifecycleConfiguration::builder()
                    .rules(operators)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("operator's lifecycle");
    }
    let drift = client.provision(false).await.expect("plan");
    assert_eq!(
        settings(&drift),
        vec![(
            "s3://secrets-db".to_owned(),
            "abort incomplete multipart uploads".to_owned()
        )]
    );
    assert!(
        !drift.changes[0].weakens,
        "a missing backstop is not a weak bucket"
    );
    client.provision(true).await.expect("apply");
    let mut ids: Vec<String> = rules("secrets-db")
        .await
        .iter()
        .filter_map(|r| r.id().map(str::to_owned))
        .collect();
    ids.sort();
    assert_eq!(ids, ["dualseal-abort-incomplete-uploads", "operators-tmp"]);

    // What AWS holds now.
    let s3 = moto.s3();
    let kms = moto.kms();
    for (name, _) in CATEGORY_PREFIXES {
        let bucket = format!("secrets-{name}");
        let alias = if name == "db" {
            "alias/dualseal/db".to_owned()
        } else {
            format!("alias/dualseal-{name}")
        };
        let key = kms.describe_key().key_id(&alias).send().await.expect("key");
        let key_arn = key.key_metadata().unwrap().arn().unwrap().to_owned();
        let enc = s3
            .get_bucket_encryption()
            .bucket(&bucket)
            .send()
            .await
            .expect("enc");
        let rule = &enc.server_side_encryption_configuration().unwrap().rules()[0];
        let by_default = rule.apply_server_side_encryption_by_default().unwrap();
        assert_eq!(
            by_default.sse_algorithm(),
            &ServerSideEncryption::AwsKmsDsse
        );
        assert_eq!(by_default.kms_master_key_id(), Some(key_arn.as_str()));
        let pab = s3
            .get_public_access_block()
            .bucket(&bucket)
            .send()
            .await
            .expect("pab");
        let pab = pab.public_access_block_configuration().unwrap();
        assert_eq!(pab.block_public_policy(), Some(true));
        assert_eq!(pab.restrict_public_buckets(), Some(true));
        assert_eq!(versioning(&s3, &bucket).await, "Enabled");
        let policy = s3
            .get_bucket_policy()
            .bucket(&bucket)
            .send()
            .await
            .expect("policy");
        let policy: serde_json::Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
        let text = policy.to_string();
        assert!(text.contains("DenyWritesNotDsseKms") && text.contains(&key_arn));
        let key_policy = kms
            .get_key_policy()
            .key_id(&key_arn)
            .policy_name("default")
            .send()
            .await
            .expect("key policy");
        let kp: serde_json::Value = serde_json::from_str(key_policy.policy().unwrap()).unwrap();
        let readers = kp["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == "ReadersOpenThisCategoryOnly")
            .expect("readers statement");
        assert_eq!(
            readers["Condition"]["StringEquals"]["kms:EncryptionContext:dualseal:category"],
            name
        );
    }

    // The documents: valid IAM JSON, and no category's reader in another category's.
    let out = dir.path().join("policies");
    let w = ctl(
        &daemon.socket,
        &[
            "provision",
            "--write-policies",
            out.to_str().unwrap(),
            "--terraform",
        ],
    );
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    for d in &plan.documents {
        let text = std::fs::read_to_string(out.join(format!("{}.json", d.name))).expect("file");
        let v: serde_json::Value = serde_json::from_str(&text).expect("IAM JSON");
        assert_eq!(v["Version"], "2012-10-17", "{}", d.name);
        for (other, _) in CATEGORY_PREFIXES {
            let mine = d.name.ends_with(&format!("-{other}"));
            if !mine && d.name != "dualseal-daemon" {
                assert!(
                    !text.contains(&reader(other)),
                    "{} names {other}'s reader",
                    d.name
                );
            }
        }
    }
    let tf: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("dualseal-iam.tf.json")).expect("tf"),
    )
    .expect("terraform JSON");
    assert!(tf["resource"]["aws_iam_policy"]["dualseal_daemon"]["policy"].is_string());

    // Drift: four manual changes, each named.
    let aes = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(
                    ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(ServerSideEncryption::Aes256)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .build()
        .unwrap();
    s3.put_bucket_encryption()
        .bucket("secrets-db")
        .server_side_encryption_configuration(aes)
        .send()
        .await
        .expect("weaken encryption");
    s3.delete_public_access_block()
        .bucket("secrets-api")
        .send()
        .await
        .expect("drop pab");
    s3.put_bucket_versioning()
        .bucket("secrets-tls")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Suspended)
                .build(),
        )
        .send()
        .await
        .expect("suspend versioning");
    let misc_policy = s3
        .get_bucket_policy()
        .bucket("secrets-misc")
        .send()
        .await
        .unwrap();
    let mut p: serde_json::Value = serde_json::from_str(misc_policy.policy().unwrap()).unwrap();
    p["Statement"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s["Sid"] != "DenyWritesNotDsseKms");
    s3.put_bucket_policy()
        .bucket("secrets-misc")
        .policy(p.to_string())
        .send()
        .await
        .expect("loosen policy");
    let drift = client.provision(false).await.expect("plan");
    let found = settings(&drift);
    for (resource, setting) in [
        ("s3://secrets-db", "default encryption"),
        ("s3://secrets-api", "block public access"),
        ("s3://secrets-tls", "versioning"),
        ("s3://secrets-misc", "bucket policy"),
    ] {
        assert!(
            found.contains(&(resource.into(), setting.into())),
            "{resource} {setting} not reported: {found:?}"
        );
    }
    assert!(drift
        .changes
        .iter()
        .any(|c| c.live.contains("statement DenyWritesNotDsseKms missing")));
    let check = ctl(&daemon.socket, &["provision", "--check"]);
    assert_eq!(check.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&check.stdout).contains("default encryption"));

    // A migration refuses the weak buckets, unless the operator overrides (audited).
    let e = client.start("", false).await.expect_err("weak buckets");
    let ClientError::Status(status) = &e else {
        panic!("{e}")
    };
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains("s3://secrets-db default encryption")
            && status.message().contains("provision --apply"),
        "{e}"
    );
    let forced = client
        .start_with(pb::StartJobRequest {
            allow_weak_buckets: true,
            ..Default::default()
        })
        .await
        .expect("override");
    client.cancel(forced.job_id).await.expect("cancel");
    let audit = client.audit(forced.job_id).await.expect("audit");
    let accepted = audit
        .iter()
        .find(|e| e.kind == "weak_buckets_accepted")
        .expect("override audited");
    assert!(
        accepted.detail.contains("versioning"),
        "{}",
        accepted.detail
    );

    // Fixed by apply: the start's preflight (a dry run) passes the gate again.
    let dry = ctl(&daemon.socket, &["start", "--dry-run"]);
    assert_ne!(
        dry.status.code(),
        Some(0),
        "a dry run over weak buckets must fail"
    );
    assert!(String::from_utf8_lossy(&dry.stderr).contains("block public access"));
    // The dry run of a start that would override says so, and what it would accept.
    let dry = ctl(
        &daemon.socket,
        &["start", "--dry-run", "--allow-weak-buckets"],
    );
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success() && out.contains("weak, accepted by --allow-weak-buckets"),
        "{out}{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let fixed = client.provision(true).await.expect("apply");
    assert_eq!(fixed.applied.len(), 4, "{:#?}", fixed.applied);
    assert!(fixed.changes.is_empty());
    let dry = ctl(&daemon.socket, &["start", "--dry-run"]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let trail = client.audit(0).await.expect("audit");
    assert!(trail.iter().filter(|e| e.kind == "provisioned").count() >= 12);

    // Migrating into the provisioned (versioned, DSSE-by-default) buckets. moto cannot evaluate
    // conditional bucket policies (any conditional Deny naming PutObject denies every
    // PutObject), so the policies are removed here and the override is audited; AWS
    // evaluates them as docs/iam.md describes.
    for (name, _) in CATEGORY_PREFIXES {
        s3.delete_bucket_policy()
            .bucket(format!("secrets-{name}"))
            .send()
            .await
            .expect("drop policy");
    }
    let job = client
        .start_with(pb::StartJobRequest {
            allow_weak_buckets: true,
            ..Default::default()
        })
        .await
        .expect("start")
        .job_id;
    let done = wait_job(&mut client, job).await;
    assert_succeeded(&done, &daemon);
    assert_eq!(done.verified_objects, objects.len() as u64);
    let db_key = kms
        .describe_key()
        .key_id("alias/dualseal/db")
        .send()
        .await
        .expect("key");
    let cat = Cat {
        name: "db",
        prefix: "db/",
        bucket: "secrets-db".into(),
        key_arn: db_key.key_metadata().unwrap().arn().unwrap().to_owned(),
    };
    assert_eq!(read_sealed(&moto, &cat, "p/00").await, objects["db/p/00"]);
}
