//! A seeded fault plan: which requests of the in-memory models fail, and how. Each request
//! draws from one seeded generator, so a seed and a history replay the same faults as long as
//! the requests arrive in the same order.

use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Per-request probabilities, each in 0.0 ..= 1.0.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultRates {
    /// S3 answers 503 SlowDown without applying the request.
    pub s3_slowdown: f64,
    /// S3 answers 500 InternalError without applying the request.
    pub s3_internal: f64,
    /// The connection is reset before the request reaches S3 (not applied).
    pub s3_reset_before: f64,
    /// A write is applied but its answer is lost ("did it commit?").
    pub s3_lost_answer: f64,
    /// An answer omits the KMS key id of the object.
    pub s3_drop_key: f64,
    /// KMS answers ThrottlingException.
    pub kms_throttle: f64,
}

impl FaultRates {
    /// About one request in eight fails in some way.
    pub fn storm() -> Self {
        Self {
            s3_slowdown: 0.03,
            s3_internal: 0.02,
            s3_reset_before: 0.02,
            s3_lost_answer: 0.03,
            s3_drop_key: 0.02,
            kms_throttle: 0.04,
        }
    }
}

/// What a request meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: answered as the service would.
    None,
    /// 503 SlowDown, not applied.
    SlowDown,
    /// 500 InternalError, not applied.
    Internal,
    /// Connection reset before the request arrived, not applied.
    ResetBefore,
    /// Applied, answer lost.
    LostAnswer,
    /// Answered without the object's KMS key id.
    DropKey,
    /// KMS ThrottlingException.
    Throttle,
}

/// The seeded source of faults shared by the models.
#[derive(Debug)]
pub struct FaultPlan {
    rng: Mutex<StdRng>,
    rates: Mutex<FaultRates>,
}

impl FaultPlan {
    /// A plan drawing from `seed` at `rates`.
    pub fn new(seed: u64, rates: FaultRates) -> Self {
        Self {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            rates: Mutex::new(rates),
        }
    }

    /// No faults at all.
    pub fn none() -> Self {
        Self::new(0, FaultRates::default())
    }

    /// Changes the rates from now on (e.g. none while invariants are checked).
    pub fn set_rates(&self, rates: FaultRates) {
        *lock(&self.rates) = rates;
    }

    /// The fault an S3 request meets; `writes` says whether it changes state (only those can
    /// lose their answer after being applied).
    pub fn s3(&self, writes: bool) -> Fault {
        let r = lock(&self.rates).clone();
        let roll: f64 = lock(&self.rng).gen();
        let mut acc = 0.0;
        for (p, f) in [
            (r.s3_slowdown, Fault::SlowDown),
            (r.s3_internal, Fault::Internal),
            (r.s3_reset_before, Fault::ResetBefore),
            (
                if writes { r.s3_lost_answer } else { 0.0 },
                Fault::LostAnswer,
            ),
            (r.s3_drop_key, Fault::DropKey),
        ] {
            acc += p;
            if roll < acc {
                return f;
            }
        }
        Fault::None
    }

    /// The fault a KMS request meets.
    pub fn kms(&self) -> Fault {
        let p = lock(&self.rates).kms_throttle;
        if lock(&self.rng).gen::<f64>() < p {
            Fault::Throttle
        } else {
            Fault::None
        }
    }

    /// Random bytes from the plan's generator (data keys, upload ids).
    pub fn bytes<const N: usize>(&self) -> [u8; N] {
        let mut b = [0u8; N];
        lock(&self.rng).fill(&mut b[..]);
        b
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
