//! Directories: File Identifier Descriptors (ECMA-167 4/14.4).

use diskimage_formats::bytes::zeroed::le_u16;

use super::descriptor::{self, ident, LbAddr};
use super::{name, Checks, FS};
use crate::error::{Error, Result};

/// Fixed part of a File Identifier Descriptor.
const FID_FIXED: usize = 38;

/// One entry of a directory (not the parent, not a deleted one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fid {
    /// The name.
    pub name: String,
    /// Where the entry's ICB is.
    pub icb: LbAddr,
    /// File characteristics (bit 0 hidden, 1 directory, 2 deleted, 3
    /// parent, 4 metadata).
    pub characteristics: u8,
}

/// The entries of a directory whose data is `b` (its first byte at
/// `offset_of(0)` of the volume, for error positions).
pub fn parse(
    b: &[u8],
    offset_of: &dyn Fn(usize) -> u64,
    checks: &Checks,
    path: &str,
) -> Result<Vec<Fid>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + FID_FIXED <= b.len() {
        let rest = b.get(pos..).unwrap_or_default();
        let offset = offset_of(pos);
        if le_u16(rest, 0) == 0 && rest.iter().take(FID_FIXED).all(|&x| x == 0) {
            break; // zero padding after the last entry
        }
        let l_fi = usize::from(rest.get(19).copied().unwrap_or(0));
        let l_iu = usize::from(le_u16(rest, 36));
        let len = (FID_FIXED + l_iu + l_fi + 3) & !3;
        let Some(fid) = rest.get(..FID_FIXED + l_iu + l_fi) else {
            return Err(Error::corrupt(
                FS,
                Some(path),
                format!(
                    "file identifier descriptor of {} bytes past the directory's end",
                    FID_FIXED + l_iu + l_fi
                ),
            )
            .at(offset));
        };
        // The CRC covers the padding too.
        let padded = rest.get(..len.min(rest.len())).unwrap_or(fid);
        descriptor::tag(padded, offset, Some(ident::FID), checks)
            .map_err(|e| super::icb::in_path(e, path))?;
        pos += len;
        let characteristics = fid.get(18).copied().unwrap_or(0);
        if characteristics & 0x0C != 0 {
            continue; // deleted or parent
        }
        let raw = fid.get(FID_FIXED + l_iu..).unwrap_or_default();
        let name = name::decode(raw);
        if name.is_empty() {
            return Err(
                Error::corrupt(FS, Some(path), "directory entry with an empty name").at(offset),
            );
        }
        let ad = descriptor::long_ad(fid, 20);
        out.push(Fid {
            name,
            icb: ad.at,
            characteristics,
        });
    }
    Ok(out)
}
