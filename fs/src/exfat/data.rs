//! Reading a file's data from its cluster runs: `Read + Seek` at the
//! edge, positional reads on the device underneath. Bytes from
//! ValidDataLength to DataLength read as zeros, without touching the
//! clusters (exFAT specification §7.6.5: their content is undefined).

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use diskimage_formats::BlockDevice;

use super::boot_sector::BootSector;
use super::cluster_chain::Run;
use super::FS;
use crate::error::Error;

/// A `Read + Seek` over one file's data.
pub struct ExFatFile {
    device: Arc<dyn BlockDevice>,
    /// (byte offset in the file, byte offset on the volume, length).
    pieces: Vec<(u64, u64, u64)>,
    size: u64,
    valid: u64,
    pos: u64,
}

impl ExFatFile {
    /// A reader of `size` bytes (the first `valid` of them stored) in the
    /// clusters `runs`, which must cover `valid` bytes and lie on the
    /// volume.
    pub fn new(
        device: Arc<dyn BlockDevice>,
        boot: &BootSector,
        runs: &[Run],
        size: u64,
        valid: u64,
        path: &str,
    ) -> crate::Result<Self> {
        let cluster = boot.cluster_size();
        let mut pieces = Vec::with_capacity(runs.len());
        let mut at = 0u64;
        for r in runs {
            if at >= valid {
                break;
            }
            let len = r.count.saturating_mul(cluster).min(valid - at);
            pieces.push((at, boot.cluster_offset(r.first), len));
            at += len;
        }
        if at < valid {
            return Err(Error::corrupt(
                FS,
                Some(path),
                format!("clusters hold {at} bytes, ValidDataLength is {valid}"),
            ));
        }
        Ok(ExFatFile {
            device,
            pieces,
            size,
            valid,
            pos: 0,
        })
    }
}

impl Read for ExFatFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.valid {
            let n = usize::try_from((self.size - self.pos).min(buf.len() as u64)).unwrap_or(0);
            buf.get_mut(..n).unwrap_or_default().fill(0);
            self.pos += n as u64;
            return Ok(n);
        }
        let i = self.pieces.partition_point(|p| p.0 + p.2 <= self.pos);
        let Some(&(start, volume, len)) = self.pieces.get(i) else {
            return Ok(0);
        };
        let within = self.pos - start;
        let n = usize::try_from((len - within).min(buf.len() as u64)).unwrap_or(0);
        let dst = buf.get_mut(..n).unwrap_or_default();
        self.device
            .read_at(dst, volume + within)
            .map_err(|e| Error::from(e).into_io())?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ExFatFile {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = crate::file_system::seek_position(self.pos, self.size, to)?;
        Ok(self.pos)
    }
}
