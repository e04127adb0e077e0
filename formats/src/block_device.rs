//! The [`BlockDevice`] contract every container reader fulfils, its
//! allocation-map types, and the adapters built on it: a [`SliceDevice`]
//! (a byte range of another device, e.g. a partition), a [`DeviceReader`]
//! (`Read + Seek` for third-party crates), and a [`MemoryDevice`].
//!
//! Reads are positional on `&self` so that many threads can read one image
//! at once; a `&mut self` + seek design was rejected because concurrent
//! readers would race on the position or end up behind one global lock.
//! `Read + Seek` lives only at the edge, in [`DeviceReader`].

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use crate::error::{Error, Format, Result};

/// What a range of a virtual disk holds, as [`BlockDevice::map`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtentKind {
    /// Allocated data stored in this image's own file(s).
    Data,
    /// Known to read as zeros (a zero grain, a ZERO block state, a sparse hole).
    Zero,
    /// Not allocated and with no parent to read from: reads as zeros.
    Unallocated,
    /// Not allocated here; read from the parent at this depth (1 = the direct parent).
    Parent {
        /// How many links up the chain the data comes from.
        depth: u32,
    },
    /// Allocated data stored compressed (e.g. a streamOptimized VMDK grain).
    Compressed,
}

impl ExtentKind {
    /// A stable, lower-case name for JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ExtentKind::Data => "data",
            ExtentKind::Zero => "zero",
            ExtentKind::Unallocated => "unallocated",
            ExtentKind::Parent { .. } => "parent",
            ExtentKind::Compressed => "compressed",
        }
    }

    /// Whether the range reads as zeros without touching any file.
    pub fn reads_as_zero(self) -> bool {
        matches!(self, ExtentKind::Zero | ExtentKind::Unallocated)
    }
}

/// One run of the allocation map: `len` bytes from virtual `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Start, in bytes from the start of the virtual disk.
    pub offset: u64,
    /// Length in bytes (never zero in a map).
    pub len: u64,
    /// What the range holds.
    pub kind: ExtentKind,
}

impl Extent {
    /// The first byte after this extent.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// Appends an extent to a map, merging it into the last one when they touch
/// and have the same kind. Empty extents are dropped.
pub fn push_extent(map: &mut Vec<Extent>, extent: Extent) {
    if extent.len == 0 {
        return;
    }
    if let Some(last) = map.last_mut() {
        if last.kind == extent.kind && last.end() == extent.offset {
            last.len += extent.len;
            return;
        }
    }
    map.push(extent);
}

/// Turns a parent's map into what a child reports for the same range when
/// the child holds none of it: the parent's own data becomes
/// `Parent { depth: 1 }`, deeper links move one further away, and zeros stay
/// zeros (a backup tool can skip them whichever link they come from).
pub fn inherit_from_parent(kind: ExtentKind) -> ExtentKind {
    match kind {
        ExtentKind::Data | ExtentKind::Compressed => ExtentKind::Parent { depth: 1 },
        ExtentKind::Parent { depth } => ExtentKind::Parent {
            depth: depth.saturating_add(1),
        },
        k @ (ExtentKind::Zero | ExtentKind::Unallocated) => k,
    }
}

/// Reads `buf.len()` bytes at `offset` that a child does not hold itself:
/// from its `parent` where there is one and as far as it reaches, zeros
/// past a smaller parent's end or without a parent.
pub fn read_from_parent(
    parent: Option<&dyn BlockDevice>,
    buf: &mut [u8],
    offset: u64,
) -> Result<()> {
    let from_parent = parent.map_or(0, |p| {
        usize::try_from(p.size().saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(buf.len())
    });
    let (head, tail) = buf.split_at_mut(from_parent);
    if let Some(p) = parent.filter(|_| !head.is_empty()) {
        p.read_at(head, offset)?;
    }
    tail.fill(0);
    Ok(())
}

/// Appends what a child reports for `len` bytes at `offset` that it does not
/// hold itself: the parent's map with [`inherit_from_parent`] kinds, and
/// `Unallocated` for any part beyond the end of a smaller parent (it reads
/// as zeros).
pub fn push_from_parent(
    map: &mut Vec<Extent>,
    parent: &dyn BlockDevice,
    offset: u64,
    len: u64,
) -> Result<()> {
    let avail = parent.size().saturating_sub(offset).min(len);
    if avail > 0 {
        for e in parent.map(offset, avail)? {
            push_extent(
                map,
                Extent {
                    kind: inherit_from_parent(e.kind),
                    ..e
                },
            );
        }
    }
    push_extent(
        map,
        Extent {
            offset: offset + avail,
            len: len - avail,
            kind: ExtentKind::Unallocated,
        },
    );
    Ok(())
}

/// Bytes of a virtual disk that are stored verbatim in an image file:
/// `len` bytes of `file` from byte `offset`, which [`BlockDevice::read_at`]
/// would return unchanged. Lets a copier hand the copy to the kernel
/// (`copy_file_range`) instead of reading into a buffer and writing it out.
#[derive(Debug, Clone, Copy)]
pub struct FileRange<'a> {
    /// The image file holding the bytes (opened read-only).
    pub file: &'a File,
    /// Where they start in that file.
    pub offset: u64,
    /// How many bytes (never zero).
    pub len: u64,
}

impl FileRange<'_> {
    /// The same range without its first `by` bytes (`None` when nothing is left).
    pub fn skip(self, by: u64) -> Option<Self> {
        (by < self.len).then(|| FileRange {
            offset: self.offset + by,
            len: self.len - by,
            ..self
        })
    }
}

/// A virtual disk that can be read at any byte offset, from many threads.
///
/// Implementations must:
/// - fill the whole buffer or fail (a read past [`size`](BlockDevice::size) is an
///   [`ErrorKind::OutOfBounds`](crate::ErrorKind::OutOfBounds) error, never a short read);
/// - read unallocated ranges as zeros, or from the parent in a chain;
/// - return from [`map`](BlockDevice::map) extents that are sorted, coalesced,
///   non-empty and exactly cover the requested range.
pub trait BlockDevice: Send + Sync {
    /// The virtual size in bytes.
    fn size(&self) -> u64;

    /// The logical sector size in bytes (512, 4096; 2048 for optical media).
    fn sector_size(&self) -> u32 {
        512
    }

    /// Fills `buf` with the bytes at virtual `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// The allocation map of `len` bytes from `offset` (like VDDK's
    /// QueryAllocatedBlocks and `qemu-img map`).
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>>;

    /// Where the bytes from virtual `offset` are stored verbatim in one image
    /// file: the run from `offset` (at most `len` bytes; possibly fewer) that
    /// is one contiguous byte range of one file, or `None` when that run is
    /// not stored so (zeros, compressed, from a parent, patched in memory,
    /// in memory altogether, past the end of a truncated file) or the
    /// format does not say. Only an optimisation for whole-disk copies
    /// (`diskimage dump`); `read_at` stays the reference. The default says
    /// `None`.
    fn file_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
        let _ = (offset, len);
        None
    }

    /// What [`file_range`](BlockDevice::file_range) says, for copies of
    /// single files out of a file system (`diskimage extract`), where the
    /// kernel copy pays off wherever the bytes are verbatim: also in a raw
    /// image, which gives no `file_range` because a whole-disk copy
    /// (`dump`) reads it instead, to leave its zeros as holes. The default
    /// is `file_range`.
    fn verbatim_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
        self.file_range(offset, len)
    }
}

/// How much of a device [`stored_verbatim`] asks the map for at a time.
const MAP_WINDOW: u64 = 1 << 30;

/// Whether `dev` stores its data verbatim in image files: its first
/// allocated extent is [`ExtentKind::Data`] that
/// [`BlockDevice::verbatim_range`] finds in a file. Not so for compressed
/// images, for data in a parent, or for a disk with no data at all. How a
/// disk's first data is stored is taken for how all of it is (`mount
/// --raw` and `dump -o` choose their copy by it).
pub fn stored_verbatim(dev: &dyn BlockDevice) -> bool {
    let size = dev.size();
    let mut at = 0;
    while at < size {
        let len = MAP_WINDOW.min(size - at);
        let Ok(extents) = dev.map(at, len) else {
            return false;
        };
        for e in extents {
            match e.kind {
                ExtentKind::Zero | ExtentKind::Unallocated => {}
                ExtentKind::Data => return dev.verbatim_range(e.offset, e.len).is_some(),
                ExtentKind::Parent { .. } | ExtentKind::Compressed => return false,
            }
        }
        at += len;
    }
    false
}

/// A pointer to a device is a device (`Arc<dyn BlockDevice>`, `Box<..>`, `&..`).
macro_rules! forward_through_pointer {
    ($($ptr:ty),*) => {$(
        impl<T: BlockDevice + ?Sized> BlockDevice for $ptr {
            fn size(&self) -> u64 {
                (**self).size()
            }
            fn sector_size(&self) -> u32 {
                (**self).sector_size()
            }
            fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
                (**self).read_at(buf, offset)
            }
            fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
                (**self).map(offset, len)
            }
            fn file_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
                (**self).file_range(offset, len)
            }
            fn verbatim_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
                (**self).verbatim_range(offset, len)
            }
        }
    )*};
}

forward_through_pointer!(Arc<T>, Box<T>, &T);

/// Checks that `len` bytes at `offset` lie within a device of `size` bytes.
pub fn check_range(format: Format, offset: u64, len: u64, size: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::out_of_range(
            format,
            "virtual disk",
            offset,
            len,
            size,
        )),
    }
}

/// The map of a device whose every byte is `kind`, clipped to the request.
pub fn uniform_map(
    format: Format,
    size: u64,
    offset: u64,
    len: u64,
    kind: ExtentKind,
) -> Result<Vec<Extent>> {
    check_range(format, offset, len, size)?;
    let mut map = Vec::new();
    push_extent(&mut map, Extent { offset, len, kind });
    Ok(map)
}

/// A byte range of another device, itself a device (a partition, a volume).
#[derive(Clone)]
pub struct SliceDevice {
    inner: Arc<dyn BlockDevice>,
    start: u64,
    len: u64,
}

impl SliceDevice {
    /// The `len` bytes of `inner` from `start`; fails when they do not fit.
    pub fn new(inner: Arc<dyn BlockDevice>, start: u64, len: u64) -> Result<Self> {
        check_range(Format::Probe, start, len, inner.size())?;
        Ok(SliceDevice { inner, start, len })
    }

    /// A slice that may reach past the end of `inner` (a partition of an
    /// image cut short): reads of the part beyond `inner`'s end fail with
    /// `inner`'s out-of-bounds error. Only `start + len` must fit in 64 bits.
    pub fn reaching_past(inner: Arc<dyn BlockDevice>, start: u64, len: u64) -> Result<Self> {
        if start.checked_add(len).is_none() {
            return Err(Error::out_of_range(
                Format::Probe,
                "slice",
                start,
                len,
                inner.size(),
            ));
        }
        Ok(SliceDevice { inner, start, len })
    }

    /// Where the slice starts on the inner device.
    pub fn start(&self) -> u64 {
        self.start
    }
}

impl BlockDevice for SliceDevice {
    fn size(&self) -> u64 {
        self.len
    }
    fn sector_size(&self) -> u32 {
        self.inner.sector_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(Format::Probe, offset, buf.len() as u64, self.len)?;
        self.inner.read_at(buf, self.start + offset)
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(Format::Probe, offset, len, self.len)?;
        let mut map = self.inner.map(self.start + offset, len)?;
        for e in &mut map {
            e.offset -= self.start;
        }
        Ok(map)
    }
    fn file_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
        let len = len.min(self.len.checked_sub(offset)?);
        self.inner.file_range(self.start.checked_add(offset)?, len)
    }
    fn verbatim_range(&self, offset: u64, len: u64) -> Option<FileRange<'_>> {
        let len = len.min(self.len.checked_sub(offset)?);
        self.inner
            .verbatim_range(self.start.checked_add(offset)?, len)
    }
}

/// A device over bytes in memory: for tests, fuzzing, and small images.
#[derive(Clone)]
pub struct MemoryDevice {
    data: Arc<[u8]>,
    sector_size: u32,
}

impl MemoryDevice {
    /// A device holding `data`, with 512-byte sectors.
    pub fn new(data: impl Into<Arc<[u8]>>) -> Self {
        MemoryDevice {
            data: data.into(),
            sector_size: 512,
        }
    }

    /// The same device reporting another logical sector size.
    #[must_use]
    pub fn with_sector_size(mut self, sector_size: u32) -> Self {
        self.sector_size = sector_size;
        self
    }
}

impl BlockDevice for MemoryDevice {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn sector_size(&self) -> u32 {
        self.sector_size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(Format::Probe, offset, buf.len() as u64, self.size())?;
        // In range: offset + len <= data.len(), which is a usize.
        let start = usize::try_from(offset).map_err(|_| {
            Error::out_of_range(
                Format::Probe,
                "memory",
                offset,
                buf.len() as u64,
                self.size(),
            )
        })?;
        let src = self
            .data
            .get(start..start + buf.len())
            .ok_or_else(|| Error::out_of_range(Format::Probe, "memory", offset, 0, self.size()))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        uniform_map(Format::Probe, self.size(), offset, len, ExtentKind::Data)
    }
}

/// `Read + Seek` over any device, for crates that want a cursor.
///
/// A read is all or nothing: one that reaches past the end of the device
/// fails with an `io::Error` of kind `Other` whose inner error is an
/// [`ErrorKind::OutOfBounds`](crate::ErrorKind::OutOfBounds) error naming
/// the offset, never a short read or a read of 0 bytes. File-system crates
/// take 0 bytes for the end of a file and `UnexpectedEof` for the end of a
/// directory (`fatfs` does both), so a volume that claims to be larger than
/// its image would otherwise hand out files and directories cut short
/// without an error. Errors from the device come back as `io::Error` whose
/// inner error is the device's [`crate::Error`]. Only an empty
/// buffer reads 0 bytes.
pub struct DeviceReader {
    device: Arc<dyn BlockDevice>,
    pos: u64,
}

impl DeviceReader {
    /// A cursor at offset 0 of `device`.
    pub fn new(device: Arc<dyn BlockDevice>) -> Self {
        DeviceReader { device, pos: 0 }
    }

    /// The device this cursor reads.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.device
    }
}

impl Read for DeviceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let size = self.device.size();
        let len = buf.len() as u64;
        if self.pos.checked_add(len).is_none_or(|end| end > size) {
            return Err(io::Error::other(Error::out_of_range(
                Format::Probe,
                "device",
                self.pos,
                len,
                size,
            )));
        }
        self.device
            .read_at(buf, self.pos)
            .map_err(io::Error::other)?;
        self.pos += len;
        Ok(buf.len())
    }
}

impl Seek for DeviceReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.device.size().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn dev() -> Arc<dyn BlockDevice> {
        Arc::new(MemoryDevice::new(
            (0..=255u8).cycle().take(4096).collect::<Vec<_>>(),
        ))
    }

    #[test]
    fn read_past_end_is_an_error_not_a_short_read() {
        let d = dev();
        let mut buf = [0u8; 16];
        let e = d.read_at(&mut buf, 4090).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfBounds);
        assert!(d.read_at(&mut buf, u64::MAX - 4).is_err());
    }

    #[test]
    fn slice_reads_and_maps_relative_to_its_start() {
        let s = SliceDevice::new(dev(), 1024, 512).unwrap();
        let mut buf = [0u8; 4];
        s.read_at(&mut buf, 1).unwrap();
        assert_eq!(buf, [1, 2, 3, 4]);
        assert!(s.read_at(&mut buf, 510).is_err());
        assert_eq!(
            s.map(0, 512).unwrap(),
            vec![Extent {
                offset: 0,
                len: 512,
                kind: ExtentKind::Data
            }]
        );
        assert!(SliceDevice::new(dev(), 4000, 200).is_err());
    }

    #[test]
    fn reader_reads_seeks_and_fails_past_the_end() {
        let mut r = DeviceReader::new(dev());
        r.seek(SeekFrom::End(-3)).unwrap();
        let mut buf = [0u8; 3];
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf, &[253, 254, 255]);
        // At the end and across it: an error naming the offset, not 0 bytes.
        for (at, len) in [(4096, 1), (4090, 8), (1 << 40, 512)] {
            r.seek(SeekFrom::Start(at)).unwrap();
            let e = r.read(&mut vec![0u8; len]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Other);
            let inner = e.into_inner().unwrap().downcast::<Error>().unwrap();
            assert_eq!(inner.kind(), ErrorKind::OutOfBounds);
            assert_eq!(inner.offset(), Some(at));
        }
        assert_eq!(r.read(&mut []).unwrap(), 0);
        assert!(r.seek(SeekFrom::Current(-(1 << 41))).is_err());
    }

    #[test]
    fn push_extent_coalesces_touching_runs_of_one_kind() {
        let mut m = Vec::new();
        let e = |offset, len, kind| Extent { offset, len, kind };
        push_extent(&mut m, e(0, 10, ExtentKind::Data));
        push_extent(&mut m, e(10, 5, ExtentKind::Data));
        push_extent(&mut m, e(15, 0, ExtentKind::Zero));
        push_extent(&mut m, e(15, 5, ExtentKind::Zero));
        push_extent(&mut m, e(20, 5, ExtentKind::Parent { depth: 1 }));
        push_extent(&mut m, e(25, 5, ExtentKind::Parent { depth: 2 }));
        assert_eq!(m.len(), 4);
        assert_eq!(m[0], e(0, 15, ExtentKind::Data));
    }
}
