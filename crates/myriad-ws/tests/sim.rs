//! The WebSocket layer on the engine's deterministic simulation (issue 17,
//! part 2): scripted clients send an upgrade request and then masked
//! frames — text with multi-byte characters, binary, fragmented messages,
//! pings, a close — to the real server handler (`WsServer::connection_handler`
//! around an echo `WsHandler`), with and without permessage-deflate, with
//! large frames waited for whole or streamed as they arrive. The
//! simulation splits what they send down to 1 byte, cuts the server's
//! sends short, reorders completions and resets some peers half-way; what
//! each client gets back, decoded, must be what the unfaulted run of the
//! same seed gives it (a prefix for a peer that reset), and the unfaulted
//! run must echo every message. Everything random comes from the seed, the
//! masking keys and `Sec-WebSocket-Key`s included, so a seed's two faulted
//! runs must give the same trace and the same bytes.
//!
//! The same server also runs in an engine on the simulated network
//! (`EngineBuilder::simulate`) against `WsClient`s made by the engine's own
//! connector: both ends are engine connections under the faults.
//!
//! `MYRIAD_SIM_SEEDS=N` runs N seeds (default 300), `MYRIAD_SIM_SEED=S`
//! replays one.

use myriad::sim::Rng;
use myriad_ws::server::WsServer;
use myriad_ws::{
    ClientConfig, ClientConnection, CloseCode, DecoderConfig, DeflateConfig, Event, Message,
    ServerConfig, ServerConnection, WsCtx, WsHandler,
};
use std::sync::Arc;

/// Echoes every message.
struct Echo;

impl WsHandler for Echo {
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        let _ = cx.send(msg);
    }
}

/// What a client decoded, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

/// One client: its configuration (the decoder of the answer is made from
/// it again: the same seed gives the same key), its script, and the
/// messages and pings it sent.
struct Client {
    config: ClientConfig,
    script: Vec<u8>,
    sent: Vec<Got>,
}

/// Text with one-, two-, three- and four-byte characters, so that splits
/// and fragments fall inside characters.
fn text(rng: &mut Rng, len: usize) -> String {
    const CHARS: [char; 6] = ['a', 'z', ' ', 'é', '€', '😀'];
    (0..len).map(|_| CHARS[rng.below(CHARS.len())]).collect()
}

fn len(rng: &mut Rng) -> usize {
    match rng.below(4) {
        0 => rng.below(4),
        1 | 2 => rng.below(300),
        _ => rng.below(20_000),
    }
}

/// The script of one client: the upgrade request, then messages (each
/// masked with a key from `mask_seed`), pings, and a close. The client is
/// made open by an offline server of the same configuration, so that it
/// frames (and with deflate compresses) as it would after the real
/// server's answer.
fn client(rng: &mut Rng, ws: &WsServer, deflate: bool, mask_seed: u64) -> Client {
    let config = ClientConfig {
        mask_seed: Some(mask_seed),
        deflate: deflate.then(DeflateConfig::default),
        max_fragment_size: [0, 0, 1 + rng.below(40), 1 + rng.below(3000)][rng.below(4)],
        ..ClientConfig::default()
    };
    let mut c = ClientConnection::new(config.clone(), "sim.test", "/echo");
    let mut script = Vec::new();
    c.start(&mut script);
    let mut offline = ServerConnection::new(Arc::new(ws.config().clone()));
    let mut answer = Vec::new();
    offline
        .handshake(&script, &mut answer)
        .expect("the offline server accepts the request");
    c.handshake(&answer)
        .expect("the client accepts the offline answer");
    let mut sent = Vec::new();
    for _ in 0..1 + rng.below(12) {
        match rng.below(5) {
            0 | 1 => {
                let n = len(rng);
                let t = text(rng, n);
                c.send_text(&mut script, &t).expect("send_text");
                sent.push(Got::Text(t));
            }
            2 | 3 => {
                let n = len(rng);
                let b: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                c.send_binary(&mut script, &b).expect("send_binary");
                sent.push(Got::Binary(b));
            }
            _ => {
                let p: Vec<u8> = (0..rng.below(126)).map(|_| rng.next() as u8).collect();
                c.send_ping(&mut script, &p).expect("send_ping");
                sent.push(Got::Pong(p));
            }
        }
    }
    c.close(&mut script, CloseCode::NORMAL, "bye")
        .expect("close");
    Client {
        config,
        script,
        sent,
    }
}

/// Decodes what the server sent a client (its `101` answer, then frames)
/// with a client of the same configuration.
fn decode(config: &ClientConfig, mut bytes: Vec<u8>) -> Result<Vec<Got>, String> {
    let mut c = ClientConnection::new(config.clone(), "sim.test", "/echo");
    c.start(&mut Vec::new());
    let mut got = Vec::new();
    let mut out = Vec::new();
    let mut pos = 0;
    // each round consumes something or ends: bounded by the byte count
    while pos < bytes.len() {
        let n = c
            .feed(&mut bytes[pos..], &mut out, &mut |ev, _| {
                got.push(match ev {
                    Event::Text(t) => Got::Text(t.to_owned()),
                    Event::Binary(b) => Got::Binary(b.to_vec()),
                    Event::Ping(p) => Got::Ping(p.to_vec()),
                    Event::Pong(p) => Got::Pong(p.to_vec()),
                    Event::Close { code, reason } => {
                        Got::Close(code.map(|c| c.0), reason.to_owned())
                    }
                })
            })
            .map_err(|e| format!("the answer does not decode at byte {pos}: {e}"))?;
        if n == 0 {
            break;
        }
        pos += n;
    }
    Ok(got)
}

type Factory = Arc<dyn Fn() -> Box<dyn myriad::Handler> + Send + Sync>;

/// Seed `seed`'s scenario ready to run: the server, its clients, their
/// scripts, and handlers (the server around an echo) for the simulation.
fn setup(seed: u64) -> (Arc<WsServer>, Vec<Client>, Vec<Vec<u8>>, Factory) {
    let (ws, clients) = scenario(seed);
    let scripts = clients.iter().map(|c| c.script.clone()).collect();
    let ws = Arc::new(ws);
    let factory: Factory = {
        let ws = ws.clone();
        Arc::new(move || ws.connection_handler(Echo))
    };
    (ws, clients, scripts, factory)
}

/// The server and the clients seed `seed` makes.
fn scenario(seed: u64) -> (WsServer, Vec<Client>) {
    let mut rng = Rng(seed);
    let deflate = rng.below(3) == 0;
    // frames larger than this are streamed as they arrive (their payload
    // unmasked piece by piece) rather than waited for whole
    let max_buffered_frame = [139, 1000, 64 << 10][rng.below(3)];
    let ws = WsServer::builder()
        .config(ServerConfig {
            limits: DecoderConfig {
                max_buffered_frame,
                ..DecoderConfig::default()
            },
            ..ServerConfig::default()
        })
        .deflate(deflate)
        .build();
    let clients: Vec<Client> = (0..1 + rng.below(4))
        .map(|i| client(&mut rng, &ws, deflate, seed << 8 | i as u64))
        .collect();
    (ws, clients)
}

/// Runs one seed; what went wrong, if anything.
fn run(seed: u64) -> Result<(), String> {
    let (_, clients, scripts, factory) = setup(seed);
    let (trace, faulted) = myriad::sim::run_peers(seed, &scripts, factory.clone(), true)?;
    let (trace2, again) = myriad::sim::run_peers(seed, &scripts, factory.clone(), true)?;
    let (_, clean) = myriad::sim::run_peers(seed, &scripts, factory, false)?;
    if trace != trace2 || faulted.iter().zip(&again).any(|(a, b)| a.got != b.got) {
        return Err("two runs of the seed differ".into());
    }
    for (i, c) in clients.iter().enumerate() {
        let want = decode(&c.config, clean[i].got.clone())?;
        // the unfaulted run echoes every message and answers every ping,
        // in order, then the close
        let (last, echoed) = want.split_last().ok_or("nothing came back")?;
        if echoed != &c.sent[..] {
            return Err(format!(
                "client {i}: the unfaulted run's echo is not the {} messages sent \
                 ({} came back, the first {} right)",
                c.sent.len(),
                echoed.len(),
                echoed
                    .iter()
                    .zip(&c.sent)
                    .take_while(|(a, b)| a == b)
                    .count()
            ));
        }
        if *last != Got::Close(Some(1000), String::new()) {
            return Err(format!("client {i}: the unfaulted run ended with {last:?}"));
        }
        let got = decode(&c.config, faulted[i].got.clone())?;
        let same = if faulted[i].reset {
            want.starts_with(&got)
        } else {
            got == want
        };
        if !same {
            return Err(format!(
                "client {i}{}: {} messages, the unfaulted run {} (first difference at {})",
                if faulted[i].reset { " (reset)" } else { "" },
                got.len(),
                want.len(),
                got.iter().zip(&want).take_while(|(a, b)| a == b).count()
            ));
        }
    }
    Ok(())
}

#[test]
fn websocket_echo_under_faults_gives_the_unfaulted_runs_messages() {
    let range = myriad::sim::seed_range(300);
    let mut failures = Vec::new();
    for seed in range {
        if let Err(e) = run(seed) {
            failures.push(format!(
                "seed {seed}: {e} (replay: MYRIAD_SIM_SEED={seed} cargo test -p myriad-ws --test sim)"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The loopback twin (issue 17: "the same scenarios also run against the
/// real backends on loopback, so the simulation cannot drift from
/// reality"): each seed's client scripts go over 127.0.0.1 to a real
/// `Engine` with the same server (io_uring, then epoll), each sent whole,
/// the write side shut, and what comes back read to the end; it must
/// decode to what the simulation's unfaulted run gives the same client.
fn loopback(kind: myriad::BackendKind) {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let n = std::env::var("MYRIAD_LOOPBACK_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30u64);
    let mut failures = Vec::new();
    for seed in 0..n {
        let (ws, clients, scripts, factory) = setup(seed);
        let clean = match myriad::sim::run_peers(seed, &scripts, factory, false) {
            Ok((_, clean)) => clean,
            Err(e) => {
                failures.push(format!("seed {seed}: simulation: {e}"));
                continue;
            }
        };
        let engine = myriad::Engine::builder()
            .threads(1)
            .backend(kind)
            .service(ws.service("ws-echo", "127.0.0.1:0".parse().expect("addr"), || Echo))
            .start()
            .expect("engine");
        let addr = engine.local_addrs(0)[0];
        for (i, c) in clients.iter().enumerate() {
            let res = (|| -> Result<Vec<u8>, String> {
                let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .map_err(|e| e.to_string())?;
                // a writer thread: the echo may fill the socket buffers
                // before the whole script is written
                let mut w = s.try_clone().map_err(|e| e.to_string())?;
                let script = c.script.clone();
                let writer = std::thread::spawn(move || {
                    let r = w.write_all(&script);
                    let _ = w.shutdown(std::net::Shutdown::Write);
                    r
                });
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut got = Vec::new();
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    if Instant::now() > deadline {
                        return Err("no end within 20 s".into());
                    }
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => got.extend_from_slice(&buf[..k]),
                        Err(e) => return Err(format!("read: {e}")),
                    }
                }
                match writer.join() {
                    Ok(Ok(())) => Ok(got),
                    Ok(Err(e)) => Err(format!("write: {e}")),
                    Err(_) => Err("writer panicked".into()),
                }
            })();
            let verdict = res.and_then(|got| {
                let got = decode(&c.config, got)?;
                let want = decode(&c.config, clean[i].got.clone())?;
                if got == want && !want.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{} messages, the simulation {} (first difference at {})",
                        got.len(),
                        want.len(),
                        got.iter().zip(&want).take_while(|(a, b)| a == b).count()
                    ))
                }
            });
            if let Err(e) = verdict {
                failures.push(format!("{kind:?} seed {seed} client {i}: {e}"));
            }
        }
        engine.shutdown(Duration::from_secs(1));
        let _ = engine.wait();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn websocket_scenarios_on_loopback_io_uring() {
    loopback(myriad::BackendKind::IoUring)
}

#[test]
fn websocket_scenarios_on_loopback_epoll() {
    loopback(myriad::BackendKind::Epoll)
}

/// A WebSocket client of the engine (`WsClient`): sends its messages on
/// open, collects the echoes, and closes (1000) once all came back.
struct Sender {
    msgs: Vec<Got>,
    got: Arc<std::sync::Mutex<Vec<Got>>>,
    /// The close code its `on_close` saw, once per close.
    closed: Arc<std::sync::Mutex<Vec<u16>>>,
}

impl WsHandler for Sender {
    fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, _hs: &myriad_ws::Handshake<'_>) {
        for m in &self.msgs {
            let _ = match m {
                Got::Text(t) => cx.send_text(t),
                Got::Binary(b) => cx.send_binary(b),
                _ => Ok(()),
            };
        }
        if self.msgs.is_empty() {
            let _ = cx.close(CloseCode::NORMAL, "bye");
        }
    }
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        let mut got = self.got.lock().unwrap_or_else(|p| p.into_inner());
        got.push(match msg {
            Message::Text(t) => Got::Text(t.to_owned()),
            Message::Binary(b) => Got::Binary(b.to_vec()),
        });
        if got.len() == self.msgs.len() {
            let _ = cx.close(CloseCode::NORMAL, "bye");
        }
    }
    fn on_close(&mut self, _cx: &mut WsCtx<'_, '_>, code: CloseCode, _reason: &str) {
        let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        closed.push(code.0);
    }
}

/// Seed `seed` with engine clients: the scenario's server in an engine on
/// the simulated network (`EngineBuilder::simulate`), and 1 to 4
/// `WsClient`s made by the engine's connector (masks and keys from the
/// seed, deflate offered or not, random fragment sizes), each sending
/// text and binary messages. Each client's `on_close` runs once; what it
/// got back is its messages in order — all of them when it closed with
/// 1000, a prefix when the faults broke the connection (1006). The trace
/// and what each client got, for the determinism check.
fn run_engine(seed: u64) -> Result<(u64, Vec<Vec<Got>>), String> {
    let (ws, _) = scenario(seed);
    let mut rng = Rng(seed ^ 0xc11e_4700);
    let addr: std::net::SocketAddr = ([192, 0, 2, 2], 80).into();
    let mut sim = myriad::Engine::builder()
        .service(ws.service("ws-echo", addr, || Echo))
        // 1 to 3 loops: the server's connections on any of them
        .simulate(seed, 1 + (seed % 3) as usize)
        .map_err(|e| e.to_string())?;
    let mut clients = Vec::new();
    for i in 0..1 + rng.below(4) {
        let config = ClientConfig {
            mask_seed: Some(seed << 8 | i as u64),
            deflate: rng.one_in(2).then(DeflateConfig::default),
            max_fragment_size: [0, 0, 1 + rng.below(40), 1 + rng.below(3000)][rng.below(4)],
            ..ClientConfig::default()
        };
        let msgs: Vec<Got> = (0..rng.below(8))
            .map(|_| {
                let n = len(&mut rng);
                if rng.one_in(2) {
                    Got::Text(text(&mut rng, n))
                } else {
                    Got::Binary((0..n).map(|_| rng.next() as u8).collect())
                }
            })
            .collect();
        let got: Arc<std::sync::Mutex<Vec<Got>>> = Default::default();
        let closed: Arc<std::sync::Mutex<Vec<u16>>> = Default::default();
        let client = myriad_ws::client::WsClient::new(
            config,
            "sim.test",
            "/echo",
            Sender {
                msgs: msgs.clone(),
                got: got.clone(),
                closed: closed.clone(),
            },
        );
        let lp = i % sim.loop_count();
        sim.connect(lp, addr, myriad::ConnectOptions::default(), client);
        clients.push((msgs, got, closed));
    }
    let out = sim.run(500_000)?;
    let mut gots = Vec::new();
    for (i, (msgs, got, closed)) in clients.into_iter().enumerate() {
        let got = got.lock().map_err(|_| "poisoned")?.clone();
        let closed = closed.lock().map_err(|_| "poisoned")?.clone();
        let complete = match closed[..] {
            [1000] => true,
            [1006] => false,
            _ => return Err(format!("client {i}: closed with {closed:?}")),
        };
        if !msgs.starts_with(&got) || (complete && got != msgs) {
            return Err(format!(
                "client {i} (closed {closed:?}): {} messages back of {} (the first {} right)",
                got.len(),
                msgs.len(),
                got.iter().zip(&msgs).take_while(|(a, b)| a == b).count()
            ));
        }
        gots.push(got);
    }
    Ok((out.trace, gots))
}

#[test]
fn websocket_engine_clients_over_the_simulated_engine_get_their_echo() {
    myriad::sim::check_seeds(300, run_engine, "cargo test -p myriad-ws --test sim engine");
}

/// A member of the room scenario's server: joins the room on open,
/// broadcasts every text message to it, leaves on close.
struct Member {
    room: myriad_ws::Room,
}

impl WsHandler for Member {
    fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, _hs: &myriad_ws::Handshake<'_>) {
        self.room.join(cx);
    }
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        if let Message::Text(t) = msg {
            let m = myriad_ws::PreparedMessage::new(myriad_ws::MessageKind::Text, t.as_bytes());
            self.room.broadcast(cx.loop_cx(), &m);
        }
    }
    fn on_close(&mut self, cx: &mut WsCtx<'_, '_>, _code: CloseCode, _reason: &str) {
        self.room.leave(cx);
    }
}

/// A client of the room scenario: once open it says hello (`"h:{id}"`),
/// and again when it hears a newcomer's; once it has heard every client's
/// hello (all are members then) it sends
/// `count` numbered texts (`"{id}:{seq}"`); it closes once it has every
/// client's texts, or when its timer (60 s of virtual time) gives up
/// waiting for a client that the faults cut off.
struct Talker {
    id: usize,
    count: usize,
    /// Every client's count: what a complete run delivers to each.
    total: usize,
    clients: usize,
    hellos: std::collections::BTreeSet<usize>,
    started: bool,
    texts: usize,
    got: Arc<std::sync::Mutex<Vec<String>>>,
    closed: Arc<std::sync::Mutex<Vec<u16>>>,
}

impl Talker {
    fn maybe_done(&mut self, cx: &mut WsCtx<'_, '_>) {
        if self.started && self.texts == self.total {
            let _ = cx.close(CloseCode::NORMAL, "bye");
        }
    }
}

impl WsHandler for Talker {
    fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, _hs: &myriad_ws::Handshake<'_>) {
        let _ = cx.send_text(&format!("h:{}", self.id));
        cx.set_timer(std::time::Duration::from_secs(60), 1);
    }
    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        let Message::Text(t) = msg else { return };
        if let Some(h) = t.strip_prefix("h:") {
            let Ok(who) = h.parse::<usize>() else { return };
            // a newcomer did not hear the hellos said before it joined:
            // say it again for it (once per newcomer)
            if self.hellos.insert(who) && who != self.id {
                let _ = cx.send_text(&format!("h:{}", self.id));
            }
            if !self.started && self.hellos.len() == self.clients {
                self.started = true;
                for seq in 0..self.count {
                    let _ = cx.send_text(&format!("{}:{seq}", self.id));
                }
            }
        } else {
            self.texts += 1;
            let mut got = self.got.lock().unwrap_or_else(|p| p.into_inner());
            got.push(t.to_owned());
        }
        self.maybe_done(cx);
    }
    fn on_timer(&mut self, cx: &mut WsCtx<'_, '_>, _token: u64) {
        let _ = cx.close(CloseCode::NORMAL, "gave up");
    }
    fn on_close(&mut self, _cx: &mut WsCtx<'_, '_>, code: CloseCode, _reason: &str) {
        let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        closed.push(code.0);
    }
}

/// Seed `seed` of the room scenario: a `Room` server on 2 or 3 simulated
/// loops (so that broadcasts also go to other loops, as posted tasks), 2
/// to 5 clients on any loop, each sending 0 to 6 numbered texts once all
/// have joined. Whatever the faults: each client's `on_close` runs once;
/// every text it got was sent by some client, at most once, and each
/// sender's texts in the order sent. When no connection broke (every
/// client closed with 1000), every client got every client's texts. The
/// trace and what each got, for the determinism check.
fn run_room(seed: u64) -> Result<(u64, Vec<Vec<String>>), String> {
    let mut rng = Rng(seed ^ 0x0500_4d00);
    let ws = WsServer::builder().build();
    let room = myriad_ws::Room::new();
    let addr: std::net::SocketAddr = ([192, 0, 2, 2], 80).into();
    let mut sim = myriad::Engine::builder()
        .service(ws.service("room", addr, move || Member { room: room.clone() }))
        .simulate(seed, 2 + (seed % 2) as usize)
        .map_err(|e| e.to_string())?;
    let n = 2 + rng.below(4);
    let counts: Vec<usize> = (0..n).map(|_| rng.below(7)).collect();
    let total: usize = counts.iter().sum();
    let mut clients = Vec::new();
    for (id, &count) in counts.iter().enumerate() {
        let config = ClientConfig {
            mask_seed: Some(seed << 8 | id as u64),
            ..ClientConfig::default()
        };
        let got: Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let closed: Arc<std::sync::Mutex<Vec<u16>>> = Default::default();
        let client = myriad_ws::client::WsClient::new(
            config,
            "sim.test",
            "/room",
            Talker {
                id,
                count,
                total,
                clients: n,
                hellos: Default::default(),
                started: false,
                texts: 0,
                got: got.clone(),
                closed: closed.clone(),
            },
        );
        let lp = rng.below(sim.loop_count());
        sim.connect(lp, addr, myriad::ConnectOptions::default(), client);
        clients.push((got, closed));
    }
    let out = sim.run(2_000_000)?;
    let mut gots = Vec::new();
    let mut all_clean = true;
    for (i, (got, closed)) in clients.iter().enumerate() {
        let got = got.lock().map_err(|_| "poisoned")?.clone();
        let closed = closed.lock().map_err(|_| "poisoned")?.clone();
        match closed[..] {
            [1000] => {}
            [1006] => all_clean = false,
            _ => return Err(format!("client {i}: closed with {closed:?}")),
        }
        // per sender, the sequence numbers got: sent ones, in order, once
        let mut next = vec![0usize; n];
        for t in &got {
            let (who, seq) = t
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
                .ok_or_else(|| format!("client {i}: got {t:?}, which nobody sent"))?;
            if who >= n || seq >= counts[who] || seq < next[who] {
                return Err(format!(
                    "client {i}: got {t:?} (a duplicate, out of order, or never sent)"
                ));
            }
            next[who] = seq + 1;
        }
        gots.push(got);
    }
    if all_clean {
        if let Some(i) = gots.iter().position(|g| g.len() != total) {
            return Err(format!(
                "client {i}: {} of the {total} texts, though no connection broke",
                gots[i].len()
            ));
        }
    }
    Ok((out.trace, gots))
}

#[test]
fn a_room_fans_out_across_simulated_loops() {
    let outcomes =
        myriad::sim::check_seeds(300, run_room, "cargo test -p myriad-ws --test sim room");
    let delivered: usize = outcomes
        .iter()
        .flat_map(|(_, gots)| gots.iter().map(Vec::len))
        .sum();
    eprintln!("{delivered} broadcast texts delivered");
    assert!(delivered > 0, "nothing delivered");
}
