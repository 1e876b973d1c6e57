//! [`Sockets`] over the operating system: the socket calls of the real
//! backends that are not completions.

use super::{sys, ConnectSpec, Sock, Sockets};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::time::Duration;

/// The operating system's sockets, with the loop's spare descriptor for
/// refusing connections when out of descriptors (`sys::reject_pending`).
pub(crate) struct OsSockets {
    reserve: Option<OwnedFd>,
}

impl OsSockets {
    pub(crate) fn new() -> Self {
        OsSockets {
            reserve: sys::open_reserve(),
        }
    }
}

impl Sockets for OsSockets {
    fn set_nodelay(&mut self, s: Sock) {
        // Not inherited from the listener on every kernel; a failure (the
        // peer is already gone) shows up on the first recv.
        let _ = sys::set_nodelay(s.0);
    }

    fn peer_addr(&self, s: Sock) -> io::Result<SocketAddr> {
        sys::peer_addr(s.0)
    }

    fn local_addr(&self, s: Sock) -> io::Result<SocketAddr> {
        sys::local_addr(s.0)
    }

    fn take_error(&self, s: Sock) -> io::Result<Option<io::Error>> {
        sys::take_socket_error(s.0)
    }

    fn connect(&mut self, addr: SocketAddr, spec: &ConnectSpec) -> io::Result<Sock> {
        use socket2::{Domain, Protocol, Socket, Type};
        let sock = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )?;
        if spec.nodelay {
            sock.set_tcp_nodelay(true)?;
        }
        if spec.linger_zero {
            // Set now, not at close: however the socket ends up closed
            // (even by process exit), it goes with a RST.
            sock.set_linger(Some(Duration::ZERO))?;
        }
        if let Some(src) = spec.source {
            sys::set_bind_address_no_port(sock.as_raw_fd())?;
            sock.bind(&SocketAddr::new(src, 0).into())?;
        }
        match sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(Sock(sock.into_raw_fd()))
    }

    fn shutdown_write(&mut self, s: Sock) {
        let _ = sys::shutdown(s.0, libc::SHUT_WR);
    }

    fn close(&mut self, s: Sock, linger_zero: bool, last_words: &[io::IoSlice<'_>]) {
        if !last_words.is_empty() {
            let _ = sys::send_vectored(s.0, last_words);
        }
        if linger_zero {
            let _ = sys::set_linger_zero(s.0);
        }
        sys::close(s.0);
    }

    fn reject_pending(&mut self, listener: Sock, max: usize) -> usize {
        sys::reject_pending(listener.0, &mut self.reserve, max)
    }
}
