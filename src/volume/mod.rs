//! The volume layer: what the partition tables and volume managers of a
//! disk say, before file systems are looked at.
//!
//! - [`mbr`]: DOS/MBR tables, with the extended/logical chain;
//! - [`gpt`]: GUID partition tables, primary or backup;
//! - [`bsd`]: BSD disklabels, on the whole disk or in an MBR slice;
//! - [`apm`]: Apple Partition Maps;
//! - [`unread`]: Sun, SGI and Atari labels, recognised but not read;
//! - [`lvm2`]: LVM2 physical volumes, volume groups and logical volumes.
//!
//! [`read_table`] decides which table a disk holds (a protective or hybrid
//! MBR defers to the GPT behind it). [`DiskSet`](crate::DiskSet) joins the
//! tables of every disk into one list of volumes.

use diskimage_formats::BlockDevice;

use crate::error::{Error, Result, Scheme};

pub mod apm;
pub mod bsd;
pub mod gpt;
pub mod lvm2;
pub mod mbr;
pub mod unread;

/// Where a partition sits in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartitionKind {
    /// One of the four MBR entries, holding data.
    Primary,
    /// An MBR entry holding the chain of logical partitions (type 0x05, 0x0F, 0x85).
    Extended,
    /// A partition of the extended chain.
    Logical,
    /// A GPT entry.
    Gpt,
    /// A BSD disklabel entry (whole disk or inside an MBR slice).
    Bsd,
    /// An Apple Partition Map entry.
    Apm,
}

impl PartitionKind {
    /// A stable, lower-case name for JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionKind::Primary => "primary",
            PartitionKind::Extended => "extended",
            PartitionKind::Logical => "logical",
            PartitionKind::Gpt => "gpt",
            PartitionKind::Bsd => "bsd",
            PartitionKind::Apm => "apm",
        }
    }
}

/// One partition as its table records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The partition number as Linux numbers it: MBR slots 1-4, logicals
    /// from 5 in chain order; GPT entry index + 1; APM map block (the map
    /// itself is 1). A BSD disklabel entry's slot + 1 (`a` is 1).
    pub number: u32,
    /// Start in bytes from the start of the disk.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
    /// Primary, extended, logical, GPT, BSD or APM.
    pub kind: PartitionKind,
    /// The type as the table stores it: `0x83` for MBR, an upper-case GUID
    /// for GPT, `p_fstype` as `0x07` for BSD, `pmParType` (`Apple_HFS`) for APM.
    pub type_code: String,
    /// The type's common name ("Linux", "EFI System", ...), or "unknown".
    pub type_name: &'static str,
    /// The GPT partition name (UTF-16 in the entry), the APM `pmPartName`,
    /// or the BSD partition's letter (`a`; `s2a` inside MBR slice 2).
    pub name: Option<String>,
    /// The GPT unique partition GUID, upper case.
    pub guid: Option<String>,
    /// The GPT attribute bits.
    pub attributes: Option<u64>,
    /// The MBR boot indicator (0x80).
    pub bootable: bool,
}

/// What one disk's partition table says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionTable {
    /// `Some(Mbr)`, `Some(Gpt)`, `Some(Bsd)`, `Some(Apm)`, or a scheme
    /// recognised but not read (`Sun`, `Sgi`, `Atari`: see `unsupported`);
    /// `None` when the disk has no table.
    pub scheme: Option<Scheme>,
    /// The MBR disk signature (`0x1234abcd`) or the GPT disk GUID.
    pub disk_id: Option<String>,
    /// Every partition, in table order (extended containers included).
    pub partitions: Vec<Partition>,
    /// Damage tolerated while reading the table (a backup GPT used ...).
    pub warnings: Vec<String>,
    /// Why no partitions are listed for a scheme recognised but not read
    /// (Sun, SGI, Atari); `None` for every scheme that is read.
    pub unsupported: Option<String>,
}

/// Reads `len` bytes at `offset` of `dev`, labelling a failure with `scheme`.
pub(crate) fn read_bytes(
    dev: &dyn BlockDevice,
    offset: u64,
    len: usize,
    scheme: Scheme,
) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    dev.read_at(&mut buf, offset)
        .map_err(|e| Error::from_device(scheme, e).at(offset))?;
    Ok(buf)
}

/// Reads the partition table of `dev`: a GPT when the MBR is protective
/// or hybrid (0xEE); an MBR otherwise, with the BSD disklabels of its
/// 0xA5/0xA6/0xA9 slices; without an MBR, an Apple Partition Map, a
/// whole-disk BSD disklabel, or a Sun/SGI/Atari label (recognised, not
/// read); or no table at all.
pub fn read_table(dev: &dyn BlockDevice) -> Result<PartitionTable> {
    let Some(mbr) = mbr::read_mbr(dev)? else {
        return read_other(dev);
    };
    if mbr.protective() {
        let mut table = gpt::read(dev)?;
        if mbr.hybrid() {
            table.warnings.push(
                "hybrid MBR: the MBR lists partitions besides the 0xEE entry; the GPT is used"
                    .to_owned(),
            );
        }
        return Ok(table);
    }
    let mut table = mbr::read(dev, &mbr)?;
    read_slice_labels(dev, &mut table)?;
    Ok(table)
}

/// The tables a disk without an MBR may hold.
fn read_other(dev: &dyn BlockDevice) -> Result<PartitionTable> {
    if let Some(table) = apm::read(dev)? {
        return Ok(table);
    }
    let sector = u64::from(dev.sector_size().max(1));
    if let Some(label) = bsd::find(dev, 0)? {
        let mut table = PartitionTable {
            scheme: Some(Scheme::Bsd),
            ..PartitionTable::default()
        };
        table.partitions = bsd::partitions(&label, 0, 0, sector, dev.size(), &mut table.warnings);
        return Ok(table);
    }
    let fs_found = diskimage_fs::detect(dev)
        .map_err(|e| Error::from_device(Scheme::WholeDisk, e))?
        .is_some();
    if let Some(scheme) = unread::detect(dev, fs_found)? {
        return Ok(PartitionTable {
            scheme: Some(scheme),
            unsupported: Some(unread::note(scheme)),
            ..PartitionTable::default()
        });
    }
    Ok(PartitionTable::default())
}

/// Adds the partitions of the BSD disklabel inside each MBR slice of type
/// 0xA5, 0xA6 or 0xA9, right after the slice.
fn read_slice_labels(dev: &dyn BlockDevice, table: &mut PartitionTable) -> Result<()> {
    let sector = u64::from(dev.sector_size().max(1));
    let mut out = Vec::with_capacity(table.partitions.len());
    for p in std::mem::take(&mut table.partitions) {
        let slice_type = u8::from_str_radix(p.type_code.trim_start_matches("0x"), 16).unwrap_or(0);
        let nested = if p.kind == PartitionKind::Primary && bsd::SLICE_TYPES.contains(&slice_type) {
            bsd::find(dev, p.offset)?.map(|label| {
                bsd::slice_partitions(
                    &label,
                    p.offset / sector,
                    slice_type,
                    p.number,
                    sector,
                    dev.size(),
                    &mut table.warnings,
                )
            })
        } else {
            None
        };
        out.push(p);
        out.extend(nested.unwrap_or_default());
    }
    table.partitions = out;
    Ok(())
}
