//! A UDP peer on 127.0.0.1 for end-to-end tests (an echo server, a fake upstream): it
//! logs what it receives and answers what a closure says, and stops by itself.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What the peer received: (sender, bytes), in order.
pub type Log = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

/// Listens for `life`, logging every datagram and sending back what `reply` returns
/// for it, if anything.
pub fn spawn(
    life: Duration,
    mut reply: impl FnMut(&[u8]) -> Option<Vec<u8>> + Send + 'static,
) -> (SocketAddr, Log) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Room for a sender at top speed (hundreds of datagrams at once): the default
    // buffer holds about 200 small ones.
    set_rcvbuf(&sock, 4 << 20);
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let log: Log = Arc::default();
    let l = log.clone();
    thread::spawn(move || {
        let end = Instant::now() + life;
        let mut buf = [0u8; 65536];
        while Instant::now() < end {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                continue;
            };
            l.lock().unwrap().push((peer, buf[..n].to_vec()));
            if let Some(answer) = reply(&buf[..n]) {
                let _ = sock.send_to(&answer, peer);
            }
        }
    });
    (addr, log)
}

/// A larger receive buffer (root may exceed net.core.rmem_max); best effort.
pub fn set_rcvbuf(sock: &UdpSocket, bytes: i32) {
    use std::os::fd::AsRawFd;
    let len = std::mem::size_of::<i32>() as libc::socklen_t;
    let p = &bytes as *const i32 as *const libc::c_void;
    // SAFETY: a live socket and a valid i32 option value.
    unsafe {
        if libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            p,
            len,
        ) != 0
        {
            libc::setsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, p, len);
        }
    }
}
