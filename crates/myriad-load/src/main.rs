//! `myriad-load`: the load generator and echo verifier of Myriad.
//!
//! ```text
//! myriad-load tcp://127.0.0.1:7000 -c 1000 -s 64 -w 4 -d 10s
//! myriad-load tcp://127.0.0.1:7000 -c 100 --rate 50k -d 30s --json out.json --html out.html
//! myriad-load ws://127.0.0.1:8080/echo -c 500 --size 16..4k --text
//! myriad-load tcp://127.0.0.1:7000 -c 60k -p 4 --source-ips 127.0.0.2-127.0.0.60 --hold 60s
//! myriad-load tcp://127.0.0.1:7000 -c 50k --connect-only
//! myriad-load tls://localhost:7443 --ca ca.pem -c 100 -w 4 -d 10s
//! myriad-load wss://127.0.0.1:8443/echo --insecure -c 100 --connect-only
//! myriad-load http://127.0.0.1:8080/ -c 256 -w 16 -d 10s
//! myriad-load http://127.0.0.1:8080/ --method POST --expect-echo -s 1..4k
//! ```
//!
//! Exit status: 0 when the run had at most `--allow-errors` errors, 1 when it
//! had more (or could not run), 2 for bad usage (one line naming the flag).
//!
//! The pieces: [`cli`] (flags and value parsers), [`config`] (flags → a
//! run, shares of several processes), [`payload`] (deterministic payloads
//! and their verification), [`client`] (the per-connection handler on
//! Myriad's connector), [`run`] (one process's phases), [`multi`] (child
//! processes and merging), [`report`] (summary, JSON), [`html`] (the HTML
//! report), [`http`] (HTTP/1.1 requests and the response decoder) and
//! [`tls`] (the rustls client configuration of tls://, wss:// and https://
//! targets).

mod cli;
mod client;
mod config;
mod html;
mod http;
mod multi;
mod payload;
mod report;
mod run;
mod tls;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::Args;
use crate::config::UsageError;
use crate::report::Final;
use crate::run::{Observer, Status};

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // clap's first line names the flag and the reason; the usage
            // lines after it are left out.
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or("bad arguments");
            let line = line.strip_prefix("error: ").unwrap_or(line);
            eprintln!("myriad-load: {line}");
            return ExitCode::from(2);
        }
    };
    match real_main(args) {
        Ok(code) => code,
        Err(e) => {
            if let Some(u) = e.downcast_ref::<UsageError>() {
                eprintln!("myriad-load: {u}");
                return ExitCode::from(2);
            }
            eprintln!("myriad-load: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main(args: Args) -> Result<ExitCode> {
    let setup = config::setup(&args)?;
    if let Some((i, p)) = args.child {
        return multi::child_main(&setup, i, p);
    }
    let p = args.processes;
    config::check_fd_limit(setup.max_open(0, p), p)?;
    let quiet = args.quiet || !std::io::stderr().is_terminal();
    let fin = if p > 1 {
        multi::parent_main(&setup, quiet)?
    } else {
        let mut obs = Bar::new(quiet);
        let f = run::run(setup.run_opts(0, 1), &mut obs)?;
        obs.finish();
        f
    };
    output(&args, &fin)
}

/// Prints the summary, writes the files, picks the exit status.
fn output(args: &Args, fin: &Final) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(fin.summary().as_bytes());
    let _ = out.flush();
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&fin.to_json())?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, html::render(fin))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let errors = fin.errors_total();
    let missing = fin.raw.connections_attempted < fin.raw.connections_target;
    if errors > args.allow_errors || missing {
        if errors > args.allow_errors {
            eprintln!(
                "myriad-load: {errors} error(s), more than --allow-errors {}",
                args.allow_errors
            );
        } else {
            eprintln!("myriad-load: not every connection was attempted");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The live progress line (indicatif), or nothing when quiet.
pub struct Bar {
    pb: Option<ProgressBar>,
    last: (f64, u64),
    rate: f64,
}

impl Bar {
    /// A progress line on stderr, hidden if `quiet`.
    pub fn new(quiet: bool) -> Self {
        let pb = (!quiet).then(|| {
            let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
            pb.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb
        });
        Bar {
            pb,
            last: (0.0, 0),
            rate: 0.0,
        }
    }

    /// Shows one status.
    pub fn show(&mut self, st: &Status) {
        let Some(pb) = &self.pb else { return };
        let dt = st.elapsed - self.last.0;
        if dt >= 0.5 {
            self.rate = st.snap.messages_total.saturating_sub(self.last.1) as f64 / dt;
            self.last = (st.elapsed, st.snap.messages_total);
        }
        pb.set_message(format!(
            "{:<10} open {}/{}  {:.0} msg/s  errors {}  {:.1}s",
            st.phase,
            st.snap.open,
            st.target,
            self.rate,
            st.snap.errors_total(),
            st.elapsed
        ));
        pb.tick();
    }

    /// Removes the line.
    pub fn finish(&self) {
        if let Some(pb) = &self.pb {
            pb.finish_and_clear();
        }
    }
}

impl Observer for Bar {
    fn progress(&mut self, st: &Status) {
        self.show(st);
    }
    fn connected(&mut self, st: &Status) -> bool {
        self.show(st);
        true
    }
}
