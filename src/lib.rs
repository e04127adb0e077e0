//! `diskimage`: open virtual disk images (VMDK, VHD, VHDX, QCOW2, ISO, raw)
//! read-only, find their volumes, tell which operating system is
//! installed and read the file systems inside, with no vendor library.
//!
//! The layers, top to bottom:
//! - [`DiskSet`]: several disks opened as one set, with every [`Volume`]
//!   across them ([`volume`]: MBR, GPT, LVM2 across disks, whole-disk file
//!   systems); [`os::detect`] finds the installed systems; [`vm`] opens
//!   the disks of a VM's state (`.vmx`/`.vmsd`, `.vbox`, Hyper-V);
//!   [`walk`] walks a file system's tree and [`extract`] restores a tree
//!   onto the host safely; [`mount`] (feature `fuse`) serves volumes
//!   through FUSE.
//! - [`fs`] (`diskimage-fs`): what a device holds, and its files (NTFS,
//!   ext2/3/4, FAT, exFAT, ISO 9660) behind one [`fs::FileSystem`] trait.
//! - [`formats`] (`diskimage-formats`): containers → [`BlockDevice`]
//!   (`read_at` on `&self`, `map` of allocated ranges).
//!
//! Every error is one [`Error`] with a matchable [`ErrorKind`]; the
//! container's file, offset and expected/actual detail stay reachable.
//! Nothing here writes to an image.
//!
//! # From VDDK, VIX and VirtDisk
//!
//! | VDDK / VIX / VirtDisk call | here |
//! |---|---|
//! | `VixDiskLib_Open` (read-only), `OpenVirtualDisk` | [`open`]`(path, &`[`OpenOptions`]`)` |
//! | `OPEN_VIRTUAL_DISK_FLAG_NO_PARENTS` | [`OpenOptions::no_parents`] |
//! | `VixDiskLib_GetInfo` | [`DiskImage::info`] ([`ImageInfo`]: format, size, chain, properties, warnings) |
//! | `VixDiskLib_Read` | [`BlockDevice::read_at`] (positional, shared across threads) |
//! | `VixDiskLib_QueryAllocatedBlocks` | [`BlockDevice::map`] ([`Extent`]s of data, zero, unallocated, parent) |
//! | `VixMntapi_OpenDiskSet` | [`DiskSet::open`], [`DiskSet::from_images`] |
//! | `VixMntapi_GetVolumeHandles` | [`DiskSet::volumes`] |
//! | `VixMntapi_GetVolumeInfo` | the [`Volume`] fields (scheme, offset, size, file system, label) |
//! | `VixMntapi_GetOsInfo` | [`os::detect`] ([`OsReport`]) |
//! | `VixMntapi_MountVolume` | [`DiskSet::mount`] (a [`fs::FileSystem`]), or `DiskSet::mount_fuse` (feature `fuse`) |
//! | `VixVM_Open` + a snapshot | [`vm::Vm::load`], [`vm::Vm::open`] with [`vm::VmOptions::snapshot`] |
//! | `QueryChangedDiskAreas` (between two snapshots) | [`changes::changed_areas`]; the files: [`changes::changed_files`] |
//!
//! The examples (`examples/`) follow these flows: `mntapi_flow` (VM or
//! images → set → volumes → OS → one file), `copy_allocated` (Open,
//! QueryAllocatedBlocks and Read from several threads) and `restore_dir`
//! (one directory restored with the extraction engine).
//!
//! # Features
//! `cli` (the `diskimage` command: clap, progress bars, digests, JSON) and
//! `fuse` (FUSE mounts) are on by default; with `default-features = false`
//! the library builds without any of their crates. `serde` derives
//! `Serialize` for the OS report.
//!
//! ```no_run
//! use diskimage::{open, BlockDevice, OpenOptions};
//! let image = open("disk.img".as_ref(), &OpenOptions::default())?;
//! println!("{} bytes of {}", image.size(), image.format());
//! let mut mbr = [0u8; 512];
//! image.read_at(&mut mbr, 0)?;
//! for extent in image.map(0, image.size())? {
//!     println!("{:#x}+{:#x} {}", extent.offset, extent.len, extent.kind.as_str());
//! }
//! # Ok::<(), diskimage::Error>(())
//! ```

#![deny(unsafe_code)]
#![warn(unnameable_types)]
#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
#![cfg_attr(
    test,
    allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)
)]

pub mod buffer;
pub mod changes;
pub mod diskset;
pub mod error;
pub mod extract;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(all(feature = "fuse", unix))]
pub mod mount;
pub mod os;
pub mod snapshot;
pub mod vm;
pub mod volume;
pub mod walk;

pub use diskset::{DiskSet, Volume};
pub use error::Scheme;
pub use os::{OsFamily, OsInfo, OsReport};

pub use diskimage_formats as formats;
pub use diskimage_fs as fs;

pub use error::Error;

pub use diskimage_formats::{
    open, BlockDevice, DeviceReader, DiskImage, ErrorKind, Extent, ExtentKind, Format, ImageInfo,
    OpenOptions, SliceDevice, Warning,
};

diskimage_formats::display_as_str!(OsFamily, vm::VmKind, volume::PartitionKind);
