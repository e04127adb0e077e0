//! The `.vmsd` snapshot database of a VMware VM: the snapshot tree.
//!
//! Keys (VMware's `key = "value"` text, read by [`Dict`]):
//! `snapshot.current` (uid of the snapshot the VM runs from),
//! `snapshot.numSnapshots`, and per snapshot N: `snapshotN.uid`,
//! `.parent` (uid), `.displayName`, `.description`, `.filename` (the
//! `.vmsn` state file), `.createTimeHigh`/`.createTimeLow` (microseconds
//! since 1970 UTC, high and low 32 bits, the low half often written
//! signed), `.diskM.node` (the slot, `scsi0:0`) and `.diskM.fileName`: the
//! disk file that became read-only when the snapshot was taken, which is
//! therefore the top of the chain holding that disk's state at the
//! snapshot. At most [`MAX_SNAPSHOTS`] snapshots and
//! [`crate::diskset::MAX_DISKS`] disks each are read; a parent
//! cycle is refused.

use std::collections::BTreeMap;

use super::vmx::Dict;
use super::{check_tree, Snapshot, SnapshotDisk};
use crate::diskset::MAX_DISKS;
use crate::error::{Error, Result, Scheme};

/// Most snapshots one database may hold (VMware allows 496 per VM).
pub const MAX_SNAPSHOTS: usize = 4096;

/// The snapshot tree of a `.vmsd`.
#[derive(Debug, Clone, Default)]
pub struct Vmsd {
    /// Every snapshot, in index order.
    pub snapshots: Vec<Snapshot>,
    /// `snapshot.current`: the uid of the snapshot the running state descends from.
    pub current: Option<String>,
}

#[derive(Default)]
struct Builder {
    fields: BTreeMap<String, String>,
    disks: BTreeMap<u32, (Option<String>, Option<String>)>,
}

/// `snapshot12.disk0.filename` -> (12, `disk0.filename`).
fn index_key(key: &str) -> Option<(u32, &str)> {
    let rest = key.strip_prefix("snapshot")?;
    let end = rest.find('.')?;
    let n = rest.get(..end)?;
    if n.is_empty() || n.len() > 6 || !n.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((n.parse().ok()?, rest.get(end + 1..)?))
}

/// `disk3.filename` -> (3, `filename`).
fn disk_key(field: &str) -> Option<(u32, &str)> {
    let rest = field.strip_prefix("disk")?;
    let (n, f) = rest.split_once('.')?;
    if n.is_empty() || n.len() > 4 || !n.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((n.parse().ok()?, f))
}

/// A `createTimeHigh`/`createTimeLow` pair as ISO 8601 UTC.
fn create_time(high: Option<&str>, low: Option<&str>) -> Option<String> {
    let high: i64 = high?.trim().parse().ok()?;
    let low: i64 = low?.trim().parse().ok()?;
    let micros = high.checked_mul(1 << 32)? | (low & 0xffff_ffff);
    Some(diskimage_formats::time::format_unix_utc(
        micros.div_euclid(1_000_000),
    ))
}

impl Vmsd {
    /// Parses `.vmsd` text.
    pub fn parse(text: &[u8]) -> Result<Vmsd> {
        let d = Dict::parse(text)?;
        let mut builders: BTreeMap<u32, Builder> = BTreeMap::new();
        for key in d.keys() {
            let Some((n, field)) = index_key(key) else {
                continue;
            };
            if !builders.contains_key(&n) && builders.len() >= MAX_SNAPSHOTS {
                return Err(Error::limit(
                    Scheme::Vm,
                    "snapshots in the .vmsd",
                    MAX_SNAPSHOTS as u64 + 1,
                    MAX_SNAPSHOTS as u64,
                )
                .at(d.line(key).unwrap_or(0) as u64));
            }
            let b = builders.entry(n).or_default();
            let value = d.get(key).unwrap_or_default().to_owned();
            if let Some((m, f)) = disk_key(field) {
                if !b.disks.contains_key(&m) && b.disks.len() >= MAX_DISKS {
                    return Err(Error::limit(
                        Scheme::Vm,
                        "disks of one snapshot",
                        MAX_DISKS as u64 + 1,
                        MAX_DISKS as u64,
                    ));
                }
                let e = b.disks.entry(m).or_default();
                match f {
                    "filename" => e.1 = Some(value),
                    "node" => e.0 = Some(value.to_ascii_lowercase()),
                    _ => {}
                }
            } else {
                b.fields.insert(field.to_owned(), value);
            }
        }
        let mut snapshots = Vec::new();
        for (n, b) in builders {
            let f = |k: &str| b.fields.get(k).filter(|v| !v.is_empty()).cloned();
            let Some(uid) = f("uid") else {
                continue;
            };
            let disks = b
                .disks
                .into_values()
                .filter_map(|(slot, file)| {
                    Some(SnapshotDisk {
                        slot: slot?,
                        file: file.filter(|f| !f.is_empty())?,
                    })
                })
                .collect();
            snapshots.push(Snapshot {
                uid,
                parent: f("parent"),
                name: f("displayname").unwrap_or_else(|| format!("snapshot{n}")),
                description: f("description"),
                created: create_time(
                    b.fields.get("createtimehigh").map(String::as_str),
                    b.fields.get("createtimelow").map(String::as_str),
                ),
                state_file: f("filename"),
                disks,
            });
        }
        check_tree(&snapshots)?;
        Ok(Vmsd {
            snapshots,
            current: d.get("snapshot.current").map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_times_and_disks() {
        let v = Vmsd::parse(
            b"snapshot.current = \"2\"\nsnapshot0.uid = \"1\"\nsnapshot0.displayName = \"a\"\n\
              snapshot0.createTimeHigh = \"395812\"\nsnapshot0.createTimeLow = \"404635648\"\n\
              snapshot0.disk0.fileName = \"x.vmdk\"\nsnapshot0.disk0.node = \"SCSI0:0\"\n\
              snapshot1.uid = \"2\"\nsnapshot1.parent = \"1\"\n",
        )
        .unwrap();
        assert_eq!(v.current.as_deref(), Some("2"));
        assert_eq!(
            v.snapshots[0].created.as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(v.snapshots[0].disks[0].slot, "scsi0:0");
        assert_eq!(v.snapshots[1].parent.as_deref(), Some("1"));
        assert_eq!(v.snapshots[1].name, "snapshot1");
    }

    #[test]
    fn a_negative_low_half_is_the_unsigned_low_32_bits() {
        // 1700001743 s = 2023-11-14T22:42:23Z; its low half is >= 2^31.
        assert_eq!(
            create_time(Some("395812"), Some("-2147331648")).as_deref(),
            Some("2023-11-14T22:42:23Z")
        );
        assert_eq!(create_time(Some("99999999999999"), Some("0")), None);
    }

    #[test]
    fn a_cycle_is_refused() {
        let e = Vmsd::parse(
            b"snapshot0.uid = \"1\"\nsnapshot0.parent = \"2\"\nsnapshot1.uid = \"2\"\nsnapshot1.parent = \"1\"\n",
        )
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt);
        assert!(e.to_string().contains("cycle"), "{e}");
    }
}
