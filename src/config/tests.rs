use std::path::Path;

use super::validate::kms_key_ref_ok;
use super::*;

#[test]
fn paths_and_key_references_are_checked_before_anything_runs() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let text = format!(
        "[source]\nbucket = \"master\"\n[daemon]\njournal_path = \"{}/sub\"\ncontrol_socket = \"relative.sock\"\n[[category]]\nname = \"db\"\nbucket = \"secrets-db\"\nkms_key = \"not-a-key\"\nprefixes = [\"db/\"]\n",
        file.path().display()
    );
    let err = Config::from_toml(&text, Path::new("t.toml"))
        .unwrap_err()
        .to_string();
    for needle in ["is a file", "control_socket", "not a KMS key reference"] {
        assert!(err.contains(needle), "{needle:?} missing from {err}");
    }
    for ok in [
        "alias/dualseal-db",
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "mrk-1234abcd12ab34cd56ef1234567890ab",
        "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/secrets",
    ] {
        assert!(kms_key_ref_ok(ok), "{ok}");
    }
    for bad in ["not-a-key", "alias/", "arn:aws:s3:::bucket", "key/1234"] {
        assert!(!kms_key_ref_ok(bad), "{bad}");
    }
}

/// The problems of a config that must be refused as invalid.
fn invalid(text: &str) -> Vec<String> {
    let err = Config::from_toml(text, Path::new("t.toml")).unwrap_err();
    let ConfigError::Invalid { problems, .. } = err else {
        panic!("expected Invalid, got {err}");
    };
    problems
}

#[test]
fn parse_level_problems_are_reported_together_with_the_others() {
    let text = r#"
        [source]
        bucket = "master"
        [daemon]
        concurency = 4
        log_format = "yaml"
        journal_path = "relative/journal"
        [[category]]
        name = "db"
        bucket = "secrets-db"
        kms_key = "alias/x"
        prefixes = ["db/"]
    "#;
    let problems = invalid(text);
    let all = problems.join("\n");
    for needle in [
        "line 5: unknown field `concurency`",
        "line 6:",
        "yaml",
        "give an absolute path",
    ] {
        assert!(all.contains(needle), "{needle:?} missing from:\n{all}");
    }
    assert_eq!(problems.len(), 3, "{all}");
    let fixed = text
        .replace("concurency = 4", "")
        .replace("\"yaml\"", "\"json\"");
    let file = tempfile::NamedTempFile::new().unwrap();
    let at_file = fixed.replace("relative/journal", &file.path().display().to_string());
    let err = Config::from_toml(&at_file, Path::new("t.toml")).unwrap_err();
    assert!(err.to_string().contains("this is a file"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
        [source]
        bucket = "Master_Secrets"
        [daemon]
        concurrency = 0
        [[category]]
        name = "db"
        bucket = "Master_Secrets"
        kms_key = ""
        [[category]]
        name = "db"
        bucket = "secrets-db"
        kms_key = "alias/x"
        globs = ["[unclosed"]
    "#;
    let problems = invalid(text);
    let all = problems.join("\n");
    for needle in [
        "source.bucket",
        "daemon.concurrency",
        "kms_key",
        "duplicate category name",
        "nothing can match",
        "must differ from source.bucket",
        "[unclosed",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn operating_settings_are_checked() {
    let base = "[source]\nbucket = \"master\"\n[[category]]\nname = \"db\"\nbucket = \"secrets-db\"\nkms_key = \"alias/db\"\nprefixes = [\"db/\"]\n";
    let bad = format!(
        "{base}[daemon]\nfailure_threshold_percent = 0\nlog_format = \"json\"\njournal_commit_window_ms = 1000\n[metrics]\nlisten = \"0.0.0.0:9464\"\n"
    );
    let err = Config::from_toml(&bad, Path::new("t.toml")).unwrap_err();
    let all = err.to_string();
    assert!(all.contains("failure_threshold_percent"), "{all}");
    assert!(
        all.contains("journal_commit_window_ms = 1000: must be at most 100"),
        "{all}"
    );
    assert!(
        all.contains("metrics.listen") && all.contains("allow_remote"),
        "{all}"
    );
    let ok = format!("{base}[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true\n");
    let cfg = Config::from_toml(&ok, Path::new("t.toml")).unwrap();
    assert_eq!(
        cfg.daemon.kms_requests_per_sec,
        DEFAULT_KMS_REQUESTS_PER_SEC
    );
    assert_eq!(cfg.daemon.log_format, LogFormat::Text);
    assert_eq!(cfg.daemon.journal_commit_window_ms, 2);
    assert!(Config::from_toml(
        &format!("{base}[daemon]\nlog_format = \"xml\"\n"),
        Path::new("t.toml")
    )
    .is_err());
}

#[test]
fn archive_settings_default_and_are_checked() {
    let base = "[source]\nbucket = \"master\"\n[[category]]\nname = \"db\"\nbucket = \"secrets-db\"\nprefixes = [\"db/\"]\n";
    let cfg = Config::from_toml(base, Path::new("t.toml")).unwrap();
    assert_eq!(cfg.decommission.archive_retention_days, 365);
    assert_eq!(
        cfg.decommission.archive_retention_mode,
        RetentionMode::Governance
    );
    assert!(cfg.decommission.archive_bucket.is_none());
    let bad = format!(
        "{base}[decommission]\narchive_bucket = \"secrets-db\"\narchive_retention_days = 0\narchive_retention_mode = \"compliance\"\n"
    );
    let all = Config::from_toml(&bad, Path::new("t.toml"))
        .unwrap_err()
        .to_string();
    assert!(all.contains("not the source or a category bucket"), "{all}");
    assert!(all.contains("archive_retention_days = 0"), "{all}");
    let wrong_mode = format!("{base}[decommission]\narchive_retention_mode = \"forever\"\n");
    assert!(Config::from_toml(&wrong_mode, Path::new("t.toml")).is_err());
}

#[test]
fn each_service_can_have_its_own_endpoint() {
    let both = AwsConfig {
        endpoint_url: Some("http://127.0.0.1:5000".into()),
        ..Default::default()
    };
    assert_eq!(both.s3_endpoint(), Some("http://127.0.0.1:5000"));
    assert_eq!(both.kms_endpoint(), Some("http://127.0.0.1:5000"));
    assert!(both.path_style());
    let split = AwsConfig {
        endpoint_url: Some("http://127.0.0.1:5000".into()),
        s3_endpoint_url: Some("http://127.0.0.1:9000".into()),
        ..Default::default()
    };
    assert_eq!(split.s3_endpoint(), Some("http://127.0.0.1:9000"));
    assert_eq!(split.kms_endpoint(), Some("http://127.0.0.1:5000"));
    let aws = AwsConfig::default();
    assert_eq!(
        (aws.s3_endpoint(), aws.kms_endpoint(), aws.path_style()),
        (None, None, false)
    );
}

#[test]
fn a_value_of_the_wrong_type_names_its_setting_and_what_it_takes() {
    let text = r#"
        [source]
        bucket = "master"
        [daemon]
        kms_requests_per_sec = -5
        concurrency = "64"
        [[category]]
        name = "db"
        bucket = "secrets-db"
        kms_key = "alias/x"
        prefixes = ["db/"]
    "#;
    let all = invalid(text).join("\n");
    for needle in [
        "line 5: daemon.kms_requests_per_sec: invalid value: integer `-5`, expected a whole number from 0 to 4294967295",
        "line 6: daemon.concurrency: invalid type: string \"64\", expected a whole number, not negative (the setting's own range is checked next)",
    ] {
        assert!(all.contains(needle), "{needle:?} missing from:\n{all}");
    }
    assert!(!all.contains("u32") && !all.contains("usize"), "{all}");
}

#[test]
fn unknown_fields_are_rejected() {
    let text = "[source]\nbucket = \"abc\"\nbuckt = 1\n";
    let err = Config::from_toml(text, Path::new("t.toml")).unwrap_err();
    assert!(err.to_string().contains("buckt"), "{err}");
}

#[test]
fn shipped_examples_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen > 0, "no example configs found");
}

#[test]
fn a_log_filter_region_or_price_that_cannot_work_is_named() {
    let text = "[source]\nbucket = \"master\"\n[aws]\nregion = \"\"\n[daemon]\nlog_filter = \"info,,=[[\"\n[pricing]\ns3_get_per_1000 = -1.0\n[[category]]\nname = \"db\"\nbucket = \"secrets-db\"\nkms_key = \"alias/db\"\nprefixes = [\"db/\"]\n";
    let err = Config::from_toml(text, Path::new("t.toml"))
        .unwrap_err()
        .to_string();
    for needle in [
        "daemon.log_filter",
        "aws.region",
        "pricing.s3_get_per_1000 = -1",
        "3 problem(s)",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from {err}");
    }
}
