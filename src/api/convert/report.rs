//! Reports: plans, verification, provisioning, the mapping, cutover and decommission.

use tonic::Status;

use super::super::pb;
use super::{duration, invalid, object_status};
use crate::engine::{PlanReport, VerifyReport};

impl From<PlanReport> for pb::PlanResponse {
    fn from(p: PlanReport) -> Self {
        Self {
            source_bucket: p.source_bucket,
            categories: p
                .categories
                .into_iter()
                .map(|c| pb::CategoryTotals {
                    category: c.category,
                    destination_bucket: c.bucket,
                    objects: c.objects,
                    bytes: c.bytes,
                    largest: c
                        .largest
                        .into_iter()
                        .map(|(key, bytes)| pb::SizedKey { key, bytes })
                        .collect(),
                    objects_by_rule: c.rules.into_iter().collect(),
                })
                .collect(),
            unclassified_objects: p.unclassified_objects,
            unclassified_bytes: p.unclassified_bytes,
            unclassified_sample: p.unclassified_sample,
            conflict_objects: p.conflict_objects,
            conflicts_sample: p
                .conflicts_sample
                .into_iter()
                .map(|(key, categories)| pb::Conflict { key, categories })
                .collect(),
            total_objects: p.total_objects,
            total_bytes: p.total_bytes,
            excluded_objects: p.excluded_objects,
            estimate: Some(pb::Estimate {
                s3_gets: p.estimate.s3_gets,
                s3_puts: p.estimate.s3_puts,
                s3_lists_and_heads: p.estimate.s3_lists_and_heads,
                kms_dualseal_requests: p.estimate.kms_dualseal,
                kms_dsse_requests: p.estimate.kms_dsse,
                dsse_gb: p.estimate.dsse_gb,
                cost_usd: p.estimate.cost_usd,
                eta: p.estimate.eta_secs.map(duration),
                basis: p.estimate.basis,
            }),
            content: p.content.map(|c| pb::ContentReport {
                inspected_objects: c.inspected,
                objects_by_kind: c.by_kind.into_iter().collect(),
                agreement_objects: c.agreements,
                disagreement_objects: c.disagreements,
                unclaimed_objects: c.unclaimed,
                unrecognised_objects: c.unrecognised,
                unreadable_objects: c.unreadable,
                first_error: c.first_error.unwrap_or_default(),
                disagreements_sample: c.disagreements_sample.into_iter().map(verdict).collect(),
                verdicts_sample: c.verdicts_sample.into_iter().map(verdict).collect(),
            }),
            weak_buckets: p.weak_buckets,
        }
    }
}

fn verdict(v: crate::engine::ContentVerdict) -> pb::ContentVerdict {
    pb::ContentVerdict {
        key: v.key,
        kind: v.kind,
        why: v.why,
        content_category: v.content_category.unwrap_or_default(),
        key_rules: v.key_rules,
        agrees: v.agrees,
    }
}

impl From<VerifyReport> for pb::VerifyReport {
    fn from(v: VerifyReport) -> Self {
        Self {
            job_id: v.job_id,
            checked_objects: v.checked,
            ok_objects: v.ok,
            mismatches: v
                .mismatches
                .into_iter()
                .map(|(k, r)| object_status(k, r))
                .collect(),
            categories: v
                .categories
                .into_iter()
                .map(|(category, t)| pb::CategoryVerify {
                    category,
                    checked_objects: t.checked,
                    ok_objects: t.ok,
                    objects_by_finding: t.findings.into_iter().collect(),
                })
                .collect(),
        }
    }
}

fn change_to_pb(c: crate::provision::Change) -> pb::ProvisionChange {
    pb::ProvisionChange {
        resource: c.resource,
        category: c.category,
        setting: c.setting,
        live: c.live,
        desired: c.desired,
        action: match c.action {
            crate::provision::Action::Create => pb::ProvisionAction::Create,
            crate::provision::Action::Update => pb::ProvisionAction::Update,
        } as i32,
        weakens: c.weakens,
    }
}

impl From<crate::provision::Report> for pb::ProvisionResponse {
    fn from(r: crate::provision::Report) -> Self {
        Self {
            changes: r.changes.into_iter().map(change_to_pb).collect(),
            applied: r.applied.into_iter().map(change_to_pb).collect(),
            documents: r
                .documents
                .into_iter()
                .map(|d| pb::PolicyDocument {
                    name: d.name,
                    kind: policy_kind(d.kind) as i32,
                    json: d.json,
                })
                .collect(),
            terraform_json: r.terraform,
            notes: r.notes,
        }
    }
}

impl From<crate::engine::MappingEntry> for pb::MappingEntry {
    fn from(m: crate::engine::MappingEntry) -> Self {
        Self {
            source_bucket: m.source_bucket,
            source_key: m.source_key,
            source_version: m.source_version.unwrap_or_default(),
            destination_bucket: m.dest_bucket,
            destination_key: m.dest_key,
            category: m.category,
            kms_key_arn: m.kms_key_arn,
            envelope_version: u32::from(m.envelope_version),
        }
    }
}

impl From<crate::engine::CutoverReport> for pb::CutoverCheckResponse {
    fn from(r: crate::engine::CutoverReport) -> Self {
        Self {
            job_id: r.job_id,
            ready: r.ready,
            checks: r
                .checks
                .into_iter()
                .map(|c| pb::CutoverCheckItem {
                    name: c.name.into(),
                    ok: c.ok,
                    detail: c.detail,
                    blocking: c.blocking,
                })
                .collect(),
            new_in_source_objects: r.new_in_source,
            changed_in_source_objects: r.changed_in_source,
            deleted_in_source_objects: r.deleted_in_source,
            copies_checked: r.copies_checked,
            copies_failed: r.copies_failed_count,
        }
    }
}

fn policy_kind(kind: &str) -> pb::PolicyKind {
    match kind {
        "key-policy" => pb::PolicyKind::KeyPolicy,
        "bucket-policy" => pb::PolicyKind::BucketPolicy,
        "identity-policy" => pb::PolicyKind::IdentityPolicy,
        _ => pb::PolicyKind::Unspecified,
    }
}

/// The engine's decommission mode for a request's.
///
/// # Errors
/// `InvalidArgument` naming `mode` for UNSPECIFIED or a number outside the enum.
pub fn decommission_mode(raw: i32) -> Result<crate::engine::DecommissionMode, Status> {
    use crate::engine::DecommissionMode as M;
    match pb::DecommissionMode::try_from(raw) {
        Ok(pb::DecommissionMode::Lockdown) => Ok(M::Lockdown),
        Ok(pb::DecommissionMode::Rollback) => Ok(M::Rollback),
        Ok(pb::DecommissionMode::Archive) => Ok(M::Archive),
        Ok(pb::DecommissionMode::Delete) => Ok(M::Delete),
        Ok(pb::DecommissionMode::Unspecified) | Err(_) => Err(invalid(
            "mode",
            "mode is required: DECOMMISSION_MODE_LOCKDOWN, _ROLLBACK, _ARCHIVE or _DELETE",
        )),
    }
}

/// The proto form of the engine's decommission mode.
pub fn decommission_mode_to_pb(m: crate::engine::DecommissionMode) -> pb::DecommissionMode {
    use crate::engine::DecommissionMode as M;
    match m {
        M::Lockdown => pb::DecommissionMode::Lockdown,
        M::Rollback => pb::DecommissionMode::Rollback,
        M::Archive => pb::DecommissionMode::Archive,
        M::Delete => pb::DecommissionMode::Delete,
    }
}
