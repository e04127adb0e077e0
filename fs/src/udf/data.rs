//! A file's data: its extents as the crate's [`DataRun`]s (volume bytes
//! or zeros), or the bytes embedded in its entry.

use std::io::Cursor;
use std::sync::Arc;

use diskimage_formats::BlockDevice;

use super::descriptor::{ExtentKind, LbAddr};
use super::icb::{in_path, Data, Entry};
use super::partition::Partitions;
use super::FS;
use crate::error::{Error, Result};
use crate::file_system::{FileReader, StoredRun};
use crate::runs::{self, DataRun, RunReader};

/// Most runs of one file (a virtual or metadata partition can split
/// every block into its own run).
pub const MAX_RUNS: usize = 1 << 20;

/// The runs of `entry`'s data up to its information length, each
/// recorded one checked against the end of the volume; unrecorded
/// extents are runs without a volume offset (zeros). Extents that cover
/// less than the information length are a corrupt error; what they hold
/// past it is left out. Data embedded in the entry has no runs.
pub fn runs(
    device: &dyn BlockDevice,
    parts: &Partitions,
    entry: &Entry,
    path: &str,
) -> Result<Vec<DataRun>> {
    let size = entry.size;
    let Data::Extents(ads) = &entry.data else {
        return Ok(Vec::new());
    };
    let block = parts.block();
    let mut out: Vec<DataRun> = Vec::new();
    let mut at = 0u64;
    let push = |out: &mut Vec<DataRun>, r: DataRun| -> Result<()> {
        if let Some(last) = out.last_mut() {
            let merged = match (last.at, r.at) {
                (Some(a), Some(b)) => a.checked_add(last.len) == Some(b),
                (None, None) => true,
                _ => false,
            };
            if merged {
                last.len += r.len;
                return Ok(());
            }
        }
        if out.len() >= MAX_RUNS {
            return Err(Error::limit(
                FS,
                Some(path),
                format!("file in more than {MAX_RUNS} runs"),
            ));
        }
        out.push(r);
        Ok(())
    };
    for ad in ads {
        if at >= size {
            break;
        }
        let len = u64::from(ad.len).min(size - at);
        if ad.kind != ExtentKind::Recorded {
            let zeros = DataRun {
                file_offset: at,
                len,
                at: None,
            };
            push(&mut out, zeros)?;
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
            let stored = DataRun {
                file_offset: at + done,
                len: n,
                at: Some(offset),
            };
            push(&mut out, stored)?;
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

/// The bytes embedded in `entry` that make its data, up to its
/// information length; `None` for data in extents.
fn embedded<'e>(entry: &'e Entry, path: &str) -> Option<Result<&'e [u8]>> {
    let Data::Inline(b) = &entry.data else {
        return None;
    };
    let n = usize::try_from(entry.size).unwrap_or(usize::MAX);
    Some(b.get(..n).ok_or_else(|| {
        Error::corrupt(FS, Some(path), "embedded data shorter than the file").at(entry.offset)
    }))
}

/// All of `entry`'s data, `runs` being its [`runs`].
pub fn read(
    device: &dyn BlockDevice,
    entry: &Entry,
    runs: &[DataRun],
    path: &str,
) -> Result<Vec<u8>> {
    if let Some(b) = embedded(entry, path) {
        return b.map(<[u8]>::to_vec);
    }
    let mut out = vec![0u8; usize::try_from(entry.size).unwrap_or(0)];
    runs::read_runs(device, runs, &mut out, 0).map_err(|e| in_path(e, path))?;
    Ok(out)
}

/// A reader of `entry`'s data, `runs` being its [`runs`].
pub fn open(
    device: Arc<dyn BlockDevice>,
    entry: &Entry,
    runs: Vec<DataRun>,
    path: &str,
) -> Result<Box<dyn FileReader>> {
    if let Some(b) = embedded(entry, path) {
        return Ok(Box::new(Cursor::new(b?.to_vec())));
    }
    Ok(Box::new(RunReader::new(device, runs, entry.size)))
}

/// Where `entry`'s data is stored verbatim, when every byte of it is on
/// the volume.
pub fn stored_runs(entry: &Entry, runs: &[DataRun]) -> Option<Vec<StoredRun>> {
    match entry.data {
        Data::Inline(_) => None,
        Data::Extents(_) => runs::stored_runs(runs, entry.size),
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
        let r = runs(&dev, &parts, &e, "/f").unwrap();
        assert_eq!(stored_runs(&e, &r), None);
        let out = read(&dev, &e, &r, "/f").unwrap();
        assert_eq!(out.len(), 2124);
        assert!(out[..512].iter().all(|&b| b == 12));
        assert!(out[512..1024].iter().all(|&b| b == 13));
        assert!(out[1024..2024].iter().all(|&b| b == 0));
        assert!(out[2024..].iter().all(|&b| b == 30));
        // Extents past the partition, and too short for the size, are errors.
        let far = entry(512, vec![ad(ExtentKind::Recorded, 512, 50)]);
        assert!(runs(&dev, &parts, &far, "/f").is_err());
        let short = entry(5000, vec![ad(ExtentKind::Recorded, 512, 1)]);
        let err = runs(&dev, &parts, &short, "/f").unwrap_err();
        assert!(err.to_string().contains("information length"), "{err}");
        // All recorded: stored verbatim, one merged run.
        let whole = entry(
            1500,
            vec![
                ad(ExtentKind::Recorded, 1024, 0),
                ad(ExtentKind::Recorded, 1024, 2),
            ],
        );
        let stored = stored_runs(&whole, &runs(&dev, &parts, &whole, "/f").unwrap()).unwrap();
        assert_eq!(
            stored,
            vec![StoredRun {
                at: 10 * 512,
                len: 1500
            }]
        );
    }
}
