//! The gRPC control plane: a tonic service that converts between proto and engine types and
//! holds no business logic, plus the server plumbing (Unix socket, health, reflection).

// tonic::Status is the error type of every gRPC handler; boxing it would only add noise.
#![allow(clippy::result_large_err)]

pub mod client;
pub mod convert;

use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::engine::{Command, Engine};

/// Generated protobuf and gRPC types of `dualseal.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod pb {
    tonic::include_proto!("dualseal.v1");
    include!(concat!(env!("OUT_DIR"), "/dualseal.v1.serde.rs"));

    /// Encoded descriptors, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("dualseal_descriptor");
}

/// How often WatchJob may send an update, at most.
const WATCH_MIN_INTERVAL: Duration = Duration::from_millis(250);
/// WatchJob sends an update at least this often, so clients see liveness.
const WATCH_HEARTBEAT: Duration = Duration::from_secs(1);

/// Errors serving the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket could not be bound.
    #[error("cannot listen on {path}: {source}; check that the directory exists and is writable")]
    Bind {
        /// Socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Another process is already serving on the socket.
    #[error("{0} is in use by a running process (another dualseald?); stop it or use another control_socket")]
    InUse(String),
    /// The server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The TCP listener's certificate, key or client CA cannot be used.
    #[error("the TLS settings of [tcp] are unusable ({0}); check tls_cert, tls_key and client_ca")]
    Tls(String),
}

/// Binds the control socket, replacing a stale socket file left by a crash, and restricts it
/// to the owner and group.
///
/// # Errors
/// `InUse` when a live server answers on it, `Bind` otherwise.
pub async fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, ApiError> {
    let shown = path.display().to_string();
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ApiError::InUse(shown));
        }
        std::fs::remove_file(path).map_err(|source| ApiError::Bind {
            path: shown.clone(),
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| ApiError::Bind {
        path: shown.clone(),
        source,
    })?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        ApiError::Bind {
            path: shown,
            source,
        }
    })?;
    Ok(listener)
}

/// Who may call what, swappable at run time (SIGHUP).
pub type SharedAccess = std::sync::Arc<std::sync::RwLock<std::sync::Arc<Access>>>;

/// The access policy and the bearer tokens in force.
#[derive(Debug, Default)]
pub struct Access {
    /// Roles by uid/gid and certificate common name.
    pub policy: Option<crate::access::Policy>,
    /// Bearer tokens (TCP only).
    pub tokens: crate::access::Tokens,
}

/// Wraps access for sharing.
pub fn shared_access(access: Access) -> SharedAccess {
    std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(access)))
}

/// TLS settings of the TCP listener, already read from their files.
pub struct TcpTls {
    /// Server certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// Server key, PEM (zeroized on drop).
    pub key_pem: zeroize::Zeroizing<Vec<u8>>,
    /// Client CA, PEM: mutual TLS when set.
    pub client_ca_pem: Option<Vec<u8>>,
    /// Whether a client may connect without a certificate (and use a bearer token).
    pub client_cert_optional: bool,
}

impl std::fmt::Debug for TcpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTls")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

async fn routes(
    builder: tonic::transport::Server,
    engine: Engine,
    access: SharedAccess,
) -> Result<tonic::transport::server::Router, ApiError> {
    let mut builder = builder;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<pb::control_service_server::ControlServiceServer<ControlService>>()
        .await;
    // Both reflection versions: grpcurl and grpcio-reflection's descriptor database still
    // speak v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e: tonic_reflection::server::Error| ApiError::Bind {
        path: "reflection".into(),
        source: std::io::Error::other(e.to_string()),
    };
    let v1 = reflection().build_v1().map_err(reflection_error)?;
    let v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;
    Ok(builder
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha)
        .add_service(pb::control_service_server::ControlServiceServer::new(
            ControlService { engine, access },
        )))
}

/// Serves the control API on `listener` until `shutdown` resolves, then stops accepting
/// and lets in-flight calls finish. `access` decides who may call what.
///
/// # Errors
/// `Transport` when the server fails.
pub async fn serve(
    engine: Engine,
    access: SharedAccess,
    listener: UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ApiError> {
    routes(tonic::transport::Server::builder(), engine, access)
        .await?
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

/// Prepares the control API over TCP (TLS unless `tls` is `None`, which config validation
/// allows only on loopback): the TLS settings are checked here, before the daemon says it is
/// ready; the returned future serves until `shutdown` resolves.
///
/// # Errors
/// `Transport` when the TLS settings are invalid (a key that is not a key, a certificate
/// that does not parse).
pub async fn tcp_server(
    engine: Engine,
    access: SharedAccess,
    listener: tokio::net::TcpListener,
    tls: Option<TcpTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<impl std::future::Future<Output = Result<(), ApiError>> + Send, ApiError> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = tls {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let mut cfg =
            ServerTlsConfig::new().identity(Identity::from_pem(&t.cert_pem, t.key_pem.as_slice()));
        if let Some(ca) = &t.client_ca_pem {
            cfg = cfg
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(t.client_cert_optional);
        }
        builder = builder.tls_config(cfg).map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            ApiError::Tls(text)
        })?;
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let router = routes(builder, engine, access).await?;
    Ok(async move {
        router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(ApiError::from)
    })
}

/// The `dualseal.v1.Control` service.
#[derive(Debug, Clone)]
pub struct ControlService {
    engine: Engine,
    access: SharedAccess,
}

/// The common name of a DER certificate's subject.
fn subject_cn(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

impl ControlService {
    fn access(&self) -> std::sync::Arc<Access> {
        self.access
            .read()
            .map(|a| std::sync::Arc::clone(&a))
            .unwrap_or_else(|p| std::sync::Arc::clone(&p.into_inner()))
    }

    /// Identifies the caller and says who it is, for the audit trail. Never echoes a token.
    fn caller<T>(&self, req: &Request<T>, access: &Access) -> (crate::access::Caller, String) {
        use crate::access::Caller;
        if let Some(info) = req
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
        {
            return match info.peer_cred {
                Some(c) => (
                    Caller::Unix(crate::access::Peer {
                        uid: c.uid(),
                        gid: c.gid(),
                    }),
                    format!(
                        "uid={},gid={},pid={}",
                        c.uid(),
                        c.gid(),
                        c.pid().map_or_else(|| "?".to_owned(), |p| p.to_string())
                    ),
                ),
                None => (Caller::Unknown, "unix:unknown-peer".to_owned()),
            };
        }
        let addr = req
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let cert = req
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| subject_cn(c.as_ref())));
        if let (Some(cn), Some(policy)) = (&cert, &access.policy) {
            let by_cert = Caller::Certificate { cn: cn.clone() };
            if policy.role_of(&by_cert).is_some() {
                return (by_cert, format!("cert:CN={cn}@tcp:{addr}"));
            }
        }
        let bearer = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(token) = bearer {
            return match access.tokens.check(token.trim().as_bytes()) {
                Some(Caller::Token { name, role }) => {
                    let who = format!("token:{name}@tcp:{addr}");
                    (Caller::Token { name, role }, who)
                }
                _ => (
                    Caller::Unknown,
                    format!("tcp:{addr} (bearer token not recognised)"),
                ),
            };
        }
        match cert {
            Some(cn) => (
                Caller::Certificate { cn: cn.clone() },
                format!("cert:CN={cn}@tcp:{addr}"),
            ),
            None => (Caller::Unknown, format!("tcp:{addr}")),
        }
    }

    /// Refuses (and audits) a call the caller's role does not allow; returns the actor.
    async fn authorize<T>(
        &self,
        req: &Request<T>,
        action: crate::access::Action,
        what: &'static str,
    ) -> Result<String, Status> {
        let access = self.access();
        let (caller, who) = self.caller(req, &access);
        if access
            .policy
            .as_ref()
            .is_some_and(|p| p.allows_caller(&caller, action))
        {
            return Ok(who);
        }
        self.engine.audit_denied(&who, what).await;
        let fix = match caller {
            crate::access::Caller::Unix(_) => {
                "ask an operator to add your uid or group to [access] in the daemon's config"
            }
            _ => "use a client certificate whose common name [access] lists, or a valid bearer token with the right role",
        };
        Err(convert::denied(format!("{who} may not {what}: {fix}")))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn job_id(raw: u64) -> Result<u64, Status> {
    if raw == 0 {
        return Err(convert::invalid(
            "job_id",
            "job_id is required (jobs are numbered from 1)",
        ));
    }
    Ok(raw)
}

/// Jobs per ListJobs page by default, and at most.
const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1_000;

fn page_after(token: &str) -> Result<u64, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .strip_prefix("after:")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| {
            convert::invalid(
                "page_token",
                "page_token is not one this daemon gave: pass next_page_token unchanged, or nothing for the first page",
            )
        })
}

#[tonic::async_trait]
impl pb::control_service_server::ControlService for ControlService {
    async fn plan(
        &self,
        req: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        let _who = self
            .authorize(&req, crate::access::Action::Control, "plan")
            .await?;
        let r = req.into_inner();
        let limit = if r.sample_limit == 0 {
            20
        } else {
            r.sample_limit.min(10_000)
        };
        let options = convert::options_from_pb(r.options)?;
        let report = self
            .engine
            .plan(
                &r.prefix,
                &options,
                r.preflight,
                limit as usize,
                r.inspect_content,
            )
            .await?;
        Ok(Response::new(report.into()))
    }

    async fn start_job(
        &self,
        req: Request<pb::StartJobRequest>,
    ) -> Result<Response<pb::StartJobResponse>, Status> {
        let who = self
            .authorize(&req, crate::access::Action::Control, "start a job")
            .await?;
        let r = req.into_inner();
        let req = crate::engine::StartRequest {
            prefix: r.prefix,
            options: convert::options_from_pb(r.options)?,
            allow_conflicts: r.allow_conflicts,
            allow_weak_buckets: r.allow_weak_buckets,
        };
        let job = Some(self.engine.execute(&who, Command::Start(req)).await?.into());
        Ok(Response::new(pb::StartJobResponse { job }))
    }

    async fn get_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let _who = self
            .authorize(&req, crate::access::Action::Read, "read a job")
            .await?;
        let id = job_id(req.into_inner().job_id)?;
        let job = Some(self.engine.view(id)?.into());
        Ok(Response::new(pb::GetJobResponse { job }))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let _who = self
            .authorize(&req, crate::access::Action::Read, "list jobs")
            .await?;
        let r = req.into_inner();
        let after = page_after(&r.page_token)?;
        let size = match r.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let states = r
            .states
            .iter()
            .map(|s| convert::job_state("states", *s))
            .collect::<Result<Vec<_>, _>>()?;
        let kind = convert::kind_filter(r.kind)?;
        let (page, next) = self.engine.jobs_page(after, size as usize, &states, kind)?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: page.into_iter().map(Into::into).collect(),
            next_page_token: next.map(|id| format!("after:{id}")).unwrap_or_default(),
        }))
    }

    type WatchJobStream = BoxStream<pb::WatchJobResponse>;

    async fn watch_job(
        &self,
        req: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let _who = self
            .authorize(&req, crate::access::Action::Read, "watch a job")
            .await?;
        let id = job_id(req.into_inner().job_id)?;
        self.engine.view(id)?;
        let engine = self.engine.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut changes = engine.subscribe();
            loop {
                let view = match engine.view(id) {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let active = view.record.state.is_active();
                let update = pb::WatchJobResponse {
                    job: Some(view.into()),
                };
                if tx.send(Ok(update)).await.is_err() || !active {
                    return;
                }
                tokio::time::sleep(WATCH_MIN_INTERVAL).await;
                let _ = tokio::time::timeout(WATCH_HEARTBEAT, changes.changed()).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn pause_job(
        &self,
        req: Request<pb::PauseJobRequest>,
    ) -> Result<Response<pb::PauseJobResponse>, Status> {
        let who = self
            .authorize(&req, crate::access::Action::Control, "pause a job")
            .await?;
        let id = job_id(req.into_inner().job_id)?;
        let job = Some(self.engine.execute(&who, Command::Pause(id)).await?.into());
        Ok(Response::new(pb::PauseJobResponse { job }))
    }

    async fn resume_job(
        &self,
        req: Request<pb::ResumeJobRequest>,
    ) -> Result<Response<pb::ResumeJobResponse>, Status> {
        let who = self
            .authorize(&req, crate::access::Action::Control, "resume a job")
            .await?;
        let id = job_id(req.into_inner().job_id)?;
        let job = Some(self.engine.execute(&who, Command::Resume(id)).await?.into());
        Ok(Response::new(pb::ResumeJobResponse { job }))
    }

    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let who = self
            .authorize(&req, crate::access::Action::Control, "cancel a job")
            .await?;
        let id = job_id(req.into_inner().job_id)?;
        let job = Some(self.engine.execute(&who, Command::Cancel(id)).await?.into());
        Ok(Response::new(pb::CancelJobResponse { job }))
    }

    async fn update_job(
        &self,
        req: Request<pb::UpdateJobRequest>,
    ) -> Result<Response<pb::UpdateJobResponse>, Status> {
        let who = self
            .authorize(
                &req,
                crate::access::Action::Control,
                "change a job's limits",
            )
            .await?;
        let r = req.into_inner();
        let id = job_id(r.job_id)?;
        let update = crate::engine::JobUpdate {
            priority: r.priority,
            concurrency: r.concurrency,
            objects_per_sec: r.objects_per_second,
            bytes_per_sec: r.bytes_per_second,
            kms_requests_per_sec: r.kms_requests_per_second,
        };
        let job = Some(
            self.engine
                .execute(&who, Command::Update(id, update))
                .await?
                .into(),
        );
        Ok(Response::new(pb::UpdateJobResponse { job }))
    }

    async fn provision(
        &self,
        req: Request<pb::ProvisionRequest>,
    ) -> Result<Response<pb::ProvisionResponse>, Status> {
        let apply = req.get_ref().apply;
        let (action, what) = if apply {
            (crate::access::Action::Control, "apply provisioning")
        } else {
            (crate::access::Action::Read, "plan provisioning")
        };
        let who = self.authorize(&req, action, what).await?;
        Ok(Response::new(
            self.engine.provision(&who, apply).await?.into(),
        ))
    }

    async fn sync_job(
        &self,
        req: Request<pb::SyncJobRequest>,
    ) -> Result<Response<pb::SyncJobResponse>, Status> {
        let who = self
            .authorize(&req, crate::access::Action::Control, "catch up a job")
            .await?;
        let id = job_id(req.into_inner().job_id)?;
        let job = Some(self.engine.execute(&who, Command::Sync(id)).await?.into());
        Ok(Response::new(pb::SyncJobResponse { job }))
    }

    async fn plan_decommission(
        &self,
        req: Request<pb::PlanDecommissionRequest>,
    ) -> Result<Response<pb::PlanDecommissionResponse>, Status> {
        let who = self
            .authorize(&req, crate::access::Action::Control, "plan a decommission")
            .await?;
        let r = req.into_inner();
        let id = job_id(r.job_id)?;
        let mode = convert::decommission_mode(r.mode)?;
        let p = self
            .engine
            .decommission_plan(&who, id, mode, r.destroy_uncopied_versions)
            .await?;
        Ok(Response::new(pb::PlanDecommissionResponse {
            token: p.token,
            mode: convert::decommission_mode_to_pb(p.mode) as i32,
            summary: p.summary,
            expire_time: Some(convert::expire_time(p.expires_in_secs)),
        }))
    }

    async fn decommission(
        &self,
        req: Request<pb::DecommissionRequest>,
    ) -> Result<Response<pb::DecommissionResponse>, Status> {
        let who = self
            .authorize(&req, crate::access::Action::Control, "decommission")
            .await?;
        let token = req.into_inner().token;
        if token.is_empty() {
            return Err(convert::invalid(
                "token",
                "a token is required: PlanDecommission returns one",
            ));
        }
        let summary = self.engine.decommission(&who, &token).await?;
        Ok(Response::new(pb::DecommissionResponse { summary }))
    }

    type ExportMappingStream = BoxStream<pb::ExportMappingResponse>;

    async fn export_mapping(
        &self,
        req: Request<pb::ExportMappingRequest>,
    ) -> Result<Response<Self::ExportMappingStream>, Status> {
        let _who = self
            .authorize(&req, crate::access::Action::Read, "export the location map")
            .await?;
        let id = job_id(req.into_inner().job_id)?;
        let rx = self.engine.mapping(id).await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|item| {
            item.map(|e| pb::ExportMappingResponse {
                entry: Some(e.into()),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cutover_check(
        &self,
        req: Request<pb::CutoverCheckRequest>,
    ) -> Result<Response<pb::CutoverCheckResponse>, Status> {
        let _who = self
            .authorize(&req, crate::access::Action::Read, "check a cutover")
            .await?;
        let id = job_id(req.into_inner().job_id)?;
        Ok(Response::new(self.engine.cutover_check(id).await?.into()))
    }

    async fn retry_job(
        &self,
        req: Request<pb::RetryJobRequest>,
    ) -> Result<Response<pb::RetryJobResponse>, Status> {
        let who = self
            .authorize(&req, crate::access::Action::Control, "retry a job")
            .await?;
        let id = job_id(req.into_inner().job_id)?;
        let job = Some(self.engine.execute(&who, Command::Retry(id)).await?.into());
        Ok(Response::new(pb::RetryJobResponse { job }))
    }

    async fn verify_job(
        &self,
        req: Request<pb::VerifyJobRequest>,
    ) -> Result<Response<pb::VerifyJobResponse>, Status> {
        let who = self
            .authorize(&req, crate::access::Action::Control, "start a verification")
            .await?;
        let id = job_id(req.into_inner().job_id)?;
        let job = Some(self.engine.execute(&who, Command::Verify(id)).await?.into());
        Ok(Response::new(pb::VerifyJobResponse { job }))
    }

    async fn get_verify_report(
        &self,
        req: Request<pb::GetVerifyReportRequest>,
    ) -> Result<Response<pb::GetVerifyReportResponse>, Status> {
        let _who = self
            .authorize(
                &req,
                crate::access::Action::Read,
                "read a verification report",
            )
            .await?;
        let id = job_id(req.into_inner().job_id)?;
        let report = Some(self.engine.verify_report(id).await?.into());
        Ok(Response::new(pb::GetVerifyReportResponse { report }))
    }

    type ListObjectsStream = BoxStream<pb::ListObjectsResponse>;

    async fn list_objects(
        &self,
        req: Request<pb::ListObjectsRequest>,
    ) -> Result<Response<Self::ListObjectsStream>, Status> {
        let _who = self
            .authorize(&req, crate::access::Action::Read, "list objects")
            .await?;
        let r = req.into_inner();
        let id = job_id(r.job_id)?;
        let state = convert::state_filter(r.state)?;
        let rx = self.engine.objects_stream(id, state)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|item| {
            item.map(|(k, rec)| pb::ListObjectsResponse {
                object: Some(convert::object_status(k, rec)),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type ExportAuditStream = BoxStream<pb::ExportAuditResponse>;

    async fn export_audit(
        &self,
        req: Request<pb::ExportAuditRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        let _who = self
            .authorize(&req, crate::access::Action::Read, "export the audit trail")
            .await?;
        let r = req.into_inner();
        if r.job_id != 0 {
            self.engine.view(r.job_id)?;
        }
        let filter = convert::audit_filter(r)?;
        let rx = self.engine.audit_stream(filter);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|item| {
            item.map(|(e, at_ms)| pb::ExportAuditResponse {
                event: Some(convert::audit_event(e, at_ms)),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn verify_audit(
        &self,
        req: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        let _who = self
            .authorize(&req, crate::access::Action::Read, "verify the audit trail")
            .await?;
        Ok(Response::new(self.engine.verify_audit().await?.into()))
    }
}
