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

/// A sans-I/O transformer of a connection's bytes (TLS).
///
/// `net` callbacks queue bytes for the peer (handshake messages, records,
/// alerts) on the connection's write queue.
///
/// ```
/// use myriad::{Filter, FilterError};
///
/// /// XORs every byte with a key (a toy, for illustration).
/// struct Xor(u8);
///
/// impl Filter for Xor {
///     fn decode(&mut self, input: &[u8], app: &mut Vec<u8>, _net: &mut dyn FnMut(&[u8])) -> Result<(), FilterError> {
///         app.extend(input.iter().map(|b| b ^ self.0));
///         Ok(())
///     }
///     fn encode(&mut self, plain: &[u8], net: &mut dyn FnMut(&[u8])) -> Result<(), FilterError> {
///         let v: Vec<u8> = plain.iter().map(|b| b ^ self.0).collect();
///         net(&v);
///         Ok(())
///     }
/// }
/// ```
pub trait Filter: 'static {
    /// The connection is established; a client filter sends its first
    /// bytes (the TLS ClientHello) here.
    fn start(&mut self, net: &mut dyn FnMut(&[u8])) -> Result<(), FilterError> {
        let _ = net;
        Ok(())
    }

    /// Bytes arrived from the peer. Append the application bytes they
    /// carry to `app`; queue anything to answer with `net`.
    fn decode(
        &mut self,
        input: &[u8],
        app: &mut Vec<u8>,
        net: &mut dyn FnMut(&[u8]),
    ) -> Result<(), FilterError>;

    /// The handler wrote `plain`; queue its encoding with `net`. Called
    /// during the handshake too: buffer or encode as the protocol allows.
    fn encode(&mut self, plain: &[u8], net: &mut dyn FnMut(&[u8])) -> Result<(), FilterError>;

    /// The connection is closing gracefully: queue a goodbye (TLS
    /// close_notify).
    fn close(&mut self, net: &mut dyn FnMut(&[u8])) {
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
