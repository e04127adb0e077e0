//! VHD (Virtual PC, Virtual Server, Hyper-V, Windows, Disk2vhd, Azure,
//! qemu `vpc`): fixed, dynamic and differencing disks, read-only.
//!
//! Layout ("Virtual Hard Disk Image Format Specification"): a 512-byte
//! footer at the end of the file (511 bytes in old Virtual PC
//! files), copied at offset 0 of dynamic and differencing disks; a fixed
//! disk's data precedes the footer. A dynamic disk has a
//! dynamic header at the footer's data offset, a
//! BAT of block offsets, and a sector bitmap before each block's
//! data. A differencing disk is a dynamic disk whose absent sectors come
//! from a parent, found through its parent locators.
//!
//! Tolerated damage (a warning; [`OpenOptions::strict`](crate::OpenOptions::strict)
//! refuses): a footer or dynamic-header checksum mismatch, an end-of-file
//! footer that is missing or damaged when the copy at offset 0 is sound, a
//! parent whose unique ID or size is not what the child records.
//!
//! The disk size is the footer's current size, as Windows and libvhdi use
//! it; `info` also shows the CHS geometry and the size it describes, which
//! qemu uses for images written by Virtual PC.

pub(crate) mod bat;
pub(crate) mod dynamic_header;
pub(crate) mod footer;
pub(crate) mod parent_locator;

use std::path::Path;
use std::sync::Arc;

use crate::block_device::{
    check_range, push_extent, push_from_parent, BlockDevice, Extent, ExtentKind, FileRange,
};
use crate::context::OpenContext;
use crate::error::{Detail, Error, ErrorKind, Format, Result};
use crate::guid::Guid;
use crate::image::{DiskImage, ImageInfo, WarningKind, Warnings};
use crate::image_file::ImageFile;

use bat::{Bat, Run, Source};
use dynamic_header::{DynamicHeader, HEADER_LEN};
use footer::{
    creator_name, format_time_stamp, four_cc, host_name, DiskType, VhdFooter, FOOTER_LEN,
    OLD_FOOTER_LEN,
};
use parent_locator::{parent_hints, read_locators, ParentLocator};

/// How the virtual disk is laid out in the file.
#[derive(Debug)]
enum Layout {
    /// The disk's bytes are the file's first `size` bytes; the data
    /// ends at `data_end` (where the footer is), before `size` in a
    /// fixed disk cut short.
    Fixed {
        /// Where the data ends in the file (the footer's offset).
        data_end: u64,
    },
    /// Blocks through a BAT (dynamic or differencing).
    Sparse(Bat),
}

/// An opened VHD: fixed, dynamic or differencing (with its parent, unless
/// opened with `no_parents`).
pub struct VhdImage {
    file: ImageFile,
    size: u64,
    layout: Layout,
    parent: Option<DiskImage>,
}

impl std::fmt::Debug for VhdImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhdImage")
            .field("file", &self.file)
            .field("size", &self.size)
            .field("layout", &self.layout)
            .field(
                "parent",
                &self.parent.as_ref().map(|p| p.info().path.clone()),
            )
            .finish()
    }
}

impl VhdImage {
    fn runs(&self, offset: u64, len: u64) -> Result<Vec<Run>> {
        let mut runs = Vec::new();
        match &self.layout {
            Layout::Fixed { .. } => runs.push(Run {
                offset,
                len,
                source: Source::File(offset),
            }),
            Layout::Sparse(bat) => bat.runs(&self.file, offset, len, &mut runs)?,
        }
        Ok(runs)
    }

    /// Fails with [`ErrorKind::OutOfBounds`] when `len` bytes at file
    /// offset `at` reach past the data of a fixed disk cut short (the
    /// bytes there are the footer, not disk data).
    fn check_data_end(&self, at: u64, len: u64) -> Result<()> {
        let Layout::Fixed { data_end } = self.layout else {
            return Ok(());
        };
        if at.checked_add(len).is_some_and(|end| end <= data_end) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::OutOfBounds,
            Format::Vhd,
            Detail::OutOfRange {
                what: "fixed disk's data in the file (cut short before its footer)",
                offset: at,
                len,
                size: data_end,
            },
        )
        .at(at)
        .in_file(self.file.path()))
    }

    /// Reads an absent range: from the parent, zeros where it has none.
    fn read_absent(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        crate::block_device::read_from_parent(
            self.parent.as_ref().map(|p| p as &dyn BlockDevice),
            buf,
            offset,
        )
    }
}

impl BlockDevice for VhdImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(Format::Vhd, offset, buf.len() as u64, self.size)?;
        let mut done = 0usize;
        for run in self.runs(offset, buf.len() as u64)? {
            let n = usize::try_from(run.len).unwrap_or(usize::MAX);
            let Some(dst) = buf.get_mut(done..done.saturating_add(n)) else {
                return Err(Error::out_of_range(
                    Format::Vhd,
                    "read buffer",
                    run.offset,
                    run.len,
                    self.size,
                ));
            };
            match run.source {
                Source::File(at) => {
                    self.check_data_end(at, run.len)?;
                    self.file
                        .read_exact_at(dst, at)
                        .map_err(|e| e.in_format(Format::Vhd))?;
                }
                Source::Absent => self.read_absent(dst, run.offset)?,
            }
            done += n;
        }
        Ok(())
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(Format::Vhd, offset, len, self.size)?;
        let mut map = Vec::new();
        for run in self.runs(offset, len)? {
            match (run.source, &self.parent) {
                (Source::File(_), _) => push_extent(
                    &mut map,
                    Extent {
                        offset: run.offset,
                        len: run.len,
                        kind: ExtentKind::Data,
                    },
                ),
                (Source::Absent, None) => push_extent(
                    &mut map,
                    Extent {
                        offset: run.offset,
                        len: run.len,
                        kind: ExtentKind::Unallocated,
                    },
                ),
                (Source::Absent, Some(p)) => {
                    push_from_parent(&mut map, p, run.offset, run.len)?;
                }
            }
        }
        Ok(map)
    }

    fn file_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
        check_range(Format::Vhd, offset, len, self.size).ok()?;
        let first = self.runs(offset, len).ok()?.into_iter().next()?;
        match first.source {
            Source::File(at) => {
                self.check_data_end(at, first.len).ok()?;
                self.file.file_range(at, first.len)
            }
            Source::Absent => None,
        }
    }
}

/// Which copy of the footer was used, for `info`.
struct ChosenFooter {
    footer: VhdFooter,
    /// Where it is in the file.
    offset: u64,
    /// Its length (512, or 511 in old Virtual PC files).
    len: usize,
}

/// Finds the footer: the one at the end of the file, or its copy at 0
/// when the end one is missing or damaged.
fn choose_footer(file: &ImageFile, w: &mut Warnings) -> Result<ChosenFooter> {
    let path = file.path();
    let len = file.len();
    let tail = file.read_up_to(len.saturating_sub(FOOTER_LEN as u64), FOOTER_LEN)?;
    let end = if tail.len() == FOOTER_LEN && VhdFooter::has_cookie(&tail) {
        Some((len - FOOTER_LEN as u64, FOOTER_LEN, VhdFooter::parse(&tail)))
    } else if tail.len() == FOOTER_LEN && VhdFooter::has_cookie(tail.get(1..).unwrap_or_default()) {
        Some((
            len - OLD_FOOTER_LEN as u64,
            OLD_FOOTER_LEN,
            VhdFooter::parse(tail.get(1..).unwrap_or_default()),
        ))
    } else {
        None
    };
    let head = file.read_up_to(0, FOOTER_LEN)?;
    let copy = (head.len() == FOOTER_LEN && VhdFooter::has_cookie(&head))
        .then(|| VhdFooter::parse(&head))
        .map(|r| {
            r.and_then(|f| {
                if f.disk_type == DiskType::Fixed {
                    Err(Error::corrupt(
                        Format::Vhd,
                        Detail::Invalid(
                            "the footer copy at offset 0 describes a fixed disk, which has no copy"
                                .into(),
                        ),
                    ))
                } else {
                    Ok(f)
                }
            })
        });
    let end_ok = matches!(&end, Some((_, _, Ok(f))) if f.checksum_ok());
    let copy_ok = matches!(&copy, Some(Ok(f)) if f.checksum_ok());
    let use_copy = |footer: VhdFooter, w: &mut Warnings, why: String| -> Result<ChosenFooter> {
        w.tolerate(
            WarningKind::RedundantCopyUsed,
            Error::corrupt(
                Format::Vhd,
                Detail::Invalid(format!("{why}; using the footer copy at offset 0")),
            )
            .at(len.saturating_sub(FOOTER_LEN as u64))
            .in_file(path),
        )?;
        Ok(ChosenFooter {
            footer,
            offset: 0,
            len: FOOTER_LEN,
        })
    };
    let why_end = match &end {
        None => "no footer at the end of the file".to_owned(),
        Some((_, _, Err(e))) => format!("the footer at the end is damaged ({})", e.detail()),
        Some((_, _, Ok(f))) => format!(
            "the footer at the end is damaged ({})",
            f.checksum_error().detail()
        ),
    };
    match (end, copy) {
        (Some((offset, flen, Ok(footer))), _) if end_ok => Ok(ChosenFooter {
            footer,
            offset,
            len: flen,
        }),
        (_, Some(Ok(footer))) if copy_ok => use_copy(footer, w, why_end),
        (Some((offset, flen, Ok(footer))), _) => {
            w.tolerate(
                WarningKind::Checksum,
                footer.checksum_error().at(offset).in_file(path),
            )?;
            Ok(ChosenFooter {
                footer,
                offset,
                len: flen,
            })
        }
        (_, Some(Ok(footer))) => {
            w.tolerate(
                WarningKind::Checksum,
                footer.checksum_error().at(0).in_file(path),
            )?;
            use_copy(footer, w, why_end)
        }
        (Some((offset, _, Err(e))), _) => Err(e.relative_to(offset).in_file(path)),
        (None, Some(Err(e))) => Err(e.relative_to(0).in_file(path)),
        (None, None) => Err(Error::not_this_format(
            Format::Vhd,
            Detail::BadSignature {
                what: "footer cookie in the last 512 bytes or at offset 0",
                expected: "conectix".into(),
                found: crate::error::hex_preview(&tail),
            },
        )
        .at(len.saturating_sub(FOOTER_LEN as u64))
        .in_file(path)),
    }
}

/// Makes an error's offset, relative to a structure, absolute in the file.
trait RelativeTo {
    fn relative_to(self, base: u64) -> Self;
}

impl RelativeTo for Error {
    fn relative_to(self, base: u64) -> Self {
        let offset = self.offset().unwrap_or(0);
        self.at(base.saturating_add(offset))
    }
}

/// Opens a VHD from its file (the probe found a footer or its copy).
pub(crate) fn open(ctx: &OpenContext<'_>, file: ImageFile) -> Result<DiskImage> {
    let path = file.path().to_path_buf();
    let mut w = Warnings::new(ctx.options());
    let chosen = choose_footer(&file, &mut w)?;
    let footer = &chosen.footer;
    let size = footer.current_size;
    let mut info_props: Vec<(String, String)> = Vec::new();
    let (layout, header, locators) = match footer.disk_type {
        DiskType::Fixed => {
            // A fixed disk's data is the bytes before the footer. A copy
            // cut short before its footer (a Windows-made VHD was seen 64
            // KiB short) opens with a warning: the disk keeps the size the
            // footer gives, and a read past the data's end is an
            // out-of-bounds error naming the file and offset.
            let data_end = chosen.offset;
            if size > data_end {
                w.tolerate(
                    WarningKind::Other,
                    Error::new(
                        ErrorKind::OutOfBounds,
                        Format::Vhd,
                        Detail::Invalid(format!(
                            "the fixed disk's data ends at {data_end:#x}, where the footer is: \
                             {} bytes short of its current size of {size} bytes; reads past \
                             {data_end:#x} fail",
                            size - data_end
                        )),
                    )
                    .at(data_end)
                    .in_file(&path),
                )?;
                info_props.push(("data_shortfall".into(), (size - data_end).to_string()));
            }
            (Layout::Fixed { data_end }, None, Vec::new())
        }
        DiskType::Dynamic | DiskType::Differencing => {
            let at = footer.data_offset;
            let bytes = file.read_vec(at, HEADER_LEN as u64).map_err(|_| {
                Error::corrupt(
                    Format::Vhd,
                    Detail::Truncated {
                        what: "dynamic disk header".into(),
                        needed: HEADER_LEN as u64,
                        available: file.len().saturating_sub(at),
                    },
                )
                .at(at)
                .in_file(&path)
            })?;
            let header =
                DynamicHeader::parse(&bytes).map_err(|e| e.relative_to(at).in_file(&path))?;
            if !header.checksum_ok() {
                w.tolerate(
                    WarningKind::Checksum,
                    header.checksum_error().at(at + 36).in_file(&path),
                )?;
            }
            let bat = Bat::read(&file, &header, at, size).map_err(|e| e.in_file(&path))?;
            let locators = if footer.disk_type == DiskType::Differencing {
                read_locators(&file, &header.parent_locators)?
            } else {
                Vec::new()
            };
            info_props.push(("block_size".into(), bat.block_size().to_string()));
            info_props.push((
                "max_table_entries".into(),
                header.max_table_entries.to_string(),
            ));
            info_props.push((
                "allocated_blocks".into(),
                bat.allocated_blocks().to_string(),
            ));
            (Layout::Sparse(bat), Some(header), locators)
        }
    };
    let parent = match (&header, footer.disk_type) {
        (Some(h), DiskType::Differencing) if !ctx.options().no_parents => {
            let hints = parent_hints(&locators, &h.parent_unicode_name);
            let parent = ctx.open_parent(Format::Vhd, &path, &hints)?;
            check_parent(&parent, h, size, &path, &mut w)?;
            Some(parent)
        }
        _ => None,
    };
    let mut info = ImageInfo::new(&path, Format::Vhd, size, 512);
    info.subformat = Some(footer.disk_type.as_str().to_owned());
    describe(&mut info, &chosen, header.as_ref(), &locators);
    for (k, v) in info_props {
        info.property(k, v);
    }
    info.parent = parent.as_ref().map(|p| Box::new(p.info().clone()));
    info.warnings = w.into_vec();
    let device = VhdImage {
        file,
        size,
        layout,
        parent,
    };
    Ok(DiskImage::new(Arc::new(device), info))
}

/// Checks the parent against the child's record of it: its unique ID (a
/// VHD parent's footer) and its size.
fn check_parent(
    parent: &DiskImage,
    header: &DynamicHeader,
    size: u64,
    path: &Path,
    w: &mut Warnings,
) -> Result<()> {
    let expected = Guid::from_be_bytes(header.parent_unique_id).to_string();
    let found = parent
        .info()
        .properties
        .iter()
        .find(|(k, _)| k == "unique_id")
        .map(|(_, v)| v.clone());
    if parent.format() == Format::Vhd && found.as_deref() != Some(expected.as_str()) {
        w.tolerate(
            WarningKind::ParentMismatch,
            Error::corrupt(
                Format::Vhd,
                Detail::BadSignature {
                    what: "parent unique ID",
                    expected,
                    found: found.unwrap_or_else(|| "none".into()),
                },
            )
            .at(40)
            .in_file(path),
        )?;
    }
    if parent.size() != size {
        w.tolerate(
            WarningKind::ParentMismatch,
            Error::bad_value(
                Format::Vhd,
                "parent size",
                parent.size(),
                format!("{size} bytes, the child's size"),
            )
            .in_file(path),
        )?;
    }
    Ok(())
}

/// Adds what `info` shows about the footer, header and parent locators.
fn describe(
    info: &mut ImageInfo,
    chosen: &ChosenFooter,
    header: Option<&DynamicHeader>,
    locators: &[ParentLocator],
) {
    let f = &chosen.footer;
    let app = four_cc(f.creator_application);
    info.property("disk_type", f.disk_type.as_str());
    info.property(
        "creator_application",
        match creator_name(f.creator_application) {
            Some(n) => format!("{app} ({n})"),
            None => app,
        },
    );
    info.property(
        "creator_version",
        format!("{}.{}", f.creator_version >> 16, f.creator_version & 0xffff),
    );
    let host = four_cc(f.creator_host_os);
    info.property(
        "creator_host_os",
        match host_name(f.creator_host_os) {
            Some(n) => format!("{host} ({n})"),
            None => host,
        },
    );
    info.property("time_stamp", format_time_stamp(f.time_stamp));
    info.property("unique_id", Guid::from_be_bytes(f.unique_id).to_string());
    info.property("saved_state", if f.saved_state != 0 { "yes" } else { "no" });
    info.property("current_size", f.current_size);
    info.property("original_size", f.original_size);
    let g = f.disk_geometry;
    info.property(
        "geometry_chs",
        format!("{}/{}/{}", g.cylinders, g.heads, g.sectors_per_track),
    );
    info.property("chs_size", g.size());
    info.property("features", format!("{:#x}", f.features));
    info.property(
        "footer",
        match (chosen.offset, chosen.len) {
            (0, _) => "copy at offset 0 (the end-of-file footer is damaged)".to_owned(),
            (o, OLD_FOOTER_LEN) => {
                format!("at {o:#x} (511-byte footer of old Virtual PC versions)")
            }
            (o, _) => format!("at {o:#x}"),
        },
    );
    let Some(h) = header else { return };
    if f.disk_type == DiskType::Differencing {
        info.property(
            "parent_unique_id",
            Guid::from_be_bytes(h.parent_unique_id).to_string(),
        );
        info.property("parent_time_stamp", format_time_stamp(h.parent_time_stamp));
        info.property("parent_name", &h.parent_unicode_name);
        for (i, l) in locators.iter().enumerate() {
            let what = match &l.path {
                Some(p) => format!("{} {p}", l.code),
                None => format!(
                    "{} ({} bytes at {:#x}, not decoded)",
                    l.code, l.length, l.offset
                ),
            };
            info.property(format!("parent_locator.{i}"), what);
        }
    }
}

#[cfg(test)]
mod tests;
