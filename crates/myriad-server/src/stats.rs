//! `myriad stats`: a live one-screen view from the metrics endpoint.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn fetch(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .context("--url must start with http://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let mut s =
        TcpStream::connect(hostport).with_context(|| format!("connecting to {hostport}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let Some(i) = body.find("\r\n\r\n") else {
        bail!("malformed HTTP response from {url}");
    };
    if !body.starts_with("HTTP/1.1 200") {
        bail!("{url}: {}", body.lines().next().unwrap_or(""));
    }
    Ok(body[i + 4..].to_string())
}

/// Samples summed per (service, metric name) over loops.
type Samples = BTreeMap<(String, String), f64>;

/// Sums samples per (service, metric) over loops.
fn parse(text: &str) -> Samples {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((lhs, v)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = v.parse::<f64>() else { continue };
        let (name, labels) = match lhs.find('{') {
            Some(i) => (&lhs[..i], &lhs[i..]),
            None => (lhs, ""),
        };
        let service = labels
            .split("service=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_string();
        *m.entry((service, name.to_string())).or_insert(0.0) += v;
    }
    m
}

pub fn run(url: &str, once: bool) -> Result<()> {
    let mut prev: Option<(Instant, Samples)> = None;
    // Bounded: a live view for at most a day.
    for _ in 0..86_400 {
        let now = parse(&fetch(url)?);
        let t = Instant::now();
        let services: Vec<String> = {
            let mut v: Vec<String> = now
                .keys()
                .map(|k| k.0.clone())
                .filter(|s| !s.is_empty())
                .collect();
            v.dedup();
            v
        };
        if !once {
            print!("\x1b[2J\x1b[H");
        }
        println!("myriad stats — {url}");
        println!(
            "{:<16} {:>10} {:>12} {:>12} {:>12} {:>12} {:>8}",
            "service", "open", "accepted", "reads/s", "in MB/s", "out MB/s", "errors"
        );
        for s in &services {
            let get =
                |m: &Samples, k: &str| m.get(&(s.clone(), k.to_string())).copied().unwrap_or(0.0);
            let rate = |k: &str| match &prev {
                Some((t0, p)) => {
                    (get(&now, k) - get(p, k)) / t.duration_since(*t0).as_secs_f64().max(1e-3)
                }
                None => 0.0,
            };
            let errors: f64 = now
                .iter()
                .filter(|((svc, name), _)| {
                    svc == s
                        && (name.starts_with("myriad_err_") || name == "myriad_filter_errors_total")
                })
                .map(|(_, v)| v)
                .sum();
            println!(
                "{:<16} {:>10.0} {:>12.0} {:>12.0} {:>12.2} {:>12.2} {:>8.0}",
                s,
                get(&now, "myriad_connections_open"),
                get(&now, "myriad_accepted_total"),
                rate("myriad_reads_total"),
                rate("myriad_bytes_in_total") / 1e6,
                rate("myriad_bytes_out_total") / 1e6,
                errors
            );
        }
        if once {
            return Ok(());
        }
        prev = Some((t, now));
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(())
}
