//! What decommission has done to a migration job's source bucket, typed, so that no decision
//! (what a rollback restores, whether an archive exists) depends on reading audit text back.

/// A job's decommission state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecommissionState {
    /// The lockdown in force (recorded before the policy is put, so a crash between the two
    /// still knows what to restore); `None` after a rollback, or before any lockdown.
    pub lockdown: Option<Lockdown>,
    /// Whether an archive of the job's verified objects completed with no failure.
    pub archived: bool,
}

/// A lockdown of the source bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockdown {
    /// The bucket policy before it (`None`: the bucket had none), which a rollback restores.
    pub previous_policy: Option<String>,
}
