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
    /// A connection's deadline (`Ctx::set_deadline`): live while the slot's
    /// `deadline` equals `seq`, so a cleared one is dropped by compaction.
    Deadline {
        token: u64,
        seq: u16,
    },
    /// Send progress (see `Limits::send_ms`).
    Send,
    AcceptRetry,
    /// The end of a lingering close (see `Limits::linger_ms`).
    Linger,
    ShutdownDeadline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerEntry {
    pub at_ms: u64,
    pub slot: u32,
    pub gen: u32,
    pub kind: TimerKind,
}

/// Below this many entries the heap is never compacted.
const COMPACT_MIN: usize = 4096;

pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<TimerEntry>>,
    /// Compact when the heap grows past this (see [`Timers::maybe_compact`]).
    compact_at: usize,
    /// During a pass over the due timers ([`Timers::start_pass`]): its time.
    pass: Option<u64>,
    /// Entries pushed during a pass that were already due at its time; they
    /// join the heap when it ends ([`Timers::end_pass`]).
    late: Vec<TimerEntry>,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            compact_at: COMPACT_MIN,
            pass: None,
            late: Vec::new(),
        }
    }
}

impl Timers {
    pub(crate) fn push(&mut self, e: TimerEntry) {
        match self.pass {
            Some(now_ms) if e.at_ms <= now_ms => self.late.push(e),
            _ => self.heap.push(Reverse(e)),
        }
    }

    /// Starts a pass over the timers due at `now_ms`: until
    /// [`Timers::end_pass`], an entry pushed already due waits for the next
    /// pass. So a timer callback that sets a zero-delay timer again (a
    /// handler yielding and continuing later) runs once per pass, and the
    /// loop goes on to its I/O between passes, instead of never leaving
    /// this one.
    pub(crate) fn start_pass(&mut self, now_ms: u64) {
        debug_assert!(self.pass.is_none(), "a timer pass inside a timer pass");
        self.pass = Some(now_ms);
    }

    /// Ends the pass: the entries deferred by it join the heap (due at
    /// once: the loop's next wait does not block).
    pub(crate) fn end_pass(&mut self) {
        self.pass = None;
        for e in self.late.drain(..) {
            self.heap.push(Reverse(e));
        }
    }

    /// Entries, live and stale.
    pub(crate) fn len(&self) -> usize {
        self.heap.len() + self.late.len()
    }

    /// Drops the entries `live` says are stale (a closed connection's idle,
    /// handshake or user timers would otherwise stay until their deadline:
    /// with churn and long timeouts, without bound) once the heap has
    /// doubled since the last compaction, and gives memory back. The
    /// threshold doubles with what stays, so the work is amortised O(1)
    /// per push even when every entry is live.
    pub(crate) fn maybe_compact(&mut self, live: impl Fn(&TimerEntry) -> bool) {
        if self.heap.len() < self.compact_at {
            // Entries that expired (a burst of connections' handshake
            // timers, 10 s after the burst) leave the heap's storage
            // resident; give most of it back once three quarters is unused.
            let cap = self.heap.capacity();
            if cap > COMPACT_MIN && self.heap.len() < cap / 4 {
                self.heap.shrink_to((self.heap.len() * 2).max(COMPACT_MIN));
            }
            return;
        }
        let kept: Vec<_> = std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .filter(|e| live(&e.0))
            .collect();
        self.heap = BinaryHeap::from(kept);
        self.heap.shrink_to(self.heap.len() * 2);
        self.compact_at = (self.heap.len() * 2).max(COMPACT_MIN);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at_ms: u64, slot: u32) -> TimerEntry {
        TimerEntry {
            at_ms,
            slot,
            gen: 0,
            kind: TimerKind::User(0),
        }
    }

    #[test]
    fn an_entry_pushed_due_during_a_pass_waits_for_the_next() {
        let mut t = Timers::default();
        t.push(entry(5, 1));
        t.start_pass(10);
        assert_eq!(t.pop_due(10).map(|e| e.slot), Some(1));
        t.push(entry(10, 2)); // due at the pass's time: deferred
        t.push(entry(11, 3)); // later: into the heap at once
        assert_eq!(t.pop_due(10).map(|e| e.slot), None);
        assert_eq!(t.len(), 2);
        t.end_pass();
        assert_eq!(t.pop_due(10).map(|e| e.slot), Some(2));
        assert_eq!(t.pop_due(11).map(|e| e.slot), Some(3));
    }

    #[test]
    fn storage_is_given_back_when_entries_expire() {
        let mut t = Timers::default();
        for i in 0..100_000u32 {
            t.push(entry(u64::from(i), i));
        }
        assert!(t.heap.capacity() >= 100_000);
        while t.pop_due(50_000 + 99_000).is_some() {}
        t.maybe_compact(|_| true);
        assert!(
            t.heap.capacity() <= 2 * COMPACT_MIN,
            "{}",
            t.heap.capacity()
        );
    }

    #[test]
    fn stale_entries_are_compacted_and_order_kept() {
        let mut t = Timers::default();
        for i in 0..100_000u32 {
            t.push(entry(1_000_000 + u64::from(i), i));
            // only slots below 10 stay live
            t.maybe_compact(|e| e.slot < 10);
        }
        assert!(t.len() < 2 * COMPACT_MIN, "{} entries", t.len());
        let mut last = 0;
        while let Some(e) = t.pop_due(u64::MAX) {
            assert!(e.at_ms >= last);
            last = e.at_ms;
        }
    }

    #[test]
    fn live_entries_are_never_dropped() {
        let mut t = Timers::default();
        for i in 0..50_000u32 {
            t.push(entry(u64::from(i), i));
            t.maybe_compact(|_| true);
        }
        assert_eq!(t.len(), 50_000);
    }
}
