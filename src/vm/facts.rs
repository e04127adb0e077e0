//! What a VM's configuration says: facts, disks, snapshots, other files.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::error::{Error, Result, Scheme};

/// One disk of a snapshot: the slot and the file that was its top then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDisk {
    /// The device slot (`scsi0:0`, `SATA:0:0`).
    pub slot: String,
    /// The file as the configuration records it (for a `.vbox` while
    /// parsing: the medium's uuid).
    pub file: String,
}

/// One snapshot (VMware) or snapshot (VirtualBox) of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Its identifier (`.vmsd` uid, VirtualBox uuid).
    pub uid: String,
    /// The parent snapshot's uid.
    pub parent: Option<String>,
    /// Its display name.
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    /// When it was taken, ISO 8601 UTC.
    pub created: Option<String>,
    /// Its saved-state file (`.vmsn`), as recorded.
    pub state_file: Option<String>,
    /// The disks it records.
    pub disks: Vec<SnapshotDisk>,
}

/// Refuses a snapshot tree whose parent links loop.
pub(crate) fn check_tree(snapshots: &[Snapshot]) -> Result<()> {
    let by_uid: HashMap<&str, &Snapshot> = snapshots.iter().map(|s| (s.uid.as_str(), s)).collect();
    for s in snapshots {
        let mut seen = HashSet::new();
        let mut cur = Some(s);
        while let Some(c) = cur {
            if !seen.insert(c.uid.as_str()) {
                return Err(Error::invalid(
                    Scheme::Vm,
                    format!("snapshot tree has a cycle through uid {}", c.uid),
                ));
            }
            cur = c.parent.as_deref().and_then(|p| by_uid.get(p).copied());
        }
    }
    Ok(())
}

/// A hard disk of the VM's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisk {
    /// The device slot (`scsi0:0`, `SATA:0:0`, `0` for a Hyper-V folder).
    pub slot: String,
    /// The file, as recorded (relative to the configuration, or absolute).
    pub file: String,
    /// The disk mode (`independent-persistent`, VirtualBox `Writethrough`).
    pub mode: Option<String>,
}

impl VmDisk {
    /// A VMware independent disk (`mode` `independent-*`), which snapshots
    /// do not capture.
    pub fn independent(&self) -> bool {
        self.mode
            .as_deref()
            .is_some_and(|m| m.to_ascii_lowercase().starts_with("independent"))
    }
}

/// Facts about the VM, as its configuration states them.
#[derive(Debug, Clone, Default)]
pub struct VmFacts {
    /// Display name.
    pub name: Option<String>,
    /// Guest OS identifier (`ubuntu-64`, `Windows10_64`).
    pub guest_os: Option<String>,
    /// Memory, MiB.
    pub memory_mib: Option<u64>,
    /// Virtual CPUs.
    pub cpus: Option<u64>,
    /// Firmware (`bios`, `efi`).
    pub firmware: Option<String>,
    /// The VM's UUID (`uuid.bios`, VirtualBox machine uuid).
    pub uuid: Option<String>,
    /// Virtual hardware or settings-format version.
    pub hardware_version: Option<String>,
    /// The `encryption.*` keys of an encrypted VMware VM (empty otherwise).
    pub encryption_keys: Vec<String>,
}

/// A file of the VM folder and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFile {
    /// The file.
    pub path: PathBuf,
    /// What it is: `configuration`, `snapshot database`, `disk`,
    /// `change tracking (CBT)`, `snapshot state`, `hyper-v configuration (not parsed)`.
    pub role: &'static str,
}
