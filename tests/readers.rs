//! The application readers in `readers/` (Python and TypeScript) against live objects: the real
//! daemon migrates version-1 and version-2 envelopes (0 bytes, small, multipart) into moto, and
//! both libraries must read each one back to exactly its source bytes, pinned to what the
//! location map says; forged and damaged objects beside them must be refused with the right
//! typed error, and so must answers from S3 that cannot prove the object's key (rewritten by
//! the fault proxy in front of moto). The readers' vector and attack tests are their own unit
//! tests (`scripts/test.sh` runs them); this test proves the wiring to S3, KMS and the daemon.
//!
//! Needs `python3` with PyNaCl and boto3, and `node` with `readers/typescript` installed and
//! built (`npm ci && npx tsc`). Without them the test is skipped, unless
//! `DUALSEAL_READERS_REQUIRED=1` (set by `scripts/test.sh`), when it fails.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use aws_sdk_kms::types::DataKeySpec;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use common::proxy::{FaultProxy, SseReport};
use common::{ctl, provision, put_all, stored_bytes, Cat, Daemon, Moto};
use dualseal::envelope::{self, DataKey, EncryptionContext, HeaderParams};
use serde_json::{json, Value};

const MIB: usize = 1024 * 1024;
/// S3's smallest part: the daemon streams objects from this size on as multipart uploads.
const MULTIPART: &str = "multipart_threshold = 5242880\nmultipart_part_size = 5242880\n";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Why the readers cannot run here, if they cannot.
fn readers_missing() -> Option<String> {
    let ok = |cmd: &mut Command| cmd.output().is_ok_and(|o| o.status.success());
    if !ok(Command::new("python3").args(["-c", "import nacl, boto3"])) {
        return Some("python3 with PyNaCl and boto3".into());
    }
    if !ok(Command::new("node").arg("--version")) {
        return Some("node".into());
    }
    let ts = repo().join("readers/typescript");
    if !ts.join("node_modules/@noble/ciphers").is_dir() || !ts.join("dist/index.js").is_file() {
        return Some("readers/typescript installed and built (npm ci && npx tsc)".into());
    }
    None
}

/// Runs both readers on the cases of one phase; each must pass every case.
fn run_readers(dir: &Path, phase: &str, spec: &Value) {
    let path = dir.join(format!("cases-{phase}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(spec).unwrap()).unwrap();
    let cases = spec["cases"].as_array().unwrap().len();
    let aws_env = [
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("NO_PROXY", "127.0.0.1,localhost"),
        ("no_proxy", "127.0.0.1,localhost"),
    ];
    let python = Command::new("python3")
        .arg(repo().join("readers/python/tests/live.py"))
        .arg(&path)
        // The checkout's package, not whatever copy is installed.
        .env("PYTHONPATH", repo().join("readers/python/src"))
        .envs(aws_env)
        .output()
        .expect("run python3");
    let node = Command::new("node")
        .arg(repo().join("readers/typescript/test/live.mjs"))
        .arg(&path)
        .envs(aws_env)
        .output()
        .expect("run node");
    for (reader, out) in [("python", python), ("typescript", node)] {
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{stdout}");
        assert!(
            out.status.success(),
            "the {reader} reader failed phase {phase}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Two reads per case (whole, and streamed), each reported.
        assert_eq!(
            stdout.lines().filter(|l| l.starts_with("ok ")).count(),
            2 * cases,
            "{reader}, phase {phase}:\n{stdout}"
        );
    }
}

/// Deterministic bytes that do not compress (a stand-in for a large secret bundle).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Migrates what `only` names with a daemon of `config_extra` (inserted under `[daemon]`),
/// through dualsealctl as an operator would, and returns the job's location map (JSON lines).
fn migrate(moto: &Moto, dir: &Path, config_extra: &str, only: &[&str]) -> String {
    let config = common::config_toml(moto, dir, 4)
        .replace("[daemon]\n", &format!("[daemon]\n{config_extra}"));
    let mut daemon = Daemon::start(dir, &config);
    let mut args = vec!["start"];
    for c in only {
        args.extend(["--only-category", c]);
    }
    let started = ctl(&daemon.socket, &args);
    let text = String::from_utf8_lossy(&started.stdout);
    assert!(
        started.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let job = text
        .split("started job ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("job id")
        .to_owned();
    let watched = ctl(&daemon.socket, &["watch", &job]);
    assert!(
        watched.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&watched.stdout),
        daemon.log_text()
    );
    let map = dir.join("mapping.jsonl");
    let out = ctl(
        &daemon.socket,
        &["mapping", &job, "-o", map.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(daemon.stop(), Some(0));
    std::fs::read_to_string(map).unwrap()
}

/// An envelope for `bucket/key` sealed under a fresh data key from KMS `kms_key` (bound to the
/// context `category` names), whose header claims `claimed_key`: what someone holding
/// `kms:GenerateDataKey` on that key and `s3:PutObject` on the bucket can write.
async fn forge(
    moto: &Moto,
    kms_key: &str,
    claimed_key: &str,
    bucket: &str,
    category: &str,
    key: &str,
) -> Vec<u8> {
    let context = EncryptionContext::new()
        .with("dualseal:bucket", bucket)
        .with("dualseal:category", category)
        .with("dualseal:key", key);
    let kms_context: HashMap<String, String> = context
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let dk = moto
        .kms()
        .generate_data_key()
        .key_id(kms_key)
        .key_spec(DataKeySpec::Aes256)
        .set_encryption_context(Some(kms_context))
        .send()
        .await
        .expect("generate data key");
    let data_key = DataKey::from_slice(dk.plaintext().unwrap().as_ref()).unwrap();
    let params = HeaderParams {
        kms_key_id: claimed_key.to_owned(),
        wrapped_key: dk.ciphertext_blob().unwrap().as_ref().to_vec(),
        context,
        segment_size: envelope::DEFAULT_SEGMENT_SIZE,
        shared_data_key: false,
    };
    envelope::seal(&data_key, params, b"{\"password\":\"the forger's\"}").unwrap()
}

/// Puts `body` at `bucket/key` with the server-side encryption given.
async fn put_raw(
    moto: &Moto,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    sse: ServerSideEncryption,
    kms_key: &str,
) {
    moto.s3()
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .server_side_encryption(sse)
        .ssekms_key_id(kms_key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {bucket}/{key}: {e:?}"));
}

fn expect(cat: &Cat) -> Value {
    json!({"category": cat.name, "kms_key_arn": cat.key_arn})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_typescript_readers_read_what_the_daemon_migrated_and_refuse_forgeries() {
    if let Some(missing) = readers_missing() {
        assert!(
            std::env::var("DUALSEAL_READERS_REQUIRED").as_deref() != Ok("1"),
            "the reader tests need {missing}: ./scripts/test.sh installs it"
        );
        eprintln!("skipped: the reader tests need {missing} (set DUALSEAL_READERS_REQUIRED=1 to fail instead)");
        return;
    }
    let moto = Moto::start();
    let cats = provision(&moto).await;
    let cat = |name: &str| cats.iter().find(|c| c.name == name).unwrap();
    let mut objects = BTreeMap::new();
    // Version 1 (a data key per object): db and api.
    objects.insert(
        "db/app/creds.json".to_owned(),
        b"{\"user\":\"app\",\"password\":\"correct horse\"}".to_vec(),
    );
    objects.insert("db/app/empty.bin".to_owned(), Vec::new());
    objects.insert("db/app/big.bin".to_owned(), noise(11 * MIB + 5, 1));
    objects.insert(
        "api/app/token.json".to_owned(),
        b"{\"token\":\"api\"}".to_vec(),
    );
    // Version 2 (shared data keys): tls and misc.
    objects.insert(
        "tls/shared/a.pem".to_owned(),
        b"-----BEGIN NOTHING-----\na\n".to_vec(),
    );
    objects.insert(
        "tls/shared/b.pem".to_owned(),
        b"-----BEGIN NOTHING-----\nb\n".to_vec(),
    );
    objects.insert("tls/shared/big.bin".to_owned(), noise(6 * MIB, 2));
    objects.insert("misc/shared/empty".to_owned(), Vec::new());
    put_all(&moto, &objects).await;

    let work = tempfile::tempdir().expect("tempdir");
    let (dir_v1, dir_v2) = (work.path().join("v1"), work.path().join("v2"));
    std::fs::create_dir_all(&dir_v1).unwrap();
    std::fs::create_dir_all(&dir_v2).unwrap();
    let map_v1 = migrate(&moto, &dir_v1, MULTIPART, &["db", "api"]);
    let map_v2 = migrate(
        &moto,
        &dir_v2,
        &format!("{MULTIPART}data_key_reuse_objects = 10\ndata_key_reuse_secs = 600\n"),
        &["tls", "misc"],
    );
    // One map for both jobs, as an application's deployment would carry it.
    let mapping = work.path().join("mapping.jsonl");
    std::fs::write(&mapping, format!("{map_v1}{map_v2}")).unwrap();
    let entries: Vec<Value> = format!("{map_v1}{map_v2}")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), objects.len(), "{entries:?}");
    for e in &entries {
        let shared = e["category"] == "tls" || e["category"] == "misc";
        assert_eq!(e["envelope_version"], if shared { 2 } else { 1 }, "{e}");
    }
    // The large ones really are multipart objects (S3's ETag counts the parts).
    for (bucket, key) in [
        ("secrets-db", "app/big.bin"),
        ("secrets-tls", "shared/big.bin"),
    ] {
        let head = moto
            .s3()
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        assert!(
            head.e_tag().unwrap_or_default().contains('-'),
            "{bucket}/{key} is not multipart"
        );
    }

    let plain_dir = work.path().join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let mut genuine = Vec::new();
    for (i, (source_key, bytes)) in objects.iter().enumerate() {
        let (name, rest) = source_key.split_once('/').unwrap();
        let file = plain_dir.join(i.to_string());
        std::fs::write(&file, bytes).unwrap();
        // Half of them pinned from the location map, half from the expectation spelt out.
        let how = if i % 2 == 0 {
            json!("mapping")
        } else {
            expect(cat(name))
        };
        genuine.push(json!({
            "name": format!("{source_key} ({} bytes)", bytes.len()),
            "bucket": cat(name).bucket, "key": rest, "expect": how,
            "plaintext": file, "error": null,
        }));
    }

    // Forgeries beside them, each under DSSE-KMS as the bucket requires.
    let (db, api) = (cat("db"), cat("api"));
    let dsse = ServerSideEncryption::AwsKmsDsse;
    let genuine_envelope = stored_bytes(&moto, &db.bucket, "app/creds.json").await;
    let forged = forge(
        &moto,
        &api.key_arn,
        &api.key_arn,
        &db.bucket,
        "db",
        "app/forged.json",
    )
    .await;
    put_raw(
        &moto,
        &db.bucket,
        "app/forged.json",
        forged,
        dsse.clone(),
        &db.key_arn,
    )
    .await;
    let lying = forge(
        &moto,
        &api.key_arn,
        &db.key_arn,
        &db.bucket,
        "db",
        "app/lying.json",
    )
    .await;
    put_raw(
        &moto,
        &db.bucket,
        "app/lying.json",
        lying,
        dsse.clone(),
        &db.key_arn,
    )
    .await;
    put_raw(
        &moto,
        &db.bucket,
        "app/copy.json",
        genuine_envelope.clone(),
        dsse.clone(),
        &db.key_arn,
    )
    .await;
    put_raw(
        &moto,
        &db.bucket,
        "app/sse-kms.json",
        genuine_envelope.clone(),
        ServerSideEncryption::AwsKms,
        &db.key_arn,
    )
    .await;
    put_raw(
        &moto,
        &db.bucket,
        "app/dsse-api.json",
        genuine_envelope,
        dsse,
        &api.key_arn,
    )
    .await;
    let refused = |name: &str, bucket: &str, key: &str, expect: Value, error: &str| json!({"name": name, "bucket": bucket, "key": key, "expect": expect, "plaintext": null, "error": error});
    let mut cases = genuine.clone();
    cases.extend([
        refused(
            "an envelope under another category's key, at this location",
            &db.bucket,
            "app/forged.json",
            expect(db),
            "WrongKey",
        ),
        refused(
            "an envelope naming this category's key, its data key wrapped under another's",
            &db.bucket,
            "app/lying.json",
            expect(db),
            "KmsRefused",
        ),
        refused(
            "a genuine envelope copied to another key",
            &db.bucket,
            "app/copy.json",
            expect(db),
            "Misplaced",
        ),
        refused(
            "a genuine envelope re-put under SSE-KMS",
            &db.bucket,
            "app/sse-kms.json",
            expect(db),
            "NotDsse",
        ),
        refused(
            "a genuine envelope re-put under DSSE with another category's key",
            &db.bucket,
            "app/dsse-api.json",
            expect(db),
            "WrongKey",
        ),
        refused(
            "an api secret read as a db one",
            &api.bucket,
            "app/token.json",
            expect(db),
            "WrongKey",
        ),
        refused(
            "a missing object",
            &db.bucket,
            "app/nope.json",
            expect(db),
            "Storage",
        ),
    ]);

    // The readers speak to moto through a proxy that can rewrite its answers.
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let spec = |cases: Vec<Value>| json!({"endpoint": proxy.endpoint, "region": "us-east-1", "mapping": mapping, "cases": cases});
    let creds = genuine[0..]
        .iter()
        .find(|c| c["key"] == "app/creds.json")
        .unwrap()
        .clone();
    let with_error = |case: &Value, error: &str| {
        let mut c = case.clone();
        c["plaintext"] = Value::Null;
        c["error"] = json!(error);
        c
    };
    run_readers(work.path(), "as-is", &spec(cases));

    // S3 names no key, in the GET nor in the HEAD: the key cannot be proved, refused.
    proxy.report_sse(SseReport::DropKey, &[]);
    run_readers(
        work.path(),
        "no-key",
        &spec(vec![with_error(&creds, "KeyNotReported")]),
    );
    // Only the GET leaves it out: one HEAD of the same object names it, and that is enough.
    proxy.report_sse(SseReport::DropKey, &[hyper::Method::GET]);
    run_readers(work.path(), "key-in-head-only", &spec(vec![creds.clone()]));
    proxy.report_sse(SseReport::AsIs, &[]);

    // A multipart body cut off mid-way, and a disabled category key.
    proxy.truncate_next_gets("secrets-db/app/big.bin", 1000);
    proxy.disable_kms_key(&cat("tls").key_arn);
    let big = genuine.iter().find(|c| c["key"] == "app/big.bin").unwrap();
    let tls = genuine.iter().find(|c| c["key"] == "shared/a.pem").unwrap();
    run_readers(
        work.path(),
        "faults",
        &spec(vec![
            with_error(big, "Storage"),
            with_error(tls, "KmsRefused"),
        ]),
    );
}
