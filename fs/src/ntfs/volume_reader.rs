//! The cursor the `ntfs` crate reads the volume through.
//!
//! `ntfs` 0.4 reads its structures with `binrw`, and some of those reads
//! panic instead of failing when the reader returns fewer bytes than asked
//! (a truncated volume: a record or index block past the end). This reader
//! never returns a short read: a read that would reach past the end of the
//! volume fails as a whole with `UnexpectedEof`, which the crate passes up
//! as an I/O error and we report as a typed error naming the offset.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use diskimage_formats::BlockDevice;

/// `Read + Seek` over a volume that reads all of a buffer or fails.
pub struct VolumeReader {
    device: Arc<dyn BlockDevice>,
    pos: u64,
}

impl VolumeReader {
    /// A cursor at offset 0 of `device`.
    pub fn new(device: Arc<dyn BlockDevice>) -> Self {
        VolumeReader { device, pos: 0 }
    }
}

impl Read for VolumeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let size = self.device.size();
        let end = self.pos.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > size) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at offset {} past the end of the {size}-byte volume",
                    buf.len(),
                    self.pos
                ),
            ));
        }
        self.device
            .read_at(buf, self.pos)
            .map_err(io::Error::other)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
}

impl Seek for VolumeReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = crate::file_system::seek_position(self.pos, self.device.size(), pos)?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_short_reads() {
        let dev: Arc<dyn BlockDevice> =
            Arc::new(diskimage_formats::MemoryDevice::new(vec![1u8; 100]));
        let mut r = VolumeReader::new(dev);
        r.seek(SeekFrom::Start(96)).unwrap();
        let mut b = [0u8; 8];
        assert_eq!(
            r.read(&mut b).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(r.read(&mut b[..4]).unwrap(), 4);
    }
}
