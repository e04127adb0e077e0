//! The write side: creating images and writing into the top image of a
//! chain.
//!
//! Reading stays the default: nothing here runs unless a caller names a
//! file to create or asks for a [`WritableDevice`] with [`open_writable`].
//! A chain's parents are never opened for writing; writes go to the top
//! image only.
//!
//! Each format's writer follows that format's own ordering rules so that a
//! crash leaves an image every reader opens (see the format modules).

pub mod commit;
pub mod convert;
pub(crate) mod file;
pub(crate) mod parent;
pub mod raw;
pub(crate) mod sector_groups;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::block_device::BlockDevice;
use crate::error::{Error, Format, Result};
use crate::options::OpenOptions;

/// A [`BlockDevice`] that also takes writes (VDDK's `VixDiskLib_Write`,
/// VirtDisk's `OpenVirtualDisk` with write access).
///
/// Reads through [`BlockDevice::read_at`] see every completed write.
pub trait WritableDevice: BlockDevice {
    /// Writes `buf` at virtual byte `offset` (any alignment). A range past
    /// the virtual size is an [`OutOfBounds`](crate::ErrorKind::OutOfBounds)
    /// error and nothing is written.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;

    /// Makes every completed write durable: data, then the metadata that
    /// points at it, each synced to the file system.
    fn flush(&self) -> Result<()>;
}

/// How a container lays its data out, by the names `qemu-img` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Subformat {
    /// VMDK: one sparse file with an embedded descriptor (the default).
    MonolithicSparse,
    /// VMDK: a descriptor and one flat extent file.
    MonolithicFlat,
    /// VMDK: a descriptor and sparse extents of at most 2 GiB.
    TwoGbMaxExtentSparse,
    /// VMDK: a descriptor and flat extents of at most 2 GiB.
    TwoGbMaxExtentFlat,
    /// VMDK: compressed grains in stream order; written once, never opened
    /// for writing.
    StreamOptimized,
    /// VHD, VHDX: blocks allocated on first write (the default).
    Dynamic,
    /// VHD, VHDX, raw: every byte allocated at creation.
    Fixed,
}

impl Subformat {
    /// The name `qemu-img` and `--subformat` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Subformat::MonolithicSparse => "monolithicSparse",
            Subformat::MonolithicFlat => "monolithicFlat",
            Subformat::TwoGbMaxExtentSparse => "twoGbMaxExtentSparse",
            Subformat::TwoGbMaxExtentFlat => "twoGbMaxExtentFlat",
            Subformat::StreamOptimized => "streamOptimized",
            Subformat::Dynamic => "dynamic",
            Subformat::Fixed => "fixed",
        }
    }

    /// Every subformat, in `--help` order.
    pub const ALL: [Subformat; 7] = [
        Subformat::MonolithicSparse,
        Subformat::MonolithicFlat,
        Subformat::TwoGbMaxExtentSparse,
        Subformat::TwoGbMaxExtentFlat,
        Subformat::StreamOptimized,
        Subformat::Dynamic,
        Subformat::Fixed,
    ];
}

crate::display_as_str!(Subformat);

impl FromStr for Subformat {
    type Err = String;

    /// Parses a `qemu-img` subformat name (letter case ignored).
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Subformat::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = Subformat::ALL.iter().map(|f| f.as_str()).collect();
                format!("unknown subformat {s:?} (one of: {})", names.join(", "))
            })
    }
}

/// What [`create`] makes: the defaults, changed through the builder
/// methods (`CreateOptions::new(Format::Vmdk, 1 << 30).subformat(..)`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CreateOptions {
    /// The container format (raw, VMDK, VHD or VHDX).
    pub format: Format,
    /// The virtual size in bytes, exactly (never rounded to a geometry);
    /// ignored for a child, which takes its parent's.
    pub size: u64,
    /// The layout; `None` is the format's default.
    pub subformat: Option<Subformat>,
    /// The allocation unit in bytes (VMDK grain, VHD/VHDX block); `None` is
    /// the format's default.
    pub block_size: Option<u64>,
    /// The logical sector size: 512 (the default) or 4096.
    pub sector_size: u32,
    /// Make a child (delta, differencing disk) of this image instead of a
    /// new disk. The parent is only read.
    pub parent: Option<PathBuf>,
    /// Replace an existing file (refused otherwise).
    pub force: bool,
}

impl CreateOptions {
    /// A new disk of `format` and `size` bytes, every other choice the
    /// format's default.
    pub fn new(format: Format, size: u64) -> Self {
        CreateOptions {
            format,
            size,
            subformat: None,
            block_size: None,
            sector_size: 512,
            parent: None,
            force: false,
        }
    }

    /// Sets the layout.
    pub fn subformat(mut self, subformat: Option<Subformat>) -> Self {
        self.subformat = subformat;
        self
    }

    /// Sets the allocation unit in bytes.
    pub fn block_size(mut self, bytes: Option<u64>) -> Self {
        self.block_size = bytes;
        self
    }

    /// Sets the logical sector size (512 or 4096).
    pub fn sector_size(mut self, bytes: u32) -> Self {
        self.sector_size = bytes;
        self
    }

    /// Makes a child of `parent` instead of a new disk.
    pub fn parent(mut self, parent: Option<PathBuf>) -> Self {
        self.parent = parent;
        self
    }

    /// Allows replacing an existing file.
    pub fn force(mut self, on: bool) -> Self {
        self.force = on;
        self
    }
}

/// Creates the image `path` as `options` say (VixDiskLib_Create,
/// VixDiskLib_CreateChild, CreateVirtualDisk). The files appear only when
/// complete (written in a staging folder beside `path`, then renamed); an
/// existing file is replaced only with [`CreateOptions::force`].
pub fn create(path: &Path, options: &CreateOptions) -> Result<()> {
    match options.format {
        Format::Raw => raw::create(path, options),
        Format::Vmdk => crate::vmdk::writer::create(path, options),
        Format::Vhd => crate::vhd::create(path, options),
        Format::Vhdx => crate::vhdx::create(path, options),
        other => Err(not_written(other).in_file(path)),
    }
}

/// Creates `child` as a delta (differencing disk) of `parent`, which is
/// only read: [`create`] with [`CreateOptions::parent`] set.
pub fn create_child(child: &Path, parent: &Path, options: &CreateOptions) -> Result<()> {
    create(child, &options.clone().parent(Some(parent.to_path_buf())))
}

/// Sets descriptor keys of the VMDK `path` (see
/// [`vmdk::writer::set_descriptor_keys`](crate::vmdk::writer::set_descriptor_keys)).
pub fn set_vmdk_descriptor_keys(path: &Path, keys: &[(&str, &str)]) -> Result<()> {
    crate::vmdk::writer::set_descriptor_keys(path, keys)
}

/// Opens the top image of `path` for writing (its parents, if any, are
/// opened read-only underneath).
pub fn open_writable(path: &Path, options: &OpenOptions) -> Result<Box<dyn WritableDevice>> {
    let format = match options.format {
        Some(f) => f,
        None => crate::probe::open(path, &options.clone().no_parents(true))?.format(),
    };
    match format {
        Format::Raw | Format::SplitRaw => Ok(Box::new(raw::open_writable(path, options)?)),
        Format::Vmdk => Ok(Box::new(crate::vmdk::writer::open_writable(path, options)?)),
        Format::Vhd => crate::vhd::open_writable(path, options),
        Format::Vhdx => crate::vhdx::open_writable(path, options),
        other => Err(not_written(other).in_file(path)),
    }
}

/// Points the delta `child` at `parent`, after `parent` took the place of
/// the child's old parent with the same content (a delta merged into its
/// own parent). Only the child is written: a VMDK's descriptor
/// (`parentCID`, `parentFileNameHint`), a VHD's dynamic header (parent
/// unique ID, time stamp and name) and parent locators, new locator data
/// appended and synced before the header points at it; other formats are
/// refused.
pub fn relink(child: &Path, parent: &Path) -> Result<()> {
    let format = crate::probe::open(child, &OpenOptions::new().no_parents(true))?.format();
    match format {
        Format::Vmdk => crate::vmdk::writer::relink_to(child, parent),
        Format::Vhd => crate::vhd::writer::relink_to(child, parent),
        other => {
            Err(Error::unsupported(other, "relinking a child to another parent").in_file(child))
        }
    }
}

/// The format `path`'s extension names (`.vmdk`, `.vhd`, `.vhdx`, `.img`/
/// `.raw`/`.dd`/`.bin`), for a create or convert that names none.
pub fn format_from_extension(path: &Path) -> Option<Format> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "vmdk" => Some(Format::Vmdk),
        "vhd" => Some(Format::Vhd),
        "vhdx" => Some(Format::Vhdx),
        "img" | "raw" | "dd" | "bin" => Some(Format::Raw),
        _ => None,
    }
}

/// The error for a format this library does not write.
fn not_written(format: Format) -> Error {
    Error::unsupported(format, "writing this format is not supported")
}
