//! Optical-disc images (ISO 9660 / CDFS and UDF) as a device with
//! 2,048-byte sectors.
//!
//! Opening checks what Windows' `OpenVirtualDisk` checks for ISO files,
//! each failure with its own error in the terms of ISO 9660 (ECMA-119) and
//! ECMA-167: the size is a whole number of 2,048-byte sectors; it holds at
//! least the 16 sectors of the system area and one volume descriptor
//! (34,816 bytes); and the volume recognition sequence from sector 16
//! (byte 0x8000) holds a `CD001` (ISO 9660) or `NSR02`/`NSR03` (UDF)
//! descriptor. One more check catches truncated copies: the volume space
//! the primary descriptor claims must fit in the file.
//!
//! A UDF file system written with blocks larger than 2,048 bytes (by
//! `mkudffs --blocksize=4096`, or macOS on a disk) records one descriptor
//! of its recognition sequence per block: `BEA01` at 0x8000, `NSR02` at
//! 0x9000, `TEA01` at 0xA000. That is a disk holding UDF, not an optical
//! disc: [`vrs_step`] tells it apart, and the probe opens it as raw.
use std::path::Path;
use std::sync::Arc;

use crate::block_device::{check_range, uniform_map, BlockDevice, Extent, ExtentKind};
use crate::error::{hex_preview, Detail, Error, ErrorKind, Format, Result};
use crate::image::{DiskImage, ImageInfo};
use crate::image_file::ImageFile;

/// Bytes in one optical-disc sector.
pub const SECTOR: u64 = 2048;
/// The smallest ISO image: the 16-sector system area and one volume
/// descriptor (17 sectors; `OpenVirtualDisk` refuses smaller ones too).
pub const MIN_SIZE: u64 = 34_816;
/// The sector where the volume recognition sequence starts.
pub const VRS_START_SECTOR: u64 = 16;
/// How many descriptors of the recognition sequence are read at most.
pub const MAX_DESCRIPTORS: u64 = 64;

/// Identifiers a volume recognition sequence may hold (ECMA-119, ECMA-167).
const KNOWN_IDS: [&[u8; 5]; 7] = [
    b"CD001", b"BEA01", b"NSR02", b"NSR03", b"TEA01", b"BOOT2", b"CDW02",
];

/// What the recognition sequence holds, as far as `info` shows it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IsoSummary {
    /// A `CD001` descriptor was found.
    pub iso9660: bool,
    /// An `NSR02`/`NSR03` descriptor was found.
    pub udf: bool,
    /// A supplementary descriptor with a Joliet escape sequence.
    pub joliet: bool,
    /// An El Torito boot record.
    pub el_torito: bool,
    /// The primary descriptor's volume identifier.
    pub volume_id: Option<String>,
    /// The primary descriptor's system identifier.
    pub system_id: Option<String>,
    /// The volume space the primary descriptor claims, in bytes.
    pub volume_bytes: Option<u64>,
}

/// An ISO image: its file, read with 2,048-byte sectors.
#[derive(Debug)]
pub struct IsoImage {
    file: ImageFile,
}

impl BlockDevice for IsoImage {
    fn size(&self) -> u64 {
        self.file.len()
    }
    fn sector_size(&self) -> u32 {
        2048
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(Format::Iso, offset, buf.len() as u64, self.size())?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| e.in_format(Format::Iso))
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        uniform_map(Format::Iso, self.size(), offset, len, ExtentKind::Data)
    }
}

/// Whether the bytes at 0x8000.. (sector 16) start a recognition sequence: a quick probe.
pub fn looks_like_iso(sector16: &[u8]) -> bool {
    sector16
        .get(1..6)
        .is_some_and(|id| KNOWN_IDS.iter().any(|k| k.as_slice() == id))
}

/// Byte offset of the volume recognition sequence (sector 16 of 2,048 bytes).
pub const VRS_OFFSET: u64 = VRS_START_SECTOR * SECTOR;
/// Bytes from [`VRS_OFFSET`] that [`vrs_step`] looks at: room for the
/// first two descriptors at every step it tries.
pub const VRS_WINDOW: usize = 0x8000;
/// Descriptor steps a recognition sequence is tried at: 2,048 bytes (an
/// optical disc, or UDF with blocks of 2,048 bytes or less), then the
/// larger UDF block sizes whose second descriptor falls in [`VRS_WINDOW`].
pub const VRS_STEPS: [usize; 4] = [2048, 4096, 8192, 16384];

/// The identifiers of the recognition sequence in `vrs` (the bytes from
/// [`VRS_OFFSET`]) read at `step`-byte steps, up to the first descriptor
/// that is not one of a sequence, each with its offset in the file.
pub fn vrs_ids(vrs: &[u8], step: usize) -> Vec<(u64, [u8; 5])> {
    let mut ids = Vec::new();
    let mut at = 0usize;
    while let Some(id) = vrs.get(at + 1..at + 6) {
        let Some(known) = KNOWN_IDS.iter().find(|k| k.as_slice() == id) else {
            break;
        };
        ids.push((VRS_OFFSET + at as u64, **known));
        at += step.max(1);
    }
    ids
}

/// The step at which the recognition sequence in `vrs` (the bytes from
/// [`VRS_OFFSET`]) holds a `CD001`, `NSR02` or `NSR03` descriptor: 2,048
/// for an optical disc, a larger UDF block size for a disk holding UDF;
/// `None` when no step finds one.
pub fn vrs_step(vrs: &[u8]) -> Option<usize> {
    VRS_STEPS.into_iter().find(|&step| {
        vrs_ids(vrs, step)
            .iter()
            .any(|(_, id)| matches!(id, b"CD001" | b"NSR02" | b"NSR03"))
    })
}

/// "BEA01 at 0x8000, NSR02 at 0x9000" for an error message.
fn describe_ids(ids: &[(u64, [u8; 5])]) -> String {
    ids.iter()
        .map(|(at, id)| format!("{} at {at:#x}", String::from_utf8_lossy(id)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn text(bytes: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(bytes)
        .trim_end_matches([' ', '\0'])
        .to_string();
    (!s.is_empty()).then_some(s)
}

fn iso_err(path: &Path, offset: u64, detail: Detail) -> Error {
    Error::corrupt(Format::Iso, detail).at(offset).in_file(path)
}

/// Reads the recognition sequence and checks the `OpenVirtualDisk` rules.
pub fn summarize(file: &ImageFile) -> Result<IsoSummary> {
    let path = file.path();
    let len = file.len();
    if len % SECTOR != 0 {
        return Err(iso_err(
            path,
            0,
            Detail::BadValue {
                field: "file size",
                value: len,
                expected: format!(
                    "a multiple of the 2,048-byte ISO 9660 sector ({} {} past the last whole sector)",
                    len % SECTOR,
                    if len % SECTOR == 1 { "byte" } else { "bytes" }
                ),
            },
        ));
    }
    if len < MIN_SIZE {
        return Err(iso_err(
            path,
            0,
            Detail::BadValue {
                field: "file size",
                value: len,
                expected: format!(
                    "at least {MIN_SIZE} bytes: the 16-sector ISO 9660 system area \
                     and one volume descriptor"
                ),
            },
        ));
    }
    let mut summary = IsoSummary::default();
    let mut sector = [0u8; 2048];
    let last = (len / SECTOR).min(VRS_START_SECTOR + MAX_DESCRIPTORS);
    for n in VRS_START_SECTOR..last {
        let off = n * SECTOR;
        file.read_exact_at(&mut sector, off)
            .map_err(|e| e.in_format(Format::Iso))?;
        let id = sector.get(1..6).unwrap_or_default();
        let kind = sector[0];
        match id {
            b"CD001" => {
                summary.iso9660 = true;
                match kind {
                    0 if sector.get(7..30) == Some(b"EL TORITO SPECIFICATION".as_slice()) => {
                        summary.el_torito = true;
                    }
                    1 if summary.volume_id.is_none() => {
                        summary.system_id = text(&sector[8..40]);
                        summary.volume_id = text(&sector[40..72]);
                        let blocks =
                            u32::from_le_bytes([sector[80], sector[81], sector[82], sector[83]]);
                        let block_size = u16::from_le_bytes([sector[128], sector[129]]);
                        summary.volume_bytes = Some(u64::from(blocks) * u64::from(block_size));
                    }
                    2 if matches!(sector.get(88..91), Some(b"%/@" | b"%/C" | b"%/E")) => {
                        summary.joliet = true;
                    }
                    255 => {}
                    _ => {}
                }
            }
            b"NSR02" | b"NSR03" => summary.udf = true,
            _ if KNOWN_IDS.iter().any(|k| k.as_slice() == id) => {}
            _ => break,
        }
    }
    if !summary.iso9660 && !summary.udf {
        return Err(no_volume_descriptor(file)?);
    }
    if let Some(vol) = summary.volume_bytes.filter(|&v| v > len) {
        return Err(Error::new(
            ErrorKind::OutOfBounds,
            Format::Iso,
            Detail::Truncated {
                what: format!("volume space of {vol} bytes claimed by the primary volume descriptor (truncated image?)"),
                needed: vol,
                available: len,
            },
        )
        .at(VRS_START_SECTOR * SECTOR)
        .in_file(path));
    }
    Ok(summary)
}

/// The error for a recognition sequence without a `CD001` or `NSR`
/// descriptor at 2,048-byte steps: it names what the sequence holds, and
/// a UDF sequence at a larger step (a disk holding UDF, which opens as raw).
fn no_volume_descriptor(file: &ImageFile) -> Result<Error> {
    let path = file.path();
    let vrs = file.read_up_to(VRS_OFFSET, VRS_WINDOW)?;
    if let Some(step) = vrs_step(&vrs).filter(|&s| s as u64 > SECTOR) {
        return Ok(Error::not_this_format(
            Format::Iso,
            Detail::Invalid(format!(
                "the volume recognition sequence is recorded at {step}-byte steps ({}): \
                 a UDF file system with {step}-byte blocks on a disk, not an optical disc \
                 with 2,048-byte sectors; it opens as a raw disk (without --format iso)",
                describe_ids(&vrs_ids(&vrs, step))
            )),
        )
        .at(VRS_OFFSET)
        .in_file(path));
    }
    let ids = vrs_ids(&vrs, SECTOR as usize);
    let found = match ids.last() {
        None => format!(
            "no recognition-sequence identifier there ({})",
            hex_preview(vrs.get(..6).unwrap_or_default())
        ),
        Some(&(last, _)) => {
            let next = last + SECTOR;
            let after = vrs
                .get(usize::try_from(next - VRS_OFFSET).unwrap_or(usize::MAX)..)
                .and_then(|b| b.get(..6))
                .map_or_else(|| "the end of the file".to_owned(), hex_preview);
            format!(
                "only {}, then {after} at {next:#x}, which is no descriptor of a sequence",
                describe_ids(&ids)
            )
        }
    };
    Ok(iso_err(
        path,
        VRS_OFFSET,
        Detail::BadSignature {
            what: "volume recognition sequence from sector 16",
            expected: "a CD001 (ISO 9660) or NSR02/NSR03 (UDF) descriptor at 2,048-byte steps"
                .into(),
            found,
        },
    ))
}

/// Opens `file` as an ISO image.
pub fn open(file: ImageFile) -> Result<DiskImage> {
    let s = summarize(&file)?;
    let mut info = ImageInfo::new(file.path(), Format::Iso, file.len(), 2048);
    info.subformat = Some(
        match (s.iso9660, s.udf) {
            (true, true) => "ISO 9660 + UDF bridge",
            (true, false) => "ISO 9660",
            _ => "UDF",
        }
        .to_owned(),
    );
    if let Some(v) = &s.volume_id {
        info.property("volume_id", v);
    }
    if let Some(v) = &s.system_id {
        info.property("system_id", v);
    }
    if let Some(v) = s.volume_bytes {
        info.property("volume_space_bytes", v);
    }
    info.property("joliet", s.joliet);
    info.property("el_torito", s.el_torito);
    Ok(DiskImage::new(Arc::new(IsoImage { file }), info))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(len: usize, blocks: u32) -> Vec<u8> {
        let mut d = vec![0u8; len];
        let pvd = 16 * 2048;
        d[pvd] = 1;
        d[pvd + 1..pvd + 6].copy_from_slice(b"CD001");
        d[pvd + 40..pvd + 44].copy_from_slice(b"TEST");
        d[pvd + 80..pvd + 84].copy_from_slice(&blocks.to_le_bytes());
        d[pvd + 128..pvd + 130].copy_from_slice(&2048u16.to_le_bytes());
        let term = 17 * 2048;
        if term < len {
            d[term] = 255;
            d[term + 1..term + 6].copy_from_slice(b"CD001");
        }
        d
    }

    fn open_bytes(d: Vec<u8>) -> Result<DiskImage> {
        open(ImageFile::from_bytes("t.iso", d))
    }

    #[test]
    fn minimal_iso_opens_with_2048_byte_sectors() {
        let img = open_bytes(iso(18 * 2048, 18)).unwrap();
        assert_eq!(img.sector_size(), 2048);
        assert_eq!(img.info().subformat.as_deref(), Some("ISO 9660"));
        assert!(img
            .info()
            .properties
            .contains(&("volume_id".into(), "TEST".into())));
    }

    #[test]
    fn each_rule_has_its_own_error() {
        let e = open_bytes(iso(18 * 2048 + 1, 18)).unwrap_err().to_string();
        assert!(
            e.contains(
                "multiple of the 2,048-byte ISO 9660 sector (1 byte past the last whole sector)"
            ),
            "{e}"
        );
        let e = open_bytes(vec![0; 16 * 2048]).unwrap_err().to_string();
        assert!(e.contains("at least 34816"), "{e}");
        let e = open_bytes(vec![0; 34_816]).unwrap_err().to_string();
        assert!(e.contains("volume recognition sequence"), "{e}");
        assert!(e.contains("no recognition-sequence identifier"), "{e}");
        let e = open_bytes(iso(18 * 2048, 100)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfBounds);
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn udf_only_sequence_is_accepted() {
        let mut d = vec![0u8; 20 * 2048];
        for (i, id) in [b"BEA01", b"NSR02", b"TEA01"].iter().enumerate() {
            let o = (16 + i) * 2048;
            d[o + 1..o + 6].copy_from_slice(*id);
        }
        let img = open_bytes(d).unwrap();
        assert_eq!(img.info().subformat.as_deref(), Some("UDF"));
    }

    /// A UDF sequence recorded one descriptor per 4,096-byte block.
    fn udf_4k() -> Vec<u8> {
        let mut d = vec![0u8; 64 * 2048];
        for (i, id) in [b"BEA01", b"NSR02", b"TEA01"].iter().enumerate() {
            let o = 0x8000 + i * 4096;
            d[o + 1..o + 6].copy_from_slice(*id);
        }
        d
    }

    #[test]
    fn udf_with_4k_blocks_is_told_apart_without_contradiction() {
        let d = udf_4k();
        assert_eq!(vrs_step(&d[0x8000..]), Some(4096));
        let e = open_bytes(d).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotThisFormat);
        let m = e.to_string();
        assert!(
            m.contains("4096-byte steps (BEA01 at 0x8000, NSR02 at 0x9000, TEA01 at 0xa000)"),
            "{m}"
        );
        // BEA01 alone: the message names it and what follows, not "expected BEA01".
        let mut d = vec![0u8; 20 * 2048];
        d[0x8001..0x8006].copy_from_slice(b"BEA01");
        let m = open_bytes(d).unwrap_err().to_string();
        assert!(
            m.contains("only BEA01 at 0x8000, then 00 00 00 00 00 00 at 0x8800"),
            "{m}"
        );
        assert!(!m.contains("expected a CD001, BEA01"), "{m}");
    }

    #[test]
    fn optical_sequences_step_2048() {
        assert_eq!(vrs_step(&iso(18 * 2048, 18)[0x8000..]), Some(2048));
        assert_eq!(vrs_step(&[0u8; 4096]), None);
        assert_eq!(vrs_ids(&[], 2048), Vec::new());
    }
}
