//! WebAssembly plugins in the `myriad` server, end to end: the C example
//! components built from source here (scripts/install-wasm-tools, then
//! scripts/build-wasm-plugin), an echo and its per-connection state, the
//! chat room on a ws stack, the deadline (one looping connection among a
//! hundred good ones), a trap, two plugins and two versions side by side,
//! SIGHUP with a rebuilt `.wasm`, the JavaScript echo and chat room
//! (componentize-js, precompiled here as scripts/build-plugins does), and
//! the sandbox's grants (a read-only directory served by a WASI plugin;
//! the same plugin refused without a grant).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

mod common;

use common::plugin::*;
use common::{free_port, serial, tmpdir, ROOT};

fn out_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(ROOT);
        let st = Command::new(root.join("scripts/install-wasm-tools"))
            .stdout(Stdio::null())
            .status()
            .expect("scripts/install-wasm-tools runs");
        assert!(st.success(), "the wasm tools are installed");
        let out = root.join("target/wasm-plugin-tests");
        std::fs::create_dir_all(&out).unwrap();
        out
    })
}

/// Builds `src` (under examples/plugins) with `flags` into `out`.
fn build_to(src: &str, out: &Path, flags: &[&str]) {
    let st = Command::new(Path::new(ROOT).join("scripts/build-wasm-plugin"))
        .arg(out)
        .arg(Path::new(ROOT).join("examples/plugins").join(src))
        .args(flags)
        .status()
        .expect("scripts/build-wasm-plugin runs");
    assert!(st.success(), "{src} builds");
}

/// The example plugin `src`, built once per test run.
fn plugin(src: &str, name: &str) -> String {
    let out = out_dir().join(name);
    if !out.exists() {
        build_to(src, &out, &[]);
    }
    out.display().to_string()
}

/// A JavaScript example plugin, built and precompiled once per test run
/// (compiling its 12 MB component is what the artifact saves the server).
fn js_plugin(src: &str, name: &str) -> String {
    let out = out_dir().join(name);
    if !out.exists() {
        build_to(src, &out, &[]);
    }
    let art = myriad_wasm::artifact_path(&out);
    if !art.exists() {
        std::fs::write(&art, myriad_wasm::precompile(&out).unwrap()).unwrap();
    }
    out.display().to_string()
}

/// Whether the server closed the connection (EOF or reset).
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

fn fault_count(m: &str, service: &str, kind: &str) -> u64 {
    let key = format!("myriad_plugin_faults_total{{service=\"{service}\",");
    m.lines()
        .filter(|l| l.starts_with(&key) && l.contains(&format!("kind=\"{kind}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn wasm_echo_serves_and_counts_per_connection_state() {
    let _g = serial();
    let d = tmpdir("wasm-echo");
    let (port, pm) = (free_port(), free_port());
    let cfg = format!(
        "io_threads = 1\n[metrics]\nlisten = \"127.0.0.1:{pm}\"\n{}",
        tcp_service("echo", port, &plugin("echo-wasm-c/echo.c", "echo.wasm"), "")
    );
    let srv = Server::start(&d, &cfg, &[port, pm]);
    let mut conns: Vec<TcpStream> = (0..20).map(|_| connect(port)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        roundtrip(c, format!("hello {i:02}").as_bytes());
    }
    drop(conns);
    // each connection's tally (8 bytes), kept in the guest, is added at close
    eventually("the guest's per-connection tallies", || {
        metrics(pm).contains(
            "myriad_plugin_events_total{service=\"echo\",plugin=\"echo-wasm-c\",name=\"bytes\"} 160",
        )
    });
    assert!(srv.log().contains("wasm plugin loaded"), "{}", srv.log());
}

#[test]
fn the_deadline_closes_a_looping_connection_and_the_loop_serves_on() {
    let _g = serial();
    let d = tmpdir("wasm-deadline");
    let (port, pm) = (free_port(), free_port());
    let cfg = format!(
        "io_threads = 1\n[metrics]\nlisten = \"127.0.0.1:{pm}\"\n{}",
        tcp_service(
            "loop",
            port,
            &plugin("loop-c/loop.c", "loop.wasm"),
            "wasm_deadline = \"10ms\""
        )
    );
    let _srv = Server::start(&d, &cfg, &[port, pm]);
    // 100 well-behaved connections, open before and after the looping one
    let mut good: Vec<TcpStream> = (0..50).map(|_| connect(port)).collect();
    for (i, c) in good.iter_mut().enumerate() {
        roundtrip(c, format!("before {i:03}").as_bytes());
    }
    let mut bad = connect(port);
    bad.write_all(b"LOOP forever").unwrap();
    assert!(closed(&mut bad), "the looping connection is closed");
    good.extend((0..50).map(|_| connect(port)));
    for (i, c) in good.iter_mut().enumerate() {
        roundtrip(c, format!("after {i:03}").as_bytes());
    }
    let m = metrics(pm);
    assert_eq!(fault_count(&m, "loop", "plugin_timeout"), 1, "{m}");
    assert_eq!(fault_count(&m, "loop", "plugin_lost"), 0, "{m}");
}

#[test]
fn a_trap_costs_its_connection_or_without_reopen_its_instances() {
    let _g = serial();
    let d = tmpdir("wasm-trap");
    let (pa, pb, pm) = (free_port(), free_port(), free_port());
    let noreopen = d.join("loop-noreopen.wasm");
    build_to("loop-c/loop.c", &noreopen, &["-DNO_REOPEN"]);
    let cfg = format!(
        "io_threads = 1\n[metrics]\nlisten = \"127.0.0.1:{pm}\"\n{}{}",
        tcp_service("a", pa, &plugin("loop-c/loop.c", "loop.wasm"), ""),
        tcp_service("b", pb, &noreopen.display().to_string(), "")
    );
    let _srv = Server::start(&d, &cfg, &[pa, pb, pm]);
    // a says reopen: only the trapping connection is lost
    let mut others: Vec<TcpStream> = (0..5).map(|_| connect(pa)).collect();
    for c in &mut others {
        roundtrip(c, b"x");
    }
    let mut t = connect(pa);
    t.write_all(b"TRAP").unwrap();
    assert!(closed(&mut t));
    for c in &mut others {
        roundtrip(c, b"y");
    }
    // b does not: its other connections (state in the poisoned instance)
    // are closed at their next event; new ones are served
    let mut others: Vec<TcpStream> = (0..5).map(|_| connect(pb)).collect();
    for c in &mut others {
        roundtrip(c, b"x");
    }
    let mut t = connect(pb);
    t.write_all(b"TRAP").unwrap();
    assert!(closed(&mut t));
    for c in &mut others {
        c.write_all(b"y").unwrap();
        assert!(closed(c));
    }
    roundtrip(&mut connect(pb), b"fresh");
    let m = metrics(pm);
    assert_eq!(fault_count(&m, "a", "plugin_trap"), 1, "{m}");
    assert_eq!(fault_count(&m, "a", "plugin_lost"), 0, "{m}");
    assert_eq!(fault_count(&m, "b", "plugin_trap"), 1, "{m}");
    assert_eq!(fault_count(&m, "b", "plugin_lost"), 5, "{m}");
}

#[test]
fn two_plugins_two_versions_side_by_side_and_reload_with_a_rebuilt_wasm() {
    let _g = serial();
    let d = tmpdir("wasm-reload");
    let v1 = d.join("v1.wasm");
    let v2 = d.join("v2.wasm");
    build_to("echo-wasm-c/echo.c", &v1, &["-DVERSION=\"v1\""]);
    build_to("echo-wasm-c/echo.c", &v2, &["-DVERSION=\"v2\""]);
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let live = d.join("live.wasm");
    std::fs::copy(&v1, &live).unwrap();
    let cfg = format!(
        "io_threads = 2\n{}{}{}",
        tcp_service("a", pa, &live.display().to_string(), ""),
        tcp_service("b", pb, &v2.display().to_string(), ""),
        tcp_service("c", pc, &plugin("loop-c/loop.c", "loop.wasm"), "")
    );
    let srv = Server::start(&d, &cfg, &[pa, pb, pc]);
    let mut old = connect(pa);
    assert_eq!(ask_version(&mut old), "v1:x");
    assert_eq!(ask_version(&mut connect(pb)), "v2:x");
    roundtrip(&mut connect(pc), b"another plugin");

    // rebuild a's component (installed by rename) and reload: new
    // connections get v2, the held one keeps v1
    let tmp = d.join("live.wasm.new");
    std::fs::copy(&v2, &tmp).unwrap();
    std::fs::rename(&tmp, &live).unwrap();
    common::signal(&srv.child, "-HUP");
    eventually("new connections get the new code", || {
        ask_version(&mut connect(pa)) == "v2:x"
    });
    assert_eq!(ask_version(&mut old), "v1:x");
    assert_eq!(ask_version(&mut connect(pb)), "v2:x");
}

#[test]
fn wasm_chat_room_on_a_ws_stack_fans_out() {
    let _g = serial();
    let d = tmpdir("wasm-chat");
    let (port, pm) = (free_port(), free_port());
    let cfg = format!(
        "io_threads = 2\n[metrics]\nlisten = \"127.0.0.1:{pm}\"\n[[service]]\nname = \"chat\"\nlisten = \"127.0.0.1:{port}\"\nstack = \"ws\"\nhandler = \"plugin\"\nplugin = \"{}\"\n[service.plugin_config]\nroom = \"lobby\"\n",
        plugin("chat-wasm-c/chat.c", "chat.wasm")
    );
    let _srv = Server::start(&d, &cfg, &[port, pm]);
    let mut a = Ws::open(port, "/chat", "").0.expect("upgraded");
    let mut members: Vec<Ws> = (0..6)
        .map(|_| Ws::open(port, "/chat", "").0.expect("upgraded"))
        .collect();
    // members join at their on-open; wait until a message reaches the last
    eventually("a's message reaches the last member", || {
        a.send(1, b"hello room");
        let last = &members[members.len() - 1].0;
        last.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut h = [0u8; 1];
        last.peek(&mut h).is_ok()
    });
    for m in &mut members {
        // every member, on either loop, got it (at least once)
        m.0.set_read_timeout(Some(IO)).unwrap();
        assert_eq!(m.recv(), (1, b"hello room".to_vec()));
    }
    assert_eq!(a.recv(), (1, b"hello room".to_vec()));
    // binary is refused with 1003
    members[0].send(2, b"\x00\x01");
    loop {
        let (op, p) = members[0].recv();
        if op == 8 {
            assert_eq!(&p[..2], &1003u16.to_be_bytes());
            break;
        }
    }
    let m = metrics(pm);
    assert!(
        m.contains(
            "myriad_plugin_events_total{service=\"chat\",plugin=\"chat-wasm-c\",name=\"messages\"}"
        ),
        "{m}"
    );
}

#[test]
fn javascript_echo_and_chat_room() {
    let _g = serial();
    let d = tmpdir("wasm-js");
    let (pe, pc, pm) = (free_port(), free_port(), free_port());
    let cfg = format!(
        "io_threads = 1\n[metrics]\nlisten = \"127.0.0.1:{pm}\"\n{}[[service]]\nname = \"chat\"\nlisten = \"127.0.0.1:{pc}\"\nstack = \"ws\"\nhandler = \"plugin\"\nplugin = \"{}\"\n",
        tcp_service("echo", pe, &js_plugin("echo-wasm-js/echo.js", "echo-js.wasm"), ""),
        js_plugin("chat-wasm-js/chat.js", "chat-js.wasm")
    );
    let srv = Server::start(&d, &cfg, &[pe, pc, pm]);
    assert!(srv.log().contains("origin=Precompiled"), "{}", srv.log());
    let mut conns: Vec<TcpStream> = (0..10).map(|_| connect(pe)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        roundtrip(c, format!("js echo {i}").as_bytes());
    }
    drop(conns);
    eventually("the JS guest's per-connection tallies", || {
        metrics(pm).contains(
            "myriad_plugin_events_total{service=\"echo\",plugin=\"echo-wasm-js\",name=\"bytes\"} 90",
        )
    });
    let mut a = Ws::open(pc, "/chat", "").0.expect("upgraded");
    let mut b = Ws::open(pc, "/chat", "").0.expect("upgraded");
    eventually("a's message reaches b", || {
        a.send(1, b"hi from js");
        b.0.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut h = [0u8; 1];
        b.0.peek(&mut h).is_ok()
    });
    b.0.set_read_timeout(Some(IO)).unwrap();
    assert_eq!(b.recv(), (1, b"hi from js".to_vec()));
    b.send(2, b"\x00");
    loop {
        let (op, p) = b.recv();
        if op == 8 {
            assert_eq!(&p[..2], &1003u16.to_be_bytes());
            break;
        }
    }
}

/// One request to files-wasm-c, one answer (a line or a file's content).
fn ask_files(port: u16, req: &str) -> String {
    let mut s = connect(port);
    s.write_all(req.as_bytes()).unwrap();
    let mut b = [0u8; 4096];
    let n = s.read(&mut b).unwrap();
    String::from_utf8_lossy(&b[..n]).into_owned()
}

#[test]
fn a_granted_directory_is_served_read_only_and_wasi_is_denied_without_it() {
    let _g = serial();
    let d = tmpdir("wasm-grants");
    let files = out_dir().join("files.wasm");
    if !files.exists() {
        let st = Command::new(Path::new(ROOT).join("scripts/build-wasm-plugin"))
            .arg("--wasi")
            .arg(&files)
            .arg(Path::new(ROOT).join("examples/plugins/files-wasm-c/files.c"))
            .status()
            .expect("scripts/build-wasm-plugin runs");
        assert!(st.success(), "files-wasm-c builds");
    }
    std::fs::create_dir_all(d.join("www")).unwrap();
    std::fs::write(d.join("www/index.txt"), "granted\n").unwrap();
    std::fs::write(d.join("outside.txt"), "secret\n").unwrap();
    // without a grant the service is refused, saying why and what to grant
    let denied = d.join("denied.toml");
    std::fs::write(
        &denied,
        tcp_service("files", free_port(), &files.display().to_string(), ""),
    )
    .unwrap();
    let (rc, out) = common::check(&denied);
    assert_ne!(rc, 0, "{out}");
    assert!(
        out.contains("(WASI)") && out.contains("wasm_read_dir"),
        "{out}"
    );

    let port = free_port();
    let cfg = format!(
        "io_threads = 1\n{}",
        tcp_service(
            "files",
            port,
            &files.display().to_string(),
            "wasm_read_dir = { host = \"www\", guest = \"/www\" }\nwasm_env = [\"PATH\"]"
        )
    );
    let srv = Server::start(&d, &cfg, &[port]);
    assert_eq!(ask_files(port, "READ /www/index.txt"), "granted\n");
    assert!(ask_files(port, "READ /www/../outside.txt").starts_with("ERR "));
    assert!(ask_files(port, "WRITE /www/new.txt").starts_with("ERR "));
    assert!(!d.join("www/new.txt").exists());
    // a granted variable has the server's value
    let path = ask_files(port, "ENV PATH");
    assert!(!path.starts_with("ERR") && path.len() > 1, "{path}");
    assert!(srv.log().contains("wasm plugin loaded"), "{}", srv.log());
}
