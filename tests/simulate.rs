//! End to end with real processes and sockets on 127.0.0.1: `dissonance serve` with
//! `dissonance client`s replaying the story of the three-friends capture, and
//! `dissonance simulate` small and short.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dissonance");

/// Kills the child when dropped, so a failed assertion leaves no process behind.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/captures");

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

fn serve() -> (Proc, String) {
    serve_with(&[])
}

/// Starts `dissonance serve` on a free port; it prints `listening on ADDR session N` first.
fn serve_with(extra: &[&str]) -> (Proc, String) {
    let mut p = Proc(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--duration", "60"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = p.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("listening on ") {
                let _ = tx.send(rest.split(' ').next().unwrap_or("").to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server address");
    (p, addr)
}

fn run(args: &[&str]) -> (i32, String, String) {
    let p = Proc(
        Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    finish(p, Duration::from_secs(40))
}

/// Waits (bounded) for the exit; returns status, stdout and stderr.
fn finish(mut p: Proc, limit: Duration) -> (i32, String, String) {
    let t = Instant::now();
    loop {
        if let Some(status) = p.0.try_wait().unwrap() {
            let (mut out, mut err) = (String::new(), String::new());
            p.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            p.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status.code().unwrap_or(-1), out, err);
        }
        assert!(t.elapsed() < limit, "process still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn client(server: &str, name: &str, script: &str, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "client", "--server", server, "--name", name, "--rooms", "Global",
    ])
    .args(["--log-format", "ndjson", "--duration", "30", "-e", script])
    .args(extra)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    Proc(cmd.spawn().unwrap())
}

/// What an observer's client logs about the session, derived from the truth file:
/// the server's membership events and the texts, as the observer learns them.
fn expected(truth: &Value, observer: &str) -> Vec<String> {
    let mut items: Vec<(f64, Value)> = truth["membership_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["t_rel_s"].as_f64().unwrap(), e.clone()))
        .collect();
    for t in truth["texts"].as_array().unwrap() {
        for d in t["delivered"].as_array().unwrap() {
            let mut e = t.clone();
            e["event"] = "text".into();
            e["to"] = d["to"].clone();
            items.push((d["t_rel_s"].as_f64().unwrap(), e));
        }
    }
    items.sort_by(|a, b| a.0.total_cmp(&b.0));
    let ids = &truth["summary"]["client_ids"];
    let mut server: BTreeMap<u64, (String, Vec<String>)> = BTreeMap::new();
    let mut known: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut active = false;
    let mut out = Vec::new();
    let set_rooms = |out: &mut Vec<String>,
                     known: &mut BTreeMap<u64, Vec<String>>,
                     id: u64,
                     name: &str,
                     rooms: &[String]| {
        let cur = known.entry(id).or_insert_with(|| {
            out.push(format!("peer_joined {name} {id}"));
            Vec::new()
        });
        for r in cur.clone() {
            if !rooms.contains(&r) {
                out.push(format!("room_left {name} {r}"));
            }
        }
        cur.retain(|r| rooms.contains(r));
        for r in rooms {
            if !cur.contains(r) {
                out.push(format!("room_entered {name} {r}"));
                cur.push(r.clone());
            }
        }
    };
    for (_, e) in items {
        let who = s(&e, "client");
        let id = ids[&who].as_u64().unwrap_or(0);
        match e["event"].as_str().unwrap() {
            "handshake_response" => {
                server.insert(id, (who.clone(), Vec::new()));
                if who == observer {
                    active = true;
                    for (i, (n, r)) in server.clone() {
                        set_rooms(&mut out, &mut known, i, &n, &r);
                    }
                }
            }
            "client_state" => {
                let rooms: Vec<String> = e["rooms"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect();
                server.insert(id, (who.clone(), rooms.clone()));
                if active {
                    set_rooms(&mut out, &mut known, id, &who, &rooms);
                }
            }
            "leave_room" | "join_room" => {
                let room = s(&e, "room");
                let rooms = &mut server.get_mut(&id).unwrap().1;
                if e["event"] == "leave_room" {
                    rooms.retain(|r| *r != room);
                } else {
                    rooms.push(room);
                }
                let rooms = rooms.clone();
                if active {
                    set_rooms(&mut out, &mut known, id, &who, &rooms);
                }
            }
            "remove_client" if s(&e, "to") == observer => {
                let id = e["removed_id"].as_u64().unwrap();
                let name = s(&e, "removed");
                for r in known.remove(&id).unwrap() {
                    out.push(format!("room_left {name} {r}"));
                }
                out.push(format!("peer_left {name} {id}"));
            }
            "transport_bye" if who == observer => break,
            "text" if s(&e, "to") == observer => out.push(format!(
                "text {} room {} {}",
                s(&e, "sender"),
                s(&e, "target_name"),
                s(&e, "text")
            )),
            _ => {}
        }
    }
    out
}

fn logged(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Some(match v["event"].as_str()? {
                "peer_joined" | "peer_left" => {
                    format!("{} {} {}", s(&v, "event"), s(&v, "player"), v["id"])
                }
                "room_entered" | "room_left" => {
                    format!("{} {} {}", s(&v, "event"), s(&v, "player"), s(&v, "room"))
                }
                "text" => format!(
                    "text {} {} {} {}",
                    s(&v, "sender"),
                    s(&v, "target_type"),
                    s(&v, "target"),
                    s(&v, "text")
                ),
                _ => return None,
            })
        })
        .collect()
}

#[test]
fn three_friends_over_udp() {
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{CAPTURES}/three-friends.truth.json")).unwrap(),
    )
    .unwrap();
    let session = truth["server"]["session_id"].as_u64().unwrap().to_string();
    let (_serve, addr) = serve_with(&["--session", &session]);
    let heard = std::env::temp_dir().join(format!("dissonance-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&heard);
    let wav = format!("{CAPTURES}/three-friends.alice.ref.wav");
    let text = s(&truth["texts"][0], "text");

    let alice = client(
        &addr,
        "alice",
        &format!("wait 1; speak {wav} Global; wait 7"),
        &[],
    );
    std::thread::sleep(ms(200));
    let heard_arg = heard.to_string_lossy().to_string();
    let bob = client(
        &addr,
        "bob",
        "wait 11",
        &["--log-voice-packets", "--record-voice", &heard_arg],
    );
    std::thread::sleep(ms(5800));
    let carol = client(
        &addr,
        "carol",
        &format!(
            "wait 1; say Global {text}; wait 1.5; leave Global; join \"Red Team\"; wait 1.5; quit"
        ),
        &[],
    );
    let limit = Duration::from_secs(30);
    let (c_rc, c_out, _) = finish(carol, limit);
    let (b_rc, b_out, _) = finish(bob, limit);
    let (a_rc, a_out, _) = finish(alice, limit);
    assert_eq!((a_rc, b_rc, c_rc), (0, 0, 0));

    assert_eq!(
        logged(&a_out),
        expected(&truth, "alice"),
        "alice's log:\n{a_out}"
    );
    assert_eq!(
        logged(&b_out),
        expected(&truth, "bob"),
        "bob's log:\n{b_out}"
    );
    assert_eq!(
        logged(&c_out),
        expected(&truth, "carol"),
        "carol's log:\n{c_out}"
    );

    // bob heard alice's 215 frames as one spurt, and wrote it to a WAV.
    let frames = truth["summary"]["voice"][0]["frames"].as_u64().unwrap();
    let voice: Vec<Value> = b_out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == "voice_packet" && v["sender"] == "alice")
        .collect();
    assert_eq!(voice.len() as u64, frames);
    assert!(voice.iter().enumerate().all(|(i, v)| v["seq"] == i as u64));
    assert!(b_out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .any(|v| v["event"] == "voice_ended"
            && v["reason"] == "closing"
            && v["sender"] == "alice"));
    let wavs: Vec<_> = std::fs::read_dir(&heard)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    assert_eq!(wavs.len(), 1, "{wavs:?}");
    assert!(wavs[0].to_string_lossy().ends_with("-0-alice.wav"));
    let r = hound::WavReader::open(&wavs[0]).unwrap();
    assert_eq!(r.spec().sample_rate, 48000);
    // The track starts when bob joined; alice's speech (215 × 960 samples) is in it.
    assert!(r.duration() as u64 >= frames * 960, "{}", r.duration());
    let _ = std::fs::remove_dir_all(&heard);
}

#[test]
fn ten_clients_two_speakers_two_rooms() {
    let (_server, addr) = serve();
    let (rc, out, err) = run(&[
        "simulate",
        "--server",
        &addr,
        "--clients",
        "10",
        "--speakers",
        "2",
        "--rooms",
        "2",
        "--duration",
        "2",
        "--measure-latency",
        "--json",
    ]);
    assert_eq!(rc, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    // 2 s of 20 ms frames per speaker; each speaker's room holds 5 clients: 4 listeners.
    // A speaker that falls more than a frame behind (a loaded CI machine) skips the
    // missed frames instead of bursting them, and says how many.
    let sent = v["sent"].as_u64().unwrap();
    assert_eq!(
        sent + v["late_frames_skipped"].as_u64().unwrap(),
        200,
        "{v}"
    );
    assert!(sent >= 150, "{v}");
    assert_eq!(v["expected"], 4 * sent);
    assert_eq!(v["received"], 4 * sent, "{err}");
    assert_eq!(v["loss_pct"], 0.0);
    assert_eq!(v["latency"]["samples"], 4 * sent);
    assert_eq!(v["dropped_by_clients"], 0);
    let p99 = v["latency"]["p99_s"].as_f64().unwrap();
    assert!(p99 > 0.0 && p99 < 1.0, "{p99}");
    // One line per second on stderr.
    assert_eq!(
        err.lines().filter(|l| l.starts_with("second ")).count(),
        2,
        "{err}"
    );
}

#[test]
fn simulate_says_what_to_do_without_a_server() {
    let (rc, _, err) = run(&[
        "simulate",
        "--server",
        "127.0.0.1:9",
        "--clients",
        "2",
        "--duration",
        "1",
        "--join-timeout",
        "1",
    ]);
    assert_eq!(rc, 1);
    assert!(
        err.contains("only 0 of 2 clients joined within 1 s"),
        "{err}"
    );
    assert!(
        err.contains("dissonance serve --listen 127.0.0.1:9"),
        "{err}"
    );
}

#[test]
fn ndjson_log_lines_follow_the_schema_and_the_level_filters_them() {
    let (_server, addr) = serve();
    let args = |level: &str| -> Vec<String> {
        [
            "simulate",
            "--server",
            &addr,
            "--clients",
            "4",
            "--speakers",
            "1",
            "--duration",
            "1",
            "--json",
            "--log-format",
            "ndjson",
            "--log-level",
            level,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a = args("info");
    let (rc, _, err) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(rc, 0, "{err}");
    let lines: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for v in &lines {
        // The wall clock as Unix seconds, and seconds since the process started.
        assert!(v["ts"].as_f64().unwrap() > 1.7e9, "{v}");
        let rel = v["rel"].as_f64().unwrap();
        assert!((0.0..60.0).contains(&rel), "{v}");
        assert_eq!(v["level"], "info", "{v}");
        assert_eq!(v["cmd"], "simulate", "{v}");
        assert!(v["msg"].is_string(), "{v}");
    }
    let events: Vec<&str> = lines.iter().map(|v| v["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["joined", "second"], "{err}");
    assert_eq!(lines[0]["clients"], 4);
    assert_eq!(lines[1]["second"], 1);
    assert_eq!(lines[1]["loss_pct"], 0.0);
    // warn: none of these info lines.
    let a = args("warn");
    let (rc, _, err) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(rc, 0, "{err}");
    assert_eq!(err, "");
}

/// Reads a client's NDJSON log until an event named `event` (bounded by the client's
/// own --duration).
fn wait_event(p: &mut Proc, event: &str) -> BufReader<std::process::ChildStdout> {
    let mut out = BufReader::new(p.0.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains(&format!("\"event\":\"{event}\"")) {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no {event} event");
    }
    out
}

/// Another player on the server is not one of simulate's: it neither blocks the join
/// ("only 2 of 3 clients joined") nor counts as an expected delivery, though it hears
/// the voice. Without --measure-latency nothing says NaN, and no second's loss is
/// negative.
#[test]
fn simulate_counts_only_its_own_clients() {
    let (_server, addr) = serve();
    let mut zed = client(&addr, "zed", "wait 30", &["--rooms", "room-0"]);
    let mut zed_out = wait_event(&mut zed, "connected");
    let (rc, out, err) = run(&[
        "simulate",
        "--server",
        &addr,
        "--clients",
        "3",
        "--speakers",
        "1",
        "--duration",
        "1",
        "--json",
    ]);
    assert_eq!(rc, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let sent = v["sent"].as_u64().unwrap();
    assert_eq!(sent + v["late_frames_skipped"].as_u64().unwrap(), 50, "{v}");
    // sim-0 speaks into room-0, where sim-1 and sim-2 listen (and zed, not counted).
    assert_eq!(v["expected"], 2 * sent, "{v}");
    assert_eq!(v["received"], 2 * sent, "{v}");
    assert_eq!(v["loss_pct"], 0.0);
    assert_eq!(v["latency"], Value::Null);
    assert!(!err.contains("NaN") && !err.contains("p50"), "{err}");
    for l in err.lines().filter(|l| l.starts_with("second ")) {
        assert!(l.contains("loss  0.000%"), "{l}");
    }
    // The foreign player did hear it.
    let mut line = String::new();
    while !line.contains("\"event\":\"voice_started\"") {
        line.clear();
        assert!(
            zed_out.read_line(&mut line).unwrap() > 0,
            "zed heard nothing"
        );
    }
    assert!(line.contains("\"sender\":\"sim-0\""), "{line}");
}

/// `speak` frames and `say` texts that reach nobody are not dropped silently: one line
/// per cause with the count, not one per frame.
#[test]
fn client_says_why_it_sends_nothing() {
    let (_server, addr) = serve();
    let dir = std::env::temp_dir().join(format!("dissonance-speak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("short.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for i in 0..9600 {
        // 0.2 s of a 200 Hz tone: ten 20 ms frames.
        let x = (i as f32 * 200.0 * std::f32::consts::TAU / 48000.0).sin();
        w.write_sample((x * 8000.0) as i16).unwrap();
    }
    w.finalize().unwrap();
    let script = format!("say Global hello; speak {} Global", wav.display());
    let p = client(&addr, "alone", &script, &[]);
    let (rc, out, err) = finish(p, Duration::from_secs(40));
    assert_eq!((rc, err.as_str()), (0, ""));
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["event"] == "speak_dropped" || v["event"] == "action_error")
        .collect();
    assert_eq!(events.len(), 2, "{out}");
    assert_eq!(
        s(&events[0], "error"),
        "not sent: nobody listens to room \"Global\" (as far as this client knows)"
    );
    assert_eq!(events[1]["event"], "speak_dropped");
    assert_eq!(events[1]["frames"], 10);
    assert_eq!(events[1]["of"], 10);
    assert_eq!(events[1]["target"], "Global");
    assert_eq!(
        s(&events[1], "reason"),
        "nobody listens to room \"Global\" (as far as this client knows)"
    );
}
