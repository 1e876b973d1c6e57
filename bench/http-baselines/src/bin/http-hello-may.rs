//! The hello-world HTTP/1.1 server of `bench-http` on may_minihttp (the
//! `may` stackful-coroutine runtime), written the way its examples are, with
//! one `may` worker thread.
//!
//! Any request answers 200 `Hello, World!` (13 bytes, `text/plain`).
//!
//! `http-hello-may --addr 127.0.0.1:19401`

use std::io;
use std::net::SocketAddr;

use may_minihttp::{HttpServer, HttpService, Request, Response};

#[derive(Clone)]
struct Hello;

impl HttpService for Hello {
    fn call(&mut self, _req: Request, rsp: &mut Response) -> io::Result<()> {
        rsp.header("Content-Type: text/plain").body("Hello, World!");
        Ok(())
    }
}

fn main() {
    let mut addr: Option<SocketAddr> = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--addr" => addr = it.next().and_then(|v| v.parse().ok()),
            _ => {
                eprintln!("http-hello-may: unknown argument {a}");
                std::process::exit(2);
            }
        }
    }
    let Some(addr) = addr else {
        eprintln!("http-hello-may: usage: http-hello-may --addr HOST:PORT");
        std::process::exit(2);
    };
    may::config().set_workers(1);
    let server = HttpServer(Hello).start(addr).expect("bind");
    eprintln!("http-hello-may: listening on {addr}");
    let _ = server.join();
}
