//! How a live bucket or policy differs from what the config wants, in words an operator can
//! act on: the settings that are weaker, and policy changes compared as sets of statements.

use std::collections::BTreeMap;

use super::policy::PolicyDocument;
use super::PAB_NAMES;
use crate::store::{BucketSecurity, SSE_DSSE_KMS};

pub(super) fn encryption_ok(live: &BucketSecurity, key_arn: &str) -> bool {
    live.sse_algorithm.as_deref() == Some(SSE_DSSE_KMS)
        && live
            .sse_kms_key
            .as_deref()
            .is_some_and(|k| crate::kms::same_key(k, key_arn))
        && live.bucket_key_enabled != Some(true)
}

/// Bucket settings that differ from the hardened state: (setting, live, desired).
/// Days after which a category bucket's incomplete multipart uploads are aborted: the
/// backstop for an upload a crashed attempt left and S3 refused to abort when asked.
pub(super) const ABORT_UPLOADS_DAYS: i32 = 7;

pub(super) fn aborts_uploads(live: &BucketSecurity) -> bool {
    live.abort_incomplete_uploads_days
        .is_some_and(|d| d <= ABORT_UPLOADS_DAYS)
}

pub(super) fn bucket_diff(
    live: &BucketSecurity,
    key_arn: &str,
) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    if !encryption_ok(live, key_arn) {
        out.push((
            "default encryption",
            match (&live.sse_algorithm, &live.sse_kms_key) {
                (None, _) => "none".into(),
                (Some(a), Some(k)) => format!(
                    "{a} under {k}, bucket key {}",
                    live.bucket_key_enabled.unwrap_or(false)
                ),
                (Some(a), None) => a.clone(),
            },
            format!("{SSE_DSSE_KMS} under {key_arn}, bucket key off"),
        ));
    }
    if live.public_access_block != Some([true; 4]) {
        out.push((
            "block public access",
            live.public_access_block
                .map_or("not configured".into(), |b| {
                    PAB_NAMES
                        .iter()
                        .zip(b)
                        .filter(|(_, on)| !on)
                        .map(|(n, _)| format!("{n} off"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }),
            "all four settings on".into(),
        ));
    }
    if live.versioning.as_deref() != Some("Enabled") {
        out.push((
            "versioning",
            live.versioning
                .clone()
                .unwrap_or_else(|| "never enabled".into()),
            "Enabled".into(),
        ));
    }
    if live.ownership.as_deref() != Some("BucketOwnerEnforced") {
        out.push((
            "object ownership",
            live.ownership
                .clone()
                .unwrap_or_else(|| "not set (ACLs honoured)".into()),
            "BucketOwnerEnforced".into(),
        ));
    }
    out
}

/// How a live policy differs from the desired one, by statement id; `None` when equal.
pub fn policy_diff(live: Option<&str>, desired: &PolicyDocument) -> Option<String> {
    let Some(live) = live else {
        return Some("no policy".into());
    };
    let Ok(live) = serde_json::from_str::<PolicyDocument>(live) else {
        return Some("a policy dualseal cannot read as IAM JSON".into());
    };
    let norm = |d: &PolicyDocument| -> BTreeMap<String, serde_json::Value> {
        d.statement
            .iter()
            .map(|s| {
                (
                    s.sid.clone(),
                    normalize(serde_json::to_value(s).unwrap_or_default()),
                )
            })
            .collect()
    };
    let (have, want) = (norm(&live), norm(desired));
    let mut diffs = Vec::new();
    for (sid, w) in &want {
        match have.get(sid) {
            None => diffs.push(format!("statement {sid} missing")),
            Some(h) if h != w => diffs.push(format!("statement {sid} differs")),
            Some(_) => {}
        }
    }
    for sid in have.keys().filter(|s| !want.contains_key(*s)) {
        diffs.push(format!("extra statement {sid}"));
    }
    (!diffs.is_empty()).then(|| diffs.join("; "))
}

/// Sorts arrays and collapses one-element arrays, as IAM treats them.
fn normalize(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Array(items) => {
            let mut items: Vec<Value> = items.into_iter().map(normalize).collect();
            items.sort_by_key(|a| a.to_string());
            if items.len() == 1 {
                items.remove(0)
            } else {
                Value::Array(items)
            }
        }
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::super::policy::{self, CategoryIam, Principals};
    use super::*;

    #[test]
    fn a_weak_bucket_names_each_setting() {
        let live = BucketSecurity {
            sse_algorithm: Some("AES256".into()),
            public_access_block: Some([true, true, false, true]),
            versioning: Some("Suspended".into()),
            ..Default::default()
        };
        let d = bucket_diff(&live, "arn:aws:kms:r:1:key/k");
        let names: Vec<_> = d.iter().map(|x| x.0).collect();
        assert_eq!(
            names,
            [
                "default encryption",
                "block public access",
                "versioning",
                "object ownership"
            ]
        );
        assert_eq!(d[1].1, "BlockPublicPolicy off");
        let good = BucketSecurity {
            sse_algorithm: Some(SSE_DSSE_KMS.into()),
            sse_kms_key: Some("k".into()),
            bucket_key_enabled: Some(false),
            public_access_block: Some([true; 4]),
            versioning: Some("Enabled".into()),
            ownership: Some("BucketOwnerEnforced".into()),
            ..Default::default()
        };
        assert!(bucket_diff(&good, "arn:aws:kms:r:1:key/k").is_empty());
    }

    #[test]
    fn policy_diffs_ignore_order_and_name_statements() {
        let p = Principals {
            writer: "arn:aws:iam::1:role/w".into(),
            key_admins: vec!["arn:aws:iam::1:role/a".into()],
            partition: "aws".into(),
        };
        let c = CategoryIam {
            name: "db".into(),
            bucket: "secrets-db".into(),
            key_arn: "arn:aws:kms:r:1:key/k".into(),
            readers: vec![
                "arn:aws:iam::1:role/r1".into(),
                "arn:aws:iam::1:role/r2".into(),
            ],
        };
        let desired = policy::bucket_policy(&c, &p);
        let mut reordered: serde_json::Value = serde_json::to_value(&desired).unwrap();
        reordered["Statement"].as_array_mut().unwrap().reverse();
        assert_eq!(policy_diff(Some(&reordered.to_string()), &desired), None);
        let mut weaker = desired.clone();
        weaker.statement.retain(|s| s.sid != "DenyWritesNotDsseKms");
        weaker.statement[0].sid = "Custom".into();
        let diff = policy_diff(Some(&weaker.to_json()), &desired).unwrap();
        assert!(
            diff.contains("statement DenyWritesNotDsseKms missing"),
            "{diff}"
        );
        assert!(diff.contains("extra statement Custom"), "{diff}");
        assert_eq!(policy_diff(None, &desired).as_deref(), Some("no policy"));
    }
}
