//! Server rules (D050): packets that kill the real server.
//! The catalogue entry (id, severity, explanation) and the engine's check side by side.

use crate::check::rules::{self, Rule, Severity};
use crate::check::{key, About, Ctx, Engine, SERVER};
use crate::codec::{DecodeError, ServerRelay};
use crate::dissect::session::fatal_to_server;

rules! {
    FATAL_TO_SERVER = "D050" "fatal-to-server" "server" Error
        "Packet the real server restarts on"
        "The real server restarts on this packet; every client was kicked. Its reader throws on a datagram under 3 bytes (an empty one included), on a ClientState, DeltaChannelState, relay or HandshakeRequest that runs past its end, on a null name in a ClientState or DeltaChannelState, and on a relay whose payload is under 3 bytes; nothing handles the exception, so the server shuts down and starts again with a new session id, dropping every client (RemoveClient to each), and the clients must handshake again (docs/protocol.md §10.2). A packet with a stale session is dropped before it is read and is not fatal. dump shows the restart that follows as a server_restarted event.";
}

impl Engine {
    /// D050 when `c` (a payload to the server that did not decode, `err`, or an empty
    /// one, `None`) is fatal to the real server; true if it was reported.
    pub(in crate::check) fn fatal_to_server(
        &mut self,
        c: &Ctx<'_>,
        err: Option<&DecodeError>,
    ) -> bool {
        if !self.is(c.dst, SERVER) {
            return false;
        }
        let current = self.server_session.get(&c.dst).copied();
        let Some(why) = fatal_to_server(c.bytes, err, current) else {
            return false;
        };
        let mark = err.map(|e| (e.offset, c.bytes.len().saturating_sub(e.offset).max(1)));
        self.report_fatal(c, mark, || match err {
            Some(e) => format!(
                "{e}: the real server's reader throws on it ({why}) and the server restarts"
            ),
            None => format!(
                "{why}: the real server's reader throws reading its header and the server restarts"
            ),
        });
        true
    }

    /// D050 for a relay to the server whose payload is too short for the header read.
    pub(in crate::check) fn fatal_relay(
        &mut self,
        c: &Ctx<'_>,
        r: &ServerRelay<'_>,
        base: usize,
    ) -> bool {
        if !self.is(c.dst, SERVER) || r.payload.len() >= 3 {
            return false;
        }
        let n = r.payload.len();
        self.report_fatal(c, Some((base, n.max(1))), || {
            format!(
                "relay payload of {n} byte(s): the real server's reader throws reading its header"
            )
        });
        true
    }

    fn report_fatal(
        &mut self,
        c: &Ctx<'_>,
        mark: Option<(usize, usize)>,
        message: impl FnOnce() -> String,
    ) {
        let session = c
            .bytes
            .get(3..7)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .filter(|_| c.bytes.get(2) != Some(&4));
        let about = About {
            session,
            mark,
            fold: Some(key((c.src, c.bytes))),
            ..About::default()
        };
        self.report(rules::FATAL_TO_SERVER, c, about, message);
    }
}
