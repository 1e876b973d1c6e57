//! Per-loop counters, summed on demand.
//!
//! Each loop owns one [`LoopCounters`] and is its only writer, so an
//! increment is a relaxed load and store (a plain `mov` on x86), not a locked
//! read-modify-write; readers on other threads sum relaxed loads. A reader
//! may see a snapshot that is a few events old, never a torn value.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// The live counters of one loop (single writer: the loop thread).
        #[derive(Debug, Default)]
        pub struct LoopCounters {
            $( $(#[$doc])* pub(crate) $name: AtomicU64, )*
        }

        /// A snapshot of counters, for one loop or summed over many.
        ///
        /// ```
        /// let a = myriad::Stats { accepted: 2, ..Default::default() };
        /// let b = myriad::Stats { accepted: 3, ..Default::default() };
        /// assert_eq!((a + b).accepted, 5);
        /// ```
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Stats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl LoopCounters {
            /// Reads every counter.
            pub fn snapshot(&self) -> Stats {
                Stats { $( $name: self.$name.load(Relaxed), )* }
            }
        }

        impl std::ops::Add for Stats {
            type Output = Stats;
            fn add(self, o: Stats) -> Stats {
                Stats { $( $name: self.$name + o.$name, )* }
            }
        }

        impl Stats {
            /// `(name, value)` for every counter, in declaration order (for
            /// metrics exporters).
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($name), self.$name), )* ]
            }
        }
    };
}

counters! {
    /// Connections accepted from listeners.
    accepted,
    /// Outbound connections established.
    connected,
    /// Connections closed (for any reason, after they were open).
    closed,
    /// Connections refused because a connection limit was reached.
    refused,
    /// Of those, refused because their source address had its limit of
    /// connections (`Service::max_connections_per_addr`).
    refused_per_addr,
    /// Of those, accepted and closed at once because the process was out
    /// of descriptors (EMFILE/ENFILE): the loop's reserve descriptor lets
    /// it take them off the backlog instead of leaving them hanging.
    refused_fd_limit,
    /// Connections open right now (gauge).
    open,
    /// Bytes received.
    bytes_in,
    /// Bytes sent.
    bytes_out,
    /// Receive completions (reads).
    reads,
    /// Send completions (writes).
    writes,
    /// Connections closed by a reset or another socket error.
    err_reset,
    /// Connections closed by the idle timeout.
    err_idle_timeout,
    /// Outbound connects that failed.
    err_connect,
    /// Outbound connects that timed out.
    err_connect_timeout,
    /// Connections closed because the peer did not read (hard write limit).
    err_slow_reader,
    /// Connections closed because unconsumed input exceeded its limit.
    err_input_overflow,
    /// `accept` failures (EMFILE, ENFILE, ENOMEM, ...); accepting pauses.
    err_accept,
    /// Times the provided-buffer ring ran dry (io_uring `ENOBUFS`).
    ring_exhausted,
    /// Bytes that `Ctx::write_from_input` queued as slices of the receive
    /// buffer (io_uring: sent without a copy) rather than as copies.
    bytes_lent,
    /// Times reading was paused by back-pressure (high-water mark).
    backpressure_pauses,
    /// Connections closed because their filter (TLS) failed.
    err_filter,
    /// Connections whose filter handshake timed out.
    err_handshake_timeout,
    /// Connections closed because a handler call panicked (the loop goes
    /// on serving the others).
    err_handler_panic,
    /// Connections closed because their queued bytes made no progress for
    /// the send timeout.
    err_send_timeout,
    /// Connections closed (largest queues first) because the loop's queued
    /// bytes passed its cap.
    err_queue_cap,
    /// Timer entries held by the loop (gauge: live ones, and stale ones of
    /// closed connections until the heap is compacted).
    timers,
    /// Bytes queued for sending in all the loop's write queues (gauge, as
    /// of the loop's last turn; the sum the loop's cap is checked on).
    queued_bytes,
}

impl LoopCounters {
    #[inline]
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }
    #[inline]
    pub(crate) fn set(c: &AtomicU64, n: u64) {
        c.store(n, Relaxed);
    }
    #[inline]
    pub(crate) fn sub(c: &AtomicU64, n: u64) {
        c.store(c.load(Relaxed).wrapping_sub(n), Relaxed);
    }
}
