//! Sending slices of the input without copying them
//! ([`Ctx::write_from_input`]): a write of a slice of the receive buffer
//! being handled reserves its place in the queue; when the handler
//! returns, the reservation is filled with the slice itself, lent by the
//! backend (io_uring: the provided buffer stays out of the ring until the
//! send is done), or with a copy (no lending backend, the loop's cap on
//! lent buffers reached, the header's bytes not consumed).

use super::*;
use crate::backend::lend::Keep;

/// Writes of this many bytes or more are lent rather than copied: below,
/// the copy costs less than holding a receive buffer.
pub(crate) const LEND_MIN: usize = 2048;

/// Longest header [`Ctx::write_from_input`] puts in place before a lent
/// slice (a WebSocket frame header is at most 14 bytes).
pub(crate) const LEND_HEAD_MAX: usize = 16;

/// The receive buffer being handed to `on_data`, while slices of it may be
/// lent.
#[derive(Clone, Copy)]
pub(super) struct LendSrc {
    slot: u32,
    /// Address and length of the input (compared with the handler's
    /// slices; never dereferenced).
    addr: usize,
    len: usize,
    /// The first input byte a new reservation's header may take: the
    /// reservations of one input are in order and apart.
    floor: usize,
    /// What `on_data` consumed.
    pub(super) consumed: usize,
}

/// A reservation to fill when the handler returns.
pub(super) struct PendingLend {
    chunk: u32,
    seq: u32,
    /// The slice's offset in the input, and its length.
    off: usize,
    len: usize,
    head: [u8; LEND_HEAD_MAX],
    head_len: usize,
}

impl Reactor {
    /// A receive whose buffer the backend can lend from.
    pub(super) fn on_recv_lendable(&mut self, token: u64, data: &mut [u8], keep: Keep<'_>) {
        let lendable = keep.can_lend()
            && data.len() >= LEND_MIN
            && self.slot_of(token).is_some_and(|slot| {
                let c = &self.conns[slot as usize];
                c.filter.is_none() && c.input_len() == 0
            });
        if !lendable {
            self.on_recv(token, data);
            return;
        }
        let Some(slot) = self.slot_of(token) else {
            return;
        };
        self.lend_src = Some(LendSrc {
            slot,
            addr: data.as_ptr() as usize,
            len: data.len(),
            floor: 0,
            consumed: 0,
        });
        self.on_recv(token, data);
        let src = self.lend_src.take();
        if self.lends.is_empty() {
            return;
        }
        let consumed = src.map_or(0, |s| s.consumed);
        let mut lends = std::mem::take(&mut self.lends);
        for p in lends.drain(..) {
            if !self.pool.is_input(p.chunk, p.seq) {
                // the queue let go of it (the connection was reset)
                continue;
            }
            let start = p.off - p.head_len;
            // The header goes over input bytes before the slice: only if
            // the handler consumed them (else they are kept as input).
            if p.off <= consumed {
                if let Some(lent) = keep.lend(start, p.head_len + p.len) {
                    data[start..p.off].copy_from_slice(&p.head[..p.head_len]);
                    self.pool.fill_lent(p.chunk, lent);
                    let n = (p.head_len + p.len) as u64;
                    LoopCounters::add(&self.shared.counters.bytes_lent, n);
                    continue;
                }
            }
            self.pool.fill_copy(
                p.chunk,
                &[&p.head[..p.head_len], &data[p.off..p.off + p.len]],
            );
        }
        self.lends = lends;
    }

    /// [`Ctx::write_from_input`].
    pub(super) fn write_from_input(&mut self, slot: u32, head: &[u8], body: &[u8]) {
        let total = head.len() + body.len();
        let at = body.as_ptr() as usize;
        let src = match self.lend_src {
            Some(s)
                if s.slot == slot
                    && head.len() <= LEND_HEAD_MAX
                    && body.len() >= LEND_MIN
                    && total <= OutboundQueue::max_fill(&self.pool)
                    && at >= s.addr + s.floor + head.len()
                    && at + body.len() <= s.addr + s.len =>
            {
                s
            }
            _ => return self.write(slot, &[head, body]),
        };
        let c = &mut self.conns[slot as usize];
        if refuses_writes(c) {
            return;
        }
        let off = at - src.addr;
        self.lend_seq = self.lend_seq.wrapping_add(1);
        let seq = self.lend_seq;
        let chunk = c.out.push_input(&mut self.pool, seq, total as u32);
        let mut p = PendingLend {
            chunk,
            seq,
            off,
            len: body.len(),
            head: [0; LEND_HEAD_MAX],
            head_len: head.len(),
        };
        p.head[..head.len()].copy_from_slice(head);
        self.lends.push(p);
        if let Some(s) = self.lend_src.as_mut() {
            s.floor = off + body.len();
        }
        self.after_write(slot);
    }
}
