//! Runs the deterministic simulation of the engine: the reactor's own
//! scenario (scripted peers against echo handlers) and the engine-level
//! one (an `EngineBuilder` echo service and clients made by the engine's
//! connector, both ends on the simulated network).
//!
//! ```text
//! cargo run --release -p myriad --features sim --example simulate -- --seeds 10000
//! cargo run --release -p myriad --features sim --example simulate -- --seed 4242
//! ```
//!
//! Each seed runs both scenarios twice; the two traces of each must hash
//! the same. A failing seed
//! prints itself and the command that replays it. Ends with
//! `RESULT seeds=N failures=F`, exit status 1 if F > 0.

use std::process::ExitCode;

/// One seed of a scenario: its trace hash, or the invariant it broke.
type Scenario = fn(u64) -> Result<u64, String>;

fn main() -> ExitCode {
    let mut seeds = 1000u64;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), v) {
            ("--seeds", Some(n)) => seeds = n,
            ("--seed", Some(s)) => only = Some(s),
            _ => {
                eprintln!("usage: simulate [--seeds N] [--seed S]");
                return ExitCode::from(2);
            }
        }
    }
    let range = match only {
        Some(s) => s..s + 1,
        None => 0..seeds,
    };
    let n = range.end - range.start;
    let mut failures = 0u64;
    let scenarios: [(&str, Scenario); 2] = [
        ("reactor", myriad::sim::run),
        ("engine", myriad::sim::run_engine_echo),
    ];
    for seed in range {
        let mut failed = Vec::new();
        for (name, run) in scenarios {
            // a broken assertion in the engine fails the seed, not the run
            let once = || {
                std::panic::catch_unwind(|| run(seed)).unwrap_or_else(|_| Err("panicked".into()))
            };
            let verdict = match (once(), once()) {
                (Ok(a), Ok(b)) if a == b => continue,
                (Ok(_), Ok(_)) => "two runs gave two traces".to_string(),
                (Err(e), _) | (_, Err(e)) => e,
            };
            failed.push(format!("{name}: {verdict}"));
        }
        if failed.is_empty() {
            continue;
        }
        failures += 1;
        println!(
            "FAIL seed={seed}: {}\n  replay: cargo run --release -p myriad --features sim --example simulate -- --seed {seed}",
            failed.join("; ")
        );
    }
    println!("RESULT seeds={n} failures={failures}");
    if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
