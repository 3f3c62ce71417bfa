//! Audit events, export filters and the chain's verification.

use std::collections::HashMap;

use tonic::{Code, Status};

use super::super::pb;
use super::{invalid, status, timestamp, timestamp_ms};

/// The proto form of an audit event recorded at `at_ms` (the time its `at` text renders).
pub fn audit_event(e: crate::audit::AuditEvent, at_ms: u64) -> pb::AuditEvent {
    pb::AuditEvent {
        seq: e.seq,
        time: Some(timestamp(at_ms)),
        job_id: e.job_id,
        kind: e.kind,
        source_key: e.source_key,
        destination_bucket: e.destination_bucket,
        destination_key: e.destination_key,
        detail: e.detail,
        prev_hash: e.prev_hash,
        hash: e.hash,
        actor: e.actor,
        category: e.category,
        outcome: e.outcome,
    }
}

/// The record form of an exported event (what its hash covers), for offline verification.
pub fn audit_record(e: pb::AuditEvent) -> crate::audit::AuditEvent {
    crate::audit::AuditEvent {
        seq: e.seq,
        at: e
            .time
            .as_ref()
            .and_then(timestamp_ms)
            .map(crate::audit::rfc3339)
            .unwrap_or_default(),
        job_id: e.job_id,
        kind: e.kind,
        actor: e.actor,
        category: e.category,
        outcome: e.outcome,
        source_key: e.source_key,
        destination_bucket: e.destination_bucket,
        destination_key: e.destination_key,
        detail: e.detail,
        prev_hash: e.prev_hash,
        hash: e.hash,
    }
}

/// An export filter from a request.
///
/// # Errors
/// `InvalidArgument` with a `BadRequest` violation per problem: a time before 1970, `since`
/// after `until`, a kind or outcome the trail never records.
pub fn audit_filter(r: pb::ExportAuditRequest) -> Result<crate::audit::Filter, Status> {
    let time = |field: &str, t: Option<&pbjson_types::Timestamp>| match t {
        None => Ok(None),
        Some(t) => timestamp_ms(t)
            .map(Some)
            .ok_or_else(|| invalid(field, format!("{field} is before 1970 or out of range"))),
    };
    let filter = crate::audit::Filter {
        after_seq: r.after_seq,
        job: (r.job_id != 0).then_some(r.job_id),
        since_ms: time("since", r.since.as_ref())?,
        until_ms: time("until", r.until.as_ref())?,
        category: r.category,
        kind: r.kind,
        outcome: r.outcome,
        actor: r.actor,
        source_prefix: r.source_prefix,
        destination_prefix: r.destination_prefix,
    };
    let mut problems = filter.problems();
    // Compared exactly: a range inverted by less than a millisecond is as empty.
    let inverted = match (&r.since, &r.until) {
        (Some(a), Some(b)) => (a.seconds, a.nanos) > (b.seconds, b.nanos),
        _ => false,
    };
    if inverted && !problems.iter().any(|(field, _)| *field == "since") {
        problems.push((
            "since",
            "since is after until: the range is empty".to_owned(),
        ));
    }
    if problems.is_empty() {
        return Ok(filter);
    }
    let message = problems
        .iter()
        .map(|(_, m)| m.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Err(status(
        Code::InvalidArgument,
        pb::ErrorReason::InvalidArgument,
        message,
        HashMap::new(),
        |d| {
            for (field, m) in problems {
                d.add_bad_request_violation(field, m);
            }
        },
    ))
}

impl From<crate::audit::ChainReport> for pb::VerifyAuditResponse {
    fn from(r: crate::audit::ChainReport) -> Self {
        let broken_seq = match &r.broken {
            Some(crate::audit::ChainBreak::Edited { seq })
            | Some(crate::audit::ChainBreak::Reordered { seq, .. })
            | Some(crate::audit::ChainBreak::Unlinked { seq })
            | Some(crate::audit::ChainBreak::HeadMismatch { seq }) => *seq,
            Some(crate::audit::ChainBreak::Missing { expected, .. }) => *expected,
            Some(crate::audit::ChainBreak::Truncated { last, .. }) => last + 1,
            None => 0,
        };
        let (head_seq, head_hash) = r.head.unwrap_or_default();
        Self {
            events: r.events,
            intact: r.broken.is_none(),
            problem: r.broken.map(|b| b.to_string()).unwrap_or_default(),
            broken_seq,
            head_seq,
            head_hash,
        }
    }
}
