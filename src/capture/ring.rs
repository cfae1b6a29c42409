//! Writing captured frames to a file (`sniff -w`): pcap, or pcapng when the name ends in
//! `.pcapng`, optionally as a ring of files cut by size (`-b filesize:MB,files:N`, as
//! tcpdump's `-C`/`-W` and dumpcap's `-b`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::writer::{PcapWriter, TsResolution};
use super::PcapngWriter;

/// `-b filesize:MB,files:N`: start a new file after `filesize` bytes, keep the last
/// `files` (0: keep them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ring {
    pub filesize: u64,
    pub files: u32,
}

impl std::str::FromStr for Ring {
    type Err = String;
    /// `filesize:MB` and `files:N`, comma-separated, in any order; filesize is required.
    fn from_str(s: &str) -> Result<Ring, String> {
        let (mut filesize, mut files) = (None, 0);
        for part in s.split(',') {
            let (k, v) = part
                .split_once(':')
                .ok_or_else(|| format!("'{part}' is not KEY:VALUE (filesize:MB, files:N)"))?;
            let n: u64 = v
                .parse()
                .map_err(|_| format!("'{v}' in '{part}' is not a whole number"))?;
            match k {
                "filesize" if n > 0 => filesize = Some(n * 1_000_000),
                "files" => {
                    files = u32::try_from(n).map_err(|_| format!("{n} files is too many"))?
                }
                _ => {
                    return Err(format!(
                        "'{part}': expected filesize:MB (MB > 0) or files:N"
                    ))
                }
            }
        }
        let filesize = filesize.ok_or("a ring needs filesize:MB")?;
        Ok(Ring { filesize, files })
    }
}

enum Out {
    Pcap(PcapWriter<BufWriter<File>>),
    Pcapng(PcapngWriter<BufWriter<File>>),
}

/// Frames to a pcap or pcapng file, or a ring of them.
pub struct FrameFile {
    path: PathBuf,
    linktype: u32,
    pcapng: bool,
    ring: Option<Ring>,
    /// None only before the first file is open.
    out: Option<Out>,
    /// Bytes written to the current file.
    size: u64,
    /// Number of the current ring file (1-based).
    index: u64,
    /// Ring files still on disk, oldest first.
    kept: VecDeque<PathBuf>,
}

impl FrameFile {
    /// Creates the file (the first of the ring: `NAME_00001.EXT`).
    pub fn create(path: &Path, linktype: u32, ring: Option<Ring>) -> io::Result<FrameFile> {
        let pcapng = path.extension().is_some_and(|e| e == "pcapng");
        let mut f = FrameFile {
            path: path.to_path_buf(),
            linktype,
            pcapng,
            ring,
            out: None,
            size: 0,
            index: 0,
            kept: VecDeque::new(),
        };
        f.open_next()?;
        Ok(f)
    }

    /// The file being written now.
    pub fn current(&self) -> PathBuf {
        self.name(self.index)
    }

    fn name(&self, index: u64) -> PathBuf {
        if self.ring.is_none() {
            return self.path.clone();
        }
        let stem = self.path.file_stem().unwrap_or_default().to_string_lossy();
        let ext = self
            .path
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        self.path.with_file_name(format!("{stem}_{index:05}{ext}"))
    }

    fn open_next(&mut self) -> io::Result<()> {
        self.flush()?;
        self.index += 1;
        let path = self.name(self.index);
        let file = File::create(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let w = BufWriter::with_capacity(1 << 16, file);
        self.out = Some(if self.pcapng {
            Out::Pcapng(PcapngWriter::new(w)?)
        } else {
            Out::Pcap(PcapWriter::with_linktype(
                w,
                TsResolution::Microsecond,
                self.linktype,
            )?)
        });
        self.size = self.header_len();
        if let Some(ring) = self.ring {
            self.kept.push_back(path);
            while ring.files > 0 && self.kept.len() > ring.files as usize {
                if let Some(old) = self.kept.pop_front() {
                    let _ = std::fs::remove_file(old);
                }
            }
        }
        Ok(())
    }

    /// Writes one frame; starts the next ring file first when this one is full.
    pub fn write(&mut self, ts_ns: i64, data: &[u8], orig_len: u32) -> io::Result<()> {
        let record = self.record_len(data.len());
        if let Some(ring) = self.ring {
            if self.size > self.header_len() && self.size + record > ring.filesize {
                self.open_next()?;
            }
        }
        match &mut self.out {
            Some(Out::Pcap(w)) => w.write_frame_with_orig_len(ts_ns, data, orig_len)?,
            Some(Out::Pcapng(w)) => w.write_frame(ts_ns, self.linktype, data, orig_len, &[])?,
            None => {}
        }
        self.size += record;
        Ok(())
    }

    /// Bytes a frame of `len` bytes takes in the file: a pcap record header, or an
    /// enhanced packet block (no options) with its data padded to 4 bytes.
    fn record_len(&self, len: usize) -> u64 {
        let len = len as u64;
        if self.pcapng {
            32 + len.next_multiple_of(4)
        } else {
            16 + len
        }
    }

    /// An upper bound of the bytes before the first frame: the pcap file header, or the
    /// pcapng section header and interface description blocks.
    fn header_len(&self) -> u64 {
        if self.pcapng {
            128
        } else {
            24
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(Out::Pcap(w)) => w.flush(),
            Some(Out::Pcapng(w)) => w.get_mut().flush(),
            None => Ok(()),
        }
    }
}
