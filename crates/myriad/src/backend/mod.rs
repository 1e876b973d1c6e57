//! The I/O backends behind one small internal trait.
//!
//! The connection core speaks *completions*: "these bytes arrived for
//! connection T", "the send for T finished with n bytes". io_uring produces
//! completions natively; the epoll backend emulates them by doing the
//! `recv`/`sendmsg` itself when a descriptor is ready (the reverse of what
//! mio does for Windows IOCP). Everything above this module — slots, write
//! queues, timers, handlers — is shared by both.
//!
//! Tokens are `(generation << 32) | slot`; a completion whose generation no
//! longer matches the slot is stale and is ignored by the core.

pub(crate) mod epoll;
pub(crate) mod lend;
mod os;
pub(crate) mod sys;
pub(crate) mod uring;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How long one turn may hand completions to handlers before what they
/// wrote is sent. Without a bound, a turn that found many completions of
/// costly work (TLS handshakes: ~300 µs of rustls each) sends nothing until
/// all are done, and its peers wait idle meanwhile: two such processes take
/// turns instead of working at once. Cheap completions (echo) never reach
/// it. Both backends keep what is left for the next turn, which flushes
/// first and then goes on with it without waiting.
pub(crate) const TURN_BUDGET: Duration = Duration::from_micros(250);

/// The deadline of a turn's dispatch, and the check of it both backends
/// make between completions.
pub(crate) struct TurnClock {
    start: usize,
    deadline: Instant,
}

impl TurnClock {
    /// A dispatch that begins at index `start` of the backend's batch.
    pub(crate) fn start(start: usize) -> Self {
        TurnClock {
            start,
            deadline: Instant::now() + TURN_BUDGET,
        }
    }

    /// True when the dispatch, about to hand on index `i`, should stop
    /// here. The clock is read every 4 completions only: a read costs
    /// about 25 ns, a cheap completion not much more.
    #[inline]
    pub(crate) fn over(&self, i: usize) -> bool {
        i > self.start && (i - self.start) % 4 == 0 && Instant::now() >= self.deadline
    }
}

pub(crate) use os::OsSockets;

/// Gives the free memory the C allocator keeps back to the kernel (glibc:
/// `malloc_trim(0)`, which also releases free pages inside its arenas, not
/// only at their tops); returns whether anything was released. A no-op
/// returning false with other C libraries.
///
/// The allocator keeps freed memory for reuse, so after a burst of
/// connections has gone the process keeps the RSS of the burst. A server
/// calls this now and then from a thread of its own (the `myriad` binary:
/// every 30 s; 0.14–0.2 ms a call in its soak); it takes each arena's lock
/// while it walks that arena, so not from a loop, and not in a tight loop.
/// What it cannot return is memory in pages that still hold a live
/// allocation (fragmentation).
///
/// # Examples
///
/// ```
/// // after a burst of connections has gone
/// let _released = myriad::trim_heap();
/// ```
pub fn trim_heap() -> bool {
    sys::trim_heap()
}

/// What wakes a sleeping loop when another thread posts to it.
pub(crate) type Waker = sys::EventFd;

/// A socket as the reactor holds it: an opaque handle that only this
/// module (the backends and [`Sockets`]) can turn into a descriptor, so
/// that the reactor can make no system call of its own. Over the real
/// backends it is the descriptor; a test's fake backend numbers its
/// sockets as it likes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Sock(RawFd);

impl Sock {
    /// No socket (a free slot).
    pub(crate) const NONE: Sock = Sock(-1);

    /// Wraps a descriptor the engine owns (a listener it bound).
    pub(crate) fn from_raw(fd: RawFd) -> Sock {
        Sock(fd)
    }

    /// The number a test's (or the simulation's) fake sockets gave it.
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn number(self) -> i32 {
        self.0
    }
}

/// What an outbound socket is made with ([`Sockets::connect`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectSpec {
    /// `TCP_NODELAY`.
    pub nodelay: bool,
    /// `SO_LINGER` 0, set at once: however the socket ends up closed, it
    /// goes with a RST.
    pub linger_zero: bool,
    /// Local source address (`IP_BIND_ADDRESS_NO_PORT`, port at connect).
    pub source: Option<IpAddr>,
}

/// The socket work that is not a completion: set-up on accept, connect,
/// address lookups, shutdown and close. The reactor holds one (a
/// `Box<dyn Sockets>`: none of these is on the per-event path, each is a
/// system call anyway) and reaches sockets only through it and through
/// [`Backend`]; over the real backends it is [`OsSockets`].
pub(crate) trait Sockets {
    /// `TCP_NODELAY` on an accepted socket (a failure shows on first use).
    fn set_nodelay(&mut self, s: Sock);
    /// The peer's address.
    fn peer_addr(&self, s: Sock) -> io::Result<SocketAddr>;
    /// The local address.
    fn local_addr(&self, s: Sock) -> io::Result<SocketAddr>;
    /// The pending error of a socket whose connect resolved (`SO_ERROR`).
    fn take_error(&self, s: Sock) -> io::Result<Option<io::Error>>;
    /// A non-blocking socket with its connect to `addr` started.
    fn connect(&mut self, addr: SocketAddr, spec: &ConnectSpec) -> io::Result<Sock>;
    /// Shuts the sending side down (FIN after what the kernel holds).
    fn shutdown_write(&mut self, s: Sock);
    /// Closes a socket (its backend registration is gone): first one
    /// best-effort non-blocking send of `last_words` (a TLS alert), with a
    /// RST instead of a FIN when `linger_zero`.
    fn close(&mut self, s: Sock, linger_zero: bool, last_words: &[io::IoSlice<'_>]);
    /// Out of descriptors on `listener`: accepts and closes up to `max`
    /// waiting connections (they see a refusal, not a hang); how many.
    fn reject_pending(&mut self, listener: Sock, max: usize) -> usize;
}

/// Which I/O backend the loops use.
///
/// ```
/// use myriad::BackendKind;
/// let k: BackendKind = "epoll".parse().unwrap();
/// assert_eq!(k, BackendKind::Epoll);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// io_uring where the kernel allows it, else epoll. The environment
    /// variable `MYRIAD_BACKEND=epoll|io_uring` overrides `Auto`.
    #[default]
    Auto,
    /// io_uring only; starting fails if the kernel refuses it.
    IoUring,
    /// epoll only.
    Epoll,
}

/// A backend name that is none of `auto`, `io_uring` (or `io-uring`,
/// `uring`) and `epoll`: the error of [`BackendKind`]'s `parse`.
///
/// ```
/// use myriad::BackendKind;
/// let e = "kqueue".parse::<BackendKind>().unwrap_err();
/// assert_eq!(e.to_string(), "unknown backend `kqueue` (expected auto, io_uring or epoll)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend `{name}` (expected auto, io_uring or epoll)")]
pub struct UnknownBackend {
    name: String,
}

impl UnknownBackend {
    /// The name given.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl FromStr for BackendKind {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, UnknownBackend> {
        match s {
            "auto" => Ok(BackendKind::Auto),
            "io_uring" | "io-uring" | "uring" => Ok(BackendKind::IoUring),
            "epoll" => Ok(BackendKind::Epoll),
            other => Err(UnknownBackend { name: other.into() }),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Auto => "auto",
            BackendKind::IoUring => "io_uring",
            BackendKind::Epoll => "epoll",
        })
    }
}

/// How a receive stream on a connection ended (the multishot receive is no
/// longer armed, or — epoll — read interest was dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvEnd {
    /// The peer sent FIN.
    Eof,
    /// The stream stopped without an error: cancelled, or the kernel ended
    /// the multishot. Re-arm if still wanted.
    Stopped,
    /// The provided-buffer ring ran dry (`ENOBUFS`): nothing was lost, the
    /// data waits in the socket; re-arm once buffers are back.
    NoBuffers,
    /// A socket error (`errno`).
    Error(i32),
}

/// Accepts what the listening socket `fd` (index `listener`) has queued,
/// at most `max`, handing each to `f` as [`Event::Accept`]. Ends at the
/// empty queue (`Ok`) or at an error that a retry would not cure (`Err`
/// with its errno: `EMFILE` and friends); a connection that went away
/// while queued is skipped. The epoll backend's accept and io_uring's last
/// look at a removed listener (`UringBackend::retire`).
pub(crate) fn accept_queued(
    fd: RawFd,
    listener: usize,
    max: usize,
    f: &mut dyn FnMut(Event<'_>),
) -> Result<(), i32> {
    for _ in 0..max {
        match sys::accept(fd) {
            Ok(s) => f(Event::Accept {
                listener,
                res: Ok(Sock(s)),
            }),
            Err(e) => match e.raw_os_error().unwrap_or(libc::EIO) {
                libc::EAGAIN => break,
                libc::EINTR | libc::ECONNABORTED | libc::EPROTO => {}
                errno => return Err(errno),
            },
        }
    }
    Ok(())
}

/// One completion, as the core sees it.
pub(crate) enum Event<'a> {
    /// A listener produced a connection (`Ok(socket)`) or failed (`Err(errno)`).
    /// After an error the backend stops accepting on that listener until
    /// [`Backend::arm_accept`] is called again.
    Accept {
        listener: usize,
        res: Result<Sock, i32>,
    },
    /// Bytes for a connection. The slice is the backend's buffer; it is
    /// recycled as soon as the callback returns.
    Recv { token: u64, data: &'a mut [u8] },
    /// Bytes for a connection, as [`Event::Recv`], in a receive buffer of
    /// which `keep` can lend slices to the connection's write queue
    /// (io_uring): the buffer then stays out of the ring until the last
    /// lent slice is dropped.
    RecvLendable {
        token: u64,
        data: &'a mut [u8],
        keep: lend::Keep<'a>,
    },
    /// The receive stream of a connection ended.
    RecvEnd { token: u64, how: RecvEnd },
    /// An asynchronous send finished (`res` = bytes or `-errno`).
    Sent { token: u64, res: i32 },
    /// A connection that had to wait is writable again (epoll after any
    /// send; io_uring after a file send that would have blocked).
    Writable { token: u64 },
    /// An outbound connect resolved (check `SO_ERROR`); `res < 0` = `-errno`
    /// (for example `-ECANCELED`).
    Connected { token: u64, res: i32 },
    /// Another thread posted work to this loop.
    Wake,
}

/// What [`Backend::send`] did.
pub(crate) enum SendOutcome {
    /// Finished synchronously (epoll): bytes written or the error.
    Done(io::Result<usize>),
    /// Submitted (io_uring): an [`Event::Sent`] follows; the buffer must
    /// stay put until then.
    InFlight,
    /// Would block (epoll; a file send on either backend): an
    /// [`Event::Writable`] follows.
    WouldBlock,
}

/// How a new connection is registered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddMode {
    /// Accepted: start receiving at once.
    Recv,
    /// Outbound, connect in progress: wait for writability.
    Connect,
}

/// Which operations a connection has in flight (for
/// [`Backend::cancel_all`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct InFlight {
    /// A (multishot) receive.
    pub recv: bool,
    /// A send.
    pub send: bool,
    /// A connect (waiting for writability).
    pub connect: bool,
    /// A wait for writability after a file send would have blocked
    /// ([`Backend::send_file`]).
    pub writable: bool,
}

/// The backend contract. Each loop owns one backend; nothing here is shared
/// between threads.
pub(crate) trait Backend {
    /// Starts accepting on a listening socket; returns its index.
    fn add_listener(&mut self, sock: Sock) -> io::Result<usize>;
    /// Resumes accepting after an error (EMFILE) or a pause.
    fn arm_accept(&mut self, listener: usize);
    /// Stops accepting and forgets the listener (the caller closes the fd
    /// after [`Backend::wait`] returned once more, io_uring holding a
    /// reference until the cancellation completes is fine).
    fn remove_listener(&mut self, listener: usize);
    /// Whether a removed listener may still hand over a connection (an
    /// io_uring accept whose cancellation has not completed yet): the loop
    /// must not end, nor its engine be taken for idle, before it has.
    fn accepts_pending(&self) -> bool {
        false
    }
    /// Registers a connection.
    fn add_conn(&mut self, token: u64, sock: Sock, mode: AddMode) -> io::Result<()>;
    /// (Re-)starts receiving.
    fn arm_recv(&mut self, token: u64, sock: Sock);
    /// Stops receiving. Returns `true` when stopped synchronously; `false`
    /// means a [`Event::RecvEnd`] will follow.
    fn cancel_recv(&mut self, token: u64, sock: Sock) -> bool;
    /// Ends the operations in flight on `sock` (before closing it): those
    /// `ops` names. Returns `true` when nothing can be in flight any more
    /// (epoll); `false` means the ended operations still complete
    /// (io_uring).
    fn cancel_all(&mut self, token: u64, sock: Sock, ops: InFlight) -> bool;
    /// Whether [`Backend::send`] takes only the first buffer (io_uring): the
    /// core then joins short front chunks first, so that a burst of small
    /// writes leaves in one send.
    fn sends_one_buffer(&self) -> bool {
        false
    }
    /// Sends from `bufs` (io_uring sends only `bufs[0]`, whose memory must
    /// stay put until the completion).
    fn send(&mut self, token: u64, sock: Sock, bufs: &[io::IoSlice<'_>]) -> SendOutcome;
    /// Sends up to `len` bytes of the file `file` from `offset`
    /// (`sendfile(2)`, no user-space copy). Synchronous on both backends:
    /// [`SendOutcome::Done`], or [`SendOutcome::WouldBlock`] with an
    /// [`Event::Writable`] to follow.
    fn send_file(
        &mut self,
        token: u64,
        sock: Sock,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> SendOutcome;
    /// Forgets a connection whose descriptor is about to be closed.
    fn remove_conn(&mut self, token: u64, sock: Sock);
    /// Submits what is queued, waits up to `timeout` for at least one
    /// completion, and hands every available completion to `f`.
    fn wait(&mut self, timeout: Option<Duration>, f: &mut dyn FnMut(Event<'_>)) -> io::Result<()>;
}

/// Bits of a token's slot (the core never has more slots per loop).
const SLOT_BITS: u32 = 24;

/// Packs a slot (24 bits) and generation (32 bits) into a 56-bit token:
/// the top byte is left for the loop index (`ConnId`) or the io_uring
/// operation kind (`user_data`).
#[inline]
pub(crate) fn token(slot: u32, gen: u32) -> u64 {
    debug_assert!(slot < 1 << SLOT_BITS);
    ((gen as u64) << SLOT_BITS) | slot as u64
}

/// Splits a token.
#[inline]
pub(crate) fn untoken(t: u64) -> (u32, u32) {
    (
        (t & ((1 << SLOT_BITS) - 1)) as u32,
        ((t >> SLOT_BITS) & u64::from(u32::MAX)) as u32,
    )
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn full_32_bit_generations_round_trip_in_56_bits() {
        for (slot, gen) in [
            (0, 0),
            ((1 << 24) - 1, u32::MAX),
            (12345, 1 << 31),
            (7, 1 << 24),
        ] {
            let t = token(slot, gen);
            assert!(t < 1 << 56);
            assert_eq!(untoken(t), (slot, gen));
        }
        // generations that agree in their low 24 bits no longer collide
        assert_ne!(token(3, 5), token(3, 5 + (1 << 24)));
    }
}

/// Tuning for the io_uring backend, also used to decide whether io_uring is
/// usable at all.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UringParams {
    pub sq_entries: u32,
    pub buf_count: u16,
    pub buf_size: u32,
    /// Batched waits: wake for this many completions, or once this many
    /// microseconds passed with at least one (`None`: wake for each).
    pub batch_wait: Option<(u32, u32)>,
}

/// Probes io_uring on a short-lived thread of its own: tearing a ring down
/// queues task work on the thread that created it, which interrupts that
/// thread's next blocking socket call with `EINTR` when the socket has a
/// timeout — the caller's thread must not see that.
fn probe_uring(params: &UringParams) -> io::Result<()> {
    let p = *params;
    std::thread::Builder::new()
        .name("myriad-probe".into())
        .spawn(move || uring::probe(&p))?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("io_uring probe panicked")))
}

/// Resolves `Auto` (and the `MYRIAD_BACKEND` override) to a concrete
/// backend, probing io_uring once. Returns the choice and why.
pub(crate) fn resolve(
    kind: BackendKind,
    params: &UringParams,
) -> io::Result<(BackendKind, String)> {
    let kind = match kind {
        BackendKind::Auto => match std::env::var("MYRIAD_BACKEND") {
            Ok(v) if !v.is_empty() => v.parse::<BackendKind>().map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("MYRIAD_BACKEND: {e}"))
            })?,
            _ => BackendKind::Auto,
        },
        k => k,
    };
    match kind {
        BackendKind::Epoll => Ok((BackendKind::Epoll, "epoll requested".into())),
        BackendKind::IoUring => {
            probe_uring(params)?;
            Ok((BackendKind::IoUring, "io_uring requested".into()))
        }
        BackendKind::Auto => match probe_uring(params) {
            Ok(()) => Ok((BackendKind::IoUring, "io_uring available".into())),
            Err(e) => Ok((
                BackendKind::Epoll,
                format!("io_uring unavailable ({e}); falling back to epoll"),
            )),
        },
    }
}
