//! How a file system is opened.

/// How [`open_fs_with`](crate::open_fs_with) opens a file system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FsOptions {
    /// Refuse what would otherwise be a warning
    /// ([`FileSystem::warnings`](crate::FileSystem::warnings): a bad
    /// checksum) with a [`Corrupt`](crate::ErrorKind::Corrupt) error.
    pub strict: bool,
}

impl FsOptions {
    /// These options with strict mode on or off.
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }
}
