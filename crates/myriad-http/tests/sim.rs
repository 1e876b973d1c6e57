//! The HTTP/1.1 layer on the engine's deterministic simulation (issue 17,
//! part 2): scripted clients send pipelined requests — `GET`, `HEAD`,
//! `POST` with a `Content-Length` body or a chunked one, sometimes a
//! malformed request last (two different `Content-Length`s: 400 and a
//! close) — to the real `Echo` handler (the codec of `http_echo`). The
//! simulation splits what they send down to 1 byte (request lines, header
//! lines, chunk sizes cut anywhere), cuts the server's sends short,
//! reorders completions and resets some peers half-way. Each client's
//! answers, parsed, must be what the unfaulted run of the same seed gives
//! it (a prefix for a peer that reset), and the unfaulted run must answer
//! every request as expected: the body echoed, none for `HEAD`, 400 for
//! the malformed one and nothing after it. A seed's two faulted runs must
//! give the same trace and the same answers. (`Date` is the wall clock's:
//! it is left out of the comparisons.)
//!
//! `MYRIAD_SIM_SEEDS=N` runs N seeds (default 300), `MYRIAD_SIM_SEED=S`
//! replays one.

use myriad::sim::Rng;
use myriad_http::engine::Echo;
use myriad_http::Config;
use std::sync::Arc;

type Factory = Arc<dyn Fn() -> Box<dyn myriad::Handler> + Send + Sync>;

/// One answer as a client sees it: the status line, the fields but `Date`
/// (lower-cased names, in order), the body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: String,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

/// What a request must get: its status and body.
struct Expect {
    status: u16,
    body: Body,
}

enum Body {
    /// These bytes (the request's body echoed).
    Echo(Vec<u8>),
    /// None (a `HEAD`: its answer announces a length but carries nothing).
    Head,
    /// Whatever the error page says.
    Any,
}

/// A client's requests, as one script, and what each must get.
fn client(rng: &mut Rng) -> (Vec<u8>, Vec<Expect>) {
    let mut script = Vec::new();
    let mut expect = Vec::new();
    for _ in 0..1 + rng.below(6) {
        let body: Vec<u8> = (0..[0, 1 + rng.below(40), rng.below(3000)][rng.below(3)])
            .map(|_| rng.next() as u8)
            .collect();
        match rng.below(4) {
            0 => {
                script.extend_from_slice(b"GET /a?b=c HTTP/1.1\r\nHost: sim.test\r\n\r\n");
                expect.push(Expect {
                    status: 200,
                    body: Body::Echo(Vec::new()),
                });
            }
            1 => {
                script
                    .extend_from_slice(b"HEAD / HTTP/1.1\r\nHost: sim.test\r\nAccept: */*\r\n\r\n");
                expect.push(Expect {
                    status: 200,
                    body: Body::Head,
                });
            }
            2 => {
                script.extend_from_slice(
                    format!(
                        "POST /echo HTTP/1.1\r\nHost: sim.test\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                script.extend_from_slice(&body);
                expect.push(Expect {
                    status: 200,
                    body: Body::Echo(body),
                });
            }
            _ => {
                script.extend_from_slice(
                    b"POST /echo HTTP/1.1\r\nHost: sim.test\r\nTransfer-Encoding: chunked\r\n\r\n",
                );
                let mut rest = &body[..];
                while !rest.is_empty() {
                    let n = (1 + rng.below(700)).min(rest.len());
                    script.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                    script.extend_from_slice(&rest[..n]);
                    script.extend_from_slice(b"\r\n");
                    rest = &rest[n..];
                }
                script.extend_from_slice(b"0\r\n\r\n");
                expect.push(Expect {
                    status: 200,
                    body: Body::Echo(body),
                });
            }
        }
    }
    if rng.one_in(5) {
        // request smuggling's raw material: answered 400, then closed
        // (what follows is never read)
        script.extend_from_slice(
            b"POST / HTTP/1.1\r\nHost: sim.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxyGET / HTTP/1.1\r\n\r\n",
        );
        expect.push(Expect {
            status: 400,
            body: Body::Any,
        });
    }
    (script, expect)
}

/// The whole answers in `got`, in order (a cut-off last one is left out),
/// and how many bytes they took.
fn parse(got: &[u8], heads: &[bool]) -> Result<(Vec<Answer>, usize), String> {
    let all = got.len();
    let mut got = got;
    let mut out = Vec::new();
    while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = std::str::from_utf8(&got[..end]).map_err(|_| "a head not UTF-8")?;
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default().to_string();
        let mut fields = Vec::new();
        let mut len = 0usize;
        for l in lines {
            let (name, value) = l.split_once(':').ok_or_else(|| format!("field {l:?}"))?;
            let (name, value) = (name.to_ascii_lowercase(), value.trim().to_string());
            if name == "content-length" {
                len = value.parse().map_err(|_| format!("length {value:?}"))?;
            }
            if name != "date" {
                fields.push((name, value));
            }
        }
        // a HEAD's answer announces a length but carries no body
        let bodiless = heads.get(out.len()).copied().unwrap_or(false);
        let take = if bodiless { 0 } else { len };
        let rest = &got[end + 4..];
        if rest.len() < take {
            break;
        }
        out.push(Answer {
            status,
            fields,
            body: rest[..take].to_vec(),
        });
        got = &rest[take..];
    }
    Ok((out, all - got.len()))
}

/// One seed's clients: their scripts and what each request must get.
fn setup(seed: u64) -> (Vec<Vec<u8>>, Vec<Vec<Expect>>) {
    let mut rng = Rng(seed);
    let mut scripts = Vec::new();
    let mut expects = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let (s, e) = client(&mut rng);
        scripts.push(s);
        expects.push(e);
    }
    (scripts, expects)
}

fn factory() -> Factory {
    Arc::new(|| Box::new(Echo::new(Config::default())))
}

/// Runs one seed; the number of answers checked and of peers reset.
fn run(seed: u64) -> Result<(usize, usize), String> {
    let (scripts, expects) = setup(seed);
    let factory = factory();
    let (trace, faulted) = myriad::sim::run_peers(seed, &scripts, factory.clone(), true)?;
    let (trace2, again) = myriad::sim::run_peers(seed, &scripts, factory.clone(), true)?;
    let (_, clean) = myriad::sim::run_peers(seed, &scripts, factory, false)?;
    if trace != trace2 {
        return Err("two runs of the seed, two traces".into());
    }
    let (mut answers, mut resets) = (0, 0);
    for (i, expect) in expects.iter().enumerate() {
        let heads: Vec<bool> = expect
            .iter()
            .map(|e| matches!(e.body, Body::Head))
            .collect();
        let (want, used) = parse(&clean[i].got, &heads)?;
        // nothing but whole answers (nothing after a 400 either)
        if used != clean[i].got.len() {
            return Err(format!(
                "client {i}: {} bytes after the answers in the unfaulted run",
                clean[i].got.len() - used
            ));
        }
        // the unfaulted run answers every request, as expected
        if want.len() != expect.len() {
            return Err(format!(
                "client {i}: {} answers to {} requests in the unfaulted run",
                want.len(),
                expect.len()
            ));
        }
        for (k, (a, e)) in want.iter().zip(expect).enumerate() {
            let status_ok = a.status.starts_with(&format!("HTTP/1.1 {} ", e.status));
            let body_ok = match &e.body {
                Body::Echo(b) => a.body == *b,
                Body::Head => a.body.is_empty(),
                Body::Any => true,
            };
            if !status_ok || !body_ok {
                return Err(format!(
                    "client {i}, request {k}: {:?} with {} bytes, expected {}",
                    a.status,
                    a.body.len(),
                    e.status,
                ));
            }
        }
        answers += want.len();
        resets += usize::from(faulted[i].reset);
        for (run, outcome) in [("faulted", &faulted[i]), ("again", &again[i])] {
            let (got, _) = parse(&outcome.got, &heads)?;
            let same = if outcome.reset {
                want.starts_with(&got)
            } else {
                got == want
            };
            if !same {
                return Err(format!(
                    "client {i} ({run}{}): {} answers, the unfaulted run {} (first difference at {})",
                    if outcome.reset { ", reset" } else { "" },
                    got.len(),
                    want.len(),
                    got.iter().zip(&want).take_while(|(a, b)| a == b).count()
                ));
            }
        }
    }
    Ok((answers, resets))
}

#[test]
fn http_echo_under_faults_gives_the_unfaulted_runs_answers() {
    let mut failures = Vec::new();
    let (mut answers, mut resets) = (0, 0);
    for seed in myriad::sim::seed_range(300) {
        match run(seed) {
            Ok((a, r)) => {
                answers += a;
                resets += r;
            }
            Err(e) => failures.push(format!(
                "seed {seed}: {e} (replay: MYRIAD_SIM_SEED={seed} cargo test -p myriad-http --test sim)"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{answers} answers checked, {resets} peers reset half-way");
    assert!(answers > 0, "no answer checked");
}

/// The loopback twin: every tenth seed's scripts sent whole over
/// 127.0.0.1 to the same handler in a real `Engine` (io_uring, then
/// epoll), each connection's answers read to its end: the same answers
/// as the unfaulted simulated run.
#[test]
fn the_same_scripts_on_loopback_get_the_same_answers() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let mut answers = 0;
    for kind in [myriad::BackendKind::IoUring, myriad::BackendKind::Epoll] {
        let engine = myriad::Engine::builder()
            .threads(1)
            .backend(kind)
            .service(myriad::Service::new(
                "http-echo",
                "127.0.0.1:0".parse().expect("address"),
                || Echo::new(Config::default()),
            ))
            .start()
            .expect("engine");
        let addr = engine.local_addrs(0)[0];
        for seed in myriad::sim::seed_range(300).step_by(10) {
            let (scripts, expects) = setup(seed);
            let (_, clean) = myriad::sim::run_peers(seed, &scripts, factory(), false)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            for (i, script) in scripts.iter().enumerate() {
                let mut c = std::net::TcpStream::connect(addr).expect("connect");
                c.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                c.write_all(script).expect("write");
                c.shutdown(std::net::Shutdown::Write).expect("shutdown");
                let mut got = Vec::new();
                // (the server may reset after its 400 when unread bytes
                // remain: what arrived before counts)
                let _ = c.read_to_end(&mut got);
                let heads: Vec<bool> = expects[i]
                    .iter()
                    .map(|e| matches!(e.body, Body::Head))
                    .collect();
                let want = parse(&clean[i].got, &heads).expect("parse");
                assert_eq!(want.0.len(), expects[i].len(), "seed {seed} client {i}");
                let have = parse(&got, &heads).expect("parse");
                answers += have.0.len();
                assert_eq!(
                    have.0, want.0,
                    "seed {seed} client {i} on {kind:?} (replay: MYRIAD_SIM_SEED={seed} cargo test -p myriad-http --test sim loopback)"
                );
            }
        }
        engine.shutdown(Duration::from_secs(1));
    }
    eprintln!("{answers} answers over loopback as in the simulation");
    assert!(answers > 0, "no answer checked");
}
