//! The dissecting front end every consumer of payloads shares (`dump`, `sniff`, `proxy`
//! and `replay` through the [`Dissector`](super::pipeline::Dissector), `check`'s engine,
//! `voice`'s extractor): locate the packets in a payload, let the session tracker see
//! each one, and handle the transport's goodbye and a game stack's disconnect. What is done with each packet is the
//! [`PacketSink`]'s business: a core never takes a printer.

use crate::capture::{Payload, Transport};
use crate::dissect::locate::{Classified, FlowKey, Found, Locator};
use crate::dissect::session::{Direction, Tracker};

/// What consumes the front end's packets. The sink owns the session [`Tracker`] (its
/// state is the sink's to read between packets); the front end feeds it.
pub trait PacketSink {
    fn tracker(&mut self) -> &mut Tracker;
    /// A packet, before the tracker sees it (`check` judges it against the session as it
    /// was).
    #[inline]
    fn before(&mut self, _d: &Payload<'_>, _found: &Found<'_>) {}
    /// A packet, after the tracker saw it (a malformed one too: the tracker only gives it
    /// its direction); `index` is its position among the packets of the payload.
    /// `found` by reference: a packet is large, and no sink keeps it.
    fn packet(&mut self, d: &Payload<'_>, found: &Found<'_>, index: usize, direction: Direction);
    /// The transport's goodbye, after the tracker saw it.
    #[inline]
    fn bye(&mut self, _d: &Payload<'_>) {}
    /// A game stack's own disconnect, after the tracker saw it.
    #[inline]
    fn transport_disconnect(&mut self, _d: &Payload<'_>) {}
    /// A payload with no Dissonance packet in it; `locator` knows the flows seen so far.
    #[inline]
    fn not_dissonance(&mut self, _d: &Payload<'_>, _locator: &Locator) {}
}

/// Runs one payload through the locator and the sink's tracker into the sink.
#[inline]
pub fn dissect(locator: &mut Locator, d: &Payload<'_>, sink: &mut impl PacketSink) -> Classified {
    let mut index = 0;
    let key = FlowKey::of(d);
    let class = locator.locate_at(key, d.frame_number, d.ts_ns, d.data, |found| {
        packet(sink, d, found, index);
        index += 1;
    });
    match class {
        Classified::Bye => {
            sink.tracker().observe_bye(d.ts_ns, d.src);
            sink.bye(d);
        }
        Classified::TransportDisconnect => {
            sink.tracker()
                .observe_transport_disconnect(d.ts_ns, d.src, d.dst);
            sink.transport_disconnect(d);
        }
        Classified::NotDissonance => sink.not_dissonance(d, locator),
        Classified::Cut | Classified::Dissonance(_) => {}
    }
    class
}

/// The end of the input, after payload `number` at `ts_ns`: the game-stack decoders
/// give up what they still hold. Packets held behind a gap go to the sink as found in
/// an empty payload of their flow at that point (not the first of it: no datagram bytes
/// to count); incomplete ones become the locator's notes.
pub fn finish(locator: &mut Locator, number: u64, ts_ns: i64, sink: &mut impl PacketSink) {
    locator.finish(number, |key, found| {
        let d = Payload {
            frame_number: number,
            ts_ns,
            src: key.src,
            dst: key.dst,
            transport: if key.tcp {
                Transport::Tcp
            } else {
                Transport::Udp
            },
            data: &[],
            truncated: false,
        };
        packet(sink, &d, found, 1);
    });
}

/// One packet found in `d`: the sink sees it before and after the tracker.
#[inline]
fn packet(sink: &mut impl PacketSink, d: &Payload<'_>, found: Found<'_>, index: usize) {
    sink.before(d, &found);
    let direction = match &found.result {
        Ok(p) => sink.tracker().observe(d.ts_ns, d.src, d.dst, p),
        // The tracker notes what the real server's reader would throw on (the likely
        // cause of a restart) and gives the packet its direction.
        Err(e) => sink.tracker().observe_undecoded(
            d.ts_ns,
            d.frame_number,
            d.src,
            d.dst,
            found.bytes,
            Some(e),
        ),
    };
    sink.packet(d, &found, index, direction);
}
