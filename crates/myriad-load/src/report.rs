//! Results: what one process measured ([`RawReport`], also the wire format
//! between child processes and their parent), merging, and the outputs
//! (text summary, JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::{ErrorKind, Hists, MAX_SAMPLES};

/// One sample of the run's time line.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Point {
    /// Seconds since the start of the run.
    pub t: f64,
    /// Connections open.
    pub open: u64,
    /// Connections established so far.
    #[serde(default)]
    pub established: u64,
    /// Echoes completed since the previous point.
    pub messages: u64,
    /// Seconds since the previous point.
    pub dt: f64,
    /// Errors so far.
    pub errors: u64,
}

/// What one process measured. Child processes print it as JSON for their
/// parent; histograms travel as base64 of the HdrHistogram V2 encoding.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RawReport {
    /// The target URL.
    pub target: String,
    /// `echo`, `echo-open-loop`, `hold` or `connect-only`.
    pub mode: String,
    /// Processes merged into this report.
    pub processes: u32,
    /// Event-loop threads per process.
    pub threads: usize,
    /// Engine backend.
    pub backend: String,
    /// Connections asked for.
    pub connections_target: u64,
    /// Connect calls made.
    pub connections_attempted: u64,
    /// Connections established.
    pub connections_established: u64,
    /// Connections that did all they had to.
    pub connections_done: u64,
    /// Seconds from the first connect until every connection was up (or
    /// failed).
    pub connect_secs: f64,
    /// Length of the measured window in seconds.
    pub window_secs: f64,
    /// Echoes completed in the measured window.
    pub messages: u64,
    /// Echoes completed in the whole run.
    pub messages_total: u64,
    /// Payload bytes echoed in the measured window.
    pub bytes: u64,
    /// Echoes per second in the window.
    pub messages_per_sec: f64,
    /// Payload bytes per second in the window (one direction).
    pub bytes_per_sec: f64,
    /// Connections established per second during the connect phase
    /// (connect-only: connect–echo–close cycles per second).
    pub connections_per_sec: f64,
    /// TLS handshakes completed in full.
    #[serde(default)]
    pub tls_full: u64,
    /// TLS handshakes completed by resuming a session.
    #[serde(default)]
    pub tls_resumed: u64,
    /// HTTP: connections closed by the server and reopened.
    #[serde(default)]
    pub reconnects: u64,
    /// Hold re-verifications sent.
    pub checks_sent: u64,
    /// Hold re-verifications verified.
    pub checks_ok: u64,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// The first few errors, described.
    pub error_samples: Vec<String>,
    /// Remarks about the run (a connect phase that did not finish, ...).
    #[serde(default)]
    pub notes: Vec<String>,
    /// CPU seconds (user + system) of the process(es) in the window.
    pub cpu_secs: f64,
    /// Resident memory once the engine ran, before connecting (bytes).
    pub rss_before: u64,
    /// Resident memory with every connection up (bytes).
    pub rss_connected: u64,
    /// Connections open when `rss_connected` was taken.
    pub open_at_rss: u64,
    /// Latency histogram (µs), base64 of the V2 encoding.
    pub latency_hist: String,
    /// Connect-time histogram (µs), base64 of the V2 encoding.
    pub connect_hist: String,
    /// Time line of the run.
    pub timeline: Vec<Point>,
}

/// Encodes a histogram for a [`RawReport`].
pub fn encode_hist(h: &Histogram<u64>) -> Result<String> {
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| anyhow::anyhow!("serialising a histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

/// Decodes a histogram of a [`RawReport`] (empty string: empty histogram).
pub fn decode_hist(s: &str) -> Result<Histogram<u64>> {
    if s.is_empty() {
        return Ok(Histogram::new(3)?);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .context("histogram is not base64")?;
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| anyhow::anyhow!("decoding a histogram: {e:?}"))
}

/// A finished result: the merged report with its histograms decoded.
#[derive(Debug, Clone)]
pub struct Final {
    /// Merged counters and rates.
    pub raw: RawReport,
    /// Latency (µs).
    pub latency: Histogram<u64>,
    /// Connect time (µs).
    pub connect: Histogram<u64>,
}

impl Final {
    /// Builds a single report from a process's histograms.
    pub fn from_parts(mut raw: RawReport, h: &Hists) -> Result<Final> {
        raw.latency_hist = encode_hist(&h.latency)?;
        raw.connect_hist = encode_hist(&h.connect)?;
        Ok(Final {
            raw,
            latency: h.latency.clone(),
            connect: h.connect.clone(),
        })
    }

    /// Merges the reports of several processes: counts and rates add up,
    /// times are the longest, histograms are merged.
    pub fn merge(parts: Vec<RawReport>) -> Result<Final> {
        let mut latency = Histogram::<u64>::new(3)?;
        let mut connect = Histogram::<u64>::new(3)?;
        let mut m = RawReport {
            processes: 0,
            ..RawReport::default()
        };
        for p in parts {
            latency
                .add(decode_hist(&p.latency_hist)?)
                .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
            connect
                .add(decode_hist(&p.connect_hist)?)
                .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
            if m.target.is_empty() {
                m.target = p.target.clone();
                m.mode = p.mode.clone();
                m.threads = p.threads;
                m.backend = p.backend.clone();
            }
            m.processes += p.processes.max(1);
            m.connections_target += p.connections_target;
            m.connections_attempted += p.connections_attempted;
            m.connections_established += p.connections_established;
            m.connections_done += p.connections_done;
            m.connect_secs = m.connect_secs.max(p.connect_secs);
            m.window_secs = m.window_secs.max(p.window_secs);
            m.messages += p.messages;
            m.messages_total += p.messages_total;
            m.bytes += p.bytes;
            m.messages_per_sec += p.messages_per_sec;
            m.bytes_per_sec += p.bytes_per_sec;
            m.connections_per_sec += p.connections_per_sec;
            m.tls_full += p.tls_full;
            m.tls_resumed += p.tls_resumed;
            m.reconnects += p.reconnects;
            m.checks_sent += p.checks_sent;
            m.checks_ok += p.checks_ok;
            for (k, v) in &p.errors {
                *m.errors.entry(k.clone()).or_default() += v;
            }
            for s in p.error_samples {
                if m.error_samples.len() < MAX_SAMPLES {
                    m.error_samples.push(s);
                }
            }
            for s in p.notes {
                if m.notes.len() < MAX_SAMPLES {
                    m.notes.push(s);
                }
            }
            m.cpu_secs += p.cpu_secs;
            m.rss_before += p.rss_before;
            m.rss_connected += p.rss_connected;
            m.open_at_rss += p.open_at_rss;
        }
        m.latency_hist = encode_hist(&latency)?;
        m.connect_hist = encode_hist(&connect)?;
        Ok(Final {
            raw: m,
            latency,
            connect,
        })
    }

    /// All errors together.
    pub fn errors_total(&self) -> u64 {
        self.raw.errors.values().sum()
    }

    /// The highest rate of new connections between two points of the time
    /// line (per second).
    pub fn peak_connections_per_sec(&self) -> f64 {
        let mut prev = 0u64;
        let mut peak = 0.0f64;
        for p in &self.raw.timeline {
            if p.dt > 0.0 {
                peak = peak.max(p.established.saturating_sub(prev) as f64 / p.dt);
            }
            prev = p.established;
        }
        peak
    }

    /// CPU time of the load generator per echoed message (µs).
    pub fn cpu_us_per_message(&self) -> f64 {
        if self.raw.messages == 0 {
            0.0
        } else {
            self.raw.cpu_secs * 1e6 / self.raw.messages as f64
        }
    }

    /// The load generator's own memory per open connection (bytes).
    pub fn bytes_per_connection(&self) -> f64 {
        if self.raw.open_at_rss == 0 {
            0.0
        } else {
            self.raw.rss_connected.saturating_sub(self.raw.rss_before) as f64
                / self.raw.open_at_rss as f64
        }
    }

    /// The JSON report (`--json`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut errors = serde_json::Map::new();
        for k in ErrorKind::ALL {
            let n = self.raw.errors.get(k.name()).copied().unwrap_or(0);
            errors.insert(k.name().to_string(), json!(n));
        }
        let r = &self.raw;
        json!({
            "target": r.target,
            "mode": r.mode,
            "connections_target": r.connections_target,
            "connections_established": r.connections_established,
            "connections_per_sec": round2(r.connections_per_sec),
            "peak_connections_per_sec": round2(self.peak_connections_per_sec()),
            "messages": r.messages,
            "messages_total": r.messages_total,
            "messages_per_sec": round2(r.messages_per_sec),
            "bytes_per_sec": round2(r.bytes_per_sec),
            "errors": errors,
            "errors_total": self.errors_total(),
            "latency_us": percentiles(&self.latency),
            "connect_us": percentiles(&self.connect),
            "duration_secs": round2(r.window_secs),
            "connect_secs": round2(r.connect_secs),
            "hold_checks": { "sent": r.checks_sent, "verified": r.checks_ok },
            "reconnects": r.reconnects,
            "tls_handshakes": { "full": r.tls_full, "resumed": r.tls_resumed },
            "cpu_secs": round2(r.cpu_secs),
            "cpu_us_per_message": round2(self.cpu_us_per_message()),
            "client_bytes_per_connection": self.bytes_per_connection().round(),
            "processes": r.processes,
            "threads_per_process": r.threads,
            "backend": r.backend,
            "error_samples": r.error_samples,
            "notes": r.notes,
        })
    }

    /// The text summary printed at the end.
    pub fn summary(&self) -> String {
        let r = &self.raw;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "myriad-load {} ({}; {} process{}, {} thread{} each, {})",
            r.target,
            r.mode,
            r.processes,
            if r.processes == 1 { "" } else { "es" },
            r.threads,
            if r.threads == 1 { "" } else { "s" },
            r.backend
        );
        let _ = writeln!(
            s,
            "  connections  {} of {} established in {:.2} s ({:.0}/s{})",
            r.connections_established,
            r.connections_target,
            r.connect_secs,
            r.connections_per_sec,
            if r.mode == "connect-only" {
                ", connect+echo+close cycles"
            } else {
                ""
            }
        );
        // Connect time runs from the connect call to `on_open`: over TLS
        // that includes the handshake.
        let tls = ["tls://", "wss://", "https://"]
            .iter()
            .any(|p| r.target.starts_with(p));
        let label = if tls { "connect+TLS" } else { "connect    " };
        let _ = writeln!(s, "  {label}  {}", pct_line(&self.connect));
        if tls {
            let _ = writeln!(
                s,
                "  handshakes   {} full, {} resumed",
                r.tls_full, r.tls_resumed
            );
        }
        // HTTP: a message is a request and its response.
        let http = r.target.starts_with("http://") || r.target.starts_with("https://");
        if r.mode != "connect-only" {
            let (label, unit) = if http {
                ("requests", "req/s")
            } else {
                ("messages", "msg/s")
            };
            let _ = writeln!(
                s,
                "  {label:<12} {} in {:.2} s: {:.0} {unit}, {:.2} MB/s",
                r.messages,
                r.window_secs,
                r.messages_per_sec,
                r.bytes_per_sec / 1e6
            );
        }
        if http {
            let _ = writeln!(
                s,
                "  reconnects   {} (the server closed: Connection: close, or idle)",
                r.reconnects
            );
        }
        let _ = writeln!(s, "  latency      {}", pct_line(&self.latency));
        if r.mode == "hold" {
            let _ = writeln!(
                s,
                "  hold checks  {} of {} sampled connections re-verified",
                r.checks_ok, r.checks_sent
            );
        }
        let _ = writeln!(
            s,
            "  client cost  {:.3} µs CPU per message ({:.2} CPU s), {:.0} B per connection",
            self.cpu_us_per_message(),
            r.cpu_secs,
            self.bytes_per_connection()
        );
        for n in &r.notes {
            let _ = writeln!(s, "  note         {n}");
        }
        let total = self.errors_total();
        if total == 0 {
            let _ = writeln!(s, "  errors       none");
        } else {
            let kinds: Vec<String> = r
                .errors
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(s, "  errors       {total}: {}", kinds.join(" "));
            for e in &r.error_samples {
                let _ = writeln!(s, "    {e}");
            }
        }
        s
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// `p50`, `p90`, `p99`, `p999`, `max` (and `mean`) of a histogram in µs.
pub fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": round2(h.mean()),
        "count": h.len(),
    })
}

fn fmt_us(v: u64) -> String {
    if v >= 10_000_000 {
        format!("{:.1}s", v as f64 / 1e6)
    } else if v >= 10_000 {
        format!("{:.1}ms", v as f64 / 1e3)
    } else {
        format!("{v}µs")
    }
}

fn pct_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "(no samples)".into();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
        fmt_us(h.value_at_quantile(0.5)),
        fmt_us(h.value_at_quantile(0.9)),
        fmt_us(h.value_at_quantile(0.99)),
        fmt_us(h.value_at_quantile(0.999)),
        fmt_us(h.max()),
        h.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(msgs: u64, lat: &[u64]) -> RawReport {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for &v in lat {
            h.record(v).unwrap();
        }
        let mut errors = BTreeMap::new();
        errors.insert("mismatch".to_string(), 1);
        RawReport {
            target: "tcp://x:1".into(),
            mode: "echo".into(),
            processes: 1,
            connections_target: 10,
            connections_established: 10,
            messages: msgs,
            messages_per_sec: msgs as f64,
            window_secs: 1.0,
            errors,
            latency_hist: encode_hist(&h).unwrap(),
            ..RawReport::default()
        }
    }

    #[test]
    fn merge_adds_counts_and_histograms() {
        let f = Final::merge(vec![raw(100, &[10, 20]), raw(50, &[1000])]).unwrap();
        assert_eq!(f.raw.messages, 150);
        assert_eq!(f.raw.processes, 2);
        assert_eq!(f.raw.connections_established, 20);
        assert_eq!(f.latency.len(), 3);
        assert_eq!(f.latency.max(), 1000);
        assert_eq!(f.errors_total(), 2);
        let j = f.to_json();
        assert_eq!(j["errors"]["mismatch"], 2);
        assert_eq!(j["latency_us"]["max"], 1000);
        assert_eq!(j["messages"], 150);
    }

    #[test]
    fn histograms_round_trip() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        h.record(42).unwrap();
        let back = decode_hist(&encode_hist(&h).unwrap()).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back.max(), h.max());
        assert!(decode_hist("not base64!").is_err());
    }
}
