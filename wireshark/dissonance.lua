-- Wireshark / tshark dissector for the network protocol of Dissonance (Unity voice chat).
--
-- Load it with `tshark -X lua_script:dissonance.lua ...`, or install it into the personal
-- plugin folder with `dissonance wireshark --install`. Needs Wireshark 3.6+ (Lua 5.2+).
--
-- It decodes exactly as `dissonance dump` does, and its test (tests/wireshark.rs) compares
-- the two field by field on every capture and test vector of the repository:
--   * every message type, both byte orders (6.1+ `8B C7`, 6.0.x `C7 8B`);
--   * one Wireshark field per key of the JSON schema (`dissonance.type`,
--     `dissonance.voice.sender`, `dissonance.text.text`, ...); a relay's wrapped packet is
--     the sub-tree `dissonance.relay.inner` holding the same fields;
--   * packets are found as `--payload auto` finds them: at offset 0 when one decodes there,
--     else at the first magic, with several packets per datagram and the offset locked per
--     flow after three confirmations;
--   * TCP is reassembled by Wireshark and cut by the `tcp_framing` preference as
--     `dissonance dump --tcp-framing` cuts it (u16be by default);
--   * names in the Info column and in the `*_name` fields come from the handshakes and
--     ClientStates seen before the packet (state kept per capture, so `-2` agrees);
--   * a malformed packet gets an expert info with our decoder's error text.

local VERSION = "1"

local proto = Proto("dissonance", "Dissonance Voice Chat")

---------------------------------------------------------------------------------------------
-- Fields. Names follow the keys of the JSON schema (README "JSON schema"); byte payloads
-- (`audio_hex`, `payload_hex`, `trailing_hex`) are bytes fields without the `_hex`.

local F = {}
local function add(key, pf)
    F[key] = pf
end
local U8, U16, U32 = ProtoField.uint8, ProtoField.uint16, ProtoField.uint32

add("payload_offset", U32("dissonance.payload_offset", "Offset in payload", base.DEC))
add("index_in_payload", U32("dissonance.index_in_payload", "Index in payload", base.DEC))
add("summary", ProtoField.string("dissonance.summary", "Summary"))
add("magic_ok", ProtoField.bool("dissonance.magic_ok", "Magic OK"))
add("magic", U16("dissonance.magic", "Magic", base.HEX))
add("rejected", ProtoField.string("dissonance.rejected", "Rejected"))
add("variant", ProtoField.string("dissonance.variant", "Byte order"))
add("type", ProtoField.string("dissonance.type", "Type"))
add("type_byte", U8("dissonance.type_byte", "Type byte", base.DEC))
add("size", U32("dissonance.size", "Size", base.DEC))
add("bytes_read", U32("dissonance.bytes_read", "Bytes read", base.DEC))
add("trailing_bytes", U32("dissonance.trailing_bytes", "Trailing bytes", base.DEC))
add("trailing", ProtoField.bytes("dissonance.trailing", "Trailing data"))
add("session", U32("dissonance.session", "Session", base.DEC_HEX))
add("client_id", U16("dissonance.client_id", "Client id", base.DEC))
add("client_name", ProtoField.string("dissonance.client_name", "Client name"))
add("name", ProtoField.string("dissonance.name", "Name"))
add("bye", ProtoField.none("dissonance.bye", "UDP transport goodbye"))
-- CodecSettings
add("codec", ProtoField.none("dissonance.codec", "Codec settings"))
add("codec.codec", U8("dissonance.codec.codec", "Codec", base.DEC))
add("codec.codec_name", ProtoField.string("dissonance.codec.codec_name", "Codec name"))
add("codec.frame_size", U32("dissonance.codec.frame_size", "Frame size (samples)", base.DEC))
add("codec.sample_rate", ProtoField.int32("dissonance.codec.sample_rate", "Sample rate (Hz)", base.DEC))
-- ClientState
add("state.rooms_encoding", ProtoField.string("dissonance.state.rooms_encoding", "Room list encoding"))
add("state.room", ProtoField.string("dissonance.state.room", "Room"))
-- VoiceData
add("voice.sender", U16("dissonance.voice.sender", "Sender", base.DEC))
add("voice.sender_name", ProtoField.string("dissonance.voice.sender_name", "Sender name"))
add("voice.options", ProtoField.none("dissonance.voice.options", "Options"))
add("voice.options.raw", U8("dissonance.voice.options.raw", "Options byte", base.HEX))
add("voice.options.channel_session", U8("dissonance.voice.options.channel_session", "Channel session", base.DEC))
add("voice.options.extended_range", ProtoField.bool("dissonance.voice.options.extended_range", "Extended range (7.1.2+)"))
add("voice.options.channel_session_range", U8("dissonance.voice.options.channel_session_range", "Channel session range", base.DEC))
add("voice.seq", U16("dissonance.voice.seq", "Sequence number", base.DEC))
add("voice.num_channels", U16("dissonance.voice.num_channels", "Channels", base.DEC))
add("voice.channel", ProtoField.none("dissonance.voice.channel", "Channel"))
add("voice.channel.bitfield", U16("dissonance.voice.channel.bitfield", "Bitfield", base.HEX))
add("voice.channel.recipient", U16("dissonance.voice.channel.recipient", "Recipient", base.DEC))
add("voice.channel.recipient_name", ProtoField.string("dissonance.voice.channel.recipient_name", "Recipient name"))
add("voice.channel.type", ProtoField.string("dissonance.voice.channel.type", "Channel type"))
add("voice.channel.closing", ProtoField.bool("dissonance.voice.channel.closing", "Closing"))
add("voice.channel.positional", ProtoField.bool("dissonance.voice.channel.positional", "Positional"))
add("voice.channel.priority", ProtoField.string("dissonance.voice.channel.priority", "Priority"))
add("voice.channel.volume", U8("dissonance.voice.channel.volume", "Volume byte", base.DEC))
add("voice.channel.amplitude", ProtoField.double("dissonance.voice.channel.amplitude", "Amplitude"))
add("voice.channel.session_id", U8("dissonance.voice.channel.session_id", "Channel session id", base.DEC))
add("voice.audio_len", U16("dissonance.voice.audio_len", "Audio length", base.DEC))
add("voice.audio", ProtoField.bytes("dissonance.voice.audio", "Audio frame (Opus)"))
-- TextData
add("text.recipient_type_byte", U8("dissonance.text.recipient_type_byte", "Recipient type byte", base.DEC))
add("text.recipient_type", ProtoField.string("dissonance.text.recipient_type", "Recipient type"))
add("text.sender", U16("dissonance.text.sender", "Sender", base.DEC))
add("text.sender_name", ProtoField.string("dissonance.text.sender_name", "Sender name"))
add("text.target", U16("dissonance.text.target", "Target", base.DEC))
add("text.target_name", ProtoField.string("dissonance.text.target_name", "Target name"))
add("text.text", ProtoField.string("dissonance.text.text", "Text"))
-- HandshakeResponse
add("response.form", ProtoField.string("dissonance.response.form", "Form"))
add("response.client", ProtoField.none("dissonance.response.client", "Client"))
add("response.client.name", ProtoField.string("dissonance.response.client.name", "Name"))
add("response.client.id", U16("dissonance.response.client.id", "Id", base.DEC))
add("response.room", ProtoField.none("dissonance.response.room", "Room"))
add("response.room.name", ProtoField.string("dissonance.response.room.name", "Name"))
add("response.room.room_id", U16("dissonance.response.room.room_id", "Room id", base.DEC))
add("response.room.peer", U16("dissonance.response.room.peer", "Listener", base.DEC))
-- ServerRelay
add("relay.destination", U16("dissonance.relay.destination", "Destination", base.DEC))
add("relay.payload_len", U16("dissonance.relay.payload_len", "Payload length", base.DEC))
add("relay.payload", ProtoField.bytes("dissonance.relay.payload", "Payload"))
add("relay.server_relay_verdict", ProtoField.string("dissonance.relay.server_relay_verdict", "Real server's verdict"))
add("relay.inner", ProtoField.none("dissonance.relay.inner", "Relayed packet"))
-- DeltaChannelState
add("delta.joined", ProtoField.bool("dissonance.delta.joined", "Joined"))
add("delta.joined_raw", U8("dissonance.delta.joined_raw", "Joined byte", base.DEC))
add("delta.peer", U16("dissonance.delta.peer", "Peer", base.DEC))
add("delta.peer_name", ProtoField.string("dissonance.delta.peer_name", "Peer name"))
add("delta.name", ProtoField.string("dissonance.delta.name", "Room name"))
-- HandshakeP2P
add("p2p.peer_id", U16("dissonance.p2p.peer_id", "Peer id", base.DEC))
-- Decode errors
add("error", ProtoField.none("dissonance.error", "Decode error"))
add("error.kind", ProtoField.string("dissonance.error.kind", "Kind"))
add("error.message", ProtoField.string("dissonance.error.message", "Message"))
add("error.offset", U32("dissonance.error.offset", "Offset", base.DEC))
add("error.field", ProtoField.string("dissonance.error.field", "Field"))
add("error.primitive", ProtoField.string("dissonance.error.primitive", "Primitive"))
add("error.need", U32("dissonance.error.need", "Bytes needed", base.DEC))
add("error.left", U32("dissonance.error.left", "Bytes left", base.DEC))
add("error.room_id", U16("dissonance.error.room_id", "Room id", base.DEC))

do
    local list = {}
    for _, f in pairs(F) do
        list[#list + 1] = f
    end
    proto.fields = list
end

local expert_malformed = ProtoExpert.new("dissonance.malformed", "Malformed Dissonance packet",
    expert.group.MALFORMED, expert.severity.ERROR)
local expert_bug = ProtoExpert.new("dissonance.dissector_bug", "Dissonance dissector bug",
    expert.group.MALFORMED, expert.severity.WARN)
proto.experts = { expert_malformed, expert_bug }

---------------------------------------------------------------------------------------------
-- Wire primitives

local TYPES = {
    "ClientState", "VoiceData", "TextData", "HandshakeRequest", "HandshakeResponse",
    "ErrorWrongSession", "ServerRelayReliable", "ServerRelayUnreliable", "DeltaChannelState",
    "RemoveClient", "HandshakeP2P",
}
local PRIORITY = { [0] = "Default", "Low", "Medium", "High" }
local band, bxor, rshift = bit32.band, bit32.bxor, bit32.rshift

-- A decode failure, thrown with error() and caught at the packet boundary.
local DecodeError = {}
DecodeError.__index = DecodeError

local Reader = {}
Reader.__index = Reader

-- `s` holds the packet's bytes (a Lua string); positions are 0-based like our decoder's.
local function new_reader(s, le)
    return setmetatable({ s = s, pos = 0, le = le, message = nil }, Reader)
end

function Reader:fail(offset, kind, t)
    t.kind = kind
    t.offset = offset
    t.message = self.message
    error(setmetatable(t, DecodeError), 0)
end

function Reader:remaining()
    return #self.s - self.pos
end

function Reader:take(n, field, primitive)
    if self.pos + n > #self.s then
        self:fail(self.pos, "truncated",
            { field = field, primitive = primitive, need = n, left = #self.s - self.pos })
    end
    local at = self.pos
    self.pos = at + n
    return at
end

function Reader:u8(field)
    local at = self:take(1, field, "byte")
    return self.s:byte(at + 1), at
end

function Reader:u16(field)
    local at = self:take(2, field, "ushort")
    local a, b = self.s:byte(at + 1, at + 2)
    if self.le then
        return b * 256 + a, at
    end
    return a * 256 + b, at
end

function Reader:u32(field)
    local at = self:take(4, field, "uint")
    local a, b, c, d = self.s:byte(at + 1, at + 4)
    return ((a * 256 + b) * 256 + c) * 256 + d, at
end

-- A string: u16 length + 1 (0 = null), then UTF-8. Returns the raw bytes (nil for null)
-- and the offset and length of the whole field.
function Reader:str(field)
    local len, at = self:u16(field)
    if len == 0 then
        return nil, at, 2
    end
    local s_at = self:take(len - 1, field, "string")
    return self.s:sub(s_at + 1, s_at + len - 1), at, len + 1
end

-- A blob: u16 length, then that many bytes. Returns the offset of the data and its length.
function Reader:blob(field)
    local len, at = self:u16(field)
    local d_at = self:take(len, field, "byte[]")
    return d_at, len, at
end

-- UTF-8 as Rust's String::from_utf8_lossy reads it: each maximal invalid subpart becomes
-- one U+FFFD. Returns the text and its code points.
local function lossy(bytes)
    local out, cps = {}, {}
    local i, n = 1, #bytes
    local function emit(cp, raw)
        cps[#cps + 1] = cp
        out[#out + 1] = raw
    end
    while i <= n do
        local b = bytes:byte(i)
        if b < 0x80 then
            emit(b, string.char(b))
            i = i + 1
        else
            local need, lo, hi
            if b >= 0xC2 and b <= 0xDF then
                need, lo, hi = 1, 0x80, 0xBF
            elseif b == 0xE0 then
                need, lo, hi = 2, 0xA0, 0xBF
            elseif (b >= 0xE1 and b <= 0xEC) or b == 0xEE or b == 0xEF then
                need, lo, hi = 2, 0x80, 0xBF
            elseif b == 0xED then
                need, lo, hi = 2, 0x80, 0x9F
            elseif b == 0xF0 then
                need, lo, hi = 3, 0x90, 0xBF
            elseif b >= 0xF1 and b <= 0xF3 then
                need, lo, hi = 3, 0x80, 0xBF
            elseif b == 0xF4 then
                need, lo, hi = 3, 0x80, 0x8F
            end
            if not need then
                emit(0xFFFD, "\239\191\189")
                i = i + 1
            else
                local cp = band(b, need == 1 and 0x1F or (need == 2 and 0x0F or 0x07))
                local j, ok = i + 1, true
                for k = 1, need do
                    local c = bytes:byte(j)
                    local l, h = 0x80, 0xBF
                    if k == 1 then
                        l, h = lo, hi
                    end
                    if not c or c < l or c > h then
                        ok = false
                        break
                    end
                    cp = cp * 64 + band(c, 0x3F)
                    j = j + 1
                end
                if ok then
                    emit(cp, bytes:sub(i, j - 1))
                else
                    emit(0xFFFD, "\239\191\189")
                end
                i = j
            end
        end
    end
    return table.concat(out), cps
end

-- The room id of a name: FNV-1a over its UTF-16BE code units, folded to 16 bits
-- (docs/protocol.md §5). Arithmetic kept below 2^53 so doubles stay exact.
local function fnv_step(h, byte)
    h = bxor(h, byte)
    return ((h % 256) * 16777216 + h * 403) % 4294967296
end
local function room_id_of(cps)
    local h = 0x811C9DC5
    local function unit(u)
        h = fnv_step(h, rshift(u, 8))
        h = fnv_step(h, band(u, 0xFF))
    end
    for _, cp in ipairs(cps) do
        if cp >= 0x10000 then
            local v = cp - 0x10000
            unit(0xD800 + rshift(v, 10))
            unit(0xDC00 + band(v, 0x3FF))
        else
            unit(cp)
        end
    end
    local upper, lower = math.floor(h / 65536), h % 65536
    return (upper * 5791 + lower * 7639) % 65536
end

-- Text of a wire string as our decoder shows it; nil for null.
local function text(raw)
    if raw == nil then
        return nil
    end
    return (lossy(raw))
end

-- Rounds a double to the nearest f32 (ties to even): our decoder computes the channel
-- amplitude in f32.
local function to_f32(x)
    if x == 0 then
        return 0
    end
    local m, e = math.frexp(x)
    local scaled = m * 16777216
    local r = math.floor(scaled)
    local frac = scaled - r
    if frac > 0.5 or (frac == 0.5 and r % 2 == 1) then
        r = r + 1
    end
    return math.ldexp(r / 16777216, e)
end

---------------------------------------------------------------------------------------------
-- Decoding into a record: a list of items {key, at, len, value, children}, exactly the
-- fields of the JSON schema, plus `err` when decoding failed.

local function item(list, key, at, len, value, children)
    list[#list + 1] = { key = key, at = at, len = len, value = value, children = children }
    return list[#list]
end

local function read_codec(r, items)
    local start = r.pos
    local codec, c_at = r:u8("codec")
    local fs, fs_at = r:u32("frame size")
    local rate, rate_at = r:u32("sample rate")
    if rate >= 2147483648 then
        rate = rate - 4294967296
    end
    local ch = {}
    item(ch, "codec.codec", c_at, 1, codec)
    local cname = ({ [0] = "Identity", [1] = "Opus" })[codec]
    if cname then
        item(ch, "codec.codec_name", c_at, 1, cname)
    end
    item(ch, "codec.frame_size", fs_at, 4, fs)
    item(ch, "codec.sample_rate", rate_at, 4, rate)
    item(items, "codec", start, 9, nil, ch)
    return { codec = codec, frame_size = fs, sample_rate = rate }
end

local decode_packet -- forward

local function verdict(payload)
    local ok_header, t = pcall(function()
        local n = #payload
        if n < 2 then
            return "throws"
        end
        local a, b = payload:byte(1, 2)
        if not ((a == 0x8B and b == 0xC7) or (a == 0xC7 and b == 0x8B)) then
            return "drop_bad_magic"
        end
        if n < 3 then
            return "throws"
        end
        if payload:byte(3) == 11 then
            return "drop_handshake_p2p"
        end
        return "relay"
    end)
    return ok_header and t or "throws"
end

-- Decodes one message body. `ctx` holds the name lookups and collects what the session
-- state learns from the packet (applied later, in capture order).
local BODY = {}

BODY[1] = function(r, it, m, ctx) -- ClientState
    m.session = r:u32("session")
    item(it, "session", r.pos - 4, 4, m.session)
    local name, n_at, n_len = r:str("name")
    local cid, cid_at = r:u16("client id")
    local codec_items = {}
    local codec = read_codec(r, codec_items)
    if name == nil then
        r:fail(n_at, "null_string", { field = "name" })
    end
    item(it, "name", n_at, n_len, text(name))
    item(it, "client_id", cid_at, 2, cid)
    it[#it + 1] = codec_items[1]
    m.name, m.client_id, m.codec = name, cid, codec
    local rooms, enc = {}, "list"
    local rem = r:remaining()
    local room_items = {}
    if rem == 0 then
        enc = "absent"
    elseif rem == 1 then
        enc = "invalid_1_byte"
    else
        local count = r:u16("room count")
        for i = 0, count - 1 do
            local rn, r_at, r_len = r:str("room " .. i .. " name")
            rooms[#rooms + 1] = { raw = rn } -- (a table: a null name must not end the list)
            item(room_items, "state.room", r_at, r_len, text(rn))
        end
    end
    item(it, "state.rooms_encoding", n_at, 0, enc)
    for _, x in ipairs(room_items) do
        it[#it + 1] = x
    end
    m.rooms = rooms
end

BODY[2] = function(r, it, m, ctx) -- VoiceData
    m.session = r:u32("session")
    item(it, "session", 3, 4, m.session)
    local sender, s_at = r:u16("sender id")
    local opt, o_at = r:u8("options")
    local seq, q_at = r:u16("sequence number")
    local n, n_at = r:u16("channel count")
    local chans = {}
    if r:remaining() >= 4 * n then
        local at = r:take(4 * n, "channels", "ushort")
        local save = r.pos
        r.pos = at
        for i = 0, n - 1 do
            local bf = r:u16("")
            local rc = r:u16("")
            chans[#chans + 1] = { bf = bf, rc = rc, at = at + 4 * i }
        end
        r.pos = save
    else
        for i = 0, n - 1 do
            local bf, at = r:u16("channel " .. i .. " bitfield")
            local rc = r:u16("channel " .. i .. " recipient")
            chans[#chans + 1] = { bf = bf, rc = rc, at = at }
        end
    end
    local a_at, a_len, al_at = r:blob("audio")
    item(it, "voice.sender", s_at, 2, sender)
    local sname = ctx.client(sender)
    if sname then
        item(it, "voice.sender_name", s_at, 2, sname)
    end
    local oc = {}
    item(oc, "voice.options.raw", o_at, 1, opt)
    item(oc, "voice.options.channel_session", o_at, 1, band(opt, 0x7F))
    item(oc, "voice.options.extended_range", o_at, 1, opt >= 128)
    item(oc, "voice.options.channel_session_range", o_at, 1, opt >= 128 and 128 or 4)
    item(it, "voice.options", o_at, 1, nil, oc)
    item(it, "voice.seq", q_at, 2, seq)
    item(it, "voice.num_channels", n_at, 2, n)
    local sum_ch = {}
    for _, c in ipairs(chans) do
        local bf, ch = c.bf, {}
        local room = band(bf, 1) ~= 0
        local rname
        if room then
            rname = ctx.room(c.rc)
        else
            rname = ctx.client(c.rc)
        end
        item(ch, "voice.channel.bitfield", c.at, 2, bf)
        item(ch, "voice.channel.recipient", c.at + 2, 2, c.rc)
        if rname then
            item(ch, "voice.channel.recipient_name", c.at + 2, 2, rname)
        end
        item(ch, "voice.channel.type", c.at, 2, room and "Room" or "Player")
        item(ch, "voice.channel.closing", c.at, 2, band(bf, 4) ~= 0)
        item(ch, "voice.channel.positional", c.at, 2, band(bf, 2) ~= 0)
        item(ch, "voice.channel.priority", c.at, 2, PRIORITY[band(rshift(bf, 3), 3)])
        local vol = rshift(bf, 8)
        item(ch, "voice.channel.volume", c.at, 2, vol)
        item(ch, "voice.channel.amplitude", c.at, 2, to_f32(vol / 255) * 2)
        item(ch, "voice.channel.session_id", c.at, 2, band(rshift(bf, 5), 3))
        item(it, "voice.channel", c.at, 4, nil, ch)
        sum_ch[#sum_ch + 1] = { room = room, id = c.rc, name = rname, closing = band(bf, 4) ~= 0 }
    end
    item(it, "voice.audio_len", al_at, 2, a_len)
    item(it, "voice.audio", a_at, a_len, "bytes")
    m.sender, m.sender_name, m.seq, m.channels, m.audio_len = sender, sname, seq, sum_ch, a_len
end

BODY[3] = function(r, it, m, ctx) -- TextData
    m.session = r:u32("session")
    item(it, "session", 3, 4, m.session)
    local rt, rt_at = r:u8("recipient type")
    local sender, s_at = r:u16("sender id")
    local target, t_at = r:u16("target")
    local txt, x_at, x_len = r:str("text")
    item(it, "text.recipient_type_byte", rt_at, 1, rt)
    local rtype = ({ [0] = "Room", [1] = "Player" })[rt]
    if rtype then
        item(it, "text.recipient_type", rt_at, 1, rtype)
    end
    item(it, "text.sender", s_at, 2, sender)
    local sname = ctx.client(sender)
    if sname then
        item(it, "text.sender_name", s_at, 2, sname)
    end
    item(it, "text.target", t_at, 2, target)
    local tname
    if rtype == "Room" then
        tname = ctx.room(target)
    elseif rtype == "Player" then
        tname = ctx.client(target)
    end
    if tname then
        item(it, "text.target_name", t_at, 2, tname)
    end
    item(it, "text.text", x_at, x_len, text(txt))
    m.rt, m.sender, m.sender_name, m.target, m.target_name, m.text = rt, sender, sname, target, tname, txt
end

BODY[4] = function(r, it, m, ctx) -- HandshakeRequest
    local codec = read_codec(r, it)
    local name, n_at, n_len = r:str("name")
    item(it, "name", n_at, n_len, text(name))
    m.codec, m.name = codec, name
end

BODY[5] = function(r, it, m, ctx) -- HandshakeResponse
    m.session = r:u32("session")
    item(it, "session", 3, 4, m.session)
    local cid, cid_at = r:u16("client id")
    item(it, "client_id", cid_at, 2, cid)
    local nc = r:u16("client count")
    local clients = {}
    local client_items = {}
    for i = 0, nc - 1 do
        local ci = {}
        local start = r.pos
        local name, n_at, n_len = r:str("client " .. i .. " name")
        local id, id_at = r:u16("client " .. i .. " id")
        item(ci, "response.client.name", n_at, n_len, text(name))
        item(ci, "response.client.id", id_at, 2, id)
        local codec = read_codec(r, ci)
        item(client_items, "response.client", start, r.pos - start, nil, ci)
        clients[#clients + 1] = { name = name, id = id, codec = codec }
    end
    local nr = r:u16("room name count")
    local names = {}
    for i = 0, nr - 1 do
        local rn, r_at, r_len = r:str("room " .. i .. " name")
        names[#names + 1] = { raw = rn, at = r_at, len = r_len }
    end
    local ne = r:u16("room entry count")
    local known = {}
    for _, n in ipairs(names) do
        if n.raw ~= nil then
            local t, cps = lossy(n.raw)
            n.text, n.id = t, room_id_of(cps)
            known[n.id] = true
        end
    end
    local entries = {}
    for i = 0, ne - 1 do
        local at = r.pos
        local rid = r:u16("room entry " .. i .. " room id")
        local pc = r:u8("room entry " .. i .. " peer count")
        local peers = {}
        for _ = 1, pc do
            local p, p_at = r:u16("room entry " .. i .. " peer id")
            peers[#peers + 1] = { id = p, at = p_at }
        end
        if not known[rid] then
            r:fail(at, "unknown_room_id", { field = "room entry " .. i .. " room id", room_id = rid })
        end
        entries[#entries + 1] = { id = rid, peers = peers }
    end
    local modern = nc == 0 and nr == 0 and ne == 0
    item(it, "response.form", 3, 0, modern and "modern" or "legacy")
    for _, x in ipairs(client_items) do
        it[#it + 1] = x
    end
    local rooms = {}
    for _, n in ipairs(names) do
        if n.raw ~= nil then
            local peers = {}
            for _, e in ipairs(entries) do
                if e.id == n.id then
                    peers = e.peers
                end
            end
            local ri = {}
            item(ri, "response.room.name", n.at, n.len, n.text)
            item(ri, "response.room.room_id", n.at, n.len, n.id)
            for _, p in ipairs(peers) do
                item(ri, "response.room.peer", p.at, 2, p.id)
            end
            item(it, "response.room", n.at, n.len, nil, ri)
            rooms[#rooms + 1] = { name = n.text, peers = peers }
        end
    end
    m.client_id, m.modern, m.clients, m.rooms = cid, modern, clients, rooms
end

BODY[6] = function(r, it, m, ctx) -- ErrorWrongSession
    m.session = r:u32("session")
    item(it, "session", 3, 4, m.session)
end

local function relay_body(r, it, m, ctx)
    m.session = r:u32("session")
    item(it, "session", 3, 4, m.session)
    local n = r:u8("destination count")
    local dests = {}
    for i = 0, n - 1 do
        local d, d_at = r:u16("destination " .. i .. " id")
        dests[#dests + 1] = { id = d, at = d_at }
    end
    local p_at, p_len, pl_at = r:blob("payload")
    for _, d in ipairs(dests) do
        item(it, "relay.destination", d.at, 2, d.id)
    end
    item(it, "relay.payload_len", pl_at, 2, p_len)
    item(it, "relay.payload", p_at, p_len, "bytes")
    local payload = r.s:sub(p_at + 1, p_at + p_len)
    item(it, "relay.server_relay_verdict", p_at, p_len, verdict(payload))
    local inner = decode_packet(payload, ctx)
    item(it, "relay.inner", p_at, p_len, nil, inner.items).base = p_at
    m.dests, m.inner = dests, inner
end
BODY[7] = relay_body
BODY[8] = relay_body

BODY[9] = function(r, it, m, ctx) -- DeltaChannelState
    m.session = r:u32("session")
    item(it, "session", 3, 4, m.session)
    local joined, j_at = r:u8("joined")
    local peer, p_at = r:u16("peer id")
    local name, n_at, n_len = r:str("room name")
    if name == nil then
        r:fail(n_at, "null_string", { field = "room name" })
    end
    item(it, "delta.joined", j_at, 1, joined ~= 0)
    item(it, "delta.joined_raw", j_at, 1, joined)
    item(it, "delta.peer", p_at, 2, peer)
    local pname = ctx.client(peer)
    if pname then
        item(it, "delta.peer_name", p_at, 2, pname)
    end
    item(it, "delta.name", n_at, n_len, text(name))
    m.joined, m.peer, m.peer_name, m.name = joined ~= 0, peer, pname, name
end

BODY[10] = function(r, it, m, ctx) -- RemoveClient
    m.session = r:u32("session")
    item(it, "session", 3, 4, m.session)
    local cid, at = r:u16("client id")
    item(it, "client_id", at, 2, cid)
    local name = ctx.client(cid)
    if name then
        item(it, "client_name", at, 2, name)
    end
    m.client_id, m.client_name = cid, name
end

BODY[11] = function(r, it, m, ctx) -- HandshakeP2P
    m.session = r:u32("session")
    item(it, "session", 3, 4, m.session)
    local id, at = r:u16("peer id")
    item(it, "p2p.peer_id", at, 2, id)
    m.peer_id = id
end

local function hex4(v)
    return string.format("0x%04X", v)
end

-- Our decoder's error text (crates/dissonance-proto/src/codec/error.rs, Display).
local function error_text(e)
    local prefix = e.message and (TYPES[e.message] .. ": ") or ""
    if e.kind == "bad_magic" then
        return prefix .. string.format("bad magic 0x%04X at byte %d (expected 8B C7, or C7 8B for 6.0.x)", e.found, e.offset)
    elseif e.kind == "unknown_type" then
        return prefix .. string.format("unknown message type %d at byte %d (valid: 1-11)", e.type_byte, e.offset)
    elseif e.kind == "truncated" then
        return prefix .. string.format("truncated at byte %d reading %s: need %d bytes, %d left", e.offset, e.field, e.need, e.left)
    elseif e.kind == "null_string" then
        return prefix .. string.format("null %s at byte %d (must not be null)", e.field, e.offset)
    else
        return prefix .. string.format("%s at byte %d is room id %d (%s), which is not in the room name list",
            e.field, e.offset, e.room_id, hex4(e.room_id))
    end
end

-- Decodes a whole packet (header and body) from a Lua string into a record.
decode_packet = function(s, ctx)
    local rec = { items = {}, size = #s, m = {} }
    local r = new_reader(s, false)
    local ok, err = pcall(function()
        local magic = r:u16("magic")
        if magic == 0xC78B then
            r.le = true
        elseif magic ~= 0x8BC7 then
            r:fail(0, "bad_magic", { found = magic, field = "magic" })
        end
        local t = r:u8("type")
        if not TYPES[t] then
            rec.type_byte = t
            r:fail(2, "unknown_type", { type_byte = t, field = "type" })
        end
        r.message = t
        rec.type = t
        BODY[t](r, rec.items, rec.m, ctx)
    end)
    local it = rec.items
    if ok then
        local head = {}
        item(head, "magic_ok", 0, 2, true)
        item(head, "variant", 0, 2, r.le and "legacy_6_0" or "modern")
        item(head, "type", 2, 1, TYPES[rec.type])
        item(head, "type_byte", 2, 1, rec.type)
        item(head, "size", 0, #s, #s)
        item(head, "bytes_read", 0, r.pos, r.pos)
        item(head, "trailing_bytes", r.pos, #s - r.pos, #s - r.pos)
        if r.pos < #s then
            item(head, "trailing", r.pos, #s - r.pos, "bytes")
        end
        for _, x in ipairs(it) do
            head[#head + 1] = x
        end
        rec.items = head
        rec.variant = r.le and "legacy_6_0" or "modern"
        rec.bytes_read = r.pos
        return rec
    end
    if getmetatable(err) ~= DecodeError then
        -- A bug in this script: report it on the packet rather than failing the dissection.
        rec.bug = tostring(err)
        rec.items = {}
        return rec
    end
    local e = err
    local head = {}
    item(head, "magic_ok", 0, math.min(2, #s), e.kind ~= "bad_magic" and #s >= 2)
    if e.kind == "bad_magic" then
        item(head, "magic", 0, 2, e.found)
        item(head, "rejected", 0, 2, "bad_magic")
    elseif e.kind == "unknown_type" then
        item(head, "type_byte", 2, 1, e.type_byte)
        item(head, "rejected", 2, 1, "unknown_type")
    elseif e.message then
        item(head, "type", 2, 1, TYPES[e.message])
        item(head, "type_byte", 2, 1, e.message)
    end
    item(head, "size", 0, #s, #s)
    local ec = {}
    local msg = error_text(e)
    item(ec, "error.kind", e.offset, 0, e.kind)
    item(ec, "error.message", e.offset, 0, msg)
    item(ec, "error.offset", e.offset, 0, e.offset)
    item(ec, "error.field", e.offset, 0, e.field)
    if e.kind == "truncated" then
        item(ec, "error.primitive", e.offset, 0, e.primitive)
        item(ec, "error.need", e.offset, 0, e.need)
        item(ec, "error.left", e.offset, 0, e.left)
    elseif e.kind == "unknown_room_id" then
        item(ec, "error.room_id", e.offset, 0, e.room_id)
    end
    item(head, "error", e.offset, 0, nil, ec).expert = msg
    rec.items = head
    rec.err = e
    rec.error_text = msg
    rec.m = {}
    return rec
end

---------------------------------------------------------------------------------------------
-- Per-capture session state, as our session tracker keeps it: client names by
-- (session, id), room names by room id (first name wins), the name a HandshakeRequest
-- gave, by the address it came from, until the answer to that address.

local state

local function reset()
    state = {
        clients = {},   -- [session .. ":" .. id] = name
        rooms = {},     -- [room id] = name
        pending = {},   -- [address] = name
        flows = {},     -- payload locator state per directed flow
        frames = {},    -- [frame key] = records (what the first pass found)
        known = {},     -- flows (either direction) that carried Dissonance
        broken = {},    -- [directed TCP flow] = frame whose length prefix broke the framing
    }
end
reset()

local function name_of(raw)
    if raw == nil then
        return "(null)"
    end
    return (lossy(raw))
end

local function learn_room(name)
    local _, cps = lossy(name)
    local id = room_id_of(cps)
    if state.rooms[id] == nil then
        state.rooms[id] = name
    end
end

-- Byte-wise string order (Rust's), independent of the C locale.
local function byte_less(a, b)
    local n = math.min(#a, #b)
    for i = 1, n do
        local x, y = a:byte(i), b:byte(i)
        if x ~= y then
            return x < y
        end
    end
    return #a < #b
end

-- Applies what a decoded message teaches (src/dissect/session.rs, Tracker::observe_message).
local function learn(rec, src, dst)
    local m, t = rec.m, rec.type
    if rec.err or rec.bug or not t then
        return
    end
    if t == 4 then
        state.pending[src] = name_of(m.name)
    elseif t == 5 then
        local name = state.pending[dst]
        if name then
            state.pending[dst] = nil
            state.clients[m.session .. ":" .. m.client_id] = name
        end
        for _, c in ipairs(m.clients) do
            state.clients[m.session .. ":" .. c.id] = name_of(c.name)
        end
        for _, room in ipairs(m.rooms) do
            if #room.peers > 0 then
                learn_room(room.name)
            end
        end
    elseif t == 1 then
        state.clients[m.session .. ":" .. m.client_id] = name_of(m.name)
        local names = {}
        for _, rn in ipairs(m.rooms) do
            names[#names + 1] = name_of(rn.raw)
        end
        table.sort(names, byte_less)
        for _, n in ipairs(names) do
            learn_room(n)
        end
    elseif t == 9 then
        learn_room(name_of(m.name))
    elseif t == 7 or t == 8 then
        learn(m.inner, src, dst)
    end
end

---------------------------------------------------------------------------------------------
-- The Info column text: our text output's one-line summary (src/output/text.rs, Summary).

-- Rust's `{:?}` of a string (quotes, escapes for quotes, backslashes and control chars).
local function debug_str(raw)
    if raw == nil then
        return "null"
    end
    local t = lossy(raw)
    t = t:gsub('[%z\1-\31"\\\127]', function(c)
        local b = c:byte()
        if c == '"' then
            return '\\"'
        elseif c == "\\" then
            return "\\\\"
        elseif c == "\n" then
            return "\\n"
        elseif c == "\r" then
            return "\\r"
        elseif c == "\t" then
            return "\\t"
        elseif b == 0 then
            return "\\0"
        end
        return string.format("\\u{%x}", b)
    end)
    return '"' .. t .. '"'
end

local function client_txt(id, name)
    if name then
        return name .. "(" .. id .. ")"
    end
    return "#" .. id
end

-- Rust's Display of an f64: the shortest decimal that reads back the same, no exponent.
local function rust_f64(x)
    if x == math.floor(x) and math.abs(x) < 1e15 then
        return string.format("%d", x)
    end
    local digits, exp
    for p = 1, 17 do
        local s = string.format("%." .. (p - 1) .. "e", x)
        if tonumber(s) == x then
            local mant, e = s:match("^(-?[%d.]+)e([-+]%d+)$")
            digits, exp = mant:gsub("%.", ""), tonumber(e)
            break
        end
    end
    local neg = digits:sub(1, 1) == "-"
    if neg then
        digits = digits:sub(2)
    end
    digits = digits:gsub("0+$", "")
    if digits == "" then
        digits = "0"
    end
    local out
    local point = exp + 1 -- digits before the decimal point
    if point <= 0 then
        out = "0." .. string.rep("0", -point) .. digits
    elseif point >= #digits then
        out = digits .. string.rep("0", point - #digits)
    else
        out = digits:sub(1, point) .. "." .. digits:sub(point + 1)
    end
    return (neg and "-" or "") .. out
end

local function codec_txt(c)
    local s = ({ [0] = "Identity", [1] = "Opus" })[c.codec] or ("unknown codec " .. c.codec)
    s = s .. ", " .. string.format("%d", c.frame_size) .. " samples"
    if c.sample_rate > 0 then
        s = s .. " (" .. rust_f64(c.frame_size * 1000 / c.sample_rate) .. " ms)"
    end
    return s .. ", " .. string.format("%d", c.sample_rate) .. " Hz"
end

local function summary(rec, ctx)
    if rec.bug then
        return "dissector bug: " .. rec.bug
    end
    if rec.err then
        return "MALFORMED " .. rec.error_text
    end
    local t, m = rec.type, rec.m
    local s = TYPES[t]
    if t == 1 then
        local rooms = {}
        for _, rn in ipairs(m.rooms) do
            rooms[#rooms + 1] = debug_str(rn.raw)
        end
        s = s .. " " .. name_of(m.name) .. "(" .. m.client_id .. ") rooms [" .. table.concat(rooms, ", ") .. "]"
    elseif t == 2 then
        s = s .. " " .. client_txt(m.sender, m.sender_name) .. " seq " .. m.seq .. " ->"
        for i, c in ipairs(m.channels) do
            s = s .. (i == 1 and " " or ", ")
            if c.room then
                s = s .. "room " .. (c.name or ("#" .. c.id))
            else
                s = s .. client_txt(c.id, c.name)
            end
            if c.closing then
                s = s .. " (closing)"
            end
        end
        s = s .. " [" .. m.audio_len .. " B]"
    elseif t == 3 then
        s = s .. " " .. client_txt(m.sender, m.sender_name) .. " -> "
        if m.rt == 0 then
            s = s .. "room " .. (m.target_name or ("#" .. m.target))
        elseif m.rt == 1 then
            s = s .. client_txt(m.target, m.target_name)
        else
            s = s .. "type " .. m.rt .. " target " .. m.target
        end
        s = s .. ": " .. debug_str(m.text)
    elseif t == 4 then
        s = s .. " " .. name_of(m.name) .. " " .. codec_txt(m.codec)
    elseif t == 5 then
        s = s .. string.format(" session %d id %d", m.session, m.client_id)
        if not m.modern then
            s = s .. " (legacy full state)"
        end
    elseif t == 6 then
        s = s .. string.format(" server session is %d", m.session)
    elseif t == 7 or t == 8 then
        local d = {}
        for _, x in ipairs(m.dests) do
            d[#d + 1] = client_txt(x.id, ctx.client(x.id))
        end
        s = s .. " to [" .. table.concat(d, ", ") .. "]: "
        local inner = m.inner
        if inner.err then
            s = s .. "MALFORMED " .. inner.error_text
        else
            s = s .. summary(inner, ctx)
        end
    elseif t == 9 then
        s = s .. " " .. client_txt(m.peer, m.peer_name) .. (m.joined and " joined" or " left") .. " room " .. name_of(m.name)
    elseif t == 10 then
        s = s .. " " .. client_txt(m.client_id, m.client_name)
    elseif t == 11 then
        s = s .. " from " .. client_txt(m.peer_id, ctx.client(m.peer_id))
    end
    return s
end

---------------------------------------------------------------------------------------------
-- Finding packets in a payload: our `--payload auto` (src/dissect/locate.rs).

local function looks_like_packet(s, at) -- at: 0-based
    local a, b, t = s:byte(at + 1, at + 3)
    if not t then
        return false
    end
    return ((a == 0x8B and b == 0xC7) or (a == 0xC7 and b == 0x8B)) and t >= 1 and t <= 11
end

local function scan(s, from)
    for at = from, #s - 3 do
        if looks_like_packet(s, at) then
            return at
        end
    end
    return nil
end

local function has_magic(s, at)
    local a, b = s:byte(at + 1, at + 2)
    return (a == 0x8B and b == 0xC7) or (a == 0xC7 and b == 0x8B)
end

local LOCK_AFTER = 3

-- Returns a list of {offset, bytes} for the packets our locator finds in `data`, updating
-- the flow's lock state as it does. `decode` is a decode-only pass (no names).
local function locate(flow, data, decode)
    local found = {}
    local at
    if flow.locked and #data > flow.locked and has_magic(data, flow.locked) then
        at = flow.locked
    elseif looks_like_packet(data, 0) then
        at = 0
    else
        at = scan(data, 0)
        if not at then
            return found
        end
    end
    local n = 0
    while at < #data do
        if not looks_like_packet(data, at) then
            break
        end
        local bytes = data:sub(at + 1)
        local rec = decode(bytes)
        local ok = not rec.err and not rec.bug
        local skip = false
        if ok then
            local s = rec.m.session
            if s then
                if flow.session and flow.session ~= s then
                    flow.session_changes = flow.session_changes + 1
                end
                flow.session = s
            end
            if n == 0 and not flow.locked then
                local c = flow.candidate
                if c and c.at == at and flow.session_changes == 0 then
                    c.count = c.count + 1
                else
                    flow.candidate = { at = at, count = 1 }
                end
                if flow.candidate.count >= LOCK_AFTER then
                    flow.locked = flow.candidate.at
                end
            end
        else
            local trusted = at == 0 or flow.locked == at
            if not trusted then
                local nxt = scan(data, at + 1)
                if nxt then
                    at = nxt
                    skip = true
                else
                    break
                end
            end
        end
        if not skip then
            local used = #bytes
            if ok then
                local consumed = rec.bytes_read
                if consumed < #bytes then
                    used = scan(bytes, consumed) or #bytes
                end
            end
            if used < 1 then
                used = 1
            end
            found[#found + 1] = { offset = at, len = math.min(used, #bytes), ok = ok }
            n = n + 1
            at = scan(data, at + used)
            if not at then
                break
            end
        end
    end
    return found
end

---------------------------------------------------------------------------------------------
-- Rendering a record into the tree.

local NULL_LABEL = {
    ["name"] = "Name", ["text.text"] = "Text", ["state.room"] = "Room",
    ["response.client.name"] = "Name",
}

local function render(tree, tvb, base, items, pinfo)
    for _, x in ipairs(items) do
        local f = F[x.key]
        local len = x.len
        if base + x.at + len > tvb:len() then
            len = math.max(0, tvb:len() - base - x.at)
        end
        local range = tvb(base + x.at, len)
        local ti
        if x.children then
            ti = tree:add(f, range)
            render(ti, tvb, base + (x.base or 0), x.children, pinfo)
            if x.expert then
                ti:add_proto_expert_info(expert_malformed, x.expert)
            end
        elseif x.value == "bytes" then
            ti = tree:add(f, range)
        elseif x.value == nil then
            -- A null string: a Wireshark string field cannot hold it.
            tree:add(range, (NULL_LABEL[x.key] or x.key) .. ": (null)")
        else
            tree:add(f, range, x.value)
        end
    end
end

local function flow_key(pinfo, tcp)
    return tostring(pinfo.src) .. "|" .. tostring(pinfo.src_port) .. "|" .. tostring(pinfo.dst) .. "|" ..
        tostring(pinfo.dst_port) .. (tcp and "|t" or "|u")
end

local function conv_key(pinfo, tcp)
    local a = tostring(pinfo.src) .. "|" .. tostring(pinfo.src_port)
    local b = tostring(pinfo.dst) .. "|" .. tostring(pinfo.dst_port)
    if a > b then
        a, b = b, a
    end
    return a .. "|" .. b .. (tcp and "|t" or "|u")
end

local BYE = "\0BYE"

-- The first pass over a frame: find the packets, decode them with the names known so far,
-- then let the session state learn from them (as our dump does: observe, then print).
local function first_pass(data, pinfo, tcp, force)
    local key = flow_key(pinfo, tcp)
    local flow = state.flows[key]
    if not flow then
        flow = { session_changes = 0 }
        state.flows[key] = flow
    end
    local src = tostring(pinfo.src) .. ":" .. tostring(pinfo.src_port)
    local dst = tostring(pinfo.dst) .. ":" .. tostring(pinfo.dst_port)
    local known = state.known[conv_key(pinfo, tcp)]
    if data == BYE then
        return { bye = true, known = known }
    end
    local plain = { client = function() return nil end, room = function() return nil end }
    local found = locate(flow, data, function(bytes)
        return decode_packet(bytes, plain)
    end)
    local records = {}
    for _, f in ipairs(found) do
        local bytes = data:sub(f.offset + 1, f.offset + f.len)
        local probe = decode_packet(bytes, plain)
        local session = probe.m and probe.m.session
        local ctx = {
            client = function(id)
                if session == nil then
                    return nil
                end
                return state.clients[session .. ":" .. id]
            end,
            room = function(id)
                return state.rooms[id]
            end,
        }
        -- Learn first, then decode again with the names as they are after this packet.
        learn(probe, src, dst)
        local rec = decode_packet(bytes, ctx)
        rec.offset = f.offset
        rec.index = #records
        -- As our text output's line: offset, summary, trailing bytes (src/output/printer.rs, Describe).
        local s = summary(rec, ctx)
        if f.offset > 0 then
            s = "@" .. f.offset .. " " .. s
        end
        if rec.bytes_read and rec.bytes_read < rec.size then
            s = s .. " (+" .. (rec.size - rec.bytes_read) .. " trailing bytes)"
        end
        rec.summary = s
        records[#records + 1] = rec
    end
    return { records = records, known = known }
end

local function dissect(tvb, pinfo, tree, tcp, heuristic)
    if tvb:len() == 0 then
        return 0
    end
    local data = tvb:raw(0, tvb:len())
    -- The offset too: two TCP messages of one segment may be equally long.
    local fkey = pinfo.number .. "|" .. flow_key(pinfo, tcp) .. "|" .. tvb:len() .. "|" .. tvb:offset()
    local result = state.frames[fkey]
    if not result then
        result = first_pass(data, pinfo, tcp)
        state.frames[fkey] = result
    end
    local ckey = conv_key(pinfo, tcp)
    if result.bye then
        if heuristic and not result.known then
            return 0
        end
        pinfo.cols.protocol = "Dissonance"
        local text = "transport goodbye (00 42 59 45)"
        pinfo.cols.info = text
        local sub = tree:add(proto, tvb())
        sub:append_text(": " .. text)
        sub:add(F.bye, tvb())
        sub:add(F.summary, tvb(0, 0), text)
        return tvb:len()
    end
    local records = result.records
    if #records == 0 then
        return 0
    end
    local any_ok = false
    for _, rec in ipairs(records) do
        if not rec.err and not rec.bug then
            any_ok = true
        end
    end
    if heuristic and not any_ok and not result.known then
        return 0
    end
    if any_ok and not pinfo.visited then
        state.known[ckey] = true
    end
    pinfo.cols.protocol = "Dissonance"
    local infos = {}
    for _, rec in ipairs(records) do
        local len = math.min(rec.size, tvb:len() - rec.offset)
        local sub = tree:add(proto, tvb(rec.offset, len))
        sub:append_text(": " .. rec.summary)
        sub:add(F.payload_offset, tvb(rec.offset, 0), rec.offset)
        if rec.index > 0 then
            sub:add(F.index_in_payload, tvb(rec.offset, 0), rec.index)
        end
        sub:add(F.summary, tvb(rec.offset, 0), rec.summary)
        render(sub, tvb, rec.offset, rec.items, pinfo)
        if rec.bug then
            sub:add_proto_expert_info(expert_bug, rec.bug)
        end
        infos[#infos + 1] = rec.summary
    end
    pinfo.cols.info = table.concat(infos, "; ")
    return tvb:len()
end

function proto.init()
    reset()
end

local function heur_udp(tvb, pinfo, tree)
    if tvb:len() < 3 then
        return false
    end
    local ok, n = pcall(dissect, tvb, pinfo, tree, false, true)
    return ok and n > 0
end

---------------------------------------------------------------------------------------------
-- TCP: Wireshark reassembles each direction; we cut it by the length prefix of the
-- `tcp_framing` preference, as `dissonance dump --tcp-framing` does (src/capture/tcp.rs).

local FRAMINGS = {
    { 1, "u16be", 2, false }, { 2, "u16le", 2, true }, { 3, "u32be", 4, false },
    { 4, "u32le", 4, true }, { 5, "none", 0, false },
}
do
    local choices = {}
    for _, f in ipairs(FRAMINGS) do
        choices[#choices + 1] = { f[1], f[2], f[1] }
    end
    proto.prefs.tcp_framing = Pref.enum("TCP framing", 1,
        "How a TCP stream is cut into Dissonance packets: a length prefix before each " ..
        "(as `dissonance dump --tcp-framing`), or none (each segment is one payload)",
        choices, false)
end

-- Our framer's default maximum (DecapConfig::max_tcp_frame): a larger prefix breaks the
-- direction's framing, as it does in dump.
local MAX_TCP_FRAME = 1048576

-- Wireshark's port_type for TCP (epan/address.h); init.lua does not export it.
local PT_TCP = 2

local function framing()
    return FRAMINGS[proto.prefs.tcp_framing] or FRAMINGS[1]
end

local function read_prefix(tvb, at, f)
    if f[3] == 2 then
        return f[4] and tvb(at, 2):le_uint() or tvb(at, 2):uint()
    end
    return f[4] and tvb(at, 4):le_uint() or tvb(at, 4):uint()
end

local function dissect_tcp(tvb, pinfo, tree)
    local f = framing()
    local p = f[3]
    if p == 0 then
        return dissect(tvb, pinfo, tree, true, false)
    end
    local key = flow_key(pinfo, true)
    local b = state.broken[key]
    if b and pinfo.number > b then
        return 0
    end
    local n, at = tvb:len(), 0
    while at < n do
        if n - at < p then
            pinfo.desegment_offset = at
            pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
            return n
        end
        local len = read_prefix(tvb, at, f)
        if len > MAX_TCP_FRAME then
            if not pinfo.visited then
                state.broken[key] = pinfo.number
            end
            local sub = tree:add(proto, tvb(at, p))
            sub:add_proto_expert_info(expert_malformed, string.format(
                "length prefix announces a %d-byte frame, more than the maximum of %d",
                len, MAX_TCP_FRAME))
            return n
        end
        if n - at < p + len then
            pinfo.desegment_offset = at
            pinfo.desegment_len = p + len - (n - at)
            return n
        end
        if len > 0 then
            -- A sub-tvb of the frame or of Wireshark's reassembled data.
            dissect(tvb(at + p, len):tvb(), pinfo, tree, true, false)
        end
        at = at + p + len
    end
    return n
end

-- A stream is taken when a segment starts with a whole framed message in which a
-- Dissonance packet decodes; the conversation is then ours, segment boundaries or not.
local function takes_tcp(tvb)
    local f = framing()
    local p = f[3]
    local n = tvb:len()
    if n < p + 3 then
        return false
    end
    local len = p == 0 and n or read_prefix(tvb, 0, f)
    if len < 3 or len > n - p or len > MAX_TCP_FRAME then
        return false
    end
    local data = tvb:raw(p, len)
    local plain = { client = function() return nil end, room = function() return nil end }
    local found = locate({ session_changes = 0 }, data, function(bytes)
        return decode_packet(bytes, plain)
    end)
    local ok = false
    for _, x in ipairs(found) do
        ok = ok or x.ok
    end
    return ok
end

local function heur_tcp(tvb, pinfo, tree)
    local fine, ours = pcall(takes_tcp, tvb)
    if not (fine and ours) then
        return false
    end
    pinfo.conversation = proto
    local err
    fine, err = pcall(dissect_tcp, tvb, pinfo, tree)
    if not fine then
        tree:add(proto, tvb()):add_proto_expert_info(expert_bug, tostring(err))
    end
    return true
end

-- Decode As / a port registered in the UDP or TCP table, and the conversations the TCP
-- heuristic took: every payload is tried.
function proto.dissector(tvb, pinfo, tree)
    local ok, n
    if pinfo.port_type == PT_TCP then
        ok, n = pcall(dissect_tcp, tvb, pinfo, tree)
    else
        ok, n = pcall(dissect, tvb, pinfo, tree, false, false)
    end
    if ok then
        return n
    end
    tree:add(proto, tvb()):add_proto_expert_info(expert_bug, tostring(n))
    return tvb:len()
end

proto:register_heuristic("udp", heur_udp)
proto:register_heuristic("tcp", heur_tcp)
DissectorTable.get("udp.port"):add_for_decode_as(proto)
DissectorTable.get("tcp.port"):add_for_decode_as(proto)

-- Exposed for the test and for `dissonance wireshark --print`.
_G.dissonance_dissector_version = VERSION
