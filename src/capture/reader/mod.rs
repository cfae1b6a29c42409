//! Streaming reader for pcap and pcapng files: [`CaptureReader`] yields [`Frame`]s. The
//! pcap records are read here, the pcapng blocks in `pcapng.rs`.
//!
//! One buffer is reused for the whole file and grows only to the largest record, so
//! memory does not depend on the file size. The byte offset of every record is known, so
//! damage is reported as "packet N, byte offset X". After an error the reader is done.

use std::fmt;
use std::io::{self, Read};

use pcap_file::pcap::{PcapHeader, PcapParser};
use pcap_file::{Endianness, TsResolution};

#[cfg(unix)]
mod guard;
mod pcapng;
#[cfg(test)]
mod tests;

/// Bytes requested from the source per read: large enough that syscalls are rare.
const INITIAL_BUF: usize = 256 * 1024;

/// Largest record or block accepted. Far above any real snaplen (libpcap's largest is
/// 262 144), low enough that a corrupt length field cannot make us buffer gigabytes.
const MAX_RECORD: usize = 16 * 1024 * 1024;

const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_IDB: u32 = 0x0000_0001;
const PCAPNG_PB: u32 = 0x0000_0002;
const PCAPNG_SPB: u32 = 0x0000_0003;
const PCAPNG_EPB: u32 = 0x0000_0006;

/// One captured link-layer frame. `data` borrows the reader's buffer until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// 1-based packet number in the file (what Wireshark shows as "No.").
    pub number: u64,
    /// Capture time, nanoseconds since the Unix epoch. 0 for pcapng simple packet blocks,
    /// which carry no timestamp.
    pub ts_ns: i64,
    /// Link-layer header type (LINKTYPE_* value, see [`super::linktype`]).
    pub linktype: u32,
    /// pcapng interface id (0 for classic pcap).
    pub interface: u32,
    /// The captured bytes, starting with the link-layer header.
    pub data: &'a [u8],
    /// Length of the frame on the wire; larger than `data.len()` when the snaplen cut it.
    pub orig_len: u32,
}

/// Which container a [`CaptureReader`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Classic pcap, with the link type and timestamp resolution of its header.
    Pcap {
        linktype: u32,
        nanosecond: bool,
        big_endian: bool,
    },
    /// pcapng: link type and resolution are per interface, see [`Frame::linktype`].
    PcapNg,
}

/// What went wrong in a [`CaptureError`].
#[derive(Debug)]
pub enum CaptureErrorKind {
    /// The source failed.
    Io(io::Error),
    /// The first four bytes are neither a pcap nor a pcapng magic.
    UnknownFormat([u8; 4]),
    /// The file ends inside a header, record or block.
    Truncated { needed: u64, available: u64 },
    /// A length or field makes no sense.
    Corrupt(String),
    /// The mapped file became shorter while it was read (truncated by another process).
    Shrank,
    /// A frame of a link type the decapsulator cannot read (see
    /// [`CaptureReader::require_supported_linktype`]).
    UnsupportedLinktype(u32),
}

/// A capture file could not be read further.
///
/// `packet` is the 1-based number of the packet being read when it broke (0 while
/// reading the file header); `offset` is the byte offset in the file where the broken
/// header, record or block starts.
#[derive(Debug)]
pub struct CaptureError {
    pub kind: CaptureErrorKind,
    pub packet: u64,
    pub offset: u64,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (packet, offset) = (self.packet, self.offset);
        let at = if packet == 0 {
            format!("in the file header (byte offset {offset})")
        } else {
            format!("at packet {packet} (byte offset {offset})")
        };
        match &self.kind {
            CaptureErrorKind::Io(e) => write!(f, "read error {at}: {e}"),
            CaptureErrorKind::UnknownFormat(m) => write!(
                f,
                "not a pcap or pcapng file: magic {:02x} {:02x} {:02x} {:02x} at byte offset {offset}",
                m[0], m[1], m[2], m[3]
            ),
            CaptureErrorKind::Truncated { needed, available } => write!(
                f,
                "capture truncated {at}: the record needs {needed} bytes but the file ends after {available}"
            ),
            CaptureErrorKind::Corrupt(msg) => write!(f, "corrupt capture {at}: {msg}"),
            CaptureErrorKind::Shrank => write!(
                f,
                "capture truncated {at}: the file became shorter while it was read"
            ),
            CaptureErrorKind::UnsupportedLinktype(lt) => {
                write!(f, "{} ({at})", super::linktype::unsupported_error(*lt))
            }
        }
    }
}

impl CaptureError {
    /// Whether the capture is unusable as a whole (exit status 2), not damaged part way.
    pub fn is_unsupported_linktype(&self) -> bool {
        matches!(self.kind, CaptureErrorKind::UnsupportedLinktype(_))
    }
}

impl std::error::Error for CaptureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            CaptureErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// The bytes being read: a reusable buffer filled by `read`, or a memory map of the
/// whole file.
enum Store {
    Owned(Vec<u8>),
    /// Shared so that threads formatting the records later can read them in place
    /// ([`CaptureReader::shared_map`]).
    Mapped(std::sync::Arc<MappedFile>),
}

/// A capture file's map, watched for the file shrinking under it (see `guard.rs`).
pub struct MappedFile {
    // Dropped first: unregistered before the range is unmapped.
    #[cfg(unix)]
    guard: guard::Guard,
    map: memmap2::Mmap,
}

impl MappedFile {
    fn new(map: memmap2::Mmap) -> MappedFile {
        MappedFile {
            #[cfg(unix)]
            guard: guard::Guard::register(map.as_ptr(), map.len()),
            map,
        }
    }

    /// Whether a read faulted because the file shrank: the bytes read from the missing
    /// part were zeros, not the file's.
    #[inline]
    pub fn shrank(&self) -> bool {
        #[cfg(unix)]
        return self.guard.truncated();
        #[cfg(not(unix))]
        false
    }
}

impl std::ops::Deref for MappedFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map
    }
}

/// The mapped bytes of a capture file, shareable with other threads.
pub type SharedMap = std::sync::Arc<MappedFile>;

/// Mapped pages behind the read position are given back in steps of this size, so the
/// resident memory of a mapped file stays constant like the buffer's.
const RELEASE_STEP: usize = 4 * 1024 * 1024;

/// A reusable read buffer (or a map) that knows the file offset of its first byte.
struct Source<R> {
    /// None for a mapped file.
    reader: Option<R>,
    store: Store,
    start: usize,
    end: usize,
    /// File offset of the store's first byte.
    base: u64,
    eof: bool,
    /// Mapped bytes before this offset have been released.
    released: usize,
}

impl<R: Read> Source<R> {
    fn new(reader: R) -> Self {
        Source {
            reader: Some(reader),
            store: Store::Owned(vec![0; INITIAL_BUF]),
            start: 0,
            end: 0,
            base: 0,
            eof: false,
            released: 0,
        }
    }

    fn mapped(map: memmap2::Mmap) -> Self {
        Source {
            reader: None,
            end: map.len(),
            store: Store::Mapped(std::sync::Arc::new(MappedFile::new(map))),
            start: 0,
            base: 0,
            eof: true,
            released: 0,
        }
    }

    fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    fn bytes(&self) -> &[u8] {
        match &self.store {
            Store::Owned(b) => b,
            Store::Mapped(m) => m,
        }
    }

    fn data(&self) -> &[u8] {
        &self.bytes()[self.start..self.end]
    }

    /// Makes at least `n` bytes available unless the source ends first; returns how
    /// many are available.
    fn fill(&mut self, n: usize) -> io::Result<usize> {
        let (Store::Owned(buf), Some(reader)) = (&mut self.store, &mut self.reader) else {
            return Ok(self.end - self.start); // a map holds the whole file
        };
        while self.end - self.start < n && !self.eof {
            if buf.len() - self.start < n || self.end == buf.len() {
                // Move the unread tail to the front; grow only for an oversized record, and
                // only as its bytes arrive, so a corrupt length costs no more than the file.
                buf.copy_within(self.start..self.end, 0);
                self.base += self.start as u64;
                self.end -= self.start;
                self.start = 0;
                if self.end == buf.len() && buf.len() < n {
                    let new_len = n.min(buf.len() * 2);
                    buf.resize(new_len, 0);
                }
            }
            match reader.read(&mut buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end - self.start)
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if let Store::Mapped(m) = &self.store {
            // One step is kept behind the read position: formatting threads given
            // [`CaptureReader::shared_map`] read records shortly after they were passed.
            if self.start - self.released >= 2 * RELEASE_STEP {
                let upto = (self.start - RELEASE_STEP) & !(RELEASE_STEP - 1);
                // SAFETY: nothing borrows the map below the read position (frames borrow
                // the reader and end before the next read), and the map is private and
                // read-only, so released pages would only be read back from the file
                // (a thread still reading there through `shared_map` sees the same bytes).
                let _ = unsafe {
                    m.map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        self.released,
                        upto - self.released,
                    )
                };
                self.released = upto;
            }
        }
    }
}

/// How to turn pcapng timestamp units into nanoseconds (`if_tsresol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TsScale {
    Mul(i128),
    Div(i128),
    /// Units of 2^-n seconds.
    Shift(u32),
}

impl TsScale {
    fn from_tsresol(v: u8) -> TsScale {
        if v & 0x80 != 0 {
            TsScale::Shift(u32::from(v & 0x7F))
        } else if v <= 9 {
            TsScale::Mul(10i128.pow(9 - u32::from(v)))
        } else {
            // 10^-v seconds with v > 9: beyond 10^-38 everything rounds to 0 anyway.
            TsScale::Div(10i128.pow(u32::from(v.min(38)) - 9))
        }
    }

    fn to_ns(self, units: u64) -> i128 {
        let u = i128::from(units);
        match self {
            TsScale::Mul(m) => u * m,
            TsScale::Div(d) => u / d,
            TsScale::Shift(s) => (u * 1_000_000_000).checked_shr(s).unwrap_or(0),
        }
    }
}

#[derive(Debug, Clone)]
struct Interface {
    linktype: u32,
    snaplen: u32,
    scale: TsScale,
    offset_ns: i128,
}

enum Format {
    Pcap {
        big_endian: bool,
        nanosecond: bool,
        linktype: u32,
        max_incl: usize,
    },
    PcapNg {
        big_endian: bool,
        interfaces: Vec<Interface>,
    },
}

/// Where a record's data lies in the buffer, and its metadata.
struct Record {
    start: usize,
    end: usize,
    ts_ns: i64,
    linktype: u32,
    interface: u32,
    orig_len: u32,
}

/// Reads frames one by one from a pcap or pcapng stream.
pub struct CaptureReader<R: Read> {
    src: Source<R>,
    format: Format,
    packets: u64,
    done: bool,
    /// Frames of a link type the decapsulator cannot read are an error, not data.
    strict_linktype: bool,
    /// A mapped file's pages below this offset have been touched by [`prefault`].
    faulted_to: usize,
}

fn rd16(b: &[u8], big_endian: bool) -> u16 {
    let a = [b[0], b[1]];
    if big_endian {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    }
}

fn rd32(b: &[u8], big_endian: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if big_endian {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

/// The page size [`prefault`] assumes (the smallest; larger pages only touch more).
const PAGE: usize = 4096;

/// Reads one byte of every page of `bytes` (and the last), so that the pages are mapped.
#[inline]
fn prefault(bytes: &[u8]) {
    let mut at = 0;
    while at < bytes.len() {
        // SAFETY: `at` is in bounds; a volatile read is not optimised away.
        unsafe { std::ptr::read_volatile(bytes.as_ptr().add(at)) };
        at = (at | (PAGE - 1)) + 1;
    }
    if let Some(last) = bytes.last() {
        // SAFETY: a reference to the last byte.
        unsafe { std::ptr::read_volatile(last) };
    }
}

fn saturate_ns(ns: i128) -> i64 {
    ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

impl CaptureReader<Box<dyn Read + Send>> {
    /// Opens a capture file by path; `-` reads standard input.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self, CaptureError> {
        let path = path.as_ref();
        if path.as_os_str() == "-" {
            return CaptureReader::new(Box::new(io::stdin()));
        }
        let f = std::fs::File::open(path).map_err(|e| CaptureError {
            kind: CaptureErrorKind::Io(e),
            packet: 0,
            offset: 0,
        })?;
        CaptureReader::from_file(f)
    }

    /// Reads an open file: mapped when it is a regular file ([`CaptureReader::mapped`]),
    /// read otherwise (pipes, FIFOs, devices).
    pub fn from_file(f: std::fs::File) -> Result<Self, CaptureError> {
        if f.metadata().is_ok_and(|m| m.is_file() && m.len() > 0) {
            if let Ok(reader) = CaptureReader::mapped(&f) {
                return Ok(reader);
            }
        }
        CaptureReader::new(Box::new(f))
    }
}

impl<R: Read> CaptureReader<R> {
    /// Reads the file header and detects the format from its magic.
    pub fn new(reader: R) -> Result<Self, CaptureError> {
        Self::with_source(Source::new(reader))
    }

    /// Reads a regular file through a memory map instead of `read(2)`: the records are
    /// used where the page cache holds them, with no copy (the copy was a tenth of
    /// `dump`'s pipeline thread). Pages behind the read position are released as it
    /// goes, so resident memory stays constant. A file truncated while it is read gives
    /// [`CaptureErrorKind::Shrank`] at the first record past its new end (the SIGBUS of
    /// the read is caught, on Unix); a file that grows is read up to its size at the time
    /// of the call.
    pub fn mapped(file: &std::fs::File) -> Result<Self, CaptureError> {
        let err = |e| CaptureError {
            kind: CaptureErrorKind::Io(e),
            packet: 0,
            offset: 0,
        };
        // SAFETY: see above: the map is read-only and private; concurrent truncation is
        // the documented limit.
        let map = unsafe { memmap2::Mmap::map(file) }.map_err(err)?;
        let _ = map.advise(memmap2::Advice::Sequential);
        Self::with_source(Source::mapped(map))
    }

    fn with_source(mut src: Source<R>) -> Result<Self, CaptureError> {
        let header_err = |kind| CaptureError {
            kind,
            packet: 0,
            offset: 0,
        };
        let n = src
            .fill(4)
            .map_err(|e| header_err(CaptureErrorKind::Io(e)))?;
        if n < 4 {
            return Err(header_err(CaptureErrorKind::Truncated {
                needed: 4,
                available: n as u64,
            }));
        }
        let magic = [src.data()[0], src.data()[1], src.data()[2], src.data()[3]];
        let format = match u32::from_be_bytes(magic) {
            0xA1B2_C3D4 | 0xD4C3_B2A1 | 0xA1B2_3C4D | 0x4D3C_B2A1 => {
                let n = src
                    .fill(24)
                    .map_err(|e| header_err(CaptureErrorKind::Io(e)))?;
                if n < 24 {
                    return Err(header_err(CaptureErrorKind::Truncated {
                        needed: 24,
                        available: n as u64,
                    }));
                }
                let bytes = &src.data()[..24];
                // pcap-file validates the header; the 16-byte records are read here (its
                // per-record parser was a fifth of the reading time).
                let header = PcapHeader::from_slice(bytes)
                    .and_then(|(_, h)| PcapParser::new(bytes).map(|_| h))
                    .map_err(|e| header_err(CaptureErrorKind::Corrupt(e.to_string())))?;
                src.consume(24);
                // The upper 16 bits of the link-type field carry FCS information.
                let linktype = u32::from(header.datalink) & 0xFFFF;
                Format::Pcap {
                    big_endian: header.endianness == Endianness::Big,
                    nanosecond: header.ts_resolution == TsResolution::NanoSecond,
                    linktype,
                    // Like libpcap: records may exceed a small snaplen, never the maximum.
                    max_incl: (header.snaplen as usize).clamp(262_144, MAX_RECORD),
                }
            }
            PCAPNG_SHB => Format::PcapNg {
                big_endian: false,
                interfaces: Vec::new(),
            },
            _ => return Err(header_err(CaptureErrorKind::UnknownFormat(magic))),
        };
        Ok(CaptureReader {
            src,
            format,
            packets: 0,
            done: false,
            strict_linktype: false,
            faulted_to: 0,
        })
    }

    /// Makes a frame of a link type the decapsulator cannot read an error
    /// ([`CaptureErrorKind::UnsupportedLinktype`]) instead of a frame: for commands, where
    /// such a capture would otherwise pass as one without Dissonance traffic.
    pub fn require_supported_linktype(&mut self) {
        self.strict_linktype = true;
    }

    /// The container format found in the header.
    pub fn format(&self) -> CaptureFormat {
        match &self.format {
            Format::Pcap {
                big_endian,
                nanosecond,
                linktype,
                ..
            } => CaptureFormat::Pcap {
                linktype: *linktype,
                nanosecond: *nanosecond,
                big_endian: *big_endian,
            },
            Format::PcapNg { .. } => CaptureFormat::PcapNg,
        }
    }

    /// Number of frames returned so far.
    pub fn frames_read(&self) -> u64 {
        self.packets
    }

    /// The whole file's bytes when it is mapped: frames returned by
    /// [`CaptureReader::next_frame`] are slices of it (pages well behind the read position
    /// are dropped from memory and read back from the file if touched again).
    pub fn shared_map(&self) -> Option<SharedMap> {
        match &self.src.store {
            Store::Mapped(m) => Some(m.clone()),
            Store::Owned(_) => None,
        }
    }

    /// Byte offset in the file of the next unread record.
    pub fn offset(&self) -> u64 {
        self.src.offset()
    }

    /// The next frame, `None` at the clean end of the file, or the error that stopped
    /// reading (after which every call returns `None`).
    #[allow(clippy::should_implement_trait)] // Frames borrow the reader: not an Iterator.
    pub fn next_frame(&mut self) -> Option<Result<Frame<'_>, CaptureError>> {
        if self.done {
            return None;
        }
        let mut record = match &self.format {
            Format::Pcap { .. } => self.read_pcap_record(),
            Format::PcapNg { .. } => self.read_pcapng_record(),
        };
        if let Store::Mapped(m) = &self.src.store {
            // Touch the record's pages now, so that a file that shrank faults here (the
            // handler puts zeros in) and not while the caller uses the frame; then the
            // whole record, header included, is known to be the file's.
            // Pages already touched for an earlier record are not touched again.
            if let Ok(Some(r)) = &record {
                if r.end > self.faulted_to {
                    let from = r.start.max(self.faulted_to);
                    prefault(&m[from..r.end]);
                    self.faulted_to = (r.end | (PAGE - 1)) + 1;
                }
            }
            if m.shrank() {
                let offset = self.src.offset();
                record = Err(self.error(CaptureErrorKind::Shrank, offset));
            }
        }
        match record {
            Ok(Some(r)) if self.strict_linktype && !super::linktype::is_supported(r.linktype) => {
                self.done = true;
                Some(Err(self.error(
                    CaptureErrorKind::UnsupportedLinktype(r.linktype),
                    self.src.offset(),
                )))
            }
            Ok(Some(r)) => {
                self.packets += 1;
                Some(Ok(Frame {
                    number: self.packets,
                    ts_ns: r.ts_ns,
                    linktype: r.linktype,
                    interface: r.interface,
                    data: &self.src.bytes()[r.start..r.end],
                    orig_len: r.orig_len,
                }))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    fn error(&self, kind: CaptureErrorKind, offset: u64) -> CaptureError {
        CaptureError {
            kind,
            packet: self.packets + 1,
            offset,
        }
    }

    /// Makes `n` bytes of the record at `offset` available, or says why not.
    fn need(&mut self, n: usize, offset: u64) -> Result<(), CaptureError> {
        let available = self
            .src
            .fill(n)
            .map_err(|e| self.error(CaptureErrorKind::Io(e), offset))?;
        if available < n {
            return Err(self.error(
                CaptureErrorKind::Truncated {
                    needed: n as u64,
                    available: available as u64,
                },
                offset,
            ));
        }
        Ok(())
    }

    /// Makes the `header_len` bytes of a record header at `offset` available; false at a
    /// clean end of file (not a single byte of a further record).
    fn begin(&mut self, header_len: usize, offset: u64) -> Result<bool, CaptureError> {
        let available = self
            .src
            .fill(header_len)
            .map_err(|e| self.error(CaptureErrorKind::Io(e), offset))?;
        if available == 0 {
            return Ok(false);
        }
        if available < header_len {
            return Err(self.error(
                CaptureErrorKind::Truncated {
                    needed: header_len as u64,
                    available: available as u64,
                },
                offset,
            ));
        }
        Ok(true)
    }

    fn read_pcap_record(&mut self) -> Result<Option<Record>, CaptureError> {
        let Format::Pcap {
            big_endian,
            nanosecond,
            linktype,
            max_incl,
            ..
        } = self.format
        else {
            unreachable!("called for pcap only")
        };
        let offset = self.src.offset();
        // A mapped file (or a full buffer) has the bytes already: skip `fill`.
        if self.src.data().len() < 16 && !self.begin(16, offset)? {
            return Ok(None);
        }
        let incl = rd32(&self.src.data()[8..12], big_endian) as usize;
        if incl > max_incl {
            return Err(self.error(
                CaptureErrorKind::Corrupt(format!(
                    "record length {incl} exceeds the maximum of {max_incl} bytes"
                )),
                offset,
            ));
        }
        if self.src.data().len() < 16 + incl {
            self.need(16 + incl, offset)?;
        }
        let h = &self.src.data()[..16];
        let (ts_sec, ts_frac, orig_len) = (
            rd32(&h[0..4], big_endian),
            rd32(&h[4..8], big_endian),
            rd32(&h[12..16], big_endian),
        );
        let frac_ns = if nanosecond {
            i64::from(ts_frac)
        } else {
            i64::from(ts_frac) * 1000
        };
        let start = self.src.start + 16;
        self.src.consume(16 + incl);
        Ok(Some(Record {
            start,
            end: start + incl,
            ts_ns: i64::from(ts_sec) * 1_000_000_000 + frac_ns,
            linktype,
            interface: 0,
            orig_len,
        }))
    }
}
