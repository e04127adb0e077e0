//! Runs of a container whose virtual blocks a table maps (VDI's block
//! map, QCOW2's L1/L2 tables, VHDX's BAT and sector bitmaps): where each
//! run of bytes comes from, and the `map` and `file_range` answers every
//! such container gives the same way from its walk over those runs.

use crate::block_device::FileRange;
use crate::block_device::{push_extent, push_from_parent, BlockDevice, Extent, ExtentKind};
use crate::error::Result;

/// Where one run of virtual bytes comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Run {
    /// At this offset of the data-holding file.
    File(u64),
    /// Zeros, as the format says.
    Zero,
    /// Not in this image: the parent (backing file), or zeros.
    Absent,
    /// Inside a compressed cluster: its stream, and the skip into the
    /// inflated cluster (QCOW2 only).
    Compressed { offset: u64, len: u64, skip: u64 },
}

/// A container read through its table's runs.
pub(crate) trait TableMapped {
    /// Calls `f` with (virtual offset, length, run) for each run of `len`
    /// bytes from virtual `offset`, in order.
    fn walk_runs(
        &self,
        offset: u64,
        len: u64,
        f: &mut dyn FnMut(u64, u64, Run) -> Result<()>,
    ) -> Result<()>;

    /// The image under this one, if any.
    fn parent_device(&self) -> Option<&dyn BlockDevice>;

    /// `len` bytes at offset `at` of the file [`Run::File`] offsets are
    /// in, when the disk's bytes there are the file's own.
    fn data_range(&self, at: u64, len: u64) -> Option<FileRange<'_>>;
}

/// The extents of `len` bytes from `offset` (checked by the caller):
/// absent runs as the parent maps them, or unallocated without one.
pub(crate) fn map(image: &impl TableMapped, offset: u64, len: u64) -> Result<Vec<Extent>> {
    let mut map = Vec::new();
    image.walk_runs(offset, len, &mut |o, l, run| {
        let kind = match run {
            Run::File(_) => ExtentKind::Data,
            Run::Compressed { .. } => ExtentKind::Compressed,
            Run::Zero => ExtentKind::Zero,
            Run::Absent => match image.parent_device() {
                Some(p) => return push_from_parent(&mut map, p, o, l),
                None => ExtentKind::Unallocated,
            },
        };
        push_extent(
            &mut map,
            Extent {
                offset: o,
                len: l,
                kind,
            },
        );
        Ok(())
    })?;
    Ok(map)
}

/// Where the first run of `len` bytes from `offset` lies verbatim in the
/// data file, when it does.
pub(crate) fn file_range(image: &impl TableMapped, offset: u64, len: u64) -> Option<FileRange<'_>> {
    let mut first = None;
    image
        .walk_runs(offset, len, &mut |_, l, run| {
            if first.is_none() {
                first = Some((l, run));
            }
            Ok(())
        })
        .ok()?;
    match first? {
        (l, Run::File(at)) => image.data_range(at, l),
        _ => None,
    }
}
