//! Reading a non-resident NTFS attribute value from its data runs, with
//! sparse runs, the initialized size, and LZNT1 compression units.
//!
//! The `ntfs` crate returns the raw stored bytes of a compressed
//! attribute without any error, so compressed values are read here: per
//! compression unit (16 clusters by default), a unit whose clusters are
//! all stored is raw data, one with stored clusters followed by sparse
//! ones is LZNT1, an all-sparse unit reads as zeros.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use diskimage_formats::BlockDevice;

use super::lznt1;
use crate::error::{Error, FsName};
use crate::runs::{read_runs, DataRun};

/// Largest compression unit read, in bytes (16 clusters of 64 KiB).
pub const MAX_UNIT_BYTES: u64 = 1 << 20;

/// A `Read + Seek` over a non-resident value.
pub struct RunReader {
    device: Arc<dyn BlockDevice>,
    runs: Vec<DataRun>,
    size: u64,
    initialized: u64,
    /// Compression unit size in bytes, for compressed values.
    unit: Option<u64>,
    pos: u64,
    cached: Option<(u64, Vec<u8>)>,
    path: String,
}

impl RunReader {
    /// A reader of a value of `size` bytes whose first `initialized` bytes
    /// are stored (the rest reads as zeros).
    pub fn new(
        device: Arc<dyn BlockDevice>,
        runs: Vec<DataRun>,
        size: u64,
        initialized: u64,
        unit: Option<u64>,
        path: &str,
    ) -> Result<Self, Error> {
        for r in &runs {
            if r.file_offset.checked_add(r.len).is_none() {
                return Err(Error::corrupt(
                    FsName::Ntfs,
                    Some(path),
                    format!(
                        "data run of {} bytes at value offset {:#x}",
                        r.len, r.file_offset
                    ),
                ));
            }
            if let Some(at) = r.at {
                if at.checked_add(r.len).is_none_or(|end| end > device.size()) {
                    return Err(Error::corrupt(
                        FsName::Ntfs,
                        Some(path),
                        format!(
                            "data run of {} bytes at {at:#x} lies past the end of the volume",
                            r.len
                        ),
                    )
                    .at(at));
                }
            }
        }
        if unit.is_some_and(|u| u == 0 || u > MAX_UNIT_BYTES) {
            return Err(Error::unsupported(
                FsName::Ntfs,
                Some(path),
                "compression unit size",
            ));
        }
        Ok(RunReader {
            device,
            runs,
            size,
            initialized: initialized.min(size),
            unit,
            pos: 0,
            cached: None,
            path: path.to_string(),
        })
    }

    /// Copies stored bytes of the value (no decompression) into `buf`.
    fn read_raw(&self, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        read_runs(self.device.as_ref(), &self.runs, buf, offset)
    }

    /// Stored bytes of `[start, start+len)` of the value.
    fn stored_len(&self, start: u64, len: u64) -> u64 {
        self.runs
            .iter()
            .filter(|r| r.at.is_some())
            .map(|r| {
                let (s, e) = (
                    r.file_offset.max(start),
                    (r.file_offset + r.len).min(start + len),
                );
                e.saturating_sub(s)
            })
            .sum()
    }

    /// The decompressed bytes of the compression unit starting at `start`.
    fn unit_bytes(&self, start: u64, unit: u64) -> Result<Vec<u8>, Error> {
        let n = usize::try_from(unit).unwrap_or(0);
        let stored = self.stored_len(start, unit);
        let mut raw =
            vec![0u8; usize::try_from(if stored == unit { unit } else { stored }).unwrap_or(0)];
        self.read_raw(&mut raw, start)?;
        if stored == unit || stored == 0 {
            raw.resize(n, 0);
            return Ok(raw);
        }
        let mut out = lznt1::decompress(&raw, n).map_err(|e| {
            Error::corrupt(
                FsName::Ntfs,
                Some(&self.path),
                format!(
                    "LZNT1 data of the unit at {start:#x}: {} (input offset {})",
                    e.what, e.offset
                ),
            )
        })?;
        out.resize(n, 0);
        Ok(out)
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<usize, Error> {
        if offset >= self.size {
            return Ok(0);
        }
        let n = usize::try_from((self.size - offset).min(buf.len() as u64)).unwrap_or(0);
        let Some(buf) = buf.get_mut(..n) else {
            return Ok(0);
        };
        match self.unit {
            None => self.read_raw(buf, offset)?,
            Some(unit) => {
                let mut done = 0usize;
                while done < n {
                    let at = offset + done as u64;
                    let ustart = at - at % unit;
                    if self.cached.as_ref().is_none_or(|(s, _)| *s != ustart) {
                        let bytes = self.unit_bytes(ustart, unit)?;
                        self.cached = Some((ustart, bytes));
                    }
                    let Some((_, bytes)) = &self.cached else {
                        break;
                    };
                    let within = usize::try_from(at - ustart).unwrap_or(0);
                    let src = bytes.get(within..).unwrap_or_default();
                    let k = src.len().min(n - done);
                    if k == 0 {
                        break;
                    }
                    if let (Some(d), Some(s)) = (buf.get_mut(done..done + k), src.get(..k)) {
                        d.copy_from_slice(s);
                    }
                    done += k;
                }
            }
        }
        // Bytes past the initialized size read as zeros.
        if offset + n as u64 > self.initialized {
            let from = usize::try_from(self.initialized.saturating_sub(offset)).unwrap_or(0);
            if let Some(tail) = buf.get_mut(from..) {
                tail.fill(0);
            }
        }
        Ok(n)
    }
}

impl Read for RunReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.read_at(buf, self.pos).map_err(Error::into_io)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RunReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = crate::file_system::seek_position(self.pos, self.size, pos)?;
        Ok(self.pos)
    }
}
