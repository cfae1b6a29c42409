//! The rule catalogue: stable ids, severities, titles and explanations, defined family by
//! family beside the engine's checks ([`headers`], [`sessions`], [`direction`], [`state`],
//! [`voice`]); [`ALL`] lists them in id order. Ids never change
//! meaning; new rules get new ids.

use std::fmt;

/// How bad a finding is. Ordered: `Info < Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
    pub fn parse(s: &str) -> Option<Severity> {
        match s.to_ascii_lowercase().as_str() {
            "info" => Some(Severity::Info),
            "warning" | "warn" => Some(Severity::Warning),
            "error" => Some(Severity::Error),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One rule of the catalogue.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// Stable id, `D` and three digits.
    pub id: &'static str,
    /// Short kebab-case name.
    pub name: &'static str,
    /// Group: headers, sessions, direction, state, voice, server.
    pub group: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    pub explanation: &'static str,
}

macro_rules! rules {
    ($($konst:ident = $id:literal $name:literal $group:literal $sev:ident $title:literal $expl:literal;)*) => {
        $(pub const $konst: &Rule = &Rule {
            id: $id,
            name: $name,
            group: $group,
            severity: Severity::$sev,
            title: $title,
            explanation: $expl,
        };)*
    };
}

pub mod direction;
pub mod headers;
pub mod server;
pub mod sessions;
pub mod state;
pub mod voice;

pub use direction::*;
pub use headers::*;
pub use server::*;
pub use sessions::*;
pub use state::*;
pub use voice::*;

/// Every rule, in id order.
pub const ALL: &[&Rule] = &[
    BAD_MAGIC,
    UNKNOWN_TYPE,
    MALFORMED,
    TRAILING,
    OVERSIZE,
    WRONG_SESSION,
    WRONG_SESSION_UNANSWERED,
    STALE_STORM,
    SESSION_NO_HANDSHAKE,
    RESPONSE_WITHOUT_REQUEST,
    CLIENT_SENT_SERVER_TYPE,
    SERVER_SENT_CLIENT_TYPE,
    IGNORED_BY_SERVER,
    VOICE_RELIABLE,
    TEXT_UNRELIABLE,
    RELAYED_P2P,
    RELAY_UNKNOWN_DEST,
    RELAY_SERVER_TYPE,
    STATE_MISMATCH,
    DELTA_UNKNOWN,
    REMOVE_UNKNOWN,
    NULL_NAME,
    TEXT_RECIPIENT_TYPE,
    ROOM_COLLISION,
    NAME_REUSED,
    NAME_TAKEN_OVER,
    VOICE_GAP,
    VOICE_DUPLICATE,
    VOICE_REORDER,
    OPUS_FRAME_MISMATCH,
    OPUS_RATE,
    VOICE_UNKNOWN_SENDER,
    VOICE_OUTLIER,
    FATAL_TO_SERVER,
];

/// Finds a rule by id (`D010`, case-insensitive) or name (`wrong-session`).
pub fn find(key: &str) -> Option<&'static Rule> {
    ALL.iter()
        .copied()
        .find(|r| r.id.eq_ignore_ascii_case(key) || r.name.eq_ignore_ascii_case(key))
}

/// The rules table of `check --list-rules`: id, severity, group, name, title.
pub fn table() -> String {
    let mut s = String::new();
    for r in ALL {
        s.push_str(&format!(
            "{}  {:<7}  {:<9}  {:<34} {}\n",
            r.id, r.severity, r.group, r.name, r.title
        ));
    }
    s
}

impl Rule {
    /// `check --explain`: the heading line, the title and the explanation.
    pub fn explain(&self) -> String {
        format!(
            "{} {} ({}, {})\n{}\n\n{}",
            self.id, self.name, self.severity, self.group, self.title, self.explanation
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_unique() {
        let mut ids: Vec<_> = ALL.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ALL.len());
        let mut names: Vec<_> = ALL.iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert_eq!(find("d010"), Some(WRONG_SESSION));
        assert_eq!(find("null-name"), Some(NULL_NAME));
    }
}
