//! The facade's one error, [`Error`]: whatever layer failed — a container
//! (the formats crate's error inside), a volume scheme, a disk set, a file
//! system (the fs crate's error inside), a VM configuration, an extraction
//! onto the host or a FUSE mount — matched on through one [`ErrorKind`].
//!
//! Like `diskimage_formats::Error`, every error has a small matchable
//! [`ErrorKind`] (the formats crate's), *which scheme* found it
//! ([`Scheme`]), *which disk* of the set and *which byte offset* on it, and a
//! typed [`Detail`] with expected and actual values; an error of the layer
//! below (a failed read) is kept as its source. Display gives one line such
//! as `MBR: corrupt at 0x1f00000 on disk 0: extended boot record chain: ...`.

use std::fmt;

pub use diskimage_formats::{Detail, ErrorKind};

/// A specialised `Result` for the volume layer and disk sets.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The partitioning or volume-management scheme a volume belongs to (also
/// used to label errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// A DOS/MBR partition table (primaries, extended, logicals).
    Mbr,
    /// A GUID partition table.
    Gpt,
    /// A BSD disklabel, on the whole disk or inside an MBR slice.
    Bsd,
    /// An Apple Partition Map.
    Apm,
    /// A Sun (SPARC VTOC) disk label: recognised, not read.
    Sun,
    /// An SGI (IRIX) disk volume header: recognised, not read.
    Sgi,
    /// An Atari (AHDI) root sector: recognised, not read.
    Atari,
    /// An LVM2 logical volume.
    Lvm2,
    /// No partition table: the whole disk holds one file system.
    WholeDisk,
    /// The disk set itself (opening images, assembling volumes).
    DiskSet,
    /// A Windows registry hive (regf), read for OS detection.
    Regf,
    /// Operating-system detection (reading a guest's files).
    Os,
    /// A VM configuration (`.vmx`, `.vmsd`, `.vbox`, a Hyper-V folder).
    Vm,
    /// A file system read through a volume of the set.
    FileSystem,
    /// Writing an extracted tree onto the host.
    Extract,
    /// A FUSE mount.
    Mount,
}

impl Scheme {
    /// A stable, lower-case name for JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Mbr => "mbr",
            Scheme::Gpt => "gpt",
            Scheme::Bsd => "bsd",
            Scheme::Apm => "apm",
            Scheme::Sun => "sun",
            Scheme::Sgi => "sgi",
            Scheme::Atari => "atari",
            Scheme::Lvm2 => "lvm2",
            Scheme::WholeDisk => "whole-disk",
            Scheme::DiskSet => "disk-set",
            Scheme::Regf => "regf",
            Scheme::Os => "os",
            Scheme::Vm => "vm",
            Scheme::FileSystem => "file-system",
            Scheme::Extract => "extract",
            Scheme::Mount => "mount",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Mbr => "MBR",
            Scheme::Gpt => "GPT",
            Scheme::Bsd => "BSD disklabel",
            Scheme::Apm => "Apple Partition Map",
            Scheme::Sun => "Sun disk label",
            Scheme::Sgi => "SGI volume header",
            Scheme::Atari => "Atari AHDI",
            Scheme::Lvm2 => "LVM2",
            Scheme::WholeDisk => "whole disk",
            Scheme::DiskSet => "disk set",
            Scheme::Regf => "registry hive",
            Scheme::Os => "OS detection",
            Scheme::Vm => "VM",
            Scheme::FileSystem => "file system",
            Scheme::Extract => "extract",
            Scheme::Mount => "mount",
        })
    }
}

/// An error of the volume layer: kind, scheme, disk, offset, and a detail or
/// the formats-layer error it comes from (boxed: results stay small).
#[derive(Debug)]
pub struct Error(Box<Inner>);

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    scheme: Scheme,
    disk: Option<usize>,
    file: Option<std::path::PathBuf>,
    offset: Option<u64>,
    detail: Option<Detail>,
    source: Option<Source>,
}

/// The error of the layer below (or of the host) that an [`Error`] keeps.
#[derive(Debug)]
enum Source {
    Format(diskimage_formats::Error),
    Fs(diskimage_fs::Error),
    Io(std::io::Error),
    #[cfg(all(feature = "fuse", unix))]
    Mount(crate::mount::MountError),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Format(e) => e.fmt(f),
            Source::Fs(e) => e.fmt(f),
            Source::Io(e) => e.fmt(f),
            #[cfg(all(feature = "fuse", unix))]
            Source::Mount(e) => e.fmt(f),
        }
    }
}

impl Error {
    /// A new error with no disk or offset yet.
    pub fn new(kind: ErrorKind, scheme: Scheme, detail: Detail) -> Self {
        Error(Box::new(Inner {
            kind,
            scheme,
            disk: None,
            file: None,
            offset: None,
            detail: Some(detail),
            source: None,
        }))
    }

    /// A [`ErrorKind::Corrupt`] error.
    pub fn corrupt(scheme: Scheme, detail: Detail) -> Self {
        Self::new(ErrorKind::Corrupt, scheme, detail)
    }

    /// A [`ErrorKind::Corrupt`] error described in words.
    pub fn invalid(scheme: Scheme, what: impl Into<String>) -> Self {
        Self::corrupt(scheme, Detail::Invalid(what.into()))
    }

    /// A [`ErrorKind::Unsupported`] error saying what is not supported.
    pub fn unsupported(scheme: Scheme, what: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::Unsupported,
            scheme,
            Detail::Unsupported(what.into()),
        )
    }

    /// A [`ErrorKind::LimitExceeded`] error.
    pub fn limit(scheme: Scheme, what: &'static str, value: u64, limit: u64) -> Self {
        Self::new(
            ErrorKind::LimitExceeded,
            scheme,
            Detail::Limit { what, value, limit },
        )
    }

    /// An error of the layer below (a read of the disk), seen by `scheme`.
    pub fn from_device(scheme: Scheme, source: diskimage_formats::Error) -> Self {
        Self::with_source(source.kind(), scheme, Source::Format(source))
    }

    /// An error of a file system read through the set; its kind is the
    /// file system's (a failed read of the device keeps the device's).
    pub fn from_fs(source: diskimage_fs::Error) -> Self {
        use diskimage_fs::ErrorKind as Fs;
        let kind = match (&source, source.kind()) {
            (diskimage_fs::Error::Device(e), _) => e.kind(),
            (_, Fs::NotFound) => ErrorKind::NotFound,
            (_, Fs::WrongType) => ErrorKind::WrongType,
            (_, Fs::Unsupported) => ErrorKind::Unsupported,
            (_, Fs::LimitExceeded) => ErrorKind::LimitExceeded,
            _ => ErrorKind::Corrupt,
        };
        Self::with_source(kind, Scheme::FileSystem, Source::Fs(source))
    }

    /// A host I/O error of `scheme` on the host file `path` (a file being
    /// written, a directory being created).
    pub fn host_io(
        scheme: Scheme,
        path: impl AsRef<std::path::Path>,
        source: std::io::Error,
    ) -> Self {
        Self::with_source(ErrorKind::Io, scheme, Source::Io(source)).in_file(path)
    }

    fn with_source(kind: ErrorKind, scheme: Scheme, source: Source) -> Self {
        Error(Box::new(Inner {
            kind,
            scheme,
            disk: None,
            file: None,
            offset: None,
            detail: None,
            source: Some(source),
        }))
    }

    /// The file-system error this one comes from, if any.
    pub fn fs_error(&self) -> Option<&diskimage_fs::Error> {
        match &self.0.source {
            Some(Source::Fs(e)) => Some(e),
            _ => None,
        }
    }

    /// The host I/O error this one comes from, if any.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match &self.0.source {
            Some(Source::Io(e)) => Some(e),
            _ => None,
        }
    }

    /// Sets the byte offset on the disk (or volume) where the problem is.
    #[must_use]
    pub fn at(mut self, offset: u64) -> Self {
        self.0.offset = Some(offset);
        self
    }

    /// Sets the file the problem is in (a VM configuration, or a file
    /// inside a volume such as a registry hive), unless already set; the
    /// offset is then within that file.
    #[must_use]
    pub fn in_file(mut self, path: impl AsRef<std::path::Path>) -> Self {
        if self.0.file.is_none() {
            self.0.file = Some(path.as_ref().to_path_buf());
        }
        self
    }

    /// The file the problem is in, where known: this error's own, or that
    /// of the container error it comes from.
    pub fn file(&self) -> Option<&std::path::Path> {
        match (&self.0.file, &self.0.source) {
            (Some(f), _) => Some(f),
            (None, Some(Source::Format(e))) => e.path(),
            _ => None,
        }
    }

    /// Sets the disk's index in the set, unless already set.
    #[must_use]
    pub fn on_disk(mut self, disk: usize) -> Self {
        if self.0.disk.is_none() {
            self.0.disk = Some(disk);
        }
        self
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// Which scheme found it.
    pub fn scheme(&self) -> Scheme {
        self.0.scheme
    }

    /// The disk's index in the set, where known.
    pub fn disk(&self) -> Option<usize> {
        self.0.disk
    }

    /// The byte offset, where known: this error's own (on the disk or in
    /// [`Error::file`]), or that of the container error it comes from.
    pub fn offset(&self) -> Option<u64> {
        match (self.0.offset, &self.0.source) {
            (Some(o), _) => Some(o),
            (None, Some(Source::Format(e))) => e.offset(),
            _ => None,
        }
    }

    /// The typed detail with expected and actual values: this error's own,
    /// or that of the container or file-system error it comes from.
    pub fn detail(&self) -> Option<&Detail> {
        match (&self.0.detail, &self.0.source) {
            (Some(d), _) => Some(d),
            (None, Some(Source::Format(e))) => Some(e.detail()),
            (None, Some(Source::Fs(e))) => e.detail(),
            _ => None,
        }
    }

    /// The container error this one comes from, if any.
    pub fn format_error(&self) -> Option<&diskimage_formats::Error> {
        match &self.0.source {
            Some(Source::Format(e)) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.0;
        match (e.scheme, &e.detail, &e.source) {
            // The file system's (and a mount's) own line already names
            // what and where.
            (Scheme::FileSystem, None, Some(Source::Fs(fs))) => return fs.fmt(f),
            #[cfg(all(feature = "fuse", unix))]
            (Scheme::Mount, None, Some(Source::Mount(m))) => return m.fmt(f),
            _ => {}
        }
        write!(f, "{}: {}", e.scheme, e.kind)?;
        if let Some(file) = &e.file {
            write!(f, " in {}", file.display())?;
        }
        if let Some(offset) = e.offset {
            write!(f, " at {offset:#x}")?;
        }
        if let Some(disk) = e.disk {
            write!(f, " on disk {disk}")?;
        }
        match (&e.detail, &e.source) {
            (Some(d), _) => write!(f, ": {d}"),
            (None, Some(s)) => write!(f, ": {s}"),
            (None, None) => Ok(()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.0.source.as_ref()? {
            Source::Format(e) => Some(e),
            Source::Fs(e) => Some(e),
            Source::Io(e) => Some(e),
            #[cfg(all(feature = "fuse", unix))]
            Source::Mount(e) => Some(e),
        }
    }
}

impl From<diskimage_formats::Error> for Error {
    fn from(e: diskimage_formats::Error) -> Self {
        Error::from_device(Scheme::DiskSet, e)
    }
}

#[cfg(all(feature = "fuse", unix))]
impl From<crate::mount::MountError> for Error {
    fn from(e: crate::mount::MountError) -> Self {
        use crate::mount::MountError as M;
        match e {
            M::Fs(fs) => Error::from_fs(fs),
            other => {
                let kind = match &other {
                    M::FuseUnavailable(_) => ErrorKind::Unsupported,
                    M::Invalid(_) => ErrorKind::NotFound,
                    _ => ErrorKind::Io,
                };
                Error::with_source(kind, Scheme::Mount, Source::Mount(other))
            }
        }
    }
}

impl From<diskimage_fs::Error> for Error {
    fn from(e: diskimage_fs::Error) -> Self {
        Error::from_fs(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_scheme_kind_offset_disk_and_detail() {
        let e = Error::limit(Scheme::Gpt, "partition entries", 1 << 32, 1 << 16)
            .at(512)
            .on_disk(1);
        assert_eq!(
            e.to_string(),
            "GPT: limit exceeded at 0x200 on disk 1: partition entries is 4294967296, more than the limit of 65536"
        );
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
    }

    #[test]
    fn a_file_systems_typed_detail_is_kept() {
        let fs = diskimage_fs::Error::damaged(
            diskimage_fs::FsName::Ext,
            Some("/a"),
            Detail::Checksum {
                what: "inode",
                stored: 1,
                computed: 2,
            },
        )
        .at(0x400);
        let e = Error::from(fs);
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(matches!(
            e.detail(),
            Some(Detail::Checksum {
                what: "inode",
                stored: 1,
                computed: 2
            })
        ));
        assert_eq!(
            e.to_string(),
            "ext: corrupt /a at 0x400: inode checksum: stored 0x1, computed 0x2"
        );
    }
}
