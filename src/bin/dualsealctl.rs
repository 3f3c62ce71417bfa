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
    /// Re-read every migrated object of a job and check it again.
    Verify {
        /// Job id.
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
        cmd: AuditCmd,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Export audit events.
    Export {
        /// Only this job's events.
        #[arg(long)]
        job: Option<u64>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
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
        Cmd::Verify { job } => {
            let r = c.verify(job).await?;
            if args.json {
                let mut v = serde_json::to_value(&r)?;
                v["mismatches"] = r.mismatches.iter().map(object_json).collect();
                println!("{v}");
            } else {
                println!(
                    "job {}: checked {}, ok {}, mismatches {}",
                    r.job_id,
                    r.checked,
                    r.ok,
                    r.mismatches.len()
                );
                for m in &r.mismatches {
                    println!("  {}: {}", m.source_key, m.reason);
                }
            }
            Ok(if r.mismatches.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
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
        Cmd::Audit {
            cmd:
                AuditCmd::Export {
                    job,
                    format,
                    output,
                },
        } => {
            let events = c.audit(job.unwrap_or(0)).await?;
            let mut out: Box<dyn Write> = match &output {
                Some(p) => Box::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            match format {
                Format::Jsonl => {
                    for e in &events {
                        writeln!(out, "{}", serde_json::to_string(e)?)?;
                    }
                }
                Format::Csv => {
                    let mut w = csv::Writer::from_writer(out);
                    for e in &events {
                        w.serialize(e)?;
                    }
                    w.flush()?;
                }
            }
            if let Some(p) = output {
                eprintln!("wrote {} audit events to {}", events.len(), p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
