//! The handler API: what user code implements.

use crate::reactor::Ctx;
use std::fmt;
use std::io;

/// Why a connection closed, as told to [`Handler::on_close`].
#[derive(Debug)]
pub enum CloseReason {
    /// The handler called [`Ctx::close`] (after its queued bytes were sent)
    /// or [`Ctx::abort`].
    Local,
    /// The peer closed its side and the handler's `on_eof` closed ours.
    PeerClosed,
    /// A socket error: a reset, a broken pipe, ...
    Io(io::Error),
    /// No bytes arrived within the idle timeout.
    IdleTimeout,
    /// The outbound connect failed.
    ConnectFailed(io::Error),
    /// The outbound connect did not finish within its timeout.
    ConnectTimeout,
    /// The peer did not read: queued output passed the hard limit.
    SlowReader,
    /// Unconsumed input passed its limit.
    InputOverflow,
    /// The engine shut down and the grace period ended.
    Shutdown,
    /// The connection's filter (TLS) failed: a bad handshake, a bad record,
    /// plaintext sent to a TLS port.
    Filter(crate::FilterError),
    /// The filter's handshake did not finish in time.
    HandshakeTimeout,
    /// Queued bytes made no progress for the service's send timeout (the
    /// peer stopped reading, or its window stayed at zero).
    SendTimeout,
    /// A call of this connection's handler panicked; the connection was
    /// aborted (the loop's other connections are unaffected).
    HandlerPanic,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed locally"),
            CloseReason::PeerClosed => f.write_str("closed by peer"),
            CloseReason::Io(e) => write!(f, "i/o error: {e}"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            CloseReason::ConnectTimeout => f.write_str("connect timed out"),
            CloseReason::SlowReader => f.write_str("peer does not read (write limit)"),
            CloseReason::InputOverflow => f.write_str("unconsumed input over limit"),
            CloseReason::Shutdown => f.write_str("engine shut down"),
            CloseReason::Filter(e) => write!(f, "filter error: {e}"),
            CloseReason::HandshakeTimeout => f.write_str("handshake timed out"),
            CloseReason::HandlerPanic => f.write_str("handler panicked"),
            CloseReason::SendTimeout => f.write_str("send made no progress (send timeout)"),
        }
    }
}

/// A connection's business logic.
///
/// One handler value exists per connection and runs on the connection's own
/// loop thread, so it needs no locks. Callbacks are never nested: a write
/// made in `on_data` is queued and sent when the callback has returned, and
/// whatever that write provokes arrives in a later callback.
///
/// Only [`Handler::on_data`] is required.
///
/// ```
/// use myriad::{Ctx, Handler};
///
/// /// Echoes every byte back.
/// struct Echo;
///
/// impl Handler for Echo {
///     fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
///         cx.write(data);
///         data.len()
///     }
/// }
/// ```
pub trait Handler: 'static {
    /// The connection is established (accepted, or connected for outbound
    /// connections). Writes made here are sent at once.
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// struct Greeter;
    /// impl Handler for Greeter {
    ///     fn on_open(&mut self, cx: &mut Ctx<'_>) {
    ///         cx.write(b"hello\r\n");
    ///     }
    ///     fn on_data(&mut self, _cx: &mut Ctx<'_>, data: &mut [u8]) -> usize { data.len() }
    /// }
    /// ```
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        let _ = cx;
    }

    /// Bytes arrived. Return how many were consumed; the rest is kept and
    /// shown again, followed by the next bytes, at the next call. The slice
    /// is mutable so that protocol layers can decode in place (WebSocket
    /// unmasking, for example).
    ///
    /// ```
    /// # use myriad::{Ctx, Handler};
    /// /// Handles newline-terminated lines; keeps a partial line for later.
    /// struct Lines;
    /// impl Handler for Lines {
    ///     fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
    ///         match data.iter().rposition(|&b| b == b'\n') {
    ///             Some(i) => { cx.write(&data[..=i]); i + 1 }
    ///             None => 0,
    ///         }
    ///     }
    /// }
    /// ```
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize;

    /// Everything queued has been sent. Reading resumes here if the
    /// high-water mark had paused it; a bulk sender writes its next part.
    fn on_drain(&mut self, cx: &mut Ctx<'_>) {
        let _ = cx;
    }

    /// The peer closed its sending side (FIN). The default closes the
    /// connection once queued bytes are sent; a handler that wants to keep
    /// writing (half-close) overrides it.
    fn on_eof(&mut self, cx: &mut Ctx<'_>) {
        cx.close();
    }

    /// A timer set with [`Ctx::set_timer`] fired.
    fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
        let _ = (cx, token);
    }

    /// The engine is shutting down gracefully. The default closes the
    /// connection once queued bytes are sent; a protocol handler may send a
    /// goodbye first (WebSocket close 1001, for example). Connections still
    /// open when the grace period ends are closed with
    /// [`CloseReason::Shutdown`].
    fn on_shutdown(&mut self, cx: &mut Ctx<'_>) {
        cx.close();
    }

    /// The connection is gone; the handler is dropped after this returns.
    /// Writes to this connection are ignored here.
    fn on_close(&mut self, cx: &mut Ctx<'_>, reason: CloseReason) {
        let _ = (cx, reason);
    }
}
