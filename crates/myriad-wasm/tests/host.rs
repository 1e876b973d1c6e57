//! The wasm host against the C example plugins, built here from source
//! (scripts/install-wasm-tools installs what is missing, then
//! scripts/build-wasm-plugin builds each): host calls, per-connection
//! state in the guest, the deadline, traps and poisoning, the memory cap,
//! precompiled artifacts, and the sandbox's grants (WASI denied unless
//! granted; a read-only directory, the clock, named variables).

use myriad_wasm::{
    CallError, CloseReason, Event, Grants, HostCall, Limits, Origin, ReadDir, Shape, WasmError,
    WasmPlugin,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn out_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(ROOT);
        let st = Command::new(root.join("scripts/install-wasm-tools"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("scripts/install-wasm-tools runs");
        assert!(st.success(), "the wasm tools are installed");
        let out = root.join("target/wasm-host-tests");
        std::fs::create_dir_all(&out).unwrap();
        out
    })
}

/// Builds `src` (under examples/plugins) with `flags` into `name`.
fn build(src: &str, name: &str, flags: &[&str]) -> PathBuf {
    let out = out_dir().join(name);
    let st = Command::new(Path::new(ROOT).join("scripts/build-wasm-plugin"))
        .arg(&out)
        .arg(Path::new(ROOT).join("examples/plugins").join(src))
        .args(flags)
        .status()
        .expect("scripts/build-wasm-plugin runs");
    assert!(st.success(), "{src} builds");
    out
}

/// Builds `src` with `--wasi` (wasi-libc calls through the preview-1
/// adapter) into `name`.
fn build_wasi(src: &str, name: &str) -> PathBuf {
    let out = out_dir().join(name);
    let st = Command::new(Path::new(ROOT).join("scripts/build-wasm-plugin"))
        .arg("--wasi")
        .arg(&out)
        .arg(Path::new(ROOT).join("examples/plugins").join(src))
        .status()
        .expect("scripts/build-wasm-plugin runs");
    assert!(st.success(), "{src} builds");
    out
}

fn load(path: &Path, limits: Limits) -> WasmPlugin {
    let (p, _) = WasmPlugin::load(path, limits).unwrap();
    p.init("test", "{}").unwrap();
    p
}

#[test]
fn echo_keeps_per_connection_state_in_the_guest() {
    let p = load(
        &build("echo-wasm-c/echo.c", "echo.wasm", &[]),
        Limits::default(),
    );
    assert_eq!((p.name(), p.shape()), ("echo-wasm-c", Shape::Stream));
    let g1 = p.call(1, None, Event::Open).unwrap().generation;
    let g2 = p.call(2, None, Event::Open).unwrap().generation;
    let out = p.call(1, Some(g1), Event::Data(b"hello")).unwrap();
    assert_eq!(out.consumed, 5);
    assert_eq!(out.calls, vec![HostCall::Write(b"hello".to_vec())]);
    p.call(2, Some(g2), Event::Data(b"abc")).unwrap();
    p.call(1, Some(g1), Event::Data(b"!")).unwrap();
    // each connection's tally, kept by the guest under its id
    let c1 = p
        .call(1, Some(g1), Event::Close(CloseReason::Peer, 0))
        .unwrap();
    assert_eq!(c1.calls, vec![HostCall::CounterAdd("bytes".into(), 6)]);
    let c2 = p
        .call(2, Some(g2), Event::Close(CloseReason::Peer, 0))
        .unwrap();
    assert_eq!(c2.calls, vec![HostCall::CounterAdd("bytes".into(), 3)]);
}

/// A call's queue and its write buffers are given back (`recycle`) and
/// reused by the next calls: each write holds exactly its own bytes,
/// whatever size the buffer it reuses had.
#[test]
fn recycled_queues_and_buffers_carry_only_their_own_bytes() {
    let p = load(
        &build("echo-wasm-c/echo.c", "echo.wasm", &[]),
        Limits::default(),
    );
    let g = p.call(7, None, Event::Open).unwrap().generation;
    let big = vec![b'x'; 3000];
    let msgs: [&[u8]; 5] = [b"hello", &big, b"ab", b"", b"0123456789"];
    for round in 0..50 {
        for m in msgs {
            let out = p.call(7, Some(g), Event::Data(m)).unwrap();
            assert_eq!(out.consumed as usize, m.len(), "round {round}");
            // the echo writes what it got, nothing else (an empty write
            // for an empty delivery)
            assert_eq!(
                out.calls,
                vec![HostCall::Write(m.to_vec())],
                "round {round}"
            );
            myriad_wasm::recycle(out.calls);
        }
    }
}

/// `drain-events`: the host calls a guest's on-drain unless the guest said
/// it has nothing to do there (as the echo does in init), and then skips
/// the call into it altogether.
#[test]
fn on_drain_is_skipped_when_the_guest_turned_drain_events_off() {
    // drain events left on: on-drain runs (and writes "drained")
    let on = load(
        &build(
            "echo-wasm-c/echo.c",
            "echo-drain-on.wasm",
            &["-DDRAIN_NOTE", "-DDRAIN_EVENTS"],
        ),
        Limits::default(),
    );
    let g = on.call(1, None, Event::Open).unwrap().generation;
    let d = on.call(1, Some(g), Event::Drain).unwrap();
    assert_eq!(d.calls, vec![HostCall::Write(b"drained".to_vec())]);
    assert_eq!(d.generation, g);
    // turned off in init: no call into the guest, so no write
    let off = load(
        &build(
            "echo-wasm-c/echo.c",
            "echo-drain-off.wasm",
            &["-DDRAIN_NOTE"],
        ),
        Limits::default(),
    );
    let g = off.call(1, None, Event::Open).unwrap().generation;
    for _ in 0..3 {
        let d = off.call(1, Some(g), Event::Drain).unwrap();
        assert!(d.calls.is_empty(), "on-drain was called: {:?}", d.calls);
        assert_eq!(d.generation, g);
    }
    // the connection's other events still reach the guest
    let out = off.call(1, Some(g), Event::Data(b"ab")).unwrap();
    assert_eq!(out.calls, vec![HostCall::Write(b"ab".to_vec())]);
    let c = off
        .call(1, Some(g), Event::Close(CloseReason::Peer, 0))
        .unwrap();
    assert_eq!(c.calls, vec![HostCall::CounterAdd("bytes".into(), 2)]);
    // a connection reopened on a fresh instance (its generation is not
    // the slot's; the echo says reopen): on-open runs, on-drain does not
    let d = off.call(3, Some(g + 1), Event::Drain).unwrap();
    assert!(d.calls.is_empty(), "on-drain was called: {:?}", d.calls);
    let c = off
        .call(3, Some(d.generation), Event::Close(CloseReason::Peer, 0))
        .unwrap();
    assert_eq!(c.calls, vec![HostCall::CounterAdd("bytes".into(), 0)]);
}

#[test]
fn many_connections_share_one_instance() {
    let p = load(
        &build("echo-wasm-c/echo.c", "echo-many.wasm", &[]),
        Limits::default(),
    );
    let n = 10_000u64;
    for id in 1..=n {
        let g = p.call(id, None, Event::Open).unwrap().generation;
        assert_eq!(g, 0, "one instance (generation 0) for every connection");
        p.call(id, Some(g), Event::Data(&id.to_le_bytes())).unwrap();
    }
    for id in 1..=n {
        let c = p
            .call(id, Some(0), Event::Close(CloseReason::Local, 0))
            .unwrap();
        assert_eq!(c.calls, vec![HostCall::CounterAdd("bytes".into(), 8)]);
    }
}

/// A loop's share of a million connections on one instance, at the default
/// deadline: the guest's table of connections (myriad_wasm.h) grows past
/// 786,432 entries, where rehashing it in one call took 19 ms (release
/// host; 9 ms at 393,216) and so was interrupted at the 10 ms deadline,
/// poisoning the instance with all its connections. It now grows in
/// bounded steps. Connections also close along the way (backward-shift
/// deletion while entries move between arrays), each reporting its own
/// tally of echoed bytes.
#[test]
fn a_million_connections_grow_the_guest_table_within_the_deadline() {
    let p = load(
        &build("echo-wasm-c/echo.c", "echo-million.wasm", &[]),
        Limits::default(),
    );
    let n: u64 = 1_000_000;
    // bytes echoed per connection; None once closed
    let mut tally: Vec<Option<u64>> = vec![None; n as usize + 1];
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let close = |p: &WasmPlugin, id: u64, tally: &mut Vec<Option<u64>>| {
        let want = tally[id as usize].take().expect("open");
        let c = p
            .call(id, Some(0), Event::Close(CloseReason::Peer, 0))
            .unwrap_or_else(|e| panic!("on-close of {id}: {e}"));
        assert_eq!(c.calls, vec![HostCall::CounterAdd("bytes".into(), want)]);
    };
    let data = [7u8; 8];
    for id in 1..=n {
        let o = p
            .call(id, None, Event::Open)
            .unwrap_or_else(|e| panic!("on-open of {id}: {e}"));
        assert_eq!(o.generation, 0, "one instance, never poisoned");
        assert!(o.calls.is_empty(), "{:?}", o.calls);
        let len = 1 + (id % 8) as usize;
        p.call(id, Some(0), Event::Data(&data[..len]))
            .unwrap_or_else(|e| panic!("on-data of {id}: {e}"));
        tally[id as usize] = Some(len as u64);
        // one in eight: close an earlier connection, still open or not
        if id % 8 == 0 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let victim = 1 + rng % id;
            if tally[victim as usize].is_some() {
                close(&p, victim, &mut tally);
            }
        }
    }
    for id in 1..=n {
        if tally[id as usize].is_some() {
            close(&p, id, &mut tally);
        }
    }
}

#[test]
fn a_looping_call_is_interrupted_and_the_others_reopen() {
    let limits = Limits {
        deadline: Duration::from_millis(10),
        ..Limits::default()
    };
    let p = load(&build("loop-c/loop.c", "loop.wasm", &[]), limits);
    let a = p.call(1, None, Event::Open).unwrap().generation;
    let b = p.call(2, None, Event::Open).unwrap().generation;
    assert_eq!(
        p.call(1, Some(a), Event::Data(b"LOOP")).unwrap_err(),
        CallError::Timeout
    );
    // b's instance was poisoned; loop-c says reopen: b goes on with a
    // fresh instance
    let out = p.call(2, Some(b), Event::Data(b"still here")).unwrap();
    assert_eq!(out.calls, vec![HostCall::Write(b"still here".to_vec())]);
    assert_eq!(out.generation, b + 1);
    // a trap poisons it too
    assert!(matches!(
        p.call(2, Some(b + 1), Event::Data(b"TRAP")),
        Err(CallError::Trap(_))
    ));
    let c = p.call(3, None, Event::Open).unwrap().generation;
    assert_eq!(c, b + 2);
}

#[test]
fn without_reopen_the_poisoned_instances_connections_are_lost() {
    let p = load(
        &build("loop-c/loop.c", "loop-noreopen.wasm", &["-DNO_REOPEN"]),
        Limits::default(),
    );
    let a = p.call(1, None, Event::Open).unwrap().generation;
    let b = p.call(2, None, Event::Open).unwrap().generation;
    assert!(matches!(
        p.call(1, Some(a), Event::Data(b"TRAP")),
        Err(CallError::Trap(_))
    ));
    assert_eq!(
        p.call(2, Some(b), Event::Data(b"x")).unwrap_err(),
        CallError::Lost
    );
    // a new connection gets a fresh instance
    let c = p.call(3, None, Event::Open).unwrap().generation;
    let out = p.call(3, Some(c), Event::Data(b"y")).unwrap();
    assert_eq!(out.calls, vec![HostCall::Write(b"y".to_vec())]);
}

#[test]
fn the_memory_cap_is_enforced() {
    let path = build("echo-wasm-c/echo.c", "echo-cap.wasm", &[]);
    // less than the module's own initial memory: no instance can be made
    let tiny = Limits {
        memory: 64 << 10,
        ..Limits::default()
    };
    assert!(WasmPlugin::load(&path, tiny).is_err());
    // room for the initial memory, not for growing far: the guest's
    // table of connections stops growing and it closes the connection
    let small = Limits {
        memory: 2 << 20,
        ..Limits::default()
    };
    let p = load(&path, small);
    let mut refused = 0;
    for id in 1..=200_000u64 {
        let out = p.call(id, None, Event::Open).unwrap();
        if out
            .calls
            .iter()
            .any(|c| matches!(c, HostCall::Close(_, r) if r == "out of memory"))
        {
            refused = id;
            break;
        }
    }
    assert!(refused > 0, "the guest ran out of its 2 MiB");
}

#[test]
fn precompiled_artifacts_are_used_when_they_match() {
    let echo = build("echo-wasm-c/echo.c", "echo-pre.wasm", &[]);
    let art = myriad_wasm::artifact_path(&echo);
    let _ = std::fs::remove_file(&art);
    let (_, o) = WasmPlugin::load(&echo, Limits::default()).unwrap();
    assert_eq!(o, Origin::Compiled);
    std::fs::write(&art, myriad_wasm::precompile(&echo).unwrap()).unwrap();
    let (p, o) = WasmPlugin::load(&echo, Limits::default()).unwrap();
    assert_eq!(o, Origin::Precompiled);
    p.init("t", "{}").unwrap();
    let g = p.call(1, None, Event::Open).unwrap().generation;
    assert_eq!(
        p.call(1, Some(g), Event::Data(b"ok")).unwrap().calls,
        vec![HostCall::Write(b"ok".to_vec())]
    );
    // an artifact of other source bytes (a rebuilt .wasm) is not used
    let other = build("loop-c/loop.c", "loop-pre.wasm", &[]);
    std::fs::write(&art, myriad_wasm::precompile(&other).unwrap()).unwrap();
    let (p, o) = WasmPlugin::load(&echo, Limits::default()).unwrap();
    assert_eq!((o, p.name()), (Origin::Compiled, "echo-wasm-c"));
    // nor a damaged one
    std::fs::write(&art, b"MYRWASM1 and then nonsense").unwrap();
    let (_, o) = WasmPlugin::load(&echo, Limits::default()).unwrap();
    assert_eq!(o, Origin::Compiled);
}

/// files-wasm-c's answer to one request on a fresh connection.
fn ask(p: &WasmPlugin, conn: u64, req: &str) -> String {
    let g = p.call(conn, None, Event::Open).unwrap().generation;
    let out = p.call(conn, Some(g), Event::Data(req.as_bytes())).unwrap();
    let mut text = Vec::new();
    for c in out.calls {
        if let HostCall::Write(b) = c {
            text.extend(b);
        }
    }
    p.call(conn, Some(g), Event::Close(CloseReason::Peer, 0))
        .unwrap();
    String::from_utf8(text).unwrap()
}

#[test]
fn a_plugin_that_imports_wasi_is_denied_without_a_grant() {
    let files = build_wasi("files-wasm-c/files.c", "files-denied.wasm");
    let e = WasmPlugin::load(&files, Limits::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, WasmError::Denied { .. }), "{msg}");
    assert!(
        msg.contains("(WASI)") && msg.contains("wasi:") && msg.contains("wasm_read_dir"),
        "{msg}"
    );
    // the plugins without WASI calls load with or without grants
    let echo = build("echo-wasm-c/echo.c", "echo-granted.wasm", &[]);
    let g = Grants {
        clock: true,
        ..Grants::default()
    };
    let (p, _) = WasmPlugin::load_granted(&echo, Limits::default(), g).unwrap();
    p.init("t", "{}").unwrap();
    let c = p.call(1, None, Event::Open).unwrap().generation;
    assert_eq!(
        p.call(1, Some(c), Event::Data(b"hi")).unwrap().calls,
        vec![HostCall::Write(b"hi".to_vec())]
    );
    // a granted directory that is not there: refused at load
    let gone = Grants {
        read_dir: Some(ReadDir {
            host: out_dir().join("no-such-dir"),
            guest: "/data".into(),
        }),
        ..Grants::default()
    };
    let e = WasmPlugin::load_granted(&files, Limits::default(), gone).unwrap_err();
    assert!(matches!(e, WasmError::Grant { .. }), "{e}");
}

#[test]
fn a_granted_directory_is_readable_only_and_nothing_escapes_it() {
    let base = out_dir().join("grant");
    let _ = std::fs::remove_dir_all(&base);
    let dir = base.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "hello from the host\n").unwrap();
    let secret = base.join("secret.txt");
    std::fs::write(&secret, "outside\n").unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("escape")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", dir.join("escape-rel")).unwrap();
    let files = build_wasi("files-wasm-c/files.c", "files-dir.wasm");
    let g = Grants {
        read_dir: Some(ReadDir {
            host: dir.clone(),
            guest: "/data".into(),
        }),
        ..Grants::default()
    };
    let (p, _) = WasmPlugin::load_granted(&files, Limits::default(), g).unwrap();
    p.init("t", "{}").unwrap();
    assert_eq!(ask(&p, 1, "READ /data/hello.txt"), "hello from the host\n");
    // nothing outside it: `..`, an absolute host path, symlinks out
    for (i, req) in [
        "READ /data/../secret.txt".to_string(),
        format!("READ {}", secret.display()),
        "READ /data/escape".to_string(),
        "READ /data/escape-rel".to_string(),
        "READ /etc/hostname".to_string(),
        "READ ../secret.txt".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let a = ask(&p, 10 + i as u64, req);
        assert!(a.starts_with("ERR "), "{req}: {a:?}");
    }
    // read-only: no new file, no overwrite
    let a = ask(&p, 20, "WRITE /data/new.txt");
    assert!(a.starts_with("ERR "), "{a:?}");
    assert!(!dir.join("new.txt").exists());
    let a = ask(&p, 21, "WRITE /data/hello.txt");
    assert!(a.starts_with("ERR "), "{a:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("hello.txt")).unwrap(),
        "hello from the host\n"
    );
    // not granted: the environment (empty) and the clock (stopped at 0)
    assert!(std::env::var_os("PATH").is_some());
    assert_eq!(ask(&p, 22, "ENV PATH"), "ERR unset\n");
    assert_eq!(ask(&p, 23, "TIME"), "0\n");
}

#[test]
fn the_clock_and_named_variables_can_be_granted() {
    let files = build_wasi("files-wasm-c/files.c", "files-env.wasm");
    let g = Grants {
        clock: true,
        env: vec![("GREETING".into(), "hello".into())],
        ..Grants::default()
    };
    let (p, _) = WasmPlugin::load_granted(&files, Limits::default(), g).unwrap();
    p.init("t", "{}").unwrap();
    assert_eq!(ask(&p, 1, "ENV GREETING"), "hello\n");
    assert_eq!(ask(&p, 2, "ENV HOME"), "ERR unset\n");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t: u64 = ask(&p, 3, "TIME").trim().parse().unwrap();
    assert!(t.abs_diff(now) < 60, "{t} vs {now}");
    // no directory granted: no file at all
    assert!(ask(&p, 4, "READ /data/hello.txt").starts_with("ERR "));
}

#[test]
fn the_deadline_counts_cpu_time_so_a_descheduled_call_goes_on_and_a_loop_does_not() {
    let limits = Limits {
        deadline: Duration::from_millis(10),
        ..Limits::default()
    };
    let files = build_wasi("files-wasm-c/files.c", "files-sleep.wasm");
    let g = Grants {
        clock: true,
        ..Grants::default()
    };
    let (p, _) = WasmPlugin::load_granted(&files, limits, g).unwrap();
    p.init("t", "{}").unwrap();
    // 50 ms waiting in a host call (the guest's nanosleep): 5 times the
    // deadline of wall-clock time, next to no CPU time; a wall-clock
    // deadline interrupted it. (The ticker's ticks are at least 1 ms, so
    // 50 ms is at most 50 ticks: below the ceiling of 10 x 11.)
    let c = p.call(1, None, Event::Open).unwrap().generation;
    let out = p.call(1, Some(c), Event::Data(b"SLEEP 50")).unwrap();
    assert_eq!(out.calls, vec![HostCall::Write(b"OK\n".to_vec())]);
    assert_eq!(out.generation, c, "not poisoned");
    // past the wall-clock ceiling (10 x the deadline) it is cut when the
    // host call returns, though it used no CPU: a guest stuck in the host
    // does not hold its loop for ever
    assert_eq!(
        p.call(1, Some(c), Event::Data(b"SLEEP 400")).unwrap_err(),
        CallError::Timeout
    );
    // and a guest spending CPU is interrupted at the deadline
    let l = load(&build("loop-c/loop.c", "loop-cpu.wasm", &[]), limits);
    let a = l.call(1, None, Event::Open).unwrap().generation;
    assert_eq!(
        l.call(1, Some(a), Event::Data(b"LOOP")).unwrap_err(),
        CallError::Timeout
    );
    let b = l.call(2, None, Event::Open).unwrap().generation;
    let out = l.call(2, Some(b), Event::Data(b"after")).unwrap();
    assert_eq!(out.calls, vec![HostCall::Write(b"after".to_vec())]);
}
