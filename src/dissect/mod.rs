//! Dissecting: find Dissonance packets in transport payloads ([`locate`]), inside the
//! game networking stacks that carry them ([`transport`]), and follow each session's
//! handshake, names and rooms ([`session`]). The front end every command shares is in
//! two parts: [`feed`] reads a capture, decapsulates it and hands the payloads to a
//! [`feed::Consumer`] (on this thread, or batched from a reader thread); [`front`] runs
//! each payload through the locator and the session tracker into a
//! [`front::PacketSink`]. [`pipeline`]'s `Dissector` is the sink `dump`, `sniff`,
//! `proxy` and `replay` print through; `check`'s engine and `voice`'s extractor are the
//! others.

pub mod feed;
pub mod filter;
pub mod front;
pub mod locate;
pub mod pipeline;
pub mod record;
pub mod session;
pub mod transport;
