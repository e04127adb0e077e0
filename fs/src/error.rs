//! The one error type of `diskimage-fs`.
//!
//! Every error names the file system that found it, the path inside that
//! file system where there is one, the byte offset on the volume where it
//! is known, and keeps the error of the crate underneath as its `source`.

use std::fmt;

pub use diskimage_formats::Detail;

/// A specialised `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from a crate underneath, kept as the `source`.
pub type BoxedError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Which file-system reader raised an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FsName {
    /// No reader chosen yet (detection).
    Detect,
    /// ext2/3/4.
    Ext,
    /// FAT12/16/32.
    Fat,
    /// exFAT.
    ExFat,
    /// NTFS.
    Ntfs,
    /// ISO 9660.
    Iso9660,
    /// XFS.
    Xfs,
    /// Btrfs.
    Btrfs,
    /// UDF.
    Udf,
}

impl fmt::Display for FsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsName::Detect => "file system",
            FsName::Ext => "ext",
            FsName::Fat => "FAT",
            FsName::ExFat => "exFAT",
            FsName::Ntfs => "NTFS",
            FsName::Iso9660 => "ISO 9660",
            FsName::Xfs => "XFS",
            FsName::Btrfs => "Btrfs",
            FsName::Udf => "UDF",
        })
    }
}

/// What kind of problem an [`Error`] is; match on this, not on the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The path names nothing.
    NotFound,
    /// A directory was needed and the path names something else, or the reverse.
    WrongType,
    /// Valid, but a feature this library does not read.
    Unsupported,
    /// The file system contradicts itself (bad pointer, cycle, checksum).
    Corrupt,
    /// A size or count exceeds a documented limit of this library.
    LimitExceeded,
    /// The device underneath failed (read past its end, I/O).
    Device,
}

impl ErrorKind {
    /// A stable, lower-case name for JSON output and scripts.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::WrongType => "wrong-type",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::LimitExceeded => "limit-exceeded",
            ErrorKind::Device => "device",
        }
    }
}

fn at(path: &Option<String>, offset: &Option<u64>) -> String {
    let mut s = String::new();
    if let Some(p) = path {
        s.push_str(&format!(" {p}"));
    }
    if let Some(o) = offset {
        s.push_str(&format!(" at {o:#x}"));
    }
    s
}

/// Anything reading a file system can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The path names nothing.
    #[error("{fs}: {path}: no such file or directory")]
    NotFound {
        /// The reader.
        fs: FsName,
        /// The path inside the file system.
        path: String,
    },
    /// The path names the wrong type of object for the operation.
    #[error("{fs}: {path}: {what}")]
    WrongType {
        /// The reader.
        fs: FsName,
        /// The path inside the file system.
        path: String,
        /// What was expected, e.g. "not a directory".
        what: &'static str,
    },
    /// A feature this library does not read.
    #[error("{fs}: unsupported{}: {what}", at(path, &None))]
    Unsupported {
        /// The reader.
        fs: FsName,
        /// The path inside the file system, if the feature is per file.
        path: Option<String>,
        /// What is not supported.
        what: String,
        /// The error of the crate underneath, if it reported this.
        #[source]
        source: Option<BoxedError>,
    },
    /// The file system contradicts itself.
    #[error("{fs}: corrupt{}: {detail}", at(path, offset))]
    Corrupt {
        /// The reader.
        fs: FsName,
        /// The path inside the file system, where known.
        path: Option<String>,
        /// The byte offset on the volume, where known.
        offset: Option<u64>,
        /// What is wrong: expected and found values where there are any
        /// ([`Detail::Checksum`], [`Detail::BadSignature`], [`Detail::BadValue`]),
        /// else [`Detail::Invalid`] in words.
        detail: Box<Detail>,
        /// The error of the crate underneath.
        #[source]
        source: Option<BoxedError>,
    },
    /// A size or count exceeds a documented limit of this library.
    #[error("{fs}: limit exceeded{}: {what}", at(path, &None))]
    Limit {
        /// The reader.
        fs: FsName,
        /// The path inside the file system, where known.
        path: Option<String>,
        /// Which limit, with its value.
        what: String,
    },
    /// The device underneath failed.
    #[error("{0}")]
    Device(#[from] diskimage_formats::Error),
}

impl Error {
    /// What kind of problem this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::WrongType { .. } => ErrorKind::WrongType,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Limit { .. } => ErrorKind::LimitExceeded,
            Error::Device(_) => ErrorKind::Device,
        }
    }

    /// A corrupt-file-system error at `path`, described in words.
    pub fn corrupt(fs: FsName, path: Option<&str>, what: impl Into<String>) -> Self {
        Error::damaged(fs, path, Detail::Invalid(what.into()))
    }

    /// A corrupt-file-system error at `path` with typed detail (a checksum's
    /// stored and computed values, a signature expected and found ...).
    pub fn damaged(fs: FsName, path: Option<&str>, detail: Detail) -> Self {
        Error::Corrupt {
            fs,
            path: path.map(str::to_string),
            offset: None,
            detail: Box::new(detail),
            source: None,
        }
    }

    /// A copy without the source (errors are not `Clone`), so that a cache
    /// can hand out an entry's error again: corrupt, unsupported and limit
    /// errors keep their fields; any other becomes a corrupt error of `fs`
    /// with its text.
    pub fn duplicate(&self, fs: FsName) -> Error {
        match self {
            Error::Corrupt {
                fs,
                path,
                offset,
                detail,
                ..
            } => Error::Corrupt {
                fs: *fs,
                path: path.clone(),
                offset: *offset,
                detail: detail.clone(),
                source: None,
            },
            Error::Unsupported { fs, path, what, .. } => Error::Unsupported {
                fs: *fs,
                path: path.clone(),
                what: what.clone(),
                source: None,
            },
            Error::Limit { fs, path, what } => Error::Limit {
                fs: *fs,
                path: path.clone(),
                what: what.clone(),
            },
            other => Error::corrupt(fs, None, other.to_string()),
        }
    }

    /// The typed detail of a [`Corrupt`](Error::Corrupt) error, or of the
    /// device error underneath.
    pub fn detail(&self) -> Option<&Detail> {
        match self {
            Error::Corrupt { detail, .. } => Some(detail),
            Error::Device(e) => Some(e.detail()),
            _ => None,
        }
    }

    /// An unsupported-feature error.
    pub fn unsupported(fs: FsName, path: Option<&str>, what: impl Into<String>) -> Self {
        Error::Unsupported {
            fs,
            path: path.map(str::to_string),
            what: what.into(),
            source: None,
        }
    }

    /// A limit error.
    pub fn limit(fs: FsName, path: Option<&str>, what: impl Into<String>) -> Self {
        Error::Limit {
            fs,
            path: path.map(str::to_string),
            what: what.into(),
        }
    }

    /// A not-found error.
    pub fn not_found(fs: FsName, path: &str) -> Self {
        Error::NotFound {
            fs,
            path: path.to_string(),
        }
    }

    /// A wrong-type error ("not a directory", "is a directory", ...).
    pub fn wrong_type(fs: FsName, path: &str, what: &'static str) -> Self {
        Error::WrongType {
            fs,
            path: path.to_string(),
            what,
        }
    }

    /// Sets the byte offset of a corrupt error.
    pub fn at(mut self, offset: u64) -> Self {
        if let Error::Corrupt { offset: o, .. } = &mut self {
            *o = Some(offset);
        }
        self
    }

    /// Turns this error into an `std::io::Error` for a `Read` implementation,
    /// keeping it as the inner error, with the fitting `io::ErrorKind`: a
    /// read past the end of a truncated device or file is `UnexpectedEof`,
    /// damage `InvalidData`, an unread feature `Unsupported`, a missing path
    /// `NotFound`.
    pub fn into_io(self) -> std::io::Error {
        use diskimage_formats::ErrorKind as Device;
        use std::io::ErrorKind as Io;
        let kind = match &self {
            Error::NotFound { .. } => Io::NotFound,
            Error::WrongType { .. } => Io::InvalidInput,
            Error::Unsupported { .. } => Io::Unsupported,
            Error::Corrupt { .. } => Io::InvalidData,
            Error::Limit { .. } => Io::OutOfMemory,
            Error::Device(e) => match e.kind() {
                Device::OutOfBounds => Io::UnexpectedEof,
                Device::Unsupported => Io::Unsupported,
                Device::MissingFile => Io::NotFound,
                Device::Io => match e.detail() {
                    diskimage_formats::Detail::Io(io) => io.kind(),
                    _ => Io::Other,
                },
                _ => Io::InvalidData,
            },
        };
        std::io::Error::new(kind, self)
    }

    /// Recovers an error of this crate (or of the device underneath, as
    /// [`Error::Device`]) from an `std::io::Error` a reader returned, or
    /// wraps a foreign one as a corrupt-read error.
    pub fn from_io(fs: FsName, path: &str, e: std::io::Error) -> Self {
        if e.get_ref()
            .is_some_and(|i| i.is::<diskimage_formats::Error>())
        {
            if let Some(Ok(dev)) = e
                .into_inner()
                .map(|i| i.downcast::<diskimage_formats::Error>())
            {
                return Error::Device(*dev);
            }
            return Error::corrupt(fs, Some(path), "read failed");
        }
        if e.get_ref().is_some_and(|i| i.is::<Error>()) {
            if let Some(inner) = e.into_inner() {
                if let Ok(err) = inner.downcast::<Error>() {
                    return *err;
                }
            }
            return Error::corrupt(fs, Some(path), "read failed");
        }
        Error::Corrupt {
            fs,
            path: Some(path.to_string()),
            offset: None,
            detail: Box::new(Detail::Invalid(format!("read failed: {e}"))),
            source: Some(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage_formats::Format;
    use std::io::ErrorKind as Io;

    #[test]
    fn io_errors_carry_a_fitting_kind_and_the_error_inside() {
        let past_end = Error::Device(diskimage_formats::Error::out_of_range(
            Format::Raw,
            "read",
            4096,
            512,
            4096,
        ));
        let io = past_end.into_io();
        assert_eq!(io.kind(), Io::UnexpectedEof);
        let back = Error::from_io(FsName::Fat, "/x", io);
        assert_eq!(back.kind(), ErrorKind::Device);
        assert_eq!(
            Error::corrupt(FsName::Ext, Some("/x"), "bad")
                .into_io()
                .kind(),
            Io::InvalidData
        );
        assert_eq!(
            Error::not_found(FsName::Ntfs, "/x").into_io().kind(),
            Io::NotFound
        );
        assert_eq!(
            Error::unsupported(FsName::Ext, None, "inline_data")
                .into_io()
                .kind(),
            Io::Unsupported
        );
    }
}
