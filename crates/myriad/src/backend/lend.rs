//! Receive buffers lent to write queues: sending a slice of what was
//! received without copying it (`Ctx::write_from_input`).
//!
//! The io_uring backend receives into provided buffers that go back to the
//! kernel as soon as the completion has been handed on. A handler that
//! echoes (part of) what it received would have to copy it into a chunk of
//! its write queue, because the send happens after the buffer went back.
//! Instead the reactor may *lend* the slice: a [`Lent`] in the write queue
//! keeps its buffer out of the ring until it is dropped (the send
//! completed, or the connection was torn down after its operations ended).
//!
//! Every buffer has a count of the [`Lent`]s that refer to it. The backend
//! gives a buffer back when the kernel is done with it *and* its count is
//! zero: whichever of the two comes last does it (a dropped `Lent` queues
//! the buffer for the backend, which pushes it at its next dispatch).
//! At most `cap` `Lent`s exist per loop ([`Keep::can_lend`]): past that the
//! reactor copies, so the ring cannot be starved by held buffers.

use std::cell::{Cell, RefCell, RefMut};
use std::rc::Rc;

use super::uring::Mapping;

/// The buffer area of a provided-buffer ring and the lending bookkeeping,
/// shared by the backend and the [`Lent`]s in write queues (one loop
/// thread: `Rc` and cells) (which keep the
/// memory mapped after the backend is gone, should they outlive it).
pub(crate) struct Lender {
    mem: Mapping,
    size: u32,
    count: u16,
    cap: u32,
    /// `Lent`s alive: read on every receive completion.
    out: Cell<u32>,
    /// `State::back` is not empty.
    has_back: Cell<bool>,
    state: RefCell<State>,
}

struct State {
    /// `Lent`s per buffer.
    holds: Vec<u16>,
    /// The kernel finished with the buffer while it was lent: whoever
    /// drops its last `Lent` queues it in `back`.
    kernel_done: Vec<bool>,
    /// Buffers to give back to the kernel.
    back: Vec<u16>,
}

impl Lender {
    /// `count` buffers of `size` bytes, at most `cap` `Lent`s at once.
    pub(crate) fn new(count: u16, size: u32, cap: u32) -> std::io::Result<Self> {
        Ok(Lender {
            mem: Mapping::new(count as usize * size as usize)?,
            size,
            count,
            cap,
            out: Cell::new(0),
            has_back: Cell::new(false),
            state: RefCell::new(State {
                holds: vec![0; count as usize],
                kernel_done: vec![false; count as usize],
                back: Vec::new(),
            }),
        })
    }

    /// Never held across a call out of this module, so never borrowed twice.
    fn lock(&self) -> RefMut<'_, State> {
        self.state.borrow_mut()
    }

    /// Address of buffer `bid` (for the ring's entries).
    pub(crate) fn buf_addr(&self, bid: u16) -> u64 {
        self.mem.ptr as u64 + u64::from(bid) * u64::from(self.size)
    }

    /// `Lent`s alive.
    #[cfg(test)]
    pub(crate) fn lent(&self) -> u32 {
        self.out.get()
    }

    /// The bytes `start .. start + len` of buffer `bid`, received by a
    /// completion.
    ///
    /// # Safety
    /// The kernel must have written these bytes and not be writing them
    /// again (the buffer is not back in the ring), no other reference to
    /// them may be alive while the returned one is (no `Lent` may be read
    /// over them: `Lent`s are only made from such a slice after its last
    /// use), and `bid < count`, `start + len <= size`.
    pub(crate) unsafe fn slice_mut<'a>(&self, bid: u16, start: usize, len: usize) -> &'a mut [u8] {
        debug_assert!(bid < self.count && start + len <= self.size as usize);
        // SAFETY: in bounds of the mapping (caller's contract), which lives
        // as long as `self`; exclusive by the caller's contract.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.mem.ptr.add(bid as usize * self.size as usize + start),
                len,
            )
        }
    }

    /// The kernel is done with buffer `bid` (its last completion was handed
    /// on). True when it can go back to the ring now; false when `Lent`s
    /// still hold it (the last one to go queues it).
    pub(crate) fn kernel_done(&self, bid: u16) -> bool {
        if self.out.get() == 0 {
            return true;
        }
        let mut st = self.lock();
        if st.holds[bid as usize] == 0 {
            true
        } else {
            st.kernel_done[bid as usize] = true;
            false
        }
    }

    /// Moves the buffers whose last `Lent` went into `to` (they go back to
    /// the ring); returns how many.
    pub(crate) fn take_back(&self, to: &mut impl FnMut(u16)) -> usize {
        if !self.has_back.replace(false) {
            return 0;
        }
        let mut st = self.lock();
        let n = st.back.len();
        for bid in st.back.drain(..) {
            to(bid);
        }
        n
    }
}

/// The right to lend from the receive buffer of the completion being
/// handed on (io_uring only): [`Keep::lend`] makes a [`Lent`].
pub(crate) struct Keep<'a> {
    pub(crate) lender: &'a Rc<Lender>,
    pub(crate) bid: u16,
    /// Where the completion's bytes start in the buffer.
    pub(crate) start: u32,
    /// The completion's length.
    pub(crate) len: u32,
}

impl Keep<'_> {
    /// Whether a `Lent` could be made now (the loop's cap not reached).
    pub(crate) fn can_lend(&self) -> bool {
        self.lender.out.get() < self.lender.cap
    }

    /// Lends bytes `off .. off + len` of the completion's data; `None` when
    /// the cap is reached or the range is outside the data. Call only once
    /// done with the completion's `&mut` slice over these bytes.
    pub(crate) fn lend(&self, off: usize, len: usize) -> Option<Lent> {
        if !self.can_lend() || off.checked_add(len)? > self.len as usize || len == 0 {
            return None;
        }
        let mut st = self.lender.lock();
        st.holds[self.bid as usize] += 1;
        drop(st);
        self.lender.out.set(self.lender.out.get() + 1);
        Some(Lent {
            lender: Rc::clone(self.lender),
            bid: self.bid,
            off: self.start + off as u32,
            len: len as u32,
        })
    }
}

/// A slice of a receive buffer kept out of the ring while a write queue
/// holds it. Dropping it releases its hold (exactly once: it is not
/// `Clone`).
pub(crate) struct Lent {
    lender: Rc<Lender>,
    bid: u16,
    off: u32,
    len: u32,
}

impl Lent {
    /// The lent bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: in bounds (checked by `Keep::lend` against the
        // completion, which lies inside buffer `bid`); the mapping lives as
        // long as the `Rc`. While this `Lent` exists the buffer's hold
        // count is positive, so the backend does not give it back to the
        // kernel, which therefore does not write it; with incremental
        // consumption the kernel may write *later* bytes of the same
        // buffer, never these. The reactor wrote its last byte here (the
        // in-place header) before making the `Lent` and no `&mut` over
        // these bytes is made again while it lives.
        unsafe {
            std::slice::from_raw_parts(
                self.lender
                    .mem
                    .ptr
                    .add(self.bid as usize * self.lender.size as usize + self.off as usize),
                self.len as usize,
            )
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let l = &*self.lender;
        let mut st = l.lock();
        let h = &mut st.holds[self.bid as usize];
        *h -= 1;
        if *h == 0 && st.kernel_done[self.bid as usize] {
            st.kernel_done[self.bid as usize] = false;
            st.back.push(self.bid);
            l.has_back.set(true);
        }
        drop(st);
        l.out.set(l.out.get() - 1);
    }
}

impl std::fmt::Debug for Lent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lent(buf {} @{}+{})", self.bid, self.off, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(l: &Rc<Lender>, bid: u16, start: u32, len: u32) -> Keep<'_> {
        Keep {
            lender: l,
            bid,
            start,
            len,
        }
    }

    fn back(l: &Lender) -> Vec<u16> {
        let mut v = Vec::new();
        l.take_back(&mut |b| v.push(b));
        v
    }

    #[test]
    fn a_buffer_goes_back_once_after_kernel_and_lents_are_done() {
        let l = Rc::new(Lender::new(4, 4096, 8).expect("mapping"));
        // Not lent: back at once.
        assert!(l.kernel_done(0));
        // Lent, kernel done first: the last Lent gives it back, once.
        // SAFETY: buffer 1 is not in a ring; nothing else refers to it.
        let data = unsafe { l.slice_mut(1, 100, 200) };
        data.fill(7);
        let k = keep(&l, 1, 100, 200);
        let a = k.lend(10, 50).expect("lend");
        let b = k.lend(60, 50).expect("lend");
        assert_eq!(a.bytes(), &[7u8; 50][..]);
        assert_eq!(l.lent(), 2);
        assert!(!l.kernel_done(1));
        drop(a);
        assert!(back(&l).is_empty());
        drop(b);
        assert_eq!(back(&l), vec![1]);
        assert!(back(&l).is_empty());
        assert_eq!(l.lent(), 0);
        // Lents gone before the kernel is done: the backend gives it back.
        let c = keep(&l, 2, 0, 10).lend(0, 10).expect("lend");
        drop(c);
        assert!(back(&l).is_empty());
        assert!(l.kernel_done(2));
    }

    #[test]
    fn the_cap_and_the_bounds_are_respected() {
        let l = Rc::new(Lender::new(2, 1024, 2).expect("mapping"));
        let k = keep(&l, 0, 0, 100);
        assert!(k.lend(90, 11).is_none(), "past the completion");
        assert!(k.lend(0, 0).is_none());
        let a = k.lend(0, 10).expect("lend");
        let b = k.lend(10, 10).expect("lend");
        assert!(!k.can_lend());
        assert!(k.lend(20, 10).is_none(), "cap reached");
        drop(a);
        assert!(k.can_lend());
        drop(b);
        assert!(l.kernel_done(0));
    }
}
