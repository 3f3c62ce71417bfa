//! What the rest of the daemon calls: every change is sent to the writer thread and awaited;
//! reads run on the caller's thread.

use std::sync::Arc;

use super::chain::AuditDraft;
use super::error::{JournalError, StorageError};
use super::records::AuditRecord;
use super::{JobCounts, Journal, PagePass};
use crate::model::{
    DecommissionState, JobId, JobKind, JobOptions, JobRecord, ObjectEvent, ObjectRecord,
    ObjectState,
};

/// What a listing page's recording makes of each newly recorded object: its audit event.
pub type AuditNew = Box<dyn Fn(&str, &ObjectRecord) -> Option<AuditDraft> + Send>;

impl Journal {
    // ------------------------------------------------------------------ changes

    /// Appends one audit event to the chain.
    ///
    /// # Errors
    /// `Storage`.
    pub async fn append_audit(&self, draft: AuditDraft) -> Result<AuditRecord, JournalError> {
        self.writer.write(move |s| s.append_audit(draft)).await
    }

    /// Creates a migration job in state `Running`.
    ///
    /// # Errors
    /// `Storage`.
    pub async fn create_job(
        &self,
        source_bucket: &str,
        prefix: &str,
    ) -> Result<JobRecord, JournalError> {
        self.create_job_of_kind(
            source_bucket,
            prefix,
            JobKind::Migrate,
            JobOptions::default(),
        )
        .await
    }

    /// Creates a job of a given kind: `Pending` when queued behind another job, else `Running`.
    ///
    /// # Errors
    /// `Storage`.
    pub async fn create_job_of_kind(
        &self,
        source_bucket: &str,
        prefix: &str,
        kind: JobKind,
        options: JobOptions,
    ) -> Result<JobRecord, JournalError> {
        let (bucket, prefix) = (source_bucket.to_owned(), prefix.to_owned());
        self.writer
            .write(move |s| s.create_job_of_kind(&bucket, &prefix, kind, options))
            .await
    }

    /// Changes a job record in place and returns the new record.
    ///
    /// # Errors
    /// `NoSuchJob`, `Storage` or `Corrupt`.
    pub async fn update_job(
        &self,
        id: JobId,
        f: impl FnOnce(&mut JobRecord) + Send + 'static,
    ) -> Result<JobRecord, JournalError> {
        self.update_job_with(id, f).await.map(|(job, ())| job)
    }

    /// [`update_job`](Self::update_job) whose change also decides something (whether it
    /// moved the job, say): returns the new record and what `f` returned.
    ///
    /// # Errors
    /// `NoSuchJob`, `Storage` or `Corrupt`.
    pub async fn update_job_with<R: Send + 'static>(
        &self,
        id: JobId,
        f: impl FnOnce(&mut JobRecord) -> R + Send + 'static,
    ) -> Result<(JobRecord, R), JournalError> {
        self.writer.write(move |s| s.update_job(id, f)).await
    }

    /// Records one listing page atomically with the continuation point after it. Objects
    /// already recorded keep their state (a page re-listed after a crash changes nothing).
    /// Returns the page's objects that still need work.
    ///
    /// # Errors
    /// `Storage` or `Corrupt`.
    pub async fn record_page(
        &self,
        job: JobId,
        page: Vec<(String, ObjectRecord)>,
        next_token: Option<String>,
    ) -> Result<Vec<(String, ObjectRecord)>, JournalError> {
        self.writer
            .write(move |s| s.record_page(job, page, next_token))
            .await
    }

    /// [`record_page`](Self::record_page) that also appends, in the same transaction, the
    /// audit event `audit_new` makes for each newly recorded object and `page_event`.
    ///
    /// # Errors
    /// `Storage` or `Corrupt`.
    pub async fn record_page_audited(
        &self,
        job: JobId,
        page: Vec<(String, ObjectRecord)>,
        next_token: Option<String>,
        pass: PagePass,
        audit_new: AuditNew,
        page_event: Option<AuditDraft>,
    ) -> Result<Vec<(String, ObjectRecord)>, JournalError> {
        self.writer
            .write(move |s| {
                s.record_page_audited(job, page, next_token, pass, audit_new, page_event)
            })
            .await
    }

    /// Applies `event` to an object's record (and appends an audit event, when given) atomically
    /// with respect to counts. Returns the new record.
    ///
    /// # Errors
    /// `Storage` or `Corrupt`; a missing record is `Corrupt` (transitions follow `record_page`);
    /// `IllegalTransition` when the record's state does not accept the event.
    pub async fn transition(
        &self,
        job: JobId,
        key: &str,
        event: ObjectEvent,
        audit: Option<AuditDraft>,
    ) -> Result<ObjectRecord, JournalError> {
        let key = key.to_owned();
        self.writer
            .write(move |s| s.transition(job, &key, event, audit))
            .await
    }

    /// Records an object's final state with its audit event and makes both durable, sharing
    /// the transaction and the flush with the other objects finishing meanwhile. Returns the
    /// new record.
    ///
    /// # Errors
    /// `Storage`, `Corrupt` (a missing record: settlements follow `record_page`),
    /// `IllegalTransition`, or the error of the flush that should have covered it.
    pub async fn settle(
        &self,
        job: JobId,
        key: &str,
        event: ObjectEvent,
        audit: AuditDraft,
    ) -> Result<ObjectRecord, JournalError> {
        let key = key.to_owned();
        self.writer
            .settle(move |answer| super::commit::Settlement {
                job,
                key,
                event,
                audit,
                answer,
            })
            .await
    }

    /// Changes job `job`'s decommission state and appends `audit`, in one transaction. Not
    /// flushed: the caller flushes before it acts on S3.
    ///
    /// # Errors
    /// `Storage`, `Corrupt`, or the audit trail being unwritable.
    pub async fn record_decommission(
        &self,
        job: JobId,
        change: impl FnOnce(&mut DecommissionState) + Send + 'static,
        audit: AuditDraft,
    ) -> Result<DecommissionState, JournalError> {
        self.writer
            .write(move |s| s.record_decommission(job, change, audit))
            .await
    }

    /// Makes every change requested so far durable. Concurrent callers share one sled flush.
    ///
    /// # Errors
    /// `Storage` when sled cannot flush.
    pub async fn flush(&self) -> Result<(), JournalError> {
        self.writer.flush().await
    }

    /// Records the durable generation beside the database (fsynced); the daemon calls it at
    /// shutdown, after its last flush.
    ///
    /// # Errors
    /// `HighWaterMark`.
    pub async fn write_high_water_mark(&self) -> Result<(), JournalError> {
        self.writer.write(|s| s.write_high_water_mark()).await
    }

    // ------------------------------------------------------------------ reads

    /// Whether the journal already existed when opened (a restart rather than a first boot).
    pub fn recovered(&self) -> bool {
        self.state.recovered
    }

    /// One job.
    ///
    /// # Errors
    /// `NoSuchJob`, `Storage` or `Corrupt`.
    pub fn get_job(&self, id: JobId) -> Result<JobRecord, JournalError> {
        self.state.get_job(id)
    }

    /// Every job, oldest first.
    ///
    /// # Errors
    /// `Storage` or `Corrupt`.
    pub fn list_jobs(&self) -> Result<Vec<JobRecord>, JournalError> {
        self.state.list_jobs()
    }

    /// Counts of a job's objects.
    pub fn counts(&self, id: JobId) -> JobCounts {
        self.state.counts(id)
    }

    /// One object record.
    ///
    /// # Errors
    /// `Storage` or `Corrupt`.
    pub fn get_object(&self, job: JobId, key: &str) -> Result<Option<ObjectRecord>, JournalError> {
        self.state.get_object(job, key)
    }

    /// A job's objects in key order, optionally only those in `state`.
    pub fn iter_objects(
        &self,
        job: JobId,
        state: Option<ObjectState>,
    ) -> impl Iterator<Item = Result<(String, ObjectRecord), JournalError>> + '_ {
        self.state.iter_objects(job, state)
    }

    /// Up to `limit` of a job's objects in `state`, in key order, strictly after `after`.
    ///
    /// # Errors
    /// `Storage` or `Corrupt`.
    pub fn objects_page(
        &self,
        job: JobId,
        after: Option<&str>,
        state: ObjectState,
        limit: usize,
    ) -> Result<Vec<(String, ObjectRecord)>, JournalError> {
        self.state.objects_page(job, after, state, limit)
    }

    /// A job's objects that a worker still has to handle, in key order, read through the
    /// pending index (a handful of records on resume, not every record of the job).
    pub fn pending_objects(
        &self,
        job: JobId,
    ) -> impl Iterator<Item = Result<(String, ObjectRecord), JournalError>> + '_ {
        self.state.pending_objects(job)
    }

    /// A job's objects that `keep` selects, read on a blocking thread: a scan of every record
    /// of a job must not hold an async worker.
    ///
    /// # Errors
    /// `Storage` or `Corrupt`; `Storage` when the scan's thread died.
    pub async fn select_objects(
        &self,
        job: JobId,
        keep: impl Fn(&ObjectRecord) -> bool + Send + 'static,
    ) -> Result<Vec<(String, ObjectRecord)>, JournalError> {
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || {
            state
                .iter_objects(job, None)
                .filter(|r| r.as_ref().map_or(true, |(_, rec)| keep(rec)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| JournalError::Storage(StorageError::other(e.to_string())))?
    }

    /// Job `job`'s decommission state (the default when nothing was done).
    ///
    /// # Errors
    /// `Storage` or `Corrupt`.
    pub fn decommission(&self, job: JobId) -> Result<DecommissionState, JournalError> {
        self.state.decommission(job)
    }

    /// Audit events in order, optionally only one job's.
    pub fn iter_audit(
        &self,
        job: Option<JobId>,
    ) -> impl Iterator<Item = Result<AuditRecord, JournalError>> + '_ {
        self.state.iter_audit(job)
    }

    /// Audit events after sequence number `after`, in order, optionally only one job's.
    pub fn iter_audit_after(
        &self,
        job: Option<JobId>,
        after: u64,
    ) -> impl Iterator<Item = Result<AuditRecord, JournalError>> + '_ {
        self.state.iter_audit_after(job, after)
    }

    /// Walks the whole audit chain and reports whether every link holds.
    ///
    /// # Errors
    /// `Storage` or `Corrupt`.
    pub fn verify_audit_chain(&self) -> Result<crate::audit::ChainReport, JournalError> {
        self.state.verify_audit_chain()
    }
}
