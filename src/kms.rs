//! Key management: the [`KeyService`] trait the engine uses and its AWS KMS implementation, the
//! only module that speaks `aws_sdk_kms`. Plaintext data keys leave this module only as
//! [`DataKey`], which zeroizes itself.

use async_trait::async_trait;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState};
use zeroize::Zeroizing;

use crate::aws::{classify_sdk_error, AwsErrorKind};
use crate::envelope::{DataKey, EncryptionContext};

/// What went wrong talking to KMS. Never carries key material.
#[derive(Debug, Clone, thiserror::Error)]
#[error("KMS {op} with key {key_id}: {kind}: {message}")]
pub struct KmsError {
    /// Operation (GenerateDataKey, Decrypt, DescribeKey).
    pub op: &'static str,
    /// The key id, ARN or alias addressed.
    pub key_id: String,
    /// Classified failure kind.
    pub kind: AwsErrorKind,
    /// Service code and message, or what was wrong with the answer.
    pub message: String,
}

impl KmsError {
    /// Whether trying the same call again later can succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// Whether it is the daemon's problem, not the object's (see
    /// [`crate::aws::AwsErrorKind::is_systemic`]).
    pub fn is_systemic(&self) -> bool {
        self.kind.is_systemic(&self.message)
    }
}

/// A fresh data key: plaintext for sealing, wrapped form for the header.
#[derive(Debug)]
pub struct GeneratedKey {
    /// Plaintext data key (zeroized on drop).
    pub key: DataKey,
    /// The data key encrypted under the KMS key (`CiphertextBlob`).
    pub wrapped: Vec<u8>,
    /// ARN of the KMS key that wrapped it.
    pub key_arn: String,
}

/// The key operations dualseal needs.
#[async_trait]
pub trait KeyService: Send + Sync {
    /// A new 256-bit data key under `key_id`, bound to `context`.
    async fn generate_data_key(
        &self,
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<GeneratedKey, KmsError>;
    /// Unwraps a data key; KMS checks that `context` is the one it was bound to.
    async fn decrypt_data_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError>;
    /// Resolves an id, ARN or alias to the key's ARN and checks that the key is enabled.
    async fn resolve_key(&self, key_id: &str) -> Result<String, KmsError>;
}

/// [`KeyService`] over AWS KMS.
#[derive(Debug, Clone)]
pub struct AwsKms {
    client: aws_sdk_kms::Client,
}

impl AwsKms {
    /// Builds the one shared KMS client from an SDK config.
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            client: aws_sdk_kms::Client::new(sdk),
        }
    }
}

fn err<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    op: &'static str,
    key_id: &str,
    e: SdkError<E, HttpResponse>,
) -> KmsError {
    let (kind, message) = classify_sdk_error(&e);
    KmsError {
        op,
        key_id: key_id.to_owned(),
        kind,
        message,
    }
}

fn bad_answer(op: &'static str, key_id: &str, message: &str) -> KmsError {
    KmsError {
        op,
        key_id: key_id.to_owned(),
        kind: AwsErrorKind::Other,
        message: message.to_owned(),
    }
}

fn context_map(ctx: &EncryptionContext) -> std::collections::HashMap<String, String> {
    ctx.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn into_data_key(op: &'static str, key_id: &str, blob: Option<Blob>) -> Result<DataKey, KmsError> {
    let raw = Zeroizing::new(
        blob.ok_or_else(|| bad_answer(op, key_id, "answer has no plaintext key"))?
            .into_inner(),
    );
    DataKey::from_slice(&raw).map_err(|_| bad_answer(op, key_id, "plaintext key is not 32 bytes"))
}

#[async_trait]
impl KeyService for AwsKms {
    async fn generate_data_key(
        &self,
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<GeneratedKey, KmsError> {
        const OP: &str = "GenerateDataKey";
        let mut out = self
            .client
            .generate_data_key()
            .key_id(key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| err(OP, key_id, e))?;
        let key = into_data_key(OP, key_id, out.plaintext.take())?;
        let wrapped = out
            .ciphertext_blob
            .take()
            .ok_or_else(|| bad_answer(OP, key_id, "answer has no wrapped key"))?
            .into_inner();
        // The key KMS says it used is what the envelope records and the audit trail names;
        // an answer without it proves nothing about the key.
        let key_arn = out
            .key_id
            .take()
            .ok_or_else(|| bad_answer(OP, key_id, "answer names no key id"))?;
        Ok(GeneratedKey {
            key,
            wrapped,
            key_arn,
        })
    }

    async fn decrypt_data_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        const OP: &str = "Decrypt";
        let mut out = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| err(OP, key_id, e))?;
        into_data_key(OP, key_id, out.plaintext.take())
    }

    async fn resolve_key(&self, key_id: &str) -> Result<String, KmsError> {
        const OP: &str = "DescribeKey";
        let out = self
            .client
            .describe_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| err(OP, key_id, e))?;
        let meta = out
            .key_metadata()
            .ok_or_else(|| bad_answer(OP, key_id, "answer has no key metadata"))?;
        if meta.key_state() != Some(&KeyState::Enabled) && !meta.enabled() {
            return Err(KmsError {
                op: OP,
                key_id: key_id.to_owned(),
                kind: AwsErrorKind::Invalid,
                message: "the key is not enabled; enable it or point the category at another key"
                    .into(),
            });
        }
        Ok(meta.arn().unwrap_or(key_id).to_owned())
    }
}

/// Whether a key id or ARN as S3 or KMS reports it names the key `arn`.
pub fn same_key(reported: &str, arn: &str) -> bool {
    reported == arn
        || arn.ends_with(&format!("/{reported}"))
        || reported.ends_with(&format!("/{arn}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_match_arns() {
        let arn = "arn:aws:kms:us-east-1:1:key/abc";
        assert!(same_key(arn, arn));
        assert!(same_key("abc", arn));
        assert!(!same_key("abd", arn));
    }
}

/// A KMS key as provisioning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveKey {
    /// Key ARN.
    pub arn: String,
    /// Enabled (not disabled, not pending deletion).
    pub enabled: bool,
    /// A symmetric encryption key (`SYMMETRIC_DEFAULT`).
    pub symmetric: bool,
    /// The key policy (`default`) JSON.
    pub policy: Option<String>,
    /// Tagged `dualseal:managed=true`: dualseal created it and manages its policy.
    pub managed: bool,
}

/// Tag dualseal puts on the keys it creates.
pub const MANAGED_TAG: &str = "dualseal:managed";

/// Key administration for provisioning. Separate from [`KeyService`], which seals.
#[async_trait]
pub trait KeyAdmin: Send + Sync {
    /// The key an id, ARN or alias names, if it exists.
    async fn find_key(&self, key_ref: &str) -> Result<Option<LiveKey>, KmsError>;
    /// Creates a symmetric key with `policy`, tagged as managed, and points `alias` at it.
    async fn create_key(
        &self,
        alias: &str,
        description: &str,
        policy: &str,
        category: &str,
    ) -> Result<String, KmsError>;
    /// Replaces a key's policy.
    async fn put_key_policy(&self, key_arn: &str, policy: &str) -> Result<(), KmsError>;
}

#[async_trait]
impl KeyAdmin for AwsKms {
    async fn find_key(&self, key_ref: &str) -> Result<Option<LiveKey>, KmsError> {
        let described = self.client.describe_key().key_id(key_ref).send().await;
        let out = match described {
            Ok(o) => o,
            Err(e) => {
                let e = err("DescribeKey", key_ref, e);
                return if e.kind == AwsErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                };
            }
        };
        let meta = out
            .key_metadata()
            .ok_or_else(|| bad_answer("DescribeKey", key_ref, "answer has no key metadata"))?;
        let arn = meta.arn().unwrap_or(meta.key_id()).to_owned();
        let policy = self
            .client
            .get_key_policy()
            .key_id(&arn)
            .policy_name("default")
            .send()
            .await
            .map_err(|e| err("GetKeyPolicy", &arn, e))?
            .policy()
            .map(str::to_owned);
        let tags = self
            .client
            .list_resource_tags()
            .key_id(&arn)
            .send()
            .await
            .map_err(|e| err("ListResourceTags", &arn, e))?;
        let managed = tags
            .tags()
            .iter()
            .any(|t| t.tag_key() == MANAGED_TAG && t.tag_value() == "true");
        Ok(Some(LiveKey {
            enabled: meta.key_state() == Some(&KeyState::Enabled) || meta.enabled(),
            symmetric: meta
                .key_spec()
                .is_none_or(|s| *s == aws_sdk_kms::types::KeySpec::SymmetricDefault),
            arn,
            policy,
            managed,
        }))
    }

    async fn create_key(
        &self,
        alias: &str,
        description: &str,
        policy: &str,
        category: &str,
    ) -> Result<String, KmsError> {
        use aws_sdk_kms::types::Tag;
        let tag = |k: &str, v: &str| {
            Tag::builder()
                .tag_key(k)
                .tag_value(v)
                .build()
                .map_err(|e| bad_answer("CreateKey", alias, &e.to_string()))
        };
        let out = self
            .client
            .create_key()
            .description(description)
            .policy(policy)
            .tags(tag(MANAGED_TAG, "true")?)
            .tags(tag("dualseal:category", category)?)
            .send()
            .await
            .map_err(|e| err("CreateKey", alias, e))?;
        let meta = out
            .key_metadata()
            .ok_or_else(|| bad_answer("CreateKey", alias, "answer has no key metadata"))?;
        let arn = meta.arn().unwrap_or(meta.key_id()).to_owned();
        self.client
            .create_alias()
            .alias_name(alias)
            .target_key_id(meta.key_id())
            .send()
            .await
            .map_err(|e| err("CreateAlias", alias, e))?;
        Ok(arn)
    }

    async fn put_key_policy(&self, key_arn: &str, policy: &str) -> Result<(), KmsError> {
        self.client
            .put_key_policy()
            .key_id(key_arn)
            .policy_name("default")
            .policy(policy)
            .send()
            .await
            .map_err(|e| err("PutKeyPolicy", key_arn, e))?;
        Ok(())
    }
}
