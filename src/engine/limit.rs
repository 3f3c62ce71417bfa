//! Adaptive concurrency: the number of objects a job has in flight finds its own level.
//!
//! Against real S3 and KMS a migration is latency-bound: objects/s is about the objects in
//! flight over the time each one waits, so the right number depends on the account, the
//! network and the objects, and no default suits them all. The limit starts at [`START`] and
//! climbs while objects/s climbs with it: after a window of [`WINDOW_MS`] in which the limit
//! held objects back, it steps up (doubling while every step has paid, as TCP's slow start
//! does, then by an eighth after one did not), so that a job reaches a high ceiling within
//! seconds. The window after a step is left to settle (objects started under the old limit
//! are still finishing) unless objects/s already rose by [`CLEAR_GAIN`] in it, and the one
//! after that judges it: after a step that did not raise objects/s by [`GAIN`] the limit holds
//! for [`HOLD_MS`] before probing again, and the step is taken back if it was a small probe or
//! objects/s fell. Sustained throttling from S3 (503 SlowDown) or KMS
//! (ThrottlingException) halves it, as TCP does, and stops the climb for a while. The
//! configured `concurrency` (or an operator's `limit --concurrency`) is the ceiling; memory
//! (`max_bytes_in_flight`) and the KMS rate bound it on their own.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// How long after the last throttling signal a job still reports itself as throttled.
pub const THROTTLED_WINDOW: Duration = Duration::from_secs(10);
/// Minimum time between two decreases: one burst of throttled in-flight requests is one signal.
const DECREASE_COOLDOWN_MS: u64 = 1000;
/// Where the limit starts (or the ceiling, if lower): what a throttled or quota-tight account
/// copes with.
pub const START: usize = 16;
/// How often the limit is judged: a few times what one object takes against AWS, so that
/// a window sees the step before it at work.
pub const WINDOW_MS: u64 = 500;
/// A step up pays when objects/s rises by this share.
pub const GAIN: f64 = 0.05;
/// A doubling that raised objects/s by this share already in its settling window has paid
/// beyond doubt: it is judged then, and the climb goes on half a second sooner.
pub const CLEAR_GAIN: f64 = 0.25;
/// After a step that did not pay (or a throttle), the limit holds this long before it probes.
pub const HOLD_MS: u64 = 30_000;

/// Shared concurrency limit of one job.
#[derive(Debug)]
pub struct Limiter {
    max: AtomicUsize,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    /// Objects finished in the current window.
    done: AtomicU64,
    /// Some object waited for a slot in the current window: the limit was what held it back.
    waited: AtomicBool,
    last_throttle_ms: AtomicU64,
    climb: Mutex<Climb>,
    freed: Notify,
}

/// The state of the climb between windows.
#[derive(Debug, Clone)]
pub struct Climb {
    window_start_ms: u64,
    /// Objects/s before the step being judged.
    base_rate: f64,
    /// The limit before the last step up, until that step is judged.
    step_from: Option<usize>,
    hold_until_ms: u64,
    /// Every step so far paid: steps double the limit.
    eager: bool,
    /// The window after a step, while objects started under the old limit finish: its rate is
    /// neither the step's result nor a base.
    settling: bool,
}

/// What one window measured.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// When it ended, ms.
    pub now_ms: u64,
    /// Objects finished in it.
    pub done: u64,
    /// Whether the limit held some object back in it.
    pub waited: bool,
    /// Whether a throttle was seen within [`THROTTLED_WINDOW`].
    pub throttled: bool,
}

impl Climb {
    /// A climb whose first window starts at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self {
            window_start_ms: now_ms,
            base_rate: 0.0,
            step_from: None,
            hold_until_ms: 0,
            eager: true,
            settling: false,
        }
    }

    /// The limit after window `w`, from `limit` under the ceiling `max`; `None` while the window
    /// is still open.
    pub fn judge(&mut self, w: Window, limit: usize, max: usize) -> Option<usize> {
        let elapsed = w.now_ms.checked_sub(self.window_start_ms)?;
        if elapsed < WINDOW_MS {
            return None;
        }
        self.window_start_ms = w.now_ms;
        let rate = w.done as f64 * 1000.0 / elapsed as f64;
        if w.throttled {
            self.step_from = None;
            self.settling = false;
            self.eager = false;
            self.base_rate = rate;
            self.hold_until_ms = w.now_ms + HOLD_MS.min(THROTTLED_WINDOW.as_millis() as u64);
            return Some(limit);
        }
        let clearly_paid = self.eager && rate >= self.base_rate * (1.0 + CLEAR_GAIN);
        if std::mem::take(&mut self.settling) && !clearly_paid {
            return Some(limit.min(max));
        }
        if let Some(from) = self.step_from.take() {
            if rate < self.base_rate * (1.0 + GAIN) {
                let doubling = std::mem::replace(&mut self.eager, false);
                self.hold_until_ms = w.now_ms + HOLD_MS;
                // A doubling that did not pay is kept unless objects/s fell: one window's
                // noise must not halve a job's speed for the whole hold. A small probe that
                // did not pay costs little to take back.
                if !doubling || rate < self.base_rate * (1.0 - GAIN) {
                    return Some(from.min(max));
                }
            }
        }
        self.base_rate = rate;
        if !w.waited || limit >= max || w.now_ms < self.hold_until_ms {
            return Some(limit.min(max));
        }
        let step = if self.eager { limit } else { limit / 8 }.max(1);
        self.step_from = Some(limit);
        self.settling = true;
        Some((limit + step).min(max))
    }
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
    /// A limiter under the ceiling `max`, starting at [`START`] (or `max`, if lower).
    pub fn new(max: usize) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            max: AtomicUsize::new(max),
            limit: AtomicUsize::new(max.min(START)),
            in_flight: AtomicUsize::new(0),
            done: AtomicU64::new(0),
            waited: AtomicBool::new(false),
            last_throttle_ms: AtomicU64::new(0),
            climb: Mutex::new(Climb::new(now_ms())),
            freed: Notify::new(),
        })
    }

    /// Waits for a free slot under the current limit.
    pub async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            let notified = self.freed.notified();
            let n = self.in_flight.load(Ordering::SeqCst);
            if n < self.limit.load(Ordering::SeqCst) {
                if self
                    .in_flight
                    .compare_exchange(n, n + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    return Slot {
                        limiter: Arc::clone(self),
                    };
                }
                continue;
            }
            self.waited.store(true, Ordering::Relaxed);
            notified.await;
        }
    }

    /// A request was throttled: halve the limit (at most once per cooldown).
    pub fn on_throttle(&self) {
        let now = now_ms();
        let last = self.last_throttle_ms.swap(now, Ordering::SeqCst);
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

    /// An object succeeded; once a window is over, the limit is judged.
    pub fn on_success(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
        // One judge per window; a success that finds it busy has been counted all the same.
        let Ok(mut climb) = self.climb.try_lock() else {
            return;
        };
        let now = now_ms();
        if now.saturating_sub(climb.window_start_ms) < WINDOW_MS {
            return;
        }
        let window = Window {
            now_ms: now,
            done: self.done.swap(0, Ordering::Relaxed),
            waited: self.waited.swap(false, Ordering::Relaxed),
            throttled: self.throttled(),
        };
        let cur = self.limit.load(Ordering::SeqCst);
        if let Some(new) = climb.judge(window, cur, self.max()) {
            if new != cur {
                self.limit.store(new, Ordering::SeqCst);
                tracing::debug!(from = cur, to = new, "concurrency adjusted");
                if new > cur {
                    self.freed.notify_waiters();
                }
            }
        }
    }

    /// The ceiling the adaptive limit climbs to at most.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    /// Changes the ceiling (an operator's decision). A lower ceiling applies at once: objects
    /// already in flight above it finish, and no new one starts until the count is under it. A
    /// higher one is room to climb into, from where the limit is: a job that throttling or a
    /// step that did not pay brought down is not sent back up by a raised ceiling, and the
    /// climb doubles again from there while doubling pays.
    pub fn set_max(&self, max: usize) {
        let max = max.max(1);
        self.max.store(max, Ordering::SeqCst);
        let _ = self
            .limit
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| Some(l.min(max)));
        if let Ok(mut climb) = self.climb.lock() {
            let throttled_until = climb.hold_until_ms;
            *climb = Climb::new(now_ms());
            if self.throttled() {
                climb.eager = false;
                climb.hold_until_ms = throttled_until;
            }
        }
        self.freed.notify_waiters();
        self.freed.notify_one();
    }

    /// Objects holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
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

    fn window(now_ms: u64, done: u64) -> Window {
        Window {
            now_ms,
            done,
            waited: true,
            throttled: false,
        }
    }

    /// Runs windows of one second (longer than [`WINDOW_MS`], so each is judged) in which
    /// objects/s is `rate(limit)`; returns the limits.
    fn climb(rate: impl Fn(usize) -> u64, start: usize, max: usize, seconds: u64) -> Vec<usize> {
        let mut c = Climb::new(0);
        let mut limit = start;
        let mut seen = vec![limit];
        for s in 1..=seconds {
            limit = c.judge(window(s * 1000, rate(limit)), limit, max).unwrap();
            seen.push(limit);
        }
        seen
    }

    #[test]
    fn the_limit_climbs_while_objects_per_second_climb_with_it() {
        // Latency-bound: objects/s grows with objects in flight up to 400 at once.
        let seen = climb(|l| 10 * l.min(400) as u64, 16, 2048, 40);
        let last = *seen.last().unwrap();
        // At most one doubling past the knee (kept because it did not hurt), then it holds,
        // probing by an eighth now and then and taking that back.
        assert!((400..=1024).contains(&last), "settled at {last}: {seen:?}");
        assert!(
            seen[8..].iter().all(|&l| l == last || l == last + last / 8),
            "{seen:?}"
        );
        assert_eq!(
            seen[..6],
            [16, 32, 64, 128, 256, 512],
            "did not double each window while steps plainly paid"
        );
    }

    #[test]
    fn a_step_that_does_not_pay_ends_the_climb_and_a_small_one_is_taken_back() {
        // Bound elsewhere (a saturated server): more in flight changes nothing.
        let seen = climb(|_| 1000, 16, 1024, 36);
        assert_eq!(seen[1..3], [32, 32], "first probe, then a window to settle");
        assert!(
            seen[3..33].iter().all(|&l| l == 32),
            "a doubling that did not hurt is kept, and the limit holds: {seen:?}"
        );
        // It probes again, gently, once the hold is over, and takes that probe back.
        assert_eq!(seen[32..], [32, 36, 36, 32, 32], "{seen:?}");
    }

    #[test]
    fn a_doubling_after_which_objects_per_second_fell_is_taken_back() {
        // Past 32 in flight the server thrashes.
        let seen = climb(|l| if l > 32 { 200 } else { 10 * l as u64 }, 16, 1024, 12);
        assert_eq!(seen[..4], [16, 32, 64, 64], "{seen:?}");
        assert!(seen[4..].iter().all(|&l| l == 32), "{seen:?}");
    }

    #[test]
    fn never_above_the_ceiling_and_no_climb_when_the_limit_holds_nothing_back() {
        let seen = climb(|l| 10 * l as u64, 16, 40, 20);
        assert!(
            seen.iter().all(|&l| l <= 40) && seen.contains(&40),
            "{seen:?}"
        );
        let mut c = Climb::new(0);
        let idle = Window {
            waited: false,
            ..window(1000, 500)
        };
        assert_eq!(c.judge(idle, 16, 1024), Some(16));
        assert_eq!(
            c.judge(window(1000 + WINDOW_MS - 1, 500), 16, 1024),
            None,
            "window still open"
        );
    }

    #[test]
    fn throttling_stops_the_climb() {
        let mut c = Climb::new(0);
        assert_eq!(c.judge(window(1000, 100), 16, 1024), Some(32));
        let throttled = Window {
            throttled: true,
            ..window(2000, 300)
        };
        assert_eq!(
            c.judge(throttled, 12, 1024),
            Some(12),
            "halved elsewhere, held here"
        );
        for s in 3..=11 {
            assert_eq!(
                c.judge(window(s * 1000, 300), 12, 1024),
                Some(12),
                "second {s}"
            );
        }
        assert_eq!(
            c.judge(window(12_000, 300), 12, 1024),
            Some(13),
            "then gently"
        );
    }

    #[tokio::test]
    async fn halves_on_throttle_once_per_burst() {
        let l = Limiter::new(16);
        assert_eq!(l.current(), 16);
        l.on_throttle();
        assert_eq!(l.current(), 8);
        assert!(l.throttled());
        l.on_throttle();
        assert_eq!(
            l.current(),
            8,
            "a second signal within the cooldown is the same burst"
        );
    }

    #[tokio::test]
    async fn starts_low_under_a_high_ceiling() {
        let l = Limiter::new(256);
        assert_eq!((l.max(), l.current()), (256, START));
        assert_eq!(Limiter::new(4).current(), 4);
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
        assert_eq!(
            (l.max(), l.current()),
            (32, 4),
            "a raised ceiling is room to climb into, not a jump"
        );
    }

    #[tokio::test]
    async fn a_raised_ceiling_does_not_undo_a_back_off() {
        let l = Limiter::new(64);
        l.set_max(64);
        l.limit.store(64, Ordering::SeqCst);
        l.on_throttle();
        assert_eq!(l.current(), 32);
        l.set_max(1024);
        assert_eq!((l.max(), l.current()), (1024, 32));
        let climb = l.climb.lock().expect("climb");
        assert!(
            !climb.eager && climb.hold_until_ms == 0,
            "still throttled: no doubling; the next window sets the hold"
        );
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
