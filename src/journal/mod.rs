//! The durable journal: jobs, per-object migration state and the hash-chained audit trail,
//! in one sled database. The only module that imports `sled`.
//!
//! The journal is intent plus proof, not the source of truth for what S3 holds: an object is
//! `verified` only after the engine read it back and decrypted it. Writes that an external
//! effect depends on are followed by [`Journal::flush`], which coalesces concurrent callers
//! into one sled flush (group commit).

mod commit;
mod counts;
mod integrity;
pub mod records;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use sled::Transactional;

pub use integrity::{is_guarded, record_panic, HWM_FILE};
use records::{decode, encode, job_key, object_key, split_object_key};
pub use records::{
    AuditRecord, DecodeError, FailureThreshold, JobId, JobKind, JobLimits, JobOptions, JobRecord,
    JobState, ObjectRecord, ObjectState, VerifyMode, RECORD_VERSION,
};

const TREE_JOBS: &str = "jobs";
const TREE_OBJECTS: &str = "objects";
const TREE_AUDIT: &str = "audit";
const TREE_META: &str = "meta";
/// Keys of the objects a worker still has to handle (state discovered or uploaded), kept in
/// the same transactions as the records: resume reads this, not every record.
const TREE_PENDING: &str = "pending";
/// Counts of each job's settled objects (every state but the pending two), written in the same
/// transactions as the records (`counts.rs`).
const TREE_COUNTS: &str = "counts";
const META_SCHEMA: &[u8] = b"schema";
const META_FLUSH_GEN: &[u8] = b"flush_generation";
const META_SHARD: &[u8] = b"shard";
/// sled's page cache. Its default (1 GiB) lets a long scan (an audit export, a resume over a
/// million objects) grow the daemon's memory with the journal; the hot set is small: a job
/// writes its records, audit events and index in key order, near the end of each tree.
/// 4 MiB instead of 16 cut the daemon's peak RSS at N=10,000 by ~15 MiB (scripts/bench.sh)
/// without slowing the journal (benches/journal.rs sweeps it: DUALSEAL_BENCH_CACHE_MIB).
pub const CACHE_CAPACITY: u64 = 4 * 1024 * 1024;
/// Name of the fault-injection trigger file (see `audit_writable`).
pub const FAIL_AUDIT_TRIGGER: &str = "FAIL-AUDIT-WRITES";
/// The high-water mark file is rewritten at most this often (it costs an fsync).
const HWM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Layout version of the whole database (trees and key shapes). 2 added the `counts` tree; a
/// version-1 journal is upgraded at open (one scan of its records).
pub const SCHEMA_VERSION: u64 = 2;
use crate::audit::GENESIS_HASH;

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
        source: sled::Error,
    },
    /// A maintenance command found the journal open in a running daemon.
    #[error("journal {path} is in use by a running dualseald; stop it first (systemctl stop dualseald), then run this again")]
    InUse {
        /// Journal directory.
        path: PathBuf,
    },
    /// sled reported an I/O error or corruption.
    #[error("journal storage error: {}", storage_advice(.0))]
    Storage(#[from] sled::Error),
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
    fn shared(&self) -> Self {
        match self {
            Self::Storage(e) => Self::Storage(e.clone()),
            other => Self::Storage(sled::Error::Io(std::io::Error::other(other.to_string()))),
        }
    }
}

/// How one listing page is recorded.
#[derive(Debug, Clone, Copy, Default)]
pub struct PagePass {
    /// Objects of the page the job's filters left out (counted on the job).
    pub excluded: u64,
    /// A catch-up pass: verified objects whose source ETag changed are migrated again.
    pub requeue_changed: bool,
}

/// Counts of one job's objects by state, kept in memory; the settled part is also stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobCounts {
    /// Objects per state, indexed by [`ObjectState::index`].
    pub by_state: [u64; 6],
    /// Bytes of verified objects.
    pub verified_bytes: u64,
    /// Per category (objects without one, unclassified and conflicting, are not here).
    pub per_category: BTreeMap<String, CategoryCounts>,
}

impl JobCounts {
    /// Objects in `state`.
    pub fn get(&self, state: ObjectState) -> u64 {
        self.by_state[state.index()]
    }

    /// Objects a worker still has to handle (discovered or uploaded).
    pub fn pending(&self) -> u64 {
        self.get(ObjectState::Discovered) + self.get(ObjectState::Uploaded)
    }

    /// Every object recorded.
    pub fn total(&self) -> u64 {
        self.by_state.iter().sum()
    }

    fn add(&mut self, r: &ObjectRecord, sign: i8) {
        let apply = |v: &mut u64, d: u64| {
            if sign > 0 {
                *v += d
            } else {
                *v = v.saturating_sub(d)
            }
        };
        apply(&mut self.by_state[r.state.index()], 1);
        if r.state == ObjectState::Verified {
            apply(&mut self.verified_bytes, r.size);
        }
        if let Some(cat) = &r.category {
            let e = self.per_category.entry(cat.clone()).or_default();
            apply(&mut e.by_state[r.state.index()], 1);
            apply(&mut e.bytes, r.size);
            if r.state == ObjectState::Verified {
                apply(&mut e.verified_bytes, r.size);
            }
        }
    }
}

/// Counts of one category's objects within a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CategoryCounts {
    /// Objects per state, indexed by [`ObjectState::index`].
    pub by_state: [u64; 6],
    /// Bytes of every object of the category, as listed.
    pub bytes: u64,
    /// Bytes of its verified objects.
    pub verified_bytes: u64,
}

impl CategoryCounts {
    /// Objects in `state`.
    pub fn get(&self, state: ObjectState) -> u64 {
        self.by_state[state.index()]
    }

    /// Objects a worker still has to handle (discovered or uploaded).
    pub fn pending(&self) -> u64 {
        self.get(ObjectState::Discovered) + self.get(ObjectState::Uploaded)
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

/// An audit event ready to write: its key (sequence number) and encoded value.
type EncodedEvent = ([u8; 8], Vec<u8>);

struct ChainHead {
    seq: u64,
    hash: String,
}

/// The journal. Cheap to share behind an `Arc`.
pub struct Journal {
    db: sled::Db,
    jobs: sled::Tree,
    objects: sled::Tree,
    audit: sled::Tree,
    meta: sled::Tree,
    pending: sled::Tree,
    counts: Mutex<HashMap<JobId, JobCounts>>,
    /// What the `counts` tree holds (settled counts, number pending), per job.
    settled: Mutex<HashMap<JobId, counts::Stored>>,
    counts_tree: sled::Tree,
    chain: Mutex<ChainHead>,
    /// Serializes object transitions so counts follow the records exactly.
    write_lock: Mutex<()>,
    write_gen: AtomicU64,
    flushed_gen: tokio::sync::Mutex<u64>,
    commit_window: std::time::Duration,
    /// Final states waiting for the next group commit, and who commits them (`commit.rs`).
    settling: Mutex<Vec<commit::Settlement>>,
    committer: tokio::sync::Mutex<commit::Committer>,
    recovered: bool,
    dir: PathBuf,
    durable_gen: AtomicU64,
    hwm_written: Mutex<std::time::Instant>,
}

/// How to open a journal.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Accept a database that is behind its high-water mark (a deliberately restored older
    /// copy): the mark is reset to the database's generation.
    pub accept_rollback: bool,
    /// The daemon's shard (`None`: the whole source): a new journal is bound to it, an
    /// existing one must already be.
    pub shard: Option<crate::shard::Shard>,
    /// Group commit: a commit of objects' final states waits until this long after the
    /// previous one, so the workers finishing meanwhile share it (zero: commit at once).
    pub commit_window: std::time::Duration,
    /// sled's page cache in bytes (`None`: [`CACHE_CAPACITY`]).
    pub cache_bytes: Option<u64>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("recovered", &self.recovered)
            .finish_non_exhaustive()
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

/// sled's own lock on a journal directory, held by a maintenance command (rebuild) so that no
/// daemon has the journal open while it works, nor opens it until the command is done.
#[derive(Debug)]
pub struct MaintenanceLock {
    _file: Option<std::fs::File>,
}

/// Takes sled's lock on the journal at `path` (the one a daemon holds while it runs), without
/// opening the database: a damaged journal can still be locked and moved aside.
///
/// # Errors
/// `InUse` when a daemon holds it; `Io` when its lock file cannot be opened.
pub fn lock_for_maintenance(path: &Path) -> Result<MaintenanceLock, JournalError> {
    // sled 0.34 locks the `db` file in the journal directory (flock, exclusive).
    let db = path.join("db");
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(&db) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(MaintenanceLock { _file: None })
        }
        Err(source) => return Err(JournalError::Io { path: db, source }),
    };
    match file.try_lock() {
        Ok(()) => Ok(MaintenanceLock { _file: Some(file) }),
        Err(std::fs::TryLockError::WouldBlock) => Err(JournalError::InUse {
            path: path.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(JournalError::Io { path: db, source }),
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks aborts the process (panic = "abort" in release),
    // so a poisoned lock only happens in tests; its data is still consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Our transactions never abort on purpose, so both outcomes are storage failures.
fn tx_error(e: sled::transaction::TransactionError<()>) -> JournalError {
    match e {
        sled::transaction::TransactionError::Storage(s) => JournalError::Storage(s),
        sled::transaction::TransactionError::Abort(()) => {
            JournalError::Storage(sled::Error::Unsupported("transaction aborted".into()))
        }
    }
}

fn chain_hash(prev: &str, r: &AuditRecord) -> String {
    crate::audit::event_hash(prev, &crate::audit::AuditEvent::from(r))
}

impl Journal {
    /// Opens (or creates) the journal at `path`, with its counts (stored, plus the pending records).
    ///
    /// # Errors
    /// `Locked` when another process has it open, `Storage`, `Corrupt` or `Schema`.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        Self::open_with(path, OpenOptions::default())
    }

    /// [`open`](Self::open) with options.
    ///
    /// # Errors
    /// As [`open`](Self::open), plus `BehindHighWaterMark` and `Damaged`.
    pub fn open_with(path: &Path, opts: OpenOptions) -> Result<Self, JournalError> {
        let damaged = |message: String| JournalError::Damaged {
            path: path.to_owned(),
            message,
        };
        // Corruption met by any read while opening (sled reports some as errors rather than
        // panics) is the same damage, found before anything reached S3 or KMS.
        integrity::guarded(|| Self::open_inner(path, opts))
            .map_err(damaged)?
            .map_err(|e| match e {
                JournalError::Storage(s @ sled::Error::Corruption { .. }) => damaged(s.to_string()),
                other => other,
            })
    }

    fn open_inner(path: &Path, opts: OpenOptions) -> Result<Self, JournalError> {
        let existed = path.join("conf").exists() || path.join("db").exists();
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(opts.cache_bytes.unwrap_or(CACHE_CAPACITY))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    JournalError::Locked {
                        path: path.to_owned(),
                        source: e,
                    }
                }
                sled::Error::Corruption { .. } => JournalError::Damaged {
                    path: path.to_owned(),
                    message: e.to_string(),
                },
                other => JournalError::Storage(other),
            })?;
        let meta = db.open_tree(TREE_META)?;
        let upgrade = match meta.get(META_SCHEMA)? {
            None => {
                meta.insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                false
            }
            Some(v) => {
                let found = v
                    .as_ref()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(u64::MAX);
                match found {
                    SCHEMA_VERSION => false,
                    1 => true,
                    _ => return Err(JournalError::Schema { found }),
                }
            }
        };
        let generation = meta
            .get(META_FLUSH_GEN)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        let hwm_err = |source| JournalError::HighWaterMark {
            path: integrity::hwm_path(path),
            source,
        };
        match integrity::read_hwm(path).map_err(hwm_err)? {
            Some(mark) if mark > generation && !opts.accept_rollback => {
                return Err(JournalError::BehindHighWaterMark {
                    path: path.to_owned(),
                    found: generation,
                    mark,
                });
            }
            Some(mark) if mark > generation => {
                tracing::warn!(
                    found = generation,
                    mark,
                    "accepting a journal rolled back to an older copy"
                );
                integrity::write_hwm(path, generation).map_err(hwm_err)?;
            }
            _ => {}
        }
        let j = Self {
            jobs: db.open_tree(TREE_JOBS)?,
            objects: db.open_tree(TREE_OBJECTS)?,
            audit: db.open_tree(TREE_AUDIT)?,
            pending: db.open_tree(TREE_PENDING)?,
            counts_tree: db.open_tree(TREE_COUNTS)?,
            meta,
            db,
            counts: Mutex::new(HashMap::new()),
            settled: Mutex::new(HashMap::new()),
            chain: Mutex::new(ChainHead {
                seq: 0,
                hash: GENESIS_HASH.to_owned(),
            }),
            write_lock: Mutex::new(()),
            write_gen: AtomicU64::new(0),
            flushed_gen: tokio::sync::Mutex::new(0),
            commit_window: opts.commit_window,
            settling: Mutex::new(Vec::new()),
            committer: tokio::sync::Mutex::new(commit::Committer::new()),
            recovered: existed,
            dir: path.to_owned(),
            durable_gen: AtomicU64::new(generation),
            hwm_written: Mutex::new(std::time::Instant::now()),
        };
        j.rebuild(upgrade)?;
        j.bind_shard(opts.shard.map(|s| s.to_string()).as_deref())?;
        Ok(j)
    }

    /// Whether the journal already existed when opened (a restart rather than a first boot).
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    /// Counts from the `counts` tree and the pending index; a full scan of the records only for
    /// a journal from before the tree (`upgrade`) or one whose index does not match its records.
    fn rebuild(&self, upgrade: bool) -> Result<(), JournalError> {
        let loaded = if upgrade {
            tracing::info!("upgrading the journal: counting its records once");
            None
        } else {
            self.load_counts()?
        };
        let (settled, counts) = match loaded {
            Some(both) => both,
            None => {
                if !upgrade {
                    tracing::warn!(
                        "the journal's index of pending objects does not match its records; recounting every record"
                    );
                }
                let (settled, counts) = self.scan_counts()?;
                self.check_pending_index(&counts)?;
                self.store_counts(&settled)?;
                if upgrade {
                    self.meta
                        .insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                }
                self.db.flush()?;
                (settled, counts)
            }
        };
        *lock(&self.counts) = counts;
        *lock(&self.settled) = settled;
        if let Some(last) = self.audit.last()? {
            let r: AuditRecord = decode(&last.1).map_err(|source| JournalError::Corrupt {
                tree: TREE_AUDIT,
                key: hex::encode(&last.0),
                source,
            })?;
            *lock(&self.chain) = ChainHead {
                seq: r.seq,
                hash: r.hash,
            };
        }
        Ok(())
    }

    fn touch(&self) {
        self.write_gen.fetch_add(1, Ordering::SeqCst);
    }

    /// The pending index must list exactly the pending records the count scan found; a journal
    /// from before the index existed (or one damaged in between) gets it rebuilt.
    fn check_pending_index(&self, counts: &HashMap<JobId, JobCounts>) -> Result<(), JournalError> {
        let mut indexed: HashMap<JobId, u64> = HashMap::new();
        for item in self.pending.iter() {
            let (k, _) = item?;
            if let Ok((job, _)) = split_object_key(&k) {
                *indexed.entry(job).or_default() += 1;
            }
        }
        let consistent = counts
            .iter()
            .all(|(job, c)| indexed.get(job).copied().unwrap_or(0) == c.pending())
            && indexed.keys().all(|job| counts.contains_key(job));
        if consistent {
            return Ok(());
        }
        tracing::info!("rebuilding the journal's index of pending objects");
        self.pending.clear()?;
        let mut batch = sled::Batch::default();
        for item in self.objects.iter() {
            let (k, v) = item?;
            let r: ObjectRecord = decode(&v).map_err(|source| JournalError::Corrupt {
                tree: TREE_OBJECTS,
                key: hex::encode(&k),
                source,
            })?;
            if r.state.is_pending() {
                batch.insert(k, &[]);
            }
        }
        self.pending.apply_batch(batch)?;
        Ok(())
    }

    /// A job's objects that a worker still has to handle, in key order, read through the
    /// pending index (a handful of records on resume, not every record of the job).
    pub fn pending_objects(
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

    /// Binds the journal to this daemon's shard (`None`: the whole source) on first use, and
    /// refuses a journal bound to another.
    ///
    /// # Errors
    /// `WrongShard`; `Storage`.
    fn bind_shard(&self, shard: Option<&str>) -> Result<(), JournalError> {
        let want = shard.unwrap_or("whole");
        match self.meta.get(META_SHARD)? {
            Some(v) if v.as_ref() == want.as_bytes() => Ok(()),
            Some(v) => Err(JournalError::WrongShard {
                path: self.dir.clone(),
                journal: String::from_utf8_lossy(&v).into_owned(),
                configured: want.to_owned(),
            }),
            // A journal that already holds jobs from before shards existed is the whole
            // source's: binding it to a shard now would hide the other shards' keys.
            None if shard.is_some() && self.jobs.iter().next().is_some() => {
                Err(JournalError::WrongShard {
                    path: self.dir.clone(),
                    journal: "whole".into(),
                    configured: want.to_owned(),
                })
            }
            None => {
                self.meta.insert(META_SHARD, want.as_bytes())?;
                Ok(())
            }
        }
    }

    /// Makes every write so far durable. Concurrent callers share one sled flush: whoever
    /// gets the lock flushes for everyone who wrote before it. (Objects' final states wait
    /// out the commit window in `commit.rs`, before their shared transaction.)
    ///
    /// # Errors
    /// `Storage` when sled cannot flush.
    pub async fn flush(&self) -> Result<(), JournalError> {
        let wanted = self.write_gen.load(Ordering::SeqCst);
        let mut flushed = self.flushed_gen.lock().await;
        if *flushed >= wanted {
            return Ok(());
        }
        let upto = self.write_gen.load(Ordering::SeqCst);
        let generation = self.durable_gen.load(Ordering::SeqCst) + 1;
        self.meta
            .insert(META_FLUSH_GEN, &generation.to_be_bytes())?;
        self.db.flush_async().await?;
        self.durable_gen.store(generation, Ordering::SeqCst);
        *flushed = upto;
        let due = lock(&self.hwm_written).elapsed() >= HWM_INTERVAL;
        if due {
            self.write_high_water_mark()?;
        }
        Ok(())
    }

    /// Records the durable generation beside the database (fsynced). Called by `flush` at
    /// most once per [`HWM_INTERVAL`], and by the daemon at shutdown.
    ///
    /// # Errors
    /// `HighWaterMark`.
    pub fn write_high_water_mark(&self) -> Result<(), JournalError> {
        let generation = self.durable_gen.load(Ordering::SeqCst);
        integrity::write_hwm(&self.dir, generation).map_err(|source| {
            JournalError::HighWaterMark {
                path: integrity::hwm_path(&self.dir),
                source,
            }
        })?;
        *lock(&self.hwm_written) = std::time::Instant::now();
        Ok(())
    }

    // ---------------------------------------------------------------- jobs

    /// Creates a job in state `Running`.
    ///
    /// # Errors
    /// `Storage`.
    pub fn create_job(&self, source_bucket: &str, prefix: &str) -> Result<JobRecord, JournalError> {
        self.create_job_of_kind(
            source_bucket,
            prefix,
            JobKind::Migrate,
            JobOptions::default(),
        )
    }

    /// Creates a job of a given kind: `Pending` when queued behind another job, else `Running`.
    ///
    /// # Errors
    /// `Storage`.
    pub fn create_job_of_kind(
        &self,
        source_bucket: &str,
        prefix: &str,
        kind: JobKind,
        options: JobOptions,
    ) -> Result<JobRecord, JournalError> {
        let id = self.db.generate_id()? + 1;
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

    /// One job.
    ///
    /// # Errors
    /// `NoSuchJob`, `Storage` or `Corrupt`.
    pub fn get_job(&self, id: JobId) -> Result<JobRecord, JournalError> {
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

    /// Every job, oldest first.
    ///
    /// # Errors
    /// `Storage` or `Corrupt`.
    pub fn list_jobs(&self) -> Result<Vec<JobRecord>, JournalError> {
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

    /// Changes a job record in place and returns the new record.
    ///
    /// # Errors
    /// `NoSuchJob`, `Storage` or `Corrupt`.
    pub fn update_job(
        &self,
        id: JobId,
        f: impl FnOnce(&mut JobRecord),
    ) -> Result<JobRecord, JournalError> {
        let _w = lock(&self.write_lock);
        let mut job = self.get_job(id)?;
        f(&mut job);
        job.updated_at_ms = now_ms();
        self.jobs.insert(job_key(id), encode(&job))?;
        self.touch();
        Ok(job)
    }

    /// Counts of a job's objects.
    pub fn counts(&self, id: JobId) -> JobCounts {
        lock(&self.counts).get(&id).cloned().unwrap_or_default()
    }

    // ---------------------------------------------------------------- objects

    /// Records one listing page atomically with the continuation point after it. Objects
    /// already recorded keep their state (a page re-listed after a crash changes nothing).
    /// Returns the page's objects that still need work.
    ///
    /// # Errors
    /// `Storage` or `Corrupt`.
    pub fn record_page(
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

    /// [`record_page`](Self::record_page) that also appends, in the same transaction, the
    /// audit event `audit_new` makes for each newly recorded object and `page_event`.
    ///
    /// # Errors
    /// `Storage` or `Corrupt`.
    pub fn record_page_audited(
        &self,
        job: JobId,
        page: Vec<(String, ObjectRecord)>,
        next_token: Option<String>,
        pass: PagePass,
        audit_new: impl Fn(&str, &ObjectRecord) -> Option<AuditDraft>,
        page_event: Option<AuditDraft>,
    ) -> Result<Vec<(String, ObjectRecord)>, JournalError> {
        let _w = lock(&self.write_lock);
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
                        let again = ObjectRecord {
                            state: ObjectState::Discovered,
                            attempts: 0,
                            retry_at_ms: None,
                            reason: None,
                            size: rec.size,
                            ..ex.clone()
                        };
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
    fn decode_entry(
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

    fn decode_object(&self, job: JobId, key: &str, v: &[u8]) -> Result<ObjectRecord, JournalError> {
        decode(v).map_err(|source| JournalError::Corrupt {
            tree: TREE_OBJECTS,
            key: format!("{job}/{key}"),
            source,
        })
    }

    /// One object record.
    ///
    /// # Errors
    /// `Storage` or `Corrupt`.
    pub fn get_object(&self, job: JobId, key: &str) -> Result<Option<ObjectRecord>, JournalError> {
        self.objects
            .get(object_key(job, key))?
            .map(|v| self.decode_object(job, key, &v))
            .transpose()
    }

    /// Replaces an object's record (and appends an audit event, when given) atomically with
    /// respect to counts. Returns the new record.
    ///
    /// # Errors
    /// `Storage` or `Corrupt`; a missing record is `Corrupt` (transitions follow `record_page`).
    pub fn transition(
        &self,
        job: JobId,
        key: &str,
        f: impl FnOnce(&mut ObjectRecord),
        audit: Option<AuditDraft>,
    ) -> Result<ObjectRecord, JournalError> {
        let _w = lock(&self.write_lock);
        let k = object_key(job, key);
        let old = self
            .get_object(job, key)?
            .ok_or_else(|| commit::missing(job, key))?;
        let mut new = old.clone();
        f(&mut new);
        new.updated_at_ms = now_ms();
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

    /// A job's objects in key order, optionally only those in `state`.
    pub fn iter_objects(
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

    // ---------------------------------------------------------------- audit

    /// Test hook (feature `fault-injection` only): while a file named
    /// [`FAIL_AUDIT_TRIGGER`] exists in the journal directory, every audit write fails, so tests
    /// can show that dualseal fails closed.
    fn audit_writable(&self) -> Result<(), JournalError> {
        #[cfg(feature = "fault-injection")]
        if self.dir.join(FAIL_AUDIT_TRIGGER).exists() {
            return Err(JournalError::Io {
                path: self.dir.join(FAIL_AUDIT_TRIGGER),
                source: std::io::Error::other("audit writes disabled by the fault-injection hook"),
            });
        }
        Ok(())
    }

    /// Chains `drafts` after `head`, in order: each event's key and value to write in one
    /// transaction, and the head once they are written.
    fn chain_records(
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

    fn chain_record(&self, head: &ChainHead, d: AuditDraft) -> AuditRecord {
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

    /// Appends one audit event to the chain.
    ///
    /// # Errors
    /// `Storage`.
    pub fn append_audit(&self, draft: AuditDraft) -> Result<AuditRecord, JournalError> {
        self.audit_writable()?;
        let mut chain = lock(&self.chain);
        let rec = self.chain_record(&chain, draft);
        self.audit.insert(rec.seq.to_be_bytes(), encode(&rec))?;
        chain.seq = rec.seq;
        chain.hash.clone_from(&rec.hash);
        self.touch();
        Ok(rec)
    }

    /// Audit events in order, optionally only one job's.
    pub fn iter_audit(
        &self,
        job: Option<JobId>,
    ) -> impl Iterator<Item = Result<AuditRecord, JournalError>> + '_ {
        self.iter_audit_after(job, 0)
    }

    /// The audit events after sequence number `after`, oldest first (optionally one job's):
    /// a resumed export starts where the last one stopped without reading what came before.
    pub fn iter_audit_after(
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

    /// Walks the whole audit chain (see [`crate::audit::verify_chain`]).
    ///
    /// # Errors
    /// `Storage` or `Corrupt`.
    pub fn verify_audit_chain(&self) -> Result<crate::audit::ChainReport, JournalError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_give_the_remedy_of_their_cause() {
        let full = JournalError::Storage(sled::Error::Io(std::io::Error::from_raw_os_error(28)))
            .to_string();
        assert!(full.contains("disk holding the journal is full"), "{full}");
        assert!(full.contains("no restore or rebuild is needed"), "{full}");
        assert!(!full.contains("rebuild-journal"), "{full}");
        let denied = JournalError::Storage(sled::Error::Io(std::io::Error::from(
            std::io::ErrorKind::PermissionDenied,
        )))
        .to_string();
        assert!(denied.contains("writable by the user"), "{denied}");
        let damaged =
            JournalError::Storage(sled::Error::Corruption { at: None, bt: () }).to_string();
        assert!(damaged.contains("rebuild-journal"), "{damaged}");
    }

    #[test]
    fn maintenance_lock_refuses_a_journal_in_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(dir.path()).expect("open");
        let err = lock_for_maintenance(dir.path()).expect_err("a daemon holds it");
        assert!(matches!(err, JournalError::InUse { .. }), "{err}");
        drop(journal);
        let mut free = None;
        for _ in 0..100 {
            // sled releases its lock from a background thread after the handle is dropped.
            match lock_for_maintenance(dir.path()) {
                Ok(l) => {
                    free = Some(l);
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
        assert!(free.is_some(), "the lock was never released");
    }

    fn rec(state: ObjectState) -> ObjectRecord {
        ObjectRecord {
            state,
            size: 10,
            source_etag: "e".into(),
            source_version: None,
            category: Some("db".into()),
            dest_bucket: Some("b".into()),
            dest_key: Some("k".into()),
            attempts: 0,
            reason: None,
            ciphertext_sha256: None,
            dest_etag: None,
            updated_at_ms: 0,
            retry_at_ms: None,
            rule: None,
            code: None,
            envelope_version: None,
            upload_id: None,
        }
    }

    /// Opens a journal this process just closed. sled releases its file lock from a background
    /// thread after the handle is dropped, so an in-process reopen can briefly see it held (a
    /// restarted daemon is a new process and never does).
    fn reopen(path: &Path) -> Result<Journal, JournalError> {
        for _ in 0..100 {
            match Journal::open(path) {
                Err(JournalError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                other => return other,
            }
        }
        Journal::open(path)
    }

    fn verified_draft(id: JobId, key: &str) -> AuditDraft {
        AuditDraft {
            job_id: id,
            kind: "object_verified",
            source_key: key.to_owned(),
            ..AuditDraft::default()
        }
    }

    /// Workers finishing together share one transaction and one flush; each still gets its
    /// own answer, a bad record fails only its own object, and the chain, counts and pending
    /// index come out as if they had settled one by one.
    #[tokio::test(flavor = "current_thread")]
    async fn a_settlement_abandoned_before_its_commit_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let j = std::sync::Arc::new(Journal::open(dir.path()).unwrap());
        let id = j.create_job("src", "").unwrap().id;
        j.record_page(
            id,
            vec![
                ("left".into(), rec(ObjectState::Uploaded)),
                ("kept".into(), rec(ObjectState::Uploaded)),
            ],
            None,
        )
        .unwrap();
        // Its worker queues "left" and waits for the committer, then is aborted.
        let held = j.committer.lock().await;
        let worker = {
            let j = j.clone();
            tokio::spawn(async move {
                j.settle(
                    id,
                    "left",
                    |r| r.state = ObjectState::Verified,
                    verified_draft(id, "left"),
                )
                .await
            })
        };
        while lock(&j.settling).is_empty() {
            tokio::task::yield_now().await;
        }
        worker.abort();
        assert!(worker.await.unwrap_err().is_cancelled());
        drop(held);
        // The next commit drains the queue: only the live settlement is written.
        let kept = j
            .settle(
                id,
                "kept",
                |r| r.state = ObjectState::Verified,
                verified_draft(id, "kept"),
            )
            .await
            .unwrap();
        assert_eq!(kept.state, ObjectState::Verified);
        let left = j.get_object(id, "left").unwrap().unwrap();
        assert_eq!(
            left.state,
            ObjectState::Uploaded,
            "an abandoned attempt was recorded"
        );
        let verified: Vec<String> = j
            .iter_audit(Some(id))
            .map(Result::unwrap)
            .filter(|e| e.kind == "object_verified")
            .map(|e| e.source_key)
            .collect();
        assert_eq!(verified, ["kept"]);
        assert_eq!(j.counts(id).get(ObjectState::Verified), 1);
    }

    #[tokio::test]
    async fn settlements_that_arrive_together_share_one_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let opts = OpenOptions {
            commit_window: std::time::Duration::from_millis(50),
            ..OpenOptions::default()
        };
        let j = std::sync::Arc::new(Journal::open_with(dir.path(), opts).unwrap());
        let id = j.create_job("src", "").unwrap().id;
        let keys: Vec<String> = (0..40).map(|i| format!("k{i:02}")).collect();
        j.record_page(
            id,
            keys.iter()
                .map(|k| (k.clone(), rec(ObjectState::Uploaded)))
                .collect(),
            None,
        )
        .unwrap();
        j.flush().await.unwrap();
        let before = j.durable_gen.load(Ordering::SeqCst);
        // Each worker settles its own key; "k00" twice (the second applies to the first's
        // result); "gone" has no record.
        let mut work: Vec<String> = keys.clone();
        work.push("k00".into());
        work.push("gone".into());
        let tasks: Vec<_> = work
            .into_iter()
            .map(|k| {
                let j = j.clone();
                tokio::spawn(async move {
                    let r = j
                        .settle(
                            id,
                            &k,
                            |r| {
                                r.state = ObjectState::Verified;
                                r.attempts += 1;
                            },
                            verified_draft(id, &k),
                        )
                        .await;
                    (k, r)
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            let (k, r) = t.await.unwrap();
            match r {
                Ok(r) => {
                    assert_eq!(r.state, ObjectState::Verified, "{k}");
                    ok += 1;
                }
                Err(e) => {
                    assert_eq!(k, "gone");
                    assert!(matches!(e, JournalError::Corrupt { .. }), "{e}");
                }
            }
        }
        assert_eq!(ok, 41);
        let flushes = j.durable_gen.load(Ordering::SeqCst) - before;
        assert!(flushes <= 2, "{flushes} flushes for 42 settlements");
        assert_eq!(j.get_object(id, "k00").unwrap().unwrap().attempts, 2);
        assert_eq!(j.get_object(id, "k01").unwrap().unwrap().attempts, 1);
        let c = j.counts(id);
        assert_eq!((c.get(ObjectState::Verified), c.pending()), (40, 0));
        assert_eq!(j.pending_objects(id).count(), 0);
        let chain = j.verify_audit_chain().unwrap();
        assert!(chain.broken.is_none(), "{:?}", chain.broken);
        assert_eq!(chain.events, 41);
        drop(j);
        let j = reopen(dir.path()).unwrap();
        assert_eq!(j.counts(id).get(ObjectState::Verified), 40);
    }

    /// The counts a restart starts from are the stored ones plus the pending index, and they
    /// equal a recount of every record, through every kind of write and through an upgrade
    /// of a journal from before the `counts` tree.
    #[tokio::test]
    async fn stored_counts_equal_a_full_recount_after_reopen_and_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let with_cat = |state, cat: &str, size| ObjectRecord {
            category: Some(cat.into()),
            size,
            ..rec(state)
        };
        let (id, before) = {
            let j = Journal::open(dir.path()).unwrap();
            let id = j.create_job("src", "").unwrap().id;
            j.create_job("src", "").unwrap();
            j.record_page(
                id,
                vec![
                    ("a".into(), with_cat(ObjectState::Discovered, "db", 10)),
                    ("b".into(), with_cat(ObjectState::Discovered, "db", 20)),
                    ("c".into(), rec(ObjectState::Unclassified)),
                    ("d".into(), with_cat(ObjectState::Discovered, "tls", 40)),
                ],
                None,
            )
            .unwrap();
            j.transition(id, "a", |r| r.state = ObjectState::Uploaded, None)
                .unwrap();
            j.settle(
                id,
                "a",
                |r| r.state = ObjectState::Verified,
                AuditDraft::default(),
            )
            .await
            .unwrap();
            j.settle(
                id,
                "b",
                |r| r.state = ObjectState::Failed,
                AuditDraft::default(),
            )
            .await
            .unwrap();
            // A retry of a failed object, and a verified one whose source changed.
            j.transition(id, "b", |r| r.state = ObjectState::Discovered, None)
                .unwrap();
            j.settle(
                id,
                "d",
                |r| {
                    r.state = ObjectState::Verified;
                    r.source_etag = "old".into();
                },
                AuditDraft::default(),
            )
            .await
            .unwrap();
            j.record_page_audited(
                id,
                vec![(
                    "d".into(),
                    ObjectRecord {
                        source_etag: "new".into(),
                        size: 44,
                        ..with_cat(ObjectState::Discovered, "tls", 44)
                    },
                )],
                None,
                PagePass {
                    requeue_changed: true,
                    ..PagePass::default()
                },
                |_, _| None,
                None,
            )
            .unwrap();
            j.flush().await.unwrap();
            let (_, recount) = j.scan_counts().unwrap();
            assert_eq!(j.counts(id), recount[&id]);
            (id, j.counts(id))
        };
        assert_eq!(before.get(ObjectState::Verified), 1);
        assert_eq!(before.pending(), 2);
        let j = reopen(dir.path()).unwrap();
        assert_eq!(j.counts(id), before, "reopened from the stored counts");
        // A journal from before the counts tree (schema 1) is recounted once and upgraded.
        j.counts_tree.clear().unwrap();
        j.meta.insert(META_SCHEMA, &1u64.to_be_bytes()).unwrap();
        j.db.flush().unwrap();
        drop(j);
        let j = reopen(dir.path()).unwrap();
        assert_eq!(j.counts(id), before, "recounted by the upgrade");
        let schema = j.meta.get(META_SCHEMA).unwrap().unwrap();
        assert_eq!(schema.as_ref(), SCHEMA_VERSION.to_be_bytes());
        assert!(j.counts_tree.get(job_key(id)).unwrap().is_some());
    }

    #[tokio::test]
    async fn the_pending_index_follows_every_transition_and_is_rebuilt_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let id;
        let keys = |j: &Journal, id| -> Vec<String> {
            j.pending_objects(id).map(|r| r.unwrap().0).collect()
        };
        {
            let j = Journal::open(dir.path()).unwrap();
            id = j.create_job("src", "").unwrap().id;
            let other = j.create_job("src", "").unwrap().id;
            j.record_page(
                id,
                vec![
                    ("a".into(), rec(ObjectState::Discovered)),
                    ("b".into(), rec(ObjectState::Discovered)),
                    ("c".into(), rec(ObjectState::Unclassified)),
                ],
                None,
            )
            .unwrap();
            j.record_page(
                other,
                vec![("a".into(), rec(ObjectState::Discovered))],
                None,
            )
            .unwrap();
            assert_eq!(keys(&j, id), ["a", "b"]);
            // Uploaded is still pending; verified and failed are not; a retry brings it back.
            j.transition(id, "a", |r| r.state = ObjectState::Uploaded, None)
                .unwrap();
            assert_eq!(keys(&j, id), ["a", "b"]);
            j.transition(id, "a", |r| r.state = ObjectState::Verified, None)
                .unwrap();
            j.transition(id, "b", |r| r.state = ObjectState::Failed, None)
                .unwrap();
            assert!(keys(&j, id).is_empty());
            j.transition(id, "b", |r| r.state = ObjectState::Discovered, None)
                .unwrap();
            assert_eq!(keys(&j, id), ["b"]);
            assert_eq!(keys(&j, other), ["a"]);
            // A journal written before the index existed has none.
            j.pending.clear().unwrap();
            j.flush().await.unwrap();
        }
        let j = reopen(dir.path()).unwrap();
        assert_eq!(keys(&j, id), ["b"]);
        assert_eq!(keys(&j, 2), ["a"]);
    }

    #[tokio::test]
    async fn counts_and_chain_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id;
        {
            let j = Journal::open(dir.path()).unwrap();
            assert!(!j.recovered());
            id = j.create_job("src", "").unwrap().id;
            let pending = j
                .record_page(
                    id,
                    vec![
                        ("a".into(), rec(ObjectState::Discovered)),
                        ("b".into(), rec(ObjectState::Unclassified)),
                    ],
                    Some("tok".into()),
                )
                .unwrap();
            assert_eq!(pending.len(), 1);
            // Re-listing the same page changes nothing.
            let again = j
                .record_page(id, vec![("a".into(), rec(ObjectState::Discovered))], None)
                .unwrap();
            assert_eq!(again.len(), 1);
            j.transition(
                id,
                "a",
                |r| r.state = ObjectState::Verified,
                Some(AuditDraft {
                    job_id: id,
                    kind: "object_verified",
                    ..Default::default()
                }),
            )
            .unwrap();
            j.append_audit(AuditDraft {
                job_id: id,
                kind: "job_done",
                ..Default::default()
            })
            .unwrap();
            j.flush().await.unwrap();
        }
        let j = reopen(dir.path()).unwrap();
        assert!(j.recovered());
        let c = j.counts(id);
        assert_eq!(c.get(ObjectState::Verified), 1);
        assert_eq!(c.get(ObjectState::Unclassified), 1);
        assert_eq!(c.verified_bytes, 10);
        let db = &c.per_category["db"];
        assert_eq!((db.get(ObjectState::Verified), db.verified_bytes), (1, 10));
        assert!(j.get_job(id).unwrap().listing_complete);
        let r = j.verify_audit_chain().unwrap();
        assert_eq!((r.events, r.broken), (2, None));
        let next = j
            .append_audit(AuditDraft {
                job_id: id,
                kind: "x",
                ..Default::default()
            })
            .unwrap();
        assert_eq!(next.seq, 3);
        let r = j.verify_audit_chain().unwrap();
        assert_eq!((r.events, r.broken), (3, None));
    }

    #[test]
    fn second_open_names_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _j = Journal::open(dir.path()).unwrap();
        let err = Journal::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("locked"), "{err}");
    }

    #[test]
    fn corrupt_record_is_named_not_ignored() {
        // (damaged record, also listed as pending?)
        for pending in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let id;
            {
                let j = Journal::open(dir.path()).unwrap();
                id = j.create_job("src", "").unwrap().id;
                j.objects
                    .insert(object_key(id, "bad"), vec![1u8, b'x'])
                    .unwrap();
                if pending {
                    j.pending.insert(object_key(id, "bad"), &[]).unwrap();
                }
                j.db.flush().unwrap();
            }
            if pending {
                // A pending record is read at open (a resume needs it): the open stops.
                let err = reopen(dir.path()).unwrap_err();
                assert!(err.to_string().contains("/bad"), "{err}");
                continue;
            }
            // A settled one is not read at open (that took seconds at a million objects);
            // whoever reads it gets its name.
            let j = reopen(dir.path()).unwrap();
            let err = j.get_object(id, "bad").unwrap_err();
            assert!(err.to_string().contains("/bad"), "{err}");
            let err = j.iter_objects(id, None).find_map(Result::err).unwrap();
            assert!(err.to_string().contains("/bad"), "{err}");
        }
    }
}
