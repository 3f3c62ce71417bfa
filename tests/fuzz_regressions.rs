//! Replays inputs that once broke (or were built to break) the parsers of untrusted bytes —
//! envelopes read back from S3, config files, journal records — through the same calls as the
//! fuzz targets (`fuzz/`): each must give an error, never a panic. Crashes `scripts/fuzz.sh`
//! finds go into tests/fixtures/fuzz-regressions/<target>/.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;

use dualseal::envelope::{self, DataKey, EncryptionContext};
use dualseal::journal::records::{self, AuditRecord, JobRecord, ObjectRecord};

fn saved(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz-regressions")
        .join(target);
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_file() && e.path().extension().is_none_or(|x| x != "md") {
                out.push(std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

fn golden() -> Vec<u8> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/envelope-v1-multi-segment.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    hex::decode(v["envelope_hex"].as_str().unwrap()).unwrap()
}

#[test]
fn damaged_envelopes_are_errors() {
    let good = golden();
    let mut cases = saved("envelope");
    // Every truncation, and every header byte set to 0x00 and 0xff (lengths, sizes, versions).
    for n in 0..good.len() {
        cases.push(good[..n].to_vec());
    }
    let (_, hlen) = envelope::parse_header(&good).unwrap();
    for i in 0..hlen {
        for b in [0x00, 0xff] {
            let mut c = good.clone();
            c[i] = b;
            cases.push(c);
        }
    }
    let key = DataKey::from_slice(&[7u8; 32]).unwrap();
    let ctx = EncryptionContext::new().with("dualseal:category", "db");
    let mut refused = 0;
    for c in &cases {
        let _ = envelope::parse_header(c);
        if envelope::open(&key, c, Some(&ctx)).is_err() && envelope::open(&key, c, None).is_err() {
            refused += 1;
        }
    }
    assert_eq!(
        refused,
        cases.len(),
        "a damaged envelope opened under a wrong key"
    );
}

#[test]
fn damaged_configs_are_errors() {
    let mut cases: Vec<Vec<u8>> = saved("config");
    let example =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dualseal.example.toml"))
            .unwrap();
    for n in (0..example.len()).step_by(97) {
        cases.push(example[..n].to_vec());
    }
    cases.push(b"[source]\nbucket = \"\\u0000\"\n[daemon]\nconcurrency = -1\n".to_vec());
    cases
        .push(b"[[category]]\nname = \"db\"\nglobs = [\"[\", \"{a,{b\", \"**/**/***\"]\n".to_vec());
    cases.push(b"[tcp]\nlisten = \"[::1]:99999\"\n".to_vec());
    for c in &cases {
        if let Ok(text) = std::str::from_utf8(c) {
            let _ = dualseal::config::Config::from_toml(text, Path::new("fuzz.toml"));
        }
    }
    // The complete example is the one case that must parse.
    let text = std::str::from_utf8(&example).unwrap();
    assert!(dualseal::config::Config::from_toml(text, Path::new("x.toml")).is_ok());
}

#[test]
fn damaged_journal_records_are_errors() {
    let mut cases = saved("journal_record");
    cases.extend([
        vec![],
        vec![1],
        vec![9, b'{', b'}'],
        b"\x01{\"state\":\"verified\"".to_vec(),
        b"\x01{\"state\":\"verified\",\"size\":-1}".to_vec(),
        b"\x01[1,2,3]".to_vec(),
        vec![1; 7],
    ]);
    for c in &cases {
        assert!(records::decode::<ObjectRecord>(c).is_err(), "{c:?}");
        let _ = records::decode::<JobRecord>(c);
        let _ = records::decode::<AuditRecord>(c);
        let _ = records::split_object_key(c);
    }
}
