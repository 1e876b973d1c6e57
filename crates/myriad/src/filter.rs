//! Filters: sans-I/O byte transformers between the socket and the handler.
//!
//! TLS is the filter this exists for (`myriad-tls` implements it with
//! rustls). A filter never touches a socket: the connection core feeds it
//! the bytes that arrived and the bytes the handler writes, and queues what
//! it produces. Handlers do not change at all: an echo handler over TLS is
//! the same echo handler.

use std::fmt;
use std::sync::Arc;

/// A filter failed; the connection is closed with
/// [`CloseReason::Filter`](crate::CloseReason::Filter) after the bytes the
/// filter produced (a TLS alert, say) were sent.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct FilterError {
    /// A short, stable kind for counting (`"bad_certificate"`,
    /// `"not_tls"`, ...).
    pub kind: &'static str,
    /// Human-readable details.
    pub message: String,
}

impl FilterError {
    /// A new error.
    ///
    /// ```
    /// let e = myriad::FilterError::new("not_tls", "first byte is not a TLS record");
    /// assert_eq!(e.kind, "not_tls");
    /// ```
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        FilterError {
            kind,
            message: message.into(),
        }
    }
}

/// Where a filter queues bytes for the peer: the connection's write queue.
///
/// [`Outbound::push_with`] lends queue space to a producer that can write
/// straight into it (an encryptor), which saves the copy that
/// [`Outbound::push`] makes. `Vec<u8>` implements it, for tests.
///
/// ```
/// use myriad::Outbound;
/// let mut out: Vec<u8> = Vec::new();
/// Outbound::push(&mut out, b"ab");
/// let n = out.push_with(4, &mut |space| { space[..2].copy_from_slice(b"cd"); 2 });
/// assert_eq!((n, &out[..]), (2, &b"abcd"[..]));
/// ```
pub trait Outbound {
    /// Queues a copy of `bytes`.
    fn push(&mut self, bytes: &[u8]);

    /// Lends `max` bytes of queue space to `fill`, which writes at most
    /// that many and returns how many it wrote; those are queued (and
    /// nothing if it returns 0). Returns that count.
    fn push_with(&mut self, max: usize, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> usize;
}

impl Outbound for Vec<u8> {
    fn push(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn push_with(&mut self, max: usize, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> usize {
        let start = self.len();
        self.resize(start + max, 0);
        let n = fill(&mut self[start..]).min(max);
        self.truncate(start + n);
        n
    }
}

/// A sans-I/O transformer of a connection's bytes (TLS).
///
/// `net` ([`Outbound`]) queues bytes for the peer (handshake messages,
/// records, alerts) on the connection's write queue.
///
/// ```
/// use myriad::{Filter, FilterError, Outbound};
///
/// /// XORs every byte with a key (a toy, for illustration).
/// struct Xor(u8);
///
/// impl Filter for Xor {
///     fn decode(&mut self, input: &mut [u8], app: &mut Vec<u8>, _net: &mut dyn Outbound) -> Result<(), FilterError> {
///         app.extend(input.iter().map(|b| b ^ self.0));
///         Ok(())
///     }
///     fn encode(&mut self, plain: &[u8], net: &mut dyn Outbound) -> Result<(), FilterError> {
///         let key = self.0;
///         net.push_with(plain.len(), &mut |out| {
///             for (o, p) in out.iter_mut().zip(plain) { *o = p ^ key; }
///             plain.len()
///         });
///         Ok(())
///     }
/// }
/// ```
pub trait Filter: 'static {
    /// The connection is established; a client filter sends its first
    /// bytes (the TLS ClientHello) here.
    fn start(&mut self, net: &mut dyn Outbound) -> Result<(), FilterError> {
        let _ = net;
        Ok(())
    }

    /// Bytes arrived from the peer. Append the application bytes they
    /// carry to `app`; queue anything to answer with `net`. `input` is the
    /// receive buffer itself and is the filter's to overwrite (TLS
    /// decrypts in place there instead of copying it first).
    fn decode(
        &mut self,
        input: &mut [u8],
        app: &mut Vec<u8>,
        net: &mut dyn Outbound,
    ) -> Result<(), FilterError>;

    /// The handler wrote `plain`; queue its encoding with `net`. Called
    /// during the handshake too: buffer or encode as the protocol allows.
    fn encode(&mut self, plain: &[u8], net: &mut dyn Outbound) -> Result<(), FilterError>;

    /// The connection is closing gracefully: queue a goodbye (TLS
    /// close_notify).
    fn close(&mut self, net: &mut dyn Outbound) {
        let _ = net;
    }

    /// The peer closed the TCP stream. Return an error if that was not a
    /// clean end for the protocol (TLS: no close_notify, or a record cut
    /// short); it is counted by kind. The handler's `on_eof` follows either
    /// way.
    fn eof(&mut self) -> Result<(), FilterError> {
        Ok(())
    }

    /// True while a handshake is in progress. The handler's `on_open` is
    /// called when this turns false.
    fn is_handshaking(&self) -> bool {
        false
    }

    /// The client's address, when this filter read it from the stream
    /// itself: a PROXY-protocol header in front of TLS
    /// ([`crate::proxy::ProxyFilter`]). [`crate::proxy::client_addr`]
    /// returns it in place of the socket's peer.
    fn client_addr(&self) -> Option<std::net::SocketAddr> {
        None
    }
}

/// Creates one filter per connection.
pub type FilterFactory = Arc<dyn Fn() -> Box<dyn Filter> + Send + Sync>;

pub(crate) struct DebugFactory<'a>(pub &'a Option<FilterFactory>);

impl fmt::Debug for DebugFactory<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(<filter>)"
        } else {
            "None"
        })
    }
}
