//! For the tests of `--metrics`: GET over real HTTP, the exposition checked (promtool when
//! installed, else the prometheus-parse crate) and its samples read.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::Duration;

/// GET `url` over real HTTP: (status, body).
pub fn http_get(url: &str, accept: Option<&str>) -> (u16, String) {
    let mut req = ureq::get(url).timeout(Duration::from_secs(10));
    if let Some(a) = accept {
        req = req.set("Accept", a);
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// Checks a classic-format exposition: with `promtool check metrics` when it is installed
/// (it also lints names and help), else line by line with the prometheus-parse crate
/// (every line a HELP, TYPE or sample; every sample of a declared family). Says which.
pub fn validate_exposition(text: &str) {
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    match promtool {
        Ok(mut p) => {
            use std::io::Write;
            p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = p.wait_with_output().unwrap();
            eprintln!("exposition validated with promtool check metrics");
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) => eprintln!(
            "promtool not installed (Debian package prometheus): exposition validated with \
             the prometheus-parse crate only"
        ),
    }
    use prometheus_parse::LineInfo;
    let mut typed: Vec<String> = Vec::new();
    let mut helped: Vec<String> = Vec::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { metric_name, .. } => helped.push(metric_name.to_string()),
            LineInfo::Type { metric_name, .. } => {
                typed.push(metric_name.trim_end_matches("_bucket").to_string())
            }
            LineInfo::Sample {
                metric_name, value, ..
            } => {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| metric_name.strip_suffix(s))
                    .filter(|f| typed.iter().any(|t| t == f))
                    .unwrap_or(metric_name);
                assert_eq!(typed.last().map(String::as_str), Some(family), "{line}");
                assert_eq!(helped.last().map(String::as_str), Some(family), "{line}");
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
            other => panic!("not an exposition line ({other:?}): {line:?}"),
        }
    }
}

/// The samples of a classic exposition: (name, labels, value).
pub fn samples(text: &str) -> Vec<prometheus_parse::Sample> {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap()
        .samples
}

/// The sum of every sample named `name` whose labels include `with` (a counter or gauge).
pub fn metric(all: &[prometheus_parse::Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    let mut found = false;
    let mut sum = 0.0;
    for s in all.iter().filter(|s| s.metric == name) {
        if with.iter().all(|(k, v)| s.labels.get(k) == Some(*v)) {
            found = true;
            sum += match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{name}: {other:?}"),
            };
        }
    }
    assert!(found, "no sample {name} {with:?}");
    sum
}
