//! How a file system is opened.

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
}

impl FsOptions {
    /// These options with strict mode on or off.
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// These options opening as `kind` (see [`FsOptions::kind`]).
    pub fn with_kind(mut self, kind: Option<crate::FsKind>) -> Self {
        self.kind = kind;
        self
    }
}
