//! The `dualseal.v1.Control` service: each call authorizes the caller, converts the request,
//! runs it on the engine and converts the answer. No decision is made here.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::auth::{self, Access, SharedAccess};
use super::{convert, pb, WATCH_HEARTBEAT, WATCH_MIN_INTERVAL};
use crate::engine::{Command, Engine};

/// The `dualseal.v1.Control` service.
#[derive(Debug, Clone)]
pub struct ControlService {
    pub(super) engine: Engine,
    pub(super) access: SharedAccess,
}

impl ControlService {
    fn access(&self) -> std::sync::Arc<Access> {
        self.access
            .read()
            .map(|a| std::sync::Arc::clone(&a))
            .unwrap_or_else(|p| std::sync::Arc::clone(&p.into_inner()))
    }

    /// Refuses (and audits) a call the caller's role does not allow; returns the actor.
    async fn authorize<T>(
        &self,
        req: &Request<T>,
        action: crate::access::Action,
        what: &'static str,
    ) -> Result<String, Status> {
        let access = self.access();
        let (caller, who) = auth::identify(req, &access);
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
                r.allow_weak_buckets,
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
