//! File systems over any [`diskimage_formats::BlockDevice`].
//!
//! This crate sees only a device (a whole disk or a volume); it knows
//! nothing about containers. [`detect()`] identifies a file system (or other
//! volume content) by its superblock, with its label and serial/UUID;
//! [`open_fs`] opens a readable one behind the [`FileSystem`] trait.
//!
//! | file system | module | over |
//! |---|---|---|
//! | ext2/3/4 | [`ext4`] | our own reader (journal replayed in memory) |
//! | FAT12/16/32 | [`fat`] | `fatfs` 0.3 |
//! | exFAT | [`exfat`] | our own reader |
//! | NTFS | [`ntfs`] | `ntfs` 0.4 + our own LZNT1 and data-run reader |
//! | ISO 9660, Joliet, Rock Ridge, El Torito, zisofs | [`iso9660`] | our own reader (`flate2` for zisofs) |
//! | XFS (v4, v5) | [`xfs`] | our own reader |
//! | Btrfs (subvolumes, zlib/LZO/zstd extents) | [`btrfs`] | our own reader |
//! | UDF 1.02 to 2.60 | [`udf`] | our own reader |
//! | others | — | detected only: [`ErrorKind::Unsupported`] |
//!
//! # Threads
//! `Box<dyn FileSystem>` is not `Send`: the ext reader and the FAT crate
//! keep `RefCell`s inside. Open one file system per thread over the same
//! `Arc<dyn BlockDevice>` (which is `Send + Sync`).

#![deny(unsafe_code)]
#![warn(unnameable_types)]
#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
#![cfg_attr(
    test,
    allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)
)]

use std::sync::Arc;

use diskimage_formats::BlockDevice;

pub mod btrfs;
pub mod detect;
pub mod error;
pub mod exfat;
pub mod ext4;
pub mod fat;
pub mod file_system;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod iso9660;
pub mod ntfs;
pub mod options;
pub mod runs;
pub mod udf;
pub mod xfs;

pub use detect::{detect, FsInfo, FsKind};
pub use error::{Detail, Error, ErrorKind, FsName, Result};
pub use file_system::{
    DirEntry, FileReader, FileSystem, FileType, Metadata, PathEntry, ReadDir, StoredRun, Timestamp,
    VisitFn, Visited,
};
pub use options::{Devices, FsOptions};

/// Whether [`open_fs`] reads files of `kind` (the others are detected only).
pub fn reads(kind: FsKind) -> bool {
    matches!(
        kind,
        FsKind::Ntfs
            | FsKind::Ext2
            | FsKind::Ext3
            | FsKind::Ext4
            | FsKind::Fat12
            | FsKind::Fat16
            | FsKind::Fat32
            | FsKind::ExFat
            | FsKind::Iso9660
            | FsKind::Xfs
            | FsKind::Btrfs
            | FsKind::Udf
    )
}

/// Opens the file system on `device`, by what [`detect()`] finds there.
pub fn open_fs(device: Arc<dyn BlockDevice>) -> Result<Box<dyn FileSystem>> {
    open_fs_with(device, &FsOptions::default())
}

/// [`open_fs`] with `options`; [`FileSystem::warnings`] then lists what
/// was tolerated (strict mode refuses it instead).
pub fn open_fs_with(
    device: Arc<dyn BlockDevice>,
    options: &FsOptions,
) -> Result<Box<dyn FileSystem>> {
    if let Some(kind) = options.kind {
        return open_fs_as_with(device, kind, options);
    }
    let info = detect(device.as_ref())?;
    let Some(info) = info else {
        return Err(Error::unsupported(
            FsName::Detect,
            None,
            "no known file system on this device",
        ));
    };
    open_fs_as_with(device, info.kind, options)
}

/// Opens the file system of `kind` on `device` without detecting it again
/// (the kind a detection, such as a volume listing's, already found).
pub fn open_fs_as(device: Arc<dyn BlockDevice>, kind: FsKind) -> Result<Box<dyn FileSystem>> {
    open_fs_as_with(device, kind, &FsOptions::default())
}

/// [`open_fs_as`] with `options` (see [`open_fs_with`]); a kind set in
/// [`FsOptions::kind`] wins over `kind`.
pub fn open_fs_as_with(
    device: Arc<dyn BlockDevice>,
    kind: FsKind,
    options: &FsOptions,
) -> Result<Box<dyn FileSystem>> {
    match options.kind.unwrap_or(kind) {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => {
            Ok(Box::new(ext4::ExtFs::open_with(device, kind, options)?))
        }
        FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 => {
            Ok(Box::new(fat::FatFs::open(device, kind)?))
        }
        FsKind::Ntfs => Ok(Box::new(ntfs::NtfsFs::open(device)?)),
        FsKind::ExFat => Ok(Box::new(exfat::ExFatFs::open(device)?)),
        FsKind::Iso9660 => Ok(Box::new(iso9660::IsoFs::open(device)?)),
        FsKind::Xfs => Ok(Box::new(xfs::XfsFs::open_with(device, options)?)),
        FsKind::Btrfs => Ok(Box::new(btrfs::BtrfsFs::open_with(device, options)?)),
        FsKind::Udf => Ok(Box::new(udf::UdfFs::open_with(device, options)?)),
        FsKind::Jbd => Err(Error::unsupported(
            FsName::Detect,
            None,
            "an ext3/ext4 external journal device (jbd) holds a journal, not files: \
             open the file system that uses it",
        )),
        other => Err(Error::unsupported(
            FsName::Detect,
            None,
            format!(
                "{} is detected, but reading it is unsupported in this version",
                other.as_str()
            ),
        )),
    }
}

diskimage_formats::display_as_str!(FsKind, FileType);
