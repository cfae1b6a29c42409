//! JSON records formatted on worker threads, written in capture order by a writer thread.
//!
//! Formatting the JSON schema is most of what `dump --format ndjson` does, and it needs
//! nothing but the packet bytes, its capture metadata and the names known at that point.
//! So the pipeline thread (read, decapsulate, locate, decode, track) copies those into
//! batches; batch *i* goes to worker *i mod W*, which decodes the packet again (cheap) and
//! formats it with a snapshot of the tracker's names; the writer takes the workers' output
//! in batch order. A fixed number of batches circulates, so memory stays constant, and a
//! slow consumer (a pipe to `jq`) holds everyone back instead of growing a queue.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::record::{record_json_cached_voice, record_json_parts, Head, Record};
use crate::capture::SharedMap;
use crate::codec::Packet;
use crate::dissect::session::{NameTable, Tracker};

/// Records per batch: large enough to amortise the hand-offs, small enough to keep the
/// output flowing to a live consumer.
const BATCH: usize = 1024;
/// Most name snapshots one batch holds (see [`Pool::record`]).
const NAMES_PER_BATCH: usize = 4;

struct Meta {
    head: Head,
    session: Option<u32>,
    /// Index into [`Batch::names`].
    names: usize,
    sep: &'static [u8],
}

enum Item {
    /// A record whose packet bytes were copied into [`Batch::data`].
    Record(Meta, std::ops::Range<usize>),
    /// A record whose packet bytes are this range of the mapped capture file.
    Mapped(Meta, std::ops::Range<usize>),
    /// Already formatted bytes (events, the array's brackets).
    Raw(std::ops::Range<usize>),
}

#[derive(Default)]
struct Batch {
    seq: u64,
    data: Vec<u8>,
    items: Vec<Item>,
    names: Vec<Arc<NameTable>>,
}

impl Batch {
    fn clear(&mut self) {
        self.data.clear();
        self.items.clear();
        self.names.clear();
    }
}

struct Done {
    seq: u64,
    out: Vec<u8>,
}

pub struct Pool {
    jobs: Vec<SyncSender<Batch>>,
    free: Receiver<Batch>,
    cur: Batch,
    next_seq: u64,
    names_gen: Option<u64>,
    names: Arc<NameTable>,
    failed: Arc<AtomicBool>,
    error: Arc<Mutex<Option<io::Error>>>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
    map: Option<SharedMap>,
}

impl Pool {
    /// `map`: the mapped capture file, when the records' bytes come from it; they are
    /// then not copied into the batches but read in place by the workers.
    pub fn new(
        out: Box<dyn Write + Send>,
        workers: usize,
        payload_hex: bool,
        map: Option<SharedMap>,
    ) -> Pool {
        let (free_tx, free) = sync_channel::<Batch>(2 * workers + 2);
        for _ in 0..2 * workers + 1 {
            free_tx.send(Batch::default()).expect("channel has room");
        }
        let failed = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let mut jobs = Vec::new();
        let mut handles = Vec::new();
        let writer = if workers == 1 {
            // One worker (two cores): it writes its own output, in order by construction.
            // A separate writer thread would be a third busy thread on two cores, and its
            // wake-ups preempted the pipeline thread.
            let (job_tx, job_rx) = sync_channel::<Batch>(2);
            let free_tx = free_tx.clone();
            let sink = Sink::Direct {
                out,
                failed: failed.clone(),
                error: error.clone(),
                buf: Vec::new(),
            };
            let map = map.clone();
            handles.push(std::thread::spawn(move || {
                worker(job_rx, sink, free_tx, payload_hex, map)
            }));
            jobs.push(job_tx);
            None
        } else {
            let mut results = Vec::new();
            for _ in 0..workers {
                let (job_tx, job_rx) = sync_channel::<Batch>(2);
                let (done_tx, done_rx) = sync_channel::<Done>(2);
                // Output buffers go back to the worker that filled them.
                let (back_tx, back_rx) = sync_channel::<Vec<u8>>(4);
                let free_tx = free_tx.clone();
                let sink = Sink::Ordered {
                    done: done_tx,
                    back: back_rx,
                    spare: Vec::new(),
                };
                let map = map.clone();
                handles.push(std::thread::spawn(move || {
                    worker(job_rx, sink, free_tx, payload_hex, map)
                }));
                jobs.push(job_tx);
                results.push((done_rx, back_tx));
            }
            let (failed, error) = (failed.clone(), error.clone());
            Some(std::thread::spawn(move || {
                writer(out, results, failed, error)
            }))
        };
        Pool {
            jobs,
            free,
            cur: Batch::default(),
            next_seq: 0,
            names_gen: None,
            names: Arc::new(NameTable::default()),
            failed,
            error,
            workers: handles,
            writer,
            map,
        }
    }

    fn check(&self) -> io::Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(self.take_error());
        }
        Ok(())
    }

    fn take_error(&self) -> io::Error {
        self.error
            .lock()
            .ok()
            .and_then(|mut e| e.take())
            .unwrap_or_else(|| io::Error::other("the output thread stopped"))
    }

    pub fn record(
        &mut self,
        r: &Record<'_, '_>,
        tracker: &Tracker,
        session: Option<u32>,
        sep: &'static [u8],
    ) -> io::Result<()> {
        if self.names_gen != Some(tracker.names_generation()) {
            self.names_gen = Some(tracker.names_generation());
            self.names = tracker.name_table();
        }
        // Records already in the batch keep the snapshot they were given.
        let current = self.cur.names.last();
        if current.is_none_or(|n| !Arc::ptr_eq(n, &self.names)) {
            // A few snapshots per batch at most: each one held makes the tracker's next
            // change copy its maps, so memory would grow with joins x clients.
            if self.cur.names.len() >= NAMES_PER_BATCH {
                self.send()?;
            }
            self.cur.names.push(self.names.clone());
        }
        let in_map = self.map.as_ref().and_then(|m| {
            let base = m.as_ptr() as usize;
            let at = (r.bytes.as_ptr() as usize).checked_sub(base)?;
            (at + r.bytes.len() <= m.len()).then_some(at..at + r.bytes.len())
        });
        let meta = Meta {
            head: r.head,
            session,
            names: self.cur.names.len() - 1,
            sep,
        };
        let item = match in_map {
            Some(range) => Item::Mapped(meta, range),
            None => {
                let start = self.cur.data.len();
                self.cur.data.extend_from_slice(r.bytes);
                Item::Record(meta, start..self.cur.data.len())
            }
        };
        self.cur.items.push(item);
        self.maybe_send()
    }

    pub fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let start = self.cur.data.len();
        self.cur.data.extend_from_slice(bytes);
        self.cur.items.push(Item::Raw(start..self.cur.data.len()));
        self.maybe_send()
    }

    fn maybe_send(&mut self) -> io::Result<()> {
        if self.cur.items.len() >= BATCH {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> io::Result<()> {
        self.check()?;
        let Ok(mut next) = self.free.recv() else {
            return Err(self.take_error());
        };
        next.clear();
        let mut batch = std::mem::replace(&mut self.cur, next);
        batch.seq = self.next_seq;
        let w = (self.next_seq % self.jobs.len() as u64) as usize;
        self.next_seq += 1;
        if self.jobs[w].send(batch).is_err() {
            return Err(self.take_error());
        }
        Ok(())
    }

    /// Sends what is left, waits for everything to be written and flushed.
    pub fn finish(mut self) -> io::Result<()> {
        let sent = if self.cur.items.is_empty() {
            Ok(())
        } else {
            self.send()
        };
        self.jobs.clear(); // workers end when their queue closes
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        sent?;
        self.check()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs.clear();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Where a worker's formatted batches go.
enum Sink {
    /// Straight to the output (the only worker).
    Direct {
        out: Box<dyn Write + Send>,
        failed: Arc<AtomicBool>,
        error: Arc<Mutex<Option<io::Error>>>,
        buf: Vec<u8>,
    },
    /// To the writer thread, which restores batch order; buffers come back on `back`.
    Ordered {
        done: SyncSender<Done>,
        back: Receiver<Vec<u8>>,
        spare: Vec<Vec<u8>>,
    },
}

impl Sink {
    fn buffer(&mut self) -> Vec<u8> {
        let mut out = match self {
            Sink::Direct { buf, .. } => std::mem::take(buf),
            Sink::Ordered { back, spare, .. } => {
                while let Ok(b) = back.try_recv() {
                    spare.push(b);
                }
                spare.pop().unwrap_or_default()
            }
        };
        out.clear();
        out
    }

    /// False when the output is gone and the worker should stop.
    fn put(&mut self, seq: u64, out: Vec<u8>) -> bool {
        match self {
            Sink::Direct {
                out: w,
                failed,
                error,
                buf,
            } => {
                if !failed.load(Ordering::Relaxed) {
                    if let Err(e) = w.write_all(&out) {
                        fail(failed, error, e);
                    }
                }
                *buf = out;
                true
            }
            Sink::Ordered { done, .. } => done.send(Done { seq, out }).is_ok(),
        }
    }

    fn finish(self) {
        if let Sink::Direct {
            mut out,
            failed,
            error,
            ..
        } = self
        {
            if !failed.load(Ordering::Relaxed) {
                if let Err(e) = out.flush() {
                    fail(&failed, &error, e);
                }
            }
        }
    }
}

fn fail(failed: &AtomicBool, error: &Mutex<Option<io::Error>>, e: io::Error) {
    if let Ok(mut slot) = error.lock() {
        *slot = Some(e);
    }
    failed.store(true, Ordering::Relaxed);
}

fn worker(
    jobs: Receiver<Batch>,
    mut sink: Sink,
    free: SyncSender<Batch>,
    payload_hex: bool,
    map: Option<SharedMap>,
) {
    let map: &[u8] = map.as_deref().map_or(&[], |m| m);
    while let Some(batch) = crate::dissect::feed::recv_spin(&jobs) {
        let mut out = sink.buffer();
        for item in &batch.items {
            match item {
                Item::Raw(range) => out.extend_from_slice(&batch.data[range.clone()]),
                Item::Record(m, range) | Item::Mapped(m, range) => {
                    let bytes = match item {
                        Item::Mapped(..) => &map[range.clone()],
                        _ => &batch.data[range.clone()],
                    };
                    out.extend_from_slice(m.sep);
                    let names = batch.names[m.names].names(m.session);
                    // Most records are voice frames whose text is cached: no decode then.
                    if payload_hex || !record_json_cached_voice(&mut out, &m.head, bytes, &names) {
                        // Decoding is deterministic: the same bytes give the packet the
                        // pipeline thread saw.
                        let result = Packet::decode(bytes);
                        record_json_parts(&mut out, &m.head, bytes, &result, &names, payload_hex);
                    }
                    if m.sep.is_empty() {
                        out.push(b'\n');
                    }
                }
            }
        }
        let seq = batch.seq;
        if free.send(batch).is_err() || !sink.put(seq, out) {
            return;
        }
    }
    sink.finish();
}

fn writer(
    mut out: Box<dyn Write + Send>,
    results: Vec<(Receiver<Done>, SyncSender<Vec<u8>>)>,
    failed: Arc<AtomicBool>,
    error: Arc<Mutex<Option<io::Error>>>,
) {
    let mut seq = 0u64;
    let mut ok = true;
    loop {
        let (rx, back) = &results[(seq % results.len() as u64) as usize];
        let Ok(done) = rx.recv() else { break };
        debug_assert_eq!(done.seq, seq);
        seq += 1;
        if ok {
            if let Err(e) = out.write_all(&done.out) {
                ok = false;
                fail(&failed, &error, e);
            }
        }
        let _ = back.try_send(done.out);
    }
    if ok {
        if let Err(e) = out.flush() {
            fail(&failed, &error, e);
        }
    }
}
