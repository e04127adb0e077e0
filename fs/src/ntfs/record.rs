//! MFT records: the update sequence (fixups) of a multi-sector record,
//! the attributes of a record and the entries of an `$ATTRIBUTE_LIST`.

use diskimage_formats::bytes::{le_u16, le_u32, le_u64};

use crate::error::{Error, FsName, Result};

const FS: FsName = FsName::Ntfs;

/// Attribute type of `$ATTRIBUTE_LIST`.
pub const ATTR_LIST: u32 = 0x20;
/// Attribute type of `$DATA`.
pub const ATTR_DATA: u32 = 0x80;
/// Attribute type of `$REPARSE_POINT`.
pub const ATTR_REPARSE_POINT: u32 = 0xC0;
/// Attribute flag: compressed (LZNT1).
pub const FLAG_COMPRESSED: u16 = 0x0001;
/// Attribute flag: EFS-encrypted.
pub const FLAG_ENCRYPTED: u16 = 0x4000;
/// Attribute flag: sparse.
pub const FLAG_SPARSE: u16 = 0x8000;

/// One attribute of a record, as its header says.
#[derive(Debug, Clone)]
pub struct Attr<'a> {
    /// Attribute type (0x80: `$DATA`).
    pub ty: u32,
    /// Its name ("" for the unnamed one).
    pub name: String,
    /// Flags (compressed, encrypted, sparse).
    pub flags: u16,
    /// Attribute id (instance), which `$ATTRIBUTE_LIST` entries name.
    pub id: u16,
    /// The value or where it is.
    pub body: Body<'a>,
}

/// Where an attribute's value is.
#[derive(Debug, Clone)]
pub enum Body<'a> {
    /// In the record.
    Resident(&'a [u8]),
    /// In data runs.
    NonResident(NonResident<'a>),
}

/// The header fields of a non-resident attribute.
#[derive(Debug, Clone)]
pub struct NonResident<'a> {
    /// First VCN this piece maps.
    pub start_vcn: u64,
    /// Last VCN this piece maps.
    pub last_vcn: u64,
    /// Compression unit as a power of two of clusters (0: none).
    pub unit_exp: u8,
    /// Size of the value (meaningful in the piece starting at VCN 0).
    pub size: u64,
    /// Initialized size (likewise).
    pub initialized: u64,
    /// The mapping-pairs array.
    pub pairs: &'a [u8],
}

/// A corrupt-record error at `path`.
pub(crate) fn bad(path: &str, what: impl Into<String>) -> Error {
    Error::corrupt(FS, Some(path), what)
}

/// The attributes of the MFT record `rec` (fixups applied), in order,
/// up to the end marker. Each header is checked to lie within the record.
pub fn attributes<'a>(rec: &'a [u8], path: &str) -> Result<Vec<Attr<'a>>> {
    let first = le_u16(rec, 0x14).map_or(0, usize::from);
    let used = le_u32(rec, 0x18).map_or(0, |u| u as usize).min(rec.len());
    let mut out = Vec::new();
    let mut off = first;
    loop {
        let Some(ty) = le_u32(rec, off) else {
            return Err(bad(
                path,
                format!("MFT record ends inside the attribute at {off:#x}"),
            ));
        };
        if ty == 0xFFFF_FFFF || off >= used {
            break;
        }
        let len = le_u32(rec, off + 4).map_or(0, |l| l as usize);
        let a = rec
            .get(off..off.saturating_add(len))
            .filter(|_| len >= 0x18 && off + len <= used)
            .ok_or_else(|| {
                bad(
                    path,
                    format!("attribute at {off:#x} of {len} bytes overruns its MFT record"),
                )
            })?;
        let non_resident = a.get(8).is_some_and(|&b| b != 0);
        let name_len = a.get(9).map_or(0, |&b| usize::from(b));
        let name_off = le_u16(a, 0x0A).map_or(0, usize::from);
        let flags = le_u16(a, 0x0C).unwrap_or(0);
        let id = le_u16(a, 0x0E).unwrap_or(0);
        let name = if name_len == 0 {
            String::new()
        } else {
            let raw = a.get(name_off..name_off + 2 * name_len).ok_or_else(|| {
                bad(
                    path,
                    format!("name of the attribute at {off:#x} overruns it"),
                )
            })?;
            utf16(raw)
        };
        let body = if non_resident {
            let field = |o: usize| le_u64(a, o);
            let (Some(start_vcn), Some(last_vcn), Some(size), Some(initialized)) =
                (field(0x10), field(0x18), field(0x30), field(0x38))
            else {
                return Err(bad(
                    path,
                    format!("non-resident attribute at {off:#x} is too short"),
                ));
            };
            let pairs_off = le_u16(a, 0x20).map_or(0, usize::from);
            let pairs = a
                .get(pairs_off..)
                .filter(|_| pairs_off >= 0x40)
                .ok_or_else(|| {
                    bad(
                        path,
                        format!("mapping pairs of the attribute at {off:#x} lie outside it"),
                    )
                })?;
            Body::NonResident(NonResident {
                start_vcn,
                last_vcn,
                unit_exp: a.get(0x22).copied().unwrap_or(0),
                size,
                initialized,
                pairs,
            })
        } else {
            let vlen = le_u32(a, 0x10).map_or(0, |l| l as usize);
            let voff = le_u16(a, 0x14).map_or(0, usize::from);
            let value = a.get(voff..voff.saturating_add(vlen)).ok_or_else(|| {
                bad(
                    path,
                    format!("value of the attribute at {off:#x} overruns it"),
                )
            })?;
            Body::Resident(value)
        };
        out.push(Attr {
            ty,
            name,
            flags,
            id,
            body,
        });
        off += len;
    }
    Ok(out)
}

use diskimage_formats::bytes::utf16le as utf16;

/// One entry of an `$ATTRIBUTE_LIST`.
#[derive(Debug, Clone)]
pub(crate) struct ListEntry {
    pub ty: u32,
    pub name: String,
    pub record: u64,
    pub id: u16,
}

pub(crate) fn list_entries(list: &[u8], path: &str) -> Result<Vec<ListEntry>> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + 0x1A <= list.len() {
        let ty = le_u32(list, off).unwrap_or(0);
        let len = le_u16(list, off + 4).map_or(0, usize::from);
        if ty == 0 || ty == 0xFFFF_FFFF {
            break;
        }
        if len < 0x1A || off + len > list.len() {
            return Err(bad(
                path,
                format!("$ATTRIBUTE_LIST entry at {off:#x} of {len} bytes"),
            ));
        }
        let e = list.get(off..off + len).unwrap_or_default();
        let name_len = e.get(6).map_or(0, |&b| usize::from(b));
        let name_off = e.get(7).map_or(0, |&b| usize::from(b));
        let name = if name_len == 0 {
            String::new()
        } else {
            utf16(e.get(name_off..name_off + 2 * name_len).ok_or_else(|| {
                bad(
                    path,
                    format!("name of the $ATTRIBUTE_LIST entry at {off:#x} overruns it"),
                )
            })?)
        };
        out.push(ListEntry {
            ty,
            name,
            record: le_u64(e, 0x10).unwrap_or(0) & 0xFFFF_FFFF_FFFF,
            id: le_u16(e, 0x18).unwrap_or(0),
        });
        off += len;
    }
    Ok(out)
}

/// Applies the update sequence of the multi-sector record `raw` (MFT or
/// index record): the last two bytes of each 512-byte block must hold the
/// update sequence number and get the saved bytes back. `None` if the
/// array does not fit the record or a block does not end with the number.
pub fn fixed_up(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = raw.to_vec();
    let offset = usize::from(le_u16(raw, 4)?);
    let count = usize::from(le_u16(raw, 6)?);
    if count == 0 || (count - 1) * 512 > raw.len() {
        return None;
    }
    let usn = raw.get(offset..offset + 2)?;
    for i in 1..count {
        let saved = raw.get(offset + 2 * i..offset + 2 * i + 2)?;
        let end = (i * 512).checked_sub(2)?;
        let tail = out.get_mut(end..end + 2)?;
        if tail != usn {
            return None;
        }
        tail.copy_from_slice(saved);
    }
    Some(out)
}

/// The record `raw` (number `n`) with its fixups, checked to be a FILE record.
pub(crate) fn check_record(raw: &[u8], n: u64, path: &str) -> Result<Vec<u8>> {
    if raw.get(..4) != Some(b"FILE") {
        return Err(bad(path, format!("MFT record {n} has no FILE signature")));
    }
    fixed_up(raw).ok_or_else(|| {
        bad(
            path,
            format!("MFT record {n}: update sequence does not match (torn or misplaced record)"),
        )
    })
}
