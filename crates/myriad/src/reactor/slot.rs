//! The slab of connection slots: the slot itself, its lifecycle (phase,
//! close request, operations in flight) and flags, and allocation, lookup
//! by token or id, and the dirty list.

use super::*;

/// Slots a loop may have: a token keeps 24 bits for the slot and 32 for the
/// generation (the loop index or the io_uring operation kind take the top
/// byte), so a slot must be reused four billion times before a stale
/// token (a long user timer, an id kept by a room) could match again.
pub(super) const MAX_SLOTS: usize = 1 << 24;
/// The service index of an outbound connection (`LoopCx::connect`): it
/// belongs to no service.
pub(crate) const NO_SERVICE: u16 = u16::MAX;

// Connection flags: what the handler asked for and what the engine
// noted. Where a connection is in its life is its `Phase`, whether and how
// it is closing its `Closing`, what the backend has in flight for it its
// `ops` (see `Conn::to`, `Conn::close_as`, `Conn::begin`).
pub(super) const NEEDS_REG: u16 = 1;
pub(super) const REGISTERED: u16 = 1 << 1;
pub(super) const PAUSE_USER: u16 = 1 << 2;
pub(super) const PAUSE_BP: u16 = 1 << 3;
/// The peer ended its stream (or the receive failed).
pub(super) const EOF: u16 = 1 << 4;
/// The handler has not been told of the peer's end of stream yet.
pub(super) const EOF_PENDING: u16 = 1 << 5;
/// The handler asked to shut down the sending side
/// ([`Ctx::shutdown_write`]).
pub(super) const SHUT_WR_REQ: u16 = 1 << 6;
/// The sending side is shut down (the handler's request, or a lingering
/// close).
pub(super) const SHUT_WR_DONE: u16 = 1 << 7;
pub(super) const DIRTY: u16 = 1 << 8;
pub(super) const REDELIVER: u16 = 1 << 9;
pub(super) const LINGER0: u16 = 1 << 10;
pub(super) const COUNTED: u16 = 1 << 11;
pub(super) const IDLE_ARMED: u16 = 1 << 12;
/// Try to send what is queued (a TLS alert) before closing after an error.
pub(super) const FLUSH_ON_CLOSE: u16 = 1 << 13;
/// A send-progress timer is pending for this connection.
pub(super) const SEND_ARMED: u16 = 1 << 14;
/// Bytes were sent since the send-progress timer was (re)armed.
pub(super) const SENT_SINCE: u16 = 1 << 15;

/// Where a connection is in its life. Changed only by [`Conn::to`], which
/// checks (in debug builds) that the step is one of the legal ones:
///
/// ```text
/// Free ──accept──▶ Open ──filter──▶ Handshaking ──done──▶ Open
///   └──connect──▶ Connecting ──connected──▶ Open
/// Connecting | Handshaking | Open ──finalize (on_close)──▶ Closed
/// Closed ──nothing in flight, socket closed──▶ Free
/// ```
///
/// Whether an open connection is closing, and how, is its [`Closing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Phase {
    /// The slot is free.
    Free,
    /// Outbound, the connect is in progress; `on_open` not called yet.
    Connecting,
    /// The filter's (TLS) handshake is in progress; `on_open` not called
    /// yet, received application bytes are kept.
    Handshaking,
    /// The handler has the connection.
    Open,
    /// `on_close` was called; the socket waits for what is in flight on it
    /// to end before it is closed and the slot freed.
    Closed,
}

impl Phase {
    /// The handler still has the connection (`on_close` not called yet).
    #[inline]
    pub(super) fn is_open(self) -> bool {
        matches!(self, Phase::Connecting | Phase::Handshaking | Phase::Open)
    }

    fn may_become(self, to: Phase) -> bool {
        use Phase::*;
        matches!(
            (self, to),
            (Free, Open | Connecting)
                | (Connecting, Open | Closed)
                | (Open, Handshaking | Closed)
                | (Handshaking, Open | Closed)
                | (Closed, Free)
        )
    }
}

/// What the backend has in flight for a connection (`Conn::ops`), changed
/// only by [`Conn::begin`] and [`Conn::end`].
pub(super) mod op {
    /// A (multishot) receive is armed.
    pub(crate) const RECV: u8 = 1;
    /// Its cancellation is submitted; a `RecvEnd` follows.
    pub(crate) const RECV_CANCEL: u8 = 1 << 1;
    /// A send is in flight (io_uring); its buffer must stay put.
    pub(crate) const SEND: u8 = 1 << 2;
    /// Waiting for writability (epoll after a short send; a file send
    /// that would have blocked).
    pub(crate) const WRITABLE: u8 = 1 << 3;
    /// A connect is in flight.
    pub(crate) const CONNECT: u8 = 1 << 4;
    /// The teardown's cancellation of all of the above is submitted.
    pub(crate) const CANCEL_ALL: u8 = 1 << 5;
    /// What must have completed before the socket may be closed (a
    /// pending writability poll may not: its completion finds a new
    /// generation).
    pub(crate) const BLOCKS_CLOSE: u8 = RECV | SEND | CONNECT;
}

/// Whether and how a connection the handler still has is closing: its
/// close request, kept apart from [`Phase`] because a close can be asked
/// for in any open phase (while `Connecting` or `Handshaking` too, through
/// [`LoopCx::close`] or a filter's client connection) and the phase still
/// decides what happens meanwhile (the connect and handshake timers fire,
/// nothing is sent before the connect completes). Changed only by
/// [`Conn::close_as`], which checks (in debug builds) that the step is one
/// of the legal ones:
///
/// ```text
/// No ──close──▶ Graceful ──queue sent, FIN sent──▶ Lingering ──peer's FIN──▶ Lingered
/// any ──abort, slow reader, overflow, shed, panic──▶ a reset of higher precedence
/// ```
///
/// A graceful close ends (`finalize`, at the flush) once its queue is
/// sent and the peer's stream ended, or at once without lingering; a
/// lingering one when the peer's FIN answers ours (`Lingered`) or the
/// linger timer fires. A reset ends at the next flush, with the reason of
/// the highest precedence asked for (the variants' order). The peer's FIN
/// itself is the `EOF` flag: it may come in any state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(super) enum Closing {
    /// Not closing.
    No,
    /// Closing gracefully ([`Ctx::close`]): what is queued is sent first,
    /// and what the peer sends meanwhile is received and dropped.
    Graceful,
    /// Everything was sent and our FIN with it: waiting for the peer's end
    /// of stream (so that no unread input makes the close a reset that can
    /// destroy the last reply), bounded by the linger timer.
    Lingering,
    /// The peer's FIN answered ours: it ends at the flush, as closed
    /// locally, and a linger timer that fires meanwhile does nothing.
    Lingered,
    /// Reset: the handler asked ([`Ctx::abort`]) or its filter failed to
    /// encode (`CloseReason::Local`).
    Abort,
    /// Reset: more unconsumed input than `max_input`.
    Overflow,
    /// Reset: the write queue passed the hard limit.
    Slow,
    /// Reset: closed to bring the loop's queued bytes under its cap.
    Shed,
    /// Reset: a handler call panicked.
    Panicked,
}

impl Closing {
    /// Closing with a reset (at the next flush).
    #[inline]
    pub(super) fn is_reset(self) -> bool {
        self >= Closing::Abort
    }

    /// Closing gracefully, in any of its states.
    #[inline]
    pub(super) fn is_graceful(self) -> bool {
        matches!(
            self,
            Closing::Graceful | Closing::Lingering | Closing::Lingered
        )
    }

    fn may_become(self, to: Closing) -> bool {
        use Closing::*;
        match (self, to) {
            (No, Graceful) | (Graceful, Lingering) | (Lingering, Lingered) => true,
            // a reset overrides a graceful close and a reset of lower
            // precedence
            (from, to) => to.is_reset() && to > from,
        }
    }
}

/// Closing gracefully, with the peer's stream not ended: keep receiving
/// (and discarding), so that nothing unread is left in the socket when it
/// is closed (which would send a reset that can destroy the last reply on
/// its way to the peer).
#[inline]
pub(super) fn drains_input(c: &Conn) -> bool {
    matches!(c.closing, Closing::Graceful | Closing::Lingering) && c.flags & EOF == 0
}

/// Writes are dropped once a connection is closing, half-closed by us, or
/// not open (yet or any more).
#[inline]
pub(super) fn refuses_writes(c: &Conn) -> bool {
    !c.phase.is_open() || c.closing != Closing::No || c.flags & SHUT_WR_REQ != 0
}

/// One connection slot. Kept small: this is most of the user-space cost of
/// an idle connection (the handler box is free for zero-sized handlers).
/// What most connections never use is behind thin (8-byte) pointers: the
/// filter (TLS) and the leftover input, which is only there while a handler
/// leaves bytes unconsumed (72 bytes in all, `slot_is_small`).
pub(super) struct Conn {
    pub(super) handler: Option<Box<dyn Handler>>,
    /// TLS or another filter; `None` for plain connections. Boxed twice so
    /// that the slot holds a thin pointer (filtered connections pay one
    /// more small allocation, plain ones 8 bytes less).
    pub(super) filter: Option<Box<Box<dyn Filter>>>,
    /// Leftover input (see [`Conn::take_input`]); boxed for a thin pointer.
    #[allow(clippy::box_collection)]
    pub(super) input: Option<Box<Vec<u8>>>,
    pub(super) out: OutboundQueue,
    pub(super) sock: Sock,
    pub(super) gen: u32,
    pub(super) flags: u16,
    /// Milliseconds (loop clock, wrapping) of the last received bytes; for a
    /// free slot, the index of the next free slot.
    pub(super) last_active: u32,
    pub(super) idle_ms: u32,
    pub(super) limits: u16,
    pub(super) service: u16,
    /// The pending deadline ([`Ctx::set_deadline`]): [`DEADLINE_SET`] plus
    /// the sequence number of its timer entry; without that bit, the last
    /// sequence number used.
    pub(super) deadline: u16,
    /// Where the connection is in its life: read freely, change only with
    /// [`Conn::to`].
    pub(super) phase: Phase,
    /// Whether and how it is closing: read freely, change only with
    /// [`Conn::close_as`] (or [`Reactor::close_for`]).
    pub(super) closing: Closing,
    /// [`op`] bits in flight: read freely, change only with
    /// [`Conn::begin`] / [`Conn::end`].
    pub(super) ops: u8,
}

/// Bit of [`Conn::deadline`] set while a deadline is pending.
pub(super) const DEADLINE_SET: u16 = 1 << 15;

impl Conn {
    /// Moves the connection to `to`; a step the lifecycle does not have is
    /// a bug (checked in debug builds).
    #[inline]
    pub(super) fn to(&mut self, to: Phase) {
        debug_assert!(
            self.phase.may_become(to),
            "illegal connection step {:?} -> {to:?}",
            self.phase
        );
        self.phase = to;
    }

    /// Moves the connection's close request to `to`; a step the close
    /// does not have is a bug (checked in debug builds).
    #[inline]
    pub(super) fn close_as(&mut self, to: Closing) {
        debug_assert!(
            self.closing.may_become(to),
            "illegal closing step {:?} -> {to:?}",
            self.closing
        );
        debug_assert!(
            to != Closing::Lingering || self.flags & EOF == 0,
            "lingering after the peer's end of stream"
        );
        self.closing = to;
    }

    /// Asks for a reset for `why` (an [`Closing::is_reset`] state), unless
    /// one of higher precedence is asked for already.
    #[inline]
    pub(super) fn reset_for(&mut self, why: Closing) {
        debug_assert!(why.is_reset(), "{why:?} is not a reset");
        if why > self.closing {
            self.close_as(why);
        }
    }

    /// Closing, gracefully or not.
    #[inline]
    pub(super) fn is_closing(&self) -> bool {
        self.closing != Closing::No
    }

    /// The peer ended its stream: a lingering close has its answer.
    #[inline]
    pub(super) fn peer_ended(&mut self) {
        self.flags |= EOF;
        if self.closing == Closing::Lingering {
            self.close_as(Closing::Lingered);
        }
    }

    /// Notes that the backend was asked for `op` (one [`op`] bit), which
    /// must not be in flight already.
    #[inline]
    pub(super) fn begin(&mut self, op: u8) {
        debug_assert!(
            self.ops & op == 0,
            "operation {op:#x} started twice (in flight: {:#x})",
            self.ops
        );
        self.ops |= op;
    }

    /// Notes that `ops` ended (a completion, or a synchronous
    /// cancellation).
    #[inline]
    pub(super) fn end(&mut self, ops: u8) {
        self.ops &= !ops;
    }

    /// Whether `op` is in flight.
    #[inline]
    pub(super) fn in_flight(&self, op: u8) -> bool {
        self.ops & op != 0
    }

    /// Bytes of leftover input.
    #[inline]
    pub(super) fn input_len(&self) -> usize {
        self.input.as_ref().map_or(0, |v| v.len())
    }

    /// Takes the leftover input (an empty `Vec` when there is none).
    #[inline]
    pub(super) fn take_input(&mut self) -> Vec<u8> {
        self.input.take().map_or_else(Vec::new, |b| *b)
    }

    /// Keeps `v` as the leftover input (nothing for a `Vec` without memory).
    #[inline]
    pub(super) fn set_input(&mut self, v: Vec<u8>) {
        self.input = (v.capacity() > 0).then(|| Box::new(v));
    }
}

impl Reactor {
    // ----- slots -----

    pub(super) fn alloc(
        &mut self,
        sock: Sock,
        phase: Phase,
        flags: u16,
        handler: Box<dyn Handler>,
        limits: u16,
        service: u16,
    ) -> u32 {
        let idle_ms = self.limits[limits as usize].idle_ms;
        let now = self.now32();
        self.live += 1;
        if self.free_head != NIL {
            let slot = self.free_head;
            let c = &mut self.conns[slot as usize];
            self.free_head = c.last_active;
            c.handler = Some(handler);
            c.sock = sock;
            debug_assert!(c.ops == 0 && c.closing == Closing::No);
            c.to(phase);
            c.flags = flags;
            c.last_active = now;
            c.idle_ms = idle_ms;
            c.limits = limits;
            c.service = service;
            c.deadline = 0;
            slot
        } else {
            let slot = self.conns.len() as u32;
            self.conns.push(Conn {
                handler: Some(handler),
                filter: None,
                input: None,
                out: OutboundQueue::default(),
                sock,
                gen: 0,
                flags,
                last_active: now,
                idle_ms,
                limits,
                service,
                deadline: 0,
                phase,
                closing: Closing::No,
                ops: 0,
            });
            slot
        }
    }

    pub(super) fn free_slot(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        c.gen = c.gen.wrapping_add(1);
        c.to(Phase::Free);
        c.flags = 0;
        // a free slot starts afresh (not a step of a connection's close)
        c.closing = Closing::No;
        c.ops = 0;
        c.handler = None;
        c.filter = None;
        c.sock = Sock::NONE;
        c.last_active = self.free_head;
        self.free_head = slot;
        self.live -= 1;
    }

    /// The slot of a live token (in use and same generation).
    #[inline]
    pub(super) fn slot_of(&self, token: u64) -> Option<u32> {
        let (slot, gen) = untoken(token);
        let c = self.conns.get(slot as usize)?;
        (c.phase != Phase::Free && c.gen == gen).then_some(slot)
    }

    pub(super) fn slot_of_id(&self, id: ConnId) -> Option<u32> {
        if id.loop_index() != self.loop_idx as usize {
            return None;
        }
        let (slot, gen) = id.parts();
        let c = self.conns.get(slot as usize)?;
        (c.phase.is_open() && c.gen == gen).then_some(slot)
    }

    #[inline]
    pub(super) fn mark_dirty(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.flags & DIRTY == 0 {
            c.flags |= DIRTY;
            self.dirty.push(slot);
        }
    }
}

#[cfg(test)]
mod slot_tests {
    /// The slot is most of the engine's cost of an idle connection.
    #[test]
    fn slot_is_small() {
        let size = std::mem::size_of::<super::Conn>();
        assert!(size <= 72, "Conn is {size} bytes");
    }
}
