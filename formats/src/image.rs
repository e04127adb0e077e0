//! [`DiskImage`]: an opened image, the device it reads and what `info`
//! shows about it ([`ImageInfo`], [`Warning`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::block_device::{BlockDevice, Extent, FileRange};
use crate::error::{Error, Format, Result};
use crate::options::OpenOptions;

/// What kind of tolerated problem a [`Warning`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WarningKind {
    /// A checksum did not match and the structure was used anyway.
    Checksum,
    /// A child's record of its parent (CID, UUID, data-write GUID) does not match the parent.
    ParentMismatch,
    /// A damaged primary structure was replaced by its redundant copy.
    RedundantCopyUsed,
    /// Two copies of a structure disagree.
    CopiesDisagree,
    /// A journal or log was replayed in memory (the file was not changed).
    LogReplayed,
    /// A log or journal could not be used and was ignored.
    LogIgnored,
    /// A structure recognised but not read by this version (a partition
    /// scheme such as a Sun label): a note, not damage.
    Unsupported,
    /// Anything else a reader of the image must know.
    Other,
}

impl WarningKind {
    /// A stable, lower-case name for JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            WarningKind::Checksum => "checksum",
            WarningKind::ParentMismatch => "parent-mismatch",
            WarningKind::RedundantCopyUsed => "redundant-copy-used",
            WarningKind::CopiesDisagree => "copies-disagree",
            WarningKind::LogReplayed => "log-replayed",
            WarningKind::LogIgnored => "log-ignored",
            WarningKind::Unsupported => "unsupported",
            WarningKind::Other => "other",
        }
    }
}

/// A problem that was tolerated while opening; `info` shows every one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// What kind of problem.
    pub kind: WarningKind,
    /// The file it is in.
    pub path: PathBuf,
    /// The byte offset in that file, where known.
    pub offset: Option<u64>,
    /// One line for a person.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(o) = self.offset {
            write!(f, " at {o:#x}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Warnings gathered while opening, with the strict-mode rule in one place.
#[derive(Debug, Default)]
pub struct Warnings {
    strict: bool,
    list: Vec<Warning>,
}

impl Warnings {
    /// Collects warnings under `options` (strict mode turns them into errors).
    pub fn new(options: &OpenOptions) -> Self {
        Warnings {
            strict: options.strict,
            list: Vec::new(),
        }
    }

    /// Tolerates recoverable damage: in strict mode returns `err`, otherwise
    /// records it as a warning of `kind` and returns `Ok`.
    pub fn tolerate(&mut self, kind: WarningKind, err: Error) -> Result<()> {
        if self.strict {
            return Err(err);
        }
        self.list.push(Warning {
            kind,
            path: err.path().map(Path::to_path_buf).unwrap_or_default(),
            offset: err.offset(),
            message: err.detail().to_string(),
        });
        Ok(())
    }

    /// Records a notice that never fails, even in strict mode (e.g. a log replayed in memory).
    pub fn note(
        &mut self,
        kind: WarningKind,
        path: &Path,
        offset: Option<u64>,
        message: impl Into<String>,
    ) {
        self.list.push(Warning {
            kind,
            path: path.to_path_buf(),
            offset,
            message: message.into(),
        });
    }

    /// The warnings recorded so far.
    pub fn into_vec(self) -> Vec<Warning> {
        self.list
    }
}

/// What `info` shows about an opened image.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The path the image was opened by.
    pub path: PathBuf,
    /// The container format.
    pub format: Format,
    /// The variant within the format ("monolithicSparse", "dynamic", "ISO 9660").
    pub subformat: Option<String>,
    /// Virtual size in bytes.
    pub size: u64,
    /// Logical sector size in bytes.
    pub sector_size: u32,
    /// Every file this image reads, parents excluded.
    pub files: Vec<PathBuf>,
    /// Format-specific facts, in a stable order (key, value).
    pub properties: Vec<(String, String)>,
    /// Problems tolerated while opening.
    pub warnings: Vec<Warning>,
    /// The parent image, for a differencing/delta image opened with its parents.
    pub parent: Option<Box<ImageInfo>>,
}

impl ImageInfo {
    /// Info with no properties, warnings or parent yet.
    pub fn new(path: &Path, format: Format, size: u64, sector_size: u32) -> Self {
        ImageInfo {
            path: path.to_path_buf(),
            format,
            subformat: None,
            size,
            sector_size,
            files: vec![path.to_path_buf()],
            properties: Vec::new(),
            warnings: Vec::new(),
            parent: None,
        }
    }

    /// Adds one property.
    pub fn property(&mut self, key: impl Into<String>, value: impl ToString) {
        self.properties.push((key.into(), value.to_string()));
    }

    /// The images of the chain, this one first, then each parent.
    pub fn chain(&self) -> impl Iterator<Item = &ImageInfo> {
        std::iter::successors(Some(self), |i| i.parent.as_deref())
    }

    /// Every warning of the image and its parents.
    pub fn all_warnings(&self) -> impl Iterator<Item = &Warning> {
        self.chain().flat_map(|i| i.warnings.iter())
    }
}

/// An opened disk image: a [`BlockDevice`] plus its [`ImageInfo`].
#[derive(Clone)]
pub struct DiskImage {
    device: Arc<dyn BlockDevice>,
    info: Arc<ImageInfo>,
}

impl DiskImage {
    /// Joins a device and its description.
    pub fn new(device: Arc<dyn BlockDevice>, info: ImageInfo) -> Self {
        DiskImage {
            device,
            info: Arc::new(info),
        }
    }

    /// What `info` shows.
    pub fn info(&self) -> &ImageInfo {
        &self.info
    }

    /// The device, to share with other threads or wrap in adapters.
    pub fn device(&self) -> Arc<dyn BlockDevice> {
        Arc::clone(&self.device)
    }

    /// The format of the image.
    pub fn format(&self) -> Format {
        self.info.format
    }
}

impl std::fmt::Debug for DiskImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskImage")
            .field("info", &self.info)
            .finish()
    }
}

impl BlockDevice for DiskImage {
    fn size(&self) -> u64 {
        self.device.size()
    }
    fn sector_size(&self) -> u32 {
        self.device.sector_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.device.read_at(buf, offset)
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.device.map(offset, len)
    }
    fn file_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
        self.device.file_range(offset, len)
    }
    fn verbatim_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
        self.device.verbatim_range(offset, len)
    }
}
