//! File attributes and error numbers as FUSE wants them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diskimage_fs::{ErrorKind, FileType, Metadata, Timestamp};
use fuser::{Errno, FileAttr, INodeNo};

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
pub(super) fn own_ids() -> (u32, u32) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
