//! On-disk records of the journal: the journal's own versioned encodings of the domain model,
//! and big-endian ordered keys.
//!
//! Every value is one format-version byte followed by JSON. JSON keeps records readable with
//! standard tools during an incident; the version byte says which of the journal's stored
//! shapes (`v1.rs`, ...) the body is. The model (`crate::model`) may change freely: what a
//! journal holds changes only by adding a version here, with its upgrade to the model, so a
//! journal written by any earlier build still opens (`tests.rs` holds the bytes of each
//! version as written, which must decode forever).

mod v1;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::{DecommissionState, JobId, JobRecord, ObjectRecord};

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

/// A value the journal stores: how it is written in the current version and read from each
/// version a journal may hold.
pub trait Record: Sized {
    /// Appends the body of the current version ([`RECORD_VERSION`]).
    fn write_body(&self, out: &mut Vec<u8>);
    /// Reads a body written as `version`.
    ///
    /// # Errors
    /// `Version` for a version this build does not read, `Body` for a body that does not parse.
    fn read_body(version: u8, body: &[u8]) -> Result<Self, DecodeError>;
}

/// Encodes a record value.
pub fn encode<T: Record>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(RECORD_VERSION);
    value.write_body(&mut out);
    out
}

/// Decodes a record value.
///
/// # Errors
/// `Empty`, `Version` or `Body`.
pub fn decode<T: Record>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&v, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    T::read_body(v, body)
}

/// Writes a value's JSON. The stored shapes are structs of strings, numbers and options:
/// serializing them cannot fail.
pub(super) fn write_json<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(out, value);
}

/// Reads the JSON of a value stored as version 1 only: the journal's own bookkeeping types,
/// which have had one shape so far.
pub(super) fn read_json_v1<T: DeserializeOwned>(
    version: u8,
    body: &[u8],
) -> Result<T, DecodeError> {
    if version != 1 {
        return Err(DecodeError::Version(version));
    }
    json(body)
}

fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(body).map_err(|e| DecodeError::Body(e.to_string()))
}

impl Record for ObjectRecord {
    fn write_body(&self, out: &mut Vec<u8>) {
        write_json(&v1::Object::from(self), out);
    }

    fn read_body(version: u8, body: &[u8]) -> Result<Self, DecodeError> {
        match version {
            1 => Ok(json::<v1::Object<'static>>(body)?.into()),
            v => Err(DecodeError::Version(v)),
        }
    }
}

impl Record for JobRecord {
    fn write_body(&self, out: &mut Vec<u8>) {
        write_json(&v1::Job::from(self), out);
    }

    fn read_body(version: u8, body: &[u8]) -> Result<Self, DecodeError> {
        match version {
            1 => Ok(json::<v1::Job>(body)?.into()),
            v => Err(DecodeError::Version(v)),
        }
    }
}

impl Record for DecommissionState {
    fn write_body(&self, out: &mut Vec<u8>) {
        write_json(&v1::Decommission::from(self), out);
    }

    fn read_body(version: u8, body: &[u8]) -> Result<Self, DecodeError> {
        match version {
            1 => Ok(json::<v1::Decommission>(body)?.into()),
            v => Err(DecodeError::Version(v)),
        }
    }
}

impl Record for AuditRecord {
    fn write_body(&self, out: &mut Vec<u8>) {
        write_json(self, out);
    }

    fn read_body(version: u8, body: &[u8]) -> Result<Self, DecodeError> {
        read_json_v1(version, body)
    }
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
mod tests;
