//! zisofs (Rock Ridge ZF `pz`): files stored as zlib-compressed blocks
//! behind a header and a block-pointer table, decompressed block by block.

use std::io::{self, Read, Seek, SeekFrom};

use diskimage_formats::bytes::le_u32;

use super::susp::Zf;
use crate::error::{Error, FsName, Result};
use crate::runs::RunReader;

const FS: FsName = FsName::Iso9660;
const MAGIC: [u8; 8] = [0x37, 0xE4, 0x53, 0x96, 0xC9, 0xDB, 0xD6, 0x07];

/// A decompressing `Read + Seek` over a zisofs file's stored bytes.
pub struct ZisofsReader {
    inner: RunReader,
    size: u64,
    block: u64,
    pointers: Vec<u64>,
    current: Option<(u64, Vec<u8>)>,
    pos: u64,
    path: String,
}

impl ZisofsReader {
    /// Checks the header and reads the block pointers of `inner`.
    pub fn new(mut inner: RunReader, zf: Zf, path: &str) -> Result<Self> {
        let bad = |what: String| Error::corrupt(FS, Some(path), what);
        if &zf.algorithm != b"pz" {
            return Err(Error::unsupported(
                FS,
                Some(path),
                format!(
                    "ZF compression {:?}",
                    String::from_utf8_lossy(&zf.algorithm)
                ),
            ));
        }
        let stored = inner.size();
        let mut head = [0u8; 16];
        inner
            .read_exact(&mut head)
            .map_err(|_| bad("zisofs header cut short".into()))?;
        if head[..8] != MAGIC {
            return Err(bad("zisofs header magic".into()));
        }
        let size = le_u32(&head, 8).map_or(0, u64::from);
        let header = u64::from(head[12]) * 4;
        let log2 = head[13];
        if !(15..=17).contains(&log2) || header < 16 {
            return Err(bad(format!(
                "zisofs block size 2^{log2} or header size {header}"
            )));
        }
        let block = 1u64 << log2;
        let n = size.div_ceil(block) + 1;
        if header + n * 4 > stored {
            return Err(bad(format!(
                "zisofs pointer table of {n} entries past the stored data"
            )));
        }
        inner
            .seek(SeekFrom::Start(header))
            .map_err(|e| Error::from_io(FS, path, e))?;
        let mut table = vec![0u8; usize::try_from(n * 4).unwrap_or(0)];
        inner
            .read_exact(&mut table)
            .map_err(|e| Error::from_io(FS, path, e))?;
        let pointers: Vec<u64> = table
            .chunks_exact(4)
            .filter_map(|c| le_u32(c, 0).map(u64::from))
            .collect();
        if pointers.windows(2).any(|w| w.first() > w.get(1))
            || pointers.last().is_some_and(|&p| p > stored)
        {
            return Err(bad(
                "zisofs block pointers out of order or past the stored data".into(),
            ));
        }
        Ok(ZisofsReader {
            inner,
            size,
            block,
            pointers,
            current: None,
            pos: 0,
            path: path.to_string(),
        })
    }

    fn load(&mut self, index: u64) -> Result<()> {
        if self.current.as_ref().is_some_and(|c| c.0 == index) {
            return Ok(());
        }
        let i = usize::try_from(index).unwrap_or(usize::MAX);
        let (Some(&a), Some(&b)) = (self.pointers.get(i), self.pointers.get(i.saturating_add(1)))
        else {
            return Err(Error::corrupt(
                FS,
                Some(&self.path),
                "zisofs block past the table",
            ));
        };
        let want = (self.size - index * self.block).min(self.block);
        let mut out = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        if b > a {
            let mut packed = vec![0u8; usize::try_from(b - a).unwrap_or(0)];
            self.inner
                .seek(SeekFrom::Start(a))
                .and_then(|_| self.inner.read_exact(&mut packed))
                .map_err(|e| Error::from_io(FS, &self.path, e))?;
            flate2::read::ZlibDecoder::new(packed.as_slice())
                .take(want)
                .read_to_end(&mut out)
                .map_err(|e| {
                    Error::corrupt(FS, Some(&self.path), format!("zisofs block {index}: {e}"))
                })?;
            if (out.len() as u64) < want {
                return Err(Error::corrupt(
                    FS,
                    Some(&self.path),
                    format!("zisofs block {index} decompresses short"),
                ));
            }
        } else {
            out.resize(usize::try_from(want).unwrap_or(0), 0);
        }
        self.current = Some((index, out));
        Ok(())
    }
}

impl Read for ZisofsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let index = self.pos / self.block;
        self.load(index).map_err(Error::into_io)?;
        let within = usize::try_from(self.pos % self.block).unwrap_or(0);
        let data = self.current.as_ref().map_or(&[][..], |c| c.1.as_slice());
        let src = data.get(within..).unwrap_or_default();
        let n = src.len().min(buf.len());
        if let (Some(d), Some(s)) = (buf.get_mut(..n), src.get(..n)) {
            d.copy_from_slice(s);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ZisofsReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = crate::file_system::seek_position(self.pos, self.size, pos)?;
        Ok(self.pos)
    }
}
