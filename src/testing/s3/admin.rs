//! The bucket administration of the in-memory S3: buckets, their security settings, policies,
//! versions and deletes.

use async_trait::async_trait;

use super::super::faults::lock;
use super::{error, MemS3};
use crate::aws::AwsErrorKind;
use crate::store::{BucketAdmin, BucketSecurity, ObjectVersion, StoreError, VersionPage};

#[async_trait]
impl BucketAdmin for MemS3 {
    async fn bucket_exists(&self, bucket: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.state).buckets.contains_key(bucket))
    }

    async fn bucket_security(&self, bucket: &str) -> Result<BucketSecurity, StoreError> {
        let s = lock(&self.state);
        let b = s.buckets.get(bucket).ok_or_else(|| {
            error(
                "GetBucket",
                bucket,
                "",
                AwsErrorKind::NotFound,
                "NoSuchBucket",
            )
        })?;
        Ok(BucketSecurity {
            versioning: b.versioned.then(|| "Enabled".to_owned()),
            policy: b.policy.clone(),
            ..BucketSecurity::default()
        })
    }

    async fn create_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        self.create(bucket, false);
        Ok(())
    }

    async fn put_default_encryption(
        &self,
        _bucket: &str,
        _key_arn: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn put_public_access_block(&self, _bucket: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn put_versioning(&self, bucket: &str) -> Result<(), StoreError> {
        if let Some(b) = lock(&self.state).buckets.get_mut(bucket) {
            b.versioned = true;
        }
        Ok(())
    }

    async fn put_ownership(&self, _bucket: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn put_policy(&self, bucket: &str, policy_json: &str) -> Result<(), StoreError> {
        if let Some(b) = lock(&self.state).buckets.get_mut(bucket) {
            b.policy = Some(policy_json.to_owned());
        }
        Ok(())
    }

    async fn put_logging(
        &self,
        _bucket: &str,
        _target: &str,
        _prefix: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn put_abort_incomplete_uploads(
        &self,
        _bucket: &str,
        _days: i32,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn delete_policy(&self, bucket: &str) -> Result<(), StoreError> {
        if let Some(b) = lock(&self.state).buckets.get_mut(bucket) {
            b.policy = None;
        }
        Ok(())
    }

    async fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        marker: Option<(String, String)>,
    ) -> Result<VersionPage, StoreError> {
        const OP: &str = "ListObjectVersions";
        self.enter(OP, bucket, prefix, false)?;
        let s = lock(&self.state);
        let b = s
            .buckets
            .get(bucket)
            .ok_or_else(|| error(OP, bucket, prefix, AwsErrorKind::NotFound, "NoSuchBucket"))?;
        let mut versions = Vec::new();
        let start = marker.map(|(k, _)| k);
        for (k, vs) in &b.objects {
            if !k.starts_with(prefix) || start.as_ref().is_some_and(|m| k <= m) {
                continue;
            }
            let last = vs.len().saturating_sub(1);
            for (i, v) in vs.iter().enumerate() {
                versions.push(ObjectVersion {
                    key: k.clone(),
                    version_id: v.version_id.clone(),
                    delete_marker: v.body.is_none(),
                    is_latest: i == last,
                });
            }
        }
        Ok(VersionPage {
            versions,
            next: None,
        })
    }

    async fn object_lock_enabled(&self, _bucket: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn lock_state(
        &self,
        _bucket: &str,
        _key: &str,
        _version: &str,
    ) -> Result<(Option<String>, bool), StoreError> {
        Ok((None, false))
    }

    async fn delete_versions(
        &self,
        bucket: &str,
        versions: &[(String, String)],
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        const OP: &str = "DeleteObjects";
        self.enter(OP, bucket, "", false)?;
        let mut s = lock(&self.state);
        let b = s
            .buckets
            .get_mut(bucket)
            .ok_or_else(|| error(OP, bucket, "", AwsErrorKind::NotFound, "NoSuchBucket"))?;
        for (k, v) in versions {
            if let Some(vs) = b.objects.get_mut(k) {
                vs.retain(|x| x.version_id != *v);
                if vs.is_empty() {
                    b.objects.remove(k);
                }
            }
        }
        Ok(Vec::new())
    }
}
