//! The volume layer: what the partition tables and volume managers of a
//! disk say, before file systems are looked at.
//!
//! - [`mbr`]: DOS/MBR tables, with the extended/logical chain;
//! - [`gpt`]: GUID partition tables, primary or backup;
//! - [`lvm2`]: LVM2 physical volumes, volume groups and logical volumes.
//!
//! [`read_table`] decides which table a disk holds (a protective or hybrid
//! MBR defers to the GPT behind it). [`DiskSet`](crate::DiskSet) joins the
//! tables of every disk into one list of volumes.

use diskimage_formats::BlockDevice;

use crate::error::{Error, Result, Scheme};

pub mod gpt;
pub mod lvm2;
pub mod mbr;

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
}

impl PartitionKind {
    /// A stable, lower-case name for JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionKind::Primary => "primary",
            PartitionKind::Extended => "extended",
            PartitionKind::Logical => "logical",
            PartitionKind::Gpt => "gpt",
        }
    }
}

/// One partition as its table records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The partition number as Linux numbers it: MBR slots 1-4, logicals
    /// from 5 in chain order; GPT entry index + 1.
    pub number: u32,
    /// Start in bytes from the start of the disk.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
    /// Primary, extended, logical or GPT.
    pub kind: PartitionKind,
    /// The type as the table stores it: `0x83` for MBR, an upper-case GUID for GPT.
    pub type_code: String,
    /// The type's common name ("Linux", "EFI System", ...), or "unknown".
    pub type_name: &'static str,
    /// The GPT partition name (UTF-16 in the entry), where there is one.
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
    /// `Some(Mbr)` or `Some(Gpt)`; `None` when the disk has no table.
    pub scheme: Option<Scheme>,
    /// The MBR disk signature (`0x1234abcd`) or the GPT disk GUID.
    pub disk_id: Option<String>,
    /// Every partition, in table order (extended containers included).
    pub partitions: Vec<Partition>,
    /// Damage tolerated while reading the table (a backup GPT used ...).
    pub warnings: Vec<String>,
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
/// or hybrid (0xEE), an MBR otherwise, or no table at all.
pub fn read_table(dev: &dyn BlockDevice) -> Result<PartitionTable> {
    let Some(mbr) = mbr::read_mbr(dev)? else {
        return Ok(PartitionTable::default());
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
    mbr::read(dev, &mbr)
}
