//! What can go wrong with the journal, each with the remedy an operator needs.

use std::path::PathBuf;

use super::records::DecodeError;
use super::SCHEMA_VERSION;
use crate::model::JobId;

/// Journal failures. Any of them means the journal can no longer be trusted to record
/// progress, so the daemon stops migrating rather than carry on blind.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another process holds the database lock.
    #[error("journal {path} is locked by another process (is another dualseald running on it?): {source}")]
    Locked {
        /// Journal directory.
        path: PathBuf,
        /// The underlying error.
        source: StorageError,
    },
    /// A maintenance command found the journal open in a running daemon.
    #[error("journal {path} is in use by a running dualseald; stop it first (systemctl stop dualseald), then run this again")]
    InUse {
        /// Journal directory.
        path: PathBuf,
    },
    /// The database reported an I/O error or corruption.
    #[error("journal storage error: {}", .0.advice())]
    Storage(#[from] StorageError),
    /// A stored record could not be decoded.
    #[error("journal record {tree}/{key} is unreadable: {source}")]
    Corrupt {
        /// Tree name.
        tree: &'static str,
        /// Printable form of the record key.
        key: String,
        /// Why.
        source: DecodeError,
    },
    /// The database is behind its high-water mark: it lost writes.
    #[error("journal {path} lost writes: its generation is {found} but it had reached {mark}. Its files were truncated or damaged, or replaced by an older copy. Nothing was touched in S3. Restore the journal directory from a backup, rebuild it from the destination buckets with `dualseald rebuild-journal --config FILE`, or, if you restored an older copy on purpose, start once with `--accept-journal-rollback`")]
    BehindHighWaterMark {
        /// Journal directory.
        path: PathBuf,
        /// Generation found in the database.
        found: u64,
        /// Generation recorded beside it.
        mark: u64,
    },
    /// sled could not read its files (it panicked during recovery).
    #[error("journal {path} is damaged and cannot be read ({message}). Nothing was touched in S3. Restore the journal directory from a backup, or rebuild it with `dualseald rebuild-journal --config FILE`")]
    Damaged {
        /// Journal directory.
        path: PathBuf,
        /// What sled said.
        message: String,
    },
    /// The journal directory could not be created or moved.
    #[error("journal directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The high-water mark file could not be read or written.
    #[error("journal high-water mark {path}: {source}")]
    HighWaterMark {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database was written by a build with another layout.
    #[error("journal schema version {found} is not supported (this build uses {SCHEMA_VERSION}); use a matching dualseal build")]
    Schema {
        /// Version found on disk.
        found: u64,
    },
    /// The named job does not exist.
    #[error("job {0} does not exist")]
    NoSuchJob(JobId),
    /// An object's recorded state does not accept what the engine reports: recording it would
    /// make the journal lie, so nothing is written and the daemon stops with the reason.
    #[error("journal refused a change to object {job}/{key}: {source}. This is a dualseal bug; the record was left as it was. Report it with the daemon's log")]
    IllegalTransition {
        /// Job id.
        job: JobId,
        /// Source key.
        key: String,
        /// The state and the refused event.
        source: crate::model::IllegalTransition,
    },
    /// The journal holds another shard's objects than the daemon is configured for.
    #[error("journal {path} belongs to shard {journal}, but this daemon is configured as {configured}; a shard's journal must stay with that shard (or the keys of one would be skipped and another's taken twice). Point daemon.journal_path at shard {configured}'s journal, or set daemon.shard back to {journal}")]
    WrongShard {
        /// Journal directory.
        path: PathBuf,
        /// The shard recorded in the journal ("whole" for none).
        journal: String,
        /// The shard in the config ("whole" for none).
        configured: String,
    },
}

impl JournalError {
    /// Journal errors are never retried: the daemon must stop and say so.
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// The same failure, for each of the objects one failed group commit covered.
    pub(super) fn shared(&self) -> Self {
        match self {
            Self::Storage(e) => Self::Storage(e.clone()),
            other => Self::Storage(StorageError::other(other.to_string())),
        }
    }
}

impl From<sled::Error> for JournalError {
    fn from(e: sled::Error) -> Self {
        Self::Storage(StorageError(e))
    }
}

/// A failure of the database under the journal. Opaque: which database that is stays inside
/// `journal/`, and callers only need its message and remedy.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StorageError(sled::Error);

impl StorageError {
    pub(super) fn new(e: sled::Error) -> Self {
        Self(e)
    }

    /// A failure around the database rather than in it (a background scan that died).
    pub(super) fn other(message: String) -> Self {
        Self(sled::Error::Io(std::io::Error::other(message)))
    }

    /// Whether the database found its files corrupt.
    pub(super) fn is_corruption(&self) -> bool {
        matches!(self.0, sled::Error::Corruption { .. })
    }

    fn advice(&self) -> String {
        storage_advice(&self.0)
    }
}

/// What a storage error means and the remedy that fits its cause: a full disk or a permission
/// needs no restore, damage does.
fn storage_advice(e: &sled::Error) -> String {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    match e {
        sled::Error::Io(io)
            if io.kind() == std::io::ErrorKind::StorageFull
                || matches!(io.raw_os_error(), Some(ENOSPC | EDQUOT)) =>
        {
            format!("the disk holding the journal is full ({io}). Free space on it and restart dualseald: its jobs resume by themselves and nothing is lost; no restore or rebuild is needed")
        }
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            format!("permission denied ({io}). The journal directory and its files must be writable by the user dualseald runs as: fix their ownership and restart; no restore or rebuild is needed")
        }
        other => format!("{other}; check the disk, then restore the journal from a backup or rebuild it with `dualseald rebuild-journal --config FILE`"),
    }
}

/// Our transactions never abort on purpose, so both outcomes are storage failures.
pub(super) fn tx_error(e: sled::transaction::TransactionError<()>) -> JournalError {
    match e {
        sled::transaction::TransactionError::Storage(s) => JournalError::from(s),
        sled::transaction::TransactionError::Abort(()) => {
            JournalError::from(sled::Error::Unsupported("transaction aborted".into()))
        }
    }
}
