//! Inodes: the core (v1/v2 of v4 volumes, v3 with CRC of v5 ones), times
//! (seconds and nanoseconds, or `bigtime` nanoseconds since 1901), extent
//! counters (32-bit, or 64-bit with `nrext64`) and the data fork.

use diskimage_formats::bytes::{be_u16, be_u32, be_u64};

use crate::file_system::Timestamp;

/// `IN`.
const MAGIC: u16 = 0x494E;
/// Where a v3 inode keeps its CRC.
pub(crate) const CRC_AT: usize = 100;

pub(crate) const S_IFMT: u32 = 0o170_000;
pub(crate) const S_IFDIR: u32 = 0o040_000;
pub(crate) const S_IFREG: u32 = 0o100_000;
pub(crate) const S_IFLNK: u32 = 0o120_000;

/// `di_flags`: the data is on the real-time device.
pub(crate) const FLAG_REALTIME: u16 = 0x1;
/// `di_flags2`: times are 64-bit nanosecond counts.
const FLAG2_BIGTIME: u64 = 0x8;
/// `di_flags2`: extent counters are 64-bit (data) and 32-bit (attributes).
const FLAG2_NREXT64: u64 = 0x10;

/// How a fork stores its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// A device number (character and block devices).
    Dev,
    /// The bytes themselves, in the inode (short directories, symlinks).
    Local,
    /// A list of extent records, in the inode.
    Extents,
    /// The root of a B+tree of extent records, in the inode.
    Btree,
}

/// What is wrong with an inode read from the volume.
pub(crate) type Bad = String;

/// One inode, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Inode {
    pub number: u64,
    pub mode: u32,
    pub format: Format,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Option<Timestamp>,
    pub size: u64,
    pub nblocks: u64,
    pub nextents: u64,
    pub flags: u16,
    /// The data fork's bytes.
    pub fork: Vec<u8>,
    /// Byte offset of the data fork on the volume (for errors).
    pub fork_at: u64,
}

/// A time of a v4-style inode: signed seconds and nanoseconds.
fn legacy_time(raw: &[u8], off: usize) -> Timestamp {
    let secs = be_u32(raw, off).unwrap_or(0) as i32;
    let nanos = be_u32(raw, off + 4).unwrap_or(0).min(999_999_999);
    Timestamp {
        secs: i64::from(secs),
        nanos,
    }
}

/// A `bigtime` time: nanoseconds since 1901-12-13T20:45:52Z (-2^31 s).
fn big_time(raw: &[u8], off: usize) -> Timestamp {
    let t = be_u64(raw, off).unwrap_or(0);
    let secs = i64::try_from(t / 1_000_000_000).unwrap_or(i64::MAX) - (1i64 << 31);
    Timestamp {
        secs,
        nanos: u32::try_from(t % 1_000_000_000).unwrap_or(0),
    }
}

impl Inode {
    /// Parses the `raw` bytes (one inode) of inode `number` stored at byte
    /// `at`; `v5`: the volume has CRCs (v3 inodes).
    pub fn parse(raw: &[u8], number: u64, at: u64, v5: bool) -> Result<Inode, Bad> {
        if be_u16(raw, 0) != Some(MAGIC) {
            return Err(format!("inode {number}: no inode magic"));
        }
        let mode = u32::from(be_u16(raw, 2).unwrap_or(0));
        let version = raw.get(4).copied().unwrap_or(0);
        match (version, v5) {
            (3, true) | (1 | 2, false) => {}
            _ => return Err(format!("inode {number}: version {version}")),
        }
        if version == 3 && be_u64(raw, 152) != Some(number) {
            return Err(format!(
                "inode {number}: records itself as inode {}",
                be_u64(raw, 152).unwrap_or(0)
            ));
        }
        let format = match raw.get(5).copied().unwrap_or(0) {
            0 => Format::Dev,
            1 => Format::Local,
            2 => Format::Extents,
            3 => Format::Btree,
            f => return Err(format!("inode {number}: data fork format {f}")),
        };
        let flags2 = if version == 3 {
            be_u64(raw, 120).unwrap_or(0)
        } else {
            0
        };
        let time = |off| {
            if flags2 & FLAG2_BIGTIME != 0 {
                big_time(raw, off)
            } else {
                legacy_time(raw, off)
            }
        };
        let nlink = if version == 1 {
            u32::from(be_u16(raw, 6).unwrap_or(0))
        } else {
            be_u32(raw, 16).unwrap_or(0)
        };
        let nextents = if flags2 & FLAG2_NREXT64 != 0 {
            be_u64(raw, 24).unwrap_or(0)
        } else {
            u64::from(be_u32(raw, 76).unwrap_or(0))
        };
        let size = be_u64(raw, 56).unwrap_or(0);
        if size > i64::MAX as u64 {
            return Err(format!("inode {number}: size {size}"));
        }
        let core = if version == 3 { 176 } else { 100 };
        let forkoff = usize::from(raw.get(82).copied().unwrap_or(0)) * 8;
        let end = if forkoff == 0 {
            raw.len()
        } else {
            core + forkoff
        };
        let fork = raw
            .get(core..end)
            .ok_or_else(|| {
                format!("inode {number}: attribute fork offset {forkoff} past the inode")
            })?
            .to_vec();
        Ok(Inode {
            number,
            mode,
            format,
            uid: be_u32(raw, 8).unwrap_or(0),
            gid: be_u32(raw, 12).unwrap_or(0),
            nlink,
            atime: time(32),
            mtime: time(40),
            ctime: time(48),
            crtime: (version == 3).then(|| time(144)),
            size,
            nblocks: be_u64(raw, 64).unwrap_or(0),
            nextents,
            flags: be_u16(raw, 90).unwrap_or(0),
            fork,
            fork_at: at + core as u64,
        })
    }

    /// The file type bits.
    pub fn kind(&self) -> u32 {
        self.mode & S_IFMT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigtime_epoch_is_1901() {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&((1u64 << 31) * 1_000_000_000 + 5).to_be_bytes());
        assert_eq!(big_time(&raw, 0), Timestamp { secs: 0, nanos: 5 });
        let raw = (-1i32).to_be_bytes();
        assert_eq!(legacy_time(&[raw, [0; 4]].concat(), 0).secs, -1);
    }
}
