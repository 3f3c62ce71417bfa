//! The one thread that writes to sled.
//!
//! Every change to the journal (records, audit events, jobs, decommission state) and every
//! flush runs here, in the order requested; async callers await the answer and never block a
//! runtime thread on sled's locks, transactions or fsync. Group commit is the loop itself:
//! take whatever is queued, run the plain writes in order, write every object's final state
//! in one transaction, then flush once for everyone who asked and answer them. Reads do not
//! come here: sled serves them from any thread without locks.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::commit::Settlement;
use super::error::{JournalError, StorageError};
use super::State;

/// The most requests one round takes: bounds how long the first of them waits for its answer.
const MAX_BATCH: usize = 4096;

/// A change for the writer to run, with its answer inside.
type Write = Box<dyn FnOnce(&State) + Send>;

enum Request {
    Write(Write),
    // Boxed: a settlement is large, and most requests are not one.
    Settle(Box<Settlement>),
    Flush(oneshot::Sender<Result<(), JournalError>>),
}

/// The handle the journal keeps: the queue to the writer thread, and the thread to join on
/// drop so that the database is closed (and its lock released) when the journal is.
pub(super) struct Writer {
    queue: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread over `state`. `commit_window`: a round that holds a final state
    /// starts at least this long after the previous one, so the workers finishing meanwhile
    /// share its transaction and flush.
    pub(super) fn start(state: Arc<State>, commit_window: Duration) -> Result<Self, JournalError> {
        let (queue, requests) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || run(&state, &requests, commit_window))
            .map_err(|source| JournalError::Io {
                path: std::path::PathBuf::from("journal-writer thread"),
                source,
            })?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Runs `change` on the writer thread and returns its result.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        change: impl FnOnce(&State) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let (answer, reply) = oneshot::channel();
        self.send(Request::Write(Box::new(move |state| {
            // The caller gave up waiting (its task was aborted): the change stands.
            let _ = answer.send(change(state));
        })))?;
        reply.await.map_err(|_| stopped())?
    }

    /// Queues an object's final state for the next group commit and waits until it is
    /// written and flushed.
    pub(super) async fn settle(
        &self,
        make: impl FnOnce(super::commit::Answer) -> Settlement,
    ) -> Result<crate::model::ObjectRecord, JournalError> {
        let (answer, reply) = oneshot::channel();
        self.send(Request::Settle(Box::new(make(answer))))?;
        reply.await.map_err(|_| stopped())?
    }

    /// Waits until every write requested before this call is durable.
    pub(super) async fn flush(&self) -> Result<(), JournalError> {
        let (answer, reply) = oneshot::channel();
        self.send(Request::Flush(answer))?;
        reply.await.map_err(|_| stopped())?
    }

    fn send(&self, request: Request) -> Result<(), JournalError> {
        self.queue
            .as_ref()
            .ok_or_else(stopped)?
            .send(request)
            .map_err(|_| stopped())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has answered what was already queued.
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread died (a panic while writing): nothing more can be recorded.
fn stopped() -> JournalError {
    JournalError::Storage(StorageError::other(
        "the journal's writer thread stopped; restart dualseald (its jobs resume from the journal)"
            .into(),
    ))
}

fn run(state: &State, requests: &Receiver<Request>, commit_window: Duration) {
    let mut last_commit = Instant::now();
    let mut batch = Vec::new();
    while let Ok(first) = requests.recv() {
        if matches!(first, Request::Settle(_)) {
            if let Some(wait) = commit_window.checked_sub(last_commit.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        round(state, &mut batch, &mut last_commit);
    }
}

/// One round: plain writes in order, then every settlement in one transaction, then one flush
/// if anyone needs one.
fn round(state: &State, batch: &mut Vec<Request>, last_commit: &mut Instant) {
    let mut settlements = Vec::new();
    let mut flushes = Vec::new();
    for request in batch.drain(..) {
        match request {
            Request::Write(change) => change(state),
            Request::Settle(s) => settlements.push(*s),
            Request::Flush(answer) => flushes.push(answer),
        }
    }
    if settlements.is_empty() && flushes.is_empty() {
        return;
    }
    let written = state.commit_settlements(settlements);
    let flushed = state.flush();
    if !written.is_empty() {
        *last_commit = Instant::now();
    }
    for (answer, result) in written {
        let result = match (&flushed, result) {
            (Err(e), Ok(_)) => Err(e.shared()),
            (_, r) => r,
        };
        // A receiver dropped after its settlement was written: the record stands.
        let _ = answer.send(result);
    }
    for answer in flushes {
        let _ = answer.send(match &flushed {
            Ok(()) => Ok(()),
            Err(e) => Err(e.shared()),
        });
    }
}
