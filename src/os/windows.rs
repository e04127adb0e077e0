//! Windows: the SOFTWARE and SYSTEM hives under `Windows/System32/config`,
//! drive letters from `MountedDevices`, the architecture from `cmd.exe`.

use diskimage_formats::bytes::{array, le_u32, le_u64};
use diskimage_fs::{FileSystem, FileType};

use super::guest::{Guest, MAX_FILE};
use super::regf::{Hive, ValueData};
use super::{arch, split_version, MountPoint, OsFamily, OsInfo};
use crate::diskset::{DiskSet, Volume};
use crate::error::Scheme;
use diskimage_formats::Guid;

/// `MountedDevices` data of a GPT partition: this prefix + the partition GUID.
const GPT_PREFIX: &[u8] = b"DMIO:ID:";
/// The first build numbered as Windows 11.
pub const WINDOWS_11_BUILD: u32 = 22000;

/// The path of a child named `name` (ignoring case) of `dir` on `fs`.
fn child_ci(fs: &dyn FileSystem, dir: &str, name: &str) -> Option<(String, FileType)> {
    if !fs.case_sensitive() {
        // NTFS and FAT match names ignoring case themselves: no listing.
        let path = diskimage_fs::file_system::join(dir, name);
        return fs.metadata(&path).ok().map(|m| (path, m.file_type));
    }
    let entries: Vec<_> = fs.read_dir(dir).ok()?.collect();
    let e = entries
        .iter()
        .find(|e| e.name == name)
        .or_else(|| entries.iter().find(|e| e.name.eq_ignore_ascii_case(name)))?;
    Some((diskimage_fs::file_system::join(dir, &e.name), e.file_type))
}

/// `path` on `fs` with each component matched ignoring case, as Windows does.
fn path_ci(fs: &dyn FileSystem, path: &str) -> Option<String> {
    let mut here = "/".to_owned();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        here = child_ci(fs, &here, part)?.0;
    }
    Some(here)
}

/// The path of the Windows folder (`/Windows`) when `fs` holds
/// `Windows/System32/config/SOFTWARE` and `SYSTEM`.
pub fn find_root(fs: &dyn FileSystem) -> Option<String> {
    let windows = path_ci(fs, "/Windows")?;
    let config = path_ci(fs, &format!("{windows}/System32/config"))?;
    let is_file =
        |name: &str| child_ci(fs, &config, name).is_some_and(|(_, t)| t == FileType::File);
    (is_file("SOFTWARE") && is_file("SYSTEM")).then_some(windows)
}

/// Reads what the Windows installation at `root` on volume `v` says.
pub fn detect(set: &DiskSet, v: &Volume, fs: Box<dyn FileSystem>, root: &str) -> OsInfo {
    let mut info = OsInfo::new(OsFamily::Windows, v.index, root);
    let cmd = path_ci(fs.as_ref(), &format!("{root}/System32/cmd.exe"));
    let software = open_hive_from(fs.as_ref(), root, "SOFTWARE");
    let system = open_hive_from(fs.as_ref(), root, "SYSTEM");
    match software {
        Ok(h) => {
            note_hive(&mut info, &h);
            if let Err(e) = read_software(&mut info, &h) {
                info.notes.push(format!("SOFTWARE hive: {e}"));
            }
        }
        Err(e) => info.notes.push(format!("SOFTWARE hive not read: {e}")),
    }
    let mut env_arch = None;
    match system {
        Ok(h) => {
            note_hive(&mut info, &h);
            match read_system(set, &mut info, &h) {
                Ok(a) => env_arch = a,
                Err(e) => info.notes.push(format!("SYSTEM hive: {e}")),
            }
        }
        Err(e) => info.notes.push(format!("SYSTEM hive not read: {e}")),
    }
    match cmd.map(|p| Guest::new(fs).read(&p, 64 << 20)) {
        Some(Ok(bytes)) => match arch::pe_machine(&bytes) {
            Some(a) => info.architecture = Some(a.to_owned()),
            None => info
                .notes
                .push(format!("{root}/System32/cmd.exe has no PE header")),
        },
        Some(Err(e)) => info.notes.push(format!("cmd.exe not read: {e}")),
        None => info
            .notes
            .push(format!("{root}/System32/cmd.exe not found")),
    }
    if info.architecture.is_none() {
        if let Some(a) = env_arch {
            info.notes.push(format!(
                "architecture from PROCESSOR_ARCHITECTURE ({a}), not from cmd.exe"
            ));
            info.architecture = Some(
                match a.to_ascii_uppercase().as_str() {
                    "AMD64" => "x86_64",
                    "X86" => "x86",
                    "ARM64" => "aarch64",
                    "ARM" => "arm",
                    _ => "unknown",
                }
                .to_owned(),
            );
        }
    }
    if let Some(letter) = info
        .mount_points
        .iter()
        .find(|m| m.volume == Some(v.index))
        .map(|m| m.path.clone())
    {
        info.os_folder.guest_path = Some(format!("{letter}{}", root.replace('/', "\\")));
    }
    info
}

fn open_hive_from(fs: &dyn FileSystem, root: &str, name: &str) -> Result<Hive, String> {
    let path = path_ci(fs, &format!("{root}/System32/config/{name}"))
        .ok_or_else(|| format!("{root}/System32/config/{name}: not found"))?;
    let meta = fs.metadata(&path).map_err(|e| e.to_string())?;
    if meta.size > MAX_FILE {
        return Err(format!(
            "{path}: {} bytes, more than the {MAX_FILE} read for OS detection",
            meta.size
        ));
    }
    let mut data = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(fs.open(&path).map_err(|e| e.to_string())?, MAX_FILE),
        &mut data,
    )
    .map_err(|e| format!("{path}: {e}"))?;
    Hive::new(path, data).map_err(|e| e.to_string())
}

fn note_hive(info: &mut OsInfo, h: &Hive) {
    info.notes.extend(h.warnings().iter().cloned());
}

/// Fills product, edition and version from SOFTWARE's `CurrentVersion` key.
pub fn read_software(info: &mut OsInfo, h: &Hive) -> crate::error::Result<()> {
    let Some(cv) = h.key("Microsoft\\Windows NT\\CurrentVersion")? else {
        info.notes.push(format!(
            "{}: no Microsoft\\Windows NT\\CurrentVersion key",
            h.name()
        ));
        return Ok(());
    };
    let text = |name: &str| -> crate::error::Result<Option<String>> {
        Ok(match cv.value(name)? {
            Some(v) => v.string()?.filter(|s| !s.is_empty()),
            None => None,
        })
    };
    let number = |name: &str| -> crate::error::Result<Option<u32>> {
        Ok(match cv.value(name)? {
            Some(v) => v.number()?.and_then(|n| u32::try_from(n).ok()),
            None => None,
        })
    };
    info.product_name = text("ProductName")?;
    info.edition = text("EditionID")?;
    info.installation_type = text("InstallationType")?;
    info.display_version = match text("DisplayVersion")? {
        Some(d) => Some(d),
        None => text("ReleaseId")?,
    };
    info.version_major = number("CurrentMajorVersionNumber")?;
    info.version_minor = number("CurrentMinorVersionNumber")?;
    let current = text("CurrentVersion")?;
    if info.version_major.is_none() {
        if let Some(cv) = &current {
            (info.version_major, info.version_minor) = split_version(cv);
        }
    }
    info.version = match (info.version_major, info.version_minor) {
        (Some(a), Some(b)) => Some(format!("{a}.{b}")),
        _ => current,
    };
    info.build = match number("CurrentBuildNumber")? {
        Some(b) => Some(b),
        None => number("CurrentBuild")?,
    };
    info.ubr = number("UBR")?;
    if let (Some(build), Some(name)) = (info.build, &info.product_name) {
        if build >= WINDOWS_11_BUILD && name.contains("Windows 10") {
            info.notes.push(format!(
                "ProductName says {name:?} but build {build} is Windows 11"
            ));
            info.product_name = Some(name.replacen("Windows 10", "Windows 11", 1));
        }
    }
    Ok(())
}

/// Fills hostname and drive letters from SYSTEM; returns
/// `PROCESSOR_ARCHITECTURE` (a fallback for the architecture).
pub fn read_system(
    set: &DiskSet,
    info: &mut OsInfo,
    h: &Hive,
) -> crate::error::Result<Option<String>> {
    let current = match h.value("Select", "Current")? {
        Some(v) => v.number()?,
        None => None,
    };
    let mut env_arch = None;
    match current {
        Some(n) => {
            let cs = format!("ControlSet{n:03}");
            info.hostname = match h.value(
                &format!("{cs}\\Control\\ComputerName\\ComputerName"),
                "ComputerName",
            )? {
                Some(v) => v.string()?,
                None => None,
            };
            env_arch = match h.value(
                &format!("{cs}\\Control\\Session Manager\\Environment"),
                "PROCESSOR_ARCHITECTURE",
            )? {
                Some(v) => v.string()?,
                None => None,
            };
        }
        None => info
            .notes
            .push(format!("{}: no Select\\Current value", h.name())),
    }
    if let Some(md) = h.key("MountedDevices")? {
        for value in md.values()? {
            let name = value.name();
            let Some(letter) = name
                .strip_prefix("\\DosDevices\\")
                .filter(|l| l.len() == 2 && l.ends_with(':'))
            else {
                continue;
            };
            let data = match value.data()? {
                ValueData::Binary(b) => b,
                _ => continue,
            };
            let (volume, source) = map_mounted_device(set, &data);
            info.mount_points.push(MountPoint {
                path: letter.to_ascii_uppercase(),
                volume,
                source,
                fs_type: None,
                subvolume: None,
            });
        }
        info.mount_points.sort_by(|a, b| a.path.cmp(&b.path));
    }
    Ok(env_arch)
}

/// The volume a `MountedDevices` value names, and the value in words:
/// 12 bytes = MBR disk signature + partition byte offset; `DMIO:ID:` + a
/// GPT partition GUID; anything else (a device path in UTF-16) unmatched.
pub fn map_mounted_device(set: &DiskSet, data: &[u8]) -> (Option<usize>, String) {
    if data.len() == 12 {
        let sig = le_u32(data, 0).unwrap_or(0);
        let offset = le_u64(data, 4).unwrap_or(0);
        let id = format!("0x{sig:08x}");
        let volume = set
            .volumes()
            .iter()
            .find(|v| {
                v.offset == Some(offset)
                    && v.disk.is_some_and(|d| {
                        set.disks().get(d).is_some_and(|disk| {
                            disk.table.scheme == Some(Scheme::Mbr)
                                && disk.table.disk_id.as_deref() == Some(id.as_str())
                        })
                    })
            })
            .map(|v| v.index);
        return (
            volume,
            format!("MBR disk signature {id}, partition offset {offset:#x}"),
        );
    }
    if let Some(guid) = data
        .strip_prefix(GPT_PREFIX)
        .and_then(|r| array::<16>(r, 0))
        .map(|g| format!("{:X}", Guid(g)))
    {
        let volume = set
            .volumes()
            .iter()
            .find(|v| v.scheme == Scheme::Gpt && v.guid.as_deref() == Some(guid.as_str()))
            .map(|v| v.index);
        return (volume, format!("GPT partition {guid}"));
    }
    (None, format!("device {}", super::regf::utf16(data)))
}
