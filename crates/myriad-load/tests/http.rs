//! `http://` and `https://` targets end to end: the `myriad-load` binary
//! against the small HTTP server of `common/http.rs` (std::net, a thread
//! per connection; on a Myriad engine behind TLS for https://), well
//! behaved and deliberately broken. Loopback only; counts and error kinds
//! are read from the JSON report.

mod common;

use common::http::{HttpHandler, HttpServer};
use common::{load, load_raw, serial, Pki, Server};

#[test]
fn get_keep_alive_verified_and_reported() {
    let _g = serial();
    let s = HttpServer::start();
    let r = load(&[&s.url("/"), "-c", "4", "-m", "50", "-q"]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("connections_established"), 4);
    assert_eq!(r.u("messages"), 200);
    // 13-byte bodies: the bytes counted are the response bodies.
    assert_eq!(r.j()["latency_us"]["count"], 200);
    assert_eq!(r.u("reconnects"), 0);
    assert_eq!(r.u("errors_total"), 0);
    assert!(r.stdout.contains("req/s"), "{}", r.stdout);
    // A timed run counts requests per second.
    let r = load(&[&s.url("/"), "-c", "2", "-d", "1s", "-q"]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(
        r.j()["messages_per_sec"].as_f64().unwrap_or(0.0) > 100.0,
        "{}",
        r.show()
    );
}

#[test]
fn post_echo_pipelined_window_and_chunked_responses() {
    let _g = serial();
    let s = HttpServer::start();
    for path in ["/echo", "/chunked"] {
        let r = load(&[
            &s.url(path),
            "--method",
            "POST",
            "--expect-echo",
            "-c",
            "3",
            "-w",
            "8",
            "-s",
            "1..3000",
            "-m",
            "100",
            "-q",
        ]);
        assert_eq!(r.code, 0, "{path}: {}", r.show());
        assert_eq!(r.u("messages"), 300, "{path}");
        assert_eq!(r.u("errors_total"), 0, "{path}");
    }
    // GET of a chunked body (any body).
    let r = load(&[&s.url("/chunked"), "-c", "2", "-w", "4", "-m", "20", "-q"]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("messages"), 40);
}

#[test]
fn connection_close_reconnects_and_resends_the_pipelined_rest() {
    let _g = serial();
    let s = HttpServer::start();
    // Every 4th response closes its connection; 4 of them pipelined: the
    // requests sent behind a closing response go again on a new
    // connection. 20 requests: responses 4, 8, 12, 16 reopen (the 20th
    // is the last one anyway).
    let r = load(&[
        &s.url("/close/4"),
        "--method",
        "POST",
        "--expect-echo",
        "-c",
        "3",
        "-w",
        "4",
        "-m",
        "20",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("messages"), 60);
    assert_eq!(r.u("reconnects"), 12, "{}", r.show());
    assert_eq!(r.u("connections_established"), 3);
    assert_eq!(r.u("errors_total"), 0);
}

#[test]
fn body_until_close_and_idle_close_reconnect() {
    let _g = serial();
    let s = HttpServer::start();
    let r = load(&[
        &s.url("/until-close"),
        "--method",
        "POST",
        "--expect-echo",
        "-s",
        "1..500",
        "-c",
        "2",
        "-m",
        "5",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("messages"), 10);
    assert_eq!(r.u("reconnects"), 8, "{}", r.show());
    // Closed while idle (thinking): reopened; the last response ends the
    // run first.
    let r = load(&[
        &s.url("/silent-close"),
        "--think",
        "50ms",
        "-c",
        "2",
        "-m",
        "3",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("messages"), 6);
    assert_eq!(r.u("reconnects"), 4, "{}", r.show());
    // Closed with a request in flight and no warning: an error.
    let r = load(&[
        &s.url("/silent-close"),
        "-w",
        "2",
        "-c",
        "2",
        "-m",
        "3",
        "-q",
    ]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(r.err("early_close"), 2, "{}", r.show());
}

#[test]
fn wrong_status_is_its_own_error_kind_and_the_connection_goes_on() {
    let _g = serial();
    let s = HttpServer::start();
    let url = s.url("/status/3");
    let args = [&url[..], "-c", "2", "-w", "2", "-m", "9", "-q"];
    let r = load(&args);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(r.err("http_status"), 6, "{}", r.show());
    assert_eq!(r.u("errors_total"), 6);
    assert_eq!(r.u("messages"), 12);
    let sample = r.j()["error_samples"][0].as_str().unwrap_or_default();
    assert!(sample.contains("status 503, expected 200"), "{sample}");
    let mut more = args.to_vec();
    more.extend(["--allow-errors", "6"]);
    assert_eq!(load(&more).code, 0);
    // Expecting the status the server gives.
    let r = load(&[
        &s.url("/"),
        "--expect-status",
        "404",
        "-c",
        "1",
        "-m",
        "3",
        "-q",
    ]);
    assert_eq!(r.err("http_status"), 3, "{}", r.show());
}

#[test]
fn broken_responses_are_counted_by_kind() {
    let _g = serial();
    let s = HttpServer::start();
    let post = ["--method", "POST", "--expect-echo", "-s", "100"];
    let cases: &[(&str, &[&str], &str)] = &[
        // one byte short, then the close: the body is cut
        ("/short/3", &[], "early_close"),
        // the connection ends in the middle of a head
        ("/cut/2", &[], "early_close"),
        ("/garbled/2", &[], "http_protocol"),
        ("/flip/5", &post, "mismatch"),
    ];
    for (path, extra, kind) in cases {
        let url = s.url(path);
        let mut args = vec![&url[..], "-c", "3", "-w", "3", "-m", "10", "-q"];
        args.extend_from_slice(extra);
        let r = load(&args);
        assert_eq!(r.code, 1, "{path}: {}", r.show());
        assert_eq!(r.err(kind), 3, "{path}: {}", r.show());
        assert_eq!(r.u("errors_total"), 3, "{path}: {}", r.show());
    }
    let r = load(&[
        &s.url("/flip/1"),
        "--method",
        "PUT",
        "--expect-echo",
        "--no-verify",
        "-c",
        "1",
        "-m",
        "3",
        "-q",
    ]);
    assert_eq!(r.code, 0, "--no-verify skips the body: {}", r.show());
}

#[test]
fn a_plain_echo_is_not_an_http_server() {
    let _g = serial();
    let s = Server::start(|| common::Echo);
    // The echo sends the request back: not a response.
    let url = format!("http://{}/", s.addr);
    let r = load(&[&url, "-c", "2", "-m", "1", "-q"]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(r.err("http_protocol"), 2, "{}", r.show());
}

#[test]
fn https_through_the_tls_client_filter() {
    let _g = serial();
    let pki = Pki::new();
    let s = Server::start_tls(&pki.acceptor("", &["http/1.1"]), HttpHandler::default);
    let url = format!("https://{}/close/7", s.addr);
    let r = load(&[
        &url,
        "--ca",
        &pki.path("ca.pem"),
        "--method",
        "POST",
        "--expect-echo",
        "-c",
        "3",
        "-w",
        "4",
        "-s",
        "1..2000",
        "-m",
        "30",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("messages"), 90);
    // 30 requests, every 7th response closes: 4 reconnects each.
    assert_eq!(r.u("reconnects"), 12, "{}", r.show());
    assert_eq!(r.j()["tls_handshakes"]["full"], 15);
    assert!(r.stdout.contains("connect+TLS"), "{}", r.stdout);
}

#[test]
fn http_flags_need_an_http_target() {
    let cases: &[(&[&str], &str)] = &[
        (&["tcp://127.0.0.1:9", "--method", "POST"], "--method"),
        (&["ws://127.0.0.1:9", "--expect-echo"], "--expect-echo"),
        (&["http://127.0.0.1:9", "--expect-echo"], "--expect-echo"),
        (&["http://127.0.0.1:9", "--method", "G T"], "--method"),
        (
            &["http://127.0.0.1:9", "--expect-status", "99"],
            "--expect-status",
        ),
        (&["http://127.0.0.1:9", "--max-head", "10"], "--max-head"),
        (&["http://127.0.0.1:9/\u{e9}"], "<URL>"),
        (&["http://127.0.0.1:9", "--insecure"], "--insecure"),
    ];
    for (args, flag) in cases {
        let out = load_raw(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: names {flag}: {err}");
    }
}
