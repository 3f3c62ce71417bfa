//! The policy a lockdown puts on the source bucket.

/// What a rollback and the audit need on a locked-down source, and all dualseald keeps there.
pub(super) const POLICY_ACTIONS: [&str; 3] = [
    "s3:GetBucketPolicy",
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
];

/// The policy a lockdown puts on the source: every action on the bucket and its objects is
/// denied to every principal but the break-glass ones, except that dualseald's own role keeps
/// the three bucket-policy actions a rollback needs (nothing on objects). Explicit denies win
/// over any allow, so this holds whatever IAM grants.
pub fn lockdown_policy(
    bucket: &str,
    break_glass: &[String],
    daemon_role: &str,
) -> serde_json::Value {
    let mut keepers: Vec<&str> = break_glass.iter().map(String::as_str).collect();
    keepers.push(daemon_role);
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DualsealLockdownObjects",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": format!("arn:aws:s3:::{bucket}/*"),
                "Condition": {"StringNotEquals": {"aws:PrincipalArn": break_glass}},
            },
            {
                "Sid": "DualsealLockdownBucket",
                "Effect": "Deny",
                "Principal": "*",
                "NotAction": POLICY_ACTIONS,
                "Resource": format!("arn:aws:s3:::{bucket}"),
                "Condition": {"StringNotEquals": {"aws:PrincipalArn": break_glass}},
            },
            {
                "Sid": "DualsealLockdownPolicyForRollback",
                "Effect": "Deny",
                "Principal": "*",
                "Action": POLICY_ACTIONS,
                "Resource": format!("arn:aws:s3:::{bucket}"),
                "Condition": {"StringNotEquals": {"aws:PrincipalArn": keepers}},
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the lockdown denies `action` on `resource` to `principal`, evaluating its
    /// denies as IAM would (an explicit deny wins; everything is otherwise allowed).
    fn denied(policy: &serde_json::Value, principal: &str, action: &str, resource: &str) -> bool {
        policy["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .any(|st| {
                let listed = |v: &serde_json::Value| match v {
                    serde_json::Value::String(s) => s == "s3:*" || s == action,
                    serde_json::Value::Array(a) => a.iter().any(|x| x == action),
                    _ => false,
                };
                let acts = match (st.get("Action"), st.get("NotAction")) {
                    (Some(a), _) => listed(a),
                    (None, Some(n)) => !listed(n),
                    _ => false,
                };
                let exempt = st["Condition"]["StringNotEquals"]["aws:PrincipalArn"]
                    .as_array()
                    .expect("principals")
                    .iter()
                    .any(|p| p == principal);
                st["Resource"] == resource && acts && !exempt
            })
    }

    #[test]
    fn lockdown_keeps_the_daemon_exactly_what_rollback_needs() {
        let glass = vec!["arn:aws:iam::1:role/glass".to_owned()];
        let (daemon, app) = ("arn:aws:iam::1:role/dualseald", "arn:aws:iam::1:role/app");
        let p = lockdown_policy("src", &glass, daemon);
        let (bucket, objects) = ("arn:aws:s3:::src", "arn:aws:s3:::src/*");
        for action in POLICY_ACTIONS {
            assert!(!denied(&p, daemon, action, bucket), "{action}");
            assert!(!denied(&p, &glass[0], action, bucket), "{action}");
            assert!(denied(&p, app, action, bucket), "{action}");
        }
        for action in ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"] {
            assert!(denied(&p, daemon, action, objects), "{action}");
            assert!(denied(&p, app, action, objects), "{action}");
            assert!(!denied(&p, &glass[0], action, objects), "{action}");
        }
        for action in ["s3:ListBucket", "s3:PutBucketVersioning", "s3:DeleteBucket"] {
            assert!(denied(&p, daemon, action, bucket), "{action}");
            assert!(!denied(&p, &glass[0], action, bucket), "{action}");
        }
    }
}
