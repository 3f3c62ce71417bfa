//! `dualsealctl`: a thin command-line client of the dualseald control API.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use dualseal::api::client::Client;
use dualseal::api::pb;
use futures::StreamExt;

#[derive(Parser)]
#[command(version, about = "Control a running dualseald")]
struct Args {
    /// Control socket (unix:///path, a path) or http://host:port.
    #[arg(
        long,
        env = "DUALSEAL_SOCKET",
        default_value = "/run/dualseal/control.sock",
        global = true
    )]
    socket: String,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Dry run: what a job would move where.
    Plan {
        /// Only keys under this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// How many unclassified/conflicting keys to show.
        #[arg(long, default_value_t = 20)]
        samples: u32,
    },
    /// Start a migration job.
    Start {
        /// Only keys under this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Start even when keys match more than one category (they stay in the source).
        #[arg(long)]
        allow_conflicts: bool,
    },
    /// Show one job, or every job.
    Status {
        /// Job id.
        job: Option<u64>,
    },
    /// Follow a job's progress until it ends; exits non-zero unless it succeeded.
    Watch {
        /// Job id.
        job: u64,
    },
    /// Stop dispatching new objects; objects in flight finish.
    Pause {
        /// Job id.
        job: u64,
    },
    /// Resume a paused job.
    Resume {
        /// Job id.
        job: u64,
    },
    /// Stop a job for good.
    Cancel {
        /// Job id.
        job: u64,
    },
    /// Re-queue the failed objects of a finished job and run it again.
    Retry {
        /// Job id.
        job: u64,
    },
    /// Verify a finished migration job: a verification job of its own re-reads every migrated
    /// object from both buckets and checks it again; waits and prints its findings (exit 2 on
    /// any problem).
    Verify {
        /// The migration job to verify.
        job: u64,
        /// Start the verification job and return; `verify-report` shows the findings later.
        #[arg(long)]
        no_wait: bool,
    },
    /// The findings of a verification job.
    VerifyReport {
        /// The verification job.
        job: u64,
    },
    /// List a job's objects.
    Objects {
        /// Job id.
        job: u64,
        /// Only objects in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        cmd: Box<AuditCmd>,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Export audit events (streamed; any size).
    Export {
        #[command(flatten)]
        filter: AuditFilter,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Check the hash chain: the daemon's journal, or an export file offline (no daemon).
    Verify {
        /// An unfiltered export (JSON Lines or CSV) to check offline.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// The head recorded earlier (`SEQ:HASH` from `audit head`): also detects truncation
        /// and a wholesale rewrite.
        #[arg(long)]
        head: Option<String>,
    },
    /// Print the chain head (SEQ:HASH) to store somewhere the daemon cannot write.
    Head,
    /// Counts by kind, outcome, category and day.
    Summary {
        #[command(flatten)]
        filter: AuditFilter,
    },
}

#[derive(clap::Args, Clone, Default)]
struct AuditFilter {
    /// Only this job's events.
    #[arg(long)]
    job: Option<u64>,
    /// Events at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Events at or before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Only this category.
    #[arg(long)]
    category: Option<String>,
    /// Only this kind of event (e.g. object_verified, control).
    #[arg(long)]
    kind: Option<String>,
    /// Only this outcome (ok, failed, requested, conflict).
    #[arg(long)]
    outcome: Option<String>,
    /// Only this actor (e.g. uid=1000,gid=1000,pid=42).
    #[arg(long)]
    actor: Option<String>,
    /// Only source keys under this prefix.
    #[arg(long)]
    source_prefix: Option<String>,
    /// Only destination keys under this prefix.
    #[arg(long)]
    dest_prefix: Option<String>,
}

impl From<AuditFilter> for pb::ExportAuditRequest {
    fn from(f: AuditFilter) -> Self {
        Self {
            job_id: f.job.unwrap_or(0),
            since: f.since.unwrap_or_default(),
            until: f.until.unwrap_or_default(),
            category: f.category.unwrap_or_default(),
            kind: f.kind.unwrap_or_default(),
            outcome: f.outcome.unwrap_or_default(),
            actor: f.actor.unwrap_or_default(),
            source_prefix: f.source_prefix.unwrap_or_default(),
            destination_prefix: f.dest_prefix.unwrap_or_default(),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Jsonl,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
enum StateArg {
    Discovered,
    Uploaded,
    Verified,
    Failed,
    Unclassified,
    Conflict,
}

impl From<StateArg> for pb::ObjectState {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Discovered => Self::Discovered,
            StateArg::Uploaded => Self::Uploaded,
            StateArg::Verified => Self::Verified,
            StateArg::Failed => Self::Failed,
            StateArg::Unclassified => Self::Unclassified,
            StateArg::Conflict => Self::Conflict,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dualsealctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn job_state(j: &pb::Job) -> &'static str {
    pb::JobState::try_from(j.state).map_or("UNKNOWN", |s| {
        s.as_str_name().trim_start_matches("JOB_STATE_")
    })
}

fn object_state(s: i32) -> &'static str {
    pb::ObjectState::try_from(s).map_or("UNKNOWN", |s| {
        s.as_str_name().trim_start_matches("OBJECT_STATE_")
    })
}

fn job_json(j: &pb::Job) -> serde_json::Value {
    let mut v = serde_json::to_value(j).unwrap_or_default();
    v["state"] = serde_json::Value::from(job_state(j));
    v
}

fn object_json(o: &pb::ObjectStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    v["state"] = serde_json::Value::from(object_state(o.state));
    v
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn print_job(j: &pb::Job) {
    println!(
        "job {}  {}  s3://{}/{}  listed {}{}",
        j.job_id,
        job_state(j),
        j.source_bucket,
        j.prefix,
        j.discovered,
        if j.listing_complete {
            ""
        } else {
            "+ (listing)"
        }
    );
    println!(
        "  verified {} ({})  in progress {}  failed {}  unclassified {}  conflicts {}",
        j.verified,
        human_bytes(j.verified_bytes),
        j.in_progress,
        j.failed,
        j.unclassified,
        j.conflicts
    );
    for c in &j.categories {
        println!(
            "  {:<16} {:>8} objects {:>12}",
            c.category,
            c.verified_objects,
            human_bytes(c.verified_bytes)
        );
    }
    if j.current_concurrency > 0 {
        println!(
            "  concurrency {}{}",
            j.current_concurrency,
            if j.throttled {
                " (throttled by S3/KMS: lowered automatically)"
            } else {
                ""
            }
        );
    }
    if !j.message.is_empty() {
        println!("  note: {}", j.message);
    }
}

fn emit_job(json: bool, j: &pb::Job) {
    if json {
        println!("{}", job_json(j));
    } else {
        print_job(j);
    }
}

async fn run(args: Args) -> Result<ExitCode> {
    // Offline verification of an export needs no daemon.
    if let Cmd::Audit { cmd } = &args.cmd {
        if let AuditCmd::Verify {
            file: Some(file),
            head,
        } = cmd.as_ref()
        {
            return verify_file(file, head.as_deref(), args.json);
        }
    }
    let mut c = Client::connect(&args.socket).await?;
    match args.cmd {
        Cmd::Plan { prefix, samples } => {
            let p = c.plan(&prefix, samples).await?;
            if args.json {
                println!("{}", serde_json::to_value(&p)?);
            } else {
                println!(
                    "plan for s3://{}/{}: {} objects, {}",
                    p.source_bucket,
                    prefix,
                    p.total_objects,
                    human_bytes(p.total_bytes)
                );
                for cat in &p.categories {
                    println!(
                        "  {:<16} -> {:<28} {:>8} objects {:>12}",
                        cat.category,
                        cat.destination_bucket,
                        cat.objects,
                        human_bytes(cat.bytes)
                    );
                }
                println!(
                    "  unclassified (stay in place): {} objects, {}",
                    p.unclassified_objects,
                    human_bytes(p.unclassified_bytes)
                );
                for k in &p.unclassified_sample {
                    println!("    {k}");
                }
                println!(
                    "  conflicts (match several categories): {}",
                    p.conflict_objects
                );
                for k in &p.conflicts_sample {
                    println!("    {} -> {}", k.key, k.categories.join(", "));
                }
            }
            Ok(if p.conflict_objects > 0 {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Start {
            prefix,
            allow_conflicts,
        } => {
            let j = c.start(&prefix, allow_conflicts).await?;
            if args.json {
                println!("{}", job_json(&j));
            } else {
                println!("started job {}", j.job_id);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { job } => {
            let jobs = match job {
                Some(id) => vec![c.job(id).await?],
                None => c.jobs().await?,
            };
            if args.json {
                println!(
                    "{}",
                    serde_json::Value::from(jobs.iter().map(job_json).collect::<Vec<_>>())
                );
            } else if jobs.is_empty() {
                println!("no jobs yet; `dualsealctl plan` then `dualsealctl start`");
            } else {
                jobs.iter().for_each(print_job);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Watch { job } => {
            let mut s = Box::pin(c.watch(job).await?);
            let mut last = None;
            while let Some(j) = s.next().await {
                let j = j?;
                if args.json {
                    println!("{}", job_json(&j));
                } else {
                    println!(
                        "job {} {}: verified {}/{} ({}) failed {} unclassified {} conflicts {}{}",
                        j.job_id,
                        job_state(&j),
                        j.verified,
                        j.discovered - j.unclassified - j.conflicts,
                        human_bytes(j.verified_bytes),
                        j.failed,
                        j.unclassified,
                        j.conflicts,
                        if j.throttled { " [throttled]" } else { "" }
                    );
                }
                last = Some(j);
            }
            let Some(j) = last else {
                bail!("the daemon closed the stream without a job state")
            };
            Ok(match pb::JobState::try_from(j.state) {
                Ok(pb::JobState::Succeeded) => ExitCode::SUCCESS,
                _ => {
                    if !args.json {
                        print_job(&j);
                    }
                    ExitCode::from(2)
                }
            })
        }
        Cmd::Pause { job } => {
            emit_job(args.json, &c.pause(job).await?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Resume { job } => {
            emit_job(args.json, &c.resume(job).await?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Cancel { job } => {
            emit_job(args.json, &c.cancel(job).await?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Retry { job } => {
            emit_job(args.json, &c.retry(job).await?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Verify { job, no_wait } => {
            let v = c.verify(job).await?;
            if no_wait {
                emit_job(args.json, &v);
                return Ok(ExitCode::SUCCESS);
            }
            if !args.json {
                eprintln!("verification job {} checks job {job}", v.job_id);
            }
            let mut s = Box::pin(c.watch(v.job_id).await?);
            while let Some(j) = s.next().await {
                j?;
            }
            let r = c.verify_report(v.job_id).await?;
            Ok(print_verify_report(&r, args.json)?)
        }
        Cmd::VerifyReport { job } => {
            let r = c.verify_report(job).await?;
            Ok(print_verify_report(&r, args.json)?)
        }
        Cmd::Objects { job, state } => {
            let filter = state.map_or(pb::ObjectState::Unspecified, Into::into);
            for o in c.objects(job, filter).await? {
                if args.json {
                    println!("{}", object_json(&o));
                } else {
                    let dest = if o.destination_bucket.is_empty() {
                        String::new()
                    } else {
                        format!(" -> s3://{}/{}", o.destination_bucket, o.destination_key)
                    };
                    let reason = if o.reason.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", o.reason)
                    };
                    println!(
                        "{:<12} {}{}{}",
                        object_state(o.state),
                        o.source_key,
                        dest,
                        reason
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Audit { cmd } => audit(&mut c, *cmd, args.json).await,
    }
}

fn parse_head(head: Option<&str>) -> Result<Option<(u64, String)>> {
    let Some(h) = head else { return Ok(None) };
    let (seq, hash) = h
        .split_once(':')
        .context("--head takes SEQ:HASH, as printed by `dualsealctl audit head`")?;
    Ok(Some((
        seq.parse().context("--head: SEQ is not a number")?,
        hash.to_owned(),
    )))
}

fn print_chain(report: &dualseal::audit::ChainReport, json: bool) -> ExitCode {
    let (seq, hash) = report.head.clone().unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "events": report.events, "intact": report.broken.is_none(),
                "problem": report.broken.as_ref().map(ToString::to_string),
                "head_seq": seq, "head_hash": hash,
            })
        );
    } else if let Some(b) = &report.broken {
        println!("audit chain BROKEN after {} event(s): {b}", report.events);
    } else {
        println!(
            "audit chain intact: {} event(s), head {seq}:{hash}",
            report.events
        );
    }
    if report.broken.is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Verifies an export file (JSON Lines, or CSV with a header) without a daemon.
fn verify_file(path: &std::path::Path, head: Option<&str>, json: bool) -> Result<ExitCode> {
    use dualseal::audit::{verify_chain, AuditEvent};
    let head = parse_head(head)?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let events: Vec<AuditEvent> = if text.trim_start().starts_with('{') {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).with_context(|| {
                    format!("{} line {}: not an audit event", path.display(), i + 1)
                })
            })
            .collect::<Result<_>>()?
    } else {
        csv::Reader::from_reader(text.as_bytes())
            .deserialize()
            .enumerate()
            .map(|(i, r)| {
                r.with_context(|| {
                    format!("{} record {}: not an audit event", path.display(), i + 1)
                })
            })
            .collect::<Result<_>>()?
    };
    let report = verify_chain(events, head.as_ref().map(|(s, h)| (*s, h.as_str())));
    Ok(print_chain(&report, json))
}

async fn audit(c: &mut Client, cmd: AuditCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        AuditCmd::Export {
            filter,
            format,
            output,
        } => {
            let mut stream = Box::pin(c.audit_stream(filter.into()).await?);
            let mut out: Box<dyn Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut n = 0u64;
            match format {
                Format::Jsonl => {
                    while let Some(e) = stream.next().await {
                        writeln!(out, "{}", serde_json::to_string(&e?)?)?;
                        n += 1;
                    }
                    out.flush()?;
                }
                Format::Csv => {
                    let mut w = csv::Writer::from_writer(out);
                    while let Some(e) = stream.next().await {
                        w.serialize(e?)?;
                        n += 1;
                    }
                    w.flush()?;
                }
            }
            if let Some(p) = output {
                eprintln!("wrote {n} audit events to {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Verify { file: _, head } => {
            let expected = parse_head(head.as_deref())?;
            let r = c.verify_audit().await?;
            let mut report = dualseal::audit::ChainReport {
                events: r.events,
                head: (r.head_seq > 0).then(|| (r.head_seq, r.head_hash.clone())),
                broken: None,
            };
            let problem = if !r.intact {
                Some(r.problem.clone())
            } else {
                match expected {
                    Some((s, _)) if s > r.head_seq => Some(format!(
                        "the trail ends at event {} but the recorded head is event {s}: events were removed (truncated)",
                        r.head_seq
                    )),
                    Some((s, h)) if s == r.head_seq && h != r.head_hash => {
                        Some(format!("event {s} does not match the recorded head hash: the trail was rewritten"))
                    }
                    _ => None,
                }
            };
            if let Some(p) = problem {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"events": r.events, "intact": false, "problem": p})
                    );
                } else {
                    println!("audit chain BROKEN after {} event(s): {p}", r.events);
                }
                return Ok(ExitCode::from(2));
            }
            report.broken = None;
            Ok(print_chain(&report, json))
        }
        AuditCmd::Head => {
            let r = c.verify_audit().await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"head_seq": r.head_seq, "head_hash": r.head_hash, "intact": r.intact})
                );
            } else {
                println!("{}:{}", r.head_seq, r.head_hash);
            }
            Ok(if r.intact {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        AuditCmd::Summary { filter } => {
            use std::collections::BTreeMap;
            let mut stream = Box::pin(c.audit_stream(filter.into()).await?);
            let mut by: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
            let mut total = 0u64;
            while let Some(e) = stream.next().await {
                let e = e?;
                total += 1;
                let day = e.at.get(..10).unwrap_or("").to_owned();
                for (dim, v) in [
                    ("kind", e.kind),
                    ("outcome", e.outcome),
                    ("category", e.category),
                    ("day", day),
                ] {
                    if !v.is_empty() {
                        *by.entry(dim).or_default().entry(v).or_default() += 1;
                    }
                }
            }
            if json {
                println!("{}", serde_json::json!({"events": total, "by": by}));
            } else {
                println!("{total} event(s)");
                for (dim, counts) in &by {
                    println!("by {dim}:");
                    for (k, n) in counts {
                        println!("  {k:<28} {n:>10}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_verify_report(r: &pb::VerifyJobResponse, json: bool) -> Result<ExitCode> {
    if json {
        let mut v = serde_json::to_value(r)?;
        v["mismatches"] = r.mismatches.iter().map(object_json).collect();
        println!("{v}");
    } else {
        println!(
            "verification job {}: checked {}, ok {}, problems {}",
            r.job_id,
            r.checked,
            r.ok,
            r.checked - r.ok
        );
        for cat in &r.categories {
            let mut findings: Vec<_> = cat.findings.iter().collect();
            findings.sort();
            let f: Vec<String> = findings.iter().map(|(k, n)| format!("{k}={n}")).collect();
            println!(
                "  {:<16} checked {:>8} ok {:>8}  {}",
                cat.category,
                cat.checked,
                cat.ok,
                f.join(" ")
            );
        }
        for m in &r.mismatches {
            println!("  {}: {}", m.source_key, m.reason);
        }
    }
    Ok(if r.ok == r.checked {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
