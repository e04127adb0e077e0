//! The chunk index: where each chunk of the media is stored, built from
//! the `table` sections of every segment file (specification section
//! 3.9), with `table2` (its copy) used when a `table` is damaged.
//!
//! A table holds a 24-byte header (entry count, a 64-bit base offset,
//! an Adler-32 of the first 20 bytes), then one 32-bit entry per chunk
//! (bit 31: compressed; bits 0-30: offset from the base, or from the
//! start of the file when the base is 0) and an Adler-32 of the entries.
//! (The SMART and EnCase 1 layouts have no entries checksum: chunk data
//! follows the entries inside the table section.)
//! A chunk's stored size is the distance to the next chunk; the last
//! chunk of a table ends where its `sectors` section ends (or, in the
//! oldest layouts where chunk data sits inside the table section, where
//! the table section ends).

use crate::budget::Reservation;
use crate::bytes::zeroed::{le_u32, le_u64};
use crate::context::OpenContext;
use crate::error::{Detail, Error, Format, Result};
use crate::image_file::ImageFile;

use super::checksum::adler32;
use super::section::Section;

/// Bytes of a table header.
const TABLE_HEADER_LEN: u64 = 24;
/// Bit 31 of an entry: the chunk is zlib-compressed.
const COMPRESSED: u32 = 1 << 31;
/// Bits of a packed entry holding the file offset (a segment file under 256 TiB).
const OFFSET_BITS: u32 = 48;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
/// Bytes the index keeps per chunk (a packed `u64` and a `u32` size).
pub const BYTES_PER_CHUNK: u64 = 12;

/// Where one chunk is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLocation {
    /// Index of the segment file (0 for `.E01`).
    pub segment: usize,
    /// Offset of the chunk's bytes in that file.
    pub offset: u64,
    /// Bytes stored (0 when the table does not say: the chunk size bounds the read).
    pub stored: u32,
    /// Whether the bytes are a zlib stream.
    pub compressed: bool,
}

/// Every chunk's location, in media order.
#[derive(Debug)]
pub struct ChunkIndex {
    /// Per chunk: bit 63 compressed, bits 48-62 segment, bits 0-47 offset.
    packed: Vec<u64>,
    stored: Vec<u32>,
    _reservation: Reservation,
}

/// One table's entries: (offset in the file, stored size, compressed).
pub type Entries = Vec<(u64, u32, bool)>;

impl ChunkIndex {
    /// An empty index for `chunks` chunks, charged to the open's budget.
    pub fn new(ctx: &OpenContext<'_>, chunks: u32) -> Result<Self> {
        let reservation = ctx
            .budget()
            .reserve(Format::Ewf, u64::from(chunks) * BYTES_PER_CHUNK)?;
        let n = chunks as usize;
        Ok(ChunkIndex {
            packed: Vec::with_capacity(n),
            stored: Vec::with_capacity(n),
            _reservation: reservation,
        })
    }

    /// Chunks listed so far.
    pub fn len(&self) -> usize {
        self.packed.len()
    }

    /// Appends a table's entries for `segment`, keeping at most `limit`
    /// chunks in all (the volume's count: capacity was reserved for it).
    pub fn extend(&mut self, segment: usize, entries: &Entries, limit: usize) {
        let seg = (segment as u64 & 0x7fff) << OFFSET_BITS;
        for &(offset, stored, compressed) in entries {
            if self.packed.len() >= limit {
                return;
            }
            let flag = if compressed { 1u64 << 63 } else { 0 };
            self.packed.push(flag | seg | (offset & OFFSET_MASK));
            self.stored.push(stored);
        }
    }

    /// The location of chunk `n`, `None` past the listed chunks.
    pub fn get(&self, n: u64) -> Option<ChunkLocation> {
        let i = usize::try_from(n).ok()?;
        let p = *self.packed.get(i)?;
        Some(ChunkLocation {
            segment: ((p >> OFFSET_BITS) & 0x7fff) as usize,
            offset: p & OFFSET_MASK,
            stored: self.stored.get(i).copied().unwrap_or(0),
            compressed: p >> 63 != 0,
        })
    }
}

/// Reads the entries of a `table` or `table2` section. `sectors` is the
/// range of the last `sectors` section before it in the same file (where
/// the last chunk ends). Damage (checksums, counts past the section) is a
/// `Corrupt` error for the caller to answer with the copy.
pub fn read_entries(
    file: &ImageFile,
    section: &Section,
    sectors: Option<(u64, u64)>,
    max_entries: u64,
) -> Result<Entries> {
    let path = file.path();
    let start = section.data_offset();
    let data_len = section.data_len();
    if data_len < TABLE_HEADER_LEN || start + TABLE_HEADER_LEN > file.len() {
        return Err(Error::corrupt(
            Format::Ewf,
            Detail::Truncated {
                what: format!("{} section header", section.kind),
                needed: TABLE_HEADER_LEN,
                available: data_len.min(file.len().saturating_sub(start)),
            },
        )
        .at(start)
        .in_file(path));
    }
    let head = file.read_vec(start, TABLE_HEADER_LEN)?;
    let (stored, computed) = (
        le_u32(&head, 20),
        adler32(head.get(..20).unwrap_or_default()),
    );
    if stored != computed {
        return Err(Error::corrupt(
            Format::Ewf,
            Detail::Checksum {
                what: "table header Adler-32",
                stored: u64::from(stored),
                computed: u64::from(computed),
            },
        )
        .at(start)
        .in_file(path));
    }
    let count = u64::from(le_u32(&head, 0));
    let base = le_u64(&head, 8);
    let room =
        (data_len - TABLE_HEADER_LEN).min(file.len().saturating_sub(start + TABLE_HEADER_LEN));
    if count * 4 > room {
        return Err(Error::corrupt(
            Format::Ewf,
            Detail::Truncated {
                what: format!("{} entries of {}", count, section.kind),
                needed: count * 4,
                available: room,
            },
        )
        .at(start)
        .in_file(path));
    }
    if count > max_entries {
        return Err(Error::bad_value(
            Format::Ewf,
            "table entry count",
            count,
            format!("at most {max_entries} (the chunks the volume section leaves)"),
        )
        .at(start)
        .in_file(path));
    }
    let raw = file.read_vec(start + TABLE_HEADER_LEN, count * 4)?;
    let footer = start + TABLE_HEADER_LEN + count * 4;
    // The SMART and EnCase 1 layouts keep chunk data in the table section,
    // right after the entries, with no checksum of them in between.
    let inline = raw
        .get(..4)
        .is_some_and(|e| base.saturating_add(u64::from(le_u32(e, 0) & !COMPRESSED)) == footer);
    if room >= count * 4 + 4 && !inline {
        let stored = le_u32(&file.read_vec(footer, 4)?, 0);
        let computed = adler32(&raw);
        if stored != computed {
            return Err(Error::corrupt(
                Format::Ewf,
                Detail::Checksum {
                    what: "table entries Adler-32",
                    stored: u64::from(stored),
                    computed: u64::from(computed),
                },
            )
            .at(footer)
            .in_file(path));
        }
    }
    let section_end = start + data_len;
    let offsets: Vec<(u64, bool)> = raw
        .chunks_exact(4)
        .map(|e| {
            let v = le_u32(e, 0);
            (
                base.saturating_add(u64::from(v & !COMPRESSED)),
                v & COMPRESSED != 0,
            )
        })
        .collect();
    let mut out = Vec::with_capacity(offsets.len());
    for (i, &(offset, compressed)) in offsets.iter().enumerate() {
        let end = match offsets.get(i + 1) {
            Some(&(next, _)) => next,
            None => match sectors {
                Some((s, e)) if (s..e).contains(&offset) => e,
                _ if (start..section_end).contains(&offset) => section_end,
                _ => section.offset,
            },
        };
        let stored = u32::try_from(end.saturating_sub(offset)).unwrap_or(0);
        out.push((offset, stored, compressed));
    }
    Ok(out)
}

/// The path of segment `n` (1-based) of the set whose first file is
/// `first`: `.E01` to `.E99`, then `.EAA` to `.EZZ`, `.FAA` ... `.ZZZ`,
/// in the case of the first file's extension (`.e01`, `.s01` alike).
pub fn segment_path(first: &std::path::Path, n: u32) -> Option<std::path::PathBuf> {
    let ext = first.extension().and_then(|e| e.to_str()).unwrap_or("E01");
    let lead = ext
        .chars()
        .next()
        .filter(char::is_ascii_alphabetic)
        .unwrap_or('E');
    let upper = lead.is_ascii_uppercase();
    let name = if (1..=99).contains(&n) {
        format!("{lead}{n:02}")
    } else {
        let k = n.checked_sub(100)?;
        let first_letter = u32::from(lead.to_ascii_uppercase()) + k / 676;
        if first_letter > u32::from(b'Z') {
            return None;
        }
        let letters = [
            first_letter,
            u32::from(b'A') + k / 26 % 26,
            u32::from(b'A') + k % 26,
        ];
        let s: String = letters.iter().filter_map(|&c| char::from_u32(c)).collect();
        if upper {
            s
        } else {
            s.to_ascii_lowercase()
        }
    };
    Some(first.with_extension(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn segment_names_follow_libewf() {
        let p = Path::new("d/case.E01");
        assert_eq!(segment_path(p, 2).unwrap(), Path::new("d/case.E02"));
        assert_eq!(segment_path(p, 99).unwrap(), Path::new("d/case.E99"));
        assert_eq!(segment_path(p, 100).unwrap(), Path::new("d/case.EAA"));
        assert_eq!(segment_path(p, 101).unwrap(), Path::new("d/case.EAB"));
        assert_eq!(segment_path(p, 126).unwrap(), Path::new("d/case.EBA"));
        assert_eq!(segment_path(p, 776).unwrap(), Path::new("d/case.FAA"));
        assert_eq!(
            segment_path(Path::new("x.e01"), 100).unwrap(),
            Path::new("x.eaa")
        );
        assert_eq!(
            segment_path(p, 100 + 22 * 676 - 1).unwrap(),
            Path::new("d/case.ZZZ")
        );
        assert!(segment_path(p, 100 + 22 * 676).is_none());
    }

    fn table(entries: &[u32], base: u64, good: bool) -> (ImageFile, Section) {
        let mut d = vec![0u8; 76];
        let mut h = vec![0u8; 24];
        h[..4].copy_from_slice(&(entries.len() as u32).to_le_bytes());
        h[8..16].copy_from_slice(&base.to_le_bytes());
        let c = adler32(&h[..20]) ^ u32::from(!good);
        h[20..24].copy_from_slice(&c.to_le_bytes());
        d.extend_from_slice(&h);
        let raw: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        d.extend_from_slice(&raw);
        d.extend_from_slice(&adler32(&raw).to_le_bytes());
        let len = d.len() as u64;
        let s = Section {
            kind: "table".into(),
            offset: 0,
            next: len,
            size: len,
        };
        (ImageFile::from_bytes("t.E01", d), s)
    }

    #[test]
    fn entries_sizes_and_damage() {
        let (f, s) = table(&[0x10 | COMPRESSED, 0x30, 0x50 | COMPRESSED], 0x1000, true);
        let e = read_entries(&f, &s, Some((0x1000, 0x1060)), 10).unwrap();
        assert_eq!(
            e,
            vec![
                (0x1010, 0x20, true),
                (0x1030, 0x20, false),
                (0x1050, 0x10, true)
            ]
        );
        let err = read_entries(&f, &s, None, 2).unwrap_err();
        assert!(err.to_string().contains("table entry count is 3"), "{err}");
        let (f, s) = table(&[0x10], 0, false);
        let err = read_entries(&f, &s, None, 10).unwrap_err();
        assert!(err.to_string().contains("table header Adler-32"), "{err}");
    }
}
