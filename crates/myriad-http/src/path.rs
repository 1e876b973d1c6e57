//! Request targets: splitting path and query, percent-decoding, and turning
//! a URL path into a relative file path that cannot leave its root.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use thiserror::Error;

/// Why a URL path was refused as a file path ([`sanitize_path`]). Each is
/// answered 400 by the static file service.
///
/// # Examples
///
/// ```
/// use myriad_http::{sanitize_path, PathError};
/// assert_eq!(sanitize_path("/a/%2e%2e/b"), Err(PathError::DotDot));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding")]
    BadEscape,
    /// A `..` segment (plain or percent-encoded).
    #[error("'..' segment")]
    DotDot,
    /// A NUL byte (`%00`).
    #[error("NUL byte in path")]
    Nul,
    /// A backslash (plain or `%5c`): a separator on other systems, refused
    /// so that no file name can be read as a path by anything downstream.
    #[error("backslash in path")]
    Backslash,
    /// `%2f` inside a segment: an encoded separator would make one URL
    /// segment two path components.
    #[error("encoded '/' in a segment")]
    EncodedSlash,
}

/// Splits a request target into its path and query: `/a/b?x=1` gives
/// `("/a/b", Some("x=1"))`. An absolute-form target
/// (`http://host/a?x`) gives its path (`/a`, or `/` when it has none); a
/// fragment, which clients must not send, is cut off.
///
/// # Examples
///
/// ```
/// use myriad_http::split_target;
/// assert_eq!(split_target("/a/b?x=1"), ("/a/b", Some("x=1")));
/// assert_eq!(split_target("http://h:80/p?q"), ("/p", Some("q")));
/// assert_eq!(split_target("http://h:80"), ("/", None));
/// ```
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    let mut t = target;
    if !t.starts_with('/') {
        // absolute-form: scheme "://" authority path-abempty [ "?" query ]
        if let Some(i) = t.find("://") {
            let rest = &t[i + 3..];
            match rest.find(['/', '?', '#']) {
                Some(j) if rest.as_bytes()[j] == b'/' => t = &rest[j..],
                Some(j) => {
                    return ("/", query_of(&rest[j..]));
                }
                None => return ("/", None),
            }
        }
    }
    // One search for the end of the path (runs on every request), instead
    // of a char search for '#' and another for '?'; SIMD only for a long
    // target, since for a short one (`/`, `/plaintext`) the SIMD call's
    // setup costs more than looking at each byte (callgrind, pipelined GET
    // of `/`: split_target was 86 user-space instructions a request).
    let b = t.as_bytes();
    let end = if b.len() < 32 {
        b.iter().position(|&c| c == b'?' || c == b'#')
    } else {
        memchr::memchr2(b'?', b'#', b)
    };
    match end {
        Some(i) if b[i] == b'?' => {
            let q = &t[i + 1..];
            let q = memchr::memchr(b'#', q.as_bytes()).map_or(q, |j| &q[..j]);
            (&t[..i], Some(q))
        }
        Some(i) => (&t[..i], None),
        None => (t, None),
    }
}

fn query_of(s: &str) -> Option<&str> {
    let s = s.split('#').next().unwrap_or("");
    s.strip_prefix('?')
}

/// Percent-decodes `s` (RFC 3986 §2.1). Borrows when there is nothing to
/// decode. `+` is left alone (it means a space only in form bodies).
///
/// # Errors
///
/// [`PathError::BadEscape`] for a `%` not followed by two hex digits.
///
/// # Examples
///
/// ```
/// use myriad_http::percent_decode;
/// assert_eq!(&*percent_decode("a%20b").unwrap(), b"a b");
/// assert!(percent_decode("%zz").is_err());
/// ```
pub fn percent_decode(s: &str) -> Result<Cow<'_, [u8]>, PathError> {
    let b = s.as_bytes();
    if !b.contains(&b'%') {
        return Ok(Cow::Borrowed(b));
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).and_then(|&c| hex(c));
            let lo = b.get(i + 2).and_then(|&c| hex(c));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadEscape);
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(Cow::Owned(out))
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Turns a URL path (as sent: percent-encoded, without the query) into a
/// relative file path made only of normal components, so that
/// `root.join(path)` names something under `root` (symbolic links aside:
/// the static file service opens beneath the root with `RESOLVE_BENEATH`).
///
/// Each `/`-separated segment is percent-decoded on its own; empty and `.`
/// segments are dropped. Refused after decoding: `..`, NUL, a backslash,
/// and an encoded `/` inside a segment. An empty result (`/`) is the root
/// itself.
///
/// # Errors
///
/// A [`PathError`] naming the first refused segment's problem.
///
/// # Examples
///
/// ```
/// use myriad_http::{sanitize_path, PathError};
/// use std::path::Path;
/// assert_eq!(sanitize_path("/css/./site%20main.css").unwrap(), Path::new("css/site main.css"));
/// assert_eq!(sanitize_path("/..%2fetc/passwd"), Err(PathError::EncodedSlash));
/// assert_eq!(sanitize_path("/a%00.txt"), Err(PathError::Nul));
/// ```
pub fn sanitize_path(url_path: &str) -> Result<PathBuf, PathError> {
    let mut out = PathBuf::new();
    for seg in url_path.split('/') {
        if seg.is_empty() {
            continue;
        }
        let dec = percent_decode(seg)?;
        let dec: &[u8] = &dec;
        if dec.contains(&0) {
            return Err(PathError::Nul);
        }
        if dec.contains(&b'\\') {
            return Err(PathError::Backslash);
        }
        if dec.contains(&b'/') {
            return Err(PathError::EncodedSlash);
        }
        match dec {
            b"." => continue,
            b".." => return Err(PathError::DotDot),
            _ => out.push(OsStr::from_bytes(dec)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::{Component, Path};

    #[test]
    fn targets() {
        assert_eq!(split_target("/"), ("/", None));
        assert_eq!(split_target("/a?"), ("/a", Some("")));
        assert_eq!(split_target("/a#frag"), ("/a", None));
        assert_eq!(split_target("/a?b#frag"), ("/a", Some("b")));
        assert_eq!(split_target("https://x/y/z"), ("/y/z", None));
        assert_eq!(split_target("https://x?q"), ("/", Some("q")));
        assert_eq!(split_target("*"), ("*", None));
        // Both searches: a short target is looked at byte by byte, a long
        // one with SIMD; the answer is the same for every length.
        for n in 1..70 {
            let p = format!("/{}", "a".repeat(n - 1));
            assert_eq!(split_target(&p), (p.as_str(), None));
            assert_eq!(split_target(&format!("{p}?q#f")), (p.as_str(), Some("q")));
            assert_eq!(split_target(&format!("{p}#f?q")), (p.as_str(), None));
        }
    }

    #[test]
    fn escapes_refused() {
        for (p, e) in [
            ("/..", PathError::DotDot),
            ("/a/../../etc/passwd", PathError::DotDot),
            ("/%2e%2e/etc/passwd", PathError::DotDot),
            ("/%2E%2E/etc/passwd", PathError::DotDot),
            ("/.%2e/x", PathError::DotDot),
            ("/%2e./x", PathError::DotDot),
            ("/a%2f..%2f..%2fetc", PathError::EncodedSlash),
            ("/a%2F..", PathError::EncodedSlash),
            ("/a%00", PathError::Nul),
            ("/..\\x", PathError::Backslash),
            ("/a%5c..%5cb", PathError::Backslash),
            ("/%", PathError::BadEscape),
            ("/%2", PathError::BadEscape),
            ("/%g0", PathError::BadEscape),
            ("/%%32%65", PathError::BadEscape),
        ] {
            assert_eq!(sanitize_path(p), Err(e), "{p}");
        }
        // Double encoding decodes once: "%252e" is the literal name "%2e".
        assert_eq!(sanitize_path("/%252e%252e").unwrap(), Path::new("%2e%2e"));
        assert_eq!(sanitize_path("/").unwrap(), Path::new(""));
        assert_eq!(sanitize_path("//a//./b/").unwrap(), Path::new("a/b"));
        assert_eq!(sanitize_path("/...").unwrap(), Path::new("..."));
    }

    proptest! {
        /// Whatever comes in, what comes out is relative, made of normal
        /// components only (no `..`, no root, no prefix), holds no NUL or
        /// backslash, and stays lexically under any root.
        #[test]
        fn never_leaves_root(s in "[./%2eEfF5cC0a\\\\]{0,40}") {
            if let Ok(p) = sanitize_path(&s) {
                prop_assert!(p.is_relative());
                for c in p.components() {
                    match c {
                        Component::Normal(n) => {
                            let b = n.as_bytes();
                            prop_assert!(b != b".." && !b.contains(&0) && !b.contains(&b'\\'));
                        }
                        other => prop_assert!(false, "component {:?} in {:?}", other, p),
                    }
                }
                let root = Path::new("/srv/www");
                prop_assert!(root.join(&p).starts_with(root));
            }
        }

        /// Any string at all: never a panic, and the same guarantees.
        #[test]
        fn arbitrary_input(s in any::<String>()) {
            if let Ok(p) = sanitize_path(&s) {
                prop_assert!(p.components().all(|c| matches!(c, Component::Normal(_))));
            }
        }
    }
}
