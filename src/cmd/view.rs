//! Options shared by `dump`, `sniff`, `proxy` and `replay`: how to find packets, what to
//! print; and the clap-facing enums that convert into the library's types.

use std::io::IsTerminal;

use dissonance_tools::capture::TcpFraming;
use dissonance_tools::codec::MessageType;
use dissonance_tools::dissect::filter::Filter;
use dissonance_tools::dissect::locate::PayloadMode;
use dissonance_tools::dissect::pipeline::{Filters, Limits, TimeBound};
use dissonance_tools::output::fields::FieldsSpec;
use dissonance_tools::output::{Format, View};

/// The input capture of `dump`, `voice` and `replay`: positional, or `-r FILE` as tshark.
#[derive(clap::Args, Debug, Clone)]
pub struct Input {
    /// Capture file (pcap or pcapng), or `-` for standard input.
    #[arg(value_name = "CAPTURE", required_unless_present = "read")]
    capture: Option<std::path::PathBuf>,
    /// The capture file, as `tshark -r` (the positional CAPTURE works too).
    #[arg(
        short = 'r',
        long = "read",
        value_name = "FILE",
        conflicts_with = "capture"
    )]
    read: Option<std::path::PathBuf>,
}

impl Input {
    pub fn path(&self) -> std::path::PathBuf {
        self.read
            .clone()
            .or(self.capture.clone())
            .unwrap_or_default()
    }
}

/// Options shared by `dump`, `sniff` and `proxy`: how to find packets, what to print.
#[derive(clap::Args, Debug, Clone)]
pub struct ViewArgs {
    /// Output format (`-T` is the same, as tshark's `-T fields`).
    #[arg(long, short = 'F', short_alias = 'T', value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
    /// With `-T fields` or `-F csv`: a field to print, by its JSON key's dotted name
    /// (`packet`, `rel`, `src`, `type`, `seq`, `sender_name`, `channels.recipient`,
    /// `inner.text`, ...; repeatable, in order).
    #[arg(short = 'e', long = "field", value_name = "FIELD")]
    pub fields: Vec<String>,
    /// With `-T fields` or `-F csv`: `separator=,` (`/t` tab, `/s` space), `header=y|n`,
    /// `quote=d|s|n`, `aggregator=;` (between a field's several values); repeatable.
    #[arg(short = 'E', long = "field-option", value_name = "NAME=VALUE")]
    pub field_options: Vec<String>,
    /// Where Dissonance packets start in each UDP datagram / TCP frame: `auto` (offset 0
    /// when it decodes, else detect a game stack per flow or scan for the magic and lock
    /// the offset), `scan` (`auto` without the stack detection), `raw` (offset 0 only), `offset:N` (a game transport header of N
    /// bytes), or a game stack decoded exactly: `mirror` (Mirror over kcp2k), `ngo`
    /// (Netcode for GameObjects over Unity Transport), `fishnet` (FishNet over Tugboat).
    #[arg(
        long,
        default_value = "auto",
        value_name = "auto|scan|raw|offset:N|mirror|ngo|fishnet"
    )]
    pub payload: PayloadMode,
    /// How TCP streams are cut into frames: a length prefix of 2 or 4 bytes in either
    /// byte order, or `none` (each run of stream data is one frame).
    #[arg(long, value_enum, default_value_t = FramingArg::U16be)]
    pub tcp_framing: FramingArg,
    /// Display filter: only packets matching EXPR, e.g. `type == TextData`,
    /// `voice.seq in 100..200 && sender_name == "alice"`, `src == 10.0.0.0/8`. Fields are
    /// the JSON keys by dotted name (`inner.type`, `channels.recipient_name`, `rel`, ...);
    /// operators `== != < <= > >= contains matches in {..} && || !` (docs/guide.md,
    /// "Display filters").
    // `--display-filter`, as tshark: `-f/--filter` is the BPF capture filter (sniff).
    #[arg(short = 'Y', long = "display-filter", value_name = "EXPR", value_parser = super::values::filter)]
    pub display_filter: Option<Filter>,
    /// Stop after COUNT selected packets.
    #[arg(short = 'c', long = "count", value_name = "COUNT")]
    pub count: Option<u64>,
    /// Leave out the first N selected packets.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub skip: u64,
    /// Only packets at or after TIME: seconds from the first packet (`30`, `1.5s`, `2m`)
    /// or UTC (`2024-05-01T12:00:00Z`).
    #[arg(long, value_name = "TIME", value_parser = super::values::time_bound)]
    pub from: Option<TimeBound>,
    /// Only packets at or before TIME (as --from).
    #[arg(long, value_name = "TIME", value_parser = super::values::time_bound)]
    pub to: Option<TimeBound>,
    /// Only messages of this type, or relays wrapping it (name or number; repeatable).
    /// Shorthand for -Y 'type == T || inner.type == T'.
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_type)]
    pub types: Vec<MessageType>,
    /// Only messages about this client: sender, target, destination or subject (name or id; repeatable).
    #[arg(long = "client", value_name = "NAME|ID")]
    pub clients: Vec<String>,
    /// Only messages about this room (name or room id; repeatable).
    #[arg(long = "room", value_name = "NAME|ID")]
    pub rooms: Vec<String>,
    /// Only messages of this session id (repeatable).
    #[arg(long = "session", value_name = "ID")]
    pub sessions: Vec<u32>,
    /// Do not print session events (joins, room changes, leaves) between packets.
    #[arg(long, conflicts_with = "events")]
    pub no_events: bool,
    /// JSON: include the wire bytes of audio frames and relay payloads (`audio_hex`,
    /// `payload_hex`), as `decode --json` does. Off by default: they are most of the
    /// output and rarely wanted.
    #[arg(long)]
    pub hex: bool,
    /// In json/ndjson output, also print session events and transport goodbyes as objects
    /// with an `event` field (text output shows them by default).
    #[arg(long)]
    pub events: bool,
    /// Colours in text output.
    #[arg(long, value_enum, default_value_t = ColorArg::Auto)]
    pub color: ColorArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FramingArg {
    U16be,
    U16le,
    U32be,
    U32le,
    None,
}

impl From<FramingArg> for TcpFraming {
    fn from(f: FramingArg) -> TcpFraming {
        match f {
            FramingArg::U16be => TcpFraming::U16Be,
            FramingArg::U16le => TcpFraming::U16Le,
            FramingArg::U32be => TcpFraming::U32Be,
            FramingArg::U32le => TcpFraming::U32Le,
            FramingArg::None => TcpFraming::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

fn parse_type(s: &str) -> Result<MessageType, String> {
    MessageType::parse(s).ok_or_else(|| {
        let names: Vec<&str> = MessageType::ALL.iter().map(|t| t.name()).collect();
        format!("unknown message type '{s}'; one of: {}", names.join(", "))
    })
}

impl ViewArgs {
    /// The library's view of these options (colour decided now, from stdout).
    pub fn view(&self) -> Result<View, String> {
        Ok(View {
            format: self.format(),
            payload: self.payload,
            tcp_framing: self.tcp_framing.into(),
            filters: self.filters(),
            limits: self.limits(),
            show_events: !self.no_events,
            hex: self.hex,
            events: self.events,
            color: self.color(),
            fields: self.fields_spec()?,
        })
    }
    /// Refuses options this run would ignore: `packets` is false when no packet is
    /// printed (`--summary`, `--flows`). A flag that does nothing is a silent no-op.
    pub fn check_used(&self, packets: bool) -> Result<(), String> {
        let json = matches!(self.format, FormatArg::Json | FormatArg::Ndjson);
        if !packets {
            let given = [
                (self.format != FormatArg::Text, "--format"),
                (!self.types.is_empty(), "--type"),
                (!self.clients.is_empty(), "--client"),
                (!self.rooms.is_empty(), "--room"),
                (!self.sessions.is_empty(), "--session"),
                (self.hex, "--hex"),
                (self.events, "--events"),
                (self.no_events, "--no-events"),
                (self.display_filter.is_some(), "-Y"),
                (self.skip > 0, "--skip"),
                (self.from.is_some(), "--from"),
                (self.to.is_some(), "--to"),
                (!self.fields.is_empty(), "-e"),
                (!self.field_options.is_empty(), "-E"),
            ];
            if let Some((_, flag)) = given.iter().find(|(on, _)| *on) {
                return Err(format!(
                    "{flag} applies to printed packets, and none are printed"
                ));
            }
        }
        if self.hex && !json {
            return Err("--hex applies to -F json and -F ndjson".into());
        }
        if self.events && !json {
            return Err(
                "--events applies to -F json and -F ndjson (text shows events already)".into(),
            );
        }
        if self.no_events && self.format != FormatArg::Text {
            return Err(
                "--no-events applies to text output (other formats show no events unless --events)"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn format(&self) -> Format {
        self.format.into()
    }
    pub fn filters(&self) -> Filters {
        Filters {
            types: self.types.clone(),
            clients: self.clients.clone(),
            rooms: self.rooms.clone(),
            sessions: self.sessions.clone(),
            expr: self.display_filter.clone(),
            from: self.from,
            to: self.to,
        }
    }
    /// The columns of `-T fields` / `-F csv` (`None` for the other formats).
    pub fn fields_spec(&self) -> Result<Option<FieldsSpec>, String> {
        let mut spec = match self.format {
            FormatArg::Fields => FieldsSpec::tsv(&self.fields)?,
            FormatArg::Csv => FieldsSpec::csv(&self.fields)?,
            _ if !self.fields.is_empty() || !self.field_options.is_empty() => {
                return Err("-e and -E go with -T fields or -F csv".into())
            }
            _ => return Ok(None),
        };
        for o in &self.field_options {
            spec.option(o)?;
        }
        Ok(Some(spec))
    }
    pub fn limits(&self) -> Limits {
        Limits {
            skip: self.skip,
            count: self.count,
        }
    }
    pub fn color(&self) -> bool {
        match self.color {
            ColorArg::Always => true,
            ColorArg::Never => false,
            ColorArg::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

/// Output formats (`--format`); the library's [`Format`], for clap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// One line per message: time, addresses, direction, annotated summary.
    Text,
    /// A table of fixed-width columns, streamed (the header repeated every 50 rows).
    Table,
    /// One JSON array of packet objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// The `-e` fields, tab-separated, one line per packet (tshark's `-T fields`).
    Fields,
    /// The `-e` fields (or a default set) as CSV with a header line.
    Csv,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Text => Format::Text,
            FormatArg::Table => Format::Table,
            FormatArg::Json => Format::Json,
            FormatArg::Ndjson => Format::Ndjson,
            FormatArg::Fields | FormatArg::Csv => Format::Fields,
        }
    }
}
