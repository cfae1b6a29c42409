//! A whole capture through the engine on two threads. Reading the file and taking the
//! frames apart (pcap records, IP reassembly, TCP framing) needs none of the engine's
//! state, so a reader thread does it and hands the transport payloads over in batches;
//! the calling thread runs the [`Checker`] on them in capture order, exactly as if it
//! were fed one payload at a time. The payload bytes are copied into each batch's
//! arena; a fixed number of batches circulates (bounded channels both ways), so memory
//! stays constant however long the capture.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use super::{Checker, Config, Report};
use crate::capture::{CaptureError, CaptureReader, DecapConfig, Decapsulator, Payload, Transport};
use crate::dissect::pipeline::Datagram;

/// Payloads per batch: enough to make the hand-offs cheap.
const BATCH: usize = 1024;
/// A batch is also sent once its arena holds this many bytes (TCP frames can be large).
const BATCH_BYTES: usize = 1 << 20;
/// Batches in circulation: one being filled, one being checked, some slack.
const BATCHES: usize = 4;

struct Item {
    number: u64,
    ts_ns: i64,
    src: SocketAddr,
    dst: SocketAddr,
    tcp: bool,
    bytes: Range<usize>,
}

#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    items: Vec<Item>,
}

/// The reader thread's end: fills batches and sends them on.
struct Filler {
    batch: Batch,
    full: SyncSender<Batch>,
    free: Receiver<Batch>,
    /// The engine thread is gone (it panicked): stop reading.
    closed: bool,
}

impl Filler {
    fn push(&mut self, p: &Payload<'_>) {
        let start = self.batch.data.len();
        self.batch.data.extend_from_slice(p.data);
        self.batch.items.push(Item {
            number: p.frame_number,
            ts_ns: p.ts_ns,
            src: p.src,
            dst: p.dst,
            tcp: p.transport == Transport::Tcp,
            bytes: start..self.batch.data.len(),
        });
        if self.batch.items.len() >= BATCH || self.batch.data.len() >= BATCH_BYTES {
            self.send();
        }
    }

    fn send(&mut self) {
        if self.batch.items.is_empty() || self.closed {
            return;
        }
        let full = std::mem::take(&mut self.batch);
        if self.full.send(full).is_err() {
            self.closed = true;
            return;
        }
        // The engine is the slower side: the reader waits here for every batch, and a
        // parked reader costs the engine a futex wake per batch (a twentieth of its time).
        match crate::output::fmtpool::recv_spin(&self.free) {
            Some(b) => self.batch = b,
            None => self.closed = true,
        }
    }
}

/// Runs a whole capture through the engine: the pipeline of `dump`, with the checker
/// as its consumer. Returns the report and, for a damaged capture, the error that
/// stopped reading (everything before it was checked).
pub fn check_capture<R: std::io::Read + Send>(
    reader: &mut CaptureReader<R>,
    decap: DecapConfig,
    config: Config,
) -> (Report, Option<CaptureError>) {
    let (full_tx, full_rx) = sync_channel::<Batch>(BATCHES);
    let (free_tx, free_rx) = sync_channel::<Batch>(BATCHES);
    for _ in 1..BATCHES {
        // Cannot fail: the receiver is alive and the channel has room for all.
        let _ = free_tx.send(Batch::default());
    }
    std::thread::scope(|s| {
        let reading = s.spawn(move || {
            let mut filler = Filler {
                batch: Batch::default(),
                full: full_tx,
                free: free_rx,
                closed: false,
            };
            let mut decap = Decapsulator::new(decap);
            let mut damaged = None;
            while let Some(frame) = reader.next_frame() {
                if filler.closed {
                    break;
                }
                match frame {
                    Ok(f) => decap.push(&f, &mut |p| filler.push(&p)),
                    Err(e) => {
                        damaged = Some(e);
                        break;
                    }
                }
            }
            decap.finish(&mut |p| filler.push(&p));
            filler.send();
            damaged
        });
        let mut checker = Checker::new(config);
        for mut batch in full_rx {
            for it in &batch.items {
                checker.push(&Datagram {
                    number: it.number,
                    ts_ns: it.ts_ns,
                    src: it.src,
                    dst: it.dst,
                    tcp: it.tcp,
                    data: &batch.data[it.bytes.clone()],
                });
            }
            batch.data.clear();
            batch.items.clear();
            // The reader may be done already: then nobody needs the batch back.
            let _ = free_tx.send(batch);
        }
        let damaged = reading
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (checker.finish(), damaged)
    })
}
