//! The logical-to-physical map: chunk items from the superblock's system
//! chunk array, then from the chunk tree.
//!
//! Every profile but the parity ones is mapped: single and DUP, RAID1,
//! RAID1C3 and RAID1C4 (every stripe holds the whole chunk), RAID0
//! (64 KiB units dealt to the stripes in turn) and RAID10 (units dealt to
//! groups of `sub_stripes` mirrors). A logical address becomes a device
//! id and an offset on that device; a read takes the first copy on a
//! device that is present (or the `copy`-th, to try the others), and
//! fails naming the device when no copy is present. RAID5/6 chunks are
//! [`Unsupported`](crate::ErrorKind::Unsupported), naming the profile.

use std::collections::{BTreeMap, BTreeSet};

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
    /// The profile's name, as `btrfs filesystem df` prints it.
    pub fn profile(&self) -> &'static str {
        profile_name(self.kind)
    }

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

/// The name of the profile of chunk type `kind`.
pub(crate) fn profile_name(kind: u64) -> &'static str {
    if kind & RAID0 != 0 {
        "RAID0"
    } else if kind & RAID1 != 0 {
        "RAID1"
    } else if kind & DUP != 0 {
        "DUP"
    } else if kind & RAID10 != 0 {
        "RAID10"
    } else if kind & RAID5 != 0 {
        "RAID5"
    } else if kind & RAID6 != 0 {
        "RAID6"
    } else if kind & RAID1C3 != 0 {
        "RAID1C3"
    } else if kind & RAID1C4 != 0 {
        "RAID1C4"
    } else {
        "single"
    }
}

/// One piece of a mapped range: `len` bytes at `offset` on device `devid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub devid: u64,
    pub offset: u64,
    pub len: u64,
}

/// Every chunk by logical start, and the devices present.
#[derive(Debug, Default)]
pub(crate) struct ChunkMap {
    chunks: BTreeMap<u64, Chunk>,
    present: BTreeSet<u64>,
}

impl ChunkMap {
    /// An empty map reading the devices `present` (by device id).
    pub fn new(present: impl IntoIterator<Item = u64>) -> Self {
        ChunkMap {
            chunks: BTreeMap::new(),
            present: present.into_iter().collect(),
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

    /// The chunk items of the system chunk array, reading the devices
    /// `present`.
    pub fn from_sys_array(array: &[u8], present: impl IntoIterator<Item = u64>) -> Result<Self> {
        let mut map = ChunkMap::new(present);
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

    /// No longer reads device `devid`.
    pub fn remove_device(&mut self, devid: u64) {
        self.present.remove(&devid);
    }

    /// The chunks with a stripe on `devid` that have some byte with no
    /// copy on a present device (logical start and profile); parity
    /// chunks, never read, are not counted.
    pub fn chunks_lost_without(&self, devid: u64) -> Vec<(u64, &'static str)> {
        let present = |g: &[Stripe]| g.iter().any(|s| self.present.contains(&s.devid));
        self.chunks
            .iter()
            .filter(|(_, c)| c.stripes.iter().any(|s| s.devid == devid))
            .filter(|(_, c)| {
                if c.kind & (RAID5 | RAID6) != 0 {
                    false
                } else if c.kind & RAID10 != 0 {
                    let sub = usize::from(c.sub_stripes.max(1));
                    c.stripes.chunks(sub).any(|g| !present(g))
                } else if c.kind & (DUP | RAID1 | RAID1C3 | RAID1C4) != 0 {
                    !present(&c.stripes)
                } else {
                    c.stripes.chunks(1).any(|g| !present(g))
                }
            })
            .map(|(&at, c)| (at, c.profile()))
            .collect()
    }

    /// Where `len` bytes at `logical` are: the runs in order. `copy` picks
    /// among the copies on present devices (0: the first; taken modulo
    /// their number).
    pub fn map(&self, logical: u64, len: u64, copy: usize) -> Result<Vec<Run>> {
        self.map_with(logical, len, |start, chunk, cands| {
            let present: Vec<&Stripe> = cands
                .iter()
                .filter(|s| self.present.contains(&s.devid))
                .collect();
            match present.get(copy % present.len().max(1)) {
                Some(s) => Ok(**s),
                None => Err(self.absent(start, chunk, cands)),
            }
        })
    }

    /// Where `len` bytes at `logical` are on device `devid` alone, when
    /// every byte has a copy there.
    pub fn map_on(&self, logical: u64, len: u64, devid: u64) -> Option<Vec<Run>> {
        self.map_with(logical, len, |_, _, cands| {
            cands
                .iter()
                .find(|s| s.devid == devid)
                .copied()
                .ok_or_else(|| Error::corrupt(FS, None, "no copy on this device"))
        })
        .ok()
    }

    /// How many copies of the block at `logical` are on present devices
    /// (at least 1).
    pub fn copies(&self, logical: u64) -> usize {
        let Some((&start, chunk)) = self.chunk_at(logical) else {
            return 1;
        };
        self.candidates(chunk, logical - start)
            .map_or(1, |(cands, _, _)| {
                cands
                    .iter()
                    .filter(|s| self.present.contains(&s.devid))
                    .count()
                    .max(1)
            })
    }

    fn chunk_at(&self, at: u64) -> Option<(&u64, &Chunk)> {
        self.chunks
            .range(..=at)
            .next_back()
            .filter(|(s, c)| at - **s < c.length)
    }

    fn absent(&self, start: u64, chunk: &Chunk, cands: &[Stripe]) -> Error {
        let devid = cands.first().map_or(0, |s| s.devid);
        Error::unsupported(
            FS,
            None,
            format!(
                "device {devid} of the file system is not in the disk set (the {} chunk at \
                 logical {start:#x} has no copy on the devices present: {})",
                chunk.profile(),
                self.present
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    }

    /// The stripes holding byte `off` of `chunk` (its mirrors), the offset
    /// in each, and how many bytes from there stay in those stripes.
    fn candidates(&self, chunk: &Chunk, off: u64) -> Result<(Vec<Stripe>, u64, u64)> {
        if chunk.kind & (RAID5 | RAID6) != 0 {
            return Err(Error::unsupported(
                FS,
                None,
                format!("{} chunks (parity RAID) are not read", chunk.profile()),
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
            let first = (nr % factor) * sub;
            let row = nr / factor;
            let cands = (first..first + sub)
                .filter_map(|i| chunk.stripes.get(usize::try_from(i).ok()?).copied())
                .collect();
            return Ok((cands, row * sl + in_stripe, sl - in_stripe));
        }
        // single, DUP, RAID1, RAID1C3/C4: every stripe holds the whole chunk.
        Ok((chunk.stripes.clone(), off, chunk.length - off))
    }

    fn map_with(
        &self,
        logical: u64,
        len: u64,
        mut pick: impl FnMut(u64, &Chunk, &[Stripe]) -> Result<Stripe>,
    ) -> Result<Vec<Run>> {
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
            let (&start, chunk) = self.chunk_at(at).ok_or_else(|| {
                Error::corrupt(FS, None, format!("logical address {at:#x} is in no chunk"))
            })?;
            let off = at - start;
            let (cands, in_stripe, room) = self.candidates(chunk, off)?;
            let n = room.min(chunk.length - off).min(end - at);
            let s = pick(start, chunk, &cands)?;
            let offset = s.offset.checked_add(in_stripe).ok_or_else(|| {
                Error::corrupt(
                    FS,
                    None,
                    format!("chunk at {start:#x}: stripe offset overflows"),
                )
            })?;
            out.push(Run {
                devid: s.devid,
                offset,
                len: n,
            });
            at += n;
        }
        Ok(out)
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

    fn runs(m: &ChunkMap, logical: u64, len: u64, copy: usize) -> Vec<(u64, u64, u64)> {
        m.map(logical, len, copy)
            .unwrap()
            .into_iter()
            .map(|r| (r.devid, r.offset, r.len))
            .collect()
    }

    #[test]
    fn dup_copies_and_raid0_stripes_map_as_the_kernel_lays_them_out() {
        let mut m = ChunkMap::new([1]);
        m.insert(
            0x100_0000,
            chunk(DUP | 4, 0, &[(1, 0x10_0000), (1, 0x20_0000)]),
        )
        .unwrap();
        assert_eq!(runs(&m, 0x100_0010, 16, 0), vec![(1, 0x10_0010, 16)]);
        assert_eq!(runs(&m, 0x100_0010, 16, 1), vec![(1, 0x20_0010, 16)]);
        assert_eq!(m.copies(0x100_0010), 2);
        // RAID0 over two stripes of one device: 64 KiB units alternate.
        m.insert(
            0x200_0000,
            chunk(RAID0 | 1, 0, &[(1, 0x40_0000), (1, 0x80_0000)]),
        )
        .unwrap();
        assert_eq!(
            runs(&m, 0x200_0000 + 0xFFF0, 0x20, 0),
            vec![(1, 0x40_FFF0, 0x10), (1, 0x80_0000, 0x10)]
        );
        // Third unit: back on stripe 0, one row down.
        assert_eq!(runs(&m, 0x202_0000, 4, 0), vec![(1, 0x41_0000, 4)]);
    }

    #[test]
    fn raid0_and_raid10_deal_units_to_devices_and_mirrors_fall_back() {
        // RAID0 over devices 1 and 2.
        let mut m = ChunkMap::new([1, 2]);
        m.insert(0, chunk(RAID0 | 1, 0, &[(1, 0x10_0000), (2, 0x20_0000)]))
            .unwrap();
        assert_eq!(
            runs(&m, 0x1_FFF0, 0x20, 0),
            vec![(2, 0x20_FFF0, 0x10), (1, 0x11_0000, 0x10)]
        );
        // RAID10: pairs (1,2) and (3,4); unit 1 lives on the second pair.
        let mut m = ChunkMap::new([1, 2, 3, 4]);
        m.insert(
            0,
            chunk(RAID10 | 1, 2, &[(1, 0), (2, 0), (3, 0x100), (4, 0x200)]),
        )
        .unwrap();
        assert_eq!(runs(&m, 0x1_0000, 8, 0), vec![(3, 0x100, 8)]);
        assert_eq!(runs(&m, 0x1_0000, 8, 1), vec![(4, 0x200, 8)]);
        assert_eq!(runs(&m, 0x2_0000, 8, 0), vec![(1, 0x1_0000, 8)]);
        assert_eq!(m.copies(0x1_0000), 2);
        // Device 3 absent: its mirror, device 4, serves.
        let mut m = ChunkMap::new([1, 2, 4]);
        m.insert(
            0,
            chunk(RAID10 | 1, 2, &[(1, 0), (2, 0), (3, 0x100), (4, 0x200)]),
        )
        .unwrap();
        assert_eq!(runs(&m, 0x1_0000, 8, 0), vec![(4, 0x200, 8)]);
        assert_eq!(m.copies(0x1_0000), 1);
        assert_eq!(
            m.map_on(0x1_0000, 8, 4),
            Some(vec![Run {
                devid: 4,
                offset: 0x200,
                len: 8
            }])
        );
        assert_eq!(m.map_on(0x1_0000, 8, 1), None);
    }

    #[test]
    fn raid1c3_reads_any_present_copy() {
        let mut m = ChunkMap::new([3]);
        m.insert(0, chunk(RAID1C3 | 1, 0, &[(1, 0x10), (2, 0x20), (3, 0x30)]))
            .unwrap();
        assert_eq!(runs(&m, 0x5, 1, 0), vec![(3, 0x35, 1)]);
        assert_eq!(m.copies(0x5), 1);
    }

    #[test]
    fn absent_devices_and_raid56_are_refused_by_name() {
        let mut m = ChunkMap::new([1]);
        // A single chunk on device 2 only: refused, naming it.
        m.insert(0x100_0000, chunk(1, 0, &[(2, 0)])).unwrap();
        let e = m.map(0x100_0000, 8, 0).unwrap_err();
        assert!(
            e.to_string()
                .contains("device 2 of the file system is not in the disk set"),
            "{e}"
        );
        // RAID0 whose second unit is on device 2.
        m.insert(0x200_0000, chunk(RAID0 | 1, 0, &[(1, 0), (2, 0)]))
            .unwrap();
        assert!(m.map(0x200_0000, 8, 0).is_ok());
        assert!(m.map(0x201_0000, 8, 0).is_err());
        m.insert(0x300_0000, chunk(RAID5 | 1, 0, &[(1, 0), (1, 0x1000)]))
            .unwrap();
        let e = m.map(0x300_0000, 8, 0).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unsupported);
        assert!(e.to_string().contains("RAID5"), "{e}");
        m.insert(0x400_0000, chunk(RAID6 | 1, 0, &[(1, 0), (1, 0x1000)]))
            .unwrap();
        assert!(m
            .map(0x400_0000, 8, 0)
            .unwrap_err()
            .to_string()
            .contains("RAID6"));
        // No chunk there at all.
        assert!(m.map(0x900_0000, 8, 0).is_err());
        assert!(Chunk::parse(&[0u8; 40]).is_err());
    }
}
