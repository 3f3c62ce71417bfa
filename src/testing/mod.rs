//! Faithful in-memory models of S3 and KMS behind the engine's traits, with a seeded fault
//! plan, for the simulation tier (`tests/simulation.rs`). Built only with the `testing`
//! feature: never in a shipped binary. They explore interleavings of operator calls, faults
//! and crashes; what the SDK does on the wire is still tested against moto over HTTP.

pub mod faults;
pub mod kms;
pub mod latency;
pub mod s3;

pub use faults::{Fault, FaultPlan, FaultRates};
pub use kms::MemKms;
pub use latency::{Call, CallLog, Delayed};
pub use s3::{AppliedWrite, MemS3, Stored};
