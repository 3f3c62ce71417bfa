//! Where each category's objects go: its bucket and its KMS key resolved to an ARN, checked
//! against S3 and KMS before a job relies on them.

use super::error::EngineError;
use super::retry::{Retry, JOB_CALL_ATTEMPTS};
use crate::config::CategoryConfig;
use crate::kms::KeyService;
use crate::store::ObjectStore;

/// Where one category's objects go, with its KMS key resolved to an ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Category name.
    pub category: String,
    /// Destination bucket.
    pub bucket: String,
    /// KMS key ARN for both layers.
    pub kms_key_arn: String,
    /// Why the category cannot be used now (disabled key, missing bucket), if so.
    pub unusable: Option<String>,
}

/// Resolves every category's KMS key and checks every destination bucket. `strict` (the
/// preflight of StartJob) fails on the first unusable category; otherwise an unusable
/// category is marked so that its objects fail with the reason while the others proceed.
///
/// # Errors
/// `Kms` or `Store` naming the category resource that is unusable (strict), or a retryable
/// error that outlasted its retries.
pub(super) async fn resolve(
    categories: &[CategoryConfig],
    keys: &dyn KeyService,
    store: &dyn ObjectStore,
    retry: &Retry,
    strict: bool,
) -> Result<Vec<Target>, EngineError> {
    let mut out = Vec::with_capacity(categories.len());
    for c in categories {
        // A control request should answer within seconds; a running job can wait longer.
        let attempts = if strict { 4 } else { JOB_CALL_ATTEMPTS };
        let resolved: Result<String, EngineError> = retry
            .run("resolve category", attempts, || async {
                let arn = keys.resolve_key(&c.key_ref()).await?;
                store.check_bucket(&c.bucket).await?;
                Ok(arn)
            })
            .await;
        let (kms_key_arn, unusable) = match resolved {
            Ok(arn) => (arn, None),
            Err(e) if strict || e.is_retryable() || e.is_systemic() => return Err(e),
            Err(e) => (
                c.key_ref(),
                Some(format!("category {:?} is unusable: {e}", c.name)),
            ),
        };
        out.push(Target {
            category: c.name.clone(),
            bucket: c.bucket.clone(),
            kms_key_arn,
            unusable,
        });
    }
    Ok(out)
}
