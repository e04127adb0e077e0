//! Raw images: the file's bytes are the disk's bytes. One file (`.img`,
//! `.raw`, `.dd`, ...) or a raw image split into numbered parts
//! (`disk.001`, `disk.002`, ... or `disk.000`, ...), read as one device.

use std::path::{Path, PathBuf};

use crate::block_device::{check_range, push_extent, BlockDevice, Extent, ExtentKind, FileRange};
use crate::context::OpenContext;
use crate::error::{Detail, Error, Format, Result};
use crate::image::{DiskImage, ImageInfo};
use crate::image_file::ImageFile;

/// The most parts a split raw image may have (`.001` ... `.99999`).
pub const MAX_SPLIT_PARTS: usize = 100_000;

/// A raw image in one or more files laid end to end.
#[derive(Debug)]
pub struct RawImage {
    parts: Vec<ImageFile>,
    /// Virtual offset where each part starts (same length as `parts`).
    starts: Vec<u64>,
    size: u64,
    format: Format,
}

impl RawImage {
    /// A raw image over the given files, in order.
    pub fn new(parts: Vec<ImageFile>) -> Self {
        let mut starts = Vec::with_capacity(parts.len());
        let mut size = 0u64;
        for p in &parts {
            starts.push(size);
            size = size.saturating_add(p.len());
        }
        let format = if parts.len() > 1 {
            Format::SplitRaw
        } else {
            Format::Raw
        };
        RawImage {
            parts,
            starts,
            size,
            format,
        }
    }

    /// The files, in order.
    pub fn parts(&self) -> &[ImageFile] {
        &self.parts
    }
}

impl BlockDevice for RawImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.format, offset, buf.len() as u64, self.size)?;
        let mut done = 0usize;
        // The part holding `offset`: the last one starting at or before it.
        let mut i = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        while done < buf.len() {
            let pos = offset + done as u64;
            let (Some(part), Some(&start)) = (self.parts.get(i), self.starts.get(i)) else {
                return Err(Error::out_of_range(
                    self.format,
                    "virtual disk",
                    pos,
                    0,
                    self.size,
                ));
            };
            let in_part = pos - start;
            let avail = part.len() - in_part;
            let n = usize::try_from(avail)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            if let Some(dst) = buf.get_mut(done..done + n) {
                part.read_exact_at(dst, in_part)
                    .map_err(|e| e.in_format(self.format))?;
            }
            done += n;
            i += 1;
        }
        Ok(())
    }

    /// The bytes from `offset` up to the end of the file holding them (no
    /// `file_range`: `dump` reads a raw disk, to leave its zeros as holes).
    fn verbatim_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
        if offset >= self.size {
            return None;
        }
        let i = self
            .starts
            .partition_point(|&s| s <= offset)
            .checked_sub(1)?;
        let in_part = offset.checked_sub(*self.starts.get(i)?)?;
        let part = self.parts.get(i)?;
        part.file_range(in_part, len.min(part.len().checked_sub(in_part)?))
    }

    /// Data where the files hold data; holes of sparse files are `Zero`.
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.format, offset, len, self.size)?;
        let end = offset + len;
        let mut map = Vec::new();
        let first = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        for (part, &start) in self.parts.iter().zip(&self.starts).skip(first) {
            if start >= end {
                break;
            }
            let lo = offset.max(start) - start;
            let hi = end.min(start + part.len()) - start;
            let mut pos = lo;
            for (o, l) in part.data_runs(lo, hi - lo) {
                push_extent(
                    &mut map,
                    Extent {
                        offset: start + pos,
                        len: o - pos,
                        kind: ExtentKind::Zero,
                    },
                );
                push_extent(
                    &mut map,
                    Extent {
                        offset: start + o,
                        len: l,
                        kind: ExtentKind::Data,
                    },
                );
                pos = o + l;
            }
            push_extent(
                &mut map,
                Extent {
                    offset: start + pos,
                    len: hi - pos,
                    kind: ExtentKind::Zero,
                },
            );
        }
        Ok(map)
    }
}

/// For a path whose extension is a part number (`disk.001`), every part of
/// the split image in order; `None` when the name is not numbered. Parts
/// continue while the next number exists; numbering starts at 0 or 1.
pub fn split_parts(ctx: &OpenContext<'_>, path: &Path) -> Option<Vec<PathBuf>> {
    let name = path.file_name()?.to_str()?;
    let (stem, digits) = name.rsplit_once('.')?;
    if digits.len() < 3 || !digits.bytes().all(|b| b.is_ascii_digit()) || stem.is_empty() {
        return None;
    }
    let first: usize = digits.parse().ok()?;
    if first > 1 {
        return None;
    }
    let width = digits.len();
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut parts = vec![path.to_path_buf()];
    for n in first + 1..first + MAX_SPLIT_PARTS {
        let next = dir.join(format!("{stem}.{n:0width$}"));
        if !ctx.is_file(&next) {
            break;
        }
        parts.push(next);
    }
    Some(parts)
}

/// Opens `paths` (one file, or the parts of a split image) as a raw image.
pub fn open(ctx: &OpenContext<'_>, paths: &[PathBuf]) -> Result<DiskImage> {
    let mut parts = Vec::with_capacity(paths.len());
    for p in paths {
        let f = ctx.open_file(p)?;
        if f.is_empty() && paths.len() > 1 {
            return Err(Error::corrupt(
                Format::SplitRaw,
                Detail::Invalid("split part is empty".into()),
            )
            .in_file(p));
        }
        parts.push(f);
    }
    let first = paths.first().cloned().unwrap_or_default();
    let raw = RawImage::new(parts);
    let mut info = ImageInfo::new(&first, raw.format, raw.size, 512);
    if raw.parts.len() > 1 {
        info.files = paths.to_vec();
        info.subformat = Some(format!("{} parts", raw.parts.len()));
        info.property("parts", raw.parts.len());
    }
    Ok(DiskImage::new(std::sync::Arc::new(raw), info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::MemoryFiles;
    use crate::options::OpenOptions;
    use std::sync::Arc;

    fn files(parts: &[(&str, Vec<u8>)]) -> MemoryFiles {
        parts
            .iter()
            .map(|(n, d)| (PathBuf::from(n), Arc::from(d.clone())))
            .collect()
    }

    #[test]
    fn split_parts_follow_the_numbering_until_a_gap() {
        let mem = files(&[
            ("d/x.001", vec![1; 3]),
            ("d/x.002", vec![2; 3]),
            ("d/x.003", vec![3; 3]),
            ("d/x.005", vec![5; 3]),
        ]);
        let opts = OpenOptions::default();
        let ctx = OpenContext::in_memory(&opts, &mem);
        let parts = split_parts(&ctx, Path::new("d/x.001")).unwrap();
        assert_eq!(parts.len(), 3);
        assert!(split_parts(&ctx, Path::new("d/x.002")).is_none());
        assert!(split_parts(&ctx, Path::new("d/x.img")).is_none());
    }

    #[test]
    fn verbatim_ranges_end_at_part_boundaries_and_file_range_stays_none() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.001"), [0u8, 1, 2]).unwrap();
        std::fs::write(dir.path().join("x.002"), [3u8, 4, 5, 6]).unwrap();
        let img = crate::probe::open(&dir.path().join("x.001"), &OpenOptions::default()).unwrap();
        assert_eq!(img.size(), 7);
        // dump reads a raw disk (its zeros stay holes): no file_range.
        assert!(img.file_range(0, 7).is_none());
        let r = img.verbatim_range(1, 6).unwrap();
        assert_eq!((r.offset, r.len), (1, 2));
        let r = img.verbatim_range(3, 10).unwrap();
        assert_eq!((r.offset, r.len), (0, 4));
        let mut b = [0u8; 4];
        r.file.read_exact_at(&mut b, r.offset).unwrap();
        assert_eq!(b, [3, 4, 5, 6]);
        assert!(img.verbatim_range(7, 1).is_none());
    }

    #[test]
    fn reads_cross_part_boundaries() {
        let mem = files(&[
            ("x.000", vec![0, 1, 2]),
            ("x.001", vec![3, 4]),
            ("x.002", vec![5, 6, 7]),
        ]);
        let opts = OpenOptions::default();
        let ctx = OpenContext::in_memory(&opts, &mem);
        let img = open(&ctx, &split_parts(&ctx, Path::new("x.000")).unwrap()).unwrap();
        assert_eq!(img.size(), 8);
        assert_eq!(img.format(), Format::SplitRaw);
        let mut buf = [0u8; 6];
        img.read_at(&mut buf, 1).unwrap();
        assert_eq!(buf, [1, 2, 3, 4, 5, 6]);
        let mut all = [0u8; 8];
        img.read_at(&mut all, 0).unwrap();
        assert_eq!(all, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert!(img.read_at(&mut buf, 3).is_err());
    }
}
