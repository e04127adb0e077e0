//! The logical-to-physical map: chunk items from the superblock's system
//! chunk array, then from the chunk tree.
//!
//! Profiles read: single, DUP, RAID1 (and RAID1C3/C4), RAID0 and RAID10
//! for the stripes on this device. A read that needs a stripe on another
//! device is [`Unsupported`](crate::ErrorKind::Unsupported) naming that
//! device; RAID5/6 chunks are refused the same way.

use std::collections::BTreeMap;

use diskimage_formats::bytes::{le_u16, le_u64};

use super::FS;
use crate::error::{Error, Result};

/// Chunk type bits.
const RAID0: u64 = 0x8;
const RAID1: u64 = 0x10;
const DUP: u64 = 0x20;
const RAID10: u64 = 0x40;
const RAID5: u64 = 0x80;
const RAID6: u64 = 0x100;
const RAID1C3: u64 = 0x200;
const RAID1C4: u64 = 0x400;

/// Most chunks accepted (a 16 TiB volume of 1 GiB chunks has 16,384).
const MAX_CHUNKS: usize = 1 << 20;

/// One stripe: a device and the offset on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stripe {
    pub devid: u64,
    pub offset: u64,
}

/// One chunk: `length` logical bytes from its key offset.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub length: u64,
    pub stripe_len: u64,
    pub kind: u64,
    pub sub_stripes: u16,
    pub stripes: Vec<Stripe>,
}

/// The size of a chunk item with `n` stripes.
pub(crate) fn item_len(n: usize) -> usize {
    48 + 32 * n
}

impl Chunk {
    /// Parses a chunk item (`b` starts at the item); `Err` says what is wrong.
    pub fn parse(b: &[u8]) -> std::result::Result<Self, String> {
        let length = le_u64(b, 0).ok_or("chunk item cut short")?;
        let stripe_len = le_u64(b, 16).unwrap_or(0);
        let kind = le_u64(b, 24).unwrap_or(0);
        let n = usize::from(le_u16(b, 44).unwrap_or(0));
        let sub_stripes = le_u16(b, 46).unwrap_or(0);
        if n == 0 || b.len() < item_len(n) {
            return Err(format!("chunk item of {} bytes with {n} stripes", b.len()));
        }
        // The kernel writes 64 KiB stripes; anything not a power of two
        // of at least 4 KiB would split reads into absurdly many pieces.
        if length == 0 || stripe_len < 4096 || !stripe_len.is_power_of_two() {
            return Err(format!(
                "chunk of {length} bytes, stripe length {stripe_len}"
            ));
        }
        let stripes = (0..n)
            .map(|i| Stripe {
                devid: le_u64(b, 48 + 32 * i).unwrap_or(0),
                offset: le_u64(b, 56 + 32 * i).unwrap_or(0),
            })
            .collect();
        Ok(Chunk {
            length,
            stripe_len,
            kind,
            sub_stripes,
            stripes,
        })
    }
}

/// Every chunk by logical start.
#[derive(Debug, Default)]
pub(crate) struct ChunkMap {
    chunks: BTreeMap<u64, Chunk>,
    devid: u64,
}

impl ChunkMap {
    /// An empty map for device `devid`.
    pub fn new(devid: u64) -> Self {
        ChunkMap {
            chunks: BTreeMap::new(),
            devid,
        }
    }

    /// Adds (or replaces) the chunk at `logical`.
    pub fn insert(&mut self, logical: u64, chunk: Chunk) -> Result<()> {
        if self.chunks.len() >= MAX_CHUNKS {
            return Err(Error::limit(
                FS,
                None,
                format!("more than {MAX_CHUNKS} chunks"),
            ));
        }
        self.chunks.insert(logical, chunk);
        Ok(())
    }

    /// The chunk items of the system chunk array.
    pub fn from_sys_array(array: &[u8], devid: u64) -> Result<Self> {
        let mut map = ChunkMap::new(devid);
        let mut at = 0usize;
        while at < array.len() {
            let key = super::items::Key::parse(array, at)
                .ok_or_else(|| Error::corrupt(FS, None, "system chunk array cut short"))?;
            at += 17;
            if key.ty != super::items::CHUNK_ITEM {
                return Err(Error::corrupt(
                    FS,
                    None,
                    format!("system chunk array holds key type {}", key.ty),
                ));
            }
            let rest = array.get(at..).unwrap_or_default();
            let chunk = Chunk::parse(rest)
                .map_err(|e| Error::corrupt(FS, None, format!("system chunk array: {e}")))?;
            at += item_len(chunk.stripes.len());
            map.insert(key.offset, chunk)?;
        }
        Ok(map)
    }

    /// Where `len` bytes at `logical` are on this device: the runs
    /// (physical offset, length) in order, one per copy to try first.
    /// `copy` picks another mirror of DUP/RAID1 chunks (0: the first).
    pub fn map(&self, logical: u64, len: u64, copy: usize) -> Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        let mut at = logical;
        let end = logical.checked_add(len).ok_or_else(|| {
            Error::corrupt(
                FS,
                None,
                format!("logical range {logical:#x}+{len} overflows"),
            )
        })?;
        while at < end {
            let (&start, chunk) = self
                .chunks
                .range(..=at)
                .next_back()
                .filter(|(s, c)| at - **s < c.length)
                .ok_or_else(|| {
                    Error::corrupt(FS, None, format!("logical address {at:#x} is in no chunk"))
                })?;
            let off = at - start;
            let in_chunk = (chunk.length - off).min(end - at);
            let (phys, n) = self.map_in_chunk(chunk, start, off, in_chunk, copy)?;
            out.push((phys, n));
            at += n;
        }
        Ok(out)
    }

    /// How many copies the chunk holding `logical` keeps on this device.
    pub fn copies(&self, logical: u64) -> usize {
        self.chunks
            .range(..=logical)
            .next_back()
            .map_or(1, |(_, c)| {
                if c.kind & (DUP | RAID1 | RAID1C3 | RAID1C4) != 0 {
                    c.stripes
                        .iter()
                        .filter(|s| s.devid == self.devid)
                        .count()
                        .max(1)
                } else {
                    1
                }
            })
    }

    fn map_in_chunk(
        &self,
        chunk: &Chunk,
        start: u64,
        off: u64,
        len: u64,
        copy: usize,
    ) -> Result<(u64, u64)> {
        let missing = |devid: u64| {
            Error::unsupported(
                FS,
                None,
                format!(
                    "the chunk at logical {start:#x} needs device {devid} of a multi-device \
                     volume, which is not in the disk set (this is device {})",
                    self.devid
                ),
            )
        };
        let phys = |s: &Stripe, o: u64| {
            s.offset.checked_add(o).ok_or_else(|| {
                Error::corrupt(
                    FS,
                    None,
                    format!("chunk at {start:#x}: stripe offset overflows"),
                )
            })
        };
        if chunk.kind & (RAID5 | RAID6) != 0 {
            return Err(Error::unsupported(
                FS,
                None,
                format!("RAID5/6 chunk at logical {start:#x}"),
            ));
        }
        if chunk.kind & (RAID0 | RAID10) != 0 {
            let sl = chunk.stripe_len;
            let sub = if chunk.kind & RAID10 != 0 {
                u64::from(chunk.sub_stripes.max(1))
            } else {
                1
            };
            let n = chunk.stripes.len() as u64;
            let factor = (n / sub).max(1);
            let nr = off / sl;
            let in_stripe = off % sl;
            let len = len.min(sl - in_stripe);
            let first = (nr % factor) * sub;
            let row = nr / factor;
            let cands: Vec<&Stripe> = (first..first + sub)
                .filter_map(|i| chunk.stripes.get(usize::try_from(i).ok()?))
                .collect();
            let local: Vec<&&Stripe> = cands.iter().filter(|s| s.devid == self.devid).collect();
            let s = local
                .get(copy % local.len().max(1))
                .ok_or_else(|| missing(cands.first().map_or(0, |s| s.devid)))?;
            return Ok((phys(s, row * sl + in_stripe)?, len));
        }
        // single, DUP, RAID1, RAID1C3/C4: every stripe holds the whole chunk.
        let local: Vec<&Stripe> = chunk
            .stripes
            .iter()
            .filter(|s| s.devid == self.devid)
            .collect();
        let s = local
            .get(copy % local.len().max(1))
            .ok_or_else(|| missing(chunk.stripes.first().map_or(0, |s| s.devid)))?;
        Ok((phys(s, off)?, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(kind: u64, sub: u16, stripes: &[(u64, u64)]) -> Chunk {
        Chunk {
            length: 1 << 20,
            stripe_len: 0x1_0000,
            kind,
            sub_stripes: sub,
            stripes: stripes
                .iter()
                .map(|&(devid, offset)| Stripe { devid, offset })
                .collect(),
        }
    }

    #[test]
    fn dup_copies_and_raid0_stripes_map_as_the_kernel_lays_them_out() {
        let mut m = ChunkMap::new(1);
        m.insert(
            0x100_0000,
            chunk(DUP | 4, 0, &[(1, 0x10_0000), (1, 0x20_0000)]),
        )
        .unwrap();
        assert_eq!(m.map(0x100_0010, 16, 0).unwrap(), vec![(0x10_0010, 16)]);
        assert_eq!(m.map(0x100_0010, 16, 1).unwrap(), vec![(0x20_0010, 16)]);
        assert_eq!(m.copies(0x100_0010), 2);
        // RAID0 over two stripes of one device: 64 KiB units alternate.
        m.insert(
            0x200_0000,
            chunk(RAID0 | 1, 0, &[(1, 0x40_0000), (1, 0x80_0000)]),
        )
        .unwrap();
        assert_eq!(
            m.map(0x200_0000 + 0xFFF0, 0x20, 0).unwrap(),
            vec![(0x40_FFF0, 0x10), (0x80_0000, 0x10)]
        );
        // Third unit: back on stripe 0, one row down.
        assert_eq!(m.map(0x202_0000, 4, 0).unwrap(), vec![(0x41_0000, 4)]);
    }

    #[test]
    fn raid10_other_devices_and_raid56_are_refused_or_mapped() {
        let mut m = ChunkMap::new(1);
        // RAID10: pairs (1,2) and (1,3); unit 1 lives on the second pair.
        m.insert(
            0,
            chunk(RAID10 | 1, 2, &[(1, 0), (2, 0), (1, 0x10_0000), (3, 0)]),
        )
        .unwrap();
        assert_eq!(m.map(0x1_0000, 8, 0).unwrap(), vec![(0x10_0000, 8)]);
        // A single chunk on device 2 only: unsupported, naming it.
        m.insert(0x100_0000, chunk(1, 0, &[(2, 0)])).unwrap();
        let e = m.map(0x100_0000, 8, 0).unwrap_err();
        assert!(e.to_string().contains("device 2"), "{e}");
        m.insert(0x200_0000, chunk(RAID5 | 1, 0, &[(1, 0), (1, 0x1000)]))
            .unwrap();
        assert!(m
            .map(0x200_0000, 8, 0)
            .unwrap_err()
            .to_string()
            .contains("RAID5/6"));
        // No chunk there at all.
        assert!(m.map(0x900_0000, 8, 0).is_err());
        assert!(Chunk::parse(&[0u8; 40]).is_err());
    }
}
