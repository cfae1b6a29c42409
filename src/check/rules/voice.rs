//! Voice rules (D040-D045): sequence numbers, Opus frame sizes, codec settings, senders.
//! The catalogue entries (id, severity, explanation) and the engine's checks side by side.

use std::net::SocketAddr;

use crate::check::rules::{self, Rule, Severity};
use crate::check::voice::{Arrival, Leg};
use crate::check::{key, About, Ctx, Engine};
use crate::codec::CodecSettings;

rules! {
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
    VOICE_OUTLIER = "D046" "voice-sequence-outlier" "voice" Warning
        "Voice sequence outlier: one packet far ahead, then the old sequence again"
        "A voice packet's sequence number jumped further ahead than the reorder window (about a second of frames), and the next packet on the same path continued the old sequence instead of following it. Real senders never do that: it is a stray, corrupted or forged copy. A receiver that takes it as its new reference counts every real frame after it as late and goes silent (up to 15 s, docs/protocol.md §9.7); `voice` and `client --record-voice` drop it as an outlier. The packet is held out of the D040-D042 statistics.";
}

/// The usual arrival: the next frame of its path, nothing missing.
const IN_ORDER: Arrival = Arrival::Next { missing: 0 };

/// What `check` keeps of a voice packet held by the sequence guard until the next one.
#[derive(Debug)]
pub(crate) struct HeldVoice {
    /// The packet's context, its bytes kept in `bytes`.
    at: Ctx<'static>,
    bytes: Vec<u8>,
    seq: u16,
    audio_len: usize,
    closing: bool,
    base: usize,
}

impl HeldVoice {
    pub(crate) fn number(&self) -> u64 {
        self.at.number
    }

    fn ctx(&self) -> Ctx<'_> {
        self.at.with_bytes(&self.bytes)
    }
}

impl Engine {
    /// D044 on advertised codec settings at byte `at` of the packet.
    pub(in crate::check) fn codec(
        &mut self,
        c: &Ctx<'_>,
        s: CodecSettings,
        session: Option<u32>,
        id: Option<u16>,
        at: usize,
    ) {
        let problem = match s.codec() {
            None => Some((at, 1, format!("unknown codec byte {}", s.codec_byte))),
            Some(crate::codec::Codec::Opus)
                if ![8000, 12000, 16000, 24000, 48000].contains(&s.sample_rate) =>
            {
                Some((
                    at + 5,
                    4,
                    format!(
                        "Opus at {} Hz (Opus decodes 8, 12, 16, 24 or 48 kHz)",
                        s.sample_rate_i32()
                    ),
                ))
            }
            _ => None,
        };
        if let Some((start, n, msg)) = problem {
            let about = About {
                session,
                client: id,
                mark: Some((start, n)),
                fold: Some(key((c.src, s, id))),
            };
            self.report(rules::OPUS_RATE, c, about, || msg);
        }
    }

    /// Voice path statistics and content rules; `base` as for [`Engine::text`].
    pub(in crate::check) fn voice(
        &mut self,
        c: &Ctx<'_>,
        v: &crate::codec::VoiceData<'_>,
        base: usize,
    ) {
        let speaker = (v.session, v.sender);
        let record = self.tracker.client(v.session, v.sender);
        let known = record.is_some();
        let codec = record.and_then(|k| k.codec);
        let primary = *self.primary.entry(speaker).or_insert(c.dst);
        let frame_ns = codec
            .and_then(|k| k.frame_ms())
            .map(|ms| (ms * 1e6) as i64)
            .or_else(|| {
                crate::voice::decode::opus_samples_48k(v.audio)
                    .map(|n| n as i64 * 1_000_000_000 / 48000)
            })
            .unwrap_or(20_000_000);
        let closing = v.channels.iter().all(|ch| ch.bitfield.closing());
        let leg_key = (v.session, v.sender, c.dst);
        let leg = self
            .legs
            .entry(leg_key)
            .or_insert_with(|| Leg::new(frame_ns));
        // The usual frame continues its path in order: accepted by the guard and
        // counted on the leg under the one lookup.
        let arrival = match leg.guard.push_in_order(v.seq) {
            Some(_) => {
                let arrival = leg.push(v.seq, c.ts_ns, v.audio.len(), closing);
                if arrival != IN_ORDER {
                    self.sequence_findings(c, leg_key, v.seq, arrival, base);
                }
                Some(arrival)
            }
            None => self.voice_guarded(c, v, leg_key, closing, base),
        };
        let about = About {
            session: Some(v.session),
            client: Some(v.sender),
            mark: Some((base + 10, 2)),
            fold: None,
        };
        if primary != c.dst || arrival == Some(Arrival::Duplicate) {
            return; // content rules once per frame: on the speaker's first path
        }
        self.voice_content(c, v, base, about, known, codec);
    }

    /// A frame the sequence guard does not simply accept: it may be held as a suspect,
    /// or settle one held before (D046, or released ahead of this frame).
    fn voice_guarded(
        &mut self,
        c: &Ctx<'_>,
        v: &crate::codec::VoiceData<'_>,
        leg_key: (u32, u16, SocketAddr),
        closing: bool,
        base: usize,
    ) -> Option<Arrival> {
        let leg = self.legs.get_mut(&leg_key)?;
        let g = leg.guard.push(v.seq, || HeldVoice {
            at: c.with_bytes(&[]),
            bytes: c.bytes.to_vec(),
            seq: v.seq,
            audio_len: v.audio.len(),
            closing,
            base,
        });
        if let Some((_, h)) = g.outlier {
            self.voice_outlier(leg_key, &h, true);
        }
        if let Some((_, h)) = g.release {
            self.voice_sequence(&h.ctx(), leg_key, h.seq, h.audio_len, h.closing, h.base);
        }
        g.now
            .map(|_| self.voice_sequence(c, leg_key, v.seq, v.audio.len(), closing, base))
    }

    /// D046 for a held packet the next one did not confirm (`followed`), or that nothing
    /// followed before the end of the capture.
    pub(in crate::check) fn voice_outlier(
        &mut self,
        (session, sender, _): (u32, u16, SocketAddr),
        h: &HeldVoice,
        followed: bool,
    ) {
        let c = h.ctx();
        let about = About {
            session: Some(session),
            client: Some(sender),
            mark: Some((h.base + 10, 2)),
            fold: None,
        };
        let after = if followed {
            "the next packet continued the old sequence"
        } else {
            "nothing followed it"
        };
        self.report(rules::VOICE_OUTLIER, &c, about, || {
            format!(
                "seq {} jumped far ahead on {} -> {} and {after}: a stray or forged copy",
                h.seq, c.src, c.dst
            )
        });
    }

    /// D040-D042: one packet's sequence number on its path.
    fn voice_sequence(
        &mut self,
        c: &Ctx<'_>,
        leg_key: (u32, u16, SocketAddr),
        seq: u16,
        audio_len: usize,
        closing: bool,
        base: usize,
    ) -> Arrival {
        let Some(leg) = self.legs.get_mut(&leg_key) else {
            return Arrival::Next { missing: 0 };
        };
        let arrival = leg.push(seq, c.ts_ns, audio_len, closing);
        if arrival != IN_ORDER {
            self.sequence_findings(c, leg_key, seq, arrival, base);
        }
        arrival
    }

    /// D040-D042 for how packet `seq` arrived on its path (callers skip a frame that
    /// arrived next in order: nearly all of them, and none reports anything).
    fn sequence_findings(
        &mut self,
        c: &Ctx<'_>,
        leg_key: (u32, u16, SocketAddr),
        seq: u16,
        arrival: Arrival,
        base: usize,
    ) {
        let about = About {
            session: Some(leg_key.0),
            client: Some(leg_key.1),
            mark: Some((base + 10, 2)),
            fold: None,
        };
        let path = || format!("{} -> {}", c.src, c.dst);
        match arrival {
            Arrival::Next { missing } if missing > self.config.max_gap => {
                self.report(rules::VOICE_GAP, c, about, || {
                    format!("{missing} frames missing before seq {} on {}", seq, path())
                })
            }
            Arrival::Duplicate => self.report(rules::VOICE_DUPLICATE, c, about, || {
                format!("seq {} arrived again on {}", seq, path())
            }),
            Arrival::Late { late_by } if late_by > self.config.max_reorder => {
                self.report(rules::VOICE_REORDER, c, about, || {
                    format!("seq {} arrived {late_by} positions late on {}", seq, path())
                })
            }
            _ => {}
        }
    }

    /// D043 and D045: what one frame says, checked on the speaker's first path.
    fn voice_content(
        &mut self,
        c: &Ctx<'_>,
        v: &crate::codec::VoiceData<'_>,
        base: usize,
        about: About,
        known: bool,
        codec: Option<CodecSettings>,
    ) {
        let speaker = (v.session, v.sender);
        let fold = Some(key(speaker));
        if !known {
            let about = About {
                mark: Some((base + 7, 2)),
                fold,
                ..about
            };
            self.report(rules::VOICE_UNKNOWN_SENDER, c, about, || {
                format!(
                    "VoiceData from id {}, never a client of session {}",
                    v.sender, v.session
                )
            });
        }
        if let (Some(k), Some(samples)) = (codec, crate::voice::decode::opus_samples_48k(v.audio)) {
            let opus = k.codec() == Some(crate::codec::Codec::Opus) && k.sample_rate > 0;
            let expected = k.frame_size as u64 * 48000 / (k.sample_rate.max(1) as u64);
            if opus && samples as u64 != expected {
                let audio_at = base + 16 + 4 * v.channels.len();
                let about = About {
                    mark: Some((audio_at, 1)),
                    fold,
                    ..about
                };
                self.report(
                    rules::OPUS_FRAME_MISMATCH,
                    c,
                    about,
                    || format!(
                        "Opus TOC says {:.1} ms, the speaker advertised {} samples at {} Hz ({:.1} ms)",
                        samples as f64 / 48.0,
                        k.frame_size,
                        k.sample_rate,
                        k.frame_size as f64 * 1000.0 / k.sample_rate as f64
                    ),
                );
            }
        }
    }
}
