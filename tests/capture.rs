//! The capture layer end to end: capture files built here (with the crate's writer, by
//! hand, or with pcap-file's pcapng writer) and the real capture in tests/data, read with
//! `CaptureReader` and decapsulated with `Decapsulator`, checked payload by payload.

use std::net::SocketAddr;
use std::time::Duration;

use dissonance_tools::capture::{
    build_ip_tcp, build_ip_udp, linktype, CaptureErrorKind, CaptureFormat, CaptureReader,
    DecapConfig, DecapStats, Decapsulator, PcapWriter, TcpFlags, TcpFraming, Transport,
    TsResolution,
};
use etherparse::{IpFragOffset, IpNumber, Ipv4Header};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness};

const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/captures/three-friends.pcap"
);

/// Everything about one payload, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    frame: u64,
    ts_ns: i64,
    src: SocketAddr,
    dst: SocketAddr,
    transport: Transport,
    data: Vec<u8>,
    truncated: bool,
}

/// Reads a whole capture through the decapsulator.
fn decap(bytes: &[u8], config: DecapConfig) -> (Vec<Got>, DecapStats) {
    let mut reader = CaptureReader::new(bytes).expect("capture header");
    let mut d = Decapsulator::new(config);
    let mut got = Vec::new();
    let mut push = |p: dissonance_tools::capture::Payload<'_>| {
        got.push(Got {
            frame: p.frame_number,
            ts_ns: p.ts_ns,
            src: p.src,
            dst: p.dst,
            transport: p.transport,
            data: p.data.to_vec(),
            truncated: p.truncated,
        })
    };
    while let Some(frame) = reader.next_frame() {
        d.push(&frame.expect("frame"), &mut push);
    }
    d.finish(&mut push);
    (got, *d.stats())
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The first datagrams of the real capture, plus edge cases (empty, large).
fn sample_datagrams() -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    let bytes = std::fs::read(CAPTURE).unwrap();
    let (got, _) = decap(&bytes, DecapConfig::default());
    let mut v: Vec<_> = got
        .into_iter()
        .take(12)
        .map(|g| (g.src, g.dst, g.data))
        .collect();
    v.push((addr("127.0.0.1:40000"), addr("127.0.0.1:9000"), vec![]));
    v.push((
        addr("127.0.0.1:40000"),
        addr("127.0.0.1:9000"),
        (0..1400u32).map(|i| (i * 7) as u8).collect(),
    ));
    v
}

fn v6(a: SocketAddr) -> SocketAddr {
    SocketAddr::new("::1".parse().unwrap(), a.port())
}

fn ip_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    build_ip_udp(&mut v, src, dst, payload).unwrap();
    v
}

const TS0: i64 = 1_732_460_000_123_456_000;

fn ts(i: usize) -> i64 {
    TS0 + i as i64 * 20_000_000
}

/// The expected payloads for datagrams written one per frame.
fn expected(dgrams: &[(SocketAddr, SocketAddr, Vec<u8>)]) -> Vec<Got> {
    dgrams
        .iter()
        .enumerate()
        .map(|(i, (s, d, data))| Got {
            frame: i as u64 + 1,
            ts_ns: ts(i),
            src: *s,
            dst: *d,
            transport: Transport::Udp,
            data: data.clone(),
            truncated: false,
        })
        .collect()
}

/// Writes each datagram as IP with `link` prepended, into a pcap of `lt`.
fn encapsulated(
    lt: u32,
    dgrams: &[(SocketAddr, SocketAddr, Vec<u8>)],
    link: impl Fn(&SocketAddr) -> Vec<u8>,
) -> Vec<u8> {
    let mut w = PcapWriter::with_linktype(Vec::new(), TsResolution::Microsecond, lt).unwrap();
    for (i, (s, d, data)) in dgrams.iter().enumerate() {
        let mut frame = link(s);
        frame.extend_from_slice(&ip_packet(*s, *d, data));
        w.write_frame(ts(i), &frame).unwrap();
    }
    w.into_inner()
}

fn ethertype_of(a: &SocketAddr) -> [u8; 2] {
    if a.is_ipv4() {
        [0x08, 0x00]
    } else {
        [0x86, 0xDD]
    }
}

#[test]
fn real_capture_three_friends() {
    let bytes = std::fs::read(CAPTURE).unwrap();
    let reader = CaptureReader::new(&bytes[..]).unwrap();
    assert_eq!(
        reader.format(),
        CaptureFormat::Pcap {
            linktype: linktype::ETHERNET,
            nanosecond: false,
            big_endian: false
        }
    );
    let (got, stats) = decap(&bytes, DecapConfig::default());
    assert_eq!(got.len(), 884);
    assert_eq!(stats.udp, 884);
    assert_eq!(stats.frames, 884);
    assert_eq!(
        got.iter()
            .filter(|g| g.data.starts_with(&[0x8B, 0xC7]))
            .count(),
        881
    );
    let byes: Vec<_> = got
        .iter()
        .filter(|g| !g.data.starts_with(&[0x8B, 0xC7]))
        .collect();
    assert_eq!(byes.len(), 3);
    assert!(byes.iter().all(|g| g.data == [0x00, 0x42, 0x59, 0x45]));
    assert!(got.iter().all(|g| g.transport == Transport::Udp
        && !g.truncated
        && g.src.ip().is_loopback()
        && g.dst.ip().is_loopback()));
    // Frames are numbered from 1 in file order with non-decreasing µs timestamps.
    assert!(got
        .windows(2)
        .all(|w| w[0].frame + 1 == w[1].frame && w[0].ts_ns <= w[1].ts_ns));
    assert_eq!(got[0].frame, 1);
    assert!(got.iter().all(|g| g.ts_ns % 1000 == 0));
    // First record header of the file: seconds 0x6b056068, 0x0dee0b µs.
    assert_eq!(
        got[0].ts_ns,
        0x6b05_6068 * 1_000_000_000 + 0x000d_ee0b * 1000
    );
}

#[test]
fn ethernet_with_vlan_tags() {
    let dgrams = sample_datagrams();
    let mac = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    let single = encapsulated(linktype::ETHERNET, &dgrams, |s| {
        let mut h = mac.to_vec();
        h.extend_from_slice(&[0x81, 0x00, 0x00, 0x2A]);
        h.extend_from_slice(&ethertype_of(s));
        h
    });
    let (got, stats) = decap(&single, DecapConfig::default());
    assert_eq!(got, expected(&dgrams));
    assert_eq!(stats.udp, dgrams.len() as u64);

    let qinq = encapsulated(linktype::ETHERNET, &dgrams, |s| {
        let mut h = mac.to_vec();
        h.extend_from_slice(&[0x88, 0xA8, 0x00, 0x64, 0x81, 0x00, 0x00, 0x2A]);
        h.extend_from_slice(&ethertype_of(s));
        h
    });
    assert_eq!(decap(&qinq, DecapConfig::default()).0, expected(&dgrams));
}

#[test]
fn ethernet_ipv6_and_frame_padding() {
    let dgrams: Vec<_> = sample_datagrams()
        .into_iter()
        .map(|(s, d, p)| (v6(s), v6(d), p))
        .collect();
    let mut w = PcapWriter::new(Vec::new(), TsResolution::Nanosecond).unwrap();
    for (i, (s, d, p)) in dgrams.iter().enumerate() {
        w.write_udp(ts(i), *s, *d, p).unwrap();
    }
    assert_eq!(
        decap(&w.into_inner(), DecapConfig::default()).0,
        expected(&dgrams)
    );

    // A short datagram in a minimum-size Ethernet frame: the padding is not payload.
    let mut w = PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap();
    let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    frame.extend_from_slice(&ip_packet(addr("10.0.0.1:1"), addr("10.0.0.2:2"), b"bye"));
    frame.resize(60, 0);
    w.write_frame(ts(0), &frame).unwrap();
    let (got, _) = decap(&w.into_inner(), DecapConfig::default());
    assert_eq!(got[0].data, b"bye");
}

#[test]
fn linux_cooked_v1_loopback() {
    let dgrams = sample_datagrams();
    // What `tcpdump -i any` records on lo: ARPHRD_LOOPBACK (772), zero address.
    let bytes = encapsulated(linktype::LINUX_SLL, &dgrams, |s| {
        let mut h = vec![0x00, 0x04, 0x03, 0x04, 0x00, 0x06];
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&ethertype_of(s));
        h
    });
    assert_eq!(decap(&bytes, DecapConfig::default()).0, expected(&dgrams));

    // And Ethernet hardware (ARPHRD_ETHER) with a MAC address.
    let bytes = encapsulated(linktype::LINUX_SLL, &dgrams, |s| {
        let mut h = vec![0x00, 0x00, 0x00, 0x01, 0x00, 0x06, 2, 0, 0, 0, 0, 1, 0, 0];
        h.extend_from_slice(&ethertype_of(s));
        h
    });
    assert_eq!(decap(&bytes, DecapConfig::default()).0, expected(&dgrams));
}

#[test]
fn linux_cooked_v2() {
    let dgrams = sample_datagrams();
    let bytes = encapsulated(linktype::LINUX_SLL2, &dgrams, |s| {
        let mut h = ethertype_of(s).to_vec();
        h.extend_from_slice(&[0, 0]); // reserved
        h.extend_from_slice(&1u32.to_be_bytes()); // interface index
        h.extend_from_slice(&[0x03, 0x04, 0x00, 0x06]); // ARPHRD_LOOPBACK, host, addr len
        h.extend_from_slice(&[0; 8]);
        h
    });
    assert_eq!(decap(&bytes, DecapConfig::default()).0, expected(&dgrams));
}

#[test]
fn bsd_null_and_loop_both_byte_orders() {
    let v4 = sample_datagrams();
    let v6s: Vec<_> = v4
        .iter()
        .map(|(s, d, p)| (v6(*s), v6(*d), p.clone()))
        .collect();
    for (lt, family_bytes, dgrams) in [
        (linktype::NULL, 2u32.to_le_bytes(), &v4),
        (linktype::NULL, 2u32.to_be_bytes(), &v4),
        (linktype::LOOP, 2u32.to_be_bytes(), &v4),
        // AF_INET6 as macOS (30) and Linux (10) number it.
        (linktype::NULL, 30u32.to_le_bytes(), &v6s),
        (linktype::NULL, 10u32.to_be_bytes(), &v6s),
        (linktype::LOOP, 24u32.to_be_bytes(), &v6s),
    ] {
        let bytes = encapsulated(lt, dgrams, |_| family_bytes.to_vec());
        assert_eq!(
            decap(&bytes, DecapConfig::default()).0,
            expected(dgrams),
            "link type {lt}, family {family_bytes:?}"
        );
    }
}

#[test]
fn raw_ip_link_types() {
    let v4 = sample_datagrams();
    let v6s: Vec<_> = v4
        .iter()
        .map(|(s, d, p)| (v6(*s), v6(*d), p.clone()))
        .collect();
    for (lt, dgrams) in [
        (linktype::RAW, &v4),
        (linktype::RAW, &v6s),
        (linktype::IPV4, &v4),
        (linktype::IPV6, &v6s),
        (linktype::DLT_RAW_12, &v4),
        (linktype::DLT_RAW_14, &v6s),
    ] {
        let bytes = encapsulated(lt, dgrams, |_| Vec::new());
        assert_eq!(
            decap(&bytes, DecapConfig::default()).0,
            expected(dgrams),
            "link type {lt}"
        );
    }
}

#[test]
fn unsupported_and_non_ip_frames_are_counted() {
    let mut w = PcapWriter::with_linktype(Vec::new(), TsResolution::Microsecond, 105).unwrap();
    w.write_frame(0, &[1, 2, 3]).unwrap();
    let (got, stats) = decap(&w.into_inner(), DecapConfig::default());
    assert!(got.is_empty());
    assert_eq!(stats.unsupported_linktype, 1);

    let mut w = PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap();
    // An ARP request, an Ethernet frame cut inside the IP header, an ICMP echo.
    let mut arp = vec![0xFF; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1]);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&[10, 0, 0, 2]);
    w.write_frame(0, &arp).unwrap();
    w.write_frame(
        0,
        &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00, 0x45, 0],
    )
    .unwrap();
    let mut icmp = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut icmp, b"ping")
        .unwrap();
    w.write_frame(0, &icmp).unwrap();
    let (got, stats) = decap(&w.into_inner(), DecapConfig::default());
    assert!(got.is_empty());
    assert_eq!(
        (
            stats.frames,
            stats.non_ip,
            stats.malformed_frames,
            stats.other_ip
        ),
        (3, 1, 1, 1)
    );
    let text = stats.to_string();
    assert!(
        text.starts_with("0 UDP payloads, 0 TCP payloads, 1 non-IP"),
        "{text}"
    );
}

#[test]
fn snaplen_truncated_udp_is_flagged() {
    let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    frame.extend_from_slice(&ip_packet(
        addr("10.0.0.1:1"),
        addr("10.0.0.2:2"),
        &[7; 100],
    ));
    let mut w = PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap();
    w.write_frame_with_orig_len(ts(0), &frame[..frame.len() - 40], frame.len() as u32)
        .unwrap();
    let (got, stats) = decap(&w.into_inner(), DecapConfig::default());
    assert_eq!(got.len(), 1);
    assert!(got[0].truncated);
    assert_eq!(got[0].data, vec![7; 60]);
    assert_eq!(stats.truncated, 1);
}

/// pcapng with an Ethernet interface (µs, the default resolution) and a Linux cooked
/// interface with nanosecond resolution, interleaved, in both byte orders.
#[test]
fn pcapng_two_interfaces_with_different_link_types() {
    let dgrams = sample_datagrams();
    for endianness in [Endianness::Little, Endianness::Big] {
        let mut w = PcapNgWriter::with_endianness(Vec::new(), endianness).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 262_144,
            options: vec![],
        })
        .unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::LINUX_SLL,
            snaplen: 262_144,
            options: vec![InterfaceDescriptionOption::IfTsResol(9)],
        })
        .unwrap();
        let mut want = Vec::new();
        for (i, (s, d, p)) in dgrams.iter().enumerate() {
            let iface = (i % 2) as u32;
            let mut frame = if iface == 0 {
                let mut h = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
                h.extend_from_slice(&ethertype_of(s));
                h
            } else {
                let mut h = vec![0, 0, 0x03, 0x04, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0];
                h.extend_from_slice(&ethertype_of(s));
                h
            };
            frame.extend_from_slice(&ip_packet(*s, *d, p));
            let ns = TS0 + i as i64 * 1_000_001 + 7;
            // pcap-file writes the Duration's nanoseconds as raw units of the
            // interface's resolution: µs on interface 0, ns on interface 1.
            let (units, want_ns) = if iface == 0 {
                (ns / 1000, ns / 1000 * 1000)
            } else {
                (ns, ns)
            };
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: iface,
                timestamp: Duration::from_nanos(units as u64),
                original_len: frame.len() as u32,
                data: frame.into(),
                options: vec![],
            })
            .unwrap();
            want.push(Got {
                frame: i as u64 + 1,
                ts_ns: want_ns,
                src: *s,
                dst: *d,
                transport: Transport::Udp,
                data: p.clone(),
                truncated: false,
            });
        }
        let bytes = w.into_inner();
        let mut r = CaptureReader::new(&bytes[..]).unwrap();
        assert_eq!(r.format(), CaptureFormat::PcapNg);
        let mut linktypes = Vec::new();
        while let Some(f) = r.next_frame() {
            let f = f.unwrap();
            linktypes.push((f.interface, f.linktype));
        }
        assert_eq!(linktypes[..2], [(0, 1), (1, 113)]);
        assert_eq!(
            decap(&bytes, DecapConfig::default()).0,
            want,
            "{endianness:?}"
        );
    }
}

/// Builds the IPv4 fragments of one UDP datagram: (fragment offset in bytes, data).
fn ipv4_fragments(
    src: SocketAddr,
    dst: SocketAddr,
    id: u16,
    payload: &[u8],
    piece: usize,
) -> Vec<Vec<u8>> {
    let whole = ip_packet(src, dst, payload);
    let transport = &whole[20..]; // UDP header + data
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
        panic!("IPv4 only")
    };
    transport
        .chunks(piece)
        .enumerate()
        .map(|(i, chunk)| {
            let mut h = Ipv4Header::new(
                chunk.len() as u16,
                64,
                IpNumber::UDP,
                s.ip().octets(),
                d.ip().octets(),
            )
            .unwrap();
            h.identification = id;
            h.more_fragments = (i + 1) * piece < transport.len();
            h.fragment_offset = IpFragOffset::try_new((i * piece / 8) as u16).unwrap();
            h.header_checksum = h.calc_header_checksum();
            let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
            frame.extend_from_slice(&h.to_bytes());
            frame.extend_from_slice(chunk);
            frame
        })
        .collect()
}

#[test]
fn ipv4_fragments_out_of_order_reassembled_exactly() {
    let src = addr("192.168.1.10:50000");
    let dst = addr("192.168.1.20:7777");
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let frags = ipv4_fragments(src, dst, 0x1234, &payload, 1200);
    assert_eq!(frags.len(), 3);
    let other = addr("192.168.1.30:1");
    let mut w = PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap();
    w.write_frame(ts(0), &frags[2]).unwrap();
    w.write_udp(ts(1), other, dst, b"in between").unwrap();
    w.write_frame(ts(2), &frags[0]).unwrap();
    w.write_frame(ts(3), &frags[1]).unwrap();
    w.write_udp(ts(4), other, dst, b"after").unwrap();
    let (got, stats) = decap(&w.into_inner(), DecapConfig::default());
    let udp = |frame: u64, i: usize, src, data: &[u8]| Got {
        frame,
        ts_ns: ts(i),
        src,
        dst,
        transport: Transport::Udp,
        data: data.to_vec(),
        truncated: false,
    };
    assert_eq!(
        got,
        vec![
            udp(2, 1, other, b"in between"),
            udp(4, 3, src, &payload),
            udp(5, 4, other, b"after"),
        ]
    );
    assert_eq!(
        (
            stats.ip_fragments,
            stats.reassembled,
            stats.reassemblies_dropped,
            stats.udp
        ),
        (3, 1, 0, 3)
    );
}

/// Builds the IPv6 fragments (Ethernet frames) of one UDP datagram.
fn ipv6_fragments(
    src: SocketAddr,
    dst: SocketAddr,
    id: u32,
    payload: &[u8],
    piece: usize,
) -> Vec<Vec<u8>> {
    let whole = ip_packet(src, dst, payload);
    let transport = &whole[40..];
    let n = transport.len().div_ceil(piece);
    transport
        .chunks(piece)
        .enumerate()
        .map(|(i, chunk)| {
            let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xDD];
            let mut ip = whole[..40].to_vec();
            ip[4..6].copy_from_slice(&((8 + chunk.len()) as u16).to_be_bytes());
            ip[6] = 44; // next header: fragment
            frame.extend_from_slice(&ip);
            // RFC 8200: 13-bit offset in 8-byte units, 2 reserved bits, M flag.
            let field = ((i * piece / 8) as u16) << 3 | u16::from(i + 1 < n);
            frame.extend_from_slice(&[17, 0]);
            frame.extend_from_slice(&field.to_be_bytes());
            frame.extend_from_slice(&id.to_be_bytes());
            frame.extend_from_slice(chunk);
            frame
        })
        .collect()
}

#[test]
fn ipv6_fragments_reassembled() {
    let src = addr("[2001:db8::1]:4000");
    let dst = addr("[2001:db8::2]:5000");
    let big: Vec<u8> = (0..2000u32).map(|i| (i * 3) as u8).collect();
    let frags = ipv6_fragments(src, dst, 0xCAFE_F00D, &big, 1232);
    assert_eq!(frags.len(), 2);
    // Tiny fragments: the last one at offset 32 bytes, which etherparse 0.17 alone
    // would take for an unfragmented packet.
    let small = b"forty bytes, in a 32 and a 16 byte piece".to_vec();
    let tiny = ipv6_fragments(src, dst, 7, &small, 32);
    assert_eq!(tiny.len(), 2);
    let mut w = PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap();
    for (i, f) in [&frags[1], &tiny[1], &frags[0], &tiny[0]]
        .into_iter()
        .enumerate()
    {
        w.write_frame(ts(i), f).unwrap();
    }
    let (got, stats) = decap(&w.into_inner(), DecapConfig::default());
    let summary: Vec<_> = got
        .iter()
        .map(|g| (g.frame, g.src, g.dst, g.data.len()))
        .collect();
    assert_eq!(
        summary,
        vec![(3, src, dst, big.len()), (4, src, dst, small.len())],
        "{stats:?}"
    );
    assert!(got[0].data == big && got[1].data == small);
    assert_eq!(
        (
            stats.ip_fragments,
            stats.reassembled,
            stats.malformed_frames
        ),
        (4, 2, 0)
    );
}

#[test]
fn incomplete_reassemblies_expire_and_are_bounded() {
    let dst = addr("10.0.0.2:9");
    let mut w = PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap();
    // 10 datagrams of which only the first fragment arrives.
    for id in 0..10u16 {
        let src = addr(&format!("10.0.0.1:{}", 1000 + id));
        let frags = ipv4_fragments(src, dst, id, &[1; 100], 64);
        w.write_frame(TS0, &frags[0]).unwrap();
    }
    // Then one more, 31 s later: the earlier ones have timed out.
    let frags = ipv4_fragments(addr("10.0.0.1:1"), dst, 99, &[1; 100], 64);
    w.write_frame(TS0 + 31_000_000_000, &frags[0]).unwrap();
    let bytes = w.into_inner();

    let (got, stats) = decap(&bytes, DecapConfig::default());
    assert!(got.is_empty());
    // 10 expired on the late frame, 1 still incomplete at the end.
    assert_eq!((stats.ip_fragments, stats.reassemblies_dropped), (11, 11));

    let config = DecapConfig {
        max_ip_reassemblies: 4,
        ..DecapConfig::default()
    };
    let mut reader = CaptureReader::new(&bytes[..]).unwrap();
    let mut d = Decapsulator::new(config);
    let mut dropped_before_end = 0;
    while let Some(f) = reader.next_frame() {
        d.push(&f.unwrap(), &mut |_| {});
        dropped_before_end = d.stats().reassemblies_dropped;
    }
    assert!(dropped_before_end >= 6, "{dropped_before_end}");
    d.finish(&mut |_| {});
    assert_eq!(d.stats().reassemblies_dropped, 11);
}

/// A TCP conversation: both directions' messages framed, cut into segments, and
/// delivered with a split prefix, out-of-order segments and a duplicate.
struct TcpCase {
    client: SocketAddr,
    server: SocketAddr,
    up: Vec<Vec<u8>>,
    down: Vec<Vec<u8>>,
}

fn prefix(framing: TcpFraming, n: usize) -> Vec<u8> {
    match framing {
        TcpFraming::U16Be => (n as u16).to_be_bytes().to_vec(),
        TcpFraming::U16Le => (n as u16).to_le_bytes().to_vec(),
        TcpFraming::U32Be => (n as u32).to_be_bytes().to_vec(),
        TcpFraming::U32Le => (n as u32).to_le_bytes().to_vec(),
        TcpFraming::None => vec![],
    }
}

fn stream_of(framing: TcpFraming, msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut s = Vec::new();
    for m in msgs {
        s.extend_from_slice(&prefix(framing, m.len()));
        s.extend_from_slice(m);
    }
    s
}

fn tcp_case() -> TcpCase {
    let dgrams = sample_datagrams();
    TcpCase {
        client: addr("10.1.1.1:51000"),
        server: addr("10.1.1.2:7777"),
        up: dgrams.iter().take(6).map(|d| d.2.clone()).collect(),
        down: dgrams.iter().skip(6).map(|d| d.2.clone()).collect(),
    }
}

/// Writes the conversation; returns the capture. The upstream is cut at the given
/// stream offsets and its segments sent in the order given by `order` (an index listed
/// twice is a retransmission); the server answers after the second segment sent.
fn tcp_capture(framing: TcpFraming, case: &TcpCase, cuts: &[usize], order: &[usize]) -> Vec<u8> {
    let up = stream_of(framing, &case.up);
    let down = stream_of(framing, &case.down);
    let (c, s) = (case.client, case.server);
    let isn_c: u32 = 0xFFFF_FF00; // wraps around during the stream
    let isn_s: u32 = 1_000;
    let mut w = PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap();
    let mut t = 0;
    let mut next_ts = || {
        t += 1;
        TS0 + t * 1000
    };
    w.write_tcp(next_ts(), c, s, isn_c, TcpFlags::SYN, &[])
        .unwrap();
    w.write_tcp(next_ts(), s, c, isn_s, TcpFlags::SYN, &[])
        .unwrap();
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(up.len());
    let segs: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
    for (k, &i) in order.iter().enumerate() {
        let (a, b) = segs[i];
        let seq = isn_c.wrapping_add(1).wrapping_add(a as u32);
        w.write_tcp(next_ts(), c, s, seq, TcpFlags::PSH, &up[a..b])
            .unwrap();
        if k == 1 {
            // The server answers in the middle, in two segments.
            let half = down.len() / 2;
            w.write_tcp(next_ts(), s, c, isn_s + 1, TcpFlags::PSH, &down[..half])
                .unwrap();
            w.write_tcp(
                next_ts(),
                s,
                c,
                isn_s + 1 + half as u32,
                TcpFlags::PSH,
                &down[half..],
            )
            .unwrap();
        }
    }
    let fin_c = isn_c.wrapping_add(1).wrapping_add(up.len() as u32);
    w.write_tcp(next_ts(), c, s, fin_c, TcpFlags::FIN, &[])
        .unwrap();
    let fin_s = isn_s + 1 + down.len() as u32;
    w.write_tcp(next_ts(), s, c, fin_s, TcpFlags::FIN, &[])
        .unwrap();
    w.into_inner()
}

#[test]
fn tcp_each_framing_split_prefix_reordered_and_retransmitted() {
    let case = tcp_case();
    for framing in [
        TcpFraming::U16Be,
        TcpFraming::U16Le,
        TcpFraming::U32Be,
        TcpFraming::U32Le,
    ] {
        let p = prefix(framing, 0).len();
        let first = p + case.up[0].len();
        let second = first + p + case.up[1].len();
        let up_len = stream_of(framing, &case.up).len();
        // Cut 1 byte into the second message's prefix, and inside the third message.
        let cuts = [first + 1, second + 5, second + 60, up_len - 30];
        // Segment 2 before 1, segment 1 twice, segment 4 before 3.
        let order = [0, 2, 1, 1, 4, 3, 3];
        let bytes = tcp_capture(framing, &case, &cuts, &order);
        let config = DecapConfig {
            tcp_framing: framing,
            ..DecapConfig::default()
        };
        let (got, stats) = decap(&bytes, config);
        let up: Vec<_> = got.iter().filter(|g| g.src == case.client).collect();
        let down: Vec<_> = got.iter().filter(|g| g.src == case.server).collect();
        assert_eq!(
            up.iter().map(|g| g.data.clone()).collect::<Vec<_>>(),
            case.up,
            "{framing}"
        );
        assert_eq!(
            down.iter().map(|g| g.data.clone()).collect::<Vec<_>>(),
            case.down,
            "{framing}"
        );
        assert!(got
            .iter()
            .all(|g| g.transport == Transport::Tcp && !g.truncated));
        assert!(up.iter().all(|g| g.dst == case.server));
        assert_eq!(stats.tcp, (case.up.len() + case.down.len()) as u64);
        assert_eq!(stats.tcp_retransmitted, 2, "{framing}");
        assert_eq!(stats.tcp_out_of_order, 2, "{framing}");
        assert_eq!(
            (
                stats.tcp_gaps,
                stats.tcp_incomplete_frames,
                stats.tcp_framing_errors
            ),
            (0, 0, 0),
            "{framing}"
        );
        // Frames: 1-2 SYNs, 3 segment 0 (all of message 0 and 1 byte of the next
        // prefix), 4 segment 2, 5-6 the server's answer, 7 segment 1 (message 1).
        assert_eq!((up[0].frame, up[1].frame), (3, 7), "{framing}");
    }
}

#[test]
fn tcp_without_framing_hands_out_in_order_chunks() {
    let case = tcp_case();
    let up = stream_of(TcpFraming::None, &case.up);
    let cuts = [20, 60, 100];
    let bytes = tcp_capture(TcpFraming::None, &case, &cuts, &[0, 2, 1, 1, 3]);
    let (got, stats) = decap(&bytes, DecapConfig::default());
    let chunks: Vec<_> = got
        .iter()
        .filter(|g| g.src == case.client)
        .map(|g| g.data.clone())
        .collect();
    // Segment 0; then 1 and the waiting 2 as they become in order; then 3.
    assert_eq!(
        chunks,
        vec![
            up[..20].to_vec(),
            up[20..60].to_vec(),
            up[60..100].to_vec(),
            up[100..].to_vec()
        ]
    );
    assert_eq!(stats.tcp_retransmitted, 1);
}

#[test]
fn tcp_overlapping_retransmission_and_midstream_start() {
    // No SYN: the capture starts mid-stream. A retransmission overlaps old and new bytes.
    let msgs: Vec<Vec<u8>> = vec![b"first".to_vec(), b"second!".to_vec(), b"third".to_vec()];
    let stream = stream_of(TcpFraming::U16Be, &msgs);
    let (c, s) = (addr("[fd00::1]:1000"), addr("[fd00::2]:2000"));
    let mut w = PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap();
    let base = 77_777u32;
    w.write_tcp(TS0, c, s, base, TcpFlags::NONE, &stream[..4])
        .unwrap();
    w.write_tcp(TS0 + 1, c, s, base + 2, TcpFlags::NONE, &stream[2..12])
        .unwrap();
    w.write_tcp(TS0 + 2, c, s, base + 12, TcpFlags::FIN, &stream[12..])
        .unwrap();
    let config = DecapConfig {
        tcp_framing: TcpFraming::U16Be,
        ..DecapConfig::default()
    };
    let (got, stats) = decap(&w.into_inner(), config);
    let data: Vec<_> = got.iter().map(|g| g.data.clone()).collect();
    assert_eq!(data, msgs);
    assert_eq!(
        got.iter().map(|g| g.frame).collect::<Vec<_>>(),
        vec![2, 3, 3]
    );
    assert_eq!(stats.tcp_retransmitted, 0);
}

#[test]
fn tcp_oversized_prefix_and_unfinished_frame_are_counted() {
    let (c, s) = (addr("10.0.0.1:1"), addr("10.0.0.2:2"));
    let mut w = PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap();
    w.write_tcp(TS0, c, s, 0, TcpFlags::SYN, &[]).unwrap();
    w.write_tcp(
        TS0,
        c,
        s,
        1,
        TcpFlags::NONE,
        &[0, 0, 0, 3, b'a', b'b', b'c', 0xFF, 0xFF, 0xFF, 0xFF],
    )
    .unwrap();
    w.write_tcp(TS0, s, c, 0, TcpFlags::SYN, &[]).unwrap();
    w.write_tcp(TS0, s, c, 1, TcpFlags::NONE, &[0, 0, 0, 9, 1, 2])
        .unwrap();
    let config = DecapConfig {
        tcp_framing: TcpFraming::U32Be,
        max_tcp_frame: 1000,
        ..DecapConfig::default()
    };
    let (got, stats) = decap(&w.into_inner(), config);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, b"abc");
    assert_eq!(
        (stats.tcp_framing_errors, stats.tcp_incomplete_frames),
        (1, 1)
    );
}

#[test]
fn tcp_fin_before_last_data_and_rst_mid_frame() {
    let (c, s) = (addr("10.0.0.1:1"), addr("10.0.0.2:2"));
    let msgs = vec![b"alpha".to_vec(), b"beta".to_vec()];
    let stream = stream_of(TcpFraming::U16Be, &msgs);
    let mut w = PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap();
    w.write_tcp(TS0, c, s, 10, TcpFlags::SYN, &[]).unwrap();
    // The FIN overtakes the last data segment; the stream closes once that arrives.
    w.write_tcp(TS0, c, s, 11 + stream.len() as u32, TcpFlags::FIN, &[])
        .unwrap();
    w.write_tcp(TS0, c, s, 11 + 7, TcpFlags::NONE, &stream[7..])
        .unwrap();
    w.write_tcp(TS0, c, s, 11, TcpFlags::NONE, &stream[..7])
        .unwrap();
    // After the close, a late retransmission is not a new stream.
    w.write_tcp(TS0, c, s, 11, TcpFlags::NONE, &stream[..7])
        .unwrap();
    // The other direction is reset in the middle of a frame.
    w.write_tcp(TS0, s, c, 99, TcpFlags::SYN, &[]).unwrap();
    w.write_tcp(TS0, s, c, 100, TcpFlags::NONE, &[0, 9, 1, 2, 3])
        .unwrap();
    w.write_tcp(TS0, s, c, 105, TcpFlags::RST, &[]).unwrap();
    let config = DecapConfig {
        tcp_framing: TcpFraming::U16Be,
        ..DecapConfig::default()
    };
    let (got, stats) = decap(&w.into_inner(), config);
    let data: Vec<_> = got.iter().map(|g| (g.frame, g.data.clone())).collect();
    assert_eq!(data, vec![(4, msgs[0].clone()), (4, msgs[1].clone())]);
    assert_eq!(
        (
            stats.tcp_retransmitted,
            stats.tcp_incomplete_frames,
            stats.tcp_out_of_order
        ),
        (1, 1, 1)
    );
}

#[test]
fn reassembled_tcp_over_ip_fragments() {
    // A TCP segment that was itself fragmented at the IP layer.
    let (c, s) = (addr("10.0.0.1:1"), addr("10.0.0.2:2"));
    let msg: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
    let mut whole = Vec::new();
    build_ip_tcp(
        &mut whole,
        c,
        s,
        5,
        TcpFlags::NONE,
        &stream_of(TcpFraming::U16Le, std::slice::from_ref(&msg)),
    )
    .unwrap();
    let transport = whole[20..].to_vec();
    let mut w = PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap();
    for (i, chunk) in transport.chunks(1480).enumerate() {
        let mut h = Ipv4Header::new(
            chunk.len() as u16,
            64,
            IpNumber::TCP,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
        )
        .unwrap();
        h.identification = 7;
        h.more_fragments = (i + 1) * 1480 < transport.len();
        h.fragment_offset = IpFragOffset::try_new((i * 1480 / 8) as u16).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        frame.extend_from_slice(&h.to_bytes());
        frame.extend_from_slice(chunk);
        w.write_frame(ts(i), &frame).unwrap();
    }
    let config = DecapConfig {
        tcp_framing: TcpFraming::U16Le,
        ..DecapConfig::default()
    };
    let (got, stats) = decap(&w.into_inner(), config);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, msg);
    assert_eq!((got[0].transport, stats.reassembled), (Transport::Tcp, 1));
}

/// Five UDP frames; returns the file and the byte offset where each record starts.
fn five_frames() -> (Vec<u8>, Vec<u64>) {
    let mut w = PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap();
    let mut offsets = Vec::new();
    for i in 0..5 {
        offsets.push(w.get_ref().len() as u64);
        w.write_udp(
            ts(i),
            addr("127.0.0.1:1000"),
            addr("127.0.0.1:2000"),
            &[i as u8; 50],
        )
        .unwrap();
    }
    (w.into_inner(), offsets)
}

#[test]
fn truncated_file_yields_earlier_frames_then_says_where() {
    let (bytes, offsets) = five_frames();
    // Cut in the middle of the 4th record's data, then inside its 16-byte header.
    for (cut, needed, available) in [
        (offsets[3] as usize + 40, 16 + 92, 40),
        (offsets[3] as usize + 7, 16, 7),
    ] {
        let mut r = CaptureReader::new(&bytes[..cut]).unwrap();
        let mut numbers = Vec::new();
        let err = loop {
            match r.next_frame() {
                Some(Ok(f)) => numbers.push(f.number),
                Some(Err(e)) => break e,
                None => panic!("no error at the cut"),
            }
        };
        assert!(r.next_frame().is_none(), "the reader stops after an error");
        assert_eq!(numbers, vec![1, 2, 3]);
        assert_eq!((err.packet, err.offset), (4, offsets[3]));
        assert!(matches!(
            err.kind,
            CaptureErrorKind::Truncated { needed: n, available: a } if n == needed && a == available
        ));
        assert_eq!(
            err.to_string(),
            format!(
                "capture truncated at packet 4 (byte offset {}): the record needs {needed} bytes but the file ends after {available}",
                offsets[3]
            )
        );
    }
    // A cut exactly between records is a clean end.
    let mut r = CaptureReader::new(&bytes[..offsets[3] as usize]).unwrap();
    let mut n = 0;
    while let Some(f) = r.next_frame() {
        f.unwrap();
        n += 1;
    }
    assert_eq!(n, 3);
}

#[test]
fn truncated_pcapng_says_where() {
    let mut w = PcapNgWriter::with_endianness(Vec::new(), Endianness::Little).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen: 0,
        options: vec![],
    })
    .unwrap();
    let mut offsets = Vec::new();
    for i in 0..3u8 {
        offsets.push(w.get_ref().len() as u64);
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(1),
            original_len: 29,
            data: ip_packet(addr("1.1.1.1:1"), addr("2.2.2.2:2"), &[i]).into(),
            options: vec![],
        })
        .unwrap();
    }
    let bytes = w.into_inner();
    let mut r = CaptureReader::new(&bytes[..bytes.len() - 3]).unwrap();
    assert!(r.next_frame().unwrap().is_ok());
    assert!(r.next_frame().unwrap().is_ok());
    let err = r.next_frame().unwrap().unwrap_err();
    assert_eq!((err.packet, err.offset), (3, offsets[2]));
    assert!(err.to_string().contains("packet 3"), "{err}");
}

#[test]
fn garbage_never_panics() {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (valid, _) = five_frames();
    let mut pcapng = Vec::new();
    {
        let mut w = PcapNgWriter::with_endianness(&mut pcapng, Endianness::Big).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![InterfaceDescriptionOption::IfTsResol(9)],
        })
        .unwrap();
    }
    for round in 0..3000 {
        let len = (rnd() % 600) as usize;
        let mut bytes: Vec<u8> = match round % 3 {
            // A valid header followed by junk, a valid file with bytes flipped, pure junk.
            0 => valid[..24].to_vec(),
            1 => valid.clone(),
            _ => pcapng.clone(),
        };
        if round % 3 == 1 {
            for _ in 0..4 {
                let i = (rnd() as usize) % bytes.len();
                bytes[i] = rnd() as u8;
            }
        } else {
            bytes.extend((0..len).map(|_| rnd() as u8));
        }
        if round % 7 == 0 {
            bytes = (0..len).map(|_| rnd() as u8).collect();
        }
        for framing in [TcpFraming::None, TcpFraming::U16Be] {
            let Ok(mut r) = CaptureReader::new(&bytes[..]) else {
                continue;
            };
            let mut d = Decapsulator::new(DecapConfig {
                tcp_framing: framing,
                ..DecapConfig::default()
            });
            let mut frames = 0;
            while let Some(f) = r.next_frame() {
                match f {
                    Ok(f) => d.push(&f, &mut |_| {}),
                    Err(e) => {
                        assert!(!e.to_string().is_empty());
                        break;
                    }
                }
                frames += 1;
                assert!(frames < 10_000);
            }
            d.finish(&mut |_| {});
        }
    }
}
