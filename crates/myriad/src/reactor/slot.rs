//! The slab of connection slots: the slot itself, its flags, and
//! allocation, lookup by token or id, and the dirty list.

use super::*;

/// Slots a loop may have: a token keeps 24 bits for the slot and 32 for the
/// generation (the loop index or the io_uring operation kind take the top
/// byte), so a slot must be reused four billion times before a stale
/// token (a long user timer, an id kept by a room) could match again.
pub(super) const MAX_SLOTS: usize = 1 << 24;
pub(crate) const OUTBOUND: u16 = u16::MAX;

// Connection flags.
pub(super) const USED: u32 = 1;
pub(super) const OPEN: u32 = 1 << 1;
pub(super) const CONNECTING: u32 = 1 << 2;
pub(super) const NEEDS_REG: u32 = 1 << 3;
pub(super) const REGISTERED: u32 = 1 << 4;
pub(super) const RECV_ACTIVE: u32 = 1 << 5;
pub(super) const RECV_CANCEL: u32 = 1 << 6;
pub(super) const SEND_INFLIGHT: u32 = 1 << 7;
pub(super) const WAIT_WRITABLE: u32 = 1 << 8;
pub(super) const CONNECT_INFLIGHT: u32 = 1 << 9;
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
pub(super) const CANCEL_ALL: u32 = 1 << 23;
pub(super) const COUNTED: u32 = 1 << 24;
pub(super) const IDLE_ARMED: u32 = 1 << 25;
/// The filter's handshake is in progress; `on_open` has not been called.
pub(super) const HANDSHAKING: u32 = 1 << 26;
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

pub(super) const INFLIGHT: u32 = RECV_ACTIVE | SEND_INFLIGHT | CONNECT_INFLIGHT;
pub(super) const CLOSING: u32 = CLOSE_REQ | ABORT_REQ | SLOW | OVERFLOW | PANICKED | SHED;

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
pub(super) fn refuses_writes(flags: u32) -> bool {
    flags & OPEN == 0 || flags & CLOSING != 0 || flags & SHUT_WR_REQ != 0
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
}

/// Bit of [`Conn::deadline`] set while a deadline is pending.
pub(super) const DEADLINE_SET: u16 = 1 << 15;

impl Conn {
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
            c.flags = flags | USED;
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
                flags: flags | USED,
                last_active: now,
                idle_ms,
                limits,
                service,
                deadline: 0,
            });
            slot
        }
    }

    pub(super) fn free_slot(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        c.gen = c.gen.wrapping_add(1);
        c.flags = 0;
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
        (c.flags & USED != 0 && c.gen == gen).then_some(slot)
    }

    pub(super) fn slot_of_id(&self, id: ConnId) -> Option<u32> {
        if id.loop_index() != self.loop_idx as usize {
            return None;
        }
        let (slot, gen) = id.parts();
        let c = self.conns.get(slot as usize)?;
        (c.flags & OPEN != 0 && c.gen == gen).then_some(slot)
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
