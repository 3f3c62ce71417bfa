//! The simulation tier: seeded random histories of operator calls, source changes, lost
//! copies, faults and crashes, run through the real engine (the same entry points the gRPC
//! layer calls) and a real sled journal, against the in-memory S3 and KMS models of
//! `dualseal::testing`; invariants are checked after the history and whenever an irreversible
//! act returns. It explores interleavings; it does not replace the wire tier (moto over HTTP).
//!
//! `DUALSEAL_SIM_SEEDS=N` runs N seeds (default 300); `DUALSEAL_SIM_SEED=S` replays seed S
//! alone, printing its history. A failing seed prints the command that replays it.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dualseal::config::Config;
use dualseal::engine::{Command, DecommissionMode, Engine, EngineSettings, StartRequest};
use dualseal::envelope::{self, EncryptionContext};
use dualseal::journal::Journal;
use dualseal::model::{JobId, JobOptions, JobState, ObjectState, VerifyMode};
use dualseal::testing::{FaultPlan, FaultRates, MemKms, MemS3};
use md5::{Digest as _, Md5};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

const SOURCE: &str = "master";
const CATS: [(&str, &str); 3] = [("db", "db/"), ("api", "api/"), ("tls", "tls/")];
const SEGMENT: usize = 1024;
const STATES: [ObjectState; 6] = [
    ObjectState::Discovered,
    ObjectState::Uploaded,
    ObjectState::Verified,
    ObjectState::Failed,
    ObjectState::Unclassified,
    ObjectState::Conflict,
];

fn config(dir: &std::path::Path) -> Config {
    let mut text = format!(
        r#"
[aws]
region = "us-east-1"

[source]
bucket = "{SOURCE}"

[daemon]
journal_path = "{}"
control_socket = "{}"
concurrency = 4
max_attempts = 4
segment_size = {SEGMENT}
multipart_threshold = 5242880
multipart_part_size = 5242880

[provision]
require_hardened_buckets = false
writer = "arn:aws:iam::111122223333:role/dualseald"

[decommission]
break_glass = ["arn:aws:iam::111122223333:role/break-glass"]
"#,
        dir.join("journal").display(),
        dir.join("control.sock").display(),
    );
    for (name, prefix) in CATS {
        text.push_str(&format!(
            "\n[[category]]\nname = \"{name}\"\nbucket = \"sim-{name}\"\nkms_key = \"alias/dualseal-{name}\"\nprefixes = [\"{prefix}\"]\ndest_key = \"strip-prefix\"\n"
        ));
    }
    Config::from_toml(&text, std::path::Path::new("sim.toml")).expect("simulation config")
}

/// The world outside the daemon: S3 and KMS (they outlive crashes) and what the source held.
struct World {
    faults: Arc<FaultPlan>,
    s3: MemS3,
    kms: MemKms,
    keys: HashMap<&'static str, String>,
    /// Every body a source key ever had, by quoted MD5 ETag.
    bodies: HashMap<String, Vec<u8>>,
    /// Destination objects dualseal did not write: (bucket, key) → ETag, never to change.
    foreign: BTreeMap<(String, String), String>,
    /// Copies deleted on purpose (an operator's mistake): excused from the copy invariants.
    lost: BTreeSet<(String, String)>,
    /// Source keys a decommission deleted: excused from "the source is never modified".
    decommissioned: BTreeSet<String>,
    /// An invariant that broke at the instant of an irreversible act.
    violation: Option<String>,
}

impl World {
    fn new(seed: u64) -> World {
        let faults = Arc::new(FaultPlan::new(seed ^ 0x5eed, FaultRates::default()));
        let s3 = MemS3::new(Arc::clone(&faults));
        let kms = MemKms::new(Arc::clone(&faults));
        s3.create(SOURCE, true);
        let mut keys = HashMap::new();
        for (name, _) in CATS {
            s3.create(&format!("sim-{name}"), true);
            keys.insert(name, kms.create(&format!("alias/dualseal-{name}")));
        }
        World {
            faults,
            s3,
            kms,
            keys,
            bodies: HashMap::new(),
            foreign: BTreeMap::new(),
            lost: BTreeSet::new(),
            decommissioned: BTreeSet::new(),
            violation: None,
        }
    }

    fn put_source(&mut self, key: &str, body: Vec<u8>) {
        self.s3.seed(SOURCE, key, &body);
        self.bodies
            .insert(format!("\"{}\"", hex::encode(Md5::digest(&body))), body);
    }
}

fn body(rng: &mut StdRng, tag: u64) -> Vec<u8> {
    let len = match rng.gen_range(0..10) {
        0 => 0,
        1 => 1,
        2 => SEGMENT - 1,
        3 => SEGMENT,
        4 => SEGMENT + 1,
        5 => 3 * SEGMENT,
        _ => rng.gen_range(2..5000),
    };
    let mut b = format!("secret-{tag}-").into_bytes();
    b.resize(len, b'x');
    b.truncate(len);
    b
}

/// One step of a history.
#[derive(Debug, Clone)]
enum Op {
    Start {
        verify: VerifyMode,
        only: Vec<String>,
        after: bool,
    },
    Pause(usize),
    Resume(usize),
    ResumeTwice(usize),
    PauseRacingResume(usize),
    Cancel(usize),
    Retry(usize),
    Sync(usize),
    Verify(usize),
    Crash,
    SourcePut(u64),
    SourceChange(usize),
    SourceDelete(usize),
    LoseCopy(usize),
    Decommission(usize),
    Faults(bool),
    Wait(u64),
}

fn history(rng: &mut StdRng) -> Vec<Op> {
    let n = rng.gen_range(3..14);
    let mut ops = vec![Op::Start {
        verify: VerifyMode::Full,
        only: Vec::new(),
        after: false,
    }];
    for i in 0..n {
        let j = rng.gen_range(0..4);
        ops.push(match rng.gen_range(0..100) {
            0..=9 => Op::Start {
                verify: if rng.gen_bool(0.5) {
                    VerifyMode::Full
                } else {
                    VerifyMode::Checksum
                },
                only: if rng.gen_bool(0.3) {
                    vec![CATS[rng.gen_range(0..CATS.len())].0.to_owned()]
                } else {
                    Vec::new()
                },
                after: rng.gen_bool(0.2),
            },
            10..=17 => Op::Pause(j),
            18..=25 => Op::Resume(j),
            26..=31 => Op::ResumeTwice(j),
            32..=36 => Op::PauseRacingResume(j),
            37..=40 => Op::Cancel(j),
            41..=44 => Op::Retry(j),
            45..=49 => Op::Sync(j),
            50..=54 => Op::Verify(j),
            55..=62 => Op::Crash,
            63..=67 => Op::SourcePut(i as u64),
            68..=71 => Op::SourceChange(rng.gen_range(0..1000)),
            72..=73 => Op::SourceDelete(rng.gen_range(0..1000)),
            74..=76 => Op::LoseCopy(rng.gen_range(0..1000)),
            77..=80 => Op::Decommission(j),
            81..=86 => Op::Faults(rng.gen_bool(0.6)),
            _ => Op::Wait(rng.gen_range(0..60)),
        });
    }
    ops
}

/// One life of the daemon: a runtime, a journal, an engine. Dropping it is a crash.
struct Life {
    rt: tokio::runtime::Runtime,
    journal: Arc<Journal>,
    engine: Engine,
}

fn boot(world: &World, cfg: &Config) -> Life {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let path = &cfg.daemon.journal_path;
    std::fs::create_dir_all(path).expect("journal dir");
    // sled releases its lock from a background thread after a crashed life lets go.
    let started = std::time::Instant::now();
    let mut opened = None;
    for _ in 0..200 {
        match Journal::open(path) {
            Ok(j) => {
                opened = Some(j);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    if std::env::var_os("DUALSEAL_SIM_TRACE").is_some() {
        eprintln!("boot: journal open after {:?}", started.elapsed());
    }
    let journal = Arc::new(opened.expect("journal reopens after a crash"));
    let mut settings = EngineSettings::from_config(cfg);
    settings.retry_initial = Duration::from_millis(1);
    settings.retry_max = Duration::from_millis(20);
    settings.pause_deadline = Duration::from_secs(2);
    // Parts of kilobytes rather than S3's 5 MiB minimum: the same code path in a fraction of
    // the time (the model does not enforce the minimum).
    settings.multipart = dualseal::engine::multipart::Settings {
        threshold: 8 * 1024,
        part_size: 4 * 1024,
        parts_in_flight: 2,
    };
    let provisioner = dualseal::provision::Provisioner::new(
        Arc::new(world.s3.clone()),
        Arc::new(world.kms.clone()),
        cfg,
    );
    let engine = {
        let _enter = rt.enter();
        Engine::new(
            Arc::clone(&journal),
            Arc::new(world.s3.clone()),
            Arc::new(world.kms.clone()),
            cfg.categories.clone(),
            settings,
            CancellationToken::new(),
            Some(Arc::new(provisioner)),
        )
        .expect("engine")
    };
    {
        let _enter = rt.enter();
        engine.resume_unfinished().expect("resume unfinished");
    }
    Life {
        rt,
        journal,
        engine,
    }
}

fn crash(life: Life) {
    let Life {
        rt,
        journal,
        engine,
    } = life;
    // Every task stops at its next await, as a process killed there would; the old life's
    // threads are gone before the next one boots (a killed process sends nothing after).
    rt.shutdown_timeout(Duration::from_secs(10));
    drop(engine);
    drop(journal);
}

fn jobs(life: &Life) -> Vec<JobId> {
    life.engine
        .list_jobs()
        .expect("jobs")
        .iter()
        .map(|j| j.record.id)
        .collect()
}

fn pick(life: &Life, j: usize) -> Option<JobId> {
    let all = jobs(life);
    (!all.is_empty()).then(|| all[j % all.len()])
}

/// Runs one step; a refusal is an answer (a typed error), never a failure of the history.
fn step(
    world: &mut World,
    life: &mut Option<Life>,
    cfg: &Config,
    op: &Op,
    rng: &mut StdRng,
) -> Result<(), String> {
    let actor = "sim";
    match op {
        Op::Crash => {
            if let Some(l) = life.take() {
                crash(l);
            }
            *life = Some(boot(world, cfg));
            return Ok(());
        }
        Op::SourcePut(i) => {
            let (_, prefix) = CATS[rng.gen_range(0..CATS.len())];
            let b = body(rng, *i + 10_000);
            world.put_source(&format!("{prefix}new/{i}"), b);
            return Ok(());
        }
        Op::SourceChange(i) | Op::SourceDelete(i) => {
            let keys = world.s3.keys(SOURCE);
            if keys.is_empty() {
                return Ok(());
            }
            let key = keys[i % keys.len()].clone();
            if matches!(op, Op::SourceChange(_)) {
                let b = body(rng, *i as u64 + 20_000);
                world.put_source(&key, b);
            } else {
                world.s3.remove(SOURCE, &key);
            }
            return Ok(());
        }
        Op::LoseCopy(i) => {
            let (name, _) = CATS[i % CATS.len()];
            let bucket = format!("sim-{name}");
            // dualseal's copies only: the foreign objects must stay as they are.
            let keys: Vec<String> = world
                .s3
                .keys(&bucket)
                .into_iter()
                .filter(|k| !world.foreign.contains_key(&(bucket.clone(), k.clone())))
                .collect();
            if let Some(k) = keys.get(i % keys.len().max(1)) {
                world.s3.remove(&bucket, k);
                world.lost.insert((bucket, k.clone()));
            }
            return Ok(());
        }
        Op::Faults(on) => {
            world.faults.set_rates(if *on {
                FaultRates::storm()
            } else {
                FaultRates::default()
            });
            return Ok(());
        }
        _ => {}
    }
    let l = life.as_ref().expect("a live daemon");
    let engine = l.engine.clone();
    let id = |j: &usize| pick(l, *j);
    let answer: Result<(), dualseal::engine::EngineError> = l.rt.block_on(async {
        match op {
            Op::Start {
                verify,
                only,
                after,
            } => {
                let options = JobOptions {
                    verify_mode: *verify,
                    only_categories: only.clone(),
                    after: if *after {
                        jobs(l).last().copied()
                    } else {
                        None
                    },
                    ..JobOptions::default()
                };
                engine
                    .execute(
                        actor,
                        Command::Start(StartRequest {
                            prefix: String::new(),
                            options,
                            allow_conflicts: true,
                            allow_weak_buckets: true,
                        }),
                    )
                    .await
                    .map(|_| ())
            }
            Op::Pause(j) => match id(j) {
                Some(i) => engine.execute(actor, Command::Pause(i)).await.map(|_| ()),
                None => Ok(()),
            },
            Op::Resume(j) => match id(j) {
                Some(i) => engine.execute(actor, Command::Resume(i)).await.map(|_| ()),
                None => Ok(()),
            },
            Op::ResumeTwice(j) => match id(j) {
                Some(i) => {
                    let (a, b) = tokio::join!(
                        engine.execute(actor, Command::Resume(i)),
                        engine.execute(actor, Command::Resume(i))
                    );
                    a.and(b).map(|_| ())
                }
                None => Ok(()),
            },
            Op::PauseRacingResume(j) => match id(j) {
                Some(i) => {
                    let (a, b) = tokio::join!(
                        engine.execute(actor, Command::Pause(i)),
                        engine.execute(actor, Command::Resume(i))
                    );
                    a.and(b).map(|_| ())
                }
                None => Ok(()),
            },
            Op::Cancel(j) => match id(j) {
                Some(i) => engine.execute(actor, Command::Cancel(i)).await.map(|_| ()),
                None => Ok(()),
            },
            Op::Retry(j) => match id(j) {
                Some(i) => engine.execute(actor, Command::Retry(i)).await.map(|_| ()),
                None => Ok(()),
            },
            Op::Sync(j) => match id(j) {
                Some(i) => engine.execute(actor, Command::Sync(i)).await.map(|_| ()),
                None => Ok(()),
            },
            Op::Verify(j) => match id(j) {
                Some(i) => engine.execute(actor, Command::Verify(i)).await.map(|_| ()),
                None => Ok(()),
            },
            Op::Decommission(j) => match id(j) {
                Some(i) => decommission(world, &engine, i).await,
                None => Ok(()),
            },
            Op::Wait(ms) => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                Ok(())
            }
            _ => Ok(()),
        }
    });
    if let Some(v) = world.violation.take() {
        return Err(v);
    }
    match answer {
        Ok(()) => Ok(()),
        // Refusals are answers; a journal failure is not.
        Err(dualseal::engine::EngineError::Journal(e)) => Err(format!("{op:?}: journal error {e}")),
        Err(_) => Ok(()),
    }
}

/// A delete decommission planned and run now; at the instant it returns, every source key it
/// removed must have its copy in place and opening to a version of that key.
async fn decommission(
    world: &mut World,
    engine: &Engine,
    job: JobId,
) -> Result<(), dualseal::engine::EngineError> {
    let before: BTreeSet<String> = world.s3.keys(SOURCE).into_iter().collect();
    let mut plan = engine
        .decommission_plan("sim", job, DecommissionMode::Delete, 0)
        .await;
    if let Err(dualseal::engine::EngineError::FailedPrecondition(why)) = &plan {
        // Acknowledge exactly the history the plan names, as an operator would.
        if let Some(n) = why
            .split("--destroy-uncopied-versions ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
        {
            plan = engine
                .decommission_plan("sim", job, DecommissionMode::Delete, n)
                .await;
        }
    }
    let plan = plan?;
    let done = engine.decommission("sim", &plan.token).await;
    let after: BTreeSet<String> = world.s3.keys(SOURCE).into_iter().collect();
    for gone in before.difference(&after) {
        world.decommissioned.insert(gone.clone());
        let (name, prefix) = CATS
            .iter()
            .find(|(_, p)| gone.starts_with(p))
            .expect("a category key");
        let bucket = format!("sim-{name}");
        let key = &gone[prefix.len()..];
        if world.s3.current(&bucket, key).is_none() || opens(world, name, &bucket, key).is_none() {
            world.violation.get_or_insert(format!(
                "decommission deleted {gone} while its copy s3://{bucket}/{key} was not in place"
            ));
        }
    }
    done.map(|_| ())
}

/// Opens a destination object as a reader would: DSSE under the category key, the envelope
/// under it, for this location; its plaintext.
fn opens(world: &World, category: &str, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let stored = world.s3.current(bucket, key)?;
    let arn = &world.keys[category];
    if stored.sse.as_deref() != Some("aws:kms:dsse")
        || stored.kms_key.as_deref() != Some(arn.as_str())
    {
        return None;
    }
    let body = stored.body?;
    let (header, _) = envelope::parse_header(&body).ok()?;
    let ctx = EncryptionContext::new()
        .with("dualseal:category", category)
        .with("dualseal:bucket", bucket)
        .with("dualseal:key", key);
    if header.kms_key_id != *arn {
        return None;
    }
    let dk = world.kms.unwrap_for_check(
        &header.kms_key_id,
        &header.wrapped_key,
        &header.kms_context(),
    )?;
    envelope::open(&dk, &body, Some(&ctx))
        .ok()
        .map(|p| p.to_vec())
}

fn settle(life: &Life, deadline: Duration) -> Result<(), String> {
    let until = std::time::Instant::now() + deadline;
    loop {
        let active: Vec<(JobId, JobState)> = life
            .engine
            .list_jobs()
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|j| j.record.state.is_active())
            .map(|j| (j.record.id, j.record.state))
            .collect();
        if active.is_empty() {
            return Ok(());
        }
        if std::env::var_os("DUALSEAL_SIM_TRACE").is_some() {
            for v in life.engine.list_jobs().map_err(|e| e.to_string())? {
                eprintln!(
                    "  job {} {:?} verified={} pending={} failed={} errors={:?}",
                    v.record.id,
                    v.record.state,
                    v.counts.get(ObjectState::Verified),
                    v.counts.pending(),
                    v.counts.get(ObjectState::Failed),
                    v.recent_errors.last().map(|e| format!("{e:?}"))
                );
            }
        }
        if std::time::Instant::now() > until {
            return Err(format!(
                "liveness: jobs still active after {deadline:?}: {active:?}"
            ));
        }
        life.rt
            .block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
    }
}

fn check(world: &World, life: &Life) -> Result<(), String> {
    let j = &life.journal;
    for view in life.engine.list_jobs().map_err(|e| e.to_string())? {
        let id = view.record.id;
        // Accounting: what GetJob reports is what the journal holds.
        let mut counted = [0u64; 6];
        for item in j.iter_objects(id, None) {
            let (_, rec) = item.map_err(|e| e.to_string())?;
            counted[rec.state.index()] += 1;
        }
        for s in STATES {
            if view.counts.get(s) != counted[s.index()] {
                return Err(format!(
                    "job {id}: counts say {} {s:?}, the journal holds {}",
                    view.counts.get(s),
                    counted[s.index()]
                ));
            }
        }
        // One object_verified per object, job and source version.
        let mut seen = BTreeSet::new();
        for e in j.iter_audit(Some(id)) {
            let e = e.map_err(|e| e.to_string())?;
            if e.kind != "object_verified" {
                continue;
            }
            let etag = e
                .detail
                .split("source_etag=")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .unwrap_or("")
                .to_owned();
            if !seen.insert((e.source_key.clone(), etag.clone())) {
                return Err(format!(
                    "job {id}: {} recorded verified twice for source version {etag}",
                    e.source_key
                ));
            }
        }
        if !matches!(view.record.kind, dualseal::model::JobKind::Migrate) {
            continue;
        }
        // Safety: every verified copy is in place, sealed under its category's key on both
        // layers, and opens to the source version it names.
        for item in j.iter_objects(id, Some(ObjectState::Verified)) {
            let (key, rec) = item.map_err(|e| e.to_string())?;
            let (bucket, dest) = (
                rec.dest_bucket.clone().unwrap_or_default(),
                rec.dest_key.clone().unwrap_or_default(),
            );
            if world.lost.contains(&(bucket.clone(), dest.clone())) {
                continue;
            }
            let category = rec.category.clone().unwrap_or_default();
            let Some(plain) = opens(world, &category, &bucket, &dest) else {
                return Err(format!("job {id}: {key} is verified but s3://{bucket}/{dest} is missing or does not open under {category}'s key"));
            };
            let etag = format!("\"{}\"", hex::encode(Md5::digest(&plain)));
            if !world.bodies.contains_key(&etag) {
                return Err(format!(
                    "job {id}: s3://{bucket}/{dest} opens to bytes no version of the source had"
                ));
            }
            let held = world.s3.current(&bucket, &dest).map(|s| {
                s.metadata
                    .get("dualseal-source-etag")
                    .cloned()
                    .unwrap_or_default()
            });
            if held.as_deref() == Some(rec.source_etag.as_str()) && etag != rec.source_etag {
                return Err(format!(
                    "job {id}: s3://{bucket}/{dest} claims source version {} but opens to {etag}",
                    rec.source_etag
                ));
            }
        }
    }
    // At most one applied write per destination key and source version.
    let mut writes: BTreeMap<(String, String, String), u32> = BTreeMap::new();
    for w in world.s3.applied_writes() {
        if w.bucket == SOURCE {
            return Err(format!("the source was written: {}", w.key));
        }
        if world.lost.contains(&(w.bucket.clone(), w.key.clone())) {
            continue;
        }
        let n = writes.entry((w.bucket, w.key, w.source_etag)).or_default();
        *n += 1;
        if *n > 1 {
            return Err(format!(
                "two applied writes of one source version: {:?}",
                writes.iter().find(|(_, c)| **c > 1)
            ));
        }
    }
    // Never a write over an object dualseal did not write.
    for ((bucket, key), etag) in &world.foreign {
        if world.s3.current(bucket, key).map(|s| s.etag) != Some(etag.clone()) {
            return Err(format!(
                "s3://{bucket}/{key}, not dualseal's, was overwritten"
            ));
        }
    }
    // Nothing left open in S3 once every job has ended.
    let open = world.s3.open_uploads();
    if !open.is_empty() {
        return Err(format!(
            "multipart uploads left open: {open:?}; uploads: {:#?}",
            world.s3.upload_log()
        ));
    }
    // The audit chain verifies.
    let report = life
        .rt
        .block_on(life.engine.verify_audit())
        .map_err(|e| e.to_string())?;
    if let Some(b) = report.broken {
        return Err(format!("audit chain broken: {b:?}"));
    }
    Ok(())
}

/// Runs one seed; `Err` names the invariant that broke.
fn run_seed(seed: u64, verbose: bool) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::Builder::new()
        .prefix("dualseal-sim")
        .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .map_err(|e| e.to_string())?;
    let cfg = config(dir.path());
    let mut world = World::new(seed);
    let n = rng.gen_range(0..40);
    for i in 0..n {
        let prefix = match rng.gen_range(0..10) {
            0 => "loose/",
            p => CATS[p % CATS.len()].1,
        };
        let b = body(&mut rng, i);
        world.put_source(&format!("{prefix}k/{i:03}"), b);
    }
    // Large objects stream as multipart uploads.
    for i in 0..rng.gen_range(0..3) {
        let mut big = vec![0u8; rng.gen_range(8 * 1024..40 * 1024)];
        rng.fill(&mut big[..]);
        let (_, prefix) = CATS[rng.gen_range(0..CATS.len())];
        world.put_source(&format!("{prefix}big/{i}.bin"), big);
    }
    // A destination key that holds somebody else's object.
    if n > 0 && rng.gen_bool(0.3) {
        let (name, prefix) = CATS[0];
        let key = format!("k/{:03}", rng.gen_range(0..n));
        let bucket = format!("sim-{name}");
        world.s3.seed(&bucket, &key, b"not dualseal's");
        let etag = world.s3.current(&bucket, &key).unwrap().etag;
        world.foreign.insert((bucket, key), etag);
        let _ = prefix;
    }
    let ops = history(&mut rng);
    if verbose {
        eprintln!("seed {seed}: {n} objects, history {ops:#?}");
    }
    let mut life = Some(boot(&world, &cfg));
    let trace = std::env::var_os("DUALSEAL_SIM_TRACE").is_some();
    for op in &ops {
        let t = std::time::Instant::now();
        step(&mut world, &mut life, &cfg, op, &mut rng)?;
        if trace {
            eprintln!("{op:?}: {:?}", t.elapsed());
        }
    }
    // The end: the outside world behaves, every paused job is resumed, every job must end.
    world.faults.set_rates(FaultRates::default());
    let l = life.take().expect("daemon");
    let paused: Vec<JobId> = l
        .engine
        .list_jobs()
        .map_err(|e| e.to_string())?
        .iter()
        .filter(|j| j.record.state == JobState::Paused)
        .map(|j| j.record.id)
        .collect();
    for id in paused {
        let _ = l.rt.block_on(l.engine.execute("sim", Command::Resume(id)));
    }
    let t = std::time::Instant::now();
    settle(&l, Duration::from_secs(20))?;
    if trace {
        eprintln!("settle: {:?}", t.elapsed());
    }
    let result = check(&world, &l);
    crash(l);
    result
}

#[test]
fn seeded_histories_keep_every_invariant() {
    if let Ok(filter) = std::env::var("DUALSEAL_SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    if let Some(seed) = std::env::var("DUALSEAL_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        if let Err(e) = run_seed(seed, true) {
            panic!("seed {seed}: {e}");
        }
        return;
    }
    let seeds: u64 = std::env::var("DUALSEAL_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let first: u64 = std::env::var("DUALSEAL_SIM_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let started = std::time::Instant::now();
    for seed in first..first + seeds {
        if let Err(e) = run_seed(seed, false) {
            panic!(
                "seed {seed} broke an invariant: {e}\nreplay: DUALSEAL_SIM_SEED={seed} cargo test --features testing --test simulation -- --nocapture"
            );
        }
    }
    eprintln!(
        "simulation: {seeds} seeds from {first} in {:?}",
        started.elapsed()
    );
}
