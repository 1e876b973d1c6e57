//! Completions turned into handler calls: accept, receive (through a
//! filter), end of stream, send completions, connects; the one place that
//! calls handlers (`call`) and the end of a connection (`finalize`).

use super::*;

impl Reactor {
    // ----- handler calls -----

    /// Calls `f` with the connection's handler and a context. The handler is
    /// moved out of its slot for the call, so a (buggy) re-entrant call for
    /// the same connection finds no handler and does nothing.
    pub(super) fn call<R: Default>(
        &mut self,
        slot: u32,
        f: impl FnOnce(&mut dyn Handler, &mut Ctx<'_>) -> R,
    ) -> R {
        let c = &mut self.conns[slot as usize];
        let gen = c.gen;
        let Some(mut h) = c.handler.take() else {
            return R::default();
        };
        let r = {
            let mut cx = Ctx {
                lcx: LoopCx { core: self },
                slot,
                gen,
            };
            // One panic-catching point for every handler call (built-in
            // handlers, protocol layers and plugins alike): a panic costs
            // its own connection, never the loop's other connections.
            // `AssertUnwindSafe`: after a panic the handler is only asked
            // to clean up (`on_close`) and then dropped, never used again.
            panic::catch_unwind(AssertUnwindSafe(|| f(&mut *h, &mut cx)))
        };
        let c = &mut self.conns[slot as usize];
        let same = c.gen == gen;
        if same && c.phase.is_open() && c.handler.is_none() {
            c.handler = Some(h);
        }
        match r {
            Ok(r) => r,
            Err(_) => {
                if same {
                    self.close_for(slot, Closing::Panicked);
                }
                R::default()
            }
        }
    }

    /// Ends a connection from the handler's point of view: counts it, calls
    /// `on_close`, drops the handler. The socket is cleaned up by the flush.
    pub(super) fn finalize(&mut self, slot: u32, reason: CloseReason) {
        let c = &mut self.conns[slot as usize];
        if !c.phase.is_open() {
            return;
        }
        c.to(Phase::Closed);
        let counted = c.flags & COUNTED != 0;
        let service = c.service;
        let input = c.take_input();
        let handler = c.handler.take();
        self.inputs.give(input);
        if counted {
            LoopCounters::sub(&self.counters().open, 1);
            LoopCounters::add(&self.counters().closed, 1);
        }
        if service != NO_SERVICE {
            if let Some(s) = self.services.get(service as usize) {
                s.open.fetch_sub(1, Ordering::Relaxed);
                if let Some(ip) = self.sources.remove(&slot) {
                    let mut m = s.per_addr.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(n) = m.get_mut(&ip) {
                        *n -= 1;
                        if *n == 0 {
                            m.remove(&ip);
                        }
                    }
                }
            }
            if self.listeners.iter().any(|l| l.paused) {
                self.accept_resume = true;
            }
        }
        if let Some(i) = self.pending_filters.iter().position(|p| p.0 == slot) {
            self.pending_filters.swap_remove(i);
        }
        if let Some(mut h) = handler {
            let gen = self.conns[slot as usize].gen;
            let mut cx = Ctx {
                lcx: LoopCx { core: self },
                slot,
                gen,
            };
            // A panic here has nothing left to close: it is counted and
            // the handler dropped.
            if panic::catch_unwind(AssertUnwindSafe(|| h.on_close(&mut cx, reason))).is_err() {
                LoopCounters::add(&self.counters().err_handler_panic, 1);
            }
        }
        self.mark_dirty(slot);
    }

    // ----- events -----

    pub(crate) fn handle_event(&mut self, ev: Event<'_>) {
        match ev {
            Event::Recv { token, data } => self.on_recv(token, data),
            Event::RecvLendable { token, data, keep } => self.on_recv_lendable(token, data, keep),
            Event::Sent { token, res } => self.on_sent(token, res),
            Event::RecvEnd { token, how } => self.on_recv_end(token, how),
            Event::Accept { listener, res } => self.on_accept(listener, res),
            Event::Writable { token } => {
                if let Some(slot) = self.slot_of(token) {
                    self.conns[slot as usize].end(op::WRITABLE);
                    self.mark_dirty(slot);
                }
            }
            Event::Connected { token, res } => self.on_connected(token, res),
            Event::Wake => {}
        }
    }

    pub(super) fn on_accept(&mut self, listener: usize, res: Result<Sock, i32>) {
        let sock = match res {
            Ok(sock) => sock,
            Err(errno) => {
                LoopCounters::add(&self.counters().err_accept, 1);
                let err = io::Error::from_raw_os_error(errno);
                let mut rejected = 0;
                if let Some(l) = self.listeners.get_mut(listener) {
                    l.paused = true;
                    if matches!(errno, libc::EMFILE | libc::ENFILE) && !l.removed {
                        rejected = self.socks.reject_pending(l.sock, 256);
                    }
                }
                if rejected > 0 {
                    let c = self.counters();
                    LoopCounters::add(&c.refused, rejected as u64);
                    LoopCounters::add(&c.refused_fd_limit, rejected as u64);
                }
                tracing::warn!(loop_idx = self.loop_idx, error = %err, rejected, "accept failed; waiting connections closed, accepts paused until a descriptor frees");
                if !self.accept_retry_armed {
                    self.accept_retry_armed = true;
                    self.timers.push(TimerEntry {
                        at_ms: self.now_ms + 250,
                        slot: 0,
                        gen: 0,
                        kind: TimerKind::AcceptRetry,
                    });
                }
                return;
            }
        };
        let Some(l) = self.listeners.get(listener) else {
            self.socks.close(sock, false, &[]);
            return;
        };
        // A connection accepted just before the listener was removed (a
        // reload handing the socket to a new engine) is served here: closing
        // it would reset a client that did nothing wrong.
        if self.shutdown_at.is_some() {
            self.socks.close(sock, false, &[]);
            return;
        }
        let service = l.service;
        let svc = &self.services[service as usize];
        // Reserve first, then check: two loops accepting at once can never
        // both take the last place.
        let full = self.free_head == NIL && self.conns.len() >= MAX_SLOTS;
        if full || svc.open.fetch_add(1, Ordering::Relaxed) >= svc.max_conns {
            if full {
                svc.open.fetch_add(1, Ordering::Relaxed);
            }
            svc.open.fetch_sub(1, Ordering::Relaxed);
            self.socks.close(sock, false, &[]);
            LoopCounters::add(&self.counters().refused, 1);
            return;
        }
        let mut source = None;
        if svc.max_per_addr > 0 {
            // One getpeername per accept, only for services with the limit.
            let ip = self.socks.peer_addr(sock).map(|a| a.ip()).ok();
            let admitted = ip.is_some_and(|ip| {
                let mut m = svc.per_addr.lock().unwrap_or_else(|p| p.into_inner());
                let n = m.entry(ip).or_insert(0);
                if *n >= svc.max_per_addr {
                    false
                } else {
                    *n += 1;
                    true
                }
            });
            if !admitted {
                svc.open.fetch_sub(1, Ordering::Relaxed);
                self.socks.close(sock, false, &[]);
                LoopCounters::add(&self.counters().refused, 1);
                LoopCounters::add(&self.counters().refused_per_addr, 1);
                return;
            }
            source = ip;
        }
        let svc = &self.services[service as usize];
        if svc.nodelay {
            self.socks.set_nodelay(sock);
        }
        let handler = (svc.factory)();
        let filter = svc.filter.as_ref().map(|f| f());
        let handshake_ms = svc.handshake_ms;
        let limits = svc.limits;
        let slot = self.alloc(
            sock,
            Phase::Open,
            NEEDS_REG | COUNTED,
            handler,
            limits,
            service,
        );
        if let Some(ip) = source {
            self.sources.insert(slot, ip);
        }
        LoopCounters::add(&self.counters().accepted, 1);
        LoopCounters::add(&self.counters().open, 1);
        self.arm_idle(slot);
        self.mark_dirty(slot);
        match filter {
            Some(f) => self.start_filter(slot, f, handshake_ms, false),
            None => self.call(slot, |h, cx| h.on_open(cx)),
        }
    }

    /// Attaches a filter; `on_open` waits for its handshake (bounded by
    /// `handshake_ms`).
    pub(super) fn start_filter(
        &mut self,
        slot: u32,
        mut f: Box<dyn Filter>,
        handshake_ms: u32,
        client: bool,
    ) {
        let gen = self.conns[slot as usize].gen;
        let started = if client {
            let Reactor { conns, pool, .. } = self;
            let out = &mut conns[slot as usize].out;
            f.start(&mut OutboundView { out, pool })
        } else {
            Ok(())
        };
        let handshaking = f.is_handshaking();
        let c = &mut self.conns[slot as usize];
        c.filter = Some(Box::new(f));
        if let Err(e) = started {
            c.flags |= FLUSH_ON_CLOSE;
            self.shared.count_filter_error(e.kind);
            self.finalize(slot, CloseReason::Filter(e));
            return;
        }
        self.mark_dirty(slot);
        if handshaking {
            self.conns[slot as usize].to(Phase::Handshaking);
            if handshake_ms > 0 {
                self.timers.push(TimerEntry {
                    at_ms: self.now_ms + handshake_ms as u64,
                    slot,
                    gen,
                    kind: TimerKind::Handshake,
                });
            }
        } else {
            self.call(slot, |h, cx| h.on_open(cx));
        }
    }

    pub(super) fn on_recv(&mut self, token: u64, data: &mut [u8]) {
        let Some(slot) = self.slot_of(token) else {
            return;
        };
        let counters = &self.shared.counters;
        LoopCounters::add(&counters.bytes_in, data.len() as u64);
        LoopCounters::add(&counters.reads, 1);
        let now = self.now32();
        let c = &mut self.conns[slot as usize];
        if !c.phase.is_open() || c.is_closing() {
            return;
        }
        c.last_active = now;
        if c.filter.is_some() {
            self.recv_filtered(slot, data);
        } else {
            self.deliver_bytes(slot, data);
        }
    }

    /// Runs received bytes through the connection's filter, then delivers
    /// the application bytes they carried.
    pub(super) fn recv_filtered(&mut self, slot: u32, data: &mut [u8]) {
        let Some(mut f) = self.conns[slot as usize].filter.take() else {
            return;
        };
        let mut app = std::mem::take(&mut self.scratch);
        app.clear();
        let res = {
            let Reactor { conns, pool, .. } = self;
            let out = &mut conns[slot as usize].out;
            f.decode(data, &mut app, &mut OutboundView { out, pool })
        };
        let done_handshake = !f.is_handshaking();
        let c = &mut self.conns[slot as usize];
        c.filter = Some(f);
        self.mark_dirty(slot);
        if let Err(e) = res {
            self.scratch = app;
            let c = &mut self.conns[slot as usize];
            c.flags |= FLUSH_ON_CLOSE;
            self.shared.count_filter_error(e.kind);
            self.finalize(slot, CloseReason::Filter(e));
            return;
        }
        let c = &mut self.conns[slot as usize];
        if done_handshake && c.phase == Phase::Handshaking {
            c.to(Phase::Open);
            self.call(slot, |h, cx| h.on_open(cx));
        }
        let c = &self.conns[slot as usize];
        if !app.is_empty() && c.phase.is_open() && !c.is_closing() {
            self.deliver_bytes(slot, &mut app[..]);
        }
        // Keep the scratch buffer, but not a huge one.
        if app.capacity() <= 1 << 20 {
            self.scratch = app;
        }
    }

    /// Hands application bytes to the handler, honouring pauses and kept
    /// input.
    pub(super) fn deliver_bytes(&mut self, slot: u32, data: &mut [u8]) {
        let c = &self.conns[slot as usize];
        if c.flags & (PAUSE_USER | PAUSE_BP) != 0
            || matches!(c.phase, Phase::Connecting | Phase::Handshaking)
        {
            // Arrived after reading was paused (the cancel was in flight):
            // keep it for when reading resumes.
            self.append_input(slot, data);
            return;
        }
        if c.input_len() == 0 {
            let n = data.len();
            let consumed = self.call(slot, |h, cx| h.on_data(cx, data)).min(n);
            if let Some(s) = self.lend_src.as_mut() {
                s.consumed = consumed;
            }
            if consumed < n {
                self.append_input(slot, &data[consumed..]);
            }
        } else if self.append_input(slot, data) {
            self.deliver_input(slot);
        }
    }

    /// Appends to the connection's leftover input; false if over the limit
    /// (the connection is then closed with [`CloseReason::InputOverflow`]).
    pub(super) fn append_input(&mut self, slot: u32, data: &[u8]) -> bool {
        let c = &mut self.conns[slot as usize];
        if !c.phase.is_open() {
            return false;
        }
        let max = self.limits[c.limits as usize].max_input as usize;
        if c.input_len() + data.len() > max {
            c.reset_for(Closing::Overflow);
            self.mark_dirty(slot);
            return false;
        }
        let inputs = &mut self.inputs;
        c.input
            .get_or_insert_with(|| Box::new(inputs.take()))
            .extend_from_slice(data);
        true
    }

    pub(super) fn deliver_input(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let mut buf = c.take_input();
        if buf.is_empty() {
            self.inputs.give(buf);
            return;
        }
        let consumed = self
            .call(slot, |h, cx| h.on_data(cx, &mut buf[..]))
            .min(buf.len());
        let c = &mut self.conns[slot as usize];
        if consumed == buf.len() || !c.phase.is_open() {
            self.inputs.give(buf);
        } else {
            buf.drain(..consumed);
            let old = c.take_input();
            if !old.is_empty() {
                // Bytes were appended meanwhile (cannot happen today: input
                // is only appended by the loop, never by a handler); keep order.
                buf.extend_from_slice(&old);
            }
            c.set_input(buf);
            self.inputs.give(old);
        }
    }

    pub(super) fn on_recv_end(&mut self, token: u64, how: RecvEnd) {
        let Some(slot) = self.slot_of(token) else {
            return;
        };
        let c = &mut self.conns[slot as usize];
        c.end(op::RECV | op::RECV_CANCEL);
        match how {
            RecvEnd::Eof => {
                // (A connection being torn down ends its receive with a
                // read-side shutdown, which also reads as an end of stream:
                // that is no news from the peer.)
                if c.flags & EOF == 0 && c.phase.is_open() {
                    c.peer_ended();
                    c.flags |= EOF_PENDING;
                    if let Some(f) = c.filter.as_mut() {
                        // A TLS peer that closes without close_notify may
                        // have truncated the stream: count it.
                        if let Err(e) = f.eof() {
                            self.shared.count_filter_error(e.kind);
                        }
                    }
                }
            }
            RecvEnd::Stopped => {}
            RecvEnd::NoBuffers => LoopCounters::add(&self.shared.counters.ring_exhausted, 1),
            RecvEnd::Error(errno) => {
                c.peer_ended();
                if c.phase.is_open() {
                    LoopCounters::add(&self.shared.counters.err_reset, 1);
                    self.finalize(slot, CloseReason::Io(io::Error::from_raw_os_error(errno)));
                }
            }
        }
        self.mark_dirty(slot);
    }

    pub(super) fn on_sent(&mut self, token: u64, res: i32) {
        let Some(slot) = self.slot_of(token) else {
            return;
        };
        let c = &mut self.conns[slot as usize];
        debug_assert!(
            c.in_flight(op::SEND),
            "a send completed that was not in flight"
        );
        c.end(op::SEND);
        self.mark_dirty(slot);
        if res < 0 {
            if self.conns[slot as usize].phase.is_open() {
                LoopCounters::add(&self.shared.counters.err_reset, 1);
                self.finalize(slot, CloseReason::Io(io::Error::from_raw_os_error(-res)));
            }
            return;
        }
        let counters = &self.shared.counters;
        LoopCounters::add(&counters.bytes_out, res as u64);
        LoopCounters::add(&counters.writes, 1);
        let c = &mut self.conns[slot as usize];
        if res > 0 {
            c.flags |= SENT_SINCE;
        }
        c.out.advance(&mut self.pool, res as usize);
        self.arm_send(slot);
        let c = &self.conns[slot as usize];
        if c.out.is_empty() && c.phase.is_open() {
            self.drained(slot);
        }
    }

    /// Arms the send-progress timer if bytes are left behind after a send
    /// (the peer's window or our socket buffer is full). A reply sent whole
    /// in one go, the common case, costs no timer at all.
    pub(super) fn arm_send(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.out.is_empty() || c.flags & SEND_ARMED != 0 || !c.phase.is_open() {
            return;
        }
        let send_ms = self.limits[c.limits as usize].send_ms;
        if send_ms > 0 {
            c.flags = (c.flags | SEND_ARMED) & !SENT_SINCE;
            let e = TimerEntry {
                at_ms: self.now_ms + u64::from(send_ms),
                slot,
                gen: c.gen,
                kind: TimerKind::Send,
            };
            self.timers.push(e);
        }
    }

    pub(super) fn drained(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.flags & PAUSE_BP != 0 {
            // Input that arrived while the pause took effect is delivered
            // now, not only when the peer sends again.
            c.flags = (c.flags & !PAUSE_BP) | REDELIVER;
            self.mark_dirty(slot);
        }
        if !self.conns[slot as usize].is_closing() {
            self.call(slot, |h, cx| h.on_drain(cx));
        }
    }

    pub(super) fn on_connected(&mut self, token: u64, res: i32) {
        let Some(slot) = self.slot_of(token) else {
            return;
        };
        let c = &mut self.conns[slot as usize];
        debug_assert!(
            c.in_flight(op::CONNECT),
            "a connect completed that was not in flight"
        );
        c.end(op::CONNECT);
        self.mark_dirty(slot);
        let c = &mut self.conns[slot as usize];
        if c.phase != Phase::Connecting {
            return;
        }
        let err = if res < 0 {
            Some(io::Error::from_raw_os_error(-res))
        } else {
            match self.socks.take_error(c.sock) {
                Ok(e) => e,
                Err(e) => Some(e),
            }
        };
        if let Some(e) = err {
            LoopCounters::add(&self.shared.counters.err_connect, 1);
            self.finalize(slot, CloseReason::ConnectFailed(e));
            return;
        }
        let now = self.now32();
        let c = &mut self.conns[slot as usize];
        c.to(Phase::Open);
        c.flags |= COUNTED;
        c.last_active = now;
        LoopCounters::add(&self.shared.counters.connected, 1);
        LoopCounters::add(&self.shared.counters.open, 1);
        self.arm_idle(slot);
        match self.pending_filters.iter().position(|p| p.0 == slot) {
            Some(i) => {
                let (_, factory, ms) = self.pending_filters.swap_remove(i);
                self.start_filter(slot, factory(), ms, true);
            }
            None => self.call(slot, |h, cx| h.on_open(cx)),
        }
    }
}
