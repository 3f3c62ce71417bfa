//! An in-memory KMS with AWS's semantics where moto is lax: a data key unwraps only under the
//! key and the exact encryption context it was generated with; a disabled key refuses every
//! call; ThrottlingException as the fault plan says.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::faults::{lock, Fault, FaultPlan};
use crate::aws::AwsErrorKind;
use crate::envelope::{DataKey, EncryptionContext};
use crate::kms::{same_key, GeneratedKey, KeyAdmin, KeyService, KmsError, LiveKey};

#[derive(Debug, Clone)]
struct Key {
    arn: String,
    alias: Option<String>,
    enabled: bool,
    policy: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    keys: Vec<Key>,
    /// Wrapped blob → (key ARN, context as JSON, data key bytes).
    wrapped: BTreeMap<Vec<u8>, (String, String, [u8; 32])>,
    calls: u64,
}

/// The in-memory KMS.
#[derive(Debug, Clone)]
pub struct MemKms {
    state: Arc<Mutex<State>>,
    faults: Arc<FaultPlan>,
}

fn refused(op: &'static str, key_id: &str, kind: AwsErrorKind, message: &str) -> KmsError {
    KmsError {
        op,
        key_id: key_id.to_owned(),
        kind,
        message: message.to_owned(),
    }
}

impl MemKms {
    /// An empty KMS drawing faults from `faults`.
    pub fn new(faults: Arc<FaultPlan>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            faults,
        }
    }

    /// Creates an enabled key with `alias` (`alias/…`); its ARN.
    pub fn create(&self, alias: &str) -> String {
        let mut s = lock(&self.state);
        let arn = format!(
            "arn:aws:kms:us-east-1:111122223333:key/{:08}-sim",
            s.keys.len() + 1
        );
        s.keys.push(Key {
            arn: arn.clone(),
            alias: Some(alias.to_owned()),
            enabled: true,
            policy: None,
        });
        arn
    }

    /// Disables (or enables) a key, as `DisableKey` does: every call under it is refused.
    pub fn set_enabled(&self, arn: &str, enabled: bool) {
        for k in lock(&self.state).keys.iter_mut().filter(|k| k.arn == arn) {
            k.enabled = enabled;
        }
    }

    /// Calls answered so far.
    pub fn calls(&self) -> u64 {
        lock(&self.state).calls
    }

    /// Unwraps a data key as any reader would, outside the engine (for invariant checks).
    pub fn unwrap_for_check(
        &self,
        key_id: &str,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Option<DataKey> {
        let s = lock(&self.state);
        let (arn, ctx, key) = s.wrapped.get(wrapped)?;
        (same_key(key_id, arn) && *ctx == context.to_json())
            .then(|| DataKey::from_slice(key).ok())
            .flatten()
    }

    fn find(&self, op: &'static str, key_id: &str) -> Result<Key, KmsError> {
        let mut s = lock(&self.state);
        s.calls += 1;
        let key = s
            .keys
            .iter()
            .find(|k| same_key(key_id, &k.arn) || k.alias.as_deref() == Some(key_id))
            .cloned()
            .ok_or_else(|| {
                refused(
                    op,
                    key_id,
                    AwsErrorKind::NotFound,
                    "NotFoundException: no such key",
                )
            })?;
        if !key.enabled {
            return Err(refused(
                op,
                key_id,
                AwsErrorKind::Invalid,
                "DisabledException: the key is disabled",
            ));
        }
        Ok(key)
    }

    fn throttled(&self, op: &'static str, key_id: &str) -> Result<(), KmsError> {
        match self.faults.kms() {
            Fault::Throttle => Err(refused(
                op,
                key_id,
                AwsErrorKind::Throttled,
                "ThrottlingException: rate exceeded (simulated)",
            )),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl KeyService for MemKms {
    async fn generate_data_key(
        &self,
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<GeneratedKey, KmsError> {
        const OP: &str = "GenerateDataKey";
        self.throttled(OP, key_id)?;
        let key = self.find(OP, key_id)?;
        let bytes = self.faults.bytes::<32>();
        let wrapped = self.faults.bytes::<48>().to_vec();
        lock(&self.state)
            .wrapped
            .insert(wrapped.clone(), (key.arn.clone(), context.to_json(), bytes));
        Ok(GeneratedKey {
            key: DataKey::from_slice(&bytes)
                .map_err(|_| refused(OP, key_id, AwsErrorKind::Other, "bad key length"))?,
            wrapped,
            key_arn: key.arn,
        })
    }

    async fn decrypt_data_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        const OP: &str = "Decrypt";
        self.throttled(OP, key_id)?;
        let key = self.find(OP, key_id)?;
        let s = lock(&self.state);
        let Some((arn, ctx, bytes)) = s.wrapped.get(wrapped) else {
            return Err(refused(
                OP,
                key_id,
                AwsErrorKind::Invalid,
                "InvalidCiphertextException",
            ));
        };
        // KMS refuses a wrong key or any other context, exactly.
        if *arn != key.arn || *ctx != context.to_json() {
            return Err(refused(
                OP,
                key_id,
                AwsErrorKind::Invalid,
                "InvalidCiphertextException: key or encryption context differs",
            ));
        }
        DataKey::from_slice(bytes)
            .map_err(|_| refused(OP, key_id, AwsErrorKind::Other, "bad key length"))
    }

    async fn resolve_key(&self, key_id: &str) -> Result<String, KmsError> {
        const OP: &str = "DescribeKey";
        self.throttled(OP, key_id)?;
        Ok(self.find(OP, key_id)?.arn)
    }
}

#[async_trait]
impl KeyAdmin for MemKms {
    async fn find_key(&self, key_ref: &str) -> Result<Option<LiveKey>, KmsError> {
        let s = lock(&self.state);
        Ok(s.keys
            .iter()
            .find(|k| same_key(key_ref, &k.arn) || k.alias.as_deref() == Some(key_ref))
            .map(|k| LiveKey {
                arn: k.arn.clone(),
                enabled: k.enabled,
                symmetric: true,
                policy: k.policy.clone(),
                managed: true,
            }))
    }

    async fn create_key(
        &self,
        alias: &str,
        _description: &str,
        policy: &str,
        _category: &str,
    ) -> Result<String, KmsError> {
        let arn = self.create(alias);
        self.put_key_policy(&arn, policy).await?;
        Ok(arn)
    }

    async fn put_key_policy(&self, key_arn: &str, policy: &str) -> Result<(), KmsError> {
        for k in lock(&self.state)
            .keys
            .iter_mut()
            .filter(|k| k.arn == key_arn)
        {
            k.policy = Some(policy.to_owned());
        }
        Ok(())
    }
}
