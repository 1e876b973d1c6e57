//! The reactor as a state machine, without sockets: a fake backend records
//! what the reactor asks of it, the tests feed it completions and hand it
//! the time. Each test runs in both completion styles of the real
//! backends: io_uring's (sends and cancellations complete later) and
//! epoll's (they are done at once).

use super::testkit::{fake_reactor, FakeBackend, Kernel, Op};
use super::*;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Mutex;

/// The unit tests' kernel: records every call and completes nothing by
/// itself. In epoll's style a send is done at once, in full, and
/// cancellations are synchronous; in io_uring's a send is in flight until
/// the test completes it, and a cancelled receive ends with a `RecvEnd`
/// the test delivers.
struct Recorder {
    sync: bool,
    ops: Vec<Op>,
    /// The last outbound socket's number.
    next: i32,
}

impl Kernel for Recorder {
    fn sync(&self) -> bool {
        self.sync
    }
    fn record(&mut self, op: Op) {
        self.ops.push(op);
    }
    fn cancel(&mut self, op: Op) -> bool {
        self.ops.push(op);
        self.sync
    }
    fn send(&mut self, token: u64, bytes: Vec<u8>) -> SendOutcome {
        let n = bytes.len();
        self.ops.push(Op::Send(token, bytes));
        if self.sync {
            SendOutcome::Done(Ok(n))
        } else {
            SendOutcome::InFlight
        }
    }
    fn connect(&mut self, addr: SocketAddr) -> io::Result<Sock> {
        self.ops.push(Op::Connect(addr));
        self.next += 1;
        Ok(Sock::from_raw(self.next))
    }
}

/// What the test handler saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Open,
    Data(Vec<u8>),
    Drain,
    Eof,
    Timer(u64),
    Close(String),
}

type SeenLog = Arc<Mutex<Vec<Seen>>>;

/// Echoes; `close`, `close twice`, `abort`, `shut`, `pause`, `big`,
/// `panic`, `never` (a timer and a deadline after `Duration::MAX`) and
/// `soon` (a timer after 5 ms) and `again` (a zero-delay timer that sets
/// itself again) in the input are commands.
struct Probe {
    seen: SeenLog,
}

impl Handler for Probe {
    fn on_open(&mut self, _cx: &mut Ctx<'_>) {
        self.seen.lock().unwrap().push(Seen::Open);
    }
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        self.seen.lock().unwrap().push(Seen::Data(data.to_vec()));
        match &data[..] {
            b"close" => cx.close(),
            b"close twice" => {
                cx.close();
                cx.close();
            }
            b"abort" => cx.abort(),
            b"shut" => cx.shutdown_write(),
            b"pause" => cx.pause_reading(),
            b"big" => cx.write(&[7u8; 3000]),
            b"panic" => panic!("the probe was asked to panic"),
            b"never" => {
                cx.set_timer(Duration::MAX, 1);
                cx.set_deadline(Duration::MAX, 2);
            }
            b"soon" => cx.set_timer(Duration::from_millis(5), 3),
            b"again" => cx.set_timer(Duration::ZERO, 4),
            _ => cx.write(data),
        }
        data.len()
    }
    fn on_drain(&mut self, _cx: &mut Ctx<'_>) {
        self.seen.lock().unwrap().push(Seen::Drain);
    }
    fn on_eof(&mut self, cx: &mut Ctx<'_>) {
        self.seen.lock().unwrap().push(Seen::Eof);
        cx.close();
    }
    fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
        let mut seen = self.seen.lock().unwrap();
        seen.push(Seen::Timer(token));
        // `again`: set again from its own callback (bounded, so that a
        // loop that never leaves its timer pass fails the test, not hangs)
        if token == 4 && seen.iter().filter(|s| **s == Seen::Timer(4)).count() < 1000 {
            cx.set_timer(Duration::ZERO, 4);
        }
    }
    fn on_close(&mut self, _cx: &mut Ctx<'_>, reason: CloseReason) {
        let r = format!("{reason:?}");
        let r = r.split('(').next().unwrap_or("").to_string();
        self.seen.lock().unwrap().push(Seen::Close(r));
    }
}

struct Harness {
    r: Reactor,
    be: FakeBackend<Recorder>,
    kernel: Rc<RefCell<Recorder>>,
    sync: bool,
    seen: SeenLog,
    /// Milliseconds since `epoch`.
    now: u64,
    epoch: Instant,
}

fn limits() -> Limits {
    Limits {
        idle_ms: 0,
        send_ms: 0,
        high_water: 2048,
        hard_limit: 1 << 20,
        max_input: 1 << 16,
        linger_ms: 0,
    }
}

impl Harness {
    /// A harness with the limits of [`limits`].
    fn new(sync: bool) -> Self {
        Harness::with(sync, |_| {})
    }

    /// A harness whose limits are [`limits`] changed by `f`.
    fn with(sync: bool, f: impl FnOnce(&mut Limits)) -> Self {
        let mut lim = limits();
        f(&mut lim);
        let seen: SeenLog = Default::default();
        let seen2 = seen.clone();
        let factory: Factory = Arc::new(move || {
            Box::new(Probe {
                seen: seen2.clone(),
            }) as Box<dyn Handler>
        });
        let kernel = Rc::new(RefCell::new(Recorder {
            sync,
            ops: Vec::new(),
            next: 100,
        }));
        let epoch = Instant::now();
        let (r, be) = fake_reactor(&kernel, factory, lim, epoch);
        Harness {
            r,
            be,
            kernel,
            sync,
            seen,
            now: 0,
            epoch,
        }
    }

    /// The test clock as an instant.
    fn at(&self) -> Instant {
        self.epoch + Duration::from_millis(self.now)
    }

    /// One turn: the clock, timers, then the flush.
    fn turn(&mut self) {
        self.r.tick(self.at());
        self.r.flush(&mut self.be);
    }

    fn event(&mut self, ev: Event<'_>) {
        self.r.set_now(self.at());
        self.r.handle_event(ev);
        self.r.flush(&mut self.be);
    }

    /// Accepts socket `fd` and runs the turn that registers it; its token.
    fn accept(&mut self, fd: i32) -> u64 {
        self.event(Event::Accept {
            listener: 0,
            res: Ok(Sock::from_raw(fd)),
        });
        let ops = self.take_ops();
        let tok = ops
            .iter()
            .find_map(|o| match o {
                Op::AddConn(t, _, AddMode::Recv) => Some(*t),
                _ => None,
            })
            .expect("the accepted connection is registered");
        assert!(ops.contains(&Op::SetNodelay(Sock::from_raw(fd))));
        tok
    }

    fn recv(&mut self, token: u64, bytes: &[u8]) {
        let mut b = bytes.to_vec();
        self.event(Event::Recv {
            token,
            data: &mut b,
        });
    }

    fn take_ops(&self) -> Vec<Op> {
        std::mem::take(&mut self.kernel.borrow_mut().ops)
    }

    fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// Completes what the io_uring style left in flight: every send in
    /// full, and a cancelled receive or a teardown's receive with its end.
    fn complete(&mut self, ops: &[Op]) {
        if self.sync {
            return;
        }
        for op in ops {
            match op {
                Op::Send(t, b) => self.event(Event::Sent {
                    token: *t,
                    res: b.len() as i32,
                }),
                Op::CancelRecv(t) => self.event(Event::RecvEnd {
                    token: *t,
                    how: RecvEnd::Stopped,
                }),
                Op::CancelAll(t, f) if f.recv => self.event(Event::RecvEnd {
                    token: *t,
                    how: RecvEnd::Stopped,
                }),
                _ => {}
            }
        }
    }

    /// Takes what the reactor asked for, completes it (io_uring's style)
    /// and returns it with what the completions asked for in turn.
    fn settle(&mut self) -> Vec<Op> {
        let ops = self.take_ops();
        self.complete(&ops);
        [ops, self.take_ops()].concat()
    }

    fn closes(ops: &[Op]) -> Vec<Sock> {
        ops.iter()
            .filter_map(|o| match o {
                Op::Close { sock, .. } => Some(*sock),
                _ => None,
            })
            .collect()
    }

    fn sent(ops: &[Op]) -> Vec<u8> {
        ops.iter()
            .flat_map(|o| match o {
                Op::Send(_, b) => b.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// The test's one socket (7) was closed, after the handler saw its
    /// open, `data` and the close for `reason`; nothing is left behind.
    fn assert_ended(&mut self, ops: &[Op], data: &[u8], reason: &str) {
        assert_eq!(Harness::closes(ops), vec![Sock::from_raw(7)]);
        assert_eq!(
            self.take_seen(),
            vec![
                Seen::Open,
                Seen::Data(data.to_vec()),
                Seen::Close(reason.into())
            ]
        );
        self.assert_empty();
    }

    /// Nothing left behind: no slot, no queued byte, no leftover input.
    fn assert_empty(&self) {
        assert_eq!(self.r.live, 0, "a slot is still in use");
        assert_eq!(self.r.pool.queued, 0, "bytes are still queued");
        assert!(self
            .r
            .conns
            .iter()
            .all(|c| c.flags == 0 && c.closing == Closing::No && c.input.is_none()));
    }
}

fn both(f: impl Fn(bool)) {
    f(false);
    f(true);
}

#[test]
fn echo_then_graceful_close_closes_the_socket_once() {
    both(|sync| {
        let mut h = Harness::new(sync);
        let tok = h.accept(7);
        assert_eq!(h.take_seen(), vec![Seen::Open]);
        h.recv(tok, b"hello");
        let ops = h.take_ops();
        assert_eq!(Harness::sent(&ops), b"hello");
        h.complete(&ops);
        assert_eq!(
            h.take_seen(),
            vec![Seen::Data(b"hello".to_vec()), Seen::Drain]
        );
        // the peer ends its stream: the probe closes in on_eof
        h.event(Event::RecvEnd {
            token: tok,
            how: RecvEnd::Eof,
        });
        let ops = h.settle();
        assert_eq!(Harness::closes(&ops), vec![Sock::from_raw(7)]);
        assert!(ops.contains(&Op::RemoveConn(tok)));
        assert_eq!(
            h.take_seen(),
            vec![Seen::Eof, Seen::Close("PeerClosed".into())]
        );
        h.assert_empty();
        let c = h.r.shared.counters.snapshot();
        assert_eq!((c.accepted, c.closed, c.open), (1, 1, 0));
        assert_eq!((c.bytes_in, c.bytes_out), (5, 5));
    });
}

#[test]
fn a_completion_for_a_reused_slot_is_ignored() {
    both(|sync| {
        let mut h = Harness::new(sync);
        let old = h.accept(7);
        h.recv(old, b"abort");
        let ops = h.settle();
        assert_eq!(Harness::closes(&ops), vec![Sock::from_raw(7)]);
        h.assert_empty();
        h.take_seen();
        // the slot is reused by the next connection, with a new generation
        let new = h.accept(8);
        assert_ne!(old, new);
        assert_eq!(untoken(old).0, untoken(new).0);
        h.take_seen();
        // late completions of the old connection change nothing
        h.recv(old, b"stale");
        h.event(Event::Sent { token: old, res: 3 });
        h.event(Event::RecvEnd {
            token: old,
            how: RecvEnd::Error(libc::ECONNRESET),
        });
        assert_eq!(h.take_seen(), vec![]);
        assert_eq!(h.take_ops(), vec![]);
        h.recv(new, b"fresh");
        assert_eq!(h.take_seen()[0], Seen::Data(b"fresh".to_vec()));
        assert_eq!(Harness::sent(&h.take_ops()), b"fresh");
    });
}

#[test]
fn the_idle_timeout_follows_the_clock_it_is_given() {
    both(|sync| {
        let mut h = Harness::with(sync, |l| l.idle_ms = 1000);
        let tok = h.accept(7);
        h.take_seen();
        h.now = 600;
        h.recv(tok, b"x");
        h.settle();
        h.take_seen();
        // 1000 ms after the accept, but only 400 after the last bytes
        h.now = 1000;
        h.turn();
        assert_eq!(h.take_seen(), vec![]);
        assert_eq!(h.r.next_timeout(), Some(Duration::from_millis(600)));
        h.now = 1599;
        h.turn();
        assert_eq!(h.take_seen(), vec![]);
        h.now = 1600;
        h.turn();
        assert_eq!(h.take_seen(), vec![Seen::Close("IdleTimeout".into())]);
        let ops = h.settle();
        assert_eq!(Harness::closes(&ops), vec![Sock::from_raw(7)]);
        h.assert_empty();
        assert_eq!(h.r.shared.counters.snapshot().err_idle_timeout, 1);
    });
}

#[test]
fn a_delay_past_the_clock_saturates_and_never_fires() {
    both(|sync| {
        let mut h = Harness::with(sync, |_| {});
        let tok = h.accept(7);
        // a clock past zero, where a wrapping sum would land in the past
        h.now = 1000;
        h.recv(tok, b"never");
        h.recv(tok, b"soon");
        h.settle();
        h.take_seen();
        h.now = 1005;
        h.turn();
        assert_eq!(h.take_seen(), vec![Seen::Timer(3)]);
        h.now = 1 << 50;
        h.turn();
        assert_eq!(
            h.take_seen(),
            vec![],
            "neither the timer nor the deadline fired"
        );
        assert!(h
            .r
            .next_timeout()
            .is_some_and(|t| t > Duration::from_secs(1 << 50)));
    });
}

#[test]
fn a_timer_set_again_from_its_callback_fires_once_per_turn() {
    both(|sync| {
        let mut h = Harness::with(sync, |_| {});
        let tok = h.accept(7);
        h.recv(tok, b"again");
        h.settle();
        h.take_seen();
        for _ in 0..3 {
            assert_eq!(h.r.next_timeout(), Some(Duration::ZERO));
            h.turn();
            let seen = h.take_seen();
            let fired = seen.iter().filter(|s| **s == Seen::Timer(4)).count();
            assert_eq!(fired, 1, "{seen:?}");
            // and the loop serves its connections between the turns
            h.recv(tok, b"x");
            h.settle();
            assert!(h.take_seen().contains(&Seen::Data(b"x".to_vec())));
        }
    });
}

#[test]
fn a_lingering_close_sends_fin_then_waits_for_the_peer_or_the_timer() {
    both(|sync| {
        let linger = |l: &mut Limits| l.linger_ms = 2000;
        // the peer answers our FIN with its own
        let mut h = Harness::with(sync, linger);
        let tok = h.accept(7);
        h.recv(tok, b"close");
        let ops = h.take_ops();
        assert!(ops.contains(&Op::ShutdownWrite(Sock::from_raw(7))));
        assert!(Harness::closes(&ops).is_empty());
        assert!(!ops.iter().any(|o| matches!(o, Op::CancelRecv(_))));
        // it still reads (and drops) what the peer sends meanwhile
        h.recv(tok, b"late");
        h.event(Event::RecvEnd {
            token: tok,
            how: RecvEnd::Eof,
        });
        let ops = h.settle();
        h.assert_ended(&ops, b"close", "Local");

        // a silent peer: the timer ends it
        let mut h = Harness::with(sync, linger);
        let tok = h.accept(9);
        h.recv(tok, b"close");
        h.take_ops();
        h.now = 1999;
        h.turn();
        assert!(Harness::closes(&h.take_ops()).is_empty());
        h.now = 2000;
        h.turn();
        let ops = h.settle();
        assert_eq!(Harness::closes(&ops), vec![Sock::from_raw(9)]);
        assert_eq!(h.take_seen().last(), Some(&Seen::Close("Local".into())));
        h.assert_empty();
    });
}

#[test]
fn the_peers_fin_ends_lingering_and_a_linger_timer_due_meanwhile_does_nothing() {
    both(|sync| {
        let mut h = Harness::with(sync, |l| l.linger_ms = 2000);
        let tok = h.accept(7);
        h.recv(tok, b"close");
        let slot = untoken(tok).0 as usize;
        assert_eq!(h.r.conns[slot].closing, Closing::Lingering);
        h.take_ops();
        // the FIN arrives; before the flush that ends the connection, the
        // linger timer comes due in the same turn
        h.now = 2000;
        h.r.set_now(h.at());
        h.r.handle_event(Event::RecvEnd {
            token: tok,
            how: RecvEnd::Eof,
        });
        assert_eq!(h.r.conns[slot].closing, Closing::Lingered);
        h.r.tick(h.at());
        assert_eq!(h.r.conns[slot].phase, Phase::Open);
        h.r.flush(&mut h.be);
        let ops = h.settle();
        h.assert_ended(&ops, b"close", "Local");
    });
}

#[test]
fn a_fin_that_comes_while_the_close_is_still_sending_ends_it_without_lingering() {
    // io_uring's style: the echo's send stays in flight
    let mut h = Harness::with(false, |l| l.linger_ms = 2000);
    let tok = h.accept(7);
    h.recv(tok, b"hello");
    let sends = h.take_ops();
    let slot = untoken(tok).0;
    h.r.close_graceful(slot);
    h.turn();
    h.event(Event::RecvEnd {
        token: tok,
        how: RecvEnd::Eof,
    });
    assert_eq!(h.r.conns[slot as usize].closing, Closing::Graceful);
    h.complete(&sends);
    let ops = h.settle();
    assert!(!ops.iter().any(|o| matches!(o, Op::ShutdownWrite(_))));
    h.assert_ended(&ops, b"hello", "PeerClosed");
}

#[test]
fn a_second_close_changes_nothing() {
    both(|sync| {
        let mut h = Harness::new(sync);
        let tok = h.accept(7);
        h.recv(tok, b"close twice");
        let ops = h.settle();
        assert_eq!(Harness::closes(&ops), vec![Sock::from_raw(7)]);
        assert_eq!(h.take_seen().last(), Some(&Seen::Close("Local".into())));
        h.assert_empty();
    });
}

#[test]
fn a_close_asked_for_while_connecting_waits_for_the_connect_then_lingers() {
    both(|sync| {
        let mut h = Harness::with(sync, |l| l.linger_ms = 2000);
        let seen = h.seen.clone();
        let addr: SocketAddr = "192.0.2.9:7".parse().unwrap();
        let opts = ConnectOptions {
            timeout: Duration::from_millis(500),
            ..Default::default()
        };
        let id = h.r.connect(addr, &opts, Box::new(Probe { seen })).unwrap();
        let tok = id.as_u64() & ((1 << 56) - 1);
        h.turn();
        h.take_ops();
        assert!(LoopCx { core: &mut h.r }.close(id));
        h.turn();
        // nothing is sent or shut down before the connect completes
        let ops = h.take_ops();
        assert!(!ops.iter().any(|o| matches!(o, Op::ShutdownWrite(_))));
        let slot = untoken(tok).0 as usize;
        assert_eq!(
            (h.r.conns[slot].phase, h.r.conns[slot].closing),
            (Phase::Connecting, Closing::Graceful)
        );
        h.event(Event::Connected { token: tok, res: 0 });
        let ops = h.settle();
        assert!(ops.contains(&Op::ShutdownWrite(Sock::from_raw(101))));
        assert_eq!(h.r.conns[slot].closing, Closing::Lingering);
        // the connect timer finds an open connection and does nothing
        h.now = 500;
        h.turn();
        assert_eq!(h.take_seen(), vec![Seen::Open]);
        // the linger timer ends it
        h.now = 2000;
        h.turn();
        let ops = h.settle();
        assert_eq!(Harness::closes(&ops), vec![Sock::from_raw(101)]);
        assert_eq!(h.take_seen(), vec![Seen::Close("Local".into())]);
        h.assert_empty();
    });
}

#[test]
fn a_reset_asked_for_while_lingering_wins() {
    both(|sync| {
        let mut h = Harness::with(sync, |l| l.linger_ms = 2000);
        let tok = h.accept(7);
        h.recv(tok, b"close");
        h.take_ops();
        let slot = untoken(tok).0;
        h.r.close_for(slot, Closing::Slow);
        // a reset of lower precedence does not replace it
        h.r.close_for(slot, Closing::Abort);
        assert_eq!(h.r.conns[slot as usize].closing, Closing::Slow);
        h.turn();
        let ops = h.settle();
        assert!(ops.iter().any(|o| matches!(
            o,
            Op::Close {
                linger_zero: true,
                ..
            }
        )));
        assert_eq!(
            h.take_seen().last(),
            Some(&Seen::Close("SlowReader".into()))
        );
        assert_eq!(h.r.shared.counters.snapshot().err_slow_reader, 1);
        h.assert_empty();
    });
}

#[test]
fn back_pressure_stops_receiving_until_the_queue_drains() {
    both(|sync| {
        let mut h = Harness::new(sync);
        let tok = h.accept(7);
        h.take_seen();
        // 3000 bytes queued pass the 2048-byte high-water mark
        h.recv(tok, b"big");
        let ops = h.take_ops();
        if sync {
            // sent at once: the pause is over before the turn ends
            assert_eq!(Harness::sent(&ops).len(), 3000);
        } else {
            assert!(ops.contains(&Op::CancelRecv(tok)), "{ops:?}");
            assert!(h.r.conns[untoken(tok).0 as usize].flags & PAUSE_BP != 0);
            // input that arrives meanwhile is kept, not delivered
            h.recv(tok, b"kept");
            assert_eq!(h.take_seen(), vec![Seen::Data(b"big".to_vec())]);
            // the sends complete: the queue drains, reading resumes and
            // the kept input is delivered
            let mut all = Vec::new();
            let mut ops = [ops, h.take_ops()].concat();
            for _ in 0..10 {
                if ops.is_empty() {
                    break;
                }
                all.extend(ops.iter().cloned());
                h.complete(&ops);
                ops = h.take_ops();
            }
            assert_eq!(Harness::sent(&all)[..3000], [7u8; 3000][..]);
            assert!(all.contains(&Op::ArmRecv(tok)), "{all:?}");
            assert_eq!(
                h.take_seen(),
                vec![Seen::Drain, Seen::Data(b"kept".to_vec()), Seen::Drain]
            );
        }
        assert_eq!(h.r.pool.queued, 0);
    });
}

#[test]
fn a_panicking_handler_costs_its_connection_only() {
    both(|sync| {
        let mut h = Harness::new(sync);
        let a = h.accept(7);
        let b = h.accept(8);
        h.take_seen();
        h.recv(a, b"panic");
        let ops = h.settle();
        // aborted: closed with a RST
        assert!(ops.contains(&Op::Close {
            sock: Sock::from_raw(7),
            linger_zero: true,
            last_words: vec![],
        }));
        assert_eq!(
            h.take_seen(),
            vec![
                Seen::Data(b"panic".to_vec()),
                Seen::Close("HandlerPanic".into())
            ]
        );
        h.recv(b, b"still here");
        assert_eq!(Harness::sent(&h.take_ops()), b"still here");
        assert_eq!(h.r.shared.counters.snapshot().err_handler_panic, 1);
    });
}

#[test]
fn a_reset_while_a_send_is_in_flight_closes_after_the_send_completes() {
    let mut h = Harness::new(false);
    let tok = h.accept(7);
    h.recv(tok, b"ping");
    let ops = h.take_ops();
    assert_eq!(Harness::sent(&ops), b"ping");
    h.take_seen();
    // the receive fails while the send is still in flight
    h.event(Event::RecvEnd {
        token: tok,
        how: RecvEnd::Error(libc::ECONNRESET),
    });
    assert_eq!(h.take_seen(), vec![Seen::Close("Io".into())]);
    let ops = h.take_ops();
    assert!(
        ops.iter()
            .any(|o| matches!(o, Op::CancelAll(t, f) if *t == tok && f.send && !f.recv)),
        "{ops:?}"
    );
    // the descriptor must outlive the send that uses it
    assert!(Harness::closes(&ops).is_empty());
    h.event(Event::Sent {
        token: tok,
        res: -libc::ECANCELED,
    });
    assert_eq!(Harness::closes(&h.take_ops()), vec![Sock::from_raw(7)]);
    assert_eq!(h.take_seen(), vec![]);
    h.assert_empty();
}

#[test]
fn an_outbound_connect_opens_once_connected() {
    both(|sync| {
        let mut h = Harness::new(sync);
        let seen = h.seen.clone();
        let addr: SocketAddr = "192.0.2.9:7".parse().unwrap();
        let id =
            h.r.connect(
                addr,
                &ConnectOptions {
                    timeout: Duration::from_millis(500),
                    ..Default::default()
                },
                Box::new(Probe { seen }),
            )
            .expect("connect");
        h.turn();
        let ops = h.take_ops();
        assert_eq!(ops[0], Op::Connect(addr));
        let tok = id.as_u64() & ((1 << 56) - 1);
        assert!(ops.contains(&Op::AddConn(tok, Sock::from_raw(101), AddMode::Connect)));
        assert_eq!(h.take_seen(), vec![]);
        h.event(Event::Connected { token: tok, res: 0 });
        assert_eq!(h.take_seen(), vec![Seen::Open]);
        assert!(h.take_ops().contains(&Op::ArmRecv(tok)));
        // a second one that never connects times out on the given clock
        let seen = h.seen.clone();
        h.r.connect(
            addr,
            &ConnectOptions {
                timeout: Duration::from_millis(500),
                ..Default::default()
            },
            Box::new(Probe { seen }),
        )
        .expect("connect");
        h.turn();
        h.take_ops();
        h.now = 499;
        h.turn();
        assert_eq!(h.take_seen(), vec![]);
        h.now = 500;
        h.turn();
        assert_eq!(h.take_seen(), vec![Seen::Close("ConnectTimeout".into())]);
    });
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "illegal connection step")]
fn a_lifecycle_step_that_skips_on_close_is_caught() {
    let mut h = Harness::new(false);
    let tok = h.accept(7);
    // Open -> Free would free the slot without on_close
    h.r.conns[untoken(tok).0 as usize].to(Phase::Free);
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "illegal closing step")]
fn a_close_that_lingers_without_being_asked_for_is_caught() {
    let mut h = Harness::new(false);
    let tok = h.accept(7);
    // No -> Lingering would shut the socket down behind the handler's back
    h.r.conns[untoken(tok).0 as usize].close_as(Closing::Lingering);
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "started twice")]
fn a_receive_armed_twice_is_caught() {
    let mut h = Harness::new(false);
    let tok = h.accept(7);
    // the accept armed the receive already
    h.r.conns[untoken(tok).0 as usize].begin(op::RECV);
}
