//! `dissonance voice` on real data: the real capture against its reference WAVs and truth
//! file, copies of it damaged by the test (lost, duplicated, reordered, late, corrupt
//! frames; no handshake; codecs a receiver cannot decode), and the sample session for the
//! mix, room and listener outputs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use dissonance_tools::capture::{
    CaptureReader, DecapConfig, Decapsulator, PcapWriter, TsResolution,
};
use dissonance_tools::codec::*;
use dissonance_tools::voice::opus_has_fec;
use serde_json::Value;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/captures");
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/session.pcap");
const SESSION: u32 = 523124044;
const ALICE: &str = "523124044-0-alice";
const BOB: &str = "523124044-1-bob";

fn capture() -> PathBuf {
    Path::new(DATA).join("three-friends.pcap")
}

/// A fresh directory for one test.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dissonance-voice-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `dissonance voice CAPTURE -o OUT ARGS...`: exit code and stderr.
fn voice(capture: &Path, out: &Path, args: &[&str]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .arg("voice")
        .arg(capture)
        .arg("-o")
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

fn read_wav(path: &Path) -> (hound::WavSpec, Vec<i16>) {
    let r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    let s = r.into_samples::<i16>().map(|s| s.unwrap()).collect();
    (spec, s)
}

fn wav(dir: &Path, stem: &str) -> Vec<i16> {
    let (spec, s) = read_wav(&dir.join(format!("{stem}.wav")));
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, 48000, 16)
    );
    s
}

fn reference(name: &str) -> Vec<i16> {
    read_wav(&Path::new(DATA).join(format!("three-friends.{name}.ref.wav"))).1
}

fn sidecar(dir: &Path, stem: &str) -> Value {
    let p = dir.join(format!("{stem}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn truth() -> Value {
    let p = Path::new(DATA).join("three-friends.truth.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Signal-to-noise ratio of `test` against `reference`, in dB.
fn snr(reference: &[i16], test: &[i16]) -> f64 {
    assert_eq!(reference.len(), test.len());
    let (mut sig, mut noise) = (0f64, 0f64);
    for (&r, &t) in reference.iter().zip(test) {
        sig += (r as f64).powi(2);
        noise += (r as f64 - t as f64).powi(2);
    }
    10.0 * (sig / noise.max(1.0)).log10()
}

/// Every file left in `dir`, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[derive(Clone)]
struct Dgram {
    ts: i64,
    src: SocketAddr,
    dst: SocketAddr,
    data: Vec<u8>,
}

/// Every UDP datagram of a capture.
fn datagrams(path: &Path) -> Vec<Dgram> {
    let mut reader = CaptureReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut decap = Decapsulator::new(DecapConfig::default());
    let mut out = Vec::new();
    while let Some(frame) = reader.next_frame() {
        decap.push(&frame.unwrap(), &mut |p| {
            out.push(Dgram {
                ts: p.ts_ns,
                src: p.src,
                dst: p.dst,
                data: p.data.to_vec(),
            })
        });
    }
    out
}

fn write_pcap(path: &Path, dgrams: &[Dgram]) {
    let mut w = PcapWriter::new(
        std::io::BufWriter::new(std::fs::File::create(path).unwrap()),
        TsResolution::Microsecond,
    )
    .unwrap();
    for d in dgrams {
        w.write_udp(d.ts, d.src, d.dst, &d.data).unwrap();
    }
    w.flush().unwrap();
}

/// (sender, seq, wrapped in a relay) of a voice datagram.
fn voice_id(data: &[u8]) -> Option<(u16, u16, bool)> {
    let p = Packet::decode(data).ok()?;
    match &p.message {
        Message::VoiceData(v) => Some((v.sender, v.seq, false)),
        Message::ServerRelayUnreliable(r) => match r.inner().ok()?.message {
            Message::VoiceData(v) => Some((v.sender, v.seq, true)),
            _ => None,
        },
        _ => None,
    }
}

/// The Opus frame of a voice datagram.
fn audio(data: &[u8]) -> Vec<u8> {
    let p = Packet::decode(data).unwrap();
    match &p.message {
        Message::VoiceData(v) => v.audio.to_vec(),
        Message::ServerRelayUnreliable(r) => match r.inner().unwrap().message {
            Message::VoiceData(v) => v.audio.to_vec(),
            _ => unreachable!(),
        },
        _ => unreachable!(),
    }
}

/// The same voice datagram with other audio bytes (relay and inner packet re-encoded).
fn with_audio(data: &[u8], new_audio: &[u8]) -> Vec<u8> {
    let p = Packet::decode(data).unwrap();
    let reencode = |v: &VoiceData<'_>| {
        Message::VoiceData(VoiceData {
            audio: new_audio,
            ..*v
        })
        .to_vec(p.variant, 4096)
        .unwrap()
    };
    match &p.message {
        Message::VoiceData(v) => reencode(v),
        Message::ServerRelayUnreliable(r) => {
            let inner = r.inner().unwrap();
            let Message::VoiceData(v) = &inner.message else {
                unreachable!()
            };
            let payload = reencode(v);
            Message::ServerRelayUnreliable(ServerRelay {
                payload: &payload,
                ..*r
            })
            .to_vec(p.variant, 4096)
            .unwrap()
        }
        _ => unreachable!(),
    }
}

#[test]
fn trimmed_speakers_equal_the_reference_wavs() {
    let out = dir("trim");
    let (code, err) = voice(&capture(), &out, &["--trim"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        files(&out),
        [
            format!("{ALICE}.json"),
            format!("{ALICE}.wav"),
            format!("{BOB}.json"),
            format!("{BOB}.wav")
        ]
    );
    for (stem, name, frames) in [(ALICE, "alice", 215), (BOB, "bob", 208)] {
        let got = wav(&out, stem);
        let want = reference(name);
        assert_eq!(got.len(), frames * 960);
        assert!(got == want, "{name}: samples differ from the reference");
        let j = sidecar(&out, stem);
        assert_eq!(j["file"], format!("{stem}.wav"));
        assert_eq!(j["samples"], frames * 960);
        assert_eq!(j["frames"]["decoded"], frames);
        assert_eq!(j["frames"]["packets"], 2 * frames); // relay + one forward each
        for k in ["lost", "duplicates", "late", "reordered", "corrupt"] {
            assert_eq!(j["frames"][k], 0, "{name} {k}");
        }
        assert_eq!(j["spurts"].as_array().unwrap().len(), 1);
        assert_eq!(j["spurts"][0]["end"], "closing");
        assert_eq!(j["spurts"][0]["wav_offset_s"], 0.0);
        assert_eq!(j["speakers"][0]["codec"]["source"], "advertised");
    }
    assert!(err.contains("523124044-0-alice.wav"), "{err}");
}

#[test]
fn default_timeline_places_speech_at_capture_time() {
    let out = dir("timeline");
    let (code, err) = voice(&capture(), &out, &[]);
    assert_eq!(code, 0, "{err}");
    let truth = truth();
    let duration = 13.996030; // first to last packet
    for (stem, name, i) in [(ALICE, "alice", 0), (BOB, "bob", 1)] {
        let got = wav(&out, stem);
        let want = reference(name);
        assert_eq!(got.len(), (duration * 48000.0f64).round() as usize);
        let t = truth["voice_streams"][i]["first_packet"]["t_rel_s"]
            .as_f64()
            .unwrap();
        let expect = (t * 48000.0).round() as i64;
        // Where the spurt is: the first sample that differs from silence, against the
        // reference's own leading silence.
        let nz = |s: &[i16]| s.iter().position(|&x| x != 0).unwrap() as i64;
        let start = nz(&got) - nz(&want);
        assert!(
            (start - expect).abs() <= 960,
            "{name}: starts at {start}, truth {expect}"
        );
        // The spurt is the reference, sample for sample, and the rest is silence.
        let start = start as usize;
        assert!(got[start..start + want.len()] == want[..]);
        assert!(got[..start].iter().all(|&x| x == 0));
        assert!(got[start + want.len()..].iter().all(|&x| x == 0));
        let j = sidecar(&out, stem);
        let s = &j["spurts"][0];
        assert_eq!(s["rel"], start as f64 / 48000.0);
        assert_eq!(s["wav_offset_s"], s["rel"]);
        // `ts` is the same point as capture time: the first frame's (1795514472.912907,
        // its pcap record header) plus `rel`.
        let ts = s["ts"].as_f64().unwrap();
        let rel = s["rel"].as_f64().unwrap();
        assert!((ts - (1795514472.912907 + rel)).abs() < 1e-6, "{ts} {rel}");
        let end = s["rel"].as_f64().unwrap() + s["duration_s"].as_f64().unwrap();
        assert_eq!((end * 48000.0).round() as usize, start + want.len());
        assert_eq!(s["wav_duration_s"], s["duration_s"]);
        assert_eq!(
            s["first_packet"],
            truth["voice_streams"][i]["first_packet"]["frame"]
        );
    }
}

/// alice's frames (seq -> Opus bytes) from the real capture.
fn alice_frames(dgrams: &[Dgram]) -> Vec<Vec<u8>> {
    let mut frames = vec![Vec::new(); 215];
    for d in dgrams {
        if let Some((0, seq, true)) = voice_id(&d.data) {
            frames[seq as usize] = audio(&d.data);
        }
    }
    frames
}

#[test]
fn lost_duplicated_reordered_and_late_frames_are_counted_exactly() {
    let original = datagrams(&capture());
    let frames = alice_frames(&original);
    let is = |d: &Dgram, seq: u16| matches!(voice_id(&d.data), Some((0, s, _)) if s == seq);
    let relay = |d: &Dgram, seq: u16| voice_id(&d.data) == Some((0, seq, true));
    let forward = |d: &Dgram, seq: u16| voice_id(&d.data) == Some((0, seq, false));

    let lost_everywhere = [30u16, 31, 100, 150];
    let mut out: Vec<Dgram> = Vec::new();
    let mut held_back: Vec<Dgram> = Vec::new(); // seq 120, delivered after seq 180
    let mut swapped: Vec<Dgram> = Vec::new(); // seq 90, delivered after seq 91
    for d in &original {
        if lost_everywhere.iter().any(|&s| is(d, s)) || forward(d, 60) {
            continue; // 60 is lost on bob's leg only: the relay copy still has it
        }
        if is(d, 120) {
            held_back.push(d.clone());
            continue;
        }
        if is(d, 90) {
            swapped.push(d.clone());
            continue;
        }
        out.push(d.clone());
        if relay(d, 70) {
            out.push(d.clone()); // duplicated on alice's leg
        }
        if forward(d, 80) {
            out.push(d.clone()); // twice more on bob's leg
            out.push(d.clone());
        }
        if forward(d, 91) {
            out.append(&mut swapped);
        }
        if forward(d, 180) {
            out.append(&mut held_back);
        }
    }
    assert!(held_back.is_empty() && swapped.is_empty());
    let damaged = dir("damaged").join("damaged.pcap");
    write_pcap(&damaged, &out);

    // Lost: the four removed frames and the late one. FEC recovers a lost frame when the
    // next frame arrived (in time) and carries FEC data; 30's next frame is lost too.
    let lost = [30u16, 31, 100, 120, 150];
    let fec = lost
        .iter()
        .filter(|&&s| !lost.contains(&(s + 1)) && opus_has_fec(&frames[s as usize + 1]))
        .count() as u64;
    assert!(fec >= 1, "the test needs at least one recoverable frame");
    let plc = lost.len() as u64 - fec;

    let mut results = Vec::new();
    for conceal in ["fec", "plc", "silence"] {
        let o = dir(&format!("damaged-{conceal}"));
        let (code, err) = voice(&damaged, &o, &["--trim", "--conceal", conceal]);
        assert_eq!(code, 0, "{err}");
        let j = sidecar(&o, ALICE);
        let f = &j["frames"];
        assert_eq!(f["decoded"], 210, "{conceal}");
        assert_eq!(f["lost"], 5);
        assert_eq!(f["duplicates"], 3);
        assert_eq!(f["late"], 1);
        assert_eq!(f["reordered"], 1);
        assert_eq!(f["corrupt"], 0);
        let (want_fec, want_plc, want_silence) = match conceal {
            "fec" => (fec, plc, 0),
            "plc" => (0, 5, 0),
            _ => (0, 0, 5),
        };
        assert_eq!(f["recovered_fec"], want_fec, "{conceal}");
        assert_eq!(f["concealed_plc"], want_plc, "{conceal}");
        assert_eq!(f["silenced"], want_silence, "{conceal}");
        assert_eq!(j["spurts"].as_array().unwrap().len(), 1);
        assert_eq!(j["spurts"][0]["frames"], 215);
        let got = wav(&o, ALICE);
        results.push(snr(&reference("alice"), &got));
        // bob is untouched.
        assert!(wav(&o, BOB) == reference("bob"));
    }
    let (fec_db, plc_db, silence_db) = (results[0], results[1], results[2]);
    eprintln!(
        "SNR fec {fec_db:.2} dB, plc {plc_db:.2} dB, silence {silence_db:.2} dB; FEC {fec} of 5"
    );
    assert!(
        fec_db > silence_db + 1.0 && fec_db > plc_db,
        "SNR fec {fec_db:.2} dB, plc {plc_db:.2} dB, silence {silence_db:.2} dB"
    );
}

#[test]
fn a_corrupt_frame_is_concealed_with_a_warning() {
    let mut dgrams = datagrams(&capture());
    let mut numbers = Vec::new();
    for (i, d) in dgrams.iter_mut().enumerate() {
        if matches!(voice_id(&d.data), Some((0, 40, _))) {
            // TOC code 3 with a frame count of 0: libopus refuses it.
            d.data = with_audio(&d.data, &[0x0B, 0x00]);
            numbers.push(i + 1);
        }
    }
    let path = dir("corrupt").join("corrupt.pcap");
    write_pcap(&path, &dgrams);
    let out = dir("corrupt-out");
    let (code, err) = voice(&path, &out, &["--trim"]);
    assert_eq!(code, 0, "{err}");
    let first = numbers[0];
    assert!(
        err.contains(&format!(
            "warning: packet {first}: alice (session {SESSION}, id 0) seq 40: corrupt frame (libopus:"
        )),
        "{err}"
    );
    let j = sidecar(&out, ALICE);
    assert_eq!(j["frames"]["corrupt"], 1);
    assert_eq!(j["frames"]["decoded"], 214);
    assert_eq!(
        j["frames"]["recovered_fec"].as_u64().unwrap()
            + j["frames"]["concealed_plc"].as_u64().unwrap(),
        1
    );
    assert_eq!(wav(&out, ALICE).len(), 215 * 960);
    assert!(wav(&out, BOB) == reference("bob"));
}

#[test]
fn without_the_handshake_the_frame_duration_comes_from_the_toc() {
    // Start the capture at alice's first voice packet: no handshake, no ClientState.
    let dgrams = datagrams(&capture());
    let from = dgrams
        .iter()
        .position(|d| voice_id(&d.data).is_some())
        .unwrap();
    let path = dir("nohandshake").join("late-start.pcap");
    write_pcap(&path, &dgrams[from..]);
    let out = dir("nohandshake-out");
    let (code, err) = voice(&path, &out, &["--trim"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("unknown (session 523124044, id 0): no codec settings in the capture (handshake not captured); assuming Opus, 20 ms frames from the TOC byte"),
        "{err}"
    );
    // The name comes later (the ClientStates the server sends carol): the file has it.
    let stem = ALICE;
    assert!(wav(&out, stem) == reference("alice"));
    let j = sidecar(&out, stem);
    assert_eq!(j["speakers"][0]["codec"]["source"], "opus_toc");
    assert_eq!(j["speakers"][0]["codec"]["frame_size"], 960);
}

#[test]
fn undecodable_codecs_skip_only_that_speaker() {
    // Three clients of a made-up session speak alice's real frames; zed advertises an
    // unknown codec, yan an Opus rate that does not exist.
    let real = alice_frames(&datagrams(&capture()));
    let server: SocketAddr = "10.0.0.1:7000".parse().unwrap();
    let session = 77;
    let mut out = Vec::new();
    let mut ts = 1_800_000_000_000_000_000i64;
    let clients = [
        ("amy", CodecSettings::OPUS_48K_20MS),
        (
            "zed",
            CodecSettings {
                codec_byte: 9,
                frame_size: 960,
                sample_rate: 48000,
            },
        ),
        ("yan", CodecSettings::new(Codec::Opus, 960, 44100)),
    ];
    let mut push = |ts: i64, src, dst, m: Message<'_>| {
        out.push(Dgram {
            ts,
            src,
            dst,
            data: m.to_vec(Variant::Modern, 4096).unwrap(),
        })
    };
    let addr = |i: usize| -> SocketAddr { format!("10.0.0.{}:5000", i + 2).parse().unwrap() };
    for (i, (name, codec)) in clients.iter().enumerate() {
        push(
            ts,
            addr(i),
            server,
            Message::HandshakeRequest(HandshakeRequest {
                codec: *codec,
                name: WireStr::new(name),
            }),
        );
        push(
            ts,
            server,
            addr(i),
            Message::HandshakeResponse(HandshakeResponse::modern(session, i as u16)),
        );
        let rooms = [WireStr::new("Global")];
        push(
            ts,
            addr(i),
            server,
            Message::ClientState(ClientState {
                session,
                name: WireStr::new(name),
                client_id: i as u16,
                codec: *codec,
                rooms: Seq::Items(&rooms),
                rooms_encoding: RoomsEncoding::List,
            }),
        );
        ts += 1_000_000;
    }
    let chans = [Channel {
        bitfield: ChannelBitfield::new(ChannelType::Room, false, false, Priority::Default, 0, 1.0),
        recipient: room_id("Global"),
    }];
    for (seq, frame) in real.iter().enumerate() {
        for i in 0..3 {
            push(
                ts,
                addr(i),
                addr((i + 1) % 3),
                Message::VoiceData(VoiceData {
                    session,
                    sender: i as u16,
                    options: PacketOptions::extended(0),
                    seq: seq as u16,
                    channels: Seq::Items(&chans),
                    audio: frame,
                }),
            );
        }
        ts += 20_000_000;
    }
    let path = dir("codecs").join("codecs.pcap");
    write_pcap(&path, &out);
    let o = dir("codecs-out");
    let (code, err) = voice(&path, &o, &["--trim"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("zed (session 77, id 1): unknown codec 9 (Dissonance knows 0 Identity and 1 Opus); speaker skipped"),
        "{err}"
    );
    assert!(
        err.contains("yan (session 77, id 2): invalid sample rate 44100 Hz for Opus"),
        "{err}"
    );
    assert!(err.contains("skipped: zed (session 77, id 1)"), "{err}");
    assert_eq!(files(&o), ["77-0-amy.json", "77-0-amy.wav"]);
    // amy's voice ends without a closing flag: the capture ends.
    assert!(wav(&o, "77-0-amy") == reference("alice"));
    assert_eq!(
        sidecar(&o, "77-0-amy")["spurts"][0]["end"],
        "end_of_capture"
    );
}

#[test]
fn speaker_selection_by_name_or_id() {
    let out = dir("select");
    let (code, err) = voice(&capture(), &out, &["--speaker", "bob", "--trim"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(files(&out), [format!("{BOB}.json"), format!("{BOB}.wav")]);
    let out = dir("select-id");
    let (code, err) = voice(&capture(), &out, &["--speaker", "0", "--mix", "--trim"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(files(&out), ["mix.json", "mix.wav"]);
    // A trimmed mix of one speaker is that speaker.
    assert!(wav(&out, "mix") == reference("alice"));
}

#[test]
fn float_output_is_the_same_audio() {
    let out = dir("float");
    let (code, err) = voice(&capture(), &out, &["--trim", "--float"]);
    assert_eq!(code, 0, "{err}");
    let r = hound::WavReader::open(out.join(format!("{ALICE}.wav"))).unwrap();
    assert_eq!(r.spec().sample_format, hound::SampleFormat::Float);
    assert_eq!(r.spec().bits_per_sample, 32);
    let got: Vec<f32> = r.into_samples::<f32>().map(|s| s.unwrap()).collect();
    let want = reference("alice");
    assert_eq!(got.len(), want.len());
    // The int16 decoder is the float decoder rounded (and soft-clipped near full scale).
    let worst = got
        .iter()
        .zip(&want)
        .map(|(&f, &i)| (f * 32768.0 - i as f32).abs())
        .fold(0.0, f32::max);
    assert!(worst <= 1.0, "{worst}");
    assert_eq!(sidecar(&out, ALICE)["format"], "float32");
}

#[test]
fn mix_rooms_and_listeners_on_the_sample_session() {
    // samples/session.pcap: alice speaks into Global (bob, carol listen); bob speaks into
    // Red Team and on a player channel to alice; dave joins Red Team, carol moves from
    // Global to Red Team, then dave speaks into Red Team.
    let out = dir("sample");
    let (code, err) = voice(
        Path::new(SAMPLE),
        &out,
        &[
            "--per-speaker",
            "--mix",
            "--room",
            "Global",
            "--room",
            "Red Team",
            "--room",
            "Blue Team",
            "--listener",
            "alice",
            "--listener",
            "bob",
            "--listener",
            "carol",
            "--listener",
            "dave",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let alice = wav(&out, "708529245-0-alice");
    let bob = wav(&out, "708529245-1-bob");
    let dave = wav(&out, "708529245-3-dave");
    assert!(!out.join("708529245-2-carol.wav").exists()); // carol never speaks
    let n = alice.len();
    assert!(n > 0 && bob.len() == n && dave.len() == n);
    let sum = |parts: &[&[i16]]| -> Vec<i16> {
        (0..n)
            .map(|i| {
                parts
                    .iter()
                    .map(|p| p[i] as i32)
                    .sum::<i32>()
                    .clamp(-32768, 32767) as i16
            })
            .collect()
    };
    let silence = vec![0i16; n];
    // Each speaker heard nowhere else than where they should be.
    assert!(wav(&out, "mix") == sum(&[&alice, &bob, &dave]));
    assert!(wav(&out, "room-Global") == alice);
    assert!(wav(&out, "room-Red_Team") == sum(&[&bob, &dave]));
    assert!(wav(&out, "room-Blue_Team") == silence);
    assert!(wav(&out, "listener-alice") == bob); // bob's player channel only
    assert!(wav(&out, "listener-bob") == sum(&[&alice, &dave]));
    assert!(wav(&out, "listener-carol") == sum(&[&alice, &dave])); // moved rooms in time
    assert!(wav(&out, "listener-dave") == silence); // joined after alice and bob spoke
    let who = |stem: &str| -> Vec<String> {
        sidecar(&out, stem)["speakers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(who("listener-bob"), ["alice", "dave"]);
    assert_eq!(who("room-Red_Team"), ["bob", "dave"]);
    let j = sidecar(&out, "listener-alice");
    assert_eq!(j["kind"], "listener");
    assert_eq!(j["listener"], "alice");
    assert_eq!(j["spurts"].as_array().unwrap().len(), 1);
    assert_eq!(j["spurts"][0]["speaker"], "bob");
    assert_eq!(
        sidecar(&out, "room-Blue_Team")["spurts"],
        serde_json::json!([])
    );
    assert!(!files(&out).iter().any(|f| f.ends_with(".tmp")));

    // Trimmed: a mix is the spurts back to back.
    let trimmed = dir("sample-trim");
    let (code, err) = voice(Path::new(SAMPLE), &trimmed, &["--mix", "--trim"]);
    assert_eq!(code, 0, "{err}");
    let nz: Vec<i16> = wav(&trimmed, "mix");
    let spurts = sidecar(&trimmed, "mix")["spurts"].clone();
    let total: f64 = spurts
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["duration_s"].as_f64().unwrap())
        .sum();
    assert_eq!(nz.len(), (total * 48000.0).round() as usize);
    // Back to back: the second starts in the file where the first ends (in samples, as
    // the offsets are sums of floats).
    let samples = |v: &serde_json::Value| (v.as_f64().unwrap() * 48000.0).round() as i64;
    assert_eq!(
        samples(&spurts[1]["wav_offset_s"]),
        samples(&spurts[0]["wav_offset_s"]) + samples(&spurts[0]["wav_duration_s"])
    );
}

#[test]
fn a_truncated_capture_is_extracted_up_to_the_damage() {
    let bytes = std::fs::read(capture()).unwrap();
    let path = dir("truncated").join("cut.pcap");
    std::fs::write(&path, &bytes[..bytes.len() * 3 / 4 + 7]).unwrap();
    let out = dir("truncated-out");
    let (code, err) = voice(&path, &out, &["--trim"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("packets before it were processed"), "{err}");
    assert!(wav(&out, ALICE) == reference("alice"));
    assert!(files(&out).iter().all(|f| !f.ends_with(".tmp")));
}

#[test]
fn bad_arguments_and_inputs() {
    let out = dir("bad");
    let (code, err) = voice(Path::new("/nonexistent.pcap"), &out, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot open /nonexistent.pcap"), "{err}");
    let (code, err) = voice(&capture(), &out, &["--rate", "44100"]);
    assert_eq!(code, 2);
    assert!(err.contains("not one of 8000"), "{err}");
    // Not a capture at all.
    let junk = out.join("junk.pcap");
    std::fs::write(&junk, b"definitely not a capture").unwrap();
    let (code, _) = voice(&junk, &out, &[]);
    assert_eq!(code, 2);
    assert_eq!(files(&out), ["junk.pcap"]);
}

/// The same voice datagram with another sequence number (relay and inner packet re-encoded).
fn with_seq(data: &[u8], seq: u16) -> Vec<u8> {
    let p = Packet::decode(data).unwrap();
    let Message::ServerRelayUnreliable(r) = &p.message else {
        unreachable!()
    };
    let inner = r.inner().unwrap();
    let Message::VoiceData(v) = &inner.message else {
        unreachable!()
    };
    let payload = Message::VoiceData(VoiceData { seq, ..*v })
        .to_vec(p.variant, 4096)
        .unwrap();
    Message::ServerRelayUnreliable(ServerRelay {
        payload: &payload,
        ..*r
    })
    .to_vec(p.variant, 4096)
    .unwrap()
}

/// The capture with one stray copy of alice's relayed frame 100, its sequence number moved
/// `jump` ahead, right after the real one.
fn poisoned(jump: u16) -> PathBuf {
    let mut out = Vec::new();
    for d in datagrams(&capture()) {
        let stray = voice_id(&d.data) == Some((0, 100, true));
        out.push(d.clone());
        if stray {
            out.push(Dgram {
                data: with_seq(&d.data, 100u16.wrapping_add(jump)),
                ..d
            });
        }
    }
    let path = dir(&format!("poisoned-{jump}")).join("poisoned.pcap");
    write_pcap(&path, &out);
    path
}

#[test]
fn a_stray_copy_far_ahead_is_one_outlier_and_every_real_frame_plays() {
    for jump in [60u16, 1000, 20_000] {
        let o = dir(&format!("poisoned-{jump}-out"));
        let (code, err) = voice(&poisoned(jump), &o, &["--trim"]);
        assert_eq!(code, 0, "{err}");
        assert!(wav(&o, ALICE) == reference("alice"), "+{jump}");
        assert!(wav(&o, BOB) == reference("bob"), "+{jump}");
        let f = &sidecar(&o, ALICE)["frames"];
        assert_eq!(f["decoded"], 215, "+{jump}");
        assert_eq!(f["outliers"], 1, "+{jump}");
        for k in ["lost", "late", "reordered", "duplicates"] {
            assert_eq!(f[k], 0, "+{jump} {k}");
        }
        assert_eq!(sidecar(&o, BOB)["frames"]["outliers"], 0);
        let seq = 100u16.wrapping_add(jump);
        let warning = format!(
            "alice (session {SESSION}, id 0): seq {seq} jumped far ahead of the stream and no \
             packet followed it: ignored as an outlier"
        );
        assert_eq!(err.matches(&warning).count(), 1, "{err}");
    }
}

/// `--float` WAVs are read by sox without a warning (it warned "wave header missing
/// extended part of fmt chunk" about hound's WAVE_FORMAT_EXTENSIBLE), with the header
/// sox itself writes for float: IEEE float tag, an 18-byte fmt chunk, a fact chunk.
/// sox comes with `make deps`.
#[test]
fn float_wav_is_read_by_sox_without_warnings() {
    let out = dir("float-sox");
    let (code, err) = voice(&capture(), &out, &["--float"]);
    assert_eq!(code, 0, "{err}");
    let path = out.join(format!("{ALICE}.wav"));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[12..20], b"fmt \x12\0\0\0");
    assert_eq!(&bytes[20..22], &3u16.to_le_bytes()); // WAVE_FORMAT_IEEE_FLOAT
    assert_eq!(&bytes[38..46], b"fact\x04\0\0\0");
    let samples = u32::from_le_bytes(bytes[46..50].try_into().unwrap());
    assert_eq!(&bytes[50..54], b"data");
    assert_eq!(bytes.len() as u64, 58 + 4 * samples as u64);
    let o = Command::new("sox")
        .arg(&path)
        .args(["-n", "stat"])
        .output()
        .expect("sox is needed for this test: `make deps` installs it (apt-get install sox)");
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("WARN"), "{err}");
    let read = err
        .lines()
        .find_map(|l| l.strip_prefix("Samples read:"))
        .unwrap()
        .trim();
    assert_eq!(read, samples.to_string());
}
