//! The simulated kernel: what the reactor's calls on the fake backend and
//! sockets do to the world (`Kernel` for `World`), with the checks made
//! on the way (an operation started twice, a socket closed or used at the
//! wrong moment).

use super::*;

/// The simulated kernel behind the shared fake backend and sockets.
impl Kernel for World {
    fn sync(&self) -> bool {
        self.sync
    }
    fn record(&mut self, op: Op) {
        match op {
            Op::AddConn(token, sock, mode) => {
                let i = sock_index(sock);
                self.by_token.insert(token, i);
                self.note(1 ^ token << 8 ^ u64::from(mode == AddMode::Connect) << 7);
                self.submitted += 1;
                let p = &mut self.peers[i];
                p.token = Some(token);
                match mode {
                    AddMode::Recv => p.recv_armed = true,
                    // the handshake is the kernel's: it resolves whether or
                    // not the listener has accepted yet
                    AddMode::Connect => {
                        let res = if p.link.is_some() {
                            0
                        } else {
                            -libc::ECONNREFUSED
                        };
                        self.pending.push(Pending::Connected(token, res));
                    }
                }
            }
            Op::ArmRecv(token) => {
                self.note(2 ^ token << 8);
                self.submitted += 1;
                if self.peer(token).recv_armed {
                    self.violations
                        .push(format!("receive armed twice on {token:#x}"));
                }
                self.check_connected(token, "receive");
                self.peer(token).recv_armed = true;
            }
            Op::RemoveConn(token) => {
                self.note(6 ^ token << 8);
                self.dead.push(token);
            }
            Op::ShutdownWrite(s) => {
                let i = sock_index(s);
                self.peers[i].fin = true;
            }
            Op::Close {
                sock: s,
                linger_zero,
                last_words,
            } => {
                if s.number() < SOCK_BASE {
                    return; // the listener
                }
                let i = sock_index(s);
                let token = self.peers[i].token;
                self.peers[i].closes += 1;
                // the socket must outlive every operation on it
                if self.peers[i].recv_armed {
                    self.violations
                        .push(format!("socket {i} closed with its receive armed"));
                }
                if let Some(t) = token {
                    if self
                        .pending
                        .iter()
                        .any(|p| matches!(p, Pending::Sent(x, _) if *x == t))
                    {
                        self.violations
                            .push(format!("socket {i} closed with a send in flight"));
                    }
                }
                self.note(7 ^ (i as u64) << 8);
                // the other end of a linked socket sees a reset (a RST, or
                // our bytes left unread), else its end of stream once it
                // has read everything
                let p = &self.peers[i];
                let unread = !p.reset && p.fed < p.script.len();
                let broken = p.reset || p.rst_pending;
                if let Some(j) = p.link {
                    let q = &mut self.peers[j];
                    // the last words (a TLS alert) go out first
                    if q.closes == 0 && !q.reset && !broken {
                        q.script.extend_from_slice(&last_words);
                    }
                    if (linger_zero || unread) && q.closes == 0 && !q.reset {
                        q.rst_pending = true;
                    }
                }
            }
            Op::RemoveListener(id) => {
                // connections still waiting are refused (closed
                // unaccepted) once no loop listens on the address
                self.removed.push(id);
                let l = id & 0xffff;
                if self.removed.iter().filter(|&&x| x & 0xffff == l).count() >= self.loops {
                    self.refuse_waiting(l, usize::MAX);
                }
            }
            Op::ArmAccept(l) => {
                self.note(10 ^ (l as u64) << 8);
                self.accept_paused.retain(|&x| x != l);
            }
            Op::SetNodelay(_) => {}
            Op::CancelRecv(_) | Op::CancelAll(..) | Op::Send(..) | Op::Connect(_) => {
                unreachable!("answered by their own methods")
            }
        }
    }
    fn cancel(&mut self, op: Op) -> bool {
        match op {
            Op::CancelRecv(token) => {
                self.note(3 ^ token << 8);
                if self.sync {
                    self.peer(token).recv_armed = false;
                    self.completed += 1;
                    return true;
                }
                self.peer(token).cancelling = true;
                self.pending.push(Pending::RecvEnd(token, RecvEnd::Stopped));
                false
            }
            Op::CancelAll(token, ops) => {
                self.note(4 ^ token << 8);
                let armed = self.peer(token).recv_armed;
                if ops.recv != armed {
                    self.violations.push(format!(
                        "cancel_all on {token:#x}: recv {} but armed {armed}",
                        ops.recv
                    ));
                }
                let connecting = self
                    .pending
                    .iter()
                    .any(|p| matches!(p, Pending::Connected(t, _) if *t == token));
                if ops.connect != connecting {
                    self.violations.push(format!(
                        "cancel_all on {token:#x}: connect {} but pending {connecting}",
                        ops.connect
                    ));
                }
                if self.sync {
                    if armed {
                        self.completed += 1;
                    }
                    self.peer(token).recv_armed = false;
                    // a writability wait ends with the registration
                    let before = self.pending.len();
                    self.pending.retain(|p| p.token() != token);
                    self.completed += (before - self.pending.len()) as u64;
                    return true;
                }
                // io_uring style: the receive ends with its read side shut
                // down (an end of stream) unless a cancel of it is already
                // on its way
                if armed && !self.peer(token).cancelling {
                    self.peer(token).cancelling = true;
                    self.pending.push(Pending::RecvEnd(token, RecvEnd::Eof));
                }
                // a connect still resolving ends cancelled, or (the cancel
                // too late) with its own result
                if self.faults && self.send_rng.one_in(2) {
                    for p in &mut self.pending {
                        if let Pending::Connected(t, res) = p {
                            if *t == token {
                                *res = -libc::ECANCELED;
                            }
                        }
                    }
                }
                false
            }
            _ => unreachable!("not a cancellation: {op:?}"),
        }
    }
    fn send(&mut self, token: u64, bytes: Vec<u8>) -> SendOutcome {
        self.check_connected(token, "send");
        let reset = self.peer(token).reset || self.peer(token).rst_pending;
        // a short send: sometimes one byte, sometimes some, often all
        let rng = &mut self.send_rng;
        let n = match self.faults.then(|| rng.below(4)) {
            Some(0) => 1.min(bytes.len()),
            Some(1) => rng.below(bytes.len() + 1),
            _ => bytes.len(),
        };
        self.note(5 ^ (token << 8) ^ ((n as u64) << 40));
        if self.sync {
            if reset {
                return SendOutcome::Done(Err(io::Error::from_raw_os_error(libc::EPIPE)));
            }
            if n == 0 || (self.faults && self.send_rng.one_in(8)) {
                self.submitted += 1;
                self.pending.push(Pending::Writable(token));
                return SendOutcome::WouldBlock;
            }
            self.deliver(token, &bytes[..n]);
            return SendOutcome::Done(Ok(n));
        }
        self.submitted += 1;
        if reset {
            self.pending.push(Pending::Sent(token, -libc::ECONNRESET));
        } else {
            self.deliver(token, &bytes[..n]);
            self.pending.push(Pending::Sent(token, n as i32));
        }
        SendOutcome::InFlight
    }
    fn reject_pending(&mut self, listener: Sock, max: usize) -> usize {
        // the reactor scenarios' one listener is `LISTENER` (no number),
        // the engine's listener i is socket i
        let l = usize::try_from(listener.number()).unwrap_or(0);
        let n = self.refuse_waiting(l, max);
        self.rejected += n as u64;
        self.note(11 ^ (n as u64) << 8);
        n
    }
    /// A new socket; when `addr` is a listener's, the connection it will
    /// accept is linked to it (each gets what the other sends), else the
    /// connect is refused.
    fn connect(&mut self, addr: SocketAddr) -> io::Result<Sock> {
        let listener = self.listen_addrs.iter().position(|a| *a == addr);
        let i = self.peers.len();
        self.note(8 ^ (i as u64) << 8);
        for (outbound, link) in [(true, i + 1), (false, i)] {
            let will_reset = self.faults && self.send_rng.one_in(8);
            let reset_after = self.send_rng.below(1 << 15);
            let p = Peer {
                link: listener.map(|_| link),
                outbound,
                reset_after,
                ..Default::default()
            };
            self.add_peer(p, will_reset);
            if listener.is_none() {
                break;
            }
        }
        if let Some(l) = listener {
            self.accepts.push_back((l, i + 1));
        }
        Ok(Sock::from_raw(SOCK_BASE + i as i32))
    }
}

impl World {
    /// Closes up to `max` connections waiting on listener `l` unaccepted
    /// (their clients see a reset); how many.
    fn refuse_waiting(&mut self, l: usize, max: usize) -> usize {
        let mut n = 0;
        let mut left = std::collections::VecDeque::new();
        while let Some((li, s)) = self.accepts.pop_front() {
            if li == l && n < max {
                n += 1;
                self.peers[s].closes += 1;
                if let Some(j) = self.peers[s].link {
                    self.peers[j].rst_pending = true;
                }
            } else {
                left.push_back((li, s));
            }
        }
        self.accepts = left;
        n
    }

    /// The first connection waiting on a listener that loop `lp`
    /// accepts on (not paused, not removed there).
    pub(super) fn accept_waiting(&self, lp: usize) -> Option<(usize, usize)> {
        self.accepts.iter().copied().find(|(l, _)| {
            let id = l | lp << 16;
            !self.accept_paused.contains(&id) && !self.removed.contains(&id)
        })
    }

    /// Loop `lp`'s accept on `listener` failed for want of descriptors:
    /// that listener stops accepting until the reactor arms it again.
    pub(super) fn accept_failed(&mut self, lp: usize, listener: usize, errno: i32) {
        self.note(12 ^ (listener as u64) << 8 ^ (lp as u64) << 24 ^ (errno as u64) << 40);
        self.accept_failures += 1;
        self.accept_paused.push(listener | lp << 16);
    }

    /// `(listener, socket)` is accepted: off the queue.
    pub(super) fn accepted(&mut self, listener: usize, sock: usize) {
        if let Some(k) = self.accepts.iter().position(|&a| a == (listener, sock)) {
            self.accepts.remove(k);
        }
        self.accepts_delivered += 1;
    }
}
