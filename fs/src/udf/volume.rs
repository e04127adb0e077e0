//! The volume descriptor sequence (ECMA-167 3/8.4): the primary volume
//! descriptor, partition descriptors and the logical volume descriptor
//! with its partition maps (ECMA-167 3/10.7, UDF 2.2.8-2.2.10), and the
//! file set descriptor (4/14.1).

use diskimage_formats::bytes::zeroed::{le_u16, le_u32};
use diskimage_formats::BlockDevice;

use super::descriptor::{self, ident, long_ad, Ad, Anchor, ExtentAd};
use super::{name, Checks, FS};
use crate::error::{Error, Result};

/// Most descriptors read from one volume descriptor sequence, pointers
/// followed included.
pub const MAX_VDS_DESCRIPTORS: usize = 256;
/// Most partition maps of a logical volume.
pub const MAX_PARTITION_MAPS: usize = 64;

/// A partition descriptor (ECMA-167 3/10.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionDesc {
    /// Partition number.
    pub number: u16,
    /// Access type (1 read-only, 2 write-once, 3 rewritable, 4 overwritable).
    pub access: u32,
    /// First sector.
    pub start: u32,
    /// Length in sectors.
    pub len: u32,
}

/// A partition map of the logical volume descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionMap {
    /// Type 1: the partition with this number.
    Physical {
        /// Partition number.
        number: u16,
    },
    /// `*UDF Virtual Partition`: blocks through the VAT.
    Virtual {
        /// Partition number of the partition underneath.
        number: u16,
    },
    /// `*UDF Sparable Partition`: blocks with a sparing table.
    Sparable {
        /// Partition number.
        number: u16,
        /// Packet length in blocks.
        packet: u16,
        /// Size of each sparing table, bytes.
        table_size: u32,
        /// Sectors of the sparing tables.
        tables: Vec<u32>,
    },
    /// `*UDF Metadata Partition`: blocks inside the metadata file.
    Metadata {
        /// Partition number of the partition underneath.
        number: u16,
        /// Block of the metadata file's entry in that partition.
        file: u32,
        /// Block of the metadata mirror file's entry.
        mirror: u32,
    },
    /// A type 2 map this reader does not know, by its identifier.
    Unknown(String),
}

/// What the volume descriptor sequence says.
#[derive(Debug, Clone)]
pub struct Volume {
    /// The logical block size.
    pub block: u64,
    /// The logical volume identifier (what blkid and the kernel give as label).
    pub label: Option<String>,
    /// The volume set identifier of the primary volume descriptor.
    pub volume_set: Option<String>,
    /// UDF revision from the domain identifier suffix (0x0102 ... 0x0260).
    pub revision: u16,
    /// What the logical volume integrity descriptor records, if it reads.
    pub integrity: Option<Integrity>,
    /// The partition descriptors.
    pub partitions: Vec<PartitionDesc>,
    /// The partition maps, by partition reference number.
    pub maps: Vec<PartitionMap>,
    /// The file set descriptor's extent.
    pub fsd: Ad,
}

/// Reads the main volume descriptor sequence, or the reserve one when
/// the main one lacks a logical volume descriptor or partitions.
pub fn read(device: &dyn BlockDevice, anchor: &Anchor, checks: &Checks) -> Result<Volume> {
    match read_sequence(device, anchor, anchor.main, checks) {
        Ok(v) => Ok(v),
        Err(main) => {
            checks.note(format!(
                "main volume descriptor sequence unreadable ({main}); the reserve one is used"
            ));
            read_sequence(device, anchor, anchor.reserve, checks).map_err(|_| main)
        }
    }
}

fn read_sequence(
    device: &dyn BlockDevice,
    anchor: &Anchor,
    first: ExtentAd,
    checks: &Checks,
) -> Result<Volume> {
    let block = anchor.block;
    let mut pvd: Option<(u32, Vec<u8>)> = None;
    let mut lvd: Option<(u32, Vec<u8>)> = None;
    let mut pds: Vec<(u32, PartitionDesc)> = Vec::new();
    let mut extent = first;
    let mut seen = 0usize;
    let mut buf = vec![0u8; usize::try_from(block).unwrap_or(2048)];
    'extents: loop {
        let sectors = u64::from(extent.len) / block;
        for i in 0..sectors {
            seen += 1;
            if seen > MAX_VDS_DESCRIPTORS {
                return Err(Error::limit(
                    FS,
                    None,
                    format!(
                        "volume descriptor sequence of more than {MAX_VDS_DESCRIPTORS} descriptors"
                    ),
                ));
            }
            let offset = (u64::from(extent.loc) + i) * block;
            if offset + block > device.size() {
                return Err(Error::corrupt(
                    FS,
                    None,
                    "volume descriptor sequence past the end of the volume",
                )
                .at(offset));
            }
            device.read_at(&mut buf, offset)?;
            let id = le_u16(&buf, 0);
            if id == 0 && buf.iter().all(|&b| b == 0) {
                break 'extents;
            }
            let tag = descriptor::tag(&buf, offset, None, checks)?;
            let vdsn = le_u32(&buf, 16);
            match tag.ident {
                ident::PVD if pvd.as_ref().is_none_or(|(n, _)| vdsn >= *n) => {
                    pvd = Some((vdsn, buf.clone()));
                }
                ident::LVD if lvd.as_ref().is_none_or(|(n, _)| vdsn >= *n) => {
                    lvd = Some((vdsn, buf.clone()));
                }
                ident::PD => {
                    let pd = PartitionDesc {
                        number: le_u16(&buf, 22),
                        access: le_u32(&buf, 184),
                        start: le_u32(&buf, 188),
                        len: le_u32(&buf, 192),
                    };
                    match pds.iter_mut().find(|(_, p)| p.number == pd.number) {
                        Some(slot) if vdsn >= slot.0 => *slot = (vdsn, pd),
                        Some(_) => {}
                        None => pds.push((vdsn, pd)),
                    }
                }
                ident::VDP => {
                    extent = descriptor::extent_ad(&buf, 20);
                    continue 'extents;
                }
                ident::TD => break 'extents,
                _ => {}
            }
        }
        break;
    }
    let Some((_, lvd)) = lvd else {
        return Err(Error::corrupt(
            FS,
            None,
            "no logical volume descriptor in the volume descriptor sequence",
        )
        .at(u64::from(first.loc) * block));
    };
    let lvd_block = u64::from(le_u32(&lvd, 212));
    if lvd_block != block {
        return Err(Error::unsupported(
            FS,
            None,
            format!("logical block size {lvd_block} differs from the sector size {block}"),
        ));
    }
    let domain = lvd.get(216 + 1..216 + 24).unwrap_or_default();
    if !domain.starts_with(b"*OSTA UDF Compliant") {
        checks.note(format!(
            "domain identifier {:?} is not \"*OSTA UDF Compliant\"",
            String::from_utf8_lossy(domain).trim_end_matches('\0')
        ));
    }
    let revision = le_u16(&lvd, 216 + 24);
    let maps = partition_maps(&lvd, u64::from(first.loc) * block)?;
    let integrity = integrity(device, block, descriptor::extent_ad(&lvd, 432), checks);
    Ok(Volume {
        block,
        label: name::dstring(lvd.get(84..212).unwrap_or_default()),
        volume_set: pvd
            .as_ref()
            .and_then(|(_, p)| name::dstring(p.get(72..200).unwrap_or_default())),
        revision,
        integrity,
        partitions: pds.into_iter().map(|(_, p)| p).collect(),
        maps,
        fsd: long_ad(&lvd, 248),
    })
}

fn partition_maps(lvd: &[u8], offset: u64) -> Result<Vec<PartitionMap>> {
    let table_len = usize::try_from(le_u32(lvd, 264)).unwrap_or(usize::MAX);
    let count = usize::try_from(le_u32(lvd, 268)).unwrap_or(usize::MAX);
    if count > MAX_PARTITION_MAPS {
        return Err(Error::limit(
            FS,
            None,
            format!("{count} partition maps (limit {MAX_PARTITION_MAPS})"),
        ));
    }
    let table = lvd
        .get(440..440usize.saturating_add(table_len))
        .ok_or_else(|| {
            Error::corrupt(
                FS,
                None,
                format!("partition map table of {table_len} bytes past its descriptor"),
            )
            .at(offset)
        })?;
    let mut out = Vec::with_capacity(count);
    let mut pos = 0usize;
    for _ in 0..count {
        let kind = table.get(pos).copied().unwrap_or(0);
        let len = usize::from(table.get(pos + 1).copied().unwrap_or(0));
        let Some(m) = table.get(pos..pos + len).filter(|_| len >= 6) else {
            return Err(Error::corrupt(
                FS,
                None,
                format!("partition map {} of length {len} past the table", out.len()),
            )
            .at(offset));
        };
        out.push(match kind {
            1 => PartitionMap::Physical {
                number: le_u16(m, 4),
            },
            2 => {
                let id = m.get(5..28).unwrap_or_default();
                let id_text = String::from_utf8_lossy(id)
                    .trim_end_matches('\0')
                    .to_string();
                let number = le_u16(m, 38);
                if id.starts_with(b"*UDF Virtual Partition") {
                    PartitionMap::Virtual { number }
                } else if id.starts_with(b"*UDF Sparable Partition") {
                    let n = usize::from(m.get(42).copied().unwrap_or(0)).min(4);
                    PartitionMap::Sparable {
                        number,
                        packet: le_u16(m, 40),
                        table_size: le_u32(m, 44),
                        tables: (0..n).map(|i| le_u32(m, 48 + 4 * i)).collect(),
                    }
                } else if id.starts_with(b"*UDF Metadata Partition") {
                    PartitionMap::Metadata {
                        number,
                        file: le_u32(m, 40),
                        mirror: le_u32(m, 44),
                    }
                } else {
                    PartitionMap::Unknown(id_text)
                }
            }
            other => PartitionMap::Unknown(format!("type {other}")),
        });
        pos += len;
    }
    Ok(out)
}

/// What the logical volume integrity descriptor (ECMA-167 3/10.10, UDF
/// 2.2.6) records in its implementation use area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Integrity {
    /// Number of files.
    pub files: u32,
    /// Number of directories.
    pub dirs: u32,
    /// Minimum UDF revision needed to read the volume.
    pub min_read: u16,
    /// Minimum UDF revision needed to write it.
    pub min_write: u16,
    /// Highest UDF revision that wrote it.
    pub max_write: u16,
}

/// The first logical volume integrity descriptor of the extent `at`, if
/// it reads (it is not needed to read files: `None` otherwise).
fn integrity(
    device: &dyn BlockDevice,
    block: u64,
    at: ExtentAd,
    checks: &Checks,
) -> Option<Integrity> {
    const LVID: u16 = 9;
    if at.len == 0 {
        return None;
    }
    let offset = u64::from(at.loc).checked_mul(block)?;
    if offset.checked_add(block)? > device.size() {
        return None;
    }
    let mut buf = vec![0u8; usize::try_from(block).ok()?];
    device.read_at(&mut buf, offset).ok()?;
    if !descriptor::looks_like(&buf, LVID) {
        return None;
    }
    descriptor::tag(&buf, offset, Some(LVID), checks).ok()?;
    let n = usize::try_from(le_u32(&buf, 72)).ok()?;
    let iu = 80usize.checked_add(n.checked_mul(8)?)?;
    if iu.checked_add(32 + 14)? > buf.len() {
        return None;
    }
    Some(Integrity {
        files: le_u32(&buf, iu + 32),
        dirs: le_u32(&buf, iu + 36),
        min_read: le_u16(&buf, iu + 40),
        min_write: le_u16(&buf, iu + 42),
        max_write: le_u16(&buf, iu + 44),
    })
}
