//! Bounds-checked reads of integers and arrays from byte slices: `None`
//! instead of a panic when the slice is too short.

/// `N` bytes at `off`, or `None` when they are not all there.
pub fn array<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

/// Little-endian `u16` at `off`.
pub fn le_u16(b: &[u8], off: usize) -> Option<u16> {
    array(b, off).map(u16::from_le_bytes)
}

/// Little-endian `u32` at `off`.
pub fn le_u32(b: &[u8], off: usize) -> Option<u32> {
    array(b, off).map(u32::from_le_bytes)
}

/// Little-endian `u64` at `off`.
pub fn le_u64(b: &[u8], off: usize) -> Option<u64> {
    array(b, off).map(u64::from_le_bytes)
}

/// Big-endian `u16` at `off`.
pub fn be_u16(b: &[u8], off: usize) -> Option<u16> {
    array(b, off).map(u16::from_be_bytes)
}

/// Big-endian `u32` at `off`.
pub fn be_u32(b: &[u8], off: usize) -> Option<u32> {
    array(b, off).map(u32::from_be_bytes)
}

/// Big-endian `u64` at `off`.
pub fn be_u64(b: &[u8], off: usize) -> Option<u64> {
    array(b, off).map(u64::from_be_bytes)
}

/// UTF-16LE bytes as text: an odd trailing byte dropped, unpaired
/// surrogates U+FFFD.
pub fn utf16le(b: &[u8]) -> String {
    let units: Vec<u16> = b.chunks_exact(2).filter_map(|c| le_u16(c, 0)).collect();
    String::from_utf16_lossy(&units)
}

/// UTF-16LE bytes as text up to the first NUL unit (as [`utf16le`]).
pub fn utf16le_to_nul(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .filter_map(|c| le_u16(c, 0))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// UTF-16BE bytes as text (Joliet, UCS-2 descriptors), as [`utf16le`].
pub fn utf16be(b: &[u8]) -> String {
    let units: Vec<u16> = b.chunks_exact(2).filter_map(|c| be_u16(c, 0)).collect();
    String::from_utf16_lossy(&units)
}

/// UTF-16BE bytes as text up to the first NUL unit (a VHD parent name).
pub fn utf16be_to_nul(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .filter_map(|c| be_u16(c, 0))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Whether `magic` stands at `off`.
pub fn has_at(b: &[u8], off: usize, magic: &[u8]) -> bool {
    off.checked_add(magic.len())
        .and_then(|end| b.get(off..end))
        .is_some_and(|s| s == magic)
}

/// The same little-endian reads, giving zero where the slice is too short:
/// for fixed structures whose length the caller has already checked.
pub mod zeroed {
    /// Little-endian `u16` at `off`, 0 when short.
    pub fn le_u16(b: &[u8], off: usize) -> u16 {
        super::le_u16(b, off).unwrap_or(0)
    }

    /// Little-endian `u32` at `off`, 0 when short.
    pub fn le_u32(b: &[u8], off: usize) -> u32 {
        super::le_u32(b, off).unwrap_or(0)
    }

    /// Little-endian `u64` at `off`, 0 when short.
    pub fn le_u64(b: &[u8], off: usize) -> u64 {
        super::le_u64(b, off).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_slices_give_none() {
        let b = [1u8, 2, 3];
        assert_eq!(le_u16(&b, 1), Some(0x0302));
        assert_eq!(be_u16(&b, 0), Some(0x0102));
        assert_eq!(le_u32(&b, 0), None);
        assert_eq!(le_u64(&b, usize::MAX), None);
        assert!(has_at(&b, 1, &[2, 3]));
        assert!(!has_at(&b, 2, &[3, 4]));
        assert!(!has_at(&b, usize::MAX, &[3]));
    }
}
