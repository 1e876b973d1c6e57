//! Smoke tests of the benchmark programs: short, over loopback, a few
//! seconds in all. They check that the programs work together, not speed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "{bin} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Guard(child), addr)
}

fn loadgen(addr: &str, conns: &str, size: &str, window: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
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
