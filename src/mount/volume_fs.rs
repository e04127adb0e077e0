//! [`MountedVolume`]: the FUSE side of one or more mounted file systems.
//!
//! Every request that touches a file system is sent, with its reply, to a
//! worker thread of that volume's pool (see the [module docs](super)).
//! Reads of an open file go through its [`ReadAhead`]; the chunks it asks
//! for in the background are read by the pool's fetcher thread, which
//! keeps a reader of its own per open file.
//! Directory listings are taken once at `opendir` and kept per handle, so
//! `readdir` serves any offset of a 100,000-entry directory from memory.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};

use diskimage_fs::file_system::{decode_name, encode_name, join};
use diskimage_fs::{FileSystem, FileType, FsKind};
use fuser::{
    Errno, FileHandle, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use super::fs_tree::{InodeTable, Place};
use super::read_ahead::{Budget, Chunk, Cursor, Grant, ReadAhead, BUDGET};
use super::{
    attr, errno, own_ids, synthetic_dir, wants_write, MountOptions, VolumeSource, TTL, XATTR_MAX,
};

/// What a worker holds: its own file system, the readers it opened and
/// (on a volume's fetcher) the files it reads ahead in.
struct Worker<'a> {
    fs: Result<&'a dyn FileSystem, Errno>,
    readers: HashMap<u64, Reader<'a>>,
    fetched: HashMap<u64, Cursor<'a>>,
}

struct Reader<'a> {
    file: Cursor<'a>,
    ahead: ReadAhead,
}

type Job = Box<dyn for<'a> FnOnce(&mut Worker<'a>) + Send>;

/// The worker threads of one volume, and its fetcher: a thread of its own
/// that reads ahead for the workers (it never waits for them, so a worker
/// waiting for a chunk cannot deadlock).
struct Pool {
    workers: Vec<Sender<Job>>,
    fetcher: Option<Sender<Job>>,
    next: AtomicUsize,
}

/// Starts a thread with its own file system that runs the jobs sent to it.
fn start_worker(open: &super::FsOpener, name: String) -> Option<Sender<Job>> {
    let (tx, rx) = channel::<Job>();
    let open = Arc::clone(open);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let opened = open();
            let mut w = Worker {
                fs: opened.as_deref().map_err(errno),
                readers: HashMap::new(),
                fetched: HashMap::new(),
            };
            for job in rx {
                job(&mut w);
            }
        })
        .ok()
        .map(|_| tx)
}

impl Pool {
    fn start(open: super::FsOpener, threads: usize, name: &str) -> Pool {
        let workers = (0..threads)
            .filter_map(|i| start_worker(&open, format!("mount-{name}-{i}")))
            .collect();
        Pool {
            workers,
            fetcher: start_worker(&open, format!("mount-{name}-ahead")),
            next: AtomicUsize::new(0),
        }
    }

    /// Runs `job` on the worker for handle `fh`, or on the next worker.
    fn run(&self, fh: Option<u64>, job: Job) {
        let n = self.workers.len().max(1);
        let i = match fh {
            Some(fh) => usize::try_from(fh % n as u64).unwrap_or(0),
            None => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        if let Some(w) = self.workers.get(i) {
            // A send fails only when the worker is gone (it could not
            // start): the job, and with it the reply, is dropped and fuser
            // answers EIO.
            let _ = w.send(job);
        }
    }
}

/// One directory entry as `readdir` returns it.
struct Item {
    name: OsString,
    kind: fuser::FileType,
    place: Place,
}

struct Vol {
    name: String,
    pool: Pool,
    size: u64,
}

struct Shared {
    table: Mutex<InodeTable>,
    dirs: Mutex<HashMap<u64, Arc<Vec<Item>>>>,
    ids: (u32, u32),
    log_errors: bool,
    /// Read-ahead memory of all open files.
    budget: Arc<Budget>,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, InodeTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dirs(&self) -> MutexGuard<'_, HashMap<u64, Arc<Vec<Item>>>> {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The errno for `e`, logged when asked to and not a plain miss.
    fn fail(&self, e: &diskimage_fs::Error) -> Errno {
        let n = errno(e);
        if self.log_errors && n != Errno::ENOENT {
            eprintln!("diskimage mount: {e}");
        }
        n
    }
}

/// One or more file systems served through FUSE.
pub struct MountedVolume {
    vols: Vec<Vol>,
    shared: Arc<Shared>,
    next_fh: AtomicU64,
}

impl std::fmt::Debug for MountedVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountedVolume")
            .field(
                "volumes",
                &self.vols.iter().map(|v| &v.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn fuse_kind(t: FileType) -> fuser::FileType {
    match t {
        FileType::File | FileType::Special => fuser::FileType::RegularFile,
        FileType::Directory => fuser::FileType::Directory,
        FileType::Symlink => fuser::FileType::Symlink,
    }
}

/// A name from the kernel as the file system trait spells it.
fn trait_name(name: &OsStr) -> String {
    encode_name(name.as_bytes())
}

impl MountedVolume {
    /// Starts the worker pools: one volume at the root, or each volume in
    /// its own top-level directory.
    pub fn new(volumes: Vec<VolumeSource>, side_by_side: bool, options: &MountOptions) -> Self {
        let threads = options.thread_count();
        let root = if side_by_side {
            Place::Top
        } else {
            Place::Entry {
                vol: 0,
                path: "/".into(),
            }
        };
        let vols = volumes
            .into_iter()
            .map(|v| Vol {
                pool: Pool::start(v.open, threads, &v.name),
                name: v.name,
                size: v.size,
            })
            .collect();
        MountedVolume {
            vols,
            shared: Arc::new(Shared {
                table: Mutex::new(InodeTable::new(root)),
                dirs: Mutex::new(HashMap::new()),
                ids: own_ids(),
                log_errors: options.log_errors,
                budget: Budget::new(BUDGET),
            }),
            next_fh: AtomicU64::new(1),
        }
    }

    fn place(&self, ino: INodeNo) -> Option<Place> {
        self.shared.table().place(ino.0).cloned()
    }

    fn fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs `f(worker, path, shared, fetcher, reply)` on a worker of the
    /// volume of `ino`.
    fn on_volume<R>(
        &self,
        ino: INodeNo,
        fh: Option<u64>,
        top: impl FnOnce(R),
        reply: R,
        f: impl for<'a> FnOnce(&mut Worker<'a>, &str, &Shared, Option<Sender<Job>>, R) + Send + 'static,
    ) where
        R: Send + 'static + ErrorReply,
    {
        match self.place(ino) {
            None => reply.err(Errno::ENOENT),
            Some(Place::Top) => top(reply),
            Some(Place::Entry { vol, path }) => {
                let Some(v) = self.vols.get(vol) else {
                    return reply.err(Errno::ENOENT);
                };
                let shared = Arc::clone(&self.shared);
                let fetcher = v.pool.fetcher.clone();
                v.pool.run(
                    fh,
                    Box::new(move |w: &mut Worker<'_>| f(w, &path, &shared, fetcher, reply)),
                );
            }
        }
    }
}

/// The replies that can carry an errno.
trait ErrorReply {
    fn err(self, e: Errno);
}

macro_rules! error_reply {
    ($($t:ty),*) => {$(
        impl ErrorReply for $t {
            fn err(self, e: Errno) {
                self.error(e);
            }
        }
    )*};
}
error_reply!(
    ReplyAttr,
    ReplyData,
    ReplyEntry,
    ReplyOpen,
    ReplyEmpty,
    ReplyXattr,
    ReplyStatfs
);

/// The file system of a worker, or the reply answered with why there is none.
macro_rules! fs_or_reply {
    ($w:expr, $reply:expr) => {
        match $w.fs {
            Ok(fs) => fs,
            Err(e) => return $reply.err(e),
        }
    };
}

/// Whether `name` on `fs` names an NTFS stream (`file:stream`), which has
/// its file's record number but is a file of its own in the mount.
fn is_stream(fs: &dyn FileSystem, name: &str) -> bool {
    fs.kind() == FsKind::Ntfs && name.contains(':')
}

impl fuser::Filesystem for MountedVolume {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = trait_name(name);
        match self.place(parent) {
            None => reply.error(Errno::ENOENT),
            Some(Place::Top) => {
                let Some(vol) = self.vols.iter().position(|v| v.name == name) else {
                    return reply.error(Errno::ENOENT);
                };
                let shared = Arc::clone(&self.shared);
                if let Some(v) = self.vols.get(vol) {
                    v.pool.run(
                        None,
                        Box::new(move |w: &mut Worker<'_>| {
                            let fs = fs_or_reply!(w, reply);
                            match fs.metadata("/") {
                                Ok(m) => {
                                    let place = Place::Entry {
                                        vol,
                                        path: "/".into(),
                                    };
                                    let ino = shared.table().lookup(place, None);
                                    reply.entry(&TTL, &attr(ino, &m, shared.ids), Generation(0));
                                }
                                Err(e) => reply.error(shared.fail(&e)),
                            }
                        }),
                    );
                }
            }
            Some(Place::Entry { vol, path }) => {
                let Some(v) = self.vols.get(vol) else {
                    return reply.error(Errno::ENOENT);
                };
                let shared = Arc::clone(&self.shared);
                v.pool.run(
                    None,
                    Box::new(move |w: &mut Worker<'_>| {
                        let fs = fs_or_reply!(w, reply);
                        let child = join(&path, &name);
                        match fs.metadata(&child) {
                            Ok(m) => {
                                let fs_inode = if is_stream(fs, &name) { None } else { m.inode };
                                let place = Place::Entry { vol, path: child };
                                let ino = shared.table().lookup(place, fs_inode);
                                reply.entry(&TTL, &attr(ino, &m, shared.ids), Generation(0));
                            }
                            Err(e) => reply.error(shared.fail(&e)),
                        }
                    }),
                );
            }
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.shared.table().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ids = self.shared.ids;
        self.on_volume(
            ino,
            None,
            |r: ReplyAttr| r.attr(&TTL, &synthetic_dir(ino.0, ids)),
            reply,
            move |w, path, shared, _, reply| {
                let fs = fs_or_reply!(w, reply);
                match fs.metadata(path) {
                    Ok(m) => reply.attr(&TTL, &attr(ino.0, &m, shared.ids)),
                    Err(e) => reply.error(shared.fail(&e)),
                }
            },
        );
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.on_volume(
            ino,
            None,
            |r: ReplyData| r.error(Errno::EINVAL),
            reply,
            |w, path, shared, _, reply| {
                let fs = fs_or_reply!(w, reply);
                match fs.read_link(path) {
                    Ok(t) => reply.data(&decode_name(&t)),
                    Err(e) => reply.error(shared.fail(&e)),
                }
            },
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if wants_write(flags) {
            return reply.error(Errno::EROFS);
        }
        let fh = self.fh();
        self.on_volume(
            ino,
            Some(fh),
            |r: ReplyOpen| r.error(Errno::EISDIR),
            reply,
            move |w, path, shared, _, reply| {
                let fs = fs_or_reply!(w, reply);
                match fs.open(path) {
                    Ok(file) => {
                        let reader = Reader {
                            file: Cursor::new(file),
                            ahead: ReadAhead::new(Arc::clone(&shared.budget)),
                        };
                        w.readers.insert(fh, reader);
                        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
                    }
                    Err(e) if e.kind() == diskimage_fs::ErrorKind::WrongType => {
                        reply.error(Errno::EISDIR)
                    }
                    Err(e) => reply.error(shared.fail(&e)),
                }
            },
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.on_volume(
            ino,
            Some(fh.0),
            |r: ReplyData| r.error(Errno::EISDIR),
            reply,
            move |w, path, shared, fetcher, reply| {
                let Some(r) = w.readers.get_mut(&fh.0) else {
                    return reply.error(Errno::EBADF);
                };
                let mut fetch = |start: u64, len: usize, grant: Grant| {
                    fetch_in_background(fetcher.as_ref(), fh.0, path, start, len, grant)
                };
                let size = usize::try_from(size).unwrap_or(0);
                match r.ahead.read(&mut r.file, offset, size, &mut fetch) {
                    Ok(buf) => reply.data(&buf),
                    Err(e) => {
                        let fs_err =
                            diskimage_fs::Error::from_io(diskimage_fs::FsName::Detect, path, e);
                        reply.error(shared.fail(&fs_err));
                    }
                }
            },
        );
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.on_volume(
            ino,
            Some(fh.0),
            |r: ReplyEmpty| r.ok(),
            reply,
            move |w, _, _, fetcher, reply| {
                w.readers.remove(&fh.0);
                if let Some(f) = fetcher {
                    let _ = f.send(Box::new(move |w: &mut Worker<'_>| {
                        w.fetched.remove(&fh.0);
                    }));
                }
                reply.ok();
            },
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fh = self.fh();
        match self.place(ino) {
            None => reply.error(Errno::ENOENT),
            Some(Place::Top) => {
                let items = self
                    .vols
                    .iter()
                    .enumerate()
                    .map(|(vol, v)| Item {
                        name: OsString::from(&v.name),
                        kind: fuser::FileType::Directory,
                        place: Place::Entry {
                            vol,
                            path: "/".into(),
                        },
                    })
                    .collect();
                self.shared.dirs().insert(fh, Arc::new(items));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Some(Place::Entry { vol, path }) => {
                let Some(v) = self.vols.get(vol) else {
                    return reply.error(Errno::ENOENT);
                };
                let shared = Arc::clone(&self.shared);
                v.pool.run(
                    None,
                    Box::new(move |w: &mut Worker<'_>| {
                        let fs = fs_or_reply!(w, reply);
                        match fs.read_dir(&path) {
                            Ok(entries) => {
                                let items = entries
                                    .into_iter()
                                    .map(|e| Item {
                                        name: OsString::from_vec(decode_name(&e.name)),
                                        kind: fuse_kind(e.file_type),
                                        place: Place::Entry {
                                            vol,
                                            path: join(&path, &e.name),
                                        },
                                    })
                                    .collect();
                                shared.dirs().insert(fh, Arc::new(items));
                                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
                            }
                            Err(e) => reply.error(shared.fail(&e)),
                        }
                    }),
                );
            }
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(items) = self.shared.dirs().get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        // Offsets: 1 and 2 after "." and "..", then 3 + i after item i.
        let mut next = offset;
        if next == 0 {
            if reply.add(ino, 1, fuser::FileType::Directory, ".") {
                return reply.ok();
            }
            next = 1;
        }
        if next == 1 {
            if reply.add(ino, 2, fuser::FileType::Directory, "..") {
                return reply.ok();
            }
            next = 2;
        }
        let start = usize::try_from(next - 2).unwrap_or(usize::MAX);
        let table = self.shared.table();
        for (i, item) in items.iter().enumerate().skip(start) {
            // d_ino: the node's id when the kernel holds one, else a
            // stand-in (stat gives the real one).
            let d_ino = table.peek(&item.place, None).unwrap_or(u64::MAX);
            let off = u64::try_from(i).unwrap_or(u64::MAX).saturating_add(3);
            if reply.add(INodeNo(d_ino), off, item.kind, &item.name) {
                break;
            }
        }
        drop(table);
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.dirs().remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let size = match self.place(ino) {
            Some(Place::Entry { vol, .. }) => self.vols.get(vol).map_or(0, |v| v.size),
            _ => self.vols.iter().map(|v| v.size).sum(),
        };
        reply.statfs(size / 4096, 0, 0, 0, 0, 4096, 255, 4096);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.on_volume(
            ino,
            None,
            move |r: ReplyXattr| xattr_reply(r, size, &[]),
            reply,
            move |w, path, shared, _, reply| {
                let fs = fs_or_reply!(w, reply);
                match fs.streams(path) {
                    Ok(streams) => {
                        let mut list = Vec::new();
                        for s in streams {
                            list.extend_from_slice(b"user.");
                            list.extend_from_slice(&decode_name(&s));
                            list.push(0);
                        }
                        xattr_reply(reply, size, &list);
                    }
                    Err(e) => reply.error(shared.fail(&e)),
                }
            },
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let no_attr = Errno::from_i32(libc::ENODATA);
        let Some(stream) = name.as_bytes().strip_prefix(b"user.") else {
            return reply.error(no_attr);
        };
        let stream = encode_name(stream);
        self.on_volume(
            ino,
            None,
            move |r: ReplyXattr| r.error(no_attr),
            reply,
            move |w, path, shared, _, reply| {
                let fs = fs_or_reply!(w, reply);
                if fs.kind() != FsKind::Ntfs || stream.is_empty() || stream.contains(':') {
                    return reply.error(no_attr);
                }
                let full = format!("{path}:{stream}");
                let meta = match fs.metadata(&full) {
                    Ok(m) => m,
                    Err(e) if e.kind() == diskimage_fs::ErrorKind::NotFound => {
                        return reply.error(no_attr)
                    }
                    Err(e) => return reply.error(shared.fail(&e)),
                };
                if meta.size > XATTR_MAX {
                    return reply.error(Errno::from_i32(libc::E2BIG));
                }
                let mut data = Vec::new();
                let read = fs.open(&full).and_then(|f| {
                    f.take(XATTR_MAX).read_to_end(&mut data).map_err(|e| {
                        diskimage_fs::Error::from_io(diskimage_fs::FsName::Ntfs, &full, e)
                    })
                });
                match read {
                    Ok(_) => xattr_reply(reply, size, &data),
                    Err(e) => reply.error(shared.fail(&e)),
                }
            },
        );
    }

    super::refuse_writes!();
}

/// Answers an xattr request: the size when asked for it (`size == 0`),
/// the data when it fits, `ERANGE` when it does not.
fn xattr_reply(reply: ReplyXattr, size: u32, data: &[u8]) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    if size == 0 {
        reply.size(len);
    } else if len <= size {
        reply.data(data);
    } else {
        reply.error(Errno::ERANGE);
    }
}

/// Has the volume's fetcher read `len` bytes at `start` of the file open
/// as `fh` (at `path`) with a reader of its own; the chunk arrives on the
/// returned channel. Without a fetcher the channel is closed at once and
/// the caller reads the chunk itself.
fn fetch_in_background(
    fetcher: Option<&Sender<Job>>,
    fh: u64,
    path: &str,
    start: u64,
    len: usize,
    grant: Grant,
) -> Receiver<std::io::Result<Chunk>> {
    let (tx, rx) = channel();
    if let Some(f) = fetcher {
        let path = path.to_string();
        let _ = f.send(Box::new(move |w: &mut Worker<'_>| {
            let got = fetch_chunk(w, fh, &path, start, len);
            let _ = tx.send(got.map(|data| Chunk::new(start, len, data, grant)));
        }));
    }
    rx
}

/// On the fetcher: `len` bytes at `start` of `path`, read with the reader
/// it keeps for handle `fh` (opened on first use).
fn fetch_chunk(
    w: &mut Worker<'_>,
    fh: u64,
    path: &str,
    start: u64,
    len: usize,
) -> std::io::Result<Vec<u8>> {
    let cursor = match w.fetched.entry(fh) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            let fs =
                w.fs.map_err(|e| std::io::Error::from_raw_os_error(e.code()))?;
            e.insert(Cursor::new(fs.open(path).map_err(std::io::Error::other)?))
        }
    };
    cursor.read_at(start, len)
}
