//! The memory budget of objects in flight. An object below the multipart threshold is held
//! whole, up to three times (source, envelope, read-back), so concurrency alone does not bound
//! memory; a streamed one holds a few parts. Each attempt takes its share of the budget first;
//! large objects wait for room, and one larger than the whole budget runs alone rather than
//! never.

use tokio::sync::{Semaphore, SemaphorePermit};

/// Budget unit: permits are KiB, so budgets up to 64 GiB fit the semaphore's u32 requests.
const UNIT: u64 = 1024;

/// How many copies of an object an attempt holds at its peak.
const COPIES: u64 = 3;

/// Shared by all jobs of the daemon.
pub struct Budget {
    permits: Semaphore,
    total: u32,
}

impl Budget {
    /// A budget of `bytes` (clamped to what the unit can express).
    pub fn new(bytes: u64) -> Self {
        let total = u32::try_from(bytes / UNIT).unwrap_or(u32::MAX).max(1);
        Self {
            permits: Semaphore::new(total as usize),
            total,
        }
    }

    /// Waits for room for one attempt at an object of `size` bytes held whole.
    pub async fn reserve(&self, size: u64) -> Option<SemaphorePermit<'_>> {
        self.reserve_bytes(size.saturating_mul(COPIES)).await
    }

    /// Waits for room for `bytes` (a streamed object's parts).
    pub async fn reserve_bytes(&self, bytes: u64) -> Option<SemaphorePermit<'_>> {
        self.permits
            .acquire_many(weight(bytes, self.total))
            .await
            .ok()
    }
}

/// Permits `bytes` take, at most the whole budget.
fn weight(bytes: u64, total: u32) -> u32 {
    let units = bytes / UNIT + 1;
    u32::try_from(units).unwrap_or(u32::MAX).min(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_never_exceeds_the_budget() {
        assert_eq!(weight(0, 1000), 1);
        assert_eq!(weight(3 * 1024, 1000), 4);
        assert_eq!(weight(3 * 1024 * 1024, 1_000_000), 3073);
        assert_eq!(weight(u64::MAX, 1000), 1000);
    }

    #[tokio::test]
    async fn a_whole_object_counts_three_copies() {
        let b = Budget::new(3 * 1024 * 1024);
        let one = b.reserve(1024 * 1024 - 1024).await;
        assert!(one.is_some());
        let more = tokio::time::timeout(std::time::Duration::from_millis(50), b.reserve(2048));
        assert!(more.await.is_err());
    }

    #[tokio::test]
    async fn an_object_larger_than_the_budget_runs_alone_and_then_others_resume() {
        let b = Budget::new(16 * 1024 * 1024);
        let big = b.reserve(64 * 1024 * 1024).await;
        assert!(big.is_some());
        // Nothing else fits while it runs ...
        let small = tokio::time::timeout(std::time::Duration::from_millis(50), b.reserve(10));
        assert!(small.await.is_err());
        drop(big);
        // ... and everything fits again afterwards.
        assert!(b.reserve(10).await.is_some());
    }
}
