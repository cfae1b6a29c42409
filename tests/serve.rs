//! End-to-end: the real `dissonance serve` binary on 127.0.0.1 with plain UDP sockets as
//! clients (driving the protocol with our codec). Every wait has a timeout; every sending
//! loop is bounded in count and time.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dissonance_tools::capture::{CaptureReader, DecapConfig, Decapsulator};
use dissonance_tools::codec::{
    Channel, ChannelBitfield, ChannelType, ClientState, CodecSettings, DeltaChannelState,
    HandshakeRequest, Message, PacketOptions, Priority, RoomsEncoding, Seq, ServerRelay, TextData,
    Variant, VoiceData, WireStr,
};
use dissonance_tools::dissect::locate::BYE;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

mod scrape;
use scrape::{http_get, metric, samples, validate_exposition};

/// A running `dissonance serve`; killed on drop if the test did not stop it.
struct Serve {
    child: Child,
    addr: SocketAddr,
    session: u32,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    /// `http://ADDR` of `--metrics`, when given.
    metrics: Option<String>,
}

impl Serve {
    fn start(extra: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dissonance"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dissonance serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = rx.recv_timeout(WAIT).expect("a 'listening on' line");
        // "listening on 127.0.0.1:PORT session ID"
        let words: Vec<&str> = first.split_whitespace().collect();
        assert_eq!(words[..2], ["listening", "on"], "{first}");
        assert_eq!(words[3], "session", "{first}");
        let addr = words[2].parse().unwrap();
        let session = words[4].parse().unwrap();
        let metrics = extra.contains(&"--metrics").then(|| {
            let line = rx.recv_timeout(WAIT).expect("a 'metrics on' line");
            let url = line.strip_prefix("metrics on ").expect("metrics on URL");
            url.strip_suffix("/metrics").expect("/metrics").to_string()
        });
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Serve {
            child,
            addr,
            session,
            lines,
            reader: Some(reader),
            metrics,
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(r, 0);
    }

    /// Waits until a log line satisfies `pred`.
    fn wait_line(&self, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + WAIT;
        while Instant::now() < end {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no such log line in {:?}", self.lines.lock().unwrap());
    }

    /// SIGTERM, then the exit status and the whole log.
    fn stop(self) -> (ExitStatus, Vec<String>) {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    /// The exit status (waiting at most [`WAIT`]) and the whole log.
    fn wait_exit(mut self) -> (ExitStatus, Vec<String>) {
        let end = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < end, "serve did not stop");
            std::thread::sleep(Duration::from_millis(10));
        };
        self.reader.take().unwrap().join().unwrap();
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        (status, lines)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn enc(m: Message<'_>) -> Vec<u8> {
    m.to_vec(Variant::Modern, 65_507).unwrap()
}

fn hello(name: &str) -> Vec<u8> {
    enc(Message::HandshakeRequest(HandshakeRequest {
        codec: CodecSettings::OPUS_48K_20MS,
        name: WireStr::new(name),
    }))
}

fn state(session: u32, name: &str, id: u16, rooms: &[&str]) -> Vec<u8> {
    let rooms: Vec<WireStr> = rooms.iter().map(|r| WireStr::new(r)).collect();
    enc(Message::ClientState(ClientState {
        session,
        name: WireStr::new(name),
        client_id: id,
        codec: CodecSettings::OPUS_48K_20MS,
        rooms: Seq::Items(&rooms),
        rooms_encoding: RoomsEncoding::List,
    }))
}

fn delta(session: u32, joined: bool, id: u16, room: &str) -> Vec<u8> {
    enc(Message::DeltaChannelState(DeltaChannelState::new(
        session, joined, id, room,
    )))
}

fn voice(session: u32, sender: u16, seq: u16) -> Vec<u8> {
    let ch = [Channel {
        bitfield: ChannelBitfield::new(ChannelType::Room, false, false, Priority::Default, 0, 1.0),
        recipient: dissonance_tools::codec::room_id("lobby"),
    }];
    enc(Message::VoiceData(VoiceData {
        session,
        sender,
        options: PacketOptions::extended(0),
        seq,
        channels: Seq::Items(&ch),
        // The sender is in the audio too, so a one-byte mutation of another sender's
        // packet never looks like this one.
        audio: &[0xF8, sender as u8, 0xFE, seq as u8],
    }))
}

fn relay(session: u32, dests: &[u16], payload: &[u8], reliable: bool) -> Vec<u8> {
    let r = ServerRelay {
        session,
        destinations: Seq::Items(dests),
        payload,
    };
    enc(if reliable {
        Message::ServerRelayReliable(r)
    } else {
        Message::ServerRelayUnreliable(r)
    })
}

/// A test client: a UDP socket on 127.0.0.1 that keeps everything it sent and received.
struct Peer {
    sock: UdpSocket,
    server: SocketAddr,
    sent: Vec<Vec<u8>>,
    got: Vec<Vec<u8>>,
}

impl Peer {
    fn new(server: SocketAddr) -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Peer {
            sock,
            server,
            sent: Vec::new(),
            got: Vec::new(),
        }
    }
    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }
    fn send(&mut self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).unwrap();
        self.sent.push(bytes.to_vec());
    }
    /// The next datagram (5 s timeout).
    fn recv(&mut self) -> Vec<u8> {
        let mut buf = [0u8; 65536];
        let (n, from) = self
            .sock
            .recv_from(&mut buf)
            .expect("a datagram from serve");
        assert_eq!(from, self.server);
        self.got.push(buf[..n].to_vec());
        buf[..n].to_vec()
    }
    /// Everything that arrives within `quiet` of the last datagram.
    fn drain(&mut self, quiet: Duration) -> Vec<Vec<u8>> {
        self.sock.set_read_timeout(Some(quiet)).unwrap();
        let v = self.take_waiting();
        self.sock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        v
    }
    /// Whatever is waiting now (keeps the socket buffer from overflowing under a flood).
    fn poll_all(&mut self) -> Vec<Vec<u8>> {
        self.sock.set_nonblocking(true).unwrap();
        let v = self.take_waiting();
        self.sock.set_nonblocking(false).unwrap();
        v
    }
    fn take_waiting(&mut self) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        let mut buf = [0u8; 65536];
        // Bounded: a server cannot keep us here forever.
        for _ in 0..100_000 {
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => v.push(buf[..n].to_vec()),
                Err(_) => break,
            }
        }
        self.got.extend(v.iter().cloned());
        v
    }
    /// Joins as a real client does: handshake, then its own ClientState listening to
    /// `rooms`; reads the response, the `states` ClientStates of the server's state burst
    /// (which the server sends only after that ClientState) and the echo of its own.
    /// Returns the id.
    fn join(&mut self, name: &str, session: u32, rooms: &[&str], states: usize) -> u16 {
        self.send(&hello(name));
        let resp = self.recv();
        assert_eq!(
            resp[..7],
            [
                0x8B,
                0xC7,
                5,
                (session >> 24) as u8,
                (session >> 16) as u8,
                (session >> 8) as u8,
                session as u8
            ]
        );
        let id = u16::from_be_bytes([resp[7], resp[8]]);
        let own = state(session, name, id, rooms);
        self.send(&own);
        for _ in 0..states {
            assert_eq!(self.recv()[2], 1, "a ClientState");
        }
        assert_eq!(self.recv(), own, "the echo of its own ClientState");
        id
    }
}

#[test]
fn hostile_datagrams_do_not_hurt_the_session() {
    let mut serve = Serve::start(&[]);
    let session = serve.session;
    assert!((1..0x7FFF_FFFF).contains(&session));
    let mut alice = Peer::new(serve.addr);
    let mut bob = Peer::new(serve.addr);
    assert_eq!(alice.join("alice", session, &["lobby"], 1), 0);
    assert_eq!(bob.join("bob", session, &["lobby"], 2), 1);
    assert_eq!(alice.recv(), state(session, "bob", 1, &["lobby"]));

    // The hostile peer's corpus: valid packets of its own (another name, the right
    // session, relays to alice and bob), mutated; truncations; random bytes; control
    // datagrams; wrong sessions.
    let corpus = [
        hello("mallory"),
        state(session, "mallory", 2, &["lobby", "x"]),
        delta(session, true, 2, "lobby"),
        relay(session, &[0, 1], &voice(session, 2, 7), false),
        relay(session, &[0, 1, 0xFFFF, 9], &voice(session, 2, 8), true),
        state(session ^ 0x55, "mallory", 2, &[]),
    ];
    let mut evil = UdpSocket::bind("127.0.0.1:0").unwrap();
    evil.set_nonblocking(true).unwrap();
    let mut rng = SmallRng::seed_from_u64(0x5EED);
    let mut hostile = 0usize;
    let rounds = 250u16;
    let mut got = Vec::new();
    let started = Instant::now();
    for round in 0..rounds {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "flood too slow"
        );
        for _ in 0..20 {
            let d = hostile_datagram(&mut rng, &corpus);
            // A full socket buffer only drops a hostile packet.
            let _ = evil.send_to(&d, serve.addr);
            hostile += 1;
        }
        // Legitimate traffic in the middle of it: bob talks to alice.
        bob.send(&relay(session, &[0], &voice(session, 1, round), false));
        std::thread::sleep(Duration::from_millis(2));
        got.extend(alice.poll_all());
        bob.poll_all();
    }
    drain_nonblocking(&mut evil);
    assert_eq!(hostile, 5000);
    assert!(serve.running(), "serve exited during the flood");

    // Every voice packet of bob reached alice, byte for byte.
    got.extend(alice.drain(Duration::from_millis(500)));
    bob.drain(Duration::from_millis(100));
    let from_bob: Vec<u16> = got
        .iter()
        .filter_map(|d| {
            let seq = u16::from_be_bytes([*d.get(10)?, *d.get(11)?]);
            (*d == voice(session, 1, seq)).then_some(seq)
        })
        .collect();
    let want: Vec<u16> = (0..rounds).collect();
    let missing: Vec<u16> = want
        .iter()
        .filter(|s| !from_bob.contains(s))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?} of {}, got {}",
        want.len(),
        from_bob.len()
    );
    assert_eq!(from_bob, want);

    // Same session, same ids: alice's next state change is echoed, not refused.
    let d = delta(session, true, 0, "after");
    alice.send(&d);
    assert_eq!(alice.drain(Duration::from_millis(300)).last(), Some(&d));
    assert_eq!(bob.drain(Duration::from_millis(300)).last(), Some(&d));
    let v = voice(session, 0, 1);
    alice.send(&relay(session, &[1], &v, false));
    assert_eq!(bob.recv(), v);

    assert!(serve.running());
    let (status, log) = serve.stop();
    assert!(status.success(), "{status:?}");
    // Nobody legitimate left before the stop said goodbye to everyone.
    assert!(
        !log.iter().any(|l| l.contains("leave")
            && (l.contains("\"alice\"") || l.contains("\"bob\""))
            && !l.contains("reason=shutdown")),
        "{log:?}"
    );
    let fin = log
        .iter()
        .find(|l| l.contains(" final "))
        .expect("final summary");
    assert!(fin.contains(&format!("session={session} ")), "{fin}");
    // Told goodbye at the stop: alice, bob and possibly the last "mallory" the flood
    // registered.
    let told = log.iter().filter(|l| l.contains("reason=shutdown")).count();
    assert!(told == 2 || told == 3, "{log:?}");
    assert_eq!(field(fin, "clients"), 0, "{fin}");
    assert!(field(fin, "dropped") > 0, "{fin}");
    assert!(log.iter().any(|l| l.contains(" drop ")), "drops are logged");
}

/// A number `key=N` from a text log line.
fn field(line: &str, key: &str) -> u64 {
    let at = line.find(&format!(" {key}=")).expect("field") + key.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn drain_nonblocking(sock: &mut UdpSocket) {
    let mut buf = [0u8; 65536];
    for _ in 0..100_000 {
        if sock.recv_from(&mut buf).is_err() {
            break;
        }
    }
}

fn hostile_datagram(rng: &mut SmallRng, corpus: &[Vec<u8>]) -> Vec<u8> {
    match rng.gen_range(0..10) {
        0..=2 => {
            let n = rng.gen_range(0..120);
            (0..n).map(|_| rng.gen()).collect()
        }
        3 => {
            // Random after a real header (magic, any type, then noise).
            let n = rng.gen_range(0..60);
            let mut d = vec![0x8B, 0xC7, rng.gen_range(0..13)];
            d.extend((0..n).map(|_| rng.gen::<u8>()));
            d
        }
        4 => {
            let p = &corpus[rng.gen_range(0..corpus.len())];
            p[..rng.gen_range(0..p.len())].to_vec()
        }
        5 => {
            let n = rng.gen_range(1..8);
            let mut d = vec![0u8];
            d.extend((0..n).map(|_| rng.gen::<u8>()));
            d
        }
        _ => {
            let mut p = corpus[rng.gen_range(0..corpus.len())].clone();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..p.len());
                p[i] = rng.gen();
            }
            p
        }
    }
}

#[test]
fn logs_joins_rooms_leaves_and_records_every_datagram() {
    let dir = std::env::temp_dir().join(format!("serve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("rec.pcap");
    let serve = Serve::start(&[
        "--session",
        "0x12345678",
        "--log-format",
        "ndjson",
        "--record",
        pcap.to_str().unwrap(),
    ]);
    let session = 0x1234_5678;
    assert_eq!(serve.session, session);
    let mut alice = Peer::new(serve.addr);
    let mut bob = Peer::new(serve.addr);
    assert_eq!(alice.join("alice", session, &["lobby", "red"], 1), 0);
    assert_eq!(bob.join("bob", session, &[], 2), 1);
    assert_eq!(alice.recv(), state(session, "bob", 1, &[]));
    let d = delta(session, false, 0, "red");
    alice.send(&d);
    assert_eq!(alice.recv(), d);
    assert_eq!(bob.recv(), d);
    let text = enc(Message::TextData(TextData {
        session,
        recipient_type_byte: ChannelType::Player.text_byte(),
        sender: 1,
        target: 0,
        text: WireStr::new("hi alice"),
    }));
    bob.send(&relay(session, &[0], &text, true));
    assert_eq!(alice.recv(), text);
    // Every datagram so far caused a send: each one is a sample of the added latency.
    let caused = alice.sent.len() + bob.sent.len();
    serve.signal(libc::SIGUSR1);
    serve.wait_line(|l| l.contains("\"event\":\"status\""));
    alice.send(&BYE);
    assert_eq!(bob.recv(), [0x8B, 0xC7, 0x0A, 0x12, 0x34, 0x56, 0x78, 0, 0]);
    serve.wait_line(|l| l.contains("\"event\":\"leave\""));
    let (addr, a, b) = (serve.addr, alice.addr(), bob.addr());
    let (status, log) = serve.stop();
    assert!(status.success());

    let events: Vec<Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "listening",
            "join",
            "room_join",
            "room_join",
            "join",
            "room_leave",
            "status",
            "leave",
            "leave",
            "final"
        ]
    );
    assert_eq!(events[1]["name"], "alice");
    assert_eq!(events[1]["id"], 0);
    assert_eq!(events[1]["peer"], a.to_string());
    assert_eq!(events[2]["room"], "lobby");
    assert_eq!(events[3]["room"], "red");
    assert_eq!(events[4]["name"], "bob");
    assert_eq!(events[5]["room"], "red");
    assert_eq!(events[6]["clients"], 2);
    assert_eq!(
        events[6]["rooms"],
        serde_json::json!([{"room": "lobby", "listeners": 1}])
    );
    assert_eq!(events[7]["name"], "alice");
    assert_eq!(events[7]["reason"], "goodbye");
    assert_eq!(events[7]["rooms"], serde_json::json!(["lobby"]));
    // SIGTERM without --drain: bob is told at once.
    assert_eq!(events[8]["name"], "bob");
    assert_eq!(events[8]["reason"], "shutdown");
    assert_eq!(events[9]["clients"], 0);
    // The server's own added latency: since the last status line there, over the whole
    // run in the final one (the goodbye caused a RemoveClient to bob).
    let added = &events[6]["added_latency"];
    assert_eq!(added["samples"], caused as u64);
    // Seconds, from whole µs.
    let s = |k: &str| added[k].as_f64().unwrap();
    let (p50, p99, max) = (s("p50_s"), s("p99_s"), s("max_s"));
    assert!(p50 >= 1e-6, "{added}");
    assert!(p50 <= p99 && p99 <= max, "{added}");
    assert!(max < 1.0, "{added}");
    assert_eq!(events[9]["added_latency"]["samples"], caused as u64 + 1);

    // The record holds exactly what the two clients sent and received.
    let mut expected: Vec<(SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
    for (peer, p) in [(a, &alice), (b, &bob)] {
        expected.extend(p.sent.iter().map(|d| (peer, addr, d.clone())));
        expected.extend(p.got.iter().map(|d| (addr, peer, d.clone())));
    }
    // The goodbye the stop sent bob (not read by the test's socket).
    expected.push((addr, b, BYE.to_vec()));
    let bytes = std::fs::read(&pcap).unwrap();
    let mut reader = CaptureReader::new(&bytes[..]).expect("our pcap");
    let mut decap = Decapsulator::new(DecapConfig::default());
    let mut got = Vec::new();
    while let Some(frame) = reader.next_frame() {
        decap.push(&frame.expect("frame"), &mut |p| {
            got.push((p.src, p.dst, p.data.to_vec()))
        });
    }
    decap.finish(&mut |p| got.push((p.src, p.dst, p.data.to_vec())));
    assert_eq!(got.len(), 20);
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_flags_are_refused_with_a_hint() {
    let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(["serve", "--session", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pick 1..=2147483646"), "{err}");
}

#[test]
fn periodic_status_oversize_flag_and_packet_limit_in_the_text_log() {
    let serve = Serve::start(&["--status-every", "0.2", "--max-packet", "3000"]);
    let session = serve.session;
    let mut alice = Peer::new(serve.addr);
    assert_eq!(alice.join("alice", session, &[], 1), 0);
    // 2,000 bytes: over the 1024 real Dissonance sends, under --max-packet: accepted
    // (re-broadcast) and flagged. 4,000 bytes: dropped unread.
    let mut big = state(session, "alice", 0, &[]);
    big.resize(2000, 0xAB);
    alice.send(&big);
    assert_eq!(alice.recv(), big);
    alice.send(&vec![0x8B; 4000]);
    let drop = serve.wait_line(|l| l.contains(" drop "));
    assert!(drop.contains("len=4000 reason=too_large"), "{drop}");
    // Two periodic summaries, 0.2 s apart, without any signal.
    serve.wait_line(|l| l.matches(" status ").count() == 1 && l.contains("clients=1 "));
    let end = Instant::now() + WAIT;
    while serve
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(" status "))
        .count()
        < 2
    {
        assert!(Instant::now() < end, "no second status line");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, log) = serve.stop();
    assert!(status.success());
    let oversize: Vec<&String> = log.iter().filter(|l| l.contains(" oversize ")).collect();
    assert_eq!(oversize.len(), 1, "{log:?}");
    assert!(oversize[0].contains(&format!("peer={} len=2000", alice.addr())));
    let fin = log.iter().find(|l| l.contains(" final ")).unwrap();
    assert_eq!(field(fin, "dropped"), 1, "{fin}");
}

#[test]
fn metrics_during_a_simulate_run_match_the_final_summary() {
    let serve = Serve::start(&["--metrics", "127.0.0.1:0", "--log-format", "ndjson"]);
    let base = serve.metrics.clone().unwrap();
    assert_eq!(
        http_get(&format!("{base}/healthz"), None),
        (200, "ok\n".into())
    );
    assert_eq!(
        http_get(&format!("{base}/readyz"), None),
        (200, "ready\n".into())
    );
    let mut sim = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(["simulate", "--server", &serve.addr.to_string()])
        .args([
            "--clients",
            "8",
            "--speakers",
            "2",
            "--rooms",
            "2",
            "--duration",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let err = sim.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // During the run: every client is registered, in its room.
    let end = Instant::now() + WAIT;
    loop {
        let line = rx.recv_timeout(WAIT).expect("simulate reports progress");
        if line.starts_with("all ") && line.contains("clients joined") {
            break;
        }
        assert!(Instant::now() < end, "simulate did not join");
    }
    let (code, text) = http_get(&format!("{base}/metrics"), None);
    assert_eq!(code, 200);
    let during = samples(&text);
    assert_eq!(metric(&during, "dissonance_serve_clients", &[]), 8.0);
    assert_eq!(metric(&during, "dissonance_serve_rooms", &[]), 2.0);
    assert_eq!(metric(&during, "dissonance_serve_listeners", &[]), 8.0);
    assert_eq!(metric(&during, "dissonance_serve_joins_total", &[]), 8.0);
    assert_eq!(metric(&during, "dissonance_serve_accepting", &[]), 1.0);

    let end = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = sim.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "simulate did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    // The clients' goodbyes are the last datagrams: once every client has left, the
    // counters are final.
    let end = Instant::now() + WAIT;
    let text = loop {
        let (_, text) = http_get(&format!("{base}/metrics"), None);
        if metric(&samples(&text), "dissonance_serve_leaves_total", &[]) == 8.0 {
            break text;
        }
        assert!(Instant::now() < end, "the clients did not leave");
        std::thread::sleep(Duration::from_millis(20));
    };
    validate_exposition(&text);
    let m = samples(&text);
    let (_, open) = http_get(
        &format!("{base}/metrics"),
        Some("application/openmetrics-text; version=1.0.0"),
    );
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(
        open.contains("# TYPE dissonance_serve_relayed counter\n"),
        "{open}"
    );

    let (status, log) = serve.stop();
    assert!(status.success());
    let fin: Value = log
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["event"] == "final")
        .expect("final summary");
    let n = |k: &str| fin[k].as_u64().unwrap() as f64;
    let all = |name: &str| metric(&m, name, &[]);
    assert_eq!(
        all("dissonance_serve_received_datagrams_total"),
        n("datagrams_in")
    );
    assert_eq!(all("dissonance_serve_received_bytes_total"), n("bytes_in"));
    assert_eq!(
        all("dissonance_serve_sent_datagrams_total"),
        n("datagrams_out")
    );
    assert_eq!(all("dissonance_serve_sent_bytes_total"), n("bytes_out"));
    assert_eq!(all("dissonance_serve_relayed_total"), n("relayed"));
    assert_eq!(
        all("dissonance_serve_dropped_datagrams_total"),
        n("dropped")
    );
    assert_eq!(
        all("dissonance_serve_wrong_session_total"),
        n("wrong_session")
    );
    assert_eq!(
        all("dissonance_serve_relay_unknown_destinations_total"),
        n("relay_unknown")
    );
    assert_eq!(
        all("dissonance_serve_relay_duplicate_destinations_total"),
        n("relay_duplicate")
    );
    assert_eq!(all("dissonance_serve_resets_total"), n("resets"));
    assert_eq!(all("dissonance_serve_joins_total"), n("joins"));
    assert_eq!(all("dissonance_serve_leaves_total"), n("leaves"));
    assert_eq!(all("dissonance_serve_send_errors_total"), n("send_errors"));
    assert_eq!(
        all("dissonance_serve_send_buffer_full_total"),
        n("send_buffer_full")
    );
    assert_eq!(all("dissonance_serve_clients"), n("clients"));
    assert_eq!(all("dissonance_serve_socket_receive_drops_total"), 0.0);
    // Voice went through: relays wrapping VoiceData in, VoiceData out.
    let relays_in = metric(
        &m,
        "dissonance_serve_received_datagrams_total",
        &[("type", "ServerRelayUnreliable")],
    );
    assert!(relays_in > 0.0);
    assert_eq!(
        metric(
            &m,
            "dissonance_serve_sent_datagrams_total",
            &[("type", "VoiceData")]
        ),
        n("relayed")
    );
    let latency = m
        .iter()
        .find(|s| s.metric == "dissonance_serve_added_latency_seconds")
        .expect("latency histogram");
    let prometheus_parse::Value::Histogram(buckets) = &latency.value else {
        panic!("{latency:?}")
    };
    let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
    assert_eq!(inf.count, n_of(&fin["added_latency"], "samples"));
    assert!(all("process_resident_memory_bytes") > 0.0);
    assert!(all("process_cpu_seconds_total") > 0.0);
}

fn n_of(v: &Value, k: &str) -> f64 {
    v[k].as_u64().unwrap() as f64
}

#[test]
fn sigterm_drains_then_says_goodbye_to_every_client() {
    let serve = Serve::start(&[
        "--metrics",
        "127.0.0.1:0",
        "--drain",
        "1500ms",
        "--log-format",
        "ndjson",
    ]);
    let base = serve.metrics.clone().unwrap();
    let session = serve.session;
    let mut peers: Vec<Peer> = (0..3).map(|_| Peer::new(serve.addr)).collect();
    for (i, p) in peers.iter_mut().enumerate() {
        // The state burst: the clients joined before, and itself.
        assert_eq!(p.join(&format!("p{i}"), session, &[], i + 1), i as u16);
    }
    // The earlier clients got the later ones' ClientStates.
    for p in &mut peers[..2] {
        p.drain(Duration::from_millis(100));
    }
    let v = voice(session, 0, 1);
    peers[0].send(&relay(session, &[1, 2], &v, false));
    assert_eq!(peers[1].recv(), v);
    assert_eq!(peers[2].recv(), v);

    serve.signal(libc::SIGTERM);
    serve.wait_line(|l| l.contains("\"event\":\"draining\""));
    assert_eq!(
        http_get(&format!("{base}/readyz"), None),
        (503, "draining\n".into())
    );
    assert_eq!(
        http_get(&format!("{base}/healthz"), None),
        (200, "ok\n".into())
    );
    // A newcomer is refused, and counted.
    let mut late = Peer::new(serve.addr);
    late.send(&hello("late"));
    assert!(late.drain(Duration::from_millis(200)).is_empty());
    let m = samples(&http_get(&format!("{base}/metrics"), None).1);
    assert_eq!(
        metric(
            &m,
            "dissonance_serve_dropped_datagrams_total",
            &[("reason", "draining")]
        ),
        1.0
    );
    assert_eq!(metric(&m, "dissonance_serve_accepting", &[]), 0.0);
    assert_eq!(metric(&m, "dissonance_serve_clients", &[]), 3.0);
    // Voice keeps flowing while draining (bounded: 5 frames, well inside the 1.5 s).
    for seq in 2..7u16 {
        let v = voice(session, 0, seq);
        peers[0].send(&relay(session, &[1, 2], &v, false));
        assert_eq!(peers[1].recv(), v);
        assert_eq!(peers[2].recv(), v);
    }
    assert!(peers.iter().all(|p| p.got.iter().all(|d| d != &BYE)));

    let (status, log) = serve.wait_exit();
    assert_eq!(status.code(), Some(0));
    // In id order: p0's goodbye, RemoveClient(0) to p1 and p2, p1's goodbye,
    // RemoveClient(1) to p2, p2's goodbye.
    let remove = |id: u8| {
        vec![
            0x8B,
            0xC7,
            0x0A,
            (session >> 24) as u8,
            (session >> 16) as u8,
            (session >> 8) as u8,
            session as u8,
            0,
            id,
        ]
    };
    assert_eq!(peers[0].drain(Duration::from_millis(200)), [BYE.to_vec()]);
    assert_eq!(
        peers[1].drain(Duration::from_millis(200)),
        [remove(0), BYE.to_vec()]
    );
    assert_eq!(
        peers[2].drain(Duration::from_millis(200)),
        [remove(0), remove(1), BYE.to_vec()]
    );
    let left: Vec<Value> = log
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "leave")
        .collect();
    assert_eq!(left.len(), 3, "{log:?}");
    assert!(left.iter().all(|e| e["reason"] == "shutdown"), "{log:?}");
}

// ---- the adversary harness: each attack of issue 21 against a live session ----

/// Amplification the server may give a peer that is not a joined client: what it sends
/// to such a peer, in bytes and in datagrams, stays within this many times what the peer
/// sent (docs/guide.md#security gives the measured values).
const MAX_AMPLIFICATION: usize = 2;

/// Sockets of an attacker: what they sent and got back, in total.
#[derive(Default)]
struct Attacker {
    sent: (usize, usize),
    got: (usize, usize),
}

impl Attacker {
    /// Sends `d` from `s` and counts it.
    fn send(&mut self, s: &UdpSocket, to: SocketAddr, d: &[u8]) {
        // A full socket buffer only loses a hostile datagram (then it is not counted).
        if s.send_to(d, to).is_ok() {
            self.sent.0 += 1;
            self.sent.1 += d.len();
        }
    }
    /// Reads whatever `s` has been sent (non-blocking) and counts it.
    fn collect(&mut self, s: &UdpSocket) {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 65536];
        for _ in 0..100_000 {
            match s.recv_from(&mut buf) {
                Ok((n, _)) => {
                    self.got.0 += 1;
                    self.got.1 += n;
                }
                Err(_) => break,
            }
        }
    }
    fn assert_bounded(&self, what: &str) {
        let (d_in, b_in) = self.sent;
        let (d_out, b_out) = self.got;
        eprintln!(
            "{what}: sent {d_in} datagrams / {b_in} B, got back {d_out} / {b_out} B \
             (x{:.3} datagrams, x{:.3} bytes)",
            d_out as f64 / d_in.max(1) as f64,
            b_out as f64 / b_in.max(1) as f64
        );
        assert!(d_out <= MAX_AMPLIFICATION * d_in, "{what}: datagrams");
        assert!(b_out <= MAX_AMPLIFICATION * b_in, "{what}: bytes");
    }
}

/// Lines of each log kind in a text log (`T KIND ...`), and the log's length in seconds.
fn lines_per_kind(log: &[String]) -> (BTreeMap<String, usize>, f64) {
    let mut kinds = BTreeMap::new();
    let mut last = 0f64;
    for l in log {
        let mut w = l.split_whitespace();
        let (Some(t), Some(kind)) = (w.next(), w.next()) else {
            continue;
        };
        if let Ok(t) = t.parse::<f64>() {
            last = last.max(t);
            *kinds.entry(kind.to_string()).or_insert(0) += 1;
        }
    }
    (kinds, last)
}

#[test]
fn adversary_reflection_strangers_and_floods_amplify_nothing() {
    let serve = Serve::start(&["--status-every", "1"]);
    let session = serve.session;
    // 20 legitimate clients in "lobby".
    let mut peers: Vec<Peer> = Vec::new();
    for i in 0..20u16 {
        let mut p = Peer::new(serve.addr);
        let id = p.join(&format!("c{i}"), session, &["lobby"], i as usize + 1);
        assert_eq!(id, i);
        for q in &mut peers {
            assert_eq!(q.recv(), state(session, &format!("c{i}"), id, &["lobby"]));
        }
        peers.push(p);
    }
    // 10 joined clients of the attacker with the longest names a real client can use;
    // a 65,000-byte name is refused.
    let mut big_name = Attacker::default();
    let mut reflection = Attacker::default();
    let mut attacker = Attacker::default();
    let fakes: Vec<UdpSocket> = (0..10)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (i, f) in fakes.iter().enumerate() {
        let name = format!("{i}{}", "x".repeat(1001));
        f.send_to(&hello(&name), serve.addr).unwrap();
        let own = state(session, &name, 20 + i as u16, &[]);
        f.send_to(&own, serve.addr).unwrap();
    }
    let huge = hello(&"y".repeat(65_000));
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    big_name.send(&stranger, serve.addr, &huge);

    let started = Instant::now();
    let mut seq = 0u16;
    let mut legit = Vec::new();
    let talk = |peers: &mut Vec<Peer>, seq: &mut u16, legit: &mut Vec<Vec<u8>>| {
        // c0 talks to c1 through the whole attack; everyone keeps up with what they get.
        peers[0].send(&relay(session, &[1], &voice(session, 0, *seq), false));
        *seq += 1;
        std::thread::sleep(Duration::from_millis(2));
        legit.extend(peers[1].poll_all());
        for p in peers.iter_mut() {
            p.poll_all();
        }
    };
    // 1. Reflection: 300 handshakes, each from a fresh socket (so per-peer limits do not
    //    apply), some with the name of a joined client of the attacker.
    for i in 0..300 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        reflection.send(&s, serve.addr, &hello(&format!("r{i}")));
        std::thread::sleep(Duration::from_micros(200));
        reflection.collect(&s);
        if i % 10 == 0 {
            talk(&mut peers, &mut seq, &mut legit);
        }
    }
    // 2. Relays and state from peers that never joined: 255 destinations (every id, and
    //    c1 many times), oversize payloads; none may reach anyone.
    let mut dests: Vec<u16> = (0..30).collect();
    dests.extend([1u16; 225]);
    // A voice-looking payload over the 1024 bytes real clients send.
    let mut big = vec![0x8B, 0xC7, 2];
    big.resize(2000, 0);
    let mut sneaky = relay(session, &dests, &voice(session, 0, 9999), false);
    let strangers: Vec<UdpSocket> = (0..20)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for round in 0..10 {
        for s in &strangers {
            attacker.send(s, serve.addr, &sneaky);
            attacker.send(s, serve.addr, &relay(session, &[0, 1, 2], &big, false));
            attacker.send(s, serve.addr, &delta(session, true, 0, "evil"));
        }
        talk(&mut peers, &mut seq, &mut legit);
        sneaky[10] = round; // a different payload each round
    }
    // 3. A joined attacker floods oversize relays to nobody: `oversize` log lines.
    let fake = &fakes[0];
    for _ in 0..500 {
        let _ = fake.send_to(&relay(session, &[], &big, false), serve.addr);
    }
    std::thread::sleep(Duration::from_millis(100));
    for s in &strangers {
        attacker.collect(s);
    }
    big_name.collect(&stranger);
    talk(&mut peers, &mut seq, &mut legit);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "attack too slow"
    );

    // Nothing from the strangers reached anyone; c1 got all of c0's voice, in order.
    legit.extend(peers[1].drain(Duration::from_millis(300)));
    let voices: Vec<u16> = legit
        .iter()
        .filter(|d| d.len() > 11 && d[2] == 2)
        .map(|d| u16::from_be_bytes([d[10], d[11]]))
        .collect();
    let want: Vec<u16> = (0..seq).collect();
    assert_eq!(voices, want, "c1 lost voice or got the strangers' relays");
    for p in peers.iter_mut().skip(2) {
        p.drain(Duration::from_millis(50));
        assert!(
            !p.got.iter().any(|d| d.len() > 100 && d[2] != 1),
            "a stranger's relay reached a client"
        );
    }
    reflection.assert_bounded("reflection (handshakes from fresh ports)");
    attacker.assert_bounded("relays, deltas and oversize relays from strangers");
    big_name.assert_bounded("65,000-byte name");
    assert_eq!(big_name.got, (0, 0));

    let (status, log) = serve.stop();
    assert!(status.success());
    // Every legitimate session is intact: none of c0..c19 left before the stop told
    // everyone goodbye. (Half-open "r" clients may: a fresh socket can get the port of an
    // earlier one, and a new name from a connection replaces its old one.)
    assert!(
        !log.iter().any(|l| l.contains(" leave ")
            && l.contains(" name=\"c")
            && !l.contains("reason=shutdown")),
        "{log:?}"
    );
    let fin = log.iter().find(|l| l.contains(" final ")).unwrap();
    for reason in ["not_joined:", "name_too_long:1", "prefix_rate_limited:"] {
        assert!(fin.contains(reason), "{reason} in {fin}");
    }
    // No log kind above its rate (20 lines a second, the rest counted as hidden).
    let (kinds, secs) = lines_per_kind(&log);
    for (kind, n) in &kinds {
        let limit = 20.0 * (secs + 1.0);
        assert!(*n as f64 <= limit, "{n} {kind} lines in {secs:.1} s");
    }
    assert!(
        log.iter().any(|l| l.contains(" hidden kind=oversize ")),
        "{kinds:?}"
    );
    assert!(
        log.iter().any(|l| l.contains(" hidden kind=drop ")),
        "{kinds:?}"
    );
}

#[test]
fn adversary_takeover_is_visible_and_the_evicted_client_reconnects() {
    let serve = Serve::start(&[]);
    let session = serve.session;
    // dave: a test peer; carol: our `dissonance client`.
    let mut dave = Peer::new(serve.addr);
    assert_eq!(dave.join("dave", session, &["lobby"], 1), 0);
    let mut carol = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(["client", "--server", &serve.addr.to_string()])
        .args([
            "--name",
            "carol",
            "--rooms",
            "lobby",
            "--log-format",
            "ndjson",
        ])
        .args(["--duration", "20", "-e", "wait 20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    let out = carol.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let wait_for = |event: &str| -> Value {
        let end = Instant::now() + WAIT;
        while let Ok(v) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            if v["event"] == event {
                return v;
            }
        }
        panic!("carol never logged {event}");
    };
    let first = wait_for("connected");
    let carol_id = first["id"].as_u64().unwrap() as u16;
    assert_eq!(carol_id, 1);
    // dave sees carol's ClientState echo.
    assert_eq!(dave.recv()[2], 1);

    // One handshake with carol's name from another socket takes the name over.
    let mut attacker = Attacker::default();
    let evil = UdpSocket::bind("127.0.0.1:0").unwrap();
    attacker.send(&evil, serve.addr, &hello("carol"));
    let lost = wait_for("session_lost");
    assert_eq!(lost["server_session"], session.wrapping_add(1));
    let again = wait_for("connected");
    assert_eq!(again["id"], carol_id, "carol got her id back");
    let line = serve.wait_line(|l| l.contains(" leave ") && l.contains("\"carol\""));
    let evil_addr = evil.local_addr().unwrap();
    assert!(line.contains("reason=replaced"), "{line}");
    assert!(
        line.contains(&format!("(replaced by {evil_addr})")),
        "{line}"
    );

    // carol hears dave's text again.
    std::thread::sleep(Duration::from_millis(200));
    dave.poll_all();
    let text = enc(Message::TextData(TextData {
        session,
        recipient_type_byte: ChannelType::Player.text_byte(),
        sender: 0,
        target: carol_id,
        text: WireStr::new("still there?"),
    }));
    dave.send(&relay(session, &[carol_id], &text, true));
    let heard = wait_for("text");
    assert_eq!(heard["text"], "still there?");
    // The usurper got its 15-byte response and nothing else: it never proved anything.
    std::thread::sleep(Duration::from_millis(100));
    attacker.collect(&evil);
    assert_eq!(attacker.got, (1, 15));
    attacker.assert_bounded("usurper");

    let _ = carol.kill();
    let _ = carol.wait();
    let (status, log) = serve.stop();
    assert!(status.success());
    let fin = log.iter().find(|l| l.contains(" final ")).unwrap();
    assert_eq!(field(fin, "resets"), 1, "{fin}");
}
