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

/// The field names serde asks for when it deserializes `T`, found by a deserializer that
/// records the request and stops: what a config table accepts, straight from the types.
fn accepted_keys<T: serde::de::DeserializeOwned>() -> Vec<&'static str> {
    use serde::de::{Error, Visitor};
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Stop {}
    impl Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    struct Probe<'a>(&'a mut Vec<&'static str>);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.extend(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut keys = Vec::new();
    let _ = T::deserialize(Probe(&mut keys));
    keys
}

/// dualseal.toml(5) is rendered from the commented example (examples/gen_docs.rs): every key
/// the config accepts must be in it, set or commented out, under its own table.
#[test]
fn the_example_config_shows_every_key_the_config_accepts() {
    use dualseal::config::*;
    let tables: Vec<(&str, Vec<&str>)> = vec![
        ("aws", accepted_keys::<AwsConfig>()),
        ("source", accepted_keys::<SourceConfig>()),
        ("daemon", accepted_keys::<DaemonConfig>()),
        ("category", accepted_keys::<CategoryConfig>()),
        ("access", accepted_keys::<dualseal::access::AccessConfig>()),
        ("metrics", accepted_keys::<MetricsConfig>()),
        ("provision", accepted_keys::<ProvisionConfig>()),
        ("tcp", accepted_keys::<TcpConfig>()),
        ("decommission", accepted_keys::<DecommissionConfig>()),
        ("pricing", accepted_keys::<Pricing>()),
    ];
    let mut top = accepted_keys::<Config>();
    let mut listed: Vec<&str> = tables.iter().map(|(t, _)| *t).collect();
    top.sort_unstable();
    listed.sort_unstable();
    assert_eq!(
        top, listed,
        "a new config table: add it to this test and the example"
    );
    for (table, keys) in &tables {
        assert!(!keys.is_empty(), "[{table}]: no keys found");
    }

    let example = include_str!("../config/dualseal.example.toml");
    let mut shown = std::collections::BTreeSet::new();
    let mut table = String::new();
    for line in example.lines() {
        let line = line.trim_start_matches('#').trim();
        if line.starts_with('[') {
            table = line.trim_matches(['[', ']']).to_string();
        } else if let Some((key, _)) = line.split_once('=') {
            shown.insert(format!("{table}.{}", key.trim()));
        }
    }
    let missing: Vec<String> = tables
        .iter()
        .flat_map(|(t, keys)| keys.iter().map(move |k| format!("{t}.{k}")))
        .filter(|k| !shown.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "config/dualseal.example.toml does not show {missing:?}: add each, commented, with what it does"
    );
}

#[test]
fn a_pod_ordinal_from_the_environment_picks_the_shard() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/dualseal.example.toml");
    let run = |ordinal: &str, count: &str| {
        Command::new(env!("CARGO_BIN_EXE_dualseald"))
            .args(["validate", "--config", example])
            .env("DUALSEAL_SHARD_ORDINAL", ordinal)
            .env("DUALSEAL_SHARD_COUNT", count)
            .output()
            .expect("run")
    };
    let out = run("0", "3");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("shard 1/3"),
        "{out:?}"
    );
    let out = run("3", "3");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("DUALSEAL_SHARD_ORDINAL"));
}
