//! Directory records (ECMA-119 9.1): the fixed part of a record and the
//! `;version` suffix of a name.

use diskimage_formats::bytes::le_u32;

use super::time;
use crate::error::{Error, FsName, Result};

const FS: FsName = FsName::Iso9660;

/// The fixed part of a directory record.
pub(crate) struct Record<'a> {
    pub len: usize,
    pub lba: u64,
    pub xar: u64,
    pub size: u64,
    pub flags: u8,
    pub interleaved: bool,
    pub name: &'a [u8],
    pub system_use: &'a [u8],
    /// Offset of the system use area within the record.
    pub su_at: usize,
    pub recorded: Option<crate::file_system::Timestamp>,
}

/// Parses the directory record at the start of `b` (at byte `offset` on
/// the volume).
pub(crate) fn parse_record(b: &[u8], offset: u64) -> Result<Record<'_>> {
    let len = usize::from(b.first().copied().unwrap_or(0));
    let bad = |what: &str| Error::corrupt(FS, None, format!("directory record: {what}")).at(offset);
    if len < 34 || len > b.len() {
        return Err(bad("length below 34 or past its sector"));
    }
    let name_len = usize::from(b.get(32).copied().unwrap_or(0));
    let name = b.get(33..33 + name_len).filter(|_| 33 + name_len <= len);
    let Some(name) = name else {
        return Err(bad("name longer than the record"));
    };
    let su_at = 33 + name_len + usize::from(name_len % 2 == 0);
    Ok(Record {
        len,
        lba: le_u32(b, 2).map_or(0, u64::from),
        xar: u64::from(b.get(1).copied().unwrap_or(0)),
        size: le_u32(b, 10).map_or(0, u64::from),
        flags: b.get(25).copied().unwrap_or(0),
        interleaved: b.get(26).is_some_and(|&x| x != 0) || b.get(27).is_some_and(|&x| x != 0),
        name,
        system_use: b.get(su_at.min(len)..len).unwrap_or_default(),
        su_at,
        recorded: time::short(b.get(18..25).unwrap_or_default()),
    })
}

/// A primary or Joliet name without its `;version` (and a primary name
/// without the `.` of an empty extension).
pub(crate) fn strip_version(mut s: String, primary: bool) -> String {
    if let Some(i) = s.rfind(';') {
        if s.get(i + 1..)
            .is_some_and(|v| v.bytes().all(|c| c.is_ascii_digit()))
        {
            s.truncate(i);
        }
    }
    if primary && s.ends_with('.') && s.len() > 1 {
        s.pop();
    }
    s
}
