//! The report of a check: findings grouped by rule (most severe first), rule counts, the
//! per-speaker voice quality table, and its three renderings: text, JSON, JUnit XML.

use std::fmt::Write;

use comfy_table::CellAlignment;

use super::rules::{self, Rule, Severity};
use super::{Engine, Finding};
use crate::output::json::Obj;
use crate::output::Rfc3339;

/// How often one rule fired.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleCount {
    pub rule: &'static Rule,
    /// Every occurrence, folded repeats included.
    pub occurrences: u64,
    /// Findings reported (each with its repeats).
    pub findings: usize,
}

/// One speaker's voice quality, measured on the speaker's first path in the capture.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceRow {
    pub session: u32,
    pub client_id: u16,
    pub name: Option<String>,
    /// Destination of the measured path (the server for relayed voice).
    pub path_dst: std::net::SocketAddr,
    pub packets: u64,
    pub lost: u64,
    pub loss_percent: f64,
    pub duplicates: u64,
    pub reordered: u64,
    pub longest_burst: u64,
    pub jitter_ms: f64,
    pub kbps: f64,
    pub talk_s: f64,
    pub frame_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Sorted: most severe first, then by rule id, then by packet number.
    pub findings: Vec<Finding>,
    /// Every rule of the catalogue, in id order.
    pub rules: Vec<RuleCount>,
    pub voice: Vec<VoiceRow>,
    pub payloads: u64,
    /// Of the payloads, TCP frames.
    pub tcp_payloads: u64,
    pub packets: u64,
    pub first_ns: Option<i64>,
    pub last_ns: Option<i64>,
}

pub(super) fn build(e: &mut Engine) -> Report {
    let mut findings = std::mem::take(&mut e.findings);
    findings.sort_by(|a, b| {
        b.rule
            .severity
            .cmp(&a.rule.severity)
            .then(a.rule.id.cmp(b.rule.id))
            .then(a.number.cmp(&b.number))
    });
    let rules = rules::ALL
        .iter()
        .map(|&rule| RuleCount {
            rule,
            occurrences: e.counts.get(rule.id).copied().unwrap_or(0),
            findings: findings.iter().filter(|f| f.rule == rule).count(),
        })
        .collect();
    let mut speakers: Vec<_> = e.primary.iter().map(|(&k, &v)| (k, v)).collect();
    speakers.sort();
    let mut voice = Vec::new();
    for ((session, id), dst) in speakers {
        let Some(leg) = e.legs.get_mut(&(session, id, dst)) else {
            continue;
        };
        leg.finish();
        voice.push(VoiceRow {
            session,
            client_id: id,
            name: e.tracker.client(session, id).map(|c| c.name.clone()),
            path_dst: dst,
            packets: leg.received,
            lost: leg.lost,
            loss_percent: leg.loss_percent(),
            duplicates: leg.duplicates,
            reordered: leg.reordered,
            longest_burst: leg.longest_burst,
            jitter_ms: leg.jitter_ns / 1e6,
            kbps: leg.kbps(),
            talk_s: leg.talk_seconds(),
            frame_ms: leg.frame_ns as f64 / 1e6,
        });
    }
    Report {
        findings,
        rules,
        voice,
        payloads: e.payloads,
        tcp_payloads: e.tcp_payloads,
        packets: e.packets,
        first_ns: e.first_ns,
        last_ns: e.last_ns,
    }
}

impl Report {
    /// Occurrences at each severity (error, warning, info).
    pub fn totals(&self) -> (u64, u64, u64) {
        let mut t = (0, 0, 0);
        for r in &self.rules {
            match r.rule.severity {
                Severity::Error => t.0 += r.occurrences,
                Severity::Warning => t.1 += r.occurrences,
                Severity::Info => t.2 += r.occurrences,
            }
        }
        t
    }

    /// True when some finding is at or above `fail_on` (`None`: never).
    pub fn fails(&self, fail_on: Option<Severity>) -> bool {
        fail_on.is_some_and(|s| self.findings.iter().any(|f| f.rule.severity >= s))
    }

    fn rel(&self, ts: i64) -> f64 {
        (ts - self.first_ns.unwrap_or(ts)) as f64 / 1e9
    }

    /// The human-readable report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let (e, w, i) = self.totals();
        let span = match (self.first_ns, self.last_ns) {
            (Some(a), Some(b)) => (b - a) as f64 / 1e9,
            _ => 0.0,
        };
        let _ = writeln!(
            s,
            "{}",
            crate::output::width::wrap(&format!(
                "Checked {} payloads, {} Dissonance packets, {span:.3} s: {e} error(s), {w} warning(s), {i} info",
                self.payloads, self.packets
            ))
        );
        let mut current: Option<&Rule> = None;
        for f in &self.findings {
            if current != Some(f.rule) {
                current = Some(f.rule);
                let count = self
                    .rules
                    .iter()
                    .find(|r| r.rule == f.rule)
                    .map_or(0, |r| r.occurrences);
                let _ = writeln!(
                    s,
                    "\n{} {} {}: {} ({count}x)",
                    f.rule.severity.name().to_uppercase(),
                    f.rule.id,
                    f.rule.name,
                    f.rule.title
                );
            }
            let _ = writeln!(
                s,
                "  packet {} at {:.6} s  {} -> {} {}  client {}{}{}",
                f.number,
                self.rel(f.ts_ns),
                f.src,
                f.dst,
                if f.tcp { "tcp" } else { "udp" },
                f.client_label(),
                f.session
                    .map(|x| format!("  session {x}"))
                    .unwrap_or_default(),
                if f.offset > 0 {
                    format!("  at payload offset {}", f.offset)
                } else {
                    String::new()
                }
            );
            let _ = writeln!(s, "    {}", f.message);
            hexdump(&mut s, &f.bytes, f.mark);
            if f.repeats > 0 {
                let _ = writeln!(s, "    (+{} more like this)", f.repeats);
            }
        }
        if self.findings.is_empty() {
            let _ = writeln!(s, "\nNo findings.");
        }
        if !self.voice.is_empty() {
            let _ = write!(
                s,
                "\nVoice quality (each speaker's first path):\n{}\n",
                self.voice_table()
            );
        }
        s
    }

    /// The per-speaker voice quality table.
    pub fn voice_table(&self) -> String {
        let mut t = crate::output::width::table([
            "speaker",
            "session",
            "path to",
            "packets",
            "loss %",
            "dup",
            "reordered",
            "longest burst",
            "jitter ms",
            "kbit/s",
            "talk s",
        ]);
        for v in &self.voice {
            t.add_row([
                format!("{}({})", v.name.as_deref().unwrap_or("?"), v.client_id),
                v.session.to_string(),
                v.path_dst.to_string(),
                v.packets.to_string(),
                format!("{:.2}", v.loss_percent),
                v.duplicates.to_string(),
                v.reordered.to_string(),
                v.longest_burst.to_string(),
                format!("{:.2}", v.jitter_ms),
                format!("{:.1}", v.kbps),
                format!("{:.2}", v.talk_s),
            ]);
        }
        for i in [1, 3, 4, 5, 6, 7, 8, 9, 10] {
            if let Some(c) = t.column_mut(i) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        t.to_string()
    }

    /// The whole report as one JSON object.
    pub fn json(&self) -> String {
        let mut out = Vec::with_capacity(4096);
        let mut o = Obj::new(&mut out);
        o.u("payloads", self.payloads);
        o.u("packets", self.packets);
        let (e, w, i) = self.totals();
        o.u("errors", e);
        o.u("warnings", w);
        o.u("infos", i);
        let rules = o.key("rules");
        rules.push(b'[');
        for (n, r) in self.rules.iter().enumerate() {
            if n > 0 {
                rules.push(b',');
            }
            let mut ro = Obj::new(rules);
            ro.s("id", r.rule.id);
            ro.s("name", r.rule.name);
            ro.s("group", r.rule.group);
            ro.s("severity", r.rule.severity.name());
            ro.s("title", r.rule.title);
            ro.u("occurrences", r.occurrences);
            ro.u("findings", r.findings as u64);
            ro.end();
        }
        rules.push(b']');
        let fs = o.key("findings");
        fs.push(b'[');
        for (n, f) in self.findings.iter().enumerate() {
            if n > 0 {
                fs.push(b',');
            }
            let rel = self.rel(f.ts_ns);
            finding_json(fs, f, rel);
        }
        fs.push(b']');
        let vs = o.key("voice");
        vs.push(b'[');
        for (n, v) in self.voice.iter().enumerate() {
            if n > 0 {
                vs.push(b',');
            }
            let mut vo = Obj::new(vs);
            vo.u("session", v.session);
            vo.u("client_id", v.client_id);
            vo.opt_s("name", v.name.as_deref());
            vo.s("path_dst", &v.path_dst.to_string());
            vo.u("packets", v.packets);
            vo.u("lost", v.lost);
            vo.f64("loss_percent", v.loss_percent);
            vo.u("duplicates", v.duplicates);
            vo.u("reordered", v.reordered);
            vo.u("longest_burst", v.longest_burst);
            vo.f64("jitter_ms", v.jitter_ms);
            vo.f64("kbps", v.kbps);
            vo.f64("talk_s", v.talk_s);
            vo.f64("frame_ms", v.frame_ms);
            vo.end();
        }
        vs.push(b']');
        o.end();
        String::from_utf8(out).unwrap_or_default()
    }

    /// JUnit XML: one test case per rule; a rule fails when it has findings at or above
    /// `fail_on`, findings below it are listed in `system-out`.
    ///
    /// Written by hand rather than with `quick-junit`: that crate's report has another
    /// shape (its own attributes, `time`, indentation), so the file CI jobs already diff
    /// and parse would change; what is written here is ~50 lines of fixed layout.
    pub fn junit(&self, fail_on: Option<Severity>) -> String {
        let failing =
            |r: &RuleCount| r.findings > 0 && fail_on.is_some_and(|s| r.rule.severity >= s);
        let failures = self.rules.iter().filter(|r| failing(r)).count();
        let mut s = String::new();
        let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        let _ = writeln!(
            s,
            r#"<testsuites name="dissonance check" tests="{}" failures="{failures}">"#,
            self.rules.len()
        );
        let mut groups: Vec<&str> = self.rules.iter().map(|r| r.rule.group).collect();
        groups.dedup();
        for g in groups {
            let in_group: Vec<&RuleCount> =
                self.rules.iter().filter(|r| r.rule.group == g).collect();
            let _ = writeln!(
                s,
                r#"  <testsuite name="dissonance check: {g}" tests="{}" failures="{}" errors="0" skipped="0">"#,
                in_group.len(),
                in_group.iter().filter(|r| failing(r)).count()
            );
            for r in in_group {
                let _ = write!(
                    s,
                    r#"    <testcase classname="dissonance.check.{g}" name="{} {}: {}""#,
                    r.rule.id,
                    r.rule.name,
                    xml(r.rule.title)
                );
                if r.findings == 0 {
                    let _ = writeln!(s, "/>");
                    continue;
                }
                let _ = writeln!(s, ">");
                let mut body = String::new();
                for f in self.findings.iter().filter(|f| f.rule == r.rule) {
                    let _ = writeln!(body, "{}", f.one_line());
                    if f.repeats > 0 {
                        let _ = writeln!(body, "  (+{} more like this)", f.repeats);
                    }
                }
                if failing(r) {
                    let _ = writeln!(
                        s,
                        r#"      <failure type="{}" message="{} occurrence(s)">{}</failure>"#,
                        r.rule.severity,
                        r.occurrences,
                        xml(&body)
                    );
                } else {
                    let _ = writeln!(s, "      <system-out>{}</system-out>", xml(&body));
                }
                let _ = writeln!(s, "    </testcase>");
            }
            let _ = writeln!(s, "  </testsuite>");
        }
        let _ = writeln!(s, "</testsuites>");
        s
    }
}

/// One finding as a JSON object (also `sniff --check --format ndjson`).
pub fn finding_json(out: &mut Vec<u8>, f: &Finding, rel_s: f64) {
    let mut o = Obj::new(out);
    o.s("rule", f.rule.id);
    o.s("name", f.rule.name);
    o.s("severity", f.rule.severity.name());
    o.u("number", f.number);
    Rfc3339(f.ts_ns).write_json(o.key("time"));
    o.f64("rel_s", rel_s);
    o.s("src", &f.src.to_string());
    o.s("dst", &f.dst.to_string());
    o.s("transport", if f.tcp { "tcp" } else { "udp" });
    o.u("offset", f.offset as u64);
    match f.session {
        Some(x) => o.u("session", x),
        None => o.key("session").extend_from_slice(b"null"),
    }
    o.opt_s("client", f.client.as_deref());
    match f.client_id {
        Some(x) => o.u("client_id", x),
        None => o.key("client_id").extend_from_slice(b"null"),
    }
    o.s("message", &f.message);
    o.hex("bytes", &f.bytes);
    match f.mark {
        Some((start, len)) => {
            let m = o.key("mark");
            let mut mo = Obj::new(m);
            mo.u("offset", start as u64);
            mo.u("length", len as u64);
            mo.end();
        }
        None => o.key("mark").extend_from_slice(b"null"),
    }
    o.u("repeats", f.repeats);
    let list = o.key("occurrences");
    list.push(b'[');
    for (n, at) in f.occurrences.iter().enumerate() {
        if n > 0 {
            list.push(b',');
        }
        let mut oo = Obj::new(list);
        oo.u("number", at.number);
        Rfc3339(at.ts_ns).write_json(oo.key("time"));
        oo.f64("rel_s", rel_s + (at.ts_ns - f.ts_ns) as f64 / 1e9);
        oo.end();
    }
    list.push(b']');
    o.u(
        "occurrences_omitted",
        (f.repeats + 1).saturating_sub(f.occurrences.len() as u64),
    );
    o.end();
}

/// Escapes text for XML attributes and content.
fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // Control characters other than tab/newline are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push('?'),
            c => o.push(c),
        }
    }
    o
}

/// Hex rows of 16 bytes; under the rows holding the marked field, `^^` under its bytes.
/// Shows the first row and the rows of the mark (at most four of them).
fn hexdump(s: &mut String, bytes: &[u8], mark: Option<(usize, usize)>) {
    let rows = bytes.len().div_ceil(16);
    let (m0, m1) = match mark {
        Some((a, n)) => (a, a + n.max(1)),
        None => (usize::MAX, usize::MAX),
    };
    let mark_rows = if m0 == usize::MAX {
        0..0
    } else {
        m0 / 16..((m1 - 1) / 16 + 1).min(m0 / 16 + 4)
    };
    let mut last = None;
    for r in 0..rows {
        if r != 0 && !mark_rows.contains(&r) {
            continue;
        }
        if last.is_some_and(|l: usize| r > l + 1) {
            let _ = writeln!(s, "    ....");
        }
        last = Some(r);
        let row = &bytes[r * 16..(r * 16 + 16).min(bytes.len())];
        let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(s, "    {:04x}  {}", r * 16, hex.join(" "));
        if mark_rows.contains(&r) {
            let mut line = String::new();
            for i in 0..row.len() {
                let at = r * 16 + i;
                line.push_str(if (m0..m1).contains(&at) { "^^" } else { "  " });
                line.push(' ');
            }
            let _ = writeln!(s, "          {}", line.trim_end());
        }
    }
    if rows > 1 && last.is_some_and(|l| l + 1 < rows) {
        let _ = writeln!(s, "    .... ({} bytes)", bytes.len());
    }
}
