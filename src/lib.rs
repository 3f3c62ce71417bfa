//! dualseal moves secrets out of one master S3 bucket into per-category buckets, sealing every
//! object twice: a client-side XChaCha20-Poly1305 envelope under a per-object KMS data key, and
//! server-side DSSE-KMS under the category's KMS key.
//!
//! Module map (dependencies point down; nothing below `engine` knows about gRPC):
//!
//! - [`daemon`]   boot and shutdown order of `dualseald`.
//! - [`api`]      gRPC service (proto ↔ domain, no business logic), server plumbing, typed client.
//! - [`access`]   who may do what: roles from the socket peer's uid/gid (pure policy).
//! - [`metrics`]  optional Prometheus endpoint, S3/KMS request metering, gauges from the engine.
//! - [`engine`]   jobs, priorities and a shared worker pool, live limits, retries,
//!   pause/resume/cancel, failure threshold, plan and verification.
//! - [`provision`] category keys and buckets with least-privilege policies: plan, apply, drift,
//!   and the gate that keeps migrations out of weak buckets.
//! - [`reader`]   how an application reads a migrated secret (DSSE check, location check, KMS, open).
//! - [`model`]    jobs and objects: the domain types engine, API and journal share (pure).
//! - [`journal`]  the only sled user: jobs, per-object state, hash-chained audit trail.
//! - [`audit`]    audit event schema and hash chain (pure; verifies exports offline too).
//! - [`envelope`] pure, versioned, key-committing XChaCha20-Poly1305 STREAM envelope.
//! - [`kms`]      `KeyService` and AWS KMS (the only `aws_sdk_kms` user).
//! - [`store`]    `ObjectStore` and S3 (the only `aws_sdk_s3` user).
//! - [`aws`]      shared SDK config (timeouts, retries) and error classification.
//! - [`classify`] category rules: key → category and destination key; content → category.
//! - [`content`]  what an object is (PEM key, DSN, JWK, .env, token), explained secret-free.
//! - [`config`]   the strict config tree and its validation.
//! - [`shard`]    which keys this daemon takes when several split one bucket.
//! - [`inventory`] S3 Inventory manifests and CSV files as a listing source (pure).
//! - `testing`    (feature `testing` only) in-memory S3 and KMS models for the simulation tier.

pub mod access;
pub mod api;
pub mod audit;
pub mod aws;
pub mod classify;
pub mod config;
pub mod content;
pub mod daemon;
pub mod engine;
pub mod envelope;
pub mod inventory;
pub mod journal;
pub mod kms;
pub mod metrics;
pub mod model;
pub mod provision;
pub mod reader;
pub mod shard;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
