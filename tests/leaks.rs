//! No plaintext secret reaches the journal, the daemon's log or the audit export: random
//! canaries are migrated (and left unclassified), then searched for raw, hex and base64.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use common::*;
use dualseal::api::pb;
use rand::Rng;

/// Substrings that betray `canary` in any of the encodings we look for. For base64 the canary
/// can start at any of three alignments inside a larger encoded body; for each, only the
/// characters fully determined by the canary are kept.
fn needles(canary: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![
        canary.to_vec(),
        hex::encode(canary).into_bytes(),
        hex::encode_upper(canary).into_bytes(),
    ];
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ] {
        for pad in 0..3usize {
            let mut buf = vec![0u8; pad];
            buf.extend_from_slice(canary);
            let enc = engine.encode(&buf).into_bytes();
            let skip = (pad * 4).div_ceil(3);
            out.push(enc[skip..enc.len() - 4].to_vec());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_never_reach_journal_logs_or_audit() {
    let moto = Moto::start();
    provision(&moto).await;
    let mut rng = rand::thread_rng();
    let mut canaries = Vec::new();
    let mut objects = BTreeMap::new();
    for (i, (_, prefix)) in CATEGORY_PREFIXES.iter().cycle().take(24).enumerate() {
        let canary = format!("CANARY-{:032x}", rng.gen::<u128>()).into_bytes();
        let mut body = b"password=".to_vec();
        body.extend_from_slice(&canary);
        body.extend_from_slice(b"\n");
        canaries.push(canary);
        objects.insert(format!("{prefix}app/secret-{i}.env"), body);
    }
    // A canary in an object no category claims: reported by key, never by content.
    let unowned = format!("CANARY-{:032x}", rng.gen::<u128>()).into_bytes();
    objects.insert("unowned/x.env".into(), unowned.clone());
    canaries.push(unowned);
    put_all(&moto, &objects).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::start(dir.path(), &config_toml(&moto, dir.path(), 4));
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start");
    let done = wait_job(&mut client, job.job_id).await;
    assert_eq!(done.state, pb::JobState::Succeeded as i32);
    client.verify_and_wait(job.job_id).await.expect("verify");
    let audit = client.audit(0).await.expect("audit");
    let audit_json: Vec<u8> = audit
        .iter()
        .flat_map(|e| serde_json::to_vec(e).expect("json"))
        .collect();
    let objects_dump: Vec<u8> = client
        .objects(job.job_id, pb::ObjectState::Unspecified)
        .await
        .expect("objects")
        .iter()
        .flat_map(|o| serde_json::to_vec(o).expect("json"))
        .collect();
    // Both export formats, as an auditor receives them, through the real CLI.
    let mut exports = Vec::new();
    for fmt in ["jsonl", "csv"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dualsealctl"))
            .arg("--socket")
            .arg(&daemon.socket)
            .args(["audit", "export", "--format", fmt])
            .output()
            .expect("dualsealctl");
        assert!(out.status.success());
        assert!(!out.stdout.is_empty());
        exports.push((format!("audit export ({fmt})"), out.stdout));
    }
    assert_eq!(daemon.stop(), Some(0));

    let mut haystacks: Vec<(String, Vec<u8>)> = vec![
        ("audit export".into(), audit_json),
        ("ListObjects".into(), objects_dump),
        (
            "daemon log".into(),
            std::fs::read(&daemon.log).expect("log"),
        ),
    ];
    haystacks.extend(exports);
    let mut files = Vec::new();
    files_under(&dir.path().join("journal"), &mut files);
    assert!(!files.is_empty(), "journal directory is empty");
    for f in files {
        haystacks.push((f.display().to_string(), std::fs::read(&f).expect("read")));
    }
    // The log really is verbose (debug) and really mentions the objects, so a clean result
    // means something.
    let log = &haystacks[2].1;
    assert!(contains(log, b"DEBUG"), "daemon log is not at debug level");
    // Positive control: the search finds each encoding of a canary when it is there.
    for n in needles(&canaries[0]) {
        let mut planted = b"xx".to_vec();
        planted.extend_from_slice(&n);
        assert!(contains(&planted, &n));
    }
    let encoded =
        base64::engine::general_purpose::STANDARD.encode([b"ab".as_slice(), &canaries[0]].concat());
    assert!(needles(&canaries[0])
        .iter()
        .any(|n| contains(encoded.as_bytes(), n)));

    for canary in &canaries {
        for n in needles(canary) {
            for (name, hay) in &haystacks {
                assert!(
                    !contains(hay, &n),
                    "canary {} found in {name}",
                    String::from_utf8_lossy(canary)
                );
            }
        }
    }
}
