//! Read-only FUSE mounts: a volume's files ([`mount_volumes`]) or the raw
//! disks and volumes of a set as flat files ([`mount_raw`]); both through
//! [`DiskSet::mount_fuse`](crate::DiskSet::mount_fuse).
//!
//! - Everything is read-only: the mount carries the `ro` option and every
//!   operation that would change something answers `EROFS`.
//! - Reads are served concurrently. A [`FileSystem`] is not `Send`, so each
//!   mounted volume has a pool of worker threads that each open their own
//!   file system on the shared (`Send + Sync`) device; a FUSE request is
//!   handed to a worker with its reply. An open file's reader stays with
//!   the worker that opened it (chosen by file handle), so sequential reads
//!   continue where the last one stopped. Raw files are read with
//!   [`BlockDevice::read_at`] straight from several FUSE threads.
//! - Read-ahead: a file read sequentially is read in chunks of 1 to 8 MiB
//!   (one file read each, so a compressed VMDK inflates a chunk's grains in
//!   parallel), the next chunk fetched in the background by the volume's
//!   fetcher thread while the kernel's requests are answered from the
//!   current one; at most 2 chunks per open file and 64 MiB per mount
//!   (`read_ahead` module).
//! - NTFS alternate data streams: `file:stream` can be opened and
//!   `stat`ed by name (as with ntfs-3g's `streams_interface=windows`) but is
//!   not listed by `readdir`; `listxattr` lists each stream as the extended
//!   attribute `user.<stream>`, and `getxattr` returns a stream's data when
//!   it fits an extended attribute (64 KiB).
//! - Names that are not UTF-8 (ext) come back as their original bytes.
//! - [`MountHandle`] unmounts when dropped.

mod fs_tree;
mod raw;
mod read_ahead;
mod volume_fs;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diskimage_formats::BlockDevice;

use crate::{DiskSet, Scheme, Volume};
use diskimage_fs::{ErrorKind, FileSystem, FileType, Metadata, Timestamp};
use fuser::{Errno, FileAttr, INodeNo};

pub use fs_tree::{InodeTable, Place, ROOT};
pub use raw::RawFile;
pub use volume_fs::MountedVolume;

/// Opens one more instance of a volume's file system (one per worker
/// thread: a [`FileSystem`] is not `Send`).
pub type FsOpener =
    Arc<dyn Fn() -> diskimage_fs::Result<Box<dyn FileSystem>> + Send + Sync + 'static>;

/// How long the kernel may cache names and attributes: the image never
/// changes under a read-only mount.
pub const TTL: Duration = Duration::from_secs(3600);

/// Largest value `getxattr` returns (Linux's `XATTR_SIZE_MAX`).
pub const XATTR_MAX: u64 = 65_536;

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// FUSE cannot be used on this machine.
    #[error("FUSE unavailable: {0}")]
    FuseUnavailable(String),
    /// The mount point cannot take a mount.
    #[error("mount point {path}: {reason}")]
    Mountpoint {
        /// The mount point.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file system to mount could not be opened.
    #[error("{0}")]
    Fs(#[from] diskimage_fs::Error),
    /// The request itself cannot be met (no such volume ...).
    #[error("{0}")]
    Invalid(String),
    /// The kernel or `fusermount3` refused the mount.
    #[error("mounting at {path}: {source}")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

/// How to mount.
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// Worker threads per volume (and FUSE threads of a raw mount); `0`
    /// picks the number of CPUs, at least 2, at most 8.
    pub threads: usize,
    /// Let other users than the one mounting see the files (`allow_other`;
    /// needs `user_allow_other` in `/etc/fuse.conf` unless root).
    pub allow_other: bool,
    /// Print read errors (with file and offset) to stderr as they happen;
    /// the reading program sees `EIO` either way.
    pub log_errors: bool,
}

impl MountOptions {
    fn thread_count(&self) -> usize {
        if self.threads > 0 {
            return self.threads.min(64);
        }
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 8)
    }
}

/// A live mount; dropping it unmounts (and waits for the serving threads).
#[derive(Debug)]
pub struct MountHandle {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

impl MountHandle {
    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether the mount is still being served (false once someone ran
    /// `fusermount3 -u` on it).
    pub fn is_mounted(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| !s.guard.is_finished())
    }

    /// Unmounts and waits for the serving threads.
    pub fn unmount(mut self) -> std::io::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> std::io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        if session.guard.is_finished() {
            // Unmounted from outside (`fusermount3 -u`): nothing to undo.
            return session.join();
        }
        session.umount_and_join()
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// One volume of a file-system mount: its directory name (used when
/// several are mounted side by side) and how to open its file system.
pub struct VolumeSource {
    /// Directory name under the mount point in a multi-volume mount.
    pub name: String,
    /// Opens the file system.
    pub open: FsOpener,
    /// Size of the volume in bytes (for `statfs`).
    pub size: u64,
}

impl std::fmt::Debug for VolumeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeSource")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish()
    }
}

impl VolumeSource {
    /// A source opening the file system on `device` with
    /// [`diskimage_fs::open_fs`].
    pub fn from_device(name: String, device: Arc<dyn BlockDevice>) -> Self {
        let size = device.size();
        VolumeSource {
            name,
            open: Arc::new(move || diskimage_fs::open_fs(Arc::clone(&device))),
            size,
        }
    }
}

/// Mounts the file systems of `volumes` read-only at `mountpoint`: one
/// volume at the root, or (`side_by_side`) each in its own directory named
/// [`VolumeSource::name`].
pub fn mount_volumes(
    volumes: Vec<VolumeSource>,
    side_by_side: bool,
    mountpoint: &Path,
    options: &MountOptions,
) -> Result<MountHandle, MountError> {
    if volumes.is_empty() || (!side_by_side && volumes.len() != 1) {
        return Err(MountError::Invalid(
            "a mount takes one volume, or several side by side".into(),
        ));
    }
    // Open each once here so that an unreadable file system fails the
    // mount instead of every later request.
    for v in &volumes {
        (v.open)()?;
    }
    preflight(mountpoint)?;
    let fs = MountedVolume::new(volumes, side_by_side, options);
    spawn(fs, mountpoint, "diskimage", 1, options)
}

/// Mounts each of `files` as a read-only flat file at its path below
/// `mountpoint` (`disk0`, `disk0p1`, `lvm/vg/lv`).
pub fn mount_raw(
    files: Vec<RawFile>,
    mountpoint: &Path,
    options: &MountOptions,
) -> Result<MountHandle, MountError> {
    let fs = raw::RawFs::new(files)?;
    preflight(mountpoint)?;
    spawn(
        fs,
        mountpoint,
        "diskimage-raw",
        options.thread_count(),
        options,
    )
}

fn spawn<F: fuser::Filesystem>(
    fs: F,
    mountpoint: &Path,
    fsname: &str,
    threads: usize,
    options: &MountOptions,
) -> Result<MountHandle, MountError> {
    use fuser::MountOption;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
        MountOption::FSName(fsname.into()),
        MountOption::Subtype("diskimage".into()),
        MountOption::DefaultPermissions,
    ];
    if options.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(threads.max(1));
    let session =
        fuser::spawn_mount(fs, mountpoint, &config).map_err(|e| mount_failed(mountpoint, e))?;
    Ok(MountHandle {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
    })
}

fn mount_failed(mountpoint: &Path, e: std::io::Error) -> MountError {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => MountError::FuseUnavailable(format!(
            "mounting at {} was refused ({e}): FUSE needs the right to mount \
             (root with CAP_SYS_ADMIN, or a setuid fusermount3 from the fuse3 package)",
            mountpoint.display()
        )),
        std::io::ErrorKind::NotFound => MountError::FuseUnavailable(format!(
            "no fusermount3 to mount with ({e}): install the fuse3 package"
        )),
        _ => MountError::Mount {
            path: mountpoint.to_path_buf(),
            source: e,
        },
    }
}

/// Checks that FUSE can be used and that `mountpoint` is an empty directory
/// that is not itself a mount point, with errors that say which.
pub fn preflight(mountpoint: &Path) -> Result<(), MountError> {
    check_fuse_device()?;
    check_mountpoint(mountpoint)
}

/// Whether `/dev/fuse` can be opened for reading and writing.
pub fn check_fuse_device() -> Result<(), MountError> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(MountError::FuseUnavailable(
            "there is no /dev/fuse (the fuse kernel module is not loaded, or this \
             container was started without the device)"
                .into(),
        )),
        Err(e) => Err(MountError::FuseUnavailable(format!(
            "/dev/fuse cannot be opened: {e}"
        ))),
    }
}

fn check_mountpoint(mountpoint: &Path) -> Result<(), MountError> {
    let bad = |reason: String| MountError::Mountpoint {
        path: mountpoint.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(mountpoint).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTCONN) => bad(format!(
            "a dead FUSE mount is still there ({e}): run `fusermount3 -u {}`",
            mountpoint.display()
        )),
        _ => bad(e.to_string()),
    })?;
    if !meta.is_dir() {
        return Err(bad("not a directory".into()));
    }
    if is_mount_point(mountpoint, &meta) {
        return Err(bad(
            "already a mount point (busy): unmount it first or choose another directory".into(),
        ));
    }
    let mut entries = std::fs::read_dir(mountpoint).map_err(|e| bad(e.to_string()))?;
    if entries.next().is_some() {
        return Err(bad(
            "not empty: mounting would hide its files; choose an empty directory".into(),
        ));
    }
    Ok(())
}

fn is_mount_point(path: &Path, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(canonical) = std::fs::canonicalize(path) else {
        return false;
    };
    if let Some(parent) = canonical.parent() {
        if let Ok(p) = std::fs::metadata(parent) {
            if p.dev() != meta.dev() {
                return true;
            }
        }
    }
    // Bind mounts keep the device: look the path up in mountinfo too
    // (field 5 is the mount point, with spaces written as \040).
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = canonical.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}

/// What of a [`DiskSet`] to mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// The file system of volume `N` (numbered as `diskimage volumes` does).
    Volume(usize),
    /// Every volume whose file system can be read, each in a directory
    /// `<index>-<label>` (`<index>-<fs>` without a label).
    All,
    /// Each disk and volume as a flat file: `disk0`, `disk0p1`, `lvm/vg/lv`.
    Raw,
}

impl DiskSet {
    /// Mounts `what` of the set read-only at `mountpoint`.
    pub fn mount_fuse(
        &self,
        what: Selection,
        mountpoint: &Path,
        options: &MountOptions,
    ) -> Result<MountHandle, MountError> {
        match what {
            Selection::Volume(n) => {
                let v = self.volume(n).ok_or_else(|| {
                    MountError::Invalid(format!(
                        "volume {n}: the disk set has {} volumes",
                        self.volumes().len()
                    ))
                })?;
                if let Some(problem) = &v.problem {
                    return Err(MountError::Invalid(format!("volume {n}: {problem}")));
                }
                let source = VolumeSource::from_device(volume_dir_name(v), v.device());
                mount_volumes(vec![source], false, mountpoint, options)
            }
            Selection::All => {
                let sources: Vec<VolumeSource> = self
                    .volumes()
                    .iter()
                    .filter(|v| v.mountable && v.problem.is_none())
                    .map(|v| VolumeSource::from_device(volume_dir_name(v), v.device()))
                    .collect();
                if sources.is_empty() {
                    return Err(MountError::Invalid(
                        "no volume holds a file system this version reads".into(),
                    ));
                }
                mount_volumes(sources, true, mountpoint, options)
            }
            Selection::Raw => mount_raw(raw_files(self), mountpoint, options),
        }
    }
}

/// The directory of volume `v` in a multi-volume mount: `<index>-<label>`,
/// or `<index>-<fs>` when the file system has no label; `/` and NUL in a
/// label become `_`.
pub fn volume_dir_name(v: &Volume) -> String {
    let label =
        v.fs.as_ref()
            .and_then(|f| f.label.clone())
            .map(|l| l.trim().replace(['/', '\0'], "_"))
            .filter(|l| !l.is_empty())
            .or_else(|| v.fs.as_ref().map(|f| f.kind.as_str().to_string()))
            .unwrap_or_else(|| "volume".into());
    format!("{}-{label}", v.index)
}

/// The flat files of a raw mount of `set`: each disk, each partition, each LV.
pub fn raw_files(set: &DiskSet) -> Vec<RawFile> {
    let mut files: Vec<RawFile> = set
        .disks()
        .iter()
        .map(|d| RawFile {
            path: format!("disk{}", d.index),
            device: Arc::new(d.image.clone()),
        })
        .collect();
    for v in set.volumes() {
        let path = match (v.scheme, v.disk, v.number, &v.lv) {
            (Scheme::Mbr | Scheme::Gpt, Some(d), Some(n), _) => format!("disk{d}p{n}"),
            (Scheme::Lvm2, _, _, Some(lv)) => format!(
                "lvm/{}/{}",
                lv.vg.replace('/', "_"),
                lv.name.replace('/', "_")
            ),
            _ => continue,
        };
        files.push(RawFile {
            path,
            device: v.device(),
        });
    }
    files
}

/// The `errno` a file-system error is answered with.
pub fn errno(e: &diskimage_fs::Error) -> Errno {
    match e.kind() {
        ErrorKind::NotFound => Errno::ENOENT,
        ErrorKind::WrongType => Errno::ENOTDIR,
        ErrorKind::Unsupported => Errno::from_i32(libc::EOPNOTSUPP),
        _ => Errno::EIO,
    }
}

/// The uid and gid of this process: owners of files whose file system
/// records none (FAT, NTFS), as vfat and ntfs-3g do.
fn own_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((0, 0))
}

fn system_time(t: Option<Timestamp>) -> SystemTime {
    let Some(t) = t else { return UNIX_EPOCH };
    let nanos = Duration::from_nanos(u64::from(t.nanos));
    if t.secs >= 0 {
        UNIX_EPOCH
            .checked_add(Duration::from_secs(t.secs.unsigned_abs()) + nanos)
            .unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(t.secs.unsigned_abs()))
            .and_then(|s| s.checked_add(nanos))
            .unwrap_or(UNIX_EPOCH)
    }
}

/// The FUSE attributes of a file at node `ino` from its [`Metadata`]:
/// recorded modes, owners and link counts as stored; where a file system
/// records none, read-only modes (`0555` directories, `0444` files), this
/// process's ids and one link.
pub fn attr(ino: u64, m: &Metadata, ids: (u32, u32)) -> FileAttr {
    let mode = m.mode.unwrap_or(match m.file_type {
        FileType::Directory => 0o040_555,
        FileType::Symlink => 0o120_777,
        FileType::File | FileType::Special => 0o100_444,
    });
    let kind = match m.file_type {
        FileType::File => fuser::FileType::RegularFile,
        FileType::Directory => fuser::FileType::Directory,
        FileType::Symlink => fuser::FileType::Symlink,
        FileType::Special => match mode & 0o170_000 {
            0o010_000 => fuser::FileType::NamedPipe,
            0o020_000 => fuser::FileType::CharDevice,
            0o060_000 => fuser::FileType::BlockDevice,
            0o140_000 => fuser::FileType::Socket,
            _ => fuser::FileType::RegularFile,
        },
    };
    let modified = system_time(m.modified);
    FileAttr {
        ino: INodeNo(ino),
        size: m.size,
        blocks: m.allocated.unwrap_or(m.size).div_ceil(512),
        atime: m.accessed.map_or(modified, |t| system_time(Some(t))),
        mtime: modified,
        ctime: m.changed.map_or(modified, |t| system_time(Some(t))),
        crtime: m.created.map_or(modified, |t| system_time(Some(t))),
        kind,
        perm: u16::try_from(mode & 0o7777).unwrap_or(0o444),
        nlink: m
            .nlink
            .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX).max(1)),
        uid: m.uid.unwrap_or(ids.0),
        gid: m.gid.unwrap_or(ids.1),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// Attributes of a directory that exists only in the mount (the top of a
/// multi-volume mount, `lvm/` of a raw mount).
pub fn synthetic_dir(ino: u64, ids: (u32, u32)) -> FileAttr {
    let m = Metadata::bare(FileType::Directory);
    attr(ino, &m, ids)
}

/// The write operations of a read-only mount, each answered `EROFS`
/// (the kernel refuses most of them itself because of the `ro` option).
macro_rules! refuse_writes {
    () => {
        fn setattr(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _mode: Option<u32>,
            _uid: Option<u32>,
            _gid: Option<u32>,
            _size: Option<u64>,
            _atime: Option<fuser::TimeOrNow>,
            _mtime: Option<fuser::TimeOrNow>,
            _ctime: Option<std::time::SystemTime>,
            _fh: Option<fuser::FileHandle>,
            _crtime: Option<std::time::SystemTime>,
            _chgtime: Option<std::time::SystemTime>,
            _bkuptime: Option<std::time::SystemTime>,
            _flags: Option<fuser::BsdFileFlags>,
            reply: fuser::ReplyAttr,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn mknod(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            _mode: u32,
            _umask: u32,
            _rdev: u32,
            reply: fuser::ReplyEntry,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn mkdir(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            _mode: u32,
            _umask: u32,
            reply: fuser::ReplyEntry,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn unlink(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn rmdir(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn symlink(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _link_name: &std::ffi::OsStr,
            _target: &std::path::Path,
            reply: fuser::ReplyEntry,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn rename(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            _newparent: fuser::INodeNo,
            _newname: &std::ffi::OsStr,
            _flags: fuser::RenameFlags,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn link(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _newparent: fuser::INodeNo,
            _newname: &std::ffi::OsStr,
            reply: fuser::ReplyEntry,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn write(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _fh: fuser::FileHandle,
            _offset: u64,
            _data: &[u8],
            _write_flags: fuser::WriteFlags,
            _flags: fuser::OpenFlags,
            _lock_owner: Option<fuser::LockOwner>,
            reply: fuser::ReplyWrite,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn setxattr(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            _value: &[u8],
            _flags: i32,
            _position: u32,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn removexattr(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn create(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            _mode: u32,
            _umask: u32,
            _flags: i32,
            reply: fuser::ReplyCreate,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn fallocate(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _fh: fuser::FileHandle,
            _offset: u64,
            _length: u64,
            _mode: i32,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
    };
}
pub(crate) use refuse_writes;

/// Whether an open with `flags` asks to change the file.
pub fn wants_write(flags: fuser::OpenFlags) -> bool {
    flags.acc_mode() != fuser::OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_mountpoint_is_named() {
        let e = check_mountpoint(Path::new("/nonexistent/diskimage-mp")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/diskimage-mp"), "{e}");
    }

    #[test]
    fn a_non_empty_mountpoint_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x"), b"x").unwrap();
        let e = check_mountpoint(d.path()).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        assert!(check_mountpoint(&d.path().join("x")).is_err());
    }

    #[test]
    fn negative_times_and_defaults() {
        let t = system_time(Some(Timestamp {
            secs: -1,
            nanos: 500_000_000,
        }));
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::from_millis(500)
        );
        let a = synthetic_dir(7, (1, 2));
        assert_eq!((a.perm, a.nlink, a.uid, a.gid), (0o555, 1, 1, 2));
    }
}
