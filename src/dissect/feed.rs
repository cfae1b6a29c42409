//! The capture front end shared by `dump`, `check` and `voice`: read the capture, take
//! each frame apart into transport payloads ([`Decapsulator`]) and hand them, in capture
//! order, to a [`Consumer`]. What a consumer does with a payload (locate, track the
//! session, print, check, decode voice) is its own business: the front end never takes
//! a printer, the printer's driver implements [`Consumer`].
//!
//! Two ways to run it, same payloads in the same order:
//! - [`run`]: everything on the calling thread (`dump`, `voice`: their consumers are the
//!   slow side, or hand off to threads of their own);
//! - [`run_batched`]: a reader thread does the reading and decapsulating, which needs
//!   none of the consumer's state, and hands the payloads over in batches (`check`). The
//!   payload bytes are copied into each batch's arena; a fixed number of batches
//!   circulates (bounded channels both ways), so memory stays constant however long the
//!   capture.

use std::io::Read;
use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use crate::capture::{CaptureError, CaptureReader, Decapsulator, Frame, Payload};

/// What consumes the front end's output.
pub trait Consumer {
    /// A frame was read: its capture time, before its payloads. Called by [`run`] only
    /// (the batched front end hands over payloads alone), as is [`Consumer::progress`].
    fn frame(&mut self, _ts_ns: i64) {}
    /// One transport payload, in capture order.
    fn payload(&mut self, p: &Payload<'_>);
    /// A frame's payloads are all out: the frame itself (`dump -w` copies the frames
    /// whose packets were kept). Called by [`run`] only.
    fn frame_done(&mut self, _frame: &Frame<'_>) {}
    /// A frame's payloads are all out; reading is `offset` bytes into the input.
    fn progress(&mut self, _offset: u64) {}
    /// Stop reading now (Ctrl-C or SIGTERM, a failed output): checked before each frame
    /// is read. What was read is still finished.
    fn stopped(&self) -> bool {
        false
    }
}

/// How reading ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The capture is damaged here: everything before it was consumed.
    pub damaged: Option<CaptureError>,
    /// [`Consumer::stopped`] ended the reading early (payloads still waiting in the
    /// decapsulator were handed over all the same).
    pub stopped: bool,
}

/// Runs the whole capture through `decap` into `consumer`, on this thread, then flushes
/// what the decapsulator still holds (TCP data waiting for the end of a frame).
pub fn run<R: Read, C: Consumer>(
    reader: &mut CaptureReader<R>,
    decap: &mut Decapsulator,
    consumer: &mut C,
) -> Outcome {
    let mut damaged = None;
    let mut stopped = false;
    // Checked before each read, so a stop never costs a frame read but not consumed.
    loop {
        if consumer.stopped() {
            stopped = true;
            break;
        }
        let Some(frame) = reader.next_frame() else {
            break;
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                damaged = Some(e);
                break;
            }
        };
        consumer.frame(frame.ts_ns);
        decap.push(&frame, &mut |p| consumer.payload(&p));
        consumer.frame_done(&frame);
        consumer.progress(reader.offset());
    }
    // What was read is finished as at the end of the capture, stopped or not (a
    // consumer whose output failed ignores it).
    decap.finish(&mut |p| consumer.payload(&p));
    Outcome { damaged, stopped }
}

/// Payloads per batch: enough to make the hand-offs cheap.
const BATCH: usize = 1024;
/// A batch is also sent once its arena holds this many bytes (TCP frames can be large).
const BATCH_BYTES: usize = 1 << 20;
/// Batches in circulation: one being filled, one being consumed, some slack.
const BATCHES: usize = 4;

/// Payloads whose bytes sit in one arena: each payload's `data` is empty in the batch,
/// its bytes are `data[range]`.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    items: Vec<(Payload<'static>, Range<usize>)>,
}

/// The reader thread's end: fills batches and sends them on.
struct Filler {
    batch: Batch,
    full: SyncSender<Batch>,
    free: Receiver<Batch>,
    /// The consuming thread is gone (it panicked): stop reading.
    closed: bool,
}

impl Filler {
    fn push(&mut self, p: &Payload<'_>) {
        let start = self.batch.data.len();
        self.batch.data.extend_from_slice(p.data);
        self.batch
            .items
            .push((p.meta(), start..self.batch.data.len()));
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
        // The consumer is the slower side: the reader waits here for every batch, and a
        // parked reader costs the consumer a futex wake per batch (a twentieth of
        // `check`'s time).
        match recv_spin(&self.free) {
            Some(b) => self.batch = b,
            None => self.closed = true,
        }
    }
}

/// As [`run`], with the reading and decapsulating on a thread of its own; the consumer
/// runs on the calling thread, exactly as if it were fed one payload at a time.
/// [`Consumer::frame`] is not called, and [`Consumer::stopped`] is checked per batch.
pub fn run_batched<R: Read + Send, C: Consumer>(
    reader: &mut CaptureReader<R>,
    decap: &mut Decapsulator,
    consumer: &mut C,
) -> Outcome {
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
        let mut stopped = false;
        for mut batch in full_rx {
            if stopped || consumer.stopped() {
                // Dropping the receiver ends the reader at its next hand-off.
                stopped = true;
                break;
            }
            for (meta, bytes) in &batch.items {
                consumer.payload(&Payload {
                    data: &batch.data[bytes.clone()],
                    ..*meta
                });
            }
            batch.data.clear();
            batch.items.clear();
            // The reader may be done already: then nobody needs the batch back.
            let _ = free_tx.send(batch);
        }
        drop(free_tx);
        let damaged = reading
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Outcome { damaged, stopped }
    })
}

/// Receives, spinning for up to `SPIN` before parking (the batched front end and the
/// formatter pool both hand batches over this way): the pipeline thread fills a batch
/// in a few hundred microseconds, and waking a parked thread (a futex wake, an IPI on a
/// VM) cost the pipeline thread more than the whole wait (a tenth of its time). On a
/// single core the spin would only delay the thread it waits for, so it parks at once.
pub(crate) fn recv_spin<T>(rx: &Receiver<T>) -> Option<T> {
    const SPIN: std::time::Duration = std::time::Duration::from_micros(500);
    static CORES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let spin =
        *CORES.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1));
    if !spin {
        return rx.recv().ok();
    }
    let start = std::time::Instant::now();
    loop {
        for _ in 0..64 {
            match rx.try_recv() {
                Ok(v) => return Some(v),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
                Err(std::sync::mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
            }
        }
        if start.elapsed() > SPIN {
            return rx.recv().ok();
        }
    }
}
