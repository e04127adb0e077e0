//! The volume descriptor set (ECMA-119 8): primary, supplementary (Joliet
//! by its escape sequences), boot record (El Torito) and terminator.

use diskimage_formats::bytes::{le_u16, le_u32};
use diskimage_formats::BlockDevice;

use crate::error::{Error, FsName, Result};

const FS: FsName = FsName::Iso9660;
/// Descriptors are 2048-byte sectors from sector 16, whatever the block size.
pub const SECTOR: u64 = 2048;
/// Most descriptors read before the terminator (the set is a handful long).
pub const MAX_DESCRIPTORS: u64 = 64;

/// What the descriptor set says.
#[derive(Debug, Clone)]
pub struct Descriptors {
    /// Logical block size from the PVD (512, 1024 or 2048).
    pub block_size: u64,
    /// The primary root directory record (34 bytes), its byte offset.
    pub primary_root: (Vec<u8>, u64),
    /// The Joliet root directory record and its offset, if a Joliet SVD exists.
    pub joliet_root: Option<(Vec<u8>, u64)>,
    /// The primary volume identifier.
    pub volume_id: Option<String>,
    /// The Joliet volume identifier.
    pub joliet_volume_id: Option<String>,
    /// The El Torito boot catalog's sector (2048-byte units), if a boot record names one.
    pub boot_catalog: Option<u64>,
    /// The PVD's modification (else creation) date digits as blkid prints
    /// them as the UUID of an ISO 9660 volume: `YYYY-MM-DD-HH-MM-SS-cc`.
    pub serial: Option<String>,
}

fn date_serial(d: &[u8]) -> Option<String> {
    let pick = |r: std::ops::Range<usize>| {
        d.get(r)
            .filter(|x| x.iter().all(u8::is_ascii_digit) && x.iter().any(|&c| c != b'0'))
    };
    let x = pick(830..846).or_else(|| pick(813..829))?;
    let part = |r: std::ops::Range<usize>| {
        String::from_utf8_lossy(x.get(r).unwrap_or_default()).into_owned()
    };
    let parts = [
        part(0..4),
        part(4..6),
        part(6..8),
        part(8..10),
        part(10..12),
        part(12..14),
        part(14..16),
    ];
    Some(parts.join("-"))
}

fn trimmed(b: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(b)
        .trim_end_matches([' ', '\0'])
        .to_string();
    (!s.is_empty()).then_some(s)
}

fn ucs2(b: &[u8]) -> Option<String> {
    let s = diskimage_formats::bytes::utf16be(b)
        .trim_end_matches([' ', '\0'])
        .to_string();
    (!s.is_empty()).then_some(s)
}

/// Whether an SVD's escape sequences (offset 88, 32 bytes) name Joliet UCS-2
/// level 1, 2 or 3 (`%/@`, `%/C`, `%/E`).
pub fn is_joliet(esc: &[u8]) -> bool {
    esc.windows(3)
        .any(|w| w == b"%/@" || w == b"%/C" || w == b"%/E")
}

/// Reads the descriptor set from sector 16 to the terminator.
pub fn read(device: &dyn BlockDevice) -> Result<Descriptors> {
    let mut primary: Option<Descriptors> = None;
    let mut joliet = None;
    let mut joliet_id = None;
    let mut boot_catalog = None;
    for i in 0..MAX_DESCRIPTORS {
        let off = (16 + i) * SECTOR;
        if off + SECTOR > device.size() {
            break;
        }
        let mut d = vec![0u8; SECTOR as usize];
        device.read_at(&mut d, off)?;
        if d.get(1..6) != Some(&b"CD001"[..]) {
            return Err(
                Error::corrupt(FS, None, "volume descriptor without the CD001 identifier")
                    .at(off + 1),
            );
        }
        let ty = d.first().copied().unwrap_or(0);
        match ty {
            0 if d.get(7..30) == Some(&b"EL TORITO SPECIFICATION"[..]) => {
                boot_catalog = le_u32(&d, 0x47).map(u64::from);
            }
            1 if primary.is_none() => {
                let bs = le_u16(&d, 128).map_or(0, u64::from);
                if !matches!(bs, 512 | 1024 | 2048) {
                    return Err(Error::corrupt(
                        FS,
                        None,
                        format!("logical block size {bs} (512, 1024 or 2048 expected)"),
                    )
                    .at(off + 128));
                }
                primary = Some(Descriptors {
                    block_size: bs,
                    primary_root: (d.get(156..190).unwrap_or_default().to_vec(), off + 156),
                    joliet_root: None,
                    volume_id: trimmed(d.get(40..72).unwrap_or_default()),
                    joliet_volume_id: None,
                    boot_catalog: None,
                    serial: date_serial(&d),
                });
            }
            2 if joliet.is_none() && is_joliet(d.get(88..120).unwrap_or_default()) => {
                joliet = Some((d.get(156..190).unwrap_or_default().to_vec(), off + 156));
                joliet_id = ucs2(d.get(40..72).unwrap_or_default());
            }
            255 => break,
            _ => {}
        }
    }
    let Some(mut p) = primary else {
        return Err(Error::corrupt(FS, None, "no primary volume descriptor").at(16 * SECTOR));
    };
    // A missing terminator is tolerated: the PVD is enough to read the volume.
    p.joliet_root = joliet;
    p.joliet_volume_id = joliet_id;
    p.boot_catalog = boot_catalog;
    Ok(p)
}
