//! Everything that runs on sockets: the sans-IO cores of the server, client, proxy and
//! replayer, and the runtimes that drive them over UDP (and TCP for the proxy): [`serve`],
//! [`proxy::runtime`], [`client::runtime`], [`simulate`], [`replay::runtime`].
//!
//! Linux only: the runtimes batch datagrams with sendmmsg/recvmmsg and wait with epoll
//! ([`mmsg`]), so they and this module's socket code build on Linux alone.

pub mod client;
#[cfg(target_os = "linux")]
pub mod mmsg;
#[cfg(target_os = "linux")]
pub mod ops;
pub mod proxy;
pub mod replay;
#[cfg(target_os = "linux")]
pub mod serve;
pub mod server;
#[cfg(target_os = "linux")]
pub mod simulate;
pub mod sniff;
#[cfg(target_os = "linux")]
pub mod socket;

/// Any error a runtime reports to the user (the CLI prints it as `dissonance: error: ...`).
pub type Error = Box<dyn std::error::Error + Send + Sync>;
