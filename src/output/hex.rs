//! Hex helpers. Hand-written: a `Display` that streams hex into any writer without an
//! intermediate `String` is what the JSON hot path needs, and it is a few lines.

use std::fmt;

/// Displays bytes as lowercase hex without allocating.
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 128];
        for chunk in self.0.chunks(64) {
            for (i, b) in chunk.iter().enumerate() {
                buf[2 * i] = DIGITS[(b >> 4) as usize];
                buf[2 * i + 1] = DIGITS[(b & 15) as usize];
            }
            // Only ASCII hex digits were written.
            f.write_str(std::str::from_utf8(&buf[..2 * chunk.len()]).unwrap_or_default())?;
        }
        Ok(())
    }
}

/// Parses hex, ignoring ASCII whitespace, `:` and `-` separators and an optional `0x`.
pub fn parse(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let digits: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b':' && *c != b'-')
        .collect();
    if digits.len() % 2 != 0 {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    digits
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            let v = |c: u8| (c as char).to_digit(16);
            match (v(pair[0]), v(pair[1])) {
                (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
                _ => Err(format!(
                    "not a hex digit at byte {i}: {:?}",
                    String::from_utf8_lossy(pair)
                )),
            }
        })
        .collect()
}

/// Lowercase hex of `bytes`, unquoted.
pub fn encode(bytes: &[u8]) -> String {
    let mut quoted = Vec::with_capacity(bytes.len() * 2 + 2);
    crate::output::json::hex(&mut quoted, bytes);
    // The JSON writer's digits, without its quotes (ASCII only).
    String::from_utf8_lossy(&quoted[1..quoted.len() - 1]).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        assert_eq!(super::parse("8B c7 0a").unwrap(), vec![0x8b, 0xc7, 0x0a]);
        assert_eq!(super::Hex(&[0x8b, 0, 0xff]).to_string(), "8b00ff");
        assert!(super::parse("8").is_err());
        assert!(super::parse("zz").is_err());
    }
}
