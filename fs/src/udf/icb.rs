//! Information control blocks: file entries and extended file entries
//! (ECMA-167 4/14.9, 4/14.17), indirect entries (4/14.7) and ICB
//! strategies 4 and 4096 (4/A.5), allocation descriptors (short, long,
//! extended, embedded data) with their continuation extents (4/14.5).

use std::collections::HashSet;

use diskimage_formats::bytes::zeroed::{le_u16, le_u32, le_u64};
use diskimage_formats::BlockDevice;

use super::descriptor::{self, ident, Ad, ExtentKind, LbAddr};
use super::partition::Partitions;
use super::{time, Checks, FS};
use crate::error::{Error, Result};
use crate::file_system::Timestamp;

/// Most indirect entries followed to reach one file entry.
pub const MAX_INDIRECT: usize = 32;
/// Most allocation descriptors of one file.
pub const MAX_ADS: usize = 1 << 16;
/// Most allocation extent descriptors (continuations) of one file.
pub const MAX_AEDS: usize = 4096;

/// Where a file's data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// Embedded in the entry (allocation descriptor type 3).
    Inline(Vec<u8>),
    /// In extents.
    Extents(Vec<Ad>),
}

/// A file entry or extended file entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Byte offset of the entry on the volume.
    pub offset: u64,
    /// The ICB file type (4 directory, 5 file, 12 symlink, 248 VAT ...).
    pub file_type: u8,
    /// The ICB flags (bits 0-2 allocation descriptor type, 6 setuid,
    /// 7 setgid, 8 sticky).
    pub flags: u16,
    /// Owner (0xFFFFFFFF: not recorded).
    pub uid: u32,
    /// Group (0xFFFFFFFF: not recorded).
    pub gid: u32,
    /// Permissions (ECMA-167 4/14.9.5).
    pub permissions: u32,
    /// File link count.
    pub links: u16,
    /// Information length: the size of the data.
    pub size: u64,
    /// Logical blocks recorded.
    pub blocks: u64,
    /// Access time.
    pub accessed: Option<Timestamp>,
    /// Modification time.
    pub modified: Option<Timestamp>,
    /// Attribute (change) time.
    pub changed: Option<Timestamp>,
    /// Creation time (extended file entries only).
    pub created: Option<Timestamp>,
    /// Unique ID.
    pub unique_id: u64,
    /// The data.
    pub data: Data,
}

impl Entry {
    /// The POSIX mode: the permission bits as Linux maps them (read,
    /// write and execute of owner, group and other), setuid/setgid/sticky
    /// from the ICB flags, the type from the file type.
    pub fn mode(&self) -> u32 {
        let p = self.permissions;
        let mut m = (p & 0o7) | ((p >> 2) & 0o70) | ((p >> 4) & 0o700);
        if self.flags & 0x40 != 0 {
            m |= 0o4000;
        }
        if self.flags & 0x80 != 0 {
            m |= 0o2000;
        }
        if self.flags & 0x100 != 0 {
            m |= 0o1000;
        }
        m | match self.file_type {
            4 => 0o040000,
            12 => 0o120000,
            6 => 0o060000,
            7 => 0o020000,
            9 => 0o010000,
            10 => 0o140000,
            _ => 0o100000,
        }
    }
}

/// Reads the entry at `addr`, following indirect entries (and, under
/// strategy 4096, the indirect entry that may follow an entry), at most
/// [`MAX_INDIRECT`] of them and never one twice.
pub fn read_entry(
    device: &dyn BlockDevice,
    parts: &Partitions,
    addr: LbAddr,
    checks: &Checks,
    path: &str,
) -> Result<Entry> {
    let block = parts.block();
    let mut buf = vec![0u8; usize::try_from(block).unwrap_or(2048)];
    let mut seen = HashSet::new();
    let mut at = addr;
    let mut found: Option<Entry> = None;
    for _ in 0..=MAX_INDIRECT {
        if !seen.insert(at) {
            return Err(Error::corrupt(
                FS,
                Some(path),
                format!(
                    "indirect entries loop back to block {} of partition {}",
                    at.lbn, at.part
                ),
            ));
        }
        let offset = match parts.locate(at, 1) {
            Ok((o, _)) if o + block <= device.size() => o,
            // Strategy 4096: the block after the entry may not exist.
            _ if found.is_some() => break,
            Ok((o, _)) => {
                return Err(
                    Error::corrupt(FS, Some(path), "file entry past the end of the volume").at(o),
                )
            }
            Err(e) => return Err(in_path(e, path)),
        };
        device.read_at(&mut buf, offset)?;
        let tag = le_u16(&buf, 0);
        if found.is_some() && (tag != ident::IE || !descriptor::looks_like(&buf, ident::IE)) {
            break; // strategy 4096: no indirect entry after the entry
        }
        let t = descriptor::tag(&buf, offset, None, checks).map_err(|e| in_path(e, path))?;
        match t.ident {
            ident::IE => {
                let next = descriptor::long_ad(&buf, 36);
                at = next.at;
                found = None;
            }
            ident::FE | ident::EFE => {
                let e = parse_entry(device, parts, &buf, offset, at, t.ident, checks, path)?;
                let strategy = le_u16(&buf, 16 + 4);
                if strategy != 4096 {
                    return Ok(e);
                }
                found = Some(e);
                at = LbAddr {
                    lbn: at.lbn.saturating_add(1),
                    part: at.part,
                };
            }
            other => {
                return Err(Error::corrupt(
                    FS,
                    Some(path),
                    format!("descriptor tag {other} where a file entry was expected"),
                )
                .at(offset))
            }
        }
    }
    found.ok_or_else(|| {
        Error::limit(
            FS,
            Some(path),
            format!("more than {MAX_INDIRECT} indirect entries"),
        )
    })
}

/// Gives an error without a path `path`.
pub fn in_path(e: Error, path: &str) -> Error {
    match e {
        Error::Corrupt {
            fs,
            path: None,
            offset,
            detail,
            source,
        } => Error::Corrupt {
            fs,
            path: Some(path.to_string()),
            offset,
            detail,
            source,
        },
        e => e,
    }
}

#[allow(clippy::too_many_arguments)]
fn parse_entry(
    device: &dyn BlockDevice,
    parts: &Partitions,
    b: &[u8],
    offset: u64,
    addr: LbAddr,
    tag: u16,
    checks: &Checks,
    path: &str,
) -> Result<Entry> {
    let extended = tag == ident::EFE;
    let (ts, base) = if extended { (80, 216) } else { (72, 176) };
    let l_ea = le_u32(b, base - 8) as usize;
    let l_ad = le_u32(b, base - 4) as usize;
    let ads_at = base.saturating_add(l_ea);
    let ad_area = ads_at
        .checked_add(l_ad)
        .and_then(|end| b.get(ads_at..end))
        .ok_or_else(|| {
            Error::corrupt(
                FS,
                Some(path),
                format!("extended attributes ({l_ea}) and allocation descriptors ({l_ad}) run past the entry"),
            )
            .at(offset)
        })?;
    let flags = le_u16(b, 16 + 18);
    let size = le_u64(b, 56);
    let data = match flags & 7 {
        3 => {
            if size > l_ad as u64 {
                return Err(Error::corrupt(
                    FS,
                    Some(path),
                    format!("embedded data of {size} bytes in {l_ad} bytes of the entry"),
                )
                .at(offset));
            }
            Data::Inline(ad_area.get(..size as usize).unwrap_or_default().to_vec())
        }
        kind @ 0..=2 => Data::Extents(gather(
            device, parts, ad_area, kind, addr.part, checks, path,
        )?),
        other => {
            return Err(Error::unsupported(
                FS,
                Some(path),
                format!("allocation descriptor type {other}"),
            ))
        }
    };
    Ok(Entry {
        offset,
        file_type: b.get(16 + 11).copied().unwrap_or(0),
        flags,
        uid: le_u32(b, 36),
        gid: le_u32(b, 40),
        permissions: le_u32(b, 44),
        links: le_u16(b, 48),
        size,
        blocks: le_u64(b, if extended { 72 } else { 64 }),
        accessed: time::timestamp(b, ts),
        modified: time::timestamp(b, ts + 12),
        created: if extended {
            time::timestamp(b, 104)
        } else {
            None
        },
        changed: time::timestamp(b, if extended { 116 } else { 96 }),
        unique_id: le_u64(b, if extended { 200 } else { 160 }),
        data,
    })
}

/// The allocation descriptors in `area` (of `kind`: 0 short, 1 long,
/// 2 extended), continuation extents followed: up to the first
/// zero-length one, at most [`MAX_ADS`] and [`MAX_AEDS`] continuations,
/// never one continuation twice.
fn gather(
    device: &dyn BlockDevice,
    parts: &Partitions,
    area: &[u8],
    kind: u16,
    part: u16,
    checks: &Checks,
    path: &str,
) -> Result<Vec<Ad>> {
    let size = match kind {
        0 => 8,
        1 => 16,
        _ => 20,
    };
    let block = parts.block();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut area = area.to_vec();
    let mut pos = 0usize;
    loop {
        if pos + size > area.len() {
            return Ok(out);
        }
        let ad = match kind {
            0 => descriptor::short_ad(&area, pos, part),
            1 => descriptor::long_ad(&area, pos),
            _ => descriptor::ext_ad(&area, pos),
        };
        pos += size;
        if ad.len == 0 {
            return Ok(out);
        }
        if ad.kind != ExtentKind::Next {
            if out.len() >= MAX_ADS {
                return Err(Error::limit(
                    FS,
                    Some(path),
                    format!("more than {MAX_ADS} allocation descriptors"),
                ));
            }
            out.push(ad);
            continue;
        }
        // The next extent of allocation descriptors: an AED.
        if !seen.insert(ad.at) || seen.len() > MAX_AEDS {
            return Err(Error::corrupt(
                FS,
                Some(path),
                format!(
                    "allocation extent descriptors loop or pass {MAX_AEDS} (block {})",
                    ad.at.lbn
                ),
            ));
        }
        let len = u64::from(ad.len).min(block).max(24);
        let (offset, _) = parts.locate(ad.at, 1).map_err(|e| in_path(e, path))?;
        if offset + len > device.size() {
            return Err(Error::corrupt(
                FS,
                Some(path),
                "allocation extent descriptor past the end of the volume",
            )
            .at(offset));
        }
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(24)];
        device.read_at(&mut buf, offset)?;
        descriptor::tag(&buf, offset, Some(ident::AED), checks).map_err(|e| in_path(e, path))?;
        let l_ad = le_u32(&buf, 20) as usize;
        area = buf
            .get(24..24usize.saturating_add(l_ad))
            .ok_or_else(|| {
                Error::corrupt(
                    FS,
                    Some(path),
                    format!("allocation extent descriptor of {l_ad} bytes past its extent"),
                )
                .at(offset)
            })?
            .to_vec();
        pos = 0;
    }
}

/// Reads the whole data of `entry` (at most `limit` bytes) into memory.
pub fn read_all(
    device: &dyn BlockDevice,
    parts: &Partitions,
    entry: &Entry,
    limit: u64,
    path: &str,
) -> Result<Vec<u8>> {
    if entry.size > limit {
        return Err(Error::limit(
            FS,
            Some(path),
            format!("{} bytes to read in memory (limit {limit})", entry.size),
        ));
    }
    let runs = super::data::runs(device, parts, entry, path)?;
    super::data::read(device, entry, &runs, path)
}
