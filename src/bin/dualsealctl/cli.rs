// dualsealctl's command line: every subcommand, argument and help text. `include!`d by
// main.rs and by examples/gen_docs.rs, which renders the man pages and shell completions from
// these definitions, so what `man dualsealctl` says is what the binary parses.

use clap::{Parser, Subcommand, ValueEnum};
use dualseal::api::pb;

#[derive(Parser)]
#[command(name = "dualsealctl", version, about = "Control a running dualseald")]
pub(crate) struct Args {
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
    /// TCP with TLS: the CA that signed the daemon's certificate (PEM).
    #[arg(long, env = "DUALSEAL_TLS_CA", global = true)]
    tls_ca: Option<std::path::PathBuf>,
    /// Mutual TLS: this client's certificate (PEM)...
    #[arg(long, env = "DUALSEAL_TLS_CERT", global = true, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// ... and its private key (PEM).
    #[arg(long, env = "DUALSEAL_TLS_KEY", global = true, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// The name on the daemon's certificate, when it differs from the address's host.
    #[arg(long, global = true)]
    tls_domain: Option<String>,
    /// A file holding a bearer token (never pass a token on the command line).
    #[arg(long, env = "DUALSEAL_TOKEN_FILE", global = true)]
    token_file: Option<std::path::PathBuf>,
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
        #[command(flatten)]
        scope: ScopeArgs,
        /// How many unclassified/conflicting keys to show.
        #[arg(long, default_value_t = 20)]
        samples: u32,
        /// Also read each object's first 64 KiB and say what it is (PEM key, DSN, JWK, .env,
        /// token), beside what the key rules say; exits 4 when they disagree.
        #[arg(long)]
        inspect_content: bool,
    },
    /// Start a migration job.
    Start {
        /// Only keys under this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        limits: LimitArgs,
        /// Start even when keys match more than one category (they stay in the source).
        #[arg(long)]
        allow_conflicts: bool,
        /// Start even into destination buckets weaker than provisioning requires (the audit
        /// trail records the override).
        #[arg(long)]
        allow_weak_buckets: bool,
        /// Do not start: show what the job would do and check every category's KMS key and
        /// bucket, as a start would.
        #[arg(long)]
        dry_run: bool,
        /// Follow the job after starting it, as `watch` does.
        #[arg(long)]
        watch: bool,
    },
    /// Every job as a table, or one job in detail.
    Status {
        /// Job id.
        job: Option<u64>,
        /// Another daemon to include (a shard of the same bucket); repeatable. The jobs of
        /// every daemon are listed, then their totals together.
        #[arg(long, value_name = "SOCKET")]
        also: Vec<String>,
    },
    /// Follow a job's progress until it ends: bars per category on a terminal, plain lines
    /// otherwise. Exits 0 when the job succeeded, 2 otherwise.
    Watch {
        /// Job id.
        job: u64,
    },
    /// Pause a job: no new objects start; returns once objects in flight have finished.
    Pause {
        /// Job id.
        job: u64,
    },
    /// Resume a paused job where it stopped.
    Resume {
        /// Job id.
        job: u64,
    },
    /// Stop a job for good, at once (objects in flight are abandoned as a crash would leave
    /// them; verified objects stay migrated).
    Cancel {
        /// Job id.
        job: u64,
    },
    /// Change a job's priority and limits while it runs. A limit of 0 returns it to the
    /// daemon's default.
    Limit {
        /// Job id.
        job: u64,
        /// Higher gets workers first when jobs compete.
        #[arg(long, allow_negative_numbers = true)]
        priority: Option<i32>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Each category's KMS key and bucket against the config: what differs (the default),
    /// `--apply` to make them match, `--check` to exit 4 on any drift (cron, CI).
    Provision {
        /// Create and update keys, buckets and policies until they match the config.
        #[arg(long, conflicts_with = "check")]
        apply: bool,
        /// Exit 4 when anything differs.
        #[arg(long)]
        check: bool,
        /// Write the generated policy documents (key, bucket and identity policies) here.
        #[arg(long)]
        write_policies: Option<std::path::PathBuf>,
        /// Also write the identity policies as a Terraform JSON module
        /// (`dualseal-iam.tf.json`).
        #[arg(long, requires = "write_policies")]
        terraform: bool,
    },
    /// The location map of a job: old s3://bucket/key (and version) -> new location, category,
    /// KMS key ARN, envelope version; `env` prints shell lines an application config can source.
    Mapping {
        /// The migration job.
        job: u64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = MapFormat::Json)]
        format: MapFormat,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Catch up a finished job: list the source again and migrate what is new or changed since.
    Sync {
        /// The migration job.
        job: u64,
        /// Follow it, as `watch` does.
        #[arg(long)]
        watch: bool,
    },
    /// Decommission the source bucket, in two steps: `plan JOB --mode M` prints what would
    /// happen and a one-time token; `run TOKEN` does it (if nothing changed since).
    Decommission {
        #[command(subcommand)]
        cmd: DecommissionCmd,
    },
    /// Is it safe to switch applications to the new buckets? Exit 0 when ready, 5 when not.
    CutoverCheck {
        /// The migration job.
        job: u64,
    },
    /// Read a migrated secret directly from S3 and KMS, as an application would (no daemon):
    /// checks DSSE-KMS and that the envelope was sealed for this very location, unwraps the
    /// data key with KMS and opens it. Needs s3:GetObject and kms:Decrypt only.
    Get {
        /// `s3://bucket/key`.
        url: String,
        /// Write to this file (created with mode 0600; refuses to overwrite) instead of stdout.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
        /// AWS region (else the SDK's default chain).
        #[arg(long, env = "AWS_REGION")]
        region: Option<String>,
        /// S3 and KMS endpoint (an emulator); unset means AWS.
        #[arg(long, env = "DUALSEAL_ENDPOINT_URL")]
        endpoint_url: Option<String>,
        /// KMS endpoint, when KMS is elsewhere than S3.
        #[arg(long, env = "DUALSEAL_KMS_ENDPOINT_URL")]
        kms_endpoint_url: Option<String>,
        /// The category this location belongs to (`dualsealctl mapping` names it): the
        /// envelope must be of that category.
        #[arg(long, requires = "expect_kms_key")]
        expect_category: Option<String>,
        /// The category's KMS key ARN (`dualsealctl mapping` names it): both layers must be
        /// under it. Without an expectation the keys are not checked, and `get` says so.
        #[arg(long, requires = "expect_category")]
        expect_kms_key: Option<String>,
    },
    /// The failed objects of a job, with error codes and reasons.
    Failures {
        /// Job id.
        job: u64,
    },
    /// The completion report of a job: one row per object (source key, version, category,
    /// destination, status, error code, message), like S3 Batch Operations' report.
    Report {
        /// Job id.
        job: u64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
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

/// Which objects a job takes, besides its prefix.
#[derive(clap::Args, Clone, Default)]
struct ScopeArgs {
    /// Only keys matching this glob (repeatable; `*` stays within a `/` segment, `**` does not).
    #[arg(long)]
    include: Vec<String>,
    /// Leave out keys matching this glob (repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// Only objects of this category (repeatable).
    #[arg(long = "only-category")]
    only_categories: Vec<String>,
    /// List the source from this S3 Inventory report (`s3://BUCKET/KEY/manifest.json`,
    /// CSV format) instead of ListObjectsV2: for buckets too large to list.
    #[arg(long, value_name = "MANIFEST_URL")]
    inventory: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Lockdown,
    Rollback,
    Archive,
    Delete,
}

impl From<ModeArg> for pb::DecommissionMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Lockdown => Self::Lockdown,
            ModeArg::Rollback => Self::Rollback,
            ModeArg::Archive => Self::Archive,
            ModeArg::Delete => Self::Delete,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum VerifyArg {
    /// Read back, open through KMS, compare with the source.
    Full,
    /// Open locally before writing; trust the SHA-256 S3 checked on the write and the encryption it reports (a HEAD only if its answer lacks them).
    Checksum,
}

/// How a job runs.
#[derive(clap::Args, Clone)]
struct RunArgs {
    /// How each object is proved before it counts as migrated.
    #[arg(long, value_enum, default_value_t = VerifyArg::Full)]
    verify_mode: VerifyArg,
    /// Stop the job when more than this percent of finished objects failed (100 disables;
    /// default: the daemon's).
    #[arg(long)]
    failure_threshold: Option<u32>,
    /// ... once at least this many objects finished.
    #[arg(long, default_value_t = 1000)]
    failure_min_objects: u64,
    /// Queue behind this job: start when it has ended.
    #[arg(long)]
    after: Option<u64>,
    /// Higher gets workers first when jobs compete.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
}

/// Live limits (0 or absent: the daemon's default).
#[derive(clap::Args, Clone, Default)]
struct LimitArgs {
    /// Objects in flight at most.
    #[arg(long)]
    concurrency: Option<u32>,
    /// Objects started per second.
    #[arg(long)]
    objects_per_sec: Option<u32>,
    /// Source bytes read per second.
    #[arg(long)]
    bytes_per_sec: Option<u64>,
    /// KMS requests per second.
    #[arg(long)]
    kms_rps: Option<u32>,
}

impl LimitArgs {
    fn to_pb(&self) -> pb::JobLimits {
        pb::JobLimits {
            concurrency: self.concurrency.unwrap_or(0),
            objects_per_second: self.objects_per_sec.unwrap_or(0),
            bytes_per_second: self.bytes_per_sec.unwrap_or(0),
            kms_requests_per_second: self.kms_rps.unwrap_or(0),
        }
    }
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
    #[arg(long, value_parser = parse_time)]
    since: Option<pbjson_types::Timestamp>,
    /// Events at or before this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    until: Option<pbjson_types::Timestamp>,
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
    /// Only events after this sequence number: resumes an interrupted export from the last
    /// `seq` it wrote.
    #[arg(long, default_value_t = 0)]
    after_seq: u64,
}

fn parse_time(s: &str) -> Result<pbjson_types::Timestamp, String> {
    dualseal::audit::parse_time(s).map(dualseal::api::convert::timestamp)
}

impl From<AuditFilter> for pb::ExportAuditRequest {
    fn from(f: AuditFilter) -> Self {
        Self {
            job_id: f.job.unwrap_or(0),
            since: f.since,
            until: f.until,
            after_seq: f.after_seq,
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

#[derive(Subcommand)]
enum DecommissionCmd {
    /// What a step would do, and its one-time token (valid 15 minutes).
    Plan {
        /// The migration job whose source it is.
        job: u64,
        /// lockdown (deny all but break-glass), rollback (undo a lockdown), archive (a sealed
        /// copy of every verified object in [decommission] archive_bucket, under Object Lock
        /// retention), delete (every version of the keys the job verified; never others, never
        /// under Object Lock).
        #[arg(long, value_enum)]
        mode: ModeArg,
        /// delete only: acknowledge destroying exactly this many noncurrent versions of
        /// verified keys that were never copied (the plan names the count when it refuses).
        #[arg(long, default_value_t = 0)]
        destroy_uncopied_versions: u64,
    },
    /// Execute a planned step.
    Run {
        /// The token `plan` printed.
        token: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum MapFormat {
    /// One JSON object per line.
    Json,
    /// CSV with a header row.
    Csv,
    /// `DUALSEAL_<KEY>=s3://bucket/key` lines.
    Env,
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
