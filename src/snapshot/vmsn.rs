//! VMware's snapshot state file (`.vmsn`): the configuration a snapshot
//! was taken with, in VMware's group/tag container.
//!
//! The container, as the public parsers of VMware's state files read it
//! (checked against Volatility 3's `layers/vmware.py` and `layers/vmsn.py`
//! and Nir Izraeli's `vmsnparser`, which agree on every field below except
//! the meaning of the 16-bit word after a large datum's sizes: a padding
//! length in `layers/vmsn.py`, a word always 0 in the others; the file
//! written here holds 0, which all of them read alike), all numbers
//! little-endian:
//!
//! - header, 12 bytes: magic (`0xbed2bed0`, `0xbad1bad1`, `0xbed2bed2` or
//!   `0xbed3bed3`; its low 4 bits are the container version), 4 bytes not
//!   interpreted, the number of groups;
//! - that many groups of 80 bytes: a NUL-padded name of 64 bytes, the file
//!   offset (64-bit) of the group's tags, and a 64-bit field none of those
//!   parsers interprets (written here as the byte size of the tags);
//! - at a group's offset, tags one after the other until one whose first
//!   two bytes are zero: flags (bits 0-5: the data size, or 62/63 for a
//!   large datum; bits 6-7: the number of 32-bit indices), the name length
//!   and the name, the indices, then the data. A large datum gives its size
//!   on disk and in memory (32-bit fields in version 0, 64-bit after), a
//!   16-bit padding length and that many padding bytes before the data.
//!
//! No state file written by VMware itself was at hand to compare with (the
//! corpus holds none), so the names VMware gives the group and tag that
//! hold the configuration are not confirmed by a real file; reading accepts
//! a tag `cfgFile` or `config` in any group.
//!
//! A snapshot of a powered-off VM holds no memory or device state: the
//! file written here has one group, `Snapshot`, whose tag `cfgFile` is the
//! `.vmx` text the snapshot was taken with. [`config`] reads that tag
//! (`cfgFile`, or `config` in any group) from any file of this container;
//! every offset and size is checked against the file, and at most
//! [`MAX_GROUPS`] groups and [`MAX_TAGS`] tags in all are walked.

use crate::error::{Error, Result, Scheme};

/// The magic this module writes (container version 3).
pub const MAGIC: u32 = 0xbed3_bed3;
/// Every magic of the container.
pub const MAGICS: [u32; 4] = [0xbed2_bed0, 0xbad1_bad1, 0xbed2_bed2, 0xbed3_bed3];
/// Most groups walked.
pub const MAX_GROUPS: u32 = 1024;
/// Most tags walked in one file, all groups together (groups may point at
/// the same tags, so the bound is on the total).
pub const MAX_TAGS: usize = 1 << 18;
/// Largest configuration read (as for a `.vmx`).
pub const MAX_CONFIG: u64 = crate::vm::vmx::MAX_CONFIG_BYTES;

const HEADER: usize = 12;
const GROUP: usize = 80;
const GROUP_NAME: &str = "Snapshot";
const CONFIG_TAG: &str = "cfgFile";

/// A `.vmsn` holding `vmx` (the configuration text) as the `cfgFile` tag of
/// its `Snapshot` group.
pub fn build(vmx: &[u8]) -> Vec<u8> {
    let tags_at = (HEADER + GROUP) as u64;
    let mut tags = Vec::with_capacity(vmx.len() + 64);
    // Flags 62: a large datum, no indices.
    tags.push(62u8);
    tags.push(CONFIG_TAG.len() as u8);
    tags.extend_from_slice(CONFIG_TAG.as_bytes());
    tags.extend_from_slice(&(vmx.len() as u64).to_le_bytes()); // on disk
    tags.extend_from_slice(&(vmx.len() as u64).to_le_bytes()); // in memory
    tags.extend_from_slice(&0u16.to_le_bytes()); // no padding
    tags.extend_from_slice(vmx);
    tags.extend_from_slice(&[0, 0]); // end of the group's tags
    let mut out = Vec::with_capacity(HEADER + GROUP + tags.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let mut name = [0u8; 64];
    for (n, b) in name.iter_mut().zip(GROUP_NAME.bytes()) {
        *n = b;
    }
    out.extend_from_slice(&name);
    out.extend_from_slice(&tags_at.to_le_bytes());
    out.extend_from_slice(&(tags.len() as u64).to_le_bytes());
    out.extend_from_slice(&tags);
    out
}

fn bad(what: String, at: usize) -> Error {
    Error::invalid(Scheme::Vm, format!(".vmsn: {what}")).at(at as u64)
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or_else(|| bad("a 16-bit field past the end of the file".into(), at))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| bad("a 32-bit field past the end of the file".into(), at))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| bad("a 64-bit field past the end of the file".into(), at))
}

/// One tag: its name, indices and data range in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// The group it is in.
    pub group: String,
    /// Its name.
    pub name: String,
    /// Its indices (at most 3).
    pub indices: Vec<u32>,
    /// File offset of its data.
    pub offset: usize,
    /// Bytes of data on disk.
    pub len: usize,
}

/// Every tag of every group of a state file, bounded (see the module docs).
pub fn tags(b: &[u8]) -> Result<Vec<Tag>> {
    let magic = u32_at(b, 0)?;
    if !MAGICS.contains(&magic) {
        return Err(bad(format!("magic {magic:#010x} is not VMware's"), 0));
    }
    let version = magic & 0xf;
    let groups = u32_at(b, 8)?;
    if groups > MAX_GROUPS {
        return Err(Error::limit(
            Scheme::Vm,
            ".vmsn groups",
            u64::from(groups),
            u64::from(MAX_GROUPS),
        )
        .at(8));
    }
    let mut out = Vec::new();
    let mut count = 0usize;
    for g in 0..groups as usize {
        let at = HEADER + g * GROUP;
        let raw = b
            .get(at..at + 64)
            .ok_or_else(|| bad(format!("group {g} past the end of the file"), at))?;
        let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
        let name = String::from_utf8_lossy(raw.get(..end).unwrap_or_default()).into_owned();
        let start = u64_at(b, at + 64)?;
        let mut p = usize::try_from(start)
            .ok()
            .filter(|&s| s <= b.len())
            .ok_or_else(|| bad(format!("group {name:?}: tags at {start} past the end"), at))?;
        loop {
            let flags = *b
                .get(p)
                .ok_or_else(|| bad(format!("group {name:?}: tags run past the end"), p))?;
            let name_len = *b
                .get(p + 1)
                .ok_or_else(|| bad(format!("group {name:?}: tags run past the end"), p))?;
            if flags == 0 && name_len == 0 {
                break;
            }
            count += 1;
            if count > MAX_TAGS {
                return Err(
                    Error::limit(Scheme::Vm, ".vmsn tags", count as u64, MAX_TAGS as u64)
                        .at(p as u64),
                );
            }
            let tag_at = p;
            let n = usize::from(name_len);
            let tname = b
                .get(p + 2..p + 2 + n)
                .ok_or_else(|| bad("a tag name past the end".into(), tag_at))?;
            let tname = String::from_utf8_lossy(tname).into_owned();
            p += 2 + n;
            let mut indices = Vec::new();
            for _ in 0..(flags >> 6) & 3 {
                indices.push(u32_at(b, p)?);
                p += 4;
            }
            let size = usize::from(flags & 63);
            let len = if size == 62 || size == 63 {
                let (disk, width) = if version == 0 {
                    (u64::from(u32_at(b, p)?), 4)
                } else {
                    (u64_at(b, p)?, 8)
                };
                p += 2 * width;
                let pad = usize::from(u16_at(b, p)?);
                p += 2 + pad;
                usize::try_from(disk)
                    .ok()
                    .filter(|&d| p <= b.len() && d <= b.len() - p)
                    .ok_or_else(|| {
                        bad(format!("tag {tname:?}: {disk} bytes past the end"), tag_at)
                    })?
            } else {
                size
            };
            if p > b.len() || len > b.len() - p {
                return Err(bad(format!("tag {tname:?}: data past the end"), tag_at));
            }
            out.push(Tag {
                group: name.clone(),
                name: tname,
                indices,
                offset: p,
                len,
            });
            p += len;
        }
    }
    Ok(out)
}

/// The `.vmx` text a state file holds (its `cfgFile` or `config` tag).
pub fn config(b: &[u8]) -> Result<Vec<u8>> {
    let tags = tags(b)?;
    let tag = tags
        .iter()
        .find(|t| t.name == CONFIG_TAG || t.name == "config")
        .ok_or_else(|| bad("no configuration (cfgFile) tag".into(), 0))?;
    if tag.len as u64 > MAX_CONFIG {
        return Err(Error::limit(
            Scheme::Vm,
            ".vmsn configuration bytes",
            tag.len as u64,
            MAX_CONFIG,
        )
        .at(tag.offset as u64));
    }
    let data = b.get(tag.offset..tag.offset + tag.len).unwrap_or_default();
    // Text ends at its first NUL, as VMware pads it.
    let end = data.iter().position(|&c| c == 0).unwrap_or(data.len());
    Ok(data.get(..end).unwrap_or_default().to_vec())
}

/// Reads the `.vmx` text of the state file at `path`.
pub fn read_config(path: &std::path::Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| Error::host_io(Scheme::Vm, path, e))?;
    // A configuration-only file is small; a larger one (with memory) is
    // read only up to a bound, which holds the groups that come first.
    let mut buf = Vec::new();
    f.take(MAX_CONFIG * 4)
        .read_to_end(&mut buf)
        .map_err(|e| Error::host_io(Scheme::Vm, path, e))?;
    config(&buf).map_err(|e| e.in_file(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_file_reads_back() {
        let vmx = b".encoding = \"UTF-8\"\ndisplayName = \"x\"\n";
        let f = build(vmx);
        assert_eq!(&f[..4], &MAGIC.to_le_bytes());
        let t = tags(&f).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].group, "Snapshot");
        assert_eq!(config(&f).unwrap(), vmx);
    }

    #[test]
    fn small_tags_indices_and_version_0() {
        // Version 0 (0xbed2bed0): 32-bit large-datum sizes.
        let mut f = Vec::new();
        f.extend_from_slice(&0xbed2_bed0u32.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        let mut name = [0u8; 64];
        name[..6].copy_from_slice(b"config");
        f.extend_from_slice(&name);
        f.extend_from_slice(&92u64.to_le_bytes());
        f.extend_from_slice(&0u64.to_le_bytes());
        // A 4-byte tag with one index, then a large datum.
        f.extend_from_slice(&[0x40 | 4, 1, b'n']);
        f.extend_from_slice(&7u32.to_le_bytes());
        f.extend_from_slice(&9u32.to_le_bytes());
        f.extend_from_slice(&[62, 6]);
        f.extend_from_slice(b"config");
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(&1u16.to_le_bytes());
        f.push(0xff);
        f.extend_from_slice(b"a=b");
        f.extend_from_slice(&[0, 0]);
        let t = tags(&f).unwrap();
        assert_eq!(t[0].indices, [7]);
        assert_eq!(t[0].len, 4);
        assert_eq!(config(&f).unwrap(), b"a=b");
    }

    #[test]
    fn hostile_files_are_errors() {
        assert!(config(b"").is_err());
        assert!(config(&[0u8; 12]).is_err());
        let mut f = build(b"x = \"1\"\n");
        // A datum size past the end.
        let at = HEADER + GROUP + 2 + CONFIG_TAG.len();
        f[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(config(&f).is_err());
        let mut f = build(b"x");
        f[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            config(&f).unwrap_err().kind(),
            crate::ErrorKind::LimitExceeded
        );
        let mut f = build(b"x");
        f.truncate(f.len() - 2);
        assert!(config(&f).is_err());
    }

    #[test]
    fn groups_sharing_their_tags_are_walked_within_one_bound() {
        // 1,024 groups all pointing at one run of 2-byte tags: the walk
        // stops at MAX_TAGS in all instead of collecting 1,024 copies.
        let groups = MAX_GROUPS as usize;
        let tags_at = HEADER + groups * GROUP;
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&MAX_GROUPS.to_le_bytes());
        for _ in 0..groups {
            f.extend_from_slice(&[0u8; 64]);
            f.extend_from_slice(&(tags_at as u64).to_le_bytes());
            f.extend_from_slice(&0u64.to_le_bytes());
        }
        for _ in 0..MAX_TAGS / 512 {
            f.extend_from_slice(&[1, 0, 0]); // flags 1: one data byte, no name
        }
        f.extend_from_slice(&[0, 0]);
        assert_eq!(
            tags(&f).unwrap_err().kind(),
            crate::ErrorKind::LimitExceeded
        );
    }
}
