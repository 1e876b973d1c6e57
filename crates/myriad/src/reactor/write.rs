//! Queueing bytes (copies, shared buffers, file segments, through a
//! filter), back-pressure and the loop-wide cap, graceful close, and
//! opening outbound connections.

use super::*;

/// A connection's write queue as a filter's [`Outbound`].
pub(super) struct OutboundView<'a> {
    pub(super) out: &'a mut OutboundQueue,
    pub(super) pool: &'a mut ChunkPool,
}

impl Outbound for OutboundView<'_> {
    fn push(&mut self, bytes: &[u8]) {
        self.out.push(self.pool, bytes);
    }

    fn push_with(&mut self, max: usize, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> usize {
        if max <= OutboundQueue::max_fill(self.pool) {
            return self.out.push_with(self.pool, max, fill);
        }
        // Larger than a chunk: through a buffer of its own (rare; the TLS
        // filter asks for one record at a time).
        let mut tmp = vec![0u8; max];
        let n = fill(&mut tmp).min(max);
        self.out.push(self.pool, &tmp[..n]);
        n
    }
}

impl Reactor {
    // ----- operations behind Ctx / LoopCx -----

    pub(super) fn write(&mut self, slot: u32, parts: &[&[u8]]) {
        let Reactor { conns, pool, .. } = self;
        let c = &mut conns[slot as usize];
        if refuses_writes(c) {
            return;
        }
        if let Some(f) = c.filter.as_mut() {
            let out = &mut c.out;
            let mut failed: Option<FilterError> = None;
            for p in parts {
                if let Err(e) = f.encode(p, &mut OutboundView { out, pool }) {
                    failed = Some(e);
                    break;
                }
            }
            if failed.is_some() {
                // Encoding cannot fail for a healthy TLS session; treat it
                // as fatal for this connection.
                c.reset_for(Closing::Abort);
            }
        } else {
            c.out.push_parts(pool, parts);
        }
        self.after_write(slot);
    }

    pub(super) fn write_with(
        &mut self,
        slot: u32,
        max: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> usize {
        let c = &self.conns[slot as usize];
        if refuses_writes(c) {
            return 0;
        }
        if c.filter.is_some() || max > OutboundQueue::max_fill(&self.pool) {
            // Through a reused buffer, then the ordinary path (the filter
            // encodes; a large write spans chunks).
            let mut tmp = std::mem::take(&mut self.wscratch);
            if tmp.len() < max {
                tmp.resize(max, 0);
            }
            let n = fill(&mut tmp[..max]).min(max);
            if n > 0 {
                self.write(slot, &[&tmp[..n]]);
            }
            if tmp.len() <= 1 << 20 {
                self.wscratch = tmp;
            }
            return n;
        }
        let Reactor { conns, pool, .. } = self;
        let n = conns[slot as usize].out.push_with(pool, max, fill);
        if n > 0 {
            self.after_write(slot);
        }
        n
    }

    /// Graceful close: a filter queues its goodbye (close_notify) first.
    pub(super) fn close_graceful(&mut self, slot: u32) {
        let Reactor { conns, pool, .. } = self;
        let c = &mut conns[slot as usize];
        if !c.phase.is_open() || c.is_closing() {
            return;
        }
        if let Some(f) = c.filter.as_mut() {
            let out = &mut c.out;
            f.close(&mut OutboundView { out, pool });
        }
        c.close_as(Closing::Graceful);
        self.mark_dirty(slot);
    }

    /// Back-pressure bookkeeping after bytes were queued.
    pub(super) fn after_write(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let lim = self.limits[c.limits as usize];
        if c.out.len >= lim.hard_limit {
            c.reset_for(Closing::Slow);
        } else if c.out.len >= lim.high_water && c.flags & PAUSE_BP == 0 {
            c.flags |= PAUSE_BP;
            LoopCounters::add(&self.shared.counters.backpressure_pauses, 1);
        }
        self.mark_dirty(slot);
        if self.pool.queued > self.max_queued {
            self.shed();
        }
    }

    /// The loop's queued bytes passed its cap: closes the connections with
    /// the largest queues (a reset, their queues dropped) until what stays
    /// is under nine tenths of the cap. O(connections), but only when the
    /// cap is passed, and a connection already being reset for it (or for
    /// a panic) no longer counts.
    pub(super) fn shed(&mut self) {
        let target = self.max_queued / 10 * 9;
        let mut queued = self.pool.queued;
        for c in &self.conns {
            if c.closing >= Closing::Shed {
                queued = queued.saturating_sub(u64::from(c.out.len));
            }
        }
        if queued <= self.max_queued {
            return;
        }
        let mut big: Vec<(u32, u32)> = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.phase.is_open() && c.closing < Closing::Shed && c.out.len > 0)
            .map(|(i, c)| (c.out.len, i as u32))
            .collect();
        big.sort_unstable_by(|a, b| b.cmp(a));
        for (len, slot) in big {
            if queued <= target {
                break;
            }
            queued = queued.saturating_sub(u64::from(len));
            self.close_for(slot, Closing::Shed);
        }
    }

    pub(super) fn write_shared(&mut self, slot: u32, bytes: &Arc<[u8]>) {
        let c = &mut self.conns[slot as usize];
        if refuses_writes(c) {
            return;
        }
        if c.filter.is_some() {
            // Encrypted per connection anyway: no sharing possible.
            self.write(slot, &[&bytes[..]]);
            return;
        }
        c.out.push_shared(&mut self.pool, bytes.clone());
        self.after_write(slot);
    }

    pub(super) fn send_file(
        &mut self,
        slot: u32,
        file: &Arc<std::fs::File>,
        offset: u64,
        len: u64,
    ) -> bool {
        let c = &mut self.conns[slot as usize];
        if refuses_writes(c) || c.filter.is_some() {
            return false;
        }
        if len > 0 {
            c.out.push_file(&mut self.pool, file, offset, len);
            self.after_write(slot);
        }
        true
    }

    pub(super) fn set_flag(&mut self, slot: u32, flag: u16) {
        let c = &mut self.conns[slot as usize];
        if c.phase.is_open() {
            c.flags |= flag;
            self.mark_dirty(slot);
        }
    }

    /// Asks for a reset of an open connection for `why` (see
    /// [`Conn::reset_for`]); the flush carries it out.
    pub(super) fn close_for(&mut self, slot: u32, why: Closing) {
        let c = &mut self.conns[slot as usize];
        if c.phase.is_open() {
            c.reset_for(why);
            self.mark_dirty(slot);
        }
    }

    pub(super) fn limits_index(&mut self, l: Limits) -> u16 {
        if let Some(i) = self.limits.iter().position(|x| *x == l) {
            return i as u16;
        }
        self.limits.push(l);
        (self.limits.len() - 1) as u16
    }

    pub(super) fn connect(
        &mut self,
        addr: SocketAddr,
        opts: &ConnectOptions,
        handler: Box<dyn Handler>,
    ) -> io::Result<ConnId> {
        if self.shutdown_at.is_some() {
            return Err(io::Error::other("loop is shutting down"));
        }
        if self.free_head == NIL && self.conns.len() >= MAX_SLOTS {
            return Err(io::Error::other("loop has no free connection slot"));
        }
        let spec = ConnectSpec {
            nodelay: opts.nodelay,
            linger_zero: opts.linger_zero,
            source: opts.source,
        };
        let res = self.socks.connect(addr, &spec);
        let sock = match res {
            Ok(s) => s,
            Err(e) => {
                LoopCounters::add(&self.shared.counters.err_connect, 1);
                return Err(e);
            }
        };
        let mut lim = self.outbound_limits;
        lim.idle_ms = dur_ms(opts.idle_timeout);
        lim.high_water = clamp_u32(opts.write_high_water);
        lim.hard_limit = clamp_u32(opts.write_hard_limit);
        lim.max_input = clamp_u32(opts.max_input);
        let li = self.limits_index(lim);
        let mut flags = NEEDS_REG;
        if opts.linger_zero {
            flags |= LINGER0;
        }
        let slot = self.alloc(sock, Phase::Connecting, flags, handler, li, NO_SERVICE);
        if let Some(f) = &opts.filter {
            self.pending_filters
                .push((slot, f.clone(), dur_ms(Some(opts.handshake_timeout))));
        }
        let gen = self.conns[slot as usize].gen;
        self.timers.push(TimerEntry {
            at_ms: at_after(self.now_ms, opts.timeout.max(Duration::from_millis(1))),
            slot,
            gen,
            kind: TimerKind::Connect,
        });
        self.mark_dirty(slot);
        Ok(ConnId::new(self.loop_idx, slot, gen))
    }
}
