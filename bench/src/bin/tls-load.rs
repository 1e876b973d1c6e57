//! TLS load generator for the TLS benchmark, built on Myriad's own client
//! side (engine connector + `myriad-tls` client filter), so that both
//! servers face exactly the same client.
//!
//! Modes:
//! * `handshake`: C connections at a time; each does a full handshake, one
//!   1-byte echo (so the server has surely finished its side), then closes
//!   with RST and is replaced. Reports handshakes per second.
//! * `resume`: the same with session resumption (TLS 1.3 tickets).
//! * `bulk`: C connections ping-ponging messages of `--size` bytes.
//! * `idle`: opens C connections (handshake + one echo each), prints
//!   `READY n`, holds them until stdin closes or `--duration` passes.
//!
//! Prints `MEASURE_START` / `MEASURE_END` around the measured window and a
//! final `RESULT ...` line, like `loadgen`.

use anyhow::{bail, Result};
use clap::Parser;
use myriad::{CloseReason, ConnectOptions, Ctx, Engine, Handler};
use myriad_tls::{rustls, ClientTlsConfig, TlsConnector};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    addr: SocketAddr,
    /// CA file the server's certificate chains to.
    #[arg(long)]
    ca: PathBuf,
    #[arg(long, default_value = "handshake")]
    mode: String,
    /// Skip the client's certificate and signature checks (benchmark only:
    /// the server's work is unchanged, and the client, which otherwise
    /// verifies two ECDSA signatures per full handshake against the
    /// server's one, stops being the bottleneck on its one core).
    #[arg(long)]
    no_verify: bool,
    #[arg(long, default_value_t = 50)]
    connections: usize,
    #[arg(long, default_value_t = 16384)]
    size: usize,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
}

struct State {
    addr: SocketAddr,
    opts: ConnectOptions,
    done: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

struct Cycle {
    st: Arc<State>,
    ok: bool,
}

impl Handler for Cycle {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        cx.write(b"x");
    }
    fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
        if !d.is_empty() && !self.ok {
            self.ok = true;
            self.st.done.fetch_add(1, Relaxed);
            cx.abort();
        }
        d.len()
    }
    fn on_close(&mut self, cx: &mut Ctx<'_>, _reason: CloseReason) {
        if !self.ok {
            self.st.errors.fetch_add(1, Relaxed);
        }
        if !self.st.stop.load(Relaxed) {
            let next = Box::new(Cycle {
                st: self.st.clone(),
                ok: false,
            });
            if cx
                .loop_cx()
                .connect(self.st.addr, &self.st.opts, next)
                .is_err()
            {
                self.st.errors.fetch_add(1, Relaxed);
            }
        }
    }
}

struct Bulk {
    st: Arc<State>,
    msg: Arc<[u8]>,
    got: usize,
}

impl Handler for Bulk {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        cx.write(&self.msg);
    }
    fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
        self.got += d.len();
        while self.got >= self.msg.len() {
            self.got -= self.msg.len();
            self.st.done.fetch_add(1, Relaxed);
            cx.write(&self.msg);
        }
        d.len()
    }
    fn on_close(&mut self, _cx: &mut Ctx<'_>, _r: CloseReason) {
        if !self.st.stop.load(Relaxed) {
            self.st.errors.fetch_add(1, Relaxed);
        }
    }
}

struct Idle {
    st: Arc<State>,
    ok: bool,
}

impl Handler for Idle {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        cx.write(b"x");
    }
    fn on_data(&mut self, _cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
        if !self.ok && !d.is_empty() {
            self.ok = true;
            self.st.done.fetch_add(1, Relaxed);
        }
        d.len()
    }
    fn on_close(&mut self, _cx: &mut Ctx<'_>, _r: CloseReason) {
        if !self.st.stop.load(Relaxed) {
            self.st.errors.fetch_add(1, Relaxed);
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let resume = args.mode == "resume";
    let mut cfg = ClientTlsConfig::with_ca_file(&args.ca);
    cfg.resumption = resume;
    // Every connection in flight must find a ticket, or some "resumed"
    // handshakes are full ones (the connector counts both kinds).
    cfg.tickets_per_server = args.connections * 2;
    let connector = if args.no_verify {
        let mut c = rustls::ClientConfig::builder_with_provider(myriad_tls::provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(myriad_tls::provider())))
            .with_no_client_auth();
        c.resumption = if resume {
            rustls::client::Resumption::store(Arc::new(myriad_tls::SessionStore::new(
                cfg.tickets_per_server,
            )))
        } else {
            rustls::client::Resumption::disabled()
        };
        TlsConnector::from_config(Arc::new(c))
    } else {
        TlsConnector::new(&cfg)?
    };
    let opts = ConnectOptions {
        filter: Some(connector.factory("localhost")?),
        linger_zero: true,
        timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let st = Arc::new(State {
        addr: args.addr,
        opts: opts.clone(),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let engine = Engine::builder().threads(1).start()?;
    let msg: Arc<[u8]> = (0..args.size)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    for i in 0..args.connections {
        let h: Box<dyn Handler + Send> = match args.mode.as_str() {
            "handshake" | "resume" => Box::new(Cycle {
                st: st.clone(),
                ok: false,
            }),
            "bulk" => Box::new(Bulk {
                st: st.clone(),
                msg: msg.clone(),
                got: 0,
            }),
            "idle" => Box::new(Idle {
                st: st.clone(),
                ok: false,
            }),
            m => bail!("--mode: unknown mode {m}"),
        };
        let o = opts.clone();
        let addr = args.addr;
        engine.loop_handle(0).post(move |lcx| {
            let _ = lcx.connect(addr, &o, h);
        });
        if i % 200 == 199 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    if args.mode == "idle" {
        let t0 = Instant::now();
        while st.done.load(Relaxed) < args.connections as u64 {
            if t0.elapsed() > Duration::from_secs(120) {
                bail!(
                    "only {} of {} idle connections came up",
                    st.done.load(Relaxed),
                    args.connections
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("READY {}", args.connections);
        let t0 = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(Duration::from_secs_f64(args.duration.max(1.0)));
        let _ = t0;
    } else {
        std::thread::sleep(Duration::from_secs_f64(args.warmup));
        let d0 = st.done.load(Relaxed);
        let k0 = connector.handshakes();
        let me = std::process::id();
        let c0 = myriad_bench::procfs::cpu_ticks(me)?;
        println!("MEASURE_START");
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(args.duration));
        let d1 = st.done.load(Relaxed);
        let secs = t0.elapsed().as_secs_f64();
        let c1 = myriad_bench::procfs::cpu_ticks(me)?;
        let k1 = connector.handshakes();
        println!("MEASURE_END");
        // The client's own share of its core: near 100% means the load
        // generator, not the server, set the rate.
        let client_cpu =
            (c1 - c0) as f64 / myriad_bench::procfs::clock_ticks_per_second() as f64 / secs;
        let n = d1 - d0;
        println!(
            "RESULT mode={} ops={} secs={:.3} ops_per_sec={:.1} errors={} client_cpu={:.2} full={} resumed={}",
            args.mode,
            n,
            secs,
            n as f64 / secs,
            st.errors.load(Relaxed),
            client_cpu,
            k1.full - k0.full,
            k1.resumed - k0.resumed
        );
    }
    st.stop.store(true, Relaxed);
    engine.shutdown(Duration::ZERO);
    let _ = engine.wait();
    Ok(())
}

/// `--no-verify`: accepts any certificate and any handshake signature.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
