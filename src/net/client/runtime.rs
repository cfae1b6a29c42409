//! `dissonance client`: one scripted Dissonance client on the plain UDP transport.
//! The protocol is the sans-IO [`Client`]; this is the socket, clock and script shell.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::capture::{Payload, Transport};
use crate::codec::{Codec, CodecSettings};
use crate::dissect::locate::PayloadMode;
use crate::net::client::audio::{encode_opus, read_wav_48k};
use crate::net::client::{Client, Event, Target};
use crate::output::SessionId;
use crate::voice::wav::WavSink;
use crate::voice::{VoiceConfig, VoiceExtractor};
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};

use crate::net::Error;

pub use crate::output::log::LogFormat;

/// The options of [`run`] (the command line's, converted).
#[derive(Debug)]
pub struct Options {
    /// Server address (a `dissonance serve` or any server on the plain UDP transport).
    pub server: SocketAddr,
    /// Player name (unique in the session).
    pub name: String,
    /// Rooms to listen to from the start, comma separated.
    pub rooms: Vec<String>,
    /// Script file of actions.
    pub script: Option<PathBuf>,
    /// Actions on the command line: -e 'join Global; say Global hi; wait 2'.
    pub execute: Option<String>,
    /// Opus frame duration in ms (10, 20, 40, 60); advertised in the handshake.
    pub frame_ms: u32,
    /// Opus bitrate in bit/s (Dissonance: 10000, 17000 or 24000).
    pub bitrate: i32,
    /// Event log on stdout: text lines or one JSON object per line.
    pub log_format: LogFormat,
    /// Log every voice packet received (otherwise only talk spurt starts and ends).
    pub log_voice_packets: bool,
    /// Write what was heard as one WAV per speaker into DIR.
    pub record_voice: Option<PathBuf>,
    /// Stop after this many seconds, script finished or not.
    pub duration: f64,
    /// Local address to send from (default: an ephemeral port on the matching family).
    pub bind: Option<SocketAddr>,
}

/// One script step.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Join(String),
    Leave(String),
    Say(Target, String),
    Speak(PathBuf, Target),
    Wait(f64),
    Quit,
}

/// Splits on spaces, keeping "double quoted" words together.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// Parses a script; errors name the step.
pub fn parse_script(text: &str) -> Result<Vec<Action>, String> {
    let mut actions = Vec::new();
    for (n, step) in text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(';'))
        .enumerate()
    {
        let w = words(step);
        let Some(verb) = w.first() else { continue };
        let rest = || w[1..].join(" ");
        let bad = |why: &str| format!("script step {} `{}`: {why}", n + 1, step.trim());
        let a = match (verb.as_str(), w.len()) {
            ("join", 2..) => Action::Join(rest()),
            ("leave", 2..) => Action::Leave(rest()),
            ("say", 3..) => Action::Say(Target::parse(&w[1]), w[2..].join(" ")),
            ("speak", 3..) => Action::Speak(PathBuf::from(&w[1]), Target::parse(&w[2..].join(" "))),
            ("wait", 2) => Action::Wait(
                w[1].parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| bad("SECS must be a number of seconds"))?,
            ),
            ("quit", 1) => Action::Quit,
            ("join" | "leave", _) => return Err(bad("usage: join ROOM / leave ROOM")),
            ("say", _) => return Err(bad("usage: say ROOM|@PLAYER TEXT")),
            ("speak", _) => return Err(bad("usage: speak FILE.wav ROOM|@PLAYER")),
            ("wait", _) => return Err(bad("usage: wait SECS")),
            _ => return Err(bad("unknown action (join, leave, say, speak, wait, quit)")),
        };
        actions.push(a);
    }
    Ok(actions)
}

/// Writes events as text or NDJSON lines on stdout. A closed stdout (`| head`) is
/// remembered, not fatal: the client then leaves (goodbye sent) and exits 0.
pub struct Logger {
    pub format: LogFormat,
    pub name: String,
    pub voice_packets: bool,
    /// `ts` and `rel` of the NDJSON lines; `rel` counts from the client's start.
    pub clock: crate::output::log::RunClock,
    /// Stdout was closed: nothing more is written.
    pub closed: std::cell::Cell<bool>,
}

impl Logger {
    pub fn new(format: LogFormat, name: &str, voice_packets: bool) -> Logger {
        Logger {
            format,
            name: name.to_string(),
            voice_packets,
            clock: crate::output::log::RunClock::new(),
            closed: std::cell::Cell::new(false),
        }
    }

    pub fn line(&self, t: Duration, event: &str, fields: serde_json::Value, text: String) {
        use std::io::Write;
        if self.closed.get() {
            return;
        }
        let line = match self.format {
            LogFormat::Text => format!("{:8.3} {} {event} {text}\n", t.as_secs_f64(), self.name),
            LogFormat::Ndjson => {
                let (ts, rel) = self.clock.floats(t);
                let mut obj = serde_json::json!({
                    "ts": ts,
                    "rel": rel,
                    "client": self.name,
                    "event": event,
                });
                if let (Some(o), serde_json::Value::Object(f)) = (obj.as_object_mut(), fields) {
                    o.extend(f);
                }
                format!("{obj}\n")
            }
        };
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("dissonance: client: writing the log failed: {e}; the log stops");
            }
            self.closed.set(true);
        }
    }

    pub fn event(&self, t: Duration, e: &Event) {
        use serde_json::json;
        let (name, fields, text) = match e {
            Event::Connected { session, id } => (
                "connected",
                json!({"session": session, "id": id}),
                format!("session={} id={id}", SessionId(*session)),
            ),
            Event::HandshakeSent { attempt } => (
                "handshake_sent",
                json!({"attempt": attempt}),
                format!("attempt={attempt}"),
            ),
            Event::PeerJoined { id, name, codec } => (
                "peer_joined",
                json!({"player": name, "id": id, "codec": codec.codec().map_or("unknown", |c| c.name()),
                       "frame_size": codec.frame_size, "sample_rate": codec.sample_rate}),
                format!("{name} id={id}"),
            ),
            Event::PeerLeft { id, name } => (
                "peer_left",
                json!({"player": name, "id": id}),
                format!("{name} id={id}"),
            ),
            Event::RoomEntered { id, name, room } => (
                "room_entered",
                json!({"player": name, "id": id, "room": room}),
                format!("{name} -> {room:?}"),
            ),
            Event::RoomLeft { id, name, room } => (
                "room_left",
                json!({"player": name, "id": id, "room": room}),
                format!("{name} <- {room:?}"),
            ),
            Event::Text {
                sender,
                target,
                text,
                ..
            } => (
                "text",
                json!({"sender": sender, "target_type": target.kind(), "target": target.name(), "text": text}),
                format!("{sender} to {target}: {text:?}"),
            ),
            Event::VoicePacket {
                sender, seq, audio, ..
            } => {
                if !self.voice_packets {
                    return;
                }
                (
                    "voice_packet",
                    json!({"sender": sender, "seq": seq, "bytes": audio.len()}),
                    format!("{sender} seq={seq} bytes={}", audio.len()),
                )
            }
            Event::StreamStarted { sender, .. } => {
                ("voice_started", json!({"sender": sender}), sender.clone())
            }
            Event::StreamEnded { sender, reason, .. } => (
                "voice_ended",
                json!({"sender": sender, "reason": reason.name()}),
                format!("{sender} ({})", reason.name()),
            ),
            Event::SessionLost {
                session,
                server_session,
                retry_in,
            } => (
                "session_lost",
                json!({"session": session, "server_session": server_session, "retry_in_s": retry_in.as_secs_f64()}),
                format!(
                    "session={} server={}; reconnecting in {:.1} s",
                    SessionId(*session),
                    SessionId(*server_session),
                    retry_in.as_secs_f64()
                ),
            ),
            Event::Dropped { reason } => ("dropped", json!({"reason": reason}), reason.clone()),
        };
        self.line(t, name, fields, text);
    }
}

/// A speak action in progress: its frames and when the next one is due.
struct Speaking {
    frames: Vec<Vec<u8>>,
    next: usize,
    due: Duration,
    target: Target,
    frame: Duration,
    /// Frames not sent, by cause (in order of first occurrence): logged once per cause
    /// with the count when the speak ends, not once per frame.
    dropped: Vec<(String, u64)>,
}

impl Speaking {
    fn drop_frame(&mut self, cause: String) {
        match self.dropped.iter_mut().find(|(c, _)| *c == cause) {
            Some((_, n)) => *n += 1,
            None => self.dropped.push((cause, 1)),
        }
    }

    /// One `speak_dropped` line per cause.
    fn report(&self, log: &Logger, now: Duration) {
        for (cause, n) in &self.dropped {
            log.line(
                now,
                "speak_dropped",
                serde_json::json!({"target": self.target.name(), "frames": n,
                                   "of": self.frames.len(), "reason": cause}),
                format!(
                    "{n} of {} frames to {} not sent: {cause}",
                    self.frames.len(),
                    self.target
                ),
            );
        }
    }
}

/// Why a frame or a text to `target` reaching nobody was not sent.
fn nobody(target: &Target) -> String {
    match target {
        Target::Room(r) => format!("nobody listens to room {r:?} (as far as this client knows)"),
        Target::Player(p) => format!("player {p:?} is this client"),
    }
}

pub fn run(args: Options) -> Result<i32, Error> {
    let script = match (&args.script, &args.execute) {
        (Some(f), _) => std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read the script {}: {e}", f.display()))?,
        (None, Some(e)) => e.clone(),
        (None, None) => String::new(),
    };
    let actions = parse_script(&script)?;
    if let Some(dir) = &args.record_voice {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create --record-voice {}: {e}", dir.display()))?;
    }
    if !crate::net::client::audio::FRAME_MS.contains(&args.frame_ms) {
        return Err(format!("--frame-ms {}: use 10, 20, 40 or 60", args.frame_ms).into());
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        return Err("--duration must be a positive number of seconds".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args, actions))
}

async fn run_async(args: Options, actions: Vec<Action>) -> Result<i32, Error> {
    let bind = args.bind.unwrap_or(match args.server {
        SocketAddr::V4(a) if a.ip().is_loopback() => "127.0.0.1:0".parse()?,
        SocketAddr::V4(_) => "0.0.0.0:0".parse()?,
        SocketAddr::V6(_) => "[::]:0".parse()?,
    });
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("cannot bind {bind}: {e}"))?;
    sock.connect(args.server)
        .await
        .map_err(|e| format!("cannot reach {}: {e}", args.server))?;
    let local = sock.local_addr()?;
    let codec = CodecSettings::new(Codec::Opus, 48 * args.frame_ms, 48000);
    let mut client = Client::new(&args.name, codec, &args.rooms);
    let mut log = Logger::new(args.log_format, &args.name, args.log_voice_packets);
    // Ctrl-C and SIGTERM leave as `quit` does (goodbye sent), so the server does not keep
    // a ghost player; a closed stdout too.
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut rec = args.record_voice.as_ref().map(|dir| {
        (
            WavSink::<i16>::new(dir),
            VoiceExtractor::<i16>::new(PayloadMode::Raw, VoiceConfig::default()),
        )
    });
    let epoch_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);

    let start = Instant::now();
    // The log's `rel` is the `t` every line is given: the time since `start`.
    log.clock = crate::output::log::RunClock::since(start);
    let end = Duration::from_secs_f64(args.duration);
    let mut script = actions.into_iter();
    let mut action_due: Option<Duration> = None; // None: wait for the connection
    let mut speaking: Option<Speaking> = None;
    let mut buf = vec![0u8; 65536];
    let mut frames_rx = 0u64;
    let mut status = 0;
    loop {
        let now = start.elapsed();
        // Send whatever the core has, log what it saw.
        while let Some(t) = client.poll_transmit() {
            if let Err(e) = sock.send(&t.bytes).await {
                log.line(
                    now,
                    "send_error",
                    serde_json::json!({"error": e.to_string()}),
                    e.to_string(),
                );
            }
        }
        while let Some(e) = client.poll_event() {
            log.event(now, &e);
        }
        if client.is_quit() {
            break;
        }
        if log.closed.get() {
            client.quit();
            continue;
        }
        if now >= end {
            if client.connection().is_none() {
                eprintln!(
                    "dissonance: error: no session with {} after {:.1} s: is a server (`dissonance serve --listen {}`) running there?",
                    args.server, args.duration, args.server
                );
                status = 1;
            }
            client.quit();
            continue;
        }
        if action_due.is_none() && client.connection().is_some() {
            action_due = Some(now);
        }
        // The next script step, unless a speak is still sending.
        if let Some(sp) = &mut speaking {
            if now >= sp.due {
                let last = sp.next + 1 == sp.frames.len();
                match client.send_voice(std::slice::from_ref(&sp.target), &sp.frames[sp.next], last)
                {
                    Ok(0) => sp.drop_frame(nobody(&sp.target)),
                    Ok(_) => {}
                    Err(e) => sp.drop_frame(e.to_string()),
                }
                sp.next += 1;
                sp.due += sp.frame;
                if sp.next == sp.frames.len() {
                    sp.report(&log, now);
                    speaking = None;
                    action_due = Some(now);
                }
                continue;
            }
        } else if action_due.is_some_and(|t| now >= t) {
            match script.next() {
                None => client.quit(),
                Some(a) => {
                    action_due = Some(now);
                    if let Err(e) = act(&mut client, &a, now, &args, &mut speaking, &mut action_due)
                        .and_then(|sent| match (&a, sent) {
                            (Action::Say(t, _), 0) => Err(format!("not sent: {}", nobody(t))),
                            _ => Ok(()),
                        })
                    {
                        log.line(
                            now,
                            "action_error",
                            serde_json::json!({"action": format!("{a:?}"), "error": e}),
                            e,
                        );
                    }
                }
            }
            continue;
        }
        let mut wake = end;
        if let Some(t) = client.poll_timeout() {
            wake = wake.min(t);
        }
        if let Some(sp) = &speaking {
            wake = wake.min(sp.due);
        } else if let Some(t) = action_due {
            wake = wake.min(t);
        }
        tokio::select! {
            r = sock.recv(&mut buf) => match r {
                Ok(n) => {
                    let now = start.elapsed();
                    client.handle(now, &buf[..n]);
                    if let Some((sink, ex)) = &mut rec {
                        frames_rx += 1;
                        let p = Payload {
                            frame_number: frames_rx,
                            ts_ns: epoch_ns + now.as_nanos() as i64,
                            src: args.server,
                            dst: local,
                            transport: Transport::Udp,
                            data: &buf[..n],
                            truncated: false,
                        };
                        ex.push_payload(&p, sink);
                    }
                }
                // ICMP port unreachable shows up here: the server is not (yet) there.
                Err(e) => {
                    log.line(start.elapsed(), "recv_error", serde_json::json!({"error": e.to_string()}), e.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(start + wake)) => {
                client.handle_timeout(start.elapsed());
            }
            _ = int.recv() => client.quit(),
            _ = term.recv() => client.quit(),
        }
    }
    if let Some(sp) = &speaking {
        // Quit in the middle of a speak: its drops so far.
        sp.report(&log, start.elapsed());
    }
    if let Some((mut sink, mut ex)) = rec {
        let report = ex.finish(&mut sink);
        for w in sink.finish(&report.tracks, &report.speakers) {
            match (&w.wav, &w.error) {
                (_, Some(e)) => {
                    eprintln!("dissonance: error: {e}");
                    status = 1;
                }
                (Some(p), None) => log.line(
                    start.elapsed(),
                    "voice_written",
                    serde_json::json!({"wav": p.display().to_string()}),
                    p.display().to_string(),
                ),
                _ => {}
            }
        }
    }
    Ok(status)
}

/// Runs one script step; `speak` and `wait` set when the next step is due.
fn act(
    client: &mut Client,
    a: &Action,
    now: Duration,
    args: &Options,
    speaking: &mut Option<Speaking>,
    due: &mut Option<Duration>,
) -> Result<usize, String> {
    match a {
        Action::Join(r) => client.join_room(r).map(|_| 1).map_err(|e| e.to_string()),
        Action::Leave(r) => client.leave_room(r).map(|_| 1).map_err(|e| e.to_string()),
        // The number of destinations: 0 is reported by the caller.
        Action::Say(t, text) => client.send_text(t, text).map_err(|e| e.to_string()),
        Action::Wait(s) => {
            *due = Some(now + Duration::from_secs_f64(*s));
            Ok(1)
        }
        Action::Quit => {
            client.quit();
            Ok(1)
        }
        Action::Speak(file, target) => {
            let pcm = read_wav_48k(file)?;
            let frames = encode_opus(&pcm, args.frame_ms, args.bitrate)?;
            if !frames.is_empty() {
                *speaking = Some(Speaking {
                    frames,
                    next: 0,
                    due: now,
                    target: target.clone(),
                    frame: Duration::from_millis(args.frame_ms as u64),
                    dropped: Vec::new(),
                });
            }
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_parse_with_quotes_comments_and_errors() {
        let a = parse_script(
            "join Red Team; say \"Red Team\" hi  there\n# c\nspeak a.wav @bob; wait 1.5;quit",
        )
        .unwrap();
        assert_eq!(
            a,
            vec![
                Action::Join("Red Team".into()),
                Action::Say(Target::Room("Red Team".into()), "hi there".into()),
                Action::Speak("a.wav".into(), Target::Player("bob".into())),
                Action::Wait(1.5),
                Action::Quit,
            ]
        );
        assert_eq!(
            parse_script("join a; wait x").unwrap_err(),
            "script step 2 `wait x`: SECS must be a number of seconds"
        );
        assert!(parse_script("dance")
            .unwrap_err()
            .contains("unknown action"));
    }
}
