//! `diskimage`: open virtual disk images (VMDK, VHD, VHDX, ISO, raw)
//! read-only, find their volumes and read their file systems, with no
//! vendor library.
//!
//! This facade re-exports the two layers it is built on:
//! - [`formats`] (`diskimage-formats`): containers → [`BlockDevice`];
//! - [`fs`] (`diskimage-fs`): what a device holds, and (later) its files.
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

pub use diskimage_formats as formats;
pub use diskimage_fs as fs;

pub use diskimage_formats::{
    open, BlockDevice, DeviceReader, DiskImage, Error, ErrorKind, Extent, ExtentKind, Format,
    ImageInfo, OpenOptions, SliceDevice, Warning,
};
