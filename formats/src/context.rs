//! [`OpenContext`]: what a format reader gets while it opens an image —
//! the options, a way to open sibling files (extents, split parts), and
//! parent resolution with a depth limit and cycle detection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::budget::MemoryBudget;
use crate::error::{Detail, Error, ErrorKind, Format, Result};
use crate::image::DiskImage;
use crate::image_file::ImageFile;
use crate::options::{OpenOptions, ParentRequest};

/// The deepest parent chain this library follows (VMware allows 32
/// snapshots per chain, Hyper-V 50 checkpoints; 255 leaves room).
pub const MAX_CHAIN_DEPTH: u32 = 255;

/// Links of a parent chain opened on one stack before the rest of the
/// chain moves to a fresh thread (see [`OpenContext::open_parent`]).
const LINKS_PER_STACK: u32 = 8;
/// The stack of each such thread: room for [`LINKS_PER_STACK`] links in
/// a debug build with plenty to spare.
const CHAIN_STACK_BYTES: usize = 16 << 20;

/// Files held in memory, visible to an in-memory open instead of the file system.
pub type MemoryFiles = HashMap<PathBuf, Arc<[u8]>>;

/// Opens one image, with its own chain, inside a context: the probe
/// ([`crate::probe`] passes it in, so this module need not know it).
pub type Opener = fn(&OpenContext<'_>, &Path) -> Result<DiskImage>;

/// The state of one `open` call, passed to every format reader.
pub struct OpenContext<'a> {
    options: &'a OpenOptions,
    memory: Option<&'a MemoryFiles>,
    /// How a parent is opened.
    opener: Opener,
    /// Canonical paths of the images below this one in the chain (the child first).
    chain: Vec<PathBuf>,
    /// The memory ceiling shared by every file of this open, chain included.
    budget: Arc<MemoryBudget>,
}

impl<'a> OpenContext<'a> {
    /// A context opening files from `memory` (fuzzing, tests: no other
    /// file can be opened) or, when `None`, from the file system; parents
    /// are opened with `opener`. The probe's constructors
    /// (`OpenContext::new`, `OpenContext::in_memory`) pass its own.
    pub(crate) fn with_opener(
        options: &'a OpenOptions,
        memory: Option<&'a MemoryFiles>,
        opener: Opener,
    ) -> Self {
        OpenContext {
            options,
            memory,
            opener,
            chain: Vec::new(),
            budget: options.memory_budget(),
        }
    }

    /// The caller's options.
    pub fn options(&self) -> &OpenOptions {
        self.options
    }

    /// The memory budget of this open (shared with every file it opens).
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// How many children are below the image being opened (0 for the image the caller named).
    pub fn depth(&self) -> u32 {
        u32::try_from(self.chain.len()).unwrap_or(u32::MAX)
    }

    /// Opens a file read-only (from memory in an in-memory context),
    /// charging what its reader keeps in memory to this open's budget.
    pub fn open_file(&self, path: &Path) -> Result<ImageFile> {
        let file = match self.memory {
            Some(files) => match files.get(path) {
                Some(data) => Ok(ImageFile::from_bytes(path, Arc::clone(data))),
                None => Err(Error::missing(
                    Format::Probe,
                    "file",
                    vec![path.to_path_buf()],
                )),
            },
            None => ImageFile::open(path, self.options),
        }?;
        Ok(file.with_budget(Arc::clone(&self.budget)))
    }

    /// Whether `path` names an existing regular file (in memory, a stored file).
    pub fn is_file(&self, path: &Path) -> bool {
        match self.memory {
            Some(files) => files.contains_key(path),
            None => path.is_file(),
        }
    }

    fn canonical(&self, path: &Path) -> PathBuf {
        match self.memory {
            Some(_) => path.to_path_buf(),
            None => std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        }
    }

    /// Finds the file a child's parent record names. Order: the caller's
    /// resolver, each hint as a path relative to the child's folder (with
    /// `\` read as `/`), each hint as an absolute path, then the child's
    /// folder joined with each hint's file name (for `C:\...`,
    /// `/vmfs/volumes/...` and other paths from another machine).
    ///
    /// A parent that cannot be found is an [`ErrorKind::MissingFile`] error
    /// listing every path tried.
    pub fn resolve_parent(
        &self,
        format: Format,
        child: &Path,
        hints: &[String],
    ) -> Result<PathBuf> {
        let mut tried = Vec::new();
        if let Some(resolver) = &self.options.parent_resolver {
            if let Some(p) = resolver(&ParentRequest { child, hints }) {
                if self.is_file(&p) && (self.memory.is_some() || self.options.allows(&p)) {
                    return Ok(p);
                }
                tried.push(p);
            }
        }
        let dir = child.parent().unwrap_or(Path::new(""));
        let mut candidates: Vec<PathBuf> = Vec::new();
        for hint in hints.iter().filter(|h| !h.is_empty()) {
            let unix = hint.replace('\\', "/");
            if is_absolute_anywhere(hint) {
                if Path::new(&unix).is_absolute() && !hint.contains(':') {
                    candidates.push(PathBuf::from(&unix));
                }
            } else {
                candidates.push(dir.join(&unix));
            }
        }
        for hint in hints.iter().filter(|h| !h.is_empty()) {
            let unix = hint.replace('\\', "/");
            if let Some(name) = unix.rsplit('/').next().filter(|n| !n.is_empty()) {
                candidates.push(dir.join(name));
            }
        }
        for c in candidates {
            if tried.contains(&c) {
                continue;
            }
            if self.memory.is_none() && !self.options.allows(&c) {
                tried.push(c);
                continue;
            }
            if self.is_file(&c) {
                return Ok(c);
            }
            tried.push(c);
        }
        Err(Error::missing(format, format!("parent of {}", child.display()), tried).in_file(child))
    }

    /// Opens the parent of `child` (found with [`resolve_parent`](Self::resolve_parent))
    /// as a whole image with its own chain. Fails on a chain deeper than
    /// [`MAX_CHAIN_DEPTH`] and on a cycle.
    pub fn open_parent(&self, format: Format, child: &Path, hints: &[String]) -> Result<DiskImage> {
        let path = self.resolve_parent(format, child, hints)?;
        if self.depth() >= MAX_CHAIN_DEPTH {
            return Err(Error::limit(
                format,
                "parent chain depth",
                u64::from(self.depth()) + 1,
                u64::from(MAX_CHAIN_DEPTH),
            )
            .in_file(child));
        }
        let me = self.canonical(child);
        let parent = self.canonical(&path);
        if parent == me || self.chain.contains(&parent) {
            return Err(Error::corrupt(
                format,
                Detail::Invalid(format!("parent chain loops back to {}", path.display())),
            )
            .in_file(child));
        }
        let mut chain = self.chain.clone();
        chain.push(me);
        let ctx = OpenContext {
            options: self.options,
            memory: self.memory,
            opener: self.opener,
            chain,
            budget: Arc::clone(&self.budget),
        };
        let open = || {
            (ctx.opener)(&ctx, &path).map_err(|e| {
                if e.kind() == ErrorKind::MissingFile {
                    e
                } else {
                    e.in_file(&path)
                }
            })
        };
        // Each link opens its parent from inside its own open: a chain of
        // 255 links would overflow a small stack (a 2 MiB thread). Every
        // few links, the rest of the chain is opened on a fresh thread
        // with a stack of its own, so the caller's stack only ever holds
        // the first few.
        if ctx.depth() % LINKS_PER_STACK != 0 {
            return open();
        }
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("diskimage-chain".into())
                .stack_size(CHAIN_STACK_BYTES)
                .spawn_scoped(s, open)
                .map_err(|e| Error::io(format, e).in_file(child))?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// Whether a path from an image's metadata is absolute on Unix or Windows
/// (`/x`, `C:\x`, `C:/x`, `\\server\share`, `\x`).
#[doc(hidden)]
pub fn is_absolute_anywhere(p: &str) -> bool {
    let b = p.as_bytes();
    p.starts_with('/')
        || p.starts_with('\\')
        || (b.len() >= 2
            && b.first().is_some_and(u8::is_ascii_alphabetic)
            && b.get(1) == Some(&b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_of_both_worlds() {
        assert!(is_absolute_anywhere("/vmfs/volumes/ds/x.vmdk"));
        assert!(is_absolute_anywhere("C:\\Projects\\p.vhd"));
        assert!(is_absolute_anywhere("\\\\srv\\share\\p.vhd"));
        assert!(!is_absolute_anywhere("..\\p.vhd"));
        assert!(!is_absolute_anywhere("p.vmdk"));
    }

    #[test]
    fn parent_found_by_relative_path_then_by_file_name() {
        let mut files = MemoryFiles::new();
        files.insert(PathBuf::from("vm/base.vhd"), Arc::from(vec![0u8; 1]));
        let opts = OpenOptions::default();
        let ctx = OpenContext::in_memory(&opts, &files);
        let child = Path::new("vm/child.vhd");
        let p = ctx
            .resolve_parent(Format::Vhd, child, &["base.vhd".into()])
            .unwrap();
        assert_eq!(p, Path::new("vm/base.vhd"));
        let p = ctx
            .resolve_parent(Format::Vhd, child, &["C:\\Projects\\base.vhd".into()])
            .unwrap();
        assert_eq!(p, Path::new("vm/base.vhd"));
    }

    #[test]
    fn missing_parent_lists_every_path_tried() {
        let files = MemoryFiles::new();
        let opts = OpenOptions {
            parent_resolver: Some(Arc::new(|_: &ParentRequest<'_>| {
                Some(PathBuf::from("/r/p.vhd"))
            })),
            ..OpenOptions::default()
        };
        let ctx = OpenContext::in_memory(&opts, &files);
        let e = ctx
            .resolve_parent(Format::Vhd, Path::new("d/c.vhd"), &["..\\x\\p.vhd".into()])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingFile);
        let Detail::Missing { tried, .. } = e.detail() else {
            panic!("{e}")
        };
        assert_eq!(
            tried,
            &[
                PathBuf::from("/r/p.vhd"),
                PathBuf::from("d/../x/p.vhd"),
                PathBuf::from("d/p.vhd")
            ]
        );
    }
}
