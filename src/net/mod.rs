//! Everything that runs on sockets: the sans-IO cores of the server, client, proxy and
//! replayer, and the runtimes that drive them over UDP (and TCP for the proxy).

pub mod client;
pub mod proxy;
pub mod replay;
pub mod server;
