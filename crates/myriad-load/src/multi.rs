//! `--processes P`: the parent re-executes itself P times with a hidden
//! `--child INDEX/COUNT` flag; each child runs its share of the connections
//! in its own engine (and under its own open-files limit) and talks to the
//! parent over its standard streams, one line per message:
//!
//! * child → parent: `P open settled established messages errors attempted
//!   closed` (progress, a few times a second), `C` (its connections are up),
//!   `R {json}` (its [`RawReport`], histograms in HdrHistogram V2 encoding);
//! * parent → child: `GO` once every child has sent `C`, so that all
//!   processes measure (or hold) over the same period.
//!
//! The parent merges the reports ([`Final::merge`]) and draws its own time
//! line from the children's progress.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::client::{ErrorKind, Snapshot};
use crate::config::{self, Setup};
use crate::report::{Final, Point, RawReport};
use crate::run::{self, Observer, Status};
use crate::Bar;

/// A line from a child.
#[derive(Debug)]
enum Msg {
    Progress(Box<Snapshot>),
    Connected,
    Report(Box<RawReport>),
    Eof,
}

fn parse_line(line: &str) -> Option<Msg> {
    let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
    match tag {
        "P" => {
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            let [open, settled, established, messages_total, errors, attempted, closed] =
                v.as_slice().try_into().ok()?;
            let mut s = Snapshot {
                open,
                settled,
                established,
                messages_total,
                attempted,
                closed,
                ..Snapshot::default()
            };
            // Only the total matters for the progress line.
            s.errors[ErrorKind::Io as usize] = errors;
            Some(Msg::Progress(Box::new(s)))
        }
        "C" => Some(Msg::Connected),
        "R" => serde_json::from_str(rest)
            .ok()
            .map(|r| Msg::Report(Box::new(r))),
        _ => None,
    }
}

/// The child side: run the share, report on stdout.
pub fn child_main(setup: &Setup, i: u32, p: u32) -> Result<ExitCode> {
    let opts = setup.run_opts(i, p);
    config::check_fd_limit(setup.max_open(i, p), p)?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut obs = ChildObs {
        rx,
        wait: setup.max_run_time(),
    };
    let fin = run::run(opts, &mut obs)?;
    let line = serde_json::to_string(&fin.raw)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "R {line}")?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

struct ChildObs {
    rx: Receiver<String>,
    wait: Duration,
}

impl Observer for ChildObs {
    fn progress(&mut self, st: &Status) {
        let s = &st.snap;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "P {} {} {} {} {} {} {}",
            s.open,
            s.settled,
            s.established,
            s.messages_total,
            s.errors_total(),
            s.attempted,
            s.closed
        );
        let _ = out.flush();
    }

    fn connected(&mut self, st: &Status) -> bool {
        self.progress(st);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "C");
        let _ = out.flush();
        drop(out);
        let until = Instant::now() + self.wait;
        // Bounded by the deadline; other lines are ignored.
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) if l.trim() == "GO" => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
}

fn kill_all(children: &mut [Child]) {
    for c in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The parent side: start the children, relay progress, merge.
pub fn parent_main(setup: &Setup, quiet: bool) -> Result<Final> {
    let p = setup.args.processes;
    let exe = std::env::current_exe().context("finding my own executable")?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let (tx, rx) = mpsc::channel::<(usize, Msg)>();
    let mut children: Vec<Child> = Vec::new();
    for i in 0..p {
        let spawned = Command::new(&exe)
            .args(&args)
            .arg("--child")
            .arg(format!("{i}/{p}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                kill_all(&mut children);
                return Err(e).context("starting a child process");
            }
        };
        let Some(out) = child.stdout.take() else {
            kill_all(&mut children);
            bail!("child process without stdout");
        };
        let tx = tx.clone();
        let idx = i as usize;
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(m) = parse_line(&line) {
                    if tx.send((idx, m)).is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send((idx, Msg::Eof));
        });
        children.push(child);
    }
    drop(tx);

    let n = p as usize;
    let mut latest = vec![Snapshot::default(); n];
    let mut connected = vec![false; n];
    let mut eof = vec![false; n];
    let mut reports: Vec<Option<RawReport>> = vec![None; n];
    let mut bar = Bar::new(quiet);
    let mut timeline: Vec<Point> = Vec::new();
    let mut last_point = (0.0f64, 0u64);
    let mut last_progress = 0.0f64;
    let start = Instant::now();
    let deadline = start + setup.max_run_time();
    let mut go_sent = false;
    let sum = |latest: &[Snapshot]| {
        let mut s = Snapshot::default();
        for x in latest {
            s.open += x.open;
            s.settled += x.settled;
            s.established += x.established;
            s.messages_total += x.messages_total;
            s.attempted += x.attempted;
            s.closed += x.closed;
            for (a, b) in s.errors.iter_mut().zip(x.errors.iter()) {
                *a += b;
            }
        }
        s
    };
    // Bounded by the deadline.
    while !eof.iter().all(|&e| e) {
        if Instant::now() > deadline {
            kill_all(&mut children);
            bail!("child processes did not finish in time; stopped them");
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((i, Msg::Progress(s))) => latest[i] = *s,
            Ok((i, Msg::Connected)) => connected[i] = true,
            Ok((i, Msg::Report(r))) => reports[i] = Some(*r),
            Ok((i, Msg::Eof)) => eof[i] = true,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if !go_sent && (0..n).all(|i| connected[i] || eof[i]) {
            go_sent = true;
            for c in children.iter_mut() {
                if let Some(stdin) = c.stdin.as_mut() {
                    let _ = stdin.write_all(b"GO\n");
                    let _ = stdin.flush();
                }
            }
        }
        let t = start.elapsed().as_secs_f64();
        let s = sum(&latest);
        if t - last_point.0 >= 0.5 {
            timeline.push(Point {
                t,
                open: s.open,
                established: s.established,
                messages: s.messages_total.saturating_sub(last_point.1),
                dt: t - last_point.0,
                errors: s.errors_total(),
            });
            last_point = (t, s.messages_total);
        }
        if t - last_progress >= 0.2 {
            last_progress = t;
            bar.show(&Status {
                elapsed: t,
                phase: if go_sent { "running" } else { "connecting" },
                target: setup.args.connections,
                snap: s,
            });
        }
    }
    bar.finish();
    // The children have closed their stdout: they are exiting.
    let mut statuses = Vec::new();
    for c in children.iter_mut() {
        drop(c.stdin.take());
        let until = Instant::now() + Duration::from_secs(10);
        let status = loop {
            match c.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = c.kill();
                    break c.wait().ok();
                }
            }
        };
        statuses.push(status);
    }
    let mut parts = Vec::new();
    let mut lost = Vec::new();
    for (i, r) in reports.into_iter().enumerate() {
        match r {
            Some(r) => parts.push(r),
            None => lost.push(format!(
                "process {i} ended without a report ({}); its connections are missing",
                statuses[i].map_or("unknown status".to_string(), |s| s.to_string())
            )),
        }
    }
    if parts.is_empty() {
        bail!("no process returned a report: {}", lost.join("; "));
    }
    let mut fin = Final::merge(parts)?;
    fin.raw.timeline = timeline;
    // The target stays the whole run's: missing connections make the exit
    // status 1.
    fin.raw.connections_target = setup.args.connections;
    fin.raw.notes.extend(lost);
    Ok(fin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse() {
        match parse_line("P 1 2 3 4 5 6 7") {
            Some(Msg::Progress(s)) => {
                assert_eq!((s.open, s.closed, s.errors_total()), (1, 7, 5));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_line("C"), Some(Msg::Connected)));
        assert!(parse_line("P 1 2").is_none());
        assert!(parse_line("R {not json").is_none());
        assert!(parse_line("hello").is_none());
        let r = RawReport::default();
        let line = format!("R {}", serde_json::to_string(&r).unwrap());
        assert!(matches!(parse_line(&line), Some(Msg::Report(_))));
    }
}
