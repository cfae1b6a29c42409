//! Writing classic pcap files, and building UDP/TCP frames to put in them.
//!
//! The file header is written with `pcap-file`, records by hand (its writer cannot be
//! flushed while in use, which `sniff -w` needs). Little-endian, so the same input gives
//! the same bytes on every machine. Frames are built with
//! etherparse's `PacketBuilder`, checksums included. The writer does not buffer: wrap a
//! file in a `BufWriter`.

use std::io::{self, Write};
use std::net::SocketAddr;

use etherparse::{EtherType, Ethernet2Header, PacketBuilder};
use pcap_file::pcap::PcapHeader;
use pcap_file::{DataLink, Endianness, PcapError};

use super::linktype;

/// Largest frame written, so that every file written can be read back (see the reader).
const SNAPLEN: u32 = 262_144;

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Timestamp resolution of a pcap file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TsResolution {
    #[default]
    Microsecond,
    Nanosecond,
}

/// TCP header flags for [`PcapWriter::write_tcp`] and [`build_ip_tcp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags {
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
}

impl TcpFlags {
    pub const NONE: TcpFlags = TcpFlags {
        syn: false,
        fin: false,
        rst: false,
        psh: false,
    };
    pub const SYN: TcpFlags = TcpFlags {
        syn: true,
        ..TcpFlags::NONE
    };
    pub const FIN: TcpFlags = TcpFlags {
        fin: true,
        ..TcpFlags::NONE
    };
    pub const RST: TcpFlags = TcpFlags {
        rst: true,
        ..TcpFlags::NONE
    };
    pub const PSH: TcpFlags = TcpFlags {
        psh: true,
        ..TcpFlags::NONE
    };
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

fn pcap_io(e: PcapError) -> io::Error {
    match e {
        PcapError::IoError(e) => e,
        e => io::Error::other(e.to_string()),
    }
}

fn build_io(e: etherparse::err::packet::BuildWriteError) -> io::Error {
    match e {
        etherparse::err::packet::BuildWriteError::Io(e) => e,
        e => invalid(e.to_string()),
    }
}

/// Starts a builder for IPv4 or IPv6 from two addresses of the same family.
fn ip_builder(
    src: SocketAddr,
    dst: SocketAddr,
) -> io::Result<etherparse::PacketBuilderStep<etherparse::IpHeaders>> {
    use etherparse::{IpHeaders, Ipv4Header, Ipv6Header};
    let ip = match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            let h = Ipv4Header::new(
                0,
                64,
                etherparse::IpNumber::UDP,
                s.ip().octets(),
                d.ip().octets(),
            )
            .map_err(|e| invalid(e.to_string()))?;
            IpHeaders::Ipv4(h, Default::default())
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => IpHeaders::Ipv6(
            Ipv6Header {
                hop_limit: 64,
                source: s.ip().octets(),
                destination: d.ip().octets(),
                ..Default::default()
            },
            Default::default(),
        ),
        _ => {
            return Err(invalid(format!(
                "{src} and {dst} are of different IP versions"
            )))
        }
    };
    Ok(PacketBuilder::ip(ip))
}

/// Appends an IPv4 or IPv6 packet carrying one UDP datagram (no link header) to `out`.
pub fn build_ip_udp(
    out: &mut Vec<u8>,
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> io::Result<()> {
    ip_builder(src, dst)?
        .udp(src.port(), dst.port())
        .write(out, payload)
        .map_err(build_io)
}

/// Appends an IPv4 or IPv6 packet carrying one TCP segment (no link header) to `out`.
pub fn build_ip_tcp(
    out: &mut Vec<u8>,
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    flags: TcpFlags,
    payload: &[u8],
) -> io::Result<()> {
    let mut b = ip_builder(src, dst)?.tcp(src.port(), dst.port(), seq, 65535);
    if flags.syn {
        b = b.syn();
    }
    if flags.fin {
        b = b.fin();
    }
    if flags.rst {
        b = b.rst();
    }
    if flags.psh {
        b = b.psh();
    }
    b.write(out, payload).map_err(build_io)
}

fn ethernet_header(out: &mut Vec<u8>, src: SocketAddr) {
    let ether_type = if src.is_ipv4() {
        EtherType::IPV4
    } else {
        EtherType::IPV6
    };
    let h = Ethernet2Header {
        source: SRC_MAC,
        destination: DST_MAC,
        ether_type,
    };
    out.extend_from_slice(&h.to_bytes());
}

/// Writes a classic pcap file, one record per call.
pub struct PcapWriter<W: Write> {
    inner: W,
    resolution: TsResolution,
    linktype: u32,
    scratch: Vec<u8>,
}

impl<W: Write> PcapWriter<W> {
    /// A pcap file of Ethernet frames.
    pub fn new(writer: W, resolution: TsResolution) -> io::Result<Self> {
        Self::with_linktype(writer, resolution, linktype::ETHERNET)
    }

    /// A pcap file of any link type; frames are written as given by [`Self::write_frame`].
    pub fn with_linktype(writer: W, resolution: TsResolution, linktype: u32) -> io::Result<Self> {
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: SNAPLEN,
            datalink: DataLink::from(linktype),
            ts_resolution: match resolution {
                TsResolution::Microsecond => pcap_file::TsResolution::MicroSecond,
                TsResolution::Nanosecond => pcap_file::TsResolution::NanoSecond,
            },
            endianness: Endianness::Little,
        };
        let mut inner = writer;
        header.write_to(&mut inner).map_err(pcap_io)?;
        Ok(PcapWriter {
            inner,
            resolution,
            linktype,
            scratch: Vec::with_capacity(2048),
        })
    }

    pub fn linktype(&self) -> u32 {
        self.linktype
    }

    /// Writes one frame (link header included) captured in full.
    pub fn write_frame(&mut self, ts_ns: i64, data: &[u8]) -> io::Result<()> {
        let orig_len = u32::try_from(data.len()).map_err(|_| invalid("frame too large"))?;
        self.write_frame_with_orig_len(ts_ns, data, orig_len)
    }

    /// Writes one frame whose wire length was `orig_len` (larger when cut by a snaplen).
    pub fn write_frame_with_orig_len(
        &mut self,
        ts_ns: i64,
        data: &[u8],
        orig_len: u32,
    ) -> io::Result<()> {
        if data.len() > SNAPLEN as usize {
            return Err(invalid(format!(
                "frame of {} bytes exceeds the snaplen of {SNAPLEN}",
                data.len()
            )));
        }
        if ts_ns < 0 || ts_ns / 1_000_000_000 > i64::from(u32::MAX) {
            return Err(invalid(format!(
                "timestamp {ts_ns} ns does not fit a pcap record"
            )));
        }
        let sub_ns = (ts_ns % 1_000_000_000) as u32;
        let ts_frac = match self.resolution {
            TsResolution::Microsecond => sub_ns / 1000,
            TsResolution::Nanosecond => sub_ns,
        };
        let mut header = [0u8; 16];
        for (i, x) in [
            (ts_ns / 1_000_000_000) as u32,
            ts_frac,
            data.len() as u32,
            orig_len,
        ]
        .into_iter()
        .enumerate()
        {
            header[i * 4..i * 4 + 4].copy_from_slice(&x.to_le_bytes());
        }
        self.inner.write_all(&header)?;
        self.inner.write_all(data)
    }

    fn require_ethernet(&self) -> io::Result<()> {
        if self.linktype == linktype::ETHERNET {
            Ok(())
        } else {
            Err(invalid(format!(
                "building frames needs an Ethernet file, this one has link type {}",
                self.linktype
            )))
        }
    }

    /// Writes a UDP datagram as an Ethernet/IPv4 or Ethernet/IPv6 frame.
    pub fn write_udp(
        &mut self,
        ts_ns: i64,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> io::Result<()> {
        self.require_ethernet()?;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        ethernet_header(&mut buf, src);
        let result =
            build_ip_udp(&mut buf, src, dst, payload).and_then(|()| self.write_frame(ts_ns, &buf));
        self.scratch = buf;
        result
    }

    /// Writes a TCP segment as an Ethernet/IPv4 or Ethernet/IPv6 frame.
    pub fn write_tcp(
        &mut self,
        ts_ns: i64,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        flags: TcpFlags,
        payload: &[u8],
    ) -> io::Result<()> {
        self.require_ethernet()?;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        ethernet_header(&mut buf, src);
        let result = build_ip_tcp(&mut buf, src, dst, seq, flags, payload)
            .and_then(|()| self.write_frame(ts_ns, &buf));
        self.scratch = buf;
        result
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{CaptureFormat, CaptureReader, DecapConfig, Decapsulator};

    #[test]
    fn round_trip_udp_v4_v6_and_timestamps() {
        for res in [TsResolution::Microsecond, TsResolution::Nanosecond] {
            let mut w = PcapWriter::new(Vec::new(), res).unwrap();
            let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
            let b: SocketAddr = "127.0.0.1:6000".parse().unwrap();
            let c: SocketAddr = "[::1]:7000".parse().unwrap();
            let d: SocketAddr = "[fe80::2]:8000".parse().unwrap();
            w.write_udp(1_700_000_000_123_456_789, a, b, b"one")
                .unwrap();
            w.write_udp(5, c, d, b"two").unwrap();
            assert!(w.write_udp(0, a, d, b"x").is_err());
            assert!(w.write_udp(-1, a, b, b"x").is_err());
            let bytes = w.into_inner();
            let mut r = CaptureReader::new(&bytes[..]).unwrap();
            assert_eq!(
                r.format(),
                CaptureFormat::Pcap {
                    linktype: 1,
                    nanosecond: res == TsResolution::Nanosecond,
                    big_endian: false
                }
            );
            let mut dec = Decapsulator::new(DecapConfig::default());
            let mut got = Vec::new();
            while let Some(f) = r.next_frame() {
                dec.push(&f.unwrap(), &mut |p| {
                    got.push((p.ts_ns, p.src, p.dst, p.data.to_vec()))
                });
            }
            let first_ts = match res {
                TsResolution::Microsecond => 1_700_000_000_123_456_000,
                TsResolution::Nanosecond => 1_700_000_000_123_456_789,
            };
            let second_ts = match res {
                TsResolution::Microsecond => 0,
                TsResolution::Nanosecond => 5,
            };
            assert_eq!(
                got,
                vec![
                    (first_ts, a, b, b"one".to_vec()),
                    (second_ts, c, d, b"two".to_vec())
                ]
            );
        }
    }

    #[test]
    fn frames_only_for_ethernet_files() {
        let mut w = PcapWriter::with_linktype(Vec::new(), TsResolution::Microsecond, linktype::RAW)
            .unwrap();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(w.write_udp(0, a, a, b"").is_err());
        assert!(w.write_frame(0, &[0x45]).is_ok());
    }
}
