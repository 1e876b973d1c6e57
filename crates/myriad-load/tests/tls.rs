//! `tls://` and `wss://` targets end to end: Myriad echoes behind a
//! `myriad-tls` acceptor in this process (loopback only), certificates made
//! by rcgen for each test, `myriad-load` run as a binary and its JSON parsed.

mod common;

use std::sync::Arc;

use common::{load, serial, Echo, Pki, Server, WsEcho};
use myriad::{Ctx, Handler};
use myriad_ws::{ServerConfig, ServerConnection};

#[test]
fn tls_echo_verified_against_the_ca() {
    let _g = serial();
    let pki = Pki::new();
    let s = Server::start_tls(&pki.acceptor("", &[]), || Echo);
    let ca = pki.path("ca.pem");
    // The URL's host is an IP address: checked against the certificate's
    // IP entry.
    let r = load(&[
        &s.url("tls"),
        "--ca",
        &ca,
        "-c",
        "10",
        "-w",
        "4",
        "-s",
        "16..3000",
        "-m",
        "50",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("connections_established"), 10);
    assert_eq!(r.u("messages"), 500);
    assert_eq!(r.u("errors_total"), 0);
    // One connect time per connection, TLS handshake included.
    assert_eq!(r.j()["connect_us"]["count"], 10);
    assert!(r.stdout.contains("connect+TLS"), "{}", r.stdout);
    assert_eq!(r.j()["tls_handshakes"]["full"], 10);
    assert_eq!(r.j()["tls_handshakes"]["resumed"], 0);
    // The same by name, TLS 1.2 only, with session resumption.
    let r = load(&[
        &s.url("tls"),
        "--ca",
        &ca,
        "--sni",
        "localhost",
        "--tls-version",
        "1.2",
        "--tls-resume",
        "-c",
        "20",
        "--connect-only",
        "--connect-concurrency",
        "4",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("connections_established"), 20);
    // Only the first wave has no session to resume.
    let hs = &r.j()["tls_handshakes"];
    assert_eq!(
        hs["full"].as_u64().unwrap() + hs["resumed"].as_u64().unwrap(),
        20,
        "{hs}"
    );
    assert!(hs["resumed"].as_u64().unwrap() >= 16, "{hs}");
    // TLS 1.3 tickets are used once each: the first wave of 20 makes full
    // handshakes, and every later connection finds a ticket the earlier
    // ones brought (counted on the client; the server must accept it).
    let r = load(&[
        &s.url("tls"),
        "--ca",
        &ca,
        "--tls-version",
        "1.3",
        "--tls-resume",
        "-c",
        "40",
        "--connect-only",
        "--connect-concurrency",
        "20",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.j()["tls_handshakes"]["full"], 20, "{}", r.show());
    assert_eq!(r.j()["tls_handshakes"]["resumed"], 20, "{}", r.show());
}

#[test]
fn wss_echo_binary_and_text() {
    let _g = serial();
    let pki = Pki::new();
    let cfg: Arc<ServerConfig> = ServerConfig::default().into();
    let s = Server::start_tls(&pki.acceptor("", &[]), move || {
        WsEcho(ServerConnection::new(cfg.clone()))
    });
    let url = format!("wss://localhost:{}/echo", s.addr.port());
    let ca = pki.path("ca.pem");
    let r = load(&[
        &url, "--ca", &ca, "-c", "5", "-m", "40", "-w", "3", "-s", "1..3000", "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("messages"), 200);
    let r = load(&[
        &url, "--ca", &ca, "-c", "3", "-m", "20", "--text", "-s", "100", "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("messages"), 60);
}

#[test]
fn untrusted_ca_is_tls_unknown_ca_and_exit_1() {
    let _g = serial();
    let pki = Pki::new();
    // The server's certificate comes from the rogue CA; we trust the other.
    let s = Server::start_tls(&pki.acceptor("rogue-", &[]), || Echo);
    let ca = pki.path("ca.pem");
    let args = [
        s.url("tls"),
        "--ca".into(),
        ca,
        "-c".into(),
        "4".into(),
        "-m".into(),
        "5".into(),
        "-q".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = load(&args);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(r.err("tls_unknown_ca"), 4, "{}", r.show());
    assert_eq!(r.u("errors_total"), 4, "{}", r.show());
    assert_eq!(r.u("connections_established"), 0);
    assert!(r.stdout.contains("tls_unknown_ca=4"), "{}", r.stdout);
    let sample = r.j()["error_samples"][0].as_str().unwrap_or_default();
    assert!(sample.starts_with("tls_unknown_ca: connection"), "{sample}");
    // Forgiven with --allow-errors.
    let mut more = args.clone();
    more.extend(["--allow-errors", "4"]);
    let r = load(&more);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.err("tls_unknown_ca"), 4);
}

#[test]
fn wrong_server_name_is_tls_bad_certificate() {
    let _g = serial();
    let pki = Pki::new();
    let s = Server::start_tls(&pki.acceptor("", &[]), || Echo);
    let r = load(&[
        &s.url("tls"),
        "--ca",
        &pki.path("ca.pem"),
        "--sni",
        "not-the-server.test",
        "-c",
        "3",
        "-m",
        "1",
        "-q",
    ]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(r.err("tls_bad_certificate"), 3, "{}", r.show());
}

#[test]
fn insecure_connects_to_an_untrusted_server() {
    let _g = serial();
    let pki = Pki::new();
    let s = Server::start_tls(&pki.acceptor("rogue-", &[]), || Echo);
    let r = load(&[
        &s.url("tls"),
        "--insecure",
        "--sni",
        "any.name.test",
        "-c",
        "4",
        "-w",
        "2",
        "-m",
        "25",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.u("messages"), 100);
    assert_eq!(r.u("errors_total"), 0);
}

#[test]
fn alpn_offer_is_negotiated_or_refused() {
    let _g = serial();
    let pki = Pki::new();
    let s = Server::start_tls(&pki.acceptor("", &["echo/1"]), || Echo);
    let ca = pki.path("ca.pem");
    let r = load(&[
        &s.url("tls"),
        "--ca",
        &ca,
        "--alpn",
        "h2,echo/1",
        "-c",
        "2",
        "-m",
        "3",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    // No protocol in common: the server refuses with an alert.
    let r = load(&[
        &s.url("tls"),
        "--ca",
        &ca,
        "--alpn",
        "h2",
        "-c",
        "2",
        "-m",
        "3",
        "-q",
    ]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(r.err("tls_handshake"), 2, "{}", r.show());
}

#[test]
fn plaintext_echo_is_a_tls_handshake_error() {
    let _g = serial();
    let pki = Pki::new();
    // A plain echo sends the ClientHello back: not a server's answer.
    let s = Server::start(|| Echo);
    let r = load(&[
        &s.url("tls"),
        "--ca",
        &pki.path("ca.pem"),
        "-c",
        "3",
        "-m",
        "1",
        "-q",
    ]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(r.err("tls_handshake"), 3, "{}", r.show());
}

/// Accepts and never answers.
struct Silent;

impl Handler for Silent {
    fn on_data(&mut self, _cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        data.len()
    }
}

#[test]
fn silent_server_is_a_handshake_timeout() {
    let _g = serial();
    let pki = Pki::new();
    let s = Server::start(|| Silent);
    let r = load(&[
        &s.url("tls"),
        "--ca",
        &pki.path("ca.pem"),
        "--handshake-timeout",
        "300ms",
        "-c",
        "3",
        "-m",
        "1",
        "-q",
    ]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(r.err("tls_handshake_timeout"), 3, "{}", r.show());
}
