//! Object records: pages recorded as a listing reads them, events applied one at a time,
//! and reads in key order.

use sled::Transactional;

use super::chain::AuditDraft;
use super::error::{tx_error, JournalError};
use super::records::{decode, encode, job_key, object_key, split_object_key};
use super::{commit, counts};
use super::{lock, now_ms, State, TREE_OBJECTS};
use crate::model::{JobId, ObjectEvent, ObjectRecord, ObjectState};

impl State {
    /// [`Journal::record_page`](super::Journal::record_page), run on the writer thread.
    pub(super) fn record_page(
        &self,
        job: JobId,
        page: Vec<(String, ObjectRecord)>,
        next_token: Option<String>,
    ) -> Result<Vec<(String, ObjectRecord)>, JournalError> {
        self.record_page_audited(
            job,
            page,
            next_token,
            PagePass::default(),
            |_, _| None,
            None,
        )
    }

    /// [`Journal::record_page_audited`](super::Journal::record_page_audited), run on the writer thread.
    pub(super) fn record_page_audited(
        &self,
        job: JobId,
        page: Vec<(String, ObjectRecord)>,
        next_token: Option<String>,
        pass: PagePass,
        audit_new: impl Fn(&str, &ObjectRecord) -> Option<AuditDraft>,
        page_event: Option<AuditDraft>,
    ) -> Result<Vec<(String, ObjectRecord)>, JournalError> {
        let mut drafts = Vec::new();
        let mut jobrec = self.get_job(job)?;
        let mut batch = sled::Batch::default();
        let mut index = sled::Batch::default();
        let mut added = Vec::new();
        let mut requeued = Vec::new();
        let mut pending = Vec::new();
        let mut settled = counts::StoredChange::default();
        for (key, rec) in page {
            let k = object_key(job, &key);
            match self.objects.get(&k)? {
                Some(existing) => {
                    let ex: ObjectRecord = self.decode_object(job, &key, &existing)?;
                    if ex.state.is_pending() {
                        pending.push((key, ex));
                    } else if pass.requeue_changed
                        && ex.state == ObjectState::Verified
                        && !rec.source_etag.is_empty()
                        && ex.source_etag != rec.source_etag
                    {
                        // A catch-up pass: the source changed since it was migrated.
                        let again = apply(
                            job,
                            &key,
                            &ex,
                            ObjectEvent::ChangedInSource { size: rec.size },
                        )?;
                        index.insert(k.as_slice(), &[]);
                        batch.insert(k, encode(&again));
                        drafts.push(AuditDraft {
                            job_id: job,
                            kind: "object_changed_in_source",
                            category: ex.category.clone().unwrap_or_default(),
                            outcome: "requeued",
                            source_key: key.clone(),
                            detail: format!(
                                "source_etag {} -> {}; migrating the new version",
                                ex.source_etag, rec.source_etag
                            ),
                            ..Default::default()
                        });
                        settled.record(self, job, Some(&ex), &again);
                        requeued.push((ex, again.clone()));
                        pending.push((key, again));
                    }
                }
                None => {
                    if rec.state.is_pending() {
                        index.insert(k.as_slice(), &[]);
                    }
                    batch.insert(k, encode(&rec));
                    drafts.extend(audit_new(&key, &rec));
                    settled.record(self, job, None, &rec);
                    added.push(rec.clone());
                    if rec.state.is_pending() {
                        pending.push((key, rec));
                    }
                }
            }
        }
        jobrec.listing_complete = next_token.is_none();
        jobrec.listing_token = next_token;
        jobrec.excluded += pass.excluded;
        jobrec.updated_at_ms = now_ms();
        // Objects and the continuation point commit together: a crash re-lists at most the
        // page that was being recorded, never skips one.
        drafts.extend(page_event);
        if !drafts.is_empty() {
            self.audit_writable()?;
        }
        let mut chain = lock(&self.chain);
        let (events, head) = self.chain_records(&chain, drafts);
        let stored = settled.entries();
        (
            &self.objects,
            &self.jobs,
            &self.audit,
            &self.pending,
            &self.counts_tree,
        )
            .transaction(|(objects, jobs, audit, pending, counts)| {
                objects.apply_batch(&batch)?;
                pending.apply_batch(&index)?;
                for (job, c) in &stored {
                    counts.insert(job, c.as_slice())?;
                }
                jobs.insert(&job_key(job), encode(&jobrec))?;
                for (seq, event) in &events {
                    audit.insert(seq, event.as_slice())?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        settled.commit(self);
        *chain = head;
        drop(chain);
        let mut counts = lock(&self.counts);
        let c = counts.entry(job).or_default();
        for r in &added {
            c.add(r, 1);
        }
        for (old, new) in &requeued {
            c.add(old, -1);
            c.add(new, 1);
        }
        self.touch();
        Ok(pending)
    }

    /// Decodes one entry of a job's range in the objects tree.
    pub(super) fn decode_entry(
        &self,
        job: JobId,
        k: &[u8],
        v: &[u8],
    ) -> Result<(String, ObjectRecord), JournalError> {
        let (_, key) = split_object_key(k).map_err(|source| JournalError::Corrupt {
            tree: TREE_OBJECTS,
            key: hex::encode(k),
            source,
        })?;
        let r = self.decode_object(job, &key, v)?;
        Ok((key, r))
    }

    pub(super) fn decode_object(
        &self,
        job: JobId,
        key: &str,
        v: &[u8],
    ) -> Result<ObjectRecord, JournalError> {
        decode(v).map_err(|source| JournalError::Corrupt {
            tree: TREE_OBJECTS,
            key: format!("{job}/{key}"),
            source,
        })
    }

    /// [`Journal::get_object`](super::Journal::get_object).
    pub(super) fn get_object(
        &self,
        job: JobId,
        key: &str,
    ) -> Result<Option<ObjectRecord>, JournalError> {
        self.objects
            .get(object_key(job, key))?
            .map(|v| self.decode_object(job, key, &v))
            .transpose()
    }

    /// [`Journal::transition`](super::Journal::transition), run on the writer thread.
    pub(super) fn transition(
        &self,
        job: JobId,
        key: &str,
        event: ObjectEvent,
        audit: Option<AuditDraft>,
    ) -> Result<ObjectRecord, JournalError> {
        let k = object_key(job, key);
        let old = self
            .get_object(job, key)?
            .ok_or_else(|| commit::missing(job, key))?;
        let new = apply(job, key, &old, event)?;
        if audit.is_none() && old.state.is_pending() && new.state.is_pending() {
            // Between the two pending states (uploaded, a retry's notes): the index and the
            // stored counts stay as they are, so no transaction is needed.
            self.objects.insert(k, encode(&new))?;
            let mut counts = lock(&self.counts);
            let c = counts.entry(job).or_default();
            c.add(&old, -1);
            c.add(&new, 1);
            drop(counts);
            self.touch();
        } else {
            self.write_changes(&[commit::Change {
                job,
                k,
                old,
                new: new.clone(),
                audit,
            }])?;
        }
        Ok(new)
    }

    /// [`Journal::iter_objects`](super::Journal::iter_objects).
    pub(super) fn iter_objects(
        &self,
        job: JobId,
        state: Option<ObjectState>,
    ) -> impl Iterator<Item = Result<(String, ObjectRecord), JournalError>> + '_ {
        self.objects
            .scan_prefix(job.to_be_bytes())
            .map(move |item| {
                let (k, v) = item?;
                self.decode_entry(job, &k, &v)
            })
            .filter(move |r| match (r, state) {
                (Ok((_, rec)), Some(s)) => rec.state == s,
                _ => true,
            })
    }

    /// [`Journal::objects_page`](super::Journal::objects_page).
    pub(super) fn objects_page(
        &self,
        job: JobId,
        after: Option<&str>,
        state: ObjectState,
        limit: usize,
    ) -> Result<Vec<(String, ObjectRecord)>, JournalError> {
        let start = match after {
            Some(k) => {
                let mut b = object_key(job, k);
                b.push(0); // the smallest key greater than `k`
                b
            }
            None => job.to_be_bytes().to_vec(),
        };
        let end = job.saturating_add(1).to_be_bytes().to_vec();
        let mut out = Vec::with_capacity(limit.min(4096));
        for item in self.objects.range(start..end) {
            let (k, v) = item?;
            let (key, r) = self.decode_entry(job, &k, &v)?;
            if r.state == state {
                out.push((key, r));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// [`Journal::pending_objects`](super::Journal::pending_objects).
    pub(super) fn pending_objects(
        &self,
        job: JobId,
    ) -> impl Iterator<Item = Result<(String, ObjectRecord), JournalError>> + '_ {
        self.pending
            .scan_prefix(job.to_be_bytes())
            .keys()
            .filter_map(move |k| {
                let k = match k {
                    Ok(k) => k,
                    Err(e) => return Some(Err(e.into())),
                };
                let found = self
                    .objects
                    .get(&k)
                    .map_err(JournalError::from)
                    .and_then(|v| v.map(|v| self.decode_entry(job, &k, &v)).transpose());
                match found {
                    // Only what is still pending: the index never holds more, but a reader
                    // must not act on a stale entry if it did.
                    Ok(Some((key, rec))) if rec.state.is_pending() => Some(Ok((key, rec))),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            })
    }
}

/// `old` after `event`, stamped now, or the refusal as a journal error.
pub(super) fn apply(
    job: JobId,
    key: &str,
    old: &ObjectRecord,
    event: ObjectEvent,
) -> Result<ObjectRecord, JournalError> {
    old.apply(event, now_ms())
        .map_err(|source| JournalError::IllegalTransition {
            job,
            key: key.to_owned(),
            source,
        })
}

/// How one listing page is recorded.
#[derive(Debug, Clone, Copy, Default)]
pub struct PagePass {
    /// Objects of the page the job's filters left out (counted on the job).
    pub excluded: u64,
    /// A catch-up pass: verified objects whose source ETag changed are migrated again.
    pub requeue_changed: bool,
}
