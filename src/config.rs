//! The daemon's configuration: one strict serde tree, validated once, reporting every problem
//! together so an operator fixes a file in one pass.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::aws::AwsConfig;
use crate::classify::{Classifier, DestKeyMode};
pub use crate::store::RetentionMode;

/// Default number of objects migrated at once.
pub const DEFAULT_CONCURRENCY: usize = 16;
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

/// Whether `k` has the shape of a KMS key reference: a key id (UUID, or `mrk-` and 32 hex
/// digits), a key or alias ARN, or `alias/NAME`.
fn kms_key_ref_ok(k: &str) -> bool {
    let uuid = |s: &str| {
        let parts: Vec<&str> = s.split('-').collect();
        parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
            && parts
                .iter()
                .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
    };
    let mrk = |s: &str| {
        s.strip_prefix("mrk-")
            .is_some_and(|h| h.len() == 32 && h.chars().all(|c| c.is_ascii_hexdigit()))
    };
    let alias = |s: &str| {
        s.strip_prefix("alias/").is_some_and(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c))
        })
    };
    if let Some(rest) = k.strip_prefix("arn:") {
        // arn:PARTITION:kms:REGION:ACCOUNT:key/ID or :alias/NAME
        let f: Vec<&str> = rest.splitn(5, ':').collect();
        return f.len() == 5
            && f[1] == "kms"
            && (f[4]
                .strip_prefix("key/")
                .is_some_and(|id| uuid(id) || mrk(id))
                || alias(f[4]));
    }
    uuid(k) || mrk(k) || alias(k)
}

/// How many data errors one parse reports before it stops looking for more.
const MAX_PARSE_PROBLEMS: usize = 50;

/// Deserializes well-formed TOML, collecting every data error (an unknown key, a bad value)
/// rather than the first: serde stops at the first, so each offending entry is commented out
/// and the text parsed again. The config without the offending entries (so that validation
/// can report its problems beside these), and the problems, each with its line.
fn parse_collecting(text: &str) -> (Option<Config>, Vec<String>) {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut problems = Vec::new();
    let mut removed = Vec::new();
    loop {
        let current = lines.join("\n");
        let e = match toml::from_str::<Config>(&current) {
            Ok(cfg) => return (Some(cfg), problems),
            Err(e) => e,
        };
        let message = e.message().trim().replace('\n', " ");
        let Some(span) = e.span() else {
            problems.push(message);
            return (None, problems);
        };
        let first = current[..span.start.min(current.len())]
            .matches('\n')
            .count();
        let last = current[..span.end.min(current.len())].matches('\n').count();
        // Commenting out an entry may make its field "missing": that is the same problem.
        let consequence = message.starts_with("missing field")
            && removed
                .iter()
                .any(|k: &String| message.contains(&format!("`{k}`")));
        if !consequence {
            problems.push(format!("line {}: {message}", first + 1));
        }
        // Nothing left to comment out (an error about the whole document, such as a missing
        // table) ends the search.
        if problems.len() >= MAX_PARSE_PROBLEMS
            || lines
                .get(first)
                .is_none_or(|l| l.trim_start().starts_with('#'))
        {
            return (None, problems);
        }
        if let Some((key, _)) = lines[first].split_once('=') {
            removed.push(key.trim().to_owned());
        }
        for line in lines.iter_mut().take(last + 1).skip(first) {
            // A table header is kept (its entries are judged one by one); anything else goes.
            if !line.trim_start().starts_with('[') || line.contains('=') {
                line.insert(0, '#');
            }
        }
        if lines[first].trim_start().starts_with('[') && !lines[first].contains('=') {
            // The header itself is the problem (an unknown table): drop it and its entries.
            let mut i = first;
            lines[i].insert(0, '#');
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with('[') {
                lines[i].insert(0, '#');
                i += 1;
            }
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    ///
    /// # Errors
    /// `Read`, `Parse` or `Invalid` (with every problem found).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    ///
    /// # Errors
    /// `Parse` or `Invalid`.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        // A syntax error stops any TOML parser: it is reported alone.
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            });
        }
        let (cfg, mut problems) = parse_collecting(text);
        if let Some(cfg) = &cfg {
            problems.extend(cfg.problems());
        }
        match cfg {
            Some(cfg) if problems.is_empty() => Ok(cfg),
            _ => Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            }),
        }
    }

    /// Every inconsistency in the config, one message each.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(e) = bucket_name_problem(&self.source.bucket) {
            p.push(format!("source.bucket {:?}: {e}", self.source.bucket));
        }
        for (name, url) in [
            ("endpoint_url", &self.aws.endpoint_url),
            ("s3_endpoint_url", &self.aws.s3_endpoint_url),
            ("kms_endpoint_url", &self.aws.kms_endpoint_url),
        ] {
            if let Some(url) = url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    p.push(format!(
                        "aws.{name} {url:?}: must start with http:// or https://"
                    ));
                }
            }
        }
        if self.aws.operation_timeout_secs == 0 {
            p.push("aws.operation_timeout_secs: must be at least 1".into());
        }
        let d = &self.daemon;
        if d.concurrency == 0 || d.concurrency > MAX_CONCURRENCY {
            p.push(format!(
                "daemon.concurrency = {}: must be between 1 and {MAX_CONCURRENCY}",
                d.concurrency
            ));
        }
        if d.data_key_reuse_objects > MAX_DATA_KEY_REUSE_OBJECTS {
            p.push(format!(
                "daemon.data_key_reuse_objects = {}: at most {MAX_DATA_KEY_REUSE_OBJECTS} (0 = a fresh data key per object)",
                d.data_key_reuse_objects
            ));
        }
        if d.data_key_reuse_objects > 0 && !(1..=86_400).contains(&d.data_key_reuse_secs) {
            p.push(format!(
                "daemon.data_key_reuse_secs = {}: must be between 1 and 86400",
                d.data_key_reuse_secs
            ));
        }
        if let Some(Err(e)) = d.shard.as_deref().map(str::parse::<crate::shard::Shard>) {
            p.push(format!("daemon.{e}"));
        }
        if !BYTES_IN_FLIGHT_RANGE.contains(&d.max_bytes_in_flight) {
            p.push(format!(
                "daemon.max_bytes_in_flight = {}: must be between 16 MiB ({}) and 64 GiB ({})",
                d.max_bytes_in_flight,
                BYTES_IN_FLIGHT_RANGE.start(),
                BYTES_IN_FLIGHT_RANGE.end()
            ));
        }
        if !MULTIPART_THRESHOLD_RANGE.contains(&d.multipart_threshold) {
            p.push(format!(
                "daemon.multipart_threshold = {}: must be between 5 MiB ({}) and 5 GiB - 16 MiB ({}), S3's smallest part and largest single PUT",
                d.multipart_threshold,
                MULTIPART_THRESHOLD_RANGE.start(),
                MULTIPART_THRESHOLD_RANGE.end()
            ));
        }
        if !MULTIPART_PART_SIZE_RANGE.contains(&d.multipart_part_size) {
            p.push(format!(
                "daemon.multipart_part_size = {}: must be between 5 MiB ({}) and 512 MiB ({})",
                d.multipart_part_size,
                MULTIPART_PART_SIZE_RANGE.start(),
                MULTIPART_PART_SIZE_RANGE.end()
            ));
        }
        if d.journal_commit_window_ms > COMMIT_WINDOW_MAX_MS {
            p.push(format!(
                "daemon.journal_commit_window_ms = {}: must be at most {COMMIT_WINDOW_MAX_MS}",
                d.journal_commit_window_ms
            ));
        }
        if !(1..=32).contains(&d.multipart_parts_in_flight) {
            p.push(format!(
                "daemon.multipart_parts_in_flight = {}: must be between 1 and 32",
                d.multipart_parts_in_flight
            ));
        }
        if d.max_attempts == 0 {
            p.push("daemon.max_attempts: must be at least 1".into());
        }
        if !(1..=100).contains(&d.failure_threshold_percent) {
            p.push(format!(
                "daemon.failure_threshold_percent = {}: must be between 1 and 100 (100 disables it)",
                d.failure_threshold_percent
            ));
        }
        if let Some(addr) = self.metrics.listen {
            if !addr.ip().is_loopback() && !self.metrics.allow_remote {
                p.push(format!(
                    "metrics.listen = {addr}: not a loopback address; metrics name categories and buckets, so set metrics.allow_remote = true to expose them deliberately"
                ));
            }
        }
        if !(crate::envelope::MIN_SEGMENT_SIZE..=crate::envelope::MAX_SEGMENT_SIZE)
            .contains(&d.segment_size)
        {
            p.push(format!(
                "daemon.segment_size = {}: must be between {} and {}",
                d.segment_size,
                crate::envelope::MIN_SEGMENT_SIZE,
                crate::envelope::MAX_SEGMENT_SIZE
            ));
        }
        if d.journal_path.as_os_str().is_empty() {
            p.push("daemon.journal_path: must not be empty".into());
        } else if !d.journal_path.is_absolute() {
            p.push(format!(
                "daemon.journal_path = {:?}: give an absolute path (a relative one depends on the directory dualseald happens to start in)",
                d.journal_path
            ));
        } else if let Some(file) = d.journal_path.ancestors().find(|a| a.is_file()) {
            p.push(format!(
                "daemon.journal_path = {:?}: {} is a file; the journal is a directory (give a path that does not exist yet, or the journal's directory)",
                d.journal_path,
                if file == d.journal_path { "this".to_owned() } else { format!("{file:?}") }
            ));
        }
        if d.socket_mode().is_none() {
            p.push(format!(
                "daemon.control_socket_mode = {:?}: give octal permission bits such as \"0660\"",
                d.control_socket_mode
            ));
        }
        if d.control_socket.as_os_str().is_empty() {
            p.push("daemon.control_socket: must not be empty".into());
        } else if !d.control_socket.is_absolute() {
            p.push(format!(
                "daemon.control_socket = {:?}: give an absolute path (a relative one depends on the directory dualseald happens to start in)",
                d.control_socket
            ));
        }
        let dc = &self.decommission;
        if let Some(b) = &dc.archive_bucket {
            if let Some(e) = bucket_name_problem(b) {
                p.push(format!("decommission.archive_bucket {b:?}: {e}"));
            }
            if *b == self.source.bucket || self.categories.iter().any(|c| c.bucket == *b) {
                p.push(format!(
                    "decommission.archive_bucket {b:?}: must be a bucket of its own, not the source or a category bucket"
                ));
            }
        }
        if !(1..=36_500).contains(&dc.archive_retention_days) {
            p.push(format!(
                "decommission.archive_retention_days = {}: must be between 1 and 36500",
                dc.archive_retention_days
            ));
        }
        let mut claimed = std::collections::HashMap::new();
        for c in &self.categories {
            for kind in &c.contents {
                if let Some(first) = claimed.insert(*kind, c.name.as_str()) {
                    if first != c.name {
                        p.push(format!(
                            "content kind {kind} is claimed by categories {first:?} and {:?}: a kind can belong to one category only",
                            c.name
                        ));
                    }
                }
            }
        }
        if self.categories.is_empty() {
            p.push("no [[category]] tables: add at least one category to migrate into".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut buckets = std::collections::HashMap::new();
        for (i, c) in self.categories.iter().enumerate() {
            let at = format!("category[{i}] ({:?})", c.name);
            if c.name.is_empty()
                || !c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                p.push(format!(
                    "{at}.name: use letters, digits, '-' and '_' only (it goes into S3 metadata)"
                ));
            }
            if !names.insert(c.name.as_str()) {
                p.push(format!("{at}.name: duplicate category name"));
            }
            if let Some(e) = bucket_name_problem(&c.bucket) {
                p.push(format!("{at}.bucket {:?}: {e}", c.bucket));
            }
            if c.bucket == self.source.bucket {
                p.push(format!(
                    "{at}.bucket: must differ from source.bucket (the source is never written)"
                ));
            }
            if let Some(other) = buckets.insert(c.bucket.as_str(), c.name.as_str()) {
                p.push(format!(
                    "{at}.bucket {:?}: already used by category {other:?}; each category needs its own bucket",
                    c.bucket
                ));
            }
            if c.kms_key
                .as_deref()
                .is_some_and(|k| !k.trim().is_empty() && !kms_key_ref_ok(k))
            {
                p.push(format!(
                    "{at}.kms_key = {:?}: not a KMS key reference; give a key id (a UUID or mrk-…), a key ARN (arn:aws:kms:…:key/…), alias/NAME or an alias ARN",
                    c.kms_key.as_deref().unwrap_or_default()
                ));
            }
            if c.kms_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
                p.push(format!(
                    "{at}.kms_key: give a KMS key id, ARN or alias/NAME, or leave it out for alias/dualseal/<name>"
                ));
            }
            if c.prefixes.is_empty() && c.globs.is_empty() {
                p.push(format!(
                    "{at}: no prefixes or globs, so nothing can match it; add a match rule"
                ));
            }
            if c.prefixes.iter().any(String::is_empty) {
                p.push(format!(
                    "{at}.prefixes: an empty prefix matches every key; use a glob \"**\" if that is meant"
                ));
            }
        }
        if let Err(errs) = Classifier::new(self.categories.iter().map(CategoryConfig::rules)) {
            p.extend(errs);
        }
        let arn = |what: String, v: &str, p: &mut Vec<String>| {
            if !v.starts_with("arn:") {
                p.push(format!(
                    "{what} {v:?}: give an IAM principal ARN (arn:aws:iam::ACCOUNT:role/NAME)"
                ));
            }
        };
        let pv = &self.provision;
        if !["aws", "aws-cn", "aws-us-gov"].contains(&pv.partition.as_str()) {
            p.push(format!(
                "provision.partition = {:?}: use aws, aws-cn or aws-us-gov",
                pv.partition
            ));
        }
        if let Some(w) = &pv.writer {
            arn("provision.writer".into(), w, &mut p);
        }
        for a in &pv.key_admins {
            arn("provision.key_admins".into(), a, &mut p);
        }
        if let Some(b) = &pv.log_bucket {
            if let Some(e) = bucket_name_problem(b) {
                p.push(format!("provision.log_bucket {b:?}: {e}"));
            }
        }
        for c in &self.categories {
            for r in &c.readers {
                arn(format!("category {:?} readers", c.name), r, &mut p);
            }
        }
        let t = &self.tcp;
        if let Some(addr) = t.listen {
            let tls = t.tls_cert.is_some() && t.tls_key.is_some();
            if t.tls_cert.is_some() != t.tls_key.is_some() {
                p.push("tcp.tls_cert and tcp.tls_key: give both, or neither".into());
            }
            if !tls && !addr.ip().is_loopback() {
                p.push(format!(
                    "tcp.listen = {addr}: refusing a plaintext listener on a non-loopback address; set tcp.tls_cert and tcp.tls_key, or listen on 127.0.0.1"
                ));
            }
            if t.client_ca.is_some() && !tls {
                p.push("tcp.client_ca: mutual TLS needs tcp.tls_cert and tcp.tls_key".into());
            }
            if t.client_ca.is_none() && t.tokens_file.is_none() {
                p.push(format!(
                    "tcp.listen = {addr}: no way to authenticate TCP callers; set tcp.client_ca (mutual TLS) and/or tcp.tokens_file"
                ));
            }
        } else if t.tls_cert.is_some() || t.client_ca.is_some() || t.tokens_file.is_some() {
            p.push(
                "[tcp] settings without tcp.listen have no effect; set tcp.listen or remove them"
                    .into(),
            );
        }
        p
    }
}

/// Why a bucket name breaks S3's naming rules, if it does.
fn bucket_name_problem(name: &str) -> Option<&'static str> {
    if name.len() < 3 || name.len() > crate::store::MAX_BUCKET_BYTES {
        return Some("bucket names are 3 to 63 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Some("bucket names use lowercase letters, digits, '-' and '.' only");
    }
    let first = name.chars().next()?;
    let last = name.chars().last()?;
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Some("bucket names start and end with a letter or digit");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_key_references_are_checked_before_anything_runs() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let text = format!(
            "[source]\nbucket = \"master\"\n[daemon]\njournal_path = \"{}/sub\"\ncontrol_socket = \"relative.sock\"\n[[category]]\nname = \"db\"\nbucket = \"secrets-db\"\nkms_key = \"not-a-key\"\nprefixes = [\"db/\"]\n",
            file.path().display()
        );
        let err = Config::from_toml(&text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        for needle in ["is a file", "control_socket", "not a KMS key reference"] {
            assert!(err.contains(needle), "{needle:?} missing from {err}");
        }
        for ok in [
            "alias/dualseal-db",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "mrk-1234abcd12ab34cd56ef1234567890ab",
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/secrets",
        ] {
            assert!(kms_key_ref_ok(ok), "{ok}");
        }
        for bad in ["not-a-key", "alias/", "arn:aws:s3:::bucket", "key/1234"] {
            assert!(!kms_key_ref_ok(bad), "{bad}");
        }
    }

    #[test]
    fn parse_level_problems_are_reported_together_with_the_others() {
        let text = r#"
            [source]
            bucket = "master"
            [daemon]
            concurency = 4
            log_format = "yaml"
            journal_path = "relative/journal"
            [[category]]
            name = "db"
            bucket = "secrets-db"
            kms_key = "alias/x"
            prefixes = ["db/"]
        "#;
        let err = Config::from_toml(text, Path::new("t.toml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("expected Invalid, got {err}");
        };
        let all = problems.join("\n");
        for needle in [
            "line 5: unknown field `concurency`",
            "line 6:",
            "yaml",
            "give an absolute path",
        ] {
            assert!(all.contains(needle), "{needle:?} missing from:\n{all}");
        }
        assert_eq!(problems.len(), 3, "{all}");
        let fixed = text
            .replace("concurency = 4", "")
            .replace("\"yaml\"", "\"json\"");
        let file = tempfile::NamedTempFile::new().unwrap();
        let at_file = fixed.replace("relative/journal", &file.path().display().to_string());
        let err = Config::from_toml(&at_file, Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("this is a file"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            [source]
            bucket = "Master_Secrets"
            [daemon]
            concurrency = 0
            [[category]]
            name = "db"
            bucket = "Master_Secrets"
            kms_key = ""
            [[category]]
            name = "db"
            bucket = "secrets-db"
            kms_key = "alias/x"
            globs = ["[unclosed"]
        "#;
        let err = Config::from_toml(text, Path::new("t.toml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("expected Invalid, got {err}");
        };
        let all = problems.join("\n");
        for needle in [
            "source.bucket",
            "daemon.concurrency",
            "kms_key",
            "duplicate category name",
            "nothing can match",
            "must differ from source.bucket",
            "[unclosed",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn operating_settings_are_checked() {
        let base = "[source]\nbucket = \"master\"\n[[category]]\nname = \"db\"\nbucket = \"secrets-db\"\nkms_key = \"alias/db\"\nprefixes = [\"db/\"]\n";
        let bad = format!(
            "{base}[daemon]\nfailure_threshold_percent = 0\nlog_format = \"json\"\njournal_commit_window_ms = 1000\n[metrics]\nlisten = \"0.0.0.0:9464\"\n"
        );
        let err = Config::from_toml(&bad, Path::new("t.toml")).unwrap_err();
        let all = err.to_string();
        assert!(all.contains("failure_threshold_percent"), "{all}");
        assert!(
            all.contains("journal_commit_window_ms = 1000: must be at most 100"),
            "{all}"
        );
        assert!(
            all.contains("metrics.listen") && all.contains("allow_remote"),
            "{all}"
        );
        let ok = format!("{base}[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true\n");
        let cfg = Config::from_toml(&ok, Path::new("t.toml")).unwrap();
        assert_eq!(
            cfg.daemon.kms_requests_per_sec,
            DEFAULT_KMS_REQUESTS_PER_SEC
        );
        assert_eq!(cfg.daemon.log_format, LogFormat::Text);
        assert_eq!(cfg.daemon.journal_commit_window_ms, 2);
        assert!(Config::from_toml(
            &format!("{base}[daemon]\nlog_format = \"xml\"\n"),
            Path::new("t.toml")
        )
        .is_err());
    }

    #[test]
    fn archive_settings_default_and_are_checked() {
        let base = "[source]\nbucket = \"master\"\n[[category]]\nname = \"db\"\nbucket = \"secrets-db\"\nprefixes = [\"db/\"]\n";
        let cfg = Config::from_toml(base, Path::new("t.toml")).unwrap();
        assert_eq!(cfg.decommission.archive_retention_days, 365);
        assert_eq!(
            cfg.decommission.archive_retention_mode,
            RetentionMode::Governance
        );
        assert!(cfg.decommission.archive_bucket.is_none());
        let bad = format!(
            "{base}[decommission]\narchive_bucket = \"secrets-db\"\narchive_retention_days = 0\narchive_retention_mode = \"compliance\"\n"
        );
        let all = Config::from_toml(&bad, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(all.contains("not the source or a category bucket"), "{all}");
        assert!(all.contains("archive_retention_days = 0"), "{all}");
        let wrong_mode = format!("{base}[decommission]\narchive_retention_mode = \"forever\"\n");
        assert!(Config::from_toml(&wrong_mode, Path::new("t.toml")).is_err());
    }

    #[test]
    fn each_service_can_have_its_own_endpoint() {
        let both = AwsConfig {
            endpoint_url: Some("http://127.0.0.1:5000".into()),
            ..Default::default()
        };
        assert_eq!(both.s3_endpoint(), Some("http://127.0.0.1:5000"));
        assert_eq!(both.kms_endpoint(), Some("http://127.0.0.1:5000"));
        assert!(both.path_style());
        let split = AwsConfig {
            endpoint_url: Some("http://127.0.0.1:5000".into()),
            s3_endpoint_url: Some("http://127.0.0.1:9000".into()),
            ..Default::default()
        };
        assert_eq!(split.s3_endpoint(), Some("http://127.0.0.1:9000"));
        assert_eq!(split.kms_endpoint(), Some("http://127.0.0.1:5000"));
        let aws = AwsConfig::default();
        assert_eq!(
            (aws.s3_endpoint(), aws.kms_endpoint(), aws.path_style()),
            (None, None, false)
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let text = "[source]\nbucket = \"abc\"\nbuckt = 1\n";
        let err = Config::from_toml(text, Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("buckt"), "{err}");
    }

    #[test]
    fn shipped_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen > 0, "no example configs found");
    }
}
