//! The plugin tests' server and clients (native and wasm plugins alike):
//! a `myriad serve` with its log in a file, a raw TCP client, a minimal
//! WebSocket client, the metrics page.

use super::BIN;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any one wait of these tests may take.
pub const IO: Duration = Duration::from_secs(20);

pub struct Server {
    pub child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start(dir: &Path, config: &str, wait: &[u16]) -> Server {
        let path = dir.join("myriad.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.join("server.log");
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .env("MYRIAD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let s = Server { child, log };
        for p in wait {
            s.wait_port(*p);
        }
        s
    }

    pub fn wait_port(&self, port: u16) {
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < IO,
                "port {port} never came up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY-free: the libc crate is not a dependency of the tests;
        // `kill` the program is.
        Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap();
    }

    pub fn wait_log(&self, needle: &str) {
        let t0 = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                t0.elapsed() < IO,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(IO)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

pub fn roundtrip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

pub fn metrics(port: u16) -> String {
    let mut s = connect(port);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < IO, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn tcp_service(name: &str, port: u16, plugin: &str, extra: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nstack = \"tcp\"\nhandler = \"plugin\"\nplugin = \"{plugin}\"\n{extra}\n"
    )
}

pub fn ask_version(s: &mut TcpStream) -> String {
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    String::from_utf8_lossy(&b).into_owned()
}

/// A minimal WebSocket client: the upgrade (returns the status line and
/// the response's header block), masked text/binary frames out, frames in.
pub struct Ws(pub TcpStream);

impl Ws {
    pub fn open(port: u16, target: &str, protocols: &str) -> (Option<Ws>, String) {
        let mut s = connect(port);
        let proto = if protocols.is_empty() {
            String::new()
        } else {
            format!("Sec-WebSocket-Protocol: {protocols}\r\n")
        };
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{proto}\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(1) => head.push(b[0]),
                _ => break,
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let ok = head.starts_with("HTTP/1.1 101");
        (ok.then_some(Ws(s)), head)
    }

    pub fn send(&mut self, opcode: u8, payload: &[u8]) {
        assert!(payload.len() < 126);
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.0.write_all(&f).unwrap();
    }

    /// (opcode, payload) of the next frame.
    pub fn recv(&mut self) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        self.0.read_exact(&mut h).unwrap();
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut l = [0u8; 2];
            self.0.read_exact(&mut l).unwrap();
            len = u64::from(u16::from_be_bytes(l));
        }
        let mut p = vec![0u8; len as usize];
        self.0.read_exact(&mut p).unwrap();
        (h[0] & 0x0f, p)
    }
}
