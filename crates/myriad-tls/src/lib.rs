//! # myriad-tls
//!
//! TLS for Myriad, as a *filter*: a rustls connection fed and drained with
//! bytes by the engine's connection core, never owning a socket. Handlers
//! are unchanged — an echo handler over TLS is the same echo handler.
//!
//! * Server ([`TlsAcceptor`]) and client ([`TlsConnector`]); TLS 1.3 and 1.2.
//! * Certificate chains and keys from PEM; ALPN; SNI choosing among several
//!   certificates; session resumption (stateless tickets and a server-side
//!   session cache); optional or required client certificates (mutual TLS)
//!   checked against a CA file.
//! * Reloading certificates at run time ([`TlsAcceptor::reload`]): new
//!   connections get the new configuration, established ones keep theirs.
//! * Failures (bad certificate, unknown CA, plaintext sent to a TLS port, a
//!   bad record) send the proper alert where one is due, close only that
//!   connection, and are counted by kind ([`myriad::FilterError::kind`],
//!   the engine's `err_filter` counter).
//! * Few copies: rustls's unbuffered API, so that records are decrypted in
//!   place in the engine's receive buffer and encrypted straight into the
//!   write queue. An idle TLS connection costs about 4.5 KB of server
//!   memory, rustls's state included (BENCHMARKS.md).
//!
//! ## Crypto provider
//!
//! rustls with **`ring`**: it builds with nothing but a C compiler, which
//! every machine that builds Rust crates with C parts already has. The
//! faster `aws-lc-rs` provider needs cmake (and for some targets Go and a
//! NASM), which a fresh machine may not have; a framework whose first
//! promise is "two commands set everything up" cannot require them. The
//! provider is chosen in one place ([`provider`]), so switching is a
//! one-line change for users who have the toolchain.
//!
//! ```no_run
//! use myriad::{Ctx, Engine, Handler, Service};
//! use myriad_tls::{ServerTlsConfig, TlsAcceptor};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn on_data(&mut self, cx: &mut Ctx<'_>, d: &mut [u8]) -> usize { cx.write(d); d.len() }
//! }
//!
//! let tls = TlsAcceptor::new(&ServerTlsConfig::from_pem_files("cert.pem", "key.pem")?)?;
//! let engine = Engine::builder()
//!     .service(Service::new("tls-echo", "127.0.0.1:7443".parse().unwrap(), || Echo)
//!         .filter(tls.factory()))
//!     .start()?;
//! engine.wait()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod config;
mod filter;
mod session;

pub use config::{ClientAuth, ClientTlsConfig, ServerTlsConfig, TlsError};
pub use filter::{HandshakeCounts, TlsAcceptor, TlsConnector};
/// The rustls version this crate is built on (for code that needs its types).
pub use rustls;
pub use session::SessionStore;

/// The crypto provider every configuration is built with (`ring`; see the
/// crate docs for why).
///
/// ```
/// let p = myriad_tls::provider();
/// assert!(!p.cipher_suites.is_empty());
/// ```
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
