//! A typed client of the control API over a Unix socket or TCP, used by `dualsealctl` and by
//! the integration tests.

use std::path::PathBuf;

use futures::TryStreamExt;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use super::pb;
use super::pb::control_service_client::ControlServiceClient as ControlClient;

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect.
    #[error("cannot connect to dualseald at {target}: {source}; is the daemon running and the socket path right?")]
    Connect {
        /// What we tried to reach.
        target: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The address is not understood.
    #[error(
        "invalid address {0:?}: use unix:///path/to/socket, a socket path, or http://host:port"
    )]
    Address(String),
    /// The daemon refused or failed the call. Not a `source`: tonic's own rendering of a
    /// status repeats the message with its metadata, which a reader of an error never needs.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    /// The daemon answered without a field it always sends (a daemon of another version?).
    #[error("the daemon's answer has no {0}; is dualsealctl the same version as dualseald?")]
    Incomplete(&'static str),
}

impl ClientError {
    /// The stable reason code of a refused call (`JOB_NOT_FOUND`, `INVALID_ARGUMENT`, ...),
    /// from the status's `ErrorInfo`, when it has one.
    pub fn reason(&self) -> Option<String> {
        use tonic_types::StatusExt;
        match self {
            Self::Status(s) => s.get_details_error_info().map(|i| i.reason),
            _ => None,
        }
    }

    /// The fields a refused call named as invalid (`BadRequest`), with what is wrong.
    pub fn field_violations(&self) -> Vec<(String, String)> {
        use tonic_types::StatusExt;
        match self {
            Self::Status(s) => s
                .get_details_bad_request()
                .map(|b| {
                    b.field_violations
                        .into_iter()
                        .map(|v| (v.field, v.description))
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

fn job(j: Option<pb::Job>) -> Result<pb::Job, ClientError> {
    j.ok_or(ClientError::Incomplete("job"))
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        Self::Status(s)
    }
}

/// Adds the bearer token, when there is one, to every call.
#[derive(Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerToken(set)"
        } else {
            "BearerToken(none)"
        })
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// How to authenticate over TCP: TLS (server CA, optional client identity) and/or a token.
#[derive(Default)]
pub struct ClientAuth {
    /// CA that signed the daemon's certificate (PEM); enables TLS.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM), for mutual TLS.
    pub identity_pem: Option<(Vec<u8>, zeroize::Zeroizing<Vec<u8>>)>,
    /// Name the daemon's certificate is for, when it differs from the host in the address.
    pub domain: Option<String>,
    /// Bearer token.
    pub token: Option<zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("tls", &self.ca_pem.is_some())
            .field("client_cert", &self.identity_pem.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

type Inner = ControlClient<tonic::service::interceptor::InterceptedService<Channel, BearerToken>>;

/// A connected client.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Inner,
}

impl Client {
    /// Connects to `addr`: `unix:///run/dualseal/control.sock`, a bare socket path, or
    /// `http://127.0.0.1:7443`.
    ///
    /// # Errors
    /// `Address` or `Connect`.
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        Self::connect_with(addr, ClientAuth::default()).await
    }

    /// Connects with TLS and/or a bearer token (TCP): `https://host:7443`.
    ///
    /// # Errors
    /// `Address` or `Connect` (including a failed TLS handshake).
    pub async fn connect_with(addr: &str, auth: ClientAuth) -> Result<Self, ClientError> {
        let token = auth
            .token
            .as_ref()
            .map(|t| {
                tonic::metadata::MetadataValue::try_from(format!("Bearer {}", t.as_str()))
                    .map_err(|_| ClientError::Address("the token is not valid header text".into()))
            })
            .transpose()?;
        let channel = if addr.starts_with("http://") || addr.starts_with("https://") {
            let mut endpoint = Endpoint::from_shared(addr.to_owned())
                .map_err(|_| ClientError::Address(addr.to_owned()))?;
            if let Some(ca) = &auth.ca_pem {
                use tonic::transport::{Certificate, ClientTlsConfig, Identity};
                let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
                if let Some((cert, key)) = &auth.identity_pem {
                    tls = tls.identity(Identity::from_pem(cert, key.as_slice()));
                }
                if let Some(d) = &auth.domain {
                    tls = tls.domain_name(d.clone());
                }
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|source| ClientError::Connect {
                        target: addr.to_owned(),
                        source,
                    })?;
            }
            endpoint
                .connect()
                .await
                .map_err(|source| ClientError::Connect {
                    target: addr.to_owned(),
                    source,
                })?
        } else {
            let path = PathBuf::from(addr.strip_prefix("unix://").unwrap_or(addr));
            if path.as_os_str().is_empty() {
                return Err(ClientError::Address(addr.to_owned()));
            }
            // The URI is required by the API but unused: the connector dials the socket.
            Endpoint::from_static("http://localhost")
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        let s = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(s))
                    }
                }))
                .await
                .map_err(|source| ClientError::Connect {
                    target: addr.to_owned(),
                    source,
                })?
        };
        Ok(Self {
            inner: ControlClient::with_interceptor(channel, BearerToken(token)),
        })
    }

    /// Dry run.
    ///
    /// # Errors
    /// `Status`.
    pub async fn plan(
        &mut self,
        prefix: &str,
        sample_limit: u32,
    ) -> Result<pb::PlanResponse, ClientError> {
        Ok(self
            .inner
            .plan(pb::PlanRequest {
                prefix: prefix.to_owned(),
                sample_limit,
                ..Default::default()
            })
            .await?
            .into_inner())
    }

    /// Dry run with a job's options (and, with `preflight`, the checks a start makes).
    ///
    /// # Errors
    /// `Status`.
    pub async fn plan_with(
        &mut self,
        req: pb::PlanRequest,
    ) -> Result<pb::PlanResponse, ClientError> {
        Ok(self.inner.plan(req).await?.into_inner())
    }

    /// Starts a job with options.
    ///
    /// # Errors
    /// `Status`.
    pub async fn start_with(&mut self, req: pb::StartJobRequest) -> Result<pb::Job, ClientError> {
        job(self.inner.start_job(req).await?.into_inner().job)
    }

    /// Streams the location map of a job's verified objects.
    ///
    /// # Errors
    /// `Status`.
    pub async fn mapping(
        &mut self,
        job_id: u64,
    ) -> Result<impl futures::Stream<Item = Result<pb::MappingEntry, ClientError>>, ClientError>
    {
        let s = self
            .inner
            .export_mapping(pb::ExportMappingRequest { job_id })
            .await?
            .into_inner();
        Ok(s.map_err(ClientError::from)
            .and_then(|r| async move { r.entry.ok_or(ClientError::Incomplete("entry")) }))
    }

    /// Plans a decommission step of a job's source.
    ///
    /// # Errors
    /// `Status`.
    pub async fn plan_decommission(
        &mut self,
        job_id: u64,
        mode: pb::DecommissionMode,
    ) -> Result<pb::PlanDecommissionResponse, ClientError> {
        Ok(self
            .inner
            .plan_decommission(pb::PlanDecommissionRequest {
                job_id,
                mode: mode as i32,
                ..Default::default()
            })
            .await?
            .into_inner())
    }

    /// [`plan_decommission`](Self::plan_decommission) with every field of the request.
    ///
    /// # Errors
    /// `Status`.
    pub async fn plan_decommission_with(
        &mut self,
        req: pb::PlanDecommissionRequest,
    ) -> Result<pb::PlanDecommissionResponse, ClientError> {
        Ok(self.inner.plan_decommission(req).await?.into_inner())
    }

    /// Executes a planned decommission step.
    ///
    /// # Errors
    /// `Status`.
    pub async fn decommission(&mut self, token: &str) -> Result<String, ClientError> {
        Ok(self
            .inner
            .decommission(pb::DecommissionRequest {
                token: token.to_owned(),
            })
            .await?
            .into_inner()
            .summary)
    }

    /// Starts a catch-up pass over a finished job.
    ///
    /// # Errors
    /// `Status`.
    pub async fn sync(&mut self, job_id: u64) -> Result<pb::Job, ClientError> {
        job(self
            .inner
            .sync_job(pb::SyncJobRequest { job_id })
            .await?
            .into_inner()
            .job)
    }

    /// Is it safe to switch applications over?
    ///
    /// # Errors
    /// `Status`.
    pub async fn cutover_check(
        &mut self,
        job_id: u64,
    ) -> Result<pb::CutoverCheckResponse, ClientError> {
        Ok(self
            .inner
            .cutover_check(pb::CutoverCheckRequest { job_id })
            .await?
            .into_inner())
    }

    /// Plans or applies provisioning.
    ///
    /// # Errors
    /// `Status`.
    pub async fn provision(&mut self, apply: bool) -> Result<pb::ProvisionResponse, ClientError> {
        Ok(self
            .inner
            .provision(pb::ProvisionRequest { apply })
            .await?
            .into_inner())
    }

    /// Changes a job's priority and live limits.
    ///
    /// # Errors
    /// `Status`.
    pub async fn update(&mut self, req: pb::UpdateJobRequest) -> Result<pb::Job, ClientError> {
        job(self.inner.update_job(req).await?.into_inner().job)
    }

    /// Starts a job.
    ///
    /// # Errors
    /// `Status`.
    pub async fn start(
        &mut self,
        prefix: &str,
        allow_conflicts: bool,
    ) -> Result<pb::Job, ClientError> {
        job(self
            .inner
            .start_job(pb::StartJobRequest {
                prefix: prefix.to_owned(),
                allow_conflicts,
                ..Default::default()
            })
            .await?
            .into_inner()
            .job)
    }

    /// One job.
    ///
    /// # Errors
    /// `Status`.
    pub async fn job(&mut self, job_id: u64) -> Result<pb::Job, ClientError> {
        job(self
            .inner
            .get_job(pb::GetJobRequest { job_id })
            .await?
            .into_inner()
            .job)
    }

    /// Every job, oldest first (every page).
    ///
    /// # Errors
    /// `Status`.
    pub async fn jobs(&mut self) -> Result<Vec<pb::Job>, ClientError> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .jobs_page(pb::ListJobsRequest {
                    page_token,
                    ..Default::default()
                })
                .await?;
            all.extend(page.jobs);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// One page of jobs.
    ///
    /// # Errors
    /// `Status`.
    pub async fn jobs_page(
        &mut self,
        req: pb::ListJobsRequest,
    ) -> Result<pb::ListJobsResponse, ClientError> {
        Ok(self.inner.list_jobs(req).await?.into_inner())
    }

    /// Streams a job's progress until it ends.
    ///
    /// # Errors
    /// `Status`.
    pub async fn watch(
        &mut self,
        job_id: u64,
    ) -> Result<impl futures::Stream<Item = Result<pb::Job, ClientError>>, ClientError> {
        let s = self
            .inner
            .watch_job(pb::WatchJobRequest { job_id })
            .await?
            .into_inner();
        Ok(s.map_err(ClientError::from)
            .and_then(|r| async move { job(r.job) }))
    }

    /// Pauses a job.
    ///
    /// # Errors
    /// `Status`.
    pub async fn pause(&mut self, job_id: u64) -> Result<pb::Job, ClientError> {
        job(self
            .inner
            .pause_job(pb::PauseJobRequest { job_id })
            .await?
            .into_inner()
            .job)
    }

    /// Resumes a job.
    ///
    /// # Errors
    /// `Status`.
    pub async fn resume(&mut self, job_id: u64) -> Result<pb::Job, ClientError> {
        job(self
            .inner
            .resume_job(pb::ResumeJobRequest { job_id })
            .await?
            .into_inner()
            .job)
    }

    /// Cancels a job.
    ///
    /// # Errors
    /// `Status`.
    pub async fn cancel(&mut self, job_id: u64) -> Result<pb::Job, ClientError> {
        job(self
            .inner
            .cancel_job(pb::CancelJobRequest { job_id })
            .await?
            .into_inner()
            .job)
    }

    /// Re-queues a finished job's failed objects.
    ///
    /// # Errors
    /// `Status`.
    pub async fn retry(&mut self, job_id: u64) -> Result<pb::Job, ClientError> {
        job(self
            .inner
            .retry_job(pb::RetryJobRequest { job_id })
            .await?
            .into_inner()
            .job)
    }

    /// Starts a verification job over migration job `job_id`; returns the new job.
    ///
    /// # Errors
    /// `Status`.
    pub async fn verify(&mut self, job_id: u64) -> Result<pb::Job, ClientError> {
        job(self
            .inner
            .verify_job(pb::VerifyJobRequest { job_id })
            .await?
            .into_inner()
            .job)
    }

    /// The findings of a verification job.
    ///
    /// # Errors
    /// `Status`.
    pub async fn verify_report(&mut self, job_id: u64) -> Result<pb::VerifyReport, ClientError> {
        self.inner
            .get_verify_report(pb::GetVerifyReportRequest { job_id })
            .await?
            .into_inner()
            .report
            .ok_or(ClientError::Incomplete("report"))
    }

    /// Verifies migration job `job_id` and waits for the report.
    ///
    /// # Errors
    /// `Status`.
    pub async fn verify_and_wait(&mut self, job_id: u64) -> Result<pb::VerifyReport, ClientError> {
        let v = self.verify(job_id).await?;
        let mut s = Box::pin(self.watch(v.job_id).await?);
        while let Some(j) = futures::StreamExt::next(&mut s).await {
            j?;
        }
        self.verify_report(v.job_id).await
    }

    /// A job's objects, optionally in one state.
    ///
    /// # Errors
    /// `Status`.
    pub async fn objects(
        &mut self,
        job_id: u64,
        state: pb::ObjectState,
    ) -> Result<Vec<pb::ObjectStatus>, ClientError> {
        let s = self
            .inner
            .list_objects(pb::ListObjectsRequest {
                job_id,
                state: state as i32,
            })
            .await?
            .into_inner();
        s.map_err(ClientError::from)
            .and_then(|r| async move { r.object.ok_or(ClientError::Incomplete("object")) })
            .try_collect()
            .await
    }

    /// Streams a job's objects (optionally in one state), for reports of any size.
    ///
    /// # Errors
    /// `Status`.
    pub async fn objects_stream(
        &mut self,
        job_id: u64,
        state: pb::ObjectState,
    ) -> Result<impl futures::Stream<Item = Result<pb::ObjectStatus, ClientError>>, ClientError>
    {
        let s = self
            .inner
            .list_objects(pb::ListObjectsRequest {
                job_id,
                state: state as i32,
            })
            .await?
            .into_inner();
        Ok(s.map_err(ClientError::from)
            .and_then(|r| async move { r.object.ok_or(ClientError::Incomplete("object")) }))
    }

    /// The audit trail (0 for every job).
    ///
    /// # Errors
    /// `Status`.
    pub async fn audit(&mut self, job_id: u64) -> Result<Vec<pb::AuditEvent>, ClientError> {
        let s = self
            .audit_stream(pb::ExportAuditRequest {
                job_id,
                ..Default::default()
            })
            .await?;
        s.try_collect().await
    }

    /// The audit events matching a filter, as a stream (flat memory for any size).
    ///
    /// # Errors
    /// `Status`.
    pub async fn audit_stream(
        &mut self,
        filter: pb::ExportAuditRequest,
    ) -> Result<impl futures::Stream<Item = Result<pb::AuditEvent, ClientError>>, ClientError> {
        let s = self.inner.export_audit(filter).await?.into_inner();
        Ok(s.map_err(ClientError::from)
            .and_then(|r| async move { r.event.ok_or(ClientError::Incomplete("event")) }))
    }

    /// Walks the daemon's audit chain.
    ///
    /// # Errors
    /// `Status`.
    pub async fn verify_audit(&mut self) -> Result<pb::VerifyAuditResponse, ClientError> {
        Ok(self
            .inner
            .verify_audit(pb::VerifyAuditRequest {})
            .await?
            .into_inner())
    }
}
