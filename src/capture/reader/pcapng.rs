//! pcapng: section headers, interface descriptions, enhanced and simple packet blocks.

use std::io::Read;

use super::{
    rd16, rd32, saturate_ns, Format, Interface, Record, TsScale, MAX_RECORD, PCAPNG_EPB,
    PCAPNG_IDB, PCAPNG_PB, PCAPNG_SHB, PCAPNG_SPB,
};
use crate::capture::{CaptureError, CaptureErrorKind, CaptureReader};

impl<R: Read> CaptureReader<R> {
    pub(super) fn read_pcapng_record(&mut self) -> Result<Option<Record>, CaptureError> {
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

    pub(super) fn interface(&self, id: u32, offset: u64) -> Result<&Interface, CaptureError> {
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
    pub(super) fn packet_block(
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
    pub(super) fn simple_packet_block(
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
