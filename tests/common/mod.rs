//! Helpers shared by the integration tests (`mod common;`).
//!
//! [`Gate`] is a barrier that cannot strand its peers: `std::sync::Barrier`
//! waits forever for a thread that failed an assert before reaching it, so
//! one failure in a racing test hangs the run. A gate is poisoned when a
//! thread holding its [`Guard`] panics, and then every waiter (and every
//! later `wait`) panics too; a wait that lasts longer than [`Gate::LIMIT`]
//! poisons it as well.

#![allow(dead_code)] // each test file uses a part

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

struct State {
    arrived: usize,
    generation: u64,
    poisoned: bool,
}

pub struct Gate {
    n: usize,
    state: Mutex<State>,
    turned: Condvar,
    /// `state.poisoned`, readable without the lock (spin loops).
    failed: AtomicBool,
}

impl Gate {
    /// The longest any wait may last: far above any round of any test
    /// (Miri and the sanitizers included), far below CI's step timeouts.
    pub const LIMIT: Duration = Duration::from_secs(120);

    pub fn new(n: usize) -> Arc<Gate> {
        Arc::new(Gate {
            n,
            state: Mutex::new(State { arrived: 0, generation: 0, poisoned: false }),
            turned: Condvar::new(),
            failed: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is the poisoning we handle ourselves.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `n` threads have called `wait`; panics when the gate
    /// is (or becomes) poisoned, or after [`Gate::LIMIT`].
    pub fn wait(&self) {
        let deadline = Instant::now() + Self::LIMIT;
        let mut s = self.lock();
        if s.poisoned {
            drop(s);
            panic!("a peer thread failed (gate poisoned)");
        }
        s.arrived += 1;
        if s.arrived == self.n {
            s.arrived = 0;
            s.generation += 1;
            self.turned.notify_all();
            return;
        }
        let generation = s.generation;
        loop {
            let now = Instant::now();
            if now >= deadline {
                s.poisoned = true;
                self.failed.store(true, Ordering::SeqCst);
                self.turned.notify_all();
                drop(s);
                panic!("a peer thread never arrived within {:?} (gate poisoned)", Self::LIMIT);
            }
            s = self.turned.wait_timeout(s, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
            if s.generation != generation {
                return;
            }
            if s.poisoned {
                drop(s);
                panic!("a peer thread failed (gate poisoned)");
            }
        }
    }

    /// Wakes every waiter with a panic, now and for every later `wait`.
    pub fn poison(&self) {
        self.lock().poisoned = true;
        self.failed.store(true, Ordering::SeqCst);
        self.turned.notify_all();
    }

    pub fn is_poisoned(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Panics when the gate is poisoned: for spin loops beside the gate.
    pub fn check(&self) {
        assert!(!self.is_poisoned(), "a peer thread failed (gate poisoned)");
    }

    /// Poisons the gate if dropped while its thread panics: take one at the
    /// top of every thread (the test's own included) that waits on it.
    pub fn guard(self: &Arc<Self>) -> Guard {
        Guard(self.clone())
    }
}

pub struct Guard(Arc<Gate>);

impl Drop for Guard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poison();
        }
    }
}
