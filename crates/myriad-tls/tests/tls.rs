//! TLS over the engine, on both backends, against real peers: Myriad's own
//! client, `openssl s_client` (TLS 1.2 and 1.3, resumption) and Python's
//! `ssl` module. Every test makes its own CA and certificates with rcgen.

use myriad::{BackendKind, CloseReason, ConnectOptions, Ctx, Engine, Handler, Service};
use myriad_tls::{ClientAuth, ClientTlsConfig, ServerTlsConfig, TlsAcceptor, TlsConnector};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn io_uring() { super::$name(myriad::BackendKind::IoUring) }
                #[test]
                fn epoll() { super::$name(myriad::BackendKind::Epoll) }
            }
        )*
    };
}

both_backends!(
    myriad_client_echo,
    openssl_tls12_and_tls13,
    openssl_resumption,
    many_connections_resume_at_once,
    python_client_alpn_and_sni,
    mutual_tls,
    plaintext_to_tls_port,
    handshake_timeout,
    reload_keeps_established,
    truncated_record,
);

struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Writes `<prefix>ca.pem`, and leaf certificates signed by it.
fn make_ca(dir: &Path, prefix: &str, leaves: &[(&str, &[&str])]) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("myriad test CA {prefix}"),
    );
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join(format!("{prefix}ca.pem")), ca.pem()).unwrap();
    for (name, sans) in leaves {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{prefix}{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{prefix}{name}.key")), key.serialize_pem()).unwrap();
    }
}

fn pki() -> Pki {
    let dir = std::env::temp_dir().join(format!(
        "myriad-tls-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    make_ca(
        &dir,
        "",
        &[
            ("server", &["localhost", "127.0.0.1"]),
            ("other", &["other.test"]),
            ("client", &["client.test"]),
        ],
    );
    // A second, untrusted CA with its own client and server certificates.
    make_ca(
        &dir,
        "rogue-",
        &[("client", &["client.test"]), ("server", &["localhost"])],
    );
    Pki { dir }
}

struct Echo;
impl Handler for Echo {
    fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
        cx.write(d);
        d.len()
    }
}

fn server(
    kind: BackendKind,
    acceptor: &TlsAcceptor,
    f: impl FnOnce(Service) -> Service,
) -> (Engine, SocketAddr) {
    let svc = f(
        Service::new("tls-echo", "127.0.0.1:0".parse().unwrap(), || Echo)
            .filter(acceptor.factory()),
    );
    let engine = Engine::builder()
        .threads(1)
        .backend(kind)
        .service(svc)
        .start()
        .unwrap();
    let addr = engine.local_addrs(0)[0];
    (engine, addr)
}

fn default_acceptor(p: &Pki) -> TlsAcceptor {
    TlsAcceptor::new(
        &ServerTlsConfig::from_pem_files(p.path("server.pem"), p.path("server.key")).unwrap(),
    )
    .unwrap()
}

/// Runs a Python `ssl` client: connects, optionally with SNI/ALPN/client
/// cert, sends `msg`, prints `OK <alpn> <echo>` or `ERR <reason>`.
fn python_client(
    addr: SocketAddr,
    ca: &Path,
    sni: &str,
    alpn: Option<&str>,
    cert: Option<(&Path, &Path)>,
    msg: &str,
) -> String {
    let script = r#"
import socket, ssl, sys
host, port, ca, sni, alpn, cert, key, msg = sys.argv[1:9]
if msg.startswith("@"): msg = "x" * int(msg[1:])
ctx = ssl.create_default_context(cafile=ca)
if alpn != "-": ctx.set_alpn_protocols([alpn])
if cert != "-": ctx.load_cert_chain(cert, key)
try:
    s = socket.create_connection((host, int(port)), timeout=10)
    t = ctx.wrap_socket(s, server_hostname=sni)
    t.sendall(msg.encode())
    got = b""
    while len(got) < len(msg):
        chunk = t.recv(4096)
        if not chunk: break
        got += chunk
    if len(msg) > 1000: got = b"len=%d ok=%s" % (len(got), str(got == msg.encode()).encode())
    print("OK", t.selected_alpn_protocol(), t.version(), got.decode())
except Exception as e:
    print("ERR", type(e).__name__, e)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args([
            addr.ip().to_string(),
            addr.port().to_string(),
            ca.display().to_string(),
            sni.to_string(),
            alpn.unwrap_or("-").to_string(),
            cert.map_or("-".into(), |c| c.0.display().to_string()),
            cert.map_or("-".into(), |c| c.1.display().to_string()),
            msg.to_string(),
        ])
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `openssl s_client` sending `input`, keeping stdin open a moment so the
/// echo (and TLS 1.3 session tickets) arrive before it quits.
fn s_client(addr: SocketAddr, ca: &Path, extra: &[&str], input: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(ca)
        .args([
            "-servername",
            "localhost",
            "-verify_return_error",
            "-ign_eof",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    drop(stdin);
    // -ign_eof keeps reading after stdin ends; the server's close ends it.
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Client {
    left: u32,
    expect: Vec<u8>,
    done: mpsc::Sender<Result<(), String>>,
}
impl Handler for Client {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        self.expect = format!("message {}", self.left).into_bytes();
        cx.write(&self.expect);
    }
    fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
        if d.len() < self.expect.len() {
            return 0;
        }
        let n = self.expect.len();
        if d[..n] != self.expect[..] {
            let _ = self.done.send(Err("echo mismatch".into()));
            cx.close();
            return d.len();
        }
        self.left -= 1;
        if self.left == 0 {
            let _ = self.done.send(Ok(()));
            cx.close();
        } else {
            self.expect = format!("message {}", self.left).into_bytes();
            cx.write(&self.expect);
        }
        n
    }
    fn on_close(&mut self, _cx: &mut Ctx<'_>, reason: CloseReason) {
        if self.left > 0 {
            let _ = self.done.send(Err(format!("closed early: {reason}")));
        }
    }
}

/// Opens `n` TLS connections at once from `client`, each echoing
/// `messages` messages, and waits for all of them to finish well.
fn echo_clients(
    client: &Engine,
    addr: SocketAddr,
    connector: &TlsConnector,
    n: usize,
    messages: u32,
) {
    let (tx, rx) = mpsc::channel();
    for _ in 0..n {
        let opts = ConnectOptions {
            filter: Some(connector.factory("localhost").unwrap()),
            ..Default::default()
        };
        client.loop_handle(0).connect(
            addr,
            opts,
            Client {
                left: messages,
                expect: Vec::new(),
                done: tx.clone(),
            },
        );
    }
    for _ in 0..n {
        rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();
    }
}

fn myriad_client_echo(kind: BackendKind) {
    let p = pki();
    let (engine, addr) = server(kind, &default_acceptor(&p), |s| s);
    let connector = TlsConnector::new(&ClientTlsConfig::with_ca_file(p.path("ca.pem"))).unwrap();
    let client = Engine::builder().threads(1).backend(kind).start().unwrap();
    echo_clients(&client, addr, &connector, 20, 100);
    assert_eq!(engine.stats().err_filter, 0);
    // A large message crosses many TLS records and reads.
    let r = python_client(addr, &p.path("ca.pem"), "localhost", None, None, "@300000");
    assert!(
        r.starts_with("OK") && r.ends_with("len=300000 ok=True"),
        "{r}"
    );
}

fn openssl_tls12_and_tls13(kind: BackendKind) {
    let p = pki();
    let (_engine, addr) = server(kind, &default_acceptor(&p), |s| s);
    let out12 = s_client(
        addr,
        &p.path("ca.pem"),
        &["-tls1_2"],
        "hello over tls 1.2\n",
    );
    assert!(out12.contains("hello over tls 1.2"), "{out12}");
    assert!(out12.contains("TLSv1.2"), "{out12}");
    assert!(out12.contains("Verify return code: 0"), "{out12}");
    let out13 = s_client(
        addr,
        &p.path("ca.pem"),
        &["-tls1_3"],
        "hello over tls 1.3\n",
    );
    assert!(out13.contains("hello over tls 1.3"), "{out13}");
    assert!(out13.contains("TLSv1.3"), "{out13}");
}

fn many_connections_resume_at_once(kind: BackendKind) {
    // More connections in flight than rustls's own cache keeps tickets for
    // (8 per server): with the connector's store, every one offers one.
    let p = pki();
    let acceptor = default_acceptor(&p);
    let (engine, addr) = server(kind, &acceptor, |s| s);
    let mut cfg = ClientTlsConfig::with_ca_file(p.path("ca.pem"));
    cfg.tickets_per_server = 64;
    let connector = TlsConnector::new(&cfg).unwrap();
    let store = connector.session_store().unwrap().clone();
    let client = Engine::builder().threads(1).backend(kind).start().unwrap();
    const N: u64 = 20;
    echo_clients(&client, addr, &connector, N as usize, 1);
    // The filters are made as the TCP connects complete: one that completes
    // after another's handshake (a loaded machine) may already find a ticket.
    let (h0, m0) = (store.hits(), store.misses());
    assert_eq!(h0 + m0, N, "first round");
    assert!(m0 >= 1, "first round: {h0} tickets from nowhere");
    echo_clients(&client, addr, &connector, N as usize, 1);
    assert_eq!(
        (store.hits() - h0, store.misses() - m0),
        (N, 0),
        "second round"
    );
    // Both sides saw every offered ticket resume.
    let both = myriad_tls::HandshakeCounts {
        full: m0,
        resumed: N + h0,
    };
    assert_eq!(connector.handshakes(), both, "client");
    assert_eq!(acceptor.handshakes(), both, "server");
    assert_eq!(engine.stats().err_filter, 0);
}

fn openssl_resumption(kind: BackendKind) {
    let p = pki();
    let (_engine, addr) = server(kind, &default_acceptor(&p), |s| s);
    let sess = p.path("session.pem");
    let sess = sess.to_str().unwrap();
    for v in ["-tls1_3", "-tls1_2"] {
        let first = s_client(addr, &p.path("ca.pem"), &[v, "-sess_out", sess], "first\n");
        assert!(first.contains("first") && first.contains("New,"), "{first}");
        let second = s_client(addr, &p.path("ca.pem"), &[v, "-sess_in", sess], "second\n");
        assert!(second.contains("second"), "{second}");
        assert!(
            second.contains("Reused,"),
            "session not resumed with {v}: {second}"
        );
    }
}

fn python_client_alpn_and_sni(kind: BackendKind) {
    let p = pki();
    let mut cfg =
        ServerTlsConfig::from_pem_files(p.path("server.pem"), p.path("server.key")).unwrap();
    cfg.alpn = vec!["h2".into(), "http/1.1".into()];
    cfg.sni.push((
        "other.test".into(),
        p.path("other.pem"),
        p.path("other.key"),
    ));
    let acceptor = TlsAcceptor::new(&cfg).unwrap();
    let (_engine, addr) = server(kind, &acceptor, |s| s);
    let r = python_client(
        addr,
        &p.path("ca.pem"),
        "localhost",
        Some("http/1.1"),
        None,
        "alpn",
    );
    assert!(r.starts_with("OK http/1.1"), "{r}");
    assert!(r.ends_with("alpn"), "{r}");
    // SNI picks the other certificate: verification for other.test passes.
    let r = python_client(addr, &p.path("ca.pem"), "other.test", None, None, "sni");
    assert!(r.starts_with("OK") && r.ends_with("sni"), "{r}");
}

fn mutual_tls(kind: BackendKind) {
    let p = pki();
    let mut cfg =
        ServerTlsConfig::from_pem_files(p.path("server.pem"), p.path("server.key")).unwrap();
    cfg.client_auth = ClientAuth::Required(p.path("ca.pem"));
    let (engine, addr) = server(kind, &TlsAcceptor::new(&cfg).unwrap(), |s| s);
    let good = python_client(
        addr,
        &p.path("ca.pem"),
        "localhost",
        None,
        Some((&p.path("client.pem"), &p.path("client.key"))),
        "with a good cert",
    );
    assert!(
        good.starts_with("OK") && good.ends_with("with a good cert"),
        "{good}"
    );
    let rogue = python_client(
        addr,
        &p.path("ca.pem"),
        "localhost",
        None,
        Some((&p.path("rogue-client.pem"), &p.path("rogue-client.key"))),
        "rogue",
    );
    assert!(
        rogue.starts_with("ERR"),
        "a certificate from an unknown CA was accepted: {rogue}"
    );
    let none = python_client(addr, &p.path("ca.pem"), "localhost", None, None, "none");
    assert!(
        none.starts_with("ERR"),
        "no client certificate was accepted: {none}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.stats().err_filter < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(engine.stats().err_filter >= 2, "{:?}", engine.stats());
    let kinds = engine.filter_errors();
    assert!(
        kinds.iter().any(|k| k.0 == "unknown_ca")
            && kinds.iter().any(|k| k.0 == "no_client_certificate"),
        "{kinds:?}"
    );
    // The server survives: the good client still works.
    let again = python_client(
        addr,
        &p.path("ca.pem"),
        "localhost",
        None,
        Some((&p.path("client.pem"), &p.path("client.key"))),
        "again",
    );
    assert!(again.starts_with("OK"), "{again}");
}

fn plaintext_to_tls_port(kind: BackendKind) {
    let p = pki();
    let (engine, addr) = server(kind, &default_acceptor(&p), |s| s);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 256];
    // The server answers with an alert record (content type 21) or just
    // closes; either way the connection ends and nothing is echoed.
    let mut got = Vec::new();
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert!(got.is_empty() || got[0] == 21, "unexpected reply {got:?}");
    assert_eq!(engine.stats().err_filter, 1);
    assert_eq!(engine.filter_errors(), vec![("not_tls", 1)]);
    // Other connections are unaffected.
    let r = python_client(
        addr,
        &p.path("ca.pem"),
        "localhost",
        None,
        None,
        "still fine",
    );
    assert!(r.starts_with("OK"), "{r}");
}

fn handshake_timeout(kind: BackendKind) {
    let p = pki();
    let (engine, addr) = server(kind, &default_acceptor(&p), |s| {
        s.handshake_timeout(Duration::from_millis(300))
    });
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a silent client is closed");
    assert_eq!(engine.stats().err_handshake_timeout, 1);
}

fn reload_keeps_established(kind: BackendKind) {
    let p = pki();
    let acceptor = default_acceptor(&p);
    let (_engine, addr) = server(kind, &acceptor, |s| s);
    // An established session (Myriad's client) keeps echoing across the reload.
    let connector = TlsConnector::new(&ClientTlsConfig::with_ca_file(p.path("ca.pem"))).unwrap();
    let client = Engine::builder().threads(1).backend(kind).start().unwrap();
    let (tx, rx) = mpsc::channel();
    struct Slow {
        n: u32,
        tx: mpsc::Sender<u32>,
    }
    impl Handler for Slow {
        fn on_open(&mut self, cx: &mut Ctx<'_>) {
            cx.write(b"ping");
        }
        fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
            if d.len() < 4 {
                return 0;
            }
            self.n += 1;
            let _ = self.tx.send(self.n);
            cx.set_timer(Duration::from_millis(20), 0);
            4
        }
        fn on_timer(&mut self, cx: &mut Ctx<'_>, _t: u64) {
            cx.write(b"ping");
        }
    }
    let opts = ConnectOptions {
        filter: Some(connector.factory("localhost").unwrap()),
        ..Default::default()
    };
    client.loop_handle(0).connect(addr, opts, Slow { n: 0, tx });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
    // Swap in the rogue CA's server certificate.
    let new =
        ServerTlsConfig::from_pem_files(p.path("rogue-server.pem"), p.path("rogue-server.key"))
            .unwrap();
    acceptor.reload(&new).unwrap();
    // New connections get the new certificate...
    let r = python_client(
        addr,
        &p.path("rogue-ca.pem"),
        "localhost",
        None,
        None,
        "new cert",
    );
    assert!(r.starts_with("OK"), "{r}");
    let r = python_client(addr, &p.path("ca.pem"), "localhost", None, None, "old ca");
    assert!(r.starts_with("ERR"), "{r}");
    // ...and the established one keeps going.
    let before = rx.try_iter().last().unwrap_or(1);
    let mut last = before;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while last < before + 5 && std::time::Instant::now() < deadline {
        if let Ok(n) = rx.recv_timeout(Duration::from_millis(200)) {
            last = n;
        }
    }
    assert!(
        last >= before + 5,
        "established connection stalled after reload"
    );
    // A bad reload is refused and the current configuration stays.
    let bad = ServerTlsConfig::from_pem_files(p.path("missing.pem"), p.path("server.key")).unwrap();
    assert!(acceptor.reload(&bad).is_err());
    let r = python_client(
        addr,
        &p.path("rogue-ca.pem"),
        "localhost",
        None,
        None,
        "still new",
    );
    assert!(r.starts_with("OK"), "{r}");
}

fn truncated_record(kind: BackendKind) {
    let p = pki();
    let (engine, addr) = server(kind, &default_acceptor(&p), |s| s);
    // A Python client that completes the handshake, then writes half of a
    // TLS record by hand on the raw socket and closes without close_notify.
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
t = ctx.wrap_socket(s, server_hostname="localhost")
t.sendall(b"ping"); assert t.recv(4) == b"ping"
# Take the raw socket back without sending close_notify, then write the
# header of an application-data record promising 100 bytes, and only 10.
sock = socket.socket(fileno=t.detach())
sock.sendall(bytes([23, 3, 3, 0, 100]) + b"0123456789")
sock.close()
print("SENT")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args([
            addr.ip().to_string(),
            addr.port().to_string(),
            p.path("ca.pem").display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SENT"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.stats().closed < 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let kinds = engine.filter_errors();
    assert!(kinds.iter().any(|k| k.0 == "truncated"), "{kinds:?}");
    // The server is fine.
    let r = python_client(addr, &p.path("ca.pem"), "localhost", None, None, "after");
    assert!(r.starts_with("OK"), "{r}");
}
