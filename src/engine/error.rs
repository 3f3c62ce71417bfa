//! Engine errors: what a control request or a job can fail with, and what one object can.

use crate::envelope::EnvelopeError;
use crate::journal::JournalError;
use crate::kms::KmsError;
use crate::model::JobId;
use crate::store::StoreError;

/// Errors of engine operations (control requests and job runs).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The job id is unknown.
    #[error("job {0} does not exist; `dualsealctl status` lists the jobs")]
    NoSuchJob(JobId),
    /// The request conflicts with the current state (for example resuming a finished job).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request itself is invalid.
    #[error("{0}")]
    InvalidRequest(String),
    /// The journal failed: fatal for the daemon.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// S3 failed for a job-level call (listing, bucket checks).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// KMS failed for a job-level call (key resolution).
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// Provisioning failed.
    #[error(transparent)]
    Provision(#[from] crate::provision::ProvisionError),
    /// The daemon is shutting down.
    #[error("the daemon is shutting down; retry after it restarts")]
    ShuttingDown,
    /// An inventory report the job lists from is damaged.
    #[error(transparent)]
    Inventory(#[from] crate::inventory::InventoryError),
}

impl EngineError {
    /// Whether the same request can succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            Self::Kms(e) => e.is_retryable(),
            Self::Provision(e) => e.is_retryable(),
            Self::ShuttingDown => true,
            _ => false,
        }
    }

    /// Whether the failure is the daemon's (no credentials, an unreachable endpoint) rather
    /// than the job's: the job parks instead of failing.
    pub fn is_systemic(&self) -> bool {
        match self {
            Self::Store(e) => e.is_systemic(),
            Self::Kms(e) => e.is_systemic(),
            _ => false,
        }
    }
}

/// Why migrating one object failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// S3 failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// KMS failed.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// Sealing or opening failed (never carries secret bytes).
    #[error("envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The read-back did not prove the migration.
    #[error("verification failed: {0}")]
    Verify(String),
    /// The destination is not (or no longer) DSSE-KMS under the category's key.
    #[error("wrong encryption: {0}")]
    WrongEncryption(String),
    /// S3 did not say which KMS key encrypts the destination, so the server-side layer cannot
    /// be proved: a property of the endpoint, not of the object, so not retried.
    #[error("server-side key not reported: {0}")]
    KeyNotReported(String),
    /// The journal failed: fatal, handled by the job, not retried.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The object is larger than S3 can store or dualseal can write.
    #[error("too large: {0}")]
    TooLarge(String),
}

impl ObjectError {
    /// Whether S3 or KMS asked us to slow down.
    pub fn is_throttle(&self) -> bool {
        match self {
            Self::Store(e) => e.kind == crate::aws::AwsErrorKind::Throttled,
            Self::Kms(e) => e.kind == crate::aws::AwsErrorKind::Throttled,
            _ => false,
        }
    }

    /// Whether the failure is the daemon's (credentials, an unreachable endpoint), not this
    /// object's: the job parks rather than fail every object in turn.
    pub fn is_systemic(&self) -> bool {
        match self {
            Self::Store(e) => e.is_systemic(),
            Self::Kms(e) => e.is_systemic(),
            _ => false,
        }
    }

    /// Short machine-readable cause, for reports (`S3.AccessDenied`, `Verify`).
    pub fn code(&self) -> String {
        match self {
            Self::Store(e) => format!("S3.{}", e.kind.code()),
            Self::Kms(e) => format!("KMS.{}", e.kind.code()),
            Self::Envelope(_) => "Envelope".into(),
            Self::Verify(_) => "Verify".into(),
            Self::WrongEncryption(_) => "WrongEncryption".into(),
            Self::KeyNotReported(_) => "KeyNotReported".into(),
            Self::Journal(_) => "Journal".into(),
            Self::TooLarge(_) => "TooLarge".into(),
        }
    }

    /// Whether another attempt at this object can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            Self::Kms(e) => e.is_retryable(),
            // A read-back that differs may be a torn write or a concurrent writer: writing
            // again is the remedy, within the attempt budget.
            Self::Verify(_) | Self::WrongEncryption(_) => true,
            Self::Envelope(_) | Self::Journal(_) | Self::TooLarge(_) | Self::KeyNotReported(_) => {
                false
            }
        }
    }
}

/// A failure that may or may not go away when the call is made again.
pub(super) trait Retryable: std::fmt::Display {
    /// Whether another attempt can succeed.
    fn is_retryable(&self) -> bool;
    /// Whether it is the daemon's problem rather than the call's.
    fn is_systemic(&self) -> bool;
}

impl Retryable for EngineError {
    fn is_retryable(&self) -> bool {
        EngineError::is_retryable(self)
    }
    fn is_systemic(&self) -> bool {
        EngineError::is_systemic(self)
    }
}

impl Retryable for ObjectError {
    fn is_retryable(&self) -> bool {
        ObjectError::is_retryable(self)
    }
    fn is_systemic(&self) -> bool {
        ObjectError::is_systemic(self)
    }
}
