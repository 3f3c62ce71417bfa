//! Reading a config file: parsing that reports every data error at once, and the checks of
//! what parses (ranges, paths, key references, bucket names, categories) before anything runs.

use std::path::Path;

use super::{
    CategoryConfig, Config, ConfigError, BYTES_IN_FLIGHT_RANGE, COMMIT_WINDOW_MAX_MS,
    MAX_CONCURRENCY, MAX_DATA_KEY_REUSE_OBJECTS, MULTIPART_PART_SIZE_RANGE,
    MULTIPART_THRESHOLD_RANGE,
};
use crate::classify::Classifier;

/// Whether `k` has the shape of a KMS key reference: a key id (UUID, or `mrk-` and 32 hex
/// digits), a key or alias ARN, or `alias/NAME`.
pub(super) fn kms_key_ref_ok(k: &str) -> bool {
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
            let message = plain_words(&message);
            match setting_at(&lines, first) {
                // An unknown field's message names it already.
                Some(name) if !message.starts_with("unknown field") => {
                    problems.push(format!("line {}: {name}: {message}", first + 1));
                }
                _ => problems.push(format!("line {}: {message}", first + 1)),
            }
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

/// The setting on line `at` as `table.key` (the nearest table header above it), if that line
/// is a `key = value` entry.
fn setting_at(lines: &[String], at: usize) -> Option<String> {
    let (key, _) = lines.get(at)?.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let table = lines[..at].iter().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
    });
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_owned(),
    })
}

/// serde names the Rust type a number must fit (`expected u32`); an operator needs the range.
fn plain_words(message: &str) -> String {
    [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        (
            "expected u64",
            "expected a whole number, not negative (the setting's own range is checked next)",
        ),
        (
            "expected usize",
            "expected a whole number, not negative (the setting's own range is checked next)",
        ),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
    ]
    .iter()
    .find(|(rust, _)| message.ends_with(rust))
    .map_or_else(
        || message.to_owned(),
        |(rust, words)| format!("{}{words}", &message[..message.len() - rust.len()]),
    )
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
                        "aws.{name} {url:?}: must start with http:// or https://, in lowercase"
                    ));
                }
            }
        }
        if self.aws.operation_timeout_secs == 0 {
            p.push("aws.operation_timeout_secs: must be at least 1".into());
        }
        if self
            .aws
            .region
            .as_deref()
            .is_some_and(|r| r.trim().is_empty())
        {
            p.push("aws.region = \"\": name a region (us-east-1), or leave the key out to use the SDK's default chain".into());
        }
        for (name, price) in self.pricing.named() {
            if !(price.is_finite() && price >= 0.0) {
                p.push(format!(
                    "pricing.{name} = {price}: must be a price in USD, zero or more"
                ));
            }
        }
        let d = &self.daemon;
        if let Some(filter) = &d.log_filter {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(filter) {
                p.push(format!(
                    "daemon.log_filter = {filter:?}: not a log filter ({e}); for example \"info,dualseal=debug\""
                ));
            }
        }
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
