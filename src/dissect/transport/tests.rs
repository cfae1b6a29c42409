//! Per-stack tests on datagrams built here byte by byte from the wire layouts:
//! retransmission, reassembly in order, out of order and with a piece lost, the
//! version variants, and random bytes (no panic, every byte accounted for).

use super::*;
use proptest::prelude::*;

/// A real RemoveClient packet (docs/protocol.md; tests/data/vectors) and a longer ClientState-sized blob.
const P1: [u8; 9] = [0x8b, 0xc7, 0x0a, 0x12, 0x34, 0xab, 0xcd, 0x00, 0x01];
const P2: [u8; 9] = [0x8b, 0xc7, 0x0a, 0x12, 0x34, 0xab, 0xcd, 0x00, 0x02];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Packet(u64, usize, u64, Vec<u8>),
    Retransmission(u64, u32, Option<u64>),
    Retransmitted(u64, usize, Vec<u8>, Option<u64>),
    Disconnect(u64),
    Cut(u64, usize, Vec<u8>, usize, CutReason),
    Lost(u32, CutReason),
    Malformed(u64, usize),
}

fn own(e: Event<'_>) -> Got {
    match e {
        Event::Packet(c) => Got::Packet(c.frame, c.offset, c.last_frame, c.bytes.to_vec()),
        Event::Retransmission {
            frame,
            seq,
            original_frame,
        } => Got::Retransmission(frame, seq, original_frame),
        Event::Retransmitted {
            packet,
            original_frame,
        } => Got::Retransmitted(
            packet.frame,
            packet.offset,
            packet.bytes.to_vec(),
            original_frame,
        ),
        Event::Disconnect { frame } => Got::Disconnect(frame),
        Event::Cut {
            frame,
            offset,
            bytes,
            announced,
            reason,
        } => Got::Cut(frame, offset, bytes.to_vec(), announced, reason),
        Event::Lost { units, reason, .. } => Got::Lost(units, reason),
        Event::Malformed { frame, offset, .. } => Got::Malformed(frame, offset),
    }
}

/// Feeds datagrams (frame numbers from 1) and finishes.
fn feed(stack: Stack, dgrams: &[Vec<u8>]) -> (Vec<Got>, TransportStats) {
    let mut d = StackDecoder::new(stack);
    let mut got = vec![];
    for (i, g) in dgrams.iter().enumerate() {
        d.push(i as u64 + 1, i as i64 * 1_000_000, g, &mut |e| {
            got.push(own(e))
        });
    }
    d.finish(dgrams.len() as u64, &mut |e| got.push(own(e)));
    (got, *d.stats())
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

// ---------------------------------------------------------------- Mirror / kcp2k

const COOKIE: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];

/// A Mirror batch: timestamp, then messages (size-prefixed unless `sized` is false).
fn mirror_batch(msgs: &[Vec<u8>], sized: bool) -> Vec<u8> {
    let mut b = 1.25f64.to_le_bytes().to_vec();
    for m in msgs {
        if sized {
            assert!(m.len() <= 240);
            b.push(m.len() as u8);
        }
        b.extend_from_slice(m);
    }
    b
}

fn mirror_msg(id: u16, packet: &[u8]) -> Vec<u8> {
    let mut m = id.to_le_bytes().to_vec();
    m.extend_from_slice(&(packet.len() as u16).to_le_bytes());
    m.extend_from_slice(packet);
    m
}

/// Some other Mirror message (a NetworkPingMessage-like body).
fn mirror_other() -> Vec<u8> {
    let mut m = 0x1234u16.to_le_bytes().to_vec();
    m.extend_from_slice(&[7; 10]);
    m
}

fn kcp_segment(frg: u8, sn: u32, data: &[u8]) -> Vec<u8> {
    let mut s = vec![0, 0, 0, 0, 81, frg, 0x00, 0x10];
    s.extend_from_slice(&77u32.to_le_bytes());
    s.extend_from_slice(&sn.to_le_bytes());
    s.extend_from_slice(&0u32.to_le_bytes());
    s.extend_from_slice(&(data.len() as u32).to_le_bytes());
    s.extend_from_slice(data);
    s
}

fn kcp_ack(sn: u32) -> Vec<u8> {
    let mut s = vec![0, 0, 0, 0, 82, 0, 0x00, 0x10];
    s.extend_from_slice(&77u32.to_le_bytes());
    s.extend_from_slice(&sn.to_le_bytes());
    s.extend_from_slice(&[0; 8]);
    s
}

fn kcp_reliable(cookie: bool, segments: &[Vec<u8>]) -> Vec<u8> {
    let mut d = vec![1];
    if cookie {
        d.extend_from_slice(&COOKIE);
    }
    for s in segments {
        d.extend_from_slice(s);
    }
    d
}

fn kcp_data(batch: &[u8]) -> Vec<u8> {
    let mut m = vec![3];
    m.extend_from_slice(batch);
    m
}

#[test]
fn kcp_unreliable_and_reliable_offsets() {
    let unreliable = {
        let mut d = vec![2];
        d.extend_from_slice(&COOKIE);
        d.push(4);
        d.extend(mirror_batch(
            &[mirror_msg(0xD355, &P1), mirror_other()],
            true,
        ));
        d
    };
    let reliable = kcp_reliable(
        true,
        &[
            kcp_ack(3),
            kcp_segment(
                0,
                0,
                &kcp_data(&mirror_batch(&[mirror_msg(0xD355, &P2)], true)),
            ),
        ],
    );
    let (got, stats) = feed(Stack::MirrorKcp2k, &[unreliable, reliable]);
    assert_eq!(
        got,
        [
            Got::Packet(1, 19, 1, P1.to_vec()),
            Got::Packet(2, 67, 2, P2.to_vec()),
        ]
    );
    assert_eq!(stats.packets, 2);
}

#[test]
fn kcp_retransmission_is_reported_not_yielded() {
    let seg = kcp_segment(
        0,
        5,
        &kcp_data(&mirror_batch(&[mirror_msg(0xD355, &P1)], true)),
    );
    let first = kcp_reliable(true, std::slice::from_ref(&seg));
    let again = kcp_reliable(true, &[kcp_ack(9), seg]);
    let (got, stats) = feed(Stack::MirrorKcp2k, &[first, again]);
    assert_eq!(
        got,
        [
            Got::Packet(1, 43, 1, P1.to_vec()),
            Got::Retransmission(2, 5, Some(1)),
            Got::Retransmitted(2, 67, P1.to_vec(), Some(1)),
        ]
    );
    assert_eq!(
        (
            stats.packets,
            stats.retransmissions,
            stats.retransmitted_packets
        ),
        (1, 1, 1)
    );
}

/// A kcp message cut into three segments with packets straddling the cuts.
fn kcp_fragments() -> (Vec<u8>, Vec<Vec<u8>>) {
    let msgs = [
        mirror_other(),
        mirror_msg(0xD355, &P1),
        mirror_msg(0xD355, &P2),
    ];
    let message = kcp_data(&mirror_batch(&msgs, true));
    // Cut inside P1 and inside P2.
    let c1 = find(&message, &P1) + 4;
    let c2 = find(&message, &P2) + 2;
    let parts = vec![
        message[..c1].to_vec(),
        message[c1..c2].to_vec(),
        message[c2..].to_vec(),
    ];
    (message, parts)
}

#[test]
fn kcp_fragments_in_order_and_out_of_order() {
    let (_, parts) = kcp_fragments();
    let seg = |i: usize| kcp_segment(2 - i as u8, 10 + i as u32, &parts[i]);
    let hdr = 1 + 4 + 24;
    let p1_at = hdr + parts[0].len() - 4;
    let p2_at = hdr + parts[1].len() - 2;
    let want = [
        Got::Packet(1, p1_at, 2, P1.to_vec()),
        Got::Packet(2, p2_at, 3, P2.to_vec()),
    ];
    let in_order: Vec<_> = (0..3).map(|i| kcp_reliable(true, &[seg(i)])).collect();
    let (got, stats) = feed(Stack::MirrorKcp2k, &in_order);
    assert_eq!(got, want);
    assert_eq!(stats.joined, 2);
    // Segments 0, 2, 1: the third is held until the second arrives; same result
    // (frames renumbered: the last piece now comes in frame 2).
    let shuffled = vec![
        kcp_reliable(true, &[seg(0)]),
        kcp_reliable(true, &[seg(2)]),
        kcp_reliable(true, &[seg(1)]),
    ];
    let (got, _) = feed(Stack::MirrorKcp2k, &shuffled);
    assert_eq!(
        got,
        [
            Got::Packet(1, p1_at, 3, P1.to_vec()),
            Got::Packet(3, p2_at, 2, P2.to_vec()),
        ]
    );
}

#[test]
fn kcp_lost_fragment_is_reported() {
    let (_, parts) = kcp_fragments();
    let seg = |i: usize| kcp_segment(2 - i as u8, 10 + i as u32, &parts[i]);
    let dgrams = vec![kcp_reliable(true, &[seg(0)]), kcp_reliable(true, &[seg(2)])];
    let (got, stats) = feed(Stack::MirrorKcp2k, &dgrams);
    let hdr = 1 + 4 + 24;
    let p1_at = hdr + parts[0].len() - 4;
    // At the end the gap (sn 11) is given up; the chain is broken: P1's first four
    // bytes are all there is of it; the third segment starts no new message.
    assert_eq!(
        got,
        [
            Got::Lost(1, CutReason::Gap),
            Got::Cut(1, p1_at, P1[..4].to_vec(), P1.len(), CutReason::Gap),
            Got::Lost(1, CutReason::LostFragment),
        ]
    );
    assert_eq!((stats.packets, stats.cut, stats.lost_units), (0, 1, 2));
}

#[test]
fn kcp_version_variants() {
    // Mirror 2023-06..09: old id with sizes; before: old id without sizes;
    // kcp2k before V1.38: no cookie.
    for (id, sized, cookie) in [
        (0x1974, true, true),
        (0x1974, false, true),
        (0xD355, true, false),
    ] {
        let batch = mirror_batch(&[mirror_msg(id, &P1), mirror_msg(id, &P2)], sized);
        let d = kcp_reliable(cookie, &[kcp_segment(0, 0, &kcp_data(&batch))]);
        let base = if cookie { 43 } else { 39 } - usize::from(!sized);
        let (got, _) = feed(Stack::MirrorKcp2k, &[d]);
        assert_eq!(
            got,
            [
                Got::Packet(1, base, 1, P1.to_vec()),
                Got::Packet(1, base + 13 + usize::from(sized), 1, P2.to_vec()),
            ],
            "{id:x} {sized} {cookie}"
        );
    }
}

#[test]
fn kcp_disconnect_once_and_cut_packet() {
    let disc = [2, 0xde, 0xad, 0xbe, 0xef, 5].to_vec();
    let mut cut = vec![2];
    cut.extend_from_slice(&COOKIE);
    cut.push(4);
    cut.extend(mirror_batch(&[mirror_msg(0xD355, &P1)], true));
    cut.truncate(cut.len() - 3);
    let (got, stats) = feed(Stack::MirrorKcp2k, &[cut, disc.clone(), disc.clone(), disc]);
    assert_eq!(
        got,
        [
            Got::Cut(1, 19, P1[..6].to_vec(), 9, CutReason::Truncated),
            Got::Disconnect(2)
        ]
    );
    assert_eq!((stats.disconnects, stats.repeated_disconnects), (1, 2));
}

// ---------------------------------------------------------------- NGO / UTP

const TOKEN: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

/// An NGO named message carrying a Dissonance packet (type index `ty`).
fn ngo_named(ty: u8, hash: u32, packet: &[u8]) -> Vec<u8> {
    let mut body = u64::from(hash).to_le_bytes().to_vec();
    body.extend_from_slice(&(packet.len() as u32).to_le_bytes());
    body.extend_from_slice(packet);
    let mut m = vec![(ty << 3) | 1];
    let size = (body.len() as u16) << 3 | 2;
    m.extend_from_slice(&size.to_le_bytes());
    m.extend(body);
    m
}

/// An NGO batch of messages (header, messages, zero padding to 8), i32-prefixed.
fn ngo_item(msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut body: Vec<u8> = msgs.concat();
    while (16 + body.len()) % 8 != 0 {
        body.push(0);
    }
    let size = 16 + body.len();
    let mut b = (size as u32).to_le_bytes().to_vec();
    b.extend_from_slice(&0x1160u16.to_le_bytes());
    b.extend_from_slice(&(msgs.len() as u16).to_le_bytes());
    b.extend_from_slice(&(size as u32).to_le_bytes());
    b.extend_from_slice(&[0xAB; 8]);
    b.extend(body);
    b
}

fn utp_unreliable(frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![1];
    d.extend_from_slice(&TOKEN);
    d.push(1);
    d.extend_from_slice(&frag.to_le_bytes());
    d.extend_from_slice(payload);
    d
}

fn utp_reliable(seq: u16, stream: &[u8]) -> Vec<u8> {
    let mut d = vec![1];
    d.extend_from_slice(&TOKEN);
    d.extend_from_slice(&[3, 0, 0, 0, 0]);
    d.extend_from_slice(&seq.to_le_bytes());
    d.extend_from_slice(&0xFFFFu16.to_le_bytes());
    d.extend_from_slice(&[0xFF; 8]);
    d.extend_from_slice(stream);
    d
}

const TO_SERVER: u32 = 0xC5CD_13CB;

#[test]
fn utp_unreliable_offsets_and_type_variants() {
    // NamedMessage is type 11 in NGO 1.11 and 13 in 2.1: both found by the hash.
    let item = ngo_item(&[
        ngo_named(11, TO_SERVER, &P1),
        ngo_named(13, 0x98FF_AC3F, &P2),
    ]);
    let (got, _) = feed(Stack::NgoUtp, &[utp_unreliable(0xC001, &item)]);
    assert_eq!(
        got,
        [
            Got::Packet(1, 47, 1, P1.to_vec()),
            Got::Packet(1, 47 + 9 + 15, 1, P2.to_vec()),
        ]
    );
}

#[test]
fn utp_reliable_stream_split_retransmitted_and_out_of_order() {
    let mut stream = ngo_item(&[ngo_named(11, TO_SERVER, &P1)]);
    stream.extend(ngo_item(&[ngo_named(11, TO_SERVER, &P2)]));
    let cut = find(&stream, &P2) + 3;
    let a = utp_reliable(7, &stream[..cut]);
    let b = utp_reliable(8, &stream[cut..]);
    let p2_at = 26 + cut - 3;
    let (got, stats) = feed(Stack::NgoUtp, &[a.clone(), b.clone(), a.clone()]);
    assert_eq!(
        got,
        [
            Got::Packet(1, 61, 1, P1.to_vec()),
            Got::Packet(1, p2_at, 2, P2.to_vec()),
            Got::Retransmission(3, 7, Some(1)),
            Got::Retransmitted(3, 61, P1.to_vec(), Some(1)),
        ]
    );
    assert_eq!(stats.joined, 1);
    // 8 before 7: held, then both in order.
    let (got, _) = feed(Stack::NgoUtp, &[utp_reliable(6, &ngo_item(&[])), b, a]);
    assert_eq!(
        got,
        [
            Got::Packet(3, 61, 3, P1.to_vec()),
            Got::Packet(3, p2_at, 2, P2.to_vec()),
        ]
    );
}

#[test]
fn utp_lost_reliable_packet_cuts_the_stream() {
    let mut stream = ngo_item(&[ngo_named(11, TO_SERVER, &P1)]);
    let second = ngo_item(&[ngo_named(11, TO_SERVER, &P2)]);
    stream.extend(&second);
    let cut = find(&stream, &P2) + 3;
    let dgrams = [
        utp_reliable(1, &stream[..cut]),
        // seq 2 (the rest of the item) is missing; seq 3 starts a new item.
        utp_reliable(3, &ngo_item(&[ngo_named(11, TO_SERVER, &P1)])),
    ];
    let (got, _) = feed(Stack::NgoUtp, &dgrams);
    assert_eq!(
        got,
        [
            Got::Packet(1, 61, 1, P1.to_vec()),
            Got::Lost(1, CutReason::Gap),
            Got::Cut(1, 26 + cut - 3, P2[..3].to_vec(), 9, CutReason::Gap),
            Got::Packet(2, 61, 2, P1.to_vec()),
        ]
    );
}

#[test]
fn utp_unreliable_fragments() {
    let item = ngo_item(&[ngo_named(11, TO_SERVER, &P1), ngo_named(11, TO_SERVER, &P2)]);
    let cut = find(&item, &P2) + 5;
    let first = utp_unreliable(0x8000 | 4, &item[..cut]);
    let last = utp_unreliable(0x4000 | 5, &item[cut..]);
    let (got, _) = feed(Stack::NgoUtp, &[first.clone(), last.clone()]);
    assert_eq!(
        got,
        [
            Got::Packet(1, 47, 1, P1.to_vec()),
            Got::Packet(1, 12 + cut - 5, 2, P2.to_vec()),
        ]
    );
    // The last fragment alone (its first was lost): nothing, but a lost fragment.
    let (got, _) = feed(Stack::NgoUtp, std::slice::from_ref(&last));
    assert_eq!(got, [Got::Lost(1, CutReason::LostFragment)]);
    // Out of order: the real stage drops the payload; so do we, and say so.
    let (got, _) = feed(Stack::NgoUtp, &[last, first]);
    assert_eq!(
        got,
        [
            Got::Lost(1, CutReason::LostFragment),
            Got::Lost(1, CutReason::LostFragment)
        ]
    );
}

#[test]
fn utp_v1_header_and_disconnect() {
    // 1.x: type 4 | flags (pipeline) | session token u16 | pipeline | 12-byte reliable header
    let item = ngo_item(&[ngo_named(11, TO_SERVER, &P1)]);
    let mut d = vec![4, 2, 0x34, 0x12, 3];
    d.extend_from_slice(&0u16.to_le_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(&1u16.to_le_bytes());
    d.extend_from_slice(&[0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    d.extend(&item);
    let mut disc = vec![2];
    disc.extend_from_slice(&TOKEN);
    let (got, _) = feed(Stack::NgoUtp, &[d]);
    assert_eq!(got, [Got::Packet(1, 17 + 4 + 16 + 15, 1, P1.to_vec())]);
    let (got, _) = feed(Stack::NgoUtp, &[disc.clone(), disc]);
    assert_eq!(got, [Got::Disconnect(1)]);
}

// ---------------------------------------------------------------- FishNet / LiteNetLib

fn fishnet_broadcast(packet: &[u8]) -> Vec<u8> {
    let mut b = vec![0x0C, 0x00, 0x7A, 0xA3];
    // zigzag varints of len+1 and len (both < 64 here)
    b.push(((packet.len() + 1) * 2) as u8);
    b.push((packet.len() * 2) as u8);
    b.extend_from_slice(packet);
    b
}

fn fishnet_bundle(packets: &[&[u8]]) -> Vec<u8> {
    let mut b = 1234u32.to_le_bytes().to_vec();
    b.extend_from_slice(&[0x0E, 0x00, 1, 2, 3, 4]); // a PingPong
    for p in packets {
        b.extend(fishnet_broadcast(p));
    }
    b
}

fn lnl_channeled(seq: u16, bundle: &[u8]) -> Vec<u8> {
    let mut d = vec![1];
    d.extend_from_slice(&seq.to_le_bytes());
    d.push(2);
    d.extend_from_slice(bundle);
    d
}

fn lnl_merged(parts: &[Vec<u8>], merged_prop: u8) -> Vec<u8> {
    let mut d = vec![merged_prop];
    for p in parts {
        d.extend_from_slice(&(p.len() as u16).to_le_bytes());
        d.extend_from_slice(p);
    }
    d
}

#[test]
fn lnl_merged_reliable_unreliable_and_retransmission() {
    let mut unreliable = vec![0];
    unreliable.extend(fishnet_bundle(&[&P2]));
    let reliable = lnl_channeled(40, &fishnet_bundle(&[&P1]));
    let merged = lnl_merged(
        &[vec![2, 0, 0, 2, 0xff, 0xff], reliable.clone(), unreliable],
        12,
    );
    let (got, stats) = feed(Stack::FishNetTugboat, &[merged, reliable]);
    let r_at = 1 + 2 + 6 + 2 + 4 + 4 + 6 + 6;
    assert_eq!(
        got,
        [
            Got::Packet(1, r_at, 1, P1.to_vec()),
            Got::Packet(1, r_at + 9 + 2 + 1 + 4 + 6 + 6, 1, P2.to_vec()),
            Got::Retransmission(2, 40, Some(1)),
            Got::Retransmitted(2, 4 + 4 + 6 + 6, P1.to_vec(), Some(1)),
        ]
    );
    assert_eq!(stats.retransmissions, 1);
}

#[test]
fn lnl_disconnect_and_table_variants() {
    // FishNet's fork: Disconnect 7, Merged 12. Upstream 2026: 8 and 13 (after a
    // connect request with its protocol id telling the tables apart).
    let disc = [7, 1, 2, 3, 4, 5, 6, 7, 8].to_vec();
    let (got, _) = feed(Stack::FishNetTugboat, &[disc.clone(), disc, vec![13]]);
    assert_eq!(got, [Got::Disconnect(1)]);
    let mut req = vec![6];
    req.extend_from_slice(&14u32.to_le_bytes());
    req.extend_from_slice(&[0; 20]);
    let reliable = lnl_channeled(1, &fishnet_bundle(&[&P1]));
    let merged = lnl_merged(&[reliable], 13);
    let disc = [8, 1, 2, 3, 4, 5, 6, 7, 8].to_vec();
    let (got, _) = feed(Stack::FishNetTugboat, &[req, merged, disc]);
    assert_eq!(
        got,
        [
            Got::Packet(2, 3 + 4 + 4 + 6 + 6, 2, P1.to_vec()),
            Got::Disconnect(3)
        ]
    );
}

/// Upstream LiteNetLib fragments of one reliable bundle.
fn lnl_fragments(total: u16) -> (Vec<u8>, Vec<Vec<u8>>) {
    let bundle = fishnet_bundle(&[&P1, &P2]);
    let n = bundle.len().div_ceil(usize::from(total));
    let parts = bundle
        .chunks(n)
        .enumerate()
        .map(|(i, c)| {
            let mut d = vec![0x81];
            d.extend_from_slice(&(100 + i as u16).to_le_bytes());
            d.push(2);
            d.extend_from_slice(&9u16.to_le_bytes());
            d.extend_from_slice(&(i as u16).to_le_bytes());
            d.extend_from_slice(&total.to_le_bytes());
            d.extend_from_slice(c);
            d
        })
        .collect();
    (bundle, parts)
}

#[test]
fn lnl_fragments_in_order_out_of_order_and_lost() {
    let (bundle, parts) = lnl_fragments(3);
    let n = parts[0].len() - 10;
    let at = |p: &[u8]| {
        let i = find(&bundle, p);
        (i / n, 10 + i % n)
    };
    let (f1, o1) = at(&P1);
    let (f2, o2) = at(&P2);
    let (got, _) = feed(Stack::FishNetTugboat, &parts);
    let last = |p: &[u8]| ((find(&bundle, p) + p.len() - 1) / n) as u64 + 1;
    assert_eq!(
        got,
        [
            Got::Packet(f1 as u64 + 1, o1, last(&P1), P1.to_vec()),
            Got::Packet(f2 as u64 + 1, o2, last(&P2), P2.to_vec()),
        ]
    );
    // Reversed order (after seq 99 set the expected sequence): held by sequence,
    // joined when complete.
    let mut rev = vec![lnl_channeled(99, &fishnet_bundle(&[]))];
    rev.extend(parts.iter().rev().cloned());
    let (got, _) = feed(Stack::FishNetTugboat, &rev);
    assert_eq!(
        got.iter().filter(|g| matches!(g, Got::Packet(..))).count(),
        2
    );
    // The middle one lost: gap and lost fragment reported, no packet invented.
    let (got, stats) = feed(Stack::FishNetTugboat, &[parts[0].clone(), parts[2].clone()]);
    assert!(got.contains(&Got::Lost(1, CutReason::Gap)), "{got:?}");
    assert!(
        got.contains(&Got::Lost(1, CutReason::LostFragment)),
        "{got:?}"
    );
    assert_eq!(stats.lost_units, 2);
}

/// FishNet's zigzag varint (`WriteInt32` in FishNet 4).
fn zz(v: i64) -> Vec<u8> {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = vec![];
    loop {
        let b = (u & 0x7F) as u8;
        u >>= 7;
        if u == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// A broadcast too big for one bundle, FishNet-split into `n` pieces on reliable
/// sequence numbers from 10: (the packet, the datagrams).
fn fishnet_split(n: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut packet = P1.to_vec();
    packet.extend((0..3000u32).map(|i| (i % 251) as u8));
    let mut msg = vec![0x0C, 0x00, 0x7A, 0xA3];
    msg.extend(zz(
        packet.len() as i64 + zz(packet.len() as i64).len() as i64
    ));
    msg.extend(zz(packet.len() as i64));
    msg.extend_from_slice(&packet);
    let dgrams = msg
        .chunks(msg.len().div_ceil(n))
        .enumerate()
        .map(|(i, chunk)| {
            let mut bundle = 77u32.to_le_bytes().to_vec();
            bundle.extend_from_slice(&[0x02, 0x00]);
            bundle.extend(zz(n as i64));
            bundle.extend_from_slice(chunk);
            lnl_channeled(10 + i as u16, &bundle)
        })
        .collect();
    (packet, dgrams)
}

#[test]
fn fishnet_split_in_order_out_of_order_and_lost() {
    let (packet, parts) = fishnet_split(3);
    // Channeled 4 + tick 4 + split id 2 + count 1, then the broadcast's 4 + 2 + 2.
    let at = 4 + 4 + 2 + 1 + 4 + 2 + 2;
    let (got, stats) = feed(Stack::FishNetTugboat, &parts);
    assert_eq!(got, [Got::Packet(1, at, 3, packet.clone())]);
    assert_eq!((stats.joined, stats.packets), (1, 1));
    // Out of order (seq 9 sets the expected sequence first): held, joined in order.
    let mut shuffled = vec![lnl_channeled(9, &fishnet_bundle(&[]))];
    shuffled.extend([parts[2].clone(), parts[0].clone(), parts[1].clone()]);
    let (got, _) = feed(Stack::FishNetTugboat, &shuffled);
    assert_eq!(got, [Got::Packet(3, at, 2, packet.clone())]);
    // The middle piece lost: the gap, the packet cut with the bytes of the first
    // piece, the pieces not joined; the last piece is not taken for a new message.
    let (got, stats) = feed(Stack::FishNetTugboat, &[parts[0].clone(), parts[2].clone()]);
    let first = parts[0][at..].to_vec();
    assert_eq!(
        got,
        [
            Got::Lost(1, CutReason::Gap),
            Got::Cut(1, at, first, packet.len(), CutReason::LostFragment),
            Got::Lost(2, CutReason::LostFragment),
        ]
    );
    assert_eq!((stats.packets, stats.cut), (0, 1));
    // The capture ends before the last piece: reported unfinished.
    let (got, _) = feed(Stack::FishNetTugboat, &parts[..2]);
    assert!(
        matches!(
            got[..],
            [
                Got::Cut(1, _, _, _, CutReason::Unfinished),
                Got::Lost(1, CutReason::Unfinished)
            ]
        ),
        "{got:?}"
    );
}

// ---------------------------------------------------------------- detection, robustness

#[test]
fn detector_settles_on_handshakes_and_steady_traffic() {
    let mut d = Detector::default();
    assert_eq!(
        d.observe(b"UTP\x01\x01\x7e\xc2\x73\x78\xa6\x61\xc9\x35"),
        Some((Stack::NgoUtp, Confidence::High))
    );
    let mut d = Detector::default();
    let mut u = vec![2];
    u.extend_from_slice(&COOKIE);
    u.push(4);
    u.extend(mirror_batch(&[mirror_msg(0xD355, &P1)], true));
    for i in 0..4 {
        let r = d.observe(&u);
        assert_eq!(r.is_some(), i == 3);
    }
    assert_eq!(d.decided(), Some((Stack::MirrorKcp2k, Confidence::Medium)));
    // Plain Dissonance never looks like a stack.
    let mut d = Detector::default();
    for _ in 0..40 {
        assert_eq!(d.observe(&P1), None);
    }
    assert!(!d.undecided());
}

proptest! {
    /// Random datagrams, and valid ones with random bytes changed: no panic, and
    /// every yielded packet lies inside the datagrams fed.
    #[test]
    fn random_bytes_never_panic(
        dgrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..20),
        stack in 0usize..3,
        first in 0u8..16,
    ) {
        let stack = Stack::ALL[stack];
        let mut d = StackDecoder::new(stack);
        let mut n = 0u64;
        for (i, g) in dgrams.iter().enumerate() {
            let mut g = g.clone();
            if let Some(b) = g.first_mut() {
                *b = if *b < 128 { first } else { *b };
            }
            let mut bad = 0;
            d.push(i as u64 + 1, i as i64, &g, &mut |e| {
                if let Event::Packet(c) = e {
                    bad += u32::from(c.frame < 1 || c.last_frame < c.frame);
                    n += 1;
                }
            });
            prop_assert_eq!(bad, 0);
            sniff(&g);
        }
        d.finish(dgrams.len() as u64, &mut |_| {});
        prop_assert_eq!(d.stats().packets, n);
    }

    #[test]
    fn mutated_valid_datagrams_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let (_, kcp) = kcp_fragments();
        let mut stream = ngo_item(&[ngo_named(11, TO_SERVER, &P1)]);
        stream.extend(ngo_item(&[ngo_named(11, TO_SERVER, &P2)]));
        let (_, lnl) = lnl_fragments(2);
        let cases: Vec<(Stack, Vec<Vec<u8>>)> = vec![
            (Stack::MirrorKcp2k, (0..3).map(|i| kcp_reliable(true, &[kcp_segment(2 - i as u8, i as u32, &kcp[i])])).collect()),
            (Stack::NgoUtp, vec![utp_reliable(1, &stream[..20]), utp_reliable(2, &stream[20..])]),
            (Stack::FishNetTugboat, lnl),
        ];
        for (stack, mut dgrams) in cases {
            for &(at, v) in &flips {
                let g = at % dgrams.len();
                let len = dgrams[g].len();
                dgrams[g][at % len] = v;
            }
            let g = cut % dgrams.len();
            let keep = cut % (dgrams[g].len() + 1);
            dgrams[g].truncate(keep);
            let _ = feed(stack, &dgrams);
        }
    }
}
