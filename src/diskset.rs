//! [`DiskSet`]: several disk images opened as one set (VixMntapi's
//! `OpenDiskSet`), and every [`Volume`] across them — partitions of MBR
//! and GPT tables, whole-disk file systems, and LVM2 logical volumes whose
//! physical volumes may sit on different disks of the set.
//!
//! A Btrfs file system spread over several volumes of the set (`mkfs.btrfs
//! -d raid1 disk1 disk2`) is one file system: the volumes whose Btrfs
//! superblocks carry the same file system UUID are its devices
//! ([`Volume::member`]), read together through the first of them (the
//! lowest device id present), the others not [`Volume::mountable`] on
//! their own; mounting any of them opens the whole file system.
//!
//! [`DiskSet::open`] is the path-based entry point; [`DiskSet::from_images`]
//! takes images already opened (the disks of a VM state, for example).
//! The operating systems of a set are found by [`crate::os::detect`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diskimage_formats::{BlockDevice, DiskImage, OpenOptions, SliceDevice, WarningKind};
use diskimage_fs::{FileSystem, FsInfo, FsKind};

use crate::error::{Detail, Error, ErrorKind, Result, Scheme};
use crate::volume::lvm2::{self, LogicalVolume, VolumeGroup};
use crate::volume::{read_table, PartitionKind, PartitionTable};

/// Most disks in one set.
pub const MAX_DISKS: usize = 256;

/// One disk of a set.
#[derive(Debug, Clone)]
pub struct Disk {
    /// Index in the set (0-based, in the order given).
    pub index: usize,
    /// The path it was opened by.
    pub path: PathBuf,
    /// The opened image.
    pub image: DiskImage,
    /// Its partition table (`scheme` is `None` when it has none).
    pub table: PartitionTable,
}

/// A tolerated problem found while reading the volumes of a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeWarning {
    /// What kind of problem.
    pub kind: WarningKind,
    /// The disk it is on, where it is on one.
    pub disk: Option<usize>,
    /// One line for a person.
    pub message: String,
}

/// A volume of the set: a partition, a whole-disk file system or an LV.
#[derive(Clone)]
pub struct Volume {
    /// The volume number (1-based, in listing order), as `-V N` takes it.
    pub index: usize,
    /// The disk holding it (`None` for an LV, which may span disks).
    pub disk: Option<usize>,
    /// Start on that disk, bytes (`None` for an LV: see [`Volume::lv`]).
    pub offset: Option<u64>,
    /// Size in bytes.
    pub size: u64,
    /// MBR, GPT, BSD disklabel, APM, LVM2 or whole disk.
    pub scheme: Scheme,
    /// The partition number in its table (Linux numbering).
    pub number: Option<u32>,
    /// Primary, extended, logical, GPT, BSD or APM.
    pub partition_kind: Option<PartitionKind>,
    /// The partition type as stored (`0x83`, a GUID) or the LV type.
    pub type_code: Option<String>,
    /// The type's common name.
    pub type_name: Option<String>,
    /// The GPT partition name, or the LV as `vg/lv`.
    pub name: Option<String>,
    /// The GPT partition GUID or the LV UUID.
    pub guid: Option<String>,
    /// GPT attribute bits.
    pub attributes: Option<u64>,
    /// The MBR boot indicator.
    pub bootable: bool,
    /// What the volume holds, by its superblock.
    pub fs: Option<FsInfo>,
    /// Whether the file-system layer can read it ([`diskimage_fs::reads`]);
    /// false for the devices of a multi-device file system but the one it
    /// is read through ([`Volume::member`]).
    pub mountable: bool,
    /// The LV, for an LVM2 volume.
    pub lv: Option<LogicalVolume>,
    /// Why the volume cannot be read or probed, when it cannot.
    pub problem: Option<String>,
    /// For a device of a file system spread over several volumes (a
    /// multi-device Btrfs): its place in it and the other volumes.
    pub member: Option<FsMember>,
    device: Arc<dyn BlockDevice>,
}

/// A volume that is one device of a file system spread over several
/// volumes of the set (a multi-device Btrfs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsMember {
    /// This volume's device id in the file system.
    pub devid: u64,
    /// How many devices the file system has, by its superblock.
    pub devices: u64,
    /// The volumes of the set holding devices of the file system (this one
    /// included), as (device id, volume index), by device id. The file
    /// system is read through the first.
    pub members: Vec<(u64, usize)>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("index", &self.index)
            .field("disk", &self.disk)
            .field("offset", &self.offset)
            .field("size", &self.size)
            .field("scheme", &self.scheme)
            .field("type_code", &self.type_code)
            .field("fs", &self.fs)
            .finish()
    }
}

impl Volume {
    /// The device reading this volume: a slice of its disk, or the LV.
    pub fn device(&self) -> Arc<dyn BlockDevice> {
        Arc::clone(&self.device)
    }
}

/// Whether the file-system layer reads `kind` (see [`diskimage_fs::reads`]).
pub fn is_mountable(kind: FsKind) -> bool {
    diskimage_fs::reads(kind)
}

/// Several disks opened as one set, with every volume across them.
#[derive(Debug, Clone)]
pub struct DiskSet {
    disks: Vec<Disk>,
    volumes: Vec<Volume>,
    volume_groups: Vec<VolumeGroup>,
    warnings: Vec<VolumeWarning>,
    /// The set was opened strict: file systems are mounted strict too.
    strict: bool,
}

impl DiskSet {
    /// Opens every image of `paths` read-only and finds the volumes of the set.
    ///
    /// Damage that has a redundant copy (a zeroed primary GPT header) is a
    /// warning ([`DiskSet::warnings`]; `strict` refuses it). Damage without
    /// one fails the open with a typed error naming the disk: an EBR chain
    /// that loops, both GPT headers unusable, a GPT claiming more entries
    /// than [`MAX_ENTRY_ARRAY_BYTES`](crate::volume::gpt::MAX_ENTRY_ARRAY_BYTES)
    /// holds, an LVM2 PV whose every metadata copy is unreadable.
    pub fn open<P: AsRef<Path>>(paths: &[P], options: &OpenOptions) -> Result<Self> {
        if paths.len() > MAX_DISKS {
            return Err(Error::limit(
                Scheme::DiskSet,
                "disks in one set",
                paths.len() as u64,
                MAX_DISKS as u64,
            ));
        }
        let mut images = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let image = diskimage_formats::open(p.as_ref(), options)
                .map_err(|e| Error::from_device(Scheme::DiskSet, e).on_disk(i))?;
            images.push(image);
        }
        Self::from_images(images, options)
    }

    /// Builds a set from images already opened (for the `.vmx` path).
    pub fn from_images(images: Vec<DiskImage>, options: &OpenOptions) -> Result<Self> {
        let mut set = DiskSet {
            disks: Vec::new(),
            volumes: Vec::new(),
            volume_groups: Vec::new(),
            warnings: Vec::new(),
            strict: options.strict,
        };
        let mut pvs = Vec::new();
        for (index, image) in images.into_iter().enumerate() {
            let device = image.device();
            let table = read_table(device.as_ref()).map_err(|e| e.on_disk(index))?;
            for w in &table.warnings {
                let kind = if w.contains("backup") {
                    WarningKind::RedundantCopyUsed
                } else {
                    WarningKind::Other
                };
                set.warn(kind, Some(index), w.clone());
            }
            if let Some(why) = &table.unsupported {
                set.warn(WarningKind::Unsupported, Some(index), why.clone());
            }
            if table.scheme.is_none() {
                let fs = diskimage_fs::detect(device.as_ref())
                    .map_err(|e| Error::from_device(Scheme::WholeDisk, e).on_disk(index))?;
                if let Some(fs) = fs {
                    if fs.kind == FsKind::LvmPv {
                        set.scan_pv(&mut pvs, Arc::clone(&device), index, 0)?;
                    }
                    set.push(Volume {
                        index: 0,
                        disk: Some(index),
                        offset: Some(0),
                        size: device.size(),
                        scheme: Scheme::WholeDisk,
                        number: None,
                        partition_kind: None,
                        type_code: None,
                        type_name: None,
                        name: None,
                        guid: None,
                        attributes: None,
                        bootable: false,
                        mountable: is_mountable(fs.kind),
                        fs: Some(fs),
                        lv: None,
                        problem: None,
                        member: None,
                        device: Arc::clone(&device),
                    });
                }
            }
            for p in &table.partitions {
                let scheme = match p.kind {
                    PartitionKind::Bsd => Scheme::Bsd,
                    PartitionKind::Apm => Scheme::Apm,
                    _ => table.scheme.unwrap_or(Scheme::WholeDisk),
                };
                let slice = match SliceDevice::new(Arc::clone(&device), p.offset, p.size) {
                    Ok(s) => s,
                    // Past the disk's end (an image cut short): listed, its
                    // reads past the end fail, and a warning says so.
                    Err(_) => {
                        let s = SliceDevice::reaching_past(Arc::clone(&device), p.offset, p.size)
                            .map_err(|e| {
                            Error::from_device(scheme, e).on_disk(index).at(p.offset)
                        })?;
                        set.warn(
                            WarningKind::Other,
                            Some(index),
                            format!(
                                "{scheme} partition {} ({:#x}+{:#x}) ends past the end of disk {index} ({} bytes; a truncated image?): reads past the end fail",
                                p.number,
                                p.offset,
                                p.size,
                                device.size()
                            ),
                        );
                        s
                    }
                };
                let slice: Arc<dyn BlockDevice> = Arc::new(slice);
                let (fs, problem) = if p.kind == PartitionKind::Extended {
                    (None, None)
                } else {
                    match diskimage_fs::detect(slice.as_ref()) {
                        Ok(fs) => (fs, None),
                        Err(e) => (None, Some(e.to_string())),
                    }
                };
                if fs.as_ref().is_some_and(|f| f.kind == FsKind::LvmPv) {
                    set.scan_pv(&mut pvs, Arc::clone(&slice), index, p.offset)?;
                }
                set.push(Volume {
                    index: 0,
                    disk: Some(index),
                    offset: Some(p.offset),
                    size: p.size,
                    scheme,
                    number: Some(p.number),
                    partition_kind: Some(p.kind),
                    type_code: Some(p.type_code.clone()),
                    type_name: Some(p.type_name.to_owned()),
                    name: p.name.clone(),
                    guid: p.guid.clone(),
                    attributes: p.attributes,
                    bootable: p.bootable,
                    mountable: fs.as_ref().is_some_and(|f| is_mountable(f.kind)),
                    fs,
                    lv: None,
                    problem,
                    member: None,
                    device: slice,
                });
            }
            set.disks.push(Disk {
                index,
                path: image.info().path.clone(),
                image,
                table,
            });
        }
        set.volume_groups = lvm2::assemble(&pvs)?;
        for vg in set.volume_groups.clone() {
            if !vg.complete() {
                set.warn(
                    WarningKind::Other,
                    None,
                    format!(
                        "LVM2 volume group {} is incomplete: PV {} not found in the disk set",
                        vg.name,
                        vg.missing.join(", ")
                    ),
                );
            }
            for lv in vg.lvs {
                let device: Arc<dyn BlockDevice> = lv.device.clone();
                let (fs, problem) = match &lv.unreadable {
                    Some(why) => (None, Some(why.clone())),
                    None => match diskimage_fs::detect(device.as_ref()) {
                        Ok(fs) => (fs, None),
                        Err(e) => (None, Some(e.to_string())),
                    },
                };
                set.push(Volume {
                    index: 0,
                    disk: None,
                    offset: None,
                    size: lv.size,
                    scheme: Scheme::Lvm2,
                    number: None,
                    partition_kind: None,
                    type_code: Some(lv.lv_type.clone()),
                    type_name: Some(format!("LVM2 {}", lv.lv_type)),
                    name: Some(format!("{}/{}", lv.vg, lv.name)),
                    guid: Some(lv.uuid.clone()),
                    attributes: None,
                    bootable: false,
                    mountable: fs.as_ref().is_some_and(|f| is_mountable(f.kind)),
                    fs,
                    lv: Some(lv),
                    problem,
                    member: None,
                    device,
                });
            }
        }
        set.group_btrfs();
        if options.strict {
            // A scheme recognised but not read is a note, not damage.
            let damage = set
                .warnings
                .iter()
                .find(|w| w.kind != WarningKind::Unsupported);
            if let Some(w) = damage {
                return Err(Error::invalid(
                    Scheme::DiskSet,
                    format!("strict mode refuses a tolerated problem: {}", w.message),
                ));
            }
        }
        Ok(set)
    }

    /// Groups the Btrfs volumes of one multi-device file system (same file
    /// system UUID): each gets its [`FsMember`], and all but the one with
    /// the lowest device id stop being mountable on their own. A device
    /// id seen twice (the same disk given twice) keeps its first volume;
    /// devices missing from the set are a warning.
    fn group_btrfs(&mut self) {
        use std::collections::BTreeMap;
        let mut groups: BTreeMap<String, Vec<(u64, usize, u64)>> = BTreeMap::new();
        for (i, v) in self.volumes.iter().enumerate() {
            if v.problem.is_some() || v.fs.as_ref().is_none_or(|f| f.kind != FsKind::Btrfs) {
                continue;
            }
            if let Ok(info) = diskimage_fs::btrfs::device_info(v.device.as_ref()) {
                if info.num_devices > 1 {
                    groups
                        .entry(info.fsid)
                        .or_default()
                        .push((info.devid, i, info.num_devices));
                }
            }
        }
        for (fsid, mut found) in groups {
            found.sort_by_key(|&(devid, i, _)| (devid, i));
            let mut members: Vec<(u64, usize)> = Vec::new();
            let mut devices = 0;
            for (devid, i, n) in found {
                devices = devices.max(n);
                match members.last() {
                    Some(&(d, first)) if d == devid => self.warn(
                        WarningKind::Other,
                        self.volumes.get(i).and_then(|v| v.disk),
                        format!(
                            "volumes {} and {} are both device {devid} of Btrfs file system \
                             {fsid}: volume {} is read",
                            first + 1,
                            i + 1,
                            first + 1
                        ),
                    ),
                    _ => members.push((devid, i)),
                }
            }
            if (members.len() as u64) < devices {
                let ids: Vec<String> = members.iter().map(|(d, _)| d.to_string()).collect();
                self.warn(
                    WarningKind::Other,
                    None,
                    format!(
                        "Btrfs file system {fsid} has {devices} devices; {} in the disk set \
                         (device ids {}): the others' data is read from copies, where there are \
                         copies",
                        members.len(),
                        ids.join(", ")
                    ),
                );
            }
            let listed: Vec<(u64, usize)> = members.iter().map(|&(d, i)| (d, i + 1)).collect();
            for (k, &(devid, i)) in members.iter().enumerate() {
                if let Some(v) = self.volumes.get_mut(i) {
                    v.member = Some(FsMember {
                        devid,
                        devices,
                        members: listed.clone(),
                    });
                    if k > 0 {
                        v.mountable = false;
                    }
                }
            }
        }
    }

    /// The device a file-system reader opens for `volume`, and the other
    /// devices of its file system: for a device of a multi-device Btrfs,
    /// the first member's device and every other member's; for any other
    /// volume, its own device and none.
    pub fn fs_devices(&self, volume: &Volume) -> (Arc<dyn BlockDevice>, Vec<Arc<dyn BlockDevice>>) {
        let Some(m) = &volume.member else {
            return (volume.device(), Vec::new());
        };
        let mut devices = m
            .members
            .iter()
            .filter_map(|&(_, index)| self.volume(index))
            .map(Volume::device);
        match devices.next() {
            Some(first) => (first, devices.collect()),
            None => (volume.device(), Vec::new()),
        }
    }

    /// The options a file-system reader opens `volume` with: the set's
    /// strictness and, for a multi-device Btrfs, the other devices
    /// ([`DiskSet::fs_devices`]).
    fn fs_options(&self, others: Vec<Arc<dyn BlockDevice>>) -> diskimage_fs::FsOptions {
        diskimage_fs::FsOptions::default()
            .with_strict(self.strict)
            .with_devices(others)
    }

    fn push(&mut self, mut v: Volume) {
        v.index = self.volumes.len() + 1;
        self.volumes.push(v);
    }

    fn warn(&mut self, kind: WarningKind, disk: Option<usize>, message: String) {
        self.warnings.push(VolumeWarning {
            kind,
            disk,
            message,
        });
    }

    fn scan_pv(
        &mut self,
        pvs: &mut Vec<lvm2::PhysicalVolume>,
        device: Arc<dyn BlockDevice>,
        disk: usize,
        offset: u64,
    ) -> Result<()> {
        let pv = lvm2::scan(device, disk, offset).map_err(|e| e.on_disk(disk))?;
        if let Some(pv) = pv {
            for p in &pv.problems {
                self.warn(
                    WarningKind::Other,
                    Some(disk),
                    format!("LVM2 metadata area skipped: {p}"),
                );
            }
            pvs.push(pv);
        }
        Ok(())
    }

    /// The disks, in the order given.
    pub fn disks(&self) -> &[Disk] {
        &self.disks
    }

    /// Every volume: each disk's partitions (or whole-disk file system) in
    /// disk order, then the LVs of each volume group.
    pub fn volumes(&self) -> &[Volume] {
        &self.volumes
    }

    /// The LVM2 volume groups, complete or not.
    pub fn volume_groups(&self) -> &[VolumeGroup] {
        &self.volume_groups
    }

    /// Problems tolerated while reading the set.
    pub fn warnings(&self) -> &[VolumeWarning] {
        &self.warnings
    }

    /// The volume numbered `index` (as `volumes` prints it).
    pub fn volume(&self, index: usize) -> Option<&Volume> {
        index.checked_sub(1).and_then(|i| self.volumes.get(i))
    }

    /// Opens the file system of `volume` (one of [`DiskSet::volumes`]).
    ///
    /// A volume whose content could not be probed fails with the reason;
    /// one the file-system layer does not read fails with
    /// [`diskimage_fs::ErrorKind::Unsupported`].
    pub fn mount(&self, volume: &Volume) -> diskimage_fs::Result<Box<dyn FileSystem>> {
        if let Some(problem) = &volume.problem {
            return Err(diskimage_fs::Error::unsupported(
                diskimage_fs::FsName::Detect,
                None,
                format!("volume {}: {problem}", volume.index),
            ));
        }
        // The volume's detection is reused: a file system is detected once.
        // A set opened strict mounts strict (a bad checksum refuses).
        let (device, others) = self.fs_devices(volume);
        let options = self.fs_options(others);
        match &volume.fs {
            Some(info) => diskimage_fs::open_fs_as_with(device, info.kind, &options),
            None => diskimage_fs::open_fs_with(device, &options),
        }
    }

    /// Opens the Btrfs subvolume `subvolume` of `volume`: a path from the
    /// top level (`root`, `/@/home`, as fstab's `subvol=` names it), or
    /// `id:N` for the subvolume with id N (`subvolid=`).
    pub fn mount_subvolume(
        &self,
        volume: &Volume,
        subvolume: &str,
    ) -> diskimage_fs::Result<Box<dyn FileSystem>> {
        use diskimage_fs::btrfs::BtrfsFs;
        if let Some(problem) = &volume.problem {
            return Err(diskimage_fs::Error::unsupported(
                diskimage_fs::FsName::Btrfs,
                None,
                format!("volume {}: {problem}", volume.index),
            ));
        }
        let (device, others) = self.fs_devices(volume);
        let options = self.fs_options(others);
        let fs = match subvolume.strip_prefix("id:").map(str::parse::<u64>) {
            Some(Ok(id)) => BtrfsFs::open_subvolume_id(device, &options, id)?,
            _ => BtrfsFs::open_subvolume(device, &options, subvolume)?,
        };
        Ok(Box::new(fs))
    }

    /// Volume `index` (numbered as [`DiskSet::volumes`] lists them, from
    /// 1), or, when `None`, the one volume whose file system this library
    /// reads: what a file-system command reads by default.
    ///
    /// With no index and no readable volume, a set whose only file system
    /// is one this version does not read gives that volume (opening it
    /// then says what is unsupported). Errors: an index past the end
    /// ([`crate::ErrorKind::OutOfBounds`]), no
    /// file system at all (`Unsupported`), several readable volumes
    /// (`Ambiguous`), or a chosen volume whose content could not be probed
    /// (`Corrupt`, with the reason).
    pub fn default_volume(&self, index: Option<usize>) -> Result<&Volume> {
        let set_error =
            |kind, what: String| Error::new(kind, Scheme::DiskSet, Detail::Invalid(what));
        let chosen = match index {
            Some(n) => self.volume(n).ok_or_else(|| {
                set_error(
                    ErrorKind::OutOfBounds,
                    format!(
                        "volume {n}: the disk set has {} volumes",
                        self.volumes.len()
                    ),
                )
            })?,
            None => {
                let readable: Vec<&Volume> = self.volumes.iter().filter(|v| v.mountable).collect();
                let mut with_fs = self.volumes.iter().filter(|v| v.fs.is_some());
                match (readable.as_slice(), with_fs.next(), with_fs.next()) {
                    ([one], _, _) => *one,
                    // One file system this version cannot read (UDF ...):
                    // given, for the typed "unsupported" error of its open.
                    ([], Some(only), None) => only,
                    ([], _, _) => {
                        return Err(set_error(
                            ErrorKind::Unsupported,
                            "no volume holds a file system this version reads".into(),
                        ))
                    }
                    (many, _, _) => {
                        let list: Vec<String> = many.iter().map(|v| v.index.to_string()).collect();
                        return Err(set_error(
                            ErrorKind::Ambiguous,
                            format!("volumes {} hold file systems: choose one", list.join(", ")),
                        ));
                    }
                }
            }
        };
        match &chosen.problem {
            Some(problem) => Err(set_error(
                ErrorKind::Corrupt,
                format!("volume {}: {problem}", chosen.index),
            )),
            None => Ok(chosen),
        }
    }
}
