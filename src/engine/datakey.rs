//! Where each object's data key comes from: by default a fresh one from KMS per object; with
//! `[daemon] data_key_reuse_objects` set, one data key per category and destination bucket is
//! reused for up to that many objects or `data_key_reuse_secs`, whichever comes first (the
//! AWS Encryption SDK's caching limits are the model). Every object still gets its own content
//! key (HKDF over a random per-object message id) and its envelope stays bound to its location;
//! what is shared is the KMS call, and so the blast radius of one leaked data key. FORMAT.md
//! ("Shared data keys") states the trade-off.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::envelope::{DataKey, EncryptionContext, HeaderParams, PER_OBJECT_CONTEXT_KEY};
use crate::kms::{KeyService, KmsError};

/// How long and how often one data key may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReuseLimits {
    /// Objects sealed under one data key.
    pub max_objects: u64,
    /// Age of a data key after which it is no longer used for new objects.
    pub max_age: Duration,
}

/// A data key ready to seal with.
pub struct SealingKey {
    /// Plaintext data key (zeroized when the last user drops it).
    pub key: DataKey,
    /// As KMS wrapped it.
    pub wrapped: Vec<u8>,
    /// The KMS key that wrapped it.
    pub key_arn: String,
    /// Shared with other objects: the envelope is version 2.
    pub shared: bool,
    /// KMS has unwrapped `wrapped` under the shared context to exactly `key` once already.
    proven: AtomicBool,
    /// Held by the first read-back that proves this key, so concurrent ones wait for its
    /// answer instead of each asking KMS.
    proving: tokio::sync::Mutex<()>,
    uses: AtomicU64,
    born: Instant,
}

impl SealingKey {
    /// The envelope header this key seals an object for `context` with.
    pub fn header_params(&self, context: &EncryptionContext, segment_size: u32) -> HeaderParams {
        HeaderParams {
            kms_key_id: self.key_arn.clone(),
            wrapped_key: self.wrapped.clone(),
            context: context.clone(),
            segment_size,
            shared_data_key: self.shared,
        }
    }

    /// The context KMS bound this key to, for an object sealed under `context`: what the
    /// header it writes reports as `kms_context()`.
    pub fn kms_context(&self, context: &EncryptionContext) -> EncryptionContext {
        if self.shared {
            shared_context(context)
        } else {
            context.clone()
        }
    }

    /// The envelope format version it writes.
    pub fn envelope_version(&self) -> u8 {
        if self.shared {
            crate::envelope::FORMAT_VERSION_SHARED_KEY
        } else {
            crate::envelope::FORMAT_VERSION
        }
    }

    /// Serializes the proofs of a shared key's wrapped form (a no-op for other keys).
    pub async fn proving(&self, wrapped: &[u8]) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if self.shared && self.wrapped == wrapped {
            Some(self.proving.lock().await)
        } else {
            None
        }
    }

    /// Whether a read-back may skip KMS for an envelope carrying `wrapped`: only for the
    /// shared key whose wrapped form KMS has already unwrapped to this very key.
    pub fn proves(&self, wrapped: &[u8]) -> bool {
        self.shared && self.proven.load(Ordering::Acquire) && self.wrapped == wrapped
    }

    /// Records what KMS unwrapped `wrapped` to. False only when `wrapped` is this key's and KMS
    /// returned a different key (which must fail the proof).
    pub fn record_unwrap(&self, wrapped: &[u8], unwrapped: &DataKey) -> bool {
        let same = self.wrapped == wrapped && self.key.same_as(unwrapped);
        if same && self.shared {
            self.proven.store(true, Ordering::Release);
        }
        same || self.wrapped != wrapped
    }
}

/// The source of data keys for sealing.
pub struct DataKeys {
    limits: Option<ReuseLimits>,
    /// Per KMS key and shared context, the key in use. The async lock is held across the KMS
    /// call that replaces a retired key, so workers of one category wait for that one call
    /// instead of each making their own.
    slots: Mutex<HashMap<(String, String), Arc<Slot>>>,
}

/// The shared key of one KMS key and context, if any.
type Slot = tokio::sync::Mutex<Option<Arc<SealingKey>>>;

/// The KMS context of a data key shared across one category's bucket.
pub fn shared_context(object_context: &EncryptionContext) -> EncryptionContext {
    let mut c = EncryptionContext::new();
    for (k, v) in object_context.iter() {
        if k != PER_OBJECT_CONTEXT_KEY {
            c = c.with(k, v);
        }
    }
    c
}

fn sealing_key(g: crate::kms::GeneratedKey, shared: bool) -> Arc<SealingKey> {
    Arc::new(SealingKey {
        key: g.key,
        wrapped: g.wrapped,
        key_arn: g.key_arn,
        shared,
        proven: AtomicBool::new(false),
        proving: tokio::sync::Mutex::new(()),
        uses: AtomicU64::new(1),
        born: Instant::now(),
    })
}

impl DataKeys {
    /// `None`: a fresh data key per object.
    pub fn new(limits: Option<ReuseLimits>) -> Self {
        Self {
            limits,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// A data key for one object at `context` under `kms_key`: a fresh one, or the category's
    /// shared one while it is within its limits.
    ///
    /// # Errors
    /// KMS's.
    pub async fn for_object(
        &self,
        keys: &dyn KeyService,
        kms_key: &str,
        context: &EncryptionContext,
    ) -> Result<Arc<SealingKey>, KmsError> {
        let Some(limits) = self.limits else {
            return Ok(sealing_key(
                keys.generate_data_key(kms_key, context).await?,
                false,
            ));
        };
        let shared = shared_context(context);
        let slot = Arc::clone(
            super::lock(&self.slots)
                .entry((kms_key.to_owned(), shared.to_json()))
                .or_default(),
        );
        let mut current = slot.lock().await;
        if let Some(k) = current.as_ref() {
            if k.born.elapsed() < limits.max_age
                && k.uses.fetch_add(1, Ordering::AcqRel) < limits.max_objects
            {
                return Ok(Arc::clone(k));
            }
        }
        // Retired (or none yet): replacing it drops the slot's reference, and the key is
        // zeroized once no worker holds it any more.
        let fresh = sealing_key(keys.generate_data_key(kms_key, &shared).await?, true);
        *current = Some(Arc::clone(&fresh));
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::kms::GeneratedKey;
    use async_trait::async_trait;

    #[derive(Default)]
    struct CountingKms(AtomicU64);

    #[async_trait]
    impl KeyService for CountingKms {
        async fn generate_data_key(
            &self,
            key_id: &str,
            _context: &EncryptionContext,
        ) -> Result<GeneratedKey, KmsError> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Ok(GeneratedKey {
                key: DataKey::from_slice(&[n as u8; 32]).unwrap(),
                wrapped: vec![n as u8; 8],
                key_arn: key_id.to_owned(),
            })
        }
        async fn decrypt_data_key(
            &self,
            _key_id: &str,
            wrapped: &[u8],
            _context: &EncryptionContext,
        ) -> Result<DataKey, KmsError> {
            Ok(DataKey::from_slice(&[wrapped[0]; 32]).unwrap())
        }
        async fn resolve_key(&self, key_ref: &str) -> Result<String, KmsError> {
            Ok(key_ref.to_owned())
        }
    }

    fn ctx(key: &str) -> EncryptionContext {
        EncryptionContext::new()
            .with("dualseal:category", "db")
            .with("dualseal:bucket", "secrets-db")
            .with(PER_OBJECT_CONTEXT_KEY, key)
    }

    #[tokio::test]
    async fn one_kms_call_per_object_by_default() {
        let kms = CountingKms::default();
        let keys = DataKeys::new(None);
        for i in 0..5 {
            let k = keys
                .for_object(&kms, "k", &ctx(&i.to_string()))
                .await
                .unwrap();
            assert!(!k.shared);
        }
        assert_eq!(kms.0.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_shared_key_is_used_within_its_limits_only() {
        let kms = CountingKms::default();
        let keys = DataKeys::new(Some(ReuseLimits {
            max_objects: 3,
            max_age: Duration::from_secs(3600),
        }));
        let mut wrapped = Vec::new();
        for i in 0..7 {
            let k = keys
                .for_object(&kms, "k", &ctx(&i.to_string()))
                .await
                .unwrap();
            assert!(k.shared);
            wrapped.push(k.wrapped.clone());
        }
        // 7 objects at 3 per key: keys 0,0,0,1,1,1,2.
        assert_eq!(kms.0.load(Ordering::SeqCst), 3);
        assert_eq!(wrapped[0], wrapped[2]);
        assert_ne!(wrapped[2], wrapped[3]);
        // Another category's bucket never shares this one's key.
        let other = EncryptionContext::new()
            .with("dualseal:category", "api")
            .with("dualseal:bucket", "secrets-api")
            .with(PER_OBJECT_CONTEXT_KEY, "x");
        let k = keys.for_object(&kms, "k", &other).await.unwrap();
        assert_ne!(k.wrapped, wrapped[6]);
        assert!(shared_context(&other)
            .iter()
            .all(|(k, _)| k != PER_OBJECT_CONTEXT_KEY));
    }

    #[tokio::test]
    async fn age_retires_a_shared_key() {
        let kms = CountingKms::default();
        let keys = DataKeys::new(Some(ReuseLimits {
            max_objects: 1000,
            max_age: Duration::ZERO,
        }));
        for i in 0..3 {
            keys.for_object(&kms, "k", &ctx(&i.to_string()))
                .await
                .unwrap();
        }
        assert_eq!(kms.0.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn only_a_kms_proven_shared_key_skips_kms_on_read_back() {
        let kms = CountingKms::default();
        let keys = DataKeys::new(Some(ReuseLimits {
            max_objects: 10,
            max_age: Duration::from_secs(60),
        }));
        let k = keys.for_object(&kms, "k", &ctx("a")).await.unwrap();
        assert!(!k.proves(&k.wrapped));
        let wrong = DataKey::from_slice(&[0xee; 32]).unwrap();
        assert!(!k.record_unwrap(&k.wrapped, &wrong));
        assert!(!k.proves(&k.wrapped));
        let right = kms
            .decrypt_data_key("k", &k.wrapped, &ctx("a"))
            .await
            .unwrap();
        assert!(k.record_unwrap(&k.wrapped, &right));
        assert!(k.proves(&k.wrapped));
        assert!(!k.proves(b"another wrapped key"));
    }
}
