//! Room ids: the real ToRoomId, FNV-1a over UTF-16BE code units folded to 16 bits.

const FNV_OFFSET: u32 = 0x811C_9DC5;
const FNV_PRIME: u32 = 0x0100_0193;

/// The room id of a name, exactly as Dissonance computes it (docs/protocol.md §5).
///
/// ```
/// assert_eq!(dissonance_proto::codec::room_id("Global"), 0x7518);
/// ```
pub fn room_id(name: &str) -> u16 {
    fold(name.encode_utf16().fold(FNV_OFFSET, step))
}

/// The room id of a name given as UTF-16 code units. This is the general form: a .NET
/// string may hold unpaired surrogates (which a Rust `&str` cannot), and they hash as
/// themselves.
pub fn room_id_utf16(units: &[u16]) -> u16 {
    fold(units.iter().copied().fold(FNV_OFFSET, step))
}

/// The 32-bit FNV-1a hash over the UTF-16BE bytes, before folding.
pub fn fnv1a_utf16be(units: &[u16]) -> u32 {
    units.iter().copied().fold(FNV_OFFSET, step)
}

#[inline]
fn step(h: u32, unit: u16) -> u32 {
    let [hi, lo] = unit.to_be_bytes();
    let h = (h ^ hi as u32).wrapping_mul(FNV_PRIME);
    (h ^ lo as u32).wrapping_mul(FNV_PRIME)
}

#[inline]
fn fold(h: u32) -> u16 {
    let upper = h >> 16;
    let lower = h & 0xFFFF;
    (upper
        .wrapping_mul(5791)
        .wrapping_add(lower.wrapping_mul(7639))
        & 0xFFFF) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_examples() {
        assert_eq!(room_id("Global"), 0x7518);
        assert_eq!(room_id("Red Team"), 0x92DA);
        assert_eq!(room_id(""), 0x69D7);
        assert_eq!(room_id("😀"), 0xAA77);
        assert_eq!(
            fnv1a_utf16be(&"Global".encode_utf16().collect::<Vec<_>>()),
            0x3EAC515C
        );
    }
}
