//! The hash-chained audit trail: events appended in order, each hashing its predecessor.

use super::error::JournalError;
use super::records::{decode, encode, AuditRecord};
use super::{lock, now_ms, EncodedEvent, State, TREE_AUDIT};
use crate::model::JobId;

impl State {
    /// Test hook (feature `fault-injection` only): while a file named
    /// [`FAIL_AUDIT_TRIGGER`](super::FAIL_AUDIT_TRIGGER) exists in the journal directory, every audit write fails, so tests
    /// can show that dualseal fails closed.
    pub(super) fn audit_writable(&self) -> Result<(), JournalError> {
        #[cfg(feature = "fault-injection")]
        if self.dir.join(super::FAIL_AUDIT_TRIGGER).exists() {
            return Err(JournalError::Io {
                path: self.dir.join(super::FAIL_AUDIT_TRIGGER),
                source: std::io::Error::other("audit writes disabled by the fault-injection hook"),
            });
        }
        Ok(())
    }

    /// Chains `drafts` after `head`, in order: each event's key and value to write in one
    /// transaction, and the head once they are written.
    pub(super) fn chain_records(
        &self,
        head: &ChainHead,
        drafts: impl IntoIterator<Item = AuditDraft>,
    ) -> (Vec<EncodedEvent>, ChainHead) {
        let mut at = ChainHead {
            seq: head.seq,
            hash: head.hash.clone(),
        };
        let events = drafts
            .into_iter()
            .map(|d| {
                let rec = self.chain_record(&at, d);
                let event = (rec.seq.to_be_bytes(), encode(&rec));
                at = ChainHead {
                    seq: rec.seq,
                    hash: rec.hash,
                };
                event
            })
            .collect();
        (events, at)
    }

    pub(super) fn chain_record(&self, head: &ChainHead, d: AuditDraft) -> AuditRecord {
        // ExportAudit refuses filters outside these lists; an event they miss could never be
        // selected by kind or outcome. The daemon's own tests (debug builds) catch one.
        if cfg!(not(test)) {
            debug_assert!(
                crate::audit::KINDS.contains(&d.kind),
                "audit kind {:?} is missing from audit::KINDS",
                d.kind
            );
            debug_assert!(
                d.outcome.is_empty() || crate::audit::OUTCOMES.contains(&d.outcome),
                "audit outcome {:?} is missing from audit::OUTCOMES",
                d.outcome
            );
        }
        let mut r = AuditRecord {
            seq: head.seq + 1,
            at_ms: now_ms(),
            job_id: d.job_id,
            kind: d.kind.to_owned(),
            actor: if d.actor.is_empty() {
                "daemon".to_owned()
            } else {
                d.actor
            },
            category: d.category,
            outcome: if d.outcome.is_empty() {
                "ok"
            } else {
                d.outcome
            }
            .to_owned(),
            source_key: d.source_key,
            dest_bucket: d.dest_bucket,
            dest_key: d.dest_key,
            detail: d.detail,
            prev_hash: head.hash.clone(),
            hash: String::new(),
        };
        r.hash = chain_hash(&head.hash, &r);
        r
    }

    /// [`Journal::append_audit`](super::Journal::append_audit), run on the writer thread.
    pub(super) fn append_audit(&self, draft: AuditDraft) -> Result<AuditRecord, JournalError> {
        self.audit_writable()?;
        let mut chain = lock(&self.chain);
        let rec = self.chain_record(&chain, draft);
        self.audit.insert(rec.seq.to_be_bytes(), encode(&rec))?;
        chain.seq = rec.seq;
        chain.hash.clone_from(&rec.hash);
        self.touch();
        Ok(rec)
    }

    /// [`Journal::iter_audit`](super::Journal::iter_audit).
    pub(super) fn iter_audit(
        &self,
        job: Option<JobId>,
    ) -> impl Iterator<Item = Result<AuditRecord, JournalError>> + '_ {
        self.iter_audit_after(job, 0)
    }

    /// [`Journal::iter_audit_after`](super::Journal::iter_audit_after).
    pub(super) fn iter_audit_after(
        &self,
        job: Option<JobId>,
        after: u64,
    ) -> impl Iterator<Item = Result<AuditRecord, JournalError>> + '_ {
        self.audit
            .range(after.saturating_add(1).to_be_bytes()..)
            .map(|item| {
                let (k, v) = item?;
                decode::<AuditRecord>(&v).map_err(|source| JournalError::Corrupt {
                    tree: TREE_AUDIT,
                    key: hex::encode(&k),
                    source,
                })
            })
            .filter(move |r| match (r, job) {
                (Ok(rec), Some(j)) => rec.job_id == j,
                _ => true,
            })
    }

    /// [`Journal::verify_audit_chain`](super::Journal::verify_audit_chain).
    pub(super) fn verify_audit_chain(&self) -> Result<crate::audit::ChainReport, JournalError> {
        // Streamed: the walk holds one event at a time, whatever the trail's length.
        let mut failure = None;
        let events = self.iter_audit(None).map_while(|r| match r {
            Ok(rec) => Some(crate::audit::AuditEvent::from(&rec)),
            Err(e) => {
                failure = Some(e);
                None
            }
        });
        let report = crate::audit::verify_chain(events, None);
        match failure {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}

/// An audit event before it is chained.
#[derive(Debug, Clone, Default)]
pub struct AuditDraft {
    /// Job concerned (0 for daemon-level events).
    pub job_id: JobId,
    /// What happened.
    pub kind: &'static str,
    /// Who asked for it (empty: the daemon itself).
    pub actor: String,
    /// Category, when about one object.
    pub category: String,
    /// `ok`, `failed`, `denied`, `conflict`, ... (empty: `ok`).
    pub outcome: &'static str,
    /// Source key, when about one object.
    pub source_key: String,
    /// Destination bucket.
    pub dest_bucket: String,
    /// Destination key.
    pub dest_key: String,
    /// Non-secret detail.
    pub detail: String,
}

pub(super) struct ChainHead {
    pub(super) seq: u64,
    pub(super) hash: String,
}

pub(super) fn chain_hash(prev: &str, r: &AuditRecord) -> String {
    crate::audit::event_hash(prev, &crate::audit::AuditEvent::from(r))
}
