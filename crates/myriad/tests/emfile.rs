//! Running out of descriptors: `accept` failing with EMFILE must neither
//! spin, drop the listener nor leave clients hanging. The engine accepts
//! and closes the waiting connections with a reserve descriptor, pauses
//! accepting, counts both, and serves new clients when descriptors free.
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
def dial(k):
    ss = []
    for i in range(k):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"x")
        ss.append(s)
    return ss
def fate(ss, wait):
    # per socket: "ok" (echoed), "closed" (EOF or reset), "hang" (nothing)
    out = []
    end = time.time() + wait
    for s in ss:
        s.settimeout(max(0.01, end - time.time()))
        try:
            b = s.recv(1)
            out.append("ok" if b == b"x" else "closed")
        except socket.timeout:
            out.append("hang")
        except OSError:
            out.append("closed")
    return out
socks = dial(n)
first = fate(socks, 3.0)
print("FIRST", first.count("ok"), first.count("closed"), first.count("hang"), flush=True)
sys.stdin.readline()
# Free descriptors on the server, then new clients must be served.
for s in socks:
    s.close()
time.sleep(0.5)
later = fate(dial(10), 10.0)
print("LATER", later.count("ok"), later.count("closed"), later.count("hang"), flush=True)
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

/// `"WHAT a b c"` as `[a, b, c]`.
fn counts(line: &str, what: &str) -> [usize; 3] {
    let Some(rest) = line.trim().strip_prefix(what) else {
        panic!("client said {line:?}");
    };
    let v: Vec<usize> = rest
        .split_whitespace()
        .map(|v| v.parse().expect("a count"))
        .collect();
    [v[0], v[1], v[2]]
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
    let first = counts(&line, "FIRST");
    // Paused, not spinning: with EMFILE pending, a level-triggered or
    // re-armed accept that did not pause would burn a core meanwhile.
    std::thread::sleep(Duration::from_millis(1000));
    let spent = cpu_secs(&stat) - cpu0;
    assert!(
        first[0] > 0 && first[0] < 60,
        "{kind:?}: {} of 60 answered; the limit did not bite",
        first[0]
    );
    // Out of descriptors, the waiting clients are accepted and closed
    // with the reserve descriptor: none is left hanging in the backlog.
    assert_eq!(first[2], 0, "{kind:?}: {first:?} (ok, closed, hanging)");
    let st = engine.stats();
    assert!(st.err_accept >= 1, "{st:?}");
    assert_eq!(st.refused_fd_limit as usize, first[1], "{st:?}");
    assert!(
        spent < 1.5,
        "{kind:?}: {spent:.2}s of CPU in ~3s while out of descriptors: spinning"
    );
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let later = counts(&line, "LATER");
    assert_eq!(
        later,
        [10, 0, 0],
        "{kind:?}: after descriptors freed, new clients (ok, closed, hanging)"
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
