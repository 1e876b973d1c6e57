//! `Content-Type` by file extension.

use std::path::Path;

/// The common web types; anything else is `application/octet-stream`.
/// Text types carry `charset=utf-8` so that browsers do not guess.
const TYPES: &[(&str, &str)] = &[
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("json", "application/json"),
    ("map", "application/json"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("ico", "image/x-icon"),
    ("wasm", "application/wasm"),
    ("txt", "text/plain; charset=utf-8"),
    ("xml", "application/xml"),
    ("pdf", "application/pdf"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
];

/// The `Content-Type` for a file name, by its extension (ASCII
/// case-insensitive).
///
/// # Examples
///
/// ```
/// use myriad_http::content_type;
/// use std::path::Path;
/// assert_eq!(content_type(Path::new("a/INDEX.HTML")), "text/html; charset=utf-8");
/// assert_eq!(content_type(Path::new("x.bin")), "application/octet-stream");
/// ```
pub fn content_type(path: &Path) -> &'static str {
    let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
        return "application/octet-stream";
    };
    TYPES
        .iter()
        .find(|(e, _)| e.eq_ignore_ascii_case(ext))
        .map_or("application/octet-stream", |(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for (f, t) in [
            ("a.css", "text/css; charset=utf-8"),
            ("a.mjs", "text/javascript; charset=utf-8"),
            ("a.woff2", "font/woff2"),
            ("a.wasm", "application/wasm"),
            ("a.js.map", "application/json"),
            ("Makefile", "application/octet-stream"),
            (".png", "application/octet-stream"),
        ] {
            assert_eq!(content_type(Path::new(f)), t, "{f}");
        }
    }
}
