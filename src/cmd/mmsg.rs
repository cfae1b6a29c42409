//! Several UDP datagrams per system call (recvmmsg(2)): the proxy's listening socket is
//! read in batches, since the kernel's per-call cost is most of a relay's time.

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
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
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
