//! The `myriad` binary end to end: config errors, the embedded default,
//! systemd notifications, metrics, SIGHUP reload, SIGTERM drain.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;

fn echo(addr: &str, msg: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(msg).unwrap();
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(buf, msg);
    s
}

/// Each of `held` still echoes a message of its own after `what`.
fn still_echo(held: &mut [TcpStream], what: &str) {
    for (i, s) in held.iter_mut().enumerate() {
        let m = format!("still {i}");
        s.write_all(m.as_bytes()).unwrap();
        let mut buf = vec![0u8; m.len()];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, m.as_bytes(), "connection {i} dropped by {what}");
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The metrics listener keeps connections alive (HTTP/1.1): say that
    // this one ends with the answer, which is read to the end.
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn config_errors_name_file_line_and_column() {
    let d = tmpdir("errors");
    let cases = [
        ("unknown.toml", "backend = \"auto\"\n[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nstack = \"tcp\"\nhandler = \"echo\"\ncolour = \"blue\"\n", ":7:1:", "colour"),
        ("type.toml", "io_threads = \"many\"\n", ":1:14:", "invalid type"),
        ("addr.toml", "[metrics]\nlisten = \"nowhere\"\n", ":2:10:", "invalid address"),
        ("cert.toml", "[[service]]\nname = \"t\"\nlisten = \"127.0.0.1:1\"\nstack = \"tls\"\nhandler = \"echo\"\ncert = \"missing.pem\"\nkey = \"missing.key\"\n", ":6:8:", "file not found"),
        ("syntax.toml", "backend = \n", ":1:", ""),
    ];
    for (name, text, loc, reason) in cases {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        let (code, msg) = check(&p);
        assert_eq!(code, 2, "{name}: {msg}");
        assert!(
            msg.contains(&format!("{}{loc}", p.display())),
            "{name}: {msg}"
        );
        assert!(msg.contains(reason), "{name}: {msg}");
        // serve refuses the same file with the same error.
        let out = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&p)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
    }
    let ok = d.join("ok.toml");
    std::fs::write(&ok, "[[service]]\nname = \"e\"\nlisten = [\"127.0.0.1:1\", \"[::1]:1\"]\nstack = \"tcp\"\nhandler = \"echo\"\nidle_timeout = \"30s\"\n").unwrap();
    assert_eq!(check(&ok).0, 0);
    // Bad flags: one line, exit 2.
    let out = Command::new(BIN)
        .args(["serve", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

#[test]
fn default_config_serves_echo_websocket_and_metrics_with_notify() {
    let _g = serial();
    let d = tmpdir("default");
    let sock_path = d.join("notify.sock");
    let notify = UnixDatagram::bind(&sock_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let child = Command::new(BIN)
        .arg("serve")
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let srv = Server(child);
    let mut buf = [0u8; 4096];
    let n = notify.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.contains("READY=1"), "{msg}");
    // Everything is bound by the time READY=1 arrives.
    let _c = echo("127.0.0.1:7000", b"hello myriad");
    // WebSocket echo: a real upgrade and one masked text frame.
    let mut ws = TcpStream::connect("127.0.0.1:7001").unwrap();
    ws.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    ws.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut r = BufReader::new(ws.try_clone().unwrap());
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l == "\r\n" {
            break;
        }
    }
    let payload = b"ping";
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    ws.write_all(&frame).unwrap();
    let mut hdr = [0u8; 2];
    r.read_exact(&mut hdr).unwrap();
    assert_eq!(hdr, [0x81, 4]);
    let mut body = [0u8; 4];
    r.read_exact(&mut body).unwrap();
    assert_eq!(&body, b"ping");
    // The chat page.
    let page = http_get("127.0.0.1:7002", "/");
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("WebSocket"),
        "{page}"
    );
    // Metrics: Prometheus text, parsed.
    let m = http_get("127.0.0.1:9100", "/metrics");
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    let body = &m[m.find("\r\n\r\n").unwrap() + 4..];
    let mut accepted_echo = 0.0;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (lhs, v) = line.rsplit_once(' ').expect("sample line");
        let v: f64 = v.parse().expect("numeric sample");
        assert!(lhs.starts_with("myriad_"), "{line}");
        if lhs.starts_with("myriad_accepted_total{service=\"tcp-echo\"") {
            accepted_echo += v;
        }
    }
    assert_eq!(accepted_echo, 1.0);
    assert!(body.contains("myriad_connections_open{service=\"ws-echo\""));
    // the loops' queued bytes, a gauge per service and loop (scripts/soak
    // watches it)
    assert!(body.contains("# TYPE myriad_queued_bytes gauge"), "{body}");
    assert!(body.contains("myriad_queued_bytes{service=\"tcp-echo\",loop=\"0\"} "));
    // the chat room's dropped deliveries (none here); services that do
    // not broadcast have no such line
    assert!(
        body.contains("myriad_broadcast_dropped_total{service=\"ws-chat\"} 0"),
        "{body}"
    );
    assert!(!body.contains("myriad_broadcast_dropped_total{service=\"ws-echo\"}"));
    assert!(
        body.contains("myriad_write_queue_bytes_bucket{service=\"tcp-echo\",le=\"+Inf\"} 1"),
        "{body}"
    );
    assert!(http_get("127.0.0.1:9100", "/nope").starts_with("HTTP/1.1 404"));
    // myriad stats --once reads the same endpoint.
    let out = Command::new(BIN)
        .args(["stats", "--once"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("tcp-echo"), "{text}");
    // SIGTERM: STOPPING=1, WebSocket peers get close 1001, exit 0.
    let mut srv = srv;
    signal(&srv.0, "-TERM");
    let mut stopping = false;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if let Ok(n) = notify.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
                stopping = true;
                break;
            }
        }
    }
    assert!(stopping, "no STOPPING=1");
    let mut close = [0u8; 4];
    r.read_exact(&mut close).unwrap();
    assert_eq!(close[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1001);
    let status = srv.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn sighup_reload_keeps_connections_and_rejects_bad_config() {
    let _g = serial();
    let d = tmpdir("reload");
    let (p1, p2, pm) = (free_port(), free_port(), free_port());
    let cfg = d.join("myriad.toml");
    let one = format!(
        "[metrics]\nlisten = \"127.0.0.1:{pm}\"\n[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:{p1}\"\nstack = \"tcp\"\nhandler = \"echo\"\n"
    );
    std::fs::write(&cfg, &one).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let srv = Server(child);
    let a = format!("127.0.0.1:{p1}");
    let b = format!("127.0.0.1:{p2}");
    wait_port(&a);
    let mut held: Vec<TcpStream> = (0..10)
        .map(|i| echo(&a, format!("held {i}").as_bytes()))
        .collect();
    // A new service appears; the old one changes its limits.
    let two = format!("{one}max_connections = 1000\n[[service]]\nname = \"b\"\nlisten = \"127.0.0.1:{p2}\"\nstack = \"tcp\"\nhandler = \"echo\"\n");
    std::fs::write(&cfg, two).unwrap();
    signal(&srv.0, "-HUP");
    wait_port(&b);
    echo(&b, b"new service");
    echo(&a, b"changed service still accepts");
    still_echo(&mut held, "the reload");
    // A bad config is rejected and the running one stays.
    std::fs::write(&cfg, "this is = = not toml").unwrap();
    signal(&srv.0, "-HUP");
    std::thread::sleep(Duration::from_millis(500));
    echo(&a, b"old config still serves");
    echo(&b, b"and so does b");
    let m = http_get(&format!("127.0.0.1:{pm}"), "/metrics");
    assert!(m.contains("service=\"b\""), "{m}");
    // A reload that fails after starting an engine (`a` changes on its
    // old sockets, then `c` cannot bind): the started engine stops
    // accepting and drains, and `a` goes on serving every new client.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let three = format!(
        "{one}max_connections = 999\n[[service]]\nname = \"c\"\nlisten = \"{}\"\nstack = \"tcp\"\nhandler = \"echo\"\n",
        taken.local_addr().unwrap()
    );
    std::fs::write(&cfg, three).unwrap();
    signal(&srv.0, "-HUP");
    for i in 0..20 {
        echo(&a, format!("after a failed reload {i}").as_bytes());
        std::thread::sleep(Duration::from_millis(25));
    }
    still_echo(&mut held, "the failed reload");
    let m = http_get(&format!("127.0.0.1:{pm}"), "/metrics");
    assert!(!m.contains("service=\"c\""), "{m}");
    let mut srv = srv;
    signal(&srv.0, "-TERM");
    assert!(srv.0.wait().unwrap().success());
}

#[test]
fn unit_file_prints_and_verifies() {
    let d = tmpdir("unit");
    let cfg = d.join("my riad.toml");
    std::fs::write(&cfg, "").unwrap();
    let out = Command::new(BIN)
        .args(["service", "install", "--print", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let unit = String::from_utf8_lossy(&out.stdout).to_string();
    for needle in [
        "Type=notify",
        "LimitNOFILE=",
        "LimitMEMLOCK=",
        "Restart=on-failure",
        "ExecReload=",
        "WatchdogSec=",
        "DynamicUser=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "SystemCallArchitectures=native",
        "UMask=0077",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=io_uring_setup io_uring_enter io_uring_register",
        "riad.toml\"",
    ] {
        assert!(unit.contains(needle), "missing {needle}:\n{unit}");
    }
    // `--run-as` names the user instead of a dynamic one
    let out = Command::new(BIN)
        .args(["service", "install", "--print", "--run-as", "myriad"])
        .output()
        .unwrap();
    let named = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        named.contains("User=myriad") && !named.contains("DynamicUser"),
        "{named}"
    );
    // systemd-analyze verify and security, where the tool exists (CI
    // installs it).
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: unit checks skipped");
        return;
    }
    let p = d.join("myriad.service");
    std::fs::write(&p, &unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&p)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&p)
        .current_dir(&d)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for myriad.service:").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(
        exposure < 5.0,
        "exposure {exposure} (OK means below 5.0):\n{text}"
    );
    // Every system call the server makes (serving echo, WebSocket and
    // metrics on io_uring, then a SIGHUP and a SIGTERM) is allowed by the
    // unit's filter, so io_uring is not silently traded for epoll under
    // it. Run where strace exists (CI installs it).
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("strace not installed: system-call allow-list check skipped");
        return;
    }
    let _g = serial();
    let mut allowed = std::collections::HashSet::new();
    let mut groups = vec!["@system-service".to_owned()];
    while let Some(g) = groups.pop() {
        let out = Command::new("systemd-analyze")
            .args(["syscall-filter", &g])
            .output()
            .unwrap();
        for l in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
            let w = l.trim();
            if w.starts_with('@') {
                groups.push(w.to_owned());
            } else if !w.is_empty() && !w.starts_with('#') {
                allowed.insert(w.to_owned());
            }
        }
    }
    allowed.extend(["io_uring_setup", "io_uring_enter", "io_uring_register"].map(String::from));
    let trace = d.join("trace");
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=all", "-o"])
        .arg(&trace)
        .arg(BIN)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_port("127.0.0.1:9100");
    let _ = http_get("127.0.0.1:9100", "/metrics");
    drop(echo("127.0.0.1:7000", b"traced"));
    std::thread::sleep(Duration::from_millis(300));
    Command::new("pkill")
        .args(["-HUP", "-f", &format!("^{BIN} serve")])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    Command::new("pkill")
        .args(["-TERM", "-f", &format!("^{BIN} serve")])
        .status()
        .unwrap();
    let _ = child.wait();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut used = std::collections::BTreeSet::new();
    for l in text.lines() {
        // "PID name(args..." (resumed and signal lines skipped)
        let rest = l.split_once(' ').map_or(l, |(_, r)| r).trim_start();
        if let Some((name, _)) = rest.split_once('(') {
            if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.is_empty() {
                used.insert(name.to_owned());
            }
        }
    }
    assert!(
        used.contains("io_uring_setup"),
        "the server ran on io_uring: {used:?}\n{stderr}"
    );
    // the exec itself happens before the filter applies
    let denied: Vec<_> = used
        .iter()
        .filter(|n| !allowed.contains(*n) && *n != "execve")
        .collect();
    assert!(
        denied.is_empty(),
        "system calls the unit would refuse: {denied:?}"
    );
}

#[allow(dead_code)]
fn unused(_: SocketAddr) {}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

#[test]
fn workers_share_the_port_and_are_restarted() {
    let _g = serial();
    let d = tmpdir("workers");
    let p1 = free_port();
    // Worker i serves metrics on pm + i: find three free ports in a row.
    // Searched below the ephemeral range (32768 up): there, client sockets
    // of other tests in TIME-WAIT can hold the neighbours of a free port.
    let pm = (21_000..31_000u16)
        .step_by(7)
        .find(|&p| (0..3).all(|i| TcpListener::bind(("127.0.0.1", p + i)).is_ok()))
        .expect("three consecutive free ports");
    let cfg = d.join("myriad.toml");
    std::fs::write(
        &cfg,
        format!(
            "io_threads = 1\nworkers = 3\n[metrics]\nlisten = \"127.0.0.1:{pm}\"\n[[service]]\nname = \"e\"\nlisten = \"127.0.0.1:{p1}\"\nstack = \"tcp\"\nhandler = \"echo\"\n"
        ),
    )
    .unwrap();
    let sock_path = d.join("notify.sock");
    let notify = UnixDatagram::bind(&sock_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // No core files from the SIGABRT below: sh sets the limit, then execs
    // the server (same pid).
    let child = Command::new("sh")
        .args(["-c", "ulimit -c 0; exec \"$0\" \"$@\""])
        .arg(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut srv = Server(child);
    let mut buf = [0u8; 4096];
    // READY=1 comes once every worker is up (STATUS= lines may come first).
    let mut seen = Vec::new();
    for _ in 0..20 {
        let n = notify.recv(&mut buf).unwrap();
        let m = String::from_utf8_lossy(&buf[..n]).to_string();
        let ready = m.contains("READY=1");
        seen.push(m);
        if ready {
            break;
        }
    }
    assert!(seen.iter().any(|m| m.contains("READY=1")), "{seen:?}");
    let a = format!("127.0.0.1:{p1}");
    let conns: Vec<TcpStream> = (0..30)
        .map(|i| echo(&a, format!("w{i}").as_bytes()))
        .collect();
    // Every worker exposes its own metrics endpoint (worker i on pm + i);
    // together they saw all 30. Worker 0's, on pm itself, answers for the
    // whole server: every worker's samples, labelled by worker.
    let accepted_in = |m: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with("myriad_accepted_total"))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
            .sum()
    };
    let own: f64 = (1..3u16)
        .map(|i| accepted_in(&http_get(&format!("127.0.0.1:{}", pm + i), "/metrics")))
        .sum();
    let all = http_get(&format!("127.0.0.1:{pm}"), "/metrics");
    assert_eq!(accepted_in(&all), 30.0, "{all}");
    assert!(own <= 30.0);
    for w in 0..3 {
        assert!(
            all.contains(&format!("myriad_worker_up{{worker=\"{w}\"}} 1")),
            "{all}"
        );
        assert!(all.contains(&format!(
            "myriad_accepted_total{{worker=\"{w}\",service=\"e\""
        )));
    }
    assert_eq!(
        all.matches("# TYPE myriad_accepted_total counter").count(),
        1,
        "one family, all workers' samples in it"
    );
    // ready only while every worker is (each checked by worker 0)
    let t0 = Instant::now();
    while !http_get(&format!("127.0.0.1:{pm}"), "/readyz").starts_with("HTTP/1.1 200") {
        assert!(t0.elapsed() < Duration::from_secs(10), "readyz never 200");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(conns);
    // Kill one worker: the supervisor starts another.
    let kids = children(srv.0.id());
    assert_eq!(kids.len(), 3, "{kids:?}");
    Command::new("kill")
        .args(["-KILL", &kids[0].to_string()])
        .status()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let now = children(srv.0.id());
        if now.len() == 3 && !now.contains(&kids[0]) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "worker not restarted: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..10 {
        echo(&a, format!("after restart {i}").as_bytes());
    }
    // A crash (a plugin's abort, say) in another worker: restarted too.
    // (Not SIGSEGV from kill(1): std's stack-overflow handler survives a
    // SIGSEGV that comes without a fault.)
    Command::new("kill")
        .args(["-ABRT", &kids[1].to_string()])
        .status()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let now = children(srv.0.id());
        if now.len() == 3 && !now.contains(&kids[1]) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "crashed worker not restarted: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..10 {
        echo(&a, format!("after crash {i}").as_bytes());
    }
    signal(&srv.0, "-TERM");
    assert!(srv.0.wait().unwrap().success());
    assert!(children(srv.0.id()).is_empty());
    // The supervisor's private relay directory is gone with it.
    let relay = format!("myriad-supervisor-{}-", srv.0.id());
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&relay))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn tls_and_wss_stacks() {
    let _g = serial();
    let d = tmpdir("tls");
    self_signed_cert(&d);
    let (pt, pw, pm) = (free_port(), free_port(), free_port());
    let cfg = d.join("tls.toml");
    std::fs::write(
        &cfg,
        format!(
            "[metrics]\nlisten = \"127.0.0.1:{pm}\"\n[[service]]\nname = \"t\"\nlisten = \"127.0.0.1:{pt}\"\nstack = \"tls\"\nhandler = \"echo\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\
             [[service]]\nname = \"w\"\nlisten = \"127.0.0.1:{pw}\"\nstack = \"wss\"\nhandler = \"ws-echo\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n"
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut srv = Server(child);
    wait_port(&format!("127.0.0.1:{pt}"));
    wait_port(&format!("127.0.0.1:{pw}"));
    let script = r#"
import socket, ssl, sys
ca, pt, pw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", pt), timeout=10), server_hostname="localhost")
s.sendall(b"over tls"); got = b""
while len(got) < 8: got += s.recv(64)
print("TLS", got.decode())
w = ctx.wrap_socket(socket.create_connection(("127.0.0.1", pw), timeout=10), server_hostname="localhost")
w.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
r = b""
while b"\r\n\r\n" not in r: r += w.recv(1024)
head, _, rest = r.partition(b"\r\n\r\n")
mask = b"\x01\x02\x03\x04"; p = b"over wss"
w.sendall(bytes([0x81, 0x80 | len(p)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(p)))
while len(rest) < 2 + len(p): rest += w.recv(64)
print("WSS", head.split(b"\r\n")[0].decode(), rest[2:2 + len(p)].decode())
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(d.join("cert.pem"))
        .args([pt.to_string(), pw.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("TLS over tls"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("WSS HTTP/1.1 101 Switching Protocols over wss"),
        "{text}"
    );
    // One full handshake on each service, counted in the metrics.
    let m = http_get(&format!("127.0.0.1:{pm}"), "/metrics");
    for svc in ["t", "w"] {
        assert!(
            m.contains(&format!(
                "myriad_tls_handshakes_total{{service=\"{svc}\",kind=\"full\"}} 1\n"
            )),
            "{m}"
        );
        assert!(
            m.contains(&format!(
                "myriad_tls_handshakes_total{{service=\"{svc}\",kind=\"resumed\"}} 0\n"
            )),
            "{m}"
        );
    }
    signal(&srv.0, "-TERM");
    assert!(srv.0.wait().unwrap().success());
}

// ---- the worker supervisor: watchdog, signals while starting, crash loops,
// its own death ----

/// A config with one echo service on a free port and no metrics listener.
fn echo_config(d: &Path) -> (PathBuf, String) {
    let port = free_port();
    let cfg = d.join("myriad.toml");
    std::fs::write(
        &cfg,
        format!("io_threads = 1\n[[service]]\nname = \"e\"\nlisten = \"127.0.0.1:{port}\"\nstack = \"tcp\"\nhandler = \"echo\"\n"),
    )
    .unwrap();
    (cfg, format!("127.0.0.1:{port}"))
}

fn notify_socket(d: &Path) -> (UnixDatagram, PathBuf) {
    let p = d.join("notify.sock");
    let s = UnixDatagram::bind(&p).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    (s, p)
}

/// Messages from the notify socket until one contains `needle`, for at most
/// `bound`; every message seen on the way is kept in `seen`.
fn wait_msg(s: &UnixDatagram, needle: &str, bound: Duration, seen: &mut Vec<String>) -> bool {
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    while t0.elapsed() < bound {
        if let Ok(n) = s.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).to_string();
            let hit = m.lines().any(|l| l == needle);
            seen.push(m);
            if hit {
                return true;
            }
        }
    }
    false
}

fn kill_pid(pid: u32, sig: &str) {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
}

/// The process has a handler for signal `signo` (SigCgt in /proc).
fn catches(pid: u32, signo: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|m| m & (1 << (signo - 1)) != 0)
}

/// The process is gone, or a zombie nobody reaps (as under a PID 1 that
/// does not reap).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).to_string())
        .collect()
}

/// Waits (bounded) for the supervisor to have `n` workers, returns them.
fn wait_children(sup: u32, n: usize) -> Vec<u32> {
    let t0 = Instant::now();
    loop {
        let kids = children(sup);
        if kids.len() == n {
            return kids;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "expected {n} workers: {kids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the relay directory a SIGKILLed supervisor leaves behind.
#[test]
fn supervisor_feeds_the_watchdog_and_replaces_a_hung_worker() {
    let _g = serial();
    let d = tmpdir("watchdog");
    let (cfg, addr) = echo_config(&d);
    let (notify, sock_path) = notify_socket(&d);
    // WATCHDOG_PID must be the server's own pid: sh execs it, keeping $$.
    let child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
        .arg(BIN)
        .args(["serve", "--workers", "2", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut srv = Server(child);
    let sup = srv.0.id();
    let mut seen = Vec::new();
    assert!(
        wait_msg(&notify, "READY=1", Duration::from_secs(30), &mut seen),
        "{seen:?}"
    );
    assert!(
        wait_msg(&notify, "WATCHDOG=1", Duration::from_secs(5), &mut seen),
        "no WATCHDOG=1: {seen:?}"
    );
    echo(&addr, b"fed");
    // Workers keep their own watchdog on the relay, not the supervisor's.
    let kids = wait_children(sup, 2);
    for k in &kids {
        let env = environ(*k);
        assert!(env.iter().any(|v| v == "WATCHDOG_USEC=2000000"), "{env:?}");
        assert!(
            !env.iter().any(|v| v.starts_with("WATCHDOG_PID=")),
            "{env:?}"
        );
        assert!(!env.contains(&format!("NOTIFY_SOCKET={}", sock_path.display())));
    }
    // A hung worker: alive, silent. The supervisor kills and replaces it
    // and feeds the watchdog all along.
    kill_pid(kids[0], "-STOP");
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    let replaced = loop {
        let _ = notify.recv(&mut buf);
        let now = children(sup);
        if now.len() == 2 && !now.contains(&kids[0]) && now.contains(&kids[1]) {
            break now;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "hung worker not replaced: {now:?}"
        );
    };
    assert!(exited(kids[0]), "the hung worker is still there");
    // Feeding goes on: two more pings (one per second) with the new worker.
    let mut after = Vec::new();
    for _ in 0..2 {
        assert!(
            wait_msg(&notify, "WATCHDOG=1", Duration::from_secs(5), &mut after),
            "feeding stopped after the replacement: {after:?}"
        );
    }
    assert!(srv.0.try_wait().unwrap().is_none(), "supervisor exited");
    // The replacement serves (SO_REUSEPORT spreads connections over both).
    let new = replaced.iter().find(|p| **p != kids[1]).copied().unwrap();
    let t1 = Instant::now();
    while !catches(new, 1) {
        assert!(
            t1.elapsed() < Duration::from_secs(20),
            "replacement never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..20 {
        echo(&addr, format!("after hang {i}").as_bytes());
    }
    signal(&srv.0, "-TERM");
    assert!(srv.0.wait().unwrap().success());
}

#[test]
fn sighup_while_starting_kills_nothing_and_ready_comes_after_the_handler() {
    let _g = serial();
    let d = tmpdir("early-hup");
    let (cfg, addr) = echo_config(&d);
    let (notify, sock_path) = notify_socket(&d);
    let child = Command::new(BIN)
        .args(["serve", "--workers", "2", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut srv = Server(child);
    let sup = srv.0.id();
    // Once the supervisor handles SIGHUP, hammer it while the workers start.
    let t0 = Instant::now();
    while !catches(sup, 1) {
        assert!(t0.elapsed() < Duration::from_secs(20), "no SIGHUP handler");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut pids = std::collections::BTreeSet::new();
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    notify
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    loop {
        kill_pid(sup, "-HUP");
        pids.extend(children(sup));
        if let Ok(n) = notify.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no READY=1 (supervisor: {:?})",
            srv.0.try_wait()
        );
    }
    // Every worker reported ready with its SIGHUP handler in place.
    let kids = wait_children(sup, 2);
    for k in &kids {
        assert!(
            catches(*k, 1),
            "worker {k} was ready without a SIGHUP handler"
        );
    }
    pids.extend(kids.iter().copied());
    assert_eq!(pids.len(), 2, "a worker died and was replaced: {pids:?}");
    // Direct SIGHUPs to the ready workers are reloads too.
    for k in &kids {
        kill_pid(*k, "-HUP");
    }
    kill_pid(sup, "-HUP");
    for i in 0..10 {
        echo(&addr, format!("after hup {i}").as_bytes());
    }
    let mut now = children(sup);
    now.sort_unstable();
    let mut kids = kids;
    kids.sort_unstable();
    assert_eq!(now, kids, "a worker died of SIGHUP");
    assert!(srv.0.try_wait().unwrap().is_none());
    signal(&srv.0, "-TERM");
    assert!(srv.0.wait().unwrap().success());
    // A single process, too, reports READY=1 with its handler installed.
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut srv = Server(child);
    let mut seen = Vec::new();
    assert!(
        wait_msg(&notify, "READY=1", Duration::from_secs(30), &mut seen),
        "{seen:?}"
    );
    assert!(catches(srv.0.id(), 1), "READY=1 before the SIGHUP handler");
    signal(&srv.0, "-TERM");
    assert!(srv.0.wait().unwrap().success());
}

#[test]
fn supervisor_gives_up_on_workers_that_fail_before_ready() {
    let _g = serial();
    let d = tmpdir("giveup");
    let (cfg, addr) = echo_config(&d);
    // The port is taken (without SO_REUSEPORT): every worker fails to bind.
    let _taken = TcpListener::bind(&addr).unwrap();
    let log = std::fs::File::create(d.join("stderr")).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--workers", "2", "--config"])
        .arg(&cfg)
        .stderr(log)
        .spawn()
        .unwrap();
    let mut srv = Server(child);
    let sup = srv.0.id();
    let mut workers = std::collections::BTreeSet::new();
    let t0 = Instant::now();
    let status = loop {
        workers.extend(children(sup));
        if let Some(s) = srv.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "supervisor still retrying"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let err = std::fs::read_to_string(d.join("stderr")).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("the supervisor stopped"), "{err}");
    for w in workers {
        assert!(exited(w), "worker {w} outlived the supervisor");
    }
}

#[test]
fn workers_exit_when_the_supervisor_is_killed() {
    let _g = serial();
    let d = tmpdir("orphans");
    let (cfg, addr) = echo_config(&d);
    let (notify, sock_path) = notify_socket(&d);
    let child = Command::new(BIN)
        .args(["serve", "--workers", "2", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut srv = Server(child);
    let sup = srv.0.id();
    let mut seen = Vec::new();
    assert!(
        wait_msg(&notify, "READY=1", Duration::from_secs(30), &mut seen),
        "{seen:?}"
    );
    echo(&addr, b"up");
    let kids = wait_children(sup, 2);
    kill_pid(sup, "-KILL");
    let _ = srv.0.wait();
    let t0 = Instant::now();
    while !kids.iter().all(|k| exited(*k)) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "workers outlived the supervisor: {kids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Half-sent requests cannot lock scrapes out of `/metrics`: the oldest
/// waiting request is dropped past a small bound, and a request that does
/// not arrive in time is answered 408 (the deadline does not move with
/// trickled bytes).
#[test]
fn metrics_survive_slowloris() {
    let _g = serial();
    let d = tmpdir("slowloris");
    let (port, mport) = (free_port(), free_port());
    let cfg = d.join("myriad.toml");
    std::fs::write(
        &cfg,
        format!("io_threads = 1\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n[[service]]\nname = \"e\"\nlisten = \"127.0.0.1:{port}\"\nstack = \"tcp\"\nhandler = \"echo\"\n"),
    )
    .unwrap();
    let _srv = Server(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let maddr = format!("127.0.0.1:{mport}");
    wait_port(&maddr);
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(&maddr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        held.push(s);
    }
    let body = http_get(&maddr, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body:.200}");
    assert!(body.contains("myriad_accepted_total"));
    // a trickling request is cut off at the deadline
    let mut slow = TcpStream::connect(&maddr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let t0 = Instant::now();
    let mut answer = String::new();
    for b in b"GET /metrics HTTP/1.1\r\nHost: x".iter().cycle().take(200) {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut buf = [0u8; 256];
        slow.set_nonblocking(true).unwrap();
        if let Ok(n) = slow.read(&mut buf) {
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        slow.set_nonblocking(false).unwrap();
        if !answer.is_empty() {
            break;
        }
    }
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "{answer:?} after {:?}",
        t0.elapsed()
    );
}

/// Logs written to a file (or journald) carry no ANSI colour codes; a
/// configuration that serves nothing is refused by `serve` and warned
/// about by `check`.
#[test]
fn plain_logs_and_empty_config() {
    let _g = serial();
    let d = tmpdir("plainlog");
    let (cfg, addr) = echo_config(&d);
    let log = d.join("log");
    let srv = Server(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_port(&addr);
    drop(srv);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("myriad starting"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a file: {text:?}");

    let empty = d.join("empty.toml");
    std::fs::write(&empty, "# nothing\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [[service]]"));
    let (code, err) = check(&empty);
    assert_eq!(code, 0);
    assert!(err.contains("warning: no [[service]]"), "{err}");
}

/// Twenty reloads that each replace the service's engine, under a steady
/// stream of new connections and with some held across reloads: no
/// connection is refused, reset or left unanswered (the new engine takes the old one's
/// listening sockets, so nothing waiting in an accept queue is dropped),
/// held connections keep being served by their old engine, and the
/// process's threads stay bounded (draining generations are capped).
#[test]
fn reloads_under_connect_load_lose_nothing() {
    let _g = serial();
    let d = tmpdir("reload20");
    let port = free_port();
    let cfg = d.join("myriad.toml");
    let write_cfg = |gen: u32| {
        std::fs::write(
            &cfg,
            format!(
                "io_threads = 2\nshutdown_grace = \"1s\"\n[[service]]\nname = \"e\"\nlisten = [\"127.0.0.1:{port}\", \"[::1]:{port}\"]\nstack = \"tcp\"\nhandler = \"echo\"\n# a different idle timeout makes every reload replace the engine\nidle_timeout = \"{}s\"\n",
                600 + gen
            ),
        )
        .unwrap();
    };
    write_cfg(0);
    let srv = Server(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .stderr(std::fs::File::create(d.join("log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let addr = format!("127.0.0.1:{port}");
    wait_port(&addr);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The load goes over IPv6: its tens of thousands of client sockets
    // stay in TIME-WAIT for a minute, and on ::1 they cannot keep the other
    // tests from binding IPv4 loopback ports.
    let load = {
        let (stop, addr) = (stop.clone(), format!("[::1]:{port}"));
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && ok < 200_000 {
                let r = (|| -> std::io::Result<()> {
                    let mut s = TcpStream::connect(&addr)?;
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    s.write_all(b"ping")?;
                    let mut b = [0u8; 4];
                    s.read_exact(&mut b)?;
                    if &b != b"ping" {
                        return Err(std::io::Error::other("wrong echo"));
                    }
                    Ok(())
                })();
                // A stalled connection (no answer within 10 s: left in
                // an accept queue) fails like a refusal or a reset.
                match r {
                    Ok(()) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        })
    };
    let mut held = Vec::new();
    for gen in 1..=20u32 {
        let h = TcpStream::connect(&addr).unwrap();
        h.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        held.push(h);
        write_cfg(gen);
        kill_pid(srv.0.id(), "-HUP");
        std::thread::sleep(Duration::from_millis(150));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} connections failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "the load ran: {ok}");
    // the most recent held connections are still served (older
    // generations past the cap were shut down with their grace)
    let n = held.len();
    still_echo(&mut held[n - 3..], "the reloads");
    let threads = std::fs::read_dir(format!("/proc/{}/task", srv.0.id()))
        .unwrap()
        .count();
    // main + signals + metrics-less: 2 loops per engine, at most 1 running
    // + 4 draining generations (+ their pools and helpers)
    assert!(threads <= 24, "{threads} threads after 20 reloads");
    let log = std::fs::read_to_string(d.join("log")).unwrap();
    assert_eq!(log.matches("configuration reloaded").count(), 20, "{log}");
}
