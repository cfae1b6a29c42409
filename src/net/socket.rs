//! Socket helpers the runtimes share: buffer sizes, the wall clock of kernel timestamps,
//! latency histograms.

use std::os::fd::AsRawFd;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::net::UdpSocket;

/// A latency histogram in µs: 1 µs to 60 s at 3 significant digits, a few hundred kB,
/// fixed (serve's and the proxy's added latency).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// `to_ns - from_ns` in µs, within [`latency_histogram`]'s range.
pub fn latency_us(from_ns: i64, to_ns: i64) -> u64 {
    ((to_ns - from_ns) / 1000).clamp(1, 60_000_000) as u64
}

/// Now, in ns since the Unix epoch (the clock of pcap records and of kernel timestamps).
pub fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Asks for larger socket buffers: first beyond net.core.[rw]mem_max (allowed with
/// CAP_NET_ADMIN), else up to it. Failing is harmless; bursts are just dropped sooner.
pub fn set_buffers(socket: &UdpSocket, bytes: libc::c_int) {
    let set = |opt| {
        // SAFETY: setsockopt on our own open socket with a c_int value of the right size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    for (forced, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if !set(forced) {
            set(plain);
        }
    }
}
