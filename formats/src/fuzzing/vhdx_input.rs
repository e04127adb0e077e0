//! The input encoding of the `vhdx` fuzz target.
//!
//! A VHDX spreads its structures over the first megabytes of the file and
//! protects most of them with CRC-32C, so raw fuzz bytes rarely get past the
//! headers. The target therefore reads its input as a list of patches over
//! a zeroed file — a flags byte, a length byte (the file's length in MiB,
//! clamped to [`MIN_FILE_MIB`]..=[`MAX_FILE_MIB`]; 0 means
//! [`DEFAULT_FILE_MIB`]), then records of `offset: u32 LE, len: u16 LE,
//! bytes` — and, when flag bit 0 is set,
//! recomputes the checksums of both headers, both region tables and every
//! log entry the headers point at. Seeds stay a few KiB (only the non-zero
//! runs of a real file) while mutations reach metadata, BAT and log parsing.

use crate::crc32c;
use crate::vhdx::fields::{le_u16, le_u32, le_u64};
use crate::vhdx::header::{HEADER_1_OFFSET, HEADER_2_OFFSET, HEADER_SIZE};
use crate::vhdx::log::LOG_SECTOR_SIZE;
use crate::vhdx::region_table::{REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET, REGION_TABLE_SIZE};

/// Smallest file an input expands to, in MiB.
pub const MIN_FILE_MIB: u8 = 4;
/// Largest file an input expands to, in MiB (keeps each run fast).
pub const MAX_FILE_MIB: u8 = 32;
/// File length when the length byte is 0, in MiB.
pub const DEFAULT_FILE_MIB: u8 = 8;
/// Flag bit: recompute every checksum after patching.
pub const FIX_CHECKSUMS: u8 = 1;

/// Expands a fuzz input (see the module documentation) into VHDX file bytes.
pub fn expand_fuzz_input(data: &[u8]) -> Vec<u8> {
    let flags = data.first().copied().unwrap_or(0);
    let mib = match data.get(1).copied().unwrap_or(0) {
        0 => DEFAULT_FILE_MIB,
        m => m.clamp(MIN_FILE_MIB, MAX_FILE_MIB),
    };
    let mut file = vec![0u8; usize::from(mib) << 20];
    let mut rest = data.get(2..).unwrap_or_default();
    while rest.len() >= 6 {
        let offset = le_u32(rest, 0) as usize;
        let len = usize::from(le_u16(rest, 4));
        let body = rest.get(6..).unwrap_or_default();
        let take = len.min(body.len());
        let (chunk, tail) = body.split_at(take);
        if let Some(dst) = offset
            .checked_add(take)
            .and_then(|end| file.get_mut(offset..end))
        {
            dst.copy_from_slice(chunk);
        }
        rest = tail;
    }
    if flags & FIX_CHECKSUMS != 0 {
        fix_checksums(&mut file);
    }
    file
}

fn seal(file: &mut [u8], at: u64, len: u64) {
    let (Ok(at), Ok(len)) = (usize::try_from(at), usize::try_from(len)) else {
        return;
    };
    let Some(region) = at.checked_add(len).and_then(|end| file.get_mut(at..end)) else {
        return;
    };
    let crc = crc32c::checksum_with_hole(region, 4);
    if let Some(field) = region.get_mut(4..8) {
        field.copy_from_slice(&crc.to_le_bytes());
    }
}

fn fix_checksums(file: &mut [u8]) {
    for at in [HEADER_1_OFFSET, HEADER_2_OFFSET] {
        let Some(h) = file.get(at as usize..(at + HEADER_SIZE) as usize) else {
            continue;
        };
        let log_length = u64::from(le_u32(h, 68));
        let log_offset = le_u64(h, 72);
        let mut slot = 0;
        while slot < log_length.min(file.len() as u64) {
            let entry = log_offset.saturating_add(slot);
            let head = usize::try_from(entry)
                .ok()
                .and_then(|e| file.get(e..e.checked_add(12)?));
            if let Some(head) = head {
                if head.get(..4) == Some(b"loge".as_slice()) {
                    let len = u64::from(le_u32(head, 8));
                    seal(file, entry, len);
                }
            }
            slot += LOG_SECTOR_SIZE;
        }
    }
    for at in [HEADER_1_OFFSET, HEADER_2_OFFSET] {
        seal(file, at, HEADER_SIZE);
    }
    for at in [REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET] {
        seal(file, at, REGION_TABLE_SIZE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{open_in_memory, BlockDevice, MemoryFiles, OpenOptions};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    fn seeds() -> Vec<(PathBuf, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/vhdx");
        let mut out: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    #[test]
    fn patches_land_and_short_records_are_ignored() {
        let mut input = vec![0u8, 0];
        input.extend_from_slice(&8u32.to_le_bytes());
        input.extend_from_slice(&3u16.to_le_bytes());
        input.extend_from_slice(b"abc");
        input.extend_from_slice(&u32::MAX.to_le_bytes());
        input.extend_from_slice(&1u16.to_le_bytes());
        input.push(b'z');
        input.extend_from_slice(&[1, 2]);
        let f = expand_fuzz_input(&input);
        assert_eq!(f.len(), usize::from(DEFAULT_FILE_MIB) << 20);
        assert_eq!(expand_fuzz_input(&[0, 200]).len(), 32 << 20);
        assert_eq!(&f[8..11], b"abc");
        assert!(expand_fuzz_input(&[]).iter().all(|&b| b == 0));
    }

    /// The committed seeds are real images in this encoding: each must open
    /// as VHDX (so the encoding reaches the reader), and every one is also
    /// driven through the fuzzing contract, as the fuzz target does.
    #[test]
    fn fuzz_seeds_expand_to_images_that_open() {
        let seeds = seeds();
        assert!(!seeds.is_empty(), "no seeds in fuzz/corpus/vhdx");
        for (path, data) in seeds {
            let file = expand_fuzz_input(&data);
            let name = PathBuf::from("fuzz.vhdx");
            let mem: MemoryFiles = [(name.clone(), Arc::from(file.as_slice()))]
                .into_iter()
                .collect();
            let opts = OpenOptions {
                no_parents: true,
                ..OpenOptions::default()
            };
            let img = open_in_memory(&name, &mem, &opts)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(img.format(), crate::Format::Vhdx);
            assert!(img.size() > 0);
            crate::fuzzing::exercise("fuzz.vhdx", &file);
        }
    }
}
