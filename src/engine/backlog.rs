//! Objects waiting out a retry's delay, in the order they fall due.
//!
//! A worker that meets a retryable failure records the retry (attempts, reason and due time,
//! `retry_at_ms`, in the object's record: durable with the rest of the journal) and hands the
//! object here; it frees its slot, its pool permit and its memory for other objects instead of
//! sleeping on them. The dispatcher takes what is due before anything new. A resume rebuilds
//! the queue from the pending records that carry a due time, so the journal is the queue's
//! persistence and a restart keeps both the delays and their order.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::model::ObjectRecord;

/// A job's objects waiting for a retry, keyed by (due time, key).
#[derive(Debug, Default)]
pub(super) struct Backlog {
    waiting: Mutex<BTreeMap<(u64, String), ObjectRecord>>,
    changed: tokio::sync::Notify,
}

impl Backlog {
    /// Adds an object whose record says when it is due (no due time: due now).
    pub(super) fn push(&self, key: String, rec: ObjectRecord) {
        let due = rec.retry_at_ms.unwrap_or(0);
        self.lock().insert((due, key), rec);
        self.changed.notify_one();
    }

    /// The earliest object due at `now_ms`, if any.
    pub(super) fn pop_due(&self, now_ms: u64) -> Option<(String, ObjectRecord)> {
        let mut waiting = self.lock();
        let first = waiting.first_key_value()?.0 .0;
        if first > now_ms {
            return None;
        }
        waiting.pop_first().map(|((_, key), rec)| (key, rec))
    }

    /// When the next object falls due.
    pub(super) fn next_due(&self) -> Option<u64> {
        self.lock().first_key_value().map(|((due, _), _)| *due)
    }

    /// Whether no object waits.
    pub(super) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Resolves when an object is added after this call started waiting.
    pub(super) async fn changed(&self) {
        self.changed.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(u64, String), ObjectRecord>> {
        // Nothing panics while holding it; a poisoned map is still consistent.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::Backlog;
    use crate::model::{ObjectRecord, ObjectState};

    fn due(at: Option<u64>) -> ObjectRecord {
        ObjectRecord {
            state: ObjectState::Discovered,
            size: 1,
            source_etag: String::new(),
            source_version: None,
            category: None,
            dest_bucket: None,
            dest_key: None,
            attempts: 1,
            reason: None,
            ciphertext_sha256: None,
            dest_etag: None,
            updated_at_ms: 0,
            retry_at_ms: at,
            rule: None,
            code: None,
            envelope_version: None,
            upload_id: None,
        }
    }

    #[test]
    fn objects_come_out_when_due_earliest_first_then_by_key() {
        let b = Backlog::default();
        b.push("late".into(), due(Some(300)));
        b.push("b".into(), due(Some(100)));
        b.push("a".into(), due(Some(100)));
        b.push("now".into(), due(None));
        assert!(!b.is_empty());
        assert_eq!(b.next_due(), Some(0));
        let mut out = Vec::new();
        while let Some((k, _)) = b.pop_due(200) {
            out.push(k);
        }
        assert_eq!(out, ["now", "a", "b"]);
        assert_eq!(b.next_due(), Some(300));
        assert!(b.pop_due(299).is_none(), "nothing leaves before it is due");
        assert_eq!(b.pop_due(300).map(|(k, _)| k).as_deref(), Some("late"));
        assert!(b.is_empty() && b.next_due().is_none());
    }
}
