//! Group commit of objects' final states.
//!
//! Every sled transaction spanning trees makes sled write and sync its log buffer (twice), on
//! its I/O threads. One transaction per finished object cost a quarter of the daemon's CPU on
//! small objects. Workers therefore send their final state to the writer thread
//! (`writer.rs`), which writes every settlement it finds queued in one transaction and one
//! flush, then answers everyone it covered. An object is still answered only once its record
//! is on disk.
//!
//! `write_changes` here is also the one transactional write of a single record change
//! (`State::transition`, on the writer thread): records, audit events, pending index and stored counts together.

use std::collections::HashMap;

use sled::Transactional;
use tokio::sync::oneshot;

use super::records::{encode, object_key};
use super::{lock, tx_error, AuditDraft, JobId, JournalError, ObjectRecord, State};
use super::{DecodeError, TREE_OBJECTS};
use crate::model::ObjectEvent;

pub(super) type Answer = oneshot::Sender<Result<ObjectRecord, JournalError>>;

/// A final state waiting for the next group commit.
pub(super) struct Settlement {
    pub(super) job: JobId,
    pub(super) key: String,
    pub(super) event: ObjectEvent,
    pub(super) audit: AuditDraft,
    pub(super) answer: Answer,
}

/// One record's change, read and updated, ready to write (with its audit event, if any).
pub(super) struct Change {
    pub(super) job: JobId,
    pub(super) k: Vec<u8>,
    pub(super) old: ObjectRecord,
    pub(super) new: ObjectRecord,
    pub(super) audit: Option<AuditDraft>,
}

impl State {
    /// Writes a batch of settlements in one transaction; when that fails, each on its own, so
    /// one bad record fails only its own object.
    pub(super) fn commit_settlements(
        &self,
        batch: Vec<Settlement>,
    ) -> Vec<(Answer, Result<ObjectRecord, JournalError>)> {
        let mut out = Vec::with_capacity(batch.len());
        let mut changes: Vec<Change> = Vec::with_capacity(batch.len());
        let mut answers = Vec::with_capacity(batch.len());
        // The same object twice in one batch: the second event applies to the first's result.
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        for s in batch {
            // Its worker was aborted before a committer took it (a job stopped after a journal
            // error): the attempt is abandoned, and so is its record. The object stays
            // pending and the next run redoes or adopts it; written now, it would be recorded
            // a second time by that run's attempt.
            if s.answer.is_closed() {
                continue;
            }
            let k = object_key(s.job, &s.key);
            let old = match seen.get(&k) {
                Some(&i) => changes[i].new.clone(),
                None => match self.get_object(s.job, &s.key) {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        out.push((s.answer, Err(missing(s.job, &s.key))));
                        continue;
                    }
                    Err(e) => {
                        out.push((s.answer, Err(e)));
                        continue;
                    }
                },
            };
            let new = match super::apply(s.job, &s.key, &old, s.event) {
                Ok(new) => new,
                Err(e) => {
                    out.push((s.answer, Err(e)));
                    continue;
                }
            };
            seen.insert(k.clone(), changes.len());
            changes.push(Change {
                job: s.job,
                k,
                old,
                new,
                audit: Some(s.audit),
            });
            answers.push(s.answer);
        }
        match self.write_changes(&changes) {
            Ok(()) => out.extend(
                answers
                    .into_iter()
                    .zip(changes)
                    .map(|(a, c)| (a, Ok(c.new))),
            ),
            Err(e) if changes.len() == 1 => {
                out.extend(answers.into_iter().map(|a| (a, Err(e.shared()))));
            }
            Err(_) => {
                for (a, c) in answers.into_iter().zip(changes) {
                    let r = self.write_changes(std::slice::from_ref(&c)).map(|()| c.new);
                    out.push((a, r));
                }
            }
        }
        out
    }

    /// One transaction: the records, their chained audit events, the pending index and the
    /// stored counts; then the chain head and the counts in memory. Nothing in memory changes
    /// when it fails.
    pub(super) fn write_changes(&self, items: &[Change]) -> Result<(), JournalError> {
        if items.is_empty() {
            return Ok(());
        }
        if items.iter().any(|c| c.audit.is_some()) {
            self.audit_writable()?;
        }
        let mut head = lock(&self.chain);
        let (events, at) = self.chain_records(&head, items.iter().filter_map(|c| c.audit.clone()));
        let mut writes = Vec::with_capacity(items.len());
        let mut stored = super::counts::StoredChange::default();
        for c in items {
            stored.record(self, c.job, Some(&c.old), &c.new);
            let index = match (c.old.state.is_pending(), c.new.state.is_pending()) {
                (false, true) => Some(true),
                (true, false) => Some(false),
                _ => None,
            };
            writes.push((encode(&c.new), index));
        }
        let entries = stored.entries();
        (&self.objects, &self.audit, &self.pending, &self.counts_tree)
            .transaction(|(objects, audit, pending, counts)| {
                for (c, (record, index)) in items.iter().zip(&writes) {
                    objects.insert(c.k.as_slice(), record.as_slice())?;
                    match index {
                        Some(true) => {
                            pending.insert(c.k.as_slice(), &[])?;
                        }
                        Some(false) => {
                            pending.remove(c.k.as_slice())?;
                        }
                        None => {}
                    }
                }
                for (seq, event) in &events {
                    audit.insert(seq, event.as_slice())?;
                }
                for (job, value) in &entries {
                    counts.insert(job, value.as_slice())?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        stored.commit(self);
        *head = at;
        drop(head);
        let mut counts = lock(&self.counts);
        for c in items {
            let n = counts.entry(c.job).or_default();
            n.add(&c.old, -1);
            n.add(&c.new, 1);
        }
        drop(counts);
        self.touch();
        Ok(())
    }
}

pub(super) fn missing(job: JobId, key: &str) -> JournalError {
    JournalError::Corrupt {
        tree: TREE_OBJECTS,
        key: format!("{job}/{key}"),
        source: DecodeError::Body("record missing".into()),
    }
}
