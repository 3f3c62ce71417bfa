//! Golden envelopes in `tests/fixtures/` must decrypt forever, and sealing with the same inputs
//! must reproduce them byte for byte. `FORMAT.md` carries the same vectors.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use dualseal::envelope::{self, DataKey, EncryptionContext, HeaderParams};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Vector {
    description: String,
    data_key_hex: String,
    message_id_hex: String,
    nonce_prefix_hex: String,
    kms_key_id: String,
    wrapped_key_hex: String,
    context: EncryptionContext,
    segment_size: u32,
    /// A version-2 envelope: the data key is shared, KMS binds it without `dualseal:key`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    shared_data_key: bool,
    plaintext_hex: String,
    envelope_hex: String,
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

const NAMES: [&str; 6] = [
    "envelope-v1-small.json",
    "envelope-v1-multi-segment.json",
    "envelope-v2-shared-key.json",
    "envelope-v1-empty.json",
    "envelope-v1-exact-segments.json",
    "envelope-v1-segment-plus-one.json",
];

/// The vectors FORMAT.md prints in full (the others are listed there by file name).
const IN_FORMAT_MD: usize = 3;

fn load(name: &str) -> Vector {
    let text = std::fs::read_to_string(fixtures_dir().join(name)).expect("fixture");
    serde_json::from_str(&text).expect("fixture json")
}

fn seal_vector(v: &Vector) -> Vec<u8> {
    let key = DataKey::from_slice(&hex::decode(&v.data_key_hex).expect("hex")).expect("key");
    envelope::seal_with_randomness(
        &key,
        HeaderParams {
            kms_key_id: v.kms_key_id.clone(),
            wrapped_key: hex::decode(&v.wrapped_key_hex).expect("hex"),
            context: v.context.clone(),
            segment_size: v.segment_size,
            shared_data_key: v.shared_data_key,
        },
        &hex::decode(&v.plaintext_hex).expect("hex"),
        hex::decode(&v.message_id_hex)
            .expect("hex")
            .try_into()
            .expect("32 bytes"),
        hex::decode(&v.nonce_prefix_hex)
            .expect("hex")
            .try_into()
            .expect("19 bytes"),
    )
    .expect("seal")
}

#[test]
fn golden_envelopes_open_to_their_plaintext() {
    for name in NAMES {
        let v = load(name);
        let key = DataKey::from_slice(&hex::decode(&v.data_key_hex).expect("hex")).expect("key");
        let env = hex::decode(&v.envelope_hex).expect("hex");
        let plain = envelope::open(&key, &env, Some(&v.context)).expect(name);
        assert_eq!(hex::encode(&*plain), v.plaintext_hex, "{name}");
    }
}

#[test]
fn sealing_reproduces_golden_bytes() {
    for name in NAMES {
        let v = load(name);
        assert_eq!(
            hex::encode(seal_vector(&v)),
            v.envelope_hex,
            "{name}: format drifted"
        );
    }
}

#[test]
fn format_md_carries_the_same_vectors() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/FORMAT.md"))
        .expect("FORMAT.md");
    let flat: String = doc.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    for name in &NAMES[..IN_FORMAT_MD] {
        let v = load(name);
        assert!(
            flat.contains(&v.envelope_hex),
            "FORMAT.md lacks the envelope of {name}"
        );
    }
}

/// Writes the fixtures. Run once, on purpose: `cargo test --test envelope_golden -- --ignored`.
/// Never rerun to "fix" a failing golden test: a changed envelope is a format change.
#[test]
#[ignore]
fn regenerate_fixtures() {
    let ctx = |k: &str| {
        EncryptionContext::new()
            .with("dualseal:bucket", "secrets-db")
            .with("dualseal:category", "db")
            .with("dualseal:key", k)
    };
    let specs = [
        (
            NAMES[0],
            "one segment: a small DB credential",
            br#"{"user":"app","password":"correct horse battery staple"}"#.to_vec(),
            65536u32,
            ctx("payments/credentials.json"),
            false,
        ),
        (
            NAMES[1],
            "three segments of 64 bytes, the last one short",
            (0u8..150).collect::<Vec<u8>>(),
            64,
            ctx("payments/multi.bin"),
            false,
        ),
        (
            NAMES[2],
            "version 2: a data key shared by several objects; KMS context without dualseal:key",
            br#"{"token":"shared-key example"}"#.to_vec(),
            65536u32,
            ctx("payments/shared.json"),
            true,
        ),
        (
            NAMES[3],
            "an empty plaintext: one segment holding only its tag",
            Vec::new(),
            16,
            ctx("payments/empty"),
            false,
        ),
        (
            NAMES[4],
            "exactly three segments of 16 bytes: three segments, the third full and last (no empty fourth)",
            (0u8..48).collect::<Vec<u8>>(),
            16,
            ctx("payments/exact.bin"),
            false,
        ),
        (
            NAMES[5],
            "one byte more than a segment: a full segment and a last one of one byte",
            (0u8..17).collect::<Vec<u8>>(),
            16,
            ctx("payments/plus-one.bin"),
            false,
        ),
    ];
    for (i, (name, description, plaintext, segment_size, context, shared)) in
        specs.into_iter().enumerate()
    {
        // Committed vectors are never rewritten: only missing ones are written.
        if fixtures_dir().join(name).exists() {
            continue;
        }
        let fill = |n: usize, b: u8| hex::encode(vec![b.wrapping_add(i as u8); n]);
        let mut v = Vector {
            description: description.into(),
            data_key_hex: hex::encode(
                (0u8..32)
                    .map(|x| x.wrapping_mul(7).wrapping_add(i as u8))
                    .collect::<Vec<_>>(),
            ),
            message_id_hex: fill(32, 0xa0),
            nonce_prefix_hex: fill(19, 0x50),
            kms_key_id:
                "arn:aws:kms:us-east-1:111122223333:key/0b6b2f3e-0000-4000-8000-000000000001".into(),
            wrapped_key_hex: fill(48, 0xc0),
            context,
            segment_size,
            shared_data_key: shared,
            plaintext_hex: hex::encode(plaintext),
            envelope_hex: String::new(),
        };
        v.envelope_hex = hex::encode(seal_vector(&v));
        let text = serde_json::to_string_pretty(&v).expect("json");
        std::fs::write(fixtures_dir().join(name), text + "\n").expect("write");
    }
}

#[derive(Deserialize)]
struct Negative {
    description: String,
    refused_as: String,
    data_key_hex: String,
    envelope_hex: String,
}

/// Every envelope in `envelope-negative.json` (made by `make_negative_vectors.py` from the
/// format description alone) is refused, for the reason it names; `scripts/reference_open.py
/// --negative` checks the same file with the independent reader.
#[test]
fn negative_vectors_are_refused_for_their_reason() {
    let text = std::fs::read_to_string(fixtures_dir().join("envelope-negative.json"))
        .expect("negative vectors");
    let vectors: Vec<Negative> = serde_json::from_str(&text).expect("json");
    assert!(vectors.len() >= 12);
    for v in vectors {
        let key = DataKey::from_slice(&hex::decode(&v.data_key_hex).expect("hex")).expect("key");
        let env = hex::decode(&v.envelope_hex).expect("hex");
        let err = envelope::open(&key, &env, None).expect_err(&v.description);
        assert!(
            format!("{err:?}").starts_with(&v.refused_as),
            "{}: refused as {err:?}, expected {}",
            v.description,
            v.refused_as
        );
        // The streaming opener refuses it too.
        let mut opener = envelope::StreamOpener::new(None);
        let mut out = zeroize::Zeroizing::new(Vec::new());
        let streamed = (|| {
            opener.push(&env, &mut out)?;
            opener.start(&key, &mut out)?;
            opener.finish(&mut out)
        })();
        assert!(
            streamed.is_err(),
            "{}: the stream opener accepted it",
            v.description
        );
    }
}
