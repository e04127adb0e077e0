//! `diskimage`: open virtual disk images (VMDK, VHD, VHDX, ISO, raw)
//! read-only, find their volumes and read their file systems, with no
//! vendor library.
//!
//! This facade re-exports the two layers it is built on:
//! - [`formats`] (`diskimage-formats`): containers → [`BlockDevice`];
//! - [`fs`] (`diskimage-fs`): what a device holds, and (later) its files.
//!
//! On top of them it holds the volume layer ([`volume`]: MBR, GPT, LVM2)
//! and [`DiskSet`], several disks opened as one set with every volume
//! across them. Its errors are [`error::Error`].
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
#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
#![cfg_attr(
    test,
    allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)
)]

pub mod diskset;
pub mod error;
pub mod extract;
pub mod fuzzing;
#[cfg(all(feature = "fuse", unix))]
pub mod mount;
pub mod os;
pub mod vm;
pub mod volume;
pub mod walk;

pub use diskset::{DiskSet, Volume};
pub use error::Scheme;
pub use os::{OsFamily, OsInfo, OsReport};

pub use diskimage_formats as formats;
pub use diskimage_fs as fs;

pub use diskimage_formats::{
    open, BlockDevice, DeviceReader, DiskImage, Error, ErrorKind, Extent, ExtentKind, Format,
    ImageInfo, OpenOptions, SliceDevice, Warning,
};
