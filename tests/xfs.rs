//! XFS: images made by mkfs.xfs and populated by the kernel
//! (fixtures/xfs/make.sh), read by us and compared with the listing the
//! kernel served from a read-only loop mount (inode, mode, owner, size,
//! link count, mtime in nanoseconds, sha256, link target); where this
//! machine allows loop mounts, also with a live mount of the same image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use diskimage::formats::MemoryDevice;
use diskimage::fs::{ErrorKind, FileSystem, FileType, FsOptions, Metadata};

use crate::common::{gunzip_bytes, repo, sha256_bytes, visit_rows, walk_rows};

/// path -> type, inode, mode, uid, gid, size, nlink, mtime, sha256, target.
type Row = Vec<String>;

/// The kernel-made images (v5.img, nrext64.img) and the one mkfs.xfs
/// populated from a prototype file (v4.img: see fixtures/xfs/make.sh).
const IMAGES: [&str; 3] = ["v5.img", "nrext64.img", "v4.img"];

fn dir() -> PathBuf {
    repo().join("fixtures/xfs")
}

fn image(name: &str) -> Vec<u8> {
    gunzip_bytes(&dir().join(format!("{name}.gz")))
}

/// The kernel's listing recorded beside the image.
fn truth(name: &str) -> BTreeMap<String, Row> {
    let plain = dir().join(format!("{name}.listing.tsv"));
    let text = if plain.exists() {
        std::fs::read_to_string(&plain).expect("listing")
    } else {
        String::from_utf8(gunzip_bytes(&dir().join(format!("{name}.listing.tsv.gz"))))
            .expect("utf-8 listing")
    };
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let mut f: Vec<String> = l.split('\t').map(str::to_string).collect();
            assert_eq!(f.len(), 11, "malformed row {l}");
            let path = f.remove(0);
            (path, f)
        })
        .collect()
}

fn open(bytes: Vec<u8>, strict: bool) -> diskimage::fs::Result<Box<dyn FileSystem>> {
    diskimage::fs::open_fs_with(
        Arc::new(MemoryDevice::new(bytes)),
        &FsOptions::default().with_strict(strict),
    )
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::File => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        FileType::Special => "special",
    }
}

/// Our tree through the path methods.
fn walk(fs: &dyn FileSystem) -> Result<BTreeMap<String, Row>, String> {
    walk_rows(fs, row)
}

fn row(m: &Metadata, sha: String, target: String) -> Row {
    let t = m.modified.expect("mtime");
    vec![
        type_name(m.file_type).to_string(),
        m.inode.expect("inode").to_string(),
        format!("{:o}", m.mode.expect("mode")),
        m.uid.expect("uid").to_string(),
        m.gid.expect("gid").to_string(),
        m.size.to_string(),
        m.nlink.expect("nlink").to_string(),
        format!("{}.{:09}", t.secs, t.nanos),
        sha,
        target,
    ]
}

/// Our tree through `visit_dir`, each entry read from the entry.
fn visit(fs: &dyn FileSystem) -> Result<BTreeMap<String, Row>, String> {
    visit_rows(fs, row)
}

fn diff(what: &str, ours: &BTreeMap<String, Row>, want: &BTreeMap<String, Row>) -> Vec<String> {
    let mut out = Vec::new();
    for (p, w) in want {
        match ours.get(p) {
            None => out.push(format!("{what}: {p} missing")),
            Some(o) if o != w => out.push(format!("{what}: {p}: ours {o:?}, kernel {w:?}")),
            _ => {}
        }
    }
    for p in ours.keys().filter(|p| !want.contains_key(*p)) {
        out.push(format!("{what}: {p} extra"));
    }
    out
}

#[test]
fn xfs_images_read_as_the_kernel_served_them() {
    let mut problems = Vec::new();
    for name in IMAGES {
        let want = truth(name);
        let fs = open(image(name), true).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(fs.warnings().is_empty(), "{name}: {:?}", fs.warnings());
        match walk(fs.as_ref()) {
            Ok(ours) => problems.extend(diff(&format!("{name} walk"), &ours, &want)),
            Err(e) => problems.push(format!("{name} walk: {e}")),
        }
        match visit(fs.as_ref()) {
            Ok(ours) => problems.extend(diff(&format!("{name} visit"), &ours, &want)),
            Err(e) => problems.push(format!("{name} visit: {e}")),
        }
        assert!(fs.warnings().is_empty(), "{name}: {:?}", fs.warnings());
    }
    problems.truncate(40);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The features each image was made to cover are there (so the listing
/// comparison above exercises them), by xfs_db's own print of the
/// superblock and what we read.
#[test]
fn xfs_fixtures_cover_the_formats_they_claim() {
    let sb = std::fs::read_to_string(dir().join("v5.img.sb.txt")).expect("sb");
    assert!(sb.contains("versionnum = 0xb4b5"), "v5: {sb}");
    let sb = std::fs::read_to_string(dir().join("nrext64.img.sb.txt")).expect("sb");
    // nrext64 is incompat bit 0x20, with ftype (0x1) and sparse inodes (0x2).
    assert!(sb.contains("features_incompat = 0x23"), "nrext64: {sb}");
    let want = truth("v5.img");
    let big = want.keys().filter(|p| p.starts_with("/big/")).count();
    assert_eq!(big, 10_000);
    // Past 2038: the bigtime image keeps it, the other clamps.
    assert!(want["/small.txt"][7].starts_with("4200000000."));
    let old = truth("nrext64.img");
    assert_eq!(old["/small.txt"][7], "2147483647.000000000");
    let sb = std::fs::read_to_string(dir().join("v4.img.sb.txt")).expect("sb");
    // Version 4 without the ftype bit (features2 0x200), 1 KiB blocks.
    assert!(sb.contains("blocksize = 1024"), "v4: {sb}");
    let v = sb
        .lines()
        .find_map(|l| l.strip_prefix("versionnum = 0x"))
        .expect("versionnum");
    assert_eq!(u16::from_str_radix(v.trim(), 16).expect("hex") & 0xF, 4);
    let f2 = sb
        .lines()
        .find_map(|l| l.strip_prefix("features2 = 0x"))
        .expect("features2");
    assert_eq!(u32::from_str_radix(f2.trim(), 16).expect("hex") & 0x200, 0);
}

#[test]
fn xfs_label_uuid_and_kind() {
    let fs = open(image("v5.img"), false).expect("open");
    assert_eq!(fs.kind().as_str(), "xfs");
    let sb = std::fs::read_to_string(dir().join("v5.img.sb.txt")).expect("sb");
    let uuid = sb
        .lines()
        .find_map(|l| l.strip_prefix("uuid = "))
        .expect("uuid line");
    assert_eq!(fs.serial().as_deref(), Some(uuid.trim()));
    assert_eq!(fs.label(), None);
}

/// Offset of inode `ino` in a 4 KiB-block, 512-byte-inode image with
/// AG geometry from `sb.txt`.
fn inode_offset(name: &str, ino: u64) -> usize {
    let sb = std::fs::read_to_string(dir().join(format!("{name}.sb.txt"))).expect("sb");
    let field = |k: &str| -> u64 {
        sb.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .unwrap_or_else(|| panic!("{k}"))
            .trim()
            .parse()
            .expect("number")
    };
    let (bs, isz, agblocks) = (field("blocksize"), field("inodesize"), field("agblocks"));
    let (inopblog, agblklog) = (field("inopblog"), field("agblklog"));
    let ag = ino >> (inopblog + agblklog);
    let agbno = (ino >> inopblog) & ((1 << agblklog) - 1);
    let off = ino & ((1 << inopblog) - 1);
    ((ag * agblocks + agbno) * bs + off * isz) as usize
}

#[test]
fn bad_inode_crc_is_a_warning_and_strict_refuses_it() {
    let want = truth("v5.img");
    let ino: u64 = want["/small.txt"][1].parse().expect("ino");
    let mut img = image("v5.img");
    let at = inode_offset("v5.img", ino);
    assert_eq!(&img[at..at + 2], b"IN");
    img[at + 100] ^= 0xFF; // the CRC itself
    let fs = open(img.clone(), false).expect("open");
    assert_eq!(fs.read("/small.txt").expect("read"), b"hello, xfs\n");
    let w = fs.warnings();
    assert!(w.iter().any(|w| w.contains("inode checksum")), "{w:?}");
    let fs = open(img, true).expect("open strict");
    let e = fs.read("/small.txt").expect_err("strict");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(
        matches!(
            e.detail(),
            Some(diskimage::formats::Detail::Checksum { stored, computed, .. }) if stored != computed
        ),
        "{e}"
    );
}

#[test]
fn damaged_xfs_metadata_gives_typed_errors() {
    let want = truth("v5.img");
    let frag: u64 = want["/frag.bin"][1].parse().expect("ino");
    let at = inode_offset("v5.img", frag);
    // The extent tree root in the inode (data fork at 176): a level far
    // too deep, then a pointer outside the volume, then a loop-free but
    // wrong child level.
    for (what, patch) in [
        ("level", vec![(176usize, 0x7Fu8), (177, 0xFF)]),
        ("pointer", vec![(176 + 4 + 8 * 19, 0xFF)]),
    ] {
        let mut img = image("v5.img");
        // The data fork ends where the attribute fork starts (forkoff).
        let fork_len = match img[at + 82] {
            0 => 512 - 176,
            f => usize::from(f) * 8,
        };
        let root_max = (fork_len - 4) / 16;
        for (off, b) in patch {
            let off = if what == "pointer" {
                176 + 4 + root_max * 8
            } else {
                off
            };
            img[at + off] = b;
        }
        let fs = open(img, false).expect("open");
        match fs.read("/frag.bin") {
            Ok(d) => panic!("{what}: read {} bytes", d.len()),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Corrupt, "{what}: {e}"),
        }
    }
    // The root's level one too high: its children are leaves.
    let mut img = image("v5.img");
    img[at + 177] = 2;
    let fs = open(img, false).expect("open");
    match fs.read("/frag.bin") {
        Ok(d) => panic!("level 2: read {} bytes", d.len()),
        Err(e) => assert_eq!(e.kind(), ErrorKind::Corrupt, "level 2: {e}"),
    }
    // A directory entry whose name length runs past its block: the block
    // directory /block holds one extent in its inode (data fork at 176).
    let block: u64 = want["/block"][1].parse().expect("ino");
    let at = inode_offset("v5.img", block);
    let mut img = image("v5.img");
    assert_eq!(img[at + 5], 2, "/block is extent-mapped");
    let l0 = u64::from_be_bytes(img[at + 176..at + 184].try_into().expect("8"));
    let l1 = u64::from_be_bytes(img[at + 184..at + 192].try_into().expect("8"));
    let fsb = ((l0 & 0x1FF) << 43) | (l1 >> 21);
    let sb = std::fs::read_to_string(dir().join("v5.img.sb.txt")).expect("sb");
    let field = |k: &str| -> u64 {
        sb.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .expect("field")
            .trim()
            .parse()
            .expect("number")
    };
    let (agblklog, agblocks) = (field("agblklog"), field("agblocks"));
    let data = (((fsb >> agblklog) * agblocks + (fsb & ((1 << agblklog) - 1))) * 4096) as usize;
    assert_eq!(&img[data..data + 4], b"XDB3");
    // The first entry ("."): inode number (8 bytes), then the name length.
    img[data + 64 + 8] = 0xFF;
    let fs = open(img.clone(), false).expect("open");
    let e = fs.read_dir("/block").expect_err("bad entry length");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(fs
        .warnings()
        .iter()
        .any(|w| w.contains("directory block checksum")));
    // An entry pointing at an inode past the volume: the third entry,
    // after "." and ".." (16 bytes each).
    let mut img = image("v5.img");
    let third = data + 64 + 32;
    let len = usize::from(img[third + 8]);
    let name = String::from_utf8(img[third + 9..third + 9 + len].to_vec()).expect("name");
    img[third..third + 8].copy_from_slice(&u64::MAX.to_be_bytes());
    let fs = open(img, false).expect("open");
    let e = fs
        .metadata(&format!("/block/{name}"))
        .expect_err("inode past the volume");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    // A superblock that is not one.
    let mut img = image("v5.img");
    img[0] = b'Y';
    assert!(open(img, false).is_err());
    // Truncated image: errors, never short data.
    let mut img = image("v5.img");
    img.truncate(8 << 20);
    if let Ok(fs) = open(img, false) {
        let e = fs.read("/frag.bin");
        assert!(e.is_err() || e.as_ref().is_ok_and(|d| d.len() == 5_324_400));
    }
}

/// A real-time section lives on another device: the volume is read, with
/// a warning; a file flagged real-time is refused as unsupported.
#[test]
fn real_time_data_is_refused_clearly() {
    let sb = std::fs::read_to_string(dir().join("rt.img.sb.txt")).expect("sb");
    assert!(sb.contains("rblocks = 1024"), "{sb}");
    let fs = open(image("rt.img"), false).expect("open");
    assert!(
        fs.warnings().iter().any(|w| w.contains("real-time")),
        "{:?}",
        fs.warnings()
    );
    assert!(fs.read_dir("/").expect("root").len() == 0);
    // di_flags (offset 90) with XFS_DIFLAG_REALTIME on a v4 inode (no CRC).
    let want = truth("v4.img");
    let ino: u64 = want["/small.txt"][1].parse().expect("ino");
    let sbv4 = std::fs::read_to_string(dir().join("v4.img.sb.txt")).expect("sb");
    let field = |k: &str| -> u64 {
        sbv4.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .expect("field")
            .trim()
            .parse()
            .expect("number")
    };
    let (bs, isz, agblocks) = (field("blocksize"), field("inodesize"), field("agblocks"));
    let (inopblog, agblklog) = (field("inopblog"), field("agblklog"));
    let agbno = (ino >> inopblog) & ((1 << agblklog) - 1);
    let at = (((ino >> (inopblog + agblklog)) * agblocks + agbno) * bs
        + (ino & ((1 << inopblog) - 1)) * isz) as usize;
    let mut img = image("v4.img");
    assert_eq!(&img[at..at + 2], b"IN");
    img[at + 91] |= 1;
    let fs = open(img, true).expect("open");
    let e = fs.read("/small.txt").expect_err("real-time file");
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("real-time"), "{e}");
}

/// Where the test may loop-mount (root, a loop device, the kernel's XFS),
/// the live kernel view of each image must match our walk too.
#[test]
fn xfs_images_match_a_live_loop_mount() {
    for name in IMAGES {
        let tmp = tempfile::tempdir().expect("tmp");
        let img = tmp.path().join(name);
        std::fs::write(&img, image(name)).expect("write");
        let mp = tmp.path().join("m");
        std::fs::create_dir(&mp).expect("mkdir");
        let ok = std::process::Command::new("mount")
            .args(["-o", "loop,ro"])
            .arg(&img)
            .arg(&mp)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("xfs live mount: skipped ({name}: mount -o loop,ro failed or not allowed here, or the kernel lacks v4 support; the recorded listing is compared instead)");
            continue;
        }
        let live = live_walk(&mp);
        let _ = std::process::Command::new("umount").arg(&mp).status();
        let fs = open(std::fs::read(&img).expect("img"), true).expect("open");
        let ours = visit(fs.as_ref()).expect("visit");
        let mut problems = diff(name, &ours, &live);
        problems.truncate(40);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

fn live_walk(root: &Path) -> BTreeMap<String, Row> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = format!("/{}", p.strip_prefix(root).expect("rel").to_string_lossy());
            let ft = m.file_type();
            let (ty, sha, target) = if ft.is_dir() {
                stack.push(p.clone());
                ("dir", "-".to_string(), "-".to_string())
            } else if ft.is_file() {
                (
                    "file",
                    sha256_bytes(&std::fs::read(&p).expect("read")),
                    "-".to_string(),
                )
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&p).expect("readlink");
                ("symlink", "-".to_string(), t.to_string_lossy().into_owned())
            } else {
                ("special", "-".to_string(), "-".to_string())
            };
            out.insert(
                rel,
                vec![
                    ty.to_string(),
                    m.ino().to_string(),
                    format!("{:o}", m.mode()),
                    m.uid().to_string(),
                    m.gid().to_string(),
                    m.size().to_string(),
                    m.nlink().to_string(),
                    format!("{}.{:09}", m.mtime(), m.mtime_nsec()),
                    sha,
                    target,
                ],
            );
        }
    }
    out
}

/// `extract` copies the tree (by the kernel where data is stored
/// verbatim): every file's bytes and every link's target as recorded.
#[test]
fn xfs_extract_matches_the_kernel_listing() {
    let want = truth("nrext64.img");
    let tmp = tempfile::tempdir().expect("tmp");
    let img = tmp.path().join("nrext64.img");
    std::fs::write(&img, image("nrext64.img")).expect("write");
    let out = tmp.path().join("out");
    let r = crate::common::diskimage(&[
        "extract",
        "--output",
        out.to_str().expect("utf-8"),
        img.to_str().expect("utf-8"),
        "/",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for (p, w) in &want {
        let local = out.join(p.trim_start_matches('/'));
        match w[0].as_str() {
            "file" => assert_eq!(
                sha256_bytes(&std::fs::read(&local).unwrap_or_else(|e| panic!("{p}: {e}"))),
                w[8],
                "{p}"
            ),
            "symlink" => assert_eq!(
                std::fs::read_link(&local)
                    .unwrap_or_else(|e| panic!("{p}: {e}"))
                    .to_string_lossy(),
                w[9],
                "{p}"
            ),
            "dir" => assert!(local.is_dir(), "{p}"),
            _ => {}
        }
    }
}

/// The Rocky-like disk (`rocky.img`): /boot on XFS, root XFS on the LVM2
/// LV rl/root, fstab with /dev/mapper/ and UUID= names, a dangling
/// /bin/sh. Product, version and hostname are what was seeded, the
/// architecture what readelf says of the ELF file left in /usr/bin, and
/// the mount points the volumes lvs and blkid name.
#[test]
fn rocky_like_layout_is_found_with_its_mount_points_and_architecture() {
    use diskimage::{DiskSet, OpenOptions};
    let tmp = tempfile::tempdir().expect("tmp");
    let img = tmp.path().join("rocky.img");
    std::fs::write(&img, image("rocky.img")).expect("write");
    let set = DiskSet::open(&[img], &OpenOptions::default()).expect("open");
    let report = diskimage::os::detect(&set);
    assert_eq!(report.systems.len(), 1, "{report:?}");
    let os = &report.systems[0];
    let seeded = dir().join("rocky.seeded");
    let release = std::fs::read_to_string(seeded.join("os-release")).expect("os-release");
    let field = |k: &str| {
        release
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('"').to_string())
    };
    assert_eq!(os.product_name, field("NAME"));
    assert_eq!(os.distribution, field("ID"));
    assert_eq!(os.version, field("VERSION_ID"));
    assert_eq!(os.pretty_name, field("PRETTY_NAME"));
    assert_eq!((os.version_major, os.version_minor), (Some(9), Some(3)));
    let host = std::fs::read_to_string(seeded.join("hostname")).expect("hostname");
    assert_eq!(os.hostname.as_deref(), Some(host.trim()));
    let readelf = std::fs::read_to_string(dir().join("rocky.readelf.txt")).expect("readelf");
    assert!(readelf.contains("X86-64"), "{readelf}");
    assert_eq!(os.architecture.as_deref(), Some("x86_64"));
    assert!(
        os.notes.iter().any(|n| n.contains("/bin/sh")),
        "{:?}",
        os.notes
    );
    // Volumes by what lvs and blkid say.
    let lvs = std::fs::read_to_string(dir().join("rocky.lvs.json")).expect("lvs");
    assert!(lvs.contains("\"lv_name\":\"root\"") && lvs.contains("\"lv_name\":\"swap\""));
    let blkid = crate::common::tsv_rows(&dir().join("rocky.blkid.tsv"));
    let uuid_of = |n: &str| {
        blkid
            .iter()
            .find(|r| r[0] == n)
            .map(|r| r[3].clone())
            .expect("blkid row")
    };
    let by_name = |n: &str| {
        set.volumes()
            .iter()
            .find(|v| v.name.as_deref() == Some(n))
            .map(|v| v.index)
    };
    let by_uuid = |u: &str| {
        set.volumes()
            .iter()
            .find(|v| {
                v.fs.as_ref()
                    .and_then(|f| f.uuid.as_deref())
                    .is_some_and(|x| x.eq_ignore_ascii_case(u))
            })
            .map(|v| v.index)
    };
    let root = by_name("rl/root").expect("rl/root");
    assert_eq!(by_uuid(&uuid_of("root")), Some(root));
    assert_eq!(os.os_folder.volume, root);
    let mounts: Vec<(String, Option<usize>, Option<String>)> = os
        .mount_points
        .iter()
        .map(|m| (m.path.clone(), m.volume, m.fs_type.clone()))
        .collect();
    let want = vec![
        ("/".to_string(), Some(root), Some("xfs".to_string())),
        (
            "/boot".to_string(),
            by_uuid(&uuid_of("boot")),
            Some("xfs".to_string()),
        ),
        (
            "swap".to_string(),
            by_name("rl/swap"),
            Some("swap".to_string()),
        ),
    ];
    assert_eq!(mounts, want);
    assert!(want.iter().all(|(_, v, _)| v.is_some()));
}
