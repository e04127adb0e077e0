//! Operating-system detection (VixMntapi's `GetOsInfo`): which systems are
//! installed on a [`DiskSet`], with product, version, architecture,
//! hostname, system folder and the in-guest mount point of each volume.
//!
//! - [`windows`]: a volume with `Windows/System32/config/SOFTWARE` and
//!   `SYSTEM`; facts from those hives ([`regf`], our own reader), drive
//!   letters from `MountedDevices`, architecture from `cmd.exe`'s PE header.
//! - [`linux`]: a volume with `/etc/os-release` (or `/usr/lib/os-release`,
//!   `/etc/lsb-release`, `/etc/redhat-release`) or `/etc/fstab`; mount
//!   points from `/etc/fstab`, a separate `/usr` mounted before reading,
//!   architecture from the ELF header of `/bin/sh`'s target (else of
//!   `/usr/bin/*`, `/sbin/init` or the dynamic loader).
//!
//! FreeBSD roots (UFS, ZFS) are not found: no reader for their file
//! systems exists yet. Detection never fails as a whole: a volume that
//! cannot be mounted or a file that cannot be read is a note.

pub mod arch;
pub mod guest;
pub mod linux;
pub mod regf;
pub mod windows;

use crate::diskset::DiskSet;

/// The OS family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum OsFamily {
    /// Windows (NT).
    Windows,
    /// Linux.
    Linux,
}

impl OsFamily {
    /// A stable, lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            OsFamily::Windows => "windows",
            OsFamily::Linux => "linux",
        }
    }
}

/// Where the OS lives: the volume and the folder on it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct OsFolder {
    /// The volume number (as `diskimage volumes` prints it).
    pub volume: usize,
    /// The folder on that volume: `/Windows`, or `/` for a Linux root.
    pub path: String,
    /// The folder as the guest names it (`C:\Windows`), where known.
    pub guest_path: Option<String>,
}

/// One in-guest mount point (a drive letter, an fstab line).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MountPoint {
    /// The in-guest path: `C:`, `/usr`, or `swap`.
    pub path: String,
    /// The volume it maps to, `None` when no volume of the set matches.
    pub volume: Option<usize>,
    /// What the guest names the device by: the fstab source
    /// (`UUID=...`), or the `MountedDevices` data in words.
    pub source: String,
    /// The fstab file-system type, where there is one.
    pub fs_type: Option<String>,
    /// The Btrfs subvolume mounted there (fstab `subvol=` or `subvolid=`),
    /// where one is named.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub subvolume: Option<String>,
}

/// What is known of one installed OS.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct OsInfo {
    /// Windows or Linux.
    pub family: OsFamily,
    /// The distribution id (`debian`, `ubuntu`; os-release `ID`), Linux only.
    pub distribution: Option<String>,
    /// The product name: Windows `ProductName` (Windows 11 rule applied),
    /// Linux `NAME`.
    pub product_name: Option<String>,
    /// Linux `PRETTY_NAME`.
    pub pretty_name: Option<String>,
    /// Windows `EditionID`, Linux `VARIANT`.
    pub edition: Option<String>,
    /// The version as the system writes it (`10.0`, `12`, `22.04`).
    pub version: Option<String>,
    /// Major version number.
    pub version_major: Option<u32>,
    /// Minor version number.
    pub version_minor: Option<u32>,
    /// Windows build number (`CurrentBuildNumber`).
    pub build: Option<u32>,
    /// Windows update build revision (`UBR`).
    pub ubr: Option<u32>,
    /// Windows `DisplayVersion` (or `ReleaseId`): `23H2`.
    pub display_version: Option<String>,
    /// Windows `InstallationType`: `Client`, `Server`.
    pub installation_type: Option<String>,
    /// The machine binaries are built for (`x86_64`, `aarch64`, `x86`).
    pub architecture: Option<String>,
    /// The computer's name.
    pub hostname: Option<String>,
    /// Where the OS lives.
    pub os_folder: OsFolder,
    /// Every in-guest mount point found, matched to volumes where possible.
    pub mount_points: Vec<MountPoint>,
    /// What could not be read or was tolerated, one line each.
    pub notes: Vec<String>,
}

impl OsInfo {
    fn new(family: OsFamily, volume: usize, path: &str) -> Self {
        OsInfo {
            family,
            distribution: None,
            product_name: None,
            pretty_name: None,
            edition: None,
            version: None,
            version_major: None,
            version_minor: None,
            build: None,
            ubr: None,
            display_version: None,
            installation_type: None,
            architecture: None,
            hostname: None,
            os_folder: OsFolder {
                volume,
                path: path.to_owned(),
                guest_path: None,
            },
            mount_points: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// Every OS found on a set, and the volumes that could not be looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct OsReport {
    /// The systems, in volume order.
    pub systems: Vec<OsInfo>,
    /// Volumes that could not be mounted or searched, one line each.
    pub problems: Vec<String>,
}

/// Looks for installed systems on every readable volume of `set`.
pub fn detect(set: &DiskSet) -> OsReport {
    let mut report = OsReport {
        systems: Vec::new(),
        problems: Vec::new(),
    };
    for v in set.volumes().iter().filter(|v| v.mountable) {
        let fs = match set.mount(v) {
            Ok(fs) => fs,
            Err(e) => {
                report
                    .problems
                    .push(format!("volume {}: not searched: {e}", v.index));
                continue;
            }
        };
        if let Some(root) = windows::find_root(fs.as_ref()) {
            report.systems.push(windows::detect(set, v, fs, &root));
        } else if linux::is_root(fs.as_ref()) {
            report.systems.push(linux::detect(set, v, fs));
        } else if fs.kind() == diskimage_fs::FsKind::Btrfs {
            // A Btrfs root in a subvolume below the one shown (Fedora's
            // `root`, mounted by fstab's `subvol=`).
            for (name, root) in btrfs_subvolume_roots(set, v, fs.as_ref()) {
                report
                    .systems
                    .push(linux::detect_in_subvolume(set, v, root, &name));
            }
        }
    }
    report
}

/// Most top-level entries of a Btrfs volume tried as subvolume roots.
const MAX_SUBVOLUME_TRIES: usize = 64;

/// The subvolumes in the root directory of the Btrfs volume `v` (shown
/// as `fs`, the default subvolume) that hold a Linux root, by name.
fn btrfs_subvolume_roots(
    set: &DiskSet,
    v: &crate::diskset::Volume,
    fs: &dyn diskimage_fs::FileSystem,
) -> Vec<(String, Box<dyn diskimage_fs::FileSystem>)> {
    let Ok(entries) = fs.read_dir("/") else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter(|e| e.file_type == diskimage_fs::FileType::Directory)
        .take(MAX_SUBVOLUME_TRIES)
        .filter_map(|e| {
            let sub = set.mount_subvolume(v, &e.name).ok()?;
            linux::is_root(sub.as_ref()).then_some((e.name, sub))
        })
        .collect()
}

/// Parses `"10"`, `"10.0"`, `"22.04.3"` into major and minor numbers.
pub(crate) fn split_version(v: &str) -> (Option<u32>, Option<u32>) {
    let mut parts = v.trim().split(['.', ' ', '-']);
    let major = parts.next().and_then(|p| p.parse().ok());
    let minor = parts.next().and_then(|p| p.parse().ok());
    (major, minor)
}
