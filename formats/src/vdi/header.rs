//! The VDI pre-header and header (VirtualBox `VDICore.h`: `VDIPREHEADER`,
//! `VDIHEADER0`, `VDIHEADER1`, `VDIHEADER1PLUS`).
//!
//! Every number is little-endian. The pre-header (72 bytes at 0) is a
//! 64-byte text for eyes only (`<<< Oracle VM VirtualBox Disk Image >>>`,
//! `<<< QEMU VM Virtual Disk Image >>>`), the signature `0xBEDA107F` at 0x40
//! and the version (major << 16 | minor) at 0x44. Version 1.x headers
//! start with their own size (`cbHeader`, 0x180 bytes, or 0x190 with the
//! LCHS geometry) and say where the block map and the data start; version
//! 0 headers have neither field: the block map follows the header and the
//! data follow the map. UUIDs are stored in Microsoft's layout.

use crate::bytes::{has_at, le_u32, le_u64};
use crate::error::{Detail, Error, Format, Result};
use crate::guid::Guid;
use crate::image_file::ImageFile;

/// The image signature at 0x40.
pub const SIGNATURE: u32 = 0xBEDA_107F;
/// Where the signature is.
pub const SIGNATURE_OFFSET: u64 = 0x40;
/// Where the version is.
pub const VERSION_OFFSET: u64 = 0x44;
/// Bytes of the pre-header; the header follows it.
pub const PRE_HEADER_LEN: u64 = 0x48;
/// Bytes of a version 0 header.
pub const HEADER0_LEN: u64 = 0x15c;
/// The smallest version 1 header (`VDIHEADER1`).
pub const HEADER1_LEN: u32 = 0x180;
/// Bytes read for the header at open: the pre-header and the largest
/// header this reader interprets.
pub const READ_LEN: usize = 0x200;
/// Smallest and largest block sizes (a power of two): one sector to 1 GiB.
pub const BLOCK_SIZES: std::ops::RangeInclusive<u32> = 512..=(1 << 30);

/// What a VDI image is (`u32Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageType {
    /// 1: dynamically growing base image (VirtualBox's "normal").
    Normal,
    /// 2: preallocated base image.
    Fixed,
    /// 3: the undo image of VirtualBox 1.x (not read).
    Undo,
    /// 4: differencing image over the parent its `uuidLinkage` names.
    Diff,
}

impl ImageType {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => ImageType::Normal,
            2 => ImageType::Fixed,
            3 => ImageType::Undo,
            4 => ImageType::Diff,
            _ => return None,
        })
    }

    /// VirtualBox's name (`normal`, `fixed`, `undo`, `diff`).
    pub fn as_str(self) -> &'static str {
        match self {
            ImageType::Normal => "normal",
            ImageType::Fixed => "fixed",
            ImageType::Undo => "undo",
            ImageType::Diff => "diff",
        }
    }

    /// The subformat `info` shows (`dynamic`, `fixed`, `undo`, `differencing`).
    pub fn subformat(self) -> &'static str {
        match self {
            ImageType::Normal => "dynamic",
            ImageType::Fixed => "fixed",
            ImageType::Undo => "undo",
            ImageType::Diff => "differencing",
        }
    }
}

/// The header fields of any version, as the reader uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The pre-header's text, up to its first NUL or newline.
    pub file_info: String,
    /// Major version (0 or 1).
    pub major: u16,
    /// Minor version.
    pub minor: u16,
    /// `cbHeader` (version 1; the fixed size for version 0).
    pub header_size: u32,
    /// `u32Type`.
    pub image_type: ImageType,
    /// `fFlags`.
    pub flags: u32,
    /// `szComment`, up to its first NUL.
    pub comment: String,
    /// `offBlocks`: where the block map starts.
    pub offset_blocks: u64,
    /// `offData`: where block 0 of the data area starts.
    pub offset_data: u64,
    /// `LegacyGeometry.cbSector` (0 in some images: 512).
    pub sector_size: u32,
    /// `cbDisk`: the virtual size in bytes.
    pub disk_size: u64,
    /// `cbBlock`: bytes of guest data per block.
    pub block_size: u32,
    /// `cbBlockExtra`: bytes stored before each block's data.
    pub block_extra: u32,
    /// `cBlocks`: entries of the block map.
    pub blocks: u32,
    /// `cBlocksAllocated`.
    pub blocks_allocated: u32,
    /// `uuidCreate`: the image's identity.
    pub uuid: Guid,
    /// `uuidModify`: changed on every modification.
    pub modify_uuid: Guid,
    /// `uuidLinkage`: the parent's `uuidCreate` (differencing images).
    pub parent_uuid: Guid,
    /// `uuidParentModify`: the parent's `uuidModify` when this image was
    /// made (version 1).
    pub parent_modify_uuid: Guid,
}

fn corrupt_at(field: &'static str, value: u64, expected: impl Into<String>, at: u64) -> Error {
    Error::bad_value(Format::Vdi, field, value, expected).at(at)
}

fn text_to_nul(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or_default()).into_owned()
}

impl Header {
    /// Reads and checks the header of `file`.
    pub fn read(file: &ImageFile) -> Result<Header> {
        let b = file.read_up_to(0, READ_LEN)?;
        Self::parse(&b, file.len()).map_err(|e| e.in_file(file.path()))
    }

    /// Parses the first `READ_LEN` bytes (fewer when the file is shorter)
    /// of a file of `file_len` bytes.
    pub fn parse(b: &[u8], file_len: u64) -> Result<Header> {
        let u32_at = |o: usize| le_u32(b, o).unwrap_or(0);
        let need = |n: u64| -> Result<()> {
            if (b.len() as u64) < n {
                return Err(Error::corrupt(
                    Format::Vdi,
                    Detail::Truncated {
                        what: "VDI header".into(),
                        needed: n,
                        available: b.len() as u64,
                    },
                )
                .at(0));
            }
            Ok(())
        };
        need(PRE_HEADER_LEN)?;
        if !has_at(b, SIGNATURE_OFFSET as usize, &SIGNATURE.to_le_bytes()) {
            return Err(Error::not_this_format(
                Format::Vdi,
                Detail::BadSignature {
                    what: "VDI signature",
                    expected: format!("{SIGNATURE:#010x}"),
                    found: format!("{:#010x}", u32_at(SIGNATURE_OFFSET as usize)),
                },
            )
            .at(SIGNATURE_OFFSET));
        }
        let info = b.get(..64).unwrap_or_default();
        let info_end = info
            .iter()
            .position(|&c| c == 0 || c == b'\n')
            .unwrap_or(info.len());
        let file_info = String::from_utf8_lossy(info.get(..info_end).unwrap_or_default())
            .trim()
            .to_owned();
        let version = u32_at(VERSION_OFFSET as usize);
        let (major, minor) = ((version >> 16) as u16, (version & 0xffff) as u16);
        // Field offsets differ by version; `h` is where the header starts.
        let h = PRE_HEADER_LEN as usize;
        let (header_size, f) = match major {
            0 => {
                need(PRE_HEADER_LEN + HEADER0_LEN)?;
                (HEADER0_LEN as u32, V0)
            }
            1 => {
                need(PRE_HEADER_LEN + 4)?;
                let size = u32_at(h);
                if size < HEADER1_LEN {
                    return Err(corrupt_at(
                        "cbHeader",
                        size.into(),
                        format!("at least {HEADER1_LEN:#x} for version 1.{minor}"),
                        PRE_HEADER_LEN,
                    ));
                }
                need(PRE_HEADER_LEN + u64::from(HEADER1_LEN))?;
                (size, V1)
            }
            _ => {
                return Err(Error::unsupported(
                    Format::Vdi,
                    format!("VDI header version {major}.{minor} (versions 0 and 1.x are read)"),
                )
                .at(VERSION_OFFSET))
            }
        };
        let at = |o: usize| h + o;
        let raw_type = u32_at(at(f.image_type));
        let image_type = ImageType::from_u32(raw_type).ok_or_else(|| {
            corrupt_at(
                "u32Type",
                raw_type.into(),
                "1 (normal), 2 (fixed), 3 (undo) or 4 (diff)",
                at(f.image_type) as u64,
            )
        })?;
        let comment = text_to_nul(
            b.get(at(f.comment)..at(f.comment) + 256)
                .unwrap_or_default(),
        );
        let blocks = u32_at(at(f.blocks));
        let (offset_blocks, offset_data, block_extra) = match major {
            0 => {
                let blocks_at = PRE_HEADER_LEN + HEADER0_LEN;
                (blocks_at, blocks_at + u64::from(blocks) * 4, 0)
            }
            _ => (
                u64::from(u32_at(at(V1_OFF_BLOCKS))),
                u64::from(u32_at(at(V1_OFF_DATA))),
                u32_at(at(V1_BLOCK_EXTRA)),
            ),
        };
        let header = Header {
            file_info,
            major,
            minor,
            header_size,
            image_type,
            flags: u32_at(at(f.flags)),
            comment,
            offset_blocks,
            offset_data,
            sector_size: u32_at(at(f.geometry) + 12),
            disk_size: le_u64(b, at(f.disk_size)).unwrap_or(0),
            block_size: u32_at(at(f.block_size)),
            block_extra,
            blocks,
            blocks_allocated: u32_at(at(f.blocks) + 4),
            uuid: Guid::read_le(b, at(f.uuids)),
            modify_uuid: Guid::read_le(b, at(f.uuids) + 16),
            parent_uuid: Guid::read_le(b, at(f.uuids) + 32),
            parent_modify_uuid: if major == 0 {
                Guid::NIL
            } else {
                Guid::read_le(b, at(f.uuids) + 48)
            },
        };
        header.check(&f, file_len)?;
        Ok(header)
    }

    fn check(&self, f: &Fields, file_len: u64) -> Result<()> {
        let at = |o: usize| PRE_HEADER_LEN + o as u64;
        if !self.block_size.is_power_of_two() || !BLOCK_SIZES.contains(&self.block_size) {
            return Err(corrupt_at(
                "cbBlock",
                self.block_size.into(),
                "a power of two from 512 bytes to 1 GiB",
                at(f.block_size),
            ));
        }
        if !self.block_extra.is_multiple_of(512) || self.block_extra > (1 << 30) {
            return Err(corrupt_at(
                "cbBlockExtra",
                self.block_extra.into(),
                "a multiple of 512 bytes, at most 1 GiB",
                at(V1_BLOCK_EXTRA),
            ));
        }
        if !matches!(self.sector_size, 0 | 512 | 4096) {
            return Err(corrupt_at(
                "LegacyGeometry.cbSector",
                self.sector_size.into(),
                "512 (or 4096; 0 is read as 512)",
                at(f.geometry) + 12,
            ));
        }
        let needed = self.disk_size.div_ceil(u64::from(self.block_size));
        if u64::from(self.blocks) < needed {
            return Err(corrupt_at(
                "cBlocks",
                self.blocks.into(),
                format!(
                    "at least {needed} blocks of {} bytes for a disk of {} bytes",
                    self.block_size, self.disk_size
                ),
                at(f.blocks),
            ));
        }
        if self.blocks_allocated > self.blocks {
            return Err(corrupt_at(
                "cBlocksAllocated",
                self.blocks_allocated.into(),
                format!("at most cBlocks ({})", self.blocks),
                at(f.blocks) + 4,
            ));
        }
        let map_end = self.offset_blocks + u64::from(self.blocks) * 4;
        if self.offset_blocks < PRE_HEADER_LEN + u64::from(self.header_size) || map_end > file_len {
            return Err(Error::out_of_range(
                Format::Vdi,
                "image file (block map)",
                self.offset_blocks,
                u64::from(self.blocks) * 4,
                file_len,
            ));
        }
        if self.image_type == ImageType::Undo {
            return Err(Error::unsupported(
                Format::Vdi,
                "VDI undo images (type 3, VirtualBox 1.x) are not read",
            )
            .at(at(f.image_type)));
        }
        if self.image_type == ImageType::Diff && self.parent_uuid.is_nil() {
            return Err(Error::corrupt(
                Format::Vdi,
                Detail::Invalid("differencing image with a nil parent UUID (uuidLinkage)".into()),
            )
            .at(at(f.uuids) + 32));
        }
        Ok(())
    }

    /// The logical sector size (512 when the header says 0).
    pub fn logical_sector_size(&self) -> u32 {
        if self.sector_size == 0 {
            512
        } else {
            self.sector_size
        }
    }

    /// Where the UUID of the image (`uuidCreate`) is, in the file, for a
    /// header of `major` version.
    pub fn uuid_offset(major: u16) -> u64 {
        PRE_HEADER_LEN + if major == 0 { V0 } else { V1 }.uuids as u64
    }
}

/// Offsets of fields from the start of the header (after the pre-header).
struct Fields {
    image_type: usize,
    flags: usize,
    comment: usize,
    geometry: usize,
    disk_size: usize,
    block_size: usize,
    /// `cBlocks`; `cBlocksAllocated` follows.
    blocks: usize,
    /// `uuidCreate`; `uuidModify`, `uuidLinkage` (and `uuidParentModify`) follow.
    uuids: usize,
}

const V0: Fields = Fields {
    image_type: 0x00,
    flags: 0x04,
    comment: 0x08,
    geometry: 0x108,
    disk_size: 0x118,
    block_size: 0x120,
    blocks: 0x124,
    uuids: 0x12c,
};

const V1: Fields = Fields {
    image_type: 0x04,
    flags: 0x08,
    comment: 0x0c,
    geometry: 0x114,
    disk_size: 0x128,
    block_size: 0x130,
    blocks: 0x138,
    uuids: 0x140,
};
const V1_OFF_BLOCKS: usize = 0x10c;
const V1_OFF_DATA: usize = 0x110;
const V1_BLOCK_EXTRA: usize = 0x134;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// The first 0x200 bytes of `qemu-img create -f vdi t.vdi 4M`
    /// (qemu 10.0), its UUIDs set to known values.
    fn golden() -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[..35].copy_from_slice(b"<<< QEMU VM Virtual Disk Image >>>\n");
        b[0x40..0x44].copy_from_slice(&SIGNATURE.to_le_bytes());
        b[0x44..0x48].copy_from_slice(&0x0001_0001u32.to_le_bytes());
        let put = |b: &mut Vec<u8>, o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
        put(&mut b, 0x48, 0x180);
        put(&mut b, 0x4c, 1);
        put(&mut b, 0x154, 0x200);
        put(&mut b, 0x158, 0x400);
        put(&mut b, 0x168, 512);
        b[0x170..0x178].copy_from_slice(&(4u64 << 20).to_le_bytes());
        put(&mut b, 0x178, 1 << 20);
        put(&mut b, 0x180, 4);
        b[0x188] = 0xe4;
        b[0x1a8..0x1b8].fill(0);
        b[0x200..0x210].fill(0xff);
        b
    }

    #[test]
    fn golden_header() {
        let b = golden();
        let h = Header::parse(&b[..READ_LEN], b.len() as u64).unwrap();
        assert_eq!((h.major, h.minor, h.header_size), (1, 1, 0x180));
        assert_eq!(h.file_info, "<<< QEMU VM Virtual Disk Image >>>");
        assert_eq!(h.image_type, ImageType::Normal);
        assert_eq!((h.offset_blocks, h.offset_data), (0x200, 0x400));
        assert_eq!((h.disk_size, h.block_size, h.blocks), (4 << 20, 1 << 20, 4));
        assert_eq!(h.logical_sector_size(), 512);
        assert_eq!(h.uuid.0[0], 0xe4);
        assert_eq!(Header::uuid_offset(1), 0x188);
    }

    fn err(mutate: impl Fn(&mut Vec<u8>)) -> Error {
        let mut b = golden();
        mutate(&mut b);
        let len = b.len() as u64;
        Header::parse(&b[..READ_LEN], len).unwrap_err()
    }

    #[test]
    fn one_field_changes_give_one_exact_error() {
        let e = err(|b| b[0x40] = 0);
        assert_eq!(
            (e.kind(), e.offset()),
            (ErrorKind::NotThisFormat, Some(0x40))
        );
        let e = err(|b| b[0x46] = 2);
        assert_eq!((e.kind(), e.offset()), (ErrorKind::Unsupported, Some(0x44)));
        let e = err(|b| b[0x48] = 0x10);
        assert_eq!((e.kind(), e.offset()), (ErrorKind::Corrupt, Some(0x48)));
        let e = err(|b| b[0x4c] = 9);
        assert_eq!((e.kind(), e.offset()), (ErrorKind::Corrupt, Some(0x4c)));
        assert!(e.to_string().contains("u32Type is 9"), "{e}");
        let e = err(|b| b[0x4c] = 3);
        assert_eq!((e.kind(), e.offset()), (ErrorKind::Unsupported, Some(0x4c)));
        let e = err(|b| b[0x4c] = 4);
        assert_eq!((e.kind(), e.offset()), (ErrorKind::Corrupt, Some(0x1a8)));
        let e = err(|b| b[0x178..0x17c].copy_from_slice(&3000u32.to_le_bytes()));
        assert_eq!((e.kind(), e.offset()), (ErrorKind::Corrupt, Some(0x178)));
        let e = err(|b| b[0x168..0x16c].copy_from_slice(&1000u32.to_le_bytes()));
        assert_eq!((e.kind(), e.offset()), (ErrorKind::Corrupt, Some(0x168)));
        let e = err(|b| b[0x180] = 3);
        assert_eq!((e.kind(), e.offset()), (ErrorKind::Corrupt, Some(0x180)));
        let e = err(|b| b[0x184] = 5);
        assert_eq!((e.kind(), e.offset()), (ErrorKind::Corrupt, Some(0x184)));
        // A block map of 2^32 - 1 entries does not fit in the file.
        let e = err(|b| b[0x180..0x184].fill(0xff));
        assert_eq!(
            (e.kind(), e.offset()),
            (ErrorKind::OutOfBounds, Some(0x200))
        );
        let e = Header::parse(&golden()[..0x100], 0x100).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains("needs 456 bytes"), "{e}");
    }
}
