//! Provisioning: each category's KMS key and bucket, with least-privilege policies, derived
//! from the config; a plan (desired vs live, per setting), an idempotent apply, and the gate
//! that keeps a migration out of a bucket weaker than that.
//!
//! Depends on the admin traits of `store` and `kms` and on the pure [`policy`] generators.

mod diff;
pub mod policy;

pub use diff::policy_diff;
use diff::{aborts_uploads, bucket_diff, encryption_ok, ABORT_UPLOADS_DAYS};

use std::sync::Arc;

use crate::config::{CategoryConfig, Config, ProvisionConfig};
use crate::kms::{KeyAdmin, KmsError, LiveKey};
use crate::store::{BucketAdmin, BucketSecurity, StoreError, LIFECYCLE_RULE_ID};
use policy::{CategoryIam, Principals};

/// Why provisioning could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// S3 failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// KMS failed.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// The config does not allow it (e.g. an existing key that is not usable).
    #[error("cannot provision: {0}")]
    Refused(String),
}

impl ProvisionError {
    /// Whether trying again later can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            Self::Kms(e) => e.is_retryable(),
            Self::Refused(_) => false,
        }
    }
}

/// What a change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The resource does not exist.
    Create,
    /// A setting differs.
    Update,
}

/// One difference between desired and live state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `s3://bucket` or `kms alias/...`.
    pub resource: String,
    /// Category it belongs to.
    pub category: String,
    /// Which setting (`default encryption`, `bucket policy`, ...).
    pub setting: String,
    /// What is there now.
    pub live: String,
    /// What should be.
    pub desired: String,
    /// Create or update.
    pub action: Action,
    /// The live state is weaker than desired: a migration into it is refused.
    pub weakens: bool,
}

/// A generated policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// File stem (`dualseal-bucket-policy-db`).
    pub name: String,
    /// `key-policy`, `bucket-policy` or `identity-policy`.
    pub kind: &'static str,
    /// The IAM JSON.
    pub json: String,
}

/// The result of a plan or an apply.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// What differs now (after an apply: what still differs, normally nothing).
    pub changes: Vec<Change>,
    /// What an apply changed.
    pub applied: Vec<Change>,
    /// Generated documents: key and bucket policies, identity policies.
    pub documents: Vec<Document>,
    /// The identity policies as a Terraform JSON module.
    pub terraform: String,
    /// Things provisioning does not manage but the operator should know.
    pub notes: Vec<String>,
}

/// Plans and applies provisioning for one config.
pub struct Provisioner {
    s3: Arc<dyn BucketAdmin>,
    kms: Arc<dyn KeyAdmin>,
    source_bucket: String,
    categories: Vec<CategoryConfig>,
    cfg: ProvisionConfig,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner").finish_non_exhaustive()
    }
}

/// The placeholder ARN of a key that does not exist yet.
fn pending_arn(alias: &str) -> String {
    format!("(the key {alias} will create)")
}

const PAB_NAMES: [&str; 4] = [
    "BlockPublicAcls",
    "IgnorePublicAcls",
    "BlockPublicPolicy",
    "RestrictPublicBuckets",
];

impl Provisioner {
    /// A provisioner over the admin clients and the config.
    pub fn new(s3: Arc<dyn BucketAdmin>, kms: Arc<dyn KeyAdmin>, config: &Config) -> Self {
        Self {
            s3,
            kms,
            source_bucket: config.source.bucket.clone(),
            categories: config.categories.clone(),
            cfg: config.provision.clone(),
        }
    }

    /// The bucket administration client (the decommission of the source uses it).
    pub fn bucket_admin(&self) -> &Arc<dyn BucketAdmin> {
        &self.s3
    }

    /// Whether a migration must refuse weak buckets.
    pub fn enforced(&self) -> bool {
        self.cfg.require_hardened_buckets
    }

    fn principals(&self) -> Option<Principals> {
        let writer = self.cfg.writer.clone()?;
        let key_admins = if self.cfg.key_admins.is_empty() {
            vec![writer.clone()]
        } else {
            self.cfg.key_admins.clone()
        };
        Some(Principals {
            writer,
            key_admins,
            partition: self.cfg.partition.clone(),
        })
    }

    fn iam(&self, c: &CategoryConfig, key_arn: &str) -> CategoryIam {
        CategoryIam {
            name: c.name.clone(),
            bucket: c.bucket.clone(),
            key_arn: key_arn.to_owned(),
            readers: c.readers.clone(),
        }
    }

    /// Every difference between the config and AWS, with the documents it implies.
    ///
    /// # Errors
    /// `Store`/`Kms` when the live state cannot be read.
    pub async fn plan(&self) -> Result<Report, ProvisionError> {
        let mut report = Report::default();
        let principals = self.principals();
        if principals.is_none() {
            report.notes.push(
                "provision.writer is not set: bucket and key policies cannot be generated or checked; set it to the daemon's role ARN".into(),
            );
        }
        let mut iams = Vec::new();
        for c in &self.categories {
            let key = self.plan_key(c, principals.as_ref(), &mut report).await?;
            let arn = key
                .as_ref()
                .map_or_else(|| pending_arn(&c.key_ref()), |k| k.arn.clone());
            self.plan_bucket(c, &arn, principals.as_ref(), &mut report)
                .await?;
            iams.push(self.iam(c, &arn));
        }
        if let Some(p) = &principals {
            documents(&self.source_bucket, &iams, p, &mut report);
        }
        Ok(report)
    }

    async fn plan_key(
        &self,
        c: &CategoryConfig,
        principals: Option<&Principals>,
        report: &mut Report,
    ) -> Result<Option<LiveKey>, ProvisionError> {
        let key_ref = c.key_ref();
        let resource = format!("kms {key_ref}");
        let change = |setting: &str, live: String, desired: String, action| Change {
            resource: resource.clone(),
            category: c.name.clone(),
            setting: setting.into(),
            live,
            desired,
            action,
            weakens: false,
        };
        let Some(key) = self.kms.find_key(&key_ref).await? else {
            if key_ref.starts_with("alias/") {
                report.changes.push(change(
                    "key",
                    "missing".into(),
                    "symmetric KMS key under this alias, managed by dualseal".into(),
                    Action::Create,
                ));
            } else {
                report.notes.push(format!(
                    "category {:?}: KMS key {key_ref} does not exist; create it, or name an alias (or none) and let provisioning create the key",
                    c.name
                ));
            }
            return Ok(None);
        };
        if !key.enabled {
            report.notes.push(format!(
                "category {:?}: KMS key {} is not enabled; enable it before migrating",
                c.name, key.arn
            ));
        }
        if !key.symmetric {
            report.notes.push(format!(
                "category {:?}: KMS key {} is not a symmetric encryption key; DSSE-KMS and the envelope need one",
                c.name, key.arn
            ));
        }
        match (principals, key.managed) {
            (Some(p), true) => {
                let desired = policy::key_policy(&self.iam(c, &key.arn), p);
                if let Some(diff) = policy_diff(key.policy.as_deref(), &desired) {
                    report.changes.push(change(
                        "key policy",
                        diff,
                        format!("generated ({} statements)", desired.statement.len()),
                        Action::Update,
                    ));
                }
            }
            (Some(_), false) => report.notes.push(format!(
                "category {:?}: key {} was not created by dualseal, so its policy is yours to manage; compare it with dualseal-key-policy-{}.json",
                c.name, key.arn, c.name
            )),
            (None, _) => {}
        }
        Ok(Some(key))
    }

    async fn plan_bucket(
        &self,
        c: &CategoryConfig,
        key_arn: &str,
        principals: Option<&Principals>,
        report: &mut Report,
    ) -> Result<(), ProvisionError> {
        let resource = format!("s3://{}", c.bucket);
        let change = |setting: &str, live: String, desired: String, action, weakens| Change {
            resource: resource.clone(),
            category: c.name.clone(),
            setting: setting.into(),
            live,
            desired,
            action,
            weakens,
        };
        if !self.s3.bucket_exists(&c.bucket).await? {
            report.changes.push(change(
                "bucket",
                "missing".into(),
                "bucket with DSSE-KMS default encryption, public access blocked, versioning, owner-enforced, least-privilege policy".into(),
                Action::Create,
                true,
            ));
            return Ok(());
        }
        let live = self.s3.bucket_security(&c.bucket).await?;
        for ch in bucket_diff(&live, key_arn) {
            report
                .changes
                .push(change(ch.0, ch.1, ch.2, Action::Update, true));
        }
        if let Some(p) = principals {
            let desired = policy::bucket_policy(&self.iam(c, key_arn), p);
            if let Some(diff) = policy_diff(live.policy.as_deref(), &desired) {
                report.changes.push(change(
                    "bucket policy",
                    diff,
                    format!("generated ({} statements)", desired.statement.len()),
                    Action::Update,
                    true,
                ));
            }
        }
        if !aborts_uploads(&live) {
            report.changes.push(change(
                "abort incomplete multipart uploads",
                live.abort_incomplete_uploads_days
                    .map_or("never".into(), |d| format!("after {d} days")),
                format!("after {ABORT_UPLOADS_DAYS} days (lifecycle rule {LIFECYCLE_RULE_ID})"),
                Action::Update,
                false,
            ));
        }
        if let Some(target) = &self.cfg.log_bucket {
            let want = (target.clone(), format!("{}/", c.bucket));
            if live.logging.as_ref() != Some(&want) {
                report.changes.push(change(
                    "access logging",
                    live.logging
                        .map_or("off".into(), |(b, p)| format!("s3://{b}/{p}")),
                    format!("s3://{}/{}", want.0, want.1),
                    Action::Update,
                    false,
                ));
            }
        }
        Ok(())
    }

    /// Makes AWS match the config, then plans again: the report's `applied` lists what was
    /// done, `changes` what still differs (normally nothing).
    ///
    /// # Errors
    /// `Refused` without `provision.writer` (policies are not optional); `Store`/`Kms`.
    pub async fn apply(&self) -> Result<Report, ProvisionError> {
        let Some(principals) = self.principals() else {
            return Err(ProvisionError::Refused(
                "provision.writer is not set; give the daemon's role ARN so the policies can be written".into(),
            ));
        };
        let before = self.plan().await?;
        if let Some(n) = before.notes.iter().find(|n| n.contains("does not exist")) {
            return Err(ProvisionError::Refused(n.clone()));
        }
        for c in &self.categories {
            let key_ref = c.key_ref();
            let arn = match self.kms.find_key(&key_ref).await? {
                Some(k) => {
                    if k.managed {
                        let desired = policy::key_policy(&self.iam(c, &k.arn), &principals);
                        if policy_diff(k.policy.as_deref(), &desired).is_some() {
                            self.kms.put_key_policy(&k.arn, &desired.to_json()).await?;
                        }
                    }
                    k.arn
                }
                None => {
                    // The policy names the key only by "*" (a key policy's own resource), so it
                    // can be set at creation, before the ARN exists.
                    let desired =
                        policy::key_policy(&self.iam(c, &pending_arn(&key_ref)), &principals);
                    self.kms
                        .create_key(
                            &key_ref,
                            &format!("dualseal category {}", c.name),
                            &desired.to_json(),
                            &c.name,
                        )
                        .await?
                }
            };
            self.apply_bucket(c, &arn, &principals).await?;
        }
        let mut after = self.plan().await?;
        after.applied = before.changes;
        Ok(after)
    }

    async fn apply_bucket(
        &self,
        c: &CategoryConfig,
        key_arn: &str,
        p: &Principals,
    ) -> Result<(), ProvisionError> {
        let b = c.bucket.as_str();
        let live = if self.s3.bucket_exists(b).await? {
            self.s3.bucket_security(b).await?
        } else {
            self.s3.create_bucket(b).await?;
            BucketSecurity::default()
        };
        // Ownership and public access first: the bucket is never open, even for a moment.
        if live.ownership.as_deref() != Some("BucketOwnerEnforced") {
            self.s3.put_ownership(b).await?;
        }
        if live.public_access_block != Some([true; 4]) {
            self.s3.put_public_access_block(b).await?;
        }
        if !encryption_ok(&live, key_arn) {
            self.s3.put_default_encryption(b, key_arn).await?;
        }
        if live.versioning.as_deref() != Some("Enabled") {
            self.s3.put_versioning(b).await?;
        }
        let desired = policy::bucket_policy(&self.iam(c, key_arn), p);
        if policy_diff(live.policy.as_deref(), &desired).is_some() {
            self.s3.put_policy(b, &desired.to_json()).await?;
        }
        if !aborts_uploads(&live) {
            self.s3
                .put_abort_incomplete_uploads(b, ABORT_UPLOADS_DAYS)
                .await?;
        }
        if let Some(target) = &self.cfg.log_bucket {
            let prefix = format!("{b}/");
            if live.logging.as_ref() != Some(&(target.clone(), prefix.clone())) {
                self.s3.put_logging(b, target, &prefix).await?;
            }
        }
        Ok(())
    }

    /// The changes that make the buckets of `categories` (all when empty) weaker than desired.
    ///
    /// # Errors
    /// `Store`/`Kms`.
    pub async fn weaknesses(&self, categories: &[String]) -> Result<Vec<Change>, ProvisionError> {
        let report = self.plan().await?;
        Ok(report
            .changes
            .into_iter()
            .filter(|c| c.weakens && (categories.is_empty() || categories.contains(&c.category)))
            .collect())
    }
}

fn documents(source: &str, iams: &[CategoryIam], p: &Principals, report: &mut Report) {
    let mut identity = Vec::new();
    for c in iams {
        report.documents.push(Document {
            name: format!("dualseal-key-policy-{}", c.name),
            kind: "key-policy",
            json: policy::key_policy(c, p).to_json(),
        });
        report.documents.push(Document {
            name: format!("dualseal-bucket-policy-{}", c.name),
            kind: "bucket-policy",
            json: policy::bucket_policy(c, p).to_json(),
        });
        identity.push((
            format!("dualseal-reader-{}", c.name),
            policy::reader_policy(c, p),
        ));
    }
    identity.push((
        "dualseal-daemon".into(),
        policy::daemon_policy(source, iams, p),
    ));
    report.terraform = policy::terraform(&identity);
    for (name, doc) in identity {
        report.documents.push(Document {
            name,
            kind: "identity-policy",
            json: doc.to_json(),
        });
    }
}
