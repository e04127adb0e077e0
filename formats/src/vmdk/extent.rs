//! One extent of a VMDK disk: how it is stored ([`Backend`]), how an
//! extent line of the descriptor becomes one, and how a range of it is read
//! and mapped. Reads are planned first (grain lookups, contiguous grains
//! merged into one positional read) and then executed; compressed grains of
//! one read are inflated in parallel.

use std::path::{Path, PathBuf};

use rayon::iter::{IntoParallelIterator, ParallelIterator};

use crate::block_device::{
    push_extent, push_from_parent, BlockDevice, Extent, ExtentKind, FileRange,
};
use crate::context::{is_absolute_anywhere, OpenContext};
use crate::error::{Detail, Error, ErrorKind, Format, Result};
use crate::image::{DiskImage, WarningKind, Warnings};
use crate::image_file::ImageFile;

use super::cowd::{self, COWD_MAGIC};
use super::descriptor::{Access, ExtentLine, ExtentType};
use super::grain_table::{Grain, GrainSource, SparseExtent};
use super::sesparse::{SeSparseExtent, SESPARSE_MAGIC};
use super::sparse_header::{SparseHeader, SECTOR, SPARSE_MAGIC};
use super::stream;

/// Reads with at least this many compressed grains inflate them on several threads.
pub const PARALLEL_INFLATE_MIN_GRAINS: usize = 4;

/// How an extent's sectors are stored.
pub(crate) enum Backend {
    /// As they are, in `file` from byte `start`.
    Flat { file: ImageFile, start: u64 },
    /// Nowhere: zeros (`ZERO` extents).
    Zero,
    /// In a sparse extent (hosted sparse, streamOptimized, seSparse).
    Sparse(Box<dyn GrainSource>),
    /// Not readable by this library (NOACCESS, raw device mappings): the
    /// reason, and the descriptor whose line says so.
    Unreadable(String, PathBuf),
}

/// One extent: its descriptor line (none for a bare extent), size and storage.
pub(crate) struct VmdkExtent {
    pub line: Option<ExtentLine>,
    /// The file it reads, if any.
    pub path: Option<PathBuf>,
    /// Size in bytes.
    pub len: u64,
    pub backend: Backend,
    /// A one-line description for `info`.
    pub summary: String,
}

/// Finds the file an extent line names, relative to the descriptor's folder
/// (a path from another machine falls back to the descriptor's folder).
pub(crate) fn resolve_extent(
    ctx: &OpenContext<'_>,
    descriptor: &Path,
    line: &ExtentLine,
) -> Result<PathBuf> {
    let dir = descriptor.parent().unwrap_or(Path::new(""));
    let unix = line.file.replace('\\', "/");
    let mut tried = Vec::new();
    let mut candidates = Vec::new();
    if is_absolute_anywhere(&line.file) {
        if !line.file.contains(':') {
            candidates.push(PathBuf::from(&unix));
        }
        if let Some(name) = unix.rsplit('/').next().filter(|n| !n.is_empty()) {
            candidates.push(dir.join(name));
        }
    } else {
        candidates.push(dir.join(&unix));
    }
    for c in candidates {
        if ctx.is_file(&c) {
            return Ok(c);
        }
        tried.push(c);
    }
    Err(Error::missing(
        Format::Vmdk,
        format!(
            "extent file \"{}\" of descriptor line {}",
            line.file, line.line
        ),
        tried,
    )
    .in_file(descriptor))
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.get(..4).and_then(|s| s.try_into().ok()).unwrap_or([0; 4]))
}

/// Opens a file that holds a sparse extent of any kind, by its magic.
pub(crate) fn open_sparse_file(file: ImageFile, w: &mut Warnings) -> Result<(Backend, String)> {
    let path = file.path().to_path_buf();
    let head = file.read_up_to(0, 512)?;
    let magic = u32_le(&head);
    if magic == SPARSE_MAGIC {
        let header = SparseHeader::parse(&head).map_err(|e| e.at(0).in_file(&path))?;
        note_header(&header, &path, w);
        let header = stream::effective_header(&file, header)?;
        let summary = format!(
            "KDMV v{} flags {:#x} grain {} sectors{}{}",
            header.version,
            header.flags,
            header.grain_size,
            if header.compressed() {
                ", deflate-compressed"
            } else {
                ""
            },
            if header.has_markers() {
                ", markers"
            } else {
                ""
            }
        );
        let sparse = SparseExtent::open(file, header, w)?;
        return Ok((Backend::Sparse(Box::new(sparse)), summary));
    }
    if magic == COWD_MAGIC {
        let (sparse, h) = cowd::open(file, w)?;
        let summary = format!(
            "COWD v{} flags {:#x} grain {} sectors",
            h.version, h.flags, h.grain_size
        );
        return Ok((Backend::Sparse(Box::new(sparse)), summary));
    }
    if head.get(..8) == Some(&SESPARSE_MAGIC.to_le_bytes()[..]) {
        let s = SeSparseExtent::open(file)?;
        let summary = format!(
            "seSparse grain {} sectors, grain table {} sectors",
            s.header().grain_size,
            s.header().grain_table_size
        );
        return Ok((Backend::Sparse(Box::new(s)), summary));
    }
    Err(Error::corrupt(
        Format::Vmdk,
        Detail::BadSignature {
            what: "sparse extent magic",
            expected: "KDMV, COWD or seSparse".into(),
            found: crate::error::hex_preview(head.get(..8).unwrap_or_default()),
        },
    )
    .at(0)
    .in_file(&path))
}

/// Records what a sparse header says that a reader must know.
pub(crate) fn note_header(h: &SparseHeader, path: &Path, w: &mut Warnings) {
    if h.newline_bytes_mangled() {
        w.note(
            WarningKind::Other,
            path,
            Some(73),
            format!(
                "newline-check bytes are {:02x?}, expected 0a 20 0d 0a: the file went through \
                 a text-mode transfer and its data may be damaged",
                h.newline_chars
            ),
        );
    }
    if h.unclean_shutdown {
        w.note(
            WarningKind::Other,
            path,
            Some(72),
            "uncleanShutdown is set: the writer did not close the extent",
        );
    }
}

/// Opens the extent an extent line describes (a missing file is an error).
pub(crate) fn open_line(
    ctx: &OpenContext<'_>,
    descriptor: &Path,
    line: &ExtentLine,
    w: &mut Warnings,
) -> Result<VmdkExtent> {
    let len = line.sectors.checked_mul(SECTOR).ok_or_else(|| {
        Error::limit(
            Format::Vmdk,
            "extent sectors",
            line.sectors,
            u64::MAX / SECTOR,
        )
    })?;
    let unreadable = |why: String| VmdkExtent {
        line: Some(line.clone()),
        path: None,
        len,
        summary: why.clone(),
        backend: Backend::Unreadable(why, descriptor.to_path_buf()),
    };
    if line.access == Access::NoAccess {
        return Ok(unreadable(format!(
            "extent of descriptor line {} is NOACCESS",
            line.line
        )));
    }
    let path = match line.kind {
        ExtentType::Zero => {
            return Ok(VmdkExtent {
                line: Some(line.clone()),
                path: None,
                len,
                summary: "zero".into(),
                backend: Backend::Zero,
            })
        }
        ExtentType::VmfsRdm | ExtentType::VmfsRaw => {
            return Ok(unreadable(format!(
                "extent of descriptor line {} is a raw device ({}): the device is not part \
                 of the image",
                line.line,
                line.kind.as_str()
            )))
        }
        _ => resolve_extent(ctx, descriptor, line)?,
    };
    let file = ctx.open_file(&path)?;
    let (backend, summary) = match line.kind {
        ExtentType::Flat | ExtentType::Vmfs => {
            let start = line.offset.saturating_mul(SECTOR);
            if start.saturating_add(len) > file.len() {
                return Err(Error::new(
                    ErrorKind::OutOfBounds,
                    Format::Vmdk,
                    Detail::Truncated {
                        what: format!("flat extent of descriptor line {}", line.line),
                        needed: len,
                        available: file.len().saturating_sub(start),
                    },
                )
                .at(start)
                .in_file(&path));
            }
            (
                Backend::Flat { file, start },
                format!("flat from byte {start}"),
            )
        }
        _ => open_sparse_file(file, w)?,
    };
    Ok(VmdkExtent {
        line: Some(line.clone()),
        path: Some(path),
        len,
        backend,
        summary,
    })
}

/// One step of a planned read or map inside a sparse extent.
struct Piece {
    grain: Grain,
    index: u64,
    /// Byte offset inside the extent.
    at: u64,
    len: u64,
}

/// Plans `len` bytes from byte `at` of a sparse extent, merging runs.
fn plan(src: &dyn GrainSource, at: u64, len: u64) -> Result<Vec<Piece>> {
    let g = src.grain_bytes();
    let mut out: Vec<Piece> = Vec::new();
    let mut pos = at;
    let end = at + len;
    while pos < end {
        let index = pos / g;
        let skip = pos % g;
        let (grain, count) = src.lookup(index)?;
        let span = count.saturating_mul(g).saturating_sub(skip).min(end - pos);
        let grain = match grain {
            Grain::Data(o) => Grain::Data(o + skip),
            other => other,
        };
        let merged = match (out.last_mut(), grain) {
            (Some(last), Grain::Data(o)) => match last.grain {
                Grain::Data(lo) if lo + last.len == o => {
                    last.len += span;
                    true
                }
                _ => false,
            },
            (Some(last), Grain::Zero | Grain::Unallocated) if last.grain == grain => {
                last.len += span;
                true
            }
            _ => false,
        };
        if !merged {
            out.push(Piece {
                grain,
                index,
                at: pos,
                len: span,
            });
        }
        pos += span;
    }
    Ok(out)
}

/// Reads `dst.len()` bytes at byte `at` of the extent; `virt` is the
/// virtual disk offset of `at` (for the parent).
pub(crate) fn read(
    ext: &VmdkExtent,
    parent: Option<&DiskImage>,
    dst: &mut [u8],
    at: u64,
    virt: u64,
) -> Result<()> {
    match &ext.backend {
        Backend::Flat { file, start } => file
            .read_exact_at(dst, start + at)
            .map_err(|e| e.in_format(Format::Vmdk)),
        Backend::Zero => {
            dst.fill(0);
            Ok(())
        }
        // The place is the descriptor line (in `why`); the virtual offset
        // of the read is said in words, since an error's offset is a byte
        // of its file.
        Backend::Unreadable(why, descriptor) => Err(Error::unsupported(
            Format::Vmdk,
            format!("{why} (read at virtual byte {virt:#x})"),
        )
        .in_file(descriptor)),
        Backend::Sparse(src) => read_sparse(src.as_ref(), parent, dst, at, virt),
    }
}

/// Where bytes from byte `at` of the extent (at most `len`) are stored
/// verbatim in a file: a flat extent, or data grains (contiguous ones
/// merged, as [`plan`] merges them for a read).
pub(crate) fn file_range(ext: &VmdkExtent, at: u64, len: u64) -> Option<FileRange<'_>> {
    match &ext.backend {
        Backend::Flat { file, start } => file.file_range(start.checked_add(at)?, len),
        Backend::Sparse(src) => {
            let first = plan(src.as_ref(), at, len).ok()?.into_iter().next()?;
            match first.grain {
                Grain::Data(o) => src.file().file_range(o, first.len),
                _ => None,
            }
        }
        Backend::Zero | Backend::Unreadable(..) => None,
    }
}

fn read_parent(parent: Option<&DiskImage>, dst: &mut [u8], virt: u64) -> Result<()> {
    match parent {
        Some(p) => {
            let avail = p.size().saturating_sub(virt).min(dst.len() as u64) as usize;
            let (head, tail) = dst.split_at_mut(avail);
            if !head.is_empty() {
                p.read_at(head, virt)?;
            }
            tail.fill(0);
            Ok(())
        }
        None => {
            dst.fill(0);
            Ok(())
        }
    }
}

fn read_sparse(
    src: &dyn GrainSource,
    parent: Option<&DiskImage>,
    dst: &mut [u8],
    at: u64,
    virt: u64,
) -> Result<()> {
    let pieces = plan(src, at, dst.len() as u64)?;
    let g = src.grain_bytes();
    let mut jobs: Vec<(u64, u64, u64, &mut [u8])> = Vec::new();
    let mut rest = dst;
    for p in pieces {
        let (chunk, tail) = rest.split_at_mut(usize::try_from(p.len).unwrap_or(0));
        rest = tail;
        match p.grain {
            Grain::Data(o) => {
                if o.saturating_add(p.len) > src.file().len() {
                    return Err(Error::out_of_range(
                        Format::Vmdk,
                        "extent file (grain)",
                        o,
                        p.len,
                        src.file().len(),
                    )
                    .in_file(src.file().path()));
                }
                src.file()
                    .read_exact_at(chunk, o)
                    .map_err(|e| e.in_format(Format::Vmdk))?;
            }
            Grain::Zero => chunk.fill(0),
            Grain::Unallocated => read_parent(parent, chunk, virt + (p.at - at))?,
            Grain::Compressed(o) => jobs.push((o, p.index, p.at % g, chunk)),
        }
    }
    inflate_all(src, jobs)
}

/// Inflates compressed grains, in parallel on rayon's pool when there are
/// enough: each grain inflates straight into its own slice of the caller's
/// buffer, so nothing is copied twice; small reads stay on this thread.
/// The error, if any, is the first failing grain in disk order.
fn inflate_all(src: &dyn GrainSource, jobs: Vec<(u64, u64, u64, &mut [u8])>) -> Result<()> {
    if jobs.len() < PARALLEL_INFLATE_MIN_GRAINS || rayon::current_num_threads() < 2 {
        for (o, index, skip, chunk) in jobs {
            src.read_compressed(o, index, skip, chunk)?;
        }
        return Ok(());
    }
    // Every grain is tried and the first failure in disk order is returned,
    // so a damaged image gives the same error on every run (rayon's
    // `try_for_each` returns whichever failing grain finished first).
    let results: Vec<Result<()>> = jobs
        .into_par_iter()
        .map(|(o, index, skip, chunk)| src.read_compressed(o, index, skip, chunk))
        .collect();
    results.into_iter().collect()
}

/// Appends the map of `len` bytes at byte `at` of the extent (virtual `virt`).
pub(crate) fn map(
    ext: &VmdkExtent,
    parent: Option<&DiskImage>,
    at: u64,
    len: u64,
    virt: u64,
    out: &mut Vec<Extent>,
) -> Result<()> {
    let one = |out: &mut Vec<Extent>, kind| {
        push_extent(
            out,
            Extent {
                offset: virt,
                len,
                kind,
            },
        )
    };
    match &ext.backend {
        Backend::Flat { .. } | Backend::Unreadable(..) => one(out, ExtentKind::Data),
        Backend::Zero => one(out, ExtentKind::Zero),
        Backend::Sparse(src) => {
            for p in plan(src.as_ref(), at, len)? {
                let offset = virt + (p.at - at);
                let kind = match p.grain {
                    Grain::Data(_) => ExtentKind::Data,
                    Grain::Compressed(_) => ExtentKind::Compressed,
                    Grain::Zero => ExtentKind::Zero,
                    Grain::Unallocated => {
                        map_parent(parent, offset, p.len, out)?;
                        continue;
                    }
                };
                push_extent(
                    out,
                    Extent {
                        offset,
                        len: p.len,
                        kind,
                    },
                );
            }
        }
    }
    Ok(())
}

fn map_parent(
    parent: Option<&DiskImage>,
    offset: u64,
    len: u64,
    out: &mut Vec<Extent>,
) -> Result<()> {
    let Some(p) = parent else {
        push_extent(
            out,
            Extent {
                offset,
                len,
                kind: ExtentKind::Unallocated,
            },
        );
        return Ok(());
    };
    push_from_parent(out, p, offset, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compressed grains 0 to 6 inflate slowly, every later one fails at
    /// once: rayon's own first error would be whichever later grain ran
    /// first, and grains not yet started would be skipped.
    struct FailingGrains(ImageFile);

    impl GrainSource for FailingGrains {
        fn grain_bytes(&self) -> u64 {
            512
        }
        fn capacity_bytes(&self) -> u64 {
            512 * 16
        }
        fn lookup(&self, index: u64) -> Result<(Grain, u64)> {
            Ok((Grain::Compressed(index * 512), 1))
        }
        fn file(&self) -> &ImageFile {
            &self.0
        }
        fn read_compressed(&self, at: u64, index: u64, _: u64, _: &mut [u8]) -> Result<()> {
            if index < 7 {
                std::thread::sleep(std::time::Duration::from_millis(10));
                return Ok(());
            }
            Err(Error::corrupt(Format::Vmdk, Detail::Invalid(format!("grain {index}"))).at(at))
        }
    }

    #[test]
    fn parallel_inflate_reports_the_first_failing_grain_in_disk_order() {
        let src = FailingGrains(ImageFile::from_bytes("s.vmdk", vec![0; 512]));
        let mut buf = vec![0u8; 512 * 16];
        for _ in 0..5 {
            let jobs = buf
                .chunks_mut(512)
                .enumerate()
                .map(|(i, c)| (i as u64 * 512, i as u64, 0, c))
                .collect();
            let e = inflate_all(&src, jobs).unwrap_err();
            assert_eq!(e.offset(), Some(7 * 512), "{e}");
        }
    }
}
