//! dissonance-tools: the network protocol of Dissonance (the Unity voice-chat asset),
//! as a library. The codec decodes and encodes every message byte-exactly; the other
//! modules build on it without doing I/O themselves.

pub mod capture;
pub mod check;
pub mod client;
pub mod codec;
pub mod collate;
pub mod fmtpool;
pub mod hex;
pub mod json;
pub mod locate;
pub mod output;
pub mod pipeline;
pub mod proxy;
pub mod replay;
pub mod server;
pub mod session;
pub mod summary;
pub mod text;
pub mod voice;
