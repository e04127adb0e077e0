//! Commit (MergeVirtualDisk, `qemu-img commit`): a delta's own data
//! written into its parent through the parent's [`WritableDevice`](crate::WritableDevice).
//!
//! The parent is the only image written. Afterwards both read the same:
//! the parent now holds what the child did, and the child (still a delta
//! of the parent) is relinked to the parent as it is now (a VMDK's
//! `parentCID`, a VHD's parent time stamp, a VHDX's `parent_linkage`), or
//! deleted when asked.

use std::path::{Path, PathBuf};

use crate::block_device::ExtentKind;
use crate::error::{Detail, Error, ErrorKind, Format, Result};
use crate::options::OpenOptions;

use super::open_writable;

/// Bytes copied at once.
const CHUNK: u64 = 1 << 20;

/// What [`commit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitReport {
    /// The parent that was written.
    pub parent: PathBuf,
    /// Bytes of the child written into the parent.
    pub bytes: u64,
    /// Whether the child's files were deleted.
    pub dropped: bool,
}

/// Merges the delta `child` into its direct parent; with `drop_child` the
/// child's files are deleted afterwards. `progress(done, total)` follows
/// the child's allocated bytes.
pub fn commit(
    child: &Path,
    options: &OpenOptions,
    drop_child: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CommitReport> {
    let chain = crate::probe::open(child, options)?;
    let format = chain.format();
    let Some(parent_info) = chain.info().parent.as_deref() else {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format,
            Detail::Invalid("the image has no parent to commit into".into()),
        )
        .in_file(child));
    };
    let parent_path = parent_info.path.clone();
    drop(chain);
    let own = crate::probe::open(child, &options.clone().no_parents(true))?;
    let dev = own.device();
    let size = dev.size();
    let map = dev.map(0, size)?;
    let total: u64 = map
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                ExtentKind::Data | ExtentKind::Compressed | ExtentKind::Zero
            )
        })
        .map(|e| e.len)
        .sum();
    let parent = open_writable(&parent_path, &options.clone().format(None))?;
    let psize = parent.size();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut done = 0u64;
    for e in map {
        if !matches!(
            e.kind,
            ExtentKind::Data | ExtentKind::Compressed | ExtentKind::Zero
        ) {
            continue;
        }
        // A child larger than its parent: what lies past the parent's end
        // has nowhere to go and is refused.
        if e.end() > psize {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format,
                Detail::Invalid(format!(
                    "the child holds data past the parent's {psize} bytes; the parent is not grown"
                )),
            )
            .in_file(child));
        }
        let mut at = e.offset;
        while at < e.end() {
            let n = CHUNK.min(e.end() - at) as usize;
            let chunk = buf.get_mut(..n).unwrap_or_default();
            if e.kind == ExtentKind::Zero {
                chunk.fill(0);
            } else {
                dev.read_at(chunk, at)?;
            }
            parent.write_at(chunk, at)?;
            at += n as u64;
            done += n as u64;
            progress(done, total);
        }
    }
    parent.flush()?;
    drop(parent);
    drop(dev);
    drop(own);
    if drop_child {
        for f in own_files(child, format)? {
            std::fs::remove_file(&f).map_err(|e| Error::io(format, e).in_file(&f))?;
        }
    } else {
        match format {
            Format::Vmdk => {
                if let Some(cid) = crate::vmdk::writer::read_cid(&parent_path)? {
                    crate::vmdk::writer::relink(child, cid)?;
                }
            }
            Format::Vhd => crate::vhd::writer::relink(child, &parent_path)?,
            Format::Vhdx => crate::vhdx::writer::relink(child, &parent_path)?,
            _ => {}
        }
    }
    Ok(CommitReport {
        parent: parent_path,
        bytes: done,
        dropped: drop_child,
    })
}

/// The files of `image` itself, without its parents.
fn own_files(image: &Path, format: Format) -> Result<Vec<PathBuf>> {
    match format {
        Format::Vmdk => crate::vmdk::writer::own_files(image),
        _ => Ok(vec![image.to_path_buf()]),
    }
}
