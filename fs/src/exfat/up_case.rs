//! The up-case table (exFAT specification §7.2): how names compare
//! case-insensitively.
//!
//! The table maps each UTF-16 code unit to its upper case; it is stored
//! compressed (a `0xFFFF` unit followed by a count means that many units
//! map to themselves) and guarded by a checksum (§7.2.2, the boot
//! checksum's rotate-and-add over its bytes, 32 bits). When the table is
//! missing, too large or fails its checksum, [`UpCase::fallback`] upper-
//! cases with Unicode's simple mapping of each unit (the table mkfs.exfat
//! and Windows write is that mapping for the BMP), and the file system
//! says so in [`ExFatFs::up_case_from_volume`](super::ExFatFs::up_case_from_volume).

/// Largest stored up-case table read, in bytes (an uncompressed table of
/// every BMP unit is 128 KiB).
pub const MAX_TABLE_BYTES: u64 = 128 * 1024;

/// A UTF-16 code unit → upper case mapping.
#[derive(Debug, Clone)]
pub struct UpCase {
    /// Index: the unit; value: its upper case (units past the end map to
    /// themselves).
    map: Vec<u16>,
}

/// The table checksum of §7.2.2 (32-bit rotate right, add each byte).
pub fn table_checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |sum, &b| {
        sum.rotate_right(1).wrapping_add(u32::from(b))
    })
}

impl UpCase {
    /// Decompresses a stored table (its bytes, checksum already checked).
    pub fn from_table(bytes: &[u8]) -> Self {
        let mut map: Vec<u16> = Vec::with_capacity(0x1_0000);
        let mut units = bytes.chunks_exact(2).map(|c| {
            u16::from_le_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        });
        while let Some(u) = units.next() {
            if map.len() >= 0x1_0000 {
                break;
            }
            if u == 0xFFFF {
                if let Some(n) = units.next() {
                    let end = (map.len() + usize::from(n)).min(0x1_0000);
                    while map.len() < end {
                        map.push(u16::try_from(map.len()).unwrap_or(u16::MAX));
                    }
                    continue;
                }
            }
            map.push(u);
        }
        UpCase { map }
    }

    /// Unicode's simple upper-case mapping of each BMP unit (surrogates
    /// and units whose upper case is not one BMP unit map to themselves).
    pub fn fallback() -> Self {
        let map = (0..=u16::MAX)
            .map(|u| {
                let Some(c) = char::from_u32(u32::from(u)) else {
                    return u;
                };
                let mut up = c.to_uppercase();
                match (up.next(), up.next()) {
                    (Some(x), None) => u16::try_from(u32::from(x)).unwrap_or(u),
                    _ => u,
                }
            })
            .collect();
        UpCase { map }
    }

    /// The upper case of one unit.
    pub fn unit(&self, u: u16) -> u16 {
        self.map.get(usize::from(u)).copied().unwrap_or(u)
    }

    /// Whether two names (UTF-16 units) are equal ignoring case.
    pub fn eq(&self, a: &[u16], b: &[u16]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(&x, &y)| x == y || self.unit(x) == self.unit(y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_table_expands() {
        // 'a'..'c' (0x61..0x63) map to 'A'..'C'; everything below is identity.
        let mut t: Vec<u16> = vec![0xFFFF, 0x61, 0x41, 0x42, 0x43];
        t.extend([0xFFFF, 10]);
        let bytes: Vec<u8> = t.iter().flat_map(|u| u.to_le_bytes()).collect();
        let up = UpCase::from_table(&bytes);
        assert_eq!(up.unit(0x20), 0x20);
        assert_eq!(up.unit(0x62), 0x42);
        assert_eq!(up.unit(0x66), 0x66);
        assert_eq!(up.unit(0xE9), 0xE9);
        assert!(up.eq(&[0x61, 0x62], &[0x41, 0x42]));
        assert!(!up.eq(&[0x61], &[0x61, 0x61]));
    }

    #[test]
    fn fallback_is_unicode_simple_upper_case() {
        let up = UpCase::fallback();
        assert_eq!(up.unit(u16::from(b'a')), u16::from(b'A'));
        assert_eq!(up.unit(0xE9), 0xC9); // é
        assert_eq!(up.unit(0xDF), 0xDF); // ß upper-cases to two letters
        assert_eq!(up.unit(0xD800), 0xD800);
    }

    #[test]
    fn checksum_rotates_then_adds() {
        assert_eq!(table_checksum(&[1]), 1);
        assert_eq!(table_checksum(&[1, 0]), 0x8000_0000);
    }
}
