//! A fault-injecting HTTP proxy between dualseal and moto: 503 SlowDown, 500, connection
//! resets, truncated responses, delays, KMS ThrottlingException, and dropped responses of PUTs
//! that the server did apply (the "did it commit?" case). It also counts requests, so tests
//! can check duplicate uploads and attempt bounds.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;

/// Per-request probabilities of each fault (checked in this order, at most one per request).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub kms_throttle: f64,
    pub s3_slowdown: f64,
    pub s3_internal: f64,
    pub reset: f64,
    pub delay: f64,
    pub truncate_get: f64,
    pub drop_put_response: f64,
}

impl Faults {
    /// About one request in four to five fails or stalls in some way (measured 22-25 %).
    pub fn storm() -> Faults {
        Faults {
            kms_throttle: 0.10,
            s3_slowdown: 0.08,
            s3_internal: 0.05,
            reset: 0.05,
            delay: 0.05,
            truncate_get: 0.03,
            drop_put_response: 0.05,
        }
    }
}

/// How the proxy rewrites the server-side encryption S3 reports for objects (answers to
/// object requests only; a bucket-level answer is left alone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SseReport {
    /// As the server answered.
    #[default]
    AsIs,
    /// No `x-amz-server-side-encryption-aws-kms-key-id` (as plain moto, or a lax S3-compatible
    /// store, answers for DSSE).
    DropKey,
    /// Another KMS key than the one the object is under.
    SwapKey(String),
    /// Another algorithm (the key id is kept).
    Algorithm(String),
}

#[derive(Default)]
struct State {
    /// The rewrite of server-side encryption answers, and the HTTP methods it applies to
    /// (empty: all).
    sse_report: Mutex<(SseReport, Vec<hyper::Method>)>,
    faults: Mutex<Faults>,
    /// Successful (2xx) object PUTs per "bucket/key", with the time (ms since epoch).
    puts: Mutex<HashMap<String, Vec<u64>>>,
    /// Every request per "METHOD bucket/key" (S3) or "kms Operation".
    requests: Mutex<HashMap<String, u64>>,
    /// Paths ("bucket/key") whose GET answers 403 AccessDenied.
    forbidden: Mutex<HashSet<String>>,
    /// Paths ("bucket/key") whose next GETs are cut short, and how many more.
    truncate_next: Mutex<HashMap<String, u64>>,
    /// KMS key ids whose crypto calls answer DisabledException (moto does not enforce it).
    disabled_keys: Mutex<HashSet<String>>,
    /// Requests whose query contains this string never get an answer (until cleared).
    stall: Mutex<Option<String>>,
    /// Paths ("bucket/key") whose GETs never get an answer (until cleared).
    stall_gets: Mutex<HashSet<String>>,
    injected: AtomicU64,
    total: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    pub endpoint: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counts one down for `path`; whether there was one left.
fn take_one(m: &Mutex<HashMap<String, u64>>, path: &str) -> bool {
    let mut m = lock(m);
    match m.get_mut(path) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(r: Response<Bytes>) -> Response<Body> {
    r.map(|b| Full::new(b).map_err(|never| match never {}).boxed())
}

fn xml_error(status: StatusCode, code: &str) -> Response<Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the fault proxy</Message><RequestId>fault</RequestId></Error>"
    );
    full(
        Response::builder()
            .status(status)
            .header("content-type", "application/xml")
            .body(Bytes::from(body))
            .expect("response"),
    )
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream` (http://127.0.0.1:PORT).
    pub async fn start(upstream: &str) -> FaultProxy {
        Self::start_at(upstream, 0).await
    }

    /// [`start`](Self::start) on a given loopback port (0: any free one): a proxy that was
    /// dropped, making its endpoint unreachable, comes back at the same address.
    pub async fn start_at(upstream: &str, port: u16) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let state = Arc::new(State::default());
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = Arc::clone(&st);
                let client = client.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(Arc::clone(&st), client.clone(), upstream.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FaultProxy {
            endpoint: format!("http://{addr}"),
            state,
            task,
        }
    }

    pub fn set_faults(&self, f: Faults) {
        *lock(&self.state.faults) = f;
    }

    pub fn forbid_get(&self, bucket_key: &str) {
        lock(&self.state.forbidden).insert(bucket_key.to_owned());
    }

    /// Cuts the next `n` GETs of `bucket_key` short (the client sees the connection drop),
    /// then lets them through.
    pub fn truncate_next_gets(&self, bucket_key: &str, n: u64) {
        lock(&self.state.truncate_next).insert(bucket_key.to_owned(), n);
    }

    /// Holds every request whose query string contains `query_part` unanswered (the client
    /// waits as for a stalled connection) until [`release`](Self::release).
    pub fn stall(&self, query_part: &str) {
        *lock(&self.state.stall) = Some(query_part.to_owned());
    }

    /// Holds every GET of `bucket_key` unanswered until [`release`](Self::release).
    pub fn stall_get(&self, bucket_key: &str) {
        lock(&self.state.stall_gets).insert(bucket_key.to_owned());
    }

    /// Ends [`stall`](Self::stall) and [`stall_get`](Self::stall_get) for requests that
    /// arrive from now on.
    pub fn release(&self) {
        *lock(&self.state.stall) = None;
        lock(&self.state.stall_gets).clear();
    }

    /// Answers KMS calls naming `key_id` with DisabledException, as AWS does for a disabled
    /// key (moto only records the state).
    pub fn disable_kms_key(&self, key_id: &str) {
        lock(&self.state.disabled_keys).insert(key_id.to_owned());
    }

    /// Rewrites what S3 reports of objects' server-side encryption, in the answers to
    /// `methods` (empty: every method).
    pub fn report_sse(&self, report: SseReport, methods: &[hyper::Method]) {
        *lock(&self.state.sse_report) = (report, methods.to_vec());
    }

    pub fn allow_all(&self) {
        lock(&self.state.forbidden).clear();
        lock(&self.state.disabled_keys).clear();
    }

    /// Successful PUT times per "bucket/key".
    pub fn puts(&self) -> HashMap<String, Vec<u64>> {
        lock(&self.state.puts).clone()
    }

    /// Request counts per "METHOD bucket/key" or "kms Operation".
    pub fn requests(&self) -> HashMap<String, u64> {
        lock(&self.state.requests).clone()
    }

    pub fn injected(&self) -> u64 {
        self.state.injected.load(Ordering::SeqCst)
    }

    pub fn total(&self) -> u64 {
        self.state.total.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    st: Arc<State>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    upstream: String,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    st.total.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .to_bytes();
    let kms_op = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix("TrentService."))
        .map(str::to_owned);
    let path = percent_decode(parts.uri.path().trim_start_matches('/'));
    let query = parts.uri.query().unwrap_or("");
    let is_object = kms_op.is_none() && path.contains('/');
    let is_put = is_object && parts.method == hyper::Method::PUT && !query.contains("uploadId");
    let is_get = is_object && parts.method == hyper::Method::GET;
    let label = match &kms_op {
        Some(op) => format!("kms {op}"),
        None => format!("{} {path}", parts.method),
    };
    *lock(&st.requests).entry(label).or_default() += 1;

    let stalled = lock(&st.stall)
        .as_deref()
        .is_some_and(|q| !q.is_empty() && query.contains(q));
    if stalled || (is_get && lock(&st.stall_gets).contains(&path)) {
        std::future::pending::<()>().await;
    }
    if is_get && lock(&st.forbidden).contains(&path) {
        return Ok(xml_error(StatusCode::FORBIDDEN, "AccessDenied"));
    }
    if matches!(
        kms_op.as_deref(),
        Some("GenerateDataKey" | "Decrypt" | "Encrypt")
    ) {
        let text = String::from_utf8_lossy(&body);
        if lock(&st.disabled_keys)
            .iter()
            .any(|k| text.contains(k.as_str()))
        {
            return Ok(full(
                Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .header("content-type", "application/x-amz-json-1.1")
                    .body(Bytes::from_static(
                        br#"{"__type":"DisabledException","message":"key is disabled (proxy)"}"#,
                    ))
                    .expect("response"),
            ));
        }
    }
    let f = lock(&st.faults).clone();
    let roll: f64 = rand::thread_rng().gen();
    let mut acc = 0.0;
    let mut hit = |p: f64| {
        let h = roll >= acc && roll < acc + p;
        acc += p;
        h
    };
    let inject = |st: &State| {
        st.injected.fetch_add(1, Ordering::SeqCst);
    };
    if kms_op.is_some() && hit(f.kms_throttle) {
        inject(&st);
        return Ok(full(
            Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .header("content-type", "application/x-amz-json-1.1")
                .body(Bytes::from_static(
                    br#"{"__type":"ThrottlingException","message":"Rate exceeded (injected)"}"#,
                ))
                .expect("response"),
        ));
    }
    if kms_op.is_none() && hit(f.s3_slowdown) {
        inject(&st);
        return Ok(xml_error(StatusCode::SERVICE_UNAVAILABLE, "SlowDown"));
    }
    if kms_op.is_none() && hit(f.s3_internal) {
        inject(&st);
        return Ok(xml_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
        ));
    }
    if hit(f.reset) {
        inject(&st);
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected reset",
        ));
    }
    if hit(f.delay) {
        inject(&st);
        let ms = rand::thread_rng().gen_range(50..400);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let truncate = is_get && (take_one(&st.truncate_next, &path) || hit(f.truncate_get));
    let drop_response = is_put && hit(f.drop_put_response);

    let uri = format!(
        "{upstream}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut builder = Request::builder().method(parts.method.clone()).uri(uri);
    for (k, v) in &parts.headers {
        builder = builder.header(k, v);
    }
    let fwd = builder
        .body(Full::new(body))
        .map_err(std::io::Error::other)?;
    // Forward in a task of its own: when the client dies mid-request (SIGKILL), hyper drops
    // this handler, but the server may still apply the request, and the count must see it.
    let st2 = Arc::clone(&st);
    let path2 = path.clone();
    let forwarded = tokio::spawn(async move {
        let resp = client.request(fwd).await.map_err(std::io::Error::other)?;
        let (rparts, rbody) = resp.into_parts();
        let rbytes = rbody
            .collect()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .to_bytes();
        if is_put && rparts.status.is_success() {
            lock(&st2.puts).entry(path2).or_default().push(now_ms());
        }
        Ok::<_, std::io::Error>((rparts, rbytes))
    });
    let (mut rparts, rbytes) = forwarded.await.map_err(std::io::Error::other)??;
    if is_object {
        let (report, methods) = lock(&st.sse_report).clone();
        if methods.is_empty() || methods.contains(&parts.method) {
            rewrite_sse(&mut rparts.headers, &report);
        }
    }
    if drop_response {
        // The server applied the PUT; the client never hears of it.
        inject(&st);
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected: response lost",
        ));
    }
    if truncate && rbytes.len() > 8 {
        inject(&st);
        // Keep the upstream Content-Length, send half the body, then abort the connection:
        // the client sees a truncated response.
        let half = rbytes.slice(..rbytes.len() / 2);
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(half)),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "injected truncation",
            )),
        ];
        let body = StreamBody::new(futures::stream::iter(frames)).boxed();
        return Ok(Response::from_parts(rparts, body));
    }
    Ok(full(Response::from_parts(rparts, rbytes)))
}

const SSE: &str = "x-amz-server-side-encryption";
const SSE_KEY: &str = "x-amz-server-side-encryption-aws-kms-key-id";

fn rewrite_sse(headers: &mut hyper::HeaderMap, report: &SseReport) {
    let value = |s: &str| hyper::header::HeaderValue::from_str(s).expect("header value");
    match report {
        SseReport::AsIs => {}
        SseReport::DropKey => {
            headers.remove(SSE_KEY);
        }
        SseReport::SwapKey(k) => {
            if headers.contains_key(SSE_KEY) {
                headers.insert(SSE_KEY, value(k));
            }
        }
        SseReport::Algorithm(a) => {
            if headers.contains_key(SSE) {
                headers.insert(SSE, value(a));
            }
        }
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
