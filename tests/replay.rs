//! `dissonance replay` end to end on 127.0.0.1: the real capture replayed against
//! `dissonance serve` (joins, rooms, texts, voice counts from the server log and the
//! replay report), and against receivers of this test: a byte sink for `--raw`, and one
//! that answers handshakes only, to see every substituted id on the wire.

mod serve_proc;
use serve_proc::{start_serve, stop_serve};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use dissonance_tools::capture::{CaptureReader, DecapConfig, Decapsulator};
use dissonance_tools::codec::{HandshakeResponse, Message, MessageType, Packet, Seq, Variant};

const CAPTURE: &str = "tests/data/captures/three-friends.pcap";
const LIVE_SESSION: u32 = 4242;

mod udp_peer;
use udp_peer::Log;

/// Receives on 127.0.0.1 for `life`; with `answer`, replies to each HandshakeRequest
/// with a HandshakeResponse giving ids 10, 11, 12, ... in order of arrival.
fn receiver(life: Duration, answer: bool) -> (SocketAddr, Log) {
    let mut next_id = 10u16;
    udp_peer::spawn(life, move |d| {
        let is_request =
            Packet::peek_type(d).is_ok_and(|(_, t)| t == MessageType::HandshakeRequest);
        if !(answer && is_request) {
            return None;
        }
        let reply = Message::HandshakeResponse(HandshakeResponse {
            session: LIVE_SESSION,
            client_id: next_id,
            clients: Seq::Items(&[]),
            room_names: Seq::Items(&[]),
            room_entries: Seq::Items(&[]),
        })
        .to_vec(Variant::Modern, 1024)
        .unwrap();
        next_id += 1;
        Some(reply)
    })
}

/// Runs the binary with a bounded wait.
fn replay(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .arg("replay")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(40);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("replay did not finish");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Client→server payloads of the capture, by captured client address.
fn captured() -> BTreeMap<SocketAddr, Vec<Vec<u8>>> {
    let mut reader = CaptureReader::open(CAPTURE).unwrap();
    let mut decap = Decapsulator::new(DecapConfig::default());
    let mut out: BTreeMap<SocketAddr, Vec<Vec<u8>>> = BTreeMap::new();
    while let Some(f) = reader.next_frame() {
        decap.push(&f.unwrap(), &mut |p| {
            if p.dst.port() == 47200 {
                out.entry(p.src).or_default().push(p.data.to_vec());
            }
        });
    }
    out
}

fn per_peer(log: &Log) -> Vec<Vec<Vec<u8>>> {
    let mut m: BTreeMap<SocketAddr, Vec<Vec<u8>>> = BTreeMap::new();
    for (p, d) in log.lock().unwrap().iter() {
        m.entry(*p).or_default().push(d.clone());
    }
    let mut v: Vec<_> = m.into_values().collect();
    v.sort();
    v
}

#[test]
fn raw_resends_the_client_payloads_byte_for_byte() {
    let (target, log) = receiver(Duration::from_secs(40), false);
    let out = replay(&[
        CAPTURE,
        "--target",
        &target.to_string(),
        "--raw",
        // Top speed would overrun the receiver's socket buffer (the test is about bytes).
        "--speed",
        "8",
        "--linger",
        "0.3",
    ]);
    assert!(out.status.success(), "{out:?}");
    let mut want: Vec<_> = captured().into_values().collect();
    want.sort();
    let got = per_peer(&log);
    let lens = |v: &[Vec<Vec<u8>>]| v.iter().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(lens(&got), lens(&want));
    assert!(got == want, "same counts, different bytes");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("sent: 435 ("), "{stdout}");
    assert!(stdout.contains("received: 0 ()"), "{stdout}");
}

/// Replays the capture with `timing` against a receiver that answers handshakes;
/// checks it succeeded and every datagram arrived; returns the output and what arrived.
fn replay_answered(timing: &[&str]) -> (Output, Vec<(SocketAddr, Vec<u8>)>) {
    let (target, log) = receiver(Duration::from_secs(40), true);
    let target = target.to_string();
    let args = [
        &[CAPTURE, "--target", &target, "--linger", "0.3"][..],
        timing,
    ]
    .concat();
    let out = replay(&args);
    assert!(out.status.success(), "{out:?}");
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 435);
    (out, log)
}

#[test]
fn stateful_replay_handshakes_and_substitutes_session_and_ids() {
    let (out, log) = replay_answered(&["--speed", "4"]);
    let peers: BTreeSet<SocketAddr> = log.iter().map(|(p, _)| *p).collect();
    assert_eq!(peers.len(), 3);
    // Live ids by peer: in order of their handshakes (alice, bob, carol).
    let mut ids: BTreeMap<SocketAddr, u16> = BTreeMap::new();
    let mut next = 10;
    let mut names = BTreeMap::new();
    let mut by_type: BTreeMap<MessageType, u64> = BTreeMap::new();
    for (peer, d) in &log {
        let Ok(p) = Packet::decode(d) else {
            assert_eq!(d.as_slice(), [0x00, 0x42, 0x59, 0x45]);
            continue;
        };
        *by_type.entry(p.message_type()).or_default() += 1;
        match &p.message {
            Message::HandshakeRequest(h) => {
                ids.insert(*peer, next);
                names.insert(next, h.name.to_str_lossy().unwrap().into_owned());
                next += 1;
            }
            m => {
                assert_eq!(m.session(), Some(LIVE_SESSION), "{m:?}");
                let me = ids[peer];
                match m {
                    Message::ClientState(c) => assert_eq!(c.client_id, me),
                    Message::DeltaChannelState(c) => assert_eq!(c.peer, me),
                    Message::ServerRelayUnreliable(r) | Message::ServerRelayReliable(r) => {
                        let inner = r.inner().unwrap();
                        assert_eq!(inner.message.session(), Some(LIVE_SESSION));
                        match inner.message {
                            Message::VoiceData(v) => assert_eq!(v.sender, me),
                            Message::TextData(t) => assert_eq!(t.sender, me),
                            m => panic!("{m:?}"),
                        }
                        // Destinations are live ids of the other two.
                        assert!(r
                            .destinations
                            .iter()
                            .all(|d| d != me && (10..13).contains(&d)));
                    }
                    m => panic!("{m:?}"),
                }
            }
        }
    }
    assert_eq!(
        names.values().cloned().collect::<Vec<_>>(),
        ["alice", "bob", "carol"]
    );
    assert_eq!(by_type[&MessageType::ServerRelayUnreliable], 423);
    assert_eq!(by_type[&MessageType::ClientState], 3);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("received: 3 (HandshakeResponse 3)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("never sent (no handshake response): 0"),
        "{stdout}"
    );
    // The captured server answered much more than this partner: the diff says so.
    assert!(
        stdout.contains("bob          VoiceData                 215      0  DIFFERENT"),
        "{stdout}"
    );
}

/// The real partner: `dissonance serve`, with a client "zed" already joined so the live
/// ids (alice 1, bob 2, carol 3) differ from the captured ones (0, 1, 2).
#[test]
fn replay_against_serve_reproduces_joins_rooms_texts_and_voice() {
    use dissonance_tools::codec::{
        ClientState, CodecSettings, HandshakeRequest, RoomsEncoding, Seq, WireStr,
    };
    let (serve, addr) = start_serve(
        &["--log-format", "ndjson", "--session", "0x12345678"],
        Stdio::piped(),
    );
    let zed = UdpSocket::bind("127.0.0.1:0").unwrap();
    zed.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let hello = Message::HandshakeRequest(HandshakeRequest {
        codec: CodecSettings::OPUS_48K_20MS,
        name: WireStr::new("zed"),
    })
    .to_vec(Variant::Modern, 1024)
    .unwrap();
    zed.send_to(&hello, addr).unwrap();
    let mut buf = [0u8; 2048];
    let n = zed.recv(&mut buf).unwrap();
    let Message::HandshakeResponse(h) = Packet::decode(&buf[..n]).unwrap().message else {
        panic!("no handshake response");
    };
    assert_eq!((h.session, h.client_id), (0x12345678, 0));
    // Its own ClientState, as a real client sends after the response: only then is zed a
    // joined client that newcomers hear of.
    let own = Message::ClientState(ClientState {
        session: h.session,
        name: WireStr::new("zed"),
        client_id: 0,
        codec: CodecSettings::OPUS_48K_20MS,
        rooms: Seq::Items(&[]),
        rooms_encoding: RoomsEncoding::List,
    })
    .to_vec(Variant::Modern, 1024)
    .unwrap();
    zed.send_to(&own, addr).unwrap();
    zed.recv(&mut buf).unwrap();
    assert_eq!(buf[2], 1, "zed's state burst");

    let out = replay(&[
        CAPTURE,
        "--target",
        &addr.to_string(),
        "--speed",
        "4",
        "--linger",
        "0.5",
    ]);
    assert!(out.status.success(), "{out:?}");
    let log = stop_serve(serve);

    // Joins, room changes and leaves, in order, with the live ids.
    let events: Vec<String> = log
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let ev = v["event"].as_str()?;
            let name = v["name"].as_str().unwrap_or("");
            let id = v["id"].as_u64().unwrap_or(99);
            match ev {
                "join" => Some(format!("join {name} {id}")),
                "room_join" | "room_leave" => {
                    Some(format!("{ev} {name} {}", v["room"].as_str().unwrap()))
                }
                "leave" => Some(format!("leave {name} {}", v["reason"].as_str().unwrap())),
                _ => None,
            }
        })
        .collect();
    assert_eq!(
        events,
        [
            "join zed 0",
            "join alice 1",
            "room_join alice Global",
            "join bob 2",
            "room_join bob Global",
            "join carol 3",
            "room_join carol Global",
            "room_leave carol Global",
            "room_join carol Red Team",
            "leave carol goodbye",
            "leave bob goodbye",
            "leave alice goodbye",
            // Still registered when serve stopped: told goodbye then.
            "leave zed shutdown",
        ],
        "{log}"
    );
    // Voice and text reached the same listeners in the same numbers as in the capture:
    // the relay destinations were translated to the live ids.
    let report = String::from_utf8(out.stdout).unwrap();
    for line in [
        "  alice        VoiceData                 208    208  same",
        "  bob          VoiceData                 215    215  same",
        "  alice        TextData                    1      1  same",
        "  bob          TextData                    1      1  same",
        "  alice        RemoveClient                2      2  same",
        // zed's ClientState comes on top of the captured ones, once per newcomer.
        "  alice        ClientState                 4      5  DIFFERENT",
        "  bob          ClientState                 4      5  DIFFERENT",
        "  carol        ClientState                 4      5  DIFFERENT",
    ] {
        assert!(
            report.lines().any(|l| l == line),
            "{line:?} not in\n{report}"
        );
    }
    assert!(report.contains("ErrorWrongSession: 0, RemoveClient: 3, untranslated: 0"));
    assert!(report.contains("differences: 3\n"), "{report}");
}

/// `--top-speed` used to send only the handshakes and goodbyes (the rest waited for the
/// handshake answers, which came after the schedule had ended) and print "speed 1".
#[test]
fn top_speed_sends_every_datagram_in_each_clients_order() {
    let (out, log) = replay_answered(&["--top-speed"]);
    // Per client: the handshake first, the goodbye last.
    for got in per_peer_log(&log) {
        assert_eq!(
            Packet::peek_type(&got[0]).unwrap().1,
            MessageType::HandshakeRequest
        );
        assert_eq!(got.last().unwrap().as_slice(), [0x00, 0x42, 0x59, 0x45]);
    }
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("sent: 435 ("), "{stdout}");
    assert!(
        stdout.contains("schedule: capture 13.996030 s, top speed, 1 loop(s)\n"),
        "{stdout}"
    );
}

fn per_peer_log(log: &[(SocketAddr, Vec<u8>)]) -> Vec<Vec<Vec<u8>>> {
    let mut m: BTreeMap<SocketAddr, Vec<Vec<u8>>> = BTreeMap::new();
    for (p, d) in log {
        m.entry(*p).or_default().push(d.clone());
    }
    m.into_values().collect()
}

#[test]
fn fail_on_diff_exits_1_on_a_difference() {
    // The handshake-only partner answers far less than the captured server.
    let (target, _log) = receiver(Duration::from_secs(40), true);
    let t = target.to_string();
    let args = [CAPTURE, "--target", &t, "--speed", "8", "--linger", "0.2"];
    let out = replay(&[&args[..], &["--fail-on-diff"]].concat());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let n: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("differences: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(n > 0);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.ends_with(&format!(
        "replay: {n} differences between the captured and the live answers (--fail-on-diff)\n"
    )));
    // Without the flag the same run succeeds (the report is informational).
    let (target, _log) = receiver(Duration::from_secs(40), true);
    let t = target.to_string();
    let out = replay(&[CAPTURE, "--target", &t, "--speed", "8", "--linger", "0.2"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// `--raw` is for servers that are not Dissonance: a capture of some other UDP protocol
/// (three senders to one server) is resent byte for byte.
#[test]
fn raw_replays_a_capture_without_a_dissonance_server() {
    use dissonance_tools::capture::{PcapWriter, TsResolution};
    let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let mut w = PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap();
    let mut want: BTreeMap<SocketAddr, Vec<Vec<u8>>> = BTreeMap::new();
    for i in 0..30u16 {
        let src = a(5000 + i % 3);
        let data = format!("game datagram {i}").into_bytes();
        w.write_udp(i as i64 * 1_000_000, src, a(9000), &data)
            .unwrap();
        want.entry(src).or_default().push(data);
        // The server's answers are in the capture too; they are not replayed.
        w.write_udp(i as i64 * 1_000_000 + 500, a(9000), src, b"ack")
            .unwrap();
    }
    let path = std::env::temp_dir().join(format!("dissonance-raw-{}.pcap", std::process::id()));
    std::fs::write(&path, w.into_inner()).unwrap();
    let (target, log) = receiver(Duration::from_secs(40), false);
    let out = replay(&[
        path.to_str().unwrap(),
        "--target",
        &target.to_string(),
        "--raw",
        "--top-speed",
        "--linger",
        "0.2",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("replay: 3 clients, 30 datagrams to server 127.0.0.1:9000"),
        "{stderr}"
    );
    let mut got = per_peer_log(&log.lock().unwrap());
    got.sort();
    let mut want: Vec<_> = want.into_values().collect();
    want.sort();
    assert_eq!(got, want);
    // Without --raw the capture is refused, with a hint.
    let out = replay(&[path.to_str().unwrap(), "--target", &target.to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("--raw resends"));
}

/// Sends refused by the kernel (nothing listens at the target) are counted as failed,
/// not as sent: sent + failed = every datagram.
#[test]
fn failed_sends_are_counted_as_failed() {
    // A port that was free a moment ago: nothing listens there.
    let target = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = replay(&[
        CAPTURE,
        "--target",
        &target.to_string(),
        "--raw",
        "--speed",
        "16",
        "--linger",
        "0.1",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let num = |prefix: &str| -> u64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|r| r.split(' ').next().unwrap().parse().unwrap())
            .unwrap_or(0)
    };
    let (sent, failed) = (num("sent: "), num("failed sends: "));
    assert!(failed > 0, "{stdout}");
    assert_eq!(sent + failed, 435, "{stdout}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("replay: {failed} sends to {target} failed")),
        "{stderr}"
    );
}

/// replay takes no dump view flags it would ignore; its -F is its log's format
/// (text or ndjson), so `-F json` is refused with the reason.
#[test]
fn flags_replay_does_not_use_are_refused() {
    for (flag, says) in [
        (&["-F", "json"][..], "a log is a stream of lines"),
        (&["--type", "VoiceData"], "unexpected argument"),
        (&["--hex"], "unexpected argument"),
        (&["--events"], "unexpected argument"),
    ] {
        let out = replay(&[&[CAPTURE, "--target", "127.0.0.1:9"][..], flag].concat());
        assert_eq!(out.status.code(), Some(2), "{flag:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(says), "{err}");
    }
}

/// A Mirror/kcp2k capture of the same session replays, with `--payload mirror`, exactly
/// the Dissonance packets of the plain capture: each once (the stack's retransmitted
/// copies are not sent again, the split packet is sent joined), the stack's disconnects
/// as the plain goodbyes.
#[test]
fn replay_payload_mirror_sends_what_the_plain_capture_sends() {
    let mirror = "tests/data/captures/transports/mirror-kcp2k.pcap";
    let mut sent = vec![];
    for (cap, extra) in [(CAPTURE, vec![]), (mirror, vec!["--payload", "mirror"])] {
        let (mut serve, addr) = start_serve(&[], Stdio::null());
        let target = addr.to_string();
        let mut args = vec![cap, "--target", &target, "--top-speed", "--linger", "0.5"];
        args.extend(extra);
        let out = replay(&args);
        let _ = serve.kill();
        let _ = serve.wait();
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.starts_with("replay: 3 clients, 435 datagrams"),
            "{stderr}"
        );
        let line = stdout.lines().find(|l| l.starts_with("sent: ")).unwrap();
        sent.push(line.to_string());
        assert!(
            stdout.contains("never sent (no handshake response): 0"),
            "{stdout}"
        );
    }
    // 432 packets and 3 goodbyes.
    assert_eq!(
        sent[0],
        "sent: 435 (ClientState 3, HandshakeRequest 3, ServerRelayReliable 1, \
         ServerRelayUnreliable 423, DeltaChannelState 2)"
    );
    assert_eq!(sent[1], sent[0]);
}
