//! What the reactor's unit tests (`tests.rs`) and its simulation
//! (`sim/`) share: a reactor with one service and no backend, and one
//! fake backend plus fake sockets that turn every call the reactor makes
//! into an [`Op`] and hand it to a [`Kernel`] — a recorder the unit tests
//! inspect, or the simulation's world, which answers with faults.
//!
//! Keeping one pair of fakes means the two cannot drift apart in how they
//! read the reactor's calls (which bytes a send carries in each completion
//! style, which socket a close is for).

use super::*;
use std::cell::RefCell;
use std::rc::Rc;

/// A reactor with one service (handlers from `factory`, limits `lim`)
/// over `socks`, with one listener (socket [`LISTENER`], index 0) and no
/// backend attached (the test passes one to `flush`).
pub(super) fn test_reactor(
    factory: Factory,
    lim: Limits,
    socks: Box<dyn Sockets>,
    epoch: Instant,
) -> Reactor {
    let shared = LoopShared::new(Arc::new(Waker::new().expect("eventfd")));
    let (_tx, rx) = mpsc::channel();
    let services = vec![ServiceRt {
        factory,
        limits: 0,
        max_conns: 1 << 20,
        max_per_addr: 0,
        per_addr: Default::default(),
        open: Arc::new(AtomicUsize::new(0)),
        nodelay: true,
        filter: None,
        handshake_ms: 0,
    }];
    let mut r = Reactor::new(
        0,
        shared,
        rx,
        Arc::new(OnceLock::new()),
        services,
        vec![lim],
        4096,
        lim,
        1 << 30,
        socks,
        epoch,
    );
    r.listeners.push(ListenerRt {
        sock: LISTENER,
        service: 0,
        paused: false,
        removed: false,
    });
    r
}

/// The listener's socket.
pub(super) const LISTENER: Sock = Sock::NONE;

/// A call the reactor made on its backend or its sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    AddConn(u64, Sock, AddMode),
    ArmRecv(u64),
    CancelRecv(u64),
    CancelAll(u64, InFlight),
    /// The bytes a send offered: all buffers in epoll's style, the first
    /// one in io_uring's (one buffer per send). (Sends and connects reach
    /// the kernel through their own methods; only the unit tests' recorder
    /// makes ops of them.)
    #[cfg_attr(not(test), allow(dead_code))]
    Send(u64, Vec<u8>),
    RemoveConn(u64),
    ArmAccept(usize),
    RemoveListener(usize),
    SetNodelay(Sock),
    ShutdownWrite(Sock),
    Close {
        sock: Sock,
        linger_zero: bool,
        last_words: Vec<u8>,
    },
    #[cfg_attr(not(test), allow(dead_code))]
    Connect(SocketAddr),
}

impl std::fmt::Debug for AddMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddMode::Recv => "Recv",
            AddMode::Connect => "Connect",
        })
    }
}

/// The other side of [`FakeBackend`] and [`FakeSockets`]: what the
/// reactor's calls do.
pub(super) trait Kernel {
    /// epoll's style (sends are done at once or would block,
    /// cancellations are synchronous); otherwise io_uring's (a send is in
    /// flight until its completion, a cancelled receive ends later).
    fn sync(&self) -> bool;
    /// A call whose answer is only that it happened.
    fn record(&mut self, op: Op);
    /// `CancelRecv` or `CancelAll`: whether it is done at once.
    fn cancel(&mut self, op: Op) -> bool;
    /// `Send`: what came of it.
    fn send(&mut self, token: u64, bytes: Vec<u8>) -> SendOutcome;
    /// A new outbound socket, its connect started.
    fn connect(&mut self, addr: SocketAddr) -> io::Result<Sock>;
    /// Out of descriptors: up to `max` connections waiting on `listener`
    /// closed unaccepted; how many.
    fn reject_pending(&mut self, _listener: Sock, _max: usize) -> usize {
        0
    }
}

/// A [`Backend`] that hands every call to its kernel. The second field is
/// its loop's index in the top byte of a token (`loop << 56`, as in a
/// [`ConnId`]): the kernel sees every loop's tokens tagged, so that
/// several loops' tokens never meet; listener indices carry the loop
/// above bit 16.
pub(super) struct FakeBackend<K>(pub(super) Rc<RefCell<K>>, pub(super) u64);

impl<K> FakeBackend<K> {
    fn lid(&self, listener: usize) -> usize {
        listener | ((self.1 >> 56) as usize) << 16
    }
}

impl<K: Kernel> Backend for FakeBackend<K> {
    fn add_listener(&mut self, _sock: Sock) -> io::Result<usize> {
        Ok(0)
    }
    fn arm_accept(&mut self, listener: usize) {
        let l = self.lid(listener);
        self.0.borrow_mut().record(Op::ArmAccept(l));
    }
    fn remove_listener(&mut self, listener: usize) {
        let l = self.lid(listener);
        self.0.borrow_mut().record(Op::RemoveListener(l));
    }
    fn add_conn(&mut self, token: u64, sock: Sock, mode: AddMode) -> io::Result<()> {
        self.0
            .borrow_mut()
            .record(Op::AddConn(token | self.1, sock, mode));
        Ok(())
    }
    fn arm_recv(&mut self, token: u64, _sock: Sock) {
        self.0.borrow_mut().record(Op::ArmRecv(token | self.1));
    }
    fn cancel_recv(&mut self, token: u64, _sock: Sock) -> bool {
        self.0.borrow_mut().cancel(Op::CancelRecv(token | self.1))
    }
    fn cancel_all(&mut self, token: u64, _sock: Sock, ops: InFlight) -> bool {
        self.0
            .borrow_mut()
            .cancel(Op::CancelAll(token | self.1, ops))
    }
    fn sends_one_buffer(&self) -> bool {
        !self.0.borrow().sync()
    }
    fn send(&mut self, token: u64, _sock: Sock, bufs: &[IoSlice<'_>]) -> SendOutcome {
        let mut k = self.0.borrow_mut();
        let bytes: Vec<u8> = if k.sync() {
            bufs.iter().flat_map(|b| b.iter().copied()).collect()
        } else {
            bufs.first().map_or_else(Vec::new, |b| b.to_vec())
        };
        k.send(token | self.1, bytes)
    }
    fn send_file(&mut self, _: u64, _: Sock, _: &std::fs::File, _: u64, _: usize) -> SendOutcome {
        SendOutcome::Done(Err(io::Error::other("no files in the fake backend")))
    }
    fn remove_conn(&mut self, token: u64, _sock: Sock) {
        self.0.borrow_mut().record(Op::RemoveConn(token | self.1));
    }
    fn wait(&mut self, _: Option<Duration>, _: &mut dyn FnMut(Event<'_>)) -> io::Result<()> {
        Ok(())
    }
}

/// [`Sockets`] that exist only as numbers; the calls go to the kernel.
pub(super) struct FakeSockets<K>(pub(super) Rc<RefCell<K>>);

impl<K: Kernel> Sockets for FakeSockets<K> {
    fn set_nodelay(&mut self, s: Sock) {
        self.0.borrow_mut().record(Op::SetNodelay(s));
    }
    fn peer_addr(&self, _s: Sock) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from(([192, 0, 2, 1], 4000)))
    }
    fn local_addr(&self, _s: Sock) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from(([192, 0, 2, 2], 80)))
    }
    fn take_error(&self, _s: Sock) -> io::Result<Option<io::Error>> {
        Ok(None)
    }
    fn connect(&mut self, addr: SocketAddr, _spec: &ConnectSpec) -> io::Result<Sock> {
        self.0.borrow_mut().connect(addr)
    }
    fn shutdown_write(&mut self, s: Sock) {
        self.0.borrow_mut().record(Op::ShutdownWrite(s));
    }
    fn close(&mut self, sock: Sock, linger_zero: bool, last_words: &[IoSlice<'_>]) {
        self.0.borrow_mut().record(Op::Close {
            sock,
            linger_zero,
            last_words: last_words.iter().flat_map(|b| b.iter().copied()).collect(),
        });
    }
    fn reject_pending(&mut self, listener: Sock, max: usize) -> usize {
        self.0.borrow_mut().reject_pending(listener, max)
    }
}

/// A reactor (with [`test_reactor`]) over fake sockets and the backend to
/// flush it with, both wired to `kernel`.
pub(super) fn fake_reactor<K: Kernel + 'static>(
    kernel: &Rc<RefCell<K>>,
    factory: Factory,
    lim: Limits,
    epoch: Instant,
) -> (Reactor, FakeBackend<K>) {
    let r = test_reactor(factory, lim, Box::new(FakeSockets(kernel.clone())), epoch);
    (r, FakeBackend(kernel.clone(), 0))
}
