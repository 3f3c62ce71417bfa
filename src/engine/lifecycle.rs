//! The job state machine: which operator action is allowed in which state, and what it does.
//! Pure; the engine asks it before touching the journal, so every refusal names the state and
//! every repeated action is a success that says so.
//!
//! ```text
//! pending ─┐
//!          ├─ pause ─▶ paused ─ resume ─▶ running (or pending, while its predecessor runs)
//! running ─┘                 ╲
//!   │ ╲─────────── cancel ────╲──────────▶ cancelled
//!   └─ (the job ends) ─▶ succeeded | completed_with_failures | failed ─ retry ─▶ running
//! ```

use crate::model::{JobId, JobState};

/// What an operator asks of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop starting objects, let those in flight finish.
    Pause,
    /// Continue a paused job.
    Resume,
    /// Stop for good.
    Cancel,
    /// Re-queue the failed objects of a finished job.
    Retry,
    /// Change priority or limits.
    Update,
    /// List the source again and migrate what is new or changed (a catch-up pass).
    Sync,
}

/// The answer to an action in a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Do it; the job moves to this state.
    Move(JobState),
    /// Nothing to change: the job is already where the action leads. Succeeds with this note.
    Already(String),
    /// Allowed without a state change (limits of an active job).
    Stay,
    /// Not possible in this state; the message names the state and what is possible.
    Refuse(String),
}

/// Decides `action` on job `id` in `state`.
pub fn decide(id: JobId, state: JobState, action: Action) -> Verdict {
    use JobState as S;
    match (action, state) {
        (Action::Pause, S::Running | S::Pending) => Verdict::Move(S::Paused),
        (Action::Pause, S::Paused) => Verdict::Already(format!("job {id} was already paused")),
        (Action::Pause, s) => Verdict::Refuse(format!(
            "job {id} is {s}; only a pending or running job can be paused"
        )),
        (Action::Resume, S::Paused) => Verdict::Move(S::Running),
        (Action::Resume, s @ (S::Running | S::Pending)) => {
            Verdict::Already(format!("job {id} is already {s}"))
        }
        (Action::Resume, S::Cancelled) => Verdict::Refuse(format!(
            "job {id} is cancelled; a cancelled job cannot be resumed, start a new one"
        )),
        (Action::Resume, s) => Verdict::Refuse(format!(
            "job {id} is {s}; only a paused job can be resumed (a finished job with failures can be retried)"
        )),
        (Action::Cancel, S::Cancelled) => {
            Verdict::Already(format!("job {id} was already cancelled"))
        }
        (Action::Cancel, s) if s.is_active() => Verdict::Move(S::Cancelled),
        (Action::Cancel, s) => Verdict::Refuse(format!(
            "job {id} already ended ({s}); there is nothing to cancel"
        )),
        (Action::Retry, S::CompletedWithFailures | S::Failed) => Verdict::Move(S::Running),
        (Action::Retry, S::Cancelled) => Verdict::Refuse(format!(
            "job {id} is cancelled, and a cancelled job stays stopped; start a new job (it adopts the copies this one made)"
        )),
        (Action::Retry, s) => Verdict::Refuse(format!(
            "job {id} is {s}; only a finished job with failures can be retried"
        )),
        (Action::Sync, S::Succeeded | S::CompletedWithFailures) => Verdict::Move(S::Running),
        (Action::Sync, s) => Verdict::Refuse(format!(
            "job {id} is {s}; a catch-up pass runs on a finished job"
        )),
        (Action::Update, s) if s.is_active() => Verdict::Stay,
        (Action::Update, s) => Verdict::Refuse(format!(
            "job {id} is {s}; only a pending, running or paused job can be changed"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [JobState; 7] = [
        JobState::Pending,
        JobState::Running,
        JobState::Paused,
        JobState::Cancelled,
        JobState::Succeeded,
        JobState::CompletedWithFailures,
        JobState::Failed,
    ];

    #[test]
    fn the_whole_table() {
        use JobState as S;
        use Verdict as V;
        for s in STATES {
            let pause = decide(1, s, Action::Pause);
            let resume = decide(1, s, Action::Resume);
            let cancel = decide(1, s, Action::Cancel);
            let retry = decide(1, s, Action::Retry);
            let update = decide(1, s, Action::Update);
            match s {
                S::Pending | S::Running => {
                    assert_eq!(pause, V::Move(S::Paused));
                    assert!(matches!(resume, V::Already(_)));
                }
                S::Paused => {
                    assert!(matches!(pause, V::Already(ref n) if n.contains("already paused")));
                    assert_eq!(resume, V::Move(S::Running));
                }
                _ => {
                    assert!(matches!(pause, V::Refuse(_)));
                    assert!(matches!(resume, V::Refuse(_)));
                }
            }
            assert_eq!(
                matches!(cancel, V::Move(S::Cancelled)),
                s.is_active(),
                "{s}"
            );
            assert_eq!(
                matches!(retry, V::Move(S::Running)),
                matches!(s, S::CompletedWithFailures | S::Failed),
                "{s}"
            );
            assert_eq!(matches!(update, V::Stay), s.is_active(), "{s}");
        }
        assert!(matches!(
            decide(1, S::Cancelled, Action::Cancel),
            V::Already(_)
        ));
    }

    #[test]
    fn every_refusal_names_the_state() {
        for s in STATES {
            for a in [
                Action::Pause,
                Action::Resume,
                Action::Cancel,
                Action::Retry,
                Action::Update,
                Action::Sync,
            ] {
                if let Verdict::Refuse(m) = decide(7, s, a) {
                    assert!(
                        m.contains(s.as_str()) && m.contains("job 7"),
                        "{a:?} {s}: {m}"
                    );
                }
            }
        }
    }
}
