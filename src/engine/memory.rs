//! The memory budget of objects in flight. Today an object is held whole, up to three times
//! (source, envelope, read-back), so concurrency alone does not bound memory: 64 workers on
//! 2 GiB objects would need 384 GiB. Each attempt takes its share of the budget first; large
//! objects wait for room, and one larger than the whole budget runs alone rather than never.

use tokio::sync::{Semaphore, SemaphorePermit};

/// Budget unit: permits are KiB, so budgets up to 64 GiB fit the semaphore's u32 requests.
const UNIT: u64 = 1024;

/// How many copies of an object an attempt holds at its peak.
const COPIES: u64 = 3;

/// S3's largest single PUT. An envelope is its plaintext plus a header and 16 bytes per
/// 64 KiB segment; 16 MiB of margin covers both for any object below this limit.
pub const MAX_SOURCE_BYTES: u64 = 5 * 1024 * 1024 * 1024 - 16 * 1024 * 1024;

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

    /// Waits for room for one attempt at an object of `size` bytes.
    pub async fn reserve(&self, size: u64) -> Option<SemaphorePermit<'_>> {
        self.permits
            .acquire_many(weight(size, self.total))
            .await
            .ok()
    }
}

/// Permits an attempt at an object of `size` bytes takes, at most the whole budget.
fn weight(size: u64, total: u32) -> u32 {
    let units = size.saturating_mul(COPIES) / UNIT + 1;
    u32::try_from(units).unwrap_or(u32::MAX).min(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_counts_three_copies_and_never_exceeds_the_budget() {
        assert_eq!(weight(0, 1000), 1);
        assert_eq!(weight(1024, 1000), 4);
        assert_eq!(weight(1024 * 1024, 1_000_000), 3073);
        assert_eq!(weight(u64::MAX, 1000), 1000);
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
