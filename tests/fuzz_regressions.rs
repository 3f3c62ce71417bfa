//! Replays inputs that once broke (or were built to break) the parsers of untrusted bytes —
//! envelopes read back from S3, config files, journal records — through the same calls as the
//! fuzz targets (`fuzz/`): each must give an error, never a panic. Crashes `scripts/fuzz.sh`
//! finds go into tests/fixtures/fuzz-regressions/<target>/.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;

use dualseal::envelope::{self, DataKey, EncryptionContext};
use dualseal::journal::records::{self, AuditRecord};
use dualseal::model::{JobRecord, ObjectRecord};

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

/// The multi-segment golden envelope, with the data key and context it opens under.
fn golden() -> (Vec<u8>, DataKey, EncryptionContext) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/envelope-v1-multi-segment.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let key =
        DataKey::from_slice(&hex::decode(v["data_key_hex"].as_str().unwrap()).unwrap()).unwrap();
    let mut ctx = EncryptionContext::new();
    for (k, val) in v["context"].as_object().unwrap() {
        ctx = ctx.with(k, val.as_str().unwrap());
    }
    (
        hex::decode(v["envelope_hex"].as_str().unwrap()).unwrap(),
        key,
        ctx,
    )
}

#[test]
fn damaged_envelopes_are_errors() {
    // Opened with the fixture's own data key and context: a damaged case must fail in the
    // envelope's own checks (header, commitment, segment authentication, final flag), not
    // merely because the key is wrong.
    let (good, key, ctx) = golden();
    assert!(
        envelope::open(&key, &good, Some(&ctx)).is_ok(),
        "the pristine golden envelope must open, or this test proves nothing"
    );
    let mut cases = saved("envelope");
    // Every truncation, every header byte set to 0x00 and 0xff (lengths, sizes, versions), and
    // one bit flipped in every body byte (each segment's ciphertext and tag).
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
    for i in hlen..good.len() {
        let mut c = good.clone();
        c[i] ^= 0x01;
        cases.push(c);
    }
    cases.retain(|c| *c != good);
    let mut opened = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let _ = envelope::parse_header(c);
        if envelope::open(&key, c, Some(&ctx)).is_ok() || envelope::open(&key, c, None).is_ok() {
            opened.push(i);
        }
    }
    assert!(
        opened.is_empty(),
        "{} of {} damaged envelopes opened under the right key (cases {opened:?})",
        opened.len(),
        cases.len()
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
