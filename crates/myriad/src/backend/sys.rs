//! Thin, safe wrappers over the few raw syscalls the engine needs on plain
//! file descriptors, and over the process calls of the worker supervisor
//! (`kill`, the notification socket's credentials, the workers' parent-death
//! signal). This is the only place outside the backends proper that calls
//! `libc` directly, so every `unsafe` block of the engine's socket and
//! process handling lives in this module (DESIGN.md: `unsafe` only in
//! backend and buffer modules).
//!
//! Connection descriptors are kept as bare `RawFd`s (4 bytes) rather than
//! `OwnedFd`s inside the connection slots because the io_uring backend must
//! decide *when* a descriptor may be closed (only after every in-flight
//! operation on it has completed); ownership is therefore explicit and ends
//! with [`close`].

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::SocketAddr;
use std::os::fd::RawFd;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Closes a descriptor the engine owns. Errors are ignored: after `close`
/// the descriptor is gone whatever the result (see close(2), "Dealing with
/// error returns from close()").
pub(crate) fn close(fd: RawFd) {
    // SAFETY: `fd` is a descriptor owned by the engine and never used again.
    unsafe {
        libc::close(fd);
    }
}

/// A spare descriptor (`/dev/null`) each loop holds so that, when the
/// process is out of descriptors, it can still accept the connections
/// waiting on a listener and close them ([`reject_pending`]) instead of
/// leaving their clients hanging in the backlog. `None` if even this one
/// cannot be opened.
pub(crate) fn open_reserve() -> Option<std::os::fd::OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(Into::into)
}

/// Out of descriptors (EMFILE/ENFILE on accept): frees the loop's reserve
/// descriptor, accepts up to `max` waiting connections and closes each at
/// once (the client sees its connection closed, not a silent hang), then
/// takes the reserve again. Returns how many were closed. The listener is
/// non-blocking, so an empty backlog ends the loop with EAGAIN.
pub(crate) fn reject_pending(
    listener: RawFd,
    reserve: &mut Option<std::os::fd::OwnedFd>,
    max: usize,
) -> usize {
    if reserve.take().is_none() {
        *reserve = open_reserve();
        return 0;
    }
    let mut closed = 0;
    for _ in 0..max {
        match accept(listener) {
            Ok(fd) => {
                close(fd);
                closed += 1;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
            // EAGAIN: none left; EMFILE: another thread took the freed
            // descriptor first
            Err(_) => break,
        }
    }
    *reserve = open_reserve();
    closed
}

/// A close-on-exec duplicate of `fd` (the caller owns it).
pub(crate) fn dup_cloexec(fd: RawFd) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: the engine owns `fd` for the duration of the call.
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    b.try_clone_to_owned()
}

/// Sets `O_NONBLOCK` on `fd`'s open file description.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain syscalls on an integer descriptor; no memory is passed.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    }
    Ok(())
}

/// `shutdown(2)`; `how` is `libc::SHUT_WR` / `SHUT_RD` / `SHUT_RDWR`.
pub(crate) fn shutdown(fd: RawFd, how: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall on an integer descriptor; no memory is passed.
    cvt(unsafe { libc::shutdown(fd, how) }).map(drop)
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `v` lives on the stack for the duration of the call and the
    // length passed matches its size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The soft limit on open descriptors (`RLIMIT_NOFILE`); 0 if unknown.
pub(crate) fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    r.rlim_cur
}

/// Sets `TCP_NODELAY`.
pub(crate) fn set_nodelay(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Arms `SO_LINGER {on, 0}` so that the following `close` sends a RST and
/// leaves no TIME_WAIT entry behind (used by load generators and for
/// abortive closes).
pub(crate) fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `l` lives on the stack for the call; the length matches.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Reads and clears `SO_ERROR` (the result of a non-blocking connect).
pub(crate) fn take_socket_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes and sized as the kernel expects.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(if v == 0 {
        None
    } else {
        Some(io::Error::from_raw_os_error(v))
    })
}

fn sockaddr_to_std(storage: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large enough and suitably aligned for it.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Ok(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "not an IP socket",
        )),
    }
}

fn name_of(fd: RawFd, peer: bool) -> io::Result<SocketAddr> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `storage`.
    let ret = unsafe {
        if peer {
            libc::getpeername(fd, storage.as_mut_ptr().cast(), &mut len)
        } else {
            libc::getsockname(fd, storage.as_mut_ptr().cast(), &mut len)
        }
    };
    cvt(ret)?;
    // SAFETY: zero-initialised and then (partly) filled by the kernel.
    let storage = unsafe { storage.assume_init() };
    sockaddr_to_std(&storage)
}

/// The peer's address (`getpeername`). Not cached per connection on purpose:
/// 32 bytes per idle connection are worth more than one syscall when asked.
pub(crate) fn peer_addr(fd: RawFd) -> io::Result<SocketAddr> {
    name_of(fd, true)
}

/// The local address (`getsockname`).
pub(crate) fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    name_of(fd, false)
}

/// `accept4` with `SOCK_NONBLOCK | SOCK_CLOEXEC`, ignoring the peer address.
pub(crate) fn accept(listener: RawFd) -> io::Result<RawFd> {
    // SAFETY: null address pointers are allowed by accept4(2).
    cvt(unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })
}

/// `recv` into `buf`.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Vectored send with `MSG_NOSIGNAL` (a reset peer must give `EPIPE`, not
/// kill the process with `SIGPIPE`).
pub(crate) fn send_vectored(fd: RawFd, bufs: &[std::io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    // SAFETY: msg points at `bufs`, which outlive the call; the kernel only reads them.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `sendfile(2)`: up to `len` bytes of `file` from `offset` to the socket
/// `fd`, copied inside the kernel (page cache to socket buffers, no
/// user-space copy). The socket is non-blocking: a full send buffer gives
/// `WouldBlock`. A cold file is read from disk synchronously here, as
/// every `sendfile` server does without a thread pool.
pub(crate) fn sendfile(fd: RawFd, file: RawFd, offset: u64, len: usize) -> io::Result<usize> {
    let mut off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: plain syscall on two descriptors; `off` is a local the kernel
    // updates.
    let n = unsafe { libc::sendfile(fd, file, &mut off, len) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else if n == 0 && len > 0 {
        // The file ended before the queued range: it shrank underneath.
        Err(io::ErrorKind::UnexpectedEof.into())
    } else {
        Ok(n as usize)
    }
}

/// A non-blocking, close-on-exec eventfd used to wake a loop from other
/// threads.
#[derive(Debug)]
pub(crate) struct EventFd(RawFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain syscall.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        Ok(EventFd(fd))
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.0
    }

    /// Adds one to the counter; never blocks (a saturated counter already
    /// means "wake up").
    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a stack value to our own eventfd.
        unsafe {
            libc::write(self.0, (&one as *const u64).cast(), 8);
        }
    }

    /// Resets the counter (epoll backend; the io_uring backend reads it with
    /// an SQE instead).
    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a stack value from our own eventfd.
        unsafe {
            libc::read(self.0, (&mut v as *mut u64).cast(), 8);
        }
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        close(self.0);
    }
}

/// Ignores SIGPIPE process-wide. Sends use `MSG_NOSIGNAL`, but a user
/// handler may write to a socket itself; a server must never die of it.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_IGN is async-signal-safe
    // and has no memory effects.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// `IP_BIND_ADDRESS_NO_PORT`: bind to a source address now but let the
/// kernel pick the port at connect time, from the full 4-tuple space —
/// without it every bound socket takes a port of its own and a few tens of
/// thousands of connections exhaust a source address.
pub(crate) fn set_bind_address_no_port(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)
}

/// glibc's `malloc_trim(0)`: gives the free memory of every malloc arena
/// back to the kernel (free pages inside the heaps too, not only at their
/// tops); true if any was released. Elsewhere (musl, other C libraries)
/// nothing to do: false.
pub(crate) fn trim_heap() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim takes the arenas' own locks and only returns
        // free pages; it touches no memory the program owns.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

/// kill(2) on a pid the caller owns (a child it has not waited for, so the
/// pid cannot have been reused). Errors (the child already exited) are
/// ignored: the caller waits for the child next either way.
pub(crate) fn kill(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(pid, sig) };
}

/// One datagram from a unix socket with `SO_PASSCRED`, without blocking,
/// and the sender's pid as the kernel tells it (`SCM_CREDENTIALS`).
/// Descriptors passed along (`SCM_RIGHTS`) are closed: nothing that sends
/// to the socket can make the receiver keep descriptors.
pub(crate) fn recv_with_sender(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u32>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for the credentials and some descriptors; u64 for alignment.
    let mut control = [0u64; 32];
    // SAFETY: an all-zero msghdr is a valid, empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at iov (over buf) and control, both alive and
    // writable for the lengths given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut pid = None;
    // SAFETY: the kernel wrote msg_controllen bytes of cmsg headers into
    // control; the CMSG_* walk stays within them, and each payload is read
    // unaligned within its header's cmsg_len.
    unsafe {
        let header = libc::CMSG_LEN(0) as usize;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let len = ((*c).cmsg_len as usize).saturating_sub(header);
            let data = libc::CMSG_DATA(c);
            if (*c).cmsg_level == libc::SOL_SOCKET {
                if (*c).cmsg_type == libc::SCM_CREDENTIALS && len >= size_of::<libc::ucred>() {
                    let cred: libc::ucred = std::ptr::read_unaligned(data.cast());
                    pid = u32::try_from(cred.pid).ok();
                } else if (*c).cmsg_type == libc::SCM_RIGHTS {
                    let fds = data.cast::<libc::c_int>();
                    for k in 0..len / size_of::<libc::c_int>() {
                        libc::close(std::ptr::read_unaligned(fds.add(k)));
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, pid))
}

/// Makes the child that `cmd` starts get SIGTERM when its parent dies
/// (`PR_SET_PDEATHSIG`), and fail to start if `parent` (the caller's pid)
/// has died already, before the setting took effect.
pub(crate) fn die_with_parent(cmd: &mut std::process::Command, parent: libc::pid_t) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the forked child before exec and calls only
    // async-signal-safe syscalls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
