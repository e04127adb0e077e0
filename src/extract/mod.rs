//! Restoring a tree (or one file) out of a file system into a host
//! directory, safely: the extraction engine behind `diskimage extract`.
//!
//! Nothing is ever written outside the target directory: every name is
//! one path component made safe by [`safe_name`] (no `/`, `\`, NUL or
//! control characters, never `.`/`..`/empty, at most [`MAX_NAME_BYTES`]
//! bytes), files are created with `create_new` (never through an existing
//! file or link; a taken name gets `~N`), and symlinks are created as
//! links and never followed. Every rename is reported
//! ([`Report::Renamed`]).
//!
//! The tree is walked with [`FileSystem::visit_dir`]: each directory is
//! read once and every entry's metadata and data come from its directory
//! entry, not from a lookup of its path; a file stored verbatim in an
//! image file ([`Visited::stored_runs`], [`BlockDevice::verbatim_range`])
//! is copied by the kernel (`sendfile`, on Linux), any other goes through
//! one reused buffer per thread; the modification time is set on the
//! handle written. Directory loops and nesting deeper than
//! [`walk::MAX_DEPTH`](crate::walk::MAX_DEPTH) are reported and not
//! entered, as in [`crate::walk`].
//!
//! Threads take whole directories, never single files (handing each file
//! to a writer thread was measured slower than the write itself; see
//! `benches/README.md`). Results are reported in the order of the
//! one-thread depth-first walk, so renames (`~N` is given within one
//! directory, by one thread), reports, counts and the error returned do
//! not depend on the number of threads; what differs is only that, after
//! an output error, directories later in the walk may have been written
//! already. Directory times are set last, once everything is written.
//!
//! ```no_run
//! use diskimage::extract::{extract, ExtractOptions};
//! let set = diskimage::DiskSet::open(&["disk.vmdk"], &diskimage::OpenOptions::default())?;
//! let volume = set.default_volume(None)?;
//! let summary = extract(&volume.device(), "/etc", "restore".as_ref(), &ExtractOptions::new(), &())?;
//! println!("{} files, {} renamed, {} failed", summary.files, summary.renamed, summary.failed);
//! # Ok::<(), diskimage::Error>(())
//! ```
//!
//! [`FileSystem::visit_dir`]: diskimage_fs::FileSystem::visit_dir
//! [`Visited::stored_runs`]: diskimage_fs::Visited::stored_runs
//! [`BlockDevice::verbatim_range`]: diskimage_formats::BlockDevice::verbatim_range

use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use diskimage_formats::BlockDevice;
use diskimage_fs::{open_fs_with, FileType, FsOptions, PathEntry};

use crate::error::{Error, Result, Scheme};
use crate::walk::{root_ancestors, WalkError};

mod extractor;
mod host;
mod names;
mod order;

pub use names::{safe_name, MAX_NAME_BYTES};

use extractor::{Extractor, Fail};
use order::{Done, Unit};

/// At most this many threads extract at once by default.
const MAX_DEFAULT_THREADS: usize = 4;

/// How to extract.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExtractOptions {
    /// Also write NTFS alternate data streams, as `name:stream` files.
    pub streams: bool,
    /// Threads that extract at once, each a whole directory at a time
    /// (`None`: the cores available, at most 4). The output and the
    /// reports are the same whatever the number.
    pub threads: Option<NonZeroUsize>,
    /// Copy files stored verbatim in an image file by the kernel
    /// (`sendfile`); off, every file is read through the file system.
    pub kernel_copy: bool,
    /// Also write the file system's own metadata files (NTFS `$MFT`,
    /// `/$Extend/...`; see [`crate::walk::is_fs_metadata`]).
    pub fs_metadata: bool,
    /// Open the file system strict: damage it would tolerate with a
    /// warning (a bad checksum) is an error instead.
    pub strict: bool,
    /// Open the file system as this kind instead of the detected one
    /// (see [`FsOptions::kind`]).
    pub fs_kind: Option<diskimage_fs::FsKind>,
    /// The other devices of a file system spread over several (see
    /// [`FsOptions::devices`]; [`crate::DiskSet::fs_devices`] gives them).
    pub fs_devices: diskimage_fs::Devices,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            streams: false,
            threads: None,
            kernel_copy: true,
            fs_metadata: true,
            strict: false,
            fs_kind: None,
            fs_devices: diskimage_fs::Devices::default(),
        }
    }
}

impl ExtractOptions {
    /// The defaults: no streams, threads by cores, kernel copies on,
    /// metadata files written.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether alternate data streams are written too.
    #[must_use]
    pub fn streams(mut self, on: bool) -> Self {
        self.streams = on;
        self
    }

    /// How many threads extract at once (`None`: by cores, at most 4).
    #[must_use]
    pub fn threads(mut self, n: Option<NonZeroUsize>) -> Self {
        self.threads = n;
        self
    }

    /// Whether files stored verbatim are copied by the kernel.
    #[must_use]
    pub fn kernel_copy(mut self, on: bool) -> Self {
        self.kernel_copy = on;
        self
    }

    /// Whether the file system is opened strict.
    #[must_use]
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on;
        self
    }

    /// The file system to open instead of the detected one.
    #[must_use]
    pub fn fs_kind(mut self, kind: Option<diskimage_fs::FsKind>) -> Self {
        self.fs_kind = kind;
        self
    }

    /// The other devices of a multi-device file system (see
    /// [`FsOptions::devices`]).
    #[must_use]
    pub fn fs_devices(mut self, devices: Vec<Arc<dyn BlockDevice>>) -> Self {
        self.fs_devices = diskimage_fs::Devices(devices);
        self
    }

    /// Whether the file system's own metadata files are written too.
    #[must_use]
    pub fn fs_metadata(mut self, on: bool) -> Self {
        self.fs_metadata = on;
        self
    }

    fn thread_count(&self) -> usize {
        self.threads.map_or_else(
            || {
                std::thread::available_parallelism()
                    .map_or(1, NonZeroUsize::get)
                    .min(MAX_DEFAULT_THREADS)
            },
            NonZeroUsize::get,
        )
    }
}

/// Something an extraction tells its [`Observer`], in walk order.
#[derive(Debug)]
#[non_exhaustive]
pub enum Report {
    /// An entry was written under another name (unsafe, or taken).
    Renamed {
        /// Its path in the file system.
        path: String,
        /// Where it was written.
        to: PathBuf,
    },
    /// An entry could not be read; the rest goes on.
    Failed(WalkError),
    /// A device, FIFO or socket: not written.
    SkippedSpecial {
        /// Its path in the file system.
        path: String,
    },
    /// What the file system tolerated when it was opened (an ext journal
    /// replayed in memory, a damaged block skipped), before any entry.
    FsWarning(String),
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Renamed { path, to } => write!(f, "renamed: {path} -> {}", to.display()),
            Report::Failed(e) => e.fmt(f),
            Report::SkippedSpecial { path } => write!(f, "skipped special file: {path}"),
            Report::FsWarning(w) => write!(f, "warning: {w}"),
        }
    }
}

/// Watches an extraction: a progress bar, a log.
pub trait Observer: Sync {
    /// A file was written (called from the thread that wrote it, at once).
    fn file_done(&self) {}

    /// A rename, failure or skipped entry, in the order of a one-thread
    /// depth-first walk whatever the number of threads.
    fn report(&self, report: &Report) {
        let _ = report;
    }
}

/// Watches nothing.
impl Observer for () {}

/// What an extraction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Files written.
    pub files: u64,
    /// Entries written under another name.
    pub renamed: usize,
    /// Entries that could not be read (each reported).
    pub failed: usize,
}

/// Extracts `fs_path` (a directory's tree, or one file) of the file
/// system on `device` into the host directory `target` (created if
/// missing). Entries that cannot be read are reported and counted in
/// [`Summary::failed`]; an error of the host (a full disk, a name it
/// refuses) stops the extraction and is returned.
pub fn extract(
    device: &Arc<dyn BlockDevice>,
    fs_path: &str,
    target: &Path,
    options: &ExtractOptions,
    observer: &dyn Observer,
) -> Result<Summary> {
    let fs_options = FsOptions::default()
        .with_strict(options.strict)
        .with_kind(options.fs_kind)
        .with_devices(options.fs_devices.0.clone());
    let fs = open_fs_with(Arc::clone(device), &fs_options)?;
    let opened = fs.warnings();
    for w in &opened {
        observer.report(&Report::FsWarning(w.clone()));
    }
    std::fs::create_dir_all(target).map_err(|e| Error::host_io(Scheme::Extract, target, e))?;
    let meta = fs.metadata(fs_path)?;
    let mut x = Extractor::new(fs.as_ref(), device.as_ref(), options, observer);
    let done = if meta.file_type == FileType::Directory {
        let unit = Unit {
            key: Vec::new(),
            ancestors: root_ancestors(fs.as_ref(), fs_path),
            fs_dir: fs_path.to_string(),
            host: target.to_path_buf(),
        };
        order::walk(&mut x, device, options.thread_count(), unit, observer)
    } else {
        let entry = PathEntry::new(fs.as_ref(), fs_path);
        let mut done = Done::default();
        x.entry(&mut done, target, fs_path, &entry, &[])
            .map_err(|f| match f {
                Fail::Fs(e) => Error::from_fs(e),
                Fail::Host(e) => e,
            })?;
        for r in &done.log {
            observer.report(r);
        }
        done
    };
    // Damage met while reading (an inode's checksum, say) is reported
    // too, after what was reported at open.
    for w in fs.warnings().into_iter().skip(opened.len()) {
        observer.report(&Report::FsWarning(w));
    }
    if let Some(e) = done.stop {
        return Err(e);
    }
    for (dir, t) in done.dir_times.iter().rev() {
        host::set_dir_mtime(dir, *t);
    }
    Ok(Summary {
        files: done.files,
        renamed: done.renamed,
        failed: done.failed,
    })
}
