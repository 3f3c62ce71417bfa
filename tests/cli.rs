//! The binaries' edges: config validation exit codes and messages, and the CLI's behaviour
//! when no daemon is there. No AWS is touched.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

#[test]
fn validate_reports_every_problem_and_exits_78() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        r#"
[source]
bucket = "master-secrets"
[daemon]
concurrency = 0
[[category]]
name = "db"
bucket = "master-secrets"
kms_key = ""
prefixes = ["db/"]
"#,
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_dualseald"))
        .args(["validate", "--config"])
        .arg(&cfg)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "daemon.concurrency",
        "kms_key",
        "must differ from source.bucket",
        "3 problem(s)",
    ] {
        assert!(err.contains(needle), "missing {needle:?}: {err}");
    }
}

#[test]
fn validate_accepts_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/dualseal.example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_dualseald"))
        .args(["validate", "--config", example])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (4 categories"));
}

#[test]
fn missing_config_file_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_dualseald"))
        .args(["validate", "--config", "/nonexistent/dualseal.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dualseal.toml"));
}

#[test]
fn ctl_without_daemon_says_what_to_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("none.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_dualsealctl"))
        .arg("--socket")
        .arg(&sock)
        .arg("status")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is the daemon running"), "{err}");
}
