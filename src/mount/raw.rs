//! A raw mount: each disk and volume of a set as one read-only flat file
//! (`disk0`, `disk0p1`, `lvm/<vg>/<lv>`), read with
//! [`BlockDevice::read_at`] from several FUSE threads at once. A disk that
//! is one image file byte for byte (a raw image, a one-extent flat VMDK)
//! is handed to the kernel to read directly (FUSE passthrough) where the
//! kernel and the privileges allow. Other disks whose data is stored
//! verbatim are opened for direct I/O and answered from maps of the image
//! files (`read` below), one copy per byte.

use std::ffi::OsStr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use diskimage_formats::{stored_verbatim, BlockDevice};
use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry,
    ReplyOpen, ReplyStatfs, Request,
};

use super::mapped::{Mapped, Maps};
use super::{own_ids, synthetic_dir, wants_write, MountError, TTL};
use crate::buffer::AlignedBuf;

thread_local! {
    /// Each FUSE thread's read buffer, reused for every request it answers:
    /// page-aligned (the kernel copies into it faster) and never zero-filled
    /// again (`read_at` fills all of it or fails).
    static READ_BUF: std::cell::RefCell<AlignedBuf> = std::cell::RefCell::new(AlignedBuf::new());
}

/// One file of a raw mount.
pub struct RawFile {
    /// Its path below the mount point, `/`-separated (`lvm/vg/lv`).
    pub path: String,
    /// What reading it reads.
    pub device: Arc<dyn BlockDevice>,
}

impl std::fmt::Debug for RawFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawFile")
            .field("path", &self.path)
            .field("size", &self.device.size())
            .finish()
    }
}

enum Body {
    Dir(Vec<usize>),
    File(Arc<dyn BlockDevice>),
}

struct Node {
    name: String,
    parent: usize,
    body: Body,
    /// The kernel's handle of the image file this node passes reads
    /// through to, made at the first open (`None`: not possible).
    backing: OnceLock<Option<BackingId>>,
    /// Whether the node's data is stored verbatim in image files
    /// ([`stored_verbatim`]), found at first need.
    verbatim: OnceLock<bool>,
}

/// The fixed tree of a raw mount; node `i` is FUSE node `i + 1`.
pub struct RawFs {
    nodes: Vec<Node>,
    ids: (u32, u32),
    log_errors: bool,
    /// The kernel agreed to pass reads through to backing files
    /// (`FUSE_PASSTHROUGH`, Linux 6.9 and later).
    passthrough: bool,
    /// The kernel lets a file opened for direct I/O be mapped
    /// (`FUSE_DIRECT_IO_ALLOW_MMAP`, Linux 6.6 and later).
    direct_io_mmap: bool,
    maps: Maps,
}

impl RawFs {
    /// The tree holding `files`; a path given twice or below a file is refused.
    pub fn new(files: Vec<RawFile>) -> Result<Self, MountError> {
        let mut nodes = vec![Node {
            name: String::new(),
            parent: 0,
            body: Body::Dir(Vec::new()),
            backing: OnceLock::new(),
            verbatim: OnceLock::new(),
        }];
        for f in files {
            let parts: Vec<&str> = f.path.split('/').filter(|p| !p.is_empty()).collect();
            let Some((leaf, dirs)) = parts.split_last() else {
                return Err(MountError::Invalid(format!(
                    "raw file path {:?} is empty",
                    f.path
                )));
            };
            let mut at = 0;
            for d in dirs {
                at = match child(&nodes, at, d) {
                    Some(i) if matches!(nodes.get(i).map(|n| &n.body), Some(Body::Dir(_))) => i,
                    Some(_) => {
                        return Err(MountError::Invalid(format!(
                            "raw file path {:?} goes through a file",
                            f.path
                        )))
                    }
                    None => add(&mut nodes, at, d, Body::Dir(Vec::new())),
                };
            }
            if child(&nodes, at, leaf).is_some() {
                return Err(MountError::Invalid(format!(
                    "raw file path {:?} given twice",
                    f.path
                )));
            }
            add(&mut nodes, at, leaf, Body::File(f.device));
        }
        Ok(RawFs {
            nodes,
            ids: own_ids(),
            log_errors: true,
            passthrough: false,
            direct_io_mmap: false,
            maps: Maps::default(),
        })
    }

    fn node(&self, ino: INodeNo) -> Option<&Node> {
        usize::try_from(ino.0)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.nodes.get(i))
    }

    /// Whether the file of node `ino` is opened for direct I/O: where the
    /// kernel lets such a file be mapped too, and where reads are answered
    /// from maps of the image files (see `read` below). Each read then
    /// goes to this process and its bytes straight into the reader's
    /// buffer, one copy in all, instead of filling new pages of this file's
    /// page cache first and copying them again: a 1 MiB `dd` of a sparse
    /// VMDK went from 0.2x to 0.5-0.7x of `dd` of the raw file, at half
    /// the CPU (`benches/README.md`). Other files (compressed, from a
    /// parent) keep the page cache, which spares re-reading them.
    fn direct(&self, ino: INodeNo) -> bool {
        self.direct_io_mmap
            && self.node(ino).is_some_and(|n| match &n.body {
                Body::File(dev) => *n.verbatim.get_or_init(|| stored_verbatim(dev.as_ref())),
                Body::Dir(_) => false,
            })
    }

    /// `len` bytes of `dev` from `offset` as bytes of a mapped image file,
    /// when they are stored there in one run (runs of the device's map
    /// that follow each other in one file, such as QCOW2 clusters or VMDK
    /// grains written in order, make one).
    fn mapped(&self, dev: &dyn BlockDevice, offset: u64, len: usize) -> Option<Mapped> {
        let want = u64::try_from(len).ok()?;
        let first = dev.verbatim_range(offset, want)?;
        let mut have = first.len;
        while have < want {
            let next = dev.verbatim_range(offset.checked_add(have)?, want - have)?;
            if next.len == 0
                || !std::ptr::eq(next.file, first.file)
                || next.offset != first.offset.checked_add(have)?
            {
                return None;
            }
            have = have.checked_add(next.len)?;
        }
        self.maps.bytes(first.file, first.offset, len)
    }

    fn attr(&self, i: usize) -> Option<FileAttr> {
        let ino = u64::try_from(i).ok()?.checked_add(1)?;
        let node = self.nodes.get(i)?;
        let mut a = synthetic_dir(ino, self.ids);
        if let Body::File(dev) = &node.body {
            a.kind = fuser::FileType::RegularFile;
            a.perm = 0o444;
            a.size = dev.size();
            a.blocks = dev.size().div_ceil(512);
            a.mtime = SystemTime::UNIX_EPOCH;
            if self.direct(INodeNo(ino)) {
                // Programs that size their reads by it (`cp`, `cat`) then
                // read 1 MiB at a time: every read of a direct file is a
                // round trip, and a 4 KiB one costs as much as 1 MiB.
                a.blksize = DIRECT_BLKSIZE;
            }
        }
        Some(a)
    }
}

fn child(nodes: &[Node], dir: usize, name: &str) -> Option<usize> {
    match nodes.get(dir).map(|n| &n.body) {
        Some(Body::Dir(children)) => children
            .iter()
            .copied()
            .find(|&c| nodes.get(c).is_some_and(|n| n.name == name)),
        _ => None,
    }
}

fn add(nodes: &mut Vec<Node>, dir: usize, name: &str, body: Body) -> usize {
    let i = nodes.len();
    nodes.push(Node {
        name: name.to_string(),
        parent: dir,
        body,
        backing: OnceLock::new(),
        verbatim: OnceLock::new(),
    });
    if let Some(Node {
        body: Body::Dir(children),
        ..
    }) = nodes.get_mut(dir)
    {
        children.push(i);
    }
    i
}

/// `st_blksize` of a file opened for direct I/O: the most the kernel
/// asks in one request (256 pages).
const DIRECT_BLKSIZE: u32 = 1 << 20;

/// Read-ahead of a raw mount, in KiB: the kernel's 128 KiB default makes
/// a sequential read of a disk one FUSE round trip per 128 KiB; 1 MiB (the
/// most FUSE sends in one request) cuts this process's CPU per GiB by a
/// third (`benches/README.md`).
const READ_AHEAD_KB: u32 = 1024;

/// Raises the kernel's read-ahead for the FUSE mount at `mountpoint`
/// (`/sys/class/bdi/0:N/read_ahead_kb`, writable by root only; otherwise
/// the default stays). Only a FUSE mount's own entry is touched: an
/// anonymous device (major 0) other than the directory's parent's.
pub(super) fn widen_read_ahead(mountpoint: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| m.dev());
    let (Some(mounted), Some(parent)) = (
        dev(mountpoint),
        mountpoint.parent().and_then(|p| {
            dev(if p.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                p
            })
        }),
    ) else {
        return;
    };
    let (major, minor) = (rustix::fs::major(mounted), rustix::fs::minor(mounted));
    if mounted == parent || major != 0 {
        return;
    }
    let _ = std::fs::write(
        format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"),
        READ_AHEAD_KB.to_string(),
    );
}

/// The image file `dev` is, byte for byte: one file range from file offset
/// 0 covering the whole device, and the file no longer than the device (so
/// that a read past the device's end finds nothing more). A raw image, a
/// flat VMDK of one extent; not a partition or a split or sparse image.
fn whole_file(dev: &dyn BlockDevice) -> Option<&std::fs::File> {
    let size = dev.size();
    let range = dev.verbatim_range(0, size)?;
    let file_len = range.file.metadata().ok()?.len();
    (size > 0 && range.offset == 0 && range.len == size && file_len == size).then_some(range.file)
}

impl fuser::Filesystem for RawFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Backing files may lie on a stacked file system (overlayfs) of
        // their own; this mount is then not stackable again.
        self.passthrough = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok();
        self.direct_io_mmap = config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_ok();
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(p) = usize::try_from(parent.0)
            .ok()
            .and_then(|p| p.checked_sub(1))
        else {
            return reply.error(Errno::ENOENT);
        };
        let found = name
            .to_str()
            .and_then(|n| child(&self.nodes, p, n))
            .and_then(|c| self.attr(c));
        match found {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let found = usize::try_from(ino.0)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.attr(i));
        match found {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino).map(|n| &n.body) {
            None => reply.error(Errno::ENOENT),
            Some(Body::Dir(_)) => reply.error(Errno::EISDIR),
            Some(Body::File(_)) if wants_write(flags) => reply.error(Errno::EROFS),
            Some(Body::File(dev)) => {
                // A disk that is one image file as it stands: the kernel
                // reads that file itself (FUSE passthrough, no round trip
                // through this process). The handle lives as long as the
                // mount. Needs CAP_SYS_ADMIN; otherwise reads come here.
                let backing = self.node(ino).and_then(|n| {
                    n.backing
                        .get_or_init(|| {
                            let file = whole_file(dev.as_ref()).filter(|_| self.passthrough)?;
                            reply.open_backing(file).ok()
                        })
                        .as_ref()
                });
                match backing {
                    Some(id) => reply.opened_passthrough(FileHandle(0), FopenFlags::empty(), id),
                    None if self.direct(ino) => {
                        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
                    }
                    None => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
                }
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(Node {
            body: Body::File(dev),
            name,
            ..
        }) = self.node(ino)
        else {
            return reply.error(Errno::EISDIR);
        };
        let end = dev.size().min(offset.saturating_add(u64::from(size)));
        let len = usize::try_from(end.saturating_sub(offset)).unwrap_or(0);
        // Bytes stored as one run of an image file go to the kernel from
        // a map of that file: one copy (image page cache into the reader's
        // buffer, or into this file's page cache) instead of two.
        if let Some(mapped) = self.mapped(dev.as_ref(), offset, len) {
            return reply.data(mapped.bytes());
        }
        READ_BUF.with_borrow_mut(|buf| {
            let buf = buf.get(len);
            match dev.read_at(buf, offset) {
                Ok(()) => reply.data(buf),
                Err(e) => {
                    if self.log_errors {
                        eprintln!("diskimage mount: {name}: {e}");
                    }
                    reply.error(Errno::EIO);
                }
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(node) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let Body::Dir(children) = &node.body else {
            return reply.error(Errno::ENOTDIR);
        };
        let parent = INodeNo(u64::try_from(node.parent).unwrap_or(0) + 1);
        let mut list = vec![
            (ino, fuser::FileType::Directory, "."),
            (parent, fuser::FileType::Directory, ".."),
        ];
        for &c in children {
            if let (Some(n), Some(a)) = (self.nodes.get(c), self.attr(c)) {
                list.push((a.ino, a.kind, n.name.as_str()));
            }
        }
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in list.into_iter().enumerate().skip(start) {
            if reply.add(ino, u64::try_from(i).unwrap_or(u64::MAX) + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = u64::try_from(self.nodes.len()).unwrap_or(u64::MAX);
        reply.statfs(0, 0, 0, files, 0, 4096, 255, 4096);
    }

    super::refuse_writes!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage_formats::MemoryDevice;

    fn dev() -> Arc<dyn BlockDevice> {
        Arc::new(MemoryDevice::new(vec![0u8; 1024]))
    }

    #[test]
    fn paths_make_a_tree_and_clashes_are_refused() {
        let fs = RawFs::new(vec![
            RawFile {
                path: "disk0".into(),
                device: dev(),
            },
            RawFile {
                path: "lvm/vg/lv".into(),
                device: dev(),
            },
            RawFile {
                path: "lvm/vg/lv2".into(),
                device: dev(),
            },
        ])
        .unwrap();
        // root, disk0, lvm, vg, lv, lv2
        assert_eq!(fs.nodes.len(), 6);
        assert_eq!(
            child(&fs.nodes, 0, "lvm").and_then(|l| child(&fs.nodes, l, "vg")),
            Some(3)
        );
        assert!(RawFs::new(vec![
            RawFile {
                path: "a".into(),
                device: dev()
            },
            RawFile {
                path: "a".into(),
                device: dev()
            },
        ])
        .is_err());
        assert!(RawFs::new(vec![
            RawFile {
                path: "a".into(),
                device: dev()
            },
            RawFile {
                path: "a/b".into(),
                device: dev()
            },
        ])
        .is_err());
    }
}
