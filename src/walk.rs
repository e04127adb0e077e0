//! Walking a file system's tree: an iterator of entries with their
//! metadata, like `walkdir`, safe on damaged and hostile file systems.
//!
//! [`Walk`] reads each directory once through [`FileSystem::visit_dir`]
//! (every entry's metadata, link target and streams come from the entry
//! at hand, with no lookup from the root per path), yields its entries
//! sorted by name, and enters subdirectories depth first. A directory
//! whose inode is one of its own ancestors (a directory loop) is yielded
//! but not entered, and an error says so; nesting deeper than
//! [`MAX_DEPTH`] directories below the start is an error too. An entry
//! that cannot be read is an `Err` item naming its path, and the walk
//! goes on.
//!
//! ```no_run
//! use std::sync::Arc;
//! use diskimage::walk::Walk;
//! let device: Arc<dyn diskimage::BlockDevice> = diskimage::open(
//!     "disk.img".as_ref(),
//!     &diskimage::OpenOptions::default(),
//! )?.device();
//! let fs = diskimage::fs::open_fs(device)?;
//! for entry in Walk::new(fs.as_ref(), "/")? {
//!     match entry {
//!         Ok(e) => println!("{} {} bytes", e.path, e.meta.size),
//!         Err(e) => eprintln!("{e}"),
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::VecDeque;
use std::fmt;

use diskimage_fs::file_system::join;
use diskimage_fs::{Error as FsError, FileReader, FileSystem, FileType, FsKind, FsName, Metadata};

/// Whether the entry at `path` (with `inode`) of a file system of `kind`
/// is one of the file system's own metadata files rather than user data.
///
/// NTFS keeps its metadata in files: MFT records 0 to 23 (`$MFT`,
/// `$MFTMirr`, `$LogFile`, `$Volume`, `$AttrDef`, `$Bitmap`, `$Boot`,
/// `$BadClus`, `$Secure`, `$UpCase`, `$Extend`, and the reserved records)
/// and everything below `/$Extend` (`$ObjId`, `$Quota`, `$Reparse`,
/// `$UsnJrnl`, `$RmMetadata`, ...). A root-level name that merely starts
/// with `$` (`$Recycle.Bin`) is user data. Other file systems keep no
/// metadata in their namespace.
pub fn is_fs_metadata(kind: FsKind, path: &str, inode: Option<u64>) -> bool {
    kind == FsKind::Ntfs
        && (inode.is_some_and(|i| i < 24) || path == "/$Extend" || path.starts_with("/$Extend/"))
}

/// Deepest directory nesting walked below the start; deeper means a
/// directory loop that inode numbers could not show.
pub const MAX_DEPTH: usize = 256;

/// One entry of a walk.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The path inside the file system, from `/`.
    pub path: String,
    /// Its metadata.
    pub meta: Metadata,
    /// The link target of a symlink.
    pub target: Option<String>,
    /// Named streams (NTFS alternate data streams).
    pub streams: Vec<String>,
}

impl Entry {
    /// The entry's name: the last component of its path.
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }

    /// Opens the entry's data (its unnamed stream) in `fs`, the file
    /// system the walk reads.
    pub fn open<'f>(&self, fs: &'f dyn FileSystem) -> Result<Box<dyn FileReader + 'f>, FsError> {
        fs.open(&self.path)
    }
}

/// A path a walk could not read, and why.
#[derive(Debug)]
pub struct WalkError {
    /// The path inside the file system.
    pub path: String,
    /// What went wrong (boxed: walk items stay small).
    pub error: Box<FsError>,
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.error)
    }
}

impl std::error::Error for WalkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// One directory being listed: what is left of it.
struct Frame {
    items: VecDeque<Result<Entry, WalkError>>,
    /// Whether entering it added to the ancestors (the start did not: its
    /// key is there from the beginning).
    pushed: bool,
}

/// A depth-first walk of a file system's tree, entries sorted by name
/// within each directory; see the [module docs](self).
pub struct Walk<'f> {
    fs: &'f dyn FileSystem,
    recursive: bool,
    stack: Vec<Frame>,
    /// The inodes ([`ancestor_key`]) of the directories from the start
    /// down to the one listed last.
    ancestors: Vec<u64>,
    /// The directory just yielded, to enter before the next entry.
    enter: Option<(String, Option<u64>)>,
    /// Leave out the file system's own metadata files ([`is_fs_metadata`]).
    skip_fs_metadata: bool,
}

impl<'f> Walk<'f> {
    /// A walk of the whole tree below the directory `dir` (not included).
    pub fn new(fs: &'f dyn FileSystem, dir: &str) -> Result<Self, FsError> {
        Self::with_depth(fs, dir, true)
    }

    /// The entries of the directory `dir` only, as a walk does them.
    pub fn list(fs: &'f dyn FileSystem, dir: &str) -> Result<Self, FsError> {
        Self::with_depth(fs, dir, false)
    }

    fn with_depth(fs: &'f dyn FileSystem, dir: &str, recursive: bool) -> Result<Self, FsError> {
        let meta = fs.metadata(dir)?;
        if meta.file_type != FileType::Directory {
            return Err(FsError::wrong_type(
                fs_name(fs.kind()),
                dir,
                "not a directory",
            ));
        }
        let mut walk = Walk {
            fs,
            recursive,
            stack: Vec::new(),
            ancestors: vec![ancestor_key(meta.inode)],
            enter: None,
            skip_fs_metadata: false,
        };
        let items = walk.read(dir);
        walk.stack.push(Frame {
            items,
            pushed: false,
        });
        Ok(walk)
    }

    /// Leaves out the file system's own metadata files (NTFS `$MFT`,
    /// `/$Extend/...`; see [`is_fs_metadata`]) and does not enter them.
    #[must_use]
    pub fn skip_fs_metadata(mut self) -> Self {
        self.skip_fs_metadata = true;
        self
    }

    /// The entries of `dir`, sorted by name, each entry's failures (a link
    /// target that cannot be read) just before it.
    fn read(&self, dir: &str) -> VecDeque<Result<Entry, WalkError>> {
        let fail = |path: String, error| {
            Err(WalkError {
                path,
                error: Box::new(error),
            })
        };
        if let Some(e) = depth_error(self.fs.kind(), dir, &self.ancestors) {
            return VecDeque::from([fail(dir.to_string(), e)]);
        }
        let mut entries: Vec<(String, Vec<Result<Entry, WalkError>>)> = Vec::new();
        let visited = self.fs.visit_dir(dir, &mut |v| {
            let v = match v {
                Ok(v) => v,
                Err((name, error)) => {
                    entries.push((name.clone(), vec![fail(join(dir, &name), error)]));
                    return std::ops::ControlFlow::Continue(());
                }
            };
            let path = join(dir, v.name());
            let mut items = Vec::new();
            match v.metadata() {
                Err(error) => items.push(fail(path, error)),
                Ok(meta) => {
                    let target = if meta.file_type == FileType::Symlink {
                        v.read_link()
                            .map_err(|error| items.push(fail(path.clone(), error)))
                            .ok()
                    } else {
                        None
                    };
                    let streams = v.streams().unwrap_or_default();
                    items.push(Ok(Entry {
                        path,
                        meta,
                        target,
                        streams,
                    }));
                }
            }
            entries.push((v.name().to_string(), items));
            std::ops::ControlFlow::Continue(())
        });
        if let Err(e) = visited {
            return VecDeque::from([fail(dir.to_string(), e)]);
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.into_iter().flat_map(|(_, items)| items).collect()
    }

    /// Enters the directory `path` (with `inode`) just yielded, unless it
    /// is a loop; the loop's error otherwise.
    fn descend(&mut self, path: &str, inode: Option<u64>) -> Option<WalkError> {
        if let Some(error) = loop_error(self.fs.kind(), path, inode, &self.ancestors) {
            return Some(WalkError {
                path: path.to_string(),
                error: Box::new(error),
            });
        }
        self.ancestors.push(ancestor_key(inode));
        let items = self.read(path);
        self.stack.push(Frame {
            items,
            pushed: true,
        });
        None
    }
}

impl Iterator for Walk<'_> {
    type Item = Result<Entry, WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some((path, inode)) = self.enter.take() {
            if let Some(e) = self.descend(&path, inode) {
                return Some(Err(e));
            }
        }
        loop {
            let frame = self.stack.last_mut()?;
            let Some(item) = frame.items.pop_front() else {
                if frame.pushed {
                    self.ancestors.pop();
                }
                self.stack.pop();
                continue;
            };
            if let Ok(e) = &item {
                if self.skip_fs_metadata && is_fs_metadata(self.fs.kind(), &e.path, e.meta.inode) {
                    continue;
                }
                if self.recursive && e.meta.file_type == FileType::Directory {
                    self.enter = Some((e.path.clone(), e.meta.inode));
                }
            }
            return Some(item);
        }
    }
}

/// The ancestors a walk from `dir` starts with: `dir` itself (its
/// [`ancestor_key`]), so a walk's depth is one less than its ancestors.
pub(crate) fn root_ancestors(fs: &dyn FileSystem, dir: &str) -> Vec<u64> {
    vec![ancestor_key(fs.metadata(dir).ok().and_then(|m| m.inode))]
}

/// The error for the directory `dir` when its `ancestors` (itself
/// included) put it deeper than [`MAX_DEPTH`] below the walk's start.
pub(crate) fn depth_error(kind: FsKind, dir: &str, ancestors: &[u64]) -> Option<FsError> {
    (ancestors.len() > MAX_DEPTH + 1).then(|| {
        FsError::limit(
            fs_name(kind),
            Some(dir),
            format!("nesting deeper than {MAX_DEPTH} directories (a directory loop?)"),
        )
    })
}

/// What a directory adds to the ancestors of its subdirectories: its
/// inode, or a key no inode has (without an inode number, the depth bound
/// stops a loop).
pub(crate) fn ancestor_key(inode: Option<u64>) -> u64 {
    inode.unwrap_or(u64::MAX)
}

/// The error for the directory `path` with `inode` when that inode is one
/// of its `ancestors` (a directory loop, which a walk must not enter).
pub(crate) fn loop_error(
    kind: FsKind,
    path: &str,
    inode: Option<u64>,
    ancestors: &[u64],
) -> Option<FsError> {
    // Btrfs numbers inodes per subvolume: every subvolume's root
    // directory is 256, and the kernel's stand-in for an unreachable one
    // is 2, so those say nothing of a loop (the depth bound still holds).
    let per_subvolume = |i: &u64| kind == FsKind::Btrfs && (*i == 256 || *i == 2);
    let i = inode.filter(|i| ancestors.contains(i) && !per_subvolume(i))?;
    Some(FsError::corrupt(
        fs_name(kind),
        Some(path),
        format!("directory loop: inode {i} is this directory's own ancestor; not entered"),
    ))
}

/// The reader name errors of a file system of `kind` carry.
fn fs_name(kind: FsKind) -> FsName {
    match kind {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => FsName::Ext,
        FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 => FsName::Fat,
        FsKind::ExFat => FsName::ExFat,
        FsKind::Ntfs => FsName::Ntfs,
        FsKind::Iso9660 => FsName::Iso9660,
        FsKind::Btrfs => FsName::Btrfs,
        FsKind::Udf => FsName::Udf,
        _ => FsName::Detect,
    }
}
