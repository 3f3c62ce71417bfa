//! The stored forms: golden bytes of each version, round trips, keys.

use super::*;
use crate::model::{
    DecommissionState, FailureThreshold, JobKind, JobLimits, JobOptions, JobRecord, JobState,
    Lockdown, ObjectRecord, ObjectState, VerifyMode,
};

fn sample() -> ObjectRecord {
    ObjectRecord {
        state: ObjectState::Uploaded,
        size: 42,
        source_etag: "\"abc\"".into(),
        source_version: None,
        category: Some("db".into()),
        dest_bucket: Some("secrets-db".into()),
        dest_key: Some("k é".into()),
        attempts: 2,
        reason: None,
        ciphertext_sha256: Some("00".into()),
        dest_etag: None,
        updated_at_ms: 7,
        retry_at_ms: Some(9),
        rule: Some("prefix \"db/\"".into()),
        code: None,
        envelope_version: None,
        upload_id: None,
    }
}

#[test]
fn records_round_trip() {
    let r = sample();
    assert_eq!(decode::<ObjectRecord>(&encode(&r)).unwrap(), r);
}

#[test]
fn unknown_version_and_garbage_are_named() {
    let mut b = encode(&sample());
    b[0] = 9;
    assert_eq!(decode::<ObjectRecord>(&b), Err(DecodeError::Version(9)));
    assert_eq!(decode::<ObjectRecord>(&[]), Err(DecodeError::Empty));
    assert!(matches!(
        decode::<ObjectRecord>(&[1, b'{']),
        Err(DecodeError::Body(_))
    ));
}

#[test]
fn object_keys_sort_by_job_then_key() {
    let a = object_key(1, "zzz");
    let b = object_key(2, "aaa");
    let c = object_key(256, "");
    assert!(a < b && b < c);
    assert_eq!(
        split_object_key(&object_key(5, "é x")).unwrap(),
        (5, "é x".into())
    );
    assert_eq!(split_object_key(&[1, 2]), Err(DecodeError::Key));
}

// Bytes exactly as builds up to this one wrote them. They must decode to the same values for
// as long as a journal of that version can exist; a test failing here means a change would
// misread journals on disk: add a version instead.

const OBJECT_V1: &[u8] = b"\x01{\"state\":\"uploaded\",\"size\":42,\"source_etag\":\"\\\"abc\\\"\",\
\"source_version\":\"v7\",\"category\":\"db\",\"dest_bucket\":\"secrets-db\",\"dest_key\":\"k \xc3\xa9\",\
\"attempts\":2,\"reason\":\"S3 said no\",\"ciphertext_sha256\":\"00\",\"dest_etag\":\"\\\"e\\\"\",\
\"updated_at_ms\":7,\"retry_at_ms\":9,\"rule\":\"prefix \\\"db/\\\"\",\"code\":\"S3.SlowDown\",\
\"envelope_version\":2,\"upload_id\":\"up-1\"}";

/// An object recorded before retries, rules, codes, envelope versions and upload ids existed.
const OBJECT_V1_EARLY: &[u8] = b"\x01{\"state\":\"verified\",\"size\":3,\"source_etag\":\"e\",\
\"source_version\":null,\"category\":\"db\",\"dest_bucket\":\"b\",\"dest_key\":\"k\",\"attempts\":1,\
\"reason\":null,\"ciphertext_sha256\":\"ff\",\"dest_etag\":null,\"updated_at_ms\":5}";

const JOB_V1: &[u8] = b"\x01{\"id\":3,\"state\":\"completed_with_failures\",\"source_bucket\":\"master\",\
\"prefix\":\"db/\",\"created_at_ms\":1,\"updated_at_ms\":2,\"listing_token\":\"t\",\
\"listing_complete\":true,\"message\":\"m\",\"kind\":{\"verify\":{\"of\":2}},\"options\":{\
\"include\":[\"a*\"],\"exclude\":[\"b*\"],\"only_categories\":[\"db\"],\"verify_mode\":\"checksum\",\
\"failure_threshold\":{\"percent\":5,\"min_objects\":100},\"after\":1,\"priority\":-2,\
\"limits\":{\"concurrency\":8,\"objects_per_sec\":50,\"bytes_per_sec\":1000,\
\"kms_requests_per_sec\":20},\"inventory\":\"s3://inv/m.json\"},\"excluded\":4,\"syncing\":true}";

/// A job recorded before kinds, options, exclusions and sync passes existed.
const JOB_V1_EARLY: &[u8] = b"\x01{\"id\":1,\"state\":\"running\",\"source_bucket\":\"master\",\
\"prefix\":\"\",\"created_at_ms\":1,\"updated_at_ms\":1,\"listing_token\":null,\
\"listing_complete\":false,\"message\":null}";

const DECOMMISSION_V1: &[u8] = b"\x01{\"lockdown\":{\"previous_policy\":null},\"archived\":true}";

const AUDIT_V1: &[u8] = b"\x01{\"seq\":4,\"at_ms\":1700000000000,\"job_id\":2,\
\"kind\":\"object_verified\",\"actor\":\"daemon\",\"category\":\"db\",\"outcome\":\"ok\",\
\"source_key\":\"db/a\",\"dest_bucket\":\"secrets-db\",\"dest_key\":\"db/a\",\"detail\":\"etag=x\",\
\"prev_hash\":\"00\",\"hash\":\"11\"}";

fn golden_object() -> ObjectRecord {
    ObjectRecord {
        state: ObjectState::Uploaded,
        size: 42,
        source_etag: "\"abc\"".into(),
        source_version: Some("v7".into()),
        category: Some("db".into()),
        dest_bucket: Some("secrets-db".into()),
        dest_key: Some("k é".into()),
        attempts: 2,
        reason: Some("S3 said no".into()),
        ciphertext_sha256: Some("00".into()),
        dest_etag: Some("\"e\"".into()),
        updated_at_ms: 7,
        retry_at_ms: Some(9),
        rule: Some("prefix \"db/\"".into()),
        code: Some("S3.SlowDown".into()),
        envelope_version: Some(2),
        upload_id: Some("up-1".into()),
    }
}

fn golden_job() -> JobRecord {
    JobRecord {
        id: 3,
        state: JobState::CompletedWithFailures,
        source_bucket: "master".into(),
        prefix: "db/".into(),
        created_at_ms: 1,
        updated_at_ms: 2,
        listing_token: Some("t".into()),
        listing_complete: true,
        message: Some("m".into()),
        kind: JobKind::Verify { of: 2 },
        options: JobOptions {
            include: vec!["a*".into()],
            exclude: vec!["b*".into()],
            only_categories: vec!["db".into()],
            verify_mode: VerifyMode::Checksum,
            failure_threshold: Some(FailureThreshold {
                percent: 5,
                min_objects: 100,
            }),
            after: Some(1),
            priority: -2,
            limits: JobLimits {
                concurrency: Some(8),
                objects_per_sec: Some(50),
                bytes_per_sec: Some(1000),
                kms_requests_per_sec: Some(20),
            },
            inventory: Some("s3://inv/m.json".into()),
        },
        excluded: 4,
        syncing: true,
    }
}

#[test]
fn version_1_records_decode_to_the_model_and_this_build_writes_them_byte_for_byte() {
    assert_eq!(decode::<ObjectRecord>(OBJECT_V1).unwrap(), golden_object());
    assert_eq!(encode(&golden_object()), OBJECT_V1);
    assert_eq!(decode::<JobRecord>(JOB_V1).unwrap(), golden_job());
    assert_eq!(encode(&golden_job()), JOB_V1);
    let decommission = DecommissionState {
        lockdown: Some(Lockdown {
            previous_policy: None,
        }),
        archived: true,
    };
    assert_eq!(
        decode::<DecommissionState>(DECOMMISSION_V1).unwrap(),
        decommission
    );
    assert_eq!(encode(&decommission), DECOMMISSION_V1);
    let audit: AuditRecord = decode(AUDIT_V1).unwrap();
    assert_eq!(
        (audit.seq, audit.kind.as_str(), audit.hash.as_str()),
        (4, "object_verified", "11")
    );
    assert_eq!(encode(&audit), AUDIT_V1);
}

#[test]
fn records_of_early_version_1_builds_decode_with_the_later_fields_empty() {
    let o: ObjectRecord = decode(OBJECT_V1_EARLY).unwrap();
    assert_eq!(o.state, ObjectState::Verified);
    assert_eq!(o.ciphertext_sha256.as_deref(), Some("ff"));
    assert_eq!(
        (
            o.retry_at_ms,
            o.rule,
            o.code,
            o.envelope_version,
            o.upload_id
        ),
        (None, None, None, None, None)
    );
    let j: JobRecord = decode(JOB_V1_EARLY).unwrap();
    assert_eq!(j.state, JobState::Running);
    assert_eq!(j.kind, JobKind::Migrate);
    assert_eq!(j.options, JobOptions::default());
    assert_eq!((j.excluded, j.syncing), (0, false));
    let d: DecommissionState = decode(b"\x01{}").unwrap();
    assert_eq!(d, DecommissionState::default());
}

#[test]
fn every_record_type_refuses_a_version_it_does_not_know() {
    for golden in [OBJECT_V1, JOB_V1, DECOMMISSION_V1, AUDIT_V1] {
        let mut b = golden.to_vec();
        b[0] = 2;
        assert_eq!(
            decode::<ObjectRecord>(&b).err(),
            Some(DecodeError::Version(2))
        );
        assert_eq!(decode::<JobRecord>(&b).err(), Some(DecodeError::Version(2)));
        assert_eq!(
            decode::<DecommissionState>(&b).err(),
            Some(DecodeError::Version(2))
        );
        assert_eq!(
            decode::<AuditRecord>(&b).err(),
            Some(DecodeError::Version(2))
        );
    }
}
