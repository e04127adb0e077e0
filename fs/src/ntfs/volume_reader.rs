//! The cursor the `ntfs` crate reads the volume through.
//!
//! `ntfs` 0.4 reads its structures with `binrw`, and some of those reads
//! panic instead of failing when the reader returns fewer bytes than asked
//! (a truncated volume: a record or index block past the end). This reader
//! never returns a short read: a read that would reach past the end of the
//! volume fails as a whole with `UnexpectedEof`, which the crate passes up
//! as an I/O error and we report as a typed error naming the offset.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};

use diskimage_formats::BlockDevice;

use super::mft::Mft;

/// Records read ahead at once when a record is not in [`RecordBlock`].
pub const RECORDS_AHEAD: usize = 16;

/// The volume bytes of the last read-ahead of records (position, bytes),
/// shared by the readers of one file system: the records of one
/// directory's files mostly lie together, so most come from memory.
pub type RecordBlock = Arc<Mutex<Option<(u64, Vec<u8>)>>>;

/// `Read + Seek` over a volume that reads all of a buffer or fails.
///
/// It also spares reads of MFT records: `ntfs` reads the `$MFT` file's own
/// record (the first) again each time it opens a file by number, which
/// this reader serves from a copy taken once; a read of a record's size
/// reads [`RECORDS_AHEAD`] records' worth ahead into a shared
/// [`RecordBlock`] (plain volume bytes: whatever lies there, served only
/// at the offsets read); and it keeps the raw bytes of the record read
/// last, so the caller can take from the record at hand what the crate
/// does not expose (the initialized size) without reading it again.
pub struct VolumeReader {
    device: Arc<dyn BlockDevice>,
    pos: u64,
    /// Position and raw bytes of the first MFT record, once read.
    mft0: Option<Arc<(u64, Vec<u8>)>>,
    /// Bytes read ahead for reads of a record's size.
    ahead: Option<RecordBlock>,
    /// Size of an MFT record (0: none kept).
    record_size: usize,
    /// Position and raw bytes of the last read of `record_size` bytes.
    last: Option<(u64, Vec<u8>)>,
    /// `$MFT`'s data runs: a record that crosses from one into the next
    /// is read from both.
    mft: Option<Arc<Mft>>,
}

impl VolumeReader {
    /// A cursor at offset 0 of `device`.
    pub fn new(device: Arc<dyn BlockDevice>) -> Self {
        VolumeReader {
            device,
            pos: 0,
            mft0: None,
            ahead: None,
            record_size: 0,
            last: None,
            mft: None,
        }
    }

    /// A cursor at offset 0 of `device` that keeps the last read of
    /// `record_size` bytes, serves reads of the record `mft0` (its
    /// position and raw bytes) from memory, and reads records ahead into
    /// `ahead`. A read of a record's size at the start of a record that
    /// crosses from one run of `mft` into the next is read through `mft`'s
    /// runs.
    pub fn with_records(
        device: Arc<dyn BlockDevice>,
        record_size: usize,
        mft0: Option<Arc<(u64, Vec<u8>)>>,
        ahead: Option<RecordBlock>,
        mft: Option<Arc<Mft>>,
    ) -> Self {
        VolumeReader {
            device,
            pos: 0,
            mft0,
            ahead,
            record_size,
            last: None,
            mft,
        }
    }

    /// Fills `buf` from the bytes read ahead, reading [`RECORDS_AHEAD`]
    /// records' worth from the current position (up to the end of the
    /// volume) when they do not hold it; false if that read fails (the
    /// caller then reads `buf` alone, for its error).
    fn read_ahead(&self, buf: &mut [u8]) -> bool {
        let Some(ahead) = &self.ahead else {
            return false;
        };
        let mut block = ahead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pos = self.pos;
        if held(&block, pos, buf.len()).is_none() {
            let want = self.record_size.saturating_mul(RECORDS_AHEAD) as u64;
            let len = want.min(self.device.size().saturating_sub(pos));
            let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
            if self.device.read_at(&mut bytes, pos).is_err() {
                return false;
            }
            *block = Some((pos, bytes));
        }
        match held(&block, pos, buf.len()) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }

    /// The raw bytes of the record last read at `pos`, if the last read
    /// of a record's size was there.
    pub fn record_at(&self, pos: u64) -> Option<&[u8]> {
        self.last
            .as_ref()
            .filter(|(at, _)| *at == pos)
            .map(|(_, b)| b.as_slice())
    }

    /// The MFT record of `file` with its fixups applied, if it was the
    /// record read last.
    pub fn fixed_record(&self, file: &ntfs::NtfsFile<'_>) -> Option<Vec<u8>> {
        let at = file.position().value().map_or(0, |p| p.get());
        self.record_at(at).and_then(super::mft::fixed_up)
    }
}

/// The `len` bytes at volume offset `pos` in the read-ahead `block`, if it
/// holds them all.
fn held(block: &Option<(u64, Vec<u8>)>, pos: u64, len: usize) -> Option<&[u8]> {
    let (at, bytes) = block.as_ref()?;
    let from = usize::try_from(pos.checked_sub(*at)?).ok()?;
    bytes.get(from..from.checked_add(len)?)
}

impl Read for VolumeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let size = self.device.size();
        let end = self.pos.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > size) {
            // The device's typed out-of-bounds error inside, which
            // `Error::from_io` recovers (kind Device, naming the offset).
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                diskimage_formats::Error::out_of_range(
                    diskimage_formats::Format::Probe,
                    "volume (the image ends before the file system does)",
                    self.pos,
                    buf.len() as u64,
                    size,
                ),
            ));
        }
        let is_record = buf.len() == self.record_size && self.record_size > 0;
        let crossing = self
            .mft
            .as_deref()
            .filter(|_| is_record)
            .and_then(|m| Some((m, m.crossing(self.pos)?)));
        match self.mft0.as_deref() {
            Some((at, bytes)) if *at == self.pos && bytes.len() == buf.len() => {
                buf.copy_from_slice(bytes);
            }
            _ if crossing.is_some() => {
                if let Some((mft, n)) = crossing {
                    let raw = mft.raw_record(n).map_err(crate::error::Error::into_io)?;
                    buf.copy_from_slice(&raw);
                }
            }
            _ if is_record && self.read_ahead(buf) => {}
            _ => self
                .device
                .read_at(buf, self.pos)
                .map_err(io::Error::other)?,
        }
        if is_record {
            let last = self.last.get_or_insert_with(|| (0, Vec::new()));
            last.0 = self.pos;
            last.1.clear();
            last.1.extend_from_slice(buf);
        }
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

    #[test]
    fn records_are_kept_and_the_first_served_from_memory() {
        let mut disk = vec![0u8; 4096];
        disk[1024..1028].copy_from_slice(b"FILE");
        let dev: Arc<dyn BlockDevice> = Arc::new(diskimage_formats::MemoryDevice::new(disk));
        // A copy of "record 0" at 1024 that differs from the device.
        let mft0 = Arc::new((1024u64, vec![7u8; 1024]));
        let ahead: RecordBlock = Arc::default();
        let mut r = VolumeReader::with_records(dev, 1024, Some(mft0), Some(ahead.clone()), None);
        let mut b = vec![0u8; 1024];
        r.seek(SeekFrom::Start(1024)).unwrap();
        r.read_exact(&mut b).unwrap();
        assert_eq!(b, vec![7u8; 1024]);
        assert_eq!(r.record_at(1024), Some(&[7u8; 1024][..]));
        r.seek(SeekFrom::Start(2048)).unwrap();
        r.read_exact(&mut b).unwrap();
        assert_eq!(r.record_at(1024), None);
        assert_eq!(r.record_at(2048), Some(&[0u8; 1024][..]));
        // Other sizes are not kept.
        r.read_exact(&mut b[..16]).unwrap();
        assert!(r.record_at(2048).is_some());
        // The read of the record at 2048 read ahead to the end of the volume.
        let held = ahead.lock().unwrap().as_ref().map(|(at, b)| (*at, b.len()));
        assert_eq!(held, Some((2048, 2048)));
        r.seek(SeekFrom::Start(3072)).unwrap();
        r.read_exact(&mut b).unwrap();
        assert_eq!(r.record_at(3072), Some(&[0u8; 1024][..]));
    }
}
