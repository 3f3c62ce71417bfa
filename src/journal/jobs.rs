//! Job records: created in id order, updated under the write lock, listed.

use super::error::JournalError;
use super::records::{decode, encode, job_key};
use super::{lock, now_ms, JobCounts, State, TREE_JOBS};
use crate::model::{JobId, JobKind, JobOptions, JobRecord, JobState};

impl State {
    /// [`Journal::create_job_of_kind`](super::Journal::create_job_of_kind), run on the writer thread.
    pub(super) fn create_job_of_kind(
        &self,
        source_bucket: &str,
        prefix: &str,
        kind: JobKind,
        options: JobOptions,
    ) -> Result<JobRecord, JournalError> {
        // One past the newest job (jobs are never removed, and this runs on the one writer
        // thread): sled's own id generator skips a million after every crash.
        let id = match self.jobs.last()? {
            Some((key, _)) => {
                let newest =
                    <[u8; 8]>::try_from(key.as_ref()).map_err(|_| JournalError::Corrupt {
                        tree: TREE_JOBS,
                        key: hex::encode(&key),
                        source: super::records::DecodeError::Key,
                    })?;
                JobId::from_be_bytes(newest) + 1
            }
            None => 1,
        };
        let now = now_ms();
        let job = JobRecord {
            id,
            state: if options.after.is_some() {
                JobState::Pending
            } else {
                JobState::Running
            },
            source_bucket: source_bucket.to_owned(),
            prefix: prefix.to_owned(),
            created_at_ms: now,
            updated_at_ms: now,
            listing_token: None,
            listing_complete: false,
            message: None,
            kind,
            options,
            excluded: 0,
            syncing: false,
        };
        self.jobs.insert(job_key(id), encode(&job))?;
        lock(&self.counts).insert(id, JobCounts::default());
        self.touch();
        Ok(job)
    }

    /// [`Journal::get_job`](super::Journal::get_job).
    pub(super) fn get_job(&self, id: JobId) -> Result<JobRecord, JournalError> {
        let v = self
            .jobs
            .get(job_key(id))?
            .ok_or(JournalError::NoSuchJob(id))?;
        decode(&v).map_err(|source| JournalError::Corrupt {
            tree: TREE_JOBS,
            key: id.to_string(),
            source,
        })
    }

    /// [`Journal::list_jobs`](super::Journal::list_jobs).
    pub(super) fn list_jobs(&self) -> Result<Vec<JobRecord>, JournalError> {
        self.jobs
            .iter()
            .map(|item| {
                let (k, v) = item?;
                decode(&v).map_err(|source| JournalError::Corrupt {
                    tree: TREE_JOBS,
                    key: hex::encode(&k),
                    source,
                })
            })
            .collect()
    }

    /// [`Journal::update_job`](super::Journal::update_job), run on the writer thread.
    pub(super) fn update_job<R>(
        &self,
        id: JobId,
        f: impl FnOnce(&mut JobRecord) -> R,
    ) -> Result<(JobRecord, R), JournalError> {
        let mut job = self.get_job(id)?;
        let out = f(&mut job);
        job.updated_at_ms = now_ms();
        self.jobs.insert(job_key(id), encode(&job))?;
        self.touch();
        Ok((job, out))
    }

    /// [`Journal::counts`](super::Journal::counts).
    pub(super) fn counts(&self, id: JobId) -> JobCounts {
        lock(&self.counts).get(&id).cloned().unwrap_or_default()
    }
}
