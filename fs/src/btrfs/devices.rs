//! The devices of a file system spread over several (`mkfs.btrfs dev1
//! dev2 ...`): each recognised by its superblock (file system UUID, device
//! id), checked against the chunk tree's device items (device UUID), and
//! the devices missing from the set named with what their absence costs.

use std::collections::BTreeMap;
use std::sync::Arc;

use diskimage_formats::bytes::{array, le_u64};
use diskimage_formats::BlockDevice;

use super::items::Key;
use super::superblock::{self, Superblock};
use super::tree::{Root, Volume};
use super::FS;
use crate::error::{Error, Result};

/// The chunk tree's objectid of device items, and their key type.
const DEV_ITEMS_OBJECTID: u64 = 1;
const DEV_ITEM: u8 = 216;
/// Most devices of one file system accepted.
const MAX_DEVICES: usize = 4096;

/// What a device's superblock says of its place in its file system
/// ([`device_info`]), for grouping the devices of a disk set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The file system's UUID, as `btrfs filesystem show` prints it.
    pub fsid: String,
    /// This device's id in the file system (1 for the first device).
    pub devid: u64,
    /// This device's UUID.
    pub dev_uuid: String,
    /// How many devices the file system has.
    pub num_devices: u64,
    /// The generation of this device's superblock.
    pub generation: u64,
}

/// The identity the Btrfs superblock on `device` records (the primary,
/// or the first good mirror).
pub fn device_info(device: &dyn BlockDevice) -> Result<DeviceInfo> {
    let sb = superblock::read(device, false, &mut Vec::new())?;
    Ok(DeviceInfo {
        fsid: sb.uuid(),
        devid: sb.devid,
        dev_uuid: diskimage_formats::Guid::from_be_bytes(sb.dev_uuid).to_string(),
        num_devices: sb.num_devices,
        generation: sb.generation,
    })
}

/// The devices of one file system, by id, with the newest superblock.
pub(crate) struct Gathered {
    pub devices: BTreeMap<u64, Arc<dyn BlockDevice>>,
    /// The superblock of the highest generation (the one the kernel uses).
    pub sb: Superblock,
    /// Each device's UUID, as its superblock gives it.
    pub dev_uuids: BTreeMap<u64, [u8; 16]>,
    /// The id of the device opened (the first one given).
    pub primary: u64,
    /// Devices left out or behind, one sentence each.
    pub warnings: Vec<String>,
}

/// `first` (its superblock `sb`) and those of `others` that belong to the
/// same file system; the others are left out with a warning.
pub(crate) fn gather(
    first: Arc<dyn BlockDevice>,
    sb: Superblock,
    others: &[Arc<dyn BlockDevice>],
    strict: bool,
) -> Result<Gathered> {
    if others.len() >= MAX_DEVICES {
        return Err(Error::limit(
            FS,
            None,
            format!("more than {MAX_DEVICES} devices"),
        ));
    }
    let mut warnings = Vec::new();
    let primary = sb.devid;
    let fsid = sb.fsid;
    let mut devices = BTreeMap::from([(primary, first)]);
    let mut sbs = BTreeMap::from([(primary, sb)]);
    for (i, dev) in others.iter().enumerate() {
        let mut w = Vec::new();
        match superblock::read(dev.as_ref(), strict, &mut w) {
            Err(e) => warnings.push(format!(
                "device {} of those given holds no usable Btrfs superblock ({e}): left out",
                i + 2
            )),
            Ok(s) if s.fsid != fsid => warnings.push(format!(
                "device {} of those given belongs to another file system ({}): left out",
                i + 2,
                s.uuid()
            )),
            Ok(s) if devices.contains_key(&s.devid) => warnings.push(format!(
                "two devices given say they are device {} of the file system: the first is read",
                s.devid
            )),
            Ok(s) => {
                warnings.extend(w.into_iter().map(|w| format!("device {}: {w}", s.devid)));
                devices.insert(s.devid, Arc::clone(dev));
                sbs.insert(s.devid, s);
            }
        }
    }
    let newest = sbs
        .values()
        .max_by_key(|s| s.generation)
        .map_or(0, |s| s.generation);
    for (id, s) in &sbs {
        if s.generation != newest {
            warnings.push(format!(
                "device {id} is at generation {}, the file system at {newest}: its copies may \
                 be stale",
                s.generation
            ));
        }
    }
    let sb = sbs
        .values()
        .find(|s| s.generation == newest)
        .cloned()
        .ok_or_else(|| Error::corrupt(FS, None, "no superblock"))?;
    let dev_uuids = sbs.iter().map(|(&id, s)| (id, s.dev_uuid)).collect();
    Ok(Gathered {
        devices,
        dev_uuids,
        sb,
        primary,
        warnings,
    })
}

/// Checks the devices read against the chunk tree's device items: one
/// whose UUID is not the item's is left out (a replaced device), and each
/// device of the file system missing from the set is a warning saying
/// whether every chunk still has a copy.
pub(crate) fn check(vol: &mut Volume, chunk_root: Root) -> Result<()> {
    let items = vol.items(
        chunk_root,
        Key::new(DEV_ITEMS_OBJECTID, DEV_ITEM, 0),
        Key::new(DEV_ITEMS_OBJECTID, DEV_ITEM, u64::MAX),
        "chunk tree",
    )?;
    let mut known: BTreeMap<u64, [u8; 16]> = BTreeMap::new();
    for (k, data) in items {
        let devid = le_u64(&data, 0).unwrap_or(k.offset);
        let uuid = array::<16>(&data, 66).ok_or_else(|| {
            Error::corrupt(
                FS,
                None,
                format!("chunk tree: device item {devid} cut short"),
            )
        })?;
        known.insert(devid, uuid);
    }
    let read: Vec<(u64, [u8; 16])> = vol.dev_uuids.iter().map(|(&id, &u)| (id, u)).collect();
    for (id, uuid) in read {
        match known.get(&id) {
            Some(k) if *k != uuid && id != vol.primary => {
                vol.drop_device(id);
                vol.warn(Error::corrupt(
                    FS,
                    None,
                    format!(
                        "device {id} given is not the one the file system lists (device UUID \
                         differs: replaced?): left out"
                    ),
                ))?;
            }
            _ => {}
        }
    }
    let missing: Vec<u64> = known
        .keys()
        .copied()
        .filter(|id| !vol.devices.contains_key(id))
        .collect();
    for id in missing {
        let lost = vol.chunks.chunks_lost_without(id);
        let cost = if lost.is_empty() {
            "every chunk on it has a copy on the devices present".to_string()
        } else {
            format!(
                "{} chunks ({}) have no copy on the devices present: reads there fail",
                lost.len(),
                lost.iter()
                    .take(4)
                    .map(|(at, p)| format!("{p} at {at:#x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        vol.warn(Error::unsupported(
            FS,
            None,
            format!("device {id} of the file system is not in the disk set: {cost}"),
        ))?;
    }
    Ok(())
}
