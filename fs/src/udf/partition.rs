//! Partition reference numbers to volume bytes: physical (type 1),
//! sparable (a sparing table remaps packets), virtual (the VAT maps
//! virtual blocks to blocks of the partition underneath, UDF 2.2.11) and
//! metadata partitions (blocks inside the metadata file, UDF 2.2.13).

use diskimage_formats::bytes::zeroed::{le_u16, le_u32};
use diskimage_formats::BlockDevice;

use super::descriptor::{self, LbAddr};
use super::icb::{self, Data};
use super::volume::{PartitionMap, Volume};
use super::{Checks, FS};
use crate::error::{Error, Result};

/// Largest VAT read, in bytes.
pub const MAX_VAT_BYTES: u64 = 64 << 20;
/// Most sparing entries kept.
const MAX_SPARING_ENTRIES: usize = 1 << 16;
/// Deepest chain of partitions over partitions (metadata over virtual
/// over physical is 2).
const MAX_DEPTH: usize = 4;

/// One partition map, resolved.
#[derive(Debug, Clone)]
enum Map {
    /// Blocks `start..start + len` of the volume.
    Physical { start: u64, len: u64 },
    /// A physical partition whose packets may be remapped.
    Sparable {
        start: u64,
        len: u64,
        packet: u64,
        remap: Vec<(u32, u32)>,
    },
    /// Virtual block n is block `table[n]` of map `under`.
    Virtual { under: usize, table: Vec<u32> },
    /// Block n is block n of the metadata file, whose extents are
    /// `runs` (first block in the file, count, where in map `under`).
    Metadata { under: usize, runs: Vec<MetaRun> },
    /// Not readable, with the reason.
    Unusable(String),
}

#[derive(Debug, Clone, Copy)]
struct MetaRun {
    first: u64,
    count: u64,
    at: LbAddr,
}

/// The partition maps of a logical volume, resolved to volume blocks.
#[derive(Debug, Clone)]
pub struct Partitions {
    block: u64,
    maps: Vec<Map>,
}

impl Partitions {
    /// Resolves the maps of `volume`: physical and sparable first, then
    /// virtual ones (reading the VAT from the last block of the device),
    /// then metadata ones (reading the metadata file, else its mirror).
    pub fn load(device: &dyn BlockDevice, volume: &Volume, checks: &Checks) -> Result<Self> {
        let block = volume.block;
        let mut parts = Partitions {
            block,
            maps: Vec::new(),
        };
        let physical = |number: u16| {
            volume
                .partitions
                .iter()
                .find(|p| p.number == number)
                .map(|p| (u64::from(p.start), u64::from(p.len)))
        };
        for m in &volume.maps {
            parts.maps.push(match m {
                PartitionMap::Physical { number } => match physical(*number) {
                    Some((start, len)) => Map::Physical { start, len },
                    None => Map::Unusable(format!("no partition descriptor numbered {number}")),
                },
                PartitionMap::Sparable {
                    number,
                    packet,
                    table_size,
                    tables,
                } => match physical(*number) {
                    Some((start, len)) => Map::Sparable {
                        start,
                        len,
                        packet: u64::from(*packet).max(1),
                        remap: sparing_table(device, block, tables, *table_size, checks),
                    },
                    None => Map::Unusable(format!("no partition descriptor numbered {number}")),
                },
                PartitionMap::Unknown(id) => {
                    Map::Unusable(format!("partition map {id:?} is not read by this version"))
                }
                _ => Map::Unusable("not resolved yet".into()),
            });
        }
        // The map of the physical partition numbered `number`.
        let under = |parts: &Partitions, number: u16| {
            volume.maps.iter().enumerate().position(|(i, m)| {
                matches!(m, PartitionMap::Physical { number: n } | PartitionMap::Sparable { number: n, .. } if *n == number)
                    && !matches!(parts.maps.get(i), Some(Map::Unusable(_)))
            })
        };
        for (i, m) in volume.maps.iter().enumerate() {
            if let PartitionMap::Virtual { number } = m {
                let resolved = match under(&parts, *number) {
                    Some(u) => match parts.read_vat(device, u, checks) {
                        Ok(table) => Map::Virtual { under: u, table },
                        Err(e) => Map::Unusable(format!("virtual partition: {e}")),
                    },
                    None => Map::Unusable(format!("no physical partition numbered {number}")),
                };
                if let Some(slot) = parts.maps.get_mut(i) {
                    *slot = resolved;
                }
            }
        }
        for (i, m) in volume.maps.iter().enumerate() {
            if let PartitionMap::Metadata {
                number,
                file,
                mirror,
            } = m
            {
                // On write-once media the metadata file sits in the
                // virtual partition over the same physical one.
                let virt = volume.maps.iter().enumerate().position(|(j, v)| {
                    matches!(v, PartitionMap::Virtual { number: n } if n == number)
                        && matches!(parts.maps.get(j), Some(Map::Virtual { .. }))
                });
                let resolved = match virt.or_else(|| under(&parts, *number)) {
                    Some(u) => match parts.metadata_runs(device, u, *file, checks).or_else(|e| {
                        checks.note(format!(
                            "metadata file unreadable ({e}); its mirror is used"
                        ));
                        parts.metadata_runs(device, u, *mirror, checks)
                    }) {
                        Ok(runs) => Map::Metadata { under: u, runs },
                        Err(e) => Map::Unusable(format!("metadata partition: {e}")),
                    },
                    None => Map::Unusable(format!("no partition numbered {number}")),
                };
                if let Some(slot) = parts.maps.get_mut(i) {
                    *slot = resolved;
                }
            }
        }
        Ok(parts)
    }

    /// The block size.
    pub fn block(&self) -> u64 {
        self.block
    }

    /// Where block `addr` lies on the volume (a byte offset), and how many
    /// blocks from it, at most `want`, follow it there contiguously.
    pub fn locate(&self, addr: LbAddr, want: u64) -> Result<(u64, u64)> {
        self.locate_in(addr, want.max(1), 0)
    }

    fn locate_in(&self, addr: LbAddr, want: u64, depth: usize) -> Result<(u64, u64)> {
        let bad = |what: String| Error::corrupt(FS, None, what);
        if depth > MAX_DEPTH {
            return Err(bad("partition maps refer to each other in a loop".into()));
        }
        let lbn = u64::from(addr.lbn);
        let map = self.maps.get(usize::from(addr.part)).ok_or_else(|| {
            bad(format!(
                "partition reference {} past the {} partition maps",
                addr.part,
                self.maps.len()
            ))
        })?;
        let past = |len: u64| {
            bad(format!(
                "block {lbn} past the end of partition {} ({len} blocks)",
                addr.part
            ))
        };
        match map {
            Map::Physical { start, len } => {
                if lbn >= *len {
                    return Err(past(*len));
                }
                Ok(((start + lbn) * self.block, want.min(len - lbn)))
            }
            Map::Sparable {
                start,
                len,
                packet,
                remap,
            } => {
                if lbn >= *len {
                    return Err(past(*len));
                }
                let first = lbn - lbn % packet;
                let within = lbn - first;
                let run = want.min(packet - within).min(len - lbn);
                match remap.iter().find(|(orig, _)| u64::from(*orig) == first) {
                    Some((_, mapped)) => Ok(((u64::from(*mapped) + within) * self.block, run)),
                    None => Ok(((start + lbn) * self.block, run)),
                }
            }
            Map::Virtual { under, table } => {
                let target = table
                    .get(usize::try_from(lbn).unwrap_or(usize::MAX))
                    .copied()
                    .filter(|&t| t != u32::MAX)
                    .ok_or_else(|| {
                        bad(format!(
                            "virtual block {lbn} not in the VAT ({} entries)",
                            table.len()
                        ))
                    })?;
                let (at, _) = self.locate_in(
                    LbAddr {
                        lbn: target,
                        part: u16::try_from(*under).unwrap_or(u16::MAX),
                    },
                    1,
                    depth + 1,
                )?;
                Ok((at, 1))
            }
            Map::Metadata { under, runs } => {
                let run = runs
                    .iter()
                    .find(|r| lbn >= r.first && lbn - r.first < r.count)
                    .ok_or_else(|| bad(format!("block {lbn} past the metadata file")))?;
                let skip = lbn - run.first;
                let inner = LbAddr {
                    lbn: u32::try_from(u64::from(run.at.lbn) + skip)
                        .map_err(|_| bad("metadata extent past 2^32 blocks".into()))?,
                    part: u16::try_from(*under).unwrap_or(u16::MAX),
                };
                self.locate_in(inner, want.min(run.count - skip), depth + 1)
            }
            Map::Unusable(why) => Err(Error::unsupported(
                FS,
                None,
                format!("partition reference {}: {why}", addr.part),
            )),
        }
    }

    /// The VAT (UDF 2.2.11): the file at the last block of the device, in
    /// the physical partition of map `under`: a 2.00+ VAT (file type 248,
    /// a header then entries) or a 1.50 VAT (the entries, then the
    /// `*UDF Virtual Alloc Tbl` identifier).
    fn read_vat(
        &self,
        device: &dyn BlockDevice,
        under: usize,
        checks: &Checks,
    ) -> Result<Vec<u32>> {
        let Some(Map::Physical { start, .. } | Map::Sparable { start, .. }) = self.maps.get(under)
        else {
            return Err(Error::corrupt(FS, None, "VAT: no physical partition"));
        };
        let last = (device.size() / self.block).saturating_sub(1);
        let mut tried = Vec::new();
        // The last recorded block; some writers leave a few blocks of
        // padding after it.
        for back in 0..8u64 {
            let Some(lbn) = last
                .checked_sub(back)
                .and_then(|b| b.checked_sub(*start))
                .and_then(|b| u32::try_from(b).ok())
            else {
                break;
            };
            let addr = LbAddr {
                lbn,
                part: u16::try_from(under).unwrap_or(u16::MAX),
            };
            let entry = match icb::read_entry(device, self, addr, checks, "<VAT>") {
                Ok(e) => e,
                Err(e) => {
                    tried.push(e.to_string());
                    continue;
                }
            };
            if entry.file_type != 248 && entry.file_type != 0 {
                continue;
            }
            if entry.size > MAX_VAT_BYTES {
                return Err(Error::limit(
                    FS,
                    None,
                    format!("VAT of {} bytes (limit {MAX_VAT_BYTES})", entry.size),
                ));
            }
            let bytes = icb::read_all(device, self, &entry, MAX_VAT_BYTES, "<VAT>")?;
            let body: &[u8] = if entry.file_type == 248 {
                let header = usize::from(le_u16(&bytes, 0));
                bytes.get(header..).unwrap_or_default()
            } else {
                // 1.50: entries, then a 32-byte regid and the previous VAT's location.
                let n = bytes.len().saturating_sub(36);
                if !bytes
                    .get(n + 1..)
                    .is_some_and(|r| r.starts_with(b"*UDF Virtual Alloc Tbl"))
                {
                    continue;
                }
                bytes.get(..n).unwrap_or_default()
            };
            return Ok(body.chunks_exact(4).map(|c| le_u32(c, 0)).collect());
        }
        Err(Error::corrupt(
            FS,
            None,
            format!(
                "no VAT file entry in the last blocks of the volume{}",
                tried.first().map(|e| format!(" ({e})")).unwrap_or_default()
            ),
        ))
    }

    /// The extents of the metadata file (or mirror) whose entry is block
    /// `lbn` of map `under`.
    fn metadata_runs(
        &self,
        device: &dyn BlockDevice,
        under: usize,
        lbn: u32,
        checks: &Checks,
    ) -> Result<Vec<MetaRun>> {
        let part = u16::try_from(under).unwrap_or(u16::MAX);
        let entry = icb::read_entry(device, self, LbAddr { lbn, part }, checks, "<metadata>")?;
        if entry.file_type != 250 && entry.file_type != 251 {
            return Err(Error::corrupt(
                FS,
                None,
                format!("metadata file entry of file type {}", entry.file_type),
            )
            .at(entry.offset));
        }
        let Data::Extents(ads) = &entry.data else {
            return Err(Error::unsupported(
                FS,
                None,
                "metadata file with embedded data",
            ));
        };
        let mut runs = Vec::new();
        let mut first = 0u64;
        for ad in ads {
            let count = u64::from(ad.len).div_ceil(self.block);
            if ad.kind == descriptor::ExtentKind::Recorded {
                // Extents inside the metadata file are in the partition
                // underneath, whatever their short_ad says.
                runs.push(MetaRun {
                    first,
                    count,
                    at: LbAddr {
                        lbn: ad.at.lbn,
                        part,
                    },
                });
            }
            first += count;
        }
        Ok(runs)
    }
}

/// The first sparing table (UDF 2.2.12) that reads: its (original,
/// mapped) pairs whose original is not 0xFFFFFFF0 (free) or 0xFFFFFFFF.
fn sparing_table(
    device: &dyn BlockDevice,
    block: u64,
    tables: &[u32],
    size: u32,
    checks: &Checks,
) -> Vec<(u32, u32)> {
    let len = usize::try_from(u64::from(size).clamp(56, 8 * block.max(512))).unwrap_or(2048);
    for &t in tables {
        let offset = u64::from(t) * block;
        let mut buf = vec![0u8; len];
        if offset + len as u64 > device.size() || device.read_at(&mut buf, offset).is_err() {
            continue;
        }
        if !buf
            .get(17..40)
            .is_some_and(|id| id.starts_with(b"*UDF Sparing Table"))
        {
            continue;
        }
        if descriptor::tag(&buf, offset, None, checks).is_err() {
            continue;
        }
        let n = usize::from(le_u16(&buf, 48))
            .min(MAX_SPARING_ENTRIES)
            .min((len - 56) / 8);
        return (0..n)
            .map(|i| (le_u32(&buf, 56 + 8 * i), le_u32(&buf, 60 + 8 * i)))
            .filter(|(o, _)| *o < 0xFFFF_FFF0)
            .collect();
    }
    Vec::new()
}
