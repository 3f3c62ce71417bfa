//! Each job's decommission state in its own tree, written in one transaction with the audit
//! event that reports it. Journals from before the tree derive it from their audit trail once,
//! at open.

use std::collections::BTreeMap;

use sled::Transactional;

use super::chain::AuditDraft;
use super::error::{tx_error, JournalError};
use super::records::{decode, encode, job_key, AuditRecord};
use super::{lock, State, TREE_AUDIT, TREE_DECOMMISSION};
use crate::model::{DecommissionState, JobId, Lockdown};

impl State {
    /// [`Journal::decommission`](super::Journal::decommission).
    pub(super) fn decommission(&self, job: JobId) -> Result<DecommissionState, JournalError> {
        match self.decommissions.get(job_key(job))? {
            None => Ok(DecommissionState::default()),
            Some(v) => decode(&v).map_err(|source| JournalError::Corrupt {
                tree: TREE_DECOMMISSION,
                key: job.to_string(),
                source,
            }),
        }
    }

    /// [`Journal::record_decommission`](super::Journal::record_decommission), run on the writer thread.
    pub(super) fn record_decommission(
        &self,
        job: JobId,
        change: impl FnOnce(&mut DecommissionState),
        audit: AuditDraft,
    ) -> Result<DecommissionState, JournalError> {
        self.audit_writable()?;
        let mut state = self.decommission(job)?;
        change(&mut state);
        let value = encode(&state);
        let mut head = lock(&self.chain);
        let (events, at) = self.chain_records(&head, [audit]);
        (&self.decommissions, &self.audit)
            .transaction(|(decommissions, audit)| {
                decommissions.insert(&job_key(job), value.as_slice())?;
                for (seq, event) in &events {
                    audit.insert(seq, event.as_slice())?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        *head = at;
        drop(head);
        self.touch();
        Ok(state)
    }

    /// Fills the tree from the audit trail of a journal written before it: a requested
    /// lockdown records the policy it replaced, a completed rollback ends it, a completed
    /// archive is an archive.
    pub(super) fn derive_decommissions(&self) -> Result<(), JournalError> {
        let mut states: BTreeMap<JobId, DecommissionState> = BTreeMap::new();
        for entry in self.audit.iter() {
            let (k, v) = entry?;
            let r: AuditRecord = decode(&v).map_err(|source| JournalError::Corrupt {
                tree: TREE_AUDIT,
                key: hex::encode(&k),
                source,
            })?;
            derive(&mut states, &r);
        }
        for (job, state) in states {
            self.decommissions.insert(job_key(job), encode(&state))?;
        }
        Ok(())
    }
}

/// One audit event's effect on the derived states (the rules the engine used to read back).
fn derive(states: &mut BTreeMap<JobId, DecommissionState>, r: &AuditRecord) {
    match (r.kind.as_str(), r.outcome.as_str()) {
        ("decommission_lockdown", "requested") => {
            let previous = r
                .detail
                .split_once("previous_policy=")
                .map(|(_, p)| p)
                .filter(|p| *p != "none")
                .map(str::to_owned);
            states.entry(r.job_id).or_default().lockdown = Some(Lockdown {
                previous_policy: previous,
            });
        }
        ("decommission_rollback", "ok") => {
            states.entry(r.job_id).or_default().lockdown = None;
        }
        ("decommission_archive", "ok") => {
            states.entry(r.job_id).or_default().archived = true;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(job: JobId, kind: &str, outcome: &str, detail: &str) -> AuditRecord {
        AuditRecord {
            seq: 1,
            at_ms: 0,
            job_id: job,
            kind: kind.into(),
            actor: "daemon".into(),
            category: String::new(),
            outcome: outcome.into(),
            source_key: String::new(),
            dest_bucket: String::new(),
            dest_key: String::new(),
            detail: detail.into(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn audit_trails_of_today_derive_the_same_state_the_engine_read_back() {
        let mut s = BTreeMap::new();
        let policy = r#"{"Version":"2012-10-17","Statement":[]}"#;
        for r in [
            event(
                1,
                "decommission_lockdown",
                "requested",
                &format!("token_id=t bucket=b previous_policy={policy}"),
            ),
            event(1, "decommission_lockdown", "ok", "token_id=t bucket=b"),
            event(
                2,
                "decommission_lockdown",
                "requested",
                "token_id=u bucket=c previous_policy=none",
            ),
            event(2, "decommission_archive", "failed", "token_id=v 1 failed"),
            event(
                3,
                "decommission_lockdown",
                "requested",
                "token_id=w bucket=d previous_policy=none",
            ),
            event(
                3,
                "decommission_rollback",
                "requested",
                "token_id=x bucket=d previous_policy=...",
            ),
            event(3, "decommission_rollback", "ok", "token_id=x bucket=d"),
            event(3, "decommission_archive", "ok", "token_id=y done"),
        ] {
            derive(&mut s, &r);
        }
        assert_eq!(
            s[&1].lockdown,
            Some(Lockdown {
                previous_policy: Some(policy.into())
            })
        );
        assert!(!s[&1].archived);
        assert_eq!(
            s[&2].lockdown,
            Some(Lockdown {
                previous_policy: None
            })
        );
        assert!(!s[&2].archived, "a failed archive is no archive");
        assert_eq!(
            s[&3],
            DecommissionState {
                lockdown: None,
                archived: true
            }
        );
    }
}
