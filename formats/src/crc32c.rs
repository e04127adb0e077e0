//! CRC-32C (Castagnoli): the checksum of every VHDX header, region table
//! and log entry ([MS-VHDX] 2.2.2), and of ext4 `metadata_csum`
//! structures and jbd2 journal blocks. `crc32fast` computes only the IEEE
//! polynomial, so this is a small table-driven implementation of our own,
//! the one the whole workspace uses.

/// The reflected Castagnoli polynomial.
const POLYNOMIAL: u32 = 0x82F6_3B78;

/// The byte-at-a-time lookup table, built at compile time.
const TABLE: [u32; 256] = build_table();

// Indexing is checked at compile time here: `i < 256` in a const fn.
#[allow(clippy::indexing_slicing)]
const fn build_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLYNOMIAL
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// Continues a CRC-32C over `bytes` without the customary inversions (how
/// ext4 and jbd2 chain it: a seed, then each field; `!0` to start).
pub fn raw(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        let index = usize::from((crc as u8) ^ b);
        // The index is a u8, always within the 256-entry table.
        crc = TABLE.get(index).copied().unwrap_or(0) ^ (crc >> 8);
    }
    crc
}

/// Continues a CRC-32C over `bytes` (start with `crc = 0`): the standard
/// CRC-32C, inverted before and after.
pub fn update(crc: u32, bytes: &[u8]) -> u32 {
    !raw(!crc, bytes)
}

/// The CRC-32C of `bytes` with the 4-byte checksum field at
/// `checksum_offset` read as zeros, as VHDX computes it.
pub fn checksum_with_hole(bytes: &[u8], checksum_offset: usize) -> u32 {
    let (before, rest) = bytes.split_at(checksum_offset.min(bytes.len()));
    let after = rest.get(4..).unwrap_or_default();
    let zeros = [0u8; 4];
    let zeros = zeros.get(..rest.len().min(4)).unwrap_or_default();
    update(update(update(0, before), zeros), after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_of_the_castagnoli_crc() {
        assert_eq!(update(0, b"123456789"), 0xE306_9283);
        assert_eq!(update(update(0, b"1234"), b"56789"), 0xE306_9283);
        assert_eq!(update(0, b""), 0);
        assert_eq!(!raw(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn checksum_field_counts_as_zero() {
        let mut a = b"abcdWXYZefgh".to_vec();
        let with = checksum_with_hole(&a, 4);
        a[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(with, update(0, &a));
    }
}
