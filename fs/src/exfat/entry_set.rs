//! Directory entries (exFAT specification §6, §7): the file directory
//! entry sets of a directory (File 0x85, Stream Extension 0xC0, File Name
//! 0xC1), and in the root the volume label (0x83) and up-case table
//! (0x82) entries.
//!
//! Each set is checked before it is used: its SecondaryCount is 2..=18
//! and the set lies inside the directory, every secondary entry is in use,
//! the stream extension comes first and enough file-name entries follow
//! for NameLength, unknown secondaries are benign (else the set is
//! unsupported), and the SetChecksum (§6.3.3, 16-bit rotate-and-add over
//! the set, its own two bytes left out) matches. A set that fails is an
//! error for that entry alone; the directory goes on after it. The
//! directory ends at its end or at the first end-of-directory entry
//! (type 0x00).

use diskimage_formats::bytes::{le_u16, le_u32, le_u64};

use super::FS;
use crate::error::{Error, Result};
use crate::file_system::{days_from_civil, Timestamp};

/// Size of one directory entry.
pub const ENTRY: usize = 32;
/// Most files (entry sets) read from one directory.
pub const MAX_DIR_FILES: usize = 1 << 20;

/// FileAttributes bits (§7.4.4).
pub mod attr {
    /// ReadOnly.
    pub const READ_ONLY: u16 = 0x01;
    /// Hidden.
    pub const HIDDEN: u16 = 0x02;
    /// System.
    pub const SYSTEM: u16 = 0x04;
    /// Directory.
    pub const DIRECTORY: u16 = 0x10;
    /// Archive.
    pub const ARCHIVE: u16 = 0x20;
}

/// One timestamp field group of a file directory entry (§7.4.8–7.4.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawTime {
    /// The packed date and time (2-second resolution).
    pub stamp: u32,
    /// The 10 ms increment, 0..=199 (none for the access time).
    pub ten_ms: u8,
    /// The UTC offset byte: bit 7 OffsetValid, bits 0–6 a signed count of
    /// 15-minute steps.
    pub utc_offset: u8,
}

impl RawTime {
    /// The time in UTC with its 10 ms precision: the local time less the
    /// UTC offset when OffsetValid is set (else the local time as if it
    /// were UTC). `None` for a date that cannot be (month or day 0, ...).
    pub fn to_timestamp(self) -> Option<Timestamp> {
        let s = self.stamp;
        let double_seconds = i64::from(s & 0x1F);
        let minute = i64::from((s >> 5) & 0x3F);
        let hour = i64::from((s >> 11) & 0x1F);
        let day = i64::from((s >> 16) & 0x1F);
        let month = i64::from((s >> 21) & 0x0F);
        let year = 1980 + i64::from(s >> 25);
        if double_seconds > 29 || minute > 59 || hour > 23 || day == 0 || !(1..=12).contains(&month)
        {
            return None;
        }
        let ten_ms = if self.ten_ms <= 199 { self.ten_ms } else { 0 };
        let mut secs = days_from_civil(year, month, day) * 86_400
            + hour * 3600
            + minute * 60
            + double_seconds * 2
            + i64::from(ten_ms / 100);
        if self.utc_offset & 0x80 != 0 {
            // Sign-extend the 7-bit count of 15-minute steps.
            let steps = i64::from(((self.utc_offset << 1) as i8) >> 1);
            secs -= steps * 15 * 60;
        }
        Some(Timestamp {
            secs,
            nanos: u32::from(ten_ms % 100) * 10_000_000,
        })
    }
}

/// One file or directory: its file directory entry set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSet {
    /// The name as UTF-16 units (for case-insensitive lookup).
    pub units: Vec<u16>,
    /// The name (an unpaired surrogate shown as U+FFFD).
    pub name: String,
    /// FileAttributes.
    pub attributes: u16,
    /// Create time group.
    pub created: RawTime,
    /// Last-modified time group.
    pub modified: RawTime,
    /// Last-accessed time group.
    pub accessed: RawTime,
    /// The stream extension's GeneralSecondaryFlags (bit 0
    /// AllocationPossible, bit 1 NoFatChain).
    pub flags: u8,
    /// ValidDataLength.
    pub valid_length: u64,
    /// FirstCluster.
    pub first_cluster: u32,
    /// DataLength.
    pub data_length: u64,
    /// Byte offset of the File entry on the volume.
    pub offset: u64,
}

impl FileSet {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.attributes & attr::DIRECTORY != 0
    }
    /// Whether clusters are allocated (AllocationPossible and a first cluster).
    pub fn allocated(&self) -> bool {
        self.flags & 1 != 0 && self.first_cluster != 0
    }
    /// Whether the clusters are contiguous (NoFatChain).
    pub fn contiguous(&self) -> bool {
        self.flags & 2 != 0
    }
}

/// Where the root directory's up-case table lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpCaseEntry {
    /// TableChecksum.
    pub checksum: u32,
    /// FirstCluster.
    pub first_cluster: u32,
    /// DataLength.
    pub data_length: u64,
}

/// An entry set that fails its checks: the name it could give (or its
/// offset) and the error.
pub type SetError = Box<(String, Error)>;

/// What one directory holds.
#[derive(Debug, Default)]
pub struct Directory {
    /// Its files and directories, in order; an entry set that fails its
    /// checks is the name it could give (or its offset) and the error.
    pub files: Vec<std::result::Result<FileSet, SetError>>,
    /// The volume label entry's label (root directory only).
    pub label: Option<String>,
    /// The up-case table entry (root directory only).
    pub up_case: Option<UpCaseEntry>,
}

/// The 16-bit set checksum of §6.3.3 over an entry set, bytes 2 and 3 of
/// the first entry (the checksum itself) left out.
pub fn set_checksum(set: &[u8]) -> u16 {
    set.iter()
        .enumerate()
        .filter(|(i, _)| *i != 2 && *i != 3)
        .fold(0u16, |sum, (_, &b)| {
            sum.rotate_right(1).wrapping_add(u16::from(b))
        })
}

fn units(b: &[u8]) -> impl Iterator<Item = u16> + '_ {
    b.chunks_exact(2).map(|c| {
        u16::from_le_bytes([
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
        ])
    })
}

/// The label held by a volume label entry (type 0x83, §7.3): its
/// CharacterCount (at most 11) UTF-16 units.
pub fn volume_label(e: &[u8]) -> String {
    let n = usize::from(e.get(1).copied().unwrap_or(0)).min(11);
    let label: Vec<u16> = units(e.get(2..2 + 2 * n).unwrap_or_default()).collect();
    String::from_utf16_lossy(&label)
}

/// Parses the entries of a directory: `bytes` is its data (whole
/// clusters, in order), `offset_of(i)` the volume byte offset of byte `i`
/// (for errors), `root` whether it is the root directory.
pub fn parse(
    bytes: &[u8],
    offset_of: &dyn Fn(usize) -> u64,
    root: bool,
    path: &str,
) -> Result<Directory> {
    let mut dir = Directory::default();
    let count = bytes.len() / ENTRY;
    let entry = |i: usize| bytes.get(i * ENTRY..(i + 1) * ENTRY).unwrap_or_default();
    let mut i = 0;
    while i < count {
        let e = entry(i);
        let ty = e.first().copied().unwrap_or(0);
        match ty {
            0x00 => break,
            0x83 if root => dir.label = Some(volume_label(e)),
            0x82 if root => {
                dir.up_case = Some(UpCaseEntry {
                    checksum: le_u32(e, 4).unwrap_or(0),
                    first_cluster: le_u32(e, 20).unwrap_or(0),
                    data_length: le_u64(e, 24).unwrap_or(0),
                });
            }
            0x85 => {
                let secondary = usize::from(e.get(1).copied().unwrap_or(0));
                if dir.files.len() >= MAX_DIR_FILES {
                    return Err(Error::limit(
                        FS,
                        Some(path),
                        format!("directory of more than {MAX_DIR_FILES} files"),
                    ));
                }
                let at = offset_of(i * ENTRY);
                let end = (i + 1 + secondary).min(count);
                let set = bytes.get(i * ENTRY..end * ENTRY).unwrap_or_default();
                dir.files.push(parse_set(set, secondary, at, path));
                // A set that fails leaves the entries after its File entry
                // to be read as they are (they may start good sets).
                i = match dir.files.last() {
                    Some(Ok(_)) => end,
                    _ => i + 1,
                };
                continue;
            }
            // Deleted entries (InUse clear), the allocation bitmap, the
            // volume GUID, TexFAT padding, vendor entries and secondary
            // entries outside a set: nothing to list.
            _ => {}
        }
        i += 1;
    }
    Ok(dir)
}

/// Checks and reads one file directory entry set (`set`: its entries,
/// possibly cut short by the directory's end; `secondary`: its
/// SecondaryCount; `at`: the volume offset of its File entry).
fn parse_set(
    set: &[u8],
    secondary: usize,
    at: u64,
    path: &str,
) -> std::result::Result<FileSet, SetError> {
    let fail = |name: &str, what: String, off: usize| -> SetError {
        let shown = if name.is_empty() {
            format!("(entry set at {at:#x})")
        } else {
            name.to_string()
        };
        let full = crate::file_system::join(path, &shown);
        Box::new((
            shown,
            Error::corrupt(FS, Some(&full), what).at(at + off as u64),
        ))
    };
    if !(2..=18).contains(&secondary) {
        return Err(fail(
            "",
            format!("SecondaryCount is {secondary}, expected 2..=18"),
            1,
        ));
    }
    if set.len() < (secondary + 1) * ENTRY {
        return Err(fail(
            "",
            format!(
                "entry set of {} entries runs past the end of the directory",
                secondary + 1
            ),
            0,
        ));
    }
    let entry = |k: usize| set.get(k * ENTRY..(k + 1) * ENTRY).unwrap_or_default();
    let ty = |k: usize| entry(k).first().copied().unwrap_or(0);
    // The stream extension, then the name; read the name first so that
    // later errors can carry it.
    let stream = entry(1);
    if ty(1) != 0xC0 {
        return Err(fail(
            "",
            format!(
                "entry after the File entry is type {:#04x}, expected a stream extension (0xc0)",
                ty(1)
            ),
            ENTRY,
        ));
    }
    let name_len = usize::from(stream.get(3).copied().unwrap_or(0));
    let name_entries = name_len.div_ceil(15);
    if name_len == 0 || 1 + name_entries > secondary {
        return Err(fail(
            "",
            format!("NameLength {name_len} does not fit in {secondary} secondary entries"),
            ENTRY + 3,
        ));
    }
    let mut name_units = Vec::with_capacity(name_len);
    for k in 2..2 + name_entries {
        if ty(k) != 0xC1 {
            return Err(fail(
                "",
                format!(
                    "entry {k} of the set is type {:#04x}, expected a file name (0xc1)",
                    ty(k)
                ),
                k * ENTRY,
            ));
        }
        name_units.extend(units(entry(k).get(2..ENTRY).unwrap_or_default()));
    }
    name_units.truncate(name_len);
    let name = String::from_utf16_lossy(&name_units);
    for k in 2 + name_entries..=secondary {
        let t = ty(k);
        if t & 0x80 == 0 {
            return Err(fail(
                &name,
                format!("secondary entry {k} of the set is not in use ({t:#04x})"),
                k * ENTRY,
            ));
        }
        if t & 0x20 == 0 {
            return Err(Box::new((
                name.clone(),
                Error::unsupported(
                    FS,
                    Some(&crate::file_system::join(path, &name)),
                    format!("critical secondary entry type {t:#04x} in the set at {at:#x}"),
                ),
            )));
        }
    }
    let file = entry(0);
    let stored = le_u16(file, 2).unwrap_or(0);
    let computed = set_checksum(set.get(..(secondary + 1) * ENTRY).unwrap_or_default());
    if stored != computed {
        return Err(fail(
            &name,
            format!("SetChecksum is {stored:#06x}, the set sums to {computed:#06x}"),
            2,
        ));
    }
    let time = |stamp_at: usize, ten_ms_at: Option<usize>, offset_at: usize| RawTime {
        stamp: le_u32(file, stamp_at).unwrap_or(0),
        ten_ms: ten_ms_at.and_then(|o| file.get(o).copied()).unwrap_or(0),
        utc_offset: file.get(offset_at).copied().unwrap_or(0),
    };
    let f = FileSet {
        units: name_units,
        name,
        attributes: le_u16(file, 4).unwrap_or(0),
        created: time(8, Some(20), 22),
        modified: time(12, Some(21), 23),
        accessed: time(16, None, 24),
        flags: stream.get(1).copied().unwrap_or(0),
        valid_length: le_u64(stream, 8).unwrap_or(0),
        first_cluster: le_u32(stream, 20).unwrap_or(0),
        data_length: le_u64(stream, 24).unwrap_or(0),
        offset: at,
    };
    if f.valid_length > f.data_length {
        return Err(fail(
            &f.name,
            format!(
                "ValidDataLength {} is more than DataLength {}",
                f.valid_length, f.data_length
            ),
            ENTRY + 8,
        ));
    }
    Ok(f)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid entry set for `name` (a file of `len` bytes at cluster 5,
    /// contiguous) with its checksum.
    pub(crate) fn set(name: &str, len: u64) -> Vec<u8> {
        let u: Vec<u16> = name.encode_utf16().collect();
        let n = u.len().div_ceil(15);
        let mut b = vec![0u8; (2 + n) * ENTRY];
        b[0] = 0x85;
        b[1] = (1 + n) as u8;
        b[4] = attr::ARCHIVE as u8;
        // 2020-09-13 12:26:40 local, +1.57 s, UTC offset +2 h (8 steps).
        let stamp: u32 = (40 << 25) | (9 << 21) | (13 << 16) | (12 << 11) | (26 << 5) | 20;
        b[12..16].copy_from_slice(&stamp.to_le_bytes());
        b[21] = 157;
        b[23] = 0x80 | 8;
        b[32] = 0xC0;
        b[33] = 3;
        b[35] = u.len() as u8;
        b[40..48].copy_from_slice(&len.to_le_bytes());
        b[52..56].copy_from_slice(&5u32.to_le_bytes());
        b[56..64].copy_from_slice(&len.to_le_bytes());
        for (k, c) in u.iter().enumerate() {
            let at = 64 + (k / 15) * ENTRY + 2 + (k % 15) * 2;
            b[at..at + 2].copy_from_slice(&c.to_le_bytes());
        }
        for k in 0..n {
            b[64 + k * ENTRY] = 0xC1;
        }
        let sum = set_checksum(&b);
        b[2..4].copy_from_slice(&sum.to_le_bytes());
        b
    }

    fn parse_one(b: &[u8]) -> std::result::Result<FileSet, SetError> {
        let d = parse(b, &|i| 0x1000 + i as u64, false, "/d").unwrap();
        assert_eq!(d.files.len(), 1);
        d.files.into_iter().next().unwrap()
    }

    #[test]
    fn golden_set_and_its_time() {
        let f = parse_one(&set("a long name of twenty", 9)).unwrap();
        assert_eq!(f.name, "a long name of twenty");
        assert_eq!(f.data_length, 9);
        assert!(f.contiguous() && f.allocated() && !f.is_dir());
        let t = f.modified.to_timestamp().unwrap();
        // 1600000000 is 12:26:40 UTC; local +2 h → UTC 10:26:41.57.
        assert_eq!(t.secs, 1_600_000_000 - 7200 + 1);
        assert_eq!(t.nanos, 570_000_000);
        assert_eq!(f.created.to_timestamp(), None);
    }

    #[test]
    fn negative_utc_offset() {
        // -5 h = -20 steps: 7-bit two's complement 0x6C.
        let t = RawTime {
            stamp: (40 << 25) | (9 << 21) | (13 << 16),
            ten_ms: 0,
            utc_offset: 0x80 | 0x6C,
        };
        assert_eq!(t.to_timestamp().unwrap().secs % 86_400, 5 * 3600);
    }

    #[test]
    fn one_field_mutations_are_named() {
        let good = set("x", 1);
        let mut b = good.clone();
        b[40] = 2; // ValidDataLength 2 > DataLength 1 (checksum left stale)
        let (name, e) = *parse_one(&b).unwrap_err();
        assert_eq!(name, "x");
        assert!(e.to_string().contains("SetChecksum is"), "{e}");
        let mut b = good.clone();
        b[1] = 1;
        let (name, e) = *parse_one(&b).unwrap_err();
        assert_eq!(name, "(entry set at 0x1000)");
        assert_eq!(
            e.to_string(),
            "exFAT: corrupt /d/(entry set at 0x1000) at 0x1001: SecondaryCount is 1, expected 2..=18"
        );
        let mut b = good.clone();
        b[1] = 3; // past the end of the directory
        assert!(parse_one(&b)
            .unwrap_err()
            .1
            .to_string()
            .contains("runs past the end"));
        let mut b = good.clone();
        b[32] = 0xC1;
        assert!(parse_one(&b)
            .unwrap_err()
            .1
            .to_string()
            .contains("expected a stream extension"));
        let mut b = good;
        b[35] = 16; // needs two name entries
        assert!(parse_one(&b)
            .unwrap_err()
            .1
            .to_string()
            .contains("NameLength 16"));
    }

    #[test]
    fn end_marker_and_deleted_entries() {
        let mut b = vec![0x05u8; ENTRY]; // deleted File entry
        b.extend(set("kept", 0));
        b.extend([0u8; ENTRY]);
        b.extend(set("after the end", 0));
        let d = parse(&b, &|i| i as u64, false, "/").unwrap();
        assert_eq!(d.files.len(), 1);
        assert_eq!(d.files[0].as_ref().unwrap().name, "kept");
    }
}
