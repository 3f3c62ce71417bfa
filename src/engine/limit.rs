//! Adaptive concurrency: additive increase, multiplicative decrease (AIMD), as TCP does.
//! Sustained throttling from S3 (503 SlowDown) or KMS (ThrottlingException) halves the number
//! of objects in flight; every `limit` successes in a row add one back, up to the configured
//! maximum. The SDK's own retry budget handles short bursts; this handles sustained pressure.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// How long after the last throttling signal a job still reports itself as throttled.
pub const THROTTLED_WINDOW: Duration = Duration::from_secs(10);
/// Minimum time between two decreases: one burst of throttled in-flight requests is one signal.
const DECREASE_COOLDOWN_MS: u64 = 1000;

/// Shared concurrency limit of one job.
#[derive(Debug)]
pub struct Limiter {
    max: AtomicUsize,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    successes: AtomicUsize,
    last_throttle_ms: AtomicU64,
    freed: Notify,
}

/// A slot in the limit; frees itself on drop.
#[derive(Debug)]
pub struct Slot {
    limiter: Arc<Limiter>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.limiter.freed.notify_one();
    }
}

fn now_ms() -> u64 {
    crate::journal::now_ms()
}

impl Limiter {
    /// A limiter starting at (and capped by) `max`.
    pub fn new(max: usize) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            max: AtomicUsize::new(max),
            limit: AtomicUsize::new(max),
            in_flight: AtomicUsize::new(0),
            successes: AtomicUsize::new(0),
            last_throttle_ms: AtomicU64::new(0),
            freed: Notify::new(),
        })
    }

    /// Waits for a free slot under the current limit.
    pub async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            let notified = self.freed.notified();
            let n = self.in_flight.load(Ordering::SeqCst);
            if n < self.limit.load(Ordering::SeqCst)
                && self
                    .in_flight
                    .compare_exchange(n, n + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                return Slot {
                    limiter: Arc::clone(self),
                };
            }
            notified.await;
        }
    }

    /// A request was throttled: halve the limit (at most once per cooldown).
    pub fn on_throttle(&self) {
        let now = now_ms();
        let last = self.last_throttle_ms.swap(now, Ordering::SeqCst);
        self.successes.store(0, Ordering::SeqCst);
        if now.saturating_sub(last) < DECREASE_COOLDOWN_MS {
            return;
        }
        let cur = self.limit.load(Ordering::SeqCst);
        let new = (cur / 2).max(1);
        self.limit.store(new, Ordering::SeqCst);
        if new < cur {
            tracing::warn!(from = cur, to = new, "throttled: lowering concurrency");
        }
    }

    /// An object succeeded: after `limit` successes in a row, allow one more in flight.
    pub fn on_success(&self) {
        let cur = self.limit.load(Ordering::SeqCst);
        if self.successes.fetch_add(1, Ordering::SeqCst) + 1 >= cur
            && cur < self.max.load(Ordering::SeqCst)
        {
            self.successes.store(0, Ordering::SeqCst);
            self.limit.store(cur + 1, Ordering::SeqCst);
            self.freed.notify_one();
        }
    }

    /// The cap the adaptive limit grows back to.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    /// Changes the cap (an operator's decision): the limit moves to it at once, up or down.
    /// Objects already in flight above a lowered cap finish; no new one starts until the
    /// count is under it.
    pub fn set_max(&self, max: usize) {
        let max = max.max(1);
        self.max.store(max, Ordering::SeqCst);
        self.limit.store(max, Ordering::SeqCst);
        self.successes.store(0, Ordering::SeqCst);
        self.freed.notify_waiters();
        self.freed.notify_one();
    }

    /// The current limit.
    pub fn current(&self) -> usize {
        self.limit.load(Ordering::SeqCst)
    }

    /// Whether throttling was seen within [`THROTTLED_WINDOW`].
    pub fn throttled(&self) -> bool {
        let last = self.last_throttle_ms.load(Ordering::SeqCst);
        last != 0 && now_ms().saturating_sub(last) < THROTTLED_WINDOW.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn halves_on_throttle_and_grows_back_one_per_window() {
        let l = Limiter::new(16);
        l.on_throttle();
        assert_eq!(l.current(), 8);
        assert!(l.throttled());
        // A second signal within the cooldown is the same burst.
        l.on_throttle();
        assert_eq!(l.current(), 8);
        for _ in 0..8 {
            l.on_success();
        }
        assert_eq!(l.current(), 9);
        for _ in 0..1000 {
            l.on_success();
        }
        assert_eq!(l.current(), 16, "never above the configured maximum");
    }

    #[tokio::test]
    async fn an_operator_cap_applies_at_once() {
        let l = Limiter::new(16);
        l.set_max(4);
        assert_eq!((l.max(), l.current()), (4, 4));
        for _ in 0..100 {
            l.on_success();
        }
        assert_eq!(l.current(), 4, "never above the operator's cap");
        l.set_max(32);
        assert_eq!(l.current(), 32);
    }

    #[tokio::test]
    async fn acquire_respects_the_limit() {
        let l = Limiter::new(2);
        let a = l.acquire().await;
        let _b = l.acquire().await;
        let blocked = tokio::time::timeout(Duration::from_millis(50), l.acquire()).await;
        assert!(blocked.is_err(), "a third slot was granted at limit 2");
        drop(a);
        let c = tokio::time::timeout(Duration::from_millis(500), l.acquire()).await;
        assert!(c.is_ok(), "a freed slot was not handed out");
    }
}
