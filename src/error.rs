//! The facade's error: what went wrong in the volume layer or a disk set.
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
    source: Option<diskimage_formats::Error>,
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
        Error(Box::new(Inner {
            kind: source.kind(),
            scheme,
            disk: None,
            file: None,
            offset: None,
            detail: None,
            source: Some(source),
        }))
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

    /// The file the problem is in, where known.
    pub fn file(&self) -> Option<&std::path::Path> {
        self.0.file.as_deref()
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

    /// The byte offset, where known.
    pub fn offset(&self) -> Option<u64> {
        self.0.offset
    }

    /// The typed detail, unless the error comes from the layer below.
    pub fn detail(&self) -> Option<&Detail> {
        self.0.detail.as_ref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.0;
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
        self.0
            .source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<diskimage_formats::Error> for Error {
    fn from(e: diskimage_formats::Error) -> Self {
        Error::from_device(Scheme::DiskSet, e)
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
}
