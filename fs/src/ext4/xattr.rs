//! Extended attributes stored in the inode, after `i_extra_isize`: only
//! what inline data needs, the value of `system.data` (the bytes of an
//! inline file or directory past the 60 of `i_block`).

use diskimage_formats::bytes::{le_u16, le_u32};

/// The in-inode extended attribute header magic.
const MAGIC: u32 = 0xEA02_0000;
/// `e_name_index` of `system.` names.
const INDEX_SYSTEM: u8 = 7;
/// Bytes of an entry before its name.
const ENTRY_HEADER: usize = 16;

/// The value of `system.data` in the inode `raw` (whose in-inode fields
/// end at `128 + extra_isize`), or `None` when there is no such attribute
/// or the attribute area is malformed. A value held in another inode
/// (`ea_inode`) is not inline data and is not followed.
pub(crate) fn system_data(raw: &[u8], extra_isize: usize) -> Option<Vec<u8>> {
    let start = 128usize.checked_add(extra_isize)?;
    if le_u32(raw, start)? != MAGIC {
        return None;
    }
    let first = start + 4;
    let area = raw.get(first..)?;
    let mut at = 0usize;
    // Each entry moves `at` forward by at least 16 bytes: the area's
    // length bounds the loop.
    while let Some(head) = le_u32(area, at) {
        if head == 0 {
            break;
        }
        let name_len = usize::from(*area.get(at)?);
        let index = *area.get(at + 1)?;
        let value_offs = usize::from(le_u16(area, at + 2)?);
        let value_inum = le_u32(area, at + 4)?;
        let value_size = usize::try_from(le_u32(area, at + 8)?).ok()?;
        let name = area.get(at + ENTRY_HEADER..at + ENTRY_HEADER + name_len)?;
        if index == INDEX_SYSTEM && name == b"data" && value_inum == 0 {
            return area
                .get(value_offs..value_offs.checked_add(value_size)?)
                .map(<[u8]>::to_vec);
        }
        at += (ENTRY_HEADER + name_len + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_system_data_and_stops_on_garbage() {
        let mut raw = vec![0u8; 256];
        raw[128..130].copy_from_slice(&32u16.to_le_bytes());
        let start = 160;
        raw[start..start + 4].copy_from_slice(&MAGIC.to_le_bytes());
        let e = start + 4;
        // "system.data", value of 5 bytes at offset 40 from the first entry.
        raw[e] = 4;
        raw[e + 1] = INDEX_SYSTEM;
        raw[e + 2..e + 4].copy_from_slice(&40u16.to_le_bytes());
        raw[e + 8..e + 12].copy_from_slice(&5u32.to_le_bytes());
        raw[e + 16..e + 20].copy_from_slice(b"data");
        raw[e + 40..e + 45].copy_from_slice(b"hello");
        assert_eq!(system_data(&raw, 32).as_deref(), Some(&b"hello"[..]));
        // A value past the inode: none.
        raw[e + 8..e + 12].copy_from_slice(&500u32.to_le_bytes());
        assert_eq!(system_data(&raw, 32), None);
        // No magic: none.
        assert_eq!(system_data(&raw, 36), None);
        assert_eq!(system_data(&raw[..100], 32), None);
    }
}
