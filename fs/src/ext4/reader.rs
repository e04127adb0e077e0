//! A regular file's data read through its block runs: holes and unwritten
//! extents read as zeros, each read goes to the device in one piece as far
//! as the run allows (not a block at a time).

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use diskimage_formats::BlockDevice;

use super::blocks::Run;

/// `Read + Seek` over a file's runs.
pub(crate) struct RunReader {
    device: Arc<dyn BlockDevice>,
    runs: Vec<Run>,
    block_size: u64,
    size: u64,
    pos: u64,
}

impl RunReader {
    /// A reader of `size` bytes mapped by `runs` (sorted by file block).
    pub fn new(device: Arc<dyn BlockDevice>, runs: Vec<Run>, block_size: u64, size: u64) -> Self {
        RunReader {
            device,
            runs,
            block_size,
            size,
            pos: 0,
        }
    }
}

impl Read for RunReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.size - self.pos);
        let block = self.pos / self.block_size;
        // The first run that ends after `block`.
        let i = self.runs.partition_point(|r| r.logical + r.len <= block);
        let n = match self.runs.get(i) {
            Some(r) if r.logical <= block => {
                let run_end = (r.logical + r.len) * self.block_size;
                let n = want.min(run_end - self.pos);
                let dst = buf
                    .get_mut(..usize::try_from(n).unwrap_or(0))
                    .unwrap_or_default();
                match r.physical {
                    Some(p) => {
                        let at = p * self.block_size + (self.pos - r.logical * self.block_size);
                        self.device
                            .read_at(dst, at)
                            .map_err(|e| io::Error::other(Box::new(e)))?;
                    }
                    None => dst.fill(0),
                }
                n
            }
            // A hole up to the next run (or the end of the file).
            next => {
                let hole_end = next.map_or(u64::MAX, |r| r.logical * self.block_size);
                let n = want.min(hole_end - self.pos);
                buf.get_mut(..usize::try_from(n).unwrap_or(0))
                    .unwrap_or_default()
                    .fill(0);
                n
            }
        };
        self.pos += n;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

impl Seek for RunReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = crate::file_system::seek_position(self.pos, self.size, pos)?;
        Ok(self.pos)
    }
}
