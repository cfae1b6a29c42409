//! The rule catalogue: stable ids, severities, titles and explanations. Ids never change
//! meaning; new rules get new ids.

use std::fmt;

/// How bad a finding is. Ordered: `Info < Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
    pub fn parse(s: &str) -> Option<Severity> {
        match s.to_ascii_lowercase().as_str() {
            "info" => Some(Severity::Info),
            "warning" | "warn" => Some(Severity::Warning),
            "error" => Some(Severity::Error),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One rule of the catalogue.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// Stable id, `D` and three digits.
    pub id: &'static str,
    /// Short kebab-case name.
    pub name: &'static str,
    /// Group: headers, sessions, direction, state, voice.
    pub group: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    pub explanation: &'static str,
}

macro_rules! rules {
    ($($konst:ident = $id:literal $name:literal $group:literal $sev:ident $title:literal $expl:literal;)*) => {
        $(pub const $konst: &Rule = &Rule {
            id: $id,
            name: $name,
            group: $group,
            severity: Severity::$sev,
            title: $title,
            explanation: $expl,
        };)*
        /// Every rule, in id order.
        pub const ALL: &[&Rule] = &[$($konst),*];
    };
}

rules! {
    BAD_MAGIC = "D001" "bad-magic" "headers" Error
        "Bad magic on a flow that carries Dissonance"
        "A payload on a flow (or inside a relay) that otherwise carries Dissonance packets does not start with the magic 8B C7 (or C7 8B for 6.0.x) where a packet was expected. The real reader drops such packets silently (a warning in the log), so whatever the sender meant is lost. Usually the integration wrote its own header at a different length, or sent a buffer from the wrong offset. Datagrams that start with a zero byte are transport control (docs/transports.md) and are not flagged.";
    UNKNOWN_TYPE = "D002" "unknown-type" "headers" Error
        "Unknown message type"
        "The magic is right but the type byte is not one of 1-11. Real readers log and ignore the packet. It is either corruption or a sender speaking another protocol version (the 1.x legacy protocol numbers its messages differently).";
    MALFORMED = "D003" "malformed" "headers" Error
        "Truncated or malformed message"
        "A field runs past the end of the packet (or a legacy HandshakeResponse names a room id missing from its name list). The real PacketReader throws on this: on the server that is a fatal error that restarts it with a new session (everyone is kicked), on a client a disconnect. The finding names the field and the byte offset where the read started.";
    TRAILING = "D004" "trailing-bytes" "headers" Warning
        "Trailing bytes after the message"
        "The packet decodes, but bytes are left after its last field. The real reader ignores them (and the server re-broadcasts ClientState/DeltaChannelState with them verbatim), so this is harmless to Dissonance but points at a sender that writes a wrong length or reuses a buffer without clearing it.";
    OVERSIZE = "D005" "oversize" "headers" Warning
        "Packet larger than the real 1024-byte buffers"
        "Dissonance's send and receive buffers are 1024 bytes, so no real client or server ever produces a larger packet (docs/protocol.md §10.1). A receiver built on the real code cannot accept it; a received audio frame over 1024 bytes makes the client throw.";

    WRONG_SESSION = "D010" "wrong-session" "sessions" Warning
        "Packet from another session"
        "The packet's session id differs from the session the server handed out (HandshakeResponse) or announced (ErrorWrongSession). The server drops ClientState, DeltaChannelState and relays with a wrong session and answers ErrorWrongSession; clients drop voice, text and state of another session silently. Typical cause: a client that kept its old session across a server restart.";
    WRONG_SESSION_UNANSWERED = "D011" "wrong-session-unanswered" "sessions" Warning
        "Wrong session not answered with ErrorWrongSession"
        "A client sent the server a ClientState, DeltaChannelState or relay with a stale session and the server did not answer with ErrorWrongSession within one second. The real server always answers (unreliably), which is how the client learns it must reconnect; a custom server that drops the packet silently leaves the client stranded.";
    STALE_STORM = "D012" "stale-session-storm" "sessions" Error
        "Client keeps using a stale session"
        "After being told (ErrorWrongSession) that its session is not the server's, the client keeps sending packets with it instead of reconnecting. Real clients shut down and reconnect on the first ErrorWrongSession whose session differs from theirs; an integration that swallows that error, or restarts the client without a new handshake, produces this storm. Threshold: --storm N packets after the first ErrorWrongSession (default 10).";
    SESSION_NO_HANDSHAKE = "D013" "session-change-without-handshake" "sessions" Error
        "Session changed without a new handshake"
        "A client address starts using the server's new session without having sent a HandshakeRequest and received a HandshakeResponse for it. Real clients only learn a session from a HandshakeResponse; skipping the handshake means the server has no client record (no id, no name) for it.";
    RESPONSE_WITHOUT_REQUEST = "D014" "response-without-request" "sessions" Warning
        "HandshakeResponse without a HandshakeRequest"
        "The server sent a HandshakeResponse to an address that had no outstanding HandshakeRequest in the capture. The real server only answers requests. (A capture that starts in the middle of a handshake can show this once at its very beginning.)";

    CLIENT_SENT_SERVER_TYPE = "D020" "client-sent-server-type" "direction" Error
        "Server-only message type sent by a client"
        "HandshakeResponse, ErrorWrongSession and RemoveClient are only ever sent by the server. Sent by a client (directly to a peer or to the server) they are either ignored (the server treats them as client-only) or, for ErrorWrongSession, make the receiving client shut down: nothing authenticates the sender (docs/protocol.md §10.3).";
    SERVER_SENT_CLIENT_TYPE = "D021" "server-sent-client-type" "direction" Error
        "Client-only message type sent by the server"
        "HandshakeRequest, ServerRelayReliable/Unreliable and HandshakeP2P are only sent by clients. Real clients treat 4, 7 and 8 as server-only (error log, ignore) and a HandshakeP2P from the server makes the client think the server's connection reaches another client.";
    IGNORED_BY_SERVER = "D022" "unwrapped-to-server" "direction" Error
        "VoiceData, TextData or HandshakeP2P sent to the server unwrapped"
        "The server does no routing: voice and text must reach it inside ServerRelayUnreliable/ServerRelayReliable with a destination list. Sent bare to the server they are logged as errors and dropped, so nobody hears or reads them.";
    VOICE_RELIABLE = "D023" "voice-in-reliable-relay" "direction" Warning
        "VoiceData inside ServerRelayReliable"
        "Voice should be relayed with ServerRelayUnreliable (type 8): the server forwards type 7 payloads on the reliable, ordered channel, where one lost datagram holds up all later voice (latency grows). Clients up to 6.1.0 had this bug.";
    TEXT_UNRELIABLE = "D024" "text-in-unreliable-relay" "direction" Error
        "TextData inside ServerRelayUnreliable"
        "Text should be relayed with ServerRelayReliable (type 7): the server forwards type 8 payloads unreliably, so a text message can be lost without anyone noticing.";
    RELAYED_P2P = "D025" "relayed-handshake-p2p" "direction" Error
        "HandshakeP2P wrapped in a relay"
        "HandshakeP2P says 'the connection this arrived on reaches client X'; it only makes sense directly between two peers. The server refuses to relay it (drops it with an error log), so the P2P introduction never happens.";
    RELAY_UNKNOWN_DEST = "D026" "relay-to-unknown-client" "direction" Warning
        "Relay to a client id not in the session"
        "A relay lists a destination id that is not (or no longer) a client of the session. The server skips it with a warning. The pseudo destination 0xFFFF (always-send, 9.0.2+) is not flagged. Usually the sender's peer table is stale (a RemoveClient it did not apply).";
    RELAY_SERVER_TYPE = "D027" "relay-wraps-server-type" "direction" Error
        "Relay wrapping something other than voice or text"
        "Relays are meant to carry VoiceData and TextData. The server forwards any other type unchanged (only HandshakeP2P is filtered, see D025), so a client can make the server deliver ClientState, RemoveClient or ErrorWrongSession (which makes the receiver shut down) to other clients.";

    STATE_MISMATCH = "D030" "client-state-mismatch" "state" Error
        "ClientState disagrees with the handshake of that address"
        "A client sent a ClientState whose client id or player name is not what its own HandshakeRequest asked for and HandshakeResponse assigned. The server trusts the id inside the packet, so this client overwrites another client's state (name, codec, rooms).";
    DELTA_UNKNOWN = "D031" "delta-for-unknown-client" "state" Warning
        "DeltaChannelState for an unknown client"
        "A room join or leave names a client id that never appeared in the session. The server re-broadcasts it to everyone anyway, then warns and stops; every client ignores it.";
    REMOVE_UNKNOWN = "D032" "remove-unknown-client" "state" Warning
        "RemoveClient for an unknown client"
        "The server removes a client id that was never part of the session in the capture. Clients ignore it; it usually means the server's table and the clients' tables disagree.";
    NULL_NAME = "D033" "null-name" "state" Error
        "Null room or player name"
        "A player name in HandshakeRequest/ClientState, or a room name in ClientState/DeltaChannelState, is the null string (length prefix 00 00). A null player name makes the server ignore the handshake or throw; a null room name makes every receiver throw when it joins the room (fatal), and the server re-broadcasts the packet before parsing it, so one bad packet knocks out every client.";
    TEXT_RECIPIENT_TYPE = "D034" "text-recipient-type" "state" Error
        "TextData recipient type other than 0 or 1"
        "The recipient-type byte of TextData must be 0 (room) or 1 (player). Any other value makes the receiving client throw (fatal disconnect), still in 9.0.9.";
    ROOM_COLLISION = "D035" "room-id-collision" "state" Warning
        "Two listened rooms with the same room id"
        "A client listens to two different room names whose 16-bit room ids (ToRoomId, docs/protocol.md §5) are equal. Up to 7.x this is a fatal error (Dictionary.Add throws), 9.0.0 ignores the second room, 9.0.9 merges them: listeners of one also hear the other.";
    NAME_REUSED = "D036" "player-name-reused" "state" Warning
        "Player name reused by a different address"
        "A HandshakeRequest from one address uses the player name of a client that is still connected from another address. The real server evicts the older client (without telling it), so two players with the same name knock each other out in turn. Player names must be unique.";

    VOICE_GAP = "D040" "voice-sequence-gap" "voice" Warning
        "Voice sequence gap"
        "More consecutive voice frames of one speaker are missing on one path than --max-gap allows (default 2). Sequence numbers only advance for packets that were sent, so a gap is loss between the sender and the capture point (or a sender that skips numbers). The voice quality table has the totals.";
    VOICE_DUPLICATE = "D041" "voice-duplicate" "voice" Warning
        "Duplicate voice packet"
        "The same sequence number of a speaker arrived twice on one path. The real receiver decodes both into the same frame index (wasted bandwidth, and with a jitter buffer a possible glitch). Copies on different paths (the relay to the server and each forward) are not duplicates.";
    VOICE_REORDER = "D042" "voice-reordered" "voice" Warning
        "Voice packet reordered"
        "A voice packet arrived more than --max-reorder positions (default 2) after a later sequence number on the same path. Receivers accept late packets while the frame is still buffered; beyond the jitter buffer they are dropped.";
    OPUS_FRAME_MISMATCH = "D043" "opus-frame-size-mismatch" "voice" Error
        "Opus frame duration disagrees with the advertised frame size"
        "The duration in the Opus TOC byte differs from the frame size the speaker advertised in its HandshakeRequest/ClientState. Receivers configure their decoder from the advertised setting and treat any other sample count as a decode error: the speaker is not heard.";
    OPUS_RATE = "D044" "codec-unsupported" "voice" Error
        "Sample rate Opus cannot decode, or unknown codec"
        "The advertised codec settings name a sample rate Opus does not support (only 8, 12, 16, 24 and 48 kHz), or a codec byte other than 0 (Identity) and 1 (Opus). The real client logs an error and plays silence for that speaker.";
    VOICE_UNKNOWN_SENDER = "D045" "voice-from-unknown-client" "voice" Warning
        "Voice from a client id that never joined"
        "VoiceData names a sender id that never had a handshake or ClientState in this session. Real receivers drop it (unknown sender), so nobody hears it.";
}

/// Finds a rule by id (`D010`, case-insensitive) or name (`wrong-session`).
pub fn find(key: &str) -> Option<&'static Rule> {
    ALL.iter()
        .copied()
        .find(|r| r.id.eq_ignore_ascii_case(key) || r.name.eq_ignore_ascii_case(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_unique() {
        let mut ids: Vec<_> = ALL.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ALL.len());
        let mut names: Vec<_> = ALL.iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert_eq!(find("d010"), Some(WRONG_SESSION));
        assert_eq!(find("null-name"), Some(NULL_NAME));
    }
}
