//! Prometheus text exposition at `/metrics` (and `/healthz`, `/readyz`),
//! served by Myriad's own engine and HTTP layer.
//!
//! Counters live per loop in each engine and are summed only here, when
//! scraped: the data path takes no lock for them.

use crate::services::Running;
use myriad::{ConnId, Ctx, Handler, Service};
use myriad_http::HttpConn;
use myriad_server::metrics_request;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The services whose counters are exported.
pub type Registry = Arc<RwLock<Vec<Arc<Running>>>>;

fn help(name: &str) -> &'static str {
    match name {
        "accepted" => "Connections accepted.",
        "connected" => "Outbound connections established.",
        "closed" => "Connections closed.",
        "refused" => "Connections refused by a connection limit.",
        "refused_per_addr" => "Connections refused by the per-address connection limit.",
        "refused_fd_limit" => {
            "Connections accepted and closed because the process was out of descriptors."
        }
        "err_accept" => "Accept failures (EMFILE, ENFILE, ENOMEM); accepting pauses.",
        "open" => "Connections open now.",
        "timers" => "Timer entries held by the loop now.",
        "queued_bytes" => "Bytes queued for sending in the loop's write queues now.",
        "bytes_in" => "Bytes received.",
        "bytes_out" => "Bytes sent.",
        "reads" => "Receive completions.",
        "writes" => "Send completions.",
        "ring_exhausted" => "Times the io_uring provided-buffer ring ran dry.",
        "bytes_lent" => "Bytes sent from receive buffers without a copy (io_uring).",
        "backpressure_pauses" => "Times reading paused at the write high-water mark.",
        _ => "Connections closed by this error kind.",
    }
}

/// Writes a metric's `# HELP` and `# TYPE` lines.
fn header(out: &mut String, metric: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {metric} {help}");
    let _ = writeln!(out, "# TYPE {metric} {kind}");
}

/// Writes a counter with one line per service and value of `label`:
/// `rows` are `(service, label value, count)`.
fn counter_by<'a>(
    out: &mut String,
    metric: &str,
    help: &str,
    label: &str,
    rows: impl IntoIterator<Item = (&'a str, &'a str, u64)>,
) {
    header(out, metric, "counter", help);
    for (svc, key, n) in rows {
        let _ = writeln!(out, "{metric}{{service=\"{svc}\",{label}=\"{key}\"}} {n}");
    }
}

/// Renders every counter of every service and loop.
pub fn render(reg: &Registry) -> String {
    let services: Vec<Arc<Running>> = match reg.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    let mut out = String::with_capacity(8192);
    let per: Vec<(String, Vec<myriad::Stats>)> = services
        .iter()
        .map(|r| (r.config.name.clone(), r.engine.loop_stats()))
        .collect();
    let names: Vec<&'static str> = myriad::Stats::default()
        .fields()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for (i, name) in names.iter().enumerate() {
        let (metric, kind) = match *name {
            "open" => ("myriad_connections_open".to_string(), "gauge"),
            "timers" => ("myriad_timers".to_string(), "gauge"),
            "queued_bytes" => ("myriad_queued_bytes".to_string(), "gauge"),
            _ => (format!("myriad_{name}_total"), "counter"),
        };
        header(&mut out, &metric, kind, help(name));
        for (svc, loops) in &per {
            for (l, st) in loops.iter().enumerate() {
                let v = st.fields()[i].1;
                let _ = writeln!(out, "{metric}{{service=\"{svc}\",loop=\"{l}\"}} {v}");
            }
        }
    }
    counter_by(
        &mut out,
        "myriad_filter_errors_total",
        "TLS failures by kind.",
        "kind",
        services.iter().flat_map(|r| {
            let svc = r.config.name.as_str();
            r.engine
                .filter_errors()
                .into_iter()
                .map(move |(kind, n)| (svc, kind, n))
        }),
    );
    counter_by(
        &mut out,
        "myriad_tls_handshakes_total",
        "TLS handshakes completed, full or resumed.",
        "kind",
        services.iter().flat_map(|r| {
            let svc = r.config.name.as_str();
            let h = r.tls.as_ref().map(|t| t.handshakes());
            h.into_iter()
                .flat_map(move |h| [(svc, "full", h.full), (svc, "resumed", h.resumed)])
        }),
    );
    // Write-queue depth per service, as a Prometheus histogram.
    header(
        &mut out,
        "myriad_write_queue_bytes",
        "histogram",
        "Bytes queued for sending per open connection.",
    );
    for r in &services {
        let mut buckets = [0u64; myriad::QUEUE_BUCKETS.len() + 1];
        for i in 0..r.engine.loop_count() {
            if let Some(h) = r.engine.loop_handle(i).write_queue_histogram() {
                for (b, v) in buckets.iter_mut().zip(h) {
                    *b += v;
                }
            }
        }
        let mut cum = 0;
        for (i, le) in myriad::QUEUE_BUCKETS.iter().enumerate() {
            cum += buckets[i];
            let _ = writeln!(
                out,
                "myriad_write_queue_bytes_bucket{{service=\"{}\",le=\"{le}\"}} {cum}",
                r.config.name
            );
        }
        cum += buckets[myriad::QUEUE_BUCKETS.len()];
        let _ = writeln!(
            out,
            "myriad_write_queue_bytes_bucket{{service=\"{}\",le=\"+Inf\"}} {cum}",
            r.config.name
        );
        let _ = writeln!(
            out,
            "myriad_write_queue_bytes_count{{service=\"{}\"}} {cum}",
            r.config.name
        );
    }
    for (metric, help) in [
        ("myriad_pool_queued", "Business-pool jobs waiting."),
        ("myriad_pool_busy", "Business-pool threads running a job."),
    ] {
        header(&mut out, metric, "gauge", help);
        for r in &services {
            if let Some(p) = &r.pool {
                let v = if metric == "myriad_pool_queued" {
                    p.queued()
                } else {
                    p.busy()
                };
                let _ = writeln!(out, "{metric}{{service=\"{}\"}} {v}", r.config.name);
            }
        }
    }
    counter_by(
        &mut out,
        "myriad_ws_events_total",
        "WebSocket handshake results and protocol failures.",
        "event",
        services.iter().flat_map(|r| {
            let svc = r.config.name.as_str();
            let s = r.ws.as_ref().map(|ws| ws.stats());
            s.into_iter().flat_map(move |s| {
                [
                    ("handshakes", s.handshakes),
                    ("http_responses", s.http_responses),
                    ("rejected_400", s.rejected_400),
                    ("rejected_403", s.rejected_403),
                    ("rejected_426", s.rejected_426),
                    ("rejected_431", s.rejected_431),
                    ("refused", s.refused),
                    ("handshake_timeouts", s.handshake_timeouts),
                    ("closed_1002", s.closed_1002),
                    ("closed_1007", s.closed_1007),
                    ("closed_1009", s.closed_1009),
                    ("inflate_ratio_exceeded", s.inflate_ratio_exceeded),
                    ("close_timeouts", s.close_timeouts),
                    ("rate_limited", s.rate_limited),
                    ("pings_sent", s.pings_sent),
                    ("pong_timeouts", s.pong_timeouts),
                    ("messages_in", s.messages_in),
                ]
                .map(|(k, v)| (svc, k, v))
            })
        }),
    );
    header(
        &mut out,
        "myriad_broadcast_dropped_total",
        "counter",
        "Broadcast deliveries dropped because a loop's bound on broadcast bytes in flight was reached.",
    );
    for r in services.iter() {
        if let Some(n) = r.broadcast_dropped() {
            let _ = writeln!(
                out,
                "myriad_broadcast_dropped_total{{service=\"{}\"}} {n}",
                r.config.name
            );
        }
    }
    // Plugin counters: label values are the plugin's names (checked to
    // [A-Za-z0-9_.:-] when counted), the service's and the plugin's name
    // escaped.
    let plugins: Vec<_> = services
        .iter()
        .flat_map(|r| r.plugins.iter().map(|p| (r.config.name.as_str(), p)))
        .collect();
    header(
        &mut out,
        "myriad_plugin_events_total",
        "counter",
        "Events counted by plugins (host counter_add).",
    );
    for (svc, p) in &plugins {
        for (name, n) in p.counters() {
            let _ = writeln!(
                out,
                "myriad_plugin_events_total{{service=\"{}\",plugin=\"{}\",name=\"{name}\"}} {n}",
                escape(svc),
                escape(p.plugin_name())
            );
        }
    }
    header(
        &mut out,
        "myriad_plugin_faults_total",
        "counter",
        "Connections closed because their plugin misbehaved, by kind.",
    );
    for (svc, p) in &plugins {
        for (kind, n) in crate::plugin::FAULT_KINDS.iter().zip(p.faults()) {
            let _ = writeln!(
                out,
                "myriad_plugin_faults_total{{service=\"{}\",plugin=\"{}\",kind=\"{kind}\"}} {n}",
                escape(svc),
                escape(p.plugin_name())
            );
        }
    }
    out
}

/// A label value as the exposition format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Connections waiting for their first request head, most recent last:
/// with more than this many, the oldest is dropped, so that half-sent
/// requests (slowloris) cannot lock scrapes out. The codec's head deadline
/// ([`metrics_request::REQUEST_DEADLINE`]) bounds how long each may wait.
const MAX_PENDING: usize = 64;

thread_local! {
    /// This loop's connections still waiting for a whole first request.
    static PENDING: RefCell<VecDeque<ConnId>> = const { RefCell::new(VecDeque::new()) };
}

fn done(id: ConnId) {
    PENDING.with(|p| p.borrow_mut().retain(|&x| x != id));
}

/// The metrics listener: `GET /metrics` (the exposition), `/healthz` and
/// `/readyz`, served by myriad-http ([`metrics_request::router`] with
/// [`metrics_request::config`]: strict parsing, keep-alive, a 5 s head
/// deadline). The exposition is rendered on `pool` and answered later
/// (`Responder::defer`): summing the write-queue histograms asks every
/// service loop, and the metrics loop must not wait for them. A full pool
/// answers 503.
pub fn service(
    addr: std::net::SocketAddr,
    registry: Registry,
    pool: myriad::Pool,
    ready: Arc<AtomicBool>,
    peers: Vec<std::net::SocketAddr>,
) -> anyhow::Result<Service> {
    let peers = Arc::new(Peers::new(peers));
    let ready_peers = Arc::clone(&peers);
    let router = metrics_request::router(
        move |_, res| {
            let Ok(later) = res.defer() else { return };
            // Shared with the job, so that a refused job can still answer.
            let slot = Arc::new(Mutex::new(Some(later)));
            let job_slot = Arc::clone(&slot);
            let reg = registry.clone();
            let peers = Arc::clone(&peers);
            let queued = pool.submit(move || {
                let body = peers.aggregate(render(&reg));
                if let Some(later) = take(&job_slot) {
                    later.send(
                        200,
                        &[("Content-Type", b"text/plain; version=0.0.4")],
                        body.into_bytes(),
                    );
                }
            });
            if queued.is_err() {
                if let Some(later) = take(&slot) {
                    later.send(503, &[("Content-Type", b"text/plain")], &b"busy\n"[..]);
                }
            }
        },
        move || ready.load(Ordering::Acquire) && ready_peers.ready(),
    )?;
    let router = Arc::new(router);
    let cfg = metrics_request::config();
    Ok(Service::new("metrics", addr, move || MetricsConn {
        http: HttpConn::new(Arc::clone(&router), cfg),
    }))
}

/// With `workers > 1`, worker 0's metrics listener answers for the whole
/// server: `/metrics` merges the other workers' expositions (fetched from
/// their own listeners, the metrics port + i, over loopback) into its own,
/// each sample labelled `worker`, grouped by metric family as the text
/// format requires, plus `myriad_worker_up{worker}`; `/readyz` is 200 only
/// while every worker's is (polled twice a second by a thread of its own,
/// so that the listener's loop never waits on the network).
pub struct Peers {
    addrs: Vec<std::net::SocketAddr>,
    ready: Arc<AtomicBool>,
}

/// How long a worker's listener may take to answer the aggregator.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

impl Peers {
    fn new(addrs: Vec<std::net::SocketAddr>) -> Peers {
        let ready = Arc::new(AtomicBool::new(addrs.is_empty()));
        if !addrs.is_empty() {
            let (flag, addrs) = (Arc::downgrade(&ready), addrs.clone());
            let _ = std::thread::Builder::new()
                .name("myriad-readyz".into())
                .spawn(move || {
                    // ends with the listener (the flag's last owner)
                    while let Some(flag) = flag.upgrade() {
                        let all = addrs
                            .iter()
                            .all(|a| fetch(*a, "/readyz").is_some_and(|(status, _)| status == 200));
                        flag.store(all, Ordering::Release);
                        drop(flag);
                        std::thread::sleep(Duration::from_millis(500));
                    }
                });
        }
        Peers { addrs, ready }
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// `own` alone without peers; else the merged exposition.
    fn aggregate(&self, own: String) -> String {
        if self.addrs.is_empty() {
            return own;
        }
        let mut bodies = vec![(0usize, Some(own))];
        for (i, a) in self.addrs.iter().enumerate() {
            let body = fetch(*a, "/metrics")
                .filter(|(status, _)| *status == 200)
                .map(|(_, b)| b);
            bodies.push((i + 1, body));
        }
        merge(&bodies)
    }
}

/// One GET over a fresh loopback connection: (status, body).
fn fetch(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, PEER_TIMEOUT).ok()?;
    s.set_read_timeout(Some(PEER_TIMEOUT)).ok()?;
    s.set_write_timeout(Some(PEER_TIMEOUT)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: myriad\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    // bounded: an exposition is kilobytes to a few megabytes
    s.take(64 << 20).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8(buf).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Merges expositions by metric family (in the order families first
/// appear), each sample labelled with its worker; a worker whose body is
/// missing shows only as `myriad_worker_up{worker} 0`.
fn merge(bodies: &[(usize, Option<String>)]) -> String {
    // family name -> (HELP/TYPE lines, samples)
    let mut order: Vec<String> = Vec::new();
    let mut families: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    for (worker, body) in bodies {
        let Some(body) = body else { continue };
        let mut family = String::new();
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                // "# HELP name ..." / "# TYPE name ..."
                let name = rest.split(' ').nth(1).unwrap_or("").to_owned();
                if name.is_empty() {
                    continue;
                }
                family = name.clone();
                let f = families.entry(name.clone()).or_insert_with(|| {
                    order.push(name);
                    (Vec::new(), Vec::new())
                });
                if !f.0.iter().any(|l| l == line) {
                    f.0.push(line.to_owned());
                }
            } else if !line.is_empty() {
                let labelled = match line.find('{') {
                    Some(i) if line[..i].find(' ').is_none() => {
                        format!("{}{{worker=\"{worker}\",{}", &line[..i], &line[i + 1..])
                    }
                    _ => match line.split_once(' ') {
                        Some((name, v)) => format!("{name}{{worker=\"{worker}\"}} {v}"),
                        None => continue,
                    },
                };
                let f = families.entry(family.clone()).or_insert_with(|| {
                    order.push(family.clone());
                    (Vec::new(), Vec::new())
                });
                f.1.push(labelled);
            }
        }
    }
    let mut out = String::with_capacity(bodies.len() * 8192);
    for name in &order {
        if let Some((meta, samples)) = families.get(name) {
            for l in meta.iter().chain(samples) {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    header(
        &mut out,
        "myriad_worker_up",
        "gauge",
        "Whether the worker's metrics were read for this scrape.",
    );
    for (worker, body) in bodies {
        let _ = writeln!(
            out,
            "myriad_worker_up{{worker=\"{worker}\"}} {}",
            u8::from(body.is_some())
        );
    }
    out
}

fn take(slot: &Mutex<Option<myriad_http::Deferred>>) -> Option<myriad_http::Deferred> {
    match slot.lock() {
        Ok(mut g) => g.take(),
        Err(p) => p.into_inner().take(),
    }
}

/// One metrics connection: the HTTP handler, plus the bookkeeping of
/// connections that have not sent a whole request yet ([`MAX_PENDING`]).
pub struct MetricsConn {
    http: HttpConn,
}

impl Handler for MetricsConn {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        let id = cx.id();
        let evict = PENDING.with(|p| {
            let mut p = p.borrow_mut();
            p.push_back(id);
            (p.len() > MAX_PENDING).then(|| p.pop_front()).flatten()
        });
        if let Some(old) = evict {
            cx.loop_cx().close(old);
        }
        self.http.on_open(cx);
    }

    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        let n = self.http.on_data(cx, data);
        // The codec consumes nothing of an incomplete head: anything
        // consumed means a whole request arrived (or it was refused).
        if n > 0 {
            done(cx.id());
        }
        n
    }

    fn on_drain(&mut self, cx: &mut Ctx<'_>) {
        self.http.on_drain(cx);
    }

    fn on_eof(&mut self, cx: &mut Ctx<'_>) {
        self.http.on_eof(cx);
    }

    fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
        self.http.on_timer(cx, token);
    }

    fn on_shutdown(&mut self, cx: &mut Ctx<'_>) {
        self.http.on_shutdown(cx);
    }

    fn on_close(&mut self, cx: &mut Ctx<'_>, reason: myriad::CloseReason) {
        done(cx.id());
        self.http.on_close(cx, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W0: &str = "# HELP a_total A.\n# TYPE a_total counter\na_total{service=\"s\",loop=\"0\"} 1\n# HELP q Q.\n# TYPE q histogram\nq_bucket{service=\"s\",le=\"+Inf\"} 2\nq_count{service=\"s\"} 2\n# TYPE plain gauge\nplain 7\n";
    const W1: &str = "# HELP a_total A.\n# TYPE a_total counter\na_total{service=\"s\",loop=\"0\"} 3\n# HELP q Q.\n# TYPE q histogram\nq_bucket{service=\"s\",le=\"+Inf\"} 5\nq_count{service=\"s\"} 5\n# TYPE plain gauge\nplain 8\n";

    #[test]
    fn merged_by_family_with_worker_labels() {
        let m = merge(&[(0, Some(W0.into())), (1, Some(W1.into())), (2, None)]);
        let expect = "# HELP a_total A.\n# TYPE a_total counter\n\
            a_total{worker=\"0\",service=\"s\",loop=\"0\"} 1\n\
            a_total{worker=\"1\",service=\"s\",loop=\"0\"} 3\n\
            # HELP q Q.\n# TYPE q histogram\n\
            q_bucket{worker=\"0\",service=\"s\",le=\"+Inf\"} 2\n\
            q_count{worker=\"0\",service=\"s\"} 2\n\
            q_bucket{worker=\"1\",service=\"s\",le=\"+Inf\"} 5\n\
            q_count{worker=\"1\",service=\"s\"} 5\n\
            # TYPE plain gauge\n\
            plain{worker=\"0\"} 7\n\
            plain{worker=\"1\"} 8\n\
            # HELP myriad_worker_up Whether the worker's metrics were read for this scrape.\n\
            # TYPE myriad_worker_up gauge\n\
            myriad_worker_up{worker=\"0\"} 1\n\
            myriad_worker_up{worker=\"1\"} 1\n\
            myriad_worker_up{worker=\"2\"} 0\n";
        assert_eq!(m, expect);
    }

    #[test]
    fn no_peers_no_change() {
        let p = Peers::new(Vec::new());
        assert!(p.ready());
        assert_eq!(p.aggregate(W0.into()), W0);
    }
}
