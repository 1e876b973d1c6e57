//! The TLS layer on the engine's deterministic simulation (issue 17,
//! part 2): rustls clients, each a peer that answers what it gets (the
//! handshake is a conversation), send data in records from 1 byte to full
//! size, then close_notify, to an echo handler behind the real
//! `TlsAcceptor` filter. The simulation splits what they send down to 1
//! byte (records, and their headers, cut anywhere), cuts the server's
//! sends short, reorders completions and resets some peers half-way. What
//! each client decrypts must be what the unfaulted run of the same seed
//! gives it (a prefix for a peer that reset), and the unfaulted run must
//! echo everything and end with close_notify. Both sides' randomness comes
//! from the seed (`simkit`: a seeded crypto provider), so a seed's two
//! faulted runs give the same trace and the same bytes on the wire.
//!
//! `MYRIAD_SIM_SEEDS=N` runs N seeds (default 200), `MYRIAD_SIM_SEED=S`
//! replays one.

mod simkit;

use myriad::sim::{run_talkers, PeerOutcome, PeerSpec, Talker};
use myriad::{FilterFactory, Handler};
use myriad_tls::TlsAcceptor;
use simkit::{Client, Echo, Scenario};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// A client as the simulation's peer.
struct Peer(Rc<RefCell<Client>>);

impl Talker for Peer {
    fn received(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.0.borrow_mut().received(data, out)
    }
    fn done(&self) -> bool {
        self.0.borrow().done()
    }
}

/// What one run gave: the trace, each peer's outcome and its client.
type Run = (u64, Vec<PeerOutcome>, Vec<Rc<RefCell<Client>>>);

/// One run of seed `seed`: everything (the clients, the server's
/// configuration and randomness) made afresh from the seed.
fn run_once(seed: u64, faults: bool) -> Result<Run, String> {
    let sc = Scenario::new(seed);
    let acceptor = TlsAcceptor::from_config(simkit::server_config(seed ^ 0x5e7e, sc.tls13));
    let filter: FilterFactory = Arc::new(move || acceptor.filter());
    let factory: Arc<dyn Fn() -> Box<dyn Handler> + Send + Sync> =
        Arc::new(|| Box::new(Echo) as Box<dyn Handler>);
    let mut clients = Vec::new();
    let mut peers: Vec<PeerSpec> = Vec::new();
    for spec in sc.clients {
        let (c, hello) = Client::new(spec, sc.tls13);
        let c = Rc::new(RefCell::new(c));
        peers.push((hello, Some(Box::new(Peer(c.clone())))));
        clients.push(c);
    }
    let (trace, out) = run_talkers(seed, peers, factory, Some(filter), faults)?;
    Ok((trace, out, clients))
}

/// Runs one seed; what went wrong, if anything.
fn run(seed: u64) -> Result<(), String> {
    let (trace, faulted, fc) = run_once(seed, true)?;
    let (trace2, again, _) = run_once(seed, true)?;
    let (_, _, cc) = run_once(seed, false)?;
    if trace != trace2 || faulted.iter().zip(&again).any(|(a, b)| a.got != b.got) {
        return Err("two runs of the seed differ".into());
    }
    for (i, (f, c)) in fc.iter().zip(&cc).enumerate() {
        let (f, c) = (f.borrow(), c.borrow());
        // the unfaulted run echoes everything, then close_notify
        if let Some(e) = &c.error {
            return Err(format!("client {i}: the unfaulted run failed: {e}"));
        }
        if c.plain != c.data() || !c.close_notify {
            return Err(format!(
                "client {i}: the unfaulted run echoed {} bytes of {} (close_notify: {})",
                c.plain.len(),
                c.data().len(),
                c.close_notify
            ));
        }
        let reset = faulted[i].reset;
        if !reset {
            if let Some(e) = &f.error {
                return Err(format!("client {i}: {e}"));
            }
        }
        let same = if reset {
            c.plain.starts_with(&f.plain)
        } else {
            f.plain == c.plain && f.close_notify
        };
        if !same {
            return Err(format!(
                "client {i}{}: {} bytes, the unfaulted run {} (first difference at {}, close_notify {})",
                if reset { " (reset)" } else { "" },
                f.plain.len(),
                c.plain.len(),
                f.plain.iter().zip(&c.plain).take_while(|(a, b)| a == b).count(),
                f.close_notify
            ));
        }
    }
    Ok(())
}

#[test]
fn tls_echo_under_faults_gives_the_unfaulted_runs_data() {
    let env = |k: &str| std::env::var(k).ok().and_then(|s| s.parse::<u64>().ok());
    let range = match env("MYRIAD_SIM_SEED") {
        Some(s) => s..s + 1,
        None => 0..env("MYRIAD_SIM_SEEDS").unwrap_or(200),
    };
    let mut failures = Vec::new();
    for seed in range {
        if let Err(e) = run(seed) {
            failures.push(format!(
                "seed {seed}: {e} (replay: MYRIAD_SIM_SEED={seed} cargo test -p myriad-tls --test sim)"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The seeded key exchange is X25519: RFC 7748's example public key, the
/// Diffie-Hellman symmetry, and agreement with `ring`'s own X25519.
#[test]
fn seeded_x25519_is_x25519() {
    let hex = |s: &str| -> [u8; 32] {
        std::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
    };
    let a = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    assert_eq!(
        simkit::x25519(&a, &simkit::BASE),
        hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    );
    let mut rng = simkit::Rng(7);
    for _ in 0..20 {
        let ours: [u8; 32] = std::array::from_fn(|_| rng.next() as u8);
        let other: [u8; 32] = std::array::from_fn(|_| rng.next() as u8);
        let (p, q) = (
            simkit::x25519(&ours, &simkit::BASE),
            simkit::x25519(&other, &simkit::BASE),
        );
        assert_eq!(simkit::x25519(&ours, &q), simkit::x25519(&other, &p));
        // ring's ephemeral key and ours agree on the secret
        let ring = rustls::crypto::ring::kx_group::X25519
            .start()
            .expect("ring x25519");
        let ring_pub: [u8; 32] = ring.pub_key().try_into().expect("32 bytes");
        let from_ring = ring.complete(&p).expect("ring completes");
        assert_eq!(
            from_ring.secret_bytes(),
            &simkit::x25519(&ours, &ring_pub)[..]
        );
    }
}
