//! VMware VMDK: a text descriptor (separate, or embedded in a hosted
//! sparse extent) listing extents laid end to end, each flat, zero, hosted
//! sparse (`KDMV`, streamOptimized included) or seSparse, plus an optional
//! parent (delta/snapshot chains).
//!
//! | createType | extents | read |
//! |---|---|---|
//! | monolithicSparse, twoGbMaxExtentSparse | SPARSE (`KDMV`) | yes |
//! | streamOptimized | SPARSE, deflate grains, footer header (v1–3) | yes |
//! | monolithicFlat, twoGbMaxExtentFlat, vmfs, vmfsThin, vmfsPreallocated, vmfsEagerZeroedThick | FLAT / VMFS | yes |
//! | seSparse | SESPARSE (also a bare file) | yes; a dirty journal is refused |
//! | vmfsSparse | VMFSSPARSE (`COWD`, also a bare file) | yes |
//! | custom | any mix of the above, ZERO | yes |
//! | vmfsRaw, vmfsRDM, NOACCESS extents | — | opens; reading them is an "unsupported" error |
//! | vsanSparse | — | "unsupported" error |
//!
//! Module layout: `descriptor` (text), `sparse_header` (`KDMV`),
//! `grain_table` (directory, tables, cache), `stream` (footer, markers,
//! inflate), `sesparse`, `cowd`, `extent` (per-extent read and map), `chain`
//! (parents and [`dependencies`]).

pub(crate) mod descriptor;

mod chain;
mod cowd;
mod extent;
mod grain_table;
mod occupied;
mod sesparse;
pub(crate) mod sparse_header;
mod stream;
mod stream_writer;
pub mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::block_device::{check_range, BlockDevice, Extent, FileRange};
use crate::context::OpenContext;
use crate::error::{Error, Format, Result};
use crate::image::{DiskImage, ImageInfo, WarningKind, Warnings};
use crate::image_file::ImageFile;

pub use chain::dependencies;
use cowd::COWD_MAGIC;
use descriptor::{Descriptor, ExtentType, MAX_DESCRIPTOR_BYTES, NO_PARENT_CID};
use extent::{Backend, VmdkExtent};
use sparse_header::{SparseHeader, SECTOR, SPARSE_MAGIC};

/// An opened VMDK virtual disk: its extents laid end to end, and its parent.
pub struct VmdkImage {
    extents: Vec<VmdkExtent>,
    /// Virtual byte offset where each extent starts.
    starts: Vec<u64>,
    size: u64,
    parent: Option<DiskImage>,
}

impl std::fmt::Debug for VmdkImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmdkImage")
            .field("extents", &self.extents.len())
            .field("size", &self.size)
            .field("parent", &self.parent.is_some())
            .finish()
    }
}

impl VmdkImage {
    fn new(extents: Vec<VmdkExtent>, parent: Option<DiskImage>) -> Result<Self> {
        let mut starts = Vec::with_capacity(extents.len());
        let mut size = 0u64;
        for e in &extents {
            starts.push(size);
            size = size
                .checked_add(e.len)
                .ok_or_else(|| Error::limit(Format::Vmdk, "disk size", u64::MAX, u64::MAX))?;
        }
        Ok(VmdkImage {
            extents,
            starts,
            size,
            parent,
        })
    }

    /// Calls `f(extent, byte in extent, virtual offset, length)` for each
    /// extent piece of a checked range.
    fn walk(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(&VmdkExtent, u64, u64, u64) -> Result<()>,
    ) -> Result<()> {
        check_range(Format::Vmdk, offset, len, self.size)?;
        let mut i = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        let mut done = 0u64;
        while done < len {
            let pos = offset + done;
            let (Some(ext), Some(&start)) = (self.extents.get(i), self.starts.get(i)) else {
                return Err(Error::out_of_range(
                    Format::Vmdk,
                    "virtual disk",
                    pos,
                    0,
                    self.size,
                ));
            };
            let in_ext = pos - start;
            let n = ext.len.saturating_sub(in_ext).min(len - done);
            if n > 0 {
                f(ext, in_ext, pos, n)?;
            }
            done += n;
            i += 1;
        }
        Ok(())
    }
}

impl BlockDevice for VmdkImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut rest = &mut buf[..];
        self.walk(offset, rest.len() as u64, |ext, at, virt, n| {
            let (chunk, tail) = std::mem::take(&mut rest).split_at_mut(n as usize);
            rest = tail;
            extent::read(ext, self.parent.as_ref(), chunk, at, virt)
        })
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let mut out = Vec::new();
        self.walk(offset, len, |ext, at, virt, n| {
            extent::map(ext, self.parent.as_ref(), at, n, virt, &mut out)
        })?;
        Ok(out)
    }

    fn file_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
        check_range(Format::Vmdk, offset, len, self.size).ok()?;
        let i = self
            .starts
            .partition_point(|&s| s <= offset)
            .checked_sub(1)?;
        let (ext, &start) = (self.extents.get(i)?, self.starts.get(i)?);
        let at = offset - start;
        extent::file_range(ext, at, ext.len.checked_sub(at)?.min(len))
    }
}

/// Opens a VMDK: a descriptor file, a hosted sparse file (with its embedded
/// descriptor, or bare), or a bare seSparse file.
pub(crate) fn open(ctx: &OpenContext<'_>, file: ImageFile) -> Result<DiskImage> {
    let path = file.path().to_path_buf();
    let head = file.read_up_to(0, 512)?;
    let mut w = Warnings::new(ctx.options());
    let magic = u32::from_le_bytes(
        head.get(..4)
            .and_then(|s| s.try_into().ok())
            .unwrap_or([0; 4]),
    );
    if magic == SPARSE_MAGIC {
        let header = SparseHeader::parse(&head).map_err(|e| e.at(0).in_file(&path))?;
        if header.descriptor_offset == 0 || header.descriptor_size == 0 {
            return open_bare(file, "hosted sparse extent without a descriptor", w);
        }
        let at = header.descriptor_offset.saturating_mul(SECTOR);
        let len = header.descriptor_size.saturating_mul(SECTOR);
        Error::ensure_at_most(
            Format::Vmdk,
            "embedded descriptor bytes",
            len,
            MAX_DESCRIPTOR_BYTES,
        )
        .map_err(|e| e.at(36).in_file(&path))?;
        let text = file
            .read_vec(at, len)
            .map_err(|e| e.in_format(Format::Vmdk))?;
        let desc = Descriptor::parse(&text).map_err(|e| e.at(at).in_file(&path))?;
        return open_embedded(ctx, file, header, desc, w);
    }
    if magic == COWD_MAGIC || head.get(..8) == Some(&sesparse::SESPARSE_MAGIC.to_le_bytes()[..]) {
        return open_bare(file, "bare extent", w);
    }
    if file.len() > MAX_DESCRIPTOR_BYTES {
        return Err(Error::limit(
            Format::Vmdk,
            "descriptor file bytes",
            file.len(),
            MAX_DESCRIPTOR_BYTES,
        )
        .in_file(&path));
    }
    let text = file.read_vec(0, file.len())?;
    let desc = Descriptor::parse(&text).map_err(|e| e.in_file(&path))?;
    drop(file);
    let mut extents = Vec::with_capacity(desc.extents.len());
    check_create_type(&desc, &path)?;
    for line in &desc.extents {
        // An error that names no file (a NOACCESS or raw-device line) is the descriptor's.
        extents.push(extent::open_line(ctx, &path, line, &mut w).map_err(|e| e.in_file(&path))?);
    }
    finish(ctx, &path, Some(&desc), extents, "separate", w)
}

fn check_create_type(desc: &Descriptor, path: &Path) -> Result<()> {
    if desc
        .create_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("vsanSparse"))
    {
        return Err(Error::unsupported(
            Format::Vmdk,
            "createType vsanSparse (vSAN objects) is not read by this version",
        )
        .in_file(path));
    }
    if desc.extents.is_empty() {
        return Err(Error::corrupt(
            Format::Vmdk,
            crate::error::Detail::Invalid("descriptor lists no extent".into()),
        )
        .in_file(path));
    }
    Ok(())
}

/// A file that is one sparse extent with no descriptor: the extent alone.
fn open_bare(file: ImageFile, what: &str, mut w: Warnings) -> Result<DiskImage> {
    let path = file.path().to_path_buf();
    let (backend, summary) = extent::open_sparse_file(file, &mut w)?;
    let Backend::Sparse(src) = &backend else {
        return Err(Error::unsupported(Format::Vmdk, "not a sparse extent").in_file(&path));
    };
    let len = capacity_of(src.as_ref());
    let ext = VmdkExtent {
        line: None,
        path: Some(path.clone()),
        len,
        backend,
        summary: format!("{what}: {summary}"),
    };
    finish_with(&path, None, vec![ext], "none", None, w)
}

fn capacity_of(src: &dyn grain_table::GrainSource) -> u64 {
    src.capacity_bytes()
}

/// A hosted sparse file with an embedded descriptor: the file itself is the
/// extent, whatever name the descriptor gives it (renamed images open).
fn open_embedded(
    ctx: &OpenContext<'_>,
    file: ImageFile,
    header: SparseHeader,
    desc: Descriptor,
    mut w: Warnings,
) -> Result<DiskImage> {
    let path = file.path().to_path_buf();
    check_create_type(&desc, &path)?;
    let line = desc.extents.first().cloned();
    if desc.extents.len() != 1 || line.as_ref().is_some_and(|l| l.kind != ExtentType::Sparse) {
        w.note(
            WarningKind::Other,
            &path,
            Some(header.descriptor_offset * SECTOR),
            format!(
                "embedded descriptor lists {} extent(s); this file is read as the only, sparse extent",
                desc.extents.len()
            ),
        );
    }
    let own = path.file_name().map(|n| n.to_string_lossy().into_owned());
    if let Some(l) = &line {
        if Some(
            l.file
                .rsplit(['/', '\\'])
                .next()
                .unwrap_or_default()
                .to_owned(),
        ) != own
        {
            w.note(
                WarningKind::Other,
                &path,
                None,
                format!(
                    "embedded descriptor names \"{}\" (renamed file); this file is used",
                    l.file
                ),
            );
        }
    }
    let capacity = header.capacity;
    let (backend, summary) = extent::open_sparse_file(file, &mut w)?;
    let len = match &line {
        Some(l) if desc.extents.len() == 1 => {
            if l.sectors != capacity {
                w.note(
                    WarningKind::Other,
                    &path,
                    None,
                    format!(
                        "descriptor says {} sectors, header capacity is {capacity}",
                        l.sectors
                    ),
                );
            }
            l.sectors.saturating_mul(SECTOR)
        }
        _ => capacity * SECTOR,
    };
    let ext = VmdkExtent {
        line: line.filter(|_| desc.extents.len() == 1),
        path: Some(path.clone()),
        len,
        backend,
        summary,
    };
    finish(ctx, &path, Some(&desc), vec![ext], "embedded", w)
}

/// Opens the parent (unless `no_parents`) and builds the image and its info.
fn finish(
    ctx: &OpenContext<'_>,
    path: &Path,
    desc: Option<&Descriptor>,
    extents: Vec<VmdkExtent>,
    where_desc: &str,
    mut w: Warnings,
) -> Result<DiskImage> {
    let parent = match desc {
        Some(d) => chain::open_parent(ctx, path, d, &mut w)?,
        None => None,
    };
    finish_with(path, desc, extents, where_desc, parent, w)
}

fn finish_with(
    path: &Path,
    desc: Option<&Descriptor>,
    extents: Vec<VmdkExtent>,
    where_desc: &str,
    parent: Option<DiskImage>,
    w: Warnings,
) -> Result<DiskImage> {
    let image = VmdkImage::new(extents, parent)?;
    let mut info = ImageInfo::new(path, Format::Vmdk, image.size, 512);
    info.subformat = Some(
        desc.and_then(|d| d.create_type.clone())
            .unwrap_or_else(|| "bare extent".into()),
    );
    let mut files: Vec<PathBuf> = vec![path.to_path_buf()];
    // The same paths, for lookups: a split disk has a thousand extents.
    let mut seen: HashSet<&Path> = HashSet::from([path]);
    info.property("descriptor", where_desc);
    if let Some(d) = desc {
        describe(&mut info, d);
    }
    for (i, e) in image.extents.iter().enumerate() {
        let line = e
            .line
            .as_ref()
            .map_or_else(|| "(no descriptor)".to_owned(), |l| l.to_string());
        let file = e
            .path
            .as_ref()
            .map_or_else(String::new, |p| format!(" -> {}", p.display()));
        info.property(
            format!("extent.{i}"),
            format!("{line}{file}; {}", e.summary),
        );
        if let Some(p) = &e.path {
            if seen.insert(p) {
                files.push(p.clone());
            }
        }
    }
    info.files = files;
    info.warnings = w.into_vec();
    if let Some(p) = &image.parent {
        info.parent = Some(Box::new(p.info().clone()));
    }
    Ok(DiskImage::new(Arc::new(image), info))
}

fn describe(info: &mut ImageInfo, d: &Descriptor) {
    if !d.standard_first_line {
        info.property(
            "descriptor_first_line",
            "not `# Disk DescriptorFile` (third-party writer)",
        );
    }
    for (k, v) in [
        ("version", &d.version),
        ("encoding", &d.encoding),
        ("create_type", &d.create_type),
        ("parent_file_name_hint", &d.parent_file_name_hint),
    ] {
        if let Some(v) = v {
            info.property(k, v);
        }
    }
    if let Some(c) = d.cid {
        info.property("cid", format!("{c:08x}"));
    }
    if let Some(c) = d.parent_cid {
        let shown = if c == NO_PARENT_CID {
            "ffffffff (none)".to_owned()
        } else {
            format!("{c:08x}")
        };
        info.property("parent_cid", shown);
    }
    for (k, v) in &d.ddb {
        let key = snake_case(k);
        if !info.properties.iter().any(|(have, _)| *have == key) {
            info.property(key, v);
        }
    }
}

/// `ddb.longContentID` → `ddb.long_content_id` (property keys are snake_case).
fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut prev_lower = false;
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            if prev_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            prev_lower = false;
        } else {
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddb_keys_become_snake_case() {
        assert_eq!(snake_case("ddb.longContentID"), "ddb.long_content_id");
        assert_eq!(snake_case("ddb.adapterType"), "ddb.adapter_type");
        assert_eq!(snake_case("ddb.geometry.heads"), "ddb.geometry.heads");
        assert_eq!(snake_case("ddb.virtualHWVersion"), "ddb.virtual_hwversion");
    }
}
