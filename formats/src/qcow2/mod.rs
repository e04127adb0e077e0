//! QEMU copy-on-write images, QCOW2 versions 2 and 3 (qemu's
//! `docs/interop/qcow2.txt`).
//!
//! Opening reads the header and its extensions (`header`), the active L1
//! table (`table`), the backing file name and format, the external data
//! file name and the internal snapshot table (listed in `info`). Reads
//! walk L1 and L2 tables cluster by cluster: data clusters, zero clusters
//! (bit 0 of an L2 entry, with or without a host offset), unallocated
//! clusters (from the backing file, or zeros without one or with
//! `no_parents`), compressed clusters and, with extended L2
//! entries, 32 subclusters per cluster with allocation and zero bitmaps.
//! Guest data comes from the external data file when the image names one.
//!
//! Compressed clusters are raw deflate or, with `compression_type` 1,
//! zstd frames (decoded by [`crate::zstd::decompress`]).
//!
//! Refused with an [`Unsupported`](crate::ErrorKind::Unsupported) error:
//! QCOW version 1, AES and LUKS encryption, and any incompatible feature
//! bit this reader does not know.
//! Dirty and corrupt flags open with a warning (strict mode refuses a
//! corrupt one). Internal snapshots are listed in `info`; one is read
//! instead of the current state when [`OpenOptions::snapshot`](crate::OpenOptions::snapshot)
//! names it by ID or name (its own L1 table and virtual size).
//!
//! Limits: clusters of 512 bytes to 2 MiB, an L1 table of at most 4 Mi
//! entries (qemu's 32 MiB) sized from the virtual size and charged to the
//! open's memory budget before it is read, at most `table::MAX_CACHED_L2`
//! cached L2 tables and `table::MAX_L2_CACHE_BYTES` of them, every table
//! inside the file.

pub(crate) mod header;
pub(crate) mod table;

use std::sync::{Arc, Mutex};

use zune_inflate::{DeflateDecoder, DeflateOptions};

use crate::block_device::{check_range, BlockDevice, Extent, FileRange};
use crate::context::OpenContext;
use crate::error::{Detail, Error, ErrorKind, Format, Result};
use crate::image::{DiskImage, ImageInfo, WarningKind, Warnings};
use crate::image_file::ImageFile;
use crate::table_runs::{self, Run, TableMapped};

pub use header::{Header, Snapshot};
use table::{Cluster, Tables};

/// An opened QCOW2 image: the [`BlockDevice`] of its virtual disk.
pub struct Qcow2Image {
    tables: Tables,
    /// The external data file, when guest data lives there.
    data: Option<ImageFile>,
    size: u64,
    parent: Option<DiskImage>,
    /// The last inflated compressed cluster: (host offset, bytes).
    inflated: Mutex<Option<(u64, Arc<[u8]>)>>,
    /// Compressed clusters are zstd frames (`compression_type` 1), not deflate.
    zstd: bool,
}

impl std::fmt::Debug for Qcow2Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Image")
            .field("file", self.tables.file())
            .field("tables", &self.tables)
            .field("size", &self.size)
            .field("has_parent", &self.parent.is_some())
            .finish_non_exhaustive()
    }
}

impl Qcow2Image {
    /// The file guest data is in: the external data file, else the image.
    fn data_file(&self) -> &ImageFile {
        self.data.as_ref().unwrap_or(self.tables.file())
    }

    /// Calls `f` for each run of `len` bytes from virtual `offset`.
    fn walk(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(u64, u64, Run) -> Result<()>,
    ) -> Result<()> {
        let cs = self.tables.cluster_size();
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let n = pos / cs;
            let within = pos % cs;
            if let Some(clusters) = self.tables.unallocated_span(n) {
                let stop = clusters
                    .saturating_mul(cs)
                    .saturating_sub(within)
                    .min(end - pos);
                f(pos, stop, Run::Absent)?;
                pos += stop;
                continue;
            }
            let stop = (cs - within).min(end - pos);
            match self.tables.cluster(n)? {
                Cluster::Unallocated => f(pos, stop, Run::Absent)?,
                Cluster::Zero => f(pos, stop, Run::Zero)?,
                Cluster::Data(host) => f(pos, stop, Run::File(host + within))?,
                Cluster::Compressed { offset: o, len: l } => f(
                    pos,
                    stop,
                    Run::Compressed {
                        offset: o,
                        len: l,
                        skip: within,
                    },
                )?,
                Cluster::Sub { host, alloc, zero } => {
                    let sc = cs / 32;
                    let mut p = within;
                    let last = within + stop;
                    while p < last {
                        let i = (p / sc) as u32;
                        let q = ((u64::from(i) + 1) * sc).min(last);
                        let run = if alloc >> i & 1 != 0 {
                            Run::File(host + p)
                        } else if zero >> i & 1 != 0 {
                            Run::Zero
                        } else {
                            Run::Absent
                        };
                        f(pos - within + p, q - p, run)?;
                        p = q;
                    }
                }
            }
            pos += stop;
        }
        Ok(())
    }

    /// Reads an absent range: from the parent, zeros where it has none.
    fn read_absent(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        crate::block_device::read_from_parent(
            self.parent.as_ref().map(|p| p as &dyn BlockDevice),
            buf,
            offset,
        )
    }

    /// The inflated bytes of the compressed cluster at host `offset`.
    fn inflate(&self, offset: u64, len: u64) -> Result<Arc<[u8]>> {
        if let Ok(guard) = self.inflated.lock() {
            if let Some((at, bytes)) = guard.as_ref() {
                if *at == offset {
                    return Ok(Arc::clone(bytes));
                }
            }
        }
        let file = self.tables.file();
        let path = file.path();
        let cs = self.tables.cluster_size();
        if offset >= file.len() {
            return Err(Error::out_of_range(
                Format::Qcow2,
                "image file (compressed cluster)",
                offset,
                len,
                file.len(),
            )
            .in_file(path));
        }
        // The last stream of a file may end before its last sector does.
        let avail = len.min(file.len() - offset);
        let stream = file
            .read_vec(offset, avail)
            .map_err(|e| e.in_format(Format::Qcow2))?;
        let limit = usize::try_from(cs).unwrap_or(usize::MAX);
        let out = if self.zstd {
            // qemu decodes until the cluster is full; what follows in the
            // reserved sectors is padding.
            let mut out = vec![0u8; limit];
            let n = crate::zstd::decompress(&stream, &mut out).map_err(|e| {
                Error::corrupt(
                    Format::Qcow2,
                    Detail::Invalid(format!(
                        "compressed cluster does not decompress to one cluster ({cs} bytes): {e}"
                    )),
                )
                .at(offset)
                .in_file(path)
            })?;
            out.truncate(n);
            out
        } else {
            let options = DeflateOptions::default()
                .set_limit(limit)
                .set_size_hint(limit);
            DeflateDecoder::new_with_options(&stream, options)
                .decode_deflate()
                .map_err(|e| {
                    Error::corrupt(
                        Format::Qcow2,
                        Detail::Invalid(format!(
                            "compressed cluster does not inflate to one cluster ({cs} bytes): {:?}",
                            e.error
                        )),
                    )
                    .at(offset)
                    .in_file(path)
                })?
        };
        if out.len() as u64 != cs {
            return Err(Error::corrupt(
                Format::Qcow2,
                Detail::Truncated {
                    what: "inflated compressed cluster".into(),
                    needed: cs,
                    available: out.len() as u64,
                },
            )
            .at(offset)
            .in_file(path));
        }
        let bytes: Arc<[u8]> = out.into();
        if let Ok(mut guard) = self.inflated.lock() {
            *guard = Some((offset, Arc::clone(&bytes)));
        }
        Ok(bytes)
    }
}

impl BlockDevice for Qcow2Image {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(Format::Qcow2, offset, buf.len() as u64, self.size)?;
        // Clusters stored one after another in the file are read with one
        // pread: (virtual offset, host offset, length) not read yet.
        let mut pending: Option<(u64, u64, u64)> = None;
        let read_file = |buf: &mut [u8], (o, at, l): (u64, u64, u64)| -> Result<()> {
            let (Ok(lo), Ok(n)) = (usize::try_from(o - offset), usize::try_from(l)) else {
                return Ok(());
            };
            match buf.get_mut(lo..lo.saturating_add(n)) {
                Some(dst) => self
                    .data_file()
                    .read_exact_at(dst, at)
                    .map_err(|e| e.in_format(Format::Qcow2)),
                None => Ok(()),
            }
        };
        self.walk(offset, buf.len() as u64, |o, l, run| {
            if let Run::File(at) = run {
                match pending {
                    Some((po, pat, pl)) if po + pl == o && pat + pl == at => {
                        pending = Some((po, pat, pl + l));
                    }
                    Some(p) => {
                        read_file(buf, p)?;
                        pending = Some((o, at, l));
                    }
                    None => pending = Some((o, at, l)),
                }
                return Ok(());
            }
            if let Some(p) = pending.take() {
                read_file(buf, p)?;
            }
            let (Ok(lo), Ok(n)) = (usize::try_from(o - offset), usize::try_from(l)) else {
                return Ok(());
            };
            let Some(dst) = buf.get_mut(lo..lo.saturating_add(n)) else {
                return Ok(());
            };
            match run {
                Run::File(_) => Ok(()),
                Run::Zero => {
                    dst.fill(0);
                    Ok(())
                }
                Run::Absent => self.read_absent(dst, o),
                Run::Compressed { offset, len, skip } => {
                    let bytes = self.inflate(offset, len)?;
                    let src = usize::try_from(skip)
                        .ok()
                        .and_then(|s| bytes.get(s..s.saturating_add(dst.len())));
                    match src {
                        Some(src) => {
                            dst.copy_from_slice(src);
                            Ok(())
                        }
                        None => Err(Error::corrupt(
                            Format::Qcow2,
                            Detail::Invalid("read outside an inflated cluster".into()),
                        )
                        .at(offset)),
                    }
                }
            }
        })?;
        match pending {
            Some(p) => read_file(buf, p),
            None => Ok(()),
        }
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(Format::Qcow2, offset, len, self.size)?;
        table_runs::map(self, offset, len)
    }

    fn file_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
        check_range(Format::Qcow2, offset, len, self.size).ok()?;
        let cs = self.tables.cluster_size();
        table_runs::file_range(self, offset, (cs - offset % cs).min(len))
    }
}

impl TableMapped for Qcow2Image {
    fn walk_runs(
        &self,
        offset: u64,
        len: u64,
        f: &mut dyn FnMut(u64, u64, Run) -> Result<()>,
    ) -> Result<()> {
        self.walk(offset, len, f)
    }

    fn parent_device(&self) -> Option<&dyn BlockDevice> {
        self.parent.as_ref().map(|p| p as &dyn BlockDevice)
    }

    fn data_range(&self, at: u64, len: u64) -> Option<FileRange<'_>> {
        self.data_file().file_range(at, len)
    }
}

/// The snapshot whose ID is `want`, else the one named `want` (qemu's
/// order); none, or a name two snapshots share, is an error listing them.
fn find_snapshot<'a>(snaps: &'a [Snapshot], want: &str) -> Result<&'a Snapshot> {
    if let Some(s) = snaps.iter().find(|s| s.id == want) {
        return Ok(s);
    }
    let named: Vec<&Snapshot> = snaps.iter().filter(|s| s.name == want).collect();
    match named.as_slice() {
        [one] => Ok(one),
        _ => {
            let list: Vec<String> = snaps
                .iter()
                .map(|s| format!("{} (ID {})", s.name, s.id))
                .collect();
            let kind = if named.is_empty() {
                ErrorKind::NotFound
            } else {
                ErrorKind::Ambiguous
            };
            Err(Error::new(
                kind,
                Format::Qcow2,
                Detail::Invalid(format!(
                    "{} internal snapshot with ID or name {want:?}; snapshots: {}",
                    if named.is_empty() {
                        "no"
                    } else {
                        "more than one"
                    },
                    if list.is_empty() {
                        "none".to_owned()
                    } else {
                        list.join(", ")
                    }
                )),
            ))
        }
    }
}

/// Opens a QCOW2 file (see the module documentation).
pub(crate) fn open(ctx: &OpenContext<'_>, file: ImageFile) -> Result<DiskImage> {
    let path = file.path().to_path_buf();
    let mut w = Warnings::new(ctx.options());
    let h = Header::read(&file)?;
    let backing = h.backing_file(&file)?;

    let mut info = ImageInfo::new(&path, Format::Qcow2, h.size, 512);
    info.subformat = Some(format!("v{}", h.version));
    info.property("version", h.version);
    info.property("cluster_size", h.cluster_size());
    info.property("l1_size", h.l1_size);
    info.property("l1_table_offset", h.l1_table_offset);
    info.property("refcount_bits", 1u32 << h.refcount_order);
    info.property("incompatible_features", format!("{:#x}", h.incompatible));
    info.property("compatible_features", format!("{:#x}", h.compatible));
    info.property("autoclear_features", format!("{:#x}", h.autoclear));
    info.property("extended_l2", h.extended_l2());
    info.property(
        "compression_type",
        if h.compression_type == 0 {
            "zlib"
        } else {
            "zstd"
        },
    );
    if h.incompatible & header::INCOMPAT_DIRTY != 0 {
        w.note(
            WarningKind::Other,
            &path,
            Some(72),
            "the dirty flag is set: the image was not closed cleanly (its refcounts may be \
             stale; reads do not use them)",
        );
    }
    if h.incompatible & header::INCOMPAT_CORRUPT != 0 {
        w.tolerate(
            WarningKind::Other,
            Error::corrupt(
                Format::Qcow2,
                Detail::Invalid(
                    "the corrupt flag is set: qemu found an inconsistency in this image's \
                     metadata"
                        .into(),
                ),
            )
            .at(72)
            .in_file(&path),
        )?;
    }

    // The internal snapshot asked for applies to the image named, not to
    // its backing chain.
    let wanted = ctx
        .options()
        .snapshot
        .as_deref()
        .filter(|_| ctx.depth() == 0);
    let mut h = h;
    match header::read_snapshots(&file, &h) {
        Ok(snaps) => {
            info.property("snapshots", snaps.len());
            for (i, s) in snaps.iter().enumerate() {
                info.property(format!("snapshot.{i}.id"), &s.id);
                info.property(format!("snapshot.{i}.name"), &s.name);
                info.property(format!("snapshot.{i}.size"), s.disk_size);
                info.property(format!("snapshot.{i}.date"), s.date_sec);
            }
            if let Some(want) = wanted {
                let s = find_snapshot(&snaps, want).map_err(|e| e.in_file(&path))?;
                info.property("opened_snapshot.id", &s.id);
                info.property("opened_snapshot.name", &s.name);
                info.size = s.disk_size;
                h.size = s.disk_size;
                h.l1_table_offset = s.l1_table_offset;
                h.l1_size = s.l1_size;
            }
        }
        Err(e) if wanted.is_some() => return Err(e),
        Err(e) => w.tolerate(WarningKind::Other, e)?,
    }

    let mut data = None;
    if let Some(name) = &h.data_file {
        let raw = h.autoclear & header::AUTOCLEAR_DATA_FILE_RAW != 0;
        info.property("data_file", name);
        info.property("data_file_raw", raw);
        let dir = path.parent().unwrap_or(std::path::Path::new(""));
        let target = if crate::context::is_absolute_anywhere(name) {
            std::path::PathBuf::from(name)
        } else {
            dir.join(name)
        };
        let f = ctx
            .open_file(&target)
            .map_err(|e| e.in_format(Format::Qcow2))?;
        info.files.push(target);
        data = Some(f);
    }

    let tables = Tables::open(file, &h)?;
    info.property("allocated_l2_tables", tables.allocated_l2_tables());

    let mut parent = None;
    if let Some(name) = &backing {
        info.property("backing_file", name);
        if let Some(f) = &h.backing_format {
            info.property("backing_format", f);
        }
        if !ctx.options().no_parents {
            let hints = [name.clone()];
            let p = if h.backing_format.as_deref() == Some("raw") {
                // A raw backing file has no chain of its own; it is opened
                // as raw whatever its content looks like, as qemu does.
                let at = ctx.resolve_parent(Format::Qcow2, &path, &hints)?;
                crate::raw::open(ctx, std::slice::from_ref(&at))
                    .map_err(|e| e.in_format(Format::Raw).in_file(&at))?
            } else {
                ctx.open_parent(Format::Qcow2, &path, &hints)?
            };
            info.parent = Some(Box::new(p.info().clone()));
            parent = Some(p);
        }
    }
    info.warnings = w.into_vec();
    let image = Qcow2Image {
        tables,
        data,
        size: h.size,
        parent,
        inflated: Mutex::new(None),
        zstd: h.compression_type == 1,
    };
    Ok(DiskImage::new(Arc::new(image), info))
}
