//! [`FrameSink`]: frames copied out of a capture unchanged — original bytes, wire
//! length and timestamp — into pcap or pcapng (`dump -w`). The format follows the file
//! name: `.pcapng` (or `.ntar`) is pcapng, anything else classic pcap.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::{Frame, PcapWriter, PcapngWriter, TsResolution};

enum Out {
    /// Opened at the first frame: a classic pcap has one link type, the first frame's.
    PcapPending(Box<dyn Write>),
    Pcap(PcapWriter<Box<dyn Write>>),
    Pcapng(PcapngWriter<Box<dyn Write>>),
}

pub struct FrameSink {
    out: Option<Out>,
    written: u64,
}

impl FrameSink {
    /// A file, or standard output for `-`.
    pub fn create(path: &Path) -> io::Result<FrameSink> {
        let w: Box<dyn Write> = if path.as_os_str() == "-" {
            Box::new(BufWriter::with_capacity(1 << 16, io::stdout()))
        } else {
            Box::new(BufWriter::with_capacity(
                1 << 16,
                std::fs::File::create(path)?,
            ))
        };
        let ng = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("pcapng") || e.eq_ignore_ascii_case("ntar"));
        let out = if ng {
            Out::Pcapng(PcapngWriter::new(w)?)
        } else {
            Out::PcapPending(w)
        };
        Ok(FrameSink {
            out: Some(out),
            written: 0,
        })
    }

    /// Frames written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn write(&mut self, f: &Frame<'_>) -> io::Result<()> {
        let out = match self.out.take() {
            // Nanosecond records: exact for every input resolution.
            Some(Out::PcapPending(w)) => Out::Pcap(PcapWriter::with_linktype(
                w,
                TsResolution::Nanosecond,
                f.linktype,
            )?),
            Some(o) => o,
            None => return Err(io::Error::other("frame sink already failed")),
        };
        let out = self.out.insert(out);
        match out {
            Out::Pcap(p) => {
                if p.linktype() != f.linktype {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "frame {} has link type {}, the file so far {}: a pcap holds one; write .pcapng",
                            f.number,
                            f.linktype,
                            p.linktype()
                        ),
                    ));
                }
                p.write_frame_with_orig_len(f.ts_ns, f.data, f.orig_len.max(f.data.len() as u32))?
            }
            Out::Pcapng(p) => p.write_frame(f.ts_ns, f.linktype, f.data, f.orig_len, &[])?,
            // Replaced just above; an error rather than a panic all the same.
            Out::PcapPending(_) => return Err(io::Error::other("pcap writer not opened")),
        }
        self.written += 1;
        Ok(())
    }

    /// Flushes; an empty pcap still gets its file header (Ethernet).
    pub fn finish(mut self) -> io::Result<()> {
        match self.out.take() {
            Some(Out::PcapPending(w)) => {
                let mut p = PcapWriter::with_linktype(
                    w,
                    TsResolution::Nanosecond,
                    super::linktype::ETHERNET,
                )?;
                p.flush()
            }
            Some(Out::Pcap(mut p)) => p.flush(),
            Some(Out::Pcapng(p)) => p.into_inner().flush(),
            None => Ok(()),
        }
    }
}
