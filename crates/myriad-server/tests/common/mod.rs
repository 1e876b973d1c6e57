//! Helpers shared by the server's end-to-end tests. Each test file is a
//! binary of its own that includes this module, so the lock below is per
//! binary, as it was when every file had its own copy.
#![allow(dead_code)]

pub mod plugin;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_myriad");
pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Tests that start servers take this lock: one server at a time keeps
/// fixed ports (the embedded default) free and the assertions honest on a
/// 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh directory for one test, named after the test binary and `tag`.
pub fn tmpdir(tag: &str) -> PathBuf {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let bin = bin.split('-').next().unwrap_or("test");
    let d = std::env::temp_dir().join(format!("myriad-{bin}-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A free port below the ephemeral range (32768 up): there, client sockets
/// of other tests in TIME-WAIT can hold a port, or its neighbours, that
/// was free a moment ago.
pub fn free_port() -> u16 {
    static NEXT: Mutex<u16> = Mutex::new(0);
    let mut next = NEXT.lock().unwrap_or_else(|p| p.into_inner());
    if *next == 0 {
        *next = 20000 + (std::process::id() % 5000) as u16 * 2;
    }
    loop {
        *next += 1;
        if *next >= 32000 {
            *next = 20000;
        }
        if TcpListener::bind(("127.0.0.1", *next)).is_ok() {
            return *next;
        }
    }
}

/// Writes a self-signed certificate for `localhost` (`cert.pem`, `key.pem`)
/// into `dir`, with the Debian `openssl` tool.
pub fn self_signed_cert(dir: &Path) {
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(ok.success(), "openssl req failed");
}

/// `myriad serve --config CONFIG`, its standard error discarded.
pub fn serve(config: &Path) -> Server {
    Server(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .stderr(Stdio::null())
            .spawn()
            .expect("myriad starts"),
    )
}

/// A server process, killed (and its supervisor's relay directory
/// removed) when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        // A SIGKILLed supervisor leaves its relay directory behind.
        remove_relay_dir(self.0.id());
    }
}

pub fn remove_relay_dir(sup: u32) {
    let prefix = format!("myriad-supervisor-{sup}-");
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

pub fn signal(child: &Child, sig: &str) {
    Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
}

pub fn wait_port(addr: &str) {
    let t0 = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{addr} never came up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `myriad check --config FILE`: exit code and everything it printed.
pub fn check(config: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout),
    )
}
