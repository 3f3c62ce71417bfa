//! The daemon's worker slots, shared by every running job. When jobs compete, the one with the
//! highest priority gets the next free slot; jobs of equal priority are served in the order
//! they asked. A job's own limits (its concurrency cap, the adaptive limit) apply first.
//!
//! A job that finishes an object keeps its slot for its next object unless a job of the same
//! or higher priority is waiting, or its adaptive limit has fallen below the slots it holds
//! (see `Spare` in `running.rs`): otherwise a job running at its own cap would hand every
//! freed slot to whoever happens to be queued, whatever their priority, and a job whose limit
//! fell would sit on slots it cannot use.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

#[derive(Debug)]
struct State {
    free: usize,
    next_ticket: u64,
    /// Waiters by (negated priority, arrival): the first entry is served next.
    waiters: BTreeMap<(i64, u64), oneshot::Sender<Permit>>,
}

/// Worker slots with priority hand-off.
#[derive(Debug)]
pub struct Pool {
    state: Mutex<State>,
    size: usize,
}

/// One worker slot; returns itself to the pool (or hands itself to the next waiter) on drop.
#[derive(Debug)]
pub struct Permit {
    pool: Option<Arc<Pool>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            Pool::release(pool);
        }
    }
}

impl Pool {
    /// A pool of `size` slots (at least one).
    pub fn new(size: usize) -> Arc<Self> {
        let size = size.max(1);
        Arc::new(Self {
            state: Mutex::new(State {
                free: size,
                next_ticket: 0,
                waiters: BTreeMap::new(),
            }),
            size,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many worker slots there are.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The priority of the most important waiter, if any waits.
    pub fn best_waiting(&self) -> Option<i32> {
        self.lock()
            .waiters
            .first_key_value()
            .map(|((p, _), _)| i32::try_from(-p).unwrap_or(i32::MAX))
    }

    /// Slots in use now.
    pub fn in_use(&self) -> usize {
        self.size - self.lock().free
    }

    /// Waits for a slot. Cancel-safe: a slot granted to a dropped waiter goes to the next.
    pub async fn acquire(self: &Arc<Self>, priority: i32) -> Permit {
        let rx = {
            let mut st = self.lock();
            if st.free > 0 && st.waiters.is_empty() {
                st.free -= 1;
                return Permit {
                    pool: Some(Arc::clone(self)),
                };
            }
            let (tx, rx) = oneshot::channel();
            let ticket = st.next_ticket;
            st.next_ticket += 1;
            st.waiters.insert((-i64::from(priority), ticket), tx);
            rx
        };
        match rx.await {
            Ok(p) => p,
            // The pool never drops a waiter's sender without sending; unreachable in practice,
            // but a fresh wait is the safe answer.
            Err(_) => Box::pin(self.acquire(priority)).await,
        }
    }

    fn release(pool: Arc<Self>) {
        loop {
            let next = {
                let mut st = pool.lock();
                match st.waiters.pop_first() {
                    Some((_, tx)) => tx,
                    None => {
                        st.free += 1;
                        return;
                    }
                }
            };
            let permit = Permit {
                pool: Some(Arc::clone(&pool)),
            };
            match next.send(permit) {
                Ok(()) => return,
                // That waiter gave up: take the slot back (without recursing) and try the next.
                Err(mut p) => p.pool = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn higher_priority_is_served_first() {
        let pool = Pool::new(1);
        let held = pool.acquire(0).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, prio) in [("low", 1), ("high", 10), ("low2", 1)] {
            let pool = Arc::clone(&pool);
            let order = Arc::clone(&order);
            tasks.push(tokio::spawn(async move {
                let _p = pool.acquire(prio).await;
                order.lock().unwrap().push(name);
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["high", "low", "low2"]);
        assert_eq!(pool.in_use(), 0);
    }

    #[tokio::test]
    async fn an_abandoned_wait_does_not_leak_a_slot() {
        let pool = Pool::new(1);
        let held = pool.acquire(0).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(20), pool.acquire(5)).await;
        assert!(gave_up.is_err());
        drop(held);
        let again = tokio::time::timeout(Duration::from_millis(500), pool.acquire(0)).await;
        assert!(again.is_ok(), "the slot was lost with the abandoned waiter");
        drop(again);
        assert_eq!(pool.in_use(), 0);
    }
}
