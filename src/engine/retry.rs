//! Retrying job-level calls (listings, key resolution, archive copies): the backoff policy
//! every retry in the engine shares, and the attempt budgets of calls that are not one
//! object's migration.

use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use tokio_util::sync::CancellationToken;

use super::error::{EngineError, Retryable};
use crate::store::{ListPage, ObjectStore};

/// Attempts a job-level call (listing, key resolution) gets for retryable failures before
/// the job fails: with the backoff policy this is about 10 minutes of a flapping network.
pub(super) const JOB_CALL_ATTEMPTS: u32 = 25;

/// Attempts a job-level call gets when the failure is the daemon's (no credentials, an
/// endpoint refusing connections): a few seconds, then the job parks with the reason rather
/// than waiting out ten minutes to fail.
const SYSTEMIC_ATTEMPTS: u32 = 4;

/// What a retry loop needs: the delays' bounds, and the shutdown that ends the waiting.
#[derive(Debug, Clone)]
pub(super) struct Retry {
    initial: Duration,
    max: Duration,
    shutdown: CancellationToken,
}

impl Retry {
    pub(super) fn new(initial: Duration, max: Duration, shutdown: CancellationToken) -> Self {
        Self {
            initial,
            max,
            shutdown,
        }
    }

    /// The largest delay: what a policy that ran out of delays waits.
    pub(super) fn max(&self) -> Duration {
        self.max
    }

    /// A fresh jittered, doubling backoff.
    pub(super) fn policy(&self) -> ExponentialBackoff {
        ExponentialBackoff {
            initial_interval: self.initial,
            max_interval: self.max,
            multiplier: 2.0,
            randomization_factor: 0.5,
            // The attempt budget bounds retries, not wall time: a throttled hour must not
            // turn into silently failed objects.
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        }
    }

    /// Runs a job-level call, retrying retryable failures with backoff, up to `attempts`.
    pub(super) async fn run<T, E, F, Fut>(
        &self,
        what: &str,
        attempts: u32,
        mut f: F,
    ) -> Result<T, E>
    where
        E: Retryable,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut policy = self.policy();
        let mut n = 0;
        loop {
            n += 1;
            match f().await {
                Err(e)
                    if e.is_retryable()
                        && n < attempts
                        && !(e.is_systemic() && n >= SYSTEMIC_ATTEMPTS)
                        && !self.shutdown.is_cancelled() =>
                {
                    let delay = policy.next_backoff().unwrap_or(self.max);
                    tracing::warn!(what, attempt = n, error = %e, ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// One page of a bucket listing, retried like any job-level call.
    pub(super) async fn list_page(
        &self,
        store: &dyn ObjectStore,
        what: &str,
        bucket: &str,
        prefix: &str,
        token: Option<String>,
    ) -> Result<ListPage, EngineError> {
        self.run(what, JOB_CALL_ATTEMPTS, || async {
            Ok(store.list_page(bucket, prefix, token.clone()).await?)
        })
        .await
    }
}
