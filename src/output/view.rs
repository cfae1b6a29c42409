//! [`View`]: how to find packets and what to print, the options `dump`, `sniff`, `proxy`
//! and `replay` share.

use super::{Format, Printer};
use crate::capture::{DecapConfig, TcpFraming};
use crate::dissect::locate::PayloadMode;
use crate::dissect::pipeline::{Dissector, Filters, Limits};

#[derive(Debug, Clone)]
pub struct View {
    pub format: Format,
    /// Where Dissonance packets start in each UDP datagram / TCP frame.
    pub payload: PayloadMode,
    /// How TCP streams are cut into frames.
    pub tcp_framing: TcpFraming,
    pub filters: Filters,
    /// `--skip`, `-c`.
    pub limits: Limits,
    /// Print session events (joins, room changes, leaves) between packets.
    pub show_events: bool,
    /// JSON: include `audio_hex` / `payload_hex`.
    pub hex: bool,
    /// JSON: also print session events and transport goodbyes as objects.
    pub events: bool,
    /// Colours in text output.
    pub color: bool,
    /// The columns of [`Format::Fields`].
    pub fields: Option<super::fields::FieldsSpec>,
}

impl View {
    pub fn dissector(&self) -> Dissector {
        let mut d = Dissector::new(self.payload, self.filters.clone());
        d.show_events = self.show_events;
        d.limits = self.limits;
        d
    }
    pub fn decap_config(&self) -> DecapConfig {
        DecapConfig {
            tcp_framing: self.tcp_framing,
            ..DecapConfig::default()
        }
    }
    /// A printer for this view (line-buffered: live output).
    pub fn printer<W: std::io::Write>(&self, out: W) -> Printer<W> {
        let mut p = Printer::new(self.format, out, self.color, true);
        p.json_events = self.events;
        p.fields = self.fields.clone();
        p
    }
}
