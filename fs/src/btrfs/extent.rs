//! A file's data from its file extent items: inline (maybe compressed),
//! regular (maybe compressed), holes (no item, or a zero address) and
//! preallocated ranges (zeros), read through a window of decoded bytes.

use std::io::{Read, Seek, SeekFrom};

use super::compress;
use super::items::{ExtentKind, FileExtent};
use super::tree::{Root, Volume};
use super::FS;
use crate::error::{Error, Result};
use crate::file_system::{seek_position, StoredRun};

/// Bytes of an uncompressed extent read at once.
const WINDOW: u64 = 256 << 10;

/// One file extent item at its file offset.
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    pub at: u64,
    pub extent: FileExtent,
}

impl Placed {
    /// How many file bytes it covers.
    fn len(&self) -> u64 {
        match &self.extent.kind {
            ExtentKind::Inline(_) => self.extent.ram_bytes,
            ExtentKind::Regular { num_bytes, .. } => *num_bytes,
        }
    }
}

/// Refuses what the reader does not decode (encryption, other encodings).
pub(crate) fn check_supported(e: &FileExtent, path: &str) -> Result<()> {
    if e.encryption != 0 || e.other_encoding != 0 {
        return Err(Error::unsupported(
            FS,
            Some(path),
            format!(
                "file extent with encryption {} / encoding {}",
                e.encryption, e.other_encoding
            ),
        ));
    }
    if e.compression > 3 {
        return Err(Error::unsupported(
            FS,
            Some(path),
            format!("file extent with compression type {}", e.compression),
        ));
    }
    Ok(())
}

/// A file's data as `Read + Seek`.
pub(crate) struct ExtentReader<'a> {
    vol: &'a Volume,
    csum: Option<Root>,
    path: String,
    extents: Vec<Placed>,
    size: u64,
    pos: u64,
    /// Decoded bytes from a file offset.
    window: Option<(u64, Vec<u8>)>,
}

impl<'a> ExtentReader<'a> {
    /// A reader of `size` bytes over `extents` (sorted by offset); `csum`
    /// is the checksum tree (`None`: data not checked).
    pub fn new(
        vol: &'a Volume,
        csum: Option<Root>,
        path: &str,
        extents: Vec<Placed>,
        size: u64,
    ) -> Self {
        ExtentReader {
            vol,
            csum,
            path: path.to_string(),
            extents,
            size,
            pos: 0,
            window: None,
        }
    }

    /// The extent covering `pos`, or the offset where the hole at `pos` ends.
    fn find(&self, pos: u64) -> std::result::Result<&Placed, u64> {
        let i = self.extents.partition_point(|p| p.at <= pos);
        if let Some(p) = i.checked_sub(1).and_then(|i| self.extents.get(i)) {
            if pos - p.at < p.len() {
                return Ok(p);
            }
        }
        Err(self
            .extents
            .get(i)
            .map_or(self.size, |n| n.at.min(self.size)))
    }

    /// Decodes the bytes around `pos` of extent `p` into the window.
    fn load(&self, p: &Placed, pos: u64) -> Result<Option<(u64, Vec<u8>)>> {
        let e = &p.extent;
        check_supported(e, &self.path)?;
        let bad = |what: String| Error::corrupt(FS, Some(&self.path), what);
        match &e.kind {
            ExtentKind::Inline(data) => {
                let out = if e.compression == 0 {
                    data.clone()
                } else {
                    compress::decompress(e.compression, data, e.ram_bytes, self.vol.sb.sectorsize)
                        .map_err(|w| bad(format!("inline extent: {w}")))?
                };
                Ok(Some((p.at, out)))
            }
            ExtentKind::Regular {
                prealloc,
                disk_bytenr,
                disk_num_bytes,
                offset,
                num_bytes,
            } => {
                if *prealloc || *disk_bytenr == 0 {
                    return Ok(None);
                }
                if e.compression != 0 {
                    if *disk_num_bytes > compress::MAX_EXTENT {
                        return Err(bad(format!(
                            "compressed extent of {disk_num_bytes} bytes at {disk_bytenr:#x}"
                        )));
                    }
                    let mut raw = vec![0u8; *disk_num_bytes as usize];
                    self.vol.read_logical(&mut raw, *disk_bytenr, 0)?;
                    self.vol
                        .verify_data(self.csum, *disk_bytenr, &raw, &self.path)?;
                    let out = compress::decompress(
                        e.compression,
                        &raw,
                        e.ram_bytes,
                        self.vol.sb.sectorsize,
                    )
                    .map_err(|w| bad(format!("extent at {disk_bytenr:#x}: {w}")))?;
                    let from = usize::try_from(*offset)
                        .unwrap_or(usize::MAX)
                        .min(out.len());
                    let to = from
                        .saturating_add(usize::try_from(*num_bytes).unwrap_or(usize::MAX))
                        .min(out.len());
                    return Ok(Some((p.at, out.get(from..to).unwrap_or_default().to_vec())));
                }
                // Uncompressed: a sector-aligned window around `pos`.
                let rel = pos - p.at;
                let wstart = rel - rel % WINDOW;
                let wlen = (*num_bytes - wstart).min(WINDOW);
                let sector = u64::from(self.vol.sb.sectorsize);
                let disk = disk_bytenr
                    .checked_add(*offset)
                    .and_then(|d| d.checked_add(wstart))
                    .ok_or_else(|| bad(format!("extent at {disk_bytenr:#x}: offset overflows")))?;
                let disk_end = disk_bytenr.saturating_add(*disk_num_bytes);
                let read_len = wlen.div_ceil(sector) * sector;
                let read_len = if disk.saturating_add(read_len) <= disk_end {
                    read_len
                } else {
                    wlen
                };
                let mut data = vec![0u8; usize::try_from(read_len).unwrap_or(0)];
                self.vol.read_logical(&mut data, disk, 0)?;
                self.vol.verify_data(self.csum, disk, &data, &self.path)?;
                data.truncate(usize::try_from(wlen).unwrap_or(0));
                Ok(Some((p.at + wstart, data)))
            }
        }
    }
}

impl Read for ExtentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.size - self.pos);
        if let Some((at, w)) = &self.window {
            if self.pos >= *at && self.pos - at < w.len() as u64 {
                let from = (self.pos - at) as usize;
                let n = (w.len() - from).min(want as usize);
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), w.get(from..from + n)) {
                    dst.copy_from_slice(src);
                }
                self.pos += n as u64;
                return Ok(n);
            }
        }
        let (n, window) = match self.find(self.pos) {
            Err(hole_end) => ((hole_end - self.pos).min(want).max(1), None),
            Ok(p) => {
                let end = p.at.saturating_add(p.len());
                match self.load(p, self.pos).map_err(Error::into_io)? {
                    None => ((end - self.pos).min(want), None),
                    Some((at, w)) => {
                        // Bytes the extent covers but its data lacks read as zeros.
                        if self.pos - at >= w.len() as u64 {
                            ((end - self.pos).min(want), None)
                        } else {
                            (0, Some((at, w)))
                        }
                    }
                }
            }
        };
        if let Some(w) = window {
            self.window = Some(w);
            return self.read(buf);
        }
        let n = (n as usize).min(buf.len());
        buf.get_mut(..n).unwrap_or_default().fill(0);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ExtentReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = seek_position(self.pos, self.size, to)?;
        Ok(self.pos)
    }
}

/// Where `size` bytes of a file are stored verbatim on the volume, when
/// every byte is in an uncompressed regular extent, from 0 on without gaps.
pub(crate) fn stored_runs(vol: &Volume, extents: &[Placed], size: u64) -> Option<Vec<StoredRun>> {
    let mut out = Vec::new();
    let mut done = 0u64;
    for p in extents {
        if done >= size {
            break;
        }
        let e = &p.extent;
        if p.at != done || e.compression != 0 || e.encryption != 0 || e.other_encoding != 0 {
            return None;
        }
        let ExtentKind::Regular {
            prealloc: false,
            disk_bytenr,
            offset,
            num_bytes,
            ..
        } = e.kind
        else {
            return None;
        };
        if disk_bytenr == 0 || num_bytes == 0 {
            return None;
        }
        let len = num_bytes.min(size - done);
        // Runs on the device the volume was opened by: a file with a
        // piece only on another device of a multi-device volume has none.
        for run in vol
            .chunks
            .map_on(disk_bytenr.checked_add(offset)?, len, vol.primary)?
        {
            let (phys, n) = (run.offset, run.len);
            match out.last_mut() {
                Some(StoredRun { at, len }) if *at + *len == phys => *len += n,
                _ => out.push(StoredRun { at: phys, len: n }),
            }
        }
        done += len;
    }
    (done == size && size > 0).then_some(out)
}
