//! The El Torito boot catalog: validation entry, initial/default entry,
//! section headers and section entries (El Torito 1.0, 2.x).

use diskimage_formats::bytes::{le_u16, le_u32};
use diskimage_formats::BlockDevice;

use crate::error::{Error, FsName, Result};

const FS: FsName = FsName::Iso9660;
/// Most catalog bytes read (the catalog is usually one 2048-byte sector).
pub const MAX_CATALOG: u64 = 8 * 2048;
/// Most boot entries listed.
pub const MAX_ENTRIES: usize = 64;

/// One boot entry of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// Platform id: 0 x86 BIOS, 1 PowerPC, 2 Mac, 0xEF EFI.
    pub platform: u8,
    /// Whether the entry is marked bootable (indicator 0x88).
    pub bootable: bool,
    /// Media type: 0 no emulation, 1/2/3 1.2/1.44/2.88 MB floppy, 4 hard disk.
    pub emulation: u8,
    /// Load segment (0 means the BIOS default 0x7C0).
    pub load_segment: u16,
    /// Number of 512-byte virtual sectors loaded.
    pub sector_count: u16,
    /// First sector (2048-byte units) of the boot image.
    pub lba: u32,
}

impl BootEntry {
    /// The platform's name as xorriso prints it.
    pub fn platform_name(&self) -> &'static str {
        match self.platform {
            0 => "BIOS",
            1 => "PPC",
            2 => "Mac",
            0xEF => "UEFI",
            _ => "unknown",
        }
    }

    /// The emulation's name.
    pub fn emulation_name(&self) -> &'static str {
        match self.emulation & 0x0F {
            0 => "none",
            1 => "fd1.2m",
            2 => "fd1.44m",
            3 => "fd2.88m",
            4 => "hd",
            _ => "unknown",
        }
    }

    /// Bytes of the boot image as a reader shows it: the emulated floppy's
    /// size, else the loaded sectors (a no-emulation image can be longer:
    /// the catalog does not record its full size).
    pub fn size(&self) -> u64 {
        match self.emulation & 0x0F {
            1 => 1_228_800,
            2 => 1_474_560,
            3 => 2_949_120,
            _ => u64::from(self.sector_count.max(1)) * 512,
        }
    }

    /// The name in the virtual `[BOOT]` directory, e.g. `1-BIOS-none.img`.
    pub fn file_name(&self, index: usize) -> String {
        format!(
            "{}-{}-{}.img",
            index + 1,
            self.platform_name(),
            self.emulation_name()
        )
    }
}

fn entry(e: &[u8], platform: u8) -> BootEntry {
    BootEntry {
        platform,
        bootable: e.first() == Some(&0x88),
        emulation: e.get(1).copied().unwrap_or(0),
        load_segment: le_u16(e, 2).unwrap_or(0),
        sector_count: le_u16(e, 6).unwrap_or(0),
        lba: le_u32(e, 8).unwrap_or(0),
    }
}

/// Reads the catalog at `sector` (2048-byte units).
pub fn read(device: &dyn BlockDevice, sector: u64) -> Result<Vec<BootEntry>> {
    let off = sector.saturating_mul(2048);
    if off >= device.size() {
        return Err(Error::corrupt(
            FS,
            None,
            "El Torito boot catalog past the end of the volume",
        )
        .at(off));
    }
    let len = (device.size() - off).min(MAX_CATALOG);
    let mut cat = vec![0u8; usize::try_from(len).unwrap_or(0)];
    device.read_at(&mut cat, off)?;
    let v = cat.get(..32).unwrap_or_default();
    if v.first() != Some(&1) || v.get(30..32) != Some(&[0x55u8, 0xAA][..]) {
        return Err(Error::corrupt(
            FS,
            None,
            "El Torito validation entry: bad header or key bytes",
        )
        .at(off));
    }
    let sum = v
        .chunks_exact(2)
        .fold(0u16, |a, c| a.wrapping_add(le_u16(c, 0).unwrap_or(0)));
    if sum != 0 {
        // The words sum to zero when intact; `computed` is the sum found.
        let detail = crate::error::Detail::Checksum {
            what: "El Torito validation entry",
            stored: 0,
            computed: sum.into(),
        };
        return Err(Error::damaged(FS, None, detail).at(off));
    }
    let mut platform = v.get(1).copied().unwrap_or(0);
    let mut out = vec![entry(cat.get(32..64).unwrap_or_default(), platform)];
    let mut pos = 64usize;
    // Section headers (0x90 more follow, 0x91 last), each with its entries.
    while let Some(h) = cat.get(pos..pos + 32) {
        let kind = h.first().copied().unwrap_or(0);
        if kind != 0x90 && kind != 0x91 {
            break;
        }
        platform = h.get(1).copied().unwrap_or(0);
        let n = usize::from(le_u16(h, 2).unwrap_or(0));
        pos += 32;
        let mut seen = 0;
        while seen < n {
            let Some(e) = cat.get(pos..pos + 32) else {
                break;
            };
            pos += 32;
            if e.first() == Some(&0x44) {
                continue; // extension entry
            }
            if out.len() >= MAX_ENTRIES {
                return Ok(out);
            }
            out.push(entry(e, platform));
            seen += 1;
        }
        if kind == 0x91 {
            break;
        }
    }
    Ok(out)
}
