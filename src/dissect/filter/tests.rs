use super::*;
use crate::codec::{
    Channel, ChannelBitfield, ChannelType, Message, Packet, PacketOptions, Seq, ServerRelay,
    TextData, Variant, VoiceData, WireStr,
};
use crate::dissect::session::Direction;
use crate::output::json::Names;
use crate::output::Head;

struct Table;
impl Names for Table {
    fn client(&self, id: u16) -> Option<&str> {
        match id {
            1 => Some("alice"),
            2 => Some("bob"),
            _ => None,
        }
    }
    fn room(&self, id: u16) -> Option<&str> {
        (id == crate::codec::room_id("lobby")).then_some("lobby")
    }
}

fn head() -> Head {
    Head {
        number: 42,
        ts_ns: 1_700_000_000_250_000_000,
        rel_s: 2.5,
        src: "10.0.0.7:5000".parse().unwrap(),
        dst: "[::1]:7777".parse().unwrap(),
        transport: "udp",
        offset: 0,
        first_frame: None,
        index: 0,
        direction: Direction::ClientToServer,
    }
}

const CHANNELS: [Channel; 2] = [
    Channel {
        bitfield: ChannelBitfield(0x8001), // room, volume byte 0x80
        recipient: 0,
    },
    Channel {
        bitfield: ChannelBitfield(0xFF04), // player, closing
        recipient: 2,
    },
];

fn voice(seq: u16) -> Packet<'static> {
    let mut ch = CHANNELS;
    ch[0].recipient = crate::codec::room_id("lobby");
    let ch: &'static [Channel] = Box::leak(Box::new(ch));
    Packet {
        variant: Variant::Modern,
        message: Message::VoiceData(VoiceData {
            session: 77,
            sender: 1,
            options: PacketOptions(0x81),
            seq,
            channels: Seq::Items(ch),
            audio: &[0xfc, 0x01, 0x02],
        }),
        trailing: &[],
    }
}

fn text(s: &'static str) -> Packet<'static> {
    Packet {
        variant: Variant::Modern,
        message: Message::TextData(TextData {
            session: 77,
            recipient_type_byte: ChannelType::Player.text_byte(),
            sender: 2,
            target: 1,
            text: WireStr::new(s),
        }),
        trailing: &[],
    }
}

fn eval_on(expr: &str, p: Packet<'_>) -> bool {
    let f = Filter::compile(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let h = head();
    let result = Ok(p);
    f.matches(&Subject {
        head: Some(&h),
        bytes: &[0u8; 20],
        result: &result,
        names: &Table,
    })
}

fn error_of(expr: &str) -> String {
    Filter::compile(expr).unwrap_err().to_string()
}

#[test]
fn comparisons_on_numbers() {
    assert!(eval_on("seq == 100", voice(100)));
    assert!(eval_on("voice.seq > 99 && seq < 101", voice(100)));
    assert!(eval_on("seq >= 100 and seq <= 100", voice(100)));
    assert!(!eval_on("seq != 100", voice(100)));
    assert!(eval_on("seq != 5", voice(100)));
    assert!(eval_on("session == 0x4d", voice(1)));
    assert!(eval_on("seq eq 7", voice(7)));
    assert!(eval_on("rel > 2 && rel < 2.6", voice(1)));
    assert!(eval_on("packet == 42", voice(1)));
    assert!(eval_on("ts == 1700000000.25", voice(1)));
}

#[test]
fn absent_fields_compare_false_but_negation_is_true() {
    // A TextData has no seq.
    assert!(!eval_on("seq == 5", text("hi")));
    assert!(!eval_on("seq != 5", text("hi")));
    assert!(eval_on("!(seq == 5)", text("hi")));
    assert!(eval_on("not seq", text("hi")));
    assert!(eval_on("text", text("hi")));
    assert!(!eval_on("text", voice(1)));
}

#[test]
fn strings_contains_matches() {
    assert!(eval_on(r#"type == "TextData""#, text("hi")));
    assert!(eval_on("type == TextData", text("hi")));
    assert!(eval_on(r#"text contains "ell""#, text("hello")));
    assert!(!eval_on(r#"text contains "xyz""#, text("hello")));
    assert!(eval_on(r#"text matches "^h.l+o$""#, text("hello")));
    assert!(eval_on(r#"text ~ "L{2}""#, text("heLLo")));
    assert!(eval_on(
        r#"sender_name == "bob" && target_name == 'alice'"#,
        text("x")
    ));
    assert!(eval_on(
        r#"text == "a \"quoted\" word""#,
        text("a \"quoted\" word")
    ));
    assert!(eval_on("direction == client_to_server", text("x")));
    assert!(eval_on("transport == udp && variant == modern", text("x")));
}

#[test]
fn multi_valued_fields_match_any_value() {
    assert!(eval_on(r#"channels.recipient_name == "lobby""#, voice(1)));
    assert!(eval_on(r#"channels.recipient_name == "bob""#, voice(1)));
    assert!(eval_on("channels.closing", voice(1)));
    assert!(eval_on(
        "channels.type == Player && channels.volume == 255",
        voice(1)
    ));
    assert!(!eval_on("channels.recipient_name == carol", voice(1)));
    // != : some value, and none equal.
    assert!(!eval_on("channels.type != Room", voice(1)));
    assert!(eval_on("channels.priority == Default", voice(1)));
    assert!(eval_on("num_channels == 2 && audio_len == 3", voice(1)));
    assert!(eval_on(r#"audio_hex == "fc0102""#, voice(1)));
    assert!(eval_on(
        "options.extended_range && options.channel_session == 1",
        voice(1)
    ));
}

#[test]
fn sets_and_ranges() {
    assert!(eval_on("seq in {1 5 9}", voice(5)));
    assert!(eval_on("seq in {1, 5, 9}", voice(9)));
    assert!(!eval_on("seq in {1 5 9}", voice(6)));
    assert!(eval_on("seq in {1 100..200}", voice(150)));
    assert!(eval_on("seq in 100..200", voice(100)));
    assert!(eval_on("seq in 100..200", voice(200)));
    assert!(!eval_on("seq in 100..200", voice(201)));
    assert!(eval_on("type in {VoiceData TextData}", voice(1)));
    assert!(eval_on(r#"sender_name in {"alice" "bob"}"#, voice(1)));
}

#[test]
fn addresses_and_ports() {
    assert!(eval_on("src == 10.0.0.7", voice(1)));
    assert!(eval_on("src == 10.0.0.0/8", voice(1)));
    assert!(!eval_on("src == 10.0.1.0/24", voice(1)));
    assert!(eval_on("dst == ::1 && dst_port == 7777", voice(1)));
    assert!(eval_on("dst == [::1]", voice(1)));
    assert!(eval_on("addr == ::1 && port == 5000", voice(1)));
    assert!(eval_on("src_port in {5000 6000}", voice(1)));
    assert!(eval_on("src != 127.0.0.1", voice(1)));
}

#[test]
fn precedence_and_parentheses() {
    // && binds tighter: false || (true && true).
    assert!(eval_on(
        "seq == 1 || seq == 2 && type == VoiceData",
        voice(2)
    ));
    assert!(!eval_on(
        "(seq == 1 || seq == 2) && type == TextData",
        voice(2)
    ));
    assert!(eval_on("!seq == 3", voice(2)));
    assert!(eval_on("!!(seq == 2)", voice(2)));
    assert!(eval_on("not (seq == 3) and not malformed", voice(2)));
}

#[test]
fn relays_inner_fields() {
    let inner = text("wrapped").to_vec().unwrap();
    let inner: &'static [u8] = Box::leak(inner.into_boxed_slice());
    let dest: &'static [u16] = &[1, 2];
    let p = Packet {
        variant: Variant::Modern,
        message: Message::ServerRelayReliable(ServerRelay {
            session: 77,
            destinations: Seq::Items(dest),
            payload: inner,
        }),
        trailing: &[],
    };
    assert!(eval_on("type == ServerRelayReliable", p.clone()));
    assert!(eval_on("inner.type == TextData", p.clone()));
    assert!(eval_on(
        r#"inner.text == "wrapped" && inner.sender_name == bob"#,
        p.clone()
    ));
    assert!(eval_on("destinations == 2 && payload_len > 5", p.clone()));
    assert!(eval_on("server_relay_verdict == relay", p.clone()));
    assert!(!eval_on("text", p.clone()));
    assert!(!eval_on("inner.type == TextData", text("x")));
}

#[test]
fn malformed_packets() {
    let bytes = [0x8b, 0xc7, 0x03, 0x00];
    let result = Packet::decode(&bytes);
    assert!(result.is_err());
    let h = head();
    let s = Subject {
        head: Some(&h),
        bytes: &bytes,
        result: &result,
        names: &Table,
    };
    let m = |e: &str| Filter::compile(e).unwrap().matches(&s);
    assert!(m("malformed"));
    assert!(m("type == TextData && error.kind == truncated"));
    assert!(m("error.need == 4 && error.left == 1 && error.primitive == uint && error.offset == 3 && size == 4"));
    assert!(m(r#"error.message contains "truncated""#));
    assert!(m("magic_ok && !variant"));
    let bad = [0x12, 0x34, 0x03];
    let result = Packet::decode(&bad);
    let s = Subject {
        head: Some(&h),
        bytes: &bad,
        result: &result,
        names: &Table,
    };
    let m = |e: &str| Filter::compile(e).unwrap().matches(&s);
    assert!(m(
        "rejected == bad_magic && magic == 0x1234 && !magic_ok && !type"
    ));
}

#[test]
fn parse_errors_point_at_the_column() {
    assert_eq!(error_of("seq >"), "expected a value after '>' at column 6");
    assert_eq!(
        error_of("seq == 1 &&"),
        "expected an expression after '&&' at column 12"
    );
    assert_eq!(
        error_of("sequence == 1"),
        "unknown field 'sequence' (see `dissonance dump --help` or the guide for field names) at column 1"
    );
    assert_eq!(
        error_of("(seq == 1"),
        "expected ')' to close the '(' at column 1 at column 10"
    );
    assert_eq!(
        error_of("seq == 1)"),
        "unexpected ')' after a complete expression at column 9"
    );
    assert_eq!(error_of("text == \"abc"), "unterminated string at column 9");
    assert_eq!(
        error_of("seq == abc"),
        "seq is a number; 'abc' is not at column 8"
    );
    assert_eq!(
        error_of("malformed == maybe"),
        "malformed is true or false; 'maybe' is neither at column 14"
    );
    assert_eq!(
        error_of("type == TxtData"),
        "type is never 'TxtData'; it is one of: ClientState, VoiceData, TextData, HandshakeRequest, HandshakeResponse, ErrorWrongSession, ServerRelayReliable, ServerRelayUnreliable, DeltaChannelState, RemoveClient, HandshakeP2P at column 9"
    );
    assert_eq!(
        error_of("seq contains 1"),
        "'contains' needs a text field; seq is not one at column 14"
    );
    assert_eq!(
        error_of("text in {a..b}"),
        "a range needs a numeric field; text is not one at column 10"
    );
    assert_eq!(error_of("seq in {}"), "empty set at column 8");
    assert_eq!(
        error_of("seq in {1 2"),
        "expected '}' to close the '{' at column 8 at column 12"
    );
    assert_eq!(
        error_of("src < 10.0.0.1"),
        "src can only be compared with == or != at column 7"
    );
    assert_eq!(
        error_of("src == 10.0.0.300"),
        "src is an IP address; '10.0.0.300' is not an address or address/prefix at column 8"
    );
    assert_eq!(
        error_of("inner.src == 1.2.3.4").split(" (").next(),
        Some("unknown field 'inner.src'")
    );
    assert!(error_of("text matches \"(\"").starts_with("bad regular expression"));
    assert_eq!(error_of(""), "empty filter at column 1");
    assert_eq!(
        error_of("== 3"),
        "expected a field name, found '==' at column 1"
    );
    assert_eq!(
        error_of("seq == 3 $"),
        "unexpected character '$' at column 10"
    );
    // Columns count characters, not bytes.
    assert_eq!(
        error_of("text == \"é\" &&"),
        "expected an expression after '&&' at column 15"
    );
}

#[test]
fn every_documented_field_parses() {
    for (name, _, _) in FIELDS {
        assert!(Field::parse(name).is_some(), "{name}");
        Filter::compile(name).unwrap();
        Filter::compile(&format!("inner.{name}")).ok();
    }
}
