//! Native plugins in the `myriad` server, end to end: the example plugins
//! (Rust and C) built from source here, every shape and framing, the host
//! calls, side-by-side versions, reload with a rebuilt library, and the
//! fault cases (bad return values, panics, crashes, init failures, ABI
//! versions).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::Duration;

mod common;

use common::plugin::*;
use common::{free_port, serial, tmpdir, BIN, ROOT};

/// Builds the example plugins once per test run into a folder of this
/// test's own: C ones with the system compiler, Rust ones with cargo in a
/// target directory of their own (the outer `cargo test` holds the main
/// one's lock).
fn plugins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(ROOT);
        let out = root.join("target/plugin-tests");
        std::fs::create_dir_all(&out).unwrap();
        for (src, lib) in [
            ("echo-c/echo.c", "libecho_c.so"),
            ("chat-c/chat.c", "libchat_c.so"),
            ("crash-c/crash.c", "libcrash_c.so"),
            ("abi-old-c/old.c", "libabi_old_c.so"),
            ("abi-major-c/major.c", "libabi_major_c.so"),
        ] {
            cc(
                &root.join("examples/plugins").join(src),
                &out.join(lib),
                &[],
            );
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let st = Command::new(cargo)
            .current_dir(root)
            .args([
                "build",
                "--quiet",
                "-p",
                "echo-rust",
                "-p",
                "kv-rust",
                "-p",
                "probe-rust",
            ])
            .arg("--target-dir")
            .arg(out.join("cargo"))
            .status()
            .expect("cargo runs");
        assert!(st.success(), "the Rust example plugins build");
        for lib in ["libecho_rust.so", "libkv_rust.so", "libprobe_rust.so"] {
            std::fs::copy(out.join("cargo/debug").join(lib), out.join(lib)).unwrap();
        }
        out
    })
}

/// Compiles a C plugin (installed by rename, as `scripts/build-plugins`
/// does: a running server may have the old file mapped).
fn cc(src: &Path, out: &Path, defines: &[&str]) {
    let tmp = out.with_extension("tmp");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let st = Command::new(&cc)
        .args([
            "-O2", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror", "-I",
        ])
        .arg(Path::new(ROOT).join("crates/myriad-plugin/include"))
        .args(defines)
        .arg("-o")
        .arg(&tmp)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("{cc} runs: {e}"));
    assert!(st.success(), "{} compiles", src.display());
    std::fs::rename(&tmp, out).unwrap();
}

/// `myriad check --config path`: its exit code and standard error.
fn check(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lib(name: &str) -> String {
    plugins().join(name).display().to_string()
}

/// A line client for message plugins with `framing = "line"`.
struct Lines(BufReader<TcpStream>);

impl Lines {
    fn new(port: u16) -> Lines {
        Lines(BufReader::new(connect(port)))
    }

    fn ask(&mut self, line: &str) -> String {
        self.0
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.read()
    }

    fn read(&mut self) -> String {
        let mut s = String::new();
        self.0.read_line(&mut s).unwrap();
        s.trim_end().to_owned()
    }

    /// Whether the server closed the connection (EOF or reset).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0) | Err(_))
    }
}

#[test]
fn rust_and_c_echo_kv_and_probe_host_calls() {
    let _g = serial();
    let d = tmpdir("basic");
    let (pr, pc, pk, pl, pp, pm) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let cfg = format!(
        "io_threads = 2\n[metrics]\nlisten = \"127.0.0.1:{pm}\"\n{}{}{}{}{}",
        tcp_service("echo-rust", pr, &lib("libecho_rust.so"), ""),
        tcp_service("echo-c", pc, &lib("libecho_c.so"), ""),
        tcp_service(
            "kv",
            pk,
            &lib("libkv_rust.so"),
            "framing = \"line\"\n[service.plugin_config]\nmax_keys = 2"
        ),
        tcp_service("kv-lp32", pl, &lib("libkv_rust.so"), "framing = \"lp32\""),
        tcp_service(
            "probe",
            pp,
            &lib("libprobe_rust.so"),
            "framing = \"line\"\npool_threads = 1"
        ),
    );
    let srv = Server::start(&d, &cfg, &[pr, pc, pk, pl, pp, pm]);

    // stream echoes, byte by byte and in bulk
    for port in [pr, pc] {
        let mut s = connect(port);
        roundtrip(&mut s, b"a");
        roundtrip(&mut s, &vec![7u8; 200_000]);
    }

    // kv over lines: shared by the service's connections, bounded by config
    let mut a = Lines::new(pk);
    let mut b = Lines::new(pk);
    assert_eq!(a.ask("SET k1 v1"), "OK");
    assert_eq!(b.ask("GET k1"), "VALUE v1");
    assert_eq!(b.ask("SET k2 v2"), "OK");
    assert_eq!(a.ask("SET k3 v3"), "ERR store full");
    assert_eq!(a.ask("GET nope"), "NOT_FOUND");
    // two commands in one segment, and one cut in the middle
    a.0.get_mut().write_all(b"COUNT\nGET k").unwrap();
    assert_eq!(a.read(), "COUNT 2");
    std::thread::sleep(Duration::from_millis(50));
    a.0.get_mut().write_all(b"2\n").unwrap();
    assert_eq!(a.read(), "VALUE v2");

    // the same plugin with lp32 framing: a length prefix both ways
    let mut l = connect(pl);
    let cmd = b"SET x 42";
    let mut frame = (cmd.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(cmd);
    frame.extend_from_slice(&[0, 0, 0, 5]);
    frame.extend_from_slice(b"GET x");
    l.write_all(&frame).unwrap();
    let mut back = [0u8; 4 + 2 + 4 + 8];
    l.read_exact(&mut back).unwrap();
    assert_eq!(&back[..], b"\0\0\0\x02OK\0\0\0\x08VALUE 42");

    // every host call of the probe
    let mut p = Lines::new(pp);
    assert_eq!(p.ask("ECHO hi there"), "hi there");
    let addrs = p.ask("ADDR");
    let local = p.0.get_ref().local_addr().unwrap().to_string();
    assert_eq!(addrs, format!("{local} 127.0.0.1:{pp}"));
    assert_ne!(p.ask("ID"), "0");
    assert_eq!(p.ask("CANCEL 1"), "cancelled");
    assert_eq!(p.ask("TIMER 20"), "tick", "the cancelled timer never fires");
    // several timers fire in the order they are due, not the order set
    assert_eq!(p.ask("TIMERS 60 20 40"), "tick 1");
    assert_eq!(p.read(), "tick 2");
    assert_eq!(p.read(), "tick 0");
    // "never" neither fires nor wraps the loop's clock into a timer due
    // at once (nor, in a debug build, overflows inside a host call)
    assert_eq!(p.ask("NEVER"), "never");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(p.ask("ECHO still"), "still");
    // a timer re-armed 100,000 times (a timeout re-armed per message)
    // holds one entry of the loop's timer heap, not one per re-arm
    let timers = |m: &str| -> u64 {
        m.lines()
            .filter(|l| l.starts_with("myriad_timers{service=\"probe\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let before = timers(&metrics(pm));
    assert_eq!(p.ask("REARM 100000 60000"), "rearmed");
    let after = timers(&metrics(pm));
    assert!(after <= before + 2, "timer entries {before} -> {after}");
    assert_eq!(p.ask("REARM 1 30"), "rearmed");
    assert_eq!(
        p.read(),
        "tick",
        "the re-armed timer fires once, at its last due time"
    );
    // a zero-delay timer set again from its own on_timer, forever, does
    // not hold the loop in its timer pass: the next command is answered
    // (both the host's rounding to the engine's next millisecond and the
    // engine's deferral of timers set already due within a timer pass
    // prevent the loop firing it again in the same pass, for ever)
    let mut s = Lines::new(pp);
    s.0.get_mut().write_all(b"SPIN\r\n").unwrap();
    assert_eq!(s.read(), "spin");
    s.0.get_mut().write_all(b"ECHO served\r\n").unwrap();
    let mut spins = 1;
    loop {
        match s.read().as_str() {
            "spin" => spins += 1,
            "served" => break,
            other => panic!("unexpected {other:?}"),
        }
        assert!(spins < 100_000, "the echo never came");
    }
    drop(s);
    assert_eq!(p.ask("BLOCK 21"), "done 42");
    assert_eq!(p.ask("COUNT greetings"), "counted");
    assert_eq!(p.ask("COUNT bad name!"), "refused");
    assert_eq!(p.ask("LOG hello from the probe"), "logged");
    srv.wait_log("hello from the probe");
    assert_eq!(p.ask("CLOSE"), "bye");
    assert!(p.closed());

    let m = metrics(pm);
    assert!(
        m.contains("myriad_plugin_events_total{service=\"probe\",plugin=\"probe-rust\",name=\"greetings\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("myriad_plugin_events_total{service=\"kv\",plugin=\"kv-rust\",name=\"set\"} 2"),
        "{m}"
    );
}

#[test]
fn faults_cost_one_connection_and_are_counted() {
    let _g = serial();
    let d = tmpdir("faults");
    let (pc, pp, pm) = (free_port(), free_port(), free_port());
    let cfg = format!(
        "io_threads = 1\n[metrics]\nlisten = \"127.0.0.1:{pm}\"\n{}{}",
        tcp_service("crash", pc, &lib("libcrash_c.so"), ""),
        tcp_service(
            "probe",
            pp,
            &lib("libprobe_rust.so"),
            "framing = \"line\"\nmax_message = \"1KiB\""
        ),
    );
    let _srv = Server::start(&d, &cfg, &[pc, pp, pm]);
    let mut bystander = connect(pc);
    roundtrip(&mut bystander, b"before");
    let mut probe = Lines::new(pp);
    assert_eq!(probe.ask("ECHO before"), "before");

    // consumed > len: that connection is closed, counted as plugin_error
    let mut bad = connect(pc);
    bad.write_all(b"BADLEN").unwrap();
    let mut b = [0u8; 16];
    assert!(matches!(bad.read(&mut b), Ok(0) | Err(_)));
    // a panic in a Rust plugin: caught at the boundary, plugin_panic
    let mut p = Lines::new(pp);
    p.0.get_mut().write_all(b"PANIC\n").unwrap();
    assert!(p.closed());
    // a line over max_message: message_too_large
    let mut long = Lines::new(pp);
    let _ = long.0.get_mut().write_all(&vec![b'x'; 4096]);
    assert!(long.closed());

    roundtrip(&mut bystander, b"after");
    assert_eq!(probe.ask("ECHO after"), "after");
    let m = metrics(pm);
    for line in [
        "myriad_plugin_faults_total{service=\"crash\",plugin=\"crash-c\",kind=\"plugin_error\"} 1",
        "myriad_plugin_faults_total{service=\"probe\",plugin=\"probe-rust\",kind=\"plugin_panic\"} 1",
        "myriad_plugin_faults_total{service=\"probe\",plugin=\"probe-rust\",kind=\"message_too_large\"} 1",
    ] {
        assert!(m.contains(line), "{line} missing:\n{m}");
    }
}

#[test]
fn init_failures_abi_versions_and_check() {
    let _g = serial();
    let d = tmpdir("init");
    let port = free_port();
    // init refuses: serve exits 2 with the plugin's reason
    let cfg = tcp_service(
        "crash",
        port,
        &lib("libcrash_c.so"),
        "[service.plugin_config]\nfail_init = true",
    );
    let path = d.join("bad.toml");
    std::fs::write(&path, format!("io_threads = 1\n{cfg}")).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("init refused by config"), "{err}");
    // check names the plugin key's place
    let (code, err) = check(&path);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:7:10: service \"crash\"", path.display())),
        "{err}"
    );
    assert!(err.contains("init refused by config"), "{err}");

    // another major version: refused, naming the file and both versions
    let major = lib("libabi_major_c.so");
    std::fs::write(
        &path,
        format!("io_threads = 1\n{}", tcp_service("m", port, &major, "")),
    )
    .unwrap();
    let (code, err) = check(&path);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&major) && err.contains("ABI version 2.0") && err.contains("ABI 1.0"),
        "{err}"
    );

    // not a plugin at all
    let not = d.join("not.so");
    std::fs::write(&not, b"not an ELF file").unwrap();
    std::fs::write(
        &path,
        format!(
            "io_threads = 1\n{}",
            tcp_service("n", port, &not.display().to_string(), "")
        ),
    )
    .unwrap();
    let (code, err) = check(&path);
    assert_eq!(code, Some(2), "{err}");

    // a shape that does not fit the stack
    let wrong = format!(
        "io_threads = 1\n[[service]]\nname = \"w\"\nlisten = \"127.0.0.1:{port}\"\nstack = \"ws\"\nhandler = \"plugin\"\nplugin = \"{}\"\n",
        lib("libecho_c.so")
    );
    std::fs::write(&path, wrong).unwrap();
    let (code, err) = check(&path);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("stream plugin"), "{err}");

    // an older table (ABI 1.0 without on_task) loads and serves
    let _g2 = ();
    let srv = Server::start(
        &d,
        &format!(
            "io_threads = 1\n{}",
            tcp_service("old", port, &lib("libabi_old_c.so"), "")
        ),
        &[port],
    );
    let mut s = connect(port);
    roundtrip(&mut s, b"old but fine");
    drop(srv);
}

fn versioned_echo(dir: &Path, version: &str) -> PathBuf {
    let src = dir.join("versioned.c");
    std::fs::write(
        &src,
        r#"#include "myriad_plugin.h"
static size_t on_data(myriad_ctx *cx, void *s, void *c, uint8_t *d, size_t n) {
    (void)s; (void)c;
    static const myriad_host *h;
    extern const myriad_host *host_table;
    h = host_table;
    h->write(cx, (const uint8_t *)VERSION ":", sizeof(VERSION));
    h->write(cx, d, n);
    return n;
}
const myriad_host *host_table;
static const myriad_plugin table = {
    .abi_version = MYRIAD_ABI_VERSION, .struct_size = sizeof(myriad_plugin),
    .name = "versioned", .shape = MYRIAD_SHAPE_STREAM, .on_data = on_data,
};
__attribute__((visibility("default"))) const myriad_plugin *myriad_plugin_entry(const myriad_host *h) {
    host_table = h;
    return &table;
}
"#,
    )
    .unwrap();
    let out = dir.join(format!("libversioned_{version}.so"));
    cc(&src, &out, &[&format!("-DVERSION=\"{version}\"")]);
    out
}

#[test]
fn two_versions_side_by_side_and_reload_with_a_rebuilt_library() {
    let _g = serial();
    let d = tmpdir("reload");
    let v1 = versioned_echo(&d, "v1");
    let v2 = versioned_echo(&d, "v2");
    let (pa, pb) = (free_port(), free_port());
    // two versions of one plugin (two files) in one process
    let live = d.join("libversioned.so");
    std::fs::copy(&v1, &live).unwrap();
    let cfg = format!(
        "io_threads = 2\n{}{}",
        tcp_service("a", pa, &live.display().to_string(), ""),
        tcp_service("b", pb, &v2.display().to_string(), "")
    );
    let srv = Server::start(&d, &cfg, &[pa, pb]);
    let mut old = connect(pa);
    assert_eq!(ask_version(&mut old), "v1:x");
    assert_eq!(ask_version(&mut connect(pb)), "v2:x");

    // rebuild service a's library (installed by rename) and reload: new
    // connections get v2, the held one keeps v1; nothing is dropped
    let held: Vec<TcpStream> = (0..10).map(|_| connect(pa)).collect();
    let tmp = d.join("libversioned.so.new");
    std::fs::copy(&v2, &tmp).unwrap();
    std::fs::rename(&tmp, &live).unwrap();
    srv.signal(1);
    eventually("new connections get the new code", || {
        let mut s = connect(pa);
        ask_version(&mut s) == "v2:x"
    });
    assert_eq!(ask_version(&mut old), "v1:x");
    for mut h in held {
        assert_eq!(ask_version(&mut h), "v1:x");
    }
    assert_eq!(ask_version(&mut connect(pb)), "v2:x");

    // a rebuilt library whose init fails keeps the old configuration
    srv.wait_log("configuration reloaded");
}

#[test]
fn a_crashing_plugin_costs_its_worker_and_the_supervisor_replaces_it() {
    let _g = serial();
    let d = tmpdir("crash");
    let port = free_port();
    let cfg = format!(
        "io_threads = 1\nworkers = 2\n{}",
        tcp_service("crash", port, &lib("libcrash_c.so"), "")
    );
    let srv = Server::start(&d, &cfg, &[port]);
    // crash workers one after another, as a client could; the service goes on
    for round in 0..3 {
        let mut c = connect(port);
        let _ = c.write_all(b"CRASH");
        let mut b = [0u8; 8];
        assert!(
            matches!(c.read(&mut b), Ok(0) | Err(_)),
            "round {round}: the worker died"
        );
        eventually("the port serves again", || {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(IO));
            s.write_all(b"ping").is_ok() && {
                let mut b = [0u8; 4];
                s.read_exact(&mut b).is_ok() && &b == b"ping"
            }
        });
    }
    srv.wait_log("SIGSEGV");
    assert!(
        srv.child.try_wait_ok_running(),
        "the supervisor is still running:\n{}",
        srv.log()
    );
}

trait Running {
    fn try_wait_ok_running(&self) -> bool;
}

impl Running for Child {
    fn try_wait_ok_running(&self) -> bool {
        // `kill -0` succeeds while the process exists (a zombie is reaped
        // only by our wait).
        Command::new("kill")
            .args(["-0", &self.id().to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }
}

#[test]
fn chat_plugin_on_a_ws_stack_authenticates_upgrades_and_fans_out() {
    let _g = serial();
    let d = tmpdir("chat");
    let (port, pm) = (free_port(), free_port());
    let cfg = format!(
        "io_threads = 2\n[metrics]\nlisten = \"127.0.0.1:{pm}\"\n[[service]]\nname = \"chat\"\nlisten = \"127.0.0.1:{port}\"\nstack = \"ws\"\nhandler = \"plugin\"\nplugin = \"{}\"\n[service.plugin_config]\ntoken = \"s3cret\"\n",
        lib("libchat_c.so")
    );
    let _srv = Server::start(&d, &cfg, &[port, pm]);
    // a wrong token is refused before the handshake completes
    let (ws, head) = Ws::open(port, "/chat?token=wrong", "");
    assert!(ws.is_none() && head.starts_with("HTTP/1.1 401"), "{head}");
    // the right one is accepted, with the subprotocol the plugin picks
    let (a, head) = Ws::open(port, "/chat?token=s3cret", "other, chat.v1");
    let mut a = a.unwrap_or_else(|| panic!("{head}"));
    assert!(head.contains("Sec-WebSocket-Protocol: chat.v1"), "{head}");
    let (b, head) = Ws::open(port, "/chat?token=s3cret", "");
    let mut b = b.unwrap_or_else(|| panic!("{head}"));
    assert!(!head.contains("Sec-WebSocket-Protocol"), "{head}");
    let mut members = vec![];
    for _ in 0..6 {
        members.push(Ws::open(port, "/chat?token=s3cret", "").0.unwrap());
    }
    // both are subscribed at on_open; wait until a message reaches b
    eventually("a's message reaches b", || {
        a.send(1, b"hello room");
        b.0.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut h = [0u8; 1];
        b.0.peek(&mut h).is_ok()
    });
    b.0.set_read_timeout(Some(IO)).unwrap();
    let (op, text) = b.recv();
    assert_eq!((op, text.as_slice()), (1, &b"hello room"[..]));
    for m in &mut members {
        // every member, on either loop, got it (at least once)
        let (op, text) = m.recv();
        assert_eq!((op, text.as_slice()), (1, &b"hello room"[..]));
    }
    // binary is refused with 1003
    b.send(2, b"\x00\x01");
    loop {
        let (op, p) = b.recv();
        if op == 8 {
            assert_eq!(&p[..2], &1003u16.to_be_bytes());
            break;
        }
    }
    let m = metrics(pm);
    assert!(
        m.contains(
            "myriad_plugin_events_total{service=\"chat\",plugin=\"chat-c\",name=\"messages\"}"
        ),
        "{m}"
    );
    assert!(
        m.contains("myriad_ws_events_total{service=\"chat\",event=\"refused\"} 1"),
        "{m}"
    );
}

#[test]
fn check_loads_each_plugin_as_itself() {
    // Loads with nothing opened in between: each must be its own library
    // (glibc keys loaded libraries by path name first).
    let _g = serial();
    let d = tmpdir("check");
    let path = d.join("all.toml");
    let mut cfg = String::from("io_threads = 1\n");
    for (i, l) in [
        "libecho_rust.so",
        "libecho_c.so",
        "libkv_rust.so",
        "libprobe_rust.so",
    ]
    .iter()
    .enumerate()
    {
        let framing = if l.contains("kv") || l.contains("probe") {
            "framing = \"line\""
        } else {
            ""
        };
        cfg += &tcp_service(&format!("s{i}"), free_port(), &lib(l), framing);
    }
    std::fs::write(&path, cfg).unwrap();
    let (code, err) = check(&path);
    assert_eq!(code, Some(0), "{err}");
}

/// A message plugin that frames its own messages (`message_size`): a
/// 2-byte big-endian length, then the payload; it echoes each whole
/// message and its own framing. A first byte of 0xFF is malformed.
const FRAMED_C: &str = r#"#include "myriad_plugin.h"
static const myriad_host *host;
static int64_t message_size(void *s, const uint8_t *d, size_t n) {
    (void)s;
    if (n < 2) return MYRIAD_NEED_MORE;
    if (d[0] == 0xFF) return -1;
    return 2 + (((int64_t)d[0] << 8) | d[1]);
}
static void on_message(myriad_ctx *cx, void *s, void *c, uint32_t kind, const uint8_t *d, size_t n) {
    (void)s; (void)c; (void)kind;
    host->send(cx, MYRIAD_BINARY, d, n);
}
static void on_drain(myriad_ctx *cx, void *s, void *c) {
    (void)s; (void)c;
    host->counter_add(cx, "drains", 6, 1);
}
static const myriad_plugin table = {
    .abi_version = MYRIAD_ABI_VERSION, .struct_size = sizeof(myriad_plugin),
    .name = "framed", .shape = MYRIAD_SHAPE_MESSAGE,
    .message_size = message_size, .on_message = on_message, .on_drain = on_drain,
};
MYRIAD_PLUGIN_EXPORT const myriad_plugin *myriad_plugin_entry(const myriad_host *h) {
    host = h;
    return &table;
}
"#;

#[test]
fn the_plugins_own_framing_and_a_failed_reload() {
    let _g = serial();
    let d = tmpdir("framed");
    let src = d.join("framed.c");
    std::fs::write(&src, FRAMED_C).unwrap();
    let so = d.join("libframed.so");
    cc(&src, &so, &[]);
    let (port, pm) = (free_port(), free_port());
    let cfg = format!(
        "io_threads = 1\n[metrics]\nlisten = \"127.0.0.1:{pm}\"\n{}",
        tcp_service("framed", port, &so.display().to_string(), "")
    );
    let srv = Server::start(&d, &cfg, &[port, pm]);
    let mut s = connect(port);
    // two messages in one write, then one cut in three
    s.write_all(b"\x00\x03abc\x00\x02de\x00").unwrap();
    let mut b = [0u8; 9];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"\x00\x03abc\x00\x02de");
    s.write_all(b"\x04wx").unwrap();
    std::thread::sleep(Duration::from_millis(30));
    s.write_all(b"yz").unwrap();
    let mut b = [0u8; 6];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"\x00\x04wxyz");
    // malformed: that connection closes, counted; the other goes on
    let mut bad = connect(port);
    bad.write_all(b"\xff\x00").unwrap();
    let mut x = [0u8; 4];
    assert!(matches!(bad.read(&mut x), Ok(0) | Err(_)));
    roundtrip(&mut s, b"\x00\x01!");
    let m = metrics(pm);
    assert!(m.contains("kind=\"bad_framing\"} 1"), "{m}");
    assert!(m.contains("name=\"drains\"}"), "on_drain ran: {m}");

    // a reload whose plugin init fails keeps the running configuration
    let bad_cfg = format!(
        "io_threads = 1\n[metrics]\nlisten = \"127.0.0.1:{pm}\"\n{}",
        tcp_service(
            "framed",
            port,
            &lib("libcrash_c.so"),
            "[service.plugin_config]\nfail_init = true"
        )
    );
    std::fs::write(d.join("myriad.toml"), bad_cfg).unwrap();
    srv.signal(1);
    srv.wait_log("reload failed");
    roundtrip(&mut s, b"\x00\x02ok");
    let mut fresh = connect(port);
    roundtrip(&mut fresh, b"\x00\x03new");
}
