//! One object within a job: its record and the states it moves through.

/// Lifecycle of one object within a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectState {
    /// Listed and classified; not yet written.
    Discovered,
    /// Written to the destination; not yet read back.
    Uploaded,
    /// Read back, SSE checked, decrypted and equal to the source: migrated.
    Verified,
    /// Gave up (permanent error or attempt budget spent); `reason` says why.
    Failed,
    /// Matched no category; left in place.
    Unclassified,
    /// Matched more than one category; left in place.
    Conflict,
}

impl ObjectState {
    /// Every state, in display order.
    pub const ALL: [ObjectState; 6] = [
        Self::Discovered,
        Self::Uploaded,
        Self::Verified,
        Self::Failed,
        Self::Unclassified,
        Self::Conflict,
    ];

    /// Whether a worker still has to do something.
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Discovered | Self::Uploaded)
    }

    /// Lower-case name, as reports and metric labels show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Discovered => "discovered",
            Self::Uploaded => "uploaded",
            Self::Verified => "verified",
            Self::Failed => "failed",
            Self::Unclassified => "unclassified",
            Self::Conflict => "conflict",
        }
    }

    /// Position in [`ALL`](Self::ALL).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Per-object migration state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRecord {
    /// Current state.
    pub state: ObjectState,
    /// Size as listed.
    pub size: u64,
    /// Source ETag (listing, then the one actually read).
    pub source_etag: String,
    /// Source version id, when versioned.
    pub source_version: Option<String>,
    /// Matched category.
    pub category: Option<String>,
    /// Destination bucket.
    pub dest_bucket: Option<String>,
    /// Destination key.
    pub dest_key: Option<String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Why the object failed, is unclassified or conflicts.
    pub reason: Option<String>,
    /// Hex SHA-256 of the envelope written (ciphertext, never plaintext).
    pub ciphertext_sha256: Option<String>,
    /// ETag of the destination object.
    pub dest_etag: Option<String>,
    /// Last change, ms since the Unix epoch.
    pub updated_at_ms: u64,
    /// Earliest time of the next attempt after a retryable failure, ms since the Unix epoch;
    /// kept across restarts so a crash does not turn a backoff into a burst.
    pub retry_at_ms: Option<u64>,
    /// The classification rule that matched (`prefix "db/"`), for the audit trail.
    pub rule: Option<String>,
    /// Short cause of a failure or conflict (`S3.AccessDenied`, `Verify`), for reports.
    pub code: Option<String>,
    /// Envelope format version of the copy (absent: version 1, or adopted as found).
    pub envelope_version: Option<u8>,
    /// A multipart upload an attempt started and neither completed nor aborted (a crash or a
    /// pause cut it short): the next attempt aborts it first, since S3 keeps, and bills, the
    /// parts of an open upload.
    pub upload_id: Option<String>,
}

/// Something that happened to one object. [`ObjectRecord::apply`] is the one rule that says
/// which events each state accepts and what they change; the journal records nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectEvent {
    /// A write reached the destination; its read-back has not proved it yet.
    Uploaded {
        /// Attempts made so far.
        attempts: u32,
        /// ETag of the source bytes read.
        source_etag: String,
        /// Version of the source read, when versioned.
        source_version: Option<String>,
        /// Hex SHA-256 of the envelope written.
        ciphertext_sha256: String,
        /// ETag S3 answered for the write.
        dest_etag: String,
    },
    /// A multipart upload was opened: the next attempt must abort it unless it completes.
    UploadOpened {
        /// S3's upload id.
        upload_id: String,
    },
    /// No multipart upload is open any more (completed, aborted, or found gone). Changes no
    /// state, so every state accepts it.
    UploadClosed,
    /// A retryable failure: the next attempt starts no earlier than `retry_at_ms`.
    RetryScheduled {
        /// Attempts made so far.
        attempts: u32,
        /// Why the attempt failed.
        reason: String,
        /// Earliest next attempt, ms since the Unix epoch.
        retry_at_ms: u64,
    },
    /// Read back, checked both ways and equal to the source: migrated.
    Verified {
        /// Attempts made.
        attempts: u32,
        /// Size of what was migrated.
        size: u64,
        /// ETag of the source bytes read.
        source_etag: String,
        /// Version of the source read, when versioned.
        source_version: Option<String>,
        /// Hex SHA-256 of the envelope held, when known.
        ciphertext_sha256: Option<String>,
        /// ETag of the destination object.
        dest_etag: String,
        /// Envelope format version of the copy (`None`: adopted as found).
        envelope_version: Option<u8>,
    },
    /// The destination holds something else under the key: left for the operator.
    Conflicted {
        /// Attempts made.
        attempts: u32,
        /// What was found.
        reason: String,
        /// Short cause for reports.
        code: String,
    },
    /// Given up: a permanent error or the attempt budget spent.
    Failed {
        /// Attempts made.
        attempts: u32,
        /// Why.
        reason: String,
        /// Short cause for reports (`S3.AccessDenied`).
        code: String,
    },
    /// A verification job's finding about a copy it re-checked.
    Rechecked {
        /// Whether the copy still holds.
        holds: bool,
        /// What was found, when not simply fine.
        reason: Option<String>,
        /// The finding's kind, when the copy does not hold.
        code: Option<String>,
    },
    /// The operator retries a failed object: it starts over with a fresh attempt budget.
    Requeued,
    /// A catch-up pass found the source changed since it was migrated: migrate it anew.
    ChangedInSource {
        /// Size of the new version, as listed.
        size: u64,
    },
}

impl ObjectEvent {
    /// Short name, for errors and tests.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Uploaded { .. } => "uploaded",
            Self::UploadOpened { .. } => "upload_opened",
            Self::UploadClosed => "upload_closed",
            Self::RetryScheduled { .. } => "retry_scheduled",
            Self::Verified { .. } => "verified",
            Self::Conflicted { .. } => "conflicted",
            Self::Failed { .. } => "failed",
            Self::Rechecked { .. } => "rechecked",
            Self::Requeued => "requeued",
            Self::ChangedInSource { .. } => "changed_in_source",
        }
    }
}

/// An event the object's state does not accept: the engine and the journal disagree about the
/// object, and recording it would make the journal lie.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("object in state {from} cannot take event {event}")]
pub struct IllegalTransition {
    /// The object's state.
    pub from: &'static str,
    /// The refused event.
    pub event: &'static str,
}

impl ObjectRecord {
    /// The record after `event`, stamped `now_ms`, or why the event is refused. Pure.
    ///
    /// # Errors
    /// [`IllegalTransition`] when the current state does not accept the event.
    pub fn apply(
        &self,
        event: ObjectEvent,
        now_ms: u64,
    ) -> Result<ObjectRecord, IllegalTransition> {
        use ObjectState as S;
        let refuse = || IllegalTransition {
            from: self.state.as_str(),
            event: event.name(),
        };
        let pending = self.state.is_pending();
        let mut r = self.clone();
        match &event {
            ObjectEvent::Uploaded { .. }
            | ObjectEvent::UploadOpened { .. }
            | ObjectEvent::RetryScheduled { .. }
            | ObjectEvent::Verified { .. }
            | ObjectEvent::Conflicted { .. }
            | ObjectEvent::Failed { .. }
            | ObjectEvent::Rechecked { .. }
                if !pending =>
            {
                return Err(refuse())
            }
            ObjectEvent::Requeued if self.state != S::Failed => return Err(refuse()),
            ObjectEvent::ChangedInSource { .. } if self.state != S::Verified => {
                return Err(refuse())
            }
            _ => {}
        }
        match event {
            ObjectEvent::Uploaded {
                attempts,
                source_etag,
                source_version,
                ciphertext_sha256,
                dest_etag,
            } => {
                r.state = S::Uploaded;
                r.attempts = attempts;
                r.source_etag = source_etag;
                r.source_version = source_version;
                r.ciphertext_sha256 = Some(ciphertext_sha256);
                r.dest_etag = Some(dest_etag);
                r.upload_id = None;
            }
            ObjectEvent::UploadOpened { upload_id } => r.upload_id = Some(upload_id),
            ObjectEvent::UploadClosed => r.upload_id = None,
            ObjectEvent::RetryScheduled {
                attempts,
                reason,
                retry_at_ms,
            } => {
                r.attempts = attempts;
                r.reason = Some(reason);
                r.retry_at_ms = Some(retry_at_ms);
            }
            ObjectEvent::Verified {
                attempts,
                size,
                source_etag,
                source_version,
                ciphertext_sha256,
                dest_etag,
                envelope_version,
            } => {
                r.state = S::Verified;
                r.attempts = attempts;
                r.reason = None;
                r.code = None;
                r.retry_at_ms = None;
                r.size = size;
                r.source_etag = source_etag;
                r.source_version = source_version;
                r.ciphertext_sha256 = ciphertext_sha256;
                r.dest_etag = Some(dest_etag);
                r.upload_id = None;
                if envelope_version.is_some() {
                    r.envelope_version = envelope_version;
                }
            }
            ObjectEvent::Conflicted {
                attempts,
                reason,
                code,
            } => {
                r.state = S::Conflict;
                r.attempts = attempts;
                r.reason = Some(reason);
                r.code = Some(code);
                r.retry_at_ms = None;
            }
            ObjectEvent::Failed {
                attempts,
                reason,
                code,
            } => {
                r.state = S::Failed;
                r.attempts = attempts;
                r.reason = Some(reason);
                r.code = Some(code);
                r.retry_at_ms = None;
            }
            ObjectEvent::Rechecked {
                holds,
                reason,
                code,
            } => {
                r.state = if holds { S::Verified } else { S::Failed };
                r.attempts += 1;
                r.reason = reason;
                r.code = code;
                r.retry_at_ms = None;
            }
            ObjectEvent::Requeued => {
                r.state = S::Discovered;
                r.attempts = 0;
                r.retry_at_ms = None;
            }
            ObjectEvent::ChangedInSource { size } => {
                r.state = S::Discovered;
                r.attempts = 0;
                r.retry_at_ms = None;
                r.reason = None;
                r.size = size;
            }
        }
        r.updated_at_ms = now_ms;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: ObjectState) -> ObjectRecord {
        ObjectRecord {
            state,
            size: 10,
            source_etag: "\"s\"".into(),
            source_version: None,
            category: Some("db".into()),
            dest_bucket: Some("secrets-db".into()),
            dest_key: Some("k".into()),
            attempts: 2,
            reason: Some("earlier".into()),
            ciphertext_sha256: None,
            dest_etag: None,
            updated_at_ms: 1,
            retry_at_ms: Some(5),
            rule: None,
            code: None,
            envelope_version: None,
            upload_id: Some("u-1".into()),
        }
    }

    fn every_event() -> Vec<ObjectEvent> {
        vec![
            ObjectEvent::Uploaded {
                attempts: 3,
                source_etag: "\"s2\"".into(),
                source_version: None,
                ciphertext_sha256: "ab".into(),
                dest_etag: "\"d\"".into(),
            },
            ObjectEvent::UploadOpened {
                upload_id: "u-2".into(),
            },
            ObjectEvent::UploadClosed,
            ObjectEvent::RetryScheduled {
                attempts: 3,
                reason: "SlowDown".into(),
                retry_at_ms: 99,
            },
            ObjectEvent::Verified {
                attempts: 3,
                size: 11,
                source_etag: "\"s2\"".into(),
                source_version: Some("v".into()),
                ciphertext_sha256: Some("ab".into()),
                dest_etag: "\"d\"".into(),
                envelope_version: Some(2),
            },
            ObjectEvent::Conflicted {
                attempts: 3,
                reason: "held".into(),
                code: "DestinationConflict".into(),
            },
            ObjectEvent::Failed {
                attempts: 3,
                reason: "denied".into(),
                code: "S3.AccessDenied".into(),
            },
            ObjectEvent::Rechecked {
                holds: false,
                reason: Some("gone".into()),
                code: Some("missing".into()),
            },
            ObjectEvent::Requeued,
            ObjectEvent::ChangedInSource { size: 12 },
        ]
    }

    /// Which state each event leads to from each state (`None`: refused). Written out in full
    /// so that a change to the rule is a change to this table.
    fn expected(from: ObjectState, event: &ObjectEvent) -> Option<ObjectState> {
        use ObjectState as S;
        let pending = matches!(from, S::Discovered | S::Uploaded);
        match event {
            ObjectEvent::UploadClosed => Some(from),
            ObjectEvent::Uploaded { .. } => pending.then_some(S::Uploaded),
            ObjectEvent::UploadOpened { .. } | ObjectEvent::RetryScheduled { .. } => {
                pending.then_some(from)
            }
            ObjectEvent::Verified { .. } => pending.then_some(S::Verified),
            ObjectEvent::Conflicted { .. } => pending.then_some(S::Conflict),
            ObjectEvent::Failed { .. } => pending.then_some(S::Failed),
            ObjectEvent::Rechecked { holds, .. } => {
                pending.then_some(if *holds { S::Verified } else { S::Failed })
            }
            ObjectEvent::Requeued => (from == S::Failed).then_some(S::Discovered),
            ObjectEvent::ChangedInSource { .. } => (from == S::Verified).then_some(S::Discovered),
        }
    }

    #[test]
    fn every_state_and_event_follows_the_table() {
        let mut accepted = 0;
        for from in ObjectState::ALL {
            for event in every_event() {
                let before = record(from);
                let got = before.apply(event.clone(), 42);
                match (expected(from, &event), got) {
                    (Some(to), Ok(after)) => {
                        accepted += 1;
                        assert_eq!(after.state, to, "{from:?} + {}", event.name());
                        assert_eq!(after.updated_at_ms, 42);
                        // Who the object is and where it goes never change by an event.
                        assert_eq!(after.category, before.category);
                        assert_eq!(after.dest_bucket, before.dest_bucket);
                        assert_eq!(after.dest_key, before.dest_key);
                    }
                    (None, Err(e)) => {
                        assert_eq!(e.from, from.as_str());
                        assert_eq!(e.event, event.name());
                    }
                    (want, got) => {
                        panic!("{from:?} + {}: want {want:?}, got {got:?}", event.name())
                    }
                }
            }
        }
        // Every state accepts at least UploadClosed, so a table that refused everything
        // else would still be caught here.
        assert_eq!(accepted, 2 * 8 + 4 + 1 + 1);
    }

    #[test]
    fn settling_events_clear_the_retry_and_a_verified_copy_names_no_open_upload() {
        let r = record(ObjectState::Uploaded);
        for event in every_event() {
            let Ok(after) = r.apply(event.clone(), 7) else {
                continue;
            };
            if !after.state.is_pending() {
                assert_eq!(after.retry_at_ms, None, "{}", event.name());
            }
            if after.state == ObjectState::Verified && event.name() == "verified" {
                assert_eq!(after.upload_id, None);
                assert_eq!(after.reason, None);
                assert_eq!(after.code, None);
            }
        }
    }

    #[test]
    fn a_retry_keeps_the_state_and_requeue_resets_the_budget() {
        let r = record(ObjectState::Discovered);
        let after = r
            .apply(
                ObjectEvent::RetryScheduled {
                    attempts: 3,
                    reason: "SlowDown".into(),
                    retry_at_ms: 99,
                },
                7,
            )
            .unwrap();
        assert_eq!(
            (after.state, after.attempts, after.retry_at_ms),
            (ObjectState::Discovered, 3, Some(99))
        );
        let failed = record(ObjectState::Failed);
        let again = failed.apply(ObjectEvent::Requeued, 8).unwrap();
        assert_eq!(
            (again.state, again.attempts, again.retry_at_ms),
            (ObjectState::Discovered, 0, None)
        );
    }
}
