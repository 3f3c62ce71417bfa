//! `dualsealctl`: a thin command-line client of the dualseald control API.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use dualseal::api::client::Client;
use futures::StreamExt;

mod view;
mod watch;

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
                })
                .await?;
            if !args.json {
                println!("dry run: nothing written; every category's KMS key and bucket is usable");
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

fn write_documents(
    dir: &std::path::Path,
    r: &pb::ProvisionResponse,
    terraform: bool,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for d in &r.documents {
        let path = dir.join(format!("{}.json", d.name));
        std::fs::write(&path, &d.json)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if terraform {
        let path = dir.join("dualseal-iam.tf.json");
        std::fs::write(&path, &r.terraform_json)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "{} document(s) written to {}",
        r.documents.len(),
        dir.display()
    );
    Ok(())
}

/// An environment variable name for a source key: `db/payments/x.json` ->
/// `DUALSEAL_DB_PAYMENTS_X_JSON`.
fn env_name(key: &str) -> String {
    let mut out = String::from("DUALSEAL_");
    for ch in key.chars() {
        out.push(if ch.is_ascii_alphanumeric() {
            ch.to_ascii_uppercase()
        } else {
            '_'
        });
    }
    out
}

/// Where an export goes: the file given (created or truncated), else standard output.
fn open_output(output: Option<&std::path::Path>) -> Result<Box<dyn Write>> {
    Ok(match output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

async fn mapping(
    c: &mut Client,
    job: u64,
    format: MapFormat,
    output: Option<&std::path::Path>,
) -> Result<ExitCode> {
    let mut out: Box<dyn Write> = open_output(output)?;
    let mut s = Box::pin(c.mapping(job).await?);
    let mut n = 0u64;
    if let MapFormat::Csv = format {
        let mut w = csv::Writer::from_writer(out);
        w.write_record([
            "source_bucket",
            "source_key",
            "source_version",
            "destination_bucket",
            "destination_key",
            "category",
            "kms_key_arn",
            "envelope_version",
        ])?;
        while let Some(m) = s.next().await {
            let m = m?;
            n += 1;
            w.write_record([
                m.source_bucket.as_str(),
                &m.source_key,
                &m.source_version,
                &m.destination_bucket,
                &m.destination_key,
                &m.category,
                &m.kms_key_arn,
                &m.envelope_version.to_string(),
            ])?;
        }
        w.flush()?;
    } else {
        let mut names = std::collections::HashMap::<String, String>::new();
        while let Some(m) = s.next().await {
            let m = m?;
            n += 1;
            if let MapFormat::Env = format {
                let name = env_name(&m.source_key);
                if let Some(other) = names.insert(name.clone(), m.source_key.clone()) {
                    anyhow::bail!(
                        "{other:?} and {:?} both map to {name}; use --format json or csv",
                        m.source_key
                    );
                }
                writeln!(
                    out,
                    "{name}=s3://{}/{}",
                    m.destination_bucket, m.destination_key
                )?;
            } else {
                writeln!(out, "{}", serde_json::to_value(&m)?)?;
            }
        }
        out.flush()?;
    }
    if output.is_some() {
        eprintln!("{n} object(s) in the map of job {job}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn get(
    url: &str,
    output: Option<&std::path::Path>,
    cfg: dualseal::config::AwsConfig,
    expect: Option<dualseal::reader::Expectation>,
) -> Result<ExitCode> {
    if expect.is_none() {
        eprintln!("warning: no --expect-category/--expect-kms-key given: the KMS keys of both layers and the category were NOT checked against what this location should hold (only that it is DSSE-KMS and an envelope sealed for this location); `dualsealctl mapping` names both");
    }
    let expect = expect.as_ref();
    let (bucket, key) = url
        .strip_prefix("s3://")
        .and_then(|r| r.split_once('/'))
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .context("give the object as s3://BUCKET/KEY")?;
    let (s3_sdk, kms_sdk) = dualseal::aws::service_configs(&cfg).await;
    let store = dualseal::store::S3Store::new(&s3_sdk, cfg.path_style());
    let keys = dualseal::kms::AwsKms::new(&kms_sdk);
    match output {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| {
                    format!("cannot create {} (it must not exist yet)", path.display())
                })?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            match dualseal::reader::read_into(&store, &keys, bucket, key, expect, &mut w).await {
                Ok(n) => eprintln!("{n} bytes written to {}", path.display()),
                Err(e) => {
                    // Never leave part of a secret behind under the name the caller asked for.
                    drop(w);
                    let removed = std::fs::remove_file(path);
                    return Err(anyhow::Error::new(e).context(match removed {
                        Ok(()) => format!("{} was not written", path.display()),
                        Err(_) => format!("{} is incomplete: delete it", path.display()),
                    }));
                }
            }
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = Counting {
                inner: std::io::BufWriter::with_capacity(1 << 20, stdout.lock()),
                written: 0,
            };
            if let Err(e) =
                dualseal::reader::read_into(&store, &keys, bucket, key, expect, &mut w).await
            {
                let what = if w.written == 0 {
                    "nothing was written".to_owned()
                } else {
                    format!(
                        "the output is incomplete: {} authenticated byte(s) were written before the failure; discard them",
                        w.written
                    )
                };
                return Err(anyhow::Error::new(e).context(what));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A writer that counts what it was given, so that a failure can say whether any output left.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: std::io::Write> std::io::Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
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

fn print_plan(p: &pb::PlanResponse, prefix: &str, json: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_value(p)?);
    } else {
        println!(
            "plan for s3://{}/{}: {} objects, {}",
            p.source_bucket,
            prefix,
            p.total_objects,
            view::bytes(p.total_bytes)
        );
        for cat in &p.categories {
            println!(
                "  {:<16} -> {:<28} {:>8} objects {:>12}",
                cat.category,
                cat.destination_bucket,
                cat.objects,
                view::bytes(cat.bytes)
            );
            let mut rules: Vec<_> = cat.objects_by_rule.iter().collect();
            rules.sort();
            for (rule, n) in rules {
                println!("      {n:>8} by {rule}");
            }
            for l in &cat.largest {
                println!("      largest {} ({})", l.key, view::bytes(l.bytes));
            }
        }
        if let Some(e) = &p.estimate {
            println!(
                "  estimate: {} GET, {} PUT, {} LIST/HEAD; KMS {} by dualseal + {} by S3 for DSSE; {:.3} GB under DSSE; about ${:.2} at list prices",
                e.s3_gets, e.s3_puts, e.s3_lists_and_heads, e.kms_dualseal_requests, e.kms_dsse_requests, e.dsse_gb, e.cost_usd
            );
            println!(
                "  time: {}",
                e.eta.as_ref().map_or_else(
                    || e.basis.clone(),
                    |d| format!(
                        "at least {} ({})",
                        view::duration(u64::try_from(d.seconds).unwrap_or(0)),
                        e.basis
                    )
                )
            );
        }
        println!(
            "  unclassified (stay in place): {} objects, {}",
            p.unclassified_objects,
            view::bytes(p.unclassified_bytes)
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
        if let Some(c) = &p.content {
            print_content(c);
        }
    }
    let disagree = p
        .content
        .as_ref()
        .is_some_and(|c| c.disagreement_objects > 0);
    Ok(if p.conflict_objects > 0 {
        ExitCode::from(3)
    } else if disagree {
        ExitCode::from(4)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_content(c: &pb::ContentReport) {
    let mut kinds: Vec<String> = c
        .objects_by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    kinds.sort();
    println!(
        "  content of {} object(s): {}; {} agree with the key rules, {} disagree, {} of a kind no category claims, {} not recognised, {} unreadable",
        c.inspected_objects,
        if kinds.is_empty() { "nothing recognised".to_owned() } else { kinds.join(", ") },
        c.agreement_objects,
        c.disagreement_objects,
        c.unclaimed_objects,
        c.unrecognised_objects,
        c.unreadable_objects
    );
    if !c.first_error.is_empty() {
        println!("    first read error: {}", c.first_error);
    }
    if c.disagreement_objects > 0 {
        println!("  disagreements (a migration leaves these in the source until the rules agree):");
        for v in &c.disagreements_sample {
            println!(
                "    {}: key rules say {}; content is {} ({}), claimed by {}",
                v.key, v.key_rules, v.kind, v.why, v.content_category
            );
        }
    }
    println!("  verdicts:");
    for v in &c.verdicts_sample {
        println!(
            "    {} {}: {} ({}); key rules: {}{}",
            if v.agrees {
                "ok "
            } else if v.content_category.is_empty() {
                " - "
            } else {
                "!! "
            },
            v.key,
            v.kind,
            v.why,
            v.key_rules,
            if v.content_category.is_empty() {
                String::new()
            } else {
                format!("; content category: {}", v.content_category)
            }
        );
    }
}

/// Streams a job's completion report: every object with its outcome.
async fn report(
    c: &mut Client,
    job: u64,
    format: Format,
    output: Option<&std::path::Path>,
) -> Result<ExitCode> {
    let out: Box<dyn Write> = open_output(output)?;
    let mut s = Box::pin(c.objects_stream(job, pb::ObjectState::Unspecified).await?);
    let mut n = 0u64;
    match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record([
                "source_bucket",
                "source_key",
                "source_version",
                "category",
                "destination_bucket",
                "destination_key",
                "status",
                "size",
                "attempts",
                "error_code",
                "message",
            ])?;
            let bucket = c.job(job).await?.source_bucket;
            while let Some(o) = s.next().await {
                let o = o?;
                n += 1;
                w.write_record([
                    bucket.as_str(),
                    &o.source_key,
                    &o.source_version,
                    &o.category,
                    &o.destination_bucket,
                    &o.destination_key,
                    &object_state(o.state).to_ascii_lowercase(),
                    &o.size_bytes.to_string(),
                    &o.attempts.to_string(),
                    &o.error_code,
                    &o.reason,
                ])?;
            }
            w.flush()?;
        }
        Format::Jsonl => {
            let mut out = out;
            while let Some(o) = s.next().await {
                let o = o?;
                n += 1;
                writeln!(out, "{}", object_json(&o))?;
            }
            out.flush()?;
        }
    }
    if output.is_some() {
        eprintln!("{n} object(s) in the report of job {job}");
    }
    Ok(ExitCode::SUCCESS)
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
            let mut out: Box<dyn Write> = open_output(output.as_deref())?;
            let mut n = 0u64;
            match format {
                Format::Jsonl => {
                    // The record form (docs/audit.md): what each hash covers, so any copy of
                    // the export verifies offline.
                    while let Some(e) = stream.next().await {
                        let e = dualseal::api::convert::audit_record(e?);
                        writeln!(out, "{}", serde_json::to_string(&e)?)?;
                        n += 1;
                    }
                    out.flush()?;
                }
                Format::Csv => {
                    let mut w = csv::Writer::from_writer(out);
                    while let Some(e) = stream.next().await {
                        w.serialize(dualseal::api::convert::audit_record(e?))?;
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
                let day = e
                    .time
                    .as_ref()
                    .map(view::time)
                    .and_then(|t| t.get(..10).map(str::to_owned))
                    .unwrap_or_default();
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

fn print_verify_report(r: &pb::VerifyReport, json: bool) -> Result<ExitCode> {
    if json {
        let mut v = serde_json::to_value(r)?;
        v["mismatches"] = r.mismatches.iter().map(object_json).collect();
        println!("{v}");
    } else {
        println!(
            "verification job {}: checked {}, ok {}, problems {}",
            r.job_id,
            r.checked_objects,
            r.ok_objects,
            r.checked_objects - r.ok_objects
        );
        for cat in &r.categories {
            let mut findings: Vec<_> = cat.objects_by_finding.iter().collect();
            findings.sort();
            let f: Vec<String> = findings.iter().map(|(k, n)| format!("{k}={n}")).collect();
            println!(
                "  {:<16} checked {:>8} ok {:>8}  {}",
                cat.category,
                cat.checked_objects,
                cat.ok_objects,
                f.join(" ")
            );
        }
        for m in &r.mismatches {
            println!("  {}: {}", m.source_key, m.reason);
        }
    }
    Ok(if r.ok_objects == r.checked_objects {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
