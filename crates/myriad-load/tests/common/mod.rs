//! Echo servers for the tests (all in-process, loopback only) and a runner
//! for the `myriad-load` binary.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use myriad::{Ctx, Engine, Handler, Service};
use myriad_ws::{Event, ServerConnection, Sink};

pub mod http;

/// Tests that start many connections or processes run one at a time (two
/// cores, shared).
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the test lock.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A Myriad engine serving one handler on 127.0.0.1 (ephemeral port).
pub struct Server {
    pub engine: Engine,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start<H: Handler>(factory: impl Fn() -> H + Send + Sync + 'static) -> Server {
        Self::start_svc(Service::new(
            "test",
            "127.0.0.1:0".parse().unwrap(),
            factory,
        ))
    }

    /// The same over TLS (`myriad-tls` acceptor as the service's filter).
    pub fn start_tls<H: Handler>(
        tls: &myriad_tls::TlsAcceptor,
        factory: impl Fn() -> H + Send + Sync + 'static,
    ) -> Server {
        Self::start_svc(
            Service::new("test-tls", "127.0.0.1:0".parse().unwrap(), factory).filter(tls.factory()),
        )
    }

    fn start_svc(svc: Service) -> Server {
        let engine = Engine::builder()
            .threads(1)
            .service(svc.max_connections(100_000))
            .start()
            .expect("engine starts");
        let addr = engine.local_addrs(0)[0];
        Server { engine, addr }
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.engine.shutdown(Duration::from_millis(100));
        let _ = self.engine.wait();
    }
}

/// A CA, a server certificate it signed (for `localhost` and
/// `127.0.0.1`), and a second, untrusted CA with its own `localhost`
/// certificate; PEM files in a fresh directory, removed on drop.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "myriad-load-pki-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("pki dir");
        make_ca(&dir, "", &["localhost", "127.0.0.1"]);
        make_ca(&dir, "rogue-", &["localhost", "127.0.0.1"]);
        Pki { dir }
    }

    /// A file of the set: `ca.pem`, `server.pem`, `server.key`, and the
    /// same with the `rogue-` prefix.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// An acceptor with the server certificate of CA `prefix` ("" or
    /// "rogue-") and these ALPN protocols.
    pub fn acceptor(&self, prefix: &str, alpn: &[&str]) -> myriad_tls::TlsAcceptor {
        let mut cfg = myriad_tls::ServerTlsConfig::from_pem_files(
            self.dir.join(format!("{prefix}server.pem")),
            self.dir.join(format!("{prefix}server.key")),
        )
        .expect("server tls config");
        cfg.alpn = alpn.iter().map(|s| s.to_string()).collect();
        myriad_tls::TlsAcceptor::new(&cfg).expect("tls acceptor")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `<prefix>ca.pem` and `<prefix>server.{pem,key}` signed by it.
fn make_ca(dir: &std::path::Path, prefix: &str, sans: &[&str]) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("myriad-load test CA {prefix}"));
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    std::fs::write(dir.join(format!("{prefix}ca.pem")), ca.pem()).expect("write ca");
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("leaf params");
    let cert = params.signed_by(&key, &ca).expect("leaf");
    std::fs::write(dir.join(format!("{prefix}server.pem")), cert.pem()).expect("write cert");
    std::fs::write(dir.join(format!("{prefix}server.key")), key.serialize_pem())
        .expect("write key");
}

/// Myriad's echo.
pub struct Echo;

impl Handler for Echo {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        cx.write(data);
        data.len()
    }
}

/// How the broken echo misbehaves.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Flips the byte at this position of the server's whole output.
    Flip(u64),
    /// Drops the byte at this position of the server's whole output.
    Drop(u64),
    /// Closes (its sending side: FIN) every connection after echoing this
    /// many bytes.
    CloseAfter(u64),
}

/// An echo that breaks the stream once (or, for `CloseAfter`, on every
/// connection).
pub struct Broken {
    pub fault: Fault,
    pub total: Arc<AtomicU64>,
    pub mine: u64,
}

impl Handler for Broken {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        let n = data.len() as u64;
        let start = self.total.fetch_add(n, Ordering::Relaxed);
        match self.fault {
            Fault::Flip(at) if (start..start + n).contains(&at) => {
                data[(at - start) as usize] ^= 0x01;
                cx.write(data);
            }
            Fault::Drop(at) if (start..start + n).contains(&at) => {
                let i = (at - start) as usize;
                cx.write_vectored(&[&data[..i], &data[i + 1..]]);
            }
            Fault::CloseAfter(limit) => {
                let left = limit.saturating_sub(self.mine) as usize;
                let k = left.min(data.len());
                cx.write(&data[..k]);
                self.mine += k as u64;
                if self.mine >= limit {
                    cx.shutdown_write();
                }
            }
            _ => cx.write(data),
        }
        data.len()
    }
}

pub fn broken(fault: Fault) -> Server {
    let total = Arc::new(AtomicU64::new(0));
    Server::start(move || Broken {
        fault,
        total: total.clone(),
        mine: 0,
    })
}

/// A tokio `current_thread` echo (the baseline) on its own thread.
pub struct TokioEcho {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokioEcho {
    pub fn start() -> TokioEcho {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                addr_tx.send(l.local_addr().expect("addr")).expect("send");
                let serve = async {
                    loop {
                        let Ok((mut s, _)) = l.accept().await else {
                            continue;
                        };
                        let _ = s.set_nodelay(true);
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 4096];
                            loop {
                                match s.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        if s.write_all(&buf[..n]).await.is_err() {
                                            break;
                                        }
                                    }
                                }
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stop_rx => {}
                }
            });
        });
        let addr = addr_rx.recv().expect("tokio echo address");
        TokioEcho {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for TokioEcho {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Result of one `myriad-load` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub json: Option<serde_json::Value>,
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("myriad-load-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// Runs the binary with `args` and `--json`, with a watchdog.
pub fn load(args: &[&str]) -> Run {
    static N: AtomicU64 = AtomicU64::new(0);
    let json = tmp(&format!("out-{}.json", N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_file(&json);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_myriad-load"));
    cmd.args(args).arg("--json").arg(&json);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let parsed = std::fs::read_to_string(&json)
        .ok()
        .map(|s| serde_json::from_str(&s).expect("--json output is valid JSON"));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        json: parsed,
    }
}

/// Runs the binary with exactly `args`.
pub fn load_raw(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_myriad-load"));
    cmd.args(args);
    run_with_timeout(cmd, Duration::from_secs(60))
}

fn run_with_timeout(mut cmd: Command, limit: Duration) -> Output {
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("myriad-load starts");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("myriad-load output"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("myriad-load did not finish within {limit:?}");
        }
    }
}

impl Run {
    pub fn j(&self) -> &serde_json::Value {
        self.json.as_ref().unwrap_or_else(|| {
            panic!(
                "no JSON written (exit {}):\n{}\n{}",
                self.code, self.stdout, self.stderr
            )
        })
    }

    pub fn err(&self, kind: &str) -> u64 {
        self.j()["errors"][kind]
            .as_u64()
            .expect("error kind present")
    }

    pub fn u(&self, key: &str) -> u64 {
        self.j()[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} missing"))
    }

    pub fn show(&self) -> String {
        format!("exit {}\n{}\n{}", self.code, self.stdout, self.stderr)
    }
}

/// A WebSocket echo on the sans-I/O server connection.
pub struct WsEcho(pub ServerConnection);

struct CxSink<'a, 'b>(&'a mut Ctx<'b>);

impl Sink for CxSink<'_, '_> {
    fn write(&mut self, b: &[u8]) {
        self.0.write(b);
    }
}

impl Handler for WsEcho {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        let r = self.0.feed(data, &mut CxSink(cx), &mut |ev, tx| match ev {
            Event::Text(t) => {
                let _ = tx.send_text(t);
            }
            Event::Binary(b) => {
                let _ = tx.send_binary(b);
            }
            _ => {}
        });
        match r {
            Ok(n) => {
                if self.0.is_closed() {
                    cx.close();
                }
                n
            }
            Err(_) => {
                cx.close();
                data.len()
            }
        }
    }
}
