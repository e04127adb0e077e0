//! The one GUID/UUID type of the workspace.
//!
//! Two byte orders meet on disk: Microsoft's `GUID` layout (VHDX, GPT,
//! VirtualBox: `Data1` u32, `Data2` and `Data3` u16, all little-endian, then
//! eight bytes) and RFC 4122's network order (VHD, ext, XFS, Btrfs, LVM2
//! labels aside). A [`Guid`] holds the Microsoft layout; [`Guid::from_be_bytes`]
//! takes the RFC 4122 order. Both print the same text for the same identifier.

use std::fmt;

/// A GUID, held in Microsoft's stored layout: `Data1` (u32 LE), `Data2`,
/// `Data3` (u16 LE), `Data4` (8 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

/// Swaps the first three fields between the two byte orders (its own inverse).
const fn swap_fields(b: [u8; 16]) -> [u8; 16] {
    [
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15],
    ]
}

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

    /// A GUID stored in Microsoft's layout (VHDX, GPT, VDI).
    pub const fn from_le_bytes(bytes: [u8; 16]) -> Guid {
        Guid(bytes)
    }

    /// A UUID stored in RFC 4122 network order (VHD, ext, XFS, Btrfs): the
    /// bytes in the order its text prints them.
    pub const fn from_be_bytes(bytes: [u8; 16]) -> Guid {
        Guid(swap_fields(bytes))
    }

    /// The bytes in Microsoft's layout.
    pub const fn to_le_bytes(self) -> [u8; 16] {
        self.0
    }

    /// The bytes in RFC 4122 network order.
    pub const fn to_be_bytes(self) -> [u8; 16] {
        swap_fields(self.0)
    }

    /// The GUID stored (Microsoft layout) at `offset` of `bytes`; nil when short.
    pub fn read_le(bytes: &[u8], offset: usize) -> Guid {
        Guid(crate::bytes::array(bytes, offset).unwrap_or_default())
    }

    /// The UUID stored (RFC 4122 order) at `offset` of `bytes`; nil when short.
    pub fn read_be(bytes: &[u8], offset: usize) -> Guid {
        Guid::from_be_bytes(crate::bytes::array(bytes, offset).unwrap_or_default())
    }

    /// Whether this is the all-zero GUID.
    pub fn is_nil(&self) -> bool {
        *self == Guid::NIL
    }

    /// Whether `text` names this GUID (braces and letter case ignored).
    pub fn matches_text(&self, text: &str) -> bool {
        text.parse::<Guid>().is_ok_and(|g| g == *self)
    }

    fn write_text(&self, f: &mut fmt::Formatter<'_>, upper: bool) -> fmt::Result {
        for (i, x) in self.to_be_bytes().iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            if upper {
                write!(f, "{x:02X}")?;
            } else {
                write!(f, "{x:02x}")?;
            }
        }
        Ok(())
    }
}

/// Lower case, `2dc27766-f623-4200-9d64-115e9bfd4a08`.
impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_text(f, false)
    }
}

/// Upper case (`{:X}`), as GPT tools print it: `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`.
impl fmt::UpperHex for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_text(f, true)
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{self}}}")
    }
}

/// The text form was not 32 hex digits in 8-4-4-4-12 groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseGuidError;

impl fmt::Display for ParseGuidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a GUID (expected 8-4-4-4-12 hex digits)")
    }
}

impl std::error::Error for ParseGuidError {}

impl std::str::FromStr for Guid {
    type Err = ParseGuidError;

    /// Parses `8-4-4-4-12` hex digits, braces and letter case ignored.
    fn from_str(text: &str) -> Result<Guid, ParseGuidError> {
        let t = text.trim();
        let t = t
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(t);
        let groups: Vec<&str> = t.split('-').collect();
        if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
            return Err(ParseGuidError);
        }
        let mut out = [0u8; 16];
        let digits = groups.concat();
        for (slot, pair) in out.iter_mut().zip(digits.as_bytes().chunks(2)) {
            let s = std::str::from_utf8(pair).map_err(|_| ParseGuidError)?;
            *slot = u8::from_str_radix(s, 16).map_err(|_| ParseGuidError)?;
        }
        Ok(Guid::from_be_bytes(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_in_both_layouts() {
        let g = Guid::from_fields(
            0x2DC2_7766,
            0xF623,
            0x4200,
            [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
        );
        assert_eq!(g.0[..4], [0x66, 0x77, 0xc2, 0x2d]);
        assert_eq!(g.to_string(), "2dc27766-f623-4200-9d64-115e9bfd4a08");
        assert_eq!(format!("{g:X}"), "2DC27766-F623-4200-9D64-115E9BFD4A08");
        assert_eq!(g.to_be_bytes()[..4], [0x2d, 0xc2, 0x77, 0x66]);
        assert_eq!(Guid::from_be_bytes(g.to_be_bytes()), g);
        assert!(g.matches_text("{2DC27766-F623-4200-9D64-115E9BFD4A08}"));
        assert!(!g.matches_text("{2DC27766-F623-4200-9D64-115E9BFD4A09}"));
        assert_eq!("2dc27766-f623-4200-9d64-115e9bfd4a08".parse(), Ok(g));
    }

    #[test]
    fn malformed_text_is_refused() {
        for t in [
            "",
            "2dc27766f62342009d64115e9bfd4a08",
            "2dc27766-f623-4200-9d64-115e9bfd4a0g",
        ] {
            assert_eq!(t.parse::<Guid>(), Err(ParseGuidError), "{t}");
        }
    }

    #[test]
    fn short_slices_read_as_nil() {
        assert!(Guid::read_le(&[1, 2], 0).is_nil());
        assert!(Guid::read_be(&[0; 16], 1).is_nil());
    }
}
