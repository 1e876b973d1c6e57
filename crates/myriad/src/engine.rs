//! The engine: building the loops, binding listeners, starting threads,
//! shutting down.

use crate::backend::{
    self, epoll::EpollBackend, sys, uring::UringBackend, Backend, BackendKind, OsSockets, Sock,
    UringParams,
};
use crate::handler::Handler;
use crate::reactor::{
    dur_ms, Factory, Limits, ListenerRt, LoopHandle, LoopShared, Reactor, ServiceRt,
};
use crate::stats::Stats;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Errors from building or running an engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding or configuring a listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// The requested backend cannot run here.
    #[error("backend {kind} unavailable: {source}")]
    Backend {
        /// The backend.
        kind: BackendKind,
        /// The cause.
        source: io::Error,
    },
    /// Another I/O error while starting or running a loop.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// An invalid setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A loop thread panicked.
    #[error("loop thread {0} panicked")]
    Panicked(usize),
}

/// A listening service: addresses, a handler factory and limits.
///
/// ```
/// use myriad::{Ctx, Handler, Service};
/// use std::time::Duration;
/// struct Echo;
/// impl Handler for Echo {
///     fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize { cx.write(d); d.len() }
/// }
/// let svc = Service::new("echo", "127.0.0.1:0".parse().unwrap(), || Echo)
///     .max_connections(10_000)
///     .idle_timeout(Some(Duration::from_secs(60)));
/// assert_eq!(svc.name(), "echo");
/// ```
pub struct Service {
    name: String,
    addrs: Vec<SocketAddr>,
    factory: Factory,
    max_connections: usize,
    max_per_addr: u32,
    backlog: i32,
    nodelay: bool,
    limits: Limits,
    pub(crate) filter: Option<crate::filter::FilterFactory>,
    handshake_ms: u32,
    /// Listening sockets taken over from another engine, by address.
    inherited: Vec<(SocketAddr, Vec<std::os::fd::OwnedFd>)>,
}

impl Service {
    /// A service on `addr` creating one handler per connection with
    /// `factory` (called on the connection's loop).
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service};
    /// # struct Echo;
    /// # impl Handler for Echo { fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize { cx.write(d); d.len() } }
    /// let svc = Service::new("echo", "[::1]:7000".parse().unwrap(), || Echo);
    /// ```
    pub fn new<H: Handler>(
        name: &str,
        addr: SocketAddr,
        factory: impl Fn() -> H + Send + Sync + 'static,
    ) -> Self {
        Service {
            name: name.to_string(),
            addrs: vec![addr],
            factory: Arc::new(move || Box::new(factory()) as Box<dyn Handler>),
            max_connections: usize::MAX,
            max_per_addr: 0,
            backlog: 4096,
            nodelay: true,
            limits: Limits {
                idle_ms: 0,
                send_ms: 0,
                high_water: 1 << 20,
                hard_limit: 64 << 20,
                max_input: 16 << 20,
                linger_ms: 2_000,
            },
            filter: None,
            handshake_ms: 10_000,
            inherited: Vec::new(),
        }
    }

    /// Serves on listening sockets taken over from another engine
    /// ([`Engine::listeners`]) instead of binding new ones, for the
    /// addresses they are bound to: a reload that replaces an engine keeps
    /// the sockets, so connections waiting in their accept queues are
    /// accepted by the new engine instead of being reset when the old one
    /// closes its copies. Loop `i` takes socket `i`; with fewer loops than
    /// sockets the rest are closed, with more the rest are bound anew.
    /// The sockets are made non-blocking (for every holder: the flag
    /// belongs to the shared open file).
    ///
    /// ```no_run
    /// # use myriad::{Ctx, Engine, Handler, Service};
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// # fn f(old: &Engine) -> std::io::Result<()> {
    /// let addr = old.local_addrs(0)[0];
    /// let svc = Service::new("x", addr, || E).inherit(old.listeners(0)?);
    /// # Ok(()) }
    /// ```
    pub fn inherit(mut self, listeners: Vec<(SocketAddr, Vec<std::os::fd::OwnedFd>)>) -> Self {
        self.inherited = listeners;
        self
    }

    /// Runs every connection through a filter made by `factory` (TLS: see
    /// `myriad-tls`). Handlers see only the application bytes; `on_open` is
    /// called when the filter's handshake is done.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service, Filter, FilterError, Outbound};
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// struct Plain;
    /// impl Filter for Plain {
    ///     fn decode(&mut self, i: &mut [u8], app: &mut Vec<u8>, _: &mut dyn Outbound) -> Result<(), FilterError> { app.extend_from_slice(i); Ok(()) }
    ///     fn encode(&mut self, p: &[u8], net: &mut dyn Outbound) -> Result<(), FilterError> { net.push(p); Ok(()) }
    /// }
    /// let s = Service::new("x", "127.0.0.1:0".parse().unwrap(), || E).filter(|| Box::new(Plain));
    /// ```
    pub fn filter(
        mut self,
        factory: impl Fn() -> Box<dyn crate::Filter> + Send + Sync + 'static,
    ) -> Self {
        self.filter = Some(Arc::new(factory));
        self
    }

    /// Wraps the handler of every connection: `wrap` gets the one the
    /// service's factory made and returns the handler the engine drives (a
    /// protocol layer in front of it, such as
    /// [`crate::proxy::ProxyProtocol`]).
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service};
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let s = Service::new("x", "127.0.0.1:0".parse().unwrap(), || E).wrap_handlers(|h| h);
    /// ```
    pub fn wrap_handlers(
        mut self,
        wrap: impl Fn(Box<dyn Handler>) -> Box<dyn Handler> + Send + Sync + 'static,
    ) -> Self {
        let inner = self.factory;
        self.factory = Arc::new(move || wrap(inner()));
        self
    }

    /// Close connections whose filter handshake takes longer than this
    /// (default 10 s).
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service};
    /// # use std::time::Duration;
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let s = Service::new("x", "127.0.0.1:0".parse().unwrap(), || E).handshake_timeout(Duration::from_secs(5));
    /// ```
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_ms = dur_ms(Some(t));
        self
    }

    /// The service's name.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service};
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// assert_eq!(Service::new("x", "127.0.0.1:0".parse().unwrap(), || E).name(), "x");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Also listen on `addr`.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service};
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let s = Service::new("x", "127.0.0.1:0".parse().unwrap(), || E).listen("[::1]:0".parse().unwrap());
    /// ```
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.addrs.push(addr);
        self
    }

    /// Refuse connections beyond this many open at once (over all loops).
    /// Refused connections are closed at once and counted in
    /// [`Stats::refused`].
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service};
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let s = Service::new("x", "127.0.0.1:0".parse().unwrap(), || E).max_connections(100);
    /// ```
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// At most `n` connections from one source address at once (0: no
    /// limit, the default); more are accepted and closed at once, counted
    /// as `refused` and `refused_per_addr`. Costs one `getpeername` per
    /// accepted connection and a short lock on accept and close.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service};
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let s = Service::new("x", "127.0.0.1:0".parse().unwrap(), || E).max_connections_per_addr(100);
    /// ```
    pub fn max_connections_per_addr(mut self, n: u32) -> Self {
        self.max_per_addr = n;
        self
    }

    /// The listen backlog (capped by `net.core.somaxconn`). Default 4096.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service};
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let s = Service::new("x", "127.0.0.1:0".parse().unwrap(), || E).backlog(65535);
    /// ```
    pub fn backlog(mut self, n: i32) -> Self {
        self.backlog = n;
        self
    }

    /// `TCP_NODELAY` on accepted connections (default on).
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service};
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let s = Service::new("x", "127.0.0.1:0".parse().unwrap(), || E).nodelay(false);
    /// ```
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// Close connections that receive nothing for this long (default: none).
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service};
    /// # use std::time::Duration;
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let s = Service::new("x", "127.0.0.1:0".parse().unwrap(), || E).idle_timeout(Some(Duration::from_secs(300)));
    /// ```
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
        self.limits.idle_ms = dur_ms(t);
        self
    }

    /// Close a connection whose queued bytes make no progress for this
    /// long: the peer stopped reading (or keeps its window at zero) while
    /// we have something to send. Counted as `err_send_timeout`. Default:
    /// none.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service};
    /// # use std::time::Duration;
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let s = Service::new("x", "127.0.0.1:0".parse().unwrap(), || E).send_timeout(Some(Duration::from_secs(30)));
    /// ```
    pub fn send_timeout(mut self, t: Option<Duration>) -> Self {
        self.limits.send_ms = dur_ms(t);
        self
    }

    /// How long a graceful close ([`Ctx::close`](crate::Ctx::close)) waits
    /// for the peer's end of stream once everything queued is sent: the
    /// sending side is shut down (FIN) and what the peer still sends is
    /// read and discarded, so that closing the socket with unread input
    /// does not send a reset that destroys the last reply before the peer
    /// read it (a pipelining client whose request was refused, a
    /// WebSocket peer still sending after a close). The connection counts
    /// as open until then. `None` closes at once. Default: 2 s.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service};
    /// # use std::time::Duration;
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let s = Service::new("x", "127.0.0.1:0".parse().unwrap(), || E).linger(None);
    /// ```
    pub fn linger(mut self, t: Option<Duration>) -> Self {
        self.limits.linger_ms = dur_ms(t);
        self
    }

    /// Pause reading from a peer while this many bytes are queued for it
    /// (back-pressure; resumes when the queue drains). Default 1 MiB.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service};
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let s = Service::new("x", "127.0.0.1:0".parse().unwrap(), || E).write_high_water(256 << 10);
    /// ```
    pub fn write_high_water(mut self, bytes: usize) -> Self {
        self.limits.high_water = bytes.min(u32::MAX as usize) as u32;
        self
    }

    /// Close a peer that lets this many bytes pile up unsent (it does not
    /// read). Default 64 MiB.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service};
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let s = Service::new("x", "127.0.0.1:0".parse().unwrap(), || E).write_hard_limit(8 << 20);
    /// ```
    pub fn write_hard_limit(mut self, bytes: usize) -> Self {
        self.limits.hard_limit = bytes.min(u32::MAX as usize) as u32;
        self
    }

    /// Close a connection whose unconsumed input passes this many bytes.
    /// Default 16 MiB.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service};
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let s = Service::new("x", "127.0.0.1:0".parse().unwrap(), || E).max_input(1 << 20);
    /// ```
    pub fn max_input(mut self, bytes: usize) -> Self {
        self.limits.max_input = bytes.min(u32::MAX as usize) as u32;
        self
    }
}

/// Builds an [`Engine`].
///
/// ```no_run
/// use myriad::{BackendKind, Ctx, Engine, Handler, Service};
/// struct Echo;
/// impl Handler for Echo {
///     fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize { cx.write(d); d.len() }
/// }
/// let engine = Engine::builder()
///     .threads(2)
///     .backend(BackendKind::Auto)
///     .service(Service::new("echo", "127.0.0.1:7000".parse().unwrap(), || Echo))
///     .start()?;
/// engine.wait();
/// # Ok::<(), myriad::Error>(())
/// ```
pub struct EngineBuilder {
    threads: usize,
    backend: BackendKind,
    services: Vec<Service>,
    uring: UringParams,
    chunk_size: usize,
    epoll_buf: usize,
    max_queued: u64,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            backend: BackendKind::Auto,
            services: Vec::new(),
            uring: UringParams {
                sq_entries: 4096,
                buf_count: 512,
                buf_size: 32 << 10,
                batch_wait: None,
            },
            chunk_size: 64 << 10,
            epoll_buf: 64 << 10,
            max_queued: 1 << 30,
        }
    }
}

impl EngineBuilder {
    /// The most bytes one loop may hold queued for all its connections
    /// together (copies and shared buffers). Past it, the connections with
    /// the largest queues are closed first (counted as `err_queue_cap`)
    /// until nine tenths remain. Default 1 GiB per loop.
    ///
    /// ```
    /// let b = myriad::Engine::builder().max_queued_per_loop(256 << 20);
    /// ```
    pub fn max_queued_per_loop(mut self, bytes: u64) -> Self {
        self.max_queued = bytes;
        self
    }

    /// Number of I/O threads (event loops). Default: the number of cores.
    ///
    /// ```
    /// let b = myriad::Engine::builder().threads(1);
    /// ```
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// The backend (default [`BackendKind::Auto`]).
    ///
    /// ```
    /// let b = myriad::Engine::builder().backend(myriad::BackendKind::Epoll);
    /// ```
    pub fn backend(mut self, kind: BackendKind) -> Self {
        self.backend = kind;
        self
    }

    /// Adds a listening service.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler, Service};
    /// # struct E; impl Handler for E { fn on_data(&mut self, _: &mut Ctx<'_>, d: &mut [u8]) -> usize { d.len() } }
    /// let b = myriad::Engine::builder().service(Service::new("x", "127.0.0.1:0".parse().unwrap(), || E));
    /// ```
    pub fn service(mut self, s: Service) -> Self {
        self.services.push(s);
        self
    }

    /// io_uring provided-buffer ring per loop: `count` buffers (a power of
    /// two, at most 32768) of `size` bytes. Default 512 × 32 KiB. Pages are
    /// only touched when data lands in them, with incremental consumption
    /// (Linux 6.12+) small receives share a buffer, and buffers are put
    /// into circulation as needed (8 first, twice as many each time the
    /// ring runs dry), so a loop that only sees small messages touches a
    /// few of them.
    ///
    /// ```
    /// let b = myriad::Engine::builder().recv_buffers(1024, 16 << 10);
    /// ```
    pub fn recv_buffers(mut self, count: u16, size: u32) -> Self {
        self.uring.buf_count = count;
        self.uring.buf_size = size;
        self
    }

    /// io_uring: when the loop waits, wake it for `completions`
    /// completions, or once `max_delay` has passed with at least one
    /// (`IORING_ENTER_EXT_ARG` `min_wait_usec`, Linux 6.12+; ignored where
    /// the kernel lacks it, and by the epoll backend). A loop with nothing
    /// to do still wakes for its first completion at once; a busy loop with
    /// fewer than `completions` pending adds up to `max_delay` of latency
    /// and makes fewer, larger turns. Off by default: a server should not
    /// trade latency for it; a load generator may (`myriad-load` measures
    /// whether it pays).
    ///
    /// ```
    /// let b = myriad::Engine::builder().batch_wait(16, std::time::Duration::from_micros(20));
    /// ```
    pub fn batch_wait(mut self, completions: u32, max_delay: std::time::Duration) -> Self {
        let us = max_delay.as_micros().min(u32::MAX as u128) as u32;
        self.uring.batch_wait = (completions > 1 && us > 0).then_some((completions, us));
        self
    }

    /// io_uring submission queue size per loop (default 4096).
    ///
    /// ```
    /// let b = myriad::Engine::builder().sq_entries(1024);
    /// ```
    pub fn sq_entries(mut self, n: u32) -> Self {
        self.uring.sq_entries = n;
        self
    }

    /// Size of the large pooled chunks outbound bytes are copied into
    /// (default 64 KiB: a whole burst of TLS records or a bulk write leaves
    /// in one send). Small writes use 2 KiB chunks.
    ///
    /// ```
    /// let b = myriad::Engine::builder().write_chunk_size(64 << 10);
    /// ```
    pub fn write_chunk_size(mut self, n: usize) -> Self {
        self.chunk_size = n;
        self
    }

    /// Binds every listener, starts the loops and returns once all of them
    /// are running.
    ///
    /// ```no_run
    /// let engine = myriad::Engine::builder().threads(1).start()?;
    /// engine.shutdown(std::time::Duration::from_secs(1));
    /// engine.wait();
    /// # Ok::<(), myriad::Error>(())
    /// ```
    pub fn start(mut self) -> Result<Engine, Error> {
        if self.threads == 0 || self.threads > 255 {
            return Err(Error::Config(format!(
                "threads must be 1..=255, got {}",
                self.threads
            )));
        }
        if !self.uring.buf_count.is_power_of_two() || self.uring.buf_count > 32768 {
            return Err(Error::Config(
                "recv buffer count must be a power of two <= 32768".into(),
            ));
        }
        sys::ignore_sigpipe();
        let (kind, why) =
            backend::resolve(self.backend, &self.uring).map_err(|source| Error::Backend {
                kind: self.backend,
                source,
            })?;
        tracing::info!(backend = %kind, reason = %why, threads = self.threads, "myriad engine starting");

        // Bind: every loop gets its own SO_REUSEPORT socket per address. The
        // first bind resolves port 0; the others reuse the port it got.
        let n = self.threads;
        let mut per_loop: Vec<Vec<(RawFd, u16)>> = vec![Vec::new(); n];
        let mut local_addrs: Vec<Vec<SocketAddr>> = Vec::new();
        let guard_fds = FdGuard::default();
        let mut guard = guard_fds;
        let mut listen_fds: Vec<Vec<Vec<RawFd>>> = Vec::new();
        for (si, s) in self.services.iter_mut().enumerate() {
            // No accept of the engine may block its loop (a socket from
            // systemd or a parent process may be blocking).
            for (addr, fds) in &s.inherited {
                for fd in fds {
                    sys::set_nonblocking(fd.as_raw_fd()).map_err(|source| Error::Listen {
                        addr: *addr,
                        source,
                    })?;
                }
            }
            let mut addrs = Vec::new();
            let mut fds_of_service = Vec::new();
            for &addr in &s.addrs {
                let mut actual = addr;
                let mut taken: Vec<RawFd> = match s.inherited.iter().position(|(a, _)| *a == addr) {
                    Some(i) => s
                        .inherited
                        .swap_remove(i)
                        .1
                        .into_iter()
                        .map(IntoRawFd::into_raw_fd)
                        .collect(),
                    None => Vec::new(),
                };
                taken.reverse();
                let mut fds_of_addr = Vec::new();
                for lp in per_loop.iter_mut() {
                    let fd = match taken.pop() {
                        Some(fd) => fd,
                        None => bind_listener(actual, s.backlog, s.nodelay)
                            .map_err(|source| Error::Listen { addr, source })?,
                    };
                    guard.0.push(fd);
                    fds_of_addr.push(fd);
                    if actual.port() == 0 {
                        actual =
                            sys::local_addr(fd).map_err(|source| Error::Listen { addr, source })?;
                    }
                    lp.push((fd, si as u16));
                }
                // more inherited sockets than loops: their queues are lost
                for fd in taken {
                    sys::close(fd);
                }
                addrs.push(actual);
                fds_of_service.push(fds_of_addr);
            }
            // inherited sockets for addresses this service no longer has
            s.inherited.clear();
            local_addrs.push(addrs);
            listen_fds.push(fds_of_service);
        }

        let plan = self.plan();
        let loops_cell: Arc<OnceLock<Vec<LoopHandle>>> = Arc::new(OnceLock::new());
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<usize, Error>>();
        let mut spawn_error = None;
        for (idx, listeners) in per_loop.into_iter().enumerate() {
            let moved: Vec<RawFd> = listeners.iter().map(|l| l.0).collect();
            let waker = Arc::new(sys::EventFd::new().map_err(|source| Error::Io {
                context: "eventfd",
                source,
            })?);
            let shared = LoopShared::new(waker.clone());
            let (tx, rx) = mpsc::channel();
            handles.push(LoopHandle::new(idx, tx, shared.clone()));
            let services = self.service_rts(&plan);
            let loops_cell2 = loops_cell.clone();
            let limits2 = plan.limits.clone();
            let chunk_size = self.chunk_size;
            let max_queued = self.max_queued;
            let uring = self.uring;
            let epoll_buf = self.epoll_buf;
            let ready = ready_tx.clone();
            let t = std::thread::Builder::new()
                .name(format!("myriad-loop-{idx}"))
                .spawn(move || -> Result<(), Error> {
                    // The core is built on its own thread: handlers need not be Send.
                    let mut core = Reactor::new(
                        idx as u32,
                        shared,
                        rx,
                        loops_cell2,
                        services,
                        limits2,
                        chunk_size,
                        OUTBOUND_LIMITS,
                        max_queued,
                        Box::new(OsSockets::new()),
                        Instant::now(),
                    );
                    match kind {
                        BackendKind::Epoll => {
                            let be = match EpollBackend::new(epoll_buf, waker) {
                                Ok(b) => b,
                                Err(source) => {
                                    close_listeners(&listeners);
                                    let _ = ready.send(Err(Error::Backend { kind, source }));
                                    return Ok(());
                                }
                            };
                            run_loop(be, &mut core, listeners, ready)
                        }
                        _ => {
                            let be = match UringBackend::new(&uring, waker) {
                                Ok(b) => b,
                                Err(source) => {
                                    close_listeners(&listeners);
                                    let _ = ready.send(Err(Error::Backend { kind, source }));
                                    return Ok(());
                                }
                            };
                            run_loop(be, &mut core, listeners, ready)
                        }
                    }
                });
            match t {
                Ok(t) => {
                    // this loop's listeners are its own now (closed by it)
                    guard.0.retain(|fd| !moved.contains(fd));
                    threads.push(t);
                }
                Err(source) => {
                    spawn_error = Some(Error::Io {
                        context: "spawning loop thread",
                        source,
                    });
                    break;
                }
            }
        }
        drop(ready_tx);
        let _ = loops_cell.set(handles.clone());
        let started = threads.len();
        let engine = Engine {
            loops: handles,
            threads: std::sync::Mutex::new(threads),
            kind,
            local_addrs,
            listen_fds,
        };
        if let Some(e) = spawn_error {
            // The loops that did start stop at once; the listeners of the
            // others are closed by the guard.
            for _ in 0..started {
                let _ = ready_rx.recv();
            }
            engine.shutdown(Duration::ZERO);
            let _ = engine.wait();
            return Err(e);
        }
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    engine.shutdown(Duration::ZERO);
                    let _ = engine.wait();
                    return Err(e);
                }
                Err(_) => {
                    engine.shutdown(Duration::ZERO);
                    let _ = engine.wait();
                    return Err(Error::Panicked(0));
                }
            }
        }
        Ok(engine)
    }
}

/// The limits of outbound connections before their [`ConnectOptions`]
/// (`crate::ConnectOptions`) apply.
const OUTBOUND_LIMITS: Limits = Limits {
    idle_ms: 0,
    send_ms: 0,
    high_water: 1 << 20,
    hard_limit: 64 << 20,
    max_input: 16 << 20,
    // a client closes first and does not wait for the server
    linger_ms: 0,
};

/// What every loop's services are made from: the distinct limits, each
/// service's index into them, and what the loops of one service share
/// (connections per source address, open connections).
pub(crate) struct Plan {
    pub(crate) limits: Vec<Limits>,
    service_limits: Vec<u16>,
    per_addr: Vec<crate::reactor::PerAddr>,
    open: Vec<Arc<AtomicUsize>>,
}

impl EngineBuilder {
    pub(crate) fn plan(&self) -> Plan {
        let mut limits: Vec<Limits> = Vec::new();
        let mut service_limits = Vec::new();
        for s in &self.services {
            let i = match limits.iter().position(|l| *l == s.limits) {
                Some(i) => i,
                None => {
                    limits.push(s.limits);
                    limits.len() - 1
                }
            };
            service_limits.push(i as u16);
        }
        Plan {
            limits,
            service_limits,
            per_addr: self.services.iter().map(|_| Default::default()).collect(),
            open: self
                .services
                .iter()
                .map(|_| Arc::new(AtomicUsize::new(0)))
                .collect(),
        }
    }

    /// One loop's view of the services.
    pub(crate) fn service_rts(&self, plan: &Plan) -> Vec<ServiceRt> {
        self.services
            .iter()
            .enumerate()
            .map(|(i, s)| ServiceRt {
                factory: s.factory.clone(),
                limits: plan.service_limits[i],
                max_conns: s.max_connections,
                max_per_addr: s.max_per_addr,
                per_addr: plan.per_addr[i].clone(),
                open: plan.open[i].clone(),
                nodelay: s.nodelay,
                filter: s.filter.clone(),
                handshake_ms: s.handshake_ms,
            })
            .collect()
    }

    /// The services' addresses (for the simulation, which binds nothing).
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn service_addrs(&self) -> Vec<Vec<SocketAddr>> {
        self.services.iter().map(|s| s.addrs.clone()).collect()
    }

    /// The settings a loop's reactor is made with besides its services:
    /// chunk size, outbound limits, the cap on queued bytes.
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn reactor_settings(&self) -> (usize, Limits, u64) {
        (self.chunk_size, OUTBOUND_LIMITS, self.max_queued)
    }

    /// Runs this configuration — its services with their handlers,
    /// filters and limits, on simulated addresses — in `loops` loops on a
    /// simulated network under the seed's faults and a virtual clock, all
    /// turned on this thread (feature `sim`; see
    /// [`crate::sim::SimEngine`]). Every loop listens on every address
    /// (as with `SO_REUSEPORT`); port 0 addresses get ports of their own.
    /// The number of loops is an argument rather than
    /// [`EngineBuilder::threads`], whose default is the machine's core
    /// count: a seed must mean the same run on every machine.
    ///
    /// # Errors
    ///
    /// `loops` is not 1..=255, or a loop's waker (an eventfd) cannot be
    /// made.
    #[cfg(any(test, feature = "sim"))]
    #[doc(hidden)]
    pub fn simulate(
        self,
        seed: u64,
        loops: usize,
    ) -> Result<crate::reactor::sim_engine::SimEngine, Error> {
        crate::reactor::sim_engine::SimEngine::new(self, seed, true, loops)
    }
}

/// Closes listeners that never reached a loop's core.
fn close_listeners(listeners: &[(RawFd, u16)]) {
    for &(fd, _) in listeners {
        sys::close(fd);
    }
}

#[derive(Default)]
struct FdGuard(Vec<RawFd>);

impl Drop for FdGuard {
    fn drop(&mut self) {
        for &fd in &self.0 {
            sys::close(fd);
        }
    }
}

fn bind_listener(addr: SocketAddr, backlog: i32, nodelay: bool) -> io::Result<RawFd> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if nodelay {
        s.set_tcp_nodelay(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s.into_raw_fd())
}

fn run_loop<B: Backend>(
    mut be: B,
    core: &mut Reactor,
    listeners: Vec<(RawFd, u16)>,
    ready: mpsc::Sender<Result<usize, Error>>,
) -> Result<(), Error> {
    for (i, &(fd, service)) in listeners.iter().enumerate() {
        let sock = Sock::from_raw(fd);
        match be.add_listener(sock) {
            Ok(_) => core.listeners.push(ListenerRt {
                sock,
                service,
                paused: false,
                removed: false,
            }),
            Err(source) => {
                // the registered ones go with the core
                close_listeners(&listeners[i..]);
                let _ = ready.send(Err(Error::Io {
                    context: "registering listener",
                    source,
                }));
                return Ok(());
            }
        }
    }
    let _ = ready.send(Ok(core.loop_idx as usize));
    drop(ready);
    // The loop's clock is read here: the reactor is handed the time, never
    // reads it (so that a test or a simulation can own it).
    let res = loop {
        core.tick(Instant::now());
        core.flush(&mut be);
        let pending = be.accepts_pending();
        core.shared_accepting(core.has_listeners() || pending);
        if core.finished(pending) {
            break Ok(());
        }
        let timeout = core.next_timeout();
        let mut fresh = false;
        let r = be.wait(timeout, &mut |ev| {
            if !fresh {
                core.set_now(Instant::now());
                fresh = true;
            }
            core.handle_event(ev)
        });
        if let Err(source) = r {
            break Err(Error::Io {
                context: "waiting for events",
                source,
            });
        }
    };
    core.close_all();
    drop(be);
    res
}

/// A running engine: a set of event loops, each on its own thread.
///
/// ```no_run
/// use myriad::{Ctx, Engine, Handler, Service};
/// use std::time::Duration;
/// struct Echo;
/// impl Handler for Echo {
///     fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize { cx.write(d); d.len() }
/// }
/// let engine = Engine::builder()
///     .service(Service::new("echo", "127.0.0.1:0".parse().unwrap(), || Echo))
///     .start()?;
/// println!("listening on {}", engine.local_addrs(0)[0]);
/// engine.shutdown(Duration::from_secs(5));
/// engine.wait();
/// # Ok::<(), myriad::Error>(())
/// ```
pub struct Engine {
    loops: Vec<LoopHandle>,
    threads: std::sync::Mutex<Vec<JoinHandle<Result<(), Error>>>>,
    kind: BackendKind,
    local_addrs: Vec<Vec<SocketAddr>>,
    /// Listening sockets by service, address and loop (owned by the loops;
    /// duplicated by [`Engine::listeners`]).
    listen_fds: Vec<Vec<Vec<RawFd>>>,
}

impl Engine {
    /// Starts building an engine.
    ///
    /// ```
    /// let b = myriad::Engine::builder();
    /// ```
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The backend in use (never `Auto`).
    ///
    /// ```no_run
    /// # fn f(e: &myriad::Engine) {
    /// println!("{}", e.backend());
    /// # }
    /// ```
    pub fn backend(&self) -> BackendKind {
        self.kind
    }

    /// Duplicates of the listening sockets of `service`, by address, one
    /// per loop, for [`Service::inherit`]. Call it while this engine is
    /// running (before [`Engine::stop_accepting`] or
    /// [`Engine::shutdown`], which close the engine's own copies).
    ///
    /// # Errors
    ///
    /// `dup` failing (the open-files limit).
    pub fn listeners(
        &self,
        service: usize,
    ) -> io::Result<Vec<(SocketAddr, Vec<std::os::fd::OwnedFd>)>> {
        let (Some(addrs), Some(fds)) =
            (self.local_addrs.get(service), self.listen_fds.get(service))
        else {
            return Ok(Vec::new());
        };
        addrs
            .iter()
            .zip(fds)
            .map(|(a, fds)| {
                Ok((
                    *a,
                    fds.iter()
                        .map(|&fd| sys::dup_cloexec(fd))
                        .collect::<io::Result<_>>()?,
                ))
            })
            .collect()
    }

    /// The bound addresses of service `service` (in the order added), with
    /// port 0 resolved.
    ///
    /// ```no_run
    /// # fn f(e: &myriad::Engine) {
    /// let addr = e.local_addrs(0)[0];
    /// # }
    /// ```
    pub fn local_addrs(&self, service: usize) -> &[SocketAddr] {
        self.local_addrs.get(service).map_or(&[], |v| v.as_slice())
    }

    /// Number of loops.
    ///
    /// ```no_run
    /// # fn f(e: &myriad::Engine) {
    /// for i in 0..e.loop_count() { let _ = e.loop_handle(i); }
    /// # }
    /// ```
    pub fn loop_count(&self) -> usize {
        self.loops.len()
    }

    /// A handle to loop `i` (panics if `i >= loop_count()`).
    ///
    /// ```no_run
    /// # fn f(e: &myriad::Engine) {
    /// let h = e.loop_handle(0);
    /// # }
    /// ```
    pub fn loop_handle(&self, i: usize) -> &LoopHandle {
        &self.loops[i]
    }

    /// Counters summed over every loop.
    ///
    /// ```no_run
    /// # fn f(e: &myriad::Engine) {
    /// let s = e.stats();
    /// println!("{} open, {} accepted", s.open, s.accepted);
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        self.loops
            .iter()
            .map(|l| l.stats())
            .fold(Stats::default(), |a, b| a + b)
    }

    /// Filter (TLS) failures by kind, summed over every loop, e.g.
    /// `[("unknown_ca", 3), ("not_tls", 1)]`.
    ///
    /// ```no_run
    /// # fn f(e: &myriad::Engine) {
    /// for (kind, n) in e.filter_errors() { println!("{kind}: {n}"); }
    /// # }
    /// ```
    pub fn filter_errors(&self) -> Vec<(&'static str, u64)> {
        let mut all: Vec<(&'static str, u64)> = Vec::new();
        for l in &self.loops {
            for (k, n) in l.filter_errors() {
                match all.iter_mut().find(|e| e.0 == k) {
                    Some(e) => e.1 += n,
                    None => all.push((k, n)),
                }
            }
        }
        all
    }

    /// Counters of each loop.
    ///
    /// ```no_run
    /// # fn f(e: &myriad::Engine) {
    /// for (i, s) in e.loop_stats().iter().enumerate() { println!("loop {i}: {}", s.open); }
    /// # }
    /// ```
    pub fn loop_stats(&self) -> Vec<Stats> {
        self.loops.iter().map(|l| l.stats()).collect()
    }

    /// Graceful shutdown: stop accepting, call every handler's
    /// [`Handler::on_shutdown`], and close whatever is still open after
    /// `grace`. Returns at once; [`Engine::wait`] waits for the loops.
    ///
    /// ```no_run
    /// # fn f(e: &myriad::Engine) {
    /// e.shutdown(std::time::Duration::from_secs(5));
    /// e.wait();
    /// # }
    /// ```
    pub fn shutdown(&self, grace: Duration) {
        for l in &self.loops {
            l.post(move |lcx| lcx.begin_shutdown(grace));
        }
    }

    /// Stops accepting (closes every listener) but leaves established
    /// connections alone: the way to hand a port over to a new engine (with
    /// `SO_REUSEPORT` both can be bound at once) and let the old one drain.
    ///
    /// ```no_run
    /// # fn f(old: &myriad::Engine) {
    /// old.stop_accepting();
    /// while old.stats().open > 0 { std::thread::sleep(std::time::Duration::from_millis(100)); }
    /// old.shutdown(std::time::Duration::ZERO);
    /// # }
    /// ```
    pub fn stop_accepting(&self) {
        for l in &self.loops {
            l.post(|lcx| lcx.stop_accepting());
        }
    }

    /// How many of the engine's loops have ended. Before
    /// [`Engine::shutdown`] any is a failure (a panic outside handler
    /// calls, a backend error): its listener is closed, so the other loops
    /// take the new connections, but its connections are gone. A server
    /// should exit non-zero so that its supervisor restarts it.
    ///
    /// ```no_run
    /// # fn f(engine: &myriad::Engine) {
    /// if engine.stopped_loops() > 0 { std::process::exit(1); }
    /// # }
    /// ```
    pub fn stopped_loops(&self) -> usize {
        match self.threads.lock() {
            Ok(t) => t.iter().filter(|t| t.is_finished()).count(),
            Err(p) => p.into_inner().iter().filter(|t| t.is_finished()).count(),
        }
    }

    /// Whether a loop may still accept a connection. False once
    /// [`Engine::stop_accepting`] (or a shutdown) has taken effect
    /// everywhere, including io_uring accepts whose cancellation was still
    /// in flight: from then on the engine's open-connection count can only
    /// fall, and an engine drained to zero can be shut down without
    /// resetting a connection it accepted at the last moment.
    ///
    /// ```no_run
    /// # fn f(e: &myriad::Engine) {
    /// e.stop_accepting();
    /// while e.is_accepting() { std::thread::sleep(std::time::Duration::from_millis(10)); }
    /// # }
    /// ```
    pub fn is_accepting(&self) -> bool {
        self.loops.iter().any(LoopHandle::accepting)
    }

    /// Waits until every loop has exited; returns the first error.
    ///
    /// ```no_run
    /// # fn f(e: &myriad::Engine) {
    /// e.wait().expect("loops failed");
    /// # }
    /// ```
    pub fn wait(&self) -> Result<(), Error> {
        let threads: Vec<_> = match self.threads.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(p) => p.into_inner().drain(..).collect(),
        };
        let mut first = Ok(());
        for (i, t) in threads.into_iter().enumerate() {
            let r = match t.join() {
                Ok(r) => r,
                Err(_) => Err(Error::Panicked(i)),
            };
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let pending = self.threads.lock().map(|t| !t.is_empty()).unwrap_or(false);
        if pending {
            self.shutdown(Duration::ZERO);
            let _ = self.wait();
        }
    }
}
