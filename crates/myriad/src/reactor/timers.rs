//! Timers (idle, linger, connect, handshake, deadlines, user, send
//! progress, accept retry, shutdown) and posted tasks.

use super::*;

impl Reactor {
    pub(super) fn arm_idle(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.idle_ms > 0 && c.flags & IDLE_ARMED == 0 {
            c.flags |= IDLE_ARMED;
            let e = TimerEntry {
                at_ms: self.now_ms + c.idle_ms as u64,
                slot,
                gen: c.gen,
                kind: TimerKind::Idle,
            };
            self.timers.push(e);
        }
    }

    // ----- timers and tasks -----

    /// Advances the clock to `now`, fires the timers due by then and
    /// runs posted tasks (quinn-proto's `handle_timeout(now)`; the driver
    /// asks [`Reactor::next_timeout`] how long it may sleep).
    pub(crate) fn tick(&mut self, now: Instant) {
        self.set_now(now);
        self.timers.start_pass(self.now_ms);
        while let Some(t) = self.timers.pop_due(self.now_ms) {
            self.fire(t);
        }
        self.timers.end_pass();
        let conns = &self.conns;
        self.timers.maybe_compact(|t| match t.kind {
            TimerKind::AcceptRetry | TimerKind::ShutdownDeadline => true,
            TimerKind::Deadline { seq, .. } => conns.get(t.slot as usize).is_some_and(|c| {
                c.phase.is_open() && c.gen == t.gen && c.deadline == DEADLINE_SET | seq
            }),
            _ => conns
                .get(t.slot as usize)
                .is_some_and(|c| c.phase.is_open() && c.gen == t.gen),
        });
        LoopCounters::set(&self.shared.counters.timers, self.timers.len() as u64);
        self.shared.notified.store(false, Ordering::SeqCst);
        // Bounded: tasks posted by tasks run at the next turn.
        for _ in 0..4096 {
            let Ok(task) = self.rx.try_recv() else { break };
            // A posted task that panics loses its own work, not the loop.
            let r = panic::catch_unwind(AssertUnwindSafe(|| task(&mut LoopCx { core: self })));
            if r.is_err() {
                LoopCounters::add(&self.shared.counters.err_handler_panic, 1);
            }
        }
    }

    pub(super) fn timer_target(&self, t: &TimerEntry) -> Option<u32> {
        let c = self.conns.get(t.slot as usize)?;
        (c.phase.is_open() && c.gen == t.gen).then_some(t.slot)
    }

    pub(super) fn fire(&mut self, t: TimerEntry) {
        match t.kind {
            TimerKind::Idle => {
                let Some(slot) = self.timer_target(&t) else {
                    return;
                };
                let now = self.now32();
                let c = &mut self.conns[slot as usize];
                if c.idle_ms == 0 {
                    c.flags &= !IDLE_ARMED;
                    return;
                }
                let elapsed = now.wrapping_sub(c.last_active);
                if elapsed >= c.idle_ms {
                    c.flags &= !IDLE_ARMED;
                    LoopCounters::add(&self.shared.counters.err_idle_timeout, 1);
                    self.finalize(slot, CloseReason::IdleTimeout);
                } else {
                    let at = self.now_ms + (c.idle_ms - elapsed) as u64;
                    self.timers.push(TimerEntry { at_ms: at, ..t });
                }
            }
            TimerKind::Linger => {
                let Some(slot) = self.timer_target(&t) else {
                    return;
                };
                // (not once the peer's FIN answered ours: the flush ends
                // it then)
                if self.conns[slot as usize].closing == Closing::Lingering {
                    self.finalize(slot, CloseReason::Local);
                }
            }
            TimerKind::Connect => {
                let Some(slot) = self.timer_target(&t) else {
                    return;
                };
                if self.conns[slot as usize].phase == Phase::Connecting {
                    LoopCounters::add(&self.shared.counters.err_connect_timeout, 1);
                    self.finalize(slot, CloseReason::ConnectTimeout);
                }
            }
            TimerKind::Handshake => {
                let Some(slot) = self.timer_target(&t) else {
                    return;
                };
                if self.conns[slot as usize].phase == Phase::Handshaking {
                    LoopCounters::add(&self.shared.counters.err_handshake_timeout, 1);
                    self.finalize(slot, CloseReason::HandshakeTimeout);
                }
            }
            TimerKind::Deadline { token, seq } => {
                let Some(slot) = self.timer_target(&t) else {
                    return;
                };
                let c = &mut self.conns[slot as usize];
                if c.deadline != DEADLINE_SET | seq {
                    return;
                }
                c.deadline = seq;
                if !c.is_closing() {
                    self.call(slot, |h, cx| h.on_timer(cx, token));
                }
            }
            TimerKind::User(token) => {
                let Some(slot) = self.timer_target(&t) else {
                    return;
                };
                if !self.conns[slot as usize].is_closing() {
                    self.call(slot, |h, cx| h.on_timer(cx, token));
                }
            }
            TimerKind::Send => {
                let Some(slot) = self.timer_target(&t) else {
                    return;
                };
                let send_ms = {
                    let c = &self.conns[slot as usize];
                    self.limits[c.limits as usize].send_ms
                };
                let c = &mut self.conns[slot as usize];
                if c.out.is_empty() || send_ms == 0 {
                    c.flags &= !SEND_ARMED;
                } else if c.flags & SENT_SINCE != 0 {
                    c.flags &= !SENT_SINCE;
                    let at = self.now_ms + u64::from(send_ms);
                    self.timers.push(TimerEntry { at_ms: at, ..t });
                } else {
                    c.flags = (c.flags & !SEND_ARMED) | LINGER0;
                    LoopCounters::add(&self.shared.counters.err_send_timeout, 1);
                    self.finalize(slot, CloseReason::SendTimeout);
                }
            }
            TimerKind::AcceptRetry => {
                self.accept_retry_armed = false;
                self.accept_resume = true;
            }
            TimerKind::ShutdownDeadline => {
                for slot in 0..self.conns.len() as u32 {
                    let c = &self.conns[slot as usize];
                    if !c.phase.is_open() {
                        continue;
                    }
                    if c.closing == Closing::Lingering {
                        // closed by its handler, everything sent: only
                        // the wait for the peer's FIN is cut short
                        self.finalize(slot, CloseReason::Local);
                    } else {
                        self.conns[slot as usize].flags |= LINGER0;
                        self.finalize(slot, CloseReason::Shutdown);
                    }
                }
            }
        }
    }
}
