//! The Btrfs superblock (at 64 KiB; mirrors at 64 MiB and 256 GiB).

use diskimage_formats::bytes::{array, le_u16, le_u32, le_u64};
use diskimage_formats::BlockDevice;

use super::FS;
use crate::error::{Error, Result};

/// Where the superblock and its mirrors are.
pub(crate) const OFFSETS: [u64; 3] = [0x1_0000, 0x400_0000, 0x40_0000_0000];
/// Its size.
pub(crate) const SIZE: usize = 4096;
const MAGIC: &[u8; 8] = b"_BHRfS_M";
/// Bytes of the system chunk array.
const SYS_CHUNK_ARRAY_MAX: usize = 2048;

/// Incompat features this reader knows (every one that does not change
/// how trees, items or extents are read, and those it reads).
const KNOWN_INCOMPAT: u64 = 0x1 // mixed_backref
    | 0x2 // default_subvol
    | 0x4 // mixed_groups
    | 0x8 // compress_lzo
    | 0x10 // compress_zstd
    | 0x20 // big_metadata
    | 0x40 // extended_iref
    | 0x80 // raid56 (refused per chunk)
    | 0x100 // skinny_metadata
    | 0x200 // no_holes
    | 0x400 // metadata_uuid
    | 0x800 // raid1c34
    | 0x1_0000; // simple_quota

/// What the reader needs of the superblock.
#[derive(Debug, Clone)]
pub(crate) struct Superblock {
    pub fsid: [u8; 16],
    /// The fsid tree blocks carry (`metadata_uuid` when that feature is on).
    pub meta_fsid: [u8; 16],
    pub root: u64,
    pub root_level: u8,
    pub chunk_root: u64,
    pub chunk_root_level: u8,
    pub root_dir_objectid: u64,
    pub num_devices: u64,
    pub sectorsize: u32,
    pub nodesize: u32,
    pub csum_type: u16,
    pub incompat: u64,
    pub generation: u64,
    /// This device's id and UUID (the superblock's dev_item).
    pub devid: u64,
    pub dev_uuid: [u8; 16],
    pub label: String,
    pub sys_chunk_array: Vec<u8>,
}

impl Superblock {
    /// Parses a superblock read at `offset`; `Err` on a bad magic or a
    /// field out of range; the checksum is checked by the caller.
    pub fn parse(b: &[u8], offset: u64) -> Result<Self> {
        let bad = |what: String| Error::corrupt(FS, None, what).at(offset);
        if b.get(0x40..0x48) != Some(&MAGIC[..]) {
            return Err(bad("no Btrfs superblock magic".into()));
        }
        let u64at = |o| le_u64(b, o).unwrap_or(0);
        let u32at = |o| le_u32(b, o).unwrap_or(0);
        let fsid = array::<16>(b, 0x20).unwrap_or_default();
        let incompat = u64at(0xbc);
        let meta_fsid = if incompat & 0x400 != 0 {
            array::<16>(b, 0x23b).unwrap_or_default()
        } else {
            fsid
        };
        let sectorsize = u32at(0x90);
        let nodesize = u32at(0x94);
        if !(4096..=65536).contains(&sectorsize) || !sectorsize.is_power_of_two() {
            return Err(bad(format!("sector size {sectorsize}")));
        }
        if !(4096..=65536).contains(&nodesize)
            || !nodesize.is_power_of_two()
            || nodesize < sectorsize
        {
            return Err(bad(format!("node size {nodesize}")));
        }
        let sys_len = u32at(0xa0) as usize;
        if sys_len > SYS_CHUNK_ARRAY_MAX {
            return Err(bad(format!("system chunk array of {sys_len} bytes")));
        }
        let sys_chunk_array = b.get(0x32b..0x32b + sys_len).unwrap_or_default().to_vec();
        let label_raw = b.get(0x12b..0x22b).unwrap_or_default();
        let end = label_raw
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(label_raw.len());
        let sb = Superblock {
            fsid,
            meta_fsid,
            root: u64at(0x50),
            root_level: b.get(0xc6).copied().unwrap_or(0),
            chunk_root: u64at(0x58),
            chunk_root_level: b.get(0xc7).copied().unwrap_or(0),
            root_dir_objectid: u64at(0x80),
            num_devices: u64at(0x88),
            sectorsize,
            nodesize,
            csum_type: le_u16(b, 0xc4).unwrap_or(0),
            incompat,
            generation: u64at(0x48),
            devid: u64at(0xc9),
            dev_uuid: array::<16>(b, 0xc9 + 66).unwrap_or_default(),
            label: crate::file_system::encode_name(label_raw.get(..end).unwrap_or_default()),
            sys_chunk_array,
        };
        if sb.root_level > 7 || sb.chunk_root_level > 7 {
            return Err(bad(format!(
                "tree levels {} (root) and {} (chunk) above the maximum of 7",
                sb.root_level, sb.chunk_root_level
            )));
        }
        Ok(sb)
    }

    /// The incompat bits this reader does not know.
    pub fn unknown_incompat(&self) -> u64 {
        self.incompat & !KNOWN_INCOMPAT
    }

    /// The UUID as `btrfs filesystem show` prints it.
    pub fn uuid(&self) -> String {
        diskimage_formats::Guid::from_be_bytes(self.fsid).to_string()
    }
}

/// Whether the crc32c stored at the start of `b` matches the rest (from
/// byte 32 on).
pub(crate) fn crc_ok(b: &[u8]) -> bool {
    let stored = le_u32(b, 0);
    let body = b.get(32..).unwrap_or_default();
    stored == Some(diskimage_formats::crc32c::update(0, body))
}

/// Reads the primary superblock, or the first good mirror when the
/// primary is bad (a warning in `warnings`; strict mode refuses).
pub(crate) fn read(
    device: &dyn BlockDevice,
    strict: bool,
    warnings: &mut Vec<String>,
) -> Result<Superblock> {
    let mut first_err = None;
    for (i, &off) in OFFSETS.iter().enumerate() {
        if off + SIZE as u64 > device.size() {
            break;
        }
        let mut b = vec![0u8; SIZE];
        device.read_at(&mut b, off)?;
        let parsed = Superblock::parse(&b, off).and_then(|sb| {
            if sb.csum_type == 0 && !crc_ok(&b) {
                Err(Error::corrupt(FS, None, "superblock checksum mismatch").at(off))
            } else {
                Ok(sb)
            }
        });
        match parsed {
            Ok(sb) => {
                if i > 0 {
                    let why = first_err
                        .as_ref()
                        .map_or_else(String::new, |e: &Error| format!(" ({e})"));
                    let w =
                        format!("the primary superblock is bad{why}; read the mirror at {off:#x}");
                    if strict {
                        return Err(Error::corrupt(FS, None, w).at(OFFSETS[0]));
                    }
                    warnings.push(w);
                }
                return Ok(sb);
            }
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
    }
    Err(first_err.unwrap_or_else(|| {
        Error::corrupt(
            FS,
            None,
            format!("volume of {} bytes holds no superblock", device.size()),
        )
    }))
}
