//! [`OpenOptions`]: how an image is opened.
//!
//! [`open`](crate::open) always opens read-only, and nothing in any read
//! path writes to an input file; writing is asked for only through
//! [`crate::write`].

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

/// Options for [`open`](crate::open): the defaults, changed through the
/// builder methods (`OpenOptions::new().strict(true).no_parents(true)`).
#[derive(Clone, Default)]
#[non_exhaustive]
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
    /// When set, no file outside this folder is opened (the image, its
    /// extents, parents and split parts): one that is, after symbolic links
    /// are followed, gives an [`ErrorKind::OutsideFolder`](crate::ErrorKind::OutsideFolder)
    /// error, and parent candidates outside it are skipped. Opening a VM's
    /// disks sets it to the VM's folder.
    pub confine_to: Option<PathBuf>,
    /// The per-open memory ceiling in bytes for the tables and caches of
    /// the image and its whole chain (see [`MemoryBudget`](crate::MemoryBudget));
    /// `None` is [`DEFAULT_MEMORY_LIMIT`](crate::DEFAULT_MEMORY_LIMIT).
    pub memory_limit: Option<u64>,
    /// Open this internal snapshot of the image instead of its current
    /// state: a QCOW2 snapshot by ID, else by name (as `qemu-img convert
    /// -l` finds it). It applies to the image named, not to its parents; a
    /// format without internal snapshots refuses it (`Unsupported`).
    pub snapshot: Option<String>,
}

impl fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenOptions")
            .field("strict", &self.strict)
            .field("no_parents", &self.no_parents)
            .field("mmap", &self.mmap)
            .field("format", &self.format)
            .field("parent_resolver", &self.parent_resolver.is_some())
            .field("confine_to", &self.confine_to)
            .field("memory_limit", &self.memory_limit)
            .field("snapshot", &self.snapshot)
            .finish()
    }
}

impl OpenOptions {
    /// The defaults: tolerant, parents followed, `pread`, format by
    /// content, no resolver, no confinement, the default memory limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuse recoverable damage instead of warning ([`OpenOptions::strict`]).
    #[must_use]
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on;
        self
    }

    /// Open a delta alone, without its parents ([`OpenOptions::no_parents`]).
    #[must_use]
    pub fn no_parents(mut self, on: bool) -> Self {
        self.no_parents = on;
        self
    }

    /// Read through a read-only memory map ([`OpenOptions::mmap`]).
    #[must_use]
    pub fn mmap(mut self, on: bool) -> Self {
        self.mmap = on;
        self
    }

    /// Open as this format, or by content when `None` ([`OpenOptions::format`]).
    #[must_use]
    pub fn format(mut self, format: Option<Format>) -> Self {
        self.format = format;
        self
    }

    /// Ask `resolver` first for parents ([`OpenOptions::parent_resolver`]).
    #[must_use]
    pub fn parent_resolver(mut self, resolver: Option<ParentResolver>) -> Self {
        self.parent_resolver = resolver;
        self
    }

    /// Open no file outside `folder` ([`OpenOptions::confine_to`]).
    #[must_use]
    pub fn confine_to(mut self, folder: Option<PathBuf>) -> Self {
        self.confine_to = folder;
        self
    }

    /// The memory ceiling of one open, in bytes ([`OpenOptions::memory_limit`]).
    #[must_use]
    pub fn memory_limit(mut self, bytes: Option<u64>) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// Open this internal snapshot, by ID or name ([`OpenOptions::snapshot`]).
    #[must_use]
    pub fn snapshot(mut self, snapshot: Option<String>) -> Self {
        self.snapshot = snapshot;
        self
    }

    /// A fresh budget of [`OpenOptions::memory_limit`] bytes for one open.
    pub fn memory_budget(&self) -> Arc<crate::MemoryBudget> {
        crate::MemoryBudget::new(self.memory_limit.unwrap_or(crate::DEFAULT_MEMORY_LIMIT))
    }

    /// Whether `path` may be opened under [`OpenOptions::confine_to`]: always
    /// without it; with it, when the path (its symbolic links followed, or
    /// as written when it does not exist) lies inside that folder.
    pub fn allows(&self, path: &Path) -> bool {
        let Some(root) = &self.confine_to else {
            return true;
        };
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
        let full = std::fs::canonicalize(path).unwrap_or_else(|_| lexical(path));
        full.starts_with(&root)
    }
}

/// `path` made absolute against the working directory, `.` and `..` folded
/// without touching the file system.
fn lexical(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}
