//! Streaming reader for pcap and pcapng files: [`CaptureReader`] yields [`Frame`]s.
//!
//! One buffer is reused for the whole file and grows only to the largest record, so
//! memory does not depend on the file size. The byte offset of every record is known, so
//! damage is reported as "packet N, byte offset X". After an error the reader is done.

use std::fmt;
use std::io::{self, Read};

use pcap_file::pcap::{PcapHeader, PcapParser};
use pcap_file::{Endianness, TsResolution};

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
        }
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
    Mapped(std::sync::Arc<memmap2::Mmap>),
}

/// The mapped bytes of a capture file, shareable with other threads.
pub type SharedMap = std::sync::Arc<memmap2::Mmap>;

/// Mapped pages behind the read position are given back in steps of this size, so the
/// resident memory of a mapped file stays constant like the buffer's.
const RELEASE_STEP: usize = 8 * 1024 * 1024;

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
            store: Store::Mapped(std::sync::Arc::new(map)),
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
                    m.unchecked_advise_range(
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
    /// goes, so resident memory stays constant. The file must not be truncated while it
    /// is read (the process would get SIGBUS, as with any mapped file); a file that
    /// grows is read up to its size at the time of the call.
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
        })
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
        let record = match &self.format {
            Format::Pcap { .. } => self.read_pcap_record(),
            Format::PcapNg { .. } => self.read_pcapng_record(),
        };
        match record {
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

    fn read_pcapng_record(&mut self) -> Result<Option<Record>, CaptureError> {
        loop {
            let offset = self.src.offset();
            if !self.begin(12, offset)? {
                return Ok(None);
            }
            let head = &self.src.data()[..12];
            let Format::PcapNg { big_endian, .. } = self.format else {
                unreachable!("called for pcapng only")
            };
            let is_shb = head[..4] == PCAPNG_SHB.to_be_bytes();
            let be = if is_shb {
                // A section header declares the byte order of everything up to the next one.
                match u32::from_be_bytes([head[8], head[9], head[10], head[11]]) {
                    0x1A2B_3C4D => true,
                    0x4D3C_2B1A => false,
                    m => {
                        return Err(self.error(
                            CaptureErrorKind::Corrupt(format!(
                                "section header byte-order magic {m:#010x} is neither 0x1a2b3c4d nor 0x4d3c2b1a"
                            )),
                            offset,
                        ))
                    }
                }
            } else {
                big_endian
            };
            let block_type = rd32(&head[0..4], be);
            let block_len = rd32(&head[4..8], be) as usize;
            if block_len < 12 || block_len % 4 != 0 || block_len > MAX_RECORD {
                return Err(self.error(
                    CaptureErrorKind::Corrupt(format!(
                        "block type {block_type:#x} has an invalid length {block_len}"
                    )),
                    offset,
                ));
            }
            self.need(block_len, offset)?;
            let block = &self.src.data()[..block_len];
            let trailer = rd32(&block[block_len - 4..], be) as usize;
            if trailer != block_len {
                return Err(self.error(
                    CaptureErrorKind::Corrupt(format!(
                        "block length {block_len} at the start but {trailer} at the end"
                    )),
                    offset,
                ));
            }
            let body = &block[8..block_len - 4];
            // Offset of `body` in the buffer, for the frame's data indices.
            let body_start = self.src.start + 8;
            let record = match block_type {
                PCAPNG_SHB => {
                    if let Format::PcapNg {
                        big_endian,
                        interfaces,
                    } = &mut self.format
                    {
                        *big_endian = be;
                        interfaces.clear();
                    }
                    None
                }
                PCAPNG_IDB => {
                    let iface = parse_idb(body, be)
                        .map_err(|m| self.error(CaptureErrorKind::Corrupt(m), offset))?;
                    if let Format::PcapNg { interfaces, .. } = &mut self.format {
                        interfaces.push(iface);
                    }
                    None
                }
                PCAPNG_EPB | PCAPNG_PB => {
                    Some(self.packet_block(block_type, body, body_start, be, offset)?)
                }
                PCAPNG_SPB => Some(self.simple_packet_block(body, body_start, be, offset)?),
                // Name resolution, statistics, journal, custom, ...: nothing for us.
                _ => None,
            };
            self.src.consume(block_len);
            if record.is_some() {
                return Ok(record);
            }
        }
    }

    fn interface(&self, id: u32, offset: u64) -> Result<&Interface, CaptureError> {
        let Format::PcapNg { interfaces, .. } = &self.format else {
            unreachable!("called for pcapng only")
        };
        interfaces.get(id as usize).ok_or_else(|| {
            self.error(
                CaptureErrorKind::Corrupt(format!(
                    "packet refers to interface {id} but the section describes {}",
                    interfaces.len()
                )),
                offset,
            )
        })
    }

    /// Enhanced packet block (type 6) or the obsolete packet block (type 2).
    fn packet_block(
        &self,
        block_type: u32,
        body: &[u8],
        body_start: usize,
        be: bool,
        offset: u64,
    ) -> Result<Record, CaptureError> {
        if body.len() < 20 {
            return Err(self.error(
                CaptureErrorKind::Corrupt("packet block shorter than its 20-byte header".into()),
                offset,
            ));
        }
        let interface = if block_type == PCAPNG_EPB {
            rd32(&body[0..4], be)
        } else {
            u32::from(rd16(&body[0..2], be))
        };
        let ts_units = (u64::from(rd32(&body[4..8], be)) << 32) | u64::from(rd32(&body[8..12], be));
        let caplen = rd32(&body[12..16], be) as usize;
        let orig_len = rd32(&body[16..20], be);
        if caplen > body.len() - 20 {
            return Err(self.error(
                CaptureErrorKind::Corrupt(format!(
                    "captured length {caplen} exceeds the block's {} data bytes",
                    body.len() - 20
                )),
                offset,
            ));
        }
        let iface = self.interface(interface, offset)?;
        let ns = iface.scale.to_ns(ts_units) + iface.offset_ns;
        Ok(Record {
            start: body_start + 20,
            end: body_start + 20 + caplen,
            ts_ns: saturate_ns(ns),
            linktype: iface.linktype,
            interface,
            orig_len,
        })
    }

    /// Simple packet block: interface 0, no timestamp, captured length implied.
    fn simple_packet_block(
        &self,
        body: &[u8],
        body_start: usize,
        be: bool,
        offset: u64,
    ) -> Result<Record, CaptureError> {
        if body.len() < 4 {
            return Err(self.error(
                CaptureErrorKind::Corrupt("simple packet block shorter than 4 bytes".into()),
                offset,
            ));
        }
        let orig_len = rd32(&body[0..4], be);
        let iface = self.interface(0, offset)?;
        let mut caplen = (body.len() - 4).min(orig_len as usize);
        if iface.snaplen != 0 {
            caplen = caplen.min(iface.snaplen as usize);
        }
        Ok(Record {
            start: body_start + 4,
            end: body_start + 4 + caplen,
            ts_ns: 0,
            linktype: iface.linktype,
            interface: 0,
            orig_len,
        })
    }
}

/// Reads an interface description body: link type, snaplen, and the two options that
/// change timestamps. Other options are skipped; a malformed option list ends the scan
/// rather than the file, since the fixed fields are what matter.
fn parse_idb(body: &[u8], be: bool) -> Result<Interface, String> {
    if body.len() < 8 {
        return Err("interface description block shorter than 8 bytes".into());
    }
    let mut iface = Interface {
        linktype: u32::from(rd16(&body[0..2], be)),
        snaplen: rd32(&body[4..8], be),
        scale: TsScale::from_tsresol(6),
        offset_ns: 0,
    };
    let mut opts = &body[8..];
    while opts.len() >= 4 {
        let code = rd16(&opts[0..2], be);
        let len = usize::from(rd16(&opts[2..4], be));
        if code == 0 || opts.len() < 4 + len {
            break;
        }
        let value = &opts[4..4 + len];
        match (code, len) {
            (9, 1) => iface.scale = TsScale::from_tsresol(value[0]),
            (14, 8) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(value);
                let secs = if be {
                    i64::from_be_bytes(b)
                } else {
                    i64::from_le_bytes(b)
                };
                iface.offset_ns = i128::from(secs) * 1_000_000_000;
            }
            _ => {}
        }
        let padded = 4 + len.div_ceil(4) * 4;
        opts = &opts[padded.min(opts.len())..];
    }
    Ok(iface)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap_header(magic: u32, big_endian: bool, linktype: u32) -> Vec<u8> {
        let mut v = Vec::new();
        let put32 = |v: &mut Vec<u8>, x: u32| {
            v.extend_from_slice(&if big_endian {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            })
        };
        put32(&mut v, magic);
        let (maj, min) = (2u16, 4u16);
        if big_endian {
            v.extend_from_slice(&maj.to_be_bytes());
            v.extend_from_slice(&min.to_be_bytes());
        } else {
            v.extend_from_slice(&maj.to_le_bytes());
            v.extend_from_slice(&min.to_le_bytes());
        }
        put32(&mut v, 0);
        put32(&mut v, 0);
        put32(&mut v, 65535);
        put32(&mut v, linktype);
        v
    }

    fn pcap_record(v: &mut Vec<u8>, big_endian: bool, sec: u32, frac: u32, data: &[u8]) {
        for x in [sec, frac, data.len() as u32, data.len() as u32 + 4] {
            v.extend_from_slice(&if big_endian {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            });
        }
        v.extend_from_slice(data);
    }

    /// (number, ts_ns, linktype, data, orig_len) of one frame.
    type Row = (u64, i64, u32, Vec<u8>, u32);

    fn read_all(bytes: &[u8]) -> (Vec<Row>, Option<CaptureError>) {
        collect(CaptureReader::new(bytes).unwrap())
    }

    fn collect<R: Read>(mut r: CaptureReader<R>) -> (Vec<Row>, Option<CaptureError>) {
        let mut frames = Vec::new();
        while let Some(f) = r.next_frame() {
            match f {
                Ok(f) => frames.push((f.number, f.ts_ns, f.linktype, f.data.to_vec(), f.orig_len)),
                Err(e) => return (frames, Some(e)),
            }
        }
        (frames, None)
    }

    #[test]
    fn pcap_all_four_magics() {
        for (magic, be, nanos) in [
            (0xA1B2_C3D4u32, false, false),
            (0xA1B2_C3D4, true, false),
            (0xA1B2_3C4D, false, true),
            (0xA1B2_3C4D, true, true),
        ] {
            let mut v = pcap_header(magic, be, 0x0400_0001); // FCS bits must be masked off
            pcap_record(&mut v, be, 1_700_000_000, 123_456, b"abc");
            pcap_record(&mut v, be, 1_700_000_001, 999_999, b"");
            let r = CaptureReader::new(&v[..]).unwrap();
            assert_eq!(
                r.format(),
                CaptureFormat::Pcap {
                    linktype: 1,
                    nanosecond: nanos,
                    big_endian: be
                }
            );
            let (frames, err) = read_all(&v);
            assert!(err.is_none());
            let mult = if nanos { 1 } else { 1000 };
            assert_eq!(
                frames,
                vec![
                    (
                        1,
                        1_700_000_000_000_000_000 + 123_456 * mult,
                        1,
                        b"abc".to_vec(),
                        7
                    ),
                    (2, 1_700_000_001_000_000_000 + 999_999 * mult, 1, vec![], 4),
                ]
            );
        }
    }

    /// A source that hands out one byte per read, to exercise buffer refills.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    #[test]
    fn records_larger_than_the_buffer_and_tiny_reads() {
        let mut v = pcap_header(0xA1B2_C3D4, false, 1);
        // A snaplen above the buffer size allows such records.
        v[16..20].copy_from_slice(&(1u32 << 20).to_le_bytes());
        let big: Vec<u8> = (0..INITIAL_BUF + 1000).map(|i| i as u8).collect();
        pcap_record(&mut v, false, 1, 0, &big);
        pcap_record(&mut v, false, 2, 0, b"tail");
        let (frames, err) = read_all(&v);
        assert!(err.is_none());
        assert_eq!(frames[0].3, big);
        assert_eq!(frames[1].3, b"tail");

        let mut r = CaptureReader::new(Trickle(&v)).unwrap();
        assert_eq!(r.next_frame().unwrap().unwrap().data, &big[..]);
        assert_eq!(r.next_frame().unwrap().unwrap().data, b"tail");
        assert!(r.next_frame().is_none());
    }

    #[test]
    fn header_errors() {
        let e = CaptureReader::new(&b""[..]).err().unwrap();
        assert!(matches!(
            e.kind,
            CaptureErrorKind::Truncated {
                needed: 4,
                available: 0
            }
        ));
        let e = CaptureReader::new(&b"GET / HTTP/1.1"[..]).err().unwrap();
        assert_eq!(
            e.to_string(),
            "not a pcap or pcapng file: magic 47 45 54 20 at byte offset 0"
        );
        let v = pcap_header(0xA1B2_C3D4, false, 1);
        let e = CaptureReader::new(&v[..20]).err().unwrap();
        assert_eq!(
            e.to_string(),
            "capture truncated in the file header (byte offset 0): the record needs 24 bytes but the file ends after 20"
        );
    }

    #[test]
    fn oversized_record_is_corrupt() {
        let mut v = pcap_header(0xA1B2_C3D4, false, 1);
        pcap_record(&mut v, false, 1, 0, b"ok");
        let at = v.len() as u64;
        v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x7F, 0, 0, 0, 0]);
        let (frames, err) = read_all(&v);
        assert_eq!(frames.len(), 1);
        let err = err.unwrap();
        assert_eq!((err.packet, err.offset), (2, at));
        assert!(err.to_string().contains("exceeds the maximum"), "{err}");
    }

    #[test]
    fn tsresol_scales() {
        assert_eq!(TsScale::from_tsresol(6).to_ns(1_500_000), 1_500_000_000);
        assert_eq!(TsScale::from_tsresol(9).to_ns(7), 7);
        assert_eq!(TsScale::from_tsresol(12).to_ns(7_000), 7);
        assert_eq!(TsScale::from_tsresol(0x80 | 10).to_ns(1024), 1_000_000_000);
        assert_eq!(TsScale::from_tsresol(0xFF).to_ns(u64::MAX), 0);
        assert_eq!(TsScale::from_tsresol(100).to_ns(u64::MAX), 0);
    }

    /// Minimal big-endian pcapng: SHB, IDB (µs default), a name-resolution block to skip,
    /// an EPB and an SPB.
    #[test]
    fn pcapng_big_endian_with_skipped_blocks() {
        fn block(v: &mut Vec<u8>, ty: u32, body: &[u8]) {
            let len = 12 + body.len().div_ceil(4) * 4;
            v.extend_from_slice(&ty.to_be_bytes());
            v.extend_from_slice(&(len as u32).to_be_bytes());
            v.extend_from_slice(body);
            v.resize(v.len() + (len - 12 - body.len()), 0);
            v.extend_from_slice(&(len as u32).to_be_bytes());
        }
        let mut v = Vec::new();
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1A2B_3C4Du32.to_be_bytes());
        shb.extend_from_slice(&[0, 1, 0, 0]);
        shb.extend_from_slice(&(-1i64).to_be_bytes());
        block(&mut v, PCAPNG_SHB, &shb);
        block(&mut v, PCAPNG_IDB, &[0, 101, 0, 0, 0, 0, 0, 100]);
        block(&mut v, 4, &[0, 0, 0, 0]);
        let mut epb = Vec::new();
        for x in [0u32, 0, 1_000_001, 3, 3] {
            epb.extend_from_slice(&x.to_be_bytes());
        }
        epb.extend_from_slice(b"xyz");
        block(&mut v, PCAPNG_EPB, &epb);
        let mut spb = 200u32.to_be_bytes().to_vec();
        spb.extend_from_slice(&[9; 120]);
        block(&mut v, PCAPNG_SPB, &spb);
        let (frames, err) = read_all(&v);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(
            frames,
            vec![
                (1, 1_000_001_000, 101, b"xyz".to_vec(), 3),
                (2, 0, 101, vec![9; 100], 200),
            ]
        );
    }

    #[test]
    fn pcapng_unknown_interface_is_an_error() {
        let mut v = Vec::new();
        for x in [
            PCAPNG_SHB,
            28,
            0x1A2B_3C4D,
            0x0001_0000,
            0xFFFF_FFFF,
            0xFFFF_FFFF,
            28,
        ] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        let at = v.len() as u64;
        for x in [PCAPNG_EPB, 32, 5, 0, 0, 0, 0, 32] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        let (frames, err) = read_all(&v);
        assert!(frames.is_empty());
        let err = err.unwrap();
        assert_eq!((err.packet, err.offset), (1, at));
        assert!(err.to_string().contains("interface 5"), "{err}");
    }

    #[test]
    fn never_panics_on_mutations() {
        // Every single-byte corruption and every truncation of a small valid file.
        let mut v = pcap_header(0xA1B2_C3D4, false, 1);
        pcap_record(&mut v, false, 1, 2, b"hello world");
        pcap_record(&mut v, false, 3, 4, b"!");
        for cut in 0..v.len() {
            if let Ok(mut r) = CaptureReader::new(&v[..cut]) {
                while let Some(Ok(_)) = r.next_frame() {}
            }
        }
        for i in 0..v.len() {
            for b in [0x00, 0xFF, 0x80] {
                let mut w = v.clone();
                w[i] = b;
                if let Ok(mut r) = CaptureReader::new(&w[..]) {
                    while let Some(Ok(_)) = r.next_frame() {}
                }
            }
        }
    }

    fn read_mapped(path: &std::path::Path) -> (Vec<Row>, Option<CaptureError>) {
        let f = std::fs::File::open(path).unwrap();
        collect(CaptureReader::<io::Empty>::mapped(&f).unwrap())
    }

    #[test]
    fn mapped_file_reads_like_the_stream() {
        // Over 2 release steps of records, then the same file cut inside a record.
        let mut v = pcap_header(0xA1B2_3C4D, false, 1);
        let mut i = 0u32;
        while v.len() < 2 * RELEASE_STEP + 100_000 {
            let data: Vec<u8> = (0..(i % 1500)).map(|k| (k ^ i) as u8).collect();
            pcap_record(&mut v, false, i, i % 1_000_000_000, &data);
            i += 1;
        }
        let dir = std::env::temp_dir().join(format!("dissonance-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let whole = dir.join("whole.pcap");
        std::fs::write(&whole, &v).unwrap();
        let (frames, err) = read_mapped(&whole);
        assert!(err.is_none());
        assert_eq!(frames.len(), i as usize);
        assert_eq!((frames, err.map(|e| e.to_string())), {
            let (f, e) = read_all(&v);
            (f, e.map(|e| e.to_string()))
        });
        let cut = dir.join("cut.pcap");
        std::fs::write(&cut, &v[..v.len() - 7]).unwrap();
        let (frames, err) = read_mapped(&cut);
        let (want, want_err) = read_all(&v[..v.len() - 7]);
        assert_eq!(frames.len(), i as usize - 1);
        assert_eq!(frames, want);
        let (err, want_err) = (err.unwrap(), want_err.unwrap());
        assert_eq!((err.packet, err.offset), (want_err.packet, want_err.offset));
        assert_eq!(err.to_string(), want_err.to_string());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
