//! The daemon's configuration: one strict serde tree, validated once, reporting every problem
//! together so an operator fixes a file in one pass.

mod validate;

use std::path::PathBuf;

use serde::Deserialize;

pub use crate::aws::AwsConfig;
use crate::classify::DestKeyMode;
pub use crate::store::RetentionMode;

/// Default ceiling on the objects migrated at once: a job's adaptive limit starts at
/// `engine::limit::START` and climbs toward it while that pays.
pub const DEFAULT_CONCURRENCY: usize = 128;
/// Upper bound on workers: beyond this, S3 and KMS throttle long before we gain anything.
pub const MAX_CONCURRENCY: usize = 1024;
/// Default per-object attempt budget before an object is marked failed.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default KMS requests per second per job. The account's shared quota for cryptographic
/// operations is 5,500/s in the smallest regions; staying well under it leaves room for the
/// applications that share the account while a migration runs.
pub const DEFAULT_KMS_REQUESTS_PER_SEC: u32 = 1000;
/// Default time a pause or cancel lets in-flight objects finish before abandoning them.
pub const DEFAULT_PAUSE_DEADLINE_SECS: u64 = 30;
/// Default failure threshold, as S3 Batch Operations applies it: stop a job once more than
/// half of at least 1,000 finished objects failed; something systematic is wrong.
pub const DEFAULT_FAILURE_THRESHOLD: (u32, u64) = (50, 1000);

/// Errors loading or validating a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// The path given.
        path: PathBuf,
        /// The parser's message (line, column, field).
        message: String,
    },
    /// The file parsed but its values are inconsistent; every problem is listed.
    #[error("config file {path} has {} problem(s):\n  - {}", .problems.len(), .problems.join("\n  - "))]
    Invalid {
        /// The path given.
        path: PathBuf,
        /// One line per problem, each naming the field and what to do.
        problems: Vec<String>,
    },
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where AWS (or an emulator) is.
    #[serde(default)]
    pub aws: AwsConfig,
    /// The master bucket to migrate from.
    pub source: SourceConfig,
    /// Daemon settings.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// Categories, in match order.
    #[serde(rename = "category", default)]
    pub categories: Vec<CategoryConfig>,
    /// Who may use the control socket.
    #[serde(default)]
    pub access: crate::access::AccessConfig,
    /// The optional Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Buckets, keys and policies.
    #[serde(default)]
    pub provision: ProvisionConfig,
    /// The optional TCP control listener.
    #[serde(default)]
    pub tcp: TcpConfig,
    /// Decommissioning the source bucket.
    #[serde(default)]
    pub decommission: DecommissionConfig,
    /// Prices for the plan's cost estimate.
    #[serde(default)]
    pub pricing: Pricing,
}

/// List prices for the plan's estimate, USD. Defaults: AWS us-east-1 public prices.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Pricing {
    /// S3 GET (and other reads), per 1,000 requests.
    pub s3_get_per_1000: f64,
    /// S3 PUT, LIST, HEAD-class requests, per 1,000.
    pub s3_put_per_1000: f64,
    /// KMS requests, per 10,000.
    pub kms_per_10000: f64,
    /// DSSE-KMS, per GB written.
    pub dsse_per_gb: f64,
}

impl Pricing {
    /// Each price with its key, for checks and messages.
    pub fn named(&self) -> [(&'static str, f64); 4] {
        [
            ("s3_get_per_1000", self.s3_get_per_1000),
            ("s3_put_per_1000", self.s3_put_per_1000),
            ("kms_per_10000", self.kms_per_10000),
            ("dsse_per_gb", self.dsse_per_gb),
        ]
    }
}

impl Default for Pricing {
    fn default() -> Self {
        Self {
            s3_get_per_1000: 0.0004,
            s3_put_per_1000: 0.005,
            kms_per_10000: 0.03,
            dsse_per_gb: 0.003,
        }
    }
}

/// Decommissioning the source bucket after cutover.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DecommissionConfig {
    /// Principals (role ARNs) a lockdown still lets in: the break-glass path back.
    #[serde(default)]
    pub break_glass: Vec<String>,
    /// Bucket `--mode archive` copies the source into (Object Lock enabled, created by the
    /// operator); unset: archive is refused.
    pub archive_bucket: Option<String>,
    /// Days each archived object is retained under Object Lock.
    #[serde(default = "default_archive_retention_days")]
    pub archive_retention_days: u32,
    /// Object Lock mode of the archive copies.
    #[serde(default)]
    pub archive_retention_mode: RetentionMode,
}

fn default_archive_retention_days() -> u32 {
    365
}

impl Default for DecommissionConfig {
    fn default() -> Self {
        Self {
            break_glass: Vec::new(),
            archive_bucket: None,
            archive_retention_days: default_archive_retention_days(),
            archive_retention_mode: RetentionMode::default(),
        }
    }
}

/// The control API over TCP: off unless `listen` is set. TLS is required except on loopback;
/// callers authenticate by client certificate (`client_ca`, roles by common name in
/// `[access]`) or bearer token (`tokens_file`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    /// Address to listen on (`0.0.0.0:7443`).
    pub listen: Option<std::net::SocketAddr>,
    /// Server certificate chain (PEM): a path, or `credential:NAME` for systemd's
    /// `LoadCredential=` (read from `$CREDENTIALS_DIRECTORY/NAME`).
    pub tls_cert: Option<String>,
    /// Server private key (PEM), path or `credential:NAME`.
    pub tls_key: Option<String>,
    /// CA whose client certificates are accepted (mutual TLS), path or `credential:NAME`.
    pub client_ca: Option<String>,
    /// Bearer tokens, `ROLE NAME TOKEN` per line, path or `credential:NAME`.
    pub tokens_file: Option<String>,
}

/// Resolves a secret file reference: a path, or `credential:NAME` under
/// `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
///
/// # Errors
/// The reference names a credential but the service has no credentials directory.
pub fn secret_path(reference: &str) -> Result<PathBuf, String> {
    match reference.strip_prefix("credential:") {
        Some(name) => std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(|d| PathBuf::from(d).join(name))
            .ok_or_else(|| {
                format!("{reference:?} names a systemd credential, but CREDENTIALS_DIRECTORY is not set; add LoadCredential={name}:PATH to the unit")
            }),
        None => Ok(PathBuf::from(reference)),
    }
}

/// Prometheus metrics over HTTP: off unless `listen` is set.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve `/metrics` on, e.g. `127.0.0.1:9464`. Loopback only unless
    /// `allow_remote` is set: the metrics name categories and buckets.
    pub listen: Option<std::net::SocketAddr>,
    /// Permit a non-loopback `listen` address.
    #[serde(default)]
    pub allow_remote: bool,
}

/// How the daemon writes its log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (journald adds time and unit).
    #[default]
    Text,
    /// One JSON object per line, fields included, for log pipelines.
    Json,
}

/// The source ("master") bucket.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Bucket name.
    pub bucket: String,
    /// Only keys under this prefix are considered.
    #[serde(default)]
    pub prefix: String,
}

/// Daemon settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Directory of the sled journal.
    #[serde(default = "default_journal")]
    pub journal_path: PathBuf,
    /// Unix socket the control API listens on.
    #[serde(default = "default_socket")]
    pub control_socket: PathBuf,
    /// Permission bits of the control socket, octal (`"0660"`: owner and group). Who may do
    /// what is then decided by `[access]` from the caller's uid/gid.
    #[serde(default = "default_socket_mode")]
    pub control_socket_mode: String,
    /// Objects migrated at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Attempts per object before it is marked failed.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Plaintext bytes per envelope segment.
    #[serde(default = "default_segment")]
    pub segment_size: u32,
    /// Default KMS requests per second per job (0: unlimited); jobs may override it.
    #[serde(default = "default_kms_rate")]
    pub kms_requests_per_sec: u32,
    /// Seconds a pause or cancel waits for in-flight objects before abandoning them.
    #[serde(default = "default_pause_deadline")]
    pub pause_deadline_secs: u64,
    /// Default failure threshold: percent of failed objects (100 disables it) ...
    #[serde(default = "default_threshold_percent")]
    pub failure_threshold_percent: u32,
    /// ... judged once at least this many objects finished.
    #[serde(default = "default_threshold_min")]
    pub failure_threshold_min_objects: u64,
    /// Log format.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Log filter (`info`, `info,dualseal=debug`); `DUALSEAL_LOG` overrides it at start.
    /// Reloaded on SIGHUP.
    #[serde(default)]
    pub log_filter: Option<String>,
    /// Objects sealed under one KMS data key per category (0, the default: a fresh data key
    /// per object). See FORMAT.md, "Shared data keys", for the trade-off.
    #[serde(default)]
    pub data_key_reuse_objects: u32,
    /// Seconds one shared data key is used for new objects.
    #[serde(default = "default_data_key_reuse_secs")]
    pub data_key_reuse_secs: u64,
    /// This daemon's share of the source when several split one bucket: `"I/N"` (1-based).
    /// Each shard has its own journal; `dualseald --shard` overrides it.
    #[serde(default)]
    pub shard: Option<String>,
    /// Bytes of objects in memory at once across all jobs (each object in flight counts three
    /// times its size: source, envelope, read-back). Large objects then wait for room instead
    /// of exhausting memory; one larger than the budget runs alone.
    #[serde(default = "default_max_bytes_in_flight")]
    pub max_bytes_in_flight: u64,
    /// Objects of at least this many bytes are streamed: read, sealed and written as a
    /// multipart upload part by part, and read back the same way, never held whole.
    #[serde(default = "default_multipart_threshold")]
    pub multipart_threshold: u64,
    /// Bytes of envelope per uploaded part (raised for objects that would need more than
    /// 10,000 parts).
    #[serde(default = "default_multipart_part_size")]
    pub multipart_part_size: u64,
    /// Parts of one object uploading at once.
    #[serde(default = "default_multipart_parts_in_flight")]
    pub multipart_parts_in_flight: u32,
    /// Group commit of the journal: milliseconds a commit of objects' final states waits after
    /// the previous one, so the objects finished meanwhile share its transaction and flush (0:
    /// commit at once).
    #[serde(default = "default_journal_commit_window_ms")]
    pub journal_commit_window_ms: u64,
}

fn default_journal_commit_window_ms() -> u64 {
    2
}

/// Bounds of `journal_commit_window_ms`: a window longer than this only delays answers.
pub const COMMIT_WINDOW_MAX_MS: u64 = 100;

fn default_multipart_threshold() -> u64 {
    64 * 1024 * 1024
}

fn default_multipart_part_size() -> u64 {
    8 * 1024 * 1024
}

fn default_multipart_parts_in_flight() -> u32 {
    4
}

/// Bounds of `multipart_threshold`: S3's smallest part .. its largest single PUT, less 16 MiB
/// for the envelope's header and 16 bytes per segment.
pub const MULTIPART_THRESHOLD_RANGE: std::ops::RangeInclusive<u64> =
    5 * 1024 * 1024..=5 * 1024 * 1024 * 1024 - 16 * 1024 * 1024;

/// Bounds of `multipart_part_size`: S3's smallest part .. 512 MiB (memory holds a few).
pub const MULTIPART_PART_SIZE_RANGE: std::ops::RangeInclusive<u64> =
    5 * 1024 * 1024..=512 * 1024 * 1024;

fn default_max_bytes_in_flight() -> u64 {
    1024 * 1024 * 1024
}

/// Bounds of `max_bytes_in_flight`: 16 MiB .. 64 GiB.
pub const BYTES_IN_FLIGHT_RANGE: std::ops::RangeInclusive<u64> =
    16 * 1024 * 1024..=64 * 1024 * 1024 * 1024;

impl DaemonConfig {
    /// The parsed shard (`None`: the whole source, or a value `problems` reports).
    pub fn shard(&self) -> Option<crate::shard::Shard> {
        self.shard.as_deref().and_then(|s| s.parse().ok())
    }
}

fn default_data_key_reuse_secs() -> u64 {
    300
}

/// The most objects one shared data key may seal: far below the 2^32 messages the AWS
/// Encryption SDK allows, so one leaked key exposes a bounded batch.
pub const MAX_DATA_KEY_REUSE_OBJECTS: u32 = 1_000_000;

fn default_kms_rate() -> u32 {
    DEFAULT_KMS_REQUESTS_PER_SEC
}
fn default_pause_deadline() -> u64 {
    DEFAULT_PAUSE_DEADLINE_SECS
}
fn default_threshold_percent() -> u32 {
    DEFAULT_FAILURE_THRESHOLD.0
}
fn default_threshold_min() -> u64 {
    DEFAULT_FAILURE_THRESHOLD.1
}

fn default_journal() -> PathBuf {
    PathBuf::from("/var/lib/dualseal/journal")
}
fn default_socket() -> PathBuf {
    PathBuf::from("/run/dualseal/control.sock")
}
fn default_socket_mode() -> String {
    "0660".into()
}
fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}
fn default_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}
fn default_segment() -> u32 {
    crate::envelope::DEFAULT_SEGMENT_SIZE
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            journal_path: default_journal(),
            control_socket: default_socket(),
            control_socket_mode: default_socket_mode(),
            concurrency: default_concurrency(),
            max_attempts: default_attempts(),
            segment_size: default_segment(),
            kms_requests_per_sec: default_kms_rate(),
            pause_deadline_secs: default_pause_deadline(),
            failure_threshold_percent: default_threshold_percent(),
            failure_threshold_min_objects: default_threshold_min(),
            log_format: LogFormat::default(),
            log_filter: None,
            data_key_reuse_objects: 0,
            data_key_reuse_secs: default_data_key_reuse_secs(),
            shard: None,
            max_bytes_in_flight: default_max_bytes_in_flight(),
            multipart_threshold: default_multipart_threshold(),
            multipart_part_size: default_multipart_part_size(),
            multipart_parts_in_flight: default_multipart_parts_in_flight(),
            journal_commit_window_ms: default_journal_commit_window_ms(),
        }
    }
}

/// One category of secrets and where it goes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CategoryConfig {
    /// Short name, used in metadata, context and reports.
    pub name: String,
    /// Destination bucket.
    pub bucket: String,
    /// KMS key id, ARN or alias (`alias/...`) for both layers; `alias/dualseal/<name>` when
    /// left out (provisioning creates it).
    #[serde(default)]
    pub kms_key: Option<String>,
    /// Principals (role ARNs) that may read this category's secrets: they appear in this
    /// category's bucket and key policies, and nowhere else.
    #[serde(default)]
    pub readers: Vec<String>,
    /// Key prefixes that belong here.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Glob patterns (`**/*.pem`) that belong here.
    #[serde(default)]
    pub globs: Vec<String>,
    /// How the destination key is formed.
    #[serde(default)]
    pub dest_key: DestKeyMode,
    /// Content kinds that belong here (`pem_private_key`, `database_url`, ...): a second
    /// opinion on the key rules. An object whose content a different category claims is held
    /// back as a conflict, and `plan --inspect-content` lists every disagreement.
    #[serde(default)]
    pub contents: Vec<crate::content::ContentKind>,
}

impl CategoryConfig {
    /// The category's match rules, as the classifier takes them.
    pub fn rules(&self) -> crate::classify::Rules<'_> {
        crate::classify::Rules {
            name: &self.name,
            prefixes: &self.prefixes,
            globs: &self.globs,
            dest_key: self.dest_key,
            contents: &self.contents,
        }
    }

    /// The KMS key to use: as configured, or `alias/dualseal/<name>`.
    pub fn key_ref(&self) -> String {
        self.kms_key
            .clone()
            .unwrap_or_else(|| format!("alias/dualseal/{}", self.name))
    }
}

/// Provisioning of buckets, keys and policies (`dualsealctl provision`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProvisionConfig {
    /// The daemon's role ARN: the only writer of the destination buckets.
    pub writer: Option<String>,
    /// Who administers the category keys (manage, never use). Defaults to the writer.
    #[serde(default)]
    pub key_admins: Vec<String>,
    /// `aws`, `aws-cn` or `aws-us-gov`, for the ARNs in policies.
    #[serde(default = "default_partition")]
    pub partition: String,
    /// Bucket receiving server access logs of the destination buckets (optional).
    pub log_bucket: Option<String>,
    /// Refuse to start a migration into a bucket whose live settings are weaker than these.
    #[serde(default = "default_true")]
    pub require_hardened_buckets: bool,
}

fn default_partition() -> String {
    "aws".into()
}
fn default_true() -> bool {
    true
}

impl Default for ProvisionConfig {
    fn default() -> Self {
        Self {
            writer: None,
            key_admins: Vec::new(),
            partition: default_partition(),
            log_bucket: None,
            require_hardened_buckets: true,
        }
    }
}

impl DaemonConfig {
    /// The socket mode as bits, `None` when not octal or wider than 0o777.
    pub fn socket_mode(&self) -> Option<u32> {
        u32::from_str_radix(self.control_socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
    }
}

#[cfg(test)]
mod tests;
