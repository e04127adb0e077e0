//! Linux: os-release (or lsb-release, redhat-release), hostname, fstab
//! mount points matched to volumes, a separate `/usr` merged, and the
//! architecture from the ELF header of `/bin/sh`'s target (or, when it is
//! absent or dangling, of another ELF file: `/usr/bin/*`, `/sbin/init`,
//! the dynamic loader).

use diskimage_fs::FileSystem;

use super::guest::Guest;
use super::{arch, split_version, MountPoint, OsFamily, OsInfo};
use crate::diskset::{DiskSet, Volume};
use crate::error::Scheme;

/// Most fstab lines read.
pub const MAX_FSTAB_ENTRIES: usize = 4096;

/// Whether `fs` looks like a Linux root: an `/etc` with os-release, fstab
/// or one of the older release files (links not followed).
pub fn is_root(fs: &dyn FileSystem) -> bool {
    [
        "/etc/os-release",
        "/usr/lib/os-release",
        "/etc/fstab",
        "/etc/lsb-release",
        "/etc/redhat-release",
    ]
    .iter()
    .any(|p| fs.metadata(p).is_ok())
}

/// One line of `/etc/fstab`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    /// The device (`UUID=...`, `LABEL=...`, `/dev/sda1`).
    pub spec: String,
    /// The mount point (`/`, `/usr`, `none`).
    pub file: String,
    /// The file-system type.
    pub vfstype: String,
    /// The mount options (`defaults`, `subvol=root,compress=zstd:1`).
    pub options: String,
}

impl FstabEntry {
    /// The Btrfs subvolume the options name: `subvol=PATH` as written, or
    /// `subvolid=N` as `id:N`.
    pub fn subvolume(&self) -> Option<String> {
        let mut id = None;
        for o in self.options.split(',') {
            if let Some(p) = o.strip_prefix("subvol=") {
                return Some(p.to_owned());
            }
            if let Some(n) = o.strip_prefix("subvolid=") {
                id = Some(format!("id:{n}"));
            }
        }
        id
    }
}

/// Parses fstab text: comments and blank lines skipped, `\040`-style
/// octal escapes decoded.
pub fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(unescape);
            Some(FstabEntry {
                spec: f.next()?,
                file: f.next()?,
                vfstype: f.next().unwrap_or_default(),
                options: f.next().unwrap_or_default(),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| b.get(i) == Some(&b'\\') && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct.and_then(|o| u8::from_str_radix(std::str::from_utf8(o).ok()?, 8).ok()) {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.extend(b.get(i));
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The volume an fstab device names: by file-system UUID or label, GPT
/// partition GUID or name, MBR `PARTUUID` (`signature-NN`), LVM name, or a
/// `/dev/sdXN`-style name (disk letter = disk of the set, N = partition).
pub fn match_spec(set: &DiskSet, spec: &str) -> Option<usize> {
    let vols = set.volumes();
    let fs_uuid = |u: &str| {
        vols.iter().find(|v| {
            v.fs.as_ref()
                .and_then(|f| f.uuid.as_deref())
                .is_some_and(|x| x.eq_ignore_ascii_case(u))
        })
    };
    let fs_label = |l: &str| {
        vols.iter()
            .find(|v| v.fs.as_ref().and_then(|f| f.label.as_deref()) == Some(l))
    };
    let part_uuid = |u: &str| -> Option<&Volume> {
        if let Some(v) = vols
            .iter()
            .find(|v| v.guid.as_deref().is_some_and(|g| g.eq_ignore_ascii_case(u)))
        {
            return Some(v);
        }
        // MBR: PARTUUID=<disk signature>-<partition number, 2 hex digits>.
        let (sig, num) = u.split_once('-')?;
        let num = u32::from_str_radix(num, 16).ok()?;
        let id = format!("0x{}", sig.to_ascii_lowercase());
        vols.iter().find(|v| {
            v.number == Some(num)
                && v.disk.and_then(|d| set.disks().get(d)).is_some_and(|d| {
                    d.table.scheme == Some(Scheme::Mbr) && d.table.disk_id.as_deref() == Some(&id)
                })
        })
    };
    let part_label = |l: &str| {
        vols.iter()
            .find(|v| v.scheme == Scheme::Gpt && v.name.as_deref() == Some(l))
    };
    let found = if let Some(u) = spec
        .strip_prefix("UUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-uuid/"))
    {
        fs_uuid(u.trim_matches('"'))
    } else if let Some(l) = spec
        .strip_prefix("LABEL=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-label/"))
    {
        fs_label(l.trim_matches('"'))
    } else if let Some(u) = spec
        .strip_prefix("PARTUUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-partuuid/"))
    {
        part_uuid(u.trim_matches('"'))
    } else if let Some(l) = spec
        .strip_prefix("PARTLABEL=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-partlabel/"))
    {
        part_label(l.trim_matches('"'))
    } else if let Some(dev) = spec.strip_prefix("/dev/") {
        match_dev(set, dev)
    } else {
        None
    };
    found.map(|v| v.index)
}

/// The LV (`vg/lv`) a `/dev/` name stands for: `mapper/vg-lv` (dashes
/// inside names doubled by device-mapper) or `vg/lv`.
fn lv_name(dev: &str) -> Option<String> {
    if let Some(m) = dev.strip_prefix("mapper/") {
        // device-mapper doubles dashes inside names: vg--a-lv--b.
        let mut split = None;
        let b = m.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b.get(i) == Some(&b'-') {
                if b.get(i + 1) == Some(&b'-') {
                    i += 2;
                    continue;
                }
                split = Some(i);
                break;
            }
            i += 1;
        }
        split.map(|i| {
            format!(
                "{}/{}",
                m.get(..i).unwrap_or("").replace("--", "-"),
                m.get(i + 1..).unwrap_or("").replace("--", "-")
            )
        })
    } else if dev.matches('/').count() == 1 {
        Some(dev.to_owned())
    } else {
        None
    }
}

/// `/dev/` names: `sda1`, `vdb2`, `xvda1`, `hda3`, `nvme0n1p2`,
/// `mmcblk0p1`, `mapper/vg-lv`, `vg/lv`.
fn match_dev<'s>(set: &'s DiskSet, dev: &str) -> Option<&'s Volume> {
    if let Some(name) = lv_name(dev) {
        return set
            .volumes()
            .iter()
            .find(|v| v.scheme == Scheme::Lvm2 && v.name.as_deref() == Some(name.as_str()));
    }
    let (disk, number) = disk_and_partition(dev)?;
    set.volumes().iter().find(|v| {
        v.disk == Some(disk)
            && match number {
                Some(n) => v.number == Some(n),
                None => v.scheme == Scheme::WholeDisk,
            }
    })
}

/// The disk index and partition number of a kernel device name.
fn disk_and_partition(dev: &str) -> Option<(usize, Option<u32>)> {
    let digits_at = |s: &str| s.find(|c: char| c.is_ascii_digit()).unwrap_or(s.len());
    for prefix in ["nvme", "mmcblk"] {
        if let Some(rest) = dev.strip_prefix(prefix) {
            let (ctrl, part) = match rest.split_once('p') {
                Some((c, p)) => (c, Some(p.parse().ok()?)),
                None => (rest, None),
            };
            let ctrl = ctrl.split('n').next()?.parse().ok()?;
            return Some((ctrl, part));
        }
    }
    let rest = ["sd", "vd", "xvd", "hd"]
        .iter()
        .find_map(|p| dev.strip_prefix(p))?;
    let cut = digits_at(rest);
    let (letters, num) = rest.split_at(cut);
    if letters.is_empty() || !letters.bytes().all(|c| c.is_ascii_lowercase()) {
        return None;
    }
    // sda = 0, sdz = 25, sdaa = 26.
    let mut disk = 0usize;
    for c in letters.bytes() {
        disk = disk
            .checked_mul(26)?
            .checked_add(usize::from(c - b'a') + 1)?;
    }
    let part = if num.is_empty() {
        None
    } else {
        Some(num.parse().ok()?)
    };
    Some((disk - 1, part))
}

/// Parses `KEY=value` lines (os-release, lsb-release): quotes removed,
/// backslash escapes taken literally.
pub fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            let mut out = String::new();
            let mut chars = v.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    out.extend(chars.next());
                } else {
                    out.push(c);
                }
            }
            Some((k.trim().to_owned(), out))
        })
        .collect()
}

fn get(env: &[(String, String)], key: &str) -> Option<String> {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
}

/// Reads what the Linux root on volume `v` says.
pub fn detect(set: &DiskSet, v: &Volume, root: Box<dyn FileSystem>) -> OsInfo {
    detect_at(set, v, root, None)
}

/// Reads what the Linux root in the Btrfs subvolume `subvolume` (a
/// directory of the root of volume `v`, as a mount shows it) says.
pub fn detect_in_subvolume(
    set: &DiskSet,
    v: &Volume,
    root: Box<dyn FileSystem>,
    subvolume: &str,
) -> OsInfo {
    detect_at(set, v, root, Some(subvolume))
}

/// Whether two `subvol=` values name the same subvolume (`root`, `/root`).
fn same_subvolume(a: Option<&str>, b: Option<&str>) -> bool {
    let norm = |s: Option<&str>| s.map(|s| s.trim_matches('/').to_owned());
    norm(a) == norm(b)
}

fn detect_at(set: &DiskSet, v: &Volume, root: Box<dyn FileSystem>, subvol: Option<&str>) -> OsInfo {
    let folder = subvol.map_or_else(|| "/".to_owned(), |s| format!("/{}", s.trim_matches('/')));
    let mut info = OsInfo::new(OsFamily::Linux, v.index, &folder);
    let mut guest = Guest::new(root);
    // fstab first: a separate /usr must be mounted before os-release and
    // /bin/sh are followed into it.
    match guest.read_text("/etc/fstab") {
        Ok(text) => {
            let mut mounts: Vec<(String, usize, Option<String>)> = Vec::new();
            let entries = parse_fstab(&text);
            if entries.len() > MAX_FSTAB_ENTRIES {
                info.notes.push(format!(
                    "fstab: {} lines, only the first {MAX_FSTAB_ENTRIES} read",
                    entries.len()
                ));
            }
            for e in entries.into_iter().take(MAX_FSTAB_ENTRIES) {
                let volume = match_spec(set, &e.spec);
                let swap = e.vfstype == "swap";
                let sub = e.subvolume();
                if volume.is_none() {
                    info.notes.push(format!(
                        "fstab: {} ({}) matches no volume of the set",
                        e.spec, e.file
                    ));
                }
                // Another volume, or another subvolume of the root's.
                let other = |n: usize| n != v.index || !same_subvolume(sub.as_deref(), subvol);
                if let Some(n) = volume.filter(|&n| other(n) && !swap) {
                    // Each (sub)volume is mounted once, at its first mount point.
                    if e.file.starts_with('/')
                        && e.file != "/"
                        && !mounts.iter().any(|(_, m, s)| {
                            *m == n && same_subvolume(s.as_deref(), sub.as_deref())
                        })
                    {
                        mounts.push((e.file.clone(), n, sub.clone()));
                    }
                }
                info.mount_points.push(MountPoint {
                    path: if swap { "swap".into() } else { e.file },
                    volume,
                    source: e.spec,
                    fs_type: Some(e.vfstype).filter(|t| !t.is_empty()),
                    subvolume: sub,
                });
            }
            mounts.sort_by_key(|(p, _, _)| p.len());
            for (path, n, sub) in mounts {
                let Some(vol) = set.volume(n).filter(|vol| vol.mountable) else {
                    continue;
                };
                let is_btrfs = vol
                    .fs
                    .as_ref()
                    .is_some_and(|f| f.kind == diskimage_fs::FsKind::Btrfs);
                let fs = match sub.filter(|_| is_btrfs) {
                    Some(sub) => set.mount_subvolume(vol, &sub),
                    None => set.mount(vol),
                };
                match fs {
                    Ok(fs) => guest.mount(&path, fs),
                    Err(e) => info
                        .notes
                        .push(format!("{path}: volume {n} not mounted: {e}")),
                }
            }
        }
        Err(e) => info.notes.push(format!("no fstab read: {e}")),
    }
    if !info.mount_points.iter().any(|m| m.path == "/") {
        info.mount_points.insert(
            0,
            MountPoint {
                path: "/".into(),
                volume: Some(v.index),
                source: "(the root file system; fstab has no / line)".into(),
                fs_type: v.fs.as_ref().map(|f| f.kind.as_str().to_owned()),
                subvolume: subvol.map(str::to_owned),
            },
        );
    }
    read_release(&guest, &mut info);
    info.hostname = ["/etc/hostname", "/etc/HOSTNAME"].iter().find_map(|p| {
        guest
            .read_text(p)
            .ok()
            .and_then(|t| t.lines().next().map(|l| l.trim().to_owned()))
            .filter(|h| !h.is_empty())
    });
    architecture(&guest, &mut info);
    info
}

/// The dynamic loaders of the common architectures, where a distribution
/// puts them (x86_64, aarch64, armhf, x86, ppc64le, s390x, riscv64,
/// loongarch64).
const LOADERS: [&str; 8] = [
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-linux-aarch64.so.1",
    "/lib/ld-linux-armhf.so.3",
    "/lib/ld-linux.so.2",
    "/lib64/ld64.so.2",
    "/lib/ld64.so.1",
    "/lib/ld-linux-riscv64-lp64d.so.1",
    "/lib64/ld-linux-loongarch-lp64d.so.1",
];

/// Most `/usr/bin` entries tried when `/bin/sh` gives no architecture.
pub const MAX_ARCH_CANDIDATES: usize = 64;

/// The architecture from the ELF header of `/bin/sh`'s target or, when
/// that is absent, a dangling link or not ELF, of the first ELF file among
/// `/usr/bin/*` (sorted, the first [`MAX_ARCH_CANDIDATES`]), `/sbin/init`
/// and the dynamic loaders; what was tried is a note.
fn architecture(guest: &Guest, info: &mut OsInfo) {
    let elf = |path: &str| -> Result<&'static str, String> {
        let head = guest.read_head(path, 64)?;
        arch::elf_machine(&head).ok_or_else(|| format!("{path}'s target is not an ELF file"))
    };
    match elf("/bin/sh") {
        Ok(a) => {
            info.architecture = Some(a.to_owned());
            return;
        }
        Err(e) => info
            .notes
            .push(format!("/bin/sh gives no architecture: {e}")),
    }
    let mut candidates: Vec<String> = guest
        .list("/usr/bin")
        .unwrap_or_default()
        .into_iter()
        .take(MAX_ARCH_CANDIDATES)
        .map(|n| format!("/usr/bin/{n}"))
        .collect();
    candidates.push("/sbin/init".into());
    candidates.extend(LOADERS.iter().map(|l| (*l).to_owned()));
    for path in candidates {
        if let Ok(a) = elf(&path) {
            info.architecture = Some(a.to_owned());
            info.notes
                .push(format!("architecture from the ELF header of {path}"));
            return;
        }
    }
    info.notes.push(
        "no ELF file found in /usr/bin, /sbin/init or the dynamic loaders: architecture unknown"
            .into(),
    );
}

fn read_release(guest: &Guest, info: &mut OsInfo) {
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        match guest.read_text(path) {
            Ok(text) => {
                let env = parse_env(&text);
                info.distribution = get(&env, "ID");
                info.product_name = get(&env, "NAME");
                info.pretty_name = get(&env, "PRETTY_NAME");
                info.edition = get(&env, "VARIANT");
                info.version = get(&env, "VERSION_ID");
                if let Some(v) = &info.version {
                    (info.version_major, info.version_minor) = split_version(v);
                }
                return;
            }
            Err(e) => {
                if guest.exists(path) {
                    info.notes.push(format!("{path} not read: {e}"));
                }
            }
        }
    }
    if let Ok(text) = guest.read_text("/etc/lsb-release") {
        let env = parse_env(&text);
        info.distribution = get(&env, "DISTRIB_ID").map(|d| d.to_lowercase());
        info.product_name = get(&env, "DISTRIB_ID");
        info.pretty_name = get(&env, "DISTRIB_DESCRIPTION");
        info.version = get(&env, "DISTRIB_RELEASE");
    } else if let Ok(text) = guest.read_text("/etc/redhat-release") {
        let line = text.lines().next().unwrap_or("").trim().to_owned();
        info.version = line
            .split_once(" release ")
            .and_then(|(_, r)| r.split_whitespace().next())
            .map(str::to_owned);
        info.product_name = line.split_once(" release ").map(|(n, _)| n.to_owned());
        info.pretty_name = Some(line).filter(|l| !l.is_empty());
    } else {
        info.notes
            .push("no os-release, lsb-release or redhat-release".into());
    }
    if let Some(v) = &info.version {
        (info.version_major, info.version_minor) = split_version(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_device_names() {
        assert_eq!(disk_and_partition("sda1"), Some((0, Some(1))));
        assert_eq!(disk_and_partition("vdb12"), Some((1, Some(12))));
        assert_eq!(disk_and_partition("sdaa"), Some((26, None)));
        assert_eq!(disk_and_partition("nvme1n1p3"), Some((1, Some(3))));
        assert_eq!(disk_and_partition("sd1"), None);
        assert_eq!(disk_and_partition("loop0"), None);
        assert_eq!(
            lv_name("mapper/vg--a-root--lv").as_deref(),
            Some("vg-a/root-lv")
        );
        assert_eq!(lv_name("vgfix/linear").as_deref(), Some("vgfix/linear"));
        assert_eq!(lv_name("sda1"), None);
    }

    #[test]
    fn fstab_and_os_release_parsing() {
        let f = parse_fstab(
            "# c\nUUID=ab /  ext4 defaults 0 1\n\nLABEL=my\\040disk /mnt/a\\040b vfat\n",
        );
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].spec, "LABEL=my disk");
        assert_eq!(f[1].file, "/mnt/a b");
        let e = parse_env("NAME=\"Debian GNU/Linux\"\nID=debian\nX='a b'\n# c=d\n");
        assert_eq!(get(&e, "NAME").as_deref(), Some("Debian GNU/Linux"));
        assert_eq!(get(&e, "X").as_deref(), Some("a b"));
        assert_eq!(get(&e, "c"), None);
    }
}
