//! Several UDP datagrams per system call: recvmmsg(2) for the proxy's listening socket,
//! sendmmsg(2) for the server's replies, since the kernel's per-call cost is most of a
//! relay's time.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per call.
pub const BATCH: usize = 32;
/// Largest UDP payload.
const MAX: usize = 65536;

pub struct MultiRecv {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Room for each datagram's arrival timestamp ([`enable_rx_timestamps`]); u64
    /// elements keep it aligned for cmsghdr.
    controls: Vec<[u64; 8]>,
    /// Whether to pass the control buffers at all (their handling costs throughput).
    stamps: bool,
    got: Vec<(usize, usize, SocketAddr, Option<i64>)>,
}

impl Default for MultiRecv {
    fn default() -> Self {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let zero_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        MultiRecv {
            bufs: (0..BATCH).map(|_| vec![0u8; MAX]).collect(),
            addrs: vec![zero_addr; BATCH],
            iovs: (0..BATCH)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            hdrs: vec![zero_hdr; BATCH],
            controls: vec![[0; 8]; BATCH],
            stamps: false,
            got: Vec::with_capacity(BATCH),
        }
    }
}

impl MultiRecv {
    /// Also reads each datagram's arrival timestamp ([`MultiRecv::stamp`]); the socket
    /// must have them on ([`enable_rx_timestamps`]).
    pub fn with_stamps() -> MultiRecv {
        MultiRecv {
            stamps: true,
            ..MultiRecv::default()
        }
    }

    /// Reads what is queued on the non-blocking socket `fd`, up to [`BATCH`] datagrams;
    /// `WouldBlock` when nothing is.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: MAX,
            };
            point(
                &mut self.hdrs[i],
                &mut self.addrs[i],
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
                &mut self.iovs[i],
            );
            if self.stamps {
                let h = &mut self.hdrs[i].msg_hdr;
                h.msg_control = self.controls[i].as_mut_ptr().cast();
                h.msg_controllen = std::mem::size_of::<[u64; 8]>() as _;
            }
        }
        // SAFETY: every header points at a live buffer, iovec, address (and control
        // buffer) of this struct, sized as declared, for the duration of the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.got.clear();
        for i in 0..n as usize {
            if let Some(addr) = to_socket_addr(&self.addrs[i]) {
                // SAFETY: the kernel wrote msg_controllen bytes of control data into
                // this header's control buffer during the call above.
                let stamp = self
                    .stamps
                    .then(|| unsafe { rx_stamp(&self.hdrs[i].msg_hdr) })
                    .flatten();
                self.got
                    .push((i, self.hdrs[i].msg_len as usize, addr, stamp));
            }
        }
        Ok(self.got.len())
    }

    /// The `i`-th datagram of the last [`MultiRecv::recv`] and who sent it.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        let (slot, len, addr, _) = self.got[i];
        (&self.bufs[slot][..len.min(MAX)], addr)
    }

    /// The kernel's arrival time of the `i`-th datagram, ns since the Unix epoch, when
    /// timestamps are on for the socket.
    pub fn stamp(&self, i: usize) -> Option<i64> {
        self.got[i].3
    }
}

/// Points a header at one address and one buffer (no control data, no flags).
fn point(
    hdr: &mut libc::mmsghdr,
    addr: &mut libc::sockaddr_storage,
    addr_len: libc::socklen_t,
    iov: &mut libc::iovec,
) {
    let h = &mut hdr.msg_hdr;
    h.msg_name = (addr as *mut libc::sockaddr_storage).cast();
    h.msg_namelen = addr_len;
    h.msg_iov = iov;
    h.msg_iovlen = 1;
    h.msg_control = std::ptr::null_mut();
    h.msg_controllen = 0;
    h.msg_flags = 0;
    hdr.msg_len = 0;
}

/// Datagrams per sendmmsg call.
pub const SEND_BATCH: usize = 64;

/// Reusable sendmmsg(2) arguments: addresses, iovecs and headers for [`SEND_BATCH`] datagrams.
pub struct MultiSend {
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<libc::socklen_t>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Default for MultiSend {
    fn default() -> Self {
        Self::new()
    }
}

impl MultiSend {
    pub fn new() -> MultiSend {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let zero_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        MultiSend {
            addrs: vec![zero_addr; SEND_BATCH],
            lens: vec![0; SEND_BATCH],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                SEND_BATCH
            ],
            hdrs: vec![zero_hdr; SEND_BATCH],
        }
    }

    /// Takes up to [`SEND_BATCH`] datagrams (destination, bytes); their bytes must stay
    /// untouched until `send`.
    pub fn fill<'a>(&mut self, it: impl Iterator<Item = (SocketAddr, &'a [u8])>) -> usize {
        let mut n = 0;
        for (peer, bytes) in it.take(SEND_BATCH) {
            self.lens[n] = write_sockaddr(&mut self.addrs[n], peer);
            self.iovs[n] = libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            };
            n += 1;
        }
        n
    }

    /// One sendmmsg of the first `n` filled datagrams; returns how many went out.
    pub fn send(&mut self, fd: RawFd, n: usize) -> io::Result<usize> {
        for i in 0..n {
            point(
                &mut self.hdrs[i],
                &mut self.addrs[i],
                self.lens[i],
                &mut self.iovs[i],
            );
        }
        // SAFETY: the headers point into this struct's own vectors and at the datagram
        // bytes of `fill`, which the caller keeps alive and unchanged for this call.
        let r = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }
}

fn write_sockaddr(out: &mut libc::sockaddr_storage, addr: SocketAddr) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn to_socket_addr(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match a.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let v4 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let v6 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(v6.sin6_addr.s6_addr),
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Asks the kernel to stamp every datagram `fd` receives with its arrival time
/// (SO_TIMESTAMPNS, read back by [`recv_stamped`]). Best effort.
pub fn enable_rx_timestamps(fd: RawFd) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on an open socket with a c_int value of the declared size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// One datagram from the non-blocking socket `fd` into `buf`: its length, sender and the
/// kernel's arrival time in ns since the Unix epoch when timestamps are on (see
/// [`enable_rx_timestamps`]). `WouldBlock` when nothing is queued.
pub fn recv_stamped(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<i64>)> {
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    point(
        &mut hdr,
        &mut addr,
        std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        &mut iov,
    );
    let msg = &mut hdr.msg_hdr;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at the live address, iovec (over `buf`) and control buffer above.
    let n = unsafe { libc::recvmsg(fd, msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = to_socket_addr(&addr)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "sender address family"))?;
    // SAFETY: the kernel wrote msg_controllen bytes of control data into `control`.
    let stamp = unsafe { rx_stamp(msg) };
    Ok((n as usize, from, stamp))
}

/// The SCM_TIMESTAMPNS arrival time in a received message's control data, if any.
///
/// # Safety
/// `msg.msg_control` must point at `msg.msg_controllen` bytes of control data written by
/// the kernel (or be null).
unsafe fn rx_stamp(msg: &libc::msghdr) -> Option<i64> {
    let mut stamp = None;
    // SAFETY: the CMSG_* macros walk the control data, bounded by msg_controllen; the
    // timespec is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    stamp
}

/// One datagram from a connected socket, without waiting (`WouldBlock` when none).
pub fn recv_now(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Waits up to `ms` for room in a socket's send buffer: a level-triggered poll(2). On
/// loopback the buffer drains inside our own send call, and tokio's edge-triggered
/// readiness can miss that.
pub fn wait_writable(fd: RawFd, ms: libc::c_int) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    r == 1 && p.revents & libc::POLLOUT != 0
}

/// Most sockets [`Epoll::ready`] reports per call.
pub const EPOLL_EVENTS: usize = 64;

/// A level-triggered epoll(7) set of sockets that one task reads: the proxy's upstream
/// sockets, one per client mapping. Registered with tokio as a single readable fd, so a
/// datagram from upstream costs no task switch or channel hop.
pub struct Epoll {
    fd: std::os::fd::OwnedFd,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain system call; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(Epoll {
            fd: unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for incoming data, reported as `token`. A closed socket leaves the
    /// set by itself.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid descriptors and a valid event for the duration of the call.
        let r = unsafe {
            libc::epoll_ctl(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                libc::EPOLL_CTL_ADD,
                fd,
                &mut ev,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The tokens of the sockets with data (or a pending error) now, without waiting.
    pub fn ready(&self, out: &mut Vec<u64>) -> io::Result<()> {
        // SAFETY: all-zero is a valid epoll_event.
        let mut evs: [libc::epoll_event; EPOLL_EVENTS] = unsafe { std::mem::zeroed() };
        // SAFETY: the buffer holds EPOLL_EVENTS events.
        let n = unsafe {
            libc::epoll_wait(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                evs.as_mut_ptr(),
                EPOLL_EVENTS as libc::c_int,
                0,
            )
        };
        out.clear();
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        out.extend(evs[..n as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

impl std::os::fd::AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Real sockets on 127.0.0.1: the set names exactly the sockets holding data, and
    /// stops naming one once it is drained; a closed socket leaves the set.
    #[test]
    fn epoll_set_reports_the_sockets_with_data() {
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let socks: Vec<_> = (0..3)
            .map(|_| {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                s.connect(peer.local_addr().unwrap()).unwrap();
                s
            })
            .collect();
        let ep = Epoll::new().unwrap();
        for (i, s) in socks.iter().enumerate() {
            ep.add(s.as_raw_fd(), i as u64 + 10).unwrap();
        }
        let mut ready = Vec::new();
        ep.ready(&mut ready).unwrap();
        assert!(ready.is_empty());
        peer.send_to(b"one", socks[1].local_addr().unwrap())
            .unwrap();
        peer.send_to(b"two", socks[1].local_addr().unwrap())
            .unwrap();
        peer.send_to(b"three", socks[2].local_addr().unwrap())
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        ep.ready(&mut ready).unwrap();
        ready.sort_unstable();
        assert_eq!(ready, [11, 12]);
        let mut buf = [0u8; 16];
        assert_eq!(recv_now(socks[1].as_raw_fd(), &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"one");
        assert_eq!(recv_now(socks[1].as_raw_fd(), &mut buf).unwrap(), 3);
        let e = recv_now(socks[1].as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        ep.ready(&mut ready).unwrap();
        assert_eq!(ready, [12]);
        drop(socks);
        ep.ready(&mut ready).unwrap();
        assert!(ready.is_empty());
    }

    #[test]
    fn reads_several_datagrams_with_their_senders() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut m = MultiRecv::default();
        assert_eq!(
            m.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for i in 0..3u8 {
            tx.send_to(&[i; 5][..usize::from(i) + 1], rx.local_addr().unwrap())
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(m.recv(rx.as_raw_fd()).unwrap(), 3);
        for i in 0..3u8 {
            let (data, from) = m.get(usize::from(i));
            assert_eq!(data, &[i; 5][..usize::from(i) + 1]);
            assert_eq!(from, tx.local_addr().unwrap());
        }
    }

    #[test]
    fn a_received_datagram_carries_the_kernel_arrival_time() {
        use std::os::fd::AsRawFd;
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(enable_rx_timestamps(rx.as_raw_fd()));
        let mut buf = [0u8; 64];
        let e = recv_stamped(rx.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        let got = (0..1000).find_map(|_| match recv_stamped(rx.as_raw_fd(), &mut buf) {
            Ok(r) => Some(r),
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(1));
                None
            }
        });
        let (n, from, stamp) = got.expect("the datagram within a second");
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from, tx.local_addr().unwrap());
        let stamp = stamp.expect("an arrival time");
        assert!(
            stamp >= before - 1_000_000 && stamp < before + 1_000_000_000,
            "{stamp} {before}"
        );
    }
}
