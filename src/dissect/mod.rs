//! Dissecting: find Dissonance packets in transport payloads ([`locate`]), follow each
//! session's handshake, names and rooms ([`session`]), and the shared front end that
//! runs both over a capture ([`pipeline`]).

pub mod locate;
pub mod pipeline;
pub mod session;
