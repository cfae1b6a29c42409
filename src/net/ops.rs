//! The operator's side of `serve` and `proxy`: `--metrics ADDR` serves, over HTTP on the
//! runtime's own tokio executor,
//!
//! - `/metrics`: the Prometheus/OpenMetrics text exposition (encoded by `prometheus-client`);
//! - `/healthz`: 200 while the event loop answers (a round trip through it), else 503;
//! - `/readyz`: 200 while new clients are accepted, 503 once a drain began.
//!
//! The event loop keeps its counters as it always did (plain integers, no locks, no
//! atomics on the hot path). A scrape sends a [`Request`] to the loop, which answers with a
//! fresh [`Exposition`] built from those counters; the process metrics (/proc) are added
//! and the text encoded on the runtime's blocking pool, not on the loop's thread.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};

use crate::net::Error;

/// What the HTTP side asks of the event loop.
pub enum Request {
    /// The metrics, now.
    Scrape(oneshot::Sender<Exposition>),
    /// Liveness: the loop answers when it turns.
    Ping(oneshot::Sender<()>),
}

/// The loop's end: requests to answer and the readiness flag to clear on a drain.
pub struct Ops {
    pub requests: mpsc::Receiver<Request>,
    ready: Arc<AtomicBool>,
    pub local: SocketAddr,
}

impl Ops {
    /// Binds `addr` (TCP) and serves the three paths on the current tokio runtime.
    pub async fn start(addr: SocketAddr) -> Result<Ops, Error> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on --metrics {addr}: {e}"))?;
        let local = listener.local_addr()?;
        // A scrape or two in flight is all a Prometheus server makes.
        let (tx, requests) = mpsc::channel(16);
        let ready = Arc::new(AtomicBool::new(true));
        let shared = ready.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors and the like: try again shortly.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let tx = tx.clone();
                let ready = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        respond(req, tx.clone(), ready.clone())
                    });
                    // Slow or idle clients cannot hold a connection open forever.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Ops {
            requests,
            ready,
            local,
        })
    }

    /// From now on `/readyz` answers 503.
    pub fn not_ready(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }
}

/// The next request, or never when there is no `--metrics` (for `select!`).
pub async fn next_request(ops: &mut Option<Ops>) -> Request {
    match ops {
        Some(o) => match o.requests.recv().await {
            Some(r) => r,
            // The HTTP task holds a sender as long as it runs.
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// How long the HTTP side waits for the event loop before answering 503.
const LOOP_WAIT: Duration = Duration::from_secs(2);

async fn respond(
    req: hyper::Request<Incoming>,
    tx: mpsc::Sender<Request>,
    ready: Arc<AtomicBool>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n"));
    }
    Ok(match req.uri().path() {
        "/metrics" => {
            let (back, answer) = oneshot::channel();
            let got = match tx.try_send(Request::Scrape(back)) {
                Ok(()) => tokio::time::timeout(LOOP_WAIT, answer).await.ok(),
                Err(_) => None,
            };
            // Prometheus asks for OpenMetrics (prometheus-client's encoding); anything
            // else gets the classic text format.
            let open_metrics = req
                .headers()
                .get_all(hyper::header::ACCEPT)
                .iter()
                .any(|v| {
                    v.to_str()
                        .is_ok_and(|v| v.contains("application/openmetrics-text"))
                });
            // The loop only copied its counters; /proc and the encoding run on the
            // runtime's blocking pool, off the thread that relays voice.
            let encoded = match got {
                Some(Ok(mut exp)) => tokio::task::spawn_blocking(move || {
                    exp.process();
                    if open_metrics {
                        exp.encode()
                    } else {
                        exp.encode_classic()
                    }
                })
                .await
                .ok(),
                _ => None,
            };
            match encoded {
                Some(body) => {
                    let kind = if open_metrics {
                        "application/openmetrics-text; version=1.0.0; charset=utf-8"
                    } else {
                        "text/plain; version=0.0.4; charset=utf-8"
                    };
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(kind),
                    );
                    r
                }
                None => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "event loop not answering\n",
                ),
            }
        }
        "/healthz" => {
            let (back, answer) = oneshot::channel();
            let alive = match tx.try_send(Request::Ping(back)) {
                Ok(()) => matches!(tokio::time::timeout(LOOP_WAIT, answer).await, Ok(Ok(()))),
                Err(_) => false,
            };
            if alive {
                text(StatusCode::OK, "ok\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "event loop not answering\n",
                )
            }
        }
        "/readyz" => {
            if ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz, /readyz\n",
        ),
    })
}

type Labels = Vec<(Cow<'static, str>, Cow<'static, str>)>;

#[derive(Debug)]
enum Value {
    Counter(u64),
    CounterF64(f64),
    Gauge(f64),
    Histogram {
        sum: f64,
        count: u64,
        /// (upper bound, count in this bucket alone), f64::MAX (+Inf) last; the encoder
        /// accumulates.
        buckets: Vec<(f64, u64)>,
    },
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Labels, Value)>,
}

/// A snapshot of metric values, encoded by `prometheus-client` as a [`Collector`].
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        v: Value,
    ) {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| (Cow::Borrowed(*k), Cow::Owned(v.to_string())))
            .collect();
        match self.families.iter_mut().find(|f| f.name == name) {
            Some(f) => f.samples.push((labels, v)),
            None => self.families.push(Family {
                name,
                help,
                samples: vec![(labels, v)],
            }),
        }
    }

    /// A counter (`name` without `_total`; the encoder adds it).
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        v: u64,
    ) {
        self.push(name, help, labels, Value::Counter(v));
    }

    /// A counter of a real quantity (seconds of CPU, ...).
    pub fn counter_f64(&mut self, name: &'static str, help: &'static str, v: f64) {
        self.push(name, help, &[], Value::CounterF64(v));
    }

    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        v: f64,
    ) {
        self.push(name, help, labels, Value::Gauge(v));
    }

    /// A histogram in seconds from a µs hdrhistogram, at the [`LATENCY_BUCKETS_US`] bounds.
    pub fn latency_histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        h: &hdrhistogram::Histogram<u64>,
    ) {
        // One pass over the recorded values (count_between per bound walked the whole
        // range once per bucket: most of a scrape's time).
        let mut counts = [0u64; LATENCY_BUCKETS_US.len() + 1];
        let mut sum_us = 0u64;
        // An empty histogram would still be walked end to end.
        let values = (!h.is_empty())
            .then(|| h.iter_recorded())
            .into_iter()
            .flatten();
        for v in values {
            let value = v.value_iterated_to();
            let at = LATENCY_BUCKETS_US
                .iter()
                .position(|&le| value <= le)
                .unwrap_or(LATENCY_BUCKETS_US.len());
            counts[at] += v.count_at_value();
            sum_us = sum_us.saturating_add(value.saturating_mul(v.count_at_value()));
        }
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_US
            .iter()
            .map(|&le| le as f64 / 1e6)
            .chain([f64::MAX])
            .zip(counts)
            .collect();
        let sum = sum_us as f64 / 1e6;
        self.push(
            name,
            help,
            labels,
            Value::Histogram {
                sum,
                count: h.len(),
                buckets,
            },
        );
    }

    /// The process's CPU time, memory and descriptors (Linux /proc), under the standard
    /// `process_*` names.
    pub fn process(&mut self) {
        if let Some(p) = ProcessStats::read() {
            self.counter_f64(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds.",
                p.cpu_seconds,
            );
            self.gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                &[],
                p.rss_bytes as f64,
            );
            self.gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                &[],
                p.vsize_bytes as f64,
            );
            self.gauge(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds.",
                &[],
                p.start_time_seconds,
            );
        }
        if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
            self.gauge(
                "process_open_fds",
                "Number of open file descriptors.",
                &[],
                d.count() as f64,
            );
        }
    }

    /// The classic Prometheus text format (version 0.0.4), for scrapers that do not ask
    /// for OpenMetrics (curl, promtool, older Prometheus): the same families and values as
    /// [`Exposition::encode`], counters named with their `_total` suffix.
    pub fn encode_classic(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for f in &self.families {
            let (kind, suffix) = match f.samples[0].1 {
                Value::Counter(_) | Value::CounterF64(_) => ("counter", "_total"),
                Value::Gauge(_) => ("gauge", ""),
                Value::Histogram { .. } => ("histogram", ""),
            };
            let name = format!("{}{suffix}", f.name);
            let help = f.help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in &f.samples {
                let with = |extra: Option<(&str, String)>| {
                    let mut l: Vec<String> = labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                        .collect();
                    if let Some((k, v)) = extra {
                        l.push(format!("{k}=\"{v}\""));
                    }
                    if l.is_empty() {
                        String::new()
                    } else {
                        format!("{{{}}}", l.join(","))
                    }
                };
                match v {
                    Value::Counter(c) => {
                        let _ = writeln!(out, "{name}{} {c}", with(None));
                    }
                    Value::CounterF64(c) | Value::Gauge(c) => {
                        let _ = writeln!(out, "{name}{} {c}", with(None));
                    }
                    Value::Histogram {
                        sum,
                        count,
                        buckets,
                    } => {
                        let mut cumulative = 0;
                        for (le, n) in buckets {
                            cumulative += n;
                            let le = if *le == f64::MAX {
                                "+Inf".to_string()
                            } else {
                                le.to_string()
                            };
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {cumulative}",
                                with(Some(("le", le)))
                            );
                        }
                        let _ = writeln!(out, "{name}_sum{} {sum}", with(None));
                        let _ = writeln!(out, "{name}_count{} {count}", with(None));
                    }
                }
            }
        }
        out
    }

    /// The OpenMetrics text exposition.
    pub fn encode(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Added-latency bucket bounds, µs: the server's own time is tens of µs when idle and
/// milliseconds under a burst; voice stops sounding live past about 100 ms.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    25, 50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000,
];

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            let kind = match f.samples[0].1 {
                Value::Counter(_) | Value::CounterF64(_) => MetricType::Counter,
                Value::Gauge(_) => MetricType::Gauge,
                Value::Histogram { .. } => MetricType::Histogram,
            };
            let mut m = encoder.encode_descriptor(f.name, f.help, None, kind)?;
            for (labels, v) in &f.samples {
                // Without labels, no family (it would print `name{} value`).
                if labels.is_empty() {
                    encode_value(&mut m, v)?;
                } else {
                    encode_value(&mut m.encode_family(labels)?, v)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(s: &mut MetricEncoder, v: &Value) -> Result<(), std::fmt::Error> {
    match v {
        Value::Counter(c) => s.encode_counter::<NoLabelSet, _, u64>(c, None),
        Value::CounterF64(c) => s.encode_counter::<NoLabelSet, _, f64>(c, None),
        Value::Gauge(g) => s.encode_gauge(g),
        Value::Histogram {
            sum,
            count,
            buckets,
        } => s.encode_histogram::<NoLabelSet>(
            *sum,
            *count,
            buckets,
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        ),
    }
}

/// From /proc/self/stat.
struct ProcessStats {
    cpu_seconds: f64,
    rss_bytes: u64,
    vsize_bytes: u64,
    start_time_seconds: f64,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14/15 (utime/stime), 22 (starttime), 23 (vsize), 24 (rss) of proc(5);
        // `rest` starts at field 3.
        let num = |i: usize| f.get(i - 3)?.parse::<u64>().ok();
        // SAFETY: sysconf has no preconditions.
        let (tck, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let (tck, page) = (tck.max(1) as f64, page.max(1) as u64);
        // The boot time never changes: read /proc/stat (long on many CPUs) once.
        static BOOT: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
        let boot = (*BOOT.get_or_init(|| {
            std::fs::read_to_string("/proc/stat")
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
        }))?;
        Some(ProcessStats {
            cpu_seconds: (num(14)? + num(15)?) as f64 / tck,
            rss_bytes: num(24)? * page,
            vsize_bytes: num(23)?,
            start_time_seconds: boot + num(22)? as f64 / tck,
        })
    }
}

/// Datagrams the kernel dropped for the socket `fd` (receive buffer full): its
/// `sk_drops`, read with getsockopt(SO_MEMINFO) — one system call, the counter
/// /proc/net/udp shows in its `drops` column (reading that file walks every UDP socket of
/// the machine). None when the kernel does not say.
pub fn udp_receive_drops(fd: std::os::fd::RawFd) -> Option<u64> {
    // From linux/socket.h (asm-generic); the libc crate lacks it on most targets.
    const SO_MEMINFO: libc::c_int = 55;
    // SK_MEMINFO_VARS: 9 since Linux 4.7 (drops is the last).
    let mut info = [0u32; 9];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt on a descriptor we own, into a buffer of `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let at = libc::SK_MEMINFO_DROPS as usize;
    (r == 0 && (len as usize) > at * 4).then(|| u64::from(info[at]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_encodes_counters_gauges_and_histograms() {
        let mut e = Exposition::default();
        e.counter("demo_datagrams", "Datagrams.", &[("type", "VoiceData")], 3);
        e.counter(
            "demo_datagrams",
            "Datagrams.",
            &[("type", "ClientState")],
            4,
        );
        e.gauge("demo_clients", "Clients.", &[], 2.0);
        let mut h = crate::net::socket::latency_histogram();
        h.record(30).unwrap();
        h.record(700).unwrap();
        e.latency_histogram("demo_latency_seconds", "Latency.", &[], &h);
        let text = e.encode();
        assert!(text.contains("# TYPE demo_datagrams counter\n"), "{text}");
        assert!(
            text.contains("demo_datagrams_total{type=\"VoiceData\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("demo_datagrams_total{type=\"ClientState\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("demo_clients 2.0\n"), "{text}");
        assert!(
            text.contains("demo_latency_seconds_bucket{le=\"0.000025\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("demo_latency_seconds_bucket{le=\"0.00005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("demo_latency_seconds_bucket{le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("demo_latency_seconds_bucket{le=\"0.001\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("demo_latency_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("demo_latency_seconds_count 2\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn classic_format_names_counters_with_total_and_escapes_labels() {
        let mut e = Exposition::default();
        e.counter("demo_datagrams", "Datagrams.", &[("room", "a\"b\\c\nd")], 3);
        e.gauge("demo_clients", "Clients.", &[], 2.0);
        let mut h = crate::net::socket::latency_histogram();
        h.record(30).unwrap();
        h.record(700).unwrap();
        e.latency_histogram("demo_latency_seconds", "Latency.", &[], &h);
        let text = e.encode_classic();
        assert!(
            text.starts_with(
                "# HELP demo_datagrams_total Datagrams.\n# TYPE demo_datagrams_total counter\n\
             demo_datagrams_total{room=\"a\\\"b\\\\c\\nd\"} 3\n\
             # HELP demo_clients Clients.\n# TYPE demo_clients gauge\ndemo_clients 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("demo_latency_seconds_bucket{le=\"0.00005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("demo_latency_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("demo_latency_seconds_count 2\n"), "{text}");
    }

    #[test]
    fn process_stats_are_read() {
        let p = ProcessStats::read().expect("/proc/self/stat");
        assert!(p.rss_bytes > 0);
        assert!(p.start_time_seconds > 1.0e9);
    }

    #[test]
    fn receive_drops_of_a_fresh_socket_are_zero() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            udp_receive_drops(std::os::fd::AsRawFd::as_raw_fd(&s)),
            Some(0)
        );
    }
}
