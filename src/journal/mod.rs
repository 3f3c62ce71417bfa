//! The durable journal: jobs, per-object migration state and the hash-chained audit trail,
//! in one sled database. The only module that imports `sled`.
//!
//! The journal is intent plus proof, not the source of truth for what S3 holds: an object is
//! `verified` only after the engine read it back and decrypted it. Writes that an external
//! effect depends on are followed by [`Journal::flush`].
//!
//! One thread writes (`writer.rs`): every change and flush is a request it runs in order, and
//! concurrent flushes and objects' final states share one transaction and one sled flush
//! (group commit). Reads run on the caller's thread.

mod chain;
mod commit;
mod counts;
mod decommission;
mod error;
mod handle;
mod integrity;
mod jobs;
mod objects;
pub mod records;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use chain::AuditDraft;
use chain::ChainHead;
use error::tx_error;
pub use error::{JournalError, StorageError};
pub use handle::AuditNew;
pub use integrity::{is_guarded, record_panic, HWM_FILE};
use objects::apply;
pub use objects::PagePass;
use records::{decode, split_object_key};
pub use records::{AuditRecord, DecodeError, RECORD_VERSION};

use crate::model::{JobId, ObjectRecord, ObjectState};

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
/// Each job's decommission state (`decommission.rs`).
const TREE_DECOMMISSION: &str = "decommission";
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
/// version-1 journal is upgraded at open (one scan of its records). 3 added the `decommission`
/// tree; an older journal's is derived from its audit trail at open.
pub const SCHEMA_VERSION: u64 = 3;
use crate::audit::GENESIS_HASH;

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

/// An audit event ready to write: its key (sequence number) and encoded value.
type EncodedEvent = ([u8; 8], Vec<u8>);

/// The journal. Cheap to share behind an `Arc`.
pub struct Journal {
    state: Arc<State>,
    writer: writer::Writer,
}

/// The database and what the journal keeps in memory beside it. The writer thread is the only
/// one that changes it; any thread reads it.
struct State {
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
    decommissions: sled::Tree,
    chain: Mutex<ChainHead>,
    write_gen: AtomicU64,
    flushed_gen: AtomicU64,
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
            .field("recovered", &self.state.recovered)
            .finish_non_exhaustive()
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
        let state = integrity::guarded(|| State::open(path, opts))
            .map_err(damaged)?
            .map_err(|e| match e {
                JournalError::Storage(s) if s.is_corruption() => damaged(s.to_string()),
                other => other,
            })?;
        let state = Arc::new(state);
        let writer = writer::Writer::start(Arc::clone(&state), opts.commit_window)?;
        Ok(Self { state, writer })
    }
}

impl State {
    fn open(path: &Path, opts: OpenOptions) -> Result<Self, JournalError> {
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
                        source: StorageError::new(e),
                    }
                }
                sled::Error::Corruption { .. } => JournalError::Damaged {
                    path: path.to_owned(),
                    message: e.to_string(),
                },
                other => JournalError::from(other),
            })?;
        let meta = db.open_tree(TREE_META)?;
        let upgrade_from = match meta.get(META_SCHEMA)? {
            None => {
                meta.insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                None
            }
            Some(v) => {
                let found = v
                    .as_ref()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(u64::MAX);
                match found {
                    SCHEMA_VERSION => None,
                    1 | 2 => Some(found),
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
            decommissions: db.open_tree(TREE_DECOMMISSION)?,
            meta,
            db,
            counts: Mutex::new(HashMap::new()),
            settled: Mutex::new(HashMap::new()),
            chain: Mutex::new(ChainHead {
                seq: 0,
                hash: GENESIS_HASH.to_owned(),
            }),
            write_gen: AtomicU64::new(0),
            flushed_gen: AtomicU64::new(0),
            recovered: existed,
            dir: path.to_owned(),
            durable_gen: AtomicU64::new(generation),
            hwm_written: Mutex::new(std::time::Instant::now()),
        };
        j.rebuild(upgrade_from == Some(1))?;
        if upgrade_from.is_some() {
            tracing::info!(
                from = upgrade_from,
                to = SCHEMA_VERSION,
                "upgrading the journal's layout"
            );
            j.derive_decommissions()?;
            j.meta.insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
            j.db.flush()?;
        }
        j.bind_shard(opts.shard.map(|s| s.to_string()).as_deref())?;
        Ok(j)
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

    /// Makes every write so far durable (on the writer thread: one sled flush for everyone
    /// who asked in the same round).
    ///
    /// # Errors
    /// `Storage` when sled cannot flush.
    fn flush(&self) -> Result<(), JournalError> {
        let upto = self.write_gen.load(Ordering::SeqCst);
        if self.flushed_gen.load(Ordering::SeqCst) >= upto {
            return Ok(());
        }
        let generation = self.durable_gen.load(Ordering::SeqCst) + 1;
        self.meta
            .insert(META_FLUSH_GEN, &generation.to_be_bytes())?;
        self.db.flush()?;
        self.durable_gen.store(generation, Ordering::SeqCst);
        self.flushed_gen.store(upto, Ordering::SeqCst);
        let due = lock(&self.hwm_written).elapsed() >= HWM_INTERVAL;
        if due {
            self.write_high_water_mark()?;
        }
        Ok(())
    }

    /// Records the durable generation beside the database (fsynced), at most once per
    /// [`HWM_INTERVAL`] after a flush, and at shutdown.
    fn write_high_water_mark(&self) -> Result<(), JournalError> {
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
}

#[cfg(test)]
mod tests;
