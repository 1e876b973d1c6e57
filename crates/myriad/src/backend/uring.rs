//! The io_uring backend.
//!
//! * Multishot accept per listener, re-armed when the kernel ends it.
//! * Multishot receive per connection with buffer selection from one
//!   per-loop provided-buffer ring: an idle connection has no buffer at all;
//!   a buffer is lent to a connection only for the duration of one
//!   completion and goes straight back into the ring (the tail is published
//!   once per batch).
//! * One `io_uring_enter` per loop turn: [`Backend::wait`] submits
//!   everything queued and waits in the same call. A turn stops
//!   dispatching after [`super::TURN_BUDGET`]; the next one submits what the
//!   handlers wrote and goes on with the completions left, without waiting.
//! * `SINGLE_ISSUER | DEFER_TASKRUN` where the kernel has them, so that
//!   completions are only produced when the loop asks for them (no
//!   interrupting task work in the middle of handler code).
//!
//! `user_data` layout: `kind << 56 | token` (token = 32-bit generation and
//! 24-bit slot).

use super::lend::{Keep, Lender};
use super::{
    sys, untoken, AddMode, Backend, Event, InFlight, RecvEnd, SendOutcome, Sock, TurnClock,
    UringParams,
};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

const K_RECV: u64 = 1;
const K_SEND: u64 = 2;
const K_CONNECT: u64 = 3;
const K_ACCEPT: u64 = 4;
const K_WAKE: u64 = 5;
const K_IGNORE: u64 = 6;
/// A one-shot poll for writability after a file send would have blocked.
const K_WRITABLE: u64 = 7;
const KIND_SHIFT: u32 = 56;
/// Connections a removed listener's last look at its queue takes at most
/// (`UringBackend::retire`).
const RETIRE_ACCEPTS: usize = 64;
const TOKEN_MASK: u64 = (1 << KIND_SHIFT) - 1;
const BGID: u16 = 0;
/// The bulk ring's buffer group (see `UringBackend::bulk`).
const BGID_BULK: u16 = 1;
/// A receive on the bulk ring.
const K_RECV_BULK: u64 = 8;
// From the kernel's io_uring uapi header (stable ABI); the `io-uring` crate
// does not re-export them.
const IOU_PBUF_RING_INC: u16 = 2;
const IORING_CQE_F_BUF_MORE: u32 = 1 << 4;
/// Connections whose slot is below this have their socket in the ring's
/// table of registered files too (see `UringBackend::fixed`).
const FIXED_MAX: u64 = 1 << 16;
/// Entries per page of [`Fixed`].
const FIXED_PAGE: usize = 1024;
/// What a registered-file slot is set to when its connection goes.
static NO_FD: RawFd = -1;

#[inline]
fn ud(kind: u64, token: u64) -> u64 {
    (kind << KIND_SHIFT) | (token & TOKEN_MASK)
}

/// Anonymous private mapping, freed on drop.
pub(super) struct Mapping {
    pub(super) ptr: *mut u8,
    len: usize,
}

impl Mapping {
    pub(super) fn new(len: usize) -> io::Result<Self> {
        // SAFETY: anonymous mapping with no file; the kernel chooses the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; no references remain
        // (the ring that used it is dropped first, see field order; the
        // buffer area is owned by a `Lender`, which `Lent`s keep alive).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// A provided-buffer ring: `count` entries pointing into one mapping of
/// `count * size` bytes. Pages of the buffer area are only touched (and so
/// only count in RSS) once the kernel has received data into them.
///
/// Only `circulating` buffers (bids `0..circulating`) are ever handed to the
/// kernel: it starts at [`BUFS_FIRST`] and doubles each time a receive finds
/// the ring dry (`ENOBUFS`, after which the connection's receive is armed
/// again), up to `count`. The kernel takes buffers in ring order and
/// returned ones go to the tail, so every buffer in circulation is used in
/// turn: with all `count` published from the start, a loop that only ever
/// received small messages touched the whole mapping (16 MiB by default)
/// once enough bytes had arrived (168 bytes per idle WebSocket connection
/// at 19,000 connections). Small traffic now cycles through the first
/// buffers only; bulk traffic grows the set within a few turns.
struct BufRing {
    entries: Mapping,
    /// The buffer area, shared with the slices of it lent to write queues.
    lender: Rc<Lender>,
    count: u16,
    size: u32,
    mask: u16,
    /// Local copy of the tail; published with a release store.
    tail: u16,
    /// Incremental consumption (`IOU_PBUF_RING_INC`, Linux 6.12+): the
    /// kernel packs successive receives into the same buffer, so a thousand
    /// 8-byte messages touch one page instead of a thousand buffers.
    inc: bool,
    /// With `inc`: where the next completion's bytes start in each buffer.
    offsets: Vec<u32>,
    /// Buffers handed to the kernel so far (bids `0..circulating`).
    circulating: u16,
    /// Buffers were pushed back since the tail was last published.
    returned: bool,
}

/// Buffers a ring starts with (see [`BufRing`]).
const BUFS_FIRST: u16 = 8;

impl BufRing {
    fn new(count: u16, size: u32) -> io::Result<Self> {
        if !count.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "provided-buffer count must be a power of two",
            ));
        }
        let entries = Mapping::new(count as usize * std::mem::size_of::<types::BufRingEntry>())?;
        // A quarter of the buffers may be lent at once: the ring keeps
        // three quarters for receiving whatever the handlers hold.
        let lender = Rc::new(Lender::new(count, size, u32::from(count / 4).max(1))?);
        let mut r = BufRing {
            entries,
            lender,
            count,
            size,
            mask: count - 1,
            tail: 0,
            inc: false,
            offsets: vec![0; count as usize],
            circulating: 0,
            returned: false,
        };
        r.grow();
        r.publish();
        Ok(r)
    }

    /// Puts more never-used buffers into circulation (doubling, up to
    /// `count`); false when all are already. The caller publishes.
    fn grow(&mut self) -> bool {
        let to = self
            .circulating
            .saturating_mul(2)
            .clamp(BUFS_FIRST.min(self.count), self.count);
        for bid in self.circulating..to {
            self.push(bid);
        }
        let grew = to > self.circulating;
        self.circulating = to;
        grew
    }

    fn base(&self) -> *mut types::BufRingEntry {
        self.entries.ptr.cast()
    }

    /// Queues buffer `bid` back at the local tail.
    fn push(&mut self, bid: u16) {
        let idx = (self.tail & self.mask) as usize;
        // SAFETY: idx < count, so the entry lies inside the entries mapping;
        // the kernel only reads entries between head and the published tail,
        // and this one is beyond the published tail until `publish`.
        let e = unsafe { &mut *self.base().add(idx) };
        e.set_addr(self.lender.buf_addr(bid));
        e.set_len(self.size);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field overlays the first entry's reserved field,
        // which is 2-byte aligned and shared with the kernel; an atomic
        // release store orders the entry writes before it.
        unsafe {
            let tail = types::BufRingEntry::tail(self.base()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Registers the ring, with incremental consumption where the kernel
    /// has it.
    fn register(&mut self, ring: &IoUring, bgid: u16, want_inc: bool) -> io::Result<()> {
        let inc = if want_inc {
            // SAFETY: the entries mapping lives as long as `self`, and
            // whoever owns both drops the ring first (see `UringBackend`'s
            // field order) or unregisters before dropping.
            unsafe {
                ring.submitter().register_buf_ring_with_flags(
                    self.entries.ptr as u64,
                    self.count,
                    bgid,
                    IOU_PBUF_RING_INC,
                )
            }
        } else {
            Err(io::Error::from(io::ErrorKind::Unsupported))
        };
        match inc {
            Ok(()) => {
                self.inc = true;
                Ok(())
            }
            // SAFETY: as above.
            Err(_) => unsafe {
                ring.submitter().register_buf_ring_with_flags(
                    self.entries.ptr as u64,
                    self.count,
                    bgid,
                    0,
                )
            },
        }
    }

    /// Where in buffer `bid` the bytes a completion delivered start (`None`
    /// for a bad completion), and whether the kernel is finished with the
    /// buffer after them.
    fn take(&mut self, bid: u16, len: usize, flags: u32) -> (Option<u32>, bool) {
        if bid >= self.count {
            return (None, false);
        }
        let (start, done) = if self.inc {
            let off = &mut self.offsets[bid as usize];
            let start = *off as usize;
            let more = flags & IORING_CQE_F_BUF_MORE != 0;
            *off = if more { (start + len) as u32 } else { 0 };
            (start, !more)
        } else {
            (0, true)
        };
        if start + len > self.size as usize {
            return (None, done);
        }
        (Some(start as u32), done)
    }

    /// Gives buffer `bid` back (unless lent slices still hold it: the last
    /// one to go does); true when it was pushed.
    fn finished(&mut self, bid: u16) -> bool {
        if self.lender.kernel_done(bid) {
            self.push(bid);
            true
        } else {
            false
        }
    }

    /// Pushes back the buffers whose last lent slice went.
    fn take_back(&mut self) {
        let lender = Rc::clone(&self.lender);
        if lender.take_back(&mut |bid| self.push(bid)) > 0 {
            self.returned = true;
        }
    }
}

fn build_ring(entries: u32) -> io::Result<IoUring> {
    let cq = entries.saturating_mul(4);
    let mut b = IoUring::builder();
    b.setup_cqsize(cq)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun();
    match b.build(entries) {
        Ok(r) => Ok(r),
        Err(_) => {
            // Kernels before 6.1 lack DEFER_TASKRUN; plain rings still work.
            let mut b = IoUring::builder();
            b.setup_cqsize(cq);
            b.build(entries)
        }
    }
}

/// A sparse table of registered files for connection sockets: as many
/// entries as the descriptor limit allows, up to [`FIXED_MAX`]; none when
/// the kernel cannot skip the completions of the updates that fill it
/// (`IOSQE_CQE_SKIP_SUCCESS`, Linux 5.17) or refuses the table.
fn fixed_table(ring: &IoUring) -> Fixed {
    let none = Fixed {
        len: 0,
        pages: Vec::new(),
    };
    if !ring.params().is_feature_skip_cqe_on_success() {
        return none;
    }
    let n = sys::nofile_limit().min(FIXED_MAX) as u32;
    if n == 0 || ring.submitter().register_files_sparse(n).is_err() {
        return none;
    }
    Fixed {
        len: n as usize,
        pages: Vec::new(),
    }
}

/// The user side of the registered-file table: the socket of slot `i` (or
/// -1), for slots below `len`. Kept in boxed pages allocated as slots are
/// first used (memory follows the connections, not the table size), which
/// never move: a page entry is also what the `FilesUpdate` operation that
/// sets the slot reads, possibly after more pages were added.
struct Fixed {
    len: usize,
    pages: Vec<Box<[RawFd; FIXED_PAGE]>>,
}

impl Fixed {
    fn get(&self, slot: usize) -> Option<RawFd> {
        self.pages
            .get(slot / FIXED_PAGE)
            .map(|p| p[slot % FIXED_PAGE])
    }

    /// The entry of `slot` (allocating its page), if the table has it.
    fn entry(&mut self, slot: usize) -> Option<&mut RawFd> {
        if slot >= self.len {
            return None;
        }
        while self.pages.len() <= slot / FIXED_PAGE {
            self.pages.push(Box::new([-1; FIXED_PAGE]));
        }
        Some(&mut self.pages[slot / FIXED_PAGE][slot % FIXED_PAGE])
    }
}

/// Checks that io_uring can be used here with everything this backend needs.
pub(crate) fn probe(params: &UringParams) -> io::Result<()> {
    let ring = build_ring(8)?;
    if !ring.params().is_feature_ext_arg() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "kernel lacks IORING_FEAT_EXT_ARG (needs Linux 5.11+)",
        ));
    }
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for (op, name) in [
        (opcode::RecvMulti::CODE, "recv"),
        (opcode::AcceptMulti::CODE, "accept"),
        (opcode::Send::CODE, "send"),
        (opcode::AsyncCancel2::CODE, "async_cancel"),
        (opcode::PollAdd::CODE, "poll_add"),
    ] {
        if !probe.is_supported(op) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring opcode {name} not supported"),
            ));
        }
    }
    let mut br = BufRing::new(
        params.buf_count.max(1).next_power_of_two(),
        4096.min(params.buf_size),
    )?;
    br.register(&ring, BGID, true)?;
    ring.submitter().unregister_buf_ring(BGID)?;
    drop(br);
    Ok(())
}

pub(crate) struct UringBackend {
    // Field order matters: the ring must be torn down before the buffer
    // memory it may still reference is unmapped.
    ring: IoUring,
    bufs: BufRing,
    /// A second ring, without incremental consumption, for connections
    /// that receive in bulk (a receive of a quarter buffer or more moves a
    /// connection there for good): on the incremental ring a large message
    /// is cut wherever the buffer it started in ends (a 16 KiB message in
    /// two of three receives with 32 KiB buffers), and the engine then
    /// copies it twice (kept as input, then into the reply) instead of
    /// lending it. Small traffic stays packed in the first ring. `None`
    /// when the first ring is not incremental (then it is the same) or the
    /// kernel refused a second one.
    bulk: Option<BufRing>,
    /// Connection slots on the bulk ring (one bit each).
    bulk_slots: Vec<u64>,
    waker: Arc<sys::EventFd>,
    wake_buf: Box<u64>,
    /// Entries that found both queues full; submitted first thing next turn.
    overflow: Vec<squeue::Entry>,
    listeners: Vec<Option<ListenerState>>,
    /// Removed listeners whose multishot accept has not ended yet: until
    /// it has, it may still accept a connection (which is served). Each
    /// keeps a duplicate of its socket for the last look at its queue
    /// (`retire`); `None` when `dup` failed.
    retiring: Vec<(usize, Option<OwnedFd>)>,
    batch: Vec<(u64, i32, u32)>,
    /// The next completion of `batch` to dispatch (non-zero only when a
    /// turn ran out of time).
    batch_pos: usize,
    /// Batched waits (`min_complete`, `min_wait_usec`), where the kernel
    /// has `IORING_FEAT_MIN_TIMEOUT`.
    batch_wait: Option<(u32, u32)>,
    /// The ring's registered-file table, by connection slot. Sends name
    /// the registered file, so the kernel takes no reference on the
    /// socket's file per send (`fget`/`fput` were 1.7% of an HTTP
    /// keep-alive server's CPU samples). Empty when the kernel cannot
    /// register files or skip successful completions.
    fixed: Fixed,
}

#[derive(Clone, Copy)]
struct ListenerState {
    fd: RawFd,
    armed: bool,
}

impl UringBackend {
    fn is_bulk(&self, slot: usize) -> bool {
        self.bulk_slots
            .get(slot / 64)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    fn set_bulk(&mut self, slot: usize, on: bool) {
        if slot / 64 >= self.bulk_slots.len() {
            if !on {
                return;
            }
            self.bulk_slots.resize(slot / 64 + 1, 0);
        }
        let w = &mut self.bulk_slots[slot / 64];
        if on {
            *w |= 1 << (slot % 64);
        } else {
            *w &= !(1 << (slot % 64));
        }
    }

    /// The receive kind (and so ring) of a connection.
    fn recv_kind(&self, token: u64) -> u64 {
        if self.is_bulk(untoken(token).0 as usize) {
            K_RECV_BULK
        } else {
            K_RECV
        }
    }

    /// Cancels the connection's receive: on the bulk ring, and on the
    /// first one too in case the move between them has not completed.
    fn cancel_recvs(&mut self, token: u64) {
        if self.recv_kind(token) == K_RECV_BULK {
            self.cancel_ud(ud(K_RECV_BULK, token));
        }
        self.cancel_ud(ud(K_RECV, token));
    }

    /// Cancels the request with this user data (found by the kernel by
    /// user data, not by scanning every request on the ring).
    fn cancel_ud(&mut self, user_data: u64) {
        let e = opcode::AsyncCancel::new(user_data)
            .build()
            .user_data(ud(K_IGNORE, 0));
        self.push(e);
    }

    pub(crate) fn new(params: &UringParams, waker: Arc<sys::EventFd>) -> io::Result<Self> {
        let ring = build_ring(params.sq_entries.max(8).next_power_of_two())?;
        let mut bufs = BufRing::new(
            params.buf_count.max(1).next_power_of_two(),
            params.buf_size.max(64),
        )?;
        bufs.register(&ring, BGID, true)?;
        let bulk = if bufs.inc {
            let made = BufRing::new(bufs.count, bufs.size)
                .and_then(|mut b| b.register(&ring, BGID_BULK, false).map(|()| b));
            match made {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::debug!(error = %e, "no bulk provided-buffer ring");
                    None
                }
            }
        } else {
            None
        };
        tracing::debug!(
            incremental = bufs.inc,
            bulk = bulk.is_some(),
            count = bufs.count,
            size = bufs.size,
            "provided-buffer ring"
        );
        let fixed = fixed_table(&ring);
        let mut me = UringBackend {
            ring,
            bufs,
            bulk,
            bulk_slots: Vec::new(),
            waker,
            overflow: Vec::new(),
            wake_buf: Box::new(0),
            listeners: Vec::new(),
            retiring: Vec::new(),
            batch: Vec::with_capacity(512),
            batch_pos: 0,
            batch_wait: None,
            fixed,
        };
        if params.batch_wait.is_some() {
            if me.ring.params().is_feature_min_timeout() {
                me.batch_wait = params.batch_wait;
            } else {
                tracing::debug!("kernel lacks IORING_FEAT_MIN_TIMEOUT: batched waits off");
            }
        }
        me.arm_wake();
        Ok(me)
    }

    fn push(&mut self, e: squeue::Entry) {
        if self.overflow.is_empty() && self.try_push(&e) {
            return;
        }
        // Queue full: hand what we have to the kernel and retry once.
        match self.ring.submit() {
            Ok(_) if self.overflow.is_empty() && self.try_push(&e) => {}
            Ok(_) | Err(_) => {
                // EBUSY (completion queue overflowing): keep the entry for the
                // next turn. Allocation only happens on this overload path.
                self.overflow.push(e);
            }
        }
    }

    fn try_push(&mut self, e: &squeue::Entry) -> bool {
        // SAFETY: every entry pushed references either no memory or memory
        // that outlives the operation: pooled send chunks (kept until the
        // completion), the boxed wake buffer, the provided buffer ring, the
        // registered-file pages and `NO_FD` (read by `FilesUpdate`; pages are
        // boxed, never freed before the ring, whose field comes first).
        unsafe { self.ring.submission().push(e).is_ok() }
    }

    fn flush_overflow(&mut self) {
        while !self.overflow.is_empty() {
            let e = self.overflow[0].clone();
            if !self.try_push(&e) {
                if self.ring.submit().is_err() {
                    return;
                }
                if !self.try_push(&e) {
                    return;
                }
            }
            self.overflow.remove(0);
        }
    }

    /// Points registered-file slot `slot` at `fd` (or at nothing, -1),
    /// with an update operation executed in order with the entries around
    /// it: the sends queued after it see the new file, and a closed
    /// connection's socket is released at the next submission.
    fn set_fixed(&mut self, slot: usize, fd: RawFd) {
        let Some(e) = self.fixed.entry(slot) else {
            return;
        };
        *e = fd;
        let ptr: *const RawFd = if fd < 0 { &NO_FD } else { e };
        let e = opcode::FilesUpdate::new(ptr, 1)
            .offset(slot as i32)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(ud(K_IGNORE, 0));
        self.push(e);
    }

    fn arm_wake(&mut self) {
        let e = opcode::Read::new(
            types::Fd(self.waker.fd()),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(ud(K_WAKE, 0));
        self.push(e);
    }

    /// The removed `listener`'s accept has ended: accept what its queue
    /// holds (bounded), then let the socket go.
    ///
    /// Why: io_uring waits for a listening socket as an exclusive waiter,
    /// so a new connection wakes one ring only. When that is this ring's
    /// accept while its cancellation is under way (a reload handing the
    /// socket to a new engine), the wake-up is spent and the connection
    /// stays queued with the new engine never told: it would wait for the
    /// next connection to arrive (seen as a client stalled after a reload).
    /// Whatever this look finds is served here, like any connection a
    /// removed listener accepted.
    fn retire(&mut self, listener: usize, f: &mut dyn FnMut(Event<'_>)) {
        let Some(p) = self.retiring.iter().position(|r| r.0 == listener) else {
            return;
        };
        let Some(fd) = self.retiring.swap_remove(p).1 else {
            return;
        };
        // A queue shared with a running engine may keep filling; what is
        // left after this many is woken for that engine's accept. An error
        // (EMFILE) ends the look: the listener is gone, nothing to pause.
        let _ = super::accept_queued(fd.as_raw_fd(), listener, RETIRE_ACCEPTS, f);
    }

    fn arm_accept_fd(&mut self, listener: usize, fd: RawFd) {
        let e = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(ud(K_ACCEPT, listener as u64));
        self.push(e);
    }

    /// Dispatches the batch from `batch_pos` on, then publishes the
    /// buffers it gave back. Returns false if `clock` ran out with
    /// completions left (kept for the next turn), true when the batch is
    /// done (and emptied).
    fn dispatch(&mut self, f: &mut dyn FnMut(Event<'_>), clock: &TurnClock) -> bool {
        let done = self.dispatch_batch(f, clock);
        for br in std::iter::once(&mut self.bufs).chain(self.bulk.as_mut()) {
            // Buffers whose lent slices were sent (or dropped with their
            // connection) during the dispatch go back too.
            br.take_back();
            if br.returned {
                br.publish();
                br.returned = false;
            }
        }
        done
    }

    fn dispatch_batch(&mut self, f: &mut dyn FnMut(Event<'_>), clock: &TurnClock) -> bool {
        let mut i = self.batch_pos;
        while i < self.batch.len() {
            if clock.over(i) {
                self.batch_pos = i;
                return false;
            }
            let (user_data, res, flags) = self.batch[i];
            i += 1;
            let kind = user_data >> KIND_SHIFT;
            let token = user_data & TOKEN_MASK;
            match kind {
                K_RECV | K_RECV_BULK => {
                    let bulk = kind == K_RECV_BULK && self.bulk.is_some();
                    let br = match self.bulk.as_mut() {
                        Some(b) if bulk => b,
                        _ => &mut self.bufs,
                    };
                    let mut switch = false;
                    if res > 0 {
                        match cqueue::buffer_select(flags) {
                            Some(bid) => {
                                let len = res as usize;
                                let (start, done) = br.take(bid, len, flags);
                                if let Some(start) = start {
                                    // SAFETY: the kernel wrote these bytes
                                    // with this completion and does not write
                                    // them again until the buffer is back in
                                    // the ring, which is not before this call
                                    // returned and no lent slice of them is
                                    // left; `take` checked the bounds. `Lent`s
                                    // are only made after the handler's last
                                    // use of `data`.
                                    let data =
                                        unsafe { br.lender.slice_mut(bid, start as usize, len) };
                                    let keep = Keep {
                                        lender: &br.lender,
                                        bid,
                                        start,
                                        len: len as u32,
                                    };
                                    f(Event::RecvLendable { token, data, keep });
                                }
                                if done && br.finished(bid) {
                                    br.returned = true;
                                }
                                // A large receive on the incremental ring:
                                // move the connection to the bulk ring.
                                switch = !bulk && br.inc && len >= br.size as usize / 4;
                            }
                            None => f(Event::RecvEnd {
                                token,
                                how: RecvEnd::Error(libc::EIO),
                            }),
                        }
                        if !cqueue::more(flags) {
                            f(Event::RecvEnd {
                                token,
                                how: RecvEnd::Stopped,
                            });
                        } else if switch && self.bulk.is_some() {
                            let slot = untoken(token).0 as usize;
                            if !self.is_bulk(slot) {
                                self.set_bulk(slot, true);
                                // ends with `ECANCELED` (the core re-arms it,
                                // on the bulk ring); no data is lost
                                self.cancel_ud(ud(K_RECV, token));
                            }
                        }
                    } else {
                        let how = match -res {
                            0 => RecvEnd::Eof,
                            libc::ENOBUFS => {
                                // the connection's receive is armed again
                                // by the core; give it more buffers first
                                if br.grow() {
                                    br.returned = true;
                                }
                                RecvEnd::NoBuffers
                            }
                            libc::ECANCELED => RecvEnd::Stopped,
                            e => RecvEnd::Error(e),
                        };
                        if let Some(bid) = cqueue::buffer_select(flags) {
                            if let (_, true) = br.take(bid, 0, flags) {
                                if br.finished(bid) {
                                    br.returned = true;
                                }
                            }
                        }
                        if cqueue::more(flags) && how != RecvEnd::Eof {
                            // A non-terminal error completion: nothing to report.
                            continue;
                        }
                        f(Event::RecvEnd { token, how });
                    }
                }
                K_SEND => f(Event::Sent { token, res }),
                // Ready, failed or cancelled: the core retries the send
                // (and finds the error there) or drops a stale token.
                K_WRITABLE => f(Event::Writable { token }),
                K_CONNECT => f(Event::Connected { token, res }),
                K_ACCEPT => {
                    let idx = token as usize;
                    let more = cqueue::more(flags);
                    let state = self.listeners.get(idx).copied().flatten();
                    if res >= 0 {
                        // Accepted even if the listener was just removed:
                        // the core serves it (a reload hands the socket to
                        // another engine; closing it would reset a client).
                        f(Event::Accept {
                            listener: idx,
                            res: Ok(Sock(res)),
                        });
                    }
                    match state {
                        // a removed listener's accept has ended
                        None if !more => self.retire(idx, f),
                        None => {}
                        // accepted; the multishot ended: arm it again
                        Some(st) if res >= 0 && !more => self.arm_accept_fd(idx, st.fd),
                        Some(_) if res >= 0 => {}
                        Some(st) => match -res {
                            libc::ECANCELED => {}
                            libc::EINTR | libc::ECONNABORTED | libc::EPROTO | libc::EAGAIN => {
                                if !more {
                                    self.arm_accept_fd(idx, st.fd);
                                }
                            }
                            errno => {
                                if !more {
                                    self.listeners[idx] = Some(ListenerState {
                                        fd: st.fd,
                                        armed: false,
                                    });
                                }
                                f(Event::Accept {
                                    listener: idx,
                                    res: Err(errno),
                                });
                            }
                        },
                    }
                }
                K_WAKE => {
                    f(Event::Wake);
                    self.arm_wake();
                }
                _ => {}
            }
        }
        self.batch_pos = 0;
        self.batch.clear();
        true
    }
}

impl Backend for UringBackend {
    fn add_listener(&mut self, sock: Sock) -> io::Result<usize> {
        let fd = sock.0;
        let idx = self.listeners.len();
        self.listeners.push(Some(ListenerState { fd, armed: true }));
        self.arm_accept_fd(idx, fd);
        Ok(idx)
    }

    fn arm_accept(&mut self, listener: usize) {
        if let Some(Some(st)) = self.listeners.get(listener).copied() {
            if !st.armed {
                self.listeners[listener] = Some(ListenerState {
                    fd: st.fd,
                    armed: true,
                });
                self.arm_accept_fd(listener, st.fd);
            }
        }
    }

    fn remove_listener(&mut self, listener: usize) {
        if let Some(Some(st)) = self.listeners.get(listener).copied() {
            self.listeners[listener] = None;
            if st.armed {
                let dup = sys::dup_cloexec(st.fd)
                    .map_err(|e| tracing::warn!(error = %e, "cannot keep a removed listener for a last look at its queue"))
                    .ok();
                self.retiring.push((listener, dup));
            }
            self.cancel_ud(ud(K_ACCEPT, listener as u64));
        }
    }

    fn accepts_pending(&self) -> bool {
        !self.retiring.is_empty()
    }

    fn add_conn(&mut self, token: u64, sock: Sock, mode: AddMode) -> io::Result<()> {
        let fd = sock.0;
        let slot = untoken(token).0 as usize;
        self.set_fixed(slot, fd);
        // a new connection starts on the incremental ring
        self.set_bulk(slot, false);
        match mode {
            AddMode::Recv => self.arm_recv(token, sock),
            AddMode::Connect => {
                let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
                    .build()
                    .user_data(ud(K_CONNECT, token));
                self.push(e);
            }
        }
        Ok(())
    }

    fn arm_recv(&mut self, token: u64, sock: Sock) {
        let fd = sock.0;
        let kind = self.recv_kind(token);
        let group = if kind == K_RECV_BULK { BGID_BULK } else { BGID };
        let e = opcode::RecvMulti::new(types::Fd(fd), group)
            .build()
            .user_data(ud(kind, token));
        self.push(e);
    }

    fn cancel_recv(&mut self, token: u64, _sock: Sock) -> bool {
        self.cancel_recvs(token);
        false
    }

    fn cancel_all(&mut self, token: u64, sock: Sock, ops: InFlight) -> bool {
        let fd = sock.0;
        // Not a cancellation by descriptor: the kernel finds those by
        // scanning every request in flight on the ring, so closing many of
        // 20,000 connections at once went quadratic (a million-connection
        // run spent 87% of its CPU in `io_cancel_req_match`). The receive
        // is ended by shutting down the read side instead, which wakes it
        // and completes it with 0 (a constant-time syscall that sends
        // nothing to the peer); a send or connect, rare at close, is
        // cancelled by its user data.
        if ops.recv && sys::shutdown(fd, libc::SHUT_RD).is_err() {
            self.cancel_recvs(token);
        }
        if ops.send {
            self.cancel_ud(ud(K_SEND, token));
        }
        if ops.connect {
            self.cancel_ud(ud(K_CONNECT, token));
        }
        if ops.writable {
            self.cancel_ud(ud(K_WRITABLE, token));
        }
        false
    }

    fn sends_one_buffer(&self) -> bool {
        true
    }

    fn send(&mut self, token: u64, sock: Sock, bufs: &[io::IoSlice<'_>]) -> SendOutcome {
        let fd = sock.0;
        let Some(b) = bufs.first() else {
            return SendOutcome::Done(Ok(0));
        };
        let (ptr, len) = (b.as_ptr(), b.len().min(u32::MAX as usize) as u32);
        let slot = untoken(token).0 as usize;
        let e = if self.fixed.get(slot) == Some(fd) {
            opcode::Send::new(types::Fixed(slot as u32), ptr, len)
        } else {
            opcode::Send::new(types::Fd(fd), ptr, len)
        };
        let e = e
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(ud(K_SEND, token));
        self.push(e);
        SendOutcome::InFlight
    }

    /// `sendfile(2)` right away: io_uring has no sendfile operation, and
    /// splicing through a pipe would cost two descriptors per connection
    /// sending a file. The socket is non-blocking; when its buffer is full
    /// a one-shot poll waits for room.
    fn send_file(
        &mut self,
        token: u64,
        sock: Sock,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> SendOutcome {
        use std::os::fd::AsRawFd;
        let fd = sock.0;
        match sys::sendfile(fd, file.as_raw_fd(), offset, len) {
            Ok(n) => SendOutcome::Done(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
                    .build()
                    .user_data(ud(K_WRITABLE, token));
                self.push(e);
                SendOutcome::WouldBlock
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => SendOutcome::Done(Ok(0)),
            Err(e) => SendOutcome::Done(Err(e)),
        }
    }

    fn remove_conn(&mut self, token: u64, sock: Sock) {
        // Until the table lets go of it, closing the descriptor would not
        // end the socket (no FIN, no reset).
        let fd = sock.0;
        let slot = untoken(token).0 as usize;
        if self.fixed.get(slot) == Some(fd) {
            self.set_fixed(slot, -1);
        }
    }

    fn wait(&mut self, timeout: Option<Duration>, f: &mut dyn FnMut(Event<'_>)) -> io::Result<()> {
        if !self.overflow.is_empty() {
            self.flush_overflow();
        }
        if self.batch_pos < self.batch.len() {
            // The last turn ran out of time with completions left: send
            // what it produced first (no waiting), then go on with them.
            if let Err(e) = self.ring.submit() {
                match e.raw_os_error() {
                    Some(libc::EINTR) | Some(libc::EBUSY) => {}
                    _ => return Err(e),
                }
            }
            self.dispatch(f, &TurnClock::start(self.batch_pos));
            return Ok(());
        }
        let ts = timeout.map(|d| {
            types::Timespec::new()
                .sec(d.as_secs())
                .nsec(d.subsec_nanos())
        });
        let res = match (&ts, self.batch_wait) {
            (None, None) => self.ring.submit_and_wait(1),
            (Some(ts), None) => {
                let args = types::SubmitArgs::new().timespec(ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            // Wait for `n` completions; once `us` passed, return with
            // whatever is there (at least one); with none, wait on for the
            // first up to the timeout.
            (ts, Some((n, us))) => {
                let args = types::SubmitArgs::new().min_wait_usec(us);
                match ts {
                    Some(ts) => self
                        .ring
                        .submitter()
                        .submit_with_args(n as usize, &args.timespec(ts)),
                    None => self.ring.submitter().submit_with_args(n as usize, &args),
                }
            }
        };
        if let Err(e) = res {
            match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) => {}
                _ => return Err(e),
            }
        }
        // Drain in batches so that completions produced while dispatching
        // (none are, with DEFER_TASKRUN, but older kernels post inline) are
        // picked up in the same turn.
        // One clock for the whole turn, across the batches it drains.
        let clock = TurnClock::start(0);
        for _ in 0..64 {
            self.batch.clear();
            {
                let cap = self.batch.capacity();
                let mut cq = self.ring.completion();
                cq.sync();
                for cqe in &mut cq {
                    self.batch
                        .push((cqe.user_data(), cqe.result(), cqe.flags()));
                    if self.batch.len() == cap {
                        break;
                    }
                }
            }
            if self.batch.is_empty() {
                break;
            }
            if !self.dispatch(f, &clock) {
                break;
            }
        }
        Ok(())
    }
}
