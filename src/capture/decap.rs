//! Frames in, transport payloads out: [`Decapsulator`].
//!
//! Per frame: peel the link layer (by link type) and any VLAN tags down to the IP
//! header, read it with etherparse's lax IP slice (which keeps what a snaplen cut left)
//! and the transport with its UDP/TCP slices, then
//! * UDP, not fragmented: emit a [`Payload`] borrowing the frame (no copy, no allocation);
//! * an IP fragment: re-slice strictly and hand it to etherparse's `IpDefragPool`; a
//!   completed datagram is emitted from the pool's buffer, which is then recycled;
//! * TCP: hand the segment to the per-direction reassembler and framer ([`super::tcp`]).
//!
//! Linux cooked headers are read here: etherparse's `LinuxSllSlice` rejects the
//! ARPHRD_LOOPBACK hardware type that `tcpdump -i any` records on `lo`, and has no SLL2.
//!
//! etherparse 0.17 (the newest that builds with this crate's rust-version) decodes the
//! IPv6 fragment header's offset and M flag from the wrong bits. So IPv6 fragments are
//! recognised from the raw header here, and the pool gets a copy whose header is
//! re-encoded for that decoder (see `patch_ipv6_fragment_header`). Once etherparse
//! ≥ 0.18 is usable, both workarounds can go.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use etherparse::defrag::{IpDefragPool, IpFragId, IpFragVersionSpecId};
use etherparse::{
    EtherType, Ethernet2Slice, IpNumber, Ipv6ExtensionSlice, Ipv6ExtensionsSlice, LaxIpSlice,
    NetSlice, SingleVlanSlice, SlicedPacket, TcpSlice, UdpSlice, VlanSlice,
};

use super::linktype;
use super::reader::Frame;
use super::tcp::{Segment, TcpFraming, TcpLimits, TcpReassembler};

/// Which transport carried a [`Payload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// One transport payload: a UDP datagram's data or one framed TCP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload<'a> {
    /// Number of the frame that completed it (the last fragment or segment needed).
    pub frame_number: u64,
    /// Timestamp of that frame, ns since the Unix epoch.
    pub ts_ns: i64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transport: Transport,
    /// The bytes: borrowed from the frame for plain UDP, from a reassembly buffer
    /// otherwise. Valid only during the callback.
    pub data: &'a [u8],
    /// The capture cut this UDP datagram short (snaplen): `data` is only its beginning.
    pub truncated: bool,
}

impl Payload<'_> {
    /// The metadata alone (empty `data`), to keep after the payload's bytes are gone.
    pub fn meta(&self) -> Payload<'static> {
        Payload { data: &[], ..*self }
    }
}

/// Settings of a [`Decapsulator`]. The defaults suit captures of games.
#[derive(Debug, Clone, Copy)]
pub struct DecapConfig {
    /// How TCP streams are cut into payloads.
    pub tcp_framing: TcpFraming,
    /// Largest TCP frame accepted; a larger length prefix breaks that stream's framing.
    pub max_tcp_frame: usize,
    /// TCP directions tracked at once; the least recently active is evicted beyond it.
    pub max_tcp_streams: usize,
    /// Out-of-order bytes one TCP direction may hold while waiting for a gap to fill.
    pub max_tcp_stream_buffer: usize,
    /// Bytes all TCP directions together may hold.
    pub max_tcp_buffered: usize,
    /// An IP reassembly that received no fragment for this long (capture time) is dropped.
    pub ip_frag_timeout_ns: i64,
    /// IP reassemblies in progress at once; the oldest half is dropped beyond it.
    pub max_ip_reassemblies: usize,
}

impl Default for DecapConfig {
    fn default() -> Self {
        DecapConfig {
            tcp_framing: TcpFraming::None,
            max_tcp_frame: 1 << 20,
            max_tcp_streams: 1024,
            max_tcp_stream_buffer: 1 << 20,
            max_tcp_buffered: 64 << 20,
            // Linux's default ipfrag_time.
            ip_frag_timeout_ns: 30_000_000_000,
            max_ip_reassemblies: 1024,
        }
    }
}

/// What the decapsulator saw. Each frame lands in exactly one of `udp_frames`,
/// `tcp_segments`, `ip_fragments`, `non_ip`, `other_ip`, `unsupported_linktype` or
/// `malformed_frames`, except that a fragment the reassembly refuses counts in both
/// `ip_fragments` and `malformed_frames`; the rest count events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecapStats {
    pub frames: u64,
    /// Unfragmented UDP datagrams seen.
    pub udp_frames: u64,
    /// UDP payloads emitted (unfragmented plus reassembled, truncated ones included).
    pub udp: u64,
    /// TCP segments seen (unfragmented).
    pub tcp_segments: u64,
    /// TCP payloads (frames) emitted.
    pub tcp: u64,
    /// IPv4/IPv6 fragments seen.
    pub ip_fragments: u64,
    /// Datagrams completed from fragments.
    pub reassembled: u64,
    /// Reassemblies abandoned: timed out, evicted, or incomplete at the end.
    pub reassemblies_dropped: u64,
    /// Frames of a supported link type that carry no IP (ARP, LLDP, ...).
    pub non_ip: u64,
    /// IP packets that are neither UDP nor TCP (ICMP, ...).
    pub other_ip: u64,
    pub unsupported_linktype: u64,
    /// Frames whose headers could not be parsed, and fragments the pool refused.
    pub malformed_frames: u64,
    /// Frames cut short by the snaplen (a truncated UDP payload is still emitted).
    pub truncated: u64,
    pub tcp_retransmitted: u64,
    pub tcp_out_of_order: u64,
    /// Stream gaps given up on (data never captured, or buffers full).
    pub tcp_gaps: u64,
    /// Length prefixes larger than `max_tcp_frame` (that direction's framing stops).
    pub tcp_framing_errors: u64,
    /// Partial TCP frames thrown away (stream closed, evicted, gap, or capture end).
    pub tcp_incomplete_frames: u64,
    pub tcp_streams_evicted: u64,
}

/// One line for reports: payload counts, then only the counters that are not zero.
impl std::fmt::Display for DecapStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} UDP payloads, {} TCP payloads", self.udp, self.tcp)?;
        let extras = [
            (self.tcp_segments, "TCP segments"),
            (self.ip_fragments, "IP fragments"),
            (self.reassembled, "reassembled"),
            (self.reassemblies_dropped, "reassemblies dropped"),
            (self.non_ip, "non-IP"),
            (self.other_ip, "other IP"),
            (self.unsupported_linktype, "unsupported link type"),
            (self.malformed_frames, "malformed"),
            (self.truncated, "truncated"),
            (self.tcp_retransmitted, "TCP retransmitted"),
            (self.tcp_out_of_order, "TCP out of order"),
            (self.tcp_gaps, "TCP gaps"),
            (self.tcp_framing_errors, "TCP framing errors"),
            (self.tcp_incomplete_frames, "TCP incomplete frames"),
            (self.tcp_streams_evicted, "TCP streams evicted"),
        ];
        for (n, what) in extras {
            if n != 0 {
                write!(f, ", {n} {what}")?;
            }
        }
        Ok(())
    }
}

/// The layer-3 start of a frame after its link header.
#[derive(Clone, Copy)]
enum L3<'a> {
    Ethernet(&'a [u8]),
    EtherType(EtherType, &'a [u8]),
    Ip(&'a [u8]),
}

impl<'a> L3<'a> {
    fn bytes(self) -> &'a [u8] {
        match self {
            L3::Ethernet(d) | L3::EtherType(_, d) | L3::Ip(d) => d,
        }
    }

    fn with_bytes(self, d: &[u8]) -> L3<'_> {
        match self {
            L3::Ethernet(_) => L3::Ethernet(d),
            L3::EtherType(t, _) => L3::EtherType(t, d),
            L3::Ip(_) => L3::Ip(d),
        }
    }

    fn slice_strict(self) -> Result<SlicedPacket<'a>, etherparse::err::packet::SliceError> {
        match self {
            L3::Ethernet(d) => SlicedPacket::from_ethernet(d),
            L3::EtherType(t, d) => SlicedPacket::from_ether_type(t, d),
            L3::Ip(d) => SlicedPacket::from_ip(d),
        }
    }
}

/// The IPv6 fragment header's (offset in 8-byte units, more-fragments flag, the header
/// bytes), read from the raw bytes: etherparse 0.17 decodes both fields from the wrong
/// bits (fixed in 0.18+, which needs a newer Rust than this crate's rust-version).
fn ipv6_fragment<'a>(exts: &Ipv6ExtensionsSlice<'a>) -> Option<(u16, bool, &'a [u8])> {
    exts.clone().into_iter().find_map(|e| match e {
        Ipv6ExtensionSlice::Fragment(f) => {
            let b = f.slice();
            let v = u16::from_be_bytes([b[2], b[3]]);
            Some((v >> 3, v & 1 != 0, b))
        }
        _ => None,
    })
}

/// Copies the layer-3 bytes of an IPv6 fragment into `scratch` with the fragment header
/// (at byte `at`) re-encoded so that etherparse 0.17 reads the true offset and flag.
fn patch_ipv6_fragment_header<'s>(l3: L3<'_>, at: usize, scratch: &'s mut Vec<u8>) -> L3<'s> {
    let bytes = l3.bytes();
    scratch.clear();
    scratch.extend_from_slice(bytes);
    if let Some(field) = scratch.get_mut(at + 2..at + 4) {
        let v = u16::from_be_bytes([field[0], field[1]]);
        let (off, more) = (v >> 3, v & 1 != 0);
        // etherparse 0.17 reads offset = (b2 >> 3) << 8 | (b2 & 7) << 5 | (b3 & 0x1F) and
        // more = b3 & 0x80.
        field[0] = ((off >> 8) as u8) << 3 | (off & 0xFF) as u8 >> 5;
        field[1] = (off & 0x1F) as u8 | if more { 0x80 } else { 0 };
    }
    l3.with_bytes(scratch)
}

fn strict_addrs(p: &SlicedPacket<'_>) -> Option<(IpAddr, IpAddr)> {
    match &p.net {
        Some(NetSlice::Ipv4(v4)) => Some((
            IpAddr::V4(v4.header().source_addr()),
            IpAddr::V4(v4.header().destination_addr()),
        )),
        Some(NetSlice::Ipv6(v6)) => Some((
            IpAddr::V6(v6.header().source_addr()),
            IpAddr::V6(v6.header().destination_addr()),
        )),
        _ => None,
    }
}

enum Peeled<'a> {
    L3(L3<'a>),
    NonIp,
    Unsupported,
    Malformed,
}

/// A complete, unfragmented IPv4 UDP datagram without IP options.
struct PlainUdp4<'a> {
    src: [u8; 4],
    dst: [u8; 4],
    src_port: u16,
    dst_port: u16,
    payload: &'a [u8],
}

/// The common frame, read directly: Ethernet (or raw IP), IPv4 with a 20-byte header,
/// not fragmented, UDP whose length fits. The general path gives the same payload for
/// these (a test checks); its layered parsing was most of the decapsulation time.
#[inline]
fn plain_udp4(linktype: u32, data: &[u8]) -> Option<PlainUdp4<'_>> {
    let ip = match linktype {
        linktype::ETHERNET if data.len() >= 14 && data[12..14] == [0x08, 0x00] => &data[14..],
        linktype::RAW | linktype::DLT_RAW_12 | linktype::DLT_RAW_14 | linktype::IPV4 => data,
        _ => return None,
    };
    if ip.len() < 28 || ip[0] != 0x45 || ip[9] != 17 || ip[6] & 0x3F != 0 || ip[7] != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let udp_len = usize::from(u16::from_be_bytes([ip[24], ip[25]]));
    if total > ip.len() || udp_len < 8 || 20 + udp_len > total {
        return None;
    }
    Some(PlainUdp4 {
        src: [ip[12], ip[13], ip[14], ip[15]],
        dst: [ip[16], ip[17], ip[18], ip[19]],
        src_port: u16::from_be_bytes([ip[20], ip[21]]),
        dst_port: u16::from_be_bytes([ip[22], ip[23]]),
        payload: &ip[28..20 + udp_len],
    })
}

/// Strips the link-layer header by link type.
fn peel(linktype: u32, data: &[u8]) -> Peeled<'_> {
    match linktype {
        linktype::ETHERNET => Peeled::L3(L3::Ethernet(data)),
        linktype::LINUX_SLL => {
            if data.len() < 16 {
                return Peeled::Malformed;
            }
            let hatype = u16::from_be_bytes([data[2], data[3]]);
            // For netlink, GRE and 802.11 radiotap the field is not an ether type.
            if matches!(hatype, 824 | 778 | 803) {
                return Peeled::NonIp;
            }
            let proto = u16::from_be_bytes([data[14], data[15]]);
            Peeled::L3(L3::EtherType(EtherType(proto), &data[16..]))
        }
        linktype::LINUX_SLL2 => {
            if data.len() < 20 {
                return Peeled::Malformed;
            }
            let proto = u16::from_be_bytes([data[0], data[1]]);
            Peeled::L3(L3::EtherType(EtherType(proto), &data[20..]))
        }
        linktype::NULL | linktype::LOOP => {
            if data.len() < 4 {
                return Peeled::Malformed;
            }
            // Families are small numbers: whichever end holds the non-zero byte tells
            // the byte order (NULL is host order, LOOP network order, both occur).
            let family = if data[0] == 0 && data[1] == 0 {
                data[3]
            } else {
                data[0]
            };
            match family {
                2 => Peeled::L3(L3::EtherType(EtherType::IPV4, &data[4..])),
                // AF_INET6 on Linux, Windows, Net/OpenBSD, FreeBSD, macOS.
                10 | 23 | 24 | 28 | 30 => Peeled::L3(L3::EtherType(EtherType::IPV6, &data[4..])),
                _ => Peeled::NonIp,
            }
        }
        linktype::RAW
        | linktype::DLT_RAW_12
        | linktype::DLT_RAW_14
        | linktype::IPV4
        | linktype::IPV6 => Peeled::L3(L3::Ip(data)),
        _ => Peeled::Unsupported,
    }
}

/// Skips 802.1Q / 802.1ad tags (any depth up to 4) to the IP header; `Err` says why
/// there is none.
fn ip_after_vlans(mut ether_type: EtherType, mut data: &[u8]) -> Result<&[u8], Peeled<'_>> {
    for _ in 0..4 {
        match ether_type {
            EtherType::IPV4 | EtherType::IPV6 => return Ok(data),
            EtherType::VLAN_TAGGED_FRAME
            | EtherType::PROVIDER_BRIDGING
            | EtherType::VLAN_DOUBLE_TAGGED_FRAME => {
                let vlan = SingleVlanSlice::from_slice(data).map_err(|_| Peeled::Malformed)?;
                ether_type = vlan.ether_type();
                data = vlan.payload_slice();
            }
            _ => return Err(Peeled::NonIp),
        }
    }
    Err(Peeled::Malformed)
}

/// The key etherparse's pool files a fragment under, so we can count what it holds.
fn frag_id(p: &SlicedPacket<'_>, channel: u32) -> Option<IpFragId<u32>> {
    let (outer_vlan_id, inner_vlan_id) = match &p.vlan {
        Some(VlanSlice::SingleVlan(s)) => (Some(s.vlan_identifier()), None),
        Some(VlanSlice::DoubleVlan(d)) => (
            Some(d.outer().vlan_identifier()),
            Some(d.inner().vlan_identifier()),
        ),
        None => (None, None),
    };
    let (ip, payload_ip_number) = match &p.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            (
                IpFragVersionSpecId::Ipv4 {
                    source: h.source(),
                    destination: h.destination(),
                    identification: h.identification(),
                },
                v4.payload().ip_number,
            )
        }
        Some(NetSlice::Ipv6(v6)) => {
            let (_, _, frag) = ipv6_fragment(v6.extensions())?;
            (
                IpFragVersionSpecId::Ipv6 {
                    source: v6.header().source(),
                    destination: v6.header().destination(),
                    identification: u32::from_be_bytes([frag[4], frag[5], frag[6], frag[7]]),
                },
                v6.payload().ip_number,
            )
        }
        _ => return None,
    };
    Some(IpFragId {
        outer_vlan_id,
        inner_vlan_id,
        ip,
        payload_ip_number,
        channel_id: channel,
    })
}

/// Pool timestamps: capture time of the latest fragment, and a running fragment count
/// used to find the least recently fed reassemblies.
type FragStamp = (i64, u64);

/// The sans-IO decapsulation state machine. See the module docs.
pub struct Decapsulator {
    config: DecapConfig,
    stats: DecapStats,
    defrag: IpDefragPool<FragStamp, u32>,
    /// Mirror of the pool's open reassemblies (the pool does not expose its size).
    reassemblies: HashMap<IpFragId<u32>, FragStamp>,
    fragment_count: u64,
    next_sweep_ns: i64,
    /// Reused for patched copies of IPv6 fragments.
    scratch: Vec<u8>,
    tcp: TcpReassembler,
}

impl Decapsulator {
    pub fn new(config: DecapConfig) -> Self {
        Decapsulator {
            config,
            stats: DecapStats::default(),
            defrag: IpDefragPool::new(),
            reassemblies: HashMap::new(),
            fragment_count: 0,
            next_sweep_ns: i64::MAX,
            scratch: Vec::new(),
            tcp: TcpReassembler::new(TcpLimits {
                framing: config.tcp_framing,
                max_frame: config.max_tcp_frame,
                max_streams: config.max_tcp_streams,
                max_stream_buffer: config.max_tcp_stream_buffer,
                max_total_buffer: config.max_tcp_buffered,
            }),
        }
    }

    pub fn config(&self) -> &DecapConfig {
        &self.config
    }

    pub fn stats(&self) -> &DecapStats {
        &self.stats
    }

    /// Decapsulates one frame; `out` is called for each payload it completes (none, one,
    /// or several for TCP).
    pub fn push<F: FnMut(Payload<'_>)>(&mut self, frame: &Frame<'_>, out: &mut F) {
        self.stats.frames += 1;
        if !self.reassemblies.is_empty() && frame.ts_ns >= self.next_sweep_ns {
            self.expire_reassemblies(frame.ts_ns);
        }
        if let Some(u) = plain_udp4(frame.linktype, frame.data) {
            self.stats.udp_frames += 1;
            let src = SocketAddr::new(IpAddr::V4(u.src.into()), u.src_port);
            let dst = SocketAddr::new(IpAddr::V4(u.dst.into()), u.dst_port);
            return self.emit_udp(frame, src, dst, u.payload, false, out);
        }
        self.push_general(frame, out)
    }

    /// Every frame the fast path of [`Decapsulator::push`] does not take.
    fn push_general<F: FnMut(Payload<'_>)>(&mut self, frame: &Frame<'_>, out: &mut F) {
        let l3 = match peel(frame.linktype, frame.data) {
            Peeled::L3(l3) => l3,
            Peeled::NonIp => return self.stats.non_ip += 1,
            Peeled::Unsupported => return self.stats.unsupported_linktype += 1,
            Peeled::Malformed => return self.stats.malformed_frames += 1,
        };
        let ip_bytes = match l3 {
            L3::Ethernet(d) => match Ethernet2Slice::from_slice_without_fcs(d) {
                Ok(eth) => ip_after_vlans(eth.ether_type(), eth.payload_slice()),
                Err(_) => Err(Peeled::Malformed),
            },
            L3::EtherType(t, d) => ip_after_vlans(t, d),
            L3::Ip(d) => Ok(d),
        };
        let ip_bytes = match ip_bytes {
            Ok(d) => d,
            Err(Peeled::NonIp) => return self.stats.non_ip += 1,
            Err(_) => return self.stats.malformed_frames += 1,
        };
        let Ok((ip, ext_err)) = LaxIpSlice::from_slice(ip_bytes) else {
            return self.stats.malformed_frames += 1;
        };
        let ip_payload = ip.payload();
        if ext_err.is_some() {
            return self.malformed(ip_payload.incomplete);
        }
        let (src_ip, dst_ip) = (ip.source_addr(), ip.destination_addr());
        let (fragmented, v6_frag_header) = match &ip {
            LaxIpSlice::Ipv6(v6) => match ipv6_fragment(v6.extensions()) {
                Some((off, more, header)) => (off != 0 || more, Some(header)),
                None => (false, None),
            },
            LaxIpSlice::Ipv4(_) => (ip_payload.fragmented, None),
        };
        if fragmented {
            let v6_frag_at = v6_frag_header
                .and_then(|h| (h.as_ptr() as usize).checked_sub(l3.bytes().as_ptr() as usize));
            return self.fragment(frame, l3, ip_payload.incomplete, v6_frag_at, out);
        }
        match ip_payload.ip_number {
            IpNumber::UDP => match UdpSlice::from_slice_lax(ip_payload.payload) {
                Ok(udp) => {
                    self.stats.udp_frames += 1;
                    let truncated =
                        ip_payload.incomplete || usize::from(udp.length()) > udp.slice().len();
                    let src = SocketAddr::new(src_ip, udp.source_port());
                    let dst = SocketAddr::new(dst_ip, udp.destination_port());
                    self.emit_udp(frame, src, dst, udp.payload(), truncated, out);
                }
                Err(_) => self.malformed(ip_payload.incomplete),
            },
            IpNumber::TCP => match TcpSlice::from_slice(ip_payload.payload) {
                Ok(tcp) => {
                    self.stats.tcp_segments += 1;
                    if ip_payload.incomplete {
                        // Missing bytes would corrupt the stream: leave a gap instead.
                        self.stats.truncated += 1;
                        return;
                    }
                    self.tcp_segment(frame, src_ip, dst_ip, &tcp, out);
                }
                Err(_) => self.malformed(ip_payload.incomplete),
            },
            _ => self.stats.other_ip += 1,
        }
    }

    fn malformed(&mut self, truncated: bool) {
        if truncated {
            self.stats.truncated += 1;
        }
        self.stats.malformed_frames += 1;
    }

    /// Ends the capture: flushes TCP data still waiting (across gaps) and counts what
    /// could not be completed.
    pub fn finish<F: FnMut(Payload<'_>)>(&mut self, out: &mut F) {
        self.tcp.finish(&mut self.stats, out);
        self.stats.reassemblies_dropped += self.reassemblies.len() as u64;
        self.reassemblies.clear();
        self.defrag.retain(|_| false);
    }

    fn emit_udp<F: FnMut(Payload<'_>)>(
        &mut self,
        frame: &Frame<'_>,
        src: SocketAddr,
        dst: SocketAddr,
        data: &[u8],
        truncated: bool,
        out: &mut F,
    ) {
        self.stats.udp += 1;
        if truncated {
            self.stats.truncated += 1;
        }
        out(Payload {
            frame_number: frame.number,
            ts_ns: frame.ts_ns,
            src,
            dst,
            transport: Transport::Udp,
            data,
            truncated,
        });
    }

    fn tcp_segment<F: FnMut(Payload<'_>)>(
        &mut self,
        frame: &Frame<'_>,
        src_ip: IpAddr,
        dst_ip: IpAddr,
        tcp: &TcpSlice<'_>,
        out: &mut F,
    ) {
        let seg = Segment {
            src: SocketAddr::new(src_ip, tcp.source_port()),
            dst: SocketAddr::new(dst_ip, tcp.destination_port()),
            seq: tcp.sequence_number(),
            syn: tcp.syn(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            data: tcp.payload(),
        };
        self.tcp
            .segment(seg, frame.number, frame.ts_ns, &mut self.stats, out);
    }

    fn fragment<F: FnMut(Payload<'_>)>(
        &mut self,
        frame: &Frame<'_>,
        l3: L3<'_>,
        incomplete: bool,
        v6_frag_at: Option<usize>,
        out: &mut F,
    ) {
        self.stats.ip_fragments += 1;
        if incomplete {
            return self.malformed(true);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let l3 = match v6_frag_at {
            Some(at) => patch_ipv6_fragment_header(l3, at, &mut scratch),
            None => l3,
        };
        self.defragment(frame, l3, out);
        self.scratch = scratch;
    }

    fn defragment<F: FnMut(Payload<'_>)>(&mut self, frame: &Frame<'_>, l3: L3<'_>, out: &mut F) {
        // The pool wants etherparse's strict slice; fragments are rare, slicing twice is fine.
        let Ok(strict) = l3.slice_strict() else {
            return self.malformed(false);
        };
        let (Some(id), Some((src_ip, dst_ip))) =
            (frag_id(&strict, frame.interface), strict_addrs(&strict))
        else {
            return self.malformed(false);
        };
        self.fragment_count += 1;
        let stamp = (frame.ts_ns, self.fragment_count);
        let result = self
            .defrag
            .process_sliced_packet(&strict, stamp, frame.interface);
        match result {
            Ok(None) => {
                let new = self.reassemblies.insert(id, stamp).is_none();
                if new && self.reassemblies.len() > self.config.max_ip_reassemblies {
                    self.evict_reassemblies();
                }
                if new {
                    self.next_sweep_ns = self
                        .next_sweep_ns
                        .min(frame.ts_ns.saturating_add(self.config.ip_frag_timeout_ns));
                }
            }
            Ok(Some(datagram)) => {
                self.reassemblies.remove(&id);
                self.stats.reassembled += 1;
                let ip_number = datagram.ip_number;
                if ip_number == IpNumber::UDP {
                    match UdpSlice::from_slice_lax(&datagram.payload) {
                        Ok(udp) => {
                            let truncated = usize::from(udp.length()) > udp.slice().len();
                            let src = SocketAddr::new(src_ip, udp.source_port());
                            let dst = SocketAddr::new(dst_ip, udp.destination_port());
                            self.emit_udp(frame, src, dst, udp.payload(), truncated, out);
                        }
                        Err(_) => self.stats.malformed_frames += 1,
                    }
                } else if ip_number == IpNumber::TCP {
                    match TcpSlice::from_slice(&datagram.payload) {
                        Ok(tcp) => self.tcp_segment(frame, src_ip, dst_ip, &tcp, out),
                        Err(_) => self.stats.malformed_frames += 1,
                    }
                } else {
                    self.stats.other_ip += 1;
                }
                self.defrag.return_buf(datagram);
            }
            // Overlapping or misaligned fragment; its reassembly (if any) stays until expiry.
            Err(_) => self.stats.malformed_frames += 1,
        }
    }

    /// Drops reassemblies that received no fragment within the timeout.
    fn expire_reassemblies(&mut self, now_ns: i64) {
        let cutoff = now_ns.saturating_sub(self.config.ip_frag_timeout_ns);
        self.drop_reassemblies(|&(ts, _)| ts >= cutoff);
        let oldest = self.reassemblies.values().map(|&(ts, _)| ts).min();
        self.next_sweep_ns = match oldest {
            Some(ts) => ts.saturating_add(self.config.ip_frag_timeout_ns),
            None => i64::MAX,
        };
    }

    /// Over the count limit: keep only the reassemblies fed during the last
    /// `max/2` fragments (at most `max/2` of them, since each fragment feeds one).
    fn evict_reassemblies(&mut self) {
        let keep_after = self
            .fragment_count
            .saturating_sub((self.config.max_ip_reassemblies / 2) as u64);
        self.drop_reassemblies(|&(_, n)| n > keep_after);
    }

    fn drop_reassemblies(&mut self, keep: impl Fn(&FragStamp) -> bool + Copy) {
        let before = self.reassemblies.len();
        self.reassemblies.retain(|_, stamp| keep(stamp));
        self.stats.reassemblies_dropped += (before - self.reassemblies.len()) as u64;
        self.defrag.retain(keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::build_ip_udp;

    fn frame(linktype: u32, data: &[u8]) -> Frame<'_> {
        Frame {
            number: 1,
            ts_ns: 0,
            linktype,
            interface: 0,
            data,
            orig_len: data.len() as u32,
        }
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random frames of every supported link type.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut d = Decapsulator::new(DecapConfig::default());
        let mut buf = Vec::new();
        for i in 0..20_000u32 {
            buf.clear();
            let len = (i % 97) as usize;
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            // Make many of them look like IP so deeper layers are reached too.
            if len > 4 && i % 3 == 0 {
                buf[0] = 0x45;
            }
            for lt in [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 9999] {
                d.push(&frame(lt, &buf), &mut |_| {});
            }
        }
        d.finish(&mut |_| {});
        let s = d.stats();
        assert_eq!(s.frames, 20_000 * 11);
        assert_eq!(s.unsupported_linktype, 20_000);
    }

    #[test]
    fn null_family_in_both_byte_orders() {
        for (lt, hdr) in [(0, [2u8, 0, 0, 0]), (0, [0, 0, 0, 2]), (108, [0, 0, 0, 2])] {
            let mut data = hdr.to_vec();
            data.extend_from_slice(&[
                0x45, 0, 0, 20, 0, 0, 0, 0, 64, 47, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
            ]);
            let mut d = Decapsulator::new(DecapConfig::default());
            d.push(&frame(lt, &data), &mut |_| {});
            assert_eq!(d.stats().other_ip, 1, "{hdr:?}");
        }
        let mut d = Decapsulator::new(DecapConfig::default());
        d.push(&frame(0, &[7, 0, 0, 0, 1]), &mut |_| {});
        assert_eq!(d.stats().non_ip, 1);
    }

    #[test]
    fn fast_path_matches_general_path() {
        // Real IPv4/UDP frames, then one or two header bytes changed at a time (version,
        // IHL, lengths, flags, fragment offset, protocol, ether type, padding): the fast
        // path must give what the general one gives, payloads and counters alike.
        let src: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.1:7777".parse().unwrap();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut fast, mut general) = (
            Decapsulator::new(DecapConfig::default()),
            Decapsulator::new(DecapConfig::default()),
        );
        let mut taken = 0;
        for i in 0..30_000usize {
            let payload: Vec<u8> = (0..i % 90).map(|k| k as u8).collect();
            let mut ip = Vec::new();
            build_ip_udp(&mut ip, src, dst, &payload).unwrap();
            let (lt, mut data) = if i % 2 == 0 {
                let mut eth = vec![0; 12];
                eth.extend_from_slice(&[0x08, 0x00]);
                eth.extend_from_slice(&ip);
                (linktype::ETHERNET, eth)
            } else {
                (linktype::RAW, ip)
            };
            let l3 = if lt == linktype::ETHERNET { 14 } else { 0 };
            if i % 5 == 1 {
                data.extend_from_slice(&[0; 6]); // link-layer padding
            }
            for _ in 0..(i % 3) {
                let at = [0, 2, 3, 6, 7, 9, 24, 25, 12, 13][(next() % 10) as usize];
                let at = if (12..=13).contains(&at) { at } else { l3 + at };
                if at < data.len() {
                    data[at] = next() as u8;
                }
            }
            if i % 7 == 3 {
                data.truncate(data.len().saturating_sub((next() % 12) as usize));
            }
            let f = frame(lt, &data);
            taken += usize::from(plain_udp4(lt, &data).is_some());
            let mut a = Vec::new();
            fast.push(&f, &mut |p| {
                a.push((p.src, p.dst, p.data.to_vec(), p.truncated))
            });
            let mut b = Vec::new();
            general.push_general(&f, &mut |p| {
                b.push((p.src, p.dst, p.data.to_vec(), p.truncated))
            });
            assert_eq!(a, b, "frame {i}: {data:02x?}");
        }
        // push_general leaves counting frames to push.
        let general = DecapStats {
            frames: 30_000,
            ..*general.stats()
        };
        assert_eq!(*fast.stats(), general);
        assert!(
            taken > 10_000 && taken < 30_000,
            "fast path taken {taken} times"
        );
    }
}
