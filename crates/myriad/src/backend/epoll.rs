//! The epoll fallback: readiness turned into completions.
//!
//! Level-triggered, one `recv` per ready connection per turn (fairness: a
//! fire-hose peer cannot starve the others), into one per-loop buffer, so an
//! idle connection owns no receive buffer here either. Sends are attempted
//! at once with `sendmsg`; only on `EAGAIN` does the connection wait for
//! `EPOLLOUT`. Interest is kept in one byte per slot; a connection with no
//! interest is removed from the epoll set altogether, because `EPOLLHUP` and
//! `EPOLLERR` are reported even for an empty mask and would spin the loop.

use super::{
    sys, untoken, AddMode, Backend, Event, InFlight, RecvEnd, SendOutcome, Sock, TurnClock,
};
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

const READ: u8 = 1;
const WRITE: u8 = 2;
const CONNECT: u8 = 4;
const REG: u8 = 8;

const WAKE_TOKEN: u64 = 1 << 62;
const LISTENER_TAG: u64 = 1 << 63;
/// Replaces the token of a left-over event whose connection was closed.
const STALE_TOKEN: u64 = 1 << 61;
/// Accepts per listener per turn: bounded so that a connection storm does
/// not starve established connections.
const ACCEPT_BATCH: usize = 256;

pub(crate) struct EpollBackend {
    ep: RawFd,
    waker: Arc<sys::EventFd>,
    events: Vec<libc::epoll_event>,
    /// The next of `events` to hand on (below `events.len()` only when a
    /// turn ran out of time).
    ev_pos: usize,
    /// Per-slot descriptor and interest bits (8 bytes per connection).
    interest: Vec<(RawFd, u8)>,
    listeners: Vec<Option<(RawFd, bool)>>,
    buf: Box<[u8]>,
}

impl EpollBackend {
    pub(crate) fn new(read_buf: usize, waker: Arc<sys::EventFd>) -> io::Result<Self> {
        // SAFETY: plain syscall.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        let me = EpollBackend {
            ep,
            waker,
            events: Vec::with_capacity(1024),
            ev_pos: 0,
            interest: Vec::new(),
            listeners: Vec::new(),
            buf: vec![0u8; read_buf.max(4096)].into_boxed_slice(),
        };
        me.ctl(
            libc::EPOLL_CTL_ADD,
            me.waker.fd(),
            libc::EPOLLIN as u32,
            WAKE_TOKEN,
        )?;
        Ok(me)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: `ev` is a valid epoll_event on the stack for the call.
        let r = unsafe { libc::epoll_ctl(self.ep, op, fd, &mut ev) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Applies new interest bits for a slot: ADD, MOD or DEL as needed.
    fn set(&mut self, token: u64, fd: RawFd, bits: u8) {
        let (slot, _) = untoken(token);
        let slot = slot as usize;
        if self.interest.len() <= slot {
            self.interest.resize(slot + 1, (-1, 0));
        }
        let old = self.interest[slot].1;
        let want = bits & (READ | WRITE | CONNECT);
        let mut events = 0u32;
        if want & READ != 0 {
            events |= libc::EPOLLIN as u32;
        }
        if want & (WRITE | CONNECT) != 0 {
            events |= libc::EPOLLOUT as u32;
        }
        let res = if events == 0 {
            if old & REG != 0 {
                self.interest[slot] = (fd, 0);
                self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
            } else {
                self.interest[slot] = (fd, 0);
                Ok(())
            }
        } else if old & REG != 0 {
            if old & !REG == want {
                return;
            }
            self.interest[slot] = (fd, want | REG);
            self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
        } else {
            self.interest[slot] = (fd, want | REG);
            self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
        };
        if let Err(e) = res {
            // Only possible for a descriptor the kernel no longer knows;
            // the next send or recv on it reports the real error.
            tracing::debug!(fd, error = %e, "epoll_ctl failed");
        }
    }

    fn bits(&self, token: u64) -> u8 {
        let (slot, _) = untoken(token);
        self.interest.get(slot as usize).map_or(0, |s| s.1)
    }

    fn clear_bits(&mut self, slot: u32, bits: u8) {
        if let Some(s) = self.interest.get_mut(slot as usize) {
            s.1 &= !bits;
        }
    }
}

impl Drop for EpollBackend {
    fn drop(&mut self) {
        sys::close(self.ep);
    }
}

impl Backend for EpollBackend {
    fn add_listener(&mut self, sock: Sock) -> io::Result<usize> {
        let fd = sock.0;
        let idx = self.listeners.len();
        self.ctl(
            libc::EPOLL_CTL_ADD,
            fd,
            libc::EPOLLIN as u32,
            LISTENER_TAG | idx as u64,
        )?;
        self.listeners.push(Some((fd, true)));
        Ok(idx)
    }

    fn arm_accept(&mut self, listener: usize) {
        if let Some(Some((fd, armed))) = self.listeners.get(listener).copied() {
            if !armed {
                let _ = self.ctl(
                    libc::EPOLL_CTL_MOD,
                    fd,
                    libc::EPOLLIN as u32,
                    LISTENER_TAG | listener as u64,
                );
                self.listeners[listener] = Some((fd, true));
            }
        }
    }

    fn remove_listener(&mut self, listener: usize) {
        if let Some(Some((fd, _))) = self.listeners.get(listener).copied() {
            let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
            self.listeners[listener] = None;
        }
    }

    fn add_conn(&mut self, token: u64, sock: Sock, mode: AddMode) -> io::Result<()> {
        let fd = sock.0;
        let bits = match mode {
            AddMode::Recv => READ,
            AddMode::Connect => CONNECT,
        };
        self.set(token, fd, bits);
        Ok(())
    }

    fn arm_recv(&mut self, token: u64, sock: Sock) {
        let fd = sock.0;
        let b = self.bits(token);
        self.set(token, fd, b | READ);
    }

    fn cancel_recv(&mut self, token: u64, sock: Sock) -> bool {
        let fd = sock.0;
        let b = self.bits(token);
        self.set(token, fd, b & !READ);
        true
    }

    fn cancel_all(&mut self, token: u64, sock: Sock, _ops: InFlight) -> bool {
        let fd = sock.0;
        self.set(token, fd, 0);
        true
    }

    fn send(&mut self, token: u64, sock: Sock, bufs: &[io::IoSlice<'_>]) -> SendOutcome {
        let fd = sock.0;
        match sys::send_vectored(fd, bufs) {
            Ok(n) => SendOutcome::Done(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let b = self.bits(token);
                self.set(token, fd, b | WRITE);
                SendOutcome::WouldBlock
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => SendOutcome::Done(Ok(0)),
            Err(e) => SendOutcome::Done(Err(e)),
        }
    }

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
                let b = self.bits(token);
                self.set(token, fd, b | WRITE);
                SendOutcome::WouldBlock
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => SendOutcome::Done(Ok(0)),
            Err(e) => SendOutcome::Done(Err(e)),
        }
    }

    fn remove_conn(&mut self, token: u64, _sock: Sock) {
        // Closing the descriptor removes it from the epoll set; no syscall.
        let (slot, _) = untoken(token);
        if let Some(s) = self.interest.get_mut(slot as usize) {
            *s = (-1, 0);
        }
        // Events a turn left for later must not reach a new connection
        // that reuses this slot: the interest bits are per slot, not per
        // generation, so a stale readiness would read the new
        // connection's bytes (or take its connect completion) under the
        // old token, which the core then drops.
        if self.ev_pos < self.events.len() {
            for ev in &mut self.events[self.ev_pos..] {
                if ev.u64 == token {
                    ev.u64 = STALE_TOKEN;
                }
            }
        }
    }

    fn wait(&mut self, timeout: Option<Duration>, f: &mut dyn FnMut(Event<'_>)) -> io::Result<()> {
        if self.ev_pos < self.events.len() {
            // The last turn ran out of time: its flush has written what the
            // handlers produced; go on with the events it left, no waiting.
            self.dispatch(f);
            return Ok(());
        }
        let ms: libc::c_int = match timeout {
            None => -1,
            // Round up so that a timer is never fired early.
            Some(d) => d.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
        };
        self.events.clear();
        // SAFETY: the kernel writes at most `capacity` events into the
        // vector's spare capacity; we then set the length to what it wrote.
        let n = unsafe {
            libc::epoll_wait(
                self.ep,
                self.events.as_mut_ptr(),
                self.events.capacity() as libc::c_int,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(e);
        }
        // SAFETY: `n` events were initialised by epoll_wait (n <= capacity).
        unsafe { self.events.set_len(n as usize) };
        self.ev_pos = 0;
        self.dispatch(f);
        Ok(())
    }
}

impl EpollBackend {
    /// Hands the events from `ev_pos` on to `f` for at most
    /// [`super::TURN_BUDGET`]; what is left waits for the next turn.
    fn dispatch(&mut self, f: &mut dyn FnMut(Event<'_>)) {
        let clock = TurnClock::start(self.ev_pos);
        let mut i = self.ev_pos;
        while i < self.events.len() {
            if clock.over(i) {
                self.ev_pos = i;
                return;
            }
            let ev = self.events[i];
            i += 1;
            let (data, revents) = (ev.u64, ev.events);
            if data == STALE_TOKEN {
                continue;
            }
            if data == WAKE_TOKEN {
                self.waker.drain();
                f(Event::Wake);
                continue;
            }
            if data & LISTENER_TAG != 0 {
                let idx = (data & !LISTENER_TAG) as usize;
                let Some(Some((lfd, true))) = self.listeners.get(idx).copied() else {
                    continue;
                };
                if let Err(errno) = super::accept_queued(lfd, idx, ACCEPT_BATCH, f) {
                    // EMFILE and friends: stop accepting until the core
                    // re-arms, or level-triggered readiness would spin the
                    // loop.
                    let _ = self.ctl(libc::EPOLL_CTL_MOD, lfd, 0, LISTENER_TAG | idx as u64);
                    self.listeners[idx] = Some((lfd, false));
                    f(Event::Accept {
                        listener: idx,
                        res: Err(errno),
                    });
                }
                continue;
            }
            let token = data;
            let bits = self.bits(token);
            let (slot, _) = untoken(token);
            let problem = revents & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
            if bits & CONNECT != 0 {
                if revents & libc::EPOLLOUT as u32 != 0 || problem {
                    self.clear_bits(slot, CONNECT);
                    f(Event::Connected { token, res: 0 });
                }
                continue;
            }
            if bits & WRITE != 0 && (revents & libc::EPOLLOUT as u32 != 0 || problem) {
                self.clear_bits(slot, WRITE);
                f(Event::Writable { token });
            }
            if bits & READ != 0 && (revents & libc::EPOLLIN as u32 != 0 || problem) {
                let fd = self.interest[slot as usize].0;
                match sys::recv(fd, &mut self.buf) {
                    Ok(0) => {
                        self.clear_bits(slot, READ);
                        f(Event::RecvEnd {
                            token,
                            how: RecvEnd::Eof,
                        });
                    }
                    Ok(n) => f(Event::Recv {
                        token,
                        data: &mut self.buf[..n],
                    }),
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.clear_bits(slot, READ);
                        f(Event::RecvEnd {
                            token,
                            how: RecvEnd::Error(e.raw_os_error().unwrap_or(libc::EIO)),
                        });
                    }
                }
            }
        }
        self.ev_pos = self.events.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::token;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    fn token_of(ev: &Event<'_>) -> Option<u64> {
        match ev {
            Event::Recv { token, .. }
            | Event::RecvEnd { token, .. }
            | Event::Sent { token, .. }
            | Event::Writable { token }
            | Event::Connected { token, .. } => Some(*token),
            _ => None,
        }
    }

    /// A turn that ran out of time keeps its events. If one of those
    /// connections is closed and a new one takes its slot before they are
    /// handed on, the new connection's readiness must not come out under
    /// the old token (the core would drop those bytes).
    #[test]
    fn left_over_events_of_a_closed_connection_are_dropped() {
        let waker = Arc::new(sys::EventFd::new().expect("eventfd"));
        let mut be = EpollBackend::new(4096, waker).expect("epoll");
        let mut pairs = Vec::new();
        for slot in 0..6u32 {
            let (a, mut b) = UnixStream::pair().expect("socketpair");
            a.set_nonblocking(true).expect("nonblocking");
            be.add_conn(token(slot, 1), Sock(a.as_raw_fd()), AddMode::Recv)
                .expect("add");
            b.write_all(b"x").expect("write");
            pairs.push(Some((a, b)));
        }
        // Handlers that take 100 µs each: the 250 µs budget ends the turn
        // after 4 of the 6 events.
        let mut first = Vec::new();
        be.wait(Some(Duration::from_secs(1)), &mut |ev| {
            first.extend(token_of(&ev));
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_micros(100) {
                std::hint::spin_loop();
            }
        })
        .expect("wait");
        assert_eq!(first.len(), 4, "{first:?}");
        assert_eq!(be.events.len() - be.ev_pos, 2);
        let old = be.events[be.ev_pos].u64;
        let (slot, _) = untoken(old);
        // What the core does on close, then a new connection in that slot
        // with bytes waiting.
        let (a, _b) = pairs[slot as usize].take().expect("pair");
        be.remove_conn(old, Sock(a.as_raw_fd()));
        drop(a);
        let (na, mut nb) = UnixStream::pair().expect("socketpair");
        na.set_nonblocking(true).expect("nonblocking");
        let new = token(slot, 2);
        be.add_conn(new, Sock(na.as_raw_fd()), AddMode::Recv)
            .expect("add");
        nb.write_all(b"y").expect("write");
        // The rest of the first turn: the other left-over event only.
        let mut second = Vec::new();
        be.wait(Some(Duration::from_secs(1)), &mut |ev| {
            second.extend(token_of(&ev));
        })
        .expect("wait");
        assert_eq!(second.len(), 1, "{second:?}");
        assert!(!second.contains(&old), "stale event handed on: {second:?}");
        // The new connection's byte comes under its own token.
        let mut got = Vec::new();
        be.wait(Some(Duration::from_secs(1)), &mut |ev| {
            if let Event::Recv { token, data } = ev {
                got.push((token, data.to_vec()));
            }
        })
        .expect("wait");
        assert_eq!(got, vec![(new, b"y".to_vec())]);
    }
}
