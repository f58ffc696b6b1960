//! Turns: how several threads share one [`Embedder`](crate::Embedder)'s thread pool.
//!
//! Every piece of work a call puts on the pool (a chunk of tokenization, or some steps of a
//! forward) runs while the caller holds the pool's one [`Turn`]. The turn is taken on the
//! caller's own thread, *outside* the pool, so at any moment the pool holds the work of one
//! caller only. That is what makes the forward's spinning workers (`with_workers_awake` in
//! `model/parallel.rs`, which poll rayon's queues with `rayon::yield_now`) safe: there is no
//! foreign work in the queues for them to pick up, so a short call can never end up waiting
//! inside someone else's long forward.
//!
//! A forward is a sequence of steps (the embeddings, then per layer QKV, attention, output
//! projection, LayerNorm, FFN up, FFN down, LayerNorm), and the holder checks between steps
//! whether it should hand the turn over ([`Turn::should_yield`]). The next holder is chosen
//! among the waiters by the least remaining work (tokens still to run in the call), so a
//! query arriving during a 100,000-text call waits for at most one step of it, then runs its
//! whole forward; a waiter that has waited longer than [`STARVATION`] goes first whatever its
//! size (oldest first), and a holder hands over to an equal or larger waiter only after
//! [`QUANTUM`], so big calls still share the pool fairly among themselves.
//!
//! No deadlock: a caller holds at most one turn, never waits for anything while holding it
//! (a forward step only computes), and releases it when its work returns, errs or panics
//! (`Drop`). Waiting callers are blocked on a condition variable outside the pool, so they
//! take no pool thread. Results do not depend on the interleaving: each call has its own
//! scratch, and every step computes the same values whoever ran before it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A holder keeps the turn at least this long before handing it to a waiter whose call is
/// as large as its own or larger (between equals: round robin with this slice).
pub const QUANTUM: Duration = Duration::from_millis(20);

/// A waiter that has waited this long goes before any smaller newcomer (no starvation).
pub const STARVATION: Duration = Duration::from_millis(200);

/// The turn-taking state of one pool.
#[derive(Debug, Default)]
pub(crate) struct Turns {
    state: Mutex<State>,
    cv: Condvar,
    /// Waiters (read without the lock by the holder's cheap check).
    waiting: AtomicUsize,
}

#[derive(Debug, Default)]
struct State {
    busy: bool,
    next_ticket: u64,
    waiters: Vec<Waiter>,
}

#[derive(Debug, Clone, Copy)]
struct Waiter {
    ticket: u64,
    /// Remaining work of the waiter's call (tokens): less goes first.
    work: usize,
    since: Instant,
}

impl State {
    /// The waiter that should get the turn next: the oldest starved one, else the one with
    /// the least work (the oldest among equals).
    fn chosen(&self, now: Instant) -> Option<Waiter> {
        let starved = self
            .waiters
            .iter()
            .filter(|w| now.duration_since(w.since) >= STARVATION)
            .min_by_key(|w| w.ticket);
        starved
            .or_else(|| self.waiters.iter().min_by_key(|w| (w.work, w.ticket)))
            .copied()
    }
}

impl Turns {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked (every update is one step).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the turn. `work`: the caller's remaining work in tokens (its priority).
    pub(crate) fn take(&self, work: usize) -> Turn<'_> {
        let mut st = self.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.waiters.push(Waiter {
            ticket,
            work,
            since: Instant::now(),
        });
        self.waiting.fetch_add(1, Ordering::SeqCst);
        loop {
            if !st.busy
                && st
                    .chosen(Instant::now())
                    .is_some_and(|w| w.ticket == ticket)
            {
                break;
            }
            // A timed wait: a waiter can become "starved" (and so first) with no event.
            st = match self.cv.wait_timeout(st, STARVATION / 4) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        st.waiters.retain(|w| w.ticket != ticket);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        st.busy = true;
        drop(st);
        Turn {
            turns: self,
            work,
            since: Instant::now(),
        }
    }

    fn release(&self) {
        let mut st = self.lock();
        st.busy = false;
        drop(st);
        self.cv.notify_all();
    }
}

/// The right to put work on the pool; released when dropped.
#[derive(Debug)]
pub(crate) struct Turn<'a> {
    turns: &'a Turns,
    work: usize,
    since: Instant,
}

impl Turn<'_> {
    /// Whether the holder should stop at this step boundary and take a new turn: some waiter
    /// has less work, has starved, or the holder's quantum is over. Cheap (one atomic load)
    /// when nobody waits.
    pub(crate) fn should_yield(&self) -> bool {
        if self.turns.waiting.load(Ordering::SeqCst) == 0 {
            return false;
        }
        let now = Instant::now();
        let held = now.duration_since(self.since);
        let st = self.turns.lock();
        st.chosen(now).is_some_and(|w| {
            w.work < self.work || now.duration_since(w.since) >= STARVATION || held >= QUANTUM
        })
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.turns.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn one_holder_at_a_time_and_everyone_gets_a_turn() {
        let turns = Arc::new(Turns::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (turns, inside, done) = (turns.clone(), inside.clone(), done.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _t = turns.take(i * 10);
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                        std::thread::sleep(Duration::from_micros(50));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(done.load(Ordering::SeqCst), 8);
    }

    #[test]
    fn smaller_waiter_goes_first_and_holder_yields_to_it() {
        let turns = Turns::default();
        let big = turns.take(1_000_000);
        assert!(!big.should_yield(), "nobody waits");
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let t = turns.take(10);
                // The big call is waiting now, but it has more work: no yield.
                while turns.waiting.load(Ordering::SeqCst) == 0 {
                    std::thread::yield_now();
                }
                let y = t.should_yield();
                drop(t);
                y
            });
            while turns.waiting.load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            assert!(big.should_yield(), "a smaller call waits");
            drop(big);
            let _again = turns.take(1_000_000);
            // Only got here after the small call released.
            assert!(!h.join().unwrap(), "the small call kept its turn");
        });
    }

    #[test]
    fn a_holder_yields_to_an_equal_waiter_after_its_quantum() {
        let turns = Turns::default();
        let a = turns.take(500);
        std::thread::scope(|s| {
            s.spawn(|| drop(turns.take(500)));
            while turns.waiting.load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            assert!(!a.should_yield(), "within the quantum");
            std::thread::sleep(QUANTUM + Duration::from_millis(2));
            assert!(a.should_yield(), "quantum over");
            drop(a);
        });
    }
}
