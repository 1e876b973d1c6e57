//! TLS echo server on Myriad.
//!
//! ```text
//! cargo run --release -p myriad-tls --example tls_echo -- 127.0.0.1:7443 --cert CERT --key KEY [--threads N] [--backend io_uring|epoll] [--client-ca CA]
//! ```
//!
//! SIGHUP reloads the certificate and key from the same files without
//! dropping established connections; SIGINT/SIGTERM drain and exit 0.

use clap::Parser;
use myriad::{BackendKind, Ctx, Engine, Handler, Service};
use myriad_tls::{ClientAuth, ServerTlsConfig, TlsAcceptor};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Myriad TLS echo server")]
struct Args {
    /// Address to listen on.
    addr: SocketAddr,
    /// Certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Require client certificates signed by this CA (PEM).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// I/O threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Backend: auto, io_uring or epoll.
    #[arg(long, default_value = "auto")]
    backend: BackendKind,
}

struct Echo;
impl Handler for Echo {
    fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize {
        cx.write(d);
        d.len()
    }
}

fn main() {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            print!("{e}");
            std::process::exit(0);
        }
        Err(e) => {
            let msg = e.to_string();
            eprintln!(
                "tls_echo: {}",
                msg.lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: ")
            );
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(args) {
        eprintln!("tls_echo: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = ServerTlsConfig::from_pem_files(&args.cert, &args.key)?;
    if let Some(ca) = &args.client_ca {
        cfg.client_auth = ClientAuth::Required(ca.clone());
    }
    let acceptor = TlsAcceptor::new(&cfg)?;
    let mut b = Engine::builder().backend(args.backend);
    if let Some(t) = args.threads {
        b = b.threads(t);
    }
    let engine = b
        .service(Service::new("tls-echo", args.addr, || Echo).filter(acceptor.factory()))
        .start()?;
    eprintln!(
        "tls_echo: listening on {} ({} backend, {} threads)",
        engine.local_addrs(0)[0],
        engine.backend(),
        engine.loop_count()
    );
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    for sig in signals.forever() {
        if sig == SIGHUP {
            match acceptor.reload(&cfg) {
                Ok(()) => tracing::info!("certificates reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "reload failed; keeping the old certificates")
                }
            }
            continue;
        }
        break;
    }
    engine.shutdown(Duration::from_secs(5));
    engine.wait()?;
    Ok(())
}
