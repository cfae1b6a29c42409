//! String order of .NET's culture-sensitive comparison (invariant culture), which real
//! Dissonance clients and servers use to sort the room lists of ClientState packets.
//!
//! This is a three-level collation in the style of the Unicode Collation Algorithm:
//! first the base characters (punctuation and symbols, then digits, then letters
//! alphabetically, ignoring case and accents), then accents (plain before accented), then
//! case (lower before upper). It reproduces the real order for ASCII names and for
//! Latin letters with accents; other scripts fall back to code-point order at the first
//! level, which can differ from .NET (docs/guide.md says so).

use std::cmp::Ordering;

/// Compares two strings as `string.Compare(a, b, StringComparison.InvariantCulture)`.
pub fn dotnet_compare(a: &str, b: &str) -> Ordering {
    let ka = keys(a);
    let kb = keys(b);
    for level in 0..3 {
        let wa = ka.iter().map(|k| k[level]).filter(|w| *w != 0);
        let wb = kb.iter().map(|k| k[level]).filter(|w| *w != 0);
        match wa.cmp(wb) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    // Identical at every level: fall back to ordinal so the order is total.
    a.cmp(b)
}

/// Sorts names in place the way real Dissonance peers sort their room lists.
pub fn sort_dotnet<S: AsRef<str>>(names: &mut [S]) {
    names.sort_by(|a, b| dotnet_compare(a.as_ref(), b.as_ref()));
}

// Punctuation and symbols in the root collation's order; all of them sort before digits.
const PUNCT: &str = "\t\n\x0b\x0c\r _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$";

fn keys(s: &str) -> Vec<[u32; 3]> {
    s.chars().map(key).collect()
}

/// (primary, secondary, tertiary) weights of one character; 0 means "ignored at this level".
fn key(c: char) -> [u32; 3] {
    if let Some(i) = PUNCT.find(c) {
        return [1 + i as u32, 1, 1];
    }
    if c.is_ascii_digit() {
        return [100 + (c as u32 - '0' as u32), 1, 1];
    }
    let (base, accent) = fold_accent(c);
    if base.is_ascii_alphabetic() {
        let lower = base.to_ascii_lowercase();
        let tertiary = if base.is_ascii_uppercase() { 2 } else { 1 };
        return [200 + (lower as u32 - 'a' as u32), 1 + accent, tertiary];
    }
    // Other characters: after Latin letters, by code point.
    let lower: char = c.to_lowercase().next().unwrap_or(c);
    let tertiary = if c != lower { 2 } else { 1 };
    [1000 + lower as u32, 1, tertiary]
}

/// Base letter and an accent rank for Latin-1 and Latin Extended-A letters.
fn fold_accent(c: char) -> (char, u32) {
    const TABLE: &[(&str, char)] = &[
        ("àáâãäåāăą", 'a'),
        ("ÀÁÂÃÄÅĀĂĄ", 'A'),
        ("çćĉċč", 'c'),
        ("ÇĆĈĊČ", 'C'),
        ("ďđ", 'd'),
        ("ĎĐ", 'D'),
        ("èéêëēĕėęě", 'e'),
        ("ÈÉÊËĒĔĖĘĚ", 'E'),
        ("ĝğġģ", 'g'),
        ("ĜĞĠĢ", 'G'),
        ("ìíîïĩīĭį", 'i'),
        ("ÌÍÎÏĨĪĬĮ", 'I'),
        ("ñńņň", 'n'),
        ("ÑŃŅŇ", 'N'),
        ("òóôõöøōŏő", 'o'),
        ("ÒÓÔÕÖØŌŎŐ", 'O'),
        ("śŝşš", 's'),
        ("ŚŜŞŠ", 'S'),
        ("ùúûüũūŭůűų", 'u'),
        ("ÙÚÛÜŨŪŬŮŰŲ", 'U'),
        ("ýÿ", 'y'),
        ("ÝŸ", 'Y'),
        ("źżž", 'z'),
        ("ŹŻŽ", 'Z'),
    ];
    for (accented, base) in TABLE {
        if let Some(pos) = accented.chars().position(|x| x == c) {
            return (*base, 1 + pos as u32);
        }
    }
    (c, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_order_from_vectors_readme() {
        let mut v = vec![
            "zeta", "Alpha", "beta", "_x", "B", "b", "a", "10", "9", "é", "e", "f",
        ];
        sort_dotnet(&mut v);
        assert_eq!(
            v,
            ["_x", "10", "9", "a", "Alpha", "b", "B", "beta", "e", "é", "f", "zeta"]
        );
    }
}
