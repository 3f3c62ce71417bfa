//! `dualsealctl`: a thin command-line client of the dualseald control API.

use std::process::ExitCode;

use anyhow::{Context, Result};
use dualseal::api::client::Client;
use futures::StreamExt;

mod audit;
mod reports;
mod transfer;
mod view;
mod watch;

use audit::{audit, verify_file};
use reports::{print_plan, print_verify_report, report};
use transfer::{get, mapping, write_documents};

// The clap definitions, shared with examples/gen_docs.rs (man pages, completions).
include!("cli.rs");

fn options(scope: ScopeArgs, run: Option<&RunArgs>, limits: Option<&LimitArgs>) -> pb::JobOptions {
    let mut o = pb::JobOptions {
        include: scope.include,
        exclude: scope.exclude,
        only_categories: scope.only_categories,
        limits: limits.map(LimitArgs::to_pb),
        inventory_manifest: scope.inventory.unwrap_or_default(),
        ..Default::default()
    };
    if let Some(r) = run {
        o.verify_mode = match r.verify_mode {
            VerifyArg::Full => pb::VerifyMode::Full,
            VerifyArg::Checksum => pb::VerifyMode::Checksum,
        } as i32;
        o.failure_threshold_percent = r.failure_threshold.unwrap_or(0);
        o.failure_threshold_min_objects = r.failure_min_objects;
        o.after_job_id = r.after.unwrap_or(0);
        o.priority = r.priority;
    }
    o
}

#[tokio::main]
async fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let args = Args::parse();
    let json = args.json;
    match run(args).await {
        Ok(code) => code,
        Err(e) if closed_pipe(&e) => ExitCode::from(EXIT_CLOSED_PIPE),
        Err(e) if json => {
            eprintln!("{}", error_json(&e));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("dualsealctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// An error as one JSON object for scripts: the daemon's status code and the stable reason
/// of its `ErrorInfo` (what a gRPC client reads), and each invalid field it named.
fn error_json(e: &anyhow::Error) -> serde_json::Value {
    let client = e.downcast_ref::<dualseal::api::client::ClientError>();
    let code = match client {
        Some(dualseal::api::client::ClientError::Status(s)) => {
            // gRPC's canonical code names, by number.
            const NAMES: [&str; 17] = [
                "OK",
                "CANCELLED",
                "UNKNOWN",
                "INVALID_ARGUMENT",
                "DEADLINE_EXCEEDED",
                "NOT_FOUND",
                "ALREADY_EXISTS",
                "PERMISSION_DENIED",
                "RESOURCE_EXHAUSTED",
                "FAILED_PRECONDITION",
                "ABORTED",
                "OUT_OF_RANGE",
                "UNIMPLEMENTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS",
                "UNAUTHENTICATED",
            ];
            usize::try_from(i32::from(s.code()))
                .ok()
                .and_then(|i| NAMES.get(i))
                .map_or_else(String::new, |n| (*n).to_owned())
        }
        _ => String::new(),
    };
    let fields: Vec<serde_json::Value> = client
        .map(|c| c.field_violations())
        .unwrap_or_default()
        .into_iter()
        .map(|(field, description)| serde_json::json!({"field": field, "description": description}))
        .collect();
    serde_json::json!({"error": {
        "code": code,
        "reason": client.and_then(dualseal::api::client::ClientError::reason).unwrap_or_default(),
        "message": format!("{e:#}"),
        "field_violations": fields,
    }})
}

/// The exit status of a tool killed by SIGPIPE (128 + 13), as shells report it.
const EXIT_CLOSED_PIPE: u8 = 141;

/// Whether an error is only the reader of our output going away (`dualsealctl … | head`).
fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `println!` panics when stdout's reader has gone; that is not a failure of ours, so the
/// process ends quietly, as a tool killed by SIGPIPE does, instead of printing a backtrace.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("Broken pipe") {
            std::process::exit(i32::from(EXIT_CLOSED_PIPE));
        }
        default(info);
    }));
}

fn object_state(s: i32) -> &'static str {
    pb::ObjectState::try_from(s).map_or("UNKNOWN", |s| {
        s.as_str_name().trim_start_matches("OBJECT_STATE_")
    })
}

/// A job as JSON: proto3's canonical JSON mapping (enums by name, times in RFC 3339, 64-bit
/// integers as strings), field names as in the proto; what grpcurl prints.
pub(crate) fn job_json(j: &pb::Job) -> serde_json::Value {
    serde_json::to_value(j).unwrap_or_default()
}

fn object_json(o: &pb::ObjectStatus) -> serde_json::Value {
    serde_json::to_value(o).unwrap_or_default()
}

fn emit_job(json: bool, j: &pb::Job) {
    if json {
        println!("{}", job_json(j));
    } else {
        print!("{}", view::detail(j));
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
    if let Cmd::Get {
        url,
        output,
        region,
        endpoint_url,
        kms_endpoint_url,
        expect_category,
        expect_kms_key,
    } = &args.cmd
    {
        let expect = match (expect_category, expect_kms_key) {
            (Some(category), Some(kms_key_arn)) => Some(dualseal::reader::Expectation {
                category: category.clone(),
                kms_key_arn: kms_key_arn.clone(),
            }),
            _ => None,
        };
        return get(
            url,
            output.as_deref(),
            dualseal::config::AwsConfig {
                region: region.clone(),
                endpoint_url: endpoint_url.clone(),
                kms_endpoint_url: kms_endpoint_url.clone(),
                ..Default::default()
            },
            expect,
        )
        .await;
    }
    let mut c = Client::connect_with(&args.socket, client_auth(&args)?).await?;
    match args.cmd {
        Cmd::Plan {
            prefix,
            scope,
            samples,
            inspect_content,
        } => {
            let p = c
                .plan_with(pb::PlanRequest {
                    prefix: prefix.clone(),
                    sample_limit: samples,
                    options: Some(options(scope, None, None)),
                    preflight: false,
                    inspect_content,
                    allow_weak_buckets: false,
                })
                .await?;
            print_plan(&p, &prefix, args.json)
        }
        Cmd::Start {
            prefix,
            scope,
            run,
            limits,
            allow_conflicts,
            allow_weak_buckets,
            dry_run: true,
            ..
        } => {
            let p = c
                .plan_with(pb::PlanRequest {
                    prefix: prefix.clone(),
                    sample_limit: 20,
                    options: Some(options(scope, Some(&run), Some(&limits))),
                    preflight: true,
                    inspect_content: false,
                    allow_weak_buckets,
                })
                .await?;
            if !args.json {
                println!("dry run: nothing written; every category's KMS key and bucket is usable");
                for weak in &p.weak_buckets {
                    println!(
                        "  weak, accepted by --allow-weak-buckets (a start audits it): {weak}"
                    );
                }
            }
            let code = print_plan(&p, &prefix, args.json)?;
            Ok(if allow_conflicts {
                ExitCode::SUCCESS
            } else {
                code
            })
        }
        Cmd::Start {
            prefix,
            scope,
            run,
            limits,
            allow_conflicts,
            allow_weak_buckets,
            dry_run: false,
            watch,
        } => {
            let j = c
                .start_with(pb::StartJobRequest {
                    prefix,
                    allow_conflicts,
                    options: Some(options(scope, Some(&run), Some(&limits))),
                    allow_weak_buckets,
                })
                .await?;
            if args.json && !watch {
                println!("{}", job_json(&j));
            } else if !args.json {
                println!("started job {} ({})", j.job_id, view::state(&j));
                if !j.note.is_empty() {
                    println!("  {}", j.note);
                }
            }
            if !watch {
                return Ok(ExitCode::SUCCESS);
            }
            let s = c.watch(j.job_id).await?;
            let last = watch::follow(s, watch::Mode::pick(args.json)).await?;
            Ok(watch_exit(&last))
        }
        Cmd::Status { job, ref also } if !also.is_empty() => {
            shards_status(&mut c, &args, job, also).await
        }
        Cmd::Status { job, .. } => {
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
            } else if job.is_some() {
                jobs.iter().for_each(|j| print!("{}", view::detail(j)));
            } else {
                print!("{}", view::table(&jobs));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Watch { job } => {
            let s = c.watch(job).await?;
            let last = watch::follow(s, watch::Mode::pick(args.json)).await?;
            Ok(watch_exit(&last))
        }
        Cmd::Limit {
            job,
            priority,
            limits,
        } => {
            let j = c
                .update(pb::UpdateJobRequest {
                    job_id: job,
                    priority,
                    concurrency: limits.concurrency,
                    objects_per_second: limits.objects_per_sec,
                    bytes_per_second: limits.bytes_per_sec,
                    kms_requests_per_second: limits.kms_rps,
                })
                .await?;
            emit_job(args.json, &j);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Provision {
            apply,
            check,
            write_policies,
            terraform,
        } => {
            let r = c.provision(apply).await?;
            if let Some(dir) = &write_policies {
                write_documents(dir, &r, terraform)?;
            }
            if args.json {
                println!("{}", serde_json::to_value(&r)?);
            } else {
                print!("{}", view::provision(&r, apply));
            }
            Ok(if (check || apply) && !r.changes.is_empty() {
                ExitCode::from(4)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Mapping {
            job,
            format,
            output,
        } => mapping(&mut c, job, format, output.as_deref()).await,
        Cmd::Sync { job, watch } => {
            let j = c.sync(job).await?;
            if !watch {
                emit_job(args.json, &j);
                return Ok(ExitCode::SUCCESS);
            }
            let s = c.watch(job).await?;
            let last = watch::follow(s, watch::Mode::pick(args.json)).await?;
            Ok(watch_exit(&last))
        }
        Cmd::Decommission { cmd } => {
            match cmd {
                DecommissionCmd::Plan {
                    job,
                    mode,
                    destroy_uncopied_versions,
                } => {
                    let p = c
                        .plan_decommission_with(pb::PlanDecommissionRequest {
                            job_id: job,
                            mode: pb::DecommissionMode::from(mode) as i32,
                            destroy_uncopied_versions,
                        })
                        .await?;
                    if args.json {
                        println!("{}", serde_json::to_value(&p)?);
                    } else {
                        let mode = pb::DecommissionMode::try_from(p.mode)
                            .ok()
                            .map(|m| m.as_str_name());
                        let mode = view::word(mode, "DECOMMISSION_MODE_");
                        println!("{mode} plan for job {job}: {}", p.summary);
                        println!(
                            "to do it before {}: dualsealctl decommission run {}",
                            p.expire_time.as_ref().map_or_else(String::new, view::time),
                            p.token
                        );
                    }
                }
                DecommissionCmd::Run { token } => println!("{}", c.decommission(&token).await?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CutoverCheck { job } => {
            let r = c.cutover_check(job).await?;
            if args.json {
                println!("{}", serde_json::to_value(&r)?);
            } else {
                for ch in &r.checks {
                    println!(
                        "  [{}] {:<34} {}",
                        if ch.ok {
                            "ok"
                        } else if ch.blocking {
                            "NO"
                        } else {
                            "--"
                        },
                        ch.name,
                        ch.detail
                    );
                }
                println!(
                    "job {job}: {}",
                    if r.ready {
                        "ready to switch applications over"
                    } else {
                        "NOT ready: fix the checks marked NO"
                    }
                );
            }
            Ok(if r.ready {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(5)
            })
        }
        Cmd::Get { .. } => anyhow::bail!("get is handled before connecting to the daemon"),
        Cmd::Failures { job } => {
            let mut s = Box::pin(c.objects_stream(job, pb::ObjectState::Failed).await?);
            let mut n = 0u64;
            while let Some(o) = s.next().await {
                let o = o?;
                n += 1;
                if args.json {
                    println!("{}", object_json(&o));
                } else {
                    println!(
                        "{}  [{}] attempts {}: {}",
                        o.source_key, o.error_code, o.attempts, o.reason
                    );
                }
            }
            if !args.json {
                eprintln!("{n} failed object(s) in job {job}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Report {
            job,
            format,
            output,
        } => report(&mut c, job, format, output.as_deref()).await,
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

/// `status --also`: the jobs of several daemons (shards of one bucket), each under its socket,
/// then the objects of all of them together.
async fn shards_status(
    first: &mut Client,
    args: &Args,
    job: Option<u64>,
    also: &[String],
) -> Result<ExitCode> {
    let mut per_daemon = Vec::new();
    let list = |jobs: Vec<pb::Job>| -> Vec<pb::Job> {
        jobs.into_iter()
            .filter(|j| job.is_none_or(|id| j.job_id == id))
            .collect()
    };
    per_daemon.push((args.socket.clone(), list(first.jobs().await?)));
    for socket in also {
        let mut c = Client::connect_with(socket, client_auth(args)?)
            .await
            .with_context(|| format!("cannot reach the daemon at {socket}"))?;
        per_daemon.push((socket.clone(), list(c.jobs().await?)));
    }
    let sum = |f: fn(&pb::Job) -> u64| -> u64 {
        per_daemon
            .iter()
            .flat_map(|(_, jobs)| jobs.iter())
            .map(f)
            .sum()
    };
    let totals = serde_json::json!({
        "discovered": sum(|j| j.discovered_objects),
        "verified": sum(|j| j.verified_objects),
        "failed": sum(|j| j.failed_objects),
        "unclassified": sum(|j| j.unclassified_objects),
        "conflicts": sum(|j| j.conflict_objects),
        "pending": sum(|j| j.pending_objects),
        "verified_bytes": sum(|j| j.verified_bytes),
    });
    if args.json {
        let daemons: Vec<serde_json::Value> = per_daemon
            .iter()
            .map(|(s, jobs)| {
                serde_json::json!({"socket": s, "jobs": jobs.iter().map(job_json).collect::<Vec<_>>()})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"daemons": daemons, "totals": totals})
        );
    } else {
        for (socket, jobs) in &per_daemon {
            println!("== {socket}");
            if jobs.is_empty() {
                println!("no jobs");
            } else {
                print!("{}", view::table(jobs));
            }
        }
        println!(
            "== all {} daemons: {} verified ({}), {} failed, {} in progress, {} unclassified, {} conflicts, of {} discovered",
            per_daemon.len(),
            totals["verified"],
            view::bytes(sum(|j| j.verified_bytes)),
            totals["failed"],
            totals["in_progress"],
            totals["unclassified"],
            totals["conflicts"],
            totals["discovered"]
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn client_auth(args: &Args) -> Result<dualseal::api::client::ClientAuth> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
    };
    Ok(dualseal::api::client::ClientAuth {
        ca_pem: args.tls_ca.as_deref().map(read).transpose()?,
        identity_pem: match (&args.tls_cert, &args.tls_key) {
            (Some(c), Some(k)) => Some((read(c)?, zeroize::Zeroizing::new(read(k)?))),
            _ => None,
        },
        domain: args.tls_domain.clone(),
        token: args
            .token_file
            .as_deref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map(|t| zeroize::Zeroizing::new(t.trim().to_owned()))
                    .with_context(|| format!("cannot read {}", p.display()))
            })
            .transpose()?,
    })
}

fn watch_exit(j: &pb::Job) -> ExitCode {
    if j.state == pb::JobState::Succeeded as i32 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
