//! Virtual disk container readers behind one positional-read trait.
//!
//! [`open`] decides an image's format by its content (see [`probe`]) and
//! returns a [`DiskImage`]: a [`BlockDevice`] — `size`, `sector_size`,
//! `read_at(&self, ..)` and an allocation [`map`](BlockDevice::map) — plus the
//! [`ImageInfo`] that `diskimage info` shows, warnings included.
//!
//! This crate knows nothing about partitions or files; `diskimage-fs` and
//! the `diskimage` facade build on it. Every input is opened read-only.
//!
//! | format | module | reads |
//! |---|---|---|
//! | raw, split raw | [`raw`] | yes |
//! | ISO 9660 / UDF | `iso` | yes (2,048-byte sectors) |
//! | raw CD sectors (MODE1/2352, MODE2/2352 `.bin`) | `cd_raw` | yes (the 2,048-byte user data) |
//! | VHD (fixed, dynamic, differencing) | [`vhd`] | yes |
//! | VHDX (fixed, dynamic, differencing; log replayed in memory) | [`vhdx`] | yes |
//! | VMDK (every hosted and ESXi subformat; delta chains) | [`vmdk`] | yes |
//! | QCOW2 v2/v3 (backing chains, compressed clusters, extended L2, external data file) | [`qcow2`] | yes (not encrypted) |
//! | VDI (fixed, dynamic, differencing found by parent UUID) | [`vdi`] | yes |
//! | EWF version 1 (`.E01` segment sets, SMART `.s01`) | [`ewf`] | yes (not `.Ex01`, not `.L01`) |
//! | EWF2, EWF logical evidence, AFF, AFF4, UDIF, Nero, QCOW version 1 | [`probe`] | recognised by signature, "unsupported" error |

#![deny(unsafe_code)]
#![warn(unnameable_types)]
#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
#![cfg_attr(
    test,
    allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)
)]

pub mod block_device;
pub mod budget;
pub mod buffer;
// Workspace-internal helpers, shared with `diskimage-fs` and the facade;
// hidden from the docs and not part of the public API.
#[doc(hidden)]
pub mod bytes;
pub(crate) mod cd_raw;
pub mod context;
#[doc(hidden)]
pub mod crc32c;
pub mod error;
pub mod ewf;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod guid;
pub mod image;
pub mod image_file;
pub(crate) mod iso;
#[doc(hidden)]
pub mod layout;
mod mmap;
pub mod options;
mod pieces;
pub mod probe;
pub mod qcow2;
pub mod raw;
mod table_runs;
#[doc(hidden)]
pub mod time;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;
pub mod write;
#[doc(hidden)]
pub mod zstd;

pub use block_device::{
    push_extent, stored_verbatim, BlockDevice, DeviceReader, Extent, ExtentKind, FileRange,
    MemoryDevice, SliceDevice,
};
pub use budget::{MemoryBudget, Reservation, DEFAULT_MEMORY_LIMIT};
pub use context::{MemoryFiles, OpenContext, MAX_CHAIN_DEPTH};
pub use error::{Detail, Error, ErrorKind, Format, Result};
pub use guid::Guid;
pub use image::{DiskImage, ImageInfo, Warning, WarningKind, Warnings};
pub use image_file::ImageFile;
pub use options::{OpenOptions, ParentRequest, ParentResolver};
pub use probe::{dependencies, open, open_in_memory};
pub use write::{create, open_writable, CreateOptions, Subformat, WritableDevice};

/// `Display` for enums whose text is their stable `as_str()` name (one
/// implementation for every crate of the workspace).
#[doc(hidden)]
#[macro_export]
macro_rules! display_as_str {
    ($($t:ty),* $(,)?) => {$(
        impl ::core::fmt::Display for $t {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str((*self).as_str())
            }
        }
    )*};
}

display_as_str!(
    ExtentKind,
    WarningKind,
    vhd::footer::DiskType,
    vdi::header::ImageType
);
