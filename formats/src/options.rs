//! [`OpenOptions`]: how an image is opened.
//!
//! Images are always opened read-only: this library has no write mode, and
//! nothing in any read path writes to an input file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Format;

/// What a child image says about its parent, handed to a [`ParentResolver`].
#[derive(Debug, Clone)]
pub struct ParentRequest<'a> {
    /// The child image that needs a parent.
    pub child: &'a Path,
    /// The parent's names as the child records them, most specific first
    /// (relative path, absolute path, Windows path, file name hint ...).
    pub hints: &'a [String],
}

/// A caller's hook that maps a child's parent record to a path; asked
/// before any built-in fallback. Returning `None` lets the built-in
/// resolution go on.
pub type ParentResolver = Arc<dyn Fn(&ParentRequest<'_>) -> Option<PathBuf> + Send + Sync>;

/// Options for [`open`](crate::open).
#[derive(Clone, Default)]
pub struct OpenOptions {
    /// Refuse recoverable damage (a bad VHD checksum, a used redundant
    /// table) instead of opening with a warning.
    pub strict: bool,
    /// Open a differencing/delta image alone, without its parents (like
    /// VirtDisk's `OPEN_VIRTUAL_DISK_FLAG_NO_PARENTS`): ranges the child does
    /// not hold read as zeros and map as [`Unallocated`](crate::ExtentKind::Unallocated).
    pub no_parents: bool,
    /// Read files through a read-only memory map instead of `pread`.
    pub mmap: bool,
    /// Skip the content probe and open as this format.
    pub format: Option<Format>,
    /// Asked first when a parent image must be found.
    pub parent_resolver: Option<ParentResolver>,
}

impl fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenOptions")
            .field("strict", &self.strict)
            .field("no_parents", &self.no_parents)
            .field("mmap", &self.mmap)
            .field("format", &self.format)
            .field("parent_resolver", &self.parent_resolver.is_some())
            .finish()
    }
}
