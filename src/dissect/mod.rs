//! Dissecting: find Dissonance packets in transport payloads ([`locate`]), inside the
//! game networking stacks that carry them ([`transport`]), follow each session's
//! handshake, names and rooms ([`session`]), and the shared front end that runs them
//! over a capture ([`pipeline`]).

pub mod filter;
pub mod locate;
pub mod pipeline;
pub mod session;
pub mod transport;
