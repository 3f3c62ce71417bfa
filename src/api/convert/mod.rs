//! Conversions between generated proto types and domain types, and engine errors to status
//! with `google.rpc` error details: the status helpers and time types here, one module per
//! area of the API.

mod audit;
mod job;
mod report;

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::pb;
use crate::engine::EngineError;

/// The `domain` of every `ErrorInfo` the API sends.
pub const ERROR_DOMAIN: &str = "dualseal.io";

pub use audit::{audit_event, audit_filter, audit_record};
pub use job::{job_state, kind_filter, object_status, options_from_pb, state_filter};
pub use report::{decommission_mode, decommission_mode_to_pb};

/// A timestamp from ms since the Unix epoch.
pub fn timestamp(ms: u64) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        // Below 1e9: fits.
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

/// ms since the Unix epoch from a timestamp; `None` before 1970 or out of range.
pub fn timestamp_ms(t: &pbjson_types::Timestamp) -> Option<u64> {
    let secs = u64::try_from(t.seconds).ok()?;
    let nanos = u64::try_from(t.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    secs.checked_mul(1000)?.checked_add(nanos / 1_000_000)
}

fn duration(secs: u64) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: i64::try_from(secs).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

/// The `reason` of an `ErrorInfo`: the enum value's name without its prefix.
pub fn reason_name(r: pb::ErrorReason) -> &'static str {
    let name = r.as_str_name();
    name.strip_prefix("ERROR_REASON_").unwrap_or(name)
}

/// A status carrying an `ErrorInfo` with `reason`, plus whatever `more` adds.
pub fn status(
    code: Code,
    reason: pb::ErrorReason,
    message: String,
    metadata: HashMap<String, String>,
    more: impl FnOnce(&mut ErrorDetails),
) -> Status {
    let mut details = ErrorDetails::with_error_info(reason_name(reason), ERROR_DOMAIN, metadata);
    more(&mut details);
    Status::with_error_details(code, message, details)
}

/// INVALID_ARGUMENT naming the field (a `BadRequest` violation).
pub fn invalid(field: &str, message: impl Into<String>) -> Status {
    let message = message.into();
    status(
        Code::InvalidArgument,
        pb::ErrorReason::InvalidArgument,
        message.clone(),
        HashMap::new(),
        |d| {
            d.add_bad_request_violation(field, message);
        },
    )
}

/// FAILED_PRECONDITION with a `PreconditionFailure` of `kind` about `subject`.
pub fn precondition(kind: &str, subject: &str, message: String) -> Status {
    status(
        Code::FailedPrecondition,
        pb::ErrorReason::Precondition,
        message.clone(),
        HashMap::new(),
        |d| {
            d.add_precondition_failure_violation(kind, subject, message);
        },
    )
}

/// PERMISSION_DENIED.
pub fn denied(message: String) -> Status {
    status(
        Code::PermissionDenied,
        pb::ErrorReason::PermissionDenied,
        message,
        HashMap::new(),
        |_| {},
    )
}

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Self {
        use pb::ErrorReason as R;
        let msg = e.to_string();
        let plain = |code, reason| status(code, reason, msg.clone(), HashMap::new(), |_| {});
        match e {
            EngineError::NoSuchJob(id) => status(
                Code::NotFound,
                R::JobNotFound,
                msg,
                HashMap::from([("job_id".to_owned(), id.to_string())]),
                |d| {
                    d.set_resource_info(
                        "dualseal.v1.Job",
                        id.to_string(),
                        "",
                        "no job has this id",
                    );
                },
            ),
            EngineError::FailedPrecondition(_) => precondition("STATE", "", msg),
            EngineError::InvalidRequest(_) => status(
                Code::InvalidArgument,
                R::InvalidArgument,
                msg,
                HashMap::new(),
                |_| {},
            ),
            EngineError::ShuttingDown => plain(Code::Unavailable, R::ShuttingDown),
            EngineError::Journal(_) => plain(Code::Internal, R::Journal),
            EngineError::Store(_) | EngineError::Kms(_) | EngineError::Provision(_)
                if e.is_retryable() =>
            {
                plain(Code::Unavailable, R::AwsUnavailable)
            }
            EngineError::Store(_) | EngineError::Kms(_) | EngineError::Provision(_) => {
                plain(Code::FailedPrecondition, R::Aws)
            }
            EngineError::Inventory(_) => plain(Code::FailedPrecondition, R::Inventory),
        }
    }
}

/// A plan's token expiry, `secs` from now.
pub fn expire_time(secs: u64) -> pbjson_types::Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    timestamp(now.saturating_add(secs.saturating_mul(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_to_the_audit_trail_text() {
        for at in [
            "2026-11-27T15:13:06.100Z",
            "1970-01-01T00:00:00.000Z",
            "2026-12-03T23:59:59.999Z",
        ] {
            let ms = crate::audit::parse_time(at).expect("valid");
            let back = timestamp_ms(&timestamp(ms)).expect("in range");
            assert_eq!(crate::audit::rfc3339(back), at);
        }
        assert_eq!(
            timestamp_ms(&pbjson_types::Timestamp {
                seconds: -1,
                nanos: 0
            }),
            None
        );
        assert_eq!(
            timestamp_ms(&pbjson_types::Timestamp {
                seconds: 1,
                nanos: 1_000_000_000
            }),
            None
        );
    }

    #[test]
    fn engine_errors_carry_a_stable_reason() {
        let s = Status::from(EngineError::NoSuchJob(7));
        assert_eq!(s.code(), Code::NotFound);
        let info = s.get_details_error_info().expect("error info");
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("JOB_NOT_FOUND", ERROR_DOMAIN)
        );
        assert_eq!(info.metadata.get("job_id").map(String::as_str), Some("7"));
    }

    #[test]
    fn an_export_filter_that_can_match_nothing_is_refused_field_by_field() {
        let req = pb::ExportAuditRequest {
            kind: "object_verifed".into(),
            outcome: "okay".into(),
            since: Some(timestamp(2_000)),
            until: Some(timestamp(1_000)),
            ..Default::default()
        };
        let s = audit_filter(req).expect_err("refused");
        assert_eq!(s.code(), Code::InvalidArgument);
        let fields: Vec<String> = s
            .get_details_bad_request()
            .expect("bad request")
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["kind", "outcome", "since"]);
        assert!(audit_filter(pb::ExportAuditRequest {
            kind: "object_verified".into(),
            ..Default::default()
        })
        .is_ok());
    }
}
