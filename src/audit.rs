//! The audit trail's event schema and hash chain. Pure: the journal uses it to write events,
//! `dualsealctl audit verify --file` to check an export offline, with no daemon and no AWS.
//!
//! Each event's `hash` is SHA-256 over the previous event's `hash` (64 hex characters; all
//! zeros before the first event) followed by the compact JSON of every other field of the
//! event, keys sorted. `docs/audit.md` gives the schema and an example of each event kind.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit event, exactly as exported (JSON Lines or CSV).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditEvent {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// RFC 3339 UTC time with milliseconds.
    pub at: String,
    /// Job concerned, 0 for daemon-level events.
    pub job_id: u64,
    /// What happened (`job_started`, `object_verified`, `control`, ...).
    pub kind: String,
    /// Who asked for it (`uid=...,gid=...,pid=...` from the socket peer), or `daemon`.
    pub actor: String,
    /// Category of the object, when about one.
    pub category: String,
    /// `ok`, `failed`, `denied`, `conflict`, ...
    pub outcome: String,
    /// Source key, when about one object.
    pub source_key: String,
    /// Destination bucket, when about one object.
    pub destination_bucket: String,
    /// Destination key, when about one object.
    pub destination_key: String,
    /// Non-secret detail.
    pub detail: String,
    /// `hash` of the previous event.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

/// RFC 3339 (UTC, milliseconds) from ms since the Unix epoch: the only time format of the
/// trail, so exports hash the same as the journal.
pub fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The hash an event must carry, given the previous event's hash.
pub fn event_hash(prev_hash: &str, e: &AuditEvent) -> String {
    let body = serde_json::json!({
        "seq": e.seq, "at": e.at, "job_id": e.job_id, "kind": e.kind, "actor": e.actor,
        "category": e.category, "outcome": e.outcome, "source_key": e.source_key,
        "destination_bucket": e.destination_bucket, "destination_key": e.destination_key,
        "detail": e.detail,
    });
    let mut canonical = String::new();
    write_canonical(&body, &mut canonical);
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

/// Compact JSON with every object's keys sorted by their bytes, whatever order serde_json's
/// map keeps: a dependency that turns on its `preserve_order` feature (aws-smithy-http-client's
/// test utilities do, in test builds) must not change a stored chain's hashes. This is exactly
/// what serde_json writes with its default, sorted map, which every chain was hashed with.
fn write_canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::from(k.as_str()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Every event kind the trail records (docs/audit.md describes each).
pub const KINDS: &[&str] = &[
    "job_started",
    "page_listed",
    "object_unclassified",
    "object_conflict",
    "object_verified",
    "object_failed",
    "job_paused",
    "job_resumed",
    "job_cancelled",
    "job_retried",
    "multipart_uploads_aborted",
    "job_finished",
    "job_failed",
    "verify_problem",
    "object_reverified",
    "job_parked",
    "job_verified",
    "journal_rebuilt",
    "job_updated",
    "job_dequeued",
    "job_sync",
    "object_changed_in_source",
    "weak_buckets_accepted",
    "provisioned",
    "config_reloaded",
    "decommission_lockdown",
    "decommission_rollback",
    "deleted_at_decommission",
    "decommission_delete",
    "decommission_archive",
    "archived_at_decommission",
    "denied",
    "control",
    "control_result",
];

/// Every outcome the trail records: the results of acts, and the findings of a
/// re-verification (`verify_problem`, `object_reverified`).
pub const OUTCOMES: &[&str] = &[
    "ok",
    "failed",
    "requested",
    "refused",
    "denied",
    "conflict",
    "unclassified",
    "paused",
    "threshold",
    "override",
    "requeued",
    "mismatched",
    "missing",
    "wrong_key",
    "key_not_reported",
    "wrong_bucket",
    "source_changed",
    "source_gone",
    "unreadable",
    "category_missing",
];

/// Which events an export keeps. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only events after this sequence number (resuming an export).
    pub after_seq: u64,
    /// Only this job's events.
    pub job: Option<u64>,
    /// Events at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Events at or before this time (ms since the Unix epoch).
    pub until_ms: Option<u64>,
    /// Exact category.
    pub category: String,
    /// Exact kind (action).
    pub kind: String,
    /// Exact outcome.
    pub outcome: String,
    /// Exact actor.
    pub actor: String,
    /// Source key prefix.
    pub source_prefix: String,
    /// Destination key prefix.
    pub destination_prefix: String,
}

impl Filter {
    /// What is wrong with the filter, field by field: a kind or outcome the trail never
    /// records (the export would silently match nothing), or `since` after `until`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !self.kind.is_empty() && !KINDS.contains(&self.kind.as_str()) {
            out.push((
                "kind",
                format!(
                    "{:?} is not an event kind; use one of {}",
                    self.kind,
                    KINDS.join(", ")
                ),
            ));
        }
        if !self.outcome.is_empty() && !OUTCOMES.contains(&self.outcome.as_str()) {
            out.push((
                "outcome",
                format!(
                    "{:?} is not an outcome; use one of {}",
                    self.outcome,
                    OUTCOMES.join(", ")
                ),
            ));
        }
        if let (Some(since), Some(until)) = (self.since_ms, self.until_ms) {
            if since > until {
                out.push((
                    "since",
                    format!(
                        "since ({}) is after until ({}): the range is empty",
                        rfc3339(since),
                        rfc3339(until)
                    ),
                ));
            }
        }
        out
    }

    /// Whether `e`, which happened at `at_ms`, passes.
    pub fn matches(&self, e: &AuditEvent, at_ms: u64) -> bool {
        let eq = |want: &str, have: &str| want.is_empty() || want == have;
        e.seq > self.after_seq
            && self.job.is_none_or(|j| j == e.job_id)
            && self.since_ms.is_none_or(|t| at_ms >= t)
            && self.until_ms.is_none_or(|t| at_ms <= t)
            && eq(&self.category, &e.category)
            && eq(&self.kind, &e.kind)
            && eq(&self.outcome, &e.outcome)
            && eq(&self.actor, &e.actor)
            && e.source_key.starts_with(&self.source_prefix)
            && e.destination_key.starts_with(&self.destination_prefix)
    }
}

/// Parses an RFC 3339 time (as accepted in filters) to ms since the Unix epoch.
///
/// # Errors
/// A message naming the value when it is not RFC 3339.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time (e.g. 2026-11-27T15:00:00Z): {e}"))?;
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{s:?} is before 1970"))?;
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where and how a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// The event's content does not match its hash: it was edited.
    #[error("event {seq} was edited: its content does not match its hash")]
    Edited {
        /// The event.
        seq: u64,
    },
    /// Events are missing before this one.
    #[error("events {expected}..{} are missing (deleted) before event {found}", found - 1)]
    Missing {
        /// The sequence number expected next.
        expected: u64,
        /// The one found instead.
        found: u64,
    },
    /// An event appears out of order.
    #[error("event {seq} is out of order (after event {after})")]
    Reordered {
        /// The event.
        seq: u64,
        /// The event before it.
        after: u64,
    },
    /// The event's `prev_hash` does not link to the event before it.
    #[error("event {seq} does not link to the event before it (replaced or re-chained)")]
    Unlinked {
        /// The event.
        seq: u64,
    },
    /// The chain ends before the head recorded elsewhere.
    #[error("the trail ends at event {last} but the recorded head is event {head}: events after {last} were removed (truncated)")]
    Truncated {
        /// Last event present.
        last: u64,
        /// Head recorded elsewhere.
        head: u64,
    },
    /// The head recorded elsewhere does not match the event with its number.
    #[error("event {seq} does not match the recorded head hash: the trail was rewritten")]
    HeadMismatch {
        /// The event.
        seq: u64,
    },
}

/// Result of walking a chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// Events read.
    pub events: u64,
    /// Sequence number and hash of the last event read (the head).
    pub head: Option<(u64, String)>,
    /// The first break found, if any.
    pub broken: Option<ChainBreak>,
}

/// Walks `events` (in file or journal order) and reports the first break. A complete trail
/// starts at event 1; `expected_head` (recorded elsewhere, e.g. `dualsealctl audit head`)
/// also catches truncation and wholesale rewrites.
pub fn verify_chain(
    events: impl IntoIterator<Item = AuditEvent>,
    expected_head: Option<(u64, &str)>,
) -> ChainReport {
    let mut report = ChainReport::default();
    let mut prev: Option<AuditEvent> = None;
    for e in events {
        report.events += 1;
        let expected_seq = prev.as_ref().map_or(1, |p| p.seq + 1);
        let prev_hash = prev
            .as_ref()
            .map_or(GENESIS_HASH, |p| p.hash.as_str())
            .to_owned();
        let brk = if e.seq < expected_seq {
            Some(ChainBreak::Reordered {
                seq: e.seq,
                after: expected_seq - 1,
            })
        } else if e.seq > expected_seq {
            Some(ChainBreak::Missing {
                expected: expected_seq,
                found: e.seq,
            })
        } else if event_hash(&e.prev_hash, &e) != e.hash {
            Some(ChainBreak::Edited { seq: e.seq })
        } else if e.prev_hash != prev_hash {
            Some(ChainBreak::Unlinked { seq: e.seq })
        } else {
            None
        };
        if let Some(b) = brk {
            report.broken = Some(b);
            return report;
        }
        if let Some((hs, hh)) = expected_head {
            if e.seq == hs && e.hash != hh {
                report.broken = Some(ChainBreak::HeadMismatch { seq: hs });
                return report;
            }
        }
        report.head = Some((e.seq, e.hash.clone()));
        prev = Some(e);
    }
    if let Some((hs, _)) = expected_head {
        let last = report.head.as_ref().map_or(0, |h| h.0);
        if last < hs {
            report.broken = Some(ChainBreak::Truncated { last, head: hs });
        }
    }
    report
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_golden_chain_verifies_forever() {
        // Written by an independent implementation of the documented hash (Python's json with
        // sorted keys, compact, UTF-8 unescaped): if the encoding ever changes (it did once in
        // test builds, when a dev-dependency turned on serde_json's `preserve_order`), every
        // stored chain would break; this fails first. Never regenerate it to make it pass.
        let text = include_str!("../tests/fixtures/audit-chain-golden.jsonl");
        let events: Vec<AuditEvent> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("fixture line"))
            .collect();
        assert_eq!(events.len(), 5);
        for e in &events {
            assert_eq!(event_hash(&e.prev_hash, e), e.hash, "event {}", e.seq);
        }
        let head = "e60d09eaee20fc86ddbc8b523493b8de3dee88cebba948982fc7c5621c1abf04";
        let report = verify_chain(events, Some((5, head)));
        assert!(report.broken.is_none(), "{:?}", report.broken);
        assert_eq!(report.head, Some((5, head.to_owned())));
    }

    #[test]
    fn the_hashed_encoding_sorts_keys_at_every_depth_whatever_order_they_came_in() {
        let mut inner = serde_json::Map::new();
        inner.insert("z".into(), 1.into());
        inner.insert("a".into(), "é\"\n".into());
        let mut outer = serde_json::Map::new();
        outer.insert("b".into(), serde_json::Value::Object(inner));
        outer.insert(
            "a".into(),
            serde_json::json!([{"y": 1, "x": [null, true, 2.5]}]),
        );
        let mut out = String::new();
        super::write_canonical(&serde_json::Value::Object(outer), &mut out);
        assert_eq!(
            out,
            r#"{"a":[{"x":[null,true,2.5],"y":1}],"b":{"a":"é\"\n","z":1}}"#
        );
    }

    #[test]
    fn every_kind_and_outcome_an_export_accepts_is_documented() {
        let doc = include_str!("../docs/audit.md");
        for word in KINDS.iter().chain(OUTCOMES) {
            assert!(
                doc.contains(&format!("`{word}`")),
                "docs/audit.md does not mention `{word}`"
            );
        }
    }

    use super::*;

    fn chain(n: u64) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let mut e = AuditEvent {
                    seq,
                    at: rfc3339(1_700_000_000_000 + seq),
                    job_id: 1,
                    kind: "object_verified".into(),
                    source_key: format!("db/{seq}"),
                    prev_hash: prev.clone(),
                    ..Default::default()
                };
                e.hash = event_hash(&prev, &e);
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_reports_its_head() {
        let c = chain(5);
        let r = verify_chain(c.clone(), Some((5, &c[4].hash)));
        assert_eq!(r.broken, None);
        assert_eq!(r.events, 5);
        assert_eq!(r.head, Some((5, c[4].hash.clone())));
    }

    #[test]
    fn each_tamper_kind_names_the_sequence_number() {
        let c = chain(6);
        let mut edited = c.clone();
        edited[2].detail.push('x');
        assert_eq!(
            verify_chain(edited, None).broken,
            Some(ChainBreak::Edited { seq: 3 })
        );

        let mut deleted = c.clone();
        deleted.remove(3);
        assert_eq!(
            verify_chain(deleted, None).broken,
            Some(ChainBreak::Missing {
                expected: 4,
                found: 5
            })
        );

        let mut reordered = c.clone();
        reordered.swap(1, 2);
        assert_eq!(
            verify_chain(reordered, None).broken,
            Some(ChainBreak::Missing {
                expected: 2,
                found: 3
            })
        );

        let truncated = c[..4].to_vec();
        assert_eq!(
            verify_chain(truncated, Some((6, &c[5].hash))).broken,
            Some(ChainBreak::Truncated { last: 4, head: 6 })
        );

        // Re-hashing an edited event is caught by the next link.
        let mut rehashed = c.clone();
        rehashed[2].detail.push('x');
        rehashed[2].hash = event_hash(&rehashed[2].prev_hash, &rehashed[2]);
        assert_eq!(
            verify_chain(rehashed, None).broken,
            Some(ChainBreak::Unlinked { seq: 4 })
        );

        // A wholesale rewrite is caught by the head recorded elsewhere.
        let mut rewritten = chain(6);
        for e in &mut rewritten {
            e.job_id = 2;
        }
        let mut prev = GENESIS_HASH.to_owned();
        for e in &mut rewritten {
            e.prev_hash = prev.clone();
            e.hash = event_hash(&prev, e);
            prev = e.hash.clone();
        }
        assert_eq!(
            verify_chain(rewritten, Some((6, &c[5].hash))).broken,
            Some(ChainBreak::HeadMismatch { seq: 6 })
        );
    }

    #[test]
    fn filters_combine() {
        let c = chain(3);
        let f = Filter {
            job: Some(1),
            since_ms: Some(parse_time("2023-11-14T22:13:20.002Z").unwrap()),
            source_prefix: "db/".into(),
            ..Default::default()
        };
        let kept: Vec<u64> = c
            .iter()
            .filter(|e| f.matches(e, parse_time(&e.at).unwrap()))
            .map(|e| e.seq)
            .collect();
        assert_eq!(kept, vec![2, 3]);
        assert!(!Filter {
            job: Some(2),
            ..Default::default()
        }
        .matches(&c[0], 0));
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn reordering_later_events_is_named() {
        let c = chain(4);
        let order = vec![c[0].clone(), c[1].clone(), c[3].clone(), c[2].clone()];
        // 4 arrives where 3 was expected: reported as missing 3; a strict walk cannot tell
        // a move from a deletion until it sees 3 again, and stops at the first break.
        assert_eq!(
            verify_chain(order, None).broken,
            Some(ChainBreak::Missing {
                expected: 3,
                found: 4
            })
        );
        let back = vec![c[0].clone(), c[1].clone(), c[1].clone()];
        assert_eq!(
            verify_chain(back, None).broken,
            Some(ChainBreak::Reordered { seq: 2, after: 2 })
        );
    }
}
