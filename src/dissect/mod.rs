//! Dissecting: find Dissonance packets in transport payloads ([`locate`]), follow each
//! session's handshake, names and rooms ([`session`]), and the shared front end that
//! runs both over a capture ([`pipeline`]); [`feed`] is the capture front end that
//! reads, decapsulates and hands payloads to a consumer.

pub mod feed;
pub mod front;
pub mod locate;
pub mod pipeline;
pub mod session;
