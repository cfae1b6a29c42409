//! Hex helpers over the `hex` crate: a `Display` that streams hex into any writer
//! without an intermediate `String` (what the JSON hot path needs: it encodes into a
//! stack buffer with `hex::encode_to_slice`), and a lenient parser for user input.

use std::fmt;

/// Displays bytes as lowercase hex without allocating.
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 128];
        for chunk in self.0.chunks(64) {
            let out = &mut buf[..2 * chunk.len()];
            // Cannot fail: the slice is exactly twice the chunk.
            hex::encode_to_slice(chunk, out).map_err(|_| fmt::Error)?;
            // Only ASCII hex digits were written.
            f.write_str(std::str::from_utf8(out).unwrap_or_default())?;
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
    hex::decode(&digits).map_err(|e| match e {
        hex::FromHexError::InvalidHexCharacter { index, .. } => {
            let i = index / 2;
            format!(
                "not a hex digit at byte {i}: {:?}",
                String::from_utf8_lossy(&digits[2 * i..2 * i + 2])
            )
        }
        other => other.to_string(),
    })
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
