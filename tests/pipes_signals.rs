//! Every command under closed pipes and signals, as a user's shell drives it: real
//! processes, real pipes, real UDP on 127.0.0.1. A closed stdout ends a command quietly
//! with status 0 (servers keep serving, their log discarded); Ctrl-C finishes the output
//! (JSON closed, files renamed, the client's goodbye sent); SIGUSR1 is only serve's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dissonance_tools::codec::{HandshakeResponse, Message, MessageType, Packet, Seq, Variant};

mod udp_peer;

const BIN: &str = env!("CARGO_BIN_EXE_dissonance");
const SESSION: &str = "samples/session.pcap";
const BYE: [u8; 4] = [0x00, 0x42, 0x59, 0x45];
const LIMIT: Duration = Duration::from_secs(40);

/// Kills the child when dropped, so a failed assertion leaves no process behind.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.0.id() as i32, sig);
        }
    }

    /// Waits (bounded) for the exit status.
    fn status(&mut self) -> i32 {
        let t = Instant::now();
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s
                    .code()
                    .unwrap_or_else(|| panic!("killed by a signal: {s:?}"));
            }
            assert!(t.elapsed() < LIMIT, "still running after {LIMIT:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            e.read_to_string(&mut s).unwrap();
        }
        s
    }
}

/// Starts `dissonance ARGS` with this stdin and stdout; stderr piped.
fn spawn(args: &[&str], stdin: Stdio, stdout: Stdio) -> Proc {
    Proc(
        Command::new(BIN)
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// The write end of a pipe whose read end is already closed: the first write fails with
/// EPIPE, however small the output (deterministic, unlike racing `head`).
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two descriptors we then own.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        libc::close(fds[0]);
        Stdio::from(OwnedFd::from_raw_fd(fds[1]))
    }
}

/// Runs `args` with stdout closed; returns (status, stderr).
fn with_closed_stdout(args: &[&str], stdin: Stdio) -> (i32, String) {
    let mut p = spawn(args, stdin, closed_pipe());
    let err = p.stderr();
    (p.status(), err)
}

fn assert_quiet(args: &[&str], stdin: Stdio) {
    let (code, err) = with_closed_stdout(args, stdin);
    assert_eq!((code, err.as_str()), (0, ""), "{args:?}");
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dissonance-ps-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Lines of a child's stderr, on a channel.
fn lines(err: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    rx
}

/// `dissonance serve` on a free port with `stdout`; (process, address, its stderr lines).
fn serve(stdout: Stdio, extra: &[&str]) -> (Proc, SocketAddr, mpsc::Receiver<String>) {
    let mut p = Proc(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--duration", "30"])
            .args(extra)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let rx = lines(p.0.stderr.take().unwrap());
    let first = rx.recv_timeout(LIMIT).expect("serve's first line");
    let addr = first
        .strip_prefix("listening on ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("{first}"))
        .parse()
        .unwrap();
    (p, addr, rx)
}

/// A fake server that answers every HandshakeRequest (session 4242, id 7) and logs all.
fn answering_server() -> (SocketAddr, udp_peer::Log) {
    udp_peer::spawn(LIMIT, |d| {
        let req = Packet::peek_type(d).is_ok_and(|(_, t)| t == MessageType::HandshakeRequest);
        req.then(|| {
            Message::HandshakeResponse(HandshakeResponse {
                session: 4242,
                client_id: 7,
                clients: Seq::Items(&[]),
                room_names: Seq::Items(&[]),
                room_entries: Seq::Items(&[]),
            })
            .to_vec(Variant::Modern, 1024)
            .unwrap()
        })
    })
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn got_bye(log: &udp_peer::Log) -> bool {
    log.lock().unwrap().iter().any(|(_, d)| d[..] == BYE)
}

// ---- closed stdout -------------------------------------------------------------------

#[test]
fn decode_check_and_dump_end_quietly_on_a_closed_stdout() {
    assert_quiet(&["check", "--explain", "D010"], Stdio::null());
    assert_quiet(&["check", "--list-rules"], Stdio::null());
    assert_quiet(&["check", SESSION], Stdio::null());
    assert_quiet(
        &["decode", "--stdin"],
        std::fs::File::open("samples/packets.hex").unwrap().into(),
    );
    assert_quiet(&["decode", "--json", "8bc70a123456780001"], Stdio::null());
    for format in ["text", "json", "ndjson", "table"] {
        assert_quiet(&["dump", SESSION, "-F", format], Stdio::null());
    }
    assert_quiet(&["dump", SESSION, "--summary"], Stdio::null());
}

/// As `dissonance dump -F json | head -1`: a line read, then the pipe closed while
/// dump still has most of its output to write (the capture prints far more than a pipe
/// holds).
#[test]
fn dump_json_after_head_reads_a_line() {
    let mut p = spawn(
        &["dump", SESSION, "-F", "json"],
        Stdio::null(),
        Stdio::piped(),
    );
    let mut out = BufReader::new(p.0.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first, "[\n");
    drop(out);
    let err = p.stderr();
    assert_eq!((p.status(), err.as_str()), (0, ""));
}

#[test]
fn voice_table_on_a_closed_stderr_still_writes_every_file() {
    let d = tmp("voice-pipe");
    let mut p = Proc(
        Command::new(BIN)
            .args(["voice", SESSION, "-o"])
            .arg(&d)
            .stdout(Stdio::null())
            .stderr(closed_pipe())
            .spawn()
            .unwrap(),
    );
    assert_eq!(p.status(), 0);
    let mut names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn serve_keeps_serving_when_its_log_is_closed() {
    let (mut p, addr, err) = serve(closed_pipe(), &[]);
    // A client joins: the log (listening, join) hits the closed pipe, and the server still
    // answers the handshake.
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let hello = Message::HandshakeRequest(dissonance_tools::codec::HandshakeRequest {
        codec: dissonance_tools::codec::CodecSettings::OPUS_48K_20MS,
        name: dissonance_tools::codec::WireStr::new("zed"),
    })
    .to_vec(Variant::Modern, 1024)
    .unwrap();
    let mut buf = [0u8; 2048];
    for _ in 0..2 {
        // Twice: the second exchange happens after serve saw its stdout closed.
        c.send_to(&hello, addr).unwrap();
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(
            Packet::peek_type(&buf[..n]).unwrap().1,
            MessageType::HandshakeResponse
        );
        // Nothing more: the state burst waits for the client's own ClientState, which
        // this peer never sends (no reflection to peers that have not joined).
    }
    c.send_to(&BYE, addr).unwrap();
    p.signal(libc::SIGINT);
    assert_eq!(p.status(), 0);
    // Exactly one note, however many log lines were lost; nothing else on stderr.
    let rest: Vec<String> = err.iter().collect();
    assert_eq!(
        rest,
        ["dissonance: serve: standard output closed; serve goes on, its log is discarded"]
    );
}

#[test]
fn client_on_a_closed_stdout_leaves_with_its_goodbye() {
    let (server, log) = answering_server();
    let (code, err) = with_closed_stdout(
        &[
            "client",
            "--server",
            &server.to_string(),
            "--name",
            "alice",
            "-e",
            "wait 30",
        ],
        Stdio::null(),
    );
    assert_eq!((code, err.as_str()), (0, ""));
    // The peer thread logs what it receives asynchronously: the goodbye may land just after
    // the client has exited.
    wait_for("the goodbye", || got_bye(&log));
}

#[test]
fn simulate_replay_and_proxy_on_a_closed_stdout() {
    let (mut srv, addr, _err) = serve(Stdio::null(), &[]);
    let a = addr.to_string();
    // simulate: the per-second lines are its stderr by design; nothing else there.
    let (code, err) = with_closed_stdout(
        &[
            "simulate",
            "--server",
            &a,
            "--clients",
            "2",
            "--speakers",
            "1",
            "--duration",
            "1",
        ],
        Stdio::null(),
    );
    assert_eq!(code, 0, "{err}");
    let err: Vec<&str> = err.lines().collect();
    assert_eq!(err.len(), 2, "{err:?}");
    assert!(err[0].starts_with("all 2 clients joined; speech from "));
    // The per-second figures depend on scheduling (a loaded machine can send 49 frames in
    // the first second); what this test is about is the line being there, whole.
    assert!(err[1].starts_with("second   1: sent "), "{err:?}");
    assert!(
        err[1].contains("  expected ")
            && err[1].contains("  received ")
            && err[1].contains("  loss "),
        "{err:?}"
    );
    assert!(!err[1].contains("p50"), "not measured: left out");

    // proxy: printing stops with one note; relaying goes on.
    let mut proxy = spawn(
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &a,
            "--duration",
            "20",
        ],
        Stdio::null(),
        closed_pipe(),
    );
    let perr = lines(proxy.0.stderr.take().unwrap());
    let first = perr.recv_timeout(LIMIT).unwrap();
    let listen = first
        .strip_prefix("proxy: listening on ")
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    // replay through the proxy: its report is stdout (closed); its one stderr line stays.
    let (code, err) = with_closed_stdout(
        &[
            "replay", SESSION, "--target", &listen, "--speed", "8", "--linger", "0.3",
        ],
        Stdio::null(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("replay: 4 clients, 587 datagrams"), "{err}");
    proxy.signal(libc::SIGINT);
    assert_eq!(proxy.status(), 0);
    let perr: Vec<String> = perr.try_iter().collect();
    assert!(perr.contains(
        &"dissonance: proxy: standard output closed; proxy goes on, its log is discarded".into()
    ));
    // Every datagram of the replay went through, after the log was closed too.
    assert!(
        perr.contains(&"forwarded: 1586 (up 587, down 999)".to_string()),
        "{perr:?}"
    );
    srv.signal(libc::SIGINT);
    assert_eq!(srv.status(), 0);
}

// ---- signals -------------------------------------------------------------------------

/// The pcap header and the first `n` records of a pcap file.
fn pcap_prefix(path: &str, n: usize) -> Vec<u8> {
    let b = std::fs::read(path).unwrap();
    let mut end = 24;
    for _ in 0..n {
        let incl = u32::from_le_bytes(b[end + 8..end + 12].try_into().unwrap()) as usize;
        end += 16 + incl;
    }
    b[..end].to_vec()
}

#[test]
fn dump_json_interrupted_mid_stream_closes_its_array() {
    const FRAMES: usize = 40;
    let part = pcap_prefix(SESSION, FRAMES);
    // What dump prints for those frames when the input simply ends.
    let d = tmp("dump-int");
    std::fs::write(d.join("part.pcap"), &part).unwrap();
    let whole = Command::new(BIN)
        .args(["dump", "-F", "json"])
        .arg(d.join("part.pcap"))
        .output()
        .unwrap();
    let want: serde_json::Value = serde_json::from_slice(&whole.stdout).unwrap();
    assert_eq!(want.as_array().unwrap().len(), FRAMES);

    // The same frames on a pipe that stays open: dump waits for more; Ctrl-C ends it.
    let mut p = spawn(
        &["dump", "-", "-F", "json", "--line-buffered"],
        Stdio::piped(),
        Stdio::piped(),
    );
    let mut input = p.0.stdin.take().unwrap();
    input.write_all(&part).unwrap();
    input.flush().unwrap();
    let (tx, rx) = mpsc::channel();
    let mut out = p.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let count = |b: &[u8]| b.windows(9).filter(|w| w == b"{\"packet\"").count();
    while count(&got) < FRAMES {
        got.extend(rx.recv_timeout(LIMIT).expect("dump's records"));
    }
    p.signal(libc::SIGINT);
    got.extend(rx.iter().flatten());
    assert_eq!(p.status(), 130);
    assert_eq!(
        p.stderr(),
        format!("dissonance: interrupted after {FRAMES} frames; the output covers them\n")
    );
    drop(input);
    let parsed: serde_json::Value = serde_json::from_slice(&got).expect("a closed JSON array");
    assert_eq!(parsed, want);
}

#[test]
fn voice_interrupted_finishes_its_files_and_leaves_no_tmp() {
    let d = tmp("voice-int");
    let out = d.to_str().unwrap();
    let mut p = spawn(
        &["voice", "-", "-q", "-o", out],
        Stdio::piped(),
        Stdio::null(),
    );
    let mut input = p.0.stdin.take().unwrap();
    input.write_all(&pcap_prefix(SESSION, 300)).unwrap();
    input.flush().unwrap();
    // Files are opened as speakers appear: once there is one, voice is mid-run.
    let tmp_files = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count()
    };
    wait_for("a .wav.tmp", || tmp_files(&d) > 0);
    p.signal(libc::SIGINT);
    assert_eq!(p.status(), 130);
    drop(input);
    // Where the signal landed depends on the scheduler; that it finished cleanly does not.
    let err = p.stderr();
    let read: usize = err
        .strip_prefix("dissonance: interrupted after ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!((1..=300).contains(&read), "{err}");
    assert_eq!(tmp_files(&d), 0);
    let wavs: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    assert!(!wavs.is_empty());
    for w in wavs {
        // Complete: the header's length is the sidecar's sample count.
        let r = hound::WavReader::open(&w).unwrap();
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(w.with_extension("json")).unwrap())
                .unwrap();
        assert_eq!(r.duration() as u64, j["samples"].as_u64().unwrap(), "{w:?}");
    }
}

/// A client connected to a fake server; returns it and the server's log.
fn connected_client() -> (Proc, udp_peer::Log, BufReader<std::process::ChildStdout>) {
    let (server, log) = answering_server();
    let server = server.to_string();
    let mut p = spawn(
        &[
            "client", "--server", &server, "--name", "alice", "-e", "wait 30",
        ],
        Stdio::null(),
        Stdio::piped(),
    );
    let mut out = BufReader::new(p.0.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains(" connected ") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "client ended early");
    }
    (p, log, out)
}

#[test]
fn client_sends_its_goodbye_on_ctrl_c() {
    let (mut p, log, _out) = connected_client();
    assert!(!got_bye(&log));
    p.signal(libc::SIGINT);
    assert_eq!(p.status(), 0);
    assert_eq!(p.stderr(), "");
    // The peer thread logs what it receives asynchronously: the goodbye may land just after
    // the client has exited.
    wait_for("the goodbye", || got_bye(&log));
}

#[test]
fn client_sends_its_goodbye_on_sigterm_and_ignores_sigusr1() {
    let (mut p, log, mut out) = connected_client();
    p.signal(libc::SIGUSR1);
    // Still running and logging: an event after SIGUSR1 (the goodbye on SIGTERM below).
    p.signal(libc::SIGTERM);
    assert_eq!(p.status(), 0);
    assert_eq!(p.stderr(), "");
    // The peer thread logs what it receives asynchronously: the goodbye may land just after
    // the client has exited.
    wait_for("the goodbye", || got_bye(&log));
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(!rest.contains("User defined signal"), "{rest}");
}

#[test]
fn sigusr1_does_not_kill_dump_on_a_pipe() {
    let mut p = spawn(
        &["dump", "-", "--line-buffered"],
        Stdio::piped(),
        Stdio::piped(),
    );
    let mut input = p.0.stdin.take().unwrap();
    input.write_all(&pcap_prefix(SESSION, 1)).unwrap();
    let mut out = BufReader::new(p.0.stdout.take().unwrap());
    // Its first line: dump is running (and past its start-up) when the signal comes.
    let mut all = String::new();
    out.read_line(&mut all).unwrap();
    p.signal(libc::SIGUSR1);
    drop(input);
    out.read_to_string(&mut all).unwrap();
    assert_eq!(p.status(), 0);
    assert_eq!(p.stderr(), "");
    assert_eq!(all.lines().count(), 1, "{all}");
}

#[test]
fn serve_pid_file_and_sigusr1_status() {
    let d = tmp("pidfile");
    let pid_file = d.join("serve.pid");
    let (mut p, _addr, err) = serve(Stdio::piped(), &["--pid-file", pid_file.to_str().unwrap()]);
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, p.0.id());
    // SAFETY: kill(2) with the pid from the file (our child's, as just asserted).
    unsafe {
        libc::kill(pid as i32, libc::SIGUSR1);
    }
    let mut out = BufReader::new(p.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains(" listening on "), "{line}");
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(line.contains(" status session="), "{line}");
    p.signal(libc::SIGINT);
    assert_eq!(p.status(), 0);
    assert!(!pid_file.exists());
    drop(err);
}

/// `tcpdump -w - | dissonance dump -`: on a pipe every record is printed as it arrives,
/// with no flag (the writer is still open when the first line is read), in text and
/// NDJSON alike.
#[test]
fn dump_on_a_pipe_prints_each_record_as_it_arrives() {
    for format in ["text", "ndjson"] {
        let mut p = spawn(&["dump", "-", "-F", format], Stdio::piped(), Stdio::piped());
        let mut input = p.0.stdin.take().unwrap();
        input.write_all(&pcap_prefix(SESSION, 3)).unwrap();
        input.flush().unwrap();
        let mut out = BufReader::new(p.0.stdout.take().unwrap());
        // Read on a thread: a dump that buffers would block here until the writer closes.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("{format}: no line while the pipe is open"));
        assert!(line.contains("HandshakeRequest"), "{format}: {line}");
        drop(input);
        assert_eq!(p.status(), 0);
        assert_eq!(p.stderr(), "");
    }
}
