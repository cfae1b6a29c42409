//! `dissonance serve` on an ephemeral 127.0.0.1 port for the tests that need a live
//! server (bounded life: `--duration 30`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// Starts serve with `extra` flags, its log to `stdout`; the process and its address
/// (read from the first line of its stderr).
pub fn start_serve(extra: &[&str], stdout: Stdio) -> (Child, SocketAddr) {
    let mut serve = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(["serve", "--listen", "127.0.0.1:0", "--duration", "30"])
        .args(extra)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(serve.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .strip_prefix("listening on ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected: {first}"))
        .parse()
        .unwrap();
    (serve, addr)
}

/// Stops serve with SIGTERM (it drains and exits) and returns its stdout log (piped).
pub fn stop_serve(mut serve: Child) -> String {
    unsafe {
        libc::kill(serve.id() as i32, libc::SIGTERM);
    }
    let mut log = String::new();
    serve
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let _ = serve.wait();
    log
}
