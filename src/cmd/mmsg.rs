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
    got: Vec<(usize, usize, SocketAddr)>,
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
            got: Vec::with_capacity(BATCH),
        }
    }
}

impl MultiRecv {
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
        }
        // SAFETY: every header points at a live buffer, iovec and address of this struct,
        // sized as declared, for the duration of the call.
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
                self.got.push((i, self.hdrs[i].msg_len as usize, addr));
            }
        }
        Ok(self.got.len())
    }

    /// The `i`-th datagram of the last [`MultiRecv::recv`] and who sent it.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        let (slot, len, addr) = self.got[i];
        (&self.bufs[slot][..len.min(MAX)], addr)
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

    /// Takes up to [`SEND_BATCH`] datagrams; their bytes must stay untouched until `send`.
    pub fn fill<'a>(
        &mut self,
        it: impl Iterator<Item = dissonance_tools::server::Transmit<'a>>,
    ) -> usize {
        let mut n = 0;
        for t in it.take(SEND_BATCH) {
            self.lens[n] = write_sockaddr(&mut self.addrs[n], t.peer);
            self.iovs[n] = libc::iovec {
                iov_base: t.bytes.as_ptr() as *mut libc::c_void,
                iov_len: t.bytes.len(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

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
}
