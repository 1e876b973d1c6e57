//! Hixie-76 / HyBi-00 framing (legacy drafts, server side).
//!
//! Text messages are `0x00`, UTF-8 bytes, `0xFF`; the closing handshake is
//! `0xFF 0x00`. There are no binary messages, pings or close codes. Other
//! frame types (reserved by the draft) fail the connection.
//!
//! HyBi-07/08 use the RFC 6455 framing and need nothing from here.

use crate::error::ProtocolError;
use crate::sink::Sink;
use crate::utf8::Utf8Validator;

/// Decoder of Hixie-76 frames. Events are reported as
/// [`crate::Event::Text`] and [`crate::Event::Close`] (without a code).
///
/// ```
/// use myriad_ws::{legacy::Hixie76Decoder, Event};
/// let mut dec = Hixie76Decoder::new(1 << 20);
/// let mut input = *b"\x00hi\xff\x00yo";
/// let mut got = Vec::new();
/// let n = dec.feed(&mut input, &mut |e: Event<'_>| {
///     if let Event::Text(t) = e { got.push(t.to_owned()) }
/// }).unwrap();
/// assert_eq!(n, input.len()); // a partial message is buffered
/// let mut rest = *b"u\xff\xff\x00";
/// dec.feed(&mut rest, &mut |e: Event<'_>| match e {
///     Event::Text(t) => got.push(t.to_owned()),
///     Event::Close { code, .. } => { assert!(code.is_none()); got.push("close".into()) }
///     _ => {}
/// }).unwrap();
/// assert_eq!(got, ["hi", "you", "close"]);
/// ```
#[derive(Debug)]
pub struct Hixie76Decoder {
    max_message_size: usize,
    buf: Vec<u8>,
    in_text: bool,
    utf8: Utf8Validator,
    closed: bool,
    failed: Option<ProtocolError>,
}

impl Hixie76Decoder {
    /// A decoder with a limit on the message size.
    pub fn new(max_message_size: usize) -> Self {
        Hixie76Decoder {
            max_message_size,
            buf: Vec::new(),
            in_text: false,
            utf8: Utf8Validator::new(),
            closed: false,
            failed: None,
        }
    }

    /// Whether the closing handshake frame has been received.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Decodes frames from `input` (same contract as
    /// [`crate::Decoder::feed`]: returns the bytes consumed). A text frame
    /// whole in the input is delivered without a copy; one cut by the end of
    /// the input is consumed into an owned buffer.
    pub fn feed<F>(&mut self, input: &mut [u8], on_event: &mut F) -> Result<usize, ProtocolError>
    where
        F: FnMut(crate::Event<'_>),
    {
        self.feed_until(input, on_event, &std::cell::Cell::new(false))
    }

    /// [`Decoder::feed`] that stops before the next message once `stop` is
    /// set (see `crate::Decoder`'s `feed_until`).
    pub(crate) fn feed_until<F>(
        &mut self,
        input: &mut [u8],
        on_event: &mut F,
        stop: &std::cell::Cell<bool>,
    ) -> Result<usize, ProtocolError>
    where
        F: FnMut(crate::Event<'_>),
    {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.feed_inner(input, on_event, stop);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn feed_inner<F>(
        &mut self,
        input: &[u8],
        on_event: &mut F,
        stop: &std::cell::Cell<bool>,
    ) -> Result<usize, ProtocolError>
    where
        F: FnMut(crate::Event<'_>),
    {
        let mut pos = 0;
        while pos < input.len() {
            if self.closed {
                return Ok(input.len());
            }
            if stop.get() && !self.in_text {
                return Ok(pos);
            }
            if self.in_text {
                let rest = &input[pos..];
                let end = rest.iter().position(|&b| b == 0xFF);
                let part = &rest[..end.unwrap_or(rest.len())];
                if self.buf.len() + part.len() > self.max_message_size {
                    return Err(ProtocolError::MessageTooLarge {
                        max: self.max_message_size,
                    });
                }
                self.utf8.feed(part)?;
                self.buf.extend_from_slice(part);
                match end {
                    None => return Ok(input.len()),
                    Some(i) => {
                        self.utf8.finish()?;
                        let text = simdutf8::basic::from_utf8(&self.buf)
                            .map_err(|_| ProtocolError::InvalidUtf8)?;
                        on_event(crate::Event::Text(text));
                        self.buf.clear();
                        self.in_text = false;
                        pos += i + 1;
                    }
                }
                continue;
            }
            match input[pos] {
                0x00 => {
                    let rest = &input[pos + 1..];
                    match rest.iter().position(|&b| b == 0xFF) {
                        Some(i) => {
                            if i > self.max_message_size {
                                return Err(ProtocolError::MessageTooLarge {
                                    max: self.max_message_size,
                                });
                            }
                            let text = simdutf8::basic::from_utf8(&rest[..i])
                                .map_err(|_| ProtocolError::InvalidUtf8)?;
                            on_event(crate::Event::Text(text));
                            pos += i + 2;
                        }
                        None => {
                            self.in_text = true;
                            self.utf8.reset();
                            self.buf.clear();
                            pos += 1;
                        }
                    }
                }
                0xFF => match input.get(pos + 1) {
                    None => return Ok(pos),
                    Some(0x00) => {
                        self.closed = true;
                        on_event(crate::Event::Close {
                            code: None,
                            reason: "",
                        });
                        return Ok(input.len());
                    }
                    Some(_) => return Err(ProtocolError::InvalidLegacyFrame),
                },
                _ => return Err(ProtocolError::InvalidLegacyFrame),
            }
        }
        Ok(pos)
    }
}

/// Writes a Hixie-76 text frame.
///
/// ```
/// let mut out = Vec::new();
/// myriad_ws::legacy::write_text(&mut out, "hi");
/// assert_eq!(out, b"\x00hi\xff");
/// ```
pub fn write_text<S: Sink + ?Sized>(sink: &mut S, text: &str) {
    sink.write_vectored(&[&[0x00], text.as_bytes(), &[0xFF]]);
}

/// Writes the Hixie-76 closing frame `0xFF 0x00`.
///
/// ```
/// let mut out = Vec::new();
/// myriad_ws::legacy::write_close(&mut out);
/// assert_eq!(out, [0xFF, 0x00]);
/// ```
pub fn write_close<S: Sink + ?Sized>(sink: &mut S) {
    sink.write(&[0xFF, 0x00]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    fn run(chunks: &[&[u8]], max: usize) -> Result<Vec<String>, ProtocolError> {
        let mut dec = Hixie76Decoder::new(max);
        let mut got = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for c in chunks {
            pending.extend_from_slice(c);
            let n = dec.feed(&mut pending, &mut |e: Event<'_>| match e {
                Event::Text(t) => got.push(t.to_owned()),
                Event::Close { .. } => got.push("<close>".to_owned()),
                _ => {}
            })?;
            pending.drain(..n);
        }
        Ok(got)
    }

    #[test]
    fn split_everywhere() {
        let mut bytes: Vec<u8> = Vec::new();
        // build the real byte stream: 0x00 text 0xFF
        for t in ["héllo", "wörld€"] {
            bytes.push(0);
            bytes.extend_from_slice(t.as_bytes());
            bytes.push(0xFF);
        }
        bytes.extend_from_slice(&[0xFF, 0x00]);
        for a in 0..bytes.len() {
            for b in a..bytes.len() {
                let got = run(&[&bytes[..a], &bytes[a..b], &bytes[b..]], 100).unwrap();
                assert_eq!(got, ["héllo", "wörld€", "<close>"], "{a} {b}");
            }
        }
    }

    #[test]
    fn errors() {
        assert_eq!(
            run(&[b"\x00\xc3\x28\xff"], 100),
            Err(ProtocolError::InvalidUtf8)
        );
        assert_eq!(
            run(&[b"\x00\xc3", b"\x28"], 100),
            Err(ProtocolError::InvalidUtf8)
        );
        assert_eq!(
            run(&[b"\x00abcdef"], 3),
            Err(ProtocolError::MessageTooLarge { max: 3 })
        );
        assert_eq!(
            run(&[b"\x00abcdef\xff"], 3),
            Err(ProtocolError::MessageTooLarge { max: 3 })
        );
        assert_eq!(run(&[b"\x01"], 3), Err(ProtocolError::InvalidLegacyFrame));
        assert_eq!(
            run(&[b"\xff\x01"], 3),
            Err(ProtocolError::InvalidLegacyFrame)
        );
    }
}
