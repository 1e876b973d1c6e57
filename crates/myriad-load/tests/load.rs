//! End-to-end tests of the `myriad-load` binary against echo servers started
//! in this process: Myriad's echo, a tokio `current_thread` echo (the
//! baseline), a WebSocket echo on the sans-I/O server connection, and
//! deliberately broken echoes. Loopback only; each run takes about a second.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{broken, load, load_raw, serial, Echo, Fault, Server, TokioEcho, WsEcho};
use myriad_ws::{DeflateConfig, ServerConfig, ServerConnection};

#[test]
fn myriad_echo_closed_loop_is_verified_and_reported_as_json() {
    let _g = serial();
    let s = Server::start(|| Echo);
    let r = load(&[
        &s.url("tcp"),
        "-c",
        "20",
        "-w",
        "4",
        "-s",
        "16..512",
        "-d",
        "1s",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = r.j();
    for key in [
        "connections_established",
        "messages",
        "messages_per_sec",
        "bytes_per_sec",
        "errors",
        "latency_us",
        "connect_us",
        "connections_per_sec",
    ] {
        assert!(j.get(key).is_some(), "JSON lacks {key}");
    }
    for p in ["p50", "p90", "p99", "p999", "max"] {
        assert!(j["latency_us"][p].as_u64().is_some(), "latency_us.{p}");
        assert!(j["connect_us"][p].as_u64().is_some(), "connect_us.{p}");
    }
    assert_eq!(r.u("connections_established"), 20);
    assert!(r.u("messages") > 100, "{}", r.show());
    assert!(j["messages_per_sec"].as_f64().unwrap_or(0.0) > 100.0);
    assert!(j["bytes_per_sec"].as_f64().unwrap_or(0.0) > 1_000.0);
    assert_eq!(r.u("errors_total"), 0);
    assert!(j["latency_us"]["p50"].as_u64().unwrap_or(0) >= 1);
    assert!(r.stdout.contains("msg/s"), "summary printed: {}", r.stdout);
}

#[test]
fn tokio_baseline_echo_exact_message_count() {
    let _g = serial();
    let t = TokioEcho::start();
    let url = format!("tcp://{}", t.addr);
    let r = load(&[&url, "-c", "10", "-m", "100", "-w", "2", "-s", "1k", "-q"]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("messages"), 1000);
    assert_eq!(r.u("connections_established"), 10);
}

#[test]
fn lp32_framing_round_trips() {
    let _g = serial();
    let s = Server::start(|| Echo);
    let r = load(&[
        &s.url("tcp"),
        "-c",
        "4",
        "-m",
        "50",
        "--framing",
        "lp32",
        "-s",
        "1..300",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("messages"), 200);
}

#[test]
fn open_loop_rate_is_kept() {
    let _g = serial();
    let s = Server::start(|| Echo);
    let t = std::time::Instant::now();
    // 10 connections × 50 messages at 1,000/s in all: half a second at
    // least (a loaded machine can only make it slower).
    let r = load(&[
        &s.url("tcp"),
        "-c",
        "10",
        "--rate",
        "1000",
        "-m",
        "50",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("messages"), 500);
    assert!(
        t.elapsed().as_secs_f64() >= 0.45,
        "sent faster than the rate"
    );
    assert_eq!(r.j()["mode"], "echo-open-loop");
}

#[test]
fn send_after_recv_with_think_time() {
    let _g = serial();
    let s = Server::start(|| Echo);
    let t = std::time::Instant::now();
    let r = load(&[
        &s.url("tcp"),
        "-c",
        "4",
        "--think",
        "20ms",
        "-m",
        "10",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("messages"), 40);
    // Nine pauses of 20 ms between ten echoes on each connection.
    assert!(t.elapsed().as_secs_f64() >= 0.18, "did not think");
}

#[test]
fn flipped_byte_is_a_mismatch_and_exit_1() {
    let _g = serial();
    let s = broken(Fault::Flip(1_000_000));
    let r = load(&[
        &s.url("tcp"),
        "-c",
        "4",
        "-w",
        "4",
        "-s",
        "4k",
        "-m",
        "100",
        "-q",
    ]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(r.err("mismatch"), 1, "{}", r.show());
    assert_eq!(r.u("errors_total"), 1, "{}", r.show());
    assert!(r.stdout.contains("mismatch"), "{}", r.stdout);
    let sample = r.j()["error_samples"][0].as_str().unwrap_or_default();
    assert!(sample.starts_with("mismatch: connection"), "{sample}");
}

#[test]
fn dropped_byte_is_a_mismatch() {
    let _g = serial();
    let s = broken(Fault::Drop(1_000_000));
    let r = load(&[
        &s.url("tcp"),
        "-c",
        "4",
        "-w",
        "4",
        "-s",
        "4k",
        "-m",
        "100",
        "-q",
    ]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(r.err("mismatch"), 1, "{}", r.show());
}

#[test]
fn no_verify_ignores_a_flipped_byte() {
    let _g = serial();
    let s = broken(Fault::Flip(1000));
    let r = load(&[
        &s.url("tcp"),
        "-c",
        "2",
        "-s",
        "1k",
        "-m",
        "20",
        "--no-verify",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("messages"), 40);
}

#[test]
fn early_close_is_counted_and_allow_errors_forgives_it() {
    let _g = serial();
    let s = broken(Fault::CloseAfter(1000));
    let args = [
        s.url("tcp"),
        "-c".into(),
        "3".into(),
        "-s".into(),
        "100".into(),
        "-m".into(),
        "50".into(),
        "-q".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = load(&args);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(r.err("early_close"), 3, "{}", r.show());
    let mut more = args.clone();
    more.extend(["--allow-errors", "3"]);
    let r = load(&more);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.err("early_close"), 3);
}

#[test]
fn refused_connections_are_counted() {
    let _g = serial();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("tcp://127.0.0.1:{port}");
    let r = load(&[&url, "-c", "5", "-m", "1", "-q"]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(r.err("connect_refused"), 5, "{}", r.show());
    assert_eq!(r.u("connections_established"), 0);
}

#[test]
fn processes_merge_counters_and_histograms() {
    let _g = serial();
    let s = Server::start(|| Echo);
    let r = load(&[
        &s.url("tcp"),
        "-p",
        "2",
        "-t",
        "1",
        "-c",
        "10",
        "-m",
        "20",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    let j = r.j();
    assert_eq!(j["processes"], 2);
    assert_eq!(r.u("connections_established"), 10);
    assert_eq!(r.u("messages"), 200);
    assert_eq!(j["latency_us"]["count"], 200);
    assert_eq!(j["connect_us"]["count"], 10);
}

#[test]
fn hold_reverifies_the_sample() {
    let _g = serial();
    let s = Server::start(|| Echo);
    let r = load(&[
        &s.url("tcp"),
        "-c",
        "50",
        "--hold",
        "1s",
        "--hold-sample",
        "100",
        "--source-ips",
        "127.0.0.2-127.0.0.4",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.j()["hold_checks"]["verified"], 50, "{}", r.show());
    assert_eq!(r.u("connections_established"), 50);
}

/// A ramp slower than the shortest check offsets: the early connections
/// find the hold not begun and wait for it (no polling); every one is
/// still checked once it begins.
#[test]
fn hold_checks_connections_that_waited_for_the_ramp() {
    let _g = serial();
    let s = Server::start(|| Echo);
    let r = load(&[
        &s.url("tcp"),
        "-c",
        "40",
        "--connect-rate",
        "40",
        "--hold",
        "1s",
        "--hold-sample",
        "100",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.j()["hold_checks"]["verified"], 40, "{}", r.show());
}

#[test]
fn connect_only_reports_connections_per_second() {
    let _g = serial();
    let s = Server::start(|| Echo);
    let r = load(&[
        &s.url("tcp"),
        "-c",
        "300",
        "--connect-only",
        "--connect-concurrency",
        "50",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("connections_established"), 300);
    assert!(r.j()["connections_per_sec"].as_f64().unwrap_or(0.0) > 10.0);
    assert_eq!(r.j()["mode"], "connect-only");
}

#[test]
fn connect_rate_paces_connections() {
    let _g = serial();
    let s = Server::start(|| Echo);
    let t = std::time::Instant::now();
    let r = load(&[
        &s.url("tcp"),
        "-c",
        "50",
        "--connect-rate",
        "100",
        "-m",
        "2",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(t.elapsed().as_secs_f64() >= 0.4, "50 at 100/s take ~0.5 s");
    assert_eq!(r.u("messages"), 100);
}

#[test]
fn websocket_echo_binary_and_text() {
    let _g = serial();
    let cfg: Arc<ServerConfig> = ServerConfig::default().into();
    let s = Server::start(move || WsEcho(ServerConnection::new(cfg.clone())));
    let url = format!("ws://{}/echo", s.addr);
    let r = load(&[
        &url, "-c", "5", "-m", "50", "-w", "3", "-s", "1..3000", "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("messages"), 250);
    let r = load(&[&url, "-c", "5", "-m", "20", "--text", "-s", "100", "-q"]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("messages"), 100);
}

/// Counts the connections that negotiated permessage-deflate.
struct DeflateCount(WsEcho, Arc<AtomicUsize>, bool);

impl myriad::Handler for DeflateCount {
    fn on_data(&mut self, cx: &mut myriad::Ctx<'_>, data: &mut [u8]) -> usize {
        let n = self.0.on_data(cx, data);
        if !self.2 && self.0 .0.deflate().is_some() {
            self.2 = true;
            self.1.fetch_add(1, Ordering::Relaxed);
        }
        n
    }
}

#[test]
fn websocket_deflate_offer_follows_the_servers_answer() {
    let _g = serial();
    // the server answers server_no_context_takeover;
    // client_no_context_takeover, which the offer did not contain
    let cfg: Arc<ServerConfig> = ServerConfig {
        deflate: Some(DeflateConfig::default()),
        ..ServerConfig::default()
    }
    .into();
    let negotiated = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&negotiated);
    let s = Server::start(move || {
        DeflateCount(
            WsEcho(ServerConnection::new(cfg.clone())),
            Arc::clone(&n),
            false,
        )
    });
    let url = format!("ws://{}/", s.addr);
    for extra in [&["--text"][..], &[]] {
        let mut args = vec![
            &url[..],
            "--deflate",
            "-c",
            "4",
            "-m",
            "30",
            "-s",
            "1..4000",
            "-q",
        ];
        args.extend_from_slice(extra);
        let r = load(&args);
        assert_eq!(r.code, 0, "{}", r.show());
        assert_eq!(r.u("messages"), 120);
    }
    assert_eq!(negotiated.load(Ordering::Relaxed), 8);
    // a server without the extension declines it; the run is the same
    let cfg: Arc<ServerConfig> = ServerConfig::default().into();
    let s = Server::start(move || WsEcho(ServerConnection::new(cfg.clone())));
    let url = format!("ws://{}/", s.addr);
    let r = load(&[&url, "--deflate", "-c", "2", "-m", "10", "-q"]);
    assert_eq!(r.code, 0, "{}", r.show());
    // and the flag needs a WebSocket target
    let r = load_raw(&["tcp://127.0.0.1:9", "--deflate"]);
    assert_eq!(r.status.code(), Some(2));
}

#[test]
fn websocket_hold_reverifies_after_parking_the_decoder() {
    // Held WebSocket connections drop their frame decoder while idle; the
    // hold check must make a new one and verify the echo with it.
    let _g = serial();
    let cfg: Arc<ServerConfig> = ServerConfig::default().into();
    let s = Server::start(move || WsEcho(ServerConnection::new(cfg.clone())));
    let url = format!("ws://{}/", s.addr);
    let r = load(&[
        &url,
        "-c",
        "20",
        "--hold",
        "1s",
        "--hold-sample",
        "100",
        "-s",
        "1..300",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.j()["hold_checks"]["verified"], 20, "{}", r.show());
    assert_eq!(r.u("connections_established"), 20);
}

#[test]
fn websocket_against_a_plain_tcp_echo_fails_the_handshake() {
    let _g = serial();
    let s = Server::start(|| Echo);
    let url = format!("ws://{}/", s.addr);
    let r = load(&[&url, "-c", "2", "-m", "1", "--timeout", "1s", "-q"]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(r.err("ws_handshake"), 2, "{}", r.show());
}

#[test]
fn html_report_has_three_inline_charts() {
    let _g = serial();
    let s = Server::start(|| Echo);
    let html = std::env::temp_dir().join(format!("myriad-load-{}.html", std::process::id()));
    let path = html.to_string_lossy().into_owned();
    let r = load(&[&s.url("tcp"), "-c", "5", "-d", "1s", "--html", &path, "-q"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let page = std::fs::read_to_string(&html).expect("html written");
    let _ = std::fs::remove_file(&html);
    assert_eq!(page.matches("<svg").count(), 3);
    assert!(page.contains("Messages per second"));
    assert!(page.contains("Latency by percentile"));
    assert!(page.contains("Open connections"));
}

#[test]
fn bad_input_is_one_line_naming_the_flag_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["nonsense"], "<URL>"),
        (&["tcp://127.0.0.1:99999"], "<URL>"),
        (&["tcp://127.0.0.1"], "<URL>"),
        (&["tls://127.0.0.1"], "<URL>"),
        (
            &["tls://127.0.0.1:1", "--ca", "/nonexistent/ca.pem"],
            "--ca",
        ),
        (&["tcp://127.0.0.1:9", "--insecure"], "--insecure"),
        (&["ws://127.0.0.1:9", "--ca", "/etc/hostname"], "--ca"),
        (
            &["wss://127.0.0.1:9", "--insecure", "--sni", "bad name!"],
            "--sni",
        ),
        (
            &["tls://127.0.0.1:9", "--insecure", "--ca", "x.pem"],
            "--insecure",
        ),
        (&["tcp://127.0.0.1:9", "--size", "0"], "--size"),
        (&["tcp://127.0.0.1:9", "--size", "4k..64"], "--size"),
        (&["tcp://127.0.0.1:9", "--size", "lots"], "--size"),
        (
            &["tcp://127.0.0.1:9", "--duration", "10parsecs"],
            "--duration",
        ),
        (&["tcp://127.0.0.1:9", "--warmup=-1s"], "--warmup"),
        (
            &["tcp://127.0.0.1:9", "--source-ips", "127.0.0.9-127.0.0.2"],
            "--source-ips",
        ),
        (
            &["tcp://127.0.0.1:9", "--source-ips", "127.0.0.0/40"],
            "--source-ips",
        ),
        (
            &["tcp://127.0.0.1:9", "--connections", "zero"],
            "--connections",
        ),
        (&["tcp://127.0.0.1:9", "--rate", "0"], "--rate"),
        (&["tcp://127.0.0.1:9", "--text"], "--text"),
        (
            &["tcp://127.0.0.1:9", "--think", "1ms", "--window", "3"],
            "--window",
        ),
    ];
    for (args, flag) in cases {
        let out = load_raw(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line: {err}"
        );
        assert!(err.contains(flag), "{args:?}: names {flag}: {err}");
    }
}
