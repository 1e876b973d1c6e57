//! Incremental UTF-8 validation across frame and chunk boundaries.

use crate::error::ProtocolError;

/// Validates a UTF-8 stream that arrives in pieces, failing as soon as an
/// invalid sequence is seen (not only at the end of the message). A code
/// point split across pieces is carried over (at most 3 bytes).
///
/// ```
/// use myriad_ws::Utf8Validator;
/// let text = "añ€😀".as_bytes();
/// let mut v = Utf8Validator::new();
/// for b in text {
///     v.feed(std::slice::from_ref(b)).unwrap();
/// }
/// v.finish().unwrap();
///
/// let mut v = Utf8Validator::new();
/// assert!(v.feed(&[0xF4, 0x90]).is_err()); // beyond U+10FFFF: fails at once
/// ```
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    }
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets any carried-over bytes (start of a new message).
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }

    /// Whether a code point is incomplete at the end of the input so far.
    pub fn is_incomplete(&self) -> bool {
        self.pending_len != 0
    }

    /// Validates the next piece of the stream.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), ProtocolError> {
        if self.pending_len != 0 {
            let p = usize::from(self.pending_len);
            let need = sequence_len(self.pending[0]).saturating_sub(p);
            let take = need.min(input.len());
            self.pending[p..p + take].copy_from_slice(&input[..take]);
            let have = p + take;
            input = &input[take..];
            match simdutf8::compat::from_utf8(&self.pending[..have]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() && take < need => {
                    self.pending_len = have as u8;
                    return Ok(());
                }
                Err(_) => return Err(ProtocolError::InvalidUtf8),
            }
        }
        // fast path: the whole piece is valid
        if simdutf8::basic::from_utf8(input).is_ok() {
            return Ok(());
        }
        match simdutf8::compat::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) => match e.error_len() {
                Some(_) => Err(ProtocolError::InvalidUtf8),
                None => {
                    let tail = &input[e.valid_up_to()..];
                    // an incomplete but so far valid sequence: at most 3 bytes
                    if tail.len() > 3 {
                        return Err(ProtocolError::InvalidUtf8);
                    }
                    self.pending[..tail.len()].copy_from_slice(tail);
                    self.pending_len = tail.len() as u8;
                    Ok(())
                }
            },
        }
    }

    /// Ends the message: an incomplete trailing code point is an error.
    /// Resets the validator for the next message.
    pub fn finish(&mut self) -> Result<(), ProtocolError> {
        let incomplete = self.pending_len != 0;
        self.pending_len = 0;
        if incomplete {
            Err(ProtocolError::InvalidUtf8)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_split(bytes: &[u8], cuts: &[usize]) -> bool {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &c in cuts {
            let c = c.clamp(start, bytes.len());
            if v.feed(&bytes[start..c]).is_err() {
                return false;
            }
            start = c;
        }
        v.feed(&bytes[start..]).is_ok() && v.finish().is_ok()
    }

    #[test]
    fn fail_fast_on_truncated_invalid_prefix() {
        let mut v = Utf8Validator::new();
        v.feed(b"ok").unwrap();
        assert!(v.feed(&[0xED, 0xA0]).is_err()); // surrogate prefix
        let mut v = Utf8Validator::new();
        v.feed(&[0xF0]).unwrap();
        assert!(v.feed(&[0x80, 0x80]).is_err()); // overlong
        let mut v = Utf8Validator::new();
        v.feed(&[0xE2, 0x82]).unwrap();
        assert!(v.finish().is_err());
    }

    proptest! {
        #[test]
        fn agrees_with_std(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                           cuts in proptest::collection::vec(0usize..64, 0..6)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(check_split(&bytes, &cuts), std::str::from_utf8(&bytes).is_ok());
        }

        #[test]
        fn valid_strings_any_split(s in "\\PC{0,40}", cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert!(check_split(s.as_bytes(), &cuts));
        }
    }
}
