//! The control API as third parties meet it: a stock Python `grpcio` client with no channel
//! options on the Unix socket (health, reflection v1alpha, pagination, resumable audit
//! export, structured error details), the `examples/python` client driving a whole job, and
//! `dualsealctl --json` printing the same error reasons. Needs python3 with grpcio,
//! grpcio-tools, grpcio-reflection, grpcio-status and grpcio-health-checking
//! (`./scripts/test.sh` installs them).

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python")
}

fn python(gen: &Path, args: &[&str]) -> Output {
    Command::new("python3")
        .args(args)
        .env("DUALSEAL_PY_GEN", gen)
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("grpc_proxy")
        .output()
        .expect("python3")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_grpcio_and_the_python_example_drive_a_job() {
    let probe = python(
        Path::new("/nonexistent"),
        &[
            "-c",
            "import grpc, grpc_tools, grpc_reflection, grpc_status, grpc_health",
        ],
    );
    assert!(
        probe.status.success(),
        "python3 with grpcio, grpcio-tools, grpcio-reflection, grpcio-status and grpcio-health-checking is needed \
         (./scripts/test.sh installs them): {}",
        text(&probe)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let gen = dir.path().join("gen");
    let generated = Command::new(examples().join("generate.sh"))
        .arg(&gen)
        .output()
        .expect("generate.sh");
    assert!(generated.status.success(), "{}", text(&generated));

    let moto = Moto::start();
    provision(&moto).await;
    let objects = spread(40, |prefix, i| {
        (format!("{prefix}py/{i:03}"), vec![b'p'; 100 + i])
    });
    put_all(&moto, &objects).await;
    let daemon = Daemon::start(dir.path(), &config_toml(&moto, dir.path(), 4));
    let target = format!("unix:{}", daemon.socket.display());

    // The example: start, watch to the end, export the audit with a break and a resume.
    let audit_path = dir.path().join("audit.jsonl");
    let out = python(
        &gen,
        &[
            examples().join("control_client.py").to_str().unwrap(),
            &target,
            audit_path.to_str().unwrap(),
            "--interrupt-export-after",
            "5",
        ],
    );
    assert!(
        out.status.success(),
        "example client: {}\ndaemon log:\n{}",
        text(&out),
        daemon.log_text()
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(summary["state"], "JOB_STATE_SUCCEEDED", "{summary}");
    assert_eq!(summary["kind"], "JOB_KIND_MIGRATE", "{summary}");
    assert_eq!(summary["verified_objects"], 40, "{summary}");
    let job = summary["job_id"].as_u64().expect("job id");

    // The resumed export is the whole trail of the job: no gap, no duplicate.
    let mut client = daemon.client().await;
    let want: Vec<u64> = client
        .audit(job)
        .await
        .expect("audit")
        .iter()
        .map(|e| e.seq)
        .collect();
    let got: Vec<u64> = std::fs::read_to_string(&audit_path)
        .expect("audit file")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            // proto3 JSON writes 64-bit integers as strings.
            v["seq"].as_str().expect("seq").parse().expect("number")
        })
        .collect();
    assert_eq!(got, want, "the resumed export differs from the trail");
    assert!(want.len() > 40, "{} events", want.len());

    // A second job exists for pagination; then the stock-client checks.
    let second = client.start("db/", false).await.expect("second job");
    wait_job(&mut client, second.job_id).await;
    let checks = python(
        &gen,
        &[
            examples().join("stock_client_checks.py").to_str().unwrap(),
            &target,
        ],
    );
    assert!(
        checks.status.success(),
        "stock grpcio checks: {}",
        text(&checks)
    );
    let said = String::from_utf8_lossy(&checks.stdout);
    for line in [
        "ok health (no channel options)",
        "ok reflection v1alpha",
        "ok ListJobs pages and filters",
        "ok ExportAudit resumes after_seq",
        "ok errors carry ErrorInfo reasons and BadRequest fields",
    ] {
        assert!(said.contains(line), "missing {line:?}: {}", text(&checks));
    }

    // dualsealctl --json: the same reason, as JSON on stderr.
    let o = ctl(&daemon.socket, &["--json", "status", "987654"]);
    assert!(!o.status.success());
    let err: serde_json::Value =
        serde_json::from_slice(&o.stderr).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(err["error"]["code"], "NOT_FOUND", "{err}");
    assert_eq!(err["error"]["reason"], "JOB_NOT_FOUND", "{err}");
    let o = ctl(
        &daemon.socket,
        &["--json", "audit", "export", "--kind", "object_verifed"],
    );
    let err: serde_json::Value =
        serde_json::from_slice(&o.stderr).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(err["error"]["reason"], "INVALID_ARGUMENT", "{err}");
    assert_eq!(
        err["error"]["field_violations"][0]["field"], "kind",
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_by_job_kind_reports_by_migration_id_and_racing_verifications_join_one() {
    let moto = Moto::start();
    provision(&moto).await;
    let objects = spread(8, |prefix, i| (format!("{prefix}m/{i}"), vec![b'm'; 64]));
    put_all(&moto, &objects).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, port) = with_metrics(config_toml(&moto, dir.path(), 2));
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let job = client.start("", false).await.expect("start");
    wait_job(&mut client, job.job_id).await;
    let report = client.verify_and_wait(job.job_id).await.expect("verify");
    // The migration job's id names its latest verification's report.
    let by_migration = client.verify_report(job.job_id).await.expect("report");
    assert_eq!(by_migration, report);
    assert_eq!(by_migration.ok_objects, 8);

    let response = scrape(port);
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let count = |kind: &str| -> u64 {
        body.lines()
            .filter(|l| {
                l.starts_with("dualseal_objects_total{")
                    && l.contains(&format!("kind=\"{kind}\""))
                    && l.contains("state=\"verified\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    assert_eq!((count("migrate"), count("verify")), (8, 8), "{body}");

    // Racing (or retried) VerifyJob calls join one verification instead of starting several.
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let mut c = client.clone();
            let id = job.job_id;
            tokio::spawn(async move { c.verify(id).await.expect("verify").job_id })
        })
        .collect();
    let mut ids = Vec::new();
    for call in calls {
        ids.push(call.await.expect("task"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "racing VerifyJob calls started {ids:?}");
    wait_job(&mut client, ids[0]).await;
}
