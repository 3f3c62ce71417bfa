//! On-disk records of the journal: versioned encodings and big-endian ordered keys.
//!
//! Every value is one format-version byte followed by JSON. JSON keeps records readable with
//! standard tools during an incident; the version byte lets a later build migrate or refuse
//! records it does not understand instead of misreading them.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::JobId;

/// Version byte of every record this build writes.
pub const RECORD_VERSION: u8 = 1;

/// Why a stored value could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The value is empty.
    #[error("empty record")]
    Empty,
    /// A record version this build does not know.
    #[error("record version {0} is not supported by this build (written by a newer dualseal?)")]
    Version(u8),
    /// The JSON does not match the schema.
    #[error("record body is not valid: {0}")]
    Body(String),
    /// A key is too short or not UTF-8.
    #[error("record key is malformed")]
    Key,
}

/// Encodes a record value.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    // Our record types are plain structs of strings and numbers: serialization cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out
}

/// Decodes a record value.
///
/// # Errors
/// `Empty`, `Version` or `Body`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&v, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if v != RECORD_VERSION {
        return Err(DecodeError::Version(v));
    }
    serde_json::from_slice(body).map_err(|e| DecodeError::Body(e.to_string()))
}

/// Key of a job record: the id, big-endian so iteration is in id order.
pub fn job_key(id: JobId) -> [u8; 8] {
    id.to_be_bytes()
}

/// Key of an object record: job id (big-endian) then the source key's UTF-8 bytes, so one
/// job's objects are one contiguous range in key order.
pub fn object_key(job: JobId, source_key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + source_key.len());
    k.extend_from_slice(&job.to_be_bytes());
    k.extend_from_slice(source_key.as_bytes());
    k
}

/// Splits an object record key.
///
/// # Errors
/// `Key` when shorter than 8 bytes or not UTF-8.
pub fn split_object_key(k: &[u8]) -> Result<(JobId, String), DecodeError> {
    if k.len() < 8 {
        return Err(DecodeError::Key);
    }
    let (id, rest) = k.split_at(8);
    let id = u64::from_be_bytes(id.try_into().map_err(|_| DecodeError::Key)?);
    let key = String::from_utf8(rest.to_vec()).map_err(|_| DecodeError::Key)?;
    Ok((id, key))
}

/// One audit event as stored: hash-chained to its predecessor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Time, ms since the Unix epoch.
    pub at_ms: u64,
    /// Job concerned (0 for daemon-level events).
    pub job_id: JobId,
    /// What happened (`job_started`, `object_verified`, ...).
    pub kind: String,
    /// Who asked for it, or `daemon`.
    #[serde(default)]
    pub actor: String,
    /// Category, when about one object.
    #[serde(default)]
    pub category: String,
    /// `ok`, `failed`, `denied`, `conflict`, ...
    #[serde(default)]
    pub outcome: String,
    /// Source key, when about one object.
    pub source_key: String,
    /// Destination bucket, when about one object.
    pub dest_bucket: String,
    /// Destination key, when about one object.
    pub dest_key: String,
    /// Non-secret detail (ETags, ciphertext digest, key ARN, reasons).
    pub detail: String,
    /// Hash of the previous event (hex), all zeros for the first.
    pub prev_hash: String,
    /// Hash of this event (hex): see [`crate::audit::event_hash`].
    pub hash: String,
}

impl From<&AuditRecord> for crate::audit::AuditEvent {
    fn from(r: &AuditRecord) -> Self {
        Self {
            seq: r.seq,
            at: crate::audit::rfc3339(r.at_ms),
            job_id: r.job_id,
            kind: r.kind.clone(),
            actor: r.actor.clone(),
            category: r.category.clone(),
            outcome: r.outcome.clone(),
            source_key: r.source_key.clone(),
            destination_bucket: r.dest_bucket.clone(),
            destination_key: r.dest_key.clone(),
            detail: r.detail.clone(),
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ObjectRecord, ObjectState};

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
}
