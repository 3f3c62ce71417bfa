//! Journal throughput and size at scale: list N keys into a job (pages of 1,000, as the
//! engine records a listing), move each through uploaded → verified with its audit event,
//! settled durably by 64 concurrent workers (group-committed, as the daemon's are), then reopen
//! it (what a restart after SIGKILL pays). Prints listings/s, transitions/s, bytes on disk per
//! object and peak RSS.
//!
//! The last objects stay discovered, as after a SIGKILL late in a job: the reopen then also
//! times finding them, which is what a resume does before its first upload.
//!
//!   cargo bench --bench journal                          # 100,000 objects
//!   DUALSEAL_BENCH_OBJECTS=1000000 cargo bench --bench journal
//!   DUALSEAL_BENCH_KEEP=/tmp/j cargo bench --bench journal   # keep it (scripts/bench-resume.sh)
//!   DUALSEAL_BENCH_CACHE_MIB=16 cargo bench --bench journal  # sled's cache (default: the daemon's)

// A benchmark: a failed setup is a bug in the benchmark itself.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::time::Instant;

use dualseal::journal::{AuditDraft, Journal, OpenOptions};
use dualseal::model::{ObjectEvent, ObjectRecord, ObjectState};

const PAGE: usize = 1000;
/// Workers settling objects at once, as the daemon's default concurrency runs them.
const WORKERS: usize = 64;
/// Objects left discovered at the end of the job.
const LEFT: usize = 10;

fn record(i: usize) -> ObjectRecord {
    ObjectRecord {
        state: ObjectState::Discovered,
        size: 700 + (i % 3000) as u64,
        source_etag: format!("\"{:032x}\"", i * 7919),
        source_version: None,
        category: Some(["db", "api", "tls", "misc"][i % 4].to_owned()),
        dest_bucket: Some(format!("secrets-{}", ["db", "api", "tls", "misc"][i % 4])),
        dest_key: Some(format!("team-{}/secret-{i:08}.json", i % 8)),
        attempts: 0,
        reason: None,
        ciphertext_sha256: None,
        dest_etag: None,
        updated_at_ms: 0,
        retry_at_ms: None,
        rule: Some("prefix \"db/\"".to_owned()),
        code: None,
        envelope_version: None,
        upload_id: None,
    }
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("DUALSEAL_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = std::env::var_os("DUALSEAL_BENCH_KEEP")
        .map_or_else(|| dir.path().join("journal"), std::path::PathBuf::from);
    let opts = OpenOptions {
        cache_bytes: std::env::var("DUALSEAL_BENCH_CACHE_MIB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|mib| mib << 20),
        ..OpenOptions::default()
    };
    let key = |i: usize| {
        format!(
            "{}/team-{}/secret-{i:08}.json",
            ["db", "api", "tls", "misc"][i % 4],
            i % 8
        )
    };
    let job;
    {
        let j = Journal::open_with(&path, opts).expect("open");
        job = j.create_job("master-secrets", "").await.expect("job").id;
        let t = Instant::now();
        for start in (0..n).step_by(PAGE) {
            let page = (start..(start + PAGE).min(n))
                .map(|i| (key(i), record(i)))
                .collect();
            let next = (start + PAGE < n).then(|| format!("token-{start}"));
            j.record_page(job, page, next).await.expect("page");
        }
        j.flush().await.expect("flush");
        let listed = t.elapsed();
        // A job the daemon resumes at boot, as after a crash.
        j.update_job(job, |r| r.state = dualseal::model::JobState::Running)
            .await
            .expect("running");
        let t = Instant::now();
        // Each worker records its objects uploaded, then settles them verified with their
        // audit event: group-committed with the other workers' (Journal::settle).
        let j = std::sync::Arc::new(j);
        let moving = n.saturating_sub(LEFT);
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let j = j.clone();
                tokio::spawn(async move {
                    for i in (w..moving).step_by(WORKERS) {
                        let k = key(i);
                        j.transition(
                            job,
                            &k,
                            ObjectEvent::Uploaded {
                                attempts: 1,
                                source_etag: "\"e\"".into(),
                                source_version: None,
                                ciphertext_sha256: format!("{i:064x}"),
                                dest_etag: format!("\"{i:032x}\""),
                            },
                            None,
                        ).await
                            .expect("uploaded");
                        let audit = AuditDraft {
                            job_id: job,
                            kind: "object_verified",
                            category: "db".into(),
                            outcome: "ok",
                            source_key: k.clone(),
                            dest_bucket: "secrets-db".into(),
                            dest_key: k.clone(),
                            detail: "size=1234 rule=prefix \"db/\" write=written ciphertext_sha256=… dest_etag=… envelope=1".into(),
                            ..Default::default()
                        };
                        j.settle(
                            job,
                            &k,
                            ObjectEvent::Verified {
                                attempts: 1,
                                size: 1234,
                                source_etag: "\"e\"".into(),
                                source_version: None,
                                ciphertext_sha256: Some(format!("{i:064x}")),
                                dest_etag: format!("\"{i:032x}\""),
                                envelope_version: Some(1),
                            },
                            audit,
                        )
                        .await
                        .expect("verified");
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.expect("worker");
        }
        let moved = t.elapsed();
        println!("objects                  {n}");
        println!(
            "listing recorded         {:.0} objects/s ({:.2} s)",
            n as f64 / listed.as_secs_f64(),
            listed.as_secs_f64()
        );
        println!(
            "transitions              {:.0} /s ({} transitions, 1 audit event per object, settled durably by {WORKERS} workers, {:.2} s)",
            (2 * (n - LEFT)) as f64 / moved.as_secs_f64(),
            2 * (n - LEFT),
            moved.as_secs_f64()
        );
    }
    let t = Instant::now();
    let j = Journal::open_with(&path, opts).expect("reopen");
    let verified = j.counts(job).get(ObjectState::Verified);
    println!(
        "reopen (restart)         {:.2} s, {verified} verified counted",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let left = j.pending_objects(job).count();
    println!(
        "resume lookup            {:.1} ms to find the {left} unfinished objects",
        t.elapsed().as_secs_f64() * 1000.0
    );
    drop(j);
    let bytes = dir_size(&path);
    println!(
        "on disk                  {:.1} MiB, {:.0} bytes per object (records + audit trail)",
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / n as f64
    );
    println!("peak RSS                 {} MiB", peak_rss_mib());
}
