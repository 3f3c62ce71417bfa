//! Prometheus metrics: an optional loopback HTTP endpoint (`[metrics] listen`), request
//! metering of the S3 and KMS layers, and gauges refreshed from the engine. Metric names and
//! labels carry categories, buckets, operations and job ids, never keys or secret bytes.
//!
//! Without `listen`, no recorder is installed and every `metrics::` call is a no-op.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio_util::sync::CancellationToken;

use crate::config::MetricsConfig;
use crate::engine::Engine;
use crate::envelope::{DataKey, EncryptionContext};
use crate::kms::{GeneratedKey, KeyService, KmsError};
use crate::model::ObjectState;
use crate::store::{
    Fetched, HeadInfo, ListPage, ObjectStore, Precondition, PutResult, SealedPut, SealedUpload,
    StoreError, Streamed, UploadedPart,
};

/// How often gauges are refreshed from the engine and the journal directory.
const REFRESH: Duration = Duration::from_secs(5);

/// Every metric dualseal exports, with its help text: the README lists the same.
pub const METRICS: &[(&str, &str)] = &[
    ("dualseal_aws_requests_total", "S3 and KMS requests by service, operation and outcome (ok or an error code such as Throttled)"),
    ("dualseal_aws_request_duration_seconds", "S3 and KMS request latency by service and operation, SDK retries included"),
    ("dualseal_objects_total", "Objects that reached a final state, by job kind, category and state (verified, failed, conflict)"),
    ("dualseal_bytes_migrated_total", "Source bytes migrated and verified, by category"),
    ("dualseal_object_retries_total", "Object attempts that failed retryably and were scheduled again, by error code"),
    ("dualseal_throttled_total", "Requests S3 or KMS still throttled after the SDK's own retries (up to 3 attempts per request), by service"),
    ("dualseal_job_objects", "Objects of each active job by category and state"),
    ("dualseal_job_bytes", "Bytes of each active job by category: listed and verified"),
    ("dualseal_job_concurrency", "Objects each running job may have in flight now: its adaptive limit (0 once ended)"),
    ("dualseal_job_objects_per_second", "Each running job's speed over the last 20 seconds (0 once ended)"),
    ("dualseal_jobs", "Jobs by state"),
    ("dualseal_workers_busy", "Worker slots jobs hold: objects in flight, and slots a job keeps for its next object (at most its adaptive limit)"),
    ("dualseal_journal_disk_bytes", "Size of the journal directory on disk"),
    ("dualseal_journal_filesystem_size_bytes", "Size of the filesystem holding the journal"),
    ("dualseal_journal_filesystem_avail_bytes", "Bytes free for the daemon on the filesystem holding the journal"),
    ("dualseal_job_running", "1 while a job runs, 0 otherwise (paused, pending, ended), by job"),
    ("dualseal_jobs_parked", "Jobs the daemon paused itself, by reason: journal (an audit or journal write failed) or other (no credentials, an unreachable endpoint)"),
    ("dualseal_start_time_seconds", "When this daemon process started, seconds since the Unix epoch: a change is a restart"),
    ("dualseal_resident_memory_bytes", "The daemon's resident memory (VmRSS)"),
];

/// The metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {message}; change or remove [metrics] listen")]
pub struct MetricsError {
    addr: std::net::SocketAddr,
    message: String,
}

/// Starts the endpoint when configured. Returns whether it did.
///
/// # Errors
/// `MetricsError` when the address cannot be bound or a recorder is already installed.
pub fn install(cfg: &MetricsConfig) -> Result<bool, MetricsError> {
    let Some(addr) = cfg.listen else {
        return Ok(false);
    };
    let failed = |e: &dyn std::fmt::Display| MetricsError {
        addr,
        message: e.to_string(),
    };
    // Bound here, so a busy port is a clear startup error, not a log line from a task.
    let listener = std::net::TcpListener::bind(addr).map_err(|e| failed(&e))?;
    listener.set_nonblocking(true).map_err(|e| failed(&e))?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| failed(&e))?;
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| failed(&e))?;
    tokio::spawn(serve(listener, handle));
    for (name, help) in METRICS {
        metrics::describe_counter!(*name, *help);
    }
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    gauge!("dualseal_start_time_seconds").set(started);
    tracing::info!(%addr, "metrics endpoint listening");
    Ok(true)
}

/// Registers, at zero, the counters the alerting rules take rates of. A counter otherwise
/// appears at its first increment, and Prometheus takes a new series' first sample as its
/// baseline: a job whose objects all fail at once would show no increase, and no alert.
pub fn zero_counters(categories: &[&str]) {
    for category in categories {
        for kind in ["migrate", "verify"] {
            for state in ["verified", "failed", "conflict"] {
                counter!(
                    "dualseal_objects_total",
                    "kind" => kind,
                    "category" => (*category).to_owned(),
                    "state" => state,
                )
                .increment(0);
            }
        }
        counter!("dualseal_bytes_migrated_total", "category" => (*category).to_owned())
            .increment(0);
    }
    for service in ["s3", "kms"] {
        counter!("dualseal_throttled_total", "service" => service).increment(0);
    }
}

/// The text exposition format's content type, with the version scrapers negotiate on
/// (the exporter's own listener omits it).
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` (any path) over HTTP/1.1 until the process exits.
async fn serve(
    listener: tokio::net::TcpListener,
    handle: metrics_exporter_prometheus::PrometheusHandle,
) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let handle = handle.clone();
                async move {
                    let mut response = if req.method() == hyper::Method::GET {
                        hyper::Response::new(Full::new(Bytes::from(handle.render())))
                    } else {
                        let mut r = hyper::Response::new(Full::new(Bytes::from_static(
                            b"only GET is served here\n",
                        )));
                        *r.status_mut() = hyper::StatusCode::METHOD_NOT_ALLOWED;
                        r
                    };
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
                    );
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %e, "metrics endpoint: connection ended with an error");
            }
        });
    }
}

/// Refreshes gauges until `stop` is cancelled.
pub async fn refresh(engine: Engine, journal_dir: PathBuf, stop: CancellationToken) {
    loop {
        refresh_once(&engine, &journal_dir);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}

fn refresh_once(engine: &Engine, journal_dir: &Path) {
    gauge!("dualseal_journal_disk_bytes").set(dir_size(journal_dir) as f64);
    if let Ok(fs) = nix::sys::statvfs::statvfs(journal_dir) {
        let block = fs.fragment_size() as f64;
        gauge!("dualseal_journal_filesystem_size_bytes").set(fs.blocks() as f64 * block);
        gauge!("dualseal_journal_filesystem_avail_bytes").set(fs.blocks_available() as f64 * block);
    }
    if let Some(rss) = resident_bytes() {
        gauge!("dualseal_resident_memory_bytes").set(rss as f64);
    }
    gauge!("dualseal_workers_busy").set(engine.workers_busy() as f64);
    let Ok(jobs) = engine.list_jobs() else {
        return;
    };
    let mut by_state = std::collections::BTreeMap::<&str, u64>::new();
    let mut parked = [0u64; 2];
    for j in &jobs {
        *by_state.entry(j.record.state.as_str()).or_default() += 1;
        if let Some(reason) = parked_reason(&j.record) {
            parked[usize::from(reason == "other")] += 1;
        }
        // Every job, ended ones included: a gauge left at 1 by a job that ended would page.
        let running = j.record.state == crate::model::JobState::Running;
        gauge!("dualseal_job_running", "job" => j.record.id.to_string())
            .set(f64::from(u8::from(running)));
        if !j.record.state.is_active() {
            // An ended job has nothing in flight and moves nothing: its last values would read
            // as a job still at work.
            gauge!("dualseal_job_concurrency", "job" => j.record.id.to_string()).set(0.0);
            gauge!("dualseal_job_objects_per_second", "job" => j.record.id.to_string()).set(0.0);
        }
    }
    gauge!("dualseal_jobs_parked", "reason" => "journal").set(parked[0] as f64);
    gauge!("dualseal_jobs_parked", "reason" => "other").set(parked[1] as f64);
    for s in [
        "pending",
        "running",
        "paused",
        "cancelled",
        "succeeded",
        "completed_with_failures",
        "failed",
    ] {
        gauge!("dualseal_jobs", "state" => s).set(by_state.get(s).copied().unwrap_or(0) as f64);
    }
    for j in jobs.iter().filter(|j| j.record.state.is_active()) {
        let job = j.record.id.to_string();
        for (cat, c) in &j.counts.per_category {
            for s in ObjectState::ALL {
                gauge!("dualseal_job_objects", "job" => job.clone(), "category" => cat.clone(), "state" => s.as_str())
                    .set(c.get(s) as f64);
            }
            gauge!("dualseal_job_bytes", "job" => job.clone(), "category" => cat.clone(), "kind" => "listed")
                .set(c.bytes as f64);
            gauge!("dualseal_job_bytes", "job" => job.clone(), "category" => cat.clone(), "kind" => "verified")
                .set(c.verified_bytes as f64);
        }
        gauge!("dualseal_job_concurrency", "job" => job.clone())
            .set(j.concurrency.unwrap_or(0) as f64);
        gauge!("dualseal_job_objects_per_second", "job" => job).set(j.speed.objects_per_sec);
    }
}

/// Why the daemon paused a job itself, if it did: `journal` when the journal (the audit
/// trail) could not record, `other` for a problem of the daemon's such as missing credentials.
/// An operator's pause leaves no message; the daemon's always says why, and the journal case
/// names the journal.
fn parked_reason(job: &crate::model::JobRecord) -> Option<&'static str> {
    if job.state != crate::model::JobState::Paused {
        return None;
    }
    let message = job.message.as_deref()?;
    Some(if message.contains("the journal could not record") {
        "journal"
    } else {
        "other"
    })
}

/// The process's resident set (`VmRSS` of /proc/self/status), in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn observe<T, E>(
    service: &'static str,
    op: &'static str,
    started: Instant,
    res: &Result<T, E>,
    code: impl Fn(&E) -> &'static str,
) {
    let outcome = match res {
        Ok(_) => "ok",
        Err(e) => code(e),
    };
    if outcome == "Throttled" {
        counter!("dualseal_throttled_total", "service" => service).increment(1);
    }
    counter!("dualseal_aws_requests_total", "service" => service, "operation" => op, "outcome" => outcome)
        .increment(1);
    histogram!("dualseal_aws_request_duration_seconds", "service" => service, "operation" => op)
        .record(started.elapsed().as_secs_f64());
}

/// An [`ObjectStore`] that meters every request.
pub struct MeteredStore(pub Arc<dyn ObjectStore>);

fn s3<T>(op: &'static str, started: Instant, res: &Result<T, StoreError>) {
    observe("s3", op, started, res, |e| e.kind.code());
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<String>,
    ) -> Result<ListPage, StoreError> {
        let t = Instant::now();
        let r = self.0.list_page(bucket, prefix, token).await;
        s3("ListObjectsV2", t, &r);
        r
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Fetched, StoreError> {
        let t = Instant::now();
        let r = self.0.get(bucket, key).await;
        s3("GetObject", t, &r);
        r
    }

    async fn read_head(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: usize,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, StoreError> {
        let t = Instant::now();
        let r = self.0.read_head(bucket, key, max_bytes).await;
        s3("GetObject", t, &r);
        r
    }

    async fn get_stream(&self, bucket: &str, key: &str) -> Result<Streamed, StoreError> {
        // Times the response headers; the body is timed by whoever reads it.
        let t = Instant::now();
        let r = self.0.get_stream(bucket, key).await;
        s3("GetObject", t, &r);
        r
    }

    async fn put_sealed(&self, put: SealedPut) -> Result<PutResult, StoreError> {
        let t = Instant::now();
        let r = self.0.put_sealed(put).await;
        s3("PutObject", t, &r);
        r
    }

    async fn create_multipart(&self, upload: &SealedUpload) -> Result<String, StoreError> {
        let t = Instant::now();
        let r = self.0.create_multipart(upload).await;
        s3("CreateMultipartUpload", t, &r);
        r
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: bytes::Bytes,
    ) -> Result<UploadedPart, StoreError> {
        let t = Instant::now();
        let r = self
            .0
            .upload_part(bucket, key, upload_id, number, body)
            .await;
        s3("UploadPart", t, &r);
        r
    }

    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        precondition: &Precondition,
    ) -> Result<PutResult, StoreError> {
        let t = Instant::now();
        let r = self
            .0
            .complete_multipart(bucket, key, upload_id, parts, precondition)
            .await;
        s3("CompleteMultipartUpload", t, &r);
        r
    }

    async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.0.abort_multipart(bucket, key, upload_id).await;
        s3("AbortMultipartUpload", t, &r);
        r
    }

    async fn list_uploads(&self, bucket: &str, key: &str) -> Result<Vec<String>, StoreError> {
        let t = Instant::now();
        let r = self.0.list_uploads(bucket, key).await;
        s3("ListMultipartUploads", t, &r);
        r
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<HeadInfo>, StoreError> {
        let t = Instant::now();
        let r = self.0.head(bucket, key).await;
        s3("HeadObject", t, &r);
        r
    }

    async fn check_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.0.check_bucket(bucket).await;
        s3("HeadBucket", t, &r);
        r
    }
}

/// A [`KeyService`] that meters every request.
pub struct MeteredKeys(pub Arc<dyn KeyService>);

fn kms<T>(op: &'static str, started: Instant, res: &Result<T, KmsError>) {
    observe("kms", op, started, res, |e| e.kind.code());
}

#[async_trait]
impl KeyService for MeteredKeys {
    async fn generate_data_key(
        &self,
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<GeneratedKey, KmsError> {
        let t = Instant::now();
        let r = self.0.generate_data_key(key_id, context).await;
        kms("GenerateDataKey", t, &r);
        r
    }

    async fn decrypt_data_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        let t = Instant::now();
        let r = self.0.decrypt_data_key(key_id, wrapped, context).await;
        kms("Decrypt", t, &r);
        r
    }

    async fn resolve_key(&self, key_id: &str) -> Result<String, KmsError> {
        let t = Instant::now();
        let r = self.0.resolve_key(key_id).await;
        kms("DescribeKey", t, &r);
        r
    }
}
