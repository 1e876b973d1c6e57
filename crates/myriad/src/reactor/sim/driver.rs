//! The simulation's schedule and virtual clock (`Driver`), shared by the
//! reactor's scenarios and `SimEngine`.

use super::*;

/// The simulation's schedule and virtual clock: it turns the reactor's
/// loop — timers and posted tasks, the flush, then one batch of
/// completions in an order of its choosing — and moves the clock on, to
/// the next timer when nothing else is left to happen.
pub(in crate::reactor) struct Driver {
    rng: Rng,
    /// Only differences of instants reach the reactor: the trace does not
    /// depend on when the run started.
    pub(in crate::reactor) epoch: Instant,
    /// The virtual clock, in milliseconds since `epoch`.
    now: u64,
    buf: Vec<u8>,
}

impl Driver {
    pub(in crate::reactor) fn new(rng: Rng) -> Self {
        Driver {
            rng,
            epoch: Instant::now(),
            now: 0,
            buf: vec![0u8; 4096],
        }
    }

    /// Turns the loops (`rs[k]` with `bes[k]`, loop k) until nothing is
    /// left (no connection, no completion to deliver, no connection to
    /// accept, no task posted) or `steps` turns are spent; the turns taken.
    pub(in crate::reactor) fn run(
        &mut self,
        rs: &mut [Reactor],
        bes: &mut [FakeBackend<World>],
        w: &Shared,
        steps: u64,
    ) -> u64 {
        for step in 0..steps {
            let active = self.turn(rs, bes, w);
            let w = w.borrow();
            let quiet = w.accepts.is_empty() && w.pending.is_empty();
            let posted = rs.iter().any(|r| r.shared.notified.load(Ordering::SeqCst));
            if quiet && !posted && rs.iter().all(|r| r.live == 0) {
                return step + 1;
            }
            // (connections waiting on a listener whose accepting stopped
            // wait for its retry timer)
            let stuck = (0..rs.len()).all(|k| w.accept_waiting(k).is_none())
                && w.pending.is_empty()
                && !posted;
            if !active && stuck && !(0..w.peers.len()).any(|i| w.readable(i)) {
                // nothing can happen before the next timer or the end of
                // a clog: time passes up to it
                let timer = rs
                    .iter()
                    .filter_map(|r| r.next_timeout())
                    .min()
                    .map(|d| d.as_millis() as u64);
                let unclog = w
                    .peers
                    .iter()
                    .filter(|p| p.clogged_until > self.now)
                    .map(|p| p.clogged_until - self.now)
                    .min();
                let next = match (timer, unclog) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b).unwrap_or(1),
                };
                self.now += next.max(1);
            }
        }
        steps
    }

    /// One turn of every loop (timers and posted tasks, then the flush,
    /// in loop order), then one accept on a loop of the simulation's
    /// choice and one batch of completions, each handed to the loop its
    /// token names; whether anything was delivered.
    fn turn(&mut self, rs: &mut [Reactor], bes: &mut [FakeBackend<World>], w: &Shared) -> bool {
        let rng = &mut self.rng;
        let now = self.epoch + Duration::from_millis(self.now);
        w.borrow_mut().now = self.now;
        for (r, be) in rs.iter_mut().zip(bes.iter_mut()) {
            r.tick(now);
            r.flush(be);
        }
        let mut active = false;
        // (no draw with one loop: its schedules stay what they were)
        let lp = if rs.len() > 1 { rng.below(rs.len()) } else { 0 };
        let accept = w.borrow().accept_waiting(lp);
        if let Some((listener, i)) = accept {
            if rng.one_in(3) {
                let r = &mut rs[lp];
                r.set_now(now);
                let fail = w.borrow().accept_faults && rng.one_in(24);
                let res = if fail {
                    // out of descriptors: the reactor closes what waits
                    // (reject_pending) and retries later
                    let errno = [libc::EMFILE, libc::ENFILE][rng.below(2)];
                    w.borrow_mut().accept_failed(lp, listener, errno);
                    Err(errno)
                } else {
                    w.borrow_mut().accepted(listener, i);
                    Ok(Sock::from_raw(SOCK_BASE + i as i32))
                };
                r.handle_event(Event::Accept { listener, res });
                active = true;
            }
        }
        // one batch of completions, in an order of the simulation's choice
        let buf = &mut self.buf;
        for _ in 0..1 + rng.below(8) {
            let ev = {
                let mut w = w.borrow_mut();
                let faults = w.faults;
                let readable: Vec<usize> = (0..w.peers.len()).filter(|&i| w.readable(i)).collect();
                let choice = rng.below(readable.len() + w.pending.len() + 1);
                if choice < readable.len() {
                    let i = readable[choice];
                    if faults && w.peers[i].link.is_some() && rng.one_in(64) {
                        // clogging between two engine connections (as
                        // between hosts): this direction delivers nothing
                        // for up to 200 ms of virtual time, then all of it
                        let until = w.now + 1 + rng.below(200) as u64;
                        w.peers[i].clogged_until = until;
                        w.note(13 ^ (i as u64) << 8 ^ until << 32);
                        continue;
                    }
                    let sync = w.sync;
                    let p = &mut w.peers[i];
                    let tok = p.token.unwrap_or(0);
                    let left = p.script.len() - p.fed;
                    let cancelling = p.cancelling;
                    let reset_now = p.will_reset
                        && !p.reset
                        && p.fed
                            >= match p.link {
                                None => p.script.len() / 2,
                                Some(_) => p.reset_after,
                            };
                    if reset_now || p.rst_pending {
                        p.reset = true;
                        p.rst_pending = false;
                        p.recv_armed = false;
                        p.eof_sent = true;
                        if let (true, Some(j)) = (reset_now, p.link) {
                            // the other end is reset too
                            let q = &mut w.peers[j];
                            if q.closes == 0 && !q.reset {
                                q.rst_pending = true;
                            }
                        }
                        Some((tok, Sim::End(RecvEnd::Error(libc::ECONNRESET))))
                    } else if left == 0 {
                        p.recv_armed = false;
                        p.eof_sent = true;
                        Some((tok, Sim::End(RecvEnd::Eof)))
                    } else if faults && !cancelling && !sync && rng.one_in(20) {
                        // the buffer ring ran dry: the receive ends, the
                        // bytes wait in the socket
                        p.recv_armed = false;
                        Some((tok, Sim::End(RecvEnd::NoBuffers)))
                    } else {
                        let k = if faults {
                            let max = if rng.one_in(2) { 8 } else { buf.len() };
                            1 + rng.below(left.min(max))
                        } else {
                            left.min(buf.len())
                        };
                        buf[..k].copy_from_slice(&p.script[p.fed..p.fed + k]);
                        p.fed += k;
                        Some((tok, Sim::Data(k)))
                    }
                } else if choice < readable.len() + w.pending.len() {
                    let pe = w.pending.remove(choice - readable.len());
                    Some((pe.token(), Sim::Done(pe)))
                } else if faults && !w.dead.is_empty() && rng.one_in(4) {
                    // a late completion for a connection already closed
                    let t = w.dead[rng.below(w.dead.len())];
                    Some((t, Sim::Stale(rng.one_in(2))))
                } else {
                    None
                }
            };
            let Some((token, what)) = ev else { continue };
            active = true;
            if let Sim::End(_) = what {
                // the receive ended by itself: a cancel on its way finds
                // nothing to cancel (no completion of its own)
                let mut w = w.borrow_mut();
                if w.peer(token).cancelling {
                    w.peer(token).cancelling = false;
                    w.pending
                        .retain(|p| !matches!(p, Pending::RecvEnd(t, _) if *t == token));
                }
            }
            w.borrow_mut().note(0x100 ^ token);
            // the kernel's tokens carry their loop in the top byte
            let r = &mut rs[(token >> 56) as usize];
            let tagged = token;
            let token = token & LOOP_MASK;
            r.set_now(now);
            match what {
                Sim::Data(k) => r.handle_event(Event::Recv {
                    token,
                    data: &mut buf[..k],
                }),
                Sim::End(how) => {
                    w.borrow_mut().completed += 1;
                    r.handle_event(Event::RecvEnd { token, how })
                }
                Sim::Done(pe) => {
                    let mut wm = w.borrow_mut();
                    wm.completed += 1;
                    match pe {
                        Pending::RecvEnd(..) => {
                            let p = wm.peer(tagged);
                            p.recv_armed = false;
                            p.cancelling = false;
                        }
                        Pending::Sent(..) | Pending::Writable(..) | Pending::Connected(..) => {}
                    }
                    drop(wm);
                    r.handle_event(match pe {
                        Pending::Sent(_, res) => Event::Sent { token, res },
                        Pending::RecvEnd(_, how) => Event::RecvEnd { token, how },
                        Pending::Writable(_) => Event::Writable { token },
                        Pending::Connected(_, res) => Event::Connected { token, res },
                    })
                }
                Sim::Stale(false) => {
                    buf[0] = 0xee;
                    r.handle_event(Event::Recv {
                        token,
                        data: &mut buf[..1],
                    })
                }
                Sim::Stale(true) => r.handle_event(Event::Connected { token, res: 0 }),
            }
        }
        self.now += rng.below(3) as u64;
        active
    }
}

/// A token without its loop byte.
const LOOP_MASK: u64 = (1 << 56) - 1;

enum Sim {
    Data(usize),
    End(RecvEnd),
    Done(Pending),
    /// A late completion for a closed connection: a receive's bytes, or
    /// (true) a connect's success.
    Stale(bool),
}
