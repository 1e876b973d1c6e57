//! The output side: where encoded bytes go.

use std::sync::Arc;

/// A destination for encoded bytes (frames, handshake responses).
///
/// The engine's connection context implements this so that frames are written
/// straight into its pooled outbound buffers without an intermediate `Vec`.
/// Writing is infallible: back-pressure is the engine's business (it stops
/// reading from a peer whose outbound queue is full).
///
/// ```
/// use myriad_ws::Sink;
/// let mut out: Vec<u8> = Vec::new();
/// out.write(b"ab");
/// out.write_vectored(&[b"c", b"de"]);
/// assert_eq!(out, b"abcde");
/// ```
pub trait Sink {
    /// Appends `bytes` to the output.
    fn write(&mut self, bytes: &[u8]);

    /// Appends several slices in order (a frame header and its payload, for
    /// instance). The default calls [`Sink::write`] for each part; a sink
    /// backed by an `iovec` queue can override it.
    fn write_vectored(&mut self, parts: &[&[u8]]) {
        for part in parts {
            self.write(part);
        }
    }

    /// Appends `head` then `body`, where `body` may be a slice of the input
    /// being decoded (a received payload echoed back). The default is
    /// [`Sink::write_vectored`]; the engine's sink sends a large `body` from
    /// the receive buffer itself where the backend allows, with `head` put in
    /// place of the frame header received before it (a server's header is
    /// always 4 bytes shorter than the client's masked one).
    ///
    /// ```
    /// use myriad_ws::Sink;
    /// let mut out: Vec<u8> = Vec::new();
    /// out.write_from_input(&[0x82, 2], b"hi");
    /// assert_eq!(out, [0x82, 2, b'h', b'i']);
    /// ```
    fn write_from_input(&mut self, head: &[u8], body: &[u8]) {
        self.write_vectored(&[head, body]);
    }

    /// Appends an immutable shared buffer (an encoded
    /// [`crate::PreparedMessage`] written to many connections). The default
    /// copies it with [`Sink::write`]; the engine's sink queues the buffer
    /// by reference instead, so fan-out copies no payload per recipient.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use myriad_ws::Sink;
    /// let shared: Arc<[u8]> = Arc::from(&b"frame"[..]);
    /// let mut out: Vec<u8> = Vec::new();
    /// out.write_shared(&shared);
    /// assert_eq!(out, b"frame");
    /// ```
    fn write_shared(&mut self, bytes: &Arc<[u8]>) {
        self.write(bytes);
    }

    /// Whether the output is over its high-water mark. A connection stops
    /// decoding received frames at the next frame boundary while it is
    /// (the rest stays unconsumed until the output drains), so that what a
    /// peer sends cannot grow what the receiver holds for it. The default,
    /// for an unbounded sink such as a `Vec`, is never.
    ///
    /// ```
    /// use myriad_ws::Sink;
    /// let out: Vec<u8> = Vec::new();
    /// assert!(!out.is_full());
    /// ```
    fn is_full(&self) -> bool {
        false
    }
}

impl Sink for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn write_vectored(&mut self, parts: &[&[u8]]) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        self.reserve(total);
        for part in parts {
            self.extend_from_slice(part);
        }
    }
}

impl<S: Sink + ?Sized> Sink for &mut S {
    fn write(&mut self, bytes: &[u8]) {
        (**self).write(bytes);
    }

    fn write_vectored(&mut self, parts: &[&[u8]]) {
        (**self).write_vectored(parts);
    }

    fn write_from_input(&mut self, head: &[u8], body: &[u8]) {
        (**self).write_from_input(head, body);
    }

    fn write_shared(&mut self, bytes: &Arc<[u8]>) {
        (**self).write_shared(bytes);
    }

    fn is_full(&self) -> bool {
        (**self).is_full()
    }
}
