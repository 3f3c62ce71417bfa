//! Shared integration-test harness: a real moto server on a free loopback port, the real
//! `dualseald` binary, real AWS SDK clients for seeding and checking, and the library's own
//! gRPC client.
#![allow(dead_code)]

pub mod models;
pub mod proxy;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_s3::primitives::ByteStream;
use dualseal::api::client::Client;
use dualseal::api::pb;
use dualseal::envelope;
use futures::StreamExt;

/// How long moto and the daemon get to come up. Generous: CI machines are slow.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A moto server process, killed on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    /// Starts moto on a free port, made faithful where dualseal's checks depend on it
    /// (`scripts/moto-faithful`: S3 reports the KMS key of DSSE objects, as AWS does), and
    /// waits until it reports that it is listening.
    pub fn start() -> Moto {
        // test.sh exports MOTO_SERVER; the launcher in the checkout is the fallback.
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/moto-faithful").into()
        });
        Self::start_bin(&bin)
    }

    /// Starts moto exactly as PyPI ships it (it never reports the KMS key of a DSSE object):
    /// for the tests that show dualseal failing closed on such a server.
    pub fn start_plain() -> Moto {
        // test.sh exports MOTO_SERVER_PLAIN with the installed path; PATH is the fallback.
        let bin = std::env::var("MOTO_SERVER_PLAIN").unwrap_or_else(|_| "moto_server".into());
        Self::start_bin(&bin)
    }

    fn start_bin(bin: &str) -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("moto_server not found: run ./scripts/test.sh, which installs it");
        // werkzeug announces "Running on http://127.0.0.1:PORT" on stderr once it listens.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut announced = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !announced && line.contains("Running on") {
                    announced = true;
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(STARTUP_TIMEOUT)
            .expect("moto_server did not start listening in time");
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    pub fn kms(&self) -> aws_sdk_kms::Client {
        let conf = aws_sdk_kms::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .endpoint_url(&self.endpoint)
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One category of the test layout.
pub struct Cat {
    pub name: &'static str,
    pub prefix: &'static str,
    pub bucket: String,
    pub key_arn: String,
}

pub const CATEGORY_PREFIXES: [(&str, &str); 4] = [
    ("db", "db/"),
    ("api", "api/"),
    ("tls", "tls/"),
    ("misc", "misc/"),
];
pub const SOURCE: &str = "master-secrets";

/// Creates the source bucket, one bucket and one KMS key (with alias) per category.
pub async fn provision(moto: &Moto) -> Vec<Cat> {
    let s3 = moto.s3();
    let kms = moto.kms();
    s3.create_bucket()
        .bucket(SOURCE)
        .send()
        .await
        .expect("create source");
    let mut cats = Vec::new();
    for (name, prefix) in CATEGORY_PREFIXES {
        let bucket = format!("secrets-{name}");
        s3.create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create bucket");
        let key = kms.create_key().send().await.expect("create key");
        let meta = key.key_metadata().expect("metadata");
        kms.create_alias()
            .alias_name(format!("alias/dualseal-{name}"))
            .target_key_id(meta.key_id())
            .send()
            .await
            .expect("alias");
        cats.push(Cat {
            name,
            prefix,
            bucket,
            key_arn: meta.arn().expect("arn").to_owned(),
        });
    }
    cats
}

/// Writes objects into the source bucket.
pub async fn put_all(moto: &Moto, objects: &BTreeMap<String, Vec<u8>>) {
    let s3 = moto.s3();
    let futs = objects.iter().map(|(k, v)| {
        let s3 = s3.clone();
        async move {
            s3.put_object()
                .bucket(SOURCE)
                .key(k)
                .body(ByteStream::from(v.clone()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("seed {k}: {e:?}"));
        }
    });
    futures::stream::iter(futs)
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
}

/// Config text for the test layout: every category strips its prefix.
pub fn config_toml(moto: &Moto, dir: &Path, concurrency: usize) -> String {
    config_via(&moto.endpoint, dir, concurrency, 3)
}

/// `config` with a Prometheus listener on a free loopback port, and that port.
pub fn with_metrics(config: String) -> (String, u16) {
    let port = free_port();
    let config = config + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    (config, port)
}

/// Config text for the test layout, speaking to `endpoint` (moto or a fault proxy before it).
pub fn config_via(endpoint: &str, dir: &Path, concurrency: usize, max_attempts: u32) -> String {
    let mut s = format!(
        r#"
[aws]
region = "us-east-1"
endpoint_url = "{}"
operation_timeout_secs = 60

[source]
bucket = "{SOURCE}"

[daemon]
journal_path = "{}"
control_socket = "{}"
concurrency = {concurrency}
max_attempts = {max_attempts}

# These tests create plain buckets themselves; tests/provision.rs covers the hardened ones.
[provision]
require_hardened_buckets = false
writer = "arn:aws:iam::123456789012:role/dualseald"
"#,
        endpoint,
        dir.join("journal").display(),
        dir.join("control.sock").display(),
    );
    for (name, prefix) in CATEGORY_PREFIXES {
        s.push_str(&format!(
            "\n[[category]]\nname = \"{name}\"\nbucket = \"secrets-{name}\"\nkms_key = \"alias/dualseal-{name}\"\nprefixes = [\"{prefix}\"]\ndest_key = \"strip-prefix\"\n"
        ));
    }
    s
}

/// Runs `dualseald` with `config` and `args` to completion (for commands that exit, or a
/// daemon expected to refuse to start), with the same environment as [`Daemon::start`].
pub fn run_dualseald(dir: &Path, config: &str, args: &[&str]) -> std::process::Output {
    let cfg_path = dir.join("dualseal.toml");
    std::fs::write(&cfg_path, config).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dualseald"))
        .arg("--config")
        .arg(&cfg_path)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dualseald");
    // A daemon that wrongly starts would run forever: bound the wait.
    let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// A running `dualseald`, killed on drop.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts the real binary with `config` (written to `dir/dualseal.toml`) and waits for
    /// its `READY=1` on a notify socket, exactly as systemd would.
    pub fn start(dir: &Path, config: &str) -> Daemon {
        Self::start_with_env(dir, config, &[])
    }

    /// [`start`](Self::start) with extra environment variables (e.g. `DUALSEAL_LOG=trace`).
    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        let cfg_path = dir.join("dualseal.toml");
        std::fs::write(&cfg_path, config).expect("write config");
        let notify_path = dir.join(format!("notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
        notify
            .set_read_timeout(Some(STARTUP_TIMEOUT))
            .expect("timeout");
        let log = dir.join("daemon.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_dualseald"))
            .arg("--config")
            .arg(&cfg_path)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("DUALSEAL_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn dualseald");
        let mut buf = [0u8; 256];
        loop {
            let n = notify.recv(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "dualseald sent no READY=1: {e}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
            if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
                break;
            }
        }
        let _ = std::fs::remove_file(&notify_path);
        Daemon {
            child: Some(child),
            dir: dir.to_owned(),
            socket: dir.join("control.sock"),
            log,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.socket.to_str().expect("utf-8 path"))
            .await
            .expect("connect to dualseald")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        child.wait().ok().and_then(|s| s.code())
    }

    /// SIGKILL: the crash case.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Asserts that a job ended succeeded; otherwise fails with the job and the daemon's log, which
/// is where the reason is.
#[track_caller]
pub fn assert_succeeded(done: &pb::Job, daemon: &Daemon) {
    assert_eq!(
        done.state,
        pb::JobState::Succeeded as i32,
        "{done:?}\n{}",
        daemon.log_text()
    );
}

/// Starts a job over the whole source at `objects_per_second`: slow enough that a test can
/// act while it runs, however fast the machine. Returns its id.
pub async fn start_throttled(client: &mut Client, objects_per_second: u32) -> u64 {
    client
        .start_with(pb::StartJobRequest {
            options: Some(pb::JobOptions {
                limits: Some(pb::JobLimits {
                    objects_per_second,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("start")
        .job_id
}

/// Watches a job until it ends and returns its final state.
pub async fn wait_job(client: &mut Client, job: u64) -> pb::Job {
    let mut stream = Box::pin(client.watch(job).await.expect("watch"));
    let mut last = None;
    while let Some(j) = stream.next().await {
        last = Some(j.expect("watch item"));
    }
    last.expect("watch ended without a state")
}

/// Reads a destination object the way an application would: GET, check DSSE-KMS, unwrap the
/// data key with KMS under the expected context, open the envelope.
pub async fn read_sealed(moto: &Moto, cat: &Cat, key: &str) -> Vec<u8> {
    let out = moto
        .s3()
        .get_object()
        .bucket(&cat.bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {}/{key}: {e:?}", cat.bucket));
    assert_eq!(
        out.server_side_encryption().map(|s| s.as_str()),
        Some("aws:kms:dsse"),
        "{}/{key} is not DSSE-KMS",
        cat.bucket
    );
    let body = out
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec();
    let (header, _) = envelope::parse_header(&body).expect("envelope header");
    let expected = envelope::EncryptionContext::new()
        .with("dualseal:category", cat.name)
        .with("dualseal:bucket", cat.bucket.clone())
        .with("dualseal:key", key);
    assert_eq!(header.context, expected, "context of {}/{key}", cat.bucket);
    assert_eq!(header.kms_key_id, cat.key_arn);
    let ctx: std::collections::HashMap<String, String> = expected
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let dk = moto
        .kms()
        .decrypt()
        .ciphertext_blob(Blob::new(header.wrapped_key.clone()))
        .set_encryption_context(Some(ctx))
        .send()
        .await
        .expect("kms decrypt");
    let key_bytes = dk.plaintext().expect("plaintext").as_ref().to_vec();
    let data_key = envelope::DataKey::from_slice(&key_bytes).expect("32-byte key");
    envelope::open(&data_key, &body, Some(&expected))
        .expect("open envelope")
        .to_vec()
}

/// Every key in a bucket.
pub async fn list_keys(moto: &Moto, bucket: &str) -> Vec<String> {
    let s3 = moto.s3();
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .expect("list");
        keys.extend(
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        match out.next_continuation_token() {
            Some(t) if out.is_truncated().unwrap_or(false) => token = Some(t.to_owned()),
            _ => break,
        }
    }
    keys
}

/// ETags of every source object, to prove the source was not modified.
pub async fn source_etags(moto: &Moto) -> BTreeMap<String, String> {
    let s3 = moto.s3();
    let mut map = BTreeMap::new();
    for k in list_keys(moto, SOURCE).await {
        let h = s3
            .head_object()
            .bucket(SOURCE)
            .key(&k)
            .send()
            .await
            .expect("head");
        map.insert(k, h.e_tag().unwrap_or_default().to_owned());
    }
    map
}

/// Exactly one applied PutObject per source object, at its category's destination key, as
/// counted by the proxy in front of moto.
pub fn assert_one_put_each<'a>(
    proxy: &proxy::FaultProxy,
    cats: &[Cat],
    keys: impl IntoIterator<Item = &'a String>,
) {
    let puts = proxy.puts();
    for key in keys {
        let cat = cats
            .iter()
            .find(|c| key.starts_with(c.prefix))
            .expect("category");
        let dest = format!("{}/{}", cat.bucket, &key[cat.prefix.len()..]);
        assert_eq!(
            puts.get(&dest).map_or(0, Vec::len),
            1,
            "applied PUTs for {dest}"
        );
    }
}

/// Exactly one `object_verified` event per object in `audit`, for `n` objects.
pub fn assert_verified_once(audit: &[pb::AuditEvent], n: usize) {
    let mut per_key: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for e in audit.iter().filter(|e| e.kind == "object_verified") {
        *per_key.entry(e.source_key.as_str()).or_default() += 1;
    }
    assert_eq!(per_key.len(), n, "objects with an object_verified event");
    assert!(
        per_key.values().all(|&c| c == 1),
        "an object was recorded verified twice"
    );
}

/// Follows a job until at least `n` objects are verified or it stops running.
pub async fn wait_until_verified(
    client: &mut dualseal::api::client::Client,
    job: u64,
    n: u64,
) -> pb::Job {
    let mut s = Box::pin(client.watch(job).await.expect("watch"));
    let mut last = None;
    while let Some(j) = s.next().await {
        let j = j.expect("watch");
        let done = j.verified_objects >= n || j.state != pb::JobState::Running as i32;
        last = Some(j);
        if done {
            break;
        }
    }
    last.expect("state")
}

/// Runs `dualsealctl --socket SOCKET ARGS...` to completion, as an operator would.
pub fn ctl(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dualsealctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run dualsealctl")
}

/// A free loopback port for a daemon listener (the metrics endpoint, TCP control). Drawn
/// below Linux's ephemeral range (32768-60999): a port the kernel hands out for `bind(0)`
/// or for an outgoing connection (to moto, from any test running in parallel) could be taken
/// again between this check and the daemon's bind.
pub fn free_port() -> u16 {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..200 {
        let port = rng.gen_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000-32000");
}

/// A random generator for a test's random choices, seeded from `DUALSEAL_TEST_SEED` or at
/// random; the seed is printed so that a failure's choices can be replayed.
pub fn seeded_rng(test: &str) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    let seed = std::env::var("DUALSEAL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: seed {seed} (replay its random choices with DUALSEAL_TEST_SEED={seed})");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// The daemon's Prometheus exposition.
pub fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    body
}

/// Sum of `dualseal_aws_requests_total` for one service and operation.
pub fn requests(metrics: &str, service: &str, operation: &str) -> u64 {
    let (svc, op) = (
        format!("service=\"{service}\""),
        format!("operation=\"{operation}\""),
    );
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("dualseal_aws_requests_total{") && l.contains(&svc) && l.contains(&op)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `dualsealctl get URL` against moto, as an application would read a migrated secret.
pub fn dualsealctl_get(moto: &Moto, url: &str) -> std::process::Output {
    dualsealctl_get_with(moto, url, &[])
}

/// `dualsealctl get URL EXTRA...` against moto (`-o FILE`, ...).
pub fn dualsealctl_get_with(moto: &Moto, url: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dualsealctl"))
        .args(["get", url])
        .args(extra)
        .args(["--endpoint-url", &moto.endpoint, "--region", "us-east-1"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("dualsealctl get")
}

/// `n` objects spread round-robin over the four category prefixes; `make(prefix, i)` names and
/// fills object `i`.
pub fn spread(
    n: usize,
    make: impl Fn(&str, usize) -> (String, Vec<u8>),
) -> BTreeMap<String, Vec<u8>> {
    (0..n)
        .map(|i| make(CATEGORY_PREFIXES[i % 4].1, i))
        .collect()
}

/// The stored bytes of an object, as S3 returns them.
pub async fn stored_bytes(moto: &Moto, bucket: &str, key: &str) -> Vec<u8> {
    moto.s3()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {bucket}/{key}: {e:?}"))
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec()
}

/// Turns on versioning on an existing bucket.
pub async fn enable_versioning(moto: &Moto, bucket: &str) {
    moto.s3()
        .put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("versioning");
}

/// Turns on versioning and Object Lock on an existing bucket.
pub async fn enable_object_lock(moto: &Moto, bucket: &str) {
    use aws_sdk_s3::types::{
        BucketVersioningStatus, ObjectLockConfiguration, ObjectLockEnabled, VersioningConfiguration,
    };
    let s3 = moto.s3();
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("versioning");
    s3.put_object_lock_configuration()
        .bucket(bucket)
        .object_lock_configuration(
            ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("object lock");
}
