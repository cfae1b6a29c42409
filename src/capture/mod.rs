//! Capture files in, transport payloads out: the first two stages of the pipeline
//! (bytes source → frames → transport payloads), without sockets or clocks.
//!
//! # Design
//!
//! * [`CaptureReader`] turns any [`std::io::Read`] (a file, stdin) into link-layer
//!   [`Frame`]s. It auto-detects classic pcap (µs or ns magic, either byte order) and
//!   pcapng (any number of sections and interfaces, each interface with its own link type
//!   and timestamp resolution). It streams: one reusable buffer that grows only to the
//!   largest record, so memory stays constant whatever the file size. Each frame borrows
//!   that buffer until the next call. A damaged file yields every frame before the damage,
//!   then one [`CaptureError`] naming the packet number and byte offset where it broke.
//!   The pcap file header and record headers are parsed with `pcap-file`; pcapng blocks
//!   are framed here (to know offsets and to survive truncation) and interface
//!   descriptions are parsed with `pcap-file`, falling back to the fixed fields when its
//!   strict option parser refuses a block. Packet block bodies are read here because
//!   `pcap-file` ignores `if_tsresol` and rejects a whole block for one odd option.
//! * [`Decapsulator`] is a sans-IO state machine: frames go in through
//!   [`Decapsulator::push`], transport [`Payload`]s come out through a callback. Link
//!   layers (Ethernet with VLAN tags, Linux cooked v1 and v2, BSD NULL/LOOP, raw IP) are
//!   peeled off, then etherparse's slices read IPv4/IPv6 (laxly, so snaplen-cut frames
//!   still yield what they hold) and UDP/TCP. IP fragments go to etherparse's
//!   `IpDefragPool`, bounded in time and count. TCP goes through
//!   per-direction stream reassembly ([`tcp`]) and a user-chosen [`TcpFraming`]. A UDP
//!   payload that was not reassembled borrows straight from the frame: the UDP fast path
//!   allocates nothing. Anything that is not UDP or TCP over IP, or cannot be parsed, is
//!   counted in [`DecapStats`], never a panic.
//! * [`PcapWriter`] writes classic pcap, plus helpers that build Ethernet/IP/UDP and
//!   Ethernet/IP/TCP frames, for `sniff -w`, `proxy --record` and tests.
//!
//! UDP checksums are never verified: loopback captures carry unfilled checksums.

pub mod decap;
mod frame_sink;
pub mod linktype;
mod open;
pub mod pcapng_writer;
pub mod reader;
pub mod ring;
pub mod synth;
pub mod tcp;
pub mod writer;

pub use open::{open_capture, Capture};

pub use decap::{DecapConfig, DecapStats, Decapsulator, Payload, Transport};
pub use frame_sink::FrameSink;
pub use pcapng_writer::PcapngWriter;
pub use reader::{CaptureError, CaptureErrorKind, CaptureFormat, CaptureReader, Frame, SharedMap};
pub use tcp::{FramingError, StreamFramer, TcpFraming};
pub use writer::{build_ip_tcp, build_ip_udp, PcapWriter, TcpFlags, TsResolution};
