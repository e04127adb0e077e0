//! Btrfs over several disks (fixtures/btrfs-raid/make.sh): sets made by
//! mkfs.btrfs over loop devices (RAID0, RAID1, RAID10, RAID1C3, RAID5) and
//! written by the kernel, opened as a disk set of QCOW2 disks. The file
//! system is one volume of the set, read across every disk, and its tree
//! (path, type, size, sha256, target, inode, mode, uid, gid, nlink, mtime)
//! is what a read-only loop mount of every device gave, by path and
//! through `visit_dir`, in any order of the disks; a missing mirror reads
//! from the copies with a warning, a missing RAID0 member and RAID5 data
//! fail naming the device and the profile; `ls`, `cat` and `extract` on
//! the command line see the file system once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use diskimage::diskset::DiskSet;
use diskimage::fs::{ErrorKind, FileSystem, Metadata};
use diskimage::OpenOptions;

use crate::common::{
    diskimage, read_all, repo, sha256_bytes, sha256_file, tsv_rows, visit_rows, walk_rows, Unpacked,
};

fn dir() -> PathBuf {
    repo().join("fixtures/btrfs-raid")
}

/// The sets and their number of disks.
const SETS: [(&str, usize); 5] = [
    ("raid0", 2),
    ("raid1", 2),
    ("raid10", 4),
    ("raid1c3", 3),
    ("raid5", 3),
];

/// One row of the kernel's listing (fixtures/btrfs/truth.py), every
/// column as text.
type Row = Vec<String>;

fn truth(set: &str) -> BTreeMap<String, Row> {
    tsv_rows(&dir().join(format!("{set}.listing.tsv")))
        .into_iter()
        .map(|r| {
            assert_eq!(r.len(), 11, "{r:?}");
            (r[0].clone(), r[1..].to_vec())
        })
        .collect()
}

fn row(m: &Metadata, sha: String, target: String) -> Row {
    let kind = match m.file_type {
        diskimage::fs::FileType::File => "file",
        diskimage::fs::FileType::Directory => "dir",
        diskimage::fs::FileType::Symlink => "symlink",
        diskimage::fs::FileType::Special => "special",
    };
    let mtime = m.modified.map_or(0, |t| {
        i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos)
    });
    vec![
        kind.to_string(),
        m.size.to_string(),
        sha,
        target,
        m.inode.unwrap_or(0).to_string(),
        format!("{:o}", m.mode.unwrap_or(0)),
        m.uid.unwrap_or(u32::MAX).to_string(),
        m.gid.unwrap_or(u32::MAX).to_string(),
        m.nlink.unwrap_or(0).to_string(),
        mtime.to_string(),
    ]
}

/// The disks of `set` numbered `disks` (device ids), unpacked.
fn paths(u: &Unpacked, set: &str, disks: &[usize]) -> Vec<PathBuf> {
    disks
        .iter()
        .map(|n| u.path(&format!("{set}.{n}.qcow2")))
        .collect()
}

fn open_set(u: &Unpacked, set: &str, disks: &[usize], strict: bool) -> DiskSet {
    let options = OpenOptions::default().strict(strict);
    DiskSet::open(&paths(u, set, disks), &options)
        .unwrap_or_else(|e| panic!("{set} {disks:?}: {e}"))
}

/// The one file system of the set, opened through its default volume.
fn mount(set: &DiskSet) -> Box<dyn FileSystem> {
    let v = set.default_volume(None).expect("one readable volume");
    set.mount(v).expect("mount")
}

fn compare(what: &str, fs: &dyn FileSystem, want: &BTreeMap<String, Row>) {
    for (how, got) in [("path", walk_rows(fs, row)), ("visit", visit_rows(fs, row))] {
        let got = got.unwrap_or_else(|e| panic!("{what} ({how}): {e}"));
        let mut errors = Vec::new();
        for (p, w) in want {
            match got.get(p) {
                None => errors.push(format!("{p} missing")),
                Some(o) if o != w => errors.push(format!("{p}: ours {o:?}, kernel {w:?}")),
                _ => {}
            }
        }
        errors.extend(
            got.keys()
                .filter(|p| !want.contains_key(*p))
                .map(|p| format!("{p} not in the kernel's listing")),
        );
        assert!(errors.is_empty(), "{what} ({how}):\n{}", errors.join("\n"));
    }
}

#[test]
fn btrfs_raid_sets_read_as_the_kernel_serves_them() {
    let u = Unpacked::new(&dir());
    for (set, n) in SETS.into_iter().filter(|(s, _)| *s != "raid5") {
        let all: Vec<usize> = (1..=n).collect();
        let ds = open_set(&u, set, &all, true);
        // One file system: every disk is a volume of it, one mountable.
        let members: Vec<_> = ds
            .volumes()
            .iter()
            .filter_map(|v| v.member.clone())
            .collect();
        assert_eq!(members.len(), n, "{set}: {:?}", ds.volumes());
        assert_eq!(
            ds.volumes().iter().filter(|v| v.mountable).count(),
            1,
            "{set}"
        );
        for (i, m) in members.iter().enumerate() {
            assert_eq!(m.devid, i as u64 + 1, "{set}");
            assert_eq!(m.devices, n as u64, "{set}");
            assert_eq!(m.members.len(), n, "{set}");
        }
        assert!(ds.warnings().is_empty(), "{set}: {:?}", ds.warnings());
        let fs = mount(&ds);
        assert_eq!(fs.label().as_deref(), Some(set));
        compare(set, fs.as_ref(), &truth(set));
        assert!(fs.warnings().is_empty(), "{set}: {:?}", fs.warnings());
        // The disks in reverse order: the same file system, read through
        // device 1 whatever its place.
        let mut rev = all.clone();
        rev.reverse();
        let ds = open_set(&u, set, &rev, true);
        let v = ds.default_volume(None).expect("default volume");
        assert_eq!(v.member.as_ref().map(|m| m.devid), Some(1), "{set}");
        compare(&format!("{set} reversed"), mount(&ds).as_ref(), &truth(set));
    }
}

#[test]
fn btrfs_raid_any_member_volume_mounts_the_whole_file_system() {
    let u = Unpacked::new(&dir());
    let ds = open_set(&u, "raid0", &[1, 2], false);
    let second = ds
        .volumes()
        .iter()
        .find(|v| v.member.as_ref().is_some_and(|m| m.devid == 2))
        .expect("device 2");
    assert!(!second.mountable);
    compare(
        "raid0 through device 2",
        ds.mount(second).expect("mount").as_ref(),
        &truth("raid0"),
    );
}

#[test]
fn btrfs_raid_missing_mirror_reads_from_the_copies_with_a_warning() {
    let u = Unpacked::new(&dir());
    // Each: the set, the disks given, the device ids missing.
    let cases: [(&str, &[usize], &[u64]); 4] = [
        ("raid1", &[2], &[1]),
        ("raid1", &[1], &[2]),
        ("raid10", &[1, 2, 4], &[3]),
        ("raid1c3", &[3], &[1, 2]),
    ];
    for (set, disks, missing) in cases {
        let ds = open_set(&u, set, disks, false);
        assert!(
            ds.warnings()
                .iter()
                .any(|w| w.message.contains("devices") && w.message.contains("in the disk set")),
            "{set} {disks:?}: {:?}",
            ds.warnings()
        );
        let fs = mount(&ds);
        compare(&format!("{set} {disks:?}"), fs.as_ref(), &truth(set));
        let warnings = fs.warnings();
        for id in missing {
            let want = format!(
                "device {id} of the file system is not in the disk set: every chunk on it has a \
                 copy on the devices present"
            );
            assert!(
                warnings.iter().any(|w| w.contains(&want)),
                "{set} {disks:?}: {warnings:?}"
            );
        }
        // Strict mode refuses the incomplete set.
        let options = OpenOptions::default().strict(true);
        assert!(
            DiskSet::open(&paths(&u, set, disks), &options).is_err(),
            "{set} {disks:?}: strict"
        );
    }
}

#[test]
fn btrfs_raid0_missing_member_fails_naming_the_device() {
    let u = Unpacked::new(&dir());
    let ds = open_set(&u, "raid0", &[1], false);
    // Metadata is RAID1: the tree lists; data striped onto device 2 fails.
    let fs = mount(&ds);
    assert!(
        fs.warnings().iter().any(|w| w
            .contains("device 2 of the file system is not in the disk set: ")
            && w.contains("chunks (RAID0 at")
            && w.contains("have no copy on the devices present")),
        "{:?}",
        fs.warnings()
    );
    let names: Vec<String> = fs.read_dir("/").expect("root").map(|e| e.name).collect();
    assert!(names.contains(&"big.txt".to_string()), "{names:?}");
    let err = read_all(fs.open("/big.txt").expect("open")).expect_err("big.txt spans device 2");
    assert!(
        err.to_string()
            .contains("device 2 of the file system is not in the disk set"),
        "{err}"
    );
    // The inline file is in the metadata: it still reads.
    let small = read_all(fs.open("/small.txt").expect("open")).expect("small.txt");
    assert_eq!(small, b"a small file, inline in its leaf\n");
}

#[test]
fn btrfs_raid5_data_is_refused_by_name() {
    let u = Unpacked::new(&dir());
    let ds = open_set(&u, "raid5", &[1, 2, 3], false);
    let fs = mount(&ds);
    // Metadata is RAID1: the tree is the kernel's.
    let want = truth("raid5");
    let listed = walk_rows(fs.as_ref(), |m, _, _| m.size).err();
    assert!(
        listed.is_some_and(|e| e.contains("RAID5")),
        "read of RAID5 data"
    );
    for p in want.keys().filter(|p| want[*p][0] == "dir") {
        fs.read_dir(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    }
    let err = fs
        .open("/big.txt")
        .and_then(|r| {
            read_all(r).map_err(|e| {
                diskimage::fs::Error::from_io(diskimage::fs::FsName::Btrfs, "/big.txt", e)
            })
        })
        .expect_err("RAID5 data");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("RAID5"), "{err}");
}

#[test]
fn btrfs_raid_command_line_sees_one_file_system() {
    let u = Unpacked::new(&dir());
    let want = truth("raid10");
    let disks: Vec<String> = (1..=4)
        .map(|n| u.arg(&format!("raid10.{n}.qcow2")))
        .collect();
    let args = |cmd: &str, rest: &[&str]| -> Vec<String> {
        let mut a = vec![cmd.to_string()];
        a.extend(disks.iter().cloned());
        a.extend(rest.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = diskimage(&refs);
        assert!(
            out.status.success(),
            "{a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    // ls: the root once, without -V.
    let out = run(args("ls", &[]));
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["big.txt", "mid.txt", "random.bin", "dir"] {
        assert_eq!(
            text.lines().filter(|l| *l == name).count(),
            1,
            "{name} in:\n{text}"
        );
    }
    // cat: the kernel's bytes.
    let out = run(args("cat", &["/big.txt"]));
    assert_eq!(sha256_bytes(&out.stdout), want["/big.txt"][2]);
    // extract: every file the kernel's.
    let target = tempfile::tempdir().expect("tempdir");
    let t = target.path().join("out");
    run(args("extract", &["-o", t.to_str().expect("utf-8")]));
    for (p, r) in want.iter().filter(|(_, r)| r[0] == "file") {
        let host = t.join(p.trim_start_matches('/'));
        assert_eq!(sha256_file(&host), r[2], "{p}");
    }
}

#[test]
fn btrfs_raid_devices_of_two_file_systems_stay_apart() {
    let u = Unpacked::new(&dir());
    let mut disks = paths(&u, "raid0", &[1, 2]);
    disks.extend(paths(&u, "raid1", &[2]));
    let ds = DiskSet::open(&disks, &OpenOptions::default()).expect("open");
    // raid0 (devices 1 and 2, volumes 1 and 2) and raid1 (device 2 alone).
    let member = |i: usize| ds.volume(i).and_then(|v| v.member.clone()).expect("member");
    assert_eq!(member(1).members, vec![(1, 1), (2, 2)]);
    assert_eq!(member(2).members, vec![(1, 1), (2, 2)]);
    assert_eq!(member(3).members, vec![(2, 3)]);
    let readable: Vec<usize> = ds
        .volumes()
        .iter()
        .filter(|v| v.mountable)
        .map(|v| v.index)
        .collect();
    assert_eq!(readable, vec![1, 3]);
    let err = ds.default_volume(None).expect_err("two file systems");
    assert!(err.to_string().contains("volumes 1, 3"), "{err}");
    let v = |i| ds.volume(i).expect("volume");
    compare(
        "raid0 beside raid1",
        ds.mount(v(1)).expect("raid0").as_ref(),
        &truth("raid0"),
    );
    let fs = ds.mount(v(3)).expect("raid1");
    compare("raid1 beside raid0", fs.as_ref(), &truth("raid1"));
    assert!(
        fs.warnings()
            .iter()
            .any(|w| w.contains("device 1 of the file system is not in the disk set")),
        "{:?}",
        fs.warnings()
    );
}
