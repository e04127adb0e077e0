//! Reading one chunk: a zlib stream checked by its own Adler-32, or the
//! chunk's bytes followed by their Adler-32 (specification section 3.8);
//! and a small sharded cache of decoded chunks for reads that take part
//! of a chunk (file-system reads of a few KiB inside 32 KiB chunks).

use std::sync::{Arc, Mutex};

use zune_inflate::errors::DecodeErrorStatus;
use zune_inflate::{DeflateDecoder, DeflateOptions};

use crate::budget::{MemoryBudget, Reservation};
use crate::bytes::zeroed::le_u32;
use crate::error::{Detail, Error, Format, Result};
use crate::image_file::ImageFile;

use super::checksum::adler32;
use super::table::ChunkLocation;

/// Slots of the decoded-chunk cache (chunk `n` goes to slot `n % SLOTS`).
pub const CACHE_SLOTS: usize = 32;
/// Most bytes a compressed chunk may take in its file beyond the chunk
/// size (zlib's worst-case growth is 5 bytes per 16 KiB block plus 11).
fn max_stored(chunk_len: u64) -> u64 {
    chunk_len + chunk_len / 1024 + 64
}

type Slot = Mutex<Option<(u64, Arc<[u8]>, Option<Reservation>)>>;

/// Decoded chunks kept for partial reads.
pub struct ChunkCache {
    slots: Vec<Slot>,
    budget: Arc<MemoryBudget>,
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl ChunkCache {
    /// An empty cache whose entries are charged to `budget`.
    pub fn new(budget: Arc<MemoryBudget>) -> Self {
        ChunkCache {
            slots: (0..CACHE_SLOTS).map(|_| Mutex::new(None)).collect(),
            budget,
        }
    }

    fn slot(&self, n: u64) -> Option<&Slot> {
        self.slots.get((n % CACHE_SLOTS as u64) as usize)
    }

    /// Chunk `n`, when cached.
    pub fn get(&self, n: u64) -> Option<Arc<[u8]>> {
        let guard = self.slot(n)?.lock().ok()?;
        match guard.as_ref() {
            Some((k, bytes, _)) if *k == n => Some(Arc::clone(bytes)),
            _ => None,
        }
    }

    /// Keeps chunk `n` when the budget allows.
    pub fn put(&self, n: u64, bytes: Arc<[u8]>) {
        let Some(slot) = self.slot(n) else { return };
        let Ok(mut guard) = slot.lock() else { return };
        // Drop the old entry first so its charge is given back.
        *guard = None;
        if let Some(r) = self.budget.try_reserve(bytes.len() as u64) {
            *guard = Some((n, bytes, Some(r)));
        }
    }
}

/// Decodes chunk `n` (`len` bytes of media, at `loc` in `file`) into
/// `out`, whose length is `len`; `sectors` is the chunk's first and last
/// media sector, for messages. Damage is a `Corrupt` error naming the
/// segment file, the chunk's offset in it, the chunk number and its
/// sectors (as `ewfverify` reports them).
pub fn decode(
    file: &ImageFile,
    n: u64,
    sectors: (u64, u64),
    loc: ChunkLocation,
    out: &mut [u8],
) -> Result<()> {
    let len = out.len() as u64;
    let path = file.path();
    let corrupt = |detail| {
        Error::corrupt(Format::Ewf, detail)
            .at(loc.offset)
            .in_file(path)
    };
    let checksum = |what: &str, stored: u32, computed: u32| {
        corrupt(Detail::Invalid(format!(
            "chunk {n} (sectors {}-{}): {what} checksum: stored {stored:#x}, computed {computed:#x}",
            sectors.0, sectors.1
        )))
    };
    if loc.offset >= file.len() {
        return Err(Error::out_of_range(
            Format::Ewf,
            "segment file (chunk)",
            loc.offset,
            len,
            file.len(),
        )
        .in_file(path));
    }
    if !loc.compressed {
        // The chunk's bytes, then their Adler-32.
        file.read_exact_at(out, loc.offset)
            .map_err(|e| e.in_format(Format::Ewf))?;
        let mut sum = [0u8; 4];
        file.read_exact_at(&mut sum, loc.offset + len)
            .map_err(|e| e.in_format(Format::Ewf))?;
        let (stored, computed) = (le_u32(&sum, 0), adler32(out));
        if stored != computed {
            return Err(checksum("uncompressed chunk Adler-32", stored, computed));
        }
        return Ok(());
    }
    let cap = max_stored(len);
    let want = match u64::from(loc.stored) {
        0 => cap,
        s => s.min(cap),
    };
    let avail = want.min(file.len() - loc.offset);
    let stream = file
        .read_vec(loc.offset, avail)
        .map_err(|e| e.in_format(Format::Ewf))?;
    let limit = usize::try_from(len).unwrap_or(usize::MAX);
    let options = DeflateOptions::default()
        .set_limit(limit)
        .set_size_hint(limit)
        .set_confirm_checksum(true);
    let bytes = DeflateDecoder::new_with_options(&stream, options)
        .decode_zlib()
        .map_err(|e| match e.error {
            DecodeErrorStatus::MismatchedAdler(stored, computed) => {
                checksum("compressed chunk (zlib Adler-32)", stored, computed)
            }
            other => corrupt(Detail::Invalid(format!(
                "chunk {n} (sectors {}-{}): zlib stream of {avail} bytes does not inflate to \
                 {len} bytes: {other:?}",
                sectors.0, sectors.1
            ))),
        })?;
    if bytes.len() as u64 != len {
        return Err(corrupt(Detail::Truncated {
            what: format!("inflated chunk {n} (sectors {}-{})", sectors.0, sectors.1),
            needed: len,
            available: bytes.len() as u64,
        }));
    }
    out.copy_from_slice(&bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zlib(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn loc(offset: u64, stored: u32, compressed: bool) -> ChunkLocation {
        ChunkLocation {
            segment: 0,
            offset,
            stored,
            compressed,
        }
    }

    #[test]
    fn both_kinds_decode_and_damage_is_a_checksum_error() {
        let chunk: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut file = chunk.clone();
        file.extend_from_slice(&adler32(&chunk).to_le_bytes());
        let z = zlib(&chunk);
        let zat = file.len() as u64;
        file.extend_from_slice(&z);
        let f = ImageFile::from_bytes("c.E01", file.clone());
        let mut out = vec![0u8; 4096];
        decode(&f, 0, (0, 7), loc(0, 4100, false), &mut out).unwrap();
        assert_eq!(out, chunk);
        decode(&f, 1, (8, 15), loc(zat, z.len() as u32, true), &mut out).unwrap();
        assert_eq!(out, chunk);

        let mut bad = file.clone();
        bad[100] ^= 1;
        let f = ImageFile::from_bytes("c.E01", bad);
        let e = decode(&f, 0, (0, 7), loc(0, 4100, false), &mut out).unwrap_err();
        assert_eq!((e.kind(), e.offset()), (crate::ErrorKind::Corrupt, Some(0)));
        assert!(e.to_string().contains("uncompressed chunk Adler-32"), "{e}");

        // A flipped Adler-32 trailer of the zlib stream.
        let mut bad = file;
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let f = ImageFile::from_bytes("c.E01", bad);
        let e = decode(&f, 1, (8, 15), loc(zat, z.len() as u32, true), &mut out).unwrap_err();
        assert!(e.to_string().contains("zlib Adler-32"), "{e}");
        let e = decode(&f, 1, (8, 15), loc(1 << 40, 0, true), &mut out).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::OutOfBounds);
    }
}
