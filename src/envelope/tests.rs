use super::*;
use proptest::prelude::*;

/// Header parameters of a made-up object (also used by `stream`'s tests).
pub(super) fn params(segment_size: u32) -> HeaderParams {
    HeaderParams {
        kms_key_id: "arn:aws:kms:us-east-1:123456789012:key/test".into(),
        wrapped_key: vec![7u8; 40],
        context: EncryptionContext::new()
            .with("dualseal:category", "db")
            .with("dualseal:bucket", "secrets-db")
            .with("dualseal:key", "payments/x.json"),
        segment_size,
        shared_data_key: false,
    }
}

#[test]
fn opens_to_compares_segment_by_segment_with_the_whole_plaintext() {
    let key = DataKey::from_slice(&[3u8; 32]).unwrap();
    let p = params(16);
    let plain: Vec<u8> = (0..100u8).collect();
    let sealed = seal(&key, p.clone(), &plain).unwrap();
    let ctx = Some(&p.context);
    assert!(opens_to(&key, &sealed, ctx, Some(&plain)).unwrap());
    assert!(opens_to(&key, &sealed, ctx, None).unwrap());
    let mut other = plain.clone();
    other[99] ^= 1;
    assert!(!opens_to(&key, &sealed, ctx, Some(&other)).unwrap());
    other[99] ^= 1;
    other[0] ^= 1;
    assert!(!opens_to(&key, &sealed, ctx, Some(&other)).unwrap());
    assert!(!opens_to(&key, &sealed, ctx, Some(&plain[..99])).unwrap());
    assert!(!opens_to(&key, &sealed, ctx, Some(&[plain.as_slice(), b"x"].concat())).unwrap());
    let elsewhere = EncryptionContext::new().with("dualseal:key", "other");
    assert!(matches!(
        opens_to(&key, &sealed, Some(&elsewhere), Some(&plain)),
        Err(EnvelopeError::ContextMismatch)
    ));
    let mut damaged = sealed.clone();
    let n = damaged.len();
    damaged[n - 1] ^= 1;
    assert!(opens_to(&key, &damaged, ctx, None).is_err());
}

#[test]
fn shared_key_envelopes_keep_the_location_out_of_kms_but_in_the_header() {
    let key = DataKey::from_slice(&[9u8; 32]).unwrap();
    let mut p = params(64);
    p.shared_data_key = true;
    let sealed = seal(&key, p.clone(), b"shared key secret").unwrap();
    let (h, _) = parse_header(&sealed).unwrap();
    assert_eq!(h.version, FORMAT_VERSION_SHARED_KEY);
    let kms = h.kms_context();
    assert!(kms.iter().all(|(k, _)| k != PER_OBJECT_CONTEXT_KEY));
    assert_eq!(kms.iter().count(), 2);
    assert_eq!(
        open(&key, &sealed, Some(&p.context)).unwrap().as_slice(),
        b"shared key secret"
    );
    // The version is authenticated: relabelling a shared-key envelope as version 1 (so a
    // reader would ask KMS with the whole context) breaks it.
    let mut relabelled = sealed.clone();
    relabelled[4] = FORMAT_VERSION;
    assert!(open(&key, &relabelled, None).is_err());
    // Moved to another key, it no longer opens for that location.
    let elsewhere = EncryptionContext::new()
        .with("dualseal:category", "db")
        .with("dualseal:bucket", "secrets-db")
        .with("dualseal:key", "payments/y.json");
    assert_eq!(
        open(&key, &sealed, Some(&elsewhere)).unwrap_err(),
        EnvelopeError::ContextMismatch
    );
    // A shared key without a per-object pair would bind nothing to the object.
    let mut unbound = params(64);
    unbound.shared_data_key = true;
    unbound.context = EncryptionContext::new().with("dualseal:category", "db");
    assert!(seal(&key, unbound, b"x").is_err());
    // Version 1 keeps the whole context for KMS.
    let (h1, _) = parse_header(&seal(&key, params(64), b"x").unwrap()).unwrap();
    assert_eq!(h1.kms_context(), h1.context);
}

#[test]
fn round_trip_empty_and_exact_multiple() {
    let key = DataKey::generate();
    for len in [0usize, 1, 63, 64, 65, 128, 1000] {
        let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let env = seal(&key, params(64), &pt).unwrap();
        let (h, hl) = parse_header(&env).unwrap();
        assert_eq!(
            env.len() as u64,
            hl as u64 + body_len(len as u64, h.segment_size)
        );
        assert_eq!(&*open(&key, &env, Some(&params(64).context)).unwrap(), &pt);
    }
}

#[test]
fn wrong_key_and_wrong_context_fail_clearly() {
    let key = DataKey::generate();
    let env = seal(&key, params(64), b"hunter2").unwrap();
    assert_eq!(
        open(&DataKey::generate(), &env, None),
        Err(EnvelopeError::WrongKey)
    );
    let other = params(64).context.with("dualseal:key", "elsewhere");
    assert_eq!(
        open(&key, &env, Some(&other)),
        Err(EnvelopeError::ContextMismatch)
    );
}

#[test]
fn truncation_at_a_segment_boundary_fails() {
    let key = DataKey::generate();
    let pt = vec![1u8; 64 * 3];
    let env = seal(&key, params(64), &pt).unwrap();
    let (_, hl) = parse_header(&env).unwrap();
    let cut = &env[..hl + 2 * (64 + TAG_LEN)];
    assert!(matches!(
        open(&key, cut, None),
        Err(EnvelopeError::Authentication(1))
    ));
    assert!(matches!(
        open(&key, &env[..hl], None),
        Err(EnvelopeError::Truncated(_))
    ));
}

#[test]
fn swapped_segments_fail() {
    let key = DataKey::generate();
    let pt: Vec<u8> = (0..64 * 3).map(|i| i as u8).collect();
    let mut env = seal(&key, params(64), &pt).unwrap();
    let (_, hl) = parse_header(&env).unwrap();
    let s = 64 + TAG_LEN;
    let (a, b) = env[hl..].split_at_mut(s);
    a.swap_with_slice(&mut b[..s]);
    assert!(open(&key, &env, None).is_err());
}

#[test]
fn header_of_another_envelope_fails() {
    let key = DataKey::generate();
    let e1 = seal(&key, params(64), b"first secret").unwrap();
    let e2 = seal(&key, params(64), b"other secret").unwrap();
    let (_, h1) = parse_header(&e1).unwrap();
    let (_, h2) = parse_header(&e2).unwrap();
    let mut mixed = e1[..h1].to_vec();
    mixed.extend_from_slice(&e2[h2..]);
    assert!(open(&key, &mixed, None).is_err());
}

#[test]
fn every_single_bit_flip_fails() {
    let key = DataKey::generate();
    let pt: Vec<u8> = (0..150).map(|i| (i * 7) as u8).collect();
    let env = seal(&key, params(64), &pt).unwrap();
    for byte in 0..env.len() {
        for bit in 0..8 {
            let mut t = env.clone();
            t[byte] ^= 1 << bit;
            assert!(
                open(&key, &t, None).is_err(),
                "flip at byte {byte} bit {bit} opened"
            );
        }
    }
}

#[test]
fn errors_never_contain_the_plaintext() {
    let key = DataKey::generate();
    let env = seal(&key, params(64), b"CANARY-plaintext").unwrap();
    let mut t = env.clone();
    let last = t.len() - 1;
    t[last] ^= 1;
    let msg = open(&key, &t, None).unwrap_err().to_string();
    assert!(!msg.contains("CANARY"));
    assert!(!format!("{key:?}").contains(&hex::encode(key.bytes())));
}

#[test]
fn unknown_version_and_algorithm_are_named() {
    let key = DataKey::generate();
    let mut env = seal(&key, params(64), b"x").unwrap();
    env[4] = 9;
    assert_eq!(
        open(&key, &env, None),
        Err(EnvelopeError::UnsupportedVersion(9))
    );
    env[4] = 1;
    env[5] = 2;
    assert_eq!(
        open(&key, &env, None),
        Err(EnvelopeError::UnsupportedAlgorithm(2))
    );
}

proptest! {
    #[test]
    fn prop_round_trip(pt in proptest::collection::vec(any::<u8>(), 0..2000), seg in 16u32..300) {
        let key = DataKey::generate();
        let env = seal(&key, params(seg), &pt).unwrap();
        prop_assert_eq!(&*open(&key, &env, None).unwrap(), &pt);
    }

    #[test]
    fn prop_any_change_fails(pt in proptest::collection::vec(any::<u8>(), 0..400), idx in any::<prop::sample::Index>(), x in 1u8..=255) {
        let key = DataKey::generate();
        let mut env = seal(&key, params(32), &pt).unwrap();
        let i = idx.index(env.len());
        env[i] ^= x;
        prop_assert!(open(&key, &env, None).is_err());
    }

    #[test]
    fn prop_parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_header(&data);
    }
}
