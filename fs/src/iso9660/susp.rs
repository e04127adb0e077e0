//! System Use Sharing Protocol (SUSP 1.12) entries and the Rock Ridge
//! (RRIP 1.09/1.12) entries read from them: PX, PN, SL, NM, CL, PL, RE, TF,
//! RR and zisofs ZF. Continuation areas (CE) are followed, bounded and
//! cycle-safe.

use std::collections::HashSet;

use diskimage_formats::bytes::le_u32;
use diskimage_formats::BlockDevice;

use crate::error::{Error, FsName, Result};
use crate::file_system::Timestamp;

const FS: FsName = FsName::Iso9660;
/// Most continuation areas followed from one directory record.
pub const MAX_CE: usize = 32;
/// Largest continuation area read (SUSP keeps one within a logical block).
pub const MAX_CE_LEN: u64 = 2048;
/// Longest name (NM) or link target (SL) assembled, in bytes.
pub const MAX_TEXT: usize = 4096;

/// POSIX attributes from PX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Px {
    /// Mode bits with the type.
    pub mode: u32,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// File serial number (RRIP 1.12, 44-byte PX only).
    pub ino: Option<u32>,
}

/// zisofs parameters from ZF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zf {
    /// Algorithm (`pz` is zisofs).
    pub algorithm: [u8; 2],
    /// Header size in 4-byte units.
    pub header_quads: u8,
    /// log2 of the block size.
    pub log2_block: u8,
    /// Uncompressed size.
    pub size: u64,
}

/// What the SUSP area of one directory record holds.
#[derive(Debug, Clone, Default)]
pub struct Entries {
    /// An SP entry (only meaningful in the root's `.` record): its skip length.
    pub sp: Option<u8>,
    /// Whether any Rock Ridge entry was seen (RR, PX, NM, TF, SL...), or an ER names RRIP.
    pub rock_ridge: bool,
    /// NM name bytes; `None` without NM.
    pub name: Option<Vec<u8>>,
    /// NM said CURRENT or PARENT.
    pub name_is_dot: bool,
    /// PX.
    pub px: Option<Px>,
    /// PN device number.
    pub device: Option<(u32, u32)>,
    /// SL target.
    pub symlink: Option<Vec<u8>>,
    /// CL: the relocated directory's block.
    pub child_link: Option<u64>,
    /// RE: this record is a relocated directory (hidden where it is).
    pub relocated: bool,
    /// TF creation, modify, access, attributes change.
    pub created: Option<Timestamp>,
    /// TF modify.
    pub modified: Option<Timestamp>,
    /// TF access.
    pub accessed: Option<Timestamp>,
    /// TF attributes.
    pub changed: Option<Timestamp>,
    /// ZF.
    pub zf: Option<Zf>,
}

/// A both-endian 32-bit field, read by its little-endian half.
fn both_u32(b: &[u8], off: usize) -> Option<u32> {
    le_u32(b, off)
}

fn push_text(out: &mut Vec<u8>, more: &[u8], offset: u64) -> Result<()> {
    if out.len() + more.len() > MAX_TEXT {
        return Err(Error::corrupt(
            FS,
            None,
            format!("Rock Ridge name or link longer than {MAX_TEXT} bytes"),
        )
        .at(offset));
    }
    out.extend_from_slice(more);
    Ok(())
}

/// Symlink assembly state across SL entries.
#[derive(Default)]
struct SlState {
    target: Vec<u8>,
    /// The last component had CONTINUE: the next one is joined without `/`.
    join: bool,
    done: bool,
}

fn sl(state: &mut SlState, data: &[u8], offset: u64) -> Result<()> {
    let mut p = 1usize; // data[0] is the SL flags
    while p < data.len() {
        let (Some(&flags), Some(&len)) = (data.get(p), data.get(p + 1)) else {
            return Err(Error::corrupt(FS, None, "SL component header cut short").at(offset));
        };
        let len = usize::from(len);
        let Some(content) = data.get(p + 2..p + 2 + len) else {
            return Err(Error::corrupt(FS, None, "SL component longer than its entry").at(offset));
        };
        let text: &[u8] = if flags & 0x02 != 0 {
            b"."
        } else if flags & 0x04 != 0 {
            b".."
        } else if flags & (0x08 | 0x10) != 0 {
            b"/"
        } else {
            content
        };
        if text == b"/" {
            if state.target.is_empty() {
                state.target.push(b'/');
            }
        } else {
            if !state.join && !state.target.is_empty() && state.target.last() != Some(&b'/') {
                push_text(&mut state.target, b"/", offset)?;
            }
            push_text(&mut state.target, text, offset)?;
        }
        state.join = flags & 0x01 != 0;
        p += 2 + len;
    }
    if data.first().is_some_and(|f| f & 0x01 == 0) {
        state.done = true;
    }
    Ok(())
}

fn tf(e: &mut Entries, data: &[u8]) {
    let Some(&flags) = data.first() else { return };
    let long = flags & 0x80 != 0;
    let w = if long { 17 } else { 7 };
    let mut p = 1usize;
    for bit in 0..7 {
        if flags & (1 << bit) == 0 {
            continue;
        }
        let Some(raw) = data.get(p..p + w) else {
            return;
        };
        p += w;
        let t = if long {
            super::time::long(raw)
        } else {
            super::time::short(raw)
        };
        match bit {
            0 => e.created = t,
            1 => e.modified = t,
            2 => e.accessed = t,
            3 => e.changed = t,
            _ => {}
        }
    }
}

/// Parses the system use area `area` (at byte `offset` on the device) of one
/// directory record, skipping `skip` bytes first, and the continuation areas
/// it points to.
pub fn parse(
    device: &dyn BlockDevice,
    area: &[u8],
    offset: u64,
    skip: usize,
    block: u64,
) -> Result<Entries> {
    let mut e = Entries::default();
    let mut name = Vec::new();
    let mut name_seen = false;
    let mut name_done = false;
    let mut link = SlState::default();
    let mut link_seen = false;
    let mut seen_ce = HashSet::new();
    let mut owned;
    let mut cur: &[u8] = area.get(skip.min(area.len())..).unwrap_or_default();
    let mut cur_off = offset + skip as u64;
    loop {
        let mut next_ce: Option<(u64, u64, u64)> = None;
        let mut p = 0usize;
        while p + 4 <= cur.len() {
            let at = cur_off + p as u64;
            let (Some(sig), Some(&len)) = (cur.get(p..p + 2), cur.get(p + 2)) else {
                break;
            };
            let len = usize::from(len);
            if sig == [0, 0] {
                break; // padding to the end of the area
            }
            if len < 4 {
                return Err(Error::corrupt(
                    FS,
                    None,
                    format!(
                        "SUSP entry {:?} with length {len}",
                        String::from_utf8_lossy(sig)
                    ),
                )
                .at(at));
            }
            let Some(data_all) = cur.get(p..p + len) else {
                return Err(Error::corrupt(
                    FS,
                    None,
                    format!(
                        "SUSP entry {:?} of {len} bytes overflows the system use area",
                        String::from_utf8_lossy(sig)
                    ),
                )
                .at(at));
            };
            let data = data_all.get(4..).unwrap_or_default();
            match sig {
                b"SP" if data.get(..2) == Some(&[0xBEu8, 0xEF][..]) => {
                    e.sp = data.get(2).copied();
                }
                b"CE" => {
                    let lba = both_u32(data, 0).map_or(0, u64::from);
                    let o = both_u32(data, 8).map_or(0, u64::from);
                    let l = both_u32(data, 16).map_or(0, u64::from);
                    next_ce = Some((lba, o, l));
                }
                b"ST" => break,
                b"ER" => {
                    let id_len = usize::from(data.first().copied().unwrap_or(0));
                    let id = data.get(4..4 + id_len).unwrap_or_default();
                    if id.starts_with(b"RRIP")
                        || id.starts_with(b"IEEE_P1282")
                        || id.starts_with(b"IEEE_1282")
                    {
                        e.rock_ridge = true;
                    }
                }
                b"RR" => e.rock_ridge = true,
                b"PX" => {
                    e.rock_ridge = true;
                    e.px = Some(Px {
                        mode: both_u32(data, 0).unwrap_or(0),
                        nlink: both_u32(data, 8).unwrap_or(0),
                        uid: both_u32(data, 16).unwrap_or(0),
                        gid: both_u32(data, 24).unwrap_or(0),
                        ino: both_u32(data, 32),
                    });
                }
                b"PN" => {
                    e.rock_ridge = true;
                    e.device = Some((
                        both_u32(data, 0).unwrap_or(0),
                        both_u32(data, 8).unwrap_or(0),
                    ));
                }
                b"SL" => {
                    e.rock_ridge = true;
                    link_seen = true;
                    if !link.done {
                        sl(&mut link, data, at)?;
                    }
                }
                b"NM" => {
                    e.rock_ridge = true;
                    name_seen = true;
                    let flags = data.first().copied().unwrap_or(0);
                    if flags & 0x06 != 0 {
                        e.name_is_dot = true;
                    } else if !name_done {
                        push_text(&mut name, data.get(1..).unwrap_or_default(), at)?;
                    }
                    if flags & 0x01 == 0 {
                        name_done = true;
                    }
                }
                b"CL" => {
                    e.rock_ridge = true;
                    e.child_link = both_u32(data, 0).map(u64::from);
                }
                b"PL" => e.rock_ridge = true,
                b"RE" => {
                    e.rock_ridge = true;
                    e.relocated = true;
                }
                b"TF" => {
                    e.rock_ridge = true;
                    tf(&mut e, data);
                }
                b"ZF" => {
                    e.zf = Some(Zf {
                        algorithm: [
                            data.first().copied().unwrap_or(0),
                            data.get(1).copied().unwrap_or(0),
                        ],
                        header_quads: data.get(2).copied().unwrap_or(0),
                        log2_block: data.get(3).copied().unwrap_or(0),
                        size: both_u32(data, 4).map_or(0, u64::from),
                    });
                }
                _ => {}
            }
            p += len;
        }
        let Some((lba, o, l)) = next_ce else { break };
        let start = lba.saturating_mul(block).saturating_add(o);
        if seen_ce.len() >= MAX_CE || !seen_ce.insert(start) {
            return Err(Error::corrupt(
                FS,
                None,
                format!("continuation area chain loops or is longer than {MAX_CE}"),
            )
            .at(start));
        }
        if l > MAX_CE_LEN || start.checked_add(l).is_none_or(|end| end > device.size()) {
            return Err(Error::corrupt(
                FS,
                None,
                format!("continuation area of {l} bytes past the volume or its limit"),
            )
            .at(start));
        }
        owned = vec![0u8; usize::try_from(l).unwrap_or(0)];
        device.read_at(&mut owned, start)?;
        cur = owned.as_slice();
        cur_off = start;
    }
    if name_seen && !name.is_empty() {
        e.name = Some(name);
    }
    if link_seen {
        e.symlink = Some(link.target);
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage_formats::MemoryDevice;

    fn entry(sig: &[u8], data: &[u8]) -> Vec<u8> {
        let mut v = sig.to_vec();
        v.push(u8::try_from(4 + data.len()).unwrap());
        v.push(1);
        v.extend_from_slice(data);
        v
    }

    fn both(v: u32) -> Vec<u8> {
        let mut b = v.to_le_bytes().to_vec();
        b.extend_from_slice(&v.to_be_bytes());
        b
    }

    fn parse_area(area: &[u8]) -> Result<Entries> {
        let dev = MemoryDevice::new(vec![0u8; 4096]);
        parse(&dev, area, 0, 0, 2048)
    }

    #[test]
    fn nm_and_sl_continue_across_entries() {
        let mut area = entry(b"NM", b"\x01long_");
        area.extend(entry(b"NM", b"\x00name"));
        // SL: root, "usr", "li" CONTINUE + (next SL) "b", then "..".
        area.extend(entry(b"SL", b"\x01\x08\x00\x00\x03usr\x01\x02li"));
        area.extend(entry(b"SL", b"\x00\x00\x01b\x04\x00"));
        let e = parse_area(&area).unwrap();
        assert_eq!(e.name.as_deref(), Some(&b"long_name"[..]));
        assert_eq!(e.symlink.as_deref(), Some(&b"/usr/lib/.."[..]));
        assert!(e.rock_ridge);
    }

    #[test]
    fn px_tf_and_zf_are_read() {
        let mut px = Vec::new();
        for v in [0o100_640u32, 3, 1000, 100, 77] {
            px.extend(both(v));
        }
        let mut area = entry(b"PX", &px);
        // TF long form: modify and access.
        let mut tf = vec![0x80 | 0x02 | 0x04];
        tf.extend_from_slice(b"2020091312264025\0");
        tf.extend_from_slice(b"2020091312264100\x04");
        area.extend(entry(b"TF", &tf));
        let mut zf = b"pz\x04\x0f".to_vec();
        zf.extend(both(123_456));
        area.extend(entry(b"ZF", &zf));
        let e = parse_area(&area).unwrap();
        let px = e.px.unwrap();
        assert_eq!(
            (px.mode, px.nlink, px.uid, px.gid, px.ino),
            (0o100_640, 3, 1000, 100, Some(77))
        );
        assert_eq!(e.modified.unwrap().nanos, 250_000_000);
        assert_eq!(e.accessed.unwrap().secs, 1_600_000_001 - 3600);
        assert_eq!(e.zf.unwrap().size, 123_456);
    }

    #[test]
    fn overflowing_and_looping_entries_are_errors() {
        let mut area = entry(b"NM", b"\x00abc");
        area[2] = 40; // length past the area
        assert_eq!(
            parse_area(&area).unwrap_err().kind(),
            crate::ErrorKind::Corrupt
        );
        // A CE pointing at itself (block 1, offset 0, 28 bytes).
        let mut ce = both(1);
        ce.extend(both(0));
        ce.extend(both(28));
        let ce = entry(b"CE", &ce);
        let mut image = vec![0u8; 4096];
        image[2048..2048 + ce.len()].copy_from_slice(&ce);
        let dev = MemoryDevice::new(image);
        let e = parse(&dev, &ce, 0, 0, 2048).unwrap_err();
        assert!(e.to_string().contains("continuation"), "{e}");
        // A CE past the device.
        let mut far = both(100);
        far.extend(both(0));
        far.extend(both(28));
        assert!(parse_area(&entry(b"CE", &far)).is_err());
    }
}
