//! Runs the deterministic simulation of the engine's reactor.
//!
//! ```text
//! cargo run --release -p myriad --features sim --example simulate -- --seeds 10000
//! cargo run --release -p myriad --features sim --example simulate -- --seed 4242
//! ```
//!
//! Each seed runs twice; the two traces must hash the same. A failing seed
//! prints itself and the command that replays it. Ends with
//! `RESULT seeds=N failures=F`, exit status 1 if F > 0.

use std::process::ExitCode;

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
    for seed in range {
        let verdict = match (myriad::sim::run(seed), myriad::sim::run(seed)) {
            (Ok(a), Ok(b)) if a == b => continue,
            (Ok(_), Ok(_)) => "two runs gave two traces".to_string(),
            (Err(e), _) | (_, Err(e)) => e,
        };
        failures += 1;
        println!(
            "FAIL seed={seed}: {verdict}\n  replay: cargo run --release -p myriad --features sim --example simulate -- --seed {seed}"
        );
    }
    println!("RESULT seeds={n} failures={failures}");
    if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
