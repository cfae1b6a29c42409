//! Session rules (D010-D014): session ids, ErrorWrongSession and its answer, handshakes.
//! The catalogue entries (id, severity, explanation) and the engine's checks side by side.

use crate::check::rules::{self, Rule, Severity};
use crate::check::{key, About, Ctx, Engine, Finding, CLIENT, SERVER};
use crate::codec::{ErrorWrongSession, HandshakeResponse};
use crate::codec::{Message, MessageType};

rules! {
    WRONG_SESSION = "D010" "wrong-session" "sessions" Warning
        "Packet from another session"
        "The packet's session id differs from the session the server handed out (HandshakeResponse) or announced (ErrorWrongSession). The server drops ClientState, DeltaChannelState and relays with a wrong session and answers ErrorWrongSession; clients drop voice, text and state of another session silently. Typical cause: a client that kept its old session across a server restart.";
    WRONG_SESSION_UNANSWERED = "D011" "wrong-session-unanswered" "sessions" Warning
        "Wrong session not answered with ErrorWrongSession"
        "A client sent the server a ClientState, DeltaChannelState or relay with a stale session and the server did not answer with ErrorWrongSession within one second. The real server always answers (unreliably), which is how the client learns it must reconnect; a custom server that drops the packet silently leaves the client stranded.";
    STALE_STORM = "D012" "stale-session-storm" "sessions" Error
        "Client keeps using a stale session"
        "After being told (ErrorWrongSession) that its session is not the server's, the client keeps sending packets with it instead of reconnecting. Real clients shut down and reconnect on the first ErrorWrongSession whose session differs from theirs; an integration that swallows that error, or restarts the client without a new handshake, produces this storm. Threshold: --storm N packets after the first ErrorWrongSession (default 10).";
    SESSION_NO_HANDSHAKE = "D013" "session-change-without-handshake" "sessions" Error
        "Session changed without a new handshake"
        "A client address starts using the server's new session without having sent a HandshakeRequest and received a HandshakeResponse for it. Real clients only learn a session from a HandshakeResponse; skipping the handshake means the server has no client record (no id, no name) for it.";
    RESPONSE_WITHOUT_REQUEST = "D014" "response-without-request" "sessions" Warning
        "HandshakeResponse without a HandshakeRequest"
        "The server sent a HandshakeResponse to an address that had no outstanding HandshakeRequest in the capture. The real server only answers requests. (A capture that starts in the middle of a handshake can show this once at its very beginning.)";
}

impl Engine {
    /// D010, D011, D012, D013. False when the packet's session is wrong.
    pub(in crate::check) fn session(&mut self, c: &Ctx<'_>, m: &Message<'_>) -> bool {
        let t = m.message_type();
        let Some(session) = m.session() else {
            return true;
        };
        if matches!(
            t,
            MessageType::HandshakeResponse | MessageType::ErrorWrongSession
        ) {
            return true;
        }
        let from_client = self.is(c.src, CLIENT);
        let current = if self.is(c.dst, SERVER) {
            self.server_session.get(&c.dst).copied()
        } else if self.is(c.src, SERVER) {
            self.server_session.get(&c.src).copied()
        } else {
            self.last_server_session
        };
        let Some(current) = current else {
            return true;
        };
        let mark = Some((3, 4));
        if session != current {
            let about = About {
                session: Some(session),
                mark,
                fold: Some(key((c.src, session))),
                ..About::default()
            };
            self.report(rules::WRONG_SESSION, c, about, || {
                format!("{t} with session {session}; the server's session is {current}")
            });
            if !from_client {
                return false;
            }
            let answered_types = matches!(
                t,
                MessageType::ClientState
                    | MessageType::DeltaChannelState
                    | MessageType::ServerRelayReliable
                    | MessageType::ServerRelayUnreliable
            );
            if answered_types && self.is(c.dst, SERVER) {
                let f = self.finding(
                    rules::WRONG_SESSION_UNANSWERED,
                    c,
                    about,
                    format!(
                        "{t} with stale session {session} got no ErrorWrongSession({current}) within {} ms",
                        self.config.answer_timeout_ns / 1_000_000
                    ),
                );
                let deadline = c.ts_ns + self.config.answer_timeout_ns;
                self.unanswered.push_back((deadline, f));
            }
            let storm = self.config.storm;
            let a = self.addrs.entry(c.src).or_default();
            let n = a.stale.entry(session).or_default();
            *n += u64::from(a.told);
            if a.told && *n == storm {
                let about = About {
                    fold: Some(key((c.src, session, "storm"))),
                    ..about
                };
                self.report(
                    rules::STALE_STORM,
                    c,
                    about,
                    || format!(
                        "{storm} packets from {} with stale session {session} after ErrorWrongSession({current}), and no new handshake",
                        c.src
                    ),
                );
            }
            return false;
        } else if from_client {
            if let Some((assigned, id)) = self.addrs.get(&c.src).and_then(|a| a.assigned) {
                if assigned != session {
                    let about = About {
                        session: Some(session),
                        client: Some(id),
                        mark,
                        fold: Some(key((c.src, session, "nohs"))),
                    };
                    self.report(
                        rules::SESSION_NO_HANDSHAKE,
                        c,
                        about,
                        || format!(
                            "{} switched from session {assigned} to {session} without a HandshakeRequest/HandshakeResponse",
                            c.src
                        ),
                    );
                }
            }
        }
        true
    }

    /// Wrong-session packets the server did not answer in time (D011).
    pub(in crate::check) fn expire(&mut self, now: i64) {
        while self.unanswered.front().is_some_and(|(t, _)| *t < now) {
            let Some((_, f)) = self.unanswered.pop_front() else {
                break;
            };
            let rule = rules::WRONG_SESSION_UNANSWERED;
            *self.counts.entry(rule.id).or_default() += 1;
            let k = key((f.src, f.session));
            if let Some(&i) = self.folded.get(&(rule.id, k)) {
                let max = self.config.max_occurrences;
                self.findings[i].fold(f.number, f.ts_ns, max);
                continue;
            }
            let i = self.findings.len();
            *self.kept.entry(rule.id).or_default() += 1;
            self.findings.push(Finding { rule, ..f });
            self.folded.insert((rule.id, k), i);
            self.fresh.push_back(i);
        }
    }

    /// Whether a server-only message can be the server's: not from a client, not to the
    /// server (a client's forgery changes nothing the server knows; D020 reports it).
    pub(in crate::check) fn sent_by_server(&self, c: &Ctx<'_>) -> bool {
        !self.is(c.src, CLIENT) && !self.is(c.dst, SERVER)
    }

    /// D014: a HandshakeResponse nobody asked for.
    pub(in crate::check) fn handshake_response(&mut self, c: &Ctx<'_>, h: &HandshakeResponse<'_>) {
        if self.sent_by_server(c) {
            self.mark_role(c.src, SERVER);
            self.mark_role(c.dst, CLIENT);
            self.server_session.insert(c.src, h.session);
            self.last_server_session = Some(h.session);
            let a = self.addrs.entry(c.dst).or_default();
            a.assigned = Some((h.session, h.client_id));
            if a.requests == 0 {
                let about = About {
                    session: Some(h.session),
                    client: Some(h.client_id),
                    mark: Some((2, 1)),
                    fold: Some(key((c.dst, h.session, h.client_id))),
                };
                self.report(rules::RESPONSE_WITHOUT_REQUEST, c, about, || {
                    format!(
                        "HandshakeResponse (id {}) to {}, which sent no HandshakeRequest",
                        h.client_id, c.dst
                    )
                });
            } else {
                a.requests -= 1;
            }
        }
    }

    /// ErrorWrongSession: the server's session, and the client told (answers D011).
    pub(in crate::check) fn error_wrong_session(&mut self, c: &Ctx<'_>, e: &ErrorWrongSession) {
        if self.sent_by_server(c) {
            self.server_session.insert(c.src, e.session);
            self.last_server_session = Some(e.session);
            let dst = c.dst;
            self.unanswered.retain(|(_, f)| f.src != dst);
            self.addrs.entry(dst).or_default().told = true;
        }
    }
}
