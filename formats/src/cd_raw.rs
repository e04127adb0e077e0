//! CD images of raw 2,352-byte sectors (`.bin` of a `.bin`/`.cue` pair,
//! "MODE1/2352" or "MODE2/2352" data tracks), read as the 2,048 bytes of
//! user data of each sector: the ISO 9660 volume the disc holds.
//!
//! A raw sector (ECMA-130, "Yellow Book") is a 12-byte sync pattern
//! (`00 FF×10 00`), a 4-byte header (minute, second, frame in BCD, and the
//! mode), then in mode 1 the 2,048 bytes of user data at byte 16 and 288
//! bytes of EDC/ECC; in mode 2 form 1 (CD-ROM XA) an 8-byte subheader and
//! the user data at byte 24. The layout is taken from sector 16, which
//! must hold an ISO 9660 volume descriptor (`CD001`) there; every sector
//! of the track is read with that layout (EDC/ECC are not checked).

use std::sync::Arc;

use crate::block_device::{check_range, uniform_map, BlockDevice, Extent, ExtentKind};
use crate::bytes::has_at;
use crate::error::{Detail, Error, ErrorKind, Format, Result};
use crate::image::{DiskImage, ImageInfo, WarningKind, Warnings};
use crate::image_file::ImageFile;
use crate::options::OpenOptions;
use crate::pieces::pieces;

/// The 12-byte sync pattern at the start of every raw CD sector.
pub const SYNC: [u8; 12] = [
    0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,
];
/// Bytes of one raw CD sector.
pub const RAW_SECTOR: u64 = 2352;
/// Bytes of user data in a mode 1 or mode 2 form 1 sector.
pub const USER_DATA: u64 = 2048;
/// Where the user data starts in a mode 1 sector.
pub const MODE1_DATA: u64 = 16;
/// Where the user data starts in a mode 2 form 1 sector (after the subheader).
pub const MODE2_DATA: u64 = 24;
/// The sector holding the first volume descriptor.
const VRS_SECTOR: u64 = 16;
/// Bytes read from sector 16 to find the layout: its header and the
/// start of its user data in either mode.
pub const PROBE_LEN: usize = 32;
/// Offset of those bytes in the file.
pub const PROBE_AT: u64 = VRS_SECTOR * RAW_SECTOR;

/// Where the user data is in each raw sector, from the `PROBE_LEN` bytes
/// at [`PROBE_AT`] (sector 16): `Some(16)` for mode 1, `Some(24)` for mode
/// 2 form 1, `None` when sector 16 is not a raw sector holding `CD001`.
pub fn user_data_offset(sector16: &[u8]) -> Option<u64> {
    if !has_at(sector16, 0, &SYNC) {
        return None;
    }
    let mode = sector16.get(15).copied()?;
    let data = match mode {
        1 => MODE1_DATA,
        2 => MODE2_DATA,
        _ => return None,
    };
    has_at(sector16, data as usize + 1, b"CD001").then_some(data)
}

/// A raw CD track read as its user data, 2,048 bytes a sector.
#[derive(Debug)]
pub struct RawCdImage {
    file: ImageFile,
    data_offset: u64,
    size: u64,
}

impl BlockDevice for RawCdImage {
    fn size(&self) -> u64 {
        self.size
    }
    fn sector_size(&self) -> u32 {
        2048
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(Format::Iso, offset, buf.len() as u64, self.size)?;
        for p in pieces(offset, buf.len(), USER_DATA) {
            let at = p.index * RAW_SECTOR + self.data_offset + p.within;
            self.file
                .read_exact_at(p.of_mut(buf), at)
                .map_err(|e| e.in_format(Format::Iso))?;
        }
        Ok(())
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        uniform_map(Format::Iso, self.size, offset, len, ExtentKind::Data)
    }
}

/// Opens `file` as a raw CD track whose user data starts at byte
/// `data_offset` of each sector (see [`user_data_offset`]). A file that
/// is not a whole number of raw sectors is a warning (the partial sector
/// is left out; `strict` refuses).
pub fn open(file: ImageFile, data_offset: u64, options: &OpenOptions) -> Result<DiskImage> {
    let path = file.path().to_path_buf();
    let len = file.len();
    let mut w = Warnings::new(options);
    if len % RAW_SECTOR != 0 {
        w.tolerate(
            WarningKind::Other,
            Error::bad_value(
                Format::Iso,
                "raw CD image size",
                len,
                format!(
                    "a multiple of the 2,352-byte raw sector; the last {} bytes are left out",
                    len % RAW_SECTOR
                ),
            )
            .at(len - len % RAW_SECTOR)
            .in_file(&path),
        )?;
    }
    let sectors = len / RAW_SECTOR;
    let device = RawCdImage {
        file,
        data_offset,
        size: sectors * USER_DATA,
    };
    // The primary volume descriptor's volume space must fit, as for an ISO.
    let mut pvd = [0u8; 2048];
    device.read_at(&mut pvd, VRS_SECTOR * USER_DATA)?;
    let mut volume_id = None;
    if pvd.first() == Some(&1) {
        let blocks = u64::from(crate::bytes::le_u32(&pvd, 80).unwrap_or(0));
        let block = u64::from(crate::bytes::le_u16(&pvd, 128).unwrap_or(0));
        let claimed = blocks * block;
        if claimed > device.size {
            return Err(Error::new(
                ErrorKind::OutOfBounds,
                Format::Iso,
                Detail::Truncated {
                    what: format!(
                        "volume space of {claimed} bytes claimed by the primary volume descriptor (truncated image?)"
                    ),
                    needed: claimed,
                    available: device.size,
                },
            )
            .at(PROBE_AT + data_offset)
            .in_file(&path));
        }
        volume_id = Some(
            String::from_utf8_lossy(pvd.get(40..72).unwrap_or_default())
                .trim_end_matches([' ', '\0'])
                .to_owned(),
        );
    }
    let mode = if data_offset == MODE1_DATA {
        "MODE1/2352"
    } else {
        "MODE2/2352"
    };
    let mut info = ImageInfo::new(&path, Format::Iso, device.size, 2048);
    info.subformat = Some(format!("ISO 9660 in raw {mode} sectors"));
    info.property("raw_sector_size", RAW_SECTOR);
    info.property("user_data_offset", data_offset);
    info.property("raw_sectors", sectors);
    if let Some(v) = volume_id.filter(|v| !v.is_empty()) {
        info.property("volume_id", v);
    }
    info.warnings = w.into_vec();
    Ok(DiskImage::new(Arc::new(device), info))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` raw sectors of mode `mode`, user data byte `i` of sector `s` =
    /// `(s + i) as u8`, a PVD claiming `blocks` blocks in sector 16.
    fn track(n: u64, mode: u8, blocks: u32) -> Vec<u8> {
        let data = if mode == 1 { MODE1_DATA } else { MODE2_DATA } as usize;
        let mut d = Vec::new();
        for s in 0..n {
            let mut sector = vec![0u8; RAW_SECTOR as usize];
            sector[..12].copy_from_slice(&SYNC);
            sector[15] = mode;
            for i in 0..2048 {
                sector[data + i] = (s as usize + i) as u8;
            }
            if s == 16 {
                sector[data] = 1;
                sector[data + 1..data + 6].copy_from_slice(b"CD001");
                sector[data + 80..data + 84].copy_from_slice(&blocks.to_le_bytes());
                sector[data + 128..data + 130].copy_from_slice(&2048u16.to_le_bytes());
            }
            d.extend(sector);
        }
        d
    }

    fn open_bytes(d: Vec<u8>, strict: bool) -> Result<DiskImage> {
        let off = user_data_offset(&d[PROBE_AT as usize..PROBE_AT as usize + PROBE_LEN]);
        let options = OpenOptions {
            strict,
            ..OpenOptions::default()
        };
        open(
            ImageFile::from_bytes("t.bin", d),
            off.expect("raw CD"),
            &options,
        )
    }

    #[test]
    fn user_data_is_read_across_sectors_in_both_modes() {
        for mode in [1, 2] {
            let img = open_bytes(track(20, mode, 20), false).unwrap();
            assert_eq!((img.size(), img.sector_size()), (20 * 2048, 2048));
            let mut buf = vec![0u8; 10];
            img.read_at(&mut buf, 3 * 2048 - 5).unwrap();
            let want: Vec<u8> = (2043..2048)
                .map(|i| (2 + i) as u8)
                .chain((0..5).map(|i| (3 + i) as u8))
                .collect();
            assert_eq!(buf, want, "mode {mode}");
            assert!(img.read_at(&mut buf, 20 * 2048 - 5).is_err());
        }
    }

    #[test]
    fn truncation_and_partial_sectors() {
        let e = open_bytes(track(20, 1, 40), false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfBounds);
        let mut d = track(20, 1, 20);
        d.extend([0u8; 100]);
        let img = open_bytes(d.clone(), false).unwrap();
        assert_eq!(img.info().warnings.len(), 1);
        assert!(open_bytes(d, true).is_err());
        let mut d = track(20, 1, 20);
        d[PROBE_AT as usize + 15] = 3;
        assert_eq!(
            user_data_offset(&d[PROBE_AT as usize..PROBE_AT as usize + PROBE_LEN]),
            None
        );
    }
}
