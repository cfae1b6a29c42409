//! `serve --metrics`: the health answers and the Prometheus exposition, from the
//! counters the shell and its server keep anyway.

use super::*;

impl Shell {
    /// Answers a request from the `--metrics` HTTP side.
    pub(super) fn answer(&mut self, req: Request) {
        match req {
            Request::Ping(back) => {
                self.log.request("/healthz");
                let _ = back.send(());
            }
            Request::Scrape(back) => {
                self.log.request("/metrics");
                let _ = back.send(self.exposition());
            }
        }
    }

    /// The metrics, from the counters the loop keeps anyway (nothing is added to the
    /// per-datagram path).
    fn exposition(&self) -> Exposition {
        let s = self.server.stats();
        let mut e = Exposition::default();
        e.gauge(
            "dissonance_serve_clients",
            "Clients registered now.",
            &[],
            self.server.client_count() as f64,
        );
        let mut rooms: Vec<&str> = Vec::new();
        let mut listeners = 0usize;
        for c in self.server.clients() {
            listeners += c.rooms.len();
            for r in c.rooms {
                if !rooms.contains(&r.as_str()) {
                    rooms.push(r);
                }
            }
        }
        // Totals only: room names are players' text, unbounded as label values.
        e.gauge(
            "dissonance_serve_rooms",
            "Rooms with at least one listener now.",
            &[],
            rooms.len() as f64,
        );
        e.gauge(
            "dissonance_serve_listeners",
            "Room memberships now (a client listening to two rooms counts twice).",
            &[],
            listeners as f64,
        );
        e.gauge(
            "dissonance_serve_accepting",
            "1 while new clients are accepted, 0 once a drain began.",
            &[],
            if self.server.accepting() { 1.0 } else { 0.0 },
        );
        let session = self.server.session().to_string();
        e.gauge(
            "dissonance_serve_session_info",
            "The session id this server hands out (always 1).",
            &[("session", &session)],
            1.0,
        );
        let by_kind = [
            (
                "dissonance_serve_received_datagrams",
                "Datagrams received, by message type (transport_control: first byte zero; other: not a modern Dissonance packet).",
                &s.in_kinds.datagrams,
            ),
            (
                "dissonance_serve_received_bytes",
                "UDP payload bytes received, by message type.",
                &s.in_kinds.bytes,
            ),
            (
                "dissonance_serve_sent_datagrams",
                "Datagrams queued to clients, by message type (a relayed copy counts as the packet it carries).",
                &s.out_kinds.datagrams,
            ),
            (
                "dissonance_serve_sent_bytes",
                "UDP payload bytes queued to clients, by message type.",
                &s.out_kinds.bytes,
            ),
        ];
        for (name, help, counts) in by_kind {
            for (k, n) in counts.iter().enumerate() {
                e.counter(name, help, &[("type", kind_name(k))], *n);
            }
        }
        e.counter(
            "dissonance_serve_relayed",
            "Relay payloads forwarded (one per destination).",
            &[],
            s.relayed,
        );
        e.counter(
            "dissonance_serve_relay_unknown_destinations",
            "Relay destinations that were not registered clients.",
            &[],
            s.relay_unknown,
        );
        e.counter(
            "dissonance_serve_relay_duplicate_destinations",
            "Relay destinations listed more than once in one relay (sent once).",
            &[],
            s.relay_duplicate,
        );
        e.counter(
            "dissonance_serve_resets",
            "ErrorWrongSession(session + 1) sent to make a peer reconnect (evicted, or talking without being a client).",
            &[],
            s.resets,
        );
        for (i, reason) in DropReason::NAMES.iter().enumerate() {
            e.counter(
                "dissonance_serve_dropped_datagrams",
                "Datagrams dropped, by reason (server_full: --max-clients refusals; draining: handshakes refused during a drain).",
                &[("reason", reason)],
                s.drops[i],
            );
        }
        e.counter(
            "dissonance_serve_wrong_session",
            "Datagrams with another session id (answered with ErrorWrongSession).",
            &[],
            s.wrong_session,
        );
        e.counter(
            "dissonance_serve_joins",
            "Clients that joined.",
            &[],
            s.joins,
        );
        e.counter(
            "dissonance_serve_leaves",
            "Clients that left.",
            &[],
            s.leaves,
        );
        e.counter(
            "dissonance_serve_send_errors",
            "Datagrams the kernel refused to send.",
            &[],
            self.send_errors,
        );
        e.counter(
            "dissonance_serve_send_buffer_full",
            "Times the socket's send buffer was full (the server waited for room).",
            &[],
            self.full_waits,
        );
        if let Some(d) = crate::net::ops::udp_receive_drops(self.fd) {
            e.counter(
                "dissonance_serve_socket_receive_drops",
                "Datagrams the kernel dropped because the socket's receive buffer was full (SO_MEMINFO drops).",
                &[],
                d,
            );
        }
        if self.added.enabled {
            e.latency_histogram(
                "dissonance_serve_added_latency_seconds",
                "The server's own time from a datagram's kernel arrival to its last reply or relayed copy handed back to the kernel.",
                &[],
                &self.added.total,
            );
        }
        e
    }
}
