//! Pooled buffers: outbound chunk chains and leftover-input buffers.
//!
//! Outbound bytes are copied once, from the handler's slice into a pooled
//! fixed-size chunk, and sent from there (io_uring needs memory that stays
//! put until the completion; epoll sends straight from it with `sendmsg`).
//! Chunks live in one per-loop arena and are linked by index, so a
//! connection's write queue is three `u32`s and an idle connection owns no
//! chunk at all. Released chunks keep their memory for reuse, up to a cap.
//!
//! Leftover input (bytes a handler did not consume yet) goes into a pooled
//! `Vec<u8>` that is returned to the pool as soon as it is empty; the pool
//! keeps at most [`INPUT_RETAIN_MAX`] bytes of free buffers per loop.

use crate::backend::lend::Lent;
use std::fs::File;
use std::io::IoSlice;
use std::sync::Arc;

pub(crate) const NIL: u32 = u32::MAX;

struct Chunk {
    buf: Box<[u8]>,
    /// Bytes queued by reference instead of in `buf` (then empty).
    by_ref: ByRef,
    start: u32,
    end: u32,
    next: u32,
}

/// What a chunk that holds no bytes of its own refers to.
enum ByRef {
    /// Nothing: the bytes are `buf[start..end]`.
    None,
    /// A shared, immutable buffer (fan-out: one encoded message written to
    /// many connections without a copy each): `shared[start..end]`.
    Bytes(Arc<[u8]>),
    /// A file's bytes `offset + start .. offset + end`, sent by the kernel
    /// (`sendfile`) without passing through user space.
    File { file: Arc<File>, offset: u64 },
    /// A slice of a receive buffer, kept out of the ring until this chunk
    /// is released (`Ctx::write_from_input`): `lent.bytes()[start..end]`.
    Lent(Lent),
    /// Room reserved for a slice of the input being handled, filled by
    /// [`ChunkPool::fill_lent`] or [`ChunkPool::fill_copy`] as soon as the
    /// handler returns (never seen by a send). `seq` tells a reservation
    /// from whatever later took the arena slot, should the queue have let
    /// go of it meanwhile.
    Input { seq: u32 },
}

/// Size of the small chunk class: a queue that starts with a small write
/// (the common case: a reply of a few hundred bytes) takes a small chunk, so
/// that thousands of connections answering in the same turn do not each
/// touch 16 KiB.
pub(crate) const SMALL_CHUNK: usize = 2048;

/// Size of the tiny chunk class: a queue that starts with a write this
/// short (a WebSocket upgrade answer, a close frame, a short message)
/// takes a tiny chunk. The chunks in use at once during a burst of new
/// connections stay in the pool: with 2 KiB ones, a burst of 19,000
/// WebSocket upgrades left ~800 of them (1.7 MB, ~90 bytes per
/// connection) behind. A write that does not fit behind it goes into a
/// small chunk.
pub(crate) const TINY_CHUNK: usize = 256;

/// At most this many bytes are copied to join the front chunks of a queue
/// before a send ([`OutboundQueue::coalesce_front`]).
pub(crate) const JOIN_MAX: usize = 16 << 10;

/// At most this many chunks are joined at once.
const JOIN_MAX_CHUNKS: usize = 256;

/// The most memory a loop keeps in free large chunks once their
/// retention has grown to the working set (see [`ChunkPool::alloc`]).
pub(crate) const RETAIN_MAX: usize = 8 << 20;

/// The per-loop chunk arena, with three size classes.
pub(crate) struct ChunkPool {
    chunks: Vec<Chunk>,
    /// Free lists (arena indices) per class: 0 = tiny, 1 = small, 2 =
    /// large. A free arena slot whose memory was given back has an empty
    /// `buf`.
    free: [u32; 3],
    free_len: [usize; 3],
    /// Arena slots without memory.
    bare: u32,
    sizes: [usize; 3],
    /// Free chunks kept per class; beyond that memory goes back to the
    /// allocator. The large class's is raised (see [`ChunkPool::alloc`])
    /// when a loop keeps more large chunks in use than it keeps free, up
    /// to [`RETAIN_MAX`] bytes.
    max_free: [usize; 3],
    /// Chunks with memory, per class.
    live: [usize; 3],
    /// Bytes queued in every write queue of the loop (copies and shared
    /// buffers alike): the loop's cap on queued bytes is checked on it.
    pub(crate) queued: u64,
}

impl ChunkPool {
    pub(crate) fn new(chunk_size: usize, max_free_large: usize) -> Self {
        let large = chunk_size.max(SMALL_CHUNK);
        ChunkPool {
            chunks: Vec::new(),
            free: [NIL; 3],
            free_len: [0; 3],
            bare: NIL,
            sizes: [TINY_CHUNK, SMALL_CHUNK, large],
            max_free: [
                (1 << 20) / TINY_CHUNK,
                (2 << 20) / SMALL_CHUNK,
                max_free_large.max(1),
            ],
            live: [0; 3],
            queued: 0,
        }
    }

    fn alloc(&mut self, class: usize) -> u32 {
        if self.free[class] == NIL {
            // More large chunks in use than the pool keeps free: each burst
            // above the retention cap would hand the excess back to the
            // allocator and take it again zeroed (16 KiB WebSocket echoes
            // on epoll spent 15% of their CPU in that memset: 100
            // connections, 64 large chunks kept). Keep twice as many, up to
            // RETAIN_MAX bytes. Not for the tiny and small classes: a burst
            // of 19,000 upgrade answers would leave megabytes of them
            // kept, which an idle server pays per connection, and zeroing
            // them costs little.
            if class == 2 && self.live[class] >= self.max_free[class] {
                let cap = (RETAIN_MAX / self.sizes[class]).max(self.max_free[class]);
                self.max_free[class] = (self.max_free[class] * 2).min(cap);
            }
            // Grow geometrically (like a Vec), within the retention cap: the
            // number of growth events is logarithmic in the peak number of
            // chunks in use at once, after which the steady state allocates
            // nothing.
            let n = self.live[class].clamp(1, self.max_free[class]).min(64);
            for _ in 0..n {
                let i = self.new_chunk(class);
                self.chunks[i as usize].next = self.free[class];
                self.free[class] = i;
                self.free_len[class] += 1;
            }
        }
        let i = self.free[class];
        let c = &mut self.chunks[i as usize];
        self.free[class] = c.next;
        self.free_len[class] -= 1;
        c.start = 0;
        c.end = 0;
        c.next = NIL;
        i
    }

    fn new_chunk(&mut self, class: usize) -> u32 {
        self.live[class] += 1;
        let buf = vec![0u8; self.sizes[class]].into_boxed_slice();
        if self.bare != NIL {
            let i = self.bare;
            let c = &mut self.chunks[i as usize];
            self.bare = c.next;
            *c = Chunk {
                buf,
                by_ref: ByRef::None,
                start: 0,
                end: 0,
                next: NIL,
            };
            i
        } else {
            let i = self.chunks.len() as u32;
            self.chunks.push(Chunk {
                buf,
                by_ref: ByRef::None,
                start: 0,
                end: 0,
                next: NIL,
            });
            i
        }
    }

    /// An arena slot without memory of its own, holding `len` bytes of
    /// `by_ref`.
    fn alloc_by_ref(&mut self, by_ref: ByRef, len: u32) -> u32 {
        let chunk = Chunk {
            buf: Box::new([]),
            by_ref,
            start: 0,
            end: len,
            next: NIL,
        };
        if self.bare != NIL {
            let i = self.bare;
            self.bare = self.chunks[i as usize].next;
            self.chunks[i as usize] = chunk;
            i
        } else {
            self.chunks.push(chunk);
            (self.chunks.len() - 1) as u32
        }
    }

    fn release(&mut self, i: u32) {
        if !matches!(self.chunks[i as usize].by_ref, ByRef::None) {
            let c = &mut self.chunks[i as usize];
            c.by_ref = ByRef::None;
            c.next = self.bare;
            self.bare = i;
            return;
        }
        let len = self.chunks[i as usize].buf.len();
        let class = if len == self.sizes[0] {
            0
        } else {
            1 + usize::from(len != self.sizes[1])
        };
        let c = &mut self.chunks[i as usize];
        if self.free_len[class] < self.max_free[class] {
            c.next = self.free[class];
            self.free[class] = i;
            self.free_len[class] += 1;
        } else {
            c.buf = Box::new([]);
            c.next = self.bare;
            self.bare = i;
            self.live[class] -= 1;
        }
    }

    /// Whether arena slot `i` is still the reservation `seq` made by
    /// [`OutboundQueue::push_input`].
    pub(crate) fn is_input(&self, i: u32, seq: u32) -> bool {
        self.chunks
            .get(i as usize)
            .is_some_and(|c| matches!(c.by_ref, ByRef::Input { seq: s } if s == seq))
    }

    /// Fills the reservation `i` with a lent slice of the same length.
    pub(crate) fn fill_lent(&mut self, i: u32, lent: Lent) {
        let c = &mut self.chunks[i as usize];
        debug_assert!(matches!(c.by_ref, ByRef::Input { .. }));
        debug_assert_eq!((c.end - c.start) as usize, lent.bytes().len());
        c.by_ref = ByRef::Lent(lent);
    }

    /// Fills the reservation `i` with a copy of `parts` (as many bytes as
    /// reserved, at most a large chunk): the slot takes the memory of a
    /// pooled chunk and stays where it is in its queue.
    pub(crate) fn fill_copy(&mut self, i: u32, parts: &[&[u8]]) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        debug_assert!(total <= self.sizes[2]);
        let class = if total <= self.sizes[1] { 1 } else { 2 };
        let j = self.alloc(class);
        let mut at = 0;
        {
            let c = &mut self.chunks[j as usize];
            for p in parts {
                c.buf[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            c.end = at as u32;
        }
        // Swap the two arena slots' contents; the reservation's memory-less
        // slot (now at `j`) goes to the bare list.
        let (a, b) = if i < j { (i, j) } else { (j, i) };
        let (lo, hi) = self.chunks.split_at_mut(b as usize);
        std::mem::swap(&mut lo[a as usize], &mut hi[0]);
        let next = self.chunks[j as usize].next;
        self.chunks[i as usize].next = next;
        self.release(j);
    }

    /// Chunks currently allocated (in use or pooled), for stats.
    #[allow(dead_code)]
    pub(crate) fn capacity(&self) -> usize {
        self.chunks.len()
    }
}

/// A connection's outbound queue: a chain of chunks in the pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutboundQueue {
    head: u32,
    tail: u32,
    /// Bytes queued (not yet handed to a completed send).
    pub(crate) len: u32,
}

impl Default for OutboundQueue {
    fn default() -> Self {
        OutboundQueue {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

impl OutboundQueue {
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a copy of `data`.
    pub(crate) fn push(&mut self, pool: &mut ChunkPool, data: &[u8]) {
        self.push_hinted(pool, data, data.len());
    }

    /// Appends copies of `parts` in order (a frame header and its payload),
    /// choosing the first chunk's size class by their total: a large write
    /// that starts with a few header bytes still lands in one large chunk,
    /// so that it leaves in one send.
    pub(crate) fn push_parts(&mut self, pool: &mut ChunkPool, parts: &[&[u8]]) {
        let mut left: usize = parts.iter().map(|p| p.len()).sum();
        for p in parts {
            self.push_hinted(pool, p, left);
            left -= p.len();
        }
    }

    /// Appends a copy of `data`; `hint` (at least `data.len()`) is how many
    /// bytes are being written in a row, for the size class of a new first
    /// chunk.
    /// Sets the queue's length, keeping the pool's total in step.
    fn set_len(&mut self, pool: &mut ChunkPool, len: u32) {
        pool.queued = pool.queued - u64::from(self.len) + u64::from(len);
        self.len = len;
    }

    fn push_hinted(&mut self, pool: &mut ChunkPool, mut data: &[u8], hint: usize) {
        let len = self
            .len
            .saturating_add(data.len().min(u32::MAX as usize) as u32);
        self.set_len(pool, len);
        while !data.is_empty() {
            if self.tail != NIL {
                let c = &mut pool.chunks[self.tail as usize];
                let room = c.buf.len().saturating_sub(c.end as usize);
                if room > 0 {
                    let n = room.min(data.len());
                    let end = c.end as usize;
                    c.buf[end..end + n].copy_from_slice(&data[..n]);
                    c.end += n as u32;
                    data = &data[n..];
                    continue;
                }
            }
            let i = pool.alloc(self.new_chunk_class(pool, hint.max(data.len())));
            if self.tail == NIL {
                self.head = i;
            } else {
                pool.chunks[self.tail as usize].next = i;
            }
            self.tail = i;
        }
    }

    /// Size class of a new chunk for a write of `bytes` in a row: tiny
    /// only for a queue that starts with a tiny write, small for one that
    /// starts with a small write or whose tail is a tiny chunk.
    fn new_chunk_class(&self, pool: &ChunkPool, bytes: usize) -> usize {
        if self.tail == NIL && bytes <= TINY_CHUNK {
            0
        } else if bytes <= SMALL_CHUNK
            && (self.tail == NIL || pool.chunks[self.tail as usize].buf.len() == TINY_CHUNK)
        {
            1
        } else {
            2
        }
    }

    /// Largest `max` [`OutboundQueue::push_with`] accepts: one large chunk.
    pub(crate) fn max_fill(pool: &ChunkPool) -> usize {
        pool.sizes[2]
    }

    /// Lets `fill` write up to `max` (at most [`OutboundQueue::max_fill`]) bytes
    /// straight into the tail chunk, or a new one if the tail has less
    /// room; `fill` returns how many it wrote. Returns that count.
    pub(crate) fn push_with(
        &mut self,
        pool: &mut ChunkPool,
        max: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> usize {
        let max = max.min(pool.sizes[2]);
        let room = |pool: &ChunkPool, i: u32| {
            let c = &pool.chunks[i as usize];
            c.buf.len().saturating_sub(c.end as usize)
        };
        let fresh = self.tail == NIL || room(pool, self.tail) < max;
        let i = if fresh {
            pool.alloc(self.new_chunk_class(pool, max))
        } else {
            self.tail
        };
        let c = &mut pool.chunks[i as usize];
        let end = c.end as usize;
        let n = fill(&mut c.buf[end..end + max]).min(max);
        c.end += n as u32;
        if fresh {
            if n == 0 {
                pool.release(i);
                return 0;
            }
            if self.tail == NIL {
                self.head = i;
            } else {
                pool.chunks[self.tail as usize].next = i;
            }
            self.tail = i;
        }
        let len = self.len.saturating_add(n as u32);
        self.set_len(pool, len);
        n
    }

    /// Joins the short chunks at the front of the queue into one, so that a
    /// backend that sends one chunk per operation (io_uring) sends them in
    /// one: a burst of small writes (pipelined answers) otherwise leaves in
    /// two sends, the first with the tiny chunk's few bytes, and a
    /// subscriber with several small fan-out messages queued by reference
    /// (one shared buffer each) in one send per message — on loopback a
    /// send of 100 bytes costs the sender some microseconds of kernel time
    /// (the receiver's TCP path included), copying them a few nanoseconds.
    ///
    /// Joins the front run of chunks with at most [`SMALL_CHUNK`] unsent
    /// bytes each (owned or shared; a file segment ends the run) while the
    /// total stays within [`JOIN_MAX`] and the large chunk size: a shared
    /// buffer larger than that is never copied, and a send copies at most
    /// `JOIN_MAX` bytes. Does nothing with fewer than two such chunks.
    ///
    /// Only while no send from this queue is in flight: the kernel may be
    /// reading the front chunk's memory until its completion.
    pub(crate) fn coalesce_front(&mut self, pool: &mut ChunkPool) {
        let h = self.head;
        if h == NIL || pool.chunks[h as usize].next == NIL {
            return;
        }
        let max = JOIN_MAX.min(pool.sizes[2]);
        // The run: `count` chunks from the head, `total` unsent bytes.
        let (mut count, mut total, mut i) = (0usize, 0usize, h);
        while i != NIL && count < JOIN_MAX_CHUNKS {
            let c = &pool.chunks[i as usize];
            let len = (c.end - c.start) as usize;
            if matches!(c.by_ref, ByRef::File { .. } | ByRef::Input { .. })
                || len > SMALL_CHUNK
                || total + len > max
            {
                break;
            }
            total += len;
            count += 1;
            i = c.next;
        }
        if count < 2 {
            return;
        }
        let after = i;
        let class = if total <= pool.sizes[1] { 1 } else { 2 };
        let m = pool.alloc(class);
        let mut at = 0;
        let mut i = h;
        while i != after {
            // Split borrows: the new chunk and the one copied from are
            // distinct arena slots.
            let (src, dst) = if i < m {
                let (a, b) = pool.chunks.split_at_mut(m as usize);
                (&a[i as usize], &mut b[0])
            } else {
                let (a, b) = pool.chunks.split_at_mut(i as usize);
                (&b[0], &mut a[m as usize])
            };
            let bytes: &[u8] = match &src.by_ref {
                ByRef::Bytes(s) => s,
                ByRef::Lent(l) => l.bytes(),
                _ => &src.buf,
            };
            let part = &bytes[src.start as usize..src.end as usize];
            dst.buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
            let next = src.next;
            pool.release(i);
            i = next;
        }
        let c = &mut pool.chunks[m as usize];
        c.end = total as u32;
        c.next = after;
        self.head = m;
        if after == NIL {
            self.tail = m;
        }
    }

    /// Reserves `len` bytes for a slice of the input being handled (see
    /// [`ByRef::Input`]); returns the arena slot.
    pub(crate) fn push_input(&mut self, pool: &mut ChunkPool, seq: u32, len: u32) -> u32 {
        let total = self.len.saturating_add(len);
        self.set_len(pool, total);
        let i = pool.alloc_by_ref(ByRef::Input { seq }, len);
        self.link(pool, i);
        i
    }

    /// Appends a reference to `shared` (no copy of its bytes).
    pub(crate) fn push_shared(&mut self, pool: &mut ChunkPool, shared: Arc<[u8]>) {
        if shared.is_empty() {
            return;
        }
        let len = self
            .len
            .saturating_add(shared.len().min(u32::MAX as usize) as u32);
        self.set_len(pool, len);
        let n = shared.len().min(u32::MAX as usize) as u32;
        let i = pool.alloc_by_ref(ByRef::Bytes(shared), n);
        self.link(pool, i);
    }

    fn link(&mut self, pool: &mut ChunkPool, i: u32) {
        if self.tail == NIL {
            self.head = i;
        } else {
            pool.chunks[self.tail as usize].next = i;
        }
        self.tail = i;
    }

    /// Appends `len` bytes of `file` from `offset`, by reference: they are
    /// sent with `sendfile` when they reach the front. They count as queued
    /// bytes like any other (high-water mark, limits), so a sender queues
    /// a file a window at a time.
    pub(crate) fn push_file(
        &mut self,
        pool: &mut ChunkPool,
        file: &Arc<File>,
        offset: u64,
        len: u64,
    ) {
        // Pieces that keep the queue's u32 length and offsets in range.
        const PIECE: u64 = 1 << 30;
        let mut done = 0;
        while done < len {
            let n = (len - done).min(PIECE);
            let total = self.len.saturating_add(n as u32);
            self.set_len(pool, total);
            let i = pool.alloc_by_ref(
                ByRef::File {
                    file: Arc::clone(file),
                    offset: offset + done,
                },
                n as u32,
            );
            self.link(pool, i);
            done += n;
        }
    }

    /// The file bytes at the front of the queue, if the front is a file
    /// segment: descriptor, offset and length.
    pub(crate) fn front_file<'p>(
        &self,
        pool: &'p ChunkPool,
    ) -> Option<(&'p std::fs::File, u64, usize)> {
        let mut i = self.head;
        while i != NIL {
            let c = &pool.chunks[i as usize];
            if c.end > c.start {
                return match &c.by_ref {
                    ByRef::File { file, offset } => Some((
                        &**file,
                        offset + u64::from(c.start),
                        (c.end - c.start) as usize,
                    )),
                    _ => None,
                };
            }
            i = c.next;
        }
        None
    }

    /// The unsent bytes as up to `out.len()` slices; returns how many.
    pub(crate) fn slices<'p>(&self, pool: &'p ChunkPool, out: &mut [IoSlice<'p>]) -> usize {
        let mut i = self.head;
        let mut n = 0;
        while i != NIL && n < out.len() {
            let c = &pool.chunks[i as usize];
            if c.end > c.start {
                let bytes: &[u8] = match &c.by_ref {
                    ByRef::Bytes(s) => s,
                    ByRef::None => &c.buf,
                    ByRef::Lent(l) => l.bytes(),
                    // Sent by `sendfile` once it is at the front.
                    ByRef::File { .. } => break,
                    // Filled before any send (the handler's call ends
                    // first); never sent unfilled.
                    ByRef::Input { .. } => break,
                };
                out[n] = IoSlice::new(&bytes[c.start as usize..c.end as usize]);
                n += 1;
            }
            i = c.next;
        }
        n
    }

    /// Drops `n` sent bytes from the front.
    pub(crate) fn advance(&mut self, pool: &mut ChunkPool, mut n: usize) {
        let len = self.len.saturating_sub(n.min(u32::MAX as usize) as u32);
        self.set_len(pool, len);
        while n > 0 && self.head != NIL {
            let h = self.head;
            let c = &mut pool.chunks[h as usize];
            let avail = (c.end - c.start) as usize;
            if n < avail {
                c.start += n as u32;
                return;
            }
            n -= avail;
            let next = c.next;
            pool.release(h);
            self.head = next;
            if next == NIL {
                self.tail = NIL;
            }
        }
        // A fully drained tail chunk is released too, so an idle connection
        // holds nothing.
        if self.len == 0 {
            self.clear(pool);
        }
    }

    /// Releases every chunk.
    pub(crate) fn clear(&mut self, pool: &mut ChunkPool) {
        let mut i = self.head;
        while i != NIL {
            let next = pool.chunks[i as usize].next;
            pool.release(i);
            i = next;
        }
        self.set_len(pool, 0);
        *self = OutboundQueue::default();
    }
}

/// Bytes of free leftover-input buffers a loop keeps for reuse, in all.
///
/// A pooled buffer keeps the capacity it grew to, so without a bound on
/// the total a pool only ever grows toward its largest burst: with room
/// for 1,024 buffers of up to 1 MiB each, heaptrack found all of the
/// soak's live-heap growth here (+4.2 MB in 235 s; +0.8 MB with this
/// bound).
pub(crate) const INPUT_RETAIN_MAX: usize = 4 << 20;

/// Pool of `Vec<u8>` for leftover input: at most `max_free` buffers of at
/// most `keep_capacity` bytes each and [`INPUT_RETAIN_MAX`] bytes in all;
/// a buffer given back beyond that is freed.
pub(crate) struct InputPool {
    free: Vec<Vec<u8>>,
    max_free: usize,
    keep_capacity: usize,
    /// Capacity of the buffers in `free`, summed.
    retained: usize,
}

impl InputPool {
    pub(crate) fn new(max_free: usize, keep_capacity: usize) -> Self {
        InputPool {
            free: Vec::new(),
            max_free,
            keep_capacity,
            retained: 0,
        }
    }

    pub(crate) fn take(&mut self) -> Vec<u8> {
        match self.free.pop() {
            Some(v) => {
                self.retained -= v.capacity();
                v
            }
            None => Vec::new(),
        }
    }

    pub(crate) fn give(&mut self, mut v: Vec<u8>) {
        let cap = v.capacity();
        if cap == 0 {
            return;
        }
        if self.free.len() < self.max_free
            && cap <= self.keep_capacity
            && self.retained + cap <= INPUT_RETAIN_MAX
        {
            v.clear();
            self.retained += cap;
            self.free.push(v);
        }
    }

    /// Capacity of the free buffers kept, summed.
    #[cfg(test)]
    pub(crate) fn retained(&self) -> usize {
        self.retained
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_pool_reuses_and_bounds_what_it_keeps() {
        let mut pool = InputPool::new(1024, 1 << 20);
        // reuse: the buffer given back is the one taken next, emptied
        let mut v = pool.take();
        v.extend_from_slice(&[7; 1000]);
        let cap = v.capacity();
        pool.give(v);
        assert_eq!(pool.retained(), cap);
        let v = pool.take();
        assert!(v.is_empty() && v.capacity() == cap);
        assert_eq!(pool.retained(), 0);
        pool.give(v);
        // a burst of large leftovers: what is kept stays under the bound
        // (1,024 buffers of 512 KiB would be 512 MiB)
        let big: Vec<Vec<u8>> = (0..1024).map(|_| Vec::with_capacity(512 << 10)).collect();
        for b in big {
            pool.give(b);
        }
        assert!(pool.retained() <= INPUT_RETAIN_MAX);
        assert!(
            pool.retained() + (512 << 10) > INPUT_RETAIN_MAX,
            "kept as much as fits"
        );
        // over the per-buffer cap: freed, not kept
        let before = pool.retained();
        let mut huge = pool.take();
        let taken = huge.capacity();
        huge.reserve(2 << 20);
        pool.give(huge);
        assert_eq!(pool.retained(), before - taken);
        // taking everything back leaves nothing counted
        while pool.take().capacity() > 0 {}
        assert_eq!(pool.retained(), 0);
    }

    #[test]
    fn push_with_fills_in_place_and_releases_unused_chunks() {
        let mut pool = ChunkPool::new(4096, 4);
        let mut q = OutboundQueue::default();
        assert_eq!(q.push_with(&mut pool, 100, |_| 0), 0);
        assert!(q.is_empty());
        assert_eq!(pool.free_len[0], pool.live[0]);
        let n = q.push_with(&mut pool, 100, |b| {
            b[..3].copy_from_slice(b"abc");
            3
        });
        assert_eq!((n, q.len), (3, 3));
        // Fits in the tail: same chunk.
        q.push_with(&mut pool, 10, |b| {
            b[..2].copy_from_slice(b"de");
            2
        });
        // Does not fit in the tiny tail: a new, small chunk.
        q.push_with(&mut pool, SMALL_CHUNK, |b| {
            b[..1].copy_from_slice(b"f");
            9999
        });
        let mut sl = [IoSlice::new(&[]); 4];
        let k = q.slices(&pool, &mut sl);
        let all: Vec<u8> = sl[..k].iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(k, 2);
        assert_eq!(&all[..6], b"abcdef");
        // `fill` claiming more than `max` is clamped.
        assert_eq!(q.len as usize, 5 + SMALL_CHUNK);
        assert_eq!(OutboundQueue::max_fill(&pool), 4096);
    }

    #[test]
    fn queue_roundtrip_across_chunks() {
        let mut pool = ChunkPool::new(4096, 4);
        let mut q = OutboundQueue::default();
        let data: Vec<u8> = (0..10000u32).map(|i| i as u8).collect();
        q.push(&mut pool, &data[..300]);
        q.push(&mut pool, &data[300..]);
        assert_eq!(q.len, 10000);
        let mut out = Vec::new();
        while !q.is_empty() {
            let mut iov = [IoSlice::new(&[]); 2];
            let n = q.slices(&pool, &mut iov);
            assert!(n > 0);
            let take = iov[0].len().min(77);
            out.extend_from_slice(&iov[0][..take]);
            q.advance(&mut pool, take);
        }
        assert_eq!(out, data);
        assert_eq!(q.head, NIL);
        // All chunks back in the pool and reused.
        let before = pool.capacity();
        q.push(&mut pool, &data[..300]);
        q.push(&mut pool, &data[300..]);
        assert_eq!(pool.capacity(), before);
        q.clear(&mut pool);
    }
}

#[cfg(test)]
mod shared {
    use super::*;

    #[test]
    fn shared_and_owned_interleave_in_order() {
        let mut pool = ChunkPool::new(4096, 4);
        let msg: Arc<[u8]> = Arc::from(&b"shared-payload"[..]);
        let mut q = OutboundQueue::default();
        q.push(&mut pool, b"head:");
        q.push_shared(&mut pool, msg.clone());
        q.push(&mut pool, b":tail");
        let mut out = Vec::new();
        while !q.is_empty() {
            let mut iov = [IoSlice::new(&[]); 4];
            let n = q.slices(&pool, &mut iov);
            let take = iov[..n].iter().map(|s| s.len()).sum::<usize>().min(3);
            let mut left = take;
            for s in &iov[..n] {
                let k = s.len().min(left);
                out.extend_from_slice(&s[..k]);
                left -= k;
            }
            q.advance(&mut pool, take);
        }
        assert_eq!(out, b"head:shared-payload:tail");
        assert_eq!(
            Arc::strong_count(&msg),
            1,
            "the queue let go of the shared buffer"
        );
    }
}

#[cfg(test)]
mod parts {
    use super::*;

    #[test]
    fn header_and_large_payload_share_one_chunk() {
        let mut pool = ChunkPool::new(65536, 4);
        let mut q = OutboundQueue::default();
        let payload = vec![7u8; 16384];
        q.push_parts(&mut pool, &[&[0x82, 126, 0x40, 0], &payload]);
        let mut iov = [IoSlice::new(&[]); 4];
        assert_eq!(q.slices(&pool, &mut iov), 1, "one chunk, one send");
        assert_eq!(iov[0].len(), 4 + 16384);
        q.clear(&mut pool);
        // short parts take a tiny chunk, and what does not fit behind it
        // a small one
        q.push_parts(&mut pool, &[b"ab", b"cd"]);
        assert_eq!(pool.chunks[q.head as usize].buf.len(), TINY_CHUNK);
        q.push(&mut pool, &[1u8; 300]);
        assert_eq!(pool.chunks[q.tail as usize].buf.len(), SMALL_CHUNK);
        q.push(&mut pool, &[2u8; 3000]);
        assert_eq!(pool.chunks[q.tail as usize].buf.len(), 65536);
        q.clear(&mut pool);
        assert_eq!(pool.free_len, pool.live, "every chunk back in its class");
    }
}

#[cfg(test)]
mod churn {
    use super::*;

    /// Fills `n` queues with `size` bytes each (queue `i` with byte `i`),
    /// checks what each would send, then empties them.
    fn burst(pool: &mut ChunkPool, n: usize, size: usize) {
        let mut qs = vec![OutboundQueue::default(); n];
        for (i, q) in qs.iter_mut().enumerate() {
            q.push(pool, &vec![i as u8; size]);
        }
        for (i, q) in qs.iter_mut().enumerate() {
            let mut iov = [IoSlice::new(&[]); 1];
            assert_eq!(q.slices(pool, &mut iov), 1);
            assert_eq!(iov[0].len(), size);
            assert!(
                iov[0].iter().all(|&b| b == i as u8),
                "queue {i}'s own bytes"
            );
            q.clear(pool);
        }
    }

    /// A working set above the initial retention: after the first burst
    /// the pool keeps every chunk it needs, so later bursts allocate
    /// nothing (no chunk is given back and taken again).
    #[test]
    fn retention_grows_to_the_working_set() {
        let mut pool = ChunkPool::new(16384, 4);
        burst(&mut pool, 100, 16384);
        let kept = pool.free_len[2];
        assert_eq!(kept, pool.live[2], "every large chunk is free again");
        assert!(kept >= 100, "the working set is kept: {kept}");
        let before = pool.capacity();
        for _ in 0..5 {
            burst(&mut pool, 100, 16384);
            assert_eq!(pool.live[2], kept, "no chunk allocated or given back");
        }
        assert_eq!(pool.capacity(), before);
    }

    /// Retention stops at RETAIN_MAX bytes; the tiny class keeps its
    /// fixed cap (a burst of short answers leaves no more behind).
    #[test]
    fn retention_is_bounded() {
        let mut pool = ChunkPool::new(65536, 4);
        burst(&mut pool, 300, 65536);
        assert_eq!(pool.live[2], RETAIN_MAX / 65536);
        assert_eq!(pool.free_len[2], RETAIN_MAX / 65536);
        let tiny_cap = pool.max_free[0];
        let mut qs = vec![OutboundQueue::default(); tiny_cap + 1000];
        for q in qs.iter_mut() {
            q.push(&mut pool, b"x");
        }
        for q in qs.iter_mut() {
            q.clear(&mut pool);
        }
        assert_eq!(pool.free_len[0], tiny_cap);
        assert_eq!(pool.live[0], tiny_cap);
    }

    #[test]
    fn single_small_chunk_is_reused() {
        let mut pool = ChunkPool::new(16384, 64);
        let mut qs = [OutboundQueue::default(); 20];
        for _ in 0..1000 {
            for q in qs.iter_mut() {
                q.push(&mut pool, &[1u8; 64]);
            }
            for q in qs.iter_mut() {
                q.advance(&mut pool, 64);
            }
        }
        // Geometric growth: 1, 2, 4, 8, 16 -> 32 chunks after 20 in use.
        assert_eq!(pool.capacity(), 32);
    }
}

#[cfg(test)]
mod coalesce {
    use super::*;

    fn drain(q: &mut OutboundQueue, pool: &mut ChunkPool) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..1000 {
            if q.is_empty() {
                break;
            }
            let mut iov = [IoSlice::new(&[]); 1];
            let n = q.slices(pool, &mut iov);
            assert_eq!(n, 1);
            let k = iov[0].len();
            out.extend_from_slice(&iov[0]);
            q.advance(pool, k);
        }
        out
    }

    /// Sixteen pipelined 130-byte answers: the first opens a tiny chunk,
    /// the rest a small one; joined, they leave in one send.
    #[test]
    fn short_front_chunks_become_one() {
        let mut pool = ChunkPool::new(16 << 10, 4);
        let mut q = OutboundQueue::default();
        let mut want = Vec::new();
        for i in 0..16u8 {
            let answer = [b'a' + i; 130];
            q.push(&mut pool, &answer);
            want.extend_from_slice(&answer);
        }
        assert_ne!(q.head, q.tail, "two chunks before");
        q.coalesce_front(&mut pool);
        assert_eq!(q.head, q.tail, "one chunk after");
        assert_eq!(q.len as usize, want.len());
        let mut iov = [IoSlice::new(&[]); 1];
        q.slices(&pool, &mut iov);
        assert_eq!(iov[0].len(), want.len());
        assert_eq!(drain(&mut q, &mut pool), want);
    }

    /// A partly sent front and a short shared chunk are joined; a large
    /// tail is not: order and bytes stay, big data is not copied.
    #[test]
    fn joins_short_shared_chunks_not_large_ones() {
        let mut pool = ChunkPool::new(16 << 10, 4);
        let mut q = OutboundQueue::default();
        q.push(&mut pool, b"0123456789");
        q.advance(&mut pool, 4);
        q.push(&mut pool, &[b'x'; 300]);
        let shared: Arc<[u8]> = Arc::from(&b"shared"[..]);
        q.push_shared(&mut pool, Arc::clone(&shared));
        q.push(&mut pool, &[b'y'; 10_000]);
        q.coalesce_front(&mut pool);
        let mut want = b"456789".to_vec();
        want.extend_from_slice(&[b'x'; 300]);
        want.extend_from_slice(b"shared");
        want.extend_from_slice(&[b'y'; 10_000]);
        let mut iov = [IoSlice::new(&[]); 1];
        q.slices(&pool, &mut iov);
        assert_eq!(iov[0].len(), 312, "the large tail stops the run");
        assert_eq!(Arc::strong_count(&shared), 1, "the copy let go of it");
        assert_eq!(drain(&mut q, &mut pool), want);
        assert_eq!(pool.queued, 0);
    }

    /// A subscriber with many short fan-out messages queued by reference:
    /// they leave in sends of at most `JOIN_MAX` bytes, not one each; a
    /// shared buffer past `SMALL_CHUNK` and a file segment are not copied.
    #[test]
    fn shared_messages_leave_together_within_bounds() {
        let mut pool = ChunkPool::new(64 << 10, 4);
        let mut q = OutboundQueue::default();
        let mut want = Vec::new();
        let msgs: Vec<Arc<[u8]>> = (0..400u32)
            .map(|i| Arc::from(&[i as u8; 102][..]))
            .collect();
        for m in &msgs {
            q.push_shared(&mut pool, Arc::clone(m));
            want.extend_from_slice(m);
        }
        let big: Arc<[u8]> = Arc::from(&[7u8; SMALL_CHUNK + 1][..]);
        q.push_shared(&mut pool, Arc::clone(&big));
        want.extend_from_slice(&big);
        q.push(&mut pool, b"after");
        want.extend_from_slice(b"after");
        let mut out = Vec::new();
        let mut sends = Vec::new();
        for _ in 0..1000 {
            if q.is_empty() {
                break;
            }
            q.coalesce_front(&mut pool);
            let mut iov = [IoSlice::new(&[]); 1];
            assert_eq!(q.slices(&pool, &mut iov), 1);
            let k = iov[0].len();
            if k == big.len() {
                assert_eq!(iov[0].as_ptr(), big.as_ptr(), "sent from the shared buffer");
            }
            out.extend_from_slice(&iov[0]);
            sends.push(k);
            q.advance(&mut pool, k);
        }
        assert_eq!(out, want);
        // 160 messages fit in 16 KiB: 400 leave in 3 sends, then the big
        // one, then the owned tail.
        assert_eq!(sends, [160 * 102, 160 * 102, 80 * 102, SMALL_CHUNK + 1, 5]);
        assert!(msgs.iter().all(|m| Arc::strong_count(m) == 1));
        assert_eq!(pool.queued, 0);
    }

    #[test]
    fn file_segment_ends_the_run() {
        let mut pool = ChunkPool::new(16 << 10, 4);
        let mut q = OutboundQueue::default();
        let file = Arc::new(File::open("/dev/null").expect("open /dev/null"));
        q.push(&mut pool, b"ab");
        q.push_shared(&mut pool, Arc::from(&b"cd"[..]));
        q.push_file(&mut pool, &file, 0, 10);
        q.push_shared(&mut pool, Arc::from(&b"ef"[..]));
        q.coalesce_front(&mut pool);
        let mut iov = [IoSlice::new(&[]); 4];
        assert_eq!(q.slices(&pool, &mut iov), 1, "up to the file segment");
        assert_eq!(&iov[0][..], b"abcd");
        q.advance(&mut pool, 4);
        assert_eq!(q.front_file(&pool).map(|f| f.2), Some(10));
        q.clear(&mut pool);
        assert_eq!(pool.queued, 0);
    }
}
