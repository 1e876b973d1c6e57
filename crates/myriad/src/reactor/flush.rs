//! The end-of-turn flush: the only place that drives the backend.

use super::*;

impl Reactor {
    // ----- flush: the only place that drives the backend -----

    /// Applies listener changes, then works through the dirty list.
    pub(crate) fn flush<B: Backend>(&mut self, be: &mut B) {
        if self.stop_listeners {
            self.stop_listeners = false;
            for (i, l) in self.listeners.iter_mut().enumerate() {
                if !l.removed {
                    l.removed = true;
                    be.remove_listener(i);
                    self.socks.close(l.sock, false, &[]);
                }
            }
        }
        if self.accept_resume {
            self.accept_resume = false;
            for (i, l) in self.listeners.iter_mut().enumerate() {
                if l.paused && !l.removed {
                    l.paused = false;
                    be.arm_accept(i);
                }
            }
        }
        let mut i = 0;
        while i < self.dirty.len() {
            let slot = self.dirty[i];
            i += 1;
            self.conns[slot as usize].flags &= !DIRTY;
            self.flush_conn(slot, be);
        }
        self.dirty.clear();
        if self.dirty.capacity() > 4096 {
            // a burst (many connections at once) left it large
            self.dirty.shrink_to(4096);
        }
        // After the sends: epoll sends in the flush itself, so a gauge set
        // before it would keep the bytes an idle loop has already sent.
        LoopCounters::set(&self.shared.counters.queued_bytes, self.pool.queued);
    }

    pub(super) fn flush_conn<B: Backend>(&mut self, slot: u32, be: &mut B) {
        let (closing, phase) = {
            let c = &self.conns[slot as usize];
            (c.closing, c.phase)
        };
        if phase == Phase::Free {
            return;
        }
        if phase.is_open() {
            if closing.is_reset() {
                let counters = &self.shared.counters;
                let reason = match closing {
                    Closing::Panicked => {
                        LoopCounters::add(&counters.err_handler_panic, 1);
                        CloseReason::HandlerPanic
                    }
                    Closing::Shed => {
                        LoopCounters::add(&counters.err_queue_cap, 1);
                        CloseReason::SlowReader
                    }
                    Closing::Slow => {
                        LoopCounters::add(&counters.err_slow_reader, 1);
                        CloseReason::SlowReader
                    }
                    Closing::Overflow => {
                        LoopCounters::add(&counters.err_input_overflow, 1);
                        CloseReason::InputOverflow
                    }
                    _ => CloseReason::Local,
                };
                self.conns[slot as usize].flags |= LINGER0;
                self.finalize(slot, reason);
            } else {
                self.flush_open(slot, be);
            }
        }
        if self.conns[slot as usize].phase == Phase::Closed {
            self.cleanup(slot, be);
        }
    }

    pub(super) fn flush_open<B: Backend>(&mut self, slot: u32, be: &mut B) {
        let c = &mut self.conns[slot as usize];
        let tok = token(slot, c.gen);
        if c.flags & NEEDS_REG != 0 {
            c.flags &= !NEEDS_REG;
            let mode = if c.phase == Phase::Connecting {
                AddMode::Connect
            } else {
                AddMode::Recv
            };
            match be.add_conn(tok, c.sock, mode) {
                Ok(()) => {
                    c.flags |= REGISTERED;
                    c.begin(match mode {
                        AddMode::Recv => op::RECV,
                        AddMode::Connect => op::CONNECT,
                    });
                }
                Err(e) => {
                    self.finalize(slot, CloseReason::Io(e));
                    return;
                }
            }
        }
        self.try_send(slot, be);
        let c = &mut self.conns[slot as usize];
        if !c.phase.is_open() {
            return;
        }
        if c.out.is_empty() && c.phase != Phase::Connecting {
            if c.flags & (SHUT_WR_REQ | SHUT_WR_DONE) == SHUT_WR_REQ {
                c.flags |= SHUT_WR_DONE;
                self.socks.shutdown_write(c.sock);
            }
            if c.closing.is_graceful() {
                let linger_ms = self.limits[c.limits as usize].linger_ms;
                if c.closing == Closing::Lingering {
                    // waiting for the peer's end of stream or the timer
                } else if c.flags & EOF != 0 || linger_ms == 0 {
                    // (`Lingered`: the peer's end of stream answered our
                    // close)
                    let reason = if c.flags & EOF != 0 && c.closing != Closing::Lingered {
                        CloseReason::PeerClosed
                    } else {
                        CloseReason::Local
                    };
                    self.finalize(slot, reason);
                    return;
                } else {
                    // Lingering close: FIN first (the handler's own
                    // shutdown_write may have sent it already), then wait
                    // for the peer's, bounded by the timer.
                    if c.flags & SHUT_WR_DONE == 0 {
                        self.socks.shutdown_write(c.sock);
                    }
                    c.flags |= SHUT_WR_DONE;
                    c.close_as(Closing::Lingering);
                    let e = TimerEntry {
                        at_ms: self.now_ms + u64::from(linger_ms),
                        slot,
                        gen: c.gen,
                        kind: TimerKind::Linger,
                    };
                    self.timers.push(e);
                }
            }
        }
        let c = &mut self.conns[slot as usize];
        if c.flags & (PAUSE_USER | PAUSE_BP) == 0 && !c.is_closing() && c.phase != Phase::Connecting
        {
            if c.flags & REDELIVER != 0 {
                c.flags &= !REDELIVER;
                self.deliver_input(slot);
            }
            let c = &mut self.conns[slot as usize];
            if c.flags & EOF_PENDING != 0 && c.phase == Phase::Handshaking {
                // The peer gave up before the handshake finished.
                c.flags &= !EOF_PENDING;
                self.finalize(slot, CloseReason::PeerClosed);
                return;
            }
            let c = &mut self.conns[slot as usize];
            if c.phase.is_open()
                && c.flags & (EOF_PENDING | PAUSE_USER | PAUSE_BP) == EOF_PENDING
                && !c.is_closing()
            {
                c.flags &= !EOF_PENDING;
                self.call(slot, |h, cx| h.on_eof(cx));
            }
        }
        self.reconcile_recv(slot, be);
    }

    pub(super) fn reconcile_recv<B: Backend>(&mut self, slot: u32, be: &mut B) {
        let c = &mut self.conns[slot as usize];
        let f = c.flags;
        let want = c.phase.is_open()
            && c.phase != Phase::Connecting
            && f & REGISTERED != 0
            && (f & (EOF | PAUSE_USER | PAUSE_BP) == 0 && !c.is_closing() || drains_input(c));
        let tok = token(slot, c.gen);
        if want && !c.in_flight(op::RECV) {
            c.begin(op::RECV);
            be.arm_recv(tok, c.sock);
        } else if !want && c.in_flight(op::RECV) && !c.in_flight(op::RECV_CANCEL) {
            if be.cancel_recv(tok, c.sock) {
                c.end(op::RECV);
            } else {
                c.begin(op::RECV_CANCEL);
            }
        }
    }

    pub(super) fn try_send<B: Backend>(&mut self, slot: u32, be: &mut B) {
        let mut sent = false;
        for _ in 0..64 {
            let c = &self.conns[slot as usize];
            if c.in_flight(op::SEND | op::WRITABLE)
                || c.phase == Phase::Connecting
                || c.flags & REGISTERED == 0
                || c.out.is_empty()
            {
                break;
            }
            if be.sends_one_buffer() {
                // No send is in flight here (checked above): the front
                // chunks may move.
                let Reactor { conns, pool, .. } = self;
                conns[slot as usize].out.coalesce_front(pool);
            }
            let c = &self.conns[slot as usize];
            let out = c.out;
            let (sock, tok) = (c.sock, token(slot, c.gen));
            let outcome = match out.front_file(&self.pool) {
                Some((file, offset, len)) => be.send_file(tok, sock, file, offset, len),
                None => {
                    // Slices up to the next file segment, if any.
                    let mut iov = [IoSlice::new(&[]); 16];
                    let n = out.slices(&self.pool, &mut iov);
                    be.send(tok, sock, &iov[..n])
                }
            };
            match outcome {
                SendOutcome::InFlight => {
                    self.conns[slot as usize].begin(op::SEND);
                    return;
                }
                SendOutcome::WouldBlock => {
                    self.conns[slot as usize].begin(op::WRITABLE);
                    self.arm_send(slot);
                    return;
                }
                SendOutcome::Done(Ok(n)) => {
                    LoopCounters::add(&self.shared.counters.bytes_out, n as u64);
                    LoopCounters::add(&self.shared.counters.writes, 1);
                    if n > 0 {
                        self.conns[slot as usize].flags |= SENT_SINCE;
                    }
                    self.conns[slot as usize].out.advance(&mut self.pool, n);
                    sent = true;
                    if n == 0 {
                        break;
                    }
                }
                SendOutcome::Done(Err(e)) => {
                    LoopCounters::add(&self.shared.counters.err_reset, 1);
                    self.finalize(slot, CloseReason::Io(e));
                    return;
                }
            }
        }
        let c = &self.conns[slot as usize];
        if sent && c.out.is_empty() && c.phase.is_open() {
            self.drained(slot);
        }
    }

    /// Tears down a closed connection once nothing is in flight on it.
    pub(super) fn cleanup<B: Backend>(&mut self, slot: u32, be: &mut B) {
        let c = &mut self.conns[slot as usize];
        let tok = token(slot, c.gen);
        if c.flags & REGISTERED != 0 && c.in_flight(op::BLOCKS_CLOSE | op::WRITABLE) {
            if !c.in_flight(op::CANCEL_ALL) {
                c.begin(op::CANCEL_ALL);
                let ops = InFlight {
                    recv: c.in_flight(op::RECV),
                    send: c.in_flight(op::SEND),
                    connect: c.in_flight(op::CONNECT),
                    writable: c.in_flight(op::WRITABLE),
                };
                if be.cancel_all(tok, c.sock, ops) {
                    c.end(op::BLOCKS_CLOSE | op::WRITABLE | op::RECV_CANCEL);
                }
            }
            if c.in_flight(op::BLOCKS_CLOSE) {
                return;
            }
        }
        be.remove_conn(tok, c.sock);
        // Best effort, one non-blocking send of what is queued when the
        // connection failed: a TLS alert is a few bytes.
        let mut iov = [IoSlice::new(&[]); 4];
        let n = if c.flags & FLUSH_ON_CLOSE != 0 && !c.out.is_empty() {
            c.out.slices(&self.pool, &mut iov)
        } else {
            0
        };
        self.socks.close(c.sock, c.flags & LINGER0 != 0, &iov[..n]);
        c.out.clear(&mut self.pool);
        let input = c.take_input();
        self.inputs.give(input);
        self.free_slot(slot);
    }

    /// Closes everything at exit (after the loop stopped).
    pub(crate) fn close_all(&mut self) {
        for slot in 0..self.conns.len() {
            let c = &mut self.conns[slot];
            if c.phase != Phase::Free {
                if c.phase.is_open() {
                    self.finalize(slot as u32, CloseReason::Shutdown);
                }
                let c = &mut self.conns[slot];
                self.socks.close(c.sock, c.flags & LINGER0 != 0, &[]);
                c.to(Phase::Free);
                c.flags = 0;
                c.closing = Closing::No;
                c.ops = 0;
            }
        }
        for l in &mut self.listeners {
            if !l.removed {
                l.removed = true;
                self.socks.close(l.sock, false, &[]);
            }
        }
    }
}
