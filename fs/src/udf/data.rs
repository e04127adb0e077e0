//! A file's data as pieces (volume bytes, zeros or embedded bytes), and
//! the `Read + Seek` over them.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use diskimage_formats::BlockDevice;

use super::descriptor::{ExtentKind, LbAddr};
use super::icb::{in_path, Data, Entry};
use super::partition::Partitions;
use super::FS;
use crate::error::{Error, Result};
use crate::file_system::StoredRun;

/// Most pieces of one file (a virtual or metadata partition can split
/// every block into its own piece).
pub const MAX_PIECES: usize = 1 << 20;

/// Where a piece of a file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    /// Bytes of the volume from this offset.
    Volume(u64),
    /// Zeros: an extent allocated but not recorded, or not allocated.
    Zero,
    /// The entry's embedded data, from this offset.
    Inline(u64),
}

/// `len` bytes of the file from `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Offset in the file.
    pub at: u64,
    /// Length in bytes.
    pub len: u64,
    /// Where the bytes are.
    pub src: Src,
}

/// The pieces of `entry`'s data up to its information length, each
/// recorded one checked against the end of the volume. Extents that
/// cover less than the information length are a corrupt error; what they
/// hold past it is left out.
pub fn pieces(
    device: &dyn BlockDevice,
    parts: &Partitions,
    entry: &Entry,
    path: &str,
) -> Result<Vec<Piece>> {
    let size = entry.size;
    let ads = match &entry.data {
        Data::Inline(b) => {
            return Ok(vec![Piece {
                at: 0,
                len: (b.len() as u64).min(size),
                src: Src::Inline(0),
            }]);
        }
        Data::Extents(ads) => ads,
    };
    let block = parts.block();
    let mut out: Vec<Piece> = Vec::new();
    let mut at = 0u64;
    let push = |out: &mut Vec<Piece>, p: Piece| -> Result<()> {
        if let Some(last) = out.last_mut() {
            let merged = match (last.src, p.src) {
                (Src::Volume(a), Src::Volume(b)) => a + last.len == b,
                (Src::Zero, Src::Zero) => true,
                _ => false,
            };
            if merged {
                last.len += p.len;
                return Ok(());
            }
        }
        if out.len() >= MAX_PIECES {
            return Err(Error::limit(
                FS,
                Some(path),
                format!("file in more than {MAX_PIECES} pieces"),
            ));
        }
        out.push(p);
        Ok(())
    };
    for ad in ads {
        if at >= size {
            break;
        }
        let len = u64::from(ad.len).min(size - at);
        if ad.kind != ExtentKind::Recorded {
            push(
                &mut out,
                Piece {
                    at,
                    len,
                    src: Src::Zero,
                },
            )?;
            at += len;
            continue;
        }
        let mut done = 0u64;
        let mut lbn = u64::from(ad.at.lbn);
        while done < len {
            let want = (len - done).div_ceil(block);
            let addr = LbAddr {
                lbn: u32::try_from(lbn).map_err(|_| {
                    Error::corrupt(FS, Some(path), "extent past block 2^32").at(entry.offset)
                })?,
                part: ad.at.part,
            };
            let (offset, blocks) = parts
                .locate(addr, want)
                .map_err(|e| in_path(e, path))
                .map_err(|e| e.at(entry.offset))?;
            let n = (blocks * block).min(len - done);
            if offset.checked_add(n).is_none_or(|end| end > device.size()) {
                return Err(Error::corrupt(
                    FS,
                    Some(path),
                    format!("extent at {offset:#x} of {n} bytes past the end of the volume"),
                )
                .at(entry.offset));
            }
            push(
                &mut out,
                Piece {
                    at: at + done,
                    len: n,
                    src: Src::Volume(offset),
                },
            )?;
            done += n;
            lbn += blocks.max(1);
        }
        at += len;
    }
    if at < size {
        return Err(Error::corrupt(
            FS,
            Some(path),
            format!("information length {size} is more than the {at} bytes its extents hold"),
        )
        .at(entry.offset));
    }
    Ok(out)
}

/// Fills `buf` with the file's bytes from `pos` (which the caller keeps
/// within the pieces).
pub fn read_pieces(
    device: &dyn BlockDevice,
    pieces: &[Piece],
    data: &Data,
    mut pos: u64,
    mut buf: &mut [u8],
) -> Result<()> {
    let mut i = pieces.partition_point(|p| p.at + p.len <= pos);
    while !buf.is_empty() {
        let Some(p) = pieces.get(i) else {
            return Err(Error::corrupt(FS, None, "read past the file's data"));
        };
        let within = pos - p.at;
        let n = usize::try_from((p.len - within).min(buf.len() as u64)).unwrap_or(0);
        let (dst, rest) = std::mem::take(&mut buf).split_at_mut(n);
        match p.src {
            Src::Volume(o) => device.read_at(dst, o + within)?,
            Src::Zero => dst.fill(0),
            Src::Inline(o) => {
                let Data::Inline(b) = data else {
                    return Err(Error::corrupt(
                        FS,
                        None,
                        "embedded piece without embedded data",
                    ));
                };
                let from = usize::try_from(o + within).unwrap_or(usize::MAX);
                let src = b.get(from..from + n).ok_or_else(|| {
                    Error::corrupt(FS, None, "embedded data shorter than the file")
                })?;
                dst.copy_from_slice(src);
            }
        }
        buf = rest;
        pos += n as u64;
        i += 1;
    }
    Ok(())
}

/// Where the data of a file is stored verbatim: its pieces, when every
/// one is on the volume.
pub fn stored_runs(pieces: &[Piece]) -> Option<Vec<StoredRun>> {
    pieces
        .iter()
        .map(|p| match p.src {
            Src::Volume(at) => Some(StoredRun { at, len: p.len }),
            _ => None,
        })
        .collect()
}

/// A file's data: `Read + Seek`.
pub struct UdfFile {
    device: Arc<dyn BlockDevice>,
    pieces: Vec<Piece>,
    data: Data,
    size: u64,
    pos: u64,
}

impl UdfFile {
    /// The data of `entry`, whose pieces are `pieces`.
    pub fn new(device: Arc<dyn BlockDevice>, entry: &Entry, pieces: Vec<Piece>) -> Self {
        let data = match &entry.data {
            Data::Inline(b) => Data::Inline(b.clone()),
            Data::Extents(_) => Data::Extents(Vec::new()),
        };
        UdfFile {
            device,
            pieces,
            data,
            size: entry.size,
            pos: 0,
        }
    }
}

impl Read for UdfFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size {
            return Ok(0);
        }
        let n = usize::try_from((self.size - self.pos).min(buf.len() as u64)).unwrap_or(0);
        let Some(dst) = buf.get_mut(..n) else {
            return Ok(0);
        };
        read_pieces(
            self.device.as_ref(),
            &self.pieces,
            &self.data,
            self.pos,
            dst,
        )
        .map_err(Error::into_io)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for UdfFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = crate::file_system::seek_position(self.pos, self.size, pos)?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udf::descriptor::Ad;
    use crate::udf::volume::{PartitionDesc, PartitionMap, Volume};
    use crate::udf::Checks;
    use diskimage_formats::MemoryDevice;

    fn entry(size: u64, ads: Vec<Ad>) -> Entry {
        Entry {
            offset: 0,
            file_type: 5,
            flags: 0,
            uid: u32::MAX,
            gid: u32::MAX,
            permissions: 0,
            links: 1,
            size,
            blocks: 0,
            accessed: None,
            modified: None,
            changed: None,
            created: None,
            unique_id: 16,
            data: Data::Extents(ads),
        }
    }

    fn ad(kind: ExtentKind, len: u32, lbn: u32) -> Ad {
        Ad {
            kind,
            len,
            at: LbAddr { lbn, part: 0 },
        }
    }

    #[test]
    fn unrecorded_extents_read_as_zeros_and_leave_no_stored_runs() {
        let bytes: Vec<u8> = (0..100 * 512).map(|i| (i / 512) as u8).collect();
        let dev = MemoryDevice::new(bytes);
        let volume = Volume {
            block: 512,
            label: None,
            volume_set: None,
            revision: 0x0201,
            integrity: None,
            partitions: vec![PartitionDesc {
                number: 7,
                access: 1,
                start: 10,
                len: 50,
            }],
            maps: vec![PartitionMap::Physical { number: 7 }],
            fsd: ad(ExtentKind::Recorded, 512, 0),
        };
        let parts = Partitions::load(&dev, &volume, &Checks::default()).unwrap();
        let e = entry(
            1024 + 1000 + 100,
            vec![
                ad(ExtentKind::Recorded, 1024, 2),
                ad(ExtentKind::Unallocated, 1000, 0),
                ad(ExtentKind::Recorded, 512, 20),
            ],
        );
        let p = pieces(&dev, &parts, &e, "/f").unwrap();
        assert_eq!(stored_runs(&p), None);
        let mut out = vec![0xAAu8; 2124];
        read_pieces(&dev, &p, &e.data, 0, &mut out).unwrap();
        assert!(out[..512].iter().all(|&b| b == 12));
        assert!(out[512..1024].iter().all(|&b| b == 13));
        assert!(out[1024..2024].iter().all(|&b| b == 0));
        assert!(out[2024..].iter().all(|&b| b == 30));
        // Extents past the partition, and too short for the size, are errors.
        let far = entry(512, vec![ad(ExtentKind::Recorded, 512, 50)]);
        assert!(pieces(&dev, &parts, &far, "/f").is_err());
        let short = entry(5000, vec![ad(ExtentKind::Recorded, 512, 1)]);
        let err = pieces(&dev, &parts, &short, "/f").unwrap_err();
        assert!(err.to_string().contains("information length"), "{err}");
        // All recorded: stored verbatim, one merged run.
        let whole = entry(
            1500,
            vec![
                ad(ExtentKind::Recorded, 1024, 0),
                ad(ExtentKind::Recorded, 1024, 2),
            ],
        );
        let runs = stored_runs(&pieces(&dev, &parts, &whole, "/f").unwrap()).unwrap();
        assert_eq!(
            runs,
            vec![StoredRun {
                at: 10 * 512,
                len: 1500
            }]
        );
    }
}
