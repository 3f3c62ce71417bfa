//! dualsealctl driven as an operator would: spawned processes against the real daemon's socket
//! (and moto), checking what they print and how they exit. Also the daemon's Prometheus
//! endpoint and its JSON log lines.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::process::Output;

use common::*;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_session_with_dualsealctl() {
    let moto = Moto::start();
    provision(&moto).await;
    let objects = spread(120, |prefix, i| {
        (format!("{prefix}ctl/{i:03}"), vec![b'k'; 200 + i])
    });
    put_all(&moto, &objects).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, metrics_port) = with_metrics(
        config_toml(&moto, dir.path(), 2)
            .replace("[daemon]\n", "[daemon]\nlog_format = \"json\"\n"),
    );
    let daemon = Daemon::start(dir.path(), &config);
    let sock = daemon.socket.clone();

    // A dry run writes nothing and checks the categories.
    let dry = ok(
        ctl(&sock, &["start", "--dry-run", "--only-category", "db"]),
        "dry run",
    );
    assert!(
        dry.contains("dry run") && dry.contains("30 objects"),
        "{dry}"
    );
    assert!(
        list_keys(&moto, "secrets-db").await.is_empty(),
        "a dry run wrote"
    );

    let out = ok(
        ctl(
            &sock,
            &["start", "--objects-per-sec", "15", "--priority", "5"],
        ),
        "start",
    );
    assert!(out.contains("started job 1 (running)"), "{out}");
    let out = ok(ctl(&sock, &["pause", "1"]), "pause");
    assert!(out.contains("job 1  paused"), "{out}");
    assert!(out.contains("objects 15/s"), "the limits show: {out}");

    let json = ok(ctl(&sock, &["--json", "status"]), "status --json");
    let jobs: serde_json::Value = serde_json::from_str(&json).expect("status --json is JSON");
    assert_eq!(jobs[0]["state"], "JOB_STATE_PAUSED", "{json}");
    assert_eq!(jobs[0]["options"]["priority"], 5, "{json}");
    let table = ok(ctl(&sock, &["status"]), "status");
    assert!(table.starts_with(" JOB  KIND"), "{table}");
    assert!(table.contains("paused"), "{table}");

    let out = ok(ctl(&sock, &["resume", "1"]), "resume");
    assert!(out.contains("job 1  running"), "{out}");
    let out = ok(
        ctl(
            &sock,
            &["limit", "1", "--objects-per-sec", "0", "--concurrency", "4"],
        ),
        "limit",
    );
    assert!(
        out.contains("concurrency 4") && out.contains("objects unlimited"),
        "{out}"
    );

    // Not a terminal: plain lines, then the summary table; exit 0 for a succeeded job.
    let watch = ctl(&sock, &["watch", "1"]);
    let w = ok(watch, "watch");
    assert!(
        w.contains("job 1 ended succeeded: 120 of 120 objects verified"),
        "{w}"
    );
    for cat in ["db", "api", "tls", "misc"] {
        assert!(
            w.lines()
                .any(|l| l.trim_start().starts_with(cat) && l.contains("30")),
            "no summary row for {cat}: {w}"
        );
    }

    let report = dir.path().join("report.csv");
    ok(
        ctl(
            &sock,
            &["report", "1", "--output", report.to_str().expect("utf-8")],
        ),
        "report",
    );
    let mut rows = csv::Reader::from_path(&report).expect("csv");
    let headers = rows.headers().expect("headers").clone();
    assert_eq!(&headers[1], "source_key");
    assert_eq!(&headers[9], "error_code");
    let rows: Vec<_> = rows.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), objects.len());
    assert!(rows.iter().all(|r| &r[6] == "verified"));
    let failures = ctl(&sock, &["failures", "1"]);
    assert!(String::from_utf8_lossy(&failures.stderr).contains("0 failed object(s)"));

    // Impossible transitions exit non-zero and say why.
    let bad = ctl(&sock, &["pause", "1"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("succeeded"), "{err}");
    let unknown = ctl(&sock, &["watch", "99"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("job 99 does not exist"));

    // Prometheus: objects by state and category, requests by operation and outcome.
    let m = scrape(metrics_port);
    assert!(m.starts_with("HTTP/1.") && m.contains(" 200 "), "{m}");
    assert!(
        m.contains(
            "dualseal_objects_total{kind=\"migrate\",category=\"db\",state=\"verified\"} 30"
        ),
        "{m}"
    );
    assert!(m.contains("dualseal_aws_requests_total{service=\"s3\",operation=\"PutObject\",outcome=\"ok\"} 120"), "{m}");
    assert!(m.contains("dualseal_aws_requests_total{service=\"kms\",operation=\"GenerateDataKey\""));
    assert!(m.contains("dualseal_aws_request_duration_seconds"));

    // JSON logs: one object per line, with the job as a field.
    let log = daemon.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    assert!(lines.len() > 10, "{log}");
    assert!(lines
        .iter()
        .any(|l| l["job"] == 1 && l["message"] == "job finished"));
}
