//! The slab of connection slots: the slot itself, its flags, and
//! allocation, lookup by token or id, and the dirty list.

use super::*;

/// Slots a loop may have: a token keeps 24 bits for the slot and 32 for the
/// generation (the loop index or the io_uring operation kind take the top
/// byte), so a slot must be reused four billion times before a stale
/// token (a long user timer, an id kept by a room) could match again.
pub(super) const MAX_SLOTS: usize = 1 << 24;
pub(crate) const OUTBOUND: u16 = u16::MAX;

// Connection flags: what the handler asked for and what the engine
// noted. Where a connection is in its life is its `Phase`, what the
// backend has in flight for it its `ops` (see `Conn::to`, `Conn::begin`).
pub(super) const NEEDS_REG: u32 = 1 << 3;
pub(super) const REGISTERED: u32 = 1 << 4;
pub(super) const PAUSE_USER: u32 = 1 << 10;
pub(super) const PAUSE_BP: u32 = 1 << 11;
pub(super) const EOF: u32 = 1 << 12;
pub(super) const EOF_PENDING: u32 = 1 << 13;
pub(super) const CLOSE_REQ: u32 = 1 << 14;
pub(super) const ABORT_REQ: u32 = 1 << 15;
pub(super) const SLOW: u32 = 1 << 16;
pub(super) const OVERFLOW: u32 = 1 << 17;
pub(super) const SHUT_WR_REQ: u32 = 1 << 18;
pub(super) const SHUT_WR_DONE: u32 = 1 << 19;
pub(super) const DIRTY: u32 = 1 << 20;
pub(super) const REDELIVER: u32 = 1 << 21;
pub(super) const LINGER0: u32 = 1 << 22;
pub(super) const COUNTED: u32 = 1 << 24;
pub(super) const IDLE_ARMED: u32 = 1 << 25;
/// Try to send what is queued (a TLS alert) before closing after an error.
pub(super) const FLUSH_ON_CLOSE: u32 = 1 << 27;
/// A handler call panicked: the connection is aborted and counted.
pub(super) const PANICKED: u32 = 1 << 28;
/// A send-progress timer is pending for this connection.
pub(super) const SEND_ARMED: u32 = 1 << 29;
/// Bytes were sent since the send-progress timer was (re)armed.
pub(super) const SENT_SINCE: u32 = 1 << 30;
/// Closed to bring the loop's queued bytes under its cap.
pub(super) const SHED: u32 = 1 << 31;

pub(super) const CLOSING: u32 = CLOSE_REQ | ABORT_REQ | SLOW | OVERFLOW | PANICKED | SHED;

/// Where a connection is in its life. Changed only by [`Conn::to`], which
/// checks (in debug builds) that the step is one of the legal ones:
///
/// ```text
/// Free ──accept──▶ Open ──filter──▶ Handshaking ──done──▶ Open
///   └──connect──▶ Connecting ──connected──▶ Open
/// Connecting | Handshaking | Open ──finalize (on_close)──▶ Closed
/// Closed ──nothing in flight, socket closed──▶ Free
/// ```
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

/// A graceful close whose queued bytes are all sent and whose sending side
/// the engine shut down: it waits for the peer's end of stream (lingering
/// close). `SHUT_WR_DONE` without `SHUT_WR_REQ` is set only here.
pub(super) fn is_lingering(f: u32) -> bool {
    f & (CLOSING | SHUT_WR_REQ | SHUT_WR_DONE | EOF) == CLOSE_REQ | SHUT_WR_DONE
}

/// Closing gracefully, with the peer's stream not ended: keep receiving
/// (and discarding), so that nothing unread is left in the socket when it
/// is closed (which would send a reset that can destroy the last reply on
/// its way to the peer).
pub(super) fn drains_input(f: u32) -> bool {
    f & (CLOSING | EOF) == CLOSE_REQ
}

/// Writes are dropped once a connection is closing, half-closed by us, or
/// not open (yet or any more).
#[inline]
pub(super) fn refuses_writes(phase: Phase, flags: u32) -> bool {
    !phase.is_open() || flags & (CLOSING | SHUT_WR_REQ) != 0
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
    pub(super) flags: u32,
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
        flags: u32,
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
            debug_assert!(c.ops == 0);
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
