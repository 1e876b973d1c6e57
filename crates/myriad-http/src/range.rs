//! The `Range` request header (RFC 9110 §14), for single byte ranges.

use crate::request::trim_ows;

/// What a `Range` header asks of a representation of a given length.
///
/// # Examples
///
/// ```
/// use myriad_http::{parse_range, ByteRange};
/// assert_eq!(parse_range(b"bytes=0-99", 1000), ByteRange::Partial { start: 0, end: 99 });
/// assert_eq!(parse_range(b"bytes=-100", 1000), ByteRange::Partial { start: 900, end: 999 });
/// assert_eq!(parse_range(b"bytes=2000-", 1000), ByteRange::Unsatisfiable);
/// assert_eq!(parse_range(b"bytes=0-1,5-6", 1000), ByteRange::Full);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ByteRange {
    /// Send the whole representation (200): the header is absent, not a
    /// byte range, malformed (RFC 9110 §14.2: ignore it), or asks for
    /// several ranges (answering those with the whole file is allowed and
    /// spares a multipart body).
    Full,
    /// Send bytes `start..=end` (206 with `Content-Range`); `end` is below
    /// the length.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// No byte of the range exists (416 with `Content-Range: bytes */len`).
    Unsatisfiable,
}

/// Reads a `Range` header value against a representation of `len` bytes:
/// `bytes=a-b`, `bytes=a-` and `bytes=-n` (the last n bytes). Never fails:
/// anything it does not understand is [`ByteRange::Full`].
pub fn parse_range(value: &[u8], len: u64) -> ByteRange {
    let v = trim_ows(value);
    let Some(eq) = v.iter().position(|&b| b == b'=') else {
        return ByteRange::Full;
    };
    if !trim_ows(&v[..eq]).eq_ignore_ascii_case(b"bytes") {
        return ByteRange::Full;
    }
    let mut specs = v[eq + 1..]
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return ByteRange::Full;
    };
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return ByteRange::Full;
    };
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    match (digits(first), digits(last)) {
        // -n: the last n bytes.
        (None, Some(n)) if first.is_empty() => {
            if n == 0 || len == 0 {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Partial {
                    start: len.saturating_sub(n),
                    end: len - 1,
                }
            }
        }
        // a-: from a to the end.
        (Some(a), None) if last.is_empty() => {
            if a >= len {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Partial {
                    start: a,
                    end: len - 1,
                }
            }
        }
        (Some(a), Some(b)) if a <= b => {
            if a >= len {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Partial {
                    start: a,
                    end: b.min(len - 1),
                }
            }
        }
        _ => ByteRange::Full,
    }
}

/// `1*DIGIT`, saturating: a number too large for a `u64` is past any length
/// anyway.
fn digits(d: &[u8]) -> Option<u64> {
    if d.is_empty() || !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(d.iter().fold(0u64, |n, &b| {
        n.saturating_mul(10).saturating_add((b - b'0') as u64)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ByteRange::*;

    #[test]
    fn cases() {
        let p = |s: &str, len| parse_range(s.as_bytes(), len);
        assert_eq!(p("bytes=0-0", 10), Partial { start: 0, end: 0 });
        assert_eq!(p("bytes=5-", 10), Partial { start: 5, end: 9 });
        assert_eq!(p("bytes=5-100", 10), Partial { start: 5, end: 9 });
        assert_eq!(p("bytes=-3", 10), Partial { start: 7, end: 9 });
        assert_eq!(p("bytes=-30", 10), Partial { start: 0, end: 9 });
        assert_eq!(p(" Bytes = 1-2 ", 10), Partial { start: 1, end: 2 });
        assert_eq!(p("bytes=1-2,", 10), Partial { start: 1, end: 2 });
        assert_eq!(p("bytes=10-", 10), Unsatisfiable);
        assert_eq!(p("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(p("bytes=-0", 10), Unsatisfiable);
        assert_eq!(p("bytes=0-", 0), Unsatisfiable);
        assert_eq!(p("bytes=-5", 0), Unsatisfiable);
        assert_eq!(p("bytes=99999999999999999999999-", 10), Unsatisfiable);
        assert_eq!(
            p("bytes=0-99999999999999999999999", 10),
            Partial { start: 0, end: 9 }
        );
        for full in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=5-3",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes=+1-2",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=0-1, -1",
        ] {
            assert_eq!(p(full, 10), Full, "{full:?}");
        }
    }

    proptest! {
        /// A partial range always lies inside the representation.
        #[test]
        fn partial_in_bounds(s in "bytes=[0-9-]{0,12}", len in 0u64..50) {
            if let Partial { start, end } = parse_range(s.as_bytes(), len) {
                prop_assert!(start <= end && end < len);
            }
        }
    }
}
