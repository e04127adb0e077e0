//! The log ([MS-VHDX] 2.3): a circular buffer of entries, each a header,
//! zero and data descriptors and the data sectors they describe. When the
//! current header's `LogGuid` is set, the active sequence — the valid run of
//! entries with consecutive sequence numbers ending at the newest entry,
//! starting where that entry's `Tail` points — must be replayed before the
//! region tables, metadata and BAT are read.
//!
//! Replay here writes into the in-memory [`FileView`] overlay, never into
//! the file. A damaged entry (bad CRC-32C or inconsistent descriptors) at
//! or after the newest valid one means the log's state cannot be trusted:
//! the log is then ignored with a warning and nothing is applied.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Detail, Error, Format, Result};
use crate::image::{WarningKind, Warnings};

use super::fields::{le_u32, le_u64, Guid};
use super::file_view::FileView;
use super::header::{Header, KIB};
use crate::crc32c;

/// Log entries and sectors are aligned to 4 KiB.
pub(crate) const LOG_SECTOR_SIZE: u64 = 4 * KIB;
/// The largest log this reader loads into memory (Hyper-V writes 1 MiB).
pub(crate) const MAX_LOG_LENGTH: u64 = 256 * KIB * KIB;
/// Entry header signature `loge`.
const ENTRY_SIGNATURE: &[u8; 4] = b"loge";
/// Zero descriptor signature `zero`.
const ZERO_SIGNATURE: &[u8; 4] = b"zero";
/// Data descriptor signature `desc`.
const DATA_SIGNATURE: &[u8; 4] = b"desc";
/// Data sector signature `data`.
const DATA_SECTOR_SIGNATURE: &[u8; 4] = b"data";
/// Size of the entry header.
const ENTRY_HEADER_SIZE: u64 = 64;
/// Size of one descriptor.
const DESCRIPTOR_SIZE: u64 = 32;

/// One write the log asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Write {
    Zero { offset: u64, len: u64 },
    Data { offset: u64, sector: Vec<u8> },
}

/// A log entry that passed every check.
#[derive(Debug, Clone)]
struct Entry {
    offset: u64,
    length: u64,
    tail: u64,
    sequence: u64,
    flushed_file_offset: u64,
    last_file_offset: u64,
    writes: Vec<Write>,
}

/// What a replay did, for `info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replay {
    /// Entries applied.
    pub(crate) entries: usize,
    /// Zero and data descriptors applied.
    pub(crate) descriptors: usize,
    /// Sequence numbers of the first and last entry applied.
    pub(crate) sequences: (u64, u64),
}

/// Why a candidate entry at some offset was rejected.
struct Damaged {
    sequence: u64,
    why: String,
}

/// Copies `len` bytes at `offset` of the circular log.
fn circular(log: &[u8], offset: u64, len: u64) -> Option<Vec<u8>> {
    let size = log.len() as u64;
    if len > size || offset >= size {
        return None;
    }
    let start = usize::try_from(offset).ok()?;
    let len = usize::try_from(len).ok()?;
    let first = len.min(log.len() - start);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(log.get(start..start + first)?);
    out.extend_from_slice(log.get(..len - first)?);
    Some(out)
}

/// Parses the entry at `offset` of the log. `Ok(None)`: no entry of this
/// log starts here. `Err`: one does, but it is damaged.
fn parse_entry(log: &[u8], offset: u64, guid: &Guid) -> Result<Option<Entry>, Damaged> {
    let Some(head) = circular(log, offset, ENTRY_HEADER_SIZE) else {
        return Ok(None);
    };
    if head.get(..4) != Some(ENTRY_SIGNATURE.as_slice()) || Guid::read_le(&head, 32) != *guid {
        return Ok(None);
    }
    let sequence = le_u64(&head, 16);
    let damaged = |why: String| Err(Damaged { sequence, why });
    let length = u64::from(le_u32(&head, 8));
    let tail = u64::from(le_u32(&head, 12));
    let count = u64::from(le_u32(&head, 24));
    let size = log.len() as u64;
    if length == 0 || length % LOG_SECTOR_SIZE != 0 || length > size {
        return damaged(format!(
            "entry length {length} is not a 4 KiB multiple within the log"
        ));
    }
    if tail % LOG_SECTOR_SIZE != 0 || tail >= size {
        return damaged(format!("tail {tail:#x} is not a 4 KiB-aligned log offset"));
    }
    let Some(bytes) = circular(log, offset, length) else {
        return damaged("entry does not fit in the log".into());
    };
    let stored = le_u32(&bytes, 4);
    let computed = crc32c::checksum_with_hole(&bytes, 4);
    if stored != computed {
        return damaged(format!(
            "entry checksum: stored {stored:#x}, computed {computed:#x}"
        ));
    }
    let descriptor_bytes = (ENTRY_HEADER_SIZE + count.saturating_mul(DESCRIPTOR_SIZE))
        .div_ceil(LOG_SECTOR_SIZE)
        .saturating_mul(LOG_SECTOR_SIZE);
    if descriptor_bytes > length {
        return damaged(format!("{count} descriptors do not fit in {length} bytes"));
    }
    let mut writes = Vec::new();
    let mut data_sector = descriptor_bytes;
    for i in 0..count {
        let d = usize::try_from(ENTRY_HEADER_SIZE + i * DESCRIPTOR_SIZE).unwrap_or(usize::MAX);
        let sig = bytes.get(d..d.saturating_add(4));
        let file_offset = le_u64(&bytes, d + 16);
        if le_u64(&bytes, d + 24) != sequence {
            return damaged(format!("descriptor {i} has another sequence number"));
        }
        if file_offset % LOG_SECTOR_SIZE != 0 {
            return damaged(format!(
                "descriptor {i} file offset {file_offset:#x} is not 4 KiB-aligned"
            ));
        }
        if sig == Some(ZERO_SIGNATURE.as_slice()) {
            let len = le_u64(&bytes, d + 8);
            if len % LOG_SECTOR_SIZE != 0 {
                return damaged(format!(
                    "zero descriptor {i} length {len} is not a 4 KiB multiple"
                ));
            }
            writes.push(Write::Zero {
                offset: file_offset,
                len,
            });
        } else if sig == Some(DATA_SIGNATURE.as_slice()) {
            let trailing = le_u32(&bytes, d + 4).to_le_bytes();
            let leading = le_u64(&bytes, d + 8).to_le_bytes();
            let s = usize::try_from(data_sector).unwrap_or(usize::MAX);
            let Some(sector) = bytes.get(s..s.saturating_add(LOG_SECTOR_SIZE as usize)) else {
                return damaged(format!(
                    "data sector of descriptor {i} is past the entry's end"
                ));
            };
            let high = u64::from(le_u32(sector, 4));
            let low = u64::from(le_u32(sector, 4092));
            if sector.get(..4) != Some(DATA_SECTOR_SIGNATURE.as_slice())
                || (high << 32 | low) != sequence
            {
                return damaged(format!("data sector of descriptor {i} does not match it"));
            }
            let mut out = Vec::with_capacity(LOG_SECTOR_SIZE as usize);
            out.extend_from_slice(&leading);
            out.extend_from_slice(sector.get(8..4092).unwrap_or_default());
            out.extend_from_slice(&trailing);
            writes.push(Write::Data {
                offset: file_offset,
                sector: out,
            });
            data_sector += LOG_SECTOR_SIZE;
        } else {
            return damaged(format!("descriptor {i} has an unknown signature"));
        }
    }
    Ok(Some(Entry {
        offset,
        length,
        tail,
        sequence,
        flushed_file_offset: le_u64(&head, 48),
        last_file_offset: le_u64(&head, 56),
        writes,
    }))
}

/// The active sequence: from the newest entry whose tail leads through
/// consecutive valid entries back to it.
fn active_sequence(entries: &HashMap<u64, Entry>, log_len: u64) -> Option<Vec<&Entry>> {
    let mut heads: Vec<&Entry> = entries.values().collect();
    heads.sort_by_key(|e| std::cmp::Reverse(e.sequence));
    for head in heads {
        let mut seq = Vec::new();
        let Some(mut cur) = entries.get(&head.tail) else {
            continue;
        };
        loop {
            if let Some(prev) = seq.last() {
                let prev: &&Entry = prev;
                if cur.sequence != prev.sequence.wrapping_add(1) {
                    break;
                }
            }
            seq.push(cur);
            if std::ptr::eq(cur, head) {
                return Some(seq);
            }
            if seq.len() > entries.len() {
                break;
            }
            let next = (cur.offset + cur.length) % log_len;
            match entries.get(&next) {
                Some(e) => cur = e,
                None => break,
            }
        }
    }
    None
}

/// Replays the log of `header` into `view` when its `LogGuid` is set.
/// Returns what was replayed, or `None` when nothing was (no log, or a log
/// ignored with a warning).
pub(crate) fn replay(
    view: &mut FileView,
    header: &Header,
    warnings: &mut Warnings,
) -> Result<Option<Replay>> {
    if header.log_guid.is_nil() {
        return Ok(None);
    }
    let length = u64::from(header.log_length);
    let at = header.log_offset;
    if length == 0 {
        return Err(Error::corrupt(
            Format::Vhdx,
            Detail::Invalid("LogGuid is set but LogLength is 0".into()),
        )
        .at(at));
    }
    if length > MAX_LOG_LENGTH {
        return Err(Error::limit(Format::Vhdx, "LogLength", length, MAX_LOG_LENGTH).at(at));
    }
    // The log and the entries parsed from it are in memory together.
    let parsing = view
        .file()
        .budget()
        .reserve(Format::Vhdx, length.saturating_mul(2))
        .map_err(|e| e.at(at).in_file(view.file().path()))?;
    let log = view.read_vec(at, length)?;
    let mut entries = HashMap::new();
    let mut damaged: Vec<(u64, Damaged)> = Vec::new();
    for offset in (0..length).step_by(LOG_SECTOR_SIZE as usize) {
        match parse_entry(&log, offset, &header.log_guid) {
            Ok(Some(e)) => {
                entries.insert(offset, e);
            }
            Ok(None) => {}
            Err(d) => damaged.push((offset, d)),
        }
    }
    let active = active_sequence(&entries, length);
    let newest = active.as_ref().and_then(|s| s.last()).map(|e| e.sequence);
    let blocking = damaged
        .iter()
        .find(|(_, d)| newest.is_none_or(|n| d.sequence >= n));
    let ignore = |why: String, offset: u64, warnings: &mut Warnings| {
        warnings.tolerate(
            WarningKind::LogIgnored,
            Error::corrupt(
                Format::Vhdx,
                Detail::Invalid(format!("log ignored, nothing replayed: {why}")),
            )
            .at(offset)
            .in_file(view.file().path()),
        )
    };
    if let Some((offset, d)) = blocking {
        ignore(
            format!(
                "log entry with sequence number {} is damaged ({})",
                d.sequence, d.why
            ),
            at + offset,
            warnings,
        )?;
        return Ok(None);
    }
    let Some(active) = active else {
        ignore("no valid log sequence was found".into(), at, warnings)?;
        return Ok(None);
    };
    let Some(head) = active.last() else {
        return Ok(None);
    };
    if head.flushed_file_offset > view.file().len() {
        return Err(Error::corrupt(
            Format::Vhdx,
            Detail::Truncated {
                what: "file according to the log's FlushedFileOffset".into(),
                needed: head.flushed_file_offset,
                available: view.file().len(),
            },
        )
        .at(at + head.offset));
    }
    let overlay: u64 = active
        .iter()
        .flat_map(|e| &e.writes)
        .map(|w| match w {
            Write::Data { sector, .. } => sector.len() as u64,
            Write::Zero { .. } => 0,
        })
        .sum();
    drop(parsing);
    let held = view
        .file()
        .budget()
        .reserve(Format::Vhdx, overlay)
        .map_err(|e| e.at(at).in_file(view.file().path()))?;
    view.hold(held);
    let mut descriptors = 0;
    for entry in &active {
        for w in &entry.writes {
            match w {
                Write::Zero { offset, len } => view.write_zeros(*offset, *len),
                Write::Data { offset, sector } => {
                    view.write(*offset, Arc::from(sector.as_slice()));
                }
            }
            descriptors += 1;
        }
    }
    view.extend_to(head.last_file_offset);
    let first = active.first().map_or(head.sequence, |e| e.sequence);
    Ok(Some(Replay {
        entries: active.len(),
        descriptors,
        sequences: (first, head.sequence),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_file::ImageFile;
    use crate::options::OpenOptions;
    use crate::ErrorKind;

    const LOG_AT: u64 = 1 << 20;
    const GUID: Guid = Guid([0x77; 16]);

    /// An entry writing one data sector of `fill` at file
    /// offset 2 MiB and zeroing 8 KiB at 2 MiB + 4 KiB.
    fn entry(seq: u64, tail: u32, fill: u8) -> Vec<u8> {
        let mut e = vec![0u8; 8192];
        e[..4].copy_from_slice(b"loge");
        e[8..12].copy_from_slice(&8192u32.to_le_bytes());
        e[12..16].copy_from_slice(&tail.to_le_bytes());
        e[16..24].copy_from_slice(&seq.to_le_bytes());
        e[24..28].copy_from_slice(&2u32.to_le_bytes());
        e[32..48].copy_from_slice(&GUID.0);
        e[48..56].copy_from_slice(&(3u64 << 20).to_le_bytes());
        e[56..64].copy_from_slice(&(3u64 << 20).to_le_bytes());
        let d = 64;
        e[d..d + 4].copy_from_slice(b"desc");
        e[d + 4..d + 8].copy_from_slice(&[fill; 4]);
        e[d + 8..d + 16].copy_from_slice(&[fill; 8]);
        e[d + 16..d + 24].copy_from_slice(&(2u64 << 20).to_le_bytes());
        e[d + 24..d + 32].copy_from_slice(&seq.to_le_bytes());
        let z = 96;
        e[z..z + 4].copy_from_slice(b"zero");
        e[z + 8..z + 16].copy_from_slice(&8192u64.to_le_bytes());
        e[z + 16..z + 24].copy_from_slice(&((2u64 << 20) + 4096).to_le_bytes());
        e[z + 24..z + 32].copy_from_slice(&seq.to_le_bytes());
        let s = 4096;
        e[s..s + 4].copy_from_slice(b"data");
        e[s + 4..s + 8].copy_from_slice(&((seq >> 32) as u32).to_le_bytes());
        e[s + 8..s + 4092].fill(fill);
        e[s + 4092..s + 4096].copy_from_slice(&(seq as u32).to_le_bytes());
        let c = crc32c::checksum_with_hole(&e, 4);
        e[4..8].copy_from_slice(&c.to_le_bytes());
        e
    }

    fn file(entries: &[(u32, Vec<u8>)]) -> FileView {
        let mut f = vec![0xEEu8; 3 << 20];
        for (off, e) in entries {
            f[(LOG_AT as usize) + *off as usize..][..e.len()].copy_from_slice(e);
        }
        FileView::new(ImageFile::from_bytes("l.vhdx", f))
    }

    fn header() -> Header {
        Header {
            copy: 1,
            sequence_number: 1,
            file_write_guid: Guid::NIL,
            data_write_guid: Guid::NIL,
            log_guid: GUID,
            log_version: 0,
            version: 1,
            log_length: 1 << 20,
            log_offset: LOG_AT,
        }
    }

    #[test]
    fn newest_sequence_is_replayed_in_memory() {
        // Entries 5 (tail at itself) and 6 (tail at entry 5): sequence 5..6.
        let mut v = file(&[(0, entry(5, 0, 0xA5)), (8192, entry(6, 0, 0xA6))]);
        let opts = OpenOptions::default();
        let mut w = Warnings::new(&opts);
        let r = replay(&mut v, &header(), &mut w).unwrap().unwrap();
        assert_eq!(r.entries, 2);
        assert_eq!(r.descriptors, 4);
        assert_eq!(r.sequences, (5, 6));
        let got = v.read_vec(2 << 20, 3 * 4096).unwrap();
        assert_eq!(&got[..8], &[0xA6; 8]);
        assert!(got[8..4092].iter().all(|&b| b == 0xA6));
        assert!(got[4096..].iter().all(|&b| b == 0));
        assert!(w.into_vec().is_empty());
    }

    #[test]
    fn damaged_newest_entry_makes_the_log_ignored() {
        let mut bad = entry(6, 0, 0xA6);
        bad[5000] ^= 1;
        let mut v = file(&[(0, entry(5, 0, 0xA5)), (8192, bad)]);
        let opts = OpenOptions::default();
        let mut w = Warnings::new(&opts);
        assert!(replay(&mut v, &header(), &mut w).unwrap().is_none());
        assert!(!v.has_overlay());
        let w = w.into_vec();
        assert_eq!(w[0].kind, WarningKind::LogIgnored);
        assert!(w[0].message.contains("checksum"), "{}", w[0].message);
        let strict = OpenOptions {
            strict: true,
            ..OpenOptions::default()
        };
        let mut w = Warnings::new(&strict);
        let e = replay(&mut v, &header(), &mut w).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn entries_of_another_log_and_a_nil_guid_are_not_replayed() {
        let mut v = file(&[(0, entry(5, 0, 0xA5))]);
        let opts = OpenOptions::default();
        let mut w = Warnings::new(&opts);
        let mut h = header();
        h.log_guid = Guid([0x78; 16]);
        assert!(replay(&mut v, &h, &mut w).unwrap().is_none());
        assert_eq!(w.into_vec()[0].kind, WarningKind::LogIgnored);
        h.log_guid = Guid::NIL;
        let mut w = Warnings::new(&opts);
        assert!(replay(&mut v, &h, &mut w).unwrap().is_none());
        assert!(w.into_vec().is_empty());
    }

    #[test]
    fn a_tail_that_does_not_lead_to_the_head_is_no_sequence() {
        // Entry 6's tail points at an empty slot: only entry 5 forms a sequence.
        let mut v = file(&[(0, entry(5, 0, 0xA5)), (8192, entry(6, 16384, 0xA6))]);
        let opts = OpenOptions::default();
        let mut w = Warnings::new(&opts);
        let r = replay(&mut v, &header(), &mut w).unwrap().unwrap();
        assert_eq!(r.sequences, (5, 5));
        assert_eq!(v.read_vec(2 << 20, 8).unwrap(), vec![0xA5; 8]);
    }
}
