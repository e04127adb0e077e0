//! Little-endian field readers (zero when short, from `crate::bytes`), and the [`Guid`] type
//! ([MS-VHDX] 2.1: GUIDs are stored in the Windows `GUID` layout).

use std::fmt;

pub(crate) use crate::bytes::zeroed::{le_u16, le_u32, le_u64};

/// A GUID as stored on disk: `Data1` (u32 LE), `Data2`, `Data3` (u16 LE), `Data4` (8 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The all-zero GUID.
    pub const NIL: Guid = Guid([0; 16]);

    /// A GUID from the fields of its usual text form `d1-d2-d3-d4[0..2]-d4[2..8]`.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// The GUID stored at `offset` of `bytes`.
    pub(crate) fn read(bytes: &[u8], offset: usize) -> Guid {
        Guid(crate::bytes::array(bytes, offset).unwrap_or_default())
    }

    /// Whether this is the all-zero GUID.
    pub fn is_nil(&self) -> bool {
        *self == Guid::NIL
    }

    /// Whether `text` names this GUID (braces and letter case ignored).
    pub fn matches_text(&self, text: &str) -> bool {
        let t = text.trim().trim_start_matches('{').trim_end_matches('}');
        t.eq_ignore_ascii_case(&self.to_string())
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        let d1 = le_u32(b, 0);
        let d2 = le_u16(b, 4);
        let d3 = le_u16(b, 6);
        write!(f, "{d1:08x}-{d2:04x}-{d3:04x}-")?;
        for x in b.get(8..10).unwrap_or_default() {
            write!(f, "{x:02x}")?;
        }
        f.write_str("-")?;
        for x in b.get(10..16).unwrap_or_default() {
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{self}}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_round_trip() {
        let g = Guid::from_fields(
            0x2DC2_7766,
            0xF623,
            0x4200,
            [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
        );
        assert_eq!(g.0[..4], [0x66, 0x77, 0xc2, 0x2d]);
        assert_eq!(g.to_string(), "2dc27766-f623-4200-9d64-115e9bfd4a08");
        assert!(g.matches_text("{2DC27766-F623-4200-9D64-115E9BFD4A08}"));
        assert!(!g.matches_text("{2DC27766-F623-4200-9D64-115E9BFD4A09}"));
    }

    #[test]
    fn short_slices_read_as_zero() {
        assert_eq!(le_u32(&[1, 2], 0), 0);
        assert_eq!(le_u16(&[1, 2], 0), 0x0201);
        assert_eq!(le_u64(&[0; 8], usize::MAX), 0);
    }
}
