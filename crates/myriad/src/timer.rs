//! Timers: one binary heap per loop.
//!
//! Idle timeouts are lazy: a connection has at most one idle entry; activity
//! only updates the connection's `last_active`, and when the entry comes due
//! it is either fired or pushed back to the real deadline. So a busy
//! connection costs one heap operation per idle period, not per message, and
//! the heap's storage is reused (no allocation in the steady state).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    Idle,
    Connect,
    Handshake,
    User(u64),
    AcceptRetry,
    ShutdownDeadline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerEntry {
    pub at_ms: u64,
    pub slot: u32,
    pub gen: u32,
    pub kind: TimerKind,
}

#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<TimerEntry>>,
}

impl Timers {
    pub(crate) fn push(&mut self, e: TimerEntry) {
        self.heap.push(Reverse(e));
    }

    pub(crate) fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|r| r.0.at_ms)
    }

    /// Pops the earliest entry if it is due at `now_ms`.
    pub(crate) fn pop_due(&mut self, now_ms: u64) -> Option<TimerEntry> {
        if self.heap.peek()?.0.at_ms <= now_ms {
            self.heap.pop().map(|r| r.0)
        } else {
            None
        }
    }
}
