//! A volume whose journal needs recovery, read through `ext4-view` 1,
//! which replays the journal in memory (the on-disk metadata may be stale,
//! so our own layer does not read it). The crate does not expose inode
//! numbers, link counts, ctime or allocated sizes: those are `None`.

use std::sync::Arc;

use diskimage_formats::BlockDevice;
use ext4_view::{Ext4, Ext4Error, Ext4Read};

use crate::error::{BoxedError, Error, FsName, Result};
use crate::file_system::{
    components, decode_name, encode_name, DirEntry, FileReader, FileType, Metadata, Timestamp,
};

const FS: FsName = FsName::Ext;

/// The positional reader `ext4-view` reads the volume through.
struct DeviceRead(Arc<dyn BlockDevice>);

impl Ext4Read for DeviceRead {
    fn read(&mut self, start_byte: u64, dst: &mut [u8]) -> std::result::Result<(), BoxedError> {
        self.0
            .read_at(dst, start_byte)
            .map_err(|e| Box::new(e) as BoxedError)
    }
}

/// An ext volume read by `ext4-view`.
pub(super) struct Replayed(Ext4);

impl Replayed {
    /// Loads the volume (replaying its journal in memory).
    pub fn load(device: Arc<dyn BlockDevice>) -> Result<Self> {
        Ext4::load(Box::new(DeviceRead(device)))
            .map(Replayed)
            .map_err(|e| map_err(e, "/"))
    }

    /// The volume label.
    pub fn label(&self) -> String {
        self.0.label().display().to_string()
    }

    /// The UUID.
    pub fn uuid(&self) -> String {
        self.0.uuid().to_string()
    }

    /// The entries of the directory at `path`, without `.` and `..`.
    pub fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let iter = via_path(path, |p| self.0.read_dir(p))?;
        let mut out = Vec::new();
        for entry in iter {
            let entry = entry.map_err(|e| map_err(e, path))?;
            let name = entry.file_name();
            let bytes = name.as_ref();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let ft = entry.file_type().map_err(|e| map_err(e, path))?;
            out.push(DirEntry {
                name: encode_name(bytes),
                file_type: file_type(ft),
            });
        }
        Ok(out)
    }

    /// What is known of `path` (a symlink itself).
    pub fn metadata(&self, path: &str) -> Result<Metadata> {
        let m = via_path(path, |p| self.0.symlink_metadata(p))?;
        Ok(Metadata {
            file_type: file_type(m.file_type()),
            size: m.len(),
            allocated: None,
            mode: Some(with_type_bits(u32::from(m.mode()), m.file_type())),
            uid: Some(m.uid()),
            gid: Some(m.gid()),
            nlink: None,
            inode: None,
            created: m.created().map(ts),
            modified: Some(ts(m.modified())),
            accessed: Some(ts(m.accessed())),
            changed: None,
        })
    }

    /// The data of the regular file at `path`.
    pub fn open(&self, path: &str) -> Result<Box<dyn FileReader + '_>> {
        // `Ext4::open` follows symlinks; the trait never does.
        if self.metadata(path)?.file_type != FileType::File {
            return Err(Error::wrong_type(FS, path, "not a regular file"));
        }
        Ok(Box::new(via_path(path, |p| self.0.open(p))?))
    }

    /// The target of the symbolic link at `path`, as stored.
    pub fn read_link(&self, path: &str) -> Result<Vec<u8>> {
        Ok(via_path(path, |p| self.0.read_link(p))?.as_ref().to_vec())
    }
}

fn map_err(e: Ext4Error, path: &str) -> Error {
    match e {
        Ext4Error::NotFound => Error::not_found(FS, path),
        Ext4Error::NotADirectory => Error::wrong_type(FS, path, "not a directory"),
        Ext4Error::IsADirectory => Error::wrong_type(FS, path, "is a directory"),
        Ext4Error::NotASymlink => Error::wrong_type(FS, path, "not a symbolic link"),
        Ext4Error::IsASpecialFile => Error::wrong_type(FS, path, "is a special file"),
        Ext4Error::Io(inner) => match inner.downcast::<diskimage_formats::Error>() {
            Ok(dev) => Error::Device(*dev),
            Err(other) => Error::Corrupt {
                fs: FS,
                path: Some(path.to_string()),
                offset: None,
                what: "read failed".into(),
                source: Some(other),
            },
        },
        Ext4Error::Incompatible(i) => Error::Unsupported {
            fs: FS,
            path: None,
            what: format!("ext4-view does not read this file system: {i}"),
            source: None,
        },
        Ext4Error::Encrypted => Error::unsupported(FS, Some(path), "encrypted file"),
        Ext4Error::FileTooLarge | Ext4Error::PathTooLong | Ext4Error::TooManySymlinks => {
            Error::limit(FS, Some(path), e.to_string())
        }
        other => Error::Corrupt {
            fs: FS,
            path: Some(path.to_string()),
            offset: None,
            what: other.to_string(),
            source: Some(Box::new(other)),
        },
    }
}

/// The byte path `ext4-view` resolves for one of our paths.
fn raw_path(path: &str) -> Result<Vec<u8>> {
    let parts = components(path).ok_or_else(|| Error::not_found(FS, path))?;
    let mut raw = Vec::with_capacity(path.len() + 1);
    for p in parts {
        raw.push(b'/');
        raw.extend_from_slice(&decode_name(p));
    }
    if raw.is_empty() {
        raw.push(b'/');
    }
    Ok(raw)
}

fn ts(t: ext4_view::Timestamp) -> Timestamp {
    Timestamp {
        secs: t.seconds(),
        nanos: t.nanoseconds(),
    }
}

fn file_type(t: ext4_view::FileType) -> FileType {
    if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else if t.is_regular_file() {
        FileType::File
    } else {
        FileType::Special
    }
}

/// The mode with its `S_IFMT` type bits (the crate may return permissions only).
fn with_type_bits(mode: u32, t: ext4_view::FileType) -> u32 {
    const S_IFMT: u32 = 0o170_000;
    if mode & S_IFMT != 0 {
        return mode;
    }
    let ty = if t.is_dir() {
        0o040_000
    } else if t.is_symlink() {
        0o120_000
    } else if t.is_regular_file() {
        0o100_000
    } else if t.is_char_dev() {
        0o020_000
    } else if t.is_block_dev() {
        0o060_000
    } else if t.is_fifo() {
        0o010_000
    } else {
        0o140_000
    };
    mode | ty
}

/// Runs `f` on the `ext4-view` path of one of our paths.
fn via_path<T>(
    path: &str,
    f: impl FnOnce(ext4_view::Path<'_>) -> std::result::Result<T, Ext4Error>,
) -> Result<T> {
    let raw = raw_path(path)?;
    let p = ext4_view::Path::try_from(raw.as_slice())
        .map_err(|e| Error::limit(FS, Some(path), format!("invalid ext path: {e}")))?;
    f(p).map_err(|e| map_err(e, path))
}
