//! Fixed-layout on-disk structures, declared with `binrw` and read from
//! bytes already in memory.
//!
//! A reader declares a crate-private struct per on-disk structure with
//! `#[derive(BinRead)]` and its endianness (`#[br(little)]`), field names
//! as the format's specification spells them, implements [`Layout`] for it
//! (its size on disk and its name in errors) and reads it with [`read`] or
//! [`read_at`] from the bytes it has read from the file. The checks the
//! fields need (signatures, checksums, ranges) stay in the reader beside
//! the declaration and give the reader's own typed errors: reading a
//! declaration fails only on a slice shorter than the structure, and says
//! so as a [`Detail::Truncated`] that the reader wraps with its format,
//! file and offset. Lookups on the read path (grain tables, BATs) do not
//! go through here.

use std::io::Cursor;

use binrw::meta::ReadEndian;
use binrw::BinRead;

use crate::error::Detail;

/// An on-disk structure declared with `#[derive(BinRead)]`, an explicit
/// endianness and no arguments.
pub trait Layout: for<'a> BinRead<Args<'a> = ()> + ReadEndian {
    /// Bytes the structure occupies on disk (what its declaration reads,
    /// padding included).
    const SIZE: usize;
    /// What the structure is called in errors ("sparse extent header").
    const NAME: &'static str;
}

/// Reads `T` from the start of `bytes`; a slice shorter than
/// [`Layout::SIZE`] is a [`Detail::Truncated`] naming the structure.
pub fn read<T: Layout>(bytes: &[u8]) -> Result<T, Detail> {
    if bytes.len() < T::SIZE {
        return Err(truncated::<T>(bytes.len()));
    }
    // With the length checked, plain integers and arrays cannot fail; a
    // declaration that did would still give a typed detail, not a panic.
    T::read(&mut Cursor::new(bytes))
        .map_err(|e| Detail::Invalid(format!("{} does not read: {e}", T::NAME)))
}

/// Reads `T` at byte `offset` of `bytes` (an entry of a table held in memory).
pub fn read_at<T: Layout>(bytes: &[u8], offset: usize) -> Result<T, Detail> {
    match bytes.get(offset..) {
        Some(rest) => read(rest),
        None => Err(truncated::<T>(0)),
    }
}

fn truncated<T: Layout>(available: usize) -> Detail {
    Detail::Truncated {
        what: T::NAME.into(),
        needed: T::SIZE as u64,
        available: available as u64,
    }
}

/// How many bytes `T`'s declaration reads (from zeros): each declaration's
/// unit test checks that this is its [`Layout::SIZE`]. `None` when the
/// declaration does not read from zeros at all.
pub fn declared_len<T: Layout>() -> Option<u64> {
    let zeros = vec![0u8; T::SIZE.saturating_mul(2).saturating_add(64)];
    let mut cursor = Cursor::new(zeros.as_slice());
    T::read(&mut cursor).ok().map(|_| cursor.position())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-field big-endian declaration with trailing padding.
    #[derive(BinRead, Debug, PartialEq)]
    #[br(big)]
    struct Pair {
        a: u16,
        #[br(pad_after = 2)]
        b: u32,
    }

    impl Layout for Pair {
        const SIZE: usize = 8;
        const NAME: &'static str = "pair";
    }

    #[test]
    fn reads_declarations_and_reports_short_slices() {
        assert_eq!(declared_len::<Pair>(), Some(8));
        let b = [0, 1, 0, 0, 0, 2, 9, 9, 7];
        assert_eq!(read::<Pair>(&b).unwrap(), Pair { a: 1, b: 2 });
        assert_eq!(read_at::<Pair>(&b, 1).unwrap(), Pair { a: 256, b: 0x209 });
        let e = read::<Pair>(&b[..7]).unwrap_err();
        assert_eq!(e.to_string(), "pair needs 8 bytes, only 7 are there");
        let e = read_at::<Pair>(&b, 20).unwrap_err();
        assert_eq!(e.to_string(), "pair needs 8 bytes, only 0 are there");
    }
}

/// A fixed run of bytes in a declaration, read in one piece: binrw reads
/// a `[u8; N]` field one byte at a time, which made a VHD footer and
/// dynamic header take several times as long to read as by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes<const N: usize>(pub [u8; N]);

impl<const N: usize> BinRead for Bytes<N> {
    type Args<'a> = ();

    fn read_options<R: std::io::Read + std::io::Seek>(
        reader: &mut R,
        _endian: binrw::Endian,
        _args: Self::Args<'_>,
    ) -> binrw::BinResult<Self> {
        let mut bytes = [0u8; N];
        reader.read_exact(&mut bytes)?;
        Ok(Bytes(bytes))
    }
}
