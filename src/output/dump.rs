//! `dump` as a library call: a capture through the shared front end
//! ([`crate::dissect::feed`]) into the [`Dissector`], printed to standard output, then
//! the `--summary` and `--flows` tables. The printer's driver is the front end's
//! consumer; the dissector never sees a terminal.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use indicatif::ProgressBar;

use super::{summary, Format, Printer, View};
use crate::capture::{CaptureError, CaptureReader, Decapsulator, Frame, FrameSink, Payload};
use crate::dissect::feed::{self, Consumer};
use crate::dissect::pipeline::Dissector;

/// What `dump` prints.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    pub view: View,
    /// Only the summary tables: sessions, clients, rooms, per-client counts.
    pub summary: bool,
    /// Only how Dissonance was detected in each flow.
    pub flows: bool,
    /// Flush after every line (a capture on a pipe or FIFO wants it: records are printed
    /// as they arrive).
    pub line_buffered: bool,
    /// `-w`: write the frames holding the selected packets here, unchanged (pcapng when
    /// the name ends in .pcapng, else pcap; `-` for standard output); nothing is printed.
    pub write: Option<PathBuf>,
}

/// Feeds the dissector and, when packets are wanted, the printer; the first write error
/// stops the reading.
struct Printing<'a, W: Write> {
    dissector: &'a mut Dissector,
    printer: Option<&'a mut Printer<W>>,
    io: io::Result<()>,
    progress: Option<ProgressBar>,
    /// `-w`.
    frames: Option<FrameSink>,
}

impl<W: Write> Consumer for Printing<'_, W> {
    fn payload(&mut self, p: &Payload<'_>) {
        self.dissector
            .push_payload(p, self.printer.as_deref_mut(), &mut self.io);
    }
    fn frame_done(&mut self, frame: &Frame<'_>) {
        if std::mem::take(&mut self.dissector.frame_kept) && self.io.is_ok() {
            if let Some(sink) = &mut self.frames {
                self.io = sink.write(frame);
            }
        }
    }
    fn progress(&mut self, offset: u64) {
        if let Some(pb) = &self.progress {
            pb.set_position(offset);
        }
    }
    /// A failed write, Ctrl-C/SIGTERM or `-c` reached: what was read is still printed in
    /// full.
    fn stopped(&self) -> bool {
        self.io.is_err() || self.dissector.done() || crate::sys::signals::requested().is_some()
    }
}

/// How a dump ended (an output error is the call's error instead).
#[derive(Debug)]
pub struct Dumped {
    /// The error that stopped the reading of a damaged capture (everything before it
    /// was printed).
    pub damaged: Option<CaptureError>,
    /// The capture held no Dissonance packet: what it held and what to try.
    pub nothing_found: Option<String>,
}

/// Dumps a whole capture to standard output (`size`, when known, drives the progress
/// bar). Returns how it ended ([`Dumped`]); an output error (a closed pipe, too) ends the dump at once.
/// Ctrl-C or SIGTERM ([`crate::sys::signals`], installed by the caller) stops the
/// reading: what was read is printed as at the end of the capture.
pub fn dump<R: Read>(
    reader: &mut CaptureReader<R>,
    size: Option<u64>,
    opts: &DumpOptions,
) -> io::Result<Dumped> {
    let view = &opts.view;
    let packets_wanted = !opts.summary && !opts.flows && opts.write.is_none();
    let frames =
        match &opts.write {
            Some(p) => Some(FrameSink::create(p).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot write {}: {e}", p.display()))
            })?),
            None => None,
        };
    // JSON formatting is most of the work: a formatter per core the pipeline thread leaves
    // (one on the 2-core reference machine; more only contended); a writer thread keeps
    // capture order. Then stdout belongs to that thread, so the printer's own writer is
    // a sink.
    let parallel = packets_wanted
        && !opts.line_buffered
        && matches!(view.format, Format::Json | Format::Ndjson);
    let out: Box<dyn Write> = if parallel {
        Box::new(io::sink())
    } else {
        Box::new(io::BufWriter::with_capacity(1 << 16, io::stdout().lock()))
    };
    let mut printer = Printer::new(view.format, out, view.color, opts.line_buffered);
    printer.json_events = view.events;
    printer.fields = view.fields.clone();
    printer.payload_hex = view.hex;
    if parallel {
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get().min(4).saturating_sub(1).max(1));
        printer.parallel(Box::new(io::stdout()), workers, reader.shared_map());
    }
    let mut dissector = view.dissector();
    // Select (and count for -c) when writing or summarising too.
    dissector.always_select = frames.is_some() || view.limits.count.is_some();
    let mut decap = Decapsulator::new(view.decap_config());
    let mut run = Printing {
        dissector: &mut dissector,
        printer: packets_wanted.then_some(&mut printer),
        io: Ok(()),
        progress: super::progress::bar(size),
        frames,
    };
    let outcome = feed::run(reader, &mut decap, &mut run);
    run.io?;
    // Then the game-stack decoders give up what they still hold.
    run.dissector.finish(run.printer.as_deref_mut())?;
    if let Some(pb) = run.progress {
        pb.finish_and_clear();
    }
    let frames = run.frames;
    printer.finish()?;
    if let Some(sink) = frames {
        sink.finish()?;
    }
    drop(printer);
    let mut out = io::stdout().lock();
    if opts.summary {
        let text = summary::render(&dissector.tracker, &dissector.totals);
        write!(out, "{text}")?;
        let stats = decap.stats();
        writeln!(out, "\nCapture: {} frames; {stats}", reader.frames_read())?;
    }
    if opts.flows {
        write!(out, "{}", summary::render_flows(&dissector.locator))?;
    }
    out.flush()?;
    Ok(Dumped {
        damaged: outcome.damaged,
        nothing_found: summary::nothing_found(
            dissector.totals.packets,
            decap.stats().udp,
            decap.stats().tcp,
            reader.frames_read(),
        ),
    })
}
