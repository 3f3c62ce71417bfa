//! The domain model: jobs and the objects they move, as the engine, the API and the journal
//! share them. Pure data and the rules on it; no storage, no I/O. The journal stores it in
//! shapes of its own (`journal/records`), versioned, so a change here never misreads a journal
//! on disk.

mod decommission;
mod job;
mod object;

pub use decommission::{DecommissionState, Lockdown};
pub use job::{
    FailureThreshold, JobId, JobKind, JobLimits, JobOptions, JobRecord, JobState, VerifyMode,
};
pub use object::{IllegalTransition, ObjectEvent, ObjectRecord, ObjectState};
