//! Smoke tests of the benchmark programs: short, over loopback, a few
//! seconds in all. They check that the programs work together, not speed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use myriad_bench::harness::{workspace_root, CBaseline, HTTP_FLOOR, WS_FLOOR};

/// A free loopback port (bound and released; good enough for a test).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Kills the child on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(bin: &str, args: &[&str]) -> (Guard, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut all = vec!["--addr", addr.as_str()];
    all.extend_from_slice(args);
    let child = Command::new(bin)
        .args(&all)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(&addr, bin);
    (Guard(child), addr)
}

/// Waits up to 10 s for `addr` to accept connections.
fn wait_listening(addr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn loadgen(addr: &str, conns: &str, size: &str, window: &str) -> String {
    run_load(env!("CARGO_BIN_EXE_loadgen"), addr, conns, size, window)
}

/// A short closed-loop run of `bin` (`loadgen` or `ws-loadgen`), which
/// verifies every echoed byte; its RESULT line, asserted error-free.
fn run_load(bin: &str, addr: &str, conns: &str, size: &str, window: &str) -> String {
    let out = Command::new(bin)
        .args([
            "--addr",
            addr,
            "--connections",
            conns,
            "--size",
            size,
            "--window",
            window,
            "--warmup",
            "0.1",
            "--duration",
            "0.3",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "loadgen failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("MEASURE_START") && stdout.contains("MEASURE_END"));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT"))
        .expect("RESULT line")
        .to_string();
    assert!(line.contains("errors=0"), "{line}");
    assert!(!line.contains("msgs=0 "), "{line}");
    line
}

fn stop(mut g: Guard) {
    let pid = rustix::process::Pid::from_child(&g.0);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(st) = g.0.try_wait().unwrap() {
            assert!(st.success(), "server exited with {st} after SIGTERM");
            return;
        }
        assert!(Instant::now() < deadline, "server ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn epoll_echo_with_loadgen_and_idle_conns() {
    let (server, addr) = start(env!("CARGO_BIN_EXE_echo-epoll"), &[]);
    loadgen(&addr, "20", "64", "1");
    loadgen(&addr, "10", "64", "16");
    // Larger than the socket buffers: exercises short writes both ways.
    loadgen(&addr, "4", "300000", "2");

    let mut idle = Command::new(env!("CARGO_BIN_EXE_idle-conns"))
        .args(["--addr", &addr, "--connections", "200", "--hold-secs", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(idle.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "READY 200");
    let mut stdin = idle.stdin.take().unwrap();
    let _ = stdin.write_all(b"x");
    drop(stdin);
    assert!(idle.wait().unwrap().success());
    stop(server);
}

#[test]
fn tokio_echo_both_modes() {
    for mode in ["current", "multi"] {
        let (server, addr) = start(
            env!("CARGO_BIN_EXE_echo-tokio"),
            &["--mode", mode, "--threads", "2"],
        );
        loadgen(&addr, "20", "512", "1");
        loadgen(&addr, "4", "300000", "2");
        stop(server);
    }
}

#[test]
fn driver_runs_baselines_and_writes_json() {
    let cpus = myriad_bench::affinity::allowed_cpus().unwrap();
    let (first, last) = (cpus[0].to_string(), cpus[cpus.len() - 1].to_string());
    let json = std::env::temp_dir().join(format!("bench-echo-smoke-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_bench-echo"))
        .args([
            "--no-build",
            "--servers",
            "tokio-current,epoll",
            "--subjects",
            "epoll",
            "--scenarios",
            "pingpong-64,idle",
            "--duration",
            "0.3",
            "--warmup",
            "0.1",
            "--repeat",
            "2",
            "--idle",
            "100",
            "--wait-quiet",
            "0",
            "--busy-retries",
            "0",
            "--server-cpu",
            &first,
            "--client-cpu",
            &last,
            "--base-port",
            &free_port().to_string(),
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("epoll vs tokio-current"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    for server in ["tokio-current", "epoll"] {
        let s = &v["servers"][server];
        assert!(
            s["scenarios"]["pp64"]["median"]["msgs_per_sec"]
                .as_f64()
                .unwrap()
                > 0.0,
            "{v}"
        );
        assert_eq!(s["scenarios"]["pp64"]["runs"].as_array().unwrap().len(), 2);
        assert!(s["idle"]["bytes_per_conn"].is_number(), "{v}");
    }
    assert!(!v["ratios"].as_array().unwrap().is_empty());
}

/// Compiles one of the C floor servers (`bench-http`/`bench-ws --servers
/// floor`) from the harness's description, warnings as errors.
fn cc_floor(c: &CBaseline) -> std::path::PathBuf {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(c.name);
    let st = Command::new("cc")
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg(workspace_root().join(c.src))
        .args(c.libs)
        .status()
        .unwrap();
    assert!(st.success(), "cc {} failed", c.src);
    out
}

/// Starts a floor (`ADDR [--epoll]`) and waits for its port.
fn start_floor(bin: &std::path::Path, epoll: bool) -> (Guard, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(bin)
        .arg(&addr)
        .args(epoll.then_some("--epoll"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(&addr, &bin.display().to_string());
    (Guard(child), addr)
}

#[test]
fn http_floor_answers_every_request_head_in_both_modes() {
    use std::io::Read;
    let bin = cc_floor(&HTTP_FLOOR);
    let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    for epoll in [false, true] {
        let (_server, addr) = start_floor(&bin, epoll);
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // One head cut inside its "\r\n\r\n" across two receives, then
        // three pipelined in one write.
        s.write_all(&req[..req.len() - 2]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(&req[req.len() - 2..]).unwrap();
        s.write_all(&req.repeat(3)).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.windows(13).filter(|w| w == b"Hello, World!").count() < 4 {
            assert!(Instant::now() < deadline, "epoll={epoll}: {got:?}");
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "epoll={epoll}: closed after {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8(got).unwrap();
        assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 4, "{text}");
        assert!(text.contains("content-length: 13\r\n"), "{text}");
    }
}

#[test]
fn ws_floor_echoes_verified_frames_in_both_modes() {
    let bin = cc_floor(&WS_FLOOR);
    for epoll in [false, true] {
        let (_server, addr) = start_floor(&bin, epoll);
        ws_floor_by_hand(&addr, epoll);
        let ws = env!("CARGO_BIN_EXE_ws-loadgen");
        // pp16k's shape; small pipelined frames (several per receive);
        // frames larger than a provided buffer (gathered across receives).
        run_load(ws, &addr, "10", "16384", "1");
        run_load(ws, &addr, "10", "64", "16");
        run_load(ws, &addr, "4", "100000", "1");
    }
}

/// The handshake's accept key and two echoes with a non-zero mask (the
/// load generator masks with zeros, which would not show a missing
/// unmask), checked byte by byte.
fn ws_floor_by_hand(addr: &str, epoll: bool) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 4096, "epoll={epoll}: {head:?}");
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    // RFC 6455 section 1.3's example key and answer.
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    for len in [11usize, 300] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
        let key = [0x11u8, 0x22, 0x33, 0x44];
        let mut f = vec![0x82];
        if len < 126 {
            f.push(0x80 | len as u8);
        } else {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        s.write_all(&f).unwrap();
        let mut h = [0u8; 2];
        s.read_exact(&mut h).unwrap();
        assert_eq!(h[0], 0x82, "epoll={epoll}");
        let got_len = match h[1] {
            126 => {
                let mut x = [0u8; 2];
                s.read_exact(&mut x).unwrap();
                u16::from_be_bytes(x) as usize
            }
            n => n as usize,
        };
        assert_eq!(got_len, len, "epoll={epoll}");
        let mut got = vec![0u8; len];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, payload, "epoll={epoll}: echo of {len} bytes");
    }
}
