//! The S3 implementation of [`BucketAdmin`]: bucket settings, policies, versions and
//! lifecycle rules, for provisioning and decommission.

use async_trait::async_trait;
use aws_sdk_s3::types::ServerSideEncryption;

use super::s3::{absent, bad_request, err, lenient_element, S3Store};
use super::{
    BucketAdmin, BucketSecurity, ObjectStore, ObjectVersion, StoreError, VersionPage,
    LIFECYCLE_RULE_ID,
};
use crate::aws::AwsErrorKind;

#[async_trait]
impl BucketAdmin for S3Store {
    async fn bucket_exists(&self, bucket: &str) -> Result<bool, StoreError> {
        match self.check_bucket(bucket).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind == AwsErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn bucket_security(&self, bucket: &str) -> Result<BucketSecurity, StoreError> {
        let c = &self.client;
        let mut s = BucketSecurity::default();
        let enc = c.get_bucket_encryption().bucket(bucket).send().await;
        let enc = enc.map_err(|e| err("GetBucketEncryption", bucket, "", e));
        if let Some(out) = absent(enc, &["ServerSideEncryptionConfigurationNotFound"])? {
            if let Some(rule) = out
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
            {
                if let Some(d) = rule.apply_server_side_encryption_by_default() {
                    s.sse_algorithm = Some(d.sse_algorithm().as_str().to_owned());
                    s.sse_kms_key = d.kms_master_key_id().map(str::to_owned);
                }
                s.bucket_key_enabled = rule.bucket_key_enabled();
            }
        }
        let pab = c.get_public_access_block().bucket(bucket).send().await;
        let pab = pab.map_err(|e| err("GetPublicAccessBlock", bucket, "", e));
        if let Some(out) = absent(pab, &["NoSuchPublicAccessBlockConfiguration"])? {
            if let Some(p) = out.public_access_block_configuration() {
                s.public_access_block = Some([
                    p.block_public_acls().unwrap_or(false),
                    p.ignore_public_acls().unwrap_or(false),
                    p.block_public_policy().unwrap_or(false),
                    p.restrict_public_buckets().unwrap_or(false),
                ]);
            }
        }
        s.versioning = match c.get_bucket_versioning().bucket(bucket).send().await {
            Ok(v) => v.status().map(|s| s.as_str().to_owned()),
            // Some S3 implementations (moto 5) name the answer's root element differently, which
            // the SDK refuses; the one element that matters is read from the raw answer.
            Err(e) if e.raw_response().is_some_and(|r| r.status().is_success()) => e
                .raw_response()
                .and_then(|r| r.body().bytes())
                .and_then(|b| {
                    lenient_element(
                        b,
                        &["VersioningConfiguration", "GetBucketVersioning"],
                        "Status",
                    )
                }),
            Err(e) => return Err(err("GetBucketVersioning", bucket, "", e)),
        };
        let own = c
            .get_bucket_ownership_controls()
            .bucket(bucket)
            .send()
            .await;
        let own = own.map_err(|e| err("GetBucketOwnershipControls", bucket, "", e));
        if let Some(out) = absent(own, &["OwnershipControlsNotFoundError"])? {
            s.ownership = out
                .ownership_controls()
                .and_then(|o| o.rules().first())
                .map(|r| r.object_ownership().as_str().to_owned());
        }
        let pol = c.get_bucket_policy().bucket(bucket).send().await;
        let pol = pol.map_err(|e| err("GetBucketPolicy", bucket, "", e));
        if let Some(out) = absent(pol, &["NoSuchBucketPolicy"])? {
            s.policy = out.policy().map(str::to_owned);
        }
        let log = c
            .get_bucket_logging()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| err("GetBucketLogging", bucket, "", e))?;
        s.logging = log
            .logging_enabled()
            .map(|l| (l.target_bucket().to_owned(), l.target_prefix().to_owned()));
        s.abort_incomplete_uploads_days = self
            .lifecycle_rules(bucket)
            .await?
            .iter()
            .filter(|r| r.status() == &aws_sdk_s3::types::ExpirationStatus::Enabled)
            .filter(|r| {
                r.filter().is_none_or(|f| {
                    f.prefix().unwrap_or_default().is_empty()
                        && f.tag().is_none()
                        && f.and().is_none()
                        && f.object_size_greater_than().is_none()
                        && f.object_size_less_than().is_none()
                })
            })
            .filter_map(|r| {
                r.abort_incomplete_multipart_upload()?
                    .days_after_initiation()
            })
            .min();
        Ok(s)
    }

    async fn create_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
        let mut req = self.client.create_bucket().bucket(bucket);
        // us-east-1 is the one region that takes no location constraint.
        if let Some(r) = self.client.config().region().map(|r| r.as_ref().to_owned()) {
            if r != "us-east-1" {
                req = req.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(r.as_str()))
                        .build(),
                );
            }
        }
        req.send()
            .await
            .map_err(|e| err("CreateBucket", bucket, "", e))?;
        Ok(())
    }

    async fn put_default_encryption(&self, bucket: &str, key_arn: &str) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{
            BlockedEncryptionTypes, EncryptionType, ServerSideEncryptionByDefault,
            ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
        };
        let by_default = ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::AwsKmsDsse)
            .kms_master_key_id(key_arn)
            .build()
            .map_err(|e| bad_request("PutBucketEncryption", bucket, &e.to_string()))?;
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(by_default)
            .bucket_key_enabled(false)
            .blocked_encryption_types(
                BlockedEncryptionTypes::builder()
                    .encryption_type(EncryptionType::SseC)
                    .build(),
            )
            .build();
        let conf = ServerSideEncryptionConfiguration::builder()
            .rules(rule)
            .build()
            .map_err(|e| bad_request("PutBucketEncryption", bucket, &e.to_string()))?;
        self.client
            .put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(conf)
            .send()
            .await
            .map_err(|e| err("PutBucketEncryption", bucket, "", e))?;
        Ok(())
    }

    async fn put_public_access_block(&self, bucket: &str) -> Result<(), StoreError> {
        use aws_sdk_s3::types::PublicAccessBlockConfiguration;
        self.client
            .put_public_access_block()
            .bucket(bucket)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .ignore_public_acls(true)
                    .block_public_policy(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| err("PutPublicAccessBlock", bucket, "", e))?;
        Ok(())
    }

    async fn put_versioning(&self, bucket: &str) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
        self.client
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| err("PutBucketVersioning", bucket, "", e))?;
        Ok(())
    }

    async fn put_ownership(&self, bucket: &str) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{ObjectOwnership, OwnershipControls, OwnershipControlsRule};
        let rule = OwnershipControlsRule::builder()
            .object_ownership(ObjectOwnership::BucketOwnerEnforced)
            .build()
            .map_err(|e| bad_request("PutBucketOwnershipControls", bucket, &e.to_string()))?;
        let controls = OwnershipControls::builder()
            .rules(rule)
            .build()
            .map_err(|e| bad_request("PutBucketOwnershipControls", bucket, &e.to_string()))?;
        self.client
            .put_bucket_ownership_controls()
            .bucket(bucket)
            .ownership_controls(controls)
            .send()
            .await
            .map_err(|e| err("PutBucketOwnershipControls", bucket, "", e))?;
        Ok(())
    }

    async fn put_policy(&self, bucket: &str, policy_json: &str) -> Result<(), StoreError> {
        self.client
            .put_bucket_policy()
            .bucket(bucket)
            .policy(policy_json)
            .send()
            .await
            .map_err(|e| err("PutBucketPolicy", bucket, "", e))?;
        Ok(())
    }

    async fn delete_policy(&self, bucket: &str) -> Result<(), StoreError> {
        self.delete_policy_impl(bucket).await
    }

    async fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        marker: Option<(String, String)>,
    ) -> Result<VersionPage, StoreError> {
        let mut req = self
            .client
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix);
        if let Some((k, v)) = marker {
            req = req.key_marker(k).version_id_marker(v);
        }
        let out = req
            .send()
            .await
            .map_err(|e| err("ListObjectVersions", bucket, prefix, e))?;
        let mut versions: Vec<ObjectVersion> = out
            .versions()
            .iter()
            .map(|v| ObjectVersion {
                key: v.key().unwrap_or_default().to_owned(),
                version_id: v.version_id().unwrap_or("null").to_owned(),
                delete_marker: false,
                is_latest: v.is_latest().unwrap_or(false),
            })
            .collect();
        versions.extend(out.delete_markers().iter().map(|m| ObjectVersion {
            key: m.key().unwrap_or_default().to_owned(),
            version_id: m.version_id().unwrap_or("null").to_owned(),
            delete_marker: true,
            is_latest: m.is_latest().unwrap_or(false),
        }));
        versions.sort_by(|a, b| a.key.cmp(&b.key));
        let next = if out.is_truncated() == Some(true) {
            out.next_key_marker().map(|k| {
                (
                    k.to_owned(),
                    out.next_version_id_marker().unwrap_or_default().to_owned(),
                )
            })
        } else {
            None
        };
        Ok(VersionPage { versions, next })
    }

    async fn object_lock_enabled(&self, bucket: &str) -> Result<bool, StoreError> {
        let r = self
            .client
            .get_object_lock_configuration()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| err("GetObjectLockConfiguration", bucket, "", e));
        Ok(absent(r, &["ObjectLockConfigurationNotFound"])?
            .and_then(|o| o.object_lock_configuration().cloned())
            .is_some_and(|c| {
                c.object_lock_enabled() == Some(&aws_sdk_s3::types::ObjectLockEnabled::Enabled)
            }))
    }

    async fn lock_state(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
    ) -> Result<(Option<String>, bool), StoreError> {
        // HeadObject reports both (given s3:GetObjectRetention and s3:GetObjectLegalHold),
        // in one call per version.
        let out = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .version_id(version)
            .send()
            .await
            .map_err(|e| err("HeadObject", bucket, key, e))?;
        let now = std::time::SystemTime::now();
        let until = out
            .object_lock_retain_until_date()
            .filter(|d| std::time::SystemTime::try_from(**d).is_ok_and(|t| t > now))
            .and_then(|d| d.fmt(aws_smithy_types::date_time::Format::DateTime).ok());
        let on = out.object_lock_legal_hold_status()
            == Some(&aws_sdk_s3::types::ObjectLockLegalHoldStatus::On);
        Ok((until, on))
    }

    async fn delete_versions(
        &self,
        bucket: &str,
        versions: &[(String, String)],
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        if versions.is_empty() {
            return Ok(Vec::new());
        }
        let objects = versions
            .iter()
            .map(|(k, v)| {
                ObjectIdentifier::builder()
                    .key(k)
                    .version_id(v)
                    .build()
                    .map_err(|e| bad_request("DeleteObjects", bucket, &e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| bad_request("DeleteObjects", bucket, &e.to_string()))?;
        let out = self
            .client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| err("DeleteObjects", bucket, "", e))?;
        Ok(out
            .errors()
            .iter()
            .map(|e| {
                (
                    e.key().unwrap_or_default().to_owned(),
                    e.version_id().unwrap_or_default().to_owned(),
                    format!(
                        "{}: {}",
                        e.code().unwrap_or("error"),
                        e.message().unwrap_or_default()
                    ),
                )
            })
            .collect())
    }

    async fn put_abort_incomplete_uploads(
        &self,
        bucket: &str,
        days: i32,
    ) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{
            AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
            LifecycleRule, LifecycleRuleFilter,
        };
        // PutBucketLifecycleConfiguration replaces the whole configuration: keep the
        // operator's rules, replace only ours.
        let mut rules: Vec<LifecycleRule> = self
            .lifecycle_rules(bucket)
            .await?
            .into_iter()
            .filter(|r| r.id() != Some(LIFECYCLE_RULE_ID))
            .collect();
        let bad = |e: aws_sdk_s3::error::BuildError| {
            bad_request("PutBucketLifecycleConfiguration", bucket, &e.to_string())
        };
        rules.push(
            LifecycleRule::builder()
                .id(LIFECYCLE_RULE_ID)
                .status(ExpirationStatus::Enabled)
                .filter(LifecycleRuleFilter::builder().prefix("").build())
                .abort_incomplete_multipart_upload(
                    AbortIncompleteMultipartUpload::builder()
                        .days_after_initiation(days)
                        .build(),
                )
                .build()
                .map_err(bad)?,
        );
        self.client
            .put_bucket_lifecycle_configuration()
            .bucket(bucket)
            .lifecycle_configuration(
                BucketLifecycleConfiguration::builder()
                    .set_rules(Some(rules))
                    .build()
                    .map_err(bad)?,
            )
            .send()
            .await
            .map_err(|e| err("PutBucketLifecycleConfiguration", bucket, "", e))?;
        Ok(())
    }

    async fn put_logging(
        &self,
        bucket: &str,
        target: &str,
        prefix: &str,
    ) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{BucketLoggingStatus, LoggingEnabled};
        let enabled = LoggingEnabled::builder()
            .target_bucket(target)
            .target_prefix(prefix)
            .build()
            .map_err(|e| bad_request("PutBucketLogging", bucket, &e.to_string()))?;
        self.client
            .put_bucket_logging()
            .bucket(bucket)
            .bucket_logging_status(
                BucketLoggingStatus::builder()
                    .logging_enabled(enabled)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| err("PutBucketLogging", bucket, "", e))?;
        Ok(())
    }
}
