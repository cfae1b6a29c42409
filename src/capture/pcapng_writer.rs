//! Writing pcapng files whose packets can carry comments (`opt_comment`), e.g. a
//! capture annotated with `check` findings. Written with `pcap-file`'s pcapng writer:
//! one interface per link type (declared on first use), nanosecond timestamps
//! (`if_tsresol` 9) so any source resolution is kept exactly.

use std::borrow::Cow;
use std::io::Write;
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, PcapError};

/// A pcapng writer for frames with comments. Does not buffer: wrap a file in a `BufWriter`.
pub struct PcapngWriter<W: Write> {
    inner: PcapNgWriter<W>,
    /// Link types of the interfaces declared so far; the index is the interface id.
    interfaces: Vec<u32>,
}

fn io(e: PcapError) -> std::io::Error {
    match e {
        PcapError::IoError(e) => e,
        other => std::io::Error::new(std::io::ErrorKind::InvalidInput, other.to_string()),
    }
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the section header.
    pub fn new(writer: W) -> std::io::Result<Self> {
        Ok(PcapngWriter {
            inner: PcapNgWriter::new(writer).map_err(io)?,
            interfaces: Vec::new(),
        })
    }

    fn interface(&mut self, linktype: u32) -> std::io::Result<u32> {
        if let Some(i) = self.interfaces.iter().position(|&l| l == linktype) {
            return Ok(i as u32);
        }
        self.inner
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::from(linktype),
                snaplen: 0,
                options: vec![InterfaceDescriptionOption::IfTsResol(9)],
            })
            .map_err(io)?;
        self.interfaces.push(linktype);
        Ok(self.interfaces.len() as u32 - 1)
    }

    /// Writes one frame (link-layer bytes as captured) with its comments, one
    /// `opt_comment` each. Timestamps before 1970 are written as 0.
    pub fn write_frame(
        &mut self,
        ts_ns: i64,
        linktype: u32,
        data: &[u8],
        orig_len: u32,
        comments: &[String],
    ) -> std::io::Result<()> {
        let interface_id = self.interface(linktype)?;
        self.inner
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id,
                timestamp: Duration::from_nanos(ts_ns.max(0) as u64),
                original_len: orig_len.max(data.len() as u32),
                data: Cow::Borrowed(data),
                options: comments
                    .iter()
                    .map(|c| EnhancedPacketOption::Comment(Cow::Borrowed(c.as_str())))
                    .collect(),
            })
            .map_err(io)?;
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.inner.into_inner()
    }

    pub fn get_mut(&mut self) -> &mut W {
        self.inner.get_mut()
    }
}
