//! How a file system is opened.

use std::sync::Arc;

use diskimage_formats::BlockDevice;

/// How [`open_fs_with`](crate::open_fs_with) opens a file system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FsOptions {
    /// Refuse what would otherwise be a warning
    /// ([`FileSystem::warnings`](crate::FileSystem::warnings): a bad
    /// checksum) with a [`Corrupt`](crate::ErrorKind::Corrupt) error.
    pub strict: bool,
    /// Open as this file system, whatever detection finds (the UDF side
    /// of a bridge ISO 9660 + UDF disc, which is read through ISO 9660
    /// otherwise); `None`: the detected one.
    pub kind: Option<crate::FsKind>,
    /// The other devices of a file system spread over several (a
    /// multi-device Btrfs), besides the one opened; file systems on one
    /// device ignore them.
    pub devices: Devices,
}

/// Devices given to [`FsOptions::devices`]; each is recognised by its own
/// superblock (file system UUID, device id), so their order does not
/// matter. Equal when they are the same devices (pointers).
#[derive(Clone, Default)]
pub struct Devices(pub Vec<Arc<dyn BlockDevice>>);

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Devices({})", self.0.len())
    }
}

impl PartialEq for Devices {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b)))
    }
}

impl Eq for Devices {}

impl FsOptions {
    /// These options with strict mode on or off.
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// These options with the other devices of a multi-device file
    /// system (see [`FsOptions::devices`]).
    pub fn with_devices(mut self, devices: Vec<Arc<dyn BlockDevice>>) -> Self {
        self.devices = Devices(devices);
        self
    }

    /// These options opening as `kind` (see [`FsOptions::kind`]).
    pub fn with_kind(mut self, kind: Option<crate::FsKind>) -> Self {
        self.kind = kind;
        self
    }
}
