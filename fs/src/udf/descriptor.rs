//! Descriptor tags (ECMA-167 3/7.2), the anchor (3/10.2), and the
//! address and allocation descriptors (3/7.1, 4/14.14) every other part
//! reads.

use diskimage_formats::bytes::zeroed::{le_u16, le_u32};
use diskimage_formats::BlockDevice;

use super::{Checks, FS};
use crate::error::{Error, Result};

/// Tag identifiers (ECMA-167 3/7.2.1, 4/7.2.1).
pub mod ident {
    /// Primary Volume Descriptor.
    pub const PVD: u16 = 1;
    /// Anchor Volume Descriptor Pointer.
    pub const AVDP: u16 = 2;
    /// Volume Descriptor Pointer.
    pub const VDP: u16 = 3;
    /// Partition Descriptor.
    pub const PD: u16 = 5;
    /// Logical Volume Descriptor.
    pub const LVD: u16 = 6;
    /// Terminating Descriptor.
    pub const TD: u16 = 8;
    /// File Set Descriptor.
    pub const FSD: u16 = 256;
    /// File Identifier Descriptor.
    pub const FID: u16 = 257;
    /// Allocation Extent Descriptor.
    pub const AED: u16 = 258;
    /// Indirect Entry.
    pub const IE: u16 = 259;
    /// File Entry.
    pub const FE: u16 = 261;
    /// Extended File Entry.
    pub const EFE: u16 = 266;
}

/// Length of a descriptor tag.
pub const TAG_LEN: usize = 16;

/// A descriptor tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// TagIdentifier.
    pub ident: u16,
    /// DescriptorCRCLength: bytes after the tag the CRC covers.
    pub crc_len: u16,
    /// TagLocation: the logical sector (or block) this descriptor claims.
    pub location: u32,
}

/// The 16-bit CRC of ECMA-167 3/7.2.6 (CRC-ITU-T, polynomial 0x1021,
/// initial value 0, no reflection).
pub fn crc_itu(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The tag checksum: the sum of the tag's bytes but its own (byte 4), mod 256.
fn tag_checksum(b: &[u8]) -> u8 {
    b.iter()
        .take(TAG_LEN)
        .enumerate()
        .filter(|(i, _)| *i != 4)
        .fold(0u8, |s, (_, &x)| s.wrapping_add(x))
}

/// Whether `b` starts with something shaped like a tag of identifier
/// `want` (its checksum right): what a search for a descriptor accepts.
pub fn looks_like(b: &[u8], want: u16) -> bool {
    b.len() >= TAG_LEN && le_u16(b, 0) == want && b.get(4) == Some(&tag_checksum(b))
}

/// Reads the tag at the start of `b` (the descriptor read from byte
/// `offset` of the volume) and checks it: identifier `want` (any when
/// `None`), the tag checksum and the descriptor CRC. A wrong identifier
/// is an error; a bad checksum or CRC goes through `checks` (a warning,
/// or an error in strict mode). The location is not checked here.
pub fn tag(b: &[u8], offset: u64, want: Option<u16>, checks: &Checks) -> Result<Tag> {
    if b.len() < TAG_LEN {
        return Err(Error::corrupt(FS, None, "descriptor shorter than its tag").at(offset));
    }
    let t = Tag {
        ident: le_u16(b, 0),
        crc_len: le_u16(b, 10),
        location: le_u32(b, 12),
    };
    if let Some(w) = want {
        if t.ident != w {
            return Err(Error::corrupt(
                FS,
                None,
                format!("descriptor tag {} where tag {w} was expected", t.ident),
            )
            .at(offset));
        }
    }
    let sum = tag_checksum(b);
    if b.get(4) != Some(&sum) {
        checks.bad(
            offset,
            format!(
                "tag {} checksum {:#04x}, computed {sum:#04x}",
                t.ident,
                b.get(4).copied().unwrap_or(0)
            ),
        )?;
    }
    let end = TAG_LEN + usize::from(t.crc_len);
    match b.get(TAG_LEN..end) {
        Some(body) => {
            let crc = crc_itu(body);
            let stored = le_u16(b, 8);
            if crc != stored {
                checks.bad(
                    offset,
                    format!("tag {} CRC {stored:#06x}, computed {crc:#06x}", t.ident),
                )?;
            }
        }
        None => checks.bad(
            offset,
            format!(
                "tag {} CRC length {} runs past the descriptor",
                t.ident, t.crc_len
            ),
        )?,
    }
    Ok(t)
}

/// An extent_ad (ECMA-167 3/7.1): `len` bytes from sector `loc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentAd {
    /// Length in bytes.
    pub len: u32,
    /// First sector.
    pub loc: u32,
}

/// The extent_ad at `off` of `b`.
pub fn extent_ad(b: &[u8], off: usize) -> ExtentAd {
    ExtentAd {
        len: le_u32(b, off),
        loc: le_u32(b, off + 4),
    }
}

/// A recorded address (lb_addr, ECMA-167 4/7.1): block `lbn` of the
/// partition that partition map `part` of the logical volume names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LbAddr {
    /// Logical block number within the partition.
    pub lbn: u32,
    /// Partition reference number (an index into the partition maps).
    pub part: u16,
}

/// What an allocation descriptor's extent holds (ECMA-167 4/14.14.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Recorded and allocated: data.
    Recorded,
    /// Allocated but not recorded: reads as zeros.
    Allocated,
    /// Neither: a hole, zeros.
    Unallocated,
    /// The next extent of allocation descriptors (a continuation).
    Next,
}

/// One allocation descriptor (short_ad, long_ad or ext_ad).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ad {
    /// What the extent holds.
    pub kind: ExtentKind,
    /// Extent length in bytes (30 bits).
    pub len: u32,
    /// Where it is.
    pub at: LbAddr,
}

/// Splits an extent length field into its kind and length.
fn length_field(v: u32) -> (ExtentKind, u32) {
    let kind = match v >> 30 {
        0 => ExtentKind::Recorded,
        1 => ExtentKind::Allocated,
        2 => ExtentKind::Unallocated,
        _ => ExtentKind::Next,
    };
    (kind, v & 0x3FFF_FFFF)
}

/// The short_ad at `off` of `b` (its partition is `part`, the one of
/// the entry that holds it).
pub fn short_ad(b: &[u8], off: usize, part: u16) -> Ad {
    let (kind, len) = length_field(le_u32(b, off));
    Ad {
        kind,
        len,
        at: LbAddr {
            lbn: le_u32(b, off + 4),
            part,
        },
    }
}

/// The long_ad at `off` of `b`.
pub fn long_ad(b: &[u8], off: usize) -> Ad {
    let (kind, len) = length_field(le_u32(b, off));
    Ad {
        kind,
        len,
        at: LbAddr {
            lbn: le_u32(b, off + 4),
            part: le_u16(b, off + 8),
        },
    }
}

/// The ext_ad at `off` of `b` (ECMA-167 4/14.14.3): its extent length
/// and location (the recorded and information lengths are within it).
pub fn ext_ad(b: &[u8], off: usize) -> Ad {
    let (kind, len) = length_field(le_u32(b, off));
    Ad {
        kind,
        len,
        at: LbAddr {
            lbn: le_u32(b, off + 12),
            part: le_u16(b, off + 16),
        },
    }
}

/// Sector size and anchor found on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// The logical sector (and block) size.
    pub block: u64,
    /// Main volume descriptor sequence.
    pub main: ExtentAd,
    /// Reserve volume descriptor sequence.
    pub reserve: ExtentAd,
    /// Byte offset of the anchor.
    pub offset: u64,
}

/// Block sizes tried, in order.
pub const BLOCK_SIZES: [u64; 4] = [2048, 512, 4096, 1024];

/// Finds the Anchor Volume Descriptor Pointer: at sector 256, else at
/// N-256 or N-1 (N the number of sectors of the device), for each sector
/// size of [`BLOCK_SIZES`]; a candidate counts when its tag identifier,
/// checksum and location agree.
pub fn find_anchor(device: &dyn BlockDevice, checks: &Checks) -> Result<Anchor> {
    let size = device.size();
    let mut buf = [0u8; 512];
    for block in BLOCK_SIZES {
        let n = size / block;
        for sector in [Some(256), n.checked_sub(257), n.checked_sub(1)]
            .into_iter()
            .flatten()
        {
            let offset = sector * block;
            if offset + 512 > size {
                continue;
            }
            device.read_at(&mut buf, offset)?;
            if !looks_like(&buf, ident::AVDP) || u64::from(le_u32(&buf, 12)) != sector {
                continue;
            }
            tag(&buf, offset, Some(ident::AVDP), checks)?;
            return Ok(Anchor {
                block,
                main: extent_ad(&buf, 16),
                reserve: extent_ad(&buf, 24),
                offset,
            });
        }
    }
    Err(Error::corrupt(
        FS,
        None,
        "no UDF anchor volume descriptor pointer at sector 256, N-256 or N-1 \
         for 512-, 1024-, 2048- or 4096-byte sectors",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_ecma_example() {
        // ECMA-167 3/7.2.6: the CRC of bytes 0x70 0x6A 0x77 is 0x3299.
        assert_eq!(crc_itu(&[0x70, 0x6A, 0x77]), 0x3299);
    }

    #[test]
    fn extent_kinds_come_from_the_top_bits() {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&(0x8000_0800u32).to_le_bytes());
        let ad = short_ad(&b, 0, 3);
        assert_eq!(
            (ad.kind, ad.len, ad.at.part),
            (ExtentKind::Unallocated, 0x800, 3)
        );
        b[..4].copy_from_slice(&(0xC000_0010u32).to_le_bytes());
        assert_eq!(short_ad(&b, 0, 0).kind, ExtentKind::Next);
    }
}
