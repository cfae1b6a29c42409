//! `--summary` and `--flows`: tables of sessions, clients, rooms, per-client counts and
//! per-flow detection results, built from the tracker and the pipeline totals.

use std::fmt::Write;

use comfy_table::Table;

use crate::dissect::locate::Locator;
use crate::dissect::pipeline::Totals;
use crate::dissect::session::Tracker;
use crate::output::Rfc3339;

fn table(header: &[&str]) -> Table {
    crate::output::width::table(header.iter().copied())
}

/// Longest name shown in a table cell; longer ones end in an ellipsis, so that a long
/// name does not widen every row of its table.
const NAME_CHARS: usize = 32;
/// Most names listed in one cell, then "and N more".
const NAMES_PER_CELL: usize = 10;

/// `name`, cut to [`NAME_CHARS`] characters with an ellipsis.
pub fn clip(name: &str) -> std::borrow::Cow<'_, str> {
    // More than NAME_CHARS characters: the first NAME_CHARS - 1 and the ellipsis.
    if name.char_indices().nth(NAME_CHARS).is_none() {
        return name.into();
    }
    let cut = name
        .char_indices()
        .nth(NAME_CHARS - 1)
        .map_or(name.len(), |(at, _)| at);
    format!("{}…", &name[..cut]).into()
}

/// Names for one cell: clipped, at most [`NAMES_PER_CELL`], then how many more.
fn name_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut out = Vec::new();
    let mut more = 0usize;
    for n in names {
        if out.len() < NAMES_PER_CELL {
            out.push(clip(n).into_owned());
        } else {
            more += 1;
        }
    }
    let mut s = out.join(", ");
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}

fn codec_text(c: Option<crate::codec::CodecSettings>) -> String {
    match c {
        Some(c) => format!(
            "{} {}@{}",
            c.codec().map(|k| k.name()).unwrap_or("?"),
            c.frame_size,
            c.sample_rate_i32()
        ),
        None => "-".into(),
    }
}

/// The summary: totals, sessions, clients, rooms, per-client counts.
pub fn render(tracker: &Tracker, totals: &Totals) -> String {
    let mut head = String::new();
    let first = totals.first_ns.unwrap_or(0);
    let rel = |ns: i64| format!("{:.3}", (ns - first) as f64 / 1e9);
    let _ = write!(
        head,
        "Payloads {}: {} Dissonance packets ({} malformed), {} transport goodbyes, {} not Dissonance",
        totals.payloads, totals.packets, totals.malformed, totals.byes, totals.not_dissonance
    );
    // Shown when there are some, so captures without any keep their summary.
    if totals.empty_on_flows + totals.other_on_flows > 0 {
        let _ = write!(
            head,
            " ({} empty and {} other on Dissonance flows)",
            totals.empty_on_flows, totals.other_on_flows
        );
    }
    let mut s = crate::output::width::wrap(&head);
    s.push('\n');
    // Only where a game stack or the scan reported any (plain captures print none).
    if totals.retransmitted + totals.cut + totals.lost_units > 0 {
        let _ = writeln!(
            s,
            "Retransmitted copies {} (not counted as packets), cut packets {}, transport units lost {}",
            totals.retransmitted, totals.cut, totals.lost_units
        );
    }
    if let (Some(a), Some(b)) = (totals.first_ns, totals.last_ns) {
        let _ = writeln!(
            s,
            "From {} to {} ({:.3} s)",
            Rfc3339(a),
            Rfc3339(b),
            (b - a) as f64 / 1e9
        );
    }

    let mut t = table(&[
        "Session",
        "Hex",
        "Server",
        "First (s)",
        "Last (s)",
        "Packets",
    ]);
    for x in tracker.sessions() {
        t.add_row([
            x.id.to_string(),
            format!("0x{:08X}", x.id),
            x.server
                .map(|a| a.to_string())
                .unwrap_or_else(|| "?".into()),
            rel(x.first_ns),
            rel(x.last_ns),
            x.packets.to_string(),
        ]);
    }
    let _ = writeln!(s, "\nSessions\n{t}");

    let mut t = table(&[
        "Session",
        "Id",
        "Name",
        "Address",
        "Codec",
        "Joined (s)",
        "Left (s)",
        "Rooms now",
    ]);
    for c in tracker.clients() {
        t.add_row([
            c.session.to_string(),
            c.id.to_string(),
            clip(&c.name).into_owned(),
            c.addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            codec_text(c.codec),
            c.joined_ns.map(rel).unwrap_or_else(|| "-".into()),
            c.left_ns.map(rel).unwrap_or_else(|| "-".into()),
            name_list(c.rooms.iter().map(String::as_str)),
        ]);
    }
    let _ = writeln!(s, "\nClients\n{t}");

    let mut t = table(&["Room", "Id", "Listeners (ever)", "Joins", "Leaves"]);
    for (id, name) in tracker.rooms() {
        let hist = tracker
            .membership_history()
            .iter()
            .filter(|m| &m.room == name);
        let (mut joins, mut leaves) = (0, 0);
        let mut who = std::collections::BTreeSet::new();
        for m in hist {
            if m.joined {
                joins += 1;
                let n = tracker
                    .client(m.session, m.client_id)
                    .map_or("", |c| c.name.as_str());
                who.insert(n);
            } else {
                leaves += 1;
            }
        }
        t.add_row([
            clip(name).into_owned(),
            id.to_string(),
            name_list(who.iter().copied()),
            joins.to_string(),
            leaves.to_string(),
        ]);
    }
    let _ = writeln!(s, "\nRooms\n{t}");

    let mut t = table(&[
        "Client",
        "Messages sent",
        "Bytes sent",
        "Voice frames",
        "Speech (s)",
        "Relayed / P2P",
        "Texts",
    ]);
    for c in tracker.clients() {
        let by_type: Vec<String> = c
            .stats
            .sent_by_type
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        t.add_row([
            format!("{}({})", clip(&c.name), c.id),
            by_type.join("\n"),
            c.stats.bytes_sent.to_string(),
            c.stats.voice_frames.to_string(),
            format!("{:.2}", c.stats.speech_seconds(c.codec)),
            format!("{} / {}", c.stats.voice_relayed, c.stats.voice_p2p),
            c.stats.texts.to_string(),
        ]);
    }
    let _ = writeln!(s, "\nPer client\n{t}");

    let mut t = table(&["Direction", "Message", "Count"]);
    for ((dir, ty, inner), n) in totals.by_direction.iter() {
        let label = match inner {
            Some(i) => format!("{ty}({i})"),
            None => ty.to_string(),
        };
        t.add_row([dir.name().to_string(), label, n.to_string()]);
    }
    let _ = writeln!(s, "\nMessages by direction\n{t}");
    s
}

/// Per-flow detection (`--flows`).
pub fn render_flows(locator: &Locator) -> String {
    let mut t = table(&[
        "Flow",
        "Payloads",
        "Packets",
        "Malformed",
        "Other",
        "Offsets",
        "Locked",
        "Session",
        "Confidence",
    ]);
    let mut flows: Vec<_> = locator.flows().collect();
    flows.sort_by_key(|(k, _)| **k);
    for (k, f) in flows {
        let offsets = f.offsets();
        t.add_row([
            format!(
                "{} {} -> {}",
                if k.tcp { "tcp" } else { "udp" },
                k.src,
                k.dst
            ),
            f.payloads.to_string(),
            f.packets.to_string(),
            f.malformed.to_string(),
            (f.not_dissonance + f.byes).to_string(),
            offsets
                .iter()
                .map(|(o, n)| format!("@{o} x{n}"))
                .collect::<Vec<_>>()
                .join(", "),
            f.locked
                .map(|o| o.to_string())
                .unwrap_or_else(|| "-".into()),
            f.session
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            f.confidence().to_string(),
        ]);
    }
    // Flows carried by a game stack get a line each (plain captures print none).
    let mut stacks = String::new();
    let mut flows: Vec<_> = locator.flows().collect();
    flows.sort_by_key(|(k, _)| **k);
    for (k, f) in flows {
        let Some((stack, conf)) = f.stack() else {
            continue;
        };
        stacks.push_str(&format!(
            "{} {} -> {}: stack: {}, confidence {}",
            if k.tcp { "tcp" } else { "udp" },
            k.src,
            k.dst,
            stack.name(),
            conf.as_str()
        ));
        if let Some(t) = f.transport() {
            stacks.push_str(&format!(
                "; retransmissions {} ({} packets), joined {}, cut {}, lost {}, disconnects {}",
                t.retransmissions,
                t.retransmitted_packets,
                t.joined,
                t.cut,
                t.lost_units,
                t.disconnects
            ));
        }
        stacks.push('\n');
    }
    format!("Flows\n{t}\n{stacks}")
}

/// The note printed on stderr when a capture held no Dissonance packet, saying what it
/// did hold and what to try; None when packets were found.
pub fn nothing_found(packets: u64, udp: u64, tcp: u64, frames: u64) -> Option<String> {
    if packets > 0 {
        return None;
    }
    Some(match (udp, tcp) {
        (0, 0) => format!("0 Dissonance packets in {frames} frames: no UDP or TCP payload"),
        (u, 0) => format!(
            "0 Dissonance packets in {u} UDP datagrams; try --payload scan, --payload \
             offset:N or a game stack (mirror, ngo, fishnet), and dump --flows"
        ),
        (u, t) => format!(
            "0 Dissonance packets in {u} UDP datagrams and {t} TCP frames; try --payload \
             scan, --payload offset:N, a game stack (mirror, ngo, fishnet) or another \
             --tcp-framing, and dump --flows"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_clipped_with_an_ellipsis() {
        assert_eq!(clip("alice"), "alice");
        let exact = "a".repeat(NAME_CHARS);
        assert_eq!(clip(&exact), exact.as_str());
        let long = "é".repeat(1024);
        assert_eq!(clip(&long), format!("{}…", "é".repeat(NAME_CHARS - 1)));
        assert_eq!(clip(&long).chars().count(), NAME_CHARS);
        let names: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
        assert_eq!(
            name_list(names.iter().map(String::as_str)),
            "n0, n1, n2, n3, n4, n5, n6, n7, n8, n9 and 2 more"
        );
    }
}
