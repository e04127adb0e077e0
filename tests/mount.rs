//! `diskimage mount` end to end through the kernel's FUSE: every image of
//! `fixtures/filesystems/` mounted and walked with ordinary file calls
//! against the source-tree listing (`mktree.py`) and TSK's `fls` truth;
//! `mount --raw` read by TSK's `fls` itself, and partitions of sparse
//! containers by `sha256sum`, `dd`, `cp`, `mmap` and a loop mount; write attempts, SIGTERM,
//! `fusermount3 -u` and a busy mount point.
//!
//! Needs `/dev/fuse` and `fusermount3` (Debian `fuse3`) and, for the raw
//! test, `fls` (Debian `sleuthkit`). Where FUSE is unusable the tests print
//! "skipped: FUSE unavailable (reason)" and pass, unless
//! `DISKIMAGE_REQUIRE_FUSE=1` (set by `.ci/run` where /dev/fuse exists):
//! then they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{gunzip, repo, sha256_file, tsv_rows};

fn dir() -> PathBuf {
    repo().join("fixtures/filesystems")
}

/// Why FUSE cannot be used here, if it cannot.
fn fuse_unavailable() -> Option<String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return Some(format!("/dev/fuse: {e}"));
    }
    let has_fusermount = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()));
    if !has_fusermount {
        return Some("no fusermount3 in PATH (Debian package fuse3)".into());
    }
    None
}

/// True when the test may run; prints the skip otherwise (or fails under
/// `DISKIMAGE_REQUIRE_FUSE=1`).
fn fuse_ready() -> bool {
    match fuse_unavailable() {
        None => true,
        Some(why) => {
            assert!(
                std::env::var_os("DISKIMAGE_REQUIRE_FUSE").is_none_or(|v| v != "1"),
                "FUSE required (DISKIMAGE_REQUIRE_FUSE=1) but unavailable: {why}"
            );
            eprintln!("skipped: FUSE unavailable ({why})");
            false
        }
    }
}

fn is_mounted(mp: &Path) -> bool {
    let mp = std::fs::canonicalize(mp).unwrap_or_else(|_| mp.to_path_buf());
    let want = mp.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

/// A running `diskimage mount`; killed (SIGTERM) and waited for on drop.
struct Mounted {
    child: Option<Child>,
    mp: PathBuf,
}

impl Mounted {
    fn start(args: &[&str], mp: &Path) -> Mounted {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_diskimage"));
        cmd.arg("mount")
            .args(args)
            .arg(mp)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn diskimage mount");
        let start = Instant::now();
        while !is_mounted(mp) {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("diskimage mount {args:?} exited ({status}) before mounting: {err}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "mount {args:?} timed out"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Mounted {
            child: Some(child),
            mp: mp.to_path_buf(),
        }
    }

    /// Sends SIGTERM and waits: the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.wait()
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return s;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = Command::new("fusermount3").arg("-u").arg(&self.mp).status();
                panic!("diskimage mount did not exit");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
    }
}

use crate::common::ListingRow as Row;

fn listing(image: &str) -> BTreeMap<String, Row> {
    crate::common::listing_tsv(&dir().join(format!("{image}.listing.tsv")))
}

fn images() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir())
        .expect("fixtures/filesystems")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".listing.tsv").map(str::to_owned)
        })
        .collect();
    v.sort();
    v
}

fn is_system(path: &str) -> bool {
    path.starts_with("/$") || path == "/lost+found" || path.starts_with("/lost+found/")
}

/// Every path below `root` (depth first), as `/a/b`.
fn walk(root: &Path, rel: &str, out: &mut BTreeMap<String, std::fs::Metadata>) {
    let here = root.join(rel.trim_start_matches('/'));
    let rd = std::fs::read_dir(&here).unwrap_or_else(|e| panic!("readdir {here:?}: {e}"));
    for e in rd {
        let e = e.expect("dir entry");
        let name = e.file_name().to_string_lossy().into_owned();
        let p = format!("{rel}/{name}");
        let m = std::fs::symlink_metadata(e.path()).unwrap_or_else(|err| panic!("stat {p}: {err}"));
        let is_dir = m.is_dir();
        out.insert(p.clone(), m);
        if is_dir {
            walk(root, &p, out);
        }
    }
}

/// fls truth: for each inode address, the paths it has (streams aside).
fn fls_links(image: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir().join(format!("{image}.fls.txt"))).unwrap_or_default();
    let mut by_addr: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let Some((head, name)) = line.split_once(":\t") else {
            continue;
        };
        if !head.starts_with("r/r") || name.contains(':') || name.contains('$') {
            continue;
        }
        let addr = head.rsplit(' ').next().unwrap_or_default();
        let record = addr.split('-').next().unwrap_or_default().to_string();
        by_addr.entry(record).or_default().push(format!("/{name}"));
    }
    by_addr.into_values().filter(|v| v.len() > 1).collect()
}

fn check_image(image: &str, work: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    let img = work.join(image);
    gunzip(&dir().join(format!("{image}.gz")), &img);
    let before = sha256_file(&img);
    let mp = work.join(format!("{image}.mnt"));
    std::fs::create_dir_all(&mp).expect("mount point");
    let mut m = Mounted::start(&[img.to_str().unwrap_or_default()], &mp);
    let fat = image.starts_with("fat");

    let mut seen = BTreeMap::new();
    walk(&mp, "", &mut seen);
    seen.retain(|p, _| !is_system(p));
    let expected = listing(image);
    let want: BTreeSet<&String> = expected
        .iter()
        .filter(|(_, r)| r.ty != "stream")
        .map(|(p, _)| p)
        .collect();
    let got: BTreeSet<&String> = seen.keys().collect();
    for p in want.difference(&got) {
        errors.push(format!("{image}: {p} missing from the mount"));
    }
    for p in got.difference(&want) {
        errors.push(format!("{image}: {p} in the mount, not in the source tree"));
    }
    for (p, row) in &expected {
        let host = mp.join(p.trim_start_matches('/'));
        if row.ty == "stream" {
            // NTFS `file:stream`: reachable by name, not listed.
            if sha256_file(&host) != row.sha256 {
                errors.push(format!("{image}: stream {p} differs or is missing"));
            }
            continue;
        }
        let Some(meta) = seen.get(p) else { continue };
        let ty = if meta.is_dir() {
            "dir"
        } else if meta.file_type().is_symlink() {
            "symlink"
        } else {
            "file"
        };
        if ty != row.ty {
            errors.push(format!("{image}: {p}: type {ty} != {}", row.ty));
            continue;
        }
        if ty != "dir" && meta.len() != row.size {
            errors.push(format!("{image}: {p}: size {} != {}", meta.len(), row.size));
        }
        if !(fat && ty == "dir") && Some(meta.mtime()) != row.mtime {
            errors.push(format!(
                "{image}: {p}: mtime {} != {:?}",
                meta.mtime(),
                row.mtime
            ));
        }
        match ty {
            "symlink" => {
                let t = std::fs::read_link(&host).ok();
                if t.as_deref() != Some(Path::new(&row.target)) {
                    errors.push(format!("{image}: {p}: link -> {t:?} != {}", row.target));
                }
            }
            "file" if sha256_file(&host) != row.sha256 => {
                errors.push(format!("{image}: {p}: sha256 differs"));
            }
            _ => {}
        }
    }
    // Hard links: names fls gives one inode share one st_ino and link count.
    for names in fls_links(image) {
        let inos: BTreeSet<u64> = names
            .iter()
            .filter_map(|n| seen.get(n).map(|m| m.ino()))
            .collect();
        let nlinks: BTreeSet<u64> = names
            .iter()
            .filter_map(|n| seen.get(n).map(|m| m.nlink()))
            .collect();
        if inos.len() != 1 || nlinks != BTreeSet::from([names.len() as u64]) {
            errors.push(format!(
                "{image}: hard links {names:?}: inodes {inos:?}, link counts {nlinks:?}"
            ));
        }
    }

    let status = m.terminate();
    if !status.success() {
        errors.push(format!("{image}: mount exited with {status} on SIGTERM"));
    }
    if is_mounted(&mp) {
        errors.push(format!("{image}: still mounted after SIGTERM"));
        let _ = Command::new("fusermount3").arg("-u").arg(&mp).status();
    }
    if sha256_file(&img) != before {
        errors.push(format!("{image}: the image changed while mounted"));
    }
    errors
}

#[test]
fn every_fixture_mounts_as_the_source_tree() {
    if !fuse_ready() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let images = images();
    assert!(images.len() >= 8, "fixtures missing: {images:?}");
    let mut errors = Vec::new();
    for image in &images {
        errors.extend(check_image(image, work.path()));
    }
    assert!(
        errors.is_empty(),
        "{} problems:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

#[test]
fn writes_fail_with_erofs_and_the_image_is_unchanged() {
    if !fuse_ready() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let img = work.path().join("ntfs.img");
    gunzip(&dir().join("ntfs.img.gz"), &img);
    let before = sha256_file(&img);
    let mp = work.path().join("mnt");
    std::fs::create_dir(&mp).expect("mount point");
    let mut m = Mounted::start(&[img.to_str().unwrap_or_default()], &mp);
    let erofs = |what: &str, r: std::io::Result<()>| match r {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
        other => panic!("{what}: {other:?}, expected EROFS"),
    };
    let f = mp.join("small.txt");
    erofs(
        "create",
        std::fs::File::create(mp.join("new.txt")).map(drop),
    );
    erofs("rm", std::fs::remove_file(&f));
    erofs("mkdir", std::fs::create_dir(mp.join("newdir")));
    erofs("rmdir", std::fs::remove_dir(mp.join("big_dir")));
    erofs("rename", std::fs::rename(&f, mp.join("moved.txt")));
    erofs(
        "chmod",
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o777)),
    );
    erofs(
        "open O_WRONLY",
        std::fs::OpenOptions::new().write(true).open(&f).map(drop),
    );
    erofs(
        "symlink",
        std::os::unix::fs::symlink("small.txt", mp.join("l")),
    );
    // A stream through its xattr: `user.ads` of /small.txt.
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", "user.ads"])
        .arg(&f)
        .output();
    if let Ok(out) = out {
        assert_eq!(out.stdout, b"alternate data stream\n", "getfattr user.ads");
    }
    assert!(m.terminate().success());
    assert!(!is_mounted(&mp));
    assert_eq!(sha256_file(&img), before, "the image changed");
}

#[test]
fn busy_or_non_empty_mount_points_are_refused_and_fusermount_ends_the_mount() {
    if !fuse_ready() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let img = work.path().join("fat16.img");
    gunzip(&dir().join("fat16.img.gz"), &img);
    let i = img.to_str().unwrap_or_default();
    let mp = work.path().join("mnt");
    std::fs::create_dir(&mp).expect("mount point");
    let mut m = Mounted::start(&[i], &mp);
    let out = crate::common::diskimage(&["mount", i, mp.to_str().unwrap_or_default()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("already a mount point"), "{err}");

    let full = work.path().join("full");
    std::fs::create_dir(&full).expect("dir");
    std::fs::write(full.join("x"), b"x").expect("file");
    let out = crate::common::diskimage(&["mount", i, full.to_str().unwrap_or_default()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not empty"), "{err}");

    // Unmounted from outside: the command notices and exits cleanly.
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mp)
        .status()
        .expect("fusermount3");
    assert!(st.success());
    assert!(m.wait().success());
    assert!(!is_mounted(&mp));
}

#[test]
fn raw_mount_is_read_by_fls_as_at_fixture_time() {
    if !fuse_ready() {
        return;
    }
    if Command::new("fls").arg("-V").output().is_err() {
        assert!(
            std::env::var_os("DISKIMAGE_REQUIRE_FUSE").is_none_or(|v| v != "1"),
            "fls (sleuthkit) is required under DISKIMAGE_REQUIRE_FUSE=1"
        );
        eprintln!("skipped: no fls (Debian sleuthkit) to read the raw mount");
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let expected: BTreeMap<String, String> = tsv_rows(&dir().join("expected.tsv"))
        .into_iter()
        .map(|r| (r[0].clone(), r[3].clone()))
        .collect();
    for image in ["ext4.img", "fat32.img", "ntfs.img"] {
        let img = work.path().join(image);
        gunzip(&dir().join(format!("{image}.gz")), &img);
        let mp = work.path().join(format!("{image}.raw"));
        std::fs::create_dir(&mp).expect("mount point");
        let mut m = Mounted::start(&["--raw", img.to_str().unwrap_or_default()], &mp);
        let disk = mp.join("disk0");
        assert_eq!(
            Some(&sha256_file(&disk)),
            expected.get(image),
            "{image}: disk0 sha256"
        );
        let out = Command::new("fls")
            .args(["-r", "-p"])
            .arg(&disk)
            .output()
            .expect("fls");
        let mut lines: Vec<&str> = std::str::from_utf8(&out.stdout)
            .expect("utf-8")
            .lines()
            .collect();
        lines.sort_unstable();
        let got = lines.join("\n");
        let want =
            std::fs::read_to_string(dir().join(format!("{image}.fls.txt"))).expect("fls truth");
        assert_eq!(
            got.trim_end(),
            want.trim_end(),
            "{image}: fls on the raw mount"
        );
        assert!(m.terminate().success());
    }
}

#[test]
fn all_and_raw_expose_every_volume_of_a_partitioned_disk() {
    if !fuse_ready() {
        return;
    }
    let vdir = repo().join("fixtures/volumes");
    let work = tempfile::tempdir().expect("tempdir");
    let img = work.path().join("gpt.img");
    gunzip(&vdir.join("gpt.img.gz"), &img);
    let i = img.to_str().unwrap_or_default();

    // --all: one directory per volume, named <index>-<blkid label>.
    let labels: Vec<String> = tsv_rows(&vdir.join("fs.tsv"))
        .into_iter()
        .filter(|r| r[0] == "gpt.img")
        .map(|r| format!("{}-{}", r[1], r[4]))
        .collect();
    assert_eq!(labels.len(), 3);
    let mp = work.path().join("all");
    std::fs::create_dir(&mp).expect("mount point");
    let mut m = Mounted::start(&["--all", i], &mp);
    let mut got: Vec<String> = std::fs::read_dir(&mp)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(got, labels);
    for l in &labels {
        assert!(
            std::fs::read_dir(mp.join(l)).is_ok(),
            "{l} cannot be listed"
        );
    }
    assert!(m.terminate().success());

    // --raw: disk0 and disk0pN, sized as sfdisk reports the partitions.
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(vdir.join("gpt.img.sfdisk.json")).expect("sfdisk json"),
    )
    .expect("json");
    let mp = work.path().join("raw");
    std::fs::create_dir(&mp).expect("mount point");
    let mut m = Mounted::start(&["--raw", i], &mp);
    assert_eq!(sha256_file(&mp.join("disk0")), sha256_file(&img));
    let parts = json["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions");
    for (n, p) in parts.iter().enumerate() {
        let f = mp.join(format!("disk0p{}", n + 1));
        let size = p["size"].as_u64().expect("size") * 512;
        assert_eq!(
            std::fs::metadata(&f).map(|m| m.len()).ok(),
            Some(size),
            "{f:?}"
        );
    }
    assert!(m.terminate().success());

    // LVM2: the LV as lvm/<vg>/<lv>, sized as `lvs` reports it.
    let img = work.path().join("lvm-part.img");
    gunzip(&vdir.join("lvm-part.img.gz"), &img);
    let lvs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vdir.join("lvm-part.lvs.json")).expect("lvs json"))
            .expect("json");
    let lv = &lvs["report"][0]["lv"][0];
    let path = format!(
        "lvm/{}/{}",
        lv["vg_name"].as_str().expect("vg"),
        lv["lv_name"].as_str().expect("lv")
    );
    let size: u64 = lv["lv_size"]
        .as_str()
        .and_then(|s| s.strip_suffix('B'))
        .and_then(|s| s.parse().ok())
        .expect("lv_size");
    let mp = work.path().join("lvm");
    std::fs::create_dir(&mp).expect("mount point");
    let mut m = Mounted::start(&["--raw", img.to_str().unwrap_or_default()], &mp);
    assert_eq!(
        std::fs::metadata(mp.join(&path)).map(|m| m.len()).ok(),
        Some(size),
        "{path}"
    );
    assert!(m.terminate().success());
}

/// `fixtures/mount/bigdir.vmdk`: `big/` of 100,000 entries (mke2fs -d of a
/// source directory, see fixtures/mount/make.sh). `ls -f` through the mount
/// lists every name of the source directory once, `.` and `..` included;
/// the listing is served by offset from one `opendir` (see
/// src/mount/volume_fs.rs), so this costs one pass over the directory.
#[test]
fn a_directory_of_100000_entries_lists_every_name_once() {
    if !fuse_ready() {
        return;
    }
    let fixture = repo().join("fixtures/mount");
    let expected: BTreeMap<String, String> = tsv_rows(&fixture.join("bigdir.tsv"))
        .into_iter()
        .filter_map(|r| Some((r.first()?.clone(), r.get(1)?.clone())))
        .collect();
    let entries: usize = expected["entries"].parse().expect("entries");
    assert_eq!(entries, 100_000);
    assert_eq!(
        expected["debugfs_entries"], expected["entries"],
        "debugfs agrees"
    );
    let work = tempfile::tempdir().expect("tempdir");
    let names_txt = work.path().join("names.txt");
    gunzip(&fixture.join("names.txt.gz"), &names_txt);
    let want: Vec<String> = std::fs::read_to_string(&names_txt)
        .expect("names.txt")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(want.len(), entries);

    let image = fixture.join("bigdir.vmdk");
    let before = sha256_file(&image);
    let mp = work.path().join("mnt");
    std::fs::create_dir(&mp).expect("mkdir");
    let mut m = Mounted::start(&[image.to_str().expect("utf-8 path")], &mp);

    let ls = Command::new("ls")
        .arg("-f")
        .arg(mp.join("big"))
        .output()
        .expect("run ls -f");
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let text = String::from_utf8(ls.stdout).expect("utf-8 names");
    let mut got: Vec<&str> = text.lines().collect();
    assert_eq!(got.len(), entries + 2, "ls -f | wc -l");
    got.sort_unstable();
    let dots = got.iter().filter(|n| **n == "." || **n == "..").count();
    assert_eq!(dots, 2);
    got.retain(|n| *n != "." && *n != "..");
    // Every name once, exactly the source directory's names.
    assert!(got.windows(2).all(|w| w[0] != w[1]), "a name listed twice");
    let missing: Vec<&String> = want
        .iter()
        .filter(|n| got.binary_search(&n.as_str()).is_err())
        .take(5)
        .collect();
    assert!(missing.is_empty(), "names not listed, e.g. {missing:?}");
    assert_eq!(got.len(), want.len());

    // A sample opened by name: every 9,973rd name (links to empty files).
    for name in want.iter().step_by(9_973) {
        let meta = std::fs::metadata(mp.join("big").join(name))
            .unwrap_or_else(|e| panic!("stat big/{name}: {e}"));
        assert!(meta.is_file() && meta.len() == 0, "big/{name}");
        assert_eq!(meta.nlink(), 25_000, "big/{name}");
    }
    assert!(m.terminate().success());
    assert_eq!(sha256_file(&image), before, "the image is unchanged");
}

/// Whether this process is root (loop mounts need it).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The kernel's driver for a fixture file system (`ext4.img` -> `ext4`),
/// if `/proc/filesystems` lists it.
fn kernel_fs_type(fs_image: &str) -> Option<&'static str> {
    let ty = match fs_image.split('.').next()? {
        f if f.starts_with("ext") => "ext4",
        f if f.starts_with("fat") => "vfat",
        "ntfs" => "ntfs3",
        _ => return None,
    };
    let listed = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    listed
        .lines()
        .any(|l| l.split_whitespace().last() == Some(ty))
        .then_some(ty)
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    have >= (major, minor)
}

/// The sha256 of `path` as a memory map of it reads (`MAP_SHARED`, as
/// programs that map a disk image do). A map cannot be made without
/// `unsafe`; this is the tests' one.
#[allow(unsafe_code)]
fn sha256_mapped(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // SAFETY: the file is a read-only FUSE file served by the mount this
    // test started; nothing truncates or writes it while it is mapped.
    let map = unsafe { memmap2::Mmap::map(&f) }
        .unwrap_or_else(|e| panic!("mmap {}: {e}", path.display()));
    crate::common::hex(&Sha256::digest(&map[..]))
}

/// `fixtures/filesystems/containers.tsv`: partitions of a sparse VMDK and
/// a VHDX (answered from maps of the image, opened for direct I/O) and of
/// a streamOptimized VMDK (inflated, through the page cache), each read
/// through `mount --raw` by the programs a forensic user runs on them:
/// `sha256sum`, `dd bs=1M`, `cp`, a memory map, and (as root) a loop
/// mount `-o loop,ro` whose files match the file system's source tree.
#[test]
fn raw_partitions_of_sparse_containers_read_by_dd_cp_mmap_and_loop_mounts() {
    if !fuse_ready() {
        return;
    }
    let root = is_root();
    if !root {
        eprintln!("raw partitions: not root, the loop mounts are skipped");
    }
    let work = tempfile::tempdir().expect("tempdir");
    for row in tsv_rows(&dir().join("containers.tsv")) {
        let [container, part, fs_image, sha, ..] = row.as_slice() else {
            panic!("containers.tsv: short row {row:?}");
        };
        let name = container.trim_end_matches(".gz");
        let img = work.path().join(name);
        gunzip(&dir().join(container), &img);
        let before = sha256_file(&img);
        let mp = work.path().join(format!("{name}.{part}.raw"));
        std::fs::create_dir(&mp).expect("mount point");
        let mut m = Mounted::start(&["--raw", img.to_str().expect("utf-8 path")], &mp);
        let file = mp.join(format!("disk0p{part}"));
        let what = format!("{name} partition {part}");

        assert_eq!(&sha256_file(&file), sha, "{what}: read");
        assert_eq!(&sha256_mapped(&file), sha, "{what}: mmap");
        let out = Command::new("sha256sum")
            .arg(&file)
            .output()
            .expect("sha256sum");
        assert!(out.status.success(), "{what}: sha256sum failed");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).split(' ').next(),
            Some(sha.as_str()),
            "{what}: sha256sum"
        );
        let copy = work.path().join("copy");
        let dd = Command::new("dd")
            .arg(format!("if={}", file.display()))
            .arg(format!("of={}", copy.display()))
            .args(["bs=1M", "status=none"])
            .status()
            .expect("dd");
        assert!(dd.success(), "{what}: dd failed");
        assert_eq!(&sha256_file(&copy), sha, "{what}: dd bs=1M");
        std::fs::remove_file(&copy).expect("rm copy");
        assert!(
            Command::new("cp")
                .arg(&file)
                .arg(&copy)
                .status()
                .expect("cp")
                .success(),
            "{what}: cp failed"
        );
        assert_eq!(&sha256_file(&copy), sha, "{what}: cp");
        std::fs::remove_file(&copy).expect("rm copy");

        // Files stored verbatim are read 1 MiB at a time by programs that
        // ask st_blksize (direct I/O: each read is a round trip); inflated
        // ones keep the page cache and the usual 4 KiB.
        // (`FUSE_DIRECT_IO_ALLOW_MMAP`, Linux 6.6 and later).
        let blksize = std::fs::metadata(&file).expect("stat").blksize();
        let direct = !name.contains("stream") && kernel_at_least(6, 6);
        assert_eq!(
            blksize,
            if direct { 1 << 20 } else { 4096 },
            "{what}: st_blksize"
        );

        let fs_type = kernel_fs_type(fs_image);
        if root && fs_type.is_none() {
            eprintln!("{what}: the kernel has no driver for {fs_image}, loop mount skipped");
        }
        if let Some(fs_type) = fs_type.filter(|_| root) {
            let fs_mp = work.path().join(format!("{name}.p{part}"));
            std::fs::create_dir(&fs_mp).expect("mount point");
            let out = Command::new("mount")
                .args(["-t", fs_type, "-o", "loop,ro"])
                .arg(&file)
                .arg(&fs_mp)
                .output()
                .expect("mount");
            assert!(
                out.status.success(),
                "{what}: mount -o loop,ro: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut wrong = Vec::new();
            for (p, r) in listing(fs_image) {
                if r.ty == "file" && sha256_file(&fs_mp.join(p.trim_start_matches('/'))) != r.sha256
                {
                    wrong.push(p);
                }
            }
            let umount = Command::new("umount").arg(&fs_mp).status().expect("umount");
            assert!(
                wrong.is_empty(),
                "{what}: files differ in the loop mount: {wrong:?}"
            );
            assert!(umount.success(), "{what}: umount");
        }
        assert!(m.terminate().success(), "{what}: mount exit");
        assert_eq!(sha256_file(&img), before, "{what}: the image changed");
    }
}
