//! Raw and split raw images for writing: the file's bytes are the disk's
//! bytes, so a write is a positional write into the part that holds it.

use std::path::{Path, PathBuf};

use crate::block_device::{check_range, BlockDevice, Extent, ExtentKind};
use crate::context::OpenContext;
use crate::error::{Error, Format, Result};
use crate::options::OpenOptions;

use super::file::{Staging, WFile};
use super::{CreateOptions, Subformat, WritableDevice};

/// A raw image (one file or the numbered parts of a split image) opened
/// for writing.
#[derive(Debug)]
pub struct RawWriter {
    parts: Vec<WFile>,
    /// Virtual byte offset where each part starts.
    starts: Vec<u64>,
    size: u64,
    format: Format,
}

impl RawWriter {
    fn new(parts: Vec<WFile>) -> Result<Self> {
        let format = if parts.len() > 1 {
            Format::SplitRaw
        } else {
            Format::Raw
        };
        let mut starts = Vec::with_capacity(parts.len());
        let mut size = 0u64;
        for p in &parts {
            starts.push(size);
            size = size.saturating_add(p.len()?);
        }
        Ok(RawWriter {
            parts,
            starts,
            size,
            format,
        })
    }

    /// Calls `f(part, offset in part, offset in buf, length)` for each
    /// part piece of a checked range.
    fn walk(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(&WFile, u64, usize, usize) -> Result<()>,
    ) -> Result<()> {
        check_range(self.format, offset, len, self.size)?;
        let mut done = 0u64;
        let mut i = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        while done < len {
            let pos = offset + done;
            let (Some(part), Some(&start)) = (self.parts.get(i), self.starts.get(i)) else {
                return Err(Error::out_of_range(
                    self.format,
                    "virtual disk",
                    pos,
                    len - done,
                    self.size,
                ));
            };
            let part_len = self.starts.get(i + 1).copied().unwrap_or(self.size) - start;
            let in_part = pos - start;
            let n = part_len.saturating_sub(in_part).min(len - done);
            if n > 0 {
                f(part, in_part, done as usize, n as usize)?;
            }
            done += n;
            i += 1;
        }
        Ok(())
    }
}

impl BlockDevice for RawWriter {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = buf.len() as u64;
        self.walk(offset, len, |part, at, from, n| {
            let chunk = buf.get_mut(from..from + n).unwrap_or_default();
            part.read_exact_at(chunk, at)
        })
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.format, offset, len, self.size)?;
        Ok(vec![Extent {
            offset,
            len,
            kind: ExtentKind::Data,
        }]
        .into_iter()
        .filter(|e| e.len > 0)
        .collect())
    }
}

impl WritableDevice for RawWriter {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.walk(offset, buf.len() as u64, |part, at, from, n| {
            part.write_all_at(buf.get(from..from + n).unwrap_or_default(), at)
        })
    }

    fn flush(&self) -> Result<()> {
        for p in &self.parts {
            p.sync()?;
        }
        Ok(())
    }
}

/// Creates a raw image of exactly `options.size` bytes: a sparse file, or
/// with [`Subformat::Fixed`] one whose blocks are allocated.
pub(crate) fn create(path: &Path, options: &CreateOptions) -> Result<()> {
    let name = file_name(path)?;
    match options.subformat {
        None | Some(Subformat::Fixed) | Some(Subformat::Dynamic) => {}
        Some(s) => {
            return Err(Error::unsupported(
                Format::Raw,
                format!("subformat {s} is not a raw layout (raw takes fixed or none)"),
            )
            .in_file(path))
        }
    }
    if options.parent.is_some() {
        return Err(Error::unsupported(Format::Raw, "a raw image has no parent").in_file(path));
    }
    let mut staging = Staging::new(path, Format::Raw)?;
    staging.check_free(std::slice::from_ref(&name), options.force, Format::Raw)?;
    let f = WFile::create(&staging.file(&name), Format::Raw)?;
    f.set_len(options.size)?;
    if options.subformat == Some(Subformat::Fixed) {
        f.preallocate(options.size)?;
    }
    drop(f);
    staging.commit(Format::Raw)
}

/// Opens a raw image, or every part of a split raw image named by its
/// first part, for writing.
pub(crate) fn open_writable(path: &Path, options: &OpenOptions) -> Result<RawWriter> {
    let ctx = OpenContext::new(options);
    let paths: Vec<PathBuf> =
        crate::raw::split_parts(&ctx, path).unwrap_or_else(|| vec![path.to_path_buf()]);
    let mut parts = Vec::with_capacity(paths.len());
    for p in &paths {
        parts.push(WFile::open(p, Format::Raw)?);
    }
    RawWriter::new(parts)
}

/// The final component of `path`, as text.
pub(crate) fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::unsupported(Format::Probe, "the destination needs a UTF-8 file name")
                .in_file(path)
        })
}
