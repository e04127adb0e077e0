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

mod attr;
mod fs_tree;
mod mapped;
mod mountpoint;
mod raw;
mod read_ahead;
mod read_only;
mod volume_fs;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use diskimage_formats::BlockDevice;

use crate::{DiskSet, Scheme, Volume};
use diskimage_fs::FileSystem;

pub use fs_tree::{InodeTable, Place, ROOT};
pub use raw::RawFile;
pub use volume_fs::MountedVolume;

use attr::own_ids;
pub use attr::{attr, errno, synthetic_dir};
use mountpoint::mount_failed;
pub use mountpoint::{check_fuse_device, preflight};
pub(crate) use read_only::refuse_writes;
pub use read_only::wants_write;

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

/// How to mount: the defaults, changed through the builder methods.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
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
    /// Threads by CPUs, only the mounting user, errors not printed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Worker threads per volume; `0` picks by CPUs ([`MountOptions::threads`]).
    #[must_use]
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Let other users see the files ([`MountOptions::allow_other`]).
    #[must_use]
    pub fn allow_other(mut self, on: bool) -> Self {
        self.allow_other = on;
        self
    }

    /// Print read errors to stderr as they happen ([`MountOptions::log_errors`]).
    #[must_use]
    pub fn log_errors(mut self, on: bool) -> Self {
        self.log_errors = on;
        self
    }

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

    /// A source opening the file system of volume `v` of `set` (all the
    /// devices of a multi-device Btrfs: [`DiskSet::fs_devices`]).
    pub fn from_volume(set: &DiskSet, v: &Volume) -> Self {
        let (device, others) = set.fs_devices(v);
        let size = device.size();
        let options = diskimage_fs::FsOptions::default().with_devices(others);
        VolumeSource {
            name: volume_dir_name(v),
            open: Arc::new(move || diskimage_fs::open_fs_with(Arc::clone(&device), &options)),
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
    let handle = spawn(
        fs,
        mountpoint,
        "diskimage-raw",
        options.thread_count(),
        options,
    )?;
    raw::widen_read_ahead(mountpoint);
    Ok(handle)
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
                let source = VolumeSource::from_volume(self, v);
                mount_volumes(vec![source], false, mountpoint, options)
            }
            Selection::All => {
                let sources: Vec<VolumeSource> = self
                    .volumes()
                    .iter()
                    .filter(|v| v.mountable && v.problem.is_none())
                    .map(|v| VolumeSource::from_volume(self, v))
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
