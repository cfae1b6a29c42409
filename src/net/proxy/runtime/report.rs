//! What the proxy reports: metrics and health answers while it runs (`--metrics`), its
//! own added latency (`--measure-latency`), and the exit report (text lines or one
//! `stopped` log record).

use super::*;

/// The proxy's own added latency per direction: from the kernel's arrival timestamp of a
/// datagram (SO_TIMESTAMPNS, so time queued in the socket counts) to the send call that
/// hands it back to the kernel, for datagrams forwarded at once (not those a fault held).
pub(super) struct AddedLatency {
    pub(super) up: hdrhistogram::Histogram<u64>,
    pub(super) down: hdrhistogram::Histogram<u64>,
}

impl AddedLatency {
    pub(super) fn new() -> AddedLatency {
        AddedLatency {
            up: crate::net::socket::latency_histogram(),
            down: crate::net::socket::latency_histogram(),
        }
    }

    /// `handed`: when the send call that takes the datagram began (on loopback the call
    /// itself delivers it and may let the receiver run first, so its end is too late).
    pub(super) fn record(&mut self, dir: Dir, arrived: Option<i64>, handed: Option<i64>) {
        let (Some(arrived), Some(handed)) = (arrived, handed) else {
            return;
        };
        let us = crate::net::socket::latency_us(arrived, handed);
        match dir {
            Dir::Up => self.up.saturating_record(us),
            Dir::Down => self.down.saturating_record(us),
        }
    }

    /// `p50 .. p99 .. p999 .. max .. us (N datagrams)` for one direction.
    fn line(h: &hdrhistogram::Histogram<u64>) -> String {
        format!(
            "p50 {} p99 {} p999 {} max {} us ({} datagrams)",
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.len()
        )
    }
}

impl<W: Write> Shell<W> {
    /// Answers a request from the `--metrics` HTTP side.
    pub(super) fn answer(&mut self, req: Request) {
        match req {
            Request::Ping(back) => {
                let _ = back.send(());
            }
            Request::Scrape(back) => {
                let _ = back.send(self.exposition());
            }
        }
    }

    /// The metrics, from the counters the shell and its core keep anyway.
    fn exposition(&self) -> Exposition {
        let c = &self.counts;
        let t = &self.dissector.totals;
        let f = &self.relay.injector.counts;
        let mut e = Exposition::default();
        for (dir, n) in [("up", c.up), ("down", c.down)] {
            e.counter(
                "dissonance_proxy_forwarded_datagrams",
                "Datagrams forwarded, by direction (up: client to server).",
                &[("direction", dir)],
                n,
            );
        }
        for (kind, n) in [
            ("drop", f.dropped),
            ("burst_loss", f.burst_dropped),
            ("delay", f.delayed),
            ("jitter", f.jittered),
            ("duplicate", f.duplicated),
            ("reorder", f.reordered),
            ("corrupt", f.corrupted),
        ] {
            e.counter(
                "dissonance_proxy_faults",
                "Faults injected, by kind (one datagram may get several).",
                &[("kind", kind)],
                n,
            );
        }
        e.gauge(
            "dissonance_proxy_mappings",
            "Client mappings open now (one upstream socket each).",
            &[],
            self.nat.len() as f64,
        );
        e.counter(
            "dissonance_proxy_mappings_opened",
            "Client mappings opened.",
            &[],
            c.opened,
        );
        e.counter(
            "dissonance_proxy_mappings_expired",
            "Client mappings closed after --idle of silence.",
            &[],
            c.expired,
        );
        e.counter(
            "dissonance_proxy_mappings_evicted",
            "Mappings closed early for a new client (--max-mappings reached).",
            &[],
            c.evicted,
        );
        e.counter(
            "dissonance_proxy_refused_mappings_full",
            "Datagrams of new clients refused: --max-mappings reached, every mapping recent.",
            &[],
            c.refused,
        );
        e.counter(
            "dissonance_proxy_open_failed",
            "New clients whose upstream socket could not be opened.",
            &[],
            c.open_failed,
        );
        e.counter(
            "dissonance_proxy_refused_while_draining",
            "Datagrams from new clients refused during a drain.",
            &[],
            c.refused_draining,
        );
        e.gauge(
            "dissonance_proxy_accepting",
            "1 while new clients get mappings, 0 once a drain began.",
            &[],
            if self.draining { 0.0 } else { 1.0 },
        );
        e.counter(
            "dissonance_proxy_observed_datagrams",
            "Datagrams decoded (both directions).",
            &[],
            t.payloads,
        );
        e.counter(
            "dissonance_proxy_observed_packets",
            "Dissonance packets decoded.",
            &[],
            t.packets,
        );
        e.counter(
            "dissonance_proxy_decode_errors",
            "Datagrams that looked like Dissonance but did not decode (forwarded all the same).",
            &[],
            t.malformed,
        );
        e.counter(
            "dissonance_proxy_not_dissonance",
            "Datagrams that were not Dissonance packets (forwarded all the same).",
            &[],
            t.not_dissonance,
        );
        e.counter(
            "dissonance_proxy_goodbyes",
            "Transport goodbye datagrams seen.",
            &[],
            t.byes,
        );
        e.counter(
            "dissonance_proxy_send_errors",
            "Datagrams the kernel refused to send.",
            &[],
            c.send_errors,
        );
        e.counter(
            "dissonance_proxy_record_errors",
            "Datagrams that could not be written to --record.",
            &[],
            c.record_errors,
        );
        e.gauge(
            "dissonance_proxy_queued",
            "Datagrams held by a delay, jitter or reorder fault now.",
            &[],
            self.relay.queued() as f64,
        );
        let fd = std::os::fd::AsRawFd::as_raw_fd(&*self.listen);
        if let Some(d) = crate::net::ops::udp_receive_drops(fd) {
            e.counter(
                "dissonance_proxy_socket_receive_drops",
                "Datagrams the kernel dropped because the listening socket's receive buffer was full (SO_MEMINFO drops).",
                &[],
                d,
            );
        }
        if self.measure_latency {
            for (dir, h) in [("up", &self.added.up), ("down", &self.added.down)] {
                e.latency_histogram(
                    "dissonance_proxy_added_latency_seconds",
                    "The proxy's own time from a datagram's kernel arrival to the send call passing it on (--measure-latency).",
                    &[("direction", dir)],
                    h,
                );
            }
        }
        e
    }
}

/// The exit report, as the text lines it always was.
fn stopped_text<W: Write>(shell: &Shell<W>, stop: &str, record_note: &str) {
    let c = &shell.counts;
    let t = &shell.dissector.totals;
    let faults = &shell.relay.injector.counts;
    eprintln!("proxy: stopped ({stop})");
    eprintln!(
        "forwarded: {} (up {}, down {})",
        c.up + c.down,
        c.up,
        c.down
    );
    if shell.record.is_some() {
        eprintln!("recorded: {}{record_note}", c.recorded);
    }
    eprintln!(
        "received: {} datagrams, {} Dissonance packets, {} malformed, {} not Dissonance, {} goodbyes",
        t.payloads, t.packets, t.malformed, t.not_dissonance, t.byes
    );
    if t.retransmitted + t.cut + t.lost_units > 0 {
        eprintln!(
            "game transport: {} retransmitted copies (not counted as packets), {} cut, {} units lost",
            t.retransmitted, t.cut, t.lost_units
        );
    }
    eprintln!(
        "clients: {} mappings opened, {} expired, {} evicted, {} refused (mappings full), {} failed to open",
        c.opened, c.expired, c.evicted, c.refused, c.open_failed
    );
    if c.refused_draining > 0 {
        eprintln!("refused while draining: {} datagrams", c.refused_draining);
    }
    eprintln!("faults: {} ({faults})", faults.total());
    let reasons: Vec<String> = c
        .send_reasons
        .iter()
        .map(|(k, n)| format!("{k:?} {n}"))
        .collect();
    let reasons = if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join(", "))
    };
    eprintln!(
        "errors: {} send{reasons}, {} record; {} still queued at exit",
        c.send_errors,
        c.record_errors,
        shell.relay.queued()
    );
    // The time each datagram spent in the proxy, from the kernel's arrival stamp on
    // its socket to the send call that passes it on.
    for (name, h) in [("up", &shell.added.up), ("down", &shell.added.down)] {
        if !h.is_empty() {
            eprintln!("latency {name}: {}", AddedLatency::line(h));
        }
    }
}

/// The exit report as one `stopped` log record (`--log-format ndjson`).
fn stopped_json<W: Write>(shell: &Shell<W>, stop: &str, record_note: &str) {
    let c = &shell.counts;
    let t = &shell.dissector.totals;
    let f = &shell.relay.injector.counts;
    let note = record_note.trim();
    let mut fields: Vec<(&str, Field<'_>)> = vec![
        ("reason", Field::Str(&stop)),
        ("forwarded_up", Field::U(c.up)),
        ("forwarded_down", Field::U(c.down)),
        ("recorded", Field::U(c.recorded)),
        ("datagrams", Field::U(t.payloads)),
        ("packets", Field::U(t.packets)),
        ("malformed", Field::U(t.malformed)),
        ("not_dissonance", Field::U(t.not_dissonance)),
        ("goodbyes", Field::U(t.byes)),
        ("mappings_opened", Field::U(c.opened)),
        ("mappings_expired", Field::U(c.expired)),
        ("mappings_evicted", Field::U(c.evicted)),
        ("refused_mappings_full", Field::U(c.refused)),
        ("open_failed", Field::U(c.open_failed)),
        ("refused_while_draining", Field::U(c.refused_draining)),
        ("faults", Field::U(f.total())),
        ("fault_drop", Field::U(f.dropped)),
        ("fault_burst_loss", Field::U(f.burst_dropped)),
        ("fault_delay", Field::U(f.delayed)),
        ("fault_jitter", Field::U(f.jittered)),
        ("fault_duplicate", Field::U(f.duplicated)),
        ("fault_reorder", Field::U(f.reordered)),
        ("fault_corrupt", Field::U(f.corrupted)),
        ("send_errors", Field::U(c.send_errors)),
        ("record_errors", Field::U(c.record_errors)),
        ("queued_at_exit", Field::U(shell.relay.queued() as u64)),
    ];
    if !note.is_empty() {
        fields.push(("record_note", Field::Str(&note)));
    }
    const KEYS: [(&str, [&str; 4]); 2] = [
        (
            "up",
            [
                "latency_up_p50_us",
                "latency_up_p99_us",
                "latency_up_max_us",
                "latency_up_samples",
            ],
        ),
        (
            "down",
            [
                "latency_down_p50_us",
                "latency_down_p99_us",
                "latency_down_max_us",
                "latency_down_samples",
            ],
        ),
    ];
    for ((_, keys), h) in KEYS.iter().zip([&shell.added.up, &shell.added.down]) {
        if !h.is_empty() {
            let v = [
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.max(),
                h.len(),
            ];
            for (k, x) in keys.iter().zip(v) {
                fields.push((k, Field::U(x)));
            }
        }
    }
    log::info("stopped", &fields, format_args!("proxy: stopped ({stop})"));
}

pub(super) fn finish<W: Write>(
    mut shell: Shell<W>,
    stop: &str,
    summary: bool,
    format: Format,
) -> Result<i32, Error> {
    shell.flush_down();
    // The game-stack decoders give up what they still hold (printed, counted).
    let _ = shell.dissector.finish(shell.printer.as_mut());
    if let Some(mut p) = shell.printer.take() {
        let _ = p.finish();
    }
    let mut record_note = String::new();
    if let Some(w) = &mut shell.record {
        if let Err(e) = w.flush() {
            record_note = format!(" (flushing failed: {e})");
        }
    }
    let t = &shell.dissector.totals;
    if summary {
        let text = summary::render(&shell.dissector.tracker, t);
        if matches!(format, Format::Json | Format::Ndjson) {
            eprint!("{text}");
        } else {
            // A closed stdout: the summary has nowhere to go, the counts below still do.
            let _ = crate::output::pipe::print(&text);
        }
    }
    if log::format() == log::LogFormat::Ndjson {
        stopped_json(&shell, stop, &record_note);
    } else {
        stopped_text(&shell, stop, &record_note);
    }
    if let Some(live) = shell.check.take() {
        let (report, code) = live.finish();
        eprint!("{report}");
        return Ok(code);
    }
    Ok(0)
}
