//! What a file system tolerated while it was read (a bad checksum on a
//! structure that is otherwise sound), and the options that decide
//! whether such a problem is tolerated at all.

use std::fmt;

use crate::error::FsName;

/// A problem tolerated while reading a file system: the structure was
/// used as found. [`FsOptions::strict`] turns each into an error instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The reader that tolerated it.
    pub fs: FsName,
    /// The path inside the file system it was met at, where known.
    pub path: Option<String>,
    /// The byte offset on the volume of the structure.
    pub offset: Option<u64>,
    /// One line for a person.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.fs)?;
        if let Some(p) = &self.path {
            write!(f, " {p}")?;
        }
        if let Some(o) = self.offset {
            write!(f, " at {o:#x}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// How [`open_fs_with`](crate::open_fs_with) opens a file system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FsOptions {
    /// Refuse what would otherwise be a [`Warning`] (a bad checksum) with
    /// a [`Corrupt`](crate::ErrorKind::Corrupt) error.
    pub strict: bool,
}

impl FsOptions {
    /// These options with strict mode on or off.
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }
}
