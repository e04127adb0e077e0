//! Cluster chains (exFAT specification §4.1, §6.3.4.2, §7.6.2): where the
//! clusters of a file or directory lie, as runs of consecutive clusters.
//!
//! A stream whose NoFatChain flag is set is contiguous: its clusters
//! follow its first cluster and its FAT entries are not read (they may be
//! stale). Otherwise the chain is followed through the active FAT, at
//! most as many clusters as the data needs; every cluster must lie in
//! the heap, a bad-cluster mark, a chain ending early or a cluster met
//! twice (a cycle) is corrupt, and the walk never goes past the needed
//! count (for the root directory, which has no length,
//! [`MAX_DIR_BYTES`](super::MAX_DIR_BYTES) worth of clusters).

use std::collections::BTreeMap;

use diskimage_formats::bytes::le_u32;
use diskimage_formats::BlockDevice;

use super::boot_sector::BootSector;
use super::FS;
use crate::error::{Error, Result};

/// Most runs (separately placed pieces) of one chain.
pub const MAX_RUNS: usize = 1 << 20;
/// FAT bytes read at once.
const FAT_BLOCK: u64 = 4096;
/// A FAT entry marking a bad cluster.
const BAD_CLUSTER: u32 = 0xFFFF_FFF7;
/// A FAT entry ending a chain.
const END_OF_CHAIN: u32 = 0xFFFF_FFFF;

/// Consecutive clusters `first..first + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First cluster.
    pub first: u32,
    /// Number of clusters.
    pub count: u64,
}

/// How many clusters to take from a chain.
#[derive(Debug, Clone, Copy)]
pub enum Want {
    /// Exactly this many (the stream's DataLength rounded up).
    Exactly(u64),
    /// Up to the end-of-chain mark, at most this many (the root directory).
    UpTo(u64),
}

/// The runs of the chain starting at `first`, `contiguous` when the
/// stream's NoFatChain flag is set; `path` names the file in errors.
pub fn runs(
    device: &dyn BlockDevice,
    boot: &BootSector,
    first: u32,
    contiguous: bool,
    want: Want,
    path: &str,
) -> Result<Vec<Run>> {
    let heap_end = u64::from(boot.cluster_count) + 2;
    let corrupt = |what: String| Error::corrupt(FS, Some(path), what);
    if let Want::Exactly(0) = want {
        return Ok(Vec::new());
    }
    if !boot.is_heap_cluster(first) {
        return Err(corrupt(format!(
            "first cluster {first} outside the cluster heap (2..{heap_end})"
        )));
    }
    if contiguous {
        let count = match want {
            Want::Exactly(n) | Want::UpTo(n) => n,
        };
        if u64::from(first) + count > heap_end {
            return Err(corrupt(format!(
                "{count} contiguous clusters from {first} run past the cluster heap (ends at {heap_end})"
            )));
        }
        return Ok(vec![Run { first, count }]);
    }
    let (limit, exact) = match want {
        Want::Exactly(n) => (n, true),
        Want::UpTo(n) => (n, false),
    };
    if limit > u64::from(boot.cluster_count) {
        return Err(corrupt(format!(
            "{limit} clusters needed, the volume has {}",
            boot.cluster_count
        )));
    }
    let fat = boot.active_fat_offset();
    let mut block: Option<(u64, Vec<u8>)> = None;
    let mut out: Vec<Run> = Vec::new();
    let mut cluster = first;
    let mut taken = 0u64;
    // The runs so far by first cluster, to find a cluster met twice.
    let mut seen: BTreeMap<u32, u64> = BTreeMap::new();
    loop {
        if let Some((&f, &n)) = seen.range(..=cluster).next_back() {
            if u64::from(cluster) < u64::from(f) + n {
                return Err(corrupt(format!(
                    "cluster {cluster} comes twice in the chain (a cycle)"
                )));
            }
        }
        match out.last_mut() {
            Some(r) if u64::from(r.first) + r.count == u64::from(cluster) => {
                r.count += 1;
                seen.insert(r.first, r.count);
            }
            _ => {
                if out.len() >= MAX_RUNS {
                    return Err(Error::limit(
                        FS,
                        Some(path),
                        format!("cluster chain of more than {MAX_RUNS} runs"),
                    ));
                }
                out.push(Run {
                    first: cluster,
                    count: 1,
                });
                seen.insert(cluster, 1);
            }
        }
        taken += 1;
        if exact && taken == limit {
            return Ok(out);
        }
        let at = fat + u64::from(cluster) * 4;
        let index = at / FAT_BLOCK;
        if block.as_ref().is_none_or(|(i, _)| *i != index) {
            let mut b = vec![0u8; FAT_BLOCK as usize];
            let start = index * FAT_BLOCK;
            let len = device.size().saturating_sub(start).min(FAT_BLOCK);
            b.truncate(usize::try_from(len).unwrap_or(0));
            device.read_at(&mut b, start)?;
            block = Some((index, b));
        }
        let within = usize::try_from(at % FAT_BLOCK).unwrap_or(0);
        let Some(next) = block.as_ref().and_then(|(_, b)| le_u32(b, within)) else {
            return Err(corrupt(format!(
                "FAT entry of cluster {cluster} past the end of the volume"
            ))
            .at(at));
        };
        match next {
            END_OF_CHAIN if exact => {
                return Err(corrupt(format!(
                    "cluster chain ends after {taken} clusters, the data needs {limit}"
                ))
                .at(at))
            }
            END_OF_CHAIN => return Ok(out),
            BAD_CLUSTER => {
                return Err(corrupt(format!("cluster {cluster} is followed by a bad-cluster mark")).at(at))
            }
            n if !boot.is_heap_cluster(n) => {
                return Err(corrupt(format!(
                    "FAT entry of cluster {cluster} is {n:#x}, outside the cluster heap (2..{heap_end})"
                ))
                .at(at))
            }
            n => cluster = n,
        }
        if taken >= limit {
            return Err(Error::limit(
                FS,
                Some(path),
                format!("directory chain longer than {limit} clusters (a cycle?)"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage_formats::MemoryDevice;

    /// A volume of 16 clusters of 512 bytes whose FAT is `fat`.
    fn volume(fat: &[(u32, u32)]) -> (MemoryDevice, BootSector) {
        let mut b = super::super::boot_sector::tests::golden();
        b[92..96].copy_from_slice(&16u32.to_le_bytes());
        b[109] = 0;
        let boot = BootSector::parse(&b, 0).unwrap();
        let mut img = vec![0u8; 64 * 512];
        for &(c, n) in fat {
            let at = 24 * 512 + c as usize * 4;
            img[at..at + 4].copy_from_slice(&n.to_le_bytes());
        }
        (MemoryDevice::new(img), boot)
    }

    #[test]
    fn chain_is_split_into_runs() {
        let (d, b) = volume(&[(2, 3), (3, 7), (7, 8), (8, END_OF_CHAIN)]);
        let r = runs(&d, &b, 2, false, Want::Exactly(4), "/f").unwrap();
        assert_eq!(
            r,
            vec![Run { first: 2, count: 2 }, Run { first: 7, count: 2 }]
        );
        let r = runs(&d, &b, 2, false, Want::UpTo(16), "/").unwrap();
        assert_eq!(r.len(), 2);
        // NoFatChain: the FAT is not read.
        let r = runs(&d, &b, 5, true, Want::Exactly(3), "/f").unwrap();
        assert_eq!(r, vec![Run { first: 5, count: 3 }]);
    }

    #[test]
    fn cycles_and_bad_entries_are_errors() {
        let (d, b) = volume(&[(2, 3), (3, 2)]);
        let e = runs(&d, &b, 2, false, Want::UpTo(16), "/").unwrap_err();
        assert!(e.to_string().contains("cluster 2 comes twice"), "{e}");
        let (d, b) = volume(&[(5, 9), (9, 10), (10, 4), (4, 5)]);
        let e = runs(&d, &b, 5, false, Want::Exactly(9), "/f").unwrap_err();
        assert!(e.to_string().contains("cluster 5 comes twice"), "{e}");
        let (d, b) = volume(&[(2, 3), (3, END_OF_CHAIN)]);
        let e = runs(&d, &b, 2, false, Want::Exactly(3), "/f").unwrap_err();
        assert!(
            e.to_string()
                .contains("ends after 2 clusters, the data needs 3"),
            "{e}"
        );
        let (d, b) = volume(&[(2, 500)]);
        let e = runs(&d, &b, 2, false, Want::Exactly(3), "/f").unwrap_err();
        assert_eq!(
            e.to_string(),
            "exFAT: corrupt /f at 0x3008: FAT entry of cluster 2 is 0x1f4, outside the cluster heap (2..18)"
        );
        let (d, b) = volume(&[(2, BAD_CLUSTER)]);
        assert!(runs(&d, &b, 2, false, Want::Exactly(3), "/f").is_err());
        let (d, b) = volume(&[]);
        assert!(runs(&d, &b, 17, true, Want::Exactly(2), "/f").is_err());
        assert!(runs(&d, &b, 1, false, Want::Exactly(2), "/f").is_err());
        assert!(runs(&d, &b, 2, false, Want::Exactly(17), "/f").is_err());
    }
}
