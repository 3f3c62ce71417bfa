//! The journal's behaviour over a real sled database in a temporary directory.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::records::{job_key, object_key};
use super::*;
use crate::model::{DecommissionState, JobId, Lockdown, ObjectEvent, ObjectRecord, ObjectState};

#[test]
fn storage_errors_give_the_remedy_of_their_cause() {
    let full =
        JournalError::from(sled::Error::Io(std::io::Error::from_raw_os_error(28))).to_string();
    assert!(full.contains("disk holding the journal is full"), "{full}");
    assert!(full.contains("no restore or rebuild is needed"), "{full}");
    assert!(!full.contains("rebuild-journal"), "{full}");
    let denied = JournalError::from(sled::Error::Io(std::io::Error::from(
        std::io::ErrorKind::PermissionDenied,
    )))
    .to_string();
    assert!(denied.contains("writable by the user"), "{denied}");
    let damaged = JournalError::from(sled::Error::Corruption { at: None, bt: () }).to_string();
    assert!(damaged.contains("rebuild-journal"), "{damaged}");
}

#[tokio::test]
async fn maintenance_lock_refuses_a_journal_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(dir.path()).expect("open");
    let err = lock_for_maintenance(dir.path()).expect_err("a daemon holds it");
    assert!(matches!(err, JournalError::InUse { .. }), "{err}");
    drop(journal);
    let mut free = None;
    for _ in 0..100 {
        // sled releases its lock from a background thread after the handle is dropped.
        match lock_for_maintenance(dir.path()) {
            Ok(l) => {
                free = Some(l);
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    assert!(free.is_some(), "the lock was never released");
}

fn uploaded() -> ObjectEvent {
    ObjectEvent::Uploaded {
        attempts: 1,
        source_etag: "e".into(),
        source_version: None,
        ciphertext_sha256: "c".into(),
        dest_etag: "d".into(),
    }
}

fn verified_etag(source_etag: &str) -> ObjectEvent {
    ObjectEvent::Verified {
        attempts: 1,
        size: 10,
        source_etag: source_etag.into(),
        source_version: None,
        ciphertext_sha256: Some("c".into()),
        dest_etag: "d".into(),
        envelope_version: None,
    }
}

fn verified() -> ObjectEvent {
    verified_etag("e")
}

fn failed() -> ObjectEvent {
    ObjectEvent::Failed {
        attempts: 1,
        reason: "denied".into(),
        code: "S3.AccessDenied".into(),
    }
}

fn rec(state: ObjectState) -> ObjectRecord {
    ObjectRecord {
        state,
        size: 10,
        source_etag: "e".into(),
        source_version: None,
        category: Some("db".into()),
        dest_bucket: Some("b".into()),
        dest_key: Some("k".into()),
        attempts: 0,
        reason: None,
        ciphertext_sha256: None,
        dest_etag: None,
        updated_at_ms: 0,
        retry_at_ms: None,
        rule: None,
        code: None,
        envelope_version: None,
        upload_id: None,
    }
}

/// Opens a journal this process just closed. sled releases its file lock from a background
/// thread after the handle is dropped, so an in-process reopen can briefly see it held (a
/// restarted daemon is a new process and never does).
fn reopen(path: &Path) -> Result<Journal, JournalError> {
    for _ in 0..100 {
        match Journal::open(path) {
            Err(JournalError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            other => return other,
        }
    }
    Journal::open(path)
}

fn verified_draft(id: JobId, key: &str) -> AuditDraft {
    AuditDraft {
        job_id: id,
        kind: "object_verified",
        source_key: key.to_owned(),
        ..AuditDraft::default()
    }
}

/// Workers finishing together share one transaction and one flush; each still gets its
/// own answer, a bad record fails only its own object, and the chain, counts and pending
/// index come out as if they had settled one by one.
#[tokio::test(flavor = "current_thread")]
async fn a_settlement_abandoned_before_its_commit_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let j = std::sync::Arc::new(Journal::open(dir.path()).unwrap());
    let id = j.create_job("src", "").await.unwrap().id;
    j.record_page(
        id,
        vec![
            ("left".into(), rec(ObjectState::Uploaded)),
            ("kept".into(), rec(ObjectState::Uploaded)),
        ],
        None,
    )
    .await
    .unwrap();
    // The writer is busy; a worker queues "left" behind it and is aborted while it waits.
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let busy = {
        let j = j.clone();
        tokio::spawn(async move {
            j.writer
                .write(move |_| {
                    let _ = gate.recv();
                    Ok(())
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    let worker = {
        let j = j.clone();
        tokio::spawn(async move {
            j.settle(id, "left", verified(), verified_draft(id, "left"))
                .await
        })
    };
    // Current-thread runtime: one yield runs the worker up to its wait for the answer.
    tokio::task::yield_now().await;
    worker.abort();
    assert!(worker.await.unwrap_err().is_cancelled());
    release.send(()).unwrap();
    busy.await.unwrap().unwrap();
    // The next commit drains the queue: only the live settlement is written.
    let kept = j
        .settle(id, "kept", verified(), verified_draft(id, "kept"))
        .await
        .unwrap();
    assert_eq!(kept.state, ObjectState::Verified);
    let left = j.get_object(id, "left").unwrap().unwrap();
    assert_eq!(
        left.state,
        ObjectState::Uploaded,
        "an abandoned attempt was recorded"
    );
    let verified: Vec<String> = j
        .iter_audit(Some(id))
        .map(Result::unwrap)
        .filter(|e| e.kind == "object_verified")
        .map(|e| e.source_key)
        .collect();
    assert_eq!(verified, ["kept"]);
    assert_eq!(j.counts(id).get(ObjectState::Verified), 1);
}

#[tokio::test]
async fn settlements_that_arrive_together_share_one_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let opts = OpenOptions {
        commit_window: std::time::Duration::from_millis(50),
        ..OpenOptions::default()
    };
    let j = std::sync::Arc::new(Journal::open_with(dir.path(), opts).unwrap());
    let id = j.create_job("src", "").await.unwrap().id;
    let keys: Vec<String> = (0..40).map(|i| format!("k{i:02}")).collect();
    j.record_page(
        id,
        keys.iter()
            .map(|k| (k.clone(), rec(ObjectState::Uploaded)))
            .collect(),
        None,
    )
    .await
    .unwrap();
    j.flush().await.unwrap();
    let before = j.state.durable_gen.load(Ordering::SeqCst);
    // Each worker settles its own key; "k00" twice (the second sees the first's result,
    // in the same batch or a later one, and is refused); "gone" has no record.
    let mut work: Vec<String> = keys.clone();
    work.push("k00".into());
    work.push("gone".into());
    let tasks: Vec<_> = work
        .into_iter()
        .map(|k| {
            let j = j.clone();
            tokio::spawn(async move {
                let r = j.settle(id, &k, verified(), verified_draft(id, &k)).await;
                (k, r)
            })
        })
        .collect();
    let (mut ok, mut twice) = (0, 0);
    for t in tasks {
        let (k, r) = t.await.unwrap();
        match r {
            Ok(r) => {
                assert_eq!(r.state, ObjectState::Verified, "{k}");
                ok += 1;
            }
            Err(JournalError::IllegalTransition { key, .. }) => {
                assert_eq!((k.as_str(), key.as_str()), ("k00", "k00"));
                twice += 1;
            }
            Err(e) => {
                assert_eq!(k, "gone");
                assert!(matches!(e, JournalError::Corrupt { .. }), "{e}");
            }
        }
    }
    assert_eq!((ok, twice), (40, 1));
    let flushes = j.state.durable_gen.load(Ordering::SeqCst) - before;
    assert!(flushes <= 2, "{flushes} flushes for 42 settlements");
    assert_eq!(j.get_object(id, "k00").unwrap().unwrap().attempts, 1);
    assert_eq!(j.get_object(id, "k01").unwrap().unwrap().attempts, 1);
    let c = j.counts(id);
    assert_eq!((c.get(ObjectState::Verified), c.pending()), (40, 0));
    assert_eq!(j.pending_objects(id).count(), 0);
    let chain = j.verify_audit_chain().unwrap();
    assert!(chain.broken.is_none(), "{:?}", chain.broken);
    assert_eq!(chain.events, 40);
    drop(j);
    let j = reopen(dir.path()).unwrap();
    assert_eq!(j.counts(id).get(ObjectState::Verified), 40);
}

/// The counts a restart starts from are the stored ones plus the pending index, and they
/// equal a recount of every record, through every kind of write and through an upgrade
/// of a journal from before the `counts` tree.
#[tokio::test]
async fn stored_counts_equal_a_full_recount_after_reopen_and_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let with_cat = |state, cat: &str, size| ObjectRecord {
        category: Some(cat.into()),
        size,
        ..rec(state)
    };
    let (id, before) = {
        let j = Journal::open(dir.path()).unwrap();
        let id = j.create_job("src", "").await.unwrap().id;
        j.create_job("src", "").await.unwrap();
        j.record_page(
            id,
            vec![
                ("a".into(), with_cat(ObjectState::Discovered, "db", 10)),
                ("b".into(), with_cat(ObjectState::Discovered, "db", 20)),
                ("c".into(), rec(ObjectState::Unclassified)),
                ("d".into(), with_cat(ObjectState::Discovered, "tls", 40)),
            ],
            None,
        )
        .await
        .unwrap();
        j.transition(id, "a", uploaded(), None).await.unwrap();
        j.settle(id, "a", verified(), AuditDraft::default())
            .await
            .unwrap();
        j.settle(id, "b", failed(), AuditDraft::default())
            .await
            .unwrap();
        // A retry of a failed object, and a verified one whose source changed.
        j.transition(id, "b", ObjectEvent::Requeued, None)
            .await
            .unwrap();
        j.settle(id, "d", verified_etag("old"), AuditDraft::default())
            .await
            .unwrap();
        j.record_page_audited(
            id,
            vec![(
                "d".into(),
                ObjectRecord {
                    source_etag: "new".into(),
                    size: 44,
                    ..with_cat(ObjectState::Discovered, "tls", 44)
                },
            )],
            None,
            PagePass {
                requeue_changed: true,
                ..PagePass::default()
            },
            Box::new(|_, _| None),
            None,
        )
        .await
        .unwrap();
        j.flush().await.unwrap();
        let (_, recount) = j.state.scan_counts().unwrap();
        assert_eq!(j.counts(id), recount[&id]);
        (id, j.counts(id))
    };
    assert_eq!(before.get(ObjectState::Verified), 1);
    assert_eq!(before.pending(), 2);
    let j = reopen(dir.path()).unwrap();
    assert_eq!(j.counts(id), before, "reopened from the stored counts");
    // A journal from before the counts tree (schema 1) is recounted once and upgraded.
    j.state.counts_tree.clear().unwrap();
    j.state
        .meta
        .insert(META_SCHEMA, &1u64.to_be_bytes())
        .unwrap();
    j.state.db.flush().unwrap();
    drop(j);
    let j = reopen(dir.path()).unwrap();
    assert_eq!(j.counts(id), before, "recounted by the upgrade");
    let schema = j.state.meta.get(META_SCHEMA).unwrap().unwrap();
    assert_eq!(schema.as_ref(), SCHEMA_VERSION.to_be_bytes());
    assert!(j.state.counts_tree.get(job_key(id)).unwrap().is_some());
}

#[tokio::test]
async fn the_pending_index_follows_every_transition_and_is_rebuilt_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    let keys =
        |j: &Journal, id| -> Vec<String> { j.pending_objects(id).map(|r| r.unwrap().0).collect() };
    {
        let j = Journal::open(dir.path()).unwrap();
        id = j.create_job("src", "").await.unwrap().id;
        let other = j.create_job("src", "").await.unwrap().id;
        j.record_page(
            id,
            vec![
                ("a".into(), rec(ObjectState::Discovered)),
                ("b".into(), rec(ObjectState::Discovered)),
                ("c".into(), rec(ObjectState::Unclassified)),
            ],
            None,
        )
        .await
        .unwrap();
        j.record_page(
            other,
            vec![("a".into(), rec(ObjectState::Discovered))],
            None,
        )
        .await
        .unwrap();
        assert_eq!(keys(&j, id), ["a", "b"]);
        // Uploaded is still pending; verified and failed are not; a retry brings it back.
        j.transition(id, "a", uploaded(), None).await.unwrap();
        assert_eq!(keys(&j, id), ["a", "b"]);
        j.transition(id, "a", verified(), None).await.unwrap();
        j.transition(id, "b", failed(), None).await.unwrap();
        assert!(keys(&j, id).is_empty());
        j.transition(id, "b", ObjectEvent::Requeued, None)
            .await
            .unwrap();
        assert_eq!(keys(&j, id), ["b"]);
        assert_eq!(keys(&j, other), ["a"]);
        // A journal written before the index existed has none.
        j.state.pending.clear().unwrap();
        j.flush().await.unwrap();
    }
    let j = reopen(dir.path()).unwrap();
    assert_eq!(keys(&j, id), ["b"]);
    assert_eq!(keys(&j, 2), ["a"]);
}

#[tokio::test]
async fn counts_and_chain_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let j = Journal::open(dir.path()).unwrap();
        assert!(!j.recovered());
        id = j.create_job("src", "").await.unwrap().id;
        let pending = j
            .record_page(
                id,
                vec![
                    ("a".into(), rec(ObjectState::Discovered)),
                    ("b".into(), rec(ObjectState::Unclassified)),
                ],
                Some("tok".into()),
            )
            .await
            .unwrap();
        assert_eq!(pending.len(), 1);
        // Re-listing the same page changes nothing.
        let again = j
            .record_page(id, vec![("a".into(), rec(ObjectState::Discovered))], None)
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        j.transition(
            id,
            "a",
            verified(),
            Some(AuditDraft {
                job_id: id,
                kind: "object_verified",
                ..Default::default()
            }),
        )
        .await
        .unwrap();
        j.append_audit(AuditDraft {
            job_id: id,
            kind: "job_done",
            ..Default::default()
        })
        .await
        .unwrap();
        j.flush().await.unwrap();
    }
    let j = reopen(dir.path()).unwrap();
    assert!(j.recovered());
    let c = j.counts(id);
    assert_eq!(c.get(ObjectState::Verified), 1);
    assert_eq!(c.get(ObjectState::Unclassified), 1);
    assert_eq!(c.verified_bytes, 10);
    let db = &c.per_category["db"];
    assert_eq!((db.get(ObjectState::Verified), db.verified_bytes), (1, 10));
    assert!(j.get_job(id).unwrap().listing_complete);
    let r = j.verify_audit_chain().unwrap();
    assert_eq!((r.events, r.broken), (2, None));
    let next = j
        .append_audit(AuditDraft {
            job_id: id,
            kind: "x",
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next.seq, 3);
    let r = j.verify_audit_chain().unwrap();
    assert_eq!((r.events, r.broken), (3, None));
}

#[test]
fn second_open_names_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let _j = Journal::open(dir.path()).unwrap();
    let err = Journal::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");
}

#[tokio::test]
async fn corrupt_record_is_named_not_ignored() {
    // (damaged record, also listed as pending?)
    for pending in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let id;
        {
            let j = Journal::open(dir.path()).unwrap();
            id = j.create_job("src", "").await.unwrap().id;
            j.state
                .objects
                .insert(object_key(id, "bad"), vec![1u8, b'x'])
                .unwrap();
            if pending {
                j.state.pending.insert(object_key(id, "bad"), &[]).unwrap();
            }
            j.state.db.flush().unwrap();
        }
        if pending {
            // A pending record is read at open (a resume needs it): the open stops.
            let err = reopen(dir.path()).unwrap_err();
            assert!(err.to_string().contains("/bad"), "{err}");
            continue;
        }
        // A settled one is not read at open (that took seconds at a million objects);
        // whoever reads it gets its name.
        let j = reopen(dir.path()).unwrap();
        let err = j.get_object(id, "bad").unwrap_err();
        assert!(err.to_string().contains("/bad"), "{err}");
        let err = j.iter_objects(id, None).find_map(Result::err).unwrap();
        assert!(err.to_string().contains("/bad"), "{err}");
    }
}

#[tokio::test]
async fn decommission_state_is_typed_and_a_schema_2_journal_derives_it_from_its_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let j = Journal::open(dir.path()).unwrap();
        id = j.create_job("src", "").await.unwrap().id;
        assert_eq!(j.decommission(id).unwrap(), DecommissionState::default());
        let lockdown = async |policy: Option<&str>| {
            let detail = format!(
                "token_id=t bucket=src previous_policy={}",
                policy.unwrap_or("none")
            );
            let previous = policy.map(str::to_owned);
            j.record_decommission(
                id,
                move |s| {
                    s.lockdown = Some(Lockdown {
                        previous_policy: previous,
                    })
                },
                AuditDraft {
                    job_id: id,
                    kind: "decommission_lockdown",
                    outcome: "requested",
                    detail,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
        };
        let s = lockdown(Some("{\"Statement\":[]}")).await;
        assert_eq!(
            s.lockdown.unwrap().previous_policy.as_deref(),
            Some("{\"Statement\":[]}")
        );
        // The state and its audit event are one write: the event is in the chain.
        let last = j.iter_audit(Some(id)).last().unwrap().unwrap();
        assert_eq!(
            (last.kind.as_str(), last.outcome.as_str()),
            ("decommission_lockdown", "requested")
        );
        j.record_decommission(
            id,
            |s| s.archived = true,
            AuditDraft {
                job_id: id,
                kind: "decommission_archive",
                outcome: "ok",
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(j.verify_audit_chain().unwrap().broken.is_none());
        // A journal of today's layout minus the tree: version 2, state only in the audit text.
        j.state.decommissions.clear().unwrap();
        j.state
            .meta
            .insert(META_SCHEMA, &2u64.to_be_bytes())
            .unwrap();
        j.state.db.flush().unwrap();
    }
    let j = reopen(dir.path()).unwrap();
    let s = j.decommission(id).unwrap();
    assert_eq!(
        s,
        DecommissionState {
            lockdown: Some(Lockdown {
                previous_policy: Some("{\"Statement\":[]}".into())
            }),
            archived: true,
        },
        "derived from the audit trail by the upgrade"
    );
    let schema = j.state.meta.get(META_SCHEMA).unwrap().unwrap();
    assert_eq!(schema.as_ref(), SCHEMA_VERSION.to_be_bytes());
}
