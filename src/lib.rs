//! dissonance-tools: the network protocol of Dissonance (the Unity voice-chat asset),
//! as a library. The codec ([`codec`], from the `dissonance-proto` crate) decodes and
//! encodes every message byte-exactly; the layers above it:
//!
//! - [`capture`]: read and write pcap/pcapng, decapsulate link layers, reassemble TCP;
//! - [`dissect`]: locate packets in payloads and track sessions;
//! - [`output`]: text, tables, JSON and summaries;
//! - [`check`]: the rule engine; [`voice`]: Opus to WAV;
//! - [`net`]: server, client, proxy and replay, on sockets.
//!
//! Platform: the codec and the capture, dissecting, printing, check and voice layers are
//! portable; the socket runtimes that batch with sendmmsg/recvmmsg and epoll (`net::mmsg`,
//! `net::serve`, `net::simulate`, `net::proxy::runtime`, `net::socket`) are Linux only
//! (`cfg(target_os = "linux")`), and so are the `serve`, `simulate` and `proxy` commands.

pub use dissonance_proto::{codec, collate};

pub mod capture;
pub mod check;
pub mod dissect;
pub mod net;
pub mod output;
pub mod sys;
pub mod voice;
