//! No plaintext secret reaches the journal, the daemon's log (at TRACE), the audit export, the
//! completion report, the metrics or any gRPC answer: random canaries are migrated through a
//! fault storm (retries, a failed object, an unclassified one), verified, exported, and then
//! searched for raw, hex, base64 and percent-encoded.

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
        // Percent-encoding of every byte (what a URL or header encoder would write at most).
        canary
            .iter()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
            .into_bytes(),
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

    // Through a fault storm (retries and their error messages) with one object that can never
    // be read (a failed object and its reason), at TRACE, with metrics on.
    let proxy = common::proxy::FaultProxy::start(&moto.endpoint).await;
    proxy.set_faults(common::proxy::Faults::storm());
    proxy.forbid_get("master-secrets/db/app/secret-0.env");
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, metrics_port) = with_metrics(config_via(&proxy.endpoint, dir.path(), 4, 8));
    let mut daemon = Daemon::start_with_env(dir.path(), &config, &[("DUALSEAL_LOG", "trace")]);
    let mut client = daemon.client().await;
    let job = loop {
        // The storm may hit the start's own preflight: an operator tries again.
        if let Ok(j) = client.start("", false).await {
            break j;
        }
    };
    let done = wait_job(&mut client, job.job_id).await;
    assert_eq!(
        done.state,
        pb::JobState::CompletedWithFailures as i32,
        "{done:?}"
    );
    assert_eq!(done.failed_objects, 1);
    assert!(proxy.injected() > 0, "the storm injected nothing");
    proxy.set_faults(common::proxy::Faults::default());
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
    // Both export formats, the completion report, the failures and the status, as operators
    // and auditors receive them, through the real CLI; and the metrics.
    let mut exports = Vec::new();
    let job_arg = job.job_id.to_string();
    for args in [
        vec!["audit", "export", "--format", "jsonl"],
        vec!["audit", "export", "--format", "csv"],
        vec!["report", job_arg.as_str()],
        vec!["failures", job_arg.as_str()],
        vec!["--json", "status", job_arg.as_str()],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dualsealctl"))
            .arg("--socket")
            .arg(&daemon.socket)
            .args(&args)
            .output()
            .expect("dualsealctl");
        assert!(out.status.success(), "{args:?}");
        assert!(!out.stdout.is_empty(), "{args:?}");
        exports.push((format!("dualsealctl {}", args.join(" ")), out.stdout));
    }
    let mut scrape = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).expect("metrics");
    std::io::Write::write_all(&mut scrape, b"GET /metrics HTTP/1.0\r\n\r\n").expect("GET");
    let mut metrics = Vec::new();
    std::io::Read::read_to_end(&mut scrape, &mut metrics).expect("metrics");
    assert!(contains(&metrics, b"dualseal_objects_total"));
    exports.push(("metrics".into(), metrics));
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
    // The log really is verbose (TRACE) and really mentions the objects, so a clean result
    // means something.
    let log = &haystacks[2].1;
    assert!(contains(log, b"TRACE"), "daemon log is not at trace level");
    assert!(
        contains(log, b"secret-3.env"),
        "the log never names an object"
    );
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
