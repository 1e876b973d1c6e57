//! Baseline for the TLS benchmark: a tokio `current_thread` TLS echo server
//! with tokio-rustls, using the very same rustls configuration as Myriad's
//! (`myriad_tls::ServerTlsConfig::build`: same rustls version, `ring`
//! provider, session cache and tickets). One task per connection, a 16 KiB
//! buffer each: the idiomatic tokio-rustls echo.

use anyhow::{Context, Result};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cfg = myriad_tls::ServerTlsConfig::from_pem_files(&args.cert, &args.key)?
        .build()
        .context("tls config")?;
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr).await?;
        eprintln!("tls-tokio: listening on {}", listener.local_addr()?);
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            Ok::<(), std::io::Error>(())
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                acc = listener.accept() => {
                    let Ok((sock, _)) = acc else { continue };
                    let _ = sock.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(sock).await else { return };
                        let mut buf = vec![0u8; 16384];
                        loop {
                            match tls.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if tls.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    });
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    })
}
