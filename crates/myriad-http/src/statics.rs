//! Static files: a directory served with content types, validators,
//! conditional requests and single byte ranges, never outside its root.

use crate::conn::{BodySize, Response};
use crate::date::{format_imf_fixdate, parse_http_date};
use crate::mime::content_type;
use crate::path::sanitize_path;
use crate::range::{parse_range, ByteRange};
use crate::request::trim_ows;
use crate::service::{BodySource, BodyWriter, Fill, Req, Responder};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::cell::RefCell;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;
use thiserror::Error;

/// Size of one file read. Files up to this size are read and answered at
/// once; bigger ones are read a chunk at a time as the connection drains.
pub(crate) const CHUNK: usize = 64 << 10;

thread_local! {
    /// One read buffer per thread, that is per event loop: a file's bytes
    /// pass through it on their way into the write queue, so that no
    /// connection owns a buffer of its own while it downloads.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Why a directory cannot be served.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StaticError {
    /// The root cannot be opened or resolved.
    #[error("static root {path:?}: {source}")]
    Open {
        /// The root as given.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A directory served over HTTP ([`crate::Router::static_dir`]).
///
/// * `Content-Type` by extension ([`crate::content_type`]); `ETag` (from
///   size and modification time) and `Last-Modified`; `If-None-Match` and
///   `If-Modified-Since` answered 304; a single `Range` answered 206 with
///   `Content-Range` (honouring `If-Range`), 416 with
///   `Content-Range: bytes */len` when unsatisfiable, and several ranges
///   with the whole file (RFC 9110 allows it).
/// * A directory is answered with its `index.html` (a URL without the
///   trailing `/` is redirected to it, 301); there are no listings.
/// * No escape from the root: the URL path is percent-decoded segment by
///   segment and refused (400) on `..`, NUL, backslashes and encoded `/`
///   ([`crate::sanitize_path`]); files are opened beneath the root with
///   `openat2(RESOLVE_BENEATH)`, so that a symbolic link leading out of it
///   is refused (404), at the same moment as the open (no check-then-use
///   race). On kernels without `openat2` (before 5.6), the path is
///   canonicalised and checked against the root instead. Names starting
///   with `.` are not served (404) unless [`StaticDir::hidden`] allows it.
/// * Files are read on the event loop, 64 KiB at a time as the connection
///   drains (at most [`crate::STREAM_WINDOW`] queued per connection): fine
///   for files in the page cache; a disk that stalls stalls the loop.
///   Only regular files are opened for reading (a FIFO would block).
///
/// # Examples
///
/// ```no_run
/// use myriad_http::{Router, StaticDir};
/// let files = StaticDir::new("./public")?.hidden(false);
/// let router = Router::new().static_files("/", files)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct StaticDir {
    root: PathBuf,
    root_fd: OwnedFd,
    hidden: bool,
}

/// How an open went.
enum Opened {
    File(File, Metadata),
    /// Not there, not allowed, or outside the root: all 404.
    Missing,
    Error,
}

impl StaticDir {
    /// Serves `root` (a directory; resolved once, here).
    ///
    /// # Errors
    ///
    /// [`StaticError::Open`] when `root` cannot be resolved or opened as a
    /// directory.
    pub fn new(root: impl AsRef<Path>) -> Result<StaticDir, StaticError> {
        let given = root.as_ref();
        let err = |source| StaticError::Open {
            path: given.to_path_buf(),
            source,
        };
        let root = std::fs::canonicalize(given).map_err(err)?;
        let root_fd = rustix::fs::open(
            &root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err(e.into()))?;
        Ok(StaticDir {
            root,
            root_fd,
            hidden: false,
        })
    }

    /// Whether names starting with `.` (`.git`, `.env`) are served.
    /// Default: no (404).
    pub fn hidden(mut self, serve: bool) -> Self {
        self.hidden = serve;
        self
    }

    /// The resolved root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Answers `req` with the file at `rel` (a URL path below the mount
    /// point, as sent). Meant for `GET` and `HEAD` routes.
    pub fn serve(&self, req: &Req<'_>, res: &mut Responder<'_, '_>, rel: &str) {
        let Ok(path) = sanitize_path(rel) else {
            let _ = res.text(400, "Bad Request\n");
            return;
        };
        if !self.hidden
            && path
                .components()
                .any(|c| c.as_os_str().as_bytes().first() == Some(&b'.'))
        {
            let _ = res.text(404, "Not Found\n");
            return;
        }
        let (file, meta, name) = match self.open(&path) {
            Opened::File(f, m) if m.is_dir() => {
                drop(f);
                if !req.path().ends_with('/') {
                    redirect_to_dir(req, res);
                    return;
                }
                let index = path.join("index.html");
                match self.open(&index) {
                    Opened::File(f, m) => (f, m, index),
                    Opened::Missing => return not_found(res),
                    Opened::Error => return server_error(res),
                }
            }
            Opened::File(f, m) => (f, m, path),
            Opened::Missing => return not_found(res),
            Opened::Error => return server_error(res),
        };
        if !meta.is_file() {
            return not_found(res);
        }
        send_file(req, res, file, &meta, &name);
    }

    fn open(&self, rel: &Path) -> Opened {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        // NONBLOCK: opening a FIFO for reading would wait for a writer;
        // regular files ignore the flag. NOCTTY: a terminal device must
        // not become the process's controlling terminal.
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = match rustix::fs::openat2(
            &self.root_fd,
            rel,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => Ok(fd),
            // No openat2 (Linux < 5.6, or a seccomp filter that does not
            // know it): resolve and check the prefix instead.
            Err(Errno::NOSYS) | Err(Errno::PERM) => self.open_checked(rel, flags),
            Err(e) => Err(e),
        };
        let fd = match fd {
            Ok(fd) => fd,
            Err(
                Errno::NOENT
                | Errno::NOTDIR
                | Errno::XDEV
                | Errno::LOOP
                | Errno::ACCESS
                | Errno::PERM
                | Errno::NAMETOOLONG
                | Errno::NXIO,
            ) => return Opened::Missing,
            Err(_) => return Opened::Error,
        };
        let file = File::from(fd);
        match file.metadata() {
            Ok(m) => Opened::File(file, m),
            Err(_) => Opened::Error,
        }
    }

    /// The fallback without `openat2`: canonicalise, check the prefix,
    /// open the canonical path. A symlink swapped in between the check and
    /// the open could still lead out; `openat2` has no such window.
    fn open_checked(&self, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
        let full = std::fs::canonicalize(self.root.join(rel))
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::NOENT))?;
        if !full.starts_with(&self.root) {
            return Err(Errno::XDEV);
        }
        rustix::fs::open(&full, flags | OFlags::NOFOLLOW, Mode::empty())
    }
}

fn not_found(res: &mut Responder<'_, '_>) {
    let _ = res.text(404, "Not Found\n");
}

fn server_error(res: &mut Responder<'_, '_>) {
    let _ = res.text(500, "Internal Server Error\n");
}

/// `/dir` is a directory: send the client to `/dir/`, so that the links
/// of its index resolve below it. Leading slashes are collapsed: `//host`
/// would be a link to another site.
fn redirect_to_dir(req: &Req<'_>, res: &mut Responder<'_, '_>) {
    let path = req.path().trim_start_matches('/');
    let location = match req.query() {
        Some(q) => format!("/{path}/?{q}"),
        None => format!("/{path}/"),
    };
    let _ = res.send(
        301,
        &[
            ("Location", location.as_bytes()),
            ("Content-Type", b"text/plain; charset=utf-8"),
        ],
        b"Moved Permanently\n",
    );
}

/// Whether an `If-None-Match` list holds `etag` (weak comparison, RFC 9110
/// §13.1.2: `W/` is ignored), or is `*`.
fn etag_listed(list: &[u8], etag: &str) -> bool {
    let list = trim_ows(list);
    list == b"*"
        || list.split(|&b| b == b',').map(trim_ows).any(|t| {
            let t = t.strip_prefix(b"W/").unwrap_or(t);
            t == etag.as_bytes()
        })
}

/// Whether a `Range` may be honoured under `If-Range` (RFC 9110 §13.1.5):
/// the validator must match exactly (strong comparison for an entity tag,
/// the same second for a date).
fn if_range_holds(if_range: Option<&[u8]>, etag: &str, mtime: u64) -> bool {
    match if_range.map(trim_ows) {
        None => true,
        Some(v) if v.first() == Some(&b'"') => v == etag.as_bytes(),
        Some(v) => parse_http_date(v) == Some(mtime),
    }
}

fn send_file(req: &Req<'_>, res: &mut Responder<'_, '_>, file: File, meta: &Metadata, name: &Path) {
    let len = meta.len();
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    let secs = mtime.as_secs();
    let etag = format!("\"{len:x}-{secs:x}.{:x}\"", mtime.subsec_nanos());
    let last_modified = format_imf_fixdate(secs);
    // RFC 9110 §13.2.2: If-None-Match decides when present, and only
    // without it If-Modified-Since (whose precision is a second).
    let not_modified = match req.header("if-none-match") {
        Some(list) => etag_listed(list, &etag),
        None => req
            .header("if-modified-since")
            .and_then(parse_http_date)
            .is_some_and(|since| secs <= since),
    };
    let validators: [(&str, &[u8]); 2] =
        [("ETag", etag.as_bytes()), ("Last-Modified", &last_modified)];
    if not_modified {
        let _ = res.send(304, &validators, b"");
        return;
    }
    let range = match req.header("range") {
        Some(r) if if_range_holds(req.header("if-range"), &etag, secs) => parse_range(r, len),
        _ => ByteRange::Full,
    };
    let ctype = content_type(name);
    let (status, start, count, content_range) = match range {
        ByteRange::Partial { start, end } => (
            206,
            start,
            end - start + 1,
            Some(format!("bytes {start}-{end}/{len}")),
        ),
        ByteRange::Unsatisfiable => {
            let cr = format!("bytes */{len}");
            let _ = res.send(
                416,
                &[
                    ("Content-Range", cr.as_bytes()),
                    ("Content-Type", b"text/plain; charset=utf-8"),
                ],
                b"Range Not Satisfiable\n",
            );
            return;
        }
        _ => (200, 0, len, None),
    };
    let mut headers: [(&str, &[u8]); 6] = [
        ("Content-Type", ctype.as_bytes()),
        validators[0],
        validators[1],
        ("Accept-Ranges", b"bytes"),
        ("", b""),
        ("", b""),
    ];
    let mut n = 4;
    if let Some(cr) = &content_range {
        headers[n] = ("Content-Range", cr.as_bytes());
        n += 1;
    }
    let head = Response::new(status).with_headers(&headers[..n]);
    if res.is_head() {
        let _ = res.start(&head, BodySize::Known(count));
        let _ = res.finish();
        return;
    }
    if count <= CHUNK as u64 {
        // Small: read and answer at once (head and body in one write).
        let read = READ_BUF.with(|b| {
            let Ok(mut b) = b.try_borrow_mut() else {
                return Err(io::Error::other("read buffer busy"));
            };
            b.resize(CHUNK, 0);
            let buf = &mut b[..count as usize];
            file.read_exact_at(buf, start)?;
            let _ = res.respond(&head, buf);
            Ok(())
        });
        if read.is_err() {
            server_error(res);
        }
        return;
    }
    if res.start(&head, BodySize::Known(count)).is_ok() {
        let _ = res.stream(FileBody {
            file: Arc::new(file),
            offset: start,
            left: count,
        });
    }
}

/// A file's bytes as a streamed body, a window at a time: sent by the
/// kernel (`sendfile`) on plain TCP, read a chunk at a time over TLS.
struct FileBody {
    file: Arc<File>,
    offset: u64,
    left: u64,
}

impl BodySource for FileBody {
    fn fill(&mut self, out: &mut BodyWriter<'_, '_>) -> io::Result<Fill> {
        while self.left > 0 && !out.is_full() {
            let n = self.left.min(out.room() as u64);
            if !out
                .send_file(&self.file, self.offset, n)
                .map_err(io::Error::other)?
            {
                break;
            }
            self.offset += n;
            self.left -= n;
        }
        if self.left == 0 {
            return Ok(Fill::Done);
        }
        if out.is_full() {
            return Ok(Fill::More);
        }
        READ_BUF.with(|b| {
            let Ok(mut b) = b.try_borrow_mut() else {
                return Err(io::Error::other("read buffer busy"));
            };
            b.resize(CHUNK, 0);
            while self.left > 0 && !out.is_full() {
                let want = (self.left.min(CHUNK as u64)) as usize;
                let n = self.file.read_at(&mut b[..want], self.offset)?;
                if n == 0 {
                    // The file shrank under us: the announced length
                    // cannot be met.
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                out.write(&b[..n]).map_err(io::Error::other)?;
                self.offset += n as u64;
                self.left -= n as u64;
            }
            Ok(if self.left == 0 {
                Fill::Done
            } else {
                Fill::More
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback for kernels without `openat2`: a symlink out of the
    /// root is refused, one inside it followed.
    #[test]
    fn fallback_open_checks_prefix() {
        let dir = std::env::temp_dir().join(format!("myriad-http-fallback-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::write(dir.join("secret"), b"x").unwrap();
        std::fs::write(dir.join("www/ok"), b"y").unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), dir.join("www/out")).unwrap();
        std::os::unix::fs::symlink("ok", dir.join("www/in")).unwrap();
        let s = StaticDir::new(dir.join("www")).unwrap();
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        assert_eq!(
            s.open_checked(Path::new("out"), flags).unwrap_err(),
            Errno::XDEV
        );
        assert!(s.open_checked(Path::new("in"), flags).is_ok());
        assert_eq!(
            s.open_checked(Path::new("none"), flags).unwrap_err(),
            Errno::NOENT
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn validators() {
        let etag = "\"10-5.0\"";
        assert!(etag_listed(b"\"10-5.0\"", etag));
        assert!(etag_listed(b"W/\"10-5.0\"", etag));
        assert!(etag_listed(b"\"x\", \"10-5.0\"", etag));
        assert!(etag_listed(b" * ", etag));
        assert!(!etag_listed(b"\"10-5.1\"", etag));
        assert!(!etag_listed(b"", etag));
        assert!(if_range_holds(None, etag, 5));
        assert!(if_range_holds(Some(b"\"10-5.0\""), etag, 5));
        assert!(!if_range_holds(Some(b"W/\"10-5.0\""), etag, 5));
        assert!(if_range_holds(
            Some(b"Thu, 01 Jan 1970 00:00:05 GMT"),
            etag,
            5
        ));
        assert!(!if_range_holds(
            Some(b"Thu, 01 Jan 1970 00:00:06 GMT"),
            etag,
            5
        ));
    }
}
