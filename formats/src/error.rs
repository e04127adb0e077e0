//! The one error type of `diskimage-formats`.
//!
//! Every error says *what kind* of problem it is (a small, matchable
//! [`ErrorKind`]), *which format* reader found it, *which file* and *which
//! byte offset* in that file, and a typed [`Detail`] with the expected and
//! actual values where there are any. Display gives one line such as
//! `ISO: corrupt at 0x8000 in cd.iso: volume space of 2048000 bytes exceeds the file's 40960 bytes (truncated image?)`.

use std::fmt;
use std::path::{Path, PathBuf};

/// A specialised `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of problem an [`Error`] is; match on this, not on the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A probe miss: the input is not of the format that was tried.
    NotThisFormat,
    /// The input is valid but uses a feature or format this library does not read.
    Unsupported,
    /// The input contradicts its own format (bad signature, checksum, field value).
    Corrupt,
    /// A read or a table entry reaches past the end of the device or file.
    OutOfBounds,
    /// A size taken from the input exceeds a documented limit of this library.
    LimitExceeded,
    /// A file the image needs (extent, parent, split part) is not there.
    MissingFile,
    /// The operating system reported an I/O error.
    Io,
    /// A file lies outside the folder the caller confined opening to (a
    /// VM's folder; see [`OpenOptions::confine_to`](crate::OpenOptions::confine_to)).
    OutsideFolder,
    /// A path inside a file system, or a volume number, names nothing.
    NotFound,
    /// A path names the wrong type of object (a file where a directory is
    /// needed, or the reverse).
    WrongType,
    /// The request fits more than one thing and names none of them (a
    /// disk set with several readable volumes and no volume chosen).
    Ambiguous,
}

impl ErrorKind {
    /// A stable, lower-case name for JSON output and scripts.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotThisFormat => "not-this-format",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::OutOfBounds => "out-of-bounds",
            ErrorKind::LimitExceeded => "limit-exceeded",
            ErrorKind::MissingFile => "missing-file",
            ErrorKind::Io => "io",
            ErrorKind::OutsideFolder => "outside-folder",
            ErrorKind::NotFound => "not-found",
            ErrorKind::WrongType => "wrong-type",
            ErrorKind::Ambiguous => "ambiguous",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotThisFormat => "not this format",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::OutOfBounds => "out of bounds",
            ErrorKind::LimitExceeded => "limit exceeded",
            ErrorKind::MissingFile => "missing file",
            ErrorKind::Io => "I/O error",
            ErrorKind::OutsideFolder => "outside the folder",
            ErrorKind::NotFound => "not found",
            ErrorKind::WrongType => "wrong type",
            ErrorKind::Ambiguous => "ambiguous",
        })
    }
}

/// The container format a reader handles (also used to label errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// No format decided yet (the probe itself, or a generic device adapter).
    Probe,
    /// A raw image: the file's bytes are the disk's bytes.
    Raw,
    /// A raw image split into numbered parts (`disk.001`, `disk.002`, ...).
    SplitRaw,
    /// An optical-disc image (ISO 9660 or UDF), 2,048-byte sectors.
    Iso,
    /// VMware virtual disk.
    Vmdk,
    /// Microsoft Virtual PC / Hyper-V VHD.
    Vhd,
    /// Microsoft Hyper-V VHDX.
    Vhdx,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// VirtualBox disk image (recognised, not read yet).
    Vdi,
}

impl Format {
    /// Every format a caller can force with [`OpenOptions::format`](crate::OpenOptions::format).
    pub const READERS: [Format; 7] = [
        Format::Raw,
        Format::SplitRaw,
        Format::Iso,
        Format::Vmdk,
        Format::Vhd,
        Format::Vhdx,
        Format::Qcow2,
    ];

    /// A stable, lower-case name for JSON output and the `--format` flag.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Probe => "probe",
            Format::Raw => "raw",
            Format::SplitRaw => "split-raw",
            Format::Iso => "iso",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Qcow2 => "qcow2",
            Format::Vdi => "vdi",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    /// Parses a name of [`Format::READERS`] as [`Format::as_str`] spells it.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Format::READERS
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Format::READERS.iter().map(|f| f.as_str()).collect();
                format!("unknown format {s:?}; expected one of {}", names.join(", "))
            })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Probe => "probe",
            Format::Raw => "raw",
            Format::SplitRaw => "split raw",
            Format::Iso => "ISO",
            Format::Vmdk => "VMDK",
            Format::Vhd => "VHD",
            Format::Vhdx => "VHDX",
            Format::Qcow2 => "QCOW2",
            Format::Vdi => "VDI",
        })
    }
}

/// The typed detail of an [`Error`]: what was expected and what was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Detail {
    /// A signature or identifier did not match.
    #[error("{what}: expected {expected}, found {found}")]
    BadSignature {
        /// What was being checked ("footer cookie", "volume descriptor").
        what: &'static str,
        /// The signature that was expected, as text.
        expected: String,
        /// What the input holds there, as text (hex for binary).
        found: String,
    },
    /// A checksum did not match.
    #[error("{what} checksum: stored {stored:#x}, computed {computed:#x}")]
    Checksum {
        /// The structure whose checksum failed.
        what: &'static str,
        /// The checksum the file stores.
        stored: u64,
        /// The checksum computed over the data.
        computed: u64,
    },
    /// A field holds a value outside what the format allows.
    #[error("{field} is {value}, expected {expected}")]
    BadValue {
        /// The field, as the format's specification names it.
        field: &'static str,
        /// The value found.
        value: u64,
        /// What would have been valid, in words ("a power of two", "<= 256 MiB").
        expected: String,
    },
    /// The input ends before a structure it needs.
    #[error("{what} needs {needed} bytes, only {available} are there")]
    Truncated {
        /// The structure or range that is cut short.
        what: String,
        /// Bytes needed, counted from the error's offset.
        needed: u64,
        /// Bytes available from that offset.
        available: u64,
    },
    /// A read or table entry reaches past the end of a device or file.
    #[error("range {offset:#x}+{len:#x} is outside the {size} bytes of {what}")]
    OutOfRange {
        /// What was being read ("virtual disk", "extent file").
        what: &'static str,
        /// Start of the requested range.
        offset: u64,
        /// Length of the requested range.
        len: u64,
        /// Size of what was read from.
        size: u64,
    },
    /// A value from the input exceeds a documented limit of this library.
    #[error("{what} is {value}, more than the limit of {limit}")]
    Limit {
        /// What was limited ("grain directory entries", "chain depth").
        what: &'static str,
        /// The value the input asked for.
        value: u64,
        /// The library's limit.
        limit: u64,
    },
    /// A file the image needs could not be found.
    #[error("{what} not found; tried {}", tried_list(.tried))]
    Missing {
        /// What the file is ("parent disk", "extent", "split part").
        what: String,
        /// Every path that was tried, in order.
        tried: Vec<PathBuf>,
    },
    /// No reader recognised the input.
    #[error("no known disk image signature; {seen}")]
    Unrecognised {
        /// What the probe saw, with offsets.
        seen: String,
    },
    /// A feature or format that this library recognises but does not read.
    #[error("{0}")]
    Unsupported(String),
    /// A condition that the variants above do not describe.
    #[error("{0}")]
    Invalid(String),
    /// An operating-system I/O error.
    #[error("{0}")]
    Io(#[source] std::io::Error),
}

/// A copy; an [`Io`](Detail::Io) detail is copied as an error of the same
/// `io::ErrorKind` and text (`io::Error` itself is not `Clone`).
impl Clone for Detail {
    fn clone(&self) -> Self {
        match self {
            Detail::BadSignature {
                what,
                expected,
                found,
            } => Detail::BadSignature {
                what,
                expected: expected.clone(),
                found: found.clone(),
            },
            Detail::Checksum {
                what,
                stored,
                computed,
            } => Detail::Checksum {
                what,
                stored: *stored,
                computed: *computed,
            },
            Detail::BadValue {
                field,
                value,
                expected,
            } => Detail::BadValue {
                field,
                value: *value,
                expected: expected.clone(),
            },
            Detail::Truncated {
                what,
                needed,
                available,
            } => Detail::Truncated {
                what: what.clone(),
                needed: *needed,
                available: *available,
            },
            Detail::OutOfRange {
                what,
                offset,
                len,
                size,
            } => Detail::OutOfRange {
                what,
                offset: *offset,
                len: *len,
                size: *size,
            },
            Detail::Limit { what, value, limit } => Detail::Limit {
                what,
                value: *value,
                limit: *limit,
            },
            Detail::Missing { what, tried } => Detail::Missing {
                what: what.clone(),
                tried: tried.clone(),
            },
            Detail::Unrecognised { seen } => Detail::Unrecognised { seen: seen.clone() },
            Detail::Unsupported(s) => Detail::Unsupported(s.clone()),
            Detail::Invalid(s) => Detail::Invalid(s.clone()),
            Detail::Io(e) => Detail::Io(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

fn tried_list(tried: &[PathBuf]) -> String {
    if tried.is_empty() {
        return "nothing".to_owned();
    }
    tried
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An error from a container reader: kind, format, file, offset and detail.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    format: Format,
    path: Option<PathBuf>,
    offset: Option<u64>,
    detail: Detail,
}

impl Error {
    /// A new error with no file or offset yet; add them with [`Error::at`] and [`Error::in_file`].
    pub fn new(kind: ErrorKind, format: Format, detail: Detail) -> Self {
        Error {
            kind,
            format,
            path: None,
            offset: None,
            detail,
        }
    }

    /// A [`ErrorKind::Corrupt`] error.
    #[doc(hidden)]
    pub fn corrupt(format: Format, detail: Detail) -> Self {
        Self::new(ErrorKind::Corrupt, format, detail)
    }

    /// A [`ErrorKind::Corrupt`] error for a header or table field whose
    /// `value` is not what `expected` says it must be.
    #[doc(hidden)]
    pub fn bad_value(
        format: Format,
        field: &'static str,
        value: u64,
        expected: impl Into<String>,
    ) -> Self {
        Self::corrupt(
            format,
            Detail::BadValue {
                field,
                value,
                expected: expected.into(),
            },
        )
    }

    /// A [`ErrorKind::Unsupported`] error with a sentence saying what is not supported.
    #[doc(hidden)]
    pub fn unsupported(format: Format, what: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::Unsupported,
            format,
            Detail::Unsupported(what.into()),
        )
    }

    /// A [`ErrorKind::NotThisFormat`] error.
    #[doc(hidden)]
    pub fn not_this_format(format: Format, detail: Detail) -> Self {
        Self::new(ErrorKind::NotThisFormat, format, detail)
    }

    /// A [`ErrorKind::LimitExceeded`] error.
    #[doc(hidden)]
    pub fn limit(format: Format, what: &'static str, value: u64, limit: u64) -> Self {
        Self::new(
            ErrorKind::LimitExceeded,
            format,
            Detail::Limit { what, value, limit },
        )
    }

    /// `Ok(())` when `value` is at most `limit`, else the
    /// [`ErrorKind::LimitExceeded`] error [`Error::limit`] makes: the one
    /// check every "table size / capacity within a cap" test uses.
    #[doc(hidden)]
    pub fn ensure_at_most(
        format: Format,
        what: &'static str,
        value: u64,
        limit: u64,
    ) -> std::result::Result<(), Self> {
        if value > limit {
            return Err(Self::limit(format, what, value, limit));
        }
        Ok(())
    }

    /// A [`ErrorKind::OutOfBounds`] error for a read of `len` bytes at `offset` from something of `size` bytes.
    #[doc(hidden)]
    pub fn out_of_range(
        format: Format,
        what: &'static str,
        offset: u64,
        len: u64,
        size: u64,
    ) -> Self {
        Self::new(
            ErrorKind::OutOfBounds,
            format,
            Detail::OutOfRange {
                what,
                offset,
                len,
                size,
            },
        )
        .at(offset)
    }

    /// A [`ErrorKind::MissingFile`] error listing every path that was tried.
    #[doc(hidden)]
    pub fn missing(format: Format, what: impl Into<String>, tried: Vec<PathBuf>) -> Self {
        Self::new(
            ErrorKind::MissingFile,
            format,
            Detail::Missing {
                what: what.into(),
                tried,
            },
        )
    }

    /// An [`ErrorKind::Io`] error.
    pub fn io(format: Format, err: std::io::Error) -> Self {
        Self::new(ErrorKind::Io, format, Detail::Io(err))
    }

    /// Sets the byte offset in the file where the problem is.
    #[must_use]
    pub fn at(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// Sets the file, unless an inner reader already named a more precise one.
    #[must_use]
    pub fn in_file(mut self, path: &Path) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_path_buf());
        }
        self
    }

    /// Relabels the format, unless an inner reader already named one.
    #[must_use]
    pub fn in_format(mut self, format: Format) -> Self {
        if self.format == Format::Probe {
            self.format = format;
        }
        self
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Which reader found it.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The file the problem is in, where known.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The byte offset in that file, where known.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The typed detail.
    pub fn detail(&self) -> &Detail {
        &self.detail
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.format, self.kind)?;
        if let Some(offset) = self.offset {
            write!(f, " at {offset:#x}")?;
        }
        if let Some(path) = &self.path {
            write!(f, " in {}", path.display())?;
        }
        write!(f, ": {}", self.detail)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.detail {
            Detail::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Renders up to 16 bytes as hex for error messages ("4b 44 4d 56 ...").
#[doc(hidden)]
pub fn hex_preview(bytes: &[u8]) -> String {
    let mut out = bytes
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    if bytes.len() > 16 {
        out.push_str(" ...");
    }
    if out.is_empty() {
        out.push_str("(nothing)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_format_kind_offset_file_and_detail() {
        let e = Error::bad_value(Format::Iso, "file size", 34815, "a multiple of 2048")
            .at(0)
            .in_file(Path::new("cd.iso"));
        assert_eq!(
            e.to_string(),
            "ISO: corrupt at 0x0 in cd.iso: file size is 34815, expected a multiple of 2048"
        );
        assert_eq!(e.kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn inner_path_is_kept() {
        let e = Error::io(Format::Raw, std::io::Error::other("x"))
            .in_file(Path::new("inner"))
            .in_file(Path::new("outer"));
        assert_eq!(e.path(), Some(Path::new("inner")));
    }

    #[test]
    fn hex_preview_caps_at_16_bytes() {
        assert_eq!(hex_preview(&[0x4b, 0x44]), "4b 44");
        assert_eq!(hex_preview(&[]), "(nothing)");
        assert!(hex_preview(&[0; 20]).ends_with(" ..."));
    }
}
