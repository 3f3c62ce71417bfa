//! A running job's speed over a sliding window, its ETA and its most recent errors. Pure
//! bookkeeping: the engine feeds it counts and instants, the API shows what it computes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Rates are averaged over this much recent time: long enough to smooth bursts of small
/// objects, short enough that a throttle or a resume shows within seconds.
pub const WINDOW: Duration = Duration::from_secs(20);
/// At most one sample per this interval.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Recent errors kept per job.
pub const LAST_ERRORS: usize = 5;

/// One recent error (retryable or final). Messages name keys and causes, never secret bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentError {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// Source key.
    pub key: String,
    /// What went wrong.
    pub message: String,
}

/// Speed and ETA of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Speed {
    /// Objects finished per second over the window.
    pub objects_per_sec: f64,
    /// Source bytes migrated per second over the window.
    pub bytes_per_sec: f64,
    /// Seconds left at this speed, when the total is known and the job is moving.
    pub eta_secs: Option<u64>,
}

/// A job's progress history.
#[derive(Debug, Default)]
pub struct Progress {
    samples: VecDeque<(Instant, u64, u64)>,
    errors: VecDeque<RecentError>,
}

impl Progress {
    /// Records the finished-object and migrated-byte totals at `now`.
    pub fn sample(&mut self, now: Instant, done: u64, bytes: u64) {
        if self
            .samples
            .back()
            .is_some_and(|(t, ..)| now.duration_since(*t) < SAMPLE_EVERY)
        {
            return;
        }
        self.samples.push_back((now, done, bytes));
        // Keep one sample older than the window as the baseline.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, ..)| now.duration_since(*t) >= WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Forgets the history (after a pause: idle time is not slowness).
    pub fn reset(&mut self) {
        self.samples.clear();
    }

    /// Speed over the window ending at the latest sample, and the ETA for `remaining` objects
    /// (`None` while the total is unknown).
    pub fn speed(&self, remaining: Option<u64>) -> Speed {
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return Speed::default();
        };
        let secs = last.0.duration_since(first.0).as_secs_f64();
        if secs < 1.0 {
            return Speed::default();
        }
        let objects_per_sec = last.1.saturating_sub(first.1) as f64 / secs;
        let bytes_per_sec = last.2.saturating_sub(first.2) as f64 / secs;
        let eta_secs = remaining
            .filter(|_| objects_per_sec > 0.0)
            .map(|r| (r as f64 / objects_per_sec).ceil() as u64);
        Speed {
            objects_per_sec,
            bytes_per_sec,
            eta_secs,
        }
    }

    /// Remembers an error, dropping the oldest beyond [`LAST_ERRORS`].
    pub fn error(&mut self, e: RecentError) {
        if self.errors.len() == LAST_ERRORS {
            self.errors.pop_front();
        }
        self.errors.push_back(e);
    }

    /// Recent errors, newest last.
    pub fn errors(&self) -> Vec<RecentError> {
        self.errors.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_is_over_the_window_and_eta_follows() {
        let t0 = Instant::now();
        let mut p = Progress::default();
        assert_eq!(p.speed(Some(10)), Speed::default());
        // A slow start, then 100 objects/s for the last 20 s.
        p.sample(t0, 0, 0);
        p.sample(t0 + Duration::from_secs(100), 100, 1000);
        for s in 1..=20 {
            p.sample(
                t0 + Duration::from_secs(100 + s),
                100 + 100 * s,
                1000 + 1000 * s,
            );
        }
        let sp = p.speed(Some(500));
        assert!((sp.objects_per_sec - 100.0).abs() < 1e-9, "{sp:?}");
        assert!((sp.bytes_per_sec - 1000.0).abs() < 1e-9, "{sp:?}");
        assert_eq!(sp.eta_secs, Some(5));
        assert_eq!(p.speed(None).eta_secs, None, "unknown total, unknown ETA");
    }

    #[test]
    fn samples_are_rate_limited_and_bounded() {
        let t0 = Instant::now();
        let mut p = Progress::default();
        for ms in 0..100_000u64 {
            p.sample(t0 + Duration::from_millis(ms * 10), ms, ms);
        }
        assert!(p.samples.len() <= 2 + (WINDOW.as_millis() / SAMPLE_EVERY.as_millis()) as usize);
    }

    #[test]
    fn keeps_the_last_errors() {
        let mut p = Progress::default();
        for i in 0..8 {
            p.error(RecentError {
                at_ms: i,
                key: format!("k{i}"),
                message: "boom".into(),
            });
        }
        let e = p.errors();
        assert_eq!(e.len(), LAST_ERRORS);
        assert_eq!(e.last().map(|e| e.key.as_str()), Some("k7"));
    }
}
