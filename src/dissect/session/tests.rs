//! The tracker on hand-made packets.

use super::*;

/// The same session, clients, names, rooms, events and history with and without the
/// per-client statistics, on the real three-friends capture; only the stats differ.
#[test]
fn without_stats_tracks_the_same_session() {
    use crate::capture::{CaptureReader, DecapConfig, Decapsulator};
    use crate::dissect::locate::{FlowKey, Locator, PayloadMode};
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/captures/three-friends.pcap"
    );
    let mut reader = CaptureReader::open(path).unwrap();
    let mut decap = Decapsulator::new(DecapConfig::default());
    let mut locator = Locator::new(PayloadMode::Auto);
    let (mut full, mut lite) = (Tracker::new(), Tracker::without_stats());
    let (mut full_events, mut lite_events) = (Vec::new(), Vec::new());
    while let Some(frame) = reader.next_frame() {
        decap.push(&frame.unwrap(), &mut |p| {
            let key = FlowKey {
                src: p.src,
                dst: p.dst,
                tcp: false,
            };
            locator.locate(key, p.data, |found| {
                if let Ok(packet) = &found.result {
                    for (t, events) in
                        [(&mut full, &mut full_events), (&mut lite, &mut lite_events)]
                    {
                        t.observe(p.ts_ns, p.src, p.dst, packet);
                        t.count_bytes(p.src, p.data.len());
                        while let Some(e) = t.poll_event() {
                            events.push(e);
                        }
                    }
                }
            });
        });
    }
    assert!(full_events.len() > 5);
    assert_eq!(full_events, lite_events);
    let sessions = |t: &Tracker| format!("{:?}", t.sessions().collect::<Vec<_>>());
    assert_eq!(sessions(&full), sessions(&lite));
    let clients = |t: &Tracker| {
        t.clients()
            .map(|c| {
                format!(
                    "{:?}",
                    (
                        c.session,
                        c.id,
                        &c.name,
                        c.codec,
                        c.addr,
                        c.joined_ns,
                        c.left_ns,
                        &c.rooms
                    )
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(clients(&full), clients(&lite));
    assert_eq!(full.membership_history(), lite.membership_history());
    assert_eq!(full.rooms(), lite.rooms());
    assert_eq!(full.current_session, lite.current_session);
    assert!(full
        .clients()
        .any(|c| c.stats.voice_frames > 0 && c.stats.bytes_sent > 0));
    assert!(lite
        .clients()
        .all(|c| c.stats.voice_frames == 0 && c.stats.bytes_sent == 0 && c.stats.texts == 0));
}

#[test]
fn seq_window_counts_each_frame_once() {
    let mut w = SeqWindow::default();
    assert!(w.insert(10));
    assert!(!w.insert(10));
    assert!(w.insert(12));
    assert!(w.insert(11));
    assert!(!w.insert(11));
    assert!(w.insert(65535u16.wrapping_add(20)));
}
