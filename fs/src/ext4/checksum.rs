//! The two checksums of ext: CRC-32C (Castagnoli) as the kernel's
//! `ext4_chksum` computes it (a seed in, no final inversion), for
//! `metadata_csum`; and CRC-16 (poly 0x8005, reflected) for the group
//! descriptors of `gdt_csum` (`uninit_bg`) file systems.

/// The reflected CRC-16 (ANSI) polynomial.
const CRC16_POLY: u16 = 0xA001;

// As above: `i < 256` in a const fn.
#[allow(clippy::indexing_slicing)]
const fn crc16_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u16;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ CRC16_POLY
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

// Indexed by a u8 below: always within the 256 entries.
static CRC16: [u16; 256] = crc16_table();

/// CRC-32C of `data` continued from `seed` (`!0` to start), without the
/// final inversion: what ext stores.
pub(crate) fn crc32c(seed: u32, data: &[u8]) -> u32 {
    diskimage_formats::crc32c::raw(seed, data)
}

/// CRC-16 of `data` continued from `seed` (`!0` to start).
pub(crate) fn crc16(seed: u16, data: &[u8]) -> u16 {
    data.iter().fold(seed, |c, &b| {
        (c >> 8) ^ CRC16.get(usize::from((c as u8) ^ b)).copied().unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // The standard CRC-32C check value is the inverted form of ours.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
        // CRC-16/ARC check value (seed 0).
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }
}
