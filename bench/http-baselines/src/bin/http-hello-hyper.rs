//! The hello-world HTTP/1.1 server of `bench-http` on hyper 1.x, written the
//! way hyper's examples are: a tokio `current_thread` runtime (one thread),
//! one task per connection served by `hyper::server::conn::http1` with
//! keep-alive and `pipeline_flush(true)` (pipelined responses are flushed
//! together).
//!
//! `GET` of any path answers 200 `Hello, World!` (13 bytes, `text/plain`);
//! with `--static DIR`, `/static/NAME` streams the file `DIR/NAME` from
//! `tokio::fs` (`ReaderStream` of 64 KiB reads, `Content-Length` from the
//! file's metadata; 404 if it is not a file).
//!
//! `http-hello-hyper --addr 127.0.0.1:19400 [--static DIR]`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::io::ReaderStream;

type FileStream = futures_util::stream::Map<
    ReaderStream<tokio::fs::File>,
    fn(std::io::Result<Bytes>) -> std::io::Result<Frame<Bytes>>,
>;
type Body = Either<Full<Bytes>, StreamBody<FileStream>>;

const HELLO: &[u8] = b"Hello, World!";

fn text(status: StatusCode, body: &'static [u8]) -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(body))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, "text/plain".parse().expect("header value"));
    r
}

async fn file(dir: &Path, name: &str) -> Response<Body> {
    if name.is_empty()
        || name
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return text(StatusCode::NOT_FOUND, b"not found");
    }
    let path = dir.join(name);
    let Ok(f) = tokio::fs::File::open(&path).await else {
        return text(StatusCode::NOT_FOUND, b"not found");
    };
    let len = match f.metadata().await {
        Ok(m) if m.is_file() => m.len(),
        _ => return text(StatusCode::NOT_FOUND, b"not found"),
    };
    let frames: FileStream = ReaderStream::with_capacity(f, 64 * 1024).map(|r| r.map(Frame::data));
    let mut r = Response::new(Either::Right(StreamBody::new(frames)));
    let h = r.headers_mut();
    h.insert(CONTENT_LENGTH, len.into());
    h.insert(
        CONTENT_TYPE,
        "application/octet-stream".parse().expect("header value"),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    dir: Arc<Option<PathBuf>>,
) -> Result<Response<Body>, Infallible> {
    if let (Some(dir), Some(name)) = (dir.as_deref(), req.uri().path().strip_prefix("/static/")) {
        return Ok(file(dir, name).await);
    }
    Ok(text(StatusCode::OK, HELLO))
}

fn main() {
    let mut addr: Option<SocketAddr> = None;
    let mut dir: Option<PathBuf> = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--addr" => addr = it.next().and_then(|v| v.parse().ok()),
            "--static" => dir = it.next().map(PathBuf::from),
            _ => {
                eprintln!("http-hello-hyper: unknown argument {a}");
                std::process::exit(2);
            }
        }
    }
    let Some(addr) = addr else {
        eprintln!("http-hello-hyper: usage: http-hello-hyper --addr HOST:PORT [--static DIR]");
        std::process::exit(2);
    };
    let dir = Arc::new(dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await.expect("bind");
        eprintln!("http-hello-hyper: listening on {addr}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let dir = Arc::clone(&dir);
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(req, Arc::clone(&dir)));
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .pipeline_flush(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
