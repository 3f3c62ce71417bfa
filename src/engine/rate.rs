//! Per-job rate limits (objects/s, source bytes/s, KMS requests/s), changeable while the job
//! runs. The token buckets are `governor`'s (GCRA); a change swaps the bucket, so the new rate
//! applies from the next request on.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::envelope::{DataKey, EncryptionContext};
use crate::kms::{GeneratedKey, KeyService, KmsError};

/// A token bucket and its per-second rate (which is also its burst).
type Bucket = Option<(Arc<DefaultDirectRateLimiter>, NonZeroU32)>;

/// One swappable limit; `None` is unlimited.
#[derive(Debug, Default)]
struct Limit {
    bucket: Mutex<Bucket>,
}

impl Limit {
    fn set(&self, per_sec: Option<u64>) {
        let bucket = per_sec
            .and_then(|r| NonZeroU32::new(u32::try_from(r).unwrap_or(u32::MAX)))
            .map(|r| (Arc::new(RateLimiter::direct(Quota::per_second(r))), r));
        *self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = bucket;
    }

    fn current(&self) -> Bucket {
        self.bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until `n` units may pass. More than a second's worth passes in one-second
    /// chunks, so a large object under a small byte rate waits rather than fails.
    async fn take(&self, n: u64) {
        let Some((bucket, burst)) = self.current() else {
            return;
        };
        let mut left = n;
        while left > 0 {
            // A chunk of at most the burst always fits, so `until_n_ready` cannot refuse it.
            let chunk = left.min(u64::from(burst.get()));
            let Some(chunk) = u32::try_from(chunk).ok().and_then(NonZeroU32::new) else {
                return;
            };
            if bucket.until_n_ready(chunk).await.is_err() {
                return;
            }
            left -= u64::from(chunk.get());
        }
    }
}

/// A job's rate limits.
#[derive(Debug, Default)]
pub struct Rates {
    objects: Limit,
    bytes: Limit,
    kms: Limit,
    /// Requests of this job waiting for a KMS token now.
    kms_waiting: std::sync::atomic::AtomicUsize,
    kms_passed: tokio::sync::Notify,
}

/// KMS requests of one job that may wait for its KMS rate before its dispatcher stops
/// starting objects: enough to keep the rate busy, few enough that a job bound by its KMS
/// rate does not sit on worker slots its objects cannot use.
const KMS_QUEUE: usize = 2;

impl Rates {
    /// Sets the limits; `None` lifts one.
    pub fn set(&self, objects: Option<u32>, bytes: Option<u64>, kms: Option<u32>) {
        self.objects.set(objects.map(u64::from));
        self.bytes.set(bytes);
        self.kms.set(kms.map(u64::from));
    }

    /// Waits for the right to start one object of `size` bytes.
    pub async fn object(&self, size: u64) {
        self.objects.take(1).await;
        self.bytes.take(size).await;
    }

    /// Waits for the right to make one KMS request.
    pub async fn kms_request(&self) {
        self.kms_waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Counted out even if the request is dropped while it waits (a paused job).
        let _waiting = KmsWaiting(self);
        self.kms.take(1).await;
    }

    /// Waits until few enough of the job's KMS requests wait for its KMS rate that another
    /// object is worth starting: a KMS-bound job's objects would only queue for tokens while
    /// holding slots (see [`KMS_QUEUE`]).
    pub async fn kms_room(&self) {
        use std::sync::atomic::Ordering;
        loop {
            let passed = self.kms_passed.notified();
            if self.kms_waiting.load(Ordering::SeqCst) < KMS_QUEUE {
                return;
            }
            passed.await;
        }
    }
}

/// One KMS request waiting for its job's rate; counted out when dropped.
struct KmsWaiting<'a>(&'a Rates);

impl Drop for KmsWaiting<'_> {
    fn drop(&mut self) {
        self.0
            .kms_waiting
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.kms_passed.notify_waiters();
    }
}

/// A [`KeyService`] that waits for its job's KMS rate before every request.
pub struct RateLimitedKeys {
    /// The service asked.
    pub inner: Arc<dyn KeyService>,
    /// The job's limits.
    pub rates: Arc<Rates>,
}

#[async_trait]
impl KeyService for RateLimitedKeys {
    async fn generate_data_key(
        &self,
        key_id: &str,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedKey, KmsError> {
        self.rates.kms_request().await;
        self.inner.generate_data_key(key_id, ctx).await
    }

    async fn decrypt_data_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        self.rates.kms_request().await;
        self.inner.decrypt_data_key(key_id, wrapped, ctx).await
    }

    async fn resolve_key(&self, key_id: &str) -> Result<String, KmsError> {
        self.rates.kms_request().await;
        self.inner.resolve_key(key_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_rate_holds_and_can_be_lifted() {
        let r = Rates::default();
        r.set(Some(10), None, None);
        let t = Instant::now();
        // The first 10 are the burst; 10 more need about a second.
        for _ in 0..20 {
            r.object(0).await;
        }
        assert!(
            t.elapsed() >= Duration::from_millis(800),
            "{:?}",
            t.elapsed()
        );
        r.set(None, None, None);
        let t = Instant::now();
        for _ in 0..10_000 {
            r.object(0).await;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "lifting the limit did not apply"
        );
    }

    #[tokio::test]
    async fn an_object_larger_than_a_second_of_bytes_waits_instead_of_failing() {
        let r = Rates::default();
        r.set(None, Some(1000), None);
        let t = Instant::now();
        r.object(2500).await;
        assert!(
            t.elapsed() >= Duration::from_millis(1000),
            "{:?}",
            t.elapsed()
        );
    }
}
