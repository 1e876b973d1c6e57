//! Running out of descriptors: `accept` failing with EMFILE must neither
//! spin nor drop the listener. The engine pauses accepting, counts it, and
//! resumes when a descriptor frees.
//!
//! One test in its own binary: it lowers this process's open-files limit.
//! The clients live in a child process (Python) so that they do not count
//! against it.

mod common;

use common::*;
use myriad::BackendKind;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const CLIENT: &str = r#"
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = []
for i in range(n):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"x")
    socks.append(s)
def answered(ss, wait):
    ok = []
    end = time.time() + wait
    for s in ss:
        s.settimeout(max(0.01, end - time.time()))
        try:
            ok.append(s.recv(1) == b"x")
        except OSError:
            ok.append(False)
    return ok
first = answered(socks, 2.0)
print("FIRST", sum(first), flush=True)
sys.stdin.readline()
# Free descriptors on the server: close the answered connections.
rest = [s for s, a in zip(socks, first) if not a]
for s, a in zip(socks, first):
    if a: s.close()
later = answered(rest, 10.0)
print("LATER", sum(later), len(rest), flush=True)
"#;

/// CPU seconds of this process, read through a descriptor opened before
/// the limit bites (opening one later would fail with EMFILE).
fn cpu_secs(stat: &std::fs::File) -> f64 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 1024];
    let n = stat.read_at(&mut b, 0).unwrap();
    let s = String::from_utf8_lossy(&b[..n]).to_string();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn run(kind: BackendKind) {
    let stat = std::fs::File::open("/proc/self/stat").unwrap();
    let (engine, addr) = echo_engine(kind, 1);
    // The child inherits our lowered limit: raise its own back first.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "ulimit -n 4096; exec python3 -c \"$0\" \"$@\"",
            CLIENT,
        ])
        .args([&addr.ip().to_string(), &addr.port().to_string(), "60"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let cpu0 = cpu_secs(&stat);
    out.read_line(&mut line).unwrap();
    let first: usize = match line.trim().strip_prefix("FIRST ") {
        Some(n) => n.parse().unwrap(),
        None => panic!("client said {line:?}"),
    };
    // Paused, not spinning: with EMFILE pending, a level-triggered or
    // re-armed accept that did not pause would burn a core meanwhile.
    std::thread::sleep(Duration::from_millis(1000));
    let spent = cpu_secs(&stat) - cpu0;
    assert!(
        first > 0 && first < 60,
        "{kind:?}: {first} of 60 answered; the limit did not bite"
    );
    assert!(engine.stats().err_accept >= 1, "{:?}", engine.stats());
    assert!(
        spent < 1.5,
        "{kind:?}: {spent:.2}s of CPU in ~3s while out of descriptors: spinning"
    );
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let parts: Vec<usize> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(
        parts[0], parts[1],
        "{kind:?}: after descriptors freed, {} of {} answered",
        parts[0], parts[1]
    );
    let _ = child.wait();
}

#[test]
fn accept_pauses_on_emfile_and_resumes() {
    // Descriptors in use now, plus room for the engine's own (rings,
    // eventfds, listeners) and ~20 connections.
    let used = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let old = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(used + 40),
            maximum: old.maximum,
        },
    )
    .unwrap();
    run(BackendKind::Epoll);
    run(BackendKind::IoUring);
    setrlimit(Resource::Nofile, old).unwrap();
}
